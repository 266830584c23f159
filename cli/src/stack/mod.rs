//! The stack: what `up` should make (desired), what exists (actual), the
//! difference as typed steps (plan), the executor of those steps (apply),
//! and the teardown (destroy). Each kind of resource has a module of its
//! own (table, role, log_group, function, secret, api, authorizer,
//! integration, route, keep_alive, permission, stage) with its read, diff,
//! create, update and delete.

pub mod actual;
pub mod alarms;
pub mod api_writes;
pub mod apply;
pub mod base;
pub mod desired;
pub mod destroy;
pub mod lock;
pub mod plan;
pub mod release;
pub mod saved;
#[cfg(test)]
pub mod scripted;
pub mod tags;

// One module per kind of resource, each with its read, diff, create,
// update and delete; actual, plan, apply and destroy compose them.
pub mod api;
pub mod authorizer;
pub mod bucket;
pub mod domain;
pub mod function;
pub mod integration;
pub mod keep_alive;
pub mod log_group;
pub mod permission;
pub mod role;
pub mod route;
pub mod secret;
pub mod stage;
pub mod table;

use serde::{Deserialize, Serialize};

/// The tag on every resource of a stack; its value is the stack name.
/// Nothing without it is ever modified or deleted.
pub const STACK_TAG: &str = "chatctl:stack";

/// The Lambda functions of the chat (one binary serves them all): the one
/// list, in chat-core, which the binary serves from.
pub use chat_core::runtime::Function;

/// Names and ARNs of the stack's resources, all derived from the stack name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Names {
    pub stack: String,
    pub stage: String,
    pub region: String,
    pub account: String,
}

impl Names {
    pub fn connections_table(&self) -> String {
        format!("{}-connections", self.stack)
    }

    pub fn messages_table(&self) -> String {
        format!("{}-messages", self.stack)
    }

    pub fn handlers_role(&self) -> String {
        format!("{}-handlers", self.stack)
    }

    pub fn authorizer_role(&self) -> String {
        format!("{}-authorizer", self.stack)
    }

    pub fn function(&self, function: Function) -> String {
        format!("{}-{}", self.stack, function.short_name())
    }

    pub fn log_group(&self, function: Function) -> String {
        format!("/aws/lambda/{}", self.function(function))
    }

    /// The stage's access log group (API Gateway writes to any group the
    /// stage names; this is the usual place).
    pub fn access_log_group(&self) -> String {
        format!("/aws/apigateway/{}/{}", self.stack, self.stage)
    }

    /// The log group API Gateway makes itself for the stage's execution
    /// logs once a logging level is set: untagged, never expiring
    /// (aws-facts.md §11, "execution logging"; the name is REST APIs'
    /// documented one, unverified for WebSocket APIs).
    pub fn execution_log_group(&self, api_id: &str) -> String {
        format!("API-Gateway-Execution-Logs_{api_id}/{}", self.stage)
    }

    pub fn api(&self) -> String {
        self.stack.clone()
    }

    /// The SNS topic the stack's alarms notify.
    pub fn alarm_topic(&self) -> String {
        format!("{}-alarms", self.stack)
    }

    /// The stack's S3 bucket (its lock; later its artifacts). Bucket names
    /// are global and lowercase: the stack's name, lowercased, and a hash
    /// of account, region and exact stack name keep it the stack's own
    /// (at most 8 + 32 + 1 + 12 = 53 characters of the 63 allowed).
    pub fn bucket(&self) -> String {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(format!("{}/{}/{}", self.account, self.region, self.stack));
        let hash: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
        format!("chatctl-{}-{hash}", self.stack.to_ascii_lowercase())
    }

    /// A CloudWatch alarm of the stack: `{stack}-{what}`.
    pub fn alarm(&self, what: &str) -> String {
        format!("{}-{what}", self.stack)
    }

    /// An SNS topic's ARN is made of its name (SNS API reference, CreateTopic).
    pub fn alarm_topic_arn(&self) -> String {
        let (partition, _) = self.partition();
        format!(
            "arn:{partition}:sns:{}:{}:{}",
            self.region,
            self.account,
            self.alarm_topic()
        )
    }

    pub fn alarm_arn(&self, alarm: &str) -> String {
        let (partition, _) = self.partition();
        format!(
            "arn:{partition}:cloudwatch:{}:{}:alarm:{alarm}",
            self.region, self.account
        )
    }

    /// The Secrets Manager secret of `auth = "token"`. Not `…-secret`: a
    /// name ending in a hyphen and six characters is confused with an ARN's
    /// random suffix (Secrets Manager user guide, "Troubleshoot").
    pub fn token_secret(&self) -> String {
        format!("chatctl/{}/token", self.stack)
    }

    /// What a policy names the secret by: its ARN ends in `-` and six random
    /// characters AWS picks at creation, so a plan made before it exists
    /// names it with `-??????` (Secrets Manager user guide, "Permissions
    /// policy examples").
    pub fn token_secret_arn_pattern(&self) -> String {
        let (partition, _) = self.partition();
        format!(
            "arn:{partition}:secretsmanager:{}:{}:secret:{}-??????",
            self.region,
            self.account,
            self.token_secret()
        )
    }

