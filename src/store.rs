//! The SQLite database: opening with the right pragmas, migrations from `schema/*.sql`, and every
//! write the pipeline makes (one transaction per batch). It knows SQL and nothing about HTTP.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::config::DbConfig;
use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension, TransactionBehavior, params};

pub use crate::domain::{
    AccountState, BatchOutcome, RunStatus, StatusChange, TweetState, TweetStatus,
};
use crate::domain::{Endpoint, Handle, Hour, Metric, TweetId};

/// Migrations in order; file `NNNN_*.sql` brings the database to `user_version` NNNN.
const MIGRATIONS: &[(&str, &str)] = &[
    ("0001_init.sql", include_str!("../schema/0001_init.sql")),
    (
        "0002_recent_coverage.sql",
        include_str!("../schema/0002_recent_coverage.sql"),
    ),
    (
        "0003_series_source_integer.sql",
        include_str!("../schema/0003_series_source_integer.sql"),
    ),
    (
        "0004_due_kinds_and_accounts.sql",
        include_str!("../schema/0004_due_kinds_and_accounts.sql"),
    ),
    (
        "0005_sums_cannot_overflow.sql",
        include_str!("../schema/0005_sums_cannot_overflow.sql"),
    ),
];

/// `series.source`: the endpoint a bucket came from (schema 0003).
fn series_source(endpoint: Endpoint) -> i64 {
    match endpoint {
        Endpoint::Hour28 => 0,
        Endpoint::Historical | Endpoint::Totals => 1,
    }
}

/// The schema version this binary writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// How long the writer waits for a lock another connection holds before a write fails as busy.
/// Other connections hold it for seconds at most: a reader's checkpoint (sqlite3, Datasette, a
/// backup tool closing its connection), a refused `run` recording its failed cycle, someone's
/// short transaction in sqlite3. A connection that keeps it longer is reported, not waited for.
pub const WRITER_BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a reader (`query`, `report`, `check`) waits for a lock: only WAL recovery and a
/// checkpoint's reset hold one against readers, both short.
const READER_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// At most this many problems are asked of an integrity check (`PRAGMA quick_check(N)`): the
/// verdict does not need more, and a badly damaged file reports one per broken cell.
const INTEGRITY_MAX_PROBLEMS: usize = 100;

/// Problems shown in messages; the rest are counted.
const INTEGRITY_SHOWN: usize = 3;

/// Which integrity check to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntegrityCheck {
    /// `PRAGMA quick_check`: every page and b-tree of the file, without comparing indexes with
    /// their tables. Reads the whole file: its cost grows with the database's size.
    Quick,
    /// `PRAGMA integrity_check`: also that every index matches its table.
    Full,
}

impl IntegrityCheck {
    /// The pragma's name.
    pub fn pragma(self) -> &'static str {
        match self {
            IntegrityCheck::Quick => "quick_check",
            IntegrityCheck::Full => "integrity_check",
        }
    }
}

/// What an integrity check found; no problem means the database is sound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Integrity {
    pub check: IntegrityCheck,
    /// The first problems as SQLite words them (cut to 200 characters each).
    pub first: Vec<String>,
    /// How many problems SQLite reported; it stops at [`INTEGRITY_MAX_PROBLEMS`].
    pub count: usize,
}

impl Integrity {
    /// Whether the check found nothing wrong.
    pub fn is_ok(&self) -> bool {
        self.count == 0
    }

    /// "3 problems", "at least 100 problems".
    fn counted(&self) -> String {
        let s = if self.count == 1 { "" } else { "s" };
        if self.count >= INTEGRITY_MAX_PROBLEMS {
            format!("at least {} problem{s}", self.count)
        } else {
            format!("{} problem{s}", self.count)
        }
    }

    /// The first problems, `; `-separated, with how many more there are.
    fn shown(&self) -> String {
        let more = self.count.saturating_sub(self.first.len());
        let more = if more > 0 {
            format!(" (and {more} more)")
        } else {
            String::new()
        };
        format!("{}{more}", self.first.join("; "))
    }
}

/// What can go wrong with the database. Paths are shown absolute; the SQLite error of an
/// open that failed is part of the message (not a separate `source`), so it appears once.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "cannot open database {}: {error}{}",
        crate::lock::absolute(path).display(),
        crate::lock::issue_suffix(issue.as_deref())
    )]
    Open {
        path: PathBuf,
        error: rusqlite::Error,
        /// What is wrong with the database's folder, when that explains the error.
        issue: Option<Box<crate::lock::FolderIssue>>,
    },
    /// A WAL database read-only in a folder this process cannot write, with no `-shm` file.
    #[error(
        "cannot read database {}: {error}; its folder {} is not writable for this process and \
         there is no {}-shm file: SQLite reads a WAL database only through that file, which it \
         must create in the folder. Make the folder writable for this user, read while `run` or \
         `daemon` has the database open (the file exists then), or read a copy of the database \
         in a writable folder",
        crate::lock::absolute(path).display(),
        crate::lock::database_folder(path).display(),
        crate::lock::absolute(path).display()
    )]
    NoShm {
        path: PathBuf,
        error: rusqlite::Error,
    },
    #[error(
        "database {} has schema version {found}, newer than this binary's {supported}; \
         upgrade engagement-ingest (or point database.path at another file)",
        crate::lock::absolute(path).display()
    )]
    TooNew {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    #[error(
        "database {} has schema version {found}, older than this binary's {supported}; \
         run `engagement-ingest migrate` first",
        crate::lock::absolute(path).display()
    )]
    TooOld {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    /// `PRAGMA quick_check` or `integrity_check` found problems.
    #[error(
        "database {} is damaged: PRAGMA {} found {}: {}. Stop every writer (`run`, `daemon`), then \
         restore the file from a backup, or salvage what SQLite can still read into a new file \
         (sqlite3 {} \".recover\" | sqlite3 NEW.sqlite), check it (`engagement-ingest check \
         --thorough` with [database] path set to it) and put it in place; nothing is sent while \
         the database is damaged",
        crate::lock::absolute(path).display(),
        integrity.check.pragma(),
        integrity.counted(),
        integrity.shown(),
        crate::lock::absolute(path).display()
    )]
    Damaged { path: PathBuf, integrity: Integrity },
    /// The file, its folder or SQLite refuses writes.
    #[error(
        "database {} is not writable for this process: {why}. Make the file, its -wal and -shm \
         files and its folder writable for the service's user (or, for a read-only mount, point \
         [database] path at a writable volume); nothing is sent while the database cannot be written",
        crate::lock::absolute(path).display()
    )]
    ReadOnly { path: PathBuf, why: String },
    /// Another connection held the write lock longer than the busy timeout.
    #[error(
        "database {} is busy: another connection held its write lock for more than {} s (an \
         sqlite3 shell or a tool with an open write transaction, a backup holding it): end that \
         transaction or close that connection; nothing is sent while the database cannot be \
         written",
        crate::lock::absolute(path).display(),
        waited.as_secs()
    )]
    Busy { path: PathBuf, waited: Duration },
    #[error("migration {name} failed: {source}")]
    Migration {
        name: &'static str,
        source: rusqlite::Error,
    },
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
}

impl StoreError {
    /// Whether another connection held a lock longer than the busy timeout (the write may
    /// succeed later).
    pub fn is_busy(&self) -> bool {
        match self {
            StoreError::Busy { .. } => true,
            StoreError::Sqlite(e) => is_busy(e),
            _ => false,
        }
    }

    /// Whether nothing more should be written to the database: it is damaged (a write may spread
    /// the damage) or cannot be written at all.
    pub fn forbids_writing(&self) -> bool {
        matches!(
            self,
            StoreError::Damaged { .. } | StoreError::ReadOnly { .. }
        )
    }
}

/// Whether `e` says the file is damaged or not a database.
fn is_damage(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase)
    )
}

