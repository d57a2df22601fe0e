//! `query`: answers from the database, read-only.

use super::{Cli, Failure, QueryArgs};

/// Runs one query.
pub fn query(_cli: &Cli, _args: &QueryArgs) -> Result<u8, Failure> {
    Err(Failure::usage(anyhow::anyhow!("query is not built yet")))
}
