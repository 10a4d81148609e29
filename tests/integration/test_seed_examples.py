"""The seed README's curl examples, run verbatim (the same curl command lines, only the host
`localhost:1109` replaced by the test node's address), plus the request shapes of its
"API Reference" section, each checked for the documented response fields."""
import base64
import json
import shutil
import subprocess

import pytest

from conftest import AUTH

CURL = shutil.which("curl")

pytestmark = pytest.mark.skipif(CURL is None, reason="curl not installed")


def run_curl(node, cmdline):
    """Run a README curl command line through bash; return (status, body bytes)."""
    cmd = cmdline.replace("localhost:1109", "127.0.0.1:%d" % node.port)
    cmd = cmd.replace("curl ", "curl -sS -w '\\n%{http_code}' ", 1)
    p = subprocess.run(["bash", "-c", cmd], capture_output=True, timeout=60)
    assert p.returncode == 0, p.stderr
    body, _, status = p.stdout.rpartition(b"\n")
    return int(status), body


def run_json(node, cmdline, status=200):
    st, body = run_curl(node, cmdline)
    assert st == status, (cmdline, st, body)
    return json.loads(body)


# --- commands copied from the seed README --------------------------------------------------

HEADER_PRODUCE = """curl -X POST 'localhost:1109/broker/topics/orders/produce?partition=0' \\
  -H 'Authorization: Bearer dev' \\
  -d '{"item":"widget"}'"""

HEADER_CONSUME = """curl 'localhost:1109/broker/consume/orders/mygroup/0?encoding=b64' \\
  -H 'Authorization: Bearer dev'"""

QS_CREATE = """curl -X POST localhost:1109/broker/topics \\
  -H 'Authorization: Bearer dev' \\
  -H 'Content-Type: application/json' \\
  -d '{"name":"events","partitions":4}'"""

QS_PRODUCE = """curl -X POST 'localhost:1109/broker/topics/events/produce?partition=0' \\
  -H 'Authorization: Bearer dev' \\
  -d 'hello world'"""

UE_CREATE = """curl -X POST localhost:1109/broker/topics \\
  -H 'Authorization: Bearer dev' \\
  -H 'Content-Type: application/json' \\
  -d '{"name":"events","partitions":8}'"""

UE_PRODUCE = QS_PRODUCE

UE_CONSUME = """curl 'localhost:1109/broker/consume/events/mygroup/0?limit=10&encoding=b64' \\
  -H 'Authorization: Bearer dev'"""

UE_COMMIT = """curl -X POST localhost:1109/broker/commit \\
  -H 'Authorization: Bearer dev' \\
  -H 'Content-Type: application/json' \\
  -d '{"topic":"events","group":"mygroup","partition":0,"offset":10}'"""

HA_PRODUCE = """curl -X POST 'localhost:1109/broker/topics/test/produce?partition=0' \\
  -H 'Authorization: Bearer dev' -d '%s'"""

HA_CONSUME = """curl 'localhost:1109/broker/consume/test/g1/0?offset=0&limit=10' \\
  -H 'Authorization: Bearer dev'"""

PRODUCE_FIELDS = {"ok", "offset", "partition", "batch_id", "sealed", "durable", "mode", "synced"}


def check_produce(body, offset, partition=0):
    assert PRODUCE_FIELDS <= set(body), body
    assert body["ok"] is True
    assert body["offset"] == offset and body["partition"] == partition
    assert body["sealed"] is True and body["durable"] is True and body["synced"] is True
    assert body["mode"] == "sealed"
    assert isinstance(body["batch_id"], int) and body["batch_id"] > 0


def test_readme_header_example(node):
    check_produce(run_json(node, HEADER_PRODUCE), 0)
    got = run_json(node, HEADER_CONSUME)
    assert got["count"] == 1
    msg = got["messages"][0]
    assert msg["offset"] == 0 and msg["partition"] == 0
    assert base64.b64decode(msg["value_b64"]) == b'{"item":"widget"}'
    assert got["next_offset"] == 1
    assert got["committed_offset"] is None
    assert got["truncated"] is False


