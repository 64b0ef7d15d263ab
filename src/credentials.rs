//! The one credential reader, for the controller and `render` alike: the referenced Secret
//! (as the API returns it, or as a file holds it) -> checked credentials and their keyed
//! fingerprint, or a precise problem. Pure: the callers fetch the Secret.

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use secrecy::SecretString;

use crate::api::{MicrosoftMailIntegration, NocoBaseSync};
use crate::decide::CredentialCheck;
use crate::fingerprint::fingerprint;
use crate::input::{self, Credentials, InputProblem, RawCredentials};

/// The bytes under `key`, from `data` or (in a file) `stringData`.
pub fn secret_value(s: &Secret, key: &str) -> Option<Vec<u8>> {
    s.string_data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|v| v.clone().into_bytes())
        .or_else(|| {
            s.data
                .as_ref()
                .and_then(|d| d.get(key))
                .map(|b| b.0.clone())
        })
}

/// The integration's credentials from its Secret (`None`: it does not exist), checked as
/// they would be sent to Microsoft.
pub fn read(
    mmi: &MicrosoftMailIntegration,
    secret: Option<&Secret>,
) -> Result<Credentials, InputProblem> {
    let ns = mmi.namespace().unwrap_or_default();
    let r = &mmi.spec.client_secret_ref;
    let Some(secret) = secret else {
        return Err(InputProblem::new(
            "SecretNotFound",
            format!(
                "Secret {ns}/{} does not exist: create it with the client secret Value under key {}.",
                r.name, r.key
            ),
        ));
    };
    if let Some(owner) = crate::inject::managed_by(&secret.metadata) {
        return Err(InputProblem::new(
            "ManagedSecretReferenced",
            format!(
                "Secret {ns}/{} is the Secret the operator manages for integration {}; it cannot be the clientSecretRef of an integration (the operator writes it, and a rotation would write into it). Reference the Secret that holds the client secret Value instead; nothing was read from it.",
                r.name,
                crate::quote::name(&owner)
            ),
        ));
    }
    // while a rotated value is not yet proven, the previous one stays the one in use
    let rotation = mmi.status.as_ref().and_then(|s| s.rotation.as_ref());
    let key = crate::rotation::key_in_use(&r.key, rotation, |k| secret_value(secret, k).is_some());
    let Some(value) = secret_value(secret, &key) else {
        let mut keys: Vec<&str> = secret
            .data
            .iter()
            .flatten()
            .map(|(k, _)| k.as_str())
            .collect();
        keys.extend(secret.string_data.iter().flatten().map(|(k, _)| k.as_str()));
        return Err(InputProblem::new(
            "SecretKeyNotFound",
            format!(
                "Secret {ns}/{} has no key {} (it has: {}).",
                r.name,
                r.key,
                crate::quote::list(&keys, ", ")
            ),
        ));
    };
    input::check(&RawCredentials::from_spec(&mmi.spec, &value))
}

/// What the decision core needs to know of the credentials, and the credentials to send.
pub fn check(
    mmi: &MicrosoftMailIntegration,
    secret: Option<&Secret>,
    key: &crate::fingerprint::IntegrationKey,
) -> (CredentialCheck, Option<Credentials>) {
    match read(mmi, secret) {
        Err(p) => (
            CredentialCheck::Problem {
                reason: p.reason.into(),
                message: p.message,
            },
            None,
        ),
        Ok(creds) => {
            let fp = fingerprint(
                key.as_bytes(),
                &creds,
                mmi.spec.secret_expiry.discover_from_graph,
            );
            (CredentialCheck::Ready { fingerprint: fp }, Some(creds))
        }
    }
}

/// The NocoBase API key from its Secret (`None`: it does not exist), or the reason and
/// message of the `NocoBaseSynced` condition.
pub fn api_key(
    mmi: &MicrosoftMailIntegration,
    nb: &NocoBaseSync,
    secret: Option<&Secret>,
) -> Result<SecretString, (String, String)> {
    let ns = mmi.namespace().unwrap_or_default();
    let r = &nb.api_key_secret_ref;
    let Some(secret) = secret else {
        return Err((
            "ApiKeySecretNotFound".into(),
            format!(
                "Secret {ns}/{} with the NocoBase API key does not exist.",
                r.name
            ),
        ));
    };
    let Some(key) = secret_value(secret, &r.key) else {
        return Err((
            "ApiKeySecretKeyNotFound".into(),
            format!(
                "Secret {ns}/{} has no key {} for the NocoBase API key.",
                r.name, r.key
            ),
        ));
    };
    String::from_utf8(key).map(SecretString::from).map_err(|_| {
        (
            "ApiKeyRejected".into(),
            format!(
                "The NocoBase API key in Secret {ns}/{} is not text.",
                r.name
            ),
        )
    })
}
