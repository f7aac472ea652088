//! Parquet column chunks encoded straight from Arrow arrays, for [`crate::write`].
//!
//! parquet's `ArrowWriter` dictionary-encodes a value by interning it in a hash table, row by
//! row: for an Arrow dictionary of strings it hashes and compares the string of every row
//! (even though the array already is a dictionary), and for floats it hashes every value. On
//! ISD-like data that interning, the RLE/bit-packing of the indices and the levels were most
//! of the writer's CPU. Columns of the two kinds below are therefore encoded here, page by
//! page, into the same Parquet layout (a PLAIN dictionary page, then RLE_DICTIONARY data
//! pages v1 with RLE definition levels, an offset index, and for floats chunk statistics and
//! a column index), and spliced into the row group; every other column goes through
//! parquet's own `ArrowColumnWriter` as before.
//!
//! - Dictionary(integer, Utf8/LargeUtf8/Binary/LargeBinary) columns without statistics: each
//!   distinct value of an Arrow dictionary is interned once, rows map their key through a
//!   table. Used when the chunk's Arrow dictionaries (an upper bound of its distinct values)
//!   fit the dictionary page size limit; otherwise parquet's writer (with its PLAIN
//!   fallback) writes the column.
//! - Float64 columns: a small open-addressing table on the values' bits. When the
//!   dictionary outgrows the dictionary page size limit, the following pages are PLAIN, as
//!   parquet's writer does.
//! - The ascending integer columns that `writer_properties` gives `DELTA_BINARY_PACKED`
//!   (Int32, Date32, Int64, Timestamp of ms/us/ns), unless their first page takes more than
//!   a byte per value: such deltas (timestamps by the minute) compress severalfold with
//!   Snappy, so parquet's writer keeps them.
//!
//! Pages take the column's codec (Snappy, with the `snap` crate parquet's own codec uses).
//!
//! Measured on ISD-like data (kernels bench, 6 M rows, same session, old and new binaries
//! alternating): 1.9 s -> 0.86 s of CPU for the whole write, files 100.3 -> 99.5 MB.

use arrow_array::cast::AsArray;
use arrow_array::types::*;
use arrow_array::{Array, ArrayRef};
use arrow_buffer::{ArrowNativeType, BooleanBuffer, BooleanBufferBuilder};
use arrow_schema::{DataType, TimeUnit};
use parquet::basic::{Compression, Encoding, EncodingMask, PageType};
use parquet::column::page::{CompressedPage, Page, PageWriter};
use parquet::column::writer::ColumnCloseResult;
use parquet::file::metadata::{
    ColumnChunkMetaData, ColumnIndexBuilder, OffsetIndexBuilder, PageEncodingStats,
};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::file::statistics::{Statistics, ValueStatistics};
use parquet::file::writer::{SerializedPageWriter, TrackedWrite};
use parquet::schema::types::ColumnPath;
use rustc_hash::FxBuildHasher;
use std::collections::HashMap;
use std::sync::Arc;

/// Which columns [`write_chunk_direct`] encodes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Direct {
    /// Arrow dictionary of byte strings, no statistics.
    ByteDict,
    /// Float64, dictionary-encoded.
    Float64,
    /// Integers stored as INT32 (Int32, Date32) or INT64 (Int64, Timestamp of ms, us or ns),
    /// `DELTA_BINARY_PACKED` without a dictionary.
    DeltaInt { wide: bool },
}

pub(crate) fn direct_kind(
    dt: &DataType,
    props: &WriterProperties,
    path: &ColumnPath,
) -> Option<Direct> {
    if !matches!(
        props.compression(path),
        Compression::SNAPPY | Compression::UNCOMPRESSED
    ) || props.bloom_filter_properties(path).is_some()
    {
        return None;
    }
    if !props.dictionary_enabled(path)
        && props.encoding(path) == Some(Encoding::DELTA_BINARY_PACKED)
    {
        return match dt {
            DataType::Int32 | DataType::Date32 => Some(Direct::DeltaInt { wide: false }),
            DataType::Int64
            | DataType::Timestamp(
                TimeUnit::Millisecond | TimeUnit::Microsecond | TimeUnit::Nanosecond,
                _,
            ) => Some(Direct::DeltaInt { wide: true }),
            _ => None,
        };
    }
    if !props.dictionary_enabled(path) || props.encoding(path).is_some() {
        return None;
    }
    match dt {
        DataType::Dictionary(k, v)
            if k.is_integer()
                && matches!(
                    **v,
                    DataType::Utf8 | DataType::LargeUtf8 | DataType::Binary | DataType::LargeBinary
                )
                && props.statistics_enabled(path) == EnabledStatistics::None =>
        {
            Some(Direct::ByteDict)
        }
        DataType::Float64 => Some(Direct::Float64),
        _ => None,
    }
}

