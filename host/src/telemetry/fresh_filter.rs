//! A per-layer filter asked again for every span and event.
//!
//! tracing-subscriber hands a per-layer filter's decision from
//! `Subscriber::enabled` to `on_event` through a thread-local, and assumes
//! the two run back to back. They do not when a callsite's interest is
//! cached as `always` (the macro skips `enabled`) and something asked
//! `enabled` before without an event after it (`tracing::enabled!`, as the
//! access log's check does on every request): the event then reads that
//! stale "disabled" and is silently dropped (tracing issues 2519, 2704).
//! The shutdown's "connections still open" warning was lost that way. A
//! filter whose interest is never `always` has `enabled` run before each
//! event, so the thread-local is always this event's.

use tracing::subscriber::Interest;
use tracing::{Metadata, span};
use tracing_subscriber::layer::{Context, Filter};

/// `F`, with `always` interest lowered to `sometimes`.
pub struct Fresh<F>(pub F);

impl<S, F: Filter<S>> Filter<S> for Fresh<F> {
    fn enabled(&self, meta: &Metadata<'_>, cx: &Context<'_, S>) -> bool {
        self.0.enabled(meta, cx)
    }

    fn callsite_enabled(&self, meta: &'static Metadata<'static>) -> Interest {
        let interest = self.0.callsite_enabled(meta);
        if interest.is_always() {
            Interest::sometimes()
        } else {
            interest
        }
    }

    fn event_enabled(&self, event: &tracing::Event<'_>, cx: &Context<'_, S>) -> bool {
        self.0.event_enabled(event, cx)
    }

    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        self.0.max_level_hint()
    }

    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, cx: Context<'_, S>) {
        self.0.on_new_span(attrs, id, cx)
    }

    fn on_record(&self, id: &span::Id, values: &span::Record<'_>, cx: Context<'_, S>) {
        self.0.on_record(id, values, cx)
    }

    fn on_enter(&self, id: &span::Id, cx: Context<'_, S>) {
        self.0.on_enter(id, cx)
    }

    fn on_exit(&self, id: &span::Id, cx: Context<'_, S>) {
        self.0.on_exit(id, cx)
    }

    fn on_close(&self, id: span::Id, cx: Context<'_, S>) {
        self.0.on_close(id, cx)
    }
}

#[cfg(test)]
mod tests {
    use tracing::callsite::Callsite;
    use tracing_subscriber::filter::Targets;
    use tracing_subscriber::layer::Filter;

    use super::Fresh;

    type Registry = tracing_subscriber::Registry;

    // (The lost event itself shows only under a global subscriber, which a
    // unit test cannot install: `tests/e2e/restart.rs` checks the warning
    // a stopping server logs after the access log's check.)
    #[test]
    fn interest_is_never_always_and_never_stays_never() {
        let logged = tracing::callsite!(name: "logged", kind: tracing::metadata::Kind::EVENT, target: "logged", level: tracing::Level::WARN, fields: []);
        let hidden = tracing::callsite!(name: "hidden", kind: tracing::metadata::Kind::EVENT, target: "hidden", level: tracing::Level::INFO, fields: []);
        let filter = || {
            Targets::new()
                .with_target("hidden", tracing::Level::ERROR)
                .with_default(tracing::Level::INFO)
        };
        let bare = |site: &'static dyn Callsite| {
            Filter::<Registry>::callsite_enabled(&filter(), site.metadata())
        };
        let fresh = |site: &'static dyn Callsite| {
            Filter::<Registry>::callsite_enabled(&Fresh(filter()), site.metadata())
        };
        assert!(bare(logged).is_always(), "the case Fresh exists for");
        assert!(fresh(logged).is_sometimes());
        assert!(bare(hidden).is_never());
        assert!(fresh(hidden).is_never());
    }
}
