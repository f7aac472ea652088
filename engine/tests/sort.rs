//! Tests of the sort kernels against oracles computed here: the whole range-shuffle
//! pipeline (sample → boundaries → split → sort per range) must equal one stable sort of
//! all the data, for every supported key family.

use std::cmp::Ordering;
use std::sync::Arc;
use std::time::Instant;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int32Type, Int64Type, TimestampMicrosecondType};
use arrow_array::{
    Array, ArrayRef, Date32Array, DictionaryArray, Float64Array, Int32Array, Int64Array,
    RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use stratus_engine::sort::{
    choose_boundaries, invalid_count, key_bounds, ranged_order, ranged_order_nulls_last,
    sample_keys, sort_batches, split_by_ranges,
};

/// A key value as the oracle orders it: None (null or NaN) last.
#[derive(Debug, Clone, PartialEq)]
enum K {
    I(i64),
    F(f64),
    S(String),
}

fn oracle_cmp(a: &Option<K>, b: &Option<K>) -> Ordering {
    match (a, b) {
        (None, None) => Ordering::Equal,
        (None, _) => Ordering::Greater,
        (_, None) => Ordering::Less,
        (Some(K::I(x)), Some(K::I(y))) => x.cmp(y),
        (Some(K::F(x)), Some(K::F(y))) => x.partial_cmp(y).unwrap_or(Ordering::Equal),
        (Some(K::S(x)), Some(K::S(y))) => x.cmp(y),
        _ => panic!("mixed key kinds"),
    }
}

/// The key values of an array as the oracle sees them.
fn key_values(a: &dyn Array) -> Vec<Option<K>> {
    (0..a.len())
        .map(|i| {
            if a.is_null(i) {
                return None;
            }
            match a.data_type() {
                DataType::Int64 => Some(K::I(a.as_primitive::<Int64Type>().value(i))),
                DataType::Int32 => Some(K::I(a.as_primitive::<Int32Type>().value(i).into())),
                DataType::Date32 => Some(K::I(
                    a.as_any()
                        .downcast_ref::<Date32Array>()
                        .unwrap()
                        .value(i)
                        .into(),
                )),
                DataType::Timestamp(_, _) => {
                    Some(K::I(a.as_primitive::<TimestampMicrosecondType>().value(i)))
                }
                DataType::Float64 => {
                    let v = a.as_primitive::<Float64Type>().value(i);
                    (!v.is_nan()).then_some(K::F(v))
                }
                DataType::Utf8 => Some(K::S(a.as_string::<i32>().value(i).to_string())),
                DataType::Dictionary(_, _) => {
                    let d = a.as_dictionary::<Int32Type>();
                    let k = d.keys().value(i) as usize;
                    Some(K::S(d.values().as_string::<i32>().value(k).to_string()))
                }
                other => panic!("type {other}"),
            }
        })
        .collect()
}

fn schema(key_type: DataType) -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("key", key_type, true),
        Field::new("row", DataType::Int64, false),
        Field::new("payload", DataType::Float64, true),
    ]))
}

