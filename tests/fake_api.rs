//! Tests of the in-process fake API server (`tests/common/fake_api.rs`) through real kube
//! clients, so that other tests can rely on it behaving like an API server where it does,
//! and know where it does not (no conflicts between field managers, no managedFields, no
//! garbage collection: the real control plane's, tested in tests/kube_real.rs), and on its
//! faults (injected failures, dropped watches, latency).

#[path = "common/fake_api.rs"]
mod fake_api;

use std::time::Duration;

use fake_api::FakeApi;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch,
    PatchParams, PostParams,
};
use kube::core::PartialObjectMeta;
use kube::runtime::watcher;
use kube::{CustomResource, ResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, JsonSchema, PartialEq)]
#[kube(
    group = "example.com",
    version = "v1",
    kind = "Widget",
    namespaced,
    status = "WidgetStatus"
)]
struct WidgetSpec {
    size: u32,
}

#[derive(Deserialize, Serialize, Clone, Debug, JsonSchema, PartialEq, Default)]
struct WidgetStatus {
    ready: bool,
}

fn api_code(err: kube::Error) -> (u16, String, String) {
    match err {
        kube::Error::Api(s) => (s.code, s.reason.clone(), s.message.clone()),
        other => panic!("expected kube::Error::Api, got {other:?}"),
    }
}

fn secret(name: &str, labels: Value) -> Secret {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "labels": labels},
        "stringData": {"k": "v"},
    }))
    .unwrap()
}

fn deployment(manager_env: Value) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "app", "image": "nginx", "env": manager_env}]},
            },
        },
    })
}

fn env_of(d: &Deployment) -> Vec<(String, Option<String>)> {
    d.spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0]
        .env
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|e| (e.name, e.value))
        .collect()
}

