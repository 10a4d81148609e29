"""Durability of the real binary under crashes, power loss, fsync failure and a full disk.

What each test proves (the promise: a produce answered 200 with "durable":true survives anything
short of losing the disk):

1. test_sigkill_cycles: many cycles of start -> concurrent producers (single, NDJSON batches of 10,
   some with idempotency keys) -> SIGKILL at a random moment -> restart -> history check.
2. test_power_loss_cycles: the same, but the node runs under tools/fsync-shim (LD_PRELOAD), and
   after
   SIGKILL every file is cut back to its size at its last successful fsync (sometimes with part of
   the unsynced tail kept or garbled) and files/directories whose creation was never made durable by
   a directory fsync are removed, as a power cut would do.
3. test_fsync_eio: strace injects EIO into one fdatasync: the store must stop acknowledging (503
   storage_failed), /health and /ready must say so, and a restart must keep every acknowledged write.
4. test_enospc: a small tmpfs as the data directory fills up: 507 (or 503), reads still served,
   /health says why, and writes resume once space is freed.

The history checker (Jepsen style): every operation ends ok (200 + durable:true), fail (4xx: it
definitely did not happen) or info (timeout, reset, 5xx, durable:false: unknown). After every
restart the whole topic is read back and we check: ok writes are at exactly the partition/offset
they were given with the same bytes (lost = 0), offsets are contiguous from 0 per partition, no value
appears twice, no failed value appears, nothing appears that was never written. Info operations that
carried an idempotency key are retried once after the restart with the same key: the answer must be
the original's position (duplicate) or a fresh write, and either way the value must then appear once.

Environment: AYDER_SOAK=1 multiplies the cycle counts by 10 (see tools/crash-soak);
AYDER_SEED=<n> fixes the random choices (timing still varies).
"""
import base64
import os
import random
import shutil
import signal
import subprocess
import tempfile
import threading
import time

import pytest
import requests

from conftest import AUTH, ROOT

SOAK = os.environ.get("AYDER_SOAK", "") not in ("", "0")
SEED = int(os.environ.get("AYDER_SEED", "0")) or random.randrange(1, 1 << 30)
TOPIC = "dur"
NPARTS = 4
PAD = "x" * 180  # values of ~200 bytes so 64 KiB segments roll often


def scaled(n):
    return n * 10 if SOAK else n


def report(capsys, text):
    """Print past pytest's capture so the figures show up in every run."""
    with capsys.disabled():
        print("\n" + text)


# ------------------------------------------------------------------------------------------------
# History

class Op:
    __slots__ = ("id", "kind", "values", "params", "idem", "result", "status", "partition",
                 "offset", "note")

    def __init__(self, op_id, kind, values, params):
        self.id = op_id
        self.kind = kind            # "single" | "batch"
        self.values = values        # list of str, in offset order
        self.params = params        # query parameters sent
        self.idem = params.get("idempotency_key")
        self.result = None          # "ok" | "fail" | "info"
        self.status = None
        self.partition = None
        self.offset = None          # first offset
        self.note = ""

    def body(self):
        if self.kind == "single":
            return self.values[0].encode()
        return ("\n".join(self.values) + "\n").encode()

    def path(self):
        return "/broker/topics/%s/%s" % (TOPIC, "produce" if self.kind == "single"
                                         else "produce-ndjson")


class History:
    def __init__(self):
        self.lock = threading.Lock()
        self.ops = []

    def new_op(self, kind, values, params):
        with self.lock:
            op = Op(len(self.ops), kind, values, params)
            self.ops.append(op)
            return op

    def counts(self):
        c = {"ok": 0, "fail": 0, "info": 0}
        for op in self.ops:
            c[op.result or "info"] += 1
        return c

    def acked_values(self):
        return sum(len(op.values) for op in self.ops if op.result == "ok")