def test_quick_start(node):
    body = run_json(node, QS_CREATE)
    assert body["ok"] is True and body["topic"] == "events" and body["partitions"] == 4
    check_produce(run_json(node, QS_PRODUCE), 0)
    got = node.get("/broker/consume/events/x/0?offset=0").json()
    assert got["messages"][0]["value"] == "hello world"


def test_usage_examples(node):
    body = run_json(node, UE_CREATE)
    assert body["ok"] is True and body["topic"] == "events" and body["partitions"] == 8
    # the produce example, run ten times so that the commit example's offset 10 is in range
    for i in range(10):
        check_produce(run_json(node, UE_PRODUCE), i)
    got = run_json(node, UE_CONSUME)
    assert got["count"] == 10 and len(got["messages"]) == 10
    assert [m["offset"] for m in got["messages"]] == list(range(10))
    assert all(base64.b64decode(m["value_b64"]) == b"hello world" for m in got["messages"])
    assert got["next_offset"] == 10
    assert got["truncated"] is False
    body = run_json(node, UE_COMMIT)
    assert body == {"ok": True}
    # resumes from the commit when no offset is given
    again = run_json(node, UE_CONSUME)
    assert again["count"] == 0 and again["committed_offset"] == 10 and again["next_offset"] == 10


def test_usage_commit_verbatim_after_one_message(node):
    # The README's sequence run literally: one message, then a commit of offset 10. As in Kafka, a
    # committed offset is the group's bookmark and may lie beyond the log end.
    run_json(node, UE_CREATE)
    run_json(node, UE_PRODUCE)
    assert run_json(node, UE_COMMIT) == {"ok": True}
    again = run_json(node, UE_CONSUME)
    assert again["count"] == 0 and again["committed_offset"] == 10 and again["next_offset"] == 10


def test_ha_example_single_node(node):
    for i in range(3):
        check_produce(run_json(node, HA_PRODUCE % ("msg-%d" % i)), i)
    got = run_json(node, HA_CONSUME)
    assert [m["offset"] for m in got["messages"]] == [0, 1, 2]
    assert [m["value"] for m in got["messages"]] == ["msg-0", "msg-1", "msg-2"]


# --- API Reference section -----------------------------------------------------------------

def test_api_reference_health_and_metrics(node):
    assert run_json(node, "curl localhost:1109/health") == {"ok": True}
    assert run_json(node, "curl localhost:1109/ready") == {"ready": True}
    st, body = run_curl(node, "curl localhost:1109/metrics")
    assert st == 200 and b"# TYPE" in body
    st, body = run_curl(node, "curl localhost:1109/metrics_ha")
    assert st == 200 and b"# TYPE" in body


def test_api_reference_topics_and_produce(node):
    r = node.post("/broker/topics", data=b'{"name":"events","partitions":8}')
    assert r.status_code == 200
    body = r.json()
    assert body["ok"] is True and body["topic"] == "events" and body["partitions"] == 8
    r = node.post("/broker/topics/events/produce?partition=0&key=user%2F1&timing=1", data=b"v")
    assert r.status_code == 200
    check_produce(r.json(), 0)
    for k in ("parse_us", "queue_us", "server_us", "sync_wait_us"):
        assert k in r.json()
    # idempotency_key duplicate detection
    r1 = node.post("/broker/topics/events/produce?idempotency_key=abc%20def", data=b"x").json()
    r2 = node.post("/broker/topics/events/produce?idempotency_key=abc%20def", data=b"x").json()
    assert {"ok", "offset", "partition", "sealed", "synced", "duplicate"} <= set(r2)
    assert r2["ok"] is True and r2["duplicate"] is True and r2["synced"] is None
    assert r2["sealed"] is True
    assert (r2["offset"], r2["partition"]) == (r1["offset"], r1["partition"])
    # timeout_ms
    r = node.post("/broker/topics/events/produce?partition=1&timeout_ms=10000", data=b"x")
    assert r.status_code == 200 and r.json()["partition"] == 1


