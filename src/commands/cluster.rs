//! The thin adapter between the IRSA commands and the cluster: raw API calls that return
//! JSON (or why not), the TokenRequest, the server-side dry run, and the HTTPS probe of a
//! webhook URL verified with its caBundle. Interpretation lives in `crate::irsa`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt as _;
use serde_json::{json, Value};

use crate::cli::ClusterAccess;

/// Every call is bounded: a doctor must answer, not hang.
const CALL_TIMEOUT: Duration = Duration::from_secs(20);

/// One API answer.
#[derive(Debug)]
pub struct ApiResponse {
    pub status: u16,
    pub body: Value,
    pub warnings: Vec<String>,
}

impl ApiResponse {
    pub(crate) fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The API server's message for a failed call.
    pub fn message(&self) -> String {
        self.body["message"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| format!("HTTP {}", self.status))
    }
}

/// A client from `--kubeconfig` when given, else in-cluster or `$KUBECONFIG`; `--kube-api`
/// replaces the server URL. Errors say what to pass.
pub async fn client(access: &ClusterAccess) -> Result<kube::Client, String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut config = match &access.kubeconfig {
        Some(path) => config_from_kubeconfig(path).await?,
        None => kube::Config::infer().await.map_err(|err| {
            format!("no Kubernetes configuration found (in-cluster, $KUBECONFIG or ~/.kube/config): {err}; pass --kubeconfig")
        })?,
    };
    if let Some(url) = &access.kube_api {
        config.cluster_url = url
            .parse()
            .map_err(|err| format!("--kube-api {url:?} is not a URL: {err}"))?;
    }
    config.connect_timeout = Some(Duration::from_secs(5));
    config.read_timeout = Some(CALL_TIMEOUT);
    kube::Client::try_from(config)
        .map_err(|err| format!("cannot build the Kubernetes client: {err}"))
}

/// The client configuration in the kubeconfig file at `path` (its current context); errors name
/// the file as `--kubeconfig`, the flag that gives it. Public so the real-cluster tests connect
/// the same way.
pub async fn config_from_kubeconfig(path: &Path) -> Result<kube::Config, String> {
    let kubeconfig = kube::config::Kubeconfig::read_from(path)
        .map_err(|err| format!("--kubeconfig {}: {err}", path.display()))?;
    kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default())
        .await
        .map_err(|err| format!("--kubeconfig {}: {err}", path.display()))
}

/// What most calls accept. The API server serves the JWKS only as application/jwk-set+json.
const ACCEPT_JSON: &str = "application/json, application/jwk-set+json";
/// Only the metadata of a list's items (PartialObjectMetadataList), where the API server
/// offers it (any current one), else the list itself.
const ACCEPT_METADATA_LIST: &str =
    "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1, application/json";
/// Only an object's metadata (PartialObjectMetadata).
const ACCEPT_METADATA: &str =
    "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1, application/json";

/// One request; Err only when no HTTP answer came.
pub async fn call(
    client: &kube::Client,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<ApiResponse, String> {
    call_accepting(client, method, path, body, ACCEPT_JSON).await
}

async fn call_accepting(
    client: &kube::Client,
    method: &str,
    path: &str,
    body: Option<&Value>,
    accept: &str,
) -> Result<ApiResponse, String> {
    let (status, warnings, bytes) = exchange(client, method, path, body, accept).await?;
    Ok(ApiResponse {
        status,
        body: json_or_text(&bytes),
        warnings,
    })
}

/// The answer as JSON, or as a JSON string when it is not JSON.
fn json_or_text(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
}

/// One request: the status, the `Warning` headers and the body's bytes.
async fn exchange(
    client: &kube::Client,
    method: &str,
    path: &str,
    body: Option<&Value>,
    accept: &str,
) -> Result<(u16, Vec<String>, bytes::Bytes), String> {
    let bytes = body
        .map(|b| serde_json::to_vec(b).expect("JSON values always serialize"))
        .unwrap_or_default();
    let request = http::Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::ACCEPT, accept)
        .body(kube::client::Body::from(bytes))
        .map_err(|err| format!("{method} {path}: {err}"))?;
    let exchange = async {
        let response = client.send(request).await.map_err(|err| err.to_string())?;
        let status = response.status().as_u16();
        let warnings = response
            .headers()
            .get_all("warning")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::to_string)
            .collect();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|err| format!("reading the answer: {err}"))?
            .to_bytes();
        Ok((status, warnings, bytes))
    };
    tokio::time::timeout(CALL_TIMEOUT, exchange)
        .await
        .map_err(|_| {
            format!(
                "{method} {path}: no answer within {} s",
                CALL_TIMEOUT.as_secs()
            )
        })?
        .map_err(|err: String| format!("{method} {path}: {err}"))
}

