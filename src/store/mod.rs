//! The database: opening it with the right pragmas, migrations from `schema/*.sql`, the checks a
//! writer makes before a cycle (integrity, writability), and the [`Store`] type with its errors.
//! What is written lives in `write`, what the planner reads in `state`, what people read
//! (`query`, `report`, `demo`) in `read`. All SQL of the crate is under this module; nothing
//! outside it sees a driver type, so another backend can offer the same surface. It knows
//! nothing about HTTP.

use std::path::{Path, PathBuf};
use std::time::Duration;

use std::cell::RefCell;

use rusqlite::config::DbConfig;
use rusqlite::{Connection, ErrorCode, OpenFlags, TransactionBehavior};

pub use pg::{PgTarget, Target, is_url};
pub use sql::Backend;
use sql::{SqlError, Tx, args};

pub use read::{
    AccountFigures, AccountsQuery, Bucket, Coverage, DailyPoint, DailyQuery, FailedBatch,
    Freshness, LatestTotal, MonthUsage, Owner, RestingTweet, RunRow, SeriesPoint, TopBasis,
    TopQuery, TopTweet, TweetCounts, TweetInfo, ValueSource,
};
pub use state::{AccountRecord, FetchedCell, KindHistory, OpenCell};
pub use write::{BatchRecord, RunStart, RunSummary, SeriesWrite, SyncReport, TotalsWrite};

pub mod copy;
#[cfg(test)]
pub(crate) mod fixture;
mod pg;
mod read;
mod rollup;
pub(crate) mod sql;
mod state;
mod totals;
mod write;

/// Migrations in order; file `NNNN_*.sql` brings the database to `user_version` NNNN.
const MIGRATIONS: &[(&str, &str)] = &[
    ("0001_init.sql", include_str!("../../schema/0001_init.sql")),
    (
        "0002_recent_coverage.sql",
        include_str!("../../schema/0002_recent_coverage.sql"),
    ),
    (
        "0003_series_source_integer.sql",
        include_str!("../../schema/0003_series_source_integer.sql"),
    ),
    (
        "0004_due_kinds_and_accounts.sql",
        include_str!("../../schema/0004_due_kinds_and_accounts.sql"),
    ),
    (
        "0005_sums_cannot_overflow.sql",
        include_str!("../../schema/0005_sums_cannot_overflow.sql"),
    ),
    (
        "0006_daily_rollups.sql",
        include_str!("../../schema/0006_daily_rollups.sql"),
    ),
    (
        "0007_runs_shard.sql",
        include_str!("../../schema/0007_runs_shard.sql"),
    ),
];

/// The shard of a writer that has none.
pub const UNSHARDED: &str = "0/1";

/// The schema version this binary writes (SQLite's; see [`Store::supported_version`]).
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// How long the writer waits for a lock another connection holds before a write fails as busy.
/// Other connections hold it for seconds at most: a reader's checkpoint (sqlite3, Datasette, a
/// backup tool closing its connection), a refused `run` recording its failed cycle, someone's
/// short transaction in sqlite3. A connection that keeps it longer is reported, not waited for.
pub const WRITER_BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a reader (`query`, `report`, `check`) waits for a lock: only WAL recovery and a
/// checkpoint's reset hold one against readers, both short.
const READER_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// How much of the database file a reader maps into memory (`PRAGMA mmap_size`).
const READER_MMAP_BYTES: i64 = 1 << 30;

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

/// An error of the database driver, opaque so that no driver type is part of the store's
/// surface: it reads as the driver words it, and answers what callers branch on.
#[derive(Debug)]
pub struct DbError(SqlError);

impl DbError {
    /// Whether another connection held a lock longer than the busy timeout.
    pub fn is_busy(&self) -> bool {
        matches!(&self.0, SqlError::Lite(e) if is_busy(e))
    }

    /// Whether the file is damaged or not a database.
    pub fn is_damage(&self) -> bool {
        matches!(&self.0, SqlError::Lite(e) if is_damage(e))
    }
}

impl From<rusqlite::Error> for DbError {
    fn from(e: rusqlite::Error) -> DbError {
        DbError(e.into())
    }
}

impl std::fmt::Display for DbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for DbError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

