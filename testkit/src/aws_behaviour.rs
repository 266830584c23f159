//! The AWS behaviour layer of [`AwsProxy`](crate::AwsProxy): makes the proxy
//! answer the way real AWS does where moto is instant and lenient
//! (aws-facts.md §10).
//!
//! Each behaviour of [`Behaviours`] can be switched on alone; all are off
//! unless the proxy is started with [`AwsProxy::start_with_behaviours`](crate::AwsProxy::start_with_behaviours)
//! or given them with [`AwsProxy::set_behaviours`](crate::AwsProxy::set_behaviours).
//! Errors are shaped the way each service's protocol shapes them, so the SDK
//! parses them into its typed variants. Durations come from [`Timings`]:
//! [`Timings::compressed`] for tests, [`Timings::real_scale`] for the typical
//! values on real accounts.
//!
//! The layer decides before a request reaches moto ([`LayerState::before`]:
//! answer it with an error, or forward it with a [`Plan`]) and looks at moto's
//! answer afterwards ([`LayerState::after`]: remember state, rewrite the
//! answer, or lose it).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode, Uri};
use serde_json::{Value, json};

use crate::moto::{ACCOUNT_ID, REGION};

/// How long each modelled AWS delay lasts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timings {
    /// After CreateRole, how long Lambda cannot assume the role (real: 8 s).
    pub role_propagation: Duration,
    /// After PutRolePolicy, how long the role's own calls are still refused
    /// (real: 8 s; aws-facts.md §10 "Typical timings": 5–10 s).
    pub permission_propagation: Duration,
    /// State `Pending` after CreateFunction (real: 2 s).
    pub function_pending: Duration,
    /// LastUpdateStatus `InProgress` after each update (real: 1 s).
    pub function_update: Duration,
    /// TableStatus `CREATING` after CreateTable (real: 10 s).
    pub table_creating: Duration,
    /// TableStatus `DELETING` after DeleteTable, before the table vanishes (real: 5 s).
    pub table_deleting: Duration,
    /// DynamoDB tags not readable after CreateTable (with tags) / TagResource / UntagResource (real: 2 s).
    pub tag_lag: Duration,
    /// After a TagResource / UntagResource of a table, how long the table
    /// takes no other tag write (real: 2 s; 1.6–3.4 s measured).
    pub tag_write: Duration,
    /// After an index added by UpdateTable is built (the table ACTIVE
    /// again), how long the index still backfills (real: 10 min; 8–17 min
    /// measured).
    pub index_backfill: Duration,
    /// How long one API Gateway write holds its API at least (real: 300 ms).
    pub api_write: Duration,
    /// How long one DynamoDB TransactWriteItems holds its items at least (real: 25 ms).
    pub transaction: Duration,
    /// How long a written item stays out of the table's global secondary
    /// indexes (real: 500 ms).
    pub gsi_lag: Duration,
    /// After a DeleteSecret without recovery, how long its name cannot be
    /// used again (real: "a short delay", no figure published; 5 s assumed).
    pub secret_deletion: Duration,
    /// A new alarm's first evaluation, before which it is INSUFFICIENT_DATA
    /// (real: alarms are evaluated every minute, so up to 60 s).
    pub alarm_evaluation: Duration,
    /// After a DeleteBucket, how long a CreateBucket of the name gets
    /// OperationAborted (real: no figure published; seconds to minutes
    /// reported; 10 s assumed).
    pub bucket_name_release: Duration,
    /// After a DeleteDomainName, how long its certificate stays in use
    /// (real: minutes; "10-20 minutes" in serverless-domain-manager #32;
    /// 2 min assumed).
    pub certificate_release: Duration,
    pub latency: Latency,
}

/// How long each call takes to be answered (see [`Behaviours::latency`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Latency {
    /// Get / List / Describe and other non-mutating calls (real: 80 ms).
    pub read: Duration,
    /// Mutating calls (real: 200 ms).
    pub write: Duration,
    /// API Gateway CreateDeployment (real: 1 s).
    pub create_deployment: Duration,
}

impl Timings {
    /// Short delays for tests, in the same proportions as real ones.
    pub fn compressed() -> Timings {
        Timings {
            role_propagation: Duration::from_millis(1500),
            permission_propagation: Duration::from_secs(1),
            function_pending: Duration::from_millis(300),
            function_update: Duration::from_millis(200),
            table_creating: Duration::from_secs(1),
            table_deleting: Duration::from_millis(300),
            tag_lag: Duration::from_millis(500),
            tag_write: Duration::from_millis(300),
            index_backfill: Duration::from_millis(1500),
            api_write: Duration::from_millis(60),
            transaction: Duration::from_millis(10),
            gsi_lag: Duration::from_millis(500),
            secret_deletion: Duration::from_millis(800),
            // Longer than the rest: nothing waits for it, and a test reads
            // the new alarms' first state after `up`.
            alarm_evaluation: Duration::from_secs(10),
            bucket_name_release: Duration::from_millis(800),
            certificate_release: Duration::from_millis(800),
            latency: Latency {
                read: Duration::from_millis(5),
                write: Duration::from_millis(15),
                create_deployment: Duration::from_millis(50),
            },
        }
    }

    /// The typical delays on real accounts (aws-facts.md §10, "Typical timings").
    pub fn real_scale() -> Timings {
        Timings {
            role_propagation: Duration::from_secs(8),
            permission_propagation: Duration::from_secs(8),
            function_pending: Duration::from_secs(2),
            function_update: Duration::from_secs(1),
            table_creating: Duration::from_secs(10),
            table_deleting: Duration::from_secs(5),
            tag_lag: Duration::from_secs(2),
            tag_write: Duration::from_secs(2),
            index_backfill: Duration::from_secs(600),
            api_write: Duration::from_millis(300),
            transaction: Duration::from_millis(25),
            gsi_lag: Duration::from_millis(500),
            secret_deletion: Duration::from_secs(5),
            alarm_evaluation: Duration::from_secs(60),
            bucket_name_release: Duration::from_secs(10),
            certificate_release: Duration::from_secs(120),
            latency: Latency {
                read: Duration::from_millis(80),
                write: Duration::from_millis(200),
                create_deployment: Duration::from_secs(1),
            },
        }
    }
}

/// Which AWS behaviours the proxy reproduces; see each field.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Behaviours {
    /// A write to an API Gateway v2 API (POST/PATCH/DELETE under
    /// `/v2/apis/{id}/…`, PATCH/DELETE of the API) while another write to it is
    /// in flight gets `409 ConflictException`. A successful write holds its
    /// API from its arrival until the later of its end and arrival +
    /// `api_write`; a later write is checked when AWS takes it, after its
    /// latency. So writes sent at once conflict (the reports: parallel
    /// creates), while one sent after the previous answered passes when
    /// `api_write` is within two write latencies (real-scale), and may still
    /// conflict at compressed timings.
    pub api_conflicts: bool,
    /// CreateFunction within `role_propagation` of the CreateRole of its role:
    /// `InvalidParameterValueException` "The role defined for the function
    /// cannot be assumed by Lambda." in the first half of the window; in the
    /// second half, for a function with environment variables, the KMS
    /// CreateGrant message; else passes.
    pub role_propagation: bool,
    /// For `permission_propagation` after a PutRolePolicy, the role's
    /// DynamoDB item calls (Get/Put/Update/DeleteItem, Query, Scan, Batch…,
    /// Transact…) get `400 AccessDeniedException` "User: arn:aws:sts::…:
    /// assumed-role/ROLE/… is not authorized to perform: dynamodb:ACTION on
    /// resource: …". A call is the role's when it is signed with temporary
    /// credentials (an `X-Amz-Security-Token`), as a Lambda function's are;
    /// the deployer's own calls in the tests carry none and pass. The
    /// role's Secrets Manager GetSecretValue likewise (the authorizer
    /// reading the token secret), with Secrets Manager's message.
    /// aws-facts.md §11 "permissions right after `up`".
    pub permission_propagation: bool,
    /// State `Pending` for `function_pending` after CreateFunction,
    /// LastUpdateStatus `InProgress` for `function_update` after each
    /// UpdateFunctionCode / UpdateFunctionConfiguration; an update meanwhile
    /// gets `409 ResourceConflictException`, and so does a PublishVersion.
    /// A published version is `Pending` for `function_pending` (GetFunction
    /// of `NAME:VERSION`); an alias created or moved to it meanwhile gets
    /// `409 ResourceConflictException`.
    pub function_states: bool,
    /// TableStatus `CREATING` (and GSIs `CREATING`) for `table_creating` after
    /// CreateTable: UpdateTimeToLive / UpdateTable / DeleteTable get
    /// `ResourceInUseException`, ListTagsOfResource / TagResource /
    /// UntagResource and item operations `ResourceNotFoundException`. After
    /// DeleteTable, DescribeTable shows `DELETING` for `table_deleting`.
    /// After an UpdateTable that creates or deletes a global secondary
    /// index, the table is `UPDATING` (a new index `CREATING`, backfilling)
    /// for `table_creating`: another index change meanwhile gets
    /// `LimitExceededException`, any other UpdateTable or a DeleteTable
    /// `ResourceInUseException`. DescribeTimeToLive of a table CREATING or
    /// DELETING gets `ValidationException` "Cannot describe time to live
    /// while table is in CREATING state".
    pub table_creating: bool,
    /// A table takes one tag write at a time: a TagResource / UntagResource
    /// within `tag_write` of the last one that passed gets
    /// `LimitExceededException` "Subscriber limit exceeded: Table tags are
    /// being updated", and a DeleteTable meanwhile `ResourceInUseException`.
    pub table_tag_writes: bool,
    /// An index added with UpdateTable, once the table is ACTIVE again
    /// (after `table_creating`), stays `CREATING` with `Backfilling` true
    /// for `index_backfill`: a Query of it gets `ValidationException`
    /// "Cannot read from backfilling global secondary index", another index
    /// change `LimitExceededException`, a DeleteTable `ResourceInUseException`.
    pub index_backfill: bool,
    /// ListTagsOfResource answers the tags from before the last change (none
    /// after CreateTable) for `tag_lag` after CreateTable-with-tags /
    /// TagResource / UntagResource.
    pub tag_lag: bool,
    /// The list calls chatctl uses answer pages of at most 2 items with a
    /// continuation token (apigatewayv2 GetApis/GetRoutes/GetIntegrations/
    /// GetAuthorizers, DynamoDB ListTagsOfResource, IAM ListRolePolicies/
    /// ListAttachedRolePolicies, Logs DescribeLogGroups/FilterLogEvents).
    pub small_pages: bool,
    /// The first attempt of each create reaches moto, but its answer is
    /// replaced by an HTTP 500 service error; the SDK's retry of the same
    /// request gets moto's answer (a duplicate, or "already exists").
    pub lost_create_responses: bool,
    /// Lambda control-plane quota: 15 requests/s (burst 15) for every Lambda
    /// operation but Invoke, GetFunction and GetPolicy; GetFunction has
    /// 100/s, GetPolicy its own 15/s (GetFunctionConfiguration counts
    /// against the shared 15); beyond: `429 TooManyRequestsException`.
    pub lambda_quota: bool,
    /// CloudWatch Logs FilterLogEvents: 5 requests/s; beyond: `ThrottlingException`.
    pub logs_quota: bool,
    /// The account has no CloudWatch Logs role for API Gateway (a new
    /// account's state): a CreateStage or UpdateStage that turns on
    /// execution logging (`loggingLevel` ERROR or INFO, in the default or a
    /// route's settings) or access logging gets `400 BadRequestException`
    /// "CloudWatch Logs role ARN must be set in account settings to enable
    /// logging".
    pub no_logging_role: bool,
    /// A DynamoDB TransactWriteItems touching an item that another
    /// transaction holds is cancelled: `TransactionCanceledException` with
    /// reason `TransactionConflict` for that item (`None` for the others). A
    /// PutItem / UpdateItem / DeleteItem of a held item gets
    /// `TransactionConflictException`. A transaction holds its items for
    /// `transaction` from when AWS takes it (after its latency), however
    /// long moto, which serialises every request, then takes to answer.
    pub transaction_conflicts: bool,
    /// A Query or Scan of a global secondary index leaves out the items
    /// written in the last `gsi_lag` that changed that index's key (a put
    /// changes every attribute; an update, those its expression names): a
    /// new item, or one moved to another index key, is not there yet. And
    /// the other way round: an item moved or deleted in the last `gsi_lag`
    /// is still found under its old index key, as it was (re:Post
    /// "dynamodb-missing-table-items-gsi", aws-facts.md §11 "GSI
    /// staleness"). The layer reads the old image from moto before such a
    /// write; a Query adds it back only when its key condition is
    /// equalities (and it has no filter), a Scan when it has no filter.
    pub gsi_lag: bool,
    /// A secret deleted with ForceDeleteWithoutRecovery is deleted "with an
    /// asynchronous background process, so there might be a short delay
    /// before the secret is permanently deleted. If you delete a secret and
    /// then immediately create a secret with the same name, use appropriate
    /// back off and retry logic" (Secrets Manager API reference,
    /// DeleteSecret): for `secret_deletion` after it, a CreateSecret of the
    /// name gets `InvalidRequestException` "You can't create this secret
    /// because a secret with this name is already scheduled for deletion."
    pub secret_deletion: bool,
    /// An email subscription stays unconfirmed until its address owner
    /// follows the link SNS mails (never, here): Subscribe answers
    /// `pending confirmation` as its SubscriptionArn, ListSubscriptions /
    /// ListSubscriptionsByTopic show `PendingConfirmation` (SNS API
    /// reference, Subscribe and ListSubscriptionsByTopic; SNS developer
    /// guide: unconfirmed subscriptions are deleted after 3 days). Moto
    /// confirms them at once.
    pub email_confirmation: bool,
    /// "When this operation creates an alarm, the alarm state is
    /// immediately set to INSUFFICIENT_DATA. The alarm is then evaluated"
    /// (CloudWatch API reference, PutMetricAlarm): DescribeAlarms shows a
    /// new alarm INSUFFICIENT_DATA for `alarm_evaluation`, unless
    /// SetAlarmState set it meanwhile (through the layer or not). Moto
    /// makes alarms OK at once.
    pub alarm_evaluation: bool,
    /// S3 conditional writes (PutObject with `If-None-Match` / `If-Match`,
    /// DeleteObject with `If-Match`) of a key while another conditional
    /// write of it is in flight get `409 ConditionalRequestConflict` ("If a
    /// conflicting operation occurs during the upload S3 returns a 409
    /// ConditionalRequestConflict response", S3 API reference, PutObject).
    /// Moto serialises every request.
    pub s3_conditional_conflicts: bool,
    /// For `bucket_name_release` after a DeleteBucket, a CreateBucket of the
    /// name gets `409 OperationAborted` "A conflicting conditional operation
    /// is currently in progress against this resource. Please try again."
    /// (S3 API reference, error codes). Moto frees the name at once.
    pub bucket_name_release: bool,
    /// An API Gateway domain name keeps its ACM certificate in use for
    /// `certificate_release` after its DeleteDomainName: a DeleteCertificate
    /// meanwhile gets `400 ResourceInUseException` "Certificate ARN in
    /// account ACCOUNT is in use." (aws-cdk #36265: "AWS doesn't immediately
    /// release the certificate association after the Custom Domain is
    /// deleted"; terraform-provider-aws #3866). The emulator refuses it
    /// while the domain name exists.
    pub certificate_release: bool,
    /// Every call is answered after `timings.latency` (read, write or
    /// create_deployment).
    pub latency: bool,
    pub timings: Timings,
}

