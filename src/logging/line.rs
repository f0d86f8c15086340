//! One log event → one bounded line, JSON or text, with secrets redacted.
//!
//! Every value passes three steps: formatted into a capped scratch buffer (a huge
//! `Display` cannot make the logger allocate without bound), redacted (`redact`), then
//! escaped into the line within the line's byte budget. Once the budget is spent the value
//! is cut on a character boundary, later fields are dropped, and the line says so
//! (`"truncated":true`, or ` [truncated]` in text), so a line is always complete and valid.
//!
//! Values are always JSON strings: with only `Display` to go on, typing `"123"` as a number
//! would give one key two JSON types depending on its content.

use std::fmt::{self, Display, Write};

use log::Level;

use super::redact::{is_sensitive_key, redact_into, REDACTED};
use super::summary::LOG_SUMMARY_LIKE_BYTES_MAX;
use super::time::push_timestamp;
use super::LogFormat;

/// Longest line written, newline included; longer events are truncated (see module docs).
pub const LOG_LINE_BYTES_MAX: usize = 8 * 1024;
/// Bytes kept free for what follows a truncated value: a closing quote, the truncation
/// marker, the closing brace and the newline.
const LINE_TAIL_BYTES: usize = 32;
/// Longest target (module path) written.
const TARGET_BYTES_MAX: usize = 128;
/// JSON keys the line itself uses; a field with one of these names gets a `_` prefix.
const RESERVED_KEYS: [&str; 5] = ["ts", "level", "target", "msg", "truncated"];

const _: () = assert!(LINE_TAIL_BYTES > r#"","truncated":true}"#.len());
const _: () = assert!(LINE_TAIL_BYTES >= "\" [truncated]\n".len());
const _: () = assert!(TARGET_BYTES_MAX + 128 < LOG_LINE_BYTES_MAX);

/// A structured context field: key and value.
pub type Field<'a> = (&'a str, &'a dyn Display);

/// One thing to log.
pub struct Event<'a> {
    pub unix_ms: u64,
    pub level: Level,
    pub target: &'a str,
    pub msg: &'a dyn Display,
    pub fields: &'a [Field<'a>],
}

/// Reused buffers: the line, and the two stages a value goes through.
#[derive(Default)]
pub struct Scratch {
    line: String,
    raw: String,
    clean: String,
    /// The last event's message, redacted and cut: what a summary line quotes.
    msg: String,
}

impl Scratch {
    pub fn new() -> Scratch {
        Scratch {
            line: String::with_capacity(LOG_LINE_BYTES_MAX),
            raw: String::with_capacity(LOG_LINE_BYTES_MAX),
            clean: String::with_capacity(LOG_LINE_BYTES_MAX),
            msg: String::with_capacity(LOG_SUMMARY_LIKE_BYTES_MAX),
        }
    }

    /// The message of the event last formatted, redacted, at most
    /// `LOG_SUMMARY_LIKE_BYTES_MAX` bytes.
    pub fn msg(&self) -> &str {
        &self.msg
    }

    /// The line last formatted and its message (see `msg`).
    pub fn line_and_msg(&self) -> (&str, &str) {
        (&self.line, &self.msg)
    }
}

/// A `fmt::Write` that keeps the first `cap` bytes (on a char boundary) and drops the rest.
struct Capped<'a> {
    out: &'a mut String,
    cap: usize,
}

impl Write for Capped<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = self.cap.saturating_sub(self.out.len());
        if s.len() <= room {
            self.out.push_str(s);
        } else {
            let mut cut = room;
            while !s.is_char_boundary(cut) {
                cut -= 1;
            }
            self.out.push_str(&s[..cut]);
        }
        Ok(())
    }
}

/// Formats `value` into `raw`, then its redacted form into `clean`.
fn render(raw: &mut String, clean: &mut String, value: &dyn Display) {
    raw.clear();
    clean.clear();
    let mut capped = Capped {
        out: raw,
        cap: LOG_LINE_BYTES_MAX,
    };
    // `Capped` never fails; an error here comes from a faulty `Display` and only means
    // the value is cut short.
    let _ = write!(capped, "{value}");
    redact_into(raw, clean);
}

/// The line being built and its budget.
struct Line<'a> {
    out: &'a mut String,
    limit: usize,
    truncated: bool,
}

impl Line<'_> {
    /// Appends `c` as its escaped form; false (and nothing written) if it does not fit.
    fn push_char(&mut self, c: char, format: LogFormat) -> bool {
        let mut buf = [0u8; 8];
        let escaped: &str = match (c, format) {
            ('"', LogFormat::Json) => "\\\"",
            ('\\', LogFormat::Json) => "\\\\",
            ('\n', _) => "\\n",
            ('\r', _) => "\\r",
            ('\t', _) => "\\t",
            (c, _) if (c as u32) < 0x20 || c == '\u{7f}' => {
                let hex = b"0123456789abcdef";
                let n = c as usize;
                buf[..4].copy_from_slice(b"\\u00");
                buf[4] = hex[n >> 4];
                buf[5] = hex[n & 0xf];
                std::str::from_utf8(&buf[..6]).unwrap_or("?")
            }
            (c, _) => c.encode_utf8(&mut buf),
        };
        if self.out.len() + escaped.len() > self.limit {
            self.truncated = true;
            return false;
        }
        self.out.push_str(escaped);
        true
    }

    /// Appends `s` escaped, as much as fits; false if it was cut.
    fn push_escaped(&mut self, s: &str, format: LogFormat) -> bool {
        s.chars().all(|c| self.push_char(c, format))
    }

    /// Appends structural text that must fit whole; false (nothing written) if it does not.
    fn push_raw(&mut self, s: &str) -> bool {
        if self.out.len() + s.len() > self.limit {
            self.truncated = true;
            return false;
        }
        self.out.push_str(s);
        true
    }
}

