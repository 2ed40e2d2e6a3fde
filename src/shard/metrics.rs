//! `/metrics` on the HTTP listener: the broker's counters summed over the
//! shards, the Prometheus text of every service of this shard (which
//! collects its other shards' counters itself), and the transports'
//! counters (shared by all shards).

use std::rc::Weak;

use super::Shard;
use crate::http::response::CONTENT_TYPE_PROMETHEUS;
use crate::http::{Handler, Request, Response, ResponseFuture};

pub(super) struct Metrics(pub(super) Weak<Shard>);

impl Handler for Metrics {
    fn handle(&self, request: Request) -> ResponseFuture {
        let response = match (request.method.as_str(), self.0.upgrade()) {
            ("GET" | "HEAD", Some(shard)) => {
                let mut text = String::new();
                shard.broker.borrow().totals().write_metrics(&mut text);
                for service in &shard.services {
                    service.metrics(&mut text);
                }
                shard.transport.render(&mut text);
                shard.admission.render(&mut text);
                Response::new(200, CONTENT_TYPE_PROMETHEUS, text.into_bytes())
            }
            ("GET" | "HEAD", None) => Response::error(503, "shutting down"),
            _ => Response::method_not_allowed("GET"),
        };
        Box::pin(std::future::ready(response))
    }
}
