//! A Microsoft Entra tenant for `register`: the device code sign-in
//! (`/{tenant}/oauth2/v2.0/devicecode` and the device-code grant, with pending, slow_down,
//! declined and expired answers), the Graph directory calls `register` makes (applications
//! found by filter or appId, created and patched; service principals; addPassword and
//! removePassword; app role assignments that need admin consent; owners; a service
//! principal refused while its new application replicates, when asked) and the
//! client-credentials grant for the apps it holds, refusing a new app (AADSTS700016) and a
//! new secret (AADSTS7000215) for a number of requests, as replication does. The tokens of
//! that grant are honoured by its Graph as an application's: the application's own
//! registration is readable with the application permission `Application.Read.All`
//! granted (the `roles` claim), anything else is 403 `Authorization_RequestDenied`, so the
//! operator can be pointed at the same tenant `register` wrote to. Status codes and bodies
//! follow Microsoft's (fixtures in tests/fixtures/microsoft, see SOURCES.md).
#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::Instant;

use base64::Engine;
use serde_json::{Value, json};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use super::entra::portal_secret;
use super::{TENANT, json_response};

/// The delegated token the device code sign-in hands out (scanned for in output).
pub const ADMIN_TOKEN: &str = "eyJ0eXAiOiJKV1QiLCJhbGciOiJub25lIn0.eyJzY3AiOiJBcHBsaWNhdGlvbi5SZWFkV3JpdGUuQWxsIn0.FAKE-ADMIN-DELEGATED";
/// The device code (never to be printed).
pub const DEVICE_CODE: &str =
    "HAQABAAEAAAD--DLA3VO7QrddgJg7Wevr0WV9SxplIjUaZuAytY5xuFmkKNvO1AmBDEPZC";
pub const GRAPH_SP_ID: &str = "7f3e2d1c-0b9a-4887-a665-544332211000";
const GRAPH_APP: &str = "00000003-0000-0000-c000-000000000000";
/// Microsoft Graph's application permissions by app role ID (the `roles` claim's names).
const GRAPH_ROLES: [(&str, &str); 2] = [
    (
        "9a5d68dd-52b0-4cc2-bd40-abcf44ac3a30",
        "Application.Read.All",
    ),
    (
        "18a4783c-866b-4cc7-a460-3d5e5662c884",
        "Application.ReadWrite.OwnedBy",
    ),
];

/// How the administrator answers in the browser.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Browser {
    /// Signs in after `pending` polls.
    Approves {
        pending: u32,
    },
    Declines,
    /// Never finishes: the code expires after `pending` polls.
    Expires {
        pending: u32,
    },
    /// Asks for slower polling once, then approves.
    SlowDownThenApproves,
}

#[derive(Clone, Debug)]
pub struct App {
    pub id: String,
    pub app_id: String,
    pub display_name: String,
    pub audience: String,
    pub redirect_uris: Vec<String>,
    pub rra: Value,
    /// (keyId, displayName, hint, Value, end, refusals left)
    pub passwords: Vec<(String, String, String, String, String, u32)>,
    pub owners: Vec<String>,
    /// Client-credentials requests still answered AADSTS700016 (replication).
    pub unknown_for: u32,
}

#[derive(Debug)]
pub struct Tenant {
    pub browser: Browser,
    pub polls: Vec<Instant>,
    pub apps: Vec<App>,
    /// (object id, appId)
    pub sps: Vec<(String, String)>,
    /// (principalId, resourceId, appRoleId)
    pub assignments: Vec<(String, String, String)>,
    /// Whether the signed-in account may grant application permissions (admin consent).
    pub may_consent: bool,
    /// Token requests a new app / a new secret is refused for.
    pub app_replication: u32,
    /// `POST /servicePrincipals` requests still answered 400 NoBackingApplicationObject (the
    /// application not replicated yet), counted down by each one.
    pub sp_replication: u32,
    pub secret_replication: u32,
    /// Every Graph request: (method, path and query).
    pub graph: Vec<(String, String)>,
    /// Every Graph request made with an application's token (the operator's): (method,
    /// path and query), kept apart from the administrator's in `graph`.
    pub app_graph: Vec<(String, String)>,
    pub client_credentials: u32,
    pub added_secrets: Vec<String>,
    next: u32,
}

impl Tenant {
    pub fn graph_writes(&self) -> Vec<(String, String)> {
        self.graph
            .iter()
            .filter(|(m, _)| m != "GET")
            .cloned()
            .collect()
    }
}

