//! A stateful Microsoft emulator for rotation: one app registration whose password
//! credentials change through Graph's `addPassword` and `removePassword`, a token endpoint
//! that accepts exactly the current secrets (a new one only after a propagation delay,
//! answered with AADSTS7000215 meanwhile, as Microsoft does for a few seconds), ownership
//! (403 `Authorization_RequestDenied` when the app does not own its registration), and a
//! tenant app-management policy capping the lifetime (400
//! `CredentialInvalidLifetimeAsPerAppPolicy`). Bodies come from `tests/fixtures/microsoft`.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};

use base64::Engine;
use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use super::{CLIENT, TENANT, fixture, json_response};

/// Object ID of the app's own service principal (the token's `oid`).
pub const SP_OID: &str = "5d7e9f10-2b3c-4d5e-8f60-718293a4b5c6";
/// Application.ReadWrite.OwnedBy, as an app role in the token.
pub const OWNED_BY: &str = "Application.ReadWrite.OwnedBy";

#[derive(Clone, Debug)]
pub struct Cred {
    pub key_id: String,
    pub display_name: Option<String>,
    pub hint: String,
    /// The Value; `None` for credentials whose Value no one knows (added elsewhere).
    pub secret: Option<String>,
    pub start: String,
    pub end: String,
    /// Token requests still refused with AADSTS7000215 (propagation).
    pub refusals_left: u32,
}

#[derive(Debug)]
pub struct AppState {
    pub creds: Vec<Cred>,
    /// Whether the app's service principal is an owner of its own registration.
    pub owner: bool,
    /// Application permissions in the token's `roles`.
    pub roles: Vec<String>,
    /// App-management policy: the longest lifetime a new password may have.
    pub max_lifetime: Option<SignedDuration>,
    /// Token requests a new secret is refused for after addPassword.
    pub propagation_requests: u32,
    /// Never accept new secrets (they stay AADSTS7000215 forever).
    pub never_propagate: bool,
    /// Answer addPassword with this HTTP status (503: an outage) instead.
    pub add_fails_with: Option<u16>,
    pub added: u32,
    pub removed: Vec<String>,
    pub token_requests: u32,
}

#[derive(Clone)]
pub struct EntraApp {
    pub server: Arc<MockServer>,
    pub state: Arc<Mutex<AppState>>,
}

/// A portal-style secret Value (40 characters, `8Q~` after the 3-character hint), random
/// letters and digits so no 6-character window reads as ordinary text.
pub fn portal_secret(n: u32) -> String {
    const ALPHA: &[u8] = b"BCDFGHJKLMNPQRSTVWXZbcdfghjkmnpqrstvwxz23456789";
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ (u64::from(n) + 1).wrapping_mul(0xD1B5_4A32_D192_ED03);
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        ALPHA[(x % ALPHA.len() as u64) as usize] as char
    };
    let head: String = (0..3).map(|_| next()).collect();
    let tail: String = (0..34).map(|_| next()).collect();
    format!("{head}8Q~{tail}")
}

fn guid(n: u32) -> String {
    format!("a1b2c3d4-0000-4000-8000-{n:012x}")
}

fn graph_error(status: u16, code: &str, message: &str) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_json(json!({
        "error": {"code": code, "message": message,
            "innerError": {"date": "2026-11-25T13:40:07", "request-id": "0c1d2e3f-4a5b-4c6d-8e7f-8091a2b3c4d5",
                "client-request-id": "0c1d2e3f-4a5b-4c6d-8e7f-8091a2b3c4d5"}}
    }))
}

impl AppState {
    fn can_write(&self) -> bool {
        self.roles.iter().any(|r| r == "Application.ReadWrite.All")
            || (self.owner && self.roles.iter().any(|r| r == OWNED_BY))
    }
    fn can_read(&self) -> bool {
        self.can_write() || self.roles.iter().any(|r| r == "Application.Read.All")
    }
}

