//! An in-process fake Kubernetes API server that plugs into [`kube::Client`], for fast
//! unit-level runs of the reconciler and faults on demand ([`FakeApi::set_fail_next`]: any
//! status, a 409 conflict included; [`FakeApi::drop_watches`]; [`FakeApi::set_latency`]).
//! What only a real API server decides (field ownership and `managedFields`, conflicts
//! between field managers, list merges from a CRD's schema, garbage collection) is tested
//! on the real control plane (`tests/kube_real.rs`, `tests/user_journey.rs`), not here:
//! this server-side apply merges the lists the operator writes by key and removes what a
//! manager stopped applying unless another writer sets it to its value or changed it
//! since, never conflicts, and shows no `managedFields`; nothing is garbage collected.
//!
//! Objects are `serde_json::Value`s keyed by (group, resource plural, namespace, name);
//! paths are parsed generically. Served: GET, LIST and WATCH (resumable, `timeoutSeconds`),
//! POST, PATCH (merge, JSON, apply), DELETE (finalizers), `/status`, metadata-only
//! requests; refused as a real server refuses them: an invalid Deployment, a create in a
//! terminating namespace, an Event note over 1,024 bytes; refused because the operator
//! sends none: PUT, strategic merge, selectors, collection deletes, `generateName`.
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

/// Metadata the server sets, never taken from a request.
const SYSTEM_META: &[&str] = &[
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
];

/// The lists merged by key (`x-kubernetes-list-type: map`) in what the operator applies
/// (never init containers), by field path with list items transparent; others are atomic.
const LIST_MAPS: &[(&str, &str)] = &[
    ("spec.template.spec.containers", "name"),
    ("spec.template.spec.containers.env", "name"),
    ("status.conditions", "type"),
];

/// The kinds known from the start: (apiVersion, kind, plural, namespaced, status subresource).
const KINDS: &[(&str, &str, &str, bool, bool)] = &[
    ("v1", "Secret", "secrets", true, false),
    ("v1", "ConfigMap", "configmaps", true, false),
    ("v1", "Namespace", "namespaces", false, true),
    ("apps/v1", "Deployment", "deployments", true, true),
    ("events.k8s.io/v1", "Event", "events", true, false),
    ("coordination.k8s.io/v1", "Lease", "leases", true, false),
];

/// One request the fake served (or refused), in arrival order.
#[derive(Clone, Debug, Default)]
pub struct RecordedRequest {
    /// "get" | "list" | "watch" | "create" | "patch" | "delete" (else "unsupported")
    pub verb: String,
    /// "" for the core group.
    pub api_group: String,
    /// "apps/v1", "v1", ...
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
    fn gr(&self) -> Gr {
        (self.api_group.clone(), self.resource.clone())
    }
    fn ns(&self) -> &str {
        self.namespace.as_deref().unwrap_or("")
    }
    fn obj_name(&self) -> &str {
        self.name.as_deref().unwrap_or("")
    }
    fn is_status(&self) -> bool {
        self.subresource.as_deref() == Some("status")
    }
}

/// Response body of the fake: a complete JSON document, or a watch stream.
pub enum FakeBody {
    Full(Option<Bytes>),
    Watch {
        initial: VecDeque<Bytes>,
        /// `None` once the stream must end after `initial` is drained.
        rx: Option<mpsc::UnboundedReceiver<Bytes>>,
        deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    },
}

impl http_body::Body for FakeBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        let next = match self.get_mut() {
            FakeBody::Full(b) => b.take(),
            FakeBody::Watch {
                initial,
                rx,
                deadline,
            } => match initial.pop_front() {
                Some(b) => Some(b),
                None => {
                    if deadline
                        .as_mut()
                        .is_some_and(|d| d.as_mut().poll(cx).is_ready())
                    {
                        *rx = None;
                    }
                    match rx.as_mut().map(|r| r.poll_recv(cx)) {
                        Some(Poll::Pending) => return Poll::Pending,
                        Some(Poll::Ready(b)) => b,
                        None => None,
                    }
                }
            },
        };
        Poll::Ready(next.map(|b| Ok(http_body::Frame::data(b))))
    }
}

/// The fake API server. Cheap to clone; all clones share the same state.
#[derive(Clone, Default)]
pub struct FakeApi {
    state: Arc<Mutex<State>>,
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
            let latency = this.lock().latency;
            tokio::time::sleep(latency).await;
            Ok(this.handle(&parts, &bytes))
        })
    }
}

impl FakeApi {
    /// An empty cluster that knows the kinds the operator uses ([`KINDS`]).
    pub fn new() -> Self {
        Self::default()
    }

    /// A `kube::Client` talking to this fake (default namespace "default"). Must be called
    /// inside a tokio runtime (kube's `Client::new` spawns its buffer worker).
    pub fn client(&self) -> kube::Client {
        kube::Client::new(self.clone(), "default")
    }

    /// Gives `resource_plural` (any group) a status subresource: `/status` writes change only
    /// `.status`, every other write keeps `.status` as it was (and creates drop it).
    pub fn add_status_subresource(&self, resource_plural: &str) {
        self.lock().status_sub.insert(resource_plural.to_string());
    }

    /// Teaches the helpers (`insert`, `get`, ...) and `List` kinds about a kind (CRDs).
    pub fn register_kind(&self, api_version: &str, kind: &str, plural: &str, namespaced: bool) {
        let group = group_of(api_version);
        let mut st = self.lock();
        st.kinds
            .retain(|k| !(k.0 == group && (k.1 == kind || k.2 == plural)));
        st.kinds
            .push((group, kind.into(), plural.into(), namespaced));
    }

