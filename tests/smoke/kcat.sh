#!/usr/bin/env bash
# kcat smoke test against `railyard dev`: list metadata, produce, consume from the beginning.
# Proves a stock librdkafka client works unchanged. Uses its own ports and data dir so it can
# run beside a developer's cluster. Exits non-zero on any mismatch.
set -euo pipefail
cd "$(dirname "$0")/../.."

BIN=${RAILYARD_BIN:-target/debug/railyard}
DATA=$(mktemp -d)
KPORT=${KCAT_SMOKE_PORT:-29092}
RPORT=$((KPORT + 1000))
# `railyard dev` writes its logs to railyard.log in its data directory; the terminal gets
# the banner and the event lines.
LOG="$DATA/data/railyard.log"
BOOT="127.0.0.1:$KPORT"

"$BIN" dev --data-dir "$DATA/data" --kafka-port "$KPORT" --raft-port "$RPORT" \
  --topic smoke:3:3 >"$DATA/stdout" 2>"$DATA/stderr" &
PID=$!
cleanup() {
  kill "$PID" 2>/dev/null || true
  wait "$PID" 2>/dev/null || true
  rm -rf "$DATA"
}
trap cleanup EXIT

# Wait until every partition has a leader (at most ~20 s).
for _ in $(seq 1 100); do
  if kcat -b "$BOOT" -L -t smoke -m 2 2>/dev/null | grep -q "partition 2, leader [1-3]" &&
     ! kcat -b "$BOOT" -L -t smoke -m 2 2>/dev/null | grep -q "leader -1"; then
    break
  fi
  sleep 0.2
done
echo "== kcat -L"
kcat -b "$BOOT" -L -t smoke -m 5

echo "== produce 100 keyed records (acks=all)"
seq 1 100 | awk '{print "key-" $1 ":value-" $1}' |
  kcat -b "$BOOT" -P -t smoke -K: -X acks=all -X message.timeout.ms=20000

echo "== consume from the beginning"
OUT=$(kcat -b "$BOOT" -C -t smoke -o beginning -e -q -f '%k=%s\n' -X fetch.wait.max.ms=100 -m 20 | sort)
COUNT=$(echo "$OUT" | grep -c '^key-' || true)
echo "read $COUNT records"
if [ "$COUNT" != 100 ]; then
  echo "expected 100 records, got $COUNT" >&2
  cat "$DATA/stdout" "$DATA/stderr" >&2
  tail -50 "$LOG" >&2
  exit 1
fi
for i in 1 50 100; do
  echo "$OUT" | grep -qx "key-$i=value-$i" || { echo "missing key-$i" >&2; exit 1; }
done
echo "kcat smoke test passed"
