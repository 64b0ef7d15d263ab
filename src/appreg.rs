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

/// The path NocoBase serves the email manager's OAuth callback at, under the main
/// application: `runtimePaths` of `client-v2`, and NocoBase 2.2's modern client maps the
/// callback back to the application root without its `/v/` prefix
/// (`LEGACY_EMAIL_OAUTH_PATH` in its settings-path resolver).
pub const MAIL_OAUTH_PATH: &str = "/admin/settings/mail/oauth2";

/// The prefix NocoBase 2.x serves its modern client under (`APP_MODERN_CLIENT_PREFIX`).
pub const MODERN_CLIENT_PREFIX: &str = "/v";

/// The Web redirect URI the email manager needs: `{publicUrl}{path}`, or
/// `{publicUrl}/apps/{app}{path}` for a sub-application; `path` defaults to
/// [`MAIL_OAUTH_PATH`] (`spec.nocobase.oauthCallbackPath`). The one place it is computed:
/// the readiness check, `check --public-url` and `register` all use it.
pub fn required_redirect_uri(public_url: &str, app: Option<&str>, path: Option<&str>) -> String {
    let base = public_url.trim().trim_end_matches('/');
    let path = callback_path(path);
    match app.map(str::trim).filter(|a| !a.is_empty()) {
        Some(a) => format!("{base}/apps/{a}{path}"),
        None => format!("{base}{path}"),
    }
}

/// The callback path in effect: the spec's, or [`MAIL_OAUTH_PATH`].
pub fn callback_path(path: Option<&str>) -> String {
    let p = path.map(str::trim).filter(|p| !p.is_empty());
    let p = p.unwrap_or(MAIL_OAUTH_PATH).trim_end_matches('/');
    if p.starts_with('/') {
        p.to_owned()
    } else {
        format!("/{p}")
    }
}

/// The other form of the callback path: with the modern client's `/v` prefix when it
/// has none, without it when it has one.
fn other_form(path: &str) -> String {
    match path.strip_prefix(MODERN_CLIENT_PREFIX) {
        Some(rest) if rest.starts_with('/') => rest.to_owned(),
        _ => format!("{MODERN_CLIENT_PREFIX}{path}"),
    }
}

