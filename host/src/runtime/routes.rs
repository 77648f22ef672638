//! Which plugin serves a request: longest path prefix first, then method.
//!
//! `HEAD` is answered wherever `GET` is: a route that lists `GET` but not
//! `HEAD`, or lists no methods, runs the guest's `GET` and the server sends
//! the headers only. A route that lists `HEAD` gets it as is.

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::runtime::manifest::Manifest;

/// Whether `prefix` covers `path`: equal, or `path` continues it with `/`.
/// `/hello` covers `/hello` and `/hello/x`, not `/helloworld`.
pub fn prefix_matches(prefix: &str, path: &str) -> bool {
    prefix == "/"
        || path == prefix
        || (path.starts_with(prefix) && path.as_bytes().get(prefix.len()) == Some(&b'/'))
}

#[derive(Debug, Clone)]
struct RouteEntry {
    /// Shared, so that counting a request by its route copies no string.
    prefix: Arc<str>,
    /// Empty: every method.
    methods: BTreeSet<String>,
    plugin: String,
    /// Which of the plugin's policies: its routes, then its rooms.
    index: usize,
    /// Which of the plugin's rooms, for a room route.
    room: Option<usize>,
}

/// The outcome of routing a request.
#[derive(Debug, PartialEq, Eq)]
pub enum RouteMatch<'a> {
    /// `index`: which of the plugin's policies (its routes in manifest
    /// order, then its rooms). `as_get`: a `HEAD` to be run as `GET`, its
    /// body dropped. `room`: which of its rooms, for a room route.
    Plugin {
        name: &'a str,
        prefix: &'a Arc<str>,
        index: usize,
        as_get: bool,
        room: Option<usize>,
    },
    /// Some plugin serves the path, none with this method.
    MethodNotAllowed(Vec<String>),
    NotFound,
}

/// All routes of all plugins, longest prefix first.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    entries: Vec<RouteEntry>,
}

impl RouteTable {
    /// Builds the table, refusing two plugins that claim the same prefix for
    /// the same method.
    pub fn new(manifests: &[Manifest]) -> Result<Self, String> {
        let mut entries: Vec<RouteEntry> = Vec::new();
        let get = BTreeSet::from(["GET".to_string()]);
        for m in manifests {
            let http = m.routes.iter().map(|r| (&r.prefix, &r.methods, None));
            let rooms = (m.rooms.iter().enumerate()).map(|(i, r)| (&r.prefix, &get, Some(i)));
            for (index, (prefix, methods, room)) in http.chain(rooms).enumerate() {
                let clash = entries.iter().find(|e| {
                    *e.prefix == **prefix
                        && (e.methods.is_empty()
                            || methods.is_empty()
                            || !e.methods.is_disjoint(methods))
                });
                if let Some(e) = clash {
                    return Err(format!(
                        "{}: route '{prefix}' is already served by plugin '{}'",
                        m.path.display(),
                        e.plugin
                    ));
                }
                entries.push(RouteEntry {
                    prefix: prefix.as_str().into(),
                    methods: methods.clone(),
                    plugin: m.name.clone(),
                    index,
                    room,
                });
            }
        }
        // Longest first; among equal prefixes, method-specific before catch-all.
        entries.sort_by(|a, b| {
            b.prefix
                .len()
                .cmp(&a.prefix.len())
                .then(a.methods.is_empty().cmp(&b.methods.is_empty()))
        });
        Ok(Self { entries })
    }

