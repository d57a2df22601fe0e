//! Reusable serde adapters for config fields: each reads a value as the file writes it into the
//! field's final type, with the check that concerns that value alone (a range, a non-empty
//! string, a parsable URL), and writes it back as it reads. Their errors are worded to follow
//! "`<key>`: " and are collected with every other problem. Which key uses which adapter is
//! `raw`'s; rules that involve several keys are `validate`'s.

use std::fmt;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serializer};

/// A positive duration written as `"30s"`, `"15m"`, `"2h"`, `"90d"` (see
/// [`crate::timespec::parse_duration`]): `#[serde(with = "field::duration")]`.
pub mod duration {
    use super::*;

    struct V;

    impl Visitor<'_> for V {
        type Value = Duration;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string with a unit, e.g. \"30s\" or \"90d\"")
        }
        fn visit_str<E: de::Error>(self, s: &str) -> Result<Duration, E> {
            super::super::parse_duration(s).map_err(E::custom)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        d.deserialize_str(V)
    }

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&crate::timespec::format_duration(*d))
    }

    /// A duration that may be left out: `#[serde(with = "field::duration::option")]`.
    pub mod option {
        use super::*;

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
            super::deserialize(d).map(Some)
        }

        pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
            match d {
                Some(d) => super::serialize(d, s),
                None => s.serialize_none(),
            }
        }
    }
}

/// A duration where `0` means "no limit" (`None`): `#[serde(with = "field::duration_or_zero")]`.
pub mod duration_or_zero {
    use super::*;

    struct V;

    impl Visitor<'_> for V {
        type Value = Option<Duration>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string with a unit, e.g. \"365d\", or 0 for no limit")
        }
        fn visit_u64<E: de::Error>(self, n: u64) -> Result<Option<Duration>, E> {
            match n {
                0 => Ok(None),
                _ => Err(E::custom(format!(
                    "{n} has no unit: write e.g. \"{n}d\", or 0 for no limit"
                ))),
            }
        }
        fn visit_i64<E: de::Error>(self, n: i64) -> Result<Option<Duration>, E> {
            match u64::try_from(n) {
                Ok(n) => self.visit_u64(n),
                Err(_) => Err(E::custom(format!("{n} is negative"))),
            }
        }
        fn visit_str<E: de::Error>(self, s: &str) -> Result<Option<Duration>, E> {
            if s.trim() == "0" {
                return Ok(None);
            }
            super::super::parse_duration(s).map(Some).map_err(E::custom)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        d.deserialize_any(V)
    }

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => super::duration::serialize(d, s),
            None => s.serialize_u64(0),
        }
    }
}

/// A count within `MIN..=MAX`: `#[serde(deserialize_with = "field::count::<1, 64, _, _>")]`.
pub fn count<'de, const MIN: u64, const MAX: u64, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<u64>,
{
    let n = u64::deserialize(d)?;
    match T::try_from(n) {
        Ok(t) if (MIN..=MAX).contains(&n) => Ok(t),
        _ => Err(de::Error::custom(format!(
            "{n} is out of range ({MIN} to {MAX})"
        ))),
    }
}

/// A count where 0 (or leaving it out, where that is the default) means "no limit":
/// `#[serde(with = "field::budget")]`.
pub mod budget {
    use super::*;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<NonZeroU32>, D::Error> {
        let n = u64::deserialize(d)?;
        match u32::try_from(n) {
            Ok(n) => Ok(NonZeroU32::new(n)),
            Err(_) => Err(de::Error::custom(format!(
                "{n} is out of range (0 = unlimited, up to {})",
                u32::MAX
            ))),
        }
    }

    pub fn serialize<S: Serializer>(n: &Option<NonZeroU32>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u32(n.map_or(0, NonZeroU32::get))
    }
}

/// A string that is not blank: `#[serde(deserialize_with = "field::non_empty")]`.
pub fn non_empty<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    if s.trim().is_empty() {
        return Err(de::Error::custom("is empty"));
    }
    Ok(s)
}

/// A path, relative to the working directory unless absolute, not blank:
/// `#[serde(deserialize_with = "field::path")]`.
pub fn path<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
    non_empty(d).map(PathBuf::from)
}

/// A URL that parses; what it may point at is checked by `validate`:
/// `#[serde(with = "field::url")]`. Written back without the lone `/` of an empty path.
pub mod url {
    use ::url::Url;

    use super::*;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Url, D::Error> {
        let text = String::deserialize(d)?;
        Url::parse(&text).map_err(|e| {
            // A URL with a user name may hold a password: never echoed.
            let shown = if text.contains('@') {
                "the URL".to_string()
            } else {
                format!("{text:?}")
            };
            de::Error::custom(format!("{shown} is not a URL ({e})"))
        })
    }

    pub fn serialize<S: Serializer>(url: &Url, s: S) -> Result<S::Ok, S::Error> {
        let text = url.as_str();
        let bare = url.path() == "/" && url.query().is_none() && url.fragment().is_none();
        s.serialize_str(if bare {
            text.trim_end_matches('/')
        } else {
            text
        })
    }
}
