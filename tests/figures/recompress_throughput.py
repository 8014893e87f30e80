"""Produce throughput to a topic with compression.type=producer against one with
compression.type=lz4 (the leader recompresses every batch), same producer settings
(uncompressed batches, acks=all, librdkafka defaults otherwise). Issue 12's figure.

    python recompress_throughput.py BOOTSTRAP [ROUNDS] [MESSAGES] [hex|random]

Values are 1000 bytes: hex text (compresses about 2x) or random bytes (incompressible).

Rounds alternate the two topics; prints MB/s per run and the median ratio lz4/producer.
"""
import os
import statistics
import sys
import time
import uuid

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

VALUE_BYTES = 1000


def produce(bootstrap, topic, n, kind):
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5,
                  "compression.type": "none"})
    value = os.urandom(VALUE_BYTES // 2).hex().encode() if kind == "hex" else os.urandom(VALUE_BYTES)
    start = time.monotonic()
    for i in range(n):
        while True:
            try:
                p.produce(topic, value)
                break
            except BufferError:
                p.poll(0.01)
    left = p.flush(60)
    took = time.monotonic() - start
    assert left == 0, f"{left} messages not delivered"
    return n * VALUE_BYTES / took / 1e6


def main():
    bootstrap = sys.argv[1]
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 100_000
    kind = sys.argv[4] if len(sys.argv) > 4 else "hex"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    tag = uuid.uuid4().hex[:8]
    topics = {"producer": f"rc-producer-{tag}", "lz4": f"rc-lz4-{tag}"}
    new = [NewTopic(t, 1, 3, config={"compression.type": c}) for c, t in topics.items()]
    for f in admin.create_topics(new).values():
        f.result(30)
    ratios = []
    for r in range(rounds):
        plain = produce(bootstrap, topics["producer"], n, kind)
        lz4 = produce(bootstrap, topics["lz4"], n, kind)
        ratios.append(lz4 / plain)
        print(f"round {r}: producer {plain:.1f} MB/s, lz4 recompression {lz4:.1f} MB/s, "
              f"ratio {lz4 / plain:.2f}", flush=True)
    print(f"median ratio lz4/producer: {statistics.median(ratios):.2f} over {rounds} rounds")


if __name__ == "__main__":
    main()
