//! NocoBase and the email manager's settings in the reconcile's pure core: what to write
//! (or why nothing is written), and what the answers mean for their conditions. Only
//! credentials Microsoft accepted (or, opted in, not judged yet) are ever written.

use std::time::Duration;

use secrecy::SecretString;

use super::records::Delivery;
use super::{
    ConditionStatus, CredentialCheck, MailSettingsReport, NocoBaseReport, while_restarting,
};
use crate::api::{MailSettingsStatus, MicrosoftMailIntegration, NocoBaseSync, condition};
use crate::input::Credentials;
use crate::mailsettings::{MailOutcome, Wanted};
use crate::nocobase::{DesiredVar, SyncOutcome, SyncedState, VarKind, reason};

/// How soon a NocoBase that is restarting is asked again (it takes 1 to 15 s).
pub const RESTARTING_RETRY: Duration = Duration::from_secs(5);
/// How soon a NocoBase that is down or failing is asked again.
pub const UNREACHABLE_RETRY: Duration = Duration::from_secs(30);

/// Why no NocoBase request could be made (the API key's Secret, the allow-list, the
/// settings): the condition's reason and message.
pub type Refusal = (String, String);

/// What to do in NocoBase's Variables and secrets.
pub enum NocoBaseWork {
    /// Nothing is written; the report is already known.
    Skip(NocoBaseReport),
    /// Write these variables (the API key is read when executing).
    Sync(Vec<DesiredVar>),
}

/// What to do in the email manager's settings.
pub enum MailWork {
    /// Nothing is written; the report is already known.
    Skip(MailSettingsReport),
    /// Write these credentials.
    Write(Wanted),
}

fn previous_state(mmi: &MicrosoftMailIntegration) -> SyncedState {
    mmi.status
        .as_ref()
        .and_then(|s| s.nocobase.clone())
        .unwrap_or_default()
}

fn report(
    status: ConditionStatus,
    reason: &str,
    message: String,
    state: SyncedState,
    writes: usize,
) -> NocoBaseReport {
    NocoBaseReport {
        status,
        reason: reason.into(),
        message,
        state,
        writes,
        retry_after: None,
    }
}

/// The NocoBase variables to write, or why nothing new is written.
pub fn nocobase_work(
    mmi: &MicrosoftMailIntegration,
    key: &crate::fingerprint::IntegrationKey,
    nb: &NocoBaseSync,
    check: &CredentialCheck,
    creds: Option<&Credentials>,
    gate: Delivery,
) -> NocoBaseWork {
    let state = previous_state(mmi);
    let (CredentialCheck::Ready { .. }, Some(c)) = (check, creds) else {
        let reason = match check {
            CredentialCheck::Problem { reason, .. } => reason.as_str(),
            CredentialCheck::Ready { .. } => "AwaitingValidCredentials",
        };
        let why = format!("The credentials cannot be read ({reason}), so nothing new is written.");
        return NocoBaseWork::Skip(nothing_new(nb, why, state));
    };
    if gate == Delivery::Withheld {
        let why = "The credentials now in the Secret are not confirmed by Microsoft, so nothing new is written.";
        return NocoBaseWork::Skip(nothing_new(nb, why.into(), state));
    }
    let v = &nb.variables;
    let var = |name: &String, kind, value| {
        DesiredVar::new(name, kind, value, key.as_bytes()).adopting(nb.adopt_existing)
    };
    NocoBaseWork::Sync(vec![
        var(
            &v.client_id,
            VarKind::Default,
            SecretString::from(c.client_id.clone()),
        ),
        var(
            &v.tenant_id,
            VarKind::Default,
            SecretString::from(c.tenant_id.clone()),
        ),
        var(&v.client_secret, VarKind::Secret, c.client_secret.clone()),
    ])
}