#[derive(Clone)]
pub struct EntraTenant {
    pub server: Arc<MockServer>,
    pub state: Arc<Mutex<Tenant>>,
}

impl EntraTenant {
    pub async fn start(browser: Browser) -> Self {
        let state = Tenant {
            browser,
            polls: vec![],
            apps: vec![],
            sps: vec![(GRAPH_SP_ID.into(), GRAPH_APP.into())],
            assignments: vec![],
            may_consent: true,
            app_replication: 2,
            sp_replication: 0,
            secret_replication: 2,
            graph: vec![],
            app_graph: vec![],
            client_credentials: 0,
            added_secrets: vec![],
            next: 0,
        };
        let t = Self {
            server: Arc::new(MockServer::start().await),
            state: Arc::new(Mutex::new(state)),
        };
        Mock::given(wiremock::matchers::any())
            .respond_with(Responder(Arc::clone(&t.state)))
            .mount(&t.server)
            .await;
        t
    }

    pub fn uri(&self) -> String {
        self.server.uri()
    }

    pub fn state(&self) -> std::sync::MutexGuard<'_, Tenant> {
        self.state.lock().unwrap()
    }

    pub fn secrets(&self) -> Vec<String> {
        self.state().added_secrets.clone()
    }
}

fn guid(n: u32, kind: u32) -> String {
    format!("{kind:08x}-1111-4222-8333-{n:012x}")
}

fn graph_error(status: u16, code: &str, message: &str) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_json(json!({"error": {"code": code, "message": message,
        "innerError": {"date": "2026-11-25T13:40:07", "request-id": "0c1d2e3f-4a5b-4c6d-8e7f-8091a2b3c4d5",
            "client-request-id": "0c1d2e3f-4a5b-4c6d-8e7f-8091a2b3c4d5"}}}))
}

fn not_found(id: &str) -> ResponseTemplate {
    graph_error(
        404,
        "Request_ResourceNotFound",
        &format!(
            "Resource '{id}' does not exist or one of its queried reference-property objects are not present."
        ),
    )
}

/// Microsoft's answer to a service principal for an application not replicated yet, naming
/// the appId that was sent.
fn not_replicated(app_id: &str) -> ResponseTemplate {
    let body = String::from_utf8(super::fixture(
        "graph_400_no_backing_application_object.json",
    ))
    .unwrap()
    .replace("11111111-2222-4333-8444-555555555555", app_id);
    ResponseTemplate::new(400)
        .insert_header("content-type", "application/json")
        .set_body_string(body)
}

fn app_json(a: &App) -> Value {
    let pw: Vec<Value> = a
        .passwords
        .iter()
        .map(|(k, n, h, _, end, _)| {
            json!({"customKeyIdentifier": null,
        "displayName": n, "endDateTime": end, "hint": h, "keyId": k, "secretText": null,
        "startDateTime": "2026-11-25T13:40:07Z"})
        })
        .collect();
    json!({"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#applications/$entity",
        "id": a.id, "appId": a.app_id, "displayName": a.display_name, "signInAudience": a.audience,
        "api": {"requestedAccessTokenVersion": 2},
        "web": {"homePageUrl": null, "logoutUrl": null, "redirectUris": a.redirect_uris,
            "implicitGrantSettings": {"enableAccessTokenIssuance": false, "enableIdTokenIssuance": false},
            "redirectUriSettings": a.redirect_uris.iter().map(|u| json!({"uri": u, "index": null})).collect::<Vec<_>>()},
        "requiredResourceAccess": a.rra, "passwordCredentials": pw})
}

struct Responder(Arc<Mutex<Tenant>>);

impl Respond for Responder {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let mut t = self.0.lock().unwrap();
        let path = req.url.path().to_owned();
        if path == format!("/{TENANT}/oauth2/v2.0/devicecode") {
            return device_authorization();
        }
        if path == format!("/{TENANT}/oauth2/v2.0/token") {
            let form: Vec<(String, String)> = url::form_urlencoded::parse(&req.body)
                .into_owned()
                .collect();
            let field = |k: &str| {
                form.iter()
                    .find(|(n, _)| n == k)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default()
            };
            return match field("grant_type").as_str() {
                "urn:ietf:params:oauth:grant-type:device_code"
                    if field("device_code") == DEVICE_CODE =>
                {
                    poll(&mut t)
                }
                "client_credentials" => {
                    client_credentials(&mut t, &field("client_id"), &field("client_secret"))
                }
                _ => json_response(400, "aadsts900023.json"),
            };
        }
        if !path.starts_with("/v1.0/") {
            return ResponseTemplate::new(404);
        }
        let full = match req.url.query() {
            Some(q) => format!("{path}?{q}"),
            None => path.clone(),
        };
        let bearer = req
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        if let Some(claims) = app_token_claims(bearer) {
            t.app_graph.push((req.method.to_string(), full));
            return as_application(&t, req.method.as_str(), &path, &claims);
        }
        t.graph.push((req.method.to_string(), full));
        if bearer != ADMIN_TOKEN {
            return graph_error(
                401,
                "InvalidAuthenticationToken",
                "Access token validation failure. Invalid audience.",
            );
        }
        let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
        graph(&mut t, req.method.as_str(), &path, req, &body)
    }
}

