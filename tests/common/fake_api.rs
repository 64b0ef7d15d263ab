//! An in-process fake Kubernetes API server that plugs into [`kube::Client`].
//!
//! [`FakeApi`] is a `tower::Service` holding every object as `serde_json::Value`, keyed by
//! (API group, resource plural, namespace, name). Paths are parsed generically, so any
//! group/version/resource works; [`FakeApi::register_kind`] only teaches the helpers and the
//! `List` kinds about a CRD. It serves what the operator and kube-runtime send: GET, LIST and
//! WATCH (streamed, resumable from a resourceVersion, `timeoutSeconds`), POST, PATCH (merge
//! and JSON patches through the `json-patch` crate kube itself uses, and a
//! field-ownership-tracking server-side apply), DELETE (finalizers, owner-reference garbage
//! collection), the `/status` subresource and metadata-only (`PartialObjectMetadata`)
//! requests. Lists merge as their schema says (`x-kubernetes-list-type`): the built-in
//! types' list-map keys as Kubernetes publishes them, a stored CRD's from its own schema,
//! every other list atomic. PUT, strategic-merge patches, label and field selectors and
//! collection deletes are refused: the operator sends none. Every request is recorded.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;

/// Watch history kept for resuming watches; older resourceVersions get `410 Expired`.
const LOG_CAP: usize = 100_000;

const SYSTEM_META: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
];

// ---------------------------------------------------------------------------------------------
// Public types
// ---------------------------------------------------------------------------------------------

/// One request the fake served (or refused), in arrival order.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    /// "get" | "list" | "watch" | "create" | "patch" | "delete" (else "unsupported")
    pub verb: String,
    /// HTTP method, e.g. "PATCH".
    pub method: String,
    /// Request path without the query string.
    pub path: String,
    /// Raw query string ("" when absent).
    pub query: String,
    /// "" for the core group.
    pub api_group: String,
    pub api_version: String,
    /// Resource plural, e.g. "secrets".
    pub resource: String,
    pub subresource: Option<String>,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub field_manager: Option<String>,
    /// "apply" | "merge" | "json" for PATCH requests (else "unsupported").
    pub patch_type: Option<String>,
    /// `force=true` on an apply.
    pub force: bool,
    pub label_selector: Option<String>,
    pub field_selector: Option<String>,
    /// The Accept header asked for `PartialObjectMetadata(List)`.
    pub metadata_only: bool,
    /// A server-side apply that created the object (RBAC needs `create` for it).
    pub created_by_apply: bool,
    /// HTTP status code of the response.
    pub status: u16,
    /// Parsed request body, if any.
    pub body: Option<Value>,
}

impl RecordedRequest {
    pub fn is_write(&self) -> bool {
        matches!(self.verb.as_str(), "create" | "patch" | "delete")
    }
}

/// The fields one field manager owns on an object, rendered like the paths in Kubernetes'
/// conflict messages (`.spec.template.spec.containers[name="app"].env[name="X"].value`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldOwnership {
    pub manager: String,
    /// "Apply" or "Update".
    pub operation: String,
    /// "" or "status".
    pub subresource: String,
    pub fields: BTreeSet<String>,
}

impl FieldOwnership {
    pub fn owns(&self, path: &str) -> bool {
        self.fields.contains(path)
    }
}

/// Response body of the fake: a complete JSON document, or a never-ending watch stream.
pub struct FakeBody {
    inner: BodyInner,
}

enum BodyInner {
    Full(Option<Bytes>),
    Watch {
        initial: VecDeque<Bytes>,
        /// `None` once the stream must end after `initial` is drained.
        rx: Option<mpsc::UnboundedReceiver<Bytes>>,
        deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    },
}

impl FakeBody {
    fn full(bytes: Vec<u8>) -> Self {
        FakeBody {
            inner: BodyInner::Full(Some(Bytes::from(bytes))),
        }
    }
}

impl http_body::Body for FakeBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        match &mut self.get_mut().inner {
            BodyInner::Full(b) => Poll::Ready(b.take().map(|b| Ok(http_body::Frame::data(b)))),
            BodyInner::Watch {
                initial,
                rx,
                deadline,
            } => {
                if let Some(b) = initial.pop_front() {
                    return Poll::Ready(Some(Ok(http_body::Frame::data(b))));
                }
                if let Some(d) = deadline
                    && d.as_mut().poll(cx).is_ready()
                {
                    *rx = None;
                    return Poll::Ready(None);
                }
                let Some(r) = rx else {
                    return Poll::Ready(None);
                };
                match r.poll_recv(cx) {
                    Poll::Ready(Some(b)) => Poll::Ready(Some(Ok(http_body::Frame::data(b)))),
                    Poll::Ready(None) => Poll::Ready(None),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.inner, BodyInner::Full(None))
    }
}

/// The fake API server. Cheap to clone; all clones share the same state.
#[derive(Clone)]
pub struct FakeApi {
    state: Arc<Mutex<State>>,
}

impl Default for FakeApi {
    fn default() -> Self {
        Self::new()
    }
}

impl tower::Service<http::Request<kube::client::Body>> for FakeApi {
    type Response = http::Response<FakeBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<kube::client::Body>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let bytes = body.collect_bytes().await.unwrap_or_default();
            Ok(this.handle(&parts, &bytes))
        })
    }
}

