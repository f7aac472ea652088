//! Deterministic synthetic ISD-like weather data (`stratus datagen`): the schema of
//! GUIDE.md section 1, ISD-like null fractions and distributions, hive-partitioned as
//! `out/year=YYYY/month=M/part-00000.parquet` for 2008..=2019 and months 1..=12.
//!
//! Determinism: the station table comes from `seed`, each partition from its own `SmallRng`
//! seeded from `seed` and the partition index, so the bytes written depend on `seed`, `rows`
//! and the [`RowOrder`] only, never on threading.
//!
//! Row order: the rows of a file are generated in time order ([`RowOrder::Time`], the
//! default). [`RowOrder::Station`] groups them by station, then time, within each file (the
//! way real ISD copies written by pyarrow come); [`RowOrder::Random`] shuffles them within
//! each file (seeded). Every order holds the same rows with the same values: the rows are
//! generated as for `Time`, then permuted with one `take` per column per file.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use arrow_array::types::Int32Type;
use arrow_array::{
    Array, ArrayRef, DictionaryArray, Float64Array, Int32Array, RecordBatch, StringArray,
    TimestampMicrosecondArray, UInt32Array,
};
use arrow_buffer::{NullBuffer, ScalarBuffer};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::error::{EngineError, Result};

/// First year generated.
pub const FIRST_YEAR: i32 = 2008;
/// Last year generated (inclusive).
pub const LAST_YEAR: i32 = 2019;
/// Number of hive partitions (years x 12 months).
pub const NUM_PARTITIONS: usize = ((LAST_YEAR - FIRST_YEAR + 1) * 12) as usize;
/// Number of synthetic weather stations.
pub const NUM_STATIONS: usize = 2000;
/// Rows per Parquet row group.
pub const ROW_GROUP_ROWS: usize = 64 * 1024;

/// The order of the rows within each generated file (the rows themselves do not change).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RowOrder {
    /// By time (as generated; `stratus datagen`'s default).
    #[default]
    Time,
    /// Grouped by station, then by time (as real ISD copies written by pyarrow come).
    Station,
    /// A seeded shuffle.
    Random,
}

impl RowOrder {
    /// Every order, `Time` first.
    pub const ALL: [RowOrder; 3] = [RowOrder::Time, RowOrder::Station, RowOrder::Random];

    /// `time`, `station` or `random`.
    pub fn name(self) -> &'static str {
        match self {
            RowOrder::Time => "time",
            RowOrder::Station => "station",
            RowOrder::Random => "random",
        }
    }
}

impl std::fmt::Display for RowOrder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for RowOrder {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        RowOrder::ALL
            .into_iter()
            .find(|o| o.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| format!("unknown row order {s:?} (time, station or random)"))
    }
}

/// What to generate and where.
#[derive(Debug, Clone)]
pub struct DatagenOptions {
    /// Total rows over all partitions.
    pub rows: u64,
    /// Output directory (created if missing; existing part files are overwritten).
    pub out: PathBuf,
    /// Seed: same seed and rows give byte-identical files.
    pub seed: u64,
}

/// What was generated.
#[derive(Debug, Clone, PartialEq)]
pub struct DatagenSummary {
    /// Rows written.
    pub rows: u64,
    /// Files written (one per non-empty partition).
    pub files: usize,
    /// Bytes on disk over all files.
    pub bytes: u64,
}

/// The schema of generated files, in GUIDE.md's column order. Every column is nullable,
/// as Spark writes them.
pub fn isd_schema() -> SchemaRef {
    let dict = || DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
    let f64f = |n: &str| Field::new(n, DataType::Float64, true);
    Arc::new(Schema::new(vec![
        Field::new("usaf", dict(), true),
        Field::new("wban", dict(), true),
        Field::new(
            "datetime",
            DataType::Timestamp(TimeUnit::Microsecond, None),
            true,
        ),
        f64f("latitude"),
        f64f("longitude"),
        f64f("elevation"),
        f64f("windAngle"),
        f64f("windSpeed"),
        f64f("temperature"),
        f64f("seaLvlPressure"),
        Field::new("cloudCoverage", dict(), true),
        f64f("presentWeatherIndicator"),
        f64f("pastWeatherIndicator"),
        f64f("precipTime"),
        f64f("precipDepth"),
        f64f("snowDepth"),
        Field::new("stationName", dict(), true),
        Field::new("countryOrRegion", dict(), true),
        Field::new("p_k", dict(), true),
        Field::new("year", DataType::Int32, true),
        Field::new("day", DataType::Int32, true),
        f64f("version"),
    ]))
}

