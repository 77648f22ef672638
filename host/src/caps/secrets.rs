//! The `spike:host/secrets` capability: values the operator keeps for
//! plugins, read only under a grant (`grants.secrets`).
//!
//! Values come from the operator's secrets file (TOML, `name = "value"`) and
//! from `SPIKE_SECRET_<NAME>` environment variables (which win). A value
//! never leaves this module except to the guest that asked: it is not in
//! any `Debug`, log line or error message, and a malformed secrets file is
//! reported by line only, since the line may hold a value.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use super::{CapError, Kind, View};
use crate::bindings::spike::host::secrets as wit;
use crate::metrics::KindLabels;

/// The prefix of environment variables that carry secrets.
pub const ENV_PREFIX: &str = "SPIKE_SECRET_";

/// A secret's value; never printed.
#[derive(Clone, PartialEq, Eq)]
struct Value(String);

impl std::fmt::Debug for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<secret>")
    }
}

/// Why the secrets could not be loaded. Says where, never what.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("secrets file {path}: {reason}")]
    File { path: String, reason: String },
}

/// Where the operator's secrets come from.
#[derive(Clone, Default)]
pub struct SecretSource {
    /// The secrets file; a missing file is fine.
    pub file: Option<PathBuf>,
    /// Environment variables; those named `SPIKE_SECRET_*` are secrets.
    pub env: Vec<(String, String)>,
}

impl SecretSource {
    /// The file, and this process's `SPIKE_SECRET_*` variables.
    pub fn from_process(file: Option<PathBuf>) -> Self {
        Self {
            file,
            env: std::env::vars()
                .filter(|(k, _)| k.starts_with(ENV_PREFIX))
                .collect(),
        }
    }

    pub fn load(&self) -> Result<SecretsCtx, SecretsError> {
        SecretsCtx::load(self.file.as_deref(), self.env.iter().cloned())
    }
}

impl std::fmt::Debug for SecretSource {
    /// The file and the variables' names; never a value.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretSource")
            .field("file", &self.file)
            .field("env", &self.env.iter().map(|(k, _)| k).collect::<Vec<_>>())
            .finish()
    }
}

/// The operator's secrets.
#[derive(Debug, Default)]
pub struct SecretsCtx {
    /// From the file, by name.
    file: BTreeMap<String, Value>,
    /// From the environment, by the variable's suffix (`OPENAI_API_KEY`).
    env: BTreeMap<String, Value>,
}

/// The environment variable suffix of a secret name: upper case, and
/// anything that cannot be in a variable name as `_`
/// (`openai-api-key` -> `OPENAI_API_KEY`).
fn env_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

impl SecretsCtx {
    /// Loads `file` (a missing file is fine: no secrets from it) and every
    /// `SPIKE_SECRET_*` variable of `env`.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, SecretsError> {
        let mut secrets = Self::default();
        if let Some(path) = file
            && path.exists()
        {
            let file_error = |reason: String| SecretsError::File {
                path: path.display().to_string(),
                reason,
            };
            let text = std::fs::read_to_string(path).map_err(|e| file_error(e.to_string()))?;
            let table: BTreeMap<String, String> = toml::from_str(&text).map_err(|e| {
                // toml's own message may quote the line, and the line may
                // hold a value: the line number only.
                let line = e
                    .span()
                    .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
                file_error(match line {
                    Some(line) => format!("line {line}: expected name = \"value\""),
                    None => "expected lines of name = \"value\"".into(),
                })
            })?;
            secrets.file = table.into_iter().map(|(k, v)| (k, Value(v))).collect();
        }
        secrets.env = env
            .into_iter()
            .filter_map(|(k, v)| Some((k.strip_prefix(ENV_PREFIX)?.to_string(), Value(v))))
            .collect();
        Ok(secrets)
    }

    /// The value of `name`, if the operator set it.
    fn value(&self, name: &str) -> Option<&str> {
        self.env
            .get(&env_name(name))
            .or_else(|| self.file.get(name))
            .map(|v| v.0.as_str())
    }

    /// How many secrets are set (for the start-up log; never which).
    pub fn len(&self) -> usize {
        self.file.len() + self.env.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The view that implements the secrets `Host` trait.
pub type SecretsView<'a> = View<'a, SecretsCtx>;

impl wit::Host for SecretsView<'_> {
    async fn get(&mut self, name: String) -> Result<String, CapError> {
        // The name only: a secret's value is never recorded anywhere.
        let span = super::call_span("secrets", "get", &name);
        let read = self.read(&name);
        if let Err(e) = &read {
            crate::telemetry::failed(&span, crate::telemetry::ErrorType::error_type(e));
        }
        read
    }
}

impl SecretsView<'_> {
    fn read(&mut self, name: &str) -> Result<String, CapError> {
        if let Err(denied) = self.grants.check(Kind::Secret, name) {
            self.counts.secret("denied");
            return Err(denied);
        }
        match self.ctx.value(name) {
            Some(value) => {
                self.counts.secret("read");
                Ok(value.to_string())
            }
            None => Err({
                self.counts.secret("unset");
                CapError::InvalidInput(format!(
                    "secret '{name}' is not set: set it in the secrets file or as {ENV_PREFIX}{}",
                    env_name(name)
                ))
            }),
        }
    }
}

struct HasSecrets;

impl wasmtime::component::HasData for HasSecrets {
    type Data<'a> = SecretsView<'a>;
}

/// Adds `spike:host/secrets` to the linker.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut wasmtime::component::Linker<T>,
    view: fn(&mut T) -> SecretsView<'_>,
) -> wasmtime::Result<()> {
    wit::add_to_linker::<T, HasSecrets>(linker, view)
}

crate::metrics::series! {
    /// The secrets import's series.
    pub struct SecretMetrics {
        /// Secret reads: `read`, `denied`, `unset`.
        reads: Family<KindLabels, Counter> = Family::default(),
            "secret_reads", "Secret reads, by outcome";
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_and_environment_with_the_environment_winning() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secrets.toml");
        std::fs::write(&file, "api-key = \"from-file\"\nother = \"x\"\n").unwrap();
        let env = [
            ("SPIKE_SECRET_API_KEY".to_string(), "from-env".to_string()),
            ("PATH".to_string(), "/bin".to_string()),
        ];
        let secrets = SecretsCtx::load(Some(&file), env).unwrap();
        assert_eq!(secrets.value("api-key"), Some("from-env"));
        assert_eq!(secrets.value("other"), Some("x"));
        assert_eq!(secrets.value("path"), None, "only SPIKE_SECRET_ variables");
        assert_eq!(secrets.len(), 3);
        assert!(
            SecretsCtx::load(Some(&dir.path().join("absent.toml")), [])
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn neither_debug_nor_errors_show_a_value() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secrets.toml");
        std::fs::write(&file, "ok = \"planted-value-1\"\nbad = planted-value-2\n").unwrap();
        let e = SecretsCtx::load(Some(&file), []).unwrap_err().to_string();
        assert!(e.contains("line 2"), "{e}");
        assert!(!e.contains("planted"), "{e}");
        std::fs::write(&file, "ok = \"planted-value-1\"\n").unwrap();
        let secrets = SecretsCtx::load(Some(&file), []).unwrap();
        assert!(!format!("{secrets:?}").contains("planted"));
    }
}
