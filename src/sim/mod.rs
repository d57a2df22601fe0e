//! A local stand-in for the X Enterprise Engagement API (design.md §6, engagement-api.md §12),
//! driven by a world file. It shares only `domain` types with the worker: its OAuth verifier,
//! data model and rules are its own, so tests of the worker against it prove something.
//!
//! Where the real API is undocumented, the simulator makes the choice engagement-api §12 suggests
//! and the code says so at that spot.

mod answer;
mod auth;
mod cli;
mod contract;
mod data;
mod faults;
mod limits;
mod oauth;
mod population;
mod query;
mod realism;
mod server;
mod service;
mod settle;
mod stats;
mod window;
mod world;

#[cfg(test)]
mod realism_tests;
#[cfg(test)]
mod tests;

pub use crate::domain::{Clock, ManualClock, system_clock};
pub use auth::TIMESTAMP_SKEW_SECS;
pub use cli::{WORLD_FILE_HELP, serve_cli};
pub use data::{bucket, cumulative};
pub use limits::UNLIMITED;
pub use population::{PUBLIC_AUTHOR_BASE, SimTweet, TweetState};
pub use realism::{ForbiddenForm, PartialErrors, Realism, RealismSpec, TweetOrder};
pub use server::{DROPPED_STATUS, SimHandle, spawn, spawn_sim};
pub use service::{GZIP_REQUIRED, INTERNAL_ERROR, RATE_LIMITED, Sim};
pub use stats::{RequestCount, Stats};
pub use world::{
    Account, App, EndpointLimit, Faults, Limits, Public, Reowned, TweetSpec, TweetsConfig, World,
    WorldError, demo_world,
};
