//! Swarm testing: which faults a simulation run injects, and how often.
//!
//! One seed drives a whole run, and that seed also chooses the fault mix (swarm testing, as in
//! TigerBeetle's VOPR): [`FaultConfig::draw`] turns every fault class on or off independently with
//! probability 1/2 and, when on, draws its rate. Runs with few faults switched on reach states that
//! a run with every fault at once never gets to (a node that is never partitioned but whose disk
//! tears every write), which is why the classes are independent rather than one "chaos level".
//!
//! ## Fault model (what the other simulator modules do with these numbers)
//! - Network ([`crate::net`]): every message gets a latency drawn from `net_latency_us`. When on,
//!   a message is dropped with `drop_p`, sent twice with `dup_p`, and delayed by an extra
//!   `reorder_delay_us` with `reorder_p` (so it overtakes nothing but is overtaken). Clogs slow one
//!   directed link massively for `clog_us`, at `clog_per_s`; partitions of the enabled
//!   `partition_kinds` start at `partition_per_s` and last `partition_us`.
//! - Disk ([`crate::disk`]): write, sync and read latencies; unsynced writes lost on crash, and with
//!   `torn_writes` a random prefix of them survives with the last one torn at a 512-byte sector;
//!   bit flips in the durable image at `bit_flip_per_s` (the simulator aims them at a minority of
//!   the replicas of any record); transient read errors with `read_error_p`; a full disk at
//!   `disk_full_per_s` for `disk_full_us`.
//! - Process: crashes (kill -9, then restart after `crash_down_us`) at `crash_per_s` and pauses
//!   (SIGSTOP) for `pause_us` at `pause_per_s`.
//!
//! Probabilities are per message or per disk operation; event rates are per simulated second.
//! Every number that goes into a probability is built as `k / 10^e` from small integers so that it
//! prints exactly (`0.03`, not `0.030000000000000002`) and no platform-dependent `ln`/`exp` is
//! involved anywhere: the same seed gives the same config on every machine.

use std::fmt;

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

/// One simulated second in the simulator's time unit (microseconds).
pub const SECOND_US: u64 = 1_000_000;

/// An inclusive range of simulated microseconds, e.g. a latency or a fault's duration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct RangeUs {
    pub min: u64,
    pub max: u64,
}

impl RangeUs {
    /// A range; panics if `min > max` because such a config is a bug in the caller, not a fault.
    pub fn new(min: u64, max: u64) -> Self {
        assert!(min <= max, "RangeUs min {min} > max {max}");
        Self { min, max }
    }

    /// A range that always yields `us`.
    pub fn fixed(us: u64) -> Self {
        Self::new(us, us)
    }

    /// Draws a value uniformly from the range.
    pub fn draw(&self, rng: &mut ChaCha8Rng) -> u64 {
        assert!(self.min <= self.max);
        let v = rng.gen_range(self.min..=self.max);
        assert!(self.min <= v && v <= self.max);
        v
    }
}

impl fmt::Display for RangeUs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.min == self.max {
            write!(f, "{}us", self.min)
        } else {
            write!(f, "{}..{}us", self.min, self.max)
        }
    }
}

/// Which partition shapes a run may draw (see [`crate::net::PartitionKind`] for each shape).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PartitionKinds {
    pub halves: bool,
    pub isolate_one: bool,
    pub majority_ring: bool,
    pub bridge: bool,
    pub one_way: bool,
}

impl PartitionKinds {
    /// Every shape enabled.
    pub fn all() -> Self {
        Self {
            halves: true,
            isolate_one: true,
            majority_ring: true,
            bridge: true,
            one_way: true,
        }
    }

    /// Whether no shape is enabled.
    pub fn is_empty(&self) -> bool {
        self.names().is_empty()
    }

    /// Short names of the enabled shapes, in a fixed order.
    pub fn names(&self) -> Vec<&'static str> {
        let all = [
            (self.halves, "halves"),
            (self.isolate_one, "isolate"),
            (self.majority_ring, "ring"),
            (self.bridge, "bridge"),
            (self.one_way, "oneway"),
        ];
        all.iter().filter(|(on, _)| *on).map(|(_, n)| *n).collect()
    }
}

