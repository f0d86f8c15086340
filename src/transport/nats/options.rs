//! How a shard's NATS client connects: server addresses, credentials, TLS, and the bounds
//! of its buffers and timers, built once from `[nats]` and shared by every shard.
//!
//! TLS material is read and checked here, at start, so a wrong path or a key that does not
//! match its certificate stops the router with the file's name instead of surfacing as a
//! reconnect loop.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{PrivateKeyDer, ServerName};
use rustls::RootCertStore;
use thiserror::Error;

use crate::config::NatsConfig;
use crate::transport::http::TlsError;

/// Requests one shard's client awaits at once (router-made: extension calls).
pub const INFLIGHT_REQUESTS_MAX: usize = 4_096;
/// Servers a client rotates over.
pub const SERVERS_MAX: usize = crate::config::NATS_SERVERS_MAX;
/// Time to open TCP, finish TLS and get the server's PONG to CONNECT.
pub const CONNECT_TIMEOUT_MS: u64 = 2_000;
/// First reconnect delay; it doubles (with ±25 % jitter) up to the configured cap.
pub const RECONNECT_BACKOFF_MIN_MS: u64 = 10;
/// A PING goes out this often; two unanswered PINGs declare the connection dead.
pub const PING_INTERVAL_MS: u64 = 2_000;
/// Pings without a PONG before the connection is dropped and re-established.
pub const PINGS_OUTSTANDING_MAX: u32 = 2;

#[derive(Debug, Error)]
pub enum OptionsError {
    #[error("nats.url {0:?}: expected nats://host:port or tls://host:port")]
    Url(String),
    #[error("nats.url: more than {SERVERS_MAX} servers")]
    TooManyServers,
    #[error("nats TLS: {0}")]
    Tls(#[from] TlsError),
    #[error("nats TLS: a tls:// server needs nats.tls_ca (the CA that signed its certificate)")]
    NoCa,
    #[error("nats.tls_server_name {0:?} is not a valid DNS name or IP address")]
    ServerName(String),
}

/// One server to connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerAddr {
    pub host: String,
    pub port: u16,
    pub tls: bool,
    /// Credentials given in the URL (`nats://user:pass@host`, `nats://token@host`).
    pub user: Option<String>,
    pub pass: Option<String>,
    pub token: Option<String>,
}

impl ServerAddr {
    pub fn parse(url: &str) -> Result<ServerAddr, OptionsError> {
        let bad = || OptionsError::Url(crate::config::redacted_url(url));
        let (scheme, rest) = url.split_once("://").unwrap_or(("nats", url));
        let tls = match scheme {
            "nats" => false,
            "tls" => true,
            _ => return Err(bad()),
        };
        let rest = rest.trim_end_matches('/');
        let (creds, hostport) = match rest.rsplit_once('@') {
            Some((c, h)) => (Some(c), h),
            None => (None, rest),
        };
        // `[v6]:port`, `[v6]`, `host:port` or `host`; the default port is 4222.
        let (host, port) = match hostport.strip_prefix('[') {
            Some(v6) => {
                let (host, after) = v6.split_once(']').ok_or_else(bad)?;
                match after.strip_prefix(':') {
                    Some(p) => (host, p),
                    None if after.is_empty() => (host, "4222"),
                    None => return Err(bad()),
                }
            }
            None => hostport.rsplit_once(':').unwrap_or((hostport, "4222")),
        };
        let port = port.parse::<u16>().map_err(|_| bad())?;
        if host.is_empty() || port == 0 {
            return Err(bad());
        }
        let (mut user, mut pass, mut token) = (None, None, None);
        match creds.map(|c| c.split_once(':')) {
            Some(Some((u, p))) => (user, pass) = (Some(u.to_owned()), Some(p.to_owned())),
            Some(None) => token = creds.map(str::to_owned),
            None => {}
        }
        Ok(ServerAddr {
            host: host.to_owned(),
            port,
            tls,
            user,
            pass,
            token,
        })
    }
}

/// Everything a client needs to connect; cheap to share between shards.
#[derive(Clone)]
pub struct ClientOptions {
    pub servers: Vec<ServerAddr>,
    pub name: String,
    pub token: Option<String>,
    pub user: Option<String>,
    pub password: Option<String>,
    /// Set = TLS to every server.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub tls_server_name: Option<ServerName<'static>>,
    pub request_timeout: Duration,
    pub reconnect_backoff_max: Duration,
    pub outbound_bytes_max: usize,
    pub inflight_requests_max: usize,
    pub ping_interval: Duration,
}

