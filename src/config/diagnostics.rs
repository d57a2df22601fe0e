//! How the configuration's problems are worded: where a key is (`file:line`, or the environment
//! variable that set it), how it is named (`[api] timeout`, `[[accounts]] #2 (acme) handle`),
//! which variable would set it, and "did you mean" for unknown keys. Decides nothing about what
//! is valid.

use super::tree::{Error, Fault, Node, Origin, Seg, Value};
use super::{ACCOUNTS_ENV_PREFIX, ENV_PREFIX};
use crate::domain::Handle;

/// Names places in one configuration: its file (or what stands for it) and its values.
#[derive(Debug, Clone)]
pub(super) struct Locator {
    name: String,
    text: String,
    tree: Node,
}

/// 1-based line and column of byte `offset` of `text` (past the end: on its last line).
pub(super) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text.as_bytes()[..offset.min(text.len())];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    (line, offset - line_start + 1)
}

impl Locator {
    /// `name` is how messages call the file; `tree` holds the values of `text` and the
    /// environment.
    pub fn new(name: &str, text: &str, tree: Node) -> Locator {
        Locator {
            name: name.to_string(),
            text: text.to_string(),
            tree,
        }
    }

    /// 1-based line and column of byte `offset` of the file.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        line_col(&self.text, offset)
    }

    /// Whether `path` is set, in the file or by an environment variable.
    pub fn is_written(&self, path: &[Seg]) -> bool {
        self.tree.at(path).is_some()
    }

    /// Whether the value at `path` was set by an environment variable.
    pub fn is_from_env(&self, path: &[Seg]) -> bool {
        matches!(
            self.tree.at(path),
            Some(Node {
                origin: Origin::Env(_),
                ..
            })
        )
    }

    /// Where `path` is: its variable when the environment set it, else the deepest part of it
    /// written in the file (an `[[accounts]]` entry by its first key).
    fn origin(&self, path: &[Seg]) -> Option<Origin> {
        if let Some(Node {
            origin: o @ Origin::Env(_),
            ..
        }) = self.tree.at(path)
        {
            return Some(o.clone());
        }
        (1..=path.len()).rev().find_map(|n| {
            let node = self.tree.at(&path[..n])?;
            match (&path[n - 1], &node.value) {
                (Seg::Index(_), Value::Table(t)) => t
                    .iter()
                    .filter_map(|(_, v)| match v.origin {
                        Origin::File(o) => Some(o),
                        Origin::Env(_) => None,
                    })
                    .min()
                    .map(Origin::File),
                (_, _) => match node.origin {
                    Origin::File(o) => Some(Origin::File(o)),
                    Origin::Env(_) => None,
                },
            }
        })
    }

    /// `config.toml:12`, `config.toml (env ENGAGEMENT__API__TIMEOUT)` or `config.toml`.
    fn at(&self, origin: Option<&Origin>) -> String {
        match origin {
            Some(Origin::Env(var)) => format!("{} (env {var})", self.name),
            Some(Origin::File(offset)) => format!("{}:{}", self.name, self.line_col(*offset).0),
            None => self.name.clone(),
        }
    }

    /// `<where>: <key>: <message>`.
    pub fn problem(&self, path: &[Seg], message: &str) -> String {
        format!(
            "{}: {}: {message}",
            self.at(self.origin(path).as_ref()),
            self.section_form(path)
        )
    }

    /// The environment variable `var` that fits no key, and why.
    pub fn stray(&self, var: &str, why: &str) -> String {
        format!("{} (env {var}): {why}", self.name)
    }

    /// A deserialization fault, worded like the problems of validation.
    pub fn fault(&self, fault: &Fault) -> String {
        let origin = fault.origin.clone().or_else(|| self.origin(&fault.path));
        let at = self.at(origin.as_ref());
        let Error::Unknown(known) = &fault.error else {
            return format!("{at}: {}: {}", self.section_form(&fault.path), fault.error);
        };
        let Some((Seg::Key(key), parents)) = fault.path.split_last() else {
            return format!("{at}: unknown key");
        };
        let guess = suggest(key, known);
        if let Some(Seg::Index(_)) = parents.last() {
            let hint = guess.map_or(String::new(), |s| format!(" (did you mean {s:?}?)"));
            return format!(
                "{at}: unknown key {key:?} in {}{hint}",
                self.section_form(parents)
            );
        }
        let qualify = |k: &str| {
            let prefix = dotted(parents);
            if prefix.is_empty() {
                k.to_string()
            } else {
                format!("{prefix}.{k}")
            }
        };
        let hint = guess.map_or(String::new(), |s| {
            format!(" (did you mean {:?}?)", qualify(s))
        });
        format!("{at}: unknown key {:?}{hint}", qualify(key))
    }

    /// The handle of the `[[accounts]]` entry at `path` (a list index), when it has a valid one.
    fn label(&self, path: &[Seg]) -> Option<Handle> {
        self.tree.at(path)?.str("handle")?.parse().ok()
    }

    /// `[api] base_url`, `[limits.totals] per_minute`, `[[accounts]] #2 (acme) access_token`.
    pub fn section_form(&self, path: &[Seg]) -> String {
        let Some((last, parents)) = path.split_last() else {
            return String::new();
        };
        match (last, parents.last()) {
            (Seg::Key(k), None) => format!("[{k}]"),
            (Seg::Index(_), _) => self.entry_header(path),
            (Seg::Key(k), Some(Seg::Index(_))) => format!("{} {k}", self.entry_header(parents)),
            (Seg::Key(k), Some(_)) => format!("[{}] {k}", dotted(parents)),
        }
    }

    /// `[[accounts]] #2 (acme)`, `[[accounts]] #2` for the entry at `path`.
    fn entry_header(&self, path: &[Seg]) -> String {
        let Some((Seg::Index(i), parents)) = path.split_last() else {
            return dotted(path);
        };
        match self.label(path) {
            Some(h) => format!("[[{}]] #{} ({})", dotted(parents), i + 1, h.as_str()),
            None => format!("[[{}]] #{}", dotted(parents), i + 1),
        }
    }

    /// The environment variable that sets `path` (`ENGAGEMENT__API__TIMEOUT`,
    /// `ENGAGEMENT__ACCOUNTS__ACME__ACCESS_TOKEN`; `<HANDLE>` for an entry without a valid one).
    pub fn env_var(&self, path: &[Seg]) -> String {
        if let [Seg::Key(accounts), Seg::Index(_), Seg::Key(field)] = path
            && accounts == "accounts"
        {
            let handle = self
                .label(&path[..2])
                .map_or("<HANDLE>".to_string(), |h| h.as_str().to_ascii_uppercase());
            return format!(
                "{ACCOUNTS_ENV_PREFIX}{handle}__{}",
                field.to_ascii_uppercase()
            );
        }
        let keys: Vec<String> = path
            .iter()
            .filter_map(|s| match s {
                Seg::Key(k) => Some(k.to_ascii_uppercase()),
                Seg::Index(_) => None,
            })
            .collect();
        format!("{ENV_PREFIX}{}", keys.join("__"))
    }

    /// `problems` in file order (by line), then those without a line.
    pub fn sort(&self, problems: &mut [String]) {
        let prefix = format!("{}:", self.name);
        problems.sort_by_key(|p| {
            p.strip_prefix(&prefix)
                .and_then(|rest| rest.split(':').next()?.parse::<usize>().ok())
                .unwrap_or(usize::MAX)
        });
    }
}

