//! The invoke permission of each function: API Gateway may invoke it from
//! this API's routes and authorizer only.

use anyhow::{Result, bail};
use futures::future::try_join_all;

use super::base::{Action, Detail, Kind, Report, Stack, step};
use super::function::ALIAS;
use super::{Function, Names};
use crate::aws::{Aws, is_code};

/// The statement id of the invoke permission chatctl adds to each
/// function's alias `live` (the alias has a resource policy of its own).
pub const PERMISSION_ID: &str = "chatctl-invoke-live";

/// The statement stacks from before the alias added to the function as a
/// whole: removed once the alias's is there.
pub const UNQUALIFIED_PERMISSION_ID: &str = "chatctl-invoke";

/// The source ARN of each function's invoke permission.
pub fn permission_source_arn(names: &Names, function: Function, api_id: &str, authorizer_id: Option<&str>) -> String {
    let api = names.execute_api_arn(api_id);
    match function.route_key() {
        Some(route) => format!("{api}/*/{route}"),
        None => format!("{api}/authorizers/{}", authorizer_id.unwrap_or("*")),
    }
}

/// Lets API Gateway invoke each function's alias `live`, from this API's
/// routes and authorizer only (aws-facts.md §8; a qualified ARN needs the
/// permission on its qualifier, §11 "Lambda aliases and WebSocket").
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
        let (replace, unqualified) = match action {
            Action::NoChange => return Ok::<_, anyhow::Error>(()),
            Action::Create => (false, false),
            Action::Update { changes } => (
                changes.contains(&Detail::SourceArn),
                changes.contains(&Detail::UnqualifiedPermission),
            ),
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
                .qualifier(ALIAS)
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
            .qualifier(ALIAS)
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
                let live = found.ours().and_then(|f| f.live.as_deref());
                live.and_then(|f| f.permissions.get(PERMISSION_ID)) == Some(&source_arn)
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
        if unqualified {
            let removed = aws
                .lambda
                .remove_permission()
                .function_name(&name)
                .statement_id(UNQUALIFIED_PERMISSION_ID)
                .send()
                .await;
            if let Err(err) = removed
                && !is_code(&err, &["ResourceNotFoundException"])
            {
                return Err(crate::aws::aws_error(
                    format!("cannot remove the function-wide permission of {name}"),
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

/// What a function's invoke permission needs, given its alias's source
/// ARN now (`have`), the one wanted, when known (None while the API or the
/// authorizer it names is still to be made), and whether a function-wide
/// statement of an older stack is there (`unqualified`).
pub fn permission_action(have: Option<&str>, wanted: Option<&str>, unqualified: bool) -> Action {
    let mut changes = match have {
        None if !unqualified => return Action::Create,
        Some(have) if Some(have) == wanted => vec![],
        _ => vec![Detail::SourceArn],
    };
    if unqualified {
        changes.push(Detail::UnqualifiedPermission);
    }
    Action::update_or_nothing(changes)
}
