//! DynamoDB tables: read, diff, create, update in place (billing, indexes,
//! TTL, tags), wait and delete.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, CreateGlobalSecondaryIndexAction,
    DeleteGlobalSecondaryIndexAction, GlobalSecondaryIndex, GlobalSecondaryIndexUpdate, IndexStatus, KeySchemaElement,
    KeyType, Projection, ProjectionType, ScalarAttributeType, TableDescription, TableStatus, TimeToLiveSpecification,
    TimeToLiveStatus,
};
use serde::Serialize;

use super::base::{Action, Detail, Found, Kind, Polled, Report, Stack, poll, step, tag_changes, taken_if_ours};
use super::desired::TableSpec;
use super::tags::{Tagged, list_table_tags, retag};
use super::{Names, STACK_TAG};
use crate::aws::{Aws, failed, is_code, retry, retry_error};

/// The projection of every index chatctl makes.
pub const KEYS_ONLY: &str = "KEYS_ONLY";

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TableState {
    pub status: String,
    pub partition_key: Option<String>,
    pub sort_key: Option<String>,
    /// (index name, partition key, projection type)
    pub indexes: Vec<(String, String, String)>,
    /// The indexes being built or deleted (not backfilling): the table
    /// takes no other change until they are ACTIVE or gone.
    pub unready_indexes: Vec<String>,
    /// The indexes added lately that DynamoDB still fills from the table's
    /// items, for minutes on a table with data while the table reads ACTIVE
    /// (aws-facts.md §11): queries on them fail until then. Reported, not
    /// waited for, and not part of a saved plan's fingerprint (it ends by itself).
    #[serde(skip)]
    pub backfilling_indexes: Vec<String>,
    pub billing_mode: Option<String>,
    /// The TTL attribute when TTL is enabled or being enabled.
    pub ttl_attribute: Option<String>,
    /// Not part of a saved plan's fingerprint: DynamoDB refreshes it about every 6 hours.
    #[serde(skip)]
    pub item_count: i64,
    /// Every tag, the stack's included.
    pub tags: BTreeMap<String, String>,
}

pub async fn read_table(aws: &Aws, names: &Names, name: &str) -> Result<(String, Found<TableState>)> {
    let (described, ttl) = tokio::join!(
        aws.dynamodb.describe_table().table_name(name).send(),
        aws.dynamodb.describe_time_to_live().table_name(name).send(),
    );
    let described = match described {
        Err(err) if is_code(&err, &["ResourceNotFoundException"]) => return Ok((name.to_string(), Found::Missing)),
        other => other.map_err(failed(format!("cannot read DynamoDB table {name}")))?,
    };
    let Some(mut table) = described.table else {
        return Ok((name.to_string(), Found::Missing));
    };
    if table.table_status() == Some(&TableStatus::Deleting) {
        // An interrupted `down`: the table is on its way out.
        wait_until_table_gone(aws, name).await?;
        return Ok((name.to_string(), Found::Missing));
    }
    let tags = match read_table_tags(aws, name, &table).await? {
        TableTag::Read(tags) => tags,
        TableTag::Creating => {
            // ListTagsOfResource answers ResourceNotFoundException while the
            // table is CREATING (aws-facts.md §10; cortex #1369): its owner
            // is known once it is ACTIVE.
            table = wait_for_table(aws, name).await?;
            match read_table_tags(aws, name, &table).await? {
                TableTag::Read(tags) => tags,
                TableTag::Creating => anyhow::bail!("DynamoDB table {name} is ACTIVE but its tags cannot be read"),
            }
        }
    };
    let ttl = match ttl {
        // DescribeTimeToLive answers ValidationException while the table is
        // CREATING (aws-facts.md §11; DDB-TABLE-115): read once it is usable.
        Err(err) if is_code(&err, &["ValidationException"]) => {
            table = wait_for_table(aws, name).await?;
            aws.dynamodb.describe_time_to_live().table_name(name).send().await
        }
        other => other,
    };
    let key = |key_type: aws_sdk_dynamodb::types::KeyType| {
        table
            .key_schema()
            .iter()
            .find(|k| *k.key_type() == key_type)
            .map(|k| k.attribute_name().to_string())
    };
    let ttl = ttl.map_err(failed(format!("cannot read the TTL of DynamoDB table {name}")))?;
    let ttl_attribute = ttl.time_to_live_description.and_then(|d| {
        let on = matches!(
            d.time_to_live_status.as_ref().map(|s| s.as_str()),
            Some("ENABLED" | "ENABLING")
        );
        if on { d.attribute_name } else { None }
    });
    let state = TableState {
        status: table.table_status().map(|s| s.as_str().to_string()).unwrap_or_default(),
        partition_key: key(aws_sdk_dynamodb::types::KeyType::Hash),
        sort_key: key(aws_sdk_dynamodb::types::KeyType::Range),
        indexes: table
            .global_secondary_indexes()
            .iter()
            .map(|index| {
                let key = index
                    .key_schema()
                    .iter()
                    .find(|k| *k.key_type() == aws_sdk_dynamodb::types::KeyType::Hash)
                    .map(|k| k.attribute_name().to_string())
                    .unwrap_or_default();
                let projection = index
                    .projection()
                    .and_then(|p| p.projection_type())
                    .map(|p| p.as_str().to_string())
                    .unwrap_or_default();
                (index.index_name().unwrap_or_default().to_string(), key, projection)
            })
            .collect(),
        unready_indexes: indexes_in(&table, IndexReadiness::Unready),
        backfilling_indexes: indexes_in(&table, IndexReadiness::Backfilling),
        billing_mode: table
            .billing_mode_summary()
            .and_then(|b| b.billing_mode())
            .map(|b| b.as_str().to_string()),
        ttl_attribute,
        item_count: table.item_count().unwrap_or(0),
        tags,
    };
    let tag = state.tags.get(STACK_TAG).cloned();
    Ok((name.to_string(), Found::classify(&names.stack, tag.as_deref(), state)))
}

