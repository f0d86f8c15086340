//! The router as a server: one shard per core, each deciding every request that reaches
//! it and owning a partition of the tenants (their idempotency keys, sessions and
//! results), serving HTTP on a shared port (SO_REUSEPORT) and handing the requests only
//! an owner can answer over the SPSC ring mesh.
//!
//! Start-up order: preflight (`crate::preflight`, which `config check` also runs: the
//! routing table, cores, registry, certificates, io_uring, memlock) → start one
//! pinned executor per core, each binding its listeners before the readiness barrier →
//! ready. Stop: SIGTERM/SIGINT → `/readyz` 503 for `server.drain_grace_ms` while still
//! serving (`begin_stop`) → the mesh's stop protocol: listeners close, in-flight
//! requests (including handoffs) are answered, then every shard exits.
//!
//! The operations listener (`server.ops_listen`) serves health, readiness, metrics and the
//! admin API on shard 0, with its own small connection cap (`OPS_CONNECTIONS_MAX`). Why a
//! separate listener: the data port refuses connections over `connections_per_shard_max`
//! before reading a request, so under overload a probe or a scrape on the data port gets
//! `503` and a supervisor would restart a healthy, busy router while metrics go blind.
//!
//! Policies load per document (`RoutingTable::load_dir_per_document`): a broken document
//! is reported and left out, every other one serves. `strict_policies` keeps the old
//! all-or-nothing start for operators who prefer a refused start to a partial table.

pub mod access;
mod admin_call;
pub mod budget_file;
pub mod fds;
pub mod handoff;
pub mod nats;
mod nats_admin;
pub mod nats_service;
pub mod notify;
pub mod pipeline;
pub mod service;
pub mod shard;
pub mod stats;
pub mod subjects;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use shards::{
    CoreSelection, Heartbeats, Partitioner, Runtime, RuntimeConfig, ShardContext, ShardExit,
    ShardId, Watchdog,
};

use crate::admin::{Admin, Permission, PolicyStore, TableHandle, TokenSpec, Tokens, Watcher};
use crate::cluster::ClusterNode;
use crate::config::AccessMode;
use crate::decide::Now;
use crate::extensions::Registry;
use crate::metrics::Transport;
use crate::shard::ShardConfig;
use crate::transport::http::{self, HttpLimits, HttpStats, Stop, TlsAcceptor};
use crate::transport::nats::ClientStats;
use budget_file::BudgetFile;
use handoff::Msg;
use service::{Listener, RouterService};
use shard::ShardCtx;
pub use stats::Count;
use stats::ShardStats;

/// The HTTPS listener's settings.
#[derive(Debug, Clone)]
pub struct TlsSettings {
    pub listen: SocketAddr,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
}

