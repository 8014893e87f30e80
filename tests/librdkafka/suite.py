#!/usr/bin/env python3
"""Runs librdkafka's test suite against a Railyard cluster and checks the expectations.

Driven by tests/librdkafka/run.sh, which builds the suite and starts the cluster:

  suite.py wait-ready --bootstrap H:P,... --timeout S
      Waits until every broker answers Metadata listing all of them and __consumer_offsets
      has a leader for every partition.
  suite.py run --src DIR --conf FILE --out DIR --scenario NAME ...
      Runs the broker tests of one scenario (one test-runner process per test number, N at
      once, each under a timeout) and writes OUT/results-<scenario>.json.
  suite.py check --out DIR --expected FILE [--tests 0001,...]
      Merges every results-*.json in OUT, prints the summary table (also OUT/summary.txt)
      and compares it with the expectations file. Exit 1 on any failure or skip that is not
      listed, and on any listed test whose outcome changed (a fixed test must leave the list).

The test list comes from the tests[] table in tests/test.c: a test talks to a broker unless
it is flagged TEST_F_LOCAL (mock cluster or no cluster at all) or TEST_F_MANUAL. The
suite's runner is given -L, so the local tests of a test number that also has broker tests
are skipped.
"""

import argparse
import concurrent.futures
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import time

ANSI = re.compile(r"\x1b\[[0-9;]*m")
STATES = ("PASSED", "FAILED", "SKIPPED")


# ---------------------------------------------------------------------------------------------
# Minimal Kafka Metadata v1 client, for the readiness check.


def _kstr(s):
    b = s.encode()
    return struct.pack(">h", len(b)) + b


class _Reader:
    def __init__(self, buf):
        self.buf, self.pos = buf, 0

    def take(self, fmt):
        v = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += struct.calcsize(fmt)
        return v[0]

    def string(self):
        n = self.take(">h")
        if n < 0:
            return None
        s = self.buf[self.pos:self.pos + n].decode()
        self.pos += n
        return s


def metadata(addr, timeout=3.0):
    """Metadata v1 for all topics: ({node_id: (host, port)}, {topic: [leader, ...]})."""
    host, port = addr.rsplit(":", 1)
    body = struct.pack(">hhi", 3, 1, 1) + _kstr("rdk-suite") + struct.pack(">i", -1)
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        s.settimeout(timeout)
        s.sendall(struct.pack(">i", len(body)) + body)
        head = b""
        while len(head) < 4:
            chunk = s.recv(4 - len(head))
            if not chunk:
                raise ConnectionError("closed")
            head += chunk
        n = struct.unpack(">i", head)[0]
        buf = b""
        while len(buf) < n:
            chunk = s.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("closed")
            buf += chunk
    r = _Reader(buf)
    r.take(">i")  # correlation id
    brokers = {}
    for _ in range(r.take(">i")):
        node = r.take(">i")
        h = r.string()
        p = r.take(">i")
        r.string()  # rack
        brokers[node] = (h, p)
    r.take(">i")  # controller
    topics = {}
    for _ in range(r.take(">i")):
        r.take(">h")
        name = r.string()
        r.take(">b")
        leaders = []
        for _ in range(r.take(">i")):
            r.take(">h")
            r.take(">i")
            leaders.append(r.take(">i"))
            for _ in range(r.take(">i")):
                r.take(">i")
            for _ in range(r.take(">i")):
                r.take(">i")
        topics[name] = leaders
    return brokers, topics


def wait_ready(args):
    addrs = args.bootstrap.split(",")
    deadline = time.time() + args.timeout
    last = "no answer yet"
    while time.time() < deadline:
        try:
            ok = True
            for a in addrs:
                brokers, topics = metadata(a)
                offsets = topics.get("__consumer_offsets", [])
                if len(brokers) != len(addrs):
                    ok, last = False, f"{a} lists {len(brokers)} brokers"
                elif not offsets or min(offsets) < 0:
                    ok, last = False, f"{a}: __consumer_offsets leaders {offsets}"
                if not ok:
                    break
            if ok:
                print(f"   cluster ready: {len(addrs)} brokers, __consumer_offsets led")
                return 0
        except (OSError, struct.error, UnicodeDecodeError) as e:
            last = f"{e}"
        time.sleep(0.5)
    print(f"cluster not ready after {args.timeout} s: {last}", file=sys.stderr)
    return 1


