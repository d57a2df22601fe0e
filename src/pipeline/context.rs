//! What every cycle shares, built once from the config: the client, the database, the metrics,
//! the writer lock and the last good inventory; and the errors that stop a cycle. It opens and
//! reads; it does not order the stages.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::client::{ApiClient, ApiError, ClientSettings};
use crate::config::{Config, OnInvalid, ScheduleConfig};
use crate::domain::{AccountState, Clock, JobKind};
use crate::inventory::{self, Inventory, InventoryError};
use crate::lock::{EXIT_LOCKED, LockError, WriterLock};
use crate::metrics::{InventoryProblem, Metrics};
use crate::store::{AccountRecord, Store, StoreError};

/// Everything a cycle needs, built once from the config. A clone shares the client (its
/// limiters), the database connection, the metrics, the writer lock and the last good
/// inventory.
#[derive(Clone)]
pub struct Context {
    pub config: Config,
    pub client: Arc<ApiClient>,
    pub store: Arc<Mutex<Store>>,
    pub clock: Clock,
    pub metrics: Arc<Metrics>,
    /// How often a cycle logs its progress (batches done, ETA); `None`: never.
    pub progress: Option<Duration>,
    /// Why the config in use is not the file's current one (the daemon keeps the last good
    /// config when an edit does not validate): noted in each cycle's `runs` row.
    pub config_problem: Option<String>,
    /// The last inventory that validated, and when it was read.
    last_inventory: Arc<Mutex<Option<GoodInventory>>>,
    lock: Arc<Option<WriterLock>>,
    /// When [`Context::new`] proved the database ([`Store::preflight`]); taken by the next cycle,
    /// which need not prove it again if it begins within [`PROOF_SERVES`].
    proven: Arc<Mutex<Option<Instant>>>,
}

/// How long the proof of the database made when it is opened serves the first cycle: `run`
/// begins its cycle at once, the daemon's first trigger may come much later.
const PROOF_SERVES: Duration = Duration::from_secs(60);

