//! The daily line plot: one series of values over days (days since 1970-01-01) on a
//! calendar axis, e.g. the daily mean temperature. Missing values break the line.

use plotters::prelude::*;

use crate::canvas::{render_png, Area, Axes, Frame, SUPERSAMPLE};
use crate::ticks::{date_ticks, nice_ticks};
use crate::PlotError;

/// Figure size, output pixels.
const WIDTH: i32 = 1000;
const HEIGHT: i32 = 500;
/// matplotlib's first colour ("C0").
const LINE_COLOR: RGBColor = RGBColor(31, 119, 180);
/// Line width, supersampled pixels (1.5 output pixels, matplotlib's default).
const LINE_WIDTH: u32 = 3 * SUPERSAMPLE as u32 / 2;
/// Radius of the dot drawn for a value with no present neighbour, supersampled pixels.
const DOT_RADIUS: u32 = 3 * SUPERSAMPLE as u32;

/// Renders `values` over `days` as a line and returns the PNG bytes (1000 x 500 pixels).
///
/// `days` are days since 1970-01-01 in ascending order (equal neighbours are allowed) and
/// are shown on a calendar axis labelled by year, month or day depending on the span.
/// `values[i]` belongs to `days[i]`; a `None`, NaN or infinite value is missing and breaks
/// the line there (an isolated value between two missing ones is drawn as a dot). The y
/// axis is labelled `y_label` and scaled to the values; values of magnitude 1e6 or more
/// (or below 1e-4) are shown divided by a power of ten, written above the axis as matplotlib
/// does ("1e6"). Long titles and labels shrink, then are cut with an ellipsis.
///
/// Errors: `days` and `values` of different lengths, `days` not ascending, nothing to plot
/// (no days, or every value missing).
pub fn daily_line_png(
    title: &str,
    y_label: &str,
    days: &[i32],
    values: &[Option<f64>],
) -> Result<Vec<u8>, PlotError> {
    if days.len() != values.len() {
        return Err(PlotError::LengthMismatch {
            what: format!(
                "days has {} values but values has {}",
                days.len(),
                values.len()
            ),
        });
    }
    if days.is_empty() {
        return Err(PlotError::NothingToPlot(
            "days and values are empty".to_string(),
        ));
    }
    if let Some(index) = days.windows(2).position(|pair| pair[1] < pair[0]) {
        return Err(PlotError::DaysNotAscending {
            index: index + 1,
            previous: days[index],
            next: days[index + 1],
        });
    }
    let points: Vec<Option<f64>> = values
        .iter()
        .map(|value| value.filter(|v| v.is_finite()))
        .collect();
    let (low, high) = points
        .iter()
        .flatten()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(low, high), &v| {
            (low.min(v), high.max(v))
        });
    if low > high {
        return Err(PlotError::NothingToPlot(format!(
            "all {} values are null, NaN or infinite",
            values.len()
        )));
    }

    let exponent = multiplier_exponent(low, high);
    // Two steps, so that neither power of ten overflows or underflows.
    let scaled = |v: f64| v / 10f64.powi(exponent / 2) / 10f64.powi(exponent - exponent / 2);
    let y_range = padded_range(scaled(low), scaled(high));
    let first_day = f64::from(days[0]);
    let last_day = f64::from(days[days.len() - 1]);
    let x_margin = if last_day > first_day {
        (last_day - first_day) * 0.02
    } else {
        1.0
    };
    let x_range = (first_day - x_margin, last_day + x_margin);

    render_png(WIDTH as u32, HEIGHT as u32, |area| {
        let mut axes = Axes {
            title,
            x_label: Some("date"),
            y_label: (!y_label.is_empty()).then_some(y_label),
            x_ticks: Vec::new(),
            y_ticks: nice_ticks(y_range.0, y_range.1, 8),
            y_multiplier: (exponent != 0).then(|| format!("1e{exponent}")),
        };
        let frame = Frame::place(area, (WIDTH, HEIGHT), 0, &axes, x_range, y_range)?;
        // About one tick per 100 pixels: room for "2008-03-05" with space between.
        let max_ticks = (frame.width() / 100).clamp(2, 12) as usize;
        axes.x_ticks = date_ticks(x_range.0, x_range.1, max_ticks);
        frame.draw_grid(area, &axes)?;
        draw_line(area, &frame, days, &points, scaled)?;
        frame.draw_axes(area, &axes)
    })
}

