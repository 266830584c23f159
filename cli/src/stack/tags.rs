//! Tags changed in place, each service through its own TagResource and
//! UntagResource, so that the tags in chatctl.toml reach a live stack.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::aws::{Aws, Budget, failed, is_code, retry, retry_error};

/// A taggable resource of the stack, by what its service names it by.
#[derive(Debug, Clone, Copy)]
pub enum Tagged<'a> {
    /// A DynamoDB table's ARN.
    Table(&'a str),
    /// An IAM role's name.
    Role(&'a str),
    /// A log group's ARN, without the trailing `:*`.
    LogGroup(&'a str),
    /// A Lambda function's ARN.
    Function(&'a str),
    /// An API Gateway API's ARN (`arn:…:apigateway:REGION::/apis/ID`).
    Api(&'a str),
    /// An API Gateway stage's ARN (`…/apis/ID/stages/NAME`).
    Stage(&'a str),
    /// An API Gateway custom domain name's ARN (`…::/domainnames/NAME`).
    DomainName(&'a str),
    /// A Secrets Manager secret's ARN.
    Secret(&'a str),
    /// An SNS topic's ARN.
    Topic(&'a str),
    /// A CloudWatch alarm's ARN.
    Alarm(&'a str),
}

/// How long chatctl waits for DynamoDB to show tags it has just changed, and
/// how often it looks meanwhile.
const TABLE_TAGS_VISIBLE: Duration = Duration::from_secs(30);
const TABLE_TAGS_POLL: Duration = Duration::from_millis(500);

/// A table takes one tag write at a time: another within ~2 s of the last
/// gets LimitExceededException "Table tags are being updated"
/// (aws-facts.md §11, "table tag writes"; DDB-TABLE-103). chatctl waits its
/// turn for that long at most.
pub(super) const TABLE_TAG_WRITES: Budget = Budget::new(Duration::from_secs(30));
const TABLE_TAG_TODO: &str = "another tag change to this table is in progress; run the command again";

/// Whether DynamoDB refused a tag write because the last one is still applied.
fn table_tags_busy<E: aws_sdk_dynamodb::error::ProvideErrorMetadata, R>(
    err: &aws_sdk_dynamodb::error::SdkError<E, R>,
) -> bool {
    is_code(err, &["LimitExceededException"])
}

/// Sets `set` and removes `remove` on one resource.
pub async fn retag(aws: &Aws, resource: Tagged<'_>, set: &BTreeMap<String, String>, remove: &[String]) -> Result<()> {
    let what = format!("cannot change the tags of {resource}");
    if !remove.is_empty() {
        let keys = Some(remove.to_vec());
        match resource {
            Tagged::Table(arn) => {
                retry(TABLE_TAG_WRITES, table_tags_busy, || {
                    aws.dynamodb
                        .untag_resource()
                        .resource_arn(arn)
                        .set_tag_keys(keys.clone())
                        .send()
                })
                .await
                .map_err(|failure| retry_error(&what, TABLE_TAG_WRITES, TABLE_TAG_TODO, failure))?;
            }
            Tagged::Role(name) => {
                aws.iam
                    .untag_role()
                    .role_name(name)
                    .set_tag_keys(keys)
                    .send()
                    .await
                    .map_err(failed(&what))?;
            }
            Tagged::LogGroup(arn) => {
                aws.logs
                    .untag_resource()
                    .resource_arn(arn)
                    .set_tag_keys(keys)
                    .send()
                    .await
                    .map_err(failed(&what))?;
            }
            Tagged::Function(arn) => {
                aws.lambda
                    .untag_resource()
                    .resource(arn)
                    .set_tag_keys(keys)
                    .send()
                    .await
                    .map_err(failed(&what))?;
            }
            Tagged::Api(arn) | Tagged::Stage(arn) | Tagged::DomainName(arn) => {
                aws.apigateway
                    .untag_resource()
                    .resource_arn(arn)
                    .set_tag_keys(keys)
                    .send()
                    .await
                    .map_err(failed(&what))?;
            }
            Tagged::Topic(arn) => {
                aws.sns
                    .untag_resource()
                    .resource_arn(arn)
                    .set_tag_keys(keys)
                    .send()
                    .await
                    .map_err(failed(&what))?;
            }
            Tagged::Alarm(arn) => {
                aws.cloudwatch
                    .untag_resource()
                    .resource_arn(arn)
                    .set_tag_keys(keys)
                    .send()
                    .await
                    .map_err(failed(&what))?;
            }
            Tagged::Secret(arn) => {
                aws.secrets
                    .untag_resource()
                    .secret_id(arn)
                    .set_tag_keys(keys)
                    .send()
                    .await
                    .map_err(failed(&what))?;
            }
        }
    }
    if !set.is_empty() {
        let map = Some(set.clone().into_iter().collect());
        match resource {
            Tagged::Table(arn) => {
                let mut tags = vec![];
                for (key, value) in set {
                    tags.push(aws_sdk_dynamodb::types::Tag::builder().key(key).value(value).build()?);
                }
                retry(TABLE_TAG_WRITES, table_tags_busy, || {
                    aws.dynamodb
                        .tag_resource()
                        .resource_arn(arn)
                        .set_tags(Some(tags.clone()))
                        .send()
                })
                .await
                .map_err(|failure| retry_error(&what, TABLE_TAG_WRITES, TABLE_TAG_TODO, failure))?;
            }
            Tagged::Role(name) => {
                let mut request = aws.iam.tag_role().role_name(name);
                for (key, value) in set {
                    request = request.tags(aws_sdk_iam::types::Tag::builder().key(key).value(value).build()?);
                }
                request.send().await.map_err(failed(&what))?;
            }
            Tagged::LogGroup(arn) => {
                aws.logs
                    .tag_resource()
                    .resource_arn(arn)
                    .set_tags(map)
                    .send()
                    .await
                    .map_err(failed(&what))?;
            }
            Tagged::Function(arn) => {
                aws.lambda
                    .tag_resource()
                    .resource(arn)
                    .set_tags(map)
                    .send()
                    .await
                    .map_err(failed(&what))?;
            }
            Tagged::Api(arn) | Tagged::Stage(arn) | Tagged::DomainName(arn) => {
                aws.apigateway
                    .tag_resource()
                    .resource_arn(arn)
                    .set_tags(map)
                    .send()
                    .await
                    .map_err(failed(&what))?;
            }
            Tagged::Topic(arn) => {
                let mut request = aws.sns.tag_resource().resource_arn(arn.to_string());
                for (key, value) in set {
                    request = request.tags(aws_sdk_sns::types::Tag::builder().key(key).value(value).build()?);
                }
                request.send().await.map_err(failed(&what))?;
            }
            Tagged::Alarm(arn) => {
                let mut request = aws.cloudwatch.tag_resource().resource_arn(arn.to_string());
                for (key, value) in set {
                    request = request.tags(aws_sdk_cloudwatch::types::Tag::builder().key(key).value(value).build());
                }
                request.send().await.map_err(failed(&what))?;
            }
            Tagged::Secret(arn) => {
                let mut request = aws.secrets.tag_resource().secret_id(arn);
                for (key, value) in set {
                    request = request.tags(
                        aws_sdk_secretsmanager::types::Tag::builder()
                            .key(key)
                            .value(value)
                            .build(),
                    );
                }
                request.send().await.map_err(failed(&what))?;
            }
        }
    }
    if let Tagged::Table(arn) = resource {
        wait_for_table_tags(aws, arn, set, remove).await?;
    }
    Ok(())
}

/// DynamoDB's TagResource and UntagResource are eventually consistent: for
/// a while ListTagsOfResource answers the tags from before (aws-facts.md
/// §10, "DynamoDB tags"; terraform-provider-aws PR #39326 waits the same
/// way). Waiting here keeps the `up` that follows from seeing drift that is
/// already fixed. Past the wait the tags are set all the same, so `up`
/// goes on.
async fn wait_for_table_tags(aws: &Aws, arn: &str, set: &BTreeMap<String, String>, remove: &[String]) -> Result<()> {
    let started = Instant::now();
    while started.elapsed() < TABLE_TAGS_VISIBLE {
        let tags = list_table_tags(aws, arn, arn).await?.unwrap_or_default();
        let visible = set.iter().all(|(k, v)| tags.get(k) == Some(v)) && remove.iter().all(|k| !tags.contains_key(k));
        if visible {
            return Ok(());
        }
        tokio::time::sleep(TABLE_TAGS_POLL).await;
    }
    Ok(())
}

impl std::fmt::Display for Tagged<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Tagged::Table(arn) => write!(f, "DynamoDB table {arn}"),
            Tagged::Role(name) => write!(f, "IAM role {name}"),
            Tagged::LogGroup(arn) => write!(f, "log group {arn}"),
            Tagged::Function(arn) => write!(f, "Lambda function {arn}"),
            Tagged::Api(arn) => write!(f, "API {arn}"),
            Tagged::Stage(arn) => write!(f, "stage {arn}"),
            Tagged::DomainName(arn) => write!(f, "domain name {arn}"),
            Tagged::Secret(arn) => write!(f, "secret {arn}"),
            Tagged::Topic(arn) => write!(f, "SNS topic {arn}"),
            Tagged::Alarm(arn) => write!(f, "alarm {arn}"),
        }
    }
}

/// Every tag of a table, every page; None while the table is being created
/// (ListTagsOfResource then answers ResourceNotFoundException).
pub async fn list_table_tags(aws: &Aws, name: &str, arn: &str) -> Result<Option<BTreeMap<String, String>>> {
    let what = format!("cannot read the tags of DynamoDB table {name}");
    let pages = super::base::all_pages(&what, |token| {
        let what = &what;
        async move {
            match aws
                .dynamodb
                .list_tags_of_resource()
                .resource_arn(arn)
                .set_next_token(token)
                .send()
                .await
            {
                Err(err) if crate::aws::is_code(&err, &["ResourceNotFoundException"]) => Ok((vec![None], None)),
                other => {
                    let page = other.map_err(failed(what))?;
                    let tags = page
                        .tags()
                        .iter()
                        .map(|t| Some((t.key().to_string(), t.value().to_string())));
                    Ok((tags.collect(), page.next_token))
                }
            }
        }
    })
    .await?;
    Ok(pages.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use crate::stack::base::{LOCAL_URL_TAG, is_unmanaged_tag, tag_changes};

    #[test]
    fn the_dev_gateways_url_and_aws_tags_are_never_drift() {
        let tag = |k: &str, v: &str| (k.to_string(), v.to_string());
        let want = BTreeMap::from([tag("chatctl:stack", "chat")]);
        let have = BTreeMap::from([
            tag("chatctl:stack", "chat"),
            tag(LOCAL_URL_TAG, "ws://127.0.0.1:8787/dev"),
            tag("aws:cloudformation:stack-name", "other"),
        ]);
        assert!(tag_changes(&have, &want).is_none());
        assert!(is_unmanaged_tag(LOCAL_URL_TAG) && is_unmanaged_tag("aws:x"));
        assert!(!is_unmanaged_tag("team") && !is_unmanaged_tag("chatctl:stack"));
    }
}
