//! Documents an upstream behaviour the controller works around: in kube-runtime 5.0, a
//! `Store::wait_until_ready()` future polled before the initial list completes is not woken
//! when it does, while a call made afterwards resolves at once. `controller::run_controller`
//! therefore asks again periodically. When this test starts failing, the workaround can go.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::fake_api::FakeApi;
use futures::StreamExt;
use kube::runtime::controller::Action;
use kube::runtime::{Controller, watcher};
use nocobase_mail_operator::api::MicrosoftMailIntegration;

#[tokio::test]
async fn early_wait_until_ready_is_not_woken() {
    let api = FakeApi::new();
    api.register_kind(
        "nocobase-mail-operator.dev/v1alpha1",
        "MicrosoftMailIntegration",
        "microsoftmailintegrations",
        true,
    );
    api.insert(serde_json::json!({"apiVersion": "nocobase-mail-operator.dev/v1alpha1", "kind": "MicrosoftMailIntegration",
        "metadata": {"name": "a", "namespace": "x"},
        "spec": {"tenantId": "contoso.com", "clientId": "c", "clientSecretRef": {"name": "s"}}}));
    let mmis: kube::Api<MicrosoftMailIntegration> = kube::Api::namespaced(api.client(), "x");
    let controller = Controller::new(mmis, watcher::Config::default().any_semantic());
    let store = controller.store();
    let early = {
        let store = store.clone();
        tokio::spawn(async move { store.wait_until_ready().await.is_ok() })
    };
    tokio::task::yield_now().await;
    let run = tokio::spawn(
        controller
            .run(
                |_, _: Arc<()>| async { Ok::<_, kube::Error>(Action::await_change()) },
                |_, _, _| Action::await_change(),
                Arc::new(()),
            )
            .for_each(|_| async {}),
    );
    let late = tokio::time::timeout(Duration::from_secs(2), store.wait_until_ready()).await;
    assert!(
        matches!(late, Ok(Ok(()))),
        "a late call sees the synced store"
    );
    let early = tokio::time::timeout(Duration::from_millis(500), early).await;
    assert!(
        early.is_err(),
        "the early waiter was woken: kube-runtime fixed it; drop the polling workaround"
    );
    run.abort();
}
