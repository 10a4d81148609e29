"""Feed API v2 conformance (vippsas/feedapi-spec), written from the Feed API compliance checklist
(ecosystem notes §2.3) and our own contract in docs/HTTP_API.md "Feed API".
Each checklist item is one or more tests below (the comment above each names the item); every
test starts the real binary. The last test runs a three-node loopback cluster and reads the feed
from a follower."""
import json
import os
import threading
import time

import pytest
import requests

from conftest import AUTH, Node, assert_error, free_port


# ----------------------------------------------------------------------------------------------
# helpers

def create(node, name, partitions):
    r = node.post("/broker/topics", json={"name": name, "partitions": partitions})
    assert r.status_code == 200, r.text


def produce(node, topic, value, partition=0, event_type=None):
    headers = dict(AUTH)
    if event_type is not None:
        headers["X-Ayder-Header-Event-Type"] = event_type
    r = node.post("/broker/topics/%s/produce?partition=%d" % (topic, partition), data=value,
                  headers=headers)
    assert r.status_code == 200, r.text
    return r.json()["offset"]


def discover(node, topic):
    r = node.get("/feeds/" + topic)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("application/json")
    return r.json()


def fetch_raw(node, topic, timeout=30, **params):
    return node.get("/feeds/%s/events" % topic, params=params, timeout=timeout)


def parse_ndjson(r):
    """The lines of a 200 NDJSON answer; checks the envelope rules every answer must follow."""
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"] == "application/x-ndjson"
    assert r.text.endswith("\n")
    lines = [json.loads(line) for line in r.text.split("\n")[:-1]]
    for line in lines:
        assert isinstance(line, dict) and ("data" in line) != ("cursor" in line), line
        if "data" in line:
            assert isinstance(line["data"], (dict, str)), line
        else:
            assert isinstance(line["cursor"], str) and line["cursor"], line
    # at least one cursor per answer; ours is exactly one, last
    cursors = [line for line in lines if "cursor" in line]
    assert len(cursors) == 1 and "cursor" in lines[-1], lines
    return [line for line in lines if "data" in line], lines[-1]["cursor"]


def fetch(node, topic, token, partition, cursor, **params):
    r = fetch_raw(node, topic, token=token, partition=str(partition), cursor=cursor, **params)
    return parse_ndjson(r)


def read_all(node, topic, token, partition, cursor="_first", page=None, **params):
    """Follow cursors until an empty page; returns (events, final cursor, pages)."""
    out, pages = [], 0
    while True:
        if page:
            params["pagesizehint"] = page
        events, cursor = fetch(node, topic, token, partition, cursor, **params)
        pages += 1
        if not events:
            return out, cursor, pages
        out.extend(events)
        assert pages < 1000


# ----------------------------------------------------------------------------------------------
# Checklist 1: GET /feeds/{topic} -> token, partitions (string ids of ints <= 32767), exactlyOnce

def test_discovery_shape(node):
    create(node, "d", 3)
    d = discover(node, "d")
    assert isinstance(d["token"], str) and d["token"]
    assert [p["id"] for p in d["partitions"]] == ["0", "1", "2"]
    for p in d["partitions"]:
        assert isinstance(p["id"], str) and 0 <= int(p["id"]) <= 32767
        # checklist: "never append to a partition reported closed" -- we never report one
        assert p.get("closed", False) is False
    assert d["exactlyOnce"] is False  # duplicates can enter the log: at-least-once
    assert d["ayder"]["longPoll"] is True


def test_discovery_is_stable_and_token_is_per_topic(node):
    create(node, "s1", 2)
    create(node, "s2", 2)
    assert discover(node, "s1")["token"] == discover(node, "s1")["token"]
    assert discover(node, "s1")["token"] != discover(node, "s2")["token"]


def test_discovery_unknown_topic_404(node):
    assert_error(node.get("/feeds/nope"), 404, "unknown_topic")
    assert_error(node.get("/feeds/nope/events?token=x&partition=0&cursor=_first"), 404,
                 "unknown_topic")


