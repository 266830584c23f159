//! The one binary behind the seven chat Lambda functions: it serves the
//! function its Handler setting names (`_HANDLER`); see `chat_core::runtime`.
//! One binary, not seven: a change in chat-core is compiled and optimised
//! once (README, "Building the functions").

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    chat_core::runtime::serve(&std::env::var("_HANDLER").unwrap_or_default()).await
}
