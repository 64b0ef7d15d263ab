//! Pure decisions about the email manager's settings: which record and fields
//! ([`locate`]), what to write ([`plan_write`]), and what reading the record back
//! confirms ([`confirm`]). Messages list field names, never values.

use secrecy::{ExposeSecret, SecretString};

use super::{MailSettingsStatus, match_text, reason};
use crate::api::MailSettings;
use crate::nocobase::{Fields, Record};

/// Something that stops the write; nothing is written then.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub reason: &'static str,
    pub message: String,
}

/// The record to write and how its fields were learnt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Located {
    /// Index of the record in the listing.
    pub index: usize,
    /// Its primary key (`filterByTk`).
    pub key: String,
    /// The collection's field names.
    pub fields: Vec<String>,
    /// Whether they came from the API documentation (else from the record's keys).
    pub from_api_doc: bool,
}

/// The values to write. `Debug` redacts the secret.
#[derive(Clone, Debug)]
pub struct Values<'a> {
    pub client_id: &'a str,
    pub client_secret: &'a SecretString,
}

impl Values<'_> {
    /// (field, value) for both fields of `s`.
    pub fn pairs<'s>(&'s self, s: &'s MailSettings) -> [(&'s str, &'s str); 2] {
        [
            (s.fields.client_id.as_str(), self.client_id),
            (
                s.fields.client_secret.as_str(),
                self.client_secret.expose_secret(),
            ),
        ]
    }
}

/// Keyed fingerprint of one field's value in one record (the project's one recipe,
/// [`crate::fingerprint::keyed`], keyed by the resource's UID).
pub fn field_fingerprint(
    key: &[u8],
    collection: &str,
    record: &str,
    field: &str,
    value: &str,
) -> String {
    crate::fingerprint::keyed(
        key,
        &[
            b"mail-settings",
            collection.as_bytes(),
            record.as_bytes(),
            field.as_bytes(),
            value.as_bytes(),
        ],
    )
}