/// Everything `run` needs, resolved from the config file and environment.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub listen: SocketAddr,
    /// 0 = off; else shard `i` also listens on `shard_port_base + i`.
    pub shard_port_base: u16,
    pub tls: Option<TlsSettings>,
    pub cores: CoreSelection,
    pub http: HttpLimits,
    pub ring_slots: usize,
    /// Sizes of each shard's state and caches.
    pub shard: ShardConfig,
    pub policies_dir: PathBuf,
    /// Every bearer token with its tenant and permissions (`[admin] tokens`, `token_env`).
    pub tokens: Vec<TokenSpec>,
    /// `[admin] enabled`; the admin API is on only if some token holds `admin` too.
    pub admin_enabled: bool,
    /// `[admin] writes_per_second`, per token.
    pub admin_writes_per_second: u32,
    /// `[auth] results`, `[auth] decide`.
    pub results_access: AccessMode,
    pub decide_access: AccessMode,
    pub watch_interval: Duration,
    pub stop_timeout: Duration,
    /// A shard whose heartbeat is older than this is stalled (`server.stall_ms`).
    pub stall: Duration,
    /// What an idle shard's executor does (`server.poll`, `server.poll_spin_us`).
    pub poll: shards::PollMode,
    /// How long a handed-off request waits for the owner (`server.handoff_timeout_ms`).
    pub handoff_timeout: Duration,
    /// Extension registry (`server.extensions_dir`), loaded once at start.
    pub extensions_dir: PathBuf,
    /// `[nats]` when a URL is configured; `None` = NATS off.
    pub nats: Option<crate::config::NatsConfig>,
    /// `cluster.node_id`, or the host name when it is empty: which node this is in the
    /// NATS service API.
    pub node_id: String,
    /// `[cluster]` when `cluster.enabled`: the node shares its policies through the bucket.
    pub cluster: Option<crate::config::ClusterConfig>,
    /// What a request may name in `assignment_subject` (checked with NATS on or off).
    pub assignment_subjects: subjects::AssignmentSubjects,
    /// The operations listener; `None` = off.
    pub ops_listen: Option<SocketAddr>,
    /// The admin API is served on the data listeners too (not only on `ops_listen`).
    pub admin_on_data_port: bool,
    /// One invalid policy document refuses the start (else it is reported and left out).
    pub strict_policies: bool,
    /// The service manager to send `WATCHDOG=1` to while no shard is stalled (`serve` sets
    /// it from `$NOTIFY_SOCKET`); `None` = no keep-alive.
    pub notify: Option<Arc<notify::Notifier>>,
}

/// Connections the operations listener serves at once; more are answered `503`. Small:
/// it serves probes, scrapes and operators, never traffic.
pub const OPS_CONNECTIONS_MAX: usize = 64;
/// Invalid documents shown as their own `shardline_policy_invalid` series and in
/// `/readyz`; the rest are counted in one overflow series (bounded cardinality).
pub const POLICY_INVALID_SERIES_MAX: usize = 100;
/// The label value (tenant and policy) of the overflow series.
pub const POLICY_INVALID_OVERFLOW: &str = "_overflow";

/// Process-wide, read-mostly state every shard can see.
pub struct Shared {
    pub settings: ServerSettings,
    pub handle: TableHandle,
    pub admin: Option<Admin>,
    /// Token checks of every route, and their counters.
    pub access: access::Access,
    /// The budgets' state file (`budget_file`).
    pub budgets: Arc<BudgetFile>,
    pub partition: Partitioner,
    stats: Box<[Arc<ShardStats>]>,
    http: Box<[Arc<HttpStats>]>,
    /// The operations listener's connection statistics (not the data plane's).
    ops_http: Arc<HttpStats>,
    started: Instant,
    ready: AtomicBool,
    stopping: AtomicBool,
    watch: Option<Arc<crate::admin::WatchStats>>,
    pub registry: Arc<Registry>,
    pub nats_settings: Option<Arc<nats::NatsSettings>>,
    /// Per shard: its NATS client's counters (empty when NATS is off).
    pub nats: Box<[Arc<ClientStats>]>,
    /// Per shard: calls by extension and outcome.
    pub extension_calls: Box<[nats::ExtensionCalls]>,
    /// Per shard: its last heartbeat and stall mark, kept by the watchdog thread.
    pub heartbeats: Arc<Heartbeats>,
    /// This process in the NATS service API (`$SRV.PING|INFO|STATS`).
    pub service: nats_service::Identity,
    /// The cluster side (`cluster.enabled`): the policy bucket and this node's mirror.
    pub cluster: Option<Arc<ClusterNode>>,
}

impl Shared {
    pub fn now(&self) -> Now {
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        Now {
            mono_ns: self.started.elapsed().as_nanos() as u64,
            unix_ms,
        }
    }

    pub fn metrics(&self, shard: ShardId) -> &ShardStats {
        &self.stats[shard.index()]
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
            && !self.is_stopping()
            && self.nats_connected()
            && self.heartbeats.stalled().next().is_none()
            && self.cluster.as_ref().is_none_or(|c| c.mirror.synced())
    }

