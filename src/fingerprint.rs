//! Keyed fingerprints: tell whether something secret changed without keeping it. One
//! recipe ([`keyed`]) for the credentials in status, the validation cache's keys and the
//! NocoBase variables.

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

/// The fingerprint of everything that decides a validation, keyed by `key` (the resource's
/// UID in status, so equal secrets in two resources do not show equal fingerprints; a
/// random per-process key in the validation cache).
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

/// The key of an integration's fingerprints: its UID (so equal secrets in two resources do
/// not show equal fingerprints); `namespace/name` for a file without one (`render`).
pub fn fingerprint_key(mmi: &crate::api::MicrosoftMailIntegration) -> String {
    use kube::ResourceExt;
    mmi.uid()
        .unwrap_or_else(|| format!("{}/{}", mmi.namespace().unwrap_or_default(), mmi.name_any()))
}

/// Keyed fingerprint of one secret value alone (rotation: which value is in the Secret,
/// the one before the attempt or the one the operator created). 128 bits, as above.
pub fn value_fingerprint(key: &[u8], value: &[u8]) -> String {
    keyed(key, &[b"rotation-value", value])
}