    /// Stores an object as if it existed before the test (upsert, not recorded as a request,
    /// `.status` kept). A namespaced object without `metadata.namespace` goes to "default".
    /// Returns the stored object (with uid, resourceVersion, ...). Panics on an object a
    /// real server would refuse (an invalid Deployment).
    pub fn insert(&self, obj: Value) -> Value {
        self.lock().write_helper(obj, None)
    }

    /// A user ("kubectl replace") replacing the object (status kept for resources with a
    /// status subresource). Not recorded as a request. Panics if the object does not exist.
    pub fn update(&self, obj: Value) -> Value {
        self.lock().write_helper(obj, Some(false))
    }

    /// Like [`FakeApi::update`] but through the status subresource (only `.status` changes).
    pub fn update_status(&self, obj: Value) -> Value {
        self.lock().write_helper(obj, Some(true))
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
        let all = st.store.get(&gr).into_iter().flatten();
        let wanted = all.filter(|((n, _), _)| ns.is_empty() || n == ns);
        wanted.map(|(_, e)| e.obj.clone()).collect()
    }

    /// Deletes like the API would (finalizers → deletionTimestamp, otherwise removal; no
    /// garbage collection of dependents). Returns the object as deleted/marked, or `None` if
    /// it did not exist. Not recorded as a request.
    pub fn delete(&self, api_version: &str, kind: &str, ns: &str, name: &str) -> Option<Value> {
        let mut st = self.lock();
        let (gr, _) = st.resolve(api_version, kind);
        st.delete_obj(&gr, ns, name)
    }

    /// Every request served so far (oldest first).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.lock().requests.clone()
    }

    pub fn clear_requests(&self) {
        self.lock().requests.clear();
    }

    /// Number of create/patch/delete requests received (refused ones included).
    pub fn writes(&self) -> usize {
        self.lock().requests.iter().filter(|r| r.is_write()).count()
    }

    /// The next request with this verb ("get", "list", "watch", "create", "patch", "delete",
    /// or "*") on this resource plural (or "*") fails with `status_code` and a matching
    /// `Status` body, without touching the state. Queued injections apply in order.
    pub fn set_fail_next(&self, verb: &str, resource: &str, status_code: u16) {
        let failure = (verb.to_string(), resource.to_string(), status_code);
        self.lock().fail_next.push(failure);
    }

    /// Every request from now on is answered after `latency` (zero: at once).
    pub fn set_latency(&self, latency: Duration) {
        self.lock().latency = latency;
    }

    /// Ends every open watch stream, as an API server restart does; returns how many were
    /// open. Clients watch again from the last resourceVersion they saw.
    pub fn drop_watches(&self) -> usize {
        let watchers = std::mem::take(&mut self.lock().watchers);
        watchers.iter().filter(|w| !w.3.is_closed()).count()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn handle(&self, parts: &http::request::Parts, body: &[u8]) -> http::Response<FakeBody> {
        let query = parts.uri.query().unwrap_or("").as_bytes();
        let q: HashMap<String, String> = url::form_urlencoded::parse(query).into_owned().collect();
        let header = |h: http::header::HeaderName| {
            let v = parts.headers.get(h).and_then(|v| v.to_str().ok());
            v.unwrap_or("").to_owned()
        };
        let Some(mut r) = parse_path(parts.uri.path()) else {
            let e = ApiErr::new(404, "NotFound", "the server could not find the resource");
            return response(404, body_of(&e.to_json()));
        };
        let watch = matches!(q.get("watch").map(String::as_str), Some("true" | "1"));
        r.verb = match (parts.method.as_str(), r.name.is_some()) {
            ("GET", true) => "get",
            ("GET", false) if watch => "watch",
            ("GET", false) => "list",
            ("POST", false) => "create",
            ("PATCH", true) => "patch",
            ("DELETE", true) => "delete",
            _ => "unsupported",
        }
        .into();
        let content_type = header(http::header::CONTENT_TYPE);
        r.patch_type = (r.verb == "patch").then(|| match content_type.split(';').next() {
            Some("application/apply-patch+yaml") => "apply".into(),
            Some("application/merge-patch+json") => "merge".into(),
            Some("application/json-patch+json") => "json".into(),
            _ => "unsupported".into(),
        });
        r.body = match body {
            [] => None,
            b => serde_json::from_slice(b)
                .ok()
                .or_else(|| serde_saphyr::from_slice(b).ok()),
        };
        r.metadata_only = header(http::header::ACCEPT).contains("as=PartialObjectMetadata");
        r.field_manager = q.get("fieldManager").cloned();
        r.force = q.get("force").is_some_and(|f| f == "true");
        let mut st = self.lock();
        let injected = st.fail_next.iter().position(|(v, res, _)| {
            (*v == r.verb || v == "*") && (*res == r.resource || res == "*")
        });
        let result = match injected {
            Some(at) => Err(ApiErr::injected(st.fail_next.remove(at).2, &r)),
            None if r.verb == "watch" => st.check(&r, &q).map(|()| st.watch(&r, &q)),
            None => st
                .check(&r, &q)
                .and_then(|()| st.dispatch(&mut r))
                .map(|v| body_of(&if r.metadata_only { to_partial(v) } else { v })),
        };
        r.status = match &result {
            Ok(_) if r.created_by_apply || r.verb == "create" => 201,
            Ok(_) => 200,
            Err(e) => e.code,
        };
        let status = r.status;
        st.requests.push(r);
        response(status, result.unwrap_or_else(|e| body_of(&e.to_json())))
    }
}

