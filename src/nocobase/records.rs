//! NocoBase I/O on an ordinary collection (the email manager's settings): its fields
//! through the API-doc plugin (`GET swagger:get?ns=collections/<name>`, which describes
//! collections defined in plugin code too, unlike the collection manager's metadata),
//! listing records with a filter (`GET <name>:list`), and updating one record
//! (`POST <name>:update?filterByTk=<key>`).
//!
//! Record bodies may hold secret values (a list or an update answer echoes the stored
//! record): they are reduced at once to field names and redacted values ([`ReadValue`]),
//! never logged, never quoted in a message.

use std::collections::BTreeMap;
use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::Value;

use super::client::{NocoBaseClient, Op, SyncError};

pub use super::record_errors::reason;

/// A field value as read, never printed: text is kept as a secret.
#[derive(Clone, Debug)]
pub enum ReadValue {
    /// `null`, or absent from the record (a field hidden from reads).
    Null,
    Text(SecretString),
    /// A number or boolean, as text (record keys, flags).
    Scalar(String),
    /// An object or array (a JSON field): its JSON text, kept secret (it may hold other
    /// secrets, such as another provider's).
    Json(SecretString),
}

impl ReadValue {
    fn from_json(v: Value) -> Self {
        match v {
            Value::Null => ReadValue::Null,
            Value::String(s) => ReadValue::Text(SecretString::from(s)),
            Value::Number(n) => ReadValue::Scalar(n.to_string()),
            Value::Bool(b) => ReadValue::Scalar(b.to_string()),
            j @ (Value::Object(_) | Value::Array(_)) => {
                ReadValue::Json(SecretString::from(j.to_string()))
            }
        }
    }

    /// The text of a text or scalar value.
    pub fn text(&self) -> Option<&str> {
        match self {
            ReadValue::Text(s) => Some(s.expose_secret()),
            ReadValue::Scalar(s) => Some(s),
            _ => None,
        }
    }
}

/// One record: field name -> value. `Debug` shows the field names only.
#[derive(Clone, Default)]
pub struct Record {
    pub fields: BTreeMap<String, ReadValue>,
}

