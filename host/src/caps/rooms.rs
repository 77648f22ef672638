//! The `spike:host/rooms` capability: what a room handler may do in the
//! room whose event it is handling. It needs no grant (a plugin acts only
//! in its own rooms, during their events).
//!
//! The room's owner is waiting on the handler while it runs, so frames
//! and appends are not applied here: they are recorded as `Action`s, which
//! the owner applies when the call returns (`rooms`). Members are
//! the owner's list at the event; room storage goes to the room log's
//! state at once (durable when `set` returns).

use std::sync::{Arc, Mutex};

use super::{CapError, View, check_key};
use crate::bindings::spike::host::rooms as wit;
use crate::storage::RoomLog;
use crate::util::unpoisoned;

/// Longest room storage key.
pub const MAX_KEY_BYTES: usize = 256;
/// Largest room storage value.
pub const MAX_VALUE_BYTES: usize = 64 << 10;
/// Most frames and appends one event may make.
pub const MAX_ACTIONS: usize = 1024;

/// A member as a handler sees it.
#[derive(Debug, Clone)]
pub struct MemberEntry {
    pub connection: Arc<str>,
    pub user: Option<Arc<str>>,
}

/// What a handler asked the room to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Send {
        to: String,
        message: String,
    },
    Broadcast {
        message: String,
        except: Vec<String>,
    },
    Append {
        data: String,
    },
}

/// The room of the event a handler is running for.
pub struct RoomEvent {
    /// The room's name in its log.
    pub log_name: Arc<str>,
    pub log: Arc<dyn RoomLog>,
    pub members: Arc<[MemberEntry]>,
    /// The number an `append` now would get.
    pub next_seq: u64,
    /// The largest frame or event the room carries.
    pub max_message_bytes: usize,
    /// Whether `append` may add events (not to a `yjs` room, whose log
    /// holds document updates only).
    pub appends: bool,
    pub actions: Mutex<Vec<Action>>,
}

impl RoomEvent {
    /// What the handler asked for, in order.
    pub fn take_actions(&self) -> Vec<Action> {
        std::mem::take(&mut *unpoisoned(self.actions.lock()))
    }

    fn record(&self, action: Action) -> Result<usize, CapError> {
        let mut actions = unpoisoned(self.actions.lock());
        if actions.len() >= MAX_ACTIONS {
            return Err(CapError::TooLarge(format!(
                "an event may send or append at most {MAX_ACTIONS} times"
            )));
        }
        actions.push(action);
        Ok(actions
            .iter()
            .filter(|a| matches!(a, Action::Append { .. }))
            .count())
    }

    fn check_size(&self, what: &str, text: &str) -> Result<(), CapError> {
        if text.len() > self.max_message_bytes {
            return Err(CapError::TooLarge(format!(
                "{what} is {} bytes; the room carries at most {}",
                text.len(),
                self.max_message_bytes
            )));
        }
        Ok(())
    }
}

/// The room of the call, if it is a room event.
pub type RoomsCtx = Option<RoomEvent>;

/// The view that implements the rooms `Host` trait.
pub type RoomsView<'a> = View<'a, RoomsCtx>;

impl RoomsView<'_> {
    fn event(&self) -> Result<&RoomEvent, CapError> {
        self.ctx.as_ref().ok_or_else(|| {
            CapError::AccessDenied("rooms: this call is not handling a room event".into())
        })
    }
}