/// (group, resource plural)
type Gr = (String, String);

/// (group, kind, plural, namespaced)
type Kind = (String, String, String, bool);

/// The configuration each field manager last applied, by (manager, through `/status`),
/// and under [`UPDATE`] what the other writes changed.
type Applied = BTreeMap<(String, bool), Value>;

/// The writers of POST, merge and JSON patches and the helpers, counted as one manager.
const UPDATE: &str = "";

#[derive(Clone, Debug)]
struct Entry {
    obj: Value,
    applied: Applied,
}

/// An open watch: (group and resource, namespace or all, metadata only), and its stream.
type Watcher = (Gr, Option<String>, bool, mpsc::UnboundedSender<Bytes>);

#[derive(Default)]
struct State {
    /// Changes so far: the cluster's resourceVersion is one more (a fresh cluster is at 1,
    /// never at the 0 that means "any").
    rv: u64,
    /// Registered kinds (CRDs), found before [`KINDS`].
    kinds: Vec<Kind>,
    /// Registered status subresources, beside those of [`KINDS`].
    status_sub: BTreeSet<String>,
    store: BTreeMap<Gr, BTreeMap<(String, String), Entry>>,
    watchers: Vec<Watcher>,
    /// Every change (resourceVersion, event, group and resource, object), for watches
    /// resuming from an older resourceVersion.
    log: Vec<(u64, &'static str, Gr, Value)>,
    requests: Vec<RecordedRequest>,
    fail_next: Vec<(String, String, u16)>,
    latency: Duration,
}

#[derive(Debug)]
struct ApiErr {
    code: u16,
    reason: String,
    message: String,
}

impl ApiErr {
    fn new(code: u16, reason: &str, message: impl Into<String>) -> Self {
        let (reason, message) = (reason.to_owned(), message.into());
        ApiErr {
            code,
            reason,
            message,
        }
    }
    fn not_found(gr: &Gr, name: &str) -> Self {
        let msg = format!("{} \"{name}\" not found", qualified(gr));
        ApiErr::new(404, "NotFound", msg)
    }
    fn bad_request(msg: impl Into<String>) -> Self {
        ApiErr::new(400, "BadRequest", msg)
    }
    fn stale(gr: &Gr, name: &str) -> Self {
        let msg = format!(
            "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; \
             please apply your changes to the latest version and try again",
            qualified(gr)
        );
        ApiErr::new(409, "Conflict", msg)
    }
    fn invalid(kind: &str, name: &str, field: &str, what: &str) -> Self {
        let msg = format!("{kind} \"{name}\" is invalid: {field}: {what}");
        ApiErr::new(422, "Invalid", msg)
    }
    /// A failure asked for with [`FakeApi::set_fail_next`], with the reason Kubernetes
    /// gives that status.
    fn injected(code: u16, r: &RecordedRequest) -> Self {
        let status = http::StatusCode::from_u16(code).ok();
        let reason = match code {
            410 => "Expired".into(),
            422 => "Invalid".into(),
            504 => "Timeout".into(),
            _ => match status.and_then(|s| s.canonical_reason()) {
                Some(r) if code != 500 => r.replace(' ', ""),
                _ => "InternalError".into(),
            },
        };
        let what = qualified(&r.gr());
        let msg = format!("injected failure ({code} {reason}) for {what}");
        ApiErr::new(code, &reason, msg)
    }
    fn to_json(&self) -> Value {
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": self.message, "reason": self.reason, "code": self.code})
    }
}

fn qualified(gr: &Gr) -> String {
    match gr.0.as_str() {
        "" => gr.1.clone(),
        g => format!("{}.{g}", gr.1),
    }
}

impl State {
    fn entry(&self, gr: &Gr, ns: &str, name: &str) -> Option<&Entry> {
        self.store.get(gr)?.get(&(ns.to_string(), name.to_string()))
    }

    fn resolve(&self, api_version: &str, kind: &str) -> (Gr, bool) {
        let group = group_of(api_version);
        let Some(k) = self.kinds().find(|k| k.0 == group && k.1 == kind) else {
            panic!("FakeApi: unknown kind {api_version} {kind}; call register_kind first")
        };
        ((k.0, k.2), k.3)
    }

    fn kinds(&self) -> impl Iterator<Item = Kind> + '_ {
        let builtin = KINDS
            .iter()
            .map(|k| (group_of(k.0), k.1.into(), k.2.into(), k.3));
        self.kinds.iter().cloned().chain(builtin)
    }

    /// The kind of a request's resource, when known.
    fn kind_of(&self, r: &RecordedRequest) -> Option<String> {
        let k = self
            .kinds()
            .find(|k| k.0 == r.api_group && k.2 == r.resource);
        k.map(|k| k.1)
    }

    fn has_status(&self, resource: &str) -> bool {
        let builtin = KINDS.iter().any(|k| k.2 == resource && k.4);
        builtin || self.status_sub.contains(resource)
    }

    /// The scope of a write: `None` for a resource without a status subresource (all
    /// fields), else whether it writes only `.status` (else everything but `.status`).
    fn scope(&self, resource: &str, status_write: bool) -> Scope {
        self.has_status(resource).then_some(status_write)
    }

