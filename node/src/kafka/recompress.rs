//! Leader recompression (`compression.type` other than `producer`): a produced batch whose
//! codec differs from the topic's is recompressed before it reaches the core, as Kafka's
//! leader does. Only the records section changes codec: the records themselves (offsets deltas,
//! timestamps, headers, duplicate header keys included) stay byte for byte, and the producer id,
//! epoch and sequence stay in the header, so idempotence is unaffected. The codecs are
//! kafka-protocol's (xerial-framed snappy as the Java client writes it, Kafka's lz4 frame).

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::compression::{Compressor, Decompressor, Gzip, Lz4, Snappy, Zstd};
use railyard_core::batch::{self, Compression, BATCH_HEADER_LEN};

/// Why a batch could not be recompressed; the client gets CORRUPT_MESSAGE.
#[derive(Debug, thiserror::Error)]
pub enum RecompressError {
    #[error("invalid batch: {0}")]
    Batch(#[from] batch::BatchError),
    #[error("codec {0} is unknown")]
    UnknownCodec(u8),
    #[error("the records do not decompress: {0}")]
    Codec(String),
}

/// `batch` with its records section in `target`'s codec (the same batch if it already is).
/// The input is validated (its header and CRC are trusted from then on); the output is not
/// validated here, since the core validates every batch it is asked to append.
pub fn recompress(batch: Bytes, target: Compression) -> Result<Bytes, RecompressError> {
    let header = batch::validate(&batch)?;
    let source = header.compression();
    if source == target {
        return Ok(batch);
    }
    let plain = decompress(source, batch.slice(BATCH_HEADER_LEN..))?;
    let packed = compress(target, plain)?;
    Ok(batch::with_records(&header, target, &packed))
}

fn decompress(codec: Compression, mut records: Bytes) -> Result<Bytes, RecompressError> {
    let copy = |b: &mut Bytes| Ok(b.copy_to_bytes(b.remaining()));
    let r = match codec {
        Compression::None => return Ok(records),
        Compression::Gzip => Gzip::decompress(&mut records, copy),
        Compression::Snappy => Snappy::decompress(&mut records, copy),
        Compression::Lz4 => Lz4::decompress(&mut records, copy),
        Compression::Zstd => Zstd::decompress(&mut records, copy),
        Compression::Unknown(id) => return Err(RecompressError::UnknownCodec(id)),
    };
    r.map_err(|e| RecompressError::Codec(format!("{e:#}")))
}

fn compress(codec: Compression, plain: Bytes) -> Result<Bytes, RecompressError> {
    let mut out = BytesMut::new();
    let fill = |tmp: &mut BytesMut| {
        tmp.put_slice(&plain);
        Ok(())
    };
    let r = match codec {
        Compression::None => return Ok(plain),
        Compression::Gzip => Gzip::compress(&mut out, fill),
        Compression::Snappy => Snappy::compress(&mut out, fill),
        Compression::Lz4 => Lz4::compress(&mut out, fill),
        Compression::Zstd => Zstd::compress(&mut out, fill),
        Compression::Unknown(id) => return Err(RecompressError::UnknownCodec(id)),
    };
    r.map_err(|e| RecompressError::Codec(format!("{e:#}")))?;
    Ok(out.freeze())
}

#[cfg(test)]
mod tests {
    use railyard_core::batch::{decode_records, BatchBuilder, BatchHeader};

    use super::*;

    #[test]
    fn test_every_codec_round_trips_the_records_and_keeps_the_producer_fields() {
        // uncompressed -> each codec -> each other codec -> uncompressed: the records decode
        // the same (duplicate header keys included) and the idempotence fields survive.
        let original = BatchBuilder::new(1_000)
            .producer(7, 2, 40)
            .record(
                Some(b"k"),
                Some(b"v1"),
                &[("h", Some(&b"a"[..])), ("h", Some(&b"b"[..]))],
                1_000,
            )
            .record(None, Some(&[9u8; 3000]), &[], 1_005)
            .build();
        let want = decode_records(&original).unwrap();
        let codecs = [
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ];
        for a in codecs {
            for b in codecs {
                let ab = recompress(recompress(original.clone(), a).unwrap(), b).unwrap();
                let h = batch::validate(&ab).expect("a recompressed batch is valid");
                assert_eq!(h.compression(), b);
                assert_eq!(
                    (h.producer_id, h.producer_epoch, h.base_sequence),
                    (7, 2, 40)
                );
                let back = recompress(ab, Compression::None).unwrap();
                assert_eq!(decode_records(&back).unwrap(), want, "{a:?} -> {b:?}");
            }
        }
        let same = recompress(original.clone(), Compression::None).unwrap();
        assert_eq!(
            same, original,
            "a batch already in the codec is kept as sent"
        );
    }

    #[test]
    fn test_garbage_records_are_an_error_not_a_panic() {
        let b = BatchBuilder::new(0)
            .record(None, Some(b"x"), &[], 0)
            .build();
        let h = BatchHeader::parse(&b).unwrap();
        let fake = batch::with_records(&h, Compression::Lz4, b"not lz4 at all");
        assert!(matches!(
            recompress(fake, Compression::None),
            Err(RecompressError::Codec(_))
        ));
    }
}
