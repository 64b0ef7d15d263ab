//! The app registration check for the email manager (`AppRegistrationReady`) against the
//! Microsoft emulator: a registration ready for it, and registrations that lack the Web
//! redirect URI, are single-tenant, or miss a delegated permission (derived from
//! `graph_application_email_ready.json` by changing one property each), plus a Graph that
//! refuses the read. The Graph answer goes through the operator's own client and decision.

mod common;

use common::*;
use jiff::Timestamp;
use nocobase_mail_operator::api::{MicrosoftMailIntegrationSpec, MicrosoftMailIntegrationStatus};
use nocobase_mail_operator::decide::{CredentialCheck, Decision, InjectionReport, Inputs, decide};
use nocobase_mail_operator::input::{RawCredentials, check};
use nocobase_mail_operator::microsoft::MicrosoftClient;
use serde_json::{Value, json};
use wiremock::ResponseTemplate;

const PUBLIC: &str = "https://crm.example.com";

fn spec(app: Option<&str>) -> MicrosoftMailIntegrationSpec {
    serde_json::from_value(json!({
        "tenantId": TENANT, "clientId": CLIENT, "clientSecretRef": {"name": "s"},
        "nocobase": {"url": "http://nocobase:13000", "apiKeySecretRef": {"name": "k"},
                     "publicUrl": PUBLIC, "app": app},
    }))
    .unwrap()
}

fn ready_registration() -> Value {
    serde_json::from_slice(&fixture("graph_application_email_ready.json")).unwrap()
}

/// Validates against an emulator serving `registration` (or `graph`), then decides twice
/// (the second time on the first's status, as the next reconcile would).
async fn decide_with(
    graph: ResponseTemplate,
    spec: &MicrosoftMailIntegrationSpec,
) -> (Decision, Decision) {
    let emu = Emulator::start().await;
    emu.token(json_response(200, "token_success.json")).await;
    emu.graph(graph).await;
    let spec = MicrosoftMailIntegrationSpec {
        authority_host: Some(emu.uri()),
        graph_host: Some(emu.uri()),
        ..spec.clone()
    };
    let creds = check(&RawCredentials::from_spec(&spec, SECRET.as_bytes())).unwrap();
    let verdict = MicrosoftClient::new(fast_options())
        .unwrap()
        .validate(&creds, true)
        .await;
    let cc = CredentialCheck::Ready {
        fingerprint: "fp".into(),
    };
    let inj = InjectionReport::no_targets();
    let now: Timestamp = "2027-01-01T00:00:00Z".parse().unwrap();
    let first = decide(&Inputs {
        spec: &spec,
        generation: Some(1),
        previous: &MicrosoftMailIntegrationStatus::default(),
        now,
        credentials: &cc,
        attempt: Some(&verdict),
        injection: &inj,
        nocobase: None,
        mail_settings: None,
    });
    let second = decide(&Inputs {
        spec: &spec,
        generation: Some(1),
        previous: &first.status,
        now,
        credentials: &cc,
        attempt: None,
        injection: &inj,
        nocobase: None,
        mail_settings: None,
    });
    (first, second)
}

fn condition(d: &Decision) -> (String, String, String) {
    let c = d
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == "AppRegistrationReady")
        .expect("AppRegistrationReady");
    (c.status.clone(), c.reason.clone(), c.message.clone())
}

fn warnings(d: &Decision) -> Vec<String> {
    d.events
        .iter()
        .filter(|e| e.warning)
        .map(|e| e.reason.clone())
        .collect()
}

#[tokio::test]
async fn a_registration_ready_for_the_email_manager() {
    let (d, _) = decide_with(
        ResponseTemplate::new(200).set_body_json(ready_registration()),
        &spec(None),
    )
    .await;
    let (s, r, m) = condition(&d);
    assert_eq!((s.as_str(), r.as_str()), ("True", "Ready"), "{m}");
    assert!(m.contains(
        "the Web redirect URI https://crm.example.com/admin/settings/mail/oauth2 is registered (the form NocoBase 2.2 serves)"
    ), "{m}");
    assert!(m.contains("AzureADandPersonalMicrosoftAccount"));
    assert!(
        m.contains("serves work and school mailboxes of any organization and personal Outlook.com"),
        "{m}"
    );
    assert!(warnings(&d).is_empty());
    let last = d.status.last_validation.unwrap();
    assert_eq!(
        last.sign_in_audience.as_deref(),
        Some("AzureADandPersonalMicrosoftAccount")
    );
}

#[tokio::test]
async fn a_missing_redirect_uri_names_the_exact_value_to_add() {
    let mut reg = ready_registration();
    reg["web"]["redirectUris"] = json!(["https://crm.example.com/login"]);
    let (d, again) = decide_with(ResponseTemplate::new(200).set_body_json(reg), &spec(None)).await;
    let (s, r, m) = condition(&d);
    assert_eq!((s.as_str(), r.as_str()), ("False", "RedirectUriMissing"));
    assert!(m.contains("the Web redirect URI https://crm.example.com/admin/settings/mail/oauth2 is not registered"), "{m}");
    assert!(m.contains("registered Web URIs: https://crm.example.com/login"));
    assert_eq!(warnings(&d), ["RedirectUriMissing"]);
    // an Event on transition only; injection is not blocked
    assert!(warnings(&again).is_empty());
    let ready = d
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(ready.status, "True");
    assert!(ready.message.contains("AppRegistrationReady"));

    // a sub-application needs its own path
    let (d, _) = decide_with(
        ResponseTemplate::new(200).set_body_json(ready_registration()),
        &spec(Some("sales")),
    )
    .await;
    let (_, r, m) = condition(&d);
    assert_eq!(r, "RedirectUriMissing");
    assert!(
        m.contains("https://crm.example.com/apps/sales/admin/settings/mail/oauth2"),
        "{m}"
    );
}