def test_discovery_v1_probe_is_refused(node):
    # checklist: v1 (ZeroEventHub) fetches are not served; argument-less discovery is v2
    create(node, "v1", 1)
    assert_error(node.get("/feeds/v1?n=1&cursor0=_first"), 400, "bad_params")


def test_discovery_bad_topic_name(node):
    assert_error(node.get("/feeds/a%20b"), 400, "invalid_name")


# ----------------------------------------------------------------------------------------------
# Checklist 2: /events requires token (else 400; mismatch -> 409), partition, cursor

def test_token_required(node):
    create(node, "tk", 1)
    assert_error(fetch_raw(node, "tk", partition="0", cursor="_first"), 400, "bad_params")


def test_stale_token_409(node):
    create(node, "st", 2)
    tok = discover(node, "st")["token"]
    for bad in ("x", tok + "0", tok[:-1], "0p2", " " + tok):
        assert_error(fetch_raw(node, "st", token=bad, partition="0", cursor="_first"), 409,
                     "stale_token")


def test_token_changes_when_topic_recreated_and_old_token_409_everywhere(node):
    create(node, "rc", 2)
    produce(node, "rc", b"old")
    old = discover(node, "rc")
    _, old_cursor = fetch(node, "rc", old["token"], 0, "_first")
    assert node.delete("/broker/topics/rc").status_code == 200
    create(node, "rc", 2)
    new = discover(node, "rc")
    assert new["token"] != old["token"]
    # every partition answers 409 for the old token (the spec: all at about the same time)
    for p in ("0", "1"):
        assert_error(fetch_raw(node, "rc", token=old["token"], partition=p, cursor="_first"),
                     409, "stale_token")
    # a cursor of the old incarnation is refused with the new token: its records are gone
    assert_error(fetch_raw(node, "rc", token=new["token"], partition="0", cursor=old_cursor),
                 400, "bad_params")
    events, _ = fetch(node, "rc", new["token"], 0, "_first")
    assert events == []


def test_partition_required_and_validated(node):
    create(node, "pv", 2)
    tok = discover(node, "pv")["token"]
    assert_error(fetch_raw(node, "pv", token=tok, cursor="_first"), 400, "bad_params")
    for bad in ("x", "-1", "01", "1.0", "", "32768"):
        assert_error(fetch_raw(node, "pv", token=tok, partition=bad, cursor="_first"), 400,
                     "bad_params")
    # a valid id this feed does not have
    assert_error(fetch_raw(node, "pv", token=tok, partition="2", cursor="_first"), 400,
                 "invalid_partition")
    assert_error(fetch_raw(node, "pv", token=tok, partition="32767", cursor="_first"), 400,
                 "invalid_partition")


def test_cursor_required_and_strict(node):
    create(node, "cv", 1)
    produce(node, "cv", b"a")
    tok = discover(node, "cv")["token"]
    assert_error(fetch_raw(node, "cv", token=tok, partition="0"), 400, "bad_params")
    _, cur = fetch(node, "cv", tok, 0, "_first")
    ident, _, off = cur.partition("o")
    for bad in ("", "first", "_FIRST", "abc", ident + "o", "o" + off, "0" + cur, ident + "o0" + off,
                cur + "x", cur + "o1", ident + "o-1", ident + "o99999999999999999999"):
        assert_error(fetch_raw(node, "cv", token=tok, partition="0", cursor=bad), 400,
                     "bad_params")


# ----------------------------------------------------------------------------------------------
# Checklist 3: NDJSON, {"data"} lines, >= 1 {"cursor"} per answer, also when empty

def test_cursor_line_on_empty_page(node):
    create(node, "em", 2)
    tok = discover(node, "em")["token"]
    for cursor in ("_first", "_last"):
        events, cur = fetch(node, "em", tok, 1, cursor)
        assert events == [] and cur
    # the cursor of an empty page, given back, is again an empty page with a cursor
    events, cur2 = fetch(node, "em", tok, 1, cur)
    assert events == [] and cur2 == cur


