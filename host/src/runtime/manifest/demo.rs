//! Demo-grade settings: what a manifest allows that no server with real
//! users should (anyone signing in as anyone, anyone writing any
//! document). `spike serve` warns of each at start and whenever a
//! manifest with one comes into force, so the shipped development set is
//! never mistaken for a configuration.

use super::{Manifest, RouteAuth};

impl Manifest {
    /// What is demo-grade in this manifest, as warnings to log: first what
    /// the manifest itself declares (`demo = "…"`), then what the host
    /// sees (a room any visitor may write and nothing checks).
    pub fn demo_warnings(&self) -> Vec<String> {
        let name = &self.name;
        let mut warnings = Vec::new();
        if let Some(why) = &self.demo {
            warnings.push(format!(
                "plugin '{name}' is for development only: {why} ({})",
                self.path.display()
            ));
        }
        // A room handler may refuse a write; without one, every member's
        // write is stored and sent to everyone.
        if self.component.is_none() {
            for room in &self.rooms {
                let signed_in = matches!(
                    room.auth,
                    Some(RouteAuth::Caller { required: true, .. } | RouteAuth::Operator)
                );
                if !signed_in {
                    warnings.push(format!(
                        "plugin '{name}': anyone may join any {prefix}/… room and change it \
                         ({protocol}, no sign-in required, no room handler checks writes): \
                         set auth = \"required\" or give it a component that exports \
                         room-handler before real users arrive",
                        prefix = room.prefix,
                        protocol = room.protocol.name(),
                    ));
                }
            }
        }
        warnings
    }
}

/// Logs the demo-grade settings of `manifests`, the ones a manifest
/// declares first (the development token issuer is one).
pub fn warn_of_demo_settings<'a>(manifests: impl IntoIterator<Item = &'a Manifest>) {
    let mut warnings: Vec<(bool, String)> = manifests
        .into_iter()
        .flat_map(|m| {
            let declared = m.demo.is_some();
            m.demo_warnings()
                .into_iter()
                .enumerate()
                .map(move |(i, w)| (!(declared && i == 0), w))
        })
        .collect();
    warnings.sort_by_key(|(later, _)| *later);
    for (_, warning) in warnings {
        tracing::warn!("{warning}");
    }
}

#[cfg(test)]
mod tests {
    use super::super::parse;
    use std::path::Path;

    fn warnings(text: &str) -> Vec<String> {
        parse(Path::new("/p/x.toml"), text).unwrap().demo_warnings()
    }

    #[test]
    fn declared_and_open_rooms_are_demo_grade() {
        let w = warnings(
            "demo = \"signs a token for any name\"\ncomponent = \"x.wasm\"\n\
             [[routes]]\nprefix = \"/t\"\n",
        );
        assert_eq!(
            w,
            ["plugin 'x' is for development only: signs a token for any name (/p/x.toml)"]
        );
        let open = "[[rooms]]\nprefix = \"/yjs\"\nprotocol = \"yjs\"\nauth = \"optional\"\n";
        let w = warnings(open);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("anyone may join any /yjs/… room"), "{w:?}");
        // Signed-in members only, or a handler that checks writes: not
        // demo-grade.
        assert!(warnings(&open.replace("optional", "required")).is_empty());
        let handled = format!("component = \"x.wasm\"\n{open}");
        assert!(warnings(&handled).is_empty());
    }
}
