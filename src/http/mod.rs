//! A small generic HTTP/1.1 server for the shard-0 HTTP listener
//! (`http.listen`): services register their routes (the voice gateway's OTA
//! and management API) and the shell adds `/metrics`. Nothing here knows
//! what a route does.
//!
//! - `request`, `response`, `router`: sans-IO (no sockets, no clock);
//! - `server`: the glommio shell, one task per connection.

#![forbid(unsafe_code)]

pub mod request;
pub mod response;
pub mod router;
pub mod server;

pub use request::Request;
pub use response::Response;
pub use router::{Route, Router};
pub use server::{serve, Handler, ResponseFuture};
