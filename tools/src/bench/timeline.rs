//! The run second by second: one small latency histogram and one failure count per second
//! since the measured window opened, so that a stall shows *when* it happened instead of
//! only raising the run's p99.999.
//!
//! A request counts in the second its outcome arrived (the answer, the error, the timeout),
//! not the second it was due: that is where a stall is seen from outside (throughput
//! drops to nothing, then a burst of late answers), and it is the convention of
//! HdrHistogram's interval logs. The latency recorded is still the full one, counted from
//! the intended send time in open loop.
//!
//! Bounds: at most `TIMELINE_SECONDS_MAX` seconds (an hour) are kept. The buckets are
//! allocated before the run for the window plus the longest a request may stay in flight
//! after it (`tail_ns`), so recording never allocates; an outcome later than the last
//! bucket (a run longer than an hour) is counted in `late` and left out of the timeline,
//! never out of the run's totals.
//!
//! Why 2 significant figures here when the run's histogram keeps 3: a per-second p99 to
//! within 1 % is all a timeline is read for, and with `u32` counts it makes each bucket
//! 10 KiB instead of the run histogram's 136 KiB, which is what lets an hour of them be
//! pre-allocated per client thread.

use hdrhistogram::Histogram;
use serde::Serialize;

use super::record::LATENCY_US_MAX;

/// Seconds a timeline keeps at most: an hour.
pub const TIMELINE_SECONDS_MAX: usize = 3600;
/// Significant figures of the per-second histograms.
pub const SECOND_SIGFIGS: u8 = 2;
/// The counts of one second's histogram take at most this; with `TIMELINE_SECONDS_MAX`
/// it bounds a client thread's timeline (36 MiB for an hour).
pub const SECOND_BYTES_MAX: usize = 10 * 1024;
const NS_PER_SECOND: u64 = 1_000_000_000;

/// What one second of the run recorded.
#[derive(Debug, Clone)]
pub struct Second {
    /// µs of the answered-200 requests resolved in this second.
    pub latency: Histogram<u32>,
    /// Errors, sheds and timeouts resolved in this second.
    pub failed: u64,
}

impl Second {
    fn new() -> Second {
        Second {
            latency: Histogram::new_with_bounds(1, LATENCY_US_MAX, SECOND_SIGFIGS)
                .expect("constant histogram bounds are valid"),
            failed: 0,
        }
    }
}

/// Per-second records of one client thread (or of the merged threads).
#[derive(Debug, Clone, Default)]
pub struct Timeline {
    /// When the measured window opened, ns since the run's start.
    start_ns: u64,
    seconds: Vec<Second>,
    /// Outcomes past the last second kept.
    late: u64,
}

impl Timeline {
    /// The buckets for a window from `start_ns` to `end_ns` (ns since the run's start)
    /// and for outcomes up to `tail_ns` after it; at most `TIMELINE_SECONDS_MAX`.
    pub fn for_window(start_ns: u64, end_ns: u64, tail_ns: u64) -> Timeline {
        let span_ns = end_ns.saturating_sub(start_ns).saturating_add(tail_ns);
        let seconds = span_ns.div_ceil(NS_PER_SECOND).max(1);
        let seconds =
            usize::try_from(seconds).map_or(TIMELINE_SECONDS_MAX, |s| s.min(TIMELINE_SECONDS_MAX));
        Timeline {
            start_ns,
            seconds: (0..seconds).map(|_| Second::new()).collect(),
            late: 0,
        }
    }

    /// Records an outcome that arrived `at_ns` after the run's start: an answer's
    /// latency (`Some`), or a failure (`None`). Never allocates.
    pub fn record(&mut self, at_ns: u64, latency_us: Option<u64>) {
        let index = at_ns.saturating_sub(self.start_ns) / NS_PER_SECOND;
        let Some(second) = usize::try_from(index)
            .ok()
            .and_then(|i| self.seconds.get_mut(i))
        else {
            self.late += 1;
            return;
        };
        match latency_us {
            Some(us) => second.latency.saturating_record(us),
            None => second.failed += 1,
        }
    }

    /// Adds another thread's timeline, second by second. Both must count from the same
    /// window start (an empty timeline takes the other's).
    pub fn merge(&mut self, other: &Timeline) {
        if self.seconds.is_empty() {
            self.start_ns = other.start_ns;
        }
        assert!(
            other.seconds.is_empty() || self.start_ns == other.start_ns,
            "timelines of one run share the window start"
        );
        while self.seconds.len() < other.seconds.len() {
            self.seconds.push(Second::new());
        }
        for (mine, theirs) in self.seconds.iter_mut().zip(&other.seconds) {
            // Same bounds on both sides: addition cannot fail.
            mine.latency.add(&theirs.latency).expect("same bounds");
            mine.failed += theirs.failed;
        }
        self.late += other.late;
    }

    /// The seconds kept, from the window's start.
    pub fn seconds(&self) -> &[Second] {
        &self.seconds
    }

    /// Outcomes that arrived after the last second kept.
    pub fn late(&self) -> u64 {
        self.late
    }
}

/// One second of the report's timeline.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TimelinePoint {
    /// Seconds from the window's opening to this second's start.
    pub t_s: u64,
    /// Answers (200) per second: those that arrived in this second, over the part of it
    /// inside the window (the last second of a 2.5 s window is half a second long).
    pub rps: f64,
    /// Errors, sheds and timeouts that arrived in this second.
    pub errors: u64,
    /// Latency of this second's answers, µs; `null` when it had none.
    pub p50_us: Option<u64>,
    pub p99_us: Option<u64>,
    pub max_us: Option<u64>,
}

