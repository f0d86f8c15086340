//! The report: the JSON document (its schema is documented with `shardline bench`, in the
//! router's `src/bench/mod.rs`) and the summary table.
//!
//! Figures are rounded where more digits would only be noise (rates to 0.1 req/s, times to
//! the millisecond, memory to 0.1 MiB); latencies stay whole microseconds as the HDR
//! histogram gives them (each the highest value equivalent to the recorded one at 3
//! significant figures).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use hdrhistogram::Histogram;
use serde::Serialize;

use super::record::Recorder;
use super::spectrum::{spectrum, SpectrumPoint};
use super::timeline::{self, TimelinePoint};

/// `--max-error-ratio` when not given: 1 % of the requests may fail (errors, sheds and
/// timeouts together) before a run stops counting as a measurement.
pub const MAX_ERROR_RATIO_DEFAULT: f64 = 0.01;
use super::sys::{Env, ServerCpu};

/// Latency percentiles of the answered-200 requests, µs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Latency {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
    pub mean: f64,
}

impl Latency {
    /// The percentiles of `h`; all zero when it is empty.
    pub fn of(h: &Histogram<u64>) -> Latency {
        if h.is_empty() {
            return Latency {
                p50: 0,
                p90: 0,
                p99: 0,
                p999: 0,
                max: 0,
                mean: 0.0,
            };
        }
        Latency {
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
            mean: round(h.mean(), 1.0),
        }
    }

    /// The percentiles of the successful answers in `h`; `None` when there was none, so
    /// that a run in which nothing succeeded reports no latency rather than a 0 that
    /// reads as "fast".
    pub fn of_answers(h: &Histogram<u64>) -> Option<Latency> {
        (!h.is_empty()).then(|| Latency::of(h))
    }

    /// `(name, value)` of the percentiles compared between router and bare.
    pub fn points(&self) -> [(&'static str, u64); 5] {
        [
            ("p50", self.p50),
            ("p90", self.p90),
            ("p99", self.p99),
            ("p999", self.p999),
            ("max", self.max),
        ]
    }
}

/// One value per compared percentile.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PerPercentile<T> {
    pub p50: T,
    pub p90: T,
    pub p99: T,
    pub p999: T,
    pub max: T,
}

impl<T: Copy> PerPercentile<T> {
    fn from_fn(router: &Latency, bare: &Latency, f: impl Fn(u64, u64) -> T) -> Self {
        let (r, b) = (router.points(), bare.points());
        let at = |i: usize| f(r[i].1, b[i].1);
        PerPercentile {
            p50: at(0),
            p90: at(1),
            p99: at(2),
            p999: at(3),
            max: at(4),
        }
    }
}

/// Open-loop pacing: how closely sends kept to the schedule.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScheduleReport {
    /// Requests that found every connection busy at their intended time.
    pub behind_no_connection: u64,
    /// Requests intended within the window but never sent.
    pub unsent: u64,
    /// Actual minus intended send time, µs.
    pub send_lag_us: Latency,
}

/// How one phase was run, besides what it measured.
#[derive(Debug, Clone, PartialEq)]
pub struct PhaseInfo {
    pub target: String,
    /// `http` or `nats`.
    pub transport: &'static str,
    /// NATS: the subject driven.
    pub subject: Option<String>,
    pub rate_rps: Option<f64>,
    pub duration_s: f64,
    pub warmup_s: f64,
    pub connections: usize,
    pub threads: usize,
    pub pipeline: usize,
    pub in_flight_max: usize,
    pub shards: Option<usize>,
    pub rss_mb: Option<f64>,
    /// Whose CPU time `cpu_s` is (`None`: not measured).
    pub server_cpu: Option<ServerCpu>,
    /// The server's CPU seconds over the measured window.
    pub cpu_s: Option<f64>,
}

