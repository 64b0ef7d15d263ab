//! The write sequence for the email manager's settings: discover the collection's fields,
//! list the matching record, plan, write only what changed (a JSON field whole, under a
//! condition that the record is unchanged since the read, retried when it changed), read
//! back; and the cleanup that empties the values the operator wrote (only when asked).

use std::collections::BTreeMap;

use secrecy::SecretString;

use super::path::FieldPath;
use super::plan::{Located, Problem, Values, field_fingerprint, locate};
use super::write::{WritePlan, body, condition, confirm, plan_write};
use super::{MailSettingsStatus, check_settings, match_text, reason};
use crate::api::MailSettings;
use crate::nocobase::{Fields, NocoBaseClient, Record, SyncError};

/// The validated credentials to deliver. `Debug` redacts the secret.
#[derive(Clone, Debug)]
pub struct Wanted {
    pub client_id: String,
    pub client_secret: SecretString,
    /// The credentials fingerprint (status.lastValidation.credentialsFingerprint).
    pub credentials_fingerprint: String,
}

/// The result of a [`sync`]. `message` never holds a value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MailOutcome {
    pub ok: bool,
    pub reason: &'static str,
    pub message: String,
    /// When not ok: whether trying again soon may succeed unchanged.
    pub transient: bool,
    /// What to record in status (the previous state when nothing was written).
    pub state: Option<MailSettingsStatus>,
    /// Fields written this round.
    pub written: Vec<String>,
}

impl MailOutcome {
    fn failed(p: Problem, transient: bool, previous: Option<&MailSettingsStatus>) -> Self {
        Self {
            ok: false,
            reason: p.reason,
            message: p.message,
            transient,
            state: previous.cloned(),
            written: vec![],
        }
    }

    fn from_error(e: SyncError, previous: Option<&MailSettingsStatus>) -> Self {
        let transient = e.transient;
        Self::failed(
            Problem {
                reason: e.reason,
                message: e.message,
            },
            transient,
            previous,
        )
    }
}

/// What discovery found: the collection's fields, the matching records, the one to write.
#[derive(Clone, Debug)]
pub struct Discovered {
    pub fields: Fields,
    pub records: Vec<crate::nocobase::Record>,
    pub located: super::Located,
}

/// Finds the collection's fields and the one record to write, without writing (also what
/// `check --mail-settings` reports). The error says whether it is transient.
pub async fn discover(
    client: &NocoBaseClient,
    s: &MailSettings,
) -> Result<Discovered, (Problem, bool)> {
    check_settings(s).map_err(|p| (p, false))?;
    let at = format!("NocoBase at {}", client.base_url());
    let here = |p: Problem| {
        let message = format!("{at}: {}", p.message);
        (Problem { message, ..p }, false)
    };
    let from_error = |e: SyncError| {
        let transient = e.transient;
        (
            Problem {
                reason: e.reason,
                message: e.message,
            },
            transient,
        )
    };
    let fields = client
        .collection_fields(&s.collection)
        .await
        .map_err(from_error)?;
    if let Fields::ApiDoc(known) = &fields
        && known.is_empty()
    {
        return Err(here(Problem {
            reason: reason::NOT_FOUND,
            message: format!(
                "the API documentation describes no field of a collection {}",
                s.collection
            ),
        }));
    }
    let records = client
        .list_records(&s.collection, &s.match_fields)
        .await
        .map_err(from_error)?;
    let located = locate(s, &fields, &records).map_err(here)?;
    Ok(Discovered {
        fields,
        records,
        located,
    })
}

/// How many times a conditional write is tried while the record keeps changing between
/// the read and the write.
pub const WRITE_ATTEMPTS: usize = 3;

/// Discovers, writes what changed, reads back. `key` keys the fingerprints.
pub async fn sync(
    client: &NocoBaseClient,
    s: &MailSettings,
    wanted: &Wanted,
    key: &[u8],
    previous: Option<&MailSettingsStatus>,
) -> MailOutcome {
    let Discovered {
        fields,
        mut records,
        mut located,
    } = match discover(client, s).await {
        Ok(d) => d,
        Err((p, transient)) => return MailOutcome::failed(p, transient, previous),
    };
    let values = Values {
        client_id: &wanted.client_id,
        client_secret: &wanted.client_secret,
    };
    for attempt in 1..=WRITE_ATTEMPTS {
        let round = Round {
            client,
            s,
            values: &values,
            key,
            previous,
            wanted,
        };
        match round.run(&records[located.index], &located).await {
            Ok(out) => return out,
            Err(()) if attempt == WRITE_ATTEMPTS => break,
            // changed since the read: read again, plan again
            Err(()) => {}
        }
        let again = client.list_records(&s.collection, &s.match_fields).await;
        records = match again {
            Ok(r) => r,
            Err(e) => return MailOutcome::from_error(e, previous),
        };
        located = match locate(s, &fields, &records) {
            Ok(l) => l,
            Err(p) => return MailOutcome::failed(p, false, previous),
        };
    }
    MailOutcome::failed(
        Problem {
            reason: reason::CHANGED_DURING_WRITE,
            message: format!(
                "NocoBase at {}: the record {} of the collection {} changed between each of {WRITE_ATTEMPTS} reads and the conditional write that followed, so nothing was written (a change made meanwhile is never overwritten); the next sync tries again",
                client.base_url(),
                located.key,
                s.collection
            ),
        },
        true,
        previous,
    )
}

