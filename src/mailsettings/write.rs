//! Pure decisions of a write into the email manager's settings: which values to write
//! ([`plan_write`]), the update body with JSON fields merged ([`body`]), the condition
//! that makes it safe against a concurrent change ([`condition`]), and what reading the
//! record back confirms ([`confirm`]). No decision rests on `updatedAt` moving: values
//! that can be read are compared, one that cannot is compared with the keyed fingerprint
//! of what the operator last wrote.

use serde_json::{Map, Value};

use super::MailSettingsStatus;
use super::path::{FieldPath, Lookup, get, set};
use super::plan::{Located, Problem, Values, field_fingerprint};
use crate::api::MailSettings;
use crate::nocobase::{Condition, Record};

/// What the record shows at `path`: `Some(text)`, `None` for null or empty; `Err` when
/// the read does not show the field at all (hidden from reads).
fn read(record: &Record, path: &FieldPath) -> Result<Option<String>, ()> {
    let v = record.json(&path.top).ok_or(())?;
    Ok(match get(&v, &path.keys) {
        Lookup::Found(Value::String(t)) => Some(t.clone()),
        Lookup::Found(Value::Null) | Lookup::Missing { .. } | Lookup::NotObject { .. } => None,
        Lookup::Found(other) => Some(other.to_string()),
    })
}

/// The fields to write now, and why; the others are left alone.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WritePlan {
    /// (path, why): `differs`, `empty`, `not recorded`, `value changed`,
    /// `changed in NocoBase` (an edit made in NocoBase since the operator's write).
    pub write: Vec<(String, &'static str)>,
    pub unchanged: Vec<String>,
}

impl WritePlan {
    /// The paths edited in NocoBase since the operator wrote them.
    pub fn edited(&self) -> Vec<String> {
        self.write
            .iter()
            .filter(|(_, w)| *w == CHANGED_IN_NOCOBASE)
            .map(|(p, _)| p.clone())
            .collect()
    }
}

/// Why a value the operator wrote is written again: someone changed it in NocoBase.
pub const CHANGED_IN_NOCOBASE: &str = "changed in NocoBase";

/// An unchanged value is never rewritten. A value that can be read is compared with the
/// one to write; a field that cannot be read back (hidden from reads, or read back
/// transformed: `unconfirmed` in status) is unchanged when status holds the keyed
/// fingerprint of this very value in this very record.
pub fn plan_write(
    s: &MailSettings,
    record: &Record,
    located: &Located,
    values: &Values<'_>,
    key: &[u8],
    previous: Option<&MailSettingsStatus>,
) -> WritePlan {
    let mut p = WritePlan::default();
    let prev = previous.filter(|m| m.collection == s.collection && m.record == located.key);
    for (path, value) in values.pairs(&located.paths) {
        let name = path.to_string();
        let fp = field_fingerprint(key, &s.collection, &located.key, &name, value);
        let had = prev.and_then(|m| m.fields.get(&name));
        let recorded = had == Some(&fp);
        let blind = prev.is_some_and(|m| m.unconfirmed.contains(&name));
        let now = read(record, path);
        let why = match &now {
            Ok(Some(t)) if t == value => None,
            _ if recorded && (blind || now.is_err()) => None,
            Err(()) if had.is_some() => Some("value changed"),
            Err(()) => Some("not recorded"),
            Ok(_) if recorded => Some(CHANGED_IN_NOCOBASE),
            Ok(_) if had.is_some() => Some("value changed"),
            Ok(Some(t)) if !t.is_empty() => Some("differs"),
            Ok(_) => Some("empty"),
        };
        match why {
            None => p.unchanged.push(name),
            Some(w) => p.write.push((name, w)),
        }
    }
    p
}

/// The update body: each written flat field with its value; each JSON field written
/// whole, as read with only the operator's keys changed (NocoBase replaces a JSON field
/// on update and expands dotted keys, so a path is never sent as a key). `paths` give
/// each path's value (the credentials, or "" on cleanup).
pub fn body(
    s: &MailSettings,
    record: &Record,
    paths: &[(FieldPath, String)],
) -> Result<Map<String, Value>, Problem> {
    let mut out = Map::new();
    for (path, value) in paths {
        if path.is_flat() {
            out.insert(path.top.clone(), Value::from(value.as_str()));
            continue;
        }
        let current = match out.remove(&path.top) {
            Some(v) => v,
            None => record.json(&path.top).ok_or_else(|| hidden(s, path))?,
        };
        let mut merged = match current {
            Value::Null if s.create_missing_keys => Value::Object(Map::new()),
            v => v,
        };
        set(
            &mut merged,
            &path.keys,
            Value::from(value.as_str()),
            s.create_missing_keys,
        )
        .map_err(|_| Problem {
            reason: super::reason::FIELD_UNKNOWN,
            message: format!(
                "the JSON field {} of the record no longer holds the key {}; nothing was written",
                path.top,
                path.key_text()
            ),
        })?;
        out.insert(path.top.clone(), merged);
    }
    Ok(out)
}

