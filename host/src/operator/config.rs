//! The operator commands' config file: the server and token to use when
//! `--server` / `--token` (or `SPIKE_SERVER` / `SPIKE_ADMIN_TOKEN`) are not
//! given, so that an operator of one server types neither each time.
//!
//! ```toml
//! server = "https://spike.example.com"
//! token = "…"
//! ```
//!
//! It is `--config FILE` (or `SPIKE_CLI_CONFIG`), else
//! `$XDG_CONFIG_HOME/spike/cli.toml` (`~/.config/spike/cli.toml`) if it
//! exists. A flag or variable wins over the file, the file over the
//! default server, `http://127.0.0.1:8787`.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::Target;

/// The server when nothing names one: `spike serve`'s default address.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8787";

/// The file's keys; any other key is an error (a typo would otherwise be
/// silently ignored).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    server: Option<String>,
    token: Option<String>,
}

/// Why the config file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the CLI config {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "the CLI config {path}, line {line}: {reason} (it takes server = \"URL\" and token = \"…\")"
    )]
    Parse {
        path: String,
        line: usize,
        reason: String,
    },
}

/// The target from the flags (or their variables), then the file, then
/// the default. `config` is the file named by `--config`, which must
/// exist; without it the default file is read only if it exists.
pub fn target(
    server: Option<String>,
    token: Option<String>,
    config: Option<&Path>,
) -> Result<Target, ConfigError> {
    let file = match config {
        Some(path) => read(path)?,
        None => match default_path().filter(|p| p.is_file()) {
            Some(path) => read(&path)?,
            None => File::default(),
        },
    };
    let nonempty = |s: Option<String>| s.filter(|s| !s.is_empty());
    Ok(Target {
        server: nonempty(server)
            .or(nonempty(file.server))
            .unwrap_or_else(|| DEFAULT_SERVER.into()),
        token: nonempty(token).or(nonempty(file.token)),
    })
}

/// `$XDG_CONFIG_HOME/spike/cli.toml`, or `~/.config/spike/cli.toml`.
fn default_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("spike").join("cli.toml"))
}

fn read(path: &Path) -> Result<File, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.display().to_string(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| {
        // The line only: toml's message may quote it, and it may hold the
        // token.
        let start = e.span().map_or(0, |s| s.start.min(text.len()));
        ConfigError::Parse {
            path: path.display().to_string(),
            line: text[..start].matches('\n').count() + 1,
            reason: e.message().to_string(),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), text).unwrap();
        f
    }

    #[test]
    fn flags_win_over_the_file_and_the_file_over_the_default() {
        let f = file("server = \"http://10.0.0.1:9000\"\ntoken = \"from-file\"\n");
        let t = target(None, None, Some(f.path())).unwrap();
        assert_eq!(t.server, "http://10.0.0.1:9000");
        assert_eq!(t.token.as_deref(), Some("from-file"));
        let t = target(
            Some("http://127.0.0.1:1".into()),
            Some("flag".into()),
            Some(f.path()),
        )
        .unwrap();
        assert_eq!(t.server, "http://127.0.0.1:1");
        assert_eq!(t.token.as_deref(), Some("flag"));
        let f = file("token = \"t\"\n");
        let t = target(None, Some(String::new()), Some(f.path())).unwrap();
        assert_eq!(t.server, DEFAULT_SERVER);
        assert_eq!(t.token.as_deref(), Some("t"), "an empty flag is no flag");
    }

    #[test]
    fn a_typo_names_its_line_but_never_quotes_it() {
        let f = file("server = \"http://x\"\ntokn = \"secret-value\"\n");
        let e = target(None, None, Some(f.path())).unwrap_err().to_string();
        assert!(e.contains("line 2"), "{e}");
        assert!(e.contains("tokn"), "{e}");
        assert!(!e.contains("secret-value"), "{e}");
        let missing = Path::new("/nonexistent/spike/cli.toml");
        let e = target(None, None, Some(missing)).unwrap_err().to_string();
        assert!(e.contains("cannot read the CLI config"), "{e}");
    }
}