fn listed(names: &[String]) -> String {
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

/// The collection's field names, whether they came from the API documentation, and a
/// phrase saying where they came from.
fn known_fields(fields: &Fields, records: &[Record]) -> (Vec<String>, bool, String) {
    match fields {
        Fields::ApiDoc(f) => (
            f.clone(),
            true,
            "fields from NocoBase's API documentation".to_owned(),
        ),
        Fields::Unavailable(why) => {
            let mut all: Vec<String> = records.iter().flat_map(Record::names).collect();
            all.sort();
            all.dedup();
            (
                all,
                false,
                format!(
                    "fields read from the records' keys because {why}; a field hidden from reads is not listed this way"
                ),
            )
        }
    }
}

/// Indexes of the records whose fields equal every value of `match`.
fn matching(s: &MailSettings, records: &[Record]) -> Vec<usize> {
    let hit = |r: &Record| {
        s.match_fields
            .iter()
            .all(|(k, v)| r.text(k) == Some(v.as_str()))
    };
    (0..records.len()).filter(|&i| hit(&records[i])).collect()
}

/// Finds the one record `match` selects and checks that every named field exists.
/// `records` are those NocoBase listed for the match (checked again here, so a filter
/// NocoBase ignored cannot pick a wrong record).
pub fn locate(s: &MailSettings, fields: &Fields, records: &[Record]) -> Result<Located, Problem> {
    let c = &s.collection;
    let matching = matching(s, records);
    let (known, from_api_doc, source) = known_fields(fields, records);
    let unknown = |names: Vec<&String>, what: &str, known: &[String]| Problem {
        reason: reason::FIELD_UNKNOWN,
        message: format!(
            "the collection {c} has no field {} (named in spec.nocobase.mailSettings.{what}); its fields are: {} ({source}). Map the fields to these names; nothing was written",
            names
                .iter()
                .map(|n| n.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            listed(known)
        ),
    };
    if from_api_doc || !records.is_empty() {
        let bad: Vec<&String> = s
            .match_fields
            .keys()
            .filter(|k| !known.contains(k))
            .collect();
        if !bad.is_empty() {
            return Err(unknown(bad, "match", &known));
        }
    }
    let index = match matching.as_slice() {
        [i] => *i,
        [] => {
            return Err(Problem {
                reason: reason::RECORD_NOT_FOUND,
                message: format!(
                    "no record of the collection {c} matches {} ({} record(s) listed); its fields are: {} ({source}). Save the Microsoft settings once on the email manager's Email settings page so that the record exists, or correct spec.nocobase.mailSettings.match; nothing was written",
                    match_text(&s.match_fields),
                    records.len(),
                    listed(&known)
                ),
            });
        }
        many => {
            return Err(Problem {
                reason: reason::AMBIGUOUS,
                message: format!(
                    "{} records of the collection {c} match {}: the operator does not guess which one the email manager reads. Narrow spec.nocobase.mailSettings.match (fields: {}); nothing was written",
                    many.len(),
                    match_text(&s.match_fields),
                    listed(&known)
                ),
            });
        }
    };
    let record = &records[index];
    let known = if from_api_doc {
        known.clone()
    } else {
        record.names()
    };
    let targets = [&s.fields.client_id, &s.fields.client_secret];
    let bad: Vec<&String> = targets.into_iter().filter(|f| !known.contains(f)).collect();
    if !bad.is_empty() {
        let mut p = unknown(bad, "fields", &known);
        if !from_api_doc {
            p.message = p.message.replace("the records' keys", "the record's keys");
        }
        return Err(p);
    }
    let Some(key) = record.key() else {
        return Err(no_id(s));
    };
    Ok(Located {
        index,
        key: key.to_owned(),
        fields: known,
        from_api_doc,
    })
}

fn no_id(s: &MailSettings) -> Problem {
    Problem {
        reason: crate::nocobase::reason::UNEXPECTED_RESPONSE,
        message: format!(
            "the record of the collection {} matching {} has no id, so it cannot be addressed for an update; nothing was written",
            s.collection,
            match_text(&s.match_fields)
        ),
    }
}

/// The fields to write now, and why; the others are left alone.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WritePlan {
    /// (field, why): `differs`, `empty`, `not recorded`, `changed in NocoBase`.
    pub write: Vec<(String, &'static str)>,
    pub unchanged: Vec<String>,
}

/// An unchanged value is never rewritten. A field that reads back its value is compared
/// directly; one that reads back empty or otherwise (a secret field hidden from reads) is
/// unchanged when status recorded this very value in this very record and NocoBase's
/// `updatedAt` has not moved since.
pub fn plan_write(
    s: &MailSettings,
    record: &Record,
    located: &Located,
    values: &Values<'_>,
    uid: &[u8],
    previous: Option<&MailSettingsStatus>,
) -> WritePlan {
    let mut p = WritePlan::default();
    let prev = previous.filter(|m| m.collection == s.collection && m.record == located.key);
    let untouched = match (
        prev.and_then(|m| m.updated_at.as_deref()),
        record.text("updatedAt"),
    ) {
        (Some(was), Some(now)) => was == now,
        _ => true,
    };
    for (field, value) in values.pairs(s) {
        let fp = field_fingerprint(uid, &s.collection, &located.key, field, value);
        let recorded = prev.and_then(|m| m.fields.get(field)) == Some(&fp);
        let why = match record.text(field) {
            Some(t) if t == value => None,
            _ if recorded && untouched => None,
            Some(t) if !t.is_empty() && !recorded => Some("differs"),
            Some(t) if !t.is_empty() => Some("changed in NocoBase"),
            _ if prev.is_some_and(|m| m.fields.contains_key(field)) && recorded => {
                Some("changed in NocoBase")
            }
            _ if prev.is_some_and(|m| m.fields.contains_key(field)) => Some("value changed"),
            _ => Some("not recorded"),
        };
        match why {
            None => p.unchanged.push(field.to_owned()),
            Some(w) => p.write.push((field.to_owned(), w)),
        }
    }
    p
}

/// What reading the record back after a write showed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Confirmation {
    pub confirmed: Vec<String>,
    /// (field, why): read back empty (hidden from reads), or transformed.
    pub unconfirmed: Vec<(String, &'static str)>,
    /// Fields that read back exactly as before the write although another value was
    /// written: the write did not arrive.
    pub not_applied: Vec<String>,
}

/// Compares the record after the write with the values written and the record before.
pub fn confirm(
    s: &MailSettings,
    before: &Record,
    after: Option<&Record>,
    values: &Values<'_>,
) -> Confirmation {
    let mut c = Confirmation::default();
    for (field, value) in values.pairs(s) {
        let now = after.and_then(|a| a.text(field));
        match now {
            Some(t) if t == value => c.confirmed.push(field.to_owned()),
            // absent or null: a field hidden from reads
            None => c
                .unconfirmed
                .push((field.to_owned(), "is hidden from reads")),
            Some(t) if before.text(field) == Some(t) || field == s.fields.client_id => {
                c.not_applied.push(field.to_owned())
            }
            Some("") => c.unconfirmed.push((field.to_owned(), "reads back empty")),
            Some(_) => c.unconfirmed.push((
                field.to_owned(),
                "reads back transformed (masked or encrypted)",
            )),
        }
    }
    if after.is_none() {
        c.unconfirmed.clear();
        c.confirmed.clear();
        c.not_applied = values
            .pairs(s)
            .iter()
            .map(|(f, _)| (*f).to_owned())
            .collect();
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rec(v: serde_json::Value) -> Record {
        Record::from_object(v.as_object().unwrap().clone())
    }

    fn api_doc() -> Fields {
        Fields::ApiDoc(
            ["id", "provider", "clientId", "clientSecret", "updatedAt"]
                .map(str::to_owned)
                .to_vec(),
        )
    }

    #[test]
    fn locates_the_one_matching_record() {
        let s = MailSettings::default();
        let records = [
            rec(json!({"id": 1, "provider": "gmail", "clientId": "g"})),
            rec(json!({"id": 2, "provider": "outlook", "clientId": null})),
        ];
        let l = locate(&s, &api_doc(), &records).unwrap();
        assert_eq!((l.index, l.key.as_str(), l.from_api_doc), (1, "2", true));
    }

    #[test]
    fn missing_record_field_or_several_records_name_the_fields_not_the_values() {
        let s = MailSettings::default();
        let none = locate(&s, &api_doc(), &[]).unwrap_err();
        assert_eq!(none.reason, reason::RECORD_NOT_FOUND);
        assert!(none.message.contains("clientSecret") && none.message.contains("provider=outlook"));

        let mut odd = s.clone();
        odd.fields.client_secret = "secret".into();
        let records = [rec(
            json!({"id": 1, "provider": "outlook", "clientSecret": "VALUE-x"}),
        )];
        let e = locate(&odd, &api_doc(), &records).unwrap_err();
        assert_eq!(e.reason, reason::FIELD_UNKNOWN);
        assert!(e.message.contains("no field secret") && e.message.contains("clientSecret"));
        assert!(!e.message.contains("VALUE-x"));

        let two = [
            rec(json!({"id": 1, "provider": "outlook"})),
            rec(json!({"id": 2, "provider": "outlook"})),
        ];
        assert_eq!(
            locate(&s, &api_doc(), &two).unwrap_err().reason,
            reason::AMBIGUOUS
        );
    }

    #[test]
    fn without_api_doc_the_record_keys_are_the_fields() {
        let s = MailSettings::default();
        let why = Fields::Unavailable("no API documentation".into());
        let hidden = [rec(
            json!({"id": 7, "provider": "outlook", "clientId": "c"}),
        )];
        let e = locate(&s, &why, &hidden).unwrap_err();
        assert_eq!(e.reason, reason::FIELD_UNKNOWN);
        assert!(e.message.contains("hidden from reads"), "{}", e.message);
        let full = [rec(
            json!({"id": 7, "provider": "outlook", "clientId": "c", "clientSecret": null}),
        )];
        assert!(!locate(&s, &why, &full).unwrap().from_api_doc);
    }

    #[test]
    fn unchanged_values_are_not_rewritten_and_hidden_ones_follow_the_record() {
        let s = MailSettings::default();
        let secret = SecretString::from("S3cret~value");
        let v = Values {
            client_id: "cid",
            client_secret: &secret,
        };
        let r = rec(
            json!({"id": 1, "provider": "outlook", "clientId": "cid", "clientSecret": null, "updatedAt": "t1"}),
        );
        let l = locate(&s, &api_doc(), std::slice::from_ref(&r)).unwrap();
        // nothing recorded: the hidden secret is written, the equal client ID is not
        let p = plan_write(&s, &r, &l, &v, b"uid", None);
        assert_eq!(p.write, [("clientSecret".to_owned(), "not recorded")]);
        assert_eq!(p.unchanged, ["clientId"]);
        // recorded this value, record untouched: nothing
        let mut st = MailSettingsStatus {
            collection: s.collection.clone(),
            record: "1".into(),
            updated_at: Some("t1".into()),
            ..Default::default()
        };
        for (f, val) in v.pairs(&s) {
            st.fields.insert(
                f.into(),
                field_fingerprint(b"uid", &s.collection, "1", f, val),
            );
        }
        assert!(
            plan_write(&s, &r, &l, &v, b"uid", Some(&st))
                .write
                .is_empty()
        );
        // edited in NocoBase since (updatedAt moved): written again
        let moved =
            rec(json!({"id": 1, "provider": "outlook", "clientId": "cid", "updatedAt": "t2"}));
        let p = plan_write(&s, &moved, &l, &v, b"uid", Some(&st));
        assert_eq!(
            p.write,
            [("clientSecret".to_owned(), "changed in NocoBase")]
        );
        // a new secret: written
        let other = SecretString::from("0ther~value");
        let v2 = Values {
            client_id: "cid",
            client_secret: &other,
        };
        let p = plan_write(&s, &r, &l, &v2, b"uid", Some(&st));
        assert_eq!(p.write, [("clientSecret".to_owned(), "value changed")]);
    }

    #[test]
    fn read_back_confirms_or_says_what_it_cannot() {
        let s = MailSettings::default();
        let secret = SecretString::from("S3cret~value");
        let v = Values {
            client_id: "cid",
            client_secret: &secret,
        };
        let before = rec(json!({"id": 1, "clientId": "old", "clientSecret": "old"}));
        let hidden = rec(json!({"id": 1, "clientId": "cid"}));
        let c = confirm(&s, &before, Some(&hidden), &v);
        assert_eq!(c.confirmed, ["clientId"]);
        assert_eq!(c.unconfirmed[0].0, "clientSecret");
        let ignored = rec(json!({"id": 1, "clientId": "old", "clientSecret": "old"}));
        let c = confirm(&s, &before, Some(&ignored), &v);
        assert_eq!(c.not_applied, ["clientId", "clientSecret"]);
        let masked = rec(json!({"id": 1, "clientId": "cid", "clientSecret": "******"}));
        assert_eq!(confirm(&s, &before, Some(&masked), &v).unconfirmed.len(), 1);
        assert_eq!(confirm(&s, &before, None, &v).not_applied.len(), 2);
    }
}