/// One read-plan-write round of [`sync`].
struct Round<'a> {
    client: &'a NocoBaseClient,
    s: &'a MailSettings,
    values: &'a Values<'a>,
    key: &'a [u8],
    previous: Option<&'a MailSettingsStatus>,
    wanted: &'a Wanted,
}

impl Round<'_> {
    /// The outcome, or `Err` when the conditional write found the record changed.
    async fn run(&self, record: &Record, located: &Located) -> Result<MailOutcome, ()> {
        let s = self.s;
        let plan = plan_write(s, record, located, self.values, self.key, self.previous);
        let state = self.state(record, located);
        let place = format!(
            "NocoBase at {}: the email manager's settings (collection {}, record {} matched by {})",
            self.client.base_url(),
            s.collection,
            located.key,
            match_text(&s.match_fields)
        );
        let place = match located.notes.is_empty() {
            true => place,
            false => format!("{place}; {}", located.notes.join("; ")),
        };
        if plan.write.is_empty() {
            return Ok(MailOutcome {
                ok: true,
                reason: reason::SYNCED,
                message: format!(
                    "{place} hold the validated client ID and client secret; unchanged{}",
                    unconfirmed_note(&state.unconfirmed)
                ),
                transient: false,
                state: Some(state),
                written: vec![],
            });
        }
        let paths: Vec<(FieldPath, String)> = self
            .values
            .pairs(&located.paths)
            .iter()
            .filter(|(p, _)| plan.write.iter().any(|(w, _)| *w == p.to_string()))
            .map(|(p, v)| ((*p).clone(), (*v).to_owned()))
            .collect();
        let body = match body(s, record, &paths) {
            Ok(b) => b,
            Err(p) => return Ok(MailOutcome::failed(p, false, self.previous)),
        };
        let cond = condition(record, &body);
        let updated = self
            .client
            .update_fields(&s.collection, &located.key, &body, cond.as_ref())
            .await;
        match updated {
            Ok(0) if cond.is_some() => Err(()),
            Ok(0) => Ok(MailOutcome::failed(
                Problem {
                    reason: crate::nocobase::reason::UNEXPECTED_RESPONSE,
                    message: format!(
                        "{place}: NocoBase updated no record (it was deleted after the operator listed it); the next sync looks again"
                    ),
                },
                true,
                self.previous,
            )),
            Ok(_) => Ok(self.confirm(record, located, &plan, state, &place).await),
            Err(e) => Ok(MailOutcome::from_error(e, self.previous)),
        }
    }

    /// What status records for this record: the fingerprint of each value in its path.
    fn state(&self, record: &Record, located: &Located) -> MailSettingsStatus {
        let s = self.s;
        MailSettingsStatus {
            collection: s.collection.clone(),
            record: located.key.clone(),
            fields: self
                .values
                .pairs(&located.paths)
                .iter()
                .map(|(p, v)| {
                    let p = p.to_string();
                    let fp = field_fingerprint(self.key, &s.collection, &located.key, &p, v);
                    (p, fp)
                })
                .collect(),
            credentials_fingerprint: self.wanted.credentials_fingerprint.clone(),
            updated_at: record.text("updatedAt").map(str::to_owned),
            unconfirmed: self
                .previous
                .filter(|p| p.record == located.key && p.collection == s.collection)
                .map(|p| p.unconfirmed.clone())
                .unwrap_or_default(),
        }
    }

    /// Reads the record back after the write and checks it.
    async fn confirm(
        &self,
        before: &Record,
        located: &Located,
        plan: &WritePlan,
        mut state: MailSettingsStatus,
        place: &str,
    ) -> MailOutcome {
        let s = self.s;
        let names: Vec<String> = plan.write.iter().map(|(p, _)| p.clone()).collect();
        // Written: from here on, status must say so even if the read-back fails.
        let after = match self
            .client
            .list_records(&s.collection, &s.match_fields)
            .await
        {
            Ok(r) => r,
            Err(e) => {
                let mut out = MailOutcome::from_error(e, self.previous);
                state.updated_at = None;
                out.state = Some(state);
                out.written = names;
                return out;
            }
        };
        let again = after
            .iter()
            .find(|r| r.key() == Some(state.record.as_str()));
        let c = confirm(located, before, again, self.values, &plan.write);
        if !c.not_applied.is_empty() {
            return MailOutcome {
                written: vec![],
                ..MailOutcome::failed(
                    Problem {
                        reason: reason::NOT_APPLIED,
                        message: format!(
                            "{place}: NocoBase accepted the write but {} read(s) back unchanged: the field is not stored under that name (NocoBase ignores unknown fields), or something rewrote it. Check spec.nocobase.mailSettings.fields against the request the Email settings page sends",
                            c.not_applied.join(", ")
                        ),
                    },
                    false,
                    self.previous,
                )
            };
        }
        state.updated_at = again.and_then(|r| r.text("updatedAt")).map(str::to_owned);
        // still unconfirmable: those not written now keep their mark
        state.unconfirmed.retain(|f| !names.contains(f));
        state
            .unconfirmed
            .extend(c.unconfirmed.iter().map(|(f, _)| f.clone()));
        state.unconfirmed.sort();
        MailOutcome {
            ok: true,
            reason: reason::SYNCED,
            message: written_message(place, &plan.write, &c),
            transient: false,
            state: Some(state),
            written: names,
        }
    }
}

