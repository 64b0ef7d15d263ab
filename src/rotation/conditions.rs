//! The `Rotated` condition, its folding into `Ready`, and the fold into a decision.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

use super::Transition;
use crate::api::{RotationPhase, RotationStatus, condition};
use crate::decide::{Cond, ConditionStatus, set_condition};

/// The `Rotated` condition for a rotation status.
pub fn condition_of(st: &RotationStatus) -> (&'static str, String, String) {
    let reason = st.reason.clone().unwrap_or_else(|| "NotDue".into());
    let message = st
        .message
        .clone()
        .unwrap_or_else(|| "No rotation is due yet.".into());
    let status = match (st.phase, reason.as_str()) {
        (RotationPhase::Failed, _) => "False",
        (
            _,
            "ExpiryUnknown" | "InvalidRotationSettings" | "RolloutStuck" | "RotationNotPermitted",
        ) => "False",
        (RotationPhase::Idle, _) if st.last_rotation_time.is_some() => "True",
        _ => "Unknown",
    };
    (status, reason, message)
}

/// Sets `Rotated` from the rotation status (removed when rotation is off), and folds a
/// failing rotation into `Ready` only when the secret is at risk: a warning window is open.
pub fn set_conditions(
    conditions: &mut Vec<Condition>,
    st: Option<&RotationStatus>,
    now: Timestamp,
    generation: Option<i64>,
) {
    let Some(st) = st else {
        conditions.retain(|c| c.type_ != condition::ROTATED);
        return;
    };
    let (status, reason, message) = condition_of(st);
    let cs = match status {
        "True" => ConditionStatus::True,
        "False" => ConditionStatus::False,
        _ => ConditionStatus::Unknown,
    };
    set_condition(
        conditions,
        condition::ROTATED,
        &Cond::new(cs, reason.clone(), message.clone()),
        now,
        generation,
    );
    let at_risk = conditions
        .iter()
        .any(|c| c.type_ == condition::SECRET_EXPIRING && c.status == "True");
    if status == "False" && at_risk {
        let ready = conditions
            .iter()
            .find(|c| c.type_ == condition::READY)
            .cloned();
        if let Some(r) = ready.filter(|r| r.status == "True") {
            let msg = format!(
                "Rotation is failing while the secret expires soon ({reason}): {message} {}",
                r.message
            );
            set_condition(
                conditions,
                condition::READY,
                &Cond::new(ConditionStatus::True, reason.clone(), msg),
                now,
                generation,
            );
        }
    }
}

/// Folds a rotation step into the reconcile's decision: status, conditions, Events and
/// the earlier of the two requeues.
pub fn fold(
    d: &mut crate::decide::Decision,
    t: Transition,
    now: Timestamp,
    generation: Option<i64>,
) {
    d.status.rotation = t.status;
    set_conditions(
        &mut d.status.conditions,
        d.status.rotation.as_ref(),
        now,
        generation,
    );
    d.events.extend(t.events);
    if let Some(r) = t.requeue {
        d.requeue_after = d.requeue_after.min(r);
    }
}
