//! What a sync did, recorded (pure): the state status keeps after each step, the errors the
//! plan itself finds (invalid names, type conflicts, writes not read back), the outcome's
//! message, and the retry schedule of a deletion NocoBase could not serve yet.
//! [`super::sync`] only carries steps out and reports here.

use super::classify::SyncError;
use super::client::Listed;
use super::plan::{DesiredVar, Plan, StepAction, SyncedState, SyncedVariable};
use super::reason;

/// The result of a [`super::sync`]. `message` never holds a value or the API key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncOutcome {
    pub ok: bool,
    /// One of [`super::reason`] when not ok.
    pub reason: Option<&'static str>,
    pub message: String,
    /// When not ok: whether trying again later may succeed unchanged.
    pub transient: bool,
    /// The state to record in status, also after a failure (writes that landed count).
    pub state: SyncedState,
    pub writes: usize,
    pub created: Vec<String>,
    pub updated: Vec<String>,
    pub refreshed: bool,
}

/// A sync under way: the state as it will be recorded, and the writes that landed.
#[derive(Clone, Debug)]
pub struct Progress {
    pub state: SyncedState,
    pub created: Vec<String>,
    pub updated: Vec<String>,
}

/// Where the sync went, for the outcome's message.
pub struct Place<'a> {
    pub base: &'a str,
    pub app: Option<&'a str>,
}

impl Progress {
    pub fn new(previous: &SyncedState) -> Self {
        Self {
            state: previous.clone(),
            created: vec![],
            updated: vec![],
        }
    }

    /// The outcome of a sync that stopped on `err`, keeping what landed.
    pub fn failed(self, err: SyncError) -> SyncOutcome {
        SyncOutcome {
            ok: false,
            reason: Some(err.reason),
            message: err.message,
            transient: err.transient,
            state: self.state,
            writes: self.created.len() + self.updated.len(),
            created: self.created,
            updated: self.updated,
            refreshed: false,
        }
    }

    /// A write landed: record its fingerprint and hint, and own what the operator created.
    pub fn wrote(&mut self, d: &DesiredVar, action: StepAction) {
        self.state.variables.insert(
            d.name.clone(),
            SyncedVariable {
                fingerprint: d.fingerprint.clone(),
                updated_at: None,
                hint: Some(d.hint()),
            },
        );
        match action {
            StepAction::Create => {
                if !self.state.owned.contains(&d.name) {
                    self.state.owned.push(d.name.clone());
                }
                self.created.push(d.name.clone());
            }
            StepAction::Update => self.updated.push(d.name.clone()),
        }
    }

    /// A write failed: a refresh is owed for what landed before it.
    pub fn write_failed(mut self, err: SyncError, desired: &[DesiredVar]) -> SyncOutcome {
        self.state.refresh_pending |= !self.created.is_empty() || !self.updated.is_empty();
        prune(&mut self.state, desired, None);
        self.failed(err)
    }

    /// Fills in `updatedAt` and the hint of unchanged variables where an older status
    /// lacked them.
    pub fn fill_unchanged(&mut self, desired: &[DesiredVar], p: &Plan, listed: &[Listed]) {
        for name in &p.unchanged {
            if let (Some(rec), Some(l), Some(d)) = (
                self.state.variables.get_mut(name),
                listed.iter().find(|l| &l.name == name),
                desired.iter().find(|d| &d.name == name),
            ) {
                if rec.updated_at.is_none() {
                    rec.updated_at.clone_from(&l.updated_at);
                }
                rec.hint.get_or_insert_with(|| d.hint());
            }
        }
    }