impl Behaviours {
    /// Every behaviour off, compressed timings.
    pub fn none() -> Behaviours {
        Behaviours {
            api_conflicts: false,
            role_propagation: false,
            permission_propagation: false,
            function_states: false,
            table_creating: false,
            table_tag_writes: false,
            index_backfill: false,
            tag_lag: false,
            small_pages: false,
            lost_create_responses: false,
            lambda_quota: false,
            logs_quota: false,
            no_logging_role: false,
            transaction_conflicts: false,
            gsi_lag: false,
            secret_deletion: false,
            email_confirmation: false,
            alarm_evaluation: false,
            s3_conditional_conflicts: false,
            bucket_name_release: false,
            certificate_release: false,
            latency: false,
            timings: Timings::compressed(),
        }
    }

    /// Every behaviour on, with `timings`.
    pub fn all(timings: Timings) -> Behaviours {
        Behaviours {
            api_conflicts: true,
            role_propagation: true,
            permission_propagation: true,
            function_states: true,
            table_creating: true,
            table_tag_writes: true,
            index_backfill: true,
            tag_lag: true,
            small_pages: true,
            lost_create_responses: true,
            lambda_quota: true,
            logs_quota: true,
            no_logging_role: true,
            transaction_conflicts: true,
            gsi_lag: true,
            secret_deletion: true,
            email_confirmation: true,
            alarm_evaluation: true,
            s3_conditional_conflicts: true,
            bucket_name_release: true,
            certificate_release: true,
            latency: true,
            timings,
        }
    }

    /// How long a call of `operation` waits before it is answered (zero when
    /// `latency` is off).
    pub(crate) fn latency_of(&self, operation: &str, mutating: bool) -> Duration {
        if !self.latency {
            Duration::ZERO
        } else if operation == "CreateDeployment" {
            self.timings.latency.create_deployment
        } else if mutating {
            self.timings.latency.write
        } else {
            self.timings.latency.read
        }
    }
}

/// The wire protocol of a request, for the shape of its errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    /// awsJson1_0 / awsJson1_1: `X-Amz-Target`, errors in `__type`.
    AwsJson,
    /// awsQuery: form-encoded `Action=`, XML `<ErrorResponse>` errors.
    AwsQuery,
    /// restJson1: the operation is in method and path, errors in `x-amzn-ErrorType`.
    RestJson,
    /// Smithy RPC v2 CBOR (CloudWatch): `POST /service/S/operation/OP`,
    /// CBOR bodies, errors in `__type`.
    RpcV2Cbor,
    /// restXml (S3): the operation is in method, path and query, errors
    /// are `<Error><Code>…</Code><Message>…</Message></Error>`.
    RestXml,
}

/// What the layer sees of a request.
pub(crate) struct RequestView<'a> {
    pub service: &'a str,
    pub operation: &'a str,
    pub method: &'a Method,
    pub uri: &'a Uri,
    /// The body as the client sent it.
    pub body: &'a [u8],
    /// Same for an SDK retry of the same request.
    pub key: u64,
    /// When the request reached the proxy, before its latency.
    pub arrived: Instant,
    /// Signed with temporary credentials (an `X-Amz-Security-Token`): a
    /// role's session, as a Lambda function's calls are.
    pub role_session: bool,
    /// Carries `If-Match` or `If-None-Match` (an S3 conditional write).
    pub conditional: bool,
}

/// An error the layer answers instead of moto.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LayerError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Fields added to a restJson body besides `message` (Lambda: `Type`, …).
    pub extra: Option<Value>,
    /// Seconds, for a `Retry-After` header.
    pub retry_after: Option<u64>,
}

impl LayerError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> LayerError {
        LayerError {
            status,
            code,
            message: message.into(),
            extra: None,
            retry_after: None,
        }
    }

    /// Lambda's restJson errors carry `"Type": "User"`.
    fn lambda(status: StatusCode, code: &'static str, message: impl Into<String>) -> LayerError {
        LayerError {
            extra: Some(json!({ "Type": "User" })),
            ..LayerError::new(status, code, message)
        }
    }
}

/// What to do with a request.
pub(crate) enum Decision {
    /// Answer with this error; moto never sees the request.
    Answer(LayerError),
    /// Answer 200 with this JSON (awsJson); moto never sees the request.
    Reply(Value, &'static str),
    /// Forward to moto, then call [`LayerState::after`] with the plan.
    Forward(Box<Plan>),
}

/// What the layer decided for a forwarded request.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    /// What this write holds while in flight: an API Gateway API
    /// (api_conflicts) or DynamoDB items (transaction_conflicts), see [`Lock`].
    holds: Vec<String>,
    /// How long at least a successful write keeps holding, from its arrival.
    hold_for: Duration,
    /// Leave out of this (table, index)'s answer the items written lately
    /// (gsi_lag).
    hide_recent_writes_of: Option<(String, String)>,
    /// The equalities an index Query or Scan selects by, (attribute, value),
    /// when the layer can evaluate them: the old images it adds back (gsi_lag).
    index_selection: Option<Vec<(String, Value)>>,
    /// Before forwarding, the proxy reads these (table, key) items from
    /// moto into `old_images`: the write moves or deletes them (gsi_lag).
    pub read_old_images_of: Vec<(String, Value)>,
    pub old_images: Vec<(String, Value)>,
    /// Replaces the path and query sent to moto (paging parameters removed).
    pub new_path_and_query: Option<String>,
    /// Replaces the body sent to moto (paging parameters removed).
    pub new_body: Option<Vec<u8>>,
    /// Slice moto's full list answer.
    page: Option<Paging>,
    /// Before forwarding, the proxy reads this DynamoDB ARN's tags from moto
    /// into `snapshot` (tag_lag of TagResource / UntagResource).
    pub snapshot_tags_of: Option<String>,
    pub snapshot: Option<Vec<Value>>,
    /// ListTagsOfResource answers these tags instead of moto's (tag_lag).
    tags_override: Option<Vec<Value>>,
    /// Lose the answer if moto succeeds (lost_create_responses).
    lose: bool,
    /// Rewrite the function state of moto's answer (function_states).
    function: Option<String>,
    /// Rewrite or remember the table of moto's answer (table_creating, tag_lag).
    table: Option<String>,
}

