//! The API's routes: read, diff (target, authorization, authorizer),
//! create, update and delete.

use anyhow::{Result, bail};
use aws_sdk_apigatewayv2::types::AuthorizationType;
use serde::Serialize;

use super::api_writes::{ApiWrites, sent_once};
use super::base::{Action, Change, Detail, Kind, Report, all_pages, live_id, step};
use crate::aws::{Aws, failed, is_code};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RouteState {
    pub id: String,
    pub key: String,
    pub target: Option<String>,
    pub authorization_type: Option<String>,
    pub authorizer_id: Option<String>,
    /// `$default` on a two-way route (the keep-alive's).
    pub route_response_selection_expression: Option<String>,
}

/// Every route of an API, every page.
pub async fn read_routes(aws: &Aws, api_id: &str) -> Result<Vec<RouteState>> {
    all_pages("cannot read the API's routes", |token| async move {
        let page = aws
            .apigateway
            .get_routes()
            .api_id(api_id)
            .set_next_token(token)
            .send()
            .await
            .map_err(failed("cannot read the API's routes"))?;
        let routes = page
            .items()
            .iter()
            .map(|r| RouteState {
                id: r.route_id().unwrap_or_default().to_string(),
                key: r.route_key().unwrap_or_default().to_string(),
                target: r.target().map(str::to_string),
                authorization_type: r.authorization_type().map(|a| a.as_str().to_string()),
                authorizer_id: r.authorizer_id().map(str::to_string),
                route_response_selection_expression: r.route_response_selection_expression().map(str::to_string),
            })
            .collect();
        Ok((routes, page.next_token))
    })
    .await
}

/// What a route should point at, given the ids that exist.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteTarget {
    pub target: Option<String>,
    pub authorizer_id: Option<String>,
}

pub fn route_changes(route: &RouteState, target: &RouteTarget, authorized: bool) -> Vec<Detail> {
    let mut changes = vec![];
    if target.target.is_none() || route.target != target.target {
        changes.push(Detail::Target);
    }
    let wanted_auth = if authorized { "CUSTOM" } else { "NONE" };
    if route.authorization_type.as_deref().unwrap_or("NONE") != wanted_auth {
        changes.push(Detail::Authorization { to: wanted_auth.into() });
    }
    if authorized && (target.authorizer_id.is_none() || route.authorizer_id != target.authorizer_id) {
        changes.push(Detail::Authorizer);
    }
    changes
}

/// A route's wanted settings, with the ids resolved at apply time.
pub(super) struct RouteWrite<'a> {
    pub key: &'a str,
    pub target: String,
    pub authorizer_id: Option<String>,
}

impl RouteWrite<'_> {
    fn authorization(&self) -> AuthorizationType {
        if self.authorizer_id.is_some() {
            AuthorizationType::Custom
        } else {
            AuthorizationType::None
        }
    }

    async fn update(&self, aws: &Aws, (api_id, writes): (&str, &ApiWrites), route_id: &str) -> Result<()> {
        writes
            .send(format!("cannot update route {}", self.key), || {
                aws.apigateway
                    .update_route()
                    .api_id(api_id)
                    .route_id(route_id)
                    .target(&self.target)
                    .authorization_type(self.authorization())
                    .set_authorizer_id(self.authorizer_id.clone())
                    .send()
            })
            .await?;
        Ok(())
    }

    /// Creates the route; one that exists already (made by a create whose
    /// answer was lost) is updated to what is wanted.
    async fn create(&self, aws: &Aws, (api_id, writes): (&str, &ApiWrites)) -> Result<()> {
        let client = &aws.apigateway;
        let (id, current) = writes
            .create_or_adopt(
                format!("cannot create route {}", self.key),
                || async {
                    let created = client
                        .create_route()
                        .api_id(api_id)
                        .route_key(self.key)
                        .target(&self.target)
                        .authorization_type(self.authorization())
                        .set_authorizer_id(self.authorizer_id.clone())
                        .customize()
                        .config_override(sent_once())
                        .send()
                        .await?;
                    Ok((created.route_id.unwrap_or_default(), true))
                },
                || async {
                    let found = read_routes(aws, api_id).await?;
                    Ok(found.into_iter().find(|r| r.key == self.key).map(|r| {
                        let current = r.target.as_deref() == Some(self.target.as_str())
                            && r.authorization_type.as_deref() == Some(self.authorization().as_str())
                            && r.authorizer_id == self.authorizer_id;
                        (r.id, current)
                    }))
                },
            )
            .await?;
        if !current {
            self.update(aws, (api_id, writes), &id).await?;
        }
        Ok(())
    }
}

/// Creates or updates one route as the plan says.
pub(super) async fn apply_route(
    aws: &Aws,
    planned: &Change,
    write: RouteWrite<'_>,
    api: (&str, &ApiWrites),
    report: Report<'_>,
) -> Result<()> {
    match &planned.action {
        Action::NoChange => {}
        Action::Update { .. } => {
            write.update(aws, api, &live_id(planned)?).await?;
            step(report, Kind::Route, write.key, "updated");
        }
        Action::Create => {
            write.create(aws, api).await?;
            step(report, Kind::Route, write.key, "created");
        }
        other => bail!(
            "route {}: the plan asks to {} it, which chatctl cannot do here",
            other.verb(),
            write.key
        ),
    }
    Ok(())
}

/// Deletes a route the stack no longer has.
pub(super) async fn delete_route(
    aws: &Aws,
    change: &Change,
    (api_id, writes): (&str, &ApiWrites),
    report: Report<'_>,
) -> Result<()> {
    let id = live_id(change)?;
    writes
        .send(format!("cannot delete route {}", change.name), || async {
            match aws.apigateway.delete_route().api_id(api_id).route_id(&id).send().await {
                // Gone already: a resent delete whose first answer was lost.
                Err(err) if is_code(&err, &["NotFoundException"]) => Ok(()),
                other => other.map(|_| ()),
            }
        })
        .await?;
    step(report, Kind::Route, &change.name, "deleted");
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::stack::scripted::{Answer, Scripted, answer};

    /// A killed run's CreateRoute that lands after this run read the API:
    /// AWS answers this run's CreateRoute `409 ConflictException: Route
    /// with key K already exists for this API` (aws-facts.md §11; anomalyco/sst
    /// #5031). The route is adopted and pointed where it should, neither
    /// waited out as a concurrent modification nor made twice.
    #[tokio::test]
    async fn a_route_a_killed_run_made_meanwhile_is_adopted() {
        let (aws, script) = Scripted::clients(vec![
            Answer {
                call: "POST /v2/apis/a1/routes",
                status: 409,
                body: json!({
                    "__type": "ConflictException",
                    "message": "Route with key join already exists for this API",
                })
                .to_string(),
            },
            answer(
                "GET /v2/apis/a1/routes",
                json!({"items": [{
                    "routeId": "r9",
                    "routeKey": "join",
                    "target": "integrations/old",
                    "authorizationType": "NONE",
                }]})
                .to_string(),
            ),
            answer("PATCH /v2/apis/a1/routes/r9", json!({"routeId": "r9"}).to_string()),
        ]);
        let write = RouteWrite {
            key: "join",
            target: "integrations/i4".into(),
            authorizer_id: None,
        };
        let started = std::time::Instant::now();
        write.create(&aws, ("a1", &ApiWrites::default())).await.unwrap();
        assert!(script.finished(), "{:?}", script.calls());
        assert_eq!(script.json_body(2)["target"], "integrations/i4");
        assert!(started.elapsed() < std::time::Duration::from_secs(1), "not waited out");
    }
}