/// What NocoBase still holds from the operator's last write, by name and hint only
/// ("MICROSOFT_CLIENT_SECRET (starts with Gq7)"), or `None` when nothing was written.
pub fn holdings(nb: &NocoBaseSync, state: &SyncedState) -> Option<String> {
    if state.variables.is_empty() {
        return None;
    }
    let names: Vec<String> = state
        .variables
        .iter()
        .map(|(name, v)| match &v.hint {
            Some(h) => format!("{name} (starts with {h})"),
            None => name.clone(),
        })
        .collect();
    Some(format!(
        "NocoBase at {} still holds the values the operator last wrote there: {}",
        nb.url,
        names.join(", ")
    ))
}

/// Nothing new may be written (credentials unreadable or not confirmed): NocoBase keeps
/// what it has, and the condition says what that is, by name and hint.
fn nothing_new(nb: &NocoBaseSync, why: String, state: SyncedState) -> NocoBaseReport {
    match holdings(nb, &state) {
        Some(h) => report(
            ConditionStatus::True,
            "AwaitingValidCredentials",
            format!("{why} {h}; they stay until valid credentials replace them."),
            state,
            0,
        ),
        None => report(
            ConditionStatus::Unknown,
            "AwaitingValidCredentials",
            "Nothing is written to NocoBase until Microsoft accepts the credentials.".into(),
            state,
            0,
        ),
    }
}

/// What NocoBase now holds, from the plan and its answer.
pub fn nocobase_report(
    mmi: &MicrosoftMailIntegration,
    work: &NocoBaseWork,
    answer: Option<&Result<SyncOutcome, Refusal>>,
) -> NocoBaseReport {
    let state = previous_state(mmi);
    let out = match (work, answer, &mmi.spec.nocobase) {
        (NocoBaseWork::Skip(r), _, _) => return r.clone(),
        (NocoBaseWork::Sync(_), Some(Ok(out)), Some(nb)) if out.ok => {
            let v = &nb.variables;
            let names = [&v.client_id, &v.tenant_id, &v.client_secret].map(String::as_str);
            let message = format!(
                "NocoBase holds the validated configuration in the variables {} ({}).",
                names.join(", "),
                nb.url
            );
            let (st, writes) = (out.state.clone(), out.writes);
            return report(ConditionStatus::True, "Synced", message, st, writes);
        }
        (NocoBaseWork::Sync(_), Some(Ok(out)), _) => out,
        (NocoBaseWork::Sync(_), Some(Err((reason, message))), _) => {
            return report(ConditionStatus::False, reason, message.clone(), state, 0);
        }
        // planned but not carried out: cannot happen; say so rather than guess
        (NocoBaseWork::Sync(_), None, _) => {
            return NocoBaseReport {
                retry_after: Some(UNREACHABLE_RETRY),
                ..report(
                    ConditionStatus::Unknown,
                    reason::UNEXPECTED_RESPONSE,
                    "The NocoBase sync was not carried out; the operator tries again.".into(),
                    state,
                    0,
                )
            };
        }
    };
    let failed = out.reason.unwrap_or(reason::UNEXPECTED_RESPONSE);
    if failed == reason::NOCOBASE_RESTARTING {
        return restarting(mmi, out);
    }
    NocoBaseReport {
        retry_after: out.transient.then_some(UNREACHABLE_RETRY),
        ..report(
            ConditionStatus::False,
            failed,
            out.message.clone(),
            out.state.clone(),
            out.writes,
        )
    }
}

/// NocoBase is reloading: the condition keeps its status and, when False, its reason
/// ([`super::while_restarting`]). Asked again within seconds.
fn restarting(mmi: &MicrosoftMailIntegration, out: &SyncOutcome) -> NocoBaseReport {
    let c = while_restarting(
        previous_conditions(mmi),
        condition::NOCOBASE_SYNCED,
        &out.message,
    );
    NocoBaseReport {
        status: c.status,
        reason: c.reason,
        message: c.message,
        state: out.state.clone(),
        writes: out.writes,
        retry_after: Some(RESTARTING_RETRY),
    }
}

fn previous_conditions(
    mmi: &MicrosoftMailIntegration,
) -> &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition] {
    mmi.status.as_ref().map_or(&[][..], |s| &s.conditions)
}

