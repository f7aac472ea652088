//! Arrow IPC encoding of table data.
//!
//! Sending: [`arrow_ipc::writer::StreamEncoder`] yields the message headers and
//! the column buffers themselves; [`encode_batches`] appends them into one
//! `Vec<u8>` (one copy, needed because results ride inside a control frame).
//! Receiving: [`decode_batches`] builds batches whose column buffers point into
//! the received allocation (no copy); the allocation must be 8-byte aligned,
//! which frames read by [`crate::framing`] are.
//!
//! **Compression is for local files only.** arrow-ipc is built with its lz4
//! and zstd codecs (for the worker's spill files), and a compressed buffer
//! starts with the length it claims to decompress to, which arrow allocates
//! up front: from a peer or a client that is a decompression bomb. So
//! [`decode_batches`] (every network path: peer deliveries, answers, table
//! payloads, schemas) first walks the stream's message headers and refuses
//! any compressed record batch or dictionary batch, naming it, before a byte
//! is decoded. Only [`decode_local_batches`] (a file this process wrote)
//! accepts compression, and only up to the decompressed bytes its writer
//! counted ([`inflated_bytes`]), so a damaged length is an error too.

use crate::{ProtocolError, Result};
use arrow_array::RecordBatch;
use arrow_buffer::Buffer;
use arrow_schema::SchemaRef;

