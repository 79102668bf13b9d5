//! A small stand-in for the Kubernetes API server, over plain HTTP on 127.0.0.1, for the
//! watch, fallback-lookup and certificate tests. It keeps objects as JSON with a global
//! resourceVersion and an event log, and speaks what kube-rs uses:
//! - GET list (optionally metadata-only: `Accept: ...;as=PartialObjectMetadataList;...`),
//!   GET with `watch=true` (JSON lines from the given resourceVersion; `410 Gone` as an ERROR
//!   event when that version was compacted away), GET one, POST, PUT (resourceVersion checked:
//!   409 Conflict), PATCH (JSON patch, merge patch), DELETE;
//! - `fieldSelector` on `metadata.name` / `metadata.namespace`;
//! - core resources under `/api/v1` and `admissionregistration.k8s.io/v1` under `/apis`.
//!
//! Tests act on it directly too: put and delete objects as another client would, cut every
//! open watch, delete unseen (compacting the event log), inject failures and delays, and
//! count requests.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::Router;
use futures::StreamExt;
use http::{header, Method, StatusCode};
use serde_json::{json, Value};
use tokio::sync::broadcast;

/// Request kinds, for counting and fault injection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verb {
    List,
    Watch,
    Get,
    Create,
    Update,
    Patch,
    Delete,
}

/// A resource the fake serves: plural name, apiVersion, kind.
struct ResourceType {
    plural: &'static str,
    api_version: &'static str,
    kind: &'static str,
}

const RESOURCES: &[ResourceType] = &[
    ResourceType {
        plural: "serviceaccounts",
        api_version: "v1",
        kind: "ServiceAccount",
    },
    ResourceType {
        plural: "secrets",
        api_version: "v1",
        kind: "Secret",
    },
    ResourceType {
        plural: "configmaps",
        api_version: "v1",
        kind: "ConfigMap",
    },
    ResourceType {
        plural: "mutatingwebhookconfigurations",
        api_version: "admissionregistration.k8s.io/v1",
        kind: "MutatingWebhookConfiguration",
    },
];

fn resource_by_plural(plural: &str) -> Option<&'static ResourceType> {
    RESOURCES.iter().find(|r| r.plural == plural)
}

fn resource_by_kind(kind: &str) -> Option<&'static ResourceType> {
    RESOURCES.iter().find(|r| r.kind == kind)
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Key {
    plural: String,
    namespace: String,
    name: String,
}

impl Key {
    /// The key of a whole object: its kind, metadata.name and (when namespaced) namespace.
    fn of(object: &Value) -> Self {
        let kind = object["kind"].as_str().expect("object has a kind");
        let resource = resource_by_kind(kind).expect("known kind");
        Key {
            plural: resource.plural.into(),
            namespace: object["metadata"]["namespace"]
                .as_str()
                .unwrap_or_default()
                .into(),
            name: object["metadata"]["name"]
                .as_str()
                .expect("object has a name")
                .into(),
        }
    }
}

#[derive(Debug, Clone)]
struct Event {
    rv: u64,
    key: Key,
    kind: &'static str,
    object: Value,
}

#[derive(Debug, Clone)]
enum Broadcast {
    Event(Event),
    /// Every open watch ends (as when the API server restarts or a connection drops).
    Cut,
}

#[derive(Default)]
struct State_ {
    objects: BTreeMap<Key, Value>,
    rv: u64,
    log: Vec<Event>,
    /// Watches from a resourceVersion below this get 410 Gone.
    compacted_below: u64,
    /// Failures to answer with, by verb and resource, consumed one per request.
    faults: HashMap<(Verb, String), VecDeque<u16>>,
    delays: HashMap<(Verb, String), Duration>,
    counts: HashMap<(Verb, String), usize>,
    metadata_only_counts: HashMap<(Verb, String), usize>,
}

