//! What the chat uses and what that costs: a day's usage (measured from
//! metrics, or projected from a shape of traffic) × the prices, part by part.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Serialize;

use super::prices::Prices;
use crate::settings::Arch;

/// API Gateway meters WebSocket messages in 32 KB increments (pricing page).
pub const METERING_BYTES: u64 = 32 * 1024;
/// What a `sendmessage` frame adds to its text: `{"action":"sendmessage","message":"…"}`.
const FRAME_OVERHEAD_BYTES: u64 = 40;
/// What a `message` event adds to its text: type, id, room, from, ts.
const EVENT_OVERHEAD_BYTES: u64 = 160;
/// A month as AWS's calculator counts it: 730 hours.
pub const DAYS_PER_MONTH: f64 = 730.0 / 24.0;
/// A Lambda function gets one full vCPU at 1,769 MB, and CPU in proportion
/// to its memory below that (Lambda developer guide, "Configuring memory").
const MB_PER_VCPU: f64 = 1769.0;

/// The `sendmessage` handler's CPU per delivery: its fan-out's CPU time over
/// the deliveries, measured on the Lambda build (`chatctl dev
/// --lambda-build`, a room of 1,000; `scripts/bench-dev`, README
/// "Benchmarks"). Every post to `@connections` is signed (SigV4) and sent
/// over HTTP; that work is what this is (216 µs while the AWS SDK did it).
pub const CPU_PER_DELIVERY: Duration = Duration::from_micros(64);
/// Wall time of a `sendmessage` besides its fan-out: the sender's record,
/// the rate count, the message written, the room's members read
/// (DynamoDB calls of a few ms each, partly side by side). An assumption.
const SENDMESSAGE_BASE_MS: f64 = 25.0;
/// The other functions' typical durations (assumptions, warm).
const AUTHORIZER_MS: f64 = 5.0;
const CONNECT_MS: f64 = 30.0;
const DISCONNECT_MS: f64 = 25.0;
/// Log bytes ingested per invocation: Lambda's START, END and REPORT lines
/// and the handler's own line.
const LOG_BYTES_PER_INVOCATION: f64 = 600.0;

/// DynamoDB request units per operation, from the handlers' calls (each
/// call's size and consistency; on-demand rules): a room message writes the
/// rate count and the message (2 WRU) and reads the sender's record
/// (strongly consistent), the room index and each member's record (1 RRU
/// each); a direct one queries both users' connections instead; a connect
/// and a disconnect are a ban check or record read and a transaction of
/// three items, two of them in the two indexes.
const ROOM_MESSAGE_WRITES: f64 = 2.0;
const ROOM_MESSAGE_READS_BASE: f64 = 1.5;
const DIRECT_MESSAGE_WRITES: f64 = 2.0;
const DIRECT_MESSAGE_READS: f64 = 2.0;
const CONNECT_WRITES: f64 = 8.0;
const CONNECT_READS: f64 = 1.0;
const DISCONNECT_WRITES: f64 = 8.0;
const DISCONNECT_READS: f64 = 1.0;

/// What the chat used in a day.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Usage {
    /// Messages API Gateway meters: in and out, each per 32 KB begun.
    pub api_messages: f64,
    pub connection_minutes: f64,
    pub lambda_requests: f64,
    pub lambda_gb_seconds: f64,
    pub dynamodb_write_units: f64,
    pub dynamodb_read_units: f64,
    pub logs_gb: f64,
    /// Messages the users sent: the unit "per 1,000 messages" counts.
    pub chat_messages: f64,
}

impl Usage {
    pub fn scaled(&self, factor: f64) -> Usage {
        Usage {
            api_messages: self.api_messages * factor,
            connection_minutes: self.connection_minutes * factor,
            lambda_requests: self.lambda_requests * factor,
            lambda_gb_seconds: self.lambda_gb_seconds * factor,
            dynamodb_write_units: self.dynamodb_write_units * factor,
            dynamodb_read_units: self.dynamodb_read_units * factor,
            logs_gb: self.logs_gb * factor,
            chat_messages: self.chat_messages * factor,
        }
    }
}

