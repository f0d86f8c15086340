//! Repeated warnings summarised: a call site that logs more than `repeats` lines
//! (`logging.repeats_per_window`, default `LOG_REPEATS_PER_WINDOW_DEFAULT`) within one
//! `LOG_SUMMARY_WINDOW_MS` window writes those lines, then stays quiet until the window ends, when one line reports how many
//! were left out (`… and 4,211 more like this in the last 10 s`).
//!
//! Why: some warnings fire per input (an invalid result, a dropped NATS reply under
//! overload). A flood of them says nothing the first few lines and a count do not, and
//! writing them all costs the shards formatting time and fills the log buffer, pushing
//! out the lines that matter.
//!
//! A window opens at a call site's first line and lasts `LOG_SUMMARY_WINDOW_MS`; the next
//! line after it opens a new one. At most `LOG_SUMMARY_KEYS_MAX` call sites are tracked
//! at once; lines from any further site are written as they come (still bounded by the
//! log buffer), never silently lost. The clock is passed in (`now_ms`), so the logic is
//! tested without sleeping.

use std::hash::{DefaultHasher, Hash, Hasher};

use log::Level;

/// Lines one call site writes per window before the rest are only counted, by default.
pub const LOG_REPEATS_PER_WINDOW_DEFAULT: u64 = 5;
/// Largest `logging.repeats_per_window`; 0 turns summarising off.
pub const LOG_REPEATS_PER_WINDOW_MAX: u64 = 1_000_000;
/// Call sites whose repeats are tracked at once.
pub const LOG_SUMMARY_KEYS_MAX: usize = 64;
/// Bytes of the first line's message quoted in a summary line (`"like"`).
pub const LOG_SUMMARY_LIKE_BYTES_MAX: usize = 256;
/// Length of a summary window.
pub const LOG_SUMMARY_WINDOW_MS: u64 = 10_000;
/// Longest target (module path) kept for a summary line.
const TARGET_KEPT_BYTES: usize = 128;

const _: () = assert!(LOG_REPEATS_PER_WINDOW_DEFAULT <= LOG_REPEATS_PER_WINDOW_MAX);
const _: () = assert!(LOG_SUMMARY_WINDOW_MS % 1000 == 0);

/// The key of a call site: its target and its location (or message template).
pub fn site_key(target: &str, site: &str, line: u32) -> u64 {
    let mut h = DefaultHasher::new();
    (target, site, line).hash(&mut h);
    // 0 marks a free slot.
    h.finish().max(1)
}

/// One summary line to write: `count` lines like `like` were left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub level: Level,
    pub target: String,
    pub like: String,
    pub count: u64,
}

/// What to do with a line.
#[derive(Debug, PartialEq, Eq)]
pub enum Admit {
    /// Only counted; the window's summary will report it.
    Suppress,
    /// Write it; `summary` (the previous window's, not yet written) goes first, and
    /// `record_like` asks for the line's message to be kept with `set_like`.
    Write {
        summary: Option<Summary>,
        record_like: bool,
    },
}

#[derive(Debug)]
struct Slot {
    /// 0 when free.
    key: u64,
    level: Level,
    target: String,
    like: String,
    opened_ms: u64,
    seen: u64,
}

impl Slot {
    fn left_out(&self, repeats: u64) -> u64 {
        self.seen.saturating_sub(repeats)
    }

    fn expired(&self, now_ms: u64) -> bool {
        now_ms.saturating_sub(self.opened_ms) >= LOG_SUMMARY_WINDOW_MS
    }

    /// The summary of the window, if lines were left out; the slot forgets them.
    fn take_summary(&mut self, repeats: u64) -> Option<Summary> {
        let count = self.left_out(repeats);
        self.seen = self.seen.min(repeats);
        (count > 0).then(|| Summary {
            level: self.level,
            target: self.target.clone(),
            like: self.like.clone(),
            count,
        })
    }

    fn open(&mut self, key: u64, level: Level, target: &str, now_ms: u64) {
        self.key = key;
        self.level = level;
        self.target.clear();
        self.target.push_str(cut(target, TARGET_KEPT_BYTES));
        self.like.clear();
        self.opened_ms = now_ms;
        self.seen = 1;
    }
}

