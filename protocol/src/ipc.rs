//! Arrow IPC encoding of table data.
//!
//! Sending: [`arrow_ipc::writer::StreamEncoder`] yields the message headers and
//! the column buffers themselves; [`encode_batches`] appends them into one
//! `Vec<u8>` (one copy, needed because results ride inside a control frame).
//! Receiving: [`decode_batches`] builds batches whose column buffers point into
//! the received allocation (no copy); the allocation must be 8-byte aligned,
//! which frames read by [`crate::framing`] are.

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

/// Decode an Arrow IPC stream without copying column buffers.
pub fn decode_batches(data: Buffer) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let err = |e: arrow_schema::ArrowError| ProtocolError::Ipc(e.to_string());
    let mut decoder = arrow_ipc::reader::StreamDecoder::new().with_require_alignment(true);
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
