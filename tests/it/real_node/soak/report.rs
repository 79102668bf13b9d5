//! The verdict: every stored pod judged against its ServiceAccount's history, fail-open
//! admissions per disruption, the memory trend, and the report printed.

use super::*;

/// The API server's "failing open" log lines for the webhook, by reason.
pub(super) struct FailOpenLog {
    /// (byte offset of the line, reason).
    lines: Vec<(u64, String)>,
}

impl FailOpenLog {
    pub(super) fn read(log: &[u8], range: Range<u64>) -> Self {
        let mut lines = Vec::new();
        let mut offset = range.start;
        let start = (range.start as usize).min(log.len());
        let end = (range.end as usize).min(log.len());
        for line in log[start..end].split(|&b| b == b'\n') {
            let text = String::from_utf8_lossy(line);
            if text.contains("failing open") && text.contains(WEBHOOK_NAME) {
                lines.push((offset, Self::reason(&text)));
            }
            offset += line.len() as u64 + 1;
        }
        FailOpenLog { lines }
    }

    /// The cause in a "Failed calling webhook, failing open" line, without addresses.
    fn reason(line: &str) -> String {
        for (needle, reason) in [
            ("connection refused", "connection refused"),
            ("connection reset", "connection reset"),
            ("no endpoints available", "no endpoints available"),
            ("context deadline exceeded", "timeout"),
            ("Client.Timeout", "timeout"),
            ("tls:", "TLS handshake"),
            ("EOF", "EOF"),
            ("not found", "Service or endpoints not found"),
        ] {
            if line.contains(needle) {
                return reason.to_string();
            }
        }
        let tail = line.rsplit(": ").next().unwrap_or(line);
        tail.chars().take(120).collect()
    }

    /// Reasons of the lines logged within `range`, counted.
    fn reasons(&self, range: &Range<u64>) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for (_, reason) in self.lines.iter().filter(|(at, _)| range.contains(at)) {
            *counts.entry(reason.clone()).or_insert(0) += 1;
        }
        counts
    }
}

/// Where a role a pod carries stands in its ServiceAccount's history.
#[derive(Debug, PartialEq)]
pub(super) enum RoleVerdict {
    /// The role the account had at some moment while the pod was being created.
    Current,
    /// An earlier role, `lag` seconds after the change that replaced it was stored.
    Previous { change: usize, lag: f64 },
    /// No role, one from a later change, or one never given.
    Wrong,
}

pub(super) fn judge_role(history: &[RoleChange], pod: &Created, role: &str) -> RoleVerdict {
    let Some(index) = history.iter().position(|change| change.role == role) else {
        return RoleVerdict::Wrong;
    };
    // The role may be in effect from its change's request until the next change is stored.
    let from = if index == 0 {
        f64::NEG_INFINITY
    } else {
        history[index].sent
    };
    let until = history
        .get(index + 1)
        .map_or(f64::INFINITY, |next| next.answered);
    if from <= pod.answered && pod.sent <= until {
        return RoleVerdict::Current;
    }
    // Stale: replaced before the pod was sent. How stale it may be is the replacing change's
    // propagation bound, which outside an API server restart leaves room for one change only.
    if pod.sent > until {
        return RoleVerdict::Previous {
            change: index + 1,
            lag: pod.sent - until,
        };
    }
    RoleVerdict::Wrong
}

/// How long after it was stored at `stored` a role change may take to reach every pod. While
/// the API server restarts, the webhook's watch fails and waits before trying again, as
/// client-go's reflector does: 800 ms doubling, each wait up to twice its nominal length
/// (jitter). So after an outage of `t` seconds its next attempt comes within `2t + 1.6` s of
/// the API server's return, and a change stored around then reaches the webhook only at that
/// attempt.
pub(super) fn propagation_bound(windows: &[Window], stored: f64) -> f64 {
    // A change stored just before the restart may not have been sent on the watch yet.
    let restart = windows.iter().find(|w| {
        w.kind == Disruption::ApiServerRestart
            && w.start - PROPAGATION_BOUND <= stored
            && stored <= w.end
    });
    match restart {
        Some(w) => PROPAGATION_BOUND + 2.0 * (w.recovered - w.start) + 1.6,
        None => PROPAGATION_BOUND,
    }
}

