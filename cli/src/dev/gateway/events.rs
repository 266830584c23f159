//! The events API Gateway sends a function: request context, headers and
//! query strings in its shapes.

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

pub(super) fn headers_json(headers: &HeaderMap) -> (Value, Value) {
    let mut single = Map::new();
    let mut multi: Map<String, Value> = Map::new();
    for (name, value) in headers {
        // API Gateway keeps the case clients send; HTTP/1 libraries lowercase it.
        let name = canonical_header(name.as_str());
        let value = value.to_str().unwrap_or_default().to_string();
        single.insert(name.clone(), json!(value));
        if let Some(list) = multi.entry(name).or_insert_with(|| json!([])).as_array_mut() {
            list.push(json!(value));
        }
    }
    (Value::Object(single), Value::Object(multi))
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

pub(super) fn query_json(raw: Option<&str>) -> (Option<Value>, Option<Value>) {
    let Some(raw) = raw.filter(|q| !q.is_empty()) else {
        return (None, None);
    };
    let mut single = Map::new();
    let mut multi: Map<String, Value> = Map::new();
    for (key, value) in form_urlencoded_pairs(raw) {
        single.insert(key.clone(), json!(value));
        if let Some(list) = multi.entry(key).or_insert_with(|| json!([])).as_array_mut() {
            list.push(json!(value));
        }
    }
    (Some(Value::Object(single)), Some(Value::Object(multi)))
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
        let (single, multi) = query_json(Some("token=a%2Bb&room=general&room=x"));
        assert_eq!(single.unwrap(), json!({"token":"a+b","room":"x"}));
        assert_eq!(multi.unwrap()["room"], json!(["general", "x"]));
        assert_eq!(query_json(Some("")), (None, None));
        assert_eq!(canonical_header("sec-websocket-protocol"), "Sec-Websocket-Protocol");
        assert!(httpdate(0).starts_with("01/Jan/1970:00:00:00"));
    }
}
