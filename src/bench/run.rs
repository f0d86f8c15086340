//! A run: start what is measured (the embedded router, the bare responder), drive each
//! with the client threads, watch them, and assemble the report.
//!
//! Over NATS the same holds: the router's subject is driven first, then the bare echo
//! (`nats_bare.rs`) is started on the same cores and driven with the same load through
//! the same server; `--bare-only` drives the echo alone.
//!
//! The router is measured first, then stopped, then the bare responder is started on the
//! same cores and given the identical load: the two never compete for the CPUs, and the
//! client is the same code with the same settings both times.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::thread::ScopedJoinHandle;
use std::time::{Duration, Instant};

use super::args::{Load, MixSource, NatsTarget, Settings, Target, TENANTS_DEFAULT};
use super::mix::{Generated, Mix, TENANTS_MAX};
use super::nats_bare::BareNats;
use super::nats_worker::{self, NatsPlan};
use super::record::{histogram, Recorder};
use super::report::{PhaseInfo, Report, Side};
use super::sys::{self, Env, ServerCpu, CLIENT_THREAD_PREFIX};
use super::worker::{client_thread, Plan, Progress, StartGate};
use super::BenchError;
use crate::config::Config;
use crate::server::{Server, ServerSettings};
use crate::transport::http::bare::BareShards;
use crate::transport::nats::ClientOptions;

/// Between the threads' release and their first send: time for all to wake.
const START_LEAD_MS: u64 = 20;
/// The progress line is printed this often.
const PROGRESS_PERIOD_MS: u64 = 1000;
/// The watcher notices finished threads within this.
const WATCH_POLL_MS: u64 = 50;

/// One thing driven: where it listens and how it is described.
struct Endpoint {
    label: &'static str,
    target: String,
    wire: Wire,
    shards: Option<usize>,
    /// In this process: its memory is read.
    local: bool,
    /// Whose CPU time over the window is the server's, when known.
    server_cpu: Option<ServerCpu>,
}

/// How an endpoint is spoken to.
enum Wire {
    Http {
        addr: SocketAddr,
        host: String,
    },
    Nats {
        opts: ClientOptions,
        subject: String,
        /// Shard-aware sending: the router's shard count (0 = off).
        owner_shards: usize,
    },
}

impl Wire {
    fn http(addr: SocketAddr, host: String) -> Wire {
        Wire::Http { addr, host }
    }
}

/// Runs the benchmark `settings` describe; progress goes to stderr.
pub fn run(settings: &Settings) -> Result<Report, BenchError> {
    let env = Env::detect(&settings.command_line);
    let mut report = match &settings.target {
        Target::Url { url, addr, host } => {
            let learned = match &settings.mix {
                MixSource::Generated(g) if g.tenants.is_empty() => {
                    Some(super::tenants::learn(url, *addr, host)?)
                }
                _ => None,
            };
            let (mix, used) = build_mix(&settings.mix, Tenants::Listed(learned))?;
            let endpoint = Endpoint {
                label: "router",
                target: url.clone(),
                wire: Wire::http(*addr, host.clone()),
                shards: None,
                local: false,
                server_cpu: settings.server_cpu,
            };
            let router = run_phase(&settings.load, &mix, &endpoint)?;
            let bare = if settings.compare_bare {
                Some(run_bare(&settings.load, &mix, &usable_cores()?)?)
            } else {
                None
            };
            Report::new(router, false, None, env, bare).with_tenants(used)
        }
        Target::Embedded { config } => run_embedded(settings, config, env)?,
        Target::Nats(nats) => run_nats(settings, nats, env)?,
    };
    report.max_error_ratio = settings.max_error_ratio;
    Ok(report)
}

/// Where a generated mix without `--tenants` takes its tenants from.
enum Tenants<'a> {
    /// The embedded router's policies directory.
    Config(&'a Path),
    /// The target's `GET /v1/tenants` (`None`: not asked, the mix names its own).
    Listed(Option<Vec<String>>),
    /// `TENANTS_DEFAULT` (the bare NATS echo, which answers any tenant).
    Default,
}