/// The table keys of `path`, dotted: `limits.totals`.
fn dotted(path: &[Seg]) -> String {
    let keys: Vec<&str> = path
        .iter()
        .filter_map(|s| match s {
            Seg::Key(k) => Some(k.as_str()),
            Seg::Index(_) => None,
        })
        .collect();
    keys.join(".")
}

/// The known word closest to `word`, if it is close enough to be a typo.
pub(super) fn suggest<'k>(word: &str, known: &[&'k str]) -> Option<&'k str> {
    // The API's name for the kind the config calls `hourly`.
    if word == "28hr" && known.contains(&"hourly") {
        return Some("hourly");
    }
    known
        .iter()
        .map(|k| (strsim::levenshtein(word, k), *k))
        .filter(|(d, k)| *d <= (k.len().max(word.len()) / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// A key path from dotted keys, `#n` standing for the n-th (1-based) list entry:
/// `path("accounts.#2.handle")`.
pub(super) fn path(dotted: &str) -> Vec<Seg> {
    dotted
        .split('.')
        .map(
            |s| match s.strip_prefix('#').and_then(|n| n.parse::<usize>().ok()) {
                Some(n) => Seg::Index(n - 1),
                None => Seg::Key(s.to_string()),
            },
        )
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::tree::overlay;
    use super::*;

    fn locator(text: &str, env: &[(&str, &str)]) -> Locator {
        let mut tree = Node::parse(text).unwrap();
        overlay(
            &mut tree,
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        );
        Locator::new("c.toml", text, tree)
    }

    #[test]
    fn byte_offsets_map_to_lines_and_columns() {
        let l = locator("a = 1\n\nbb = 2\n", &[]);
        assert_eq!(l.line_col(0), (1, 1));
        assert_eq!(l.line_col(4), (1, 5));
        assert_eq!(l.line_col(5), (1, 6), "the newline ends its line");
        assert_eq!(l.line_col(6), (2, 1));
        assert_eq!(l.line_col(8), (3, 2));
        assert_eq!(
            l.line_col(999),
            (4, 999 - 14 + 1),
            "past the end: after the last line"
        );
    }

    #[test]
    fn problems_name_the_line_of_the_key_or_of_its_section() {
        let text = "[api]\ntimeout = \"1s\"\n\n[[accounts]]\nhandle = \"@acme\"\n";
        let l = locator(text, &[]);
        assert_eq!(
            l.problem(&path("api.timeout"), "bad"),
            "c.toml:2: [api] timeout: bad"
        );
        assert_eq!(
            l.problem(&path("api.retry_attempts"), "bad"),
            "c.toml:1: [api] retry_attempts: bad",
            "a key left out: its section's line"
        );
        assert_eq!(
            l.problem(&path("accounts.#1"), "bad"),
            "c.toml:5: [[accounts]] #1 (acme): bad",
            "an entry: its first key"
        );
        assert_eq!(
            l.problem(&path("database.path"), "bad"),
            "c.toml: [database] path: bad"
        );
    }

    #[test]
    fn environment_values_are_named_by_their_variable() {
        let l = locator(
            "[[accounts]]\nhandle = \"acme\"\n[[accounts]]\nhandle = \"no such handle\"\n",
            &[
                ("ENGAGEMENT__LIMITS__TOTALS__PER_MINUTE", "x"),
                ("ENGAGEMENT__ACCOUNTS__ACME__ENABLED", "maybe"),
            ],
        );
        assert_eq!(
            l.problem(&path("limits.totals.per_minute"), "bad"),
            "c.toml (env ENGAGEMENT__LIMITS__TOTALS__PER_MINUTE): [limits.totals] per_minute: bad"
        );
        assert_eq!(
            l.problem(&path("accounts.#1.enabled"), "bad"),
            "c.toml (env ENGAGEMENT__ACCOUNTS__ACME__ENABLED): [[accounts]] #1 (acme) enabled: bad"
        );
        assert!(!l.is_from_env(&path("accounts.#1.handle")));
        assert_eq!(
            l.env_var(&path("app.consumer_secret")),
            "ENGAGEMENT__APP__CONSUMER_SECRET"
        );
        assert_eq!(
            l.env_var(&path("accounts.#1.access_token_secret")),
            "ENGAGEMENT__ACCOUNTS__ACME__ACCESS_TOKEN_SECRET"
        );
        assert_eq!(
            l.env_var(&path("accounts.#2.access_token")),
            "ENGAGEMENT__ACCOUNTS__<HANDLE>__ACCESS_TOKEN"
        );
    }

    #[test]
    fn suggestions_are_for_typos_only() {
        let known = ["timeout", "max_in_flight", "hourly"];
        assert_eq!(suggest("timout", &known), Some("timeout"));
        assert_eq!(suggest("max_inflight", &known), Some("max_in_flight"));
        assert_eq!(suggest("28hr", &known), Some("hourly"));
        assert_eq!(suggest("colour", &known), None);
    }
}