/// The fault mix of one simulation run. A rate or probability of 0 means the class is off.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FaultConfig {
    /// One-way latency of every message. Always applies, even with faults disabled.
    pub net_latency_us: RangeUs,
    /// Probability that a message is dropped.
    pub drop_p: f64,
    /// Probability that a message is delivered twice (each copy with its own latency).
    pub dup_p: f64,
    /// Probability that a message gets an extra `reorder_delay_us`, so later ones overtake it.
    pub reorder_p: f64,
    /// The extra delay of a reordered message.
    pub reorder_delay_us: RangeUs,
    /// Clogs started per simulated second (one directed link held back for `clog_us`).
    pub clog_per_s: f64,
    /// How long a clog lasts.
    pub clog_us: RangeUs,
    /// Partitions started per simulated second.
    pub partition_per_s: f64,
    /// Shapes a partition may take. Non-empty exactly when `partition_per_s > 0`.
    pub partition_kinds: PartitionKinds,
    /// How long a partition lasts before the simulator heals it.
    pub partition_us: RangeUs,
    /// Latency of one `append`/`write_at`/`truncate`.
    pub disk_write_latency_us: RangeUs,
    /// Latency of one `sync` (and of `create`/`remove`/`rename`, which sync the directory).
    pub disk_sync_latency_us: RangeUs,
    /// Latency of one `read_at`.
    pub disk_read_latency_us: RangeUs,
    /// Whether a crash keeps a random prefix of the unsynced writes, the last one possibly torn
    /// at a sector boundary. Off: a crash loses every unsynced write, cleanly.
    pub torn_writes: bool,
    /// Single-bit flips in some replica's durable image per simulated second.
    pub bit_flip_per_s: f64,
    /// Probability that one `read_at` fails with a transient IO error.
    pub read_error_p: f64,
    /// Disk-full episodes started per simulated second.
    pub disk_full_per_s: f64,
    /// How long a disk-full episode lasts.
    pub disk_full_us: RangeUs,
    /// Node crashes per simulated second.
    pub crash_per_s: f64,
    /// How long a crashed node stays down before it restarts.
    pub crash_down_us: RangeUs,
    /// Node pauses (SIGSTOP) per simulated second.
    pub pause_per_s: f64,
    /// How long a pause lasts.
    pub pause_us: RangeUs,
    /// Largest skew of a node's wall clock from true time, either way, drawn per node at boot
    /// (0: clocks agree).
    pub clock_skew_ms: i64,
    /// Wall-clock steps (one node's clock jumps by `clock_step_ms`, either way) per second.
    pub clock_step_per_s: f64,
    /// How far a step jumps.
    pub clock_step_ms: i64,
}

/// One hour: the size of the swarm's wall-clock steps and its largest skew.
pub const CLOCK_STEP_MS: i64 = 3_600_000;

impl FaultConfig {
    /// The fault-free config: small realistic latencies, every fault class off.
    pub fn none() -> Self {
        Self {
            net_latency_us: RangeUs::new(100, 500),
            drop_p: 0.0,
            dup_p: 0.0,
            reorder_p: 0.0,
            reorder_delay_us: RangeUs::fixed(0),
            clog_per_s: 0.0,
            clog_us: RangeUs::fixed(0),
            partition_per_s: 0.0,
            partition_kinds: PartitionKinds::default(),
            partition_us: RangeUs::fixed(0),
            disk_write_latency_us: RangeUs::new(5, 20),
            disk_sync_latency_us: RangeUs::new(100, 500),
            disk_read_latency_us: RangeUs::new(5, 20),
            torn_writes: false,
            bit_flip_per_s: 0.0,
            read_error_p: 0.0,
            disk_full_per_s: 0.0,
            disk_full_us: RangeUs::fixed(0),
            crash_per_s: 0.0,
            crash_down_us: RangeUs::fixed(0),
            pause_per_s: 0.0,
            pause_us: RangeUs::fixed(0),
            clock_skew_ms: 0,
            clock_step_per_s: 0.0,
            clock_step_ms: CLOCK_STEP_MS,
        }
    }