/// A database for messages: an SQLite path made absolute, a PostgreSQL URL as it is (it is
/// kept in `path` without its password).
fn shown(path: &Path) -> String {
    match path.to_str() {
        Some(url) if is_url(url) => url.to_string(),
        _ => crate::lock::absolute(path).display().to_string(),
    }
}

/// The driver's error as the store's.
fn db(e: impl Into<SqlError>) -> StoreError {
    StoreError::Db(DbError(e.into()))
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
        error: DbError,
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
    NoShm { path: PathBuf, error: DbError },
    #[error(
        "database {} has schema version {found}, newer than this binary's {supported}; \
         upgrade engagement-ingest (or point database.path at another file)",
        shown(path)
    )]
    TooNew {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    #[error(
        "database {} has schema version {found}, older than this binary's {supported}; \
         run `engagement-ingest migrate` first",
        shown(path)
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
        shown(path)
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
    /// A PostgreSQL server that cannot be reached or refuses the connection.
    #[error(
        "cannot connect to PostgreSQL database {database} on {server}: {error}. Check [database] \
         url (host, port, user, database) and the password (password_file, PGPASSWORD)"
    )]
    Connect {
        server: String,
        database: String,
        error: DbError,
    },
    /// Another process holds this shard's writer lock (PostgreSQL's advisory lock).
    #[error(
        "{target} is being written by another engagement-ingest process of shard {shard} (it \
         holds the shard's advisory lock, pid {holder}): only one `run` or `daemon` may write a \
         shard at a time. Wait for it to finish, stop it, or give this one another shard"
    )]
    Locked {
        target: String,
        shard: String,
        holder: String,
    },
    #[error("migration {name} failed: {source}")]
    Migration { name: &'static str, source: DbError },
    #[error("database error: {0}")]
    Db(#[source] DbError),
}

impl StoreError {
    /// Whether another connection held a lock longer than the busy timeout (the write may
    /// succeed later).
    pub fn is_busy(&self) -> bool {
        match self {
            StoreError::Busy { .. } => true,
            StoreError::Db(e) => e.is_busy(),
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
fn unknown_value(column: &str, value: &str) -> SqlError {
    SqlError::Value(format!(
        "{column} holds {value:?}, which this version does not know"
    ))
}

/// Whether `e` says another connection held a lock longer than the busy timeout.
fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}

/// The driver's connection (one per store: its size does not matter).
#[allow(clippy::large_enum_variant)]
enum Conn {
    Lite(Connection),
    Pg(RefCell<sql::Pg>),
}

/// The one writer connection (or a read-only one).
pub struct Store {
    conn: Conn,
    target: Target,
    /// The SQLite file (PostgreSQL: the target as text, for messages).
    path: PathBuf,
    /// The shard whose runs this writer records and reads (`I/N`; `0/1` unsharded): set by
    /// [`Store::lock_shard`].
    shard: String,
    /// Hourly buckets this handle's committed series writes added, less those they removed:
    /// what a run stored, without counting `series` (a scan of the whole table).
    buckets_added: i64,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("target", &self.target)
            .finish()
    }
}

impl Store {
    /// Opens (creating if needed) and migrates the database at `target`.
    pub fn open(target: impl Into<Target>) -> Result<Store, StoreError> {
        let mut store = Store::connect(target)?;
        store.migrate()?;
        Ok(store)
    }

    /// Opens (creating if needed) the database for writing, without migrating it.
    pub fn connect(target: impl Into<Target>) -> Result<Store, StoreError> {
        match target.into() {
            Target::Sqlite(path) => Store::connect_sqlite(&path),
            Target::Postgres(pg) => Store::connect_pg(pg),
        }
    }

    /// A PostgreSQL connection; nothing is created (the database must exist).
    fn connect_pg(pg: PgTarget) -> Result<Store, StoreError> {
        let client = pg.connect().map_err(|e| StoreError::Connect {
            server: pg.server(),
            database: pg.dbname().to_string(),
            error: DbError(e.into()),
        })?;
        let path = PathBuf::from(pg.to_string());
        Ok(Store {
            conn: Conn::Pg(RefCell::new(sql::Pg::new(client))),
            target: Target::Postgres(pg),
            path,
            buckets_added: 0,
            shard: UNSHARDED.to_string(),
        })
    }

    fn connect_sqlite(path: &Path) -> Result<Store, StoreError> {
        // Only a failed open looks at the folder (it creates a probe file there).
        let open_error = |error| StoreError::Open {
            path: path.to_path_buf(),
            error: DbError::from(error),
            issue: crate::lock::folder_issue(path).map(Box::new),
        };
        let conn = Connection::open(path).map_err(open_error)?;
        let store = Store {
            conn: Conn::Lite(conn),
            target: Target::Sqlite(path.to_path_buf()),
            buckets_added: 0,
            shard: UNSHARDED.to_string(),
            path: path.to_path_buf(),
        };
        // WAL mode is set here: the first moment SQLite needs the -wal and -shm files.
        store.configure().map_err(open_error)?;
        Ok(store)
    }

    /// Opens an existing database read-only, refusing one whose schema is not this binary's.
    pub fn open_read_only(target: impl Into<Target>) -> Result<Store, StoreError> {
        let path = match target.into() {
            Target::Sqlite(path) => path,
            Target::Postgres(pg) => {
                let store = Store::connect_pg(pg)?;
                let found = store.schema_version()?;
                store.check_version(found)?;
                if found < store.supported_version() {
                    return Err(StoreError::TooOld {
                        path: store.path.clone(),
                        found,
                        supported: store.supported_version(),
                    });
                }
                return Ok(store);
            }
        };
        let path = path.as_path();
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
                    error: DbError::from(error),
                },
                issue => StoreError::Open {
                    path: path.to_path_buf(),
                    error: DbError::from(error),
                    issue: issue.map(Box::new),
                },
            }
        };
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(explain)?;
        conn.busy_timeout(READER_BUSY_TIMEOUT).map_err(db)?;
        // Readers walk indexes across the whole file (a Tweet's totals, its coverage): pages
        // mapped from the OS's cache rather than copied in one read() each. Halves the time of
        // `query accounts` at 100,000 owned Tweets.
        let _mmap: i64 = conn
            .query_row(
                &format!("PRAGMA mmap_size = {READER_MMAP_BYTES}"),
                [],
                |r| r.get(0),
            )
            .map_err(db)?;
        let store = Store {
            conn: Conn::Lite(conn),
            target: Target::Sqlite(path.to_path_buf()),
            buckets_added: 0,
            shard: UNSHARDED.to_string(),
            path: path.to_path_buf(),
        };
        let found = match store.schema_version() {
            Err(StoreError::Db(DbError(SqlError::Lite(error)))) => {
                return Err(match explain(error) {
                    // Not the folder's fault (not a database, corrupt): the error as it was.
                    StoreError::Open {
                        error, issue: None, ..
                    } => StoreError::Db(error),
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
        let Conn::Lite(conn) = &self.conn else {
            return Ok(());
        };
        conn.busy_timeout(WRITER_BUSY_TIMEOUT)?;
        // journal_mode answers with a row, so it is read rather than executed.
        let _mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        conn.execute_batch("PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL;")?;
        Ok(())
    }

    /// Opens an existing database for writing and changes nothing: it is not created nor
    /// migrated, its journal mode is kept, and closing does not checkpoint. `check` proves with
    /// it that `run` could write.
    pub fn connect_existing(target: impl Into<Target>) -> Result<Store, StoreError> {
        let path = match target.into() {
            Target::Sqlite(path) => path,
            Target::Postgres(pg) => return Store::connect_pg(pg),
        };
        let path = path.as_path();
        let open_error = |error| StoreError::Open {
            path: path.to_path_buf(),
            error: DbError::from(error),
            issue: crate::lock::folder_issue(path).map(Box::new),
        };
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(open_error)?;
        conn.busy_timeout(WRITER_BUSY_TIMEOUT).map_err(open_error)?;
        conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)
            .map_err(open_error)?;
        Ok(Store {
            conn: Conn::Lite(conn),
            target: Target::Sqlite(path.to_path_buf()),
            buckets_added: 0,
            shard: UNSHARDED.to_string(),
            path: path.to_path_buf(),
        })
    }

    /// What a writer proves before a cycle sends anything: `PRAGMA quick_check` finds the
    /// database sound, its folder takes the files SQLite creates, and it can be written (see
    /// [`Store::prove_writable`]). Waits up to [`WRITER_BUSY_TIMEOUT`] for another
    /// connection's write lock.
    pub fn preflight(&self) -> Result<(), StoreError> {
        if let Conn::Pg(_) = self.conn {
            return self.prove_writable();
        }
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
        // PostgreSQL checks its pages itself (and has no such pragma): nothing to report.
        let Conn::Lite(conn) = &self.conn else {
            return Ok(Integrity {
                check,
                first: Vec::new(),
                count: 0,
            });
        };
        let read = (|| {
            let mut stmt = conn.prepare(&sql)?;
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
            Err(e) => return Err(db(e)),
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
        let conn = match &self.conn {
            Conn::Lite(conn) => conn,
            Conn::Pg(_) => {
                let standby: bool = self
                    .read(|tx| tx.query_row("SELECT pg_is_in_recovery()", args![], |r| r.get(0)))?;
                if standby {
                    return Err(read_only(
                        "the server is a standby in recovery, which takes no writes".to_string(),
                    ));
                }
                return Ok(());
            }
        };
        // access(2), not an open: closing a descriptor of a file SQLite has open would drop
        // SQLite's POSIX locks on it.
        if let Err(e) = rustix::fs::access(&self.path, rustix::fs::Access::WRITE_OK) {
            let e = std::io::Error::from(e);
            return Err(read_only(format!("the file cannot be written ({e})")));
        }
        if conn.is_readonly(rusqlite::MAIN_DB).map_err(db)? {
            return Err(read_only(
                "SQLite opened it read-only (the file, or its -wal or -shm file, is not writable \
                 for this process)"
                    .to_string(),
            ));
        }
        let started = std::time::Instant::now();
        if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
            return Err(if is_busy(&e) {
                StoreError::Busy {
                    path: self.path.clone(),
                    waited: started.elapsed(),
                }
            } else if e.sqlite_error_code() == Some(ErrorCode::ReadOnly) {
                read_only(format!("SQLite refuses to begin a write transaction ({e})"))
            } else {
                db(e)
            });
        }
        conn.execute_batch("ROLLBACK").map_err(db)?;
        Ok(())
    }

    /// The database's schema version: SQLite's `PRAGMA user_version`, PostgreSQL's highest
    /// row of `schema_version` (0 before the first migration).
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        self.read(|tx| match tx.backend() {
            Backend::Sqlite => tx.query_row("PRAGMA user_version", args![], |r| r.get(0)),
            Backend::Postgres => {
                let tracked: bool = tx.query_row(
                    "SELECT to_regclass('schema_version') IS NOT NULL",
                    args![],
                    |r| r.get(0),
                )?;
                if !tracked {
                    return Ok(0);
                }
                tx.query_row(
                    "SELECT coalesce(max(version), 0) FROM schema_version",
                    args![],
                    |r| r.get(0),
                )
            }
        })
    }

    /// The schema version this binary writes on this backend.
    pub fn supported_version(&self) -> i64 {
        match self.conn {
            Conn::Lite(_) => SCHEMA_VERSION,
            Conn::Pg(_) => pg::MIGRATIONS.len() as i64,
        }
    }

    /// The backend this store talks to.
    pub fn backend(&self) -> Backend {
        match self.conn {
            Conn::Lite(_) => Backend::Sqlite,
            Conn::Pg(_) => Backend::Postgres,
        }
    }

    /// Where the database is.
    pub fn target(&self) -> &Target {
        &self.target
    }

    fn check_version(&self, found: i64) -> Result<(), StoreError> {
        if found > self.supported_version() {
            return Err(StoreError::TooNew {
                path: self.path.clone(),
                found,
                supported: self.supported_version(),
            });
        }
        Ok(())
    }

    /// Takes this shard's writer lock, held by this connection until it closes (PostgreSQL's
    /// session advisory lock: the server lets go when the process dies, however it dies).
    /// SQLite's writer lock is the lock file ([`crate::lock`]): this does nothing there.
    pub fn lock_shard(&mut self, shard: &str) -> Result<(), StoreError> {
        self.shard = shard.to_string();
        if let Conn::Lite(_) = self.conn {
            return Ok(());
        }
        let key = pg::lock_key(shard);
        let taken: bool = self.read(|tx| {
            tx.query_row("SELECT pg_try_advisory_lock(?1)", sql::args![key], |r| {
                r.get(0)
            })
        })?;
        if taken {
            return Ok(());
        }
        let holder: Option<i64> = self.read(|tx| {
            use sql::Optional;
            tx.query_row(
                "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted \
                 AND ((classid::bigint << 32) | objid::bigint) = (?1::bigint & x'ffffffffffffffff'::bigint) LIMIT 1",
                sql::args![key],
                |r| r.get(0),
            )
            .optional()
        })?;
        Err(StoreError::Locked {
            target: self.target.to_string(),
            shard: shard.to_string(),
            holder: holder.map_or_else(|| "unknown".to_string(), |p| p.to_string()),
        })
    }

    /// Applies every migration above the current version, each in its own transaction.
    /// Returns the versions before and after.
    pub fn migrate(&mut self) -> Result<(i64, i64), StoreError> {
        if let Conn::Pg(_) = self.conn {
            return self.migrate_pg();
        }
        let before = self.schema_version()?;
        self.check_version(before)?;
        for (i, (name, sql)) in MIGRATIONS.iter().enumerate() {
            let version = i as i64 + 1;
            if version <= before {
                continue;
            }
            let tx = self.write_transaction().map_err(db)?;
            tx.execute_batch(sql).map_err(|e| StoreError::Migration {
                name,
                source: DbError::from(e),
            })?;
            tx.pragma_update(None, "user_version", version)
                .map_err(db)?;
            tx.commit().map_err(db)?;
            tracing::info!(migration = name, version, "applied migration");
        }
        Ok((before, SCHEMA_VERSION))
    }

    /// A transaction that takes the write lock as it begins (`BEGIN IMMEDIATE`), waiting up to
    /// the busy timeout for it. A deferred one that reads first cannot wait: when another
    /// connection holds the lock, its upgrade to a write fails at once with SQLITE_BUSY whatever
    /// the timeout, and the batch in it would be lost.
    fn write_transaction(&mut self) -> rusqlite::Result<rusqlite::Transaction<'_>> {
        match &mut self.conn {
            Conn::Lite(conn) => conn.transaction_with_behavior(TransactionBehavior::Immediate),
            Conn::Pg(_) => unreachable!("SQLite transactions only"),
        }
    }

    /// PostgreSQL's migrations, each in a transaction that first takes a lock every migrating
    /// process takes (two shards starting together apply each file once).
    fn migrate_pg(&mut self) -> Result<(i64, i64), StoreError> {
        let supported = self.supported_version();
        let before = self.schema_version()?;
        self.check_version(before)?;
        for (i, (name, sql)) in pg::MIGRATIONS.iter().enumerate() {
            let version = i as i64 + 1;
            if version <= before {
                continue;
            }
            let applied = self.write(|tx| {
                tx.execute_batch(
                    // The server's notices ("already exists, skipping") are not news.
                    "SET LOCAL client_min_messages = warning; \
                     SELECT pg_advisory_xact_lock(7236857287373190245); \
                     CREATE TABLE IF NOT EXISTS schema_version \
                     (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
                )?;
                let now: i64 = tx.query_row(
                    "SELECT coalesce(max(version), 0) FROM schema_version",
                    args![],
                    |r| r.get(0),
                )?;
                if now >= version {
                    return Ok(false);
                }
                tx.execute_batch(sql)
                    .map_err(|e| SqlError::Value(format!("migration {name}: {e}")))?;
                tx.execute(
                    "INSERT INTO schema_version (version, applied_at) \
                     VALUES (?1, CAST(extract(epoch FROM now()) AS BIGINT))",
                    sql::args![version],
                )?;
                Ok(true)
            })?;
            if applied {
                tracing::info!(migration = name, version, "applied migration");
            }
        }
        Ok((before, supported))
    }

    /// The path the store was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How long this connection waits for a lock another connection holds before an operation
    /// fails as busy ([`WRITER_BUSY_TIMEOUT`] for a writer, 5 s for a reader).
    pub fn set_busy_timeout(&self, timeout: Duration) -> Result<(), StoreError> {
        match &self.conn {
            Conn::Lite(conn) => conn.busy_timeout(timeout).map_err(db),
            // PostgreSQL waits for row locks as long as they are held (one writer per shard).
            Conn::Pg(_) => Ok(()),
        }
    }

    /// Runs `reads` on one snapshot of the database: what they see is one committed state, even
    /// while a writer commits batches (WAL).
    pub fn snapshot<T, E: From<StoreError>>(
        &self,
        reads: impl FnOnce(&Store) -> Result<T, E>,
    ) -> Result<T, E> {
        match &self.conn {
            Conn::Lite(conn) => {
                let tx = conn.unchecked_transaction().map_err(db)?;
                let out = reads(self);
                // Only read: ending it changes nothing.
                drop(tx);
                out
            }
            Conn::Pg(pg) => {
                let tx = Tx::Pg(pg);
                tx.execute_batch("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                    .map_err(db)?;
                let out = reads(self);
                tx.execute_batch("COMMIT").map_err(db)?;
                out
            }
        }
    }

    /// Runs `f` on the connection, its driver errors turned into the store's.
    fn read<T>(&self, f: impl FnOnce(&Tx<'_>) -> sql::Result<T>) -> Result<T, StoreError> {
        match &self.conn {
            Conn::Lite(conn) => f(&Tx::Lite(conn)).map_err(db),
            Conn::Pg(pg) => f(&Tx::Pg(pg)).map_err(db),
        }
    }

    /// Runs `f` in one write transaction (see [`Store::write_transaction`]), committed when it
    /// succeeds and rolled back when it fails.
    fn write<T>(&mut self, f: impl FnOnce(&Tx<'_>) -> sql::Result<T>) -> Result<T, StoreError> {
        if let Conn::Pg(pg) = &self.conn {
            let tx = Tx::Pg(pg);
            tx.execute_batch("BEGIN").map_err(db)?;
            return match f(&tx) {
                Ok(out) => {
                    tx.execute_batch("COMMIT").map_err(db)?;
                    Ok(out)
                }
                Err(e) => {
                    // The error is what matters; a failed rollback leaves the connection to
                    // the server, which rolls back when it closes.
                    let _ = tx.execute_batch("ROLLBACK");
                    Err(db(e))
                }
            };
        }
        let tx = self.write_transaction().map_err(db)?;
        let out = f(&Tx::Lite(&tx)).map_err(db)?;
        tx.commit().map_err(db)?;
        Ok(out)
    }

    /// Statements on this store's connection (tests).
    #[cfg(test)]
    pub(crate) fn tx(&self) -> Tx<'_> {
        match &self.conn {
            Conn::Lite(c) => Tx::Lite(c),
            Conn::Pg(pg) => Tx::Pg(pg),
        }
    }

    /// The SQLite connection (tests).
    #[cfg(test)]
    pub(crate) fn sqlite(&self) -> &Connection {
        match &self.conn {
            Conn::Lite(c) => c,
            Conn::Pg(_) => panic!("an SQLite store"),
        }
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
            "tweet_days",
            "account_days",
            "account_daily",
        ];
        assert!(
            TABLES.contains(&table),
            "count() is only for schema tables, not {table:?}"
        );
        self.read(|tx| {
            tx.query_row(&format!("SELECT count(*) FROM {table}"), args![], |r| {
                r.get(0)
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::fixture::{hold_write_lock, id};
    use super::*;
    use crate::domain::Metric;

    #[test]
    fn migrations_set_user_version_and_pragmas() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("e.sqlite")).unwrap();
        assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
        let mode: String = store
            .sqlite()
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let fk: i64 = store
            .sqlite()
            .query_row("PRAGMA foreign_keys", [], |r| r.get(0))
            .unwrap();
        assert_eq!(fk, 1);
        // metric ids in the schema match the domain's.
        for m in Metric::ALL {
            let name: String = store
                .sqlite()
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
            .sqlite()
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
                .sqlite()
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
        assert!(store.sqlite().is_autocommit(), "no transaction left open");
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
            .sqlite()
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
}