/// `parts` partitions of `batches` batches of `rows` rows each; `row` numbers every row.
fn make_data(
    key_type: &DataType,
    parts: usize,
    batches: usize,
    rows: usize,
    seed: u64,
) -> Vec<Vec<RecordBatch>> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let schema = schema(key_type.clone());
    let words: Vec<String> = (0..300)
        .map(|i| format!("w{:05}", (i * 7919) % 100_000))
        .collect();
    let mut next_row = 0i64;
    let mut out = Vec::new();
    for _ in 0..parts {
        let mut part = Vec::new();
        for _ in 0..batches {
            let null = |rng: &mut SmallRng| rng.random_range(0..20) == 0;
            let key: ArrayRef =
                match key_type {
                    DataType::Int64 => Arc::new(Int64Array::from_iter((0..rows).map(|_| {
                        (!null(&mut rng)).then(|| rng.random_range(-1_000_000i64..1_000_000))
                    }))),
                    DataType::Timestamp(TimeUnit::Microsecond, tz) => Arc::new(
                        TimestampMicrosecondArray::from_iter((0..rows).map(|_| {
                            (!null(&mut rng))
                                .then(|| 1_200_000_000_000_000 + rng.random_range(0..10i64.pow(14)))
                        }))
                        .with_timezone_opt(tz.clone()),
                    ),
                    DataType::Float64 => Arc::new(Float64Array::from_iter((0..rows).map(|_| {
                        match rng.random_range(0..25) {
                            0 => None,
                            1 => Some(f64::NAN),
                            2 => Some(-f64::NAN),
                            3 => Some(0.0),
                            4 => Some(-0.0),
                            _ => Some(rng.random_range(-1e6..1e6)),
                        }
                    }))),
                    DataType::Dictionary(_, _) => {
                        // Each batch has its own dictionary: a random subset of the words, in
                        // random order, with an unused value and a duplicate.
                        let mut values: Vec<&str> = (0..120)
                            .map(|_| words[rng.random_range(0..words.len())].as_str())
                            .collect();
                        values.push("zzz-unused");
                        let values = StringArray::from(values);
                        let keys = Int32Array::from_iter(
                            (0..rows).map(|_| (!null(&mut rng)).then(|| rng.random_range(0..120))),
                        );
                        Arc::new(DictionaryArray::try_new(keys, Arc::new(values)).unwrap())
                    }
                    other => panic!("type {other}"),
                };
            let row: ArrayRef = Arc::new(Int64Array::from_iter_values(
                next_row..next_row + rows as i64,
            ));
            next_row += rows as i64;
            let payload: ArrayRef = Arc::new(Float64Array::from_iter_values(
                (0..rows).map(|_| rng.random::<f64>()),
            ));
            part.push(RecordBatch::try_new(schema.clone(), vec![key, row, payload]).unwrap());
        }
        out.push(part);
    }
    out
}

/// (key, row, payload) of batches, in order.
fn rows_of(batches: &[RecordBatch]) -> Vec<(Option<K>, i64, f64)> {
    let mut out = Vec::new();
    for b in batches {
        let keys = key_values(b.column(0).as_ref());
        let rows = b.column(1).as_primitive::<Int64Type>();
        let pay = b.column(2).as_primitive::<Float64Type>();
        for (i, k) in keys.into_iter().enumerate() {
            out.push((k, rows.value(i), pay.value(i)));
        }
    }
    out
}