/// An inventory that validated, and when it was read.
type GoodInventory = (Arc<Inventory>, i64);

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Inventory(#[from] InventoryError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Client(#[from] ApiError),
    #[error("a batch task failed: {0}")]
    Task(String),
    #[error(transparent)]
    Locked(#[from] LockError),
}

impl PipelineError {
    /// The process exit code for this error (design §3).
    pub fn exit_code(&self) -> u8 {
        match self {
            PipelineError::Inventory(_) => 2,
            PipelineError::Locked(LockError::Held { .. })
            | PipelineError::Store(crate::store::StoreError::Locked { .. }) => EXIT_LOCKED,
            PipelineError::Store(_)
            | PipelineError::Client(_)
            | PipelineError::Task(_)
            | PipelineError::Locked(LockError::Io { .. }) => 3,
        }
    }
}

/// The shard this process writes as (`I/N`; `0/1` unsharded).
fn shard_label(config: &Config) -> String {
    config.shard.to_string()
}

impl Context {
    /// Takes the database's writer lock (before anything is written), opens (creating) the
    /// database, proves it sound and writable ([`Store::preflight`]) before migrating it, marks
    /// runs a killed process left `running` as interrupted, and builds the client. The metrics
    /// start from what the database knows of earlier cycles.
    pub fn new(config: Config, clock: Clock) -> Result<Context, PipelineError> {
        let target = config.database.target();
        // SQLite: the lock file, taken before the database is opened. PostgreSQL: the shard's
        // advisory lock, held by the writer's connection.
        let lock = match target.sqlite_path() {
            Some(path) => Some(WriterLock::acquire(path)?),
            None => None,
        };
        let mut store = Store::connect(&target)?;
        store.lock_shard(&shard_label(&config))?;
        store.preflight()?;
        let proven = Instant::now();
        store.migrate()?;
        let stale = store.close_stale_runs(clock())?;
        if stale > 0 {
            tracing::warn!(
                runs = stale,
                "Runs left `running` by a process that ended without finishing them are now marked interrupted"
            );
        }
        let metrics = Arc::new(Metrics::new(clock()));
        seed_metrics(&metrics, &store, &config, clock())?;
        let client = new_client(&config, &clock, &metrics)?;
        Ok(Context {
            config,
            client,
            store: Arc::new(Mutex::new(store)),
            clock,
            metrics,
            progress: None,
            config_problem: None,
            last_inventory: Arc::new(Mutex::new(None)),
            lock: Arc::new(lock),
            proven: Arc::new(Mutex::new(Some(proven))),
        })
    }

    /// The writer lock's file (SQLite's; PostgreSQL's lock is in the server).
    pub fn lock_path(&self) -> Option<&std::path::Path> {
        self.lock.as_ref().as_ref().map(WriterLock::path)
    }

    /// This context with a newly loaded config: the client is rebuilt only when its settings
    /// changed (otherwise its limiters and pauses carry over).
    pub fn reconfigured(&self, config: Config) -> Result<Context, PipelineError> {
        let client = if ClientSettings::from(&config).fingerprint()
            == ClientSettings::from(&self.config).fingerprint()
        {
            Arc::clone(&self.client)
        } else {
            tracing::info!("API settings, credentials or limits changed: new client");
            new_client(&config, &self.clock, &self.metrics)?
        };
        self.metrics
            .set_periods(periods(&config.schedule, (self.clock)()));
        Ok(Context {
            config,
            client,
            ..self.clone()
        })
    }

    /// Runs database work off the async threads (the store blocks), as batch writes do.
    pub(super) async fn on_store<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, PipelineError> {
        store_task(&self.store, work).await
    }

    /// Whether the proof of the database made when the context opened it still serves (taken
    /// once: later cycles prove it themselves).
    pub(super) fn take_proof(&self) -> bool {
        self.proven
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .is_some_and(|at| at.elapsed() < PROOF_SERVES)
    }

    /// The inventory this cycle uses: the file's when it validates; with bad lines, its valid
    /// lines (`on_invalid = "skip"`) or the last good inventory of this process (the daemon),
    /// else an error. Problems are logged with `file:line` and kept for `/healthz`.
    pub(super) fn inventory(
        &self,
        now: i64,
    ) -> Result<(Arc<Inventory>, Option<InventoryProblem>), InventoryError> {
        let config = &self.config;
        let last_good = self
            .last_inventory
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let read = inventory::load_valid_lines(&config.inventory.path, &config.handles());
        let (inventory, problem) = match read {
            Ok((inventory, problems)) if problems.is_empty() => {
                let inventory = Arc::new(inventory);
                *self
                    .last_inventory
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = Some((Arc::clone(&inventory), now));
                (inventory, None)
            }
            Ok((inventory, problems)) => {
                let lines: Vec<String> = problems
                    .iter()
                    .map(|p| format!("{}:{}: {}", inventory.source, p.line, p.message))
                    .collect();
                for line in &lines {
                    tracing::error!("{line}");
                }
                let last_good = last_good.map(|(good, at)| (known_owners(good, config), at));
                let (used, how) = match (config.inventory.on_invalid, last_good) {
                    (OnInvalid::Skip, _) => (
                        Arc::new(inventory.clone()),
                        format!(
                            "its {} valid lines were used (on_invalid = \"skip\")",
                            inventory.len()
                        ),
                    ),
                    (OnInvalid::Fail, Some((good, read_at))) => (
                        good,
                        format!(
                            "the last good inventory, read at {}, was used",
                            crate::domain::iso_utc(read_at)
                        ),
                    ),
                    (OnInvalid::Fail, None) => {
                        self.metrics
                            .set_inventory_problem(Some(InventoryProblem::new(
                                &lines,
                                "nothing was sent".into(),
                                now,
                            )));
                        return Err(InventoryError::Invalid {
                            source_name: inventory.source,
                            problems,
                        });
                    }
                };
                (used, Some(InventoryProblem::new(&lines, how, now)))
            }
            Err(e) => match last_good {
                Some((good, read_at)) => {
                    let good = known_owners(good, config);
                    let line = e.to_string();
                    tracing::error!("{line}");
                    let how = format!(
                        "the last good inventory, read at {}, was used",
                        crate::domain::iso_utc(read_at)
                    );
                    (good, Some(InventoryProblem::new(&[line], how, now)))
                }
                None => return Err(e),
            },
        };
        if let Some(p) = &problem {
            tracing::warn!("The inventory has {} bad lines: {}", p.count, p.how);
        }
        self.metrics.set_inventory_problem(problem.clone());
        Ok((inventory, self.metrics.inventory_problem()))
    }
}

/// `inventory` with owners that are no longer configured accounts taken as public Tweets (an
/// account removed from the config since the inventory was last good: its token is gone).
fn known_owners(inventory: Arc<Inventory>, config: &Config) -> Arc<Inventory> {
    let known = |e: &inventory::Entry| e.owner.as_ref().is_none_or(|o| config.account(o).is_some());
    if inventory.entries.iter().all(known) {
        return inventory;
    }
    let mut copy = (*inventory).clone();
    for entry in &mut copy.entries {
        if !known(entry) {
            entry.owner = None;
        }
    }
    Arc::new(copy)
}

/// Starts the metrics from the database: each kind's last cycle and last success (a `run`
/// writes them to its metrics file even for kinds it did not run), the accounts' conditions,
/// and the schedules' periods.
fn seed_metrics(
    metrics: &Metrics,
    store: &Store,
    config: &Config,
    now: i64,
) -> Result<(), StoreError> {
    for kind in JobKind::ALL {
        let history = store.kind_history(kind.name())?;
        metrics.seed_kind(kind, history.last_finished, history.last_success);
    }
    metrics.set_periods(periods(&config.schedule, now));
    metrics.set_accounts(account_states(config, &store.accounts()?));
    Ok(())
}

/// Each kind's schedule period at `now`.
fn periods(schedule: &ScheduleConfig, now: i64) -> Vec<(JobKind, i64)> {
    let at = chrono::DateTime::from_timestamp(now, 0).unwrap_or_default();
    JobKind::ALL
        .into_iter()
        .filter_map(|k| Some((k, crate::metrics::period(schedule, k, at)?)))
        .collect()
}

/// Every configured account's condition: paused by the config, else what the database says
/// (an account with no record yet is taken as ok).
pub fn account_states(config: &Config, records: &[AccountRecord]) -> Vec<(String, AccountState)> {
    config
        .accounts
        .iter()
        .map(|a| {
            let state = if !a.enabled {
                AccountState::Paused
            } else {
                records
                    .iter()
                    .find(|r| r.handle == a.handle.as_str())
                    .map_or(AccountState::Ok, |r| match r.state {
                        AccountState::Paused => AccountState::Ok,
                        s => s,
                    })
            };
            (a.handle.to_string(), state)
        })
        .collect()
}

fn new_client(
    config: &Config,
    clock: &Clock,
    metrics: &Arc<Metrics>,
) -> Result<Arc<ApiClient>, PipelineError> {
    let client = ApiClient::new(ClientSettings::from(config), Arc::clone(clock))?;
    Ok(Arc::new(client.with_metrics(Arc::clone(metrics))))
}

/// Runs `work` on the store on a blocking thread, holding its lock only there.
pub(super) async fn store_task<T: Send + 'static>(
    store: &Arc<Mutex<Store>>,
    work: impl FnOnce(&mut Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, PipelineError> {
    let store = Arc::clone(store);
    let result = tokio::task::spawn_blocking(move || {
        work(&mut store.lock().unwrap_or_else(|e| e.into_inner()))
    })
    .await
    .map_err(|e| PipelineError::Task(e.to_string()))?;
    Ok(result?)
}
