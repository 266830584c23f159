//! Each handler's logic against a real DynamoDB emulator (a moto server per
//! test) and a recording `@connections` endpoint, with events shaped exactly
//! like API Gateway's.

mod authorizer;
mod connect;
mod delivery;
mod first_minutes;
mod history;
mod oidc;
mod routes;
mod send;
mod support;