/// What to do with moto's answer.
pub(crate) struct After {
    /// A new body for moto's answer.
    pub body: Option<Vec<u8>>,
    /// Replace moto's answer by an HTTP 500 (a lost response).
    pub lost: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PageFormat {
    /// A JSON list `items` and token field `token` (restJson and awsJson).
    Json { items: &'static str, token: &'static str },
    /// An awsQuery XML list `<list><member>…</member>…</list>`, `IsTruncated`, `Marker`.
    Query { list: &'static str },
    /// A CBOR map's list `items` and token field `token` (Smithy RPC v2 CBOR).
    Cbor { items: &'static str, token: &'static str },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Paging {
    format: PageFormat,
    offset: usize,
}

/// At most this many items per page with `small_pages`.
const PAGE_SIZE: usize = 2;
const TOKEN_PREFIX: &str = "chatctl-proxy-page-";

/// A resource that one write at a time may change: an API (`api:{id}`) or
/// a DynamoDB item (`item:{table}:{key}`).
#[derive(Debug, Default)]
struct Lock {
    /// Writes in flight.
    active: u32,
    /// Held until then by the last successful writes.
    busy_until: Option<Instant>,
}

impl Lock {
    fn held(&self, now: Instant) -> bool {
        self.active > 0 || self.busy_until.is_some_and(|until| now < until)
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct FunctionState {
    pending_until: Option<Instant>,
    updating_until: Option<Instant>,
    inactive: bool,
}

/// A token bucket: `rate` per second, at most `burst` saved.
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    rate: f64,
    burst: f64,
    last: Instant,
}

impl Bucket {
    fn new(rate: f64, burst: f64, now: Instant) -> Bucket {
        Bucket {
            tokens: burst,
            rate,
            burst,
            last: now,
        }
    }

    /// Takes a token, or says how long until one is there.
    fn take(&mut self, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / self.rate))
        }
    }
}

/// The layer's memory, inside the proxy's recorded state.
#[derive(Debug)]
pub(crate) struct LayerState {
    pub behaviours: Behaviours,
    locks: HashMap<String, Lock>,
    /// Table → its key attributes, from CreateTable requests and DescribeTable answers.
    key_schemas: HashMap<String, Vec<String>>,
    /// (table, index) → the index's key attributes, from CreateTable
    /// requests and DescribeTable answers.
    index_keys: HashMap<(String, String), Vec<String>>,
    /// Items written lately, out of the indexes whose key they changed until then.
    recent_writes: Vec<(Written, Instant)>,
    /// (table, index) → the attributes the index projects besides the keys,
    /// `None` for all of them.
    index_projections: HashMap<(String, String), Option<Vec<String>>>,
    /// Items moved or deleted lately: (table, old image), still under their
    /// old index keys until then.
    old_images: Vec<(String, Value, Instant)>,
    /// Role name → when CreateRole answered.
    roles: HashMap<String, Instant>,
    /// The role of the last PutRolePolicy, and until when its calls are refused.
    policy_change: Option<(String, Instant)>,
    /// Secret name → until when a deletion without recovery keeps it taken.
    deleted_secrets: HashMap<String, Instant>,
    /// Alarms made through the layer, and until when each is not evaluated yet.
    alarms: HashMap<String, Instant>,
    /// Bucket names another account holds (see `AwsProxy::take_bucket_name`).
    taken_buckets: HashSet<String>,
    /// Bucket name → until when, after its DeleteBucket, it cannot be made again.
    deleted_buckets: HashMap<String, Instant>,
    /// Domain name → the certificates it was made or updated with.
    domain_certificates: HashMap<String, Vec<String>>,
    /// Certificate ARN → until when, after its domain name's deletion, it is in use.
    released_certificates: HashMap<String, Instant>,
    functions: HashMap<String, FunctionState>,
    /// Table name → CREATING until.
    creating: HashMap<String, Instant>,
    /// Table name → DELETING until, and its description.
    deleting: HashMap<String, (Instant, Value)>,
    /// Table name → UPDATING until (an index being built or deleted), and
    /// the index being built, if any.
    updating: HashMap<String, (Instant, Option<String>)>,
    /// DynamoDB ARN → tags answered until then.
    tag_lags: HashMap<String, (Instant, Vec<Value>)>,
    /// Table name → no other tag write until then.
    tag_writes: HashMap<String, Instant>,
    /// Table name → the index added last, backfilling until then.
    backfilling: HashMap<String, (Instant, String)>,
    /// Requests whose answer was lost once.
    lost: HashSet<u64>,
    lambda_control: Option<Bucket>,
    lambda_reads: Option<Bucket>,
    lambda_policy_reads: Option<Bucket>,
    filter_log_events: Option<Bucket>,
}

// --- aws-facts.md §10 messages -------------------------------------------------

const CONFLICT_MESSAGE: &str = "Unable to complete operation due to concurrent modification. Please try again later.";
const ROLE_MESSAGE: &str = "The role defined for the function cannot be assumed by Lambda.";

fn kms_message(role_arn: &str) -> String {
    format!(
        "Lambda was unable to configure access to your environment variables because the KMS key is invalid \
         for CreateGrant. Please check your KMS key settings. KMS Exception: InvalidArnException KMS Message: \
         ARN does not refer to a valid principal: {role_arn}"
    )
}

fn function_arn(name: &str) -> String {
    format!("arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{name}")
}

/// The creates whose first answer `lost_create_responses` loses.
const CREATES: &[(&str, &str)] = &[
    ("apigateway", "CreateApi"),
    ("apigateway", "CreateIntegration"),
    ("apigateway", "CreateAuthorizer"),
    ("apigateway", "CreateRoute"),
    ("apigateway", "CreateStage"),
    ("apigateway", "CreateDeployment"),
    ("apigateway", "CreateDomainName"),
    ("apigateway", "CreateApiMapping"),
    ("lambda", "CreateFunction"),
    ("iam", "CreateRole"),
    ("dynamodb", "CreateTable"),
    ("logs", "CreateLogGroup"),
    ("s3", "CreateBucket"),
];

/// DynamoDB item operations (answer ResourceNotFoundException on a table
/// that is not ACTIVE yet).
const ITEM_OPERATIONS: &[&str] = &[
    "PutItem",
    "GetItem",
    "UpdateItem",
    "DeleteItem",
    "Query",
    "Scan",
    "BatchGetItem",
    "BatchWriteItem",
    "TransactGetItems",
    "TransactWriteItems",
];

impl LayerState {
    pub fn new(behaviours: Behaviours) -> LayerState {
        LayerState {
            behaviours,
            locks: HashMap::new(),
            key_schemas: HashMap::new(),
            index_keys: HashMap::new(),
            recent_writes: Vec::new(),
            index_projections: HashMap::new(),
            old_images: Vec::new(),
            roles: HashMap::new(),
            policy_change: None,
            deleted_secrets: HashMap::new(),
            domain_certificates: HashMap::new(),
            released_certificates: HashMap::new(),
            alarms: HashMap::new(),
            taken_buckets: HashSet::new(),
            deleted_buckets: HashMap::new(),
            functions: HashMap::new(),
            creating: HashMap::new(),
            deleting: HashMap::new(),
            updating: HashMap::new(),
            tag_lags: HashMap::new(),
            tag_writes: HashMap::new(),
            backfilling: HashMap::new(),
            lost: HashSet::new(),
            lambda_control: None,
            lambda_reads: None,
            lambda_policy_reads: None,
            filter_log_events: None,
        }
    }

    /// See [`AwsProxy::make_function_inactive`](crate::AwsProxy::make_function_inactive).
    pub fn make_function_inactive(&mut self, function_name: &str) {
        self.functions
            .entry(function_name_of(function_name))
            .or_default()
            .inactive = true;
    }

    /// See [`AwsProxy::take_bucket_name`](crate::AwsProxy::take_bucket_name).
    pub fn take_bucket_name(&mut self, name: &str) {
        self.taken_buckets.insert(name.to_string());
    }

    /// Decides, as the request arrives (after its latency), whether the layer
    /// answers it or moto does.
    pub fn before(&mut self, request: &RequestView) -> Decision {
        let now = Instant::now();
        let b = self.behaviours;
        let mut plan = Plan::default();
        if let Some(error) = self.refused_while_policy_propagates(request, now) {
            return Decision::Answer(error);
        }
        match request.service {
            "lambda" => {
                if b.lambda_quota
                    && let Err(error) = self.lambda_quota(request.operation, now)
                {
                    return Decision::Answer(error);
                }
                if let Some(error) = self.lambda_before(request, now, &mut plan) {
                    return Decision::Answer(error);
                }
            }
            // AWS Knowledge Center: FilterLogEvents 5 requests/s per account and region (§10).
            "logs" if b.logs_quota && request.operation == "FilterLogEvents" => {
                let bucket = self.filter_log_events.get_or_insert_with(|| Bucket::new(5.0, 5.0, now));
                if bucket.take(now).is_err() {
                    return Decision::Answer(LayerError::new(
                        StatusCode::BAD_REQUEST,
                        "ThrottlingException",
                        "Rate exceeded",
                    ));
                }
            }
            "acm" if b.certificate_release && request.operation == "DeleteCertificate" => {
                let body: Value = serde_json::from_slice(request.body).unwrap_or(Value::Null);
                self.released_certificates.retain(|_, until| now < *until);
                if let Some(arn) = body["CertificateArn"]
                    .as_str()
                    .filter(|arn| self.released_certificates.contains_key(*arn))
                {
                    return Decision::Answer(LayerError::new(
                        StatusCode::BAD_REQUEST,
                        "ResourceInUseException",
                        format!("Certificate {arn} in account {ACCOUNT_ID} is in use."),
                    ));
                }
            }
            "secretsmanager" if b.secret_deletion && request.operation == "CreateSecret" => {
                let body: Value = serde_json::from_slice(request.body).unwrap_or(Value::Null);
                self.deleted_secrets.retain(|_, until| now < *until);
                if body["Name"]
                    .as_str()
                    .is_some_and(|name| self.deleted_secrets.contains_key(name))
                {
                    return Decision::Answer(LayerError::new(
                        StatusCode::BAD_REQUEST,
                        "InvalidRequestException",
                        "You can't create this secret because a secret with this name is already scheduled for deletion.",
                    ));
                }
            }
            "s3" => {
                if let Some(error) = self.s3_before(request, now, &mut plan) {
                    return Decision::Answer(error);
                }
            }
            "dynamodb" => match self.dynamodb_before(request, now, &mut plan) {
                Some(Ok(error)) => return Decision::Answer(error),
                Some(Err(description)) => return Decision::Reply(description, "TableStatus DELETING"),
                None => {}
            },
            // sst/ion #373; terraform-provider-aws #14742 (§10 "stage settings").
            "apigateway"
                if b.no_logging_role
                    && matches!(request.operation, "CreateStage" | "UpdateStage")
                    && turns_on_logging(request.body) =>
            {
                return Decision::Answer(LayerError::new(
                    StatusCode::BAD_REQUEST,
                    "BadRequestException",
                    "CloudWatch Logs role ARN must be set in account settings to enable logging",
                ));
            }
            "apigateway" => {
                if b.api_conflicts
                    && let Some(api) = written_api(request)
                {
                    // terraform-provider-aws #18018, PR #29735, #37897, #40575 (§10).
                    let lock = format!("api:{api}");
                    if self.locks.get(&lock).is_some_and(|l| l.held(now)) {
                        return Decision::Answer(LayerError::new(
                            StatusCode::CONFLICT,
                            "ConflictException",
                            CONFLICT_MESSAGE,
                        ));
                    }
                    self.hold(&mut plan, vec![lock], b.timings.api_write);
                }
            }
            _ => {}
        }
        if b.small_pages {
            small_pages_request(request, &mut plan);
        }
        // General AWS idempotency guidance; terraform-provider-aws retry code (§10 "lost responses").
        if b.lost_create_responses
            && CREATES.contains(&(request.service, request.operation))
            && !self.lost.contains(&request.key)
        {
            plan.lose = true;
        }
        Decision::Forward(Box::new(plan))
    }

    /// Lambda control-plane quota (Lambda quotas page; aws-facts.md §11
    /// corrects §10): 15/s for the control plane, GetFunction 100/s,
    /// GetPolicy its own 15/s.
    fn lambda_quota(&mut self, operation: &str, now: Instant) -> Result<(), LayerError> {
        let bucket = match operation {
            "Invoke" => return Ok(()),
            "GetFunction" => self.lambda_reads.get_or_insert_with(|| Bucket::new(100.0, 100.0, now)),
            "GetPolicy" => self
                .lambda_policy_reads
                .get_or_insert_with(|| Bucket::new(15.0, 15.0, now)),
            _ => self.lambda_control.get_or_insert_with(|| Bucket::new(15.0, 15.0, now)),
        };
        bucket.take(now).map_err(|wait| LayerError {
            extra: Some(json!({ "Type": "User", "Reason": "CallerRateLimitExceeded" })),
            retry_after: Some(wait.as_secs_f64().ceil().max(1.0) as u64),
            ..LayerError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "TooManyRequestsException",
                "Rate exceeded",
            )
        })
    }

