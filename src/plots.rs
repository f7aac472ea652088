//! The workflow's plots: one line chart per column of a daily aggregate
//! (`groupby(date).mean()` plotted over time, "Average of <col>"), and a
//! scatter of station positions coloured by year. The cluster computes the
//! aggregates; `stratus-plot` renders PNGs here, which are written to a
//! directory and, if asked, logged to the client's run.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};
use arrow_array::cast::AsArray;
use arrow_array::types::{Date32Type, Float64Type, Int32Type};
use arrow_array::{Array, RecordBatch};
use arrow_schema::DataType;

use crate::{Agg, Client};

/// One PNG written (and maybe logged).
#[derive(Debug, Clone)]
pub struct PlotFile {
    /// File and artifact name, `<column>.png`.
    pub name: String,
    pub path: PathBuf,
    pub bytes: usize,
}

fn agg_title(agg: Agg) -> &'static str {
    match agg {
        Agg::Mean => "Average",
        Agg::Sum => "Sum",
        Agg::Count => "Count",
        Agg::Min => "Minimum",
        Agg::Max => "Maximum",
        Agg::Std => "Standard deviation",
        Agg::Var => "Variance",
    }
}

/// A column name as a safe file/artifact name.
fn file_name(column: &str, suffix: &str) -> String {
    let clean: String = column
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{clean}{suffix}.png")
}

/// Days since 1970-01-01 of a date or timestamp key column.
fn days_of(key: &dyn Array, name: &str) -> anyhow::Result<Vec<Option<i32>>> {
    let dates = match key.data_type() {
        DataType::Date32 => arrow_cast::cast(key, &DataType::Date32)?,
        DataType::Date64 | DataType::Timestamp(_, _) => arrow_cast::cast(key, &DataType::Date32)?,
        other => bail!("cannot plot over '{name}': it is {other}, not a date or timestamp"),
    };
    Ok(dates.as_primitive::<Date32Type>().iter().collect())
}

fn floats(column: &dyn Array) -> anyhow::Result<Vec<Option<f64>>> {
    let f = arrow_cast::cast(column, &DataType::Float64)?;
    Ok(f.as_primitive::<Float64Type>()
        .iter()
        .map(|v| v.filter(|x| x.is_finite()))
        .collect())
}

async fn write_and_log(
    client: &Client,
    out: &Path,
    name: String,
    png: Vec<u8>,
    log: bool,
) -> anyhow::Result<PlotFile> {
    let path = out.join(&name);
    std::fs::write(&path, &png).with_context(|| format!("cannot write {}", path.display()))?;
    let bytes = png.len();
    if log {
        let logged = client.log_artifact(&name, "image/png", png).await;
        match client.run() {
            Some(run) => logged.with_context(|| format!("logging {name} to run '{run}'"))?,
            // No run: the error says how to name one.
            None => logged?,
        };
    }
    Ok(PlotFile { name, path, bytes })
}

/// Plot `agg` of every numeric column (or `columns`) of persisted `frame`
/// grouped by the date column `by`: one PNG per column in `out`.
pub async fn plot_daily(
    client: &Client,
    frame: &str,
    by: &str,
    agg: Agg,
    columns: Option<Vec<String>>,
    out: &Path,
    log: bool,
) -> anyhow::Result<Vec<PlotFile>> {
    let (aggs, all) = match columns {
        Some(cols) => (cols.into_iter().map(|c| (c, agg)).collect(), None),
        None => (Vec::new(), Some(agg)),
    };
    let table = client
        .groupby(frame, vec![by.to_string()], aggs, all)
        .await?;
    plot_table(client, &table, by, agg, out, log).await
}

/// Plot every non-key column of a grouped table over its date key.
pub async fn plot_table(
    client: &Client,
    table: &RecordBatch,
    by: &str,
    agg: Agg,
    out: &Path,
    log: bool,
) -> anyhow::Result<Vec<PlotFile>> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let key = table
        .column_by_name(by)
        .ok_or_else(|| anyhow!("the group-by result has no key column '{by}'"))?;
    let days = days_of(key.as_ref(), by)?;
    let mut files = Vec::new();
    for (field, column) in table.schema().fields().iter().zip(table.columns()) {
        if field.name() == by || !field.data_type().is_numeric() {
            continue;
        }
        let values = floats(column.as_ref())?;
        // Rows without a date cannot be placed on the axis.
        let (d, v): (Vec<i32>, Vec<Option<f64>>) = days
            .iter()
            .zip(values)
            .filter_map(|(d, v)| d.map(|d| (d, v)))
            .unzip();
        let title = format!("{} of {}", agg_title(agg), field.name());
        let png = match stratus_plot::daily_line_png(&title, field.name(), &d, &v) {
            Ok(png) => png,
            Err(e) => {
                tracing::warn!("not plotting '{}': {e}", field.name());
                continue;
            }
        };
        files.push(write_and_log(client, out, file_name(field.name(), ""), png, log).await?);
    }
    Ok(files)
}

/// Station positions (distinct longitude/latitude per year) of persisted
/// `frame`, coloured by year: `stations.png` in `out`.
pub async fn plot_stations(
    client: &Client,
    frame: &str,
    out: &Path,
    log: bool,
) -> anyhow::Result<PlotFile> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let keys = ["longitude", "latitude", "year"].map(String::from).to_vec();
    let table = client
        .groupby(frame, keys, Vec::new(), Some(Agg::Count))
        .await?;
    let lon = floats(table.column(0).as_ref())?;
    let lat = floats(table.column(1).as_ref())?;
    let year = arrow_cast::cast(table.column(2).as_ref(), &DataType::Int32)?;
    let year = year.as_primitive::<Int32Type>();
    let mut xs = Vec::new();
    let mut ys = Vec::new();
    let mut years = Vec::new();
    for i in 0..table.num_rows() {
        if let (Some(x), Some(y), true) = (lon[i], lat[i], year.is_valid(i)) {
            xs.push(x);
            ys.push(y);
            years.push(year.value(i));
        }
    }
    let png = stratus_plot::scatter_by_year_png("Station positions by year", &xs, &ys, &years)?;
    write_and_log(client, out, "stations.png".into(), png, log).await
}
