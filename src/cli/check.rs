//! `check`: validate config, inventory, credentials and database without sending anything.

use super::{Cli, Failure};
use crate::config::Config;
use crate::pipeline;
use crate::store::{SCHEMA_VERSION, Store, StoreError};

/// Lists every problem found; exit 2 when there is any.
pub fn check(cli: &Cli) -> Result<u8, Failure> {
    let config = match Config::load(cli.config.as_deref(), super::utf8_env()) {
        Ok(c) => c,
        Err(e) => {
            println!("config: FAILED\n{e}");
            return Ok(2);
        }
    };
    let mut problems = 0;
    let source = config
        .source
        .as_ref()
        .map_or("(none)".to_string(), |p| p.display().to_string());
    println!(
        "config {source}: ok ({} accounts, API {})",
        config.accounts.len(),
        config.api.base_url
    );
    for warning in config.warnings() {
        println!("  warning: {warning}");
    }
    match pipeline::load_inventory(&config) {
        Ok(inv) => {
            let owned = inv.entries.iter().filter(|e| e.owner.is_some()).count();
            println!(
                "inventory {}: ok ({} Tweets: {owned} owned, {} public)",
                config.inventory.path.display(),
                inv.entries.len(),
                inv.entries.len() - owned
            );
        }
        Err(e) => {
            problems += 1;
            println!("inventory: FAILED\n{e}");
        }
    }
    let db = &config.database.path;
    if !db.exists() {
        println!(
            "database {}: does not exist yet; `run` or `migrate` creates it",
            db.display()
        );
    } else {
        match Store::open_read_only(db) {
            Ok(_) => println!(
                "database {}: ok (schema version {SCHEMA_VERSION})",
                db.display()
            ),
            Err(StoreError::TooOld { found, .. }) => println!(
                "database {}: schema version {found}; `run` or `migrate` upgrades it to {SCHEMA_VERSION}",
                db.display()
            ),
            Err(e) => {
                problems += 1;
                println!("database: FAILED\n{e}");
            }
        }
    }
    Ok(if problems == 0 { 0 } else { 2 })
}
