//! A database's owner: the one task that holds its connection. It takes
//! the work waiting in its inbox as one batch and runs it on a blocking
//! thread, the connection handed over and back (SQLite blocks; the async
//! workers must not). A database idle for `IDLE` closes its connection and
//! ends; the next call opens it again.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use spike_objects::{Ending, Object, mailbox};
use tokio::sync::oneshot;

use crate::SqlLimits;
use crate::error::SqlError;
use crate::guard::Guarded;
use crate::run::{Counts, Done, Work};

/// How long a database keeps its connection open with no work.
const IDLE: Duration = Duration::from_secs(30);

/// Work for the owner, and where its answer goes.
pub struct Command {
    pub work: Work,
    pub reply: oneshot::Sender<Outcome>,
}

impl mailbox::Weigh for Command {
    fn weight(&self) -> usize {
        let statement = |s: &crate::Statement| {
            s.sql.len() + s.params.iter().map(crate::Value::weight).sum::<usize>()
        };
        match &self.work {
            Work::Query(s) => statement(s),
            Work::Batch(all) => all.iter().map(statement).sum(),
            Work::Exec(script) => script.len(),
        }
    }
}

/// The owner's answer.
pub enum Outcome {
    Done(Answer),
    /// The owner was ending: the work, for a new owner.
    Closing(Work),
}

/// What the work did, and what it cost.
#[derive(Debug)]
pub struct Answer {
    pub result: Result<Done, SqlError>,
    pub counts: Counts,
    /// How long it ran (not how long it waited).
    pub time: Duration,
}

pub struct Owner {
    pub path: PathBuf,
    pub limits: SqlLimits,
    /// The open connection, between batches (`None` until the first).
    pub db: Option<Box<Guarded>>,
}

impl Object for Owner {
    type Command = Command;

    fn idle(&self) -> Duration {
        IDLE
    }

    /// A database has no users between calls: idle, it ends.
    fn in_use(&self) -> bool {
        false
    }

    async fn handle(&mut self, batch: &mut Vec<Command>) {
        let commands = std::mem::take(batch);
        let db = self.db.take();
        let (path, limits) = (self.path.clone(), self.limits.clone());
        let ran = tokio::task::spawn_blocking(move || run_all(db, &path, &limits, commands));
        // A panic in SQLite's thread drops the replies (their callers are
        // told) and the connection (the next batch opens it again).
        self.db = ran.await.ok().flatten();
    }

    fn hibernate(&mut self) {
        self.db = None;
    }

    fn moved(&self) -> bool {
        false
    }

    fn end(&mut self, _why: Ending) {}

    fn hand_back(command: Command) {
        let _ = command.reply.send(Outcome::Closing(command.work));
    }
}

/// Runs `commands` in order on the connection (opening it if needed), and
/// gives it back.
fn run_all(
    db: Option<Box<Guarded>>,
    path: &std::path::Path,
    limits: &SqlLimits,
    commands: Vec<Command>,
) -> Option<Box<Guarded>> {
    let mut db = match db {
        Some(db) => db,
        None => match Guarded::open(path, limits) {
            Ok(db) => Box::new(db),
            Err(e) => {
                tracing::error!(path = %path.display(), "a database did not open: {e}");
                let why = format!("the database did not open: {e}");
                for command in commands {
                    let answer = Answer {
                        result: Err(SqlError::Internal(why.clone())),
                        counts: Counts::default(),
                        time: Duration::ZERO,
                    };
                    let _ = command.reply.send(Outcome::Done(answer));
                }
                return None;
            }
        },
    };
    for command in commands {
        let started = Instant::now();
        let mut counts = Counts::default();
        let result = db.run(&command.work, &mut counts);
        let time = started.elapsed();
        let answer = Answer {
            result,
            counts,
            time,
        };
        let _ = command.reply.send(Outcome::Done(answer));
    }
    Some(db)
}

/// The owner of a new database `name`, for `spawn`.
pub fn new_owner(dir: &std::path::Path, name: &Arc<str>, limits: &SqlLimits) -> Owner {
    Owner {
        path: dir.join(format!("{name}.sqlite")),
        limits: limits.clone(),
        db: None,
    }
}
