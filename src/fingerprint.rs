//! Keyed fingerprints: tell whether something secret changed without keeping it. One
//! recipe ([`keyed`]) for the credentials in status, the validation cache's keys and the
//! NocoBase variables.
//!
//! Every fingerprint an integration's author can read (status, the Deployment annotation)
//! is keyed by an [`IntegrationKey`], derived from the [`OperatorKey`] that only the
//! operator holds (a Secret in its own namespace): with a key the author can read, a
//! fingerprint over inputs they know would let them test guesses of a referenced
//! password offline.

use hmac::{Hmac, Mac};
use secrecy::ExposeSecret;
use sha2::Sha256;

use crate::input::Credentials;

/// HMAC-SHA256 keyed by `key` over `parts`, each prefixed with its length (so that parts
/// cannot run into each other), truncated to 128 bits, in hex. Client secrets and API
/// values are long random strings, so a keyed hash reveals nothing usable.
pub fn keyed(key: &[u8], parts: &[&[u8]]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any size");
    for part in parts {
        mac.update(&(part.len() as u64).to_be_bytes());
        mac.update(part);
    }
    hex::encode(&mac.finalize().into_bytes()[..16])
}

/// The fingerprint of everything that decides a validation, keyed by `key` (the
/// integration's [`IntegrationKey`] in status; a random per-process key in the validation
/// cache).
pub fn fingerprint(key: &[u8], creds: &Credentials, discover_from_graph: bool) -> String {
    keyed(
        key,
        &[
            creds.tenant_id.as_bytes(),
            creds.client_id.as_bytes(),
            creds.authority_host.as_bytes(),
            creds.graph_host.as_bytes(),
            if discover_from_graph {
                b"graph"
            } else {
                b"nograph"
            },
            creds.client_secret.expose_secret().as_bytes(),
        ],
    )
}

/// What an integration's [`IntegrationKey`] is derived from: its UID, `namespace/name`
/// for a file without one (`render`). Before the operator held its own key, fingerprints
/// were keyed by this directly; [`crate::decide::rekey`] recognises those.
pub fn integration_id(mmi: &crate::api::MicrosoftMailIntegration) -> String {
    use kube::ResourceExt;
    mmi.uid()
        .unwrap_or_else(|| format!("{}/{}", mmi.namespace().unwrap_or_default(), mmi.name_any()))
}

/// Length of the [`OperatorKey`], in bytes.
pub const OPERATOR_KEY_LEN: usize = 32;

/// The operator's fingerprint key: random bytes kept in a Secret of the operator's own
/// namespace ([`crate::controller::fpkey`]), never shown. Cloning shares them.
#[derive(Clone)]
pub struct OperatorKey(std::sync::Arc<[u8; OPERATOR_KEY_LEN]>);

impl OperatorKey {
    /// A new random key (the first start; and processes that keep no fingerprints beyond
    /// their own life, such as `render` and in-process tests).
    pub fn random() -> Self {
        Self(std::sync::Arc::new(rand::random()))
    }

    /// The key stored as `bytes`; anything but exactly [`OPERATOR_KEY_LEN`] bytes is
    /// refused (a truncated or hand-edited key would key fingerprints anyone could guess).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
        let key: [u8; OPERATOR_KEY_LEN] = bytes.try_into().map_err(|_| {
            format!(
                "the fingerprint key must be {OPERATOR_KEY_LEN} bytes, it is {}",
                bytes.len()
            )
        })?;
        Ok(Self(std::sync::Arc::new(key)))
    }

    /// The bytes to store.
    pub fn bytes(&self) -> &[u8] {
        &self.0[..]
    }

    /// The key of one integration's fingerprints: distinct per integration (its UID), so
    /// equal secrets in two integrations do not show equal fingerprints.
    pub fn integration(&self, uid: &str) -> IntegrationKey {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.0[..]).expect("HMAC takes keys of any size");
        mac.update(b"nocobase-mail-operator integration key\0");
        mac.update(uid.as_bytes());
        IntegrationKey(mac.finalize().into_bytes().into())
    }
}

impl std::fmt::Debug for OperatorKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OperatorKey(hidden)")
    }
}

/// The key of one integration's fingerprints ([`OperatorKey::integration`]).
#[derive(Clone, PartialEq, Eq)]
pub struct IntegrationKey([u8; 32]);

impl IntegrationKey {
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for IntegrationKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IntegrationKey(hidden)")
    }
}

/// Keyed fingerprint of one secret value alone (rotation: which value is in the Secret,
/// the one before the attempt or the one the operator created). 128 bits, as above.
pub fn value_fingerprint(key: &[u8], value: &[u8]) -> String {
    keyed(key, &[b"rotation-value", value])
}
