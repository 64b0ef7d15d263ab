//! The decision core (pure): observed state + clock + validation result -> desired status,
//! Events and the next reconcile. No I/O happens here, so every transition is testable
//! with a fixed clock, and deciding again on its own output changes nothing.
//!
//! The chain that sets `Ready` is ordered like cert-manager's trigger policies: the first
//! check that fails gives the one reason and message an administrator reads first.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::api::{
    ExpirySource, InjectedTarget, LastUnavailable, LastValidation, MicrosoftMailIntegrationSpec,
    MicrosoftMailIntegrationStatus, SecretExpiryStatus, condition,
};
use crate::expiry::{self, Stage};
use crate::microsoft::classify::MAX_RETRY_AFTER;
use crate::microsoft::{Outcome, Verdict};

/// What reading the referenced Secret gave.
#[derive(Clone, Debug, PartialEq)]
pub enum CredentialCheck {
    /// Usable credentials with this fingerprint.
    Ready { fingerprint: String },
    /// Missing Secret, missing key, empty or damaged value, ...: nothing is sent.
    Problem { reason: String, message: String },
}

/// What injection into the targets achieved (decided by the injection plan).
#[derive(Clone, Debug, PartialEq)]
pub struct InjectionReport {
    /// "True", "False" or "Unknown".
    pub status: &'static str,
    pub reason: String,
    pub message: String,
    pub injected: Vec<InjectedTarget>,
}

impl InjectionReport {
    pub fn no_targets() -> Self {
        Self {
            status: "True",
            reason: "NoTargets".into(),
            message: "No targets: the credentials are validated and watched, and injected nowhere."
                .into(),
            injected: vec![],
        }
    }
}

/// What the NocoBase sync achieved this round (only with `spec.nocobase`).
#[derive(Clone, Debug, PartialEq)]
pub struct NocoBaseReport {
    /// "True", "False" or "Unknown".
    pub status: &'static str,
    pub reason: String,
    pub message: String,
    pub state: crate::nocobase::SyncedState,
    /// Variables written this round (a Normal Event says so).
    pub writes: usize,
    /// A transient failure (NocoBase down or restarting): ask again soon.
    pub retry_soon: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventSpec {
    pub warning: bool,
    pub reason: String,
    pub note: String,
    pub action: &'static str,
}

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

pub struct Inputs<'a> {
    pub spec: &'a MicrosoftMailIntegrationSpec,
    pub generation: Option<i64>,
    pub previous: &'a MicrosoftMailIntegrationStatus,
    pub now: Timestamp,
    pub credentials: &'a CredentialCheck,
    /// A validation made in this reconcile, if one was due.
    pub attempt: Option<&'a Verdict>,
    pub injection: &'a InjectionReport,
    /// `None` when `spec.nocobase` is not set.
    pub nocobase: Option<&'a NocoBaseReport>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub status: MicrosoftMailIntegrationStatus,
    pub events: Vec<EventSpec>,
    pub requeue_after: Duration,
}

/// The validation interval of the spec (admission guarantees it parses; 6h otherwise).
pub fn interval(spec: &MicrosoftMailIntegrationSpec) -> SignedDuration {
    expiry::parse_duration(&spec.validation.interval)
        .filter(|d| *d >= SignedDuration::from_secs(60))
        .unwrap_or(SignedDuration::from_hours(6))
}

fn parse_ts(s: &str) -> Option<Timestamp> {
    s.parse().ok()
}

/// When Microsoft should next be asked about the credentials with `fingerprint`:
/// `None` means now (changed credentials, interval elapsed, or a retry is due).
pub fn validation_due(
    spec: &MicrosoftMailIntegrationSpec,
    previous: &MicrosoftMailIntegrationStatus,
    fingerprint: &str,
    now: Timestamp,
) -> Option<Timestamp> {
    let same = |fp: &Option<String>| fp.as_deref() == Some(fingerprint);
    if let Some(u) = previous
        .last_unavailable
        .as_ref()
        .filter(|u| same(&u.credentials_fingerprint))
        && let Some(at) = parse_ts(&u.retry_at).filter(|at| *at > now)
    {
        return Some(at);
    }
    let last = previous
        .last_validation
        .as_ref()
        .filter(|l| same(&l.credentials_fingerprint))?;
    let due = expiry::add_saturating(parse_ts(&last.time)?, interval(spec));
    (due > now).then_some(due)
}

/// Backoff for retries after an Unavailable answer: 30 s doubling to 10 min, never sooner
/// than Microsoft's Retry-After (itself at most an hour, whatever the header said).
pub fn retry_delay(failures: i32, retry_after: Option<Duration>) -> SignedDuration {
    let exp = 30i64
        .saturating_mul(1i64 << (failures.clamp(1, 6) - 1))
        .min(600);
    let ra = retry_after.map_or(0, |d| d.min(MAX_RETRY_AFTER).as_secs() as i64);
    SignedDuration::from_secs(exp.max(ra))
}

