//! Checks, before any executor starts, that the kernel and limits let glommio run.
//!
//! Why: when io_uring is blocked, glommio 0.9 panics with "kernel too old" (it reads a
//! failed `io_uring_get_probe` as an old kernel), which sends an operator hunting for a
//! kernel upgrade when the cause is a seccomp profile, a sysctl or a memlock limit. These
//! checks name the real cause and the fix, and run in microseconds.
//!
//! What is probed: `io_uring_setup` with a 4-entry ring (then closed), the opcode probe
//! (`IORING_REGISTER_PROBE`) for every opcode glommio 0.9 requires, and `RLIMIT_MEMLOCK`
//! against `MEMLOCK_PER_SHARD_BYTES` per shard. glommio refuses to start an executor below
//! 512 KiB of memlock; its registered I/O buffers are pinned and charged to the same limit
//! (per user, so shards add up), as is ring memory on kernels before 5.12.

use std::fmt;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};

/// Memlock one shard needs: glommio's own floor per executor (`MIN_MEMLOCK_LIMIT`).
pub const MEMLOCK_PER_SHARD_BYTES: u64 = 512 * 1024;
/// I/O buffer memory each executor registers with io_uring (glommio's `io_memory`). Shards
/// do network I/O, which does not use it, so we keep it far below glommio's 10 MiB default.
pub const IO_MEMORY_PER_SHARD_BYTES: usize = 128 * 1024;
/// glommio registers the I/O buffer with each of its three rings; each pins it again.
const IO_MEMORY_REGISTRATIONS: u64 = 3;
/// Entries of the probe ring: the smallest that exercises the syscall.
const PROBE_RING_ENTRIES: u32 = 4;
/// Opcode slots the kernel may describe in `IORING_REGISTER_PROBE` (opcodes are a `u8`).
const PROBE_OPS_MAX: usize = 256;

const _: () = assert!(
    IO_MEMORY_PER_SHARD_BYTES as u64 * IO_MEMORY_REGISTRATIONS + 128 * 1024
        <= MEMLOCK_PER_SHARD_BYTES,
    "registered buffers plus ~128 KiB of ring memory must fit the per-shard memlock need"
);

const IORING_REGISTER_PROBE: libc::c_uint = 8;
const IO_URING_OP_SUPPORTED: u16 = 1;

/// The io_uring opcodes glommio 0.9 checks for at startup (`GLOMMIO_URING_OPS`).
const REQUIRED_OPS: [(u8, &str); 23] = [
    (0, "NOP"),
    (1, "READV"),
    (2, "WRITEV"),
    (3, "FSYNC"),
    (4, "READ_FIXED"),
    (5, "WRITE_FIXED"),
    (6, "POLL_ADD"),
    (7, "POLL_REMOVE"),
    (9, "SENDMSG"),
    (10, "RECVMSG"),
    (11, "TIMEOUT"),
    (12, "TIMEOUT_REMOVE"),
    (13, "ACCEPT"),
    (15, "LINK_TIMEOUT"),
    (16, "CONNECT"),
    (17, "FALLOCATE"),
    (18, "OPENAT"),
    (19, "CLOSE"),
    (21, "STATX"),
    (22, "READ"),
    (23, "WRITE"),
    (26, "SEND"),
    (27, "RECV"),
];

/// Why glommio cannot start here, and what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    /// `io_uring_setup` failed.
    #[error("io_uring is unavailable (io_uring_setup: {errno_name}): {cause}")]
    IoUringUnavailable {
        /// The raw errno.
        errno: i32,
        /// Its symbolic name (`EPERM`, …).
        errno_name: &'static str,
        /// The likely cause and the fix.
        cause: String,
    },
    /// io_uring works but lacks operations glommio uses.
    #[error(
        "io_uring on this kernel lacks operations glommio needs ({missing}): Linux 5.8 or \
         newer is required"
    )]
    IoUringTooOld {
        /// The missing opcodes, comma-separated.
        missing: String,
    },
    /// `RLIMIT_MEMLOCK` is below what the shards need.
    #[error(
        "memlock limit {} is below the {} needed for {shards} shards: raise it with \
         `ulimit -l`, LimitMEMLOCK= in the systemd unit, or `--ulimit memlock=-1` on Docker",
        Bytes(*limit_bytes), Bytes(*need_bytes)
    )]
    MemlockTooLow {
        /// The soft limit in force.
        limit_bytes: u64,
        /// What `shards` shards need.
        need_bytes: u64,
        /// Shards to be started.
        shards: usize,
    },
    /// `getrlimit` failed (unexpected).
    #[error("cannot read RLIMIT_MEMLOCK: {0}")]
    Rlimit(#[source] io::Error),
}

