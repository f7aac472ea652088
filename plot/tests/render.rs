//! Renders real plots and decodes the PNG bytes to check what a person would see: the
//! promised size, the line's colour in many pixels, text where the title and labels go, a
//! gap where values are missing, colours per year, and clear errors for bad input.
//!
//! Set STRATUS_PLOT_SAMPLES=DIR to also write every rendered PNG there, to look at.

use stratus_plot::{daily_line_png, scatter_by_year_png, PlotError};

/// matplotlib's "C0", the line colour.
const LINE_COLOR: [u8; 3] = [31, 119, 180];
/// 2008-01-01 in days since 1970-01-01.
const FIRST_DAY: i32 = 13_879;

/// A decoded RGB image.
struct Image {
    width: usize,
    height: usize,
    rgb: Vec<u8>,
}

impl Image {
    fn pixel(&self, x: usize, y: usize) -> [u8; 3] {
        let i = (y * self.width + x) * 3;
        [self.rgb[i], self.rgb[i + 1], self.rgb[i + 2]]
    }

    /// Pixels in columns [x0, x1) and rows [y0, y1) for which `test` holds.
    fn count(
        &self,
        (x0, x1): (usize, usize),
        (y0, y1): (usize, usize),
        test: impl Fn([u8; 3]) -> bool,
    ) -> usize {
        let mut count = 0;
        for y in y0..y1.min(self.height) {
            for x in x0..x1.min(self.width) {
                count += usize::from(test(self.pixel(x, y)));
            }
        }
        count
    }

    fn whole<F: Fn([u8; 3]) -> bool>(&self, test: F) -> usize {
        self.count((0, self.width), (0, self.height), test)
    }
}

fn near(colour: [u8; 3], target: [u8; 3], tolerance: i32) -> bool {
    colour
        .iter()
        .zip(target)
        .all(|(&c, t)| (i32::from(c) - i32::from(t)).abs() <= tolerance)
}

fn dark(colour: [u8; 3]) -> bool {
    colour.iter().all(|&c| c < 90)
}

/// Checks the PNG signature and reads width and height from the IHDR chunk by hand, then
/// decodes the pixels.
fn decode(bytes: &[u8], sample_name: &str) -> Image {
    if let Ok(dir) = std::env::var("STRATUS_PLOT_SAMPLES") {
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(std::path::Path::new(&dir).join(sample_name), bytes).unwrap();
    }
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "PNG signature");
    assert_eq!(&bytes[12..16], b"IHDR", "first chunk is IHDR");
    let width = u32::from_be_bytes(bytes[16..20].try_into().unwrap()) as usize;
    let height = u32::from_be_bytes(bytes[20..24].try_into().unwrap()) as usize;

    let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    let mut reader = decoder.read_info().expect("a PNG the png crate reads");
    let mut rgb = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut rgb).expect("decodable pixels");
    assert_eq!(info.color_type, png::ColorType::Rgb);
    assert_eq!((info.width as usize, info.height as usize), (width, height));
    rgb.truncate(info.buffer_size());
    Image { width, height, rgb }
}

/// A deterministic noise source in [-0.5, 0.5).
fn noise(state: &mut u64) -> f64 {
    *state = state
        .wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(1_442_695_040_888_963_407);
    (*state >> 33) as f64 / (1u64 << 31) as f64 - 0.5
}

/// Twelve years of daily temperatures with a seasonal cycle.
fn daily_temperatures() -> (Vec<i32>, Vec<Option<f64>>) {
    let days: Vec<i32> = (FIRST_DAY..FIRST_DAY + 4383).collect();
    let mut state = 7;
    let values = days
        .iter()
        .map(|&day| {
            let years = f64::from(day - FIRST_DAY) / 365.25;
            let season = ((years - 0.3) * std::f64::consts::TAU).sin();
            Some(12.0 + 9.0 * season + 3.0 * noise(&mut state))
        })
        .collect();
    (days, values)
}

