//! A stateful emulator of NocoBase's "Variables and secrets" API (wiremock responder),
//! answering with the shapes in tests/fixtures/nocobase (sources in its SOURCES.md).
//! Shared by tests/nocobase.rs and tests/reconciler.rs.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use wiremock::{Request, Respond, ResponseTemplate};

/// The API key the emulator accepts.
pub const API_KEY: &str = "eyJhbGciOiJIUzI1NiJ9.FAKE-NOCOBASE-API-KEY.c2lnbmF0dXJl";

pub fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/fixtures/nocobase/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

pub fn json_fixture(status: u16, name: &str) -> ResponseTemplate {
    ResponseTemplate::new(status)
        .insert_header("content-type", "application/json; charset=utf-8")
        .set_body_bytes(fixture(name))
}

pub fn not_found() -> ResponseTemplate {
    ResponseTemplate::new(404)
        .insert_header("content-type", "text/plain; charset=utf-8")
        .set_body_bytes(fixture("not_found.txt"))
}

pub fn json_body(status: u16, v: &Value) -> ResponseTemplate {
    ResponseTemplate::new(status)
        .insert_header("content-type", "application/json; charset=utf-8")
        .set_body_bytes(serde_json::to_vec(v).unwrap())
}

#[derive(Clone, Debug)]
pub struct Var {
    pub kind: Option<String>,
    pub value: String,
    pub updated_at: String,
}

/// An ordinary collection (the email manager's `mailSettings` or a stand-in): its fields,
/// those hidden from reads (as `hidden: true` fields are), and its records.
#[derive(Clone, Debug, Default)]
pub struct Collection {
    pub fields: Vec<String>,
    pub hidden: Vec<String>,
    /// Fields described but never stored by an update (the write silently lands nowhere).
    pub ignored: Vec<String>,
    pub records: Vec<serde_json::Map<String, Value>>,
    /// Applied to the addressed record just before the next update is evaluated (field ->
    /// value), as a concurrent edit made between the operator's read and its write; the
    /// next `concurrent_edits` updates each get one (an object value stamped with
    /// `editedAt`, so that each edit is a change).
    pub concurrent_edit: Vec<(String, Value)>,
    /// Fields of type json (a dotted key of an update expands into them; into any other
    /// field it stores "[object Object]").
    pub json: Vec<String>,
    pub concurrent_edits: usize,
    /// Updates answered `{"data": []}` because their `filter` no longer matched.
    pub conditional_misses: usize,
}

#[derive(Default)]
pub struct State {
    pub vars: BTreeMap<String, Var>,
    /// Collections served by `<name>:list`, `<name>:update` and `swagger:get`.
    pub collections: BTreeMap<String, Collection>,
    /// The API-doc plugin is disabled (`swagger:get` answers 404).
    pub no_api_doc: bool,
    /// The next this many requests answer 503 `APP_COMMANDING` (NocoBase refreshing).
    pub commanding: usize,
    /// Record updates received (bodies are not kept).
    pub record_updates: usize,
    /// The next record update answers 503 `APP_COMMANDING` without writing.
    pub fail_next_update: bool,
    /// `meta.updated` of the list: set by update and destroy, cleared by a restart.
    pub updated: bool,
    pub refreshes: usize,
    pub clock: u64,
    /// Requests answered `503 APP_COMMANDING` from now on, before anything else (as the
    /// real gateway does while the application reloads: no authentication, no action).
    pub restarting_for: usize,
    /// `restarting_for` after each `app:refresh`: the real NocoBase reloads its plugins
    /// for one to several seconds after answering the refresh.
    pub restart_after_refresh: usize,
}

impl State {
    pub fn tick(&mut self) -> String {
        self.clock += 1;
        format!(
            "2026-05-04T09:12:{:02}.{:03}Z",
            self.clock / 1000,
            self.clock % 1000
        )
    }

    pub fn record(name: &str, v: &Var, with_value: bool) -> Value {
        json!({
            "name": name,
            "type": v.kind,
            "value": if with_value { Value::from(v.value.clone()) } else { Value::Null },
            "createdAt": "2026-05-04T09:12:00.000Z",
            "updatedAt": v.updated_at,
        })
    }
}

/// NocoBase's `/api/` as far as the operator uses it.
#[derive(Clone)]
pub struct NocoBase {
    pub state: Arc<Mutex<State>>,
    /// `None`: the main application only; `Some(app)`: requests must carry `X-App: app`.
    pub app: Option<String>,
    pub plugin_enabled: bool,
}