    /// Whether every shard's NATS connection is up (true when NATS is off).
    pub fn nats_connected(&self) -> bool {
        self.nats
            .iter()
            .all(|s| s.connected.load(Ordering::Relaxed) == 1)
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    pub fn render_metrics(&self, out: &mut String) {
        let (generation, table) = self.handle.current();
        stats::render_all(
            out,
            &self.stats,
            &self.http,
            generation,
            table.len(),
            self.watch.as_deref(),
            more_series(self),
        );
    }
}

/// Series beyond the shards' own metrics: NATS, extensions, stalls, access control,
/// readiness and the process's descriptors.
fn more_series(shared: &Shared) -> Vec<crate::metrics::ExtraMetric> {
    let mut series = nats::metric_series(&shared.nats, &shared.extension_calls, &shared.registry);
    series.extend(stats::stall_series(&shared.heartbeats));
    series.extend(stats::invalid_policy_series(&shared.handle.invalid()));
    series.extend(shared.access.metric_series());
    if let Some(cluster) = &shared.cluster {
        series.extend(cluster.metric_series());
    }
    series.push(crate::metrics::ExtraMetric::gauge(
        "shardline_ready",
        "1 while /readyz answers 200 (every shard serving, NATS up, none stalled, not \
         draining), else 0.",
        f64::from(u8::from(shared.is_ready())),
    ));
    series.extend(fds::process_series());
    series
}

/// A running router; `stop` (or a signal, in `serve`) ends it gracefully.
pub struct Server {
    // First, so it is dropped first: stopping shards stop beating, which is not a stall.
    watchdog: Option<Watchdog>,
    runtime: Runtime,
    shared: Arc<Shared>,
    watcher: Option<Watcher>,
    _ports: Vec<PortReservation>,
}

impl Server {
    /// Loads the policies, starts the shards and returns once every shard listens.
    pub fn start(mut settings: ServerSettings) -> anyhow::Result<Server> {
        // The same checks as `config check`, before any port is taken.
        let checked = crate::preflight::check(&settings)?;
        let registry = checked.registry;
        let shard_count = checked.cores.len();
        let nats = checked.nats.map(Arc::new);
        let fds = fds::fit(shard_count, settings.http.connections_max)?;
        settings.http.connections_max = fds.connections_per_shard;
        let mut ports = vec![reserve(&mut settings.listen)?];
        if settings.shard_port_base != 0 {
            for i in 0..shard_count {
                let port =
                    u16::try_from(usize::from(settings.shard_port_base) + i).map_err(|_| {
                        anyhow::anyhow!("server.shard_port_base + shards is over 65535")
                    })?;
                ports.push(reserve(&mut SocketAddr::new(settings.listen.ip(), port))?);
            }
        }
        if let Some(tls) = &mut settings.tls {
            ports.push(reserve(&mut tls.listen)?);
        }
        if let Some(ops) = &mut settings.ops_listen {
            ports.push(reserve(ops)?);
        }
        crate::admin::log_invalid("start", &checked.policies.invalid);
        let handle = TableHandle::new(checked.policies.table);
        handle.set_invalid(checked.policies.invalid);
        let store = Arc::new(PolicyStore::open(&settings.policies_dir)?);
        let tokens = Arc::new(Tokens::with_permissions(&settings.tokens)?);
        let service = nats_service::Identity::new(
            &settings.node_id,
            settings.cluster.is_some(),
            random_seed(),
            crate::logging::now_unix_ms(),
        );
        let cluster = match &settings.cluster {
            Some(c) => Some(Arc::new(ClusterNode::new(
                c,
                (&settings.node_id, &service.id, shard_count as u32),
                Arc::clone(&store),
                handle.clone(),
            )?)),
            None => None,
        };
        let admin = admin(&settings, &tokens, &store, &handle).map(|admin| match &cluster {
            Some(c) => admin.with_cluster(Arc::clone(c)),
            None => admin,
        });
        let access = access::Access::new(
            tokens,
            settings.results_access,
            settings.decide_access,
            settings.admin_writes_per_second,
        );
        let watcher = Watcher::spawn(handle.clone(), Arc::clone(&store), settings.watch_interval)?;
        let budgets = BudgetFile::open(&settings.policies_dir, shard_count)?;
        let shared = Arc::new(Shared {
            partition: Partitioner::new(shard_count),
            stats: (0..shard_count)
                .map(|_| Arc::new(ShardStats::default()))
                .collect(),
            http: (0..shard_count)
                .map(|_| Arc::new(HttpStats::default()))
                .collect(),
            ops_http: Arc::default(),
            started: Instant::now(),
            ready: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            watch: Some(Arc::clone(watcher.stats())),
            nats: match &nats {
                Some(_) => (0..shard_count).map(|_| Arc::default()).collect(),
                None => Box::new([]),
            },
            nats_settings: nats,
            extension_calls: (0..shard_count)
                .map(|_| nats::ExtensionCalls::new(registry.len()))
                .collect(),
            registry: Arc::new(registry),
            heartbeats: Heartbeats::new(shard_count),
            service,
            cluster,
            handle,
            admin,
            access,
            budgets,
            settings,
        });
        let config = RuntimeConfig {
            cores: shared.settings.cores.clone(),
            ring_slots: shared.settings.ring_slots,
            poll: shared.settings.poll,
            stop_timeout: shared.settings.stop_timeout,
            ..RuntimeConfig::default()
        };
        let tls = shared.settings.tls.clone();
        let factory_shared = Arc::clone(&shared);
        let runtime = Runtime::start(config, move |ctx: ShardContext<Msg>| {
            let tls = match &tls {
                Some(t) => Some(TlsAcceptor::from_pem_files(
                    &t.cert,
                    &t.key,
                    t.client_ca.as_deref(),
                )?),
                None => None,
            };
            start_shard(Arc::clone(&factory_shared), ctx, tls)
        })?;
        let watchdog = watch_stalls(&shared)?;
        shared.ready.store(true, Ordering::Release);
        Ok(Server {
            runtime,
            shared,
            watcher: Some(watcher),
            watchdog: Some(watchdog),
            _ports: ports,
        })
    }