/// Which disruption's window a moment or a span falls in ("steady" outside all).
pub(super) fn window_of(windows: &[Window], from: f64, to: f64) -> Option<usize> {
    windows.iter().position(|w| w.overlaps(from, to))
}

/// Increases of a counter between consecutive samples (when, process start, value): from 0
/// when its process started again.
pub(super) fn increases(samples: &[(f64, f64, f64)]) -> Vec<(f64, f64, f64)> {
    samples
        .windows(2)
        .map(|pair| {
            let ((t0, started0, v0), (t1, started1, v1)) = (pair[0], pair[1]);
            let restarted = started1 != started0 || v1 < v0;
            (t0, t1, if restarted { v1 } else { v1 - v0 })
        })
        .collect()
}

/// Least-squares slope of `points` (x, y), in y per x; None with fewer than two distinct x.
pub(super) fn slope(points: &[(f64, f64)]) -> Option<f64> {
    let n = points.len() as f64;
    let mean_x = points.iter().map(|p| p.0).sum::<f64>() / n;
    let mean_y = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mean_x).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mean_x) * (p.1 - mean_y)).sum();
    (sxx > 0.0).then(|| sxy / sxx)
}

pub(super) const MIB: f64 = 1024.0 * 1024.0;

/// One webhook process's samples once warm: (seconds into the run, resident MiB, anonymous
/// MiB when read).
pub(super) struct Process {
    pod: String,
    warm: Vec<(f64, f64, Option<f64>)>,
}

/// Per disruption window (and "steady" for the rest): what happened to admissions.
#[derive(Default, Clone)]
pub(super) struct WindowCounts {
    pods: usize,
    without_identity: usize,
    fail_open: f64,
    reasons: BTreeMap<String, usize>,
}

/// Pods of one ServiceAccount that carried a role after `change` had replaced it.
struct StaleRole {
    account: usize,
    change: usize,
    pods: usize,
    /// The longest any of them came after the change was stored.
    lag: f64,
    /// How long that may be ([`propagation_bound`]).
    bound: f64,
}

/// The run's figures and verdicts.
pub(super) struct Report {
    settings: Settings,
    load_seconds: f64,
    pods: usize,
    failures: Vec<String>,
    retried: usize,
    windows: Vec<Window>,
    /// Per window, then "steady" last.
    counts: Vec<WindowCounts>,
    fail_open_total: f64,
    fail_open_log_total: usize,
    wrong_roles: Vec<String>,
    current: usize,
    stale: Vec<StaleRole>,
    role_changes: usize,
    /// Each webhook process's samples once warm.
    processes: Vec<Process>,
    /// Refusals summed over every webhook process (the largest count each reached).
    refusals: BTreeMap<String, f64>,
}

