//! Pure check of the app registration for NocoBase's email manager, from what the Graph
//! read of the last validation recorded (`status.lastValidation`): the Web redirect URI the
//! email manager's OAuth callback uses, the sign-in audience, and the delegated
//! permissions. It never blocks injection; it tells the administrator what to add in the
//! portal, with the exact value.

use crate::api::{LastValidation, NocoBaseSync};

/// Reasons of the `AppRegistrationReady` condition.
pub mod reason {
    /// True: every check passed.
    pub const READY: &str = "Ready";
    /// The Web redirect URI `{publicUrl}/admin/settings/mail/oauth2` is not registered:
    /// users cannot connect a mailbox.
    pub const REDIRECT_URI_MISSING: &str = "RedirectUriMissing";
    /// `signInAudience` is `AzureADMyOrg`: the email manager's settings have no tenant
    /// field, so it signs users in through a multi-tenant endpoint a single-tenant
    /// registration refuses.
    pub const SINGLE_TENANT_AUDIENCE: &str = "SingleTenantAudience";
    /// A delegated Graph permission the email manager needs is missing.
    pub const DELEGATED_PERMISSION_MISSING: &str = "DelegatedPermissionMissing";
    /// Unknown: Graph could not be read (no permission, discovery off, not reachable).
    pub const REGISTRATION_UNREADABLE: &str = "RegistrationUnreadable";
    /// Unknown: no valid credentials yet, so Graph was not asked.
    pub const AWAITING_VALID_CREDENTIALS: &str = "AwaitingValidCredentials";

    pub const ALL: &[&str] = &[
        READY,
        REDIRECT_URI_MISSING,
        SINGLE_TENANT_AUDIENCE,
        DELEGATED_PERMISSION_MISSING,
        REGISTRATION_UNREADABLE,
        AWAITING_VALID_CREDENTIALS,
    ];
}

/// The single-tenant audience value of `signInAudience`.
pub const SINGLE_TENANT: &str = "AzureADMyOrg";

/// The path NocoBase's client uses for email OAuth callbacks (`runtimePaths` of
/// `client-v2`), under the main application.
pub const MAIL_OAUTH_PATH: &str = "/admin/settings/mail/oauth2";

/// The Web redirect URI the email manager needs: `{publicUrl}/admin/settings/mail/oauth2`,
/// or `{publicUrl}/apps/{app}/admin/settings/mail/oauth2` for a sub-application.
pub fn required_redirect_uri(public_url: &str, app: Option<&str>) -> String {
    let base = public_url.trim().trim_end_matches('/');
    match app.map(str::trim).filter(|a| !a.is_empty()) {
        Some(a) => format!("{base}/apps/{a}{MAIL_OAUTH_PATH}"),
        None => format!("{base}{MAIL_OAUTH_PATH}"),
    }
}

/// The condition to set: status (`True`, `False`, `Unknown`), reason, message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppRegReport {
    pub status: &'static str,
    pub reason: &'static str,
    pub message: String,
    /// Every problem found, first one first (`reason`, portal instruction).
    pub problems: Vec<(&'static str, String)>,
}

/// What the registration lacks, in the order an administrator fixes it. `uris` and
/// `audience` come from Graph; `missing` from the permission audit.
pub fn problems(
    nb: &NocoBaseSync,
    uris: &[String],
    audience: Option<&str>,
    missing: &[String],
) -> Vec<(&'static str, String)> {
    let mut out = vec![];
    if let Some(public) = nb.public_url.as_deref() {
        let want = required_redirect_uri(public, nb.app.as_deref());
        let norm = |u: &str| u.trim().trim_end_matches('/').to_owned();
        if !uris.iter().any(|u| norm(u) == norm(&want)) {
            out.push((
                reason::REDIRECT_URI_MISSING,
                format!(
                    "the Web redirect URI {want} is not registered (registered Web URIs: {}): add it in App registrations > your app > Authentication > Add a platform > Web > Redirect URIs",
                    if uris.is_empty() { "none".to_owned() } else { uris.join(", ") }
                ),
            ));
        }
    }
    if audience == Some(SINGLE_TENANT) {
        out.push((
            reason::SINGLE_TENANT_AUDIENCE,
            format!(
                "signInAudience is {SINGLE_TENANT} (this organization only), but the email manager's settings have no tenant field: in Authentication > Supported account types choose \"Accounts in any organizational directory and personal Microsoft accounts\" (signInAudience AzureADandPersonalMicrosoftAccount)"
            ),
        ));
    }
    if !missing.is_empty() {
        out.push((
            reason::DELEGATED_PERMISSION_MISSING,
            format!(
                "the delegated Microsoft Graph permissions {} are missing: add them in API permissions > Add a permission > Microsoft Graph > Delegated permissions",
                missing.join(", ")
            ),
        ));
    }
    out
}