    /// Helper writes: `insert` (upsert, status kept), `update` or `update_status` (the
    /// object must exist; `Some(true)` changes only `.status`).
    fn write_helper(&mut self, mut obj: Value, sub: Option<bool>) -> Value {
        let av = obj["apiVersion"].as_str().expect("object needs apiVersion");
        let kind = obj["kind"].as_str().expect("object needs kind");
        let (gr, namespaced) = self.resolve(av, kind);
        let ns = match obj["metadata"]["namespace"].as_str() {
            _ if !namespaced => String::new(),
            ns => ns.unwrap_or("default").to_string(),
        };
        let name = obj["metadata"]["name"]
            .as_str()
            .expect("object needs metadata.name");
        let name = name.to_string();
        let old = self.entry(&gr, &ns, &name).cloned();
        if sub.is_some() && old.is_none() {
            panic!("FakeApi: {}/{ns}/{name} does not exist", gr.1);
        }
        normalize_secret(&gr, &mut obj);
        if let Some(status) = sub {
            obj = isolate(old.as_ref().map(|o| &o.obj), obj, self.scope(&gr.1, status));
        }
        if let Err(e) = validate(&gr, &name, &obj) {
            panic!(
                "FakeApi: a real API server refuses this object: {}",
                e.message
            );
        }
        let mut applied = old.as_ref().map(|o| o.applied.clone()).unwrap_or_default();
        record_update(&mut applied, old.as_ref().map(|o| &o.obj), &obj);
        self.commit(&gr, &ns, &name, obj, applied, sub == Some(true))
    }

    /// What every request is refused for: a subresource other than `/status` (or one the
    /// resource lacks), a label or field selector.
    fn check(&self, r: &RecordedRequest, q: &HashMap<String, String>) -> Result<(), ApiErr> {
        let sub = r.subresource.as_deref();
        if sub.is_some_and(|s| s != "status" || !self.has_status(&r.resource)) {
            let msg = format!("fake_api: {} has no subresource {sub:?}", r.resource);
            return Err(ApiErr::new(404, "NotFound", msg));
        }
        let selectors = ["labelSelector", "fieldSelector"].map(|s| q.get(s));
        if selectors.iter().flatten().any(|v| !v.is_empty()) {
            let msg = "fake_api: selectors are not supported (the operator sends none)";
            return Err(ApiErr::bad_request(msg));
        }
        Ok(())
    }

    fn dispatch(&mut self, r: &mut RecordedRequest) -> Result<Value, ApiErr> {
        let (gr, name) = (r.gr(), r.obj_name().to_owned());
        let body = r.body.clone().filter(Value::is_object);
        let body = || body.ok_or_else(|| ApiErr::bad_request("request body is not a JSON object"));
        match (r.verb.as_str(), r.patch_type.as_deref()) {
            ("get", _) => self.entry(&gr, r.ns(), &name).map(|e| e.obj.clone()),
            ("list", _) => return Ok(self.list(r)),
            ("create", _) => return self.create(r, body()?),
            ("patch", Some("apply")) => return self.apply(r, body()?),
            ("patch", Some(ptype @ ("merge" | "json"))) => {
                let patch = r.body.clone().unwrap_or_default();
                return self.patch(r, ptype, &patch);
            }
            ("patch", _) => {
                let msg = "the body of the request was in an unknown format";
                return Err(ApiErr::new(415, "UnsupportedMediaType", msg));
            }
            ("delete", _) => self.delete_obj(&gr, r.ns(), &name),
            _ => {
                let msg = "the server does not allow this method on the requested resource";
                return Err(ApiErr::new(405, "MethodNotAllowed", msg));
            }
        }
        .ok_or_else(|| ApiErr::not_found(&gr, &name))
    }

    fn list(&self, r: &RecordedRequest) -> Value {
        let all = self.store.get(&r.gr()).into_iter().flat_map(|m| m.values());
        let items: Vec<&Value> = all
            .map(|e| &e.obj)
            .filter(|o| in_ns(o, &r.namespace))
            .collect();
        let kind = format!("{}List", self.kind_of(r).unwrap_or_default());
        json!({"apiVersion": r.api_version, "kind": kind,
            "metadata": {"resourceVersion": (self.rv + 1).to_string()}, "items": items})
    }

    /// A watch: what it missed since its resourceVersion (everything when it gives none),
    /// then every change until `timeoutSeconds` or [`FakeApi::drop_watches`].
    fn watch(&mut self, r: &RecordedRequest, q: &HashMap<String, String>) -> FakeBody {
        let (gr, ns, meta) = (r.gr(), r.namespace.clone(), r.metadata_only);
        let since = q.get("resourceVersion").and_then(|v| v.parse::<u64>().ok());
        let missed: Vec<(&str, &Value)> = match since.filter(|rv| *rv > 0) {
            None => {
                let all = self.store.get(&gr).into_iter().flat_map(|m| m.values());
                all.map(|e| ("ADDED", &e.obj)).collect()
            }
            Some(since) => {
                let later = self.log.iter().filter(|c| c.0 > since && c.2 == gr);
                later.map(|c| (c.1, &c.3)).collect()
            }
        };
        let visible = missed.into_iter().filter(|(_, o)| in_ns(o, &ns));
        let initial = visible.map(|(ev, o)| event_line(ev, o, meta)).collect();
        let (tx, rx) = mpsc::unbounded_channel();
        self.watchers.push((gr, ns, meta, tx));
        let timeout = q.get("timeoutSeconds").and_then(|s| s.parse().ok());
        let deadline = timeout.map(|s| Box::pin(tokio::time::sleep(Duration::from_secs(s))));
        FakeBody::Watch {
            initial,
            rx: Some(rx),
            deadline,
        }
    }

