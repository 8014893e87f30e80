//! The client's randomness: where a call starts among the brokers, retry jitter and the
//! partitioner's sticky choice. None of it needs to be unpredictable, only spread out.
//!
//! One generator per thread, seeded from std's `RandomState`, not `rand::thread_rng`: std
//! takes its hash keys through the libc `getrandom` symbol, which madsim replaces with its
//! seeded RNG, so a seed replays a simulation exactly (`thread_rng` seeds through the raw
//! syscall, which madsim cannot see). Outside madsim the keys are random per process.

use std::cell::RefCell;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

thread_local! {
    static RNG: RefCell<StdRng> = RefCell::new(StdRng::seed_from_u64(seed()));
}

fn seed() -> u64 {
    RandomState::new().build_hasher().finish()
}

/// A uniform index in `0..n`; `n` must be positive.
pub(crate) fn below(n: usize) -> usize {
    assert!(n > 0, "no index below 0");
    RNG.with(|r| r.borrow_mut().gen_range(0..n))
}

/// A uniform value in `[0, 1)`.
pub(crate) fn unit() -> f64 {
    RNG.with(|r| r.borrow_mut().gen::<f64>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_stay_in_range_and_spread() {
        let mut seen = [0u32; 4];
        for _ in 0..400 {
            seen[below(4)] += 1;
            let u = unit();
            assert!((0.0..1.0).contains(&u), "{u}");
        }
        assert!(seen.iter().all(|&n| n > 50), "{seen:?}");
    }
}