/// Encode batches as one Arrow IPC stream.
pub fn encode_batches(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<Vec<u8>> {
    let err = |e: arrow_schema::ArrowError| ProtocolError::Ipc(e.to_string());
    let mut encoder = arrow_ipc::writer::StreamEncoder::try_new(schema).map_err(err)?;
    let mut out = Vec::new();
    for batch in batches {
        for buffer in encoder.encode(batch).map_err(err)? {
            out.extend_from_slice(buffer.as_slice());
        }
    }
    for buffer in encoder.finish().map_err(err)? {
        out.extend_from_slice(buffer.as_slice());
    }
    Ok(out)
}

/// Encode batches as one Arrow IPC stream with every record and dictionary
/// batch compressed (`codec`; zstd at `zstd_level`, ignored for lz4), for a
/// local file: [`decode_batches`] refuses it, [`decode_local_batches`] reads
/// it. One copy of the compressed bytes.
pub fn encode_batches_compressed(
    schema: &SchemaRef,
    batches: &[RecordBatch],
    codec: arrow_ipc::CompressionType,
    zstd_level: Option<i32>,
) -> Result<Vec<u8>> {
    let err = |e: arrow_schema::ArrowError| ProtocolError::Ipc(e.to_string());
    let mut options = arrow_ipc::writer::IpcWriteOptions::default()
        .try_with_compression(Some(codec))
        .map_err(err)?;
    if codec == arrow_ipc::CompressionType::ZSTD {
        options = options
            .try_with_compression_level(zstd_level)
            .map_err(err)?;
    }
    let mut encoder =
        arrow_ipc::writer::StreamEncoder::try_new_with_options(schema, options).map_err(err)?;
    let mut out = Vec::new();
    for batch in batches {
        for buffer in encoder.encode(batch).map_err(err)? {
            out.extend_from_slice(buffer.as_slice());
        }
    }
    for buffer in encoder.finish().map_err(err)? {
        out.extend_from_slice(buffer.as_slice());
    }
    Ok(out)
}

/// Encode batches as the buffers of one Arrow IPC stream, without copying
/// column data: the returned chunks are message headers and the column
/// buffers themselves, ready for `quinn::SendStream::write_all_chunks`.
pub fn encode_chunks(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<Vec<bytes::Bytes>> {
    let err = |e: arrow_schema::ArrowError| ProtocolError::Ipc(e.to_string());
    let mut encoder = arrow_ipc::writer::StreamEncoder::try_new(schema).map_err(err)?;
    let mut out = Vec::new();
    let wrap = |b: Buffer| bytes::Bytes::from_owner(BufferBytes(b));
    for batch in batches {
        out.extend(encoder.encode(batch).map_err(err)?.into_iter().map(wrap));
    }
    out.extend(encoder.finish().map_err(err)?.into_iter().map(wrap));
    Ok(out)
}

/// An Arrow buffer as the owner of a `bytes::Bytes` (keeps it alive, no copy).
struct BufferBytes(Buffer);

impl AsRef<[u8]> for BufferBytes {
    fn as_ref(&self) -> &[u8] {
        self.0.as_slice()
    }
}

/// Join received chunks into one 64-byte-aligned buffer: one copy, sized once.
pub fn assemble(chunks: &[bytes::Bytes]) -> Buffer {
    let total = chunks.iter().map(|c| c.len()).sum();
    let mut out = arrow_buffer::MutableBuffer::with_capacity(total);
    for c in chunks {
        out.extend_from_slice(c);
    }
    out.into()
}

/// Join received chunks into one 64-byte-aligned buffer per part, part `i`
/// `lengths[i]` bytes, in order: one copy, each buffer sized once, so each
/// part owns (and is counted by) its own allocation. `None` when the lengths
/// do not add up to the bytes received.
pub fn assemble_parts(chunks: &[bytes::Bytes], lengths: &[u64]) -> Option<Vec<Buffer>> {
    let total: u64 = chunks.iter().map(|c| c.len() as u64).sum();
    let sum = lengths
        .iter()
        .try_fold(0u64, |sum, l| sum.checked_add(*l))?;
    if sum != total {
        return None;
    }
    let mut parts = Vec::with_capacity(lengths.len());
    let (mut chunk, mut at) = (0usize, 0usize);
    for &len in lengths {
        let mut need = usize::try_from(len).ok()?;
        let mut out = arrow_buffer::MutableBuffer::with_capacity(need);
        while need > 0 {
            let c = &chunks[chunk];
            let take = (c.len() - at).min(need);
            out.extend_from_slice(&c[at..at + take]);
            at += take;
            need -= take;
            if at == c.len() {
                chunk += 1;
                at = 0;
            }
        }
        parts.push(out.into());
    }
    Some(parts)
}

/// Encode just a schema (an empty IPC stream).
pub fn encode_schema(schema: &SchemaRef) -> Result<Vec<u8>> {
    encode_batches(schema, &[])
}

/// Decode an Arrow IPC stream without copying column buffers. The stream
/// comes from the network (or could have): a compressed record batch or
/// dictionary batch is refused before anything is decoded.
pub fn decode_batches(data: Buffer) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    check_headers(data.as_slice(), None)?;
    decode_checked(data, true)
}

/// Decode an Arrow IPC stream this process wrote to a local file (a spill
/// file), which may be compressed: compressed buffers are decompressed into
/// fresh allocations (no longer zero copy), claiming at most `max_inflated`
/// bytes in all (what [`inflated_bytes`] counted when it was written); more
/// is an error naming both, before anything is allocated. Uncompressed
/// buffers still point into `data`.
pub fn decode_local_batches(
    data: Buffer,
    max_inflated: u64,
) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let inflated = check_headers(data.as_slice(), Some(max_inflated))?;
    // Decompressed buffers are fresh `Vec<u8>`s (only byte-aligned by
    // type): let the decoder re-align what needs it rather than refuse.
    decode_checked(data, inflated == 0)
}

/// The bytes decompressing every compressed buffer of a stream allocates
/// (0 for an uncompressed stream): the bound [`decode_local_batches`] checks.
pub fn inflated_bytes(data: &[u8]) -> Result<u64> {
    check_headers(data, Some(u64::MAX))
}

fn decode_checked(data: Buffer, require_alignment: bool) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let err = |e: arrow_schema::ArrowError| ProtocolError::Ipc(e.to_string());
    let mut decoder =
        arrow_ipc::reader::StreamDecoder::new().with_require_alignment(require_alignment);
    let mut buffer = data;
    let mut batches = Vec::new();
    while !buffer.is_empty() {
        match decoder.decode(&mut buffer).map_err(err)? {
            Some(batch) => batches.push(batch),
            None => break,
        }
    }
    decoder.finish().map_err(err)?;
    let schema = decoder
        .schema()
        .ok_or_else(|| ProtocolError::Ipc("stream has no schema message".into()))?;
    Ok((schema, batches))
}

