//! `check`: validate config, inventory, the database and its folder without sending anything;
//! with `--online`, also try each credential with the cheapest real request.
//!
//! The database is checked as `run` checks it before a cycle: `PRAGMA quick_check` (the full
//! `integrity_check` with `--thorough`), and a write transaction begun and rolled back.
//!
//! One line per thing checked, then a summary line. Exit 0: all ok; 2: any problem (config,
//! inventory, the database damaged, not writable or busy, its folder, a refused credential); 3:
//! no problem found, but the API could not be reached (or kept failing), so some credential could
//! not be verified.

use clap::Args;
use tokio_util::sync::CancellationToken;

use super::{Cli, Failure};
use crate::client::{ApiClient, ApiError, AppVerdict, Breaker};
use crate::config::Config;
use crate::domain::AccountState;
use crate::domain::Credential;
use crate::domain::{Endpoint, Handle, JobKind, Metric, TweetId, iso_utc};
use crate::inventory::Inventory;
use crate::lock::{self, FolderProblem};
use crate::pipeline;
use crate::planner::Job;
use crate::store::{AccountRecord, IntegrityCheck, SCHEMA_VERSION, Store, StoreError};

/// `check` options.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Also try each credential with one real request: the app's keys (when no bearer token is
    /// configured, one is obtained), the bearer token on /totals, and each enabled account's token
    /// once on /totals for one of its Tweets. Paused accounts are never sent a request.
    #[arg(long)]
    pub online: bool,
    /// Check the database with the full `PRAGMA integrity_check` (every index compared with its
    /// table) rather than `quick_check`, which `run` does before every cycle. Slower: it reads
    /// the database more than once.
    #[arg(long)]
    pub thorough: bool,
}

/// What the checks found, for the summary line and the exit code.
#[derive(Debug, Default)]
struct Findings {
    /// Things that are wrong (exit 2).
    problems: Vec<String>,
    /// Things that could not be verified because the API did not answer (exit 3 when nothing
    /// is wrong).
    unverified: Vec<String>,
    /// `/totals` requests that reached the API (retries included).
    sent: u32,
}

impl Findings {
    fn problem(&mut self, what: impl Into<String>) {
        self.problems.push(what.into());
    }

    fn exit_code(&self) -> u8 {
        if !self.problems.is_empty() {
            2
        } else if !self.unverified.is_empty() {
            3
        } else {
            0
        }
    }

    fn summary(&self, online: bool) -> String {
        let sent = if online {
            let s = if self.sent == 1 { "" } else { "s" };
            format!("{} /totals request{s} sent", self.sent)
        } else {
            "nothing sent".to_string()
        };
        if !self.problems.is_empty() {
            let n = self.problems.len();
            let s = if n == 1 { "" } else { "s" };
            format!(
                "check: {n} problem{s}: {} ({sent})",
                self.problems.join(", ")
            )
        } else if !self.unverified.is_empty() {
            format!(
                "check: no problem found, but not verified (API unreachable): {} ({sent})",
                self.unverified.join(", ")
            )
        } else {
            format!("check: ok ({sent})")
        }
    }
}

/// Lists every problem found; exit 2 when there is any, 3 when the API could not be reached.
pub async fn check(cli: &Cli, args: &CheckArgs) -> Result<u8, Failure> {
    let mut findings = Findings::default();
    let config = match Config::load(cli.config.as_deref(), super::utf8_env()) {
        Ok(c) => c,
        Err(e) => {
            println!("config: FAILED\n{e}");
            findings.problem("config (nothing else checked)");
            println!("{}", findings.summary(false));
            return Ok(findings.exit_code());
        }
    };
    let source = config.source.as_ref().map_or("(none)".to_string(), |p| {
        lock::absolute(p).display().to_string()
    });
    let paused = config.accounts.iter().filter(|a| !a.enabled).count();
    let paused = if paused == 0 {
        String::new()
    } else {
        format!(", {paused} paused")
    };
    println!(
        "config {source}: ok ({} accounts{paused}, API {})",
        config.accounts.len(),
        config.api.base_url
    );
    for warning in config.warnings() {
        println!("  warning: {warning}");
    }
    let inventory = check_inventory(&config, &mut findings);
    let integrity = if args.thorough {
        IntegrityCheck::Full
    } else {
        IntegrityCheck::Quick
    };
    let records = check_database(&config, integrity, &mut findings);
    if args.online {
        online(&config, inventory.as_ref(), &mut findings).await?;
    } else {
        for (handle, state) in pipeline::account_states(&config, &records) {
            let record = records.iter().find(|r| r.handle == handle);
            println!("account {handle}: {}", offline_account(state, record));
        }
        println!("api: nothing sent (`check --online` tries each credential with one request)");
    }
    println!("{}", findings.summary(args.online));
    Ok(findings.exit_code())
}

