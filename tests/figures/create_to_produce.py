"""Time from CreateTopics to the first successful produce to every partition (issue 12's
leaderless-window figure). Uses confluent-kafka (librdkafka) with default settings.

    python create_to_produce.py BOOTSTRAP [ROUNDS]

Prints one line per round and the median, in milliseconds.
"""
import statistics
import sys
import time
import uuid

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

PARTITIONS = 4


def one_round(bootstrap):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    producer = Producer({"bootstrap.servers": bootstrap})
    name = f"ctp-{uuid.uuid4().hex[:12]}"
    start = time.monotonic()
    admin.create_topics([NewTopic(name, PARTITIONS, 3)])[name].result(timeout=60)
    created = time.monotonic()
    delivered = set()

    def on_delivery(err, msg):
        if err is None:
            delivered.add(msg.partition())

    for p in range(PARTITIONS):
        producer.produce(name, b"v", partition=p, on_delivery=on_delivery)
    deadline = start + 60
    while len(delivered) < PARTITIONS and time.monotonic() < deadline:
        producer.poll(0.005)
    if len(delivered) < PARTITIONS:
        raise SystemExit(f"{name}: only partitions {sorted(delivered)} got a produce in 60 s")
    done = time.monotonic()
    producer.flush(10)
    return (created - start) * 1e3, (done - start) * 1e3


def main():
    bootstrap = sys.argv[1]
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 10
    totals = []
    for i in range(rounds):
        create_ms, total_ms = one_round(bootstrap)
        totals.append(total_ms)
        print(f"round {i}: CreateTopics answered after {create_ms:.0f} ms, "
              f"every partition produced after {total_ms:.0f} ms", flush=True)
    print(f"median create-to-produce: {statistics.median(totals):.0f} ms over {rounds} rounds")


if __name__ == "__main__":
    main()
