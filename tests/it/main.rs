//! Tidemark's integration tests: one binary, a real server per test over real sockets.

mod common;

mod batch;
mod durability;
mod errors;
mod listing;
mod listing_table;
mod preconditions;
mod resources;
mod root;
mod since;