/// Generate deterministic synthetic ISD-like data (same seed + rows => byte-identical
/// files), hive-partitioned `out/year=YYYY/month=M/part-00000.parquet` for 2008..=2019,
/// months 1..=12. Rows are spread evenly over the 144 partitions (the first `rows % 144`
/// get one more); partitions that get no rows (only when `rows < 144`) write no file.
/// Snappy, 64Ki-row row groups, dictionary-encoded strings; partitions are generated in
/// parallel on up to `available_parallelism` threads. Rows in time order: see
/// [`generate_isd_ordered`].
pub fn generate_isd(opts: &DatagenOptions) -> Result<DatagenSummary> {
    generate_isd_ordered(opts, RowOrder::Time)
}

/// [`generate_isd`] with the rows of each file in `order`: the same rows and values for
/// every order (for `Time`, the same bytes as [`generate_isd`]).
pub fn generate_isd_ordered(opts: &DatagenOptions, order: RowOrder) -> Result<DatagenSummary> {
    let out_dir = opts.out.display().to_string();
    fs::create_dir_all(&opts.out).map_err(|e| EngineError::io(&out_dir, e))?;
    let stations = Arc::new(Stations::generate(opts.seed));
    let schema = isd_schema();
    let base = opts.rows / NUM_PARTITIONS as u64;
    let extra = opts.rows % NUM_PARTITIONS as u64;
    let all: Vec<(usize, u64)> = (0..NUM_PARTITIONS)
        .map(|i| (i, base + u64::from((i as u64) < extra)))
        .collect();
    // Partitions without rows write no file: remove one left by an earlier, larger run.
    for &(index, _) in all.iter().filter(|&&(_, n)| n == 0) {
        let stale = partition_path(&opts.out, index);
        if stale.is_file() {
            fs::remove_file(&stale).map_err(|e| EngineError::io(stale.display().to_string(), e))?;
        }
    }
    let jobs: Vec<(usize, u64)> = all.into_iter().filter(|&(_, n)| n > 0).collect();

    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, jobs.len().max(1));
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Result<(usize, u64)>>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let j = next.fetch_add(1, Ordering::Relaxed);
                let Some(&(index, rows)) = jobs.get(j) else {
                    break;
                };
                let r =
                    write_partition(&opts.out, opts.seed, index, rows, order, &stations, &schema)
                        .map(|bytes| (index, bytes));
                let failed = r.is_err();
                if let Ok(mut v) = results.lock() {
                    v.push(r);
                }
                if failed {
                    // Stop handing out work after the first failure.
                    next.store(jobs.len(), Ordering::Relaxed);
                    break;
                }
            });
        }
    });
    let results = results
        .into_inner()
        .map_err(|_| EngineError::Argument("datagen: a worker thread panicked".into()))?;
    let mut bytes = 0u64;
    let mut files = 0usize;
    for r in results {
        let (_, b) = r?;
        bytes += b;
        files += 1;
    }
    Ok(DatagenSummary {
        rows: opts.rows,
        files,
        bytes,
    })
}

