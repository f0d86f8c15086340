//! The process logger: one line per event on stderr, JSON (one object per line, for log
//! shippers) or plain text (for a terminal), with secrets redacted (SPEC §8, §9).
//!
//! It implements the `log` facade, so `log::info!` works everywhere; `log_event` adds
//! structured fields (`trace_id`, `tenant_id`, …) that the facade's message cannot carry
//! without the `kv` feature. A JSON line reads:
//!
//! ```text
//! {"ts":"2026-11-27T07:00:00.123Z","level":"INFO","target":"shardline::http",
//!  "msg":"listening","addr":"127.0.0.1:8080"}
//! ```
//!
//! Invariants: a line is at most `LOG_LINE_BYTES_MAX` bytes and always complete; a
//! field whose key names a secret is never formatted; logging never panics, even with
//! stderr closed (write errors are dropped: there is nowhere left to report them); and
//! logging never blocks a shard on stderr. Lines are built in a per-thread buffer and
//! handed to a bounded buffer that one logger thread drains (`sink`): when stderr is not
//! read, lines are dropped and counted instead of stalling the shards. A call site that
//! repeats itself is summarised (`summary`). `flush` (at exit, and from the panic hook)
//! writes what is buffered.
//!
//! Logging is not on the request path: a shard logs state changes and failures, not each
//! decision (those are counted in `metrics`).

mod line;
mod redact;
mod sink;
mod summary;
mod time;

use std::cell::RefCell;
use std::fmt::{self, Display};
use std::io::Write;
use std::str::FromStr;
use std::sync::OnceLock;
use std::time::Duration;

use log::{Level, LevelFilter, Log, Metadata, Record};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use line::{format_event, Event, Field, Scratch, LOG_LINE_BYTES_MAX};
pub use redact::{is_sensitive_key, redact_into, REDACTED};
pub use sink::{Pending, LOG_BUFFER_BYTES_MAX, LOG_FLUSH_WAIT_MS};
pub use summary::{
    site_key, Admit, Summarizer, Summary, LOG_REPEATS_PER_WINDOW_DEFAULT,
    LOG_REPEATS_PER_WINDOW_MAX, LOG_SUMMARY_KEYS_MAX, LOG_SUMMARY_LIKE_BYTES_MAX,
    LOG_SUMMARY_WINDOW_MS,
};
pub use time::{civil_from_days, now_unix_ms, push_timestamp};

use sink::Sink;

/// Target of events logged through `log_event`.
pub const EVENT_TARGET: &str = "shardline";
/// Longest unrecognised value quoted back in a parse error.
const VALUE_SHOWN_CHARS_MAX: usize = 32;

/// The most verbose level written (`logging.level`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogLevel {
    Error,
    Warn,
    #[default]
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    pub const ALL: [LogLevel; 5] = [
        LogLevel::Error,
        LogLevel::Warn,
        LogLevel::Info,
        LogLevel::Debug,
        LogLevel::Trace,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }

    pub fn filter(self) -> LevelFilter {
        match self {
            LogLevel::Error => LevelFilter::Error,
            LogLevel::Warn => LevelFilter::Warn,
            LogLevel::Info => LevelFilter::Info,
            LogLevel::Debug => LevelFilter::Debug,
            LogLevel::Trace => LevelFilter::Trace,
        }
    }
}

/// How lines are written (`logging.format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// One JSON object per line.
    #[default]
    Json,
    /// `ts LEVEL target: msg key=value …`
    Text,
}

impl LogFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Json => "json",
            LogFormat::Text => "text",
        }
    }
}

/// A `logging.level` or `logging.format` value that names no level or format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} `{value}` (expected {expected})")]
pub struct UnknownName {
    what: &'static str,
    value: String,
    expected: &'static str,
}

impl UnknownName {
    fn new(what: &'static str, value: &str, expected: &'static str) -> UnknownName {
        let value = value.chars().take(VALUE_SHOWN_CHARS_MAX).collect();
        UnknownName {
            what,
            value,
            expected,
        }
    }
}

impl FromStr for LogLevel {
    type Err = UnknownName;

    /// Case-insensitive: `info`, `INFO` and `Info` are one level.
    fn from_str(s: &str) -> Result<LogLevel, UnknownName> {
        LogLevel::ALL
            .into_iter()
            .find(|l| l.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| UnknownName::new("log level", s, "error, warn, info, debug or trace"))
    }
}