    /// The listing after the writes: every desired variable must be there with its type;
    /// their `updatedAt` is recorded. A write that does not show up is forgotten, so that
    /// the next sync writes again.
    pub fn read_back(
        &mut self,
        desired: &[DesiredVar],
        listing: &[Listed],
        base: &str,
    ) -> Result<(), SyncError> {
        let missing: Vec<String> = desired
            .iter()
            .filter(|d| !listing.iter().any(|l| l.name == d.name && l.kind == d.kind))
            .map(|d| format!("{} ({})", d.name, d.kind))
            .collect();
        if !missing.is_empty() {
            for d in desired {
                self.state.variables.remove(&d.name);
            }
            prune(&mut self.state, desired, Some(listing));
            return Err(SyncError::new(
                reason::UNEXPECTED_RESPONSE,
                format!(
                    "NocoBase at {base} accepted the writes but does not list {} afterwards; the operator will write again at the next sync",
                    missing.join(", ")
                ),
            ));
        }
        for d in desired {
            if let (Some(rec), Some(l)) = (
                self.state.variables.get_mut(&d.name),
                listing.iter().find(|l| l.name == d.name),
            ) {
                rec.updated_at.clone_from(&l.updated_at);
            }
        }
        Ok(())
    }

    /// The outcome of a sync that went through. `still_restarting`: NocoBase had not come
    /// back from the operator's `app:refresh` when the operator stopped waiting.
    pub fn done(
        self,
        desired: &[DesiredVar],
        at: &Place<'_>,
        refreshed: bool,
        still_restarting: bool,
    ) -> SyncOutcome {
        let names: Vec<&str> = desired.iter().map(|d| d.name.as_str()).collect();
        let app = at
            .app
            .map_or(String::new(), |a| format!(" (application {a})"));
        let mut message = format!("NocoBase at {}{app} holds {}", at.base, names.join(", "));
        if self.created.is_empty() && self.updated.is_empty() {
            message.push_str(", unchanged");
        }
        if !self.created.is_empty() {
            message.push_str(&format!("; created {}", self.created.join(", ")));
        }
        if !self.updated.is_empty() {
            message.push_str(&format!("; updated {}", self.updated.join(", ")));
        }
        if refreshed {
            message.push_str("; applied with app:refresh");
        }
        if still_restarting {
            message.push_str(" (NocoBase was still restarting when the operator stopped waiting)");
        }
        SyncOutcome {
            ok: true,
            reason: None,
            message,
            transient: false,
            state: self.state,
            writes: self.created.len() + self.updated.len(),
            created: self.created,
            updated: self.updated,
            refreshed,
        }
    }
}

/// Keeps records only for desired names, and (with a listing) ownership only for names
/// NocoBase still lists.
pub fn prune(state: &mut SyncedState, desired: &[DesiredVar], listing: Option<&[Listed]>) {
    state
        .variables
        .retain(|name, _| desired.iter().any(|d| &d.name == name));
    if let Some(listing) = listing {
        state.owned.retain(|n| listing.iter().any(|l| &l.name == n));
    }
    state.owned.sort();
    state.owned.dedup();
}

/// Names NocoBase would refuse, found before anything is sent.
pub fn invalid_names(invalid: &[String]) -> Option<SyncError> {
    (!invalid.is_empty()).then(|| {
        SyncError::new(
            reason::INVALID_VARIABLE_NAME,
            format!(
                "{} cannot be used as NocoBase variable name(s): a name starts with a letter, holds only letters, digits and underscores (at most 255), and each variable needs its own. Correct spec.nocobase.variables; nothing was sent to NocoBase",
                invalid.join(", ")
            ),
        )
    })
}

/// Variables of the other type: nothing is written.
pub fn type_conflicts(p: &Plan, base: &str) -> Option<SyncError> {
    if p.conflicts.is_empty() {
        return None;
    }
    let list: Vec<String> = p
        .conflicts
        .iter()
        .map(|c| format!("{} is of type {} (wanted {})", c.name, c.found, c.wanted))
        .collect();
    Some(SyncError::new(
        reason::VARIABLE_TYPE_CONFLICT,
        format!(
            "in NocoBase at {base}, {}. The operator never changes a variable's type, so nothing was written. Delete the variable in NocoBase (Settings > Variables and secrets) so that the operator creates it with the right type, or choose other names in spec.nocobase.variables",
            list.join("; ")
        ),
    ))
}

