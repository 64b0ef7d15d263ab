//! Leader election: only the holder of the Lease [`crate::rbac::LEASE_NAME`] reconciles; a
//! standby takes over within the lease duration (15 s) when the leader stops renewing.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use kube::Client;
use tracing::info;

/// The leader-election Lease manager: the Lease [`crate::rbac::LEASE_NAME`] in `ns`, 15 s
/// duration, renewed 5 s before it runs out.
pub async fn leader_lease(
    client: Client,
    ns: &str,
    identity: &str,
) -> Result<kube_lease_manager::LeaseManager, String> {
    kube_lease_manager::LeaseManagerBuilder::new(client, crate::rbac::LEASE_NAME)
        .with_namespace(ns)
        .with_identity(identity)
        .with_duration(15)
        .with_grace(5)
        .build()
        .await
        .map_err(|e| format!("leader election set-up failed: {e}"))
}

/// The Lease's state and the task renewing it, once this replica leads.
pub(super) type Leadership = (
    tokio::sync::watch::Receiver<bool>,
    tokio::task::JoinHandle<kube_lease_manager::Result<kube_lease_manager::LeaseManager>>,
);

/// Waits until this replica leads; `None`: a shutdown signal came first. A standby is
/// healthy and ready to take over: it reports ready until it leads, and then again once
/// its caches have synced.
pub(super) async fn acquire(
    client: Client,
    ns: String,
    identity: &str,
    ready: &Arc<AtomicBool>,
) -> Result<Option<Leadership>, String> {
    let manager = leader_lease(client, &ns, identity).await?;
    let (mut rx, task) = manager.watch().await;
    ready.store(true, Ordering::SeqCst);
    info!(lease = crate::rbac::LEASE_NAME, namespace = %ns, identity = %identity, "waiting for leadership");
    while !*rx.borrow_and_update() {
        tokio::select! {
            changed = rx.changed() => if changed.is_err() { return Err("leader election stopped".into()) },
            _ = tokio::signal::ctrl_c() => return Ok(None),
            _ = sigterm() => return Ok(None),
        }
    }
    info!("became leader");
    ready.store(false, Ordering::SeqCst);
    Ok(Some((rx, task)))
}

async fn sigterm() {
    #[cfg(unix)]
    {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
            return;
        }
    }
    futures::future::pending::<()>().await
}