/// The whole range shuffle over `parts`, checked against a stable sort of all rows.
fn check_pipeline(key_type: DataType, seed: u64) {
    let parts = make_data(&key_type, 5, 4, 2_000, seed);
    let ranges = 7;
    let samples: Vec<ArrayRef> = parts
        .iter()
        .map(|p| sample_keys(p, "key", 200).unwrap())
        .collect();
    for s in &samples {
        assert_eq!(s.len(), 200);
        assert_eq!(s.null_count(), 0);
        assert_eq!(s.data_type(), &value_type(&key_type));
    }
    // Deterministic.
    let again = sample_keys(&parts[0], "key", 200).unwrap();
    assert_eq!(again.as_ref(), samples[0].as_ref());

    let boundaries = choose_boundaries(&samples, ranges).unwrap();
    assert_eq!(boundaries.len(), ranges - 1, "{key_type}");
    assert_eq!(boundaries.data_type(), &value_type(&key_type));
    let bvals = key_values(boundaries.as_ref());
    assert!(bvals.iter().all(|b| b.is_some()));
    assert!(bvals
        .windows(2)
        .all(|w| oracle_cmp(&w[0], &w[1]) == Ordering::Less));

    let mut per_range: Vec<Vec<RecordBatch>> = vec![Vec::new(); ranges];
    for p in &parts {
        let split = split_by_ranges(p, "key", &boundaries).unwrap();
        assert_eq!(split.len(), ranges);
        for (r, batches) in split.into_iter().enumerate() {
            assert!(batches.len() <= 1);
            per_range[r].extend(batches);
        }
    }
    let total: usize = parts.iter().flatten().map(|b| b.num_rows()).sum();
    let sizes: Vec<usize> = per_range
        .iter()
        .map(|r| r.iter().map(|b| b.num_rows()).sum())
        .collect();
    assert_eq!(sizes.iter().sum::<usize>(), total);
    let mean = total as f64 / ranges as f64;
    for &s in &sizes {
        assert!(
            (s as f64) < 3.0 * mean,
            "unbalanced {sizes:?} for {key_type}"
        );
    }
    // Every range's keys lie within its boundaries.
    for (r, batches) in per_range.iter().enumerate() {
        for (k, _, _) in rows_of(batches) {
            if k.is_none() {
                assert_eq!(r, ranges - 1, "null/NaN outside the last range");
                continue;
            }
            if r > 0 {
                assert_ne!(oracle_cmp(&k, &bvals[r - 1]), Ordering::Less);
            }
            if r < ranges - 1 {
                assert_eq!(oracle_cmp(&k, &bvals[r]), Ordering::Less);
            }
        }
    }

    // Splitting already sorted data cuts it into runs (slices) in the same order.
    let whole_sorted = sort_batches(&parts.concat(), "key").unwrap();
    let resplit: Vec<RecordBatch> = split_by_ranges(&whole_sorted, "key", &boundaries)
        .unwrap()
        .concat();
    let resplit_rows: Vec<i64> = rows_of(&resplit).iter().map(|r| r.1).collect();
    let sorted_rows: Vec<i64> = rows_of(&whole_sorted).iter().map(|r| r.1).collect();
    assert_eq!(resplit_rows, sorted_rows);

    let mut got = Vec::new();
    for batches in &per_range {
        got.extend(rows_of(&sort_batches(batches, "key").unwrap()));
    }
    let mut want = rows_of(&parts.concat());
    want.sort_by(|a, b| oracle_cmp(&a.0, &b.0));
    assert_eq!(got.len(), want.len());
    // Keys exactly in order, and every row carries its own payload (a permutation).
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(oracle_cmp(&g.0, &w.0), Ordering::Equal, "{g:?} vs {w:?}");
        assert!(
            g.0 == w.0 || (g.0.is_some() && w.0.is_some()),
            "{g:?} vs {w:?}"
        );
    }
    let all = rows_of(&parts.concat());
    let mut seen = vec![false; all.len()];
    for (k, row, pay) in &got {
        let orig = &all[*row as usize];
        assert!(!seen[*row as usize], "row {row} twice");
        seen[*row as usize] = true;
        assert_eq!(orig.2.to_bits(), pay.to_bits());
        assert_eq!(oracle_cmp(&orig.0, k), Ordering::Equal);
    }
    assert!(seen.iter().all(|&s| s));
    // Stable: within equal keys, rows keep the input order (partition, batch, row).
    for w in got.windows(2) {
        if oracle_cmp(&w[0].0, &w[1].0) == Ordering::Equal {
            assert!(w[0].1 < w[1].1, "unstable at rows {} {}", w[0].1, w[1].1);
        }
    }
}

fn value_type(dt: &DataType) -> DataType {
    match dt {
        DataType::Dictionary(_, v) => (**v).clone(),
        other => other.clone(),
    }
}

#[test]
fn pipeline_int64() {
    check_pipeline(DataType::Int64, 1);
}

#[test]
fn pipeline_timestamp_us() {
    check_pipeline(DataType::Timestamp(TimeUnit::Microsecond, None), 2);
    check_pipeline(
        DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        3,
    );
}

#[test]
fn pipeline_float64_with_nan() {
    check_pipeline(DataType::Float64, 4);
}

#[test]
fn pipeline_dictionary() {
    check_pipeline(
        DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
        5,
    );
}

#[test]
fn sort_batches_plain_strings_and_sorted_input() {
    let s = schema(DataType::Utf8);
    let keys: ArrayRef = Arc::new(StringArray::from(vec![
        Some("b"),
        None,
        Some("a"),
        Some("b"),
        Some("a"),
    ]));
    let rows: ArrayRef = Arc::new(Int64Array::from_iter_values(0..5));
    let pay: ArrayRef = Arc::new(Float64Array::from_iter_values((0..5).map(f64::from)));
    let b = RecordBatch::try_new(s, vec![keys, rows, pay]).unwrap();
    let out = sort_batches(&[b.clone(), b.slice(1, 3)], "key").unwrap();
    let got: Vec<i64> = rows_of(&out).iter().map(|r| r.1).collect();
    // Rows of the second batch are 1..=3 again; global order: a(2) a(4) a(2') b(0) b(3) b(3') null(1) null(1')
    assert_eq!(got, vec![2, 4, 2, 0, 3, 3, 1, 1]);

    // Already sorted input comes back untouched.
    let sorted = sort_batches(&out, "key").unwrap();
    assert_eq!(sorted, out);
    assert!(sort_batches(&[], "key").unwrap().is_empty());
}