/// One line of the bill.
#[derive(Debug, Clone, Serialize)]
pub struct Part {
    pub part: &'static str,
    pub quantity_per_day: f64,
    pub unit: &'static str,
    pub dollars_per_day: f64,
    /// % of the whole.
    pub share: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Bill {
    pub parts: Vec<Part>,
    pub dollars_per_day: f64,
    pub dollars_per_month: f64,
    /// None when no message was sent.
    pub dollars_per_1000_messages: Option<f64>,
}

/// A day's `usage` at `prices`, for functions on `arch`.
pub fn bill(usage: &Usage, prices: &Prices, arch: Arch) -> Bill {
    let gb_second = match arch {
        Arch::X86_64 => prices.lambda_gb_second_x86_64,
        Arch::Arm64 => prices.lambda_gb_second_arm64,
    };
    let million = 1e6;
    let lines = [
        (
            "API Gateway messages",
            usage.api_messages,
            "messages",
            usage.api_messages / million * prices.api_messages_per_million,
        ),
        (
            "API Gateway connection minutes",
            usage.connection_minutes,
            "minutes",
            usage.connection_minutes / million * prices.api_connection_minutes_per_million,
        ),
        (
            "Lambda requests",
            usage.lambda_requests,
            "requests",
            usage.lambda_requests / million * prices.lambda_requests_per_million,
        ),
        (
            "Lambda duration",
            usage.lambda_gb_seconds,
            "GB-s",
            usage.lambda_gb_seconds * gb_second,
        ),
        (
            "DynamoDB writes",
            usage.dynamodb_write_units,
            "WRU",
            usage.dynamodb_write_units / million * prices.dynamodb_write_units_per_million,
        ),
        (
            "DynamoDB reads",
            usage.dynamodb_read_units,
            "RRU",
            usage.dynamodb_read_units / million * prices.dynamodb_read_units_per_million,
        ),
        (
            "CloudWatch Logs",
            usage.logs_gb,
            "GB",
            usage.logs_gb * prices.logs_ingested_per_gb,
        ),
    ];
    let total: f64 = lines.iter().map(|line| line.3).sum();
    Bill {
        parts: lines
            .into_iter()
            .map(|(part, quantity_per_day, unit, dollars_per_day)| Part {
                part,
                quantity_per_day,
                unit,
                dollars_per_day,
                share: if total > 0.0 {
                    dollars_per_day / total * 100.0
                } else {
                    0.0
                },
            })
            .collect(),
        dollars_per_day: total,
        dollars_per_month: total * DAYS_PER_MONTH,
        dollars_per_1000_messages: (usage.chat_messages > 0.0).then(|| total / usage.chat_messages * 1000.0),
    }
}

/// How many API Gateway messages one of `bytes` is metered as.
pub fn metered(bytes: u64) -> f64 {
    bytes.div_ceil(METERING_BYTES).max(1) as f64
}

/// The share of a vCPU a `sendmessage` uses at `memory_mb`: at most one,
/// as the functions serve their one event on one thread.
pub fn cpu_share(memory_mb: i32) -> f64 {
    (f64::from(memory_mb) / MB_PER_VCPU).min(1.0)
}

/// How long a `sendmessage` to `recipients` takes at `memory_mb`: its
/// fixed part, and the fan-out's CPU at the function's share of a vCPU.
pub fn sendmessage_ms(recipients: f64, memory_mb: i32) -> f64 {
    SENDMESSAGE_BASE_MS + recipients * CPU_PER_DELIVERY.as_secs_f64() * 1000.0 / cpu_share(memory_mb)
}

/// The largest room a `sendmessage` reaches within `timeout_seconds` at
/// `memory_mb`: the fan-out is CPU-bound at Lambda's small memory sizes.
pub fn largest_room(memory_mb: i32, timeout_seconds: i32) -> u64 {
    let fan_out_ms = f64::from(timeout_seconds) * 1000.0 - SENDMESSAGE_BASE_MS;
    let per_delivery_ms = CPU_PER_DELIVERY.as_secs_f64() * 1000.0 / cpu_share(memory_mb);
    (fan_out_ms.max(0.0) / per_delivery_ms).floor() as u64
}

/// Lambda's largest memory size.
const MAX_MEMORY_MB: i32 = 10_240;

/// What `up` says when a room as large as `max_connections` allows is more
/// than `sendmessage` reaches within its timeout at its memory; none when
/// every room is reached.
pub fn room_warning(max_connections: u64, memory_mb: i32, timeout_seconds: i32) -> Option<String> {
    let largest = largest_room(memory_mb, timeout_seconds);
    if max_connections <= largest {
        return None;
    }
    let per_delivery_ms = CPU_PER_DELIVERY.as_secs_f64() * 1000.0;
    let needed_mb = (max_connections as f64 * per_delivery_ms * MB_PER_VCPU
        / (f64::from(timeout_seconds) * 1000.0 - SENDMESSAGE_BASE_MS))
        .ceil() as i32;
    let remedy = if needed_mb <= MAX_MEMORY_MB {
        format!("memory = {needed_mb} (or more) reaches it")
    } else {
        "no memory size reaches it: raise timeout too, or lower max_connections".to_string()
    };
    Some(format!(
        "a room may hold up to {max_connections} connections (max_connections), but sendmessage at {memory_mb} MB \
         ({:.2} of a vCPU, about {:.0} µs of CPU per delivery) reaches about {largest} within its {timeout_seconds} s \
         timeout; the rest of such a room would not get the message. {remedy}",
        cpu_share(memory_mb),
        per_delivery_ms * 1000.0
    ))
}

/// `--project users=10000,messages_per_user_per_hour=30,room_size=10`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Shape {
    /// Users connected at any time, one connection each.
    pub users: f64,
    pub messages_per_user_per_hour: f64,
    /// Connections a room message goes to, the sender's included.
    pub room_size: f64,
    pub message_bytes: u64,
    /// % of messages sent direct (to the other user's and the sender's connection).
    pub direct_percent: f64,
    /// Hours a day the users are connected.
    pub hours_per_day: f64,
    /// A client's keep-alive ping every this many minutes (0: none); each is two messages.
    pub ping_minutes: f64,
}

