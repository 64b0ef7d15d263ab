//! Pure decisions about the email manager's settings: which record and which fields or
//! keys inside a JSON field ([`locate`]); what to write and how is in [`super::write`].
//! Messages list field and key names, never values.

use secrecy::{ExposeSecret, SecretString};

use super::path::{FieldPath, Lookup, get};
use super::{match_text, reason};
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
    /// Where the client ID and the client secret go, as found in the record (a flat name
    /// the collection lacks at the top level may be found inside `options`).
    pub paths: [FieldPath; 2],
    /// Notes on how the paths were found (names only), for the condition's message.
    pub notes: Vec<String>,
}

/// The JSON field a flat name is looked for in when the collection has no such field
/// (NocoBase's providers keep their credentials in `options`: authenticators,
/// notification channels, storages).
pub const OPTIONS_FIELD: &str = "options";

/// The values to write. `Debug` redacts the secret.
#[derive(Clone, Debug)]
pub struct Values<'a> {
    pub client_id: &'a str,
    pub client_secret: &'a SecretString,
}

impl Values<'_> {
    /// (path, value) for the client ID and the client secret, at `paths`.
    pub fn pairs<'s>(&'s self, paths: &'s [FieldPath; 2]) -> [(&'s FieldPath, &'s str); 2] {
        [
            (&paths[0], self.client_id),
            (&paths[1], self.client_secret.expose_secret()),
        ]
    }
}

/// Keyed fingerprint of one field's value in one record (the project's one recipe,
/// [`crate::fingerprint::keyed`], keyed by the integration's key).
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