impl FakeApi {
    /// An empty cluster that knows the common built-in kinds. Built-in resources that have a
    /// status subresource in a real cluster (deployments, statefulsets, pods, ...) are
    /// registered as such.
    pub fn new() -> Self {
        let mut kinds = Vec::new();
        for (av, kind, plural, namespaced) in [
            ("v1", "Secret", "secrets", true),
            ("v1", "ConfigMap", "configmaps", true),
            ("v1", "Pod", "pods", true),
            ("v1", "Service", "services", true),
            ("v1", "ServiceAccount", "serviceaccounts", true),
            ("v1", "Event", "events", true),
            ("v1", "Namespace", "namespaces", false),
            ("apps/v1", "Deployment", "deployments", true),
            ("apps/v1", "StatefulSet", "statefulsets", true),
            ("apps/v1", "ReplicaSet", "replicasets", true),
            ("apps/v1", "DaemonSet", "daemonsets", true),
            ("batch/v1", "Job", "jobs", true),
            ("batch/v1", "CronJob", "cronjobs", true),
            ("events.k8s.io/v1", "Event", "events", true),
            ("coordination.k8s.io/v1", "Lease", "leases", true),
            (
                "apiextensions.k8s.io/v1",
                "CustomResourceDefinition",
                "customresourcedefinitions",
                false,
            ),
        ] {
            kinds.push(KindInfo::new(av, kind, plural, namespaced));
        }
        let status_sub = [
            "deployments",
            "statefulsets",
            "replicasets",
            "daemonsets",
            "pods",
            "services",
            "jobs",
            "cronjobs",
            "namespaces",
            "customresourcedefinitions",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        FakeApi {
            state: Arc::new(Mutex::new(State {
                rv: 1,
                counter: 0,
                kinds,
                status_sub,
                store: BTreeMap::new(),
                watchers: Vec::new(),
                log: VecDeque::new(),
                log_floor: 0,
                requests: Vec::new(),
                fail_next: Vec::new(),
            })),
        }
    }

    /// A `kube::Client` talking to this fake (default namespace "default"). Must be called
    /// inside a tokio runtime (kube's `Client::new` spawns its buffer worker).
    pub fn client(&self) -> kube::Client {
        kube::Client::new(self.clone(), "default")
    }

    /// Builder form of [`FakeApi::add_status_subresource`].
    pub fn with_status_subresource(self, resource_plural: &str) -> Self {
        self.add_status_subresource(resource_plural);
        self
    }

    /// Gives `resource_plural` (any group) a status subresource: `/status` writes change only
    /// `.status`, every other write keeps `.status` as it was (and creates drop it).
    pub fn add_status_subresource(&self, resource_plural: &str) {
        self.lock().status_sub.insert(resource_plural.to_string());
    }

    /// Teaches the helpers (`insert`, `get`, ...) and `List` kinds about a kind (CRDs).
    pub fn register_kind(&self, api_version: &str, kind: &str, plural: &str, namespaced: bool) {
        let mut st = self.lock();
        let info = KindInfo::new(api_version, kind, plural, namespaced);
        st.kinds
            .retain(|k| !(k.group == info.group && (k.kind == info.kind || k.plural == plural)));
        st.kinds.push(info);
    }

    /// Stores an object as if it existed before the test (upsert, not recorded as a request,
    /// `.status` kept). Its fields are owned by the pseudo-manager "before-first-apply".
    /// A namespaced object without `metadata.namespace` goes to "default". Returns the
    /// stored object (with uid, resourceVersion, ...).
    pub fn insert(&self, obj: Value) -> Value {
        let mut st = self.lock();
        let (gr, ns, name) = st.locate(&obj);
        st.write_helper(&gr, &ns, &name, obj, "before-first-apply", None)
    }

    /// A user ("kubectl") replacing the object (status kept for resources with a status
    /// subresource). Not recorded as a request. Panics if the object does not exist.
    pub fn update(&self, obj: Value) -> Value {
        let mut st = self.lock();
        let (gr, ns, name) = st.locate(&obj);
        assert!(
            st.entry(&gr, &ns, &name).is_some(),
            "FakeApi::update: {}/{ns}/{name} does not exist",
            gr.1
        );
        st.write_helper(&gr, &ns, &name, obj, "kubectl", Some(""))
    }

    /// Like [`FakeApi::update`] but through the status subresource (only `.status` changes).
    pub fn update_status(&self, obj: Value) -> Value {
        let mut st = self.lock();
        let (gr, ns, name) = st.locate(&obj);
        assert!(
            st.entry(&gr, &ns, &name).is_some(),
            "FakeApi::update_status: {}/{ns}/{name} does not exist",
            gr.1
        );
        st.write_helper(&gr, &ns, &name, obj, "kubectl", Some("status"))
    }

    /// The stored object; `ns` is "" for cluster-scoped kinds.
    pub fn get(&self, api_version: &str, kind: &str, ns: &str, name: &str) -> Option<Value> {
        let st = self.lock();
        let (gr, _) = st.resolve(api_version, kind);
        st.entry(&gr, ns, name).map(|e| e.obj.clone())
    }

    /// All objects of a kind in `ns` ("" = all namespaces), sorted by namespace and name.
    pub fn list(&self, api_version: &str, kind: &str, ns: &str) -> Vec<Value> {
        let st = self.lock();
        let (gr, _) = st.resolve(api_version, kind);
        st.store
            .get(&gr)
            .map(|m| {
                m.iter()
                    .filter(|((n, _), _)| ns.is_empty() || n == ns)
                    .map(|(_, e)| e.obj.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Deletes like the API would (finalizers → deletionTimestamp, otherwise removal plus
    /// owner-reference garbage collection). Returns the object as deleted/marked, or `None`
    /// if it did not exist. Not recorded as a request.
    pub fn delete(&self, api_version: &str, kind: &str, ns: &str, name: &str) -> Option<Value> {
        let mut st = self.lock();
        let (gr, _) = st.resolve(api_version, kind);
        st.delete_obj(&gr, ns, name, false)
    }

    /// Field ownership of an object, one entry per (manager, operation, subresource).
    pub fn managed_fields(
        &self,
        api_version: &str,
        kind: &str,
        ns: &str,
        name: &str,
    ) -> Vec<FieldOwnership> {
        let st = self.lock();
        let (gr, _) = st.resolve(api_version, kind);
        st.entry(&gr, ns, name)
            .map(|e| {
                e.managers
                    .iter()
                    .map(|(k, set)| FieldOwnership {
                        manager: k.manager.clone(),
                        operation: k.operation.to_string(),
                        subresource: k.subresource.clone(),
                        fields: set.iter().map(|p| path_string(p)).collect(),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every request served so far (oldest first).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.lock().requests.clone()
    }

    pub fn clear_requests(&self) {
        self.lock().requests.clear();
    }

    /// Number of create/update/patch/delete requests received (refused ones included).
    pub fn writes(&self) -> usize {
        self.lock().requests.iter().filter(|r| r.is_write()).count()
    }

    /// The next request with this verb ("get", "list", "watch", "create", "update", "patch",
    /// "delete", or "*") on this resource plural (or "*") fails with `status_code` and a
    /// matching `Status` body, without touching the state. Queued injections apply in order.
    pub fn set_fail_next(&self, verb: &str, resource: &str, status_code: u16) {
        self.lock()
            .fail_next
            .push((verb.to_string(), resource.to_string(), status_code));
    }

    /// The current (global) resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.lock().rv
    }

    /// Number of open watch streams.
    pub fn watch_count(&self) -> usize {
        let mut st = self.lock();
        st.watchers.retain(|w| !w.tx.is_closed());
        st.watchers.len()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn handle(&self, parts: &http::request::Parts, body: &[u8]) -> http::Response<FakeBody> {
        let path = parts.uri.path().to_string();
        let raw_query = parts.uri.query().unwrap_or("").to_string();
        let query: HashMap<String, String> = url::form_urlencoded::parse(raw_query.as_bytes())
            .into_owned()
            .collect();
        let header = |h: http::header::HeaderName| {
            parts
                .headers
                .get(h)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        };
        let accept = header(http::header::ACCEPT);
        let content_type = header(http::header::CONTENT_TYPE);
        let metadata_only = accept.contains("as=PartialObjectMetadata");

        let Some(target) = parse_path(&path) else {
            return error_response(&ApiErr::new(
                404,
                "NotFound",
                "the server could not find the requested resource".into(),
            ));
        };
        let is_watch = matches!(query.get("watch").map(String::as_str), Some("true" | "1"));
        let method = parts.method.as_str().to_string();
        let verb = match (method.as_str(), target.name.is_some()) {
            ("GET", true) => "get",
            ("GET", false) if is_watch => "watch",
            ("GET", false) => "list",
            ("POST", false) => "create",
            ("PATCH", true) => "patch",
            ("DELETE", true) => "delete",
            _ => "unsupported",
        };
        let body_json: Option<Value> = if body.is_empty() {
            None
        } else {
            serde_json::from_slice(body)
                .ok()
                .or_else(|| serde_saphyr::from_slice(body).ok())
        };
        let patch_type = (verb == "patch").then(|| {
            match content_type.split(';').next().unwrap_or("").trim() {
                "application/apply-patch+yaml" => "apply",
                "application/merge-patch+json" => "merge",
                "application/json-patch+json" => "json",
                _ => "unsupported",
            }
            .to_string()
        });
        let mut rec = RecordedRequest {
            verb: verb.to_string(),
            method,
            path,
            query: raw_query,
            api_group: target.group.clone(),
            api_version: target.version.clone(),
            resource: target.resource.clone(),
            subresource: target.sub.clone(),
            namespace: target.namespace.clone(),
            name: target.name.clone(),
            field_manager: query.get("fieldManager").cloned(),
            patch_type,
            force: query.get("force").is_some_and(|f| f == "true"),
            label_selector: query.get("labelSelector").cloned(),
            field_selector: query.get("fieldSelector").cloned(),
            metadata_only,
            created_by_apply: false,
            status: 0,
            body: body_json.clone(),
        };

        let mut st = self.lock();
        if let Some(pos) = st
            .fail_next
            .iter()
            .position(|(v, r, _)| (v == verb || v == "*") && (r == &target.resource || r == "*"))
        {
            let (_, _, code) = st.fail_next.remove(pos);
            let err = ApiErr::from_code(code, &target);
            rec.status = code;
            st.requests.push(rec);
            return error_response(&err);
        }

        let ctx = Ctx {
            t: &target,
            query: &query,
            body: body_json.as_ref(),
            raw_body: body,
            metadata_only,
        };
        let result = st.dispatch(verb, &ctx, &mut rec);
        let response = match result {
            Ok(Resp::Json(code, v)) => {
                rec.status = code;
                let v = if metadata_only { to_partial(v) } else { v };
                json_response(code, &v)
            }
            Ok(Resp::Watch(b)) => {
                rec.status = 200;
                http::Response::builder()
                    .status(200)
                    .header("content-type", "application/json")
                    .body(b)
                    .expect("response")
            }
            Err(e) => {
                rec.status = e.code;
                error_response(&e)
            }
        };
        st.requests.push(rec);
        response
    }
}

// ---------------------------------------------------------------------------------------------
// State
// ---------------------------------------------------------------------------------------------

/// (group, resource plural)
type GrKey = (String, String);

#[derive(Clone, Debug)]
struct KindInfo {
    group: String,
    version: String,
    kind: String,
    plural: String,
    namespaced: bool,
}

impl KindInfo {
    fn new(api_version: &str, kind: &str, plural: &str, namespaced: bool) -> Self {
        let (group, version) = split_api_version(api_version);
        KindInfo {
            group,
            version,
            kind: kind.to_string(),
            plural: plural.to_string(),
            namespaced,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct MgrKey {
    manager: String,
    operation: &'static str,
    subresource: String,
}

type Managers = BTreeMap<MgrKey, BTreeSet<FPath>>;

#[derive(Clone, Debug)]
struct Entry {
    obj: Value,
    managers: Managers,
}

struct Watcher {
    filter: Filter,
    tx: mpsc::UnboundedSender<Bytes>,
}

struct LogEntry {
    rv: u64,
    ev: &'static str,
    gr: GrKey,
    old: Option<Value>,
    new: Value,
}

struct State {
    rv: u64,
    counter: u64,
    kinds: Vec<KindInfo>,
    status_sub: BTreeSet<String>,
    store: BTreeMap<GrKey, BTreeMap<(String, String), Entry>>,
    watchers: Vec<Watcher>,
    log: VecDeque<LogEntry>,
    log_floor: u64,
    requests: Vec<RecordedRequest>,
    fail_next: Vec<(String, String, u16)>,
}

struct Target {
    group: String,
    version: String,
    resource: String,
    namespace: Option<String>,
    name: Option<String>,
    sub: Option<String>,
}

impl Target {
    fn gr(&self) -> GrKey {
        (self.group.clone(), self.resource.clone())
    }
    fn ns(&self) -> &str {
        self.namespace.as_deref().unwrap_or("")
    }
    fn api_version(&self) -> String {
        join_api_version(&self.group, &self.version)
    }
    fn is_status(&self) -> bool {
        self.sub.as_deref() == Some("status")
    }
    fn sub_str(&self) -> &str {
        self.sub.as_deref().unwrap_or("")
    }
}

struct Ctx<'a> {
    t: &'a Target,
    query: &'a HashMap<String, String>,
    body: Option<&'a Value>,
    raw_body: &'a [u8],
    metadata_only: bool,
}

enum Resp {
    Json(u16, Value),
    Watch(FakeBody),
}

#[derive(Debug)]
struct ApiErr {
    code: u16,
    reason: &'static str,
    message: String,
    details: Option<Value>,
}

impl ApiErr {
    fn new(code: u16, reason: &'static str, message: String) -> Self {
        ApiErr {
            code,
            reason,
            message,
            details: None,
        }
    }
    fn with_details(mut self, name: &str, t: &Target) -> Self {
        let mut d = json!({"name": name, "kind": t.resource});
        if !t.group.is_empty() {
            d["group"] = json!(t.group);
        }
        self.details = Some(d);
        self
    }
    fn not_found(t: &Target, name: &str) -> Self {
        ApiErr::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", qualified(t)),
        )
        .with_details(name, t)
    }
    fn bad_request(msg: impl Into<String>) -> Self {
        ApiErr::new(400, "BadRequest", msg.into())
    }
    fn stale(t: &Target, name: &str) -> Self {
        ApiErr::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; \
                 please apply your changes to the latest version and try again",
                qualified(t)
            ),
        )
        .with_details(name, t)
    }
    fn from_code(code: u16, t: &Target) -> Self {
        let reason = match code {
            400 => "BadRequest",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "NotFound",
            405 => "MethodNotAllowed",
            409 => "Conflict",
            410 => "Expired",
            422 => "Invalid",
            429 => "TooManyRequests",
            503 => "ServiceUnavailable",
            504 => "Timeout",
            _ => "InternalError",
        };
        let name = t.name.clone().unwrap_or_default();
        ApiErr::new(
            code,
            reason,
            format!("injected failure ({code} {reason}) for {}", qualified(t)),
        )
        .with_details(&name, t)
    }
    fn to_json(&self) -> Value {
        let mut v = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            v["details"] = d.clone();
        }
        v
    }
}

/// What a real API server refuses on every write of a Deployment (422): no selector, no
/// container, a container without an image. (A GitOps tool's apply that drops a container
/// the operator co-owns leaves it without an image, and kube-apiserver 1.20 refuses it so,
/// see tests/user_journey.rs.)
fn validate(t: &Target, name: &str, obj: &Value) -> Result<(), ApiErr> {
    if t.group != "apps" || t.resource != "deployments" {
        return Ok(());
    }
    let invalid = |field: &str| {
        let msg = format!("Deployment.apps \"{name}\" is invalid: {field}: Required value");
        Err(ApiErr::new(422, "Invalid", msg).with_details(name, t))
    };
    let spec = &obj["spec"];
    if spec["selector"].is_null() {
        return invalid("spec.selector");
    }
    let containers = spec["template"]["spec"]["containers"].as_array();
    let Some(containers) = containers.filter(|c| !c.is_empty()) else {
        return invalid("spec.template.spec.containers");
    };
    let no_image = |c: &Value| c["image"].as_str().is_none_or(str::is_empty);
    match containers.iter().position(no_image) {
        Some(i) => invalid(&format!("spec.template.spec.containers[{i}].image")),
        None => Ok(()),
    }
}

fn qualified(t: &Target) -> String {
    if t.group.is_empty() {
        t.resource.clone()
    } else {
        format!("{}.{}", t.resource, t.group)
    }
}

impl State {
    fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    fn next_counter(&mut self) -> u64 {
        self.counter += 1;
        self.counter
    }

    fn entry(&self, gr: &GrKey, ns: &str, name: &str) -> Option<&Entry> {
        self.store.get(gr)?.get(&(ns.to_string(), name.to_string()))
    }

    /// The list types of `gr`: the built-in table, and a stored CRD's own schema.
    fn lists_for(&self, gr: &GrKey) -> Lists {
        let mut out: Lists = BUILTIN_LISTS
            .iter()
            .filter(|(r, _, _)| *r == "*" || *r == gr.1)
            .map(|(_, p, k)| {
                let kind = k.map_or(ListKind::Set, |k| ListKind::Map(k.to_owned()));
                ((*p).to_owned(), kind)
            })
            .collect();
        let crds = (
            "apiextensions.k8s.io".to_owned(),
            "customresourcedefinitions".to_owned(),
        );
        for crd in self.store.get(&crds).into_iter().flat_map(|m| m.values()) {
            let spec = &crd.obj["spec"];
            if spec["group"] == gr.0.as_str() && spec["names"]["plural"] == gr.1.as_str() {
                for v in spec["versions"].as_array().into_iter().flatten() {
                    schema_lists(&v["schema"]["openAPIV3Schema"], &mut vec![], &mut out);
                }
            }
        }
        out
    }

    fn has_status_sub(&self, resource: &str) -> bool {
        self.status_sub.contains(resource)
    }

    fn resolve(&self, api_version: &str, kind: &str) -> (GrKey, bool) {
        let (group, _) = split_api_version(api_version);
        let info = self
            .kinds
            .iter()
            .find(|k| k.group == group && k.kind == kind)
            .unwrap_or_else(|| {
                panic!("FakeApi: unknown kind {api_version} {kind}; call register_kind first")
            });
        ((info.group.clone(), info.plural.clone()), info.namespaced)
    }

    /// (group/resource, namespace, name) of a helper-supplied object; fills in the namespace.
    fn locate(&self, obj: &Value) -> (GrKey, String, String) {
        let av = obj["apiVersion"].as_str().expect("object needs apiVersion");
        let kind = obj["kind"].as_str().expect("object needs kind");
        let (gr, namespaced) = self.resolve(av, kind);
        let ns = if namespaced {
            obj["metadata"]["namespace"]
                .as_str()
                .unwrap_or("default")
                .to_string()
        } else {
            String::new()
        };
        let name = obj["metadata"]["name"]
            .as_str()
            .expect("object needs metadata.name")
            .to_string();
        (gr, ns, name)
    }

    fn kind_for(&self, gr: &GrKey) -> String {
        if let Some(k) = self
            .kinds
            .iter()
            .find(|k| k.group == gr.0 && k.plural == gr.1)
        {
            return k.kind.clone();
        }
        if let Some(kind) = self
            .store
            .get(gr)
            .and_then(|m| m.values().next())
            .and_then(|e| e.obj["kind"].as_str())
        {
            return kind.to_string();
        }
        let singular = gr.1.strip_suffix('s').unwrap_or(&gr.1);
        let mut c = singular.chars();
        c.next()
            .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
            .unwrap_or_default()
    }

    /// Helper write (insert/update/update_status): creates or replaces without preconditions.
    fn write_helper(
        &mut self,
        gr: &GrKey,
        ns: &str,
        name: &str,
        mut obj: Value,
        manager: &str,
        sub: Option<&str>,
    ) -> Value {
        set_meta(&mut obj, "name", json!(name));
        if !ns.is_empty() {
            set_meta(&mut obj, "namespace", json!(ns));
        }
        if gr == &(String::new(), "secrets".to_string()) {
            normalize_secret(&mut obj);
        }
        let has_status = self.has_status_sub(&gr.1);
        let old = self.entry(gr, ns, name).cloned();
        let (new, scopes): (Value, Vec<(&str, Scope)>) = match sub {
            None => {
                let scopes = if has_status {
                    vec![("", Scope::NoStatus), ("status", Scope::StatusOnly)]
                } else {
                    vec![("", Scope::All)]
                };
                (obj, scopes)
            }
            Some(s) => {
                let base = old.as_ref().map(|o| &o.obj);
                let new = isolate(base, obj, s == "status", has_status);
                let scope = if s == "status" {
                    Scope::StatusOnly
                } else if has_status {
                    Scope::NoStatus
                } else {
                    Scope::All
                };
                (new, vec![(s, scope)])
            }
        };
        let target = Target {
            group: gr.0.clone(),
            version: String::new(),
            resource: gr.1.clone(),
            namespace: None,
            name: None,
            sub: None,
        };
        if let Err(e) = validate(&target, name, &new) {
            panic!(
                "FakeApi: a real API server refuses this object: {}",
                e.message
            );
        }
        let mut managers = old.as_ref().map(|o| o.managers.clone()).unwrap_or_default();
        let lists = self.lists_for(gr);
        for (s, scope) in scopes {
            update_ownership(
                &lists,
                &mut managers,
                old.as_ref().map(|o| &o.obj),
                &new,
                manager,
                s,
                scope,
            );
        }
        self.commit(gr, ns, name, new, managers, sub == Some("status"))
    }

    fn dispatch(
        &mut self,
        verb: &str,
        ctx: &Ctx<'_>,
        rec: &mut RecordedRequest,
    ) -> Result<Resp, ApiErr> {
        let t = ctx.t;
        if let Some(sub) = &t.sub
            && sub != "status"
        {
            return Err(ApiErr::new(
                404,
                "NotFound",
                format!("fake_api: subresource {sub:?} is not supported"),
            ));
        }
        if t.is_status() && !self.has_status_sub(&t.resource) {
            return Err(ApiErr::new(
                404,
                "NotFound",
                format!(
                    "the server could not find the requested resource (fake_api: {} has no \
                     status subresource; call FakeApi::with_status_subresource({:?}))",
                    t.resource, t.resource
                ),
            ));
        }
        let manager = ctx
            .query
            .get("fieldManager")
            .cloned()
            .unwrap_or_else(|| "unknown".to_string());
        match verb {
            "get" => {
                let name = t.name.as_deref().unwrap_or_default();
                // a GET shows the field ownership, as a real API server does (the operator
                // reads it to give back containers no other manager owns any more)
                self.entry(&t.gr(), t.ns(), name)
                    .map(|e| {
                        let mut obj = e.obj.clone();
                        let av = obj["apiVersion"].as_str().unwrap_or_default().to_string();
                        set_meta(
                            &mut obj,
                            "managedFields",
                            managed_fields_json(&e.managers, &av),
                        );
                        Resp::Json(200, obj)
                    })
                    .ok_or_else(|| ApiErr::not_found(t, name))
            }
            "list" => self.list(ctx).map(|v| Resp::Json(200, v)),
            "watch" => self.watch(ctx),
            "create" => {
                let body = ctx
                    .body
                    .cloned()
                    .ok_or_else(|| ApiErr::bad_request("request body is not a JSON object"))?;
                self.create(t, body, &manager).map(|v| Resp::Json(201, v))
            }
            "patch" => {
                let ptype = rec.patch_type.clone().unwrap_or_default();
                if ptype == "unsupported" {
                    return Err(ApiErr::new(
                        415,
                        "UnsupportedMediaType",
                        "the body of the request was in an unknown format".into(),
                    ));
                }
                let body = ctx.body.cloned().ok_or_else(|| {
                    ApiErr::bad_request(format!(
                        "couldn't decode patch body: {:?}",
                        String::from_utf8_lossy(ctx.raw_body)
                    ))
                })?;
                if ptype == "apply" {
                    let Some(field_manager) = ctx.query.get("fieldManager") else {
                        return Err(ApiErr::new(
                            422,
                            "Invalid",
                            "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required \
                             value: is required for apply patch"
                                .into(),
                        ));
                    };
                    let force = ctx.query.get("force").is_some_and(|f| f == "true");
                    let (v, created) = self.apply(t, body, field_manager, force)?;
                    rec.created_by_apply = created;
                    Ok(Resp::Json(if created { 201 } else { 200 }, v))
                } else {
                    self.patch(t, &ptype, &body, &manager)
                        .map(|v| Resp::Json(200, v))
                }
            }
            "delete" => {
                let name = t.name.as_deref().unwrap_or_default();
                let Some(e) = self.entry(&t.gr(), t.ns(), name) else {
                    return Err(ApiErr::not_found(t, name));
                };
                let opts = ctx.body.cloned().unwrap_or(Value::Null);
                let pre = &opts["preconditions"];
                if let Some(rv) = pre["resourceVersion"].as_str()
                    && Some(rv) != e.obj["metadata"]["resourceVersion"].as_str()
                {
                    return Err(ApiErr::stale(t, name));
                }
                if let Some(uid) = pre["uid"].as_str()
                    && Some(uid) != e.obj["metadata"]["uid"].as_str()
                {
                    return Err(ApiErr::stale(t, name));
                }
                let orphan =
                    opts["propagationPolicy"] == "Orphan" || opts["orphanDependents"] == true;
                let v = self
                    .delete_obj(&t.gr(), t.ns(), name, orphan)
                    .ok_or_else(|| ApiErr::not_found(t, name))?;
                Ok(Resp::Json(200, v))
            }
            _ => Err(ApiErr::new(
                405,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource".into(),
            )),
        }
    }

    fn filter(&self, ctx: &Ctx<'_>) -> Result<Filter, ApiErr> {
        let selector = ["labelSelector", "fieldSelector"]
            .into_iter()
            .find(|q| ctx.query.get(*q).is_some_and(|v| !v.is_empty()));
        if let Some(q) = selector {
            return Err(ApiErr::bad_request(format!(
                "fake_api: {q} is not supported (the operator lists and watches without selectors)"
            )));
        }
        Ok(Filter {
            gr: ctx.t.gr(),
            namespace: ctx.t.namespace.clone(),
            metadata_only: ctx.metadata_only,
        })
    }

    fn list(&self, ctx: &Ctx<'_>) -> Result<Value, ApiErr> {
        let filter = self.filter(ctx)?;
        let items: Vec<Value> = self
            .store
            .get(&ctx.t.gr())
            .map(|m| {
                m.values()
                    .filter(|e| filter.matches(&e.obj))
                    .map(|e| e.obj.clone())
                    .collect()
            })
            .unwrap_or_default();
        Ok(json!({
            "apiVersion": ctx.t.api_version(),
            "kind": format!("{}List", self.kind_for(&ctx.t.gr())),
            "metadata": {"resourceVersion": self.rv.to_string()},
            "items": items,
        }))
    }

    fn watch(&mut self, ctx: &Ctx<'_>) -> Result<Resp, ApiErr> {
        let filter = self.filter(ctx)?;
        let gr = ctx.t.gr();
        let mut initial = VecDeque::new();
        let rv_param = ctx
            .query
            .get("resourceVersion")
            .filter(|s| !s.is_empty())
            .cloned();
        let send_initial = ctx
            .query
            .get("sendInitialEvents")
            .is_some_and(|s| s == "true");
        let mut expired = false;
        if send_initial || rv_param.is_none() || rv_param.as_deref() == Some("0") {
            if let Some(m) = self.store.get(&gr) {
                for e in m.values() {
                    if let Some(line) = render_event(&filter, "ADDED", None, &e.obj) {
                        initial.push_back(line);
                    }
                }
            }
            if send_initial {
                let bookmark = json!({
                    "type": "BOOKMARK",
                    "object": {
                        "apiVersion": ctx.t.api_version(),
                        "kind": self.kind_for(&gr),
                        "metadata": {
                            "resourceVersion": self.rv.to_string(),
                            "annotations": {"k8s.io/initial-events-end": "true"},
                        },
                    },
                });
                initial.push_back(line_bytes(&bookmark));
            }
        } else {
            let rv: u64 = rv_param
                .as_deref()
                .unwrap_or_default()
                .parse()
                .map_err(|_| ApiErr::bad_request("invalid resourceVersion"))?;
            if rv < self.log_floor {
                expired = true;
                let status = ApiErr::new(
                    410,
                    "Expired",
                    format!("too old resource version: {rv} ({})", self.log_floor),
                );
                initial.push_back(line_bytes(
                    &json!({"type": "ERROR", "object": status.to_json()}),
                ));
            } else {
                for e in self.log.iter().filter(|e| e.rv > rv && e.gr == gr) {
                    if let Some(line) = render_event(&filter, e.ev, e.old.as_ref(), &e.new) {
                        initial.push_back(line);
                    }
                }
            }
        }
        let rx = if expired {
            None
        } else {
            let (tx, rx) = mpsc::unbounded_channel();
            self.watchers.push(Watcher { filter, tx });
            Some(rx)
        };
        let deadline = ctx
            .query
            .get("timeoutSeconds")
            .and_then(|s| s.parse::<u64>().ok())
            .map(|s| Box::pin(tokio::time::sleep(Duration::from_secs(s))));
        Ok(Resp::Watch(FakeBody {
            inner: BodyInner::Watch {
                initial,
                rx,
                deadline,
            },
        }))
    }

    fn create(&mut self, t: &Target, mut body: Value, manager: &str) -> Result<Value, ApiErr> {
        if t.sub.is_some() {
            return Err(ApiErr::new(
                405,
                "MethodNotAllowed",
                "POST is not supported on subresources".into(),
            ));
        }
        if !body.is_object() {
            return Err(ApiErr::bad_request("request body is not a JSON object"));
        }
        if let Some(ns) = body["metadata"]["namespace"].as_str()
            && t.namespace.as_deref().is_some_and(|n| n != ns)
        {
            return Err(ApiErr::bad_request(
                "the namespace of the provided object does not match the namespace sent on \
                 the request",
            ));
        }
        let gr = t.gr();
        let name = match body["metadata"]["name"].as_str() {
            Some(n) if !n.is_empty() => n.to_string(),
            _ => match body["metadata"]["generateName"].as_str() {
                Some(prefix) => loop {
                    let candidate = format!("{prefix}{}", self.random_suffix());
                    if self.entry(&gr, t.ns(), &candidate).is_none() {
                        break candidate;
                    }
                },
                None => {
                    return Err(ApiErr::new(
                        422,
                        "Invalid",
                        "metadata.name: Required value: name or generateName is required".into(),
                    ));
                }
            },
        };
        if self.entry(&gr, t.ns(), &name).is_some() {
            return Err(ApiErr::new(
                409,
                "AlreadyExists",
                format!("{} \"{name}\" already exists", qualified(t)),
            )
            .with_details(&name, t));
        }
        self.admit_create(t, &name, &body)?;
        self.autoregister(t, &body);
        fill_type(&mut body, t);
        if let Some(m) = body["metadata"].as_object_mut() {
            for f in [
                "uid",
                "resourceVersion",
                "generation",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "managedFields",
            ] {
                m.remove(f);
            }
        }
        set_meta(&mut body, "name", json!(name));
        if let Some(ns) = &t.namespace {
            set_meta(&mut body, "namespace", json!(ns));
        }
        if gr == (String::new(), "secrets".to_string()) {
            normalize_secret(&mut body);
        }
        let scope = if self.has_status_sub(&t.resource) {
            if let Some(m) = body.as_object_mut() {
                m.remove("status");
            }
            Scope::NoStatus
        } else {
            Scope::All
        };
        let mut managers = Managers::new();
        let lists = self.lists_for(&gr);
        update_ownership(&lists, &mut managers, None, &body, manager, "", scope);
        Ok(self.create_entry(&gr, t.ns(), &name, body, managers))
    }

    fn patch(
        &mut self,
        t: &Target,
        ptype: &str,
        patch: &Value,
        manager: &str,
    ) -> Result<Value, ApiErr> {
        let name = t.name.clone().unwrap_or_default();
        let gr = t.gr();
        let old = self
            .entry(&gr, t.ns(), &name)
            .cloned()
            .ok_or_else(|| ApiErr::not_found(t, &name))?;
        let mut cand = old.obj.clone();
        match ptype {
            "merge" => json_patch::merge(&mut cand, patch),
            "json" => {
                apply_json_patch(&mut cand, patch).map_err(|e| ApiErr::new(422, "Invalid", e))?
            }
            other => {
                return Err(ApiErr::new(
                    415,
                    "UnsupportedMediaType",
                    format!("unsupported patch type {other}"),
                ));
            }
        }
        if cand["metadata"]["resourceVersion"] != old.obj["metadata"]["resourceVersion"]
            && !cand["metadata"]["resourceVersion"].is_null()
        {
            return Err(ApiErr::stale(t, &name));
        }
        if gr == (String::new(), "secrets".to_string()) {
            normalize_secret(&mut cand);
        }
        let has_status = self.has_status_sub(&t.resource);
        let new = isolate(Some(&old.obj), cand, t.is_status(), has_status);
        validate(t, &name, &new)?;
        let mut managers = old.managers.clone();
        let lists = self.lists_for(&gr);
        update_ownership(
            &lists,
            &mut managers,
            Some(&old.obj),
            &new,
            manager,
            t.sub_str(),
            scope_for(t.is_status(), has_status),
        );
        Ok(self.commit(&gr, t.ns(), &name, new, managers, t.is_status()))
    }

    /// Server-side apply. Returns (object, created).
    fn apply(
        &mut self,
        t: &Target,
        applied: Value,
        manager: &str,
        force: bool,
    ) -> Result<(Value, bool), ApiErr> {
        if !applied.is_object() {
            return Err(ApiErr::bad_request("apply patch must be an object"));
        }
        let name = t.name.clone().unwrap_or_default();
        if let Some(n) = applied["metadata"]["name"].as_str()
            && n != name
        {
            return Err(ApiErr::bad_request(format!(
                "the name of the object ({n}) does not match the name on the URL ({name})"
            )));
        }
        let gr = t.gr();
        let has_status = self.has_status_sub(&t.resource);
        let status_write = t.is_status();
        let sub = t.sub_str().to_string();
        let existing = self.entry(&gr, t.ns(), &name).cloned();
        if let (Some(e), Some(rv)) = (&existing, applied["metadata"]["resourceVersion"].as_str())
            && Some(rv) != e.obj["metadata"]["resourceVersion"].as_str()
        {
            return Err(ApiErr::stale(t, &name));
        }
        let (current, mut managers, created) = match existing {
            Some(e) => (e.obj, e.managers, false),
            None => {
                if status_write {
                    return Err(ApiErr::not_found(t, &name));
                }
                self.autoregister(t, &applied);
                let mut skel = json!({"metadata": {"name": name}});
                if let Some(ns) = &t.namespace {
                    skel["metadata"]["namespace"] = json!(ns);
                }
                (skel, Managers::new(), true)
            }
        };

        let mut applied = applied;
        fill_type(&mut applied, t);
        if gr == (String::new(), "secrets".to_string()) {
            normalize_secret(&mut applied);
        }
        let mut scoped = applied.clone();
        if let Some(m) = scoped.as_object_mut() {
            if status_write {
                m.retain(|k, _| k == "status" || k == "apiVersion" || k == "kind");
            } else if has_status {
                m.remove("status");
            }
        }
        if let Some(m) = scoped["metadata"].as_object_mut() {
            for f in SYSTEM_META {
                if *f != "name" && *f != "namespace" {
                    m.remove(*f);
                }
            }
        }
        let scope = scope_for(status_write, has_status);
        let mkey = MgrKey {
            manager: manager.to_string(),
            operation: "Apply",
            subresource: sub.clone(),
        };
        let lists = self.lists_for(&t.gr());
        let new_leaves = leaves(&lists, &scoped, scope);

        // 1. conflicts with other managers over values that would change
        let mut conflicts: Vec<(MgrKey, FPath)> = Vec::new();
        for l in &new_leaves {
            if is_marker(l) {
                continue;
            }
            let Some(cur) = get_at(&current, l) else {
                continue;
            };
            if Some(cur) == get_at(&scoped, l) {
                continue;
            }
            for (k, owned) in &managers {
                if k.manager != manager && k.subresource == sub && owned.contains(l) {
                    conflicts.push((k.clone(), l.clone()));
                }
            }
        }
        if !conflicts.is_empty() {
            if !force {
                let n = conflicts.len();
                let parts: Vec<String> = conflicts
                    .iter()
                    .map(|(k, p)| format!("conflict with \"{}\": {}", k.manager, path_string(p)))
                    .collect();
                let message = format!(
                    "Apply failed with {n} conflict{}: {}",
                    if n == 1 { "" } else { "s" },
                    parts.join("; ")
                );
                let causes: Vec<Value> = conflicts
                    .iter()
                    .map(|(k, p)| {
                        json!({
                            "reason": "FieldManagerConflict",
                            "message": format!("conflict with \"{}\"", k.manager),
                            "field": path_string(p),
                        })
                    })
                    .collect();
                let mut err = ApiErr::new(409, "Conflict", message).with_details(&name, t);
                if let Some(d) = err.details.as_mut() {
                    d["causes"] = json!(causes);
                }
                return Err(err);
            }
            for (k, p) in &conflicts {
                if let Some(owned) = managers.get_mut(k) {
                    owned.remove(p);
                }
            }
        }

        // 2. merge
        let mut merged = current.clone();
        ssa_merge(&lists, &mut Vec::new(), &mut merged, &scoped);

        // 3. remove what the manager stopped applying, unless someone else owns it
        let old_leaves = managers.get(&mkey).cloned().unwrap_or_default();
        let mut dropped: Vec<&FPath> = old_leaves.difference(&new_leaves).collect();
        dropped.sort_by_key(|p| p.len());
        for p in dropped {
            let owned_elsewhere = managers
                .iter()
                .any(|(k, s)| k != &mkey && s.iter().any(|q| q.starts_with(p)));
            if owned_elsewhere || new_leaves.iter().any(|q| q.starts_with(p)) {
                continue;
            }
            if remove_at(&mut merged, p) {
                for i in (2..p.len()).rev() {
                    let parent = &p[..i];
                    if !matches!(parent.last(), Some(Seg::Field(_))) {
                        break;
                    }
                    // a map or list emptied by the removal goes too, as with a real API server
                    let empty = get_at(&merged, parent).is_some_and(|v| {
                        v.as_object().is_some_and(Map::is_empty)
                            || v.as_array().is_some_and(Vec::is_empty)
                    });
                    let owned = managers.values().any(|s| s.contains(parent));
                    if empty && !owned {
                        remove_at(&mut merged, parent);
                    } else {
                        break;
                    }
                }
            }
        }
        managers.insert(mkey, new_leaves);
        managers.retain(|_, s| !s.is_empty());

        if created {
            // an apply to a missing object is a create, validated like one
            self.admit_create(t, &name, &merged)?;
            Ok((
                self.create_entry(&gr, t.ns(), &name, merged, managers),
                true,
            ))
        } else {
            validate(t, &name, &merged)?;
            Ok((
                self.commit(&gr, t.ns(), &name, merged, managers, status_write),
                false,
            ))
        }
    }

    /// What a real API server refuses on create (POST, or an apply to a missing object):
    /// anything in a namespace being deleted (403), a Deployment without selector or pod
    /// template (422), an `events.k8s.io` Event whose note is over 1,024 bytes (422).
    fn admit_create(&self, t: &Target, name: &str, obj: &Value) -> Result<(), ApiErr> {
        let terminating = |ns: &str| {
            self.entry(&(String::new(), "namespaces".into()), "", ns)
                .is_some_and(|e| {
                    !e.obj["metadata"]["deletionTimestamp"].is_null()
                        || e.obj["status"]["phase"] == "Terminating"
                })
        };
        if let Some(ns) = t.namespace.as_deref().filter(|ns| terminating(ns)) {
            return Err(ApiErr::new(
                403,
                "Forbidden",
                format!(
                    "{} \"{name}\" is forbidden: unable to create new content in namespace \
                     {ns} because it is being terminated",
                    qualified(t)
                ),
            )
            .with_details(name, t));
        }
        let invalid = |kind: &str, field: &str, what: &str| {
            Err(ApiErr::new(
                422,
                "Invalid",
                format!("{kind} \"{name}\" is invalid: {field}: {what}"),
            )
            .with_details(name, t))
        };
        validate(t, name, obj)?;
        let note = obj["note"].as_str().unwrap_or_default();
        if t.group == "events.k8s.io" && note.len() > 1024 {
            return invalid(
                "Event.events.k8s.io",
                "note",
                "Too long: may not be more than 1024 bytes",
            );
        }
        Ok(())
    }

    fn autoregister(&mut self, t: &Target, body: &Value) {
        if self
            .kinds
            .iter()
            .any(|k| k.group == t.group && k.plural == t.resource)
        {
            return;
        }
        if let Some(kind) = body["kind"].as_str() {
            self.kinds.push(KindInfo {
                group: t.group.clone(),
                version: t.version.clone(),
                kind: kind.to_string(),
                plural: t.resource.clone(),
                namespaced: t.namespace.is_some(),
            });
        }
    }

    fn random_suffix(&mut self) -> String {
        const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
        let mut x = self
            .next_counter()
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .rotate_left(17);
        (0..5)
            .map(|_| {
                let c = ALPHABET[(x % ALPHABET.len() as u64) as usize] as char;
                x /= ALPHABET.len() as u64;
                c
            })
            .collect()
    }

    fn create_entry(
        &mut self,
        gr: &GrKey,
        ns: &str,
        name: &str,
        mut obj: Value,
        managers: Managers,
    ) -> Value {
        set_meta(&mut obj, "name", json!(name));
        if !ns.is_empty() {
            set_meta(&mut obj, "namespace", json!(ns));
        }
        if obj["metadata"]["uid"].as_str().is_none() {
            let n = self.next_counter();
            set_meta(
                &mut obj,
                "uid",
                json!(format!("00000000-0000-4000-8000-{n:012x}")),
            );
        }
        if obj["metadata"]["creationTimestamp"].as_str().is_none() {
            set_meta(&mut obj, "creationTimestamp", json!(now()));
        }
        if obj["metadata"]["generation"].as_i64().is_none() {
            set_meta(&mut obj, "generation", json!(1));
        }
        if let Some(m) = obj["metadata"].as_object_mut() {
            m.remove("managedFields");
        }
        let rv = self.next_rv();
        set_meta(&mut obj, "resourceVersion", json!(rv.to_string()));
        self.store.entry(gr.clone()).or_default().insert(
            (ns.to_string(), name.to_string()),
            Entry {
                obj: obj.clone(),
                managers,
            },
        );
        self.emit("ADDED", gr, None, obj.clone());
        obj
    }

    /// Stores `new` as the new state of an object (creating it if missing). No-op writes keep
    /// the resourceVersion and notify nobody.
    fn commit(
        &mut self,
        gr: &GrKey,
        ns: &str,
        name: &str,
        mut new: Value,
        managers: Managers,
        status_write: bool,
    ) -> Value {
        let Some(old) = self.entry(gr, ns, name).cloned() else {
            return self.create_entry(gr, ns, name, new, managers);
        };
        let meta = old.obj["metadata"].as_object().cloned().unwrap_or_default();
        for f in [
            "name",
            "namespace",
            "uid",
            "creationTimestamp",
            "generation",
            "resourceVersion",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
        ] {
            match meta.get(f) {
                Some(v) => set_meta(&mut new, f, v.clone()),
                None => {
                    if let Some(m) = new["metadata"].as_object_mut() {
                        m.remove(f);
                    }
                }
            }
        }
        if let Some(m) = new["metadata"].as_object_mut() {
            m.remove("managedFields");
        }
        if new == old.obj && managers == old.managers {
            return old.obj;
        }
        if !status_write && strip_meta_status(&old.obj) != strip_meta_status(&new) {
            let g = old.obj["metadata"]["generation"].as_i64().unwrap_or(0) + 1;
            set_meta(&mut new, "generation", json!(g));
        }
        let rv = self.next_rv();
        set_meta(&mut new, "resourceVersion", json!(rv.to_string()));
        let key = (ns.to_string(), name.to_string());
        if !new["metadata"]["deletionTimestamp"].is_null() && finalizers_empty(&new) {
            if let Some(m) = self.store.get_mut(gr) {
                m.remove(&key);
            }
            self.emit("DELETED", gr, None, new.clone());
            if let Some(uid) = new["metadata"]["uid"].as_str() {
                self.gc(uid);
            }
            return new;
        }
        self.store.entry(gr.clone()).or_default().insert(
            key,
            Entry {
                obj: new.clone(),
                managers,
            },
        );
        self.emit("MODIFIED", gr, Some(old.obj), new.clone());
        new
    }

    fn delete_obj(&mut self, gr: &GrKey, ns: &str, name: &str, orphan: bool) -> Option<Value> {
        let key = (ns.to_string(), name.to_string());
        let entry = self.store.get(gr)?.get(&key)?.clone();
        if !finalizers_empty(&entry.obj) {
            if !entry.obj["metadata"]["deletionTimestamp"].is_null() {
                return Some(entry.obj);
            }
            let mut new = entry.obj.clone();
            set_meta(&mut new, "deletionTimestamp", json!(now()));
            set_meta(&mut new, "deletionGracePeriodSeconds", json!(0));
            let rv = self.next_rv();
            set_meta(&mut new, "resourceVersion", json!(rv.to_string()));
            self.store.entry(gr.clone()).or_default().insert(
                key,
                Entry {
                    obj: new.clone(),
                    managers: entry.managers,
                },
            );
            self.emit("MODIFIED", gr, Some(entry.obj), new.clone());
            return Some(new);
        }
        self.store.get_mut(gr)?.remove(&key);
        let mut obj = entry.obj;
        let rv = self.next_rv();
        set_meta(&mut obj, "resourceVersion", json!(rv.to_string()));
        self.emit("DELETED", gr, None, obj.clone());
        if !orphan && let Some(uid) = obj["metadata"]["uid"].as_str() {
            self.gc(uid);
        }
        Some(obj)
    }

    /// Background garbage collection: deletes dependents of `uid` whose owners are all gone.
    fn gc(&mut self, uid: &str) {
        let live: BTreeSet<String> = self
            .store
            .values()
            .flat_map(|m| m.values())
            .filter_map(|e| e.obj["metadata"]["uid"].as_str().map(str::to_string))
            .collect();
        let mut victims = Vec::new();
        for (gr, m) in &self.store {
            for ((ns, name), e) in m {
                let Some(owners) = e.obj["metadata"]["ownerReferences"].as_array() else {
                    continue;
                };
                let uids: Vec<&str> = owners.iter().filter_map(|o| o["uid"].as_str()).collect();
                if uids.contains(&uid) && uids.iter().all(|u| !live.contains(*u)) {
                    victims.push((gr.clone(), ns.clone(), name.clone()));
                }
            }
        }
        for (gr, ns, name) in victims {
            self.delete_obj(&gr, &ns, &name, false);
        }
    }

    fn emit(&mut self, ev: &'static str, gr: &GrKey, old: Option<Value>, new: Value) {
        let rv = new["metadata"]["resourceVersion"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or(self.rv);
        self.watchers.retain(|w| {
            if w.filter.gr != *gr {
                return !w.tx.is_closed();
            }
            match render_event(&w.filter, ev, old.as_ref(), &new) {
                Some(line) => w.tx.send(line).is_ok(),
                None => !w.tx.is_closed(),
            }
        });
        self.log.push_back(LogEntry {
            rv,
            ev,
            gr: gr.clone(),
            old,
            new,
        });
        while self.log.len() > LOG_CAP {
            if let Some(e) = self.log.pop_front() {
                self.log_floor = e.rv;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Paths, responses, small helpers
// ---------------------------------------------------------------------------------------------

fn parse_path(path: &str) -> Option<Target> {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let (group, version, rest) = match *segs.first()? {
        "api" => (
            String::new(),
            segs.get(1)?.to_string(),
            &segs[2.min(segs.len())..],
        ),
        "apis" => (
            segs.get(1)?.to_string(),
            segs.get(2)?.to_string(),
            &segs[3.min(segs.len())..],
        ),
        _ => return None,
    };
    let (namespace, rest) = if rest.len() >= 3 && rest[0] == "namespaces" {
        (Some(rest[1].to_string()), &rest[2..])
    } else {
        (None, rest)
    };
    if rest.is_empty() || rest.len() > 3 {
        return None;
    }
    Some(Target {
        group,
        version,
        resource: rest[0].to_string(),
        namespace,
        name: rest.get(1).map(|s| s.to_string()),
        sub: rest.get(2).map(|s| s.to_string()),
    })
}

fn split_api_version(av: &str) -> (String, String) {
    match av.split_once('/') {
        Some((g, v)) => (g.to_string(), v.to_string()),
        None => (String::new(), av.to_string()),
    }
}

fn join_api_version(group: &str, version: &str) -> String {
    if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    }
}

fn json_response(code: u16, v: &Value) -> http::Response<FakeBody> {
    http::Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(FakeBody::full(serde_json::to_vec(v).expect("json")))
        .expect("response")
}

fn error_response(e: &ApiErr) -> http::Response<FakeBody> {
    json_response(e.code, &e.to_json())
}

fn line_bytes(v: &Value) -> Bytes {
    let mut b = serde_json::to_vec(v).expect("json");
    b.push(b'\n');
    Bytes::from(b)
}

fn partial(obj: &Value) -> Value {
    json!({
        "apiVersion": "meta.k8s.io/v1",
        "kind": "PartialObjectMetadata",
        "metadata": obj["metadata"].clone(),
    })
}

fn to_partial(v: Value) -> Value {
    if v["kind"] == "Status" {
        return v;
    }
    if let Some(items) = v["items"].as_array() {
        return json!({
            "apiVersion": "meta.k8s.io/v1",
            "kind": "PartialObjectMetadataList",
            "metadata": v["metadata"].clone(),
            "items": items.iter().map(partial).collect::<Vec<_>>(),
        });
    }
    partial(&v)
}

fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn set_meta(obj: &mut Value, field: &str, v: Value) {
    if !obj.is_object() {
        *obj = json!({});
    }
    if !obj["metadata"].is_object() {
        obj["metadata"] = json!({});
    }
    obj["metadata"][field] = v;
}

fn fill_type(body: &mut Value, t: &Target) {
    if let Some(m) = body.as_object_mut() {
        m.entry("apiVersion")
            .or_insert_with(|| json!(t.api_version()));
    }
    if body["kind"].as_str().is_none()
        && let Some(m) = body.as_object_mut()
    {
        // Best effort; kube always sends kind.
        let singular = t.resource.strip_suffix('s').unwrap_or(&t.resource);
        let mut c = singular.chars();
        let kind = c
            .next()
            .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
            .unwrap_or_default();
        m.insert("kind".into(), json!(kind));
    }
}

fn finalizers_empty(obj: &Value) -> bool {
    obj["metadata"]["finalizers"]
        .as_array()
        .is_none_or(|f| f.is_empty())
}

fn strip_meta_status(obj: &Value) -> Value {
    let mut v = obj.clone();
    if let Some(m) = v.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
    }
    v
}

/// Keeps `.status` as in `old` (non-status write on a resource with a status subresource),
/// or takes only `.status` from `new` (status write).
fn isolate(old: Option<&Value>, mut new: Value, status_write: bool, has_status: bool) -> Value {
    let old_status = old.and_then(|o| o.get("status")).cloned();
    if status_write {
        let mut base = old.cloned().unwrap_or(new.clone());
        match (base.as_object_mut(), new.get("status")) {
            (Some(m), Some(s)) => {
                m.insert("status".into(), s.clone());
            }
            (Some(m), None) => {
                m.remove("status");
            }
            _ => {}
        }
        return base;
    }
    if has_status && let Some(m) = new.as_object_mut() {
        match old_status {
            Some(s) => {
                m.insert("status".into(), s);
            }
            None => {
                m.remove("status");
            }
        }
    }
    new
}

/// Secrets: `stringData` is folded into base64 `data` like the API server does.
fn normalize_secret(obj: &mut Value) {
    let Some(m) = obj.as_object_mut() else {
        return;
    };
    let Some(Value::Object(sd)) = m.remove("stringData") else {
        return;
    };
    let data = m.entry("data").or_insert_with(|| json!({}));
    if !data.is_object() {
        *data = json!({});
    }
    for (k, v) in sd {
        let s = v
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| v.to_string());
        data[k.as_str()] = json!(base64(s.as_bytes()));
    }
}

fn base64(input: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        out.push(T[(n >> 18) as usize & 63] as char);
        out.push(T[(n >> 12) as usize & 63] as char);
        out.push(if chunk.len() > 1 {
            T[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        out.push(if chunk.len() > 2 {
            T[n as usize & 63] as char
        } else {
            '='
        });
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Selectors and watch filtering
// ---------------------------------------------------------------------------------------------

struct Filter {
    gr: GrKey,
    namespace: Option<String>,
    metadata_only: bool,
}

impl Filter {
    fn matches(&self, obj: &Value) -> bool {
        self.namespace
            .as_ref()
            .is_none_or(|ns| obj["metadata"]["namespace"].as_str() == Some(ns.as_str()))
    }
}

fn render_event(f: &Filter, ev: &str, old: Option<&Value>, new: &Value) -> Option<Bytes> {
    let new_m = f.matches(new);
    let old_m = old.is_some_and(|o| f.matches(o));
    let ty = match ev {
        "ADDED" => new_m.then_some("ADDED"),
        "DELETED" => new_m.then_some("DELETED"),
        _ => match (old_m, new_m) {
            (true, true) => Some("MODIFIED"),
            (false, true) => Some("ADDED"),
            (true, false) => Some("DELETED"),
            (false, false) => None,
        },
    }?;
    let obj = if f.metadata_only {
        partial(new)
    } else {
        new.clone()
    };
    Some(line_bytes(&json!({"type": ty, "object": obj})))
}

// ---------------------------------------------------------------------------------------------
// Field paths and server-side apply
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Seg {
    Field(String),
    /// A list-map item: (key field, JSON of the key value).
    Key(String, String),
    /// A set-list element (JSON of the value).
    Set(String),
}

type FPath = Vec<Seg>;

fn path_string(p: &[Seg]) -> String {
    p.iter()
        .map(|s| match s {
            Seg::Field(f) => format!(".{f}"),
            Seg::Key(k, v) => format!("[{k}={v}]"),
            Seg::Set(v) => format!("[{v}]"),
        })
        .collect()
}

/// `metadata.managedFields` as the API server writes it: one entry per manager, its fields
/// in the `FieldsV1` trie (`f:` fields, `k:` list-map keys, `v:` set values, `.` for an
/// item owned as a whole).
fn managed_fields_json(managers: &Managers, api_version: &str) -> Value {
    let entries: Vec<Value> = managers
        .iter()
        .map(|(k, paths)| {
            let mut trie = json!({});
            for p in paths {
                let mut node = &mut trie;
                for seg in p {
                    let key = match seg {
                        Seg::Field(f) => format!("f:{f}"),
                        Seg::Key(kf, v) => format!("k:{{{}:{v}}}", json_str(&json!(kf))),
                        Seg::Set(v) => format!("v:{v}"),
                    };
                    node = node
                        .as_object_mut()
                        .expect("trie nodes are objects")
                        .entry(key)
                        .or_insert_with(|| json!({}));
                }
                if matches!(p.last(), Some(Seg::Key(..))) {
                    node["."] = json!({});
                }
            }
            let mut e = json!({
                "manager": k.manager,
                "operation": k.operation,
                "apiVersion": api_version,
                "time": now(),
                "fieldsType": "FieldsV1",
                "fieldsV1": trie,
            });
            if !k.subresource.is_empty() {
                e["subresource"] = json!(k.subresource);
            }
            e
        })
        .collect();
    json!(entries)
}

fn is_marker(p: &[Seg]) -> bool {
    matches!(p.last(), Some(Seg::Key(..) | Seg::Set(..)))
}

fn json_str(v: &Value) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scope {
    All,
    NoStatus,
    StatusOnly,
}

fn scope_for(status_write: bool, has_status: bool) -> Scope {
    if status_write {
        Scope::StatusOnly
    } else if has_status {
        Scope::NoStatus
    } else {
        Scope::All
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum ListKind {
    /// `x-kubernetes-list-type: map`, keyed by the first `x-kubernetes-list-map-keys` entry.
    Map(String),
    Set,
    Atomic,
}

/// How each list of one resource merges, by field path with list items transparent
/// (`spec.template.spec.containers.env`). A list not named is atomic, as in the API server.
type Lists = Vec<(String, ListKind)>;

/// The list types of the built-in objects the operator and kube-runtime write, as
/// Kubernetes' OpenAPI publishes them (`x-kubernetes-list-type`,
/// `x-kubernetes-list-map-keys`); `*` is every resource (ObjectMeta).
const BUILTIN_LISTS: &[(&str, &str, Option<&str>)] = &[
    ("*", "metadata.finalizers", None),
    ("*", "metadata.ownerReferences", Some("uid")),
    ("deployments", "spec.template.spec.containers", Some("name")),
    (
        "deployments",
        "spec.template.spec.containers.env",
        Some("name"),
    ),
    (
        "deployments",
        "spec.template.spec.containers.ports",
        Some("containerPort"),
    ),
    (
        "deployments",
        "spec.template.spec.containers.volumeMounts",
        Some("mountPath"),
    ),
    (
        "deployments",
        "spec.template.spec.initContainers",
        Some("name"),
    ),
    (
        "deployments",
        "spec.template.spec.initContainers.env",
        Some("name"),
    ),
    ("deployments", "spec.template.spec.volumes", Some("name")),
    ("deployments", "status.conditions", Some("type")),
];

/// The lists a CRD's `openAPIV3Schema` declares (`x-kubernetes-list-type` map or set).
fn schema_lists(schema: &Value, path: &mut Vec<String>, out: &mut Lists) {
    let Some(props) = schema["properties"].as_object() else {
        return;
    };
    for (field, sub) in props {
        path.push(field.clone());
        let kind = match sub["x-kubernetes-list-type"].as_str() {
            Some("map") => sub["x-kubernetes-list-map-keys"][0]
                .as_str()
                .map(|k| ListKind::Map(k.to_owned())),
            Some("set") => Some(ListKind::Set),
            _ => None,
        };
        if let Some(k) = kind {
            out.push((path.join("."), k));
        }
        schema_lists(sub, path, out);
        schema_lists(&sub["items"], path, out);
        path.pop();
    }
}

fn list_kind(lists: &Lists, path: &str) -> ListKind {
    lists
        .iter()
        .find(|(p, _)| p == path)
        .map_or(ListKind::Atomic, |(_, k)| k.clone())
}

fn schema_path(p: &[Seg]) -> String {
    p.iter()
        .filter_map(|s| match s {
            Seg::Field(f) => Some(f.as_str()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join(".")
}

fn collect_leaves(lists: &Lists, v: &Value, path: &mut FPath, out: &mut BTreeSet<FPath>) {
    match v {
        Value::Object(m) if !m.is_empty() || path.is_empty() => {
            for (k, c) in m {
                if c.is_null() {
                    continue;
                }
                path.push(Seg::Field(k.clone()));
                if let Value::Array(items) = c {
                    match list_kind(lists, &schema_path(path)) {
                        ListKind::Map(kf) if items.iter().all(|i| i.get(&kf).is_some()) => {
                            for it in items {
                                path.push(Seg::Key(kf.clone(), json_str(&it[&kf])));
                                out.insert(path.clone());
                                collect_leaves(lists, it, path, out);
                                path.pop();
                            }
                        }
                        ListKind::Set => {
                            for it in items {
                                path.push(Seg::Set(json_str(it)));
                                out.insert(path.clone());
                                path.pop();
                            }
                        }
                        ListKind::Map(_) | ListKind::Atomic => {
                            out.insert(path.clone());
                        }
                    }
                } else {
                    collect_leaves(lists, c, path, out);
                }
                path.pop();
            }
        }
        _ => {
            out.insert(path.clone());
        }
    }
}

fn scope_allows(p: &[Seg], scope: Scope) -> bool {
    let Some(Seg::Field(first)) = p.first() else {
        return false;
    };
    if first == "apiVersion" || first == "kind" {
        return false;
    }
    if first == "metadata" {
        match p.get(1) {
            Some(Seg::Field(f)) if SYSTEM_META.contains(&f.as_str()) => return false,
            None => return false,
            _ => {}
        }
    }
    match scope {
        Scope::All => true,
        Scope::NoStatus => first != "status",
        Scope::StatusOnly => first == "status",
    }
}

fn leaves(lists: &Lists, v: &Value, scope: Scope) -> BTreeSet<FPath> {
    let mut out = BTreeSet::new();
    collect_leaves(lists, v, &mut Vec::new(), &mut out);
    out.retain(|p| scope_allows(p, scope));
    out
}

fn seg_matches(item: &Value, seg: &Seg) -> bool {
    match seg {
        Seg::Key(k, v) => item.get(k).is_some_and(|x| json_str(x) == *v),
        Seg::Set(v) => json_str(item) == *v,
        Seg::Field(_) => false,
    }
}

fn get_at<'a>(v: &'a Value, path: &[Seg]) -> Option<&'a Value> {
    let mut cur = v;
    for s in path {
        cur = match s {
            Seg::Field(f) => cur.as_object()?.get(f)?,
            _ => cur.as_array()?.iter().find(|i| seg_matches(i, s))?,
        };
    }
    Some(cur)
}

fn get_at_mut<'a>(v: &'a mut Value, path: &[Seg]) -> Option<&'a mut Value> {
    let mut cur = v;
    for s in path {
        cur = match s {
            Seg::Field(f) => cur.as_object_mut()?.get_mut(f)?,
            _ => cur.as_array_mut()?.iter_mut().find(|i| seg_matches(i, s))?,
        };
    }
    Some(cur)
}

fn remove_at(v: &mut Value, path: &[Seg]) -> bool {
    let Some((last, parent)) = path.split_last() else {
        return false;
    };
    let Some(p) = get_at_mut(v, parent) else {
        return false;
    };
    match last {
        Seg::Field(f) => p.as_object_mut().and_then(|m| m.remove(f)).is_some(),
        s => match p.as_array_mut() {
            Some(arr) => {
                let before = arr.len();
                arr.retain(|i| !seg_matches(i, s));
                arr.len() != before
            }
            None => false,
        },
    }
}

fn strip_nulls(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), strip_nulls(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Merges an applied configuration into the live object: maps recursively, list-maps by key,
/// sets by value, everything else replaced.
fn ssa_merge(lists: &Lists, path: &mut Vec<String>, cur: &mut Value, applied: &Value) {
    let Some(a) = applied.as_object() else {
        *cur = applied.clone();
        return;
    };
    if !cur.is_object() {
        *cur = json!({});
    }
    let c = cur.as_object_mut().expect("object");
    for (k, av) in a {
        if av.is_null() {
            continue;
        }
        path.push(k.clone());
        let kind = match (c.get(k), av) {
            (Some(Value::Object(_)), Value::Object(_)) => None,
            (Some(Value::Array(_)), Value::Array(_)) => Some(list_kind(lists, &path.join("."))),
            _ => Some(ListKind::Atomic),
        };
        match kind {
            None => ssa_merge(lists, path, c.get_mut(k).expect("present"), av),
            Some(ListKind::Map(kf)) => {
                let ci = c.get_mut(k).and_then(Value::as_array_mut).expect("array");
                for item in av.as_array().expect("array") {
                    match ci.iter_mut().find(|x| x.get(&kf) == item.get(&kf)) {
                        Some(existing) => ssa_merge(lists, path, existing, item),
                        None => ci.push(strip_nulls(item)),
                    }
                }
            }
            Some(ListKind::Set) => {
                let ci = c.get_mut(k).and_then(Value::as_array_mut).expect("array");
                for item in av.as_array().expect("array") {
                    if !ci.contains(item) {
                        ci.push(item.clone());
                    }
                }
            }
            Some(ListKind::Atomic) => {
                c.insert(k.clone(), strip_nulls(av));
            }
        }
        path.pop();
    }
}

/// Non-apply writes (POST/PUT/patches): the writer takes ownership of every leaf it changed
/// or added; leaves that disappeared are dropped from every manager.
fn update_ownership(
    lists: &Lists,
    managers: &mut Managers,
    old: Option<&Value>,
    new: &Value,
    manager: &str,
    sub: &str,
    scope: Scope,
) {
    let new_leaves = leaves(lists, new, scope);
    let old_leaves = old.map(|o| leaves(lists, o, scope)).unwrap_or_default();
    let changed: BTreeSet<FPath> = new_leaves
        .iter()
        .filter(|l| match old {
            None => true,
            Some(o) => {
                if is_marker(l) {
                    get_at(o, l).is_none()
                } else {
                    get_at(o, l) != get_at(new, l)
                }
            }
        })
        .cloned()
        .collect();
    let gone: Vec<&FPath> = old_leaves.difference(&new_leaves).collect();
    let key = MgrKey {
        manager: manager.to_string(),
        operation: "Update",
        subresource: sub.to_string(),
    };
    for (k, owned) in managers.iter_mut() {
        if *k != key {
            for c in &changed {
                owned.remove(c);
            }
        }
        if !gone.is_empty() {
            owned.retain(|q| !gone.iter().any(|g| q.starts_with(g)));
        }
    }
    if !changed.is_empty() {
        managers.entry(key).or_default().extend(changed);
    }
    managers.retain(|_, s| !s.is_empty());
}

// ---------------------------------------------------------------------------------------------
// Patches
// ---------------------------------------------------------------------------------------------

/// RFC 6902 JSON patch with the `json-patch` crate (the one kube uses to build them). Like
/// the API server's Go library, a `test` of a missing member against `null` passes: kube's
/// finalizer helper tests `/metadata/finalizers` for `null` on an object that has none.
fn apply_json_patch(target: &mut Value, patch: &Value) -> Result<(), String> {
    let mut p: json_patch::Patch =
        serde_json::from_value(patch.clone()).map_err(|e| format!("invalid JSON patch: {e}"))?;
    p.0.retain(|op| match op {
        json_patch::PatchOperation::Test(t) => {
            !(t.value.is_null() && target.pointer(t.path.as_str()).is_none())
        }
        _ => true,
    });
    json_patch::patch(target, &p)
        .map_err(|e| format!("the server rejected our request due to an error in our request: {e}"))
}
