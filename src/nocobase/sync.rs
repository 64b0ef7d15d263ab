//! Keeping NocoBase's variables equal to the validated credentials: a pure [`plan`] (what
//! to create or update, what conflicts), the pure [`cleanup_plan`], and the [`sync`] and
//! [`cleanup`] sequences that carry them out with a [`NocoBaseClient`].
//!
//! Rules (see `docs/nocobase.md`):
//! - missing in NocoBase: **create** it with the wanted type; the operator then *owns* it;
//! - present with the other type (`default` vs `secret`): **conflict**, nothing at all is
//!   written (not even the other variables, so NocoBase never holds a client ID and a
//!   secret that do not belong together); the operator never changes a variable's type,
//!   whether it created the variable or not;
//! - present with the wanted type, and the recorded fingerprint equals the wanted one and
//!   NocoBase's `updatedAt` is the one recorded after the operator's last write (when
//!   both are known): **unchanged**;
//! - otherwise (value changed, nothing recorded, or edited in NocoBase since): **update**
//!   its value. A variable that existed before the operator is updated (adopted) but not
//!   owned: cleanup never deletes it.
//!
//! `app:refresh` is called once after at least one write, or when a previous refresh
//! failed after its writes had landed.

use std::collections::{BTreeMap, BTreeSet};

use schemars::JsonSchema;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::client::{Listed, NocoBaseClient, SyncError, VarKind, VarWrite};
use super::{reason, valid_name};

/// A variable the operator wants in NocoBase, without its value (the pure plan's input).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desired {
    pub name: String,
    pub kind: VarKind,
    /// [`value_fingerprint`] of the value.
    pub value_fingerprint: String,
}

/// A variable the operator wants in NocoBase, with its value (the input of [`sync`]).
/// `Debug` shows the value as `[REDACTED]`.
#[derive(Clone, Debug)]
pub struct DesiredVar {
    pub name: String,
    pub kind: VarKind,
    pub value: SecretString,
    pub fingerprint: String,
}

impl DesiredVar {
    /// `key` keys the fingerprint (the resource's UID, as for the credentials'
    /// fingerprint in status).
    pub fn new(name: impl Into<String>, kind: VarKind, value: SecretString, key: &[u8]) -> Self {
        let name = name.into();
        let fingerprint = value_fingerprint(key, &name, kind, &value);
        Self {
            name,
            kind,
            value,
            fingerprint,
        }
    }

    pub fn desired(&self) -> Desired {
        Desired {
            name: self.name.clone(),
            kind: self.kind,
            value_fingerprint: self.fingerprint.clone(),
        }
    }

    /// The value's first three characters ([`crate::input::secret_hint`]).
    pub fn hint(&self) -> String {
        crate::input::secret_hint(&self.value)
    }

    fn write(&self) -> VarWrite {
        VarWrite {
            name: self.name.clone(),
            kind: self.kind,
            value: self.value.clone(),
        }
    }
}

/// HMAC-SHA256 of name, type and value keyed by `key`, 128 bits in hex: tells whether a
/// value changed without keeping it.
pub fn value_fingerprint(key: &[u8], name: &str, kind: VarKind, value: &SecretString) -> String {
    crate::fingerprint::keyed(
        key,
        &[
            b"nocobase-variable",
            name.as_bytes(),
            kind.as_str().as_bytes(),
            value.expose_secret().as_bytes(),
        ],
    )
}

/// What the operator recorded (in the resource's status) after its last sync.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SyncedState {
    /// Variable name -> what the operator last wrote there (or confirmed unchanged).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub variables: BTreeMap<String, SyncedVariable>,
    /// Names of the variables the operator created (sorted): the only ones a cleanup may
    /// delete. A name stays here while the variable exists, even after it is renamed in
    /// the spec, so that a cleanup can still remove it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub owned: Vec<String>,
    /// Writes landed but `app:refresh` failed: the next sync refreshes even if it writes
    /// nothing.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub refresh_pending: bool,
    /// Deletion of the integration: when the operator started waiting for NocoBase to
    /// delete the variables (RFC 3339), so that `spec.nocobase.cleanupTimeout` counts from
    /// there also across operator restarts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cleanup_waiting_since: Option<String>,
}

