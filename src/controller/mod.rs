//! `run`: the controller. Watches integrations, and the Secrets (metadata only) and
//! Deployments (metadata only) they point at, in all namespaces or in those given; serves
//! /metrics, /healthz and /readyz; elects a leader through a Lease.

mod mail;
pub mod reconcile;
pub mod server;
pub mod validations;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{Controller, WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use tracing::{error, info};

pub use reconcile::{Context, Error, FINALIZER, error_policy, reconcile};

use crate::api::MicrosoftMailIntegration;
use crate::inject::{self, INTEGRATION_LABEL};
use crate::microsoft::{ClientOptions, MicrosoftClient};
use crate::telemetry::Metrics;
use validations::ValidationCache;

/// Settings of `run`, from the command line.
#[derive(Clone, Debug)]
pub struct Settings {
    pub namespaces: Vec<String>,
    pub listen: String,
    pub leader_election: bool,
    pub lease_namespace: Option<String>,
    pub identity: String,
    pub ca_bundle_pem: Option<Vec<u8>>,
}

/// The longest a definitive answer from Microsoft is shared by integrations with identical
/// credentials (shorter for an integration whose `validation.interval` is shorter).
pub const VALIDATION_CACHE_TTL: Duration = Duration::from_secs(300);

/// Builds the shared context.
pub fn context(
    client: Client,
    metrics: Arc<Metrics>,
    ca_bundle_pem: Option<Vec<u8>>,
    instance: String,
) -> Result<Arc<Context>, String> {
    // One outbound client for Microsoft and NocoBase: one pool, one TLS configuration.
    let http = crate::http::default_client(ca_bundle_pem.as_deref())?;
    let opts = ClientOptions {
        observer: Some(metrics.request_observer()),
        http: Some(http.clone()),
        ..Default::default()
    };
    let microsoft = MicrosoftClient::new(opts)?;
    let clock = crate::clock::system();
    Ok(Arc::new(Context {
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: inject::FIELD_MANAGER.into(),
                instance: Some(instance),
            },
        ),
        client,
        validations: ValidationCache::new(
            microsoft,
            VALIDATION_CACHE_TTL,
            Arc::clone(&metrics),
            Arc::clone(&clock),
        ),
        metrics,
        clock,
        http,
    }))
}

/// Integrations affected by a change of this Secret: those reading it, and the one whose
/// managed Secret it is.
pub fn integrations_for_secret(
    store: &Store<MicrosoftMailIntegration>,
    s: &PartialObjectMeta<Secret>,
) -> Vec<ObjectRef<MicrosoftMailIntegration>> {
    let ns = s.namespace();
    let name = s.name_any();
    let managed_by = s.labels().get(INTEGRATION_LABEL).cloned();
    store
        .state()
        .iter()
        .filter(|m| {
            m.namespace() == ns
                && (m.spec.client_secret_ref.name == name
                    || Some(m.name_any()) == managed_by
                    || m.spec
                        .nocobase
                        .as_ref()
                        .is_some_and(|nb| nb.api_key_secret_ref.name == name))
        })
        .map(|m| ObjectRef::from_obj(m.as_ref()))
        .collect()
}

/// Integrations affected by a change of this Deployment: those targeting it now, and
/// those that injected it before (to give back their fields).
pub fn integrations_for_deployment(
    store: &Store<MicrosoftMailIntegration>,
    d: &PartialObjectMeta<Deployment>,
) -> Vec<ObjectRef<MicrosoftMailIntegration>> {
    let ns = d.namespace();
    let name = d.name_any();
    let as_deployment = Deployment {
        metadata: d.metadata.clone(),
        ..Default::default()
    };
    store
        .state()
        .iter()
        .filter(|m| m.namespace() == ns)
        .filter(|m| {
            m.spec
                .targets
                .iter()
                .any(|t| inject::selects(t, &as_deployment))
                || m.status
                    .iter()
                    .flat_map(|s| s.injected.iter())
                    .any(|i| i.deployment == name)
        })
        .map(|m| ObjectRef::from_obj(m.as_ref()))
        .collect()
}

