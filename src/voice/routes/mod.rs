//! The gateway's HTTP routes, served by the shard-0 HTTP listener: OTA
//! provisioning (`ota`) and the management API (`api`, with its daily
//! tokens in `auth`), over this shard's voice service.
//!
//! `ota`, `api` and `auth` are sans-IO: requests in, responses out, the
//! clock passed in.

pub mod api;
pub mod auth;
pub mod ota;

use std::future::Future;
use std::pin::Pin;
use std::rc::{Rc, Weak};

use serde_json::Value;

use crate::http::{Handler, Route};
use crate::shard::Shard;
use crate::voice::config::VoiceConfig;
use crate::voice::gateway::DeviceStatus;
use crate::voice::service::VoiceService;
use api::{Api, Gateway as ApiGateway};

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
}

/// The routes of the gateway whose service on shard 0 is `service`.
pub(crate) fn routes(
    service: &Rc<VoiceService>,
    shard: &Rc<Shard>,
    config: &VoiceConfig,
) -> Vec<Route> {
    let hooks = Rc::new(Hooks {
        service: Rc::downgrade(service),
        shard: Rc::downgrade(shard),
    });
    let api: Rc<dyn Handler> = Rc::new(Api::new(
        config.ota.clone(),
        config.signature_key.clone(),
        hooks,
        api::unix_time_ms,
    ));
    vec![
        Route::new("/xiaozhi/ota", api.clone()),
        Route::new("/api", api),
    ]
}