/// The `AppRegistrationReady` condition from the verdict for the current credentials
/// (`None` when there is none yet).
pub fn assess(nb: &NocoBaseSync, verdict: Option<&LastValidation>) -> AppRegReport {
    let unknown = |reason, message: String| AppRegReport {
        status: "Unknown",
        reason,
        message,
        problems: vec![],
    };
    let Some(last) = verdict.filter(|l| l.outcome == crate::api::Outcome::Valid) else {
        return unknown(
            reason::AWAITING_VALID_CREDENTIALS,
            "The app registration is read from Microsoft Graph once Microsoft accepts the credentials.".into(),
        );
    };
    let Some(uris) = &last.web_redirect_uris else {
        return unknown(
            reason::REGISTRATION_UNREADABLE,
            format!(
                "The app registration could not be read from Microsoft Graph, so the redirect URI, audience and permissions are not checked ({}). Grant the app the Application.Read.All application permission with admin consent, or check them in the portal yourself.",
                last.expiry_note.as_deref().unwrap_or("no detail")
            ),
        );
    };
    let audience = last.sign_in_audience.as_deref();
    let found = problems(nb, uris, audience, &last.missing_permissions);
    if let Some((first, _)) = found.first() {
        let list: Vec<&str> = found.iter().map(|(_, m)| m.as_str()).collect();
        return AppRegReport {
            status: "False",
            reason: first,
            message: format!(
                "The app registration is not ready for the email manager: {}. Mail delivery of the credentials is not blocked by this.",
                list.join("; ")
            ),
            problems: found,
        };
    }
    let redirect = match nb.public_url.as_deref() {
        Some(p) => format!(
            "the Web redirect URI {} is registered",
            required_redirect_uri(p, nb.app.as_deref())
        ),
        None => "the redirect URI is not checked (set spec.nocobase.publicUrl)".to_owned(),
    };
    AppRegReport {
        status: "True",
        reason: reason::READY,
        message: format!(
            "The app registration is ready for the email manager: {redirect}; signInAudience is {}; the delegated permissions are present.",
            audience.unwrap_or("not reported")
        ),
        problems: vec![],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nb(public: Option<&str>, app: Option<&str>) -> NocoBaseSync {
        serde_json::from_value(serde_json::json!({
            "url": "http://nocobase:13000",
            "apiKeySecretRef": {"name": "k"},
            "publicUrl": public,
            "app": app,
        }))
        .unwrap()
    }

    #[test]
    fn redirect_uri_for_main_and_sub_application() {
        assert_eq!(
            required_redirect_uri("https://crm.example.com/", None),
            "https://crm.example.com/admin/settings/mail/oauth2"
        );
        assert_eq!(
            required_redirect_uri("https://crm.example.com/nb", Some("sales")),
            "https://crm.example.com/nb/apps/sales/admin/settings/mail/oauth2"
        );
    }

    #[test]
    fn each_problem_names_the_portal_value() {
        let n = nb(Some("https://crm.example.com"), None);
        let p = problems(&n, &[], Some("AzureADMyOrg"), &["SMTP.Send".into()]);
        let reasons: Vec<&str> = p.iter().map(|(r, _)| *r).collect();
        assert_eq!(
            reasons,
            [
                reason::REDIRECT_URI_MISSING,
                reason::SINGLE_TENANT_AUDIENCE,
                reason::DELEGATED_PERMISSION_MISSING
            ]
        );
        assert!(
            p[0].1
                .contains("https://crm.example.com/admin/settings/mail/oauth2")
        );
        let ok = problems(
            &n,
            &["https://crm.example.com/admin/settings/mail/oauth2/".into()],
            Some("AzureADandPersonalMicrosoftAccount"),
            &[],
        );
        assert!(ok.is_empty());
        // without publicUrl the redirect URI is not judged
        assert!(problems(&nb(None, None), &[], Some("AzureADMultipleOrgs"), &[]).is_empty());
    }
}