/// Mix the seed and an index into a well-spread 64-bit seed (splitmix64 finalizer).
fn mix(seed: u64, index: u64) -> u64 {
    let mut z = seed
        .wrapping_add(index.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .wrapping_add(0x632B_E59B_D9B4_E019);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A standard normal variate (Box–Muller).
fn normal(rng: &mut SmallRng) -> f64 {
    let u1: f64 = 1.0 - rng.random::<f64>(); // (0, 1]
    let u2: f64 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

fn round_to(v: f64, step: f64) -> f64 {
    (v / step).round() * step
}

/// The fixed station table.
struct Stations {
    usaf: ArrayRef,
    wban: ArrayRef,
    name: ArrayRef,
    country: ArrayRef,
    p_k: ArrayRef,
    lat: Vec<f64>,
    lon: Vec<f64>,
    elev: Vec<f64>,
}

const COUNTRIES: [&str; 40] = [
    "US", "CA", "MX", "BR", "AR", "CL", "PE", "CO", "GB", "FR", "DE", "ES", "IT", "NO", "SE", "FI",
    "PL", "RU", "UA", "TR", "EG", "NG", "KE", "ZA", "MA", "SA", "IR", "IN", "CN", "JP", "KR", "ID",
    "PH", "TH", "VN", "AU", "NZ", "AQ", "GL", "IS",
];

const SYLLABLES: [&str; 24] = [
    "AL", "BER", "CAS", "DOR", "EL", "FAR", "GRAN", "HOL", "IN", "KIR", "LAN", "MAR", "NOR", "OS",
    "PAL", "RIO", "SAN", "TOR", "UL", "VAL", "WES", "YAR", "ZEL", "MON",
];

const SUFFIXES: [&str; 8] = [
    "", " AIRPORT", " INTL", " AP", " AFB", " MUNI", " ISLAND", " RADIO",
];

impl Stations {
    fn generate(seed: u64) -> Self {
        let mut rng = SmallRng::seed_from_u64(mix(seed, u64::MAX));
        let n = NUM_STATIONS;
        let mut usaf = Vec::with_capacity(n);
        let mut wban = Vec::with_capacity(n);
        let mut name = Vec::with_capacity(n);
        let mut country = Vec::with_capacity(n);
        let mut p_k = Vec::with_capacity(n);
        let mut lat = Vec::with_capacity(n);
        let mut lon = Vec::with_capacity(n);
        let mut elev = Vec::with_capacity(n);
        let mut used = std::collections::HashSet::new();
        for _ in 0..n {
            // Unique 6-digit usaf ids.
            let mut id: u32 = rng.random_range(10_000..1_000_000);
            while !used.insert(id) {
                id = rng.random_range(10_000..1_000_000);
            }
            let u = format!("{id:06}");
            let w = if rng.random::<f64>() < 0.7 {
                "99999".to_string()
            } else {
                format!("{:05}", rng.random_range(1..99_999u32))
            };
            p_k.push(format!("{u}-{w}"));
            usaf.push(u);
            wban.push(w);
            let syl = rng.random_range(2..4usize);
            let mut s = String::new();
            for _ in 0..syl {
                s.push_str(SYLLABLES[rng.random_range(0..SYLLABLES.len())]);
            }
            s.push_str(SUFFIXES[rng.random_range(0..SUFFIXES.len())]);
            name.push(s);
            country.push(COUNTRIES[rng.random_range(0..COUNTRIES.len())]);
            // Latitude: mostly northern mid-latitudes.
            let la = if rng.random::<f64>() < 0.85 {
                43.0 + 12.0 * normal(&mut rng)
            } else {
                5.0 + 25.0 * normal(&mut rng)
            };
            lat.push(round_to(la.clamp(-90.0, 87.333), 0.001));
            // Longitude: Americas, Europe/Africa, Asia/Oceania.
            let r = rng.random::<f64>();
            let lo = if r < 0.55 {
                -90.0 + 18.0 * normal(&mut rng)
            } else if r < 0.85 {
                15.0 + 15.0 * normal(&mut rng)
            } else {
                110.0 + 30.0 * normal(&mut rng)
            };
            let lo = (lo + 180.0).rem_euclid(360.0) - 180.0;
            lon.push(round_to(lo, 0.001));
            // Elevation: log-normal around 200 m, a few missing-value codes.
            let e = if rng.random::<f64>() < 0.003 {
                9999.0
            } else {
                (5.3 + 1.2 * normal(&mut rng)).exp().clamp(-388.0, 6000.0) - 10.0
            };
            elev.push(round_to(e, 0.1));
        }
        let arr = |v: &[String]| -> ArrayRef { Arc::new(StringArray::from_iter_values(v)) };
        Stations {
            usaf: arr(&usaf),
            wban: arr(&wban),
            name: arr(&name),
            country: Arc::new(StringArray::from_iter_values(country)),
            p_k: arr(&p_k),
            lat,
            lon,
            elev,
        }
    }
}

/// Days since 1970-01-01 of a civil date (proleptic Gregorian).
fn days_from_civil(y: i32, m: u32, d: u32) -> i64 {
    let y = i64::from(y) - i64::from(m <= 2);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A nullable float column: each value present with probability `present`.
fn nullable_f64(
    n: usize,
    rng: &mut SmallRng,
    present: f64,
    mut value: impl FnMut(&mut SmallRng) -> f64,
) -> ArrayRef {
    let mask: Vec<bool> = (0..n).map(|_| rng.random::<f64>() < present).collect();
    masked_f64(rng, &mask, &mut value)
}

/// A float column valid where `mask` is true.
fn masked_f64(
    rng: &mut SmallRng,
    mask: &[bool],
    value: &mut impl FnMut(&mut SmallRng) -> f64,
) -> ArrayRef {
    let values: Vec<f64> = mask
        .iter()
        .map(|&m| if m { value(rng) } else { 0.0 })
        .collect();
    Arc::new(Float64Array::new(
        ScalarBuffer::from(values),
        Some(NullBuffer::from(mask.to_vec())),
    ))
}

/// Pick from `(value, weight)` pairs.
fn weighted(rng: &mut SmallRng, choices: &[(f64, f64)]) -> f64 {
    let total: f64 = choices.iter().map(|c| c.1).sum();
    let mut x = rng.random::<f64>() * total;
    for &(v, w) in choices {
        if x < w {
            return v;
        }
        x -= w;
    }
    choices.last().map_or(0.0, |c| c.0)
}

const PRESENT_WEATHER: [(f64, f64); 18] = [
    (0.0, 10.0),
    (1.0, 6.0),
    (2.0, 10.0),
    (3.0, 6.0),
    (5.0, 8.0),
    (10.0, 14.0),
    (21.0, 3.0),
    (45.0, 4.0),
    (50.0, 3.0),
    (51.0, 5.0),
    (60.0, 3.0),
    (61.0, 6.0),
    (63.0, 4.0),
    (71.0, 7.0),
    (73.0, 3.0),
    (80.0, 6.0),
    (81.0, 3.0),
    (95.0, 2.0),
];

const PRECIP_TIME: [(f64, f64); 6] = [
    (1.0, 30.0),
    (3.0, 20.0),
    (6.0, 25.0),
    (12.0, 10.0),
    (24.0, 12.0),
    (99.0, 3.0),
];

const CLOUDS: [&str; 7] = ["CLR", "FEW", "SCT", "BKN", "OVC", "VV", "OBS"];

/// Salt of the seed of the shuffle of [`RowOrder::Random`] (apart from the values' seeds).
const SHUFFLE_SALT: u64 = 0x5EED_5A1F_F1E5_0001;

/// Build one partition in `order` as record batches of at most [`ROW_GROUP_ROWS`] rows.
fn build_batches(
    seed: u64,
    index: usize,
    rows: usize,
    order: RowOrder,
    stations: &Stations,
    schema: &SchemaRef,
) -> Result<Vec<RecordBatch>> {
    let batches = build_time_batches(seed, index, rows, stations, schema)?;
    if order == RowOrder::Time || rows == 0 {
        return Ok(batches);
    }
    let arrow = |e| EngineError::arrow("datagen", e);
    let all = arrow_select::concat::concat_batches(schema, &batches).map_err(arrow)?;
    drop(batches);
    let n = all.num_rows();
    let perm: Vec<u32> = match order {
        RowOrder::Time => (0..n as u32).collect(),
        RowOrder::Station => {
            // The usaf column's dictionary keys name the station. The rows are in time
            // order, so a stable counting sort by station keeps time order within one.
            let keys = all
                .column(0)
                .as_any()
                .downcast_ref::<DictionaryArray<Int32Type>>()
                .ok_or_else(|| EngineError::Argument("datagen: usaf is not a dictionary".into()))?
                .keys();
            let station = |i: usize| usize::try_from(keys.value(i)).unwrap_or(0);
            let buckets = keys
                .values()
                .iter()
                .copied()
                .max()
                .map_or(0, |m| m.max(0) as usize)
                + 1;
            let mut start = vec![0u32; buckets + 1];
            for i in 0..n {
                start[station(i) + 1] += 1;
            }
            for b in 0..buckets {
                start[b + 1] += start[b];
            }
            let mut perm = vec![0u32; n];
            for i in 0..n {
                let s = station(i);
                perm[start[s] as usize] = i as u32;
                start[s] += 1;
            }
            perm
        }
        RowOrder::Random => {
            // Fisher-Yates with its own generator: the values' generators are untouched.
            let mut rng = SmallRng::seed_from_u64(mix(seed ^ SHUFFLE_SALT, index as u64));
            let mut perm: Vec<u32> = (0..n as u32).collect();
            for i in (1..n).rev() {
                perm.swap(i, rng.random_range(0..=i));
            }
            perm
        }
    };
    // One `take` per column for the whole file, then zero-copy row-group slices.
    let sorted =
        arrow_select::take::take_record_batch(&all, &UInt32Array::from(perm)).map_err(arrow)?;
    drop(all);
    Ok((0..n)
        .step_by(ROW_GROUP_ROWS)
        .map(|at| sorted.slice(at, ROW_GROUP_ROWS.min(n - at)))
        .collect())
}

/// Build one partition in time order as record batches of at most [`ROW_GROUP_ROWS`] rows.
fn build_time_batches(
    seed: u64,
    index: usize,
    rows: usize,
    stations: &Stations,
    schema: &SchemaRef,
) -> Result<Vec<RecordBatch>> {
    let mut rng = SmallRng::seed_from_u64(mix(seed, index as u64));
    let year = FIRST_YEAR + (index / 12) as i32;
    let month = (index % 12) as u32 + 1;
    let start_day = days_from_civil(year, month, 1);
    let end_day = if month == 12 {
        days_from_civil(year + 1, 1, 1)
    } else {
        days_from_civil(year, month + 1, 1)
    };
    let minutes = u64::try_from((end_day - start_day) * 1440)
        .unwrap_or(1440)
        .max(1);
    let mut offsets: Vec<u64> = (0..rows).map(|_| rng.random_range(0..minutes)).collect();
    offsets.sort_unstable();
    let start_us = start_day * 86_400_000_000;

    let mut batches = Vec::with_capacity(rows.div_ceil(ROW_GROUP_ROWS));
    let mut done = 0;
    while done < rows {
        let n = (rows - done).min(ROW_GROUP_ROWS);
        let offs = &offsets[done..done + n];
        done += n;
        let station: Vec<i32> = (0..n)
            .map(|_| rng.random_range(0..NUM_STATIONS as i32))
            .collect();
        let keys = Int32Array::from(station.clone());
        let dict = |values: &ArrayRef| -> Result<ArrayRef> {
            DictionaryArray::<Int32Type>::try_new(keys.clone(), values.clone())
                .map(|d| Arc::new(d) as ArrayRef)
                .map_err(|e| EngineError::arrow("datagen", e))
        };
        let gather = |v: &[f64]| -> ArrayRef {
            Arc::new(Float64Array::from_iter_values(
                station.iter().map(|&s| v[s as usize]),
            ))
        };
        let datetime: ArrayRef = Arc::new(TimestampMicrosecondArray::from_iter_values(
            offs.iter().map(|&m| start_us + (m as i64) * 60_000_000),
        ));
        let day: ArrayRef = Arc::new(Int32Array::from_iter_values(
            offs.iter().map(|&m| (m / 1440) as i32 + 1),
        ));

        let wind_angle = nullable_f64(n, &mut rng, 0.80, |r| {
            f64::from(r.random_range(0..=36u32) * 10)
        });
        let wind_speed = nullable_f64(n, &mut rng, 0.83, |r| {
            // Gamma(1.5, 2.3) = 2.3 * (Exp(1) + N(0,1)^2 / 2)
            let e = -(1.0 - r.random::<f64>()).ln();
            let z = normal(r);
            round_to((2.3 * (e + z * z / 2.0)).min(90.0), 0.1)
        });
        let temperature = nullable_f64(n, &mut rng, 0.98, |r| {
            round_to((12.0 + 12.5 * normal(r)).clamp(-91.3, 61.7), 0.1)
        });
        let pressure = nullable_f64(n, &mut rng, 0.35, |r| {
            round_to((1014.6 + 9.4 * normal(r)).clamp(860.0, 1090.0), 0.1)
        });
        let cloud: ArrayRef = {
            let ck: Int32Array = (0..n)
                .map(|_| {
                    if rng.random::<f64>() < 0.15 {
                        Some(rng.random_range(0..CLOUDS.len() as i32))
                    } else {
                        None
                    }
                })
                .collect();
            let values: ArrayRef = Arc::new(StringArray::from_iter_values(CLOUDS));
            Arc::new(
                DictionaryArray::<Int32Type>::try_new(ck, values)
                    .map_err(|e| EngineError::arrow("datagen", e))?,
            )
        };
        let present_wx = nullable_f64(n, &mut rng, 0.09, |r| weighted(r, &PRESENT_WEATHER));
        let past_wx = nullable_f64(n, &mut rng, 0.037, |r| f64::from(r.random_range(0..=9u32)));
        let precip_mask: Vec<bool> = (0..n).map(|_| rng.random::<f64>() < 0.21).collect();
        let precip_time = masked_f64(&mut rng, &precip_mask, &mut |r| weighted(r, &PRECIP_TIME));
        let precip_depth = masked_f64(&mut rng, &precip_mask, &mut |r| {
            let x = r.random::<f64>();
            if x < 0.10 {
                9999.0
            } else if x < 0.55 {
                0.0
            } else {
                (-(1.0 - r.random::<f64>()).ln() * 20.0).round().min(2000.0)
            }
        });
        let snow = nullable_f64(n, &mut rng, 0.006, |r| {
            if r.random::<f64>() < 0.005 {
                999.0
            } else {
                (-(1.0 - r.random::<f64>()).ln() * 18.0).round().min(500.0)
            }
        });

        let columns: Vec<ArrayRef> = vec![
            dict(&stations.usaf)?,
            dict(&stations.wban)?,
            datetime,
            gather(&stations.lat),
            gather(&stations.lon),
            gather(&stations.elev),
            wind_angle,
            wind_speed,
            temperature,
            pressure,
            cloud,
            present_wx,
            past_wx,
            precip_time,
            precip_depth,
            snow,
            dict(&stations.name)?,
            dict(&stations.country)?,
            dict(&stations.p_k)?,
            Arc::new(Int32Array::from_value(year, n)),
            day,
            Arc::new(Float64Array::from_value(1.0, n)),
        ];
        batches.push(
            RecordBatch::try_new(schema.clone(), columns)
                .map_err(|e| EngineError::arrow("datagen", e))?,
        );
    }
    Ok(batches)
}

/// `out/year=YYYY/month=M/part-00000.parquet` for partition `index` (0 = 2008-01).
fn partition_path(out: &Path, index: usize) -> PathBuf {
    let year = FIRST_YEAR + (index / 12) as i32;
    let month = index % 12 + 1;
    out.join(format!("year={year}"))
        .join(format!("month={month}"))
        .join("part-00000.parquet")
}

/// Generate and write one partition; returns the bytes written.
fn write_partition(
    out: &Path,
    seed: u64,
    index: usize,
    rows: u64,
    order: RowOrder,
    stations: &Stations,
    schema: &SchemaRef,
) -> Result<u64> {
    let path = partition_path(out, index);
    let dir = path.parent().unwrap_or(out).to_path_buf();
    let path_s = path.display().to_string();
    let rows = usize::try_from(rows)
        .map_err(|_| EngineError::Argument(format!("datagen: too many rows ({rows})")))?;
    let batches = build_batches(seed, index, rows, order, stations, schema)?;
    fs::create_dir_all(&dir).map_err(|e| EngineError::io(dir.display().to_string(), e))?;
    let file = File::create(&path).map_err(|e| EngineError::io(&path_s, e))?;
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_dictionary_enabled(true)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .build();
    let mut writer = ArrowWriter::try_new(
        BufWriter::with_capacity(1 << 20, file),
        schema.clone(),
        Some(props),
    )
    .map_err(|e| EngineError::parquet(&path_s, e))?;
    for b in &batches {
        writer
            .write(b)
            .map_err(|e| EngineError::parquet(&path_s, e))?;
    }
    let mut buf = writer
        .into_inner()
        .map_err(|e| EngineError::parquet(&path_s, e))?;
    buf.flush().map_err(|e| EngineError::io(&path_s, e))?;
    let size = fs::metadata(&path)
        .map_err(|e| EngineError::io(&path_s, e))?
        .len();
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_days() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(
            days_from_civil(2008, 2, 29) + 1,
            days_from_civil(2008, 3, 1)
        );
    }

    /// One file of `rows` rows in `order`, as one batch, with its row-group sizes.
    fn file(rows: usize, order: RowOrder) -> (RecordBatch, Vec<usize>) {
        let stations = Stations::generate(7);
        let schema = isd_schema();
        let batches = build_batches(7, 30, rows, order, &stations, &schema).expect("build");
        let sizes = batches.iter().map(RecordBatch::num_rows).collect();
        let all = arrow_select::concat::concat_batches(&schema, &batches).expect("concat");
        (all, sizes)
    }

    /// Each row encoded as comparable bytes (arrow-row), in the file's order.
    fn rows_of(batch: &RecordBatch) -> Vec<Vec<u8>> {
        use arrow_row::{RowConverter, SortField};
        let fields = batch
            .schema()
            .fields()
            .iter()
            .map(|f| SortField::new(f.data_type().clone()))
            .collect();
        let converter = RowConverter::new(fields).expect("converter");
        let rows = converter.convert_columns(batch.columns()).expect("rows");
        rows.iter().map(|r| r.as_ref().to_vec()).collect()
    }

    fn station_and_time(batch: &RecordBatch) -> Vec<(i32, i64)> {
        let usaf = batch
            .column(0)
            .as_any()
            .downcast_ref::<DictionaryArray<Int32Type>>()
            .expect("usaf");
        let names = usaf
            .values()
            .as_any()
            .downcast_ref::<StringArray>()
            .expect("names");
        let time = batch
            .column(2)
            .as_any()
            .downcast_ref::<TimestampMicrosecondArray>()
            .expect("datetime");
        (0..batch.num_rows())
            .map(|i| {
                let id = names.value(usaf.keys().value(i) as usize);
                (id.parse().expect("usaf digits"), time.value(i))
            })
            .collect()
    }

    #[test]
    fn every_order_holds_the_same_rows() {
        // More than two row groups, so the permutation crosses row-group boundaries.
        let n = 2 * ROW_GROUP_ROWS + 1234;
        let (time, time_sizes) = file(n, RowOrder::Time);
        let mut expected = rows_of(&time);
        let time_rows = expected.clone();
        expected.sort_unstable();
        let keys = station_and_time(&time);
        assert!(keys.windows(2).all(|w| w[0].1 <= w[1].1), "time order");
        for order in [RowOrder::Station, RowOrder::Random] {
            let (batch, sizes) = file(n, order);
            assert_eq!(
                sizes, time_sizes,
                "{order}: row groups of {ROW_GROUP_ROWS} rows"
            );
            assert_eq!(batch.schema(), time.schema());
            let got = rows_of(&batch);
            assert_ne!(got, time_rows, "{order}: the order differs");
            let mut sorted = got;
            sorted.sort_unstable();
            assert!(sorted == expected, "{order}: the same multiset of rows");
            let keys = station_and_time(&batch);
            let by_station = keys
                .windows(2)
                .all(|w| w[0].0 != w[1].0 || w[0].1 <= w[1].1);
            let mut seen = std::collections::HashSet::new();
            let runs = keys.windows(2).filter(|w| w[0].0 != w[1].0).count() + 1;
            let stations = keys.iter().filter(|k| seen.insert(k.0)).count();
            match order {
                // Grouped: one run per station, time order inside each.
                RowOrder::Station => {
                    assert!(by_station, "time order within a station");
                    assert_eq!(runs, stations, "one run per station");
                }
                _ => {
                    assert!(runs > stations * 10, "shuffled: {runs} runs");
                    assert!(!keys.windows(2).all(|w| w[0].1 <= w[1].1));
                }
            }
        }
        // Same seed, same order: the same rows in the same order.
        assert_eq!(
            rows_of(&file(5000, RowOrder::Random).0),
            rows_of(&file(5000, RowOrder::Random).0)
        );
    }

    #[test]
    fn order_names() {
        for order in RowOrder::ALL {
            assert_eq!(order.name().parse::<RowOrder>(), Ok(order));
        }
        assert_eq!(RowOrder::default(), RowOrder::Time);
        assert!("sorted".parse::<RowOrder>().is_err());
    }
}
