//! The HTTP side of the voice gateway: OTA provisioning for devices, the
//! management API, and Prometheus `/metrics`, on one listener
//! (`http.listen`).
//!
//! - `request`, `response`, `auth`, `ota`: sans-IO (no sockets, no clock);
//! - `server`: the glommio shell, one task per connection;
//! - `api`: the routes, reaching the rest of the server only through the
//!   [`Gateway`] trait.

pub mod api;
pub mod auth;
pub mod ota;
pub mod request;
pub mod response;
pub mod server;

pub use api::{key_is_strong, unix_time_ms, Api, DeviceStatus, Gateway};
pub use ota::{OtaConfig, OtaProfile};
pub use request::Request;
pub use response::Response;
pub use server::{serve, Handler, ResponseFuture};