impl EntraApp {
    /// An app owning itself, with Application.ReadWrite.OwnedBy, holding `secret` (expiring
    /// at `end`) as its only password; new secrets are refused for 2 token requests.
    pub async fn start(secret: &str, end: &str) -> Self {
        let state = AppState {
            creds: vec![],
            owner: true,
            roles: vec![OWNED_BY.into()],
            max_lifetime: None,
            propagation_requests: 2,
            never_propagate: false,
            add_fails_with: None,
            added: 0,
            removed: vec![],
            token_requests: 0,
        };
        let app = Self {
            server: Arc::new(MockServer::start().await),
            state: Arc::new(Mutex::new(state)),
        };
        app.add_existing(secret, Some("created in the portal"), end);
        let r = Responder(Arc::clone(&app.state));
        Mock::given(method("POST"))
            .and(path(format!("/{TENANT}/oauth2/v2.0/token")))
            .respond_with(r.clone())
            .mount(&app.server)
            .await;
        Mock::given(path_regex(
            r"^/v1\.0/applications\(appId='[0-9a-f-]+'\)(/.*)?$",
        ))
        .respond_with(r)
        .mount(&app.server)
        .await;
        app
    }

    pub fn uri(&self) -> String {
        self.server.uri()
    }

    pub fn state(&self) -> std::sync::MutexGuard<'_, AppState> {
        self.state.lock().unwrap()
    }

    /// A credential that already works (no propagation delay).
    pub fn add_existing(&self, secret: &str, display_name: Option<&str>, end: &str) -> String {
        let mut s = self.state();
        let n = s.creds.len() as u32 + 100;
        let key_id = guid(n);
        s.creds.push(Cred {
            key_id: key_id.clone(),
            display_name: display_name.map(str::to_owned),
            hint: secret.chars().take(3).collect(),
            secret: Some(secret.into()),
            start: "2026-05-24T10:00:00Z".into(),
            end: end.into(),
            refusals_left: 0,
        });
        key_id
    }

    /// A credential whose Value is unknown here, with a given hint (another tool's secret).
    pub fn add_foreign(&self, hint: &str, display_name: &str) -> String {
        let mut s = self.state();
        let key_id = guid(s.creds.len() as u32 + 500);
        s.creds.push(Cred {
            key_id: key_id.clone(),
            display_name: Some(display_name.into()),
            hint: hint.into(),
            secret: None,
            start: "2026-05-24T10:00:00Z".into(),
            end: "2027-05-24T10:00:00Z".into(),
            refusals_left: 0,
        });
        key_id
    }

    pub fn key_ids(&self) -> Vec<String> {
        self.state()
            .creds
            .iter()
            .map(|c| c.key_id.clone())
            .collect()
    }

    pub fn has_secret(&self, secret: &str) -> bool {
        self.state()
            .creds
            .iter()
            .any(|c| c.secret.as_deref() == Some(secret))
    }

    /// The Values of all credentials the emulator created (for leak scans).
    pub fn created_secrets(&self) -> Vec<String> {
        (0..self.state().added).map(portal_secret).collect()
    }
}

#[derive(Clone)]
struct Responder(Arc<Mutex<AppState>>);

impl Respond for Responder {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let mut s = self.0.lock().unwrap();
        let p = req.url.path().to_owned();
        if p.ends_with("/oauth2/v2.0/token") {
            return token(&mut s, req);
        }
        let bearer = req
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("Bearer ") && v.ends_with(".FAKE-EMULATOR-TOKEN"));
        if !bearer {
            return graph_error(401, "InvalidAuthenticationToken", "Access token is empty.");
        }
        let method = req.method.as_str();
        match (method, p.rsplit('/').next().unwrap_or("")) {
            ("POST", "addPassword") => add_password(&mut s, req),
            ("POST", "removePassword") => remove_password(&mut s, req),
            ("GET", "owners") => owners(&s),
            ("GET", _) if !p.contains(")/") => application(&s),
            _ => graph_error(400, "Request_BadRequest", "Unsupported request."),
        }
    }
}