#[tokio::test]
async fn get_missing_is_a_404_status() {
    let fake = FakeApi::new();
    let secrets: Api<Secret> = Api::namespaced(fake.client(), "default");
    let (code, reason, message) = api_code(secrets.get("x").await.unwrap_err());
    assert_eq!(code, 404);
    assert_eq!(reason, "NotFound");
    assert_eq!(message, "secrets \"x\" not found");
    assert_eq!(secrets.get_opt("x").await.unwrap(), None);
    let r = &fake.requests()[0];
    assert_eq!(
        (r.verb.as_str(), r.resource.as_str(), r.name.as_deref()),
        ("get", "secrets", Some("x"))
    );
    assert_eq!(r.namespace.as_deref(), Some("default"));
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn create_get_and_list_and_selectors_refused() {
    let fake = FakeApi::new();
    let secrets: Api<Secret> = Api::namespaced(fake.client(), "default");
    let pp = PostParams::default();
    let a = secrets
        .create(&pp, &secret("a", json!({"app": "a", "tier": "x"})))
        .await
        .unwrap();
    secrets
        .create(&pp, &secret("b", json!({"app": "b"})))
        .await
        .unwrap();
    secrets.create(&pp, &secret("c", json!({}))).await.unwrap();
    // stringData was folded into data, system metadata filled in.
    assert_eq!(a.data.unwrap()["k"].0, b"v");
    assert!(a.metadata.uid.is_some() && a.metadata.creation_timestamp.is_some());
    // Secrets have no generation on a real server (Deployments and custom resources do)
    assert_eq!(a.metadata.generation, None);

    let (code, reason, _) = api_code(
        secrets
            .create(&pp, &secret("a", json!({})))
            .await
            .unwrap_err(),
    );
    assert_eq!((code, reason.as_str()), (409, "AlreadyExists"));

    let names = |l: kube::core::ObjectList<Secret>| -> Vec<String> {
        l.items.iter().map(|s| s.name_any()).collect()
    };
    // the operator lists without selectors: the fake refuses them rather than guess
    assert_eq!(
        names(secrets.list(&ListParams::default()).await.unwrap()),
        ["a", "b", "c"]
    );
    for q in [
        ListParams::default().labels("app=a"),
        ListParams::default().fields("metadata.name=b"),
    ] {
        let (code, _, message) = api_code(secrets.list(&q).await.unwrap_err());
        assert_eq!(code, 400);
        assert!(message.contains("not supported"), "{message}");
    }

    // Other namespaces and the all-namespaces path.
    let other: Api<Secret> = Api::namespaced(fake.client(), "other");
    other.create(&pp, &secret("d", json!({}))).await.unwrap();
    assert_eq!(
        secrets
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        3
    );
    let all: Api<Secret> = Api::all(fake.client());
    assert_eq!(
        all.list(&ListParams::default()).await.unwrap().items.len(),
        4
    );
    assert_eq!(fake.list("v1", "Secret", "other").len(), 1);

    // generateName: the operator sends none, the fake refuses it rather than guess
    let generated: Secret = serde_json::from_value(json!({
        "metadata": {"generateName": "gen-"}, "data": {}
    }))
    .unwrap();
    let (code, _, message) = api_code(secrets.create(&pp, &generated).await.unwrap_err());
    assert_eq!(code, 422);
    assert!(message.contains("generateName"), "{message}");
    assert_eq!(fake.writes(), 6);
}

#[tokio::test]
async fn merge_and_json_patches_and_optimistic_concurrency() {
    let fake = FakeApi::new();
    let secrets: Api<Secret> = Api::namespaced(fake.client(), "default");
    let created = secrets
        .create(&PostParams::default(), &secret("s", json!({"a": "1"})))
        .await
        .unwrap();
    let rv0 = created.resource_version().unwrap();

    let pp = PatchParams::default();
    let patched = secrets
        .patch(
            "s",
            &pp,
            &Patch::Merge(
                json!({"metadata": {"labels": {"a": null, "b": "2"}}, "data": {"x": "eA=="}}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(patched.labels().get("b").map(String::as_str), Some("2"));
    assert!(!patched.labels().contains_key("a"));
    assert_eq!(patched.data.as_ref().unwrap()["x"].0, b"x");
    assert_ne!(patched.resource_version().unwrap(), rv0);
    let r = fake.requests().pop().unwrap();
    assert_eq!(r.patch_type.as_deref(), Some("merge"));
    assert_eq!(r.field_manager, None);

    // JSON patch with a failing test → 422, nothing changed.
    let jp = Patch::<()>::Json(
        serde_json::from_value(json!([
            {"op": "test", "path": "/metadata/labels/b", "value": "nope"},
            {"op": "remove", "path": "/metadata/labels/b"},
        ]))
        .unwrap(),
    );
    let (code, _, _) = api_code(secrets.patch("s", &pp, &jp).await.unwrap_err());
    assert_eq!(code, 422);
    let jp = Patch::<()>::Json(
        serde_json::from_value(json!([
            {"op": "test", "path": "/metadata/labels/b", "value": "2"},
            {"op": "remove", "path": "/metadata/labels/b"},
            {"op": "add", "path": "/metadata/finalizers", "value": ["f1"]},
        ]))
        .unwrap(),
    );
    let patched = secrets.patch("s", &pp, &jp).await.unwrap();
    assert!(patched.labels().is_empty());
    assert_eq!(patched.finalizers(), ["f1"]);

    // kube's finalizer helper: `test` of a missing member against null passes
    let jp = Patch::<()>::Json(
        serde_json::from_value(json!([
            {"op": "test", "path": "/metadata/annotations", "value": null},
            {"op": "add", "path": "/metadata/annotations", "value": {"x": "y"}},
        ]))
        .unwrap(),
    );
    let patched = secrets.patch("s", &pp, &jp).await.unwrap();
    assert_eq!(patched.annotations()["x"], "y");

    // A merge patch carrying a stale resourceVersion conflicts.
    let stale = Patch::Merge(json!({"metadata": {"resourceVersion": rv0}, "data": null}));
    let (code, reason, _) = api_code(secrets.patch("s", &pp, &stale).await.unwrap_err());
    assert_eq!((code, reason.as_str()), (409, "Conflict"));

    // What the operator never sends is refused, not half-served.
    let strategic = Patch::Strategic(json!({"metadata": {"finalizers": ["f2"]}}));
    let (code, _, _) = api_code(secrets.patch("s", &pp, &strategic).await.unwrap_err());
    assert_eq!(code, 415);
    let (code, _, _) = api_code(
        secrets
            .replace("s", &PostParams::default(), &created)
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 405);
}

#[tokio::test]
async fn server_side_apply_creates_and_identical_reapply_is_a_no_op() {
    let fake = FakeApi::new();
    let deploys: Api<Deployment> = Api::namespaced(fake.client(), "default");
    let pp = PatchParams::apply("operator");
    let desired = deployment(json!([{"name": "X", "value": "1"}]));
    let first = deploys
        .patch("web", &pp, &Patch::Apply(&desired))
        .await
        .unwrap();
    let r = fake.requests().pop().unwrap();
    assert!(r.created_by_apply);
    assert_eq!(r.patch_type.as_deref(), Some("apply"));
    assert_eq!(r.field_manager.as_deref(), Some("operator"));
    assert_eq!(r.status, 201);
    assert_eq!(first.metadata.generation, Some(1));

    // the cluster's resourceVersion, as a list shows it
    let cluster_rv = || async {
        let list = deploys.list(&ListParams::default()).await.unwrap();
        list.metadata.resource_version
    };
    let rv = cluster_rv().await;
    let second = deploys
        .patch("web", &pp, &Patch::Apply(&desired))
        .await
        .unwrap();
    assert!(!fake.requests().pop().unwrap().created_by_apply);
    assert_eq!(second.resource_version(), first.resource_version());
    assert_eq!(cluster_rv().await, rv);
    // no field ownership is shown: the operator learns nothing from managedFields here
    assert_eq!(second.metadata.managed_fields, None);

    // A changed spec bumps generation.
    let third = deploys
        .patch(
            "web",
            &pp,
            &Patch::Apply(&deployment(json!([{"name": "X", "value": "2"}]))),
        )
        .await
        .unwrap();
    assert_eq!(third.metadata.generation, Some(2));
    assert_eq!(fake.writes(), 3);
}

#[tokio::test]
async fn server_side_apply_never_conflicts_unless_injected_and_a_later_writer_keeps_its_value() {
    let fake = FakeApi::new();
    let deploys: Api<Deployment> = Api::namespaced(fake.client(), "default");
    // Someone created it with kubectl (client-side) with X=1.
    let mut created: Deployment =
        serde_json::from_value(deployment(json!([{"name": "X", "value": "1"}]))).unwrap();
    created.metadata.namespace = None;
    deploys
        .create(&PostParams::default(), &created)
        .await
        .unwrap();

    // A real API server refuses a different value without force (409, tests/kube_real.rs
    // shows it); the fake takes it, as if forced ...
    let op = PatchParams::apply("operator");
    let other_value = deployment(json!([{"name": "X", "value": "2"}, {"name": "Y", "value": "1"}]));
    let applied = deploys
        .patch("web", &op, &Patch::Apply(&other_value))
        .await
        .unwrap();
    assert_eq!(
        env_of(&applied),
        [
            ("X".into(), Some("2".into())),
            ("Y".into(), Some("1".into()))
        ]
    );
    assert!(!fake.requests().pop().unwrap().force);
    // ... and a conflict is a fault injected on demand.
    fake.set_fail_next("patch", "deployments", 409);
    let (code, reason, message) = api_code(
        deploys
            .patch("web", &op, &Patch::Apply(&other_value))
            .await
            .unwrap_err(),
    );
    assert_eq!((code, reason.as_str()), (409, "Conflict"));
    assert!(message.starts_with("injected failure"), "{message}");

    // A later kubectl edit (a JSON patch) changes X: when the operator stops applying X
    // and Y, the edited X stays (its editor's now), Y (still the operator's) goes.
    deploys
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::<()>::Json(
                serde_json::from_value(json!([{"op": "replace",
                    "path": "/spec/template/spec/containers/0/env/0/value", "value": "3"}]))
                .unwrap(),
            ),
        )
        .await
        .unwrap();
    let dropped = deploys
        .patch("web", &op, &Patch::Apply(deployment(json!([]))))
        .await
        .unwrap();
    assert_eq!(env_of(&dropped), [("X".into(), Some("3".into()))]);
}

/// What kube-apiserver 1.20 does (seen with kubectl): a field its creator set and a field
/// manager then applied with the same value stays when the manager stops applying it (the
/// creator owns it too); what the manager alone set goes.
#[tokio::test]
async fn a_field_the_creator_set_too_stays_when_the_manager_drops_it() {
    let fake = FakeApi::new();
    let deploys: Api<Deployment> = Api::namespaced(fake.client(), "default");
    let mut created: Deployment =
        serde_json::from_value(deployment(json!([{"name": "X", "value": "1"}]))).unwrap();
    created.metadata.namespace = None;
    deploys
        .create(&PostParams::default(), &created)
        .await
        .unwrap();
    let op = PatchParams::apply("op");
    let env = json!([{"name": "X", "value": "1"}, {"name": "Y", "value": "1"}]);
    let applied = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"template": {"spec": {"containers": [{"name": "app", "env": env}]}}}});
    deploys
        .patch("web", &op, &Patch::Apply(&applied))
        .await
        .unwrap();
    let nothing =
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}});
    let dropped = deploys
        .patch("web", &op, &Patch::Apply(&nothing))
        .await
        .unwrap();
    assert_eq!(env_of(&dropped), [("X".into(), Some("1".into()))]);
}

