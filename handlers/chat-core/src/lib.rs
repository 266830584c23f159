//! What the chat's Lambda functions share: the wire protocol, input validation,
//! tokens, the connection and message stores over DynamoDB, delivery over the
//! API Gateway `@connections` API, and the logic of each function.
//!
//! Each function's binary only wires [`Services`] from the environment and
//! hands events to its `handlers::*::handle`, so the same logic runs in Lambda,
//! under `chatctl dev`, and in the tests.

pub mod authorizer;
pub mod config;
pub mod cpu;
pub mod delivery;
pub mod error;
pub mod event;
pub mod handlers;
pub mod ids;
pub mod metrics;
pub mod oidc;
pub mod protocol;
pub mod retry;
pub mod runtime;
pub mod services;
pub mod store;
pub mod token;
pub mod token_secret;
pub mod validate;

pub use config::ChatConfig;
pub use error::ChatError;
pub use services::Services;
