//! The `railyard` binary. A skeleton until issue 3 brings the file disk, TCP transport and the
//! Kafka listener; today it only says so, so nobody mistakes it for a broker.

fn main() {
    eprintln!(
        "railyard {}: the broker is not built yet; run a simulation campaign with \
         `cargo run -p railyard-sim --release -- --seeds 1000`",
        env!("CARGO_PKG_VERSION")
    );
    std::process::exit(2);
}
