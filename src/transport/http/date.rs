//! The `Date` header (RFC 9110 §6.6.1: an origin server with a clock must send it),
//! formatted once per second per connection rather than once per response.

use std::time::{SystemTime, UNIX_EPOCH};

/// `Sun, 06 Nov 1994 08:49:37 GMT`.
pub(crate) const IMF_FIXDATE_BYTES: usize = 29;

const DAY_NAMES: [&[u8; 3]; 7] = [b"Thu", b"Fri", b"Sat", b"Sun", b"Mon", b"Tue", b"Wed"];
const MONTH_NAMES: [&[u8; 3]; 12] = [
    b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
];
const SECONDS_PER_DAY: u64 = 86_400;

/// The current date, re-formatted when the second changes.
#[derive(Debug)]
pub(crate) struct DateCache {
    unix_s: u64,
    text: [u8; IMF_FIXDATE_BYTES],
}

impl DateCache {
    pub fn new() -> Self {
        let mut cache = DateCache {
            unix_s: u64::MAX,
            text: [b' '; IMF_FIXDATE_BYTES],
        };
        cache.now();
        cache
    }

    /// The date of now.
    pub fn now(&mut self) -> &[u8] {
        let unix_s = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if unix_s != self.unix_s {
            self.unix_s = unix_s;
            self.text = imf_fixdate(unix_s);
        }
        &self.text
    }
}

/// Formats Unix seconds as an IMF-fixdate (years 1970..=9999).
pub(crate) fn imf_fixdate(unix_s: u64) -> [u8; IMF_FIXDATE_BYTES] {
    let days = unix_s / SECONDS_PER_DAY;
    let secs_of_day = unix_s % SECONDS_PER_DAY;
    let (year, month, day) = shardline_core::civil::civil_from_days(days);
    let (month, day) = (u64::from(month), u64::from(day));
    let mut out = *b"Thu, 01 Jan 1970 00:00:00 GMT";
    out[..3].copy_from_slice(DAY_NAMES[(days % 7) as usize]);
    two_digits(&mut out[5..7], day);
    out[8..11].copy_from_slice(MONTH_NAMES[(month - 1) as usize]);
    let year = year.min(9999);
    two_digits(&mut out[12..14], year / 100);
    two_digits(&mut out[14..16], year % 100);
    two_digits(&mut out[17..19], secs_of_day / 3600);
    two_digits(&mut out[20..22], secs_of_day / 60 % 60);
    two_digits(&mut out[23..25], secs_of_day % 60);
    out
}

fn two_digits(out: &mut [u8], n: u64) {
    out[0] = b'0' + (n / 10) as u8;
    out[1] = b'0' + (n % 10) as u8;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_dates() {
        assert_eq!(&imf_fixdate(0), b"Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(&imf_fixdate(784_111_777), b"Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(&imf_fixdate(951_782_400), b"Tue, 29 Feb 2000 00:00:00 GMT");
        assert_eq!(
            &imf_fixdate(1_798_761_599),
            b"Thu, 31 Dec 2026 23:59:59 GMT"
        );
    }
}
