"""confluent-kafka (librdkafka) idempotent producer across a leader kill.

`produce TOPIC N`: sends values 0..N-1 to partition 0 of TOPIC with enable.idempotence=true
(every other setting default) at a steady pace, so that the harness (tests/tests/
python_interop.rs) can kill -9 the partition's leader and restart it meanwhile; exits non-zero
if any delivery failed. `verify TOPIC N`: reads partition 0 from the beginning and checks that
it holds exactly 0..N-1, in order: no duplicate and no gap.
"""

import os
import sys
import time

from confluent_kafka import Consumer, Producer, TopicPartition

BOOTSTRAP = os.environ["BOOTSTRAP"]


def produce(topic, n):
    p = Producer({"bootstrap.servers": BOOTSTRAP, "enable.idempotence": True})
    errors = []

    def delivered(err, msg):
        if err is not None:
            errors.append(err)

    for i in range(n):
        while True:
            try:
                p.produce(topic, value=str(i).encode(), partition=0, on_delivery=delivered)
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
        time.sleep(0.002)
    left = p.flush(60)
    if errors or left:
        print(f"FAILED: {len(errors)} delivery errors ({errors[:3]}), {left} undelivered")
        sys.exit(1)
    print(f"produced {n} with idempotence", flush=True)


def verify(topic, n):
    c = Consumer(
        {
            "bootstrap.servers": BOOTSTRAP,
            "group.id": "verify-unused",
            "enable.auto.commit": False,
        }
    )
    c.assign([TopicPartition(topic, 0, 0)])
    values = []
    end = time.time() + 60
    while len(values) < n + 10 and time.time() < end:
        m = c.poll(0.5)
        if m is None:
            if len(values) >= n:
                break
            continue
        if m.error():
            continue
        values.append(int(m.value()))
    c.close()
    dups = len(values) - len(set(values))
    missing = sorted(set(range(n)) - set(values))
    if values != list(range(n)):
        print(f"FAILED: {len(values)} values, {dups} duplicates, missing {missing[:10]}")
        sys.exit(1)
    print(f"partition 0 holds exactly 0..{n - 1}: no duplicate, no gap", flush=True)


if __name__ == "__main__":
    mode, topic, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    {"produce": produce, "verify": verify}[mode](topic, n)