fn unconfirmed_note(fields: &[String]) -> String {
    if fields.is_empty() {
        String::new()
    } else {
        format!(
            ". Written, not confirmable: {} (hidden from reads or read back otherwise; the operator compares with the keyed fingerprint of what it wrote and does not rewrite it)",
            fields.join(", ")
        )
    }
}

/// What was written and what reading back confirmed, field names only.
fn written_message(
    place: &str,
    write: &[(String, &'static str)],
    c: &super::Confirmation,
) -> String {
    let why: Vec<String> = write.iter().map(|(f, w)| format!("{f} ({w})")).collect();
    let unconfirmed: Vec<String> = c
        .unconfirmed
        .iter()
        .map(|(f, w)| format!("{f} {w}"))
        .collect();
    let mut message = format!(
        "{place} hold the validated client ID and client secret; wrote {}",
        why.join(", ")
    );
    let edited: Vec<&str> = write
        .iter()
        .filter(|(_, w)| *w == super::write::CHANGED_IN_NOCOBASE)
        .map(|(f, _)| f.as_str())
        .collect();
    if !edited.is_empty() {
        message.push_str(&format!(
            " (edited in NocoBase since the operator wrote it: {}; the validated value is back)",
            edited.join(", ")
        ));
    }
    if !c.confirmed.is_empty() {
        message.push_str(&format!(
            "; confirmed by reading back: {}",
            c.confirmed.join(", ")
        ));
    }
    if !unconfirmed.is_empty() {
        message.push_str(&format!(
            "; written, not confirmable: {} (the operator relies on NocoBase's answer to the write and compares with the keyed fingerprint of what it wrote)",
            unconfirmed.join(", ")
        ));
    }
    message
}

/// On deletion with `clearOnCleanup`: empties the values the operator wrote in the record
/// it wrote (inside a JSON field only its own keys, under the same condition as a write).
/// Without it, nothing is sent. Returns the paths emptied.
pub async fn cleanup(
    client: &NocoBaseClient,
    s: &MailSettings,
    state: &MailSettingsStatus,
) -> Result<Vec<String>, SyncError> {
    if !s.clear_on_cleanup || state.fields.is_empty() {
        return Ok(vec![]);
    }
    let paths: Vec<(FieldPath, String)> = state
        .fields
        .keys()
        .filter_map(|f| FieldPath::parse(f).ok())
        .map(|p| (p, String::new()))
        .collect();
    let names: Vec<String> = paths.iter().map(|(p, _)| p.to_string()).collect();
    if paths.iter().all(|(p, _)| p.is_flat()) {
        let body: BTreeMap<String, SecretString> = paths
            .iter()
            .map(|(p, _)| (p.top.clone(), SecretString::from(String::new())))
            .collect();
        client
            .update_record(&state.collection, &state.record, &body)
            .await?;
        return Ok(names);
    }
    let ms = MailSettings {
        collection: state.collection.clone(),
        ..s.clone()
    };
    for _ in 0..WRITE_ATTEMPTS {
        let records = client
            .list_records(&ms.collection, &ms.match_fields)
            .await?;
        let Some(record) = records
            .iter()
            .find(|r| r.key() == Some(state.record.as_str()))
        else {
            return Ok(vec![]);
        };
        let body = body(&ms, record, &paths).map_err(|p| SyncError::new(p.reason, p.message))?;
        let cond = condition(record, &body);
        let n = client
            .update_fields(&ms.collection, &state.record, &body, cond.as_ref())
            .await?;
        if n > 0 || cond.is_none() {
            return Ok(names);
        }
    }
    Err(SyncError {
        transient: true,
        ..SyncError::new(
            reason::CHANGED_DURING_WRITE,
            format!(
                "the record {} of the collection {} kept changing between the operator's read and its conditional write; nothing was emptied yet",
                state.record, state.collection
            ),
        )
    })
}
