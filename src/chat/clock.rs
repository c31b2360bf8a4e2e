//! `strftime_now(format)` for chat templates, without a date-time crate.
//!
//! Templates use it to put today's date into a system prompt
//! (`strftime_now("%d %b %Y")`). Time is taken in UTC. Python formats local
//! time; on a machine whose zone is UTC (servers, containers) the two agree.

/// A broken-down UTC time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CivilTime {
    pub year: i64,
    /// 1..=12
    pub month: u32,
    /// 1..=31
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    /// 0 = Monday .. 6 = Sunday
    pub weekday: u32,
    /// 1..=366
    pub day_of_year: u32,
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const WEEKDAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

impl CivilTime {
    /// Splits seconds since 1970-01-01T00:00:00Z into calendar fields.
    pub fn from_unix(secs: i64) -> CivilTime {
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400) as u32;
        // 1970-01-01 was a Thursday (weekday 3 when Monday is 0).
        let weekday = (days + 3).rem_euclid(7) as u32;
        // Walk whole 400-year cycles (146097 days), then years, then months.
        let mut year = 1970 + 400 * days.div_euclid(146_097);
        let mut day_in = days.rem_euclid(146_097);
        loop {
            let len = if is_leap(year) { 366 } else { 365 };
            if day_in < len {
                break;
            }
            day_in -= len;
            year += 1;
        }
        let day_of_year = day_in as u32 + 1;
        let month_lengths = [
            31,
            if is_leap(year) { 29 } else { 28 },
            31,
            30,
            31,
            30,
            31,
            31,
            30,
            31,
            30,
            31,
        ];
        let mut month = 0usize;
        while day_in >= month_lengths[month] {
            day_in -= month_lengths[month];
            month += 1;
        }
        CivilTime {
            year,
            month: month as u32 + 1,
            day: day_in as u32 + 1,
            hour: rem / 3600,
            minute: rem / 60 % 60,
            second: rem % 60,
            weekday,
            day_of_year,
        }
    }

    /// Formats like C's `strftime` in the C locale. Supports
    /// `%Y %y %m %d %e %H %I %M %S %p %b %h %B %a %A %j %u %w %F %D %T %R %n %t %%`
    /// and glibc's `%-X` (no padding). Unknown conversions are copied unchanged.
    pub fn strftime(&self, format: &str) -> String {
        let mut out = String::with_capacity(format.len() + 16);
        let mut chars = format.chars().peekable();
        while let Some(c) = chars.next() {
            if c != '%' {
                out.push(c);
                continue;
            }
            let no_pad = chars.peek() == Some(&'-');
            if no_pad {
                chars.next();
            }
            let Some(spec) = chars.next() else {
                out.push('%');
                if no_pad {
                    out.push('-');
                }
                break;
            };
            let num = |out: &mut String, v: i64, width: usize| {
                if no_pad {
                    out.push_str(&v.to_string());
                } else {
                    out.push_str(&format!("{v:0width$}"));
                }
            };
            let hour12 = match self.hour % 12 {
                0 => 12,
                h => h,
            };
            match spec {
                'Y' => out.push_str(&self.year.to_string()),
                'y' => num(&mut out, self.year.rem_euclid(100), 2),
                'm' => num(&mut out, self.month as i64, 2),
                'd' => num(&mut out, self.day as i64, 2),
                'e' => {
                    if no_pad {
                        out.push_str(&self.day.to_string());
                    } else {
                        out.push_str(&format!("{:2}", self.day));
                    }
                }
                'H' => num(&mut out, self.hour as i64, 2),
                'I' => num(&mut out, hour12 as i64, 2),
                'M' => num(&mut out, self.minute as i64, 2),
                'S' => num(&mut out, self.second as i64, 2),
                'p' => out.push_str(if self.hour < 12 { "AM" } else { "PM" }),
                'b' | 'h' => out.push_str(&MONTHS[self.month as usize - 1][..3]),
                'B' => out.push_str(MONTHS[self.month as usize - 1]),
                'a' => out.push_str(&WEEKDAYS[self.weekday as usize][..3]),
                'A' => out.push_str(WEEKDAYS[self.weekday as usize]),
                'j' => num(&mut out, self.day_of_year as i64, 3),
                'u' => out.push_str(&(self.weekday + 1).to_string()),
                'w' => out.push_str(&((self.weekday + 1) % 7).to_string()),
                'F' => out.push_str(&format!("{}-{:02}-{:02}", self.year, self.month, self.day)),
                'D' => out.push_str(&format!(
                    "{:02}/{:02}/{:02}",
                    self.month,
                    self.day,
                    self.year.rem_euclid(100)
                )),
                'T' => out.push_str(&format!(
                    "{:02}:{:02}:{:02}",
                    self.hour, self.minute, self.second
                )),
                'R' => out.push_str(&format!("{:02}:{:02}", self.hour, self.minute)),
                'n' => out.push('\n'),
                't' => out.push('\t'),
                '%' => out.push('%'),
                other => {
                    out.push('%');
                    if no_pad {
                        out.push('-');
                    }
                    out.push(other);
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::CivilTime;

    #[test]
    fn civil_time_matches_known_dates() {
        let t = CivilTime::from_unix(0);
        assert_eq!((t.year, t.month, t.day, t.weekday), (1970, 1, 1, 3));
        // 2025-03-14T09:26:53Z, a Friday.
        let t = CivilTime::from_unix(1_741_944_413);
        assert_eq!(
            (t.year, t.month, t.day, t.hour, t.minute, t.second, t.weekday),
            (2025, 3, 14, 9, 26, 53, 4)
        );
        assert_eq!(t.day_of_year, 73);
        // 2024-02-29 (leap day) and 2000-12-31.
        let t = CivilTime::from_unix(1_709_164_800);
        assert_eq!((t.year, t.month, t.day), (2024, 2, 29));
        let t = CivilTime::from_unix(978_220_800);
        assert_eq!((t.year, t.month, t.day, t.day_of_year), (2000, 12, 31, 366));
        // Before the epoch: 1969-12-31T23:59:59Z, a Wednesday.
        let t = CivilTime::from_unix(-1);
        assert_eq!(
            (t.year, t.month, t.day, t.hour, t.weekday),
            (1969, 12, 31, 23, 2)
        );
    }

    #[test]
    fn strftime_formats_like_c() {
        let t = CivilTime::from_unix(1_741_944_413);
        assert_eq!(t.strftime("%d %b %Y"), "14 Mar 2025");
        assert_eq!(t.strftime("%B %d, %Y"), "March 14, 2025");
        assert_eq!(t.strftime("%Y-%m-%d"), "2025-03-14");
        assert_eq!(
            t.strftime("%A %a %j %I:%M %p %-m/%-d %e|%%"),
            "Friday Fri 073 09:26 AM 3/14 14|%"
        );
        assert_eq!(t.strftime("%Q%"), "%Q%");
    }
}
