//! The keep-alive route: `{"action":"ping"}` is answered `{"type":"pong"}`
//! by API Gateway itself, with no function invoked, so a client can keep its
//! connection past the 10-minute idle timeout for the price of two messages.
//!
//! API Gateway's way (developer guide, "WebSocket API integration
//! responses", "route responses" and "selection expressions"; CDK's
//! WebSocketMockIntegration; terraform-provider-aws #36711): a MOCK
//! integration whose request template gives the status (`{"statusCode":
//! 200}`), an integration response `$default` whose template is the reply,
//! and a two-way route: RouteResponseSelectionExpression `$default` and a
//! route response `$default` (the only key API Gateway supports). Without
//! the route response the route is one-way and the client gets nothing.
//! `\$default` as a template selection expression names the `$default`
//! template.

use std::collections::BTreeMap;

use anyhow::{Result, bail};
use aws_sdk_apigatewayv2::types::{AuthorizationType, IntegrationType, PassthroughBehavior};
use serde::Serialize;

use super::api_writes::{ApiWrites, sent_once};
use super::base::{Action, Change, Detail, Kind, Report, all_pages, live_id, step};
use super::integration::{IntegrationState, read_integrations};
use super::route::{RouteState, read_routes};
use crate::aws::{Aws, failed};

/// The route key clients send as `action`.
pub const ROUTE_KEY: &str = "ping";
/// What API Gateway answers.
pub const PONG: &str = r#"{"type":"pong"}"#;
/// The plan's name for the MOCK integration.
pub const INTEGRATION_NAME: &str = "keep-alive";
pub const MOCK: &str = "MOCK";
/// A MOCK integration's request template must give an integer statusCode.
const REQUEST_TEMPLATE: &str = r#"{"statusCode": 200}"#;
const DEFAULT_KEY: &str = "$default";
/// Selects the template under `$default` (the `$` escaped).
const DEFAULT_TEMPLATE: &str = "\\$default";

/// The keep-alive parts an API has.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct KeepAliveState {
    /// Integration responses of the MOCK integration: key → (templates,
    /// template selection expression).
    pub integration_responses: BTreeMap<String, (BTreeMap<String, String>, Option<String>)>,
    /// Route response keys of the `ping` route.
    pub route_responses: Vec<String>,
}

/// The MOCK integration of the keep-alive: the `ping` route's target if it
/// is one, else the first MOCK integration (made by an interrupted `up`).
pub fn mock_integration<'a>(
    routes: &[RouteState],
    integrations: &'a [IntegrationState],
) -> Option<&'a IntegrationState> {
    let is_mock = |i: &&IntegrationState| i.integration_type.as_deref() == Some(MOCK);
    let target = routes
        .iter()
        .find(|r| r.key == ROUTE_KEY)
        .and_then(|r| r.target.as_deref())
        .and_then(|t| t.strip_prefix("integrations/"));
    integrations
        .iter()
        .filter(is_mock)
        .find(|i| Some(i.id.as_str()) == target)
        .or_else(|| integrations.iter().find(is_mock))
}

/// Reads the responses of the keep-alive's integration and route (a round
/// after routes and integrations, whose ids it needs).
pub async fn read_keep_alive(
    aws: &Aws,
    api_id: &str,
    routes: &[RouteState],
    integrations: &[IntegrationState],
) -> Result<KeepAliveState> {
    let integration = mock_integration(routes, integrations);
    let route = routes.iter().find(|r| r.key == ROUTE_KEY);
    let (integration_responses, route_responses) = tokio::try_join!(
        async {
            let Some(integration) = integration else {
                return Ok(BTreeMap::new());
            };
            integration_responses(aws, api_id, &integration.id).await
        },
        async {
            let Some(route) = route else {
                return Ok(vec![]);
            };
            route_responses(aws, api_id, &route.id).await
        },
    )?;
    Ok(KeepAliveState {
        integration_responses,
        route_responses,
    })
}

