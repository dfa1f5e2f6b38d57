//! The deploy Lambda's tests: its AWS calls on the wire against moto's server (started and
//! stopped here, on a free port), its failure paths with stubbed SDK clients (moto reports every
//! command as a success), and the template, document and host script agreeing with each other.
//! The event parsing and refusals are unit tests next to the code (src/event.rs).

// A failed unwrap or expect is a failed test, with its message: what tests want.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod harness;
mod moto;
mod stubbed;
mod template;
