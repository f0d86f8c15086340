//! The service manager's side of `sd_notify(3)` for black-box tests: a unix datagram
//! socket the test binds and names in the router's `NOTIFY_SOCKET`, and bounded reads of
//! what the router sends there.

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::TempDir;

/// A bound notification socket; `env` gives the variables to start the router with.
pub struct NotifySocket {
    socket: UnixDatagram,
    path: PathBuf,
    _dir: TempDir,
}

impl NotifySocket {
    pub fn bind(name: &str) -> NotifySocket {
        let dir = TempDir::new(name);
        let path = dir.0.join("notify.sock");
        let socket = UnixDatagram::bind(&path).expect("bind the notification socket");
        NotifySocket {
            socket,
            path,
            _dir: dir,
        }
    }

    /// `NOTIFY_SOCKET` pointing here, and a watchdog of `watchdog_usec` µs.
    pub fn env(&self, watchdog_usec: u64) -> Vec<(String, String)> {
        vec![
            ("NOTIFY_SOCKET".into(), self.path.to_str().unwrap().into()),
            ("WATCHDOG_USEC".into(), watchdog_usec.to_string()),
        ]
    }

    /// The next notification within `wait`, or `None`.
    pub fn recv(&self, wait: Duration) -> Option<String> {
        self.socket.set_read_timeout(Some(wait)).unwrap();
        let mut buf = [0u8; 4096];
        match self.socket.recv(&mut buf) {
            Ok(n) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                None
            }
            Err(e) => panic!("reading the notification socket: {e}"),
        }
    }

    /// Reads notifications until one has the line `line` (bounded by `wait`); returns
    /// every notification read, the matching one last, or panics naming what came.
    pub fn until(&self, line: &str, wait: Duration) -> Vec<String> {
        let deadline = Instant::now() + wait;
        let mut seen = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            let Some(message) = self.recv(left) else {
                break;
            };
            let found = message.lines().any(|l| l == line);
            seen.push(message);
            if found {
                return seen;
            }
        }
        panic!("no {line} within {wait:?}; received {seen:?}");
    }

    /// Drops every notification already queued.
    pub fn drain(&self) {
        while self.recv(Duration::from_millis(1)).is_some() {}
    }
}
