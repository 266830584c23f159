//! The clients and configuration a function builds once at start and every
//! invocation shares.

use std::sync::Mutex;

use aws_config::{BehaviorVersion, SdkConfig};

use crate::config::{ChatConfig, ConfigError};
use crate::delivery::{Delivery, DeliveryError};
use crate::error::ChatError;
use crate::event::{self, WebSocketEvent};
use crate::protocol::ServerEvent;
use crate::store::{ConnectionRecord, ConnectionStore, MessageStore};

/// API Gateway's integration timeout (29 s), rounded up.
const CONNECT_GRACE_MS: i64 = 30_000;
/// Removals of gone connections in flight at once.
const PRUNE_CONCURRENCY: usize = 4;
/// Removals of gone connections per invocation at most.
pub const PRUNE_PER_INVOCATION: usize = 50;

pub struct Services {
    pub config: ChatConfig,
    pub connections: ConnectionStore,
    pub messages: MessageStore,
    sdk: SdkConfig,
    /// The `@connections` client for the endpoint last used: a function serves
    /// one API and stage, so this is built once per instance.
    delivery: Mutex<Option<Delivery>>,
}

impl Services {
    /// Configuration from the environment; AWS settings from the standard
    /// chain (`AWS_ENDPOINT_URL_DYNAMODB` points DynamoDB elsewhere, as in dev).
    pub async fn from_env() -> Result<Self, ConfigError> {
        let config = ChatConfig::from_env()?;
        let sdk = aws_config::load_defaults(BehaviorVersion::latest()).await;
        Ok(Self::new(config, &sdk))
    }

    pub fn new(config: ChatConfig, sdk: &SdkConfig) -> Self {
        let dynamodb = aws_sdk_dynamodb::Client::new(sdk);
        Self {
            connections: ConnectionStore::new(dynamodb.clone(), &config.connections_table),
            messages: MessageStore::new(dynamodb, &config.messages_table),
            config,
            sdk: sdk.clone(),
            delivery: Mutex::new(None),
        }
    }

    /// The `@connections` client to answer this event's connection through.
    pub fn delivery_for(&self, event: &WebSocketEvent) -> Result<Delivery, ChatError> {
        let region = self.sdk.region().map(|r| r.as_ref());
        let endpoint = event::callback_endpoint(event, self.config.callback_url.as_deref(), region)?;
        let mut cached = self.delivery.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match cached.as_ref() {
            Some(delivery) if delivery.endpoint() == endpoint => Ok(delivery.clone()),
            _ => {
                let delivery = Delivery::new(&self.sdk, &endpoint).map_err(ChatError::Internal)?;
                *cached = Some(delivery.clone());
                Ok(delivery)
            }
        }
    }

    /// The calling connection's record: who it is and which room it is in now.
    pub async fn caller(&self, connection_id: &str) -> Result<ConnectionRecord, ChatError> {
        self.connections
            .get(connection_id)
            .await
            .map_err(|e| ChatError::Internal(e.to_string()))?
            .ok_or(ChatError::NotConnected)
    }

    /// Sends an event to one connection. A failure is logged, not returned:
    /// the request itself was handled, only its answer was lost.
    pub async fn reply(&self, delivery: &Delivery, connection_id: &str, event: &ServerEvent) {
        match delivery.send(connection_id, &event.to_json()).await {
            Ok(()) => {}
            Err(DeliveryError::Gone) => self.prune(&[connection_id.to_string()]).await,
            Err(error) => tracing::warn!(connection_id, %error, "reply not delivered"),
        }
    }

    /// Removes connections that a delivery found gone (410), except those
    /// younger than API Gateway's integration timeout: they may still be in
    /// their `$connect`, for which @connections answers 410 too.
    ///
    /// It runs after every delivery, a few at a time and at most
    /// [`PRUNE_PER_INVOCATION`] per call, so a room full of stale records
    /// neither delays a message nor fires a burst of transactions at the
    /// counter; the rest are found gone again by later messages (and their
    /// records expire by TTL regardless).
    pub async fn prune(&self, connection_ids: &[String]) {
        use futures::StreamExt;
        let now = crate::ids::epoch_ms(std::time::SystemTime::now());
        let connected_before = now - CONNECT_GRACE_MS;
        if connection_ids.len() > PRUNE_PER_INVOCATION {
            tracing::info!(
                gone = connection_ids.len(),
                pruned = PRUNE_PER_INVOCATION,
                "more gone connections than one invocation prunes; later ones prune the rest"
            );
        }
        futures::stream::iter(connection_ids.iter().take(PRUNE_PER_INVOCATION))
            .for_each_concurrent(PRUNE_CONCURRENCY, |id| async move {
                match self.connections.remove_gone(id, connected_before).await {
                    Ok(_) => tracing::info!(connection_id = %id, "removed a connection that is gone"),
                    Err(error) => tracing::warn!(connection_id = %id, %error, "could not remove a gone connection"),
                }
            })
            .await;
    }
}
