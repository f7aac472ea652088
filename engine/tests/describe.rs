//! Integration tests of `stratus_engine::describe`: moments merged over partitions, and the
//! distributed exact-quantile search (histograms per partition → merge → feed) checked
//! bit for bit against an oracle that sorts the whole column (pandas' / numpy's linear rule).

use std::sync::Arc;

use arrow_array::{
    Array, ArrayRef, DictionaryArray, Float32Array, Float64Array, Int32Array, Int64Array,
    Int8Array, RecordBatch, StringArray, UInt64Array, UInt8Array,
};
use arrow_schema::{DataType, Field, Schema};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use stratus_engine::describe::{
    column_moments, column_summary, describable_columns, histograms, is_describable,
    merge_distinct, merge_histograms, range_histograms, summaries, KeyCounter, QuantileSearch,
    DEFAULT_PERCENTILES, MAX_DISTINCT,
};
use stratus_engine::num::float_key;
use stratus_plan::{ColumnRanges, KeyRange, Moments, RangeHistogram};

mod describe_rounds;
use describe_rounds::{describe_rounds, Described};

const COL: &str = "x";
const QS: [f64; 7] = [0.0, 0.25, 0.5, 0.75, 1.0, 0.1, 0.999];

// ------------------------------------------------------------------------------------------
// Test values, arrays, partitions
// ------------------------------------------------------------------------------------------

/// A value of the oracle: floats compare in total order, integers exactly.
#[derive(Clone, Copy, Debug)]
enum Ov {
    F(f64),
    I(i128),
}

trait TestVal: Copy {
    fn data_type() -> DataType;
    fn array(values: &[Option<Self>]) -> ArrayRef;
    /// None for NaN.
    fn oracle(self) -> Option<Ov>;
}

macro_rules! test_int {
    ($t:ty, $arr:ty, $dt:expr) => {
        impl TestVal for $t {
            fn data_type() -> DataType {
                $dt
            }
            fn array(values: &[Option<Self>]) -> ArrayRef {
                Arc::new(<$arr>::from(values.to_vec()))
            }
            fn oracle(self) -> Option<Ov> {
                Some(Ov::I(self as i128))
            }
        }
    };
}
test_int!(i8, Int8Array, DataType::Int8);
test_int!(i32, Int32Array, DataType::Int32);
test_int!(i64, Int64Array, DataType::Int64);
test_int!(u8, UInt8Array, DataType::UInt8);
test_int!(u64, UInt64Array, DataType::UInt64);

impl TestVal for f64 {
    fn data_type() -> DataType {
        DataType::Float64
    }
    fn array(values: &[Option<Self>]) -> ArrayRef {
        Arc::new(Float64Array::from(values.to_vec()))
    }
    fn oracle(self) -> Option<Ov> {
        // -0.0 counts as 0.0 (they compare equal; describe reports 0.0).
        (!self.is_nan()).then_some(Ov::F(self + 0.0))
    }
}

impl TestVal for f32 {
    fn data_type() -> DataType {
        DataType::Float32
    }
    fn array(values: &[Option<Self>]) -> ArrayRef {
        Arc::new(Float32Array::from(values.to_vec()))
    }
    fn oracle(self) -> Option<Ov> {
        (!self.is_nan()).then_some(Ov::F(self as f64 + 0.0))
    }
}

fn batch_of<T: TestVal>(values: &[Option<T>]) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![Field::new(COL, T::data_type(), true)]));
    RecordBatch::try_new(schema, vec![T::array(values)]).unwrap()
}

/// Splits `values` into `parts` partitions (some empty, some with no batches at all) of
/// batches of random sizes (some of 0 rows).
fn partition<T: TestVal>(
    values: &[Option<T>],
    parts: usize,
    rng: &mut SmallRng,
) -> Vec<Vec<RecordBatch>> {
    let mut cuts: Vec<usize> = (0..parts.saturating_sub(1))
        .map(|_| rng.random_range(0..=values.len()))
        .collect();
    cuts.push(0);
    cuts.push(values.len());
    cuts.sort_unstable();
    let mut out = Vec::new();
    for w in cuts.windows(2) {
        let chunk = &values[w[0]..w[1]];
        if chunk.is_empty() && rng.random::<bool>() {
            out.push(Vec::new());
            continue;
        }
        let mut batches = Vec::new();
        let mut at = 0;
        loop {
            if rng.random_range(0..6) == 0 {
                batches.push(batch_of::<T>(&[]));
            }
            if at >= chunk.len() {
                break;
            }
            let len = rng.random_range(1..=chunk.len() - at);
            let len = len.min(1 + chunk.len() / 3);
            batches.push(batch_of(&chunk[at..at + len]));
            at += len;
        }
        out.push(batches);
    }
    out
}

// ------------------------------------------------------------------------------------------
// The oracle
// ------------------------------------------------------------------------------------------

