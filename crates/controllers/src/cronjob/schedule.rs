//! Cron schedules as upstream's CronJob controller reads them (robfig/cron's standard parser):
//! five fields (minute, hour, day of month, month, day of week) of `*`, `?`, numbers, names
//! (`jan`, `mon`), ranges `a-b`, steps `/n` and lists `,`; the descriptors `@yearly`,
//! `@annually`, `@monthly`, `@weekly`, `@daily`, `@midnight`, `@hourly`; and an optional
//! `CRON_TZ=Zone ` or `TZ=Zone ` prefix. As in cron, when both day fields are restricted a day
//! matching either one counts.
//!
//! Written here rather than taken from the `cron` or `croner` crates: both bring chrono (and
//! chrono-tz for zones), while jiff, already in the tree through k8s-openapi, does the calendar
//! and reads zones from the system's tzdata.

use k8s_openapi::jiff::civil::DateTime;
use k8s_openapi::jiff::tz::TimeZone;
use k8s_openapi::jiff::Timestamp;

/// Why a schedule or time zone was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScheduleError {
    #[error("expected exactly 5 fields, found {0}: {1:?}")]
    FieldCount(usize, String),
    #[error("unparseable value {0:?} in field {1:?}")]
    Value(String, &'static str),
    #[error("value {0} out of range [{1}, {2}] in field {3:?}")]
    Range(u32, u32, u32, &'static str),
    #[error("unknown time zone {0:?}")]
    TimeZone(String),
}

/// A parsed schedule: one bit per allowed value of each field, and its time zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    minute: u64,
    hour: u64,
    dom: u64,
    month: u64,
    dow: u64,
    /// A day field that starts with `*` or `?` (no step): the other one decides alone.
    dom_star: bool,
    dow_star: bool,
    tz: TimeZone,
}

struct Field {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

const MINUTE: Field = Field {
    name: "minute",
    min: 0,
    max: 59,
    names: &[],
};
const HOUR: Field = Field {
    name: "hour",
    min: 0,
    max: 23,
    names: &[],
};
const DOM: Field = Field {
    name: "day of month",
    min: 1,
    max: 31,
    names: &[],
};
const MONTH: Field = Field {
    name: "month",
    min: 1,
    max: 12,
    names: &[
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ],
};
const DOW: Field = Field {
    name: "day of week",
    min: 0,
    max: 6,
    names: &["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
};

fn value(s: &str, f: &Field) -> Result<u32, ScheduleError> {
    let lower = s.to_ascii_lowercase();
    if let Some(i) = f.names.iter().position(|n| *n == lower) {
        return Ok(i as u32 + f.min);
    }
    let v: u32 = s
        .parse()
        .map_err(|_| ScheduleError::Value(s.to_string(), f.name))?;
    // Sunday may be written 7.
    if f.name == DOW.name && v == 7 {
        return Ok(0);
    }
    if v < f.min || v > f.max {
        return Err(ScheduleError::Range(v, f.min, f.max, f.name));
    }
    Ok(v)
}

/// The bits of one field, and whether it is a star (a `*` or `?` without a step).
fn field(s: &str, f: &Field) -> Result<(u64, bool), ScheduleError> {
    let mut bits = 0u64;
    let mut star = false;
    for part in s.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, st)) => {
                let step: u32 = st
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| ScheduleError::Value(part.to_string(), f.name))?;
                (r, Some(step))
            }
            None => (part, None),
        };
        let (lo, hi) = if range == "*" || range == "?" {
            if step.is_none_or(|s| s == 1) {
                star = true;
            }
            (f.min, f.max)
        } else if let Some((a, b)) = range.split_once('-') {
            (value(a, f)?, value(b, f)?)
        } else {
            let v = value(range, f)?;
            (v, if step.is_some() { f.max } else { v })
        };
        if lo > hi {
            return Err(ScheduleError::Value(part.to_string(), f.name));
        }
        let step = step.unwrap_or(1) as usize;
        for v in (lo..=hi).step_by(step) {
            bits |= 1 << v;
        }
    }
    Ok((bits, star))
}

/// A time zone by IANA name, read from the system's tzdata (UTC needs none).
pub fn time_zone(name: &str) -> Result<TimeZone, ScheduleError> {
    if name.is_empty() || name == "UTC" || name == "Etc/UTC" {
        return Ok(TimeZone::UTC);
    }
    if name.contains("..") || name.starts_with('/') {
        return Err(ScheduleError::TimeZone(name.to_string()));
    }
    let data = std::fs::read(format!("/usr/share/zoneinfo/{name}"))
        .map_err(|_| ScheduleError::TimeZone(name.to_string()))?;
    TimeZone::tzif(name, &data).map_err(|_| ScheduleError::TimeZone(name.to_string()))
}