    fn lambda_before(&mut self, request: &RequestView, now: Instant, plan: &mut Plan) -> Option<LayerError> {
        let b = self.behaviours;
        match request.operation {
            "CreateFunction" => {
                let body: Value = serde_json::from_slice(request.body).unwrap_or(Value::Null);
                if b.role_propagation
                    && let Some(role_arn) = body["Role"].as_str()
                {
                    // IAM propagation, messages 1 and 2 (§8, §10; terraform-provider-aws
                    // internal/service/lambda/function.go).
                    let role = role_arn.rsplit('/').next().unwrap_or(role_arn);
                    if let Some(created) = self.roles.get(role) {
                        let age = now.saturating_duration_since(*created);
                        let window = b.timings.role_propagation;
                        let has_environment = body["Environment"]["Variables"]
                            .as_object()
                            .is_some_and(|variables| !variables.is_empty());
                        if age < window / 2 {
                            return Some(LayerError::lambda(
                                StatusCode::BAD_REQUEST,
                                "InvalidParameterValueException",
                                ROLE_MESSAGE,
                            ));
                        }
                        if age < window && has_environment {
                            return Some(LayerError::lambda(
                                StatusCode::BAD_REQUEST,
                                "InvalidParameterValueException",
                                kms_message(role_arn),
                            ));
                        }
                    }
                }
                if let Some(name) = body["FunctionName"].as_str() {
                    plan.function = Some(function_name_of(name));
                }
            }
            "CreateAlias" | "UpdateAlias" => {
                let name = path_function(request.uri)?;
                let body: Value = serde_json::from_slice(request.body).unwrap_or(Value::Null);
                if b.function_states
                    && let Some(version) = body["FunctionVersion"].as_str()
                    && let Some(state) = self.functions.get(&format!("{name}:{version}"))
                    && state.pending_until.is_some_and(|until| now < until)
                {
                    return Some(LayerError::lambda(
                        StatusCode::CONFLICT,
                        "ResourceConflictException",
                        format!(
                            "The operation cannot be performed at this time. \
                             The function version {version} is currently in the following state: Pending"
                        ),
                    ));
                }
            }
            "UpdateFunctionCode" | "UpdateFunctionConfiguration" | "PublishVersion" => {
                let name = path_function(request.uri)?;
                if b.function_states
                    && let Some(state) = self.functions.get(&name)
                {
                    // Lambda docs "functions-states"; botocore #2584 (§10).
                    if state.pending_until.is_some_and(|until| now < until) {
                        return Some(LayerError::lambda(
                            StatusCode::CONFLICT,
                            "ResourceConflictException",
                            "The operation cannot be performed at this time. \
                             The function is currently in the following state: Pending",
                        ));
                    }
                    if state.updating_until.is_some_and(|until| now < until) {
                        return Some(LayerError::lambda(
                            StatusCode::CONFLICT,
                            "ResourceConflictException",
                            format!(
                                "The operation cannot be performed at this time. \
                                 An update is in progress for resource: {}",
                                function_arn(&name)
                            ),
                        ));
                    }
                }
                plan.function = Some(name);
            }
            "GetFunction" | "GetFunctionConfiguration" | "DeleteFunction" => {
                // A version (`?Qualifier=3`) is tracked as `NAME:3`.
                let qualifier = request.uri.query().and_then(|query| {
                    query
                        .split('&')
                        .find_map(|pair| pair.strip_prefix("Qualifier="))
                        .filter(|q| q.chars().all(|c| c.is_ascii_digit()))
                });
                plan.function = path_function(request.uri).map(|name| match qualifier {
                    Some(version) => format!("{name}:{version}"),
                    None => name,
                });
            }
            _ => {}
        }
        None
    }

    /// `Some(Ok(error))`: answer the error; `Some(Err(description))`: answer
    /// DescribeTable with it.
    fn dynamodb_before(
        &mut self,
        request: &RequestView,
        now: Instant,
        plan: &mut Plan,
    ) -> Option<Result<LayerError, Value>> {
        let b = self.behaviours;
        let body: Value = serde_json::from_slice(request.body).unwrap_or(Value::Null);
        let operation = request.operation;
        self.creating.retain(|_, until| now < *until);
        self.deleting.retain(|_, (until, _)| now < *until);
        self.updating.retain(|_, (until, _)| now < *until);
        self.tag_lags.retain(|_, (until, _)| now < *until);
        self.tag_writes.retain(|_, until| now < *until);
        self.backfilling.retain(|_, (until, _)| now < *until);
        let tables = tables_of(operation, &body);
        plan.table = tables.first().cloned();
        if b.table_creating {
            // DynamoDB API reference; cortex #1369, cloud-custodian #3361/#3514 (§10).
            for table in &tables {
                if self.creating.contains_key(table) {
                    match operation {
                        // aws-controllers-k8s/dynamodb-controller docs/api-quirks (§11).
                        "DescribeTimeToLive" => return Some(Ok(ttl_while(table, "CREATING"))),
                        "UpdateTimeToLive" | "UpdateTable" | "DeleteTable" => {
                            return Some(Ok(still_in_use(table, "Table is being created")));
                        }
                        "ListTagsOfResource" | "TagResource" | "UntagResource" => {
                            let arn = body["ResourceArn"].as_str().unwrap_or_default();
                            return Some(Ok(LayerError::new(
                                StatusCode::BAD_REQUEST,
                                "ResourceNotFoundException",
                                format!("Requested resource not found: ResourcArn: {arn} not found"),
                            )));
                        }
                        op if ITEM_OPERATIONS.contains(&op) => {
                            return Some(Ok(LayerError::new(
                                StatusCode::BAD_REQUEST,
                                "ResourceNotFoundException",
                                "Requested resource not found",
                            )));
                        }
                        _ => {}
                    }
                }
                if self.updating.contains_key(table) {
                    // DynamoDB API reference, UpdateTable ("one global
                    // secondary index per operation"); the error as users
                    // report it: architect/architect #334, taoensso/faraday #80.
                    let index_change = body["GlobalSecondaryIndexUpdates"]
                        .as_array()
                        .is_some_and(|updates| !updates.is_empty());
                    match operation {
                        "UpdateTable" if index_change => {
                            return Some(Ok(one_index_change_at_a_time()));
                        }
                        "UpdateTable" | "DeleteTable" => {
                            return Some(Ok(still_in_use(table, "Table is being updated")));
                        }
                        _ => {}
                    }
                }
                if let Some((_, description)) = self.deleting.get(table) {
                    match operation {
                        "DescribeTable" => return Some(Err(json!({ "Table": description }))),
                        "DescribeTimeToLive" => return Some(Ok(ttl_while(table, "DELETING"))),
                        "CreateTable" | "UpdateTimeToLive" | "UpdateTable" | "DeleteTable" => {
                            return Some(Ok(still_in_use(table, "Table is being deleted")));
                        }
                        _ => {}
                    }
                }
            }
        }
        if b.table_tag_writes
            && let Some(table) = tables.first()
            && self.tag_writes.get(table).is_some_and(|until| now < *until)
        {
            // aws-controllers-k8s/dynamodb-controller docs/api-quirks, DDB-TABLE-103 (§11).
            match operation {
                "TagResource" | "UntagResource" => {
                    return Some(Ok(LayerError::new(
                        StatusCode::BAD_REQUEST,
                        "LimitExceededException",
                        format!("Subscriber limit exceeded: Table tags are being updated: {table}"),
                    )));
                }
                "DeleteTable" => {
                    return Some(Ok(still_in_use(table, "Table tags are being updated")));
                }
                _ => {}
            }
        }
        if b.index_backfill
            && let Some(table) = tables.first()
            && let Some((_, index)) = self.backfilling.get(table)
            && !self.updating.contains_key(table)
        {
            // aws-controllers-k8s/dynamodb-controller docs/api-quirks,
            // DDB-TABLE-148/150/159 (§11); DynamoDB developer guide, "Adding a
            // global secondary index": a backfilling index cannot be read.
            let index_change = body["GlobalSecondaryIndexUpdates"]
                .as_array()
                .is_some_and(|updates| !updates.is_empty());
            match operation {
                "UpdateTable" if index_change => {
                    return Some(Ok(one_index_change_at_a_time()));
                }
                "DeleteTable" => {
                    return Some(Ok(LayerError::new(
                        StatusCode::BAD_REQUEST,
                        "ResourceInUseException",
                        "Cannot delete table while indexes are being created, updated, or deleted",
                    )));
                }
                "Query" | "Scan" if body["IndexName"].as_str() == Some(index.as_str()) => {
                    return Some(Ok(LayerError::new(
                        StatusCode::BAD_REQUEST,
                        "ValidationException",
                        format!("Cannot read from backfilling global secondary index: {index}"),
                    )));
                }
                _ => {}
            }
        }
        if operation == "CreateTable"
            && let Some(table) = tables.first()
        {
            self.learn_key_schemas(table, &body);
        }
        if b.transaction_conflicts {
            // DynamoDB developer guide, transactions: conflict handling (§10 "DynamoDB transactions").
            self.locks.retain(|_, lock| lock.held(now));
            let items = self.written_items(operation, &body);
            let locks: Vec<String> = items
                .iter()
                .map(|written| format!("item:{}:{}", written.table, written.key))
                .collect();
            let conflicts: Vec<bool> = locks
                .iter()
                .map(|lock| self.locks.get(lock).is_some_and(|l| l.held(now)))
                .collect();
            if operation == "TransactWriteItems" {
                if conflicts.contains(&true) {
                    return Some(Ok(transaction_cancelled(&conflicts)));
                }
                // DynamoDB's own time for the transaction, not moto's: moto
                // answers one request at a time, and a transaction waiting
                // there behind others would hold its items far longer.
                let until = now + b.timings.transaction;
                for lock in locks {
                    let lock = self.locks.entry(lock).or_default();
                    lock.busy_until = Some(lock.busy_until.map_or(until, |held| held.max(until)));
                }
            } else if conflicts.contains(&true) {
                return Some(Ok(LayerError::new(
                    StatusCode::BAD_REQUEST,
                    "TransactionConflictException",
                    "Transaction is ongoing for the item",
                )));
            }
        }
        if b.gsi_lag
            && matches!(operation, "Query" | "Scan")
            && let (Some(table), Some(index)) = (tables.first(), body["IndexName"].as_str())
        {
            self.recent_writes.retain(|(_, until)| now < *until);
            self.old_images.retain(|(_, _, until)| now < *until);
            plan.hide_recent_writes_of = Some((table.clone(), index.to_string()));
            plan.index_selection = index_selection(operation, &body);
        }
        if b.gsi_lag {
            // §11 "GSI staleness": what a write moves or deletes stays under
            // its old index key for a while; its old image is read first.
            plan.read_old_images_of = self
                .written_items(operation, &body)
                .into_iter()
                .filter(|written| self.moves_in_an_index(written))
                .map(|written| (written.table, written.key))
                .collect();
        }
        if b.tag_lag
            && let Some(arn) = body["ResourceArn"].as_str()
        {
            // terraform-provider-aws PR #39326 (§10 "DynamoDB tags").
            match operation {
                "ListTagsOfResource" => plan.tags_override = self.tag_lags.get(arn).map(|(_, tags)| tags.clone()),
                "TagResource" | "UntagResource" if !self.tag_lags.contains_key(arn) => {
                    plan.snapshot_tags_of = Some(arn.to_string());
                }
                _ => {}
            }
        }
        None
    }

    /// Holds `locks` for a forwarded write.
    fn hold(&mut self, plan: &mut Plan, locks: Vec<String>, hold_for: Duration) {
        for lock in &locks {
            self.locks.entry(lock.clone()).or_default().active += 1;
        }
        plan.holds = locks;
        plan.hold_for = hold_for;
    }

    /// What a forwarded write holds while it is in flight.
    pub fn holds(plan: &Plan) -> Vec<String> {
        plan.holds.clone()
    }

    /// A write holding `locks` is no longer in flight: answered, or
    /// abandoned by a client that went away (a killed `up`), which must not
    /// hold them for ever.
    pub fn release(&mut self, locks: &[String]) {
        for name in locks {
            if let Some(lock) = self.locks.get_mut(name) {
                lock.active = lock.active.saturating_sub(1);
                if lock.active == 0 && lock.busy_until.is_none_or(|until| until <= Instant::now()) {
                    self.locks.remove(name);
                }
            }
        }
    }

