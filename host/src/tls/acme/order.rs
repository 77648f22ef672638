//! One ACME order (RFC 8555) for a set of names, with instant-acme: each
//! pending authorization's challenge published in the store (where any
//! node answers it), marked ready, the order polled, finalized with a new
//! key (ECDSA P-256, made by instant-acme through rcgen), and the chain
//! fetched.

use anyhow::{Context as _, bail};
use instant_acme::{
    Account, AuthorizationStatus, ChallengeType, Identifier, NewOrder, OrderStatus, RetryPolicy,
};

use super::ChallengeKind;
use super::store::{AlpnChallenge, Store, StoredCert};

/// How long the CA may take to validate, and to issue.
const VALIDATION: std::time::Duration = std::time::Duration::from_secs(120);

pub async fn obtain(
    account: &Account,
    names: &[String],
    kind: ChallengeKind,
    store: &Store,
) -> anyhow::Result<StoredCert> {
    let identifiers: Vec<Identifier> = names.iter().cloned().map(Identifier::Dns).collect();
    let mut order = account
        .new_order(&NewOrder::new(&identifiers))
        .await
        .context("placing the order")?;
    let mut published = Vec::new();
    let mut authorizations = order.authorizations();
    while let Some(authorization) = authorizations.next().await {
        let mut authorization = authorization.context("reading an authorization")?;
        match authorization.status {
            AuthorizationStatus::Valid => continue,
            AuthorizationStatus::Pending => {}
            other => bail!("an authorization is {other:?}"),
        }
        let acme_type = match kind {
            ChallengeKind::TlsAlpn01 => ChallengeType::TlsAlpn01,
            ChallengeKind::Http01 => ChallengeType::Http01,
        };
        let mut challenge = authorization
            .challenge(acme_type)
            .with_context(|| format!("the CA offers no {} challenge", kind.as_str()))?;
        let name = challenge.identifier().to_string();
        let answer = challenge.key_authorization();
        let key = match kind {
            ChallengeKind::TlsAlpn01 => {
                let made = alpn_certificate(&name, answer.digest().as_ref())?;
                store.put_alpn_challenge(&name, &made).await?;
                name
            }
            ChallengeKind::Http01 => {
                let token = challenge.token.clone();
                store.put_http_challenge(&token, answer.as_str()).await?;
                token
            }
        };
        published.push(key);
        challenge
            .set_ready()
            .await
            .context("answering a challenge")?;
    }
    let result = finish(&mut order).await;
    for key in published {
        store.remove_challenge(kind.as_str(), &key).await;
    }
    let (chain_pem, key_pem) = result?;
    Ok(StoredCert {
        names: names.to_vec(),
        chain_pem,
        key_pem,
        issued_at_ms: crate::util::now_ms(),
    })
}

/// The order validated, finalized and its chain fetched: (chain, key).
async fn finish(order: &mut instant_acme::Order) -> anyhow::Result<(String, String)> {
    let polling = RetryPolicy::new().timeout(VALIDATION);
    match order.poll_ready(&polling).await.context("validation")? {
        OrderStatus::Ready => {}
        status => bail!("the order is {status:?} after validation"),
    }
    let key_pem = order.finalize().await.context("finalizing the order")?;
    let chain_pem = order
        .poll_certificate(&polling)
        .await
        .context("fetching the certificate")?;
    Ok((chain_pem, key_pem))
}

/// TLS-ALPN-01's certificate for `name` (RFC 8737): self-signed, for that
/// name alone, with the key authorization's digest in its critical
/// acmeIdentifier extension.
fn alpn_certificate(name: &str, digest: &[u8]) -> anyhow::Result<AlpnChallenge> {
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(vec![name.to_string()])?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let cert = params.self_signed(&key)?;
    Ok(AlpnChallenge {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}
