//! The stack: what `up` should make (desired), what exists (actual), the
//! difference (plan), and the steps that close it (apply) or remove it all
//! (destroy).

pub mod actual;
pub mod apply;
pub mod desired;
pub mod destroy;
pub mod plan;

use serde::Serialize;

/// The tag on every resource of a stack; its value is the stack name.
/// Nothing without it is ever modified or deleted.
pub const STACK_TAG: &str = "chatctl:stack";

/// The Lambda functions of the chat, one per crate in handlers/.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Function {
    Authorizer,
    Connect,
    Disconnect,
    Default,
    SendMessage,
    GetMessages,
    Join,
}

impl Function {
    pub const ALL: [Function; 7] = [
        Function::Authorizer,
        Function::Connect,
        Function::Disconnect,
        Function::Default,
        Function::SendMessage,
        Function::GetMessages,
        Function::Join,
    ];

    /// The crates' (and cargo-lambda outputs') names, in the order of `ALL`.
    pub const SHORT_NAMES: [&'static str; 7] = [
        "authorizer",
        "connect",
        "disconnect",
        "default",
        "sendmessage",
        "getmessages",
        "join",
    ];

    /// The crate's (and cargo-lambda output's) name.
    pub fn short_name(self) -> &'static str {
        Self::SHORT_NAMES[self as usize]
    }

    pub fn from_short_name(name: &str) -> Option<Function> {
        Self::ALL.into_iter().find(|f| f.short_name() == name)
    }

    /// The WebSocket route this function serves; the authorizer serves none.
    pub fn route_key(self) -> Option<&'static str> {
        match self {
            Function::Authorizer => None,
            Function::Connect => Some("$connect"),
            Function::Disconnect => Some("$disconnect"),
            Function::Default => Some("$default"),
            Function::SendMessage => Some("sendmessage"),
            Function::GetMessages => Some("getmessages"),
            Function::Join => Some("join"),
        }
    }

    pub fn routed() -> impl Iterator<Item = Function> {
        Self::ALL.into_iter().filter(|f| f.route_key().is_some())
    }
}

/// Names and ARNs of the stack's resources, all derived from the stack name.
#[derive(Debug, Clone, PartialEq)]
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

    pub fn api(&self) -> String {
        self.stack.clone()
    }

    pub fn authorizer(&self) -> String {
        format!("{}-authorizer", self.stack)
    }

    pub fn table_arn(&self, table: &str) -> String {
        format!("arn:aws:dynamodb:{}:{}:table/{table}", self.region, self.account)
    }

    pub fn role_arn(&self, role: &str) -> String {
        format!("arn:aws:iam::{}:role/{role}", self.account)
    }

    pub fn function_arn(&self, function: Function) -> String {
        format!(
            "arn:aws:lambda:{}:{}:function:{}",
            self.region,
            self.account,
            self.function(function)
        )
    }

    pub fn log_group_arn(&self, function: Function) -> String {
        format!(
            "arn:aws:logs:{}:{}:log-group:{}",
            self.region,
            self.account,
            self.log_group(function)
        )
    }

    /// The `execute-api` ARN prefix of an API: `…:{api_id}`.
    pub fn execute_api_arn(&self, api_id: &str) -> String {
        format!("arn:aws:execute-api:{}:{}:{api_id}", self.region, self.account)
    }

    /// How API Gateway names a Lambda function it invokes.
    pub fn invocation_uri(&self, function: Function) -> String {
        format!(
            "arn:aws:apigateway:{}:lambda:path/2015-03-31/functions/{}/invocations",
            self.region,
            self.function_arn(function)
        )
    }

    pub fn websocket_url(&self, api_id: &str) -> String {
        format!(
            "wss://{api_id}.execute-api.{}.amazonaws.com/{}",
            self.region, self.stage
        )
    }

    pub fn callback_url(&self, api_id: &str) -> String {
        format!(
            "https://{api_id}.execute-api.{}.amazonaws.com/{}/@connections",
            self.region, self.stage
        )
    }
}
