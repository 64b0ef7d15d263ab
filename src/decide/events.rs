//! Events, on transitions only: each is decided from the previous conditions and records,
//! so a resync (or a restart) never repeats one. Pure.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

use super::conditions::{Cond, RENEW};
use super::{ConditionStatus, EventSpec, InjectionReport, MailSettingsReport, NocoBaseReport};
use crate::api::{LastUnavailable, MicrosoftMailIntegrationStatus as Status, condition};
use crate::expiry::{self, Assessment, Stage};

/// The API server refuses an Event whose note is longer than this many bytes
/// (`events.k8s.io/v1`, `NoteLengthLimit`).
pub const EVENT_NOTE_MAX_BYTES: usize = 1024;

/// `note` cut to [`EVENT_NOTE_MAX_BYTES`] at a character boundary: a message in a language
/// written outside ASCII takes two to four bytes per character, and an Event over the limit
/// is refused whole.
pub fn event_note(note: &str) -> String {
    if note.len() <= EVENT_NOTE_MAX_BYTES {
        return note.to_owned();
    }
    let mut end = EVENT_NOTE_MAX_BYTES - '…'.len_utf8();
    while !note.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &note[..end])
}

fn warning(reason: &str, note: impl Into<String>, action: &'static str) -> EventSpec {
    EventSpec {
        warning: true,
        reason: reason.into(),
        note: note.into(),
        action,
    }
}

fn old<'a>(previous: &'a Status, type_: &str) -> Option<&'a Condition> {
    previous.conditions.iter().find(|c| c.type_ == type_)
}

/// A Warning when a condition becomes False or changes its False reason.
fn failure_transition(
    previous: &Status,
    type_: &str,
    now: &Cond,
    action: &'static str,
) -> Option<EventSpec> {
    let before = old(previous, type_);
    (now.status == ConditionStatus::False
        && before.is_none_or(|c| c.status != "False" || c.reason != now.reason))
    .then(|| warning(&now.reason, &now.message, action))
}

/// The expiry windows to announce (the narrowest newly reached one, or `SecretExpired`),
/// once per expiry date; returns them with the updated list of announced windows.
pub fn expiry_events(
    a: &Assessment,
    previous: &Status,
    now: Timestamp,
) -> (Vec<EventSpec>, Vec<String>) {
    let expires_str = a.expires_at.map(|t| t.to_string());
    let previous_expiry = previous.secret_expiry.clone().unwrap_or_default();
    let mut announced = if previous_expiry.expires_at == expires_str {
        previous_expiry.windows_announced
    } else {
        vec![]
    };
    let mut events = Vec::new();
    let Some(at) = a.expires_at.filter(|_| a.stage != Stage::Unknown) else {
        return (events, announced);
    };
    let expired_announced = announced.iter().any(|w| w == "expired");
    if a.stage == Stage::Expired {
        if !expired_announced {
            events.push(warning(
                "SecretExpired",
                format!("The client secret expired at {at}. {RENEW}"),
                "CheckExpiry",
            ));
        }
    } else if let Some(newest) = a
        .reached
        .iter()
        .rev()
        .find(|w| !announced.contains(&w.spec))
    {
        events.push(warning(
            &newest.reason(),
            format!(
                "The client secret expires at {at} ({}). {RENEW}",
                expiry::human_until(now, at)
            ),
            "CheckExpiry",
        ));
    }
    for w in &a.reached {
        if !announced.contains(&w.spec) {
            announced.push(w.spec.clone());
        }
    }
    if a.stage == Stage::Expired && !expired_announced {
        announced.push("expired".into());
    }
    (events, announced)
}

/// `CredentialsValid` transitions: a Warning for each new refusal, Normal
/// `CredentialsValid` on the first success and `CredentialsRecovered` after a failure.
pub fn credentials_event(previous: &Status, cv: &Cond) -> Option<EventSpec> {
    let before = old(previous, condition::CREDENTIALS_VALID);
    match cv.status {
        ConditionStatus::False => failure_transition(
            previous,
            condition::CREDENTIALS_VALID,
            cv,
            "ValidateCredentials",
        ),
        ConditionStatus::True if before.is_none_or(|c| c.status != "True") => Some(EventSpec {
            warning: false,
            reason: if before.is_some_and(|c| c.status == "False") {
                "CredentialsRecovered"
            } else {
                "CredentialsValid"
            }
            .into(),
            note: "Microsoft accepted the client ID and client secret.".into(),
            action: "ValidateCredentials",
        }),
        _ => None,
    }
}

