//! The `join` Lambda function; its logic is `chat_core::handlers::join`.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    chat_core::runtime::serve_route(chat_core::handlers::join::handle).await
}
