//! Tidemark's wire: the Kinto HTTP API v1 as pure types and parsers.
//!
//! No I/O, no async, no storage. Everything here turns bytes and strings from a request into typed
//! values, or a typed failure into Kinto's error vocabulary ([`error::ApiError`]). The engine and
//! the server both depend on this crate; it depends on neither.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]
// ApiError is large (it carries the whole Kinto error body) but only travels on failure paths.
#![allow(clippy::result_large_err)]

pub mod body;
pub mod dates;
pub mod error;
pub mod filter;
pub mod fuzzing;
pub mod headers;
pub mod ids;
pub mod json;
pub mod pyrepr;
pub mod query;
pub mod stream;

pub use error::{ApiError, Errno, Invalid, Location};