    fn create(&mut self, r: &RecordedRequest, mut body: Value) -> Result<Value, ApiErr> {
        let Some(name) = body["metadata"]["name"].as_str().filter(|n| !n.is_empty()) else {
            let msg = "metadata.name: Required value (fake_api: no generateName)";
            return Err(ApiErr::new(422, "Invalid", msg));
        };
        let name = name.to_string();
        if r.subresource.is_some() || self.entry(&r.gr(), r.ns(), &name).is_some() {
            let msg = format!("{} \"{name}\" already exists", qualified(&r.gr()));
            return Err(ApiErr::new(409, "AlreadyExists", msg));
        }
        self.fill_type(&mut body, r);
        strip_system(&mut body);
        normalize_secret(&r.gr(), &mut body);
        if let (Some(m), Some(_)) = (body.as_object_mut(), self.scope(&r.resource, false)) {
            m.remove("status");
        }
        let mut applied = Applied::new();
        record_update(&mut applied, None, &body);
        self.store_new(r, &name, body, applied)
    }

    fn patch(&mut self, r: &RecordedRequest, ptype: &str, patch: &Value) -> Result<Value, ApiErr> {
        let (gr, name) = (r.gr(), r.obj_name());
        let old = self.entry(&gr, r.ns(), name).cloned();
        let old = old.ok_or_else(|| ApiErr::not_found(&gr, name))?;
        let mut cand = old.obj.clone();
        if ptype == "merge" {
            json_patch::merge(&mut cand, patch);
        } else {
            apply_json_patch(&mut cand, patch).map_err(|e| ApiErr::new(422, "Invalid", e))?;
        }
        let rv = &cand["metadata"]["resourceVersion"];
        if !rv.is_null() && *rv != old.obj["metadata"]["resourceVersion"] {
            return Err(ApiErr::stale(&gr, name));
        }
        normalize_secret(&gr, &mut cand);
        let new = isolate(Some(&old.obj), cand, self.scope(&r.resource, r.is_status()));
        validate(&gr, name, &new)?;
        let mut applied = old.applied;
        record_update(&mut applied, Some(&old.obj), &new);
        Ok(self.commit(&gr, r.ns(), name, new, applied, r.is_status()))
    }

    /// Server-side apply, as if always forced: the configuration is merged in (list-maps by
    /// key), and what its field manager applied before and applies no more goes ([`prune`]).
    fn apply(&mut self, r: &mut RecordedRequest, mut applied: Value) -> Result<Value, ApiErr> {
        let (gr, name) = (r.gr(), r.obj_name().to_string());
        let Some(manager) = r.field_manager.clone() else {
            let msg = "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value";
            return Err(ApiErr::new(422, "Invalid", msg));
        };
        let existing = self.entry(&gr, r.ns(), &name).cloned();
        let rv = applied["metadata"]["resourceVersion"].as_str();
        if let (Some(e), Some(rv)) = (&existing, rv)
            && Some(rv) != e.obj["metadata"]["resourceVersion"].as_str()
        {
            return Err(ApiErr::stale(&gr, &name));
        }
        r.created_by_apply = existing.is_none();
        let (mut merged, mut configs) = match existing {
            Some(e) => (e.obj, e.applied),
            None if r.is_status() => return Err(ApiErr::not_found(&gr, &name)),
            None => (json!({"metadata": {"name": name}}), Applied::new()),
        };
        self.fill_type(&mut applied, r);
        strip_system(&mut applied);
        normalize_secret(&gr, &mut applied);
        let scope = self.scope(&r.resource, r.is_status());
        if let Some(m) = applied.as_object_mut() {
            m.retain(|k, _| k == "apiVersion" || k == "kind" || in_scope(scope, k));
        }
        let me = (manager, r.is_status());
        if let Some(before) = configs.get(&me) {
            let others = configs.iter().filter(|(k, _)| **k != me).map(|e| e.1);
            let others: Vec<&Value> = others.collect();
            let (new, path) = (Some(&applied), &mut Vec::new());
            prune(&mut merged, before, new, &others, path);
        }
        ssa_merge(&mut Vec::new(), &mut merged, &applied);
        configs.insert(me, applied);
        if r.created_by_apply {
            return self.store_new(r, &name, merged, configs);
        }
        validate(&gr, &name, &merged)?;
        Ok(self.commit(&gr, r.ns(), &name, merged, configs, r.is_status()))
    }

    /// Creates after what a real API server checks on create (POST, or an apply to a
    /// missing object), beyond [`validate`]: nothing in a namespace being deleted (403), no
    /// `events.k8s.io` Event whose note is over 1,024 bytes (422).
    fn store_new(
        &mut self,
        r: &RecordedRequest,
        name: &str,
        obj: Value,
        applied: Applied,
    ) -> Result<Value, ApiErr> {
        let namespace = self.entry(&("".into(), "namespaces".into()), "", r.ns());
        if namespace.is_some_and(|e| !e.obj["metadata"]["deletionTimestamp"].is_null()) {
            let msg = format!(
                "{} \"{name}\" is forbidden: unable to create new content in namespace {} \
                 because it is being terminated",
                qualified(&r.gr()),
                r.ns()
            );
            return Err(ApiErr::new(403, "Forbidden", msg));
        }
        let note = obj["note"].as_str().unwrap_or_default();
        if r.api_group == "events.k8s.io" && note.len() > 1024 {
            let what = "Too long: may not be more than 1024 bytes";
            return Err(ApiErr::invalid("Event.events.k8s.io", name, "note", what));
        }
        validate(&r.gr(), name, &obj)?;
        Ok(self.commit(&r.gr(), r.ns(), name, obj, applied, false))
    }

