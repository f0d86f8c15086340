//! The systemd notification protocol (`sd_notify(3)`): one datagram per state change to
//! the unix socket named by `$NOTIFY_SOCKET`, so a `Type=notify` unit knows when the
//! router serves (`READY=1`), when it drains (`STOPPING=1`), and that it is alive
//! (`WATCHDOG=1`, when the unit sets `WatchdogSec=`).
//!
//! Written here rather than taken from a crate: the protocol is a few lines over std's
//! `UnixDatagram` (abstract-namespace addresses included), and a notifier must never fail
//! the router — a lost datagram is logged and the router carries on serving. Without
//! `$NOTIFY_SOCKET` (not under systemd, or not `Type=notify`) there is no notifier at all.
//!
//! The watchdog keep-alive is sent by the shard watchdog thread, and only while no shard
//! is stalled (`shards::Watchdog::spawn_observed`): systemd then restarts a router whose
//! shard hangs, which `/readyz` alone would only take out of rotation.

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// A connection to the service manager's notification socket.
#[derive(Debug)]
pub struct Notifier {
    socket: UnixDatagram,
    addr: SocketAddr,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// From `$NOTIFY_SOCKET` (a path, or `@name` for the abstract namespace) and
    /// `$WATCHDOG_USEC` (honoured only when `$WATCHDOG_PID` is unset or names this
    /// process). `None` when the router is not run by a service manager that listens; an
    /// unusable socket is logged and treated the same, never a start-up failure.
    pub fn from_env() -> Option<Notifier> {
        let path = std::env::var_os("NOTIFY_SOCKET").filter(|p| !p.is_empty())?;
        let addr = match socket_addr(path.as_encoded_bytes()) {
            Ok(addr) => addr,
            Err(e) => {
                log::warn!("NOTIFY_SOCKET={path:?} is unusable ({e}); not notifying systemd");
                return None;
            }
        };
        let socket = match UnixDatagram::unbound() {
            Ok(socket) => socket,
            Err(e) => {
                log::warn!("cannot open a socket to notify systemd: {e}");
                return None;
            }
        };
        Some(Notifier {
            socket,
            addr,
            watchdog: watchdog_interval(),
        })
    }

    /// Sends one notification (`KEY=value` lines); a failure is logged, never returned:
    /// the router serves whether or not its supervisor hears it.
    pub fn send(&self, state: &str) {
        if let Err(e) = self.socket.send_to_addr(state.as_bytes(), &self.addr) {
            log::warn!(
                "cannot notify systemd ({}): {e}",
                state.lines().next().unwrap_or("")
            );
        }
    }

    /// How often the unit's watchdog must hear `WATCHDOG=1`: half of `$WATCHDOG_USEC`, as
    /// `sd_watchdog_enabled(3)` advises, so one late look does not kill the router.
    pub fn keepalive_every(&self) -> Option<Duration> {
        self.watchdog.map(|w| w / 2)
    }
}

fn socket_addr(path: &[u8]) -> std::io::Result<SocketAddr> {
    match path.strip_prefix(b"@") {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name)
        }
        None => {
            use std::os::unix::ffi::OsStrExt;
            SocketAddr::from_pathname(std::ffi::OsStr::from_bytes(path))
        }
    }
}

fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.trim().parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.trim().parse::<u32>().ok() != Some(std::process::id()) {
            return None;
        }
    }
    (usec > 0).then(|| Duration::from_micros(usec))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A path and an abstract name both reach a socket bound there.
    #[test]
    fn path_and_abstract_addresses() {
        let dir = std::env::temp_dir().join(format!("shardline-notify-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let name = format!("@shardline-notify-test-{}", std::process::id());
        for addr in [path.to_str().unwrap(), name.as_str()] {
            let bound = socket_addr(addr.as_bytes()).unwrap();
            let server = UnixDatagram::bind_addr(&bound).unwrap();
            server
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            let notifier = Notifier {
                socket: UnixDatagram::unbound().unwrap(),
                addr: socket_addr(addr.as_bytes()).unwrap(),
                watchdog: None,
            };
            notifier.send("READY=1");
            let mut buf = [0u8; 64];
            let n = server.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], b"READY=1", "{addr}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
