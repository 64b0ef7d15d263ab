//! The finalizer against a stale copy of an integration, as the controller's cache holds
//! one for a moment: a reconcile triggered by a Secret or Deployment event (at start, by
//! the initial lists) can run on the cached object before the watch has brought the echo
//! of the finalizer the previous reconcile added, or after the object is already gone.
//! Seen on kube-apiserver 1.20 as `failed to add finalizer: ... 422 Invalid` (kube-runtime's
//! JSON patch tests `/metadata/finalizers` against the stale copy) and `failed to remove
//! finalizer: ... NotFound`, each logged as a failed reconcile (WARN). Neither is a failure:
//! the first is retried once the watch catches up, the second means the deletion is done.

mod common;

use std::sync::Arc;

use common::harness::{self, MMI_AV};
use common::*;
use nocobase_mail_operator::api::MicrosoftMailIntegration;
use nocobase_mail_operator::controller::reconcile;
use serde_json::json;

const NS: &str = "nocobase";

async fn setup() -> (
    common::fake_api::FakeApi,
    Arc<nocobase_mail_operator::controller::Context>,
) {
    harness::capture_logs();
    let api = harness::fake_cluster();
    let emu = harness::microsoft(&[], &[]).await;
    let (_clock, clock_fn) = harness::fixed_clock("2027-01-01T00:00:00Z".parse().unwrap());
    let ctx = test_context(api.client(), allow_exactly(&emu.uri(), &[]), clock_fn);
    api.insert(
        json!({"apiVersion": MMI_AV, "kind": "MicrosoftMailIntegration",
        "metadata": {"name": "outlook", "namespace": NS},
        "spec": {"tenantId": TENANT, "clientId": CLIENT, "clientSecretRef": {"name": "entra"},
            "authorityHost": emu.uri(), "graphHost": emu.uri(), "targets": []}}),
    );
    (api, ctx)
}

fn copy(api: &common::fake_api::FakeApi) -> Arc<MicrosoftMailIntegration> {
    let v = api
        .get(MMI_AV, "MicrosoftMailIntegration", NS, "outlook")
        .expect("the integration");
    Arc::new(serde_json::from_value(v).unwrap())
}

#[tokio::test]
async fn a_stale_copy_without_the_finalizer_is_retried_not_failed() {
    let (api, ctx) = setup().await;
    let stale = copy(&api);
    reconcile(Arc::clone(&stale), Arc::clone(&ctx))
        .await
        .expect("the first reconcile adds the finalizer");
    let now = copy(&api);
    assert_eq!(
        now.metadata.finalizers.as_deref(),
        Some(&["nocobase-mail-operator.dev/cleanup".to_owned()][..])
    );
    // the same copy again, as the cache still held it: the server refuses the patch (the
    // test of /metadata/finalizers fails), which is no failure of the reconcile
    let r = reconcile(stale, Arc::clone(&ctx)).await;
    assert!(r.is_ok(), "a stale copy is retried, not failed: {r:?}");
    assert_eq!(copy(&api).metadata.finalizers, now.metadata.finalizers);
}

#[tokio::test]
async fn removing_the_finalizer_of_an_object_already_gone_is_no_failure() {
    let (api, ctx) = setup().await;
    reconcile(copy(&api), Arc::clone(&ctx)).await.unwrap();
    api.delete(MMI_AV, "MicrosoftMailIntegration", NS, "outlook");
    let deleting = copy(&api);
    assert!(deleting.metadata.deletion_timestamp.is_some());
    reconcile(Arc::clone(&deleting), Arc::clone(&ctx))
        .await
        .expect("cleanup removes the finalizer");
    assert!(
        api.get(MMI_AV, "MicrosoftMailIntegration", NS, "outlook")
            .is_none(),
        "gone once the finalizer is removed"
    );
    // a late trigger with the cached deleting copy: the object is already gone
    let r = reconcile(deleting, Arc::clone(&ctx)).await;
    assert!(
        r.is_ok(),
        "an object already gone is done, not failed: {r:?}"
    );
}