def classify(op, resp):
    """Set op.result from an HTTP response (None = no response at all)."""
    if resp is None:
        op.result = "info"
        return
    op.status = resp.status_code
    if resp.status_code == 200:
        try:
            j = resp.json()
        except ValueError:
            op.result, op.note = "info", "200 with a body that is not JSON"
            return
        first = j.get("offset") if op.kind == "single" else j.get("first_offset")
        if j.get("duplicate") is True or j.get("durable") is True:
            if op.kind == "batch" and j.get("count") not in (None, len(op.values)):
                op.result, op.note = "info", "batch count %r" % j.get("count")
                return
            op.result, op.partition, op.offset = "ok", j.get("partition"), first
            op.note = "duplicate" if j.get("duplicate") else ""
        else:
            op.result, op.note = "info", "200 not durable"
    elif 400 <= resp.status_code < 500:
        op.result = "fail"
    else:
        op.result = "info"


def producer(url, hist, stop, tag, rng):
    s = requests.Session()
    s.headers.update(AUTH)
    i = 0
    while not stop.is_set():
        i += 1
        base = "%s-%d" % (tag, i)
        batch = rng.random() < 0.3
        values = (["%s-%d-%s" % (base, j, PAD) for j in range(10)] if batch
                  else ["%s-%s" % (base, PAD)])
        params = {}
        if rng.random() < 0.03:
            params["partition"] = str(NPARTS + 7)  # a definite failure: 400 invalid_partition
        elif rng.random() < 0.5:
            params["partition"] = str(rng.randrange(NPARTS))
        if rng.random() < 0.4:
            params["idempotency_key"] = "k-" + base
        op = hist.new_op("batch" if batch else "single", values, params)
        try:
            resp = s.post(url + op.path(), params=params, data=op.body(), timeout=10)
        except requests.RequestException:
            resp = None
        classify(op, resp)
    s.close()


def run_load(node, hist, rng, tag, duration_s, threads=4):
    """Producers for duration_s, then SIGKILL while requests are still in flight."""
    stop = threading.Event()
    ts = [threading.Thread(target=producer,
                           args=(node.url, hist, stop, "%s-t%d" % (tag, k),
                                 random.Random(rng.random())), daemon=True)
          for k in range(threads)]
    for t in ts:
        t.start()
    time.sleep(duration_s)  # the crash moment itself is the random variable here
    stop.set()
    node.kill()
    for t in ts:
        t.join(timeout=60)
        assert not t.is_alive(), "a producer thread hung after SIGKILL"


def retry_unknown(node, hist, since):
    """Retry once every info op (from index `since`) that carried an idempotency key."""
    n = 0
    for op in hist.ops[since:]:
        if op.result == "info" and op.idem:
            try:
                resp = node.post(op.path(), params=op.params, data=op.body(), timeout=30)
            except requests.RequestException:
                resp = None
            classify(op, resp)
            n += 1
    return n


def read_partition(node, p):
    """All records of one partition: list of (offset, value str)."""
    out, off = [], 0
    while True:
        r = node.get("/broker/consume/%s/chk/%d" % (TOPIC, p),
                     params={"offset": off, "limit": 1000, "encoding": "b64"}, timeout=30)
        assert r.status_code == 200, "consume p%d@%d: %s %s" % (p, off, r.status_code, r.text)
        j = r.json()
        msgs = j["messages"]
        if not msgs:
            break
        for m in msgs:
            out.append((m["offset"], base64.b64decode(m["value_b64"]).decode("utf-8", "replace")))
        off = j["next_offset"]
    return out


def check_history(node, hist):
    """Read the whole topic back and check the history. Returns the figures; asserts at the end
    with every problem listed."""
    problems = []
    r = node.get("/broker/topics/%s" % TOPIC)
    if r.status_code == 404:
        logs = {p: [] for p in range(NPARTS)}
        latest = {p: 0 for p in range(NPARTS)}
    else:
        assert r.status_code == 200, r.text
        latest = {e["partition"]: e["latest_offset"] for e in r.json()["partitions"]}
        logs = {p: read_partition(node, p) for p in range(NPARTS)}
    where = {}
    for p, recs in logs.items():
        expect = 0
        for off, val in recs:
            if off != expect:
                problems.append("p%d: hole/backward: offset %d where %d expected"
                                % (p, off, expect))
            expect = off + 1
            if val in where:
                problems.append("duplicate value %r at p%d@%d and p%d@%d"
                                % (val[:40], where[val][0], where[val][1], p, off))
            where[val] = (p, off)
        if latest.get(p) != expect:
            problems.append("p%d: latest_offset %s but records end at %d"
                            % (p, latest.get(p), expect))
    written = set()
    lost = 0
    for op in hist.ops:
        written.update(op.values)
        if op.result == "ok":
            for j, v in enumerate(op.values):
                got = where.get(v)
                want = (op.partition, op.offset + j)
                if got != want:
                    lost += 1
                    problems.append("acked %s op %d (%s) value %r: expected at p%s@%s, found %s"
                                    % (op.kind, op.id, op.note or "durable", v[:40], want[0],
                                       want[1], "nowhere" if got is None else "p%d@%d" % got))
        elif op.result == "fail":
            for v in op.values:
                if v in where:
                    problems.append("value %r of a failed (%s) op is readable at p%d@%d"
                                    % (v[:40], op.status, *where[v]))
    for v, (p, off) in where.items():
        if v not in written:
            problems.append("phantom value %r at p%d@%d was never written" % (v[:40], p, off))
    present = len(where)
    shown = problems[:30]
    assert not problems, "%d problem(s) (lost=%d):\n%s\nlog:\n%s" % (
        len(problems), lost, "\n".join(shown), node.log())
    return {"present": present, "lost": lost}


