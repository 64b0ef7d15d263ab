//! The conditions, each from a small pure check: `CredentialsValid`, `SecretExpiring`, and
//! `Ready` as an ordered chain of named checks where the first failure wins (in the manner
//! of cert-manager's certificate policies).

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use super::records::{Records, parse_ts};
use super::{
    ConditionStatus, CredentialCheck, InjectionReport, MailSettingsReport, NocoBaseReport,
};
use crate::api::{ExpirySource, LastValidation, MicrosoftMailIntegrationSpec, Outcome};
use crate::expiry::{self, Assessment, Stage};

/// One condition's status, reason and message, before it is written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cond {
    pub status: ConditionStatus,
    pub reason: String,
    pub message: String,
}

impl Cond {
    pub fn new(
        status: ConditionStatus,
        reason: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            status,
            reason: reason.into(),
            message: message.into(),
        }
    }
}

/// NocoBase is reloading its plugins (`NocoBaseRestarting`): the condition `type_` keeps
/// its status, since a restart is no news about the configuration; a False one keeps its
/// reason too, which still names what is wrong until NocoBase answers again. The message
/// says what happened and what held before.
pub fn while_restarting(previous: &[Condition], type_: &str, message: &str) -> Cond {
    let old = previous.iter().find(|c| c.type_ == type_);
    let status = match old.map(|c| c.status.as_str()) {
        Some("True") => ConditionStatus::True,
        Some("False") => ConditionStatus::False,
        _ => ConditionStatus::Unknown,
    };
    let reason = match old {
        Some(c) if status == ConditionStatus::False => c.reason.clone(),
        _ => crate::nocobase::reason::NOCOBASE_RESTARTING.to_owned(),
    };
    let before = old
        .map(|c| format!(" Before the restart: {}", c.message))
        .unwrap_or_default();
    Cond::new(status, reason, format!("{message}.{before}"))
}

/// `CredentialsValid`: a credential problem, else the verdict about these credentials,
/// else why there is none yet.
pub fn credentials_valid(check: &CredentialCheck, records: &Records) -> Cond {
    use ConditionStatus::{False, True, Unknown};
    let fp = check.fingerprint();
    let pending = records.pending(fp);
    if let CredentialCheck::Problem { reason, message } = check {
        return Cond::new(False, reason, message);
    }
    match (records.verdict(fp), pending) {
        (Some(l), _) if l.outcome == Outcome::Valid => Cond::new(
            True,
            "Valid",
            format!(
                "Microsoft accepted the client ID and client secret at {}.{}",
                l.time,
                pending.map(unavailable_note).unwrap_or_default()
            ),
        ),
        (Some(l), _) => Cond::new(
            False,
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
        (None, Some(u)) => Cond::new(
            Unknown,
            &u.reason,
            format!(
                "Microsoft could not be asked yet: {} Next try at {}.",
                u.message, u.retry_at
            ),
        ),
        (None, None) => Cond::new(
            Unknown,
            "Validating",
            "Waiting for the first answer from Microsoft.",
        ),
    }
}

fn unavailable_note(u: &crate::api::LastUnavailable) -> String {
    format!(
        " The last check at {} reached no verdict ({}: {}); next try at {}.",
        u.time, u.reason, u.message, u.retry_at
    )
}

/// The expiry as assessed from the spec's date, or else Graph's (only from a verdict about
/// these credentials, and only when discovery is on).
pub fn assess_expiry(
    spec: &MicrosoftMailIntegrationSpec,
    verdict: Option<&LastValidation>,
    now: Timestamp,
) -> (Assessment, String) {
    let spec_at = spec.secret_expiry.expires_at.as_deref().and_then(parse_ts);
    let graph_at = verdict
        .filter(|_| spec.secret_expiry.discover_from_graph)
        .and_then(|l| l.graph_expires_at.as_deref())
        .and_then(parse_ts);
    let windows = expiry::windows(&spec.secret_expiry.warn_before);
    let a = expiry::assess(spec_at, graph_at, &windows, now);
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
    (a, source_text)
}

pub const RENEW: &str = "Create a new client secret in App registrations > Certificates & secrets, store its Value in the Secret, and update secretExpiry.expiresAt.";

/// `SecretExpiring`: unknown (never guessed), fine, within a window, or expired.
pub fn secret_expiring(
    a: &Assessment,
    source_text: &str,
    verdict: Option<&LastValidation>,
) -> Cond {
    use ConditionStatus::{False, True, Unknown};
    let Some(at) = a.expires_at.filter(|_| a.stage != Stage::Unknown) else {
        return Cond::new(
            Unknown,
            "ExpiryUnknown",
            format!(
                "The client secret's expiry is unknown{}. State spec.secretExpiry.expiresAt, or grant the app the Application.Read.All application permission so Microsoft Graph can tell.",
                verdict
                    .and_then(|l| l.expiry_note.as_deref())
                    .map(|n| format!(" ({n})"))
                    .unwrap_or_default()
            ),
        );
    };
    match &a.stage {
        Stage::Within(w) => Cond::new(
            True,
            w.reason(),
            format!(
                "The client secret expires at {at} ({source_text}), within {}. {RENEW}",
                w.label().to_lowercase()
            ),
        ),
        Stage::Expired => Cond::new(
            True,
            "SecretExpired",
            format!("The client secret expired at {at} ({source_text}). {RENEW}"),
        ),
        Stage::Fine | Stage::Unknown => Cond::new(
            False,
            "NotExpiringSoon",
            format!("The client secret expires at {at} ({source_text})."),
        ),
    }
}

/// What `Ready` is decided from: the other conditions and reports.
pub struct ReadyInput<'a> {
    pub credentials: &'a Cond,
    pub expiry: &'a Cond,
    pub stage: &'a Stage,
    pub injection: &'a InjectionReport,
    pub nocobase: Option<&'a NocoBaseReport>,
    pub mail_settings: Option<&'a MailSettingsReport>,
    /// `AppRegistrationReady` (with `spec.nocobase`): never fails Ready, only warns.
    pub app_registration: Option<&'a Cond>,
    pub missing_permissions: &'a [String],
}

