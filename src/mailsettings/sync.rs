//! The write sequence for the email manager's settings: discover the collection's fields,
//! list the matching record, plan, write only what changed, read back; and the cleanup
//! that empties the fields the operator wrote (only when asked).

use std::collections::BTreeMap;

use secrecy::SecretString;

use super::plan::{Problem, Values, confirm, field_fingerprint, locate, plan_write};
use super::{MailSettingsStatus, check_settings, match_text, reason};
use crate::api::MailSettings;
use crate::nocobase::{Fields, NocoBaseClient, SyncError};

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

/// Discovers, writes what changed, reads back. `uid` keys the fingerprints.
pub async fn sync(
    client: &NocoBaseClient,
    s: &MailSettings,
    wanted: &Wanted,
    uid: &[u8],
    previous: Option<&MailSettingsStatus>,
) -> MailOutcome {
    let at = format!("NocoBase at {}", client.base_url());
    let Discovered {
        records, located, ..
    } = match discover(client, s).await {
        Ok(d) => d,
        Err((p, transient)) => return MailOutcome::failed(p, transient, previous),
    };
    let record = &records[located.index];
    let values = Values {
        client_id: &wanted.client_id,
        client_secret: &wanted.client_secret,
    };
    let plan = plan_write(s, record, &located, &values, uid, previous);
    let state = MailSettingsStatus {
        collection: s.collection.clone(),
        record: located.key.clone(),
        fields: values
            .pairs(s)
            .iter()
            .map(|(f, v)| {
                (
                    (*f).to_owned(),
                    field_fingerprint(uid, &s.collection, &located.key, f, v),
                )
            })
            .collect(),
        credentials_fingerprint: wanted.credentials_fingerprint.clone(),
        updated_at: record.text("updatedAt").map(str::to_owned),
        unconfirmed: previous
            .filter(|p| p.record == located.key && p.collection == s.collection)
            .map(|p| p.unconfirmed.clone())
            .unwrap_or_default(),
    };
    let place = format!(
        "{at}: the email manager's settings (collection {}, record {} matched by {})",
        s.collection,
        located.key,
        match_text(&s.match_fields)
    );
    if plan.write.is_empty() {
        return MailOutcome {
            ok: true,
            reason: reason::SYNCED,
            message: format!(
                "{place} hold the validated client ID and client secret; unchanged{}",
                unconfirmed_note(&state.unconfirmed)
            ),
            transient: false,
            state: Some(state),
            written: vec![],
        };
    }
    write_and_confirm(
        client,
        s,
        &values,
        &plan.write,
        record,
        state,
        previous,
        &place,
    )
    .await
}

fn unconfirmed_note(fields: &[String]) -> String {
    if fields.is_empty() {
        String::new()
    } else {
        format!(
            ". Not confirmed by reading back: {} (hidden from reads; the operator relies on NocoBase's answer to the write and on the fingerprint in status)",
            fields.join(", ")
        )
    }
}

/// Writes the planned fields in one update, reads the record back and checks it.
#[allow(clippy::too_many_arguments)]
async fn write_and_confirm(
    client: &NocoBaseClient,
    s: &MailSettings,
    values: &Values<'_>,
    write: &[(String, &'static str)],
    before: &crate::nocobase::Record,
    mut state: MailSettingsStatus,
    previous: Option<&MailSettingsStatus>,
    place: &str,
) -> MailOutcome {
    let body: BTreeMap<String, SecretString> = values
        .pairs(s)
        .iter()
        .filter(|(f, _)| write.iter().any(|(w, _)| w == f))
        .map(|(f, v)| ((*f).to_owned(), SecretString::from((*v).to_owned())))
        .collect();
    let names: Vec<String> = body.keys().cloned().collect();
    match client
        .update_record(&s.collection, &state.record, &body)
        .await
    {
        Ok(0) => {
            return MailOutcome::failed(
                Problem {
                    reason: crate::nocobase::reason::UNEXPECTED_RESPONSE,
                    message: format!(
                        "{place}: NocoBase updated no record (it was deleted after the operator listed it); the next sync looks again"
                    ),
                },
                true,
                previous,
            );
        }
        Ok(_) => {}
        Err(e) => return MailOutcome::from_error(e, previous),
    }
    // Written: from here on, status must say so even if the read-back fails.
    let after = match client.list_records(&s.collection, &s.match_fields).await {
        Ok(r) => r,
        Err(e) => {
            let mut out = MailOutcome::from_error(e, previous);
            state.updated_at = None;
            out.state = Some(state);
            out.written = names;
            return out;
        }
    };
    let again = after
        .iter()
        .find(|r| r.key() == Some(state.record.as_str()));
    let c = confirm(s, before, again, values);
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
                previous,
            )
        };
    }
    state.updated_at = again.and_then(|r| r.text("updatedAt")).map(str::to_owned);
    state.unconfirmed = c.unconfirmed.iter().map(|(f, _)| f.clone()).collect();
    MailOutcome {
        ok: true,
        reason: reason::SYNCED,
        message: written_message(place, write, &c),
        transient: false,
        state: Some(state),
        written: names,
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
    if !c.confirmed.is_empty() {
        message.push_str(&format!(
            "; confirmed by reading back: {}",
            c.confirmed.join(", ")
        ));
    }
    if !unconfirmed.is_empty() {
        message.push_str(&format!(
            "; not confirmed: {} (the operator relies on NocoBase's answer to the write)",
            unconfirmed.join(", ")
        ));
    }
    message
}

/// On deletion with `clearOnCleanup`: empties the fields the operator wrote in the record
/// it wrote. Without it, nothing is sent. Returns the fields emptied.
pub async fn cleanup(
    client: &NocoBaseClient,
    s: &MailSettings,
    state: &MailSettingsStatus,
) -> Result<Vec<String>, SyncError> {
    if !s.clear_on_cleanup || state.fields.is_empty() {
        return Ok(vec![]);
    }
    let body: BTreeMap<String, SecretString> = state
        .fields
        .keys()
        .map(|f| (f.clone(), SecretString::from(String::new())))
        .collect();
    client
        .update_record(&state.collection, &state.record, &body)
        .await?;
    Ok(body.into_keys().collect())
}