    fn fill_type(&self, body: &mut Value, r: &RecordedRequest) {
        if let (Some(m), Some(kind)) = (body.as_object_mut(), self.kind_of(r)) {
            m.entry("apiVersion").or_insert(json!(r.api_version));
            m.entry("kind").or_insert(json!(kind));
        }
    }

    /// Stores `new` as the new state of an object, created if missing (system metadata
    /// filled in where the helpers did not give it). A write that changes nothing keeps
    /// the resourceVersion and notifies nobody; an object being deleted whose last
    /// finalizer went is removed.
    fn commit(
        &mut self,
        gr: &Gr,
        ns: &str,
        name: &str,
        mut new: Value,
        applied: Applied,
        status: bool,
    ) -> Value {
        let old = self.entry(gr, ns, name).cloned();
        let mut meta = match &old {
            Some(old) => {
                strip_system(&mut new);
                old.obj["metadata"].clone()
            }
            None => {
                let uid = format!("00000000-0000-4000-8000-{:012x}", self.rv + 2);
                let generation = has_generation(gr).then_some(1);
                json!({"uid": uid, "creationTimestamp": now(), "generation": generation})
            }
        };
        let meta = meta.as_object_mut().expect("metadata");
        meta.retain(|k, v| SYSTEM_META.contains(&k.as_str()) && !v.is_null());
        meta.insert("name".into(), json!(name));
        if !ns.is_empty() {
            meta.insert("namespace".into(), json!(ns));
        }
        if !new["metadata"].is_object() {
            new["metadata"] = json!({});
        }
        let m = new["metadata"].as_object_mut().expect("object");
        m.remove("managedFields");
        for (k, v) in std::mem::take(meta) {
            m.entry(k).or_insert(v);
        }
        if let Some(old) = &old {
            if new == old.obj && applied == old.applied {
                return new;
            }
            if has_generation(gr) && !status && content(&old.obj) != content(&new) {
                let g = old.obj["metadata"]["generation"].as_i64().unwrap_or(0) + 1;
                new["metadata"]["generation"] = json!(g);
            }
        }
        let deleted = !new["metadata"]["deletionTimestamp"].is_null() && finalizers_empty(&new);
        let ev = match (deleted, &old) {
            (true, _) => "DELETED",
            (false, Some(_)) => "MODIFIED",
            (false, None) => "ADDED",
        };
        let obj = self.emit(ev, gr, new);
        let objects = self.store.entry(gr.clone()).or_default();
        let key = (ns.to_string(), name.to_string());
        if deleted {
            objects.remove(&key);
            return obj;
        }
        objects.insert(key, Entry { obj, applied });
        self.entry(gr, ns, name).expect("stored").obj.clone()
    }

    fn delete_obj(&mut self, gr: &Gr, ns: &str, name: &str) -> Option<Value> {
        let key = (ns.to_string(), name.to_string());
        let Entry { mut obj, applied } = self.store.get_mut(gr)?.remove(&key)?;
        if finalizers_empty(&obj) {
            return Some(self.emit("DELETED", gr, obj));
        }
        if obj["metadata"]["deletionTimestamp"].is_null() {
            obj["metadata"]["deletionTimestamp"] = json!(now());
            obj["metadata"]["deletionGracePeriodSeconds"] = json!(0);
            obj = self.emit("MODIFIED", gr, obj);
        }
        let out = obj.clone();
        let objects = self.store.entry(gr.clone()).or_default();
        objects.insert(key, Entry { obj, applied });
        Some(out)
    }

    /// Gives a change its resourceVersion, logs it and tells the open watches; returns the
    /// object as changed.
    fn emit(&mut self, ev: &'static str, gr: &Gr, mut obj: Value) -> Value {
        self.rv += 1;
        let rv = self.rv + 1;
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        self.watchers.retain(|(wgr, ns, meta, tx)| {
            let wanted = wgr == gr && in_ns(&obj, ns);
            if wanted {
                tx.send(event_line(ev, &obj, *meta)).is_ok()
            } else {
                !tx.is_closed()
            }
        });
        self.log.push((rv, ev, gr.clone(), obj.clone()));
        obj
    }
}