/// What the operator last wrote into one variable.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SyncedVariable {
    /// [`value_fingerprint`] of the value written.
    pub fingerprint: String,
    /// NocoBase's `updatedAt` of the variable as read back after the write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
    /// The value's first three characters (what Microsoft itself shows of a secret): says
    /// which value NocoBase holds when the credentials can no longer be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

/// A write of the plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepAction {
    Create,
    Update,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    pub name: String,
    pub kind: VarKind,
    pub action: StepAction,
    /// Why: `missing`, `value changed`, `not recorded`, `changed in NocoBase`.
    pub why: &'static str,
}

/// A variable present with the other type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    pub name: String,
    pub wanted: VarKind,
    pub found: VarKind,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Writes, in the order of the desired variables. Empty when anything below is not.
    pub steps: Vec<Step>,
    pub unchanged: Vec<String>,
    pub conflicts: Vec<Conflict>,
    /// Names NocoBase would refuse, or used for two variables.
    pub invalid_names: Vec<String>,
    /// Call `app:refresh` after the writes.
    pub refresh: bool,
}

impl Plan {
    pub fn writes(&self) -> usize {
        self.steps.len()
    }

    /// Whether the plan may be carried out (no conflict, no invalid name).
    pub fn blocked(&self) -> bool {
        !self.conflicts.is_empty() || !self.invalid_names.is_empty()
    }
}

/// The pure plan; see the module documentation for the rules.
pub fn plan(desired: &[Desired], listed: &[Listed], previous: &SyncedState) -> Plan {
    let mut p = Plan::default();
    let mut seen = BTreeSet::new();
    for d in desired {
        if (!valid_name(&d.name) || !seen.insert(d.name.as_str()))
            && !p.invalid_names.contains(&d.name)
        {
            p.invalid_names.push(d.name.clone());
        }
    }
    if !p.invalid_names.is_empty() {
        return p;
    }
    for d in desired {
        let Some(found) = listed.iter().find(|l| l.name == d.name) else {
            p.steps.push(step(d, StepAction::Create, "missing"));
            continue;
        };
        if found.kind != d.kind {
            p.conflicts.push(Conflict {
                name: d.name.clone(),
                wanted: d.kind,
                found: found.kind,
            });
            continue;
        }
        match previous.variables.get(&d.name) {
            None => p.steps.push(step(d, StepAction::Update, "not recorded")),
            Some(rec) if rec.fingerprint != d.value_fingerprint => {
                p.steps.push(step(d, StepAction::Update, "value changed"))
            }
            Some(rec) => match (&rec.updated_at, &found.updated_at) {
                (Some(was), Some(now)) if was != now => {
                    p.steps
                        .push(step(d, StepAction::Update, "changed in NocoBase"))
                }
                _ => p.unchanged.push(d.name.clone()),
            },
        }
    }
    if !p.conflicts.is_empty() {
        p.steps.clear();
        p.unchanged.clear();
        return p;
    }
    p.refresh = !p.steps.is_empty() || previous.refresh_pending;
    p
}

fn step(d: &Desired, action: StepAction, why: &'static str) -> Step {
    Step {
        name: d.name.clone(),
        kind: d.kind,
        action,
        why,
    }
}

/// The variables a cleanup deletes: those the operator owns that NocoBase still lists,
/// sorted. Whether to delete at all (`spec.nocobase.deleteOnCleanup`) is the caller's
/// decision.
pub fn cleanup_plan(owned: &[String], listed: &[Listed]) -> Vec<String> {
    let present: BTreeSet<&str> = listed.iter().map(|l| l.name.as_str()).collect();
    let names: BTreeSet<&String> = owned
        .iter()
        .filter(|n| present.contains(n.as_str()))
        .collect();
    names.into_iter().cloned().collect()
}

