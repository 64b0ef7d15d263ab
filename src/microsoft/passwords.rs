//! Microsoft Graph writes for rotation: `addPassword`, `removePassword`, and the reads
//! around them (the app's password credentials, its owners). Only this file sends them;
//! [`classify`] reads Graph's answers and is pure. The new secret's Value (`secretText`)
//! goes straight into a [`SecretString`]: no response body is ever logged or quoted except
//! Graph's own error message, which never holds a secret.

use std::time::Instant;

use base64::Engine;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::json;

use super::client::MicrosoftClient;
use super::graph::PasswordCredential;
use crate::input::Credentials;

/// Why a Graph write did not happen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GraphError {
    /// `NotOwner`, `PolicyRefused`, `GraphUnavailable`, `GraphRefused`, or a token reason.
    pub reason: String,
    pub message: String,
    /// Worth trying again soon (throttling, outage, network).
    pub transient: bool,
}

impl GraphError {
    fn new(reason: &str, message: String, transient: bool) -> Self {
        Self {
            reason: reason.into(),
            message,
            transient,
        }
    }
}

/// The credential `addPassword` created.
pub struct NewPassword {
    pub key_id: String,
    pub hint: String,
    pub end_date_time: String,
    /// The Value, returned this once by Microsoft.
    pub secret: SecretString,
}

impl std::fmt::Debug for NewPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewPassword")
            .field("key_id", &self.key_id)
            .field("end_date_time", &self.end_date_time)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorInner,
}

#[derive(Deserialize)]
struct ErrorInner {
    code: Option<String>,
    message: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AddedBody {
    key_id: Option<String>,
    hint: Option<String>,
    end_date_time: Option<String>,
    secret_text: Option<String>,
}

/// Graph's error `code` and its own sentence, bounded (it names a policy or a
/// permission, never a secret); empty when the body is not a Graph error.
pub fn error_parts(body: &[u8]) -> (String, String) {
    let parsed = serde_json::from_slice::<ErrorBody>(body)
        .ok()
        .map(|b| b.error);
    let code = parsed
        .as_ref()
        .and_then(|e| e.code.clone())
        .unwrap_or_default();
    let said: String = parsed
        .and_then(|e| e.message)
        .unwrap_or_default()
        .chars()
        .take(crate::http::MAX_QUOTED_CHARS)
        .collect();
    (code, said)
}

/// Reads `addPassword`'s answer (pure); `end` when Graph echoes no `endDateTime`.
pub fn new_password(bytes: &[u8], end: &str) -> Result<NewPassword, GraphError> {
    let added: AddedBody = serde_json::from_slice(bytes).map_err(|_| {
        GraphError::new(
            "GraphRefused",
            "Microsoft Graph's addPassword answer could not be read.".into(),
            false,
        )
    })?;
    match (added.key_id, added.secret_text) {
        (Some(key_id), Some(secret)) if !secret.is_empty() => Ok(NewPassword {
            key_id,
            hint: added.hint.unwrap_or_default(),
            end_date_time: added.end_date_time.unwrap_or_else(|| end.to_owned()),
            secret: SecretString::from(secret),
        }),
        _ => Err(GraphError::new(
            "GraphRefused",
            "Microsoft Graph's addPassword answer has no keyId or secretText.".into(),
            false,
        )),
    }
}

/// What a failed Graph answer means (pure).
pub fn classify(status: u16, body: &[u8]) -> GraphError {
    let (code, said) = error_parts(body);
    match status {
        403 => GraphError::new(
            "NotOwner",
            format!(
                "Microsoft Graph refused the change ({status} {code}: {said}). The app needs the application permission Application.ReadWrite.OwnedBy with admin consent and must be an owner of its own app registration (see the documentation, Zero-touch rotation > One-time set-up)."
            ),
            false,
        ),
        400 if code.ends_with("AsPerAppPolicy") => GraphError::new(
            "PolicyRefused",
            format!(
                "A tenant app-management policy refused the new client secret ({code}: {said}). Shorten spec.rotation.lifetime to what the policy allows, or ask an administrator to exempt the app."
            ),
            false,
        ),
        429 | 500..=599 => GraphError::new(
            "GraphUnavailable",
            format!("Microsoft Graph is unavailable (HTTP {status}); trying again."),
            true,
        ),
        _ => GraphError::new(
            "GraphRefused",
            format!("Microsoft Graph answered HTTP {status} {code}: {said}"),
            false,
        ),
    }
}

/// The application permissions and object ID in an access token (its payload is read, not
/// verified: it only explains what Microsoft granted, it decides nothing).
pub fn token_claims(token: &str) -> (Vec<String>, Option<String>) {
    let payload = token.split('.').nth(1).unwrap_or_default();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .unwrap_or_default();
    let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    let roles = v["roles"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|r| r.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    (roles, v["oid"].as_str().map(str::to_owned))
}

/// A Graph session for one app registration, with an app-only token of its own secret.
pub struct AppGraph<'a> {
    ms: &'a MicrosoftClient,
    base: String,
    token: SecretString,
}

impl<'a> AppGraph<'a> {
    /// Gets a token with `creds` (one attempt: the reconcile retries later).
    pub async fn connect(ms: &'a MicrosoftClient, creds: &Credentials) -> Result<Self, GraphError> {
        let token = ms.access_token(creds).await.map_err(|v| {
            GraphError::new(
                v.reason.unwrap_or("TokenRefused"),
                format!("No token for Microsoft Graph: {}", v.message),
                v.outcome == super::Outcome::Unavailable,
            )
        })?;
        Ok(Self {
            ms,
            base: format!(
                "{}/v1.0/applications(appId='{}')",
                creds.graph_host, creds.client_id
            ),
            token,
        })
    }

