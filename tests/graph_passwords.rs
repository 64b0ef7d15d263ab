//! The Graph write client (addPassword, removePassword, owners) against the stateful Entra
//! emulator: Microsoft's shapes, ownership, the policy refusal, propagation, and no secret
//! in any error or Debug output.

mod common;

use common::entra::*;
use common::*;
use jiff::{SignedDuration, Timestamp};
use nocobase_mail_operator::api::Cloud;
use nocobase_mail_operator::input::{Credentials, RawCredentials, check};
use nocobase_mail_operator::microsoft::passwords::{AppGraph, can_rotate};
use nocobase_mail_operator::microsoft::{MicrosoftClient, Outcome, reason};
use secrecy::ExposeSecret;

const OLD: &str = "Pz7Kq2Xv9Lm4Tb8Wn1Rc6Hd3Jf5Gy0Ss2Qe7UaB";

fn creds(app: &EntraApp, secret: &str) -> Credentials {
    let uri = app.uri();
    check(&RawCredentials {
        tenant_id: TENANT,
        client_id: CLIENT,
        client_secret: secret.as_bytes(),
        cloud: Cloud::AzurePublic,
        authority_host: Some(&uri),
        graph_host: Some(&uri),
    })
    .unwrap()
}

fn client() -> MicrosoftClient {
    MicrosoftClient::new(fast_options()).unwrap()
}

#[test]
fn add_password_fixture_has_microsofts_shape() {
    let v: serde_json::Value = serde_json::from_slice(&fixture("graph_add_password.json")).unwrap();
    for k in [
        "keyId",
        "hint",
        "startDateTime",
        "endDateTime",
        "secretText",
        "displayName",
    ] {
        assert!(v.get(k).is_some(), "{k}");
    }
    assert_eq!(
        v["hint"].as_str().unwrap(),
        &v["secretText"].as_str().unwrap()[..3]
    );
    let policy: serde_json::Value =
        serde_json::from_slice(&fixture("graph_400_credential_lifetime_policy.json")).unwrap();
    assert_eq!(
        policy["error"]["code"],
        "CredentialInvalidLifetimeAsPerAppPolicy"
    );
}

#[tokio::test]
async fn add_then_remove_with_propagation_delay() {
    let app = EntraApp::start(OLD, "2027-01-01T00:00:00Z").await;
    let ms = client();
    let g = AppGraph::connect(&ms, &creds(&app, OLD)).await.unwrap();
    let end = Timestamp::now() + SignedDuration::from_hours(4320);
    let new = g
        .add_password("nocobase-mail-operator rotation att-1", end)
        .await
        .unwrap();
    assert_eq!(new.hint, &new.secret.expose_secret()[..3]);
    assert!(!format!("{new:?}").contains(new.secret.expose_secret()));
    let listed = g.passwords().await.unwrap();
    assert_eq!(listed.len(), 2);
    assert!(
        listed
            .iter()
            .any(|c| c.key_id.as_deref() == Some(new.key_id.as_str())
                && c.display_name.as_deref() == Some("nocobase-mail-operator rotation att-1"))
    );

    // propagation: refused with AADSTS7000215 twice, then accepted
    let fresh = creds(&app, new.secret.expose_secret());
    for _ in 0..2 {
        let v = ms.validate(&fresh, false).await;
        assert_eq!(
            (v.outcome, v.aadsts_code),
            (Outcome::Rejected, Some(7000215))
        );
        assert_eq!(v.reason, Some(reason::INVALID_SECRET));
    }
    assert_eq!(ms.validate(&fresh, false).await.outcome, Outcome::Valid);

    let old_key = listed
        .iter()
        .find(|c| c.hint.as_deref() == Some("Pz7"))
        .unwrap();
    g.remove_password(old_key.key_id.as_deref().unwrap())
        .await
        .unwrap();
    assert!(!app.has_secret(OLD));
    assert_eq!(
        ms.validate(&creds(&app, OLD), false).await.outcome,
        Outcome::Rejected
    );
    // removing what is already gone is not an error
    g.remove_password(old_key.key_id.as_deref().unwrap())
        .await
        .unwrap();
}

#[tokio::test]
async fn not_owner_is_refused_with_403() {
    let app = EntraApp::start(OLD, "2027-01-01T00:00:00Z").await;
    app.state().owner = false;
    let ms = client();
    let g = AppGraph::connect(&ms, &creds(&app, OLD)).await.unwrap();
    let e = g.add_password("x", Timestamp::now()).await.unwrap_err();
    assert_eq!(e.reason, "NotOwner");
    assert!(e.message.contains("Application.ReadWrite.OwnedBy"));
    assert!(!e.transient);
    assert_eq!(app.state().added, 0);
    let e = g.remove_password("whatever").await.unwrap_err();
    assert_eq!(e.reason, "NotOwner");
}

#[tokio::test]
async fn policy_refuses_a_long_lifetime_with_400() {
    let app = EntraApp::start(OLD, "2027-01-01T00:00:00Z").await;
    app.state().max_lifetime = Some(SignedDuration::from_hours(24 * 90));
    let ms = client();
    let g = AppGraph::connect(&ms, &creds(&app, OLD)).await.unwrap();
    let e = g
        .add_password("x", Timestamp::now() + SignedDuration::from_hours(4320))
        .await
        .unwrap_err();
    assert_eq!(e.reason, "PolicyRefused");
    assert!(
        e.message
            .contains("max value allowed as per assigned policy")
    );
    assert!(!e.transient);
    g.add_password("x", Timestamp::now() + SignedDuration::from_hours(24 * 60))
        .await
        .unwrap();
}

#[tokio::test]
async fn outage_is_transient() {
    let app = EntraApp::start(OLD, "2027-01-01T00:00:00Z").await;
    app.state().add_fails_with = Some(503);
    let ms = client();
    let g = AppGraph::connect(&ms, &creds(&app, OLD)).await.unwrap();
    let e = g.add_password("x", Timestamp::now()).await.unwrap_err();
    assert_eq!(e.reason, "GraphUnavailable");
    assert!(e.transient);
}

#[tokio::test]
async fn can_rotate_tells_owner_and_permission_without_creating() {
    let app = EntraApp::start(OLD, "2027-01-01T00:00:00Z").await;
    let ms = client();
    let c = creds(&app, OLD);
    let r = can_rotate(&ms, &c).await.unwrap();
    assert!(r.allowed, "{r:?}");
    assert_eq!(r.owner, Some(true));
    app.state().owner = false;
    let r = can_rotate(&ms, &c).await.unwrap();
    assert!(!r.allowed);
    assert!(r.message.contains("not an owner"));
    app.state().roles = vec!["Application.Read.All".into()];
    let r = can_rotate(&ms, &c).await.unwrap();
    assert!(!r.allowed);
    assert!(r.message.contains("no Application.ReadWrite.OwnedBy"));
    app.state().roles = vec!["Application.ReadWrite.All".into()];
    assert!(can_rotate(&ms, &c).await.unwrap().allowed);
    assert_eq!(app.state().added, 0, "nothing was created");
    // a rejected secret gets no token, and says why
    let e = can_rotate(&ms, &creds(&app, "Nq4Wz8Xk3Rm6Tp1Ly4Hd7Jc9Fg0Ss5Ea2UiQBv5"))
        .await
        .unwrap_err();
    assert_eq!(e.reason, reason::INVALID_SECRET);
    assert_no_secret(&format!("{e:?}"), &[OLD]);
}
