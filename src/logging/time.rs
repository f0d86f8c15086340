//! RFC 3339 UTC timestamps with milliseconds (`2026-11-27T07:00:00.123Z`) from Unix
//! milliseconds.
//!
//! Why not a date crate: a log timestamp needs one conversion, days since the epoch to a
//! civil date, which is Howard Hinnant's `civil_from_days` in a dozen integer operations;
//! UTC has no time zones or DST to get wrong, and leap seconds are not represented in Unix
//! time anyway.

use std::fmt::Write;
use std::time::{SystemTime, UNIX_EPOCH};

const MS_PER_DAY: u64 = 86_400_000;
/// Days in a 400-year Gregorian era.
const DAYS_PER_ERA: u64 = 146_097;
/// Days from 0000-03-01 (the algorithm's epoch) to 1970-01-01.
const EPOCH_SHIFT_DAYS: u64 = 719_468;

/// The wall clock in Unix milliseconds; 0 if the clock is before 1970.
pub fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// `(year, month 1–12, day 1–31)` of the day `days` after 1970-01-01 (proleptic Gregorian).
pub fn civil_from_days(days: u64) -> (u64, u32, u32) {
    let z = days + EPOCH_SHIFT_DAYS;
    let era = z / DAYS_PER_ERA;
    let doe = z - era * DAYS_PER_ERA; // day of era, 0..=146_096
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // year of era, 0..=399
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // day of year from March 1st
    let mp = (5 * doy + 2) / 153; // month from March, 0..=11
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month as u32, day as u32)
}

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

    /// Walking day by day from 1970 to 2400, the civil date advances exactly as a calendar
    /// does: day+1 within a month, else the 1st of the next month, with Gregorian leap years.
    #[test]
    fn consecutive_days_follow_the_calendar() {
        let leap = |y: u64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
        let month_days = |y: u64, m: u32| match m {
            2 if leap(y) => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        };
        let mut expected = (1970, 1, 1);
        for days in 0..=157_000 {
            assert_eq!(civil_from_days(days), expected, "day {days}");
            let (y, m, d) = expected;
            expected = if d < month_days(y, m) {
                (y, m, d + 1)
            } else if m < 12 {
                (y, m + 1, 1)
            } else {
                (y + 1, 1, 1)
            };
        }
    }
}
