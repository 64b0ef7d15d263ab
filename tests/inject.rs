//! The pure injection plan: table tests, and the property that applying the plan and
//! planning again changes nothing; plus `render` through the binary.

use k8s_openapi::api::apps::v1::Deployment;
use nocobase_mail_operator::api::{Rollout, Target};
use nocobase_mail_operator::inject::{
    FIELD_MANAGER, FINGERPRINT_ANNOTATION, apply_locally, orphaned_containers, plan, selects,
};
use proptest::prelude::*;
use serde_json::json;

fn deployment(containers: &[(&str, &[(&str, &str)])]) -> Deployment {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "nocobase", "namespace": "ns", "labels": {"app": "nocobase", "tier": "web"},
                     "annotations": {"user": "kept"}},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "nocobase"}},
            "template": {"metadata": {"labels": {"app": "nocobase"}, "annotations": {"user/pod": "kept"}},
                "spec": {"containers": containers.iter().map(|(n, env)| json!({
                    "name": n, "image": format!("{n}:1"),
                    "env": env.iter().map(|(k, v)| json!({"name": k, "value": v})).collect::<Vec<_>>()
                })).collect::<Vec<_>>()}}}
    }))
    .unwrap()
}

/// `metadata.managedFields` shaped as a real API server writes it (FieldsV1), each manager
/// owning the listed containers.
fn owned_by(d: &mut Deployment, owners: &[(&str, &str, &[&str])]) {
    let entries: Vec<serde_json::Value> = owners
        .iter()
        .map(|(manager, operation, containers)| {
            let items: serde_json::Map<String, serde_json::Value> = containers
                .iter()
                .map(|c| {
                    (
                        format!("k:{{\"name\":\"{c}\"}}"),
                        json!({".": {}, "f:name": {}}),
                    )
                })
                .collect();
            json!({"manager": manager, "operation": operation, "apiVersion": "apps/v1",
                   "time": "2026-11-25T10:00:00Z", "fieldsType": "FieldsV1",
                   "fieldsV1": {"f:spec": {"f:template": {"f:spec": {"f:containers": items}}}}})
        })
        .collect();
    d.metadata.managed_fields = Some(serde_json::from_value(json!(entries)).unwrap());
}

#[test]
fn containers_only_the_operator_owns_are_left_out_and_given_back() {
    let installed = &[("app", &[("APP_KEY", "x")][..]), ("sidecar", &[][..])];
    let t = target(json!({"deploymentName": "nocobase"}));
    // without managedFields nothing is known: every container is injected
    let mut d = deployment(installed);
    assert!(orphaned_containers(&d).is_empty());
    // Flux still owns both
    owned_by(
        &mut d,
        &[
            ("flux", "Apply", &["app", "sidecar"]),
            (FIELD_MANAGER, "Apply", &["app", "sidecar"]),
        ],
    );
    assert!(orphaned_containers(&d).is_empty());
    assert_eq!(
        plan(&d, &t, "m-microsoft-credentials", "f")
            .unwrap()
            .containers,
        ["app", "sidecar"]
    );
    // Flux dropped the sidecar: only the operator holds it
    owned_by(
        &mut d,
        &[
            ("flux", "Apply", &["app"]),
            (FIELD_MANAGER, "Apply", &["app", "sidecar"]),
        ],
    );
    assert_eq!(orphaned_containers(&d), ["sidecar"]);
    let p = plan(&d, &t, "m-microsoft-credentials", "f").unwrap();
    assert_eq!(p.containers, ["app"]);
    assert!(!p.up_to_date, "the next apply gives the sidecar back");
    let applied = &p.patch["spec"]["template"]["spec"]["containers"];
    assert_eq!(applied.as_array().unwrap().len(), 1);
    // a container nobody but its creator owns (kubectl) is not the operator's to drop
    owned_by(
        &mut d,
        &[
            ("kubectl-create", "Update", &["app"]),
            (FIELD_MANAGER, "Apply", &["app"]),
        ],
    );
    assert!(orphaned_containers(&d).is_empty());
}

fn target(v: serde_json::Value) -> Target {
    serde_json::from_value(v).unwrap()
}