    /// Looks at moto's answer to a forwarded request: remembers state,
    /// rewrites the answer, or loses it.
    pub fn after(&mut self, request: &RequestView, plan: Plan, status: StatusCode, body: &[u8]) -> After {
        let now = Instant::now();
        let b = self.behaviours;
        let success = status.is_success();
        if success {
            let held = (request.arrived + plan.hold_for).max(now);
            for name in &plan.holds {
                let lock = self.locks.entry(name.clone()).or_default();
                lock.busy_until = Some(lock.busy_until.map_or(held, |until| until.max(held)));
            }
        }
        let mut json: Option<Value> = None;
        let mut rewritten = false;
        let mut new_body = None;
        if success {
            let parsed = || serde_json::from_slice::<Value>(body).ok();
            match (request.service, request.operation) {
                ("iam", "CreateRole") if b.role_propagation => {
                    if let Some(role) = form_value(request.body, "RoleName") {
                        self.roles.insert(role, now);
                    }
                }
                ("iam", "PutRolePolicy") if b.permission_propagation => self.policy_changed(request, now),
                ("secretsmanager", "DeleteSecret") if b.secret_deletion => {
                    let body: Value = serde_json::from_slice(request.body).unwrap_or(Value::Null);
                    if body["ForceDeleteWithoutRecovery"] == json!(true)
                        && let Some(name) = parsed().and_then(|answer| answer["Name"].as_str().map(str::to_string))
                    {
                        self.deleted_secrets.insert(name, now + b.timings.secret_deletion);
                    }
                }
                ("apigateway", "CreateDomainName" | "UpdateDomainName") if b.certificate_release => {
                    let body: Value = serde_json::from_slice(request.body).unwrap_or(Value::Null);
                    let name = body["domainName"]
                        .as_str()
                        .map(str::to_string)
                        .or_else(|| request.uri.path().rsplit('/').next().map(percent_decode));
                    let certificates = body["domainNameConfigurations"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|c| c["certificateArn"].as_str().map(str::to_string))
                        .collect();
                    if let Some(name) = name {
                        self.domain_certificates.insert(name, certificates);
                    }
                }
                ("apigateway", "DeleteDomainName") if b.certificate_release => {
                    let name = request
                        .uri
                        .path()
                        .rsplit('/')
                        .next()
                        .map(percent_decode)
                        .unwrap_or_default();
                    for arn in self.domain_certificates.remove(&name).unwrap_or_default() {
                        self.released_certificates
                            .insert(arn, now + b.timings.certificate_release);
                    }
                }
                ("s3", "DeleteBucket") if b.bucket_name_release => {
                    let bucket = request.uri.path().trim_matches('/').to_string();
                    self.deleted_buckets.insert(bucket, now + b.timings.bucket_name_release);
                }
                ("monitoring", "PutMetricAlarm" | "DeleteAlarms" | "DescribeAlarms") if b.alarm_evaluation => {
                    new_body = self.alarms_after(request, body, now);
                }
                ("sns", "Subscribe" | "ListSubscriptions" | "ListSubscriptionsByTopic") if b.email_confirmation => {
                    new_body = email_subscriptions_pending(request, body);
                }
                ("lambda", operation) => {
                    if let Some(name) = &plan.function {
                        json = parsed();
                        rewritten = self.lambda_after(operation, name, json.as_mut(), now);
                    }
                }
                ("dynamodb", operation) => {
                    json = parsed();
                    rewritten = self.dynamodb_after(request, &plan, operation, json.as_mut(), now);
                }
                _ => {}
            }
        }
        if success && let Some(paging) = plan.page {
            match paging.format {
                PageFormat::Json { items, token } => {
                    if json.is_none() {
                        json = serde_json::from_slice(body).ok();
                    }
                    if let Some(value) = json.as_mut() {
                        page_json(value, items, token, paging.offset);
                        rewritten = true;
                    }
                }
                PageFormat::Query { list } => {
                    if let Some(paged) = std::str::from_utf8(body)
                        .ok()
                        .and_then(|xml| page_query_xml(xml, list, paging.offset))
                    {
                        new_body = Some(paged.into_bytes());
                    }
                }
                PageFormat::Cbor { items, token } => {
                    new_body = page_cbor(body, items, token, paging.offset);
                }
            }
        }
        if rewritten && let Some(value) = &json {
            new_body = Some(value.to_string().into_bytes());
        }
        let lost = plan.lose && success;
        if lost {
            self.lost.insert(request.key);
        }
        After { body: new_body, lost }
    }

    /// S3: names another account holds, names still being released after a
    /// DeleteBucket, conditional writes of a key that another one holds.
    fn s3_before(&mut self, request: &RequestView, now: Instant, plan: &mut Plan) -> Option<LayerError> {
        let b = self.behaviours;
        let path = request.uri.path().trim_start_matches('/');
        let bucket = path.split('/').next().unwrap_or_default();
        match request.operation {
            "CreateBucket" if self.taken_buckets.contains(bucket) => {
                return Some(LayerError::new(
                    StatusCode::CONFLICT,
                    "BucketAlreadyExists",
                    "The requested bucket name is not available. The bucket namespace is shared by all users \
                     of the system. Please select a different name and try again.",
                ));
            }
            "HeadBucket" | "GetBucketTagging" if self.taken_buckets.contains(bucket) => {
                return Some(LayerError::new(StatusCode::FORBIDDEN, "AccessDenied", "Access Denied"));
            }
            "CreateBucket" if b.bucket_name_release => {
                self.deleted_buckets.retain(|_, until| now < *until);
                if self.deleted_buckets.contains_key(bucket) {
                    return Some(LayerError::new(
                        StatusCode::CONFLICT,
                        "OperationAborted",
                        "A conflicting conditional operation is currently in progress against this resource. \
                         Please try again.",
                    ));
                }
            }
            "PutObject" | "DeleteObject" if b.s3_conditional_conflicts && request.conditional => {
                let lock = format!("s3:{path}");
                if self.locks.get(&lock).is_some_and(|l| l.held(now)) {
                    return Some(LayerError::new(
                        StatusCode::CONFLICT,
                        "ConditionalRequestConflict",
                        "A conflicting operation occurred. If using PutObject you can retry the request.",
                    ));
                }
                // Held from its arrival until its answer.
                self.hold(plan, vec![lock], Duration::ZERO);
            }
            _ => {}
        }
        None
    }

    /// Remembers new alarms and when they are first evaluated; a
    /// DescribeAlarms answer with those not evaluated yet INSUFFICIENT_DATA.
    fn alarms_after(&mut self, request: &RequestView, body: &[u8], now: Instant) -> Option<Vec<u8>> {
        let fields = cbor_map(request.body).unwrap_or_default();
        let text = |field: &str| {
            fields
                .iter()
                .find(|(key, _)| key.as_text() == Some(field))
                .and_then(|(_, value)| value.as_text().map(str::to_string))
        };
        match request.operation {
            "PutMetricAlarm" => {
                let until = now + self.behaviours.timings.alarm_evaluation;
                self.alarms.entry(text("AlarmName")?).or_insert(until);
                None
            }
            "DeleteAlarms" => {
                let names = fields.iter().find(|(key, _)| key.as_text() == Some("AlarmNames"))?;
                for name in names.1.as_array()?.iter().filter_map(|n| n.as_text()) {
                    self.alarms.remove(name);
                }
                None
            }
            _ => {
                let mut answer = cbor_map(body)?;
                let (_, alarms) = answer
                    .iter_mut()
                    .find(|(key, _)| key.as_text() == Some("MetricAlarms"))?;
                for alarm in alarms.as_array_mut()? {
                    let ciborium::Value::Map(alarm) = alarm else { continue };
                    let field = |name: &str| {
                        alarm
                            .iter()
                            .find(|(key, _)| key.as_text() == Some(name))
                            .and_then(|(_, value)| value.as_text().map(str::to_string))
                    };
                    // Moto's reason until a SetAlarmState (from any client) changes it.
                    let never_set = field("StateReason").as_deref() == Some(MOTO_NEW_ALARM_REASON);
                    let waiting = field("AlarmName")
                        .and_then(|name| self.alarms.get(&name).copied())
                        .is_some_and(|until| now < until);
                    if never_set && waiting {
                        for (key, value) in alarm.iter_mut() {
                            if key.as_text() == Some("StateValue") {
                                *value = ciborium::Value::Text("INSUFFICIENT_DATA".into());
                            }
                        }
                    }
                }
                let mut out = Vec::new();
                ciborium::into_writer(&ciborium::Value::Map(answer), &mut out).ok()?;
                Some(out)
            }
        }
    }

    /// Remembers and rewrites the function state; whether `json` changed.
    fn lambda_after(&mut self, operation: &str, name: &str, json: Option<&mut Value>, now: Instant) -> bool {
        let b = self.behaviours;
        match operation {
            "CreateFunction" if b.function_states => {
                self.functions.insert(
                    name.to_string(),
                    FunctionState {
                        pending_until: Some(now + b.timings.function_pending),
                        updating_until: None,
                        inactive: false,
                    },
                );
            }
            "UpdateFunctionCode" | "UpdateFunctionConfiguration" => {
                let tracked = self.functions.contains_key(name);
                if !b.function_states && !tracked {
                    return false;
                }
                let state = self.functions.entry(name.to_string()).or_default();
                if b.function_states {
                    state.updating_until = Some(now + b.timings.function_update);
                }
            }
            "PublishVersion" if b.function_states => {
                // A new version is Pending a moment, as a new function is.
                if let Some(version) = json.as_ref().and_then(|j| j["Version"].as_str()) {
                    let pending = FunctionState {
                        pending_until: Some(now + b.timings.function_pending),
                        ..FunctionState::default()
                    };
                    self.functions.insert(format!("{name}:{version}"), pending);
                }
                return false;
            }
            "DeleteFunction" => {
                self.functions
                    .retain(|key, _| key != name && !key.starts_with(&format!("{name}:")));
                return false;
            }
            _ => {}
        }
        let Some(state) = self.functions.get(name).copied() else {
            return false;
        };
        let Some(json) = json else { return false };
        let configuration = if operation == "GetFunction" {
            &mut json["Configuration"]
        } else {
            json
        };
        let Some(configuration) = configuration.as_object_mut() else {
            return false;
        };
        let pending = state.pending_until.is_some_and(|until| now < until);
        let updating = state.updating_until.is_some_and(|until| now < until);
        for field in [
            "StateReason",
            "StateReasonCode",
            "LastUpdateStatusReason",
            "LastUpdateStatusReasonCode",
        ] {
            configuration.remove(field);
        }
        if pending {
            configuration.insert("State".into(), json!("Pending"));
            configuration.insert("StateReason".into(), json!("The function is being created."));
            configuration.insert("StateReasonCode".into(), json!("Creating"));
            configuration.insert("LastUpdateStatus".into(), json!("InProgress"));
            configuration.insert("LastUpdateStatusReason".into(), json!("The function is being created."));
            configuration.insert("LastUpdateStatusReasonCode".into(), json!("Creating"));
            return true;
        }
        if state.inactive {
            configuration.insert("State".into(), json!("Inactive"));
            configuration.insert(
                "StateReason".into(),
                json!("The function is inactive because it has not been invoked for an extended period."),
            );
            configuration.insert("StateReasonCode".into(), json!("Idle"));
        } else {
            configuration.insert("State".into(), json!("Active"));
        }
        if updating {
            configuration.insert("LastUpdateStatus".into(), json!("InProgress"));
            configuration.insert("LastUpdateStatusReason".into(), json!("The function is being updated."));
        } else {
            configuration.insert("LastUpdateStatus".into(), json!("Successful"));
        }
        true
    }

