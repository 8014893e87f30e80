//! Replays a topic from a point in time: finds, per partition, the first offset at or after the
//! timestamp (ListOffsets), seeks there, and prints everything up to the current end.
//!
//! ```text
//! cargo run -p railyard-client --example replay_from_timestamp -- 127.0.0.1:9092 events 600
//! ```
//! (the last argument is how many seconds back to start)

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use railyard_client::{Admin, ClientConfig, Consumer, ConsumerConfig, TopicPartition};

#[tokio::main]
async fn main() -> Result<(), railyard_client::Error> {
    let mut args = std::env::args().skip(1);
    let bootstrap = args.next().unwrap_or_else(|| "127.0.0.1:9092".into());
    let topic = args.next().unwrap_or_else(|| "events".into());
    let seconds_back: i64 = args.next().and_then(|n| n.parse().ok()).unwrap_or(600);
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let since_ms = now_ms - seconds_back * 1000;

    // Where to stop: the log end of each partition now.
    let admin = Admin::new(ClientConfig::new(&bootstrap)).await?;
    let ends = admin.end_offsets(&topic).await?;

    // No group: assign every partition and commit nothing.
    let mut config = ConsumerConfig::new(&bootstrap);
    config.enable_auto_commit = false;
    let mut consumer = Consumer::new(config).await?;
    let tps: Vec<TopicPartition> = ends.keys().cloned().collect();
    consumer.assign(&tps).await?;
    let times: BTreeMap<TopicPartition, i64> =
        tps.iter().map(|tp| (tp.clone(), since_ms)).collect();
    for (tp, found) in consumer.offsets_for_times(&times).await? {
        match found {
            Some((offset, _)) => consumer.seek(&tp, offset)?,
            // Nothing that recent in this partition: start at its end.
            None => consumer.seek(&tp, ends[&tp])?,
        }
    }
    // Poll until every partition's position has reached the end it had when we started.
    loop {
        for r in consumer.poll(Duration::from_secs(1)).await? {
            let value = String::from_utf8_lossy(r.value.as_deref().unwrap_or_default());
            println!(
                "{}/{} @{} ts={}: {value}",
                r.topic, r.partition, r.offset, r.timestamp_ms
            );
        }
        let mut done = true;
        for (tp, end) in &ends {
            done &= consumer.position(tp).await? >= *end;
        }
        if done {
            break;
        }
    }
    Ok(())
}
