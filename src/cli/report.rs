//! `report`: a self-contained HTML page of charts.

use super::{Cli, Failure, ReportArgs};

/// Writes the report.
pub fn report(_cli: &Cli, _args: &ReportArgs) -> Result<u8, Failure> {
    Err(Failure::usage(anyhow::anyhow!("report is not built yet")))
}