fn device_authorization() -> ResponseTemplate {
    let mut v: Value =
        serde_json::from_slice(&super::fixture("device_code_authorization.json")).unwrap();
    v["device_code"] = json!(DEVICE_CODE);
    v["interval"] = json!(1);
    ResponseTemplate::new(200).set_body_json(v)
}

fn poll(t: &mut Tenant) -> ResponseTemplate {
    t.polls.push(Instant::now());
    let n = t.polls.len() as u32;
    let pending = || json_response(400, "aadsts70016_authorization_pending.json");
    match t.browser {
        Browser::Approves { pending: p } if n <= p => pending(),
        Browser::Expires { pending: p } if n <= p => pending(),
        Browser::Expires { .. } => json_response(400, "aadsts70020_expired_token.json"),
        Browser::Declines => json_response(400, "device_code_declined.json"),
        Browser::SlowDownThenApproves if n == 1 => json_response(400, "device_code_slow_down.json"),
        _ => ResponseTemplate::new(200).set_body_json(json!({"token_type": "Bearer",
            "scope": "https://graph.microsoft.com/Application.ReadWrite.All https://graph.microsoft.com/.default",
            "expires_in": 4742, "ext_expires_in": 4742, "access_token": ADMIN_TOKEN})),
    }
}

fn client_credentials(t: &mut Tenant, client_id: &str, secret: &str) -> ResponseTemplate {
    t.client_credentials += 1;
    let has_sp = t.sps.iter().any(|(_, a)| a == client_id);
    let Some(app) = t.apps.iter_mut().find(|a| a.app_id == client_id) else {
        return json_response(400, "aadsts700016.json");
    };
    if app.unknown_for > 0 || !has_sp {
        app.unknown_for = app.unknown_for.saturating_sub(1);
        return json_response(400, "aadsts700016.json");
    }
    let Some(pw) = app.passwords.iter_mut().find(|p| p.3 == secret) else {
        return json_response(401, "aadsts7000215.json");
    };
    if pw.5 > 0 {
        pw.5 -= 1;
        return json_response(401, "aadsts7000215.json");
    }
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut claims =
        json!({"aud": "https://graph.microsoft.com", "appid": client_id, "tid": TENANT});
    // Microsoft puts the granted application permissions in `roles`, and leaves the claim
    // out when there are none
    let roles = granted_roles(t, client_id);
    if !roles.is_empty() {
        claims["roles"] = json!(roles);
    }
    let token = format!(
        "{}.{}.FAKE-EMULATOR-TOKEN",
        b64.encode(br#"{"typ":"JWT","alg":"none"}"#),
        b64.encode(claims.to_string())
    );
    ResponseTemplate::new(200).set_body_json(json!({"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": token}))
}

/// The names of Microsoft Graph's application permissions granted to `client_id`'s service
/// principal.
fn granted_roles(t: &Tenant, client_id: &str) -> Vec<&'static str> {
    let Some((sp, _)) = t.sps.iter().find(|(_, a)| a == client_id) else {
        return vec![];
    };
    t.assignments
        .iter()
        .filter(|(p, r, _)| p == sp && r == GRAPH_SP_ID)
        .filter_map(|(_, _, role)| GRAPH_ROLES.iter().find(|(id, _)| id == role))
        .map(|(_, name)| *name)
        .collect()
}