/// The collection's fields as quoted: NocoBase chooses them, so the first few and a count.
fn listed(names: &[String]) -> String {
    if names.is_empty() {
        "none".into()
    } else {
        crate::quote::list(names, ", ")
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

fn unknown(
    s: &MailSettings,
    names: &[&String],
    what: &str,
    known: &[String],
    source: &str,
) -> Problem {
    Problem {
        reason: reason::FIELD_UNKNOWN,
        message: format!(
            "the collection {} has no field {} (named in spec.nocobase.mailSettings.{what}); its fields are: {} ({source}). Map the fields to these names; nothing was written",
            s.collection,
            crate::quote::list(names, ", "),
            listed(known)
        ),
    }
}

/// The index of the one record `match` selects, or why there is none.
fn select(
    s: &MailSettings,
    records: &[Record],
    known: &[String],
    source: &str,
) -> Result<usize, Problem> {
    let c = &s.collection;
    match matching(s, records).as_slice() {
        [i] => Ok(*i),
        [] => Err(Problem {
            reason: reason::RECORD_NOT_FOUND,
            message: format!(
                "no record of the collection {c} matches {} ({} record(s) listed); its fields are: {} ({source}). Save the Microsoft settings once on the email manager's Email settings page so that the record exists, or correct spec.nocobase.mailSettings.match; nothing was written",
                match_text(&s.match_fields),
                records.len(),
                listed(known)
            ),
        }),
        many => Err(Problem {
            reason: reason::AMBIGUOUS,
            message: format!(
                "{} records of the collection {c} match {}: the operator does not guess which one the email manager reads. Narrow spec.nocobase.mailSettings.match (fields: {}); nothing was written",
                many.len(),
                match_text(&s.match_fields),
                listed(known)
            ),
        }),
    }
}

/// Finds the one record `match` selects and checks that every named field exists.
/// `records` are those NocoBase listed for the match (checked again here, so a filter
/// NocoBase ignored cannot pick a wrong record).
pub fn locate(s: &MailSettings, fields: &Fields, records: &[Record]) -> Result<Located, Problem> {
    let (known, from_api_doc, source) = known_fields(fields, records);
    if from_api_doc || !records.is_empty() {
        let bad: Vec<&String> = s
            .match_fields
            .keys()
            .filter(|k| !known.contains(k))
            .collect();
        if !bad.is_empty() {
            return Err(unknown(s, &bad, "match", &known, &source));
        }
    }
    let index = select(s, records, &known, &source)?;
    let record = &records[index];
    let known = if from_api_doc {
        known.clone()
    } else {
        record.names()
    };
    let (paths, notes) = resolve_paths(s, record, &known).map_err(|e| match e {
        Err(p) => p,
        Ok(bad) => {
            let source = source.replace("the records' keys", "the record's keys");
            let bad: Vec<&String> = bad.iter().collect();
            unknown(s, &bad, "fields", &known, &source)
        }
    })?;
    let Some(key) = record.key() else {
        return Err(no_id(s));
    };
    Ok(Located {
        index,
        key: key.to_owned(),
        fields: known,
        from_api_doc,
        paths,
        notes,
    })
}

/// The paths of the client ID and the client secret in `record`, with notes; or the
/// spec paths whose field the collection lacks (`Ok`), or another problem (`Err`).
#[allow(clippy::type_complexity)]
fn resolve_paths(
    s: &MailSettings,
    record: &Record,
    known: &[String],
) -> Result<([FieldPath; 2], Vec<String>), Result<Vec<String>, Problem>> {
    let mut notes = vec![];
    let mut paths = vec![];
    let mut bad = vec![];
    for spec_path in [&s.fields.client_id, &s.fields.client_secret] {
        let path = FieldPath::parse(spec_path).map_err(|m| {
            Err(Problem {
                reason: reason::INVALID,
                message: format!("spec.nocobase.mailSettings.fields: {m}; nothing was written"),
            })
        })?;
        if known.contains(&path.top) {
            check_path(s, record, &path).map_err(Err)?;
            paths.push(path);
        } else if let Some(p) = in_options(record, &path) {
            notes.push(format!("{path} found inside {OPTIONS_FIELD} as {p}"));
            paths.push(p);
        } else {
            bad.push(spec_path.clone());
        }
    }
    if !bad.is_empty() {
        return Err(Ok(bad));
    }
    let [a, b]: [FieldPath; 2] = paths.try_into().expect("two paths");
    Ok(([a, b], notes))
}

/// A flat name the collection lacks, found as a key of the record's `options` object.
fn in_options(record: &Record, path: &FieldPath) -> Option<FieldPath> {
    if !path.is_flat() {
        return None;
    }
    let inside = path.inside(OPTIONS_FIELD);
    let options = record.json(OPTIONS_FIELD)?;
    matches!(get(&options, &inside.keys), Lookup::Found(v) if v.is_string() || v.is_null())
        .then_some(inside)
}

/// A path into a JSON field: the field must be readable (a hidden one cannot be merged)
/// and hold the keys (unless `createMissingKeys`); the last one holds text or nothing.
fn check_path(s: &MailSettings, record: &Record, path: &FieldPath) -> Result<(), Problem> {
    if path.is_flat() {
        return Ok(());
    }
    let c = &s.collection;
    let top = &path.top;
    let Some(v) = record.json(top) else {
        return Err(Problem {
            reason: reason::FIELD_HIDDEN,
            message: format!(
                "the field {top} of the collection {c} is hidden from reads, so the path {path} cannot be written: NocoBase replaces a JSON field whole on update, and without reading it the operator would drop every other key it holds. Write the value at the top level instead, or make {top} readable; nothing was written"
            ),
        });
    };
    let missing = |at: &str, present: &[String]| Problem {
        reason: reason::FIELD_UNKNOWN,
        message: format!(
            "the JSON field {top} of the matching record of the collection {c} has no key {} (named in spec.nocobase.mailSettings.fields as {path}){at}; its keys there: {}. Map fields to an existing key, or set createMissingKeys to create it; nothing was written",
            path.key_text(),
            listed(present)
        ),
    };
    let unusable = |what: &str| Problem {
        reason: reason::FIELD_UNKNOWN,
        message: format!(
            "the path {path} (spec.nocobase.mailSettings.fields) cannot be written in the collection {c}: {what}; nothing was written"
        ),
    };
    match (get(&v, &path.keys), v.is_null()) {
        (Lookup::Found(found), _) if found.is_string() || found.is_null() => Ok(()),
        (Lookup::Found(_), _) => Err(unusable("its value is not text")),
        _ if s.create_missing_keys && (v.is_null() || v.is_object()) => Ok(()),
        (_, true) => Err(missing(" (the field is empty)", &[])),
        (Lookup::Missing { depth, present }, _) => {
            let at = match depth {
                0 => String::new(),
                d => format!(" (missing below {})", path.keys[..d].join(".")),
            };
            Err(missing(&at, &present))
        }
        (Lookup::NotObject { depth }, _) => Err(unusable(&format!(
            "{top}{} is not a JSON object",
            path.keys[..depth]
                .iter()
                .map(|k| format!(".{k}"))
                .collect::<String>()
        ))),
    }
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
    fn paths_are_checked_against_the_record() {
        let mut s = MailSettings::default();
        s.match_fields.clear();
        s.fields.client_id = "options.outlook.clientId".into();
        s.fields.client_secret = "options.outlook.clientSecret".into();
        let doc = Fields::ApiDoc(vec!["id".into(), "options".into()]);
        let ok = [rec(
            json!({"id": 1, "options": {"outlook": {"clientId": "", "clientSecret": null}}}),
        )];
        let l = locate(&s, &doc, &ok).unwrap();
        assert_eq!(l.paths[1].to_string(), "options.outlook.clientSecret");
        let hidden = [rec(json!({"id": 1}))];
        assert_eq!(
            locate(&s, &doc, &hidden).unwrap_err().reason,
            reason::FIELD_HIDDEN
        );
        let other = [rec(
            json!({"id": 1, "options": {"gmail": {}, "flag": true}}),
        )];
        let e = locate(&s, &doc, &other).unwrap_err();
        assert_eq!(e.reason, reason::FIELD_UNKNOWN);
        assert!(
            e.message.contains("no key outlook.clientId") && e.message.contains("flag, gmail"),
            "{}",
            e.message
        );
        let not_text = [rec(
            json!({"id": 1, "options": {"outlook": {"clientId": {}, "clientSecret": ""}}}),
        )];
        assert!(
            locate(&s, &doc, &not_text)
                .unwrap_err()
                .message
                .contains("not text")
        );
        s.create_missing_keys = true;
        assert!(locate(&s, &doc, &other).is_ok());
        let scalar = [rec(json!({"id": 1, "options": "text"}))];
        assert!(
            locate(&s, &doc, &scalar)
                .unwrap_err()
                .message
                .contains("is not a JSON object")
        );
    }

    #[test]
    fn flat_defaults_are_found_inside_options() {
        let s = MailSettings::default();
        let doc = Fields::ApiDoc(vec!["id".into(), "provider".into(), "options".into()]);
        let r = [rec(
            json!({"id": 1, "provider": "outlook", "options": {"clientId": "", "clientSecret": ""}}),
        )];
        let l = locate(&s, &doc, &r).unwrap();
        assert_eq!(l.paths[0].to_string(), "options.clientId");
        assert_eq!(l.notes.len(), 2);
    }
}