impl std::fmt::Debug for ClientOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientOptions")
            .field("servers", &self.servers.len())
            .field("name", &self.name)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl ClientOptions {
    /// Options from `[nats]`; `None` when NATS is off.
    pub fn from_config(config: &NatsConfig) -> Result<Option<ClientOptions>, OptionsError> {
        if !config.enabled() {
            return Ok(None);
        }
        let servers = config
            .url
            .servers()
            .map(ServerAddr::parse)
            .collect::<Result<Vec<_>, _>>()?;
        if servers.len() > SERVERS_MAX {
            return Err(OptionsError::TooManyServers);
        }
        let wants_tls = servers.iter().any(|s| s.tls) || config.tls_ca.is_some();
        let tls = if wants_tls {
            let ca = config.tls_ca.as_deref().ok_or(OptionsError::NoCa)?;
            let pair = config.tls_cert.as_deref().zip(config.tls_key.as_deref());
            Some(client_tls(ca, pair)?)
        } else {
            None
        };
        let tls_server_name = match config.tls_server_name.as_str() {
            "" => None,
            name => Some(
                ServerName::try_from(name.to_owned())
                    .map_err(|_| OptionsError::ServerName(name.to_owned()))?,
            ),
        };
        let some = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        Ok(Some(ClientOptions {
            servers,
            name: config.name.clone(),
            token: some(config.token.expose()),
            user: some(&config.user),
            password: some(config.password.expose()),
            tls,
            tls_server_name,
            request_timeout: Duration::from_millis(config.request_timeout_ms),
            reconnect_backoff_max: Duration::from_millis(config.reconnect_backoff_max_ms),
            outbound_bytes_max: config.outbound_bytes_max,
            inflight_requests_max: INFLIGHT_REQUESTS_MAX,
            ping_interval: Duration::from_millis(PING_INTERVAL_MS),
        }))
    }

    /// Plain options for one `nats://` URL (tools and tests).
    pub fn plain(url: &str) -> Result<ClientOptions, OptionsError> {
        let config = NatsConfig {
            url: crate::config::NatsUrls::new(url),
            ..NatsConfig::default()
        };
        ClientOptions::from_config(&config)?.ok_or_else(|| OptionsError::Url(url.to_owned()))
    }
}

/// A rustls client configuration trusting `ca`, with an optional client certificate.
pub fn client_tls(
    ca: &Path,
    client: Option<(&Path, &Path)>,
) -> Result<Arc<rustls::ClientConfig>, OptionsError> {
    use crate::transport::http::load_certs;
    let mut roots = RootCertStore::empty();
    for cert in load_certs(ca, "NATS CA")? {
        roots.add(cert).map_err(|source| TlsError::ClientCa {
            path: ca.to_path_buf(),
            source,
        })?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::from)?
        .with_root_certificates(roots);
    let config = match client {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = load_certs(cert, "NATS client certificate")?;
            let key = PrivateKeyDer::from_pem_file(key).map_err(|source| TlsError::Pem {
                what: "NATS client key",
                path: key.to_path_buf(),
                source,
            })?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(TlsError::from)?
        }
    };
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls_with_credentials() {
        let a = ServerAddr::parse("nats://bob:pw@10.0.0.1:4333").unwrap();
        assert_eq!((a.host.as_str(), a.port, a.tls), ("10.0.0.1", 4333, false));
        assert_eq!(
            (a.user.as_deref(), a.pass.as_deref()),
            (Some("bob"), Some("pw"))
        );
        let b = ServerAddr::parse("tls://tok@localhost").unwrap();
        assert_eq!(
            (b.port, b.tls, b.token.as_deref()),
            (4222, true, Some("tok"))
        );
        let c = ServerAddr::parse("127.0.0.1:5000").unwrap();
        assert_eq!((c.host.as_str(), c.port), ("127.0.0.1", 5000));
        let v6 = ServerAddr::parse("nats://[::1]:4333").unwrap();
        assert_eq!((v6.host.as_str(), v6.port), ("::1", 4333));
        assert_eq!(ServerAddr::parse("[::1]").unwrap().port, 4222);
        assert!(ServerAddr::parse("nats://[::1]x").is_err());
        assert!(
            ClientOptions::plain("").is_err(),
            "an empty URL is an error, not a panic"
        );
        assert!(ServerAddr::parse("http://x:1").is_err());
        assert!(ServerAddr::parse("nats://:1").is_err());
        assert!(ServerAddr::parse("nats://h:notaport").is_err());
    }

    #[test]
    fn tls_url_without_ca_is_refused() {
        let config = NatsConfig {
            url: crate::config::NatsUrls::new("tls://127.0.0.1:4222"),
            ..NatsConfig::default()
        };
        let err = ClientOptions::from_config(&config).unwrap_err();
        assert!(matches!(err, OptionsError::NoCa), "{err}");
    }
}
