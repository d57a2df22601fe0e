//! One writer per database: an exclusive advisory lock (`flock`) on `<database>.lock`, held for
//! the life of the process by `run`, `daemon`, `migrate` and `demo`. The kernel releases it when
//! the process ends, however it ends, so a killed process never leaves a stale lock. Readers
//! (`query`, sqlite3, Datasette) do not take it: SQLite's WAL lets them read while we write.
//!
//! The lock file, the database and SQLite's `-wal` and `-shm` files all live in the database's
//! folder, so this module also tells what is wrong with that folder ([`folder_issue`]) for the
//! messages of the lock, the store and `check`.

use std::fmt;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Exit code of a process that found the database held by another writer.
pub const EXIT_LOCKED: u8 = 4;

/// The held lock; dropping it releases it.
#[derive(Debug)]
pub struct WriterLock {
    _file: File,
    path: PathBuf,
}

/// Why the lock could not be taken. Paths are shown absolute; the OS error once (it is part of
/// the message, not a separate `source`, so `{:#}` chains do not repeat it).
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "{} is being written by another engagement-ingest process ({holder}; lock file {}): \
         only one `run` or `daemon` may write a database at a time. Wait for it to finish, stop it, \
         or point this one at another database; reading the database (query, sqlite3) needs no lock",
        absolute(database).display(),
        absolute(lock).display()
    )]
    Held {
        database: PathBuf,
        lock: PathBuf,
        holder: String,
    },
    #[error("cannot open the lock file {}: {error}{}", absolute(lock).display(), issue_suffix(issue.as_deref()))]
    Io {
        lock: PathBuf,
        error: std::io::Error,
        /// What is wrong with the database's folder, when that explains the error.
        issue: Option<Box<FolderIssue>>,
    },
}

/// The lock file of `database`: the same path with `.lock` appended.
pub fn lock_path(database: &Path) -> PathBuf {
    let mut name = database.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// `path` made absolute against the working directory, for messages (unchanged when the working
/// directory cannot be read).
pub fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// The folder holding `database`, absolute (the working directory for a bare file name).
pub fn database_folder(database: &Path) -> PathBuf {
    let database = absolute(database);
    match database.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => database,
    }
}

/// What stops this process from creating files in a database's folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FolderProblem {
    /// The folder does not exist.
    Missing,
    /// Something other than a folder has its path.
    NotAFolder,
    /// It cannot be looked at (a parent folder denies access): the OS error.
    Inaccessible(String),
    /// Creating a file in it failed (permissions, a read-only mount): the OS error.
    NotWritable(String),
}

/// A database folder and what is wrong with it; displayed as a sentence saying what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FolderIssue {
    /// Absolute.
    pub folder: PathBuf,
    pub problem: FolderProblem,
}

impl FolderIssue {
    /// What is wrong and what to do, without the folder's name and without the OS error:
    /// "does not exist: create it …".
    pub fn advice(&self) -> String {
        let folder = self.folder.display();
        match &self.problem {
            FolderProblem::Missing => format!(
                "does not exist: create it (mkdir -p {folder}), or set [database] path to a file \
                 in an existing folder"
            ),
            FolderProblem::NotAFolder => {
                "is not a folder: set [database] path to a file in an existing folder".to_string()
            }
            FolderProblem::Inaccessible(_) => "cannot be reached by this process: give its user \
                 access to every folder on the way, or set [database] path elsewhere"
                .to_string(),
            FolderProblem::NotWritable(_) => "is not writable for this process: SQLite's WAL mode \
                 needs a writable folder to create the database's -wal and -shm files (or an \
                 existing, writable -wal/-shm pair), and the writer's .lock file is created there \
                 too. Make the folder writable for the service's user; to only read the database, \
                 use `query --db PATH`"
                .to_string(),
        }
    }
}

impl fmt::Display for FolderIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the folder {} {}", self.folder.display(), self.advice())
    }
}

/// `"; " + issue`, or nothing: the tail of an error message.
pub fn issue_suffix(issue: Option<&FolderIssue>) -> String {
    issue.map_or_else(String::new, |i| format!("; {i}"))
}

/// What is wrong with the folder of `database` for a writer, if anything: it must exist and
/// take new files, which is tried by creating (and removing) a temporary file there, so
/// permissions, ACLs, read-only mounts and root's privileges all count as they will.
pub fn folder_issue(database: &Path) -> Option<FolderIssue> {
    let folder = database_folder(database);
    let problem = folder_problem(&folder)?;
    Some(FolderIssue { folder, problem })
}

