//! The invoke permission of each function: API Gateway may invoke it from
//! this API's routes and authorizer only.

use anyhow::{Result, bail};
use futures::future::try_join_all;

use super::base::{Action, Detail, Kind, Report, Stack, step};
use super::{Function, Names};
use crate::aws::{Aws, is_code};

/// The statement id of the invoke permission chatctl adds to each function.
pub const PERMISSION_ID: &str = "chatctl-invoke";

/// The source ARN of each function's invoke permission.
pub fn permission_source_arn(names: &Names, function: Function, api_id: &str, authorizer_id: Option<&str>) -> String {
    let api = names.execute_api_arn(api_id);
    match function.route_key() {
        Some(route) => format!("{api}/*/{route}"),
        None => format!("{api}/authorizers/{}", authorizer_id.unwrap_or("*")),
    }
}

/// Lets API Gateway invoke each function, from this API's routes and
/// authorizer only (aws-facts.md §8).
pub(super) async fn grant_permissions(
    aws: &Aws,
    stack: Stack<'_>,
    steps: &[(Function, &Action)],
    api_id: &str,
    authorizer_id: &str,
    report: Report<'_>,
) -> Result<()> {
    let names = stack.names;
    try_join_all(steps.iter().map(|&(function, action)| async move {
        let name = names.function(function);
        let replace = match action {
            Action::NoChange => return Ok::<_, anyhow::Error>(()),
            Action::Create => false,
            Action::Update { .. } => true,
            other => bail!(
                "permission of {name}: the plan asks to {} it, which chatctl cannot do here",
                other.verb()
            ),
        };
        let source_arn = permission_source_arn(names, function, api_id, Some(authorizer_id));
        if replace {
            let removed = aws
                .lambda
                .remove_permission()
                .function_name(&name)
                .statement_id(PERMISSION_ID)
                .send()
                .await;
            if let Err(err) = removed
                && !is_code(&err, &["ResourceNotFoundException"])
            {
                return Err(crate::aws::aws_error(
                    format!("cannot replace the permission of {name}"),
                    err,
                ));
            }
        }
        let added = aws
            .lambda
            .add_permission()
            .function_name(&name)
            .statement_id(PERMISSION_ID)
            .action("lambda:InvokeFunction")
            .principal("apigateway.amazonaws.com")
            .source_arn(&source_arn)
            .send()
            .await;
        if let Err(err) = added {
            // The statement is there when an earlier answer was lost and the
            // SDK sent it again (aws-facts.md §10, "lost responses").
            let resent = if is_code(&err, &["ResourceConflictException"]) {
                let (_, found) = super::function::read_function(aws, names, function).await?;
                found.ours().and_then(|f| f.permissions.get(PERMISSION_ID)) == Some(&source_arn)
            } else {
                false
            };
            if !resent {
                return Err(crate::aws::aws_error(
                    format!("cannot let API Gateway invoke {name}"),
                    err,
                ));
            }
        }
        step(report, Kind::Permission, &name, "granted");
        Ok(())
    }))
    .await?;
    Ok(())
}

/// What a function's invoke permission needs, given its source ARN now
/// (`have`) and the one wanted, when known (None while the API or the
/// authorizer it names is still to be made).
pub fn permission_action(have: Option<&str>, wanted: Option<&str>) -> Action {
    match have {
        None => Action::Create,
        Some(have) if Some(have) == wanted => Action::NoChange,
        Some(_) => Action::Update {
            changes: vec![Detail::SourceArn],
        },
    }
}