/// The result of a [`sync`]. `message` never holds a value or the API key.
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

impl SyncOutcome {
    fn failed(
        err: SyncError,
        state: SyncedState,
        created: Vec<String>,
        updated: Vec<String>,
    ) -> Self {
        Self {
            ok: false,
            reason: Some(err.reason),
            message: err.message,
            transient: err.transient,
            state,
            writes: created.len() + updated.len(),
            created,
            updated,
            refreshed: false,
        }
    }
}

/// Lists, plans, writes (one request per variable, so ownership is exact), reads back
/// names and types, then calls `app:refresh` once and waits for NocoBase to come back.
/// The read-back comes before the refresh because NocoBase answers HTTP 503 while it
/// restarts the application.
pub async fn sync(
    client: &NocoBaseClient,
    desired: &[DesiredVar],
    previous: &SyncedState,
) -> SyncOutcome {
    let keep = |err: SyncError| SyncOutcome::failed(err, previous.clone(), vec![], vec![]);
    let wanted: Vec<Desired> = desired.iter().map(DesiredVar::desired).collect();
    // Names are checked before anything is sent.
    let invalid = plan(&wanted, &[], previous).invalid_names;
    if !invalid.is_empty() {
        return keep(SyncError::new(
            reason::INVALID_VARIABLE_NAME,
            format!(
                "{} cannot be used as NocoBase variable name(s): a name starts with a letter, holds only letters, digits and underscores (at most 255), and each variable needs its own. Correct spec.nocobase.variables; nothing was sent to NocoBase",
                invalid.join(", ")
            ),
        ));
    }
    let listed = match client.list().await {
        Ok(l) => l,
        Err(e) => return keep(e),
    };
    let p = plan(&wanted, &listed, previous);
    if !p.conflicts.is_empty() {
        return keep(conflict_error(client, &p.conflicts));
    }
    let mut w = Progress {
        state: previous.clone(),
        created: vec![],
        updated: vec![],
    };
    if let Err(e) = write_steps(client, desired, &p.steps, &mut w).await {
        w.state.refresh_pending |= !w.created.is_empty() || !w.updated.is_empty();
        prune(&mut w.state, desired, None);
        return w.failed(e);
    }
    fill_unchanged(&mut w.state, desired, &listed, &p.unchanged);
    let mut final_listing = listed;
    if !p.steps.is_empty() {
        w.state.refresh_pending = true;
        final_listing = match read_back(client, desired, &mut w.state).await {
            Ok(l) => l,
            Err(e) => return w.failed(e),
        };
    }
    prune(&mut w.state, desired, Some(&final_listing));

    let mut still_restarting = false;
    if p.refresh {
        if let Err(e) = client.refresh().await {
            w.state.refresh_pending = true;
            return w.failed(e);
        }
        w.state.refresh_pending = false;
        // NocoBase answers 503 while it reloads: wait here, so that the reconcile the
        // operator's own writes trigger does not find it restarting.
        still_restarting = client
            .wait_until_back()
            .await
            .is_err_and(|e| e.reason == reason::NOCOBASE_RESTARTING);
    }
    let message = success_message(client, desired, &w, p.refresh, still_restarting);
    SyncOutcome {
        ok: true,
        reason: None,
        message,
        transient: false,
        state: w.state,
        writes: w.created.len() + w.updated.len(),
        created: w.created,
        updated: w.updated,
        refreshed: p.refresh,
    }
}

/// What a sync has done so far: the state to record and the writes that landed.
struct Progress {
    state: SyncedState,
    created: Vec<String>,
    updated: Vec<String>,
}

impl Progress {
    fn failed(self, e: SyncError) -> SyncOutcome {
        SyncOutcome::failed(e, self.state, self.created, self.updated)
    }
}

