//! Keyed fingerprints of credentials: tell whether they changed without keeping the secret.

use hmac::{Hmac, Mac};
use secrecy::ExposeSecret;
use sha2::Sha256;

use crate::input::Credentials;

/// HMAC-SHA256 of everything that decides a validation, keyed by `key` (the resource's UID
/// in status, so equal secrets in two resources do not show equal fingerprints; a random
/// per-process key in the validation cache). Client secrets are long random strings, so a
/// keyed hash reveals nothing usable; 128 bits are kept.
pub fn fingerprint(key: &[u8], creds: &Credentials, discover_from_graph: bool) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any size");
    for part in [
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
    ] {
        mac.update(&(part.len() as u64).to_be_bytes());
        mac.update(part);
    }
    hex::encode(&mac.finalize().into_bytes()[..16])
}
