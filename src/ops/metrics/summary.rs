//! A Prometheus summary over a sliding time window, which the prometheus crate lacks: the
//! reference exports `http_request_duration_microseconds` as one, so dashboards expect it.
//!
//! Memory is bounded whatever the traffic: each label set keeps a few time slots, and each slot
//! counts observations in logarithmic bins (32 per doubling, so a quantile is within about 1.1%
//! of the true value) instead of keeping the observations themselves. `_sum` and `_count` cover
//! the whole process lifetime, as in Go's summaries; quantiles cover the window.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus::core::{Collector, Desc};
use prometheus::proto::{LabelPair, Metric, MetricFamily, MetricType, Quantile, Summary};

/// Bins per doubling of the observed value.
const BINS_PER_DOUBLING: f64 = 32.0;
/// Values are clamped to the last bin, 2^40 (about 1.1e12: twelve days in microseconds).
const LAST_BIN: u16 = 40 * 32 + 1;

/// A summary with labels, quantiles over the last `window` (in `slots` steps).
pub struct WindowedSummary {
    desc: Desc,
    quantiles: Vec<f64>,
    window: Duration,
    slot_width: Duration,
    series: Mutex<BTreeMap<Vec<String>, Series>>,
}

#[derive(Default)]
struct Series {
    count: u64,
    sum: f64,
    /// Oldest first; a slot covers `slot_width` from its start.
    slots: VecDeque<Slot>,
}

struct Slot {
    start: Instant,
    /// Observations per logarithmic bin.
    bins: BTreeMap<u16, u64>,
}

impl WindowedSummary {
    /// `label_names` are the variable labels; `slots` divides the window (at least 1).
    pub fn new(
        name: &str,
        help: &str,
        label_names: &[&str],
        quantiles: &[f64],
        window: Duration,
        slots: u32,
    ) -> prometheus::Result<Self> {
        let label_names = label_names.iter().map(|name| name.to_string()).collect();
        let desc = Desc::new(name.into(), help.into(), label_names, Default::default())?;
        Ok(Self {
            desc,
            quantiles: quantiles.to_vec(),
            window,
            slot_width: window / slots.max(1),
            series: Mutex::new(BTreeMap::new()),
        })
    }

    /// Records `value` for the label values given in the order of the label names.
    pub(crate) fn observe(&self, label_values: &[&str], value: f64) {
        self.observe_at(label_values, value, Instant::now());
    }

    /// [`WindowedSummary::observe`] at a given time, for tests.
    pub(crate) fn observe_at(&self, label_values: &[&str], value: f64, now: Instant) {
        let mut all = self
            .series
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let matches = |key: &[String]| {
            key.iter()
                .map(String::as_str)
                .eq(label_values.iter().copied())
        };
        if !all.keys().any(|key| matches(key)) {
            let key = label_values.iter().map(|value| value.to_string()).collect();
            all.insert(key, Series::default());
        }
        let Some(series) = all
            .iter_mut()
            .find_map(|(key, series)| matches(key).then_some(series))
        else {
            return;
        };
        series.count += 1;
        series.sum += value;
        let current = series
            .slots
            .back()
            .is_some_and(|slot| now < slot.start + self.slot_width);
        if !current {
            series.slots.push_back(Slot {
                start: now,
                bins: BTreeMap::new(),
            });
        }
        if let Some(slot) = series.slots.back_mut() {
            *slot.bins.entry(bin(value)).or_default() += 1;
        }
        self.expire(series, now);
    }

    /// Drops the slots that lie wholly before the window.
    fn expire(&self, series: &mut Series, now: Instant) {
        while let Some(oldest) = series.slots.front() {
            let end = oldest.start + self.slot_width;
            if now.saturating_duration_since(end) >= self.window {
                series.slots.pop_front();
            } else {
                break;
            }
        }
    }

    /// The metric family as of `now`, for tests; [`Collector::collect`] uses the current time.
    pub(crate) fn family_at(&self, now: Instant) -> MetricFamily {
        let mut all = self
            .series
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut metrics = Vec::with_capacity(all.len());
        for (label_values, series) in all.iter_mut() {
            self.expire(series, now);
            let mut merged: BTreeMap<u16, u64> = BTreeMap::new();
            for slot in &series.slots {
                for (bin, count) in &slot.bins {
                    *merged.entry(*bin).or_default() += count;
                }
            }
            let total: u64 = merged.values().sum();
            let quantiles = self
                .quantiles
                .iter()
                .map(|q| {
                    let mut quantile = Quantile::default();
                    quantile.set_quantile(*q);
                    quantile.set_value(quantile_of(&merged, total, *q));
                    quantile
                })
                .collect();
            let mut summary = Summary::default();
            summary.set_sample_count(series.count);
            summary.set_sample_sum(series.sum);
            summary.set_quantile(quantiles);
            // Sorted by name, as the crate's own metrics are.
            let mut labels: Vec<LabelPair> = self
                .desc
                .variable_labels
                .iter()
                .zip(label_values)
                .map(|(name, value)| {
                    let mut pair = LabelPair::default();
                    pair.set_name(name.clone());
                    pair.set_value(value.clone());
                    pair
                })
                .collect();
            labels.sort_by(|a, b| a.name().cmp(b.name()));
            let mut metric = Metric::from_label(labels);
            metric.set_summary(summary);
            metrics.push(metric);
        }
        let mut family = MetricFamily::default();
        family.set_name(self.desc.fq_name.clone());
        family.set_help(self.desc.help.clone());
        family.set_field_type(MetricType::SUMMARY);
        family.set_metric(metrics);
        family
    }
}

