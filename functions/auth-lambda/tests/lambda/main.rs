//! The auth Lambda in-process: the sample API Gateway v2 and Function URL events from `events/`
//! through `lambda_http::request::from_str` (and through lambda_http's own adapter, for the
//! payload API Gateway gets back) into the handler, against real PostgreSQL: a fresh database
//! per test, dropped afterwards. Needs DATABASE_URL (an admin URL; `make test` sets it).

// A failed unwrap or expect is a failed test, with its message: what tests want.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod contract;
mod helpers;
mod wire;