#[tokio::test]
async fn server_side_apply_removes_fields_the_manager_stopped_applying() {
    let fake = FakeApi::new();
    let deploys: Api<Deployment> = Api::namespaced(fake.client(), "default");
    let op = PatchParams::apply("operator");
    let mut first = deployment(json!([{"name": "X", "value": "1"}, {"name": "Y", "value": "1"}]));
    first["metadata"]["labels"] = json!({"a": "1", "b": "1"});
    deploys
        .patch("web", &op, &Patch::Apply(&first))
        .await
        .unwrap();

    // Another manager adds its own env entry and label.
    let mut theirs = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "labels": {"c": "1"}},
        "spec": {"template": {"spec": {"containers": [
            {"name": "app", "env": [{"name": "Z", "value": "1"}]}
        ]}}},
    });
    deploys
        .patch(
            "web",
            &PatchParams::apply("sidecar"),
            &Patch::Apply(&theirs),
        )
        .await
        .unwrap();

    // The operator stops applying Y and label b.
    let mut second = deployment(json!([{"name": "X", "value": "1"}]));
    second["metadata"]["labels"] = json!({"a": "1"});
    let after = deploys
        .patch("web", &op, &Patch::Apply(&second))
        .await
        .unwrap();
    assert_eq!(
        env_of(&after),
        [
            ("X".into(), Some("1".into())),
            ("Z".into(), Some("1".into()))
        ]
    );
    let labels: Vec<&String> = after.labels().keys().collect();
    assert_eq!(labels, ["a", "c"]);

    // The sidecar stops applying everything but the container name: Z goes, the container
    // (owned by the operator too) stays.
    theirs["metadata"]["labels"] = json!({});
    theirs["spec"]["template"]["spec"]["containers"] = json!([{"name": "app"}]);
    let after = deploys
        .patch(
            "web",
            &PatchParams::apply("sidecar"),
            &Patch::Apply(&theirs),
        )
        .await
        .unwrap();
    assert_eq!(env_of(&after), [("X".into(), Some("1".into()))]);
    assert!(!after.labels().contains_key("c"));
    let containers = &after.spec.unwrap().template.spec.unwrap().containers;
    assert_eq!(containers[0].image.as_deref(), Some("nginx"));
}

