//! The real `chatctl` binary against a moto server, through a proxy that
//! records every AWS call (and can inject faults), checked the way a user
//! would check: output, exit code, and what exists afterwards, read with the
//! SDK independently of chatctl's own reading code.

mod dev;
mod domain;
mod down;
mod gateway;
mod harness;
mod layers;
mod local_lambda;
mod lock;
mod operate;
mod real_aws;
mod releases;
mod status;
mod up;