/// `s` cut to at most `max` bytes on a character boundary.
fn cut(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The per-call-site windows (see the module docs). Allocated once, at start.
#[derive(Debug)]
pub struct Summarizer {
    slots: Vec<Slot>,
    /// Lines written per window; 0 = no summarising.
    repeats: u64,
}

impl Default for Summarizer {
    fn default() -> Self {
        Summarizer::new(LOG_REPEATS_PER_WINDOW_DEFAULT)
    }
}

impl Summarizer {
    /// `repeats` lines per call site and window are written; 0 writes every line.
    pub fn new(repeats: u64) -> Summarizer {
        let slots = (0..LOG_SUMMARY_KEYS_MAX)
            .map(|_| Slot {
                key: 0,
                level: Level::Info,
                target: String::with_capacity(TARGET_KEPT_BYTES),
                like: String::with_capacity(LOG_SUMMARY_LIKE_BYTES_MAX),
                opened_ms: 0,
                seen: 0,
            })
            .collect();
        Summarizer { slots, repeats }
    }

    /// Decides on one line of the call site `key` at `now_ms`.
    pub fn admit(&mut self, key: u64, level: Level, target: &str, now_ms: u64) -> Admit {
        let repeats = self.repeats;
        if repeats == 0 {
            return Admit::Write {
                summary: None,
                record_like: false,
            };
        }
        if let Some(slot) = self.slots.iter_mut().find(|s| s.key == key) {
            if !slot.expired(now_ms) {
                slot.seen += 1;
                if slot.seen > repeats {
                    return Admit::Suppress;
                }
                return Admit::Write {
                    summary: None,
                    record_like: false,
                };
            }
            let summary = slot.take_summary(repeats);
            slot.open(key, level, target, now_ms);
            return Admit::Write {
                summary,
                record_like: true,
            };
        }
        // A free slot, or one whose window ended with nothing left out.
        let free = self
            .slots
            .iter_mut()
            .find(|s| s.key == 0 || (s.expired(now_ms) && s.left_out(repeats) == 0));
        let Some(slot) = free else {
            // Every slot is busy: written as it comes, not summarised.
            return Admit::Write {
                summary: None,
                record_like: false,
            };
        };
        slot.open(key, level, target, now_ms);
        Admit::Write {
            summary: None,
            record_like: true,
        }
    }

    /// Keeps `msg` (already redacted) as what the call site's summary quotes.
    pub fn set_like(&mut self, key: u64, msg: &str) {
        if let Some(slot) = self.slots.iter_mut().find(|s| s.key == key) {
            slot.like.clear();
            slot.like.push_str(cut(msg, LOG_SUMMARY_LIKE_BYTES_MAX));
        }
    }

    /// Moves the summaries of every window ended by `now_ms` into `out` and frees their
    /// slots. `u64::MAX` ends every window (at exit).
    pub fn take_due(&mut self, now_ms: u64, out: &mut Vec<Summary>) {
        let repeats = self.repeats;
        for slot in self.slots.iter_mut() {
            if slot.key != 0 && slot.expired(now_ms) {
                if let Some(summary) = slot.take_summary(repeats) {
                    out.push(summary);
                }
                slot.key = 0;
            }
        }
    }

    /// Whether any window holds lines left out (a summary is owed).
    pub fn owes(&self) -> bool {
        self.slots
            .iter()
            .any(|s| s.key != 0 && s.left_out(self.repeats) > 0)
    }
}

/// `n` with a comma every three digits: `4,211`.
pub struct Thousands(pub u64);

impl std::fmt::Display for Thousands {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let digits = self.0.to_string();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                f.write_str(",")?;
            }
            write!(f, "{c}")?;
        }
        Ok(())
    }
}

/// The message of a summary line.
pub struct SummaryMessage(pub u64);

