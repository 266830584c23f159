//! The connection and message stores over DynamoDB. Queries only, never a Scan.

use std::collections::HashMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{AttributeValue, Delete, Put, TransactWriteItem, Update};
use thiserror::Error;

use crate::protocol::ChatMessage;
use crate::retry::ACCESS_DENIED;

/// Table layouts, shared with `chatctl`, which creates the tables.
pub mod schema {
    /// Connections table: partition key.
    pub const CONNECTION_ID: &str = "connection_id";
    pub const USER: &str = "user";
    pub const ROOM: &str = "room";
    pub const CONNECTED_AT: &str = "connected_at";
    /// The counting window (see [`super::count_window`]) a connection was counted in.
    pub const COUNTED_IN: &str = "counted_in";
    /// Both tables: DynamoDB TTL attribute, epoch seconds.
    pub const TTL: &str = "ttl";
    /// Connections table: index to Query a room's connections (keys only).
    pub const ROOM_INDEX: &str = "by-room";
    /// Connections table: index to Query a user's connections (keys only).
    pub const USER_INDEX: &str = "by-user";
    /// The items counting open connections, so `max_connections` is enforced
    /// without a Scan: [`super::COUNTER_SHARDS`] of them, so that connects
    /// do not all write one hot item (see [`counter_id`]). They have no user
    /// or room, so they are in neither index. Each counts per window (see
    /// [`super::count_window`]) in attributes named by [`count_attribute`].
    pub const COUNTER_ID: &str = "#open-connections";
    /// Connections table: the counter shard a connection was counted on.
    pub const COUNTER_SHARD: &str = "counter_shard";

    /// The key of counter shard `shard`. Shard 0 is the single counter of
    /// before sharding, so the connections it counted are uncounted there.
    pub fn counter_id(shard: u64) -> String {
        match shard {
            0 => COUNTER_ID.to_string(),
            shard => format!("{COUNTER_ID}#{shard}"),
        }
    }

    /// Whether a connections-table key is one of the table's own items (a
    /// counter shard, a user's message count): API Gateway's connection ids
    /// never start with `#`.
    pub fn is_bookkeeping_id(id: &str) -> bool {
        id.starts_with('#')
    }

    /// The item counting `user`'s messages in minute `minute` (epoch
    /// minutes); user names have no `#`. Like the counter shards, it has
    /// no user or room, so it is in neither index.
    pub fn message_count_id(user: &str, minute: i64) -> String {
        format!("#messages#{user}#{minute}")
    }

    /// The message count item's attribute.
    pub const MESSAGE_COUNT: &str = "sent";

    /// Slot `slot` of `user`'s `connections_per_user`: an open connection
    /// holds one (see [`super::ConnectionStore::add`]). Like the counter
    /// shards, it has no user or room, so it is in neither index.
    pub fn slot_id(user: &str, slot: u64) -> String {
        format!("#slot#{user}#{slot}")
    }
    /// Connections table: the slot of its user a connection holds.
    pub const USER_SLOT: &str = "user_slot";
    /// A slot's holder (a connection id), and when its hold ends by itself
    /// (epoch ms): the connection's record expiry, so that a connection whose
    /// `$disconnect` never ran frees its slot when API Gateway has surely
    /// closed it.
    pub const SLOT_HOLDER: &str = "holder";
    pub const SLOT_EXPIRES: &str = "expires";

    /// The item recording that `user` is banned.
    pub fn ban_id(user: &str) -> String {
        format!("{BAN_PREFIX}{user}")
    }
    pub const BAN_PREFIX: &str = "#ban#";
    /// A ban's end, epoch ms; absent: until lifted.
    pub const BANNED_UNTIL: &str = "until";
    pub const BAN_REASON: &str = "reason";
    pub const BANNED_AT: &str = "banned_at";

    /// The counter item's attribute for the connections made in `window`.
    pub fn count_attribute(window: i64) -> String {
        format!("open_{window}")
    }

    /// Messages table: partition key, `room#{room}` or `dm#{a}#{b}`.
    pub const CONVERSATION: &str = "conversation";
    /// Messages table: sort key, the message id (a ULID: unique, time-ordered).
    pub const MESSAGE_ID: &str = "message_id";
}

/// The IAM actions the functions' DynamoDB calls need, which chatctl grants
/// them. A TransactWriteItems is authorised by the actions of its items
/// (DynamoDB developer guide: IAM with DynamoDB transactions), and
/// BatchGetItem by its own action, not GetItem's.
pub const IAM_ACTIONS: &[&str] = &[
    "dynamodb:GetItem",
    "dynamodb:BatchGetItem",
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:DeleteItem",
    "dynamodb:Query",
];

/// Shards of the open-connection count. DynamoDB cancels a transaction on an
/// item another transaction is writing (aws-facts.md §10 "DynamoDB
/// transactions"), so one counter item serialises every connect and
/// disconnect; 16 spread a burst of connects over 16 items.
pub const COUNTER_SHARDS: u64 = 16;

/// How many of `max_connections` counter shard `shard` may count: the
/// shares add up to `max_connections` exactly.
pub fn shard_share(max_connections: u64, shard: u64) -> u64 {
    max_connections / COUNTER_SHARDS + u64::from(shard < max_connections % COUNTER_SHARDS)
}

/// Attempts of a connect whose transactions are cancelled by concurrent
/// ones (each on a shard picked afresh) before it gives up.
const CONNECT_ATTEMPTS: u32 = 24;
/// Attempts of a disconnect's transaction on its shard.
const TRANSACTION_ATTEMPTS: u32 = 16;
/// BatchGetItem takes at most 100 keys (API reference).
const BATCH_GET_KEYS: usize = 100;

/// API Gateway closes every connection after 2 hours (aws-facts.md §6).
pub const CONNECTION_LIFETIME_MS: i64 = 2 * 3600 * 1000;

/// Connections are counted per window of one connection lifetime: one
/// counted in window `w` (by the connect handler's clock, which reads after
/// API Gateway opened it) is closed by the end of `w + 1`, so the open ones
/// are those counted in the current window and the one before. A record whose
/// `$disconnect` never ran (and that TTL removed) thus stops counting after
/// at most two windows instead of inflating the count for ever.
pub fn count_window(epoch_ms: i64) -> i64 {
    epoch_ms.div_euclid(CONNECTION_LIFETIME_MS)
}

/// The counter's attribute from before counting by window: dropped on sight.
const LEGACY_COUNT_ATTRIBUTE: &str = "open_connections";