fn cut_target(target: &str) -> &str {
    cut_to(target, TARGET_BYTES_MAX)
}

/// `s` cut to at most `max` bytes on a character boundary.
fn cut_to(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Formats `event` into the scratch line and returns it, newline included, at most
/// `LOG_LINE_BYTES_MAX` bytes.
pub fn format_event<'s>(event: &Event<'_>, format: LogFormat, scratch: &'s mut Scratch) -> &'s str {
    let Scratch {
        line: out,
        raw,
        clean,
        msg,
    } = scratch;
    out.clear();
    if format == LogFormat::Json {
        out.push_str("{\"ts\":\"");
    }
    push_timestamp(out, event.unix_ms);
    let mut line = Line {
        out: &mut *out,
        limit: LOG_LINE_BYTES_MAX - LINE_TAIL_BYTES,
        truncated: false,
    };
    render(raw, clean, event.msg);
    msg.clear();
    msg.push_str(cut_to(clean, LOG_SUMMARY_LIKE_BYTES_MAX));
    match format {
        LogFormat::Json => json_event(&mut line, event, raw, clean),
        LogFormat::Text => text_event(&mut line, event, raw, clean),
    }
    out.as_str()
}

fn json_event(line: &mut Line<'_>, event: &Event<'_>, raw: &mut String, clean: &mut String) {
    line.out.push_str("\",\"level\":\"");
    line.out.push_str(event.level.as_str());
    line.out.push_str("\",\"target\":\"");
    line.push_escaped(cut_target(event.target), LogFormat::Json);
    line.out.push_str("\",\"msg\":\"");
    let whole = line.push_escaped(clean, LogFormat::Json);
    line.out.push('"');
    if whole {
        for (key, value) in event.fields {
            if !json_field(line, key, *value, raw, clean) {
                break;
            }
        }
    }
    if line.truncated {
        line.out.push_str(",\"truncated\":true");
    }
    line.out.push_str("}\n");
}

/// Appends `,"key":"value"`; false if the line's budget ran out.
fn json_field(
    line: &mut Line<'_>,
    key: &str,
    value: &dyn Display,
    raw: &mut String,
    clean: &mut String,
) -> bool {
    let mark = line.out.len();
    let reserved = RESERVED_KEYS.contains(&key);
    let key_fits = line.push_raw(if reserved { ",\"_" } else { ",\"" })
        && line.push_escaped(key, LogFormat::Json)
        && line.push_raw("\":\"");
    if !key_fits {
        line.out.truncate(mark);
        return false;
    }
    let whole = if is_sensitive_key(key) {
        line.push_raw(REDACTED)
    } else {
        render(raw, clean, value);
        line.push_escaped(clean, LogFormat::Json)
    };
    line.out.push('"');
    whole
}

fn text_event(line: &mut Line<'_>, event: &Event<'_>, raw: &mut String, clean: &mut String) {
    line.out.push(' ');
    line.out.push_str(event.level.as_str());
    line.out.push(' ');
    line.push_escaped(cut_target(event.target), LogFormat::Text);
    line.out.push_str(": ");
    let mut whole = line.push_escaped(clean, LogFormat::Text);
    for (key, value) in event.fields {
        if !whole {
            break;
        }
        whole = text_field(line, key, *value, raw, clean);
    }
    if line.truncated {
        line.out.push_str(" [truncated]");
    }
    line.out.push('\n');
}

/// Appends ` key=value`, quoting the value if it is empty or holds blanks, quotes or `=`.
fn text_field(
    line: &mut Line<'_>,
    key: &str,
    value: &dyn Display,
    raw: &mut String,
    clean: &mut String,
) -> bool {
    let mark = line.out.len();
    if !(line.push_raw(" ") && line.push_escaped(key, LogFormat::Text) && line.push_raw("=")) {
        line.out.truncate(mark);
        return false;
    }
    if is_sensitive_key(key) {
        return line.push_raw(REDACTED);
    }
    render(raw, clean, value);
    let quote =
        clean.is_empty() || clean.contains(|c: char| c.is_whitespace() || c == '"' || c == '=');
    if !quote {
        return line.push_escaped(clean, LogFormat::Text);
    }
    line.out.push('"');
    let whole = clean.chars().all(|c| match c {
        '"' => line.push_raw("\\\""),
        '\\' => line.push_raw("\\\\"),
        c => line.push_char(c, LogFormat::Text),
    });
    line.out.push('"');
    whole
}

#[cfg(test)]
mod tests;