impl Report {
    pub(super) fn new(
        settings: Settings,
        load_seconds: f64,
        stored: Vec<Stored>,
        windows: Vec<Window>,
        shared: &Shared,
        log: FailOpenLog,
    ) -> Self {
        let steady = windows.len();
        let mut counts = vec![WindowCounts::default(); steady + 1];
        let histories: Vec<Vec<RoleChange>> =
            shared.roles.iter().map(|r| locked(r).clone()).collect();
        let mut wrong_roles = Vec::new();
        let mut current = 0;
        let mut stale: BTreeMap<(usize, usize), (usize, f64)> = BTreeMap::new();
        for pod in &stored {
            let at = window_of(&windows, pod.created.sent, pod.created.answered).unwrap_or(steady);
            counts[at].pods += 1;
            let Some(role) = &pod.role else {
                counts[at].without_identity += 1;
                continue;
            };
            match judge_role(&histories[pod.created.account], &pod.created, role) {
                RoleVerdict::Current => current += 1,
                RoleVerdict::Previous { change, lag } => {
                    let entry = stale.entry((pod.created.account, change)).or_default();
                    entry.0 += 1;
                    entry.1 = entry.1.max(lag);
                }
                RoleVerdict::Wrong => wrong_roles.push(format!(
                    "{} (sent {:.2} s, answered {:.2} s) has {role}",
                    pod.created.name, pod.created.sent, pod.created.answered
                )),
            }
        }

        let mut fail_open = locked(&shared.fail_open).clone();
        fail_open.sort_by(|a, b| a.0.total_cmp(&b.0));
        // A scrape that found no count at all (the API server just started) is no sample.
        fail_open.retain(|sample| sample.1 > 0.0);
        let mut fail_open_total = 0.0;
        for (from, to, increase) in increases(&fail_open) {
            fail_open_total += increase;
            let at = windows
                .iter()
                .position(|w| from >= w.start && to <= w.end)
                .or_else(|| windows.iter().position(|w| w.start <= to && to <= w.end))
                .unwrap_or(steady);
            counts[at].fail_open += increase;
        }
        let mut outside = log.reasons(&(0..u64::MAX));
        for (at, window) in windows.iter().enumerate() {
            counts[at].reasons = log.reasons(&window.log);
            for (reason, n) in &counts[at].reasons {
                if let Some(left) = outside.get_mut(reason) {
                    *left -= n;
                }
            }
        }
        outside.retain(|_, n| *n > 0);
        counts[steady].reasons = outside;

        let samples = locked(&shared.webhook).clone();
        let wall_start = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0)
            - shared.clock.now();
        let mut by_process: BTreeMap<(String, u64), Vec<&WebhookSample>> = BTreeMap::new();
        for sample in &samples {
            by_process
                .entry((sample.pod.clone(), sample.process_start as u64))
                .or_default()
                .push(sample);
        }
        let mut refusals: BTreeMap<String, f64> = BTreeMap::new();
        let mut processes = Vec::new();
        for ((pod, _), samples) in &by_process {
            // What a process counted up to its last sample: each counter's largest value.
            let mut largest: BTreeMap<&str, f64> = BTreeMap::new();
            for sample in samples {
                for (reason, value) in &sample.rejected {
                    let entry = largest.entry(reason).or_insert(0.0);
                    *entry = entry.max(*value);
                }
            }
            for (reason, value) in largest {
                *refusals.entry(reason.to_string()).or_insert(0.0) += value;
            }
            let warm: Vec<(f64, f64, Option<f64>)> = samples
                .iter()
                .filter(|s| wall_start + s.at - s.process_start >= WARM_SECONDS)
                .map(|s| (s.at, s.rss / MIB, s.anon.map(|anon| anon / MIB)))
                .collect();
            if !warm.is_empty() {
                processes.push(Process {
                    pod: pod.clone(),
                    warm,
                });
            }
        }
        let stale = stale
            .into_iter()
            .map(|((account, change), (pods, lag))| StaleRole {
                account,
                change,
                pods,
                lag,
                bound: propagation_bound(&windows, histories[account][change].answered),
            })
            .collect();

