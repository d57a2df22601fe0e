//! The `sim` command's body: load a world, serve it, and export an inventory and a worker config
//! that point at it. Argument parsing belongs to the binary.

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use super::server::spawn;
use super::world::World;

/// The `sim` command's help after its options: what a world file holds. Every key, one line
/// each, is in the README's "Simulator world file" section (kept there rather than here so the
/// help stays a screen long).
pub const WORLD_FILE_HELP: &str = "\
The world file (TOML) describes the simulated API; every Tweet, number and fault is drawn from
its seed:
  seed = N, realistic = true|false   top-level keys
  [app]                   the approved app's consumer key and secret, and its bearer token
  [[accounts]]            accounts that authorized the app: handle, user_id, tokens, tweets, revoked
  [public]                Tweets of other authors, read with the bearer token
  [tweets]                spread_days, deleted and protected Tweets; [[tweets.reowned]] Tweets
                          that changed hands
  [limits.<endpoint>]     per_minute / per_second budgets of totals, 28hr, historical
  [faults]                server_error, rate_limited, malformed, dropped, latency_ms
  [realism]               how messy the answers are: settle_hours, tweet_order, shuffle_keys,
                          forbidden_form, partial_errors, shared_videos, lenient_input,
                          require_content_type, round_end, lookback_days
                          (realistic = true turns on every knob left out)

Every key, its default and its realistic value: README.md, section \"Simulator world file\".";

/// The inventory path written into an exported config when no inventory is exported.
const DEFAULT_INVENTORY: &str = "tweets.csv";

/// Serves the world at `world_path` on `listen` until `shutdown` is cancelled.
///
/// Before serving it writes the inventory CSV and the worker config (when asked), then prints
/// `listening on http://ADDR` as the first line on stdout, so a script can wait for it.
pub async fn serve_cli(
    world_path: &Path,
    listen: SocketAddr,
    export_config: Option<&Path>,
    export_inventory: Option<&Path>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    // A stand-in for a real API, with well-known credentials: never reachable from elsewhere.
    if !listen.ip().is_loopback() {
        anyhow::bail!(
            "--listen {listen}: the simulator serves loopback addresses only (127.0.0.0/8 or ::1)"
        );
    }
    let world = World::load(world_path)?;
    let handle = spawn(world, listen).await?;
    let base_url = handle.base_url();
    if let Some(path) = export_inventory {
        std::fs::write(path, handle.sim.inventory_csv())
            .with_context(|| format!("cannot write inventory {}", path.display()))?;
    }
    if let Some(path) = export_config {
        let inventory = export_inventory.map_or_else(
            || DEFAULT_INVENTORY.to_string(),
            |p| p.display().to_string(),
        );
        std::fs::write(path, handle.sim.worker_config_toml(&base_url, &inventory))
            .with_context(|| format!("cannot write worker config {}", path.display()))?;
    }
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {base_url}")?;
        out.flush()?;
    }
    shutdown.cancelled().await;
    handle.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::super::realism::Realism;
    use super::*;

    /// The `[realism]` table of the README's "Simulator world file" section: (knob, off value,
    /// realistic value), each value as written between the first backticks of its cell, a TOML
    /// value.
    fn readme_knobs() -> Vec<(String, String, String)> {
        let readme = include_str!("../../README.md");
        let section = readme
            .split("### Simulator world file")
            .nth(1)
            .expect("README has a \"Simulator world file\" section");
        let table = section
            .split("| knob |")
            .nth(1)
            .expect("the section has a knob table");
        let ticked = |cell: &str| cell.split('`').nth(1).unwrap_or_default().to_string();
        table
            .lines()
            .skip(2)
            .take_while(|l| l.starts_with('|'))
            .map(|row| {
                let cells: Vec<&str> = row.trim_matches('|').split(" | ").collect();
                let last = cells.len() - 1;
                (
                    ticked(cells[0]),
                    ticked(cells[last - 1]),
                    ticked(cells[last]),
                )
            })
            .collect()
    }

    /// A world whose `[realism]` sets each knob to the value `pick` takes from the table.
    fn world_realism(pick: impl Fn(&(String, String, String)) -> &String) -> Realism {
        let knobs: String = readme_knobs()
            .iter()
            .map(|row| format!("{} = {}\n", row.0, pick(row)))
            .collect();
        let toml = format!(
            "seed = 1\n[app]\nconsumer_key = \"k\"\nconsumer_secret = \"s\"\nbearer_token = \"b\"\n[realism]\n{knobs}"
        );
        World::from_toml_str(&toml)
            .unwrap_or_else(|e| {
                panic!("the README's knob table is not a valid world: {e:#}\n{toml}")
            })
            .realism()
    }

    /// The README documents every knob under its real name with its real off and preset values.
    #[test]
    fn the_readme_knob_table_matches_the_realism_presets() {
        assert_eq!(world_realism(|row| &row.2), Realism::REALISTIC);
        assert_eq!(world_realism(|row| &row.1), Realism::TIDY);
    }

    #[test]
    fn the_help_names_every_world_section_and_the_readme() {
        for key in [
            "seed",
            "realistic",
            "[app]",
            "[[accounts]]",
            "[public]",
            "[tweets]",
            "[[tweets.reowned]]",
            "[limits.",
            "[faults]",
            "[realism]",
        ] {
            assert!(WORLD_FILE_HELP.contains(key), "{key}");
        }
        for (knob, _, _) in readme_knobs() {
            assert!(WORLD_FILE_HELP.contains(&knob), "{knob}");
        }
        assert!(WORLD_FILE_HELP.contains("Simulator world file"));
    }
}