pub fn decide(i: &Inputs<'_>) -> Decision {
    let now = i.now;
    let fp = match i.credentials {
        CredentialCheck::Ready { fingerprint } => Some(fingerprint.as_str()),
        CredentialCheck::Problem { .. } => None,
    };
    let same = |f: &Option<String>| fp.is_some() && f.as_deref() == fp;

    // 1. Fold a fresh attempt into the records of the last verdict and the last failure.
    let mut last = i.previous.last_validation.clone();
    let mut unavailable = i.previous.last_unavailable.clone();
    if let (Some(v), Some(fp)) = (i.attempt, fp) {
        // an answer shared from another integration's request is recorded at its own time
        let asked = v
            .asked_at
            .and_then(|t| Timestamp::from_second(t.as_second()).ok())
            .map_or(now, |t| t.min(now));
        match v.outcome {
            Outcome::Valid | Outcome::Rejected => {
                last = Some(LastValidation {
                    time: asked.to_string(),
                    outcome: v.outcome.as_str().into(),
                    reason: v.reason.map(str::to_owned),
                    aadsts_code: v.aadsts_code,
                    message: Some(match &v.hint {
                        Some(h) => format!("{} Next step: {h}", v.message),
                        None => v.message.clone(),
                    }),
                    missing_permissions: v.graph.missing_permissions.clone().unwrap_or_default(),
                    graph_expires_at: v.graph.expiry.expires_at.map(|t| t.to_string()),
                    expiry_note: v.graph.expiry.note.clone(),
                    credentials_fingerprint: Some(fp.to_owned()),
                });
                unavailable = None;
            }
            Outcome::Unavailable | Outcome::InvalidInput => {
                let failures = unavailable
                    .as_ref()
                    .filter(|u| u.credentials_fingerprint.as_deref() == Some(fp))
                    .map_or(1, |u| u.failures.saturating_add(1));
                unavailable = Some(LastUnavailable {
                    time: asked.to_string(),
                    reason: v.reason.unwrap_or("Unavailable").into(),
                    message: v.message.clone(),
                    failures,
                    retry_at: expiry::add_saturating(now, retry_delay(failures, v.retry_after))
                        .to_string(),
                    credentials_fingerprint: Some(fp.to_owned()),
                });
            }
        }
    }
    let verdict = last.as_ref().filter(|l| same(&l.credentials_fingerprint));
    let pending = unavailable
        .as_ref()
        .filter(|u| same(&u.credentials_fingerprint));
    let unavailable_note = pending.map(|u| {
        format!(
            " The last check at {} reached no verdict ({}: {}); next try at {}.",
            u.time, u.reason, u.message, u.retry_at
        )
    });

    // 2. CredentialsValid.
    let (cv_status, cv_reason, cv_message) = match (i.credentials, verdict, pending) {
        (CredentialCheck::Problem { reason, message }, _, _) => {
            ("False", reason.clone(), message.clone())
        }
        (_, Some(l), _) if l.outcome == "Valid" => (
            "True",
            "Valid".to_owned(),
            format!(
                "Microsoft accepted the client ID and client secret at {}.{}",
                l.time,
                unavailable_note.clone().unwrap_or_default()
            ),
        ),
        (_, Some(l), _) => (
            "False",
            l.reason.clone().unwrap_or_else(|| "Rejected".into()),
            format!(
                "Microsoft rejected the credentials at {}{}: {}",
                l.time,
                l.aadsts_code
                    .map(|c| format!(" (AADSTS{c})"))
                    .unwrap_or_default(),
                l.message.as_deref().unwrap_or("no detail")
            ),
        ),
        (_, None, Some(u)) => (
            "Unknown",
            u.reason.clone(),
            format!(
                "Microsoft could not be asked yet: {} Next try at {}.",
                u.message, u.retry_at
            ),
        ),
        (_, None, None) => (
            "Unknown",
            "Validating".into(),
            "Waiting for the first answer from Microsoft.".into(),
        ),
    };

    // 3. Expiry.
    let spec_at = i
        .spec
        .secret_expiry
        .expires_at
        .as_deref()
        .and_then(parse_ts);
    let graph_at = verdict
        .filter(|_| i.spec.secret_expiry.discover_from_graph)
        .and_then(|l| l.graph_expires_at.as_deref())
        .and_then(parse_ts);
    let windows = expiry::windows(&i.spec.secret_expiry.warn_before);
    let a = expiry::assess(spec_at, graph_at, &windows, now);
    let expires_str = a.expires_at.map(|t| t.to_string());
    let previous_expiry = i.previous.secret_expiry.clone().unwrap_or_default();
    let mut announced = if previous_expiry.expires_at == expires_str {
        previous_expiry.windows_announced.clone()
    } else {
        vec![]
    };
    let source_text = match a.source {
        Some(ExpirySource::Spec) => match graph_at {
            Some(g) if Some(g) != spec_at => {
                format!("stated in spec.secretExpiry.expiresAt; Microsoft Graph reports {g}")
            }
            _ => "stated in spec.secretExpiry.expiresAt".to_owned(),
        },
        Some(ExpirySource::Graph) => "read from Microsoft Graph".to_owned(),
        None => String::new(),
    };
    let renew = "Create a new client secret in App registrations > Certificates & secrets, store its Value in the Secret, and update secretExpiry.expiresAt.";
    let (se_status, se_reason, se_message) = match (&a.stage, a.expires_at) {
        (Stage::Unknown, _) => (
            "Unknown",
            "ExpiryUnknown".to_owned(),
            format!(
                "The client secret's expiry is unknown{}. State spec.secretExpiry.expiresAt, or grant the app the Application.Read.All application permission so Microsoft Graph can tell.",
                verdict
                    .and_then(|l| l.expiry_note.as_deref())
                    .map(|n| format!(" ({n})"))
                    .unwrap_or_default()
            ),
        ),
        (Stage::Fine, Some(at)) => (
            "False",
            "NotExpiringSoon".to_owned(),
            format!("The client secret expires at {at} ({source_text})."),
        ),
        (Stage::Within(w), Some(at)) => (
            "True",
            w.reason(),
            format!(
                "The client secret expires at {at} ({source_text}), within {}. {renew}",
                w.label().to_lowercase()
            ),
        ),
        (Stage::Expired, Some(at)) => (
            "True",
            "SecretExpired".to_owned(),
            format!("The client secret expired at {at} ({source_text}). {renew}"),
        ),
        (_, None) => unreachable!("a known stage always has a date"),
    };

    // 4. Events for newly reached windows: the narrowest one, once per expiry date.
    let mut events = Vec::new();
    if let (Some(at), false) = (a.expires_at, matches!(a.stage, Stage::Unknown)) {
        if a.stage == Stage::Expired {
            if !announced.iter().any(|w| w == "expired") {
                events.push(EventSpec {
                    warning: true,
                    reason: "SecretExpired".into(),
                    note: format!("The client secret expired at {at}. {renew}"),
                    action: "CheckExpiry",
                });
            }
        } else if let Some(newest) = a
            .reached
            .iter()
            .rev()
            .find(|w| !announced.contains(&w.spec))
        {
            events.push(EventSpec {
                warning: true,
                reason: newest.reason(),
                note: format!(
                    "The client secret expires at {at} ({}). {renew}",
                    expiry::human_until(now, at)
                ),
                action: "CheckExpiry",
            });
        }
        for w in &a.reached {
            if !announced.contains(&w.spec) {
                announced.push(w.spec.clone());
            }
        }
        if a.stage == Stage::Expired && !announced.iter().any(|w| w == "expired") {
            announced.push("expired".into());
        }
    }

    // 5. Ready: the first failing check wins.
    let inj = i.injection;
    let (ready_status, ready_reason, ready_message) = if cv_status == "False" {
        ("False", cv_reason.clone(), cv_message.clone())
    } else if a.stage == Stage::Expired {
        ("False", "SecretExpired".to_owned(), se_message.clone())
    } else if cv_status == "Unknown" {
        ("Unknown", cv_reason.clone(), cv_message.clone())
    } else if inj.status != "True" {
        (inj.status, inj.reason.clone(), inj.message.clone())
    } else if let Some(nb) = i.nocobase.filter(|nb| nb.status != "True") {
        (nb.status, nb.reason.clone(), nb.message.clone())
    } else {
        let mut msg = format!("Microsoft accepts the credentials. {}", inj.message);
        if let Some(missing) = verdict
            .map(|l| &l.missing_permissions)
            .filter(|m| !m.is_empty())
        {
            msg.push_str(&format!(
                " Warning: the app registration lacks delegated Graph permissions the email manager needs: {}.",
                missing.join(", ")
            ));
        }
        match &a.stage {
            Stage::Within(w) => ("True", w.reason(), format!("{msg} {se_message}")),
            _ => ("True", "Ready".to_owned(), msg),
        }
    };

    // 6. Events for CredentialsValid transitions.
    let old = |t: &str| i.previous.conditions.iter().find(|c| c.type_ == t);
    let old_cv = old(condition::CREDENTIALS_VALID);
    match cv_status {
        "False" if old_cv.is_none_or(|c| c.status != "False" || c.reason != cv_reason) => events
            .insert(
                0,
                EventSpec {
                    warning: true,
                    reason: cv_reason.clone(),
                    note: cv_message.clone(),
                    action: "ValidateCredentials",
                },
            ),
        "True" if old_cv.is_none_or(|c| c.status != "True") => events.insert(
            0,
            EventSpec {
                warning: false,
                reason: if old_cv.is_some_and(|c| c.status == "False") {
                    "CredentialsRecovered"
                } else {
                    "CredentialsValid"
                }
                .into(),
                note: "Microsoft accepted the client ID and client secret.".into(),
                action: "ValidateCredentials",
            },
        ),
        _ => {}
    }
    if let (Some(u), true) = (pending, i.previous.last_unavailable.is_none()) {
        events.push(EventSpec {
            warning: true,
            reason: "MicrosoftUnavailable".into(),
            note: format!(
                "No verdict from Microsoft ({}): {} Retrying at {}.",
                u.reason, u.message, u.retry_at
            ),
            action: "ValidateCredentials",
        });
    }
    let old_inj = old(condition::INJECTED);
    if inj.status == "False"
        && old_inj.is_none_or(|c| c.status != "False" || c.reason != inj.reason)
    {
        events.push(EventSpec {
            warning: true,
            reason: inj.reason.clone(),
            note: inj.message.clone(),
            action: "Inject",
        });
    }

    if let Some(nb) = i.nocobase {
        let old_nb = old(condition::NOCOBASE_SYNCED);
        if nb.status == "False"
            && old_nb.is_none_or(|c| c.status != "False" || c.reason != nb.reason)
        {
            events.push(EventSpec {
                warning: true,
                reason: nb.reason.clone(),
                note: nb.message.clone(),
                action: "SyncNocoBase",
            });
        }
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
    }

    // 7. Status.
    let mut conditions = i.previous.conditions.clone();
    let g = i.generation;
    set_condition(
        &mut conditions,
        condition::READY,
        ready_status,
        &ready_reason,
        &ready_message,
        now,
        g,
    );
    set_condition(
        &mut conditions,
        condition::CREDENTIALS_VALID,
        cv_status,
        &cv_reason,
        &cv_message,
        now,
        g,
    );
    set_condition(
        &mut conditions,
        condition::SECRET_EXPIRING,
        se_status,
        &se_reason,
        &se_message,
        now,
        g,
    );
    set_condition(
        &mut conditions,
        condition::INJECTED,
        inj.status,
        &inj.reason,
        &inj.message,
        now,
        g,
    );
    match i.nocobase {
        Some(nb) => set_condition(
            &mut conditions,
            condition::NOCOBASE_SYNCED,
            nb.status,
            &nb.reason,
            &nb.message,
            now,
            g,
        ),
        None => conditions.retain(|c| c.type_ != condition::NOCOBASE_SYNCED),
    }
    let status = MicrosoftMailIntegrationStatus {
        observed_generation: g,
        conditions,
        secret_expiry: Some(SecretExpiryStatus {
            expires_at: expires_str,
            source: a.source,
            windows_announced: announced,
        }),
        last_validation: last.clone(),
        last_unavailable: unavailable.clone(),
        injected: inj.injected.clone(),
        nocobase: match i.nocobase {
            Some(nb) => Some(nb.state.clone()).filter(|st| *st != Default::default()),
            None => i.previous.nocobase.clone(),
        },
    };

    // 8. Next reconcile: the earliest of the next validation, retry, window or expiry.
    let iv = interval(i.spec);
    let mut next: Vec<Timestamp> = a.next_change.into_iter().collect();
    if let Some(fp) = fp {
        next.push(validation_due(i.spec, &status, fp, now).unwrap_or(now));
    }
    let at = next
        .into_iter()
        .min()
        .unwrap_or(expiry::add_saturating(now, iv));
    let secs = now.duration_until(at).as_secs().clamp(1, iv.as_secs());
    Decision {
        status,
        events,
        requeue_after: Duration::from_secs(secs as u64),
    }
}

/// Sets a condition, keeping `lastTransitionTime` unless the status changes.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: Timestamp,
    generation: Option<i64>,
) {
    let new = |ltt: Timestamp| Condition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message: message.to_owned(),
        last_transition_time: Time(ltt),
        observed_generation: generation,
    };
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => {
            let ltt = if c.status == status {
                c.last_transition_time.0
            } else {
                now
            };
            *c = new(ltt);
        }
        None => conditions.push(new(now)),
    }
}
