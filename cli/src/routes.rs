//! `chatctl routes list`: the deployed API's routes, read from API Gateway.

use anyhow::{Result, bail};
use serde::Serialize;

use crate::aws::Aws;
use crate::stack::Names;
use crate::stack::api::{self, ApiState};
use crate::stack::integration::function_name;

/// One row of `routes list`; with `--output json` an array of these.
/// The schema is stable: new fields may be added, none removed or renamed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RouteRow {
    pub route_key: String,
    /// The Lambda function the route's integration invokes, if any.
    pub function: Option<String>,
    /// `NONE`, or `CUSTOM` for a Lambda authorizer.
    pub authorization: String,
    /// The authorizer's name when `authorization` is `CUSTOM`.
    pub authorizer: Option<String>,
    /// `AWS_PROXY`, …; None when the route has no integration.
    pub integration_type: Option<String>,
}

/// Reads the routes; an error says so when the stack is not deployed.
pub async fn list(aws: &Aws, names: &Names) -> Result<Vec<RouteRow>> {
    let api = api::read_api(aws, names).await?;
    let Some(api) = api.ours() else {
        bail!(
            "stack {} is not deployed: no WebSocket API named {:?} with tag chatctl:stack={}; run `chatctl up` first",
            names.stack,
            names.api(),
            names.stack
        );
    };
    Ok(rows(api))
}

/// `$connect`, `$disconnect`, `$default` first, then the rest by key.
pub fn rows(api: &ApiState) -> Vec<RouteRow> {
    let mut rows: Vec<RouteRow> = crate::stack::stage::served_routes(api)
        .into_iter()
        .map(|route| RouteRow {
            function: route.integration_uri.as_deref().and_then(function_name),
            authorizer: route.authorizer_name,
            route_key: route.key,
            authorization: route.authorization,
            integration_type: route.integration_type,
        })
        .collect();
    rows.sort_by_key(|row| order(&row.route_key));
    rows
}

fn order(key: &str) -> (usize, String) {
    let rank = ["$connect", "$disconnect", "$default"]
        .iter()
        .position(|k| *k == key)
        .unwrap_or(3);
    (rank, key.to_string())
}

pub fn table(rows: &[RouteRow]) -> comfy_table::Table {
    let mut table = comfy_table::Table::new();
    table.load_style(comfy_table::presets::NOTHING);
    table.set_header(["ROUTE", "FUNCTION", "AUTHORIZATION", "INTEGRATION"]);
    for row in rows {
        let authorization = match &row.authorizer {
            Some(name) => format!("{} ({name})", row.authorization),
            None => row.authorization.clone(),
        };
        table.add_row([
            row.route_key.as_str(),
            row.function.as_deref().unwrap_or("-"),
            authorization.as_str(),
            row.integration_type.as_deref().unwrap_or("-"),
        ]);
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stack::authorizer::AuthorizerState;
    use crate::stack::integration::IntegrationState;
    use crate::stack::route::RouteState;

    fn route(key: &str, integration: &str, authorizer: Option<&str>) -> RouteState {
        RouteState {
            id: format!("r-{key}"),
            key: key.into(),
            target: Some(format!("integrations/{integration}")),
            authorization_type: Some(if authorizer.is_some() { "CUSTOM" } else { "NONE" }.into()),
            authorizer_id: authorizer.map(str::to_string),
            route_response_selection_expression: None,
        }
    }

    fn integration(id: &str, function: &str) -> IntegrationState {
        IntegrationState {
            id: id.into(),
            integration_type: Some("AWS_PROXY".into()),
            uri: Some(format!(
                "arn:aws:apigateway:eu-west-1:lambda:path/2015-03-31/functions/arn:aws:lambda:eu-west-1:1:function:{function}/invocations"
            )),
            method: Some("POST".into()),
            request_templates: Default::default(),
            template_selection_expression: None,
        }
    }

    #[test]
    fn rows_name_functions_and_authorizers_in_route_order() {
        let api = ApiState {
            id: "abc".into(),
            protocol: Some("WEBSOCKET".into()),
            route_selection_expression: None,
            routes: vec![
                route("sendmessage", "i2", None),
                route("$default", "i3", None),
                route("join", "i4", None),
                route("$connect", "i1", Some("a1")),
            ],
            integrations: vec![
                integration("i1", "chat-connect"),
                integration("i2", "chat-sendmessage"),
                integration("i3", "chat-default"),
                integration("i4", "chat-join:live"),
            ],
            authorizers: vec![AuthorizerState {
                id: "a1".into(),
                name: "chat-authorizer".into(),
                authorizer_type: Some("REQUEST".into()),
                uri: None,
                identity_sources: vec![],
            }],
            stage: None,
            keep_alive: Default::default(),
            duplicates: vec![],
            tags: Default::default(),
            execute_api_disabled: false,
            execution_log_group: None,
        };
        let rows = rows(&api);
        let keys: Vec<_> = rows.iter().map(|r| r.route_key.as_str()).collect();
        assert_eq!(keys, ["$connect", "$default", "join", "sendmessage"]);
        assert_eq!(rows[0].function.as_deref(), Some("chat-connect"));
        assert_eq!(rows[0].authorization, "CUSTOM");
        assert_eq!(rows[0].authorizer.as_deref(), Some("chat-authorizer"));
        assert_eq!(rows[1].authorizer, None);
        assert_eq!(rows[2].function.as_deref(), Some("chat-join"));
    }
}
