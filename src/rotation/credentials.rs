//! Which Entra credentials are whose: orphans of an interrupted attempt, the old credential.

use super::DISPLAY_NAME_PREFIX;
use crate::microsoft::graph::PasswordCredential;

/// The displayName of a credential created by attempt `attempt_id`.
pub fn display_name(attempt_id: &str) -> String {
    format!("{DISPLAY_NAME_PREFIX}{attempt_id}")
}

/// What is in the Secret named by clientSecretRef, as fingerprints and the hint.
pub struct SecretSeen<'a> {
    pub current_fingerprint: &'a str,
    pub current_hint: &'a str,
    pub previous_fingerprint: Option<&'a str>,
}

/// What to do with credentials carrying the attempt ID before creating one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Orphans {
    /// The crash came after the Secret write: this credential is the new secret; keep it.
    Adopt(String),
    /// Created and lost before the Secret write: remove these (never in use).
    Remove(Vec<String>),
}

pub fn orphans(
    creds: &[PasswordCredential],
    attempt_id: &str,
    old_fingerprint: Option<&str>,
    secret: &SecretSeen<'_>,
) -> Orphans {
    let mine: Vec<&PasswordCredential> = creds
        .iter()
        .filter(|c| {
            c.display_name
                .as_deref()
                .is_some_and(|d| d.contains(attempt_id))
        })
        .collect();
    let written = old_fingerprint.is_some_and(|old| {
        old != secret.current_fingerprint && secret.previous_fingerprint == Some(old)
    });
    let by_hint: Vec<&&PasswordCredential> = mine
        .iter()
        .filter(|c| c.hint.as_deref() == Some(secret.current_hint))
        .collect();
    if written
        && let [one] = by_hint.as_slice()
        && let Some(k) = &one.key_id
    {
        return Orphans::Adopt(k.clone());
    }
    // a credential whose hint is the value in use is never removed, whatever its name
    Orphans::Remove(
        mine.iter()
            .filter(|c| c.hint.as_deref() != Some(secret.current_hint))
            .filter_map(|c| c.key_id.clone())
            .collect(),
    )
}

/// Which credential is the old one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OldCredential {
    Remove(String),
    /// Not there any more (removed by someone else): nothing to do.
    Gone,
    /// Several share the hint, or nothing identifies it: leave them (the message says so).
    Ambiguous(String),
}

/// Identifies the old credential: the recorded keyId if it is still there with the old
/// hint, else the only credential with the old value's hint that is not the new one.
/// Never one carrying the hint of the value in use, never a guess among several.
pub fn old_credential(
    creds: &[PasswordCredential],
    old_hint: Option<&str>,
    recorded: Option<&str>,
    new_key_id: Option<&str>,
    current_hint: &str,
) -> OldCredential {
    let usable = |c: &&PasswordCredential| {
        c.key_id.as_deref() != new_key_id && c.hint.as_deref() != Some(current_hint)
    };
    if let Some(r) = recorded
        && let Some(c) = creds
            .iter()
            .filter(usable)
            .find(|c| c.key_id.as_deref() == Some(r))
        && old_hint.is_none_or(|h| c.hint.as_deref() == Some(h))
    {
        return OldCredential::Remove(r.to_owned());
    }
    let Some(hint) = old_hint else {
        return OldCredential::Ambiguous("the old value is no longer in the Secret and its keyId was not recorded, so the old credential cannot be identified; remove it in the portal once nothing uses it".into());
    };
    let same: Vec<&PasswordCredential> = creds
        .iter()
        .filter(|c| c.hint.as_deref() == Some(hint))
        .filter(usable)
        .collect();
    match same.as_slice() {
        [] => OldCredential::Gone,
        [one] => one
            .key_id
            .clone()
            .map_or(OldCredential::Gone, OldCredential::Remove),
        many => OldCredential::Ambiguous(format!(
            "{} credentials share the old secret's hint, so the operator does not guess which one was in use; remove the old one in the portal (Certificates & secrets) once nothing uses it",
            many.len()
        )),
    }
}

/// The keyId of the credential holding the value in use, when exactly one has its hint.
pub fn identify(creds: &[PasswordCredential], hint: &str) -> Result<String, String> {
    let same: Vec<&PasswordCredential> = creds
        .iter()
        .filter(|c| c.hint.as_deref() == Some(hint))
        .collect();
    match same.as_slice() {
        [one] if one.key_id.is_some() => Ok(one.key_id.clone().unwrap_or_default()),
        [] => Err("No credential of the app has the hint of the secret in use.".into()),
        many => Err(format!(
            "{} credentials share the hint of the secret in use; the old one will be identified again before removal, and left in place if it cannot be.",
            many.len()
        )),
    }
}