/// Where an index of a table stands.
#[derive(Debug, Clone, Copy, PartialEq)]
enum IndexReadiness {
    Active,
    /// Built, and being filled from the table's items (CREATING with
    /// Backfilling): the table takes other changes meanwhile.
    Backfilling,
    /// Being built, changed or deleted.
    Unready,
}

fn readiness(index: &aws_sdk_dynamodb::types::GlobalSecondaryIndexDescription) -> IndexReadiness {
    match index.index_status() {
        None | Some(IndexStatus::Active) => IndexReadiness::Active,
        Some(IndexStatus::Creating) if index.backfilling() == Some(true) => IndexReadiness::Backfilling,
        Some(_) => IndexReadiness::Unready,
    }
}

/// The names of a table's indexes that stand at `wanted`.
fn indexes_in(table: &TableDescription, wanted: IndexReadiness) -> Vec<String> {
    table
        .global_secondary_indexes()
        .iter()
        .filter(|index| readiness(index) == wanted)
        .filter_map(|index| index.index_name().map(str::to_string))
        .collect()
}

pub(super) enum TableTag {
    /// Every tag of the table.
    Read(BTreeMap<String, String>),
    /// The tags cannot be read yet: the table is being created.
    Creating,
}

/// How long after its creation a table's tags may still be unreadable:
/// DynamoDB's TagResource is eventually consistent (aws-facts.md §10;
/// terraform-provider-aws PR #39326 waits for tags after tagging).
pub(super) const TAG_LAG_WINDOW: Duration = Duration::from_secs(300);

/// How long chatctl waits for the tags of a table made that recently, and
/// how often it reads them meanwhile.
pub(super) const TAG_LAG_WAIT: Duration = Duration::from_secs(10);

pub(super) const TAG_POLL_INTERVAL: Duration = Duration::from_millis(500);

/// The tags of a table. A table without any tag that was created in the
/// last minutes may be ours with tags not yet readable, so its tags are read
/// again for a while before it is taken for someone else's.
pub(super) async fn read_table_tags(aws: &Aws, name: &str, table: &TableDescription) -> Result<TableTag> {
    let arn = table.table_arn().unwrap_or_default();
    let recent = table
        .creation_date_time()
        .and_then(|created| std::time::SystemTime::try_from(*created).ok())
        .and_then(|created| created.elapsed().ok())
        .is_some_and(|age| age < TAG_LAG_WINDOW);
    let started = Instant::now();
    loop {
        let Some(tags) = list_table_tags(aws, name, arn).await? else {
            return Ok(TableTag::Creating);
        };
        if !(recent && tags.is_empty() && started.elapsed() < TAG_LAG_WAIT) {
            return Ok(TableTag::Read(tags));
        }
        tokio::time::sleep(TAG_POLL_INTERVAL).await;
    }
}