fn conflict_error(client: &NocoBaseClient, conflicts: &[Conflict]) -> SyncError {
    let list: Vec<String> = conflicts
        .iter()
        .map(|c| format!("{} is of type {} (wanted {})", c.name, c.found, c.wanted))
        .collect();
    SyncError::new(
        reason::VARIABLE_TYPE_CONFLICT,
        format!(
            "in NocoBase at {}, {}. The operator never changes a variable's type, so nothing was written. Delete the variable in NocoBase (Settings > Variables and secrets) so that the operator creates it with the right type, or choose other names in spec.nocobase.variables",
            client.base_url(),
            list.join("; ")
        ),
    )
}

/// Carries out the plan's writes in order, recording each one that landed.
async fn write_steps(
    client: &NocoBaseClient,
    desired: &[DesiredVar],
    steps: &[Step],
    w: &mut Progress,
) -> Result<(), SyncError> {
    for s in steps {
        let d = desired
            .iter()
            .find(|d| d.name == s.name)
            .expect("steps come from desired");
        match s.action {
            StepAction::Create => client.create(&[d.write()]).await?,
            StepAction::Update => client.update(&d.write()).await?,
        }
        w.state.variables.insert(
            d.name.clone(),
            SyncedVariable {
                fingerprint: d.fingerprint.clone(),
                updated_at: None,
                hint: Some(d.hint()),
            },
        );
        match s.action {
            StepAction::Create => {
                if !w.state.owned.contains(&d.name) {
                    w.state.owned.push(d.name.clone());
                }
                w.created.push(d.name.clone());
            }
            StepAction::Update => w.updated.push(d.name.clone()),
        }
    }
    Ok(())
}

