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

#[derive(Default)]
pub struct State {
    pub vars: BTreeMap<String, Var>,
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
