//! The stack's S3 bucket, home of the stack's lock (the lock module), of
//! the functions' zips (one per build) and of the releases' record: read,
//! made (tagged, every public access blocked, encrypted at rest), retagged,
//! and emptied and deleted by `down`.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use aws_sdk_s3::types::{
    AbortIncompleteMultipartUpload, BucketLifecycleConfiguration, BucketLocationConstraint, CreateBucketConfiguration,
    Delete, ExpirationStatus, LifecycleExpiration, LifecycleRule, LifecycleRuleFilter, ObjectIdentifier,
    PublicAccessBlockConfiguration, ServerSideEncryption, ServerSideEncryptionByDefault,
    ServerSideEncryptionConfiguration, ServerSideEncryptionRule, Tag, Tagging,
};
use serde::Serialize;

use super::base::{Found, Polled, poll};
use super::{Names, STACK_TAG};
use crate::aws::{Aws, aws_error, failed, is_code};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BucketState {
    pub tags: BTreeMap<String, String>,
}

impl BucketState {
    /// Made to the end: its tags are written last.
    pub fn finished(&self) -> bool {
        self.tags.contains_key(STACK_TAG)
    }
}

fn tag_map(tagging: &aws_sdk_s3::operation::get_bucket_tagging::GetBucketTaggingOutput) -> BTreeMap<String, String> {
    tagging
        .tag_set()
        .iter()
        .map(|t| (t.key().to_string(), t.value().to_string()))
        .collect()
}

/// The bucket, when the account id is known (its name holds a hash of it).
/// One call: GetBucketTagging answers NoSuchBucket for a missing bucket,
/// NoSuchTagSet for one without tags, 403 AccessDenied for another
/// account's (S3 API reference, GetBucketTagging and error codes).
pub async fn read_bucket(aws: &Aws, names: &Names) -> Result<Found<BucketState>> {
    let name = names.bucket();
    let tags = match aws.s3.get_bucket_tagging().bucket(&name).send().await {
        Ok(tagging) => tag_map(&tagging),
        Err(err) if is_code(&err, &["NoSuchBucket"]) => return Ok(Found::Missing),
        Err(err) if is_code(&err, &["NoSuchTagSet"]) => BTreeMap::new(),
        // A bucket of that name the credentials cannot read: another account's.
        Err(err) if err.raw_response().is_some_and(|r| r.status().as_u16() == 403) => {
            return Ok(Found::Foreign(None));
        }
        Err(err) => return Err(aws_error(format!("cannot read the tags of S3 bucket {name}"), err)),
    };
    // No tags at all: a creation cut short before its tagging (the name holds
    // a hash of this account, region and stack, so it is no one else's).
    let tag = tags
        .get(STACK_TAG)
        .cloned()
        .or_else(|| tags.is_empty().then(|| names.stack.clone()));
    Ok(Found::classify(&names.stack, tag.as_deref(), BucketState { tags }))
}

/// Makes the bucket when it does not exist (an existing one of ours is
/// left as it is); fails clearly when the name is another account's.
pub async fn ensure_bucket(aws: &Aws, names: &Names, tags: &BTreeMap<String, String>) -> Result<()> {
    match read_bucket(aws, names).await? {
        Found::Ours(state) if state.finished() => return Ok(()),
        // Made, not finished: the rest of its setup.
        Found::Ours(_) => return set_up(aws, &names.bucket(), tags).await,
        Found::Foreign(_) => bail!(
            "S3 bucket {} exists and is not this stack's (another account's, or tagged for another stack), \
             or these credentials may not read it (s3:ListBucket, s3:GetBucketTagging); chatctl keeps the \
             stack's lock in it. Delete it if it is yours, or use another stack name",
            names.bucket()
        ),
        Found::Missing => {}
    }
    let name = names.bucket();
    let mut create = aws.s3.create_bucket().bucket(&name);
    // us-east-1 takes no location constraint (S3 API reference, CreateBucket).
    if names.region != "us-east-1" {
        create = create.create_bucket_configuration(
            CreateBucketConfiguration::builder()
                .location_constraint(BucketLocationConstraint::from(names.region.as_str()))
                .build(),
        );
    }
    // Right after a DeleteBucket of the name (a `down` a moment ago), S3
    // answers OperationAborted "A conflicting conditional operation is
    // currently in progress" for a while (S3 API reference, error codes).
    poll(Duration::from_secs(60), || {
        let create = create.clone();
        let name = name.clone();
        async move {
            match create.send().await {
                Ok(_) => Ok(Polled::Ready(())),
                // Ours already: a lost answer, or another run of ours made it.
                Err(err) if is_code(&err, &["BucketAlreadyOwnedByYou"]) => Ok(Polled::Ready(())),
                Err(err) if is_code(&err, &["OperationAborted"]) => Ok(Polled::Waiting(format!(
                    "cannot create S3 bucket {name}: S3 still says a conflicting operation is in progress \
                     (a deletion of the name a moment ago); run again in a minute"
                ))),
                Err(err) if is_code(&err, &["BucketAlreadyExists"]) => bail!(
                    "S3 bucket name {name} is taken by another AWS account; chatctl keeps the stack's lock \
                     in it. Use another stack name"
                ),
                Err(err) => Err(aws_error(format!("cannot create S3 bucket {name}"), err)),
            }
        }
    })
    .await?;
    set_up(aws, &name, tags).await
}