impl fmt::Debug for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Record")
            .field("fields", &self.fields.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Record {
    /// Builds a record from a JSON object (tests and the emulator use it too).
    pub fn from_object(o: serde_json::Map<String, Value>) -> Self {
        Self {
            fields: o
                .into_iter()
                .map(|(k, v)| (k, ReadValue::from_json(v)))
                .collect(),
        }
    }

    /// The primary key NocoBase addresses the record by (`id`), as text.
    pub fn key(&self) -> Option<&str> {
        self.fields.get("id").and_then(ReadValue::text)
    }

    pub fn text(&self, field: &str) -> Option<&str> {
        self.fields.get(field).and_then(ReadValue::text)
    }

    pub fn names(&self) -> Vec<String> {
        self.fields.keys().cloned().collect()
    }

    /// Whether the read showed `field` at all (a field hidden from reads is absent).
    pub fn has(&self, field: &str) -> bool {
        self.fields.contains_key(field)
    }

    /// The JSON value of `field`: an object as read, `null`, or a scalar. `None` when the
    /// read did not show the field. Holds secrets: never log it.
    pub fn json(&self, field: &str) -> Option<Value> {
        Some(match self.fields.get(field)? {
            ReadValue::Null => Value::Null,
            ReadValue::Text(t) => Value::from(t.expose_secret()),
            ReadValue::Scalar(s) => serde_json::from_str(s).unwrap_or(Value::Null),
            ReadValue::Json(j) => serde_json::from_str(j.expose_secret()).unwrap_or(Value::Null),
        })
    }
}

/// A conditional update: the record is written only while `filter` still matches it
/// (NocoBase answers `{"data": []}` and writes nothing otherwise). Holds values: never log.
#[derive(Clone)]
pub struct Condition(pub serde_json::Map<String, Value>);

impl fmt::Debug for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Condition")
            .field(&self.0.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// How the fields of a collection were learnt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fields {
    /// From the API documentation (`swagger:get?ns=collections/<name>`).
    ApiDoc(Vec<String>),
    /// The API documentation could not tell (why): fall back to a record's keys.
    Unavailable(String),
}

#[derive(Deserialize)]
struct Envelope<T> {
    data: T,
}

impl NocoBaseClient {
    /// The collection's field names from the API-doc plugin. A 401 or a transient failure
    /// is an error; anything else the plugin cannot answer is [`Fields::Unavailable`].
    pub async fn collection_fields(&self, collection: &str) -> Result<Fields, SyncError> {
        let ns = format!("collections/{collection}");
        let body = match self
            .call_on(Op::Swagger, Op::Swagger.action(), &[("ns", &ns)], None)
            .await
        {
            Ok(b) => b,
            Err(e) if e.transient || e.reason == super::reason::API_KEY_REJECTED => {
                return Err(e);
            }
            Err(e) => return Ok(Fields::Unavailable(e.message)),
        };
        let doc: Value =
            serde_json::from_slice(&body).map_err(|_| self.unreadable(Op::Swagger, 200))?;
        let props = doc
            .pointer(&format!("/components/schemas/{collection}/properties"))
            .and_then(Value::as_object);
        Ok(match props {
            Some(p) => Fields::ApiDoc(p.keys().cloned().collect()),
            None => Fields::Unavailable(format!(
                "the API documentation of NocoBase at {} does not describe a collection named {collection}",
                self.base_url()
            )),
        })
    }

    /// Records of `collection` whose fields equal `filter` (all of them when empty),
    /// without pagination.
    pub async fn list_records(
        &self,
        collection: &str,
        filter: &BTreeMap<String, String>,
    ) -> Result<Vec<Record>, SyncError> {
        let action = format!("{collection}:list");
        let filter_json = serde_json::to_string(filter).unwrap_or_else(|_| "{}".into());
        let mut query = vec![("paginate", "false")];
        if !filter.is_empty() {
            query.push(("filter", filter_json.as_str()));
        }
        let body = self
            .call_on(Op::RecordList, &action, &query, None)
            .await
            .map_err(|e| named(e, self.base_url(), collection))?;
        let env: Envelope<Vec<serde_json::Map<String, Value>>> =
            serde_json::from_slice(&body).map_err(|_| self.unreadable(Op::RecordList, 200))?;
        Ok(env.data.into_iter().map(Record::from_object).collect())
    }

    /// Writes `values` (field -> value) into the record with primary key `key`, and gives
    /// how many records NocoBase says it updated. A field NocoBase does not know is
    /// silently ignored by NocoBase: read the record back to know what arrived.
    pub async fn update_record(
        &self,
        collection: &str,
        key: &str,
        values: &BTreeMap<String, SecretString>,
    ) -> Result<usize, SyncError> {
        let wire: serde_json::Map<String, Value> = values
            .iter()
            .map(|(k, v)| (k.clone(), Value::from(v.expose_secret())))
            .collect();
        self.update_fields(collection, key, &wire, None).await
    }

    /// Writes whole field values (a JSON field as a whole object) into the record `key`,
    /// only while `condition` still matches it when given, and gives how many records
    /// NocoBase updated (0: the condition no longer matches, or the record is gone).
    /// A key with a dot is refused before anything is sent: NocoBase would expand it and
    /// replace the whole JSON field (seen on 2.2.15).
    pub async fn update_fields(
        &self,
        collection: &str,
        key: &str,
        wire: &serde_json::Map<String, Value>,
        condition: Option<&Condition>,
    ) -> Result<usize, SyncError> {
        if let Some(k) = wire.keys().find(|k| k.contains('.')) {
            return Err(SyncError::new(
                super::reason::UNEXPECTED_RESPONSE,
                format!(
                    "the operator refused to send the field {k:?}: NocoBase expands a dotted key and replaces the whole JSON field"
                ),
            ));
        }
        let action = format!("{collection}:update");
        let body = serde_json::to_vec(wire).map_err(|_| self.unreadable(Op::RecordUpdate, 0))?;
        let filter = condition.map(|c| Value::Object(c.0.clone()).to_string());
        let mut query = vec![("filterByTk", key)];
        if let Some(f) = &filter {
            query.push(("filter", f.as_str()));
        }
        let answer = self
            .call_on(
                Op::RecordUpdate,
                &action,
                &query,
                Some((body, &[collection])),
            )
            .await
            .map_err(|e| named(e, self.base_url(), collection))?;
        // `{"data": [records]}` (`repository.update` returns the updated instances), or one
        // record; the values they echo are not looked at.
        match serde_json::from_slice::<Envelope<Value>>(&answer).map(|e| e.data) {
            Ok(Value::Array(v)) => Ok(v.len()),
            Ok(Value::Object(_)) => Ok(1),
            _ => Err(self.unreadable(Op::RecordUpdate, 200)),
        }
    }
}

/// Names the collection in the messages of errors classified without it.
fn named(e: SyncError, base: &str, collection: &str) -> SyncError {
    if e.reason == reason::REFUSED || e.reason == reason::FIELD_UNKNOWN {
        return SyncError {
            message: format!("{} (collection {collection})", e.message),
            ..e
        };
    }
    if e.reason == reason::NOT_FOUND {
        return SyncError::new(
            reason::NOT_FOUND,
            super::record_errors::not_found(base, collection),
        );
    }
    SyncError {
        message: format!("{} (collection {collection})", e.message),
        ..e
    }
}