def test_api_reference_ndjson(node):
    r = node.post("/broker/topics/events/produce-ndjson?partition=0",
                  data=b'{"a":1}\n{"a":2}\n{"a":3}\n')
    assert r.status_code == 200
    body = r.json()
    for k in ("ok", "first_offset", "count", "partition", "batch_id", "sealed", "durable",
              "mode", "synced"):
        assert k in body, (k, body)
    assert body["first_offset"] == 0 and body["count"] == 3 and body["partition"] == 0


def test_api_reference_consume_and_commit(node):
    node.post("/broker/topics", json={"name": "events", "partitions": 8})
    r = node.post("/broker/topics/events/produce-ndjson?partition=0&key=key",
                  data=b"".join(b"hello\n" for _ in range(200)))
    assert r.status_code == 200
    got = node.get("/broker/consume/events/g1/0?offset=0&limit=1&encoding=b64").json()
    assert set(got) >= {"messages", "count", "next_offset", "committed_offset", "truncated"}
    m = got["messages"][0]
    assert m["offset"] == 0 and m["partition"] == 0
    assert m["value_b64"] == "aGVsbG8=" and m["key_b64"] == "a2V5"
    assert got["count"] == 1 and got["next_offset"] == 1
    r = node.post("/broker/commit", data=b'{"topic":"events","group":"g1","partition":0,'
                                         b'"offset":124}')
    assert r.status_code == 200 and r.json() == {"ok": True}
    got = node.get("/broker/consume/events/g1/0?limit=1").json()
    assert got["committed_offset"] == 124 and got["messages"][0]["offset"] == 124
    # backward commits are ignored
    r = node.post("/broker/commit", data=b'{"topic":"events","group":"g1","partition":0,'
                                         b'"offset":100}')
    assert r.status_code == 200 and r.json()["ok"] is True and r.json().get("ignored") is True


def test_api_reference_retention(node):
    node.post("/broker/topics", json={"name": "events", "partitions": 8})
    node.post("/broker/topics/events/produce-ndjson?partition=0", data=b"x\n" * 10)
    r = node.post("/broker/delete-before",
                  data=b'{"topic":"events","partition":0,"before_offset":100000}')
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"ok", "deleted_count", "freed_bytes"}
    assert body["ok"] is True
    assert isinstance(body["deleted_count"], int) and isinstance(body["freed_bytes"], int)
    r = node.post("/broker/retention", data=b'{"topic":"events","partition":0,"ttl_ms":60000,'
                                            b'"max_bytes":104857600}')
    assert r.status_code == 200 and r.json()["ok"] is True
    r = node.post("/broker/retention", data=b'{"topic":"*","ttl_ms":300000}')
    assert r.status_code == 200 and r.json()["ok"] is True


def test_api_reference_kv(node):
    r = node.post("/kv/app/config?ttl_ms=60000", data=b"v1")
    assert r.status_code == 200
    put = r.json()
    assert set(put) >= {"ok", "cas", "sealed", "durable", "mode", "synced", "batch_id"}
    assert put["ok"] is True and put["durable"] is True and put["cas"] >= 1
    got = node.get("/kv/app/config").json()
    assert set(got) >= {"value", "cas"}
    assert base64.b64decode(got["value"]) == b"v1" and got["cas"] == put["cas"]
    meta = node.get("/kv/app/config/meta").json()
    assert set(meta) >= {"cas", "ttl_ms"}
    assert meta["cas"] == put["cas"] and 0 < meta["ttl_ms"] <= 60000
    r = node.post("/kv/app/config?cas=%d" % put["cas"], data=b"v2")
    assert r.status_code == 200 and r.json()["cas"] > put["cas"]
    cas = r.json()["cas"]
    r = node.delete("/kv/app/config?cas=%d" % cas)
    assert r.status_code == 200
    d = r.json()
    assert set(d) >= {"ok", "deleted", "sealed", "durable", "mode", "synced", "batch_id"}
    assert d["ok"] is True and d["deleted"] is True
    assert node.get("/kv/app/config").status_code == 404


def test_error_format(node):
    r = node.get("/broker/consume/missing/g/0", headers=AUTH)
    assert r.status_code == 404
    body = r.json()
    assert body["ok"] is False
    assert isinstance(body["error"], str) and isinstance(body["message"], str)