/// The variables present in NocoBase that the operator never wrote, named without
/// `adoptExisting`: nothing is written.
pub fn existing_variables(p: &Plan, base: &str) -> Option<SyncError> {
    if p.exists.is_empty() {
        return None;
    }
    // Not transient, unlike the create race of the same reason: somebody must act.
    Some(SyncError {
        transient: false,
        ..SyncError::new(
            reason::VARIABLE_EXISTS,
            format!(
                "in NocoBase at {base}, the variables {} exist and were not created by this integration, so nothing was written (they may be somebody else's). Choose other names in spec.nocobase.variables, or set spec.nocobase.adoptExisting: true to let the operator overwrite them (it then keeps them up to date, but a cleanup never deletes them)",
                crate::quote::list(&p.exists, ", ")
            ),
        )
    })
}

/// What a deletion does after a transient failure to delete the variables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CleanupWait {
    /// The first failure: record `now` as the start of the wait (status), announce it with
    /// a Warning Event, and try again after this long.
    Start(std::time::Duration),
    /// Still within `cleanupTimeout`: try again after this long.
    Retry(std::time::Duration),
    /// `cleanupTimeout` has passed since the wait started: give up with a Warning Event.
    GiveUp,
}

/// The pure retry schedule of a deletion that NocoBase could not serve yet: pauses grow
/// with the time already waited (half of it, from 2 s up to 1 min), never past the
/// deadline; a start in the future (a clock set back) counts as now.
pub fn cleanup_wait(
    since: Option<jiff::Timestamp>,
    now: jiff::Timestamp,
    timeout: jiff::SignedDuration,
) -> CleanupWait {
    use std::time::Duration;
    let waited = since
        .map(|s| now.duration_since(s).max(jiff::SignedDuration::ZERO))
        .unwrap_or(jiff::SignedDuration::ZERO);
    if since.is_some() && waited >= timeout {
        return CleanupWait::GiveUp;
    }
    let left = Duration::try_from(timeout.saturating_sub(waited)).unwrap_or(Duration::ZERO);
    let grown = Duration::try_from(waited / 2).unwrap_or(Duration::ZERO);
    let pause = grown
        .clamp(Duration::from_secs(2), Duration::from_secs(60))
        .min(left.max(Duration::from_secs(1)));
    if since.is_none() {
        CleanupWait::Start(pause)
    } else {
        CleanupWait::Retry(pause)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleanup_waits_with_growing_pauses_until_the_timeout() {
        use std::time::Duration;
        let t0: jiff::Timestamp = "2027-01-01T00:00:00Z".parse().unwrap();
        let ten = jiff::SignedDuration::from_mins(10);
        let at = |s: i64| t0 + jiff::SignedDuration::from_secs(s);
        assert_eq!(
            cleanup_wait(None, t0, ten),
            CleanupWait::Start(Duration::from_secs(2))
        );
        assert_eq!(
            cleanup_wait(Some(t0), at(1), ten),
            CleanupWait::Retry(Duration::from_secs(2))
        );
        assert_eq!(
            cleanup_wait(Some(t0), at(60), ten),
            CleanupWait::Retry(Duration::from_secs(30))
        );
        assert_eq!(
            cleanup_wait(Some(t0), at(500), ten),
            CleanupWait::Retry(Duration::from_secs(60))
        );
        // never past the deadline
        assert_eq!(
            cleanup_wait(Some(t0), at(590), ten),
            CleanupWait::Retry(Duration::from_secs(10))
        );
        assert_eq!(cleanup_wait(Some(t0), at(600), ten), CleanupWait::GiveUp);
        assert_eq!(cleanup_wait(Some(t0), at(86_400), ten), CleanupWait::GiveUp);
        // a start in the future counts as now; extreme values do not panic
        assert_eq!(
            cleanup_wait(Some(at(100)), t0, ten),
            CleanupWait::Retry(Duration::from_secs(2))
        );
        let _ = cleanup_wait(Some(jiff::Timestamp::MIN), jiff::Timestamp::MAX, ten);
        let _ = cleanup_wait(Some(t0), t0, jiff::SignedDuration::MAX);
    }
}