/// A column holding a spelling this version does not know: an error, never a default.
fn unknown_value(column: &str, value: &str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        0,
        rusqlite::types::Type::Text,
        format!("{column} holds {value:?}, which this version does not know").into(),
    )
}

/// Whether `e` says another connection held a lock longer than the busy timeout.
fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}

/// How the inventory mirror changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncReport {
    pub added: usize,
    pub owner_changed: usize,
    pub removed: usize,
    pub restored: usize,
}

/// One row of the `requests` ledger.
#[derive(Debug, Clone)]
pub struct BatchRecord {
    pub run_id: i64,
    pub seq: i64,
    pub kind: &'static str,
    pub endpoint: Endpoint,
    /// `bearer` or the account handle; never a secret.
    pub credential: String,
    pub tweet_count: usize,
    pub attempts: u32,
    pub http_status: Option<u16>,
    pub outcome: BatchOutcome,
    pub error: Option<String>,
    pub started_at: i64,
    pub duration_ms: i64,
}

/// The data of one answered `/totals` batch.
#[derive(Debug, Clone, Default)]
pub struct TotalsWrite {
    pub observed_at: i64,
    pub values: Vec<(TweetId, Metric, i64)>,
    /// Tweets the answer covered (their `totals_checked_at` is set).
    pub checked: Vec<TweetId>,
    /// Tweets whose status changed, with the API's words.
    pub status_changes: Vec<StatusChange>,
    /// The account whose token was used, counted in `handle_usage`.
    pub handle: Option<Handle>,
    /// Metrics the API refused for a Tweet (`unsupported_*` lists): never asked again.
    pub unsupported: Vec<(TweetId, Metric)>,
}

/// The data of one answered `/28hr` or `/historical` batch.
#[derive(Debug, Clone)]
pub struct SeriesWrite {
    pub source: Endpoint,
    pub fetched_at: i64,
    /// The answer's window `[start, end)`, hour-aligned Unix seconds.
    pub start: i64,
    pub end: i64,
    /// The (Tweet, metric) pairs the answer named, with the hours `[from, to)` it named them
    /// over (within the window): their stored buckets there are replaced.
    pub answered: Vec<(TweetId, Metric, i64, i64)>,
    /// Buckets; zeros are not stored.
    pub values: Vec<(TweetId, Metric, Hour, i64)>,
    /// `/historical`: the grid cell (start) fetched.
    pub cell: Option<i64>,
    /// The Tweets the answer covered: recorded in `coverage` (`/historical`) or
    /// `recent_coverage` (`/28hr`).
    pub covered: Vec<TweetId>,
    pub status_changes: Vec<StatusChange>,
    pub handle: Option<Handle>,
    /// Metrics the API refused for a Tweet (`unsupported_*` lists): never asked again.
    pub unsupported: Vec<(TweetId, Metric)>,
}

/// Summary of a finished run, as stored in `runs`.
#[derive(Debug, Clone)]
pub struct RunSummary {
    pub finished_at: i64,
    pub status: &'static str,
    pub requests: usize,
    pub failed_batches: usize,
    /// Planned batches that were never sent (the API unreachable, or the process stopping).
    pub not_attempted: usize,
    /// The kinds with a batch that failed after retries (the run is `partial` for them only).
    pub failed_kinds: Vec<&'static str>,
    pub rows_written: usize,
    pub error: Option<String>,
}

/// How a run is recorded when it starts.
#[derive(Debug, Clone, Default)]
pub struct RunStart<'a> {
    /// Every kind the run works on.
    pub kinds: Vec<&'a str>,
    /// Those among `kinds` that only catch up on work an earlier cycle left undone.
    pub catch_up: Vec<&'a str>,
    /// Batches planned.
    pub planned: usize,
    pub started_at: i64,
}

impl<'a> RunStart<'a> {
    /// A full run of `kinds` with nothing planned yet (tests and benchmarks).
    pub fn new(kinds: &[&'a str], started_at: i64) -> RunStart<'a> {
        RunStart {
            kinds: kinds.to_vec(),
            started_at,
            ..RunStart::default()
        }
    }
}

/// A kind's last cycles, as the `runs` table has them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KindHistory {
    /// Start of the last run that planned the kind in full (not only catching up).
    pub last_full_start: Option<i64>,
    /// Status and end of the last finished run of the kind (catch-up runs and runs that failed
    /// before planning included).
    pub last_finished: Option<(RunStatus, i64)>,
    /// End of the last run of the kind that stored everything of it.
    pub last_success: Option<i64>,
    /// Requests of the kind sent since its last full cycle started (that one included): what a
    /// per-run budget has spent in this period.
    pub sent_since_full: usize,
}

/// One row of the `accounts` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountRecord {
    pub handle: String,
    pub state: AccountState,
    pub detail: Option<String>,
    pub since: i64,
    pub checked_at: i64,
}

/// A `/historical` (Tweet, cell) pair fetched but not complete: when, and up to when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenCell {
    pub tweet: TweetId,
    pub cell: i64,
    pub fetched_at: i64,
    pub fetched_until: i64,
}