#[test]
fn injects_into_all_containers_by_default_and_keeps_everything_else() {
    let d = deployment(&[("app", &[("APP_KEY", "x")]), ("sidecar", &[])]);
    let t = target(json!({"deploymentName": "nocobase"}));
    let p = plan(&d, &t, "m-microsoft-credentials", "fp1").unwrap();
    assert_eq!(p.containers, ["app", "sidecar"]);
    assert!(!p.up_to_date);
    let after = apply_locally(&d, &p, &t, "m-microsoft-credentials", "fp1");
    let v = serde_json::to_value(&after).unwrap();
    let c0 = &v["spec"]["template"]["spec"]["containers"][0];
    let names: Vec<&str> = c0["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "APP_KEY",
            "MICROSOFT_CLIENT_ID",
            "MICROSOFT_CLIENT_SECRET",
            "MICROSOFT_TENANT_ID"
        ]
    );
    assert_eq!(
        c0["env"][2]["valueFrom"]["secretKeyRef"],
        json!({"name": "m-microsoft-credentials", "key": "client-secret"})
    );
    assert!(
        c0["env"][2].get("value").is_none(),
        "the secret is never a plain value"
    );
    assert_eq!(
        v["spec"]["template"]["metadata"]["annotations"][FINGERPRINT_ANNOTATION],
        "fp1"
    );
    assert_eq!(
        v["spec"]["template"]["metadata"]["annotations"]["user/pod"],
        "kept"
    );
    assert_eq!(
        (v["spec"]["replicas"].as_i64(), c0["image"].as_str()),
        (Some(3), Some("app:1"))
    );
    // the apply patch names only what the operator owns
    let patch = p.patch.to_string();
    assert!(
        !patch.contains("image") && !patch.contains("replicas") && !patch.contains("APP_KEY"),
        "{patch}"
    );
}

#[test]
fn named_containers_missing_and_conflicts_are_reported() {
    let d = deployment(&[("app", &[("MICROSOFT_CLIENT_SECRET", "pasted-by-hand")])]);
    let e = plan(
        &d,
        &target(json!({"deploymentName": "nocobase", "containers": ["web"]})),
        "s",
        "f",
    )
    .unwrap_err();
    assert_eq!(e.reason, "ContainerNotFound");
    assert!(e.message.contains("web") && e.message.contains("app"));
    let e = plan(&d, &target(json!({"deploymentName": "nocobase"})), "s", "f").unwrap_err();
    assert_eq!(e.reason, "EnvConflict");
    assert!(
        !e.message.contains("pasted-by-hand"),
        "values are never repeated"
    );
}

#[test]
fn manual_rollout_sets_no_annotation_and_custom_names_are_used() {
    let d = deployment(&[("app", &[])]);
    let t = target(json!({"deploymentName": "nocobase", "rollout": "Manual",
        "env": {"clientId": "MS_ID", "clientSecret": "MS_SECRET", "tenantId": "MS_TENANT"}}));
    assert_eq!(t.rollout, Rollout::Manual);
    let p = plan(&d, &t, "s", "f").unwrap();
    let after = serde_json::to_value(apply_locally(&d, &p, &t, "s", "f")).unwrap();
    assert!(
        after["spec"]["template"]["metadata"]["annotations"]
            .get(FINGERPRINT_ANNOTATION)
            .is_none()
    );
    assert_eq!(
        after["spec"]["template"]["spec"]["containers"][0]["env"][1]["name"],
        "MS_SECRET"
    );
}

#[test]
fn a_new_fingerprint_changes_only_the_annotation() {
    let d = deployment(&[("app", &[])]);
    let t = target(json!({"deploymentName": "nocobase"}));
    let p1 = plan(&d, &t, "s", "fp1").unwrap();
    let d1 = apply_locally(&d, &p1, &t, "s", "fp1");
    let p2 = plan(&d1, &t, "s", "fp2").unwrap();
    assert!(!p2.up_to_date, "a rotation rolls the pods");
    let d2 = apply_locally(&d1, &p2, &t, "s", "fp2");
    let (a, b) = (
        serde_json::to_value(&d1).unwrap(),
        serde_json::to_value(&d2).unwrap(),
    );
    assert_eq!(a["spec"]["template"]["spec"], b["spec"]["template"]["spec"]);
    assert_ne!(
        a["spec"]["template"]["metadata"],
        b["spec"]["template"]["metadata"]
    );
}