/// Every response of the keep-alive's integration, by key: its templates
/// and template selection expression (every page, as every list call).
async fn integration_responses(
    aws: &Aws,
    api_id: &str,
    integration_id: &str,
) -> Result<BTreeMap<String, (BTreeMap<String, String>, Option<String>)>> {
    let what = "cannot read the keep-alive integration's responses";
    let responses = all_pages(what, |token| async move {
        let page = aws
            .apigateway
            .get_integration_responses()
            .api_id(api_id)
            .integration_id(integration_id)
            .set_next_token(token)
            .send()
            .await
            .map_err(failed(what))?;
        let items = page
            .items()
            .iter()
            .map(|response| {
                let templates = response.response_templates().cloned().unwrap_or_default();
                (
                    response.integration_response_key().unwrap_or_default().to_string(),
                    (
                        templates.into_iter().collect(),
                        response.template_selection_expression().map(str::to_string),
                    ),
                )
            })
            .collect();
        Ok((items, page.next_token))
    })
    .await?;
    Ok(responses.into_iter().collect())
}

/// The keys of the `ping` route's responses, every page.
async fn route_responses(aws: &Aws, api_id: &str, route_id: &str) -> Result<Vec<String>> {
    let what = "cannot read the ping route's responses";
    all_pages(what, |token| async move {
        let page = aws
            .apigateway
            .get_route_responses()
            .api_id(api_id)
            .route_id(route_id)
            .set_next_token(token)
            .send()
            .await
            .map_err(failed(what))?;
        let keys = page
            .items()
            .iter()
            .filter_map(|r| r.route_response_key().map(str::to_string))
            .collect();
        Ok((keys, page.next_token))
    })
    .await
}

/// Whether the integration answers PONG: its request template and its
/// `$default` integration response.
fn integration_changes(integration: &IntegrationState, state: &KeepAliveState) -> Vec<Detail> {
    let request_ok = integration.request_templates.get(DEFAULT_KEY).map(String::as_str) == Some(REQUEST_TEMPLATE)
        && integration.template_selection_expression.as_deref() == Some(DEFAULT_TEMPLATE);
    let response_ok = state
        .integration_responses
        .get(DEFAULT_KEY)
        .is_some_and(|(templates, selection)| {
            templates.get(DEFAULT_KEY).map(String::as_str) == Some(PONG)
                && selection.as_deref() == Some(DEFAULT_TEMPLATE)
        });
    if request_ok && response_ok {
        vec![]
    } else {
        vec![Detail::MockReply { reply: PONG.into() }]
    }
}

/// Whether the route targets the integration and is two-way.
fn route_changes(route: &RouteState, integration: Option<&IntegrationState>, state: &KeepAliveState) -> Vec<Detail> {
    let mut changes = vec![];
    let target = integration.map(|i| format!("integrations/{}", i.id));
    if target.is_none() || route.target != target {
        changes.push(Detail::Target);
    }
    if route.authorization_type.as_deref().unwrap_or("NONE") != "NONE" {
        changes.push(Detail::Authorization { to: "NONE".into() });
    }
    if route.route_response_selection_expression.as_deref() != Some(DEFAULT_KEY)
        || !state.route_responses.iter().any(|k| k == DEFAULT_KEY)
    {
        changes.push(Detail::TwoWay);
    }
    changes
}

/// The plan's two steps: the MOCK integration (with its response), then the
/// `ping` route (with its response).
pub fn keep_alive_changes(
    routes: &[RouteState],
    integrations: &[IntegrationState],
    state: &KeepAliveState,
) -> [Change; 2] {
    let integration = mock_integration(routes, integrations);
    let route = routes.iter().find(|r| r.key == ROUTE_KEY);
    let integration_action = match integration {
        None => Action::Create,
        Some(i) => Action::update_or_nothing(integration_changes(i, state)),
    };
    let route_action = match route {
        None => Action::Create,
        Some(r) => Action::update_or_nothing(route_changes(r, integration, state)),
    };
    [
        Change {
            kind: Kind::Integration,
            name: INTEGRATION_NAME.into(),
            id: integration.map(|i| i.id.clone()),
            action: integration_action,
        },
        Change {
            kind: Kind::Route,
            name: ROUTE_KEY.into(),
            id: route.map(|r| r.id.clone()),
            action: route_action,
        },
    ]
}