/// Bytes of value `i` of a byte-string array (Utf8, LargeUtf8, Binary, LargeBinary).
fn byte_value(values: &dyn Array, i: usize) -> &[u8] {
    match values.data_type() {
        DataType::Utf8 => values.as_string::<i32>().value(i).as_bytes(),
        DataType::LargeUtf8 => values.as_string::<i64>().value(i).as_bytes(),
        DataType::Binary => values.as_binary::<i32>().value(i),
        DataType::LargeBinary => values.as_binary::<i64>().value(i),
        dt => unreachable!("not a byte-string type: {dt}"),
    }
}

/// Bytes of the values buffer of a byte-string array (an upper bound of what its values
/// take in a PLAIN dictionary page, with 4 length bytes per value).
fn byte_values_size(values: &dyn Array) -> usize {
    let data = match values.data_type() {
        DataType::Utf8 => {
            let a = values.as_string::<i32>();
            a.value_offsets()[a.len()] as usize - a.value_offsets()[0] as usize
        }
        DataType::LargeUtf8 => {
            let a = values.as_string::<i64>();
            (a.value_offsets()[a.len()] - a.value_offsets()[0]) as usize
        }
        DataType::Binary => {
            let a = values.as_binary::<i32>();
            a.value_offsets()[a.len()] as usize - a.value_offsets()[0] as usize
        }
        DataType::LargeBinary => {
            let a = values.as_binary::<i64>();
            (a.value_offsets()[a.len()] - a.value_offsets()[0]) as usize
        }
        _ => usize::MAX / 2,
    };
    data + 4 * values.len()
}

/// Whether the Arrow dictionaries of `arrays` (each counted once) fit `limit` bytes of a
/// PLAIN dictionary page.
pub(crate) fn byte_dicts_fit(arrays: &[ArrayRef], limit: usize) -> bool {
    let mut seen: Vec<&ArrayRef> = Vec::new();
    let mut total = 0usize;
    for a in arrays {
        let values = a.as_any_dictionary().values();
        if seen.iter().any(|s| Arc::ptr_eq(s, values)) {
            continue;
        }
        seen.push(values);
        total = total.saturating_add(byte_values_size(values.as_ref()));
        if total > limit {
            return false;
        }
    }
    true
}

/// Dictionary ids (in order of first appearance) of the valid rows of Arrow dictionary
/// arrays of byte strings, the dictionary page (PLAIN) and its number of values.
#[derive(Default)]
struct ByteDictEncoder {
    /// Id of every value seen. Fx hash (rustc's): plenty for interning a few thousand
    /// strings, and much cheaper than SipHash.
    ids: HashMap<Vec<u8>, u32, FxBuildHasher>,
    page: Vec<u8>,
    count: u32,
    /// Remapping of the last Arrow dictionary seen: its values and the id of each (or
    /// `u32::MAX` when not seen yet).
    last: Option<(ArrayRef, Vec<u32>)>,
}

impl ByteDictEncoder {
    fn intern(&mut self, v: &[u8]) -> u32 {
        if let Some(&id) = self.ids.get(v) {
            return id;
        }
        let id = self.count;
        self.count += 1;
        self.page.extend_from_slice(&(v.len() as u32).to_le_bytes());
        self.page.extend_from_slice(v);
        self.ids.insert(v.to_vec(), id);
        id
    }

    /// Append the ids of the valid rows of `array` to `out`.
    fn encode(&mut self, array: &ArrayRef, out: &mut Vec<u32>) {
        fn typed<K: ArrowDictionaryKeyType>(
            enc: &mut ByteDictEncoder,
            array: &ArrayRef,
            remap: &mut [u32],
            out: &mut Vec<u32>,
        ) {
            let dict = array.as_dictionary::<K>();
            let keys = dict.keys().values();
            let values = dict.values();
            let mut id_of = |k: usize| {
                let m = remap[k];
                if m != u32::MAX {
                    return m;
                }
                let m = enc.intern(byte_value(values.as_ref(), k));
                remap[k] = m;
                m
            };
            match array.logical_nulls().filter(|n| n.null_count() > 0) {
                None => out.extend(keys.iter().map(|k| id_of(k.as_usize()))),
                Some(nulls) => out.extend(nulls.valid_indices().map(|i| id_of(keys[i].as_usize()))),
            }
        }
        let values = array.as_any_dictionary().values().clone();
        let mut remap = match self.last.take() {
            Some((v, remap)) if Arc::ptr_eq(&v, &values) => remap,
            _ => vec![u32::MAX; values.len()],
        };
        let DataType::Dictionary(k, _) = array.data_type() else {
            unreachable!("not a dictionary")
        };
        match **k {
            DataType::Int8 => typed::<Int8Type>(self, array, &mut remap, out),
            DataType::Int16 => typed::<Int16Type>(self, array, &mut remap, out),
            DataType::Int32 => typed::<Int32Type>(self, array, &mut remap, out),
            DataType::Int64 => typed::<Int64Type>(self, array, &mut remap, out),
            DataType::UInt8 => typed::<UInt8Type>(self, array, &mut remap, out),
            DataType::UInt16 => typed::<UInt16Type>(self, array, &mut remap, out),
            DataType::UInt32 => typed::<UInt32Type>(self, array, &mut remap, out),
            DataType::UInt64 => typed::<UInt64Type>(self, array, &mut remap, out),
            ref dt => unreachable!("not a dictionary key type: {dt}"),
        }
        self.last = Some((values, remap));
    }
}

