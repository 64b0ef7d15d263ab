//! Folding a step's report into the next rotation status, Events and requeue.

use jiff::SignedDuration;

use super::{
    Delivery, Inputs, ROLLOUT_DEADLINE, Report, Step, Transition, VALIDATION_WINDOW, backoff,
    event, requested, secs, settings, ts, until,
};
use crate::api::{RotationPhase, RotationStatus};

/// Folds what the step achieved into the next status.
pub fn record(i: &Inputs<'_>, step: &Step, report: Option<Report>) -> Transition {
    let p = i.previous.clone();
    let now = i.now;
    let keep = |requeue| Transition {
        status: Some(p.clone()),
        events: vec![],
        requeue,
        outcome: None,
    };
    match (step, report) {
        (Step::Off, _) => Transition {
            // forget a finished rotation's bookkeeping only when nothing is owed
            status: None,
            events: vec![],
            requeue: None,
            outcome: None,
        },
        (Step::Blocked(reason, message), _) => blocked(&p, reason, message),
        (Step::NotPermitted(message), _) => not_permitted(&p, message),
        (Step::Wait(at), _) => keep(at.and_then(|at| until(now, at))),
        (
            _,
            Some(Report::Begun {
                attempt_id,
                old_fingerprint,
            }),
        ) => begun(i, attempt_id, old_fingerprint),
        (_, Some(r @ (Report::Created { .. } | Report::CreateFailed { .. }))) => created(i, r),
        (_, Some(r @ (Report::Accepted | Report::NotYetAccepted(_) | Report::Refused { .. }))) => {
            validated(i, r)
        }
        (_, Some(Report::Delivery(d))) => delivery(i, &d),
        (_, Some(r @ (Report::Retired { .. } | Report::RetireFailed { .. }))) => retired(i, r),
        (_, Some(Report::Abandoned)) => abandoned(i),
        (_, Some(Report::AbandonFailed(m))) => {
            let mut st = p.clone();
            st.message = Some(format!(
                "Could not yet take back the new credential ({m}); the old secret is still in use. Trying again."
            ));
            Transition {
                status: Some(st),
                events: vec![],
                requeue: secs(60),
                outcome: None,
            }
        }
        (_, None) => keep(secs(30)),
    }
}

fn blocked(p: &RotationStatus, reason: &str, message: &str) -> Transition {
    let mut st = p.clone();
    let first = st.reason.as_deref() != Some(reason);
    st.phase = RotationPhase::Idle;
    st.reason = Some(reason.into());
    st.message = Some(message.into());
    Transition {
        status: Some(st),
        events: if first {
            vec![event(true, reason, message.into())]
        } else {
            vec![]
        },
        requeue: None,
        outcome: None,
    }
}

/// Consent missing: the phase and everything in flight stay as they are; looked at again
/// when the Secret changes (its watch) or in five minutes (another integration's Secret).
fn not_permitted(p: &RotationStatus, message: &str) -> Transition {
    let reason = "RotationNotPermitted";
    let mut st = p.clone();
    let first = st.reason.as_deref() != Some(reason) || st.message.as_deref() != Some(message);
    st.reason = Some(reason.into());
    st.message = Some(message.into());
    Transition {
        status: Some(st),
        events: if first {
            vec![event(true, reason, message.into())]
        } else {
            vec![]
        },
        requeue: secs(300),
        outcome: None,
    }
}

fn begun(i: &Inputs<'_>, attempt_id: String, old_fingerprint: String) -> Transition {
    let p = i.previous;
    let st = RotationStatus {
        phase: RotationPhase::Creating,
        attempt_id: Some(attempt_id.clone()),
        phase_since: Some(i.now.to_string()),
        reason: Some("Rotating".into()),
        message: Some(format!(
            "Rotation {attempt_id} started: creating the next client secret through Microsoft Graph."
        )),
        old_secret_fingerprint: Some(old_fingerprint),
        handled_request: i
            .requested_at
            .map(str::to_owned)
            .or(p.handled_request.clone()),
        last_rotation_time: p.last_rotation_time.clone(),
        failures: p.failures,
        failing_since: p.failing_since.clone(),
        // the secret in use may be one a previous rotation created
        current_secret_fingerprint: p.current_secret_fingerprint.clone(),
        current_secret_expires_at: p.current_secret_expires_at.clone(),
        approval_seen: p.approval_seen.clone(),
        approval_seen_at: p.approval_seen_at.clone(),
        ..Default::default()
    };
    let why = if requested(i) {
        "a rotation was requested"
    } else {
        "the client secret expires within rotateBefore"
    };
    Transition {
        status: Some(st),
        events: vec![event(
            false,
            "RotationStarted",
            format!("Rotation {attempt_id} started because {why}."),
        )],
        requeue: secs(1),
        outcome: None,
    }
}