/// The figures of one target: the router, or the bare responder.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Side {
    pub target: String,
    /// `http` or `nats`.
    pub transport: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// `open-loop` or `closed-loop`.
    pub mode: &'static str,
    pub target_rps: Option<f64>,
    pub achieved_rps: f64,
    pub duration_s: f64,
    pub warmup_s: f64,
    pub connections: usize,
    pub threads: usize,
    pub pipeline: usize,
    pub in_flight_max: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shards: Option<usize>,
    /// `None` (every percentile `null` in the JSON) when nothing was answered 200.
    #[serde(serialize_with = "latency_or_nulls")]
    pub latency_us: Option<Latency>,
    /// How many answers the percentiles are computed over (the answered-200 requests).
    pub latency_samples: u64,
    /// The answered-200 latencies at `SPECTRUM_QUANTILES`, then the max; empty when
    /// nothing was answered.
    pub latency_spectrum: Vec<SpectrumPoint>,
    /// The window second by second (`timeline.rs`); empty when not recorded.
    pub timeline: Vec<TimelinePoint>,
    /// Outcomes that arrived after the timeline's last second (runs over an hour).
    pub timeline_late: u64,
    pub sent: u64,
    pub answered: u64,
    pub errors_total: u64,
    pub errors_by_code: BTreeMap<String, u64>,
    pub sheds_total: u64,
    pub sheds_by_code: BTreeMap<String, u64>,
    pub timeouts_total: u64,
    /// `(errors + sheds + timeouts) / sent`; `None` when nothing was sent.
    pub error_ratio: Option<f64>,
    pub counts_ok: bool,
    pub connect_errors: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedule: Option<ScheduleReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rss_mb: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_s: Option<f64>,
    /// The server's CPU time over the window ÷ the requests sent in it, µs; `null` when
    /// not measured (a remote server without `--server-pid`) or nothing was sent.
    pub server_cpu_us_per_request: Option<f64>,
    /// The server's CPU time over the window ÷ the window: cores busy on average.
    pub server_cpu_cores: Option<f64>,
    /// Whose CPU time that is (`process 42 and its descendants`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_cpu_of: Option<String>,
}

fn round(value: f64, per_unit: f64) -> f64 {
    (value * per_unit).round() / per_unit
}

/// Every percentile `null`, keys as in `Latency`.
#[derive(Serialize)]
struct NullLatency {
    p50: (),
    p90: (),
    p99: (),
    p999: (),
    max: (),
    mean: (),
}

fn latency_or_nulls<S: serde::Serializer>(
    latency: &Option<Latency>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match latency {
        Some(l) => l.serialize(s),
        None => NullLatency {
            p50: (),
            p90: (),
            p99: (),
            p999: (),
            max: (),
            mean: (),
        }
        .serialize(s),
    }
}

impl Side {
    pub fn new(info: &PhaseInfo, rec: &Recorder) -> Side {
        let counts = rec.counts();
        let achieved = if info.duration_s > 0.0 {
            counts.sent as f64 / info.duration_s
        } else {
            0.0
        };
        Side {
            target: info.target.clone(),
            transport: info.transport,
            subject: info.subject.clone(),
            mode: if info.rate_rps.is_some() {
                "open-loop"
            } else {
                "closed-loop"
            },
            target_rps: info.rate_rps,
            achieved_rps: round(achieved, 10.0),
            duration_s: round(info.duration_s, 1000.0),
            warmup_s: round(info.warmup_s, 1000.0),
            connections: info.connections,
            threads: info.threads,
            pipeline: info.pipeline,
            in_flight_max: info.in_flight_max,
            shards: info.shards,
            latency_us: Latency::of_answers(&rec.latency),
            latency_samples: rec.latency.len(),
            latency_spectrum: spectrum(&rec.latency),
            timeline: timeline::points(&rec.timeline, info.duration_s),
            timeline_late: rec.timeline.late(),
            sent: counts.sent,
            answered: counts.answered,
            errors_total: counts.errors,
            errors_by_code: rec.errors.by_code().clone(),
            sheds_total: counts.sheds,
            sheds_by_code: rec.sheds.by_code().clone(),
            timeouts_total: counts.timeouts,
            error_ratio: (counts.sent > 0).then(|| {
                let failed = counts.errors + counts.sheds + counts.timeouts;
                round(failed as f64 / counts.sent as f64, 1e6)
            }),
            counts_ok: counts.add_up(),
            connect_errors: rec.connect_errors,
            schedule: info.rate_rps.map(|_| ScheduleReport {
                behind_no_connection: rec.behind_no_connection,
                unsent: rec.unsent,
                send_lag_us: Latency::of(&rec.send_lag),
            }),
            rss_mb: info.rss_mb.map(|mb| round(mb, 10.0)),
            cpu_s: info.cpu_s.map(|s| round(s, 100.0)),
            server_cpu_us_per_request: info
                .cpu_s
                .filter(|_| counts.sent > 0)
                .map(|s| round(s * 1e6 / counts.sent as f64, 100.0)),
            server_cpu_cores: info
                .cpu_s
                .filter(|_| info.duration_s > 0.0)
                .map(|s| round(s / info.duration_s, 1000.0)),
            server_cpu_of: info.server_cpu.map(|c| c.describe()),
        }
    }
}