    pub fn authorizer(&self) -> String {
        format!("{}-authorizer", self.stack)
    }

    /// The AWS partition of the region (ARNs) and its DNS suffix (endpoints).
    pub fn partition(&self) -> (&'static str, &'static str) {
        chat_core::event::partition(&self.region)
    }

    pub fn table_arn(&self, table: &str) -> String {
        let (partition, _) = self.partition();
        format!(
            "arn:{partition}:dynamodb:{}:{}:table/{table}",
            self.region, self.account
        )
    }

    pub fn role_arn(&self, role: &str) -> String {
        let (partition, _) = self.partition();
        format!("arn:{partition}:iam::{}:role/{role}", self.account)
    }

    pub fn function_arn(&self, function: Function) -> String {
        let (partition, _) = self.partition();
        format!(
            "arn:{partition}:lambda:{}:{}:function:{}",
            self.region,
            self.account,
            self.function(function)
        )
    }

    pub fn log_group_arn(&self, function: Function) -> String {
        self.log_group_arn_of(&self.log_group(function))
    }

    /// A log group's ARN, without the `:*` DescribeLogGroups adds.
    pub fn log_group_arn_of(&self, group: &str) -> String {
        let (partition, _) = self.partition();
        format!(
            "arn:{partition}:logs:{}:{}:log-group:{group}",
            self.region, self.account
        )
    }

    /// The `execute-api` ARN prefix of an API: `…:{api_id}`.
    pub fn execute_api_arn(&self, api_id: &str) -> String {
        let (partition, _) = self.partition();
        format!("arn:{partition}:execute-api:{}:{}:{api_id}", self.region, self.account)
    }

    /// How API Gateway names the Lambda function it invokes: its alias
    /// `live` (see `release`).
    pub fn invocation_uri(&self, function: Function) -> String {
        let (partition, _) = self.partition();
        format!(
            "arn:{partition}:apigateway:{}:lambda:path/2015-03-31/functions/{}:{}/invocations",
            self.region,
            self.function_arn(function),
            function::ALIAS
        )
    }

    /// How API Gateway's tagging names an API.
    pub fn api_arn(&self, api_id: &str) -> String {
        let (partition, _) = self.partition();
        format!("arn:{partition}:apigateway:{}::/apis/{api_id}", self.region)
    }

    /// How API Gateway's tagging names the stack's stage of an API.
    pub fn stage_arn(&self, api_id: &str) -> String {
        format!("{}/stages/{}", self.api_arn(api_id), self.stage)
    }

    pub fn websocket_url(&self, api_id: &str) -> String {
        let (_, dns_suffix) = self.partition();
        format!("wss://{api_id}.execute-api.{}.{dns_suffix}/{}", self.region, self.stage)
    }

    pub fn callback_url(&self, api_id: &str) -> String {
        let (_, dns_suffix) = self.partition();
        format!(
            "https://{api_id}.execute-api.{}.{dns_suffix}/{}/@connections",
            self.region, self.stage
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(region: &str) -> Names {
        Names {
            stack: "chat".into(),
            stage: "dev".into(),
            region: region.into(),
            account: "123456789012".into(),
        }
    }

    #[test]
    fn arns_and_urls_follow_the_partition_of_the_region() {
        let standard = names("eu-west-1");
        assert_eq!(standard.role_arn("r"), "arn:aws:iam::123456789012:role/r");
        assert_eq!(
            standard.websocket_url("abc"),
            "wss://abc.execute-api.eu-west-1.amazonaws.com/dev"
        );

        let china = names("cn-north-1");
        assert_eq!(
            china.table_arn("t"),
            "arn:aws-cn:dynamodb:cn-north-1:123456789012:table/t"
        );
        assert_eq!(
            china.callback_url("abc"),
            "https://abc.execute-api.cn-north-1.amazonaws.com.cn/dev/@connections"
        );
        assert!(
            china
                .invocation_uri(Function::Join)
                .starts_with("arn:aws-cn:apigateway:cn-north-1:lambda:path/")
        );
        assert!(
            china
                .invocation_uri(Function::Join)
                .contains("arn:aws-cn:lambda:cn-north-1:123456789012:function:chat-join")
        );

        assert_eq!(names("us-isob-east-1").partition(), ("aws-iso-b", "sc2s.sgov.gov"));
        assert_eq!(names("us-iso-east-1").partition(), ("aws-iso", "c2s.ic.gov"));

        let gov = names("us-gov-west-1");
        assert_eq!(
            gov.execute_api_arn("abc"),
            "arn:aws-us-gov:execute-api:us-gov-west-1:123456789012:abc"
        );
        assert_eq!(
            gov.websocket_url("abc"),
            "wss://abc.execute-api.us-gov-west-1.amazonaws.com/dev"
        );
    }
}
