#!/usr/bin/env bash
# librdkafka's own integration test suite against real 3-node Railyard clusters.
#
#   bash tests/librdkafka/run.sh        # build (cached), start clusters, run, compare
#
# 1. Finds the librdkafka source that the rdkafka-sys version in Cargo.lock bundles (in the
#    cargo registry; `cargo fetch` if it is missing), copies it to
#    target/librdkafka-suite/src (never into the repo) and builds the library and the
#    suite's test-runner. The build is cached per rdkafka-sys version and configure options.
# 2. Starts three `railyard start --config` processes set up as the suite's "default"
#    scenario expects (its tests/scenarios/default.json: auto-create on, 4 partitions,
#    RF 3; trivup, the suite's cluster tool, also gives each broker a rack, RACK<id>).
#    `railyard dev` cannot set the auto-create partition count, so each node gets a
#    generated TOML file. The four tests of the "noautocreate" scenario then run on a
#    second, fresh cluster with auto-create off.
# 3. Runs every test that talks to a broker (tests/librdkafka/suite.py: one test-runner
#    process per test number, RDK_SUITE_PARALLEL at once, each under a timeout; the tests
#    that assert on latency run alone afterwards; nothing is retried), then compares the
#    results with tests/librdkafka/expected-failures.txt: any failure or skip not listed,
#    and any listed test whose outcome changed, fails the run.
#
# Artifacts: target/librdkafka-suite/run/summary.txt, and per scenario
# run/<scenario>/{logs,reports,nodes}: the suite's log and JSON report of each test number,
# the node configs and logs. The clusters are killed on exit, whatever the exit path.
#
# Environment:
#   RAILYARD_BIN         railyard binary (default target/release/railyard)
#   RDK_SUITE_PORT       first Kafka port (default 17092; raft ports +1000)
#   RDK_SUITE_PARALLEL   test numbers run at once (default 5)
#   RDK_SUITE_TIMEOUT    seconds allowed per test number before it is killed (default 300; suite.py's
#                        TIMEOUT_FLOOR_S gives 0113, whose own timers run ~600 s, 1200 s)
#   RDK_SUITE_QUICK      1: the suite's quick mode (-Q), which skips most sub-tests and
#                        does not match the expectations file; 0 (default): full mode
#   RDK_SUITE_TESTS      comma-separated test numbers to run instead of all (e.g. 0001,0081);
#                        the expectations are then checked for those tests only
#   RDK_SUITE_BUILD_ONLY 1: build the suite and stop
# The suite's own variables (SUBTESTS, TEST_DEBUG, TEST_LEVEL, ...) pass through.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
HERE="$ROOT/tests/librdkafka"
SUITE="$ROOT/target/librdkafka-suite"
START=$(date +%s)

# --- 1. the librdkafka source and its build -------------------------------------------------

