//! The plugin's settings, from its manifest's `[env]` (see
//! `plugins/npm.toml`), each with its default.

/// Every setting.
#[derive(Debug, Clone)]
pub struct Config {
    /// The registry's base URL, without a trailing `/`. Tarballs must be
    /// on its origin: a package cannot make the plugin fetch other hosts.
    pub registry: String,
    /// How long a package's document is taken as current.
    pub packument_ttl_s: u64,
    /// The largest registry document read.
    pub max_packument_bytes: usize,
    /// The largest tarball fetched.
    pub max_tarball_bytes: usize,
    /// The most bytes a tarball may unpack to.
    pub max_unpacked_bytes: usize,
    /// The most files a tarball may hold.
    pub max_files: usize,
    /// The largest single file built into a module.
    pub max_module_bytes: usize,
}

impl Config {
    pub fn from_env() -> Self {
        let mib = |name: &str, default: usize| number(name, default as u64) as usize * (1 << 20);
        Config {
            registry: std::env::var("REGISTRY")
                .unwrap_or_else(|_| "https://registry.npmjs.org".into())
                .trim_end_matches('/')
                .to_string(),
            packument_ttl_s: number("PACKUMENT_TTL_S", 300),
            max_packument_bytes: mib("MAX_PACKUMENT_MIB", 64),
            max_tarball_bytes: mib("MAX_TARBALL_MIB", 32),
            max_unpacked_bytes: mib("MAX_UNPACKED_MIB", 128),
            max_files: number("MAX_FILES", 20_000) as usize,
            max_module_bytes: mib("MAX_MODULE_MIB", 8),
        }
    }

    /// `scheme://host[:port]` of the registry.
    pub fn registry_origin(&self) -> &str {
        origin(&self.registry)
    }
}

/// `scheme://authority` of `url` (all of it if it has no path).
pub fn origin(url: &str) -> &str {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    match url[after_scheme..].find('/') {
        Some(i) => &url[..after_scheme + i],
        None => url,
    }
}

fn number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}
