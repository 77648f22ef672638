//! A point-in-time restore, as the owner runs it: the database rebuilt as
//! it was at an entry (`ChangeLog::rebuild`), kept as a snapshot, written
//! to the log as an entry of its own (`Restored`, so that restoring to the
//! entry before it undoes it), and only then made the file the owner
//! serves. A crash between the entry and the swap leaves a log whose last
//! entry is a restore, and opening rebuilds from the log then.

use std::time::Instant;

use super::{Answer, Owner, blocking, sibling, storage};
use crate::error::SqlError;
use crate::guard::Guarded;
use crate::log::{Entry, LogError};
use crate::run::{Counts, Done, RestoreTo};

impl Owner {
    /// Makes the database what it was at `to`, as a new entry.
    pub(super) async fn restore(&mut self, to: RestoreTo) -> Answer {
        let started = Instant::now();
        let to = match to {
            RestoreTo::Entry(seq) => Ok(seq),
            RestoreTo::Time(ms) => {
                (self.log.seq_at(ms).await).map_err(|e| SqlError::Statement(e.to_string()))
            }
        };
        let done = match to {
            Ok(to) => self
                .restore_to(to)
                .await
                .map(|()| Done::Restored { from: to }),
            Err(e) => Err(e),
        };
        Answer {
            result: done,
            counts: Counts::default(),
            time: started.elapsed(),
            bookmark: self.head,
            bytes: crate::database_bytes(&self.path),
        }
    }

    async fn restore_to(&mut self, to: u64) -> Result<(), SqlError> {
        if to > self.head {
            return Err(SqlError::Statement(format!(
                "bookmark {to} is past the database's last change ({})",
                self.head
            )));
        }
        let rebuilt = sibling(&self.path, ".restore");
        let internal = |e: LogError| SqlError::Internal(e.to_string());
        (self.log.rebuild(to, &rebuilt).await).map_err(|e| SqlError::Statement(e.to_string()))?;
        // Before any entry, the database was empty: an empty file.
        let empty = rebuilt.clone();
        blocking(move || {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&empty);
            file.map(drop).map_err(storage)
        })
        .await
        .map_err(internal)?;
        let seq = self.head + 1;
        let logged = async {
            let key = self.log.upload_snapshot(seq, &rebuilt).await?;
            let entry = Entry::Restored {
                at_ms: spike_storage::util::now_ms(),
                snapshot: key.clone(),
            };
            self.log.append(seq, &entry).await?;
            self.log.record_snapshot(seq, key).await
        };
        if let Err(e) = logged.await {
            let _ = std::fs::remove_file(&rebuilt);
            if let LogError::Moved = e {
                self.lost();
            }
            return Err(internal(e));
        }
        self.head = seq;
        self.shipped = None;
        self.since_snapshot = (0, 0);
        // In the log: now the file the owner serves.
        self.db = None;
        let (from, into) = (rebuilt, self.path.clone());
        blocking(move || {
            crate::log::remove_database(&into)?;
            std::fs::rename(&from, &into).map_err(storage)
        })
        .await
        .map_err(internal)?;
        let (path, limits) = (self.path.clone(), self.limits.clone());
        let db = blocking(move || Guarded::open(&path, &limits).map_err(storage));
        self.db = Some(Box::new(db.await.map_err(internal)?));
        Ok(())
    }
}
