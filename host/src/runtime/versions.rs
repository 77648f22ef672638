//! A plugin's version history: every version it ran, in order, so that a
//! rollback can go back and a restart can resume an upload. The history is
//! kept by the `VersionStore`; this is the logic over it.

use crate::storage::{VersionHistory, VersionRecord};

/// How many versions of a plugin are remembered for rollback.
pub const MAX_HISTORY: usize = 50;

/// Appends an activation to `history`, unless its version is already the
/// last; forgets the oldest past `MAX_HISTORY`.
pub fn record(history: &mut VersionHistory, activation: VersionRecord) {
    if history
        .versions
        .last()
        .is_some_and(|v| v.sha256 == activation.sha256)
    {
        return;
    }
    history.versions.push(activation);
    if history.versions.len() > MAX_HISTORY {
        history.versions.remove(0);
    }
}

/// At start, the version to resume instead of the component file: the last
/// one recorded, if an upload or rollback happened after the file was last
/// read and the file has not changed since.
pub fn to_resume<'a>(history: &'a VersionHistory, file_sha256: &str) -> Option<&'a VersionRecord> {
    let last = history.versions.last()?;
    (history.file_sha256.as_deref() == Some(file_sha256) && last.sha256 != file_sha256)
        .then_some(last)
}

/// The version before the active one, for a rollback.
pub fn previous(history: &VersionHistory) -> Option<&VersionRecord> {
    history.versions.iter().rev().nth(1)
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
        }
    }

    #[test]
    fn an_upload_is_resumed_while_the_file_is_unchanged() {
        // The file (f) was read, then an upload (u) activated.
        let h = history(&["f", "u"], Some("f"));
        assert_eq!(to_resume(&h, "f").map(|v| v.sha256.as_str()), Some("u"));
        // The file changed since: it wins.
        assert_eq!(to_resume(&h, "g"), None);
        // The file's own version is the last: nothing to resume.
        assert_eq!(to_resume(&history(&["u", "f"], Some("f")), "f"), None);
    }

    #[test]
    fn records_once_and_forgets_the_oldest() {
        let mut h = history(&["a"], None);
        let activation = |s: &str| VersionRecord {
            sha256: s.into(),
            source: VersionSource::File,
            activated_at_ms: 1,
        };
        record(&mut h, activation("a"));
        assert_eq!(
            h.versions.len(),
            1,
            "the active version again: no new entry"
        );
        for i in 0..MAX_HISTORY + 5 {
            record(&mut h, activation(&format!("v{i}")));
        }
        assert_eq!(h.versions.len(), MAX_HISTORY);
        assert_eq!(h.versions[0].sha256, "v5");
    }

    #[test]
    fn rollback_goes_to_the_one_before() {
        assert_eq!(
            previous(&history(&["a", "b", "c"], None)).unwrap().sha256,
            "b"
        );
        assert!(previous(&history(&["a"], None)).is_none());
    }
}
