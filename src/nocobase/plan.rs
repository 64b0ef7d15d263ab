//! The pure sync plan: what to create or update in NocoBase, what conflicts, and which
//! owned variables a cleanup deletes. [`super::sync`] carries it out; [`super::record`]
//! records what happened.
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
//! - present, but neither created nor written by the operator before (not in status):
//!   **exists**, nothing at all is written, unless the spec opts in with
//!   `nocobase.adoptExisting`; then it is updated (adopted) but not owned: cleanup never
//!   deletes it. So an author cannot overwrite a variable somebody else keeps (an
//!   `SMTP_PASSWORD`) by naming it;
//! - otherwise (value changed, or edited in NocoBase since): **update** its value.
//!
//! `app:refresh` is called once after at least one write, or when a previous refresh
//! failed after its writes had landed.

use std::collections::{BTreeMap, BTreeSet};

use schemars::JsonSchema;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::client::{Listed, VarWrite};
use super::{VarKind, valid_name};

/// A variable the operator wants in NocoBase, without its value (the pure plan's input).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desired {
    pub name: String,
    pub kind: VarKind,
    /// [`value_fingerprint`] of the value.
    pub value_fingerprint: String,
    /// `spec.nocobase.adoptExisting`: a variable the operator did not write may be updated.
    pub adopt: bool,
}

/// A variable the operator wants in NocoBase, with its value (the input of [`sync`]).
/// `Debug` shows the value as `[REDACTED]`.
#[derive(Clone, Debug)]
pub struct DesiredVar {
    pub name: String,
    pub kind: VarKind,
    pub value: SecretString,
    pub fingerprint: String,
    /// See [`Desired::adopt`].
    pub adopt: bool,
}

impl DesiredVar {
    /// `key` keys the fingerprint (the integration's key, as for the credentials'
    /// fingerprint in status).
    pub fn new(name: impl Into<String>, kind: VarKind, value: SecretString, key: &[u8]) -> Self {
        let name = name.into();
        let fingerprint = value_fingerprint(key, &name, kind, &value);
        Self {
            name,
            kind,
            value,
            fingerprint,
            adopt: false,
        }
    }

    /// With `spec.nocobase.adoptExisting`.
    pub fn adopting(mut self, adopt: bool) -> Self {
        self.adopt = adopt;
        self
    }

    pub fn desired(&self) -> Desired {
        Desired {
            name: self.name.clone(),
            kind: self.kind,
            value_fingerprint: self.fingerprint.clone(),
            adopt: self.adopt,
        }
    }

    /// The value's first three characters ([`crate::input::secret_hint`]).
    pub fn hint(&self) -> String {
        crate::input::secret_hint(&self.value)
    }

    pub(super) fn write(&self) -> VarWrite {
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
    /// Variables present that the operator never wrote, without `adoptExisting`.
    pub exists: Vec<String>,
    /// Names NocoBase would refuse, or used for two variables.
    pub invalid_names: Vec<String>,
    /// Call `app:refresh` after the writes.
    pub refresh: bool,
}

impl Plan {
    pub fn writes(&self) -> usize {
        self.steps.len()
    }

    /// Whether the plan may be carried out (no conflict, no variable of somebody else's,
    /// no invalid name).
    pub fn blocked(&self) -> bool {
        !self.conflicts.is_empty() || !self.exists.is_empty() || !self.invalid_names.is_empty()
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
        let written_before = previous.owned.contains(&d.name);
        match previous.variables.get(&d.name) {
            None if !d.adopt && !written_before => p.exists.push(d.name.clone()),
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
    if !p.conflicts.is_empty() || !p.exists.is_empty() {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn d(name: &str, kind: VarKind, fp: &str) -> Desired {
        Desired {
            name: name.into(),
            kind,
            value_fingerprint: fp.into(),
            adopt: false,
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
        let owned_unrecorded = SyncedState {
            owned: vec!["A".into()],
            ..Default::default()
        };
        for (prev, why) in [
            (recorded(&[("A", "1", Some("t1"))]), "value changed"),
            (owned_unrecorded, "not recorded"),
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
    fn somebody_elses_variable_blocks_every_write_unless_adopted() {
        let listed = [l("A", VarKind::Secret, Some("t1"))];
        let want = [d("B", VarKind::Default, "1"), d("A", VarKind::Secret, "2")];
        let p = plan(&want, &listed, &SyncedState::default());
        assert_eq!(p.exists, ["A"]);
        assert!(p.blocked() && p.steps.is_empty() && !p.refresh);
        let adopted: Vec<Desired> = want
            .iter()
            .cloned()
            .map(|d| Desired { adopt: true, ..d })
            .collect();
        let p = plan(&adopted, &listed, &SyncedState::default());
        assert!(p.exists.is_empty() && !p.blocked());
        assert_eq!(p.steps.len(), 2);
        assert_eq!(p.steps[1].why, "not recorded");
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

    #[test]
    fn cleanup_deletes_only_owned_and_present() {
        let owned = vec!["A".to_owned(), "GONE".to_owned(), "A".to_owned()];
        let listed = [
            l("A", VarKind::Default, None),
            l("OTHER", VarKind::Secret, None),
        ];
        assert_eq!(cleanup_plan(&owned, &listed), ["A"]);
    }
}
