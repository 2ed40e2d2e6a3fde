//! The MQTT-SN 1.2 gateway: MQTT-SN clients over UDP as first-class
//! clients of the broker.
//!
//! A transparent gateway (§3.1): each MQTT-SN client gets its own broker
//! connection, on the shard that owns its client id, and the client
//! machine translates between the two protocols. The broker sees an
//! ordinary client (session, will, retained messages, ACL); the machine
//! adds what MQTT-SN has and MQTT has not: topic ids, the will's dialogue
//! and updates, sleep with its buffer, retransmission to the client.
//!
//! - `codec/`: datagrams to messages and back (sans-IO);
//! - `topics.rs`: one client's topic ids, predefined ones, short names;
//! - `client.rs`: one client's machine on the caller's clock (sans-IO);
//! - `gateway.rs`: one shard's clients, addresses and limits (sans-IO);
//! - `service.rs`: the UDP socket and the broker connections (shell).

pub mod codec;
