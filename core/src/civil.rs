//! Days since the Unix epoch to and from the proleptic Gregorian calendar, in UTC: what
//! the log timestamps, the HTTP `Date` header and the budgets' calendar months need.
//!
//! Why not a date crate: each needs one conversion, which is Howard Hinnant's
//! `civil_from_days` (and its inverse) in a dozen integer operations; UTC has no time
//! zones or DST to get wrong, and leap seconds are not represented in Unix time anyway.
//! One copy, here, because the core (budgets) needs it and may depend on nothing above.

/// Days in a 400-year Gregorian era.
const DAYS_PER_ERA: u64 = 146_097;
/// Days from 0000-03-01 (the algorithm's epoch) to 1970-01-01.
const EPOCH_SHIFT_DAYS: u64 = 719_468;

/// `(year, month 1–12, day 1–31)` of the day `days` after 1970-01-01.
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

/// The day number of `(year ≥ 1970, month 1–12, day 1–31)`: `civil_from_days`' inverse.
pub fn days_from_civil(year: u64, month: u32, day: u32) -> u64 {
    let (month, day) = (u64::from(month), u64::from(day));
    let year = if month <= 2 { year - 1 } else { year };
    let era = year / 400;
    let yoe = year - era * 400;
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * DAYS_PER_ERA + doe - EPOCH_SHIFT_DAYS
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Day by day from 1970 to 2399, against a calendar counted by hand, both ways.
    #[test]
    fn every_day_matches_a_counted_calendar() {
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
            assert_eq!(days_from_civil(y, m, d), days, "{expected:?}");
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
