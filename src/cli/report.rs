//! `report`: renders the HTML page of [`crate::report`] from the database, read-only, and writes
//! it to `--out`.

use std::path::Path;

use anyhow::{Context as _, anyhow};

use super::query::{QueryError, check_owner};
use super::{Cli, Failure, ReportArgs, database_path};
use crate::domain::{DAY_SECS, Handle, Hour, iso_utc};
use crate::report::{self, Options};
use crate::store::Store;
use crate::timespec::parse_time;

/// Writes the report and prints what it wrote.
pub fn report(cli: &Cli, args: &ReportArgs) -> Result<u8, Failure> {
    let db = database_path(cli, args.db.as_deref())?;
    if !db.exists() {
        return Err(Failure::usage(anyhow!(
            "database {} does not exist; pass --db PATH, or set [database] path in the config",
            db.display()
        )));
    }
    if db.sqlite_path().is_some_and(|p| same_file(p, &args.out)) {
        return Err(Failure::usage(anyhow!(
            "--out {} is the database itself; name an .html file",
            args.out.display()
        )));
    }
    let now = chrono::Utc::now().timestamp();
    let time = |flag: &str, text: &str| {
        parse_time(text, now).map_err(|e| Failure::usage(anyhow!("--{flag}: {e}")))
    };
    let since = match &args.since {
        Some(text) => time("since", text)?,
        None => now - 30 * DAY_SECS,
    };
    if since >= now {
        return Err(Failure::usage(anyhow!(
            "--since {} is not in the past",
            args.since.as_deref().unwrap_or_default()
        )));
    }
    let until = match &args.until {
        Some(text) => time("until", text)?,
        None => now,
    };
    // Whole hours, as buckets are: those starting at or after --since and ended by --until.
    let (since, until) = (Hour::ceil(since).secs(), Hour::floor(until.min(now)).secs());
    if since >= until {
        return Err(Failure::usage(anyhow!(
            "the period holds no whole hour: {} to {}; give an earlier --since or a later --until",
            iso_utc(since),
            iso_utc(until)
        )));
    }
    let owner = args
        .owner
        .as_deref()
        .map(str::parse::<Handle>)
        .transpose()
        .map_err(|e| Failure::usage(anyhow!("--owner: {e}")))?;
    // Every problem opening it (not a database, a schema this binary does not read) is about the
    // file named: a usage error.
    let store = Store::open_read_only(&db).map_err(Failure::usage)?;
    // An owner no Tweet has is a mistake to say, as `query top --owner` says it.
    check_owner(&store, args.owner.as_deref()).map_err(|e| match e {
        QueryError::Usage(e) => Failure::usage(e),
        QueryError::Db(e) => Failure::fatal(e),
    })?;
    let options = Options {
        since,
        until,
        now,
        owner,
        database: db.display().to_string(),
    };
    let page = report::render(&store, &options)
        .with_context(|| format!("cannot render the report from {}", db.display()))
        .map_err(Failure::fatal)?;
    std::fs::write(&args.out, &page.html)
        .with_context(|| format!("cannot write {}", args.out.display()))
        .map_err(Failure::fatal)?;
    println!(
        "wrote {} ({} bytes, {} charts) from {}",
        args.out.display(),
        page.html.len(),
        page.charts,
        db.display()
    );
    Ok(0)
}

/// Whether `a` and `b` name the same existing file.
fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}