    /// The HTTP address every shard accepts on (the real port when 0 was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.settings.listen
    }

    /// The operations listener's address (the real port when 0 was asked), when on.
    pub fn ops_addr(&self) -> Option<SocketAddr> {
        self.shared.settings.ops_listen
    }

    /// The HTTPS address, when TLS is on.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.shared.settings.tls.as_ref().map(|t| t.listen)
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    pub fn shard_count(&self) -> usize {
        self.shared.partition.shard_count()
    }

    /// Waits up to `timeout` for a shard to end on its own: a panic, or a loop that
    /// returned. The caller decides what a dead shard means (`serve` exits non-zero).
    pub fn wait_shard_exit(&mut self, timeout: Duration) -> Option<ShardExit> {
        self.runtime.wait_exit(timeout)
    }

    /// The first step of a stop: `/readyz` answers 503 from now on, while the listeners
    /// keep accepting and answering, so a load balancer takes this node out of rotation
    /// before its connections are refused (`serve` waits `server.drain_grace_ms` here).
    pub fn begin_stop(&self) {
        self.shared.stopping.store(true, Ordering::Release);
    }

    /// Graceful stop: listeners close, in-flight requests are answered, shards exit.
    pub fn stop(mut self) -> anyhow::Result<()> {
        self.shared.stopping.store(true, Ordering::Release);
        // Stopping shards stop beating: that is not a stall.
        if let Some(w) = self.watchdog.take() {
            w.stop();
        }
        if let Some(w) = self.watcher.take() {
            w.stop();
        }
        let stopped = self.runtime.stop();
        // Every shard handed its last snapshot as it stopped; written (fsynced) even when
        // the stop went wrong, since what the shards handed over is still good.
        let written = self.shared.budgets.finish();
        stopped?;
        written
    }
}

