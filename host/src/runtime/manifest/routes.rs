//! A manifest's `[[routes]]`, and the gate a route or a room puts before
//! its plugin: `auth`, `authenticator`, `rate_limit`.

use std::collections::BTreeSet;

use serde::Deserialize;
use toml::Spanned;

use super::checks::{check_prefix, route_limit};
use super::{
    DEFAULT_AUTHENTICATOR, ErrAt, LimitKey, ManifestError, Route, RouteAuth, RouteLimit, check_name,
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRoute {
    prefix: Spanned<String>,
    methods: Option<Vec<Spanned<String>>>,
    auth: Option<Spanned<String>>,
    authenticator: Option<Spanned<String>>,
    rate_limit: Option<Spanned<toml::Value>>,
}

/// One `[[routes]]` entry.
pub(super) fn parse_route(r: &RawRoute, err: ErrAt<'_>) -> Result<Route, ManifestError> {
    let prefix = r.prefix.get_ref();
    check_prefix(prefix).map_err(|m| err(Some(r.prefix.span()), m))?;
    let mut methods = BTreeSet::new();
    for m in r.methods.iter().flatten() {
        let method = m.get_ref().to_ascii_uppercase();
        if http::Method::from_bytes(method.as_bytes()).is_err() || method.is_empty() {
            return Err(err(
                Some(m.span()),
                format!("'{}' is not an HTTP method", m.get_ref()),
            ));
        }
        methods.insert(method);
    }
    if r.methods.as_ref().is_some_and(Vec::is_empty) {
        return Err(err(
            Some(r.prefix.span()),
            "methods is empty: omit it to allow all methods".into(),
        ));
    }
    let (auth, rate_limit) = gate(&r.auth, &r.authenticator, &r.rate_limit, err)?;
    Ok(Route {
        prefix: prefix.clone(),
        methods,
        auth,
        rate_limit,
    })
}

/// A route's or a room's `auth`, `authenticator` and `rate_limit`.
pub(super) fn gate(
    auth: &Option<Spanned<String>>,
    authenticator: &Option<Spanned<String>>,
    limit: &Option<Spanned<toml::Value>>,
    err: ErrAt<'_>,
) -> Result<(Option<RouteAuth>, RouteLimit), ManifestError> {
    let auth = match auth {
        None => None,
        Some(a) => match a.get_ref().as_str() {
            "required" | "optional" => Some(RouteAuth::Caller {
                required: a.get_ref() == "required",
                authenticator: match authenticator {
                    Some(n) => {
                        check_name(n.get_ref()).map_err(|m| err(Some(n.span()), m))?;
                        n.get_ref().clone()
                    }
                    None => DEFAULT_AUTHENTICATOR.into(),
                },
            }),
            "operator" => Some(RouteAuth::Operator),
            other => {
                return Err(err(
                    Some(a.span()),
                    format!("auth = \"{other}\": write \"required\", \"optional\" or \"operator\""),
                ));
            }
        },
    };
    if let (None | Some(RouteAuth::Operator), Some(n)) = (&auth, authenticator) {
        return Err(err(
            Some(n.span()),
            "authenticator is set but auth does not name a caller: add auth = \"required\" or \"optional\"".into(),
        ));
    }
    let rate_limit = match limit {
        None => RouteLimit::Default,
        Some(v) => route_limit(v.get_ref()).map_err(|m| err(Some(v.span()), m))?,
    };
    if let (
        RouteLimit::Rule {
            key: LimitKey::User,
            ..
        },
        None,
        Some(v),
    ) = (rate_limit, &auth, limit)
    {
        return Err(err(
            Some(v.span()),
            "key = \"user\" needs a caller: add auth = \"required\" or \"optional\" to the route"
                .into(),
        ));
    }
    Ok((auth, rate_limit))
}
