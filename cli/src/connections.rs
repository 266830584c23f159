//! `chatctl connections`: the open connections of the live chat, read
//! through the connections table and its indexes; a system message to some
//! of them, and closing some of them, over the `@connections` API.

use std::time::SystemTime;

use anyhow::{Result, bail};
use aws_sdk_apigatewaymanagement::config::http::HttpResponse;
use aws_sdk_apigatewaymanagement::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_apigatewaymanagement::primitives::Blob;
use chat_core::protocol::{ChatMessage, ServerEvent};
use chat_core::store::{Ban, ConnectionRecord, ConnectionStore, schema};
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;

use crate::aws::{Aws, aws_error, failed, is_code, no_answer};
use crate::stack::Names;
use crate::stack::domain::DomainSpec;

/// Who a system message comes from.
pub const SYSTEM_SENDER: &str = "system";
/// Connections read or written at a time.
const CONCURRENCY: usize = 16;

/// Which connections a command is about.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    Connection(String),
    Room(String),
    User(String),
}

impl Target {
    pub fn checked(self) -> Result<Target> {
        match &self {
            Target::Room(room) => {
                chat_core::validate::room(room).map_err(|e| anyhow::anyhow!("invalid --room: {e}"))?
            }
            Target::User(user) => {
                chat_core::validate::user(user).map_err(|e| anyhow::anyhow!("invalid --user: {e}"))?
            }
            Target::Connection(id) if id.is_empty() || schema::is_bookkeeping_id(id) => {
                bail!("invalid connection id {id:?}")
            }
            Target::Connection(_) => {}
        }
        Ok(self)
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Connection(id) => write!(f, "connection {id}"),
            Target::Room(room) => write!(f, "room {room}"),
            Target::User(user) => write!(f, "user {user}"),
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Row {
    pub connection_id: String,
    pub user: String,
    pub room: String,
    /// RFC 3339, UTC.
    pub connected_at: String,
}

impl From<ConnectionRecord> for Row {
    fn from(record: ConnectionRecord) -> Row {
        Row {
            connected_at: chat_core::ids::format_timestamp_ms(u64::try_from(record.connected_at).unwrap_or(0)),
            connection_id: record.connection_id,
            user: record.user,
            room: record.room,
        }
    }
}

fn store(aws: &Aws, names: &Names) -> ConnectionStore {
    ConnectionStore::for_operator(aws.dynamodb.clone(), names.connections_table())
}

/// The open connections of a room or a user (through the table's indexes),
/// or all of them (a Scan of the table), oldest first.
pub async fn list(aws: &Aws, names: &Names, room: Option<&str>, user: Option<&str>) -> Result<Vec<Row>> {
    let table = names.connections_table();
    let store = store(aws, names);
    let ids = match (room, user) {
        (Some(room), _) => store.in_room(room).await?,
        (None, Some(user)) => store.of_user(user).await?,
        (None, None) => all_ids(aws, &table).await?,
    };
    // The indexes hold keys only: each record is read from the table,
    // which also drops a connection that closed meanwhile.
    let records: Vec<Option<ConnectionRecord>> = futures::stream::iter(&ids)
        .map(|id| store.get(id))
        .buffered(CONCURRENCY)
        .try_collect()
        .await?;
    // A record past its TTL is a connection whose `$disconnect` never ran,
    // not yet removed by DynamoDB (which takes up to days): not open.
    let now = chat_core::ids::expiry_epoch_seconds(SystemTime::now(), std::time::Duration::ZERO);
    let mut rows: Vec<Row> = records
        .into_iter()
        .flatten()
        .filter(|r| r.ttl == 0 || r.ttl > now)
        .filter(|r| user.is_none_or(|u| r.user == u))
        .map(Row::from)
        .collect();
    rows.sort_by(|a, b| (&a.connected_at, &a.connection_id).cmp(&(&b.connected_at, &b.connection_id)));
    Ok(rows)
}

/// Every connection id in the table (not the counter's items), every page.
async fn all_ids(aws: &Aws, table: &str) -> Result<Vec<String>> {
    let pages = aws
        .dynamodb
        .scan()
        .table_name(table)
        .projection_expression("#id")
        .expression_attribute_names("#id", schema::CONNECTION_ID)
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await;
    let items = match pages {
        Err(err) if is_code(&err, &["ResourceNotFoundException"]) => {
            bail!("table {table} does not exist: is the stack deployed? (`chatctl up`)")
        }
        other => other.map_err(failed(format!("cannot read table {table}")))?,
    };
    Ok(items
        .iter()
        .filter_map(|item| item.get(schema::CONNECTION_ID)?.as_s().ok().cloned())
        .filter(|id| !schema::is_bookkeeping_id(id))
        .collect())
}

/// The open connections a target names; an error when there is none.
pub async fn targets(aws: &Aws, names: &Names, target: &Target) -> Result<Vec<Row>> {
    let rows = match target {
        Target::Connection(id) => store(aws, names).get(id).await?.map(Row::from).into_iter().collect(),
        Target::Room(room) => list(aws, names, Some(room), None).await?,
        Target::User(user) => list(aws, names, None, Some(user)).await?,
    };
    if rows.is_empty() {
        bail!("no open connection for {target}");
    }
    Ok(rows)
}

/// What became of each connection a command reached.
#[derive(Debug, Default, Serialize)]
pub struct Outcome {
    pub done: Vec<String>,
    /// Closed before the command reached them (API Gateway answered 410).
    pub gone: Vec<String>,
    pub failed: Vec<(String, String)>,
}

/// The `@connections` endpoint of the deployed API (`https://…/{stage}`),
/// or in a local emulator, that of the `chatctl dev` serving it; or the one
/// given (`chatctl dev` prints it; a trailing `/@connections` is accepted).
/// Through `[domain]` when the API's own endpoint is off.
pub async fn endpoint(aws: &Aws, names: &Names, domain: Option<&DomainSpec>, url: Option<&str>) -> Result<String> {
    let url = match url {
        Some(url) => url.to_string(),
        None => {
            let api = crate::stack::api::deployed_api(aws, names).await?;
            crate::dev::gateway::local_url::connections_url(aws, &api)
                .unwrap_or_else(|| crate::output::Outputs::of(names, &api.id, domain).connections_url)
        }
    };
    if !(url.starts_with("https://") || url.starts_with("http://")) {
        bail!("invalid --url {url:?}: the @connections URL starts with https:// (or http:// for `chatctl dev`)");
    }
    Ok(url.trim_end_matches('/').trim_end_matches("/@connections").to_string())
}

/// A client of the `@connections` API at `endpoint`. Quick retries of
/// throttling, 5xx and dropped connections, as many as chat-core's
/// delivery makes (5): an endpoint that refuses connections is said within
/// two seconds, not after the provisioning calls' budget of retries.
fn management_client(aws: &Aws, endpoint: &str) -> aws_sdk_apigatewaymanagement::Client {
    use aws_sdk_apigatewaymanagement::config::retry::RetryConfig;
    use aws_sdk_apigatewaymanagement::config::timeout::TimeoutConfig;
    let config = aws_sdk_apigatewaymanagement::config::Builder::from(&aws.sdk)
        .endpoint_url(endpoint)
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(5)
                .with_initial_backoff(std::time::Duration::from_millis(100))
                .with_max_backoff(std::time::Duration::from_secs(1)),
        )
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(std::time::Duration::from_secs(5))
                .operation_attempt_timeout(std::time::Duration::from_secs(10))
                .build(),
        )
        .build();
    aws_sdk_apigatewaymanagement::Client::from_conf(config)
}