    /// Draws a fault mix: each class independently on (p = 1/2) or off, with a drawn rate when on.
    ///
    /// The draws happen in a fixed order, one per field, whatever earlier draws decided, so that
    /// adding a fault class at the end does not change the mix of existing seeds.
    pub fn draw(rng: &mut ChaCha8Rng) -> Self {
        let net_latency_us = draw_latency(rng, (50, 1_000), (1_000, 50_000), (0, 500));
        let drop_p = draw_rate(rng, 1..=3, 3);
        let dup_p = draw_rate(rng, 1..=3, 3);
        let reorder_p = draw_rate(rng, 1..=2, 5);
        let reorder_delay_us = RangeUs::new(0, rng.gen_range(1_000..=100_000));
        let clog_per_s = draw_rate(rng, 0..=2, 3);
        let clog_us = RangeUs::new(10_000, rng.gen_range(100_000..=2_000_000));
        let partition_per_s = draw_rate(rng, 1..=2, 5);
        let partition_kinds = draw_kinds(rng);
        let partition_us = RangeUs::new(50_000, rng.gen_range(200_000..=5_000_000));
        let disk_write_latency_us = draw_latency(rng, (5, 50), (1_000, 20_000), (0, 100));
        let disk_sync_latency_us = draw_latency(rng, (50, 500), (5_000, 50_000), (0, 1_000));
        let disk_read_latency_us = draw_latency(rng, (5, 50), (500, 10_000), (0, 100));
        let torn_writes = rng.gen_bool(0.5);
        let bit_flip_per_s = draw_rate(rng, 1..=3, 5);
        let read_error_p = draw_rate(rng, 2..=4, 5);
        let disk_full_per_s = draw_rate(rng, 1..=2, 5);
        let disk_full_us = RangeUs::new(100_000, rng.gen_range(200_000..=3_000_000));
        let crash_per_s = draw_rate(rng, 1..=3, 5);
        let crash_down_us = RangeUs::new(10_000, rng.gen_range(50_000..=2_000_000));
        let pause_per_s = draw_rate(rng, 1..=3, 5);
        let pause_us = RangeUs::new(10_000, rng.gen_range(50_000..=1_000_000));
        let clock_skew_ms = if rng.gen_bool(0.5) {
            rng.gen_range(1..=CLOCK_STEP_MS)
        } else {
            0
        };
        let clock_step_per_s = draw_rate(rng, 1..=2, 5);
        let config = Self {
            net_latency_us,
            drop_p,
            dup_p,
            reorder_p,
            reorder_delay_us,
            clog_per_s,
            clog_us,
            partition_per_s,
            // Kinds are drawn unconditionally (fixed draw order) but only kept when partitions
            // are on, so that "kinds non-empty <=> partitions on" holds.
            partition_kinds: if partition_per_s > 0.0 {
                partition_kinds
            } else {
                PartitionKinds::default()
            },
            partition_us,
            disk_write_latency_us,
            disk_sync_latency_us,
            disk_read_latency_us,
            torn_writes,
            bit_flip_per_s,
            read_error_p,
            disk_full_per_s,
            disk_full_us,
            crash_per_s,
            crash_down_us,
            pause_per_s,
            pause_us,
            clock_skew_ms,
            clock_step_per_s,
            clock_step_ms: CLOCK_STEP_MS,
        };
        config.assert_valid();
        config
    }

    /// Panics if a probability is outside [0, 1], a rate is negative, or partitions are on with
    /// no shape to draw from.
    pub fn assert_valid(&self) {
        for (name, p) in [
            ("drop_p", self.drop_p),
            ("dup_p", self.dup_p),
            ("reorder_p", self.reorder_p),
            ("read_error_p", self.read_error_p),
        ] {
            assert!(
                (0.0..=1.0).contains(&p),
                "{name} = {p} is not a probability"
            );
        }
        for (name, r) in [
            ("clog_per_s", self.clog_per_s),
            ("partition_per_s", self.partition_per_s),
            ("bit_flip_per_s", self.bit_flip_per_s),
            ("disk_full_per_s", self.disk_full_per_s),
            ("crash_per_s", self.crash_per_s),
            ("pause_per_s", self.pause_per_s),
            ("clock_step_per_s", self.clock_step_per_s),
        ] {
            assert!(r >= 0.0 && r.is_finite(), "{name} = {r} is not a rate");
        }
        assert_eq!(
            self.partition_per_s > 0.0,
            !self.partition_kinds.is_empty(),
            "partitions on <=> some partition kind enabled"
        );
    }
}

/// Whether an event with `rate_per_s` happens within the next `dt_us` of simulated time.
///
/// The chance is `rate * dt` capped at 1, which is the Poisson probability to first order; the
/// simulator's steps are short compared to `1 / rate`, so the error does not matter and we avoid
/// `exp` (whose last bit may differ between platforms).
pub fn event_due(rng: &mut ChaCha8Rng, rate_per_s: f64, dt_us: u64) -> bool {
    assert!(rate_per_s >= 0.0 && rate_per_s.is_finite());
    if rate_per_s == 0.0 || dt_us == 0 {
        return false;
    }
    let p = (rate_per_s * dt_us as f64 / SECOND_US as f64).min(1.0);
    assert!((0.0..=1.0).contains(&p));
    rng.gen_bool(p)
}

