//! Which requests are traced: `OTEL_TRACES_SAMPLER` and its argument,
//! decided before any span of the request exists.
//!
//! The SDK's samplers decide when a span starts; by then the host would
//! have made the request's `tracing` span and every child's, sampled or
//! not. Deciding first, here, lets an unsampled request make no span at
//! all (`telemetry::span!` makes `Span::none()` outside a traced request),
//! so 1% sampling costs about 1% of the spans' price. The SDK's sampler is
//! then always on: what reaches it was chosen already.

use opentelemetry::trace::{SpanContext, TraceId};

/// The sampler of `OTEL_TRACES_SAMPLER`, in the specification's names.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sampler {
    AlwaysOn,
    AlwaysOff,
    /// A fraction of traces, by their trace id, so that every service
    /// using the same ratio keeps the same traces.
    TraceIdRatio(f64),
    /// A request with a parent follows the parent's choice; one without
    /// uses the inner sampler.
    ParentBased(Root),
}

/// What `ParentBased` does for a request with no parent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Root {
    AlwaysOn,
    AlwaysOff,
    TraceIdRatio(f64),
}

impl Sampler {
    /// The sampler `name` (`OTEL_TRACES_SAMPLER`) with its argument
    /// (`OTEL_TRACES_SAMPLER_ARG`, the ratio, 1.0 when absent). The
    /// specification would fall back to a default on a bad value; spike
    /// refuses it at start instead, naming what is wrong.
    pub fn parse(name: &str, arg: Option<&str>) -> Result<Self, String> {
        let ratio = || -> Result<f64, String> {
            let Some(arg) = arg else { return Ok(1.0) };
            match arg.trim().parse::<f64>() {
                Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
                _ => Err(format!(
                    "the traces sampler argument '{arg}' is not a ratio from 0 to 1"
                )),
            }
        };
        Ok(match name.trim() {
            "always_on" => Sampler::AlwaysOn,
            "always_off" => Sampler::AlwaysOff,
            "traceidratio" => Sampler::TraceIdRatio(ratio()?),
            "parentbased_always_on" => Sampler::ParentBased(Root::AlwaysOn),
            "parentbased_always_off" => Sampler::ParentBased(Root::AlwaysOff),
            "parentbased_traceidratio" => Sampler::ParentBased(Root::TraceIdRatio(ratio()?)),
            other => {
                return Err(format!(
                    "unknown traces sampler '{other}': use always_on, always_off, \
                     traceidratio, parentbased_always_on, parentbased_always_off or \
                     parentbased_traceidratio"
                ));
            }
        })
    }

    /// Whether a request is traced. `parent` is the caller's span, if the
    /// request brought one that is honoured; `trace_id` is the id the
    /// request's trace will have (the parent's, or a new one).
    pub fn samples(&self, parent: Option<&SpanContext>, trace_id: TraceId) -> bool {
        match (self, parent) {
            (Sampler::AlwaysOn, _) => true,
            (Sampler::AlwaysOff, _) => false,
            (Sampler::TraceIdRatio(r), _) => by_ratio(*r, trace_id),
            (Sampler::ParentBased(_), Some(parent)) => parent.is_sampled(),
            (Sampler::ParentBased(root), None) => match root {
                Root::AlwaysOn => true,
                Root::AlwaysOff => false,
                Root::TraceIdRatio(r) => by_ratio(*r, trace_id),
            },
        }
    }
}

/// The specification's ratio rule: the trace id's low 63 bits against the
/// ratio of the whole range, the same choice on every host for one trace.
fn by_ratio(ratio: f64, trace_id: TraceId) -> bool {
    if ratio >= 1.0 {
        return true;
    }
    let low = u64::from_be_bytes(trace_id.to_bytes()[8..].try_into().expect("8 bytes"));
    let bound = (ratio * (1u64 << 63) as f64) as u64;
    (low >> 1) < bound
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{SpanId, TraceFlags, TraceState};

    use super::*;

    fn parent(sampled: bool) -> SpanContext {
        let flags = if sampled {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        };
        SpanContext::new(
            TraceId::from(7u128),
            SpanId::from(9u64),
            flags,
            true,
            TraceState::default(),
        )
    }

    #[test]
    fn names_and_arguments() {
        assert_eq!(Sampler::parse("always_on", None), Ok(Sampler::AlwaysOn));
        assert_eq!(
            Sampler::parse("parentbased_traceidratio", Some("0.25")),
            Ok(Sampler::ParentBased(Root::TraceIdRatio(0.25)))
        );
        assert_eq!(
            Sampler::parse("traceidratio", None),
            Ok(Sampler::TraceIdRatio(1.0))
        );
        for (name, arg) in [
            ("traceidratio", Some("2")),
            ("traceidratio", Some("half")),
            ("jaeger_remote", None),
        ] {
            let e = Sampler::parse(name, arg).unwrap_err();
            assert!(e.contains(name) || e.contains(arg.unwrap_or("-")), "{e}");
        }
    }

    #[test]
    fn a_parent_decides_for_parent_based_samplers_only() {
        let on = Sampler::ParentBased(Root::AlwaysOff);
        assert!(on.samples(Some(&parent(true)), TraceId::from(7u128)));
        assert!(!on.samples(Some(&parent(false)), TraceId::from(7u128)));
        assert!(!on.samples(None, TraceId::from(7u128)));
        assert!(Sampler::AlwaysOn.samples(Some(&parent(false)), TraceId::from(7u128)));
    }

    #[test]
    fn the_ratio_keeps_about_its_share_of_trace_ids() {
        let sampler = Sampler::TraceIdRatio(0.1);
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let kept = (0..100_000)
            .filter(|_| {
                // splitmix64: well-spread ids without a random crate.
                state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
                let mut z = state;
                z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                sampler.samples(None, TraceId::from(u128::from(z ^ (z >> 31))))
            })
            .count();
        assert!((9_000..11_000).contains(&kept), "{kept}");
        assert!(!Sampler::TraceIdRatio(0.0).samples(None, TraceId::from(u128::MAX)));
    }
}
