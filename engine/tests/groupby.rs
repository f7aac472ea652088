//! Integration tests of `stratus_engine::groupby`: partial → merge (in several tree
//! shapes) → finalize against a naive row-by-row oracle, on random data with nulls and
//! NaN, for every supported key kind; edge cases; errors; and a 2 M-row smoke run.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use arrow_array::cast::AsArray;
use arrow_array::types::*;
use arrow_array::{
    Array, ArrayRef, Date32Array, DictionaryArray, Float32Array, Float64Array, Int32Array,
    Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use stratus_engine::groupby::{
    finalize, merge, partial, partial_with_paths, partial_with_schema, AggSpec, GroupBy, Paths,
};
use stratus_plan::AggFunc;

// ---------------------------------------------------------------------------------
// Random data
// ---------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq)]
enum KeyKind {
    Int32,
    Date32,
    TimestampUs,
    YearMonth,
    Dict,
    StrAndInt,
}

/// One oracle key value; ordered like the result must be.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum K {
    I(i64),
    S(String),
}

const DAY_US: i64 = 86_400_000_000;
const WORDS: [&str; 7] = [
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf",
];

fn key_fields(kind: KeyKind) -> Vec<Field> {
    match kind {
        KeyKind::Int32 => vec![Field::new("k", DataType::Int32, true)],
        KeyKind::Date32 => vec![Field::new("day", DataType::Date32, true)],
        KeyKind::TimestampUs => vec![Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            true,
        )],
        KeyKind::YearMonth => vec![
            Field::new("year", DataType::Int32, true),
            Field::new("month", DataType::Int32, true),
        ],
        KeyKind::Dict => vec![Field::new(
            "station",
            DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
            true,
        )],
        KeyKind::StrAndInt => vec![
            Field::new("name", DataType::Utf8, true),
            Field::new("k", DataType::Int32, true),
        ],
    }
}

fn schema(kind: KeyKind) -> SchemaRef {
    let mut f = key_fields(kind);
    f.extend([
        Field::new("a", DataType::Float64, true),
        Field::new("b", DataType::Float32, true),
        Field::new("c", DataType::Int32, true),
        Field::new("d", DataType::Int64, true),
        Field::new("e", DataType::Float64, true),
        Field::new(
            "s",
            DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
            true,
        ),
        Field::new("u", DataType::Utf8, true),
    ]);
    Arc::new(Schema::new(f))
}

fn key_names(kind: KeyKind) -> Vec<String> {
    key_fields(kind).iter().map(|f| f.name().clone()).collect()
}

fn normal(rng: &mut SmallRng) -> f64 {
    let u: f64 = 1.0 - rng.random::<f64>();
    let v: f64 = rng.random();
    (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
}

fn dict(keys: Vec<Option<i32>>, values: &[&str]) -> ArrayRef {
    Arc::new(
        DictionaryArray::<Int32Type>::try_new(
            Int32Array::from(keys),
            Arc::new(StringArray::from(values.to_vec())),
        )
        .unwrap(),
    )
}

/// A random batch of `n` rows; `groups` bounds the number of distinct keys.
fn batch(rng: &mut SmallRng, kind: KeyKind, n: usize, groups: i64) -> RecordBatch {
    let null_key = |rng: &mut SmallRng| rng.random_bool(0.03);
    let mut keys: Vec<ArrayRef> = Vec::new();
    let g: Vec<Option<i64>> = (0..n)
        .map(|_| (!null_key(rng)).then(|| rng.random_range(0..groups)))
        .collect();
    match kind {
        KeyKind::Int32 => keys.push(Arc::new(Int32Array::from_iter(
            g.iter().map(|v| v.map(|x| (x * 37 - 500) as i32)),
        ))),
        KeyKind::Date32 => keys.push(Arc::new(Date32Array::from_iter(
            g.iter().map(|v| v.map(|x| 13_880 + x as i32)),
        ))),
        KeyKind::TimestampUs => keys.push(Arc::new(
            TimestampMicrosecondArray::from_iter(
                g.iter()
                    .map(|v| v.map(|x| 1_199_145_600_000_000 + x * DAY_US)),
            )
            .with_timezone("UTC"),
        )),
        KeyKind::YearMonth => {
            keys.push(Arc::new(Int32Array::from_iter(
                g.iter().map(|v| v.map(|x| 2008 + (x / 12) as i32)),
            )));
            // Month null on its own now and then: the row is dropped too.
            keys.push(Arc::new(Int32Array::from_iter(g.iter().map(|v| {
                v.filter(|_| rng.random_bool(0.97))
                    .map(|x| 1 + (x % 12) as i32)
            }))));
        }
        KeyKind::Dict => {
            // Each batch its own dictionary (different order, unused and null values).
            let mut values: Vec<String> = (0..groups).map(|x| format!("st{x:04}")).collect();
            values.reverse();
            values.push("unused".into());
            let vals: Vec<&str> = values.iter().map(String::as_str).collect();
            keys.push(dict(
                g.iter()
                    .map(|v| v.map(|x| (groups - 1 - x) as i32))
                    .collect(),
                &vals,
            ));
        }
        KeyKind::StrAndInt => {
            keys.push(Arc::new(StringArray::from_iter(
                g.iter()
                    .map(|v| v.map(|x| WORDS[(x % 7) as usize].to_string())),
            )));
            keys.push(Arc::new(Int32Array::from_iter(
                g.iter().map(|v| v.map(|x| (x / 7) as i32)),
            )));
        }
    }
    let a = Float64Array::from_iter((0..n).map(|_| {
        if rng.random_bool(0.1) {
            None
        } else if rng.random_bool(0.05) {
            Some(f64::NAN)
        } else {
            Some(1014.6 + 9.4 * normal(rng))
        }
    }));
    let b = Float32Array::from_iter((0..n).map(|_| {
        if rng.random_bool(0.2) {
            None
        } else if rng.random_bool(0.05) {
            Some(f32::NAN)
        } else {
            Some((normal(rng) * 12.0 + 12.0) as f32)
        }
    }));
    let c = Int32Array::from_iter(
        (0..n).map(|_| (!rng.random_bool(0.3)).then(|| rng.random_range(-1000..1000))),
    );
    let d = Int64Array::from_iter((0..n).map(|_| {
        (!rng.random_bool(0.5)).then(|| rng.random_range(-1_000_000_000i64..1_000_000_000))
    }));
    let e = Float64Array::from(vec![None::<f64>; n]);
    let s = dict(
        (0..n)
            .map(|_| (!rng.random_bool(0.4)).then(|| rng.random_range(0..7)))
            .collect(),
        &WORDS,
    );
    let u = StringArray::from_iter(
        (0..n).map(|_| (!rng.random_bool(0.6)).then(|| WORDS[rng.random_range(0..7)])),
    );
    let mut cols = keys;
    cols.extend([
        Arc::new(a) as ArrayRef,
        Arc::new(b),
        Arc::new(c),
        Arc::new(d),
        Arc::new(e),
        s,
        Arc::new(u),
    ]);
    RecordBatch::try_new(schema(kind), cols).unwrap()
}

/// Partitions of several batches each, including an empty batch and a 1-row partition.
fn partitions(seed: u64, kind: KeyKind, groups: i64) -> Vec<Vec<RecordBatch>> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut parts = Vec::new();
    for p in 0..4 {
        let mut batches = Vec::new();
        for _ in 0..3 {
            let n = rng.random_range(200..1500);
            batches.push(batch(&mut rng, kind, n, groups));
        }
        if p == 1 {
            batches.insert(1, batch(&mut rng, kind, 0, groups));
        }
        parts.push(batches);
    }
    // A single-row partition (with a non-null key), and a partition of empty batches.
    let one = loop {
        let b = batch(&mut rng, kind, 1, groups);
        if b.columns()
            .iter()
            .take(key_fields(kind).len())
            .all(|c| c.is_valid(0))
        {
            break b;
        }
    };
    parts.push(vec![one]);
    parts.push(vec![
        batch(&mut rng, kind, 0, groups),
        batch(&mut rng, kind, 0, groups),
    ]);
    parts
}

