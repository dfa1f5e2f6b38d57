#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
// Test code may panic: a panic is how a test fails.
//! The HTTP contract, end to end: a real server on a socket, real PostgreSQL, a fresh database
//! per test.

mod helpers;

mod account;
mod email;
mod email_keys;
mod forged;
mod idempotency;
mod keys;
mod limits;
mod login;
mod logout;
mod mail_outbox;
mod operations;
mod protocol;
mod refresh;
mod register;
mod resilience;
mod security;
mod sessions;
mod smtp;
mod tls;
mod tokens;
