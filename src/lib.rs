//! engagement-ingest: collects X Enterprise Engagement API metrics into SQLite time series.

pub mod domain;
pub mod sim;