def ports_free(args):
    busy = []
    for port in (int(p) for p in args.ports.split(",")):
        with socket.socket() as s:
            # As tokio's listener does: connections of a previous cluster in TIME_WAIT
            # do not keep the port.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                busy.append(port)
    if busy:
        print(f"ports {busy} are in use (another cluster? set RDK_SUITE_PORT)", file=sys.stderr)
        return 1
    return 0


# ---------------------------------------------------------------------------------------------
# The suite's test table.


def suite_tests(src):
    """[(name, flags, scenario)] from the tests[] table of tests/test.c, honouring
    `#if WITH_SOCKEM` as the build configured it."""
    with open(os.path.join(src, "tests", "test.c")) as f:
        text = f.read()
    start = text.index("struct test tests[] = {")
    end = text.index("{NULL}};", start)
    block = text[start:end]
    sockem = False
    for cfg in ("config.h", "Makefile.config"):
        p = os.path.join(src, cfg)
        if os.path.exists(p):
            with open(p) as f:
                if re.search(r"WITH_SOCKEM\s*(=|\s)\s*1", f.read()):
                    sockem = True
    out, skipping = [], False
    # Walk line by line for the preprocessor, then split entries on `_TEST(`.
    kept = []
    for line in block.splitlines():
        s = line.strip()
        if s.startswith("#if"):
            skipping = "WITH_SOCKEM" in s and not sockem
            continue
        if s.startswith("#endif"):
            skipping = False
            continue
        if not skipping:
            kept.append(line)
    block = "\n".join(kept)
    for entry in block.split("_TEST(")[1:]:
        m = re.match(r"\s*(\w+)\s*,\s*([^,)]+)", entry)
        if not m:
            continue
        name, flags = m.group(1), m.group(2).strip()
        sc = re.search(r'\.scenario\s*=\s*"([^"]*)"', entry.split("_TEST(")[0])
        out.append((name, flags, sc.group(1) if sc else "default"))
    return out


def broker_tests(src, scenario):
    """Tests that talk to a broker and run in this scenario: not TEST_F_LOCAL, not
    TEST_F_MANUAL, and not named *_mock (0139_offset_validation_mock and 0150_telemetry_mock
    lack the TEST_F_LOCAL flag but only ever talk to librdkafka's mock cluster)."""
    return [
        (name, flags)
        for name, flags, sc in suite_tests(src)
        if "TEST_F_LOCAL" not in flags
        and "TEST_F_MANUAL" not in flags
        and not name.endswith("_mock")
        and scenario in sc
    ]


# Seconds each slow test number took in full mode on a 2-core machine, to start the slow ones
# first when no durations file from an earlier run exists (a clean CI checkout). Only the
# schedule depends on it.
SLOW_HINTS = {
    "0113": 620, "0089": 108, "0061": 108, "0137": 83, "0091": 69, "0033": 68, "0026": 68,
    "0076": 65, "0094": 58, "0102": 53, "0030": 51, "0055": 50, "0122": 44, "0045": 41,
    "0018": 37, "0050": 37, "0093": 31, "0088": 27, "0049": 24, "0114": 20,
}


# Test numbers whose own fixed waits outlast RDK_SUITE_TIMEOUT against any broker: seconds
# each may run instead. 0113_cooperative_rebalance's 36 sub-tests wait on timers, not on the
# broker: each of the six u_multiple_subscription_changes variations plays a 15 s script and
# then polls at least 20 s more for the group to settle (47 s each), and each of the three
# t_max_poll_interval_exceeded variations waits out a max.poll.interval.ms (18-23 s). It runs
# about 600 s in all on a 2-core machine.
TIMEOUT_FLOOR_S = {"0113": 1200}