/// Starts the watchdog thread that marks shards whose heartbeat stopped (`shard::keep_alive`).
/// With a systemd watchdog, the same thread sends `WATCHDOG=1` while no shard is stalled.
fn watch_stalls(shared: &Arc<Shared>) -> anyhow::Result<Watchdog> {
    let stall = shared.settings.stall;
    let on_change = |change: shards::StallChange| {
        let (shard, silent) = (change.shard, change.silent.as_millis());
        if change.stalled {
            log::error!("shard {shard} is stalled: no heartbeat for {silent} ms; not ready");
        } else {
            log::warn!("shard {shard} runs again after {silent} ms without a heartbeat");
        }
    };
    let notify = shared.settings.notify.clone();
    let keepalive = notify.as_ref().and_then(|n| n.keepalive_every());
    let watchdog = match (notify, keepalive) {
        (Some(notify), Some(every)) => {
            // Looks twice per keep-alive period; a ping goes out when the next look would
            // come too late, so pings are at most `every` apart while the shards beat.
            let look = every / 2;
            let last = std::cell::Cell::new(None::<Instant>);
            Watchdog::spawn_observed(
                Arc::clone(&shared.heartbeats),
                stall,
                Some(look),
                on_change,
                move |healthy| {
                    let due = last.get().is_none_or(|at| at.elapsed() + look >= every);
                    if healthy && due {
                        notify.send("WATCHDOG=1");
                        last.set(Some(Instant::now()));
                    }
                },
            )
        }
        _ => Watchdog::spawn(Arc::clone(&shared.heartbeats), stall, on_change),
    }
    .map_err(|e| anyhow::anyhow!("cannot start the shard watchdog thread: {e}"))?;
    Ok(watchdog)
}

fn reserve(addr: &mut SocketAddr) -> anyhow::Result<PortReservation> {
    let reservation = PortReservation::new(*addr).map_err(|e| match e.raw_os_error() {
        Some(libc::EADDRINUSE) => anyhow::anyhow!("{addr} is already in use by another process"),
        _ => anyhow::anyhow!("cannot listen on {addr}: {e}"),
    })?;
    *addr = reservation.addr;
    Ok(reservation)
}

/// The admin API, when enabled and some token may use it.
fn admin(
    settings: &ServerSettings,
    tokens: &Arc<Tokens>,
    store: &Arc<PolicyStore>,
    handle: &TableHandle,
) -> Option<Admin> {
    if !settings.admin_enabled || !tokens.any_with(Permission::Admin) {
        return None;
    }
    let (tokens, store) = (Arc::clone(tokens), Arc::clone(store));
    Some(Admin::with_shared_tokens(tokens, store, handle.clone()))
}

/// Why a shard could not start.
#[derive(Debug, thiserror::Error)]
pub enum ShardStartError {
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] http::TlsError),
}

