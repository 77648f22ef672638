//! A plugin's version history: every version it ran, each once, and which
//! one is active, so that a rollback can go back, an operator can activate
//! any kept version (forward again too), and a restart can resume an
//! upload. The history is kept by the `VersionStore`; this is the logic
//! over it.

use crate::storage::{VersionHistory, VersionRecord};

/// How many versions of a plugin are remembered.
pub const MAX_HISTORY: usize = 50;

/// The shortest hash prefix `find` takes: short enough to type, long
/// enough not to match by accident.
pub const MIN_PREFIX: usize = 4;

/// Records an installed version (an upload, a changed file): it becomes
/// the newest and the active one, and an earlier entry of it goes. The
/// active version installed again (its file read at a start, say) stays
/// where it is: after a rollback, the newer versions stay ahead of it.
/// The oldest are forgotten past `MAX_HISTORY`.
pub fn record(history: &mut VersionHistory, installed: VersionRecord) {
    if history
        .active()
        .is_some_and(|v| v.sha256 == installed.sha256)
    {
        history.active = Some(installed.sha256);
        return;
    }
    history.versions.retain(|v| v.sha256 != installed.sha256);
    history.active = Some(installed.sha256.clone());
    history.versions.push(installed);
    if history.versions.len() > MAX_HISTORY {
        history.versions.remove(0);
    }
}

/// Marks a kept version active (a rollback, an activation), keeping the
/// order and every version.
pub fn mark_active(history: &mut VersionHistory, sha256: &str) {
    history.active = Some(sha256.to_owned());
}

/// At start, the version to resume instead of the component file: the
/// active one, if an upload or rollback happened after the file was last
/// read and the file has not changed since.
pub fn to_resume<'a>(history: &'a VersionHistory, file_sha256: &str) -> Option<&'a VersionRecord> {
    let active = history.active()?;
    (history.file_sha256.as_deref() == Some(file_sha256) && active.sha256 != file_sha256)
        .then_some(active)
}

/// The version before the active one, for a rollback.
pub fn previous(history: &VersionHistory) -> Option<&VersionRecord> {
    let position = history.active_position()?;
    history.versions.get(position.checked_sub(1)?)
}

/// Why no kept version answers to a hash prefix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FindError {
    #[error("give at least {MIN_PREFIX} hex digits of the version's hash")]
    TooShort,
    #[error("no kept version starts with '{0}' (`spike plugins status NAME` lists them)")]
    None(String),
    #[error("'{0}' names more than one kept version: give more of its hash")]
    Ambiguous(String),
}

/// The kept version whose hash starts with `prefix`.
pub fn find<'a>(history: &'a VersionHistory, prefix: &str) -> Result<&'a VersionRecord, FindError> {
    let prefix = prefix.trim().to_ascii_lowercase();
    if prefix.len() < MIN_PREFIX {
        return Err(FindError::TooShort);
    }
    let mut matching = history
        .versions
        .iter()
        .filter(|v| v.sha256.starts_with(&prefix));
    let found = matching
        .next()
        .ok_or_else(|| FindError::None(prefix.clone()))?;
    match matching.any(|v| v.sha256 != found.sha256) {
        true => Err(FindError::Ambiguous(prefix)),
        false => Ok(found),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::VersionSource;

    fn history(shas: &[&str], file: Option<&str>) -> VersionHistory {
        VersionHistory {
            versions: shas
                .iter()
                .map(|s| VersionRecord {
                    sha256: s.to_string(),
                    source: VersionSource::Upload,
                    activated_at_ms: 0,
                })
                .collect(),
            file_sha256: file.map(str::to_string),
            active: None,
        }
    }

    fn shas(h: &VersionHistory) -> Vec<&str> {
        h.versions.iter().map(|v| v.sha256.as_str()).collect()
    }

    #[test]
    fn an_upload_is_resumed_while_the_file_is_unchanged() {
        // The file (f) was read, then an upload (u) activated.
        let mut h = history(&["f", "u"], Some("f"));
        assert_eq!(to_resume(&h, "f").map(|v| v.sha256.as_str()), Some("u"));
        // The file changed since: it wins.
        assert_eq!(to_resume(&h, "g"), None);
        // Rolled back to the file's version: nothing to resume.
        mark_active(&mut h, "f");
        assert_eq!(to_resume(&h, "f"), None);
    }

    #[test]
    fn records_once_and_forgets_the_oldest() {
        let mut h = history(&["a"], None);
        let installed = |s: &str| VersionRecord {
            sha256: s.into(),
            source: VersionSource::File,
            activated_at_ms: 1,
        };
        record(&mut h, installed("a"));
        assert_eq!(shas(&h), ["a"], "the active version again: no new entry");
        record(&mut h, installed("b"));
        record(&mut h, installed("a"));
        assert_eq!(shas(&h), ["b", "a"], "installed again: the newest");
        for i in 0..MAX_HISTORY + 5 {
            record(&mut h, installed(&format!("v{i}")));
        }
        assert_eq!(h.versions.len(), MAX_HISTORY);
        assert_eq!(h.versions[0].sha256, "v5");
        assert_eq!(h.active().unwrap().sha256, format!("v{}", MAX_HISTORY + 4));
    }

    #[test]
    fn a_rollback_keeps_the_newer_version_to_go_forward_to() {
        let mut h = history(&["a", "b", "c"], None);
        assert_eq!(h.active().unwrap().sha256, "c", "no mark: the last");
        let back = previous(&h).unwrap().sha256.clone();
        assert_eq!(back, "b");
        mark_active(&mut h, &back);
        assert_eq!(previous(&h).unwrap().sha256, "a", "twice goes further back");
        assert_eq!(shas(&h), ["a", "b", "c"], "nothing forgotten");
        // A start reads the file, whose version is the active one: the
        // order stays, and forward is still forward.
        let file = VersionRecord {
            sha256: "b".into(),
            source: VersionSource::File,
            activated_at_ms: 2,
        };
        record(&mut h, file);
        assert_eq!(shas(&h), ["a", "b", "c"]);
        mark_active(&mut h, "a");
        assert!(previous(&h).is_none());
        mark_active(&mut h, "c");
        assert_eq!(h.active().unwrap().sha256, "c", "forward again");
    }

    #[test]
    fn a_version_is_found_by_a_unique_prefix() {
        let h = history(&["abcd01", "abcd02", "ffff00"], None);
        assert_eq!(find(&h, "ffff").unwrap().sha256, "ffff00");
        assert_eq!(find(&h, "ABCD01").unwrap().sha256, "abcd01");
        assert_eq!(find(&h, "abcd"), Err(FindError::Ambiguous("abcd".into())));
        assert_eq!(find(&h, "abc"), Err(FindError::TooShort));
        assert_eq!(find(&h, "0000"), Err(FindError::None("0000".into())));
    }
}