/// `MicrosoftUnavailable`, once per outage (while no failure was recorded before).
pub fn unavailable_event(
    previous: &Status,
    pending: Option<&LastUnavailable>,
) -> Option<EventSpec> {
    let u = pending.filter(|_| previous.last_unavailable.is_none())?;
    Some(warning(
        "MicrosoftUnavailable",
        format!(
            "No verdict from Microsoft ({}): {} Retrying at {}.",
            u.reason, u.message, u.retry_at
        ),
        "ValidateCredentials",
    ))
}

/// An injection problem, when it is new.
pub fn injection_event(previous: &Status, injected: &Cond) -> Option<EventSpec> {
    failure_transition(previous, condition::INJECTED, injected, "Inject")
}

/// One Warning per Deployment that had the configuration and was deleted. Once: the next
/// round's status no longer lists it as injected.
pub fn target_deleted_events(injection: &InjectionReport) -> Vec<EventSpec> {
    injection
        .disappeared
        .iter()
        .map(|d| {
            warning(
                "TargetDeleted",
                format!("Deployment {d}, which received the configuration, was deleted; nothing is left to give back. It is injected again if it comes back and is still targeted."),
                "Inject",
            )
        })
        .collect()
}

/// A NocoBase problem when it is new, and a Normal `NocoBaseUpdated` after writes.
pub fn nocobase_events(previous: &Status, nb: &NocoBaseReport) -> Vec<EventSpec> {
    let cond = Cond::new(nb.status, &nb.reason, &nb.message);
    let mut events: Vec<EventSpec> =
        failure_transition(previous, condition::NOCOBASE_SYNCED, &cond, "SyncNocoBase")
            .into_iter()
            .collect();
    if nb.writes > 0 {
        events.push(EventSpec {
            warning: false,
            reason: "NocoBaseUpdated".into(),
            note: format!(
                "Wrote {} variable(s) into NocoBase's Variables and secrets.",
                nb.writes
            ),
            action: "SyncNocoBase",
        });
    }
    events
}

/// A Normal `recovered` when a condition turns True after False.
fn recovery(
    previous: &Status,
    type_: &str,
    now: &Cond,
    recovered: &str,
    action: &'static str,
) -> Option<EventSpec> {
    let before = old(previous, type_);
    (now.status == ConditionStatus::True && before.is_some_and(|c| c.status == "False")).then(
        || EventSpec {
            warning: false,
            reason: recovered.to_owned(),
            note: now.message.clone(),
            action,
        },
    )
}

/// `MailSettingsSynced` transitions, and `MailSettingsUpdated` for a round that wrote.
pub fn mail_settings_events(previous: &Status, ms: &MailSettingsReport) -> Vec<EventSpec> {
    let cond = Cond::new(ms.status, &ms.reason, &ms.message);
    let t = condition::MAIL_SETTINGS_SYNCED;
    let mut events: Vec<EventSpec> = failure_transition(previous, t, &cond, "SyncMailSettings")
        .into_iter()
        .chain(recovery(
            previous,
            t,
            &cond,
            "MailSettingsSynced",
            "SyncMailSettings",
        ))
        .collect();
    if ms.writes > 0 {
        events.push(EventSpec {
            warning: false,
            reason: "MailSettingsUpdated".into(),
            note: format!(
                "Wrote {} field(s) of the email manager's settings. {}",
                ms.writes, ms.message
            ),
            action: "SyncMailSettings",
        });
    }
    events
}

/// `AppRegistrationReady` transitions.
pub fn app_registration_event(previous: &Status, c: &Cond) -> Option<EventSpec> {
    let t = condition::APP_REGISTRATION_READY;
    failure_transition(previous, t, c, "CheckAppRegistration").or_else(|| {
        recovery(
            previous,
            t,
            c,
            "AppRegistrationReady",
            "CheckAppRegistration",
        )
    })
}

/// The Events of NocoBase's variables, the email manager's settings and the app
/// registration check.
pub fn email_manager_events(
    previous: &Status,
    nb: Option<&NocoBaseReport>,
    ms: Option<&MailSettingsReport>,
    appreg: Option<&Cond>,
) -> Vec<EventSpec> {
    let mut out = nb.map(|n| nocobase_events(previous, n)).unwrap_or_default();
    out.extend(
        ms.into_iter()
            .flat_map(|m| mail_settings_events(previous, m)),
    );

    out.extend(appreg.and_then(|r| app_registration_event(previous, r)));
    out
}
