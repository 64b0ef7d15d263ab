//! Bounds on what one endpoint can cost the controller: a budget for each reconcile's
//! external I/O (enforced by [`crate::http::with_io_deadline`]), and a limit on the
//! reconciles that may talk to one NocoBase endpoint at once. A reconcile that finds its
//! endpoint's limit reached does no I/O and is queued again a moment later, so it never
//! holds one of the controller's slots while it waits: integrations on other endpoints
//! keep getting theirs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::api::MicrosoftMailIntegration;

/// The budget of one reconcile's external I/O when `--reconcile-io-deadline` is not given:
/// long enough for a NocoBase restart after `app:refresh` (15 to 20 s seen under load) and
/// a few more requests, short enough that a reconcile never takes minutes.
pub const DEFAULT_IO_DEADLINE: Duration = Duration::from_secs(60);

/// Reconciles talking to one NocoBase endpoint at once when
/// `--max-concurrent-reconciles-per-endpoint` is not given (a quarter of the default 16
/// slots: four slow endpoints are needed to take every slot, and each costs at most the
/// I/O budget).
pub const DEFAULT_PER_ENDPOINT: usize = 4;

/// How long a reconcile that found its endpoint busy waits before it is tried again.
pub const BUSY_RETRY: Duration = Duration::from_secs(2);

/// How many reconciles run at once when `--max-concurrent-reconciles` is not given: enough
/// to keep the API server and Microsoft busy on a 2-core node, few enough that a cold start
/// of 10,000 integrations does not hold 10,000 in-flight reconciles (and their memory).
pub const DEFAULT_MAX_CONCURRENT_RECONCILES: u16 = 16;

/// The controller's work queue: how many reconciles at once, and how long a burst of
/// triggers for one integration is merged before it is reconciled.
#[derive(Clone, Copy, Debug)]
pub struct Tuning {
    pub max_concurrent_reconciles: u16,
    pub debounce: Duration,
    /// Budget of one reconcile's external I/O (`--reconcile-io-deadline`).
    pub io_deadline: Duration,
    /// Reconciles at once per NocoBase endpoint (`--max-concurrent-reconciles-per-endpoint`).
    pub per_endpoint: usize,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            max_concurrent_reconciles: DEFAULT_MAX_CONCURRENT_RECONCILES,
            debounce: Duration::ZERO,
            io_deadline: DEFAULT_IO_DEADLINE,
            per_endpoint: DEFAULT_PER_ENDPOINT,
        }
    }
}

/// The endpoint an integration's reconcile may be slowed down by, chosen by its author:
/// the NocoBase Service's namespace for an in-cluster name (`svc.NS.svc`,
/// `svc.NS.svc.cluster.local`), so that many Services of one namespace count as one
/// endpoint, else the URL's host and port. `None`: no NocoBase (the Microsoft hosts are the
/// operator's allow-listed ones, bounded by the I/O budget alone).
pub fn endpoint_key(mmi: &MicrosoftMailIntegration) -> Option<String> {
    let nb = mmi.spec.nocobase.as_ref()?;
    let url = url::Url::parse(nb.url.trim()).ok()?;
    let host = url.host_str()?.to_ascii_lowercase();
    let host = host.trim_end_matches('.');
    let labels: Vec<&str> = host.split('.').collect();
    let service_ns = match labels.as_slice() {
        [_, ns, "svc"] | [_, ns, "svc", "cluster", "local"] => Some(*ns),
        _ => None,
    };
    Some(match service_ns {
        Some(ns) => format!("namespace {ns}"),
        None => format!("{host}:{}", url.port_or_known_default().unwrap_or(0)),
    })
}

/// The limits in force, shared by every reconcile.
#[derive(Debug)]
pub struct Limits {
    /// Budget of one reconcile's external I/O.
    pub io_deadline: Duration,
    /// Reconciles at once per endpoint ([`endpoint_key`]).
    pub per_endpoint: usize,
    held: Arc<Mutex<HashMap<String, usize>>>,
}

impl Default for Limits {
    fn default() -> Self {
        Self::new(DEFAULT_IO_DEADLINE, DEFAULT_PER_ENDPOINT)
    }
}

/// One reconcile's place on its endpoint; given back when dropped.
#[derive(Debug)]
pub struct Permit {
    held: Arc<Mutex<HashMap<String, usize>>>,
    key: Option<String>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let Some(key) = self.key.take() else { return };
        let mut held = lock(&self.held);
        if let Some(n) = held.get_mut(&key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                held.remove(&key);
            }
        }
    }
}

fn lock(m: &Mutex<HashMap<String, usize>>) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
    // plain counters: a panic elsewhere leaves them consistent
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Limits {
    pub fn new(io_deadline: Duration, per_endpoint: usize) -> Self {
        Self {
            io_deadline,
            per_endpoint: per_endpoint.max(1),
            held: Arc::default(),
        }
    }

    /// A place on `key`'s endpoint, or `None` when `per_endpoint` reconciles hold it
    /// already. Without a key there is nothing to limit: always a permit.
    pub fn try_acquire(&self, key: Option<String>) -> Option<Permit> {
        if let Some(k) = &key {
            let mut held = lock(&self.held);
            let n = held.entry(k.clone()).or_default();
            if *n >= self.per_endpoint {
                return None;
            }
            *n += 1;
        }
        Some(Permit {
            held: Arc::clone(&self.held),
            key,
        })
    }

    /// Reconciles holding a place on `key` now.
    pub fn in_flight(&self, key: &str) -> usize {
        lock(&self.held).get(key).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn mmi(url: Option<&str>) -> MicrosoftMailIntegration {
        let mut spec = json!({"tenantId": "t", "clientId": "c", "clientSecretRef": {"name": "e"}});
        if let Some(u) = url {
            spec["nocobase"] = json!({"url": u, "apiKeySecretRef": {"name": "k"}});
        }
        serde_json::from_value(json!({"apiVersion": "nocobase-mail-operator.dev/v1alpha1",
            "kind": "MicrosoftMailIntegration", "metadata": {"name": "m", "namespace": "a"},
            "spec": spec}))
        .unwrap()
    }

    #[test]
    fn endpoints_are_a_service_namespace_or_a_host_and_port() {
        let cases = [
            (None, None),
            (Some("http://nb.team.svc:13000"), Some("namespace team")),
            (
                Some("http://nb.team.svc.cluster.local"),
                Some("namespace team"),
            ),
            (Some("http://other.team.svc/"), Some("namespace team")),
            (
                Some("https://NocoBase.Example.com"),
                Some("nocobase.example.com:443"),
            ),
            (Some("http://127.0.0.1:13000"), Some("127.0.0.1:13000")),
            (Some("not a url"), None),
        ];
        for (url, want) in cases {
            assert_eq!(endpoint_key(&mmi(url)).as_deref(), want, "{url:?}");
        }
    }

    #[test]
    fn a_full_endpoint_refuses_until_a_permit_is_given_back() {
        let l = Limits::new(Duration::from_secs(1), 2);
        let k = || Some("namespace team".to_owned());
        let a = l.try_acquire(k()).unwrap();
        let _b = l.try_acquire(k()).unwrap();
        assert!(l.try_acquire(k()).is_none());
        // another endpoint and no endpoint are not affected
        assert!(l.try_acquire(Some("namespace other".into())).is_some());
        assert!(l.try_acquire(None).is_some());
        drop(a);
        assert_eq!(l.in_flight("namespace team"), 1);
        assert!(l.try_acquire(k()).is_some());
    }
}