def timeout_for(num, a):
    """Seconds test number `num` may run before it is killed."""
    return max(a.timeout, TIMEOUT_FLOOR_S.get(num, 0))


# ---------------------------------------------------------------------------------------------
# Running.


def parse_summary(log_text):
    """{test name: (state, reason)} from the summary tables the runner prints (the last wins)."""
    res = {}
    for line in ANSI.sub("", log_text).splitlines():
        m = re.match(r"^\|\s*(\S+)\s*\|\s*(PASSED|FAILED|SKIPPED|RUNNING|DNS)\s*\|\s*([\d.]+)s\s*\|(.*)$", line)
        if m:
            res[m.group(1)] = (m.group(2), m.group(4).strip(), float(m.group(3)))
    return res


RUNNING = set()  # test-runner processes (each leads its own process group)


def stop_everything(signum, _frame):
    """SIGINT or SIGTERM: kill the running test-runners (they run in their own sessions, so
    a Ctrl-C does not reach them) and exit."""
    for p in list(RUNNING):
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except OSError:
            pass
    os._exit(128 + signum)


def run_number(num, names, a, env, attempt=1):
    """Runs one test number; returns ({name: result}, wall seconds)."""
    base = os.path.join(a.out, a.scenario)
    tag = num if attempt == 1 else f"{num}.retry"
    log_path = os.path.join(base, "logs", f"{tag}.log")
    report = os.path.join(base, "reports", f"{tag}.json")
    e = dict(env, TESTS=num, TEST_REPORT=report)
    cmd = ["./test-runner", "-L", "-s", a.scenario]
    if a.quick == "1":
        cmd.append("-Q")
    t0 = time.time()
    timed_out = False
    with open(log_path, "wb") as log:
        log.write(f"# {' '.join(cmd)}  (TESTS={num}, scenario {a.scenario}, attempt {attempt})\n".encode())
        log.flush()
        p = subprocess.Popen(cmd, cwd=os.path.join(a.src, "tests"), env=e, stdout=log,
                             stderr=subprocess.STDOUT, start_new_session=True)
        RUNNING.add(p)
        try:
            rc = p.wait(timeout=timeout_for(num, a))
        except subprocess.TimeoutExpired:
            timed_out = True
            os.killpg(p.pid, signal.SIGTERM)
            try:
                rc = p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                rc = p.wait()
        finally:
            RUNNING.discard(p)
    wall = time.time() - t0
    with open(log_path, errors="replace") as f:
        plain = ANSI.sub("", f.read())
    summary = parse_summary(plain)
    states = {}
    try:
        with open(report) as f:
            rep = json.load(f)
        for name, t in rep.get("tests", {}).items():
            states[name] = (t.get("state"), float(t.get("duration", 0)))
    except (OSError, ValueError):
        pass
    # The first failure of each test is the informative one: `### Test "name (subtest)"
    # failed at file:line:function() at <date>: ###` and the message on the next line. The
    # runner's own per-test timeout is reported the same way (and kills the process).
    first_fail = {}
    for m in re.finditer(r'### Test "([^" ]+)(?: \((.*?)\))?" failed at (\S+?)(?: at \w{3} \w{3} .*?)?: ###\n(.*)', plain):
        name, sub, where, msg = m.groups()
        first_fail.setdefault(name, f"{sub + ': ' if sub else ''}{where}: {msg.strip()}")
    out = {}
    for name in names:
        state, dur = states.get(name, (None, 0.0))
        reason = ""
        if name in summary:
            state = state or summary[name][0]
            reason = summary[name][1]
            dur = dur or summary[name][2]
        if state in ("RUNNING", "DNS", None):
            state = "FAILED"
            if timed_out:
                reason = f"killed after {timeout_for(num, a):.0f} s (RDK_SUITE_TIMEOUT, TIMEOUT_FLOOR_S)"
            else:
                reason = f"test-runner exited with code {rc} before the test finished"
        if state == "FAILED" and name in first_fail and not timed_out:
            reason = first_fail[name]
        out[name] = {"state": state, "reason": reason, "duration": round(dur or wall, 1),
                     "number": num, "rc": rc, "log": os.path.relpath(log_path, a.out)}
    # A runner that failed although every test of its number passed (leaked threads, a
    # failure in <MAIN>) still failed.
    if rc != 0 and not timed_out and all(v["state"] != "FAILED" for v in out.values()):
        for v in out.values():
            if v["state"] == "PASSED":
                v["state"] = "FAILED"
                v["reason"] = f"test passed but test-runner exited {rc}: {first_fail.get('<MAIN>', '')}"
    return out, wall


