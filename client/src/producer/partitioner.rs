//! Which partition a record goes to: the partition the record names, else murmur2 of its key
//! exactly as the Java client computes it (so a key lands on the same partition whichever
//! client wrote it), else a sticky partition per topic that moves on after a batch's worth of
//! bytes (KIP-480/KIP-794's uniform sticky partitioner: key-less records fill whole batches
//! instead of trickling one record into every partition's batch).

use std::collections::HashMap;

/// Kafka's `org.apache.kafka.common.utils.Utils.murmur2`: MurmurHash2, 32-bit, seed
/// 0x9747b28c, little-endian 4-byte blocks, with Java's signed result.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    // Java computes `seed ^ length` on an int; lengths beyond i32 cannot be Kafka keys.
    let mut h: u32 = SEED ^ (data.len() as u32);
    let mut blocks = data.chunks_exact(4);
    for b in &mut blocks {
        let mut k = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M) ^ k;
    }
    // Java's switch falls through from case 3 to case 1.
    let tail = blocks.remainder();
    if tail.len() == 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The Java client's partition for a non-null key: `toPositive(murmur2(key)) % partitions`.
pub fn key_partition(key: &[u8], partitions: i32) -> i32 {
    assert!(partitions > 0, "a topic has at least one partition");
    (murmur2(key) & 0x7fff_ffff) % partitions
}

/// The sticky choice for key-less records, per topic.
#[derive(Debug, Default)]
pub struct StickyPartitioner {
    /// Per topic: the current partition and the bytes sent to it since it was chosen.
    current: HashMap<String, (i32, usize)>,
}

impl StickyPartitioner {
    /// The partition for a key-less record of `size_bytes` to `topic`; switches to another
    /// partition (at random, never the same one twice in a row when there are several) once
    /// `batch_size_bytes` have gone to the current one.
    pub fn partition(
        &mut self,
        topic: &str,
        partitions: i32,
        size_bytes: usize,
        batch_size_bytes: usize,
    ) -> i32 {
        assert!(partitions > 0, "a topic has at least one partition");
        let entry = self
            .current
            .entry(topic.to_string())
            .or_insert_with(|| (random_partition(partitions, None), 0));
        if entry.1 >= batch_size_bytes || entry.0 >= partitions {
            *entry = (random_partition(partitions, Some(entry.0)), 0);
        }
        entry.1 += size_bytes;
        entry.0
    }
}

fn random_partition(partitions: i32, not: Option<i32>) -> i32 {
    loop {
        let p = crate::random::below(partitions as usize) as i32;
        if partitions == 1 || Some(p) != not {
            return p;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Kafka's `UtilsTest.testMurmur2` vectors (they are the Java client's own results), plus
    /// `abc` for a 3-byte tail.
    const JAVA_VECTORS: &[(&[u8], i32)] = &[
        (b"21", -973_932_308),
        (b"foobar", -790_332_482),
        (b"a-little-bit-long-string", -985_981_536),
        (b"a-little-bit-longer-string", -1_486_304_829),
        (
            b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
            -58_897_971,
        ),
        (b"abc", 479_470_107),
    ];

    // Proves the hash is the Java client's on its known vectors, every tail length included.
    #[test]
    fn test_murmur2_java_vectors() {
        for (input, want) in JAVA_VECTORS {
            assert_eq!(murmur2(input), *want, "{}", String::from_utf8_lossy(input));
        }
    }

    /// A second, independent transcription of Java's `Utils.murmur2` (int arithmetic, the
    /// `switch` with fall-through written as a match), to hold the first one to on any input.
    fn java_murmur2_reference(data: &[u8]) -> i32 {
        let length = data.len() as i32;
        let seed: i32 = 0x9747_b28c_u32 as i32;
        let m: i32 = 0x5bd1_e995;
        let r = 24;
        let mut h: i32 = seed ^ length;
        let length4 = length / 4;
        for i in 0..length4 as usize {
            let i4 = i * 4;
            let mut k: i32 = (data[i4] as i32 & 0xff)
                + ((data[i4 + 1] as i32 & 0xff) << 8)
                + ((data[i4 + 2] as i32 & 0xff) << 16)
                + ((data[i4 + 3] as i32 & 0xff) << 24);
            k = k.wrapping_mul(m);
            k ^= ((k as u32) >> r) as i32;
            k = k.wrapping_mul(m);
            h = h.wrapping_mul(m);
            h ^= k;
        }
        let base = (length & !3) as usize;
        let rem = length % 4;
        if rem == 3 {
            h ^= (data[base + 2] as i32 & 0xff) << 16;
        }
        if rem >= 2 {
            h ^= (data[base + 1] as i32 & 0xff) << 8;
        }
        if rem >= 1 {
            h ^= data[base] as i32 & 0xff;
            h = h.wrapping_mul(m);
        }
        h ^= ((h as u32) >> 13) as i32;
        h = h.wrapping_mul(m);
        h ^= ((h as u32) >> 15) as i32;
        h
    }

    proptest! {
        // Proves murmur2 equals the Java transcription on arbitrary keys, and the partition is
        // always in range, so placement matches the Java client beyond the fixed vectors.
        #[test]
        fn prop_murmur2_matches_java(key in proptest::collection::vec(any::<u8>(), 0..64), n in 1i32..1000) {
            prop_assert_eq!(murmur2(&key), java_murmur2_reference(&key));
            let p = key_partition(&key, n);
            prop_assert!((0..n).contains(&p));
        }

        // Proves the sticky partitioner stays in range and moves on after a batch's bytes.
        #[test]
        fn prop_sticky_moves_after_batch(n in 2i32..20, size in 1usize..500) {
            let mut s = StickyPartitioner::default();
            let first = s.partition("t", n, size, 1000);
            let mut sent = size;
            while sent < 1000 {
                prop_assert_eq!(s.partition("t", n, size, 1000), first);
                sent += size;
            }
            let next = s.partition("t", n, size, 1000);
            prop_assert!(next != first && (0..n).contains(&next));
        }
    }

    // Proves the vectors agree with the reference too (the reference is not itself wrong).
    #[test]
    fn test_reference_agrees_on_vectors() {
        for (input, want) in JAVA_VECTORS {
            assert_eq!(java_murmur2_reference(input), *want);
        }
    }
}