// ---------------------------------------------------------------------------------
// Oracle
// ---------------------------------------------------------------------------------

fn key_at(a: &dyn Array, i: usize) -> Option<K> {
    if a.is_null(i) {
        return None;
    }
    Some(match a.data_type() {
        DataType::Int32 => K::I(a.as_primitive::<Int32Type>().value(i) as i64),
        DataType::Int64 => K::I(a.as_primitive::<Int64Type>().value(i)),
        DataType::Date32 => K::I(a.as_primitive::<Date32Type>().value(i) as i64),
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            K::I(a.as_primitive::<TimestampMicrosecondType>().value(i))
        }
        DataType::Utf8 => K::S(a.as_string::<i32>().value(i).to_string()),
        DataType::Dictionary(_, _) => {
            let d = a.as_dictionary::<Int32Type>();
            let k = d.keys().value(i) as usize;
            K::S(d.values().as_string::<i32>().value(k).to_string())
        }
        t => panic!("key type {t}"),
    })
}

/// A value as f64, None if null (NaN kept).
fn value_at(a: &dyn Array, i: usize) -> Option<f64> {
    if a.is_null(i) {
        return None;
    }
    Some(match a.data_type() {
        DataType::Float64 => a.as_primitive::<Float64Type>().value(i),
        DataType::Float32 => a.as_primitive::<Float32Type>().value(i) as f64,
        DataType::Int32 => a.as_primitive::<Int32Type>().value(i) as f64,
        DataType::Int64 => a.as_primitive::<Int64Type>().value(i) as f64,
        _ => 0.0, // non-numeric: only counted
    })
}

/// Expected value of one aggregate of one group; None = null.
#[derive(Debug, Clone, PartialEq)]
enum V {
    Null,
    Int(i64),
    F(f64),
}

fn oracle(parts: &[Vec<RecordBatch>], spec: &GroupBy) -> BTreeMap<Vec<K>, Vec<V>> {
    let mut vals: BTreeMap<Vec<K>, Vec<Vec<f64>>> = BTreeMap::new();
    for b in parts.iter().flatten() {
        let keys: Vec<&ArrayRef> = spec
            .keys
            .iter()
            .map(|k| b.column_by_name(k).unwrap())
            .collect();
        'row: for i in 0..b.num_rows() {
            let mut key = Vec::new();
            for k in &keys {
                match key_at(k.as_ref(), i) {
                    Some(v) => key.push(v),
                    None => continue 'row,
                }
            }
            let entry = vals
                .entry(key)
                .or_insert_with(|| vec![Vec::new(); spec.aggs.len()]);
            for (j, a) in spec.aggs.iter().enumerate() {
                if let Some(x) = value_at(b.column_by_name(&a.column).unwrap().as_ref(), i) {
                    if !x.is_nan() {
                        entry[j].push(x);
                    }
                }
            }
        }
    }
    vals.into_iter()
        .map(|(k, per_agg)| {
            let out = spec
                .aggs
                .iter()
                .zip(per_agg)
                .map(|(a, xs)| {
                    let n = xs.len();
                    let mean = xs.iter().sum::<f64>() / n as f64;
                    let var =
                        xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (n as f64 - 1.0);
                    match a.func {
                        AggFunc::Count => V::Int(n as i64),
                        _ if n == 0 => V::Null,
                        AggFunc::Sum => V::F(xs.iter().sum()),
                        AggFunc::Mean => V::F(mean),
                        AggFunc::Min => V::F(xs.iter().cloned().fold(f64::INFINITY, f64::min)),
                        AggFunc::Max => V::F(xs.iter().cloned().fold(f64::NEG_INFINITY, f64::max)),
                        _ if n < 2 => V::Null,
                        AggFunc::Var => V::F(var),
                        AggFunc::Std => V::F(var.sqrt()),
                    }
                })
                .collect();
            (k, out)
        })
        .collect()
}

