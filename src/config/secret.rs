//! Secret values: [`Secret`], which never shows its value in `Debug` or `Display`, and reading a
//! secret from its `*_file`. Which key holds which secret is the config's business.

use std::fmt;
use std::path::Path;

use secrecy::{ExposeSecret, SecretString};

/// A secret string: `Debug` and `Display` print `[redacted]`; read it with [`Secret::expose`].
#[derive(Clone)]
pub struct Secret(SecretString);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(SecretString::from(value.into()))
    }

    /// The secret value itself: pass it to the signer, never to a log.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// What a secret file held.
pub(super) struct FileSecret {
    /// The contents without the trailing newline.
    pub value: String,
    /// The permission bits, when every user may write the file (after symlinks).
    pub world_writable: Option<u32>,
}

/// Reads the secret file at `path`; the error is worded to follow the key, never holding the
/// contents.
pub(super) fn read_file(path: &str) -> Result<FileSecret, String> {
    use std::os::unix::fs::PermissionsExt;
    let contents =
        std::fs::read_to_string(path).map_err(|e| format!("cannot read {path:?}: {e}"))?;
    let value = contents.trim_end_matches(['\n', '\r']);
    if value.is_empty() {
        return Err(format!("file {path:?} is empty"));
    }
    let mode = std::fs::metadata(Path::new(path))
        .map(|m| m.permissions().mode() & 0o7777)
        .ok();
    Ok(FileSecret {
        value: value.to_string(),
        world_writable: mode.filter(|m| m & 0o002 != 0),
    })
}