def test_first_reads_everything_in_order_and_cursor_resumes_exactly(node):
    create(node, "ord", 1)
    for i in range(25):
        produce(node, "ord", json.dumps({"i": i}))
    tok = discover(node, "ord")["token"]
    events, end, pages = read_all(node, "ord", tok, 0, page=4)
    assert [e["data"]["i"] for e in events] == list(range(25))  # no gap, no duplicate
    assert pages == 8  # 7 pages of at most 4 events, then the empty one
    # new events after the final cursor, and only those
    produce(node, "ord", json.dumps({"i": 25}))
    more, _ = fetch(node, "ord", tok, 0, end)
    assert [e["data"]["i"] for e in more] == [25]


def test_last_starts_at_the_end(node):
    create(node, "la", 1)
    for i in range(3):
        produce(node, "la", "x%d" % i)
    tok = discover(node, "la")["token"]
    events, cur = fetch(node, "la", tok, 0, "_last")
    assert events == []
    produce(node, "la", "after")
    events, _ = fetch(node, "la", tok, 0, cur)
    assert [e["data"] for e in events] == ["after"]


def test_partitions_are_independent(node):
    create(node, "pi", 2)
    produce(node, "pi", "p0", partition=0)
    produce(node, "pi", "p1", partition=1)
    tok = discover(node, "pi")["token"]
    assert [e["data"] for e in fetch(node, "pi", tok, 0, "_first")[0]] == ["p0"]
    assert [e["data"] for e in fetch(node, "pi", tok, 1, "_first")[0]] == ["p1"]


def test_data_encoding(node):
    create(node, "enc", 1)
    produce(node, "enc", b'{"a": 1,\n "b": [1, 2.50, 12345678901234567890]}')  # object, multi-line
    produce(node, "enc", b"[1,2]")        # JSON array: not an object -> string of its text
    produce(node, "enc", b"plain text")   # UTF-8 -> string
    produce(node, "enc", b"\xff\x00\x01")  # binary -> base64 + "encoding":"base64"
    produce(node, "enc", b"")             # empty -> ""
    produce(node, "enc", b'{"broken": ')  # not valid JSON -> string
    tok = discover(node, "enc")["token"]
    r = fetch_raw(node, "enc", token=tok, partition="0", cursor="_first")
    events, _ = parse_ndjson(r)
    # the object is embedded as written (numbers untouched), on one line
    assert "12345678901234567890" in r.text.split("\n")[0]
    assert events[0]["data"]["a"] == 1
    assert events[1]["data"] == "[1,2]" and "encoding" not in events[1]
    assert events[2]["data"] == "plain text"
    assert events[3] == {"data": "/wAB", "encoding": "base64"}
    assert events[4]["data"] == ""
    assert events[5]["data"] == '{"broken": '


def test_head_and_node_headers(node):
    create(node, "hd", 1)
    tok = discover(node, "hd")["token"]
    r = requests.head(node.url + "/feeds/hd/events?token=%s&partition=0&cursor=_first" % tok,
                      headers=AUTH, timeout=10)
    assert r.status_code == 200
    assert r.headers["X-Ayder-Node"] == "single" and r.headers["X-Ayder-Role"] == "leader"
    assert node.get("/feeds/hd").headers["X-Ayder-Node"] == "single"


# ----------------------------------------------------------------------------------------------
# Checklist 4: pagesizehint, event-types, skip-event-types; both filters together refused

def test_pagesizehint(node):
    create(node, "ps", 1)
    r = node.post("/broker/topics/ps/produce-ndjson?partition=0",
                  data="\n".join("m%d" % i for i in range(1500)))
    assert r.status_code == 200, r.text
    tok = discover(node, "ps")["token"]
    assert len(fetch(node, "ps", tok, 0, "_first")[0]) == 100        # default
    assert len(fetch(node, "ps", tok, 0, "_first", pagesizehint=7)[0]) == 7
    assert len(fetch(node, "ps", tok, 0, "_first", pageSizeHint=3)[0]) == 3
    assert len(fetch(node, "ps", tok, 0, "_first", pagesizehint=0)[0]) == 1     # clamped up
    assert len(fetch(node, "ps", tok, 0, "_first", pagesizehint=5000)[0]) == 1000  # clamped
    for bad in ("x", "-1", "1.5"):
        assert_error(fetch_raw(node, "ps", token=tok, partition="0", cursor="_first",
                               pagesizehint=bad), 400, "bad_params")


