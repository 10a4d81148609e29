"""Helpers shared by the stream black-box tests (test_stream_*_api.py): a node per module,
producing JSON / binary records, and the two stream calls."""
import base64
import json
import os
import tempfile
import time

from conftest import AUTH, Node


class ModuleNode:
    """One ayder for a whole test module (the stream tests only read what they wrote, in topics
    of their own), so the module pays one start-up."""

    def __init__(self, args=()):
        self.tmp = tempfile.TemporaryDirectory(prefix="ayder-stream-")
        self.node = Node(os.path.join(self.tmp.name, "data"), args=args).start()

    def close(self):
        rc = self.node.stop()
        log = self.node.log()
        self.tmp.cleanup()
        assert rc == 0, "ayder exited with %s on SIGTERM; log:\n%s" % (rc, log)


def create_topic(n, name, partitions=1):
    r = n.post("/broker/topics", json={"name": name, "partitions": partitions})
    assert r.status_code == 200, r.text
    return r.json()


def produce_json(n, topic, records, partition=0, key=None):
    """One batch of JSON records (dicts or raw strings). Returns the produce answer."""
    lines = [r if isinstance(r, str) else json.dumps(r, separators=(",", ":")) for r in records]
    params = {"partition": partition}
    if key is not None:
        params["key"] = key
    r = n.post("/broker/topics/%s/produce-ndjson" % topic, params=params,
               data=("\n".join(lines) + "\n").encode())
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["count"] == len(lines), body
    return body


def produce_bin(n, topic, values, partition=0):
    """One batch of binary values through produce-ndjson ?encoding=b64."""
    data = "".join(base64.b64encode(v).decode() + "\n" for v in values)
    r = n.post("/broker/topics/%s/produce-ndjson" % topic,
               params={"partition": partition, "encoding": "b64"}, data=data.encode())
    assert r.status_code == 200, r.text
    assert r.json()["count"] == len(values), r.text
    return r.json()


def produce_one(n, topic, value, partition=0, key=None, headers=None):
    params = {"partition": partition}
    if key is not None:
        params["key"] = key
    h = dict(AUTH)
    for k, v in (headers or {}).items():
        h["X-Ayder-Header-" + k] = v
    r = n.post("/broker/topics/%s/produce" % topic, params=params, headers=h,
               data=value if isinstance(value, bytes) else value.encode())
    assert r.status_code == 200, r.text
    return r.json()


def timestamps(n, topic, partition=0):
    """offset -> record timestamp_ms of a whole partition (through consume)."""
    out = {}
    off = 0
    while True:
        r = n.get("/broker/consume/%s/nogroup/%d" % (topic, partition),
                  params={"offset": off, "limit": 1000, "encoding": "b64"})
        assert r.status_code == 200, r.text
        body = r.json()
        for m in body["messages"]:
            out[m["offset"]] = m["timestamp_ms"]
        if not body["messages"]:
            return out
        off = body["next_offset"]


def query(n, req, status=200):
    r = n.post("/broker/query", json=req)
    assert r.status_code == status, (r.status_code, r.text, req)
    return r.json()


def join(n, req, status=200):
    r = n.post("/broker/join", json=req)
    assert r.status_code == status, (r.status_code, r.text, req)
    return r.json()


def wait_clock_after(ts_ms):
    """Wait until the wall clock is past ts_ms (so the next append gets a later timestamp).
    A condition, not a fixed sleep: it returns as soon as the millisecond has turned."""
    deadline = time.monotonic() + 5
    while time.time() * 1000 <= ts_ms + 1:
        assert time.monotonic() < deadline
        time.sleep(0.001)
