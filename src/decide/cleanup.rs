//! The deletion of an integration in NocoBase, decided (pure): what there is to remove
//! (the operator's variables with `deleteOnCleanup`, the email manager's fields it wrote
//! with `clearOnCleanup`), and what the attempt leads to: a Warning Event for each part
//! given up, and for a transient failure a wait within `cleanupTimeout`, announced once.

use std::time::Duration;

use jiff::Timestamp;

use super::reports::Refusal;
use crate::api::{MailSettings, MailSettingsStatus, MicrosoftMailIntegration, NocoBaseSync};
use crate::nocobase::{CleanupWait, SyncError, SyncedState, cleanup_wait};

/// What a deletion removes from NocoBase before the finalizer goes.
pub struct CleanupDue<'a> {
    pub nb: &'a NocoBaseSync,
    /// The variables the operator created, with `deleteOnCleanup`.
    pub vars: Option<&'a SyncedState>,
    /// The email manager's settings the operator wrote, with `clearOnCleanup`.
    pub mail: Option<(&'a MailSettings, &'a MailSettingsStatus)>,
    /// Each part in words for Events: the variables first, then the mail settings.
    pub left: Vec<String>,
}

/// How the attempt went, part by part (`None`: that part had nothing to do).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CleanupAttempt {
    /// No request could be made (the API key's Secret, the allow-list, the settings).
    Refused(Refusal),
    Ran {
        vars: Option<Result<(), SyncError>>,
        mail: Option<Result<(), SyncError>>,
    },
}

/// How the cleanup goes on after a transient failure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CleanupWaiting {
    /// Try again after this long; the finalizer stays.
    Retry(Duration),
    /// The first transient failure: record `since` in status
    /// (`status.nocobase.cleanupWaitingSince`), announce the wait with a Warning Event
    /// `NocoBaseCleanupWaiting` saying `note`, try again after `pause`.
    Start {
        pause: Duration,
        since: Timestamp,
        note: String,
    },
}

/// What follows the attempt.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CleanupStep {
    /// Warning Events `NocoBaseCleanupFailed`: (reason, note), one per part given up.
    pub give_ups: Vec<(String, String)>,
    /// `None`: done or given up; the finalizer may go.
    pub waiting: Option<CleanupWaiting>,
}

/// What a deletion has to remove in NocoBase; `None` when not deleting or nothing to do.
pub fn nocobase_cleanup_due(
    mmi: &MicrosoftMailIntegration,
    deleting: bool,
) -> Option<CleanupDue<'_>> {
    let nb = mmi.spec.nocobase.as_ref().filter(|_| deleting)?;
    let status = mmi.status.as_ref();
    let vars = status
        .and_then(|s| s.nocobase.as_ref())
        .filter(|s| nb.delete_on_cleanup && !s.owned.is_empty());
    let mail = nb
        .mail_settings
        .as_ref()
        .filter(|m| m.clear_on_cleanup)
        .zip(status.and_then(|s| s.mail_settings.as_ref()));
    let mut left = vec![];
    if let Some(v) = vars {
        left.push(format!(
            "its NocoBase variables {} (Settings > Variables and secrets)",
            v.owned.join(", ")
        ));
    }
    if let Some((_, m)) = mail.filter(|(_, m)| !m.fields.is_empty()) {
        let fields: Vec<&str> = m.fields.keys().map(String::as_str).collect();
        left.push(format!(
            "the email manager's fields {} in record {} of {} (the Email settings page)",
            fields.join(", "),
            m.record,
            m.collection
        ));
    }
    (!left.is_empty()).then_some(CleanupDue {
        nb,
        vars,
        mail,
        left,
    })
}

/// What follows the attempt: an answer that does not change by waiting is given up at
/// once; a transient one waits, with growing pauses, until `cleanupTimeout` counted from
/// `status.nocobase.cleanupWaitingSince` (so an operator restart does not reset it).
pub fn nocobase_cleanup_step(
    due: &CleanupDue<'_>,
    attempt: CleanupAttempt,
    waiting_since: Option<&str>,
    now: Timestamp,
) -> CleanupStep {
    let mut step = CleanupStep::default();
    let (vars, mail) = match attempt {
        CleanupAttempt::Refused((reason, message)) => {
            let left = due.left.join(" and ");
            let note = format!(
                "{message} The operator cannot clean up {left}; do it by hand in NocoBase."
            );
            step.give_ups.push((reason, note));
            return step;
        }
        CleanupAttempt::Ran { vars, mail } => (vars, mail),
    };
    let mut transient: Option<SyncError> = None;
    let parts = [(vars, due.left.first()), (mail, due.left.last())];
    for (result, what) in parts {
        let Some(Err(e)) = result else { continue };
        if e.transient {
            transient = transient.or(Some(e));
            continue;
        }
        let what = what.map_or("", String::as_str);
        let note = format!(
            "{} The operator gives up removing {what}: this answer does not change by waiting. Remove it by hand.",
            e.message
        );
        step.give_ups.push((e.reason.to_owned(), note));
    }
    if let Some(e) = transient {
        let since = waiting_since.and_then(|s| s.parse::<Timestamp>().ok());
        wait(due, &e, since, now, &mut step);
    }
    step
}

fn wait(
    due: &CleanupDue<'_>,
    e: &SyncError,
    since: Option<Timestamp>,
    now: Timestamp,
    step: &mut CleanupStep,
) {
    let left = due.left.join(" and ");
    let timeout = crate::expiry::cleanup_timeout(&due.nb.cleanup_timeout);
    let configured = &due.nb.cleanup_timeout;
    match cleanup_wait(since, now, timeout) {
        CleanupWait::GiveUp => step.give_ups.push((
            e.reason.to_owned(),
            format!(
                "{} The operator tried for {configured} (spec.nocobase.cleanupTimeout) and gives up; {left} stay in NocoBase: remove them by hand.",
                e.message
            ),
        )),
        CleanupWait::Retry(pause) => step.waiting = Some(CleanupWaiting::Retry(pause)),
        CleanupWait::Start(pause) => {
            let until = now
                .checked_add(timeout)
                .map_or_else(|_| "later".to_owned(), |t| t.to_string());
            let note = format!(
                "{} The integration is being deleted: the operator retries removing {left} until {until} (spec.nocobase.cleanupTimeout {configured}), then gives up.",
                e.message
            );
            step.waiting = Some(CleanupWaiting::Start {
                pause,
                since: now,
                note,
            });
        }
    }
}