/// What the counter item says about admitting one more connection.
#[derive(Debug, PartialEq)]
struct Admission {
    /// The window to count it in: the current one, or a newer one already
    /// begun on the counter (by a connect whose clock runs ahead).
    window: i64,
    /// The previous window's count as read.
    previous: i64,
    /// This window's count as read (0 when remembered, not read).
    current: i64,
    /// How many the window's count may reach.
    limit: i64,
    /// Attributes of windows too old to matter, to remove.
    stale: Vec<String>,
}

/// What a counter shard allows, `share` being its part of `max_connections`.
fn admission(counter: &HashMap<String, AttributeValue>, now_ms: i64, share: u64) -> Admission {
    let window_of = |name: &str| name.strip_prefix("open_").and_then(|w| w.parse::<i64>().ok());
    let window = counter
        .keys()
        .filter_map(|name| window_of(name))
        .fold(count_window(now_ms), i64::max);
    let previous = number_attr(counter, &schema::count_attribute(window - 1));
    let current = number_attr(counter, &schema::count_attribute(window));
    let mut stale: Vec<String> = counter
        .keys()
        .filter(|name| name.as_str() == LEGACY_COUNT_ATTRIBUTE || window_of(name).is_some_and(|w| w < window - 1))
        .cloned()
        .collect();
    stale.sort();
    Admission {
        window,
        previous,
        current,
        limit: share as i64 - previous.max(0),
        stale,
    }
}

fn now_epoch_ms() -> i64 {
    crate::ids::epoch_ms(std::time::SystemTime::now())
}

#[derive(Debug, Error, Clone, PartialEq)]
pub enum StoreError {
    #[error("{operation} on table {table} failed: {detail}")]
    Aws {
        operation: &'static str,
        table: String,
        detail: String,
    },
    /// AccessDeniedException, after the retries the invocation's time allowed.
    #[error(
        "{operation} on table {table} was refused ({detail}); right after a deploy the functions' permissions \
         take seconds to apply, so it was tried again while the invocation's time allowed: if it persists, \
         the functions' role lacks the permission (run `chatctl status`)"
    )]
    Refused {
        operation: &'static str,
        table: String,
        detail: String,
    },
    #[error("table {table} holds an item that is not ours to read: {detail}")]
    Corrupt { table: String, detail: String },
}

/// A user kept out of the chat: their handshakes get 403.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Ban {
    pub user: String,
    /// Epoch ms; `None`: until lifted.
    pub until: Option<i64>,
    pub reason: Option<String>,
    /// Epoch ms.
    pub banned_at: i64,
}

impl Ban {
    pub fn in_force(&self, now_ms: i64) -> bool {
        self.until.is_none_or(|until| until > now_ms)
    }
}

/// One open WebSocket connection.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectionRecord {
    pub connection_id: String,
    pub user: String,
    pub room: String,
    /// Epoch milliseconds.
    pub connected_at: i64,
    /// Epoch seconds after which DynamoDB may remove a record whose
    /// `$disconnect` never ran.
    pub ttl: i64,
}