impl Shape {
    pub fn parse(text: &str) -> Result<Shape> {
        let mut shape = Shape {
            users: f64::NAN,
            messages_per_user_per_hour: f64::NAN,
            room_size: f64::NAN,
            message_bytes: 200,
            direct_percent: 0.0,
            hours_per_day: 24.0,
            ping_minutes: 5.0,
        };
        for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, value) = pair
                .split_once('=')
                .with_context(|| format!("invalid --project {pair:?}: use KEY=VALUE, e.g. users=10000"))?;
            let number: f64 = value
                .trim()
                .parse()
                .ok()
                .filter(|n: &f64| n.is_finite() && *n >= 0.0)
                .with_context(|| format!("invalid --project {pair:?}: {key} takes a number, 0 or more"))?;
            match key.trim() {
                "users" => shape.users = number,
                "messages_per_user_per_hour" => shape.messages_per_user_per_hour = number,
                "room_size" => shape.room_size = number,
                "message_bytes" => shape.message_bytes = number as u64,
                "direct_percent" if number <= 100.0 => shape.direct_percent = number,
                "hours_per_day" if number <= 24.0 => shape.hours_per_day = number,
                "ping_minutes" => shape.ping_minutes = number,
                "direct_percent" | "hours_per_day" => bail!("invalid --project {pair:?}: out of range"),
                other => bail!(
                    "invalid --project key {other:?}: use users, messages_per_user_per_hour, room_size (required), \
                     message_bytes, direct_percent, hours_per_day, ping_minutes"
                ),
            }
        }
        for (name, value) in [
            ("users", shape.users),
            ("messages_per_user_per_hour", shape.messages_per_user_per_hour),
            ("room_size", shape.room_size),
        ] {
            if value.is_nan() {
                bail!("--project needs {name}, e.g. users=10000,messages_per_user_per_hour=30,room_size=10");
            }
        }
        if shape.room_size < 1.0 {
            bail!("--project room_size must be at least 1 (the sender's own connection)");
        }
        Ok(shape)
    }

    /// A day of this traffic on functions of `memory_mb`.
    pub fn usage(&self, memory_mb: i32) -> Usage {
        let sent = self.users * self.messages_per_user_per_hour * self.hours_per_day;
        let direct = sent * self.direct_percent / 100.0;
        let room = sent - direct;
        // The sender's and the other user's connection.
        let direct_recipients = 2.0;
        let deliveries = room * self.room_size + direct * direct_recipients;
        let pings = match self.ping_minutes {
            0.0 => 0.0,
            every => self.users * self.hours_per_day * 60.0 / every,
        };
        // API Gateway closes every connection after 2 hours: clients reconnect.
        let connects = self.users * (self.hours_per_day / 2.0).ceil().max(1.0);
        let api_messages = sent * metered(self.message_bytes + FRAME_OVERHEAD_BYTES)
            + deliveries * metered(self.message_bytes + EVENT_OVERHEAD_BYTES)
            + pings * 2.0;
        let gb = f64::from(memory_mb) / 1024.0;
        let ms = room * sendmessage_ms(self.room_size, memory_mb)
            + direct * sendmessage_ms(direct_recipients, memory_mb)
            + connects * (AUTHORIZER_MS + CONNECT_MS + DISCONNECT_MS);
        let requests = sent + connects * 3.0;
        Usage {
            api_messages,
            connection_minutes: self.users * self.hours_per_day * 60.0,
            lambda_requests: requests,
            lambda_gb_seconds: ms / 1000.0 * gb,
            dynamodb_write_units: room * ROOM_MESSAGE_WRITES
                + direct * DIRECT_MESSAGE_WRITES
                + connects * (CONNECT_WRITES + DISCONNECT_WRITES),
            dynamodb_read_units: room * (ROOM_MESSAGE_READS_BASE + self.room_size)
                + direct * DIRECT_MESSAGE_READS
                + connects * (CONNECT_READS + DISCONNECT_READS),
            logs_gb: requests * LOG_BYTES_PER_INVOCATION / 1e9,
            chat_messages: sent,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_metered_per_32_kb_begun() {
        assert_eq!(metered(1), 1.0);
        assert_eq!(metered(32 * 1024), 1.0);
        assert_eq!(metered(33 * 1024), 2.0);
        assert_eq!(metered(128 * 1024), 4.0);
    }

    #[test]
    fn a_shape_needs_its_three_figures_and_takes_known_keys() {
        let shape = Shape::parse("users=10000, messages_per_user_per_hour=30,room_size=10").unwrap();
        assert_eq!(
            (shape.users, shape.room_size, shape.message_bytes),
            (10000.0, 10.0, 200)
        );
        for (text, expected) in [
            ("users=10", "needs messages_per_user_per_hour"),
            ("users=ten", "users takes a number"),
            ("users", "use KEY=VALUE"),
            (
                "users=1,messages_per_user_per_hour=1,room_size=1,rooms=3",
                "invalid --project key \"rooms\"",
            ),
            ("users=1,messages_per_user_per_hour=1,room_size=0", "at least 1"),
            (
                "users=1,messages_per_user_per_hour=1,room_size=2,hours_per_day=25",
                "out of range",
            ),
        ] {
            let error = Shape::parse(text).unwrap_err().to_string();
            assert!(error.contains(expected), "{text}: {error}");
        }
    }

    /// The README's worked example, by hand: 10,000 users, 30 messages an
    /// hour each, rooms of 10, 200-byte messages, pings every 5 minutes.
    #[test]
    fn the_readme_projection_adds_up() {
        let shape = Shape::parse("users=10000,messages_per_user_per_hour=30,room_size=10").unwrap();
        let usage = shape.usage(128);
        let sent = 10_000.0 * 30.0 * 24.0; // 7.2 M a day
        assert_eq!(usage.chat_messages, sent);
        // In: 7.2 M; out: 72 M deliveries; pings: 10,000 × 288 × 2 = 5.76 M.
        assert_eq!(usage.api_messages, sent + sent * 10.0 + 5_760_000.0);
        assert_eq!(usage.connection_minutes, 14_400_000.0);
        // 12 connects a day each (the 2-hour cut), 3 functions each.
        assert_eq!(usage.lambda_requests, sent + 120_000.0 * 3.0);
        assert_eq!(usage.dynamodb_write_units, sent * 2.0 + 120_000.0 * 16.0);
        assert_eq!(usage.dynamodb_read_units, sent * 11.5 + 120_000.0 * 2.0);
        let prices = super::super::prices::published("us-east-1").unwrap();
        let bill = bill(&usage, &prices, Arch::X86_64);
        let api = &bill.parts[0];
        assert!((api.dollars_per_day - 84.96).abs() < 0.01, "{api:?}");
        assert!(api.share > 50.0, "API Gateway's messages are most of it: {bill:?}");
        let shares: f64 = bill.parts.iter().map(|p| p.share).sum();
        assert!((shares - 100.0).abs() < 1e-6);
        assert!((bill.dollars_per_month - bill.dollars_per_day * 30.416_666).abs() < 0.01);
    }

    #[test]
    fn up_warns_when_a_full_room_is_out_of_reach() {
        let largest = largest_room(128, 10);
        assert_eq!(room_warning(largest, 128, 10), None);
        let warning = room_warning(largest + 1, 128, 10).unwrap();
        assert!(
            warning.contains(&format!("reaches about {largest} within its 10 s")),
            "{warning}"
        );
        let needed: i32 = warning
            .split("memory = ")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap();
        assert!(largest_room(needed, 10) > largest, "{warning}");
        assert!(
            room_warning(10_000_000, 128, 1)
                .unwrap()
                .contains("no memory size reaches it")
        );
    }

    #[test]
    fn the_largest_room_grows_with_memory_and_time() {
        let small = largest_room(128, 10);
        assert!(largest_room(1769, 10) > small * 13);
        assert_eq!(
            largest_room(3008, 10),
            largest_room(1769, 10),
            "one thread: one vCPU at most"
        );
        assert!(largest_room(128, 20) > small * 2 - 1);
        // CPU at the function's share of a vCPU: at 1,769 MB, one delivery's CPU in wall time.
        let full = sendmessage_ms(1000.0, 1769) - SENDMESSAGE_BASE_MS;
        assert!((full - CPU_PER_DELIVERY.as_secs_f64() * 1e6).abs() < 1e-6);
    }
}