pub fn valid_name(n: &str) -> bool {
    let mut c = n.chars();
    c.next().is_some_and(|f| f.is_ascii_alphabetic())
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_')
}

impl Respond for NocoBase {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        // The gateway picks the application before anything else.
        let x_app = req.headers.get("x-app").and_then(|v| v.to_str().ok());
        if x_app.is_some() && x_app != self.app.as_deref() {
            return json_fixture(404, "error_app_not_found.json");
        }
        if self.app.is_some() && x_app.is_none() {
            // The main application of this emulator has no plugin at all.
            return not_found();
        }
        {
            let mut st = self.state.lock().unwrap();
            if st.restarting_for > 0 {
                st.restarting_for -= 1;
                return json_fixture(503, "error_app_commanding.json");
            }
        }
        let action = req.url.path().strip_prefix("/api/").unwrap_or("");
        {
            let mut st = self.state.lock().unwrap();
            if st.commanding > 0 {
                st.commanding -= 1;
                return json_fixture(503, "error_app_commanding.json");
            }
        }
        if let Some(answer) = self.records(req, action) {
            return answer;
        }
        let known = matches!(
            action,
            "environmentVariables:list"
                | "environmentVariables:create"
                | "environmentVariables:update"
                | "environmentVariables:destroy"
                | "app:refresh"
        );
        if !known || (!self.plugin_enabled && action.starts_with("environmentVariables")) {
            return not_found();
        }
        let auth = req
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        if auth != Some(&format!("Bearer {API_KEY}")) {
            return json_fixture(401, "error_invalid_token.json");
        }
        let tk = req
            .url
            .query_pairs()
            .find(|(k, _)| k == "filterByTk")
            .map(|(_, v)| v.into_owned());
        let mut st = self.state.lock().unwrap();
        match (req.method.as_str(), action) {
            ("GET", "environmentVariables:list") => {
                let data: Vec<Value> = st
                    .vars
                    .iter()
                    .map(|(n, v)| State::record(n, v, v.kind.as_deref() != Some("secret")))
                    .collect();
                json_body(200, &json!({"data": data, "meta": {"updated": st.updated}}))
            }
            ("POST", "environmentVariables:create") => {
                let body: Value = serde_json::from_slice(&req.body).unwrap();
                let (items, many) = match body {
                    Value::Array(a) => (a, true),
                    o => (vec![o], false),
                };
                let mut out = Vec::new();
                for item in items {
                    let name = item["name"].as_str().unwrap_or("").to_owned();
                    if !valid_name(&name) {
                        return json_fixture(400, "error_name_validation.json");
                    }
                    if st.vars.contains_key(&name) {
                        return json_fixture(400, "error_name_exists.json");
                    }
                    let v = Var {
                        kind: item["type"].as_str().map(str::to_owned),
                        value: item["value"].as_str().unwrap_or("").to_owned(),
                        updated_at: st.tick(),
                    };
                    out.push(State::record(&name, &v, true));
                    st.vars.insert(name, v);
                }
                let data = if many {
                    Value::Array(out)
                } else {
                    out.remove(0)
                };
                json_body(200, &json!({ "data": data }))
            }
            ("POST", "environmentVariables:update") => {
                let body: Value = serde_json::from_slice(&req.body).unwrap();
                let name = tk.unwrap_or_default();
                let now = st.tick();
                let data = match st.vars.get_mut(&name) {
                    Some(v) => {
                        if let Some(t) = body["type"].as_str() {
                            v.kind = Some(t.to_owned());
                        }
                        if let Some(val) = body["value"].as_str() {
                            v.value = val.to_owned();
                        }
                        v.updated_at = now;
                        let rec = State::record(&name, v, true);
                        st.updated = true;
                        vec![rec]
                    }
                    None => vec![],
                };
                json_body(200, &json!({ "data": data }))
            }
            ("POST", "environmentVariables:destroy") => {
                let n = usize::from(st.vars.remove(&tk.unwrap_or_default()).is_some());
                if n > 0 {
                    st.updated = true;
                }
                json_body(200, &json!({ "data": n }))
            }
            ("POST", "app:refresh") => {
                st.refreshes += 1;
                st.updated = false;
                st.restarting_for = st.restart_after_refresh;
                json_fixture(200, "refresh.json")
            }
            _ => not_found(),
        }
    }
}

