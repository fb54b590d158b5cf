//! RFC 3339 times, as CloudEvents `time` and the dead-letter failure
//! headers carry them. Parsing goes through the `time` crate so that every
//! form RFC 3339 allows (offsets, any fraction, lowercase `t` and `z`) is
//! read as the instant it names, and anything else is refused.

use std::time::SystemTime;

use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};

/// `t` as RFC 3339 in UTC with millisecond precision, e.g.
/// `2026-11-25T03:00:00.250Z`: what the library writes.
pub fn format_time(t: SystemTime) -> String {
    let utc = OffsetDateTime::from(t).to_offset(UtcOffset::UTC);
    // Milliseconds: what every broker's own timestamps resolve, and what
    // other languages' parsers read without loss.
    let ms = utc
        .replace_nanosecond(utc.millisecond() as u32 * 1_000_000)
        .unwrap_or(utc);
    ms.format(&Rfc3339)
        .unwrap_or_else(|_| String::from("1970-01-01T00:00:00Z"))
}

/// The instant an RFC 3339 date-time names, whatever its offset; `None`
/// when `s` is not one (a date alone, a missing offset, a leap second the
/// calendar cannot place).
pub fn parse_time(s: &str) -> Option<SystemTime> {
    OffsetDateTime::parse(s, &Rfc3339).ok().map(SystemTime::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn at(secs: u64, ms: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(ms)
    }

    #[test]
    fn every_rfc3339_form_names_its_instant() {
        // 2026-11-24T20:00:00.250Z
        let want = at(1_795_550_400, 250);
        for text in [
            "2026-11-24T20:00:00.250Z",
            "2026-11-24T22:00:00.250+02:00",
            "2026-11-24t20:00:00.25z",
            "2026-11-24T15:30:00.250-04:30",
            "2026-11-24T20:00:00.250000000Z",
        ] {
            assert_eq!(parse_time(text), Some(want), "{text}");
        }
        assert_eq!(parse_time("2026-11-24T22:00:00+02:00"), Some(at(1_795_550_400, 0)));
    }

    #[test]
    fn other_text_is_refused() {
        for text in [
            "2026-11-24",
            "2026-11-24T20:00:00",
            "yesterday",
            "2026-13-01T00:00:00Z",
            "",
        ] {
            assert_eq!(parse_time(text), None, "{text}");
        }
    }

    #[test]
    fn written_in_utc_with_milliseconds() {
        assert_eq!(format_time(at(1_795_550_400, 250)), "2026-11-24T20:00:00.25Z");
        let t = at(1_795_550_400, 7) + Duration::from_nanos(999);
        assert_eq!(parse_time(&format_time(t)), Some(at(1_795_550_400, 7)));
    }
}
