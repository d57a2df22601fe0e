use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use engagement_ingest::domain::{DAY_SECS, HOUR_SECS, Hour, JobKind, Metric};
use engagement_ingest::sim::{TweetState, World};

use crate::helpers::{BEARER, CONSUMER_SECRET, TestApp, run_binary, text, world_with};

/// The charts a page of a database with data and runs holds for `accounts` accounts: a panel
/// per account of daily impressions and one of daily engagements, the top Tweets' first hours,
/// freshness.
fn charts(accounts: usize) -> usize {
    2 * accounts + 2
}

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
            "wrote {out_arg} ({} bytes, {} charts)",
            html.len(),
            charts(2)
        )),
        "{all}"
    );
    print!("{stdout}");

    assert_eq!(html.matches("<svg").count(), charts(2), "{html}");
    assert_eq!(html.matches("</svg>").count(), charts(2));
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
    let start = format!(
        "<tr><td>1</td><td><a href=\"https://x.com/i/status/{top}\">{top}</a></td><td>{owner}</td>"
    );
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
            tokio::task::spawn_blocking(move || {
                assert_renders(&chromium, &out_path, &dir_path, 2000)
            })
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

/// No `src=` pointing at the network, nothing from outside at all; the only links (`href=`)
/// are the Tweets' pages on x.com, followed only when clicked.
fn assert_self_contained(html: &str) {
    let lower = html.to_ascii_lowercase();
    for attr in ["src=", "href="] {
        for (at, _) in lower.match_indices(attr) {
            let value = lower[at + attr.len()..].trim_start_matches(['"', '\'']);
            if attr == "href=" && value.starts_with("https://x.com/i/status/") {
                let id: String = value["https://x.com/i/status/".len()..]
                    .chars()
                    .take_while(|c| *c != '"')
                    .collect();
                assert!(
                    !id.is_empty() && id.chars().all(|c| c.is_ascii_digit()),
                    "a Tweet link to {id:?}"
                );
                assert!(lower[..at].ends_with("<a "), "a link that is not an anchor");
                continue;
            }
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

/// Screenshots `page` (a window `height` pixels tall) and a blank page with headless Chromium:
/// both exit 0, and the report's PNG is several times the blank one's size (charts, text and
/// tables, not an empty canvas). Returns the report's PNG.
fn assert_renders(chromium: &Path, page: &Path, dir: &Path, height: u32) -> PathBuf {
    let blank = dir.join("blank.html");
    std::fs::write(&blank, "<!DOCTYPE html><html><body></body></html>\n").unwrap();
    let blank_png = screenshot(chromium, &blank, dir, "blank", 2000);
    let name = page.file_stem().unwrap().to_string_lossy().into_owned();
    let page_png = screenshot(chromium, page, dir, &name, height);
    let (blank_size, page_size) = (
        std::fs::metadata(&blank_png).unwrap().len(),
        std::fs::metadata(&page_png).unwrap().len(),
    );
    assert!(
        page_size > 5 * blank_size,
        "report screenshot {page_size} bytes, blank page {blank_size} bytes"
    );
    println!("chromium rendered the report: {page_size} bytes of PNG (blank page {blank_size})");
    page_png
}

/// One headless screenshot (1200 pixels wide, `height` tall) of `page`, with its own profile
/// folder; at most 90 s.
fn screenshot(chromium: &Path, page: &Path, dir: &Path, name: &str, height: u32) -> PathBuf {
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
        .arg(format!("--window-size=1200,{height}"))
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

/// `accounts` accounts (`client00`, `client01`, …) of `tweets` Tweets each, posted over the last
/// 20 days, and a few public Tweets.
fn agency_world(accounts: usize, tweets: u32) -> World {
    let mut toml = format!(
        "seed = 5\n[app]\nconsumer_key = \"it-consumer\"\nconsumer_secret = \"{CONSUMER_SECRET}\"\n\
         bearer_token = \"{BEARER}\"\n"
    );
    for i in 0..accounts {
        let user = 3000 + i;
        let _ = write!(
            toml,
            "[[accounts]]\nhandle = \"client{i:02}\"\nuser_id = {user}\n\
             access_token = \"{user}-client{i:02}\"\naccess_token_secret = \"ts-client{i:02}-Hq3W\"\n\
             tweets = {tweets}\n"
        );
    }
    toml.push_str("[public]\ntweets = 3\n[tweets]\nspread_days = 20\n");
    World::from_toml_str(&toml).expect("the agency world parses")
}

/// The `<svg>…</svg>` documents of a page, each with the label the page gave it.
fn svgs(html: &str) -> Vec<(String, &str)> {
    html.split("<svg ")
        .skip(1)
        .map(|rest| {
            let svg = rest.split_once("</svg>").expect("a closed svg").0;
            let label = svg
                .split_once("aria-label=\"")
                .and_then(|(_, l)| l.split_once('"'))
                .map_or(String::new(), |(l, _)| l.to_string());
            (label, svg)
        })
        .collect()
}

/// The stroke colour of each polyline of `svg` drawn `width` pixels wide: the data lines are
/// 2 wide, the legend's strokes 3.
fn strokes(svg: &str, width: u32) -> Vec<String> {
    svg.split("<polyline ")
        .skip(1)
        .filter_map(|p| {
            let tag = p.split_once('>')?.0;
            if !tag.contains(&format!("stroke-width=\"{width}\"")) {
                return None;
            }
            let stroke = tag.split_once("stroke=\"")?.1.split_once('"')?.0;
            Some(stroke.to_ascii_lowercase())
        })
        .collect()
}

/// Whether `text` holds a legend cut short: `+N more`.
fn has_more_legend(text: &str) -> bool {
    text.match_indices('+').any(|(at, _)| {
        let rest = &text[at + 1..];
        let digits = rest.chars().take_while(|c| c.is_ascii_digit()).count();
        digits > 0 && rest[digits..].trim_start().starts_with("more")
    })
}

/// The report of an agency of `accounts` accounts, as a user makes it after a full cycle: exit
/// 0; one panel per account for each daily metric, all on one y axis; no chart repeats a colour
/// and no legend is cut short ("+N more"); a row per account in the per-account table, with the
/// period on top. Where Chromium is installed, a screenshot of the whole page, kept under
/// `$REPORT_SCREENSHOTS` (as `report-N.png`) when that is set.
async fn agency_report(accounts: usize) {
    let app = TestApp::spawn(agency_world(accounts, 4)).await;
    let ctx = app.context();
    assert_eq!(app.run(&ctx, &JobKind::ALL).await.exit_code(), 0);
    drop(ctx);
    let now = app.sim().now();
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join(format!("report-{accounts}.html"));
    let out_arg = out_path.to_string_lossy().into_owned();
    let since = format!("@{}", now - 10 * DAY_SECS);
    let out = app
        .cli(&["report", "--out", &out_arg, "--since", &since])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let html = std::fs::read_to_string(&out_path).unwrap();
    assert_self_contained(&html);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("{} charts", charts(accounts))),
        "{stdout}"
    );

    // The period, hour-aligned, in the page's first lines.
    let (since_h, until_h) = (
        Hour::ceil(now - 10 * DAY_SECS).secs(),
        Hour::floor(now).secs(),
    );
    let minute = |t: i64| {
        chrono::DateTime::from_timestamp(t, 0)
            .unwrap()
            .format("%Y-%m-%d %H:%M")
            .to_string()
    };
    let period = format!("{} to {} UTC", minute(since_h), minute(until_h));
    let head = html.split_once("<h2>").unwrap().0;
    assert!(head.contains(&period), "{period} in {head}");

    let svgs = svgs(&html);
    assert_eq!(svgs.len(), charts(accounts));
    for metric in ["impressions", "engagements"] {
        let panels: BTreeSet<&str> = svgs
            .iter()
            .filter_map(|(label, _)| label.strip_prefix(&format!("Daily {metric} of @")))
            .map(|rest| rest.split(':').next().unwrap())
            .collect();
        let expected: BTreeSet<String> = (0..accounts).map(|i| format!("client{i:02}")).collect();
        assert_eq!(
            panels,
            expected.iter().map(String::as_str).collect(),
            "one {metric} panel per account"
        );
    }
    let mut curves = 0;
    for (label, svg) in &svgs {
        let lines = strokes(svg, 2);
        let distinct: BTreeSet<&String> = lines.iter().collect();
        assert_eq!(
            distinct.len(),
            lines.len(),
            "a colour repeats in {label}: {lines:?}"
        );
        if label.starts_with("Cumulative impressions") {
            curves += 1;
            assert!(lines.len() > 1, "{label}: {lines:?}");
            let legend = strokes(svg, 3);
            assert_eq!(
                legend, lines,
                "{label}: every line has its legend row, in its colour"
            );
        } else if label.starts_with("Daily ") {
            assert_eq!(lines.len(), 1, "one series per panel: {label}");
        }
    }
    assert_eq!(curves, 1);
    assert!(!has_more_legend(&html), "a legend cut short");

    // The per-account table: a row per account, and the totals.
    let table = html
        .split_once("<table class=\"accounts\">")
        .and_then(|(_, t)| t.split_once("</table>"))
        .expect("the per-account table")
        .0;
    for i in 0..accounts {
        assert!(
            table.contains(&format!("<tr><td>@client{i:02}</td>")),
            "client{i:02} in the table"
        );
    }
    assert!(table.contains("<tr><th>all accounts</th>"));

    let Some(chromium) = chromium() else {
        println!("no chromium on this machine: skipped the screenshot, checked the SVG only");
        return;
    };
    // Tall enough for the whole page: the table, two grids of four panels a row, the rest.
    let rows = accounts.div_ceil(4) as u32;
    let height = 1800 + 32 * accounts as u32 + 2 * 220 * rows;
    let dir_path = dir.path().to_path_buf();
    let png = tokio::task::spawn_blocking(move || {
        assert_renders(&chromium, &out_path, &dir_path, height)
    })
    .await
    .unwrap();
    if let Some(keep) = std::env::var_os("REPORT_SCREENSHOTS") {
        let kept = Path::new(&keep).join(format!("report-{accounts}.png"));
        std::fs::copy(&png, &kept).unwrap();
        println!("screenshot kept at {}", kept.display());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_at_5_accounts_has_a_panel_each_and_no_repeated_colour() {
    agency_report(5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_at_40_accounts_has_a_panel_each_no_repeated_colour_and_no_legend_overflow() {
    agency_report(40).await;
}

/// `--owner` with a handle no Tweet has: exit 2 listing the owners, as `query top` does, and no
/// page; `--until` before `--since` is exit 2 too, and `--until` bounds what is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_refuses_an_unknown_owner_and_an_empty_period_and_takes_until() {
    let app = TestApp::spawn(world_with(3, 2, 1, "spread_days = 20")).await;
    let ctx = app.context();
    assert_eq!(app.run(&ctx, &JobKind::ALL).await.exit_code(), 0);
    drop(ctx);
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("r.html");
    let out_arg = out_path.to_string_lossy().into_owned();

    let out = app
        .cli(&["report", "--out", &out_arg, "--owner", "NOBODY"])
        .await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let query = app
        .cli(&[
            "query",
            "top",
            "--metric",
            "impressions",
            "--owner",
            "NOBODY",
        ])
        .await;
    assert_eq!(query.status.code(), Some(2), "{}", text(&query));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("owners: acme, bob"), "{stderr}");
    assert_eq!(
        stderr.lines().last(),
        String::from_utf8_lossy(&query.stderr).lines().last(),
        "the same words as query top"
    );
    assert!(!out_path.exists());

    let out = app
        .cli(&[
            "report", "--out", &out_arg, "--since", "2d", "--until", "3d",
        ])
        .await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("the period holds no whole hour"),
        "{}",
        text(&out)
    );

    // A period that ended 5 days ago: no bucket after it is counted.
    let now = app.sim().now();
    let until = Hour::floor(now - 5 * DAY_SECS).secs();
    let since = until - 5 * DAY_SECS;
    let (since_arg, until_arg) = (format!("@{since}"), format!("@{until}"));
    let out = app
        .cli(&[
            "report", "--out", &out_arg, "--since", &since_arg, "--until", &until_arg, "--owner",
            "@ACME",
        ])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let html = std::fs::read_to_string(&out_path).unwrap();
    let expected: i64 = app
        .sim()
        .tweets()
        .iter()
        .filter(|t| {
            t.state == TweetState::Active && t.owner.as_ref().map(|h| h.as_str()) == Some("acme")
        })
        .map(|t| {
            (since..until)
                .step_by(HOUR_SECS as usize)
                .map(|h| {
                    app.sim()
                        .bucket(t.id, Metric::Impressions, Hour::exact(h).unwrap())
                })
                .sum::<i64>()
        })
        .sum();
    assert!(expected > 0);
    let row = html
        .split_once("<tr><td>@acme</td>")
        .and_then(|(_, r)| r.split_once("</tr>"))
        .expect("acme's row")
        .0;
    let cells: Vec<&str> = row
        .split("<td class=\"num\">")
        .skip(1)
        .map(|c| c.split_once("</td>").unwrap().0)
        .collect();
    assert_eq!(
        cells[2],
        expected.to_string(),
        "impressions of acme in {row}"
    );
    assert!(!html.contains("@bob"), "--owner keeps to acme");
}