#[tokio::test]
async fn status_subresource_is_isolated() {
    let fake = FakeApi::new();
    fake.add_status_subresource("widgets");
    fake.register_kind("example.com/v1", "Widget", "widgets", true);
    let widgets: Api<Widget> = Api::namespaced(fake.client(), "default");
    let mut w = Widget::new("w", WidgetSpec { size: 1 });
    w.status = Some(WidgetStatus { ready: true });
    let created = widgets.create(&PostParams::default(), &w).await.unwrap();
    assert_eq!(created.status, None, "create drops status");

    let with_status = widgets
        .patch_status(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"size": 5}, "status": {"ready": true}})),
        )
        .await
        .unwrap();
    assert_eq!(with_status.status, Some(WidgetStatus { ready: true }));
    assert_eq!(with_status.spec.size, 1, "status writes ignore spec");
    assert_eq!(with_status.metadata.generation, Some(1));
    let r = fake.requests().pop().unwrap();
    assert_eq!(r.subresource.as_deref(), Some("status"));

    let spec_change = widgets
        .patch(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"size": 2}, "status": {"ready": false}})),
        )
        .await
        .unwrap();
    assert_eq!(spec_change.spec.size, 2);
    assert_eq!(spec_change.status, Some(WidgetStatus { ready: true }));
    assert_eq!(spec_change.metadata.generation, Some(2));

    // SSA on the status subresource changes only status (and never conflicts here).
    let status_apply = Patch::Apply(json!({
        "apiVersion": "example.com/v1", "kind": "Widget",
        "metadata": {"name": "w"}, "spec": {"size": 9}, "status": {"ready": false},
    }));
    let applied = widgets
        .patch_status("w", &PatchParams::apply("operator"), &status_apply)
        .await
        .unwrap();
    assert_eq!(applied.spec.size, 2);
    assert_eq!(applied.status, Some(WidgetStatus { ready: false }));
    assert_eq!(applied.metadata.generation, Some(2));

    // Dynamic access to the same objects.
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("example.com", "v1", "Widget"),
        "widgets",
    );
    let dynamic: Api<DynamicObject> = Api::namespaced_with(fake.client(), "default", &ar);
    let list = dynamic.list(&ListParams::default()).await.unwrap();
    assert_eq!(list.items.len(), 1);
    assert_eq!(list.items[0].data["spec"]["size"], 2);
    assert_eq!(
        fake.get("example.com/v1", "Widget", "default", "w")
            .unwrap()["status"]["ready"],
        false
    );

    // A resource without a status subresource refuses /status.
    let secrets: Api<Secret> = Api::namespaced(fake.client(), "default");
    fake.insert(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}}));
    let (code, _, _) = api_code(
        secrets
            .patch_status("s", &PatchParams::default(), &Patch::Merge(json!({})))
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 404);
}