pub fn table_action(spec: &TableSpec, state: Option<&TableState>, tags: &BTreeMap<String, String>) -> Action {
    let Some(state) = state else {
        return Action::Create;
    };
    if state.partition_key.as_deref() != Some(spec.partition_key.as_str()) || state.sort_key != spec.sort_key {
        return Action::Replace {
            reason: format!(
                "key schema is {}/{}, should be {}/{}",
                super::base::or_dash(&state.partition_key),
                super::base::or_dash(&state.sort_key),
                spec.partition_key,
                spec.sort_key.as_deref().unwrap_or("-")
            ),
        };
    }
    let mut changes = vec![];
    if state.billing_mode.as_deref() != Some("PAY_PER_REQUEST") {
        changes.push(Detail::Billing {
            from: state.billing_mode.clone(),
        });
    }
    // Indexes change in place, one UpdateTable each (DynamoDB developer
    // guide, "Managing global secondary indexes"); an index whose key or
    // projection differs is deleted, then made again.
    let wanted = |name: &str, key: &str, projection: &str| {
        projection == KEYS_ONLY && spec.indexes.iter().any(|(n, k)| n == name && k == key)
    };
    for (name, key, projection) in &state.indexes {
        if !wanted(name, key, projection) {
            changes.push(Detail::DeleteIndex { name: name.clone() });
        }
    }
    for (name, key) in &spec.indexes {
        let have = state
            .indexes
            .iter()
            .any(|(n, k, p)| n == name && k == key && p == KEYS_ONLY);
        if !have {
            changes.push(Detail::AddIndex {
                name: name.clone(),
                key: key.clone(),
            });
        }
    }
    // An index a timed-out `up` left being built: the next `up` waits for it.
    if !state.unready_indexes.is_empty() {
        changes.push(Detail::IndexNotReady {
            names: state.unready_indexes.clone(),
        });
    }
    if state.ttl_attribute.as_deref() != Some(spec.ttl_attribute.as_str()) {
        changes.push(Detail::Ttl {
            attribute: spec.ttl_attribute.clone(),
        });
    }
    changes.extend(tag_changes(&state.tags, tags));
    Action::update_or_nothing(changes)
}

/// How long a table may take to become ACTIVE: creating it, or building a
/// new index over its items (backfilling takes longer the more items).
pub(super) const TABLE_TIMEOUT: Duration = Duration::from_secs(600);

pub(super) fn key(name: &str, key_type: KeyType) -> Result<KeySchemaElement> {
    Ok(KeySchemaElement::builder()
        .attribute_name(name)
        .key_type(key_type)
        .build()?)
}

pub(super) fn string_attribute(name: &str) -> Result<AttributeDefinition> {
    Ok(AttributeDefinition::builder()
        .attribute_name(name)
        .attribute_type(ScalarAttributeType::S)
        .build()?)
}

pub(super) fn keys_only_index(name: &str, index_key: &str) -> Result<GlobalSecondaryIndex> {
    Ok(GlobalSecondaryIndex::builder()
        .index_name(name)
        .key_schema(key(index_key, KeyType::Hash)?)
        .projection(Projection::builder().projection_type(ProjectionType::KeysOnly).build())
        .build()?)
}

pub(super) async fn apply_table(
    aws: &Aws,
    stack: Stack<'_>,
    spec: &TableSpec,
    action: &Action,
    report: Report<'_>,
) -> Result<()> {
    let done = match action {
        Action::NoChange => return Ok(()),
        Action::Create => {
            create_table(aws, stack, spec).await?;
            wait_for_table(aws, &spec.name).await?;
            enable_ttl(aws, spec).await?;
            "created"
        }
        Action::Replace { .. } => {
            delete_table_and_wait(aws, &spec.name).await?;
            create_table(aws, stack, spec).await?;
            wait_for_table(aws, &spec.name).await?;
            enable_ttl(aws, spec).await?;
            "replaced"
        }
        Action::Update { changes } => {
            for change in changes {
                update_table(aws, stack, spec, change, report).await?;
            }
            "updated"
        }
        Action::Delete => bail!("table {}: chatctl deletes tables only with `down`", spec.name),
    };
    step(report, Kind::Table, &spec.name, done);
    Ok(())
}