fn sorted_oracle<T: TestVal>(values: &[Option<T>]) -> Vec<Ov> {
    let mut v: Vec<Ov> = values.iter().flatten().filter_map(|x| x.oracle()).collect();
    v.sort_by(|a, b| match (a, b) {
        (Ov::F(a), Ov::F(b)) => a.total_cmp(b),
        (Ov::I(a), Ov::I(b)) => a.cmp(b),
        _ => unreachable!(),
    });
    v
}

/// pandas' describe quantile: numpy.percentile(values, q * 100), method linear.
fn oracle_quantile(sorted: &[Ov], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let n = sorted.len();
    let q = (q * 100.0) / 100.0;
    let pos = (n - 1) as f64 * q;
    let lo = pos.floor() as usize;
    let hi = (lo + 1).min(n - 1);
    let t = pos - pos.floor();
    let (a, b, diff) = match (sorted[lo], sorted[hi]) {
        (Ov::F(a), Ov::F(b)) => (a, b, b - a),
        (Ov::I(a), Ov::I(b)) => (a as f64, b as f64, (b - a) as f64),
        _ => unreachable!(),
    };
    if t == 0.0 {
        a
    } else if t >= 0.5 {
        b - diff * (1.0 - t)
    } else {
        a + diff * t
    }
}

fn as_f64(v: Ov) -> f64 {
    match v {
        Ov::F(x) => x,
        Ov::I(x) => x as f64,
    }
}

/// Two-pass mean and sample std over everything at once.
fn oracle_moments(sorted: &[Ov]) -> (f64, f64) {
    let xs: Vec<f64> = sorted.iter().map(|&v| as_f64(v)).collect();
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let ss: f64 = xs.iter().map(|x| (x - mean) * (x - mean)).sum();
    (mean, (ss / (n - 1.0)).sqrt())
}

// ------------------------------------------------------------------------------------------
// The distributed loop, as the scheduler runs it
// ------------------------------------------------------------------------------------------

struct Run {
    moments: Moments,
    quantiles: Vec<f64>,
    rounds: usize,
}

fn run(
    parts: &[Vec<RecordBatch>],
    dt: &DataType,
    qs: &[f64],
    bounded: bool,
    max_distinct: Option<usize>,
) -> Run {
    let mut moments = Moments::default();
    for p in parts {
        moments.merge(&column_moments(p, COL).unwrap());
    }
    let mut search = if bounded {
        QuantileSearch::from_moments(&moments, qs, dt).unwrap()
    } else {
        QuantileSearch::new(moments.count, qs, dt).unwrap()
    };
    if let Some(k) = max_distinct {
        search.set_max_distinct(k);
    }
    loop {
        let ranges = search.next_round();
        if ranges.is_empty() {
            break;
        }
        let mut per_range: Vec<Vec<RangeHistogram>> = vec![Vec::new(); ranges.len()];
        for p in parts {
            let hs =
                histograms(p, COL, &ranges, search.round_bits(), search.max_distinct()).unwrap();
            assert_eq!(hs.len(), ranges.len());
            for (i, h) in hs.into_iter().enumerate() {
                per_range[i].push(h);
            }
        }
        let merged: Vec<RangeHistogram> = per_range.iter().map(|v| merge_histograms(v)).collect();
        assert!(search.result().is_none());
        search.feed(&merged).unwrap();
        assert!(search.rounds() <= 64, "search does not converge");
    }
    Run {
        moments,
        quantiles: search.result().expect("finished search has a result"),
        rounds: search.rounds(),
    }
}

/// The whole describe of [`COL`] as workers and the scheduler run it.
fn describe(
    parts: &[Vec<RecordBatch>],
    dt: &DataType,
    qs: &[f64],
    max_distinct: usize,
) -> Described {
    describe_rounds(parts, COL, dt, qs, max_distinct).unwrap()
}

fn close(a: f64, b: f64, rel: f64, scale: f64) -> bool {
    a == b || (a - b).abs() <= rel * b.abs().max(scale)
}

