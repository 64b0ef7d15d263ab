//! Zero-touch rotation of the client secret: the pure decision core.
//!
//! One step per reconcile. [`plan`] reads the recorded [`RotationStatus`], the spec, the
//! annotations and the clock and names the single step to take now; the reconciler does
//! that step's I/O (Graph, the Secret, Deployments) and describes what happened as a
//! [`Report`]; [`record`] turns the report into the next status, Events and requeue. All
//! state lives in status, the Secret and Entra, so a restart in any phase resumes from
//! there, and a credential created just before a crash is found again by the attempt ID in
//! its displayName. Never more than one attempt is in flight: a new one begins only from
//! `Idle` or `Failed`.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use crate::api::{RotationPhase, RotationSettings, RotationStatus};
use crate::decide::EventSpec;
use crate::expiry::parse_duration;

/// How long a new secret may be refused (AADSTS7000215 while it propagates) before the
/// rotation counts as failed.
pub const VALIDATION_WINDOW: SignedDuration = SignedDuration::from_mins(10);
/// A rollout not finished this long after delivery is reported as stuck (the old secret
/// stays valid meanwhile, so nothing breaks).
pub const ROLLOUT_DEADLINE: SignedDuration = SignedDuration::from_hours(1);
/// The key holding the value before the rotation in flight.
pub fn previous_key(key: &str) -> String {
    format!("{key}.previous")
}

/// Which key of the Secret holds the secret in use: while a new value is stored but not
/// yet proven (Creating, Validating, or a failed attempt not yet cleaned up), consumers keep
/// the previous one, when the Secret has it (`has`).
pub fn key_in_use(
    key: &str,
    rotation: Option<&RotationStatus>,
    has: impl Fn(&str) -> bool,
) -> String {
    let unproven = rotation.is_some_and(|r| match r.phase {
        RotationPhase::Creating | RotationPhase::Validating => true,
        RotationPhase::Failed => r.new_key_id.is_some() || r.attempt_id.is_some(),
        _ => false,
    });
    let prev = previous_key(key);
    if unproven && has(&prev) {
        prev
    } else {
        key.to_owned()
    }
}

/// displayName of each credential the operator creates, followed by the attempt ID.
pub const DISPLAY_NAME_PREFIX: &str = "nocobase-mail-operator rotation ";

/// Parsed `spec.rotation` durations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    pub rotate_before: SignedDuration,
    pub lifetime: SignedDuration,
    pub retire_after: SignedDuration,
}

/// The pure input checks of `spec.rotation` (the same as the CRD's CEL rules).
pub fn settings(r: &RotationSettings) -> Result<Settings, String> {
    let positive = |name: &str, v: &str| {
        parse_duration(v)
            .filter(|d| d.is_positive())
            .ok_or_else(|| {
                format!("spec.rotation.{name} must be a positive duration such as 24h, not {v:?}.")
            })
    };
    let s = Settings {
        rotate_before: positive("rotateBefore", &r.rotate_before)?,
        lifetime: positive("lifetime", &r.lifetime)?,
        retire_after: positive("retireAfter", &r.retire_after)?,
    };
    if s.retire_after < SignedDuration::from_mins(1) {
        return Err("spec.rotation.retireAfter must be at least 1m.".into());
    }
    if s.lifetime <= s.rotate_before {
        return Err("spec.rotation.lifetime must be longer than rotateBefore, or every new secret would be due for rotation at once.".into());
    }
    Ok(s)
}

/// What [`plan`] and [`record`] see.
pub struct Inputs<'a> {
    /// `spec.rotation`.
    pub spec: Option<&'a RotationSettings>,
    pub now: Timestamp,
    pub previous: &'a RotationStatus,
    /// Expiry of the secret in use, when known (see [`expiry_in_use`]).
    pub expires_at: Option<Timestamp>,
    /// The `rotate-requested-at` annotation, raw.
    pub requested_at: Option<&'a str>,
    /// The `retire-approved-at` annotation, raw.
    pub approved_at: Option<&'a str>,
}

/// The one step to take now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Rotation is off and nothing is in flight.
    Off,
    /// Rotation cannot start (reason, message): invalid settings, unknown expiry.
    Blocked(&'static str, String),
    /// Nothing to do before this instant (None: until something changes).
    Wait(Option<Timestamp>),
    /// Record a new attempt ID in status (before anything is created).
    Begin,
    /// Remove orphans of this attempt, addPassword, write the Secret.
    Create,
    /// Ask Microsoft whether the new secret works.
    Validate,
    /// See whether every consumer uses the new secret.
    CheckDelivery,
    /// removePassword for the old credential.
    Retire,
    /// Put the old value back and remove the new credential (it was never delivered).
    Abandon,
    /// The step due would add or remove a credential without the consent it needs
    /// ([`consent::guard`]): nothing happens, the phase stays, the message says what to
    /// annotate.
    NotPermitted(String),
}