/// The result as (keys, values) rows, in output order.
fn rows_of(result: &RecordBatch, spec: &GroupBy) -> Vec<(Vec<K>, Vec<V>)> {
    let nk = spec.keys.len();
    (0..result.num_rows())
        .map(|i| {
            let keys = (0..nk)
                .map(|j| key_at(result.column(j).as_ref(), i).expect("null key in result"))
                .collect();
            let vals = (nk..result.num_columns())
                .map(|j| {
                    let c = result.column(j);
                    if c.is_null(i) {
                        V::Null
                    } else if c.data_type() == &DataType::Int64
                        && spec.aggs[j - nk].func == AggFunc::Count
                    {
                        V::Int(c.as_primitive::<Int64Type>().value(i))
                    } else {
                        V::F(value_at(c.as_ref(), i).unwrap())
                    }
                })
                .collect();
            (keys, vals)
        })
        .collect()
}

fn close(x: f64, y: f64, rel: f64) -> bool {
    x == y || (x - y).abs() <= rel * x.abs().max(y.abs())
}

fn assert_same(got: &RecordBatch, want: &BTreeMap<Vec<K>, Vec<V>>, spec: &GroupBy, what: &str) {
    let rows = rows_of(got, spec);
    assert_eq!(rows.len(), want.len(), "{what}: number of groups");
    for ((gk, gv), (wk, wv)) in rows.iter().zip(want) {
        assert_eq!(gk, wk, "{what}: keys (sorted)");
        for ((g, w), a) in gv.iter().zip(wv).zip(&spec.aggs) {
            let ok = match (g, w, a.func) {
                (V::F(g), V::F(w), AggFunc::Min | AggFunc::Max) => g == w,
                (V::F(g), V::F(w), _) => close(*g, *w, 1e-12),
                (g, w, _) => g == w,
            };
            assert!(ok, "{what}: key {gk:?} {a:?}: got {g:?}, want {w:?}");
        }
    }
}

fn full_spec(kind: KeyKind) -> GroupBy {
    use AggFunc::*;
    let mut aggs = Vec::new();
    for f in [Count, Sum, Mean, Min, Max, Std, Var] {
        aggs.push(AggSpec::new("a", f));
    }
    aggs.extend([
        AggSpec::new("b", Mean),
        AggSpec::new("b", Min),
        AggSpec::new("c", Sum),
        AggSpec::new("c", Max),
        AggSpec::new("c", Std),
        AggSpec::new("d", Var),
        AggSpec::new("d", Count),
        AggSpec::new("d", Min),
        AggSpec::new("e", Mean),
        AggSpec::new("e", Count),
        AggSpec::new("e", Max),
        AggSpec::new("s", Count),
        AggSpec::new("u", Count),
    ]);
    GroupBy {
        keys: key_names(kind),
        aggs,
    }
}

/// Run the whole pipeline in several merge-tree shapes and check each against the oracle.
fn check_kind(kind: KeyKind, groups: i64, seed: u64) {
    let parts = partitions(seed, kind, groups);
    let spec = full_spec(kind);
    let want = oracle(&parts, &spec);
    assert!(want.len() > 5, "test data has too few groups");
    let ps: Vec<RecordBatch> = parts.iter().map(|b| partial(b, &spec).unwrap()).collect();
    let pschema = spec.partial_schema(&schema(kind)).unwrap();
    for p in &ps {
        assert_eq!(p.schema(), pschema, "partial schema");
    }
    let m = |x: &[RecordBatch]| merge(x, &spec).unwrap();
    let n = ps.len();
    // ((((p0, p1), p2), p3) ...) left fold
    let mut left = ps[0].clone();
    for p in &ps[1..] {
        left = m(&[left, p.clone()]);
    }
    // (p0, (p1, (p2, ...))) right fold
    let mut right = ps[n - 1].clone();
    for p in ps[..n - 1].iter().rev() {
        right = m(&[p.clone(), right]);
    }
    let all = m(&ps);
    let mut rev = ps.clone();
    rev.reverse();
    let reversed = m(&rev);
    let pairs = m(&[m(&ps[..2]), m(&ps[2..4]), m(&ps[4..])]);
    for (what, p) in [
        ("left fold", &left),
        ("right fold", &right),
        ("all at once", &all),
        ("reversed", &reversed),
        ("pairs", &pairs),
    ] {
        let out = finalize(p, &spec).unwrap();
        assert_eq!(
            out.schema()
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect::<Vec<_>>(),
            spec.output_names()
        );
        assert_same(&out, &want, &spec, &format!("{kind:?} {what}"));
    }
    // Finalize straight from the concatenation of partials (keys not unique).
    let concat = arrow_select::concat::concat_batches(&pschema, &ps).unwrap();
    assert_same(
        &finalize(&concat, &spec).unwrap(),
        &want,
        &spec,
        &format!("{kind:?} concatenated partials"),
    );
    // One partition holding everything gives the same too.
    let one = partial(&parts.concat(), &spec).unwrap();
    assert_same(
        &finalize(&one, &spec).unwrap(),
        &want,
        &spec,
        &format!("{kind:?} one partition"),
    );
}

// ---------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------

#[test]
fn int32_key_matches_oracle() {
    check_kind(KeyKind::Int32, 40, 1);
}

#[test]
fn date32_key_matches_oracle() {
    check_kind(KeyKind::Date32, 60, 2);
}

#[test]
fn timestamp_key_matches_oracle_and_keeps_its_type() {
    check_kind(KeyKind::TimestampUs, 30, 3);
    let spec = GroupBy {
        keys: vec!["ts".into()],
        aggs: vec![AggSpec::new("a", AggFunc::Mean)],
    };
    let parts = partitions(3, KeyKind::TimestampUs, 30);
    let out = finalize(&partial(&parts[0], &spec).unwrap(), &spec).unwrap();
    assert_eq!(
        out.schema().field(0).data_type(),
        &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
    );
}