/// One change to a live table. DynamoDB takes one UpdateTable at a time
/// per table, and one index created or deleted per call; another while the
/// table is UPDATING gets ResourceInUseException, and another index change
/// while one is being built LimitExceededException (DynamoDB API reference,
/// UpdateTable; architect/architect #334): each waits until the table and
/// its indexes are ACTIVE before and after.
///
/// An index being backfilled is not waited for: that takes minutes on a
/// table with data (aws-facts.md §11), queries on it fail meanwhile, and
/// `up` says so. An index change that would have to wait for it is left for
/// the next `up`, which says so too.
pub(super) async fn update_table(
    aws: &Aws,
    stack: Stack<'_>,
    spec: &TableSpec,
    change: &Detail,
    report: Report<'_>,
) -> Result<()> {
    let name = &spec.name;
    let request = || aws.dynamodb.update_table().table_name(name);
    match change {
        Detail::Billing { .. } => {
            wait_for_table(aws, name).await?;
            request()
                .billing_mode(BillingMode::PayPerRequest)
                .send()
                .await
                .map_err(failed(format!(
                    "cannot switch DynamoDB table {name} to on-demand billing"
                )))?;
        }
        Detail::DeleteIndex { name: index } => {
            if ready_for_index_change(aws, name, index, report).await?.is_none() {
                return Ok(());
            }
            request()
                .global_secondary_index_updates(
                    GlobalSecondaryIndexUpdate::builder()
                        .delete(DeleteGlobalSecondaryIndexAction::builder().index_name(index).build()?)
                        .build(),
                )
                .send()
                .await
                .map_err(failed(format!("cannot delete index {index} of DynamoDB table {name}")))?;
        }
        Detail::AddIndex {
            name: index,
            key: index_key,
        } => {
            let Some(table) = ready_for_index_change(aws, name, index, report).await? else {
                return Ok(());
            };
            // The key attributes of the table and of its indexes after this
            // one is added: AWS needs the new index's key among them.
            let mut attributes = table.attribute_definitions().to_vec();
            if !attributes.iter().any(|a| a.attribute_name() == index_key) {
                attributes.push(string_attribute(index_key)?);
            }
            let index_spec = keys_only_index(index, index_key)?;
            request()
                .set_attribute_definitions(Some(attributes))
                .global_secondary_index_updates(
                    GlobalSecondaryIndexUpdate::builder()
                        .create(
                            CreateGlobalSecondaryIndexAction::builder()
                                .index_name(index)
                                .set_key_schema(Some(index_spec.key_schema().to_vec()))
                                .set_projection(index_spec.projection().cloned())
                                .build()?,
                        )
                        .build(),
                )
                .send()
                .await
                .map_err(failed(format!(
                    "cannot add index {index} to DynamoDB table {name} (DynamoDB builds one index at a time; if another is being built, run `chatctl up` again once it is ACTIVE)"
                )))?;
            let table = wait_for_table(aws, name).await?;
            if indexes_in(&table, IndexReadiness::Backfilling).contains(index) {
                step(
                    report,
                    Kind::Table,
                    name,
                    format!(
                        "index {index} added, now backfilling: queries on it fail until it is ACTIVE (minutes on a table with data; `chatctl status` shows it)"
                    ),
                );
            }
            return Ok(());
        }
        // wait_for_table below waits until the index is built (not backfilled).
        Detail::IndexNotReady { .. } => {}
        Detail::Ttl { .. } => {
            wait_for_table(aws, name).await?;
            enable_ttl(aws, spec).await?;
        }
        Detail::Tags { set, remove } => {
            let arn = stack.names.table_arn(name);
            retag(aws, Tagged::Table(&arn), set, remove).await?;
        }
        other => bail!("table {name}: the plan asks for {other}, which chatctl cannot apply to a table"),
    }
    wait_for_table(aws, name).await?;
    Ok(())
}

