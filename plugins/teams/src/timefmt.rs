//! The time formats Teams uses: ISO 8601 message times (with up to seven
//! fractional digits, `2026-02-08T07:48:12.8740000Z`), Unix milliseconds
//! as numbers or strings, and HTTP dates in `Retry-After`.

use std::time::Duration;

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = (if year >= 0 { year } else { year - 399 }) / 400;
    let year_of_era = year - era * 400;
    let month = i64::from(month);
    let day_of_year =
        (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// Unix seconds of a UTC date and time, if the fields are in range.
fn unix_seconds(year: i64, month: u32, day: u32, h: u32, m: u32, s: u32) -> Option<i64> {
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || h > 23 || m > 59 || s > 60 {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + i64::from(h * 3600 + m * 60 + s))
}

fn digits(s: &str) -> Option<u32> {
    (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
}

/// Unix milliseconds of an ISO 8601 time: `YYYY-MM-DDTHH:MM:SS`, an
/// optional fraction of any length, and `Z`, an offset or nothing (UTC).
pub(crate) fn parse_iso_ms(text: &str) -> Option<u64> {
    let text = text.trim();
    let (date, time) = text.split_once(['T', 't', ' '])?;
    let mut date_parts = date.splitn(3, '-');
    let year: i64 = i64::from(digits(date_parts.next()?)?);
    let month = digits(date_parts.next()?)?;
    let day = digits(date_parts.next()?)?;

    // Split the zone off the end: `Z`, `+hh:mm`, `-hhmm`.
    let (clock, offset_secs) = if let Some(clock) = time.strip_suffix(['Z', 'z']) {
        (clock, 0i64)
    } else if let Some(at) = time.rfind(['+', '-']) {
        let (clock, zone) = time.split_at(at);
        let sign = if zone.starts_with('-') { -1 } else { 1 };
        let zone = zone[1..].replace(':', "");
        if zone.len() != 4 {
            return None;
        }
        let hours = i64::from(digits(&zone[..2])?);
        let minutes = i64::from(digits(&zone[2..])?);
        (clock, sign * (hours * 3600 + minutes * 60))
    } else {
        (time, 0)
    };
    let (hms, fraction) = match clock.split_once(['.', ',']) {
        Some((hms, fraction)) => (hms, fraction),
        None => (clock, ""),
    };
    let mut clock_parts = hms.splitn(3, ':');
    let h = digits(clock_parts.next()?)?;
    let m = digits(clock_parts.next()?)?;
    let s = digits(clock_parts.next().unwrap_or("0"))?;
    let millis = if fraction.is_empty() {
        0
    } else {
        if !fraction.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        // The first three digits are the milliseconds; the rest (Teams
        // sends seven) is finer than a Matrix timestamp.
        let mut padded = fraction.chars().take(3).collect::<String>();
        while padded.len() < 3 {
            padded.push('0');
        }
        i64::from(digits(&padded)?)
    };
    let seconds = unix_seconds(year, month, day, h, m, s)? - offset_secs;
    u64::try_from(seconds * 1000 + millis).ok()
}

/// Unix milliseconds of a Teams time: an ISO 8601 string, or a number of
/// milliseconds (as a number or a string; values small enough to be
/// seconds are taken as seconds). `None` for zero or anything else.
pub(crate) fn parse_time_ms(text: &str) -> Option<u64> {
    let text = text.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return match text.parse::<u64>().ok()? {
            0 => None,
            n if n < 100_000_000_000 => Some(n * 1000),
            n => Some(n),
        };
    }
    parse_iso_ms(text)
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];

/// Unix seconds of an HTTP date, in any of the three forms HTTP allows:
/// `Sun, 06 Nov 1994 08:49:37 GMT`, `Sunday, 06-Nov-94 08:49:37 GMT` and
/// `Sun Nov  6 08:49:37 1994`.
pub(crate) fn parse_http_date(text: &str) -> Option<u64> {
    let mut month = None;
    let mut clock = None;
    let mut numbers = Vec::new();
    for token in text.split([' ', ',', '-']).filter(|t| !t.is_empty()) {
        if token.contains(':') {
            let mut parts = token.splitn(3, ':');
            clock = Some((
                digits(parts.next()?)?,
                digits(parts.next()?)?,
                digits(parts.next()?)?,
            ));
        } else if let Some(n) = digits(token) {
            numbers.push((n, token.len()));
        } else if let Some(index) = MONTHS
            .iter()
            .position(|m| token.len() >= 3 && token[..3].eq_ignore_ascii_case(m))
        {
            month = Some(u32::try_from(index).ok()? + 1);
        }
    }
    // The day is the first number of one or two digits, the year the
    // last other one.
    let day_index = numbers.iter().position(|(_, len)| *len <= 2)?;
    let (day, _) = *numbers.get(day_index)?;
    let (year, year_len) = numbers
        .iter()
        .enumerate()
        .rev()
        .find(|(i, _)| *i != day_index)
        .map(|(_, number)| *number)?;
    let year = i64::from(match year_len {
        // RFC 850's two-digit years: 70–99 are 19xx.
        2 if year >= 70 => 1900 + year,
        2 => 2000 + year,
        _ => year,
    });
    let (h, m, s) = clock?;
    u64::try_from(unix_seconds(year, month?, day, h, m, s)?).ok()
}

/// How long a `Retry-After` value asks to wait: seconds, or an HTTP date
/// (compared with `now_ms`; a date in the past is no wait). `None` when
/// it is neither.
pub(crate) fn parse_retry_after(value: &str, now_ms: u64) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    if let Ok(seconds) = value.parse::<f64>()
        && seconds.is_finite()
        && seconds >= 0.0
    {
        return Some(Duration::from_secs_f64(seconds));
    }
    let at_ms = parse_http_date(value)?.saturating_mul(1000);
    Some(Duration::from_millis(at_ms.saturating_sub(now_ms)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_times_with_seven_fractional_digits_parse_to_milliseconds() {
        // The community bridge's shape: seven digits.
        assert_eq!(
            parse_iso_ms("2026-02-08T07:48:12.8740000Z"),
            Some(1_770_536_892_874)
        );
        // The legacy Skype shape: three digits.
        assert_eq!(
            parse_iso_ms("2018-03-09T13:54:59.360Z"),
            Some(1_520_603_699_360)
        );
        // No fraction, and one digit.
        assert_eq!(parse_iso_ms("1970-01-01T00:00:01Z"), Some(1000));
        assert_eq!(parse_iso_ms("1970-01-01T00:00:01.5Z"), Some(1500));
        // An offset is subtracted; no zone at all is UTC.
        assert_eq!(parse_iso_ms("1970-01-01T01:00:00+01:00"), Some(0));
        assert_eq!(parse_iso_ms("1970-01-01T00:00:00-0030"), Some(1_800_000));
        assert_eq!(parse_iso_ms("1970-01-01T00:00:02"), Some(2000));
        // Garbage is no time.
        assert_eq!(parse_iso_ms("yesterday"), None);
        assert_eq!(parse_iso_ms("2026-13-01T00:00:00Z"), None);
        assert_eq!(parse_iso_ms("2026-01-01T00:00:00.x1Z"), None);
    }

    #[test]
    fn times_come_as_iso_strings_or_milliseconds() {
        assert_eq!(parse_time_ms("1715842512004"), Some(1_715_842_512_004));
        // Seconds are recognised by their size.
        assert_eq!(parse_time_ms("1715842512"), Some(1_715_842_512_000));
        assert_eq!(
            parse_time_ms("2018-03-09T13:54:59.360Z"),
            Some(1_520_603_699_360)
        );
        // Zero means "not set".
        assert_eq!(parse_time_ms("0"), None);
        assert_eq!(parse_time_ms(""), None);
    }

    #[test]
    fn http_dates_parse_in_all_three_forms() {
        let expected = Some(784_111_777);
        assert_eq!(parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"), expected);
        assert_eq!(parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT"), expected);
        assert_eq!(parse_http_date("Sun Nov  6 08:49:37 1994"), expected);
        // Not a date.
        assert_eq!(parse_http_date("soon"), None);
    }

    #[test]
    fn retry_after_is_seconds_or_a_date() {
        let now_ms = 784_111_777_000;
        // Seconds.
        assert_eq!(
            parse_retry_after("120", now_ms),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after(" 0 ", now_ms), Some(Duration::ZERO));
        // A date 30 s from now.
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:50:07 GMT", now_ms),
            Some(Duration::from_secs(30))
        );
        // A date in the past means no wait.
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now_ms),
            Some(Duration::ZERO)
        );
        // Neither.
        assert_eq!(parse_retry_after("later", now_ms), None);
        assert_eq!(parse_retry_after("-5", now_ms), None);
    }
}