    /// Remembers and rewrites table states and tags; whether `json` changed.
    fn dynamodb_after(
        &mut self,
        request: &RequestView,
        plan: &Plan,
        operation: &str,
        json: Option<&mut Value>,
        now: Instant,
    ) -> bool {
        let b = self.behaviours;
        let Some(json) = json else { return false };
        let request_body: Value = serde_json::from_slice(request.body).unwrap_or(Value::Null);
        match operation {
            "CreateTable" => {
                let Some(table) = plan.table.clone() else { return false };
                if b.tag_lag
                    && request_body["Tags"].as_array().is_some_and(|tags| !tags.is_empty())
                    && let Some(arn) = json["TableDescription"]["TableArn"].as_str()
                {
                    self.tag_lags.insert(arn.to_string(), (now + b.timings.tag_lag, vec![]));
                }
                if b.table_creating {
                    self.creating.insert(table, now + b.timings.table_creating);
                    set_table_status(&mut json["TableDescription"], "CREATING");
                    return true;
                }
            }
            "UpdateTable" if b.table_creating => {
                let Some(table) = plan.table.clone() else { return false };
                let updates = request_body["GlobalSecondaryIndexUpdates"].as_array();
                if updates.is_none_or(|updates| updates.is_empty()) {
                    return false;
                }
                let created = updates
                    .into_iter()
                    .flatten()
                    .find_map(|u| u["Create"]["IndexName"].as_str().map(str::to_string));
                let description = &mut json["TableDescription"];
                set_updating(description, created.as_deref());
                let built = now + b.timings.table_creating;
                if b.index_backfill
                    && let Some(index) = &created
                {
                    self.backfilling
                        .insert(table.clone(), (built + b.timings.index_backfill, index.clone()));
                }
                self.updating.insert(table, (built, created));
                return true;
            }
            "DescribeTable" => {
                if let Some(table) = &plan.table {
                    self.learn_key_schemas(table, &json["Table"]);
                }
                if let Some(table) = &plan.table
                    && let Some((until, created)) = self.updating.get(table)
                    && now < *until
                {
                    set_updating(&mut json["Table"], created.as_deref());
                    return true;
                }
                if let Some(table) = &plan.table
                    && self.creating.get(table).is_some_and(|until| now < *until)
                {
                    set_table_status(&mut json["Table"], "CREATING");
                    return true;
                }
                if let Some(table) = &plan.table
                    && let Some((until, index)) = self.backfilling.get(table)
                    && now < *until
                {
                    set_backfilling(&mut json["Table"], index);
                    return true;
                }
            }
            "DeleteTable" if b.table_creating => {
                let Some(table) = plan.table.clone() else { return false };
                self.creating.remove(&table);
                self.backfilling.remove(&table);
                let description = &mut json["TableDescription"];
                if description.is_object() {
                    description["TableStatus"] = json!("DELETING");
                    self.deleting
                        .insert(table, (now + b.timings.table_deleting, description.clone()));
                    return true;
                }
            }
            "TagResource" | "UntagResource" if b.table_tag_writes || b.tag_lag => {
                if b.table_tag_writes
                    && let Some(table) = &plan.table
                {
                    self.tag_writes.insert(table.clone(), now + b.timings.tag_write);
                }
                if !b.tag_lag {
                    return false;
                }
                if let Some(arn) = request_body["ResourceArn"].as_str() {
                    let snapshot = match self.tag_lags.get(arn) {
                        Some((_, tags)) => tags.clone(),
                        None => plan.snapshot.clone().unwrap_or_default(),
                    };
                    self.tag_lags
                        .insert(arn.to_string(), (now + b.timings.tag_lag, snapshot));
                }
            }
            "PutItem" | "UpdateItem" | "DeleteItem" | "TransactWriteItems" | "BatchWriteItem" if b.gsi_lag => {
                for written in self.written_items(operation, &request_body) {
                    self.recent_writes.push((written, now + b.timings.gsi_lag));
                }
                for (table, image) in &plan.old_images {
                    self.old_images
                        .push((table.clone(), image.clone(), now + b.timings.gsi_lag));
                }
            }
            "Query" | "Scan" => {
                if let Some((table, index)) = &plan.hide_recent_writes_of {
                    let hidden = self.hide_recent_writes(table, index, json, now);
                    let added = match &plan.index_selection {
                        Some(selection) => self.add_old_images(table, index, selection, json, now),
                        None => false,
                    };
                    return hidden || added;
                }
            }
            "ListTagsOfResource" => {
                if let Some(tags) = &plan.tags_override {
                    json["Tags"] = Value::Array(tags.clone());
                    if let Some(object) = json.as_object_mut() {
                        object.remove("NextToken");
                    }
                    return true;
                }
            }
            _ => {}
        }
        false
    }
}

// --- aws-facts.md §11 "permissions right after `up`" ---------------------------------

impl LayerState {
    /// Remembers a PutRolePolicy: its role's calls are refused for a while.
    fn policy_changed(&mut self, request: &RequestView, now: Instant) {
        if let Some(role) = form_value(request.body, "RoleName") {
            self.policy_change = Some((role, now + self.behaviours.timings.permission_propagation));
        }
    }

    /// A DynamoDB item call of a role's session while the last policy
    /// change propagates: IAM "changes not always immediately visible";
    /// DataBiosphere/azul #8301, anomalyco/sst #6248 (aws-facts.md §11).
    fn refused_while_policy_propagates(&mut self, request: &RequestView, now: Instant) -> Option<LayerError> {
        let refused = match request.service {
            "dynamodb" => ITEM_OPERATIONS.contains(&request.operation),
            "secretsmanager" => request.operation == "GetSecretValue",
            _ => false,
        };
        if !self.behaviours.permission_propagation || !request.role_session || !refused {
            return None;
        }
        let (role, until) = self.policy_change.as_ref()?;
        if now >= *until {
            return None;
        }
        let body: Value = serde_json::from_slice(request.body).unwrap_or(Value::Null);
        if request.service == "secretsmanager" {
            let secret = body["SecretId"].as_str().unwrap_or_default();
            return Some(LayerError::new(
                StatusCode::BAD_REQUEST,
                "AccessDeniedException",
                format!(
                    "User: arn:aws:sts::{ACCOUNT_ID}:assumed-role/{role}/function is not authorized to perform: \
                     secretsmanager:GetSecretValue on resource: {secret} because no identity-based policy allows \
                     the secretsmanager:GetSecretValue action"
                ),
            ));
        }
        let table = tables_of(request.operation, &body)
            .into_iter()
            .next()
            .unwrap_or_default();
        let action = iam_action_of(request.operation, &body);
        Some(LayerError::new(
            StatusCode::BAD_REQUEST,
            "AccessDeniedException",
            format!(
                "User: arn:aws:sts::{ACCOUNT_ID}:assumed-role/{role}/function is not authorized to perform: \
                 dynamodb:{action} on resource: arn:aws:dynamodb:{REGION}:{ACCOUNT_ID}:table/{table} \
                 because no identity-based policy allows the dynamodb:{action} action"
            ),
        ))
    }
}

/// The IAM action a DynamoDB call is authorised by: its own, but a
/// TransactWriteItems by its items' (the first one's here; DynamoDB
/// developer guide, IAM with transactions).
fn iam_action_of(operation: &str, body: &Value) -> String {
    if operation != "TransactWriteItems" {
        return operation.to_string();
    }
    body["TransactItems"][0]
        .as_object()
        .and_then(|item| item.keys().next())
        .map(|kind| match kind.as_str() {
            "ConditionCheck" => "ConditionCheckItem".to_string(),
            kind => format!("{kind}Item"),
        })
        .unwrap_or_else(|| operation.to_string())
}

/// An item a DynamoDB write changes.
#[derive(Debug)]
struct Written {
    table: String,
    key: Value,
    /// The attributes it changes: `None` for all (a put).
    attributes: Option<Vec<String>>,
    /// Whether it deletes the item.
    deletes: bool,
}

/// The attributes an update expression names (`#name` resolved through
/// `names`); values (`:v`), clauses and functions are not attributes.
fn updated_attributes(expression: &str, names: &Value) -> Vec<String> {
    const WORDS: &[&str] = &["set", "remove", "add", "delete", "if_not_exists", "list_append"];
    expression
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '#' || c == ':'))
        .filter(|token| !token.is_empty() && !token.starts_with(':'))
        .filter(|token| !WORDS.contains(&token.to_ascii_lowercase().as_str()))
        .filter(|token| !token.chars().all(|c| c.is_ascii_digit()))
        .map(|token| match token.strip_prefix('#') {
            Some(_) => names[token].as_str().unwrap_or(token).to_string(),
            None => token.to_string(),
        })
        .collect()
}

impl LayerState {
    /// The table's key and its global secondary indexes' keys, from a
    /// CreateTable request or a DescribeTable answer's `Table`.
    fn learn_key_schemas(&mut self, table: &str, description: &Value) {
        let names = |key_schema: &Value| -> Vec<String> {
            key_schema
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|element| element["AttributeName"].as_str().map(String::from))
                .collect()
        };
        let key = names(&description["KeySchema"]);
        if !key.is_empty() {
            self.key_schemas.insert(table.to_string(), key);
        }
        for index in description["GlobalSecondaryIndexes"].as_array().into_iter().flatten() {
            if let Some(name) = index["IndexName"].as_str() {
                let id = (table.to_string(), name.to_string());
                self.index_keys.insert(id.clone(), names(&index["KeySchema"]));
                let projection = &index["Projection"];
                let projected = match projection["ProjectionType"].as_str() {
                    Some("ALL") => None,
                    _ => Some(
                        projection["NonKeyAttributes"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(|a| a.as_str().map(String::from))
                            .collect(),
                    ),
                };
                self.index_projections.insert(id, projected);
            }
        }
    }

    /// The items a DynamoDB write changes. The key of a put item is cut to
    /// the table's key schema when the layer knows it.
    fn written_items(&self, operation: &str, body: &Value) -> Vec<Written> {
        let written = |table: String, kind: &str, action: &Value| -> Option<Written> {
            let (key, attributes) = match kind {
                "Put" => {
                    let item = action["Item"].as_object()?;
                    let key = match self.key_schemas.get(&table) {
                        Some(names) => Value::Object(
                            item.iter()
                                .filter(|(name, _)| names.contains(name))
                                .map(|(name, value)| (name.clone(), value.clone()))
                                .collect(),
                        ),
                        None => Value::Object(item.clone()),
                    };
                    (key, None)
                }
                "Update" => {
                    let expression = action["UpdateExpression"].as_str().unwrap_or_default();
                    let attributes = updated_attributes(expression, &action["ExpressionAttributeNames"]);
                    (action["Key"].clone(), Some(attributes))
                }
                _ => (action["Key"].clone(), Some(vec![])),
            };
            key.is_object().then_some(Written {
                table,
                key,
                attributes,
                deletes: kind == "Delete",
            })
        };
        let mut items = Vec::new();
        match operation {
            "PutItem" | "UpdateItem" | "DeleteItem" => {
                if let Some(table) = body["TableName"].as_str().map(table_name_of) {
                    let kind = operation.trim_end_matches("Item");
                    items.extend(written(table, kind, body));
                }
            }
            "TransactWriteItems" => {
                for entry in body["TransactItems"].as_array().into_iter().flatten() {
                    let Some((kind, action)) = entry.as_object().and_then(|entry| entry.iter().next()) else {
                        continue;
                    };
                    if let Some(table) = action["TableName"].as_str().map(table_name_of) {
                        items.extend(written(table, kind, action));
                    }
                }
            }
            "BatchWriteItem" => {
                for (table, requests) in body["RequestItems"].as_object().into_iter().flatten() {
                    for request in requests.as_array().into_iter().flatten() {
                        let (kind, action) = if request["PutRequest"].is_object() {
                            ("Put", &request["PutRequest"])
                        } else {
                            ("Delete", &request["DeleteRequest"])
                        };
                        items.extend(written(table_name_of(table), kind, action));
                    }
                }
            }
            _ => {}
        }
        items
    }

    /// Takes the items of `table` written in the last `gsi_lag` that changed
    /// `index`'s key out of that index's Query or Scan answer; whether
    /// `json` changed.
    fn hide_recent_writes(&self, table: &str, index: &str, json: &mut Value, now: Instant) -> bool {
        let index_keys = self.index_keys.get(&(table.to_string(), index.to_string()));
        let changes_index = |written: &Written| match (&written.attributes, index_keys) {
            (Some(attributes), Some(keys)) => attributes.iter().any(|a| keys.contains(a)),
            _ => true,
        };
        let recent: Vec<&Value> = self
            .recent_writes
            .iter()
            .filter(|(written, until)| written.table == table && now < *until && changes_index(written))
            .map(|(written, _)| &written.key)
            .collect();
        let Some(items) = json["Items"].as_array_mut() else {
            return false;
        };
        let before = items.len();
        // An index answer holds the table's key attributes of every item.
        items.retain(|item| {
            !recent.iter().any(|key| {
                key.as_object()
                    .is_some_and(|key| key.iter().all(|(name, value)| item.get(name) == Some(value)))
            })
        });
        let count = items.len();
        if count == before {
            return false;
        }
        json["Count"] = json!(count);
        true
    }

    /// Whether a write may take its item away from an index key: a put or
    /// a delete, or an update of an index key attribute, on a table with
    /// indexes whose key the layer knows.
    fn moves_in_an_index(&self, written: &Written) -> bool {
        if !self.key_schemas.contains_key(&written.table) {
            return false;
        }
        self.index_keys
            .iter()
            .filter(|((table, _), _)| *table == written.table)
            .any(|(_, keys)| match &written.attributes {
                _ if written.deletes => true,
                None => true,
                Some(attributes) => attributes.iter().any(|a| keys.contains(a)),
            })
    }

