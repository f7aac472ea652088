//! Where axis ticks go and how they are labelled: "nice" numeric ticks (steps of 1, 2, 2.5
//! or 5 times a power of ten), integer ticks (years on a colour bar), and calendar ticks for
//! a date axis (days, months or years, whichever fits), plus the proleptic Gregorian
//! calendar arithmetic they need. Pure functions, no drawing.

/// One tick: its position on the axis (in data units) and its label.
pub(crate) type Tick = (f64, String);

/// Ticks inside `[low, high]` at the smallest round step (1, 2, 2.5 or 5 times a power of
/// ten) that gives at most `max_ticks` of them. `low < high` must both be finite with a
/// finite difference; otherwise no ticks.
pub(crate) fn nice_ticks(low: f64, high: f64, max_ticks: usize) -> Vec<Tick> {
    let span = high - low;
    if !(span.is_finite() && span > 0.0) {
        return Vec::new();
    }
    let max_ticks = max_ticks.max(2);
    let exponent = (span / max_ticks as f64).log10().floor();
    for exponent in [exponent, exponent + 1.0] {
        let magnitude = 10f64.powf(exponent);
        for mantissa in [1.0, 2.0, 2.5, 5.0] {
            let step = mantissa * magnitude;
            let (first, last) = ((low / step).ceil(), (high / step).floor());
            if !(first.is_finite() && last.is_finite()) || last - first + 1.0 > max_ticks as f64 {
                continue;
            }
            let mut decimals = (-exponent).max(0.0) as usize;
            if mantissa == 2.5 && exponent <= 0.0 {
                decimals += 1;
            }
            let mut ticks = Vec::new();
            let mut index = first;
            while index <= last {
                let value = index * step;
                ticks.push((value, format_decimal(value, decimals)));
                index += 1.0;
            }
            return ticks;
        }
    }
    Vec::new()
}

/// `value` with `decimals` digits after the point, never "-0".
fn format_decimal(value: f64, decimals: usize) -> String {
    let text = format!("{value:.decimals$}");
    if text.starts_with('-') && text[1..].chars().all(|c| c == '0' || c == '.') {
        text[1..].to_string()
    } else {
        text
    }
}

/// Integer ticks inside `[low, high]` (e.g. years) at a step of 1, 2 or 5 times a power of
/// ten, about `target` of them; a single tick when `low == high`.
pub(crate) fn integer_ticks(low: i64, high: i64, target: u64) -> Vec<(i64, String)> {
    if high < low {
        return Vec::new();
    }
    let span = high.abs_diff(low);
    let mut step: u64 = 1;
    'search: for power in 0..19 {
        let base = 10u64.pow(power);
        for mantissa in [1, 2, 5] {
            step = base * mantissa;
            if span / step < target.max(1) {
                break 'search;
            }
        }
    }
    let step = i64::try_from(step).unwrap_or(i64::MAX);
    let first = if low.rem_euclid(step) == 0 {
        low
    } else {
        low.saturating_add(step - low.rem_euclid(step))
    };
    let mut ticks = Vec::new();
    let mut value = first;
    while value <= high && ticks.len() <= target as usize * 3 {
        ticks.push((value, value.to_string()));
        match value.checked_add(step) {
            Some(next) => value = next,
            None => break,
        }
    }
    ticks
}

/// A calendar step between date ticks.
#[derive(Clone, Copy, Debug, PartialEq)]
enum DateStep {
    Days(u32),
    Months(u32),
    Years(i64),
}

impl DateStep {
    fn approx_days(self) -> f64 {
        match self {
            DateStep::Days(n) => f64::from(n),
            DateStep::Months(n) => 30.44 * f64::from(n),
            DateStep::Years(n) => 365.2425 * n as f64,
        }
    }
}

/// Calendar ticks between day numbers `low` and `high` (days since 1970-01-01, finite): the
/// finest of every 1/2/3/7/14 days, 1/2/3/4/6 months or 1/2/5/10/20/50... years that puts
/// at most `max_ticks` ticks there. Labels are ISO: "2008", "2008-03" or "2008-03-05".
pub(crate) fn date_ticks(low: f64, high: f64, max_ticks: usize) -> Vec<Tick> {
    let max_ticks = max_ticks.max(2);
    let (low, high) = (low.ceil() as i64, high.floor() as i64);
    if high < low {
        return Vec::new();
    }
    let span = (high - low) as f64;
    let fixed = [
        DateStep::Days(1),
        DateStep::Days(2),
        DateStep::Days(3),
        DateStep::Days(7),
        DateStep::Days(14),
        DateStep::Months(1),
        DateStep::Months(2),
        DateStep::Months(3),
        DateStep::Months(4),
        DateStep::Months(6),
    ];
    let years = (0..19).flat_map(|power| [1, 2, 5].map(|m| DateStep::Years(m * 10i64.pow(power))));
    for step in fixed.into_iter().chain(years) {
        if span / step.approx_days() + 1.0 > (max_ticks + 1) as f64 {
            continue;
        }
        let ticks = step_ticks(step, low, high);
        if ticks.len() <= max_ticks {
            return ticks;
        }
    }
    Vec::new()
}

