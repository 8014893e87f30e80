"""kafka-python 3 against a Railyard cluster, every client with its default settings plus only
what a scenario names. Run by tests/tests/python_interop.rs with BOOTSTRAP set; exits non-zero
(with the failing scenario named) on any mismatch.

Scenarios:
1. admin: create, list and delete topics;
2. the default producer (idempotent in kafka-python 3: InitProducerId first);
3. a group consumer commits, closes, reopens and resumes exactly after its last commit;
4. describe_groups and list_group_offsets (kafka-python 2's describe_consumer_groups and
   list_consumer_group_offsets), and list_groups.
"""

import os
import sys
import time
import uuid

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

BOOTSTRAP = os.environ["BOOTSTRAP"]
DEADLINE_S = 60


def check(cond, what):
    if not cond:
        print(f"FAILED: {what}", flush=True)
        sys.exit(1)
    print(f"ok: {what}", flush=True)


def eventually(f, what, timeout_s=DEADLINE_S):
    end = time.time() + timeout_s
    last = None
    while time.time() < end:
        try:
            last = f()
            if last:
                return last
        except Exception as e:  # the cluster may still be settling: retry until the deadline
            last = e
        time.sleep(0.2)
    check(False, f"{what} (last: {last!r})")


def admin_topics(admin):
    name = f"py-admin-{uuid.uuid4().hex[:8]}"
    admin.create_topics([NewTopic(name, num_partitions=3, replication_factor=3)])
    eventually(lambda: name in admin.list_topics(), "created topic is listed")
    admin.delete_topics([name])
    eventually(lambda: name not in admin.list_topics(), "deleted topic is gone")


def produce(topic, n, prefix):
    p = KafkaProducer(bootstrap_servers=BOOTSTRAP)
    futures = [p.send(topic, key=b"k%d" % i, value=b"%s-%d" % (prefix, i)) for i in range(n)]
    p.flush(timeout=30)
    metas = [f.get(timeout=30) for f in futures]
    p.close()
    return metas


def consume(group, topic, want, commit_after=None):
    """Reads `want` records as a group member; commits synchronously after `commit_after`."""
    c = KafkaConsumer(
        topic,
        bootstrap_servers=BOOTSTRAP,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    got = []
    end = time.time() + DEADLINE_S
    while len(got) < want and time.time() < end:
        for _, records in c.poll(timeout_ms=500).items():
            got.extend(records)
        if commit_after is not None and len(got) >= commit_after:
            break
    if commit_after is not None:
        got = got[:commit_after]
        offsets = {}
        for r in got:
            tp = TopicPartition(r.topic, r.partition)
            offsets[tp] = max(offsets.get(tp, 0), r.offset + 1)
        from kafka.structs import OffsetAndMetadata

        c.commit({tp: OffsetAndMetadata(o, None, -1) for tp, o in offsets.items()})
    c.close()
    return got


def main():
    admin = eventually(lambda: KafkaAdminClient(bootstrap_servers=BOOTSTRAP), "admin connects")
    admin_topics(admin)

    topic = f"py-group-{uuid.uuid4().hex[:8]}"
    admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=3)])
    eventually(lambda: topic in admin.list_topics(), "group topic exists")
    metas = eventually(lambda: produce(topic, 300, b"v"), "default producer sends 300 records")
    check(len(metas) == 300, "default (idempotent) producer: 300 acknowledged")
    check(len({(m.partition, m.offset) for m in metas}) == 300, "300 distinct offsets")

    group = f"py-{uuid.uuid4().hex[:8]}"
    first = consume(group, topic, 300, commit_after=120)
    check(len(first) == 120, "first session read and committed 120")
    committed = {}
    for r in first:
        committed[r.partition] = max(committed.get(r.partition, -1), r.offset + 1)
    rest = consume(group, topic, 300 - len(first))
    seen = {(r.partition, r.offset) for r in first} | {(r.partition, r.offset) for r in rest}
    check(len(rest) == 180, f"reopened consumer read the other 180 (got {len(rest)})")
    check(len(seen) == 300, "together every record exactly once")
    for r in rest:
        check_at = committed.get(r.partition, 0)
        if r.offset < check_at:
            check(False, f"resumed below the commit: partition {r.partition} offset {r.offset}")
    firsts = {}
    for r in rest:
        firsts[r.partition] = min(firsts.get(r.partition, 1 << 62), r.offset)
    for p, o in firsts.items():
        check(o == committed.get(p, 0), f"partition {p} resumed exactly at {committed.get(p, 0)}")

    # kafka-python 3 names them describe_groups / list_group_offsets / list_groups (2.x:
    # describe_consumer_groups / list_consumer_group_offsets / list_consumer_groups).
    described = admin.describe_groups([group])[group]
    check(described["error"] is None, f"describe_groups: {described}")
    check(described["group_state"] in ("Empty", "Stable"), f"group state {described}")
    offsets = admin.list_group_offsets({group: None})[group]
    got = {tp.partition: om.offset for tp, om in offsets.items()}
    check(got == committed, f"list_group_offsets {got} == {committed}")
    groups = [g["group_id"] for g in admin.list_groups()]
    check(group in groups, "list_groups names the group")
    print("kafka-python suite passed", flush=True)


if __name__ == "__main__":
    main()
