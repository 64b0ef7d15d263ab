//! The administrator's sign-in for `register`: the OAuth 2.0 device authorization grant
//! (RFC 8628) as Microsoft's identity platform serves it
//! (`{authority}/{tenant}/oauth2/v2.0/devicecode`, then the token endpoint with
//! `grant_type=urn:ietf:params:oauth:grant-type:device_code`), or an access token obtained
//! elsewhere and read from a file or standard input (never from the command line, where
//! `ps` and shell history would show it).
//!
//! The `oauth2` crate is not used here: its device-token exchange returns a fixed
//! `StandardErrorResponse` (`error`, `error_description`, `error_uri`), which drops
//! Microsoft's `error_codes` array, and classification goes by those codes (AADSTS7000218,
//! a sign-in client without public client flows, has no RFC 8628 error of its own). The
//! two form posts are written out instead, with [`poll_step`] as the pure reading of each
//! answer.

use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use secrecy::SecretString;
use serde::Deserialize;

use crate::http::{MAX_BODY_BYTES, read_capped};
use crate::microsoft::classify::{microsoft_sentence, parse_error_body};

pub const DEVICE_CODE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// Microsoft Graph Command Line Tools (the public client of Microsoft Graph PowerShell and
/// the Graph CLI): a Microsoft first-party public client present in every tenant, with
/// device code flow enabled, that asks for consent to exactly the delegated scopes named
/// (the Azure CLI's client is pre-authorized for a fixed set and refuses named Graph
/// scopes with AADSTS65002).
pub const DEFAULT_SIGN_IN_CLIENT: &str = "14d82eec-204b-4c2f-b7e8-296a70dab67e";

/// Polling interval when Microsoft names none (RFC 8628 section 3.2).
const DEFAULT_INTERVAL: u64 = 5;
/// Extra seconds after each `slow_down` (RFC 8628 section 3.5).
const SLOW_DOWN_STEP: u64 = 5;
/// Failed polls in a row (429, 5xx, network) before the sign-in is given up.
const MAX_TRANSIENT_POLLS: u32 = 5;

/// Why there is no token; `exit_code` follows `register`'s exit statuses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignInError {
    /// The administrator declined in the browser (`authorization_declined`, `access_denied`).
    Declined(String),
    /// The code expired before the sign-in finished (`expired_token`, AADSTS70019/70020).
    Expired(String),
    /// Microsoft refused (wrong tenant, client, policy): a message with the AADSTS code.
    Refused(String),
    /// No decision could be had (outage, throttling, network).
    Unavailable(String),
    /// The token file could not be read or holds no token.
    BadInput(String),
}

impl SignInError {
    pub fn message(&self) -> &str {
        match self {
            Self::Declined(m)
            | Self::Expired(m)
            | Self::Refused(m)
            | Self::Unavailable(m)
            | Self::BadInput(m) => m,
        }
    }

    pub fn exit_code(&self) -> u8 {
        match self {
            Self::BadInput(_) => 2,
            Self::Unavailable(_) => 3,
            _ => 1,
        }
    }
}

/// The device authorization response (`device_code` is never printed).
#[derive(Deserialize)]
pub struct DeviceAuthorization {
    device_code: String,
    pub user_code: String,
    pub verification_uri: String,
    pub expires_in: u64,
    #[serde(default)]
    pub interval: Option<u64>,
    #[serde(default)]
    pub message: Option<String>,
}

/// What one poll of the token endpoint means.
#[derive(Debug)]
pub enum PollStep {
    Token(SecretString),
    Pending,
    SlowDown,
    Stop(SignInError),
    /// Worth polling again (429, 5xx, an outage code); the text says what happened.
    Transient(String),
}

#[derive(Deserialize)]
struct TokenBody {
    access_token: Option<String>,
}