/// ISD-like month partitions with a day key (Date32), given shuffled.
fn month_partition(year: i32, month: u32, seed: u64) -> Vec<RecordBatch> {
    let days_from_civil = |y: i32, m: u32| -> i32 {
        // Days since 1970-01-01 of the first of the month (Howard Hinnant's algorithm).
        let y = if m <= 2 { y - 1 } else { y };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let mp = (m as i32 + 9) % 12;
        let doy = (153 * mp + 2) / 5;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        era * 146_097 + doe - 719_468
    };
    let start = days_from_civil(year, month);
    let end = if month == 12 {
        days_from_civil(year + 1, 1)
    } else {
        days_from_civil(year, month + 1)
    };
    let mut rng = SmallRng::seed_from_u64(seed);
    let s = Arc::new(Schema::new(vec![
        Field::new("date", DataType::Date32, true),
        Field::new("row", DataType::Int64, false),
    ]));
    (0..3)
        .map(|_| {
            let date = Date32Array::from_iter(
                (0..500)
                    .map(|_| (rng.random_range(0..50) != 0).then(|| rng.random_range(start..end))),
            );
            let row = Int64Array::from_iter_values(0..500);
            RecordBatch::try_new(s.clone(), vec![Arc::new(date), Arc::new(row)]).unwrap()
        })
        .collect()
}

#[test]
fn ranged_order_detects_month_partitions() {
    let mut months: Vec<(i32, u32)> = Vec::new();
    for y in 2008..=2010 {
        for m in 1..=12 {
            months.push((y, m));
        }
    }
    // Shuffle deterministically.
    let mut rng = SmallRng::seed_from_u64(9);
    let mut order: Vec<usize> = (0..months.len()).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, rng.random_range(0..=i));
    }
    let parts: Vec<Vec<RecordBatch>> = order
        .iter()
        .map(|&i| month_partition(months[i].0, months[i].1, i as u64))
        .collect();
    let bounds: Vec<_> = parts
        .iter()
        .map(|p| key_bounds(p, "date").unwrap())
        .collect();
    let (lo, hi) = bounds[0].clone().unwrap();
    assert_eq!(lo.data_type(), &DataType::Date32);
    assert_eq!((lo.len(), hi.len()), (1, 1));
    let got = ranged_order(&bounds)
        .unwrap()
        .expect("month partitions are ranged");
    let want: Vec<usize> = (0..months.len())
        .map(|m| order.iter().position(|&o| o == m).unwrap())
        .collect();
    assert_eq!(got, want);

    // The fast path: sort each partition, concatenate in that order = globally sorted.
    let mut keys = Vec::new();
    for &p in &got {
        for b in sort_batches(&parts[p], "date").unwrap() {
            keys.extend(key_values(b.column(0).as_ref()));
        }
    }
    // Nulls sit at the end of every partition: only ranged_order_nulls_last sees that.
    let invalid: Vec<usize> = parts
        .iter()
        .map(|p| invalid_count(p, "date").unwrap())
        .collect();
    assert!(invalid.iter().all(|&n| n > 0));
    assert_eq!(ranged_order_nulls_last(&bounds, &invalid).unwrap(), None);
    let non_null: Vec<Option<K>> = keys.into_iter().filter(|k| k.is_some()).collect();
    assert!(non_null
        .windows(2)
        .all(|w| oracle_cmp(&w[0], &w[1]) != Ordering::Greater));
    let zero = vec![0; bounds.len()];
    assert_eq!(ranged_order_nulls_last(&bounds, &zero).unwrap(), Some(got));

    // Overlapping partitions are refused.
    let mut overlapping = parts.clone();
    overlapping.push(month_partition(2009, 3, 77));
    let b2: Vec<_> = overlapping
        .iter()
        .map(|p| key_bounds(p, "date").unwrap())
        .collect();
    assert_eq!(ranged_order(&b2).unwrap(), None);

    // A day key on one date per month overlaps nothing, but shared endpoints (ties)
    // are accepted: [1, 5], [5, 5], [5, 9] in any order.
    let b = |lo: i32, hi: i32| -> Option<(ArrayRef, ArrayRef)> {
        Some((
            Arc::new(Int32Array::from(vec![lo])),
            Arc::new(Int32Array::from(vec![hi])),
        ))
    };
    let tied = vec![b(5, 9), None, b(5, 5), b(1, 5)];
    assert_eq!(ranged_order(&tied).unwrap(), Some(vec![3, 2, 0, 1]));
    assert_eq!(ranged_order(&[b(1, 5), b(4, 9)]).unwrap(), None);
}

