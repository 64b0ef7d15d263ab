//! Logging (tracing, text or JSON) and Prometheus metrics.

mod labels;
pub mod owner;

pub use labels::*;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tracing_subscriber::EnvFilter;

use crate::api::MicrosoftMailIntegrationStatus;
use owner::OwnerLabel;

/// Logs for one-shot commands: warnings and errors on stderr, `RUST_LOG` overrides.
pub fn init_cli_logging() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Logs for the controller: `info` by default, `RUST_LOG` overrides; text or JSON lines.
pub fn init_controller_logging(json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        b.json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init()
    } else {
        b.try_init()
    };
}

/// The `status` label of a request: the HTTP status, or `error` when none came back (0).
fn status_label(status: u16) -> String {
    if status == 0 {
        "error".to_owned()
    } else {
        status.to_string()
    }
}

/// The operator's metrics. Names follow Prometheus conventions (base units, `_total` for
/// counters, `_timestamp_seconds` for instants).
pub struct Metrics {
    pub registry: Registry,
    pub secret_expiry: Family<IntegrationLabels, Gauge<f64, AtomicU64>>,
    pub credentials_valid: Family<IntegrationLabels, Gauge>,
    pub ready: Family<IntegrationLabels, Gauge>,
    pub last_decisive: Family<IntegrationLabels, Gauge<f64, AtomicU64>>,
    pub validations: Family<ValidationLabels, Counter>,
    pub microsoft_requests: Family<RequestLabels, Histogram>,
    pub nocobase_requests: Family<NocoBaseRequestLabels, Histogram>,
    pub reconciles: Counter,
    pub reconcile_errors: Counter,
    pub reconcile_duration: Histogram,
    pub rotations: Family<OutcomeLabels, Counter>,
    pub last_rotation: Family<IntegrationLabels, Gauge<f64, AtomicU64>>,
    pub rotation_failing_since: Family<IntegrationLabels, Gauge<f64, AtomicU64>>,
    pub ready_reason: Family<ReasonLabels, Gauge>,
    pub nocobase_synced: Family<IntegrationLabels, Gauge>,
    pub mail_settings_synced: Family<IntegrationLabels, Gauge>,
    /// The integration labels copied onto the series (`--metrics-integration-labels`).
    owner_labels: Vec<OwnerLabel>,
    published: Mutex<HashMap<(String, String), Published>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new(Vec::new())
    }
}

impl Metrics {
    /// The metrics, with `owner_labels` copied from each integration onto its series.
    pub fn new(owner_labels: Vec<OwnerLabel>) -> Self {
        let mut registry = Registry::with_prefix("nocobase_mail");
        let secret_expiry = Family::<IntegrationLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "secret_expiry_timestamp_seconds",
            "When the client secret expires (Unix time); absent while unknown",
            secret_expiry.clone(),
        );
        let credentials_valid = Family::<IntegrationLabels, Gauge>::default();
        registry.register(
            "credentials_valid",
            "1 when Microsoft accepted the current credentials, else 0",
            credentials_valid.clone(),
        );
        let ready = Family::<IntegrationLabels, Gauge>::default();
        registry.register(
            "ready",
            "1 when the integration is Ready, else 0",
            ready.clone(),
        );
        let last_decisive = Family::<IntegrationLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "last_decisive_validation_timestamp_seconds",
            "When Microsoft last gave a verdict (Valid or Rejected) on the credentials (Unix time)",
            last_decisive.clone(),
        );
        let validations = Family::<ValidationLabels, Counter>::default();
        registry.register(
            "validations",
            "Validations sent to Microsoft, by outcome and reason",
            validations.clone(),
        );
        let (microsoft_requests, nocobase_requests) = request_metrics(&mut registry);
        let reconciles = Counter::default();
        registry.register("reconciles", "Reconciles run", reconciles.clone());
        let reconcile_errors = Counter::default();
        registry.register(
            "reconcile_errors",
            "Reconciles that failed on a Kubernetes API error",
            reconcile_errors.clone(),
        );
        let reconcile_duration = Histogram::new(exponential_buckets(0.001, 2.0, 14));
        registry.register(
            "reconcile_duration_seconds",
            "Time spent in one reconcile",
            reconcile_duration.clone(),
        );
        let (rotations, last_rotation, rotation_failing_since) = rotation_metrics(&mut registry);
        let (ready_reason, nocobase_synced, mail_settings_synced) = state_metrics(&mut registry);
        Self {
            registry,
            ready_reason,
            nocobase_synced,
            mail_settings_synced,
            owner_labels,
            published: Mutex::default(),
            rotations,
            last_rotation,
            rotation_failing_since,
            secret_expiry,
            credentials_valid,
            ready,
            last_decisive,
            validations,
            microsoft_requests,
            nocobase_requests,
            reconciles,
            reconcile_errors,
            reconcile_duration,
        }
    }
}