impl fmt::Display for FaultConfig {
    /// One line, printed next to a failing seed, e.g.
    /// `lat=100..500us drop=0.05 dup=off reorder=off clog=off part=on(halves,ring)@0.1/s ...`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "lat={}", self.net_latency_us)?;
        write!(f, " drop={}", Prob(self.drop_p))?;
        write!(f, " dup={}", Prob(self.dup_p))?;
        write!(f, " reorder={}", Prob(self.reorder_p))?;
        if self.reorder_p > 0.0 {
            write!(f, "(+{})", self.reorder_delay_us)?;
        }
        write!(f, " clog={}", Rate(self.clog_per_s))?;
        if self.partition_per_s > 0.0 {
            let kinds = self.partition_kinds.names().join(",");
            write!(f, " part=on({kinds})@{}", Rate(self.partition_per_s))?;
        } else {
            write!(f, " part=off")?;
        }
        write!(
            f,
            " dw={} ds={} dr={}",
            self.disk_write_latency_us, self.disk_sync_latency_us, self.disk_read_latency_us
        )?;
        write!(f, " torn={}", if self.torn_writes { "on" } else { "off" })?;
        write!(f, " flip={}", Rate(self.bit_flip_per_s))?;
        write!(f, " rerr={}", Prob(self.read_error_p))?;
        write!(f, " full={}", Rate(self.disk_full_per_s))?;
        write!(f, " crash={}", Rate(self.crash_per_s))?;
        write!(f, " pause={}", Rate(self.pause_per_s))?;
        if self.clock_skew_ms > 0 {
            write!(f, " skew<={}ms", self.clock_skew_ms)?;
        } else {
            write!(f, " skew=off")?;
        }
        write!(f, " clockstep={}", Rate(self.clock_step_per_s))
    }
}

/// Prints a probability, or `off` for 0.
struct Prob(f64);

impl fmt::Display for Prob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == 0.0 {
            write!(f, "off")
        } else {
            write!(f, "{}", self.0)
        }
    }
}

/// Prints an event rate per simulated second, or `off` for 0.
struct Rate(f64);

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == 0.0 {
            write!(f, "off")
        } else {
            write!(f, "{}/s", self.0)
        }
    }
}

/// Swarm draw of one rate: off with probability 1/2, else `k / 10^e` with `e` from `exps` and
/// `k` in `1..=k_max`. Always consumes the same number of draws so the field order is stable.
fn draw_rate(rng: &mut ChaCha8Rng, exps: std::ops::RangeInclusive<i32>, k_max: u32) -> f64 {
    assert!(k_max >= 1 && *exps.start() >= 0 && exps.start() <= exps.end());
    let on = rng.gen_bool(0.5);
    let e = rng.gen_range(exps);
    let k = rng.gen_range(1..=k_max);
    if !on {
        return 0.0;
    }
    // Division of two exactly representable integers is correctly rounded, so the result is the
    // double nearest to the decimal k·10^-e and prints as that decimal.
    let v = f64::from(k) / 10f64.powi(e);
    assert!(v > 0.0 && v.is_finite());
    v
}

/// Draws a latency range: `min` from `min_range`; the spread above it is large (`slow`) with
/// probability 1/2, else small (`fast`). A slow, jittery medium is a fault class of its own.
fn draw_latency(
    rng: &mut ChaCha8Rng,
    min_range: (u64, u64),
    slow: (u64, u64),
    fast: (u64, u64),
) -> RangeUs {
    let min = rng.gen_range(min_range.0..=min_range.1);
    let is_slow = rng.gen_bool(0.5);
    let spread = if is_slow {
        rng.gen_range(slow.0..=slow.1)
    } else {
        rng.gen_range(fast.0..=fast.1)
    };
    RangeUs::new(min, min + spread)
}