/// The table once it takes an index change, or `None` when the change
/// would have to wait for another index's backfill (DynamoDB changes one
/// index at a time: LimitExceededException meanwhile): then it is left for
/// the next `up`, said as a step.
async fn ready_for_index_change(
    aws: &Aws,
    name: &str,
    index: &str,
    report: Report<'_>,
) -> Result<Option<TableDescription>> {
    let table = wait_for_table(aws, name).await?;
    let backfilling = indexes_in(&table, IndexReadiness::Backfilling);
    if backfilling.is_empty() {
        return Ok(Some(table));
    }
    step(
        report,
        Kind::Table,
        name,
        format!(
            "index {index} not changed yet: index {} is still backfilling (DynamoDB changes one index at a time); run `chatctl up` again once `chatctl status` shows it ACTIVE",
            backfilling.join(", ")
        ),
    );
    Ok(None)
}

pub(super) async fn create_table(aws: &Aws, stack: Stack<'_>, spec: &TableSpec) -> Result<()> {
    let mut request = aws
        .dynamodb
        .create_table()
        .table_name(&spec.name)
        .billing_mode(BillingMode::PayPerRequest)
        .key_schema(key(&spec.partition_key, KeyType::Hash)?)
        .attribute_definitions(string_attribute(&spec.partition_key)?);
    if let Some(sort_key) = &spec.sort_key {
        request = request
            .key_schema(key(sort_key, KeyType::Range)?)
            .attribute_definitions(string_attribute(sort_key)?);
    }
    for (index, index_key) in &spec.indexes {
        request = request
            .attribute_definitions(string_attribute(index_key)?)
            .global_secondary_indexes(keys_only_index(index, index_key)?);
    }
    for (k, v) in stack.tags {
        request = request.tags(aws_sdk_dynamodb::types::Tag::builder().key(k).value(v).build()?);
    }
    match request.send().await {
        Ok(_) => Ok(()),
        // The answer to an earlier attempt was lost and the SDK sent it again
        // (aws-facts.md §10, "lost responses"): the table is there.
        Err(err) if is_code(&err, &["ResourceInUseException"]) => {
            let (_, found) = read_table(aws, stack.names, &spec.name).await?;
            taken_if_ours(&found, "DynamoDB table", &spec.name)
        }
        Err(err) => Err(crate::aws::aws_error(
            format!("cannot create DynamoDB table {}", spec.name),
            err,
        )),
    }
}

pub(super) async fn enable_ttl(aws: &Aws, spec: &TableSpec) -> Result<()> {
    let result = aws
        .dynamodb
        .update_time_to_live()
        .table_name(&spec.name)
        .time_to_live_specification(
            TimeToLiveSpecification::builder()
                .attribute_name(&spec.ttl_attribute)
                .enabled(true)
                .build()?,
        )
        .send()
        .await;
    let err = match result {
        Ok(_) => return Ok(()),
        Err(err) if is_code(&err, &["ValidationException"]) => err,
        Err(err) => {
            return Err(crate::aws::aws_error(
                format!("cannot enable TTL on DynamoDB table {}", spec.name),
                err,
            ));
        }
    };
    // Enabling takes up to an hour, and a second change within it is refused
    // with ValidationException (aws-facts.md §10, "DynamoDB TTL"): done when
    // TTL is already on, or being turned on, for the attribute wanted.
    let described = aws
        .dynamodb
        .describe_time_to_live()
        .table_name(&spec.name)
        .send()
        .await
        .map_err(failed(format!("cannot read the TTL of DynamoDB table {}", spec.name)))?;
    let ttl = described.time_to_live_description();
    let on = matches!(
        ttl.and_then(|d| d.time_to_live_status()),
        Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling)
    );
    if on && ttl.and_then(|d| d.attribute_name()) == Some(spec.ttl_attribute.as_str()) {
        return Ok(());
    }
    Err(crate::aws::aws_error(
        format!(
            "cannot enable TTL on DynamoDB table {} (DynamoDB takes one TTL change per hour; run `chatctl up` again later)",
            spec.name
        ),
        err,
    ))
}