def figures(name, cycles, hist, extra=""):
    c = hist.counts()
    return ("[%s] seed=%d cycles=%d ops ok=%d fail=%d info=%d acked-writes=%d lost=0%s"
            % (name, SEED, cycles, c["ok"], c["fail"], c["info"], hist.acked_values(), extra))


# ------------------------------------------------------------------------------------------------
# 1. SIGKILL cycles

CONFIGS = {
    # no checkpoint within a run: every restart replays the journal from the start
    "journal": ([], 15),
    # checkpoints + journal trimming mid-run
    "checkpoint": (["--checkpoint-interval-ms", "500"], 20),
    # checkpoints + small segments: journal and partition segments roll often
    "roll": (["--checkpoint-interval-ms", "500", "--segment-bytes", "65536"], 25),
}


@pytest.mark.parametrize("config", list(CONFIGS))
def test_sigkill_cycles(make_node, data_dir, capsys, config):
    args, cycles = CONFIGS[config]
    cycles = scaled(cycles)
    rng = random.Random("%d-%s" % (SEED, config))
    hist = History()
    node = make_node(args=args)
    node.start()
    r = node.post("/broker/topics", json={"name": TOPIC, "partitions": NPARTS})
    assert r.status_code == 200, r.text
    retried = 0
    for cycle in range(cycles):
        mark = len(hist.ops)
        run_load(node, hist, rng, "%s%d" % (config[0], cycle), rng.uniform(0.05, 0.3))
        node = make_node(args=args, port=node.port)
        node.start()
        retried += retry_unknown(node, hist, mark)
        check_history(node, hist)
    rc = node.stop()
    assert rc == 0, "exit %s on SIGTERM; log:\n%s" % (rc, node.log())
    report(capsys, figures("sigkill/" + config, cycles, hist,
                           " kills=%d idempotent-retries=%d" % (cycles, retried)))


# ------------------------------------------------------------------------------------------------
# 2. Power loss (LD_PRELOAD fsync shim)

SHIM_SRC = os.path.join(ROOT, "tools", "fsync-shim", "fsync_shim.c")


@pytest.fixture(scope="session")
def fsync_shim():
    """Path of the shim .so: $FSYNC_SHIM_LIB, else built from source into a temp dir."""
    lib = os.environ.get("FSYNC_SHIM_LIB")
    if lib:
        yield lib  # a generator fixture must yield, even for a prebuilt shim
        return
    cc = shutil.which("gcc") or shutil.which("cc")
    if not cc:
        pytest.skip("no C compiler to build the fsync shim")
    d = tempfile.mkdtemp(prefix="fsync-shim-")
    lib = os.path.join(d, "fsync_shim.so")
    r = subprocess.run([cc, "-O2", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC", "-o", lib,
                        SHIM_SRC, "-ldl"], capture_output=True, text=True)
    assert r.returncode == 0, "building the fsync shim failed:\n" + r.stderr
    yield lib
    shutil.rmtree(d, ignore_errors=True)


def file_sizes(root):
    out = {}
    for dp, _dn, fns in os.walk(root):
        for fn in fns:
            p = os.path.join(dp, fn)
            out[p] = os.path.getsize(p)
    return out


