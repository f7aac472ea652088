//! The drawing surface every plot renders on, and the figure parts all plots share.
//!
//! - The surface: registers the embedded font once, draws into an in-memory RGB buffer at
//!   [`SUPERSAMPLE`] times the output size (plotters' bitmap backend does not anti-alias
//!   lines), averages it down and encodes the PNG in memory.
//! - Text placed by its visible edges (cap top, middle, baseline), because plotters'
//!   ab_glyph text anchors do not line up with the glyphs' ink.
//! - The axes of a figure, in the style of matplotlib's defaults: title, a frame with
//!   outward ticks, tick labels, axis labels, a light grid under the data.
//!
//! Sizes named in output pixels are multiplied by [`SUPERSAMPLE`] when drawn; the frame and
//! grid lines are kept on whole output pixels so they stay crisp after the averaging.

use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{register_font, FontStyle, FontTransform};

use crate::ticks::Tick;
use crate::PlotError;

/// Everything is drawn at this multiple of the output size, then averaged down.
pub(crate) const SUPERSAMPLE: i32 = 2;

const FONT_FAMILY: &str = "sans-serif";
static DEJAVU_SANS: &[u8] = include_bytes!("../fonts/DejaVuSans.ttf");

// DejaVu Sans metrics as fractions of plotters' font size (ab_glyph's scale is the
// ascender-to-descender height: 1901 + 483 = 2384 font units).
const CAP_HEIGHT: f64 = 1493.0 / 2384.0;
const DESCENT: f64 = 483.0 / 2384.0;
/// How far below the anchor of top-anchored text plotters' ab_glyph code puts the baseline.
const BASELINE_BELOW_ANCHOR: f64 = 0.5;

/// Text sizes (plotters font size, output pixels): close to matplotlib's 10 pt tick and
/// axis labels and 12 pt title at 100 dpi.
pub(crate) const TICK_TEXT: f64 = 16.0;
pub(crate) const LABEL_TEXT: f64 = 17.0;
pub(crate) const TITLE_TEXT: f64 = 20.0;
/// Smallest size long titles and labels shrink to before they are cut with an ellipsis.
const MIN_TEXT: f64 = 11.0;

/// Figure spacing, output pixels.
pub(crate) const MARGIN: i32 = 12;
const TICK_LENGTH: i32 = 5;
const TICK_PAD: i32 = 5;
const LABEL_PAD: i32 = 7;
const TITLE_PAD: i32 = 10;
/// Room right of the frame for half of a tick label centred on the frame's right edge.
const RIGHT_ROOM: i32 = 36;

pub(crate) const TEXT_COLOR: RGBColor = RGBColor(0, 0, 0);
const GRID_COLOR: RGBColor = RGBColor(222, 222, 222);

/// The supersampled drawing area of one figure.
pub(crate) type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;

/// Registers the embedded DejaVu Sans as plotters' "sans-serif" the first time it is called.
fn register_embedded_font() -> Result<(), PlotError> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let registered = *REGISTERED
        .get_or_init(|| register_font(FONT_FAMILY, FontStyle::Normal, DEJAVU_SANS).is_ok());
    if registered {
        Ok(())
    } else {
        Err(PlotError::Font(
            "fonts/DejaVuSans.ttf is not a font ab_glyph can read".to_string(),
        ))
    }
}

/// Renders a `width` x `height` figure with `draw` (on a white, supersampled area) and
/// returns it as PNG bytes.
pub(crate) fn render_png(
    width: u32,
    height: u32,
    draw: impl FnOnce(&Area) -> Result<(), PlotError>,
) -> Result<Vec<u8>, PlotError> {
    register_embedded_font()?;
    let scale = SUPERSAMPLE as u32;
    let (big_width, big_height) = (width * scale, height * scale);
    let mut big = vec![255u8; big_width as usize * big_height as usize * 3];
    {
        let area =
            BitMapBackend::with_buffer(&mut big, (big_width, big_height)).into_drawing_area();
        draw(&area)?;
        area.present()?;
    }
    encode_png(&downsample(&big, width, height), width, height)
}

/// Averages each SUPERSAMPLE x SUPERSAMPLE block of the RGB image `big` into one pixel.
fn downsample(big: &[u8], width: u32, height: u32) -> Vec<u8> {
    let scale = SUPERSAMPLE as usize;
    let (width, height) = (width as usize, height as usize);
    let big_row = width * scale * 3;
    let mut small = vec![0u8; width * height * 3];
    let block = (scale * scale) as u32;
    for y in 0..height {
        for x in 0..width {
            for channel in 0..3 {
                let mut sum = 0u32;
                for dy in 0..scale {
                    let row = (y * scale + dy) * big_row;
                    for dx in 0..scale {
                        sum += u32::from(big[row + (x * scale + dx) * 3 + channel]);
                    }
                }
                small[(y * width + x) * 3 + channel] = ((sum + block / 2) / block) as u8;
            }
        }
    }
    small
}