impl FromStr for LogFormat {
    type Err = UnknownName;

    fn from_str(s: &str) -> Result<LogFormat, UnknownName> {
        [LogFormat::Json, LogFormat::Text]
            .into_iter()
            .find(|f| f.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| UnknownName::new("log format", s, "json or text"))
    }
}

/// Both read from and written as their lowercase names, through `FromStr`, so that the
/// config file and the environment accept the same spellings and give the same errors.
macro_rules! serde_by_name {
    ($ty:ty) => {
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<$ty, D::Error> {
                let name = String::deserialize(d)?;
                name.parse().map_err(serde::de::Error::custom)
            }
        }

        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
    };
}

serde_by_name!(LogLevel);
serde_by_name!(LogFormat);

/// Why the logger could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum LogInitError {
    /// `init` ran before, or another `log` implementation is installed.
    #[error("a logger is already installed")]
    AlreadyInstalled,
    /// The logger thread could not be started.
    #[error("cannot start the logger thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// The installed logger; its format is set once `log::set_logger` has accepted it, so a
/// set `FORMAT` means this logger is the process's logger.
struct StderrLogger;

static LOGGER: StderrLogger = StderrLogger;
static FORMAT: OnceLock<LogFormat> = OnceLock::new();
static SINK: OnceLock<Sink> = OnceLock::new();

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::new());
}

/// Installs the stderr logger for the whole process and starts its logger thread. Call
/// once, at start; call `flush` before exit. `repeats_per_window`: lines one call site
/// writes per summary window (0 = every line).
pub fn init(
    level: LogLevel,
    format: LogFormat,
    repeats_per_window: u64,
) -> Result<(), LogInitError> {
    log::set_logger(&LOGGER).map_err(|_| LogInitError::AlreadyInstalled)?;
    let sink = SINK.get_or_init(|| Sink::new(format, repeats_per_window));
    std::thread::Builder::new()
        .name("shardline-log".into())
        .spawn(move || sink.run(&mut std::io::stderr()))
        .map_err(LogInitError::Thread)?;
    FORMAT
        .set(format)
        .map_err(|_| LogInitError::AlreadyInstalled)?;
    log::set_max_level(level.filter());
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        // Lines logged before the panic go out before its message.
        flush();
        previous(info);
    }));
    Ok(())
}

/// Writes every buffered line (and owed summary) to stderr, waiting at most
/// `LOG_FLUSH_WAIT_MS`: an unread stderr cannot hang the exit.
pub fn flush() {
    match SINK.get() {
        Some(sink) => sink.flush(Duration::from_millis(LOG_FLUSH_WAIT_MS)),
        None => {
            let _ = std::io::stderr().flush();
        }
    }
}

/// Lines dropped because the log buffer was full (`shardline_log_dropped_total`).
pub fn dropped_total() -> u64 {
    SINK.get().map_or(0, Sink::dropped)
}

/// Lines left out by summarising (`shardline_log_summarised_total`).
pub fn summarised_total() -> u64 {
    SINK.get().map_or(0, Sink::suppressed)
}

/// Changes the level at run time (e.g. on reload).
pub fn set_level(level: LogLevel) {
    log::set_max_level(level.filter());
}

/// Writes `line` with one `write_all` (callers hold stderr's lock, so lines from different
/// threads never interleave). Errors (stderr closed, a broken pipe) are dropped: there is
/// nowhere left to report them, and logging must not take the process down.
pub fn emit(out: &mut impl Write, line: &str) {
    let _ = out.write_all(line.as_bytes());
}

/// Formats `event` in this thread's reused buffer and hands it to the sink (or writes it
/// to stderr before the sink exists). `site` identifies the call site for summarising.
fn write_event(format: LogFormat, event: &Event<'_>, site: u64) {
    let sink = SINK.get();
    let mut record_like = false;
    let mut owed = None;
    if let Some(sink) = sink {
        match sink.admit(site, event.level, event.target) {
            Admit::Suppress => return,
            Admit::Write {
                summary,
                record_like: like,
            } => {
                owed = summary;
                record_like = like;
            }
        }
    }
    let write = |scratch: &mut Scratch| {
        let Some(sink) = sink else {
            let line = format_event(event, format, scratch);
            emit(&mut std::io::stderr().lock(), line);
            return;
        };
        if let Some(summary) = &owed {
            sink.push(sink.summary_line(summary, scratch), None);
        }
        format_event(event, format, scratch);
        let (line, msg) = scratch.line_and_msg();
        sink.push(line, record_like.then_some((site, msg)));
    };
    let reused = SCRATCH.try_with(|cell| match cell.try_borrow_mut() {
        Ok(mut scratch) => {
            write(&mut scratch);
            true
        }
        // Re-entered from a `Display` that logs: use a fresh buffer.
        Err(_) => false,
    });
    if reused != Ok(true) {
        // Thread-local storage torn down (thread exit) or busy.
        write(&mut Scratch::default());
    }
}