/// Evidence that the new secret reached every consumer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Delivery {
    /// Microsoft accepted the new value as the current credentials, and the managed Secret
    /// and every target Deployment's configuration carry it.
    pub new_in_use: bool,
    /// OnChange Deployments whose rollout has not finished, with what is missing.
    pub rollouts_pending: Vec<String>,
    /// Manual Deployments not restarted since delivery.
    pub manual_pending: Vec<String>,
    /// NocoBase's variables hold the new value (None: no spec.nocobase).
    pub nocobase_synced: Option<bool>,
    /// The email manager's settings, written by the operator, hold it (None: the operator
    /// does not write them, so it cannot see which secret mail uses).
    pub mail_settings: Option<bool>,
    /// Fields of the email manager's settings the operator wrote but cannot read back
    /// (hidden from reads): "holds it" rests on NocoBase's answer to the write, so
    /// retirement waits for the user's approval.
    pub mail_unconfirmed: Vec<String>,
}

/// What the step's I/O achieved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Report {
    Begun {
        attempt_id: String,
        old_fingerprint: String,
    },
    Created {
        new_key_id: String,
        new_expires_at: String,
        new_fingerprint: String,
        old_key_id: Option<String>,
        /// What the old credential's identification found, when not a unique match.
        old_note: Option<String>,
        orphans_removed: usize,
    },
    /// A failure to create: `transient` ones (Graph unreachable, the Kubernetes API) are
    /// retried in place, the others fail the attempt.
    CreateFailed {
        reason: String,
        message: String,
        transient: bool,
    },
    Accepted,
    /// AADSTS7000215 while the secret propagates, or Microsoft unreachable.
    NotYetAccepted(String),
    /// Microsoft refused the new secret for another reason.
    Refused {
        reason: String,
        message: String,
    },
    Delivery(Delivery),
    /// The old credential is gone (Some: this key was removed now) or left (the note says why).
    Retired {
        removed: Option<String>,
        note: Option<String>,
    },
    /// Graph refused or could not be reached; tried again later.
    RetireFailed {
        reason: String,
        message: String,
    },
    Abandoned,
    AbandonFailed(String),
}

/// The next rotation status, Events, when to look again, and a metrics outcome.
#[derive(Clone, Debug, PartialEq)]
pub struct Transition {
    pub status: Option<RotationStatus>,
    pub events: Vec<EventSpec>,
    pub requeue: Option<Duration>,
    /// `Succeeded` or `Failed` when a rotation ended this round (for the counter).
    pub outcome: Option<&'static str>,
}

pub(crate) fn ts(s: Option<&str>) -> Option<Timestamp> {
    s.and_then(|s| s.parse().ok())
}

/// The expiry of the secret in use: the endDateTime the operator asked for when the value
/// in the Secret is the one it created (a stated spec date describes the secret the user
/// gave, not this one), else what status knows.
pub fn expiry_in_use(
    rotation: Option<&RotationStatus>,
    current_fingerprint: Option<&str>,
    known: Option<Timestamp>,
) -> Option<Timestamp> {
    match rotation {
        Some(r)
            if current_fingerprint.is_some()
                && r.current_secret_fingerprint.as_deref() == current_fingerprint =>
        {
            ts(r.current_secret_expires_at.as_deref()).or(known)
        }
        _ => known,
    }
}

/// A rotation request newer than the last one handled and the last rotation, and not in
/// the future (a request dated ahead counts from that time on, not at once).
pub(crate) fn requested(i: &Inputs<'_>) -> bool {
    let Some(at) = ts(i.requested_at).filter(|at| *at <= i.now) else {
        return false;
    };
    let p = i.previous;
    let handled = ts(p.handled_request.as_deref());
    let last = ts(p.last_rotation_time.as_deref());
    handled.is_none_or(|h| at > h) && last.is_none_or(|l| at > l)
}