#[derive(Debug, Error, PartialEq)]
pub enum AddConnectionError {
    #[error("the stack already has its maximum of {0} open connections")]
    LimitReached(u64),
    #[error("user {0} already has its maximum of {1} open connections")]
    UserLimitReached(String, u64),
    #[error("connection {0} is already registered")]
    AlreadyRegistered(String),
    #[error("too many connections are being made at once: gave up after {0} attempts")]
    Busy(u32),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

fn n(value: impl ToString) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

/// A failed call, in words a person reads (its logs, `chatctl status`):
/// DynamoDB's code and message when it answered, else the error and its
/// sources' Display text, never the SDK's Debug text.
fn aws_error<E, R>(operation: &'static str, table: &str, err: SdkError<E, R>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + 'static,
{
    let detail = match &err {
        SdkError::ServiceError(context) => match (context.err().code(), context.err().message()) {
            (Some(code), Some(message)) => format!("{code}: {message}"),
            (Some(code), None) => code.to_string(),
            _ => error_text(context.err()),
        },
        _ => error_text(&err),
    };
    let table = table.to_string();
    match err.code() {
        Some(ACCESS_DENIED) => StoreError::Refused {
            operation,
            table,
            detail,
        },
        _ => StoreError::Aws {
            operation,
            table,
            detail,
        },
    }
}

/// Sends a DynamoDB request again while DynamoDB refuses it for a moment
/// (see [`crate::retry::send_retrying`]).
async fn send_retrying<T, E, F, Fut>(
    operation: &'static str,
    table: &str,
    waits_for_permissions: bool,
    send: F,
) -> Result<T, SdkError<E, aws_sdk_dynamodb::config::http::HttpResponse>>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, SdkError<E, aws_sdk_dynamodb::config::http::HttpResponse>>>,
    E: ProvideErrorMetadata,
{
    crate::retry::send_retrying(("DynamoDB", operation, table), waits_for_permissions, send).await
}

/// A request chat-core could not build.
fn request_error(operation: &'static str, table: &str, err: aws_sdk_dynamodb::error::BuildError) -> StoreError {
    StoreError::Aws {
        operation,
        table: table.to_string(),
        detail: error_text(&err),
    }
}

/// An error and its sources' Display text joined by ": ", leaving out a
/// part the previous one already says.
pub(crate) fn error_text(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = vec![];
    for part in std::iter::successors(Some(err), |e| e.source()).map(|e| e.to_string()) {
        if !parts.last().is_some_and(|last| last.contains(&part)) {
            parts.push(part);
        }
    }
    parts.join(": ")
}

fn string_attr(item: &HashMap<String, AttributeValue>, name: &str, table: &str) -> Result<String, StoreError> {
    match item.get(name) {
        Some(AttributeValue::S(value)) => Ok(value.clone()),
        _ => Err(StoreError::Corrupt {
            table: table.to_string(),
            detail: format!("attribute {name} is missing or not a string"),
        }),
    }
}

fn number_attr(item: &HashMap<String, AttributeValue>, name: &str) -> i64 {
    match item.get(name) {
        Some(AttributeValue::N(value)) => value.parse().unwrap_or(0),
        _ => 0,
    }
}

/// Why each item of a cancelled transaction failed, in order.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Cancelled {
    /// Its condition did not hold.
    Condition,
    /// Another transaction was writing it, or it was throttled: try again.
    Conflict,
    /// Nothing wrong with this item.
    None,
}

/// The reasons of a cancelled transaction (API reference, TransactWriteItems:
/// CancellationReasons), or `None` for any other error.
fn cancellation<R>(err: &SdkError<TransactWriteItemsError, R>) -> Option<Vec<Cancelled>> {
    let Some(TransactWriteItemsError::TransactionCanceledException(cancelled)) = err.as_service_error() else {
        return None;
    };
    Some(
        cancelled
            .cancellation_reasons()
            .iter()
            .map(|reason| match reason.code() {
                Some("ConditionalCheckFailed") => Cancelled::Condition,
                Some("TransactionConflict" | "ThrottlingError") => Cancelled::Conflict,
                _ => Cancelled::None,
            })
            .collect(),
    )
}

/// Full jitter over a capped exponential, for transactions cancelled by
/// concurrent ones.
fn conflict_backoff(attempt: u32) -> std::time::Duration {
    let cap = 10u64 << attempt.min(5);
    std::time::Duration::from_millis(rand::random_range(0..=cap))
}

#[derive(Debug, Clone)]
pub struct ConnectionStore {
    client: Client,
    table: String,
    /// Per counter shard, the window and the previous window's count as
    /// last read, so that a connect usually needs no read: the previous
    /// count only falls, so a stale one can refuse too early but never admit
    /// too many, and a refusal reads again.
    last_read: std::sync::Arc<std::sync::Mutex<HashMap<u64, (i64, i64)>>>,
    /// Whether an AccessDeniedException is tried again for a while: the
    /// functions' permissions propagate after a deploy; an operator's
    /// (chatctl's own reads) are what they are.
    waits_for_permissions: bool,
}

impl ConnectionStore {
    /// The functions' store.
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
            last_read: Default::default(),
            waits_for_permissions: true,
        }
    }

    /// chatctl's own store (`status`, `connections`, `top`): a refusal is
    /// the operator's missing permission, said at once as AWS said it.
    pub fn for_operator(client: Client, table: impl Into<String>) -> Self {
        Self {
            waits_for_permissions: false,
            ..Self::new(client, table)
        }
    }

    fn aws_error<E, R>(&self, operation: &'static str, err: SdkError<E, R>) -> StoreError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug + 'static,
    {
        match aws_error(operation, &self.table, err) {
            StoreError::Refused {
                operation,
                table,
                detail,
            } if !self.waits_for_permissions => StoreError::Aws {
                operation,
                table,
                detail,
            },
            error => error,
        }
    }

    fn counter_key(shard: u64) -> (String, AttributeValue) {
        (schema::CONNECTION_ID.to_string(), s(schema::counter_id(shard)))
    }

    /// Registers a connection and counts it on one counter shard, in one
    /// transaction. Each shard counts at most its share of
    /// `max_connections` (the shares add up to it), so the open count never
    /// passes the limit, however many connect at once (connections counted
    /// before sharding all sit on shard 0 and may pass its share until they
    /// close); a connect is refused only when every shard, read afresh, is
    /// full. A transaction cancelled by a concurrent one is tried again on a
    /// shard picked afresh.
    ///
    /// With `connections_per_user` (0: no limit), the same transaction also
    /// takes one of the user's that many slots, each an item of its own: a
    /// user's connects made at once spread over its slots instead of meeting
    /// on one hot item, and a slot is taken with a condition (free, or held
    /// past its expiry), so the user never holds more. After a slot found
    /// taken, the user's slots are read afresh and a free one tried; none
    /// free is a refusal.
    pub async fn add(
        &self,
        record: &ConnectionRecord,
        max_connections: u64,
        connections_per_user: u64,
    ) -> Result<(), AddConnectionError> {
        let shards: Vec<u64> = (0..COUNTER_SHARDS)
            .filter(|shard| shard_share(max_connections, *shard) > 0)
            .collect();
        // What each shard allows: remembered, or read (`fresh`).
        let mut view = self.remembered_view(&shards, max_connections);
        let mut fresh = false;
        let with_room = |view: &HashMap<u64, Admission>| -> Vec<u64> {
            shards
                .iter()
                .copied()
                .filter(|shard| view.get(shard).is_some_and(|a| a.current < a.limit))
                .collect()
        };
        // The user's slots thought free: all, until one is found taken.
        let mut free_slots: Vec<u64> = (0..connections_per_user).collect();
        for attempt in 1..=CONNECT_ATTEMPTS {
            let open = with_room(&view);
            if open.is_empty() {
                if fresh {
                    return Err(AddConnectionError::LimitReached(max_connections));
                }
                view = self.read_shards(&shards, max_connections).await?;
                fresh = true;
                continue;
            }
            let slot = match free_slots.len() {
                _ if connections_per_user == 0 => None,
                0 => {
                    return Err(AddConnectionError::UserLimitReached(
                        record.user.clone(),
                        connections_per_user,
                    ));
                }
                free => Some(free_slots[rand::random_range(0..free)]),
            };
            let shard = open[rand::random_range(0..open.len())];
            let admission = &view[&shard];
            let items = self.add_items(record, shard, admission, slot)?;
            let Err(err) = self.transact(items, 1).await else {
                return Ok(());
            };
            // Reasons in the items' order: counter shard, record, slot.
            let Some(reasons) = cancellation(&err) else {
                return Err(self.aws_error("TransactWriteItems", err).into());
            };
            let failed = |index: usize| reasons.get(index) == Some(&Cancelled::Condition);
            if failed(1) {
                return Err(AddConnectionError::AlreadyRegistered(record.connection_id.clone()));
            }
            if failed(2) {
                free_slots = self.free_slots(&record.user, connections_per_user).await?;
            }
            if failed(0) {
                // The shard is full, or moved since it was read: so are
                // others, likely; read them all again.
                view = self.read_shards(&shards, max_connections).await?;
                fresh = true;
            } else if reasons.contains(&Cancelled::Conflict) {
                if attempt < CONNECT_ATTEMPTS {
                    tokio::time::sleep(conflict_backoff(attempt)).await
                }
            } else if !failed(2) {
                return Err(self.aws_error("TransactWriteItems", err).into());
            }
        }
        if fresh && with_room(&view).is_empty() {
            return Err(AddConnectionError::LimitReached(max_connections));
        }
        if connections_per_user > 0 && free_slots.is_empty() {
            return Err(AddConnectionError::UserLimitReached(
                record.user.clone(),
                connections_per_user,
            ));
        }
        Err(AddConnectionError::Busy(CONNECT_ATTEMPTS))
    }

    /// The slots of `user` that are free now: never taken, released, or
    /// held past their expiry (read strongly consistently).
    async fn free_slots(&self, user: &str, connections_per_user: u64) -> Result<Vec<u64>, StoreError> {
        let ids: Vec<String> = (0..connections_per_user)
            .map(|slot| schema::slot_id(user, slot))
            .collect();
        let now = now_epoch_ms();
        let mut held = std::collections::HashSet::new();
        for chunk in ids.chunks(BATCH_GET_KEYS) {
            let keys = chunk
                .iter()
                .map(|id| HashMap::from([(schema::CONNECTION_ID.to_string(), s(id))]))
                .collect();
            for item in self.read_consistently(keys, None).await? {
                if number_attr(&item, schema::SLOT_EXPIRES) > now {
                    held.insert(string_attr(&item, schema::CONNECTION_ID, &self.table)?);
                }
            }
        }
        Ok((0..connections_per_user)
            .filter(|slot| !held.contains(&schema::slot_id(user, *slot)))
            .collect())
    }

    /// Reads every shard in one strongly consistent BatchGetItem and
    /// remembers what each allows.
    async fn read_shards(&self, shards: &[u64], max_connections: u64) -> Result<HashMap<u64, Admission>, StoreError> {
        let counters = self.counters(shards).await?;
        let now = now_epoch_ms();
        let mut last_read = self.last_read.lock().unwrap_or_else(|e| e.into_inner());
        Ok(shards
            .iter()
            .map(|shard| {
                let empty = HashMap::new();
                let counter = counters.get(shard).unwrap_or(&empty);
                let found = admission(counter, now, shard_share(max_connections, *shard));
                last_read.insert(*shard, (found.window, found.previous));
                (*shard, found)
            })
            .collect())
    }

    /// The shards' items, by shard (a shard never written has none), read
    /// strongly consistently.
    async fn counters(&self, shards: &[u64]) -> Result<HashMap<u64, HashMap<String, AttributeValue>>, StoreError> {
        let keys = shards.iter().map(|shard| HashMap::from([Self::counter_key(*shard)]));
        let mut found = HashMap::new();
        for item in self.read_consistently(keys.collect(), None).await? {
            let id = string_attr(&item, schema::CONNECTION_ID, &self.table)?;
            let shard = (0..COUNTER_SHARDS).find(|shard| schema::counter_id(*shard) == id);
            found.extend(shard.map(|shard| (shard, item)));
        }
        Ok(found)
    }

    /// Of the connections `ids` the room index lists for `room`, those in
    /// it now. The index may still list, for about a second, a connection
    /// that has just left the room or closed (aws-facts.md §11 "GSI
    /// staleness"); the table read strongly consistently does not. Costs one
    /// read unit per connection, in BatchGetItem calls of 100 side by side.
    pub async fn still_in_room(&self, room: &str, ids: Vec<String>) -> Result<Vec<String>, StoreError> {
        let chunks: Vec<Vec<HashMap<String, AttributeValue>>> = ids
            .chunks(BATCH_GET_KEYS)
            .map(|chunk| {
                chunk
                    .iter()
                    .map(|id| HashMap::from([(schema::CONNECTION_ID.to_string(), s(id))]))
                    .collect()
            })
            .collect();
        let projection = [schema::CONNECTION_ID, schema::ROOM];
        let reads = chunks
            .into_iter()
            .map(|keys| self.read_consistently(keys, Some(&projection)));
        let mut members = Vec::new();
        for items in futures::future::try_join_all(reads).await? {
            for item in items {
                if item.get(schema::ROOM).and_then(|r| r.as_s().ok()).map(String::as_str) == Some(room) {
                    members.push(string_attr(&item, schema::CONNECTION_ID, &self.table)?);
                }
            }
        }
        Ok(members)
    }

    /// The items of `keys` (at most [`BATCH_GET_KEYS`]) that exist, read
    /// strongly consistently, with only the `projection` attributes when
    /// given; keys DynamoDB leaves unprocessed are asked again (BatchGetItem
    /// API reference).
    async fn read_consistently(
        &self,
        keys: Vec<HashMap<String, AttributeValue>>,
        projection: Option<&[&str]>,
    ) -> Result<Vec<HashMap<String, AttributeValue>>, StoreError> {
        use aws_sdk_dynamodb::types::KeysAndAttributes;
        let build_error = |e: aws_sdk_dynamodb::error::BuildError| request_error("BatchGetItem", &self.table, e);
        let mut request = KeysAndAttributes::builder().set_keys(Some(keys)).consistent_read(true);
        if let Some(attributes) = projection {
            let names: Vec<String> = (0..attributes.len()).map(|i| format!("#a{i}")).collect();
            request = request.projection_expression(names.join(", "));
            for (name, attribute) in names.iter().zip(attributes) {
                request = request.expression_attribute_names(name, *attribute);
            }
        }
        let mut request = Some(request.build().map_err(build_error)?);
        let mut found = Vec::new();
        for attempt in 1..=TRANSACTION_ATTEMPTS {
            let Some(keys) = request.take() else { break };
            let call = self.client.batch_get_item().request_items(&self.table, keys);
            let output = send_retrying("BatchGetItem", &self.table, self.waits_for_permissions, || {
                call.clone().send()
            })
            .await
            .map_err(|e| self.aws_error("BatchGetItem", e))?;
            found.extend(
                output
                    .responses
                    .unwrap_or_default()
                    .remove(&self.table)
                    .unwrap_or_default(),
            );
            request = output
                .unprocessed_keys
                .unwrap_or_default()
                .remove(&self.table)
                .filter(|keys| !keys.keys().is_empty());
            if request.is_some() {
                tokio::time::sleep(conflict_backoff(attempt)).await;
            }
        }
        if request.is_some() {
            return Err(StoreError::Aws {
                operation: "BatchGetItem",
                table: self.table.clone(),
                detail: "DynamoDB left keys unprocessed too many times".into(),
            });
        }
        Ok(found)
    }

    /// What each shard allows as last read, while its window is the current
    /// one; its count this window unknown (taken as 0: the transaction's
    /// condition checks it).
    fn remembered_view(&self, shards: &[u64], max_connections: u64) -> HashMap<u64, Admission> {
        let window = count_window(now_epoch_ms());
        let last_read = self.last_read.lock().unwrap_or_else(|e| e.into_inner());
        shards
            .iter()
            .filter_map(|shard| {
                let (read_window, previous) = last_read.get(shard).copied()?;
                (read_window == window).then(|| {
                    let admission = Admission {
                        window,
                        previous,
                        current: 0,
                        limit: shard_share(max_connections, *shard) as i64 - previous.max(0),
                        stale: vec![],
                    };
                    (*shard, admission)
                })
            })
            .collect()
    }

    /// Counts the connection on `shard` in `admission.window`, provided the
    /// shard is as it was read (the previous window no higher, no newer
    /// window begun), and registers it.
    fn add_items(
        &self,
        record: &ConnectionRecord,
        shard: u64,
        admission: &Admission,
        slot: Option<u64>,
    ) -> Result<Vec<TransactWriteItem>, StoreError> {
        let table = &self.table;
        let build_error = |e: aws_sdk_dynamodb::error::BuildError| request_error("TransactWriteItems", table, e);
        let window = admission.window;
        let (key_name, key_value) = Self::counter_key(shard);
        let mut expression = "SET #count = if_not_exists(#count, :zero) + :one".to_string();
        let mut count = Update::builder()
            .table_name(table)
            .key(key_name, key_value)
            .condition_expression(
                "(attribute_not_exists(#count) OR #count < :limit) \
                 AND (attribute_not_exists(#previous) OR #previous <= :previous) \
                 AND attribute_not_exists(#next)",
            )
            .expression_attribute_names("#count", schema::count_attribute(window))
            .expression_attribute_names("#previous", schema::count_attribute(window - 1))
            .expression_attribute_names("#next", schema::count_attribute(window + 1))
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":limit", n(admission.limit))
            .expression_attribute_values(":previous", n(admission.previous));
        if !admission.stale.is_empty() {
            let placeholders: Vec<String> = (0..admission.stale.len()).map(|i| format!("#stale{i}")).collect();
            expression.push_str(&format!(" REMOVE {}", placeholders.join(", ")));
            for (placeholder, name) in placeholders.into_iter().zip(&admission.stale) {
                count = count.expression_attribute_names(placeholder, name);
            }
        }
        let count = count.update_expression(expression).build().map_err(build_error)?;
        let mut put = Put::builder()
            .table_name(table)
            .item(schema::CONNECTION_ID, s(&record.connection_id))
            .item(schema::USER, s(&record.user))
            .item(schema::ROOM, s(&record.room))
            .item(schema::CONNECTED_AT, n(record.connected_at))
            .item(schema::TTL, n(record.ttl))
            .item(schema::COUNTED_IN, n(window))
            .item(schema::COUNTER_SHARD, n(shard))
            .condition_expression("attribute_not_exists(#id)")
            .expression_attribute_names("#id", schema::CONNECTION_ID);
        if let Some(slot) = slot {
            put = put.item(schema::USER_SLOT, n(slot));
        }
        let mut items = vec![
            TransactWriteItem::builder().update(count).build(),
            TransactWriteItem::builder()
                .put(put.build().map_err(build_error)?)
                .build(),
        ];
        if let Some(slot) = slot {
            let take = Put::builder()
                .table_name(table)
                .item(schema::CONNECTION_ID, s(schema::slot_id(&record.user, slot)))
                .item(schema::SLOT_HOLDER, s(&record.connection_id))
                .item(schema::SLOT_EXPIRES, n(record.ttl * 1000))
                // DynamoDB's TTL removes a slot left behind, in time.
                .item(schema::TTL, n(record.ttl))
                .condition_expression("attribute_not_exists(#id) OR #expires < :now")
                .expression_attribute_names("#id", schema::CONNECTION_ID)
                .expression_attribute_names("#expires", schema::SLOT_EXPIRES)
                .expression_attribute_values(":now", n(now_epoch_ms()))
                .build()
                .map_err(build_error)?;
            items.push(TransactWriteItem::builder().put(take).build());
        }
        Ok(items)
    }

    /// Runs a transaction, up to `attempts` times while DynamoDB cancels it
    /// for a conflict with a concurrent one (aws-facts.md §10: the SDK does
    /// not retry that).
    async fn transact(
        &self,
        items: Vec<TransactWriteItem>,
        attempts: u32,
    ) -> Result<
        aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsOutput,
        SdkError<TransactWriteItemsError, aws_sdk_dynamodb::config::http::HttpResponse>,
    > {
        let mut attempt = 0;
        let call = self.client.transact_write_items().set_transact_items(Some(items));
        loop {
            let result = send_retrying("TransactWriteItems", &self.table, self.waits_for_permissions, || {
                call.clone().send()
            })
            .await;
            attempt += 1;
            let conflicted = match &result {
                Err(err) => cancellation(err).is_some_and(|reasons| reasons.contains(&Cancelled::Conflict)),
                Ok(_) => false,
            };
            if !conflicted || attempt >= attempts {
                return result;
            }
            tokio::time::sleep(conflict_backoff(attempt)).await;
        }
    }

    /// Reads a connection, strongly consistent so a fresh `join` is seen.
    pub async fn get(&self, connection_id: &str) -> Result<Option<ConnectionRecord>, StoreError> {
        match self.get_item(connection_id).await? {
            Some(item) => Ok(Some(self.record(&item)?)),
            None => Ok(None),
        }
    }

    async fn get_item(&self, connection_id: &str) -> Result<Option<HashMap<String, AttributeValue>>, StoreError> {
        let call = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(schema::CONNECTION_ID, s(connection_id))
            .consistent_read(true);
        let output = send_retrying("GetItem", &self.table, self.waits_for_permissions, || {
            call.clone().send()
        })
        .await
        .map_err(|e| self.aws_error("GetItem", e))?;
        Ok(output.item)
    }

    fn record(&self, item: &HashMap<String, AttributeValue>) -> Result<ConnectionRecord, StoreError> {
        Ok(ConnectionRecord {
            connection_id: string_attr(item, schema::CONNECTION_ID, &self.table)?,
            user: string_attr(item, schema::USER, &self.table)?,
            room: string_attr(item, schema::ROOM, &self.table)?,
            connected_at: number_attr(item, schema::CONNECTED_AT),
            ttl: number_attr(item, schema::TTL),
        })
    }

    /// Removes a connection and uncounts it; `false` when it was already gone,
    /// so removing twice is harmless and counts once.
    pub async fn remove(&self, connection_id: &str) -> Result<bool, StoreError> {
        self.remove_where(connection_id, None).await
    }

    /// Removes a connection a delivery found gone (410), unless it connected
    /// after `connected_before` (epoch ms): API Gateway also answers 410 for
    /// a connection whose `$connect` has not returned yet.
    pub async fn remove_gone(&self, connection_id: &str, connected_before: i64) -> Result<bool, StoreError> {
        self.remove_where(connection_id, Some(connected_before)).await
    }

    async fn remove_where(&self, connection_id: &str, connected_before: Option<i64>) -> Result<bool, StoreError> {
        let table = &self.table;
        let build_error = |e: aws_sdk_dynamodb::error::BuildError| request_error("TransactWriteItems", table, e);
        // Its window says which count to lower.
        let Some(item) = self.get_item(connection_id).await? else {
            return Ok(false);
        };
        let record = self.record(&item)?;
        let mut condition = "attribute_exists(#id) AND #at = :at".to_string();
        let mut delete = Delete::builder()
            .table_name(table)
            .key(schema::CONNECTION_ID, s(connection_id))
            .expression_attribute_names("#id", schema::CONNECTION_ID)
            .expression_attribute_names("#at", schema::CONNECTED_AT)
            .expression_attribute_values(":at", n(record.connected_at));
        if let Some(before) = connected_before {
            condition.push_str(" AND #at < :before");
            delete = delete.expression_attribute_values(":before", n(before));
        }
        let delete = delete.condition_expression(condition).build().map_err(build_error)?;
        let mut items = vec![TransactWriteItem::builder().delete(delete).build()];
        // Records from before counting by window were not counted in one;
        // windows before the previous one count no more: nothing to lower.
        let window = item
            .get(schema::COUNTED_IN)
            .map(|_| number_attr(&item, schema::COUNTED_IN));
        if let Some(window) = window.filter(|w| *w >= count_window(now_epoch_ms()) - 1) {
            // Records from before sharding were counted on shard 0.
            let shard = number_attr(&item, schema::COUNTER_SHARD) as u64;
            let (key_name, key_value) = Self::counter_key(shard);
            let uncount = Update::builder()
                .table_name(table)
                .key(key_name, key_value)
                .update_expression("ADD #count :minus_one")
                .expression_attribute_names("#count", schema::count_attribute(window))
                .expression_attribute_values(":minus_one", n(-1))
                .build()
                .map_err(build_error)?;
            items.push(TransactWriteItem::builder().update(uncount).build());
        }
        // Its slot, when it still holds it: a slot held past its expiry may
        // have been taken by another connection since.
        let slot = item
            .get(schema::USER_SLOT)
            .map(|_| number_attr(&item, schema::USER_SLOT) as u64);
        if let Some(slot) = slot {
            let release = Delete::builder()
                .table_name(table)
                .key(schema::CONNECTION_ID, s(schema::slot_id(&record.user, slot)))
                .condition_expression("#holder = :id")
                .expression_attribute_names("#holder", schema::SLOT_HOLDER)
                .expression_attribute_values(":id", s(connection_id))
                .build()
                .map_err(build_error)?;
            items.push(TransactWriteItem::builder().delete(release).build());
        }
        match self.transact(items.clone(), TRANSACTION_ATTEMPTS).await {
            Ok(_) => Ok(true),
            Err(err) => match cancellation(&err).as_deref() {
                Some([Cancelled::Condition, ..]) => Ok(false),
                // The slot is another's now: remove the record all the same.
                Some(reasons) if slot.is_some() && reasons.last() == Some(&Cancelled::Condition) => {
                    items.pop();
                    match self.transact(items, TRANSACTION_ATTEMPTS).await {
                        Ok(_) => Ok(true),
                        Err(err) if matches!(cancellation(&err).as_deref(), Some([Cancelled::Condition, ..])) => {
                            Ok(false)
                        }
                        Err(err) => Err(self.aws_error("TransactWriteItems", err)),
                    }
                }
                _ => Err(self.aws_error("TransactWriteItems", err)),
            },
        }
    }

    /// Moves a connection to another room; `false` when it is not registered.
    /// A `join` racing its own `$disconnect` meets the latter's transaction
    /// on the item: tried again until that ends (then usually `false`).
    pub async fn move_to_room(&self, connection_id: &str, room: &str) -> Result<bool, StoreError> {
        use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
        let call = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(schema::CONNECTION_ID, s(connection_id))
            .update_expression("SET #room = :room")
            .condition_expression("attribute_exists(#id)")
            .expression_attribute_names("#room", schema::ROOM)
            .expression_attribute_names("#id", schema::CONNECTION_ID)
            .expression_attribute_values(":room", s(room));
        let result = send_retrying("UpdateItem", &self.table, self.waits_for_permissions, || {
            call.clone().send()
        })
        .await;
        match result {
            Ok(_) => Ok(true),
            Err(err)
                if matches!(
                    err.as_service_error(),
                    Some(UpdateItemError::ConditionalCheckFailedException(_))
                ) =>
            {
                Ok(false)
            }
            Err(err) => Err(self.aws_error("UpdateItem", err)),
        }
    }

    /// The connection ids in a room, all pages.
    pub async fn in_room(&self, room: &str) -> Result<Vec<String>, StoreError> {
        self.query_index(schema::ROOM_INDEX, schema::ROOM, room).await
    }

    /// The connection ids of a user, all pages.
    pub async fn of_user(&self, user: &str) -> Result<Vec<String>, StoreError> {
        self.query_index(schema::USER_INDEX, schema::USER, user).await
    }

    async fn query_index(&self, index: &str, key: &str, value: &str) -> Result<Vec<String>, StoreError> {
        let mut ids = Vec::new();
        let mut start_key = None;
        loop {
            let call = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(index)
                .key_condition_expression("#key = :value")
                .expression_attribute_names("#key", key)
                .expression_attribute_values(":value", s(value))
                .set_exclusive_start_key(start_key);
            let output = send_retrying("Query", &self.table, self.waits_for_permissions, || call.clone().send())
                .await
                .map_err(|e| self.aws_error("Query", e))?;
            for item in output.items() {
                ids.push(string_attr(item, schema::CONNECTION_ID, &self.table)?);
            }
            match output.last_evaluated_key {
                Some(key) if !key.is_empty() => start_key = Some(key),
                _ => return Ok(ids),
            }
        }
    }

    /// The ban on `user` in force now, if any (read strongly consistently).
    pub async fn ban_of(&self, user: &str) -> Result<Option<Ban>, StoreError> {
        let Some(item) = self.get_item(&schema::ban_id(user)).await? else {
            return Ok(None);
        };
        let ban = self.ban_from(&item)?;
        Ok(ban.in_force(now_epoch_ms()).then_some(ban))
    }

    /// Bans `user` until `until` (epoch ms; `None`: until lifted),
    /// replacing any ban of theirs.
    pub async fn ban(&self, user: &str, until: Option<i64>, reason: Option<&str>) -> Result<Ban, StoreError> {
        let ban = Ban {
            user: user.to_string(),
            until,
            reason: reason.map(str::to_string),
            banned_at: now_epoch_ms(),
        };
        let mut call = self
            .client
            .put_item()
            .table_name(&self.table)
            .item(schema::CONNECTION_ID, s(schema::ban_id(user)))
            .item(schema::BANNED_AT, n(ban.banned_at));
        if let Some(until) = until {
            // DynamoDB's TTL removes it a day after it ends (expired bans are ignored before that).
            call = call
                .item(schema::BANNED_UNTIL, n(until))
                .item(schema::TTL, n(until / 1000 + 86_400));
        }
        if let Some(reason) = reason {
            call = call.item(schema::BAN_REASON, s(reason));
        }
        send_retrying("PutItem", &self.table, self.waits_for_permissions, || {
            call.clone().send()
        })
        .await
        .map_err(|e| self.aws_error("PutItem", e))?;
        Ok(ban)
    }

    /// Lifts the ban on `user`; whether there was one in force.
    pub async fn unban(&self, user: &str) -> Result<bool, StoreError> {
        let call = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key(schema::CONNECTION_ID, s(schema::ban_id(user)))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllOld);
        let output = send_retrying("DeleteItem", &self.table, self.waits_for_permissions, || {
            call.clone().send()
        })
        .await
        .map_err(|e| self.aws_error("DeleteItem", e))?;
        match output.attributes {
            Some(item) => Ok(self.ban_from(&item)?.in_force(now_epoch_ms())),
            None => Ok(false),
        }
    }

    /// The bans in force, every page of a Scan of the table (an operator's
    /// command: bans are few, the Scan reads the whole table).
    pub async fn bans(&self) -> Result<Vec<Ban>, StoreError> {
        let mut bans = Vec::new();
        let mut start_key = None;
        loop {
            let call = self
                .client
                .scan()
                .table_name(&self.table)
                .filter_expression("begins_with(#id, :ban)")
                .expression_attribute_names("#id", schema::CONNECTION_ID)
                .expression_attribute_values(":ban", s(schema::BAN_PREFIX))
                .set_exclusive_start_key(start_key);
            let output = send_retrying("Scan", &self.table, self.waits_for_permissions, || call.clone().send())
                .await
                .map_err(|e| self.aws_error("Scan", e))?;
            for item in output.items() {
                let ban = self.ban_from(item)?;
                if ban.in_force(now_epoch_ms()) {
                    bans.push(ban);
                }
            }
            match output.last_evaluated_key {
                Some(key) if !key.is_empty() => start_key = Some(key),
                _ => break,
            }
        }
        bans.sort_by(|a, b| a.user.cmp(&b.user));
        Ok(bans)
    }

    fn ban_from(&self, item: &HashMap<String, AttributeValue>) -> Result<Ban, StoreError> {
        let id = string_attr(item, schema::CONNECTION_ID, &self.table)?;
        Ok(Ban {
            user: id.trim_start_matches(schema::BAN_PREFIX).to_string(),
            until: item
                .get(schema::BANNED_UNTIL)
                .map(|_| number_attr(item, schema::BANNED_UNTIL)),
            reason: item.get(schema::BAN_REASON).and_then(|v| v.as_s().ok()).cloned(),
            banned_at: number_attr(item, schema::BANNED_AT),
        })
    }

    /// Counts a message of `user` against `limit` a minute, across all their
    /// connections: `Ok(None)` when it may be sent, `Ok(Some(ms))` when the
    /// user is over the limit until the next minute, `ms` from now. One
    /// conditional write on the user's item of this minute (a fixed window:
    /// a burst at a minute's edge may pass up to twice the limit), so a
    /// flood from one user only ever heats that user's item.
    pub async fn count_message(&self, user: &str, limit: u32) -> Result<Option<u64>, StoreError> {
        use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
        let now = now_epoch_ms();
        let minute = now.div_euclid(60_000);
        let call = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(schema::CONNECTION_ID, s(schema::message_count_id(user, minute)))
            .update_expression("ADD #sent :one SET #ttl = :ttl")
            .condition_expression("attribute_not_exists(#sent) OR #sent < :limit")
            .expression_attribute_names("#sent", schema::MESSAGE_COUNT)
            .expression_attribute_names("#ttl", schema::TTL)
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":limit", n(i64::from(limit)))
            // Gone (DynamoDB TTL) a while after its minute.
            .expression_attribute_values(":ttl", n((minute + 2) * 60));
        match send_retrying("UpdateItem", &self.table, self.waits_for_permissions, || {
            call.clone().send()
        })
        .await
        {
            Ok(_) => Ok(None),
            Err(err)
                if matches!(
                    err.as_service_error(),
                    Some(UpdateItemError::ConditionalCheckFailedException(_))
                ) =>
            {
                Ok(Some(((minute + 1) * 60_000 - now) as u64))
            }
            Err(err) => Err(self.aws_error("UpdateItem", err)),
        }
    }

    /// The number of open connections, as counted on connect and disconnect
    /// in the current window and the one before, on every shard.
    pub async fn open_count(&self) -> Result<i64, StoreError> {
        let shards: Vec<u64> = (0..COUNTER_SHARDS).collect();
        let counters = self.counters(&shards).await?;
        let window = count_window(now_epoch_ms());
        Ok(counters
            .values()
            .map(|counter| {
                number_attr(counter, &schema::count_attribute(window))
                    + number_attr(counter, &schema::count_attribute(window - 1))
            })
            .sum())
    }
}