fn hidden(s: &MailSettings, path: &FieldPath) -> Problem {
    Problem {
        reason: super::reason::FIELD_HIDDEN,
        message: format!(
            "the field {} of the collection {} is hidden from reads, so {path} cannot be merged; nothing was written",
            path.top, s.collection
        ),
    }
}

/// The condition of an update that writes a JSON field whole: the record still as read.
/// With `updatedAt`, its value (NocoBase moves it on every change). Without it, every
/// scalar the JSON fields held when read, in NocoBase's nested filter form
/// (`{"$and": [{"options": {"gmail": {"clientId": {"$eq": ...}}}}, ...]}`; a null field
/// as `{"$empty": true}`): NocoBase 2.2.15 cannot compare a `json` column whole
/// ("operator does not exist: json = unknown"). Keys holding a dot or starting with `$`
/// and arrays cannot be filtered on and are left out of it (README). `None` when only
/// flat fields are written (writing one cannot lose another's change), or when the JSON
/// held nothing to compare.
pub fn condition(record: &Record, body: &Map<String, Value>) -> Option<Condition> {
    let json_fields: Vec<&String> = body.keys().filter(|k| !body[*k].is_string()).collect();
    if json_fields.is_empty() {
        return None;
    }
    let mut c = Map::new();
    if let Some(at) = record.text("updatedAt") {
        c.insert("updatedAt".into(), serde_json::json!({"$eq": at}));
        return Some(Condition(c));
    }
    let mut all = vec![];
    for f in json_fields {
        match record.json(f).unwrap_or(Value::Null) {
            Value::Null => all.push(serde_json::json!({ f.as_str(): {"$empty": true} })),
            was => leaves(&was, &mut vec![f.clone()], &mut all),
        }
    }
    if all.is_empty() {
        return None;
    }
    c.insert("$and".into(), Value::Array(all));
    Some(Condition(c))
}

/// One `$eq` filter per scalar below `v`, nested under `at`.
fn leaves(v: &Value, at: &mut Vec<String>, out: &mut Vec<Value>) {
    match v {
        Value::Object(o) => {
            for (k, child) in o {
                if k.contains('.') || k.starts_with('$') {
                    continue;
                }
                at.push(k.clone());
                leaves(child, at, out);
                at.pop();
            }
        }
        Value::Array(_) => {}
        scalar => {
            let leaf = at.iter().rev().fold(
                serde_json::json!({"$eq": scalar}),
                |inner, k| serde_json::json!({ k.as_str(): inner }),
            );
            out.push(leaf);
        }
    }
}

/// What reading the record back after a write showed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Confirmation {
    pub confirmed: Vec<String>,
    /// (path, why): hidden from reads, or read back transformed: written, not
    /// confirmable.
    pub unconfirmed: Vec<(String, &'static str)>,
    /// Paths that read back exactly as before the write although another value was
    /// written: the write did not arrive.
    pub not_applied: Vec<String>,
}