/// A new bucket's settings, tags last (they say it is finished).
async fn set_up(aws: &Aws, name: &str, tags: &BTreeMap<String, String>) -> Result<()> {
    // New buckets block public access and encrypt with SSE-S3 by default
    // (since 2023); said explicitly, so an account default never weakens it.
    aws.s3
        .put_public_access_block()
        .bucket(name)
        .public_access_block_configuration(
            PublicAccessBlockConfiguration::builder()
                .block_public_acls(true)
                .ignore_public_acls(true)
                .block_public_policy(true)
                .restrict_public_buckets(true)
                .build(),
        )
        .send()
        .await
        .map_err(failed(format!("cannot block public access to S3 bucket {name}")))?;
    let by_default = ServerSideEncryptionByDefault::builder()
        .sse_algorithm(ServerSideEncryption::Aes256)
        .build()?;
    aws.s3
        .put_bucket_encryption()
        .bucket(name)
        .server_side_encryption_configuration(
            ServerSideEncryptionConfiguration::builder()
                .rules(
                    ServerSideEncryptionRule::builder()
                        .apply_server_side_encryption_by_default(by_default)
                        .build(),
                )
                .build()?,
        )
        .send()
        .await
        .map_err(failed(format!("cannot set the encryption of S3 bucket {name}")))?;
    tag_bucket(aws, name, tags).await
}

/// Sets the bucket's tags (S3 replaces the whole set).
pub async fn tag_bucket(aws: &Aws, name: &str, tags: &BTreeMap<String, String>) -> Result<()> {
    let tag_set = tags
        .iter()
        .map(|(key, value)| Tag::builder().key(key).value(value).build())
        .collect::<Result<Vec<_>, _>>()?;
    aws.s3
        .put_bucket_tagging()
        .bucket(name)
        .tagging(Tagging::builder().set_tag_set(Some(tag_set)).build()?)
        .send()
        .await
        .map_err(failed(format!("cannot tag S3 bucket {name}")))?;
    Ok(())
}

/// Sets and removes some of the bucket's tags, keeping the others.
pub async fn retag_bucket(aws: &Aws, name: &str, set: &BTreeMap<String, String>, remove: &[String]) -> Result<()> {
    let mut tags = match aws.s3.get_bucket_tagging().bucket(name).send().await {
        Ok(tagging) => tag_map(&tagging),
        Err(err) if is_code(&err, &["NoSuchTagSet"]) => BTreeMap::new(),
        Err(err) => return Err(aws_error(format!("cannot read the tags of S3 bucket {name}"), err)),
    };
    tags.extend(set.clone());
    tags.retain(|key, _| !remove.contains(key));
    tag_bucket(aws, name, &tags).await
}

/// Deletes every object of the bucket but `keep` (every page of them, in
/// batches of 1,000, the most DeleteObjects takes); the keys left, `keep`
/// among them when it is there.
pub async fn empty_bucket(aws: &Aws, name: &str, keep: &str) -> Result<Vec<String>> {
    let mut left = vec![];
    let mut pages = aws.s3.list_objects_v2().bucket(name).into_paginator().send();
    while let Some(page) = pages.next().await {
        let page = match page {
            Err(err) if is_code(&err, &["NoSuchBucket"]) => return Ok(left),
            other => other.map_err(failed(format!("cannot list the objects of S3 bucket {name}")))?,
        };
        let mut keys = vec![];
        for key in page.contents().iter().filter_map(|o| o.key()) {
            if key == keep {
                left.push(key.to_string());
            } else {
                keys.push(ObjectIdentifier::builder().key(key).build()?);
            }
        }
        for batch in keys.chunks(1000) {
            let deleted = aws
                .s3
                .delete_objects()
                .bucket(name)
                .delete(
                    Delete::builder()
                        .set_objects(Some(batch.to_vec()))
                        .quiet(true)
                        .build()?,
                )
                .send()
                .await
                .map_err(failed(format!("cannot empty S3 bucket {name}")))?;
            // Quiet mode lists only the keys it could not delete.
            if let Some(error) = deleted.errors().first() {
                bail!(
                    "cannot delete {} from S3 bucket {name}: {} ({})",
                    error.key().unwrap_or("an object"),
                    error.message().unwrap_or("no message"),
                    error.code().unwrap_or("no code")
                );
            }
        }
    }
    Ok(left)
}