impl Log for StderrLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        let Some(format) = FORMAT.get() else {
            return;
        };
        if !self.enabled(record.metadata()) {
            return;
        }
        let event = Event {
            unix_ms: now_unix_ms(),
            level: record.level(),
            target: record.target(),
            msg: record.args(),
            fields: &[],
        };
        let site = match (record.file(), record.args().as_str()) {
            (Some(file), _) => site_key(record.target(), file, record.line().unwrap_or(0)),
            (None, template) => site_key(record.target(), template.unwrap_or(""), 0),
        };
        write_event(*format, &event, site);
    }

    fn flush(&self) {
        flush();
    }
}

/// Logs `msg` with structured `fields` (e.g. `("trace_id", &id)`, `("tenant_id", &t)`),
/// written as JSON members or ` key=value` pairs in the order given. Fields whose key
/// names a secret are written as `[REDACTED]`.
pub fn log_event(level: Level, msg: &str, fields: &[Field<'_>]) {
    log_event_at(EVENT_TARGET, level, msg, fields);
}

/// `log_event` with an explicit target (module path).
pub fn log_event_at(target: &str, level: Level, msg: &str, fields: &[Field<'_>]) {
    if level > log::max_level() {
        return;
    }
    if let Some(format) = FORMAT.get() {
        let event = Event {
            unix_ms: now_unix_ms(),
            level,
            target,
            msg: &msg,
            fields,
        };
        write_event(*format, &event, site_key(target, msg, 0));
        return;
    }
    // Another logger is installed (a test harness, an embedding program): hand it the
    // message and fields as text, secrets already hidden. Not the production path, so
    // plain allocation is fine here.
    let raw = format!("{msg}{}", TextFields(fields));
    let mut clean = String::with_capacity(raw.len());
    redact_into(&raw, &mut clean);
    log::logger().log(
        &Record::builder()
            .level(level)
            .target(target)
            .args(format_args!("{clean}"))
            .build(),
    );
}

/// ` key=value` pairs for a foreign logger; sensitive keys are redacted.
struct TextFields<'a>(&'a [Field<'a>]);

impl Display for TextFields<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (key, value) in self.0 {
            if is_sensitive_key(key) {
                write!(f, " {key}={REDACTED}")?;
            } else {
                write!(f, " {key}={value}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_and_format_names() {
        assert_eq!("INFO".parse::<LogLevel>(), Ok(LogLevel::Info));
        assert_eq!(" trace ".parse::<LogLevel>(), Ok(LogLevel::Trace));
        assert_eq!("Text".parse::<LogFormat>(), Ok(LogFormat::Text));
        let err = "verbose".parse::<LogLevel>().unwrap_err().to_string();
        assert_eq!(
            err,
            "unknown log level `verbose` (expected error, warn, info, debug or trace)"
        );
        assert!("xml".parse::<LogFormat>().is_err());
        for level in LogLevel::ALL {
            assert_eq!(level.as_str().parse::<LogLevel>(), Ok(level));
            assert_eq!(level.filter().as_str().to_ascii_lowercase(), level.as_str());
        }
    }

    /// A writer that fails (as stderr does once closed) is not a panic.
    #[test]
    fn emit_ignores_write_errors() {
        struct Closed;
        impl Write for Closed {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::Error::from_raw_os_error(libc::EBADF))
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Err(std::io::Error::from_raw_os_error(libc::EPIPE))
            }
        }
        emit(&mut Closed, "{\"msg\":\"x\"}\n");
    }

    #[test]
    fn foreign_logger_fields_are_redacted() {
        let fields: [Field<'_>; 2] = [("tenant_id", &"acme"), ("api_key", &"sk-1")];
        assert_eq!(
            TextFields(&fields).to_string(),
            " tenant_id=acme api_key=[REDACTED]"
        );
    }
}