# Test numbers that assert on latency (0127: a consume within a time bound).
RUN_ALONE = {"0127"}


def run(a):
    signal.signal(signal.SIGINT, stop_everything)
    signal.signal(signal.SIGTERM, stop_everything)
    tests = broker_tests(a.src, a.scenario)
    wanted = set(t for t in a.tests.split(",") if t) if a.tests else None
    by_num = {}
    for name, _flags in tests:
        num = name[:4]
        if wanted is None or num in wanted:
            by_num.setdefault(num, []).append(name)
    for d in ("logs", "reports"):
        os.makedirs(os.path.join(a.out, a.scenario, d), exist_ok=True)
    expected = read_expected(a.expected) if a.expected else {}
    env = dict(os.environ)
    env["RDKAFKA_TEST_CONF"] = os.path.abspath(a.conf)
    env["LD_LIBRARY_PATH"] = ":".join(
        p for p in (os.path.join(a.src, "src"), os.path.join(a.src, "src-cpp"),
                    env.get("LD_LIBRARY_PATH", "")) if p)
    env.setdefault("RDKAFKA_GITVER", "rdkafka-sys")
    # librdkafka reads CI from the environment: when set it skips 0055's latency checks,
    # turns every timing assertion into a warning and triples its timeouts. CI services set
    # it and a shell usually does not, so drop it: the same checkout gives the same results
    # everywhere, with the strict checks.
    env.pop("CI", None)
    # Longest first (durations of the previous run when there is one, else SLOW_HINTS), so
    # the slow tests do not start last.
    hist = {}
    if a.durations and os.path.exists(a.durations):
        with open(a.durations) as f:
            hist = json.load(f)
    order = sorted(by_num, key=lambda n: (-hist.get(n, SLOW_HINTS.get(n, 10.0)), n))
    print(f"== scenario {a.scenario}: {sum(len(v) for v in by_num.values())} broker tests in "
          f"{len(by_num)} test numbers, {a.parallel} at a time, {a.timeout:.0f} s each "
          f"({', '.join(f'{n}: {t} s' for n, t in sorted(TIMEOUT_FLOOR_S.items()))}), "
          f"{'quick' if a.quick == '1' else 'full'} mode, TEST_KAFKA_VERSION="
          f"{env.get('TEST_KAFKA_VERSION', '(unset)')}", flush=True)
    results, walls = {}, {}
    t0 = time.time()

    def show(n, res, wall, what=""):
        line = " ".join(f"{k}={v['state']}" for k, v in sorted(res.items()))
        print(f"   [{time.time() - t0:4.0f}s] {n}{what} ({wall:.0f} s): {line}", flush=True)

    # Tests that assert on latency run alone, after the others: timing checks measure the
    # broker, not the machine the other tests share.
    alone = [n for n in order if n in RUN_ALONE]
    order = [n for n in order if n not in RUN_ALONE]
    with concurrent.futures.ThreadPoolExecutor(max_workers=a.parallel) as pool:
        futs = {pool.submit(run_number, n, by_num[n], a, env): n for n in order}
        for fut in concurrent.futures.as_completed(futs):
            n = futs[fut]
            res, wall = fut.result()
            walls[n] = round(wall, 1)
            results.update(res)
            show(n, res, wall)
    for n in alone:
        res, wall = run_number(n, by_num[n], a, env)
        walls[n] = round(wall, 1)
        results.update(res)
        show(n, res, wall, " (alone)")
    # With --retries, a test number with a failure the expectations do not list runs once more, alone: a
    # test that passes then is reported as flaky (in the summary, not as a failure).
    again = sorted({v["number"] for k, v in results.items()
                    if v["state"] == "FAILED" and expected.get(k, ("",))[0] != "failed"})
    if again and a.retries > 0:
        print(f"   retrying {len(again)} test number(s) with unexpected failures: {' '.join(again)}", flush=True)
    for n in again if a.retries > 0 else []:
        res, wall = run_number(n, by_num[n], a, env, attempt=2)
        show(n, res, wall, " retry")
        for k, v in res.items():
            first = results[k]
            if first["state"] == "FAILED" and v["state"] != "FAILED":
                v["flaky"] = f"failed, then {v['state'].lower()} on retry: {first['reason']}"
                v["first_log"] = first["log"]
                results[k] = v
            elif first["state"] == "FAILED":
                first["retry"] = f"failed again: {v['reason']}"
    for v in results.values():
        v["scenario"] = a.scenario
    with open(os.path.join(a.out, a.scenario, "results.json"), "w") as f:
        json.dump(results, f, indent=1, sort_keys=True)
    if a.durations:
        hist.update(walls)
        with open(a.durations, "w") as f:
            json.dump(hist, f, indent=1, sort_keys=True)
    return 0