/// Waits until a table is usable: ACTIVE, and its indexes ACTIVE or
/// backfilling. A new table is CREATING for seconds, longer with indexes, a
/// new index is built (the table UPDATING), then backfilled for minutes
/// while the table reads ACTIVE; the table takes no TTL or update while
/// CREATING or UPDATING (aws-facts.md §8, §10, §11; DynamoDB API reference,
/// GlobalSecondaryIndexDescription).
pub async fn wait_for_table(aws: &Aws, name: &str) -> Result<TableDescription> {
    wait_until(aws, name, IndexReadiness::Backfilling).await
}

/// Waits until a table and every index of it are ACTIVE (backfills done):
/// DynamoDB deletes no table while an index is backfilled ("Cannot delete
/// table while indexes are being created, updated, or deleted", aws-facts.md §11).
async fn wait_for_indexes(aws: &Aws, name: &str) -> Result<TableDescription> {
    wait_until(aws, name, IndexReadiness::Active).await
}

/// Waits until the table is ACTIVE and no index is behind `enough`.
async fn wait_until(aws: &Aws, name: &str, enough: IndexReadiness) -> Result<TableDescription> {
    poll(TABLE_TIMEOUT, || async {
        let described = aws
            .dynamodb
            .describe_table()
            .table_name(name)
            .send()
            .await
            .map_err(failed(format!("cannot read DynamoDB table {name}")))?;
        let table = described
            .table
            .with_context(|| format!("DynamoDB table {name}: DescribeTable returned no table"))?;
        let indexes_active = table.global_secondary_indexes().iter().all(|index| {
            let stands = readiness(index);
            stands == IndexReadiness::Active || stands == enough
        });
        match table.table_status() {
            Some(TableStatus::Active) if indexes_active => return Ok(Polled::Ready(table)),
            Some(TableStatus::Deleting) => bail!("DynamoDB table {name} is being deleted; run the command again"),
            _ => {}
        }
        Ok(Polled::Waiting(format!(
            "DynamoDB table {name} is still {} after {}s; see it in the DynamoDB console, then run the command again",
            match table.table_status() {
                Some(TableStatus::Active) => "building an index",
                status => status.map_or("-", |s| s.as_str()),
            },
            TABLE_TIMEOUT.as_secs()
        )))
    })
    .await
}

/// Waits until a deleted table is gone (DescribeTable says it is not found).
pub async fn wait_until_table_gone(aws: &Aws, name: &str) -> Result<()> {
    poll(TABLE_TIMEOUT, || async {
        match aws.dynamodb.describe_table().table_name(name).send().await {
            Err(err) if is_code(&err, &["ResourceNotFoundException"]) => Ok(Polled::Ready(())),
            Err(err) => Err(crate::aws::aws_error(format!("cannot read DynamoDB table {name}"), err)),
            Ok(_) => Ok(Polled::Waiting(format!(
                "DynamoDB table {name} is still being deleted after {}s; run the command again later",
                TABLE_TIMEOUT.as_secs()
            ))),
        }
    })
    .await
}

/// Deletes a table once it takes a deletion (not while CREATING or
/// UPDATING: ResourceInUseException) and waits until it is gone.
pub async fn delete_table_and_wait(aws: &Aws, name: &str) -> Result<()> {
    let status = match aws.dynamodb.describe_table().table_name(name).send().await {
        Err(err) if is_code(&err, &["ResourceNotFoundException"]) => return Ok(()),
        other => other
            .map_err(failed(format!("cannot read DynamoDB table {name}")))?
            .table
            .and_then(|t| t.table_status),
    };
    if status != Some(TableStatus::Deleting) {
        wait_for_indexes(aws, name).await?;
        // A tag write just made holds the table for ~2 s: ResourceInUseException
        // "Table tags are being updated" (aws-facts.md §11, "table tag writes").
        let deleted = retry(
            super::tags::TABLE_TAG_WRITES,
            |err| is_code(err, &["ResourceInUseException"]),
            || aws.dynamodb.delete_table().table_name(name).send(),
        )
        .await;
        match deleted {
            Ok(_) => {}
            Err((err, _)) if is_code(&err, &["ResourceNotFoundException"]) => return Ok(()),
            Err(failure) => {
                return Err(retry_error(
                    format!("cannot delete DynamoDB table {name}"),
                    super::tags::TABLE_TAG_WRITES,
                    "the table is busy (a tag or index change); run the command again",
                    failure,
                ));
            }
        }
    }
    wait_until_table_gone(aws, name).await
}