def typed_topic(node, name):
    create(node, name, 1)
    for i, t in enumerate(["order.created", "Order.Paid", None, "internal", "order.created"]):
        produce(node, name, json.dumps({"i": i}), event_type=t)
    return discover(node, name)["token"]


def test_event_types_filter(node):
    tok = typed_topic(node, "et")
    events, cur = fetch(node, "et", tok, 0, "_first", **{"event-types": "order.created;ORDER.PAID"})
    assert [e["data"]["i"] for e in events] == [0, 1, 4]  # case-insensitive, ';'-separated
    assert cur.endswith("o5")  # the cursor passed the filtered-out records too
    events, _ = fetch(node, "et", tok, 0, "_first", **{"event-types": "internal"})
    assert [e["data"]["i"] for e in events] == [3]


def test_skip_event_types_filter(node):
    tok = typed_topic(node, "sk")
    events, _ = fetch(node, "sk", tok, 0, "_first", **{"skip-event-types": "internal;order.paid"})
    assert [e["data"]["i"] for e in events] == [0, 2, 4]  # the untyped record is kept


def test_filtered_out_page_still_advances_cursor(node):
    tok = typed_topic(node, "fo")
    events, cur = fetch(node, "fo", tok, 0, "_first", **{"event-types": "nothing.like.this"})
    assert events == []
    assert cur != fetch(node, "fo", tok, 0, "_first", pagesizehint=1)[1]
    # resuming from it sees only what comes later
    produce(node, "fo", json.dumps({"i": 99}), event_type="nothing.like.this")
    events, _ = fetch(node, "fo", tok, 0, cur, **{"event-types": "nothing.like.this"})
    assert [e["data"]["i"] for e in events] == [99]


def test_filter_with_page_size(node):
    tok = typed_topic(node, "fp")
    events, cur = fetch(node, "fp", tok, 0, "_first", pagesizehint=1,
                        **{"event-types": "order.created"})
    assert [e["data"]["i"] for e in events] == [0]
    events, _ = fetch(node, "fp", tok, 0, cur, pagesizehint=1, **{"event-types": "order.created"})
    assert [e["data"]["i"] for e in events] == [4]


def test_both_filters_refused(node):
    tok = typed_topic(node, "bf")
    assert_error(fetch_raw(node, "bf", token=tok, partition="0", cursor="_first",
                           **{"event-types": "a", "skip-event-types": "b"}), 400, "bad_params")
    assert_error(fetch_raw(node, "bf", token=tok, partition="0", cursor="_first",
                           **{"event-types": ";;"}), 400, "bad_params")


# ----------------------------------------------------------------------------------------------
# Checklist 5: 401/403 with Bearer auth

def test_auth(make_node):
    n = make_node(env={"RF_BEARER_TOKENS": "dev,prod@produce,cons@consume"}).start()
    create(n, "au", 1)
    for path in ("/feeds/au", "/feeds/au/events?token=x&partition=0&cursor=_first"):
        r = requests.get(n.url + path, timeout=10)
        assert_error(r, 401, "unauthorized")
        assert r.headers["WWW-Authenticate"].startswith("Bearer")
        assert_error(requests.get(n.url + path, headers={"Authorization": "Bearer nope"},
                                  timeout=10), 401, "unauthorized")
        assert_error(requests.get(n.url + path, headers={"Authorization": "Bearer prod"},
                                  timeout=10), 403, "forbidden")
    r = requests.get(n.url + "/feeds/au", headers={"Authorization": "Bearer cons"}, timeout=10)
    assert r.status_code == 200


# ----------------------------------------------------------------------------------------------
# Retention floor: a cursor below it starts at the floor and says how much it skipped