#[test]
fn selectors() {
    let d = deployment(&[("app", &[])]);
    assert!(selects(
        &target(json!({"deploymentSelector": {"matchLabels": {"app": "nocobase"}}})),
        &d
    ));
    assert!(!selects(
        &target(json!({"deploymentSelector": {"matchLabels": {"app": "other"}}})),
        &d
    ));
    assert!(selects(
        &target(
            json!({"deploymentSelector": {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["web", "api"]}]}})
        ),
        &d
    ));
    assert!(!selects(
        &target(
            json!({"deploymentSelector": {"matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]}})
        ),
        &d
    ));
    assert!(!selects(&target(json!({"deploymentName": "other"})), &d));
}

proptest! {
    /// Applying the plan and planning again changes nothing, whatever the Deployment holds.
    #[test]
    fn plan_is_idempotent(
        containers in proptest::collection::btree_set("[a-z]{1,6}", 1..4),
        other_env in proptest::collection::btree_set("[A-Z]{1,6}", 0..4),
        pick_first in any::<bool>(),
        manual in any::<bool>(),
        fp in "[0-9a-f]{8}",
    ) {
        let env: Vec<(&str, &str)> = other_env.iter().map(|e| (e.as_str(), "v")).collect();
        let cs: Vec<(&str, &[(&str, &str)])> = containers.iter().map(|c| (c.as_str(), env.as_slice())).collect();
        let d = deployment(&cs);
        let mut t = json!({"deploymentName": "nocobase", "rollout": if manual { "Manual" } else { "OnChange" }});
        if pick_first {
            t["containers"] = json!([containers.iter().next().unwrap()]);
        }
        let t = target(t);
        let p = plan(&d, &t, "s", &fp).unwrap();
        let after = apply_locally(&d, &p, &t, "s", &fp);
        let again = plan(&after, &t, "s", &fp).unwrap();
        prop_assert!(again.up_to_date);
        prop_assert_eq!(apply_locally(&after, &again, &t, "s", &fp), after);
    }
}

#[test]
fn render_through_the_binary() {
    let bin = env!("CARGO_BIN_EXE_nocobase-mail-operator");
    let dir = tempfile::tempdir().unwrap();
    // a key of the user's, so that equal files render equal output
    let key_file = dir.path().join("fingerprint.key");
    std::fs::write(&key_file, [42u8; 32]).unwrap();
    let render = |file: &std::path::Path| {
        std::process::Command::new(bin)
            .args(["render", "--fingerprint-key-file"])
            .arg(&key_file)
            .arg("-f")
            .arg(file)
            .output()
            .unwrap()
    };
    let out = render("examples/integration.yaml".as_ref());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout.clone()).unwrap();
    assert!(
        !text.contains("REPLACE~WithTheSecretValue"),
        "the secret value is redacted"
    );
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&text).unwrap();
    let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["Secret", "Deployment"]);
    assert_eq!(docs[0]["metadata"]["name"], "outlook-microsoft-credentials");
    // the planned write into the email manager's settings, as a hint, secret redacted
    assert!(
        text.contains("# NocoBase email manager settings (hint only; checked against NocoBase at sync): collection mailSettings, the record matching provider=outlook"),
        "{text}"
    );
    assert!(text.contains("#   clientSecret = <redacted; starts with REP>"));
    assert!(text.contains(
        "# app registration: needs the Web redirect URI https://crm.example.com/admin/settings/mail/oauth2"
    ));

    // rendering the rendered Deployment again changes nothing
    let example = std::fs::read_to_string("examples/integration.yaml").unwrap();
    let head: String = example
        .split("\n---\n")
        .filter(|d| !d.contains("kind: Deployment"))
        .collect::<Vec<_>>()
        .join("\n---\n");
    let injected = format!(
        "{head}\n---\n{}",
        serde_saphyr::to_string(&docs[1]).unwrap()
    );
    std::fs::write(dir.path().join("injected.yaml"), injected).unwrap();
    let out2 = render(&dir.path().join("injected.yaml"));
    assert!(out2.status.success());
    let docs2: Vec<serde_json::Value> =
        serde_saphyr::from_multiple(&String::from_utf8(out2.stdout).unwrap()).unwrap();
    assert_eq!(docs2[1], docs[1]);

    // a missing target is reported with a non-zero exit
    let missing = example.replace("deploymentName: nocobase", "deploymentName: absent");
    std::fs::write(dir.path().join("missing.yaml"), missing).unwrap();
    let out3 = render(&dir.path().join("missing.yaml"));
    assert_eq!(out3.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out3.stderr).contains("TargetNotFound"));

    // without a key, a random one each run: nothing in the output can be recomputed from
    // the files' readable parts
    let annotation = |out: &std::process::Output| {
        let docs: Vec<serde_json::Value> =
            serde_saphyr::from_multiple(&String::from_utf8_lossy(&out.stdout)).unwrap();
        docs[1]["spec"]["template"]["metadata"]["annotations"]
            ["nocobase-mail-operator.dev/config-fingerprint"]
            .clone()
    };
    let unkeyed = || {
        std::process::Command::new(bin)
            .args(["render", "-f", "examples/integration.yaml"])
            .output()
            .unwrap()
    };
    let (a, b) = (annotation(&unkeyed()), annotation(&unkeyed()));
    assert!(a.is_string() && a != b, "{a} {b}");
    assert_ne!(a, annotation(&out));
    // a key file that is not 32 bytes is refused
    std::fs::write(&key_file, "short\n").unwrap();
    let bad = render("examples/integration.yaml".as_ref());
    assert_eq!(bad.status.code(), Some(2));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("must be 32 bytes, it is 6"), "{err}");
}