/// Whether a table holds chat data (anything but the connections table's
/// own items: counter shards, message counts, whose keys start with `#`).
/// Scan pages may be empty after the filter, so every page is read until
/// an item turns up.
pub async fn table_has_items(aws: &Aws, name: &str) -> Result<bool> {
    use chat_core::store::schema;
    let mut pages = aws
        .dynamodb
        .scan()
        .table_name(name)
        .filter_expression("attribute_not_exists(#id) OR NOT begins_with(#id, :ours)")
        .expression_attribute_names("#id", schema::CONNECTION_ID)
        .expression_attribute_values(":ours", AttributeValue::S("#".to_string()))
        .limit(100)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(failed(format!("cannot look into DynamoDB table {name}")))?;
        if !page.items().is_empty() {
            return Ok(true);
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::*;
    use crate::stack::scripted::{Scripted, answer, desired, ignore};

    fn described(status: &str, indexes: &[(&str, &str)]) -> String {
        json!({"Table": {
            "TableName": "chat-connections",
            "TableStatus": status,
            "AttributeDefinitions": [
                {"AttributeName": "connection_id", "AttributeType": "S"},
                {"AttributeName": "room", "AttributeType": "S"},
            ],
            "GlobalSecondaryIndexes": indexes
                .iter()
                .map(|(name, status)| json!({"IndexName": name, "IndexStatus": status}))
                .collect::<Vec<_>>(),
        }})
        .to_string()
    }

    /// One UpdateTable per index, each after the table and its indexes are
    /// ACTIVE (an index being built keeps the table UPDATING), the delete
    /// before the create; the new index's key among the attribute
    /// definitions; then the tags, waited for until they read back.
    #[tokio::test]
    async fn an_index_is_made_again_one_update_at_a_time_then_the_tags() {
        let desired = desired(&BTreeMap::new());
        let spec = &desired.tables[0];
        let (aws, script) = Scripted::clients(vec![
            answer(
                "DescribeTable",
                described("ACTIVE", &[("by-room", "ACTIVE"), ("by-user", "ACTIVE")]),
            ),
            answer("UpdateTable", "{}"),
            answer("DescribeTable", described("UPDATING", &[("by-room", "ACTIVE")])),
            answer("DescribeTable", described("ACTIVE", &[("by-room", "ACTIVE")])),
            answer("DescribeTable", described("ACTIVE", &[("by-room", "ACTIVE")])),
            answer("UpdateTable", "{}"),
            answer(
                "DescribeTable",
                described("UPDATING", &[("by-room", "ACTIVE"), ("by-user", "CREATING")]),
            ),
            answer(
                "DescribeTable",
                described("ACTIVE", &[("by-room", "ACTIVE"), ("by-user", "CREATING")]),
            ),
            answer(
                "DescribeTable",
                described("ACTIVE", &[("by-room", "ACTIVE"), ("by-user", "ACTIVE")]),
            ),
            answer("TagResource", "{}"),
            answer(
                "ListTagsOfResource",
                json!({"Tags": [{"Key": "team", "Value": "chat"}]}).to_string(),
            ),
            answer(
                "DescribeTable",
                described("ACTIVE", &[("by-room", "ACTIVE"), ("by-user", "ACTIVE")]),
            ),
        ]);
        let action = Action::Update {
            changes: vec![
                Detail::DeleteIndex { name: "by-user".into() },
                Detail::AddIndex {
                    name: "by-user".into(),
                    key: "user".into(),
                },
                Detail::Tags {
                    set: BTreeMap::from([("team".to_string(), "chat".to_string())]),
                    remove: vec![],
                },
            ],
        };
        apply_table(&aws, desired.stack(), spec, &action, &ignore)
            .await
            .unwrap();
        assert!(script.finished(), "{:?}", script.calls());

        let deleted = script.json_body(1);
        assert_eq!(
            deleted["GlobalSecondaryIndexUpdates"][0]["Delete"]["IndexName"],
            "by-user"
        );
        assert!(deleted.get("AttributeDefinitions").is_none());
        let created = script.json_body(5);
        let create = &created["GlobalSecondaryIndexUpdates"][0]["Create"];
        assert_eq!(create["IndexName"], "by-user");
        assert_eq!(
            create["KeySchema"],
            json!([{"AttributeName": "user", "KeyType": "HASH"}])
        );
        assert_eq!(create["Projection"]["ProjectionType"], KEYS_ONLY);
        let attributes: Vec<&str> = created["AttributeDefinitions"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|a| a["AttributeName"].as_str())
            .collect();
        assert_eq!(attributes, ["connection_id", "room", "user"]);
    }

    /// DynamoDB refusing a second index change while one is built: the
    /// error names the table and says what to do.
    #[tokio::test]
    async fn an_index_change_refused_meanwhile_says_what_to_do() {
        let desired = desired(&BTreeMap::new());
        let spec = &desired.tables[0];
        let (aws, _script) = Scripted::clients(vec![
            answer("DescribeTable", described("ACTIVE", &[("by-room", "ACTIVE")])),
            crate::stack::scripted::Answer {
                call: "UpdateTable",
                status: 400,
                body: json!({
                    "__type": "com.amazonaws.dynamodb.v20120810#LimitExceededException",
                    "message": "Subscriber limit exceeded: Only 1 online index can be created or deleted simultaneously per table",
                })
                .to_string(),
            },
        ]);
        let add = Detail::AddIndex {
            name: "by-user".into(),
            key: "user".into(),
        };
        let error = format!(
            "{:#}",
            update_table(&aws, desired.stack(), spec, &add, &ignore)
                .await
                .unwrap_err()
        );
        assert!(
            error.contains("cannot add index by-user to DynamoDB table chat-connections"),
            "{error}"
        );
        assert!(error.contains("Only 1 online index"), "{error}");
        assert!(error.contains("run `chatctl up` again"), "{error}");
    }

    /// An index added to a table with data is built (the table UPDATING),
    /// then backfilled for minutes while the table reads ACTIVE
    /// (aws-facts.md §11): `up` says so and goes on instead of waiting, and
    /// another index change waits for the next `up`, said as a step.
    #[tokio::test]
    async fn a_backfilling_index_is_reported_not_waited_for() {
        let desired = desired(&BTreeMap::new());
        let spec = &desired.tables[0];
        let backfilling = json!({"Table": {
            "TableName": "chat-connections",
            "TableStatus": "ACTIVE",
            "AttributeDefinitions": [{"AttributeName": "connection_id", "AttributeType": "S"}],
            "GlobalSecondaryIndexes": [
                {"IndexName": "by-room", "IndexStatus": "ACTIVE"},
                {"IndexName": "by-user", "IndexStatus": "CREATING", "Backfilling": true},
            ],
        }})
        .to_string();
        let (aws, script) = Scripted::clients(vec![
            answer("DescribeTable", described("ACTIVE", &[("by-room", "ACTIVE")])),
            answer("UpdateTable", "{}"),
            answer("DescribeTable", described("UPDATING", &[("by-room", "ACTIVE")])),
            answer("DescribeTable", backfilling.clone()),
            answer("DescribeTable", backfilling),
        ]);
        let steps = std::sync::Mutex::new(vec![]);
        let report = |step: super::super::base::Step| steps.lock().unwrap().push(step.done);
        let add = |name: &str| Detail::AddIndex {
            name: name.into(),
            key: "user".into(),
        };
        let started = Instant::now();
        update_table(&aws, desired.stack(), spec, &add("by-user"), &report)
            .await
            .unwrap();
        update_table(&aws, desired.stack(), spec, &add("by-other"), &report)
            .await
            .unwrap();
        assert!(script.finished(), "{:?}", script.calls());
        assert!(started.elapsed() < Duration::from_secs(5));
        let steps = steps.into_inner().unwrap();
        assert_eq!(steps.len(), 2, "{steps:?}");
        assert!(
            steps[0].starts_with("index by-user added, now backfilling"),
            "{steps:?}"
        );
        assert!(
            steps[1].contains("index by-other not changed yet: index by-user is still backfilling"),
            "{steps:?}"
        );
    }
}
