//! RFC 3339 UTC timestamps with milliseconds (`2026-11-27T07:00:00.123Z`) from Unix
//! milliseconds.
//!
//! Why not a date crate: a log timestamp needs one conversion, days since the epoch to a
//! civil date (`shardline_core::civil`, which says why).

use std::fmt::Write;
use std::time::{SystemTime, UNIX_EPOCH};

const MS_PER_DAY: u64 = 86_400_000;

/// The wall clock in Unix milliseconds; 0 if the clock is before 1970.
pub fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

pub use shardline_core::civil::civil_from_days;

/// Appends `unix_ms` as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn push_timestamp(out: &mut String, unix_ms: u64) {
    let (year, month, day) = civil_from_days(unix_ms / MS_PER_DAY);
    let ms_of_day = unix_ms % MS_PER_DAY;
    let (hour, minute) = (ms_of_day / 3_600_000, ms_of_day / 60_000 % 60);
    let (second, milli) = (ms_of_day / 1000 % 60, ms_of_day % 1000);
    // Writing into a String cannot fail.
    let _ = write!(
        out,
        "{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{milli:03}Z"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(unix_ms: u64) -> String {
        let mut out = String::new();
        push_timestamp(&mut out, unix_ms);
        out
    }

    #[test]
    fn known_instants() {
        assert_eq!(ts(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(ts(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(ts(1_795_762_800_123), "2026-11-27T07:00:00.123Z");
        assert_eq!(ts(4_107_542_399_999), "2100-02-28T23:59:59.999Z");
        assert_eq!(ts(253_402_300_799_999), "9999-12-31T23:59:59.999Z");
    }
}
