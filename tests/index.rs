//! The index from Secrets and Deployments to integrations gives the same answer as the
//! scan of every integration it replaced, after any sequence of adds, updates, deletions
//! and re-lists.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::apps::v1::Deployment;
use kube::ResourceExt;
use kube::runtime::watcher::Event;
use nocobase_mail_operator::api::MicrosoftMailIntegration;
use nocobase_mail_operator::controller::index::{Index, IndexFeed, OwnWrites};
use nocobase_mail_operator::inject;
use proptest::prelude::*;
use serde_json::{Value, json};

const NAMESPACES: &[&str] = &["a", "b", "c"];
const SECRETS: &[&str] = &["s0", "s1", "s2"];
const DEPLOYMENTS: &[&str] = &["d0", "d1", "d2"];
const KEYS: &[&str] = &["app", "tier"];
const VALUES: &[&str] = &["x", "y"];

/// The scan the controller did before the index: every integration, per Secret event.
fn scan_secret(
    all: &[MicrosoftMailIntegration],
    ns: &str,
    name: &str,
    managed_by: Option<&str>,
) -> BTreeSet<String> {
    all.iter()
        .filter(|m| {
            m.namespace().as_deref() == Some(ns)
                && (m.spec.client_secret_ref.name == name
                    || Some(m.name_any().as_str()) == managed_by
                    || m.spec
                        .nocobase
                        .as_ref()
                        .is_some_and(|nb| nb.api_key_secret_ref.name == name))
        })
        .map(|m| m.name_any())
        .collect()
}

/// The scan the controller did before the index, per Deployment event.
fn scan_deployment(
    all: &[MicrosoftMailIntegration],
    ns: &str,
    name: &str,
    labels: &BTreeMap<String, String>,
) -> BTreeSet<String> {
    let mut d = Deployment::default();
    d.metadata.name = Some(name.into());
    d.metadata.labels = Some(labels.clone());
    all.iter()
        .filter(|m| m.namespace().as_deref() == Some(ns))
        .filter(|m| {
            m.spec.targets.iter().any(|t| inject::selects(t, &d))
                || m.status
                    .iter()
                    .flat_map(|s| s.injected.iter())
                    .any(|i| i.deployment == name)
        })
        .map(|m| m.name_any())
        .collect()
}

fn pick(options: &'static [&'static str]) -> impl Strategy<Value = &'static str> {
    proptest::sample::select(options)
}

fn selector() -> impl Strategy<Value = Value> {
    let labels = proptest::collection::btree_map(pick(KEYS), pick(VALUES), 0..2);
    let expr = (
        pick(KEYS),
        pick(&["In", "NotIn", "Exists", "DoesNotExist"]),
        proptest::collection::vec(pick(VALUES), 1..3),
    )
        .prop_map(|(k, op, vs)| {
            if op == "In" || op == "NotIn" {
                json!({"key": k, "operator": op, "values": vs})
            } else {
                json!({"key": k, "operator": op})
            }
        });
    (labels, proptest::collection::vec(expr, 0..2))
        .prop_map(|(l, e)| json!({"matchLabels": l, "matchExpressions": e}))
}

fn target() -> impl Strategy<Value = Value> {
    prop_oneof![
        pick(DEPLOYMENTS).prop_map(|d| json!({"deploymentName": d})),
        selector().prop_map(|s| json!({"deploymentSelector": s})),
    ]
}

prop_compose! {
    fn integration()(
        ns in pick(NAMESPACES),
        name in pick(&["m0", "m1", "m2", "m3"]),
        secret in pick(SECRETS),
        api_key in proptest::option::of(pick(SECRETS)),
        targets in proptest::collection::vec(target(), 0..3),
        injected in proptest::collection::vec(pick(DEPLOYMENTS), 0..2),
    ) -> MicrosoftMailIntegration {
        let mut spec = json!({"tenantId": "t", "clientId": "c",
            "clientSecretRef": {"name": secret}, "targets": targets});
        if let Some(k) = api_key {
            spec["nocobase"] = json!({"url": "http://nocobase", "apiKeySecretRef": {"name": k}});
        }
        let injected: Vec<Value> = injected.iter().map(|d| json!({"deployment": d,
            "containers": ["nocobase"], "fingerprint": "f", "rollout": "OnChange"})).collect();
        serde_json::from_value(json!({"apiVersion": "nocobase-mail-operator.dev/v1alpha1",
            "kind": "MicrosoftMailIntegration", "metadata": {"name": name, "namespace": ns},
            "spec": spec, "status": {"injected": injected}})).unwrap()
    }
}

#[derive(Clone, Debug)]
enum Op {
    Apply(MicrosoftMailIntegration),
    Delete(MicrosoftMailIntegration),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => integration().prop_map(Op::Apply),
        1 => integration().prop_map(Op::Delete),
    ]
}