/// What a run's figures depend on besides the code measured: two reports are comparable
/// (by `shardline gate`) only when these are equal. `target` is the kind of target
/// (`embedded`, `http`, `nats`, `nats-bare`), not its address, which changes every run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Conditions {
    pub target: &'static str,
    pub transport: &'static str,
    pub mode: &'static str,
    /// Open loop: `--rate`.
    pub rate_rps: Option<f64>,
    /// Closed loop: requests in flight (`--concurrency`).
    pub concurrency: Option<usize>,
    pub connections: usize,
    pub pipeline: usize,
    pub duration_s: f64,
    /// Shards of the embedded router (`--nats-shards` for a shard-aware NATS run); `null`
    /// when the target's are not known.
    pub shards: Option<usize>,
    pub compare_bare: bool,
}

impl Conditions {
    fn of(side: &Side, target: &'static str, compare_bare: bool) -> Conditions {
        Conditions {
            target,
            transport: side.transport,
            mode: side.mode,
            rate_rps: side.target_rps,
            concurrency: side.target_rps.is_none().then_some(side.in_flight_max),
            connections: side.connections,
            pipeline: side.pipeline,
            duration_s: side.duration_s,
            shards: side.shards,
            compare_bare,
        }
    }
}

/// The whole report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    #[serde(flatten)]
    pub router: Side,
    pub conditions: Conditions,
    /// The tenants of a generated mix (`None` for `--requests`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenants: Option<Vec<String>>,
    /// Where they came from: `--tenants`, `GET /v1/tenants`, `config` (the embedded
    /// router's policies), `default` or `--requests`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenants_from: Option<&'static str>,
    /// The error budget the run was held to (`--max-error-ratio`).
    pub max_error_ratio: f64,
    pub embedded: bool,
    /// The top-level figures are the bare responder's (`--bare-only`), not a router's.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub bare_only: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config: Option<String>,
    pub env: Env,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bare: Option<Side>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub added_us: Option<PerPercentile<i64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratio: Option<PerPercentile<Option<f64>>>,
}

/// Router minus bare, µs, per percentile.
pub fn added_us(router: &Latency, bare: &Latency) -> PerPercentile<i64> {
    PerPercentile::from_fn(router, bare, |r, b| r as i64 - b as i64)
}

/// Router over bare per percentile, 3 decimals; `None` where bare is 0.
pub fn ratio(router: &Latency, bare: &Latency) -> PerPercentile<Option<f64>> {
    PerPercentile::from_fn(router, bare, |r, b| {
        (b > 0).then(|| round(r as f64 / b as f64, 1000.0))
    })
}

impl Report {
    /// The report with the comparison filled in when `bare` is given.
    pub fn new(
        router: Side,
        embedded: bool,
        config: Option<String>,
        env: Env,
        bare: Option<Side>,
    ) -> Report {
        // Compared only where both sides measured a latency: 0 for "nothing answered"
        // would read as the router adding less than nothing.
        let both = bare
            .as_ref()
            .and_then(|b| router.latency_us.zip(b.latency_us));
        let added = both.map(|(r, b)| added_us(&r, &b));
        let ratio = both.map(|(r, b)| ratio(&r, &b));
        let kind = match (embedded, router.transport) {
            (true, _) => "embedded",
            (false, "nats") => "nats",
            (false, _) => "http",
        };
        let conditions = Conditions::of(&router, kind, bare.is_some());
        Report {
            router,
            conditions,
            tenants: None,
            tenants_from: None,
            max_error_ratio: MAX_ERROR_RATIO_DEFAULT,
            embedded,
            bare_only: false,
            config,
            env,
            bare,
            added_us: added,
            ratio,
        }
    }