#[test]
fn year_month_keys_match_oracle() {
    check_kind(KeyKind::YearMonth, 144, 4);
}

#[test]
fn dictionary_key_matches_oracle_and_becomes_utf8() {
    check_kind(KeyKind::Dict, 25, 5);
    let spec = full_spec(KeyKind::Dict);
    let ps = spec.partial_schema(&schema(KeyKind::Dict)).unwrap();
    assert_eq!(ps.field(0).data_type(), &DataType::Utf8);
}

#[test]
fn string_and_int_keys_match_oracle() {
    check_kind(KeyKind::StrAndInt, 70, 6);
}

#[test]
fn few_rows_per_group_and_many_groups() {
    // Mostly 1-2 rows per group: exercises null std/var and the row-by-row kernels.
    check_kind(KeyKind::Int32, 3000, 7);
}

#[test]
fn sorted_keys_use_runs_and_match_oracle() {
    // Keys in long runs (as after a sort by day): the run kernels.
    let kind = KeyKind::Date32;
    let mut rng = SmallRng::seed_from_u64(8);
    let mut parts = Vec::new();
    for p in 0..3 {
        let mut batches = Vec::new();
        for q in 0..2 {
            let b = batch(&mut rng, kind, 5000, 10);
            let day = Date32Array::from_iter(
                (0..5000).map(|i| (i % 997 != 0).then_some(14_000 + p * 4 + q * 3 + i / 500)),
            );
            let mut cols = b.columns().to_vec();
            cols[0] = Arc::new(day);
            batches.push(RecordBatch::try_new(b.schema(), cols).unwrap());
        }
        parts.push(batches);
    }
    let spec = full_spec(kind);
    let want = oracle(&parts, &spec);
    let ps: Vec<RecordBatch> = parts.iter().map(|b| partial(b, &spec).unwrap()).collect();
    assert_same(
        &finalize(&merge(&ps, &spec).unwrap(), &spec).unwrap(),
        &want,
        &spec,
        "runs",
    );
}

#[test]
fn count_alone_skips_nan_and_nulls() {
    let kind = KeyKind::Int32;
    let spec = GroupBy {
        keys: key_names(kind),
        aggs: vec![
            AggSpec::new("a", AggFunc::Count),
            AggSpec::new("b", AggFunc::Count),
            AggSpec::new("s", AggFunc::Count),
        ],
    };
    let parts = partitions(16, kind, 30);
    let want = oracle(&parts, &spec);
    let ps: Vec<RecordBatch> = parts.iter().map(|b| partial(b, &spec).unwrap()).collect();
    assert_same(
        &finalize(&merge(&ps, &spec).unwrap(), &spec).unwrap(),
        &want,
        &spec,
        "count",
    );
}

#[test]
fn all_null_column_gives_null_aggregates_and_zero_count() {
    let parts = partitions(9, KeyKind::Int32, 20);
    let spec = GroupBy {
        keys: vec!["k".into()],
        aggs: vec![
            AggSpec::new("e", AggFunc::Count),
            AggSpec::new("e", AggFunc::Sum),
            AggSpec::new("e", AggFunc::Mean),
            AggSpec::new("e", AggFunc::Min),
            AggSpec::new("e", AggFunc::Max),
            AggSpec::new("e", AggFunc::Std),
            AggSpec::new("e", AggFunc::Var),
        ],
    };
    let ps: Vec<RecordBatch> = parts.iter().map(|b| partial(b, &spec).unwrap()).collect();
    let out = finalize(&merge(&ps, &spec).unwrap(), &spec).unwrap();
    assert!(out.num_rows() > 0);
    let count = out.column(1).as_primitive::<Int64Type>();
    assert_eq!(count.null_count(), 0);
    assert!(count.values().iter().all(|&c| c == 0));
    for j in 2..out.num_columns() {
        assert_eq!(out.column(j).null_count(), out.num_rows(), "column {j}");
    }
    assert_eq!(
        out.column(5).data_type(),
        &DataType::Float64,
        "max keeps Float64"
    );
}

#[test]
fn single_agg_per_column_uses_the_column_name_and_types() {
    let spec = GroupBy {
        keys: vec!["k".into()],
        aggs: vec![
            AggSpec::new("a", AggFunc::Mean),
            AggSpec::new("b", AggFunc::Max),
            AggSpec::new("c", AggFunc::Min),
            AggSpec::new("d", AggFunc::Count),
            AggSpec::new("c2", AggFunc::Sum),
        ],
    };
    let mut parts = partitions(10, KeyKind::Int32, 10);
    for b in parts.iter_mut().flatten() {
        let mut f = b.schema().fields().to_vec();
        f.push(Arc::new(Field::new("c2", DataType::Int32, true)));
        let mut cols = b.columns().to_vec();
        cols.push(b.column(3).clone());
        *b = RecordBatch::try_new(Arc::new(Schema::new(f)), cols).unwrap();
    }
    let ps: Vec<RecordBatch> = parts.iter().map(|b| partial(b, &spec).unwrap()).collect();
    let out = finalize(&merge(&ps, &spec).unwrap(), &spec).unwrap();
    let s = out.schema();
    let got: Vec<(&str, &DataType)> = s
        .fields()
        .iter()
        .map(|f| (f.name().as_str(), f.data_type()))
        .collect();
    assert_eq!(
        got,
        [
            ("k", &DataType::Int32),
            ("a", &DataType::Float64),
            ("b", &DataType::Float32),
            ("c", &DataType::Int32),
            ("d", &DataType::Int64),
            ("c2", &DataType::Float64),
        ]
    );
}

