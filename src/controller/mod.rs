//! `run`: the controller. Watches integrations, and the Secrets (metadata only) and
//! Deployments (metadata only) they point at, in all namespaces or in those given; serves
//! /metrics, /healthz and /readyz; elects a leader through a Lease.

pub mod backoff;
pub mod cache;
pub mod events;
pub mod fpkey;
pub mod index;
mod leader;
pub mod limits;
mod mail;
pub mod reconcile;
pub mod rotate;
pub mod server;
pub mod validations;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::Config as ControllerConfig;
use kube::runtime::events::Reporter;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{Controller, WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use tokio::task::JoinHandle;
use tracing::{error, info};

pub use reconcile::{Context, Error, FINALIZER, error_policy, reconcile};

use crate::api::MicrosoftMailIntegration;
use crate::inject::{self, INTEGRATION_LABEL};
use crate::microsoft::{ClientOptions, MicrosoftClient};
use crate::telemetry::Metrics;
use index::{Index, IndexFeed, OwnWrites};
use validations::ValidationCache;

/// Settings of `run`, from the command line.
#[derive(Clone, Debug)]
pub struct Settings {
    pub namespaces: Vec<String>,
    pub listen: String,
    /// Serve /metrics on this address instead of `listen` (`--metrics-listen`).
    pub metrics_listen: Option<String>,
    pub leader_election: bool,
    pub lease_namespace: Option<String>,
    pub identity: String,
    pub ca_bundle_pem: Option<Vec<u8>>,
    /// Hosts a credential may be sent to (`--allowed-*`).
    pub allow: crate::allow::AllowList,
    pub tuning: Tuning,
    /// Integration labels copied onto its series (`--metrics-integration-labels`).
    pub owner_labels: Vec<crate::telemetry::owner::OwnerLabel>,
}

/// The longest a definitive answer from Microsoft is shared by integrations with identical
/// credentials (shorter for an integration whose `validation.interval` is shorter).
pub const VALIDATION_CACHE_TTL: Duration = Duration::from_secs(300);

/// Builds the shared context with the default [`limits::Limits`] and a random fingerprint
/// key (in-process runs, whose statuses need not outlive the process).
pub fn context(
    client: Client,
    metrics: Arc<Metrics>,
    ca_bundle_pem: Option<Vec<u8>>,
    instance: String,
    allow: crate::allow::AllowList,
) -> Result<Arc<Context>, String> {
    context_with(
        client,
        metrics,
        ca_bundle_pem,
        instance,
        allow,
        Default::default(),
        crate::fingerprint::OperatorKey::random(),
    )
}

/// Builds the shared context.
pub fn context_with(
    client: Client,
    metrics: Arc<Metrics>,
    ca_bundle_pem: Option<Vec<u8>>,
    instance: String,
    allow: crate::allow::AllowList,
    limits: limits::Limits,
    fingerprint_key: crate::fingerprint::OperatorKey,
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
        recorder: events::Recorders::new(
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
        own_writes: OwnWrites::default(),
        error_backoff: Default::default(),
        allow,
        limits,
        indexes: Default::default(),
        fingerprint_key,
    }))
}

pub use leader::leader_lease;
pub use limits::{DEFAULT_MAX_CONCURRENT_RECONCILES, Tuning};

type Triggers = Vec<ObjectRef<MicrosoftMailIntegration>>;

/// Integrations to reconcile for one event of a Secret or Deployment watch; `map` answers
/// for one object (`deleted` when it is gone).
fn triggers<K>(ev: &watcher::Event<K>, map: impl Fn(&K, bool) -> Triggers) -> Triggers {
    match ev {
        watcher::Event::Apply(o) | watcher::Event::InitApply(o) => map(o, false),
        watcher::Event::Delete(o) => map(o, true),
        watcher::Event::Init | watcher::Event::InitDone => Vec::new(),
    }
}

/// The integrations a Secret event concerns. The echo of the operator's own write of a
/// managed Secret triggers nothing: the reconcile that wrote it knows the result.
fn secret_triggers(
    index: &Index,
    own: &OwnWrites,
    s: &PartialObjectMeta<Secret>,
    deleted: bool,
) -> Triggers {
    let (Some(ns), Some(name)) = (s.metadata.namespace.as_deref(), s.metadata.name.as_deref())
    else {
        return Vec::new();
    };
    let managed_by = s.labels().get(INTEGRATION_LABEL).map(String::as_str);
    let rv = s.metadata.resource_version.as_deref();
    if !deleted && own.is_echo(OwnWrites::SECRET, ns, name, rv) {
        return Vec::new();
    }
    index.for_secret(ns, name, managed_by)
}