def parse_shim_state(path):
    """Replay the shim's records. Returns (synced sizes, created-this-run paths, paths whose
    creation is not durable, renames not durable [(old, new)])."""
    synced, created, pending, renames, begins = {}, set(), {}, [], {}
    with open(path) as f:
        lines = f.read().split("\n")
    for line in lines[:-1]:  # the last element is "" (or a cut record, which is ignored)
        tag, rest = line[0], line[2:]
        if tag == "C" or tag == "M":
            pending[rest] = "dir" if tag == "M" else "file"
            created.add(rest)
            synced.pop(rest, None)
        elif tag == "S":
            size, p = rest.split(" ", 1)
            synced[p] = int(size)
        elif tag == "U":
            synced.pop(rest, None)
            pending.pop(rest, None)
        elif tag == "R":
            old, new = rest.split(" ", 1)
            if old in synced:
                synced[new] = synced.pop(old)
            else:
                synced.pop(new, None)
            if old in created:
                created.add(new)
            if old in pending:
                # never durably created under either name: it vanishes
                pending[new] = pending.pop(old)
            else:
                renames.append([old, new, False])
        elif tag == "d":
            i, d = rest.split(" ", 1)
            begins[i] = ([p for p in pending if os.path.dirname(p) == d],
                         [r for r in renames if not r[2] and os.path.dirname(r[1]) == d])
        elif tag == "D":
            ps, rs = begins.pop(rest, ([], []))
            for p in ps:
                pending.pop(p, None)
            for r in rs:
                r[2] = True
        # "T" is informational
    return synced, created, pending, [(o, n) for o, n, ok in renames if not ok]


def power_loss(data_dir, state_path, baseline, rng, stats):
    """Turn the data dir into what a power cut after the SIGKILL could leave behind."""
    synced, created, pending, renames = parse_shim_state(state_path)
    for old, new in reversed(renames):
        if os.path.exists(new) and not os.path.exists(old):
            os.rename(new, old)
            if new in synced:
                synced[old] = synced.pop(new)
            stats["undone-renames"] += 1
    for p in sorted(pending, key=len):
        if os.path.isdir(p):
            shutil.rmtree(p)
            stats["removed"] += 1
        elif os.path.lexists(p):
            os.unlink(p)
            stats["removed"] += 1
    for p, cur in file_sizes(data_dir).items():
        if p in synced:
            target = synced[p]
        elif p in created:
            target = 0
        else:
            target = baseline.get(p, 0)
        if cur <= target:
            continue
        keep = target
        with open(p, "r+b") as f:
            if rng.random() < 0.4:
                # a torn tail: part of the unsynced bytes made it, maybe garbled
                extra = rng.randint(1, min(cur - target, 8192))
                keep = target + extra
                mode = rng.choice(["real", "zero", "random"])
                if mode != "real":
                    start = target + rng.randrange(extra)
                    n = rng.randint(1, keep - start)
                    f.seek(start)
                    f.write(bytes(n) if mode == "zero" else os.urandom(n))
                stats["torn-" + mode] += 1
            f.truncate(keep)
        stats["cut-files"] += 1
        stats["cut-bytes"] += cur - keep


KEEP_FAILED = os.environ.get("AYDER_KEEP_FAILED", "")


def keep_failed(root, tmp_path, cycle):
    """With AYDER_KEEP_FAILED=<dir>: keep what a failed restart saw (the data directory after the
    power-loss model, the same directory before it, every shim state file and the node logs)."""
    if not KEEP_FAILED:
        return
    dest = os.path.join(KEEP_FAILED, "seed%d-cycle%d-%d" % (SEED, cycle, os.getpid()))
    os.makedirs(dest, exist_ok=True)
    shutil.copytree(root, os.path.join(dest, "data"), symlinks=True)
    for name in os.listdir(tmp_path):
        src = os.path.join(tmp_path, name)
        if os.path.isdir(src):
            shutil.copytree(src, os.path.join(dest, name), symlinks=True)
        else:
            shutil.copy2(src, dest)
    if os.path.isdir(root + ".logs"):
        shutil.copytree(root + ".logs", os.path.join(dest, "logs"))
    print("kept the failed state in", dest)