/// The columns that hold line-coloured pixels.
fn line_columns(image: &Image) -> Vec<usize> {
    (0..image.width)
        .filter(|&x| image.count((x, x + 1), (0, image.height), |c| near(c, LINE_COLOR, 40)) > 0)
        .collect()
}

/// The widest run of columns without line pixels between the first and last line column.
fn widest_gap(columns: &[usize]) -> usize {
    columns
        .windows(2)
        .map(|pair| pair[1] - pair[0] - 1)
        .max()
        .unwrap_or(0)
}

#[test]
fn daily_line_has_the_promised_size_line_and_text() {
    let (days, values) = daily_temperatures();
    let png = daily_line_png("Average of temperature", "temperature", &days, &values).unwrap();
    let image = decode(&png, "line-12-years.png");
    assert_eq!((image.width, image.height), (1000, 500));

    let line_pixels = image.whole(|c| near(c, LINE_COLOR, 40));
    assert!(
        line_pixels > 20_000,
        "only {line_pixels} line-coloured pixels"
    );
    // Twelve years of data span most of the width without a break.
    let columns = line_columns(&image);
    assert!(columns.len() > 800, "line covers {} columns", columns.len());
    assert!(
        widest_gap(&columns) <= 2,
        "gap of {} columns",
        widest_gap(&columns)
    );

    // The title, centred in the top strip; the y label, rotated, in the left strip; the
    // date labels under the frame.
    let title = image.count((300, 700), (0, 40), dark);
    assert!(title > 150, "{title} dark pixels in the title strip");
    let y_label = image.count((0, 40), (150, 350), dark);
    assert!(
        y_label > 100,
        "{y_label} dark pixels where the y label goes"
    );
    let x_labels = image.count((60, 990), (440, 468), dark);
    assert!(x_labels > 300, "{x_labels} dark pixels under the frame");
    // The x axis is labelled "date", centred under the tick labels.
    let x_label = image.count((400, 600), (468, 500), dark);
    assert!(x_label > 40, "{x_label} dark pixels where the x label goes");
    assert_eq!(
        image.count((60, 400), (472, 500), dark),
        0,
        "only the label below the ticks"
    );
    // No dark pixels in the far corners: nothing drawn outside the figure's margins.
    assert_eq!(image.count((990, 1000), (0, 500), dark), 0);
    assert_eq!(image.count((0, 1000), (0, 5), dark), 0);
}

#[test]
fn missing_values_break_the_line() {
    let (days, mut values) = daily_temperatures();
    // About 1.5 years missing in the middle (null and NaN), about 130 pixels wide.
    for (i, value) in values.iter_mut().enumerate().skip(2000).take(550) {
        *value = if i % 2 == 0 { None } else { Some(f64::NAN) };
    }
    let png = daily_line_png("Average of temperature", "temperature", &days, &values).unwrap();
    let image = decode(&png, "line-with-gap.png");
    let gap = widest_gap(&line_columns(&image));
    assert!((100..160).contains(&gap), "gap of {gap} columns");
}

#[test]
fn isolated_values_show_as_dots() {
    let days: Vec<i32> = (0..100).collect();
    let values: Vec<Option<f64>> = (0..100)
        .map(|i| (i % 20 == 0).then_some(f64::from(i)))
        .collect();
    let png = daily_line_png("Dots", "value", &days, &values).unwrap();
    let image = decode(&png, "line-dots.png");
    let columns = line_columns(&image);
    // Five dots a few pixels wide each, far apart.
    assert!(
        (5..=40).contains(&columns.len()),
        "{} line columns",
        columns.len()
    );
    assert!(widest_gap(&columns) > 100);
}