/// Reads one answer of the token endpoint to a device-code grant (pure). Decisions go by
/// `error_codes` first, then by the RFC 8628 `error` value, never by the prose.
pub fn poll_step(status: u16, body: &[u8]) -> PollStep {
    if status == 200 {
        return match serde_json::from_slice::<TokenBody>(body)
            .ok()
            .and_then(|t| t.access_token)
        {
            Some(t) if !t.is_empty() => PollStep::Token(SecretString::from(t)),
            _ => PollStep::Transient("Microsoft answered HTTP 200 without an access token".into()),
        };
    }
    if status == 429 || status >= 500 {
        return PollStep::Transient(format!("Microsoft answered HTTP {status}"));
    }
    let Some(b) = parse_error_body(body) else {
        return PollStep::Stop(SignInError::Refused(format!(
            "the token endpoint answered HTTP {status} with a body that is not a Microsoft error ({} bytes); check --authority-host",
            body.len()
        )));
    };
    let code = b.error_codes.first().copied();
    let said = microsoft_sentence(&b);
    match (b.error.as_deref().unwrap_or(""), code) {
        (_, Some(70016)) | ("authorization_pending", _) => PollStep::Pending,
        ("slow_down", _) => PollStep::SlowDown,
        (_, Some(70019 | 70020)) | ("expired_token", _) => PollStep::Stop(SignInError::Expired(
            "The sign-in code expired before the sign-in was completed (Microsoft gives 15 minutes). Nothing was changed: run the command again and enter the new code.".into(),
        )),
        ("authorization_declined" | "access_denied", _) => PollStep::Stop(SignInError::Declined(format!(
            "The sign-in was declined in the browser ({said}). Nothing was changed. To register the app, sign in with an account that may create app registrations (Application Developer or Cloud Application Administrator) and accept the consent prompt.",
        ))),
        (_, Some(70018)) | ("bad_verification_code", _) => PollStep::Stop(SignInError::Refused(
            "Microsoft does not recognise the device code (AADSTS70018). Run the command again.".into(),
        )),
        (_, Some(7000218)) => PollStep::Stop(SignInError::Refused(
            "The sign-in client does not allow public client flows (AADSTS7000218): turn on Authentication > Allow public client flows for the app named by --sign-in-client-id, or leave the flag out to use Microsoft Graph Command Line Tools.".into(),
        )),
        (_, Some(90033 | 50033 | 90006 | 50196 | 90055)) => {
            PollStep::Transient(format!("Microsoft asked to try again ({said})"))
        }
        (_, Some(c)) => PollStep::Stop(SignInError::Refused(format!(
            "Microsoft refused the sign-in (AADSTS{c}): {said}"
        ))),
        _ => PollStep::Stop(SignInError::Refused(format!("Microsoft refused the sign-in: {said}"))),
    }
}

/// Where and as whom to sign in.
pub struct SignIn<'a> {
    pub http: &'a reqwest::Client,
    pub authority: &'a str,
    pub tenant: &'a str,
    pub client_id: &'a str,
    /// Space-separated delegated scopes.
    pub scope: String,
}

impl SignIn<'_> {
    /// Runs the whole grant: asks for a code, shows Microsoft's instruction on stderr, and
    /// polls until the administrator finishes, declines, or the code expires.
    pub async fn device_code(&self) -> Result<SecretString, SignInError> {
        let auth = self.authorize().await?;
        eprintln!(
            "{}",
            auth.message.clone().unwrap_or_else(|| format!(
                "To sign in, use a web browser to open the page {} and enter the code {} to authenticate.",
                auth.verification_uri, auth.user_code
            ))
        );
        self.poll(&auth).await
    }

    async fn authorize(&self) -> Result<DeviceAuthorization, SignInError> {
        let url = format!("{}/{}/oauth2/v2.0/devicecode", self.authority, self.tenant);
        let form = [
            ("client_id", self.client_id),
            ("scope", self.scope.as_str()),
        ];
        let (status, body) = self.post(&url, &form).await?;
        if status == 200 {
            return serde_json::from_slice(&body).map_err(|_| {
                SignInError::Unavailable("Microsoft's device code answer could not be read".into())
            });
        }
        match poll_step(status, &body) {
            PollStep::Stop(e) => Err(e),
            _ => Err(SignInError::Unavailable(format!(
                "Microsoft did not hand out a sign-in code (HTTP {status}); try again later"
            ))),
        }
    }

    async fn poll(&self, auth: &DeviceAuthorization) -> Result<SecretString, SignInError> {
        let url = format!("{}/{}/oauth2/v2.0/token", self.authority, self.tenant);
        let device_code = auth.device_code.as_str();
        let form = [
            ("grant_type", DEVICE_CODE_GRANT),
            ("client_id", self.client_id),
            ("device_code", device_code),
        ];
        let deadline = Instant::now() + Duration::from_secs(auth.expires_in);
        let mut interval = auth.interval.unwrap_or(DEFAULT_INTERVAL);
        let mut transient = 0;
        loop {
            tokio::time::sleep(Duration::from_secs(interval)).await;
            let step = match self.post(&url, &form).await {
                Ok((status, body)) => poll_step(status, &body),
                Err(e) => PollStep::Transient(e.message().to_owned()),
            };
            match step {
                PollStep::Token(t) => return Ok(t),
                PollStep::Stop(e) => return Err(e),
                PollStep::Pending => transient = 0,
                PollStep::SlowDown => interval += SLOW_DOWN_STEP,
                PollStep::Transient(why) => {
                    transient += 1;
                    if transient >= MAX_TRANSIENT_POLLS {
                        return Err(SignInError::Unavailable(format!(
                            "the sign-in could not be completed: {why}; try again later"
                        )));
                    }
                }
            }
            if Instant::now() >= deadline {
                return Err(SignInError::Expired(
                    "The sign-in code expired before the sign-in was completed. Nothing was changed: run the command again.".into(),
                ));
            }
        }
    }

    async fn post(&self, url: &str, form: &[(&str, &str)]) -> Result<(u16, Vec<u8>), SignInError> {
        let resp = self.http.post(url).form(form).send().await.map_err(|e| {
            SignInError::Unavailable(format!(
                "{} could not be reached ({:?})",
                self.authority,
                crate::http::transport_failure(&e)
            ))
        })?;
        let status = resp.status().as_u16();
        let body = read_capped(resp, MAX_BODY_BYTES).await.map_err(|_| {
            SignInError::Unavailable(format!("{} sent an unreadable answer", self.authority))
        })?;
        Ok((status, body))
    }
}

