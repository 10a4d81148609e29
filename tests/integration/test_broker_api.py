"""Black-box tests of the broker API (issue 4): topics, produce (partitioning, binary payloads,
NDJSON, idempotency, concurrency), consume (validation, paging, long-poll), commits and groups,
delete-before and retention, rocket mode and timing. The contract is docs/HTTP_API.md."""
import base64
import json
import os
import socket
import threading
import time

import pytest
import requests

from conftest import AUTH, assert_error





def create(node, name, partitions):
    r = node.post("/broker/topics", json={"name": name, "partitions": partitions})
    assert r.status_code == 200, r.text
    return r.json()


def produce(node, topic, value, **params):
    q = "&".join("%s=%s" % (k, requests.utils.quote(str(v), safe="")) for k, v in params.items())
    r = node.post("/broker/topics/%s/produce%s" % (topic, ("?" + q) if q else ""), data=value)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["ok"] is True
    return body


def consume(node, topic, part, group="g", **params):
    q = "&".join("%s=%s" % kv for kv in params.items())
    r = node.get("/broker/consume/%s/%s/%d%s" % (topic, group, part, ("?" + q) if q else ""))
    assert r.status_code == 200, r.text
    return r.json()


def topic_info(node, topic):
    r = node.get("/broker/topics/" + topic)
    assert r.status_code == 200, r.text
    return {p["partition"]: p for p in r.json()["partitions"]}


def raw_request(node, data, timeout=10):
    s = socket.create_connection(("127.0.0.1", node.port), timeout=timeout)
    try:
        s.sendall(data)
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
        head, _, rest = buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        length = 0
        for line in lines[1:]:
            k, _, v = line.partition(":")
            if k.strip().lower() == "content-length":
                length = int(v.strip())
        while len(rest) < length:
            chunk = s.recv(65536)
            if not chunk:
                break
            rest += chunk
        return status, json.loads(rest[:length] or b"null")
    finally:
        s.close()


# ----------------------------------------------------------------------------------------------
# Kafka's murmur2 partitioner

