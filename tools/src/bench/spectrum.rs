//! The latency spectrum: the run's histogram read at a fixed list of quantiles, from p0
//! (the fastest answer) to p99.99, then the slowest answer. Five percentiles say where
//! the tail starts; the spectrum says what shape it has (a knee at p99.5, a plateau of
//! retries, a lone outlier), which is what tells a queueing tail from a stall.
//!
//! Why a fixed list rather than `iter_quantiles(ticks_per_half_distance)`: the points of
//! two reports line up quantile for quantile, so runs can be compared (and plotted on one
//! axis) point by point; the number of points does not depend on how many distinct
//! values a run had; and every quantile is a round number a reader can quote (0.95,
//! 0.995, not 0.9951171875). The list is spaced on the "nines" scale the chart uses
//! (`x = -log10(1 - q)`): each decade of nines (0–90 %, 90–99 %, 99–99.9 %, 99.9–99.99 %)
//! gets the same 13 steps of the remaining tail (1, 0.9, …, 0.15 of it), so the tail is
//! sampled as finely as the body.

use hdrhistogram::Histogram;
use serde::Serialize;

/// The quantiles read, in order: 13 per decade of nines, then 0.9999.
pub const SPECTRUM_QUANTILES: [f64; 53] = [
    0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, //
    0.9, 0.91, 0.92, 0.93, 0.94, 0.95, 0.955, 0.96, 0.965, 0.97, 0.975, 0.98, 0.985, //
    0.99, 0.991, 0.992, 0.993, 0.994, 0.995, 0.9955, 0.996, 0.9965, 0.997, 0.9975, 0.998,
    0.9985, //
    0.999, 0.9991, 0.9992, 0.9993, 0.9994, 0.9995, 0.99955, 0.9996, 0.99965, 0.9997, 0.99975,
    0.9998, 0.99985, //
    0.9999,
];

/// The quantile the slowest answer is reported at, after the list.
pub const MAX_QUANTILE: f64 = 1.0;

/// One point of the spectrum.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SpectrumPoint {
    pub quantile: f64,
    /// The latency at `quantile`, µs (as the histogram gives it, 3 significant figures).
    pub us: u64,
}

/// `h` at every quantile of `SPECTRUM_QUANTILES`, then its max at `MAX_QUANTILE`; empty
/// when `h` is (no answer, no spectrum: a row of zeros would read as "fast").
pub fn spectrum(h: &Histogram<u64>) -> Vec<SpectrumPoint> {
    if h.is_empty() {
        return Vec::new();
    }
    let list = SPECTRUM_QUANTILES.iter().map(|&q| SpectrumPoint {
        quantile: q,
        us: h.value_at_quantile(q),
    });
    list.chain([SpectrumPoint {
        quantile: MAX_QUANTILE,
        us: h.max(),
    }])
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::record::histogram;

    /// The list is strictly increasing, starts at 0, reaches 99.99 % and holds the usual
    /// percentiles, so readers can look them up exactly.
    #[test]
    fn quantile_list() {
        assert!(SPECTRUM_QUANTILES.len() >= 50);
        assert!(SPECTRUM_QUANTILES.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(SPECTRUM_QUANTILES[0], 0.0);
        assert_eq!(*SPECTRUM_QUANTILES.last().unwrap(), 0.9999);
        for q in [0.5, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9995, 0.9999] {
            assert!(SPECTRUM_QUANTILES.contains(&q), "{q}");
        }
    }

    /// Over a skewed run: ≥ 50 points, monotone, the first is the fastest answer, p99.99
    /// is there, and the last is the slowest answer.
    #[test]
    fn spectrum_of_a_run() {
        let mut h = histogram();
        for v in 1..=100_000u64 {
            h.record(100 + v % 50).unwrap();
        }
        h.record(7_000).unwrap();
        h.record(250_000).unwrap();
        let s = spectrum(&h);
        assert!(s.len() >= 51, "{}", s.len());
        assert!(s.windows(2).all(|w| w[0].us <= w[1].us), "{s:?}");
        assert!(s.windows(2).all(|w| w[0].quantile < w[1].quantile));
        assert_eq!(
            s[0],
            SpectrumPoint {
                quantile: 0.0,
                us: 100
            }
        );
        let last = s.last().unwrap();
        assert_eq!(last.quantile, 1.0);
        assert_eq!(last.us, h.max());
        assert!(last.us >= 250_000);
        let p9999 = s.iter().find(|p| p.quantile == 0.9999).expect("p99.99");
        assert!(p9999.us < 250_000, "{p9999:?}");
        assert_eq!(s.iter().find(|p| p.quantile == 0.5).unwrap().us, 125);
    }

    #[test]
    fn empty_run_has_no_spectrum() {
        assert!(spectrum(&histogram()).is_empty());
    }
}