/// A system message, in the protocol's `message` event, to every row.
pub async fn send(aws: &Aws, endpoint: &str, rows: &[Row], room: Option<&str>, text: &str) -> Result<Outcome> {
    chat_core::validate::message_text(text, usize::MAX).map_err(|e| anyhow::anyhow!("invalid message: {e}"))?;
    let (id, ts) = chat_core::ids::new_message_id(SystemTime::now());
    let event = ServerEvent::Message(ChatMessage {
        id,
        room: room.map(str::to_string),
        to: None,
        from: SYSTEM_SENDER.to_string(),
        text: text.to_string(),
        ts,
    })
    .to_json();
    let client = management_client(aws, endpoint);
    let post = |id: String| {
        let (client, event) = (&client, &event);
        async move {
            client
                .post_to_connection()
                .connection_id(id)
                .data(Blob::new(event.as_bytes()))
                .send()
                .await
                .map(|_| ())
        }
    };
    each_connection(endpoint, rows, "PostToConnection", post).await
}

/// Closes every row's connection (DeleteConnection); API Gateway then runs
/// its `$disconnect` (aws-facts.md §5).
pub async fn kick(aws: &Aws, endpoint: &str, rows: &[Row]) -> Result<Outcome> {
    let client = management_client(aws, endpoint);
    let delete = |id: String| {
        let client = &client;
        async move { client.delete_connection().connection_id(id).send().await.map(|_| ()) }
    };
    each_connection(endpoint, rows, "DeleteConnection", delete).await
}

