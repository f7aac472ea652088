//! Memory accounting for Arrow record batches held by a worker.

use std::collections::HashMap;

use arrow_array::{make_array, Array, RecordBatch};
use arrow_buffer::Buffer;

/// Bytes of Arrow buffers held by these batches.
///
/// Each distinct allocation is counted once, whatever the number of arrays, slices or
/// batches that share it (e.g. the dictionary values the Parquet reader shares between the
/// batches of one column chunk, or constant hive columns): buffers are keyed by the address
/// of their allocation and counted at their allocation's capacity (or, for buffers whose
/// memory Arrow does not own, such as ones over received network bytes, at the furthest
/// byte any slice of them reaches). Null bitmaps and children (dictionary values, list and
/// struct children) are included.
pub fn batches_memory_bytes(batches: &[RecordBatch]) -> usize {
    let mut seen: HashMap<usize, usize> = HashMap::new();
    for batch in batches {
        for col in batch.columns() {
            visit(col.as_ref(), &mut seen);
        }
    }
    seen.values().sum()
}

fn visit(array: &dyn Array, seen: &mut HashMap<usize, usize>) {
    let data = array.to_data();
    for b in data.buffers() {
        add(b, seen);
    }
    if let Some(nulls) = data.nulls() {
        add(nulls.buffer(), seen);
    }
    for child in data.child_data() {
        let child = make_array(child.clone());
        visit(child.as_ref(), seen);
    }
}

fn add(b: &Buffer, seen: &mut HashMap<usize, usize>) {
    let key = b.data_ptr().as_ptr() as usize;
    let size = b.capacity().max(b.ptr_offset() + b.len());
    let slot = seen.entry(key).or_insert(0);
    *slot = (*slot).max(size);
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{ArrayRef, Int64Array, RecordBatch};
    use std::sync::Arc;

    #[test]
    fn shared_buffers_counted_once() {
        let a: ArrayRef = Arc::new(Int64Array::from_iter_values(0..1000));
        let b1 = RecordBatch::try_from_iter([("x", a.clone())]).unwrap();
        let b2 = RecordBatch::try_from_iter([("x", a.slice(10, 100))]).unwrap();
        let one = batches_memory_bytes(std::slice::from_ref(&b1));
        assert!(one >= 8000);
        assert_eq!(batches_memory_bytes(&[b1, b2]), one);
        assert_eq!(batches_memory_bytes(&[]), 0);
    }
}
