"""Committed offsets across the loss of their group coordinator (kafka-python 3, defaults).

`commit GROUP TOPIC OFFSET`: commits OFFSET for partition 0 of TOPIC as GROUP (a simple
commit, no group membership). `fetch GROUP TOPIC OFFSET`: asks for the committed offset until
it reads OFFSET (the harness kill -9'd the coordinator just before), then prints
`FAILOVER_MS <ms>` measured from this process's start; exits non-zero after 60 s.
"""

import os
import sys
import time

START = time.time()

from kafka import KafkaConsumer, TopicPartition  # noqa: E402
from kafka.structs import OffsetAndMetadata  # noqa: E402

BOOTSTRAP = os.environ["BOOTSTRAP"]


def consumer(group):
    return KafkaConsumer(bootstrap_servers=BOOTSTRAP, group_id=group, enable_auto_commit=False)


def main():
    mode, group, topic, offset = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    tp = TopicPartition(topic, 0)
    if mode == "commit":
        c = consumer(group)
        c.commit({tp: OffsetAndMetadata(offset, "m", -1)})
        print(f"committed {offset}", flush=True)
        return
    last = None
    while time.time() - START < 60:
        try:
            c = consumer(group)
            last = c.committed(tp)
            c.close()
            if last == offset:
                print(f"FAILOVER_MS {(time.time() - START) * 1000:.0f}", flush=True)
                return
        except Exception as e:  # the coordinator is moving: ask again
            last = e
        time.sleep(0.05)
    print(f"FAILED: committed offset {last!r}, expected {offset}", flush=True)
    sys.exit(1)


if __name__ == "__main__":
    main()