/// Deletes the bucket once nothing but `keep` could be in it: true when it
/// is gone, false when `keep` is there (another run's lock, taken as
/// `down` finished: the bucket stays for it).
pub async fn delete_empty_bucket(aws: &Aws, name: &str, keep: &str) -> Result<bool> {
    for _ in 0..5 {
        match aws.s3.delete_bucket().bucket(name).send().await {
            Ok(_) => return Ok(true),
            Err(err) if is_code(&err, &["NoSuchBucket"]) => return Ok(true),
            // Written to meanwhile.
            Err(err) if is_code(&err, &["BucketNotEmpty"]) => {
                if empty_bucket(aws, name, keep).await?.iter().any(|key| key == keep) {
                    return Ok(false);
                }
            }
            Err(err) => return Err(aws_error(format!("cannot delete S3 bucket {name}"), err)),
        }
    }
    bail!("S3 bucket {name} is written to while `down` empties it; stop what writes to it and run `down` again")
}

/// Where the functions' zip of one build lives: one object per code hash
/// (Lambda's CodeSha256, base64, made URL-safe for a key).
pub fn artifact_key(sha256: &str) -> String {
    let safe: String = sha256
        .trim_end_matches('=')
        .chars()
        .map(|c| match c {
            '+' => '-',
            '/' => '_',
            other => other,
        })
        .collect();
    format!("{ARTIFACTS}{safe}.zip")
}

/// The prefix of the functions' zips.
const ARTIFACTS: &str = "artifacts/";

/// How long a zip stays in the bucket: Lambda keeps its own copy of the
/// code of every version, so a zip is only read by the creates and updates
/// of its own deploy, and one uploaded again costs seconds.
const ARTIFACT_DAYS: i32 = 30;

/// Puts a build's zip in the bucket unless it is there already (one
/// HeadObject per deploy); true when it was uploaded. S3 checks the
/// upload against its SHA-256, the hash Lambda reports as CodeSha256.
pub async fn upload_artifact(aws: &Aws, bucket: &str, code: &super::desired::Code) -> Result<bool> {
    let key = artifact_key(&code.sha256);
    match aws.s3.head_object().bucket(bucket).key(&key).send().await {
        Ok(_) => return Ok(false),
        Err(err) if err.raw_response().is_some_and(|r| r.status().as_u16() == 404) => {}
        Err(err) => return Err(aws_error(format!("cannot read s3://{bucket}/{key}"), err)),
    }
    let zip = std::fs::read(&code.zip).with_context(|| format!("cannot read {}", code.zip.display()))?;
    let upload = async {
        aws.s3
            .put_object()
            .bucket(bucket)
            .key(&key)
            .body(aws_sdk_s3::primitives::ByteStream::from(zip))
            .checksum_sha256(&code.sha256)
            .content_type("application/zip")
            .send()
            .await
            .map_err(failed(format!(
                "cannot upload the functions' code to s3://{bucket}/{key}"
            )))
    };
    tokio::try_join!(upload, expire_old_artifacts(aws, bucket))?;
    Ok(true)
}

/// The bucket's lifecycle rule: zips expire after [`ARTIFACT_DAYS`], and an
/// upload cut short is cleaned up after a day. Set with each new upload,
/// so a bucket made before the rule gets it too.
async fn expire_old_artifacts(aws: &Aws, bucket: &str) -> Result<()> {
    let rule = LifecycleRule::builder()
        .id("chatctl-old-artifacts")
        .filter(LifecycleRuleFilter::builder().prefix(ARTIFACTS).build())
        .status(ExpirationStatus::Enabled)
        .expiration(LifecycleExpiration::builder().days(ARTIFACT_DAYS).build())
        .abort_incomplete_multipart_upload(
            AbortIncompleteMultipartUpload::builder()
                .days_after_initiation(1)
                .build(),
        )
        .build()?;
    aws.s3
        .put_bucket_lifecycle_configuration()
        .bucket(bucket)
        .lifecycle_configuration(BucketLifecycleConfiguration::builder().rules(rule).build()?)
        .send()
        .await
        .map_err(failed(format!("cannot set the lifecycle of S3 bucket {bucket}")))?;
    Ok(())
}