impl Schedule {
    /// Parses `spec` in `zone` (the CronJob's `timeZone`, empty for UTC); a `CRON_TZ=` prefix
    /// in the schedule wins.
    pub fn parse(spec: &str, zone: &str) -> Result<Schedule, ScheduleError> {
        let mut spec = spec.trim();
        let mut zone = zone.to_string();
        for prefix in ["CRON_TZ=", "TZ="] {
            if let Some(rest) = spec.strip_prefix(prefix) {
                let (z, s) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
                zone = z.to_string();
                spec = s.trim();
            }
        }
        let tz = time_zone(&zone)?;
        let expanded = match spec {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            s => s,
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(ScheduleError::FieldCount(fields.len(), spec.to_string()));
        }
        let (minute, _) = field(fields[0], &MINUTE)?;
        let (hour, _) = field(fields[1], &HOUR)?;
        let (dom, dom_star) = field(fields[2], &DOM)?;
        let (month, _) = field(fields[3], &MONTH)?;
        let (dow, dow_star) = field(fields[4], &DOW)?;
        Ok(Schedule {
            minute,
            hour,
            dom,
            month,
            dow,
            dom_star,
            dow_star,
            tz,
        })
    }

    fn day_matches(&self, dt: DateTime) -> bool {
        let dom = self.dom & (1 << dt.day()) != 0;
        let dow = self.dow & (1 << dt.weekday().to_sunday_zero_offset()) != 0;
        if self.dom_star || self.dow_star {
            dom && dow
        } else {
            dom || dow
        }
    }

    /// The first scheduled time strictly after `after`, within about five years.
    pub fn next(&self, after: Timestamp) -> Option<Timestamp> {
        let start = self.tz.to_datetime(after);
        let mut dt = DateTime::new(
            start.year(),
            start.month(),
            start.day(),
            start.hour(),
            start.minute(),
            0,
            0,
        )
        .ok()?;
        dt = dt
            .checked_add(k8s_openapi::jiff::SignedDuration::from_mins(1))
            .ok()?;
        let limit = start.year() + 5;
        while dt.year() <= limit {
            if self.month & (1 << dt.month()) == 0 {
                dt = dt.first_of_month().date().at(0, 0, 0, 0);
                dt = dt
                    .checked_add(k8s_openapi::jiff::Span::new().months(1))
                    .ok()?;
                continue;
            }
            if !self.day_matches(dt) {
                dt = dt.date().tomorrow().ok()?.at(0, 0, 0, 0);
                continue;
            }
            if self.hour & (1 << dt.hour()) == 0 {
                dt = dt.date().at(dt.hour(), 0, 0, 0);
                dt = dt
                    .checked_add(k8s_openapi::jiff::SignedDuration::from_hours(1))
                    .ok()?;
                continue;
            }
            if self.minute & (1 << dt.minute()) == 0 {
                dt = dt
                    .checked_add(k8s_openapi::jiff::SignedDuration::from_mins(1))
                    .ok()?;
                continue;
            }
            let ts = self.tz.to_ambiguous_timestamp(dt).compatible().ok()?;
            if ts > after {
                return Some(ts);
            }
            dt = dt
                .checked_add(k8s_openapi::jiff::SignedDuration::from_mins(1))
                .ok()?;
        }
        None
    }

