//! A broker's producer-id allocator: Kafka's InitProducerId for idempotent producers.
//!
//! Ids come in blocks the controller grants through the metadata log
//! ([`crate::controller::AllocateProducerIds`]): the broker asks in its heartbeat, the grant
//! commits, and the broker hands ids out of the block from its image. A block starts where the
//! image's free ids start when the record applies, so no id is handed out twice, even across a
//! controller failover; a broker takes only the grant of its own current request (incarnation
//! and counter), so a restarted broker never reuses its previous block. The rest of a block is
//! lost at a restart, as in Kafka.
//!
//! Re-initialisation with the current id and epoch (KIP-360) bumps the epoch; the partitions'
//! producer tables then fence the old epoch. An exhausted epoch gets a new id.

use crate::api::{ClientError, RequestId};
use crate::controller::{AllocateProducerIds, MetadataImage};
use crate::types::{Millis, NodeId};

/// Producer ids asked for at a time (Kafka's block size).
pub const PRODUCER_ID_BLOCK_SIZE: u32 = 1_000;

/// A new block is asked for when this few ids are left, so clients rarely wait.
const REFILL_BELOW: i64 = 100;

/// An InitProducerId waiting for a block is answered COORDINATOR_LOAD_IN_PROGRESS (the client
/// retries) after this long.
pub const PRODUCER_ID_WAIT_MS: Millis = 5_000;

#[derive(Debug)]
pub struct ProducerIdAllocator {
    broker: NodeId,
    incarnation: u64,
    /// Requests made in this incarnation.
    requests: u64,
    /// The grant asked for and not yet seen in the image.
    wanted: Option<AllocateProducerIds>,
    /// Ids `next .. end` are free to hand out.
    next: i64,
    end: i64,
    /// A granted block not in use yet (the current one still has ids).
    spare: Option<(i64, i64)>,
    waiting: Vec<(RequestId, Millis)>,
}

/// What the allocator answers.
pub type InitResult = Result<(i64, i16), ClientError>;

impl ProducerIdAllocator {
    pub fn new(broker: NodeId, incarnation: u64) -> ProducerIdAllocator {
        ProducerIdAllocator {
            broker,
            incarnation,
            requests: 0,
            wanted: None,
            next: 0,
            end: 0,
            spare: None,
            waiting: Vec::new(),
        }
    }

    /// The grant to ask for in the next heartbeat, while one is wanted.
    pub fn wanted(&self) -> Option<&AllocateProducerIds> {
        self.wanted.as_ref()
    }

    /// Handles an InitProducerId (`next_producer_id`: the image's first free id, to refuse
    /// ids never granted): an answer now, or `None` when the request waits for a block
    /// (answered later by [`ProducerIdAllocator::on_image`] or [`ProducerIdAllocator::expire`]).
    pub fn init(
        &mut self,
        id: RequestId,
        current: Option<(i64, i16)>,
        next_producer_id: i64,
        now_ms: Millis,
    ) -> Option<InitResult> {
        if let Some((pid, epoch)) = current.filter(|(pid, epoch)| *pid >= 0 && *epoch >= 0) {
            if pid >= next_producer_id {
                return Some(Err(ClientError::InvalidProducerIdMapping(pid)));
            }
            if epoch < i16::MAX - 1 {
                return Some(Ok((pid, epoch + 1)));
            }
            // The epoch is exhausted: a new id, as Kafka does.
        }
        if let Some(pid) = self.take() {
            return Some(Ok((pid, 0)));
        }
        self.waiting.push((id, now_ms + PRODUCER_ID_WAIT_MS));
        self.ask();
        None
    }

    fn take(&mut self) -> Option<i64> {
        if self.next >= self.end {
            if let Some((first, end)) = self.spare.take() {
                self.next = first;
                self.end = end;
            }
        }
        if self.next >= self.end {
            return None;
        }
        let pid = self.next;
        self.next += 1;
        if self.end - self.next < REFILL_BELOW && self.spare.is_none() {
            self.ask();
        }
        Some(pid)
    }

    fn ask(&mut self) {
        if self.wanted.is_some() {
            return;
        }
        self.requests += 1;
        self.wanted = Some(AllocateProducerIds {
            broker: self.broker,
            incarnation: self.incarnation,
            request: self.requests,
            size: PRODUCER_ID_BLOCK_SIZE,
        });
    }

    /// The metadata image changed: takes this broker's grant if it answers the request, and
    /// answers the waiting requests it can.
    pub fn on_image(&mut self, image: &MetadataImage) -> Vec<(RequestId, InitResult)> {
        let Some(want) = &self.wanted else {
            return Vec::new();
        };
        let Some(block) = image
            .producer_blocks
            .get(&self.broker)
            .filter(|b| b.grant == *want)
        else {
            return Vec::new();
        };
        assert!(
            block.first >= 0 && block.first < block.end(),
            "empty block {block:?}"
        );
        self.spare = Some((block.first, block.end()));
        self.wanted = None;
        let mut out = Vec::new();
        while !self.waiting.is_empty() {
            let Some(pid) = self.take() else { break };
            let (id, _) = self.waiting.remove(0);
            out.push((id, Ok((pid, 0))));
        }
        out
    }

