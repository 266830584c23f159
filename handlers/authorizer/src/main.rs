//! The `$connect` REQUEST authorizer; its logic is `chat_core::authorizer`.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    chat_core::runtime::serve_authorizer().await
}
