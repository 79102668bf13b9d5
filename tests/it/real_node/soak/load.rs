//! The load: the ServiceAccounts and their role changes, the clients creating pods, and the
//! reading back of every batch they created.

use super::*;

pub(super) fn role_name(account: usize, change: usize) -> String {
    format!(
        "arn:aws:iam::111122223333:role/{}-{change}",
        SERVICE_ACCOUNTS[account]
    )
}

/// The namespace (a new one: an earlier run's may still be terminating) and the
/// ServiceAccounts with their first roles, then waits until the webhook answers with them.
pub(super) async fn prepare(client: &Client) -> Result<(), String> {
    let namespaces = Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone());
    let namespace = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}
    }))
    .expect("a valid namespace");
    let started = Instant::now();
    loop {
        match namespaces.create(&PostParams::default(), &namespace).await {
            Ok(_) => break,
            // Left by an earlier run: gone once its pods are.
            Err(kube::Error::Api(status)) if status.code == 409 => {
                let _ = namespaces.delete(NAMESPACE, &DeleteParams::default()).await;
            }
            Err(e) => return Err(format!("creating namespace {NAMESPACE}: {e}")),
        }
        if started.elapsed() > Duration::from_secs(120) {
            return Err(format!(
                "namespace {NAMESPACE} from an earlier run still there after 120 s"
            ));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let accounts = Api::<ServiceAccount>::namespaced(client.clone(), NAMESPACE);
    for (account, name) in SERVICE_ACCOUNTS.iter().enumerate() {
        let object = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": name, "annotations": {ROLE_KEY: role_name(account, 0)}}
        }))
        .expect("a valid ServiceAccount");
        accounts
            .create(&PostParams::default(), &object)
            .await
            .map_err(|e| format!("creating ServiceAccount {name}: {e}"))?;
    }
    let pods = Api::<Pod>::namespaced(client.clone(), NAMESPACE);
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    for (account, name) in SERVICE_ACCOUNTS.iter().enumerate() {
        let want = role_name(account, 0);
        let started = Instant::now();
        loop {
            let answer = pods
                .create(&dry_run, &soak_pod(&format!("probe-{account}"), account, 0))
                .await;
            let seen = answer.as_ref().ok().and_then(role_of);
            if seen.as_deref() == Some(want.as_str()) {
                break;
            }
            if started.elapsed() > Duration::from_secs(60) {
                return Err(format!(
                    "a dry-run pod under {name} does not get {want} after 60 s: {:?}",
                    answer.map(|_| seen)
                ));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    Ok(())
}

/// A pod of `batch` under ServiceAccount `account`, which no scheduler takes.
pub(super) fn soak_pod(name: &str, account: usize, batch: u64) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {BATCH_LABEL: batch.to_string()}},
        "spec": {
            "serviceAccountName": SERVICE_ACCOUNTS[account],
            // No such scheduler: the pod stays Pending and unbound.
            "schedulerName": "piw-soak-unscheduled",
            "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "app", "image": "registry.example.com/soak/app:1"}]
        }
    }))
    .expect("a valid pod")
}

/// The AWS_ROLE_ARN the webhook put in the first container, if any.
pub(super) fn role_of(pod: &Pod) -> Option<String> {
    pod.spec
        .as_ref()?
        .containers
        .first()?
        .env
        .as_ref()?
        .iter()
        .find(|env| env.name == "AWS_ROLE_ARN")?
        .value
        .clone()
}

/// One client: a pod every `CLIENTS / rate` seconds (its own offset), each retried until the
/// API server stored it; when a creation runs late the next starts at once, without bursts.
pub(super) async fn create_pods(shared: Arc<Shared>, client: Client, index: usize) {
    let pods = Api::<Pod>::namespaced(client, NAMESPACE);
    let interval = Duration::from_secs_f64(CLIENTS as f64 / shared.settings.rate);
    let mut next = shared.clock.0 + interval.mul_f64(index as f64 / CLIENTS as f64);
    let mut sequence = 0usize;
    while !shared.stop_creating.load(Ordering::Relaxed) {
        tokio::time::sleep_until(next.into()).await;
        let sent = shared.clock.now();
        let batch = (sent / BATCH_SECONDS) as u64;
        shared.in_progress[index].store(batch, Ordering::Relaxed);
        let name = format!("soak-{index}-{sequence}");
        let account = (index + sequence) % SERVICE_ACCOUNTS.len();
        let pod = soak_pod(&name, account, batch);
        match create_pod(&shared, &pods, &pod).await {
            Ok(()) => {
                let created = Created {
                    name,
                    account,
                    sent,
                    answered: shared.clock.now(),
                };
                locked(&shared.created)
                    .entry(batch)
                    .or_default()
                    .push(created);
            }
            Err(problem) => shared.fail(format!("pod {name} (sent at {sent:.1} s): {problem}")),
        }
        sequence += 1;
        next = (next + interval).max(Instant::now());
    }
    shared.in_progress[index].store(u64::MAX, Ordering::Relaxed);
}