    /// Answers the requests that waited too long (the client retries).
    pub fn expire(&mut self, now_ms: Millis) -> Vec<(RequestId, InitResult)> {
        let (late, keep): (Vec<_>, Vec<_>) =
            self.waiting.drain(..).partition(|(_, at)| *at <= now_ms);
        self.waiting = keep;
        late.into_iter()
            .map(|(id, _)| (id, Err(ClientError::CoordinatorLoading)))
            .collect()
    }

    /// Whether a block is awaited (the node then checks the image after each input).
    pub fn is_waiting(&self) -> bool {
        self.wanted.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::{MetadataRecord, RecordKind};

    fn grant(image: &mut MetadataImage, want: &AllocateProducerIds) {
        image.apply(&MetadataRecord {
            kind: Some(RecordKind::AllocateProducerIds(want.clone())),
        });
        image.check_invariants();
    }

    #[test]
    fn test_ids_come_from_granted_blocks_and_never_repeat() {
        let mut image = MetadataImage::default();
        let mut a = ProducerIdAllocator::new(1, 77);
        let mut b = ProducerIdAllocator::new(2, 78);
        assert_eq!(
            a.init(10, None, image.next_producer_id, 0),
            None,
            "no block yet: waits"
        );
        assert_eq!(b.init(20, None, image.next_producer_id, 0), None);
        let (wa, wb) = (a.wanted().unwrap().clone(), b.wanted().unwrap().clone());
        grant(&mut image, &wb);
        grant(&mut image, &wa);
        assert_eq!(a.on_image(&image), vec![(10, Ok((1000, 0)))]);
        assert_eq!(b.on_image(&image), vec![(20, Ok((0, 0)))]);
        let mut seen = std::collections::BTreeSet::from([0, 1000]);
        for i in 0..2_500u64 {
            let image_now = image.clone();
            for (alloc, base) in [(&mut a, 100_000u64), (&mut b, 200_000u64)] {
                match alloc.init(base + i, None, image_now.next_producer_id, 0) {
                    Some(Ok((pid, 0))) => assert!(seen.insert(pid), "{pid} handed out twice"),
                    Some(other) => panic!("unexpected {other:?}"),
                    None => {
                        let want = alloc.wanted().unwrap().clone();
                        grant(&mut image, &want);
                        let answered = alloc.on_image(&image);
                        assert_eq!(answered.len(), 1);
                        assert!(seen.insert(answered[0].1.clone().unwrap().0));
                    }
                }
                // A grant that arrives while ids are left becomes the spare block.
                if let Some(want) = alloc.wanted().cloned() {
                    grant(&mut image, &want);
                    assert!(alloc.on_image(&image).is_empty());
                }
            }
        }
        assert_eq!(seen.len(), 5_002);
        assert!(seen.iter().all(|p| *p < image.next_producer_id));
    }

    #[test]
    fn test_a_restarted_broker_never_reuses_its_old_block() {
        let mut image = MetadataImage::default();
        let mut a = ProducerIdAllocator::new(1, 77);
        assert_eq!(a.init(1, None, image.next_producer_id, 0), None);
        grant(&mut image, &a.wanted().unwrap().clone());
        assert_eq!(a.on_image(&image), vec![(1, Ok((0, 0)))]);
        // Restart: a new incarnation ignores the block in the image and asks again.
        let mut a = ProducerIdAllocator::new(1, 78);
        assert_eq!(a.init(2, None, image.next_producer_id, 0), None);
        assert!(a.on_image(&image).is_empty(), "the old block is not taken");
        grant(&mut image, &a.wanted().unwrap().clone());
        assert_eq!(a.on_image(&image), vec![(2, Ok((1000, 0)))]);
    }

    #[test]
    fn test_reinit_bumps_the_epoch_and_unknown_ids_are_refused() {
        let mut image = MetadataImage::default();
        let mut a = ProducerIdAllocator::new(1, 77);
        a.init(1, None, image.next_producer_id, 0);
        grant(&mut image, &a.wanted().unwrap().clone());
        a.on_image(&image);
        assert_eq!(
            a.init(2, Some((0, 0)), image.next_producer_id, 0),
            Some(Ok((0, 1)))
        );
        assert_eq!(
            a.init(3, Some((0, 7)), image.next_producer_id, 0),
            Some(Ok((0, 8)))
        );
        assert_eq!(
            a.init(4, Some((5_000, 0)), image.next_producer_id, 0),
            Some(Err(ClientError::InvalidProducerIdMapping(5_000)))
        );
        // An exhausted epoch gets a new id.
        assert_eq!(
            a.init(5, Some((0, i16::MAX - 1)), image.next_producer_id, 0),
            Some(Ok((1, 0)))
        );
    }

    #[test]
    fn test_a_request_waits_at_most_the_wait_time() {
        let image = MetadataImage::default();
        let mut a = ProducerIdAllocator::new(1, 77);
        assert_eq!(a.init(1, None, image.next_producer_id, 100), None);
        assert!(a.expire(100 + PRODUCER_ID_WAIT_MS - 1).is_empty());
        assert_eq!(
            a.expire(100 + PRODUCER_ID_WAIT_MS),
            vec![(1, Err(ClientError::CoordinatorLoading))]
        );
        assert!(a.is_waiting(), "the block is still asked for");
    }
}