/// What the checks found, for the startup log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PreflightReport {
    /// The memlock soft limit; `None` means unlimited.
    pub memlock_limit_bytes: Option<u64>,
    /// What the shards need.
    pub memlock_need_bytes: u64,
}

/// Runs every check for `shards` shards.
pub fn preflight(shards: usize) -> Result<PreflightReport, PreflightError> {
    probe_io_uring()?;
    let limit = memlock_limit()?;
    let need = check_memlock(limit, shards)?;
    Ok(PreflightReport {
        memlock_limit_bytes: limit,
        memlock_need_bytes: need,
    })
}

/// The memlock need of `shards` shards, or the error if `limit` (`None` = unlimited) is
/// below it.
pub fn check_memlock(limit: Option<u64>, shards: usize) -> Result<u64, PreflightError> {
    let need = MEMLOCK_PER_SHARD_BYTES.saturating_mul(shards as u64);
    match limit {
        Some(limit_bytes) if limit_bytes < need => Err(PreflightError::MemlockTooLow {
            limit_bytes,
            need_bytes: need,
            shards,
        }),
        _ => Ok(need),
    }
}

fn memlock_limit() -> Result<Option<u64>, PreflightError> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) } != 0 {
        return Err(PreflightError::Rlimit(io::Error::last_os_error()));
    }
    Ok((limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur))
}

/// `struct io_uring_params` (120 bytes); zero asks for defaults, the kernel fills it in.
#[repr(C)]
struct IoUringParams {
    words: [u32; 30],
}

#[repr(C)]
#[derive(Clone, Copy)]
struct ProbeOp {
    op: u8,
    resv: u8,
    flags: u16,
    resv2: u32,
}

/// `struct io_uring_probe` with room for every opcode.
#[repr(C)]
struct Probe {
    last_op: u8,
    ops_len: u8,
    resv: u16,
    resv2: [u32; 3],
    ops: [ProbeOp; PROBE_OPS_MAX],
}

const _: () = assert!(std::mem::size_of::<IoUringParams>() == 120);
const _: () = assert!(std::mem::size_of::<Probe>() == 16 + 8 * PROBE_OPS_MAX);

fn probe_io_uring() -> Result<(), PreflightError> {
    let mut params = IoUringParams { words: [0; 30] };
    // SAFETY: io_uring_setup reads and writes exactly one io_uring_params, which `params`
    // is (size asserted above); it returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, PROBE_RING_ENTRIES, &mut params) };
    if fd < 0 {
        let errno = io::Error::last_os_error().raw_os_error().unwrap_or(0);
        return Err(io_uring_unavailable(errno, io_uring_disabled_sysctl()));
    }
    // SAFETY: `fd` was just returned by the kernel and is owned by nobody else.
    let ring = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    check_opcodes(&ring)
}

fn check_opcodes(ring: &OwnedFd) -> Result<(), PreflightError> {
    use std::os::fd::AsRawFd;
    let zero_op = ProbeOp {
        op: 0,
        resv: 0,
        flags: 0,
        resv2: 0,
    };
    let mut probe = Probe {
        last_op: 0,
        ops_len: 0,
        resv: 0,
        resv2: [0; 3],
        ops: [zero_op; PROBE_OPS_MAX],
    };
    // SAFETY: the kernel writes at most `PROBE_OPS_MAX` ops into `probe`, which has room.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_io_uring_register,
            ring.as_raw_fd(),
            IORING_REGISTER_PROBE,
            &mut probe as *mut Probe,
            PROBE_OPS_MAX as libc::c_uint,
        )
    };
    if rc < 0 {
        let missing = "IORING_REGISTER_PROBE (Linux 5.6)".to_owned();
        return Err(PreflightError::IoUringTooOld { missing });
    }
    let known = usize::from(probe.ops_len).min(PROBE_OPS_MAX);
    let supported = |op: u8| {
        let entry = probe.ops[..known].get(usize::from(op));
        entry.is_some_and(|e| e.flags & IO_URING_OP_SUPPORTED != 0)
    };
    let missing: Vec<&str> = REQUIRED_OPS
        .iter()
        .filter(|(op, _)| !supported(*op))
        .map(|(_, name)| *name)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(PreflightError::IoUringTooOld {
        missing: missing.join(", "),
    })
}

fn io_uring_disabled_sysctl() -> Option<u8> {
    let text = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled").ok()?;
    text.trim().parse().ok()
}