/// Walk the messages of an IPC stream as [`arrow_ipc::reader::StreamDecoder`]
/// frames them (an optional continuation marker, a `u32` metadata length, 0
/// ending the stream, the flatbuffer `Message`, then `bodyLength` bytes) and
/// check each record batch and dictionary batch header for compression:
/// `allowed: None` refuses any; `Some(max)` allows them while the lengths
/// their buffers claim to decompress to add up to at most `max`. Returns
/// that sum. What the walk can not frame is an error (the decoder could not
/// decode past it either).
fn check_headers(data: &[u8], allowed: Option<u64>) -> Result<u64> {
    use arrow_ipc::MessageHeader;
    let bad = |what: String| Err(ProtocolError::Ipc(what));
    let mut at = 0usize;
    let mut inflated = 0u64;
    let mut index = 0usize;
    let take = |at: &mut usize, n: usize| -> Option<std::ops::Range<usize>> {
        let end = at.checked_add(n).filter(|end| *end <= data.len())?;
        let range = *at..end;
        *at = end;
        Some(range)
    };
    while at < data.len() {
        let Some(mut word) = take(&mut at, 4) else {
            return bad(format!("message {index}: truncated length"));
        };
        if data[word.clone()] == [0xff; 4] {
            let Some(next) = take(&mut at, 4) else {
                return bad(format!("message {index}: truncated length"));
            };
            word = next;
        }
        let size = u32::from_le_bytes(data[word].try_into().expect("4 bytes")) as usize;
        if size == 0 {
            break; // end of stream: the decoder refuses anything after it
        }
        let Some(meta) = take(&mut at, size) else {
            return bad(format!(
                "message {index}: a header of {size} bytes runs past the end"
            ));
        };
        let message = match arrow_ipc::root_as_message(&data[meta]) {
            Ok(message) => message,
            Err(e) => return bad(format!("message {index}: invalid header: {e}")),
        };
        let body_len = usize::try_from(message.bodyLength()).ok();
        let Some(body) = body_len.and_then(|len| take(&mut at, len)) else {
            return bad(format!(
                "message {index}: a body of {} bytes runs past the end",
                message.bodyLength()
            ));
        };
        let (kind, batch) = match message.header_type() {
            MessageHeader::RecordBatch => ("record batch", message.header_as_record_batch()),
            MessageHeader::DictionaryBatch => (
                "dictionary batch",
                message.header_as_dictionary_batch().and_then(|d| d.data()),
            ),
            _ => ("", None),
        };
        if let Some(compression) = batch.and_then(|b| b.compression()) {
            let Some(max) = allowed else {
                return bad(format!(
                    "message {index}: a compressed {kind} ({:?}) is refused: data from the network must be uncompressed Arrow IPC (only a worker's own spill files may be compressed)",
                    compression.codec()
                ));
            };
            let body = &data[body];
            let buffers = batch.and_then(|b| b.buffers());
            for (i, buffer) in buffers.into_iter().flatten().enumerate() {
                let (offset, length) = (buffer.offset(), buffer.length());
                if length == 0 {
                    continue; // an empty buffer is not decompressed
                }
                let prefix = usize::try_from(offset)
                    .ok()
                    .zip(usize::try_from(length).ok())
                    .filter(|(o, l)| *l >= 8 && o.checked_add(*l).is_some_and(|e| e <= body.len()))
                    .map(|(o, _)| &body[o..o + 8])
                    .ok_or_else(|| {
                        ProtocolError::Ipc(format!(
                            "message {index}: compressed buffer {i} of the {kind} (offset {offset}, {length} bytes) is not in its body of {} bytes",
                            body.len()
                        ))
                    })?;
                let claimed = i64::from_le_bytes(prefix.try_into().expect("8 bytes"));
                // -1: stored uncompressed (sliced, not allocated).
                if claimed > 0 {
                    inflated = inflated.saturating_add(claimed as u64);
                }
                if inflated > max {
                    return bad(format!(
                        "message {index}: the compressed buffers claim more than {max} bytes decompressed (buffer {i} of the {kind} claims {claimed}): damaged"
                    ));
                }
            }
        }
        index += 1;
    }
    Ok(inflated)
}