/// The one writer connection (or a read-only one).
pub struct Store {
    conn: Connection,
    path: PathBuf,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Opens (creating if needed) and migrates the database at `path`.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let mut store = Store::connect(path)?;
        store.migrate()?;
        Ok(store)
    }

    /// Opens (creating if needed) the database for writing, without migrating it.
    pub fn connect(path: &Path) -> Result<Store, StoreError> {
        // Only a failed open looks at the folder (it creates a probe file there).
        let open_error = |error| StoreError::Open {
            path: path.to_path_buf(),
            error,
            issue: crate::lock::folder_issue(path).map(Box::new),
        };
        let conn = Connection::open(path).map_err(open_error)?;
        let store = Store {
            conn,
            path: path.to_path_buf(),
        };
        // WAL mode is set here: the first moment SQLite needs the -wal and -shm files.
        store.configure().map_err(open_error)?;
        Ok(store)
    }

    /// Opens an existing database read-only, refusing one whose schema is not this binary's.
    pub fn open_read_only(path: &Path) -> Result<Store, StoreError> {
        // SQLite opens lazily: a folder that stops a WAL reader shows at the first read.
        let explain = |error: rusqlite::Error| {
            let issue = crate::lock::folder_issue(path);
            let mut shm = path.as_os_str().to_owned();
            shm.push("-shm");
            match issue {
                Some(crate::lock::FolderIssue {
                    problem: crate::lock::FolderProblem::NotWritable(_),
                    ..
                }) if !Path::new(&shm).exists() => StoreError::NoShm {
                    path: path.to_path_buf(),
                    error,
                },
                issue => StoreError::Open {
                    path: path.to_path_buf(),
                    error,
                    issue: issue.map(Box::new),
                },
            }
        };
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(explain)?;
        conn.busy_timeout(READER_BUSY_TIMEOUT)?;
        let store = Store {
            conn,
            path: path.to_path_buf(),
        };
        let found = match store.schema_version() {
            Err(StoreError::Sqlite(error)) => {
                return Err(match explain(error) {
                    // Not the folder's fault (not a database, corrupt): the error as it was.
                    StoreError::Open {
                        error, issue: None, ..
                    } => StoreError::Sqlite(error),
                    explained => explained,
                });
            }
            other => other?,
        };
        store.check_version(found)?;
        if found < SCHEMA_VERSION {
            return Err(StoreError::TooOld {
                path: store.path.clone(),
                found,
                supported: SCHEMA_VERSION,
            });
        }
        Ok(store)
    }

    fn configure(&self) -> rusqlite::Result<()> {
        self.conn.busy_timeout(WRITER_BUSY_TIMEOUT)?;
        // journal_mode answers with a row, so it is read rather than executed.
        let _mode: String = self
            .conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        self.conn
            .execute_batch("PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL;")?;
        Ok(())
    }

    /// Opens an existing database for writing and changes nothing: it is not created nor
    /// migrated, its journal mode is kept, and closing does not checkpoint. `check` proves with
    /// it that `run` could write.
    pub fn connect_existing(path: &Path) -> Result<Store, StoreError> {
        let open_error = |error| StoreError::Open {
            path: path.to_path_buf(),
            error,
            issue: crate::lock::folder_issue(path).map(Box::new),
        };
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(open_error)?;
        conn.busy_timeout(WRITER_BUSY_TIMEOUT).map_err(open_error)?;
        conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)
            .map_err(open_error)?;
        Ok(Store {
            conn,
            path: path.to_path_buf(),
        })
    }

    /// What a writer proves before a cycle sends anything: `PRAGMA quick_check` finds the
    /// database sound, its folder takes the files SQLite creates, and it can be written (see
    /// [`Store::prove_writable`]). Waits up to [`WRITER_BUSY_TIMEOUT`] for another
    /// connection's write lock.
    pub fn preflight(&self) -> Result<(), StoreError> {
        let started = std::time::Instant::now();
        self.ensure_sound(IntegrityCheck::Quick)?;
        let checked = started.elapsed();
        self.prove_folder()?;
        self.prove_writable()?;
        tracing::debug!(
            quick_check_seconds = checked.as_secs_f64(),
            seconds = started.elapsed().as_secs_f64(),
            "The database passed quick_check and can be written"
        );
        Ok(())
    }

    /// `PRAGMA quick_check`: the problems it finds (none: the database is sound).
    pub fn quick_check(&self) -> Result<Integrity, StoreError> {
        self.check_integrity(IntegrityCheck::Quick)
    }

    /// `PRAGMA integrity_check`: the problems it finds (none: the database is sound).
    pub fn integrity_check(&self) -> Result<Integrity, StoreError> {
        self.check_integrity(IntegrityCheck::Full)
    }

    /// Runs `check`; [`StoreError::Damaged`] when it finds a problem.
    pub fn ensure_sound(&self, check: IntegrityCheck) -> Result<(), StoreError> {
        let integrity = self.check_integrity(check)?;
        if integrity.is_ok() {
            Ok(())
        } else {
            Err(StoreError::Damaged {
                path: self.path.clone(),
                integrity,
            })
        }
    }

    /// Runs `check` and collects what it reports, at most [`INTEGRITY_MAX_PROBLEMS`] problems.
    pub fn check_integrity(&self, check: IntegrityCheck) -> Result<Integrity, StoreError> {
        let sql = format!("PRAGMA {}({INTEGRITY_MAX_PROBLEMS})", check.pragma());
        let mut problems: Vec<String> = Vec::new();
        let read = (|| {
            let mut stmt = self.conn.prepare(&sql)?;
            let mut rows = stmt.query([])?;
            while let Some(row) = rows.next()? {
                let text: String = row.get(0)?;
                // A row may hold several problems, one a line, headed by "*** in database
                // main ***", which is not one.
                problems.extend(
                    text.lines()
                        .filter(|l| *l != "ok" && !l.starts_with("*** ") && !l.trim().is_empty())
                        .map(str::to_string),
                );
            }
            Ok::<_, rusqlite::Error>(())
        })();
        match read {
            Ok(()) => {}
            // Damage where the check itself must read (the schema, a b-tree's root) stops it.
            Err(e) if is_damage(&e) => problems.push(e.to_string()),
            Err(e) => return Err(e.into()),
        }
        let count = problems.len();
        let first = problems
            .into_iter()
            .take(INTEGRITY_SHOWN)
            .map(|p| match p.char_indices().nth(200) {
                Some((i, _)) => format!("{}…", &p[..i]),
                None => p,
            })
            .collect();
        Ok(Integrity {
            check,
            first,
            count,
        })
    }

    /// The database's folder takes new files (SQLite creates the -wal, -shm and journal files
    /// there), or every file a writer needs exists and is writable.
    fn prove_folder(&self) -> Result<(), StoreError> {
        use crate::lock::FolderProblem;
        match crate::lock::folder_issue(&self.path) {
            None => Ok(()),
            Some(issue)
                if matches!(issue.problem, FolderProblem::NotWritable(_))
                    && crate::lock::writer_files_writable(&self.path) =>
            {
                Ok(())
            }
            Some(issue) => {
                let os = match &issue.problem {
                    FolderProblem::NotWritable(os) | FolderProblem::Inaccessible(os) => {
                        format!(" ({os})")
                    }
                    FolderProblem::Missing | FolderProblem::NotAFolder => String::new(),
                };
                Err(StoreError::ReadOnly {
                    path: self.path.clone(),
                    why: format!("{issue}{os}"),
                })
            }
        }
    }

    /// Proves this connection can write: the file is writable for this process, SQLite did not
    /// open it read-only, and a write transaction can begin (it is rolled back: nothing is
    /// written). Waits up to the connection's busy timeout for another connection's write lock:
    /// [`StoreError::Busy`] when it is held longer.
    pub fn prove_writable(&self) -> Result<(), StoreError> {
        let read_only = |why: String| StoreError::ReadOnly {
            path: self.path.clone(),
            why,
        };
        // access(2), not an open: closing a descriptor of a file SQLite has open would drop
        // SQLite's POSIX locks on it.
        if let Err(e) = rustix::fs::access(&self.path, rustix::fs::Access::WRITE_OK) {
            let e = std::io::Error::from(e);
            return Err(read_only(format!("the file cannot be written ({e})")));
        }
        if self.conn.is_readonly(rusqlite::MAIN_DB)? {
            return Err(read_only(
                "SQLite opened it read-only (the file, or its -wal or -shm file, is not writable \
                 for this process)"
                    .to_string(),
            ));
        }
        let started = std::time::Instant::now();
        if let Err(e) = self.conn.execute_batch("BEGIN IMMEDIATE") {
            return Err(if is_busy(&e) {
                StoreError::Busy {
                    path: self.path.clone(),
                    waited: started.elapsed(),
                }
            } else if e.sqlite_error_code() == Some(ErrorCode::ReadOnly) {
                read_only(format!("SQLite refuses to begin a write transaction ({e})"))
            } else {
                e.into()
            });
        }
        self.conn.execute_batch("ROLLBACK")?;
        Ok(())
    }

    /// The database's `PRAGMA user_version`.
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        Ok(self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))?)
    }

    fn check_version(&self, found: i64) -> Result<(), StoreError> {
        if found > SCHEMA_VERSION {
            return Err(StoreError::TooNew {
                path: self.path.clone(),
                found,
                supported: SCHEMA_VERSION,
            });
        }
        Ok(())
    }

    /// Applies every migration above the current version, each in its own transaction.
    /// Returns the versions before and after.
    pub fn migrate(&mut self) -> Result<(i64, i64), StoreError> {
        let before = self.schema_version()?;
        self.check_version(before)?;
        for (i, (name, sql)) in MIGRATIONS.iter().enumerate() {
            let version = i as i64 + 1;
            if version <= before {
                continue;
            }
            let tx = self.write_transaction()?;
            tx.execute_batch(sql)
                .map_err(|source| StoreError::Migration { name, source })?;
            tx.pragma_update(None, "user_version", version)?;
            tx.commit()?;
            tracing::info!(migration = name, version, "applied migration");
        }
        Ok((before, SCHEMA_VERSION))
    }

    /// A transaction that takes the write lock as it begins (`BEGIN IMMEDIATE`), waiting up to
    /// the busy timeout for it. A deferred one that reads first cannot wait: when another
    /// connection holds the lock, its upgrade to a write fails at once with SQLITE_BUSY whatever
    /// the timeout, and the batch in it would be lost.
    fn write_transaction(&mut self) -> rusqlite::Result<rusqlite::Transaction<'_>> {
        self.conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
    }

    /// The path the store was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Direct read access for queries and tests.
    pub fn conn(&self) -> &Connection {
        &self.conn
    }

    /// Mirrors the inventory into `tweets`: new Tweets are added, changed owners updated, Tweets
    /// no longer listed get `removed_at` (their data stays), listed-again ones lose it.
    pub fn sync_inventory<'a>(
        &mut self,
        entries: impl IntoIterator<Item = (TweetId, Option<&'a Handle>)>,
        now: i64,
    ) -> Result<SyncReport, StoreError> {
        let tx = self.write_transaction()?;
        let mut known: HashMap<i64, (Option<String>, bool)> = HashMap::new();
        {
            let mut stmt =
                tx.prepare("SELECT tweet_id, listed_owner, removed_at IS NOT NULL FROM tweets")?;
            let rows = stmt.query_map([], |r| Ok((r.get::<_, i64>(0)?, (r.get(1)?, r.get(2)?))))?;
            for row in rows {
                let (id, v) = row?;
                known.insert(id, v);
            }
        }
        let mut report = SyncReport::default();
        {
            let mut insert = tx.prepare(
                "INSERT INTO tweets (tweet_id, owner, listed_owner, created_at, first_seen_at) \
                 VALUES (?1, ?2, ?2, ?3, ?4)",
            )?;
            let mut set_owner = tx.prepare(
                "UPDATE tweets SET owner = ?2, listed_owner = ?2, status = 'active', status_detail = NULL, \
                 status_changed_at = ?3, status_checked_at = NULL WHERE tweet_id = ?1",
            )?;
            let mut restore =
                tx.prepare("UPDATE tweets SET removed_at = NULL WHERE tweet_id = ?1")?;
            for (id, owner) in entries {
                let key = id.get() as i64;
                let owner = owner.map(Handle::as_str);
                match known.remove(&key) {
                    None => {
                        insert.execute(params![key, owner, id.created_at(), now])?;
                        report.added += 1;
                    }
                    Some((old_owner, removed)) => {
                        if old_owner.as_deref() != owner {
                            set_owner.execute(params![key, owner, now])?;
                            report.owner_changed += 1;
                        }
                        if removed {
                            restore.execute([key])?;
                            report.restored += 1;
                        }
                    }
                }
            }
            let mut remove = tx.prepare("UPDATE tweets SET removed_at = ?2 WHERE tweet_id = ?1")?;
            for (id, (_, removed)) in known {
                if !removed {
                    remove.execute(params![id, now])?;
                    report.removed += 1;
                }
            }
        }
        tx.commit()?;
        Ok(report)
    }

    /// What the planner needs of every known Tweet: its status, when `/totals` and `/28hr` last
    /// answered for it, and the metrics the API refused for it.
    pub fn tweet_states(&self) -> Result<HashMap<TweetId, TweetState>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT w.tweet_id, w.status, w.status_checked_at, w.totals_checked_at, \
             w.unsupported_metrics, r.fetched_at \
             FROM tweets AS w LEFT JOIN recent_coverage AS r USING (tweet_id) \
             WHERE w.removed_at IS NULL AND (w.status <> 'active' OR w.totals_checked_at IS NOT NULL \
             OR w.unsupported_metrics <> 0 OR r.fetched_at IS NOT NULL)",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<i64>>(2)?,
                r.get::<_, Option<i64>>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, Option<i64>>(5)?,
            ))
        })?;
        let mut out = HashMap::new();
        for row in rows {
            let (id, status, status_checked_at, totals_checked_at, unsupported, hourly) = row?;
            if let Some(id) = TweetId::new(id as u64) {
                let status = TweetStatus::parse(&status)
                    .ok_or_else(|| unknown_value("tweets.status", &status))?;
                out.insert(
                    id,
                    TweetState {
                        status,
                        status_checked_at,
                        totals_checked_at,
                        unsupported: u32::try_from(unsupported).unwrap_or(0),
                        hourly_fetched_at: hourly,
                    },
                );
            }
        }
        Ok(out)
    }

    /// Tweets the API attributes to another configured account than the inventory does.
    pub fn moved_owners(&self) -> Result<HashMap<TweetId, Handle>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT tweet_id, owner FROM tweets WHERE removed_at IS NULL \
             AND owner IS NOT listed_owner AND owner IS NOT NULL",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))?;
        let mut out = HashMap::new();
        for row in rows {
            let (id, owner) = row?;
            if let (Some(id), Ok(owner)) = (TweetId::new(id as u64), owner.parse()) {
                out.insert(id, owner);
            }
        }
        Ok(out)
    }

    /// Starts a run and returns its id.
    pub fn begin_run(&mut self, start: &RunStart<'_>) -> Result<i64, StoreError> {
        self.conn.execute(
            "INSERT INTO runs (kinds, catch_up, planned, started_at) VALUES (?1, ?2, ?3, ?4)",
            params![
                start.kinds.join(","),
                start.catch_up.join(","),
                start.planned as i64,
                start.started_at
            ],
        )?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Closes a run with its outcome. A database still busy after the busy timeout is waited
    /// for once more before giving up, so that a run is not left `running` by another
    /// connection's long transaction.
    pub fn finish_run(&mut self, run_id: i64, summary: &RunSummary) -> Result<(), StoreError> {
        let update = |conn: &Connection| {
            conn.execute(
                "UPDATE runs SET finished_at = ?2, status = ?3, requests = ?4, failed_batches = ?5, \
                 rows_written = ?6, error = ?7, not_attempted = ?8, failed_kinds = ?9 WHERE run_id = ?1",
                params![
                    run_id,
                    summary.finished_at,
                    summary.status,
                    summary.requests as i64,
                    summary.failed_batches as i64,
                    summary.rows_written as i64,
                    summary.error,
                    summary.not_attempted as i64,
                    summary.failed_kinds.join(",")
                ],
            )
        };
        match update(&self.conn) {
            Err(e) if is_busy(&e) => {
                tracing::warn!(
                    run_id,
                    error = %e,
                    "Cannot record the end of the run: another connection holds the database's \
                     write lock; waiting once more"
                );
                match update(&self.conn) {
                    Ok(_) => {
                        tracing::info!(run_id, "Recorded the end of the run at the second try");
                        Ok(())
                    }
                    Err(e) => {
                        tracing::error!(
                            run_id,
                            error = %e,
                            "The end of the run is not recorded: it stays `running` in the runs \
                             table until the next run marks it interrupted"
                        );
                        Err(e.into())
                    }
                }
            }
            other => other.map(|_| ()).map_err(StoreError::from),
        }
    }

    /// Records a cycle of `kinds` that failed before it planned anything (config, inventory,
    /// database, lock), so that `runs` shows every cycle. Safe without the writer lock: one
    /// INSERT, serialised by SQLite like any other write. Returns the run id.
    pub fn record_failed_cycle(
        &mut self,
        kinds: &[&str],
        started_at: i64,
        finished_at: i64,
        error: &str,
    ) -> Result<i64, StoreError> {
        self.conn.execute(
            "INSERT INTO runs (kinds, started_at, finished_at, status, error) \
             VALUES (?1, ?2, ?3, 'failed', ?4)",
            params![kinds.join(","), started_at, finished_at, error],
        )?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Per kind: the start of the last run that planned it in full, the last finished run of
    /// it, and the end of its last `ok` run.
    pub fn kind_history(&self, kind: &str) -> Result<KindHistory, StoreError> {
        let has = "(',' || kinds || ',') LIKE '%,' || ?1 || ',%'";
        // The latest such run, not the latest start: after a clock was set back, the run that
        // started "in the future" is not the last one.
        let full = format!(
            "SELECT run_id, started_at FROM runs WHERE planned IS NOT NULL AND {has} \
             AND (',' || catch_up || ',') NOT LIKE '%,' || ?1 || ',%' ORDER BY run_id DESC LIMIT 1"
        );
        let last_full: Option<(i64, i64)> = self
            .conn
            .query_row(&full, [kind], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        let last_full_start = last_full.map(|(_, started)| started);
        // Cycles refused before planning (another writer held the lock, a bad config) say
        // nothing of how the kind's own last cycle went.
        let last = format!(
            "SELECT status, finished_at, (',' || failed_kinds || ',') LIKE '%,' || ?1 || ',%' \
             FROM runs WHERE status != 'running' AND finished_at IS NOT NULL \
             AND planned IS NOT NULL AND {has} ORDER BY run_id DESC LIMIT 1"
        );
        let last_finished = self
            .conn
            .query_row(&last, [kind], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, bool>(2)?,
                ))
            })
            .optional()?
            .map(|(status, at, failed_here)| {
                // A run is partial when any of its kinds failed a batch; this kind is ok if it
                // was not one of them.
                let status = match RunStatus::parse(&status)
                    .ok_or_else(|| unknown_value("runs.status", &status))?
                {
                    RunStatus::Partial if !failed_here => RunStatus::Ok,
                    s => s,
                };
                Ok::<_, rusqlite::Error>((status, at))
            })
            .transpose()?;
        let ok = format!(
            "SELECT max(finished_at) FROM runs WHERE {has} AND (status = 'ok' OR \
             (status = 'partial' AND (',' || failed_kinds || ',') NOT LIKE '%,' || ?1 || ',%'))"
        );
        let last_success: Option<i64> = self.conn.query_row(&ok, [kind], |r| r.get(0))?;
        let sent_since_full = match last_full {
            None => 0,
            Some((run_id, _)) => self.conn.query_row(
                "SELECT count(*) FROM requests WHERE kind = ?1 AND run_id >= ?2",
                params![kind, run_id],
                |r| r.get::<_, i64>(0),
            )? as usize,
        };
        Ok(KindHistory {
            last_full_start,
            last_finished,
            last_success,
            sent_since_full,
        })
    }

    /// Every row of the `accounts` table, by handle.
    pub fn accounts(&self) -> Result<Vec<AccountRecord>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT handle, state, detail, since, checked_at FROM accounts ORDER BY handle",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<String>>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, i64>(4)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (handle, state, detail, since, checked_at) = row?;
            let state = AccountState::parse(&state)
                .ok_or_else(|| unknown_value("accounts.state", &state))?;
            out.push(AccountRecord {
                handle,
                state,
                detail,
                since,
                checked_at,
            });
        }
        Ok(out)
    }

    /// Records what a run found of an account; `since` moves only when the state changes.
    pub fn set_account_state(
        &mut self,
        handle: &str,
        state: AccountState,
        detail: Option<&str>,
        now: i64,
    ) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO accounts (handle, state, detail, since, checked_at) VALUES (?1, ?2, ?3, ?4, ?4) \
             ON CONFLICT (handle) DO UPDATE SET \
             since = CASE WHEN state <> excluded.state THEN excluded.since ELSE since END, \
             state = excluded.state, detail = excluded.detail, checked_at = excluded.checked_at",
            params![handle, state.as_str(), detail, now],
        )?;
        Ok(())
    }

    /// Forgets what is known of one account.
    pub fn forget_account(&mut self, handle: &str) -> Result<(), StoreError> {
        self.conn
            .execute("DELETE FROM accounts WHERE handle = ?1", [handle])?;
        Ok(())
    }

    /// Forgets accounts no longer configured.
    pub fn retain_accounts(&mut self, handles: &[&str]) -> Result<usize, StoreError> {
        let keep: std::collections::HashSet<&str> = handles.iter().copied().collect();
        let gone: Vec<String> = self
            .accounts()?
            .into_iter()
            .map(|a| a.handle)
            .filter(|h| !keep.contains(h.as_str()))
            .collect();
        for h in &gone {
            self.conn
                .execute("DELETE FROM accounts WHERE handle = ?1", [h])?;
        }
        Ok(gone.len())
    }

    /// Marks every run still `running` as interrupted at `now`: called with the writer lock
    /// held, so no other process is running them (a killed process left them so). Returns how
    /// many were marked.
    pub fn close_stale_runs(&mut self, now: i64) -> Result<usize, StoreError> {
        Ok(self.conn.execute(
            "UPDATE runs SET status = 'interrupted', finished_at = ?1, \
             error = coalesce(error, 'the process ended before the run finished') \
             WHERE status = 'running'",
            params![now],
        )?)
    }

    /// Records a batch that produced no data (it failed, or was refused as a whole), with the
    /// statuses it revealed and the Tweets the API says belong to another configured account.
    pub fn record_batch(
        &mut self,
        record: &BatchRecord,
        status_changes: &[StatusChange],
        moved: &[(TweetId, Handle)],
    ) -> Result<(), StoreError> {
        let tx = self.write_transaction()?;
        apply_status_changes(&tx, status_changes, record.started_at)?;
        {
            let mut stmt = tx.prepare_cached("UPDATE tweets SET owner = ?2 WHERE tweet_id = ?1")?;
            for (id, owner) in moved {
                stmt.execute(params![id.get() as i64, owner.as_str()])?;
            }
        }
        insert_request(&tx, record, 0)?;
        tx.commit()?;
        Ok(())
    }

    /// Writes one answered `/totals` batch, its ledger row and its handle usage in one
    /// transaction. Values equal to the latest stored snapshot are skipped (change-only).
    /// Returns the number of snapshot rows written.
    pub fn write_totals_batch(
        &mut self,
        record: &BatchRecord,
        data: &TotalsWrite,
    ) -> Result<usize, StoreError> {
        let tx = self.write_transaction()?;
        let mut written = 0;
        {
            // The latest value of every metric of one Tweet in one statement (a seek per
            // metric inside SQLite), rather than one statement per value.
            let mut latest = tx.prepare_cached(
                "SELECT m.metric_id, (SELECT t.value FROM totals AS t \
                 WHERE t.tweet_id = ?1 AND t.metric_id = m.metric_id \
                 ORDER BY t.observed_at DESC LIMIT 1) \
                 FROM metrics AS m WHERE m.metric_id BETWEEN ?2 AND ?3",
            )?;
            let mut insert = tx.prepare_cached(
                "INSERT INTO totals (tweet_id, metric_id, observed_at, value) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (tweet_id, metric_id, observed_at) DO UPDATE SET value = excluded.value",
            )?;
            let ids = data.values.iter().map(|(_, m, _)| m.id());
            let (low, high) = (ids.clone().min().unwrap_or(0), ids.max().unwrap_or(0));
            let mut current: Option<TweetId> = None;
            let mut prev_of = [None::<i64>; Metric::ALL.len() + 1];
            for &(id, metric, value) in &data.values {
                let key = id.get() as i64;
                if current != Some(id) {
                    current = Some(id);
                    prev_of = [None; Metric::ALL.len() + 1];
                    let mut rows = latest.query(params![key, low, high])?;
                    while let Some(row) = rows.next()? {
                        let m: i64 = row.get(0)?;
                        if let Some(slot) = usize::try_from(m).ok().and_then(|m| prev_of.get_mut(m))
                        {
                            *slot = row.get(1)?;
                        }
                    }
                }
                let prev = usize::try_from(metric.id())
                    .ok()
                    .and_then(|m| prev_of.get(m).copied().flatten());
                if prev != Some(value) {
                    written +=
                        insert.execute(params![key, metric.id(), data.observed_at, value])?;
                    prev_of[usize::try_from(metric.id()).unwrap_or(0)] = Some(value);
                }
            }
            let mut checked =
                tx.prepare_cached("UPDATE tweets SET totals_checked_at = ?2 WHERE tweet_id = ?1")?;
            for id in &data.checked {
                checked.execute(params![id.get() as i64, data.observed_at])?;
            }
        }
        apply_status_changes(&tx, &data.status_changes, data.observed_at)?;
        note_unsupported(&tx, &data.unsupported)?;
        if let Some(handle) = &data.handle {
            note_handle_usage(&tx, handle, data.observed_at)?;
        }
        insert_request(&tx, record, written)?;
        tx.commit()?;
        Ok(written)
    }

    /// The (Tweet, cell start) pairs whose `/historical` cell is complete: a fetch reached its
    /// end at least `settle_secs` after the cell ended (so late-settling numbers are in).
    pub fn complete_cells(
        &self,
        cell_secs: i64,
        settle_secs: i64,
    ) -> Result<Vec<(TweetId, i64)>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT tweet_id, cell FROM coverage \
             WHERE fetched_until >= cell + ?1 AND fetched_at >= cell + ?1 + ?2",
        )?;
        let rows = stmt.query_map([cell_secs, settle_secs], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, cell) = row?;
            if let Some(id) = TweetId::new(id as u64) {
                out.push((id, cell));
            }
        }
        Ok(out)
    }

    /// The `/historical` (Tweet, cell) pairs fetched but not complete (see [`Store::complete_cells`]):
    /// cells that ran into the present when fetched, or ended too recently to have settled.
    pub fn open_cells(
        &self,
        cell_secs: i64,
        settle_secs: i64,
    ) -> Result<Vec<OpenCell>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT tweet_id, cell, fetched_at, fetched_until FROM coverage \
             WHERE NOT (fetched_until >= cell + ?1 AND fetched_at >= cell + ?1 + ?2)",
        )?;
        let rows = stmt.query_map([cell_secs, settle_secs], |r| {
            Ok((r.get::<_, i64>(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, cell, fetched_at, fetched_until) = row?;
            if let Some(tweet) = TweetId::new(id as u64) {
                out.push(OpenCell {
                    tweet,
                    cell,
                    fetched_at,
                    fetched_until,
                });
            }
        }
        Ok(out)
    }

    /// Writes one answered `/28hr` or `/historical` batch, its coverage, its ledger row and its
    /// handle usage in one transaction. The answer is dense over `[start, end)`: stored buckets
    /// of the answered (Tweet, metric) pairs in that window are replaced by the non-zero ones, so
    /// a bucket that turned to zero disappears. Returns the number of bucket rows written.
    pub fn write_series_batch(
        &mut self,
        record: &BatchRecord,
        data: &SeriesWrite,
    ) -> Result<usize, StoreError> {
        let tx = self.write_transaction()?;
        let mut written = 0;
        {
            let mut clear = tx.prepare_cached(
                "DELETE FROM series WHERE tweet_id = ?1 AND metric_id = ?2 AND hour >= ?3 AND hour < ?4",
            )?;
            for &(id, metric, from, to) in &data.answered {
                let (from, to) = (from.max(data.start), to.min(data.end));
                if from < to {
                    clear.execute(params![id.get() as i64, metric.id(), from, to])?;
                }
            }
            let mut insert = tx.prepare_cached(
                "INSERT INTO series (tweet_id, metric_id, hour, value, source, fetched_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (tweet_id, metric_id, hour) \
                 DO UPDATE SET value = excluded.value, source = excluded.source, fetched_at = excluded.fetched_at",
            )?;
            let source = series_source(data.source);
            for &(id, metric, hour, value) in &data.values {
                if value != 0 && (data.start..data.end).contains(&hour.secs()) {
                    written += insert.execute(params![
                        id.get() as i64,
                        metric.id(),
                        hour.secs(),
                        value,
                        source,
                        data.fetched_at
                    ])?;
                }
            }
            if let Some(cell) = data.cell {
                let mut cover = tx.prepare_cached(
                    "INSERT INTO coverage (tweet_id, cell, fetched_at, fetched_until) VALUES (?1, ?2, ?3, ?4) \
                     ON CONFLICT (tweet_id, cell) DO UPDATE SET fetched_at = excluded.fetched_at, \
                     fetched_until = excluded.fetched_until",
                )?;
                for id in &data.covered {
                    cover.execute(params![id.get() as i64, cell, data.fetched_at, data.end])?;
                }
            } else {
                let mut cover = tx.prepare_cached(
                    "INSERT INTO recent_coverage (tweet_id, fetched_from, fetched_until, fetched_at) \
                     VALUES (?1, ?2, ?3, ?4) ON CONFLICT (tweet_id) DO UPDATE SET \
                     fetched_from = CASE WHEN excluded.fetched_from <= fetched_until \
                         AND excluded.fetched_until >= fetched_from \
                         THEN min(fetched_from, excluded.fetched_from) ELSE excluded.fetched_from END, \
                     fetched_until = CASE WHEN excluded.fetched_from <= fetched_until \
                         AND excluded.fetched_until >= fetched_from \
                         THEN max(fetched_until, excluded.fetched_until) ELSE excluded.fetched_until END, \
                     fetched_at = excluded.fetched_at",
                )?;
                for id in &data.covered {
                    cover.execute(params![
                        id.get() as i64,
                        data.start,
                        data.end,
                        data.fetched_at
                    ])?;
                }
            }
        }
        apply_status_changes(&tx, &data.status_changes, data.fetched_at)?;
        note_unsupported(&tx, &data.unsupported)?;
        if let Some(handle) = &data.handle {
            note_handle_usage(&tx, handle, data.fetched_at)?;
        }
        insert_request(&tx, record, written)?;
        tx.commit()?;
        Ok(written)
    }

    /// The Tweets with the highest latest value of `metric`: (id, owner, value).
    pub fn top_by_latest(
        &self,
        metric: Metric,
        limit: usize,
    ) -> Result<Vec<(TweetId, Option<String>, i64)>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT tweet_id, owner, value FROM latest_totals WHERE metric = ?1 \
             ORDER BY value DESC, tweet_id LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![metric.as_str(), limit as i64], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, Option<String>>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, owner, value) = row?;
            if let Some(id) = TweetId::new(id as u64) {
                out.push((id, owner, value));
            }
        }
        Ok(out)
    }

    /// Per account and UTC day from `since` (Unix seconds) on, the sum of `metric`'s hourly
    /// buckets: (handle, `YYYY-MM-DD`, value), ordered by handle and day.
    pub fn daily_by_owner(
        &self,
        metric: Metric,
        since: i64,
    ) -> Result<Vec<(String, String, i64)>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT w.owner, date(s.hour, 'unixepoch') AS day, CAST(total(s.value) AS INTEGER) FROM series AS s \
             JOIN tweets AS w USING (tweet_id) \
             WHERE s.metric_id = ?1 AND w.owner IS NOT NULL AND s.hour >= ?2 \
             GROUP BY w.owner, day ORDER BY w.owner, day",
        )?;
        let rows = stmt.query_map(params![metric.id(), since], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Number of rows in `table` (one of the schema's tables or views).
    pub fn count(&self, table: &str) -> Result<i64, StoreError> {
        const TABLES: &[&str] = &[
            "tweets",
            "totals",
            "series",
            "coverage",
            "runs",
            "requests",
            "handle_usage",
            "latest_totals",
            "hourly",
            "daily",
        ];
        assert!(
            TABLES.contains(&table),
            "count() is only for schema tables, not {table:?}"
        );
        Ok(self
            .conn
            .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))?)
    }
}

