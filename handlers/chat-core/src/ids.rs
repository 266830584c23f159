//! Message ids, timestamps, history cursors and conversation keys.
//!
//! A message id is a ULID: unique, and its lexical order is its time order, so
//! it doubles as the messages table's sort key and as the history cursor.

use std::time::{Duration, SystemTime};

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use ulid::Ulid;

use crate::error::ChatError;

/// A new message id and its timestamp, both taken from the same instant.
pub fn new_message_id(now: SystemTime) -> (String, String) {
    let id = Ulid::from_datetime(now);
    let ts = format_timestamp_ms(id.timestamp_ms());
    (id.to_string(), ts)
}

/// RFC 3339, UTC, always with milliseconds: `2026-11-22T03:54:01.123Z`.
pub fn format_timestamp_ms(epoch_ms: u64) -> String {
    let nanos = i128::from(epoch_ms) * 1_000_000;
    let time = OffsetDateTime::from_unix_timestamp_nanos(nanos).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let format =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    time.format(&format)
        .unwrap_or_else(|_| String::from("1970-01-01T00:00:00.000Z"))
}

/// Parses an RFC 3339 timestamp (as written by [`format_timestamp_ms`]).
pub fn parse_timestamp(text: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(text, &Rfc3339).ok()
}

/// Checks a client's `before` cursor: it is the id of the oldest message of
/// the page the client already has.
pub fn parse_cursor(cursor: &str) -> Result<String, ChatError> {
    Ulid::from_string(cursor)
        .map(|id| id.to_string())
        .map_err(|_| ChatError::InvalidCursor(cursor.to_string()))
}

/// Seconds since the epoch, `after` from `now`: the value of a `ttl` attribute.
pub fn expiry_epoch_seconds(now: SystemTime, after: Duration) -> i64 {
    let at = now + after;
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

pub fn epoch_ms(now: SystemTime) -> i64 {
    now.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The messages table's partition key for a room.
pub fn room_conversation(room: &str) -> String {
    format!("room#{room}")
}

/// The partition key for the direct conversation of two users, the same
/// whichever of them asks.
pub fn direct_conversation(a: &str, b: &str) -> String {
    let (first, second) = if a <= b { (a, b) } else { (b, a) };
    format!("dm#{first}#{second}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_by_time_and_are_unique() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_000);
        let (a, _) = new_message_id(t0);
        let (b, _) = new_message_id(t0 + Duration::from_millis(1));
        let (c, _) = new_message_id(t0 + Duration::from_millis(1));
        assert!(a < b && a < c);
        assert_ne!(b, c);
    }

    #[test]
    fn timestamps_are_utc_with_milliseconds() {
        assert_eq!(format_timestamp_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_timestamp_ms(1_763_783_641_007), "2025-11-22T03:54:01.007Z");
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_763_783_641_250);
        let (id, ts) = new_message_id(t);
        assert_eq!(ts, "2025-11-22T03:54:01.250Z");
        assert_eq!(Ulid::from_string(&id).unwrap().timestamp_ms(), 1_763_783_641_250);
        assert!(parse_timestamp(&ts).is_some());
    }

    #[test]
    fn cursors() {
        let (id, _) = new_message_id(SystemTime::now());
        assert_eq!(parse_cursor(&id), Ok(id.clone()));
        assert_eq!(parse_cursor(&id.to_lowercase()), Ok(id));
        for bad in [
            "",
            "abc",
            "not-a-cursor-at-all-0000000",
            "01ARZ3NDEKTSV4RRFFQ69G5FAU",
            "01ARZ3NDEKTSV4RRFFQ69G5FAVX",
        ] {
            assert!(parse_cursor(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn conversation_keys() {
        assert_eq!(room_conversation("lobby"), "room#lobby");
        assert_eq!(direct_conversation("bob", "alice"), "dm#alice#bob");
        assert_eq!(direct_conversation("alice", "bob"), "dm#alice#bob");
        assert_eq!(direct_conversation("alice", "alice"), "dm#alice#alice");
    }

    #[test]
    fn expiry() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(100);
        assert_eq!(expiry_epoch_seconds(t, Duration::from_secs(86_400)), 86_500);
    }
}