fn query(req: &Request, key: &str) -> Option<String> {
    req.url
        .query_pairs()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

impl NocoBase {
    /// `swagger:get?ns=collections/<name>`, `<collection>:list` and `<collection>:update`,
    /// shaped like NocoBase 2.2.15 (see tests/fixtures/nocobase/SOURCES.md).
    fn records(&self, req: &Request, action: &str) -> Option<ResponseTemplate> {
        let auth = req
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        let authorized = auth == Some(&format!("Bearer {API_KEY}"));
        let mut st = self.state.lock().unwrap();
        if action == "swagger:get" {
            if st.no_api_doc {
                return Some(not_found());
            }
            if !authorized {
                return Some(json_fixture(401, "error_invalid_token.json"));
            }
            let ns = query(req, "ns").unwrap_or_default();
            let name = ns.strip_prefix("collections/").unwrap_or("");
            let Some(c) = st.collections.get(name) else {
                return Some(json_fixture(500, "error_swagger_unknown_collection.json"));
            };
            let props: serde_json::Map<String, Value> = c
                .fields
                .iter()
                .map(|f| (f.clone(), json!({"type": "string"})))
                .collect();
            return Some(json_body(
                200,
                &json!({"openapi": "3.0.3", "info": {"title": "NocoBase API documentation"},
                        "paths": {}, "tags": [{"name": name}],
                        "components": {"schemas": {
                            name: {"type": "object", "properties": props},
                            format!("{name}.form"): {"allOf": [{"$ref": format!("#/components/schemas/{name}")}]}}}}),
            ));
        }
        let (name, verb) = action.split_once(':')?;
        if !matches!(verb, "list" | "update") || !st.collections.contains_key(name) {
            return None;
        }
        if !authorized {
            return Some(json_fixture(401, "error_invalid_token.json"));
        }
        let filter: Value = query(req, "filter")
            .and_then(|f| serde_json::from_str(&f).ok())
            .unwrap_or(Value::Object(Default::default()));
        let tk = query(req, "filterByTk");
        let now = st.tick();
        let mut updates = 0;
        let mut st_fail = verb == "update" && std::mem::take(&mut st.fail_next_update);
        let c = st.collections.get_mut(name).unwrap();
        let hidden = c.hidden.clone();
        let visible = |r: &serde_json::Map<String, Value>| {
            let mut r = r.clone();
            r.retain(|k, _| !hidden.contains(k));
            Value::Object(r)
        };
        let unknown_filter = top_keys(&filter).iter().any(|k| !c.fields.contains(k));
        let answer = if unknown_filter {
            json_body(
                400,
                &json!({"errors": [{"message": "Invalid SQL column or table reference"}]}),
            )
        } else if verb == "list" {
            let data: Vec<Value> = c
                .records
                .iter()
                .filter(|r| test(Some(&Value::Object((*r).clone())), &filter))
                .map(visible)
                .collect();
            json_body(200, &json!({ "data": data }))
        } else if std::mem::take(&mut st_fail) {
            json_fixture(503, "error_app_commanding.json")
        } else {
            let body: serde_json::Map<String, Value> =
                serde_json::from_slice(&req.body).unwrap_or_default();
            let out = c.update(tk.as_deref(), &filter, &body, &now);
            updates = 1;
            let data: Vec<Value> = out.iter().map(visible).collect();
            json_body(200, &json!({ "data": data }))
        };
        st.record_updates += updates;
        Some(answer)
    }
}

impl NocoBase {
    /// The main application with the Variables and secrets plugin, serving `collections`.
    pub fn with_collections(
        collections: impl IntoIterator<Item = (&'static str, Collection)>,
    ) -> Self {
        let nb = NocoBase {
            state: Arc::default(),
            app: None,
            plugin_enabled: true,
        };
        nb.state
            .lock()
            .unwrap()
            .collections
            .extend(collections.into_iter().map(|(n, c)| (n.to_owned(), c)));
        nb
    }

    /// Serves this emulator on a fresh local port.
    pub async fn serve(&self) -> wiremock::MockServer {
        let server = wiremock::MockServer::start().await;
        wiremock::Mock::given(wiremock::matchers::path_regex("^/"))
            .respond_with(self.clone())
            .mount(&server)
            .await;
        server
    }
}

impl Collection {
    /// `<collection>:update?filterByTk=..[&filter=..]`, as NocoBase 2.2.15 answers it: the
    /// records updated (none when `filter` no longer matches: `{"data": []}`, nothing
    /// written); unknown fields ignored; a dotted key expanded into an object that
    /// replaces the whole field (`{"options.a.b": "x"}` stores `{"a": {"b": "x"}}`, and
    /// `"[object Object]"` in a string field); `updatedAt` moved only by a change.
    fn update(
        &mut self,
        tk: Option<&str>,
        filter: &Value,
        body: &serde_json::Map<String, Value>,
        now: &str,
    ) -> Vec<serde_json::Map<String, Value>> {
        let fields = self.fields.clone();
        let json_fields = self.json.clone();
        let ignored = self.ignored.clone();
        let edit = (self.concurrent_edits > 0).then(|| self.concurrent_edit.clone());
        if edit.is_some() {
            self.concurrent_edits -= 1;
        }
        let mut out = vec![];
        let mut misses = 0;
        for r in self.records.iter_mut().filter(|r| {
            tk.is_some_and(|k| {
                r.get("id")
                    .map(|v| v.to_string().trim_matches('"').to_owned())
                    == Some(k.to_owned())
            })
        }) {
            if let Some(edit) = &edit {
                for (k, v) in edit {
                    // stamped, so that repeated edits are each a change
                    let mut v = v.clone();
                    if let Value::Object(o) = &mut v {
                        o.insert("editedAt".into(), Value::from(now));
                    }
                    r.insert(k.clone(), v);
                }
                if r.contains_key("updatedAt") {
                    r.insert("updatedAt".into(), Value::from(format!("{now}-edit")));
                }
            }
            if !test(Some(&Value::Object(r.clone())), filter) {
                misses += 1;
                continue;
            }
            let mut changed = false;
            for (k, v) in body {
                let (top, v) = expand(k, v, &json_fields);
                // unknown fields are ignored, as NocoBase does
                if fields.contains(&top) && !ignored.contains(&top) && r.get(&top) != Some(&v) {
                    r.insert(top, v);
                    changed = true;
                }
            }
            if changed && r.contains_key("updatedAt") {
                r.insert("updatedAt".into(), Value::from(now));
            }
            // the answer echoes the stored record (fields hidden from reads left out)
            out.push(r.clone());
        }
        self.conditional_misses += misses;
        out
    }
}

/// NocoBase's expansion of a dotted key of an update body: the first segment names the
/// field, the rest becomes nested objects that replace the field's whole value.
fn expand(k: &str, v: &Value, json_fields: &[String]) -> (String, Value) {
    let mut parts = k.split('.');
    let top = parts.next().unwrap_or_default().to_owned();
    let rest: Vec<&str> = parts.collect();
    if rest.is_empty() {
        return (top, v.clone());
    }
    if !json_fields.contains(&top) {
        return (top, Value::from("[object Object]"));
    }
    let nested = rest
        .iter()
        .rev()
        .fold(v.clone(), |inner, k| json!({ *k: inner }));
    (top, nested)
}

/// The collection fields a filter names (first segment of each key, inside `$and` too).
fn top_keys(filter: &Value) -> Vec<String> {
    let Value::Object(o) = filter else {
        return vec![];
    };
    o.iter()
        .flat_map(|(k, v)| match (k.as_str(), v) {
            ("$and", Value::Array(a)) => a.iter().flat_map(top_keys).collect::<Vec<_>>(),
            (k, _) if k.starts_with('$') => vec![],
            (k, _) => vec![k.split('.').next().unwrap_or_default().to_owned()],
        })
        .collect()
}

/// Whether `cur` passes `cond`: a plain value (equality), operators (`$eq`, `$empty`,
/// `$notEmpty`, `$and`), or keys (dotted or nested) into `cur`, as NocoBase's filters.
fn test(cur: Option<&Value>, cond: &Value) -> bool {
    let Value::Object(o) = cond else {
        return cur.unwrap_or(&Value::Null) == cond;
    };
    o.iter().all(|(k, sub)| match k.as_str() {
        "$and" => sub
            .as_array()
            .is_some_and(|a| a.iter().all(|c| test(cur, c))),
        "$eq" => cur.unwrap_or(&Value::Null) == sub,
        "$empty" => matches!(cur, None | Some(Value::Null)) || cur == Some(&json!("")),
        "$notEmpty" => !(matches!(cur, None | Some(Value::Null)) || cur == Some(&json!(""))),
        k => {
            let mut at = cur;
            for part in k.split('.') {
                at = at.and_then(|v| v.get(part));
            }
            test(at, sub)
        }
    })
}