/// Runs on the shard's thread inside its executor: binds, spawns the servers, and
/// returns the mesh loop as the shard's main future.
fn start_shard(
    shared: Arc<Shared>,
    mut ctx: ShardContext<Msg>,
    tls: Option<TlsAcceptor>,
) -> Result<impl std::future::Future<Output = ()>, ShardStartError> {
    let id = ctx.id;
    let outbox = ctx.end.outbox();
    let shard = ShardCtx::new(id, Arc::clone(&shared), outbox);
    shard.restore_budgets();
    let service_for = |transport, listener| {
        Rc::new(RouterService {
            ctx: Rc::clone(&shard),
            transport,
            listener,
        })
    };
    let (http_service, https_service) = (
        service_for(Transport::Http, Listener::Data),
        service_for(Transport::Https, Listener::Data),
    );
    let stop = Stop::new();
    let settings = &shared.settings;
    let mut listeners = vec![(settings.listen, None)];
    if settings.shard_port_base != 0 {
        let port = settings.shard_port_base + id.0;
        listeners.push((SocketAddr::new(settings.listen.ip(), port), None));
    }
    if let Some(t) = &settings.tls {
        listeners.push((t.listen, tls));
    }
    let mut servers = Vec::with_capacity(listeners.len());
    for (addr, tls) in listeners {
        let listener = http::bind(addr).map_err(|source| ShardStartError::Bind { addr, source })?;
        let stats = Arc::clone(&shared.http[id.index()]);
        let service = Rc::clone(if tls.is_some() {
            &https_service
        } else {
            &http_service
        });
        let serve = http::serve(listener, service, settings.http, stats, tls, stop.clone());
        let task = glommio::spawn_local(async move {
            if let Err(e) = serve.await {
                log::warn!("shard {id}: HTTP server ended with {e}");
            }
        });
        servers.push(task.detach());
    }
    if let (Some(addr), 0) = (settings.ops_listen, id.0) {
        let listener = http::bind(addr).map_err(|source| ShardStartError::Bind { addr, source })?;
        let limits = HttpLimits {
            connections_max: OPS_CONNECTIONS_MAX,
            ..settings.http
        };
        let service = service_for(Transport::Http, Listener::Ops);
        let stats = Arc::clone(&shared.ops_http);
        let serve = http::serve(listener, service, limits, stats, None, stop.clone());
        let task = glommio::spawn_local(async move {
            if let Err(e) = serve.await {
                log::warn!("shard {id}: operations listener ended with {e}");
            }
        });
        servers.push(task.detach());
    }
    if let Some(nats) = &shared.nats_settings {
        servers.push(nats::start(&shard, nats, stop.clone()));
    }
    shard::keep_alive(&shard);
    Ok(shard::mesh_loop(shard, ctx.end, stop, servers))
}

/// A bound, non-listening socket that holds a port for this process's shards and keeps
/// every other process off it.
///
/// With `listen = "127.0.0.1:0"` every shard would otherwise get its own random port. The
/// reserving socket never listens, so the kernel routes no connection to it; it only keeps
/// the port until the server stops.
///
/// Why a probe, then a reservation without SO_REUSEADDR: the shards bind with
/// SO_REUSEPORT, and Linux lets any socket of the same user join a SO_REUSEPORT group, so
/// a second `shardline serve` on the same address would bind too and silently take half
/// the connections. Before reserving, `new` binds a probe socket with SO_REUSEADDR but
/// without SO_REUSEPORT: that bind fails with EADDRINUSE while any other socket listens
/// on the port (with or without SO_REUSEPORT, any program), yet succeeds over TIME_WAIT
/// leftovers of a previous run, so a restart is not refused for a minute (a probe without
/// SO_REUSEADDR would be). The reservation itself then sets only SO_REUSEPORT: our
/// shards (SO_REUSEPORT, same user) may still join it, but the probe of a second router
/// started while this one is still loading its policies (no listener yet) conflicts with
/// it, since the reservation lacks SO_REUSEADDR. What remains is the microseconds between
/// one process's probe and its reservation, in which a second process's probe must land
/// exactly; `listen` with an explicit port is the one that matters, and port 0 skips the
/// probe (the kernel picks a port nobody holds).
#[derive(Debug)]
pub struct PortReservation {
    _fd: std::os::fd::OwnedFd,
    pub addr: SocketAddr,
}

impl PortReservation {
    pub fn new(addr: SocketAddr) -> std::io::Result<PortReservation> {
        use crate::transport::sock;
        if addr.port() != 0 {
            let probe = sock::tcp_socket(addr)?;
            sock::set_option(&probe, libc::SO_REUSEADDR)?;
            sock::bind_fd(&probe, addr)?;
        }
        let fd = sock::tcp_socket(addr)?;
        sock::set_option(&fd, libc::SO_REUSEPORT)?;
        sock::bind_fd(&fd, addr)?;
        let addr = sock::local_addr(&fd, addr)?;
        Ok(PortReservation { _fd: fd, addr })
    }
}

