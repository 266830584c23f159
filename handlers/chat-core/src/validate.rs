//! Input validation: rooms, users, message text, history limits.

use crate::config::MAX_HISTORY_PAGE_SIZE;
use crate::error::ChatError;

pub const DEFAULT_ROOM: &str = "lobby";
const NAME_MAX_CHARS: usize = 64;

/// Room names: `[A-Za-z0-9_-]{1,64}`.
pub fn room(name: &str) -> Result<(), ChatError> {
    let valid = (1..=NAME_MAX_CHARS).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if valid {
        Ok(())
    } else {
        Err(ChatError::InvalidRoom(name.to_string()))
    }
}

fn is_user_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'@')
}

/// User ids: `[A-Za-z0-9_.@-]{1,64}`, so an e-mail address works as a token's `sub`.
/// `#` is excluded because it separates the parts of conversation keys.
pub fn user(name: &str) -> Result<(), ChatError> {
    if (1..=NAME_MAX_CHARS).contains(&name.len()) && name.bytes().all(is_user_byte) {
        Ok(())
    } else {
        Err(ChatError::InvalidUser(name.to_string()))
    }
}

/// Turns a self-chosen `?user=` name (auth mode `none`) into a valid user id by
/// dropping every character not allowed; `None` when nothing is left.
pub fn sanitize_user(raw: &str) -> Option<String> {
    let clean: String = raw
        .bytes()
        .filter(|b| is_user_byte(*b))
        .take(NAME_MAX_CHARS)
        .map(char::from)
        .collect();
    (!clean.is_empty()).then_some(clean)
}

/// Message text: not blank, at most `max_bytes` of UTF-8.
pub fn message_text(text: &str, max_bytes: usize) -> Result<(), ChatError> {
    if text.trim().is_empty() {
        return Err(ChatError::EmptyMessage);
    }
    if text.len() > max_bytes {
        return Err(ChatError::MessageTooLarge {
            actual: text.len(),
            limit: max_bytes,
        });
    }
    Ok(())
}

/// The page size for a history request: the default when absent, capped at 100.
pub fn history_limit(requested: Option<i64>, default: u32) -> Result<u32, ChatError> {
    match requested {
        None => Ok(default.min(MAX_HISTORY_PAGE_SIZE)),
        Some(n) if n < 1 => Err(ChatError::InvalidLimit(n)),
        Some(n) => Ok(n.min(i64::from(MAX_HISTORY_PAGE_SIZE)) as u32),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_names() {
        for ok in ["lobby", "a", "general-2", "under_score", &"r".repeat(64)] {
            assert!(room(ok).is_ok(), "{ok}");
        }
        for bad in ["", " ", "with space", "émoji", "a/b", "a#b", &"r".repeat(65), "lobby\n"] {
            assert_eq!(room(bad), Err(ChatError::InvalidRoom(bad.into())), "{bad:?}");
        }
    }

    #[test]
    fn user_names() {
        for ok in ["alice", "bob_2", "a.b@example.com", "x-y"] {
            assert!(user(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a b", "a#b", "ünïcode", &"u".repeat(65)] {
            assert!(user(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn sanitizing_keeps_allowed_characters_only() {
        assert_eq!(sanitize_user("Alice Smith!"), Some("AliceSmith".into()));
        assert_eq!(sanitize_user("<script>"), Some("script".into()));
        assert_eq!(sanitize_user("a#b"), Some("ab".into()));
        assert_eq!(sanitize_user("  !!"), None);
        assert_eq!(sanitize_user(&"x".repeat(100)).map(|s| s.len()), Some(64));
    }

    #[test]
    fn message_text_limits() {
        assert_eq!(message_text("", 10), Err(ChatError::EmptyMessage));
        assert_eq!(message_text(" \n\t", 10), Err(ChatError::EmptyMessage));
        assert!(message_text("hello", 5).is_ok());
        assert_eq!(
            message_text("héllo", 5),
            Err(ChatError::MessageTooLarge { actual: 6, limit: 5 })
        );
    }

    #[test]
    fn history_limits() {
        assert_eq!(history_limit(None, 50), Ok(50));
        assert_eq!(history_limit(Some(1), 50), Ok(1));
        assert_eq!(history_limit(Some(100), 50), Ok(100));
        assert_eq!(history_limit(Some(5000), 50), Ok(100));
        assert_eq!(history_limit(Some(0), 50), Err(ChatError::InvalidLimit(0)));
        assert_eq!(history_limit(Some(-3), 50), Err(ChatError::InvalidLimit(-3)));
    }
}
