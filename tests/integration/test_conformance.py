"""Conformance fixes of issue #12: pipelined requests take effect in the order sent, a request line
without a target is a 400, and every produce that is not a duplicate says "duplicate":false.

Pipelining is tested on raw sockets: every request of a test is written in one sendall() before
any response is read, so the server sees them pipelined on one keep-alive connection."""
import re
import time

import requests

from conftest import AUTH
from test_http import Reader, connect, error_of, raw, req_bytes


def pipeline(node, reqs, timeout=30):
    """Send every request in one write on one connection; return the responses in order."""
    s = connect(node, timeout=timeout)
    try:
        s.sendall(b"".join(reqs))
        rd = Reader(s)
        return [rd.read_response() for _ in reqs]
    finally:
        s.close()


def create_topic(node, name, partitions=1):
    r = requests.post(node.url + "/broker/topics", headers=AUTH,
                      json={"name": name, "partitions": partitions}, timeout=10)
    assert r.status_code == 200, r.text


def fsyncs(node):
    text = requests.get(node.url + "/metrics", timeout=10).text
    return int(float(re.search(r"^ayder_journal_fsyncs_total (\S+)$", text, re.M).group(1)))


# ----------------------------------------------------------------------------------------------
# 1. order of effect on one connection

def test_pipelined_produce_then_consume_sees_the_record(node):
    create_topic(node, "pipe1")
    produce, consume = pipeline(node, [
        req_bytes("POST", "/broker/topics/pipe1/produce?partition=0", body=b"first"),
        req_bytes("GET", "/broker/consume/pipe1/g/0?offset=0"),
    ])
    assert produce.status == 200 and produce.json()["offset"] == 0, produce.body
    assert consume.status == 200, consume.body
    assert [m["value"] for m in consume.json()["messages"]] == ["first"], consume.body


def test_pipelined_produce_produce_consume(node):
    create_topic(node, "pipe2")
    p1, p2, consume = pipeline(node, [
        req_bytes("POST", "/broker/topics/pipe2/produce?partition=0", body=b"a"),
        req_bytes("POST", "/broker/topics/pipe2/produce?partition=0", body=b"b"),
        req_bytes("GET", "/broker/consume/pipe2/g/0?offset=0"),
    ])
    assert (p1.json()["offset"], p2.json()["offset"]) == (0, 1)
    assert [m["value"] for m in consume.json()["messages"]] == ["a", "b"], consume.body


def test_pipelined_produce_to_new_topic_then_consume(node):
    # the produce auto-creates the topic: the consume must not answer 404 before it exists
    produce, consume = pipeline(node, [
        req_bytes("POST", "/broker/topics/pipe3/produce?partition=0", body=b"x"),
        req_bytes("GET", "/broker/consume/pipe3/g/0?offset=0"),
    ])
    assert produce.status == 200, produce.body
    assert consume.status == 200, consume.body
    assert [m["value"] for m in consume.json()["messages"]] == ["x"]


def test_pipelined_rocket_produce_then_consume(node):
    # a rocket produce is answered before it is applied; a later request on the same
    # connection still sees it
    create_topic(node, "pipe4")
    produce, consume = pipeline(node, [
        req_bytes("POST", "/broker/topics/pipe4/produce?partition=0&mode=rocket", body=b"r"),
        req_bytes("GET", "/broker/consume/pipe4/g/0?offset=0"),
    ])
    assert produce.json()["mode"] == "rocket", produce.body
    assert [m["value"] for m in consume.json()["messages"]] == ["r"], consume.body


def test_pipelined_kv_put_then_get(node):
    put, get, put2, meta = pipeline(node, [
        req_bytes("PUT", "/kv/ns/k1", body=b"v1"),
        req_bytes("GET", "/kv/ns/k1"),
        req_bytes("POST", "/kv/ns/k1?cas=1", body=b"v2"),
        req_bytes("GET", "/kv/ns/k1/meta"),
    ])
    assert put.status == 200 and put.json()["cas"] == 1, put.body
    assert get.status == 200, get.body
    assert get.json()["value"] == "djE=", get.body  # base64("v1")
    assert put2.status == 200 and put2.json()["cas"] == 2, put2.body
    assert meta.json()["cas"] == 2, meta.body


def test_pipelined_commit_then_group_read(node):
    create_topic(node, "pipe5")
    commit, group = pipeline(node, [
        req_bytes("POST", "/broker/commit",
                  body=b'{"topic":"pipe5","group":"g","partition":0,"offset":7}'),
        req_bytes("GET", "/broker/groups/g/pipe5"),
    ])
    assert commit.status == 200, commit.body
    assert group.json()["partitions"][0]["committed_offset"] == 7, group.body


def test_pipelined_writes_stay_pipelined(node):
    # A run of writes on one connection is not serialised: they are in flight together, so the
    # journal's group commit covers many of them with one fsync.
    create_topic(node, "pipe6")
    n = 200
    before = fsyncs(node)
    resps = pipeline(node, [req_bytes("POST", "/broker/topics/pipe6/produce?partition=0",
                                      body=b"m%d" % i) for i in range(n)])
    assert [r.json()["offset"] for r in resps] == list(range(n))
    used = fsyncs(node) - before
    assert used < n // 2, "%d fsyncs for %d pipelined produces: writes were serialised" % (used, n)


def test_pipelined_request_after_long_poll_waits_for_it(node):
    # Order of effect holds for a long-poll too (like a blocking command in a Redis pipeline):
    # the produce sent after it takes effect after it, so the poll times out empty.
    create_topic(node, "pipe7")
    t0 = time.monotonic()
    poll, produce = pipeline(node, [
        req_bytes("GET", "/broker/consume/pipe7/g/0?offset=0&wait_ms=300"),
        req_bytes("POST", "/broker/topics/pipe7/produce?partition=0", body=b"late"),
    ])
    assert poll.json()["count"] == 0, poll.body
    # the poll ran its whole wait (libuv timers count from the loop's cached time, which can be a
    # little older than the request's arrival: allow 10 % early)
    assert time.monotonic() - t0 >= 0.27
    assert produce.json()["offset"] == 0, produce.body


# ----------------------------------------------------------------------------------------------
# 2. a request line without a target

def test_request_line_without_target_400(node):
    for line in (b"GET HTTP/1.1\r\nHost: x\r\n\r\n", b"POST HTTP/1.0\r\n\r\n"):
        r = raw(node, line)
        assert r.status == 400, (line, r.status, r.body)
        assert error_of(r) == "bad_request"


# ----------------------------------------------------------------------------------------------
# 3. "duplicate":false on fresh produces

def test_duplicate_false_on_fresh_single_produce(node):
    for q in ("", "?idempotency_key=k1", "?mode=rocket"):
        r = node.post("/broker/topics/dup/produce" + q, data=b"v")
        assert r.status_code == 200, r.text
        assert r.json()["duplicate"] is False, (q, r.text)
    again = node.post("/broker/topics/dup/produce?idempotency_key=k1", data=b"v")
    assert again.json()["duplicate"] is True, again.text


def test_duplicate_false_on_fresh_ndjson_produce(node):
    for q in ("", "?idempotency_key=n1"):
        r = node.post("/broker/topics/dupn/produce-ndjson" + q, data=b"a\nb\n")
        assert r.status_code == 200, r.text
        assert r.json()["duplicate"] is False, (q, r.text)
        assert r.json()["count"] == 2
    again = node.post("/broker/topics/dupn/produce-ndjson?idempotency_key=n1", data=b"a\nb\n")
    assert again.json()["duplicate"] is True, again.text