fn token(s: &mut AppState, req: &Request) -> ResponseTemplate {
    s.token_requests += 1;
    let form: Vec<(String, String)> = url::form_urlencoded::parse(&req.body)
        .into_owned()
        .collect();
    let secret = form
        .iter()
        .find(|(k, _)| k == "client_secret")
        .map(|(_, v)| v.clone());
    let Some(c) = s
        .creds
        .iter_mut()
        .find(|c| c.secret.is_some() && c.secret == secret)
    else {
        return json_response(401, "aadsts7000215.json");
    };
    if c.refusals_left > 0 {
        if c.refusals_left != u32::MAX {
            c.refusals_left -= 1;
        }
        return json_response(401, "aadsts7000215.json");
    }
    let claims = json!({"aud": "https://graph.microsoft.com", "appid": CLIENT, "oid": SP_OID,
        "tid": TENANT, "roles": s.roles});
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let token = format!(
        "{}.{}.FAKE-EMULATOR-TOKEN",
        b64.encode(br#"{"typ":"JWT","alg":"none"}"#),
        b64.encode(claims.to_string())
    );
    ResponseTemplate::new(200).set_body_json(json!({
        "token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": token
    }))
}

fn application(s: &AppState) -> ResponseTemplate {
    if !s.can_read() {
        return json_response(403, "graph_403_authorization_request_denied.json");
    }
    let mut app: Value = serde_json::from_slice(&fixture("graph_application.json")).unwrap();
    app["passwordCredentials"] = Value::Array(
        s.creds
            .iter()
            .map(|c| {
                json!({"customKeyIdentifier": null, "displayName": c.display_name,
                    "endDateTime": c.end, "hint": c.hint, "keyId": c.key_id,
                    "secretText": null, "startDateTime": c.start})
            })
            .collect(),
    );
    ResponseTemplate::new(200).set_body_json(app)
}

fn owners(s: &AppState) -> ResponseTemplate {
    if !s.can_read() {
        return json_response(403, "graph_403_authorization_request_denied.json");
    }
    let mut value = vec![json!({"@odata.type": "#microsoft.graph.user",
        "id": "2f3e4d5c-6b7a-4890-a1b2-c3d4e5f60718", "displayName": "Entra Admin"})];
    if s.owner {
        value.push(
            json!({"@odata.type": "#microsoft.graph.servicePrincipal", "id": SP_OID,
            "appId": CLIENT, "displayName": "operator-test-app"}),
        );
    }
    ResponseTemplate::new(200).set_body_json(json!({
        "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#directoryObjects",
        "value": value
    }))
}

fn add_password(s: &mut AppState, req: &Request) -> ResponseTemplate {
    if let Some(code) = s.add_fails_with {
        return ResponseTemplate::new(code).set_body_string("Service Unavailable");
    }
    if !s.can_write() {
        return json_response(403, "graph_403_authorization_request_denied.json");
    }
    let body: Value = serde_json::from_slice(&req.body).unwrap_or_default();
    let pc = &body["passwordCredential"];
    let now = Timestamp::now();
    let end = pc["endDateTime"]
        .as_str()
        .and_then(|e| e.parse::<Timestamp>().ok())
        .unwrap_or(now + SignedDuration::from_hours(24 * 730));
    if let Some(max) = s.max_lifetime
        && end.duration_since(now) > max
    {
        return json_response(400, "graph_400_credential_lifetime_policy.json");
    }
    let secret = portal_secret(s.added);
    s.added += 1;
    let key_id = guid(s.added);
    let cred = Cred {
        key_id: key_id.clone(),
        display_name: pc["displayName"].as_str().map(str::to_owned),
        hint: secret.chars().take(3).collect(),
        secret: Some(secret.clone()),
        start: now.to_string(),
        end: end.to_string(),
        refusals_left: if s.never_propagate {
            u32::MAX
        } else {
            s.propagation_requests
        },
    };
    s.creds.push(cred.clone());
    ResponseTemplate::new(200).set_body_json(json!({
        "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#microsoft.graph.passwordCredential",
        "customKeyIdentifier": null,
        "displayName": cred.display_name,
        "endDateTime": cred.end,
        "hint": cred.hint,
        "keyId": key_id,
        "secretText": secret,
        "startDateTime": cred.start,
    }))
}

fn remove_password(s: &mut AppState, req: &Request) -> ResponseTemplate {
    if !s.can_write() {
        return json_response(403, "graph_403_authorization_request_denied.json");
    }
    let body: Value = serde_json::from_slice(&req.body).unwrap_or_default();
    let key_id = body["keyId"].as_str().unwrap_or_default().to_owned();
    let before = s.creds.len();
    s.creds.retain(|c| c.key_id != key_id);
    if s.creds.len() == before {
        return graph_error(
            404,
            "Request_ResourceNotFound",
            &format!("No password credential found with keyId '{key_id}'."),
        );
    }
    s.removed.push(key_id);
    ResponseTemplate::new(204)
}
