//! What ACME keeps in the storage backend, under a KV namespace no plugin
//! can name (plugin names have no `/`): the account's credentials per
//! directory, each certificate with its key, and the challenges being
//! validated (with a lifetime, so an order cut short leaves nothing). On a
//! cluster every node reads the same, which is how a certificate one node
//! obtained is served by all and a challenge is answered by whichever node
//! the CA reaches.
//!
//! Private keys are stored as they are (PEM), as a certbot folder holds
//! them: the backend is the operator's alone (the data folder is 0700).

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::storage::{KvBackend, KvEntry, Quota};

pub const NAMESPACE: &str = "spike/tls";

/// How long a published challenge stays: an order that outlives it failed.
const CHALLENGE_TTL: Duration = Duration::from_secs(600);

/// A certificate ACME issued, as stored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StoredCert {
    pub names: Vec<String>,
    pub chain_pem: String,
    pub key_pem: String,
    pub issued_at_ms: u64,
}

/// A TLS-ALPN-01 challenge certificate, as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AlpnChallenge {
    pub cert_pem: String,
    pub key_pem: String,
}

#[derive(Clone)]
pub struct Store {
    kv: Arc<dyn KvBackend>,
}

impl Store {
    pub fn new(kv: Arc<dyn KvBackend>) -> Self {
        Self { kv }
    }

    async fn get<T: DeserializeOwned>(&self, key: &str) -> anyhow::Result<Option<T>> {
        let Some(entry) = self.kv.get(NAMESPACE, key).await? else {
            return Ok(None);
        };
        if !crate::storage::kv_entry::live(&entry, crate::util::now_ms()) {
            return Ok(None);
        }
        Ok(Some(serde_json::from_slice(&entry.value)?))
    }

    async fn put<T: Serialize>(
        &self,
        key: &str,
        value: &T,
        ttl: Option<Duration>,
    ) -> anyhow::Result<()> {
        let entry = KvEntry {
            value: serde_json::to_vec(value)?,
            metadata: None,
            expires_at_ms: ttl.map(|ttl| crate::util::now_ms() + ttl.as_millis() as u64),
        };
        self.kv.set(NAMESPACE, key, entry, Quota::NONE).await?;
        Ok(())
    }

    pub async fn cert(&self, id: &str) -> anyhow::Result<Option<StoredCert>> {
        self.get(&format!("cert/{id}")).await
    }

    pub async fn put_cert(&self, id: &str, cert: &StoredCert) -> anyhow::Result<()> {
        self.put(&format!("cert/{id}"), cert, None).await
    }

    /// The account's credentials at `directory` (instant-acme's JSON).
    pub async fn account(&self, directory: &str) -> anyhow::Result<Option<serde_json::Value>> {
        self.get(&account_key(directory)).await
    }

    pub async fn put_account(
        &self,
        directory: &str,
        credentials: &serde_json::Value,
    ) -> anyhow::Result<()> {
        self.put(&account_key(directory), credentials, None).await
    }

    pub async fn alpn_challenge(&self, name: &str) -> anyhow::Result<Option<AlpnChallenge>> {
        self.get(&format!("tls-alpn-01/{name}")).await
    }

    pub async fn put_alpn_challenge(
        &self,
        name: &str,
        challenge: &AlpnChallenge,
    ) -> anyhow::Result<()> {
        self.put(
            &format!("tls-alpn-01/{name}"),
            challenge,
            Some(CHALLENGE_TTL),
        )
        .await
    }

    /// The key authorization answering HTTP-01's `token`.
    pub async fn http_challenge(&self, token: &str) -> anyhow::Result<Option<String>> {
        self.get(&format!("http-01/{token}")).await
    }

    pub async fn put_http_challenge(&self, token: &str, answer: &str) -> anyhow::Result<()> {
        self.put(&format!("http-01/{token}"), &answer, Some(CHALLENGE_TTL))
            .await
    }

    /// Removes a challenge once its order is done (`kind` is
    /// `tls-alpn-01` or `http-01`).
    pub async fn remove_challenge(&self, kind: &str, key: &str) {
        let _ = self.kv.delete(NAMESPACE, &format!("{kind}/{key}")).await;
    }
}

fn account_key(directory: &str) -> String {
    format!(
        "account/{}",
        &crate::util::sha256_hex(directory.as_bytes())[..16]
    )
}
