//! The `main` of every function: build [`Services`] once, then serve events
//! from the Lambda runtime API until the process is stopped.

use aws_lambda_events::apigw::{ApiGatewayCustomAuthorizerResponse, ApiGatewayProxyResponse};
use lambda_runtime::{LambdaEvent, service_fn};

use crate::authorizer::{self, AuthorizerRequest};
use crate::config::AuthMode;
use crate::event::WebSocketEvent;
use crate::services::Services;

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

/// Serves a WebSocket route (`$connect`, `sendmessage`, …) with `handler`.
pub async fn serve_route<H>(handler: H) -> Result<(), lambda_runtime::Error>
where
    H: AsyncFn(&Services, WebSocketEvent) -> ApiGatewayProxyResponse,
{
    lambda_runtime::tracing::init_default_subscriber();
    let services = Services::from_env().await?;
    let (services, handler) = (&services, &handler);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<WebSocketEvent>| async move {
        // Boxed: a handler's future nests deep (handler, store, SDK); inline in
        // the runtime's, it passes the compiler's query depth limit.
        let deadline = std::time::UNIX_EPOCH + std::time::Duration::from_millis(event.context.deadline);
        let handled = DEADLINE.scope(deadline, Box::pin(handler(services, event.payload)));
        Ok::<_, lambda_runtime::Error>(handled.await)
    }))
    .await
}

/// Serves the `$connect` authorizer.
pub async fn serve_authorizer() -> Result<(), lambda_runtime::Error> {
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
