//! The `sim` command's body: load a world, serve it, and export an inventory and a worker config
//! that point at it. Argument parsing belongs to the binary.

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use super::server::spawn;
use super::world::World;

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