fn folder_problem(folder: &Path) -> Option<FolderProblem> {
    match std::fs::metadata(folder) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => return Some(FolderProblem::NotAFolder),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Some(FolderProblem::Missing),
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => {
            return Some(FolderProblem::NotAFolder);
        }
        Err(e) => return Some(FolderProblem::Inaccessible(e.to_string())),
    }
    static PROBES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = PROBES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let probe = folder.join(format!(
        ".engagement-ingest-probe-{}-{n}",
        std::process::id()
    ));
    match OpenOptions::new().write(true).create_new(true).open(&probe) {
        Ok(file) => {
            drop(file);
            let _ = std::fs::remove_file(&probe);
            None
        }
        // Left by a process killed between creating and removing its probe: files can be made.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => None,
        Err(e) => Some(FolderProblem::NotWritable(e.to_string())),
    }
}

/// Whether a writer can work in a folder it cannot create files in: the database, its -wal and
/// -shm files and its lock file all exist and are writable for this process. Asked with
/// access(2), not by opening them: closing a descriptor of a file SQLite has open would drop
/// SQLite's locks on it.
pub fn writer_files_writable(database: &Path) -> bool {
    let with = |suffix: &str| {
        let mut name = database.as_os_str().to_owned();
        name.push(suffix);
        PathBuf::from(name)
    };
    [
        database.to_path_buf(),
        with("-wal"),
        with("-shm"),
        lock_path(database),
    ]
    .iter()
    .all(|p| rustix::fs::access(p, rustix::fs::Access::WRITE_OK).is_ok())
}

impl WriterLock {
    /// Takes the writer lock of `database` without waiting; the lock file says which process
    /// holds it, for the message another process prints.
    pub fn acquire(database: &Path) -> Result<WriterLock, LockError> {
        let path = lock_path(database);
        let io = |error| LockError::Io {
            lock: path.clone(),
            error,
            issue: folder_issue(database).map(Box::new),
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                return Err(LockError::Held {
                    database: database.to_path_buf(),
                    lock: path.clone(),
                    holder: if holder.is_empty() {
                        "process unknown".to_string()
                    } else {
                        holder.to_string()
                    },
                });
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        let note = format!(
            "pid {} since {}\n",
            std::process::id(),
            chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ")
        );
        file.set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| file.write_all(note.as_bytes()))
            .map_err(io)?;
        Ok(WriterLock { _file: file, path })
    }

    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_writer_is_refused_until_the_first_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("e.sqlite");
        let first = WriterLock::acquire(&db).unwrap();
        assert_eq!(first.path(), dir.path().join("e.sqlite.lock"));
        let err = WriterLock::acquire(&db).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, LockError::Held { .. }), "{text}");
        assert!(
            text.contains(&format!("pid {}", std::process::id())),
            "{text}"
        );
        assert!(text.contains("e.sqlite.lock"), "{text}");
        drop(first);
        WriterLock::acquire(&db).expect("free again once dropped");
    }

    #[test]
    fn a_missing_directory_is_an_io_error_naming_the_lock_file() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("absent").join("e.sqlite");
        let err = WriterLock::acquire(&db).unwrap_err();
        assert!(matches!(err, LockError::Io { .. }));
        assert!(err.to_string().contains("e.sqlite.lock"), "{err}");
    }

    /// The binary prints `{:#}` (the error and its sources): the OS error must appear once, and
    /// the missing folder be named with what to do.
    #[test]
    fn the_os_error_appears_once_and_the_missing_folder_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("absent");
        let err = WriterLock::acquire(&folder.join("e.sqlite")).unwrap_err();
        let text = format!("{:#}", anyhow::Error::from(err));
        assert_eq!(text.matches("os error 2").count(), 1, "{text}");
        assert!(
            text.contains(&format!("the folder {} does not exist", folder.display())),
            "{text}"
        );
        assert!(text.contains("mkdir -p"), "{text}");
    }

    #[test]
    fn relative_paths_are_shown_absolute() {
        let relative = Path::new("some-folder/e.sqlite");
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(absolute(relative), cwd.join(relative));
        assert_eq!(database_folder(relative), cwd.join("some-folder"));
        assert_eq!(database_folder(Path::new("e.sqlite")), cwd);
        let issue = folder_issue(relative).expect("no such folder here");
        assert_eq!(issue.problem, FolderProblem::Missing);
        assert!(
            issue
                .to_string()
                .contains(&cwd.join("some-folder").display().to_string())
        );
    }

    #[test]
    fn a_writable_folder_has_no_issue_and_keeps_no_probe_file() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(folder_issue(&dir.path().join("e.sqlite")), None);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        let file = dir.path().join("plain");
        std::fs::write(&file, "").unwrap();
        let issue = folder_issue(&file.join("e.sqlite")).unwrap();
        assert_eq!(issue.problem, FolderProblem::NotAFolder);
    }
}
