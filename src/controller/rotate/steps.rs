//! The I/O of each rotation step: Graph writes, the Secret, the target Deployments.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::Deployment;
use kube::ResourceExt;
use kube::api::Api;
use secrecy::ExposeSecret;
use tracing::{info, warn};

use super::{Env, create_failed, hint};
use crate::api::{MicrosoftMailIntegrationStatus, Rollout, RotationStatus, condition};
use crate::inject::FINGERPRINT_ANNOTATION;
use crate::microsoft::Outcome;
use crate::microsoft::passwords::{AppGraph, GraphError};
use crate::rotation::{self, Delivery, OldCredential, Orphans, Report, SecretSeen, previous_key};

/// `kubectl rollout restart` marks the pod template with this annotation.
const RESTARTED_AT: &str = "kubectl.kubernetes.io/restartedAt";

/// Removes what an interrupted attempt left, calls addPassword, and stores the Value in the
/// Secret before anything else.
pub(super) async fn create(
    env: &Env<'_>,
    p: &RotationStatus,
    data: &BTreeMap<String, ByteString>,
    now: Timestamp,
) -> Report {
    let attempt = p.attempt_id.clone().unwrap_or_default();
    let Some(current) = data.get(&env.key).map(|v| v.0.clone()) else {
        return create_failed(GraphError {
            reason: "SecretKeyNotFound".into(),
            message: "The Secret has no client secret to rotate.".into(),
            transient: false,
        });
    };
    let previous = data.get(&previous_key(&env.key)).map(|v| v.0.clone());
    let cur_fp = env.fp(&current);
    let prev_fp = previous.as_deref().map(|v| env.fp(v));
    let old_value = value_before(p, &cur_fp, &current, previous.as_ref());
    let g = match env.graph(&old_value).await {
        Ok(g) => g,
        Err(e) => return create_failed(e),
    };
    let list = match g.passwords().await {
        Ok(l) => l,
        Err(e) => return create_failed(e),
    };
    let old_key = rotation::identify(&list, &hint(&old_value));
    let seen = SecretSeen {
        current_fingerprint: &cur_fp,
        current_hint: &hint(&current),
        previous_fingerprint: prev_fp.as_deref(),
    };
    let removed = match rotation::orphans(
        &list,
        &attempt,
        p.old_secret_fingerprint.as_deref(),
        &seen,
    ) {
        Orphans::Adopt(key) => {
            info!(key_id = %key, "the new secret reached the Secret before a restart; continuing with it");
            let end = list
                .iter()
                .find(|c| c.key_id.as_deref() == Some(key.as_str()))
                .and_then(|c| c.end_date_time.clone())
                .unwrap_or_default();
            return Report::Created {
                new_key_id: key,
                new_expires_at: end,
                new_fingerprint: cur_fp,
                old_key_id: old_key.ok(),
                old_note: None,
                orphans_removed: 0,
            };
        }
        Orphans::Remove(keys) => {
            for k in &keys {
                if let Err(e) = g.remove_password(k).await {
                    return create_failed(e);
                }
                info!(key_id = %k, "removed a credential left by an interrupted attempt");
            }
            keys.len()
        }
    };
    match add_and_store(env, &g, &attempt, &old_value, now).await {
        Ok((new_key_id, new_expires_at, new_fingerprint)) => Report::Created {
            new_key_id,
            new_expires_at,
            new_fingerprint,
            old_note: old_key.as_ref().err().cloned(),
            old_key_id: old_key.ok(),
            orphans_removed: removed,
        },
        Err(e) => create_failed(e),
    }
}

/// The value in use before this attempt (the token comes from it: the new one may not
/// work yet): the current one unless the Secret already holds the new value.
fn value_before(
    p: &RotationStatus,
    cur_fp: &str,
    current: &[u8],
    previous: Option<&Vec<u8>>,
) -> Vec<u8> {
    if p.old_secret_fingerprint.as_deref() == Some(cur_fp) {
        current.to_vec()
    } else {
        previous.cloned().unwrap_or_else(|| current.to_vec())
    }
}

/// addPassword, then the Value into the Secret before anything else; a Value that could
/// not be stored is removed again. Gives keyId, endDateTime and the Value's fingerprint.
async fn add_and_store(
    env: &Env<'_>,
    g: &AppGraph<'_>,
    attempt: &str,
    old_value: &[u8],
    now: Timestamp,
) -> Result<(String, String, String), GraphError> {
    let lifetime = mmi_settings(env).map_or(jiff::SignedDuration::from_hours(4320), |s| s.lifetime);
    let new = g
        .add_password(&rotation::display_name(attempt), now + lifetime)
        .await?;
    info!(key_id = %new.key_id, "addPassword created the next client secret");
    if let Err(e) = env
        .write_secret(new.secret.expose_secret().as_bytes(), Some(old_value))
        .await
    {
        // never delivered: take it back now (or, failing that, as an orphan next time)
        let _ = g.remove_password(&new.key_id).await;
        return Err(GraphError {
            reason: "SecretWriteFailed".into(),
            message: format!(
                "Could not store the new secret in the Secret ({}); it was removed again.",
                kube_reason(&e)
            ),
            transient: true,
        });
    }
    let fp = env.fp(new.secret.expose_secret().as_bytes());
    Ok((new.key_id, new.end_date_time, fp))
}

