//! Room protocols: what a room's messages mean, one file (or folder) each.
//!
//! The owner (`rooms::owner`) does what every room does: its members and
//! their queues, the batch of events appended to the log before anyone
//! sees them, the rate limit, the room handler's calls, hibernation,
//! compaction, leaving. A protocol decides the rest through `Protocol`:
//! what it keeps of a room (loaded from the log), what a joiner gets first,
//! what a member's message makes of events, what a stored event sends to
//! whom, what a snapshot is.
//!
//! Adding a protocol: a file here with a type that implements `Protocol`,
//! and its line in the `protocols!` table below (which names it for
//! manifests and picks its owner when a room opens).

pub mod livestore;
mod relay;
pub mod text;
pub mod yjs;

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;

use super::frames::Frame;
use super::owner::{Origin, Pending, Room};
use super::{CatchUp, JoinRequest, RoomHub, RoomLimits};
use crate::objects::{Lease, mailbox};
use crate::storage::{RoomLogHead, StorageError};

/// What one room protocol does. The owner holds one value of it per open
/// room (its state beyond the log: a text, a Yjs document), dropped while
/// the room hibernates and loaded again from the log.
pub trait Protocol: Sized + Send + Sync + 'static {
    /// Its name in a manifest (`protocol = "…"`) and in the welcome.
    const NAME: &'static str;
    /// Whether its frames are binary (else text).
    const BINARY: bool = false;
    /// Whether its clients read the host's own JSON frames (welcome,
    /// presence, errors, a room handler's frames); those that do not are
    /// closed where a JSON client would get an error frame.
    const HOST_FRAMES: bool = false;
    /// Whether a snapshot may stand for the events before it (else the log
    /// keeps every event, and `compact_every` is refused).
    const COMPACTS: bool = true;
    /// What it keeps of each member (`()` for most).
    type Member: Send + Sync + 'static;
    /// What a stored event carries to `publish` beyond its frame.
    type Push: Send + Sync + 'static;

    /// Where clients connect, as the admin API shows it.
    fn client_path(prefix: &str) -> String {
        format!("{prefix}/{{id}}")
    }

    /// Its defaults where they are not the host's (before a manifest's own).
    fn default_limits(_limits: &mut RoomLimits) {}

    /// What it keeps of a member joining with `request`.
    fn member(request: &JoinRequest) -> Self::Member;

    /// The room's state, from its log as `head` says it stands (the log is
    /// fenced: no other node appends to it now).
    fn load(
        room: &Room<Self>,
        head: &RoomLogHead,
    ) -> impl Future<Output = Result<Self, StorageError>> + Send;

    /// What a joiner is sent first, and what it is owed from the log after
    /// `since` (its `?since=`).
    fn welcome(
        &mut self,
        room: &Room<Self>,
        joiner: &str,
        since: Option<u64>,
    ) -> (Vec<Frame>, Option<CatchUp>);

    /// A member's message (the rate limit passed, the state loaded): its
    /// events into `pending`, or what to tell the member.
    fn take(
        &mut self,
        room: &mut Room<Self>,
        from: &Origin,
        message: &Frame,
        pending: &mut Vec<Pending<Self::Push>>,
    ) -> impl Future<Output = ()> + Send;

    /// Sends events that are now stored to the members that get them:
    /// each event's frame to every member, unless the protocol says
    /// otherwise.
    fn publish(&mut self, room: &mut Room<Self>, stored: Vec<Pending<Self::Push>>) {
        for event in stored {
            if let Some(frame) = event.frame {
                room.broadcast(&frame, &[]);
            }
        }
    }

    /// A member has left (numbered as the owner numbers them).
    fn leave(&mut self, _room: &mut Room<Self>, _member: u64) {}

    /// The room's state as a snapshot at the head, for compaction; `None`
    /// if it has none (`COMPACTS` false), an error if it cannot be made now
    /// (the room is compacted later).
    fn snapshot(&self) -> Option<Result<Bytes, String>>;
}

/// Declares the protocols: `RoomProtocol` (a manifest's choice of one),
/// its names, and the owner each opens.
macro_rules! protocols {
    ($($(#[$doc:meta])* $variant:ident => $protocol:ty,)+) => {
        /// What the host does with a room's messages.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum RoomProtocol {
            $($(#[$doc])* $variant,)+
        }

        impl RoomProtocol {
            pub const ALL: &[RoomProtocol] = &[$(RoomProtocol::$variant,)+];

            pub fn name(self) -> &'static str {
                match self {
                    $(Self::$variant => <$protocol as Protocol>::NAME,)+
                }
            }

            pub fn binary(self) -> bool {
                match self {
                    $(Self::$variant => <$protocol as Protocol>::BINARY,)+
                }
            }

            pub fn host_frames(self) -> bool {
                match self {
                    $(Self::$variant => <$protocol as Protocol>::HOST_FRAMES,)+
                }
            }

            pub fn compacts(self) -> bool {
                match self {
                    $(Self::$variant => <$protocol as Protocol>::COMPACTS,)+
                }
            }

            pub fn client_path(self, prefix: &str) -> String {
                match self {
                    $(Self::$variant => <$protocol as Protocol>::client_path(prefix),)+
                }
            }

            /// The host's room limits with this protocol's defaults.
            pub fn default_limits(self) -> RoomLimits {
                let mut limits = RoomLimits::default();
                match self {
                    $(Self::$variant => <$protocol as Protocol>::default_limits(&mut limits),)+
                }
                limits
            }

            /// Starts the owner of a room of this protocol.
            pub(super) fn spawn_owner(
                self,
                hub: Arc<RoomHub>,
                name: Arc<str>,
                room: &super::RoomAddress<'_>,
                inbox: mailbox::Receiver<super::owner::Command>,
                inbox_tx: &mailbox::Sender<super::owner::Command>,
                lease: Option<Lease>,
            ) {
                match self {
                    $(Self::$variant => super::owner::spawn::<$protocol>(
                        hub, name, room, inbox, inbox_tx, lease,
                    ),)+
                }
            }
        }
    };
}

protocols! {
    /// Every message is stored and broadcast as an event.
    Relay => relay::Relay,
    /// A shared text document edited with insert / delete / replace
    /// operations, transformed against concurrent ones.
    Text => text::Text,
    /// A Yjs document, spoken as y-websocket speaks it (binary frames).
    Yjs => yjs::Yjs,
    /// A LiveStore event log, spoken as `@livestore/sync-cf` speaks it
    /// (0.4 and 0.3); the room id is the client's `storeId`.
    LiveStore => livestore::LiveStore,
}

impl RoomProtocol {
    /// The protocol a manifest names.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|p| p.name() == name)
    }
}