# ---------------------------------------------------------------------------------------------
# Expectations.

CATEGORIES = ("SSL", "SASL", "transactions", "KIP-848", "java-tools", "suite", "missing", "bug")


def read_expected(path):
    """{test: (status, category, reason)} from lines `name status category reason...`."""
    exp = {}
    with open(path) as f:
        for i, line in enumerate(f, 1):
            line = line.split("#", 1)[0].strip() if line.lstrip().startswith("#") else line.strip()
            if not line:
                continue
            parts = line.split(None, 3)
            if len(parts) < 4:
                raise SystemExit(f"{path}:{i}: expected `test status category reason`")
            name, status, cat, reason = parts
            if status not in ("failed", "skipped"):
                raise SystemExit(f"{path}:{i}: status must be failed or skipped, not {status}")
            if cat.split(":", 1)[0] not in CATEGORIES:
                raise SystemExit(f"{path}:{i}: category {cat} is not one of {', '.join(CATEGORIES)}")
            if name in exp:
                raise SystemExit(f"{path}:{i}: {name} is listed twice")
            exp[name] = (status, cat, reason)
    return exp


def check(a):
    results = {}
    for sc in sorted(os.listdir(a.out)):
        fn = os.path.join(a.out, sc, "results.json")
        if os.path.exists(fn):
            with open(fn) as f:
                results.update(json.load(f))
    exp = read_expected(a.expected)
    exp_name = os.path.basename(a.expected)
    wanted = set(t for t in a.tests.split(",") if t) if a.tests else None
    if wanted is not None:
        exp = {k: v for k, v in exp.items() if k[:4] in wanted}
    problems, flaky = [], []
    for name in sorted(results):
        r = results[name]
        state, e = r["state"].lower(), exp.get(name)
        if r.get("flaky"):
            flaky.append(f"{name}: {r['flaky']} (logs: {r['first_log']}, {r['log']})")
        if state == "passed":
            if e:
                problems.append(f"{name} passed but is listed as {e[0]} ({e[1]}): remove it from {exp_name}")
        elif e and e[0] == state:
            pass
        elif e:
            problems.append(f"{name} {state} but is listed as {e[0]} ({e[1]}): {r['reason']} (log: {r['log']})")
        else:
            again = f"; {r['retry']}" if r.get("retry") else ""
            problems.append(f"{name} {state}, not listed: {r['reason']}{again} (log: {r['log']})")
    for name in sorted(set(exp) - set(results)):
        problems.append(f"{name} is listed in {exp_name} but did not run (renamed or removed from the suite?)")

    lines = []
    by_state = {st: sorted(n for n, r in results.items() if r["state"] == st) for st in STATES}
    w = max([len(n) for n in results] + [10])
    lines.append(f"librdkafka suite against Railyard (TEST_KAFKA_VERSION={os.environ.get('TEST_KAFKA_VERSION', '?')})")
    lines.append("")
    lines.append(f"PASSED ({len(by_state['PASSED'])}):")
    row = ""
    for n in by_state["PASSED"]:
        if row and len(row) + len(n) > 96:
            lines.append(row)
            row = ""
        row += f"  {n}"
    if row:
        lines.append(row)
    for st in ("FAILED", "SKIPPED"):
        lines.append("")
        lines.append(f"{st} ({len(by_state[st])}):")
        lines.append(f"  {'test':<{w}}  {'secs':>5}  {'listed as':<24}  reason")
        for n in by_state[st]:
            r, e = results[n], exp.get(n)
            listed = e[1] if e and e[0] == st.lower() else ("NOT LISTED" if not e else f"listed {e[0]}!")
            lines.append(f"  {n:<{w}}  {r['duration']:>5.0f}  {listed:<24}  {e[2] if e else ''}")
            if r["reason"]:
                lines.append(f"  {'':<{w}}  {'':>5}  {'':<24}  runner: {r['reason'][:240]}")
    cats = {}
    for n, r in results.items():
        e = exp.get(n)
        if r["state"] != "PASSED":
            cats.setdefault(f"{r['state'].lower()} / {e[1] if e else 'NOT LISTED'}", []).append(n)
    lines.append("")
    lines.append(f"broker tests: {len(results)}; passed {len(by_state['PASSED'])}, "
                 f"failed {len(by_state['FAILED'])}, skipped {len(by_state['SKIPPED'])}")
    for k in sorted(cats):
        lines.append(f"  {k:<36} {len(cats[k]):>3}")
    if flaky:
        lines.append("")
        lines.append(f"FLAKY ({len(flaky)}: failed, then passed when run again alone; not counted as failures):")
        lines.extend(f"  - {f}" for f in flaky)
    lines.append("")
    if problems:
        lines.append(f"{len(problems)} result(s) differ from {exp_name}:")
        lines.extend(f"  - {p}" for p in problems)
    else:
        lines.append(f"every result matches {exp_name}")
    text = "\n".join(lines)
    print(text)
    with open(os.path.join(a.out, "summary.txt"), "w") as f:
        f.write(text + "\n")
    return 1 if problems else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("wait-ready")
    w.add_argument("--bootstrap", required=True)
    w.add_argument("--timeout", type=float, default=60)
    pf = sub.add_parser("ports-free")
    pf.add_argument("--ports", required=True)
    r = sub.add_parser("run")
    r.add_argument("--src", required=True)
    r.add_argument("--conf", required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--scenario", default="default")
    r.add_argument("--parallel", type=int, default=3)
    r.add_argument("--timeout", type=float, default=240)
    r.add_argument("--quick", default="1")
    r.add_argument("--tests", default="")
    r.add_argument("--durations", default="")
    r.add_argument("--expected", default="")
    # No retries by default: a test that fails now and then is a bug to fix, not to retry.
    r.add_argument("--retries", type=int, default=0)
    c = sub.add_parser("check")
    c.add_argument("--out", required=True)
    c.add_argument("--expected", required=True)
    c.add_argument("--tests", default="")
    a = ap.parse_args()
    return {"wait-ready": wait_ready, "ports-free": ports_free, "run": run, "check": check}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
