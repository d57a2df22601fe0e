//! The Tweets to track: a `tweet_id,owner` CSV (empty owner = public Tweet), re-read every cycle.
//! Every bad line is reported as `file:line: reason`; owners are matched against the configured
//! accounts and normalised to their spelling. Reads one file; knows nothing of the API or the DB.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::domain::{Handle, TweetId, TweetIdError};

/// The header the first non-comment, non-blank line must hold.
pub const HEADER: &str = "tweet_id,owner";

/// The validated inventory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inventory {
    /// One entry per Tweet, sorted by Tweet ID.
    pub entries: Vec<Entry>,
    /// Lines that repeated an earlier line exactly (same Tweet, same owner) and were skipped.
    pub duplicates_skipped: usize,
    /// Where it was read from, as used in messages.
    pub source: String,
}

/// One tracked Tweet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The Tweet.
    pub id: TweetId,
    /// The owning account, spelled as in the config; `None` for a public Tweet.
    pub owner: Option<Handle>,
    /// 1-based line in the source file.
    pub line: usize,
}

impl Inventory {
    /// Tweets owned by a configured account.
    pub fn owned(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter().filter(|e| e.owner.is_some())
    }

    /// Public Tweets (no owner).
    pub fn public(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter().filter(|e| e.owner.is_none())
    }

    /// Number of Tweets.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no Tweet is listed.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// One bad line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong with it and what to do.
    pub message: String,
}

/// Why an inventory could not be used.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    /// The file could not be read.
    #[error("cannot read inventory {}: {source}{hint}", path.display(), hint = read_hint(source))]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Some lines are wrong; every one of them is listed.
    #[error("{}", list_problems(source_name, problems))]
    Invalid {
        source_name: String,
        problems: Vec<Problem>,
    },
}

fn read_hint(e: &std::io::Error) -> &'static str {
    if e.kind() == std::io::ErrorKind::NotFound {
        " (create it with the header line \"tweet_id,owner\", or set [inventory] path)"
    } else {
        ""
    }
}