/// The integrations a Deployment event concerns, but not for the echo of the operator's own
/// injection patch.
fn deployment_triggers(
    index: &Index,
    own: &OwnWrites,
    d: &PartialObjectMeta<Deployment>,
    deleted: bool,
) -> Triggers {
    let (Some(ns), Some(name)) = (d.metadata.namespace.as_deref(), d.metadata.name.as_deref())
    else {
        return Vec::new();
    };
    let rv = d.metadata.resource_version.as_deref();
    if !deleted && own.is_echo(OwnWrites::DEPLOYMENT, ns, name, rv) {
        return Vec::new();
    }
    static NONE: std::collections::BTreeMap<String, String> = std::collections::BTreeMap::new();
    let labels = d.metadata.labels.as_ref().unwrap_or(&NONE);
    index.for_deployment(ns, name, labels)
}

/// Changes of an integration worth a reconcile: its spec (generation), its labels (the
/// owner labels of its series), the annotations the
/// operator reads (`rotate` and `rotate --approve-retire` change only those, and
/// annotations do not bump the generation), its finalizers, a deletion. A change of status
/// alone is the echo of the operator's own status write, whose result the reconcile that
/// wrote it already knows.
fn relevant(m: &MicrosoftMailIntegration) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    m.metadata.generation.hash(&mut h);
    let annotations = m.metadata.annotations.as_ref();
    for key in crate::api::annotation::READ {
        annotations.and_then(|a| a.get(key)).hash(&mut h);
    }
    m.metadata.labels.hash(&mut h);
    m.metadata.finalizers.hash(&mut h);
    m.metadata.deletion_timestamp.is_some().hash(&mut h);
    Some(h.finish())
}

/// Readiness of the controllers run together (one per `--namespace`): ready once every
/// one of them has synced its caches, not when the first has.
pub struct CacheSync {
    pending: AtomicUsize,
    ready: Arc<AtomicBool>,
}

impl CacheSync {
    /// For `controllers` controllers; sets `ready` once all have synced.
    pub fn new(controllers: usize, ready: Arc<AtomicBool>) -> Arc<Self> {
        Arc::new(Self {
            pending: AtomicUsize::new(controllers),
            ready,
        })
    }

    /// One controller's caches have synced (call once per controller).
    fn synced(&self) {
        let before = self.pending.fetch_sub(1, Ordering::SeqCst);
        if before == 1 {
            self.ready.store(true, Ordering::SeqCst);
            info!("caches synced; ready");
        } else {
            info!(waiting_for = before - 1, "caches synced for one namespace");
        }
    }
}

/// Runs one controller over one namespace (or all, with `None`) until shutdown, with the
/// default [`Tuning`]; reports to `sync` once its caches have synced.
pub async fn run_controller(
    client: Client,
    namespace: Option<String>,
    ctx: Arc<Context>,
    sync: Arc<CacheSync>,
) {
    run_controller_with(client, namespace, ctx, sync, Tuning::default()).await
}

/// Runs one controller over one namespace (or all, with `None`) until shutdown.
pub async fn run_controller_with(
    client: Client,
    namespace: Option<String>,
    ctx: Arc<Context>,
    sync: Arc<CacheSync>,
    tuning: Tuning,
) {
    // Secrets and Deployments are watched as metadata only (Api<PartialObjectMeta<_>>): no
    // secret data and no pod templates are held in memory, and none of them is cached.
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
    let wc = || watcher::Config::default().any_semantic();
    let index = Arc::new(Mutex::new(IndexFeed::default()));
    ctx.indexes.register(Arc::clone(&index));
    let (store, writer) = reflector::store();
    let integrations = {
        let index = Arc::clone(&index);
        watcher(mmis, wc())
            .default_backoff()
            .modify(cache::strip)
            .reflect(writer)
            .inspect_ok(move |ev| lock(&index).feed(ev))
            .applied_objects()
            .predicate_filter(relevant, Default::default())
    };
    let secret_events = {
        let ctx = Arc::clone(&ctx);
        trigger_stream(secrets, Arc::clone(&index), move |idx, s, del| {
            secret_triggers(idx, &ctx.own_writes, s, del)
        })
    };
    let deployment_events = {
        let ctx = Arc::clone(&ctx);
        trigger_stream(deployments, Arc::clone(&index), move |idx, d, del| {
            deployment_triggers(idx, &ctx.own_writes, d, del)
        })
    };
    tokio::spawn(signal_ready(store.clone(), sync));
    let config = ControllerConfig::default()
        .concurrency(tuning.max_concurrent_reconciles)
        .debounce(tuning.debounce);
    Controller::for_stream(integrations, store)
        .with_config(config)
        .reconcile_on(secret_events)
        .reconcile_on(deployment_events)
        .shutdown_on_signal()
        // Boxed: the reconcile future is several KiB, and the runtime moves a task's future
        // (and its output slot, as large) several times per reconcile; a box moves as a pointer.
        .run(|m, c| Box::pin(reconcile(m, c)), error_policy, ctx)
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "reconcile error");
            }
        })
        .await;
}