fn kube_reason(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!("HTTP {} {}", s.code, s.reason),
        _ => "the Kubernetes API could not be reached".into(),
    }
}

fn mmi_settings(env: &Env<'_>) -> Option<rotation::Settings> {
    env.mmi
        .spec
        .rotation
        .as_ref()
        .and_then(|r| rotation::settings(r).ok())
}

/// One token request with the new value, never shared with other reconciles or cached:
/// a refusal during propagation must not be remembered.
pub(super) async fn validate(env: &Env<'_>, data: &BTreeMap<String, ByteString>) -> Report {
    let Some(value) = data.get(&env.key) else {
        return Report::Refused {
            reason: "SecretKeyNotFound".into(),
            message: "the new value is no longer in the Secret".into(),
        };
    };
    let creds = match env.creds(&value.0) {
        Ok(c) => c,
        Err(e) => {
            return Report::Refused {
                reason: e.reason,
                message: e.message,
            };
        }
    };
    let v = env.ms.validate(&creds, false).await;
    match (v.outcome, v.aadsts_code) {
        (Outcome::Valid, _) => Report::Accepted,
        (Outcome::Rejected, Some(7000215)) => Report::NotYetAccepted("AADSTS7000215".into()),
        (Outcome::Unavailable, _) => Report::NotYetAccepted(format!(
            "Microsoft unavailable: {}",
            v.reason.unwrap_or("Unavailable")
        )),
        _ => Report::Refused {
            reason: v.reason.unwrap_or("Rejected").into(),
            message: v.message,
        },
    }
}

/// Whether a Deployment finished rolling out its current template.
fn rollout_gap(d: &Deployment) -> Option<String> {
    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let st = d.status.clone().unwrap_or_default();
    let name = d.name_any();
    if st.observed_generation.unwrap_or(0) < d.metadata.generation.unwrap_or(0) {
        return Some(format!(
            "Deployment {name}: the new template is not observed yet"
        ));
    }
    let (updated, available) = (
        st.updated_replicas.unwrap_or(0),
        st.available_replicas.unwrap_or(0),
    );
    (updated != want || available != want || st.replicas.unwrap_or(0) != want).then(|| {
        format!("Deployment {name}: {updated} of {want} replicas updated, {available} available")
    })
}

/// Evidence that every consumer uses the new value.
pub(super) async fn delivery(
    env: &Env<'_>,
    status: &MicrosoftMailIntegrationStatus,
    p: &RotationStatus,
) -> Result<Delivery, kube::Error> {
    let cond = |t: &str| status.conditions.iter().find(|c| c.type_ == t);
    let is_true = |t: &str| cond(t).is_some_and(|c| c.status == "True");
    let fp = status
        .last_validation
        .as_ref()
        .filter(|l| l.outcome == Outcome::Valid)
        .and_then(|l| l.credentials_fingerprint.clone());
    let data = env.secret_data().await?.unwrap_or_default();
    let current_is_new = data
        .get(&env.key)
        .is_some_and(|v| Some(env.fp(&v.0)) == p.current_secret_fingerprint);
    let new_in_use = current_is_new
        && is_true(condition::CREDENTIALS_VALID)
        && is_true(condition::INJECTED)
        && fp.is_some()
        && status
            .injected
            .iter()
            .all(|i| Some(&i.fingerprint) == fp.as_ref());
    let since: Option<Timestamp> = p.phase_since.as_deref().and_then(|t| t.parse().ok());
    let deployments: Api<Deployment> = Api::namespaced(env.client.clone(), &env.ns);
    let mut d = Delivery {
        new_in_use,
        ..Default::default()
    };
    for i in &status.injected {
        let Some(dep) = deployments.get_opt(&i.deployment).await? else {
            continue;
        };
        let template = dep
            .spec
            .as_ref()
            .and_then(|s| s.template.metadata.as_ref())
            .and_then(|m| m.annotations.clone())
            .unwrap_or_default();
        match i.rollout {
            Rollout::OnChange => {
                if template.get(FINGERPRINT_ANNOTATION) != fp.as_ref() {
                    d.rollouts_pending.push(format!(
                        "Deployment {}: the new configuration is not applied yet",
                        i.deployment
                    ));
                } else if let Some(gap) = rollout_gap(&dep) {
                    d.rollouts_pending.push(gap);
                }
            }
            Rollout::Manual => {
                let restarted = template
                    .get(RESTARTED_AT)
                    .and_then(|t| t.parse::<Timestamp>().ok());
                if restarted.is_none_or(|r| since.is_some_and(|s| r < s))
                    || rollout_gap(&dep).is_some()
                {
                    d.manual_pending.push(i.deployment.clone());
                }
            }
        }
    }
    d.nocobase_synced = env
        .mmi
        .spec
        .nocobase
        .as_ref()
        .map(|_| is_true(condition::NOCOBASE_SYNCED));
    d.mail_settings = mail_settings_hold(env.mmi, status, fp.as_deref());
    if d.mail_settings == Some(true) {
        d.mail_unconfirmed = status
            .mail_settings
            .as_ref()
            .map(|m| m.unconfirmed.clone())
            .unwrap_or_default();
    }
    Ok(d)
}