/// GET returning the object, `None` on 404, Err with the API server's message otherwise.
pub async fn get(client: &kube::Client, path: &str) -> Result<Option<Value>, String> {
    let response = call(client, "GET", path, None).await?;
    match response.status {
        404 => Ok(None),
        _ if response.is_success() => Ok(Some(response.body)),
        _ => Err(format!("GET {path}: {}", response.message())),
    }
}

/// GET of an object's metadata only; `None` on 404.
pub(crate) async fn get_metadata(
    client: &kube::Client,
    path: &str,
) -> Result<Option<Value>, String> {
    let response = call_accepting(client, "GET", path, None, ACCEPT_METADATA).await?;
    match response.status {
        404 => Ok(None),
        _ if response.is_success() => Ok(Some(response.body)),
        _ => Err(format!("GET {path}: {}", response.message())),
    }
}

/// What a paged list reads of each item.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Items {
    Whole,
    Metadata,
}

/// A page of a list as the API server sends it, its items left as text: each is read into a
/// tree only when its turn comes, so a page costs its bytes and one item's tree.
#[derive(serde::Deserialize)]
struct Page<'a> {
    #[serde(default, borrow)]
    metadata: PageMetadata<'a>,
    #[serde(default, borrow)]
    items: Option<Vec<&'a serde_json::value::RawValue>>,
}

#[derive(Default, serde::Deserialize)]
struct PageMetadata<'a> {
    #[serde(default, rename = "continue", borrow)]
    next: Option<std::borrow::Cow<'a, str>>,
}

/// Lists `path` (which may carry a query) `limit` items at a time, following `continue`, and
/// hands each item to `each`, so only one page is held at once. Returns the number of
/// requests made.
pub(crate) async fn list_pages(
    client: &kube::Client,
    path: &str,
    limit: u32,
    items: Items,
    mut each: impl FnMut(Value),
) -> Result<usize, String> {
    let accept = match items {
        Items::Whole => ACCEPT_JSON,
        Items::Metadata => ACCEPT_METADATA_LIST,
    };
    let separator = if path.contains('?') { '&' } else { '?' };
    let mut requests = 0;
    let mut next: Option<String> = None;
    loop {
        let mut url = format!("{path}{separator}limit={limit}");
        if let Some(token) = &next {
            url.push_str("&continue=");
            url.extend(percent_encoding::utf8_percent_encode(
                token,
                percent_encoding::NON_ALPHANUMERIC,
            ));
        }
        let (status, _, bytes) = exchange(client, "GET", &url, None, accept).await?;
        requests += 1;
        let failed = |what: &str| {
            let answer = ApiResponse {
                status,
                body: json_or_text(&bytes),
                warnings: Vec::new(),
            };
            format!("GET {path}: {what}{}", answer.message())
        };
        if status == 410 {
            return Err(failed("the list's snapshot expired between two pages; run again, with a larger --page-size if it keeps happening: "));
        }
        if !(200..300).contains(&status) {
            return Err(failed(""));
        }
        let page: Page<'_> = serde_json::from_slice(&bytes)
            .map_err(|err| format!("GET {path}: the answer is not a list: {err}"))?;
        for item in page.items.unwrap_or_default() {
            let item = serde_json::from_str(item.get())
                .map_err(|err| format!("GET {path}: an item does not read: {err}"))?;
            each(item);
        }
        next = page
            .metadata
            .next
            .filter(|token| !token.is_empty())
            .map(|token| token.into_owned());
        if next.is_none() {
            return Ok(requests);
        }
    }
}

