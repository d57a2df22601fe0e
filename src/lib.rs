//! engagement-ingest: collects X Enterprise Engagement API metrics into SQLite time series.

pub mod config;
pub mod domain;
pub mod inventory;