#[tokio::test]
async fn a_single_tenant_registration_is_warned_about() {
    let mut reg = ready_registration();
    reg["signInAudience"] = json!("AzureADMyOrg");
    let (d, _) = decide_with(ResponseTemplate::new(200).set_body_json(reg), &spec(None)).await;
    let (s, r, m) = condition(&d);
    assert_eq!((s.as_str(), r.as_str()), ("False", "SingleTenantAudience"));
    assert!(
        m.contains("AzureADMyOrg") && m.contains("Supported account types"),
        "{m}"
    );
    assert_eq!(warnings(&d), ["SingleTenantAudience"]);
}

#[tokio::test]
async fn a_missing_delegated_permission_joins_the_checks() {
    let mut reg = ready_registration();
    reg["requiredResourceAccess"][0]["resourceAccess"]
        .as_array_mut()
        .unwrap()
        .retain(|a| a["id"] != "258f6531-6087-4cc4-bb90-092c5fb3ed3f");
    let (d, _) = decide_with(ResponseTemplate::new(200).set_body_json(reg), &spec(None)).await;
    let (s, r, m) = condition(&d);
    assert_eq!(
        (s.as_str(), r.as_str()),
        ("False", "DelegatedPermissionMissing")
    );
    assert!(
        m.contains("SMTP.Send") && m.contains("Delegated permissions"),
        "{m}"
    );

    // the original fixture has all three problems: the first names the reason, all are listed
    let (d, _) = decide_with(json_response(200, "graph_application.json"), &spec(None)).await;
    let (_, r, m) = condition(&d);
    assert_eq!(r, "RedirectUriMissing");
    assert!(
        m.contains("AzureADMyOrg") && m.contains("IMAP.AccessAsUser.All, SMTP.Send"),
        "{m}"
    );
}

#[tokio::test]
async fn graph_refusing_the_read_is_unknown_with_why() {
    let (d, _) = decide_with(
        json_response(403, "graph_403_authorization_request_denied.json"),
        &spec(None),
    )
    .await;
    let (s, r, m) = condition(&d);
    assert_eq!(
        (s.as_str(), r.as_str()),
        ("Unknown", "RegistrationUnreadable")
    );
    assert!(m.contains("Application.Read.All"), "{m}");
    assert!(warnings(&d).is_empty());
}

/// The modern client's `/v/` form of the callback is accepted too, and named; a path set
/// in the spec is the one required.
#[tokio::test]
async fn either_callback_form_is_accepted_and_named() {
    let mut reg = ready_registration();
    reg["web"]["redirectUris"] = json!(["https://crm.example.com/v/admin/settings/mail/oauth2"]);
    let (d, _) = decide_with(ResponseTemplate::new(200).set_body_json(reg), &spec(None)).await;
    let (s, r, m) = condition(&d);
    assert_eq!((s.as_str(), r.as_str()), ("True", "Ready"), "{m}");
    assert!(
        m.contains("https://crm.example.com/v/admin/settings/mail/oauth2 is registered (the modern client's /v/ form)"),
        "{m}"
    );

    let mut custom = spec(None);
    custom.nocobase.as_mut().unwrap().oauth_callback_path = Some("/mail/callback".into());
    let (d, _) = decide_with(
        ResponseTemplate::new(200).set_body_json(ready_registration()),
        &custom,
    )
    .await;
    let (_, r, m) = condition(&d);
    assert_eq!(r, "RedirectUriMissing");
    assert!(
        m.contains("https://crm.example.com/mail/callback is not registered"),
        "{m}"
    );
}

/// Work and school only: a multi-organization registration is ready, and says that
/// Outlook.com mailboxes are not served.
#[tokio::test]
async fn the_audience_is_said_in_words() {
    let mut reg = ready_registration();
    reg["signInAudience"] = json!("AzureADMultipleOrgs");
    let (d, _) = decide_with(ResponseTemplate::new(200).set_body_json(reg), &spec(None)).await;
    let (s, _, m) = condition(&d);
    assert_eq!(s, "True", "{m}");
    assert!(
        m.contains("work and school mailboxes (Microsoft 365) of any organization, not personal Outlook.com mailboxes"),
        "{m}"
    );
    let mut reg = ready_registration();
    reg["signInAudience"] = json!("AzureADMyOrg");
    let (d, _) = decide_with(ResponseTemplate::new(200).set_body_json(reg), &spec(None)).await;
    let (_, _, m) = condition(&d);
    assert!(m.contains("single tenant"), "{m}");
}