#[tokio::test]
async fn deletion_honours_finalizers_and_collects_no_dependents() {
    let fake = FakeApi::new();
    let owner = fake.insert(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "owner", "namespace": "default", "finalizers": ["example.com/f"]},
    }));
    let uid = owner["metadata"]["uid"].as_str().unwrap().to_string();
    fake.insert(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "child", "namespace": "default", "ownerReferences": [{
            "apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": uid,
        }]},
    }));
    let cms: Api<ConfigMap> = Api::namespaced(fake.client(), "default");
    let secrets: Api<Secret> = Api::namespaced(fake.client(), "default");

    let deleted = cms.delete("owner", &DeleteParams::default()).await.unwrap();
    let marked = deleted.left().expect("object while finalizers remain");
    assert!(marked.metadata.deletion_timestamp.is_some());
    assert!(cms.get("owner").await.is_ok());
    assert!(secrets.get("child").await.is_ok(), "owner still exists");

    // Removing the finalizer (as kube's finalizer helper does) removes the object; its
    // dependent stays (a real control plane's garbage collector removes it).
    let jp = Patch::<()>::Json(
        serde_json::from_value(json!([
            {"op": "test", "path": "/metadata/finalizers", "value": ["example.com/f"]},
            {"op": "replace", "path": "/metadata/finalizers", "value": []},
        ]))
        .unwrap(),
    );
    cms.patch("owner", &PatchParams::default(), &jp)
        .await
        .unwrap();
    assert_eq!(cms.get_opt("owner").await.unwrap(), None);
    assert!(secrets.get_opt("child").await.unwrap().is_some());

    // Plain delete of an object without finalizers; deleting again is a 404.
    fake.insert(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "plain"}}));
    secrets
        .delete("plain", &DeleteParams::default())
        .await
        .unwrap();
    let (code, _, _) = api_code(
        secrets
            .delete("plain", &DeleteParams::default())
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 404);
    // delete, patch, delete, refused delete
    assert_eq!(fake.writes(), 4);
}