/// A token for the ServiceAccount with this audience (TokenRequest, the minimum lifetime).
pub(crate) async fn request_token(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    audience: &str,
) -> Result<String, String> {
    let path = format!("/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token");
    let body = json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {"audiences": [audience], "expirationSeconds": 600},
    });
    let response = call(client, "POST", &path, Some(&body)).await?;
    if !response.is_success() {
        return Err(response.message());
    }
    response.body["status"]["token"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| "the TokenRequest answer has no status.token".into())
}

/// Creates `pod` with `dryRun=All`: the whole admission chain runs, nothing is stored.
pub(crate) async fn dry_run_pod(
    client: &kube::Client,
    namespace: &str,
    pod: &Value,
) -> Result<(Value, Vec<String>), String> {
    let path = format!("/api/v1/namespaces/{namespace}/pods?dryRun=All");
    let response = call(client, "POST", &path, Some(pod)).await?;
    if response.is_success() {
        Ok((response.body, response.warnings))
    } else {
        Err(response.message())
    }
}

/// Pods of the namespace that run under the ServiceAccount.
pub(crate) async fn pods_of(
    client: &kube::Client,
    namespace: &str,
    service_account: &str,
) -> Result<Vec<Value>, String> {
    let path = format!("/api/v1/namespaces/{namespace}/pods?fieldSelector=spec.serviceAccountName%3D{service_account}");
    match get(client, &path).await? {
        Some(list) => Ok(list["items"].as_array().cloned().unwrap_or_default()),
        None => Ok(Vec::new()),
    }
}

/// Ready and total endpoints of a Service, from its EndpointSlices.
pub(crate) async fn service_endpoints(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> Result<(usize, usize), String> {
    if get(
        client,
        &format!("/api/v1/namespaces/{namespace}/services/{name}"),
    )
    .await?
    .is_none()
    {
        return Err(format!("service {namespace}/{name} does not exist"));
    }
    let path = format!("/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices?labelSelector=kubernetes.io%2Fservice-name%3D{name}");
    let slices = get(client, &path).await?.unwrap_or_default();
    let endpoints: Vec<&Value> = slices["items"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|slice| slice["endpoints"].as_array().into_iter().flatten())
        .collect();
    let ready = endpoints
        .iter()
        .filter(|e| e["conditions"]["ready"] != false)
        .count();
    Ok((ready, endpoints.len()))
}

/// HTTPS `GET /readyz` on the webhook URL's host, trusting only the caBundle (or the system
/// of none: no roots, so the error says so). Returns the status and body, or why it failed.
pub(crate) async fn probe_url(url: &str, ca_bundle: &[u8]) -> Result<(u16, String), String> {
    let uri: http::Uri = url
        .parse()
        .map_err(|err| format!("clientConfig.url {url:?} is not a URL: {err}"))?;
    let host = uri
        .host()
        .ok_or_else(|| format!("clientConfig.url {url:?} has no host"))?
        .to_string();
    let port = uri.port_u16().unwrap_or(443);
    let mut roots = rustls::RootCertStore::empty();
    for block in pem::parse_many(ca_bundle).unwrap_or_default() {
        if block.tag() == "CERTIFICATE" {
            let _ = roots.add(block.contents().to_vec().into());
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|err| err.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let host_name = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let server_name = rustls_pki_types::ServerName::try_from(host_name.clone())
        .map_err(|err| format!("host {host:?}: {err}"))?;
    let exchange = async move {
        let tcp = tokio::net::TcpStream::connect((host_name.as_str(), port))
            .await
            .map_err(|err| err.to_string())?;
        let tls = connector
            .connect(server_name, tcp)
            .await
            .map_err(|err| err.to_string())?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                .await
                .map_err(|err| err.to_string())?;
        tokio::spawn(connection);
        let request = http::Request::get("/readyz")
            .header(http::header::HOST, format!("{host}:{port}"))
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .map_err(|err| err.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|err| err.to_string())?;
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|err| err.to_string())?
            .to_bytes();
        Ok::<_, String>((status, String::from_utf8_lossy(&body).into_owned()))
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .map_err(|_| "no answer within 10 s".to_string())?
}
