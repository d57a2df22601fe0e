//! PostgreSQL: where the database is ([`Target`]), connecting without ever showing the password,
//! the schema's migrations (`schema/postgres/*.sql`, tracked in `schema_version`) and the
//! advisory lock that keeps one writer per shard.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use crate::config::Secret;

/// PostgreSQL migrations in order; file `NNNN_*.sql` brings the database to version NNNN.
pub(super) const MIGRATIONS: &[(&str, &str)] = &[
    (
        "0001_init.sql",
        include_str!("../../schema/postgres/0001_init.sql"),
    ),
    (
        "0002_runs_shard.sql",
        include_str!("../../schema/postgres/0002_runs_shard.sql"),
    ),
];

/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the database is: an SQLite file or a PostgreSQL server.
#[derive(Clone)]
pub enum Target {
    Sqlite(PathBuf),
    Postgres(PgTarget),
}

/// A PostgreSQL database: its URL (without a password) and the password, kept apart.
#[derive(Clone)]
pub struct PgTarget {
    config: Box<postgres::Config>,
}

impl Target {
    /// `text` as a target: a `postgres://` or `postgresql://` URL, else an SQLite path. The
    /// password, when not in the URL, comes from `password` or the `PGPASSWORD` environment
    /// variable.
    pub fn parse(text: &Path, password: Option<&Secret>) -> Result<Target, String> {
        match text.to_str() {
            Some(url) if is_url(url) => PgTarget::parse(url, password).map(Target::Postgres),
            _ => Ok(Target::Sqlite(text.to_path_buf())),
        }
    }

    /// Whether the database is there to read: the SQLite file exists; a server is asked when
    /// connecting.
    pub fn exists(&self) -> bool {
        match self {
            Target::Sqlite(p) => p.exists(),
            Target::Postgres(_) => true,
        }
    }

    /// The target for messages (as `Path::display`): the file, or the URL without password.
    pub fn display(&self) -> &Self {
        self
    }

    /// The SQLite file, if this is one.
    pub fn sqlite_path(&self) -> Option<&Path> {
        match self {
            Target::Sqlite(p) => Some(p),
            Target::Postgres(_) => None,
        }
    }
}

/// Whether `text` names a PostgreSQL server rather than a file.
pub fn is_url(text: &str) -> bool {
    text.starts_with("postgres://") || text.starts_with("postgresql://")
}

impl From<&Path> for Target {
    fn from(p: &Path) -> Target {
        Target::Sqlite(p.to_path_buf())
    }
}

impl From<&PathBuf> for Target {
    fn from(p: &PathBuf) -> Target {
        Target::Sqlite(p.clone())
    }
}

impl From<&Target> for Target {
    fn from(t: &Target) -> Target {
        t.clone()
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Sqlite(p) => write!(f, "{}", crate::lock::absolute(p).display()),
            Target::Postgres(pg) => pg.fmt(f),
        }
    }
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl PgTarget {
    /// Parses `url`; the password is the URL's, else `password`, else `PGPASSWORD`'s.
    pub fn parse(url: &str, password: Option<&Secret>) -> Result<PgTarget, String> {
        let mut config = postgres::Config::from_str(url).map_err(|e| {
            // The driver's message never repeats the URL (which may hold a password).
            format!("[database] url is not a PostgreSQL URL ({e}); write it as postgres://USER@HOST:PORT/DATABASE")
        })?;
        if config.get_password().is_none() {
            if let Some(p) = password {
                config.password(p.expose());
            } else if let Ok(p) = std::env::var("PGPASSWORD") {
                config.password(p);
            }
        }
        if config.get_user().is_none()
            && let Ok(user) = std::env::var("USER")
        {
            config.user(&user);
        }
        if config.get_dbname().is_none() {
            return Err("[database] url names no database: write it as \
                        postgres://USER@HOST:PORT/DATABASE"
                .to_string());
        }
        config.connect_timeout(CONNECT_TIMEOUT);
        config.application_name("engagement-ingest");
        Ok(PgTarget {
            config: Box::new(config),
        })
    }

    /// The host (or socket folder) and port, for messages.
    pub fn server(&self) -> String {
        let host = self
            .config
            .get_hosts()
            .first()
            .map(|h| match h {
                postgres::config::Host::Tcp(name) => name.clone(),
                postgres::config::Host::Unix(path) => path.display().to_string(),
            })
            .unwrap_or_else(|| "localhost".to_string());
        let port = self.config.get_ports().first().copied().unwrap_or(5432);
        format!("{host}:{port}")
    }

    /// The database's name.
    pub fn dbname(&self) -> &str {
        self.config.get_dbname().unwrap_or("")
    }

    /// This server with another database (tests and `copy` make their own).
    pub fn with_dbname(&self, name: &str) -> PgTarget {
        let mut config = self.config.clone();
        config.dbname(name);
        PgTarget { config }
    }

    /// A new connection.
    pub fn connect(&self) -> Result<postgres::Client, postgres::Error> {
        super::sql::off_runtime(|| self.config.connect(postgres::NoTls))
    }
}

impl fmt::Debug for PgTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for PgTarget {
    /// `postgres://USER@HOST:PORT/DATABASE`: never the password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let user = self.config.get_user().unwrap_or("");
        write!(f, "postgres://{user}@{}/{}", self.server(), self.dbname())
    }
}

/// The advisory lock key of a shard's writer: the two halves of FNV-1a 64 of
/// `engagement-ingest writer I/N` (any process taking it is another writer of that shard).
pub(super) fn lock_key(shard: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in format!("engagement-ingest writer {shard}").bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_is_never_shown() {
        let t =
            PgTarget::parse("postgres://ingest:hunter2@db.example:6543/engagement", None).unwrap();
        assert_eq!(
            t.to_string(),
            "postgres://ingest@db.example:6543/engagement"
        );
        let secret = Secret::new("s3cret");
        let t = PgTarget::parse("postgres://ingest@db.example/metrics", Some(&secret)).unwrap();
        assert_eq!(t.to_string(), "postgres://ingest@db.example:5432/metrics");
        assert_eq!(t.config.get_password(), Some(&b"s3cret"[..]));
        let err = PgTarget::parse("postgres://ingest:pw@db.example:notaport/x", None).unwrap_err();
        assert!(!err.contains("pw"), "{err}");
        assert!(matches!(
            Target::parse(Path::new("data/e.sqlite"), None),
            Ok(Target::Sqlite(_))
        ));
    }

    #[test]
    fn shards_have_their_own_lock_keys() {
        assert_ne!(lock_key("0/2"), lock_key("1/2"));
        assert_eq!(lock_key("0/1"), lock_key("0/1"));
    }
}