    /// The plugin for `method path`.
    pub fn resolve(&self, method: &str, path: &str) -> RouteMatch<'_> {
        let head = method == "HEAD";
        let mut allowed = BTreeSet::new();
        for e in self
            .entries
            .iter()
            .filter(|e| prefix_matches(&e.prefix, path))
        {
            if e.methods.contains(method) {
                return RouteMatch::Plugin {
                    name: &e.plugin,
                    prefix: &e.prefix,
                    index: e.index,
                    as_get: false,
                    room: e.room,
                };
            }
            if e.methods.is_empty() || (head && e.methods.contains("GET")) {
                return RouteMatch::Plugin {
                    name: &e.plugin,
                    prefix: &e.prefix,
                    index: e.index,
                    as_get: head,
                    room: e.room,
                };
            }
            allowed.extend(e.methods.iter().cloned());
            if e.methods.contains("GET") {
                allowed.insert("HEAD".to_string());
            }
        }
        if allowed.is_empty() {
            RouteMatch::NotFound
        } else {
            RouteMatch::MethodNotAllowed(allowed.into_iter().collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::manifest::parse;
    use std::path::Path;

    /// The plugin a request went to, and whether as GET.
    fn to(m: RouteMatch<'_>) -> Option<(&str, bool)> {
        match m {
            RouteMatch::Plugin { name, as_get, .. } => Some((name, as_get)),
            _ => None,
        }
    }

    fn plugin(name: &str) -> Option<(&str, bool)> {
        Some((name, false))
    }

    fn manifest(name: &str, routes: &str) -> Manifest {
        parse(
            Path::new(&format!("/p/{name}.toml")),
            &format!("component = \"x.wasm\"\nroutes = [{routes}]\n"),
        )
        .unwrap()
    }

    #[test]
    fn prefix_matching_is_by_segment() {
        assert!(prefix_matches("/hello", "/hello"));
        assert!(prefix_matches("/hello", "/hello/x/y"));
        assert!(!prefix_matches("/hello", "/helloworld"));
        assert!(!prefix_matches("/hello", "/"));
        assert!(prefix_matches("/", "/anything"));
    }

    #[test]
    fn longest_prefix_wins() {
        let t = RouteTable::new(&[
            manifest("api", r#"{ prefix = "/api" }"#),
            manifest("users", r#"{ prefix = "/api/users" }"#),
            manifest("root", r#"{ prefix = "/" }"#),
        ])
        .unwrap();
        assert_eq!(to(t.resolve("GET", "/api/users/7")), plugin("users"));
        assert_eq!(to(t.resolve("GET", "/api/usersx")), plugin("api"));
        assert_eq!(to(t.resolve("GET", "/api")), plugin("api"));
        assert_eq!(to(t.resolve("GET", "/other")), plugin("root"));
    }

    #[test]
    fn methods_filter_and_fall_back() {
        let t = RouteTable::new(&[
            manifest("api", r#"{ prefix = "/api" }"#),
            manifest("ro", r#"{ prefix = "/api/ro", methods = ["GET"] }"#),
            manifest("w", r#"{ prefix = "/w", methods = ["PUT", "POST"] }"#),
        ])
        .unwrap();
        assert_eq!(to(t.resolve("GET", "/api/ro/x")), plugin("ro"));
        assert_eq!(to(t.resolve("POST", "/api/ro/x")), plugin("api"));
        assert_eq!(
            t.resolve("GET", "/w"),
            RouteMatch::MethodNotAllowed(vec!["POST".into(), "PUT".into()])
        );
        assert_eq!(t.resolve("GET", "/nope"), RouteMatch::NotFound);
    }

    #[test]
    fn head_is_answered_wherever_get_is() {
        let t = RouteTable::new(&[
            manifest("all", r#"{ prefix = "/all" }"#),
            manifest("ro", r#"{ prefix = "/ro", methods = ["GET"] }"#),
            manifest("own", r#"{ prefix = "/own", methods = ["GET", "HEAD"] }"#),
            manifest("w", r#"{ prefix = "/w", methods = ["PUT"] }"#),
        ])
        .unwrap();
        let as_get = |name| Some((name, true));
        assert_eq!(to(t.resolve("HEAD", "/all/x")), as_get("all"));
        assert_eq!(to(t.resolve("HEAD", "/ro")), as_get("ro"));
        assert_eq!(to(t.resolve("HEAD", "/own")), plugin("own"));
        assert_eq!(
            t.resolve("HEAD", "/w"),
            RouteMatch::MethodNotAllowed(vec!["PUT".into()])
        );
        assert_eq!(
            t.resolve("POST", "/ro"),
            RouteMatch::MethodNotAllowed(vec!["GET".into(), "HEAD".into()])
        );
    }

    #[test]
    fn clashing_routes_are_refused() {
        let e = RouteTable::new(&[
            manifest("a", r#"{ prefix = "/x", methods = ["GET"] }"#),
            manifest("b", r#"{ prefix = "/x", methods = ["GET", "PUT"] }"#),
        ])
        .unwrap_err();
        assert!(e.contains("already served by plugin 'a'"), "{e}");
        // Same prefix, different methods: fine.
        RouteTable::new(&[
            manifest("a", r#"{ prefix = "/x", methods = ["GET"] }"#),
            manifest("b", r#"{ prefix = "/x", methods = ["PUT"] }"#),
        ])
        .unwrap();
    }
}