/// Applies the two steps; returns the integration's id.
pub(super) async fn apply_keep_alive(
    aws: &Aws,
    (integration, route): (&Change, &Change),
    (api_id, writes): (&str, &ApiWrites),
    report: Report<'_>,
) -> Result<String> {
    let client = &aws.apigateway;
    let integration_id = match &integration.action {
        Action::NoChange => live_id(integration)?,
        Action::Create => {
            let id = writes
                .create_or_adopt(
                    "cannot create the keep-alive integration",
                    || async {
                        let created = client
                            .create_integration()
                            .api_id(api_id)
                            .integration_type(IntegrationType::Mock)
                            .request_templates(DEFAULT_KEY, REQUEST_TEMPLATE)
                            .template_selection_expression(DEFAULT_TEMPLATE)
                            .passthrough_behavior(PassthroughBehavior::WhenNoMatch)
                            .customize()
                            .config_override(sent_once())
                            .send()
                            .await?;
                        Ok(created.integration_id.unwrap_or_default())
                    },
                    || async {
                        let routes = read_routes(aws, api_id).await?;
                        let integrations = read_integrations(aws, api_id).await?;
                        Ok(mock_integration(&routes, &integrations).map(|i| i.id.clone()))
                    },
                )
                .await?;
            anyhow::ensure!(!id.is_empty(), "CreateIntegration answered without an id");
            ensure_integration_response(aws, (api_id, writes), &id).await?;
            step(report, Kind::Integration, INTEGRATION_NAME, "created");
            id
        }
        Action::Update { .. } => {
            let id = live_id(integration)?;
            writes
                .send("cannot update the keep-alive integration", || {
                    client
                        .update_integration()
                        .api_id(api_id)
                        .integration_id(&id)
                        .integration_type(IntegrationType::Mock)
                        .request_templates(DEFAULT_KEY, REQUEST_TEMPLATE)
                        .template_selection_expression(DEFAULT_TEMPLATE)
                        .send()
                })
                .await?;
            ensure_integration_response(aws, (api_id, writes), &id).await?;
            step(report, Kind::Integration, INTEGRATION_NAME, "updated");
            id
        }
        other => bail!("the keep-alive integration: the plan asks to {} it", other.verb()),
    };
    let target = format!("integrations/{integration_id}");
    let route_id = match &route.action {
        Action::NoChange => return Ok(integration_id),
        Action::Create => {
            writes
                .create_or_adopt(
                    "cannot create route ping",
                    || async {
                        let created = client
                            .create_route()
                            .api_id(api_id)
                            .route_key(ROUTE_KEY)
                            .target(&target)
                            .authorization_type(AuthorizationType::None)
                            .route_response_selection_expression(DEFAULT_KEY)
                            .customize()
                            .config_override(sent_once())
                            .send()
                            .await?;
                        Ok(created.route_id.unwrap_or_default())
                    },
                    || async {
                        let routes = read_routes(aws, api_id).await?;
                        Ok(routes.into_iter().find(|r| r.key == ROUTE_KEY).map(|r| r.id))
                    },
                )
                .await?
        }
        Action::Update { .. } => live_id(route)?,
        other => bail!("route ping: the plan asks to {} it", other.verb()),
    };
    // A create that was adopted, and an update, set every setting.
    writes
        .send("cannot update route ping", || {
            client
                .update_route()
                .api_id(api_id)
                .route_id(&route_id)
                .target(&target)
                .authorization_type(AuthorizationType::None)
                .route_response_selection_expression(DEFAULT_KEY)
                .send()
        })
        .await?;
    if !route_responses(aws, api_id, &route_id)
        .await?
        .iter()
        .any(|k| k == DEFAULT_KEY)
    {
        // Sent once: a second `$default` is refused (a conflict), so a lost
        // answer is looked for instead (aws-facts.md §10, "lost responses").
        writes
            .create_or_adopt(
                "cannot make route ping two-way",
                || async {
                    client
                        .create_route_response()
                        .api_id(api_id)
                        .route_id(&route_id)
                        .route_response_key(DEFAULT_KEY)
                        .customize()
                        .config_override(sent_once())
                        .send()
                        .await
                        .map(|_| ())
                },
                || async {
                    let keys = route_responses(aws, api_id, &route_id).await?;
                    Ok(keys.iter().any(|k| k == DEFAULT_KEY).then_some(()))
                },
            )
            .await?;
    }
    let done = if route.action == Action::Create {
        "created"
    } else {
        "updated"
    };
    step(report, Kind::Route, ROUTE_KEY, done);
    Ok(integration_id)
}

