//! Free loopback ports for nodes that bind their own listeners.
//!
//! A node's config names its ports before the node starts, so a test must pick ports that are
//! free and stay free until the node binds them. Port 0 cannot serve (the config needs the
//! number), and a port the kernel handed out and took back may be handed to the next outgoing
//! connection; so ports come from a range below Linux's ephemeral range.

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU32, Ordering};

/// First and one-past-last port [`free_addr`] hands out: below Linux's ephemeral range
/// (32768-60999), so the kernel never gives these ports to outgoing connections or to port-0
/// binds between our check and the node's bind (the race a released ephemeral port has).
pub const PORTS: std::ops::Range<u32> = 20_000..32_000;

/// A loopback address whose port was free a moment ago. Ports come from a per-process counter
/// (no two calls in a process share one) starting at a pid-derived offset (test binaries running
/// side by side start far apart), below the ephemeral range (see [`PORTS`]).
pub fn free_addr() -> SocketAddr {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let span = PORTS.end - PORTS.start;
    let offset = (std::process::id() % 97) * (span / 97);
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = PORTS.start + (offset + n) % span;
        if let Ok(l) = TcpListener::bind(("127.0.0.1", port as u16)) {
            return l.local_addr().expect("bound listener has an address");
        }
    }
    panic!("no free loopback port in {PORTS:?}");
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves two calls never hand out the same port and both lie in the range.
    #[test]
    fn test_free_addr_is_distinct_and_in_range() {
        let (a, b) = (free_addr(), free_addr());
        assert_ne!(a.port(), b.port());
        for p in [a.port(), b.port()] {
            assert!(PORTS.contains(&u32::from(p)), "{p}");
        }
    }
}