impl std::fmt::Display for SummaryMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "… and {} more like this in the last {} s",
            Thousands(self.0),
            LOG_SUMMARY_WINDOW_MS / 1000
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(admit: &Admit) -> bool {
        matches!(admit, Admit::Write { .. })
    }

    /// The first `LOG_REPEATS_PER_WINDOW_DEFAULT` lines of a window are written, the rest are
    /// counted, and the window's end gives one summary with the count and the message.
    #[test]
    fn repeats_beyond_the_bound_are_summarised() {
        let mut s = Summarizer::default();
        let key = site_key("shardline::x", "x.rs", 7);
        let mut written = 0;
        for i in 0..4_216u64 {
            let admit = s.admit(key, Level::Warn, "shardline::x", 1_000 + i);
            if admit
                == (Admit::Write {
                    summary: None,
                    record_like: true,
                })
            {
                s.set_like(key, "invalid result");
            }
            written += u64::from(write(&admit));
        }
        assert_eq!(written, LOG_REPEATS_PER_WINDOW_DEFAULT);
        assert!(s.owes());
        let mut due = Vec::new();
        s.take_due(1_000 + LOG_SUMMARY_WINDOW_MS - 1, &mut due);
        assert!(due.is_empty(), "the window has not ended");
        s.take_due(1_000 + LOG_SUMMARY_WINDOW_MS, &mut due);
        assert_eq!(
            due,
            vec![Summary {
                level: Level::Warn,
                target: "shardline::x".into(),
                like: "invalid result".into(),
                count: 4_211,
            }]
        );
        assert!(!s.owes());
        // A new window writes again.
        assert!(write(&s.admit(key, Level::Warn, "t", 20_000)));
    }

    /// Call sites are counted apart; a site under the bound owes no summary.
    #[test]
    fn sites_are_independent() {
        let mut s = Summarizer::default();
        let (a, b) = (site_key("t", "a.rs", 1), site_key("t", "b.rs", 1));
        for _ in 0..10 {
            s.admit(a, Level::Warn, "t", 0);
        }
        for _ in 0..LOG_REPEATS_PER_WINDOW_DEFAULT {
            assert!(write(&s.admit(b, Level::Warn, "t", 0)));
        }
        let mut due = Vec::new();
        s.take_due(u64::MAX, &mut due);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].count, 10 - LOG_REPEATS_PER_WINDOW_DEFAULT);
    }

    /// A line after its window ended, before the logger took the summary, carries the
    /// summary with it so the count is not lost.
    #[test]
    fn late_line_carries_the_owed_summary() {
        let mut s = Summarizer::default();
        let key = site_key("t", "a.rs", 1);
        for _ in 0..8 {
            s.admit(key, Level::Error, "t", 0);
        }
        match s.admit(key, Level::Error, "t", LOG_SUMMARY_WINDOW_MS) {
            Admit::Write {
                summary: Some(summary),
                record_like: true,
            } => assert_eq!(summary.count, 3),
            other => panic!("{other:?}"),
        }
    }

    /// With every slot busy, lines of further call sites are written, never lost.
    #[test]
    fn untracked_sites_are_written() {
        let mut s = Summarizer::default();
        for i in 0..LOG_SUMMARY_KEYS_MAX as u32 {
            s.admit(site_key("t", "f.rs", i), Level::Warn, "t", 0);
        }
        let extra = site_key("t", "g.rs", 0);
        for _ in 0..100 {
            let admit = s.admit(extra, Level::Warn, "t", 0);
            assert_eq!(
                admit,
                Admit::Write {
                    summary: None,
                    record_like: false
                }
            );
        }
    }

    /// `repeats_per_window = 0` writes every line.
    #[test]
    fn zero_repeats_writes_everything() {
        let mut s = Summarizer::new(0);
        let key = site_key("t", "a.rs", 1);
        for _ in 0..1000 {
            assert!(write(&s.admit(key, Level::Warn, "t", 0)));
        }
        assert!(!s.owes());
    }

    #[test]
    fn thousands_and_message() {
        assert_eq!(Thousands(0).to_string(), "0");
        assert_eq!(Thousands(999).to_string(), "999");
        assert_eq!(Thousands(4_211).to_string(), "4,211");
        assert_eq!(Thousands(1_234_567).to_string(), "1,234,567");
        assert_eq!(
            SummaryMessage(4_211).to_string(),
            "… and 4,211 more like this in the last 10 s"
        );
    }

    #[test]
    fn like_is_cut_on_a_char_boundary() {
        let mut s = Summarizer::default();
        let key = site_key("t", "a.rs", 1);
        s.admit(key, Level::Warn, "t", 0);
        s.set_like(key, &"é".repeat(LOG_SUMMARY_LIKE_BYTES_MAX));
        for _ in 0..LOG_REPEATS_PER_WINDOW_DEFAULT {
            s.admit(key, Level::Warn, "t", 0);
        }
        let mut due = Vec::new();
        s.take_due(u64::MAX, &mut due);
        assert_eq!(due[0].like.len(), LOG_SUMMARY_LIKE_BYTES_MAX);
    }
}