/// The `$default` integration response answering PONG: set, or made (sent
/// once, a lost answer looked for, as the route response).
async fn ensure_integration_response(
    aws: &Aws,
    (api_id, writes): (&str, &ApiWrites),
    integration_id: &str,
) -> Result<()> {
    let client = &aws.apigateway;
    let find = || async {
        let existing = client
            .get_integration_responses()
            .api_id(api_id)
            .integration_id(integration_id)
            .send()
            .await
            .map_err(failed("cannot read the keep-alive integration's responses"))?;
        Ok::<_, anyhow::Error>(
            existing
                .items()
                .iter()
                .find(|r| r.integration_response_key() == Some(DEFAULT_KEY))
                .and_then(|r| r.integration_response_id().map(str::to_string)),
        )
    };
    match find().await? {
        Some(response_id) => {
            writes
                .send("cannot set the keep-alive reply", || {
                    client
                        .update_integration_response()
                        .api_id(api_id)
                        .integration_id(integration_id)
                        .integration_response_id(&response_id)
                        .response_templates(DEFAULT_KEY, PONG)
                        .template_selection_expression(DEFAULT_TEMPLATE)
                        .send()
                })
                .await?;
        }
        None => {
            writes
                .create_or_adopt(
                    "cannot set the keep-alive reply",
                    || async {
                        let created = client
                            .create_integration_response()
                            .api_id(api_id)
                            .integration_id(integration_id)
                            .integration_response_key(DEFAULT_KEY)
                            .response_templates(DEFAULT_KEY, PONG)
                            .template_selection_expression(DEFAULT_TEMPLATE)
                            .customize()
                            .config_override(sent_once())
                            .send()
                            .await?;
                        Ok(created.integration_response_id.unwrap_or_default())
                    },
                    find,
                )
                .await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn integration(id: &str, kind: &str) -> IntegrationState {
        IntegrationState {
            id: id.into(),
            integration_type: Some(kind.into()),
            uri: None,
            method: None,
            request_templates: BTreeMap::from([(DEFAULT_KEY.to_string(), REQUEST_TEMPLATE.to_string())]),
            template_selection_expression: Some(DEFAULT_TEMPLATE.into()),
        }
    }

    fn ping(target: &str, two_way: bool) -> RouteState {
        RouteState {
            id: "r1".into(),
            key: ROUTE_KEY.into(),
            target: Some(target.into()),
            authorization_type: Some("NONE".into()),
            authorizer_id: None,
            route_response_selection_expression: two_way.then(|| DEFAULT_KEY.to_string()),
        }
    }

    fn answering() -> KeepAliveState {
        KeepAliveState {
            integration_responses: BTreeMap::from([(
                DEFAULT_KEY.to_string(),
                (
                    BTreeMap::from([(DEFAULT_KEY.to_string(), PONG.to_string())]),
                    Some(DEFAULT_TEMPLATE.to_string()),
                ),
            )]),
            route_responses: vec![DEFAULT_KEY.into()],
        }
    }

    #[test]
    fn a_complete_keep_alive_needs_nothing_and_each_missing_part_is_named() {
        let integrations = [integration("lambda", "AWS_PROXY"), integration("m1", MOCK)];
        let routes = [ping("integrations/m1", true)];
        let [i, r] = keep_alive_changes(&routes, &integrations, &answering());
        assert_eq!((i.action, r.action), (Action::NoChange, Action::NoChange));
        assert_eq!(i.id.as_deref(), Some("m1"));

        let [i, r] = keep_alive_changes(&[], &[], &KeepAliveState::default());
        assert_eq!(
            (i.to_string(), r.to_string()),
            ("  + integration keep-alive".into(), "  + route ping".into())
        );

        // One-way, and the reply missing: a route without its response, an
        // integration without its template.
        let [i, r] = keep_alive_changes(
            &[ping("integrations/m1", false)],
            &integrations,
            &KeepAliveState::default(),
        );
        assert_eq!(i.to_string(), "  ~ integration keep-alive (reply {\"type\":\"pong\"})");
        assert_eq!(r.to_string(), "  ~ route ping (two-way: a $default route response)");

        // Pointing elsewhere: at the MOCK integration again.
        let [_, r] = keep_alive_changes(&[ping("integrations/lambda", true)], &integrations, &answering());
        assert_eq!(
            r.action,
            Action::Update {
                changes: vec![Detail::Target]
            }
        );
    }
}
