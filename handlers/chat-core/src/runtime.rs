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

/// The seven Lambda functions by short name, which is also their Handler:
/// the `$connect` authorizer and the six routes' handlers.
pub const FUNCTIONS: [&str; 7] = [
    "authorizer",
    "connect",
    "disconnect",
    "default",
    "sendmessage",
    "getmessages",
    "join",
];

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

/// Serves the function named `handler` (one of [`FUNCTIONS`], from `_HANDLER`).
pub async fn serve(handler: &str) -> Result<(), lambda_runtime::Error> {
    let route = match handler {
        "authorizer" => return serve_authorizer().await,
        "connect" => Route::Connect,
        "disconnect" => Route::Disconnect,
        "default" => Route::Default,
        "sendmessage" => Route::SendMessage,
        "getmessages" => Route::GetMessages,
        "join" => Route::Join,
        other => {
            return Err(format!(
                "_HANDLER={other} is not a chat function; set the function's Handler to one of: {}",
                FUNCTIONS.join(", ")
            )
            .into());
        }
    };
    serve_route(route).await
}

/// The WebSocket route functions.
#[derive(Debug, Clone, Copy)]
enum Route {
    Connect,
    Disconnect,
    Default,
    SendMessage,
    GetMessages,
    Join,
}

impl Route {
    async fn handle(self, services: &Services, event: WebSocketEvent) -> ApiGatewayProxyResponse {
        match self {
            Route::Connect => handlers::connect::handle(services, event).await,
            Route::Disconnect => handlers::disconnect::handle(services, event).await,
            Route::Default => handlers::default::handle(services, event).await,
            Route::SendMessage => handlers::sendmessage::handle(services, event).await,
            Route::GetMessages => handlers::getmessages::handle(services, event).await,
            Route::Join => handlers::join::handle(services, event).await,
        }
    }
}

/// Serves a WebSocket route (`$connect`, `sendmessage`, …).
async fn serve_route(route: Route) -> Result<(), lambda_runtime::Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let services = Services::from_env().await?;
    let services = &services;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<WebSocketEvent>| async move {
        // Boxed: a handler's future nests deep (handler, store, SDK); inline in
        // the runtime's, it passes the compiler's query depth limit.
        let deadline = std::time::UNIX_EPOCH + std::time::Duration::from_millis(event.context.deadline);
        let handled = DEADLINE.scope(deadline, Box::pin(route.handle(services, event.payload)));
        Ok::<_, lambda_runtime::Error>(handled.await)
    }))
    .await
}

/// Serves the `$connect` authorizer.
async fn serve_authorizer() -> Result<(), lambda_runtime::Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let mode = AuthMode::from_env()?;
    let mode = &mode;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<AuthorizerRequest>| async move {
        let result: Result<ApiGatewayCustomAuthorizerResponse, _> = authorizer::authorize(mode, &event.payload);
        match &result {
            Ok(response) => tracing::info!(user = response.principal_id.as_deref(), "allowed"),
            Err(authorizer::AuthorizerError::Unauthorized { reason }) => tracing::info!(reason, "unauthorized"),
            Err(error) => tracing::error!(%error, "authorizer failed"),
        }
        result
    }))
    .await
}