def test_cursor_below_retention_floor(node):
    create(node, "rf", 1)
    for i in range(6):
        produce(node, "rf", "r%d" % i)
    tok = discover(node, "rf")["token"]
    _, cur0 = fetch(node, "rf", tok, 0, "_first", pagesizehint=1)  # cursor at offset 1
    r = node.post("/broker/delete-before", json={"topic": "rf", "partition": 0, "before_offset": 4})
    assert r.status_code == 200, r.text
    r = fetch_raw(node, "rf", token=tok, partition="0", cursor=cur0)
    events, _ = parse_ndjson(r)
    assert [e["data"] for e in events] == ["r4", "r5"]
    assert r.headers["X-Ayder-Skipped-Records"] == "3"
    events, _ = fetch(node, "rf", tok, 0, "_first")
    assert [e["data"] for e in events] == ["r4", "r5"]


# ----------------------------------------------------------------------------------------------
# wait_ms long-poll (our extension)

def test_long_poll_wakes_on_produce(node):
    create(node, "lp", 1)
    tok = discover(node, "lp")["token"]
    _, cur = fetch(node, "lp", tok, 0, "_last")
    got = {}

    def poll():
        t0 = time.monotonic()
        got["r"] = fetch_raw(node, "lp", token=tok, partition="0", cursor=cur, wait_ms="20000",
                             timeout=60)
        got["t"] = time.monotonic() - t0

    th = threading.Thread(target=poll)
    th.start()
    time.sleep(0.3)
    produce(node, "lp", "woke")
    th.join(30)
    events, _ = parse_ndjson(got["r"])
    assert [e["data"] for e in events] == ["woke"]
    assert 0.25 < got["t"] < 10


def test_long_poll_times_out_with_a_cursor(node):
    create(node, "lt", 1)
    tok = discover(node, "lt")["token"]
    t0 = time.monotonic()
    events, cur = fetch(node, "lt", tok, 0, "_last", wait_ms=400)
    took = time.monotonic() - t0
    assert events == [] and cur
    assert 0.35 < took < 5


def test_long_poll_with_data_answers_at_once(node):
    create(node, "ld", 1)
    produce(node, "ld", "here")
    tok = discover(node, "ld")["token"]
    t0 = time.monotonic()
    events, _ = fetch(node, "ld", tok, 0, "_first", wait_ms=20000)
    assert [e["data"] for e in events] == ["here"] and time.monotonic() - t0 < 5


def test_long_poll_ignores_filtered_out_records(node):
    create(node, "lf", 1)
    tok = discover(node, "lf")["token"]
    _, cur = fetch(node, "lf", tok, 0, "_last")
    got = {}

    def poll():
        t0 = time.monotonic()
        got["r"] = fetch_raw(node, "lf", token=tok, partition="0", cursor=cur, wait_ms="20000",
                             timeout=60, **{"event-types": "wanted"})
        got["t"] = time.monotonic() - t0

    th = threading.Thread(target=poll)
    th.start()
    time.sleep(0.3)
    produce(node, "lf", "noise", event_type="other")   # wakes the poll, which parks again
    time.sleep(0.5)
    assert th.is_alive()
    produce(node, "lf", "signal", event_type="Wanted")
    th.join(30)
    events, _ = parse_ndjson(got["r"])
    assert [e["data"] for e in events] == ["signal"]
    assert got["t"] > 0.7


def test_long_poll_bad_wait_ms(node):
    create(node, "lb", 1)
    tok = discover(node, "lb")["token"]
    for bad in ("x", "-1", "30001"):
        assert_error(fetch_raw(node, "lb", token=tok, partition="0", cursor="_last", wait_ms=bad),
                     400, "bad_params")


def test_long_poll_topic_deleted_while_parked(node):
    create(node, "ldel", 1)
    tok = discover(node, "ldel")["token"]
    got = {}

    def poll():
        got["r"] = fetch_raw(node, "ldel", token=tok, partition="0", cursor="_last",
                             wait_ms="20000", timeout=60)

    th = threading.Thread(target=poll)
    th.start()
    time.sleep(0.3)
    assert node.delete("/broker/topics/ldel").status_code == 200
    th.join(30)
    assert_error(got["r"], 404, "unknown_topic")