/// The claims of a token this tenant's client-credentials grant issued (None: another token).
fn app_token_claims(bearer: &str) -> Option<Value> {
    let payload = bearer
        .strip_suffix(".FAKE-EMULATOR-TOKEN")?
        .split('.')
        .nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Graph as an application sees it: its own registration with `Application.Read.All`, or
/// with `Application.ReadWrite.OwnedBy` when it owns it, and 403
/// `Authorization_RequestDenied` for everything else (Microsoft's insufficient privileges
/// answer).
fn as_application(t: &Tenant, method: &str, path: &str, claims: &Value) -> ResponseTemplate {
    let has = |role: &str| {
        claims["roles"]
            .as_array()
            .is_some_and(|r| r.iter().any(|r| r == role))
    };
    let caller = claims["appid"].as_str().unwrap_or_default();
    let caller_sp = t.sps.iter().find(|(_, a)| a == caller).map(|(id, _)| id);
    let seg = path.trim_start_matches("/v1.0/");
    let app = key_of(seg).and_then(|k| t.apps.iter().find(|a| a.app_id == k));
    let may_read = |a: &App| {
        has("Application.Read.All")
            || (has("Application.ReadWrite.OwnedBy")
                && caller_sp.is_some_and(|sp| a.owners.contains(sp)))
    };
    match (method, app) {
        ("GET", Some(a)) if may_read(a) && seg.starts_with("applications(") => {
            ResponseTemplate::new(200).set_body_json(app_json(a))
        }
        _ => json_response(403, "graph_403_authorization_request_denied.json"),
    }
}

/// `(appId='X')` in a path segment.
fn key_of(segment: &str) -> Option<&str> {
    segment
        .strip_prefix("applications(appId='")
        .or_else(|| segment.strip_prefix("servicePrincipals(appId='"))?
        .strip_suffix("')")
}

fn graph(
    t: &mut Tenant,
    method: &str,
    path: &str,
    req: &Request,
    body: &Value,
) -> ResponseTemplate {
    let segs: Vec<&str> = path.trim_start_matches("/v1.0/").split('/').collect();
    match (method, segs.as_slice()) {
        ("GET", ["applications"]) => {
            let filter: String = req
                .url
                .query_pairs()
                .find(|(k, _)| k == "$filter")
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default();
            let name = filter
                .strip_prefix("displayName eq '")
                .and_then(|f| f.strip_suffix('\''))
                .map(|n| n.replace("''", "'"));
            let found: Vec<Value> = t
                .apps
                .iter()
                .filter(|a| Some(&a.display_name) == name.as_ref())
                .map(app_json)
                .collect();
            ResponseTemplate::new(200).set_body_json(json!({"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#applications", "value": found}))
        }
        ("GET", [seg]) if seg.starts_with("applications(") => {
            match key_of(seg).and_then(|k| t.apps.iter().find(|a| a.app_id == k)) {
                Some(a) => ResponseTemplate::new(200).set_body_json(app_json(a)),
                None => not_found(key_of(seg).unwrap_or("")),
            }
        }
        ("POST", ["applications"]) => create_app(t, body),
        ("PATCH", ["applications", id]) => patch_app(t, id, body),
        ("POST", ["applications", id, "addPassword"]) => add_password(t, id, body),
        ("POST", ["applications", id, "removePassword"]) => {
            let key = body["keyId"].as_str().unwrap_or_default();
            t.apps
                .iter_mut()
                .filter(|a| a.id == *id)
                .for_each(|a| a.passwords.retain(|p| p.0 != key));
            ResponseTemplate::new(204)
        }
        ("GET", ["applications", id, "owners"]) => {
            let owners: Vec<Value> = t
                .apps
                .iter()
                .filter(|a| a.id == *id)
                .flat_map(|a| a.owners.clone())
                .map(|o| json!({"@odata.type": "#microsoft.graph.servicePrincipal", "id": o}))
                .collect();
            ResponseTemplate::new(200).set_body_json(json!({"value": owners}))
        }
        ("POST", ["applications", id, "owners", "$ref"]) => {
            let sp = body["@odata.id"]
                .as_str()
                .and_then(|s| s.rsplit('/').next())
                .unwrap_or_default()
                .to_owned();
            t.apps
                .iter_mut()
                .filter(|a| a.id == *id)
                .for_each(|a| a.owners.push(sp.clone()));
            ResponseTemplate::new(204)
        }
        ("GET", [seg]) if seg.starts_with("servicePrincipals(") => {
            match key_of(seg).and_then(|k| t.sps.iter().find(|(_, a)| a == k)) {
                Some((id, app)) => {
                    ResponseTemplate::new(200).set_body_json(json!({"id": id, "appId": app}))
                }
                None => not_found(key_of(seg).unwrap_or("")),
            }
        }
        ("POST", ["servicePrincipals"]) => {
            let app_id = body["appId"].as_str().unwrap_or_default().to_owned();
            if t.sp_replication > 0 {
                t.sp_replication -= 1;
                return not_replicated(&app_id);
            }
            t.next += 1;
            let id = guid(t.next, 0x5e);
            t.sps.push((id.clone(), app_id.clone()));
            ResponseTemplate::new(201).set_body_json(
                json!({"id": id, "appId": app_id, "servicePrincipalType": "Application"}),
            )
        }
        ("GET", ["servicePrincipals", id, "appRoleAssignments"]) => {
            let v: Vec<Value> = t
                .assignments
                .iter()
                .filter(|a| a.0 == *id)
                .map(|a| json!({"principalId": a.0, "resourceId": a.1, "appRoleId": a.2}))
                .collect();
            ResponseTemplate::new(200).set_body_json(json!({"value": v}))
        }
        ("POST", ["servicePrincipals", id, "appRoleAssignments"]) => {
            if !t.may_consent {
                return json_response(403, "graph_403_authorization_request_denied.json");
            }
            let a = (
                id.to_string(),
                body["resourceId"].as_str().unwrap_or_default().into(),
                body["appRoleId"].as_str().unwrap_or_default().into(),
            );
            t.assignments.push(a.clone());
            ResponseTemplate::new(201)
                .set_body_json(json!({"principalId": a.0, "resourceId": a.1, "appRoleId": a.2}))
        }
        _ => graph_error(400, "Request_BadRequest", "Unsupported request."),
    }
}

fn create_app(t: &mut Tenant, body: &Value) -> ResponseTemplate {
    let audience = body["signInAudience"]
        .as_str()
        .unwrap_or("AzureADMyOrg")
        .to_owned();
    if audience.contains("Personal") && body["api"]["requestedAccessTokenVersion"] != 2 {
        return json_response(400, "graph_400_requested_access_token_version.json");
    }
    t.next += 1;
    let app = App {
        id: guid(t.next, 0x0b),
        app_id: guid(t.next, 0xa9),
        display_name: body["displayName"].as_str().unwrap_or_default().into(),
        audience,
        redirect_uris: body["web"]["redirectUris"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|u| u.as_str().map(Into::into))
                    .collect()
            })
            .unwrap_or_default(),
        rra: body
            .get("requiredResourceAccess")
            .cloned()
            .unwrap_or(json!([])),
        passwords: vec![],
        owners: vec![],
        unknown_for: t.app_replication,
    };
    let v = app_json(&app);
    t.apps.push(app);
    ResponseTemplate::new(201).set_body_json(v)
}