/// Join complete IPC streams into the payload of a table answer
/// (`ToClient::Table`): each stream as a `u64` little-endian length, then its
/// bytes. [`decode_table_payload`] reads it back.
pub fn encode_table_payload<'a>(streams: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut payload = Vec::new();
    for stream in streams {
        payload.extend_from_slice(&(stream.len() as u64).to_le_bytes());
        payload.extend_from_slice(stream);
    }
    payload
}

/// The record batches of a table payload ([`encode_table_payload`]), in
/// order. The payload is copied once into an aligned buffer; column buffers
/// then point into it. A length that runs past the end is an error, never a
/// panic.
pub fn decode_table_payload(payload: &[u8]) -> Result<Vec<RecordBatch>> {
    let aligned = Buffer::from(payload);
    let mut batches = Vec::new();
    let mut offset = 0usize;
    while offset < aligned.len() {
        let header = aligned
            .as_slice()
            .get(offset..offset + 8)
            .ok_or_else(|| ProtocolError::Ipc("table payload: truncated length".into()))?;
        let len = u64::from_le_bytes(header.try_into().expect("8 bytes"));
        offset += 8;
        let end = usize::try_from(len)
            .ok()
            .and_then(|len| offset.checked_add(len))
            .filter(|end| *end <= aligned.len())
            .ok_or_else(|| {
                ProtocolError::Ipc(format!(
                    "table payload: a stream of {len} bytes runs past the end ({} bytes)",
                    aligned.len()
                ))
            })?;
        if end > offset {
            // Keep each stream 8-byte aligned for the zero-copy decoder.
            let part = if offset.is_multiple_of(8) {
                aligned.slice_with_length(offset, end - offset)
            } else {
                Buffer::from(&aligned.as_slice()[offset..end])
            };
            batches.append(&mut decode_batches(part)?.1);
        }
        offset = end;
    }
    Ok(batches)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Float64Array, Int32Array};
    use arrow_schema::{DataType, Field, Schema};
    use std::sync::Arc;

    #[test]
    fn parts_are_cut_from_chunks_at_any_boundary_each_in_its_own_buffer() {
        let data: Vec<u8> = (0..100u8).collect();
        let chunks: Vec<bytes::Bytes> = [0..7, 7..7, 7..60, 60..100]
            .into_iter()
            .map(|r| bytes::Bytes::copy_from_slice(&data[r]))
            .collect();
        let parts = assemble_parts(&chunks, &[3, 0, 57, 40]).unwrap();
        let got: Vec<&[u8]> = parts.iter().map(|b| b.as_slice()).collect();
        assert_eq!(
            got,
            vec![&data[0..3], &[][..], &data[3..60], &data[60..100]]
        );
        assert_ne!(parts[0].as_ptr(), parts[2].as_ptr());
        // Lengths that lie about the bytes received.
        assert!(assemble_parts(&chunks, &[3, 96]).is_none());
        assert!(assemble_parts(&chunks, &[3, 98]).is_none());
        assert!(assemble_parts(&chunks, &[u64::MAX, 2]).is_none());
    }

    #[test]
    fn roundtrip_without_copy() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Int32, false),
            Field::new("b", DataType::Float64, true),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int32Array::from(vec![1, 2, 3])),
                Arc::new(Float64Array::from(vec![Some(1.5), None, Some(3.0)])),
            ],
        )
        .unwrap();
        let bytes = encode_batches(&schema, &[batch.clone(), batch.clone()]).unwrap();
        let buffer = Buffer::from_vec(bytes);
        let base = buffer.as_ptr() as usize;
        let end = base + buffer.len();
        let (s, batches) = decode_batches(buffer).unwrap();
        assert_eq!(s, schema);
        assert_eq!(batches, vec![batch.clone(), batch]);
        // Column values point into the received allocation.
        let values = batches[0].column(0).to_data().buffers()[0].as_ptr() as usize;
        assert!(values >= base && values < end);
    }

    fn dictionary_batch() -> (SchemaRef, RecordBatch) {
        use arrow_array::{DictionaryArray, StringArray};
        // Big enough that compression pays (smaller buffers are stored as
        // they are, flagged uncompressed).
        let keys =
            arrow_array::Int32Array::from_iter((0..4000).map(|i| (i % 7 != 3).then_some(i % 2)));
        let values = StringArray::from_iter_values((0..500).map(|i| format!("USW000{i:05}")));
        let station = DictionaryArray::try_new(keys, Arc::new(values)).unwrap();
        let batch = RecordBatch::try_from_iter([
            ("station", Arc::new(station) as arrow_array::ArrayRef),
            (
                "t",
                Arc::new(Float64Array::from_iter_values(
                    (0..4000).map(|i| f64::from(i % 40)),
                )),
            ),
        ])
        .unwrap();
        (batch.schema(), batch)
    }

    #[test]
    fn a_compressed_stream_is_refused_from_the_network_and_read_from_a_local_file() {
        let (schema, batch) = dictionary_batch();
        for codec in [
            arrow_ipc::CompressionType::LZ4_FRAME,
            arrow_ipc::CompressionType::ZSTD,
        ] {
            let bytes =
                encode_batches_compressed(&schema, &[batch.clone(), batch.clone()], codec, None)
                    .unwrap();
            // The network paths: a stream, and a table answer's payload.
            let err = decode_batches(Buffer::from(bytes.as_slice()))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("compressed dictionary batch")
                    && err.contains(&format!("{codec:?}"))
                    && err.contains("refused"),
                "{err}"
            );
            let payload = encode_table_payload([bytes.as_slice()]);
            let err = decode_table_payload(&payload).unwrap_err().to_string();
            assert!(
                err.contains("compressed") && err.contains("refused"),
                "{err}"
            );
            // A local file whose writer counted its decompressed bytes.
            let inflated = inflated_bytes(&bytes).unwrap();
            assert!(inflated > 0);
            let (s, back) = decode_local_batches(Buffer::from(bytes.as_slice()), inflated).unwrap();
            assert_eq!(s, schema);
            assert_eq!(back, vec![batch.clone(), batch.clone()]);
            // Claiming more than counted (a damaged length) is refused.
            let err = decode_local_batches(Buffer::from(bytes.as_slice()), inflated - 1)
                .unwrap_err()
                .to_string();
            assert!(err.contains("claim more than"), "{err}");
        }
        // A stream with only the record batch compressed (no dictionary).
        let schema = Arc::new(Schema::new(vec![Field::new("a", DataType::Int32, false)]));
        let plain = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(Int32Array::from_iter_values(0..1000))],
        )
        .unwrap();
        let bytes = encode_batches_compressed(
            &schema,
            &[plain],
            arrow_ipc::CompressionType::LZ4_FRAME,
            None,
        )
        .unwrap();
        let err = decode_batches(Buffer::from(bytes.as_slice()))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("compressed record batch (LZ4_FRAME) is refused"),
            "{err}"
        );
        // Uncompressed streams have nothing to inflate.
        let plain = encode_batches(&schema, &[]).unwrap();
        assert_eq!(inflated_bytes(&plain).unwrap(), 0);
    }

    #[test]
    fn table_payloads_roundtrip_and_refuse_lying_lengths() {
        let schema = Arc::new(Schema::new(vec![Field::new("a", DataType::Int32, false)]));
        let batch =
            RecordBatch::try_new(schema.clone(), vec![Arc::new(Int32Array::from(vec![7, 8]))])
                .unwrap();
        let one = encode_batches(&schema, std::slice::from_ref(&batch)).unwrap();
        let payload = encode_table_payload([one.as_slice(), &[], one.as_slice()]);
        let batches = decode_table_payload(&payload).unwrap();
        assert_eq!(batches, vec![batch.clone(), batch]);
        assert!(decode_table_payload(&[]).unwrap().is_empty());
        let mut lying = payload.clone();
        lying[..8].copy_from_slice(&u64::MAX.to_le_bytes());
        let err = decode_table_payload(&lying).unwrap_err().to_string();
        assert!(err.contains("runs past the end"), "{err}");
        assert!(decode_table_payload(&payload[..payload.len() - 3]).is_err());
        assert!(decode_table_payload(&payload[..5]).is_err());
    }
}