/// A failed attempt: the old secret stays; cleanup is owed while a new credential exists.
fn failed(i: &Inputs<'_>, st: &mut RotationStatus, reason: &str, message: String) -> Transition {
    st.phase = RotationPhase::Failed;
    st.failures = st.failures.saturating_add(1);
    st.failing_since.get_or_insert_with(|| i.now.to_string());
    st.retry_at = Some((i.now + backoff(st.failures)).to_string());
    st.reason = Some(reason.into());
    st.phase_since = Some(i.now.to_string());
    let next = if st.refused_lifetime.is_some() {
        "Not tried again until spec.rotation.lifetime changes or a rotation is requested."
            .to_owned()
    } else {
        format!(
            "Next attempt at {}.",
            st.retry_at.as_deref().unwrap_or_default()
        )
    };
    st.message = Some(format!(
        "{message} The old client secret stays in place and in use. {next}"
    ));
    Transition {
        status: Some(st.clone()),
        events: vec![event(true, reason, st.message.clone().unwrap_or_default())],
        requeue: secs(1),
        outcome: Some("Failed"),
    }
}

fn created(i: &Inputs<'_>, r: Report) -> Transition {
    let mut st = i.previous.clone();
    match r {
        Report::Created {
            new_key_id,
            new_expires_at,
            new_fingerprint,
            old_key_id,
            old_note,
            orphans_removed,
        } => {
            st.phase = RotationPhase::Validating;
            st.phase_since = Some(i.now.to_string());
            st.new_key_id = Some(new_key_id.clone());
            st.old_key_id = old_key_id;
            st.new_secret_fingerprint = Some(new_fingerprint);
            st.new_secret_expires_at = Some(new_expires_at.clone());
            let orphans = if orphans_removed > 0 {
                format!(
                    " {orphans_removed} credential(s) left by an interrupted attempt were removed first."
                )
            } else {
                String::new()
            };
            st.message = Some(format!(
                "New client secret {new_key_id} (expires {new_expires_at}) is stored in the Secret; asking Microsoft whether it works.{orphans}{}",
                old_note.map(|n| format!(" {n}")).unwrap_or_default()
            ));
            Transition {
                status: Some(st.clone()),
                events: vec![event(
                    false,
                    "NewSecretCreated",
                    st.message.clone().unwrap_or_default(),
                )],
                requeue: secs(1),
                outcome: None,
            }
        }
        Report::CreateFailed {
            reason,
            message,
            transient: true,
        } => {
            st.reason = Some(reason);
            st.failing_since.get_or_insert_with(|| i.now.to_string());
            st.message = Some(format!("{message} Trying again; nothing was delivered."));
            Transition {
                status: Some(st),
                events: vec![],
                requeue: secs(30),
                outcome: None,
            }
        }
        Report::CreateFailed {
            reason, message, ..
        } => {
            // nothing was created (or the orphan is owed: attempt ID kept for Abandon)
            st.refused_lifetime = (reason == "PolicyRefused")
                .then(|| i.spec.map(|s| s.lifetime.clone()))
                .flatten();
            failed(i, &mut st, &reason, message)
        }
        _ => unreachable!("created() only gets Created and CreateFailed"),
    }
}

