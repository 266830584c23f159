//! Test harness shared by the workspace's integration tests: a moto server
//! (the AWS emulator) on a free loopback port, a recording and fault-injecting
//! proxy to put in front of it, with a layer that makes it behave like real
//! AWS where moto does not (`aws_behaviour`), a recording stand-in for the
//! API Gateway `@connections` endpoint, and events shaped exactly as API
//! Gateway sends them (see aws-facts.md §2), and a DNS server answering delegations (`dns`).

pub mod aws_behaviour;
pub mod aws_proxy;
pub mod connections_endpoint;
pub mod dns;
pub mod events;
pub mod moto;
pub mod oidc;

pub use aws_behaviour::{Behaviours, Timings};
pub use aws_proxy::AwsProxy;
pub use connections_endpoint::ConnectionsEndpoint;
pub use moto::Moto;
pub use oidc::OidcIssuer;