#[tokio::test]
async fn watcher_sees_objects_created_after_start() {
    let fake = FakeApi::new();
    fake.insert(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "old"}}));
    let secrets: Api<Secret> = Api::namespaced(fake.client(), "default");
    let stream = watcher(secrets.clone(), watcher::Config::default());
    let mut stream = std::pin::pin!(stream);
    let mut initial = Vec::new();
    let seen = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(ev) = stream.try_next().await.unwrap() {
            match ev {
                watcher::Event::InitApply(s) => initial.push(s.name_any()),
                watcher::Event::InitDone => {
                    secrets
                        .create(&PostParams::default(), &secret("new", json!({"x": "y"})))
                        .await
                        .unwrap();
                }
                watcher::Event::Apply(s) => return s,
                _ => {}
            }
        }
        panic!("watch stream ended")
    })
    .await
    .expect("event within 5s");
    assert_eq!(initial, ["old"]);
    assert_eq!(seen.name_any(), "new");
    assert_eq!(seen.data.unwrap()["k"].0, b"v");
    // kube yields InitDone before it opens the watch, so the create usually lands between the
    // LIST and the WATCH and is replayed from the list's resourceVersion.
    let mut verbs: Vec<String> = fake.requests().iter().map(|r| r.verb.clone()).collect();
    verbs.sort();
    assert_eq!(verbs, ["create", "list", "watch"]);
}

#[tokio::test]
async fn metadata_watcher_gets_partial_objects() {
    let fake = FakeApi::new();
    let secrets: Api<Secret> = Api::namespaced(fake.client(), "default");
    // kube 5's replacement for `metadata_watcher`: an `Api<PartialObjectMeta<K>>` makes
    // metadata-only requests.
    let meta_api: Api<PartialObjectMeta<Secret>> = Api::namespaced(fake.client(), "default");
    let stream = watcher(meta_api, watcher::Config::default());
    let mut stream = std::pin::pin!(stream);
    let seen = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(ev) = stream.try_next().await.unwrap() {
            match ev {
                watcher::Event::InitDone => {
                    let pp = PostParams::default();
                    secrets
                        .create(&pp, &secret("wanted", json!({"app": "x"})))
                        .await
                        .unwrap();
                }
                watcher::Event::Apply(m) => return m,
                _ => {}
            }
        }
        panic!("watch stream ended")
    })
    .await
    .expect("event within 5s");
    assert_eq!(seen.name_any(), "wanted");
    let types = seen.types.clone().unwrap();
    assert_eq!(
        (types.api_version.as_str(), types.kind.as_str()),
        ("meta.k8s.io/v1", "PartialObjectMetadata")
    );
    let reads: Vec<(String, bool)> = fake
        .requests()
        .iter()
        .filter(|r| !r.is_write())
        .map(|r| (r.verb.clone(), r.metadata_only))
        .collect();
    assert_eq!(reads, [("list".into(), true), ("watch".into(), true)]);

    // The wire format carries no data: a raw metadata GET shows only metadata.
    let meta = secrets.get_metadata("wanted").await.unwrap();
    assert_eq!(meta.name_any(), "wanted");
}