/// The redirect URIs accepted as registered: the required one first, then the other
/// form (with or without `/v/`), each with a phrase naming it.
pub fn accepted_redirect_uris(
    public_url: &str,
    app: Option<&str>,
    path: Option<&str>,
) -> [(String, &'static str); 2] {
    let p = callback_path(path);
    let other = other_form(&p);
    let name = |p: &str| {
        if p.starts_with("/v/") {
            "the modern client's /v/ form"
        } else {
            "the form NocoBase 2.2 serves"
        }
    };
    [
        (required_redirect_uri(public_url, app, Some(&p)), name(&p)),
        (
            required_redirect_uri(public_url, app, Some(&other)),
            name(&other),
        ),
    ]
}

/// Which registered Web URI matches an accepted form, and which form it is.
pub fn registered_form(
    nb: &NocoBaseSync,
    uris: &[String],
) -> Option<Result<(String, &'static str), String>> {
    let public = nb.public_url.as_deref()?;
    let path = nb.oauth_callback_path.as_deref();
    let norm = |u: &str| u.trim().trim_end_matches('/').to_owned();
    let accepted = accepted_redirect_uris(public, nb.app.as_deref(), path);
    Some(
        accepted
            .iter()
            .find(|(want, _)| uris.iter().any(|u| norm(u) == norm(want)))
            .cloned()
            .ok_or_else(|| accepted[0].0.clone()),
    )
}

/// Which mailboxes a registration with this `signInAudience` serves, in words.
pub fn audience_words(audience: Option<&str>) -> &'static str {
    match audience {
        Some("AzureADMyOrg") => {
            "only work and school mailboxes of the registration's own organization (single tenant)"
        }
        Some("AzureADMultipleOrgs") => {
            "work and school mailboxes (Microsoft 365) of any organization, not personal Outlook.com mailboxes"
        }
        Some("AzureADandPersonalMicrosoftAccount") => {
            "work and school mailboxes of any organization and personal Outlook.com (Hotmail, Live) mailboxes"
        }
        Some("PersonalMicrosoftAccount") => {
            "only personal Outlook.com (Hotmail, Live) mailboxes, not work or school mailboxes"
        }
        _ => "mailboxes not known (signInAudience not reported)",
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

/// The `register` command that adds what is missing (a re-run adopts the registration by
/// its client ID and sends only the missing parts).
pub fn repair_command(public_url: Option<&str>, app: Option<&str>) -> String {
    let mut cmd =
        "nocobase-mail-operator register --tenant-id <tenant> --client-id <client ID>".to_owned();
    if let Some(p) = public_url {
        cmd.push_str(&format!(" --public-url {}", p.trim().trim_end_matches('/')));
    }
    if let Some(a) = app.map(str::trim).filter(|a| !a.is_empty()) {
        cmd.push_str(&format!(" --nocobase-app {a}"));
    }
    cmd
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
    if let Some(Err(want)) = registered_form(nb, uris) {
        out.push((
            reason::REDIRECT_URI_MISSING,
            format!(
                "the Web redirect URI {want} is not registered (registered Web URIs: {}): add it in App registrations > your app > Authentication > Add a platform > Web > Redirect URIs, or run `{}`",
                if uris.is_empty() { "none".to_owned() } else { crate::quote::list(uris, ", ") },
                repair_command(nb.public_url.as_deref(), nb.app.as_deref())
            ),
        ));
    }
    if audience == Some(SINGLE_TENANT) {
        out.push((
            reason::SINGLE_TENANT_AUDIENCE,
            format!(
                "signInAudience is {SINGLE_TENANT} (this organization only), but the email manager's settings have no tenant field: in Authentication > Supported account types choose \"Accounts in any organizational directory and personal Microsoft accounts\" (signInAudience AzureADandPersonalMicrosoftAccount), or run `{}`",
                repair_command(nb.public_url.as_deref(), nb.app.as_deref())
            ),
        ));
    }
    if !missing.is_empty() {
        out.push((
            reason::DELEGATED_PERMISSION_MISSING,
            format!(
                "the delegated Microsoft Graph permissions {} are missing: add them in API permissions > Add a permission > Microsoft Graph > Delegated permissions, or run `{}`",
                missing.join(", "),
                repair_command(nb.public_url.as_deref(), nb.app.as_deref())
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
                "The app registration could not be read from Microsoft Graph, so the redirect URI, audience and permissions are not checked ({}). Grant the app the Application.Read.All application permission with admin consent (`{} --with-expiry-discovery` does it), or check them in the portal yourself.",
                last.expiry_note.as_deref().unwrap_or("no detail"),
                repair_command(nb.public_url.as_deref(), nb.app.as_deref())
            ),
        );
    };
    let audience = last.sign_in_audience.as_deref();
    let serves = format!(
        "signInAudience {} serves {}",
        audience.unwrap_or("not reported"),
        audience_words(audience)
    );
    let found = problems(nb, uris, audience, &last.missing_permissions);
    if let Some((first, _)) = found.first() {
        let list: Vec<&str> = found.iter().map(|(_, m)| m.as_str()).collect();
        return AppRegReport {
            status: "False",
            reason: first,
            message: format!(
                "The app registration is not ready for the email manager: {}. The registration's {serves}. Mail delivery of the credentials is not blocked by this.",
                list.join("; ")
            ),
            problems: found,
        };
    }
    let redirect = match registered_form(nb, uris) {
        Some(Ok((uri, form))) => format!("the Web redirect URI {uri} is registered ({form})"),
        _ => "the redirect URI is not checked (set spec.nocobase.publicUrl)".to_owned(),
    };
    AppRegReport {
        status: "True",
        reason: reason::READY,
        message: format!(
            "The app registration is ready for the email manager: {redirect}; {serves}; the delegated permissions are present."
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
            required_redirect_uri("https://crm.example.com/", None, None),
            "https://crm.example.com/admin/settings/mail/oauth2"
        );
        assert_eq!(
            required_redirect_uri("https://crm.example.com/nb", Some("sales"), None),
            "https://crm.example.com/nb/apps/sales/admin/settings/mail/oauth2"
        );
        assert_eq!(
            required_redirect_uri(
                "https://crm.example.com",
                None,
                Some("/v/admin/settings/mail/oauth2/")
            ),
            "https://crm.example.com/v/admin/settings/mail/oauth2"
        );
        let both = accepted_redirect_uris("https://crm.example.com", None, None);
        assert_eq!(
            both[1].0,
            "https://crm.example.com/v/admin/settings/mail/oauth2"
        );
        let back = accepted_redirect_uris(
            "https://crm.example.com",
            None,
            Some("/v/admin/settings/mail/oauth2"),
        );
        assert_eq!(
            back[1].0,
            "https://crm.example.com/admin/settings/mail/oauth2"
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
        // the /v/ form is accepted too, and named
        let v = ["https://crm.example.com/v/admin/settings/mail/oauth2".to_owned()];
        assert!(problems(&n, &v, None, &[]).is_empty());
        assert_eq!(
            registered_form(&n, &v).unwrap().unwrap().1,
            "the modern client's /v/ form"
        );
        // without publicUrl the redirect URI is not judged
        assert!(problems(&nb(None, None), &[], Some("AzureADMultipleOrgs"), &[]).is_empty());
    }
}
