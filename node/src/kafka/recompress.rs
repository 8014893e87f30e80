//! Leader recompression (`compression.type` other than `producer`): a produced batch whose
//! codec differs from the topic's is recompressed before it reaches the core, as Kafka's
//! leader does. Only the records section changes codec: the records themselves (offsets deltas,
//! timestamps, headers, duplicate header keys included) stay byte for byte, and the producer id,
//! epoch and sequence stay in the header, so idempotence is unaffected.
//!
//! Decompression is kafka-protocol's. Compression at a level (`compression.<codec>.level`, KIP-390)
//! calls the codec crates kafka-protocol itself uses, since its compressors have fixed levels:
//! gzip through flate2, Kafka's lz4 frame (independent blocks) through lz4, zstd through zstd.
//! Snappy has no levels and stays kafka-protocol's (xerial-framed, as the Java client writes it).

use std::io::Write;

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

/// Kafka's default levels (`compression.lz4.level` 9, `compression.zstd.level` 3; gzip's -1 is
/// zlib's default), used when no level is given.
const LZ4_LEVEL_DEFAULT: i32 = 9;
const ZSTD_LEVEL_DEFAULT: i32 = 3;

/// `batch` with its records section in `target`'s codec at `level` (None: Kafka's default
/// level), or the same batch if it already is in that codec: as in Kafka, a batch in the
/// topic's codec is kept whatever level its producer used. The input is validated (its header
/// and CRC are trusted from then on); the output is not validated here, since the core
/// validates every batch it is asked to append.
pub fn recompress(
    batch: Bytes,
    target: Compression,
    level: Option<i32>,
) -> Result<Bytes, RecompressError> {
    let header = batch::validate(&batch)?;
    let source = header.compression();
    if source == target {
        return Ok(batch);
    }
    let plain = decompress(source, batch.slice(BATCH_HEADER_LEN..))?;
    let packed = compress(target, level, plain)?;
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

fn compress(
    codec: Compression,
    level: Option<i32>,
    plain: Bytes,
) -> Result<Bytes, RecompressError> {
    let packed = match codec {
        Compression::None => return Ok(plain),
        Compression::Gzip => gzip(&plain, level.unwrap_or(-1)),
        Compression::Snappy => snappy(plain),
        Compression::Lz4 => lz4(&plain, level.unwrap_or(LZ4_LEVEL_DEFAULT)),
        Compression::Zstd => zstd::bulk::compress(&plain, level.unwrap_or(ZSTD_LEVEL_DEFAULT))
            .map_err(|e| e.to_string()),
        Compression::Unknown(id) => return Err(RecompressError::UnknownCodec(id)),
    };
    packed.map(Bytes::from).map_err(RecompressError::Codec)
}

/// Gzip at `level` 1-9; -1 (or anything outside) is zlib's default, 6.
fn gzip(plain: &[u8], level: i32) -> Result<Vec<u8>, String> {
    let level = u32::try_from(level)
        .ok()
        .filter(|l| (1..=9).contains(l))
        .map_or_else(flate2::Compression::default, flate2::Compression::new);
    let mut e = flate2::write::GzEncoder::new(Vec::with_capacity(plain.len() / 2), level);
    e.write_all(plain).map_err(|e| e.to_string())?;
    e.finish().map_err(|e| e.to_string())
}

/// Kafka's lz4 frame: independent blocks, as kafka-protocol and the Java client write it.
/// Levels 1-2 are lz4's fast mode, 3-17 its high-compression mode.
fn lz4(plain: &[u8], level: i32) -> Result<Vec<u8>, String> {
    let level = u32::try_from(level).unwrap_or(1);
    let mut e = lz4::EncoderBuilder::new()
        .level(level)
        .block_mode(lz4::BlockMode::Independent)
        .build(Vec::with_capacity(plain.len() / 2))
        .map_err(|e| e.to_string())?;
    e.write_all(plain).map_err(|e| e.to_string())?;
    let (out, r) = e.finish();
    r.map(|()| out).map_err(|e| e.to_string())
}

fn snappy(plain: Bytes) -> Result<Vec<u8>, String> {
    let mut out = BytesMut::new();
    Snappy::compress(&mut out, |tmp: &mut BytesMut| {
        tmp.put_slice(&plain);
        Ok(())
    })
    .map_err(|e| format!("{e:#}"))?;
    Ok(out.to_vec())
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
                let ab =
                    recompress(recompress(original.clone(), a, None).unwrap(), b, None).unwrap();
                let h = batch::validate(&ab).expect("a recompressed batch is valid");
                assert_eq!(h.compression(), b);
                assert_eq!(
                    (h.producer_id, h.producer_epoch, h.base_sequence),
                    (7, 2, 40)
                );
                let back = recompress(ab, Compression::None, None).unwrap();
                assert_eq!(decode_records(&back).unwrap(), want, "{a:?} -> {b:?}");
            }
        }
        let same = recompress(original.clone(), Compression::None, None).unwrap();
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
            recompress(fake, Compression::None, None),
            Err(RecompressError::Codec(_))
        ));
    }

    #[test]
    fn test_levels_change_the_output_and_every_level_reads_back() {
        // Proves compression.<codec>.level is applied: on compressible records the highest
        // level of each codec packs tighter than its lowest, and every level decodes to the
        // same records.
        let text: Vec<u8> = (0..20_000u32)
            .flat_map(|i| format!("record {} of a log line {}\n", i % 97, i % 13).into_bytes())
            .collect();
        let original = BatchBuilder::new(0)
            .record(Some(b"k"), Some(&text), &[], 1_000)
            .build();
        let want = decode_records(&original).unwrap();
        let len = |codec, level| {
            let packed = recompress(original.clone(), codec, Some(level)).unwrap();
            let back = recompress(packed.clone(), Compression::None, None).unwrap();
            assert_eq!(decode_records(&back).unwrap(), want, "{codec:?} at {level}");
            packed.len()
        };
        for (codec, low, high) in [
            (Compression::Gzip, 1, 9),
            (Compression::Lz4, 1, 17),
            (Compression::Zstd, -5, 19),
        ] {
            let (l, h) = (len(codec, low), len(codec, high));
            assert!(
                h < l,
                "{codec:?}: level {high} gave {h} bytes, level {low} {l}"
            );
        }
        // Gzip's -1 is zlib's default level, not an error.
        assert!(len(Compression::Gzip, -1) > 0);
    }
}
