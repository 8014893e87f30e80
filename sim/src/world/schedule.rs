//! The fault schedule: every `FAULT_TICK_US` of the safety phase it draws, at the seed's rates,
//! which faults start and where (the swarm, and the clock and reconfiguration scenarios, run it;
//! the other scripted scenarios do not). It also holds the run's random streams and draws the
//! nodes' wall-clock offsets.
//!
//! ## Fault model
//! - **Processes** (`process` stream): an up node stops, gracefully a quarter of the time
//!   (leaderships handed over, nothing lost) and otherwise by a crash, which dies mid-step with
//!   unsynced writes three quarters of the time (see `lifecycle.rs`); it restarts after the drawn
//!   downtime. An up node pauses for a while, its deliveries held. In the swarm, half of all
//!   mid-step crashes bring a correlated second crash 50-700 ms later, of a partition leader if
//!   one is up.
//! - **Network** (`net` stream): one partition at a time, of a kind the network draws, healed
//!   after the drawn duration; clogged links.
//! - **Disks** (`disk` stream): bit flips on the one faulty-disk node, in sealed segments only
//!   (at rest, so a restart's recovery meets them; half the time the node is crashed so that this
//!   happens soon); disk-full periods on any up node, with no headroom left.
//! - **Clocks** (`clock` stream): each node's wall clock starts skewed by up to `clock_skew_ms`
//!   either way and steps by `clock_step_ms` either way.
//!
//! Message latencies, drops, duplicates and reordering, torn writes and read errors are drawn by
//! `SimNetwork` and `SimDisk` themselves, from seeds drawn here. No new fault starts once the
//! liveness phase has begun.

use std::collections::BTreeSet;

use railyard_core::disk::{join_path, Disk};
use railyard_core::types::NodeId;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{Event, World};
use crate::faults::event_due;

/// How often the fault schedule is evaluated.
pub(super) const FAULT_TICK_US: u64 = 100_000;

/// Share of the swarm's process stops that are graceful (SIGTERM: leaderships handed over)
/// rather than crashes.
const GRACEFUL_STOP_P: f64 = 0.25;

/// One ChaCha stream per subsystem, all from the run's seed: a change in how often one
/// subsystem draws (a new fault, a different workload) does not shift another's draws.
pub(super) struct Rngs {
    /// Crashes, pauses, restarts, tick phases.
    pub(super) process: ChaCha8Rng,
    /// Partitions and clogs (the network's own latencies and drops use a seed drawn here).
    pub(super) net: ChaCha8Rng,
    /// The faulty-disk node, bit flips, disk-full periods, and the disks' own seeds.
    pub(super) disk: ChaCha8Rng,
    /// Client think times, latencies and key choices.
    pub(super) workload: ChaCha8Rng,
    /// Wall-clock skews and steps.
    pub(super) clock: ChaCha8Rng,
    /// When joiners start.
    pub(super) membership: ChaCha8Rng,
    /// The membership nemesis: which partitions move where, and when.
    pub(super) moves: ChaCha8Rng,
}

impl Rngs {
    pub(super) fn new(seed: u64) -> Rngs {
        let stream = |n: u64| {
            let mut r = ChaCha8Rng::seed_from_u64(seed);
            r.set_stream(n);
            r
        };
        Rngs {
            process: stream(1),
            net: stream(2),
            disk: stream(3),
            workload: stream(4),
            clock: stream(5),
            membership: stream(6),
            moves: stream(7),
        }
    }
}

impl World {
    /// Draws each node's starting wall-clock offset from true time: a skew of up to the seed's
    /// `clock_skew_ms` either way (none when it is 0).
    pub(super) fn draw_clock_offsets(&mut self) {
        let skew = self.opts.faults.clock_skew_ms;
        for id in self.node_ids.clone() {
            let offset = if skew > 0 {
                self.rngs.clock.gen_range(-skew..=skew)
            } else {
                0
            };
            self.wall_offset_ms.insert(id, offset);
        }
    }