def test_power_loss_cycles(make_node, data_dir, capsys, fsync_shim, tmp_path):
    cycles = scaled(25)
    rng = random.Random("%d-power" % SEED)
    args = ["--checkpoint-interval-ms", "500", "--segment-bytes", "65536"]
    os.makedirs(data_dir)  # the data dir itself exists before the node (its parent is not ayder's)
    root = os.path.realpath(data_dir)
    hist = History()
    stats = {k: 0 for k in ("undone-renames", "removed", "cut-files", "cut-bytes", "torn-real",
                            "torn-zero", "torn-random")}
    port = None
    since = 0
    for cycle in range(cycles + 1):
        last = cycle == cycles
        state = str(tmp_path / ("shim-%d.state" % cycle))
        env = None if last else {"LD_PRELOAD": fsync_shim, "FSYNC_SHIM_STATE": state,
                                 "FSYNC_SHIM_ROOT": root}
        baseline = file_sizes(root)
        node = make_node(args=args, env=env, port=port)
        port = node.port
        try:
            node.start()
        except Exception:
            keep_failed(root, tmp_path, cycle)
            raise
        if cycle == 0:
            r = node.post("/broker/topics", json={"name": TOPIC, "partitions": NPARTS})
            assert r.status_code == 200, r.text
        else:
            retry_unknown(node, hist, since)
            check_history(node, hist)
        if last:
            break
        since = len(hist.ops)
        run_load(node, hist, rng, "w%d" % cycle, rng.uniform(0.05, 0.3))
        assert os.path.exists(state), "the shim wrote no state file (was it preloaded?)"
        if KEEP_FAILED:  # the directory as the SIGKILL left it, before the power-loss model
            pre = str(tmp_path / "pre-power-loss")
            shutil.rmtree(pre, ignore_errors=True)
            shutil.copytree(root, pre, symlinks=True)
        power_loss(root, state, baseline, rng, stats)
    rc = node.stop()
    assert rc == 0, "exit %s on SIGTERM; log:\n%s" % (rc, node.log())
    report(capsys, figures("power-loss", cycles, hist, " power-losses=%d %s" % (
        cycles, " ".join("%s=%d" % kv for kv in sorted(stats.items())))))


# ------------------------------------------------------------------------------------------------
# 3. fsync EIO (strace fault injection)

