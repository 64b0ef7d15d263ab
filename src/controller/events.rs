//! Kubernetes Events through kube's [`Recorder`], split over several recorders by object.
//!
//! kube-runtime's `Recorder` keeps every Event it published for six minutes (to count
//! repeats as a series) and walks that whole cache on each publish to drop expired
//! entries. One recorder for all integrations made a cold start of 10,000 integrations
//! walk about 50 million entries (a fifth of its CPU, growing with the square of the
//! count). Each object's Events always go through the same shard, so repeats are still
//! counted as a series exactly as before; a publish walks only its shard's cache.

use std::hash::{Hash, Hasher};

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::runtime::events::{Event, Recorder, Reporter};

/// How many recorders: enough that a shard's cache stays small at 10,000 integrations
/// (about 150 entries), few enough to cost nothing (each is a client handle).
pub const SHARDS: usize = 64;

/// Publishes Events, one [`Recorder`] per shard of objects.
#[derive(Clone)]
pub struct Recorders {
    shards: Vec<Recorder>,
}

impl Recorders {
    pub fn new(client: Client, reporter: Reporter) -> Self {
        let shards = (0..SHARDS)
            .map(|_| Recorder::new(client.clone(), reporter.clone()))
            .collect();
        Recorders { shards }
    }

    /// Publishes `ev` about `reference`, as [`Recorder::publish`] does.
    pub async fn publish(&self, ev: &Event, reference: &ObjectReference) -> kube::Result<()> {
        self.shards[shard(reference)].publish(ev, reference).await
    }
}

/// The shard of an object: from its namespace and name, which stay the same across its
/// versions (the reference also carries the resourceVersion).
fn shard(reference: &ObjectReference) -> usize {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    reference.namespace.hash(&mut h);
    reference.name.hash(&mut h);
    (h.finish() % SHARDS as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(ns: &str, name: &str, rv: &str) -> ObjectReference {
        ObjectReference {
            namespace: Some(ns.into()),
            name: Some(name.into()),
            resource_version: Some(rv.into()),
            ..Default::default()
        }
    }

    #[test]
    fn an_object_keeps_its_shard_across_versions() {
        assert_eq!(
            shard(&reference("a", "mmi", "1")),
            shard(&reference("a", "mmi", "2"))
        );
    }

    #[test]
    fn objects_spread_over_the_shards() {
        let used: std::collections::BTreeSet<usize> = (0..1000)
            .map(|i| {
                shard(&reference(
                    &format!("ns-{}", i % 100),
                    &format!("mmi-{i}"),
                    "1",
                ))
            })
            .collect();
        assert!(used.len() > SHARDS / 2, "{} shards used", used.len());
    }
}