/// Dictionary of f64 values by their bits: open addressing, ids in order of first
/// appearance.
struct F64Dict {
    slots: Vec<(u64, u32)>,
    shift: u32,
    values: Vec<u64>,
    last: (u64, u32),
}

impl F64Dict {
    fn new() -> Self {
        F64Dict {
            slots: vec![(0, u32::MAX); 1024],
            shift: 64 - 10,
            values: Vec::new(),
            last: (0, u32::MAX),
        }
    }

    #[inline]
    fn slot(&self, bits: u64) -> usize {
        (bits.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> self.shift) as usize
    }

    #[inline]
    fn intern(&mut self, bits: u64) -> u32 {
        if self.last.0 == bits && self.last.1 != u32::MAX {
            return self.last.1;
        }
        let mask = self.slots.len() - 1;
        let mut s = self.slot(bits);
        loop {
            let (k, id) = self.slots[s];
            if id == u32::MAX {
                break;
            }
            if k == bits {
                self.last = (bits, id);
                return id;
            }
            s = (s + 1) & mask;
        }
        let id = self.values.len() as u32;
        self.values.push(bits);
        self.slots[s] = (bits, id);
        if self.values.len() * 2 > self.slots.len() {
            self.grow();
        }
        self.last = (bits, id);
        id
    }

    fn grow(&mut self) {
        let n = self.slots.len() * 2;
        self.slots = vec![(0, u32::MAX); n];
        self.shift -= 1;
        let mask = n - 1;
        for (id, &bits) in self.values.iter().enumerate() {
            let mut s = self.slot(bits);
            while self.slots[s].1 != u32::MAX {
                s = (s + 1) & mask;
            }
            self.slots[s] = (bits, id as u32);
        }
    }
}

