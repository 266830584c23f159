//! What goes into the events API Gateway sends a function (built by
//! `apigw_events`): ids, times, headers and query strings in its shapes.

use apigw_events::Params;

use super::*;

pub(super) fn request_id() -> String {
    let bytes: [u8; 11] = rand::random();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Common Log Format time, as `requestTime`: `22/Nov/2026:03:54:01 +0000`.
pub(super) fn httpdate(epoch_ms: i64) -> String {
    let time = time::OffsetDateTime::from_unix_timestamp(epoch_ms / 1000).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let format = time::macros::format_description!("[day]/[month repr:short]/[year]:[hour]:[minute]:[second] +0000");
    time.format(&format).unwrap_or_default()
}

/// The handshake's headers, with the case API Gateway keeps (clients send
/// it; HTTP/1 libraries lowercase it).
pub(super) fn headers_params(headers: &HeaderMap) -> Params {
    Params::from_pairs(headers.iter().map(|(name, value)| {
        (
            canonical_header(name.as_str()),
            value.to_str().unwrap_or_default().to_string(),
        )
    }))
}

pub(super) fn canonical_header(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut chars = part.chars();
            match chars.next() {
                Some(first) => first.to_uppercase().collect::<String>() + chars.as_str(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join("-")
}

/// The handshake's query string, decoded.
pub(super) fn query_params(raw: Option<&str>) -> Params {
    Params::from_pairs(form_urlencoded_pairs(raw.unwrap_or_default()))
}

/// A query string's pairs, decoded as API Gateway does (`+` is a space).
pub(super) fn form_urlencoded_pairs(raw: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(raw.as_bytes()).into_owned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings_and_headers_are_shaped_like_api_gateways() {
        let query = query_params(Some("token=a%2Bb&room=general&room=x"));
        assert_eq!(Value::Object(query.single), json!({"token":"a+b","room":"x"}));
        assert_eq!(query.multi["room"], json!(["general", "x"]));
        assert!(query_params(Some("")).is_empty());
        assert_eq!(canonical_header("sec-websocket-protocol"), "Sec-Websocket-Protocol");
        assert!(httpdate(0).starts_with("01/Jan/1970:00:00:00"));
    }
}