def test_long_poll_does_not_block_other_connections(node):
    create(node, "lc", 1)
    tok = discover(node, "lc")["token"]
    th = threading.Thread(target=lambda: fetch_raw(node, "lc", token=tok, partition="0",
                                                   cursor="_last", wait_ms="1500", timeout=60))
    th.start()
    time.sleep(0.1)
    t0 = time.monotonic()
    assert discover(node, "lc")["token"] == tok
    assert time.monotonic() - t0 < 1.0
    th.join(30)


# ----------------------------------------------------------------------------------------------
# Cluster: a follower serves the feed from its committed data and names itself

def start_cluster(tmp, n=3):
    raft = [free_port() for _ in range(n)]
    http = [free_port() for _ in range(n)]
    spec = ",".join("n%d:127.0.0.1:%d:%d:%d" % (i + 1, raft[i], 100 - i, http[i]) for i in range(n))
    nodes = []
    for i in range(n):
        env = {"RF_HA_ENABLED": "1", "RF_HA_NODE_ID": "n%d" % (i + 1), "RF_HA_NODES": spec,
               "RF_HA_ELECTION_TIMEOUT_MS": "600", "RF_HA_HEARTBEAT_MS": "100"}
        if i == 0:
            env["RF_HA_BOOTSTRAP_LEADER"] = "1"
        nodes.append(Node(os.path.join(tmp, "n%d" % (i + 1)), port=http[i], env=env))
    for nd in nodes:
        nd.start(wait=False)
    return nodes


def wait_until(cond, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            v = cond()
            if v:
                return v
        except (requests.RequestException, ValueError, KeyError):
            pass
        time.sleep(0.05)
    raise AssertionError("timed out waiting for " + what)


def test_follower_serves_feed(tmp_path):
    nodes = start_cluster(str(tmp_path))
    try:
        # n1 has the highest priority: whoever is elected first hands leadership to it
        lead = nodes[0]
        wait_until(lambda: all(nd.get("/ha/status", timeout=2).json()["leader_id"] == "n1"
                               for nd in nodes), 30, "n1 leading, known to all")
        create(lead, "cf", 1)
        for i in range(5):
            produce(lead, "cf", json.dumps({"i": i}))
        tok = discover(lead, "cf")["token"]
        follower = next(nd for nd in nodes if nd is not lead)
        # the same token on every node (topic id = journal index of its creation)
        wait_until(lambda: follower.get("/feeds/cf", timeout=2).json().get("token") == tok, 30,
                   "the topic on the follower")

        def all_there():
            r = fetch_raw(follower, "cf", token=tok, partition="0", cursor="_first", timeout=5)
            ev, c = parse_ndjson(r)
            return (r, ev, c) if len(ev) == 5 else None
        r, events, cur = wait_until(all_there, 30, "the records on the follower")
        assert [e["data"]["i"] for e in events] == list(range(5))
        assert r.headers["X-Ayder-Role"] == "follower"
        st = follower.get("/ha/status").json()
        assert r.headers["X-Ayder-Node"] == st["node_id"]
        # a long-poll on the follower wakes when the leader's write is committed and applied there
        got = {}

        def poll():
            got["r"] = fetch_raw(follower, "cf", token=tok, partition="0", cursor=cur,
                                 wait_ms="20000", timeout=60)
        th = threading.Thread(target=poll)
        th.start()
        time.sleep(0.3)
        produce(lead, "cf", json.dumps({"i": 5}))
        th.join(30)
        events, _ = parse_ndjson(got["r"])
        assert [e["data"]["i"] for e in events] == [5]
        # the leader's cursor and the follower's cursor are interchangeable
        _, lcur = fetch(lead, "cf", tok, 0, "_first")
        _, fcur = fetch(follower, "cf", tok, 0, cur)
        assert lcur == fcur
    finally:
        for nd in nodes:
            nd.kill()