def descendants(pid):
    """PIDs of every descendant of pid (from /proc/<pid>/task/*/children)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            tasks = os.listdir("/proc/%d/task" % p)
        except OSError:
            continue
        for t in tasks:
            try:
                with open("/proc/%d/task/%s/children" % (p, t)) as f:
                    kids = [int(x) for x in f.read().split()]
            except OSError:
                continue
            out.extend(kids)
            todo.extend(kids)
    return out


def kill_tree(node):
    """SIGKILL the ayder under a wrapper, then the wrapper. Killing only strace would detach
    ayder and leave it running; with SO_REUSEPORT it would then share the port with the next node."""
    if node.proc and node.proc.poll() is None:
        for pid in descendants(node.proc.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    node.kill()


def have_strace():
    """strace is installed and allowed to trace here (ptrace may be denied in a container)."""
    if not shutil.which("strace"):
        return False
    r = subprocess.run(["strace", "-qq", "-o", "/dev/null", "true"], capture_output=True)
    return r.returncode == 0


@pytest.mark.skipif(not have_strace(), reason="strace is not installed or cannot trace here")
@pytest.mark.parametrize("when", [3, 7])
def test_fsync_eio(make_node, data_dir, tmp_path, when):
    trace = str(tmp_path / "strace.out")
    wrapper = ["strace", "-f", "-qq", "-o", trace, "-e", "trace=fdatasync",
               "-e", "inject=fdatasync:error=EIO:when=%d" % when]
    node = make_node(wrapper=wrapper)
    try:
        node.start(timeout=60)
        hist = History()
        failed_at = None
        for i in range(300):
            op = hist.new_op("single", ["eio-%d-%d-%s" % (when, i, PAD)],
                             {"partition": str(i % NPARTS)})
            resp = node.post(op.path(), params=op.params, data=op.body(), timeout=30)
            classify(op, resp)
            if resp.status_code != 200:
                failed_at = i
                assert resp.status_code == 503, "fsync failure answered %s: %s" % (
                    resp.status_code, resp.text)
                assert resp.json().get("error") == "storage_failed", resp.text
                break
            assert op.result == "ok", "200 without durable:true: %s" % resp.text
        with open(trace) as f:
            injected = [ln for ln in f if "INJECTED" in ln]
        assert injected, "strace never injected EIO (fdatasync not used?)"
        assert failed_at is not None, ("an fdatasync failed with EIO but every produce still "
                                       "answered 200 durable:true; strace:\n%s\nlog:\n%s"
                                       % ("".join(injected), node.log()))
        # sticky: nothing is acknowledged any more
        for i in range(5):
            r = node.post("/broker/topics/%s/produce" % TOPIC, data=b"after-eio-%d" % i, timeout=30)
            assert r.status_code == 503 and r.json().get("error") == "storage_failed", r.text
            op = hist.new_op("single", ["after-eio-%d" % i], {})
            classify(op, r)
        h = node.get("/health")
        assert h.status_code == 503, h.text
        hj = h.json()
        assert hj.get("ok") is False and hj.get("error") == "storage_failed", h.text
        assert hj.get("message"), "/health does not say why: %s" % h.text
        rd = node.get("/ready")
        assert rd.status_code == 503 and rd.json().get("ready") is False, rd.text
    finally:
        kill_tree(node)
    node2 = make_node(port=node.port)
    node2.start()
    check_history(node2, hist)
    assert node2.get("/health").status_code == 200
    assert node2.stop() == 0


# ------------------------------------------------------------------------------------------------
# 4. ENOSPC on a small tmpfs

@pytest.fixture
def small_tmpfs():
    d = tempfile.mkdtemp(prefix="ayder-enospc-")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", d],
                       capture_output=True, text=True)
    if r.returncode != 0:
        os.rmdir(d)
        pytest.skip("cannot mount a tmpfs (%s)" % r.stderr.strip())
    try:
        yield d
    finally:
        subprocess.run(["umount", "-l", d], capture_output=True)
        os.rmdir(d)


def test_enospc(make_node, small_tmpfs, capsys):
    ballast = os.path.join(small_tmpfs, "ballast")
    with open(ballast, "wb") as f:
        f.write(b"\xab" * (2 << 20))
    data = os.path.join(small_tmpfs, "data")
    # The 507 watermark is --min-free-bytes (64 MiB by default): 2 MiB on this 8 MiB tmpfs.
    node = make_node(data=data, args=["--segment-bytes", "1048576", "--min-free-bytes", "2097152"])
    node.start()
    hist = History()
    value = os.urandom(32 * 1024).hex()  # 64 KiB of text
    full = None
    for i in range(400):
        op = hist.new_op("single", ["%06d-%s" % (i, value)], {"partition": "0"})
        resp = node.post(op.path(), params=op.params, data=op.body(), timeout=30)
        classify(op, resp)
        if resp.status_code != 200:
            full = resp
            break
        assert op.result == "ok", resp.text
    assert full is not None, "8 MiB tmpfs never filled up"
    assert full.status_code in (507, 503), "disk full answered %s: %s" % (
        full.status_code, full.text)
    if full.status_code == 507:
        assert full.json().get("error") == "insufficient_storage", full.text
    else:
        assert full.json().get("error") == "storage_failed", full.text
    acked = [op for op in hist.ops if op.result == "ok"]
    assert len(acked) > 10, "only %d writes fit" % len(acked)
    report(capsys, "[enospc] %d writes of 64 KiB acked, then %d %s" % (
        len(acked), full.status_code, full.json().get("error")))
    # reads still work while full
    r = node.get("/broker/consume/%s/g/0" % TOPIC, params={"offset": acked[-1].offset, "limit": 1})
    assert r.status_code == 200, r.text
    assert r.json()["messages"][0]["value"] == acked[-1].values[0]
    h = node.get("/health")
    assert h.status_code in (503, 507), h.text
    assert h.json().get("message"), "/health does not say why: %s" % h.text
    if full.status_code == 503:
        # tmpfs never fails an fsync, so a sticky 503 means some other write's ENOSPC was treated
        # as fatal. Still check nothing acknowledged is lost across a restart, then fail.
        log = node.log()
        os.unlink(ballast)
        node.kill()
        node2 = make_node(data=data, port=node.port,
                          args=["--segment-bytes", "1048576", "--min-free-bytes", "2097152"])
        node2.start()
        check_history(node2, hist)
        r = node2.post("/broker/topics/%s/produce" % TOPIC, params={"partition": "0"}, data=b"z")
        assert r.status_code == 200, r.text
        assert node2.stop() == 0
        pytest.fail("disk full answered 503 storage_failed (sticky until restart) although no "
                    "fsync failed (tmpfs); expected 507 insufficient_storage and writes resuming "
                    "once space is back. log:\n" + log)
    # further writes refused with 507 while full
    r = node.post("/broker/topics/%s/produce" % TOPIC, params={"partition": "0"}, data=b"refused")
    assert r.status_code == 507, r.text
    classify(hist.new_op("single", ["refused"], {"partition": "0"}), r)
    os.unlink(ballast)
    # writes resume: poll (bounded) until the store notices space is back
    deadline = time.monotonic() + 20
    resumed = None
    k = 0
    while time.monotonic() < deadline:
        k += 1
        op = hist.new_op("single", ["resumed-%d" % k], {"partition": "0"})
        resp = node.post(op.path(), params=op.params, data=op.body(), timeout=30)
        classify(op, resp)
        if resp.status_code == 200:
            resumed = resp
            break
        assert resp.status_code == 507, resp.text
        time.sleep(0.1)
    assert resumed is not None, "writes did not resume after space was freed; log:\n" + node.log()
    assert resumed.json().get("durable") is True, resumed.text
    assert node.get("/health").status_code == 200
    check_history(node, hist)
    node.kill()
    node2 = make_node(data=data, port=node.port,
                      args=["--segment-bytes", "1048576", "--min-free-bytes", "2097152"])
    node2.start()
    check_history(node2, hist)
    assert node2.stop() == 0


# ------------------------------------------------------------------------------------------------
# The checker itself: plant each kind of bug in a history and show it is caught.

def test_checker_catches_planted_bugs(make_node):
    node = make_node()
    node.start()
    hist = History()
    for i in range(6):
        op = hist.new_op("single", ["plant-%d" % i], {"partition": str(i % 2)})
        classify(op, node.post(op.path(), params=op.params, data=op.body()))
        assert op.result == "ok"
    check_history(node, hist)  # clean

    def caught(mutate, text):
        h = History()
        h.ops = [Op(o.id, o.kind, list(o.values), dict(o.params)) for o in hist.ops]
        for o, src in zip(h.ops, hist.ops):
            o.result, o.partition, o.offset = src.result, src.partition, src.offset
        mutate(h)
        with pytest.raises(AssertionError) as e:
            check_history(node, h)
        assert text in str(e.value), str(e.value)[:500]

    def lost(h):  # an acked write that is not there
        o = h.new_op("single", ["never-written"], {})
        o.result, o.partition, o.offset = "ok", 0, 99

    def moved(h):  # acked at one offset, found at another
        h.ops[0].offset += 1

    def aborted(h):  # a definitely failed write that is readable
        h.ops[1].result = "fail"

    def phantom(h):  # a value nobody wrote
        h.ops.pop()

    caught(lost, "found nowhere")
    caught(moved, "expected at p0@1")
    caught(aborted, "of a failed")
    caught(phantom, "phantom value")
    assert node.stop() == 0


# ------------------------------------------------------------------------------------------------
# Two processes on one data directory would interleave journal writes (and with SO_REUSEPORT could
# even share a port unnoticed, e.g. an old instance left running): the second must refuse to start.

def test_second_process_on_same_data_dir_refused(make_node, data_dir):
    a = make_node()
    a.start()
    b = make_node()  # same data dir, another port
    b.start(wait=False)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        rc = b.proc.poll()
        if rc is not None:
            assert rc != 0, "second process exited 0; log:\n" + b.log()
            break
        try:
            ready = requests.get(b.url + "/ready", timeout=1).status_code == 200
        except requests.RequestException:
            ready = False
        assert not ready, ("a second ayder serves the data dir %s already in use by pid %d "
                           "(no lock on the data directory)" % (data_dir, a.proc.pid))
        time.sleep(0.05)
    else:
        pytest.fail("second process neither exited nor became ready")
    assert a.stop() == 0