VERSION=$(awk '/^name = "rdkafka-sys"$/ { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)
if [ -z "$VERSION" ]; then
  echo "rdkafka-sys is not in Cargo.lock" >&2
  exit 1
fi
CARGO_HOME=${CARGO_HOME:-$HOME/.cargo}
find_registry_src() {
  ls -d "$CARGO_HOME"/registry/src/*/"rdkafka-sys-$VERSION"/librdkafka 2>/dev/null | head -1 || true
}
REG_SRC=$(find_registry_src)
if [ -z "$REG_SRC" ]; then
  echo "== rdkafka-sys $VERSION is not in the cargo registry: cargo fetch"
  cargo fetch --locked
  REG_SRC=$(find_registry_src)
  [ -n "$REG_SRC" ] || { echo "cargo fetch did not bring rdkafka-sys-$VERSION" >&2; exit 1; }
fi

# Railyard has no SSL or SASL listener, so the suite is built without OpenSSL, Cyrus SASL,
# libcurl (OIDC) and zstd: the same build everywhere, whatever -dev packages the machine
# has (zlib is used when present; lz4 is librdkafka's bundled copy).
CONFIGURE_OPTS="--disable-ssl --disable-gssapi --disable-curl --disable-zstd --disable-lz4-ext"
# The C++ tests check statistics, headers and transactions with RapidJSON (header-only);
# without it 0053, 0098, 0101 and 0110 skip themselves, so it is required.
if ! echo '#include <rapidjson/schema.h>' | ${CXX:-g++} -E -x c++ - >/dev/null 2>&1; then
  echo "librdkafka's C++ tests need RapidJSON >= 1.1.0: apt-get install rapidjson-dev" >&2
  exit 1
fi
STAMP_WANT="rdkafka-sys $VERSION; configure $CONFIGURE_OPTS; rapidjson"
SRC="$SUITE/src"
if [ -x "$SRC/tests/test-runner" ] && [ "$(cat "$SUITE/build.stamp" 2>/dev/null)" = "$STAMP_WANT" ]; then
  echo "== librdkafka suite: cached build of rdkafka-sys $VERSION in $SRC"
else
  echo "== librdkafka suite: building rdkafka-sys $VERSION's librdkafka and its tests ($REG_SRC)"
  B0=$(date +%s)
  rm -rf "$SRC" "$SUITE/build.stamp"
  mkdir -p "$SUITE"
  cp -a "$REG_SRC" "$SRC"
  chmod -R u+w "$SRC"
  (
    cd "$SRC"
    ./configure $CONFIGURE_OPTS >"$SUITE/build.log" 2>&1
    grep -q '^#define WITH_RAPIDJSON 1' config.h || { echo "configure did not find RapidJSON" >&2; exit 1; }
    make -j2 libs >>"$SUITE/build.log" 2>&1
    make -j2 -C tests build >>"$SUITE/build.log" 2>&1
  ) || { echo "build failed, see $SUITE/build.log:" >&2; tail -40 "$SUITE/build.log" >&2; exit 1; }
  echo "$STAMP_WANT" >"$SUITE/build.stamp"
  echo "   built in $(( $(date +%s) - B0 )) s (log: $SUITE/build.log)"
fi
if [ "${RDK_SUITE_BUILD_ONLY:-0}" = 1 ]; then
  exit 0
fi

# --- 2. 3-node clusters, one per scenario ----------------------------------------------------

BIN=${RAILYARD_BIN:-target/release/railyard}
[ -x "$BIN" ] || { echo "no railyard binary at $BIN (set RAILYARD_BIN)" >&2; exit 1; }
BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")
# Below the test kit's random ports (20000-32000, tests/src/ports.rs) and Linux's ephemeral
# range (32768-60999), so neither a concurrent `cargo test` nor an outgoing connection can
# hold them when a cluster (re)starts; away from `railyard dev`'s 9092/19092/9644.
KPORT=${RDK_SUITE_PORT:-17092}
RPORT=$((KPORT + 1000))
RUN="$SUITE/run"
rm -rf "$RUN"
mkdir -p "$RUN"
DATA=$(mktemp -d "${TMPDIR:-/tmp}/railyard-rdk-suite.XXXXXX")
PIDS=()
CHILD=""
# await_cmd CMD...: runs CMD in the background and waits for it, so that a signal to this script
# is handled at once (bash defers traps until a foreground command returns).
await_cmd() {
  local rc=0
  "$@" &
  CHILD=$!
  wait "$CHILD" || rc=$?
  CHILD=""
  return $rc
}
on_signal() {
  if [ -n "$CHILD" ]; then
    kill -TERM "$CHILD" 2>/dev/null || true
    wait "$CHILD" 2>/dev/null || true
  fi
  exit "$1"
}
stop_cluster() {
  local pid
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  PIDS=()
}
cleanup() {
  stop_cluster
  rm -rf "$DATA"
}
trap cleanup EXIT
trap 'on_signal 130' INT
trap 'on_signal 143' TERM

BOOT=""
for id in 1 2 3; do
  BOOT="$BOOT${BOOT:+,}127.0.0.1:$((KPORT + id - 1))"
done

# start_cluster SCENARIO AUTO_CREATE: a fresh cluster with its own data and log directories.
start_cluster() {
  local scenario=$1 auto=$2 id peer conf pid nodes="$RUN/$1/nodes"
  mkdir -p "$nodes"
  python3 "$HERE/suite.py" ports-free --ports "$KPORT,$((KPORT + 1)),$((KPORT + 2)),$RPORT,$((RPORT + 1)),$((RPORT + 2))" || exit 1
  for id in 1 2 3; do
    conf="$nodes/node-$id.toml"
    {
      echo "id = $id"
      echo "data_dir = \"$DATA/$scenario/node-$id\""
      echo "kafka_listen = \"127.0.0.1:$((KPORT + id - 1))\""
      echo "raft_listen = \"127.0.0.1:$((RPORT + id - 1))\""
      # tests/scenarios/<scenario>.json of the suite: Kafka's auto.create.topics.enable,
      # num.partitions and default.replication.factor.
      echo "auto_create_topics = $auto"
      echo "default_partitions = 4"
      echo "default_replication_factor = 3"
      # As under `railyard dev`: each __consumer_offsets partition is a raft group on every
      # node, and CI machines are small.
      echo "offsets_topic_num_partitions = 10"
      for peer in 1 2 3; do
        echo "[[peers]]"
        echo "id = $peer"
        echo "raft_addr = \"127.0.0.1:$((RPORT + peer - 1))\""
        echo "kafka_addr = \"127.0.0.1:$((KPORT + peer - 1))\""
        # trivup gives each broker of the suite's clusters a rack (fetch-from-follower).
        echo "rack = \"RACK$peer\""
      done
    } >"$conf"
    "$BIN" start --config "$conf" >"$nodes/node-$id.stdout" 2>"$nodes/node-$id.log" &
    PIDS+=($!)
  done
  echo "== railyard cluster for scenario $scenario: $BOOT, auto-create $auto (node logs in $nodes)"
  # Ready when every node lists all three brokers and __consumer_offsets has its leaders.
  await_cmd python3 "$HERE/suite.py" wait-ready --bootstrap "$BOOT" --timeout 60 || {
    echo "the cluster did not come up; node logs:" >&2
    tail -20 "$nodes"/node-*.log >&2
    exit 1
  }
  for pid in "${PIDS[@]}"; do
    kill -0 "$pid" 2>/dev/null || { echo "a railyard node exited; see $nodes" >&2; exit 1; }
  done
  # The suite's tests are written against a Kafka that never moves a replica on its own, and
  # several count rebalances. Railyard's balancer does move them: five tests at once create
  # RF=1 topics, their replicas land unevenly and are moved seconds later, and librdkafka's
  # consumers rejoin their group when a subscribed partition's replica racks change (its
  # KIP-881 rack-aware metadata check), which 0091_max_poll_interval_timeout counts as an
  # extra rebalance. Balancing has its own tests (node/tests/elastic.rs, the simulator).
  await_cmd "$BIN" cluster config set partition.autobalancing.enable=false -b "$BOOT" || {
    echo "could not turn automatic balancing off" >&2
    exit 1
  }
}

# --- 3. the suite ------------------------------------------------------------------------------

{
  echo "# Written by tests/librdkafka/run.sh"
  echo "bootstrap.servers=$BOOT"
} >"$RUN/test.conf"

# TEST_KAFKA_VERSION: Railyard's API table (node/src/kafka/handlers/mod.rs) has Kafka 4.0's
# version floors (KIP-896: Produce v3+, Fetch v4+, ListOffsets v1+, OffsetCommit v2+, ...;
# message formats v0 and v1 gone) and 4.0-era ceilings (Produce v12, OffsetCommit v9,
# ListGroups v5). Telling the suite 3.x would make it try what 4.0 removed
# (0092_mixed_msgver's MsgVersion 1); 4.0.0 is the version whose APIs Railyard claims.
# The consumer-group protocol stays classic: TEST_CONSUMER_GROUP_PROTOCOL is left unset
# (KIP-848's protocol is not implemented).
export TEST_KAFKA_VERSION=${TEST_KAFKA_VERSION:-4.0.0}

# The default scenario, then the tests of the noautocreate scenario (the same cluster with
# auto-create off), each on a fresh cluster.
for sc in "default true" "noautocreate false"; do
  set -- $sc
  start_cluster "$1" "$2"
  await_cmd python3 "$HERE/suite.py" run \
    --src "$SRC" \
    --conf "$RUN/test.conf" \
    --out "$RUN" \
    --scenario "$1" \
    --parallel "${RDK_SUITE_PARALLEL:-5}" \
    --timeout "${RDK_SUITE_TIMEOUT:-300}" \
    --quick "${RDK_SUITE_QUICK:-0}" \
    --tests "${RDK_SUITE_TESTS:-}" \
    --expected "$HERE/expected-failures.txt" \
    --durations "$SUITE/durations-$([ "${RDK_SUITE_QUICK:-0}" = 1 ] && echo quick || echo full).json"
  stop_cluster
done

set +e
python3 "$HERE/suite.py" check --out "$RUN" --expected "$HERE/expected-failures.txt" \
  --tests "${RDK_SUITE_TESTS:-}"
RC=$?
set -e
echo "== librdkafka suite: $(( $(date +%s) - START )) s in all; artifacts in $RUN"
exit $RC
