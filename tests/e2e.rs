//! End-to-end against a real cluster. Runs only when `KUBECONFIG` is set and
//! `NOCOBASE_MAIL_E2E=1`; otherwise it says so and skips.
//!
//! It installs the CRD from `crds/`, creates a namespace with a Secret, a NocoBase-like
//! Deployment and an integration whose authority host is a local Microsoft emulator, runs
//! the controller in-process against the cluster, and checks status, injection, a
//! rejected rotation, a valid rotation and cleanup on deletion.
//!
//! `bash scripts/test.sh` runs it against the control plane of `scripts/real-kube.sh`
//! (kube-apiserver 1.20). By hand:
//!
//! ```sh
//! bash scripts/real-kube.sh start && source "$(bash scripts/real-kube.sh env)"
//! NOCOBASE_MAIL_E2E=1 cargo test --test e2e -- --nocapture
//! # or any cluster you may create namespaces and CRDs in:
//! NOCOBASE_MAIL_E2E=1 KUBECONFIG=~/.kube/config cargo test --test e2e -- --nocapture
//! ```

mod common;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use common::*;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use nocobase_mail_operator::api::MicrosoftMailIntegration;
use nocobase_mail_operator::inject::FINGERPRINT_ANNOTATION;
use serde_json::json;

const GOOD: &str = "Gq7Zx2Lp9Vt4Rk8Wm1Nc6Hb3Jd5Fy0Ts2Qe7UaK";
const GOOD2: &str = "Rw3Yb8Kd1Mx6Pq9Tz4Lc7Hf2Jn5Vg0Sa3Ue8XoD";
const BAD: &str = "Bv5Nq2Wz8Xk3Rm6Tp1Ly4Hd7Jc9Fg0Ss5Ea2UiQ";

fn enabled() -> bool {
    if std::env::var_os("KUBECONFIG").is_none()
        || std::env::var("NOCOBASE_MAIL_E2E").as_deref() != Ok("1")
    {
        assert!(
            !common::real_kube::required(),
            "KUBE_REAL_REQUIRED=1 or CI, but no cluster: set KUBECONFIG and NOCOBASE_MAIL_E2E=1 \
             (`bash scripts/test.sh` does, with the control plane of scripts/real-kube.sh)"
        );
        eprintln!(
            "SKIPPED: end-to-end suite needs a cluster; set KUBECONFIG and NOCOBASE_MAIL_E2E=1 to run it"
        );
        return false;
    }
    true
}

async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..120 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn end_to_end_on_a_real_cluster() {
    if !enabled() {
        return;
    }
    let client = kube::Client::try_default()
        .await
        .expect("a cluster from KUBECONFIG");
    let pp = PatchParams::apply("nocobase-mail-operator-e2e").force();

    // server-side apply, or a plain create where the server predates CEL rules (1.20)
    common::real_kube::install_crd(&client).await;

    let ns = format!("nocobase-mail-e2e-{}", std::process::id());
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .patch(
            &ns,
            &pp,
            &Patch::Apply(
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
            ),
        )
        .await
        .unwrap();

    let emu = Emulator::start().await;
    emu.token_for_secret(GOOD, json_response(200, "token_success.json"))
        .await;
    emu.token_for_secret(GOOD2, json_response(200, "token_success.json"))
        .await;
    emu.token_for_secret(BAD, json_response(401, "aadsts7000215.json"))
        .await;
    emu.graph(json_response(
        403,
        "graph_403_authorization_request_denied.json",
    ))
    .await;

    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let put_secret = |value: &'static str| {
        let secrets = secrets.clone();
        let pp = pp.clone();
        async move {
            secrets
                .patch("entra", &pp, &Patch::Apply(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "entra"}, "stringData": {"client-secret": value}})))
                .await
                .unwrap();
        }
    };
    put_secret(GOOD).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let original = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "nocobase"},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "nocobase"}},
            "template": {"metadata": {"labels": {"app": "nocobase"}},
                "spec": {"containers": [{"name": "nocobase", "image": "nocobase/nocobase:2.2.15", "env": [{"name": "APP_KEY", "value": "k"}]}]}}}});
    deployments
        .patch(
            "nocobase",
            &PatchParams::apply("e2e-user"),
            &Patch::Apply(&original),
        )
        .await
        .unwrap();

    let mmis: Api<MicrosoftMailIntegration> = Api::namespaced(client.clone(), &ns);
    let mmi = json!({"apiVersion": "nocobase-mail-operator.dev/v1alpha1", "kind": "MicrosoftMailIntegration", "metadata": {"name": "outlook"},
        "spec": {"tenantId": TENANT, "clientId": CLIENT, "clientSecretRef": {"name": "entra"}, "authorityHost": emu.uri(), "graphHost": emu.uri(),
                 "targets": [{"deploymentName": "nocobase"}]}});
    mmis.patch("outlook", &pp, &Patch::Apply(&mmi))
        .await
        .unwrap();

    let metrics = Arc::new(nocobase_mail_operator::telemetry::Metrics::default());
    let ctx = nocobase_mail_operator::controller::context(
        client.clone(),
        metrics,
        None,
        "e2e".into(),
        allow_exactly(&emu.uri(), &[]),
    )
    .unwrap();
    let controller = tokio::spawn(nocobase_mail_operator::controller::run_controller(
        client.clone(),
        Some(ns.clone()),
        ctx,
        nocobase_mail_operator::controller::CacheSync::new(1, Arc::new(AtomicBool::new(false))),
    ));

    let condition = |t: &'static str| {
        let mmis = mmis.clone();
        async move {
            mmis.get("outlook")
                .await
                .ok()
                .and_then(|m| m.status)
                .and_then(|s| s.conditions.into_iter().find(|c| c.type_ == t))
                .map(|c| (c.status, c.reason))
        }
    };
    let annotation = || {
        let deployments = deployments.clone();
        async move {
            deployments.get("nocobase").await.ok().and_then(|d| {
                d.spec?
                    .template
                    .metadata?
                    .annotations?
                    .get(FINGERPRINT_ANNOTATION)
                    .cloned()
            })
        }
    };
    eventually("Ready", || async {
        condition("Ready").await == Some(("True".into(), "Ready".into()))
    })
    .await;
    eventually("injection", || async { annotation().await.is_some() }).await;
    let first = annotation().await.unwrap();

    put_secret(BAD).await;
    eventually("the rejection", || async {
        condition("CredentialsValid").await.map(|c| c.1) == Some("InvalidSecret".into())
    })
    .await;
    assert_eq!(
        annotation().await.unwrap(),
        first,
        "a rejected secret rolls nothing"
    );

    put_secret(GOOD2).await;
    eventually("the valid rotation", || async {
        annotation().await.is_some_and(|a| a != first)
    })
    .await;

    mmis.delete("outlook", &DeleteParams::default())
        .await
        .unwrap();
    eventually("cleanup", || async {
        mmis.get_opt("outlook").await.unwrap().is_none()
    })
    .await;
    let after = deployments.get("nocobase").await.unwrap();
    let env: Vec<String> = after.spec.unwrap().template.spec.unwrap().containers[0]
        .env
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(env, ["APP_KEY"], "the Deployment is given back as it was");

    controller.abort();
    namespaces
        .delete(&ns, &DeleteParams::default())
        .await
        .unwrap();
}