/// The error for a failed `io_uring_setup`, given its errno and the
/// `kernel.io_uring_disabled` sysctl (absent before Linux 6.6).
pub fn io_uring_unavailable(errno: i32, disabled_sysctl: Option<u8>) -> PreflightError {
    let (errno_name, cause) = match errno {
        libc::EPERM => ("EPERM", eperm_cause(disabled_sysctl)),
        libc::ENOSYS => (
            "ENOSYS",
            "the kernel has no io_uring (built without CONFIG_IO_URING, older than 5.1) or a \
             seccomp policy hides it; glommio needs Linux 5.8+ with io_uring enabled"
                .to_owned(),
        ),
        libc::ENOMEM => (
            "ENOMEM",
            "the kernel could not charge even a 4-entry ring to the memlock limit (kernels \
             before 5.12 charge rings to RLIMIT_MEMLOCK): raise it with `ulimit -l`"
                .to_owned(),
        ),
        libc::EMFILE | libc::ENFILE => (
            "EMFILE",
            "out of file descriptors: raise `ulimit -n` (LimitNOFILE=)".to_owned(),
        ),
        _ => (
            "unexpected errno",
            format!("errno {errno}; glommio will not start either"),
        ),
    };
    PreflightError::IoUringUnavailable {
        errno,
        errno_name,
        cause,
    }
}

fn eperm_cause(disabled_sysctl: Option<u8>) -> String {
    match disabled_sysctl {
        Some(2) => "the sysctl kernel.io_uring_disabled=2 turns io_uring off: set it to 0 \
                    (`sysctl -w kernel.io_uring_disabled=0`)"
            .to_owned(),
        Some(1) => "the sysctl kernel.io_uring_disabled=1 allows io_uring only to the group \
                    in kernel.io_uring_group: add the service user to it, or set the sysctl \
                    to 0"
            .to_owned(),
        _ => "the kernel or a seccomp/container policy blocks it; on Docker run with \
              --security-opt seccomp=unconfined (or a profile allowing io_uring_setup, \
              io_uring_enter and io_uring_register), on Kubernetes set the pod's \
              seccompProfile accordingly"
            .to_owned(),
    }
}

/// A byte count shown in the largest binary unit that divides it.
struct Bytes(u64);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const KIB: u64 = 1024;
        const MIB: u64 = 1024 * KIB;
        match self.0 {
            n if n >= MIB && n % MIB == 0 => write!(f, "{} MiB", n / MIB),
            n if n >= KIB && n % KIB == 0 => write!(f, "{} KiB", n / KIB),
            n => write!(f, "{n} bytes"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memlock_message_names_limit_need_and_fix() {
        let err = check_memlock(Some(64 * 1024), 2).unwrap_err();
        assert_eq!(
            err.to_string(),
            "memlock limit 64 KiB is below the 1 MiB needed for 2 shards: raise it with \
             `ulimit -l`, LimitMEMLOCK= in the systemd unit, or `--ulimit memlock=-1` on Docker"
        );
        assert_eq!(
            check_memlock(Some(8 * 1024 * 1024), 2).unwrap(),
            1024 * 1024
        );
        assert_eq!(check_memlock(None, 256).unwrap(), 128 * 1024 * 1024);
        assert!(check_memlock(Some(1024 * 1024), 3).is_err());
    }

    #[test]
    fn io_uring_messages_name_cause_and_fix() {
        let err = io_uring_unavailable(libc::EPERM, None).to_string();
        assert!(
            err.starts_with("io_uring is unavailable (io_uring_setup: EPERM): "),
            "{err}"
        );
        assert!(err.contains("seccomp=unconfined"), "{err}");
        let err = io_uring_unavailable(libc::EPERM, Some(2)).to_string();
        assert!(err.contains("kernel.io_uring_disabled=2"), "{err}");
        let err = io_uring_unavailable(libc::ENOSYS, None).to_string();
        assert!(err.contains("ENOSYS") && err.contains("5.8"), "{err}");
        let err = io_uring_unavailable(libc::ENOMEM, None).to_string();
        assert!(err.contains("ulimit -l"), "{err}");
    }

    #[test]
    fn bytes_display() {
        assert_eq!(Bytes(512 * 1024).to_string(), "512 KiB");
        assert_eq!(Bytes(3 * 1024 * 1024).to_string(), "3 MiB");
        assert_eq!(Bytes(1000).to_string(), "1000 bytes");
    }

    /// io_uring works on this machine and `ulimit -l` (8 MiB) covers a few shards.
    #[test]
    fn preflight_passes_here() {
        let report = preflight(2).unwrap();
        assert_eq!(report.memlock_need_bytes, 2 * MEMLOCK_PER_SHARD_BYTES);
    }
}