/// `call` for every row, the first alone: when the `@connections` API
/// cannot be reached, that is said once, as the command's error (exit 1),
/// rather than once per connection. 410 (`GoneException`): the connection
/// closed meanwhile.
async fn each_connection<E, F, Fut>(endpoint: &str, rows: &[Row], operation: &str, call: F) -> Result<Outcome>
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = Result<(), SdkError<E, HttpResponse>>>,
{
    let Some((first, rest)) = rows.split_first() else {
        return Ok(Outcome::default());
    };
    let first_result = call(first.connection_id.clone()).await;
    if let Err(err) = &first_result
        && let Some(why) = no_answer(err)
    {
        bail!("cannot reach the @connections API at {endpoint}: {why}; is the stack (or `chatctl dev`) running?");
    }
    let mut results = vec![(first.connection_id.clone(), first_result)];
    let others: Vec<_> = futures::stream::iter(rest)
        .map(|row| {
            let id = row.connection_id.clone();
            let call = &call;
            async move { (id.clone(), call(id).await) }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    results.extend(others);
    let mut outcome = Outcome::default();
    for (id, result) in results {
        match result {
            Ok(()) => outcome.done.push(id),
            Err(err) if is_code(&err, &["GoneException"]) => outcome.gone.push(id),
            Err(err) => {
                let error = match no_answer(&err) {
                    Some(why) => format!("cannot reach the @connections API at {endpoint}: {why}"),
                    None => aws_error(operation, err).to_string(),
                };
                outcome.failed.push((id, error));
            }
        }
    }
    Ok(outcome)
}

/// Bans `user` (see `chatctl connections ban`).
pub async fn ban(aws: &Aws, names: &Names, user: &str, until: Option<i64>, reason: Option<&str>) -> Result<Ban> {
    Ok(store(aws, names).ban(user, until, reason).await?)
}

/// Lifts `user`'s ban; whether one was in force.
pub async fn unban(aws: &Aws, names: &Names, user: &str) -> Result<bool> {
    Ok(store(aws, names).unban(user).await?)
}

/// The bans in force.
pub async fn bans(aws: &Aws, names: &Names) -> Result<Vec<Ban>> {
    Ok(store(aws, names).bans().await?)
}

/// The longest ban with an end: past it, ban until lifted.
const MAX_BAN: std::time::Duration = std::time::Duration::from_secs(10 * 365 * 86_400);

/// When a ban `--for` this long ends (epoch ms); `None`: until lifted.
pub fn ban_end(duration: Option<&str>, now: SystemTime) -> Result<Option<i64>> {
    let Some(text) = duration else { return Ok(None) };
    let length = humantime::parse_duration(text)
        .map_err(|_| anyhow::anyhow!("invalid --for {text:?}: use a duration like 30m, 24h or 7d"))?;
    if length.is_zero() || length > MAX_BAN {
        bail!("invalid --for {text:?}: between 1s and 10 years (leave --for out to ban until `unban`)");
    }
    Ok(Some(chat_core::ids::epoch_ms(now + length)))
}

/// "until 2026-12-04T08:00:00.000Z" or "until lifted".
pub fn ban_span(ban: &Ban) -> String {
    match ban.until {
        Some(until) => format!(
            "until {}",
            chat_core::ids::format_timestamp_ms(u64::try_from(until).unwrap_or(0))
        ),
        None => "until lifted (`chatctl connections unban`)".to_string(),
    }
}

pub fn bans_table(bans: &[Ban]) -> comfy_table::Table {
    let mut table = comfy_table::Table::new();
    table.load_style(comfy_table::presets::NOTHING);
    table.set_header(["USER", "UNTIL", "SINCE", "REASON"]);
    for ban in bans {
        let time = |ms: i64| chat_core::ids::format_timestamp_ms(u64::try_from(ms).unwrap_or(0));
        table.add_row([
            ban.user.clone(),
            ban.until.map_or_else(|| "lifted by hand".to_string(), time),
            time(ban.banned_at),
            ban.reason.clone().unwrap_or_default(),
        ]);
    }
    table
}

pub fn table(rows: &[Row]) -> comfy_table::Table {
    let mut table = comfy_table::Table::new();
    table.load_style(comfy_table::presets::NOTHING);
    table.set_header(["CONNECTION", "USER", "ROOM", "CONNECTED AT"]);
    for row in rows {
        table.add_row([&row.connection_id, &row.user, &row.room, &row.connected_at]);
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_checked_before_any_call() {
        assert!(Target::Room("lobby".into()).checked().is_ok());
        let bad_room = Target::Room("no spaces".into()).checked().unwrap_err().to_string();
        assert!(bad_room.starts_with("invalid --room"), "{bad_room}");
        assert!(Target::User("".into()).checked().is_err());
        assert!(
            Target::Connection(schema::counter_id(1)).checked().is_err(),
            "never the counter's items"
        );
        assert_eq!(Target::User("bob".into()).to_string(), "user bob");
    }

    #[test]
    fn rows_show_when_they_connected_in_utc() {
        let row = Row::from(ConnectionRecord {
            connection_id: "c1".into(),
            user: "alice".into(),
            room: "lobby".into(),
            connected_at: 1_763_783_641_000,
            ttl: 0,
        });
        assert_eq!(row.connected_at, "2025-11-22T03:54:01.000Z");
    }
}
