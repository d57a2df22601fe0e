//! The process's open-file limit: the soft limit raised to the hard one at start (as Go's runtime
//! and many daemons do), so that sockets and files are bounded by what the administrator allows
//! rather than by the 1,024 that systemd and most shells leave as the soft limit.

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

/// Raising stops here: far more than a cycle and the metrics listener need, and a limit in the
/// millions (some containers' hard limit) only slows code that walks every possible descriptor.
pub const MAX_OPEN_FILES: u64 = 65_536;

/// Raises the soft open-file limit to the hard limit, at most [`MAX_OPEN_FILES`]; never lowers
/// it. A failure is logged at debug and otherwise ignored: the process works within the limit
/// it was given.
pub fn raise_open_file_limit() {
    let limit = getrlimit(Resource::Nofile);
    let Some(soft) = raised(limit) else {
        tracing::debug!(soft = ?limit.current, hard = ?limit.maximum, "Open-file limit kept");
        return;
    };
    let new = Rlimit {
        current: Some(soft),
        maximum: limit.maximum,
    };
    match setrlimit(Resource::Nofile, new) {
        Ok(()) => {
            tracing::debug!(from = ?limit.current, to = soft, hard = ?limit.maximum, "Open-file limit raised")
        }
        Err(e) => {
            tracing::debug!(soft = ?limit.current, hard = ?limit.maximum, error = %e, "Cannot raise the open-file limit")
        }
    }
}

/// The soft limit to set for `limit` (`None`: unlimited), or `None` when it should stay.
fn raised(limit: Rlimit) -> Option<u64> {
    let target = limit
        .maximum
        .map_or(MAX_OPEN_FILES, |hard| hard.min(MAX_OPEN_FILES));
    match limit.current {
        Some(soft) if soft < target => Some(target),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(soft: Option<u64>, hard: Option<u64>) -> Rlimit {
        Rlimit {
            current: soft,
            maximum: hard,
        }
    }

    #[test]
    fn the_soft_limit_rises_to_the_hard_one_within_the_cap_and_never_falls() {
        assert_eq!(raised(limit(Some(1024), Some(524_288))), Some(65_536));
        assert_eq!(raised(limit(Some(1024), Some(4096))), Some(4096));
        assert_eq!(raised(limit(Some(1024), None)), Some(65_536));
        assert_eq!(raised(limit(Some(4096), Some(4096))), None);
        assert_eq!(raised(limit(Some(100_000), Some(1_048_576))), None);
        assert_eq!(raised(limit(None, None)), None);
    }

    /// The real call on this process: a soft limit one below the target comes back to it.
    /// (One descriptor fewer for a moment cannot starve the other tests in this process.)
    #[test]
    fn raising_sets_the_process_soft_limit() {
        let before = getrlimit(Resource::Nofile);
        let target = before
            .maximum
            .map_or(MAX_OPEN_FILES, |hard| hard.min(MAX_OPEN_FILES));
        if before.current.is_none_or(|soft| soft >= target) {
            let lowered = limit(Some(target - 1), before.maximum);
            setrlimit(Resource::Nofile, lowered).expect("lowering the soft limit is allowed");
            assert_eq!(getrlimit(Resource::Nofile), lowered);
        }
        raise_open_file_limit();
        assert_eq!(getrlimit(Resource::Nofile).current, Some(target));
        setrlimit(Resource::Nofile, before).expect("the soft limit goes back");
    }
}
