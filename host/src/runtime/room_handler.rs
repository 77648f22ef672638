//! Rooms' view of the plugins (`rooms::RoomPlugins`): a plugin's room
//! routes, and calls into its `spike:host/room-handler` export: each event
//! in a fresh instance of the plugin's active version, under its limits
//! (its concurrency, memory and CPU, and `timeout_ms` for the call), with
//! the member's caller as `identity` and the room as `rooms`. A version
//! swap takes effect at the next event.

use std::sync::Arc;

use futures::future::BoxFuture;

use crate::caps::identity::{Caller, IdentityCtx};
use crate::caps::rooms::{Action, RoomEvent};
use crate::metrics::Metrics;
use crate::rooms::handler::{Answer, Call, HandlerFailed, RoomHandler, RoomPlugins};
use crate::rooms::{RoomLimits, RoomProtocol};
use crate::runtime::dispatch::{Busy, DispatchError, classify, guest_span, instantiate};
use crate::runtime::state::RequestState;
use crate::runtime::{LoadedPlugin, PluginRegistry, PluginSlot};
use futures::TryFutureExt;

/// The registry, as rooms see it.
pub struct PluginRooms(pub Arc<PluginRegistry>);

impl RoomPlugins for PluginRooms {
    fn handler(&self, plugin: &str) -> Option<Box<dyn RoomHandler>> {
        let slot = self.0.slot(plugin)?;
        let active = slot.active()?;
        active.exports.room_handler.as_ref()?;
        Some(Box::new(Handler {
            registry: self.0.clone(),
            slot,
            plugin: active,
        }))
    }

    fn room_route(&self, plugin: &str, prefix: &str) -> Result<(RoomProtocol, RoomLimits), String> {
        let slot =
            (self.0.slot(plugin)).ok_or_else(|| format!("no plugin {plugin} on this node"))?;
        let route = (slot.manifest.rooms.iter()).find(|r| r.prefix == prefix);
        let route = route
            .ok_or_else(|| format!("plugin {plugin} has no room route {prefix} on this node"))?;
        Ok((route.protocol, route.limits.clone()))
    }
}

/// A plugin's room handler, as its active version is now.
struct Handler {
    registry: Arc<PluginRegistry>,
    slot: Arc<PluginSlot>,
    plugin: Arc<LoadedPlugin>,
}

impl RoomHandler for Handler {
    fn call(
        &self,
        caller: Option<Arc<Caller>>,
        event: RoomEvent,
        call: Call,
    ) -> BoxFuture<'_, (Result<Answer, HandlerFailed>, Vec<Action>)> {
        Box::pin(async move {
            let (answer, actions) = self.run_call(caller, event, call).await;
            (answer.map_err(|e| HandlerFailed(e.to_string())), actions)
        })
    }
}

impl Handler {
    /// Runs `call` for `event`'s room as `caller`; the answer, and what
    /// the handler asked the room to do (nothing if the call failed).
    async fn run_call(
        &self,
        caller: Option<Arc<Caller>>,
        event: RoomEvent,
        call: Call,
    ) -> (Result<Answer, DispatchError>, Vec<Action>) {
        let slot = &self.slot;
        let outcome = match slot.try_admit() {
            None => Err(DispatchError::Busy(Busy::Plugin(slot.max_concurrent))),
            Some(_permit) => {
                let engine = self.registry.engine();
                let mut store = RequestState::new_store(
                    engine,
                    &slot.context,
                    IdentityCtx::on_behalf_of(caller),
                );
                store.data_mut().set_room_event(event);
                let outcome = self.run(&mut store, call).await;
                let actions = (store.data().room_event())
                    .map(RoomEvent::take_actions)
                    .unwrap_or_default();
                outcome.map(|answer| (answer, actions))
            }
        };
        let kind = match &outcome {
            Ok(_) => "ok",
            Err(e) => {
                e.count(&slot.context.metrics);
                e.kind()
            }
        };
        let metrics = &slot.context.metrics.host;
        Metrics::count(&metrics.rooms.handler_calls, slot.context.name(), kind, 1);
        match outcome {
            Ok((answer, actions)) => (Ok(answer), actions),
            Err(e) => (Err(e), Vec::new()),
        }
    }

    async fn run(
        &self,
        store: &mut wasmtime::Store<RequestState>,
        call: Call,
    ) -> Result<Answer, DispatchError> {
        let indices = (self.plugin.exports.room_handler.as_ref()).expect("`of` checked the export");
        let limits = &self.slot.context.limits;
        let metrics = &self.slot.context.metrics;
        let export = match &call {
            Call::Connect(_) => "on-connect",
            Call::Message(_) => "on-message",
            Call::Close { .. } => "on-close",
        };
        let span = guest_span(&self.slot.manifest.name, &self.plugin, export, true);
        let run = async {
            let instance = instantiate(&self.plugin.pre, &mut *store, metrics).await?;
            let guest = indices.load(&mut *store, &instance)?;
            store.data_mut().begin_call();
            match call {
                Call::Connect(c) => guest
                    .call_on_connect(&mut *store, &c)
                    .await
                    .map(Answer::Connect),
                Call::Message(m) => guest
                    .call_on_message(&mut *store, &m)
                    .await
                    .map(Answer::Message),
                Call::Close { room, connection } => guest
                    .call_on_close(&mut *store, &room, &connection)
                    .await
                    .map(|()| Answer::Close),
            }
        };
        let run = crate::telemetry::traced(span, run.map_err(|e| classify(&e)));
        match tokio::time::timeout(limits.timeout, run).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(DispatchError::Timeout {
                timeout_ms: limits.timeout.as_millis(),
            }),
        }
    }
}