fn key(m: &MicrosoftMailIntegration) -> (String, String) {
    (m.namespace().unwrap(), m.name_any())
}

fn label_sets() -> Vec<BTreeMap<String, String>> {
    let mut out = vec![BTreeMap::new()];
    for k in KEYS {
        for v in VALUES {
            out.push(BTreeMap::from([(k.to_string(), v.to_string())]));
            out.push(BTreeMap::from([
                (k.to_string(), v.to_string()),
                ("tier".into(), "y".into()),
            ]));
        }
    }
    out
}

/// Every Secret and Deployment question, answered by the index and by the scan.
fn assert_same(index: &Index, all: &[MicrosoftMailIntegration]) {
    let names = |refs: Vec<kube::runtime::reflector::ObjectRef<MicrosoftMailIntegration>>| {
        let v: Vec<String> = refs.into_iter().map(|r| r.name).collect();
        let set: BTreeSet<String> = v.iter().cloned().collect();
        assert_eq!(v.len(), set.len(), "an integration is listed twice");
        set
    };
    for ns in NAMESPACES.iter().chain(&["elsewhere"]) {
        for s in SECRETS.iter().chain(&["m1-microsoft-credentials"]) {
            for managed_by in [None, Some("m0"), Some("m1"), Some("nobody")] {
                assert_eq!(
                    names(index.for_secret(ns, s, managed_by)),
                    scan_secret(all, ns, s, managed_by),
                    "Secret {ns}/{s} managed by {managed_by:?}"
                );
            }
        }
        for d in DEPLOYMENTS.iter().chain(&["other"]) {
            for labels in label_sets() {
                assert_eq!(
                    names(index.for_deployment(ns, d, &labels)),
                    scan_deployment(all, ns, d, &labels),
                    "Deployment {ns}/{d} with labels {labels:?}"
                );
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn the_index_answers_like_the_scan(ops in proptest::collection::vec(op(), 0..25)) {
        let mut model: BTreeMap<(String, String), MicrosoftMailIntegration> = BTreeMap::new();
        let mut feed = IndexFeed::default();
        for op in ops {
            match op {
                Op::Apply(m) => {
                    feed.feed(&Event::Apply(m.clone()));
                    model.insert(key(&m), m);
                }
                Op::Delete(m) => {
                    feed.feed(&Event::Delete(m.clone()));
                    model.remove(&key(&m));
                }
            }
            let all: Vec<_> = model.values().cloned().collect();
            assert_same(feed.index(), &all);
        }
        prop_assert_eq!(feed.index().len(), model.len());
    }

    #[test]
    fn a_relist_replaces_the_index(
        before in proptest::collection::vec(integration(), 0..10),
        after in proptest::collection::vec(integration(), 0..10),
    ) {
        let mut feed = IndexFeed::default();
        feed.feed(&Event::Init);
        before.iter().for_each(|m| feed.feed(&Event::InitApply(m.clone())));
        feed.feed(&Event::InitDone);
        // a watch gap: the re-list is built aside and answers only once complete
        feed.feed(&Event::Init);
        let mut model: BTreeMap<(String, String), MicrosoftMailIntegration> = BTreeMap::new();
        for m in &after {
            feed.feed(&Event::InitApply(m.clone()));
            model.insert(key(m), m.clone());
        }
        let mut old: BTreeMap<(String, String), MicrosoftMailIntegration> = BTreeMap::new();
        for m in &before {
            old.insert(key(m), m.clone());
        }
        if !old.is_empty() {
            // (an empty index is filled directly: there is nothing older to answer with)
            assert_same(feed.index(), &old.values().cloned().collect::<Vec<_>>());
        }
        feed.feed(&Event::InitDone);
        assert_same(feed.index(), &model.values().cloned().collect::<Vec<_>>());
    }
}

#[test]
fn own_writes_are_recognised_once_and_only_with_their_version() {
    let own = OwnWrites::default();
    own.record(OwnWrites::SECRET, "a", "m-microsoft-credentials", Some("7"));
    own.record(OwnWrites::DEPLOYMENT, "a", "nocobase", Some("8"));
    assert!(!own.is_echo(OwnWrites::SECRET, "a", "nocobase", Some("8")));
    assert!(!own.is_echo(OwnWrites::SECRET, "b", "m-microsoft-credentials", Some("7")));
    assert!(own.is_echo(OwnWrites::SECRET, "a", "m-microsoft-credentials", Some("7")));
    // the echo is consumed: the same version again is someone else's doing (a re-list)
    assert!(!own.is_echo(OwnWrites::SECRET, "a", "m-microsoft-credentials", Some("7")));
    // a later version than the one written is a change by someone else
    assert!(!own.is_echo(OwnWrites::DEPLOYMENT, "a", "nocobase", Some("9")));
    assert_eq!(own.pending(), 0);
}