fn check_inventory(config: &Config, findings: &mut Findings) -> Option<Inventory> {
    match pipeline::load_inventory(config) {
        Ok(inv) => {
            let owned = inv.owned().count();
            println!(
                "inventory {}: ok ({} Tweets: {owned} owned, {} public)",
                lock::absolute(&config.inventory.path).display(),
                inv.entries.len(),
                inv.entries.len() - owned
            );
            Some(inv)
        }
        Err(e) => {
            findings.problem("inventory");
            println!("inventory: FAILED\n{e}");
            None
        }
    }
}

/// The database's folder (it must exist and take new files: the lock file, SQLite's -wal and
/// -shm), the database itself (its schema, its integrity, and that it can be written, as `run`
/// proves before a cycle); returns the accounts' last recorded states.
fn check_database(
    config: &Config,
    integrity: IntegrityCheck,
    findings: &mut Findings,
) -> Vec<AccountRecord> {
    if let target @ crate::store::Target::Postgres(_) = config.database.target() {
        return check_server(&target, findings);
    }
    let db = lock::absolute(&config.database.path);
    let folder = lock::database_folder(&db);
    let mut creatable = true;
    match lock::folder_issue(&db) {
        None => println!(
            "database folder {}: ok (writable{})",
            folder.display(),
            free_space(&folder).map_or(String::new(), |f| format!(", {f} free"))
        ),
        Some(issue) => match &issue.problem {
            FolderProblem::NotWritable(os) if lock::writer_files_writable(&db) => println!(
                "database folder {}: not writable ({os}), but the database and its -wal, -shm and \
                 .lock files exist and are writable: ok as long as they stay",
                folder.display()
            ),
            problem => {
                creatable = false;
                findings.problem("database folder");
                let os = match problem {
                    FolderProblem::NotWritable(os) | FolderProblem::Inaccessible(os) => {
                        format!(" ({os})")
                    }
                    FolderProblem::Missing | FolderProblem::NotAFolder => String::new(),
                };
                println!(
                    "database folder {}: FAILED{os}: it {}",
                    folder.display(),
                    issue.advice()
                );
            }
        },
    }
    if !db.exists() {
        if creatable {
            println!(
                "database {}: does not exist yet; `run` or `migrate` creates it",
                db.display()
            );
        } else {
            println!(
                "database {}: does not exist, and cannot be created until its folder is fixed",
                db.display()
            );
        }
        return Vec::new();
    }
    let records = match Store::open_read_only(&db) {
        Ok(store) => {
            println!(
                "database {}: ok (schema version {SCHEMA_VERSION})",
                db.display()
            );
            store.accounts().unwrap_or_default()
        }
        Err(StoreError::TooOld { found, .. }) => {
            println!(
                "database {}: schema version {found}; `run` or `migrate` upgrades it to {SCHEMA_VERSION}",
                db.display()
            );
            Vec::new()
        }
        Err(e) => {
            findings.problem("database");
            println!("database {}: FAILED\n{e}", db.display());
            return Vec::new();
        }
    };
    // Read and written through one connection that changes nothing (no checkpoint on close).
    let store = match Store::connect_existing(&db) {
        Ok(store) => store,
        Err(e) => {
            findings.problem("database writable");
            println!("database writable {}: FAILED\n{e}", db.display());
            return records;
        }
    };
    let started = std::time::Instant::now();
    match store.ensure_sound(integrity) {
        Ok(()) => {
            let thorough = match integrity {
                IntegrityCheck::Quick => "; `check --thorough` runs the full integrity_check",
                IntegrityCheck::Full => "",
            };
            println!(
                "database integrity {}: ok (PRAGMA {} in {:.2} s{thorough})",
                db.display(),
                integrity.pragma(),
                started.elapsed().as_secs_f64()
            );
        }
        Err(e) => {
            findings.problem("database integrity");
            println!("database integrity {}: FAILED\n{e}", db.display());
        }
    }
    if !creatable {
        println!(
            "database writable {}: not checked: its folder cannot be written (above)",
            db.display()
        );
        return records;
    }
    match store.prove_writable() {
        Ok(()) => println!(
            "database writable {}: ok (the file is writable and a write transaction can begin; \
             nothing was written)",
            db.display()
        ),
        Err(e @ StoreError::Busy { .. }) => {
            findings.problem("database writable");
            println!("database writable {}: BUSY\n{e}", db.display());
        }
        Err(e) => {
            findings.problem("database writable");
            println!("database writable {}: FAILED\n{e}", db.display());
        }
    }
    records
}