fn validated(i: &Inputs<'_>, r: Report) -> Transition {
    let mut st = i.previous.clone();
    let since = ts(st.phase_since.as_deref()).unwrap_or(i.now);
    match r {
        Report::Accepted => {
            // from now on the Secret's value is the one in use
            st.current_secret_fingerprint = st.new_secret_fingerprint.clone();
            st.current_secret_expires_at = st.new_secret_expires_at.clone();
            st.phase = RotationPhase::Delivering;
            st.phase_since = Some(i.now.to_string());
            st.reason = Some("Delivering".into());
            st.message = Some("Microsoft accepts the new client secret; delivering it to the managed Secret, the Deployments and NocoBase.".into());
            Transition {
                status: Some(st.clone()),
                events: vec![event(
                    false,
                    "NewSecretAccepted",
                    st.message.clone().unwrap_or_default(),
                )],
                requeue: secs(1),
                outcome: None,
            }
        }
        Report::NotYetAccepted(why) if i.now < since + VALIDATION_WINDOW => {
            st.message = Some(format!(
                "Microsoft does not accept the new client secret yet ({why}); new secrets take a little while to propagate. Asking again until {}.",
                since + VALIDATION_WINDOW
            ));
            Transition {
                status: Some(st),
                events: vec![],
                requeue: secs(15),
                outcome: None,
            }
        }
        Report::NotYetAccepted(why) => failed(
            i,
            &mut st,
            "NewSecretNotAccepted",
            format!(
                "Microsoft still refused the new client secret 10 minutes after it was created ({why}); it is being removed."
            ),
        ),
        Report::Refused { reason, message } => failed(
            i,
            &mut st,
            "NewSecretNotAccepted",
            format!(
                "Microsoft refused the new client secret ({reason}: {message}); it is being removed."
            ),
        ),
        _ => unreachable!("validated() only gets validation reports"),
    }
}

/// What the rotation still waits for before the old secret may go, in words.
fn waits(d: &Delivery, approved: bool) -> Vec<(&'static str, String)> {
    let mut w = vec![];
    if !d.new_in_use {
        w.push((
            "Delivering",
            "the new secret to be validated and written to the managed Secret and the Deployments"
                .to_owned(),
        ));
    }
    if !d.rollouts_pending.is_empty() {
        w.push((
            "AwaitingRollout",
            format!(
                "rollouts to finish: {}",
                crate::quote::sentences(&d.rollouts_pending, "; ", 3)
            ),
        ));
    }
    if !d.manual_pending.is_empty() && !approved {
        w.push(("AwaitingManualRollout", format!(
            "you to restart the Deployments with rollout Manual (kubectl rollout restart deployment {}), or to approve with `nocobase-mail-operator rotate NAME --approve-retire`",
            crate::quote::list(&d.manual_pending, " ")
        )));
    }
    if d.nocobase_synced == Some(false) {
        w.push((
            "AwaitingNocoBase",
            "NocoBase's variables to hold the new secret".to_owned(),
        ));
    }
    if d.mail_settings == Some(false) {
        w.push((
            "AwaitingMailSettings",
            "the email manager's settings to hold the new secret".to_owned(),
        ));
    }
    if d.mail_settings == Some(true) && !d.mail_unconfirmed.is_empty() && !approved {
        w.push(("AwaitingRetireApproval", format!(
            "your approval: the operator wrote the new secret into the email manager's settings, but {} cannot be read back (hidden from reads), so it cannot confirm that mail uses it. Check that a mailbox still sends and receives (or that the Email settings page shows the new secret's first characters), then run `nocobase-mail-operator rotate NAME -n NS --approve-retire`",
            d.mail_unconfirmed.join(", ")
        )));
    }
    if d.mail_settings.is_none() && !approved {
        w.push(("AwaitingRetireApproval", "your approval: the email manager keeps its own copy of the client secret, which the operator does not write, so it cannot see whether mail already uses the new one. Put the new secret into NocoBase's email settings (or check that they use {{$env.…}}), then run `nocobase-mail-operator rotate NAME -n NS --approve-retire`".to_owned()));
    }
    w
}

