//! NCRONTAB schedules, the six-field cron dialect of the Functions timer trigger
//! (`{second} {minute} {hour} {day} {month} {day-of-week}`), evaluated in UTC.
//!
//! Guarantees: each field accepts `*`, numbers, ranges `a-b`, steps `*/n`, `a-b/n` and `a/n`,
//! and comma lists of those; months and days of the week also accept English three-letter
//! names (`Jan`, `Mon`); day-of-week 7 means Sunday like 0. As in NCrontab, the day-of-month
//! and day-of-week fields must BOTH match (unlike Vixie cron's "either").
//! [`Schedule::next_after`] gives the first occurrence strictly after an instant, or `None`
//! when no date in the next eight years fits (e.g. `0 0 0 30 2 *`).
//!
//! Not supported (refused with an error): five-field expressions, `L`, `W`, `#`, `?`, and the
//! `hh:mm:ss` TimeSpan form (App Service plans only).

use anyhow::{bail, Context};
use time::{Date, Duration, Month, OffsetDateTime, Time};

/// How many fields an NCRONTAB expression with seconds has.
pub const FIELD_COUNT: usize = 6;
/// How far ahead [`Schedule::next_after`] looks before declaring a schedule impossible.
const SEARCH_YEARS: i32 = 8;

const MONTH_NAMES: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const DAY_NAMES: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

/// A parsed schedule: one bit set per allowed value of each field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    expression: String,
    seconds: u64,
    minutes: u64,
    hours: u64,
    days: u64,
    months: u64,
    weekdays: u64,
}

struct FieldSpec {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
    /// The value names start at (1 for months, 0 for days of the week).
    names_base: u32,
}

const FIELDS: [FieldSpec; FIELD_COUNT] = [
    FieldSpec {
        name: "second",
        min: 0,
        max: 59,
        names: &[],
        names_base: 0,
    },
    FieldSpec {
        name: "minute",
        min: 0,
        max: 59,
        names: &[],
        names_base: 0,
    },
    FieldSpec {
        name: "hour",
        min: 0,
        max: 23,
        names: &[],
        names_base: 0,
    },
    FieldSpec {
        name: "day",
        min: 1,
        max: 31,
        names: &[],
        names_base: 0,
    },
    FieldSpec {
        name: "month",
        min: 1,
        max: 12,
        names: &MONTH_NAMES,
        names_base: 1,
    },
    FieldSpec {
        name: "day-of-week",
        min: 0,
        max: 7,
        names: &DAY_NAMES,
        names_base: 0,
    },
];

impl Schedule {
    /// Parses a six-field NCRONTAB expression.
    pub fn parse(expression: &str) -> anyhow::Result<Self> {
        let fields: Vec<&str> = expression.split_whitespace().collect();
        if fields.len() != FIELD_COUNT {
            bail!(
                "NCRONTAB expression {expression:?} has {} fields; the timer trigger needs {FIELD_COUNT} \
                 (second minute hour day month day-of-week)",
                fields.len()
            );
        }
        let mut masks = [0u64; FIELD_COUNT];
        for (index, (text, spec)) in fields.iter().zip(FIELDS.iter()).enumerate() {
            masks[index] = parse_field(text, spec).with_context(|| {
                format!("NCRONTAB {expression:?}, {} field {text:?}", spec.name)
            })?;
        }
        // Day-of-week 7 is Sunday.
        if masks[5] & (1 << 7) != 0 {
            masks[5] = (masks[5] & !(1 << 7)) | 1;
        }
        Ok(Self {
            expression: expression.to_string(),
            seconds: masks[0],
            minutes: masks[1],
            hours: masks[2],
            days: masks[3],
            months: masks[4],
            weekdays: masks[5],
        })
    }

    /// The expression as written.
    pub fn expression(&self) -> &str {
        &self.expression
    }

    /// The first occurrence strictly after `after` (whole seconds, UTC).
    pub fn next_after(&self, after: OffsetDateTime) -> Option<OffsetDateTime> {
        let after = after.to_offset(time::UtcOffset::UTC);
        let mut t = after.replace_nanosecond(0).ok()? + Duration::SECOND;
        let limit_year = after.year() + SEARCH_YEARS;
        while t.year() <= limit_year {
            if !has(self.months, u8::from(t.month()).into()) {
                t = start_of_next_month(t)?;
                continue;
            }
            let weekday = t.weekday().number_days_from_sunday();
            if !has(self.days, t.day().into()) || !has(self.weekdays, weekday.into()) {
                t = t.replace_time(Time::MIDNIGHT) + Duration::DAY;
                continue;
            }
            if !has(self.hours, t.hour().into()) {
                t = t.replace_time(Time::from_hms(t.hour(), 0, 0).ok()?) + Duration::HOUR;
                continue;
            }
            if !has(self.minutes, t.minute().into()) {
                t = t.replace_time(Time::from_hms(t.hour(), t.minute(), 0).ok()?)
                    + Duration::MINUTE;
                continue;
            }
            if !has(self.seconds, t.second().into()) {
                t += Duration::SECOND;
                continue;
            }
            return Some(t);
        }
        None
    }
}

