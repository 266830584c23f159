//! Where `chatctl dev`'s gateway listens, recorded in the emulator as a tag
//! on the stage it serves (`chatctl:local-url = ws://127.0.0.1:PORT/STAGE`,
//! written with TagResource once the stack is provisioned). `smoke` and
//! `connections send`/`kick` given only `--endpoint-url` read it there, as
//! they read a deployed stack's URLs from its API, instead of trying the
//! execute-api hostname that only AWS serves. `up` and `status` leave the
//! tag alone (`stack::base::is_unmanaged_tag`): it is not drift.
//!
//! A `dev` that stops removes its tag, so a lasting emulator
//! (`--endpoint-url`) names no gateway that is gone; one killed leaves it
//! behind, and the commands then say that nothing answers there, until the
//! next `dev` writes its own.

use std::collections::BTreeMap;

use crate::aws::{Aws, is_local_endpoint};
use crate::stack::Names;
use crate::stack::api::ApiState;
use crate::stack::base::LOCAL_URL_TAG;
use crate::stack::tags::{Tagged, retag};

/// Records the gateway listening on `port` on the stack's stage of API
/// `api_id`. A failure is a warning: `dev` serves all the same, and the
/// commands can be given the URL with `--url`.
pub async fn record(aws: &Aws, names: &Names, api_id: &str, port: u16) {
    let url = format!("ws://127.0.0.1:{port}/{}", names.stage);
    let tags = BTreeMap::from([(LOCAL_URL_TAG.to_string(), url)]);
    if let Err(err) = retag(aws, Tagged::Stage(&names.stage_arn(api_id)), &tags, &[]).await {
        eprintln!(
            "chatctl dev: {err:#}; `chatctl smoke` and `chatctl connections` will need --url to find this gateway"
        );
    }
}

/// Removes what `record` wrote, as `dev` stops. A failure is a warning.
pub async fn forget(aws: &Aws, names: &Names, api_id: &str) {
    let arn = names.stage_arn(api_id);
    if let Err(err) = retag(aws, Tagged::Stage(&arn), &BTreeMap::new(), &[LOCAL_URL_TAG.to_string()]).await {
        eprintln!("chatctl dev: {err:#}; the stage still names this stopped gateway");
    }
}

/// The WebSocket URL of the `chatctl dev` gateway serving `api`, when
/// chatctl talks to a local emulator (never for a stack on AWS) and a
/// `dev` recorded one.
pub fn websocket_url(aws: &Aws, api: &ApiState) -> Option<String> {
    if !aws.sdk.endpoint_url().is_some_and(is_local_endpoint) {
        return None;
    }
    api.stage.as_ref()?.tags.get(LOCAL_URL_TAG).cloned()
}

/// The `@connections` URL of that gateway: the same address over HTTP.
pub fn connections_url(aws: &Aws, api: &ApiState) -> Option<String> {
    let url = websocket_url(aws, api)?;
    Some(format!("http://{}", url.strip_prefix("ws://")?))
}