#[test]
fn key_bounds_edge_cases() {
    let s = schema(DataType::Float64);
    let mk = |v: Vec<Option<f64>>| {
        let n = v.len() as i64;
        RecordBatch::try_new(
            s.clone(),
            vec![
                Arc::new(Float64Array::from(v)),
                Arc::new(Int64Array::from_iter_values(0..n)),
                Arc::new(Float64Array::from_iter_values((0..n).map(|x| x as f64))),
            ],
        )
        .unwrap()
    };
    let all_null = mk(vec![None, None, Some(f64::NAN)]);
    assert!(key_bounds(std::slice::from_ref(&all_null), "key")
        .unwrap()
        .is_none());
    assert!(key_bounds(&[], "key").unwrap().is_none());
    let some = mk(vec![
        None,
        Some(3.5),
        Some(f64::NAN),
        Some(-2.0),
        Some(f64::INFINITY),
    ]);
    let (lo, hi) = key_bounds(&[all_null, some], "key").unwrap().unwrap();
    assert_eq!(lo.as_primitive::<Float64Type>().value(0), -2.0);
    assert_eq!(hi.as_primitive::<Float64Type>().value(0), f64::INFINITY);

    // Dictionary bounds ignore unused dictionary values and come back as Utf8.
    let ds = schema(DataType::Dictionary(
        Box::new(DataType::Int32),
        Box::new(DataType::Utf8),
    ));
    let dict = DictionaryArray::try_new(
        Int32Array::from(vec![Some(1), None, Some(2)]),
        Arc::new(StringArray::from(vec!["a", "m", "c", "z"])),
    )
    .unwrap();
    let b = RecordBatch::try_new(
        ds,
        vec![
            Arc::new(dict),
            Arc::new(Int64Array::from_iter_values(0..3)),
            Arc::new(Float64Array::from_iter_values([0.0, 1.0, 2.0])),
        ],
    )
    .unwrap();
    let (lo, hi) = key_bounds(&[b], "key").unwrap().unwrap();
    assert_eq!(lo.as_string::<i32>().value(0), "c");
    assert_eq!(hi.as_string::<i32>().value(0), "m");
}

#[test]
fn errors_name_the_key_column() {
    let parts = make_data(&DataType::Int64, 1, 1, 10, 1);
    let p = &parts[0];
    let b = choose_boundaries(&[sample_keys(p, "key", 5).unwrap()], 2).unwrap();
    let errors = [
        key_bounds(p, "nope").unwrap_err(),
        sort_batches(p, "nope").unwrap_err(),
        sample_keys(p, "nope", 3).unwrap_err(),
        split_by_ranges(p, "nope", &b).unwrap_err(),
        invalid_count(p, "nope").unwrap_err(),
    ];
    for e in errors {
        let msg = e.to_string();
        assert!(msg.contains("'nope'"), "{msg}");
        assert!(msg.contains("key, row, payload"), "{msg}");
    }
    // Boundaries of the wrong type name the key and both types.
    let wrong: ArrayRef = Arc::new(StringArray::from(vec!["x"]));
    let msg = split_by_ranges(p, "key", &wrong).unwrap_err().to_string();
    assert!(
        msg.contains("'key'") && msg.contains("Utf8") && msg.contains("Int64"),
        "{msg}"
    );
    // Unsupported key types name the column and the type.
    let bs = Arc::new(Schema::new(vec![Field::new(
        "flag",
        DataType::Boolean,
        true,
    )]));
    let bb = RecordBatch::try_new(
        bs,
        vec![Arc::new(arrow_array::BooleanArray::from(vec![true, false]))],
    )
    .unwrap();
    let msg = sort_batches(&[bb], "flag").unwrap_err().to_string();
    assert!(msg.contains("'flag'") && msg.contains("Boolean"), "{msg}");
    assert!(choose_boundaries(&[], 0).is_err());
}