#[test]
fn output_is_sorted_by_keys() {
    let spec = GroupBy {
        keys: vec!["year".into(), "month".into()],
        aggs: vec![AggSpec::new("a", AggFunc::Count)],
    };
    let parts = partitions(11, KeyKind::YearMonth, 144);
    let ps: Vec<RecordBatch> = parts
        .iter()
        .rev()
        .map(|b| partial(b, &spec).unwrap())
        .collect();
    let out = finalize(&merge(&ps, &spec).unwrap(), &spec).unwrap();
    let y = out.column(0).as_primitive::<Int32Type>();
    let m = out.column(1).as_primitive::<Int32Type>();
    let keys: Vec<(i32, i32)> = y
        .values()
        .iter()
        .zip(m.values())
        .map(|(&a, &b)| (a, b))
        .collect();
    assert!(keys.windows(2).all(|w| w[0] < w[1]), "strictly ascending");
    assert_eq!(keys.len(), 144);
}

#[test]
fn empty_partitions_give_empty_results() {
    let kind = KeyKind::Dict;
    let spec = full_spec(kind);
    let s = schema(kind);
    let none = partial_with_schema(&s, &[], &spec).unwrap();
    assert_eq!(none.num_rows(), 0);
    assert_eq!(none.schema(), spec.partial_schema(&s).unwrap());
    let mut rng = SmallRng::seed_from_u64(12);
    let empty = partial(&[batch(&mut rng, kind, 0, 5)], &spec).unwrap();
    let out = finalize(&merge(&[none.clone(), empty], &spec).unwrap(), &spec).unwrap();
    assert_eq!(out.num_rows(), 0);
    assert_eq!(out.num_columns(), 1 + spec.aggs.len());
    // Merging an empty partial into a real one changes nothing.
    let parts = partitions(12, kind, 5);
    let want = oracle(&parts, &spec);
    let mut ps: Vec<RecordBatch> = parts.iter().map(|b| partial(b, &spec).unwrap()).collect();
    ps.insert(2, none);
    assert_same(
        &finalize(&merge(&ps, &spec).unwrap(), &spec).unwrap(),
        &want,
        &spec,
        "with empty",
    );
}

#[test]
fn single_row_partition() {
    let spec = full_spec(KeyKind::Int32);
    let parts = partitions(13, KeyKind::Int32, 10);
    let single = &parts[4];
    assert_eq!(single.iter().map(|b| b.num_rows()).sum::<usize>(), 1);
    let want = oracle(std::slice::from_ref(single), &spec);
    let out = finalize(&partial(single, &spec).unwrap(), &spec).unwrap();
    assert_eq!(out.num_rows(), 1);
    assert_same(&out, &want, &spec, "single row");
}

#[test]
fn all_null_keys_drop_every_row() {
    let spec = GroupBy {
        keys: vec!["k".into()],
        aggs: vec![AggSpec::new("a", AggFunc::Sum)],
    };
    let s = Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, true),
        Field::new("a", DataType::Float64, true),
    ]));
    let b = RecordBatch::try_new(
        s,
        vec![
            Arc::new(Int64Array::from(vec![None::<i64>; 3])),
            Arc::new(Float64Array::from(vec![1.0, 2.0, 3.0])),
        ],
    )
    .unwrap();
    assert_eq!(
        finalize(&partial(&[b], &spec).unwrap(), &spec)
            .unwrap()
            .num_rows(),
        0
    );
}

#[test]
fn mean_and_std_keep_their_digits() {
    // Large offset, small spread: a naive sum-of-squares would lose everything.
    let spec = GroupBy {
        keys: vec!["k".into()],
        aggs: vec![
            AggSpec::new("a", AggFunc::Mean),
            AggSpec::new("a", AggFunc::Std),
        ],
    };
    let s = Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int32, false),
        Field::new("a", DataType::Float64, false),
    ]));
    let mk = |vals: Vec<f64>| {
        RecordBatch::try_new(
            s.clone(),
            vec![
                Arc::new(Int32Array::from(vec![1; vals.len()])),
                Arc::new(Float64Array::from(vals)),
            ],
        )
        .unwrap()
    };
    let ps = [
        partial(&[mk(vec![1e9 + 4.0, 1e9 + 7.0])], &spec).unwrap(),
        partial(&[mk(vec![1e9 + 13.0])], &spec).unwrap(),
        partial(&[mk(vec![1e9 + 16.0])], &spec).unwrap(),
    ];
    let out = finalize(&merge(&ps, &spec).unwrap(), &spec).unwrap();
    let mean = out.column(1).as_primitive::<Float64Type>().value(0);
    let std = out.column(2).as_primitive::<Float64Type>().value(0);
    assert_eq!(mean, 1e9 + 10.0);
    assert!(close(std, 30f64.sqrt(), 1e-12), "std {std}");
}

#[test]
fn all_numeric_skips_strings_and_keys() {
    let s = schema(KeyKind::YearMonth);
    let g = GroupBy::all_numeric(&s, vec!["year".into(), "month".into()], AggFunc::Mean).unwrap();
    let cols: Vec<&str> = g.aggs.iter().map(|a| a.column.as_str()).collect();
    assert_eq!(cols, ["a", "b", "c", "d", "e"]);
    assert!(g.aggs.iter().all(|a| a.func == AggFunc::Mean));
    assert_eq!(g.output_names(), ["year", "month", "a", "b", "c", "d", "e"]);
    let err = GroupBy::all_numeric(&s, vec!["nope".into()], AggFunc::Mean).unwrap_err();
    assert!(err.to_string().contains("'nope'"), "{err}");
}

