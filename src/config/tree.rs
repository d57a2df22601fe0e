//! The configuration as written: the TOML file's values (parsed once, each remembering where its
//! key is written) with the `ENGAGEMENT__…` environment variables laid over them, and a serde
//! `Deserializer` over that tree that goes on past errors, so every one of them is reported.
//! Knows no key names (that is `raw`) and no meanings (that is `validate`).

use std::fmt;

use serde::de::value::{MapDeserializer, SeqDeserializer};
use serde::de::{self, DeserializeOwned, IntoDeserializer, Unexpected, Visitor};
use toml::de::{DeTable, DeValue};

use super::{ACCOUNTS_ENV_PREFIX, ENV_PREFIX};
use crate::domain::Handle;

/// Where a value was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Origin {
    /// In the file, its key starting at this byte offset.
    File(usize),
    /// In this environment variable.
    Env(String),
}

/// One value of the tree.
#[derive(Debug, Clone)]
pub(super) struct Node {
    pub origin: Origin,
    pub value: Value,
}

/// A TOML value; environment values are strings, read as numbers, booleans or lists on demand.
#[derive(Debug, Clone)]
pub(super) enum Value {
    Str(String),
    Int(i64),
    /// An integer past `i64`, as written.
    BigInt(String),
    Float(f64),
    Bool(bool),
    List(Vec<Node>),
    Table(Vec<(String, Node)>),
}

/// One step of a key path: a table key or a list index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Seg {
    Key(String),
    Index(usize),
}

/// What one deserialization error says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Error {
    /// A key no field takes, with the keys the table does take.
    Unknown(&'static [&'static str]),
    /// Anything else, worded to follow "`<key>`: ".
    Message(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Unknown(_) => f.write_str("unknown key"),
            Error::Message(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for Error {}

impl de::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Error {
        Error::Message(msg.to_string())
    }

    fn invalid_type(_: Unexpected<'_>, expected: &dyn de::Expected) -> Error {
        Error::Message(format!(
            "must be {}",
            expected_phrase(&expected.to_string())
        ))
    }

    fn invalid_value(unexpected: Unexpected<'_>, expected: &dyn de::Expected) -> Error {
        Self::invalid_type(unexpected, expected)
    }

    fn unknown_field(_: &str, expected: &'static [&'static str]) -> Error {
        Error::Unknown(expected)
    }
}

/// Serde's words for its own types, as the config's messages say them.
fn expected_phrase(expected: &str) -> &str {
    match expected {
        "u8" | "u16" | "u32" | "u64" | "usize" | "i8" | "i16" | "i32" | "i64" => {
            "a non-negative integer"
        }
        "a boolean" => "true or false",
        e if e.starts_with("struct ") || e == "a map" => "a table ([section] or { key = value })",
        e => e,
    }
}

/// One deserialization error: where, as a path and an origin, and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Fault {
    pub path: Vec<Seg>,
    pub origin: Option<Origin>,
    pub error: Error,
}

impl Node {
    /// Parses TOML `text`; an error comes with the byte offset it is at, when known.
    pub fn parse(text: &str) -> Result<Node, (Option<usize>, String)> {
        let doc = DeTable::parse(text)
            .map_err(|e| (e.span().map(|s| s.start), e.message().trim().to_string()))?;
        Ok(Node {
            origin: Origin::File(0),
            value: table(doc.get_ref()),
        })
    }