    /// Records the tenants of the mix and where they came from.
    pub fn with_tenants(mut self, (tenants, from): (Option<Vec<String>>, &'static str)) -> Report {
        self.tenants = tenants;
        self.tenants_from = Some(from);
        self
    }

    /// The top-level figures are the bare NATS echo's (`--bare-only`).
    pub fn into_bare_only(mut self) -> Report {
        self.bare_only = true;
        self.conditions.target = "nats-bare";
        self
    }

    /// Why the run is not a measurement, one line per reason; empty when it is. A side
    /// fails when nothing was sent, when nothing was answered 200 (no latency), when its
    /// errors, sheds and timeouts together exceed `max_error_ratio` of what it sent, or
    /// (open loop) when more than that share of the requests due were never sent.
    pub fn failures(&self) -> Vec<String> {
        let mut why = Vec::new();
        let sides = std::iter::once((self.label(), &self.router))
            .chain(self.bare.as_ref().map(|b| ("bare", b)));
        for (name, s) in sides {
            let failed = s.errors_total + s.sheds_total + s.timeouts_total;
            let unsent = s.schedule.as_ref().map_or(0, |sched| sched.unsent);
            if s.sent == 0 {
                why.push(format!(
                    "{name}: no request was sent in the window ({unsent} due, never sent)"
                ));
                continue;
            }
            let ratio = s.error_ratio.unwrap_or(1.0);
            if ratio > self.max_error_ratio {
                let mut codes: Vec<String> = (s.errors_by_code.iter())
                    .chain(&s.sheds_by_code)
                    .map(|(c, n)| format!("{c} {n}"))
                    .collect();
                if s.timeouts_total > 0 {
                    codes.push(format!("timeouts {}", s.timeouts_total));
                }
                why.push(format!(
                    "{name}: error ratio {ratio} over --max-error-ratio {}: {failed} of {} \
                     request(s) failed ({})",
                    self.max_error_ratio,
                    s.sent,
                    codes.join(", ")
                ));
            }
            // Open loop: requests due in the window but never sent mean the load asked for
            // was not applied; the latencies describe a lighter load than the report says.
            let due = s.sent + unsent;
            if unsent > 0 && unsent as f64 / due as f64 > self.max_error_ratio {
                why.push(format!(
                    "{name}: the schedule was not kept: {unsent} of {due} request(s) due in \
                     the window were never sent (over --max-error-ratio {}); the client or \
                     the target cannot carry --rate {}",
                    self.max_error_ratio,
                    s.target_rps.unwrap_or_default()
                ));
            }
            if s.latency_samples == 0 {
                why.push(format!(
                    "{name}: no successful answer, so no latency was measured"
                ));
            }
        }
        why
    }

    /// Every side's counts add up.
    pub fn counts_ok(&self) -> bool {
        self.router.counts_ok && self.bare.as_ref().is_none_or(|b| b.counts_ok)
    }

    pub fn to_json(&self) -> String {
        // Plain data with string keys: serialization cannot fail.
        serde_json::to_string_pretty(self).expect("report serializes")
    }

    /// Writes the JSON report to `json`, and beside it the same name with `.md` (the
    /// Markdown summary) and `.svg` (latency by percentile). Returns the paths written.
    pub fn write_files(&self, json: &Path) -> std::io::Result<[PathBuf; 3]> {
        let value = serde_json::to_value(self).expect("report serializes");
        let (md, svg) = (json.with_extension("md"), json.with_extension("svg"));
        std::fs::write(json, self.to_json() + "\n")?;
        std::fs::write(&md, super::markdown::summary(&value))?;
        std::fs::write(&svg, super::plot::report_svg(&value))?;
        Ok([json.to_path_buf(), md, svg])
    }

    /// The table printed to stdout.
    pub fn summary(&self) -> String {
        let r = &self.router;
        let mut out = String::new();
        let load = match r.target_rps {
            Some(rate) => format!("open-loop at {rate} req/s"),
            None => "closed-loop".to_owned(),
        };
        let _ = writeln!(
            out,
            "shardline bench: {load}, {} connection(s), {} thread(s), {:.1} s (+{:.1} s warmup)",
            r.connections, r.threads, r.duration_s, r.warmup_s
        );
        let shards = r
            .shards
            .map(|s| format!(", {s} shard(s)"))
            .unwrap_or_default();
        let how = if self.embedded { "embedded" } else { "remote" };
        let subject = r
            .subject
            .as_ref()
            .map(|s| format!(", subject {s}"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "target: {} ({}, {how}{shards}{subject})",
            r.target, r.transport
        );
        if let (Some(tenants), Some(from)) = (&self.tenants, self.tenants_from) {
            let _ = writeln!(out, "tenants ({from}): {}", tenants.join(", "));
        }
        self.latency_table(&mut out);
        side_counts(&mut out, self.label(), r);
        timeline_extremes(&mut out, r);
        if let Some(b) = &self.bare {
            side_counts(&mut out, "bare", b);
        }
        if let (Some(rss), Some(cpu)) = (r.rss_mb, r.cpu_s) {
            let _ = writeln!(
                out,
                "router in this process: rss {rss:.1} MiB, cpu {cpu:.2} s in the window"
            );
        }
        let sides = std::iter::once((self.label(), r)).chain(self.bare.iter().map(|b| ("bare", b)));
        for (name, s) in sides {
            let _ = match (s.server_cpu_us_per_request, s.server_cpu_cores) {
                (Some(us), Some(cores)) => writeln!(
                    out,
                    "{name} server cpu: {us:.1} µs per request, {cores:.3} cores busy ({})",
                    s.server_cpu_of.as_deref().unwrap_or("?")
                ),
                _ if name == "router" && !self.embedded => writeln!(
                    out,
                    "{name} server cpu: unknown (--server-pid PID measures it)"
                ),
                _ => writeln!(out, "{name} server cpu: unknown"),
            };
        }
        out
    }

    /// What the top-level figures measured.
    fn label(&self) -> &'static str {
        if self.bare_only {
            "bare"
        } else {
            "router"
        }
    }

    fn latency_table(&self, out: &mut String) {
        let r = &self.router;
        let _ = write!(out, "{:<14}{:>12}", "", self.label());
        if self.bare.is_some() {
            let _ = write!(out, "{:>12}{:>12}{:>9}", "bare", "added", "ratio");
        }
        out.push('\n');
        let _ = write!(out, "{:<14}{:>12.1}", "req/s", r.achieved_rps);
        if let Some(b) = &self.bare {
            let _ = write!(out, "{:>12.1}", b.achieved_rps);
        }
        out.push('\n');
        let point = |l: &Option<Latency>, i: usize| {
            l.map_or_else(|| "-".to_owned(), |l| l.points()[i].1.to_string())
        };
        let names = ["p50 µs", "p90 µs", "p99 µs", "p99.9 µs", "max µs"];
        for (i, name) in names.iter().enumerate() {
            let _ = write!(out, "{name:<14}{:>12}", point(&r.latency_us, i));
            if let Some(b) = &self.bare {
                let _ = write!(out, "{:>12}", point(&b.latency_us, i));
                match (&self.added_us, &self.ratio) {
                    (Some(added), Some(ratio)) => {
                        let pick = |p: &PerPercentile<i64>| [p.p50, p.p90, p.p99, p.p999, p.max][i];
                        let ratios = [ratio.p50, ratio.p90, ratio.p99, ratio.p999, ratio.max];
                        let ratio = ratios[i].map_or_else(|| "-".into(), |x| format!("{x:.2}"));
                        let _ = write!(out, "{:>+12}{ratio:>9}", pick(added));
                    }
                    _ => {
                        let _ = write!(out, "{:>12}{:>9}", "-", "-");
                    }
                }
            }
            out.push('\n');
        }
        let mean =
            |l: &Option<Latency>| l.map_or_else(|| "-".to_owned(), |l| format!("{:.1}", l.mean));
        let _ = write!(out, "{:<14}{:>12}", "mean µs", mean(&r.latency_us));
        if let Some(b) = &self.bare {
            let _ = write!(out, "{:>12}", mean(&b.latency_us));
        }
        out.push('\n');
    }
}

/// The timeline's slowest second (by p99) and emptiest one (by answers), where a stall
/// would show; nothing without a timeline.
fn timeline_extremes(out: &mut String, s: &Side) {
    let slowest = s
        .timeline
        .iter()
        .filter(|t| t.p99_us.is_some())
        .max_by_key(|t| t.p99_us);
    let emptiest = s.timeline.iter().min_by(|a, b| a.rps.total_cmp(&b.rps));
    let (Some(slowest), Some(emptiest)) = (slowest, emptiest) else {
        return;
    };
    let _ = writeln!(
        out,
        "  timeline: {} s; slowest second {} s (p99 {} µs, max {} µs); fewest answers \
         second {} s ({} /s)",
        s.timeline.len(),
        slowest.t_s,
        slowest.p99_us.unwrap_or_default(),
        slowest.max_us.unwrap_or_default(),
        emptiest.t_s,
        emptiest.rps
    );
}

fn side_counts(out: &mut String, name: &str, s: &Side) {
    let check = if s.counts_ok {
        "counts add up"
    } else {
        "counts MISMATCH"
    };
    let ratio = s
        .error_ratio
        .map_or_else(|| "-".to_owned(), |r| format!("{r}"));
    let _ = writeln!(
        out,
        "{name}: sent {} = answered {} + errors {} + sheds {} + timeouts {} ({check}); \
         error ratio {ratio}; latency over {} successful answer(s)",
        s.sent, s.answered, s.errors_total, s.sheds_total, s.timeouts_total, s.latency_samples
    );
    for (label, codes) in [("errors", &s.errors_by_code), ("sheds", &s.sheds_by_code)] {
        if !codes.is_empty() {
            let list: Vec<String> = codes.iter().map(|(c, n)| format!("{c} {n}")).collect();
            let _ = writeln!(out, "  {label} by code: {}", list.join(", "));
        }
    }
    if s.connect_errors > 0 {
        let _ = writeln!(out, "  failed connection attempts: {}", s.connect_errors);
    }
    if let Some(sched) = &s.schedule {
        let lag = &sched.send_lag_us;
        let _ = writeln!(
            out,
            "  pacing: send lag p50 {} µs, p99 {} µs, max {} µs; {} request(s) found every \
             connection busy; {} unsent",
            lag.p50, lag.p99, lag.max, sched.behind_no_connection, sched.unsent
        );
        if sched.behind_no_connection > 0 || sched.unsent > 0 {
            let _ = writeln!(
                out,
                "  warning: the schedule ran behind with every connection busy; latency \
                 still counts from the intended times, but raise --connections (needed: \
                 rate × latency)"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::wire::{Code, Outcome};

    fn info() -> PhaseInfo {
        PhaseInfo {
            target: "http://127.0.0.1:1".into(),
            transport: "http",
            subject: None,
            rate_rps: Some(100.0),
            duration_s: 2.0,
            warmup_s: 0.5,
            connections: 4,
            threads: 1,
            pipeline: 1,
            in_flight_max: 4,
            shards: Some(2),
            rss_mb: Some(12.34),
            server_cpu: Some(ServerCpu::InProcess),
            cpu_s: Some(0.5),
        }
    }

    fn recorder(base_us: u64) -> Recorder {
        let mut rec = Recorder::new();
        for i in 0..1000 {
            rec.sent += 1;
            rec.resolve(Outcome::Ok, base_us + i);
        }
        rec.sent += 1;
        rec.resolve(Outcome::Shed(Code::Named("rate_limited")), 0);
        rec
    }

    /// Percentiles come from the histogram at 3 significant figures; empty is all zero.
    #[test]
    fn extracts_percentiles() {
        let mut h = crate::bench::record::histogram();
        for v in 1..=10_000 {
            h.record(v).unwrap();
        }
        let l = Latency::of(&h);
        assert_eq!((l.p50, l.p90, l.p99, l.max), (5003, 9007, 9903, 10007));
        assert!((l.p999 as i64 - 9990).abs() <= 10, "{}", l.p999);
        assert!((l.mean - 5000.5).abs() < 5.0, "{}", l.mean);
        assert_eq!(Latency::of(&crate::bench::record::histogram()).p99, 0);
    }

    /// The JSON carries every field the gate and readers rely on, with these names.
    #[test]
    fn json_shape() {
        let router = Side::new(&info(), &recorder(100));
        let bare = Side::new(
            &PhaseInfo {
                rss_mb: None,
                cpu_s: None,
                ..info()
            },
            &recorder(50),
        );
        let env = Env::detect("shardline bench --embedded");
        let report = Report::new(
            router,
            true,
            Some("perf/bench/shardline.toml".into()),
            env,
            Some(bare),
        );
        let v: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
        for key in [
            "target",
            "transport",
            "in_flight_max",
            "mode",
            "target_rps",
            "achieved_rps",
            "duration_s",
            "connections",
            "sent",
            "answered",
            "errors_total",
            "errors_by_code",
            "sheds_total",
            "timeouts_total",
            "rss_mb",
            "cpu_s",
            "env",
            "bare",
            "added_us",
            "ratio",
        ] {
            assert!(v.get(key).is_some(), "{key} missing");
        }
        for key in ["p50", "p90", "p99", "p999", "max", "mean"] {
            assert!(v["latency_us"][key].is_number(), "latency_us.{key}");
            assert!(
                v["bare"]["latency_us"][key].is_number(),
                "bare.latency_us.{key}"
            );
        }
        for key in ["cpu_model", "cores", "kernel", "git_commit", "command_line"] {
            assert!(v["env"].get(key).is_some(), "env.{key}");
        }
        assert_eq!(v["mode"], "open-loop");
        assert_eq!(v["achieved_rps"], 500.5);
        assert_eq!(v["sheds_total"], 1);
        assert_eq!(v["sheds_by_code"]["rate_limited"], 1);
        assert_eq!(v["counts_ok"], true);
        assert!(v["bare"].get("rss_mb").is_none());
        // 0.5 s over 1001 requests sent in 2 s.
        assert_eq!(v["server_cpu_us_per_request"], 499.5);
        assert_eq!(v["server_cpu_cores"], 0.25);
        assert_eq!(v["server_cpu_of"], "server threads in this process");
        assert!(v["bare"]["server_cpu_us_per_request"].is_null());
        assert!(v["bare"]["server_cpu_cores"].is_null());
        let summary = report.summary();
        assert!(
            summary.contains("router server cpu: 499.5 µs per request, 0.250 cores busy"),
            "{summary}"
        );
        assert!(summary.contains("bare server cpu: unknown\n"), "{summary}");
        assert_eq!(v["added_us"]["p50"], 50);
        assert!(v["ratio"]["p50"].as_f64().unwrap() > 1.0);
        assert!(report
            .summary()
            .contains("router: sent 1001 = answered 1000"));
    }

    /// A remote target has no process figures; without bare there is no comparison.
    #[test]
    fn optional_fields_are_left_out() {
        let remote = PhaseInfo {
            rss_mb: None,
            cpu_s: None,
            server_cpu: None,
            rate_rps: None,
            ..info()
        };
        let report = Report::new(
            Side::new(&remote, &recorder(10)),
            false,
            None,
            Env::detect("x"),
            None,
        );
        let v: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
        for key in ["rss_mb", "cpu_s", "bare", "added_us", "ratio", "schedule"] {
            assert!(v.get(key).is_none(), "{key} present");
        }
        // Unknown, and said so: present as null rather than absent.
        assert!(v["server_cpu_us_per_request"].is_null(), "{v}");
        assert!(v["server_cpu_cores"].is_null(), "{v}");
        assert!(report.summary().contains("--server-pid PID measures it"));
        assert_eq!(v["target_rps"], serde_json::Value::Null);
        assert_eq!(v["mode"], "closed-loop");
    }

    /// Nothing answered 200: latencies are `null` (not 0), nothing is compared with bare,
    /// and the run fails naming the ratio and the code; within the budget it does not.
    #[test]
    fn a_run_without_answers_is_not_a_measurement() {
        let mut failed = Recorder::new();
        for _ in 0..10 {
            failed.sent += 1;
            failed.resolve(Outcome::Error(Code::Named("policy_not_found")), 0);
        }
        let router = Side::new(&info(), &failed);
        let bare = Side::new(&info(), &recorder(50));
        let report = Report::new(router, true, None, Env::detect("x"), Some(bare));
        let v: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
        for key in ["p50", "p90", "p99", "p999", "max", "mean"] {
            assert!(v["latency_us"][key].is_null(), "latency_us.{key}: {v}");
        }
        assert_eq!(v["latency_samples"], 0);
        assert_eq!(v["error_ratio"], 1.0);
        assert!(
            v.get("added_us").is_none() && v.get("ratio").is_none(),
            "{v}"
        );
        assert_eq!(v["conditions"]["target"], "embedded");
        assert_eq!(v["conditions"]["compare_bare"], true);
        assert_eq!(v["conditions"]["rate_rps"], 100.0);
        assert!(v["conditions"]["concurrency"].is_null());
        let why = report.failures();
        assert_eq!(why.len(), 2, "{why:?}");
        assert!(
            why[0].contains("error ratio 1 over --max-error-ratio 0.01"),
            "{why:?}"
        );
        assert!(why[0].contains("policy_not_found 10"), "{why:?}");
        assert!(why[1].contains("no successful answer"), "{why:?}");
        assert!(report.summary().contains("p99 µs                   -"));
        let ok = Report::new(
            Side::new(&info(), &recorder(10)),
            true,
            None,
            Env::detect("x"),
            None,
        );
        // 1 shed of 1001 is 0.1 %: within the default 1 %, not within 0.05 %.
        assert!(ok.failures().is_empty());
        let strict = Report {
            max_error_ratio: 0.0005,
            ..ok
        };
        assert_eq!(strict.failures().len(), 1);
        // Open loop: 500 of 1501 due never sent is a load that was not applied.
        let mut behind = recorder(10);
        behind.unsent = 500;
        let report = Report::new(
            Side::new(&info(), &behind),
            true,
            None,
            Env::detect("x"),
            None,
        );
        let why = report.failures();
        assert_eq!(why.len(), 1, "{why:?}");
        assert!(
            why[0].contains("500 of 1501 request(s) due in the window were never sent"),
            "{why:?}"
        );
    }

    /// The summary names the second with the worst p99 and the one with the fewest
    /// answers; a report without a timeline has no such line.
    #[test]
    fn summary_points_at_the_stall() {
        use crate::bench::timeline::Timeline;
        const S: u64 = 1_000_000_000;
        let mut rec = Recorder::with_timeline(Timeline::for_window(0, 3 * S, 0));
        // Second 1 stalls: half the answers, all at its end, 0.9 s late.
        for i in (0..300).filter(|i| i / 100 != 1 || i % 2 == 0) {
            let second = i / 100;
            let (at, us) = match second {
                1 => (S + 900_000_000, 900_000),
                _ => (second * S + i, 100),
            };
            rec.sent += 1;
            rec.resolve_at(Outcome::Ok, us, at);
        }
        rec.sent += 1;
        rec.resolve_at(Outcome::Timeout, 0, 2 * S);
        let window = PhaseInfo {
            duration_s: 3.0,
            ..info()
        };
        let report = Report::new(Side::new(&window, &rec), true, None, Env::detect("x"), None);
        let summary = report.summary();
        assert!(
            summary.contains("timeline: 3 s; slowest second 1 s (p99 901119 µs"),
            "{summary}"
        );
        assert!(
            summary.contains("fewest answers second 1 s (50 /s)"),
            "{summary}"
        );
        let v: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
        assert_eq!(v["timeline"][2]["errors"], 1, "{v}");
        assert_eq!(v["timeline"][1]["rps"], 50.0, "{v}");
        let plain = Report::new(
            Side::new(&info(), &recorder(5)),
            true,
            None,
            Env::detect("x"),
            None,
        );
        assert!(!plain.summary().contains("timeline:"));
    }

    /// Added latency may be negative; a zero baseline has no ratio.
    #[test]
    fn compares_per_percentile() {
        let a = Latency {
            p50: 100,
            p90: 200,
            p99: 300,
            p999: 400,
            max: 500,
            mean: 0.0,
        };
        let b = Latency {
            p50: 50,
            p90: 250,
            p99: 0,
            p999: 100,
            max: 1000,
            mean: 0.0,
        };
        let added = added_us(&a, &b);
        assert_eq!((added.p50, added.p90, added.max), (50, -50, -500));
        let r = ratio(&a, &b);
        assert_eq!((r.p50, r.p99, r.p999), (Some(2.0), None, Some(4.0)));
    }
}
