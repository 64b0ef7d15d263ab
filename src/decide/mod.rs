//! The decision core (pure): observed state + clock + validation result -> desired status,
//! Events and the next reconcile. No I/O happens here, so every transition is testable
//! with a fixed clock, and deciding again on its own output changes nothing.
//!
//! - [`records`]: what status remembers of Microsoft's answers; [`records::acceptance`]
//!   answers "did Microsoft accept these credentials?" for every caller.
//! - [`conditions`]: one small check per condition; `Ready` is the ordered chain
//!   [`conditions::READY_CHAIN`] of named checks (cert-manager's policy chain style).
//! - [`events`]: Events on transitions only.
//! - [`actions`]: the reconcile's pure core: [`actions::plan`] (everything one reconcile
//!   does) and [`actions::conclude`] (what it means, through [`decide`]); [`reports`] for
//!   NocoBase and the email manager's settings; [`cleanup`] for a deletion.

pub mod actions;
pub mod bounds;
pub mod cleanup;
pub mod conditions;
pub mod events;
pub mod records;
pub mod rekey;
pub mod reports;

use std::time::Duration;

use jiff::Timestamp;

use crate::api::{
    InjectedTarget, MicrosoftMailIntegrationSpec, MicrosoftMailIntegrationStatus,
    SecretExpiryStatus, condition,
};
use crate::microsoft::Verdict;
pub use conditions::{Cond, ReadyInput, set_condition, while_restarting};
pub use events::{EVENT_NOTE_MAX_BYTES, event_note};
pub use records::{
    Delivery, Records, acceptance, delivery, fold_attempt, interval, retry_delay, validation_due,
};

/// A condition's status, `True`, `False` or `Unknown` on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

impl ConditionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ConditionStatus::True => "True",
            ConditionStatus::False => "False",
            ConditionStatus::Unknown => "Unknown",
        }
    }
}

impl std::fmt::Display for ConditionStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What reading the referenced Secret gave.
#[derive(Clone, Debug, PartialEq)]
pub enum CredentialCheck {
    /// Usable credentials with this fingerprint.
    Ready { fingerprint: String },
    /// Missing Secret, missing key, empty or damaged value, ...: nothing is sent.
    Problem { reason: String, message: String },
}

impl CredentialCheck {
    /// The fingerprint of usable credentials; `None` with a problem.
    pub fn fingerprint(&self) -> Option<&str> {
        match self {
            CredentialCheck::Ready { fingerprint } => Some(fingerprint),
            CredentialCheck::Problem { .. } => None,
        }
    }
}

/// What injection into the targets achieved (decided by the injection plan).
#[derive(Clone, Debug, PartialEq)]
pub struct InjectionReport {
    pub status: ConditionStatus,
    pub reason: String,
    pub message: String,
    pub injected: Vec<InjectedTarget>,
    /// Deployments injected before that were deleted since (nothing to give back).
    pub disappeared: Vec<String>,
}

impl InjectionReport {
    pub fn no_targets() -> Self {
        Self {
            status: ConditionStatus::True,
            reason: "NoTargets".into(),
            message: "No targets: the credentials are validated and watched, and injected nowhere."
                .into(),
            injected: vec![],
            disappeared: vec![],
        }
    }
}

/// What the NocoBase sync achieved this round (only with `spec.nocobase`).
#[derive(Clone, Debug, PartialEq)]
pub struct NocoBaseReport {
    pub status: ConditionStatus,
    pub reason: String,
    pub message: String,
    pub state: crate::nocobase::SyncedState,
    /// Variables written this round (a Normal Event says so).
    pub writes: usize,
    /// A transient failure (NocoBase down or restarting): ask again within this time.
    pub retry_after: Option<std::time::Duration>,
}

