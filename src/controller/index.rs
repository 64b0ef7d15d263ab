//! Pure index from a Secret or a Deployment to the integrations it concerns, kept up to
//! date from the integration watch (the way Linkerd's policy controller keeps its index).
//!
//! A Secret or Deployment event is then answered with a few hash look-ups in its namespace
//! instead of a scan of every integration; an event in a namespace without integrations
//! returns an empty `Vec`, which does not allocate.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Mutex, MutexGuard};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;

use crate::api::MicrosoftMailIntegration;
use crate::inject;

/// What one integration points at, remembered so that an update or a deletion removes
/// exactly what it added.
#[derive(Clone, Debug, Default, PartialEq)]
struct Refs {
    /// Secrets it reads: the client secret and the NocoBase API key.
    secrets: Vec<String>,
    /// Deployments it names as targets or has injected before (to give their fields back).
    deployments: Vec<String>,
    /// Its selector targets.
    selectors: Vec<LabelSelector>,
    /// The app registration it validates against (client ID, lower case) and where its
    /// client secret is.
    client: SecretUse,
}

/// Where an integration's client secret is, for an app registration: what a rotation of
/// that registration must look at before it removes a credential.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SecretUse {
    pub client_id: String,
    pub namespace: String,
    pub integration: String,
    pub secret: String,
    pub key: String,
}

impl Refs {
    fn of(m: &MicrosoftMailIntegration) -> Self {
        let mut secrets = vec![m.spec.client_secret_ref.name.clone()];
        if let Some(nb) = &m.spec.nocobase {
            secrets.push(nb.api_key_secret_ref.name.clone());
        }
        let named = m
            .spec
            .targets
            .iter()
            .filter_map(|t| t.deployment_name.clone());
        let injected = m
            .status
            .iter()
            .flat_map(|s| s.injected.iter().map(|i| i.deployment.clone()));
        let mut deployments: Vec<String> = named.chain(injected).collect();
        for v in [&mut secrets, &mut deployments] {
            v.sort();
            v.dedup();
        }
        let selectors = m
            .spec
            .targets
            .iter()
            .filter(|t| t.deployment_name.is_none())
            .filter_map(|t| t.deployment_selector.clone())
            .collect();
        let client = SecretUse {
            client_id: m.spec.client_id.trim().to_ascii_lowercase(),
            namespace: m.metadata.namespace.clone().unwrap_or_default(),
            integration: m.metadata.name.clone().unwrap_or_default(),
            secret: m.spec.client_secret_ref.name.clone(),
            key: m.spec.client_secret_ref.key.clone(),
        };
        Refs {
            secrets,
            deployments,
            selectors,
            client,
        }
    }
}

/// The integrations of one namespace, by what they reference.
#[derive(Debug, Default)]
struct Namespace {
    integrations: HashMap<String, Refs>,
    /// Secret name -> integrations reading it.
    secrets: HashMap<String, BTreeSet<String>>,
    /// Deployment name -> integrations naming it or having injected it.
    deployments: HashMap<String, BTreeSet<String>>,
    /// Integrations with at least one selector target (few, in practice).
    selecting: BTreeSet<String>,
    /// Client ID (lower case) -> integrations validating against that app registration.
    clients: HashMap<String, BTreeSet<String>>,
}

impl Namespace {
    fn add(&mut self, name: &str, refs: Refs) {
        for s in &refs.secrets {
            let set = self.secrets.entry(s.clone()).or_default();
            set.insert(name.to_owned());
        }
        for d in &refs.deployments {
            let set = self.deployments.entry(d.clone()).or_default();
            set.insert(name.to_owned());
        }
        if !refs.selectors.is_empty() {
            self.selecting.insert(name.to_owned());
        }
        let set = self
            .clients
            .entry(refs.client.client_id.clone())
            .or_default();
        set.insert(name.to_owned());
        self.integrations.insert(name.to_owned(), refs);
    }

    fn remove(&mut self, name: &str) {
        let Some(old) = self.integrations.remove(name) else {
            return;
        };
        let forget = |map: &mut HashMap<String, BTreeSet<String>>, keys: &[String]| {
            for k in keys {
                if let Some(set) = map.get_mut(k) {
                    set.remove(name);
                    if set.is_empty() {
                        map.remove(k);
                    }
                }
            }
        };
        forget(&mut self.secrets, &old.secrets);
        forget(&mut self.deployments, &old.deployments);
        forget(
            &mut self.clients,
            std::slice::from_ref(&old.client.client_id),
        );
        self.selecting.remove(name);
    }
}

/// Secret and Deployment names -> integrations, per namespace.
#[derive(Debug, Default)]
pub struct Index {
    namespaces: HashMap<String, Namespace>,
}

