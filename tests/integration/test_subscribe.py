"""SSE and streaming NDJSON subscriptions (docs/HTTP_API.md "Subscribe"): records produced after
subscribing arrive; Last-Event-ID resumes exactly; multi-partition streams under 50 concurrent
producers deliver every record exactly once in offset order per partition; 100 kill-and-resume
cycles miss and repeat nothing; a reader that stops reading is cut off with the reason while the
server's memory stays bounded; the open-stream limit answers 503; shutdown, topic deletion and
auto-commit."""
import json
import os
import random
import signal
import subprocess
import threading
import time

import requests

from conftest import AUTH, assert_error
from subutil import NDJSON, SSE


def create(node, name, parts):
    r = node.post("/broker/topics", json={"name": name, "partitions": parts})
    assert r.status_code == 200, r.text


def produce(node, topic, value, partition=None, session=None):
    q = "" if partition is None else "?partition=%d" % partition
    s = session or requests
    r = s.post(node.url + "/broker/topics/%s/produce%s" % (topic, q), data=value, headers=AUTH,
               timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def records_until(st, n, deadline_s=20):
    out = []
    end = time.monotonic() + deadline_s
    while len(out) < n and time.monotonic() < end:
        ev = st.next_event(deadline_s=max(0.1, end - time.monotonic()))
        if ev is None:
            break
        kind = ev.get("event") or ev.get("type")
        if kind == "record":
            out.append(ev)
        elif kind == "end":
            raise AssertionError("stream ended early: %r" % ev)
    return out


def data(ev):
    return ev["data"] if "data" in ev else ev


def test_sse_records_after_subscribe_and_exact_resume(node):
    create(node, "s1", 1)
    produce(node, "s1", '"before"')
    st = SSE(node.port, "/broker/subscribe/s1/g?from=latest",
             headers={"Accept": "text/event-stream"})
    assert st.head() == 200
    assert st.headers["content-type"].startswith("text/event-stream")
    assert st.headers["transfer-encoding"] == "chunked"
    opened = st.next_event()
    assert opened["event"] == "subscribed" and opened["id"] == "0:1", opened
    assert opened["data"]["node"] and opened["data"]["partitions"] == [0]
    for i in range(5):
        produce(node, "s1", json.dumps({"i": i}))
    got = records_until(st, 5)
    assert [e["data"]["value"] for e in got] == [{"i": i} for i in range(5)]
    assert [e["data"]["offset"] for e in got] == [1, 2, 3, 4, 5]
    assert [e["id"] for e in got] == ["0:%d" % o for o in range(2, 7)]
    last = got[2]["id"]  # resume after the third: the fourth and fifth again, then new ones
    st.close(reset=True)
    for i in range(5, 8):
        produce(node, "s1", "text %d" % i)  # not JSON: base64 with the value_b64 marker
    st2 = SSE(node.port, "/broker/subscribe/s1/g", headers={"Accept": "text/event-stream",
                                                           "Last-Event-ID": last})
    assert st2.head() == 200
    assert st2.next_event()["id"] == last
    got = records_until(st2, 5)
    assert [e["data"]["offset"] for e in got] == [4, 5, 6, 7, 8]
    assert got[2]["data"]["value_b64"] == "dGV4dCA1"  # "text 5"
    st2.close()


def test_consume_route_accept_event_stream_single_partition(node):
    create(node, "s2", 3)
    for p in range(3):
        produce(node, "s2", '{"p":%d}' % p, partition=p)
    st = SSE(node.port, "/broker/consume/s2/g/1?offset=0", headers={"Accept": "text/event-stream"})
    assert st.head() == 200
    assert st.next_event()["data"]["partitions"] == [1]
    (ev,) = records_until(st, 1)
    assert ev["data"]["partition"] == 1 and ev["data"]["value"] == {"p": 1} and ev["id"] == "1:1"
    st.close()
    # without Accept or ?stream the consume route is the ordinary JSON page
    r = node.get("/broker/consume/s2/g/1?offset=0")
    assert r.status_code == 200 and r.json()["count"] == 1


def test_ndjson_with_curl_n(node):
    create(node, "s3", 2)
    proc = subprocess.Popen(
        ["curl", "-sN", "-H", "Authorization: Bearer dev",
         node.url + "/broker/subscribe/s3/g?stream=ndjson&from=latest&limit=6"],
        stdout=subprocess.PIPE)
    try:
        first = json.loads(proc.stdout.readline())
        assert first["type"] == "subscribed" and first["id"] == "0:0,1:0"
        for i in range(6):
            produce(node, "s3", json.dumps({"n": i}), partition=i % 2)
        lines = [json.loads(proc.stdout.readline()) for _ in range(7)]
        assert [l["type"] for l in lines] == ["record"] * 6 + ["end"]
        assert sorted(l["value"]["n"] for l in lines[:6]) == list(range(6))
        assert lines[6]["reason"] == "limit" and lines[6]["resume_id"] == "0:3,1:3"
        assert proc.wait(timeout=10) == 0  # curl ends with the body
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_multi_partition_50_producers_exactly_once_in_order(node):
    parts, producers, each = 8, 50, 30
    create(node, "s4", parts)
    subs = [SSE(node.port, "/broker/subscribe/s4/g%d?from=earliest&partitions=all" % k,
                headers={"Accept": "text/event-stream"}) for k in range(2)]
    subs.append(NDJSON(node.port, "/broker/subscribe/s4/g9?from=earliest&partitions=0,1,2,3,4,5,6,7"))
    for s in subs:
        assert s.head() == 200
        assert (s.next_event().get("event") or "subscribed") == "subscribed"

    errors = []

    def producer(k):
        try:
            with requests.Session() as sess:
                for i in range(each):
                    produce(node, "s4", json.dumps({"p": k, "i": i}),
                            partition=random.randrange(parts), session=sess)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    ts = [threading.Thread(target=producer, args=(k,)) for k in range(producers)]
    for t in ts:
        t.start()
    total = producers * each
    results = [None] * len(subs)

    def consume(j):
        results[j] = records_until(subs[j], total, deadline_s=90)

    cs = [threading.Thread(target=consume, args=(j,)) for j in range(len(subs))]
    for t in cs:
        t.start()
    for t in ts + cs:
        t.join()
    assert not errors, errors
    for got in results:
        got = [data(e) for e in got]
        assert len(got) == total
        seen = {(d["value"]["p"], d["value"]["i"]) for d in got}
        assert len(seen) == total  # exactly once
        per = {}
        for d in got:
            per.setdefault(d["partition"], []).append(d["offset"])
        for p, offs in per.items():
            assert offs == list(range(len(offs))), p  # in offset order, no gap
    for s in subs:
        s.close()


def test_kill_and_resume_100_times_misses_nothing(node):
    parts, total = 4, 2000
    create(node, "s5", parts)
    stop = threading.Event()
    produced = [0]

    def producer():
        with requests.Session() as sess:
            for i in range(total):
                produce(node, "s5", json.dumps({"i": i}), partition=i % parts, session=sess)
                produced[0] += 1
                if i % 50 == 0:
                    time.sleep(0.01)
        stop.set()

    t = threading.Thread(target=producer)
    t.start()
    rnd = random.Random(14)
    delivered = []
    last_id = None
    for cycle in range(101):
        hdr = {"Accept": "text/event-stream"}
        if last_id:
            hdr["Last-Event-ID"] = last_id
        st = SSE(node.port, "/broker/subscribe/s5/g?from=earliest", headers=hdr)
        assert st.head() == 200
        opened = st.next_event()
        assert opened["event"] == "subscribed"
        if last_id:
            assert opened["id"] == last_id
        last_id = opened["id"]
        want = total - len(delivered)
        if cycle < 100:
            want = min(want, rnd.randrange(0, 60))
        for ev in records_until(st, want, deadline_s=60):
            delivered.append((ev["data"]["partition"], ev["data"]["offset"]))
            last_id = ev["id"]
        st.close(reset=rnd.random() < 0.5)  # killed: RST or FIN, with unread events in flight
    t.join()
    assert len(delivered) == total
    assert len(set(delivered)) == total  # nothing repeated
    for p in range(parts):
        offs = [o for q, o in delivered if q == p]
        assert offs == list(range(total // parts))  # nothing missed, in order


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def test_slow_reader_bounded_and_told_why(make_node):
    # (under ASan, freed memory sits in its quarantine and would count as RSS: keep it small)
    n = make_node(args=["--subscribe-buffer-bytes", "65536", "--subscribe-stall-ms", "500"],
                  env={"ASAN_OPTIONS": "quarantine_size_mb=1:detect_leaks=1"}).start()
    create(n, "s6", 1)
    value = "x" * 10000
    batch = "\n".join(json.dumps({"v": value, "i": i}) for i in range(500))
    for _ in range(6):  # 3000 records, ~30 MB
        r = n.post("/broker/topics/s6/produce-ndjson?partition=0", data=batch)
        assert r.status_code == 200, r.text
    base = rss_kb(n.proc.pid)
    st = NDJSON(n.port, "/broker/subscribe/s6/g?stream=ndjson&from=earliest", rcvbuf=4096)
    assert st.head() == 200
    peak = base
    for _ in range(20):  # 2 s without reading
        time.sleep(0.1)
        peak = max(peak, rss_kb(n.proc.pid))
    # the server holds at most its 64 KiB buffer (+ one read) for this reader, not 30 MB
    assert peak - base < 16 * 1024, (base, peak)
    m = n.get("/metrics").text
    assert "ayder_subscribe_slow_disconnects_total 1" in m
    got, end = [], None
    while True:
        ev = st.next_event(deadline_s=10)
        assert ev is not None
        if ev["type"] == "record":
            got.append(ev["offset"])
        elif ev["type"] == "end":
            end = ev
            break
    assert end["reason"] == "slow_subscriber", end
    assert "buffer" in end["message"]
    assert got == list(range(len(got))) and len(got) < 3000
    assert end["resume_id"] == "0:%d" % len(got)
    st.close()
    # resuming from the final event's id delivers the rest, exactly
    st = NDJSON(n.port, "/broker/subscribe/s6/g?stream=ndjson&last_event_id=" + end["resume_id"])
    assert st.head() == 200
    rest = [d["offset"] for d in records_until(st, 3000 - len(got), deadline_s=60)]
    assert rest == list(range(len(got), 3000))
    st.close()


def test_max_streams_503_then_free_again(make_node):
    n = make_node(args=["--subscribe-max-streams", "2"]).start()
    create(n, "s7", 1)
    a = SSE(n.port, "/broker/subscribe/s7/g", headers={"Accept": "text/event-stream"})
    b = NDJSON(n.port, "/broker/consume/s7/g/0?stream=ndjson")
    assert a.head() == 200 and b.head() == 200
    r = n.get("/broker/subscribe/s7/g?stream=sse")
    assert_error(r, 503, "overloaded")
    assert r.headers["Retry-After"] == "1"
    a.close()
    deadline = time.monotonic() + 5
    while True:  # the close is noticed promptly (no write needed)
        c = SSE(n.port, "/broker/subscribe/s7/g?stream=sse")
        if c.head() == 200:
            break
        c.close()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    c.close()
    b.close()
    assert "ayder_subscribe_rejected_total" in n.get("/metrics").text


def test_bad_parameters(node):
    create(node, "s8", 2)
    assert_error(node.get("/broker/subscribe/nope/g?stream=sse"), 404, "unknown_topic")
    assert_error(node.get("/broker/subscribe/s8/g?stream=xml"), 400, "bad_params")
    assert_error(node.get("/broker/subscribe/s8/g?partitions=0,0"), 400, "bad_params")
    assert_error(node.get("/broker/subscribe/s8/g?partitions=2"), 400, "bad_params")
    assert_error(node.get("/broker/subscribe/s8/g?from=yesterday"), 400, "bad_params")
    for bad in ["0:1", "1:0,0:0", "0:1,1:x", "0:01,1:0", "0:1,1:2,", "0:1,2:2", "0:-1,1:0",
                "0:99999999999999999999,1:0"]:
        r = node.get("/broker/subscribe/s8/g?stream=sse", headers=dict(AUTH, **{"Last-Event-ID": bad}))
        assert_error(r, 400, "bad_params")


def test_start_positions_offset_and_time(node):
    create(node, "s9", 1)
    for i in range(5):
        produce(node, "s9", str(i))
    time.sleep(0.05)
    t_mid = produce(node, "s9", "5")["timestamp_ms"]  # the server's clock stamps records
    for i in range(6, 8):
        produce(node, "s9", str(i))
    st = NDJSON(node.port, "/broker/subscribe/s9/g?stream=ndjson&from=offset:3&limit=2")
    assert st.head() == 200
    assert st.next_event()["type"] == "subscribed"
    assert [d["value"] for d in records_until(st, 2)] == [3, 4]
    st.close()
    st = NDJSON(node.port, "/broker/subscribe/s9/g?stream=ndjson&from=time:%d&limit=3" % t_mid)
    assert st.head() == 200
    assert st.next_event()["type"] == "subscribed"
    assert [d["value"] for d in records_until(st, 3)] == [5, 6, 7]
    st.close()


def test_topic_deletion_ends_stream(node):
    create(node, "s10", 1)
    st = SSE(node.port, "/broker/subscribe/s10/g?stream=sse")
    assert st.head() == 200
    assert st.next_event()["event"] == "subscribed"
    assert node.delete("/broker/topics/s10").status_code == 200
    ev = st.next_event()
    assert ev["event"] == "end" and ev["data"]["reason"] == "topic_deleted", ev
    assert ev["id"] == "0:0"
    st.close()


def test_shutdown_ends_streams_with_a_final_event(make_node):
    n = make_node().start()
    create(n, "s11", 2)
    # auto-commit only at the end (the interval is an hour): the shutdown end commits
    st = SSE(n.port, "/broker/subscribe/s11/g?stream=sse&auto_commit=1&commit_interval_ms=3600000")
    assert st.head() == 200
    assert st.next_event()["event"] == "subscribed"
    produce(n, "s11", "1", partition=1)
    assert len(records_until(st, 1)) == 1
    n.proc.send_signal(signal.SIGTERM)
    ev = st.next_event()
    assert ev["event"] == "end" and ev["data"]["reason"] == "shutdown", ev
    assert ev["data"]["resume_id"] == "0:0,1:1"
    assert n.proc.wait(timeout=30) == 0
    st.close()
    n.start()
    g = n.get("/broker/groups/g/s11").json()
    assert {p["partition"]: p["committed_offset"] for p in g["partitions"]} == {1: 1}, g


def test_auto_commit(node):
    create(node, "s12", 2)
    st = NDJSON(node.port, "/broker/subscribe/s12/ag?stream=ndjson&auto_commit=1"
                           "&commit_interval_ms=50")
    assert st.head() == 200
    for i in range(6):
        produce(node, "s12", str(i), partition=i % 2)
    assert len(records_until(st, 6)) == 6
    deadline = time.monotonic() + 5
    while True:
        g = node.get("/broker/groups/ag/s12").json()
        offs = {p["partition"]: p["committed_offset"] for p in g["partitions"]}
        if offs == {0: 3, 1: 3}:
            break
        assert time.monotonic() < deadline, g
        time.sleep(0.05)
    st.close()
    # a new subscription without a position starts at the committed offsets
    st = NDJSON(node.port, "/broker/subscribe/s12/ag?stream=ndjson")
    assert st.head() == 200
    assert st.next_event()["id"] == "0:3,1:3"
    st.close()


def test_pipelined_request_waits_behind_stream(node):
    create(node, "s13", 1)
    st = NDJSON(node.port, "/broker/subscribe/s13/g?stream=ndjson&limit=1")
    # a second request on the same connection is answered only after the stream ends
    st.sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    assert st.head() == 200
    assert st.next_event()["type"] == "subscribed"
    produce(node, "s13", "1")
    assert st.next_event()["type"] == "record"
    assert st.next_event()["type"] == "end"
    deadline = time.monotonic() + 5
    while b"HTTP/1.1 200" not in st.raw and time.monotonic() < deadline:
        st._recv()
    assert b'{"ok":true}' in st.raw or b"ok" in st.raw
    st.close()