/// The ticks of `step` between days `low` and `high` (inclusive). Callers only ask for steps
/// that give a handful of ticks, so the loops are short.
fn step_ticks(step: DateStep, low: i64, high: i64) -> Vec<Tick> {
    let mut ticks = Vec::new();
    match step {
        DateStep::Days(n) => {
            for day in low..=high {
                let (year, month, day_of_month) = civil_from_days(day);
                let on_tick = match n {
                    1 => true,
                    // Odd days up to the 29th: never two ticks a day apart at a month's end.
                    2 => day_of_month % 2 == 1 && day_of_month <= 29,
                    3 => day_of_month % 3 == 1 && day_of_month <= 28,
                    7 => matches!(day_of_month, 1 | 8 | 15 | 22),
                    _ => matches!(day_of_month, 1 | 15),
                };
                if on_tick {
                    ticks.push((day as f64, format!("{year}-{month:02}-{day_of_month:02}")));
                }
            }
        }
        DateStep::Months(n) => {
            let (mut year, mut month, _) = civil_from_days(low);
            loop {
                let day = days_from_civil(year, month, 1);
                if day > high {
                    break;
                }
                if day >= low && (month - 1) % n == 0 {
                    ticks.push((day as f64, format!("{year}-{month:02}")));
                }
                if month == 12 {
                    year += 1;
                    month = 1;
                } else {
                    month += 1;
                }
            }
        }
        DateStep::Years(n) => {
            let (low_year, _, _) = civil_from_days(low);
            let (high_year, _, _) = civil_from_days(high);
            let mut year = low_year + (n - low_year.rem_euclid(n)) % n;
            while year <= high_year {
                let day = days_from_civil(year, 1, 1);
                if day >= low && day <= high {
                    ticks.push((day as f64, year.to_string()));
                }
                year += n;
            }
        }
    }
    ticks
}

/// (year, month 1-12, day 1-31) of a day number (days since 1970-01-01), proleptic
/// Gregorian calendar.
pub(crate) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    // Count from 0000-03-01 so that the leap day ends each 400-year era's years.
    let shifted = days + 719_468;
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_from_march + 2) / 5 + 1) as u32;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Day number (days since 1970-01-01) of a proleptic Gregorian date.
pub(crate) fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400);
    let month_from_march = i64::from((month + 9) % 12);
    let day_of_year = (153 * month_from_march + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar_round_trips_and_known_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(days_from_civil(2008, 1, 1), 13_879);
        assert_eq!(civil_from_days(days_from_civil(2000, 2, 29)), (2000, 2, 29));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        for day in (-800_000..800_000).step_by(997) {
            let (y, m, d) = civil_from_days(day);
            assert_eq!(days_from_civil(y, m, d), day, "{y}-{m}-{d}");
        }
        let (y, m, d) = civil_from_days(i64::from(i32::MIN));
        assert_eq!(days_from_civil(y, m, d), i64::from(i32::MIN));
    }

    #[test]
    fn nice_ticks_pick_round_steps() {
        let labels: Vec<String> = nice_ticks(-1.3, 31.7, 8).into_iter().map(|t| t.1).collect();
        assert_eq!(labels, ["0", "5", "10", "15", "20", "25", "30"]);
        let labels: Vec<String> = nice_ticks(-0.26, 0.26, 4)
            .into_iter()
            .map(|t| t.1)
            .collect();
        assert_eq!(labels, ["-0.2", "0.0", "0.2"]);
        let labels: Vec<String> = nice_ticks(0.0, 1.0, 5).into_iter().map(|t| t.1).collect();
        assert_eq!(labels, ["0.00", "0.25", "0.50", "0.75", "1.00"]);
        assert!(nice_ticks(1.0, 1.0, 5).is_empty());
        assert!(nice_ticks(f64::NAN, 1.0, 5).is_empty());
        assert!(nice_ticks(-f64::MAX, f64::MAX, 5).is_empty());
    }

    #[test]
    fn integer_ticks_for_years() {
        let years: Vec<i64> = integer_ticks(2008, 2019, 6)
            .into_iter()
            .map(|t| t.0)
            .collect();
        assert_eq!(years, [2008, 2010, 2012, 2014, 2016, 2018]);
        assert_eq!(integer_ticks(2019, 2019, 6), [(2019, "2019".to_string())]);
        assert!(integer_ticks(i64::from(i32::MIN), i64::from(i32::MAX), 6).len() <= 18);
    }

    #[test]
    fn date_ticks_choose_the_calendar_unit_by_span() {
        let first = days_from_civil(2008, 1, 1) as f64;
        let twelve_years = date_ticks(first, days_from_civil(2019, 12, 31) as f64, 9);
        let labels: Vec<&str> = twelve_years.iter().map(|t| t.1.as_str()).collect();
        assert_eq!(labels, ["2008", "2010", "2012", "2014", "2016", "2018"]);

        let one_year = date_ticks(first, first + 365.0, 9);
        let labels: Vec<&str> = one_year.iter().map(|t| t.1.as_str()).collect();
        assert_eq!(
            labels,
            ["2008-01", "2008-03", "2008-05", "2008-07", "2008-09", "2008-11"]
        );

        let month = date_ticks(first, first + 30.0, 9);
        assert_eq!(month[0].1, "2008-01-01");
        assert!(month.len() >= 4 && month.len() <= 9);

        let huge = date_ticks(f64::from(i32::MIN), f64::from(i32::MAX), 9);
        assert!(!huge.is_empty() && huge.len() <= 9);
    }
}
