//! engagement-ingest: collects X Enterprise Engagement API metrics into SQLite time series.

pub mod domain;
pub mod store;
pub mod auth;
pub mod parse;
pub mod planner;
pub mod client;
