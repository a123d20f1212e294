//! Latency summaries: nearest-rank percentiles over a set of samples, and formatting helpers
//! for durations, rates and ratios used by the report.

use std::time::Duration;

/// A latency distribution summarised by the percentiles the report shows.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Latency {
    pub count: usize,
    pub mean: Duration,
    pub p50: Duration,
    pub p90: Duration,
    pub p99: Duration,
    pub max: Duration,
}

impl Latency {
    /// Summarises `samples` (any order). All zero when there are none.
    pub fn of(samples: &[Duration]) -> Latency {
        if samples.is_empty() {
            return Latency::default();
        }
        let mut sorted = samples.to_vec();
        sorted.sort_unstable();
        let total: Duration = sorted.iter().sum();
        Latency {
            count: sorted.len(),
            mean: total / sorted.len() as u32,
            p50: percentile(&sorted, 50.0),
            p90: percentile(&sorted, 90.0),
            p99: percentile(&sorted, 99.0),
            max: sorted[sorted.len() - 1],
        }
    }
}

/// Nearest-rank percentile of sorted samples: the smallest sample such that at least `p` %
/// of the samples are at or below it.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// `n` per second of `d`; zero when `d` is (a phase that did not run reads 0, not NaN).
pub fn per_second(n: f64, d: Duration) -> f64 {
    if d.is_zero() {
        0.0
    } else {
        n / d.as_secs_f64()
    }
}

/// Milliseconds with two decimals, such as `12.34 ms`.
pub fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// `part / whole` as a percentage with one decimal, or `n/a` when `whole` is zero.
pub fn ratio(part: f64, whole: f64) -> String {
    if whole > 0.0 {
        format!("{:.1} %", 100.0 * part / whole)
    } else {
        "n/a".to_string()
    }
}

/// KiB as MiB with one decimal.
pub fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms_list(values: &[u64]) -> Vec<Duration> {
        values.iter().map(|v| Duration::from_millis(*v)).collect()
    }

    #[test]
    fn nearest_rank_percentiles() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let l = Latency::of(&samples);
        assert_eq!(l.count, 100);
        assert_eq!(l.p50, Duration::from_millis(50));
        assert_eq!(l.p90, Duration::from_millis(90));
        assert_eq!(l.p99, Duration::from_millis(99));
        assert_eq!(l.max, Duration::from_millis(100));
    }

    #[test]
    fn small_and_empty_sets() {
        assert_eq!(Latency::of(&[]), Latency::default());
        let l = Latency::of(&ms_list(&[30, 10, 20]));
        assert_eq!(l.p50, Duration::from_millis(20));
        assert_eq!(l.p99, Duration::from_millis(30));
        assert_eq!(l.mean, Duration::from_millis(20));
    }

    #[test]
    fn formatting() {
        assert_eq!(ms(Duration::from_micros(12_345)), "12.35 ms");
        assert_eq!(ratio(1.0, 4.0), "25.0 %");
        assert_eq!(ratio(1.0, 0.0), "n/a");
        assert_eq!(mib(2048), "2.0 MiB");
    }
}