fn delivery(i: &Inputs<'_>, d: &Delivery) -> Transition {
    let mut st = i.previous.clone();
    let since = ts(st.phase_since.as_deref()).unwrap_or(i.now);
    let approved = super::approved(i, since);
    let w = waits(d, approved);
    if w.is_empty() {
        let s = i.spec.and_then(|s| settings(s).ok());
        let after = s.map_or(SignedDuration::from_hours(24), |s| s.retire_after);
        let at = i.now + after;
        st.phase = RotationPhase::Retiring;
        st.phase_since = Some(i.now.to_string());
        st.retire_at = Some(at.to_string());
        st.reason = Some("Retiring".into());
        st.message = Some(format!(
            "Every consumer uses the new client secret; the old one is removed at {at} (retireAfter)."
        ));
        return Transition {
            status: Some(st.clone()),
            events: vec![event(
                false,
                "NewSecretDelivered",
                st.message.clone().unwrap_or_default(),
            )],
            requeue: until(i.now, at),
            outcome: None,
        };
    }
    let stuck = !d.rollouts_pending.is_empty() && i.now >= since + ROLLOUT_DEADLINE;
    let reason = if stuck { "RolloutStuck" } else { w[0].0 };
    let text: Vec<String> = w.iter().map(|(_, t)| t.clone()).collect();
    let message = format!(
        "The new client secret works; the old one stays valid until {}.{}",
        text.join("; and "),
        if stuck {
            " The rollout has not finished within an hour: check the Deployment's pods (kubectl rollout status)."
        } else {
            ""
        }
    );
    let changed = st.reason.as_deref() != Some(reason);
    st.reason = Some(reason.into());
    st.message = Some(message.clone());
    let events = if changed && (stuck || reason.starts_with("Awaiting")) {
        vec![event(stuck, reason, message)]
    } else {
        vec![]
    };
    let requeue = if d.rollouts_pending.is_empty() && d.new_in_use {
        secs(300)
    } else {
        secs(30)
    };
    Transition {
        status: Some(st),
        events,
        requeue,
        outcome: None,
    }
}

fn retired(i: &Inputs<'_>, r: Report) -> Transition {
    let mut st = i.previous.clone();
    match r {
        Report::Retired { removed, note } => {
            let what = match &removed {
                Some(k) => format!("the old client secret {k} was removed"),
                None => "the old client secret was not removed".to_owned(),
            };
            st = RotationStatus {
                phase: RotationPhase::Idle,
                last_rotation_time: Some(i.now.to_string()),
                handled_request: st.handled_request.clone(),
                current_secret_fingerprint: st.current_secret_fingerprint.clone(),
                current_secret_expires_at: st.current_secret_expires_at.clone(),
                old_key_id: removed.clone(),
                new_key_id: st.new_key_id.clone(),
                approval_seen: st.approval_seen.clone(),
                approval_seen_at: st.approval_seen_at.clone(),
                reason: Some("Rotated".into()),
                message: Some(format!(
                    "Rotated at {}: {what}{}. The secret in use expires at {}.",
                    i.now,
                    note.map(|n| format!(" ({n})")).unwrap_or_default(),
                    st.current_secret_expires_at
                        .as_deref()
                        .unwrap_or("an unknown time")
                )),
                ..Default::default()
            };
            Transition {
                status: Some(st.clone()),
                events: vec![event(
                    false,
                    "Rotated",
                    st.message.clone().unwrap_or_default(),
                )],
                requeue: secs(1),
                outcome: Some("Succeeded"),
            }
        }
        Report::RetireFailed { reason, message } => {
            let changed = st.reason.as_deref() != Some(reason.as_str());
            st.reason = Some(reason.clone());
            st.message = Some(format!(
                "Could not remove the old client secret yet ({message}); both secrets work meanwhile. Trying again."
            ));
            let events = if changed {
                vec![event(true, &reason, st.message.clone().unwrap_or_default())]
            } else {
                vec![]
            };
            Transition {
                status: Some(st),
                events,
                requeue: secs(300),
                outcome: None,
            }
        }
        _ => unreachable!("retired() only gets retirement reports"),
    }
}

fn abandoned(i: &Inputs<'_>) -> Transition {
    let mut st = i.previous.clone();
    let enabled = i.spec.is_some_and(|s| s.enabled);
    st.attempt_id = None;
    st.new_key_id = None;
    st.old_key_id = None;
    st.old_secret_fingerprint = None;
    if st.phase != RotationPhase::Failed {
        st.phase = if enabled {
            RotationPhase::Failed
        } else {
            RotationPhase::Idle
        };
        st.message = Some("Rotation was switched off during an attempt: the new credential was removed and the old secret is back in place.".into());
    }
    st.new_secret_fingerprint = None;
    st.new_secret_expires_at = None;
    Transition {
        status: Some(st),
        events: vec![],
        requeue: secs(1),
        outcome: None,
    }
}
