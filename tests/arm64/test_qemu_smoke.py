"""The aarch64 build of ayder over HTTP, run under qemu-aarch64 (tests/arm64/run).

One node on a loopback port, as the integration tests start it (tests/integration/conftest.py's
Node, with qemu as the wrapper): produce (single records, an NDJSON batch, KV), consume every
record back, a long-poll consumer woken by a produce (the broker's wake-up handshake across
threads), SIGKILL, restart on the same data directory (recovery: journal CRCs, partition logs),
every record and key still there, offsets continuing, then a clean SIGTERM (exit 0).

Environment (set by tests/arm64/run): AYDER_BIN = the aarch64 binary, AYDER_QEMU = the qemu
command line that runs it ("qemu-aarch64": the binary loads the multiarch libc6:arm64).
"""
import base64
import importlib.util
import json
import os
import shlex
import threading
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

# tests/integration/conftest.py under another name (this folder has no conftest of its own).
_spec = importlib.util.spec_from_file_location(
    "integration_conftest", os.path.join(ROOT, "tests", "integration", "conftest.py"))
it = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(it)

BIN = os.environ.get("AYDER_BIN", os.path.join(ROOT, "build-arm64", "ayder"))
QEMU = shlex.split(os.environ.get("AYDER_QEMU", "qemu-aarch64"))
it.BINARY = BIN
START_TIMEOUT_S = 120  # emulated start-up and recovery are slower than native


def test_binary_is_aarch64():
    with open(BIN, "rb") as f:
        hdr = f.read(20)
    assert hdr[:4] == b"\x7fELF", BIN
    assert int.from_bytes(hdr[18:20], "little") == 183, "e_machine is not EM_AARCH64: %s" % BIN


def produce(node, topic, value, **params):
    q = "&".join("%s=%s" % kv for kv in params.items())
    r = node.post("/broker/topics/%s/produce%s" % (topic, ("?" + q) if q else ""), data=value)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["ok"] is True and body["durable"] is True, body
    return body


def read_all(node, topic, part):
    out, off = [], 0
    while True:
        r = node.get("/broker/consume/%s/smoke/%d?offset=%d&limit=1000&encoding=b64"
                     % (topic, part, off))
        assert r.status_code == 200, r.text
        got = r.json()
        for m in got["messages"]:
            out.append((m["offset"], base64.b64decode(m["value_b64"])))
        if not got["messages"]:
            return out
        off = got["next_offset"]


def test_produce_consume_sigkill_restart(tmp_path):
    node = it.Node(str(tmp_path / "data"), wrapper=QEMU)
    try:
        node.start(timeout=START_TIMEOUT_S)
        # The process answering is the emulator running the aarch64 binary, not a native one.
        assert os.path.basename(os.readlink("/proc/%d/exe" % node.proc.pid)).startswith("qemu-aarch64")
        assert node.get("/health").json().get("ok") is True

        r = node.post("/broker/topics", json={"name": "arm", "partitions": 2})
        assert r.status_code in (200, 201), r.text

        # Single records (binary values, so the bytes round-trip exactly) and an NDJSON batch.
        want = {0: [], 1: []}
        for i in range(40):
            p = i % 2
            v = b"arm64-%03d-" % i + bytes(range(i % 7, 256, 37))
            body = produce(node, "arm", v, partition=p)
            assert body["offset"] == len(want[p]), body
            want[p].append(v)
        lines = [json.dumps({"n": i, "s": "batch"}).encode() for i in range(25)]
        r = node.post("/broker/topics/arm/produce-ndjson?partition=1", data=b"\n".join(lines))
        assert r.status_code == 200, r.text
        assert r.json()["durable"] is True, r.text
        want[1] += lines
        # A bigger batch (binary values, base64 lines) so recovery has a real journal to replay.
        big = [b"big-%05d-" % i + bytes([i % 251]) * (i % 97) for i in range(5000)]
        r = node.post("/broker/topics/arm/produce-ndjson?partition=0&encoding=b64",
                      data=b"\n".join(base64.b64encode(v) for v in big))
        assert r.status_code == 200, r.text
        assert r.json()["first_offset"] == len(want[0]) and r.json()["count"] == len(big), r.text
        want[0] += big

        r = node.post("/kv/armkv/k1?cas=0", data=b"v1")
        assert r.status_code == 200 and r.json()["durable"] is True, r.text

        for p in (0, 1):
            got = read_all(node, "arm", p)
            assert [o for o, _ in got] == list(range(len(want[p])))
            assert [v for _, v in got] == want[p]

        # A parked long-poll consumer is woken by the next produce (not by its timeout).
        result = {}

        def poll():
            t0 = time.monotonic()
            result["resp"] = node.get("/broker/consume/arm/lp/0?offset=%d&wait_ms=20000"
                                      % len(want[0]), timeout=60)
            result["elapsed"] = time.monotonic() - t0

        t = threading.Thread(target=poll)
        t.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            m = node.get("/metrics").text
            if any(line.startswith("ayder_long_poll_waiters ") and float(line.split()[1]) >= 1
                   for line in m.splitlines()):
                break
            time.sleep(0.02)
        produce(node, "arm", b"wake-up", partition=0)
        want[0].append(b"wake-up")
        t.join(timeout=60)
        assert not t.is_alive()
        assert result["resp"].status_code == 200, result["resp"].text
        got = result["resp"].json()
        assert got["count"] == 1 and got["messages"][0]["value"] == "wake-up", got
        assert result["elapsed"] < 15.0, result["elapsed"]

        # Crash: SIGKILL, no clean shutdown, no final checkpoint. Then restart on the same data.
        node.kill()
        node.start(timeout=START_TIMEOUT_S)
        for p in (0, 1):
            got = read_all(node, "arm", p)
            assert [o for o, _ in got] == list(range(len(want[p])))
            assert [v for _, v in got] == want[p]
        r = node.get("/kv/armkv/k1")
        assert r.status_code == 200, r.text
        assert base64.b64decode(r.json()["value"]) == b"v1", r.text

        # Offsets go on after recovery.
        assert produce(node, "arm", b"after-restart", partition=0)["offset"] == len(want[0])

        rc = node.stop(timeout=60)
        assert rc == 0, "ayder exited with %s on SIGTERM; log:\n%s" % (rc, node.log())
    finally:
        node.kill()
