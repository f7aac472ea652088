//! The station scatter: positions (longitude across, latitude up) coloured by year, with a
//! legend when there are few years and a colour bar when there are many.

use plotters::prelude::*;

use crate::canvas::{
    draw_text, draw_text_upwards, fill_rect, px, render_png, text_height, text_width, tick_text,
    Align, Area, Axes, Frame, Line, LABEL_TEXT, MARGIN, SUPERSAMPLE, TEXT_COLOR, TICK_TEXT,
};
use crate::ticks::{integer_ticks, nice_ticks, Tick};
use crate::PlotError;

/// Figure size, output pixels.
const WIDTH: i32 = 1000;
const HEIGHT: i32 = 560;
/// Space between the frame and the legend or colour bar, output pixels.
const PANEL_GAP: i32 = 22;
/// Width of the colour bar, output pixels.
const BAR_WIDTH: i32 = 18;
/// Marker radius, supersampled pixels (3 output pixels, about matplotlib's default size).
const MARKER_RADIUS: u32 = 3 * SUPERSAMPLE as u32;
/// Up to this many distinct years get a legend with one colour each; more get a colour bar.
const MAX_LEGEND_YEARS: usize = 10;
/// matplotlib's "tab10" colours, for the legend.
const TAB10: [RGBColor; MAX_LEGEND_YEARS] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];
const LEGEND_BORDER: RGBColor = RGBColor(204, 204, 204);

/// Renders station positions as a scatter and returns the PNG bytes (1000 x 560 pixels):
/// `longitude[i]` across, `latitude[i]` up, the point coloured by `year[i]`. Up to 10
/// distinct years get a legend with one colour per year, more get a colour bar (viridis).
///
/// Points whose longitude is outside [-180, 180] or latitude outside [-90, 90] (or NaN or
/// infinite) are dropped: real ISD data marks unknown longitudes as 999.999. The axes span
/// the remaining points, within those bounds.
///
/// Errors: inputs of different lengths, nothing to plot (no points, or none valid).
pub fn scatter_by_year_png(
    title: &str,
    longitude: &[f64],
    latitude: &[f64],
    year: &[i32],
) -> Result<Vec<u8>, PlotError> {
    if longitude.len() != latitude.len() || latitude.len() != year.len() {
        return Err(PlotError::LengthMismatch {
            what: format!(
                "longitude has {} values, latitude {} and year {}",
                longitude.len(),
                latitude.len(),
                year.len()
            ),
        });
    }
    if longitude.is_empty() {
        return Err(PlotError::NothingToPlot(
            "no station positions given".to_string(),
        ));
    }
    let valid: Vec<usize> = (0..longitude.len())
        .filter(|&i| {
            (-180.0..=180.0).contains(&longitude[i]) && (-90.0..=90.0).contains(&latitude[i])
        })
        .collect();
    if valid.is_empty() {
        return Err(PlotError::NothingToPlot(format!(
            "none of the {} station positions has a longitude in [-180, 180] and a latitude in [-90, 90]",
            longitude.len()
        )));
    }
    let x_range = degree_range(valid.iter().map(|&i| longitude[i]), 180.0);
    let y_range = degree_range(valid.iter().map(|&i| latitude[i]), 90.0);
    let mut years: Vec<i32> = valid.iter().map(|&i| year[i]).collect();
    years.sort_unstable();
    years.dedup();
    let colours = YearColours::new(years);

    render_png(WIDTH as u32, HEIGHT as u32, |area| {
        let axes = Axes {
            title,
            x_label: Some("Longitude"),
            y_label: Some("Latitude"),
            x_ticks: degree_ticks(x_range, 9, "E", "W"),
            y_ticks: degree_ticks(y_range, 7, "N", "S"),
            y_multiplier: None,
        };
        let panel = match &colours {
            YearColours::Legend(years) => legend_width(area, years)?,
            YearColours::Bar { first, last } => colour_bar_width(area, *first, *last)?,
        };
        let right_reserved = px(PANEL_GAP + MARGIN) / SUPERSAMPLE + panel / SUPERSAMPLE + 1;
        let frame = Frame::place(
            area,
            (WIDTH, HEIGHT),
            right_reserved,
            &axes,
            x_range,
            y_range,
        )?;
        frame.draw_grid(area, &axes)?;
        for &i in &valid {
            let centre = (frame.x(longitude[i]), frame.y(latitude[i]));
            let colour = colours.of(year[i]);
            area.draw(&Circle::new(centre, MARKER_RADIUS, colour.filled()))?;
        }
        frame.draw_axes(area, &axes)?;
        match &colours {
            YearColours::Legend(years) => draw_legend(area, &frame, years),
            YearColours::Bar { first, last } => draw_colour_bar(area, &frame, *first, *last),
        }
    })
}

/// The range of `values` (finite, within ±`limit`) plus 5% each side, at least a degree
/// wide, clipped to ±`limit`.
fn degree_range(values: impl Iterator<Item = f64>, limit: f64) -> (f64, f64) {
    let (low, high) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(low, high), v| {
        (low.min(v), high.max(v))
    });
    let margin = ((high - low) * 0.05).max(1.0);
    ((low - margin).max(-limit), (high + margin).min(limit))
}