impl wit::Host for RoomsView<'_> {
    async fn members(&mut self) -> Result<Vec<wit::Member>, CapError> {
        self.counts.room("members");
        let members = (self.event()?.members.iter())
            .map(|m| wit::Member {
                connection: m.connection.to_string(),
                user: m.user.as_deref().map(str::to_string),
            })
            .collect();
        Ok(members)
    }

    async fn send(&mut self, connection: String, message: String) -> Result<(), CapError> {
        self.counts.room("send");
        let event = self.event()?;
        event.check_size("the message", &message)?;
        if !event.members.iter().any(|m| *m.connection == connection) {
            return Err(CapError::InvalidInput(format!(
                "'{connection}' is not a member of this room"
            )));
        }
        event.record(Action::Send {
            to: connection,
            message,
        })?;
        Ok(())
    }

    async fn broadcast(&mut self, message: String, except: Vec<String>) -> Result<(), CapError> {
        self.counts.room("broadcast");
        let event = self.event()?;
        event.check_size("the message", &message)?;
        event.record(Action::Broadcast { message, except })?;
        Ok(())
    }

    async fn append(&mut self, data: String) -> Result<u64, CapError> {
        self.counts.room("append");
        let event = self.event()?;
        if !event.appends {
            return Err(CapError::InvalidInput(
                "this room's protocol keeps only its own events in its log".into(),
            ));
        }
        event.check_size("the event", &data)?;
        let appended = event.record(Action::Append { data })?;
        Ok(event.next_seq + appended as u64 - 1)
    }

    async fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, CapError> {
        self.counts.room("get");
        check_key("a room storage key", &key, MAX_KEY_BYTES)?;
        let event = self.event()?;
        let value = event.log.state_get(&event.log_name, &key).await?;
        Ok(value.map(|v| v.to_vec()))
    }

    async fn set(&mut self, key: String, value: Vec<u8>) -> Result<(), CapError> {
        self.counts.room("set");
        check_key("a room storage key", &key, MAX_KEY_BYTES)?;
        if value.len() > MAX_VALUE_BYTES {
            return Err(CapError::TooLarge(format!(
                "a room storage value is at most {MAX_VALUE_BYTES} bytes"
            )));
        }
        let event = self.event()?;
        (event.log)
            .state_set(&event.log_name, &key, Some(value.into()))
            .await?;
        Ok(())
    }

    async fn delete(&mut self, key: String) -> Result<(), CapError> {
        self.counts.room("delete");
        check_key("a room storage key", &key, MAX_KEY_BYTES)?;
        let event = self.event()?;
        event.log.state_set(&event.log_name, &key, None).await?;
        Ok(())
    }
}

struct HasRooms;

impl wasmtime::component::HasData for HasRooms {
    type Data<'a> = RoomsView<'a>;
}

/// Adds `spike:host/rooms` to the linker.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut wasmtime::component::Linker<T>,
    view: fn(&mut T) -> RoomsView<'_>,
) -> wasmtime::Result<()> {
    wit::add_to_linker::<T, HasRooms>(linker, view)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bindings::spike::host::rooms::Host;
    use crate::caps::{Counts, Grants};
    use crate::metrics::Metrics;
    use crate::storage::{Backends, StorageSettings};

    fn event(log: Arc<dyn RoomLog>) -> RoomEvent {
        RoomEvent {
            log_name: "p/room/a".into(),
            log,
            members: vec![MemberEntry {
                connection: "c1".into(),
                user: Some("u".into()),
            }]
            .into(),
            next_seq: 8,
            max_message_bytes: 16,
            appends: true,
            actions: Mutex::default(),
        }
    }

    #[tokio::test]
    async fn records_actions_and_keeps_storage() {
        let dir = tempfile::tempdir().unwrap();
        let settings = StorageSettings {
            kv_sweep_interval: std::time::Duration::from_secs(60),
        };
        let backends = Backends::open_redb(dir.path(), &settings).unwrap();
        let metrics = Metrics::new();
        let plugin: Arc<str> = "p".into();
        let grants = Grants::default();
        let mut table = wasmtime::component::ResourceTable::new();
        let ctx: RoomsCtx = Some(event(backends.rooms.clone()));
        let mut view = RoomsView {
            ctx: &ctx,
            grants: &grants,
            counts: Counts {
                metrics: &metrics,
                plugin: &plugin,
            },
            table: &mut table,
        };
        assert_eq!(view.members().await.unwrap()[0].user.as_deref(), Some("u"));
        view.send("c1".into(), "hi".into()).await.unwrap();
        assert!(matches!(
            view.send("c9".into(), "hi".into()).await,
            Err(CapError::InvalidInput(_))
        ));
        assert!(matches!(
            view.broadcast("x".repeat(17), vec![]).await,
            Err(CapError::TooLarge(_))
        ));
        assert_eq!(view.append("one".into()).await.unwrap(), 8);
        assert_eq!(view.append("two".into()).await.unwrap(), 9);
        view.set("k".into(), b"v".to_vec()).await.unwrap();
        assert_eq!(
            view.get("k".into()).await.unwrap().as_deref(),
            Some(&b"v"[..])
        );
        view.delete("k".into()).await.unwrap();
        assert_eq!(view.get("k".into()).await.unwrap(), None);
        assert!(matches!(
            view.get(String::new()).await,
            Err(CapError::InvalidInput(_))
        ));
        let actions = ctx.as_ref().unwrap().take_actions();
        assert_eq!(actions.len(), 3);
        assert_eq!(actions[2], Action::Append { data: "two".into() });

        let outside: RoomsCtx = None;
        let mut view = RoomsView {
            ctx: &outside,
            grants: &grants,
            counts: Counts {
                metrics: &metrics,
                plugin: &plugin,
            },
            table: &mut table,
        };
        assert!(matches!(
            view.members().await,
            Err(CapError::AccessDenied(_))
        ));
    }
}