/// The power of ten to divide values by so that tick labels stay short: 0 for magnitudes
/// in [1e-4, 1e6), like matplotlib's default.
fn multiplier_exponent(low: f64, high: f64) -> i32 {
    let magnitude = low.abs().max(high.abs());
    if magnitude >= 1e6 || (magnitude > 0.0 && magnitude < 1e-4) {
        magnitude.log10().floor() as i32
    } else {
        0
    }
}

/// The y range shown for data in [low, high]: 5% of the span more on each side, or a small
/// range around the value when all values are (nearly) equal.
fn padded_range(low: f64, high: f64) -> (f64, f64) {
    let magnitude = low.abs().max(high.abs());
    let span = high - low;
    if span <= magnitude * 1e-9 {
        let centre = low / 2.0 + high / 2.0;
        let half = if centre == 0.0 {
            1.0
        } else {
            centre.abs() * 0.05
        };
        (centre - half, centre + half)
    } else {
        (low - span * 0.05, high + span * 0.05)
    }
}

/// Draws each run of present values as a line, segment by segment (plotters fills a wide
/// multi-point path as one polygon, which leaves holes where a noisy line crosses itself).
/// A run that covers a single pixel is drawn as a dot, or it would not show at all.
fn draw_line(
    area: &Area,
    frame: &Frame,
    days: &[i32],
    points: &[Option<f64>],
    scaled: impl Fn(f64) -> f64,
) -> Result<(), PlotError> {
    let style = ShapeStyle::from(&LINE_COLOR).stroke_width(LINE_WIDTH);
    let mut run: Vec<(i32, i32)> = Vec::new();
    for (day, value) in days.iter().zip(points) {
        match value {
            Some(value) => {
                let point = (frame.x(f64::from(*day)), frame.y(scaled(*value)));
                if run.last() != Some(&point) {
                    run.push(point);
                }
            }
            None => draw_run(area, &mut run, style)?,
        }
    }
    draw_run(area, &mut run, style)
}

/// Draws one run of pixel points and empties it.
fn draw_run(area: &Area, run: &mut Vec<(i32, i32)>, style: ShapeStyle) -> Result<(), PlotError> {
    match run.as_slice() {
        [] => {}
        [point] => area.draw(&Circle::new(*point, DOT_RADIUS, LINE_COLOR.filled()))?,
        _ => {
            for pair in run.windows(2) {
                area.draw(&PathElement::new(vec![pair[0], pair[1]], style))?;
            }
        }
    }
    run.clear();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multiplier_only_for_large_or_tiny_values() {
        assert_eq!(multiplier_exponent(-40.0, 61.7), 0);
        assert_eq!(multiplier_exponent(0.0, 0.0), 0);
        assert_eq!(multiplier_exponent(1.0, 2.5e6), 6);
        assert_eq!(multiplier_exponent(-3e-7, 1e-7), -7);
        assert_eq!(multiplier_exponent(-f64::MAX, f64::MAX), 308);
        assert_eq!(multiplier_exponent(0.0, 5e-324), -324);
    }

    #[test]
    fn padded_range_handles_constant_and_huge_values() {
        assert_eq!(padded_range(0.0, 10.0), (-0.5, 10.5));
        assert_eq!(padded_range(0.0, 0.0), (-1.0, 1.0));
        let (low, high) = padded_range(20.0, 20.0);
        assert!(low < 20.0 && high > 20.0);
        let (low, high) = padded_range(-1.7, 1.7);
        assert!(low.is_finite() && high.is_finite() && low < -1.7 && high > 1.7);
    }
}
