//! What the operator sets on the command line for a shipped plugin,
//! applied to its manifest whenever it is read (at start, on an edit of
//! the file, through the admin API), so that the file stays as shipped.
//!
//! `--npm-registry URL` points the plugin named `npm` at another registry
//! (a company's, a Verdaccio): its `REGISTRY` and, in place of the grant
//! for the registry the manifest names, one for this registry's host. The
//! plugin still reaches nothing but its grants.

use crate::caps::outbound::HostPattern;

use super::Manifest;

/// The plugin `--npm-registry` applies to.
pub const NPM_PLUGIN: &str = "npm";

/// The operator's settings for plugins' manifests.
#[derive(Debug, Clone, Default)]
pub struct PluginOverrides {
    /// `--npm-registry`.
    pub npm_registry: Option<NpmRegistry>,
}

/// A registry's base URL and the grant that reaches it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NpmRegistry {
    url: String,
    host: HostPattern,
}

impl NpmRegistry {
    /// `http(s)://host[:port][/path]`.
    pub fn parse(url: &str) -> Result<Self, String> {
        let url = url.trim().trim_end_matches('/');
        let rest = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"))
            .ok_or_else(|| format!("'{url}': a registry is an http:// or https:// URL"))?;
        let authority = rest.split('/').next().unwrap_or(rest);
        if authority.contains('@') || authority.contains('?') || authority.contains('#') {
            return Err(format!(
                "'{url}': a registry URL has no user, query or fragment"
            ));
        }
        let host = authority.parse::<HostPattern>()?;
        Ok(NpmRegistry {
            url: url.to_string(),
            host,
        })
    }
}

impl PluginOverrides {
    /// `manifest` with the settings that concern it.
    pub fn apply(&self, manifest: &mut Manifest) {
        let Some(registry) = &self.npm_registry else {
            return;
        };
        if manifest.name != NPM_PLUGIN {
            return;
        }
        let named = manifest
            .env
            .iter()
            .find(|(k, _)| k == "REGISTRY")
            .and_then(|(_, url)| NpmRegistry::parse(url).ok());
        if let Some(named) = named {
            manifest.grants.outbound.retain(|p| *p != named.host);
        }
        manifest.grants.outbound.push(registry.host.clone());
        manifest.env.retain(|(k, _)| k != "REGISTRY");
        manifest.env.push(("REGISTRY".into(), registry.url.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn the_npm_plugin_is_pointed_at_the_registry_and_granted_it_alone() {
        let text = "component = \"npm.wasm\"\n[[routes]]\nprefix = \"/npm\"\n[grants]\noutbound = [\"registry.npmjs.org\", \"other.example\"]\n\
                    [env]\nREGISTRY = \"https://registry.npmjs.org\"\n";
        let mut manifest = super::super::parse(Path::new("npm.toml"), text).unwrap();
        let overrides = PluginOverrides {
            npm_registry: Some(NpmRegistry::parse("http://127.0.0.1:4873/").unwrap()),
        };
        overrides.apply(&mut manifest);
        let env: Vec<_> = manifest
            .env
            .iter()
            .filter(|(k, _)| k == "REGISTRY")
            .collect();
        assert_eq!(
            env,
            [&("REGISTRY".to_string(), "http://127.0.0.1:4873".to_string())]
        );
        let expected: Vec<HostPattern> = ["other.example", "127.0.0.1:4873"]
            .iter()
            .map(|h| h.parse().unwrap())
            .collect();
        assert_eq!(manifest.grants.outbound, expected);

        let mut other = super::super::parse(Path::new("hello.toml"), text).unwrap();
        overrides.apply(&mut other);
        assert_eq!(other.grants.outbound.len(), 2, "only the npm plugin");
    }

    #[test]
    fn a_registry_is_a_plain_http_url() {
        for bad in [
            "registry.npmjs.org",
            "ftp://x",
            "https://u:p@x",
            "https://x?y",
            "https://",
        ] {
            assert!(NpmRegistry::parse(bad).is_err(), "{bad}");
        }
        assert!(NpmRegistry::parse("https://npm.example.com/registry/").is_ok());
    }
}