/// Runs every search flavour over `values` split `parts` ways and checks against the oracle.
fn check<T: TestVal>(values: &[Option<T>], parts: usize, seed: u64, check_moments: bool) -> usize {
    let mut rng = SmallRng::seed_from_u64(seed);
    let parted = partition(values, parts, &mut rng);
    let sorted = sorted_oracle(values);
    let expected: Vec<f64> = QS.iter().map(|&q| oracle_quantile(&sorted, q)).collect();
    let mut max_rounds = 0;
    for (bounded, max_distinct) in [
        (false, None),
        (true, None),
        (false, Some(0)),
        (true, Some(0)),
        (false, Some(1 << 20)),
    ] {
        let r = run(&parted, &T::data_type(), &QS, bounded, max_distinct);
        assert_eq!(r.moments.count, sorted.len() as u64);
        for (i, (&got, &want)) in r.quantiles.iter().zip(&expected).enumerate() {
            assert_eq!(
                got.to_bits(),
                want.to_bits(),
                "{:?} q={} got {got:e} want {want:e} (bounded {bounded}, max_distinct {max_distinct:?})",
                T::data_type(),
                QS[i]
            );
        }
        assert!(r.rounds <= 4, "{} rounds", r.rounds);
        max_rounds = max_rounds.max(r.rounds);
        if !sorted.is_empty() {
            let min = as_f64(sorted[0]);
            let max = as_f64(*sorted.last().unwrap());
            assert_eq!(r.moments.min, min);
            assert_eq!(r.moments.max, max);
        }
        if check_moments && sorted.len() >= 2 {
            let (mean, std) = oracle_moments(&sorted);
            let scale = sorted.iter().map(|&v| as_f64(v).abs()).sum::<f64>() / sorted.len() as f64;
            assert!(
                close(r.moments.mean, mean, 1e-12, scale),
                "mean {} vs {mean}",
                r.moments.mean
            );
            let got = r.moments.std().unwrap();
            assert!(close(got, std, 1e-12, 0.0), "std {got} vs {std}");
        }
    }
    // The rounds as workers and the scheduler run them agree, whatever the distinct-key
    // limit (the scheduler's depends on the cluster's size).
    for max_distinct in [MAX_DISTINCT, 16, 0] {
        let d = describe(&parted, &T::data_type(), &QS, max_distinct);
        assert_eq!(d.moments.count, sorted.len() as u64);
        for (got, want) in d.quantiles.iter().zip(&expected) {
            assert_eq!(got.to_bits(), want.to_bits(), "max_distinct {max_distinct}");
        }
    }
    max_rounds
}

fn with_nulls<T: Copy>(
    rng: &mut SmallRng,
    n: usize,
    null_frac: f64,
    mut f: impl FnMut(&mut SmallRng) -> T,
) -> Vec<Option<T>> {
    (0..n)
        .map(|_| {
            if rng.random::<f64>() < null_frac {
                None
            } else {
                Some(f(rng))
            }
        })
        .collect()
}

