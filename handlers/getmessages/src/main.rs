//! The `getmessages` Lambda function; its logic is `chat_core::handlers::getmessages`.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    chat_core::runtime::serve_route(chat_core::handlers::getmessages::handle).await
}