/// Runs one controller over one namespace (or all, with `None`) until shutdown.
pub async fn run_controller(
    client: Client,
    namespace: Option<String>,
    ctx: Arc<Context>,
    ready: Arc<AtomicBool>,
) {
    // Secrets and Deployments are watched as metadata only (Api<PartialObjectMeta<_>>): no
    // secret data and no pod templates are held in memory.
    type Meta<K> = PartialObjectMeta<K>;
    let (mmis, secrets, deployments): (
        Api<MicrosoftMailIntegration>,
        Api<Meta<Secret>>,
        Api<Meta<Deployment>>,
    ) = match &namespace {
        Some(ns) => (
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client.clone(), ns),
        ),
        None => (
            Api::all(client.clone()),
            Api::all(client.clone()),
            Api::all(client.clone()),
        ),
    };
    let controller = Controller::new(mmis, watcher::Config::default().any_semantic());
    let store = controller.store();
    let secret_store = store.clone();
    let deployment_store = store.clone();
    let secret_events = watcher(secrets, watcher::Config::default().any_semantic())
        .default_backoff()
        .touched_objects();
    let deployment_events = watcher(deployments, watcher::Config::default().any_semantic())
        .default_backoff()
        .touched_objects();
    let readiness = {
        let store = store.clone();
        async move {
            // A waiter registered before the initial list completes is not woken in
            // kube-runtime 5.0 (tests/zz_kube_runtime_ready.rs shows it), so ask again
            // every 100 ms: each new call sees a completed initial list at once.
            loop {
                let attempt =
                    tokio::time::timeout(Duration::from_millis(100), store.wait_until_ready());
                match attempt.await {
                    Ok(Ok(())) => break,
                    Ok(Err(_)) => return,
                    Err(_) => continue,
                }
            }
            ready.store(true, Ordering::SeqCst);
            info!("caches synced; ready");
        }
    };
    tokio::spawn(readiness);
    controller
        .watches_stream(secret_events, move |s| {
            integrations_for_secret(&secret_store, &s)
        })
        .watches_stream(deployment_events, move |d| {
            integrations_for_deployment(&deployment_store, &d)
        })
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "reconcile error");
            }
        })
        .await;
}

/// `run`: connect, serve health and metrics, wait for leadership, reconcile until SIGTERM.
pub async fn run(settings: Settings) -> Result<(), String> {
    let client = Client::try_default().await.map_err(|e| {
        format!("cannot connect to Kubernetes (in-cluster config or KUBECONFIG): {e}")
    })?;
    let metrics = Arc::new(Metrics::default());
    let ready = Arc::new(AtomicBool::new(false));
    let ctx = context(
        client.clone(),
        Arc::clone(&metrics),
        settings.ca_bundle_pem.clone(),
        settings.identity.clone(),
    )?;
    let (server, _) =
        server::serve(&settings.listen, Arc::clone(&metrics), Arc::clone(&ready)).await?;
    info!(listen = %settings.listen, "serving /metrics, /healthz and /readyz");

    // Leader election: only the Lease holder reconciles; a standby takes over within the
    // lease duration (15 s) when the leader stops renewing.
    let leadership = if settings.leader_election {
        let ns = settings
            .lease_namespace
            .clone()
            .unwrap_or_else(|| client.default_namespace().to_owned());
        let manager = kube_lease_manager::LeaseManagerBuilder::new(
            client.clone(),
            "nocobase-mail-operator-leader",
        )
        .with_namespace(ns.clone())
        .with_identity(settings.identity.clone())
        .with_duration(15)
        .with_grace(5)
        .build()
        .await
        .map_err(|e| format!("leader election set-up failed: {e}"))?;
        let (mut rx, task) = manager.watch().await;
        // A standby is healthy and ready to take over; it reports ready until it leads, and
        // then again once its caches have synced.
        ready.store(true, Ordering::SeqCst);
        info!(lease = "nocobase-mail-operator-leader", namespace = %ns, identity = %settings.identity, "waiting for leadership");
        while !*rx.borrow_and_update() {
            tokio::select! {
                changed = rx.changed() => if changed.is_err() { return Err("leader election stopped".into()) },
                _ = tokio::signal::ctrl_c() => return Ok(()),
                _ = sigterm() => return Ok(()),
            }
        }
        info!("became leader");
        ready.store(false, Ordering::SeqCst);
        Some((rx, task))
    } else {
        None
    };

    let namespaces: Vec<Option<String>> = if settings.namespaces.is_empty() {
        vec![None]
    } else {
        settings.namespaces.iter().cloned().map(Some).collect()
    };
    let controllers = futures::future::join_all(
        namespaces
            .into_iter()
            .map(|ns| run_controller(client.clone(), ns, Arc::clone(&ctx), Arc::clone(&ready))),
    );
    match leadership {
        Some((mut rx, task)) => {
            tokio::select! {
                _ = controllers => {}
                _ = async { while rx.changed().await.is_ok() && *rx.borrow() {} } => {
                    // Lost the lease: stop at once so that two replicas never reconcile together.
                    error!("lost leadership; exiting so that the standby takes over");
                    return Err("lost leadership".into());
                }
            }
            drop(rx); // closing the channel releases the Lease for a fast hand-over
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
        None => controllers.await.into_iter().for_each(drop),
    }
    server.abort();
    info!("stopped");
    Ok(())
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