fn normal(rng: &mut SmallRng) -> f64 {
    let u1: f64 = 1.0 - rng.random::<f64>();
    let u2: f64 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

// ------------------------------------------------------------------------------------------
// Random columns, bit-exact quantiles
// ------------------------------------------------------------------------------------------

fn mixed_f64(rng: &mut SmallRng) -> f64 {
    match rng.random_range(0..10) {
        0 => f64::NAN,
        1 => -0.0,
        2 => 0.0,
        3 => rng.random_range(-50..50) as f64, // duplicates
        4 => normal(rng) * 1e-300,             // tiny
        5 => normal(rng) * 1e150,              // huge, squares still finite
        6 => 5e-324 * rng.random_range(-3..4) as f64, // subnormals
        _ => normal(rng) * 1000.0,
    }
}

#[test]
fn float64_quantiles_exact_and_moments() {
    let mut rng = SmallRng::seed_from_u64(1);
    for (n, parts) in [(1, 1), (2, 3), (7, 2), (100, 5), (5_000, 8), (60_000, 13)] {
        let values = with_nulls(&mut rng, n, 0.2, mixed_f64);
        check(&values, parts, n as u64, true);
    }
    // Plain normal data: moments checked where relative errors are meaningful.
    let values = with_nulls(&mut rng, 50_000, 0.1, |r| 40.0 + 20.0 * normal(r));
    check(&values, 9, 99, true);
}

#[test]
fn float64_extremes_quantiles_exact() {
    let mut rng = SmallRng::seed_from_u64(2);
    let specials = [
        f64::MAX,
        f64::MIN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::MIN_POSITIVE,
        -f64::MIN_POSITIVE,
        5e-324,
        -5e-324,
        -0.0,
        0.0,
        f64::NAN,
    ];
    for n in [3, 11, 1_000, 20_000] {
        let values = with_nulls(&mut rng, n, 0.1, |r| {
            if r.random::<bool>() {
                specials[r.random_range(0..specials.len())]
            } else {
                mixed_f64(r)
            }
        });
        check(&values, 6, n as u64, false);
    }
}

#[test]
fn float32_quantiles_exact_and_moments() {
    let mut rng = SmallRng::seed_from_u64(3);
    for (n, parts) in [(5, 2), (1_000, 4), (40_000, 7)] {
        let values = with_nulls(&mut rng, n, 0.25, |r| match r.random_range(0..8) {
            0 => f32::NAN,
            1 => -0.0f32,
            2 => r.random_range(-5..5) as f32,
            3 => (normal(r) * 1e30) as f32,
            4 => (normal(r) * 1e-30) as f32,
            _ => (normal(r) * 12.5 + 8.0) as f32,
        });
        check(&values, parts, n as u64, true);
    }
    let values = with_nulls(&mut rng, 1_000, 0.1, |r| match r.random_range(0..4) {
        0 => f32::MAX,
        1 => f32::MIN,
        2 => f32::INFINITY,
        _ => f32::NEG_INFINITY,
    });
    check(&values, 3, 7, false);
}

#[test]
fn int32_quantiles_exact_and_moments() {
    let mut rng = SmallRng::seed_from_u64(4);
    for (n, parts) in [(1, 1), (9, 3), (3_000, 5), (50_000, 11)] {
        let values = with_nulls(&mut rng, n, 0.1, |r| match r.random_range(0..4) {
            0 => r.random::<i32>(),
            1 => *[i32::MIN, i32::MAX, 0, -1]
                .get(r.random_range(0..4))
                .unwrap(),
            _ => r.random_range(-300..300),
        });
        check(&values, parts, n as u64, true);
    }
    // A `year` column: resolved in one round once min/max are known.
    let years = with_nulls(&mut rng, 20_000, 0.0, |r| r.random_range(2008..=2019));
    check(&years, 4, 5, true);
    let mut parted_rng = SmallRng::seed_from_u64(6);
    let parted = partition(&years, 4, &mut parted_rng);
    let r = run(
        &parted,
        &DataType::Int32,
        &DEFAULT_PERCENTILES,
        true,
        Some(0),
    );
    assert_eq!(r.rounds, 1);
}

#[test]
fn int64_quantiles_exact_and_moments() {
    let mut rng = SmallRng::seed_from_u64(5);
    for (n, parts) in [(2, 2), (17, 3), (4_000, 6), (50_000, 10)] {
        let values = with_nulls(&mut rng, n, 0.15, |r| match r.random_range(0..5) {
            0 => r.random::<i64>(),
            1 => *[i64::MIN, i64::MAX, i64::MIN + 1, i64::MAX - 1, 0]
                .get(r.random_range(0..5))
                .unwrap(),
            2 => r.random_range(-(1i64 << 53)..(1i64 << 53)),
            _ => r.random_range(-1000..1000),
        });
        check(&values, parts, n as u64, true);
    }
}

#[test]
fn small_and_unsigned_ints_quantiles_exact() {
    let mut rng = SmallRng::seed_from_u64(8);
    let v8 = with_nulls(&mut rng, 3_000, 0.1, |r| r.random::<i8>());
    check(&v8, 4, 1, true);
    let u8s = with_nulls(&mut rng, 3_000, 0.1, |r| r.random::<u8>());
    check(&u8s, 4, 2, true);
    let u64s = with_nulls(&mut rng, 3_000, 0.1, |r| match r.random_range(0..3) {
        0 => u64::MAX,
        1 => r.random::<u64>(),
        _ => r.random_range(0..100),
    });
    check(&u64s, 4, 3, true);
}

#[test]
fn duplicate_heavy_like_precip_depth() {
    // ~70% null; of the rest 90% zeros, some 9999 sentinels, a spread of small depths.
    let mut rng = SmallRng::seed_from_u64(9);
    let values = with_nulls(&mut rng, 100_000, 0.7, |r| {
        let u = r.random::<f64>();
        if u < 0.9 {
            0.0
        } else if u < 0.95 {
            9999.0
        } else {
            r.random_range(1..500) as f64
        }
    });
    check(&values, 12, 10, true);
    // Only zeros: min == max, no round at all when bounded.
    let zeros = vec![Some(0.0f64); 1000];
    let parted = partition(&zeros, 3, &mut rng);
    let r = run(
        &parted,
        &DataType::Float64,
        &DEFAULT_PERCENTILES,
        true,
        None,
    );
    assert_eq!(r.rounds, 0);
    assert_eq!(r.quantiles, vec![0.0; 3]);
    assert_eq!(r.moments.std(), Some(0.0));
}

// ------------------------------------------------------------------------------------------
// Numerical stability, rounds
// ------------------------------------------------------------------------------------------

#[test]
fn values_to_a_tenth_resolve_in_the_summary_round() {
    // Temperatures to 0.1 °C with nulls and NaN: ~1,000 distinct values over 200 k rows.
    let mut rng = SmallRng::seed_from_u64(11);
    let values = with_nulls(&mut rng, 200_000, 0.05, |r| {
        if r.random::<f64>() < 0.01 {
            f64::NAN
        } else {
            ((12.0 + 12.5 * normal(r)).clamp(-40.0, 60.0) * 10.0).round() / 10.0
        }
    });
    let mut rng = SmallRng::seed_from_u64(12);
    let parted = partition(&values, 5, &mut rng);
    let sorted = sorted_oracle(&values);
    let d = describe(&parted, &DataType::Float64, &QS, MAX_DISTINCT);
    assert_eq!(d.rounds, 0, "no histogram round is needed");
    assert_eq!(d.moments.count, sorted.len() as u64);
    for (&q, got) in QS.iter().zip(&d.quantiles) {
        assert_eq!(
            got.to_bits(),
            oracle_quantile(&sorted, q).to_bits(),
            "q={q}"
        );
    }
    // The same as the histogram-only search.
    let r = run(&parted, &DataType::Float64, &QS, true, Some(0));
    assert!(r.rounds >= 2);
    assert_eq!(r.quantiles, d.quantiles);
    // Each partition's summary: its moments, and its keys adding up to its count.
    for p in &parted {
        let s = column_summary(p, COL, MAX_DISTINCT).unwrap();
        assert_eq!(s.moments, column_moments(p, COL).unwrap());
        let distinct = s.distinct.expect("few distinct values");
        assert!(distinct.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(distinct.iter().map(|d| d.1).sum::<u64>(), s.moments.count);
        // Too many for a small limit: no keys, same moments.
        let small = column_summary(p, COL, 10).unwrap();
        assert_eq!((small.moments, small.distinct), (s.moments, None));
    }
}

#[test]
fn distinct_keys_that_do_not_add_up_are_refused() {
    let values: Vec<Option<f64>> = (0..100).map(|i| Some(f64::from(i % 7))).collect();
    let parted = [vec![batch_of(&values)]];
    let s = column_summary(&parted[0], COL, MAX_DISTINCT).unwrap();
    let mut search =
        QuantileSearch::from_moments(&s.moments, &DEFAULT_PERCENTILES, &DataType::Float64).unwrap();
    let mut short = s.distinct.clone().unwrap();
    short.pop();
    let err = search.feed_distinct(&short).unwrap_err().to_string();
    assert!(err.contains("inconsistent"), "{err}");
    let mut outside = s.distinct.clone().unwrap();
    outside[0].0 = float_key(-1e300);
    assert!(search.feed_distinct(&outside).is_err());
    assert!(
        !search.is_done(),
        "a refused feed leaves the search as it was"
    );
    search.feed_distinct(&s.distinct.unwrap()).unwrap();
    assert_eq!(search.result().unwrap(), vec![1.0, 3.0, 5.0]);
    // Any worker without keys: no merged keys.
    assert_eq!(merge_distinct(&[Some(vec![(1, 2)]), None]), None);
    assert_eq!(
        merge_distinct(&[Some(vec![(1, 2), (5, 1)]), Some(vec![(1, 1)])]),
        Some(vec![(1, 3), (5, 1)])
    );
}

#[test]
fn key_counter_counts_until_its_limit() {
    let mut c = KeyCounter::new(3);
    for k in [7u64, 3, 7, u64::MAX, 0] {
        let _ = c.add(k, 1);
    }
    assert!(!c.is_counting(), "4 distinct keys over a limit of 3");
    assert_eq!(c.into_sorted(), None);
    let mut c = KeyCounter::new(3);
    for k in [7u64, 0, 7, u64::MAX, 0, 7] {
        assert!(c.add(k, 1));
    }
    assert!(c.add(0, 5));
    assert_eq!(c.into_sorted(), Some(vec![(0, 7), (7, 3), (u64::MAX, 1)]));
    assert_eq!(KeyCounter::new(0).into_sorted(), None);
    assert_eq!(KeyCounter::new(4).into_sorted(), Some(vec![]));
}

#[test]
fn sea_level_pressure_std_keeps_its_digits() {
    // Mean 1014.6, std ~9.4, one decimal like ISD; 2 M values over 200 partitions.
    let mut rng = SmallRng::seed_from_u64(11);
    let n = 2_000_000;
    let values: Vec<Option<f64>> = (0..n)
        .map(|_| Some(((1014.6 + 9.4 * normal(&mut rng)) * 10.0).round() / 10.0))
        .collect();
    let per = n / 200;
    let mut merged = Moments::default();
    for chunk in values.chunks(per) {
        // Each partition of a few batches.
        let batches: Vec<RecordBatch> = chunk.chunks(per / 3 + 1).map(batch_of).collect();
        merged.merge(&column_moments(&batches, COL).unwrap());
    }
    let sorted = sorted_oracle(&values);
    let (mean, std) = oracle_moments(&sorted);
    assert_eq!(merged.count, n as u64);
    assert!(
        close(merged.mean, mean, 1e-12, 0.0),
        "{} vs {mean}",
        merged.mean
    );
    assert!(
        close(merged.std().unwrap(), std, 1e-9, 0.0),
        "{:?} vs {std}",
        merged.std()
    );
    assert!((std - 9.4).abs() < 0.1);

    // Also merging in the other order, and one value at a time for a prefix.
    let mut rev = Moments::default();
    for chunk in values.chunks(per).rev() {
        rev.merge(&column_moments(&[batch_of(chunk)], COL).unwrap());
    }
    assert!(close(rev.std().unwrap(), std, 1e-9, 0.0));
    let mut ones = Moments::default();
    for v in values.iter().take(100_000).flatten() {
        ones.merge(&Moments::from_values(&[*v]));
    }
    let (m1, s1) = oracle_moments(&sorted_oracle(&values[..100_000]));
    assert!(close(ones.mean, m1, 1e-12, 0.0));
    assert!(close(ones.std().unwrap(), s1, 1e-9, 0.0));
}

#[test]
fn rounds_stay_few_for_a_million_values() {
    let mut rng = SmallRng::seed_from_u64(12);
    let n = 1_000_000;
    let cols: Vec<Vec<Option<f64>>> = vec![
        (0..n)
            .map(|_| Some(normal(&mut rng) * 12.5 + 12.0))
            .collect(), // continuous
        (0..n)
            .map(|_| Some(((normal(&mut rng) * 12.5 + 12.0) * 10.0).round() / 10.0))
            .collect(), // one decimal
        (0..n)
            .map(|_| Some(rng.random_range(0..360) as f64))
            .collect(), // windAngle-like
    ];
    for (i, values) in cols.iter().enumerate() {
        let parted: Vec<Vec<RecordBatch>> = values
            .chunks(n / 16)
            .map(|c| c.chunks(n / 64).map(batch_of).collect())
            .collect();
        let sorted = sorted_oracle(values);
        for bounded in [false, true] {
            let r = run(
                &parted,
                &DataType::Float64,
                &DEFAULT_PERCENTILES,
                bounded,
                None,
            );
            assert!(r.rounds <= 4, "column {i}: {} rounds", r.rounds);
            eprintln!("column {i} bounded {bounded}: {} rounds", r.rounds);
            for (q, got) in DEFAULT_PERCENTILES.iter().zip(&r.quantiles) {
                assert_eq!(got.to_bits(), oracle_quantile(&sorted, *q).to_bits());
            }
            if i == 0 {
                assert!(r.rounds <= 2, "continuous data: {} rounds", r.rounds);
            }
        }
    }
}

// ------------------------------------------------------------------------------------------
// Edge cases
// ------------------------------------------------------------------------------------------

#[test]
fn all_null_column() {
    let values: Vec<Option<f64>> = vec![None; 100];
    let mut rng = SmallRng::seed_from_u64(13);
    let parted = partition(&values, 4, &mut rng);
    let r = run(
        &parted,
        &DataType::Float64,
        &DEFAULT_PERCENTILES,
        true,
        None,
    );
    assert_eq!(r.moments.count, 0);
    assert_eq!(r.rounds, 0);
    assert!(r.quantiles.iter().all(|q| q.is_nan()) && r.quantiles.len() == 3);
    assert!(r.moments.mean_or_nan().is_nan() && r.moments.std_or_nan().is_nan());
    assert!(r.moments.min_or_nan().is_nan() && r.moments.max_or_nan().is_nan());
    assert_eq!(r.moments.std(), None);
    // NaN-only floats are the same as nulls.
    let nans = vec![Some(f64::NAN); 10];
    let m = column_moments(&[batch_of(&nans)], COL).unwrap();
    assert_eq!(m.count, 0);
    let d = describe(
        &[vec![batch_of(&nans)]],
        &DataType::Float64,
        &DEFAULT_PERCENTILES,
        MAX_DISTINCT,
    );
    let m = d.moments;
    assert_eq!((m.count, d.rounds), (0, 0));
    assert!(m.mean_or_nan().is_nan() && m.std_or_nan().is_nan());
    assert!(m.min_or_nan().is_nan() && m.max_or_nan().is_nan());
    assert!(d.quantiles.iter().all(|q| q.is_nan()) && d.quantiles.len() == 3);
    let s = QuantileSearch::new(0, &DEFAULT_PERCENTILES, &DataType::Int32).unwrap();
    assert!(s.next_round().is_empty());
    assert_eq!(s.result().map(|v| v.len()), Some(3));
}

#[test]
fn single_value_and_single_row_partition() {
    let parted = vec![
        vec![batch_of(&[Some(42i32)])],
        vec![],
        vec![batch_of::<i32>(&[])],
    ];
    // Empty workers send their (empty) keys too: read off in the summary round.
    let d = describe(
        &parted,
        &DataType::Int32,
        &DEFAULT_PERCENTILES,
        MAX_DISTINCT,
    );
    let m = d.moments;
    assert_eq!((m.count, d.rounds), (1, 0));
    assert_eq!(m.mean_or_nan(), 42.0);
    assert!(m.std_or_nan().is_nan());
    assert_eq!((m.min_or_nan(), m.max_or_nan()), (42.0, 42.0));
    assert_eq!(d.quantiles, vec![42.0; 3]);
    // Without keys: the search from min = max needs no round either.
    let d = describe(&parted, &DataType::Int32, &DEFAULT_PERCENTILES, 0);
    assert_eq!((d.quantiles, d.rounds), (vec![42.0; 3], 0));
    let m = column_moments(&parted[0], COL).unwrap();
    assert_eq!(m.std(), None);
    // Unbounded search over one value: 4 rounds without keys, 1 with.
    for (max_distinct, rounds) in [(0, 4), (10, 1)] {
        let r = run(
            &parted,
            &DataType::Int32,
            &DEFAULT_PERCENTILES,
            false,
            Some(max_distinct),
        );
        assert_eq!(r.quantiles, vec![42.0; 3]);
        assert_eq!(r.rounds, rounds);
    }
    // A single-row partition among bigger ones.
    let parted = vec![
        vec![batch_of(&[Some(1.5f64), Some(2.5), None])],
        vec![batch_of(&[Some(-7.0f64)])],
        vec![batch_of(&[Some(3.0f64), Some(f64::NAN), Some(4.0)])],
    ];
    let r = run(
        &parted,
        &DataType::Float64,
        &DEFAULT_PERCENTILES,
        false,
        Some(0),
    );
    assert_eq!(r.moments.count, 5);
    assert_eq!(r.quantiles, vec![1.5, 2.5, 3.0]);
}

#[test]
fn empty_partitions_and_no_batches() {
    assert_eq!(column_moments(&[], COL).unwrap(), Moments::default());
    let empty = batch_of::<f64>(&[]);
    assert_eq!(
        column_moments(&[empty.clone(), empty.clone()], COL)
            .unwrap()
            .count,
        0
    );
    let all = KeyRange {
        prefix: 0,
        prefix_bits: 0,
    };
    let hs = histograms(&[empty], COL, &[all], 16, 8).unwrap();
    assert_eq!(
        hs,
        vec![RangeHistogram {
            buckets: vec![],
            distinct: Some(vec![])
        }]
    );
    assert_eq!(histograms(&[], COL, &[all, all], 16, 8).unwrap().len(), 2);
    // Workers holding no batches, or none at all: nothing to describe, whatever the type.
    for dt in [DataType::Float64, DataType::Int32, DataType::UInt8] {
        for max_distinct in [MAX_DISTINCT, 0] {
            let d = describe(&[vec![], vec![]], &dt, &DEFAULT_PERCENTILES, max_distinct);
            assert_eq!((d.moments.count, d.rounds), (0, 0));
            assert!(d.quantiles.iter().all(|q| q.is_nan()) && d.quantiles.len() == 3);
            let d = describe(&[], &dt, &DEFAULT_PERCENTILES, max_distinct);
            assert!(d.quantiles.iter().all(|q| q.is_nan()) && d.quantiles.len() == 3);
        }
    }
    // An empty worker among others with values: its empty keys merge in.
    let parted = vec![
        vec![],
        vec![batch_of(&[Some(2.0f64), Some(1.0)])],
        vec![batch_of::<f64>(&[])],
    ];
    let d = describe(
        &parted,
        &DataType::Float64,
        &DEFAULT_PERCENTILES,
        MAX_DISTINCT,
    );
    assert_eq!((d.moments.count, d.rounds), (2, 0));
    assert_eq!(d.quantiles, vec![1.25, 1.5, 1.75]);
}

#[test]
fn missing_and_non_numeric_columns_are_errors() {
    let b = batch_of(&[Some(1.0f64)]);
    let e = column_moments(std::slice::from_ref(&b), "temperature")
        .unwrap_err()
        .to_string();
    assert!(e.contains("'temperature'") && e.contains("x"), "{e}");
    let all = KeyRange {
        prefix: 0,
        prefix_bits: 0,
    };
    let e = histograms(std::slice::from_ref(&b), "nope", &[all], 16, 8)
        .unwrap_err()
        .to_string();
    assert!(e.contains("'nope'"), "{e}");
    // A worker's rounds: the first bad column fails the answer.
    let columns = ["x".to_string(), "nope".to_string()];
    let e = summaries(std::slice::from_ref(&b), &columns, 8)
        .unwrap_err()
        .to_string();
    assert!(e.contains("'nope'"), "{e}");
    let ask = columns.map(|column| ColumnRanges {
        column,
        ranges: vec![all],
        bits: 16,
        max_distinct: 8,
    });
    let e = range_histograms(&[b], &ask).unwrap_err().to_string();
    assert!(e.contains("'nope'"), "{e}");

    let schema = Arc::new(Schema::new(vec![Field::new(
        "stationName",
        DataType::Utf8,
        true,
    )]));
    let s =
        RecordBatch::try_new(schema, vec![Arc::new(StringArray::from(vec!["A", "B"]))]).unwrap();
    let e = column_moments(std::slice::from_ref(&s), "stationName")
        .unwrap_err()
        .to_string();
    assert!(e.contains("'stationName'") && e.contains("Utf8"), "{e}");
    let e = histograms(&[s], "stationName", &[all], 16, 8)
        .unwrap_err()
        .to_string();
    assert!(e.contains("'stationName'") && e.contains("Utf8"), "{e}");

    let dict: DictionaryArray<arrow_array::types::Int32Type> =
        vec!["US", "FR", "US"].into_iter().collect();
    let schema = Arc::new(Schema::new(vec![Field::new(
        "countryOrRegion",
        dict.data_type().clone(),
        true,
    )]));
    let d = RecordBatch::try_new(schema, vec![Arc::new(dict) as ArrayRef]).unwrap();
    let e = column_moments(&[d], "countryOrRegion")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("'countryOrRegion'") && e.contains("Dictionary"),
        "{e}"
    );

    assert!(QuantileSearch::new(3, &[0.5], &DataType::Utf8).is_err());
    assert!(QuantileSearch::new(3, &[1.5], &DataType::Float64).is_err());
    assert!(QuantileSearch::new(3, &[f64::NAN], &DataType::Float64).is_err());
    assert!(!is_describable(&DataType::Utf8) && is_describable(&DataType::UInt16));
}

#[test]
fn bad_histogram_requests_are_errors() {
    let b = batch_of(&[Some(1.0f64)]);
    let all = KeyRange {
        prefix: 0,
        prefix_bits: 0,
    };
    assert!(histograms(std::slice::from_ref(&b), COL, &[all], 0, 8).is_err());
    assert!(histograms(std::slice::from_ref(&b), COL, &[all], 17, 8).is_err());
    let deep = KeyRange {
        prefix: 0,
        prefix_bits: 60,
    };
    assert!(histograms(std::slice::from_ref(&b), COL, &[deep], 8, 8).is_err());
    let wide = KeyRange {
        prefix: 1 << 20,
        prefix_bits: 16,
    };
    assert!(histograms(&[b], COL, &[wide], 8, 8).is_err());
}

#[test]
fn feed_detects_missing_partitions_and_mismatched_rounds() {
    let parts = [
        vec![batch_of(
            &(0..100).map(|i| Some(i as f64)).collect::<Vec<_>>(),
        )],
        vec![batch_of(
            &(0..50).map(|i| Some(-i as f64)).collect::<Vec<_>>(),
        )],
    ];
    let mut s = QuantileSearch::new(150, &DEFAULT_PERCENTILES, &DataType::Float64).unwrap();
    let ranges = s.next_round();
    assert_eq!(ranges.len(), 1);
    // Only the first partition's histogram: counts do not add up.
    let h = histograms(&parts[0], COL, &ranges, s.round_bits(), s.max_distinct()).unwrap();
    let e = s.feed(&h).unwrap_err().to_string();
    assert!(e.contains("expected 150"), "{e}");
    assert!(s.feed(&[]).is_err());
    assert_eq!(s.rounds(), 0);
    // The whole thing still works after the errors.
    let h0 = histograms(&parts[0], COL, &ranges, s.round_bits(), s.max_distinct()).unwrap();
    let h1 = histograms(&parts[1], COL, &ranges, s.round_bits(), s.max_distinct()).unwrap();
    s.feed(&[merge_histograms(&[h0[0].clone(), h1[0].clone()])])
        .unwrap();
    assert!(s.is_done());
    let mut all: Vec<f64> = (0..100)
        .map(|i| i as f64)
        .chain((0..50).map(|i| -i as f64))
        .collect();
    all.sort_by(f64::total_cmp);
    let sorted: Vec<Ov> = all.into_iter().map(Ov::F).collect();
    let want: Vec<f64> = DEFAULT_PERCENTILES
        .iter()
        .map(|&q| oracle_quantile(&sorted, q))
        .collect();
    assert_eq!(s.result().unwrap(), want);
}

#[test]
fn merge_histograms_rules() {
    let a = RangeHistogram {
        buckets: vec![(1, 2), (5, 1)],
        distinct: Some(vec![(10, 1), (11, 1), (50, 1)]),
    };
    let b = RangeHistogram {
        buckets: vec![(1, 1), (3, 4)],
        distinct: None,
    };
    let c = RangeHistogram {
        buckets: vec![(0, 1), (1, 1)],
        distinct: Some(vec![(3, 1), (10, 1)]),
    };
    let empty = RangeHistogram::default();
    let m = merge_histograms(&[a.clone(), b, empty.clone()]);
    assert_eq!(m.buckets, vec![(1, 3), (3, 4), (5, 1)]);
    assert_eq!(m.distinct, None);
    let m = merge_histograms(&[a, c, empty]);
    assert_eq!(m.buckets, vec![(0, 1), (1, 3), (5, 1)]);
    assert_eq!(m.distinct, Some(vec![(3, 1), (10, 2), (11, 1), (50, 1)]));
    assert_eq!(m.total(), 5);
    assert_eq!(merge_histograms(&[]).total(), 0);
}

#[test]
fn moments_merge_identity_and_describable_columns() {
    let m = Moments::from_values(&[1.0, 2.0, 3.0, f64::NAN]);
    assert_eq!(m.count, 3);
    assert_eq!(m.mean, 2.0);
    assert_eq!(m.std(), Some(1.0));
    let mut x = Moments::default();
    x.merge(&m);
    assert_eq!(x, m);
    x.merge(&Moments::default());
    assert_eq!(x, m);
    let mut y = Moments::from_values(&[1.0]);
    y.merge(&Moments::from_values(&[2.0, 3.0]));
    assert_eq!((y.count, y.mean, y.min, y.max), (3, 2.0, 1.0, 3.0));
    assert_eq!(y.std(), Some(1.0));

    let schema = Schema::new(vec![
        Field::new("usaf", DataType::Utf8, true),
        Field::new("latitude", DataType::Float64, true),
        Field::new("year", DataType::Int32, true),
        Field::new(
            "datetime",
            DataType::Timestamp(arrow_schema::TimeUnit::Microsecond, None),
            true,
        ),
    ]);
    assert_eq!(describable_columns(&schema), vec!["latitude", "year"]);
}
