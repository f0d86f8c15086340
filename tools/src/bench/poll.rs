//! A minimal epoll wrapper for one client thread: level-triggered readiness of its
//! connections, waited on with a nanosecond timeout.
//!
//! Why `epoll_pwait2`: plain `epoll_wait` takes milliseconds, far too coarse to pace
//! sends to the microsecond; `epoll_pwait2` (Linux 5.11) takes a `timespec`. On older
//! kernels (`ENOSYS`) the wait falls back to `epoll_wait`, rounding down, and the pacing
//! spin covers the rest. Why not a crate (mio): one syscall with a timespec is all that is
//! needed, and `libc` is already a dependency.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// Readiness events taken from the kernel per wait.
pub const EVENTS_PER_WAIT_MAX: usize = 256;

/// One readiness event: the connection's token and what it is ready for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ready {
    pub token: usize,
    pub readable: bool,
    pub writable: bool,
}

/// An epoll instance and its event buffer.
pub struct Poller {
    fd: OwnedFd,
    events: Vec<libc::epoll_event>,
    /// `epoll_pwait2` answered `ENOSYS`: use `epoll_wait`.
    no_pwait2: bool,
}

impl Poller {
    pub fn new() -> io::Result<Poller> {
        // SAFETY: plain epoll_create1(2); the fd is owned below.
        let raw = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Poller {
            // SAFETY: `raw` is a fresh fd nobody else owns.
            fd: unsafe { OwnedFd::from_raw_fd(raw) },
            events: vec![libc::epoll_event { events: 0, u64: 0 }; EVENTS_PER_WAIT_MAX],
            no_pwait2: false,
        })
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, token: usize, writable: bool) -> io::Result<()> {
        let mut flags = libc::EPOLLIN | libc::EPOLLRDHUP;
        if writable {
            flags |= libc::EPOLLOUT;
        }
        let mut event = libc::epoll_event {
            events: flags as u32,
            u64: token as u64,
        };
        // SAFETY: valid epoll fd and target fd; `event` outlives the call.
        let rc = unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), op, fd, &mut event) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Watches `fd` for reading (and writing when `writable`) under `token`.
    pub fn add(&self, fd: RawFd, token: usize, writable: bool) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, token, writable)
    }

    /// Changes whether `fd` is also watched for writing.
    pub fn modify(&self, fd: RawFd, token: usize, writable: bool) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_MOD, fd, token, writable)
    }

    /// Stops watching `fd` (closing it would do the same; this is explicit).
    pub fn remove(&self, fd: RawFd) {
        // SAFETY: valid fds; a null event is allowed for EPOLL_CTL_DEL since Linux 2.6.9.
        unsafe {
            libc::epoll_ctl(
                self.fd.as_raw_fd(),
                libc::EPOLL_CTL_DEL,
                fd,
                std::ptr::null_mut(),
            )
        };
    }

    /// Waits at most `timeout` (zero: just poll) and appends the ready connections to
    /// `out`. An interrupted wait returns no event.
    pub fn wait(&mut self, timeout: Duration, out: &mut Vec<Ready>) -> io::Result<()> {
        let n = self.wait_raw(timeout)?;
        for event in &self.events[..n] {
            let flags = event.events as libc::c_int;
            let failed = flags & (libc::EPOLLERR | libc::EPOLLHUP | libc::EPOLLRDHUP) != 0;
            out.push(Ready {
                token: event.u64 as usize,
                readable: flags & libc::EPOLLIN != 0 || failed,
                writable: flags & libc::EPOLLOUT != 0,
            });
        }
        Ok(())
    }

    fn wait_raw(&mut self, timeout: Duration) -> io::Result<usize> {
        let max = self.events.len() as libc::c_int;
        let rc = if self.no_pwait2 {
            let ms = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
            // SAFETY: the buffer holds `max` events.
            unsafe { libc::epoll_wait(self.fd.as_raw_fd(), self.events.as_mut_ptr(), max, ms) }
        } else {
            let ts = libc::timespec {
                tv_sec: timeout.as_secs().min(i64::MAX as u64) as libc::time_t,
                tv_nsec: libc::c_long::from(timeout.subsec_nanos() as i32),
            };
            // SAFETY: the buffer holds `max` events; `ts` outlives the call; no sigmask.
            unsafe {
                libc::epoll_pwait2(
                    self.fd.as_raw_fd(),
                    self.events.as_mut_ptr(),
                    max,
                    &ts,
                    std::ptr::null(),
                )
            }
        };
        if rc >= 0 {
            return Ok(rc as usize);
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => Ok(0),
            Some(libc::ENOSYS) if !self.no_pwait2 => {
                self.no_pwait2 = true;
                self.wait_raw(timeout)
            }
            _ => Err(err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};

    /// A connection with bytes to read is reported readable under its token; a quiet one
    /// is not, and a zero timeout returns at once.
    #[test]
    fn reports_readiness_by_token() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        let mut poller = Poller::new().unwrap();
        poller.add(client.as_raw_fd(), 7, false).unwrap();
        let mut ready = Vec::new();
        poller.wait(Duration::ZERO, &mut ready).unwrap();
        assert!(ready.is_empty());
        server.write_all(b"x").unwrap();
        poller.wait(Duration::from_secs(5), &mut ready).unwrap();
        assert_eq!(
            ready,
            vec![Ready {
                token: 7,
                readable: true,
                writable: false
            }]
        );
    }
}
