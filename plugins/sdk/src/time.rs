//! UTC calendar arithmetic for plugins (no time-zone database in the sandbox): Unix
//! seconds to and from civil dates, RFC 3339 and the formats S3 uses.

/// A UTC date and time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Utc {
    /// Year.
    pub year: i64,
    /// Month 1–12.
    pub month: u32,
    /// Day 1–31.
    pub day: u32,
    /// Hour 0–23.
    pub hour: u32,
    /// Minute 0–59.
    pub minute: u32,
    /// Second 0–60.
    pub second: u32,
}

/// Seconds since the Unix epoch now, from the host's wall clock.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl Utc {
    /// The civil time of Unix second `secs` (proleptic Gregorian, Howard Hinnant's algorithm).
    pub fn from_unix(secs: i64) -> Utc {
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400);
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let year = yoe + era * 400 + i64::from(month <= 2);
        Utc {
            year,
            month,
            day,
            hour: (rem / 3600) as u32,
            minute: (rem % 3600 / 60) as u32,
            second: (rem % 60) as u32,
        }
    }

    /// Unix seconds of this time.
    pub fn to_unix(self) -> i64 {
        let y = self.year - i64::from(self.month <= 2);
        let era = y.div_euclid(400);
        let yoe = y.rem_euclid(400);
        let m = i64::from(self.month);
        let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(self.day) - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        let days = era * 146_097 + doe - 719_468;
        days * 86_400 + i64::from(self.hour) * 3600 + i64::from(self.minute) * 60 + i64::from(self.second)
    }

    /// `20130524T000000Z` (SigV4's x-amz-date).
    pub fn amz_date(self) -> String {
        format!(
            "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        )
    }

    /// `20130524`.
    pub fn amz_day(self) -> String {
        format!("{:04}{:02}{:02}", self.year, self.month, self.day)
    }

    /// `2013-05-24T00:00:00Z` (RFC 3339).
    pub fn rfc3339(self) -> String {
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        )
    }
}

/// Parses RFC 3339 / ISO 8601 UTC or offset times (`2026-11-22T12:00:00.000Z`,
/// `2026-11-22T12:00:00+01:00`) to Unix seconds.
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    let (date, time) = text.split_once(['T', 't', ' '])?;
    let mut d = date.splitn(3, '-');
    let (year, month, day) = (
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
    );
    let (clock, offset) = match time.find(['Z', 'z', '+', '-']) {
        Some(i) => time.split_at(i),
        None => (time, "Z"),
    };
    let mut c = clock.splitn(3, ':');
    let (hour, minute) = (c.next()?.parse().ok()?, c.next()?.parse().ok()?);
    let second: f64 = c.next().unwrap_or("0").parse().ok()?;
    let offset_secs = match offset {
        "Z" | "z" => 0,
        sign_and_hm => {
            let sign = if sign_and_hm.starts_with('-') { -1 } else { 1 };
            let digits = sign_and_hm.get(1..)?;
            let (h, m) = match digits.split_once(':') {
                Some(parts) => parts,
                None => (digits.get(..2)?, digits.get(2..)?),
            };
            sign * (h.parse::<i64>().ok()? * 3600 + m.parse::<i64>().ok()? * 60)
        }
    };
    let utc = Utc {
        year,
        month,
        day,
        hour,
        minute,
        second: second as u32,
    };
    (1..=12).contains(&month).then_some(())?;
    Some(utc.to_unix() - offset_secs)
}

