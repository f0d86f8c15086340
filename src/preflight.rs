//! Everything `serve` must find true before it listens, as one function that `serve` and
//! `config check` both call.
//!
//! Why one function: a check that says `ok` for a config the server then refuses is worse
//! than none, and two copies of the checks drift apart. So `Server::start` begins with
//! `check`, and `config check` runs it without starting a shard or binding a port; both
//! print the same messages for the same config. What is checked, in `serve`'s order: the
//! HTTP limits, the policies (through the loader `serve` uses), the cores (the topology
//! and core selection the runtime uses), the extension registry, the NATS client settings
//! (its TLS files read and parsed), the HTTPS certificate and key (read and parsed), and
//! that io_uring works and the memlock limit covers the shards. Addresses and ports are
//! parsed by the config loader; binding them is left to `serve` (a check must not take the
//! port of a router already running).

use std::path::Path;

use anyhow::Context;
use shards::{CoreId, PreflightReport, Topology};

use crate::extensions::Registry;
use crate::policy::{DirLoad, PolicyError, RoutingTable};
use crate::server::nats::NatsSettings;
use crate::server::ServerSettings;
use crate::transport::http::TlsAcceptor;

/// What the checks loaded, for the server to use rather than load twice.
pub struct Preflight {
    /// The table to start with, and the documents left out of it (none when strict).
    pub policies: DirLoad,
    /// The cores the shards will run on, one shard each.
    pub cores: Vec<CoreId>,
    pub registry: Registry,
    pub nats: Option<NatsSettings>,
    pub kernel: PreflightReport,
}

/// Runs every check `serve` makes before it listens; the first failure is the error
/// `serve` would exit with.
pub fn check(settings: &ServerSettings) -> anyhow::Result<Preflight> {
    settings.http.validate()?;
    let policies = if settings.strict_policies {
        let table = load_policies(&settings.policies_dir)?;
        DirLoad {
            table,
            invalid: Vec::new(),
        }
    } else {
        load_policies_per_document(&settings.policies_dir)?
    };
    let cores = Topology::detect()?.select(&settings.cores)?;
    let registry = Registry::load_dir(&settings.extensions_dir)
        .map_err(|e| anyhow::anyhow!("invalid extension registry: {e}"))?;
    let nats = match &settings.nats {
        Some(config) => Some(NatsSettings::from_config(config)?),
        None => None,
    };
    if let Some(tls) = &settings.tls {
        TlsAcceptor::from_pem_files(&tls.cert, &tls.key, tls.client_ca.as_deref())
            .with_context(|| format!("https listener {}", tls.listen))?;
    }
    let kernel = shards::preflight(cores.len())?;
    Ok(Preflight {
        policies,
        cores,
        registry,
        nats,
        kernel,
    })
}

/// The routing table of a policies directory, all or nothing: what `serve
/// --strict-policies` and `decide` load.
pub fn load_policies(dir: &Path) -> anyhow::Result<RoutingTable> {
    RoutingTable::load_dir(dir).map_err(refuse)
}

/// The routing table of a policies directory document by document, as `serve` loads it:
/// an invalid document is left out and listed; only an unreadable directory or a table
/// past its whole-table limits is an error.
pub fn load_policies_per_document(dir: &Path) -> anyhow::Result<DirLoad> {
    RoutingTable::load_dir_per_document(dir, &RoutingTable::default()).map_err(refuse)
}

fn refuse(problems: Vec<PolicyError>) -> anyhow::Error {
    let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
    anyhow::anyhow!("invalid policies:\n  {}", lines.join("\n  "))
}