fn apply_status_changes(
    tx: &rusqlite::Transaction<'_>,
    changes: &[StatusChange],
    now: i64,
) -> rusqlite::Result<()> {
    // Every report refreshes status_checked_at (what resting periods count from); the change
    // time moves only when the status does. SET reads the old row, so the CASE sees the old status.
    let mut stmt = tx.prepare_cached(
        "UPDATE tweets SET status_changed_at = CASE WHEN status <> ?2 THEN ?4 ELSE status_changed_at END, \
         status = ?2, status_detail = ?3, status_checked_at = ?4 WHERE tweet_id = ?1",
    )?;
    for (id, status, detail) in changes {
        stmt.execute(params![id.get() as i64, status.as_str(), detail, now])?;
    }
    Ok(())
}

fn note_unsupported(
    tx: &rusqlite::Transaction<'_>,
    refused: &[(TweetId, Metric)],
) -> rusqlite::Result<()> {
    let mut stmt = tx.prepare_cached(
        "UPDATE tweets SET unsupported_metrics = unsupported_metrics | (1 << ?2) WHERE tweet_id = ?1",
    )?;
    for (id, metric) in refused {
        stmt.execute(params![id.get() as i64, metric.id()])?;
    }
    Ok(())
}

fn note_handle_usage(
    tx: &rusqlite::Transaction<'_>,
    handle: &Handle,
    now: i64,
) -> rusqlite::Result<()> {
    let month = crate::domain::iso_utc(now)[..7].to_string();
    tx.prepare_cached(
        "INSERT INTO handle_usage (month, handle, requests, first_used_at, last_used_at) \
         VALUES (?1, ?2, 1, ?3, ?3) ON CONFLICT (month, handle) \
         DO UPDATE SET requests = requests + 1, last_used_at = excluded.last_used_at",
    )?
    .execute(params![month, handle.as_str(), now])?;
    Ok(())
}