/// Parses the S3 access-log time `06/Feb/2019:00:00:38 +0000` to Unix seconds.
pub fn parse_clf(text: &str) -> Option<i64> {
    let (stamp, offset) = text.split_once(' ').unwrap_or((text, "+0000"));
    let mut parts = stamp.splitn(4, [':', '/']);
    let day = parts.next()?.parse().ok()?;
    let month = match parts.next()? {
        "Jan" => 1,
        "Feb" => 2,
        "Mar" => 3,
        "Apr" => 4,
        "May" => 5,
        "Jun" => 6,
        "Jul" => 7,
        "Aug" => 8,
        "Sep" => 9,
        "Oct" => 10,
        "Nov" => 11,
        "Dec" => 12,
        _ => return None,
    };
    // The log writes four digits; a longer year would overflow the arithmetic below.
    let year = parts.next()?.parse().ok().filter(|year| (0..=9999).contains(year))?;
    let mut clock = parts.next()?.splitn(3, ':');
    let (hour, minute, second) = (
        clock.next()?.parse().ok()?,
        clock.next()?.parse().ok()?,
        clock.next()?.parse().ok()?,
    );
    let sign = if offset.starts_with('-') { -1 } else { 1 };
    let digits = offset.trim_start_matches(['+', '-']);
    let offset_secs = if digits.len() == 4 {
        // `get`: four bytes need not be four ASCII digits (slicing could split a character).
        sign * (digits.get(..2)?.parse::<i64>().ok()? * 3600 + digits.get(2..)?.parse::<i64>().ok()? * 60)
    } else {
        0
    };
    Some(
        Utc {
            year,
            month,
            day,
            hour,
            minute,
            second,
        }
        .to_unix()
            - offset_secs,
    )
}

/// Parses `90s`, `15m`, `24h`, `7d` or a plain number of seconds.
pub fn parse_duration_secs(text: &str) -> Option<i64> {
    let text = text.trim();
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let n: i64 = number.parse().ok()?;
    let scale = match unit.trim() {
        "" | "s" => 1,
        "m" | "min" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return None,
    };
    Some(n * scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_both_ways() {
        for secs in [0, 951_782_400, 1_369_353_600, 1_795_000_000, 4_102_444_800] {
            assert_eq!(Utc::from_unix(secs).to_unix(), secs);
        }
        assert_eq!(Utc::from_unix(1_369_353_600).amz_date(), "20130524T000000Z");
        assert_eq!(Utc::from_unix(1_369_353_600).rfc3339(), "2013-05-24T00:00:00Z");
        assert_eq!(
            parse_rfc3339(&Utc::from_unix(1_795_000_123).rfc3339()),
            Some(1_795_000_123)
        );
        assert_eq!(
            Utc::from_unix(951_782_400),
            Utc {
                year: 2000,
                month: 2,
                day: 29,
                hour: 0,
                minute: 0,
                second: 0
            }
        );
    }

    #[test]
    fn parses_the_formats_s3_uses() {
        assert_eq!(parse_rfc3339("2013-05-24T00:00:00.000Z"), Some(1_369_353_600));
        assert_eq!(parse_rfc3339("2013-05-24T01:00:00+01:00"), Some(1_369_353_600));
        assert_eq!(parse_rfc3339("2013-05-24T01:00:00+0100"), Some(1_369_353_600));
        // A short or non-ASCII offset is not a time (it used to panic slicing it).
        assert_eq!(parse_rfc3339("2013-05-24T01:00:00+1"), None);
        assert_eq!(parse_rfc3339("2013-05-24T01:00:00+€1"), None);
        assert_eq!(parse_clf("24/May/2013:00:00:00 +0000"), Some(1_369_353_600));
        assert_eq!(parse_clf("23/May/2013:22:00:00 -0200"), Some(1_369_353_600));
        assert_eq!(parse_clf("24/Foo/2013:00:00:00 +0000"), None);
        // Found by fuzzing (fuzz/fuzz_targets/s3log.rs): this year overflowed `to_unix`.
        assert_eq!(parse_clf("06/Feb/643570455520651:01:10:09 +0000"), None);
        assert_eq!(parse_clf("31/Dec/9999:23:59:59 +0000"), Some(253_402_300_799));
        // Found reading the parser while writing that target: slicing this offset panicked.
        assert_eq!(parse_clf("06/Feb/2019:00:00:38 +a€"), None);
        assert_eq!(parse_duration_secs("15m"), Some(900));
        assert_eq!(parse_duration_secs("24h"), Some(86_400));
        assert_eq!(parse_duration_secs("2w"), None);
    }
}
