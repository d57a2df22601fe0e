//! engagement-ingest: collects X Enterprise Engagement API metrics for owned and public Tweets
//! and keeps them as time series in SQLite.
//!
//! ```text
//! config ─► inventory ─► planner ─► jobs ─► auth (sign) ─► client (limiter → send → classify → retry)
//!                                                                   │
//!                                     store ◄── parse ◄─────────────┘
//! ```
//!
//! Layout: `domain` holds the shared types and the API's rules (endpoints, their metrics and
//! windows); each stage is one module; only `pipeline` knows their order, and `scheduler` runs it
//! on the `[schedule]` crons (the daemon). `config` reads and checks the config file, `store` owns
//! every SQL statement, `report` draws what the store reads. The library logs through `tracing`
//! and prints nothing: `cli` prints what a command shows, `main.rs` the error that ends it. `sim`
//! is a faithful simulator of the API that shares nothing with the worker but `domain` (its
//! types, and the API rule tables the worker plans by) and `config::raw` (the worker config it
//! exports).

pub mod auth;
pub mod cli;
pub mod client;
pub mod config;
pub mod domain;
pub mod inventory;
pub mod listener;
pub mod lock;
pub mod metrics;
pub mod parse;
pub mod pipeline;
pub mod planner;
pub mod progress;
pub mod report;
pub mod scheduler;
pub mod sim;
pub mod store;
#[cfg(test)]
pub(crate) mod test_rng;
pub mod timespec;