    pub fn claims(&self) -> (Vec<String>, Option<String>) {
        token_claims(self.token.expose_secret())
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<(u16, Vec<u8>), GraphError> {
        let t0 = Instant::now();
        let req = self.ms.bounded(req.bearer_auth(self.token.expose_secret()));
        let resp = req.send().await;
        let resp = resp.map_err(|e| {
            self.ms.observe("graph", 0, t0.elapsed());
            GraphError::new(
                "GraphUnavailable",
                format!(
                    "Microsoft Graph could not be reached ({}).",
                    if e.is_timeout() {
                        "timeout"
                    } else {
                        "network error"
                    }
                ),
                true,
            )
        })?;
        let status = resp.status().as_u16();
        // capped like every other answer: a Graph host on the allow-list that answers with
        // hundreds of MiB must not take the operator's memory (the chart's limit is 128 MiB)
        let body = crate::http::read_capped(resp, crate::http::MAX_BODY_BYTES).await;
        self.ms.observe("graph", status, t0.elapsed());
        match body {
            Ok(body) => Ok((status, body)),
            Err(crate::http::BodyError::TooLarge) => Err(GraphError::new(
                "GraphUnavailable",
                format!(
                    "Microsoft Graph answered HTTP {status} with a body larger than 1 MiB, which no Graph answer is; it was not read. Trying again later."
                ),
                true,
            )),
            Err(crate::http::BodyError::Transport(e)) => Err(GraphError::new(
                "GraphUnavailable",
                format!(
                    "Microsoft Graph could not be reached ({}).",
                    if e.is_timeout() {
                        "timeout"
                    } else {
                        "network error"
                    }
                ),
                true,
            )),
        }
    }

    /// The app's password credentials (keyId, displayName, hint, dates).
    pub async fn passwords(&self) -> Result<Vec<PasswordCredential>, GraphError> {
        let url = format!("{}?$select=passwordCredentials", self.base);
        let (status, body) = self.send(self.ms.http().get(url)).await?;
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Creds {
            #[serde(default)]
            password_credentials: Vec<PasswordCredential>,
        }
        match status {
            200 => serde_json::from_slice::<Creds>(&body)
                .map(|c| c.password_credentials)
                .map_err(|_| {
                    GraphError::new(
                        "GraphRefused",
                        "Microsoft Graph returned an application that could not be read.".into(),
                        true,
                    )
                }),
            s => Err(classify(s, &body)),
        }
    }

    /// `addPassword`: a new secret named `display_name`, valid until `end`.
    pub async fn add_password(
        &self,
        display_name: &str,
        end: jiff::Timestamp,
    ) -> Result<NewPassword, GraphError> {
        let body = json!({"passwordCredential": {"displayName": display_name, "endDateTime": end.to_string()}});
        let url = format!("{}/addPassword", self.base);
        let (status, bytes) = self.send(self.ms.http().post(url).json(&body)).await?;
        if status != 200 {
            return Err(classify(status, &bytes));
        }
        new_password(&bytes, &end.to_string())
    }

    /// `removePassword`. A credential already gone counts as removed.
    pub async fn remove_password(&self, key_id: &str) -> Result<(), GraphError> {
        let url = format!("{}/removePassword", self.base);
        let (status, body) = self
            .send(self.ms.http().post(url).json(&json!({"keyId": key_id})))
            .await?;
        match status {
            200 | 204 | 404 => Ok(()),
            s => Err(classify(s, &body)),
        }
    }

    /// Object IDs of the registration's owners.
    pub async fn owners(&self) -> Result<Vec<String>, GraphError> {
        let url = format!("{}/owners?$select=id", self.base);
        let (status, body) = self.send(self.ms.http().get(url)).await?;
        if status != 200 {
            return Err(classify(status, &body));
        }
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        Ok(v["value"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|o| o["id"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default())
    }
}

/// Whether this credential may add passwords to its own registration, found without
/// creating anything: the token's application permissions, and ownership when the
/// permission is the least one (`Application.ReadWrite.OwnedBy`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CanRotate {
    pub allowed: bool,
    pub permission: Option<String>,
    pub owner: Option<bool>,
    pub message: String,
}

pub async fn can_rotate(
    ms: &MicrosoftClient,
    creds: &Credentials,
) -> Result<CanRotate, GraphError> {
    let g = AppGraph::connect(ms, creds).await?;
    let (roles, oid) = g.claims();
    let broad = roles
        .iter()
        .find(|r| *r == "Application.ReadWrite.All" || *r == "Directory.ReadWrite.All");
    if let Some(p) = broad {
        return Ok(CanRotate {
            allowed: true,
            permission: Some(p.clone()),
            owner: None,
            message: format!(
                "The app holds {p}: it may add and remove its own client secrets (a broader permission than Application.ReadWrite.OwnedBy, which is enough)."
            ),
        });
    }
    if !roles.iter().any(|r| r == "Application.ReadWrite.OwnedBy") {
        return Ok(CanRotate {
            allowed: false,
            permission: None,
            owner: None,
            message: "The app's token holds no Application.ReadWrite.OwnedBy permission: add it (API permissions > Microsoft Graph > Application permissions) and grant admin consent.".into(),
        });
    }
    let owner = match g.owners().await {
        Ok(ids) => oid.as_ref().is_some_and(|o| ids.iter().any(|i| i == o)),
        Err(e) if e.transient => return Err(e),
        Err(_) => false,
    };
    Ok(CanRotate {
        allowed: owner,
        permission: Some("Application.ReadWrite.OwnedBy".into()),
        owner: Some(owner),
        message: if owner {
            "The app holds Application.ReadWrite.OwnedBy and owns its registration: it may add and remove its own client secrets.".into()
        } else {
            "The app holds Application.ReadWrite.OwnedBy but is not an owner of its own registration: add its service principal as an owner (see the documentation, Zero-touch rotation > One-time set-up).".into()
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_graph_answers() {
        let policy = br#"{"error":{"code":"CredentialInvalidLifetimeAsPerAppPolicy","message":"Credential lifetime exceeds the max value allowed as per assigned policy 'p'."}}"#;
        assert_eq!(classify(400, policy).reason, "PolicyRefused");
        let denied = br#"{"error":{"code":"Authorization_RequestDenied","message":"Insufficient privileges to complete the operation."}}"#;
        assert_eq!(classify(403, denied).reason, "NotOwner");
        assert!(classify(503, b"<html>").transient);
        assert!(!classify(400, b"{}").transient);
    }

    #[test]
    fn reads_token_claims() {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let t = format!(
            "h.{}.s",
            b64.encode(br#"{"roles":["Application.ReadWrite.OwnedBy"],"oid":"x"}"#)
        );
        assert_eq!(
            token_claims(&t),
            (
                vec!["Application.ReadWrite.OwnedBy".to_owned()],
                Some("x".to_owned())
            )
        );
        assert_eq!(token_claims("garbage"), (vec![], None));
    }
}
