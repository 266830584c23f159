//! The `$connect` authorizer: identity sources, and its answer read as API
//! Gateway reads it.

use super::*;

/// Whether every identity source has a non-empty value; API Gateway answers
/// 401 without invoking the authorizer otherwise. Stage variables and
/// context values are not modelled locally and count as present.
pub(super) fn identity_present(sources: &[String], headers: &HeaderMap, query: &[(String, String)]) -> bool {
    sources.iter().all(|source| {
        if let Some(name) = source.strip_prefix("route.request.header.") {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| !v.trim().is_empty())
        } else if let Some(name) = source.strip_prefix("route.request.querystring.") {
            query.iter().any(|(k, v)| k == name && !v.is_empty())
        } else {
            true
        }
    })
}

/// What the authorizer decided.
pub(super) enum Authorization {
    Allowed(Value),
    Refused(StatusCode),
}

/// Allow covering the method ARN → the context; `Unauthorized` → 401;
/// Deny or no covering Allow → 403; anything else → 500.
pub(super) fn authorization_from(outcome: Outcome, method_arn: &str) -> Authorization {
    let body = match outcome {
        Outcome::Response(body) => body,
        Outcome::Error { error_message, .. } if error_message == "Unauthorized" => {
            return Authorization::Refused(StatusCode::UNAUTHORIZED);
        }
        _ => return Authorization::Refused(StatusCode::INTERNAL_SERVER_ERROR),
    };
    let Ok(response) = serde_json::from_slice::<Value>(&body) else {
        return Authorization::Refused(StatusCode::INTERNAL_SERVER_ERROR);
    };
    let Some(statements) = response["policyDocument"]["Statement"].as_array() else {
        return Authorization::Refused(StatusCode::INTERNAL_SERVER_ERROR);
    };
    let covers = |statement: &Value| {
        let resources = match &statement["Resource"] {
            Value::String(s) => vec![s.clone()],
            Value::Array(list) => list.iter().filter_map(|v| v.as_str().map(str::to_string)).collect(),
            _ => vec![],
        };
        resources.iter().any(|r| arn_matches(r, method_arn))
    };
    let denied = statements.iter().any(|s| s["Effect"] == "Deny" && covers(s));
    let allowed = statements.iter().any(|s| s["Effect"] == "Allow" && covers(s));
    if denied || !allowed {
        return Authorization::Refused(StatusCode::FORBIDDEN);
    }
    let mut context = match &response["context"] {
        Value::Object(map) => map.clone(),
        Value::Null => Map::new(),
        _ => return Authorization::Refused(StatusCode::INTERNAL_SERVER_ERROR),
    };
    if context.values().any(|v| v.is_object() || v.is_array()) {
        return Authorization::Refused(StatusCode::INTERNAL_SERVER_ERROR);
    }
    context.insert("principalId".into(), response["principalId"].clone());
    Authorization::Allowed(Value::Object(context))
}

/// IAM resource matching: `*` is any run of characters, `?` any one.
pub(super) fn arn_matches(pattern: &str, arn: &str) -> bool {
    wildmatch::WildMatch::new(pattern).matches(arn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_identity_sources_refuse_before_the_authorizer_runs() {
        let sources = vec![
            "route.request.querystring.token".to_string(),
            "route.request.header.X-Client".to_string(),
        ];
        let mut headers = HeaderMap::new();
        headers.insert("x-client", HeaderValue::from_static("web"));
        let query = form_urlencoded_pairs("token=abc&room=lobby");
        assert!(identity_present(&sources, &headers, &query));
        assert!(!identity_present(&sources, &HeaderMap::new(), &query));
        assert!(!identity_present(
            &sources,
            &headers,
            &form_urlencoded_pairs("token=&room=lobby")
        ));
        assert!(!identity_present(&sources, &headers, &[]));
        assert!(
            identity_present(&[], &HeaderMap::new(), &[]),
            "no sources: always invoke"
        );
    }

    #[test]
    fn authorizer_outcomes_map_to_statuses() {
        let arn = "arn:aws:execute-api:us-east-1:1:abc/dev/$connect";
        let policy = |effect: &str, resource: &str| {
            Outcome::Response(Bytes::from(
                json!({"principalId":"alice","policyDocument":{"Version":"2012-10-17","Statement":[{"Action":"execute-api:Invoke","Effect":effect,"Resource":[resource]}]},"context":{"user":"alice"}}).to_string(),
            ))
        };
        assert!(
            matches!(authorization_from(policy("Allow", arn), arn), Authorization::Allowed(c) if c["user"] == "alice" && c["principalId"] == "alice")
        );
        assert!(matches!(
            authorization_from(policy("Allow", "arn:aws:execute-api:us-east-1:1:abc/*"), arn),
            Authorization::Allowed(_)
        ));
        assert!(matches!(
            authorization_from(policy("Deny", arn), arn),
            Authorization::Refused(StatusCode::FORBIDDEN)
        ));
        assert!(matches!(
            authorization_from(policy("Allow", "arn:other"), arn),
            Authorization::Refused(StatusCode::FORBIDDEN)
        ));
        let unauthorized = Outcome::Error {
            error_type: "x".into(),
            error_message: "Unauthorized".into(),
        };
        assert!(matches!(
            authorization_from(unauthorized, arn),
            Authorization::Refused(StatusCode::UNAUTHORIZED)
        ));
        let failed = Outcome::Error {
            error_type: "x".into(),
            error_message: "boom".into(),
        };
        assert!(matches!(
            authorization_from(failed, arn),
            Authorization::Refused(StatusCode::INTERNAL_SERVER_ERROR)
        ));
        let malformed = Outcome::Response(Bytes::from_static(b"{\"principalId\":\"a\"}"));
        assert!(matches!(
            authorization_from(malformed, arn),
            Authorization::Refused(StatusCode::INTERNAL_SERVER_ERROR)
        ));
    }

    #[test]
    fn authorizer_policies_match_resources_with_iam_wildcards() {
        let arn = "arn:aws:execute-api:us-east-1:123456789012:abc123/dev/$connect";
        for pattern in [
            arn,
            "arn:aws:execute-api:us-east-1:123456789012:abc123/*",
            "arn:aws:execute-api:*:*:abc123/dev/*",
            "arn:aws:execute-api:us-east-1:123456789012:abc123/?ev/$connect",
            "*",
        ] {
            assert!(arn_matches(pattern, arn), "{pattern}");
        }
        for pattern in [
            "arn:aws:execute-api:us-east-1:123456789012:other/*",
            "arn:aws:execute-api:us-east-1:123456789012:abc123/prod/*",
            "arn:aws:execute-api:us-east-1:123456789012:abc123/?/$connect",
            "",
        ] {
            assert!(!arn_matches(pattern, arn), "{pattern}");
        }
    }
}