impl ServerSettings {
    /// Resolves a loaded config into the server's settings.
    pub fn from_config(config: &crate::config::Config) -> ServerSettings {
        use crate::config::Cores;
        let (s, l) = (&config.server, &config.limits);
        let cores = match &config.server.cores {
            Cores::All => CoreSelection::All,
            Cores::Count(n) => CoreSelection::Count(*n),
            Cores::List(list) => {
                CoreSelection::List(list.iter().map(|&c| shards::CoreId(c)).collect())
            }
        };
        let tls = config.tls.enabled.then(|| TlsSettings {
            listen: config.tls.listen,
            cert: config.tls.cert.clone(),
            key: config.tls.key.clone(),
            client_ca: config.tls.client_ca.clone(),
        });
        let drain = Duration::from_millis(s.drain_timeout_ms);
        ServerSettings {
            listen: s.listen,
            shard_port_base: s.shard_port_base,
            tls,
            cores,
            http: HttpLimits {
                headers_max: l.headers_max,
                header_bytes_max: l.header_bytes_max,
                body_bytes_max: l.body_bytes_max,
                read_timeout: Duration::from_millis(l.read_timeout_ms),
                idle_timeout: Duration::from_millis(l.idle_timeout_ms),
                write_timeout: Duration::from_millis(l.write_timeout_ms),
                connections_max: l.connections_per_shard_max,
                drain_timeout: drain,
                ..HttpLimits::default()
            },
            ring_slots: l.ring_slots,
            shard: ShardConfig {
                state: crate::decide::StateConfig {
                    sticky_entries: l.sticky_entries_per_shard,
                    seed: random_seed(),
                },
                idempotency_entries: l.idempotency_entries_per_shard,
                idempotency_bytes: l.idempotency_bytes_per_shard_max,
                idempotency_ttl_ms: l.idempotency_ttl_ms,
                results_dedup_bytes: l.results_dedup_bytes_per_shard_max,
                results_seen_ttl_ms: RESULTS_SEEN_TTL_MS,
            },
            policies_dir: s.policies_dir.clone(),
            tokens: config.admin.token_specs(),
            admin_enabled: config.admin.enabled,
            admin_writes_per_second: config.admin.writes_per_second,
            results_access: config.auth.results,
            decide_access: config.auth.decide,
            watch_interval: Duration::from_millis(crate::admin::WATCH_INTERVAL_MS),
            // The shards' own stop deadline leaves the HTTP drain its full time first.
            stop_timeout: drain + Duration::from_secs(5),
            stall: Duration::from_millis(s.stall_ms),
            poll: match s.poll {
                crate::config::Poll::Park => shards::PollMode::Park,
                crate::config::Poll::Adaptive => {
                    shards::PollMode::Adaptive(Duration::from_micros(s.poll_spin_us))
                }
                crate::config::Poll::Busy => shards::PollMode::Busy,
            },
            handoff_timeout: Duration::from_millis(s.handoff_timeout_ms),
            extensions_dir: s.extensions_dir.clone(),
            nats: config.nats.enabled().then(|| config.nats.clone()),
            // Unreadable only with NATS off and no cluster (else the config is refused),
            // where nothing shows it.
            node_id: config
                .cluster
                .effective_node_id()
                .unwrap_or_else(|| "unknown".to_owned()),
            cluster: config.cluster.enabled.then(|| config.cluster.clone()),
            assignment_subjects: subjects::AssignmentSubjects::new(
                &config.nats.assignment_subject,
                &config.nats.assignment_subjects_allowed,
            ),
            ops_listen: s.ops_listen,
            admin_on_data_port: config.admin.on_data_port,
            strict_policies: s.strict_policies,
            notify: None,
        }
    }
}

/// How long ExecResult ids are remembered for de-duplication: a worker that re-sends a
/// result within ten minutes is not counted twice (while its tenant's share of
/// `limits.results_dedup_bytes_per_shard_max` holds it).
pub const RESULTS_SEEN_TTL_MS: u64 = 600_000;

/// A seed for the weighted draw and hashers, from the OS-keyed std hasher (not crypto).
pub fn random_seed() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(SystemTime::now())
}