    /// Adds to `table`'s `index` answer the old images of items moved or
    /// deleted lately that `selection` selects, as the index projects them
    /// (each item once); whether `json` changed.
    fn add_old_images(
        &self,
        table: &str,
        index: &str,
        selection: &[(String, Value)],
        json: &mut Value,
        now: Instant,
    ) -> bool {
        let id = (table.to_string(), index.to_string());
        let (Some(index_key), Some(projection), Some(table_key)) = (
            self.index_keys.get(&id),
            self.index_projections.get(&id),
            self.key_schemas.get(table),
        ) else {
            return false;
        };
        let Some(items) = json["Items"].as_array_mut() else {
            return false;
        };
        let same_item = |a: &Value, b: &Value| table_key.iter().all(|name| a.get(name) == b.get(name));
        let before = items.len();
        for (_, image, _) in self
            .old_images
            .iter()
            .filter(|(t, _, until)| t == table && now < *until)
        {
            let in_index = index_key.iter().all(|name| image.get(name).is_some());
            let selected = selection.iter().all(|(name, value)| image.get(name) == Some(value));
            if !in_index || !selected || items.iter().any(|item| same_item(item, image)) {
                continue;
            }
            let projected: serde_json::Map<String, Value> = image
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(name, _)| {
                    table_key.contains(name)
                        || index_key.contains(name)
                        || projection.as_ref().is_none_or(|extra| extra.contains(name))
                })
                .map(|(name, value)| (name.clone(), value.clone()))
                .collect();
            items.push(Value::Object(projected));
        }
        let count = items.len();
        if count == before {
            return false;
        }
        json["Count"] = json!(count);
        json["ScannedCount"] = json!(count);
        true
    }
}

/// The equalities (attribute, value) an index Query's key condition or an
/// index Scan selects by; `None` when the layer cannot evaluate them (a
/// range condition, a filter).
fn index_selection(operation: &str, body: &Value) -> Option<Vec<(String, Value)>> {
    if body.get("FilterExpression").is_some() || body.get("ScanFilter").is_some() {
        return None;
    }
    if operation == "Scan" {
        return Some(vec![]);
    }
    let names = &body["ExpressionAttributeNames"];
    let values = &body["ExpressionAttributeValues"];
    body["KeyConditionExpression"]
        .as_str()?
        .split(" AND ")
        .map(|clause| {
            let (name, value) = clause.split_once('=')?;
            let (name, value) = (name.trim(), value.trim());
            if name.contains(['<', '>', '(', ' ']) || !value.starts_with(':') || value.contains(' ') {
                return None;
            }
            let name = match name.starts_with('#') {
                true => names[name].as_str()?.to_string(),
                false => name.to_string(),
            };
            Some((name, values.get(value)?.clone()))
        })
        .collect()
}

/// DynamoDB's answer to a transaction cancelled for a conflict on the items
/// marked true (API reference, TransactWriteItems: CancellationReasons).
fn transaction_cancelled(conflicts: &[bool]) -> LayerError {
    let reasons: Vec<Value> = conflicts
        .iter()
        .map(|&conflict| match conflict {
            true => json!({ "Code": "TransactionConflict", "Message": "Transaction is ongoing for the item" }),
            false => json!({ "Code": "None" }),
        })
        .collect();
    let codes: Vec<&str> = conflicts
        .iter()
        .map(|&c| if c { "TransactionConflict" } else { "None" })
        .collect();
    LayerError {
        extra: Some(json!({ "CancellationReasons": reasons })),
        ..LayerError::new(
            StatusCode::BAD_REQUEST,
            "TransactionCanceledException",
            format!(
                "Transaction cancelled, please refer cancellation reasons for specific reasons [{}]",
                codes.join(", ")
            ),
        )
    }
}

fn set_table_status(description: &mut Value, status: &str) {
    if !description.is_object() {
        return;
    }
    description["TableStatus"] = json!(status);
    if let Some(indexes) = description["GlobalSecondaryIndexes"].as_array_mut() {
        for index in indexes {
            index["IndexStatus"] = json!(status);
        }
    }
}

/// A table building index `created` (or deleting one): `UPDATING`, the new
/// index `CREATING` and backfilling.
fn set_updating(description: &mut Value, created: Option<&str>) {
    if !description.is_object() {
        return;
    }
    description["TableStatus"] = json!("UPDATING");
    if let Some(indexes) = description["GlobalSecondaryIndexes"].as_array_mut() {
        for index in indexes {
            if created.is_some() && index["IndexName"].as_str() == created {
                index["IndexStatus"] = json!("CREATING");
                index["Backfilling"] = json!(true);
            }
        }
    }
}

/// A table ACTIVE whose index `index` is still backfilling.
fn set_backfilling(description: &mut Value, index: &str) {
    if let Some(indexes) = description["GlobalSecondaryIndexes"].as_array_mut() {
        for described in indexes {
            if described["IndexName"].as_str() == Some(index) {
                described["IndexStatus"] = json!("CREATING");
                described["Backfilling"] = json!(true);
            }
        }
    }
}

/// DescribeTimeToLive's answer for a table that is not ACTIVE or UPDATING.
/// DynamoDB's answer to a change of a table that is busy `why`.
fn still_in_use(table: &str, why: &str) -> LayerError {
    LayerError::new(
        StatusCode::BAD_REQUEST,
        "ResourceInUseException",
        format!("Attempt to change a resource which is still in use: {why}: {table}"),
    )
}

/// DynamoDB's answer to an index change while another is under way.
fn one_index_change_at_a_time() -> LayerError {
    LayerError::new(
        StatusCode::BAD_REQUEST,
        "LimitExceededException",
        "Subscriber limit exceeded: Only 1 online index can be created or deleted simultaneously per table",
    )
}

fn ttl_while(table: &str, status: &str) -> LayerError {
    LayerError::new(
        StatusCode::BAD_REQUEST,
        "ValidationException",
        format!(
            "Cannot describe time to live while table is in {status} state: Current table state is {status} ({table})"
        ),
    )
}

/// Whether a CreateStage / UpdateStage body turns on execution or access logging.
fn turns_on_logging(body: &[u8]) -> bool {
    let body: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let logs = |settings: &Value| matches!(settings["loggingLevel"].as_str(), Some("ERROR" | "INFO"));
    logs(&body["defaultRouteSettings"])
        || body["routeSettings"]
            .as_object()
            .is_some_and(|routes| routes.values().any(logs))
        || body["accessLogSettings"]["destinationArn"].is_string()
}

/// The tables a DynamoDB request names (`TableName` may be an ARN).
fn tables_of(operation: &str, body: &Value) -> Vec<String> {
    let mut tables = Vec::new();
    if let Some(name) = body["TableName"].as_str() {
        tables.push(table_name_of(name));
    }
    if let Some(arn) = body["ResourceArn"].as_str() {
        tables.push(table_name_of(arn));
    }
    if let Some(items) = body["RequestItems"].as_object() {
        tables.extend(items.keys().map(|name| table_name_of(name)));
    }
    if operation.starts_with("Transact")
        && let Some(items) = body["TransactItems"].as_array()
    {
        for item in items {
            if let Some(item) = item.as_object() {
                for action in item.values() {
                    if let Some(name) = action["TableName"].as_str() {
                        tables.push(table_name_of(name));
                    }
                }
            }
        }
    }
    tables
}

/// `arn:aws:dynamodb:…:table/NAME[/…]` → `NAME`; a name stays.
fn table_name_of(name_or_arn: &str) -> String {
    match name_or_arn.split_once(":table/") {
        Some((_, rest)) => rest.split('/').next().unwrap_or(rest).to_string(),
        None => name_or_arn.to_string(),
    }
}

/// A Lambda function name from a name, a (partial) ARN, with a qualifier or not.
fn function_name_of(name_or_arn: &str) -> String {
    match name_or_arn.split_once("function:") {
        Some((_, rest)) => rest.split(':').next().unwrap_or(rest).to_string(),
        None => name_or_arn.to_string(),
    }
}

/// The function of a `/2015-03-31/functions/{name}/…` path, URL-decoded.
fn path_function(uri: &Uri) -> Option<String> {
    let segment = uri.path().split('/').nth(3)?;
    Some(function_name_of(&percent_decode(segment)))
}

fn percent_decode(text: &str) -> String {
    percent_encoding::percent_decode_str(text)
        .decode_utf8_lossy()
        .into_owned()
}

/// A URL-decoded value of an `application/x-www-form-urlencoded` body.
fn form_value(form: &[u8], key: &str) -> Option<String> {
    let form = std::str::from_utf8(form).ok()?;
    form.split('&').find_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        (name == key).then(|| percent_decode(&value.replace('+', " ")))
    })
}

/// The API a write to API Gateway v2 changes: POST/PATCH/PUT/DELETE under
/// `/v2/apis/{id}/…`, and PATCH/PUT/DELETE of `/v2/apis/{id}`.
fn written_api(request: &RequestView) -> Option<String> {
    if !matches!(
        *request.method,
        Method::POST | Method::PATCH | Method::PUT | Method::DELETE
    ) {
        return None;
    }
    let segments: Vec<&str> = request.uri.path().trim_end_matches('/').split('/').collect();
    // "", "v2", "apis", id, …
    (segments.len() >= 4 && segments[1] == "v2" && segments[2] == "apis" && !segments[3].is_empty())
        .then(|| segments[3].to_string())
}

/// The offset a continuation token of ours stands for.
fn token_offset(token: &str) -> Option<usize> {
    token.strip_prefix(TOKEN_PREFIX)?.parse().ok()
}

/// Plans `small_pages` for the list calls chatctl uses: takes the paging
/// parameters out of the request (moto then answers the full list), and
/// remembers which page to cut. A token the proxy did not issue leaves the
/// request alone. ("pagination" row of §10: SDK docs of each operation; IAM
/// "might return fewer results, even when there are more results available".)
fn small_pages_request(request: &RequestView, plan: &mut Plan) {
    let (format, token_field, drop): (PageFormat, &str, &[&str]) = match (request.service, request.operation) {
        ("apigateway", "GetApis" | "GetRoutes" | "GetIntegrations" | "GetAuthorizers") => {
            let mut offset = 0;
            let mut kept = Vec::new();
            for pair in request.uri.query().unwrap_or_default().split('&') {
                let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
                match name {
                    "nextToken" => match token_offset(&percent_decode(value)) {
                        Some(at) => offset = at,
                        None => return,
                    },
                    "maxResults" | "" => {}
                    _ => kept.push(pair),
                }
            }
            let path = request.uri.path();
            plan.new_path_and_query = Some(if kept.is_empty() {
                path.to_string()
            } else {
                format!("{path}?{}", kept.join("&"))
            });
            plan.page = Some(Paging {
                format: PageFormat::Json {
                    items: "items",
                    token: "nextToken",
                },
                offset,
            });
            return;
        }
        ("dynamodb", "ListTagsOfResource") => (
            PageFormat::Json {
                items: "Tags",
                token: "NextToken",
            },
            "NextToken",
            &[],
        ),
        // CloudWatch API reference, GetMetricData: "NextToken … to
        // retrieve the next set of data points" (results with more points
        // than fit come in pages).
        ("monitoring", "GetMetricData") => {
            let Ok(ciborium::Value::Map(entries)) = ciborium::from_reader::<ciborium::Value, _>(request.body) else {
                return;
            };
            let mut offset = 0;
            let mut kept = Vec::new();
            for (key, value) in entries {
                match (key.as_text(), value.as_text()) {
                    (Some("NextToken"), Some(token)) => match token_offset(token) {
                        Some(at) => offset = at,
                        None => return,
                    },
                    (Some("MaxDatapoints"), _) => {}
                    _ => kept.push((key, value)),
                }
            }
            let mut body = Vec::new();
            if ciborium::into_writer(&ciborium::Value::Map(kept), &mut body).is_err() {
                return;
            }
            plan.new_body = Some(body);
            plan.page = Some(Paging {
                format: PageFormat::Cbor {
                    items: "MetricDataResults",
                    token: "NextToken",
                },
                offset,
            });
            return;
        }
        ("logs", "DescribeLogGroups") => (
            PageFormat::Json {
                items: "logGroups",
                token: "nextToken",
            },
            "nextToken",
            &["limit"],
        ),
        ("logs", "FilterLogEvents") => (
            PageFormat::Json {
                items: "events",
                token: "nextToken",
            },
            "nextToken",
            &["limit"],
        ),
        ("iam", "ListRolePolicies" | "ListAttachedRolePolicies") => {
            let list = if request.operation == "ListRolePolicies" {
                "PolicyNames"
            } else {
                "AttachedPolicies"
            };
            let Ok(form) = std::str::from_utf8(request.body) else {
                return;
            };
            let mut offset = 0;
            let mut kept = Vec::new();
            for pair in form.split('&') {
                let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
                match name {
                    "Marker" => match token_offset(&percent_decode(value)) {
                        Some(at) => offset = at,
                        None => return,
                    },
                    "MaxItems" => {}
                    _ => kept.push(pair),
                }
            }
            plan.new_body = Some(kept.join("&").into_bytes());
            plan.page = Some(Paging {
                format: PageFormat::Query { list },
                offset,
            });
            return;
        }
        _ => return,
    };
    let Ok(Value::Object(mut body)) = serde_json::from_slice::<Value>(request.body) else {
        return;
    };
    let offset = match body.remove(token_field) {
        Some(Value::String(token)) => match token_offset(&token) {
            Some(at) => at,
            None => return,
        },
        _ => 0,
    };
    for field in drop {
        body.remove(*field);
    }
    plan.new_body = Some(Value::Object(body).to_string().into_bytes());
    plan.page = Some(Paging { format, offset });
}

