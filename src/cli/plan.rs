//! `plan`: what the next cycle would send, and how long it takes.

use super::{Failure, PlanArgs};
use crate::config::Config;

/// Prints the plan.
pub fn plan(_config: Config, _args: &PlanArgs) -> Result<u8, Failure> {
    Err(Failure::usage(anyhow::anyhow!("plan is not built yet")))
}