/// A PostgreSQL database: it can be reached with the config's credentials, its schema is this
/// binary's (or older: `run` upgrades it), and the server takes writes.
fn check_server(target: &crate::store::Target, findings: &mut Findings) -> Vec<AccountRecord> {
    let store = match Store::connect_existing(target) {
        Ok(store) => store,
        Err(e) => {
            findings.problem("database");
            println!("database {target}: FAILED\n{e}");
            return Vec::new();
        }
    };
    let supported = store.supported_version();
    let records = match store.schema_version() {
        Ok(0) => {
            println!("database {target}: reachable, no schema yet; `run` or `migrate` creates it");
            Vec::new()
        }
        Ok(found) if found < supported => {
            println!(
                "database {target}: schema version {found}; `run` or `migrate` upgrades it to {supported}"
            );
            Vec::new()
        }
        Ok(found) if found > supported => {
            findings.problem("database");
            println!(
                "database {target}: FAILED: schema version {found} is newer than this binary's \
                 {supported}; upgrade engagement-ingest"
            );
            return Vec::new();
        }
        Ok(_) => {
            println!("database {target}: ok (PostgreSQL, schema version {supported})");
            store.accounts().unwrap_or_default()
        }
        Err(e) => {
            findings.problem("database");
            println!("database {target}: FAILED\n{e}");
            return Vec::new();
        }
    };
    match store.prove_writable() {
        Ok(()) => println!("database writable {target}: ok (the server takes writes)"),
        Err(e) => {
            findings.problem("database writable");
            println!("database writable {target}: FAILED\n{e}");
        }
    }
    records
}

/// An account's line without `--online`: its switch and what the last run found.
fn offline_account(state: AccountState, record: Option<&AccountRecord>) -> String {
    match (state, record) {
        (AccountState::Paused, _) => "paused (enabled = false)".to_string(),
        (AccountState::Refused, Some(r)) => format!(
            "enabled; its token is REFUSED since {}{}: re-authorize the account, or set \
             enabled = false in its [[accounts]] entry (as the last run found; `check --online` \
             tries it now)",
            iso_utc(r.since),
            r.detail
                .as_deref()
                .map_or_else(String::new, |d| format!(" ({d})"))
        ),
        (_, Some(r)) if r.state == AccountState::Ok => {
            format!("enabled (its token answered on {})", iso_utc(r.checked_at))
        }
        _ => "enabled".to_string(),
    }
}

/// How one probe request ended.
#[derive(Debug)]
enum Verdict {
    /// The credential works; the text is a note (the Tweet was refused, not the credential).
    Ok(String),
    /// 401.
    Refused(String),
    /// Another 4xx: the credential is not refused, but the request is.
    Rejected(String),
    /// No answer (connection, timeout), or only 429/5xx after the retries.
    Unreachable(String),
}

fn judge(tweet: TweetId, result: Result<(), ApiError>) -> Verdict {
    let Err(e) = result else {
        return Verdict::Ok(String::new());
    };
    let names_tweets = !e.unavailable_ids().is_empty()
        || e.api_errors().iter().any(|m| {
            let m = m.to_ascii_lowercase();
            m.contains("forbidden to access tweets") || m.contains("are unavailable")
        });
    match &e {
        ApiError::Status { status: 401, .. } | ApiError::Token(_) => {
            Verdict::Refused(e.to_string())
        }
        ApiError::Status {
            status: 400 | 403, ..
        } if names_tweets => Verdict::Ok(format!(
            " (the token works; the API refused Tweet {tweet} itself: {e})"
        )),
        ApiError::Status { status, .. } if *status == 429 || *status >= 500 => {
            Verdict::Unreachable(e.to_string())
        }
        ApiError::Status { .. }
        | ApiError::NoToken(_)
        | ApiError::TooLarge { .. }
        | ApiError::Unusable(_) => Verdict::Rejected(e.to_string()),
        ApiError::Connect(_)
        | ApiError::TokenConnect(_)
        | ApiError::Unreachable(_)
        | ApiError::Transport(_)
        | ApiError::Body(_)
        | ApiError::Cancelled => Verdict::Unreachable(e.to_string()),
    }
}

