//! engagement-ingest: collects X Enterprise Engagement API metrics into SQLite time series.

pub mod auth;
pub mod client;
pub mod config;
pub mod domain;
pub mod inventory;
pub mod parse;
pub mod planner;
pub mod sim;
pub mod store;