/// The tenants a mix uses, and where they came from (for the report).
type Used = (Option<Vec<String>>, &'static str);

fn usable_cores() -> Result<Vec<usize>, BenchError> {
    let usable = shards::Topology::detect()?.usable().to_vec();
    Ok(usable.iter().map(|c| c.0).collect())
}

fn run_nats(settings: &Settings, nats: &NatsTarget, env: Env) -> Result<Report, BenchError> {
    let opts = nats.client_options()?;
    // Without --tenants only the echo can be driven (`args` refuses the rest).
    let (mix, used) = build_mix(&settings.mix, Tenants::Default)?;
    if nats.bare_only {
        let bare = run_nats_bare(&settings.load, &mix, &opts, &nats.url)?;
        let report = Report::new(bare, false, None, env, None).into_bare_only();
        return Ok(report.with_tenants(used));
    }
    let endpoint = Endpoint {
        label: "router",
        target: nats.url.clone(),
        wire: Wire::Nats {
            opts: opts.clone(),
            subject: nats.subject.clone(),
            owner_shards: nats.owner_shards,
        },
        shards: None,
        local: false,
        server_cpu: settings.server_cpu,
    };
    let router = run_phase(&settings.load, &mix, &endpoint)?;
    let bare = if settings.compare_bare {
        Some(run_nats_bare(&settings.load, &mix, &opts, &nats.url)?)
    } else {
        None
    };
    let mut report = Report::new(router, false, None, env, bare).with_tenants(used);
    if nats.owner_shards > 0 {
        report.conditions.shards = Some(nats.owner_shards);
    }
    Ok(report)
}

fn run_nats_bare(
    load: &Load,
    mix: &Mix,
    opts: &ClientOptions,
    url: &str,
) -> Result<Side, BenchError> {
    let cores = usable_cores()?;
    let bare = BareNats::start(opts, &cores)?;
    let endpoint = Endpoint {
        label: "bare",
        target: url.to_owned(),
        wire: Wire::Nats {
            opts: opts.clone(),
            subject: bare.subject().to_owned(),
            owner_shards: 0,
        },
        shards: Some(cores.len()),
        local: false,
        // The responders are this process's only threads besides the client threads
        // (each client's executor runs in its own `bench-` thread): the echo's CPU per
        // request, beside the router's from `--server-pid`.
        server_cpu: Some(ServerCpu::InProcess),
    };
    let side = run_phase(load, mix, &endpoint);
    let stopped = bare.stop();
    let side = side?;
    stopped?;
    Ok(side)
}

fn run_embedded(settings: &Settings, config: &Path, env: Env) -> Result<Report, BenchError> {
    let (server, cores, policies) = start_embedded(config)?;
    let mix = build_mix(&settings.mix, Tenants::Config(&policies));
    let addr = server.local_addr();
    let endpoint = Endpoint {
        label: "router",
        target: format!("http://{addr}"),
        wire: Wire::http(addr, addr.to_string()),
        shards: Some(server.shard_count()),
        local: true,
        server_cpu: Some(ServerCpu::InProcess),
    };
    let router =
        mix.and_then(|(mix, used)| Ok((run_phase(&settings.load, &mix, &endpoint)?, mix, used)));
    // Stopped before the bare phase (and on failure) so that nothing competes with it.
    let stopped = server
        .stop()
        .map_err(|e| BenchError::Router(format!("{e:#}")));
    let (router, mix, used) = router?;
    stopped?;
    let bare = if settings.compare_bare {
        Some(run_bare(&settings.load, &mix, &cores)?)
    } else {
        None
    };
    let config = Some(config.display().to_string());
    Ok(Report::new(router, true, config, env, bare).with_tenants(used))
}

/// Starts the router of `path` on 127.0.0.1:0 (HTTP only); returns it, the cores its
/// shards run on, and its policies directory.
fn start_embedded(path: &Path) -> Result<(Server, Vec<usize>, PathBuf), BenchError> {
    let config = Config::load(path).map_err(|error| BenchError::Config {
        path: path.to_path_buf(),
        error,
    })?;
    // Already installed (a second run in one process) is fine: logs still flow.
    let logging = &config.logging;
    let _ = crate::logging::init(logging.level, logging.format, logging.repeats_per_window);
    let mut settings = ServerSettings::from_config(&config);
    settings.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    settings.shard_port_base = 0;
    settings.tls = None;
    // The bench drives the data port; an operations listener on the config's address
    // would collide with a router already running from the same config.
    settings.ops_listen = None;
    let cores = shards::Topology::detect()?.select(&settings.cores)?;
    let policies = settings.policies_dir.clone();
    let server = Server::start(settings).map_err(|e| BenchError::Router(format!("{e:#}")))?;
    Ok((server, cores.iter().map(|c| c.0).collect(), policies))
}

fn run_bare(load: &Load, mix: &Mix, cores: &[usize]) -> Result<Side, BenchError> {
    let bare = BareShards::start(SocketAddr::from(([127, 0, 0, 1], 0)), cores)?;
    let addr = bare.local_addr();
    let endpoint = Endpoint {
        label: "bare",
        target: format!("http://{addr}"),
        wire: Wire::http(addr, addr.to_string()),
        shards: Some(cores.len()),
        local: false,
        // The only server threads in this process now: the router (if any) has stopped.
        server_cpu: Some(ServerCpu::InProcess),
    };
    let side = run_phase(load, mix, &endpoint);
    let stopped = bare.stop();
    let side = side?;
    stopped?;
    Ok(side)
}

/// The mix to send, and the tenants it uses: `--tenants`, else those `from` gives (for a
/// config, its tenants having the policy; `TENANTS_DEFAULT` if none).
fn build_mix(source: &MixSource, from: Tenants<'_>) -> Result<(Mix, Used), BenchError> {
    match source {
        MixSource::File(path) => Ok((Mix::from_file(path)?, (None, "--requests"))),
        MixSource::Generated(spec) if spec.tenants.is_empty() => {
            let (tenants, origin) = match from {
                Tenants::Config(dir) => (tenants_with(dir, &spec.policy), "config"),
                Tenants::Listed(Some(ids)) => (ids, "GET /v1/tenants"),
                Tenants::Listed(None) | Tenants::Default => (Vec::new(), "default"),
            };
            let (tenants, origin) = if tenants.is_empty() {
                let ids = TENANTS_DEFAULT.iter().map(|t| (*t).to_owned()).collect();
                (ids, "default")
            } else {
                (tenants, origin)
            };
            let mix = Mix::generated(&Generated {
                tenants: tenants.clone(),
                ..spec.clone()
            })?;
            Ok((mix, (Some(tenants), origin)))
        }
        MixSource::Generated(spec) => {
            let used = (Some(spec.tenants.clone()), "--tenants");
            Ok((Mix::generated(spec)?, used))
        }
    }
}

/// Tenants (directories of `policies`) that hold `<policy>.json`, sorted.
fn tenants_with(policies: &Path, policy: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(policies) else {
        return Vec::new();
    };
    let file = format!("{policy}.json");
    let mut tenants: Vec<String> = entries
        .filter_map(Result::ok)
        .filter(|e| e.path().join(&file).is_file())
        .filter_map(|e| e.file_name().into_string().ok())
        .take(TENANTS_MAX)
        .collect();
    tenants.sort();
    tenants
}

/// What the watcher saw of the process while the window was measured.
#[derive(Debug, Default)]
struct Watched {
    cpu_at_start: Option<f64>,
    cpu_at_end: Option<f64>,
    rss_mb: Option<f64>,
}

/// The client threads' plan for one endpoint.
enum Drive {
    Http(Plan),
    Nats(Box<NatsPlan>),
}

impl Drive {
    fn of(load: &Load, endpoint: &Endpoint) -> Drive {
        let warmup_ns = load.warmup.as_nanos() as u64;
        let end_ns = warmup_ns + load.duration.as_nanos() as u64;
        let (timeout_ns, spin_ns) = (load.timeout.as_nanos() as u64, load.spin.as_nanos() as u64);
        match &endpoint.wire {
            Wire::Http { addr, host } => Drive::Http(Plan {
                addr: *addr,
                host: host.clone(),
                rate_rps: load.rate_rps,
                threads: load.threads,
                connections: load.connections,
                pipeline: load.pipeline,
                warmup_ns,
                end_ns,
                timeout_ns,
                spin_ns,
                client_cores: load.client_cores.clone(),
            }),
            Wire::Nats {
                opts,
                subject,
                owner_shards,
            } => Drive::Nats(Box::new(NatsPlan {
                opts: opts.clone(),
                url: endpoint.target.clone(),
                subject: subject.clone(),
                owner_shards: *owner_shards,
                rate_rps: load.rate_rps,
                threads: load.threads,
                connections: load.connections,
                pipeline: load.pipeline,
                in_flight: load.in_flight,
                warmup_ns,
                end_ns,
                timeout_ns,
                spin_ns,
                client_cores: load.client_cores.clone(),
            })),
        }
    }

    /// `(warmup_ns, end_ns)` after the start.
    fn window(&self) -> (u64, u64) {
        match self {
            Drive::Http(p) => (p.warmup_ns, p.end_ns),
            Drive::Nats(p) => (p.warmup_ns, p.end_ns),
        }
    }

    fn thread(
        &self,
        i: usize,
        mix: &Mix,
        progress: &Progress,
        gate: &StartGate,
    ) -> Result<Recorder, BenchError> {
        match self {
            Drive::Http(plan) => client_thread(i, plan, mix, progress, gate),
            Drive::Nats(plan) => nats_worker::client_thread(i, plan, mix, progress, gate),
        }
    }
}

fn run_phase(load: &Load, mix: &Mix, endpoint: &Endpoint) -> Result<Side, BenchError> {
    let drive = Drive::of(load, endpoint);
    let progress: Vec<Progress> = (0..load.threads).map(|_| Progress::new()).collect();
    let gate = StartGate::new(load.threads);
    let (rec, watched) = std::thread::scope(|scope| {
        let mut handles = Vec::with_capacity(load.threads);
        for (i, progress) in progress.iter().enumerate() {
            let (drive, gate) = (&drive, &gate);
            let spawned = std::thread::Builder::new()
                .name(format!("{CLIENT_THREAD_PREFIX}{i}"))
                .spawn_scoped(scope, move || drive.thread(i, mix, progress, gate));
            match spawned {
                Ok(handle) => handles.push(handle),
                Err(source) => {
                    gate.abort();
                    return Err(BenchError::Spawn(source));
                }
            }
        }
        let start = gate.release(Duration::from_millis(START_LEAD_MS));
        let watched = match start {
            Some(start) => watch(endpoint, drive.window(), start, &progress, &handles),
            None => Watched::default(),
        };
        let merged = join_all(handles)?;
        Ok((merged, watched))
    })?;
    let (transport, subject) = match &endpoint.wire {
        Wire::Http { .. } => ("http", None),
        Wire::Nats { subject, .. } => ("nats", Some(subject.clone())),
    };
    let info = PhaseInfo {
        target: endpoint.target.clone(),
        transport,
        subject,
        rate_rps: load.rate_rps,
        duration_s: load.duration.as_secs_f64(),
        warmup_s: load.warmup.as_secs_f64(),
        connections: load.connections,
        threads: load.threads,
        pipeline: load.pipeline,
        in_flight_max: load.in_flight,
        shards: endpoint.shards,
        rss_mb: watched.rss_mb,
        server_cpu: endpoint.server_cpu,
        cpu_s: watched
            .cpu_at_start
            .zip(watched.cpu_at_end)
            .map(|(a, b)| b - a)
            // Less at the end than at the start: the process (or a thread) ended.
            .filter(|cpu| *cpu >= 0.0),
    };
    Ok(Side::new(&info, &rec))
}

/// Merges the threads' records; the first real error wins over the `Aborted` it caused.
fn join_all(handles: Vec<ScopedJoinHandle<'_, ThreadResult>>) -> Result<Recorder, BenchError> {
    let mut merged = Recorder::new();
    let mut error = None;
    for (i, handle) in handles.into_iter().enumerate() {
        match handle.join() {
            Ok(Ok(rec)) => merged.merge(&rec),
            Ok(Err(BenchError::Aborted)) => {
                error = error.or(Some(BenchError::Aborted));
            }
            Ok(Err(e)) if matches!(error, None | Some(BenchError::Aborted)) => error = Some(e),
            Ok(Err(_)) => {}
            Err(_) => return Err(BenchError::ThreadPanicked(i)),
        }
    }
    error.map_or(Ok(merged), Err)
}

type ThreadResult = Result<Recorder, BenchError>;
type Handles<'s> = [ScopedJoinHandle<'s, ThreadResult>];