pub fn plan(i: &Inputs<'_>) -> Step {
    let p = i.previous;
    let enabled = i.spec.is_some_and(|s| s.enabled);
    match p.phase {
        // switched off mid-way: what was never delivered is taken back
        RotationPhase::Creating | RotationPhase::Validating if !enabled => Step::Abandon,
        RotationPhase::Failed if p.new_key_id.is_some() || p.attempt_id.is_some() => Step::Abandon,
        _ if !enabled => Step::Off,
        RotationPhase::Creating => Step::Create,
        RotationPhase::Validating => Step::Validate,
        RotationPhase::Delivering => Step::CheckDelivery,
        RotationPhase::Retiring => match ts(p.retire_at.as_deref()) {
            Some(at) if at > i.now => Step::Wait(Some(at)),
            _ => Step::Retire,
        },
        RotationPhase::Idle | RotationPhase::Failed => plan_start(i),
    }
}

fn plan_start(i: &Inputs<'_>) -> Step {
    let s = match settings(i.spec.expect("enabled implies a spec")) {
        Ok(s) => s,
        Err(m) => return Step::Blocked("InvalidRotationSettings", m),
    };
    let Some(expires) = i.expires_at else {
        return Step::Blocked(
            "ExpiryUnknown",
            "Rotation needs the expiry of the secret in use: state spec.secretExpiry.expiresAt, or let the app read its registration in Microsoft Graph. Nothing was created.".into(),
        );
    };
    if requested(i) {
        return Step::Begin;
    }
    let ahead = ts(i.requested_at).filter(|at| *at > i.now);
    // the same request would be refused the same way: wait for a new lifetime
    let p = i.previous;
    if p.phase == RotationPhase::Failed
        && p.refused_lifetime.is_some()
        && p.refused_lifetime.as_deref() == i.spec.map(|s| s.lifetime.as_str())
    {
        return Step::Wait(None);
    }
    let due = expires - s.rotate_before;
    let retry = ts(i.previous.retry_at.as_deref()).filter(|r| *r > i.now);
    match (due <= i.now, retry) {
        (true, None) => Step::Begin,
        (true, Some(r)) => Step::Wait(Some(r)),
        // a request dated ahead is looked at again when its time comes
        (false, _) => Step::Wait(Some(ahead.map_or(due, |a| a.min(due)))),
    }
}

/// Remembers when the operator first saw the current `retire-approved-at` value in the
/// integration it reconciles (the watch's copy): an approval counts only when it was seen
/// after delivery began, so a value set in advance, or dated ahead, approves nothing.
pub fn observe_approval(st: &mut RotationStatus, approved_at: Option<&str>, now: Timestamp) {
    match approved_at {
        None => {
            st.approval_seen = None;
            st.approval_seen_at = None;
        }
        Some(v) if st.approval_seen.as_deref() != Some(v) => {
            st.approval_seen = Some(v.to_owned());
            st.approval_seen_at = Some(now.to_string());
        }
        Some(_) => {}
    }
}

/// Whether `retire-approved-at` approves retiring in the phase that began at `since`: its
/// time is not in the future, not before `since`, and the operator saw this value only
/// after `since` ([`observe_approval`]).
pub fn approved(i: &Inputs<'_>, since: Timestamp) -> bool {
    let Some(at) = ts(i.approved_at) else {
        return false;
    };
    let p = i.previous;
    let seen = (p.approval_seen.as_deref() == i.approved_at)
        .then(|| ts(p.approval_seen_at.as_deref()))
        .flatten();
    at <= i.now && at >= since && seen.is_some_and(|s| s >= since)
}

/// Backoff after a failed attempt: 5 min doubling to 6 h.
pub fn backoff(failures: i32) -> SignedDuration {
    let mins = 5i64.saturating_mul(1i64 << (failures.clamp(1, 8) - 1));
    SignedDuration::from_mins(mins.min(360))
}

pub(crate) fn event(warning: bool, reason: &str, note: String) -> EventSpec {
    EventSpec {
        warning,
        reason: reason.into(),
        note,
        action: "RotateSecret",
    }
}

pub(crate) fn secs(d: u64) -> Option<Duration> {
    Some(Duration::from_secs(d))
}

pub(crate) fn until(now: Timestamp, at: Timestamp) -> Option<Duration> {
    let d = at.duration_since(now).as_secs().max(1);
    Some(Duration::from_secs(u64::try_from(d).unwrap_or(1)))
}

mod conditions;
pub mod consent;
mod credentials;
mod record;

pub use conditions::{condition_of, fold, set_conditions};
pub use credentials::{
    OldCredential, Orphans, SecretSeen, display_name, identify, old_credential, orphans,
};
pub use record::record;
