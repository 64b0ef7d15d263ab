//! The operator's fingerprint key ([`crate::fingerprint::OperatorKey`]): read from the
//! Secret [`crate::rbac::FINGERPRINT_KEY_SECRET`] in the operator's own namespace at
//! start-up, created there (random) on the first start. An integration's author cannot
//! read that namespace, so the fingerprints in their status cannot be used to test
//! guesses of a secret.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, PostParams};
use tracing::info;

use crate::fingerprint::OperatorKey;
use crate::rbac::FINGERPRINT_KEY_SECRET;

/// The data key holding the key's bytes.
pub const DATA_KEY: &str = "key";

/// Reads the key from `ns`, or creates it there. A Secret that holds no valid key is a
/// start-up error (not replaced: whoever changed it may have meant it; deleting it makes
/// the operator create a new one, and every integration's fingerprints are recomputed).
pub async fn load_or_create(client: kube::Client, ns: &str) -> Result<OperatorKey, String> {
    let api: Api<Secret> = Api::namespaced(client, ns);
    let place = format!("Secret {ns}/{FINGERPRINT_KEY_SECRET}");
    let read = |e: kube::Error| format!("cannot read the fingerprint key ({place}): {e}");
    if let Some(s) = api.get_opt(FINGERPRINT_KEY_SECRET).await.map_err(read)? {
        return parse(&s).map_err(|e| format!("{place}: {e}"));
    }
    let key = OperatorKey::random();
    match api.create(&PostParams::default(), &secret(&key)).await {
        Ok(_) => {
            info!(secret = %place, "created the fingerprint key");
            Ok(key)
        }
        // another replica created it first: use theirs
        Err(kube::Error::Api(s)) if s.code == 409 => {
            let s = api.get(FINGERPRINT_KEY_SECRET).await.map_err(read)?;
            parse(&s).map_err(|e| format!("{place}: {e}"))
        }
        Err(e) => Err(format!("cannot create the fingerprint key ({place}): {e}")),
    }
}

fn parse(s: &Secret) -> Result<OperatorKey, String> {
    let bytes = s
        .data
        .as_ref()
        .and_then(|d| d.get(DATA_KEY))
        .ok_or_else(|| {
            format!("it has no data key `{DATA_KEY}`; delete it to have a new key made")
        })?;
    OperatorKey::from_bytes(&bytes.0).map_err(|e| format!("{e}; delete it to have a new key made"))
}

fn secret(key: &OperatorKey) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(FINGERPRINT_KEY_SECRET.into()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/managed-by".to_owned(),
                crate::inject::FIELD_MANAGER.to_owned(),
            )])),
            annotations: Some(BTreeMap::from([(
                "nocobase-mail-operator.dev/purpose".to_owned(),
                "keys the fingerprints in integrations' status; deleting it rolls every target Deployment once".to_owned(),
            )])),
            ..Default::default()
        },
        immutable: Some(true),
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([(
            DATA_KEY.to_owned(),
            ByteString(key.bytes().to_vec()),
        )])),
        ..Default::default()
    }
}