/// A named check of the `Ready` chain: `Some` with the failure, `None` when it passes.
pub type ReadyCheck = fn(&ReadyInput<'_>) -> Option<Cond>;

/// The `Ready` chain, in order: the first failure is the one an administrator reads.
pub const READY_CHAIN: &[(&str, ReadyCheck)] = &[
    ("CredentialsRefused", credentials_refused),
    ("SecretExpired", secret_expired),
    ("NoVerdictYet", no_verdict_yet),
    ("InjectionIncomplete", injection_incomplete),
    ("NocoBaseNotSynced", nocobase_not_synced),
    ("MailSettingsNotSynced", mail_settings_not_synced),
];

/// A credential problem or a rejection.
pub fn credentials_refused(i: &ReadyInput<'_>) -> Option<Cond> {
    (i.credentials.status == ConditionStatus::False).then(|| i.credentials.clone())
}

/// Expired, even before Microsoft says so.
pub fn secret_expired(i: &ReadyInput<'_>) -> Option<Cond> {
    (*i.stage == Stage::Expired)
        .then(|| Cond::new(ConditionStatus::False, "SecretExpired", &i.expiry.message))
}

/// Microsoft has not judged these credentials yet.
pub fn no_verdict_yet(i: &ReadyInput<'_>) -> Option<Cond> {
    (i.credentials.status == ConditionStatus::Unknown).then(|| i.credentials.clone())
}

/// The configuration is not where the targets need it.
pub fn injection_incomplete(i: &ReadyInput<'_>) -> Option<Cond> {
    let inj = i.injection;
    (inj.status != ConditionStatus::True).then(|| Cond::new(inj.status, &inj.reason, &inj.message))
}

/// NocoBase does not hold the configuration (only with `spec.nocobase`).
pub fn nocobase_not_synced(i: &ReadyInput<'_>) -> Option<Cond> {
    i.nocobase
        .filter(|nb| nb.status != ConditionStatus::True)
        .map(|nb| Cond::new(nb.status, &nb.reason, &nb.message))
}

/// The email manager's settings do not hold the configuration (only when enabled).
pub fn mail_settings_not_synced(i: &ReadyInput<'_>) -> Option<Cond> {
    i.mail_settings
        .filter(|m| m.status != ConditionStatus::True)
        .map(|m| Cond::new(m.status, &m.reason, &m.message))
}

/// `AppRegistrationReady`, with `spec.nocobase` only.
pub fn app_registration_of(
    spec: &MicrosoftMailIntegrationSpec,
    verdict: Option<&LastValidation>,
) -> Option<Cond> {
    spec.nocobase
        .as_ref()
        .map(|nb| app_registration(nb, verdict))
}

/// `AppRegistrationReady` from [`crate::appreg::assess`] on the verdict about the current
/// credentials.
pub fn app_registration(nb: &crate::api::NocoBaseSync, verdict: Option<&LastValidation>) -> Cond {
    let r = crate::appreg::assess(nb, verdict);
    let status = match r.status {
        "True" => ConditionStatus::True,
        "False" => ConditionStatus::False,
        _ => ConditionStatus::Unknown,
    };
    Cond::new(status, r.reason, r.message)
}

/// `Ready`: the first failing check of [`READY_CHAIN`], else True (`ExpiresWithin…` while a
/// warning window is open).
pub fn ready(i: &ReadyInput<'_>) -> Cond {
    if let Some(failed) = READY_CHAIN.iter().find_map(|(_, check)| check(i)) {
        return failed;
    }
    let mut msg = format!("Microsoft accepts the credentials. {}", i.injection.message);
    if !i.missing_permissions.is_empty() {
        msg.push_str(&format!(
            " Warning: the app registration lacks delegated Graph permissions the email manager needs: {}.",
            i.missing_permissions.join(", ")
        ));
    }
    if let Some(r) = i
        .app_registration
        .filter(|r| r.status == ConditionStatus::False)
    {
        msg.push_str(&format!(
            " Warning: the app registration is not ready for the email manager ({}; see AppRegistrationReady).",
            r.reason
        ));
    }
    match i.stage {
        Stage::Within(w) => Cond::new(
            ConditionStatus::True,
            w.reason(),
            format!("{msg} {}", i.expiry.message),
        ),
        _ => Cond::new(ConditionStatus::True, "Ready", msg),
    }
}

/// `MailSettingsSynced` and `AppRegistrationReady`, or neither without their settings.
pub fn set_email_manager(
    conditions: &mut Vec<Condition>,
    ms: Option<&MailSettingsReport>,
    appreg: Option<&Cond>,
    now: Timestamp,
    g: Option<i64>,
) {
    let ms = ms.map(|m| Cond::new(m.status, &m.reason, &m.message));
    let t = crate::api::condition::MAIL_SETTINGS_SYNCED;
    set_optional(conditions, t, ms.as_ref(), now, g);
    let t = crate::api::condition::APP_REGISTRATION_READY;
    set_optional(conditions, t, appreg, now, g);
}

/// Sets a condition that exists only with some settings; removes it without them.
pub fn set_optional(
    conditions: &mut Vec<Condition>,
    type_: &str,
    c: Option<&Cond>,
    now: Timestamp,
    generation: Option<i64>,
) {
    match c {
        Some(c) => set_condition(conditions, type_, c, now, generation),
        None => conditions.retain(|x| x.type_ != type_),
    }
}

/// Sets a condition, keeping `lastTransitionTime` unless the status changes.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    c: &Cond,
    now: Timestamp,
    generation: Option<i64>,
) {
    let status = c.status.as_str();
    let new = |ltt: Timestamp| Condition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: c.reason.clone(),
        message: c.message.clone(),
        last_transition_time: Time(ltt),
        observed_generation: generation,
    };
    match conditions.iter_mut().find(|x| x.type_ == type_) {
        Some(x) => {
            let ltt = if x.status == status {
                x.last_transition_time.0
            } else {
                now
            };
            *x = new(ltt);
        }
        None => conditions.push(new(now)),
    }
}