    /// The latest scheduled time in `(earliest, now]` and how many there were. The walk is
    /// bounded (a million steps, about two years of every-minute runs); callers bound
    /// `earliest` by `startingDeadlineSeconds` or the last run anyway.
    pub fn most_recent(&self, earliest: Timestamp, now: Timestamp) -> (Option<Timestamp>, u32) {
        let mut last = None;
        let mut n = 0;
        let mut t = earliest;
        while let Some(next) = self.next(t) {
            if next > now {
                break;
            }
            last = Some(next);
            n += 1;
            t = next;
            if n >= 1_000_000 {
                break;
            }
        }
        (last, n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    #[test]
    fn every_minute_and_steps() {
        let s = Schedule::parse("*/1 * * * *", "").expect("parse");
        assert_eq!(
            s.next(ts("2024-01-01T00:00:00Z")),
            Some(ts("2024-01-01T00:01:00Z"))
        );
        assert_eq!(
            s.next(ts("2024-01-01T00:00:30Z")),
            Some(ts("2024-01-01T00:01:00Z"))
        );
        let s = Schedule::parse("*/15 * * * *", "").expect("parse");
        assert_eq!(
            s.next(ts("2024-01-01T00:16:00Z")),
            Some(ts("2024-01-01T00:30:00Z"))
        );
        let s = Schedule::parse("5/20 * * * *", "").expect("parse");
        assert_eq!(
            s.next(ts("2024-01-01T00:26:00Z")),
            Some(ts("2024-01-01T00:45:00Z"))
        );
    }

    #[test]
    fn descriptors_names_and_ranges() {
        let s = Schedule::parse("@hourly", "").expect("parse");
        assert_eq!(
            s.next(ts("2024-01-01T10:00:00Z")),
            Some(ts("2024-01-01T11:00:00Z"))
        );
        let s = Schedule::parse("@monthly", "").expect("parse");
        assert_eq!(
            s.next(ts("2024-01-15T10:00:00Z")),
            Some(ts("2024-02-01T00:00:00Z"))
        );
        // 2024-01-01 is a Monday: the next weekday-morning run after Friday is Monday.
        let s = Schedule::parse("30 9 * * mon-fri", "").expect("parse");
        assert_eq!(
            s.next(ts("2024-01-05T10:00:00Z")),
            Some(ts("2024-01-08T09:30:00Z"))
        );
        let s = Schedule::parse("0 0 29 feb *", "").expect("parse");
        assert_eq!(
            s.next(ts("2024-03-01T00:00:00Z")),
            Some(ts("2028-02-29T00:00:00Z"))
        );
        let s = Schedule::parse("0 12 * * 7", "").expect("parse");
        assert_eq!(
            s.next(ts("2024-01-01T00:00:00Z")),
            Some(ts("2024-01-07T12:00:00Z"))
        );
    }

    #[test]
    fn both_day_fields_restricted_means_either() {
        // The 1st or any Monday.
        let s = Schedule::parse("0 0 1 * mon", "").expect("parse");
        assert_eq!(
            s.next(ts("2024-01-01T00:00:00Z")),
            Some(ts("2024-01-08T00:00:00Z"))
        );
        assert_eq!(
            s.next(ts("2024-01-29T00:00:00Z")),
            Some(ts("2024-02-01T00:00:00Z"))
        );
    }

    #[test]
    fn bad_schedules_are_refused() {
        assert!(matches!(
            Schedule::parse("* * * *", ""),
            Err(ScheduleError::FieldCount(4, _))
        ));
        assert!(Schedule::parse("61 * * * *", "").is_err());
        assert!(Schedule::parse("a * * * *", "").is_err());
        assert!(Schedule::parse("*/0 * * * *", "").is_err());
        assert!(Schedule::parse("5-1 * * * *", "").is_err());
        assert!(Schedule::parse("* * * * *", "Nowhere/Atlantis").is_err());
        assert!(Schedule::parse("* * * * *", "../../etc/passwd").is_err());
    }

    #[test]
    fn time_zones_shift_the_schedule() {
        if !std::path::Path::new("/usr/share/zoneinfo/Asia/Tokyo").exists() {
            return;
        }
        let s = Schedule::parse("0 9 * * *", "Asia/Tokyo").expect("parse");
        assert_eq!(
            s.next(ts("2024-01-01T00:30:00Z")),
            Some(ts("2024-01-02T00:00:00Z"))
        );
        let s = Schedule::parse("CRON_TZ=Asia/Tokyo 0 9 * * *", "").expect("parse");
        assert_eq!(
            s.next(ts("2023-12-31T23:00:00Z")),
            Some(ts("2024-01-01T00:00:00Z"))
        );
    }

    #[test]
    fn most_recent_counts_missed_runs() {
        let s = Schedule::parse("*/10 * * * *", "").expect("parse");
        let (last, n) = s.most_recent(ts("2024-01-01T00:00:00Z"), ts("2024-01-01T00:35:00Z"));
        assert_eq!(last, Some(ts("2024-01-01T00:30:00Z")));
        assert_eq!(n, 3);
        let (last, n) = s.most_recent(ts("2024-01-01T00:31:00Z"), ts("2024-01-01T00:35:00Z"));
        assert_eq!((last, n), (None, 0));
    }
}