/// What a real API server refuses on every write of a Deployment (422): no selector, no
/// container, a container without an image. (A GitOps tool's apply that drops a container
/// the operator co-owns leaves it without an image, and is refused so.)
fn validate(gr: &Gr, name: &str, obj: &Value) -> Result<(), ApiErr> {
    if *gr != ("apps".to_string(), "deployments".to_string()) {
        return Ok(());
    }
    let required = "Required value";
    let invalid = |field: &str| Err(ApiErr::invalid("Deployment.apps", name, field, required));
    let spec = &obj["spec"];
    if !spec["selector"].is_object() {
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

fn parse_path(path: &str) -> Option<RecordedRequest> {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let (group, version, rest) = match *segs.first()? {
        "api" => ("", *segs.get(1)?, segs.get(2..)?),
        "apis" => (*segs.get(1)?, *segs.get(2)?, segs.get(3..)?),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some(ns.to_string()), rest),
        _ => (None, rest),
    };
    let owned = |i: usize| rest.get(i).map(|s| s.to_string());
    (1..=3).contains(&rest.len()).then(|| RecordedRequest {
        api_group: group.into(),
        api_version: [group, version].join("/").trim_start_matches('/').into(),
        resource: rest[0].into(),
        namespace,
        name: owned(1),
        subresource: owned(2),
        ..Default::default()
    })
}

fn group_of(api_version: &str) -> String {
    api_version
        .split_once('/')
        .map_or("", |(g, _)| g)
        .to_owned()
}

fn body_of(v: &Value) -> FakeBody {
    FakeBody::Full(Some(serde_json::to_vec(v).expect("json").into()))
}

fn response(status: u16, body: FakeBody) -> http::Response<FakeBody> {
    let r = http::Response::builder().status(status);
    r.header("content-type", "application/json")
        .body(body)
        .expect("response")
}

/// One line of a watch stream.
fn event_line(ev: &str, obj: &Value, metadata_only: bool) -> Bytes {
    let obj = if metadata_only {
        partial(obj)
    } else {
        obj.clone()
    };
    let mut b = serde_json::to_vec(&json!({"type": ev, "object": obj})).expect("json");
    b.push(b'\n');
    Bytes::from(b)
}

fn in_ns(obj: &Value, ns: &Option<String>) -> bool {
    ns.as_deref()
        .is_none_or(|ns| obj["metadata"]["namespace"] == ns)
}

fn partial(obj: &Value) -> Value {
    json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
        "metadata": obj["metadata"].clone()})
}

fn to_partial(v: Value) -> Value {
    let Some(items) = v["items"].as_array() else {
        return partial(&v);
    };
    let items: Vec<Value> = items.iter().map(partial).collect();
    json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadataList",
        "metadata": v["metadata"].clone(), "items": items})
}

fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn finalizers_empty(obj: &Value) -> bool {
    obj["metadata"]["finalizers"]
        .as_array()
        .is_none_or(Vec::is_empty)
}

fn strip_system(obj: &mut Value) {
    if let Some(m) = obj["metadata"].as_object_mut() {
        m.retain(|k, _| !SYSTEM_META.contains(&k.as_str()));
    }
}

/// What `metadata.generation` counts changes of: all but metadata and status.
fn content(obj: &Value) -> Vec<(&String, &Value)> {
    let fields = obj.as_object().into_iter().flatten();
    fields
        .filter(|(k, _)| *k != "metadata" && *k != "status")
        .collect()
}

/// Whether objects of this group keep `metadata.generation` (bumped when their spec
/// changes): Deployments and custom resources do; Secrets, Namespaces and the rest of the
/// core group, Events and Leases have none (as kube-apiserver 1.20 shows).
fn has_generation(gr: &Gr) -> bool {
    !matches!(gr.0.as_str(), "" | "events.k8s.io" | "coordination.k8s.io")
}

/// The object after a write in `scope` of a resource with a status subresource: `new`
/// with `.status` kept as in `old` (`Some(false)`), or `old` with only `.status` taken
/// from `new` (`Some(true)`).
fn isolate(old: Option<&Value>, new: Value, scope: Scope) -> Value {
    let (from, mut to) = match (scope, old) {
        (Some(true), Some(old)) => (new, old.clone()),
        (Some(false), Some(old)) => (old.clone(), new),
        _ => return new,
    };
    if let Some(m) = to.as_object_mut() {
        match from.get("status") {
            Some(s) => m.insert("status".into(), s.clone()),
            None => m.remove("status"),
        };
    }
    to
}

/// Secrets: `stringData` is folded into base64 `data` like the API server does.
fn normalize_secret(gr: &Gr, obj: &mut Value) {
    use base64::Engine;
    let secret = gr.0.is_empty() && gr.1 == "secrets";
    let Some(Value::Object(sd)) = obj
        .as_object_mut()
        .filter(|_| secret)
        .and_then(|m| m.remove("stringData"))
    else {
        return;
    };
    for (k, v) in sd {
        let s = v
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| v.to_string());
        obj["data"][k.as_str()] = json!(base64::engine::general_purpose::STANDARD.encode(s));
    }
}

// ---------------------------------------------------------------------------------------------
// Server-side apply
// ---------------------------------------------------------------------------------------------

/// What a write covers: `None` every field (no status subresource), `Some(true)` only
/// `.status`, `Some(false)` everything but `.status`.
type Scope = Option<bool>;

fn in_scope(scope: Scope, top: &str) -> bool {
    scope.is_none_or(|status| status == (top == "status"))
}

/// The key field of the list at `path` (list items transparent), if it merges by key.
fn list_key(path: &[String]) -> Option<&'static str> {
    let p = path.join(".");
    LIST_MAPS.iter().find(|(l, _)| *l == p).map(|(_, k)| *k)
}

/// The item of a keyed list with this key value.
fn item<'a>(list: &'a Value, kf: &str, key: &Value) -> Option<&'a Value> {
    list.as_array()?.iter().find(|i| i.get(kf) == Some(key))
}

fn is_empty(v: &Value) -> bool {
    v.as_object().is_some_and(Map::is_empty) || v.as_array().is_some_and(Vec::is_empty)
}