fn list_problems(source: &str, problems: &[Problem]) -> String {
    let mut out = String::new();
    for p in problems {
        out.push_str(&format!("{source}:{}: {}\n", p.line, p.message));
    }
    let s = if problems.len() == 1 { "" } else { "s" };
    out.push_str(&format!("{} problem{s} in {source}", problems.len()));
    out
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

/// Reads and validates the inventory at `path`; owners must be among `accounts`.
pub fn load(path: &Path, accounts: &[Handle]) -> Result<Inventory, InventoryError> {
    let (inventory, problems) = load_valid_lines(path, accounts)?;
    strict(inventory, problems)
}

/// Reads the inventory at `path`, keeping its valid lines: the inventory they make, and every
/// bad line (empty when the file validates). Only an unreadable file is an error.
pub fn load_valid_lines(
    path: &Path,
    accounts: &[Handle],
) -> Result<(Inventory, Vec<Problem>), InventoryError> {
    // Messages name the file by its absolute path: a relative one means little in a log.
    let shown = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let text = std::fs::read_to_string(path).map_err(|source| InventoryError::Read {
        path: shown.clone(),
        source,
    })?;
    Ok(parse_valid_lines(
        &shown.display().to_string(),
        &text,
        accounts,
    ))
}

/// Validates inventory `text`, naming it `source_name` in messages.
pub fn parse(
    source_name: &str,
    text: &str,
    accounts: &[Handle],
) -> Result<Inventory, InventoryError> {
    let (inventory, problems) = parse_valid_lines(source_name, text, accounts);
    strict(inventory, problems)
}

fn strict(inventory: Inventory, problems: Vec<Problem>) -> Result<Inventory, InventoryError> {
    if problems.is_empty() {
        Ok(inventory)
    } else {
        Err(InventoryError::Invalid {
            source_name: inventory.source,
            problems,
        })
    }
}

/// Validates inventory `text`: the inventory of its valid lines, and every bad line (sorted).
/// A Tweet listed again with another owner keeps its first listing; the later one is a problem.
pub fn parse_valid_lines(
    source_name: &str,
    text: &str,
    accounts: &[Handle],
) -> (Inventory, Vec<Problem>) {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let by_key: HashMap<String, usize> = accounts
        .iter()
        .enumerate()
        .map(|(i, h)| (h.as_str().to_ascii_lowercase(), i))
        .collect();

    let mut problems = Vec::new();
    let mut rows: Vec<Row> = Vec::new();
    let mut header_seen = false;
    for (index, raw) in text.split('\n').enumerate() {
        let line = index + 1;
        let content = raw.trim();
        if content.is_empty() || content.starts_with('#') {
            continue;
        }
        let mut fields = content.split(',').map(field);
        let (first, second, extra) = (fields.next(), fields.next(), fields.next());
        if !header_seen {
            header_seen = true;
            if first != Some("tweet_id") || second != Some("owner") || extra.is_some() {
                problems.push(Problem {
                    line,
                    message: format!(
                        "expected the header line \"{HEADER}\" before any Tweet, found {:?}",
                        shorten(content)
                    ),
                });
            }
            continue;
        }
        let (Some(id), Some(owner), None) = (first, second, extra) else {
            let found = content.split(',').count();
            problems.push(Problem {
                line,
                message: format!("expected 2 fields (tweet_id,owner), found {found}"),
            });
            continue;
        };
        let id = match id.parse::<TweetId>() {
            Ok(id) => Some(id),
            Err(TweetIdError::Zero) => {
                problems.push(Problem {
                    line,
                    message: "tweet_id 0 is not a valid Tweet ID".into(),
                });
                None
            }
            Err(e @ (TweetIdError::NotANumber(_) | TweetIdError::TooLarge(_))) => {
                problems.push(Problem {
                    line,
                    message: format!("tweet_id: {e}"),
                });
                None
            }
        };
        let owner = match resolve_owner(owner, &by_key) {
            Ok(owner) => owner,
            Err(message) => {
                problems.push(Problem { line, message });
                continue;
            }
        };
        if let Some(id) = id {
            rows.push(Row { id, owner, line });
        }
    }
    if !header_seen {
        problems.push(Problem {
            line: 1,
            message: format!("is empty; the first line must be the header \"{HEADER}\""),
        });
    }

    // Sorting by (id, line) puts every repeat of a Tweet right after its first listing.
    rows.sort_unstable_by_key(|r| (r.id, r.line));
    let mut entries: Vec<Entry> = Vec::with_capacity(rows.len());
    let mut duplicates_skipped = 0;
    let mut first: Option<Row> = None;
    for row in rows {
        match first {
            Some(f) if f.id == row.id => {
                if f.owner == row.owner {
                    duplicates_skipped += 1;
                } else {
                    let was = f
                        .owner
                        .map_or("as a public Tweet (no owner)".to_string(), |i| {
                            format!("with owner {}", accounts[i as usize])
                        });
                    problems.push(Problem {
                        line: row.line,
                        message: format!(
                            "Tweet {} is already listed on line {} {was}; a Tweet has one owner",
                            row.id, f.line
                        ),
                    });
                }
            }
            _ => {
                entries.push(Entry {
                    id: row.id,
                    owner: row.owner.map(|i| accounts[i as usize].clone()),
                    line: row.line,
                });
                first = Some(row);
            }
        }
    }

    problems.sort_by_key(|p| p.line);
    let inventory = Inventory {
        entries,
        duplicates_skipped,
        source: source_name.to_string(),
    };
    (inventory, problems)
}

/// A valid line before duplicate checks; `owner` indexes the accounts.
#[derive(Clone, Copy)]
struct Row {
    id: TweetId,
    owner: Option<u32>,
    line: usize,
}

/// Trims a field and removes the double quotes a spreadsheet export may add.
fn field(s: &str) -> &str {
    let s = s.trim();
    s.strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .map_or(s, str::trim)
}

/// The account index of `owner` (`None` when empty), matched case-insensitively, `@` optional.
fn resolve_owner(owner: &str, by_key: &HashMap<String, usize>) -> Result<Option<u32>, String> {
    if owner.is_empty() {
        return Ok(None);
    }
    let bare = owner.strip_prefix('@').unwrap_or(owner);
    if !Handle::is_valid(bare) {
        let reason = owner
            .parse::<Handle>()
            .err()
            .map_or_else(String::new, |e| e.to_string());
        return Err(format!("owner: {reason}"));
    }
    // Lowercase into a stack buffer: no allocation per line.
    let mut buf = [0u8; 15];
    let key = &mut buf[..bare.len()];
    key.copy_from_slice(bare.as_bytes());
    key.make_ascii_lowercase();
    let key = std::str::from_utf8(key).expect("ASCII handle");
    match by_key.get(key) {
        Some(&i) => Ok(Some(i as u32)),
        None => Err(format!(
            "owner {bare} is not a configured account; add an [[accounts]] entry for {bare} \
             or leave owner empty for a public Tweet"
        )),
    }
}

/// `s`, cut to a length that keeps messages readable.
fn shorten(s: &str) -> String {
    match s.char_indices().nth(60) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handles(names: &[&str]) -> Vec<Handle> {
        names.iter().map(|n| n.parse().unwrap()).collect()
    }

    fn problems(text: &str) -> Vec<String> {
        match parse("tweets.csv", text, &handles(&["Acme", "beta_co"])) {
            Err(InventoryError::Invalid { problems, .. }) => problems
                .iter()
                .map(|p| format!("tweets.csv:{}: {}", p.line, p.message))
                .collect(),
            other => panic!("expected problems, got {other:?}"),
        }
    }

    #[test]
    fn good_file_with_comments_blank_lines_at_owners_and_public_rows() {
        let text = "\u{feff}# Tweets we track\n\n tweet_id , owner \r\n\
                    30,@acme\r\n\
                    # a public one\n\
                    10,\n\
                    20, BETA_CO \n\
                    \"40\",\"acme\"\n\
                    30,Acme\n\n";
        let inv = parse("tweets.csv", text, &handles(&["Acme", "beta_co"])).unwrap();
        let ids: Vec<u64> = inv.entries.iter().map(|e| e.id.get()).collect();
        assert_eq!(ids, vec![10, 20, 30, 40], "sorted by id");
        assert_eq!(inv.entries[0].owner, None);
        assert_eq!(inv.entries[0].line, 6);
        // Owners take the config's spelling whatever the file wrote.
        assert_eq!(inv.entries[1].owner.as_ref().unwrap().as_str(), "beta_co");
        assert_eq!(inv.entries[2].owner.as_ref().unwrap().as_str(), "Acme");
        assert_eq!(inv.entries[2].line, 4, "the first listing is kept");
        assert_eq!(inv.duplicates_skipped, 1);
        assert_eq!(inv.len(), 4);
        assert_eq!(inv.owned().count(), 3);
        assert_eq!(inv.public().count(), 1);
        assert_eq!(inv.source, "tweets.csv");
    }

    #[test]
    fn header_only_is_an_empty_inventory() {
        let inv = parse("t.csv", "tweet_id,owner\n", &[]).unwrap();
        assert!(inv.is_empty());
    }

    #[test]
    fn each_kind_of_bad_line_is_reported_with_file_and_line() {
        let h = "tweet_id,owner\n";
        assert_eq!(
            problems(&format!("{h}1,acme,x\n")),
            ["tweets.csv:2: expected 2 fields (tweet_id,owner), found 3"]
        );
        assert_eq!(
            problems(&format!("{h}1\n")),
            ["tweets.csv:2: expected 2 fields (tweet_id,owner), found 1"]
        );
        let p = problems(&format!("{h}12a,acme\n"));
        assert!(
            p[0].starts_with("tweets.csv:2: tweet_id: not a number: \"12a\""),
            "{p:?}"
        );
        assert_eq!(
            problems(&format!("{h}0,\n")),
            ["tweets.csv:2: tweet_id 0 is not a valid Tweet ID"]
        );
        let p = problems(&format!("{h}5,ac-me\n"));
        assert!(
            p[0].starts_with("tweets.csv:2: owner: not a valid handle: \"ac-me\""),
            "{p:?}"
        );
        assert_eq!(
            problems(&format!("{h}5,@nobody\n")),
            [
                "tweets.csv:2: owner nobody is not a configured account; add an [[accounts]] entry \
              for nobody or leave owner empty for a public Tweet"
            ]
        );
        assert_eq!(
            problems(&format!("{h}5,acme\n#\n5,\n")),
            [
                "tweets.csv:4: Tweet 5 is already listed on line 2 with owner Acme; a Tweet has one owner"
            ]
        );
        assert_eq!(
            problems(&format!("{h}5,\n5,beta_co\n")),
            [
                "tweets.csv:3: Tweet 5 is already listed on line 2 as a public Tweet (no owner); a Tweet has one owner"
            ]
        );
    }

    #[test]
    fn every_bad_line_is_reported_with_a_count() {
        let text = "tweet_id,owner\n1,acme\nx,acme\n2,ghost\n\n0,\n3,acme,extra\n1,beta_co\n";
        let e = parse("tweets.csv", text, &handles(&["acme", "beta_co"])).unwrap_err();
        let shown = e.to_string();
        let lines: Vec<&str> = shown.lines().collect();
        assert_eq!(lines.len(), 6, "{shown}");
        for (got, line) in lines.iter().zip([3, 4, 6, 7, 8]) {
            assert!(got.starts_with(&format!("tweets.csv:{line}: ")), "{got}");
        }
        assert_eq!(lines[5], "5 problems in tweets.csv");
    }

    #[test]
    fn header_is_required_first() {
        let p = problems("# comment\n123,acme\n");
        assert_eq!(
            p,
            [
                "tweets.csv:2: expected the header line \"tweet_id,owner\" before any Tweet, found \"123,acme\""
            ]
        );
        let p = problems("id,owner\n1,\n");
        assert!(
            p[0].starts_with("tweets.csv:1: expected the header line"),
            "{p:?}"
        );
        assert_eq!(
            problems("# only comments\n\n"),
            ["tweets.csv:1: is empty; the first line must be the header \"tweet_id,owner\""]
        );
    }

    #[test]
    fn missing_file_names_the_path() {
        let e = load(Path::new("/nonexistent/tweets.csv"), &[]).unwrap_err();
        let shown = e.to_string();
        assert!(
            shown.starts_with("cannot read inventory /nonexistent/tweets.csv: "),
            "{shown}"
        );
        assert!(shown.contains("tweet_id,owner"), "{shown}");
    }

    /// The valid lines of a file with bad ones, and the bad ones, for `on_invalid = "skip"` and
    /// for the daemon's last good inventory.
    #[test]
    fn valid_lines_are_kept_apart_from_bad_ones() {
        let text = "tweet_id,owner\n1,acme\nx,acme\n2,\n1,\n";
        let (inv, problems) = parse_valid_lines("t.csv", text, &handles(&["acme"]));
        let ids: Vec<u64> = inv.entries.iter().map(|e| e.id.get()).collect();
        assert_eq!(ids, vec![1, 2]);
        assert_eq!(inv.entries[0].owner.as_ref().unwrap().as_str(), "acme");
        let lines: Vec<usize> = problems.iter().map(|p| p.line).collect();
        assert_eq!(lines, vec![3, 5]);
        assert!(parse("t.csv", text, &handles(&["acme"])).is_err());
    }

    #[test]
    fn load_reads_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.csv");
        std::fs::write(&path, "tweet_id,owner\n7,acme\n").unwrap();
        let inv = load(&path, &handles(&["acme"])).unwrap();
        assert_eq!(inv.len(), 1);
        assert_eq!(inv.source, path.display().to_string());
    }
}