fn insert_request(
    tx: &rusqlite::Transaction<'_>,
    r: &BatchRecord,
    rows: usize,
) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO requests (run_id, seq, kind, endpoint, credential, tweet_count, attempts, \
         http_status, outcome, error, rows, started_at, duration_ms) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
    )?
    .execute(params![
        r.run_id,
        r.seq,
        r.kind,
        r.endpoint.name(),
        r.credential,
        r.tweet_count as i64,
        r.attempts,
        r.http_status,
        r.outcome.as_str(),
        r.error,
        rows as i64,
        r.started_at,
        r.duration_ms
    ])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u64) -> TweetId {
        TweetId::from_snowflake(1_700_000_000_000 + n as i64 * 1000, 1)
    }

    fn record(run_id: i64, seq: i64) -> BatchRecord {
        BatchRecord {
            run_id,
            seq,
            kind: "totals",
            endpoint: Endpoint::Totals,
            credential: "bearer".into(),
            tweet_count: 2,
            attempts: 1,
            http_status: Some(200),
            outcome: BatchOutcome::Ok,
            error: None,
            started_at: 1_800_000_000,
            duration_ms: 12,
        }
    }

    #[test]
    fn migrations_set_user_version_and_pragmas() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("e.sqlite")).unwrap();
        assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
        let mode: String = store
            .conn()
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let fk: i64 = store
            .conn()
            .query_row("PRAGMA foreign_keys", [], |r| r.get(0))
            .unwrap();
        assert_eq!(fk, 1);
        // metric ids in the schema match the domain's.
        for m in Metric::ALL {
            let name: String = store
                .conn()
                .query_row(
                    "SELECT name FROM metrics WHERE metric_id = ?1",
                    [m.id()],
                    |r| r.get(0),
                )
                .unwrap();
            assert_eq!(name, m.as_str());
        }
        // Re-opening applies nothing and keeps the version.
        drop(store);
        let mut again = Store::open(&dir.path().join("e.sqlite")).unwrap();
        assert_eq!(again.migrate().unwrap(), (SCHEMA_VERSION, SCHEMA_VERSION));
    }

    /// Version 3 rebuilds `series` with an integer `source`; buckets stored by version 1 keep
    /// their values and views keep working.
    #[test]
    fn migration_3_turns_series_source_into_an_integer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.sqlite");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(MIGRATIONS[0].1).unwrap();
            conn.pragma_update(None, "user_version", 1).unwrap();
            conn.execute_batch(
                "INSERT INTO tweets (tweet_id, created_at, first_seen_at) VALUES (5, 0, 0);
                 INSERT INTO series VALUES (5, 1, 3600, 7, '28hr', 9), (5, 1, 7200, 8, 'historical', 9);",
            )
            .unwrap();
        }
        let store = Store::open(&path).unwrap();
        let rows: Vec<(i64, i64, i64)> = store
            .conn()
            .prepare("SELECT hour, value, source FROM series ORDER BY hour")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(rows, vec![(3600, 7, 0), (7200, 8, 1)]);
        assert_eq!(store.count("hourly").unwrap(), 2);
        assert_eq!(store.count("daily").unwrap(), 1);
    }

    /// Version 4 counts the runs of earlier versions as full cycles of their kinds, so the first
    /// run after an upgrade does not repeat a cycle that just ran.
    #[test]
    fn migration_4_keeps_earlier_runs_as_full_cycles() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.sqlite");
        {
            let conn = Connection::open(&path).unwrap();
            for (_, sql) in &MIGRATIONS[..3] {
                conn.execute_batch(sql).unwrap();
            }
            conn.pragma_update(None, "user_version", 3).unwrap();
            conn.execute_batch(
                "INSERT INTO runs (kinds, started_at, finished_at, status, requests) \
                 VALUES ('totals,hourly', 100, 110, 'ok', 7);",
            )
            .unwrap();
        }
        let store = Store::open(&path).unwrap();
        let totals = store.kind_history("totals").unwrap();
        assert_eq!(totals.last_full_start, Some(100));
        assert_eq!(totals.last_success, Some(110));
        assert_eq!(
            store.kind_history("historical").unwrap().last_full_start,
            None
        );
    }

    #[test]
    fn a_newer_database_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.sqlite");
        {
            let store = Store::open(&path).unwrap();
            store
                .conn()
                .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
                .unwrap();
        }
        let err = Store::open(&path).unwrap_err();
        assert!(matches!(err, StoreError::TooNew { .. }), "{err}");
        assert!(err.to_string().contains("newer than this binary"));
        assert!(matches!(
            Store::open_read_only(&path),
            Err(StoreError::TooNew { .. })
        ));
    }

    #[test]
    fn inventory_mirror_adds_removes_and_restores() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("e.sqlite")).unwrap();
        let acme: Handle = "acme".parse().unwrap();
        let r = store
            .sync_inventory([(id(1), Some(&acme)), (id(2), None)], 100)
            .unwrap();
        assert_eq!(
            r,
            SyncReport {
                added: 2,
                ..Default::default()
            }
        );
        let r = store.sync_inventory([(id(2), None)], 200).unwrap();
        assert_eq!(
            r,
            SyncReport {
                removed: 1,
                ..Default::default()
            }
        );
        let removed_at: Option<i64> = store
            .conn()
            .query_row(
                "SELECT removed_at FROM tweets WHERE tweet_id = ?1",
                [id(1).get() as i64],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(removed_at, Some(200));
        let r = store
            .sync_inventory([(id(1), None), (id(2), None)], 300)
            .unwrap();
        assert_eq!(
            r,
            SyncReport {
                restored: 1,
                owner_changed: 1,
                ..Default::default()
            }
        );
        assert_eq!(store.count("tweets").unwrap(), 2);
    }

    #[test]
    fn totals_are_change_only_and_the_view_shows_the_latest() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("e.sqlite")).unwrap();
        store.sync_inventory([(id(1), None)], 1).unwrap();
        let run = store.begin_run(&RunStart::new(&["totals"], 1)).unwrap();
        let write = |observed_at, value| TotalsWrite {
            observed_at,
            values: vec![
                (id(1), Metric::Favorites, value),
                (id(1), Metric::Replies, 3),
            ],
            checked: vec![id(1)],
            ..Default::default()
        };
        assert_eq!(
            store
                .write_totals_batch(&record(run, 1), &write(10, 5))
                .unwrap(),
            2
        );
        assert_eq!(
            store
                .write_totals_batch(&record(run, 2), &write(20, 5))
                .unwrap(),
            0
        );
        assert_eq!(
            store
                .write_totals_batch(&record(run, 3), &write(30, 7))
                .unwrap(),
            1
        );
        assert_eq!(store.count("totals").unwrap(), 3);
        let (value, observed, checked): (i64, i64, i64) = store
            .conn()
            .query_row(
                "SELECT value, observed_at, checked_at FROM latest_totals WHERE metric = 'favorites'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert_eq!((value, observed, checked), (7, 30, 30));
        assert_eq!(store.count("requests").unwrap(), 3);
    }

    /// Series are sparse: zero buckets are not stored, and a bucket that turns to zero when its
    /// window is fetched again is removed; coverage is written with the batch.
    #[test]
    fn series_windows_replace_their_buckets_sparsely() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("e.sqlite")).unwrap();
        let t = id(1);
        store.sync_inventory([(t, None)], 1).unwrap();
        let run = store.begin_run(&RunStart::new(&["historical"], 1)).unwrap();
        let h = |n: i64| Hour::floor(1_700_000_000).plus_hours(n);
        let write = |values: Vec<(i64, i64)>, fetched_at| SeriesWrite {
            source: Endpoint::Historical,
            fetched_at,
            start: h(0).secs(),
            end: h(4).secs(),
            answered: vec![(t, Metric::Favorites, h(0).secs(), h(4).secs())],
            values: values
                .into_iter()
                .map(|(n, v)| (t, Metric::Favorites, h(n), v))
                .collect(),
            cell: Some(1_698_000_000),
            covered: vec![t],
            status_changes: Vec::new(),
            handle: None,
            unsupported: Vec::new(),
        };
        let mut rec = record(run, 1);
        rec.endpoint = Endpoint::Historical;
        let rows = store
            .write_series_batch(&rec, &write(vec![(0, 5), (1, 0), (2, -1), (3, 7)], 10))
            .unwrap();
        assert_eq!(rows, 3);
        rec.seq = 2;
        store
            .write_series_batch(&rec, &write(vec![(0, 5), (1, 2), (2, 0), (3, 0)], 20))
            .unwrap();
        let mut stmt = store
            .conn()
            .prepare("SELECT hour, value FROM series ORDER BY hour")
            .unwrap();
        let rows: Vec<(i64, i64)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(rows, vec![(h(0).secs(), 5), (h(1).secs(), 2)]);
        let fetched: i64 = store
            .conn()
            .query_row("SELECT fetched_at FROM coverage", [], |r| r.get(0))
            .unwrap();
        assert_eq!(fetched, 20);
    }

    /// Holds the write lock of `path` from another connection, as sqlite3 or a backup tool
    /// would, until the returned sender is dropped or sent to; returns once the lock is held.
    fn hold_write_lock(path: &Path) -> (std::sync::mpsc::Sender<()>, std::thread::JoinHandle<()>) {
        let (held_tx, held_rx) = std::sync::mpsc::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let path = path.to_path_buf();
        let holder = std::thread::spawn(move || {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch("BEGIN IMMEDIATE; UPDATE tweets SET removed_at = removed_at;")
                .unwrap();
            held_tx.send(()).unwrap();
            let _ = release_rx.recv();
            conn.execute_batch("COMMIT").unwrap();
        });
        held_rx.recv().unwrap();
        (release_tx, holder)
    }

    /// A sound database passes the preflight, twice in a row (the proof's transaction is rolled
    /// back, nothing is left open), and both checks report no problem.
    #[test]
    fn a_sound_database_passes_the_preflight() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("e.sqlite")).unwrap();
        store.sync_inventory([(id(1), None)], 1).unwrap();
        store.preflight().unwrap();
        store.preflight().unwrap();
        assert!(store.quick_check().unwrap().is_ok());
        let full = store.integrity_check().unwrap();
        assert_eq!((full.check, full.count), (IntegrityCheck::Full, 0));
        assert!(store.conn().is_autocommit(), "no transaction left open");
    }

    /// A connection SQLite opened read-only is refused by the proof (what SQLite does with a file
    /// this process cannot write: root writes any file, so a read-only open stands in for it).
    #[test]
    fn a_read_only_connection_fails_the_writability_proof() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.sqlite");
        drop(Store::open(&path).unwrap());
        let store = Store::open_read_only(&path).unwrap();
        let err = store.prove_writable().unwrap_err();
        assert!(matches!(err, StoreError::ReadOnly { .. }), "{err}");
        assert!(err.forbids_writing());
        let text = err.to_string();
        assert!(text.contains(&path.display().to_string()), "{text}");
        assert!(text.contains("SQLite opened it read-only"), "{text}");
    }

    /// Another connection's write lock is waited for; held past the busy timeout, the proof
    /// says busy (not read-only), and passes once the lock is let go.
    #[test]
    fn a_write_lock_held_too_long_is_reported_busy() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.sqlite");
        let store = Store::open(&path).unwrap();
        store
            .conn()
            .busy_timeout(Duration::from_millis(200))
            .unwrap();
        let (release, holder) = hold_write_lock(&path);
        let err = store.prove_writable().unwrap_err();
        assert!(matches!(err, StoreError::Busy { .. }), "{err}");
        assert!(!err.forbids_writing());
        assert!(err.to_string().contains("is busy"), "{err}");
        release.send(()).unwrap();
        holder.join().unwrap();
        store.prove_writable().unwrap();
    }

    /// A batch answered while another connection holds the write lock waits for it and is
    /// stored: its transaction takes the lock as it begins. (A deferred one reads first and
    /// then cannot wait: it fails at once with "database is locked".)
    #[test]
    fn a_batch_write_waits_for_another_connections_write_lock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.sqlite");
        let mut store = Store::open(&path).unwrap();
        store.sync_inventory([(id(1), None)], 1).unwrap();
        let run = store.begin_run(&RunStart::new(&["totals"], 1)).unwrap();
        let (release, holder) = hold_write_lock(&path);
        let releaser = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            release.send(()).unwrap();
        });
        let write = TotalsWrite {
            observed_at: 10,
            values: vec![(id(1), Metric::Favorites, 5)],
            checked: vec![id(1)],
            ..Default::default()
        };
        assert_eq!(
            store.write_totals_batch(&record(run, 1), &write).unwrap(),
            1
        );
        releaser.join().unwrap();
        holder.join().unwrap();
        assert_eq!(store.count("requests").unwrap(), 1);
    }

    /// `finish_run` on a database busy for longer than the busy timeout waits once more, so
    /// the run is closed rather than left `running`.
    #[test]
    fn finish_run_waits_once_more_for_a_busy_database() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.sqlite");
        let mut store = Store::open(&path).unwrap();
        let run = store.begin_run(&RunStart::new(&["totals"], 1)).unwrap();
        let timeout = Duration::from_millis(500);
        store.conn().busy_timeout(timeout).unwrap();
        let (release, holder) = hold_write_lock(&path);
        // Held past the first wait, let go during the second.
        let releaser = std::thread::spawn(move || {
            std::thread::sleep(timeout * 3 / 2);
            release.send(()).unwrap();
        });
        let summary = RunSummary {
            finished_at: 2,
            status: "ok",
            requests: 0,
            failed_batches: 0,
            not_attempted: 0,
            failed_kinds: Vec::new(),
            rows_written: 0,
            error: None,
        };
        store.finish_run(run, &summary).unwrap();
        releaser.join().unwrap();
        holder.join().unwrap();
        let status: String = store
            .conn()
            .query_row("SELECT status FROM runs WHERE run_id = ?1", [run], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(status, "ok");
    }

    /// A run left `running` (its process killed, or its end not recordable) is closed as
    /// interrupted by the next writer, after waiting for a lock another connection holds.
    #[test]
    fn a_stale_running_run_is_marked_interrupted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.sqlite");
        let mut store = Store::open(&path).unwrap();
        let run = store.begin_run(&RunStart::new(&["totals"], 1)).unwrap();
        let (release, holder) = hold_write_lock(&path);
        let releaser = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            release.send(()).unwrap();
        });
        assert_eq!(store.close_stale_runs(5).unwrap(), 1);
        releaser.join().unwrap();
        holder.join().unwrap();
        let (status, finished): (String, i64) = store
            .conn()
            .query_row(
                "SELECT status, finished_at FROM runs WHERE run_id = ?1",
                [run],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!((status.as_str(), finished), ("interrupted", 5));
    }
}
