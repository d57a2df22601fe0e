use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use engagement_ingest::domain::{DAY_SECS, HOUR_SECS, Hour, JobKind, Metric};
use engagement_ingest::sim::TweetState;

use crate::helpers::{TestApp, run_binary, text, world_with};

/// The charts a page of a database with data and runs holds: daily impressions, daily
/// engagements, the top Tweets' first hours, freshness.
const CHARTS: usize = 4;

/// On a database filled by a full cycle, `report` writes one self-contained page: one `<svg>` per
/// chart, nothing fetched from anywhere, both accounts named, and the top Tweet of the period with
/// the impressions the simulator itself counts for it over the period's hours. `--owner` keeps to
/// that account. Where Chromium is installed, the page renders to a screenshot that is more than
/// a blank page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_of_a_full_cycle_shows_the_simulators_numbers() {
    // Tweets of the last 20 days: every hour of the period lies inside what the cycle fetches.
    let app = TestApp::spawn(world_with(8, 5, 3, "spread_days = 20")).await;
    let ctx = app.context();
    assert_eq!(app.run(&ctx, &JobKind::ALL).await.exit_code(), 0);
    drop(ctx);

    let now = app.sim().now();
    let since = now - 10 * DAY_SECS;
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("report.html");
    let out_arg = out_path.to_string_lossy().into_owned();
    let since_arg = format!("@{since}");
    let out = app
        .cli(&["report", "--out", &out_arg, "--since", &since_arg])
        .await;
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    let html = std::fs::read_to_string(&out_path).unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!(
            "wrote {out_arg} ({} bytes, {CHARTS} charts)",
            html.len()
        )),
        "{all}"
    );
    print!("{stdout}");

    assert_eq!(html.matches("<svg").count(), CHARTS, "{html}");
    assert_eq!(html.matches("</svg>").count(), CHARTS);
    assert_self_contained(&html);
    for handle in ["acme", "bob"] {
        assert!(html.contains(&format!("@{handle}")), "{handle} in {html}");
    }
    assert!(!html.contains("No data in this period"));
    for kind in ["totals", "hourly", "historical"] {
        assert!(html.contains(&format!("{kind}: ")), "{kind} freshness");
    }

    // The simulator's own numbers: each owned Tweet's impressions over the hours of the period
    // that had ended when the cycle ran.
    let hours: Vec<Hour> = (Hour::ceil(since).secs()..Hour::floor(now).secs())
        .step_by(HOUR_SECS as usize)
        .map(|h| Hour::exact(h).unwrap())
        .collect();
    let (top, owner, impressions) = app
        .sim()
        .tweets()
        .iter()
        .filter(|t| t.state == TweetState::Active)
        .filter_map(|t| Some((t.id, t.owner.clone()?)))
        .map(|(id, owner)| {
            let sum: i64 = hours
                .iter()
                .map(|h| app.sim().bucket(id, Metric::Impressions, *h))
                .sum();
            (id, owner, sum)
        })
        .max_by_key(|(id, _, sum)| (*sum, std::cmp::Reverse(*id)))
        .unwrap();
    assert!(impressions > 0);
    // The first row of the top table: this Tweet, its account, and the simulator's number.
    let start = format!("<tr><td>1</td><td>{top}</td><td>{owner}</td>");
    let row = html
        .split_once(&start)
        .and_then(|(_, rest)| rest.split_once("</tr>"))
        .map(|(row, _)| row)
        .unwrap_or_else(|| panic!("no row starting {start} in {html}"));
    assert!(
        row.contains(&format!("<td class=\"num\">{impressions}</td>")),
        "{impressions} impressions in {row}"
    );

    let bob_path = dir.path().join("bob.html");
    let bob_arg = bob_path.to_string_lossy().into_owned();
    let out = app
        .cli(&[
            "report", "--out", &bob_arg, "--since", &since_arg, "--owner", "@bob",
        ])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let bob = std::fs::read_to_string(&bob_path).unwrap();
    assert!(bob.contains("@bob") && !bob.contains("acme"), "{bob}");

    match chromium() {
        Some(chromium) => {
            let dir_path = dir.path().to_path_buf();
            tokio::task::spawn_blocking(move || assert_renders(&chromium, &out_path, &dir_path))
                .await
                .unwrap();
        }
        None => {
            println!("no chromium on this machine: skipped the screenshot, checked the SVG only")
        }
    }
}