/// The token in `path` (`-`: standard input): the bare token, or the JSON that
/// `az account get-access-token` prints (`accessToken`). Surrounding whitespace is removed.
pub fn read_access_token(path: &Path) -> Result<SecretString, SignInError> {
    let mut text = String::new();
    let read = if path.as_os_str() == "-" {
        std::io::stdin().read_to_string(&mut text).map(|_| ())
    } else {
        std::fs::read_to_string(path).map(|t| text = t)
    };
    read.map_err(|e| {
        SignInError::BadInput(format!(
            "cannot read the access token from {}: {e}",
            path.display()
        ))
    })?;
    let t = text.trim();
    let token = if t.starts_with('{') {
        serde_json::from_str::<serde_json::Value>(t)
            .ok()
            .and_then(|v| v["accessToken"].as_str().map(str::to_owned))
            .unwrap_or_default()
    } else {
        t.to_owned()
    };
    if token.is_empty() || token.chars().any(char::is_whitespace) {
        return Err(SignInError::BadInput(format!(
            "{} holds no access token (expected the token alone, or the JSON of `az account get-access-token --resource https://graph.microsoft.com`)",
            path.display()
        )));
    }
    Ok(SecretString::from(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_microsofts_poll_answers() {
        let pending = br#"{"error":"authorization_pending","error_description":"AADSTS70016: OAuth 2.0 device flow error. Authorization is pending. Continue polling.","error_codes":[70016]}"#;
        assert!(matches!(poll_step(400, pending), PollStep::Pending));
        assert!(matches!(
            poll_step(400, br#"{"error":"slow_down"}"#),
            PollStep::SlowDown
        ));
        let expired = br#"{"error":"expired_token","error_codes":[70020]}"#;
        assert!(matches!(
            poll_step(400, expired),
            PollStep::Stop(SignInError::Expired(_))
        ));
        let declined = br#"{"error":"authorization_declined","error_codes":[70000]}"#;
        assert!(matches!(
            poll_step(400, declined),
            PollStep::Stop(SignInError::Declined(_))
        ));
        let public = br#"{"error":"invalid_client","error_description":"AADSTS7000218: The request body must contain the following parameter: 'client_assertion' or 'client_secret'.","error_codes":[7000218]}"#;
        match poll_step(401, public) {
            PollStep::Stop(SignInError::Refused(m)) => assert!(m.contains("public client flows")),
            other => panic!("{other:?}"),
        }
        assert!(matches!(poll_step(503, b"<html>"), PollStep::Transient(_)));
        assert!(matches!(
            poll_step(200, br#"{"access_token":"x"}"#),
            PollStep::Token(_)
        ));
    }
}