fn encode_png(rgb: &[u8], width: u32, height: u32) -> Result<Vec<u8>, PlotError> {
    let mut bytes = Vec::with_capacity(64 * 1024);
    let mut encoder = png::Encoder::new(&mut bytes, width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder
        .write_header()
        .map_err(|e| PlotError::Encode(e.to_string()))?;
    writer
        .write_image_data(rgb)
        .map_err(|e| PlotError::Encode(e.to_string()))?;
    writer
        .finish()
        .map_err(|e| PlotError::Encode(e.to_string()))?;
    Ok(bytes)
}

/// Output pixels to supersampled pixels.
pub(crate) fn px(output_pixels: i32) -> i32 {
    output_pixels * SUPERSAMPLE
}

fn font_style(size: f64, color: &RGBColor) -> TextStyle<'static> {
    (FONT_FAMILY, size * f64::from(SUPERSAMPLE))
        .into_font()
        .color(color)
}

/// Width of `text` at `size`, supersampled pixels.
pub(crate) fn text_width(area: &Area, text: &str, size: f64) -> Result<i32, PlotError> {
    let (width, _) = area.estimate_text_size(text, &font_style(size, &TEXT_COLOR))?;
    Ok(i32::try_from(width).unwrap_or(i32::MAX))
}

/// Height of a line of text at `size` from cap top to descender bottom, output pixels.
pub(crate) fn text_height(size: f64) -> i32 {
    ((CAP_HEIGHT + DESCENT) * size).ceil() as i32
}

/// Which visible line of the text a y coordinate refers to.
#[derive(Clone, Copy)]
pub(crate) enum Line {
    /// The top of capital letters.
    CapTop,
    /// Halfway up the capital letters.
    Middle,
}

/// Which point of the text an x coordinate refers to.
#[derive(Clone, Copy)]
pub(crate) enum Align {
    Left,
    Center,
    Right,
}

/// Draws horizontal `text` at `size` (output pixels) with its `align` point at x and its
/// `line` at y (supersampled pixels).
pub(crate) fn draw_text(
    area: &Area,
    text: &str,
    size: f64,
    (x, y): (i32, i32),
    align: Align,
    line: Line,
    color: &RGBColor,
) -> Result<(), PlotError> {
    let font_size = size * f64::from(SUPERSAMPLE);
    let baseline_below_y = match line {
        Line::CapTop => CAP_HEIGHT * font_size,
        Line::Middle => CAP_HEIGHT * font_size / 2.0,
    };
    let anchor_y = f64::from(y) + baseline_below_y - BASELINE_BELOW_ANCHOR * font_size;
    let h_pos = match align {
        Align::Left => HPos::Left,
        Align::Center => HPos::Center,
        Align::Right => HPos::Right,
    };
    let style = font_style(size, color).pos(Pos::new(h_pos, VPos::Top));
    area.draw_text(text, &style, (x, anchor_y.round() as i32))?;
    Ok(())
}

/// Draws `text` reading upwards (a y axis label), centred on y, the tops of its capitals
/// at x (supersampled pixels).
pub(crate) fn draw_text_upwards(
    area: &Area,
    text: &str,
    size: f64,
    (x, y): (i32, i32),
) -> Result<(), PlotError> {
    let font_size = size * f64::from(SUPERSAMPLE);
    // Rotated a quarter turn anticlockwise, the text's "down" is the screen's right.
    let anchor_x = f64::from(x) + CAP_HEIGHT * font_size - BASELINE_BELOW_ANCHOR * font_size;
    let style = font_style(size, &TEXT_COLOR)
        .transform(FontTransform::Rotate270)
        .pos(Pos::new(HPos::Center, VPos::Top));
    area.draw_text(text, &style, (anchor_x.round() as i32, y))?;
    Ok(())
}

/// `text` at the largest size from `size` down to a minimum that fits `max_width`
/// supersampled pixels; cut with an ellipsis if even the minimum is too wide.
pub(crate) fn fit_text(
    area: &Area,
    text: &str,
    size: f64,
    max_width: i32,
) -> Result<(String, f64), PlotError> {
    // No figure line holds more characters than this; it also bounds the work below.
    const MAX_CHARS: usize = 400;
    let text: String = text.chars().take(MAX_CHARS + 1).collect();
    let text = text.as_str();
    let mut size = size;
    loop {
        if text_width(area, text, size)? <= max_width {
            return Ok((text.to_string(), size));
        }
        if size <= MIN_TEXT {
            break;
        }
        size = (size - 1.0).max(MIN_TEXT);
    }
    let mut chars: Vec<char> = text.chars().collect();
    while !chars.is_empty() {
        chars.pop();
        let cut: String = chars.iter().collect::<String>() + "…";
        if text_width(area, &cut, size)? <= max_width {
            return Ok((cut, size));
        }
    }
    Ok((String::new(), size))
}

