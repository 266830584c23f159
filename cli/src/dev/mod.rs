//! `chatctl dev`: the whole stack on a laptop, no AWS account, no Docker.
//! The emulator stands in for AWS; the stack is provisioned into it by the
//! same code as `up`; the functions' real binaries run behind a local Lambda
//! runtime; a local gateway serves the WebSocket API the way API Gateway does.

pub mod emulator;
pub mod gateway;
pub mod logs;
pub mod runtime;
pub mod watch;
pub mod web;
