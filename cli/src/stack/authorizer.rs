//! The API's Lambda authorizer: read, create and update.

use anyhow::{Result, bail};
use aws_sdk_apigatewayv2::types::AuthorizerType;
use serde::Serialize;

use super::Function;
use super::api_writes::{ApiWrites, sent_once};
use super::base::{Action, Change, Detail, Kind, Report, Stack, all_pages, live_id, step};
use crate::aws::{Aws, failed};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuthorizerState {
    pub id: String,
    pub name: String,
    pub authorizer_type: Option<String>,
    pub uri: Option<String>,
    /// `route.request.header.X`, `route.request.querystring.Y`, …: each must
    /// be present or the client gets 401 without the authorizer running.
    pub identity_sources: Vec<String>,
}

/// Every authorizer of an API, every page.
pub async fn read_authorizers(aws: &Aws, api_id: &str) -> Result<Vec<AuthorizerState>> {
    all_pages("cannot read the API's authorizers", |token| async move {
        let page = aws
            .apigateway
            .get_authorizers()
            .api_id(api_id)
            .set_next_token(token)
            .send()
            .await
            .map_err(failed("cannot read the API's authorizers"))?;
        let authorizers = page
            .items()
            .iter()
            .map(|a| AuthorizerState {
                identity_sources: a.identity_source().to_vec(),
                id: a.authorizer_id().unwrap_or_default().to_string(),
                name: a.name().unwrap_or_default().to_string(),
                authorizer_type: a.authorizer_type().map(|t| t.as_str().to_string()),
                uri: a.authorizer_uri().map(str::to_string),
            })
            .collect();
        Ok((authorizers, page.next_token))
    })
    .await
}

pub(super) async fn apply_authorizer(
    aws: &Aws,
    (stack, name): (Stack<'_>, &str),
    planned: &Change,
    api_id: &str,
    writes: &ApiWrites,
    report: Report<'_>,
) -> Result<String> {
    let client = &aws.apigateway;
    let uri = stack.names.invocation_uri(Function::Authorizer);
    match &planned.action {
        Action::NoChange => live_id(planned),
        Action::Update { .. } => {
            let id = live_id(planned)?;
            writes
                .send("cannot update the authorizer", || {
                    client
                        .update_authorizer()
                        .api_id(api_id)
                        .authorizer_id(&id)
                        .authorizer_type(AuthorizerType::Request)
                        .authorizer_uri(&uri)
                        .send()
                })
                .await?;
            step(report, Kind::Authorizer, name, "updated");
            Ok(id)
        }
        Action::Create => {
            let id = writes
                .create_or_adopt(
                    "cannot create the authorizer",
                    || async {
                        let created = client
                            .create_authorizer()
                            .api_id(api_id)
                            .name(name)
                            .authorizer_type(AuthorizerType::Request)
                            .authorizer_uri(&uri)
                            .customize()
                            .config_override(sent_once())
                            .send()
                            .await?;
                        Ok(created.authorizer_id.unwrap_or_default())
                    },
                    || async {
                        let found = read_authorizers(aws, api_id).await?;
                        Ok(found.into_iter().find(|a| a.name == name).map(|a| a.id))
                    },
                )
                .await?;
            anyhow::ensure!(!id.is_empty(), "CreateAuthorizer answered without an id");
            step(report, Kind::Authorizer, name, "created");
            Ok(id)
        }
        other => bail!(
            "authorizer {name}: the plan asks to {} it, which chatctl cannot do here",
            other.verb()
        ),
    }
}

/// What the authorizer needs: a REQUEST authorizer invoking `uri`.
pub fn authorizer_action(authorizer: Option<&AuthorizerState>, uri: &str) -> Action {
    let Some(authorizer) = authorizer else {
        return Action::Create;
    };
    let mut changes = vec![];
    if authorizer.authorizer_type.as_deref() != Some("REQUEST") {
        changes.push(Detail::Type { to: "REQUEST".into() });
    }
    if authorizer.uri.as_deref() != Some(uri) {
        changes.push(Detail::AuthorizerFunction);
    }
    Action::update_or_nothing(changes)
}