/// Each partition shape on with probability 1/2; at least one, so "partitions on" is meaningful.
fn draw_kinds(rng: &mut ChaCha8Rng) -> PartitionKinds {
    let mut kinds = PartitionKinds {
        halves: rng.gen_bool(0.5),
        isolate_one: rng.gen_bool(0.5),
        majority_ring: rng.gen_bool(0.5),
        bridge: rng.gen_bool(0.5),
        one_way: rng.gen_bool(0.5),
    };
    let forced = rng.gen_range(0..5);
    if kinds.is_empty() {
        match forced {
            0 => kinds.halves = true,
            1 => kinds.isolate_one = true,
            2 => kinds.majority_ring = true,
            3 => kinds.bridge = true,
            _ => kinds.one_way = true,
        }
    }
    assert!(!kinds.is_empty());
    kinds
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn test_draw_is_deterministic_and_valid() {
        // Proves the same seed gives the same mix, and every drawn mix passes validation.
        for seed in 0..200 {
            let a = FaultConfig::draw(&mut ChaCha8Rng::seed_from_u64(seed));
            let b = FaultConfig::draw(&mut ChaCha8Rng::seed_from_u64(seed));
            assert_eq!(a, b);
            assert_eq!(a.to_string(), b.to_string());
            a.assert_valid();
        }
    }

    #[test]
    fn test_draw_swarm_classes_are_independent() {
        // Proves each class is sometimes on and sometimes off, and not all in lockstep.
        let configs: Vec<FaultConfig> = (0..400)
            .map(|s| FaultConfig::draw(&mut ChaCha8Rng::seed_from_u64(s)))
            .collect();
        let classes: [fn(&FaultConfig) -> bool; 12] = [
            |c| c.drop_p > 0.0,
            |c| c.dup_p > 0.0,
            |c| c.reorder_p > 0.0,
            |c| c.clog_per_s > 0.0,
            |c| c.partition_per_s > 0.0,
            |c| c.torn_writes,
            |c| c.bit_flip_per_s > 0.0,
            |c| c.read_error_p > 0.0,
            |c| c.disk_full_per_s > 0.0,
            |c| c.crash_per_s > 0.0,
            |c| c.pause_per_s > 0.0,
            |c| c.net_latency_us.max - c.net_latency_us.min > 500,
        ];
        for class in classes {
            let on = configs.iter().filter(|c| class(c)).count();
            assert!((120..=280).contains(&on), "class on in {on} of 400");
        }
        let drop_and_dup = configs
            .iter()
            .filter(|c| c.drop_p > 0.0 && c.dup_p > 0.0)
            .count();
        assert!((60..=140).contains(&drop_and_dup), "{drop_and_dup}");
    }

    #[test]
    fn test_none_is_fault_free_and_displays_compactly() {
        // Proves the fault-free config has every class off and prints on one line.
        let c = FaultConfig::none();
        c.assert_valid();
        let s = c.to_string();
        assert!(!s.contains('\n'));
        assert_eq!(
            s,
            "lat=100..500us drop=off dup=off reorder=off clog=off part=off dw=5..20us \
             ds=100..500us dr=5..20us torn=off flip=off rerr=off full=off crash=off pause=off \
             skew=off clockstep=off"
        );
    }

    #[test]
    fn test_display_prints_exact_decimals() {
        // Proves drawn rates print as short decimals, so a failing run's line is readable.
        let mut c = FaultConfig::none();
        c.drop_p = 3.0 / 100.0;
        c.partition_per_s = 1.0 / 10.0;
        c.partition_kinds.halves = true;
        c.partition_kinds.majority_ring = true;
        c.crash_per_s = 2.0 / 1000.0;
        let s = c.to_string();
        assert!(s.contains(" drop=0.03 "), "{s}");
        assert!(s.contains(" part=on(halves,ring)@0.1/s "), "{s}");
        assert!(s.contains(" crash=0.002/s "), "{s}");
        for seed in 0..50 {
            let s = FaultConfig::draw(&mut ChaCha8Rng::seed_from_u64(seed)).to_string();
            assert!(!s.contains("0000000"), "{s}");
        }
    }

    #[test]
    fn test_event_due_matches_rate() {
        // Proves an event at 2/s checked every 10 ms happens about 2 times per simulated second.
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let steps = 100_000u64;
        let hits = (0..steps)
            .filter(|_| event_due(&mut rng, 2.0, 10_000))
            .count();
        // Expected 2000 events in 1000 simulated seconds.
        assert!((1800..=2200).contains(&hits), "{hits}");
        assert!(!event_due(&mut rng, 0.0, 10_000));
        assert!(event_due(&mut rng, 1e9, 10_000));
    }
}