#[test]
fn line_errors_name_the_problem() {
    let error = daily_line_png("t", "y", &[1, 2, 3], &[Some(1.0), None]).unwrap_err();
    assert!(matches!(error, PlotError::LengthMismatch { .. }));
    let message = error.to_string();
    assert!(
        message.contains("days has 3") && message.contains("values has 2"),
        "{message}"
    );

    let error = daily_line_png("t", "y", &[], &[]).unwrap_err();
    assert!(matches!(error, PlotError::NothingToPlot(_)), "{error}");

    let error = daily_line_png(
        "t",
        "y",
        &[1, 2, 3],
        &[None, Some(f64::NAN), Some(f64::INFINITY)],
    )
    .unwrap_err();
    assert!(matches!(error, PlotError::NothingToPlot(_)));
    assert!(
        error
            .to_string()
            .contains("all 3 values are null, NaN or infinite"),
        "{error}"
    );

    let error = daily_line_png("t", "y", &[1, 5, 4], &[Some(1.0); 3]).unwrap_err();
    assert!(matches!(
        error,
        PlotError::DaysNotAscending {
            index: 2,
            previous: 5,
            next: 4
        }
    ));
    assert!(error.to_string().contains("day 4 at index 2"), "{error}");
}

/// A named line plot input: days and values.
type LineCase = (&'static str, Vec<i32>, Vec<Option<f64>>);

#[test]
fn awkward_line_inputs_still_render() {
    let cases: Vec<LineCase> = vec![
        ("single-point", vec![FIRST_DAY], vec![Some(3.5)]),
        ("all-equal", (0..50).collect(), vec![Some(20.0); 50]),
        ("all-zero", (0..50).collect(), vec![Some(0.0); 50]),
        (
            "huge-range",
            (0..4).collect(),
            vec![Some(-f64::MAX), Some(f64::MAX), Some(1e300), None],
        ),
        (
            "tiny-values",
            (0..3).collect(),
            vec![Some(5e-324), Some(1e-300), Some(0.0)],
        ),
        (
            "millions",
            (0..3).collect(),
            vec![Some(2.5e6), Some(3.1e6), Some(2.9e6)],
        ),
        (
            "inf-and-nan-mixed",
            (0..4).collect(),
            vec![
                Some(f64::NEG_INFINITY),
                Some(1.0),
                Some(f64::NAN),
                Some(2.0),
            ],
        ),
        (
            "extreme-days",
            vec![i32::MIN, 0, i32::MAX],
            vec![Some(1.0), Some(2.0), Some(3.0)],
        ),
        (
            "repeated-day",
            vec![5, 5, 5],
            vec![Some(1.0), Some(2.0), Some(3.0)],
        ),
        (
            "one-month",
            (FIRST_DAY..FIRST_DAY + 31).collect(),
            (0..31).map(|i| Some(f64::from(i) * -0.37)).collect(),
        ),
        (
            "one-year",
            (FIRST_DAY..FIRST_DAY + 366).collect(),
            (0..366).map(|i| Some(f64::from(i % 40))).collect(),
        ),
    ];
    for (name, days, values) in cases {
        let png = daily_line_png("Awkward input", "value", &days, &values)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let image = decode(&png, &format!("line-{name}.png"));
        assert_eq!((image.width, image.height), (1000, 500), "{name}");
        let line_pixels = image.whole(|c| near(c, LINE_COLOR, 40));
        assert!(line_pixels > 10, "{name}: {line_pixels} line pixels");
    }
}

#[test]
fn long_titles_and_labels_are_fitted_not_clipped() {
    let title = "A title far too long to fit on one line of a plot that is only a thousand pixels wide, so it must shrink and then be cut";
    let png = daily_line_png(
        title,
        &"y label ".repeat(40),
        &[0, 1],
        &[Some(1.0), Some(2.0)],
    )
    .unwrap();
    let image = decode(&png, "line-long-title.png");
    // Text reaches neither the left nor the right edge.
    assert_eq!(image.count((0, 4), (0, 500), dark), 0);
    assert_eq!(image.count((996, 1000), (0, 500), dark), 0);
    assert!(image.count((100, 900), (0, 40), dark) > 300);
}

#[test]
fn any_text_renders() {
    let days = [FIRST_DAY, FIRST_DAY + 1];
    let values = [Some(1.0), Some(2.0)];
    let odd = "🌡️ Temperatur\n\tüber Zeit — 温度 \u{202e}עברית\u{0}";
    for (title, y_label) in [("", ""), (odd, odd)] {
        let png = daily_line_png(title, y_label, &days, &values).unwrap();
        decode(&png, "line-odd-text.png");
        let png = scatter_by_year_png(title, &[1.0], &[2.0], &[2010]).unwrap();
        decode(&png, "scatter-odd-text.png");
    }
    let huge_title = "x".repeat(1_000_000);
    let png = daily_line_png(&huge_title, &huge_title, &days, &values).unwrap();
    let image = decode(&png, "line-huge-title.png");
    assert!(image.count((100, 900), (0, 40), dark) > 300);
}

#[test]
fn rendering_is_deterministic() {
    let (days, values) = daily_temperatures();
    let first = daily_line_png("Average of temperature", "t", &days, &values).unwrap();
    let second = daily_line_png("Average of temperature", "t", &days, &values).unwrap();
    assert_eq!(first, second);
}

/// Stations spread over the globe in `years`, every 50th with ISD's bogus longitude 999.999.
fn stations(count: usize, years: i32) -> (Vec<f64>, Vec<f64>, Vec<i32>) {
    let mut state = 11;
    let mut longitude = Vec::new();
    let mut latitude = Vec::new();
    let mut year = Vec::new();
    for i in 0..count {
        let lon = noise(&mut state) * 358.0;
        longitude.push(if i % 50 == 0 { 999.999 } else { lon });
        latitude.push(noise(&mut state) * 170.0);
        year.push(2008 + i as i32 % years);
    }
    (longitude, latitude, year)
}

const VIRIDIS_FIRST: [u8; 3] = [68, 1, 84];
const VIRIDIS_LAST: [u8; 3] = [253, 231, 37];

#[test]
fn scatter_with_many_years_has_points_and_a_colour_bar() {
    let (longitude, latitude, year) = stations(2000, 12);
    let png =
        scatter_by_year_png("Station positions by year", &longitude, &latitude, &year).unwrap();
    let image = decode(&png, "scatter-12-years.png");
    assert_eq!((image.width, image.height), (1000, 560));

    // Points of the first and last year inside the frame (left of the colour bar) ...
    let plot = (80, 840);
    let purple = image.count(plot, (40, 500), |c| near(c, VIRIDIS_FIRST, 12));
    let yellow = image.count(plot, (40, 500), |c| near(c, VIRIDIS_LAST, 12));
    assert!(
        purple > 300 && yellow > 300,
        "purple {purple}, yellow {yellow}"
    );
    // ... and the colour bar right of the frame: columns coloured from top to bottom, yellow
    // at the top, purple at the bottom.
    let saturated = |c: [u8; 3]| c.iter().max().unwrap() - c.iter().min().unwrap() > 30;
    let bar_columns: Vec<usize> = (850..1000)
        .filter(|&x| image.count((x, x + 1), (50, 490), saturated) > 430)
        .collect();
    assert!(
        bar_columns.len() >= 12,
        "colour bar columns {bar_columns:?}"
    );
    for &x in &bar_columns[2..bar_columns.len() - 2] {
        let rows: Vec<usize> = (0..image.height)
            .filter(|&y| saturated(image.pixel(x, y)))
            .collect();
        let (top, bottom) = (rows[0], rows[rows.len() - 1]);
        assert!(
            bottom - top > 430,
            "bar at x={x} spans rows {top}..{bottom}"
        );
        let (top_colour, bottom_colour) = (image.pixel(x, top + 1), image.pixel(x, bottom - 1));
        assert!(
            near(top_colour, VIRIDIS_LAST, 12),
            "top of bar at x={x}: {top_colour:?}"
        );
        assert!(
            near(bottom_colour, VIRIDIS_FIRST, 12),
            "bottom of bar at x={x}: {bottom_colour:?}"
        );
    }
    // Title and axis labels.
    assert!(image.count((300, 700), (0, 40), dark) > 150);
    assert!(
        image.count((0, 40), (200, 360), dark) > 100,
        "Latitude label"
    );
    assert!(
        image.count((300, 700), (520, 560), dark) > 100,
        "Longitude label"
    );
}

#[test]
fn scatter_with_few_years_has_a_legend() {
    let (longitude, latitude, year) = stations(300, 3);
    let png = scatter_by_year_png("Three years", &longitude, &latitude, &year).unwrap();
    let image = decode(&png, "scatter-3-years.png");
    let orange = [255, 127, 14];
    let green = [44, 160, 44];
    let plot = (80, 850);
    assert!(image.count(plot, (40, 500), |c| near(c, orange, 20)) > 200);
    assert!(image.count(plot, (40, 500), |c| near(c, green, 20)) > 200);
    // The legend right of the frame holds a marker of each colour and the year labels.
    let legend = (860, 1000);
    assert!(image.count(legend, (30, 200), |c| near(c, orange, 20)) > 10);
    assert!(image.count(legend, (30, 200), |c| near(c, green, 20)) > 10);
    assert!(image.count(legend, (30, 200), dark) > 100);
    // A fourth colour of tab10 appears nowhere.
    let red = [214, 39, 40];
    assert_eq!(image.whole(|c| near(c, red, 20)), 0);
}

#[test]
fn scatter_drops_out_of_range_positions() {
    // One real station and bogus ones: the axes span the real station, not 999.999.
    let longitude = [10.0, 999.999, f64::NAN, -181.0, f64::INFINITY];
    let latitude = [45.0, 45.0, 45.0, 45.0, 45.0];
    let year = [2010, 2011, 2012, 2013, 2014];
    let png = scatter_by_year_png("One valid station", &longitude, &latitude, &year).unwrap();
    let image = decode(&png, "scatter-one-station.png");
    // Only the 2010 station is drawn: a blue tab10 marker, alone in the legend.
    let blue = [31, 119, 180];
    assert!(image.whole(|c| near(c, blue, 20)) > 20);
    let orange = [255, 127, 14];
    assert_eq!(image.whole(|c| near(c, orange, 20)), 0);

    let error = scatter_by_year_png("t", &[999.999, 0.0], &[0.0, 91.0], &[1, 2]).unwrap_err();
    assert!(matches!(error, PlotError::NothingToPlot(_)));
    assert!(
        error
            .to_string()
            .contains("none of the 2 station positions"),
        "{error}"
    );
    let error = scatter_by_year_png("t", &[], &[], &[]).unwrap_err();
    assert!(matches!(error, PlotError::NothingToPlot(_)), "{error}");
}

#[test]
fn scatter_lengths_must_match() {
    let error = scatter_by_year_png("t", &[0.0, 1.0], &[0.0], &[2010, 2011, 2012]).unwrap_err();
    assert!(matches!(error, PlotError::LengthMismatch { .. }));
    assert_eq!(
        error.to_string(),
        "longitude has 2 values, latitude 1 and year 3: the inputs must have the same length"
    );
}

/// A named scatter input: longitude, latitude, year.
type ScatterCase = (&'static str, Vec<f64>, Vec<f64>, Vec<i32>);

#[test]
fn scatter_awkward_inputs_still_render() {
    let cases: Vec<ScatterCase> = vec![
        ("corner", vec![180.0], vec![90.0], vec![2010]),
        (
            "same-place",
            vec![5.0; 10],
            vec![5.0; 10],
            (0..10).collect(),
        ),
        (
            "extreme-years",
            vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0],
            vec![0.0; 11],
            vec![i32::MIN, i32::MAX, 0, 1, 2, 3, 4, 5, 6, 7, 8],
        ),
        (
            "tiny-area",
            vec![10.0, 10.000001],
            vec![20.0, 20.000001],
            vec![2010, 2011],
        ),
    ];
    for (name, longitude, latitude, year) in cases {
        let png = scatter_by_year_png("Awkward stations", &longitude, &latitude, &year)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let image = decode(&png, &format!("scatter-{name}.png"));
        assert_eq!((image.width, image.height), (1000, 560), "{name}");
    }
}
