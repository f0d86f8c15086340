//! `shardline serve` as an operator runs it: the built binary in its own process, on a
//! config file, stopped by a signal. Its stderr is read line by line by a thread (so the
//! child never blocks on a full pipe) and kept for the test to search; the address it
//! serves on is the one it logs. Every wait is bounded, and a router a failing test leaves
//! behind is killed (by PID) when dropped.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a stopped router may take to exit: a test config's drain plus the shards' stop
/// margin, with room for a loaded machine.
pub const EXIT_WITHIN: Duration = Duration::from_secs(15);

/// A running `shardline serve`.
pub struct RouterProcess {
    child: Option<Child>,
    pub addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
    reader: Option<JoinHandle<()>>,
}

impl RouterProcess {
    /// Starts `shardline serve --config CONFIG` and returns once it has logged the address
    /// it serves on; panics with its log if it exits before.
    pub fn spawn(config: &Path) -> RouterProcess {
        RouterProcess::spawn_env(config, std::iter::empty::<(&str, &str)>())
    }

    /// `spawn` with `env` added to the router's environment.
    pub fn spawn_env<K, V>(config: &Path, env: impl IntoIterator<Item = (K, V)>) -> RouterProcess
    where
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        let mut command = Command::new(env!("CARGO_BIN_EXE_shardline"));
        command
            .args(["serve", "--config"])
            .arg(config)
            .envs(env)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        RouterProcess::spawn_command(command)
    }

    /// `spawn` for a prepared command (its stderr must be piped).
    pub fn spawn_command(mut command: Command) -> RouterProcess {
        let mut child = command.spawn().expect("spawn shardline serve");
        let mut lines = BufReader::new(child.stderr.take().expect("stderr piped")).lines();
        let log = Arc::new(Mutex::new(Vec::new()));
        let addr = loop {
            let Some(Ok(line)) = lines.next() else {
                let _ = child.kill();
                let _ = child.wait();
                let log = log.lock().unwrap().join("\n");
                panic!("shardline serve exited before logging its address:\n{log}");
            };
            log.lock().unwrap().push(line.clone());
            if let Some(rest) = line.split("serving on http://").nth(1) {
                let addr: String = rest.chars().take_while(|c| !c.is_whitespace()).collect();
                break addr.parse().expect("logged address");
            }
        };
        let sink = Arc::clone(&log);
        let reader = std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        RouterProcess {
            child: Some(child),
            addr,
            log,
            reader: Some(reader),
        }
    }

    /// The child itself, for a test that manages its end; the log is still collected.
    pub fn into_child(mut self) -> Child {
        self.child.take().expect("running")
    }

    pub fn id(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Every line logged so far.
    pub fn log_lines(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Waits up to `within` for a log line containing `needle`.
    pub fn log_shows(&self, needle: &str, within: Duration) -> Option<String> {
        let deadline = Instant::now() + within;
        loop {
            let found = self.log_lines().into_iter().find(|l| l.contains(needle));
            if found.is_some() || Instant::now() > deadline {
                return found;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn sigterm(&self) {
        signal(self.id(), libc::SIGTERM);
    }

    /// Waits up to `within` for the process to exit.
    pub fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut().expect("running");
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then the exit status (within `EXIT_WITHIN`, else a panic) and the whole log.
    pub fn stop(mut self) -> (ExitStatus, Vec<String>) {
        self.sigterm();
        let Some(status) = self.wait_exit(EXIT_WITHIN) else {
            panic!("shardline serve still running {EXIT_WITHIN:?} after SIGTERM");
        };
        if let Some(reader) = self.reader.take() {
            reader.join().expect("log reader");
        }
        (status, self.log_lines())
    }
}

impl Drop for RouterProcess {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Sends `signal` to the process `pid` (a child the test spawned and has not reaped).
pub fn signal(pid: u32, signal: libc::c_int) {
    // SAFETY: kill(2) with a pid and a signal number; no memory is shared.
    let rc = unsafe { libc::kill(pid as libc::pid_t, signal) };
    assert_eq!(rc, 0, "kill: {}", std::io::Error::last_os_error());
}