/// The client and what it learnt so far.
struct Probe {
    client: ApiClient,
    breaker: Breaker,
    shutdown: CancellationToken,
    /// The token endpoint's verdict on the app's keys, asked at most once.
    app: Option<AppVerdict>,
    /// Set once the app's keys are known to be refused (reported once).
    app_refused: bool,
    /// Set once the API did not answer (reported once; nothing more is sent).
    unreachable: bool,
}

impl Probe {
    async fn app(&mut self) -> AppVerdict {
        if self.app.is_none() {
            self.app = Some(self.client.verify_app().await);
        }
        self.app.clone().expect("just set")
    }

    /// One `/totals` request for `tweet` under `credential`.
    async fn totals(
        &self,
        credential: Credential,
        tweet: TweetId,
        metrics: Vec<Metric>,
        findings: &mut Findings,
    ) -> Verdict {
        let job = Job {
            kind: JobKind::Totals,
            endpoint: Endpoint::Totals,
            credential,
            tweets: vec![tweet],
            metrics,
            cell: None,
            refresh: false,
            served_from: None,
        };
        let body = crate::client::RequestBody::new(&job, None);
        let outcome = self
            .client
            .send(
                Endpoint::Totals,
                &job.credential,
                &body,
                |_bytes| Ok(()),
                &self.breaker,
                &self.shutdown,
            )
            .await;
        // Attempts that reached the API (a refused connection sent nothing).
        if outcome.status.is_some() {
            findings.sent += outcome.attempts;
        }
        judge(tweet, outcome.result)
    }

    /// Reports the app's keys refused, once: no account is blamed.
    fn app_refused(&mut self, why: &str, findings: &mut Findings) {
        if self.app_refused {
            return;
        }
        self.app_refused = true;
        findings.problem("app keys");
        let why = why.trim_end_matches("; check app.consumer_key and app.consumer_secret");
        println!(
            "app: REFUSED: the token endpoint refused app.consumer_key and app.consumer_secret \
             ({why}): fix them in [app]; no account is at fault and none needs re-authorizing"
        );
    }

    /// Reports the API unreachable, once.
    fn unreachable(&mut self, why: &str, what: &str, findings: &mut Findings) {
        findings.unverified.push(what.to_string());
        if !self.unreachable {
            self.unreachable = true;
            println!("API unreachable: {why}");
        }
    }
}

/// The Tweet the bearer token is tried on: the newest public one, else the newest of all.
fn bearer_tweet(inventory: &Inventory) -> Option<TweetId> {
    let newest_public = inventory.entries.iter().rev().find(|e| e.owner.is_none());
    newest_public
        .or(inventory.entries.last())
        .map(|entry| entry.id)
}

/// The Tweet an account's token is tried on: its newest in the inventory.
fn own_tweet(inventory: &Inventory, handle: &Handle) -> Option<TweetId> {
    inventory
        .entries
        .iter()
        .rev()
        .find(|e| e.owner.as_ref() == Some(handle))
        .map(|e| e.id)
}

