//! Calendar dates of epoch timestamps, as Kinto prints them (no time zone crate needed for UTC).

/// The UTC date `days` after the epoch as `YYYY-MM-DD` (civil-from-days, Howard Hinnant's
/// algorithm).
pub fn civil_date(days: i64) -> String {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

/// `YYYY-MM-DDTHH:MM:SS` of an epoch-ms timestamp, and its milliseconds.
pub fn date_time(ts_ms: u64) -> (String, u64) {
    let secs = ts_ms / 1000;
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let date = civil_date(days as i64);
    (format!("{date}T{:02}:{:02}:{:02}", rest / 3600, rest % 3600 / 60, rest % 60), ts_ms % 1000)
}

#[cfg(test)]
mod tests {
    #[test]
    fn dates_of_timestamps() {
        assert_eq!(super::civil_date(0), "1970-01-01");
        assert_eq!(super::date_time(1_796_612_746_477), ("2026-12-07T03:05:46".to_owned(), 477));
    }
}