        Report {
            settings,
            load_seconds,
            pods: stored.len(),
            failures: locked(&shared.failures).clone(),
            retried: shared.retried.load(Ordering::Relaxed),
            windows,
            counts,
            fail_open_total,
            fail_open_log_total: log.lines.len(),
            wrong_roles,
            current,
            stale,
            role_changes: histories.iter().map(|h| h.len() - 1).sum(),
            processes,
            refusals,
        }
    }

    fn steady(&self) -> &WindowCounts {
        &self.counts[self.windows.len()]
    }

    /// (seconds into the run, MiB) of every warm sample: anonymous memory, else resident.
    fn memory(&self, anonymous: bool) -> Vec<(f64, f64)> {
        let mut points: Vec<(f64, f64)> = self
            .processes
            .iter()
            .flat_map(|p| &p.warm)
            .filter_map(|&(at, rss, anon)| Some((at, if anonymous { anon? } else { rss })))
            .collect();
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        points
    }

    /// The rise across the run of the least-squares line through the warm samples.
    fn memory_rise_mib(&self, anonymous: bool) -> Option<f64> {
        let points = self.memory(anonymous);
        let span = points.last()?.0 - points.first()?.0;
        slope(&points).map(|s| s * span)
    }

    fn largest_lag(&self) -> f64 {
        self.stale.iter().map(|s| s.lag).fold(0.0, f64::max)
    }

    /// The changes whose stale pods outlasted their bound.
    fn late_changes(&self) -> impl Iterator<Item = &StaleRole> {
        self.stale.iter().filter(|s| s.lag > s.bound)
    }

    /// What makes the run fail; empty when it passed.
    pub(super) fn problems(&self) -> Vec<String> {
        let mut problems = self.failures.clone();
        for (window, counts) in self.windows.iter().zip(&self.counts) {
            if window.kind == Disruption::ContainerKilled {
                continue;
            }
            if counts.without_identity > 0 || counts.fail_open > 0.0 {
                problems.push(format!(
                    "{} at {:.1} s: {} pods stored without an identity, {} admissions failed open",
                    window.kind.describe(),
                    window.start,
                    counts.without_identity,
                    counts.fail_open
                ));
            }
        }
        let steady = self.steady();
        if steady.without_identity > 0 || steady.fail_open > 0.0 {
            problems.push(format!(
                "between disruptions: {} pods stored without an identity, {} admissions failed open",
                steady.without_identity, steady.fail_open
            ));
        }
        let without: usize = self.counts.iter().map(|c| c.without_identity).sum();
        if (without as f64) > self.fail_open_total {
            problems.push(format!(
                "{without} pods stored without an identity, but the API server counted only {} \
                 admissions failing open",
                self.fail_open_total
            ));
        }
        if !self.wrong_roles.is_empty() {
            problems.push(format!(
                "{} pods carry a role their ServiceAccount never had or had only later: {:?}",
                self.wrong_roles.len(),
                &self.wrong_roles[..self.wrong_roles.len().min(10)]
            ));
        }
        for late in self.late_changes() {
            problems.push(format!(
                "role change {}#{} took {:.2} s to reach every pod, over its {:.1} s bound",
                SERVICE_ACCOUNTS[late.account], late.change, late.lag, late.bound
            ));
        }
        match self.memory_rise_mib(true) {
            Some(rise) if rise > MEMORY_RISE_LIMIT_MIB => problems.push(format!(
                "the webhook's anonymous memory rose by {rise:.1} MiB across the run \
                 (limit {MEMORY_RISE_LIMIT_MIB} MiB)"
            )),
            Some(_) => {}
            None => problems.push("no memory samples of a warm webhook process".to_string()),
        }
        for (reason, count) in &self.refusals {
            if *count > 0.0 && !HARMLESS_REFUSALS.contains(&reason.as_str()) {
                problems.push(format!(
                    "the webhook refused the API server {count} times (reason=\"{reason}\")"
                ));
            }
        }
        if self.pods == 0 {
            problems.push("no pod was created".to_string());
        }
        problems
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = &self.settings;
        writeln!(
            f,
            "## Soak: {:.0} s of load, {} pods/s target over {CLIENTS} clients, a webhook \
             restart every {} s, roles changing every {} s",
            self.load_seconds,
            s.rate,
            s.restart_every.as_secs(),
            s.role_every.as_secs()
        )?;
        writeln!(
            f,
            "\npods created and checked in the store: {} ({:.1}/s); creation attempts retried \
             (API server away or slow): {}; failures: {}",
            self.pods,
            self.pods as f64 / self.load_seconds.max(1.0),
            self.retried,
            self.failures.len()
        )?;
        writeln!(
            f,
            "\n| disruption | at s | recovered after s | window s | pods | without identity | fail-open (API server) | logged reasons | detail |"
        )?;
        writeln!(f, "|---|---:|---:|---:|---:|---:|---:|---|---|")?;
        let rows = self
            .windows
            .iter()
            .map(|w| {
                (
                    w.kind.describe().to_string(),
                    format!("{:.1}", w.start),
                    format!("{:.1}", w.recovered - w.start),
                    format!("{:.1}", w.end - w.start),
                    w.detail.clone(),
                )
            })
            .chain(std::iter::once((
                "between disruptions".to_string(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
            )));
        for (row, counts) in rows.zip(&self.counts) {
            let reasons: Vec<String> = counts
                .reasons
                .iter()
                .map(|(reason, n)| format!("{n} {reason}"))
                .collect();
            writeln!(
                f,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                row.0,
                row.1,
                row.2,
                row.3,
                counts.pods,
                counts.without_identity,
                counts.fail_open,
                reasons.join(", "),
                row.4
            )?;
        }
        writeln!(
            f,
            "\nfail-open: {} counted by the API server, {} logged",
            self.fail_open_total, self.fail_open_log_total
        )?;
        let lags: Vec<String> = self
            .stale
            .iter()
            .map(|s| {
                format!(
                    "{}#{}: {} pods, {:.2} s (bound {:.1} s)",
                    SERVICE_ACCOUNTS[s.account], s.change, s.pods, s.lag, s.bound
                )
            })
            .collect();
        writeln!(
            f,
            "\nroles: {} changes; {} pods with the role of their creation, {} with an \
             earlier one (largest lag {:.2} s; bound {PROPAGATION_BOUND} s, longer during an \
             API server restart), {} wrong",
            self.role_changes,
            self.current,
            self.stale.iter().map(|s| s.pods).sum::<usize>(),
            self.largest_lag(),
            self.wrong_roles.len()
        )?;
        if !lags.is_empty() {
            writeln!(f, "stale pods per change: {}", lags.join("; "))?;
        }
        writeln!(
            f,
            "\nwebhook memory, processes at least {WARM_SECONDS} s old (limit of the anonymous \
             trend: +{MEMORY_RISE_LIMIT_MIB} MiB):"
        )?;
        for (what, anonymous) in [("anonymous (RssAnon)", true), ("resident (RSS)", false)] {
            let mut values: Vec<f64> = self.memory(anonymous).iter().map(|m| m.1).collect();
            values.sort_by(f64::total_cmp);
            if let (Some(low), Some(high)) = (values.first(), values.last()) {
                writeln!(
                    f,
                    "  {what}: {} samples, {low:.1}–{high:.1} MiB, median {:.1} MiB; \
                     trend across the run {:+.2} MiB",
                    values.len(),
                    values[values.len() / 2],
                    self.memory_rise_mib(anonymous).unwrap_or(0.0)
                )?;
            }
        }
        for process in &self.processes {
            let (first, last) = (process.warm[0], process.warm[process.warm.len() - 1]);
            let anon = |sample: (f64, f64, Option<f64>)| {
                sample
                    .2
                    .map_or("?".to_string(), |anon| format!("{anon:.1}"))
            };
            writeln!(
                f,
                "  process in {} from {:.0} s to {:.0} s: anonymous {} → {} MiB, resident \
                 {:.1} → {:.1} MiB ({} samples)",
                process.pod,
                first.0,
                last.0,
                anon(first),
                anon(last),
                first.1,
                last.1,
                process.warm.len()
            )?;
        }
        let refusals: Vec<String> = self
            .refusals
            .iter()
            .map(|(reason, n)| format!("{reason}={n}"))
            .collect();
        writeln!(
            f,
            "\nwebhook refusals (all processes): {}",
            refusals.join(" ")
        )?;
        for failure in self.failures.iter().take(20) {
            writeln!(f, "failure: {failure}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(role: &str, sent: f64, answered: f64) -> RoleChange {
        RoleChange {
            role: role.into(),
            sent,
            answered,
        }
    }

    fn pod(sent: f64, answered: f64) -> Created {
        Created {
            name: "p".into(),
            account: 0,
            sent,
            answered,
        }
    }

    #[test]
    fn a_role_is_current_from_its_request_until_the_next_change_is_stored() {
        let history = [
            change("r0", 0.0, 0.0),
            change("r1", 10.0, 10.1),
            change("r2", 20.0, 20.1),
        ];
        assert_eq!(
            judge_role(&history, &pod(5.0, 5.1), "r0"),
            RoleVerdict::Current
        );
        // Sent before the change was stored: either role is right.
        assert_eq!(
            judge_role(&history, &pod(10.05, 10.2), "r0"),
            RoleVerdict::Current
        );
        assert_eq!(
            judge_role(&history, &pod(9.9, 10.05), "r1"),
            RoleVerdict::Current
        );
        // The role just before, after the change was stored: stale by the lag.
        match judge_role(&history, &pod(11.1, 11.2), "r0") {
            RoleVerdict::Previous { change: 1, lag } => assert!((lag - 1.0).abs() < 1e-9),
            other => panic!("{other:?}"),
        }
        // Two changes behind: stale since the first of them, past any bound but a restart's.
        match judge_role(&history, &pod(21.0, 21.1), "r0") {
            RoleVerdict::Previous { change: 1, lag } => assert!((lag - 10.9).abs() < 1e-9),
            other => panic!("{other:?}"),
        }
        // A role from the future, one never given: wrong.
        assert_eq!(
            judge_role(&history, &pod(5.0, 5.1), "r2"),
            RoleVerdict::Wrong
        );
        assert_eq!(
            judge_role(&history, &pod(5.0, 5.1), "r9"),
            RoleVerdict::Wrong
        );
    }

    #[test]
    fn a_change_stored_around_an_api_server_restart_may_wait_for_the_watchs_next_attempt() {
        let window = |kind, start: f64, recovered: f64| Window {
            kind,
            start,
            recovered,
            end: recovered + 3.0,
            log: 0..0,
            detail: String::new(),
        };
        let windows = [
            window(Disruption::Rollout, 10.0, 20.0),
            window(Disruption::ApiServerRestart, 30.0, 36.0),
        ];
        let restart_bound = PROPAGATION_BOUND + 2.0 * 6.0 + 1.6;
        assert_eq!(propagation_bound(&windows, 15.0), PROPAGATION_BOUND);
        assert_eq!(propagation_bound(&windows, 33.0), restart_bound);
        assert_eq!(propagation_bound(&windows, 38.5), restart_bound);
        // Stored just before the API server stopped: maybe not sent on the watch yet.
        assert_eq!(propagation_bound(&windows, 26.0), restart_bound);
        assert_eq!(propagation_bound(&windows, 24.0), PROPAGATION_BOUND);
        assert_eq!(propagation_bound(&windows, 40.0), PROPAGATION_BOUND);
    }

    #[test]
    fn counter_increases_count_from_zero_after_a_restart() {
        let samples = [
            (0.0, 100.0, 2.0),
            (1.0, 100.0, 5.0),
            (2.0, 100.0, 1.0),
            (3.0, 100.0, 1.0),
            // Started again and already past the last value.
            (4.0, 200.0, 3.0),
        ];
        let total: f64 = increases(&samples).iter().map(|i| i.2).sum();
        assert_eq!(total, 7.0);
    }

    #[test]
    fn fail_open_log_lines_are_read_by_reason() {
        let log = format!(
            "I0101 other line\n\
             W0101 dispatcher.go:210] Failed calling webhook, failing open {WEBHOOK_NAME}: failed calling webhook \"{WEBHOOK_NAME}\": failed to call webhook: Post \"https://x.svc:443/mutate?timeout=10s\": dial tcp 10.244.0.9:8443: connect: connection refused\n\
             W0101 dispatcher.go:210] Failed calling webhook, failing open {WEBHOOK_NAME}: failed calling webhook \"{WEBHOOK_NAME}\": failed to call webhook: Post \"https://x.svc:443/mutate?timeout=10s\": read tcp 10.244.0.1:5->10.244.0.9:8443: read: connection reset by peer\n"
        );
        let read = FailOpenLog::read(log.as_bytes(), 0..log.len() as u64);
        let all = read.reasons(&(0..log.len() as u64));
        assert_eq!(all["connection refused"], 1);
        assert_eq!(all["connection reset"], 1);
        assert!(read.reasons(&(0..10)).is_empty());
    }
}