fn patch_app(t: &mut Tenant, id: &str, body: &Value) -> ResponseTemplate {
    let Some(a) = t.apps.iter_mut().find(|a| a.id == id) else {
        return not_found(id);
    };
    if let Some(uris) = body["web"]["redirectUris"].as_array() {
        a.redirect_uris = uris
            .iter()
            .filter_map(|u| u.as_str().map(Into::into))
            .collect();
    }
    if let Some(r) = body.get("requiredResourceAccess") {
        a.rra = r.clone();
    }
    if let Some(s) = body["signInAudience"].as_str() {
        a.audience = s.into();
    }
    ResponseTemplate::new(204)
}

fn add_password(t: &mut Tenant, id: &str, body: &Value) -> ResponseTemplate {
    let n = t.added_secrets.len() as u32 + 40;
    let secret = portal_secret(n);
    let refusals = t.secret_replication;
    let Some(a) = t.apps.iter_mut().find(|a| a.id == id) else {
        return not_found(id);
    };
    let key_id = guid(n, 0xc0);
    let pc = &body["passwordCredential"];
    let name = pc["displayName"].as_str().unwrap_or_default().to_owned();
    let end = pc["endDateTime"]
        .as_str()
        .unwrap_or("2027-05-24T10:00:00Z")
        .to_owned();
    let hint: String = secret.chars().take(3).collect();
    a.passwords.push((
        key_id.clone(),
        name.clone(),
        hint.clone(),
        secret.clone(),
        end.clone(),
        refusals,
    ));
    t.added_secrets.push(secret.clone());
    ResponseTemplate::new(200).set_body_json(json!({
        "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#microsoft.graph.passwordCredential",
        "customKeyIdentifier": null, "displayName": name, "endDateTime": end, "hint": hint,
        "keyId": key_id, "secretText": secret, "startDateTime": "2026-11-25T13:40:07Z"}))
}