/// Append `v` as an unsigned LEB128 varint.
fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Append the bit-packed groups of 8 values of `values` (the last group padded with
/// zeros), `width` bits each, least significant bits first.
fn bit_pack(out: &mut Vec<u8>, values: &[u32], width: u8) {
    #[inline(always)]
    fn group(out: &mut Vec<u8>, g: &[u32], w: usize) {
        if w <= 8 {
            let mut acc = 0u64;
            for (k, &v) in g.iter().enumerate() {
                acc |= u64::from(v) << (k * w);
            }
            // A fixed-size copy then a truncation: cheaper than a copy of `w` bytes.
            let len = out.len();
            out.extend_from_slice(&acc.to_le_bytes());
            out.truncate(len + w);
        } else if w <= 16 {
            // Two halves of 4 values (at most 64 bits each), then one 128-bit shift.
            let (mut lo, mut hi) = (0u64, 0u64);
            for k in 0..4 {
                lo |= u64::from(g[k]) << (k * w);
                hi |= u64::from(g[k + 4]) << (k * w);
            }
            let acc = u128::from(lo) | (u128::from(hi) << (4 * w));
            let len = out.len();
            out.extend_from_slice(&acc.to_le_bytes());
            out.truncate(len + w);
        } else {
            pack_lsb_first(out, g.iter().map(|&v| u64::from(v)), w as u32);
        }
    }
    let w = usize::from(width);
    out.reserve(values.len().div_ceil(8) * w);
    let mut groups = values.chunks_exact(8);
    for g in &mut groups {
        group(out, g, w);
    }
    let rest = groups.remainder();
    if !rest.is_empty() {
        let mut g = [0u32; 8];
        g[..rest.len()].copy_from_slice(rest);
        group(out, &g, w);
    }
}

/// Encode `values` (each below `1 << width`) with Parquet's RLE / bit-packing hybrid: runs
/// of at least 8 equal values starting at a group boundary as RLE runs, the rest
/// bit-packed in runs of at most 63 groups of 8.
fn rle_hybrid(out: &mut Vec<u8>, values: &[u32], width: u8) {
    const MAX_GROUPS: usize = 63;
    let value_bytes = usize::from(width).div_ceil(8);
    let flush_packed = |out: &mut Vec<u8>, packed: &[u32]| {
        for chunk in packed.chunks(MAX_GROUPS * 8) {
            put_varint(out, ((chunk.len().div_ceil(8) as u64) << 1) | 1);
            bit_pack(out, chunk, width);
        }
    };
    let n = values.len();
    let (mut i, mut packed_from) = (0, 0);
    while i < n {
        let v = values[i];
        let mut j = i + 1;
        while j < n && values[j] == v {
            j += 1;
        }
        if j - i >= 8 {
            flush_packed(out, &values[packed_from..i]);
            put_varint(out, ((j - i) as u64) << 1);
            out.extend_from_slice(&v.to_le_bytes()[..value_bytes]);
            i = j;
            packed_from = i;
        } else {
            i = (i + 8).min(n);
        }
    }
    flush_packed(out, &values[packed_from..n]);
}

/// Bits needed for the ids of a dictionary of `n` values.
fn id_width(n: usize) -> u8 {
    (usize::BITS - n.saturating_sub(1).leading_zeros()) as u8
}

/// `raw` as the column's codec stores it: as is, or compressed with Snappy (the same
/// `snap` crate parquet's own codec uses).
fn store(raw: Vec<u8>, codec: Compression) -> parquet::errors::Result<Vec<u8>> {
    if codec != Compression::SNAPPY {
        return Ok(raw);
    }
    snap::raw::Encoder::new()
        .compress_vec(&raw)
        .map_err(|e| parquet::errors::ParquetError::General(format!("snappy: {e}")))
}

/// Encode `rows` levels of bit width 1, given as a bitmap (least significant bit first;
/// bits past `rows` ignored): runs of at least 3 bytes of all 0s or all 1s as RLE runs,
/// the rest bit-packed (a byte of the bitmap is a group of 8 levels).
fn rle_bitmap(out: &mut Vec<u8>, bitmap: &[u8], rows: usize) {
    const MAX_GROUPS: usize = 63;
    let flush_packed = |out: &mut Vec<u8>, packed: &[u8]| {
        for chunk in packed.chunks(MAX_GROUPS) {
            put_varint(out, ((chunk.len() as u64) << 1) | 1);
            out.extend_from_slice(chunk);
        }
    };
    let full = rows / 8;
    let (mut i, mut packed_from) = (0, 0);
    while i < full {
        let b = bitmap[i];
        if b == 0 || b == 0xFF {
            let mut j = i + 1;
            while j < full && bitmap[j] == b {
                j += 1;
            }
            if j - i >= 3 {
                flush_packed(out, &bitmap[packed_from..i]);
                put_varint(out, (((j - i) * 8) as u64) << 1);
                out.push(b & 1);
                i = j;
                packed_from = i;
                continue;
            }
            i = j;
        } else {
            i += 1;
        }
    }
    flush_packed(out, &bitmap[packed_from..rows.div_ceil(8)]);
}

/// Definition levels of one page (data page v1: 4 length bytes, then RLE / bit-packed),
/// from the page's validity bitmap (`None`: every row valid).
fn put_def_levels(out: &mut Vec<u8>, levels: Option<&[u8]>, rows: usize) {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    match levels {
        Some(l) => rle_bitmap(out, l, rows),
        None => {
            // Every row valid: one RLE run of 1s.
            put_varint(out, (rows as u64) << 1);
            out.push(1);
        }
    }
    let len = (out.len() - start - 4) as u32;
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
}

/// Min and max of the non-NaN values (`-0.0` as min and `+0.0` as max for zeros, as the
/// Parquet spec asks), or `None` when there is none.
fn f64_min_max(values: &[f64]) -> Option<(f64, f64)> {
    let mut it = values.iter().copied().filter(|v| !v.is_nan());
    let first = it.next()?;
    let (mut min, mut max) = (first, first);
    for v in it {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
    }
    if min == 0.0 {
        min = -0.0;
    }
    if max == 0.0 {
        max = 0.0;
    }
    Some((min, max))
}

/// Append `v` as a zigzag LEB128 varint.
fn put_zigzag(out: &mut Vec<u8>, v: i64) {
    put_varint(out, ((v << 1) ^ (v >> 63)) as u64);
}

/// Append 32 values of `width` bits (`0..=64`) each, bit-packed least significant bits first
/// (`values` holds at most 32; missing ones are zeros).
fn bit_pack_32(out: &mut Vec<u8>, values: &[u64], width: u32) {
    if width == 0 {
        return;
    }
    let padded = (0..32).map(|k| values.get(k).copied().unwrap_or(0));
    pack_lsb_first(out, padded, width);
}

/// Append `values` of `width` bits each (at most 64), least significant bits first; the
/// values' bits must end on a byte boundary (groups of 8 or 32 values).
fn pack_lsb_first(out: &mut Vec<u8>, values: impl Iterator<Item = u64>, width: u32) {
    let (mut acc, mut bits) = (0u128, 0u32);
    for v in values {
        acc |= u128::from(v) << bits;
        bits += width;
        if bits >= 64 {
            out.extend_from_slice(&(acc as u64).to_le_bytes());
            acc >>= 64;
            bits -= 64;
        }
    }
    while bits > 0 {
        out.push(acc as u8);
        acc >>= 8;
        bits = bits.saturating_sub(8);
    }
}

/// Encode `values` with `DELTA_BINARY_PACKED` (blocks of 128 values in 4 miniblocks of 32),
/// the deltas computed with the wrapping arithmetic of the physical type: `i32` unless
/// `wide` (the values of an INT32 column are `i32`s widened to `i64`).
fn delta_binary_packed(out: &mut Vec<u8>, values: &[i64], wide: bool) {
    const BLOCK: usize = 128;
    const MINI: usize = 32;
    put_varint(out, BLOCK as u64);
    put_varint(out, (BLOCK / MINI) as u64);
    put_varint(out, values.len() as u64);
    put_zigzag(out, values.first().copied().unwrap_or(0));
    let delta = |a: i64, b: i64| -> i64 {
        if wide {
            b.wrapping_sub(a)
        } else {
            i64::from((b as i32).wrapping_sub(a as i32))
        }
    };
    let mut deltas = [0i64; BLOCK];
    let mut packed = [0u64; BLOCK];
    let mut start = 1;
    while start < values.len() {
        let end = (start + BLOCK).min(values.len());
        let n = end - start;
        for (k, d) in deltas[..n].iter_mut().enumerate() {
            *d = delta(values[start + k - 1], values[start + k]);
        }
        let min = deltas[..n].iter().copied().min().unwrap_or(0);
        for (k, u) in packed[..n].iter_mut().enumerate() {
            *u = if wide {
                deltas[k].wrapping_sub(min) as u64
            } else {
                u64::from((deltas[k] as i32).wrapping_sub(min as i32) as u32)
            };
        }
        put_zigzag(out, min);
        let mut widths = [0u8; BLOCK / MINI];
        for (m, w) in widths.iter_mut().enumerate() {
            let lo = m * MINI;
            if lo < n {
                let max = packed[lo..n.min(lo + MINI)].iter().fold(0, |a, &b| a | b);
                *w = (64 - max.leading_zeros()) as u8;
            }
        }
        out.extend_from_slice(&widths);
        for (m, &w) in widths.iter().enumerate() {
            let lo = m * MINI;
            if lo < n {
                bit_pack_32(out, &packed[lo..n.min(lo + MINI)], u32::from(w));
            }
        }
        start = end;
    }
}

/// Values of the valid rows of primitive arrays of native type `T`.
fn valid_values<T: ArrowNativeType>(arrays: &[ArrayRef], out: &mut Vec<T>) {
    for a in arrays {
        let data = a.to_data();
        let values = &data.buffers()[0].typed_data::<T>()[data.offset()..][..data.len()];
        match a.nulls().filter(|n| n.null_count() > 0) {
            None => out.extend_from_slice(values),
            Some(n) => out.extend(n.valid_indices().map(|i| values[i])),
        }
    }
}

/// Statistics of a chunk: min and max (`None` when no value has one), by physical type.
enum ChunkMinMax {
    Double(Option<(f64, f64)>),
    Int32(Option<(i32, i32)>),
    Int64(Option<(i64, i64)>),
}

/// Min and max of a page (little-endian bytes, `None` when no value has one), and its nulls.
type PageStats = (Option<(Vec<u8>, Vec<u8>)>, usize);

/// One data page of a chunk, before it is written.
struct PendingPage {
    buf: Vec<u8>,
    raw_len: usize,
    rows: usize,
    encoding: Encoding,
    /// Min and max (little-endian bytes, `None` when no value has one) and nulls of the page,
    /// for the column index.
    stats: Option<PageStats>,
}

/// Encode one column chunk (the column's arrays of one row group) directly, and return its
/// bytes (as a [`parquet::column::page::Page`] buffer, to splice them with
/// `append_column`) with its close result.
pub(crate) fn write_chunk_direct(
    kind: Direct,
    descr: &parquet::schema::types::ColumnDescPtr,
    props: &WriterProperties,
    arrays: &[ArrayRef],
) -> parquet::errors::Result<Option<(Page, ColumnCloseResult)>> {
    let path = descr.path();
    let codec = props.compression(path);
    let nullable = descr.max_def_level() > 0;
    let rows: usize = arrays.iter().map(|a| a.len()).sum();
    // Pages of at most the row limit, and small enough for the page size limit even as
    // PLAIN floats; a multiple of 8 rows.
    let page_rows = props
        .data_page_row_count_limit()
        .min(props.column_data_page_size_limit(path) / 8)
        .clamp(8, 1 << 20)
        / 8
        * 8;
    let dict_limit = props.column_dictionary_page_size_limit(path);
    let stats_level = props.statistics_enabled(path);

    // Validity of every row (when some are null) and the pages' values.
    let any_null = arrays.iter().any(|a| a.logical_null_count() > 0);
    if any_null && !nullable {
        return Err(parquet::errors::ParquetError::General(format!(
            "column {path} holds nulls but is not nullable"
        )));
    }
    // Validity of every row, when some are null (pages start at multiples of 8 rows, so a
    // page's definition levels are whole bytes of it).
    let levels: Option<BooleanBuffer> = any_null.then(|| {
        let mut l = BooleanBufferBuilder::new(rows);
        for a in arrays {
            match a.logical_nulls() {
                Some(n) => l.append_buffer(n.inner()),
                None => l.append_n(a.len(), true),
            }
        }
        l.finish()
    });

    let mut pages: Vec<PendingPage> = Vec::with_capacity(rows.div_ceil(page_rows));
    // The dictionary page and its number of values.
    let dict: Option<(Vec<u8>, usize)>;
    let chunk_stats: ChunkMinMax;
    let chunk_nulls = rows - levels.as_ref().map_or(rows, |l| l.count_set_bits());
    // Walk the pages: rows [r0, r1), valid values [v0, v1).
    let page_bounds = |levels: &Option<BooleanBuffer>| -> Vec<(usize, usize, usize, usize)> {
        let mut out = Vec::new();
        let (mut r0, mut v0) = (0, 0);
        while r0 < rows {
            let r1 = (r0 + page_rows).min(rows);
            let valid = match levels {
                Some(l) => l.slice(r0, r1 - r0).count_set_bits(),
                None => r1 - r0,
            };
            out.push((r0, r1, v0, v0 + valid));
            r0 = r1;
            v0 += valid;
        }
        out
    };
    let bounds = page_bounds(&levels);
    let page_levels =
        |r0: usize, r1: usize| levels.as_ref().map(|l| &l.values()[r0 / 8..r1.div_ceil(8)]);

    match kind {
        Direct::ByteDict => {
            let mut enc = ByteDictEncoder::default();
            let mut ids = Vec::with_capacity(rows);
            for a in arrays {
                enc.encode(a, &mut ids);
            }
            let width = id_width(enc.count as usize);
            for &(r0, r1, v0, v1) in &bounds {
                let mut raw = Vec::with_capacity((v1 - v0) * usize::from(width) / 8 + 64);
                if nullable {
                    put_def_levels(&mut raw, page_levels(r0, r1), r1 - r0);
                }
                raw.push(width);
                rle_hybrid(&mut raw, &ids[v0..v1], width);
                pages.push(PendingPage {
                    raw_len: raw.len(),
                    buf: store(raw, codec)?,
                    rows: r1 - r0,
                    encoding: Encoding::RLE_DICTIONARY,
                    stats: None,
                });
            }
            dict = Some((enc.page, enc.count as usize));
            chunk_stats = ChunkMinMax::Double(None);
        }
        Direct::Float64 => {
            let mut values: Vec<f64> = Vec::with_capacity(rows);
            for a in arrays {
                let a = a.as_primitive::<Float64Type>();
                match a.nulls().filter(|n| n.null_count() > 0) {
                    None => values.extend_from_slice(a.values()),
                    Some(n) => values.extend(n.valid_indices().map(|i| a.values()[i])),
                }
            }
            let mut values_dict = F64Dict::new();
            let mut chunk_min_max: Option<(f64, f64)> = None;
            let mut ids: Vec<u32> = Vec::with_capacity(page_rows);
            let mut plain = false;
            for &(r0, r1, v0, v1) in &bounds {
                let vals = &values[v0..v1];
                let mut raw = Vec::with_capacity((v1 - v0) * 2 + 64);
                if nullable {
                    put_def_levels(&mut raw, page_levels(r0, r1), r1 - r0);
                }
                let encoding = if plain {
                    raw.reserve(vals.len() * 8);
                    for v in vals {
                        raw.extend_from_slice(&v.to_le_bytes());
                    }
                    Encoding::PLAIN
                } else {
                    ids.clear();
                    ids.extend(vals.iter().map(|v| values_dict.intern(v.to_bits())));
                    let width = id_width(values_dict.values.len());
                    raw.push(width);
                    rle_hybrid(&mut raw, &ids, width);
                    // As parquet's writer: once the dictionary outgrows its page limit, the
                    // following pages are PLAIN.
                    plain = values_dict.values.len() * 8 >= dict_limit;
                    Encoding::RLE_DICTIONARY
                };
                let mm = if stats_level == EnabledStatistics::None {
                    None
                } else {
                    f64_min_max(vals)
                };
                let nulls = (r1 - r0) - (v1 - v0);
                if let Some((lo, hi)) = mm {
                    chunk_min_max = Some(match chunk_min_max {
                        None => (lo, hi),
                        Some((a, b)) => (
                            if lo < a || (lo == a && lo.is_sign_negative()) {
                                lo
                            } else {
                                a
                            },
                            if hi > b || (hi == b && hi.is_sign_positive()) {
                                hi
                            } else {
                                b
                            },
                        ),
                    });
                }
                pages.push(PendingPage {
                    raw_len: raw.len(),
                    buf: store(raw, codec)?,
                    rows: r1 - r0,
                    encoding,
                    stats: Some((
                        mm.map(|(lo, hi)| (lo.to_le_bytes().to_vec(), hi.to_le_bytes().to_vec())),
                        nulls,
                    )),
                });
            }
            let mut page = Vec::with_capacity(values_dict.values.len() * 8);
            for bits in &values_dict.values {
                page.extend_from_slice(&bits.to_le_bytes());
            }
            dict = Some((page, values_dict.values.len()));
            chunk_stats = ChunkMinMax::Double(chunk_min_max);
        }
        Direct::DeltaInt { wide } => {
            let mut values: Vec<i64> = Vec::with_capacity(rows);
            if wide {
                valid_values::<i64>(arrays, &mut values);
            } else {
                let mut narrow: Vec<i32> = Vec::with_capacity(rows);
                valid_values::<i32>(arrays, &mut narrow);
                values.extend(narrow.iter().map(|&v| i64::from(v)));
            }
            let mut chunk_min_max: Option<(i64, i64)> = None;
            for &(r0, r1, v0, v1) in &bounds {
                let vals = &values[v0..v1];
                let mut raw = Vec::with_capacity((v1 - v0) * 4 + 64);
                if nullable {
                    put_def_levels(&mut raw, page_levels(r0, r1), r1 - r0);
                }
                delta_binary_packed(&mut raw, vals, wide);
                // Deltas that take more than a byte a value (timestamps of minutes, say)
                // compress severalfold with Snappy, which these pages do not get: leave such
                // a chunk (judged by its first page) to parquet's writer.
                if codec == Compression::SNAPPY
                    && pages.is_empty()
                    && raw.len() > vals.len().max(1024)
                {
                    return Ok(None);
                }
                let mm = vals
                    .iter()
                    .fold(None, |m: Option<(i64, i64)>, &v| match m {
                        None => Some((v, v)),
                        Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
                    })
                    .filter(|_| stats_level != EnabledStatistics::None);
                if let Some((lo, hi)) = mm {
                    chunk_min_max = Some(match chunk_min_max {
                        None => (lo, hi),
                        Some((a, b)) => (a.min(lo), b.max(hi)),
                    });
                }
                let bytes = |v: i64| {
                    if wide {
                        v.to_le_bytes().to_vec()
                    } else {
                        (v as i32).to_le_bytes().to_vec()
                    }
                };
                pages.push(PendingPage {
                    raw_len: raw.len(),
                    buf: store(raw, codec)?,
                    rows: r1 - r0,
                    encoding: Encoding::DELTA_BINARY_PACKED,
                    stats: Some((
                        mm.map(|(lo, hi)| (bytes(lo), bytes(hi))),
                        (r1 - r0) - (v1 - v0),
                    )),
                });
            }
            dict = None;
            chunk_stats = if wide {
                ChunkMinMax::Int64(chunk_min_max)
            } else {
                ChunkMinMax::Int32(chunk_min_max.map(|(lo, hi)| (lo as i32, hi as i32)))
            };
        }
    }

    // Write the dictionary page, then the data pages.
    let mut sink = TrackedWrite::new(Vec::with_capacity(
        dict.as_ref().map_or(0, |d| d.0.len())
            + pages.iter().map(|p| p.buf.len() + 32).sum::<usize>()
            + 64,
    ));
    let mut offsets = OffsetIndexBuilder::new();
    let mut column_index = (stats_level == EnabledStatistics::Page
        && !matches!(kind, Direct::ByteDict))
    .then(|| ColumnIndexBuilder::new(descr.physical_type()));
    // Whether the pages' mins and maxes both never decrease (the index's boundary order).
    let mut ascending = true;
    let mut last_page: Option<(Vec<u8>, Vec<u8>)> = None;
    let (mut compressed, mut uncompressed) = (0u64, 0u64);
    let mut encodings = vec![Encoding::RLE];
    let mut encoding_stats = Vec::new();
    let has_dict = dict.is_some();
    let mut data_page_offset = None;
    {
        let mut pw = SerializedPageWriter::new(&mut sink);
        if let Some((page, count)) = dict {
            let raw_len = page.len();
            let spec = pw.write_page(CompressedPage::new(
                Page::DictionaryPage {
                    buf: store(page, codec)?.into(),
                    num_values: count as u32,
                    encoding: Encoding::PLAIN,
                    is_sorted: false,
                },
                raw_len,
            ))?;
            compressed += spec.compressed_size as u64;
            uncompressed += spec.uncompressed_size as u64;
            encodings.push(Encoding::PLAIN);
            encoding_stats.push(PageEncodingStats {
                page_type: PageType::DICTIONARY_PAGE,
                encoding: Encoding::PLAIN,
                count: 1,
            });
        }
        for p in pages {
            let spec = pw.write_page(CompressedPage::new(
                Page::DataPage {
                    buf: p.buf.into(),
                    num_values: p.rows as u32,
                    encoding: p.encoding,
                    def_level_encoding: Encoding::RLE,
                    rep_level_encoding: Encoding::RLE,
                    statistics: None,
                },
                p.raw_len,
            ))?;
            compressed += spec.compressed_size as u64;
            uncompressed += spec.uncompressed_size as u64;
            data_page_offset.get_or_insert(spec.offset);
            offsets.append_offset_and_size(spec.offset as i64, spec.compressed_size as i32);
            offsets.append_row_count(p.rows as i64);
            if !encodings.contains(&p.encoding) {
                encodings.push(p.encoding);
            }
            match encoding_stats.last_mut() {
                Some(s) if s.page_type == PageType::DATA_PAGE && s.encoding == p.encoding => {
                    s.count += 1
                }
                _ => encoding_stats.push(PageEncodingStats {
                    page_type: PageType::DATA_PAGE,
                    encoding: p.encoding,
                    count: 1,
                }),
            }
            if let (Some(ci), Some((mm, nulls))) = (column_index.as_mut(), p.stats) {
                match mm {
                    Some((lo, hi)) => {
                        if let Some((a, b)) = &last_page {
                            let le = |x: &[u8], y: &[u8]| match kind {
                                Direct::Float64 => {
                                    f64::from_le_bytes(x.try_into().expect("8 bytes"))
                                        <= f64::from_le_bytes(y.try_into().expect("8 bytes"))
                                }
                                Direct::DeltaInt { wide: true } => {
                                    i64::from_le_bytes(x.try_into().expect("8 bytes"))
                                        <= i64::from_le_bytes(y.try_into().expect("8 bytes"))
                                }
                                _ => {
                                    i32::from_le_bytes(x.try_into().expect("4 bytes"))
                                        <= i32::from_le_bytes(y.try_into().expect("4 bytes"))
                                }
                            };
                            ascending &= le(a, &lo) && le(b, &hi);
                        }
                        last_page = Some((lo.clone(), hi.clone()));
                        ci.append(false, lo, hi, nulls as i64)
                    }
                    None if nulls == p.rows => {
                        ascending = false;
                        ci.append(true, vec![], vec![], nulls as i64)
                    }
                    // Only NaNs: no min/max to index by.
                    None => ci.to_invalid(),
                }
            }
        }
    }
    let mut builder = ColumnChunkMetaData::builder(descr.clone())
        .set_compression(codec)
        .set_encodings_mask(EncodingMask::new_from_encodings(encodings.iter()))
        .set_page_encoding_stats(encoding_stats)
        .set_total_compressed_size(compressed as i64)
        .set_total_uncompressed_size(uncompressed as i64)
        .set_num_values(rows as i64)
        .set_data_page_offset(data_page_offset.unwrap_or(0) as i64)
        .set_dictionary_page_offset(has_dict.then_some(0));
    if kind != Direct::ByteDict && stats_level != EnabledStatistics::None {
        macro_rules! stats {
            ($t:ty, $mm:expr) => {{
                let mm: Option<($t, $t)> = $mm;
                let (lo, hi) = mm.map_or((None, None), |(lo, hi)| (Some(lo), Some(hi)));
                Statistics::from(
                    ValueStatistics::<$t>::new(lo, hi, None, Some(chunk_nulls as u64), false)
                        .with_backwards_compatible_min_max(true),
                )
            }};
        }
        builder = builder.set_statistics(match chunk_stats {
            ChunkMinMax::Double(mm) => stats!(f64, mm),
            ChunkMinMax::Int32(mm) => stats!(i32, mm),
            ChunkMinMax::Int64(mm) => stats!(i64, mm),
        });
    }
    let metadata = builder.build()?;
    let column_index = match column_index {
        Some(mut ci) if ci.valid() => {
            if ascending && last_page.is_some() {
                ci.set_boundary_order(parquet::basic::BoundaryOrder::ASCENDING);
            }
            Some(ci.build()?)
        }
        _ => None,
    };
    let offset_index = (!props.offset_index_disabled()).then(|| offsets.build());
    let bytes = sink.into_inner()?;
    let close = ColumnCloseResult {
        bytes_written: bytes.len() as u64,
        rows_written: rows as u64,
        metadata,
        bloom_filter: None,
        column_index,
        offset_index,
    };
    // The chunk's bytes as a `Bytes` (which `append_column` reads), by way of a page.
    let chunk = Page::DictionaryPage {
        buf: bytes.into(),
        num_values: 0,
        encoding: Encoding::PLAIN,
        is_sorted: false,
    };
    Ok(Some((chunk, close)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bits of `values`, `width` each, least significant first, one bool per bit.
    fn naive(values: &[u64], width: u32) -> Vec<u8> {
        let bits: Vec<bool> = values
            .iter()
            .flat_map(|&v| (0..width).map(move |b| (v >> b) & 1 == 1))
            .collect();
        bits.chunks(8)
            .map(|c| c.iter().rev().fold(0u8, |acc, &b| (acc << 1) | u8::from(b)))
            .collect()
    }

    #[test]
    fn bit_packers_agree_with_a_bit_by_bit_writer() {
        let values: Vec<u32> = (0..8u32).map(|i| i.wrapping_mul(0x9E37_79B9)).collect();
        for width in 1..=32u8 {
            let masked: Vec<u32> = values
                .iter()
                .map(|&v| (u64::from(v) & ((1u64 << width) - 1)) as u32)
                .collect();
            let mut out = Vec::new();
            bit_pack(&mut out, &masked, width);
            let wide: Vec<u64> = masked.iter().map(|&v| u64::from(v)).collect();
            assert_eq!(out, naive(&wide, u32::from(width)), "width {width}");
        }
        let values: Vec<u64> = (0..32u64)
            .map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15))
            .collect();
        for width in 1..=64u32 {
            let masked: Vec<u64> = values
                .iter()
                .map(|&v| {
                    if width == 64 {
                        v
                    } else {
                        v & ((1 << width) - 1)
                    }
                })
                .collect();
            let mut out = Vec::new();
            bit_pack_32(&mut out, &masked, width);
            assert_eq!(out, naive(&masked, width), "width {width}");
        }
    }
}