/// Creates `pod`, trying again while the API server is away or overloaded; Err when it
/// refused the pod or did not take it within `POD_DEADLINE`.
pub(super) async fn create_pod(shared: &Shared, pods: &Api<Pod>, pod: &Pod) -> Result<(), String> {
    let first = Instant::now();
    loop {
        let attempt =
            tokio::time::timeout(REQUEST_TIMEOUT, pods.create(&PostParams::default(), pod)).await;
        let last = match attempt {
            Ok(Ok(_)) => return Ok(()),
            // An earlier attempt was stored and its answer lost (the API server went away).
            Ok(Err(kube::Error::Api(status))) if status.code == 409 => return Ok(()),
            // The API server shutting down or starting (429 with Retry-After, 5xx), unless
            // the webhook's call is what failed: with failurePolicy Ignore it never should.
            Ok(Err(kube::Error::Api(status)))
                if (status.code == 429 || status.code >= 500)
                    && !status.message.contains("webhook") =>
            {
                format!("{} {}", status.code, status.message)
            }
            Ok(Err(kube::Error::Api(status))) => {
                return Err(format!("refused: {} {}", status.code, status.message))
            }
            Ok(Err(other)) => other.to_string(),
            Err(_) => format!("no answer within {REQUEST_TIMEOUT:?}"),
        };
        shared.retried.fetch_add(1, Ordering::Relaxed);
        if first.elapsed() > POD_DEADLINE {
            return Err(format!("not created within {POD_DEADLINE:?}; last: {last}"));
        }
        tokio::time::sleep(RETRY_PAUSE).await;
    }
}

/// Changes `account`'s role every `role_every` (the second account half a period later),
/// each change retried until the API server stored it.
pub(super) async fn change_roles(shared: Arc<Shared>, account: usize) {
    let accounts = Api::<ServiceAccount>::namespaced(shared.client.clone(), NAMESPACE);
    let period = shared.settings.role_every.as_secs_f64();
    let offset = period * account as f64 / SERVICE_ACCOUNTS.len() as f64;
    for change in 1.. {
        let at = offset + change as f64 * period;
        if at >= shared.settings.load.as_secs_f64() || shared.stop_creating.load(Ordering::Relaxed)
        {
            return;
        }
        tokio::time::sleep_until(shared.clock.instant(at).into()).await;
        let role = role_name(account, change);
        let patch = json!({"metadata": {"annotations": {ROLE_KEY: role}}});
        let sent = shared.clock.now();
        let started = Instant::now();
        loop {
            let attempt = tokio::time::timeout(
                REQUEST_TIMEOUT,
                accounts.patch(
                    SERVICE_ACCOUNTS[account],
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                ),
            )
            .await;
            if matches!(attempt, Ok(Ok(_))) {
                break;
            }
            if started.elapsed() > POD_DEADLINE {
                shared.fail(format!(
                    "the role change to {role} was not stored within {POD_DEADLINE:?}: {attempt:?}"
                ));
                return;
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
        let answered = shared.clock.now();
        locked(&shared.roles[account]).push(RoleChange {
            role,
            sent,
            answered,
        });
    }
}

/// Reads each batch back from the store once every client has moved past it, pairs every
/// stored pod with its creation, and deletes the batch; returns every pod so read.
pub(super) async fn verify_batches(shared: Arc<Shared>) -> Vec<Stored> {
    let pods = Api::<Pod>::namespaced(shared.client.clone(), NAMESPACE);
    let mut stored = Vec::new();
    let mut batch = 0u64;
    loop {
        let oldest_in_progress = shared
            .in_progress
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .min()
            .unwrap_or(u64::MAX);
        let last = locked(&shared.created).keys().next_back().copied();
        if batch < oldest_in_progress && last.is_some_and(|last| batch <= last) {
            let created = locked(&shared.created).remove(&batch).unwrap_or_default();
            match read_batch(&pods, batch, created).await {
                Ok(mut read) => stored.append(&mut read),
                Err(problem) => shared.fail(problem),
            }
            batch += 1;
            continue;
        }
        if oldest_in_progress == u64::MAX && last.is_none_or(|last| batch > last) {
            return stored;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

pub(super) async fn read_batch(
    pods: &Api<Pod>,
    batch: u64,
    created: Vec<Created>,
) -> Result<Vec<Stored>, String> {
    let selector = ListParams::default().labels(&format!("{BATCH_LABEL}={batch}"));
    let started = Instant::now();
    let list = loop {
        match pods.list(&selector).await {
            Ok(list) => break list,
            Err(e) if started.elapsed() > POD_DEADLINE => {
                return Err(format!("listing batch {batch}: {e}"))
            }
            Err(_) => tokio::time::sleep(RETRY_PAUSE).await,
        }
    };
    let mut by_name: BTreeMap<String, Pod> = list
        .items
        .into_iter()
        .filter_map(|pod| Some((pod.metadata.name.clone()?, pod)))
        .collect();
    let mut stored = Vec::with_capacity(created.len());
    let mut missing = Vec::new();
    for pod in created {
        match by_name.remove(&pod.name) {
            Some(object) => stored.push(Stored {
                role: role_of(&object),
                created: pod,
            }),
            None => missing.push(pod.name),
        }
    }
    let started = Instant::now();
    while let Err(e) = pods
        .delete_collection(&DeleteParams::default(), &selector)
        .await
    {
        if started.elapsed() > POD_DEADLINE {
            return Err(format!("deleting batch {batch}: {e}"));
        }
        tokio::time::sleep(RETRY_PAUSE).await;
    }
    if !missing.is_empty() || !by_name.is_empty() {
        return Err(format!(
            "batch {batch}: created but not stored {missing:?}; stored but not created {:?}",
            by_name.keys().collect::<Vec<_>>()
        ));
    }
    Ok(stored)
}