def murmur2(data):
    m, r = 0x5BD1E995, 24
    length = len(data)
    h = (0x9747B28C ^ length) & 0xFFFFFFFF
    for i in range(length // 4):
        k = data[4 * i] | (data[4 * i + 1] << 8) | (data[4 * i + 2] << 16) | (data[4 * i + 3] << 24)
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> r
        k = (k * m) & 0xFFFFFFFF
        h = (h * m) & 0xFFFFFFFF
        h ^= k
    tail = length & ~3
    rem = length % 4
    if rem == 3:
        h ^= data[tail + 2] << 16
    if rem >= 2:
        h ^= data[tail + 1] << 8
    if rem >= 1:
        h ^= data[tail]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h


def to_signed(h):
    return h - (1 << 32) if h & 0x80000000 else h


def kafka_partition(key, partitions):
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def test_murmur2_reference_vectors():
    # values from Kafka's UtilsTest (signed Java ints)
    assert to_signed(murmur2(b"21")) == -973932308
    assert to_signed(murmur2(b"foobar")) == -790332482
    assert to_signed(murmur2(b"a-little-bit-long-string")) == -985981536
    assert to_signed(murmur2(b"a-little-bit-longer-string")) == -1486304829
    assert to_signed(murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8")) == -58897971
    assert to_signed(murmur2(b"abc")) == 479470107


# ----------------------------------------------------------------------------------------------
# topics

def test_topic_create_idempotent_and_conflict(node):
    body = create(node, "events", 4)
    assert body["topic"] == "events" and body["partitions"] == 4
    assert body.get("created", True) is True
    r = node.post("/broker/topics", json={"name": "events", "partitions": 4})
    assert r.status_code == 200
    assert r.json()["created"] is False
    assert r.json()["partitions"] == 4
    r = node.post("/broker/topics", json={"name": "events", "partitions": 5})
    assert_error(r, 409, "conflict")
    assert len(topic_info(node, "events")) == 4


def test_topic_create_default_partitions(node):
    r = node.post("/broker/topics", json={"name": "dflt"})
    assert r.status_code == 200
    assert r.json()["partitions"] == 8


def test_topic_list_and_get(node):
    create(node, "t1", 2)
    create(node, "t2", 3)
    listing = node.get("/broker/topics").json()
    assert listing["ok"] is True
    names = {t["name"]: t["partitions"] for t in listing["topics"]}
    assert names == {"t1": 2, "t2": 3}
    for i in range(10):
        produce(node, "t1", b"x" * 10, partition=1)
    info = topic_info(node, "t1")
    assert set(info) == {0, 1}
    assert info[0]["earliest_offset"] == 0 and info[0]["latest_offset"] == 0
    assert info[0]["records"] == 0
    assert info[1]["earliest_offset"] == 0 and info[1]["latest_offset"] == 10
    assert info[1]["records"] == 10
    assert info[1]["bytes"] >= 100
    assert_error(node.get("/broker/topics/nope"), 404)


def test_topic_delete(node):
    create(node, "gone", 2)
    produce(node, "gone", b"a", partition=0)
    produce(node, "gone", b"b", partition=0)
    assert node.post("/broker/commit", json={"topic": "gone", "group": "g", "partition": 0,
                                             "offset": 2}).status_code == 200
    r = node.delete("/broker/topics/gone")
    assert r.status_code == 200
    assert r.json() == {"ok": True, "deleted": True}
    assert_error(node.get("/broker/consume/gone/g/0"), 404, "unknown_topic")
    assert "gone" not in [t["name"] for t in node.get("/broker/topics").json()["topics"]]
    # produce auto-creates a brand-new empty topic
    body = produce(node, "gone", b"c", partition=0)
    assert body["offset"] == 0
    info = topic_info(node, "gone")
    assert len(info) == 8
    got = consume(node, "gone", 0, offset=0)
    assert [m["value"] for m in got["messages"]] == ["c"]
    # the committed offset went with the old topic
    assert got["committed_offset"] is None
    assert_error(node.delete("/broker/topics/never-existed"), 404)


@pytest.mark.parametrize("name", ["..", ".", "a/b", "x" * 250, "", "sp ace", "ü"])
def test_invalid_topic_name_create(node, name):
    r = node.post("/broker/topics", json={"name": name, "partitions": 1})
    assert_error(r, 400, "invalid_name")


def test_topic_name_249_ok(node):
    create(node, "y" * 249, 1)


@pytest.mark.parametrize("path", [
    "/broker/topics/a%2Fb/produce",
    "/broker/topics/%2E%2E/produce",
    "/broker/topics/..%2F..%2Fetc/produce",
    "/broker/topics/" + "x" * 250 + "/produce",
])
def test_invalid_topic_name_in_path(node, path):
    data = ("POST %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer dev\r\n"
            "Content-Length: 1\r\n\r\nx" % path).encode()
    status, body = raw_request(node, data)
    assert status == 400, (status, body)
    assert body["error"] == "invalid_name", body
    assert node.get("/broker/topics").json()["topics"] == []


@pytest.mark.parametrize("parts", [0, 1025, -1, "4", 2.5])
def test_invalid_partition_count(node, parts):
    r = node.post("/broker/topics", json={"name": "p", "partitions": parts})
    assert_error(r, 400)
    assert node.get("/broker/topics").json()["topics"] == []


def test_partition_count_1024_ok(node):
    assert create(node, "big", 1024)["partitions"] == 1024


# ----------------------------------------------------------------------------------------------
# produce

def test_keyed_produce_uses_murmur2(node):
    create(node, "keyed", 8)
    create(node, "keyed3", 3)
    for i in range(50):
        key = "user-%d" % (i * 7919)
        for topic, n in (("keyed", 8), ("keyed3", 3)):
            body = produce(node, topic, b"v%d" % i, key=key)
            assert body["partition"] == kafka_partition(key.encode(), n), (key, body)


def test_keyed_produce_utf8_key(node):
    create(node, "ukey", 16)
    key = "clé-ключ"
    r = node.post("/broker/topics/ukey/produce?key=" + requests.utils.quote(key), data=b"x")
    assert r.status_code == 200
    part = r.json()["partition"]
    assert part == kafka_partition(key.encode("utf-8"), 16)
    got = consume(node, "ukey", part, offset=r.json()["offset"], limit=1)
    assert got["messages"][0]["key"] == key


def test_keyless_round_robin(node):
    create(node, "rr", 4)
    parts = [produce(node, "rr", b"m%d" % i)["partition"] for i in range(12)]
    for i in range(0, 12, 4):
        assert sorted(parts[i:i + 4]) == [0, 1, 2, 3], parts
    info = topic_info(node, "rr")
    assert [info[p]["records"] for p in range(4)] == [3, 3, 3, 3]


def test_response_names_real_partition(node):
    create(node, "real", 5)
    for i in range(10):
        body = produce(node, "real", b"val-%d" % i, key="k%d" % i)
        got = consume(node, "real", body["partition"], offset=body["offset"], limit=1)
        assert got["messages"][0]["value"] == "val-%d" % i
        assert got["messages"][0]["partition"] == body["partition"]


def test_produce_partition_out_of_range(node):
    create(node, "two", 2)
    r = node.post("/broker/topics/two/produce?partition=2", data=b"x")
    assert_error(r, 400, "invalid_partition")
    r = node.post("/broker/topics/two/produce?partition=5000", data=b"x")
    assert_error(r, 400)
    r = node.post("/broker/topics/two/produce?partition=-1", data=b"x")
    assert_error(r, 400)
    info = topic_info(node, "two")
    assert info[0]["records"] == 0 and info[1]["records"] == 0


def test_produce_response_fields(node):
    body = produce(node, "fields", b"hello", partition=0)
    assert body["offset"] == 0 and body["partition"] == 0
    assert body["sealed"] is True and body["durable"] is True and body["synced"] is True
    assert body["mode"] == "sealed"
    assert isinstance(body["batch_id"], int) and body["batch_id"] > 0
    assert isinstance(body["timestamp_ms"], int)
    assert abs(body["timestamp_ms"] - time.time() * 1000) < 600_000
    b2 = produce(node, "fields", b"again", partition=0)
    assert b2["offset"] == 1 and b2["batch_id"] > body["batch_id"]


def test_binary_payload_roundtrip_b64(node):
    create(node, "bin", 1)
    payload = bytes(range(256)) * 3
    body = produce(node, "bin", payload, partition=0)
    got = consume(node, "bin", 0, offset=body["offset"], encoding="b64")
    assert got["count"] == 1
    msg = got["messages"][0]
    assert base64.b64decode(msg["value_b64"]) == payload
    assert "value" not in msg


def test_non_utf8_value_in_text_mode(node):
    create(node, "nonutf", 1)
    produce(node, "nonutf", b"plain text", partition=0)
    bad = b"\xff\xfe\x00bad\xc3"
    produce(node, "nonutf", bad, partition=0)
    r = node.get("/broker/consume/nonutf/g/0?offset=0")
    assert r.status_code == 200
    got = json.loads(r.content.decode("utf-8"))  # strictly valid UTF-8 JSON
    assert got["messages"][0]["value"] == "plain text"
    assert "value_b64" not in got["messages"][0]
    assert base64.b64decode(got["messages"][1]["value_b64"]) == bad
    assert "value" not in got["messages"][1]


def test_empty_message_allowed(node):
    body = produce(node, "empty", b"", partition=0)
    got = consume(node, "empty", 0, offset=body["offset"])
    assert got["messages"][0]["value"] == ""


def test_record_headers(node):
    r = node.post("/broker/topics/hdr/produce?partition=0", data=b"x",
                  headers=dict(AUTH, **{"X-Ayder-Header-Trace-Id": "abc123"}))
    assert r.status_code == 200
    got = consume(node, "hdr", 0, offset=0)
    assert got["messages"][0]["headers"] == {"trace-id": "abc123"}


def test_unknown_topic_consume_404(node):
    assert_error(node.get("/broker/consume/nosuch/g/0"), 404, "unknown_topic")


# ----------------------------------------------------------------------------------------------
# NDJSON

def test_ndjson_batch(node):
    create(node, "nd", 1)
    produce(node, "nd", b"before", partition=0)
    body = b'first\n\n"abc"\r\n{"a":1}\r\n\n"with \\"quote\\""\nlast'
    r = node.post("/broker/topics/nd/produce-ndjson?partition=0", data=body)
    assert r.status_code == 200, r.text
    res = r.json()
    assert res["ok"] is True and res["first_offset"] == 1 and res["count"] == 5
    assert res["partition"] == 0 and res["batch_id"] > 0
    got = consume(node, "nd", 0, offset=1)
    assert [m["offset"] for m in got["messages"]] == [1, 2, 3, 4, 5]
    assert [m["value"] for m in got["messages"]] == ["first", "abc", '{"a":1}', 'with "quote"',
                                                      "last"]


def test_ndjson_empty_400(node):
    create(node, "nde", 1)
    r = node.post("/broker/topics/nde/produce-ndjson?partition=0", data=b"\n\r\n\n")
    assert_error(r, 400)
    assert topic_info(node, "nde")[0]["latest_offset"] == 0


def test_ndjson_too_many_lines_413_nothing_written(node):
    create(node, "ndbig", 1)
    produce(node, "ndbig", b"seed", partition=0)
    body = b"x\n" * 100001
    r = node.post("/broker/topics/ndbig/produce-ndjson?partition=0", data=body)
    assert_error(r, 413, "payload_too_large")
    assert topic_info(node, "ndbig")[0]["latest_offset"] == 1
    # exactly 100000 lines is fine
    r = node.post("/broker/topics/ndbig/produce-ndjson?partition=0", data=b"y\n" * 100000)
    assert r.status_code == 200, r.text
    assert r.json()["count"] == 100000 and r.json()["first_offset"] == 1
    assert topic_info(node, "ndbig")[0]["latest_offset"] == 100001


# ----------------------------------------------------------------------------------------------
# consume

@pytest.mark.parametrize("query", ["limit=0", "limit=1001", "limit=-1", "limit=abc",
                                   "offset=abc", "offset=-1", "offset=1x", "offset=",
                                   "wait_ms=30001", "wait_ms=x", "encoding=hex"])
def test_consume_bad_params(node, query):
    create(node, "cp", 1)
    assert_error(node.get("/broker/consume/cp/g/0?" + query), 400)


def test_consume_bad_partition(node):
    create(node, "cbp", 2)
    assert_error(node.get("/broker/consume/cbp/g/2"), 400, "invalid_partition")
    assert_error(node.get("/broker/consume/cbp/g/x"), 400, "invalid_partition")


def test_consume_limit_bounds_ok(node):
    create(node, "lb", 1)
    node.post("/broker/topics/lb/produce-ndjson?partition=0",
              data=b"".join(b"%d\n" % i for i in range(1500)))
    assert consume(node, "lb", 0, offset=0, limit=1)["count"] == 1
    assert consume(node, "lb", 0, offset=0, limit=1000)["count"] == 1000
    assert consume(node, "lb", 0, offset=0)["count"] == 100


def test_chained_reads_see_every_record_once(node):
    create(node, "chain", 1)
    n = 1234
    r = node.post("/broker/topics/chain/produce-ndjson?partition=0",
                  data=b"".join(b"rec-%d\n" % i for i in range(n)))
    assert r.status_code == 200
    seen = []
    off = 0
    for _ in range(100):
        got = consume(node, "chain", 0, offset=off, limit=97)
        if got["count"] == 0:
            assert got["next_offset"] == off
            break
        assert got["count"] == len(got["messages"])
        seen += [m["value"] for m in got["messages"]]
        assert [m["offset"] for m in got["messages"]] == list(range(off, off + got["count"]))
        assert got["next_offset"] == off + got["count"]
        off = got["next_offset"]
    assert seen == ["rec-%d" % i for i in range(n)]


def test_consume_past_end(node):
    create(node, "end", 1)
    produce(node, "end", b"a", partition=0)
    got = consume(node, "end", 0, offset=5)
    assert got["count"] == 0 and got["messages"] == [] and got["next_offset"] == 5


def test_commit_resume_semantics(node):
    create(node, "cm", 1)
    for i in range(10):
        produce(node, "cm", b"m%d" % i, partition=0)
    got = consume(node, "cm", 0, group="grp", limit=4)
    assert got["committed_offset"] is None
    assert [m["offset"] for m in got["messages"]] == [0, 1, 2, 3]
    r = node.post("/broker/commit", json={"topic": "cm", "group": "grp", "partition": 0,
                                          "offset": got["next_offset"]})
    assert r.status_code == 200 and r.json() == {"ok": True}
    got2 = consume(node, "cm", 0, group="grp", limit=4)
    assert [m["offset"] for m in got2["messages"]] == [4, 5, 6, 7]
    assert got2["committed_offset"] == 4
    # another group is unaffected
    assert consume(node, "cm", 0, group="other", limit=1)["messages"][0]["offset"] == 0
    # backward commit is ignored
    r = node.post("/broker/commit", json={"topic": "cm", "group": "grp", "partition": 0,
                                          "offset": 2})
    assert r.status_code == 200
    assert r.json() == {"ok": True, "ignored": True, "committed_offset": 4}
    assert consume(node, "cm", 0, group="grp", limit=1)["messages"][0]["offset"] == 4
    # commit exactly at the end is fine, then there is nothing more to read
    r = node.post("/broker/commit", json={"topic": "cm", "group": "grp", "partition": 0,
                                          "offset": 10})
    assert r.status_code == 200
    got3 = consume(node, "cm", 0, group="grp")
    assert got3["count"] == 0 and got3["next_offset"] == 10
    # like Kafka, a commit beyond the log end is stored as given (a bookmark)
    r = node.post("/broker/commit", json={"topic": "cm", "group": "grp", "partition": 0,
                                          "offset": 15})
    assert r.status_code == 200 and r.json() == {"ok": True}
    got4 = consume(node, "cm", 0, group="grp")
    assert got4["count"] == 0 and got4["committed_offset"] == 15 and got4["next_offset"] == 15


def test_commit_errors(node):
    create(node, "ce", 2)
    r = node.post("/broker/commit", json={"topic": "nosuch", "group": "g", "partition": 0,
                                          "offset": 0})
    assert_error(r, 404)
    r = node.post("/broker/commit", json={"topic": "ce", "group": "g", "partition": 2,
                                          "offset": 0})
    assert_error(r, 400)
    r = node.post("/broker/commit", data=b"{not json", headers=dict(AUTH, **{
        "Content-Type": "application/json"}))
    assert_error(r, 400, "invalid_json")
    r = node.post("/broker/commit", data=b"[1,2]")
    assert_error(r, 400, "invalid_json")
    for missing in ("topic", "group", "partition", "offset"):
        body = {"topic": "ce", "group": "g", "partition": 0, "offset": 0}
        del body[missing]
        r = node.post("/broker/commit", json=body)
        assert_error(r, 400)
        assert r.json()["error"] in ("missing_fields", "bad_request", "bad_params"), r.json()
    r = node.post("/broker/commit", json={"topic": "ce", "group": "g", "partition": 0,
                                          "offset": "1"})
    assert_error(r, 400)
    r = node.post("/broker/commit", json={"topic": "ce", "group": "bad/group", "partition": 0,
                                          "offset": 0})
    assert_error(r, 400, "invalid_name")


def test_groups_endpoint(node):
    create(node, "ga", 2)
    create(node, "gb", 1)
    for i in range(10):
        produce(node, "ga", b"x", partition=0)
    for i in range(3):
        produce(node, "ga", b"x", partition=1)
        produce(node, "gb", b"x", partition=0)
    for t, p, o in (("ga", 0, 4), ("ga", 1, 3), ("gb", 0, 1)):
        assert node.post("/broker/commit", json={"topic": t, "group": "g1", "partition": p,
                                                 "offset": o}).status_code == 200
    r = node.get("/broker/groups/g1/ga")
    assert r.status_code == 200
    body = r.json()
    assert body["ok"] is True and body["group"] == "g1" and body["topic"] == "ga"
    parts = {p["partition"]: p for p in body["partitions"]}
    assert parts[0]["committed_offset"] == 4 and parts[0]["latest_offset"] == 10
    assert parts[0]["lag"] == 6
    assert parts[1]["committed_offset"] == 3 and parts[1]["lag"] == 0
    r = node.get("/broker/groups/g1")
    assert r.status_code == 200
    text = json.dumps(r.json())
    assert "gb" in text and "ga" in text
    assert_error(node.get("/broker/groups/g1/nosuch"), 404)


# ----------------------------------------------------------------------------------------------
# idempotency

def test_idempotency_key_duplicate(node):
    create(node, "idem", 4)
    first = produce(node, "idem", b"once", idempotency_key="order-1")
    produce(node, "idem", b"other")
    dup = produce(node, "idem", b"once", idempotency_key="order-1")
    assert dup["duplicate"] is True
    assert dup["offset"] == first["offset"] and dup["partition"] == first["partition"]
    assert dup["synced"] is None and dup["sealed"] is True
    assert first["duplicate"] is False  # issue #12: present on every fresh produce
    total = sum(p["records"] for p in topic_info(node, "idem").values())
    assert total == 2
    # same key on another topic is independent
    other = produce(node, "idem2", b"once", idempotency_key="order-1")
    assert other["duplicate"] is False


def test_idempotency_survives_restart(make_node):
    n = make_node().start()
    first = produce(n, "idr", b"payload", idempotency_key="k/1 é")
    assert n.stop() == 0
    n.start()
    dup = produce(n, "idr", b"payload", idempotency_key="k/1 é")
    assert dup.get("duplicate") is True
    assert dup["offset"] == first["offset"] and dup["partition"] == first["partition"]
    assert sum(p["records"] for p in topic_info(n, "idr").values()) == 1
    n.kill()
    n.start()
    dup = produce(n, "idr", b"payload", idempotency_key="k/1 é")
    assert dup.get("duplicate") is True and dup["offset"] == first["offset"]


# ----------------------------------------------------------------------------------------------
# concurrency and long-poll

def test_concurrent_producers_contiguous_offsets(node):
    create(node, "conc", 1)
    errors = []
    offsets = []
    lock = threading.Lock()

    def worker(w):
        s = requests.Session()
        try:
            for i in range(20):
                r = s.post(node.url + "/broker/topics/conc/produce?partition=0",
                           data=b"w%d-%d" % (w, i), headers=AUTH, timeout=60)
                if r.status_code != 200:
                    errors.append(r.text)
                    continue
                with lock:
                    offsets.append(r.json()["offset"])
        except Exception as e:  # noqa: BLE001 -- reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(100)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors[:5]
    assert sorted(offsets) == list(range(2000))
    # every value stored once
    values = []
    off = 0
    while off < 2000:
        got = consume(node, "conc", 0, offset=off, limit=1000)
        values += [m["value"] for m in got["messages"]]
        off = got["next_offset"]
    assert sorted(values) == sorted("w%d-%d" % (w, i) for w in range(100) for i in range(20))


def test_long_poll_wakes_on_produce(node):
    create(node, "lp", 1)
    result = {}

    def poll():
        t0 = time.monotonic()
        r = node.get("/broker/consume/lp/g/0?offset=0&wait_ms=20000", timeout=60)
        result["elapsed"] = time.monotonic() - t0
        result["resp"] = r

    t = threading.Thread(target=poll)
    t.start()
    # produce once the poller is parked (poll the waiter gauge, with a deadline)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        m = requests.get(node.url + "/metrics", timeout=10).text
        if any(line.startswith("ayder_long_poll_waiters ") and float(line.split()[1]) >= 1
               for line in m.splitlines()):
            break
        time.sleep(0.01)
    t_prod = time.monotonic()
    produce(node, "lp", b"wake-up", partition=0)
    t.join(timeout=30)
    assert not t.is_alive()
    r = result["resp"]
    assert r.status_code == 200
    got = r.json()
    assert got["count"] == 1 and got["messages"][0]["value"] == "wake-up"
    assert time.monotonic() - t_prod < 5.0
    assert result["elapsed"] < 15.0


def test_long_poll_empty_times_out(node):
    create(node, "lpe", 1)
    t0 = time.monotonic()
    got = consume(node, "lpe", 0, offset=0, wait_ms=300)
    elapsed = time.monotonic() - t0
    assert got["count"] == 0 and got["messages"] == [] and got["next_offset"] == 0
    assert elapsed >= 0.25


def test_long_poll_with_data_returns_immediately(node):
    produce(node, "lpd", b"here", partition=0)
    got = consume(node, "lpd", 0, offset=0, wait_ms=20000)
    assert got["count"] == 1


# ----------------------------------------------------------------------------------------------
# retention

def dir_size(path):
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(root, f))
            except OSError:
                pass
    return total


def partition_files_size(path, topic):
    total = 0
    for root, _, files in os.walk(path):
        if topic in root:
            for f in files:
                total += os.path.getsize(os.path.join(root, f))
    return total


def test_delete_before(make_node, data_dir):
    n = make_node(args=["--segment-bytes", "65536"]).start()
    create(n, "ret", 1)
    value = b"r" * 1000
    batch = b"\n".join([value] * 100) + b"\n"
    for _ in range(10):  # ~1 MB
        r = n.post("/broker/topics/ret/produce-ndjson?partition=0", data=batch)
        assert r.status_code == 200
    info = topic_info(n, "ret")[0]
    assert info["latest_offset"] == 1000
    before_size = partition_files_size(data_dir, "ret")
    before_total = dir_size(data_dir)
    r = n.post("/broker/delete-before", json={"topic": "ret", "partition": 0,
                                              "before_offset": 800})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["ok"] is True
    assert body["deleted_count"] == 800
    assert body["freed_bytes"] > 0
    # whole segments below 800 are gone: most of the ~800 KB
    assert body["freed_bytes"] >= 500_000, body
    after_size = partition_files_size(data_dir, "ret")
    assert after_size < before_size, (before_size, after_size)
    assert before_size - after_size >= body["freed_bytes"] * 0.9
    assert dir_size(data_dir) < before_total
    got = consume(n, "ret", 0, offset=0, limit=10)
    assert got.get("floor_adjusted") is True
    assert got["messages"][0]["offset"] == 800
    assert got["next_offset"] == 810
    info = topic_info(n, "ret")[0]
    assert info["earliest_offset"] == 800 and info["records"] == 200
    # the floor is durable
    assert n.stop() == 0
    n.start()
    got = consume(n, "ret", 0, offset=0, limit=1)
    assert got["messages"][0]["offset"] == 800
    # deleting below the floor again removes nothing
    r = n.post("/broker/delete-before", json={"topic": "ret", "partition": 0,
                                              "before_offset": 500})
    assert r.status_code == 200 and r.json()["deleted_count"] == 0


def test_delete_before_errors(node):
    create(node, "dbe", 1)
    assert_error(node.post("/broker/delete-before", json={"topic": "dbe"}), 400)
    assert_error(node.post("/broker/delete-before", data=b"nope"), 400, "invalid_json")
    r = node.post("/broker/delete-before", json={"topic": "nosuch", "partition": 0,
                                                 "before_offset": 1})
    assert_error(r, 404)


def test_retention_policies(node):
    create(node, "events", 2)
    r = node.post("/broker/retention", json={"topic": "*", "ttl_ms": 300000})
    assert r.status_code == 200, r.text
    assert r.json()["ok"] is True and r.json()["topic"] == "*" and r.json()["ttl_ms"] == 300000
    r = node.post("/broker/retention", json={"topic": "events", "ttl_ms": 60000})
    assert r.status_code == 200 and r.json()["topic"] == "events"
    r = node.post("/broker/retention", json={"topic": "events", "partition": 0,
                                             "ttl_ms": 60000, "max_bytes": 104857600})
    assert r.status_code == 200
    assert r.json() == {"ok": True, "topic": "events", "partition": 0, "ttl_ms": 60000,
                        "max_bytes": 104857600}


@pytest.mark.parametrize("body", [
    b"not json", b"{}", b'{"topic":"events"}', b'{"topic":"events","ttl_ms":"x"}',
    b'{"topic":"events","ttl_ms":-5}', b'{"topic":"*","partition":0,"ttl_ms":5}',
    b'{"topic":"../x","ttl_ms":5}', b'{"topic":5,"ttl_ms":5}',
])
def test_retention_bad_body_400(node, body):
    create(node, "events", 1)
    assert_error(node.post("/broker/retention", data=body), 400)


# ----------------------------------------------------------------------------------------------
# modes

def test_rocket_mode(node):
    body = produce(node, "rocket", b"fast", partition=0, mode="rocket")
    assert body["durable"] is False and body["mode"] == "rocket" and body["synced"] is False
    # still ordered and readable
    produce(node, "rocket", b"fast2", partition=0, mode="rocket")
    deadline = time.monotonic() + 10
    while True:
        # a rocket write is acknowledged before it is applied: poll until it is readable
        r = node.get("/broker/consume/rocket/g/0?offset=0")
        got = r.json()
        if r.status_code == 200 and got["count"] == 2:
            break
        assert r.status_code in (200, 404), r.text
        assert time.monotonic() < deadline, got
        time.sleep(0.01)
    assert [m["value"] for m in got["messages"]] == ["fast", "fast2"]
    assert_error(node.post("/broker/topics/rocket/produce?mode=turbo", data=b"x"), 400)


def test_timing(node):
    body = produce(node, "timing", b"t", partition=0, timing=1)
    for k in ("parse_us", "queue_us", "server_us", "sync_wait_us"):
        assert isinstance(body[k], int) and body[k] >= 0, (k, body)
    plain = produce(node, "timing", b"t", partition=0)
    assert "server_us" not in plain


def test_timeout_ms_param(node):
    body = produce(node, "tmo", b"x", partition=0, timeout_ms=5000)
    assert body["ok"] is True and "offset" in body
    assert_error(node.post("/broker/topics/tmo/produce?timeout_ms=600001", data=b"x"), 400)


def test_large_messages_page_truncated_not_cut(node):
    create(node, "huge", 1)
    big = b"A" * (9 * 1024 * 1024)
    for i in range(2):
        produce(node, "huge", big, partition=0)
    seen = []
    off = 0
    for _ in range(5):
        r = node.get("/broker/consume/huge/g/0?offset=%d&limit=10" % off, timeout=60)
        assert r.status_code == 200
        got = r.json()  # always complete, valid JSON
        if got["count"] == 0:
            break
        assert len(r.content) <= 16 * 1024 * 1024 + 4096
        seen += [m["offset"] for m in got["messages"]]
        assert all(len(m["value"]) == len(big) for m in got["messages"])
        if got["count"] < 2 and got["next_offset"] < 2:
            assert got["truncated"] is True
        off = got["next_offset"]
    assert seen == [0, 1]


def test_single_message_over_16mib_413(node):
    r = node.post("/broker/topics/toobig/produce?partition=0", data=b"x" * (16 * 1024 * 1024 + 1),
                  timeout=60)
    assert_error(r, 413, "payload_too_large")


def test_committed_offsets_survive_restart(make_node):
    n = make_node().start()
    for i in range(5):
        produce(n, "cr", b"m", partition=0)
    assert n.post("/broker/commit", json={"topic": "cr", "group": "g", "partition": 0,
                                          "offset": 3}).status_code == 200
    n.kill()
    n.start()
    got = consume(n, "cr", 0, group="g")
    assert got["committed_offset"] == 3
    assert [m["offset"] for m in got["messages"]] == [3, 4]


def test_ndjson_b64_lines_carry_binary_values(node):
    create(node, "bin", 1)
    values = [b"\x00\xff\x01binary", bytes(range(256)), b"plain"]
    body = "\n".join(base64.b64encode(v).decode() for v in values) + "\n"
    r = requests.post(node.url + "/broker/topics/bin/produce-ndjson", headers=AUTH,
                      params={"partition": "0", "encoding": "b64"}, data=body)
    assert r.status_code == 200, r.text
    assert r.json()["count"] == 3
    got = consume(node, "bin", 0, offset=0, encoding="b64")["messages"]
    assert [base64.b64decode(m["value_b64"]) for m in got] == values


def test_ndjson_b64_bad_line_writes_nothing(node):
    create(node, "bin2", 1)
    body = base64.b64encode(b"ok").decode() + "\n" + "not*base64\n"
    r = requests.post(node.url + "/broker/topics/bin2/produce-ndjson", headers=AUTH,
                      params={"partition": "0", "encoding": "b64"}, data=body)
    assert_error(r, 400, "bad_request")
    assert "Line 2" in r.json()["message"]
    assert consume(node, "bin2", 0, offset=0)["count"] == 0
