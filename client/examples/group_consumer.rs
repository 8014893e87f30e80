//! Joins a consumer group, prints records and rebalances, and commits automatically.
//! Start two of these with the same group to see the partitions split between them.
//!
//! ```text
//! cargo run -p railyard-client --example group_consumer -- 127.0.0.1:9092 events my-group
//! ```

use std::time::Duration;

use railyard_client::{Consumer, ConsumerConfig, OffsetReset, RebalanceEvent};

#[tokio::main]
async fn main() -> Result<(), railyard_client::Error> {
    let mut args = std::env::args().skip(1);
    let bootstrap = args.next().unwrap_or_else(|| "127.0.0.1:9092".into());
    let topic = args.next().unwrap_or_else(|| "events".into());
    let group = args.next().unwrap_or_else(|| "example-group".into());

    let mut config = ConsumerConfig::new(&bootstrap).group(group);
    // A new group starts at the beginning instead of only new records.
    config.auto_offset_reset = OffsetReset::Earliest;
    let mut consumer = Consumer::new(config).await?;
    let mut events = consumer.rebalance_events().expect("taken once");
    consumer.subscribe(&[topic.as_str()]).await?;

    // Ctrl-C ends the loop; `close` commits and leaves the group.
    let stop = tokio::signal::ctrl_c();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            records = consumer.poll(Duration::from_secs(1)) => {
                for r in records? {
                    let value = String::from_utf8_lossy(r.value.as_deref().unwrap_or_default());
                    println!("{}/{} @{}: {value}", r.topic, r.partition, r.offset);
                }
            }
        }
        while let Ok(e) = events.try_recv() {
            match e {
                RebalanceEvent::Assigned(tps) => println!("assigned {tps:?}"),
                RebalanceEvent::Revoked(tps) => println!("revoked {tps:?}"),
            }
        }
    }
    consumer.close().await
}