/// `--online`: the app's keys, the bearer token, then each account in config order.
async fn online(
    config: &Config,
    inventory: Option<&Inventory>,
    findings: &mut Findings,
) -> Result<(), Failure> {
    let Some(inventory) = inventory else {
        println!("api: nothing sent: the checks need the inventory's Tweets");
        return Ok(());
    };
    let client = ApiClient::new(config.into(), pipeline::system_clock()).map_err(Failure::fatal)?;
    let mut probe = Probe {
        client,
        breaker: Breaker::new(),
        shutdown: CancellationToken::new(),
        app: None,
        app_refused: false,
        unreachable: false,
    };

    // The app's keys: without a configured bearer token, obtaining one is their test.
    let configured = config.app.bearer_token.is_some();
    if !configured {
        match probe.app().await {
            AppVerdict::Accepted => {
                println!("app: ok (api.token_url issued a bearer token for app.consumer_key)");
            }
            AppVerdict::Refused(why) => probe.app_refused(&why, findings),
            AppVerdict::Unknown(why) => probe.unreachable(&why, "app keys", findings),
        }
    }

    // The bearer token, on one Tweet.
    let label = if configured {
        "bearer token (app.bearer_token)"
    } else {
        "bearer token (obtained)"
    };
    if probe.app_refused {
        println!("bearer token: none (the app's keys were refused)");
    } else if probe.unreachable {
        println!("bearer token: not checked: API unreachable (above)");
    } else if let Some(tweet) = bearer_tweet(inventory) {
        match probe
            .totals(Credential::Bearer, tweet, Metric::PUBLIC.to_vec(), findings)
            .await
        {
            Verdict::Ok(note) => println!("{label}: ok{note}"),
            Verdict::Refused(why) => match probe.app().await {
                AppVerdict::Refused(app_why) => probe.app_refused(&app_why, findings),
                _ => {
                    findings.problem("bearer token");
                    let advice = if configured {
                        "replace app.bearer_token, or leave it out to have one obtained from \
                         api.token_url"
                    } else {
                        "the API refuses the token its own token endpoint issued: check that the \
                         app is approved for the Engagement API"
                    };
                    println!("{label}: REFUSED ({why}): {advice}");
                }
            },
            Verdict::Rejected(why) => {
                findings.problem("bearer token");
                println!("{label}: FAILED ({why})");
            }
            Verdict::Unreachable(why) => probe.unreachable(&why, "bearer token", findings),
        }
    } else {
        println!("{label}: not checked: the inventory has no Tweets");
    }

    // Each account's token, once, on one of its own Tweets.
    let mut signed_ok = false;
    for account in &config.accounts {
        let handle = &account.handle;
        if !account.enabled {
            println!("account {handle}: paused (enabled = false): nothing sent");
            continue;
        }
        if probe.app_refused {
            println!("account {handle}: not checked: the app's keys were refused (above)");
            continue;
        }
        if probe.unreachable {
            findings.unverified.push(format!("account {handle}"));
            println!("account {handle}: not checked: API unreachable (above)");
            continue;
        }
        let Some(tweet) = own_tweet(inventory, handle) else {
            println!(
                "account {handle}: not checked: no Tweet of it in the inventory (a request under \
                 its token would count its handle for billing)"
            );
            continue;
        };
        let credential = Credential::UserContext {
            account: handle.clone(),
        };
        match probe
            .totals(credential, tweet, Endpoint::Totals.metrics(), findings)
            .await
        {
            Verdict::Ok(note) => {
                signed_ok = true;
                println!("account {handle}: ok{note}");
            }
            Verdict::Refused(why) => match probe.app().await {
                AppVerdict::Refused(app_why) => {
                    probe.app_refused(&app_why, findings);
                    println!("account {handle}: not checked: the app's keys were refused (above)");
                }
                _ => {
                    findings.problem(format!("account {handle}"));
                    println!(
                        "account {handle}: REFUSED ({why}): re-authorize the account (a new \
                         access_token and access_token_secret), or set enabled = false in its \
                         [[accounts]] entry"
                    );
                }
            },
            Verdict::Rejected(why) => {
                findings.problem(format!("account {handle}"));
                println!("account {handle}: FAILED ({why})");
            }
            Verdict::Unreachable(why) => {
                probe.unreachable(&why, &format!("account {handle}"), findings);
            }
        }
    }

    // With a configured bearer token, the app's keys were tried only by the accounts' signed
    // requests (and asked of the token endpoint after a 401): said last.
    if configured && !probe.unreachable && !probe.app_refused {
        let verdict = match probe.app.clone() {
            None if signed_ok => None,
            None => Some(probe.app().await),
            known => known,
        };
        match verdict {
            None => {
                println!("app: ok (the accounts' requests, signed with its keys, were accepted)")
            }
            Some(AppVerdict::Accepted) => println!(
                "app: ok (the token endpoint accepts app.consumer_key and app.consumer_secret)"
            ),
            Some(AppVerdict::Refused(why)) => probe.app_refused(&why, findings),
            Some(AppVerdict::Unknown(why)) => {
                findings.unverified.push("app keys".to_string());
                println!("app: not verified: the token endpoint did not answer ({why})");
            }
        }
    }
    Ok(())
}

/// The free space of the filesystem holding `folder`, for people (`12.3 GB`).
fn free_space(folder: &std::path::Path) -> Option<String> {
    let stat = rustix::fs::statvfs(folder).ok()?;
    let bytes = stat.f_bavail.saturating_mul(stat.f_frsize) as f64;
    Some(match bytes {
        b if b >= 1e9 => format!("{:.1} GB", b / 1e9),
        b if b >= 1e6 => format!("{:.0} MB", b / 1e6),
        b => format!("{:.0} kB", b / 1e3),
    })
}
