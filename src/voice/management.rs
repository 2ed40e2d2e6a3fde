//! The HTTP listener of the gateway (shard 0): OTA provisioning, the
//! management API and `/metrics`, served by `crate::http` over this
//! shard's voice service.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::{Rc, Weak};

use serde_json::Value;

use crate::http::api::{Api, DeviceStatus, Gateway as ApiGateway};
use crate::shard::Shard;
use crate::voice::service::VoiceService;

struct Hooks {
    service: Weak<VoiceService>,
    shard: Weak<Shard>,
}

impl ApiGateway for Hooks {
    fn devices_status(
        &self,
        client_ids: Vec<String>,
    ) -> Pin<Box<dyn Future<Output = Vec<(String, DeviceStatus)>>>> {
        let (Some(service), Some(shard)) = (self.service.upgrade(), self.shard.upgrade()) else {
            return Box::pin(async { Vec::new() });
        };
        Box::pin(service.devices_status(&shard, client_ids))
    }

    fn mcp_command(
        &self,
        client_id: String,
        payload: Value,
    ) -> Pin<Box<dyn Future<Output = Result<Value, String>>>> {
        let (Some(service), Some(shard)) = (self.service.upgrade(), self.shard.upgrade()) else {
            return Box::pin(async { Err("shutting down".to_string()) });
        };
        // The API bounds the wait; the shard's tick ends the request itself.
        Box::pin(service.mcp_command(&shard, client_id, payload))
    }

    fn metrics(&self) -> Pin<Box<dyn Future<Output = String>>> {
        let text = self
            .service
            .upgrade()
            .map(|s| s.metrics())
            .unwrap_or_default();
        Box::pin(async move { text })
    }
}

pub(crate) fn start(service: Rc<VoiceService>, shard: Rc<Shard>, addr: SocketAddr) {
    let listener = match glommio::net::TcpListener::bind(addr) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(%addr, error = %e, "cannot listen for HTTP");
            return;
        }
    };
    let config = shard.config().voice.clone();
    let hooks = Rc::new(Hooks {
        service: Rc::downgrade(&service),
        shard: Rc::downgrade(&shard),
    });
    let api = Rc::new(Api::new(
        config.ota.clone(),
        config.signature_key.clone(),
        hooks,
        crate::http::api::unix_time_ms,
    ));
    tracing::info!(%addr, "HTTP listening (OTA, management API, metrics)");
    glommio::spawn_local(crate::http::server::serve(listener, api)).detach();
}