/// What the email manager's settings step achieved this round (only with
/// `spec.nocobase.mailSettings.enabled`).
#[derive(Clone, Debug, PartialEq)]
pub struct MailSettingsReport {
    pub status: ConditionStatus,
    pub reason: String,
    pub message: String,
    /// What to record in status.
    pub state: Option<crate::api::MailSettingsStatus>,
    /// Fields written this round (a Normal Event says so).
    pub writes: usize,
    /// A transient failure (NocoBase down or restarting): ask again within this time.
    pub retry_after: Option<std::time::Duration>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventSpec {
    pub warning: bool,
    pub reason: String,
    pub note: String,
    pub action: &'static str,
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
    /// `None` when `spec.nocobase.mailSettings` is not enabled.
    pub mail_settings: Option<&'a MailSettingsReport>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub status: MicrosoftMailIntegrationStatus,
    pub events: Vec<EventSpec>,
    pub requeue_after: Duration,
}

/// Decides status, Events and the next reconcile: the records, then each condition from
/// its own check, the Events of their transitions, and the requeue.
pub fn decide(i: &Inputs<'_>) -> Decision {
    let now = i.now;
    let fp = i.credentials.fingerprint();
    let records = fold_attempt(i.previous, fp, i.attempt, now);
    let verdict = records.verdict(fp);
    let pending = records.pending(fp);

    let cv = conditions::credentials_valid(i.credentials, &records);
    let (a, source_text) = conditions::assess_expiry(i.spec, verdict, now);
    let se = conditions::secret_expiring(&a, &source_text, verdict);
    let inj = Cond::new(
        i.injection.status,
        &i.injection.reason,
        &i.injection.message,
    );
    let appreg = conditions::app_registration_of(i.spec, verdict);
    let ready = conditions::ready(&ReadyInput {
        credentials: &cv,
        expiry: &se,
        stage: &a.stage,
        injection: i.injection,
        nocobase: i.nocobase,
        mail_settings: i.mail_settings,
        app_registration: appreg.as_ref(),
        missing_permissions: verdict.map_or(&[][..], |l| &l.missing_permissions),
    });

    let (expiry_events, announced) = events::expiry_events(&a, i.previous, now);
    let mut evs: Vec<EventSpec> = events::credentials_event(i.previous, &cv)
        .into_iter()
        .chain(expiry_events)
        .chain(events::unavailable_event(i.previous, pending))
        .chain(events::injection_event(i.previous, &inj))
        .chain(events::target_deleted_events(i.injection))
        .collect();
    let (ms, ar) = (i.mail_settings, appreg.as_ref());
    evs.extend(events::email_manager_events(i.previous, i.nocobase, ms, ar));

    let mut conds = i.previous.conditions.clone();
    let g = i.generation;
    set_condition(&mut conds, condition::READY, &ready, now, g);
    set_condition(&mut conds, condition::CREDENTIALS_VALID, &cv, now, g);
    set_condition(&mut conds, condition::SECRET_EXPIRING, &se, now, g);
    set_condition(&mut conds, condition::INJECTED, &inj, now, g);
    match i.nocobase {
        Some(nb) => {
            let c = Cond::new(nb.status, &nb.reason, &nb.message);
            set_condition(&mut conds, condition::NOCOBASE_SYNCED, &c, now, g);
        }
        None => conds.retain(|c| c.type_ != condition::NOCOBASE_SYNCED),
    }
    conditions::set_email_manager(&mut conds, ms, ar, now, g);
    let status = MicrosoftMailIntegrationStatus {
        observed_generation: g,
        conditions: conds,
        secret_expiry: Some(SecretExpiryStatus {
            expires_at: a.expires_at.map(|t| t.to_string()),
            source: a.source,
            windows_announced: announced,
        }),
        last_validation: records.last.clone(),
        last_unavailable: records.unavailable.clone(),
        injected: i.injection.injected.clone(),
        nocobase: match i.nocobase {
            Some(nb) => Some(nb.state.clone()).filter(|st| *st != Default::default()),
            None => i.previous.nocobase.clone(),
        },
        // the rotation module (crate::rotation) owns this part
        rotation: i.previous.rotation.clone(),
        mail_settings: ms.map_or(i.previous.mail_settings.clone(), |m| m.state.clone()),
    };
    let requeue_after = records::requeue_after(i.spec, &status, fp, a.next_change, now);
    Decision {
        status,
        events: evs,
        requeue_after,
    }
}
