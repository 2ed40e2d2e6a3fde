//! Management API authentication, sans-IO: the daily bearer token of the
//! xiaozhi gateway API, `hex(SHA256("yyyy-MM-dd" + signature_key))`.
//!
//! # Which dates are accepted
//! The reference gateway computes the date in its local time zone, the
//! manager API that calls it in UTC, retrying with yesterday and tomorrow.
//! Here a token for the UTC date of today, yesterday or tomorrow is
//! accepted. Every time zone is less than 24 h from UTC, so a caller's local
//! date is always one of those three: callers using UTC and callers using any
//! local date are both served, without reading the host's time zone. The
//! cost is that one token stays valid for up to three days.
//!
//! Civil dates come from the Unix time by the days-from-civil algorithm
//! (proleptic Gregorian calendar), so no date library is needed.

#![forbid(unsafe_code)]

use sha2::{Digest, Sha256};

const MS_PER_DAY: u64 = 86_400_000;

/// A proleptic Gregorian date.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CivilDate {
    pub year: i64,
    /// 1..=12
    pub month: u32,
    /// 1..=31
    pub day: u32,
}

impl CivilDate {
    /// The date of day `days` counted from 1970-01-01 (day 0).
    pub fn from_unix_days(days: i64) -> CivilDate {
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097); // [0, 146096]
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
        let mp = (5 * doy + 2) / 153; // [0, 11], March first
        let day = doy - (153 * mp + 2) / 5 + 1; // [1, 31]
        let month = if mp < 10 { mp + 3 } else { mp - 9 }; // [1, 12]
        let year = yoe + era * 400 + i64::from(month <= 2);
        debug_assert!((1..=12).contains(&month) && (1..=31).contains(&day));
        CivilDate {
            year,
            // In range by construction (see above).
            month: u32::try_from(month).unwrap_or(1),
            day: u32::try_from(day).unwrap_or(1),
        }
    }

    /// Day number counted from 1970-01-01; the inverse of `from_unix_days`.
    pub fn to_unix_days(self) -> i64 {
        let month = i64::from(self.month);
        let year = self.year - i64::from(month <= 2);
        let era = year.div_euclid(400);
        let yoe = year.rem_euclid(400); // [0, 399]
        let mp = if month > 2 { month - 3 } else { month + 9 }; // [0, 11]
        let doy = (153 * mp + 2) / 5 + i64::from(self.day) - 1; // [0, 365]
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy; // [0, 146096]
        era * 146_097 + doe - 719_468
    }

    /// The UTC date at `unix_ms`.
    pub fn from_unix_ms(unix_ms: u64) -> CivilDate {
        // At most about 2.1e11 days: within i64.
        let days = i64::try_from(unix_ms / MS_PER_DAY).unwrap_or(i64::MAX / 2);
        CivilDate::from_unix_days(days)
    }

    /// `yyyy-MM-dd`, as the token is computed over.
    pub fn iso(self) -> String {
        format!("{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

/// The token for `date` (`yyyy-MM-dd`): lower-case hex SHA-256 of the date
/// followed by the key.
pub fn daily_token(date: &str, key: &str) -> String {
    let mut hash = Sha256::new();
    hash.update(date.as_bytes());
    hash.update(key.as_bytes());
    hex(&hash.finalize())
}

/// Whether `authorization` (the header's value) is `Bearer <token>` with the
/// token of the UTC date of yesterday, today or tomorrow at `now_unix_ms`.
/// An empty key authorises nothing.
pub fn bearer_is_valid(authorization: Option<&str>, key: &str, now_unix_ms: u64) -> bool {
    if key.is_empty() {
        return false;
    }
    let Some(value) = authorization else {
        return false;
    };
    let Some((scheme, token)) = value.trim().split_once(' ') else {
        return false;
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return false;
    }
    let token = token.trim().to_ascii_lowercase();
    let today = CivilDate::from_unix_ms(now_unix_ms).to_unix_days();
    // Every candidate is checked, so the time taken does not tell which day
    // matched.
    [today - 1, today, today + 1]
        .into_iter()
        .map(|day| daily_token(&CivilDate::from_unix_days(day).iso(), key))
        .fold(false, |ok, expected| {
            constant_time_eq(expected.as_bytes(), token.as_bytes()) | ok
        })
}

/// Equality whose time depends on the lengths only, not on where the first
/// difference is.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0_u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "Gw8-Ops-Key";
    /// python3: hashlib.sha256(b"2026-11-22" + KEY).hexdigest()
    const TOKEN_2026_11_22: &str =
        "03fa5377c836dc090477f97ff95663fb4964e082e70b3a8f765fe03b3602338f";
    const TOKEN_2026_11_21: &str =
        "4b65edeb1123717be84cfa81c43cb1ab98c2d0b1cce8ca2f5bb4358b3b3c40bc";
    const TOKEN_2026_11_23: &str =
        "f9d25a119d38833389ff2ed5851f700f58ddf6271e060bd30ad10d9614fbceb4";
    const TOKEN_2026_11_20: &str =
        "8ceac13eee5d9e43ed40b8d2e1a7d66a80ab4df0f1079be6ad8f94d709c63f79";
    const TOKEN_2026_11_24: &str =
        "3a40f422a14de3c4f101b069e597fe3d46632c49d6cb160299a9957c70f0ad12";
    /// python3: calendar.timegm((2026, 11, 22, 12, 0, 0)) * 1000
    const NOON_2026_11_22_MS: u64 = 1_795_348_800_000;

    fn bearer(token: &str) -> String {
        format!("Bearer {token}")
    }

    #[test]
    fn civil_dates_of_known_days() {
        let cases = [
            (0, (1970, 1, 1)),
            (-1, (1969, 12, 31)),
            (11_016, (2000, 2, 29)),
            (11_017, (2000, 3, 1)),
            (20_414, (2025, 11, 22)),
            (20_779, (2026, 11, 22)),
            (2_932_896, (9999, 12, 31)),
        ];
        for (days, (year, month, day)) in cases {
            let date = CivilDate { year, month, day };
            assert_eq!(CivilDate::from_unix_days(days), date, "{days}");
            assert_eq!(date.to_unix_days(), days, "{date:?}");
        }
        assert_eq!(
            CivilDate::from_unix_ms(NOON_2026_11_22_MS).iso(),
            "2026-11-22"
        );
        assert_eq!(CivilDate::from_unix_ms(0).iso(), "1970-01-01");
        assert!(CivilDate::from_unix_ms(u64::MAX).year > 9999);
    }

    #[test]
    fn days_round_trip_over_four_centuries() {
        for days in (-800_000..800_000).step_by(7) {
            assert_eq!(CivilDate::from_unix_days(days).to_unix_days(), days);
        }
    }

    #[test]
    fn token_of_a_fixed_date() {
        assert_eq!(daily_token("2026-11-22", KEY), TOKEN_2026_11_22);
    }

    #[test]
    fn yesterday_today_and_tomorrow_are_accepted() {
        for token in [TOKEN_2026_11_21, TOKEN_2026_11_22, TOKEN_2026_11_23] {
            let header = bearer(token);
            assert!(bearer_is_valid(Some(&header), KEY, NOON_2026_11_22_MS));
        }
        // Edges of the day count the same.
        let first_ms = NOON_2026_11_22_MS - 12 * 3_600_000;
        let last_ms = NOON_2026_11_22_MS + 12 * 3_600_000 - 1;
        for now in [first_ms, last_ms] {
            let header = bearer(TOKEN_2026_11_21);
            assert!(bearer_is_valid(Some(&header), KEY, now));
        }
    }

    #[test]
    fn two_days_off_is_refused() {
        for token in [TOKEN_2026_11_20, TOKEN_2026_11_24] {
            let header = bearer(token);
            assert!(!bearer_is_valid(Some(&header), KEY, NOON_2026_11_22_MS));
        }
    }

    #[test]
    fn header_forms() {
        let now = NOON_2026_11_22_MS;
        let upper = TOKEN_2026_11_22.to_ascii_uppercase();
        assert!(bearer_is_valid(Some(&format!("bearer {upper}")), KEY, now));
        assert!(bearer_is_valid(
            Some(&format!(" Bearer  {TOKEN_2026_11_22} ")),
            KEY,
            now
        ));
        assert!(!bearer_is_valid(None, KEY, now));
        assert!(!bearer_is_valid(Some(TOKEN_2026_11_22), KEY, now));
        assert!(!bearer_is_valid(
            Some(&format!("Basic {TOKEN_2026_11_22}")),
            KEY,
            now
        ));
        assert!(!bearer_is_valid(Some("Bearer "), KEY, now));
        let truncated = TOKEN_2026_11_22.get(..63).unwrap();
        assert!(!bearer_is_valid(Some(&bearer(truncated)), KEY, now));
        assert!(!bearer_is_valid(Some(&bearer(TOKEN_2026_11_22)), "", now));
        assert!(!bearer_is_valid(
            Some(&bearer(TOKEN_2026_11_22)),
            "other-Key",
            now
        ));
    }
}