#[test]
fn skewed_and_degenerate_boundaries() {
    // One value everywhere: no boundary, one range holding everything.
    let a: ArrayRef = Arc::new(Int64Array::from(vec![7; 100]));
    let b = choose_boundaries(&[a.clone(), a], 4).unwrap();
    assert_eq!(b.len(), 1, "a boundary at the value itself");
    // All-null samples / nothing sampled: empty boundaries.
    let nulls: ArrayRef = Arc::new(Int64Array::from(vec![None, None]));
    assert_eq!(choose_boundaries(&[nulls], 4).unwrap().len(), 0);
    assert_eq!(sample_keys(&[], "key", 10).unwrap().len(), 0);
    let parts = make_data(&DataType::Int64, 1, 2, 100, 3);
    let none: ArrayRef = choose_boundaries(&[], 3).unwrap();
    let split = split_by_ranges(&parts[0], "key", &none).unwrap();
    assert_eq!(split.len(), 1);
    assert_eq!(split[0][0].num_rows(), 200);
}

#[test]
fn timing_one_million_rows() {
    let n = 1_000_000usize;
    let mut rng = SmallRng::seed_from_u64(42);
    let dict_values: ArrayRef = Arc::new(StringArray::from_iter_values(
        (0..2000).map(|i| format!("{:06}", i * 37)),
    ));
    let s = Arc::new(Schema::new(vec![
        Field::new(
            "datetime",
            DataType::Timestamp(TimeUnit::Microsecond, None),
            true,
        ),
        Field::new("day", DataType::Int32, true),
        Field::new(
            "usaf",
            DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
            true,
        ),
        Field::new("temperature", DataType::Float64, true),
        Field::new("windSpeed", DataType::Float64, true),
        Field::new("row", DataType::Int64, false),
    ]));
    let batches: Vec<RecordBatch> = (0..n / 65_536 + 1)
        .map(|b| {
            let rows = 65_536.min(n - (b * 65_536).min(n));
            let ts: Vec<i64> = (0..rows)
                .map(|_| 1_200_000_000_000_000 + rng.random_range(0..2_600_000_000_000i64))
                .collect();
            let day: Vec<i32> = ts.iter().map(|t| (t / 86_400_000_000) as i32).collect();
            let keys = Int32Array::from_iter_values((0..rows).map(|_| rng.random_range(0..2000)));
            let cols: Vec<ArrayRef> = vec![
                Arc::new(TimestampMicrosecondArray::from(ts)),
                Arc::new(Int32Array::from(day)),
                Arc::new(DictionaryArray::try_new(keys, dict_values.clone()).unwrap()),
                Arc::new(Float64Array::from_iter_values(
                    (0..rows).map(|_| rng.random_range(-30.0..40.0)),
                )),
                Arc::new(Float64Array::from_iter_values(
                    (0..rows).map(|_| rng.random_range(0.0..20.0)),
                )),
                Arc::new(Int64Array::from_iter_values(0..rows as i64)),
            ];
            RecordBatch::try_new(s.clone(), cols).unwrap()
        })
        .filter(|b| b.num_rows() > 0)
        .collect();
    for key in ["datetime", "day", "usaf", "temperature"] {
        // Best of three: the machine is shared.
        let mut sort = std::time::Duration::MAX;
        let mut out = Vec::new();
        for _ in 0..3 {
            let t = Instant::now();
            out = sort_batches(&batches, key).unwrap();
            sort = sort.min(t.elapsed());
        }
        let t = Instant::now();
        let again = sort_batches(&out, key).unwrap();
        let resort = t.elapsed();
        assert_eq!(again, out);
        let t = Instant::now();
        let sample = sample_keys(&batches, key, 1000).unwrap();
        let bounds = choose_boundaries(&[sample], 8).unwrap();
        let sampling = t.elapsed();
        let t = Instant::now();
        let split = split_by_ranges(&batches, key, &bounds).unwrap();
        let splitting = t.elapsed();
        assert_eq!(split.len(), bounds.len() + 1);
        let t = Instant::now();
        let kb = key_bounds(&batches, key).unwrap();
        let bounding = t.elapsed();
        assert!(kb.is_some());
        eprintln!(
            "1M rows by {key}: sort_batches {sort:?} (already sorted: {resort:?}), \
             sample+boundaries {sampling:?}, split_by_ranges(8) {splitting:?}, key_bounds {bounding:?}"
        );
    }
}