/// The email manager's settings, when the operator writes them, are one more consumer:
/// they hold the new value once their credentials fingerprint is the validated one.
fn mail_settings_hold(
    mmi: &crate::api::MicrosoftMailIntegration,
    status: &crate::api::MicrosoftMailIntegrationStatus,
    fp: Option<&str>,
) -> Option<bool> {
    let ms = mmi.spec.nocobase.as_ref()?.mail_settings.as_ref()?;
    ms.enabled.then(|| {
        let held = status.mail_settings.as_ref();
        held.is_some_and(|m| fp == Some(m.credentials_fingerprint.as_str()))
    })
}

/// removePassword for the old credential, once identified beyond doubt; then the previous
/// value leaves the Secret.
pub(super) async fn retire(
    env: &Env<'_>,
    p: &RotationStatus,
    data: &BTreeMap<String, ByteString>,
) -> Report {
    let failed = |e: GraphError| Report::RetireFailed {
        reason: e.reason,
        message: e.message,
    };
    let Some(current) = data.get(&env.key).map(|v| v.0.clone()) else {
        return Report::RetireFailed {
            reason: "SecretKeyNotFound".into(),
            message: "the Secret has no client secret".into(),
        };
    };
    let previous = data.get(&previous_key(&env.key)).map(|v| v.0.clone());
    let g = match env.graph(&current).await {
        Ok(g) => g,
        Err(e) => return failed(e),
    };
    let list = match g.passwords().await {
        Ok(l) => l,
        Err(e) => return failed(e),
    };
    let old_hint = previous.as_deref().map(hint);
    let (removed, note) = match rotation::old_credential(
        &list,
        old_hint.as_deref(),
        p.old_key_id.as_deref(),
        p.new_key_id.as_deref(),
        &hint(&current),
    ) {
        OldCredential::Remove(k) => {
            if let Err(e) = g.remove_password(&k).await {
                return failed(e);
            }
            info!(key_id = %k, "removePassword retired the old client secret");
            (Some(k), None)
        }
        OldCredential::Gone => (None, Some("it was already gone".to_owned())),
        OldCredential::Ambiguous(why) => {
            warn!("the old client secret was left in place: it cannot be identified beyond doubt");
            (None, Some(why))
        }
    };
    if previous.is_some()
        && let Err(e) = env.write_secret(&current, None).await
    {
        return Report::RetireFailed {
            reason: "SecretWriteFailed".into(),
            message: format!(
                "could not drop the previous value from the Secret ({})",
                kube_reason(&e)
            ),
        };
    }
    Report::Retired { removed, note }
}

/// Takes back a credential that was never delivered: the previous value returns to the
/// Secret, then the new credential (and any orphan of the attempt) is removed.
pub(super) async fn abandon(
    env: &Env<'_>,
    p: &RotationStatus,
    data: &BTreeMap<String, ByteString>,
) -> Report {
    let current = data.get(&env.key).map(|v| v.0.clone()).unwrap_or_default();
    let previous = data.get(&previous_key(&env.key)).map(|v| v.0.clone());
    let old_fp = p.old_secret_fingerprint.as_deref();
    let mut in_use = current.clone();
    if let Some(prev) = &previous
        && old_fp == Some(env.fp(prev).as_str())
        && old_fp != Some(env.fp(&current).as_str())
    {
        if let Err(e) = env.write_secret(prev, None).await {
            return Report::AbandonFailed(format!(
                "could not restore the previous value ({})",
                kube_reason(&e)
            ));
        }
        info!("the previous client secret is back in the Secret");
        in_use = prev.clone();
    }
    let g = match env.graph(&in_use).await {
        Ok(g) => g,
        Err(e) => return Report::AbandonFailed(e.message),
    };
    let list = match g.passwords().await {
        Ok(l) => l,
        Err(e) => return Report::AbandonFailed(e.message),
    };
    let in_use_fp = env.fp(&in_use);
    let seen = SecretSeen {
        current_fingerprint: &in_use_fp,
        current_hint: &hint(&in_use),
        previous_fingerprint: None,
    };
    let mut keys = match p.attempt_id.as_deref() {
        Some(a) => match rotation::orphans(&list, a, None, &seen) {
            Orphans::Remove(k) => k,
            Orphans::Adopt(_) => vec![],
        },
        None => vec![],
    };
    if let Some(k) = &p.new_key_id
        && !keys.contains(k)
        && list.iter().any(|c| {
            c.key_id.as_deref() == Some(k.as_str())
                && c.hint.as_deref() != Some(hint(&in_use).as_str())
        })
    {
        keys.push(k.clone());
    }
    for k in &keys {
        if let Err(e) = g.remove_password(k).await {
            return Report::AbandonFailed(e.message);
        }
        info!(key_id = %k, "removed the undelivered new credential");
    }
    Report::Abandoned
}