impl Index {
    /// Adds the integration, or replaces what an earlier version of it referenced.
    pub fn apply(&mut self, m: &MicrosoftMailIntegration) {
        let (Some(ns), Some(name)) = (m.metadata.namespace.as_deref(), m.metadata.name.as_deref())
        else {
            return;
        };
        let refs = Refs::of(m);
        let entry = self.namespaces.entry(ns.to_owned()).or_default();
        if entry.integrations.get(name) == Some(&refs) {
            return; // a status write that changed no reference: nothing to do
        }
        entry.remove(name);
        entry.add(name, refs);
    }

    /// Forgets a deleted integration.
    pub fn delete(&mut self, m: &MicrosoftMailIntegration) {
        let (Some(ns), Some(name)) = (m.metadata.namespace.as_deref(), m.metadata.name.as_deref())
        else {
            return;
        };
        if let Some(entry) = self.namespaces.get_mut(ns) {
            entry.remove(name);
            if entry.integrations.is_empty() {
                self.namespaces.remove(ns);
            }
        }
    }

    /// Number of integrations indexed.
    pub fn len(&self) -> usize {
        self.namespaces.values().map(|n| n.integrations.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.namespaces.is_empty()
    }

    /// Integrations affected by a change of Secret `ns/name`: those reading it, and the one
    /// whose managed Secret it is (`managed_by`, the integration label's value).
    pub fn for_secret(
        &self,
        ns: &str,
        name: &str,
        managed_by: Option<&str>,
    ) -> Vec<ObjectRef<MicrosoftMailIntegration>> {
        let Some(entry) = self.namespaces.get(ns) else {
            return Vec::new();
        };
        let readers = entry.secrets.get(name).into_iter().flatten();
        let owner = managed_by.filter(|o| entry.integrations.contains_key(*o));
        refs(ns, readers.map(String::as_str).chain(owner).collect())
    }

    /// Every integration (all namespaces of this index) validating against the app
    /// registration `client_id`, with where its client secret is.
    pub fn for_client(&self, client_id: &str) -> Vec<SecretUse> {
        let id = client_id.trim().to_ascii_lowercase();
        let mut out = vec![];
        for entry in self.namespaces.values() {
            for name in entry.clients.get(&id).into_iter().flatten() {
                out.extend(entry.integrations.get(name).map(|r| r.client.clone()));
            }
        }
        out
    }

    /// Integrations affected by a change of Deployment `ns/name` with these labels: those
    /// targeting it now (by name or selector), and those that injected it before.
    pub fn for_deployment(
        &self,
        ns: &str,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> Vec<ObjectRef<MicrosoftMailIntegration>> {
        let Some(entry) = self.namespaces.get(ns) else {
            return Vec::new();
        };
        let named = entry.deployments.get(name).into_iter().flatten();
        let selecting = entry.selecting.iter().filter(|i| {
            entry.integrations[*i]
                .selectors
                .iter()
                .any(|s| inject::selector_matches(s, labels))
        });
        refs(ns, named.chain(selecting).map(String::as_str).collect())
    }
}

/// The integrations named, once each, in a stable order.
fn refs(ns: &str, mut names: Vec<&str>) -> Vec<ObjectRef<MicrosoftMailIntegration>> {
    names.sort_unstable();
    names.dedup();
    names
        .into_iter()
        .map(|n| ObjectRef::new(n).within(ns))
        .collect()
}

/// The index as the integration watch keeps it: a re-list (after a watch gap) builds a
/// new index aside and swaps it in when complete, the way the reflector's store does.
#[derive(Debug, Default)]
pub struct IndexFeed {
    current: Index,
    relisting: Option<Index>,
}

impl IndexFeed {
    pub fn feed(&mut self, ev: &watcher::Event<MicrosoftMailIntegration>) {
        match ev {
            // the first list fills the empty index directly, so events are mapped at once
            watcher::Event::Init if !self.current.is_empty() => {
                self.relisting = Some(Index::default())
            }
            watcher::Event::Init => {}
            watcher::Event::InitApply(m) => match &mut self.relisting {
                Some(next) => next.apply(m),
                None => self.current.apply(m),
            },
            watcher::Event::InitDone => {
                if let Some(next) = self.relisting.take() {
                    self.current = next;
                }
            }
            watcher::Event::Apply(m) => self.current.apply(m),
            watcher::Event::Delete(m) => self.current.delete(m),
        }
    }

    pub fn index(&self) -> &Index {
        &self.current
    }
}

/// The indexes of every controller `run` started (one per `--namespace`), so that a
/// question about all watched namespaces (who else uses this app registration?) is
/// answered from all of them.
#[derive(Debug, Default)]
pub struct Indexes {
    feeds: Mutex<Vec<std::sync::Arc<Mutex<IndexFeed>>>>,
}

impl Indexes {
    /// Adds one controller's index.
    pub fn register(&self, feed: std::sync::Arc<Mutex<IndexFeed>>) {
        self.feeds
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(feed);
    }

    /// [`Index::for_client`] over every registered index.
    pub fn for_client(&self, client_id: &str) -> Vec<SecretUse> {
        let feeds = self.feeds.lock().unwrap_or_else(|e| e.into_inner()).clone();
        feeds
            .iter()
            .flat_map(|f| {
                let feed = f.lock().unwrap_or_else(|e| e.into_inner());
                feed.index().for_client(client_id)
            })
            .collect()
    }
}

/// Namespace -> name -> the resourceVersion the operator's last write produced.
type Written = HashMap<String, HashMap<String, String>>;

/// The resourceVersions the operator's own writes of managed Secrets and Deployments
/// produced, so that the watch event echoing such a write is told apart from a change by
/// someone else. A write whose echo arrives before it is recorded is simply not recognised
/// (one redundant reconcile), never the other way round.
#[derive(Debug, Default)]
pub struct OwnWrites {
    secrets: Mutex<Written>,
    deployments: Mutex<Written>,
}

impl OwnWrites {
    pub const SECRET: &'static str = "Secret";
    pub const DEPLOYMENT: &'static str = "Deployment";

    fn map(&self, kind: &str) -> MutexGuard<'_, Written> {
        let m = if kind == Self::SECRET {
            &self.secrets
        } else {
            &self.deployments
        };
        // plain data: a panic elsewhere leaves it consistent
        m.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Remembers the resourceVersion a write of `kind` `ns/name` returned.
    pub fn record(&self, kind: &str, ns: &str, name: &str, rv: Option<&str>) {
        let Some(rv) = rv else { return };
        self.map(kind)
            .entry(ns.to_owned())
            .or_default()
            .insert(name.to_owned(), rv.to_owned());
    }

    /// Whether this event is the echo of the operator's own last write; the record is
    /// consumed either way, since the object has moved on.
    pub fn is_echo(&self, kind: &str, ns: &str, name: &str, rv: Option<&str>) -> bool {
        let mut map = self.map(kind);
        let Some(names) = map.get_mut(ns) else {
            return false;
        };
        let Some(written) = names.remove(name) else {
            return false;
        };
        if names.is_empty() {
            map.remove(ns);
        }
        rv == Some(written.as_str())
    }

    /// Records not yet consumed (for tests and the benchmark's sanity).
    pub fn pending(&self) -> usize {
        let count = |m: &Written| m.values().map(HashMap::len).sum::<usize>();
        count(&self.map(Self::SECRET)) + count(&self.map(Self::DEPLOYMENT))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn mmi(ns: &str, name: &str, spec: serde_json::Value) -> MicrosoftMailIntegration {
        let mut v = json!({"apiVersion": "nocobase-mail-operator.dev/v1alpha1", "kind": "MicrosoftMailIntegration",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"tenantId": "t", "clientId": "c", "clientSecretRef": {"name": "entra"}}});
        for (k, val) in spec.as_object().unwrap() {
            v["spec"][k] = val.clone();
        }
        serde_json::from_value(v).unwrap()
    }

    fn names(refs: Vec<ObjectRef<MicrosoftMailIntegration>>) -> Vec<String> {
        refs.into_iter().map(|r| r.name).collect()
    }

    #[test]
    fn a_secret_in_a_namespace_without_integrations_finds_nothing() {
        let mut idx = Index::default();
        idx.apply(&mmi("a", "one", json!({})));
        assert!(idx.for_secret("b", "entra", None).is_empty());
        assert_eq!(idx.for_secret("b", "entra", None).capacity(), 0);
        assert_eq!(names(idx.for_secret("a", "entra", None)), ["one"]);
        assert_eq!(names(idx.for_secret("a", "x", Some("one"))), ["one"]);
        assert!(idx.for_secret("a", "x", Some("gone")).is_empty());
    }

    #[test]
    fn an_update_forgets_what_the_old_version_referenced() {
        let mut idx = Index::default();
        idx.apply(&mmi(
            "a",
            "one",
            json!({"targets": [{"deploymentName": "nb"}]}),
        ));
        idx.apply(&mmi(
            "a",
            "one",
            json!({"clientSecretRef": {"name": "other"}, "targets": [{"deploymentName": "nb2"}]}),
        ));
        let none = BTreeMap::new();
        assert!(idx.for_secret("a", "entra", None).is_empty());
        assert!(idx.for_deployment("a", "nb", &none).is_empty());
        assert_eq!(names(idx.for_deployment("a", "nb2", &none)), ["one"]);
        idx.delete(&mmi("a", "one", json!({})));
        assert!(idx.is_empty());
    }
}