#[test]
fn errors_name_the_column() {
    let s = schema(KeyKind::Int32);
    let bad = |aggs: Vec<AggSpec>, keys: Vec<&str>| {
        GroupBy {
            keys: keys.into_iter().map(String::from).collect(),
            aggs,
        }
        .partial_schema(&s)
        .unwrap_err()
        .to_string()
    };
    let e = bad(vec![AggSpec::new("zzz", AggFunc::Mean)], vec!["k"]);
    assert!(e.contains("'zzz'"), "{e}");
    let e = bad(vec![AggSpec::new("s", AggFunc::Mean)], vec!["k"]);
    assert!(e.contains("'s'") && e.contains("mean"), "{e}");
    let e = bad(vec![AggSpec::new("a", AggFunc::Mean)], vec!["missing_key"]);
    assert!(e.contains("'missing_key'"), "{e}");
    let e = bad(vec![AggSpec::new("k", AggFunc::Sum)], vec!["k"]);
    assert!(e.contains("'k'"), "{e}");
    let e = bad(vec![AggSpec::new("a", AggFunc::Sum)], vec![]);
    assert!(e.contains("key"), "{e}");
    // Count of a string column is fine.
    let g = GroupBy {
        keys: vec!["k".into()],
        aggs: vec![AggSpec::new("u", AggFunc::Count)],
    };
    assert!(g.partial_schema(&s).is_ok());
    // partial() of a batch missing a column, merge of foreign partials, no partials.
    let spec = GroupBy {
        keys: vec!["k".into()],
        aggs: vec![AggSpec::new("a", AggFunc::Mean)],
    };
    let other = GroupBy {
        keys: vec!["k".into()],
        aggs: vec![AggSpec::new("a", AggFunc::Max)],
    };
    let mut rng = SmallRng::seed_from_u64(14);
    let b = batch(&mut rng, KeyKind::Int32, 10, 3);
    let p = partial(std::slice::from_ref(&b), &other).unwrap();
    assert!(merge(std::slice::from_ref(&p), &spec).is_err());
    assert!(finalize(&p, &spec).is_err());
    assert!(merge(&[], &spec).is_err());
    assert!(partial(&[], &spec).is_err());
    let other_kind = batch(&mut rng, KeyKind::Date32, 10, 3);
    let e = partial(&[b, other_kind], &spec).unwrap_err().to_string();
    assert!(e.contains("'k'"), "{e}");
}

#[test]
fn two_million_rows_of_daily_means() {
    // ~4,400 days in order (as ISD partitions are), 12 float columns with nulls.
    let rows = 2_000_000usize;
    let days = 4_400i64;
    let ncols = 12;
    let mut rng = SmallRng::seed_from_u64(15);
    let mut fields = vec![Field::new("day", DataType::Date32, false)];
    for c in 0..ncols {
        fields.push(Field::new(format!("x{c}"), DataType::Float64, true));
    }
    let s = Arc::new(Schema::new(fields));
    let per_batch = 125_000;
    let mut parts: Vec<Vec<RecordBatch>> = vec![Vec::new(), Vec::new()];
    for start in (0..rows).step_by(per_batch) {
        let n = per_batch.min(rows - start);
        let mut cols: Vec<ArrayRef> = vec![Arc::new(Date32Array::from_iter_values(
            (start..start + n).map(|i| 13_879 + (i as i64 * days / rows as i64) as i32),
        ))];
        for c in 0..ncols {
            let null_p = [0.0, 0.2, 0.5, 0.9][c % 4];
            cols.push(Arc::new(Float64Array::from_iter((0..n).map(|_| {
                (!rng.random_bool(null_p)).then(|| 1000.0 + rng.random::<f64>() * 30.0)
            }))));
        }
        let b = RecordBatch::try_new(s.clone(), cols).unwrap();
        parts[usize::from(start >= rows / 2)].push(b);
    }
    let spec = GroupBy::all_numeric(&s, vec!["day".into()], AggFunc::Mean).unwrap();
    let t = Instant::now();
    let ps: Vec<RecordBatch> = parts.iter().map(|b| partial(b, &spec).unwrap()).collect();
    let t_partial = t.elapsed();
    let out = finalize(&merge(&ps, &spec).unwrap(), &spec).unwrap();
    eprintln!(
        "2M rows x {ncols} cols, {} days: partials {:?}, total {:?}",
        out.num_rows(),
        t_partial,
        t.elapsed()
    );
    assert_eq!(out.num_rows(), days as usize);
    assert_eq!(out.num_columns(), 1 + ncols);
    let x0 = out.column(1).as_primitive::<Float64Type>();
    assert_eq!(x0.null_count(), 0);
    assert!(x0.values().iter().all(|&m| (1000.0..1030.0).contains(&m)));

    // Counts per day of the same data, shuffled row order path too.
    let spec = GroupBy {
        keys: vec!["day".into()],
        aggs: vec![AggSpec::new("x0", AggFunc::Count)],
    };
    let ps: Vec<RecordBatch> = parts.iter().map(|b| partial(b, &spec).unwrap()).collect();
    let out = finalize(&merge(&ps, &spec).unwrap(), &spec).unwrap();
    let total: i64 = out
        .column(1)
        .as_primitive::<Int64Type>()
        .values()
        .iter()
        .sum();
    assert_eq!(total, rows as i64);
}

// ---------------------------------------------------------------------------------
// Kernel paths: the dense-index keys and the column kernels against the legacy path
// ---------------------------------------------------------------------------------

/// Every combination of the kernel switches.
const ALL_PATHS: [Paths; 4] = [
    Paths::LEGACY,
    Paths {
        dense_keys: true,
        column_kernels: false,
    },
    Paths {
        dense_keys: false,
        column_kernels: true,
    },
    Paths {
        dense_keys: true,
        column_kernels: true,
    },
];