/// Until every client thread has finished: a progress line each second, the server's CPU
/// time at the window's edges (when it is known), and (for a router in this process) its
/// memory at the end.
fn watch(
    endpoint: &Endpoint,
    (warmup_ns, end_ns): (u64, u64),
    start: Instant,
    progress: &[Progress],
    handles: &Handles<'_>,
) -> Watched {
    let window_start = start + Duration::from_nanos(warmup_ns);
    let window_end = start + Duration::from_nanos(end_ns);
    let period = Duration::from_millis(PROGRESS_PERIOD_MS);
    let mut watched = Watched::default();
    let mut next_line = start + period;
    let mut last_sent = 0;
    let (mut started, mut ended) = (false, false);
    let cpu_s = || endpoint.server_cpu.and_then(|s| s.cpu_s());
    while !handles.iter().all(|h| h.is_finished()) {
        let now = Instant::now();
        if !started && now >= window_start {
            started = true;
            watched.cpu_at_start = cpu_s();
        }
        if !ended && now >= window_end {
            ended = true;
            watched.cpu_at_end = cpu_s();
            watched.rss_mb = endpoint.local.then(sys::rss_mb).flatten();
        }
        if now >= next_line {
            let elapsed = now.saturating_duration_since(start).as_secs_f64();
            last_sent = progress_line(endpoint.label, elapsed, progress, last_sent);
            next_line += period;
        }
        let mut wake = next_line.min(now + Duration::from_millis(WATCH_POLL_MS));
        if !started && window_start > now {
            wake = wake.min(window_start);
        }
        if !ended && window_end > now {
            wake = wake.min(window_end);
        }
        std::thread::sleep(wake.saturating_duration_since(Instant::now()));
    }
    if !ended {
        watched.cpu_at_end = cpu_s();
        watched.rss_mb = endpoint.local.then(sys::rss_mb).flatten();
    }
    watched
}

/// Prints `router 3.0 s: sent 6000 (2000 req/s), p99 412 µs` (and how many requests
/// found every connection busy, if any); returns the sent total.
fn progress_line(label: &str, elapsed_s: f64, progress: &[Progress], last_sent: u64) -> u64 {
    let mut merged = histogram();
    let (mut sent, mut behind) = (0, 0);
    for p in progress {
        sent += p.sent.load(Ordering::Relaxed);
        behind += p.behind.load(Ordering::Relaxed);
        let h = p.latency.lock().unwrap_or_else(|e| e.into_inner());
        // Same bounds on both sides: addition cannot fail.
        merged.add(&*h).expect("same bounds");
    }
    let p99 = if merged.is_empty() {
        "-".to_owned()
    } else {
        format!("{} µs", merged.value_at_quantile(0.99))
    };
    let behind = if behind > 0 {
        format!("; behind schedule, all connections busy: {behind}")
    } else {
        String::new()
    };
    eprintln!(
        "{label} {elapsed_s:.1} s: sent {sent} ({} req/s), p99 {p99}{behind}",
        sent - last_sent
    );
    sent
}
