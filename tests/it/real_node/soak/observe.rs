//! What the run watches: the API server's fail-open count and each webhook process's memory
//! and refusals, read from /metrics and the node.

use super::*;

/// Reads the API server's and the webhook's /metrics every `SCRAPE_EVERY` until told to stop.
pub(super) async fn observe(shared: Arc<Shared>) {
    while !shared.stop_observing.load(Ordering::Relaxed) {
        scrape_fail_open(&shared).await;
        scrape_webhooks(&shared).await;
        let next = Instant::now() + SCRAPE_EVERY;
        while Instant::now() < next && !shared.stop_observing.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

pub(super) async fn get_text(client: &Client, path: &str) -> Result<String, String> {
    let request = http::Request::get(path)
        .body(Vec::new())
        .map_err(|e| e.to_string())?;
    tokio::time::timeout(REQUEST_TIMEOUT, client.request_text(request))
        .await
        .map_err(|_| format!("GET {path}: no answer"))?
        .map_err(|e| format!("GET {path}: {e}"))
}

/// The API server's fail-open count for the webhook, recorded when it answers (not while it
/// restarts).
pub(super) async fn scrape_fail_open(shared: &Shared) {
    let Ok(text) = get_text(&shared.client, "/metrics").await else {
        return;
    };
    let Ok(samples) = promql::samples(&text) else {
        return;
    };
    let count: f64 = samples
        .iter()
        .filter(|(series, _)| {
            series.metric == "apiserver_admission_webhook_fail_open_count"
                && series.labels.get("name").map(String::as_str) == Some(WEBHOOK_NAME)
        })
        .map(|(_, value)| value)
        .sum();
    let started = samples
        .iter()
        .find(|(series, _)| series.metric == "process_start_time_seconds")
        .map_or(0.0, |(_, value)| *value);
    locked(&shared.fail_open).push((shared.clock.now(), started, count));
}

/// The pid on the node of each running container task, by container id.
pub(super) async fn task_pids(containerd: &str) -> BTreeMap<String, u32> {
    let containerd = containerd.to_string();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("ctr")
            .args(["--address", &containerd, "-n", "k8s.io", "tasks", "ls"])
            .output()
    })
    .await;
    let Ok(Ok(out)) = out else {
        return BTreeMap::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let id = fields.next()?.to_string();
            Some((id, fields.next()?.parse().ok()?))
        })
        .collect()
}

/// `RssAnon` of process `pid`, bytes.
pub(super) fn anonymous_memory(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix("RssAnon:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024.0)
}

/// Each running webhook process's memory and refusal counts, through the API server's proxy,
/// and its anonymous memory on the node.
pub(super) async fn scrape_webhooks(shared: &Shared) {
    let pods = Api::<Pod>::namespaced(shared.client.clone(), RELEASE_NS);
    let selector = ListParams::default().labels("app.kubernetes.io/name=pod-identity-webhook");
    let Ok(list) = pods.list(&selector).await else {
        return;
    };
    let pids = task_pids(&shared.containerd).await;
    for pod in list.items {
        let Some(name) = pod.metadata.name else {
            continue;
        };
        let container = pod
            .status
            .as_ref()
            .and_then(|status| {
                status
                    .container_statuses
                    .as_ref()?
                    .first()?
                    .container_id
                    .clone()
            })
            .unwrap_or_default();
        let pid = container
            .strip_prefix("containerd://")
            .and_then(|id| pids.get(id));
        let path = format!("/api/v1/namespaces/{RELEASE_NS}/pods/{name}:9999/proxy/metrics");
        let Ok(text) = get_text(&shared.client, &path).await else {
            continue;
        };
        let Ok(samples) = promql::samples(&text) else {
            continue;
        };
        let value = |metric: &str| {
            samples
                .iter()
                .find(|(series, _)| series.metric == metric)
                .map(|(_, value)| *value)
        };
        let (Some(rss), Some(process_start)) = (
            value("process_resident_memory_bytes"),
            value("process_start_time_seconds"),
        ) else {
            continue;
        };
        let rejected = samples
            .iter()
            .filter(|(series, _)| series.metric == "pod_identity_webhook_rejected_total")
            .filter_map(|(series, value)| Some((series.labels.get("reason")?.clone(), *value)))
            .collect();
        locked(&shared.webhook).push(WebhookSample {
            at: shared.clock.now(),
            pod: name,
            process_start,
            rss,
            anon: pid.and_then(|&pid| anonymous_memory(pid)),
            rejected,
        });
    }
}