/// Partials equal but for rounding: the same groups in the same order, the same keys,
/// counts, min and max, and sums, means and M2 within `1e-12` of the largest magnitude
/// in their column (the column kernels add a group's values in another order).
fn same_partial(a: &RecordBatch, b: &RecordBatch, what: &str) {
    assert_eq!(a.schema(), b.schema(), "{what}: schema");
    for (i, (c, d)) in a.columns().iter().zip(b.columns()).enumerate() {
        let name = a.schema().field(i).name().clone();
        let is_state = ["#sum", "#mean", "#m2"].iter().any(|s| name.ends_with(s));
        match (c.as_primitive_opt::<Float64Type>(), is_state) {
            (Some(c), true) => {
                let d = d.as_primitive::<Float64Type>();
                let scale = c
                    .values()
                    .iter()
                    .chain(d.values().iter())
                    .fold(0f64, |m, x| m.max(x.abs()));
                for (x, y) in c.values().iter().zip(d.values().iter()) {
                    assert!((x - y).abs() <= 1e-12 * scale, "{what}: {name}: {x} vs {y}");
                }
            }
            _ => assert_eq!(c, d, "{what}: column {name}"),
        }
    }
}

/// The partial of `batches` by every path: all the same (same groups in the same order,
/// states equal up to rounding), and, finalized, equal to the oracle.
fn check_paths(batches: &[RecordBatch], spec: &GroupBy, what: &str) {
    let schema = batches[0].schema();
    let legacy = partial_with_paths(&schema, batches, spec, Paths::LEGACY).unwrap();
    for paths in ALL_PATHS {
        let p = partial_with_paths(&schema, batches, spec, paths).unwrap();
        same_partial(
            &p,
            &legacy,
            &format!("{what}: {paths:?} against the legacy path"),
        );
    }
    let want = oracle(&[batches.to_vec()], spec);
    assert_same(&finalize(&legacy, spec).unwrap(), &want, spec, what);
}

/// Every aggregation of every column whose name is in `cols`.
fn spec_of(keys: &[&str], cols: &[&str]) -> GroupBy {
    use AggFunc::*;
    GroupBy {
        keys: keys.iter().map(|k| k.to_string()).collect(),
        aggs: cols
            .iter()
            .flat_map(|c| {
                [Count, Sum, Mean, Min, Max, Std, Var].map(|f| AggSpec::new(c.to_string(), f))
            })
            .collect(),
    }
}

/// ISD-like rows: `stations` stations observed over `days` days (a `date` key floored to
/// the day in microseconds, a few null), with nulls, NaN, a column valid on even days
/// only (all-null groups) and an all-null column; the same rows in `order` ("time",
/// "station" or "random"), cut into batches of uneven sizes that are slices of one
/// batch (so validity bitmaps start at odd offsets).
fn isd_like(seed: u64, order: &str, stations: usize, days: i64) -> Vec<RecordBatch> {
    let mut rng = SmallRng::seed_from_u64(seed);
    // (station, hour) of every row, ~1.3 rows per station and day, in time order.
    let mut rows: Vec<(usize, i64)> = Vec::new();
    for h in 0..days * 24 {
        for s in 0..stations {
            if rng.random_bool(1.3 / 24.0) {
                rows.push((s, h));
            }
        }
    }
    match order {
        "time" => {}
        "station" => rows.sort_by_key(|&(s, h)| (s, h)),
        _ => {
            for i in (1..rows.len()).rev() {
                rows.swap(i, rng.random_range(0..=i));
            }
        }
    }
    // Values depend on the row only, so every order holds the same rows.
    let hash = |s: usize, h: i64, c: u64| {
        let mut r = SmallRng::seed_from_u64((s as u64) << 32 ^ (h as u64) << 4 ^ c);
        r.random::<f64>()
    };
    let n = rows.len();
    let date = TimestampMicrosecondArray::from_iter(rows.iter().map(|&(s, h)| {
        (hash(s, h, 1) > 0.01).then_some(1_199_145_600_000_000 + (h / 24) * DAY_US)
    }))
    .with_timezone("UTC");
    let f = |c: u64, null: f64, nan: f64, scale: f64| {
        Float64Array::from_iter(rows.iter().map(|&(s, h)| {
            let u = hash(s, h, c);
            if u < null {
                None
            } else if u < null + nan {
                Some(f64::NAN)
            } else {
                Some(1014.6 + scale * (hash(s, h, c + 100) - 0.5))
            }
        }))
    };
    let schema = Arc::new(Schema::new(vec![
        Field::new(
            "date",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            true,
        ),
        Field::new("a", DataType::Float64, true),
        Field::new("b", DataType::Float32, true),
        Field::new("c", DataType::Int32, true),
        Field::new("d", DataType::Int64, true),
        Field::new("z", DataType::Float64, true),
        Field::new("e", DataType::Float64, true),
        Field::new("sparse", DataType::Float64, true),
    ]));
    let cols: Vec<ArrayRef> = vec![
        Arc::new(date),
        Arc::new(f(2, 0.1, 0.05, 20.0)),
        Arc::new(Float32Array::from_iter(rows.iter().map(|&(s, h)| {
            let u = hash(s, h, 3);
            let x = if u < 0.23 {
                f32::NAN
            } else {
                (u * 40.0) as f32
            };
            (u > 0.2).then_some(x)
        }))),
        Arc::new(Int32Array::from_iter(rows.iter().map(|&(s, h)| {
            let u = hash(s, h, 4);
            (u > 0.3).then_some((u * 2000.0) as i32 - 1000)
        }))),
        Arc::new(Int64Array::from_iter_values(
            rows.iter()
                .map(|&(s, h)| (hash(s, h, 5) * 2e9) as i64 - 1_000_000_000),
        )),
        Arc::new(Float64Array::from_iter(
            rows.iter()
                .map(|&(s, h)| ((h / 24) % 2 == 0).then(|| hash(s, h, 6))),
        )),
        Arc::new(Float64Array::from(vec![None::<f64>; n])),
        Arc::new(f(7, 0.9, 0.01, 100.0)),
    ];
    let all = RecordBatch::try_new(schema, cols).unwrap();
    let mut out = Vec::new();
    let mut at = 0;
    while at < n {
        let len = rng.random_range(1..700).min(n - at);
        out.push(all.slice(at, len));
        at += len;
    }
    out
}