#[tokio::test]
async fn watch_resumes_from_resource_version_and_times_out() {
    let fake = FakeApi::new();
    let secrets: Api<Secret> = Api::namespaced(fake.client(), "default");
    let list = secrets.list(&ListParams::default()).await.unwrap();
    let rv = list.metadata.resource_version.unwrap();
    fake.insert(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "a", "labels": {"l": "1"}}}));
    fake.update(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "a", "labels": {"l": "2"}}}));
    fake.delete("v1", "Secret", "default", "a");
    let wp = kube::api::WatchParams::default().timeout(1);
    let events: Vec<_> = tokio::time::timeout(Duration::from_secs(5), async {
        secrets
            .watch(&wp, &rv)
            .await
            .unwrap()
            .map(|e| match e.unwrap() {
                kube::api::WatchEvent::Added(s) => format!("ADDED {}", s.name_any()),
                kube::api::WatchEvent::Modified(s) => format!("MODIFIED {}", s.name_any()),
                kube::api::WatchEvent::Deleted(s) => format!("DELETED {}", s.name_any()),
                other => format!("{other:?}"),
            })
            .collect()
            .await
    })
    .await
    .expect("stream ends after timeoutSeconds");
    assert_eq!(events, ["ADDED a", "MODIFIED a", "DELETED a"]);
}

#[tokio::test]
async fn injected_failures_apply_once() {
    let fake = FakeApi::new();
    let secrets: Api<Secret> = Api::namespaced(fake.client(), "default");
    fake.set_fail_next("create", "secrets", 500);
    let (code, reason, _) = api_code(
        secrets
            .create(&PostParams::default(), &secret("s", json!({})))
            .await
            .unwrap_err(),
    );
    assert_eq!((code, reason.as_str()), (500, "InternalError"));
    assert!(fake.get("v1", "Secret", "default", "s").is_none());
    secrets
        .create(&PostParams::default(), &secret("s", json!({})))
        .await
        .unwrap();
    fake.set_fail_next("*", "*", 429);
    assert_eq!(api_code(secrets.get("s").await.unwrap_err()).0, 429);
    assert!(secrets.get("s").await.is_ok());
    assert_eq!(fake.writes(), 2);
    fake.clear_requests();
    assert!(fake.requests().is_empty());
}