/// Fills in `updatedAt` and the hint where an older status lacked them.
fn fill_unchanged(
    state: &mut SyncedState,
    desired: &[DesiredVar],
    listed: &[Listed],
    unchanged: &[String],
) {
    for name in unchanged {
        if let (Some(rec), Some(l), Some(d)) = (
            state.variables.get_mut(name),
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

/// Lists again after the writes: every desired name must be there with its type; records
/// NocoBase's `updatedAt` of each.
async fn read_back(
    client: &NocoBaseClient,
    desired: &[DesiredVar],
    state: &mut SyncedState,
) -> Result<Vec<Listed>, SyncError> {
    let listing = match client.list().await {
        Ok(l) => l,
        Err(e) => {
            prune(state, desired, None);
            return Err(e);
        }
    };
    let missing: Vec<String> = desired
        .iter()
        .filter(|d| !listing.iter().any(|l| l.name == d.name && l.kind == d.kind))
        .map(|d| format!("{} ({})", d.name, d.kind))
        .collect();
    if !missing.is_empty() {
        for d in desired {
            state.variables.remove(&d.name);
        }
        prune(state, desired, Some(&listing));
        return Err(SyncError::new(
            reason::UNEXPECTED_RESPONSE,
            format!(
                "NocoBase at {} accepted the writes but does not list {} afterwards; the operator will write again at the next sync",
                client.base_url(),
                missing.join(", ")
            ),
        ));
    }
    for d in desired {
        if let (Some(rec), Some(l)) = (
            state.variables.get_mut(&d.name),
            listing.iter().find(|l| l.name == d.name),
        ) {
            rec.updated_at.clone_from(&l.updated_at);
        }
    }
    Ok(listing)
}

fn success_message(
    client: &NocoBaseClient,
    desired: &[DesiredVar],
    w: &Progress,
    refreshed: bool,
    still_restarting: bool,
) -> String {
    let names: Vec<&str> = desired.iter().map(|d| d.name.as_str()).collect();
    let mut message = format!(
        "NocoBase at {}{} holds {}",
        client.base_url(),
        client
            .app()
            .map_or(String::new(), |a| format!(" (application {a})")),
        names.join(", ")
    );
    if w.created.is_empty() && w.updated.is_empty() {
        message.push_str(", unchanged");
    } else {
        if !w.created.is_empty() {
            message.push_str(&format!("; created {}", w.created.join(", ")));
        }
        if !w.updated.is_empty() {
            message.push_str(&format!("; updated {}", w.updated.join(", ")));
        }
    }
    if refreshed {
        message.push_str("; applied with app:refresh");
    }
    if still_restarting {
        message.push_str(" (NocoBase was still restarting when the operator stopped waiting)");
    }
    message
}

/// Keeps records only for desired names, and (with a listing) ownership only for names
/// NocoBase still lists.
fn prune(state: &mut SyncedState, desired: &[DesiredVar], listing: Option<&[Listed]>) {
    state
        .variables
        .retain(|name, _| desired.iter().any(|d| &d.name == name));
    if let Some(listing) = listing {
        state.owned.retain(|n| listing.iter().any(|l| &l.name == n));
    }
    state.owned.sort();
    state.owned.dedup();
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

/// The result of a [`cleanup`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CleanupOutcome {
    /// Variables deleted from NocoBase.
    pub deleted: Vec<String>,
    /// Owned variables left in place because deletion is not opted in.
    pub kept: Vec<String>,
    pub refreshed: bool,
}

/// On deletion of the resource: with `delete_on_cleanup`, deletes the variables the
/// operator owns (never others) and refreshes once; without it, sends nothing.
pub async fn cleanup(
    client: &NocoBaseClient,
    state: &SyncedState,
    delete_on_cleanup: bool,
) -> Result<CleanupOutcome, SyncError> {
    if !delete_on_cleanup {
        let mut kept = state.owned.clone();
        kept.sort();
        kept.dedup();
        return Ok(CleanupOutcome {
            kept,
            ..Default::default()
        });
    }
    let listed = client.list().await?;
    let doomed = cleanup_plan(&state.owned, &listed);
    for name in &doomed {
        client.destroy(name).await?;
    }
    let refreshed = !doomed.is_empty();
    if refreshed {
        client.refresh().await?;
    }
    Ok(CleanupOutcome {
        deleted: doomed,
        kept: vec![],
        refreshed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(name: &str, kind: VarKind, fp: &str) -> Desired {
        Desired {
            name: name.into(),
            kind,
            value_fingerprint: fp.into(),
        }
    }

    fn l(name: &str, kind: VarKind, at: Option<&str>) -> Listed {
        Listed {
            name: name.into(),
            kind,
            updated_at: at.map(str::to_owned),
        }
    }

    fn recorded(entries: &[(&str, &str, Option<&str>)]) -> SyncedState {
        SyncedState {
            variables: entries
                .iter()
                .map(|(n, fp, at)| {
                    (
                        n.to_string(),
                        SyncedVariable {
                            fingerprint: fp.to_string(),
                            updated_at: at.map(str::to_owned),
                            hint: None,
                        },
                    )
                })
                .collect(),
            owned: entries.iter().map(|(n, _, _)| n.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn missing_is_created_and_refreshed() {
        let p = plan(
            &[d("A", VarKind::Default, "1"), d("S", VarKind::Secret, "2")],
            &[],
            &SyncedState::default(),
        );
        assert_eq!(p.writes(), 2);
        assert!(p.steps.iter().all(|s| s.action == StepAction::Create));
        assert!(p.refresh);
    }

    #[test]
    fn recorded_and_untouched_is_unchanged() {
        let p = plan(
            &[d("A", VarKind::Default, "1")],
            &[l("A", VarKind::Default, Some("t1"))],
            &recorded(&[("A", "1", Some("t1"))]),
        );
        assert_eq!(p.writes(), 0);
        assert_eq!(p.unchanged, ["A"]);
        assert!(!p.refresh);
        // Unknown timestamps on either side do not force a write.
        for (was, now) in [(None, Some("t1")), (Some("t1"), None), (None, None)] {
            let p = plan(
                &[d("A", VarKind::Default, "1")],
                &[l("A", VarKind::Default, now)],
                &recorded(&[("A", "1", was)]),
            );
            assert_eq!(p.writes(), 0);
        }
    }

    #[test]
    fn changed_value_unknown_record_or_edit_in_nocobase_update() {
        let desired = [d("A", VarKind::Secret, "2")];
        let listed = [l("A", VarKind::Secret, Some("t1"))];
        for (prev, why) in [
            (recorded(&[("A", "1", Some("t1"))]), "value changed"),
            (SyncedState::default(), "not recorded"),
            (recorded(&[("A", "2", Some("t0"))]), "changed in NocoBase"),
        ] {
            let p = plan(&desired, &listed, &prev);
            assert_eq!(p.steps.len(), 1);
            assert_eq!(p.steps[0].action, StepAction::Update);
            assert_eq!(p.steps[0].why, why);
            assert!(p.refresh);
        }
    }

    #[test]
    fn a_type_conflict_blocks_every_write() {
        let p = plan(
            &[d("A", VarKind::Default, "1"), d("S", VarKind::Secret, "2")],
            &[l("S", VarKind::Default, None)],
            &SyncedState::default(),
        );
        assert!(p.blocked());
        assert!(p.steps.is_empty());
        assert!(!p.refresh);
        assert_eq!(
            p.conflicts,
            [Conflict {
                name: "S".into(),
                wanted: VarKind::Secret,
                found: VarKind::Default
            }]
        );
    }

    #[test]
    fn invalid_or_repeated_names_block_every_write() {
        let p = plan(
            &[
                d("1A", VarKind::Default, "1"),
                d("B", VarKind::Default, "1"),
                d("B", VarKind::Secret, "2"),
            ],
            &[],
            &SyncedState::default(),
        );
        assert_eq!(p.invalid_names, ["1A", "B"]);
        assert!(p.steps.is_empty() && !p.refresh);
    }

    #[test]
    fn a_pending_refresh_is_retried_without_writes() {
        let mut prev = recorded(&[("A", "1", None)]);
        prev.refresh_pending = true;
        let p = plan(
            &[d("A", VarKind::Default, "1")],
            &[l("A", VarKind::Default, None)],
            &prev,
        );
        assert_eq!(p.writes(), 0);
        assert!(p.refresh);
    }

    #[test]
    fn cleanup_deletes_only_owned_and_present() {
        let owned = vec!["A".to_owned(), "GONE".to_owned(), "A".to_owned()];
        let listed = [
            l("A", VarKind::Default, None),
            l("OTHER", VarKind::Secret, None),
        ];
        assert_eq!(cleanup_plan(&owned, &listed), ["A"]);
    }

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

    #[test]
    fn fingerprints_are_keyed_and_depend_on_every_part() {
        let v = SecretString::from("value");
        let base = value_fingerprint(b"k", "A", VarKind::Secret, &v);
        assert_eq!(base.len(), 32);
        assert_ne!(base, value_fingerprint(b"k2", "A", VarKind::Secret, &v));
        assert_ne!(base, value_fingerprint(b"k", "B", VarKind::Secret, &v));
        assert_ne!(base, value_fingerprint(b"k", "A", VarKind::Default, &v));
        assert_ne!(
            base,
            value_fingerprint(b"k", "A", VarKind::Secret, &SecretString::from("other"))
        );
    }

    #[test]
    fn state_round_trips_in_camel_case() {
        let mut s = recorded(&[("A", "1", Some("t"))]);
        s.refresh_pending = true;
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["variables"]["A"]["updatedAt"], "t");
        assert_eq!(json["refreshPending"], true);
        assert_eq!(serde_json::from_value::<SyncedState>(json).unwrap(), s);
        assert_eq!(
            serde_json::to_string(&SyncedState::default()).unwrap(),
            "{}"
        );
    }
}
