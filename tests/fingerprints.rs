//! The fingerprint keys and the re-keying of a status an older version keyed by the UID
//! (issue 19 item 5): pure, no I/O. The binary-level test is in tests/security_real.rs.

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use nocobase_mail_operator::api::{MicrosoftMailIntegration, MicrosoftMailIntegrationStatus};
use nocobase_mail_operator::credentials;
use nocobase_mail_operator::decide::rekey::{Rekeyed, pairs, rekey};
use nocobase_mail_operator::fingerprint::{OperatorKey, fingerprint, value_fingerprint};
use nocobase_mail_operator::input::{self, RawCredentials};
use serde_json::json;

const UID: &str = "6f1c1c43-0d5e-4b8e-9a53-0c8f4f1d9a10";
const SECRET: &str = "Hv3Nq7Zk2Wx9Lp4Tb8Rm1Cd6Jf5Gy0Ss2Qe7UaX";
const PREVIOUS: &str = "Qx8Lm2Np5Rt7Vb1Zc4Hd9Jk3Wf6Gs0Ty2Ue8OiP";

fn mmi(status: serde_json::Value) -> MicrosoftMailIntegration {
    serde_json::from_value(json!({
        "apiVersion": "nocobase-mail-operator.dev/v1alpha1", "kind": "MicrosoftMailIntegration",
        "metadata": {"name": "outlook", "namespace": "team", "uid": UID},
        "spec": {"tenantId": "8f2a5b9e-3c1d-4e7f-a6b2-9d0c1e2f3a4b",
            "clientId": "1b6f2f4c-5a3e-4c8d-9e7f-0a1b2c3d4e5f",
            "clientSecretRef": {"name": "entra"}},
        "status": status}))
    .unwrap()
}

fn secret(values: &[(&str, &str)]) -> Secret {
    Secret {
        data: Some(
            values
                .iter()
                .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                .collect(),
        ),
        ..Default::default()
    }
}

fn key() -> OperatorKey {
    OperatorKey::from_bytes(&[9; 32]).unwrap()
}

#[test]
fn an_operator_key_is_exactly_32_bytes_and_never_shown() {
    for len in [0, 16, 31, 33, 64] {
        let err = OperatorKey::from_bytes(&vec![1; len]).unwrap_err();
        assert!(err.contains(&format!("it is {len}")), "{err}");
    }
    let k = key();
    assert_eq!(k.bytes(), &[9; 32]);
    assert_eq!(format!("{k:?}"), "OperatorKey(hidden)");
    assert_eq!(
        format!("{:?}", k.integration(UID)),
        "IntegrationKey(hidden)"
    );
    assert_ne!(OperatorKey::random().bytes(), OperatorKey::random().bytes());
}

#[test]
fn integration_keys_differ_per_integration_and_per_operator_key() {
    let k = key();
    assert_eq!(k.integration(UID), k.integration(UID));
    assert_ne!(k.integration(UID), k.integration("another-uid"));
    let other = OperatorKey::from_bytes(&[8; 32]).unwrap();
    assert_ne!(k.integration(UID), other.integration(UID));
    // not the UID itself, nor the operator key
    assert_ne!(k.integration(UID).as_bytes(), UID.as_bytes());
    assert_ne!(k.integration(UID).as_bytes(), k.bytes());
}

#[test]
fn the_status_fingerprint_is_not_the_uid_keyed_one() {
    let m = mmi(json!({}));
    let s = secret(&[("client-secret", SECRET)]);
    let (check, creds) = credentials::check(&m, Some(&s), &key().integration(UID));
    let creds = creds.unwrap();
    let by_uid = fingerprint(
        UID.as_bytes(),
        &creds,
        m.spec.secret_expiry.discover_from_graph,
    );
    assert_ne!(check.fingerprint(), Some(by_uid.as_str()));
    let by_key = fingerprint(
        key().integration(UID).as_bytes(),
        &creds,
        m.spec.secret_expiry.discover_from_graph,
    );
    assert_eq!(check.fingerprint(), Some(by_key.as_str()));
}

#[test]
fn pairs_cover_the_credentials_and_both_values_of_the_secret() {
    let m = mmi(json!({}));
    let s = secret(&[
        ("client-secret", SECRET),
        ("client-secret.previous", PREVIOUS),
    ]);
    let k = key().integration(UID);
    let raw = RawCredentials::from_spec(&m.spec, SECRET.as_bytes());
    let creds = input::check(&raw).unwrap();
    let p = pairs(&m, Some(&s), Some(&creds), &k);
    let want = |l: String, c: String| Rekeyed {
        legacy: l,
        current: c,
    };
    assert_eq!(
        p,
        [
            want(
                fingerprint(
                    UID.as_bytes(),
                    &creds,
                    m.spec.secret_expiry.discover_from_graph
                ),
                fingerprint(
                    k.as_bytes(),
                    &creds,
                    m.spec.secret_expiry.discover_from_graph
                )
            ),
            want(
                value_fingerprint(UID.as_bytes(), SECRET.as_bytes()),
                value_fingerprint(k.as_bytes(), SECRET.as_bytes())
            ),
            want(
                value_fingerprint(UID.as_bytes(), PREVIOUS.as_bytes()),
                value_fingerprint(k.as_bytes(), PREVIOUS.as_bytes())
            ),
        ]
    );
    // no Secret, no credentials: nothing to recompute
    assert!(pairs(&m, None, None, &k).is_empty());
}

fn status(cred: &str, value: &str, other: &str) -> MicrosoftMailIntegrationStatus {
    serde_json::from_value(json!({
        "lastValidation": {"time": "2026-12-01T00:00:00Z", "outcome": "Valid", "reason": "Valid",
            "message": "ok", "credentialsFingerprint": cred},
        "lastUnavailable": {"time": "t", "reason": "Timeout", "message": "m", "failures": 1,
            "retryAt": "t", "credentialsFingerprint": cred},
        "injected": [{"deployment": "a", "containers": ["c"], "fingerprint": cred, "rollout": "OnChange"},
            {"deployment": "b", "containers": ["c"], "fingerprint": other, "rollout": "OnChange"}],
        "mailSettings": {"collection": "mailSettings", "record": "1", "credentialsFingerprint": cred},
        "rotation": {"phase": "Delivering", "oldSecretFingerprint": other, "newSecretFingerprint": value,
            "currentSecretFingerprint": value}}))
    .unwrap()
}

#[test]
fn rekey_rewrites_every_legacy_fingerprint_and_nothing_else() {
    let pairs = [
        Rekeyed {
            legacy: "cred-uid".into(),
            current: "cred-key".into(),
        },
        Rekeyed {
            legacy: "value-uid".into(),
            current: "value-key".into(),
        },
    ];
    let before = status("cred-uid", "value-uid", "unknown");
    let after = rekey(&before, &pairs).expect("legacy fingerprints found");
    assert_eq!(after, status("cred-key", "value-key", "unknown"));
    // already re-keyed: nothing to do, the status is used as it is
    assert_eq!(rekey(&after, &pairs), None);
    assert_eq!(
        rekey(&MicrosoftMailIntegrationStatus::default(), &pairs),
        None
    );
    // a pair whose two keys agree changes nothing
    let same = [Rekeyed {
        legacy: "unknown".into(),
        current: "unknown".into(),
    }];
    assert_eq!(rekey(&before, &same), None);
}
