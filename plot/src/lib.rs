//! Stratus plots: renders the workflow's figures to PNG bytes in memory, ready to be
//! written to a file or logged to a run as an artifact.
//!
//! - [`daily_line_png`]: a line of daily values over a date axis (e.g. the daily mean
//!   temperature).
//! - [`scatter_by_year_png`]: station positions (longitude, latitude) coloured by year.
//!
//! Text is drawn with DejaVu Sans, embedded in the binary (see `fonts/LICENSE-DejaVu.txt`),
//! so plots render the same on servers and containers that have no fonts installed.
//! Rendering is pure Rust (plotters' bitmap backend, 2x supersampled for smooth lines and
//! text) and the PNG is encoded in memory: no temporary files, no system libraries.

mod canvas;
mod line;
mod scatter;
mod ticks;

pub use line::daily_line_png;
pub use scatter::scatter_by_year_png;

/// Why a plot could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// Two inputs that must pair up element by element have different lengths.
    #[error("{what}: the inputs must have the same length")]
    LengthMismatch {
        /// The inputs and their lengths, e.g. "days has 3 values but values has 2".
        what: String,
    },
    /// The inputs hold no point that can be drawn.
    #[error("nothing to plot: {0}")]
    NothingToPlot(String),
    /// The days of a line plot go backwards.
    #[error("days must be ascending, but day {next} at index {index} comes after day {previous}")]
    DaysNotAscending {
        /// Index of the first day that is smaller than the one before it.
        index: usize,
        /// The day before it.
        previous: i32,
        /// The day at `index`.
        next: i32,
    },
    /// The embedded font could not be loaded (a broken build, not bad input).
    #[error("could not load the embedded font: {0}")]
    Font(String),
    /// plotters failed while drawing.
    #[error("could not draw the plot: {0}")]
    Draw(String),
    /// The PNG encoder failed.
    #[error("could not encode the plot as PNG: {0}")]
    Encode(String),
}

impl<E: std::error::Error + Send + Sync> From<plotters::drawing::DrawingAreaErrorKind<E>>
    for PlotError
{
    fn from(error: plotters::drawing::DrawingAreaErrorKind<E>) -> Self {
        PlotError::Draw(error.to_string())
    }
}