/// Cuts page `offset..offset + PAGE_SIZE` of `value[items]`, with our token
/// in `value[token]` when more follow.
fn page_json(value: &mut Value, items: &str, token: &str, offset: usize) {
    let Some(object) = value.as_object_mut() else { return };
    object.remove(token);
    let Some(Value::Array(all)) = object.get_mut(items) else {
        return;
    };
    let total = all.len();
    let page: Vec<Value> = all.drain(..).skip(offset).take(PAGE_SIZE).collect();
    *all = page;
    if offset + PAGE_SIZE < total {
        object.insert(token.into(), json!(format!("{TOKEN_PREFIX}{}", offset + PAGE_SIZE)));
    }
}

/// Cuts page `offset..offset + PAGE_SIZE` of a CBOR answer's `items`, with
/// our token in `token` when more follow; `None` when it is not such a map.
fn page_cbor(body: &[u8], items: &str, token: &str, offset: usize) -> Option<Vec<u8>> {
    let ciborium::Value::Map(entries) = ciborium::from_reader::<ciborium::Value, _>(body).ok()? else {
        return None;
    };
    let mut paged = Vec::new();
    let mut more = false;
    for (key, value) in entries {
        match (key.as_text(), value) {
            (Some(name), _) if name == token => {}
            (Some(name), ciborium::Value::Array(all)) if name == items => {
                more = offset + PAGE_SIZE < all.len();
                let page = all.into_iter().skip(offset).take(PAGE_SIZE).collect();
                paged.push((key, ciborium::Value::Array(page)));
            }
            (_, value) => paged.push((key, value)),
        }
    }
    if more {
        let next = format!("{TOKEN_PREFIX}{}", offset + PAGE_SIZE);
        paged.push((ciborium::Value::Text(token.into()), ciborium::Value::Text(next)));
    }
    let mut out = Vec::new();
    ciborium::into_writer(&ciborium::Value::Map(paged), &mut out).ok()?;
    Some(out)
}

/// The StateReason moto gives a new alarm.
const MOTO_NEW_ALARM_REASON: &str = "Unchecked: Initial alarm creation";

/// A CBOR map's entries; `None` when `body` is not one.
fn cbor_map(body: &[u8]) -> Option<Vec<(ciborium::Value, ciborium::Value)>> {
    match ciborium::from_reader::<ciborium::Value, _>(body).ok()? {
        ciborium::Value::Map(entries) => Some(entries),
        _ => None,
    }
}

/// SNS's answers as an email subscription nobody confirmed gives them: a
/// Subscribe of an email address answers `pending confirmation` (unless it
/// asked for the ARN), a list shows `PendingConfirmation` for each email
/// subscription. `None`: nothing to change.
fn email_subscriptions_pending(request: &RequestView, body: &[u8]) -> Option<Vec<u8>> {
    let xml = std::str::from_utf8(body).ok()?;
    let set_arn = |xml: &str, arn: &str| -> Option<String> {
        let start = xml.find("<SubscriptionArn>")? + "<SubscriptionArn>".len();
        let end = start + xml[start..].find("</SubscriptionArn>")?;
        Some(format!("{}{arn}{}", &xml[..start], &xml[end..]))
    };
    if request.operation == "Subscribe" {
        let email = form_value(request.body, "Protocol").as_deref() == Some("email");
        let wants_arn = form_value(request.body, "ReturnSubscriptionArn").as_deref() == Some("true");
        return (email && !wants_arn)
            .then(|| set_arn(xml, "pending confirmation"))
            .flatten()
            .map(String::into_bytes);
    }
    let mut out = String::with_capacity(xml.len());
    let mut rest = xml;
    while let Some(at) = rest.find("<member>") {
        let stop = rest[at..].find("</member>")? + at + "</member>".len();
        let member = &rest[at..stop];
        out.push_str(&rest[..at]);
        if member.contains("<Protocol>email</Protocol>") {
            out.push_str(&set_arn(member, "PendingConfirmation")?);
        } else {
            out.push_str(member);
        }
        rest = &rest[stop..];
    }
    out.push_str(rest);
    Some(out.into_bytes())
}

/// Cuts a page of the `<member>`s of `<list>` in an awsQuery answer and sets
/// `IsTruncated` and `Marker`. `None` when the XML is not as expected.
fn page_query_xml(xml: &str, list: &str, offset: usize) -> Option<String> {
    let open = format!("<{list}>");
    let close = format!("</{list}>");
    let (start, end) = match xml.find(&open) {
        Some(start) => (
            start + open.len(),
            start + open.len() + xml[start + open.len()..].find(&close)?,
        ),
        // `<list/>`: no members, nothing to cut.
        None if xml.contains(&format!("<{list}/>")) => return Some(xml.to_string()),
        None => return None,
    };
    let mut members = Vec::new();
    let mut rest = &xml[start..end];
    while let Some(at) = rest.find("<member>") {
        let stop = rest[at..].find("</member>")? + at + "</member>".len();
        members.push(&rest[at..stop]);
        rest = &rest[stop..];
    }
    let total = members.len();
    let page: String = members.into_iter().skip(offset).take(PAGE_SIZE).collect();
    let mut paged = format!(
        "{}{open}{page}{close}{}",
        &xml[..start - open.len()],
        &xml[end + close.len()..]
    );
    // Drop moto's own IsTruncated / Marker, then state ours.
    for field in ["IsTruncated", "Marker"] {
        if let Some(at) = paged.find(&format!("<{field}>")) {
            let stop = paged[at..].find(&format!("</{field}>"))? + at + field.len() + 3;
            paged.replace_range(at..stop, "");
        }
    }
    let truncated = offset + PAGE_SIZE < total;
    let mut status = format!("<IsTruncated>{truncated}</IsTruncated>");
    if truncated {
        status.push_str(&format!("<Marker>{TOKEN_PREFIX}{}</Marker>", offset + PAGE_SIZE));
    }
    let at = paged.find(&close)? + close.len();
    paged.insert_str(at, &status);
    Some(paged)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_query_xml() {
        let xml = "<R xmlns=\"x\"><Result><PolicyNames><member>a</member><member>b</member><member>c</member>\
                   </PolicyNames><IsTruncated>false</IsTruncated></Result><M/></R>";
        let first = page_query_xml(xml, "PolicyNames", 0).unwrap();
        assert_eq!(
            first,
            "<R xmlns=\"x\"><Result><PolicyNames><member>a</member><member>b</member></PolicyNames>\
             <IsTruncated>true</IsTruncated><Marker>chatctl-proxy-page-2</Marker></Result><M/></R>"
        );
        let second = page_query_xml(xml, "PolicyNames", 2).unwrap();
        assert_eq!(
            second,
            "<R xmlns=\"x\"><Result><PolicyNames><member>c</member></PolicyNames>\
             <IsTruncated>false</IsTruncated></Result><M/></R>"
        );
        let nested = "<R><AttachedPolicies><member><PolicyName>p</PolicyName></member></AttachedPolicies>\
                      <IsTruncated>false</IsTruncated></R>";
        assert_eq!(page_query_xml(nested, "AttachedPolicies", 0).unwrap(), nested);
        let empty = "<R><PolicyNames/><IsTruncated>false</IsTruncated></R>";
        assert_eq!(page_query_xml(empty, "PolicyNames", 0).unwrap(), empty);
    }

    #[test]
    fn pages_cbor_keeping_other_fields_and_their_types() {
        use ciborium::Value as Cbor;
        let text = |s: &str| Cbor::Text(s.into());
        let answer = Cbor::Map(vec![
            (
                text("MetricDataResults"),
                Cbor::Array((0..5).map(|i| Cbor::Integer(i.into())).collect()),
            ),
            (text("NextToken"), text("moto")),
            (text("Messages"), Cbor::Array(vec![])),
        ]);
        let mut body = Vec::new();
        ciborium::into_writer(&answer, &mut body).unwrap();
        let page = |offset| {
            let paged = page_cbor(&body, "MetricDataResults", "NextToken", offset).unwrap();
            ciborium::from_reader::<Cbor, _>(paged.as_slice()).unwrap()
        };
        let field = |map: &Cbor, name: &str| {
            let entries = map.as_map().unwrap();
            entries
                .iter()
                .find(|(k, _)| k.as_text() == Some(name))
                .map(|(_, v)| v.clone())
        };
        let first = page(0);
        assert_eq!(field(&first, "MetricDataResults").unwrap().as_array().unwrap().len(), 2);
        assert_eq!(field(&first, "NextToken"), Some(text("chatctl-proxy-page-2")));
        assert_eq!(field(&first, "Messages"), Some(Cbor::Array(vec![])));
        let last = page(4);
        assert_eq!(field(&last, "MetricDataResults").unwrap().as_array().unwrap().len(), 1);
        assert_eq!(field(&last, "NextToken"), None, "no token on the last page");
    }

    #[test]
    fn pages_json() {
        let mut value = json!({ "items": [1, 2, 3], "nextToken": "moto" });
        page_json(&mut value, "items", "nextToken", 0);
        assert_eq!(value, json!({ "items": [1, 2], "nextToken": "chatctl-proxy-page-2" }));
        let mut value = json!({ "items": [1, 2, 3] });
        page_json(&mut value, "items", "nextToken", 2);
        assert_eq!(value, json!({ "items": [3] }));
    }

    #[test]
    fn update_expressions_name_their_attributes() {
        let names = json!({"#count": "open_5", "#room": "room"});
        assert_eq!(
            updated_attributes("SET #count = if_not_exists(#count, :zero) + :one REMOVE #room", &names),
            ["open_5", "open_5", "room"]
        );
        assert_eq!(
            updated_attributes("SET room = :r, tags[0] = :t", &json!({})),
            ["room", "tags"]
        );
        assert_eq!(updated_attributes("ADD #n :one", &json!({"#n": "n"})), ["n"]);
    }

    #[test]
    fn normalises_names() {
        assert_eq!(function_name_of("chat-connect"), "chat-connect");
        assert_eq!(
            function_name_of("arn:aws:lambda:us-east-1:123456789012:function:chat-connect:live"),
            "chat-connect"
        );
        assert_eq!(function_name_of("123456789012:function:chat"), "chat");
        assert_eq!(
            table_name_of("arn:aws:dynamodb:us-east-1:123456789012:table/chat/index/gsi"),
            "chat"
        );
        assert_eq!(table_name_of("chat"), "chat");
    }

    #[test]
    fn buckets_refill_at_their_rate() {
        let start = Instant::now();
        let mut bucket = Bucket::new(10.0, 2.0, start);
        assert!(bucket.take(start).is_ok());
        assert!(bucket.take(start).is_ok());
        assert!(bucket.take(start).is_err());
        assert!(bucket.take(start + Duration::from_millis(110)).is_ok());
    }
}