/// Round degree ticks labelled like a map ("120°W", "0°", "45°N"), at most `max_ticks`
/// of them. Steps of a degree or more are the map grid's 1, 2, 5, 10, 15, 30, 45, 60 or 90
/// degrees.
fn degree_ticks(range: (f64, f64), max_ticks: usize, positive: &str, negative: &str) -> Vec<Tick> {
    let grid_step = [1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 45.0, 60.0, 90.0]
        .into_iter()
        .map(|step| {
            (
                (range.0 / step).ceil() as i32,
                (range.1 / step).floor() as i32,
                step,
            )
        })
        .find(|(first, last, _)| last - first < max_ticks as i32);
    let ticks = match grid_step {
        // Small ranges would get too few ticks on the map grid.
        Some((first, last, step)) if range.1 - range.0 >= 10.0 => (first..=last)
            .map(|i| (f64::from(i) * step, (f64::from(i) * step).to_string()))
            .collect(),
        _ => nice_ticks(range.0, range.1, max_ticks),
    };
    ticks
        .into_iter()
        .map(|(value, label)| {
            let label = match label.strip_prefix('-') {
                Some(magnitude) => format!("{magnitude}°{negative}"),
                None if value == 0.0 => format!("{label}°"),
                None => format!("{label}°{positive}"),
            };
            (value, label)
        })
        .collect()
}

/// How years map to colours.
enum YearColours {
    /// One tab10 colour per year (sorted, distinct).
    Legend(Vec<i32>),
    /// Viridis from the first year to the last.
    Bar { first: i32, last: i32 },
}

impl YearColours {
    fn new(years: Vec<i32>) -> Self {
        if years.len() <= MAX_LEGEND_YEARS {
            YearColours::Legend(years)
        } else {
            let (first, last) = (years[0], years[years.len() - 1]);
            YearColours::Bar { first, last }
        }
    }

    fn of(&self, year: i32) -> RGBColor {
        match self {
            YearColours::Legend(years) => {
                let index = years.binary_search(&year).unwrap_or(0);
                TAB10[index % TAB10.len()]
            }
            YearColours::Bar { first, last } => viridis(fraction(year, *first, *last)),
        }
    }
}

/// matplotlib's viridis colour map at `t` in [0, 1] (linear between nine of its colours).
fn viridis(t: f64) -> RGBColor {
    const STOPS: [(u8, u8, u8); 9] = [
        (68, 1, 84),
        (72, 40, 120),
        (62, 73, 137),
        (49, 104, 142),
        (38, 130, 142),
        (31, 158, 137),
        (53, 183, 121),
        (110, 206, 88),
        (253, 231, 37),
    ];
    let position = t.clamp(0.0, 1.0) * (STOPS.len() - 1) as f64;
    let index = (position.floor() as usize).min(STOPS.len() - 2);
    let weight = position - index as f64;
    let (from, to) = (STOPS[index], STOPS[index + 1]);
    let mix = |a: u8, b: u8| (f64::from(a) + (f64::from(b) - f64::from(a)) * weight).round() as u8;
    RGBColor(mix(from.0, to.0), mix(from.1, to.1), mix(from.2, to.2))
}

/// Where `year` lies from `first` (0) to `last` (1).
fn fraction(year: i32, first: i32, last: i32) -> f64 {
    if last <= first {
        return 0.0;
    }
    let t = (f64::from(year) - f64::from(first)) / (f64::from(last) - f64::from(first));
    t.clamp(0.0, 1.0)
}

/// A framed legend right of the plot: "Year", then a marker and the year for each year.
fn draw_legend(area: &Area, frame: &Frame, years: &[i32]) -> Result<(), PlotError> {
    let row = px(22);
    let left = frame.right + 1 + px(PANEL_GAP);
    let top = frame.top;
    let width = legend_width(area, years)?;
    let height = px(10) + row * (years.len() as i32 + 1);
    let line = SUPERSAMPLE;
    fill_rect(
        area,
        (left, top),
        (left + width, top + line),
        &LEGEND_BORDER,
    )?;
    fill_rect(
        area,
        (left, top + height - line),
        (left + width, top + height),
        &LEGEND_BORDER,
    )?;
    fill_rect(
        area,
        (left, top),
        (left + line, top + height),
        &LEGEND_BORDER,
    )?;
    fill_rect(
        area,
        (left + width - line, top),
        (left + width, top + height),
        &LEGEND_BORDER,
    )?;

    let first_row_middle = top + px(5) + row / 2;
    draw_text(
        area,
        "Year",
        LABEL_TEXT,
        (left + width / 2, first_row_middle),
        Align::Center,
        Line::Middle,
        &TEXT_COLOR,
    )?;
    for (index, year) in years.iter().enumerate() {
        let middle = first_row_middle + row * (index as i32 + 1);
        let colour = TAB10[index % TAB10.len()];
        area.draw(&Circle::new(
            (left + px(16), middle),
            MARKER_RADIUS,
            colour.filled(),
        ))?;
        draw_text(
            area,
            &year.to_string(),
            TICK_TEXT,
            (left + px(28), middle),
            Align::Left,
            Line::Middle,
            &TEXT_COLOR,
        )?;
    }
    Ok(())
}