/// The report's view of `timeline` for a window of `duration_s`: every second of the
/// window, then the seconds after it up to the last in which an outcome arrived (answers
/// still in flight when the window closed).
pub fn points(timeline: &Timeline, duration_s: f64) -> Vec<TimelinePoint> {
    let seconds = timeline.seconds();
    let in_window = (duration_s.max(0.0).ceil() as usize).min(seconds.len());
    let after = seconds[in_window..]
        .iter()
        .rposition(|s| !s.latency.is_empty() || s.failed > 0)
        .map_or(0, |last| last + 1);
    let point = |(t, second): (usize, &Second)| {
        let span_s = (duration_s - t as f64).clamp(0.0, 1.0);
        // After the window a second is counted whole.
        let span_s = if span_s > 0.0 { span_s } else { 1.0 };
        let h = &second.latency;
        let at = |q: f64| (!h.is_empty()).then(|| h.value_at_quantile(q));
        TimelinePoint {
            t_s: t as u64,
            rps: (h.len() as f64 / span_s * 10.0).round() / 10.0,
            errors: second.failed,
            p50_us: at(0.5),
            p99_us: at(0.99),
            max_us: (!h.is_empty()).then(|| h.max()),
        }
    };
    seconds[..in_window + after]
        .iter()
        .enumerate()
        .map(point)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = NS_PER_SECOND;

    /// An outcome lands in the second (since the window opened) in which it arrived;
    /// the second boundary belongs to the later second.
    #[test]
    fn buckets_by_second_since_the_window_opened() {
        let mut t = Timeline::for_window(S / 2, S / 2 + 3 * S, S);
        assert_eq!(t.seconds().len(), 4);
        t.record(S / 2, Some(10));
        t.record(S / 2 + S - 1, Some(20));
        t.record(S / 2 + S, Some(30));
        t.record(S / 2 + 3 * S + 10, None);
        let lens: Vec<u64> = t.seconds().iter().map(|s| s.latency.len()).collect();
        assert_eq!(lens, [2, 1, 0, 0]);
        assert_eq!(t.seconds()[0].latency.max(), 20);
        assert_eq!(t.seconds()[3].failed, 1);
        assert_eq!(t.late(), 0);
        t.record(S / 2 + 4 * S, Some(1));
        assert_eq!(t.late(), 1, "past the last second: counted, not bucketed");
    }

    /// However long the window, at most `TIMELINE_SECONDS_MAX` buckets are kept, and a
    /// partial second gets a bucket of its own.
    #[test]
    fn length_is_bounded() {
        let day = 24 * 3600 * S;
        assert_eq!(
            Timeline::for_window(0, day, 0).seconds().len(),
            TIMELINE_SECONDS_MAX
        );
        assert_eq!(
            Timeline::for_window(0, u64::MAX, u64::MAX).seconds().len(),
            3600
        );
        assert_eq!(Timeline::for_window(0, 2 * S + 1, 0).seconds().len(), 3);
        assert_eq!(Timeline::for_window(7, 7, 0).seconds().len(), 1);
        let mut t = Timeline::for_window(0, day, 0);
        t.record(day - 1, Some(5));
        assert_eq!(t.late(), 1);
    }

    /// One second's histogram fits `SECOND_BYTES_MAX`; the run's (3 figures, `u64`) would
    /// not, which is why seconds keep fewer figures.
    #[test]
    fn a_second_is_small() {
        let bytes = Second::new().latency.distinct_values() * std::mem::size_of::<u32>();
        assert!(bytes <= SECOND_BYTES_MAX, "{bytes} bytes");
        let run = crate::bench::record::histogram().distinct_values() * 8;
        assert!(run > 10 * SECOND_BYTES_MAX, "{run} bytes");
    }

    /// Threads merge second by second; a shorter or empty timeline is extended.
    #[test]
    fn merges_second_by_second() {
        let mut a = Timeline::for_window(S, 2 * S, 0);
        let mut b = Timeline::for_window(S, 3 * S, 0);
        a.record(S, Some(100));
        b.record(S + 1, Some(300));
        b.record(2 * S, None);
        let mut merged = Timeline::default();
        merged.merge(&a);
        merged.merge(&b);
        assert_eq!(merged.seconds().len(), 2);
        assert_eq!(merged.seconds()[0].latency.len(), 2);
        assert_eq!(merged.seconds()[1].failed, 1);
        merged.record(S, Some(1));
        assert_eq!(
            merged.seconds()[0].latency.len(),
            3,
            "kept the window start"
        );
    }

    /// Every second of the window is listed (empty ones with `null` latencies), the
    /// partial last one has its rate scaled to its length, and the seconds after the
    /// window only as far as something arrived.
    #[test]
    fn report_points() {
        let mut t = Timeline::for_window(0, 5 * S / 2, 3 * S);
        for i in 0..100 {
            t.record(i * S / 100, Some(100 + i));
        }
        for _ in 0..10 {
            t.record(2 * S + 1, Some(50));
        }
        t.record(3 * S + 5, None);
        let p = points(&t, 2.5);
        assert_eq!(p.len(), 4, "{p:?}");
        assert_eq!(p.iter().map(|p| p.t_s).collect::<Vec<_>>(), [0, 1, 2, 3]);
        assert_eq!(
            (p[0].rps, p[0].p50_us, p[0].max_us),
            (100.0, Some(149), Some(199))
        );
        assert_eq!((p[1].rps, p[1].p99_us, p[1].errors), (0.0, None, 0));
        assert_eq!(p[2].rps, 20.0, "10 answers in half a second");
        assert_eq!((p[3].errors, p[3].rps), (1, 0.0));
        assert_eq!(
            points(&Timeline::for_window(0, 5 * S / 2, 3 * S), 2.5).len(),
            3
        );
        assert!(points(&Timeline::default(), 2.5).is_empty());
    }
}