impl Collector for WindowedSummary {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        vec![self.family_at(Instant::now())]
    }
}

/// The logarithmic bin of `value`: 0 below 1, then 32 bins per doubling.
fn bin(value: f64) -> u16 {
    if value.is_nan() || value < 1.0 {
        return 0;
    }
    let index = 1.0 + (value.log2() * BINS_PER_DOUBLING).floor();
    if index >= f64::from(LAST_BIN) {
        LAST_BIN
    } else {
        index as u16
    }
}

/// The middle of `bin` on the logarithmic scale (0.5 for bin 0).
fn bin_value(bin: u16) -> f64 {
    if bin == 0 {
        return 0.5;
    }
    ((f64::from(bin) - 0.5) / BINS_PER_DOUBLING).exp2()
}

/// The `q` quantile of `total` observations binned in `bins`; NaN without observations, as
/// Go's summaries report an empty window.
fn quantile_of(bins: &BTreeMap<u16, u64>, total: u64, q: f64) -> f64 {
    if total == 0 {
        return f64::NAN;
    }
    let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
    let mut seen = 0;
    for (bin, count) in bins {
        seen += count;
        if seen >= rank {
            return bin_value(*bin);
        }
    }
    bins.keys()
        .next_back()
        .map_or(f64::NAN, |bin| bin_value(*bin))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary() -> WindowedSummary {
        WindowedSummary::new(
            "s",
            "help",
            &["verb"],
            &[0.5, 0.9, 0.99],
            Duration::from_secs(3600),
            6,
        )
        .unwrap()
    }

    fn quantiles(family: &MetricFamily) -> Vec<f64> {
        family.get_metric()[0]
            .get_summary()
            .get_quantile()
            .iter()
            .map(|q| q.value())
            .collect()
    }

    #[test]
    fn quantiles_are_within_two_percent() {
        let s = summary();
        let start = Instant::now();
        for value in 1..=1000 {
            s.observe_at(&["GET"], f64::from(value) * 100.0, start);
        }
        let family = s.family_at(start);
        for (got, want) in quantiles(&family)
            .into_iter()
            .zip([50_000.0, 90_000.0, 99_000.0])
        {
            assert!((got - want).abs() / want < 0.02, "{got} vs {want}");
        }
        let summary = family.get_metric()[0].get_summary();
        assert_eq!(summary.sample_count(), 1000);
        assert_eq!(summary.sample_sum(), 50_050_000.0);
    }

    #[test]
    fn old_observations_leave_the_window_but_not_sum_and_count() {
        let s = summary();
        let start = Instant::now();
        s.observe_at(&["GET"], 1_000_000.0, start);
        s.observe_at(&["GET"], 10.0, start + Duration::from_secs(1800));
        let both = quantiles(&s.family_at(start + Duration::from_secs(1800)));
        assert!(
            (both[2] - 1_000_000.0).abs() / 1_000_000.0 < 0.02,
            "{both:?}"
        );
        // The first slot ends at 10 min; an hour later it is gone.
        let later = s.family_at(start + Duration::from_secs(4300));
        assert!(
            quantiles(&later).iter().all(|q| (q - 10.0).abs() < 0.2),
            "{later:?}"
        );
        assert_eq!(later.get_metric()[0].get_summary().sample_count(), 2);
        let empty = s.family_at(start + Duration::from_secs(3 * 3600));
        assert!(quantiles(&empty).iter().all(|q| q.is_nan()));
    }

    #[test]
    fn memory_stays_bounded_under_any_load() {
        let s = summary();
        let start = Instant::now();
        for step in 0..100_000u32 {
            let now = start + Duration::from_millis(u64::from(step) * 100);
            s.observe_at(&["GET"], f64::from(step % 5000) * 37.0 + 0.25, now);
        }
        s.observe_at(&["GET"], f64::MAX, start + Duration::from_secs(10_000));
        s.observe_at(&["GET"], -1.0, start + Duration::from_secs(10_000));
        let all = s.series.lock().unwrap();
        let series = &all[&vec!["GET".to_string()]];
        assert!(series.slots.len() <= 7, "{} slots", series.slots.len());
        for slot in &series.slots {
            assert!(slot.bins.len() <= usize::from(LAST_BIN) + 1);
            assert!(slot.bins.keys().all(|bin| *bin <= LAST_BIN));
        }
    }
}
