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

/// Bytes of Arrow buffers held by each column of these batches (same schema),
/// for `memory_usage`: as [`batches_memory_bytes`], except that an allocation
/// several columns share (a partition read back from its spill file is one
/// mapping of the whole file; a delivery is one received buffer) is split
/// between them: each counts the bytes of its own slices of it (each
/// distinct slice once). An allocation one column alone uses is counted
/// whole, so on data decoded in place the columns add up to the partition's
/// bytes.
pub fn columns_memory_bytes(batches: &[RecordBatch]) -> Vec<usize> {
    /// A column's use of one allocation: its distinct slices, the most any
    /// reaches, and the allocation's capacity.
    #[derive(Default)]
    struct Use {
        slices: std::collections::HashSet<(usize, usize)>,
        end: usize,
        capacity: usize,
    }
    let columns = batches.first().map_or(0, RecordBatch::num_columns);
    let mut uses: Vec<HashMap<usize, Use>> = (0..columns).map(|_| HashMap::new()).collect();
    let mut users: HashMap<usize, usize> = HashMap::new();
    for (c, column) in uses.iter_mut().enumerate() {
        for batch in batches {
            if let Some(col) = batch.columns().get(c) {
                visit_buffers(col.as_ref(), &mut |b| {
                    let u = column.entry(b.data_ptr().as_ptr() as usize).or_default();
                    let (start, end) = (b.ptr_offset(), b.ptr_offset() + b.len());
                    u.slices.insert((start, end));
                    u.end = u.end.max(end);
                    u.capacity = b.capacity();
                });
            }
        }
        for key in column.keys() {
            *users.entry(*key).or_insert(0) += 1;
        }
    }
    uses.iter()
        .map(|column| {
            column
                .iter()
                .map(|(key, u)| {
                    if users[key] > 1 {
                        u.slices.iter().map(|(start, end)| end - start).sum()
                    } else {
                        u.capacity.max(u.end)
                    }
                })
                .sum()
        })
        .collect()
}

fn visit(array: &dyn Array, seen: &mut HashMap<usize, usize>) {
    visit_buffers(array, &mut |b| add(b, seen));
}

/// Every buffer of `array`: its own, its null bitmap, its children's.
fn visit_buffers(array: &dyn Array, f: &mut dyn FnMut(&Buffer)) {
    let data = array.to_data();
    for b in data.buffers() {
        f(b);
    }
    if let Some(nulls) = data.nulls() {
        f(nulls.buffer());
    }
    for child in data.child_data() {
        let child = make_array(child.clone());
        visit_buffers(child.as_ref(), f);
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

    #[test]
    fn columns_sharing_one_allocation_each_count_their_own_slices() {
        use arrow_buffer::ScalarBuffer;
        // Two columns over one allocation (as a mapped spill file is), and a
        // third with its own.
        let shared = Buffer::from_vec(vec![0i64; 3000]);
        let a: ArrayRef = Arc::new(Int64Array::new(
            ScalarBuffer::new(shared.clone(), 0, 1000),
            None,
        ));
        let b: ArrayRef = Arc::new(Int64Array::new(ScalarBuffer::new(shared, 1000, 1000), None));
        let c: ArrayRef = Arc::new(Int64Array::from_iter_values(0..1000));
        let batch = RecordBatch::try_from_iter([("a", a), ("b", b), ("c", c.clone())]).unwrap();
        let own = batches_memory_bytes(&[RecordBatch::try_from_iter([("c", c)]).unwrap()]);
        assert_eq!(
            columns_memory_bytes(std::slice::from_ref(&batch)),
            vec![8000, 8000, own]
        );
        // The partition as a whole counts the allocation once.
        assert_eq!(batches_memory_bytes(&[batch]), 24000 + own);
        assert!(columns_memory_bytes(&[]).is_empty());
    }
}