fn has(mask: u64, value: u32) -> bool {
    mask & (1u64 << value) != 0
}

fn start_of_next_month(t: OffsetDateTime) -> Option<OffsetDateTime> {
    let (year, month) = match t.month() {
        Month::December => (t.year() + 1, Month::January),
        m => (t.year(), m.next()),
    };
    let date = Date::from_calendar_date(year, month, 1).ok()?;
    Some(t.replace_date(date).replace_time(Time::MIDNIGHT))
}

fn parse_field(text: &str, spec: &FieldSpec) -> anyhow::Result<u64> {
    let mut mask = 0u64;
    for item in text.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((range, step)) => {
                let step: u32 = step
                    .parse()
                    .with_context(|| format!("step {step:?} is not a number"))?;
                if step == 0 {
                    bail!("step must be positive");
                }
                (range, step)
            }
            None => (item, 1),
        };
        let (low, high) = if range == "*" {
            (spec.min, spec.max)
        } else if let Some((a, b)) = range.split_once('-') {
            (value(a, spec)?, value(b, spec)?)
        } else {
            let a = value(range, spec)?;
            // `a/n` runs from a to the field's maximum; a lone `a` is just a.
            if item.contains('/') {
                (a, spec.max)
            } else {
                (a, a)
            }
        };
        if low > high {
            bail!("range {range:?} runs backwards");
        }
        let mut v = low;
        while v <= high {
            mask |= 1u64 << v;
            v += step;
        }
    }
    Ok(mask)
}

fn value(text: &str, spec: &FieldSpec) -> anyhow::Result<u32> {
    let lower = text.to_ascii_lowercase();
    let parsed = match spec.names.iter().position(|n| *n == lower) {
        Some(index) => index as u32 + spec.names_base,
        None => text.parse::<u32>().with_context(|| {
            format!("{text:?} is not a number (L, W, # and ? are not supported)")
        })?,
    };
    if parsed < spec.min || parsed > spec.max {
        bail!("{parsed} is outside {}..={}", spec.min, spec.max);
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn next(expr: &str, after: OffsetDateTime) -> OffsetDateTime {
        Schedule::parse(expr).unwrap().next_after(after).unwrap()
    }

    #[test]
    fn every_minute_and_every_five_seconds() {
        let t = datetime!(2024-05-01 10:00:30.5 UTC);
        assert_eq!(next("0 */1 * * * *", t), datetime!(2024-05-01 10:01:00 UTC));
        assert_eq!(next("*/5 * * * * *", t), datetime!(2024-05-01 10:00:35 UTC));
        assert_eq!(next("* * * * * *", t), datetime!(2024-05-01 10:00:31 UTC));
    }

    #[test]
    fn lists_ranges_and_names() {
        let t = datetime!(2024-05-01 10:00:00 UTC); // a Wednesday
        assert_eq!(
            next("0 30 9,17 * * *", t),
            datetime!(2024-05-01 17:30:00 UTC)
        );
        assert_eq!(next("0 0 0 * * Sat", t), datetime!(2024-05-04 00:00:00 UTC));
        assert_eq!(next("0 0 0 * * 7", t), datetime!(2024-05-05 00:00:00 UTC));
        assert_eq!(
            next("0 0 12 1 Jan-Mar *", t),
            datetime!(2025-01-01 12:00:00 UTC)
        );
        assert_eq!(
            next("0 0 8-10/2 * * *", t),
            datetime!(2024-05-02 08:00:00 UTC)
        );
    }

    #[test]
    fn day_of_month_and_weekday_must_both_match() {
        // The next 13th that is a Friday after 2024-05-01 is 2024-09-13.
        let t = datetime!(2024-05-01 00:00:00 UTC);
        assert_eq!(next("0 0 0 13 * 5", t), datetime!(2024-09-13 00:00:00 UTC));
    }

    #[test]
    fn impossible_and_malformed_schedules() {
        let s = Schedule::parse("0 0 0 30 2 *").unwrap();
        assert_eq!(s.next_after(datetime!(2024-01-01 0:00 UTC)), None);
        assert!(Schedule::parse("0 * * * *").is_err());
        assert!(Schedule::parse("61 * * * * *").is_err());
        assert!(Schedule::parse("0 0 0 L * *").is_err());
        assert!(Schedule::parse("*/0 * * * * *").is_err());
        assert!(Schedule::parse("00:05:00").is_err());
    }
}
