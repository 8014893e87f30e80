//! Produces keyed records with headers to a topic and prints where each landed.
//!
//! ```text
//! cargo run -p railyard-client --example producer -- 127.0.0.1:9092 events 10
//! ```

use railyard_client::{Compression, Producer, ProducerConfig, ProducerRecord};

#[tokio::main]
async fn main() -> Result<(), railyard_client::Error> {
    let mut args = std::env::args().skip(1);
    let bootstrap = args.next().unwrap_or_else(|| "127.0.0.1:9092".into());
    let topic = args.next().unwrap_or_else(|| "events".into());
    let count: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(10);

    // Defaults: acks=all, idempotence on, 5 ms linger. Compression is per producer.
    let mut config = ProducerConfig::new(&bootstrap);
    config.compression = Compression::Lz4;
    let producer = Producer::new(config).await?;

    // `send` queues the record (waiting only if the memory bound is full) and returns a
    // future of its acknowledgement; queue them all, then await.
    let mut deliveries = Vec::new();
    for i in 0..count {
        let record = ProducerRecord::new(&topic, format!("hello {i}"))
            .key(format!("user-{}", i % 3))
            .header("source", "example");
        deliveries.push(producer.send(record).await?);
    }
    for d in deliveries {
        let md = d.await?;
        println!("partition {} offset {}", md.partition, md.offset);
    }
    // Delivers anything still queued, then stops the sender task.
    producer.close().await;
    Ok(())
}