/// Removes from `live` what a field manager's previous configuration `old` set and its new
/// one `new` sets no more, unless another manager's configuration (`others`, the other
/// writers' included) sets it to its value, or its value changed since (whoever changed it
/// owns it now): the fields only that manager owned, which a real API server removes. Maps and lists emptied so go too; the key of a
/// list item stays while anything else of the item does.
fn prune(
    live: &mut Value,
    old: &Value,
    new: Option<&Value>,
    others: &[&Value],
    path: &mut Vec<String>,
) {
    let (Some(old), Some(fields)) = (old.as_object(), live.as_object_mut()) else {
        return;
    };
    for (k, o) in old {
        let Some(l) = fields.get_mut(k) else {
            continue;
        };
        path.push(k.clone());
        let n = new.and_then(|n| n.get(k));
        let theirs: Vec<&Value> = others.iter().filter_map(|v| v.get(k)).collect();
        // a value stays while another configuration sets it (a scalar: to what it is now)
        let composite = o.is_object() || (o.is_array() && list_key(path).is_some());
        let held = n.is_some() || theirs.iter().any(|t| composite || **t == *l);
        let had = !is_empty(l);
        let gone = match (o, list_key(path)) {
            (Value::Object(_), _) => {
                prune(l, o, n, &theirs, path);
                had && is_empty(l)
            }
            (Value::Array(items), Some(kf)) => {
                for o in items.iter().filter(|o| o.get(kf).is_some()) {
                    prune_item(l, o, n, &theirs, kf, path);
                }
                had && is_empty(l)
            }
            _ => l == o,
        };
        if gone && !held {
            fields.remove(k);
        }
        path.pop();
    }
}

/// [`prune`] for the item `old` of a keyed list: the item goes when nothing but its key is
/// left and no configuration sets it any more.
fn prune_item(
    live: &mut Value,
    old: &Value,
    new: Option<&Value>,
    others: &[&Value],
    kf: &str,
    path: &mut Vec<String>,
) {
    let key = &old[kf];
    let n = new.and_then(|n| item(n, kf, key));
    let theirs: Vec<&Value> = others.iter().filter_map(|t| item(t, kf, key)).collect();
    let Some(items) = live.as_array_mut() else {
        return;
    };
    let Some(at) = items.iter().position(|i| i.get(kf) == Some(key)) else {
        return;
    };
    let mut fields = old.clone();
    fields.as_object_mut().map(|m| m.remove(kf));
    prune(&mut items[at], &fields, n, &theirs, path);
    let only_key = items[at].as_object().is_some_and(|m| m.len() <= 1);
    if only_key && n.is_none() && theirs.is_empty() {
        items.remove(at);
    }
}

/// What `new` sets that `old` did not have so (list-maps by key): what a write takes over.
fn changed(old: Option<&Value>, new: &Value, path: &mut Vec<String>) -> Option<Value> {
    match (old, new, list_key(path)) {
        (Some(o), _, _) if o == new => None,
        (Some(Value::Object(o)), Value::Object(n), _) => {
            let mut out = Map::new();
            for (k, v) in n {
                path.push(k.clone());
                out.extend(changed(o.get(k), v, path).map(|c| (k.clone(), c)));
                path.pop();
            }
            (!out.is_empty()).then_some(Value::Object(out))
        }
        (Some(o @ Value::Array(_)), Value::Array(n), Some(kf)) => {
            let each = n.iter().filter_map(|i| {
                let mut c = changed(item(o, kf, &i[kf]), i, path)?;
                c[kf] = i[kf].clone();
                Some(c)
            });
            let items: Vec<Value> = each.collect();
            (!items.is_empty()).then_some(Value::Array(items))
        }
        _ => Some(new.clone()),
    }
}

/// A write other than an apply: what it changed is [`UPDATE`]'s, beside the configurations
/// of the managers that apply (a real server records it so, and keeps such a field when a
/// manager that applied the same value stops applying it).
fn record_update(applied: &mut Applied, old: Option<&Value>, new: &Value) {
    let mine = applied.entry((UPDATE.into(), false)).or_insert(json!({}));
    // what the write removed is nobody's any more
    let before = mine.clone();
    prune(mine, &before, Some(new), &[], &mut Vec::new());
    if let Some(c) = changed(old, new, &mut Vec::new()) {
        ssa_merge(&mut Vec::new(), mine, &c);
    }
    applied.retain(|_, config| !is_empty(config));
}

fn strip_nulls(v: &Value) -> Value {
    let Value::Object(m) = v else {
        return v.clone();
    };
    let kept = m.iter().filter(|(_, v)| !v.is_null());
    Value::Object(kept.map(|(k, v)| (k.clone(), strip_nulls(v))).collect())
}

/// Merges an applied configuration into the live object: maps recursively, list-maps by key,
/// everything else replaced.
fn ssa_merge(path: &mut Vec<String>, cur: &mut Value, applied: &Value) {
    let Some(a) = applied.as_object() else {
        *cur = applied.clone();
        return;
    };
    if !cur.is_object() {
        *cur = json!({});
    }
    let c = cur.as_object_mut().expect("object");
    for (k, av) in a.iter().filter(|(_, av)| !av.is_null()) {
        path.push(k.clone());
        match (c.get_mut(k), av, list_key(path)) {
            (Some(cv @ Value::Object(_)), Value::Object(_), _) => ssa_merge(path, cv, av),
            (Some(Value::Array(ci)), Value::Array(items), Some(kf)) => {
                for item in items {
                    match ci.iter_mut().find(|x| x.get(kf) == item.get(kf)) {
                        Some(existing) => ssa_merge(path, existing, item),
                        None => ci.push(strip_nulls(item)),
                    }
                }
            }
            _ => {
                c.insert(k.clone(), strip_nulls(av));
            }
        }
        path.pop();
    }
}

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