/// A database that is not there is exit 2, named, and no page is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_of_a_missing_database_exits_2_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("nowhere.sqlite");
    let out_path = dir.path().join("report.html");
    let out = run_binary(vec![
        "report".into(),
        "--db".into(),
        db.to_string_lossy().into_owned(),
        "--out".into(),
        out_path.to_string_lossy().into_owned(),
    ])
    .await;
    let all = text(&out);
    assert_eq!(out.status.code(), Some(2), "{all}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&db.to_string_lossy().into_owned()) && stderr.contains("does not exist"),
        "{all}"
    );
    assert!(!out_path.exists());
    assert!(
        !db.exists(),
        "a read-only command must not create the database"
    );
}

/// No `src=` or `href=` pointing at the network, nothing from outside at all.
fn assert_self_contained(html: &str) {
    let lower = html.to_ascii_lowercase();
    for attr in ["src=", "href="] {
        for (at, _) in lower.match_indices(attr) {
            let value = lower[at + attr.len()..].trim_start_matches(['"', '\'']);
            assert!(
                !value.starts_with("http:")
                    && !value.starts_with("https:")
                    && !value.starts_with("//"),
                "external reference: {}",
                &html[at..(at + 80).min(html.len())]
            );
        }
    }
    for tag in ["<script", "<link", "<img", "<iframe", "@import", "url("] {
        assert!(!lower.contains(tag), "{tag} in a self-contained page");
    }
}

/// Debian's Chromium, or one on PATH.
fn chromium() -> Option<PathBuf> {
    let debian = PathBuf::from("/usr/bin/chromium");
    if debian.is_file() {
        return Some(debian);
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join("chromium"))
        .find(|p| p.is_file())
}

/// Screenshots `page` and a blank page with headless Chromium: both exit 0, and the report's PNG
/// is several times the blank one's size (charts, text and tables, not an empty canvas).
fn assert_renders(chromium: &Path, page: &Path, dir: &Path) {
    let blank = dir.join("blank.html");
    std::fs::write(&blank, "<!DOCTYPE html><html><body></body></html>\n").unwrap();
    let blank_png = screenshot(chromium, &blank, dir, "blank");
    let page_png = screenshot(chromium, page, dir, "report");
    let (blank_size, page_size) = (
        std::fs::metadata(&blank_png).unwrap().len(),
        std::fs::metadata(&page_png).unwrap().len(),
    );
    assert!(
        page_size > 5 * blank_size,
        "report screenshot {page_size} bytes, blank page {blank_size} bytes"
    );
    println!("chromium rendered the report: {page_size} bytes of PNG (blank page {blank_size})");
}

/// One headless screenshot (1200×2000) of `page`, with its own profile folder; at most 90 s.
fn screenshot(chromium: &Path, page: &Path, dir: &Path, name: &str) -> PathBuf {
    let png = dir.join(format!("{name}.png"));
    let profile = dir.join(format!("{name}-profile"));
    let log = dir.join(format!("{name}-chromium.log"));
    let mut child = std::process::Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--screenshot={}", png.display()))
        .arg("--window-size=1200,2000")
        .arg(format!("file://{}", page.display()))
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("chromium starts");
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "chromium took more than 90 s to screenshot {}",
                page.display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let stderr = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(status.success(), "chromium {status}: {stderr}");
    assert!(
        png.is_file(),
        "no screenshot at {}: {stderr}",
        png.display()
    );
    png
}