/// Fills the supersampled rectangle [x0, x1) x [y0, y1).
pub(crate) fn fill_rect(
    area: &Area,
    (x0, y0): (i32, i32),
    (x1, y1): (i32, i32),
    color: &RGBColor,
) -> Result<(), PlotError> {
    area.draw(&Rectangle::new([(x0, y0), (x1, y1)], color.filled()))?;
    Ok(())
}

/// What a figure's axes show.
pub(crate) struct Axes<'a> {
    pub title: &'a str,
    pub x_label: Option<&'a str>,
    pub y_label: Option<&'a str>,
    pub x_ticks: Vec<Tick>,
    pub y_ticks: Vec<Tick>,
    /// A power of ten the y values were divided by, shown above the y axis ("1e6").
    pub y_multiplier: Option<String>,
}

/// The plotting frame: its edges (supersampled pixels, on whole output pixels; `right` and
/// `bottom` are the last pixel inside) and the data ranges it shows.
pub(crate) struct Frame {
    pub left: i32,
    pub top: i32,
    pub right: i32,
    pub bottom: i32,
    pub x_range: (f64, f64),
    pub y_range: (f64, f64),
}

impl Frame {
    /// Places the frame in a `width` x `height` figure (output pixels), leaving
    /// `right_reserved` output pixels right of it (for a legend or colour bar; at least room
    /// for half an x tick label), and room for the title, axis labels and the y tick labels
    /// of `axes`.
    pub(crate) fn place(
        area: &Area,
        (width, height): (i32, i32),
        right_reserved: i32,
        axes: &Axes,
        x_range: (f64, f64),
        y_range: (f64, f64),
    ) -> Result<Frame, PlotError> {
        let mut widest_y_tick = 0;
        for (_, label) in &axes.y_ticks {
            widest_y_tick = widest_y_tick.max(text_width(area, &tick_text(label), TICK_TEXT)?);
        }
        let mut left = px(MARGIN + TICK_LENGTH + TICK_PAD) + widest_y_tick;
        if axes.y_label.is_some() {
            left += px(text_height(LABEL_TEXT) + LABEL_PAD);
        }
        let mut top = px(MARGIN);
        if !axes.title.is_empty() || axes.y_multiplier.is_some() {
            top += px(text_height(TITLE_TEXT) + TITLE_PAD);
        }
        let mut bottom = px(height - MARGIN - TICK_LENGTH - TICK_PAD - text_height(TICK_TEXT));
        if axes.x_label.is_some() {
            bottom -= px(text_height(LABEL_TEXT) + LABEL_PAD);
        }
        let right = px(width - right_reserved.max(RIGHT_ROOM));
        // Snap to whole output pixels, then keep the frame at least a few pixels big
        // whatever the labels' sizes.
        let snap = |v: i32| v - v.rem_euclid(SUPERSAMPLE);
        let left = snap(left).min(px(width / 2));
        let top = snap(top).min(px(height / 2));
        let right = (snap(right) - 1).max(left + px(8) - 1);
        let bottom = (snap(bottom) - 1).max(top + px(8) - 1);
        Ok(Frame {
            left,
            top,
            right,
            bottom,
            x_range,
            y_range,
        })
    }

    /// Width of the frame, output pixels.
    pub(crate) fn width(&self) -> i32 {
        (self.right + 1 - self.left) / SUPERSAMPLE
    }

    /// Supersampled x of data value `x`.
    pub(crate) fn x(&self, x: f64) -> i32 {
        let (low, high) = self.x_range;
        let fraction = (x - low) / (high - low);
        to_pixel(f64::from(self.left) + fraction * f64::from(self.right + 1 - self.left))
    }

    /// Supersampled y of data value `y`.
    pub(crate) fn y(&self, y: f64) -> i32 {
        let (low, high) = self.y_range;
        let fraction = (y - low) / (high - low);
        to_pixel(f64::from(self.bottom + 1) - fraction * f64::from(self.bottom + 1 - self.top))
    }

    /// The light grid lines at the ticks; drawn before the data so the data covers them.
    pub(crate) fn draw_grid(&self, area: &Area, axes: &Axes) -> Result<(), PlotError> {
        for (value, _) in &axes.x_ticks {
            let x = snap_to_output_pixel(self.x(*value)).min(self.right + 1 - SUPERSAMPLE);
            fill_rect(
                area,
                (x, self.top),
                (x + SUPERSAMPLE, self.bottom + 1),
                &GRID_COLOR,
            )?;
        }
        for (value, _) in &axes.y_ticks {
            let y = snap_to_output_pixel(self.y(*value)).min(self.bottom + 1 - SUPERSAMPLE);
            fill_rect(
                area,
                (self.left, y),
                (self.right + 1, y + SUPERSAMPLE),
                &GRID_COLOR,
            )?;
        }
        Ok(())
    }

