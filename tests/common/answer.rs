//! Comparing the answers of two runs of the same workflow (a cluster with
//! and without a fault, a memory limit, ...): JSON documents with numbers
//! within a relative 1e-9, and command-line answers without the sizes they
//! print. Standalone (std and serde_json only), so `benches/common` includes
//! it too.

/// Equal JSON documents, numbers within a relative 1e-9 (moments merge in
/// another order when partitions moved); other text exactly.
pub fn same_answer(a: &str, b: &str) -> Result<(), String> {
    fn walk(a: &serde_json::Value, b: &serde_json::Value) -> bool {
        use serde_json::Value::*;
        match (a, b) {
            (Number(x), Number(y)) => {
                let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
                (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0)
            }
            (Array(x), Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(p, q)| walk(p, q)),
            (Object(x), Object(y)) => {
                x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| walk(v, w)))
            }
            _ => a == b,
        }
    }
    let parsed = (
        serde_json::from_str::<serde_json::Value>(a),
        serde_json::from_str::<serde_json::Value>(b),
    );
    let equal = match parsed {
        (Ok(x), Ok(y)) => walk(&x, &y),
        _ => a == b,
    };
    equal
        .then_some(())
        .ok_or_else(|| format!("expected:\n{a}\ngot:\n{b}"))
}

/// Whether `text` is a size as answers print it (`75.51 MB`).
pub fn is_size(text: &str) -> bool {
    match text.split_once(' ') {
        Some((number, unit)) => number.parse::<f64>().is_ok() && unit.ends_with('B'),
        None => false,
    }
}

/// A command-line answer (`isd: 400000 rows, 144 partitions, 68.02 MB`)
/// without its sizes: a frame's size in memory depends on where its buffers
/// came from (a partition read back from a spill file has no slack
/// capacity), its rows and partitions do not.
pub fn without_sizes(answer: &str) -> String {
    answer
        .split(", ")
        .filter(|part| !is_size(part))
        .collect::<Vec<_>>()
        .join(", ")
}