/// Width of the legend box, supersampled pixels.
fn legend_width(area: &Area, years: &[i32]) -> Result<i32, PlotError> {
    let mut widest = text_width(area, "Year", LABEL_TEXT)?;
    for year in years {
        let label = tick_text(&year.to_string());
        widest = widest.max(px(22) + text_width(area, &label, TICK_TEXT)?);
    }
    Ok(widest + px(20))
}

/// The colour bar's year ticks.
fn colour_bar_ticks(first: i32, last: i32) -> Vec<(i64, String)> {
    integer_ticks(i64::from(first), i64::from(last), 6)
        .into_iter()
        .map(|(year, label)| (year, tick_text(&label)))
        .collect()
}

/// Width of the colour bar with its tick labels and "Year", supersampled pixels.
fn colour_bar_width(area: &Area, first: i32, last: i32) -> Result<i32, PlotError> {
    let mut widest = 0;
    for (_, label) in colour_bar_ticks(first, last) {
        widest = widest.max(text_width(area, &label, TICK_TEXT)?);
    }
    Ok(px(BAR_WIDTH + 1 + 8) + widest + px(8 + text_height(LABEL_TEXT)))
}

/// A vertical viridis bar as tall as the plot, year ticks at its right and "Year" beside.
fn draw_colour_bar(area: &Area, frame: &Frame, first: i32, last: i32) -> Result<(), PlotError> {
    let left = frame.right + 1 + px(PANEL_GAP);
    let right = left + px(BAR_WIDTH);
    let (top, bottom) = (frame.top, frame.bottom + 1);
    let height = f64::from(bottom - top);
    for y in top..bottom {
        let t = f64::from(bottom - 1 - y) / (height - 1.0).max(1.0);
        fill_rect(area, (left, y), (right, y + 1), &viridis(t))?;
    }
    let line = SUPERSAMPLE;
    fill_rect(
        area,
        (left - line, top - line),
        (right + line, top),
        &TEXT_COLOR,
    )?;
    fill_rect(
        area,
        (left - line, bottom),
        (right + line, bottom + line),
        &TEXT_COLOR,
    )?;
    fill_rect(area, (left - line, top), (left, bottom), &TEXT_COLOR)?;
    fill_rect(area, (right, top), (right + line, bottom), &TEXT_COLOR)?;

    let mut widest = 0;
    for (year, label) in colour_bar_ticks(first, last) {
        let t = fraction(i32::try_from(year).unwrap_or(last), first, last);
        let y = bottom - line - (t * (height - f64::from(line))).round() as i32;
        let y = y - y.rem_euclid(SUPERSAMPLE);
        fill_rect(
            area,
            (right + line, y),
            (right + line + px(4), y + line),
            &TEXT_COLOR,
        )?;
        draw_text(
            area,
            &label,
            TICK_TEXT,
            (right + line + px(8), y + line / 2),
            Align::Left,
            Line::Middle,
            &TEXT_COLOR,
        )?;
        widest = widest.max(text_width(area, &label, TICK_TEXT)?);
    }
    let label_left = right + line + px(8) + widest + px(8);
    draw_text_upwards(area, "Year", LABEL_TEXT, (label_left, (top + bottom) / 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn degree_ticks_read_like_a_map() {
        let labels: Vec<String> = degree_ticks((-180.0, 180.0), 9, "E", "W")
            .into_iter()
            .map(|t| t.1)
            .collect();
        assert_eq!(
            labels,
            ["180°W", "135°W", "90°W", "45°W", "0°", "45°E", "90°E", "135°E", "180°E"]
        );
        let labels: Vec<String> = degree_ticks((-2.5, 1.2), 7, "N", "S")
            .into_iter()
            .map(|t| t.1)
            .collect();
        assert_eq!(labels, ["2°S", "1°S", "0°", "1°N"]);
        let labels: Vec<String> = degree_ticks((9.0, 9.5), 7, "N", "S")
            .into_iter()
            .map(|t| t.1)
            .collect();
        assert_eq!(
            labels,
            ["9.0°N", "9.1°N", "9.2°N", "9.3°N", "9.4°N", "9.5°N"]
        );
    }

    #[test]
    fn ranges_stay_inside_the_globe() {
        assert_eq!(
            degree_range([-179.0, 179.0].into_iter(), 180.0),
            (-180.0, 180.0)
        );
        assert_eq!(degree_range([90.0].into_iter(), 90.0), (89.0, 90.0));
    }

    #[test]
    fn year_colours() {
        let legend = YearColours::new(vec![2008, 2009]);
        assert_eq!(legend.of(2009), TAB10[1]);
        let bar = YearColours::new((2000..2020).collect());
        assert_eq!(bar.of(2000), viridis(0.0));
        assert_eq!(bar.of(2019), viridis(1.0));
        assert_eq!(fraction(5, 5, 5), 0.0);
        assert_eq!(fraction(i32::MAX, i32::MIN, i32::MAX), 1.0);
    }
}