    pub(super) fn fault_tick(&mut self) {
        let f = self.opts.faults.clone();
        let dt = FAULT_TICK_US;
        let up = self.up_nodes();
        if !up.is_empty() && event_due(&mut self.rngs.process, f.crash_per_s, dt) {
            let id = up[self.rngs.process.gen_range(0..up.len())];
            let down = f.crash_down_us.draw(&mut self.rngs.process);
            if self.rngs.process.gen_bool(GRACEFUL_STOP_P) {
                self.graceful_stop(id, down);
            } else {
                self.crash(id, down);
            }
        }
        if !up.is_empty() && event_due(&mut self.rngs.process, f.pause_per_s, dt) {
            let id = up[self.rngs.process.gen_range(0..up.len())];
            let until = self.now + f.pause_us.draw(&mut self.rngs.process);
            self.pause(id, until);
        }
        if !self.partition_active && event_due(&mut self.rngs.net, f.partition_per_s, dt) {
            let kind = self.net.random_partition();
            self.trace(10, 0, 0);
            let _ = kind;
            self.partition_active = true;
            self.stats.partitions += 1;
            let heal = self.now + f.partition_us.draw(&mut self.rngs.net);
            self.schedule(heal, Event::Heal);
        }
        if event_due(&mut self.rngs.net, f.clog_per_s, dt)
            && self.net.random_clog(self.now).is_some()
        {
            self.stats.clogs += 1;
        }
        if event_due(&mut self.rngs.disk, f.bit_flip_per_s, dt)
            && self.flip_sealed_segment(self.faulty_disk_node)
            && self.rngs.disk.gen_bool(0.5)
        {
            // A flip at rest is seen by the next cold start: often make that soon.
            let down = f.crash_down_us.draw(&mut self.rngs.disk);
            self.crash(self.faulty_disk_node, down);
        }
        if event_due(&mut self.rngs.clock, f.clock_step_per_s, dt) {
            let id = self.node_ids[self.rngs.clock.gen_range(0..self.node_ids.len())];
            let step = if self.rngs.clock.gen_bool(0.5) {
                f.clock_step_ms
            } else {
                -f.clock_step_ms
            };
            *self
                .wall_offset_ms
                .get_mut(&id)
                .expect("every node has a clock") += step;
            self.stats.clock_steps += 1;
            self.trace(13, id, step as u64);
        }
        if !up.is_empty() && event_due(&mut self.rngs.disk, f.disk_full_per_s, dt) {
            let id = up[self.rngs.disk.gen_range(0..up.len())];
            let duration = f.disk_full_us.draw(&mut self.rngs.disk);
            self.fill_disk(id, duration, 0);
        }
    }

    /// A second crash shortly after a mid-step one (see `Event::CorrelatedCrash`): a partition
    /// leader if one is up, else any up node.
    pub(super) fn correlated_crash(&mut self) {
        if self.in_liveness {
            return;
        }
        let up = self.up_nodes();
        let leaders: Vec<NodeId> = up
            .iter()
            .copied()
            .filter(|id| {
                let n = self.slots[id].node.as_ref().expect("up");
                n.replicas().any(|r| r.is_leader())
            })
            .collect();
        let pool = if leaders.is_empty() { up } else { leaders };
        if !pool.is_empty() {
            let id = pool[self.rngs.process.gen_range(0..pool.len())];
            let down = self.opts.faults.crash_down_us.draw(&mut self.rngs.process);
            self.crash_now(id, down);
        }
    }

    /// Flips one bit in a sealed (not the newest) segment of `id`'s disk. A flip in the newest
    /// segment's synced tail is indistinguishable from a torn write without a durable record of
    /// the synced position; see docs/architecture.md.
    pub(super) fn flip_sealed_segment(&mut self, id: NodeId) -> bool {
        let disk = self.slots[&id].disk.clone();
        let mut sealed: BTreeSet<String> = BTreeSet::new();
        for dir in disk.list_dirs("").unwrap_or_default() {
            let mut logs: Vec<String> = disk
                .list(&dir)
                .unwrap_or_default()
                .into_iter()
                .filter(|n| n.ends_with(".log"))
                .collect();
            logs.pop();
            sealed.extend(logs.into_iter().map(|n| join_path(&dir, &n)));
        }
        if sealed.is_empty() {
            return false;
        }
        let flipped = disk.flip_random_bit(|p| sealed.contains(p)).is_some();
        if flipped && self.slots[&id].node.is_none() {
            // The node is down: its next start reads the disk cold, so the flip must be visible
            // then. A crash of a stopped disk loses nothing (nothing is unsynced) and drops the
            // cached image.
            disk.crash();
        }
        if flipped {
            self.stats.bit_flips += 1;
            self.trace(11, id, 0);
        }
        flipped
    }

    /// The disk of `id` fills up for a while, leaving `headroom` bytes. With none, a write
    /// racing the node's next free-space check fails with ENOSPC (fail-stop). With some below
    /// half the reserve (a disk that filled gradually), the check usually comes first: a
    /// leader then refuses produces and a follower drops appends.
    pub(super) fn fill_disk(&mut self, id: NodeId, duration_us: u64, headroom: u64) {
        let disk = &self.slots[&id].disk;
        disk.set_capacity(Some(disk.used_bytes() + headroom));
        self.stats.disk_full_periods += 1;
        self.schedule(self.now + duration_us, Event::DiskFullEnd(id));
    }
}