/// The latency histograms of outbound requests: Microsoft's, and NocoBase's apart.
fn request_metrics(
    registry: &mut Registry,
) -> (
    Family<RequestLabels, Histogram>,
    Family<NocoBaseRequestLabels, Histogram>,
) {
    let microsoft_requests = Family::<RequestLabels, Histogram>::new_with_constructor(|| {
        Histogram::new(exponential_buckets(0.025, 2.0, 10))
    });
    registry.register(
        "microsoft_request_duration_seconds",
        "Latency of requests to Microsoft (token endpoint and Graph)",
        microsoft_requests.clone(),
    );
    let nocobase_requests =
        Family::<NocoBaseRequestLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.025, 2.0, 10))
        });
    registry.register(
        "nocobase_request_duration_seconds",
        "Latency of requests to NocoBase's API (Variables and secrets, app:refresh)",
        nocobase_requests.clone(),
    );
    (microsoft_requests, nocobase_requests)
}

type RotationMetrics = (
    Family<OutcomeLabels, Counter>,
    Family<IntegrationLabels, Gauge<f64, AtomicU64>>,
    Family<IntegrationLabels, Gauge<f64, AtomicU64>>,
);

type StateFamilies = (
    Family<ReasonLabels, Gauge>,
    Family<IntegrationLabels, Gauge>,
    Family<IntegrationLabels, Gauge>,
);

/// The per-integration state a dashboard groups by: the Ready reason, and whether NocoBase
/// holds the validated values (absent where the integration does not write there).
fn state_metrics(registry: &mut Registry) -> StateFamilies {
    let ready_reason = Family::<ReasonLabels, Gauge>::default();
    registry.register(
        "ready_reason",
        "1 for the integration's Ready reason (Ready when it is Ready)",
        ready_reason.clone(),
    );
    let nocobase_synced = Family::<IntegrationLabels, Gauge>::default();
    registry.register(
        "nocobase_synced",
        "1 when NocoBase's Variables and secrets hold the validated values (NocoBaseSynced), else 0; absent without spec.nocobase",
        nocobase_synced.clone(),
    );
    let mail_settings_synced = Family::<IntegrationLabels, Gauge>::default();
    registry.register(
        "mail_settings_synced",
        "1 when the email manager's settings hold the validated values (MailSettingsSynced), else 0; absent without spec.nocobase.mailSettings",
        mail_settings_synced.clone(),
    );
    (ready_reason, nocobase_synced, mail_settings_synced)
}

/// The rotation metrics: outcomes, last success and failing-since per integration.
fn rotation_metrics(registry: &mut Registry) -> RotationMetrics {
    let rotations = Family::<OutcomeLabels, Counter>::default();
    registry.register(
        "rotations",
        "Client-secret rotations that ended, by outcome (Succeeded, Failed)",
        rotations.clone(),
    );
    let last_rotation = Family::<IntegrationLabels, Gauge<f64, AtomicU64>>::default();
    registry.register(
        "last_rotation_timestamp_seconds",
        "When the client secret was last rotated successfully (Unix time)",
        last_rotation.clone(),
    );
    let rotation_failing_since = Family::<IntegrationLabels, Gauge<f64, AtomicU64>>::default();
    registry.register(
        "rotation_failing_since_timestamp_seconds",
        "Since when the rotation has been failing (Unix time); absent while it is not",
        rotation_failing_since.clone(),
    );
    (rotations, last_rotation, rotation_failing_since)
}