    /// The value at `key` of this table.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.value {
            Value::Table(t) => t.iter().find(|(k, _)| k == key).map(|(_, n)| n),
            _ => None,
        }
    }

    /// The node at `path`, if it is there.
    pub fn at(&self, path: &[Seg]) -> Option<&Node> {
        path.iter()
            .try_fold(self, |node, seg| match (seg, &node.value) {
                (Seg::Key(k), _) => node.get(k),
                (Seg::Index(i), Value::List(l)) => l.get(*i),
                _ => None,
            })
    }

    /// The string at `key` of this table.
    pub fn str(&self, key: &str) -> Option<&str> {
        match &self.get(key)?.value {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// Takes the node at `path` out of the tree; whether it was there.
    fn remove(&mut self, path: &[Seg]) -> bool {
        let Some((last, parents)) = path.split_last() else {
            return false;
        };
        let mut node = self;
        for seg in parents {
            node = match (seg, &mut node.value) {
                (Seg::Key(k), Value::Table(t)) => match t.iter_mut().find(|(key, _)| key == k) {
                    Some((_, n)) => n,
                    None => return false,
                },
                (Seg::Index(i), Value::List(l)) => match l.get_mut(*i) {
                    Some(n) => n,
                    None => return false,
                },
                _ => return false,
            };
        }
        match (last, &mut node.value) {
            (Seg::Key(k), Value::Table(t)) => {
                let before = t.len();
                t.retain(|(key, _)| key != k);
                t.len() < before
            }
            (Seg::Index(i), Value::List(l)) if *i < l.len() => {
                l.remove(*i);
                true
            }
            _ => false,
        }
    }

    /// Sets `path` (table keys) to the environment variable `var`'s `value`, making the tables
    /// on the way (a value in the way is replaced: the environment wins).
    fn set(&mut self, path: &[String], var: &str, value: &str) {
        let origin = Origin::Env(var.to_string());
        let mut node = self;
        for key in path {
            if !matches!(node.value, Value::Table(_)) {
                node.value = Value::Table(Vec::new());
            }
            let Value::Table(t) = &mut node.value else {
                unreachable!("made a table above")
            };
            let i = match t.iter().position(|(k, _)| k == key) {
                Some(i) => i,
                None => {
                    t.push((
                        key.clone(),
                        Node {
                            origin: origin.clone(),
                            value: Value::Table(Vec::new()),
                        },
                    ));
                    t.len() - 1
                }
            };
            node = &mut t[i].1;
        }
        *node = Node {
            origin,
            value: Value::Str(value.to_string()),
        };
    }
}

fn table(t: &DeTable<'_>) -> Value {
    Value::Table(
        t.iter()
            .map(|(k, v)| {
                let node = Node {
                    origin: Origin::File(k.span().start),
                    value: value(v.get_ref()),
                };
                (k.get_ref().to_string(), node)
            })
            .collect(),
    )
}

fn value(v: &DeValue<'_>) -> Value {
    match v {
        DeValue::String(s) => Value::Str(s.to_string()),
        DeValue::Integer(i) => match i64::from_str_radix(i.as_str(), i.radix()) {
            Ok(n) => Value::Int(n),
            Err(_) => Value::BigInt(i.as_str().to_string()),
        },
        DeValue::Float(f) => Value::Float(f.as_str().parse().unwrap_or(f64::NAN)),
        DeValue::Boolean(b) => Value::Bool(*b),
        DeValue::Datetime(d) => Value::Str(d.to_string()),
        DeValue::Array(a) => Value::List(
            a.iter()
                .map(|v| Node {
                    origin: Origin::File(v.span().start),
                    value: value(v.get_ref()),
                })
                .collect(),
        ),
        DeValue::Table(t) => table(t),
    }
}

/// Lays the `ENGAGEMENT__SECTION__KEY` variables of `env` over `root`, and the
/// `ENGAGEMENT__ACCOUNTS__<HANDLE>__<FIELD>` ones over the `[[accounts]]` entry with that handle.
/// Empty values are ignored. Returns the variables that fit nowhere: (name, why).
pub(super) fn overlay(
    root: &mut Node,
    env: impl IntoIterator<Item = (String, String)>,
) -> Vec<(String, String)> {
    let mut strays = Vec::new();
    let mut accounts: Vec<(String, String, String, String)> = Vec::new();
    for (var, value) in env {
        if value.is_empty() {
            continue;
        }
        if starts_with_ignore_case(&var, ACCOUNTS_ENV_PREFIX) {
            match account_field(&var[ACCOUNTS_ENV_PREFIX.len()..]) {
                Some((handle, field)) => accounts.push((handle, field, var, value)),
                None => strays.push((
                    var,
                    format!(
                        "not an account setting; use {ACCOUNTS_ENV_PREFIX}<HANDLE>__ACCESS_TOKEN, \
                         __ACCESS_TOKEN_SECRET, __ACCESS_TOKEN_SECRET_FILE or __ENABLED"
                    ),
                )),
            }
        } else if starts_with_ignore_case(&var, ENV_PREFIX) {
            let path: Vec<String> = var[ENV_PREFIX.len()..]
                .split("__")
                .filter(|k| !k.is_empty())
                .map(str::to_ascii_lowercase)
                .collect();
            if !path.is_empty() {
                root.set(&path, &var, &value);
            }
        }
    }
    accounts.sort();
    let mut used = vec![false; accounts.len()];
    let mut seen = Vec::new();
    if let Some(Value::List(entries)) = root.get_mut_value("accounts") {
        for entry in entries.iter_mut() {
            let Some(handle) = entry.str("handle").and_then(|h| h.parse::<Handle>().ok()) else {
                continue;
            };
            let key = handle.as_str().to_ascii_lowercase();
            // A handle used twice is reported by validation; the variables go to the first.
            if seen.contains(&key) {
                continue;
            }
            for (i, (h, field, var, value)) in accounts.iter().enumerate() {
                if *h == key && matches!(entry.value, Value::Table(_)) {
                    entry.set(std::slice::from_ref(field), var, value);
                    used[i] = true;
                }
            }
            seen.push(key);
        }
    }
    for ((handle, _, var, _), used) in accounts.into_iter().zip(used) {
        if !used {
            strays.push((
                var,
                format!(
                    "no [[accounts]] entry has handle {handle:?}; add one (handle = {handle:?}) \
                     to the config file or remove the variable"
                ),
            ));
        }
    }
    strays
}

impl Node {
    fn get_mut_value(&mut self, key: &str) -> Option<&mut Value> {
        match &mut self.value {
            Value::Table(t) => t
                .iter_mut()
                .find(|(k, _)| k == key)
                .map(|(_, n)| &mut n.value),
            _ => None,
        }
    }
}

/// `ACME__ACCESS_TOKEN_SECRET` → (`acme`, `access_token_secret`): the lowercased handle (without
/// `@`) and the field, matched from the end since a handle may hold `_`.
fn account_field(rest: &str) -> Option<(String, String)> {
    const FIELDS: [&str; 5] = [
        "access_token_secret_file",
        "access_token_secret",
        "access_token_file",
        "access_token",
        "enabled",
    ];
    FIELDS.iter().find_map(|f| {
        let cut = rest.len().checked_sub(f.len() + 2)?;
        let (handle, suffix) = (rest.get(..cut)?, rest.get(cut..)?);
        (!handle.is_empty() && suffix.starts_with("__") && suffix[2..].eq_ignore_ascii_case(f))
            .then(|| {
                (
                    handle.trim_start_matches('@').to_ascii_lowercase(),
                    f.to_string(),
                )
            })
    })
}

pub(super) fn starts_with_ignore_case(s: &str, prefix: &str) -> bool {
    s.get(..prefix.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(prefix))
}

/// Deserializes `T` from `root`. Each error is recorded and its value taken out of the tree
/// (so its default applies), then deserialization starts again: every error is found, and `T`
/// is returned unless the tree itself is unusable.
pub(super) fn deserialize<T: DeserializeOwned>(root: &mut Node) -> (Option<T>, Vec<Fault>) {
    let mut faults = Vec::new();
    loop {
        let err = match serde_path_to_error::deserialize::<_, T>(&*root) {
            Ok(value) => return (Some(value), faults),
            Err(e) => e,
        };
        let mut path: Vec<Seg> = err
            .path()
            .iter()
            .filter_map(|s| match s {
                serde_path_to_error::Segment::Map { key } => Some(Seg::Key(key.clone())),
                serde_path_to_error::Segment::Seq { index } => Some(Seg::Index(*index)),
                _ => None,
            })
            .collect();
        let error = err.into_inner();
        // A bad value is taken out whole: a list element goes with its list, except an
        // `[[accounts]]` entry, which goes alone (or just its bad key).
        let mut keep = path
            .iter()
            .rposition(|s| matches!(s, Seg::Key(_)))
            .map_or(0, |i| i + 1);
        if matches!(path.get(1), Some(Seg::Index(_))) {
            keep = keep.max(2);
        }
        path.truncate(keep);
        let origin = root.at(&path).map(|n| n.origin.clone());
        let removed = root.remove(&path);
        faults.push(Fault {
            path,
            origin,
            error,
        });
        if !removed {
            return (None, faults);
        }
    }
}

impl<'de> IntoDeserializer<'de, Error> for &Node {
    type Deserializer = Self;

    fn into_deserializer(self) -> Self {
        self
    }
}

impl<'de> de::Deserializer<'de> for &Node {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match &self.value {
            Value::Str(s) => visitor.visit_str(s),
            Value::Int(n) => visitor.visit_i64(*n),
            Value::BigInt(n) => Err(de::Error::invalid_type(Unexpected::Other(n), &visitor)),
            Value::Float(f) => visitor.visit_f64(*f),
            Value::Bool(b) => visitor.visit_bool(*b),
            Value::List(l) => visitor.visit_seq(SeqDeserializer::new(l.iter())),
            Value::Table(t) => {
                visitor.visit_map(MapDeserializer::new(t.iter().map(|(k, v)| (k.as_str(), v))))
            }
        }
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match &self.value {
            Value::Str(s) if s.eq_ignore_ascii_case("true") => visitor.visit_bool(true),
            Value::Str(s) if s.eq_ignore_ascii_case("false") => visitor.visit_bool(false),
            _ => self.deserialize_any(visitor),
        }
    }

    fn deserialize_u64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match &self.value {
            Value::Str(s) => match s.trim().parse::<i64>() {
                Ok(n) => visitor.visit_i64(n),
                Err(_) => self.deserialize_any(visitor),
            },
            _ => self.deserialize_any(visitor),
        }
    }

    fn deserialize_u32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_u64(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    serde::forward_to_deserialize_any! {
        i8 i16 i32 i64 i128 u8 u16 u128 f32 f64 char str string bytes byte_buf unit unit_struct
        seq tuple tuple_struct map struct enum identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, serde::Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct Section {
        count: u64,
        on: bool,
        name: String,
    }

    #[derive(Debug, Default, serde::Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct Root {
        section: Section,
        other: Section,
    }

    fn tree(text: &str, env: &[(&str, &str)]) -> (Node, Vec<(String, String)>) {
        let mut root = Node::parse(text).unwrap();
        let strays = overlay(
            &mut root,
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        );
        (root, strays)
    }

    #[test]
    fn every_error_is_found_and_the_rest_still_read() {
        let (mut root, _) = tree(
            "[section]\ncount = \"x\"\nname = \"n\"\ntypo = 1\n[other]\non = 3\n",
            &[],
        );
        let (value, faults) = deserialize::<Root>(&mut root);
        let value = value.unwrap();
        assert_eq!(value.section.name, "n");
        let mut found: Vec<_> = faults
            .iter()
            .map(|f| (f.path.clone(), f.origin.clone(), f.error.to_string()))
            .collect();
        // Tables are read in key order, not file order: messages are sorted by line later.
        found.sort_by_key(|f| format!("{:?}", f.0));
        let key = |a: &str, b: &str| vec![Seg::Key(a.into()), Seg::Key(b.into())];
        assert_eq!(
            found,
            vec![
                (
                    key("other", "on"),
                    Some(Origin::File(50)),
                    "must be true or false".to_string()
                ),
                (
                    key("section", "count"),
                    Some(Origin::File(10)),
                    "must be a non-negative integer".to_string()
                ),
                (
                    key("section", "typo"),
                    Some(Origin::File(33)),
                    "unknown key".to_string()
                ),
            ]
        );
        assert_eq!(
            faults
                .iter()
                .find(|f| matches!(f.error, Error::Unknown(_)))
                .unwrap()
                .error,
            Error::Unknown(&["count", "on", "name"]),
            "the known keys come with an unknown one"
        );
    }

    #[test]
    fn environment_strings_are_read_as_the_field_needs() {
        let (mut root, strays) = tree(
            "[section]\ncount = 1\n",
            &[
                ("ENGAGEMENT__SECTION__COUNT", "7"),
                ("ENGAGEMENT__OTHER__ON", "TRUE"),
                ("ENGAGEMENT__OTHER__NAME", "12"),
                ("ENGAGEMENT__OTHER__COUNT", ""),
            ],
        );
        assert!(strays.is_empty());
        let (value, faults) = deserialize::<Root>(&mut root);
        assert!(faults.is_empty(), "{faults:?}");
        let value = value.unwrap();
        assert_eq!(value.section.count, 7);
        assert!(value.other.on);
        assert_eq!(
            value.other.name, "12",
            "a string field keeps digits as written"
        );
        assert_eq!(value.other.count, 0, "an empty variable is ignored");
        assert_eq!(
            root.at(&[Seg::Key("section".into()), Seg::Key("count".into())])
                .unwrap()
                .origin,
            Origin::Env("ENGAGEMENT__SECTION__COUNT".into())
        );
    }

    #[test]
    fn account_variables_go_to_the_entry_with_their_handle() {
        let (root, strays) = tree(
            "[[accounts]]\nhandle = \"@Acme_Co\"\n",
            &[
                ("ENGAGEMENT__ACCOUNTS__ACME_CO__ACCESS_TOKEN_SECRET", "s"),
                ("ENGAGEMENT__ACCOUNTS__BOB__ENABLED", "false"),
                ("ENGAGEMENT__ACCOUNTS__ACME_CO__COLOUR", "red"),
            ],
        );
        let entry = root
            .at(&[Seg::Key("accounts".into()), Seg::Index(0)])
            .unwrap();
        assert_eq!(entry.str("access_token_secret"), Some("s"));
        let strays: Vec<&str> = strays.iter().map(|(v, _)| v.as_str()).collect();
        assert_eq!(
            strays,
            [
                "ENGAGEMENT__ACCOUNTS__ACME_CO__COLOUR",
                "ENGAGEMENT__ACCOUNTS__BOB__ENABLED"
            ]
        );
    }
}
