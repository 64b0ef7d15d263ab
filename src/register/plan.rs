//! What `register` asks Microsoft Graph, decided from what Graph showed (pure). Each
//! function takes what was read and returns the request to send, or none when nothing is
//! missing, so a re-run sends no write and a repair adds only what is missing: existing
//! redirect URIs, permissions, owners and app roles are sent back as they were, never
//! dropped.

use serde_json::{Value, json};

use crate::microsoft::graph::{GRAPH_APP_ID, REQUIRED_DELEGATED};

/// Application permission `Application.Read.All` (app role of Microsoft Graph): lets the
/// operator read the secret's expiry from Graph.
pub const APPLICATION_READ_ALL: (&str, &str) = (
    "Application.Read.All",
    "9a5d68dd-52b0-4cc2-bd40-abcf44ac3a30",
);
/// Application permission `Application.ReadWrite.OwnedBy`: with ownership, lets the
/// operator add and remove its own client secrets (zero-touch rotation).
pub const APPLICATION_READWRITE_OWNEDBY: (&str, &str) = (
    "Application.ReadWrite.OwnedBy",
    "18a4783c-866b-4cc7-a460-3d5e5662c884",
);

/// The application's properties read back (and compared) on every run.
pub const APP_SELECT: &str =
    "id,appId,displayName,signInAudience,web,requiredResourceAccess,passwordCredentials";

/// One Graph request: method, path under the Graph host (with `/v1.0`), JSON body, and
/// what it is for in words.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    pub method: &'static str,
    pub path: String,
    pub body: Option<Value>,
    pub what: String,
}

impl Request {
    fn get(path: String, what: &str) -> Self {
        Self {
            method: "GET",
            path,
            body: None,
            what: what.into(),
        }
    }

    fn write(method: &'static str, path: String, body: Value, what: String) -> Self {
        Self {
            method,
            path,
            body: Some(body),
            what,
        }
    }
}

/// What the registration must hold.
#[derive(Clone, Debug)]
pub struct Desired {
    pub display_name: String,
    pub audience: String,
    /// `{publicUrl}/admin/settings/mail/oauth2` (or the sub-application's), when known.
    pub redirect_uri: Option<String>,
    pub expiry_discovery: bool,
    pub rotation: bool,
}

impl Desired {
    /// The Graph application permissions the options ask for (name, app role ID).
    pub fn roles(&self) -> Vec<(&'static str, &'static str)> {
        let mut r = vec![];
        if self.expiry_discovery {
            r.push(APPLICATION_READ_ALL);
        }
        if self.rotation {
            r.push(APPLICATION_READWRITE_OWNEDBY);
        }
        r
    }

    /// Every Graph permission entry of `requiredResourceAccess`: the five delegated scopes
    /// and the application permissions of the options.
    fn permissions(&self) -> Vec<(&'static str, &'static str, &'static str)> {
        let delegated = REQUIRED_DELEGATED.iter().map(|(n, id)| (*n, *id, "Scope"));
        let roles = self.roles().into_iter().map(|(n, id)| (n, id, "Role"));
        delegated.chain(roles).collect()
    }
}

/// An OData string literal: single quotes doubled.
fn odata_quote(s: &str) -> String {
    s.replace('\'', "''")
}

/// The lookup of the registration: by client ID when given, else by display name.
pub fn find_application(client_id: Option<&str>, display_name: &str) -> Request {
    match client_id {
        Some(id) => Request::get(
            format!("/v1.0/applications(appId='{id}')?$select={APP_SELECT}"),
            "find the application by its client ID",
        ),
        None => {
            let filter = format!("displayName eq '{}'", odata_quote(display_name));
            // %20, not +: OData reads the query as a URI, where + is a plus sign
            let q = url::form_urlencoded::byte_serialize(filter.as_bytes())
                .collect::<String>()
                .replace('+', "%20");
            Request::get(
                format!("/v1.0/applications?$filter={q}&$select={APP_SELECT}"),
                "find the application by its display name",
            )
        }
    }
}

/// Personal Microsoft accounts need v2 access tokens (`api.requestedAccessTokenVersion`).
fn needs_v2_tokens(audience: &str) -> bool {
    audience.contains("Personal")
}

/// `POST /applications`: the seed's registration in one request.
pub fn create_application(d: &Desired) -> Request {
    let access: Vec<Value> = d
        .permissions()
        .iter()
        .map(|(_, id, kind)| json!({"id": id, "type": kind}))
        .collect();
    let mut body = json!({
        "displayName": d.display_name,
        "signInAudience": d.audience,
        "requiredResourceAccess": [{"resourceAppId": GRAPH_APP_ID, "resourceAccess": access}],
    });
    if let Some(uri) = &d.redirect_uri {
        body["web"] = json!({"redirectUris": [uri]});
    }
    if needs_v2_tokens(&d.audience) {
        body["api"] = json!({"requestedAccessTokenVersion": 2});
    }
    Request::write(
        "POST",
        "/v1.0/applications".into(),
        body,
        format!("create the application '{}'", d.display_name),
    )
}