/// The integrations to reconcile for each event of a watch of `K`, through the index.
fn trigger_stream<K>(
    api: Api<K>,
    index: Arc<Mutex<IndexFeed>>,
    map: impl Fn(&Index, &K, bool) -> Triggers + Send + 'static,
) -> impl futures::Stream<Item = ObjectRef<MicrosoftMailIntegration>> + Send + 'static
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    watcher(api, watcher::Config::default().any_semantic())
        .default_backoff()
        .filter_map(move |ev| {
            let t = ev.map(|ev| {
                let idx = lock(&index);
                triggers(&ev, |o, deleted| map(idx.index(), o, deleted))
            });
            futures::future::ready(t.ok())
        })
        .flat_map(futures::stream::iter)
}

fn lock(index: &Mutex<IndexFeed>) -> std::sync::MutexGuard<'_, IndexFeed> {
    // the index is rebuilt from the watch after a panic elsewhere; a poisoned lock is usable
    index.lock().unwrap_or_else(|e| e.into_inner())
}

/// Marks the process ready once the integration cache has synced.
async fn signal_ready(store: Store<MicrosoftMailIntegration>, sync: Arc<CacheSync>) {
    // A waiter registered before the initial list completes is not woken in
    // kube-runtime 5.0 (tests/zz_kube_runtime_ready.rs shows it), so ask again
    // every 100 ms: each new call sees a completed initial list at once.
    loop {
        let attempt = tokio::time::timeout(Duration::from_millis(100), store.wait_until_ready());
        match attempt.await {
            Ok(Ok(())) => break,
            Ok(Err(_)) => return,
            Err(_) => continue,
        }
    }
    sync.synced();
}

/// `run`: connect, serve health and metrics, wait for leadership, reconcile until SIGTERM.
pub async fn run(settings: Settings) -> Result<(), String> {
    let client = Client::try_default().await.map_err(|e| {
        format!("cannot connect to Kubernetes (in-cluster config or KUBECONFIG): {e}")
    })?;
    let _ = cache::LABELS_READ.set(
        settings
            .owner_labels
            .iter()
            .map(|o| o.key.clone())
            .collect(),
    );
    let metrics = Arc::new(Metrics::new(settings.owner_labels.clone()));
    let ready = Arc::new(AtomicBool::new(false));
    // the operator's own namespace: its Lease and its fingerprint key
    let own_ns = settings
        .lease_namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_owned());
    let key = fpkey::load_or_create(client.clone(), &own_ns).await?;
    let ctx = context_with(
        client.clone(),
        Arc::clone(&metrics),
        settings.ca_bundle_pem.clone(),
        settings.identity.clone(),
        settings.allow.clone(),
        limits::Limits::new(settings.tuning.io_deadline, settings.tuning.per_endpoint),
        key,
    )?;
    let servers = start_servers(&settings, &metrics, &ready).await?;

    let leadership = if settings.leader_election {
        match leader::acquire(client.clone(), own_ns, &settings.identity, &ready).await? {
            Some(l) => Some(l),
            None => return Ok(()),
        }
    } else {
        None
    };

    let namespaces: Vec<Option<String>> = match settings.namespaces.as_slice() {
        [] => vec![None],
        some => some.iter().cloned().map(Some).collect(),
    };
    let sync = CacheSync::new(namespaces.len(), Arc::clone(&ready));
    let controllers = futures::future::join_all(namespaces.into_iter().map(|ns| {
        let (ctx, sync) = (Arc::clone(&ctx), Arc::clone(&sync));
        run_controller_with(client.clone(), ns, ctx, sync, settings.tuning)
    }));
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
    servers.iter().for_each(JoinHandle::abort);
    info!("stopped");
    Ok(())
}

/// Serves /healthz and /readyz, and /metrics with them or on `--metrics-listen`; logs the
/// allow-lists in force.
async fn start_servers(
    settings: &Settings,
    metrics: &Arc<Metrics>,
    ready: &Arc<AtomicBool>,
) -> Result<Vec<JoinHandle<()>>, String> {
    let servers = match &settings.metrics_listen {
        None => {
            let (s, _) =
                server::serve(&settings.listen, Arc::clone(metrics), Arc::clone(ready)).await?;
            info!(listen = %settings.listen, "serving /metrics, /healthz and /readyz");
            vec![s]
        }
        Some(m) => {
            let (s, _) = server::serve_health(&settings.listen, Arc::clone(ready)).await?;
            let (ms, _) = server::serve_metrics(m, Arc::clone(metrics)).await?;
            info!(listen = %settings.listen, metrics = %m, "serving /healthz and /readyz, and /metrics apart");
            vec![s, ms]
        }
    };
    {
        use crate::allow::Endpoint;
        let list = |e| settings.allow.entries(e).join(",");
        info!(
            authority = %list(Endpoint::Authority),
            graph = %list(Endpoint::Graph),
            nocobase = %list(Endpoint::NocoBase),
            "credentials are sent only to these hosts (allow-lists)"
        );
    }
    Ok(servers)
}