#[tokio::test]
#[allow(deprecated)]
async fn deprecated_metadata_watcher_and_raw_partial_objects() {
    let fake = FakeApi::new();
    fake.insert(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "s", "namespace": "default"}, "data": {"k": "dg=="},
    }));
    let secrets: Api<Secret> = Api::namespaced(fake.client(), "default");
    let stream = kube::runtime::metadata_watcher(secrets, watcher::Config::default());
    let mut stream = std::pin::pin!(stream);
    let first = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let watcher::Event::InitApply(m) = stream.try_next().await.unwrap().unwrap() {
                return m;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(first.name_any(), "s");
    assert!(fake.requests().iter().all(|r| r.metadata_only));

    // On the wire: PartialObjectMetadata(List) without `data`.
    let client = fake.client();
    let get = |uri: &str, accept: &str| {
        http::Request::get(uri)
            .header(http::header::ACCEPT, accept)
            .body(Vec::new())
            .unwrap()
    };
    let one: Value = serde_json::from_str(
        &client
            .request_text(get(
                "/api/v1/namespaces/default/secrets/s",
                "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1",
            ))
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(one["kind"], "PartialObjectMetadata");
    assert!(one.get("data").is_none());
    let list: Value = serde_json::from_str(
        &client
            .request_text(get(
                "/api/v1/secrets",
                "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1",
            ))
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(list["kind"], "PartialObjectMetadataList");
    assert_eq!(list["items"][0]["metadata"]["name"], "s");
    assert!(list["items"][0].get("data").is_none());
}

#[tokio::test]
async fn a_dropped_watch_is_watched_again_from_where_it_was() {
    let fake = FakeApi::new();
    let secrets: Api<Secret> = Api::namespaced(fake.client(), "default");
    let stream = watcher(secrets.clone(), watcher::Config::default());
    let mut stream = std::pin::pin!(stream);
    let mut seen = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(ev) = stream.try_next().await.unwrap() {
            match ev {
                watcher::Event::InitDone => {
                    fake.insert(
                        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "a"}}),
                    );
                }
                watcher::Event::Apply(s) if s.name_any() == "a" => {
                    seen.push("a");
                    // the stream is cut; what happens meanwhile arrives on the next watch
                    while fake.drop_watches() == 0 {
                        tokio::task::yield_now().await;
                    }
                    fake.insert(
                        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "b"}}),
                    );
                }
                watcher::Event::Apply(s) => {
                    seen.push("b");
                    assert_eq!(s.name_any(), "b");
                    return;
                }
                _ => {}
            }
        }
    })
    .await
    .expect("events within 5s");
    assert_eq!(seen, ["a", "b"]);
    let watches = fake.requests().iter().filter(|r| r.verb == "watch").count();
    let lists = fake.requests().iter().filter(|r| r.verb == "list").count();
    assert_eq!((lists, watches), (1, 2), "resumed, not listed again");
}

#[tokio::test]
async fn latency_delays_every_answer() {
    let fake = FakeApi::new();
    let secrets: Api<Secret> = Api::namespaced(fake.client(), "default");
    fake.set_latency(Duration::from_millis(300));
    let start = std::time::Instant::now();
    assert!(secrets.get_opt("x").await.unwrap().is_none());
    assert!(start.elapsed() >= Duration::from_millis(300));
    fake.set_latency(Duration::ZERO);
    let start = std::time::Instant::now();
    assert!(secrets.get_opt("x").await.unwrap().is_none());
    assert!(start.elapsed() < Duration::from_millis(300));
}

/// What kube-apiserver 1.20 answers a GitOps tool's apply that drops a container the
/// operator co-owns (tests/user_journey.rs): the container stays with the operator's env
/// but without an image, which is invalid.
#[tokio::test]
async fn a_deployment_left_without_an_image_is_refused() {
    let fake = FakeApi::new();
    let deploys: Api<Deployment> = Api::namespaced(fake.client(), "default");
    let mut two = deployment(json!([]));
    let sidecar = json!({"name": "sidecar", "image": "busybox"});
    let containers = two["spec"]["template"]["spec"]["containers"].as_array_mut();
    containers.unwrap().push(sidecar);
    let gitops = PatchParams::apply("gitops");
    deploys
        .patch("web", &gitops, &Patch::Apply(&two))
        .await
        .unwrap();
    let operator = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"template": {"spec": {"containers": [{"name": "sidecar", "env": [{"name": "X", "value": "1"}]}]}}}});
    deploys
        .patch(
            "web",
            &PatchParams::apply("operator"),
            &Patch::Apply(&operator),
        )
        .await
        .unwrap();
    let (code, reason, message) = api_code(
        deploys
            .patch("web", &gitops, &Patch::Apply(deployment(json!([]))))
            .await
            .unwrap_err(),
    );
    assert_eq!((code, reason.as_str()), (422, "Invalid"));
    assert!(
        message.ends_with("spec.template.spec.containers[1].image: Required value"),
        "{message}"
    );
    assert_eq!(
        deploys
            .get("web")
            .await
            .unwrap()
            .spec
            .unwrap()
            .template
            .spec
            .unwrap()
            .containers
            .len(),
        2
    );
}