struct Shared {
    state: Mutex<State_>,
    events: broadcast::Sender<Broadcast>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State_> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The running fake; dropped with the test's runtime.
pub struct FakeApi {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
}

impl FakeApi {
    /// Serves on an ephemeral port of 127.0.0.1 on the current runtime.
    pub async fn start() -> Self {
        let (events, _) = broadcast::channel(4096);
        let shared = Arc::new(Shared {
            state: Mutex::new(State_ {
                rv: 100,
                ..Default::default()
            }),
            events,
        });
        let router = Router::new().fallback(handle).with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, router).await.ok();
        });
        Self { addr, shared }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Writes a kubeconfig at `path` for a webhook process to reach this fake (no credentials:
    /// the fake does not check them).
    #[allow(dead_code)] // for benches/load.rs
    pub fn write_kubeconfig(&self, path: &std::path::Path) {
        std::fs::write(
            path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters: [{{name: fake, cluster: {{server: \"{}\"}}}}]\n\
                 users: [{{name: fake, user: {{}}}}]\ncontexts: [{{name: fake, context: {{cluster: fake, user: fake}}}}]\n\
                 current-context: fake\n",
                self.url()
            ),
        )
        .unwrap();
    }

    /// A kube client talking to this fake.
    pub fn client(&self) -> kube::Client {
        let mut config = kube::Config::new(self.url().parse().unwrap());
        config.default_namespace = "default".into();
        kube::Client::try_from(config).unwrap()
    }

    /// Creates or replaces an object (kind, metadata.name and, when namespaced,
    /// metadata.namespace required), as another client would. Returns its resourceVersion.
    pub fn put(&self, object: Value) -> u64 {
        let key = Key::of(&object);
        let mut state = self.shared.lock();
        let kind = if state.objects.contains_key(&key) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        store(&mut state, &self.shared.events, key, object, kind)
    }

    /// Stores an object without any watch event, as if the watch had not delivered it yet:
    /// only a direct GET finds it.
    pub fn put_unwatched(&self, object: Value) {
        let key = Key::of(&object);
        self.shared.lock().objects.insert(key, object);
    }

    /// Deletes an object as another client would; false when there was none.
    pub fn delete(&self, plural: &str, namespace: &str, name: &str) -> bool {
        let key = Key {
            plural: plural.into(),
            namespace: namespace.into(),
            name: name.into(),
        };
        let mut state = self.shared.lock();
        remove(&mut state, &self.shared.events, &key)
    }

    /// Deletes an object without recording an event: as if the deletion happened while the
    /// watch was away and its event was compacted out of the log.
    pub fn delete_silently(&self, plural: &str, namespace: &str, name: &str) {
        let key = Key {
            plural: plural.into(),
            namespace: namespace.into(),
            name: name.into(),
        };
        let mut state = self.shared.lock();
        state.objects.remove(&key);
        state.rv += 1;
        state.compacted_below = state.rv + 1;
    }

    pub fn get(&self, plural: &str, namespace: &str, name: &str) -> Option<Value> {
        let key = Key {
            plural: plural.into(),
            namespace: namespace.into(),
            name: name.into(),
        };
        self.shared.lock().objects.get(&key).cloned()
    }

    /// Ends every open watch; clients resume from their last resourceVersion.
    pub fn cut_watches(&self) {
        let _ = self.shared.events.send(Broadcast::Cut);
    }

    /// The next `times` requests of `verb` on `plural` fail with HTTP `code`.
    pub fn fail(&self, verb: Verb, plural: &str, code: u16, times: usize) {
        let mut state = self.shared.lock();
        let queue = state.faults.entry((verb, plural.into())).or_default();
        queue.extend(std::iter::repeat_n(code, times));
    }

    /// Every request of `verb` on `plural` waits `delay` before being answered.
    pub fn delay(&self, verb: Verb, plural: &str, delay: Duration) {
        self.shared
            .lock()
            .delays
            .insert((verb, plural.into()), delay);
    }

    /// Requests of `verb` on `plural` seen so far.
    pub fn count(&self, verb: Verb, plural: &str) -> usize {
        self.shared
            .lock()
            .counts
            .get(&(verb, plural.to_string()))
            .copied()
            .unwrap_or(0)
    }

    /// Requests of `verb` on `plural` that asked for metadata only (PartialObjectMetadata).
    pub fn count_metadata_only(&self, verb: Verb, plural: &str) -> usize {
        let state = self.shared.lock();
        state
            .metadata_only_counts
            .get(&(verb, plural.to_string()))
            .copied()
            .unwrap_or(0)
    }
}

fn store(
    state: &mut State_,
    events: &broadcast::Sender<Broadcast>,
    key: Key,
    mut object: Value,
    kind: &'static str,
) -> u64 {
    state.rv += 1;
    let rv = state.rv;
    let metadata = object
        .as_object_mut()
        .expect("objects are JSON objects")
        .entry("metadata")
        .or_insert_with(|| json!({}));
    metadata["resourceVersion"] = json!(rv.to_string());
    if metadata.get("uid").is_none() {
        metadata["uid"] = json!(format!("uid-{rv}"));
    }
    if !key.namespace.is_empty() {
        metadata["namespace"] = json!(key.namespace);
    }
    let event = Event {
        rv,
        key: key.clone(),
        kind,
        object: object.clone(),
    };
    state.objects.insert(key, object);
    state.log.push(event.clone());
    let _ = events.send(Broadcast::Event(event));
    rv
}

fn remove(state: &mut State_, events: &broadcast::Sender<Broadcast>, key: &Key) -> bool {
    let Some(mut object) = state.objects.remove(key) else {
        return false;
    };
    state.rv += 1;
    object["metadata"]["resourceVersion"] = json!(state.rv.to_string());
    let event = Event {
        rv: state.rv,
        key: key.clone(),
        kind: "DELETED",
        object,
    };
    state.log.push(event.clone());
    let _ = events.send(Broadcast::Event(event));
    true
}

/// What a request addresses.
struct Target {
    resource: &'static ResourceType,
    /// `None`: across all namespaces (or a cluster-scoped resource).
    namespace: Option<String>,
    name: Option<String>,
}

fn parse_path(path: &str) -> Option<Target> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let rest = match segments.as_slice() {
        ["api", "v1", rest @ ..] => rest,
        ["apis", "admissionregistration.k8s.io", "v1", rest @ ..] => rest,
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", namespace, rest @ ..] if !rest.is_empty() => {
            (Some(namespace.to_string()), rest)
        }
        rest => (None, rest),
    };
    let (plural, name) = match rest {
        [plural] => (*plural, None),
        [plural, name] => (*plural, Some(name.to_string())),
        _ => return None,
    };
    Some(Target {
        resource: resource_by_plural(plural)?,
        namespace,
        name,
    })
}

struct Query {
    watch: bool,
    resource_version: Option<u64>,
    field_name: Option<String>,
    field_namespace: Option<String>,
}

fn parse_query(query: Option<&str>) -> Query {
    let pairs: HashMap<String, String> =
        form_urlencoded::parse(query.unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    let mut field_name = None;
    let mut field_namespace = None;
    for selector in pairs
        .get("fieldSelector")
        .map(String::as_str)
        .unwrap_or_default()
        .split(',')
    {
        if let Some((field, value)) = selector.split_once('=') {
            let value = value.trim_start_matches('=').to_string();
            match field {
                "metadata.name" => field_name = Some(value),
                "metadata.namespace" => field_namespace = Some(value),
                _ => {}
            }
        }
    }
    Query {
        watch: matches!(pairs.get("watch").map(String::as_str), Some("true" | "1")),
        resource_version: pairs.get("resourceVersion").and_then(|rv| rv.parse().ok()),
        field_name,
        field_namespace,
    }
}

fn status(code: u16, reason: &str, message: impl Into<String>) -> Response {
    let body = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message.into(),
        "reason": reason,
        "code": code,
    });
    (
        StatusCode::from_u16(code).unwrap(),
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn json_response(code: StatusCode, body: &Value) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// The object as the client asked for it: whole, or only its metadata.
fn shaped(object: &Value, metadata_only: bool) -> Value {
    if metadata_only {
        json!({
            "apiVersion": "meta.k8s.io/v1",
            "kind": "PartialObjectMetadata",
            "metadata": object["metadata"],
        })
    } else {
        object.clone()
    }
}

fn matches(key: &Key, target: &Target, query: &Query) -> bool {
    key.plural == target.resource.plural
        && target
            .namespace
            .as_ref()
            .is_none_or(|ns| *ns == key.namespace)
        && query
            .field_name
            .as_ref()
            .is_none_or(|name| *name == key.name)
        && query
            .field_namespace
            .as_ref()
            .is_none_or(|ns| *ns == key.namespace)
}

async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let Some(target) = parse_path(parts.uri.path()) else {
        return status(
            404,
            "NotFound",
            format!("the fake API does not serve {}", parts.uri.path()),
        );
    };
    let query = parse_query(parts.uri.query());
    let metadata_only = parts
        .headers
        .get(header::ACCEPT)
        .and_then(|accept| accept.to_str().ok())
        .is_some_and(|accept| accept.contains("as=PartialObjectMetadata"));
    let verb = match (&parts.method, target.name.is_some()) {
        (&Method::GET, false) if query.watch => Verb::Watch,
        (&Method::GET, false) => Verb::List,
        (&Method::GET, true) => Verb::Get,
        (&Method::POST, false) => Verb::Create,
        (&Method::PUT, true) => Verb::Update,
        (&Method::PATCH, true) => Verb::Patch,
        (&Method::DELETE, true) => Verb::Delete,
        _ => return status(405, "MethodNotAllowed", "method not allowed"),
    };
    let plural = target.resource.plural.to_string();
    let (fault, delay) = {
        let mut state = shared.lock();
        *state.counts.entry((verb, plural.clone())).or_default() += 1;
        if metadata_only {
            *state
                .metadata_only_counts
                .entry((verb, plural.clone()))
                .or_default() += 1;
        }
        let fault = state
            .faults
            .get_mut(&(verb, plural.clone()))
            .and_then(VecDeque::pop_front);
        (fault, state.delays.get(&(verb, plural.clone())).copied())
    };
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
    if let Some(code) = fault {
        return status(code, "InternalError", format!("injected failure {code}"));
    }
    let body = axum::body::to_bytes(body, 16 << 20)
        .await
        .unwrap_or_default();
    let namespace = target.namespace.clone().unwrap_or_default();
    match verb {
        Verb::List => {
            let state = shared.lock();
            let items: Vec<Value> = state
                .objects
                .iter()
                .filter(|(key, _)| matches(key, &target, &query))
                .map(|(_, object)| shaped(object, metadata_only))
                .collect();
            let (api_version, kind) = if metadata_only {
                (
                    "meta.k8s.io/v1".to_string(),
                    "PartialObjectMetadataList".to_string(),
                )
            } else {
                (
                    target.resource.api_version.to_string(),
                    format!("{}List", target.resource.kind),
                )
            };
            json_response(
                StatusCode::OK,
                &json!({
                    "apiVersion": api_version,
                    "kind": kind,
                    "metadata": {"resourceVersion": state.rv.to_string()},
                    "items": items,
                }),
            )
        }
        Verb::Watch => watch(&shared, target, query, metadata_only),
        Verb::Get => {
            let key = Key {
                plural,
                namespace,
                name: target.name.clone().unwrap(),
            };
            match shared.lock().objects.get(&key) {
                Some(object) => json_response(StatusCode::OK, &shaped(object, metadata_only)),
                None => status(
                    404,
                    "NotFound",
                    format!("{} {:?} not found", target.resource.plural, key.name),
                ),
            }
        }
        Verb::Create => {
            let Ok(mut object) = serde_json::from_slice::<Value>(&body) else {
                return status(400, "BadRequest", "body is not JSON");
            };
            let Some(name) = object["metadata"]["name"].as_str().map(str::to_string) else {
                return status(422, "Invalid", "metadata.name is required");
            };
            object["apiVersion"] = json!(target.resource.api_version);
            object["kind"] = json!(target.resource.kind);
            let key = Key {
                plural,
                namespace,
                name: name.clone(),
            };
            let mut state = shared.lock();
            if state.objects.contains_key(&key) {
                return status(
                    409,
                    "AlreadyExists",
                    format!("{} {name:?} already exists", target.resource.plural),
                );
            }
            store(&mut state, &shared.events, key.clone(), object, "ADDED");
            json_response(StatusCode::CREATED, &state.objects[&key])
        }
        Verb::Update => {
            let Ok(mut object) = serde_json::from_slice::<Value>(&body) else {
                return status(400, "BadRequest", "body is not JSON");
            };
            let key = Key {
                plural,
                namespace,
                name: target.name.clone().unwrap(),
            };
            let mut state = shared.lock();
            let Some(current) = state.objects.get(&key) else {
                return status(404, "NotFound", format!("{:?} not found", key.name));
            };
            let sent = object["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or_default();
            let current_rv = current["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or_default();
            if !sent.is_empty() && sent != current_rv {
                return status(
                    409,
                    "Conflict",
                    format!(
                        "Operation cannot be fulfilled on {} {:?}: the object has been modified",
                        target.resource.plural, key.name
                    ),
                );
            }
            if current.get("type").is_some() && object.get("type") != current.get("type") {
                return status(422, "Invalid", "type: field is immutable");
            }
            object["apiVersion"] = json!(target.resource.api_version);
            object["kind"] = json!(target.resource.kind);
            store(&mut state, &shared.events, key.clone(), object, "MODIFIED");
            json_response(StatusCode::OK, &state.objects[&key])
        }
        Verb::Patch => {
            let key = Key {
                plural,
                namespace,
                name: target.name.clone().unwrap(),
            };
            let content_type = parts
                .headers
                .get(header::CONTENT_TYPE)
                .and_then(|value| value.to_str().ok())
                .unwrap_or_default()
                .to_string();
            let Ok(patch) = serde_json::from_slice::<Value>(&body) else {
                return status(400, "BadRequest", "patch is not JSON");
            };
            let mut state = shared.lock();
            let Some(mut object) = state.objects.get(&key).cloned() else {
                return status(404, "NotFound", format!("{:?} not found", key.name));
            };
            if content_type.starts_with("application/json-patch+json") {
                let Ok(patch) = serde_json::from_value::<json_patch::Patch>(patch) else {
                    return status(400, "BadRequest", "not a JSON patch");
                };
                if let Err(err) = json_patch::patch(&mut object, &patch) {
                    return status(
                        422,
                        "Invalid",
                        format!("the JSON patch does not apply: {err}"),
                    );
                }
            } else {
                json_patch::merge(&mut object, &patch);
            }
            store(&mut state, &shared.events, key.clone(), object, "MODIFIED");
            json_response(StatusCode::OK, &shaped(&state.objects[&key], metadata_only))
        }
        Verb::Delete => {
            let key = Key {
                plural,
                namespace,
                name: target.name.clone().unwrap(),
            };
            let mut state = shared.lock();
            let object = state.objects.get(&key).cloned();
            if remove(&mut state, &shared.events, &key) {
                json_response(StatusCode::OK, &object.unwrap_or_default())
            } else {
                status(404, "NotFound", format!("{:?} not found", key.name))
            }
        }
    }
}

fn watch(shared: &Arc<Shared>, target: Target, query: Query, metadata_only: bool) -> Response {
    let line = |kind: &str, object: Value| {
        Ok::<_, Infallible>(Bytes::from(format!(
            "{}\n",
            json!({"type": kind, "object": object})
        )))
    };
    let (backlog, receiver) = {
        let state = shared.lock();
        // Subscribe under the lock, so nothing falls between the backlog and the live events.
        let receiver = shared.events.subscribe();
        let from = query.resource_version.unwrap_or(state.rv);
        if from < state.compacted_below && from != 0 {
            let gone = json!({
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": format!("too old resource version: {from}"), "reason": "Expired", "code": 410,
            });
            let body = Body::from_stream(futures::stream::iter([line("ERROR", gone)]));
            return (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                body,
            )
                .into_response();
        }
        let backlog: Vec<_> = state
            .log
            .iter()
            .filter(|event| event.rv > from && matches(&event.key, &target, &query))
            .map(|event| line(event.kind, shaped(&event.object, metadata_only)))
            .collect();
        (backlog, receiver)
    };
    let live = futures::stream::unfold(receiver, move |mut receiver| {
        let target = Target {
            resource: target.resource,
            namespace: target.namespace.clone(),
            name: None,
        };
        let query = Query {
            watch: true,
            resource_version: None,
            field_name: query.field_name.clone(),
            field_namespace: query.field_namespace.clone(),
        };
        async move {
            loop {
                match receiver.recv().await {
                    Ok(Broadcast::Event(event)) if matches(&event.key, &target, &query) => {
                        let item = line(event.kind, shaped(&event.object, metadata_only));
                        return Some((item, receiver));
                    }
                    Ok(Broadcast::Event(_)) => {}
                    Ok(Broadcast::Cut) | Err(broadcast::error::RecvError::Closed) => return None,
                    Err(broadcast::error::RecvError::Lagged(_)) => return None,
                }
            }
        }
    });
    let body = Body::from_stream(futures::stream::iter(backlog).chain(live));
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

/// A ServiceAccount object, annotated with `role` under `eks.amazonaws.com/role-arn` if given.
pub fn service_account(namespace: &str, name: &str, role: Option<&str>) -> Value {
    let mut object = json!({
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": name, "namespace": namespace},
        "secrets": [{"name": format!("{name}-token")}],
    });
    if let Some(role) = role {
        object["metadata"]["annotations"] = json!({
            "eks.amazonaws.com/role-arn": role,
            "kubectl.kubernetes.io/last-applied-configuration": "{}",
        });
    }
    object
}

/// A MutatingWebhookConfiguration with `entries` webhooks and no caBundle.
pub fn webhook_configuration(name: &str, entries: usize) -> Value {
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": (0..entries).map(|i| json!({
            "name": format!("w{i}.pod-identity-webhook.amazonaws.com"),
            "clientConfig": {"service": {"name": "pod-identity-webhook", "namespace": "eks", "path": "/mutate"}},
            "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}],
            "sideEffects": "None",
            "admissionReviewVersions": ["v1", "v1beta1"],
            "futureField": {"kept": true},
        })).collect::<Vec<_>>(),
    })
}

/// A ConfigMap in `namespace` holding `data`.
pub fn config_map(namespace: &str, name: &str, data: &[(&str, &str)]) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace},
        "data": data.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
    })
}