/// A page of history, oldest first.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryPage {
    pub messages: Vec<ChatMessage>,
    /// Whether more messages lie beyond this page the way it was read:
    /// older ones before its first, or, read [`HistoryFrom::After`], newer
    /// ones after its last.
    pub has_more: bool,
}

/// Where a page of history is read from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum HistoryFrom<'a> {
    /// The newest messages.
    Latest,
    /// The messages just older than this id.
    Before(&'a str),
    /// The messages just newer than this id, oldest first: what came since.
    After(&'a str),
}

#[derive(Debug, Clone)]
pub struct MessageStore {
    client: Client,
    table: String,
}

impl MessageStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    /// Stores a message under its conversation; `ttl` is epoch seconds.
    pub async fn put(&self, conversation: &str, message: &ChatMessage, ttl: i64) -> Result<(), StoreError> {
        let mut request = self
            .client
            .put_item()
            .table_name(&self.table)
            .item(schema::CONVERSATION, s(conversation))
            .item(schema::MESSAGE_ID, s(&message.id))
            .item("from", s(&message.from))
            .item("text", s(&message.text))
            .item("ts", s(&message.ts))
            .item(schema::TTL, n(ttl))
            // Ids are unique; the condition makes a duplicate a loud error, not an overwrite.
            .condition_expression("attribute_not_exists(#sk)")
            .expression_attribute_names("#sk", schema::MESSAGE_ID);
        if let Some(room) = &message.room {
            request = request.item("room", s(room));
        }
        if let Some(to) = &message.to {
            request = request.item("to", s(to));
        }
        send_retrying("PutItem", &self.table, true, || request.clone().send())
            .await
            .map_err(|e| aws_error("PutItem", &self.table, e))?;
        Ok(())
    }

    /// The newest `limit` messages older than `before` (a message id), oldest first.
    pub async fn page(&self, conversation: &str, from: HistoryFrom<'_>, limit: u32) -> Result<HistoryPage, StoreError> {
        let forward = matches!(from, HistoryFrom::After(_));
        let mut request = self
            .client
            .query()
            .table_name(&self.table)
            .expression_attribute_names("#c", schema::CONVERSATION)
            .expression_attribute_values(":c", s(conversation))
            .scan_index_forward(forward)
            // One more than asked tells whether more messages exist.
            .limit(limit as i32 + 1)
            .consistent_read(true);
        request = match from {
            HistoryFrom::Latest => request.key_condition_expression("#c = :c"),
            HistoryFrom::Before(cursor) => request
                .key_condition_expression("#c = :c AND #sk < :cursor")
                .expression_attribute_names("#sk", schema::MESSAGE_ID)
                .expression_attribute_values(":cursor", s(cursor)),
            HistoryFrom::After(cursor) => request
                .key_condition_expression("#c = :c AND #sk > :cursor")
                .expression_attribute_names("#sk", schema::MESSAGE_ID)
                .expression_attribute_values(":cursor", s(cursor)),
        };
        let output = send_retrying("Query", &self.table, true, || request.clone().send())
            .await
            .map_err(|e| aws_error("Query", &self.table, e))?;
        let mut messages = Vec::with_capacity(output.items().len());
        for item in output.items().iter().take(limit as usize) {
            messages.push(self.message_from_item(item)?);
        }
        // A Query stops at 1 MB, possibly before `limit + 1` items: a
        // LastEvaluatedKey then also means more messages exist.
        let has_more =
            output.items().len() > limit as usize || output.last_evaluated_key().is_some_and(|key| !key.is_empty());
        if !forward {
            messages.reverse();
        }
        Ok(HistoryPage { messages, has_more })
    }

    fn message_from_item(&self, item: &HashMap<String, AttributeValue>) -> Result<ChatMessage, StoreError> {
        let optional = |name: &str| match item.get(name) {
            Some(AttributeValue::S(value)) => Some(value.clone()),
            _ => None,
        };
        Ok(ChatMessage {
            id: string_attr(item, schema::MESSAGE_ID, &self.table)?,
            room: optional("room"),
            to: optional("to"),
            from: string_attr(item, "from", &self.table)?,
            text: string_attr(item, "text", &self.table)?,
            ts: string_attr(item, "ts", &self.table)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counter(counts: &[(i64, i64)]) -> HashMap<String, AttributeValue> {
        counts
            .iter()
            .map(|(window, count)| (schema::count_attribute(*window), n(count)))
            .collect()
    }

    #[test]
    fn windows_are_one_connection_lifetime_long() {
        assert_eq!(count_window(0), 0);
        assert_eq!(count_window(CONNECTION_LIFETIME_MS - 1), 0);
        assert_eq!(count_window(CONNECTION_LIFETIME_MS), 1);
        assert_eq!(count_window(-1), -1);
    }

    #[test]
    fn the_previous_window_counts_and_older_ones_are_dropped() {
        let at = |window: i64| window * CONNECTION_LIFETIME_MS + 5;
        // 3 still open from the previous window: 7 more may connect in this one.
        let found = admission(&counter(&[(99, 3), (100, 2)]), at(100), 10);
        assert_eq!((found.window, found.previous, found.limit), (100, 3, 7));
        assert!(found.stale.is_empty());

        // Connections counted two windows ago are closed by now, even when
        // their `$disconnect` never ran: they no longer count.
        let mut old = counter(&[(97, 500), (98, 10), (100, 1)]);
        old.insert(LEGACY_COUNT_ATTRIBUTE.into(), n(40));
        let found = admission(&old, at(100), 10);
        assert_eq!((found.window, found.limit), (100, 10));
        assert_eq!(found.stale, ["open_97", "open_98", "open_connections"]);

        assert_eq!(
            admission(&counter(&[(99, 10)]), at(100), 10).limit,
            0,
            "a full previous window"
        );
        assert_eq!(admission(&HashMap::new(), at(100), 10).limit, 10);
    }

    #[test]
    fn shard_shares_add_up_to_the_limit_exactly() {
        for max in [0, 1, 2, 15, 16, 17, 100, 10_000, 10_007] {
            let shares: Vec<u64> = (0..COUNTER_SHARDS).map(|shard| shard_share(max, shard)).collect();
            assert_eq!(shares.iter().sum::<u64>(), max, "{max}");
            assert!(shares.iter().max().unwrap() - shares.iter().min().unwrap() <= 1);
        }
        assert_eq!(schema::counter_id(0), "#open-connections");
        assert_eq!(schema::counter_id(3), "#open-connections#3");
        assert!(schema::is_bookkeeping_id(&schema::counter_id(15)));
        assert!(!schema::is_bookkeeping_id("L0SM9cOFvHcCIhw="));
    }

    #[test]
    fn a_window_begun_by_a_clock_ahead_is_joined() {
        let found = admission(&counter(&[(100, 4), (101, 1)]), 100 * CONNECTION_LIFETIME_MS + 5, 10);
        assert_eq!((found.window, found.previous, found.limit), (101, 4, 6));
    }
}
