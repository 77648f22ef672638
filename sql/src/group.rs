//! Group commit: the owner runs the work that waited together as one
//! transaction, so one sync of the WAL (and one entry of the change log)
//! covers every write in it. Each piece keeps its own atomicity: a failing
//! statement is rolled back alone (SQLite's statement journal), a batch or
//! a script is a savepoint of its own (`Guarded::atomically`).
//!
//! SQLite rolls the whole transaction back for a few failures (an
//! interrupted write, a statement past its time limit, does; so may a full
//! disk): the work that ran before the culprit lost what it did, and was
//! not answered yet, so it runs again without the culprit.

use std::time::{Duration, Instant};

use crate::error::SqlError;
use crate::guard::Guarded;
use crate::run::{Counts, Done, Work};

/// What one piece of work did.
pub struct Ran {
    pub result: Result<Done, SqlError>,
    pub counts: Counts,
    /// How long it ran.
    pub time: Duration,
}

impl Guarded {
    /// Runs each of `works` in order, as one transaction when there are
    /// several.
    pub fn run_group(&mut self, works: &[&Work]) -> Vec<Ran> {
        if works.len() == 1 || !self.conn.is_autocommit() {
            return works.iter().map(|w| self.run_timed(w)).collect();
        }
        let mut ran: Vec<Option<Ran>> = works.iter().map(|_| None).collect();
        let mut pending: Vec<usize> = (0..works.len()).collect();
        while !pending.is_empty() {
            if self.host_statement("BEGIN IMMEDIATE").is_err() {
                for &i in &pending {
                    ran[i] = Some(self.run_timed(works[i]));
                }
                break;
            }
            let mut lost = None;
            for (at, &i) in pending.iter().enumerate() {
                let mut one = self.run_timed(works[i]);
                if self.conn.is_autocommit() {
                    // The transaction went with this piece's failure.
                    if one.result.is_ok() {
                        one.result = Err(SqlError::Internal("rolled back by SQLite".into()));
                    }
                    ran[i] = Some(one);
                    lost = Some(at);
                    break;
                }
                ran[i] = Some(one);
            }
            match lost {
                Some(at) => {
                    pending.remove(at);
                }
                None => {
                    if let Err(e) = self.host_statement("COMMIT") {
                        let failed = self.error(e);
                        if !self.conn.is_autocommit() {
                            let _ = self.host_statement("ROLLBACK");
                        }
                        for &i in &pending {
                            if let Some(one) = &mut ran[i] {
                                one.result = Err(failed.clone());
                            }
                        }
                    }
                    break;
                }
            }
        }
        ran.into_iter()
            .map(|r| r.expect("every piece ran"))
            .collect()
    }

    fn run_timed(&mut self, work: &Work) -> Ran {
        let started = Instant::now();
        let mut counts = Counts::default();
        let result = self.run(work, &mut counts);
        Ran {
            result,
            counts,
            time: started.elapsed(),
        }
    }
}