    /// The frame, ticks, tick labels, axis labels, title and multiplier; drawn after the
    /// data.
    pub(crate) fn draw_axes(&self, area: &Area, axes: &Axes) -> Result<(), PlotError> {
        let line = SUPERSAMPLE;
        let (left, top, right, bottom) = (self.left, self.top, self.right + 1, self.bottom + 1);
        // The four spines, one output pixel wide, just outside the data area.
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

        let tick = px(TICK_LENGTH);
        let x_label_top = bottom + line + tick + px(TICK_PAD);
        let figure_width = i32::try_from(area.dim_in_pixel().0).unwrap_or(i32::MAX);
        for (value, label) in &axes.x_ticks {
            let x = snap_to_output_pixel(self.x(*value)).min(right - line);
            fill_rect(
                area,
                (x, bottom + line),
                (x + line, bottom + line + tick),
                &TEXT_COLOR,
            )?;
            // A label centred on a tick near the figure's edge moves inwards to stay whole.
            let label = tick_text(label);
            let half_width = text_width(area, &label, TICK_TEXT)? / 2;
            let centre = (x + line / 2)
                .min(figure_width - px(MARGIN) - half_width)
                .max(px(MARGIN) + half_width);
            draw_text(
                area,
                &label,
                TICK_TEXT,
                (centre, x_label_top),
                Align::Center,
                Line::CapTop,
                &TEXT_COLOR,
            )?;
        }
        let y_label_right = left - line - tick - px(TICK_PAD);
        let mut widest_y_tick = 0;
        for (value, label) in &axes.y_ticks {
            let y = snap_to_output_pixel(self.y(*value)).min(bottom - line);
            fill_rect(
                area,
                (left - line - tick, y),
                (left - line, y + line),
                &TEXT_COLOR,
            )?;
            let label = tick_text(label);
            draw_text(
                area,
                &label,
                TICK_TEXT,
                (y_label_right, y + line / 2),
                Align::Right,
                Line::Middle,
                &TEXT_COLOR,
            )?;
            widest_y_tick = widest_y_tick.max(text_width(area, &label, TICK_TEXT)?);
        }

        let centre_x = (left + right) / 2;
        let centre_y = (top + bottom) / 2;
        if let Some(label) = axes.x_label {
            let (label, size) = fit_text(area, label, LABEL_TEXT, right - left)?;
            let y = x_label_top + px(text_height(TICK_TEXT) + LABEL_PAD);
            draw_text(
                area,
                &label,
                size,
                (centre_x, y),
                Align::Center,
                Line::CapTop,
                &TEXT_COLOR,
            )?;
        }
        if let Some(label) = axes.y_label {
            let (label, size) = fit_text(area, label, LABEL_TEXT, bottom - top)?;
            let x = y_label_right - widest_y_tick - px(LABEL_PAD + text_height(size));
            draw_text_upwards(area, &label, size, (x, centre_y))?;
        }
        let title_bottom = top - line - px(TITLE_PAD);
        if !axes.title.is_empty() {
            let room = 2 * centre_x.min(figure_width - centre_x) - px(2 * MARGIN);
            let (title, size) = fit_text(area, axes.title, TITLE_TEXT, room)?;
            let cap_top = title_bottom - px(text_height(size));
            draw_text(
                area,
                &title,
                size,
                (centre_x, cap_top),
                Align::Center,
                Line::CapTop,
                &TEXT_COLOR,
            )?;
        }
        if let Some(multiplier) = &axes.y_multiplier {
            let cap_top = top - line - px(4 + cap_height(TICK_TEXT));
            draw_text(
                area,
                multiplier,
                TICK_TEXT,
                (left - line, cap_top),
                Align::Left,
                Line::CapTop,
                &TEXT_COLOR,
            )?;
        }
        Ok(())
    }
}

/// A tick label as drawn: a leading hyphen becomes a real minus sign, as in matplotlib.
pub(crate) fn tick_text(label: &str) -> String {
    match label.strip_prefix('-') {
        Some(rest) => format!("\u{2212}{rest}"),
        None => label.to_string(),
    }
}

/// Height of capital letters at `size`, output pixels.
fn cap_height(size: f64) -> i32 {
    (CAP_HEIGHT * size).round() as i32
}

/// A supersampled coordinate that is far off the canvas stays far off, without overflow.
fn to_pixel(value: f64) -> i32 {
    value.round().clamp(-1e7, 1e7) as i32
}

/// The first supersampled pixel of the output pixel holding supersampled pixel `v`.
fn snap_to_output_pixel(v: i32) -> i32 {
    v - v.rem_euclid(SUPERSAMPLE)
}
