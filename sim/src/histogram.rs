//! Latencies counted in buckets, so that a run of any length keeps a bounded amount of memory.

use std::time::Duration;

/// Buckets per power of two: neighbouring bucket bounds are at most 0.1% apart.
const SUB: u64 = 1024;

/// A log-linear histogram of durations in microseconds: exact below 1,024 µs, within 0.1% above.
#[derive(Clone, Debug, Default)]
pub(crate) struct LatencyHistogram {
    counts: Vec<u64>,
    total: u64,
}

fn index(micros: u64) -> usize {
    if micros < SUB {
        return micros as usize;
    }
    let log2 = u64::from(63 - micros.leading_zeros());
    let shift = log2 - SUB.trailing_zeros() as u64;
    ((shift + 1) * SUB + ((micros >> shift) - SUB)) as usize
}

/// The smallest value counted in bucket `index`, and the bucket's width.
fn bounds(index: usize) -> (u64, u64) {
    let index = index as u64;
    if index < SUB {
        return (index, 1);
    }
    let shift = index / SUB - 1;
    ((SUB + index % SUB) << shift, 1 << shift)
}

impl LatencyHistogram {
    pub(crate) fn record(&mut self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        let index = index(micros);
        if self.counts.len() <= index {
            self.counts.resize(index + 1, 0);
        }
        self.counts[index] += 1;
        self.total += 1;
    }

    /// The `q` quantile (0 to 1), as the nearest-rank sample would be, to within its bucket: the
    /// bucket's middle.
    pub(crate) fn quantile(&self, q: f64) -> Duration {
        if self.total == 0 {
            return Duration::ZERO;
        }
        let rank = ((self.total as f64 * q).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (index, count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                let (low, width) = bounds(index);
                return Duration::from_micros(low) + Duration::from_micros(width) / 2;
            }
        }
        Duration::ZERO
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_every_value_in_order_and_stay_within_a_thousandth() {
        let mut previous = 0;
        for micros in (0..5_000).chain((5_000..400_000_000).step_by(9_973)) {
            let i = index(micros);
            assert!(i >= previous, "{micros}");
            previous = i;
            let (low, width) = bounds(i);
            assert!(
                low <= micros && micros < low + width,
                "{micros}: {low} + {width}"
            );
            assert!(
                width * 1000 <= low.max(1000),
                "{micros}: {width} wide at {low}"
            );
        }
    }

    #[test]
    fn quantiles_match_the_nearest_rank_to_within_a_bucket() {
        let mut histogram = LatencyHistogram::default();
        let mut samples: Vec<u64> = (1..=10_000).map(|i| i * i % 7_919_993 + 17).collect();
        for micros in &samples {
            histogram.record(Duration::from_micros(*micros));
        }
        samples.sort_unstable();
        for q in [0.5, 0.9, 0.99, 1.0] {
            let exact = samples[((samples.len() as f64 * q).ceil() as usize).max(1) - 1] as f64;
            let estimate = histogram.quantile(q).as_micros() as f64;
            assert!(
                (estimate - exact).abs() <= exact / 1000.0 + 1.0,
                "{q}: {estimate} vs {exact}"
            );
        }
        assert_eq!(LatencyHistogram::default().quantile(0.99), Duration::ZERO);
    }
}
