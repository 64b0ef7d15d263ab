//! Pure reading of the app registration as Microsoft Graph returns it
//! (`GET /v1.0/applications(appId='...')`): the secret's expiry and the permission audit.

use serde::Deserialize;

use super::verdict::{ExpiryInfo, GraphFindings, Registration};
use crate::api::ExpirySource;

/// Microsoft Graph's own application ID (`resourceAppId` of Graph permissions).
pub const GRAPH_APP_ID: &str = "00000003-0000-0000-c000-000000000000";

/// The delegated Graph permissions the NocoBase email manager needs, with their IDs
/// (Microsoft Graph permissions reference).
pub const REQUIRED_DELEGATED: [(&str, &str); 5] = [
    ("email", "64a6cdd6-aab1-4aaf-94b8-3cc8405e90d0"),
    ("offline_access", "7427e0e9-2fba-42fe-b0c0-848c9e6a8182"),
    (
        "IMAP.AccessAsUser.All",
        "652390e4-393a-48de-9484-05f9b1212954",
    ),
    ("SMTP.Send", "258f6531-6087-4cc4-bb90-092c5fb3ed3f"),
    ("User.Read", "e1fe6dd8-ba31-4d61-89e7-88639da4683d"),
];

#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub struct Application {
    #[serde(default)]
    pub password_credentials: Vec<PasswordCredential>,
    #[serde(default)]
    pub required_resource_access: Vec<RequiredResourceAccess>,
    #[serde(default)]
    pub sign_in_audience: Option<String>,
    #[serde(default)]
    pub web: Option<WebSettings>,
}

/// The Web platform of the registration (`web`); only the redirect URIs are read.
#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub struct WebSettings {
    #[serde(default)]
    pub redirect_uris: Vec<String>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub struct PasswordCredential {
    pub key_id: Option<String>,
    pub display_name: Option<String>,
    pub hint: Option<String>,
    pub end_date_time: Option<String>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub struct RequiredResourceAccess {
    pub resource_app_id: String,
    #[serde(default)]
    pub resource_access: Vec<ResourceAccess>,
}

#[derive(Deserialize, Debug, Default)]
pub struct ResourceAccess {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
}

/// Graph's date-times come with 0 to 7 fractional digits and a `Z`.
fn parse_graph_time(s: &str) -> Option<jiff::Timestamp> {
    s.parse::<jiff::Timestamp>().ok()
}

/// Reads expiry and permissions from an application object. `hint` is the first three
/// characters of the secret in use, which Microsoft stores as the credential's `hint`.
pub fn findings(app: &Application, hint: &str) -> GraphFindings {
    GraphFindings {
        expiry: expiry_by_hint(&app.password_credentials, hint),
        missing_permissions: Some(missing_permissions(app)),
        registration: Some(Registration {
            sign_in_audience: app.sign_in_audience.clone(),
            web_redirect_uris: app
                .web
                .as_ref()
                .map(|w| w.redirect_uris.clone())
                .unwrap_or_default(),
        }),
    }
}

fn expiry_by_hint(creds: &[PasswordCredential], hint: &str) -> ExpiryInfo {
    let matching: Vec<&PasswordCredential> = creds
        .iter()
        .filter(|c| c.hint.as_deref() == Some(hint))
        .collect();
    let ends: Vec<Option<jiff::Timestamp>> = matching
        .iter()
        .map(|c| c.end_date_time.as_deref().and_then(parse_graph_time))
        .collect();
    match ends.as_slice() {
        [] => ExpiryInfo {
            note: Some(format!(
                "none of the application's {} client secrets has the hint of the secret in use, so its expiry is unknown; state secretExpiry.expiresAt",
                creds.len()
            )),
            ..Default::default()
        },
        [Some(t)] => ExpiryInfo {
            expires_at: Some(*t),
            source: Some(ExpirySource::Graph),
            note: Some(format!(
                "read from Microsoft Graph (client secret '{}')",
                matching[0].display_name.as_deref().unwrap_or("unnamed")
            )),
        },
        // Several secrets share the hint: only if they agree is the date certain.
        [Some(first), rest @ ..] if rest.iter().all(|t| t.as_ref() == Some(first)) => ExpiryInfo {
            expires_at: Some(*first),
            source: Some(ExpirySource::Graph),
            note: Some(
                "read from Microsoft Graph (several client secrets share the hint and the expiry)"
                    .into(),
            ),
        },
        [_, _, ..] => ExpiryInfo {
            note: Some(format!(
                "{} client secrets share the hint of the secret in use and expire at different times, so its expiry is unknown; state secretExpiry.expiresAt",
                matching.len()
            )),
            ..Default::default()
        },
        [None] => ExpiryInfo {
            note: Some("Microsoft Graph reports no end date for the secret in use".into()),
            ..Default::default()
        },
    }
}

/// Required delegated permissions absent from the app registration, in the order listed in
/// NocoBase's documentation.
pub fn missing_permissions(app: &Application) -> Vec<String> {
    let granted: Vec<&str> = app
        .required_resource_access
        .iter()
        .filter(|r| r.resource_app_id.eq_ignore_ascii_case(GRAPH_APP_ID))
        .flat_map(|r| r.resource_access.iter())
        .filter(|a| a.kind == "Scope")
        .map(|a| a.id.as_str())
        .collect();
    REQUIRED_DELEGATED
        .iter()
        .filter(|(_, id)| !granted.iter().any(|g| g.eq_ignore_ascii_case(id)))
        .map(|(name, _)| (*name).to_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cred(hint: &str, end: &str) -> PasswordCredential {
        PasswordCredential {
            hint: Some(hint.into()),
            end_date_time: Some(end.into()),
            ..Default::default()
        }
    }

    #[test]
    fn picks_the_credential_with_the_hint() {
        let e = expiry_by_hint(
            &[
                cred("Abc", "2027-01-01T00:00:00Z"),
                cred("Q~x", "2026-12-01T10:00:00.1234567Z"),
            ],
            "Q~x",
        );
        assert_eq!(
            e.expires_at.unwrap().to_string(),
            "2026-12-01T10:00:00.1234567Z"
        );
        assert_eq!(e.source, Some(ExpirySource::Graph));
    }

    #[test]
    fn never_guesses() {
        assert_eq!(
            expiry_by_hint(&[cred("Abc", "2027-01-01T00:00:00Z")], "Zzz").expires_at,
            None
        );
        let two = [
            cred("Abc", "2027-01-01T00:00:00Z"),
            cred("Abc", "2028-01-01T00:00:00Z"),
        ];
        assert_eq!(expiry_by_hint(&two, "Abc").expires_at, None);
        let same = [
            cred("Abc", "2027-01-01T00:00:00Z"),
            cred("Abc", "2027-01-01T00:00:00Z"),
        ];
        assert!(expiry_by_hint(&same, "Abc").expires_at.is_some());
    }
}