#[test]
fn paths_agree_on_time_station_and_random_order() {
    let spec = spec_of(&["date"], &["a", "b", "c", "d", "z", "e", "sparse"]);
    for (days, stations) in [(31, 60), (1, 200), (3, 5)] {
        let mut results = Vec::new();
        for order in ["time", "station", "random"] {
            let batches = isd_like(days as u64, order, stations, days);
            check_paths(&batches, &spec, &format!("{order}, {days} days"));
            results.push(finalize(&partial(&batches, &spec).unwrap(), &spec).unwrap());
        }
        // The same rows in any order give the same groups and counts.
        for r in &results[1..] {
            assert_eq!(r.num_rows(), results[0].num_rows());
            assert_eq!(r.column(0), results[0].column(0), "keys");
            assert_eq!(r.column(1), results[0].column(1), "counts");
        }
    }
}

#[test]
fn paths_agree_on_every_key_kind() {
    use KeyKind::*;
    for (i, kind) in [Int32, Date32, TimestampUs, YearMonth, Dict, StrAndInt]
        .into_iter()
        .enumerate()
    {
        for groups in [1, 31, 3000] {
            let parts = partitions(100 + i as u64, kind, groups);
            for batches in parts.iter().filter(|p| p.iter().any(|b| b.num_rows() > 0)) {
                check_paths(
                    batches,
                    &full_spec(kind),
                    &format!("{kind:?} {groups} groups"),
                );
            }
        }
    }
}

/// One Int64 key column `k` and the value columns of [`batch`], in batches of 1000 rows.
fn int64_keyed(seed: u64, keys: &[Option<i64>]) -> Vec<RecordBatch> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let vals = batch(&mut rng, KeyKind::Int32, keys.len(), 10);
    let mut fields = vec![Field::new("k", DataType::Int64, true)];
    fields.extend(
        vals.schema().fields()[1..]
            .iter()
            .map(|f| f.as_ref().clone()),
    );
    let mut cols: Vec<ArrayRef> = vec![Arc::new(Int64Array::from(keys.to_vec()))];
    cols.extend(vals.columns()[1..].iter().cloned());
    let all = RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).unwrap();
    (0..keys.len())
        .step_by(1000)
        .map(|at| all.slice(at, 1000.min(keys.len() - at)))
        .collect()
}

#[test]
fn paths_agree_on_extreme_keys_and_near_the_dense_threshold() {
    let spec = GroupBy {
        keys: vec!["k".into()],
        aggs: full_spec(KeyKind::Int32).aggs,
    };
    let mut rng = SmallRng::seed_from_u64(21);
    let mut draw = |n: usize, f: &dyn Fn(&mut SmallRng) -> i64| -> Vec<Option<i64>> {
        (0..n)
            .map(|_| (!rng.random_bool(0.02)).then(|| f(&mut rng)))
            .collect()
    };
    let extremes = [i64::MIN, i64::MIN + 1, -1, 0, 1, i64::MAX - 1, i64::MAX];
    let day = 86_400_000_000i64;
    let cases: Vec<(&str, Vec<Option<i64>>)> = vec![
        (
            "i64 extremes",
            draw(5000, &|r| extremes[r.random_range(0..7)]),
        ),
        (
            "min and max only",
            draw(3000, &|r| {
                if r.random_bool(0.5) {
                    i64::MIN
                } else {
                    i64::MAX
                }
            }),
        ),
        ("one group", draw(3000, &|_| -7)),
        (
            "65,536 slots",
            draw(70_000, &|r| r.random_range(0..=65_535i64) * 3 - 99_000),
        ),
        (
            "65,537 slots",
            draw(70_000, &|r| r.random_range(0..=65_536i64) * 3 - 99_000),
        ),
        (
            "days",
            draw(20_000, &|r| r.random_range(0..31) * day - 5 * day),
        ),
        (
            "days and one odd",
            draw(20_000, &|r| {
                r.random_range(0..31) * day + r.random_bool(0.001) as i64
            }),
        ),
        ("all null", vec![None; 2000]),
    ];
    for (what, keys) in &cases {
        check_paths(&int64_keyed(3, keys), &spec, what);
    }
}

#[test]
fn paths_agree_on_random_shapes() {
    // A property test by hand (the crate has no proptest): random key kinds, group
    // counts, row orders, batch cuts and null rates; every path gives the same partial.
    use KeyKind::*;
    let kinds = [Int32, Date32, TimestampUs, YearMonth, Dict, StrAndInt];
    let mut rng = SmallRng::seed_from_u64(99);
    for case in 0..40 {
        let kind = kinds[rng.random_range(0..kinds.len())];
        let groups = [1, 2, 7, 31, 100, 5000][rng.random_range(0..6)];
        let mut batches: Vec<RecordBatch> = (0..rng.random_range(1..4))
            .map(|_| {
                let n = rng.random_range(0..3000);
                batch(&mut rng, kind, n, groups)
            })
            .collect();
        if batches.iter().all(|b| b.num_rows() == 0) {
            continue;
        }
        if rng.random_bool(0.5) {
            // Sorted by the first key within each batch: runs of equal keys.
            batches = batches
                .iter()
                .map(|b| {
                    let idx = arrow_ord::sort::sort_to_indices(b.column(0), None, None).unwrap();
                    arrow_select::take::take_record_batch(b, &idx).unwrap()
                })
                .collect();
        }
        if rng.random_bool(0.5) {
            // Slices at odd offsets.
            batches = batches
                .iter()
                .map(|b| {
                    let at = rng.random_range(0..=b.num_rows().min(13));
                    b.slice(at, b.num_rows() - at)
                })
                .collect();
        }
        if batches.iter().all(|b| b.num_rows() == 0) {
            continue;
        }
        check_paths(
            &batches,
            &full_spec(kind),
            &format!("case {case}: {kind:?}, {groups} groups"),
        );
    }
}