impl Metrics {
    /// An observer for [`crate::microsoft::ClientOptions::observer`].
    pub fn request_observer(self: &Arc<Self>) -> crate::microsoft::RequestObserver {
        let m = Arc::clone(self);
        Arc::new(move |endpoint: &'static str, status: u16, took: Duration| {
            m.microsoft_requests
                .get_or_create(&RequestLabels {
                    endpoint: endpoint.into(),
                    status: status_label(status),
                })
                .observe(took.as_secs_f64());
        })
    }

    /// An observer for [`crate::nocobase::NocoBaseOptions::observer`]: NocoBase's latency
    /// has its own series, apart from Microsoft's.
    pub fn nocobase_request_observer(self: &Arc<Self>) -> crate::microsoft::RequestObserver {
        let m = Arc::clone(self);
        Arc::new(
            move |operation: &'static str, status: u16, took: Duration| {
                m.nocobase_requests
                    .get_or_create(&NocoBaseRequestLabels {
                        operation: operation.into(),
                        status: status_label(status),
                    })
                    .observe(took.as_secs_f64());
            },
        )
    }

    /// Publishes one integration's state; `labels` are the integration's own labels, from
    /// which the owner labels are copied.
    pub fn set_integration(
        &self,
        namespace: &str,
        name: &str,
        labels: &BTreeMap<String, String>,
        status: &MicrosoftMailIntegrationStatus,
    ) {
        let l = IntegrationLabels {
            namespace: namespace.into(),
            name: name.into(),
            owner: owner::owner_values(&self.owner_labels, labels),
        };
        let cond = |t: &str| {
            status
                .conditions
                .iter()
                .find(|c| c.type_ == t)
                .map(|c| (c.status == "True", c.reason.clone()))
        };
        let ready = cond(crate::api::condition::READY);
        self.republish(&l, ready.as_ref().map(|(_, r)| r.clone()));
        let is_true = |c: Option<(bool, String)>| c.is_some_and(|(t, _)| t);
        self.credentials_valid
            .get_or_create(&l)
            .set(is_true(cond(crate::api::condition::CREDENTIALS_VALID)) as i64);
        self.ready
            .get_or_create(&l)
            .set(is_true(ready.clone()) as i64);
        if let Some((_, reason)) = ready {
            self.ready_reason
                .get_or_create(&ReasonLabels {
                    integration: l.clone(),
                    reason,
                })
                .set(1);
        }
        let optional =
            |family: &Family<IntegrationLabels, Gauge>, c: Option<(bool, String)>| match c {
                Some((t, _)) => {
                    family.get_or_create(&l).set(t as i64);
                }
                None => {
                    family.remove(&l);
                }
            };
        optional(
            &self.nocobase_synced,
            cond(crate::api::condition::NOCOBASE_SYNCED),
        );
        optional(
            &self.mail_settings_synced,
            cond(crate::api::condition::MAIL_SETTINGS_SYNCED),
        );
        self.set_times(&l, status);
    }

    /// The instants: expiry, last decisive validation, rotation.
    fn set_times(&self, l: &IntegrationLabels, status: &MicrosoftMailIntegrationStatus) {
        match status
            .secret_expiry
            .as_ref()
            .and_then(|e| e.expires_at.as_deref())
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
        {
            Some(t) => {
                self.secret_expiry
                    .get_or_create(l)
                    .set(t.as_second() as f64);
            }
            None => {
                self.secret_expiry.remove(l);
            }
        }
        self.set_rotation(l, status);
        if let Some(t) = status
            .last_validation
            .as_ref()
            .and_then(|v| v.time.parse::<jiff::Timestamp>().ok())
        {
            self.last_decisive
                .get_or_create(l)
                .set(t.as_second() as f64);
        }
    }

    /// Records what the integration's series are published with now, and removes the
    /// series of what they were published with before when that differs (owner labels
    /// edited, another Ready reason), so no stale series stays behind.
    fn republish(&self, l: &IntegrationLabels, ready_reason: Option<String>) {
        let now = Published {
            labels: l.clone(),
            ready_reason,
        };
        let key = (l.namespace.clone(), l.name.clone());
        let before = self
            .published
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, now.clone());
        match before {
            Some(b) if b.labels != now.labels => self.remove_series(&b),
            Some(b) if b.ready_reason != now.ready_reason => {
                if let Some(reason) = b.ready_reason {
                    self.ready_reason.remove(&ReasonLabels {
                        integration: b.labels,
                        reason,
                    });
                }
            }
            _ => {}
        }
    }

    fn remove_series(&self, p: &Published) {
        let l = &p.labels;
        for f in [&self.credentials_valid, &self.ready] {
            f.remove(l);
        }
        for f in [&self.nocobase_synced, &self.mail_settings_synced] {
            f.remove(l);
        }
        for f in [
            &self.secret_expiry,
            &self.last_decisive,
            &self.last_rotation,
            &self.rotation_failing_since,
        ] {
            f.remove(l);
        }
        if let Some(reason) = &p.ready_reason {
            self.ready_reason.remove(&ReasonLabels {
                integration: l.clone(),
                reason: reason.clone(),
            });
        }
    }

    /// Counts a rotation that ended this round.
    pub fn rotation_ended(&self, outcome: &str) {
        self.rotations
            .get_or_create(&OutcomeLabels {
                outcome: outcome.into(),
            })
            .inc();
    }

    fn set_rotation(&self, l: &IntegrationLabels, status: &MicrosoftMailIntegrationStatus) {
        let at = |s: Option<&String>| s.and_then(|t| t.parse::<jiff::Timestamp>().ok());
        let r = status.rotation.as_ref();
        match at(r.and_then(|r| r.last_rotation_time.as_ref())) {
            Some(t) => {
                self.last_rotation
                    .get_or_create(l)
                    .set(t.as_second() as f64);
            }
            None => {
                self.last_rotation.remove(l);
            }
        }
        match at(r.and_then(|r| r.failing_since.as_ref())) {
            Some(t) => {
                self.rotation_failing_since
                    .get_or_create(l)
                    .set(t.as_second() as f64);
            }
            None => {
                self.rotation_failing_since.remove(l);
            }
        }
    }

    /// Forgets a deleted integration: every series it was published with.
    pub fn remove_integration(&self, namespace: &str, name: &str) {
        let key = (namespace.to_owned(), name.to_owned());
        let before = self
            .published
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key);
        if let Some(p) = before {
            self.remove_series(&p);
        }
    }

    /// Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String never fails");
        out
    }
}