/// The email manager's settings to write, or why nothing is written; `None` unless
/// writing them is enabled.
pub fn mail_work(
    mmi: &MicrosoftMailIntegration,
    check: &CredentialCheck,
    creds: Option<&Credentials>,
    gate: Delivery,
) -> Option<MailWork> {
    let nb = mmi.spec.nocobase.as_ref()?;
    nb.mail_settings.as_ref().filter(|m| m.enabled)?;
    let state = mmi.status.as_ref().and_then(|s| s.mail_settings.clone());
    let (CredentialCheck::Ready { fingerprint }, Some(c)) = (check, creds) else {
        return Some(MailWork::Skip(held_back(state)));
    };
    if gate == Delivery::Withheld {
        return Some(MailWork::Skip(held_back(state)));
    }
    Some(MailWork::Write(Wanted {
        client_id: c.client_id.clone(),
        client_secret: c.client_secret.clone(),
        credentials_fingerprint: fingerprint.clone(),
    }))
}

/// Credentials not (yet) accepted: nothing is written; say what the settings hold.
fn held_back(state: Option<MailSettingsStatus>) -> MailSettingsReport {
    let (status, message) = match &state {
        Some(s) => (
            ConditionStatus::True,
            format!(
                "The credentials now in the Secret are not accepted by Microsoft; the email manager's settings (collection {}, record {}) keep the previously validated ones.",
                s.collection, s.record
            ),
        ),
        None => (
            ConditionStatus::Unknown,
            "Nothing is written into the email manager's settings until Microsoft accepts the credentials.".to_owned(),
        ),
    };
    MailSettingsReport {
        status,
        reason: crate::mailsettings::reason::AWAITING_VALID_CREDENTIALS.into(),
        message,
        state,
        writes: 0,
        retry_after: None,
    }
}

/// What the email manager's settings now hold, from the plan and NocoBase's answer.
pub fn mail_report(
    mmi: &MicrosoftMailIntegration,
    work: &MailWork,
    answer: Option<&Result<MailOutcome, Refusal>>,
) -> MailSettingsReport {
    let state = mmi.status.as_ref().and_then(|s| s.mail_settings.clone());
    let report = |status, reason: &str, message: String, state, writes| MailSettingsReport {
        status,
        reason: reason.into(),
        message,
        state,
        writes,
        retry_after: None,
    };
    let out = match (work, answer) {
        (MailWork::Skip(r), _) => return r.clone(),
        (MailWork::Write(_), Some(Err((reason, message)))) => {
            return report(ConditionStatus::False, reason, message.clone(), state, 0);
        }
        (MailWork::Write(_), Some(Ok(out))) => out,
        // planned but not carried out: cannot happen; say so rather than guess
        (MailWork::Write(_), None) => {
            return MailSettingsReport {
                retry_after: Some(UNREACHABLE_RETRY),
                ..report(
                    ConditionStatus::Unknown,
                    reason::UNEXPECTED_RESPONSE,
                    "The email manager's settings were not written; the operator tries again."
                        .into(),
                    state,
                    0,
                )
            };
        }
    };
    let (writes, st) = (out.written.len(), out.state.clone());
    if out.ok {
        let m = out.message.clone();
        return report(ConditionStatus::True, out.reason, m, st, writes);
    }
    // NocoBase reloading: the condition stays as it was, as for NocoBaseSynced
    if out.reason == reason::NOCOBASE_RESTARTING {
        let t = condition::MAIL_SETTINGS_SYNCED;
        let c = while_restarting(previous_conditions(mmi), t, &out.message);
        return MailSettingsReport {
            retry_after: Some(RESTARTING_RETRY),
            ..report(c.status, &c.reason, c.message, st, writes)
        };
    }
    MailSettingsReport {
        retry_after: out.transient.then_some(UNREACHABLE_RETRY),
        ..report(
            ConditionStatus::False,
            out.reason,
            out.message.clone(),
            st,
            writes,
        )
    }
}
