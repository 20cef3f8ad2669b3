//! Tidemark's integration tests: one binary, a real server per test over real sockets.

mod common;

mod apps;
mod batch;
mod cli;
mod durability;
mod errors;
mod faults;
mod history;
mod hostile;
mod identity;
mod kinto_wire;
mod listeners;
mod listing;
mod listing_table;
mod nodes;
mod openid;
mod operations;
mod permissions_matrix;
mod point_in_time;
mod preconditions;
mod resources;
mod root;
mod since;
mod streams;
mod toolkit;
