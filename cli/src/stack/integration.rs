//! The API's Lambda proxy integrations, one per routed function: read,
//! create and update.

use anyhow::{Result, bail};
use aws_sdk_apigatewayv2::types::IntegrationType;
use serde::Serialize;

use super::Function;
use super::api_writes::{ApiWrites, sent_once};
use super::base::{Action, Change, Detail, Kind, Report, Stack, all_pages, live_id, step};
use crate::aws::{Aws, failed};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IntegrationState {
    pub id: String,
    pub integration_type: Option<String>,
    pub uri: Option<String>,
    pub method: Option<String>,
    /// A MOCK integration's (the keep-alive's): key → template.
    pub request_templates: std::collections::BTreeMap<String, String>,
    pub template_selection_expression: Option<String>,
}

/// Every integration of an API, every page.
pub async fn read_integrations(aws: &Aws, api_id: &str) -> Result<Vec<IntegrationState>> {
    all_pages("cannot read the API's integrations", |token| async move {
        let page = aws
            .apigateway
            .get_integrations()
            .api_id(api_id)
            .set_next_token(token)
            .send()
            .await
            .map_err(failed("cannot read the API's integrations"))?;
        let integrations = page
            .items()
            .iter()
            .map(|i| IntegrationState {
                id: i.integration_id().unwrap_or_default().to_string(),
                integration_type: i.integration_type().map(|t| t.as_str().to_string()),
                uri: i.integration_uri().map(str::to_string),
                method: i.integration_method().map(str::to_string),
                request_templates: i
                    .request_templates()
                    .map(|t| t.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                    .unwrap_or_default(),
                template_selection_expression: i.template_selection_expression().map(str::to_string),
            })
            .collect();
        Ok((integrations, page.next_token))
    })
    .await
}

pub(super) async fn apply_integration(
    aws: &Aws,
    stack: Stack<'_>,
    planned: &Change,
    function: Function,
    (api_id, writes): (&str, &ApiWrites),
    report: Report<'_>,
) -> Result<String> {
    let client = &aws.apigateway;
    let uri = stack.names.invocation_uri(function);
    let uri = uri.as_str();
    let name = stack.names.function(function);
    match &planned.action {
        Action::NoChange => live_id(planned),
        Action::Update { .. } => {
            let id = live_id(planned)?;
            writes
                .send(format!("cannot update the integration of {name}"), || {
                    client
                        .update_integration()
                        .api_id(api_id)
                        .integration_id(&id)
                        .integration_type(IntegrationType::AwsProxy)
                        .integration_method("POST")
                        .integration_uri(uri)
                        .send()
                })
                .await?;
            step(report, Kind::Integration, &name, "updated");
            Ok(id)
        }
        Action::Create => {
            let id = writes
                .create_or_adopt(
                    format!("cannot create the integration of {name}"),
                    || async {
                        let created = client
                            .create_integration()
                            .api_id(api_id)
                            .integration_type(IntegrationType::AwsProxy)
                            .integration_method("POST")
                            .integration_uri(uri)
                            .customize()
                            .config_override(sent_once())
                            .send()
                            .await?;
                        Ok(created.integration_id.unwrap_or_default())
                    },
                    || async {
                        let found = read_integrations(aws, api_id).await?;
                        Ok(found.into_iter().find(|i| i.uri.as_deref() == Some(uri)).map(|i| i.id))
                    },
                )
                .await?;
            anyhow::ensure!(!id.is_empty(), "CreateIntegration answered without an id");
            step(report, Kind::Integration, &name, "created");
            Ok(id)
        }
        other => bail!(
            "integration {name}: the plan asks to {} it, which chatctl cannot do here",
            other.verb()
        ),
    }
}

/// `arn:aws:apigateway:…/functions/arn:aws:lambda:…:function:NAME/invocations` → NAME
pub fn function_name(uri: &str) -> Option<String> {
    let after = uri.split(":function:").nth(1)?;
    let name = after.split('/').next()?;
    // A qualified ARN (`NAME:alias`) names the function before the colon.
    Some(name.split(':').next().unwrap_or(name).to_string())
}

/// The integration of a function: the one invoking `uri`, else one invoking
/// the function otherwise (stacks from before the alias invoked the
/// function itself): it is updated, not left behind.
pub fn find<'a>(integrations: &'a [IntegrationState], uri: &str) -> Option<&'a IntegrationState> {
    let function = function_name(uri);
    integrations.iter().find(|i| i.uri.as_deref() == Some(uri)).or_else(|| {
        integrations
            .iter()
            .find(|i| function.is_some() && i.uri.as_deref().and_then(function_name) == function)
    })
}

/// What an integration needs: a Lambda proxy integration, POST, invoking `uri`.
pub fn integration_action(integration: Option<&IntegrationState>, uri: &str) -> Action {
    let Some(integration) = integration else {
        return Action::Create;
    };
    let mut changes = vec![];
    if integration.uri.as_deref() != Some(uri) {
        changes.push(Detail::InvokeAlias);
    }
    if integration.integration_type.as_deref() != Some("AWS_PROXY") {
        changes.push(Detail::Type { to: "AWS_PROXY".into() });
    }
    if integration.method.as_deref() != Some("POST") {
        changes.push(Detail::Method);
    }
    Action::update_or_nothing(changes)
}
