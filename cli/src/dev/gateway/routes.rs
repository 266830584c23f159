//! What each route invokes, read from the provisioned API.

use super::*;

/// What each route invokes, read from the provisioned API.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    /// `$request.body.<path>`: the JSON path that selects the route.
    pub selection_path: Vec<String>,
    /// Route key → function name.
    pub routes: HashMap<String, String>,
    /// Route key → what API Gateway itself answers, for a route on a MOCK
    /// integration (the keep-alive's): the `$default` integration
    /// response's template when the route is two-way, else nothing.
    pub mocks: HashMap<String, Option<String>>,
    /// The `$connect` authorizer's function name, if the route has one.
    pub authorizer: Option<String>,
    /// The authorizer's identity sources.
    pub identity_sources: Vec<String>,
}

impl RouteTable {
    /// Reads the table from the API as provisioned (routes → integrations → functions).
    pub fn from_api(api: &ApiState) -> RouteTable {
        let selection_path = api
            .route_selection_expression
            .as_deref()
            .and_then(|e| e.strip_prefix("$request.body."))
            .map(|p| p.split('.').map(str::to_string).collect())
            .unwrap_or_default();
        let function_of = |uri: Option<&str>| uri.and_then(crate::stack::integration::function_name);
        let mock = crate::stack::keep_alive::mock_integration(&api.routes, &api.integrations);
        let mut mocks = HashMap::new();
        let mut routes = HashMap::new();
        let mut authorizer = None;
        let mut identity_sources = vec![];
        for route in &api.routes {
            let integration = route
                .target
                .as_deref()
                .and_then(|t| t.strip_prefix("integrations/"))
                .and_then(|id| api.integrations.iter().find(|i| i.id == id));
            if let Some(function) = integration.and_then(|i| function_of(i.uri.as_deref())) {
                routes.insert(route.key.clone(), function);
            }
            if let (Some(integration), Some(mock)) = (integration, mock)
                && integration.id == mock.id
            {
                mocks.insert(route.key.clone(), mock_reply(api, route));
            }
            if route.key == "$connect" && route.authorization_type.as_deref() == Some("CUSTOM") {
                let found = route
                    .authorizer_id
                    .as_deref()
                    .and_then(|id| api.authorizers.iter().find(|a| a.id == id));
                authorizer = found.and_then(|a| function_of(a.uri.as_deref()));
                identity_sources = found.map(|a| a.identity_sources.clone()).unwrap_or_default();
            }
        }
        RouteTable {
            selection_path,
            routes,
            mocks,
            authorizer,
            identity_sources,
        }
    }

    /// Route selection: the value at the selection path of a JSON body,
    /// matched exactly, else `$default`; None when neither exists.
    pub fn select(&self, body: &str) -> Option<&str> {
        let key = serde_json::from_str::<Value>(body).ok().and_then(|value| {
            let mut current = &value;
            for part in &self.selection_path {
                current = current.get(part)?;
            }
            match current {
                Value::String(s) => Some(s.clone()),
                Value::Null => None,
                other => Some(other.to_string()),
            }
        });
        match key {
            // `$connect` and `$disconnect` belong to the connection's life, not
            // to messages: a frame selecting them is unmatched and goes to
            // `$default` (API Gateway's developer guide ties those routes to
            // connecting and disconnecting only, and reserves the `$` prefix).
            Some(key) if key == "$connect" || key == "$disconnect" => self.fallback(),
            Some(key) if self.routes.contains_key(&key) => self.routes.get_key_value(&key).map(|(k, _)| k.as_str()),
            Some(key) if self.mocks.contains_key(&key) => self.mocks.get_key_value(&key).map(|(k, _)| k.as_str()),
            _ => self.fallback(),
        }
    }

    /// `$default` when the API has it; else the frame is answered Forbidden.
    fn fallback(&self) -> Option<&str> {
        self.routes.get_key_value("$default").map(|(k, _)| k.as_str())
    }
}

/// A two-way route's reply on the keep-alive's MOCK integration: the
/// `$default` template of its `$default` integration response, as API
/// Gateway renders it (the template has no variables to fill in).
fn mock_reply(api: &ApiState, route: &crate::stack::route::RouteState) -> Option<String> {
    let state = &api.keep_alive;
    let two_way = route.route_response_selection_expression.as_deref() == Some("$default")
        && route.key == crate::stack::keep_alive::ROUTE_KEY
        && state.route_responses.iter().any(|k| k == "$default");
    let (templates, _) = state.integration_responses.get("$default")?;
    two_way.then(|| templates.get("$default").cloned()).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_selection_follows_the_body_and_falls_back_to_default() {
        let table = RouteTable {
            selection_path: vec!["action".into()],
            routes: HashMap::from([
                ("sendmessage".to_string(), "chat-sendmessage".to_string()),
                ("$default".to_string(), "chat-default".to_string()),
            ]),
            mocks: HashMap::from([("ping".to_string(), Some(r#"{"type":"pong"}"#.to_string()))]),
            authorizer: None,
            identity_sources: vec![],
        };
        assert_eq!(table.select(r#"{"action":"sendmessage"}"#), Some("sendmessage"));
        assert_eq!(table.select(r#"{"action":"ping"}"#), Some("ping"));
        assert_eq!(table.select(r#"{"action":"dance"}"#), Some("$default"));
        assert_eq!(table.select(r#"{"message":"hi"}"#), Some("$default"));
        assert_eq!(table.select("not json"), Some("$default"));
        let with_lifecycle = RouteTable {
            routes: HashMap::from([
                ("$connect".to_string(), "chat-connect".to_string()),
                ("$disconnect".to_string(), "chat-disconnect".to_string()),
                ("$default".to_string(), "chat-default".to_string()),
            ]),
            ..table.clone()
        };
        assert_eq!(with_lifecycle.select(r#"{"action":"$connect"}"#), Some("$default"));
        assert_eq!(with_lifecycle.select(r#"{"action":"$disconnect"}"#), Some("$default"));
        assert_eq!(with_lifecycle.select(r#"{"action":"$default"}"#), Some("$default"));
        let no_default = RouteTable {
            routes: HashMap::from([("join".to_string(), "f".to_string())]),
            ..table
        };
        assert_eq!(no_default.select("not json"), None);
    }
}