/// Compares the record after the write with the values written and the record before.
pub fn confirm(
    located: &Located,
    before: &Record,
    after: Option<&Record>,
    values: &Values<'_>,
    written: &[(String, &'static str)],
) -> Confirmation {
    let mut c = Confirmation::default();
    for (path, value) in values.pairs(&located.paths) {
        let name = path.to_string();
        if !written.iter().any(|(w, _)| *w == name) {
            continue;
        }
        let now = after.map(|a| read(a, path));
        match now {
            Some(Ok(Some(t))) if t == value => c.confirmed.push(name),
            Some(Err(())) => c.unconfirmed.push((name, "is hidden from reads")),
            None => c.not_applied.push(name),
            Some(Ok(t)) if Ok(t.clone()) == read(before, path) => c.not_applied.push(name),
            Some(Ok(_)) => c
                .unconfirmed
                .push((name, "reads back otherwise (masked or transformed)")),
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::SecretString;
    use serde_json::json;

    fn rec(v: Value) -> Record {
        Record::from_object(v.as_object().unwrap().clone())
    }

    fn located(id: &str, secret: &str) -> Located {
        Located {
            index: 0,
            key: "1".into(),
            fields: vec![],
            from_api_doc: true,
            paths: [
                FieldPath::parse(id).unwrap(),
                FieldPath::parse(secret).unwrap(),
            ],
            notes: vec![],
        }
    }

    #[test]
    fn json_fields_are_merged_whole_and_conditioned() {
        let s = MailSettings::default();
        let r = rec(
            json!({"id": 1, "options": {"gmail": {"clientId": "g"}, "flag": true,
            "outlook": {"clientId": "", "clientSecret": ""}}}),
        );
        let paths = [
            (
                FieldPath::parse("options.outlook.clientId").unwrap(),
                "c".to_owned(),
            ),
            (
                FieldPath::parse("options.outlook.clientSecret").unwrap(),
                "s".to_owned(),
            ),
        ];
        let b = body(&s, &r, &paths).unwrap();
        assert_eq!(
            Value::Object(b.clone()),
            json!({"options": {"gmail": {"clientId": "g"}, "flag": true,
                "outlook": {"clientId": "c", "clientSecret": "s"}}})
        );
        // no updatedAt: the JSON field's own content is the condition
        let c = condition(&r, &b).unwrap();
        let and = c.0["$and"].as_array().unwrap();
        assert!(
            and.contains(&json!({"options": {"flag": {"$eq": true}}})),
            "{and:?}"
        );
        assert!(and.contains(&json!({"options": {"gmail": {"clientId": {"$eq": "g"}}}})));
        assert_eq!(and.len(), 4);
        let with_at = rec(json!({"id": 1, "updatedAt": "t1", "options": {}}));
        assert_eq!(
            condition(&with_at, &b).unwrap().0["updatedAt"],
            json!({"$eq": "t1"})
        );
        let flat = body(
            &s,
            &r,
            &[(FieldPath::parse("clientId").unwrap(), "c".into())],
        );
        assert!(condition(&r, &flat.unwrap()).is_none());
    }

    #[test]
    fn readable_values_are_compared_and_hidden_ones_by_fingerprint() {
        let s = MailSettings::default();
        let secret = SecretString::from("S3cret~value");
        let v = Values {
            client_id: "cid",
            client_secret: &secret,
        };
        let l = located("options.clientId", "clientSecret");
        // clientSecret hidden (absent from the read), options.clientId readable
        let r = rec(json!({"id": 1, "options": {"clientId": "cid"}}));
        let p = plan_write(&s, &r, &l, &v, b"k", None);
        assert_eq!(p.write, [("clientSecret".to_owned(), "not recorded")]);
        let mut st = MailSettingsStatus {
            collection: s.collection.clone(),
            record: "1".into(),
            ..Default::default()
        };
        for (f, val) in v.pairs(&l.paths) {
            let f = f.to_string();
            let fp = field_fingerprint(b"k", &s.collection, "1", &f, val);
            st.fields.insert(f, fp);
        }
        assert!(plan_write(&s, &r, &l, &v, b"k", Some(&st)).write.is_empty());
        // a hand edit of the readable nested value: detected, written again
        let edited = rec(json!({"id": 1, "options": {"clientId": "typed"}}));
        let p = plan_write(&s, &edited, &l, &v, b"k", Some(&st));
        assert_eq!(p.edited(), ["options.clientId"]);
        // a new secret: written although hidden
        let other = SecretString::from("0ther~value");
        let v2 = Values {
            client_id: "cid",
            client_secret: &other,
        };
        let p = plan_write(&s, &r, &l, &v2, b"k", Some(&st));
        assert_eq!(p.write, [("clientSecret".to_owned(), "value changed")]);
    }

    #[test]
    fn read_back_confirms_or_says_what_it_cannot() {
        let secret = SecretString::from("S3cret~value");
        let v = Values {
            client_id: "cid",
            client_secret: &secret,
        };
        let l = located("clientId", "options.clientSecret");
        let all = [
            ("clientId".to_owned(), "differs"),
            ("options.clientSecret".to_owned(), "differs"),
        ];
        let before = rec(json!({"id": 1, "clientId": "old", "options": {"clientSecret": "old"}}));
        let ok =
            rec(json!({"id": 1, "clientId": "cid", "options": {"clientSecret": "S3cret~value"}}));
        let c = confirm(&l, &before, Some(&ok), &v, &all);
        assert_eq!(c.confirmed, ["clientId", "options.clientSecret"]);
        let hidden = rec(json!({"id": 1, "clientId": "cid"}));
        let c = confirm(&l, &before, Some(&hidden), &v, &all);
        assert_eq!(c.unconfirmed[0].0, "options.clientSecret");
        let c = confirm(&l, &before, Some(&before), &v, &all);
        assert_eq!(c.not_applied, ["clientId", "options.clientSecret"]);
        let masked = rec(json!({"id": 1, "clientId": "cid", "options": {"clientSecret": "***"}}));
        assert_eq!(
            confirm(&l, &before, Some(&masked), &v, &all)
                .unconfirmed
                .len(),
            1
        );
    }
}
