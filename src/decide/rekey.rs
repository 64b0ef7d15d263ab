//! Re-keying a status written before the operator held its own fingerprint key (its
//! fingerprints were keyed by the integration's UID, see
//! [`crate::fingerprint::integration_id`]). Each fingerprint the reconcile can recompute from
//! what it read (the credentials, the values in the Secret) is given under both keys; one
//! equal to the legacy value means "the same thing" and is rewritten under the new key, so
//! an upgrade neither revalidates nor loses track of a rotation, and the next status write
//! leaves no fingerprint keyed by anything the author can read. A fingerprint of something
//! the reconcile cannot recompute (an older value no longer held) stays, and is unequal to
//! everything under the new key, which is the truth.

use crate::api::MicrosoftMailIntegrationStatus;

/// One fingerprint under the legacy key and under the current one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rekeyed {
    pub legacy: String,
    pub current: String,
}

/// `status` with every fingerprint equal to a `legacy` value of `pairs` replaced by its
/// `current` value; `None` when none was (the status is used as it is).
pub fn rekey(
    status: &MicrosoftMailIntegrationStatus,
    pairs: &[Rekeyed],
) -> Option<MicrosoftMailIntegrationStatus> {
    let mut s = status.clone();
    let mut changed = false;
    let mut swap = |fp: &mut String| {
        if let Some(p) = pairs
            .iter()
            .find(|p| p.legacy == *fp && p.legacy != p.current)
        {
            fp.clone_from(&p.current);
            changed = true;
        }
    };
    if let Some(l) = s.last_validation.as_mut() {
        l.credentials_fingerprint.iter_mut().for_each(&mut swap);
    }
    if let Some(u) = s.last_unavailable.as_mut() {
        u.credentials_fingerprint.iter_mut().for_each(&mut swap);
    }
    s.injected.iter_mut().for_each(|i| swap(&mut i.fingerprint));
    if let Some(m) = s.mail_settings.as_mut() {
        swap(&mut m.credentials_fingerprint);
    }
    if let Some(r) = s.rotation.as_mut() {
        for fp in [
            &mut r.old_secret_fingerprint,
            &mut r.new_secret_fingerprint,
            &mut r.current_secret_fingerprint,
        ] {
            fp.iter_mut().for_each(&mut swap);
        }
    }
    changed.then_some(s)
}

/// The fingerprints a reconcile can recompute, under the legacy key and under `key`: the
/// credentials' (when they could be read) and the rotation's of each value the Secret
/// holds under the `clientSecretRef` key and its previous-value key.
pub fn pairs(
    mmi: &crate::api::MicrosoftMailIntegration,
    secret: Option<&k8s_openapi::api::core::v1::Secret>,
    creds: Option<&crate::input::Credentials>,
    key: &crate::fingerprint::IntegrationKey,
) -> Vec<Rekeyed> {
    use crate::fingerprint::{fingerprint, integration_id, value_fingerprint};
    let legacy = integration_id(mmi);
    let legacy = legacy.as_bytes();
    let discover = mmi.spec.secret_expiry.discover_from_graph;
    let mut out: Vec<Rekeyed> = creds
        .map(|c| Rekeyed {
            legacy: fingerprint(legacy, c, discover),
            current: fingerprint(key.as_bytes(), c, discover),
        })
        .into_iter()
        .collect();
    let k = &mmi.spec.client_secret_ref.key;
    let data = secret.and_then(|s| s.data.as_ref());
    for name in [k.clone(), crate::rotation::previous_key(k)] {
        if let Some(v) = data.and_then(|d| d.get(&name)) {
            out.push(Rekeyed {
                legacy: value_fingerprint(legacy, &v.0),
                current: value_fingerprint(key.as_bytes(), &v.0),
            });
        }
    }
    out
}
