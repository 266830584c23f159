//! The `main` of every function: build [`Services`] once, then serve events
//! from the Lambda runtime API until the process is stopped.
//!
//! One binary serves all seven functions (handlers/chat-functions). Lambda
//! gives the process its function's Handler setting as the reserved variable
//! `_HANDLER` ("the handler location configured on the function",
//! https://docs.aws.amazon.com/lambda/latest/dg/configuration-envvars.html);
//! chatctl sets each function's Handler to its short name, and `chatctl dev`'s
//! runtime passes `_HANDLER` the same way. The runtime loops below are not
//! generic, so they are compiled once, here, not once per function.

use aws_lambda_events::apigw::{ApiGatewayCustomAuthorizerResponse, ApiGatewayProxyResponse};
use lambda_runtime::{LambdaEvent, service_fn};

use crate::authorizer::{self, AuthorizerRequest};
use crate::config::AuthMode;
use crate::event::WebSocketEvent;
use crate::handlers;
use crate::services::Services;

/// The seven Lambda functions of the chat: the `$connect` authorizer and
/// the six routes' handlers. The one list of them: chatctl provisions these
/// and the binary serves these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
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

    /// The function's short name, which is also its Handler setting, by
    /// which the one binary knows which function to serve.
    pub fn short_name(self) -> &'static str {
        match self {
            Function::Authorizer => "authorizer",
            Function::Connect => "connect",
            Function::Disconnect => "disconnect",
            Function::Default => "default",
            Function::SendMessage => "sendmessage",
            Function::GetMessages => "getmessages",
            Function::Join => "join",
        }
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

    /// The functions that serve a route: all but the authorizer.
    pub fn routed() -> impl Iterator<Item = Function> {
        Self::ALL.into_iter().filter(|f| f.route_key().is_some())
    }
}

tokio::task_local! {
    /// When Lambda stops the invocation being served (its timeout).
    static DEADLINE: std::time::SystemTime;
}

/// When the invocation being served times out; `None` outside Lambda's
/// runtime loop (in the tests, unless [`with_deadline`] sets one).
pub fn deadline() -> Option<std::time::SystemTime> {
    DEADLINE.try_with(|deadline| *deadline).ok()
}

/// Runs `work` as an invocation that times out at `deadline`.
pub async fn with_deadline<F: std::future::Future>(deadline: std::time::SystemTime, work: F) -> F::Output {
    DEADLINE.scope(deadline, work).await
}

/// Serves the function named `handler` (a [`Function`]'s short name, from `_HANDLER`).
pub async fn serve(handler: &str) -> Result<(), lambda_runtime::Error> {
    match Function::from_short_name(handler) {
        Some(Function::Authorizer) => serve_authorizer().await,
        Some(route) => serve_route(route).await,
        None => {
            let names: Vec<&str> = Function::ALL.into_iter().map(Function::short_name).collect();
            Err(format!(
                "_HANDLER={handler} is not a chat function; set the function's Handler to one of: {}",
                names.join(", ")
            )
            .into())
        }
    }
}

/// Handles one event of a route's function.
async fn handle(route: Function, services: &Services, event: WebSocketEvent) -> ApiGatewayProxyResponse {
    match route {
        Function::Connect => handlers::connect::handle(services, event).await,
        Function::Disconnect => handlers::disconnect::handle(services, event).await,
        Function::Default => handlers::default::handle(services, event).await,
        Function::SendMessage => handlers::sendmessage::handle(services, event).await,
        Function::GetMessages => handlers::getmessages::handle(services, event).await,
        Function::Join => handlers::join::handle(services, event).await,
        // Never here: `serve` sends the authorizer's events to `serve_authorizer`.
        Function::Authorizer => {
            let mut refused = ApiGatewayProxyResponse::default();
            refused.status_code = 500;
            refused
        }
    }
}

/// Serves a WebSocket route (`$connect`, `sendmessage`, …).
async fn serve_route(route: Function) -> Result<(), lambda_runtime::Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let services = Services::from_env().await?;
    let services = &services;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<WebSocketEvent>| async move {
        // Boxed: a handler's future nests deep (handler, store, SDK); inline in
        // the runtime's, it passes the compiler's query depth limit.
        let deadline = std::time::UNIX_EPOCH + std::time::Duration::from_millis(event.context.deadline);
        let handled = DEADLINE.scope(deadline, Box::pin(handle(route, services, event.payload)));
        Ok::<_, lambda_runtime::Error>(handled.await)
    }))
    .await
}

/// Serves the `$connect` authorizer.
async fn serve_authorizer() -> Result<(), lambda_runtime::Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let authorizer = authorizer::Authorizer::new(AuthMode::from_env()?, &sdk);
    let authorizer = &authorizer;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<AuthorizerRequest>| async move {
        // Boxed, as a route's handler: the SDK's futures nest deep. Within
        // the invocation's deadline, as a route's: the secret's read gives
        // up in time to answer.
        let deadline = std::time::UNIX_EPOCH + std::time::Duration::from_millis(event.context.deadline);
        let result: Result<ApiGatewayCustomAuthorizerResponse, _> = DEADLINE
            .scope(deadline, Box::pin(authorizer.authorize(&event.payload)))
            .await;
        match &result {
            Ok(response) => tracing::info!(user = response.principal_id.as_deref(), "allowed"),
            Err(authorizer::AuthorizerError::Unauthorized { reason }) => tracing::info!(reason, "unauthorized"),
            Err(error) => tracing::error!(%error, "authorizer failed"),
        }
        result
    }))
    .await
}