fn str_list(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// What an existing registration lacks, in words, and the `PATCH` adding it (existing
/// values kept). `None`: nothing is missing.
pub fn repair_application(d: &Desired, app: &Value) -> Option<(Request, Vec<String>)> {
    let mut body = serde_json::Map::new();
    let mut missing = vec![];
    if let Some(want) = &d.redirect_uri {
        let mut uris = str_list(&app["web"]["redirectUris"]);
        let norm = |u: &str| u.trim().trim_end_matches('/').to_owned();
        if !uris.iter().any(|u| norm(u) == norm(want)) {
            missing.push(format!("the Web redirect URI {want}"));
            uris.push(want.clone());
            body.insert("web".into(), json!({"redirectUris": uris}));
        }
    }
    if let Some((rra, names)) = merged_permissions(d, &app["requiredResourceAccess"]) {
        missing.push(format!("the Graph permissions {}", names.join(", ")));
        body.insert("requiredResourceAccess".into(), rra);
    }
    if app["signInAudience"].as_str() == Some(crate::appreg::SINGLE_TENANT) {
        missing.push(format!("signInAudience {} (was AzureADMyOrg)", d.audience));
        body.insert("signInAudience".into(), json!(d.audience));
        if needs_v2_tokens(&d.audience) {
            body.insert("api".into(), json!({"requestedAccessTokenVersion": 2}));
        }
    }
    if body.is_empty() {
        return None;
    }
    let id = app["id"].as_str().unwrap_or("{application-object-id}");
    let req = Request::write(
        "PATCH",
        format!("/v1.0/applications/{id}"),
        Value::Object(body),
        format!("add {}", missing.join("; ")),
    );
    Some((req, missing))
}

/// The registration's `requiredResourceAccess` with the missing Graph permissions added
/// (other resources and other Graph permissions untouched), and the names added.
fn merged_permissions(d: &Desired, rra: &Value) -> Option<(Value, Vec<&'static str>)> {
    let mut list = rra.as_array().cloned().unwrap_or_default();
    let idx = list.iter().position(|r| {
        r["resourceAppId"]
            .as_str()
            .is_some_and(|a| a.eq_ignore_ascii_case(GRAPH_APP_ID))
    });
    let idx = idx.unwrap_or_else(|| {
        list.push(json!({"resourceAppId": GRAPH_APP_ID, "resourceAccess": []}));
        list.len() - 1
    });
    let access = list[idx]["resourceAccess"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let has = |id: &str, kind: &str| {
        access.iter().any(|a| {
            a["id"].as_str().is_some_and(|x| x.eq_ignore_ascii_case(id)) && a["type"] == kind
        })
    };
    let add: Vec<_> = d
        .permissions()
        .into_iter()
        .filter(|(_, id, kind)| !has(id, kind))
        .collect();
    if add.is_empty() {
        return None;
    }
    let mut merged = access;
    merged.extend(
        add.iter()
            .map(|(_, id, kind)| json!({"id": id, "type": kind})),
    );
    list[idx]["resourceAccess"] = Value::Array(merged);
    Some((Value::Array(list), add.iter().map(|(n, ..)| *n).collect()))
}

/// The service principal of an app (also Microsoft Graph's own, `GRAPH_APP_ID`).
pub fn find_service_principal(app_id: &str) -> Request {
    Request::get(
        format!("/v1.0/servicePrincipals(appId='{app_id}')?$select=id,appId"),
        "find the service principal",
    )
}

/// `POST /servicePrincipals`: without it a client-credentials request fails (AADSTS7000229).
pub fn create_service_principal(app_id: &str) -> Request {
    Request::write(
        "POST",
        "/v1.0/servicePrincipals".into(),
        json!({"appId": app_id}),
        "create the service principal (the app's identity in the tenant)".into(),
    )
}

/// `addPassword`: the client secret, named after the operator.
pub fn add_password(app_object_id: &str, display_name: &str, end: jiff::Timestamp) -> Request {
    Request::write(
        "POST",
        format!("/v1.0/applications/{app_object_id}/addPassword"),
        json!({"passwordCredential": {"displayName": display_name, "endDateTime": end.to_string()}}),
        format!("create a client secret '{display_name}' valid until {end}"),
    )
}

/// `removePassword`: takes back a secret whose Value could not be stored anywhere.
pub fn remove_password(app_object_id: &str, key_id: &str) -> Request {
    Request::write(
        "POST",
        format!("/v1.0/applications/{app_object_id}/removePassword"),
        json!({"keyId": key_id}),
        "remove the client secret again (its Value could not be stored)".into(),
    )
}

/// The app roles already granted to the service principal.
pub fn list_app_role_assignments(sp_id: &str) -> Request {
    Request::get(
        format!("/v1.0/servicePrincipals/{sp_id}/appRoleAssignments?$select=resourceId,appRoleId"),
        "list the application permissions granted",
    )
}

/// The app role assignments the options need that `assigned` (the list's `value`) lacks.
pub fn missing_role_assignments(
    d: &Desired,
    sp_id: &str,
    graph_sp_id: &str,
    assigned: &Value,
) -> Vec<(&'static str, Request)> {
    let granted = |role: &str| {
        assigned.as_array().is_some_and(|a| {
            a.iter().any(|x| {
                x["resourceId"] == graph_sp_id
                    && x["appRoleId"]
                        .as_str()
                        .is_some_and(|r| r.eq_ignore_ascii_case(role))
            })
        })
    };
    d.roles()
        .into_iter()
        .filter(|(_, id)| !granted(id))
        .map(|(name, id)| {
            let body = json!({"principalId": sp_id, "resourceId": graph_sp_id, "appRoleId": id});
            let what = format!("grant the application permission {name} (admin consent)");
            let path = format!("/v1.0/servicePrincipals/{sp_id}/appRoleAssignments");
            (name, Request::write("POST", path, body, what))
        })
        .collect()
}

pub fn list_owners(app_object_id: &str) -> Request {
    Request::get(
        format!("/v1.0/applications/{app_object_id}/owners?$select=id"),
        "list the application's owners",
    )
}

/// Makes the service principal an owner of its own application (for `OwnedBy`), unless
/// `owners` (the list's `value`) already holds it.
pub fn add_owner(
    graph_host: &str,
    app_object_id: &str,
    sp_id: &str,
    owners: &Value,
) -> Option<Request> {
    let owned = owners
        .as_array()
        .is_some_and(|a| a.iter().any(|o| o["id"] == sp_id));
    (!owned).then(|| {
        Request::write(
            "POST",
            format!("/v1.0/applications/{app_object_id}/owners/$ref"),
            json!({"@odata.id": format!("{graph_host}/v1.0/directoryObjects/{sp_id}")}),
            "make the service principal an owner of its application (rotation)".into(),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desired() -> Desired {
        Desired {
            display_name: "NocoBase email".into(),
            audience: "AzureADandPersonalMicrosoftAccount".into(),
            redirect_uri: Some("https://crm.example.com/admin/settings/mail/oauth2".into()),
            expiry_discovery: true,
            rotation: false,
        }
    }

    #[test]
    fn a_complete_registration_needs_no_write() {
        let d = desired();
        let created = create_application(&d).body.unwrap();
        let mut app = created.clone();
        app["id"] = json!("obj");
        assert_eq!(repair_application(&d, &app), None);
        assert_eq!(created["api"]["requestedAccessTokenVersion"], 2);
        assert_eq!(
            created["requiredResourceAccess"][0]["resourceAccess"]
                .as_array()
                .unwrap()
                .len(),
            6
        );
    }

    #[test]
    fn repair_adds_only_what_is_missing_and_keeps_the_rest() {
        let d = desired();
        let app = json!({"id": "obj", "signInAudience": "AzureADMultipleOrgs",
            "web": {"redirectUris": ["https://other.example.com/cb"]},
            "requiredResourceAccess": [
                {"resourceAppId": "00000002-0000-0ff1-ce00-000000000000", "resourceAccess": [{"id": "x", "type": "Scope"}]},
                {"resourceAppId": GRAPH_APP_ID, "resourceAccess": [
                    {"id": "e1fe6dd8-ba31-4d61-89e7-88639da4683d", "type": "Scope"},
                    {"id": "user-added", "type": "Scope"}]}]});
        let (req, missing) = repair_application(&d, &app).unwrap();
        assert_eq!(req.method, "PATCH");
        assert_eq!(req.path, "/v1.0/applications/obj");
        let b = req.body.unwrap();
        assert_eq!(
            b["web"]["redirectUris"],
            json!([
                "https://other.example.com/cb",
                "https://crm.example.com/admin/settings/mail/oauth2"
            ])
        );
        assert_eq!(
            b["requiredResourceAccess"][0],
            app["requiredResourceAccess"][0]
        );
        let graph = b["requiredResourceAccess"][1]["resourceAccess"]
            .as_array()
            .unwrap();
        assert_eq!(graph.len(), 7, "2 kept + 4 delegated + 1 role");
        assert_eq!(graph[1]["id"], "user-added");
        assert!(
            b.get("signInAudience").is_none(),
            "multi-tenant is left alone"
        );
        assert_eq!(missing.len(), 2);
    }

    #[test]
    fn display_name_is_quoted_for_odata() {
        let r = find_application(None, "Bob's mail");
        assert!(
            r.path
                .contains("displayName%20eq%20%27Bob%27%27s%20mail%27"),
            "{}",
            r.path
        );
    }
}
