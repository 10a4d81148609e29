"""POST /broker/query with "follow": true, black box (docs/HTTP_API.md "Continuous queries",
docs/STREAM.md "Continuous queries"): SSE and NDJSON; rows arrive as records are produced; a
tumbling window's aggregate arrives when a later record moves the watermark past its end, and
through the idle timeout when no record comes; late records counted; window-less aggregates as
changes; resume with Last-Event-ID (rows exact, windows rebuilt); errors and the follow limit."""
import json
import socket
import threading
import time

import pytest
import requests

from conftest import AUTH
from streamutil import ModuleNode, create_topic, produce_json


@pytest.fixture(scope="module")
def n():
    m = ModuleNode(args=["--stream-follow-max", "4", "--stream-max-groups", "50",
                         "--stream-follow-stall-ms", "2000", "--stream-follow-buffer-bytes", "65536"])
    yield m.node
    m.close()


class Follow:
    """A follow query read by a background thread over a raw socket (close() shuts the socket
    down, which ends a blocked read at once); events are dicts {"type", "position", "data"}."""

    def __init__(self, node, req, mode="ndjson", last_event_id=None):
        self.events = []
        self.lock = threading.Lock()
        path = "/broker/query"
        headers = ["Host: 127.0.0.1", "Authorization: Bearer dev", "Content-Type: application/json"]
        if mode == "sse":
            headers.append("Accept: text/event-stream")
        elif mode == "sse-param":
            path += "?stream=sse"
        else:
            path += "?stream=ndjson"
        self.sse = mode.startswith("sse")
        if last_event_id:
            headers.append("Last-Event-ID: " + last_event_id)
        body = json.dumps(req).encode()
        headers.append("Content-Length: %d" % len(body))
        self.sock = socket.create_connection(("127.0.0.1", node.port), timeout=30)
        self.sock.sendall(("POST %s HTTP/1.1\r\n%s\r\n\r\n" % (path, "\r\n".join(headers))).encode()
                          + body)
        self.buf = b""
        head = self._until(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        self.status = int(lines[0].split()[1])
        self.headers = {k.lower(): v.strip() for k, v in (l.split(":", 1) for l in lines[1:] if l)}
        self.content_type = self.headers.get("content-type", "")
        if self.status != 200:
            n = int(self.headers.get("content-length", "0"))
            while len(self.buf) < n:
                self.buf += self.sock.recv(65536)
            self.body = json.loads(self.buf[:n])
            self.sock.close()
            return
        self.sock.settimeout(None)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _until(self, sep):
        while sep not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError
            self.buf += chunk
        out, self.buf = self.buf.split(sep, 1)
        return out

    def _chunks(self):
        """The body, de-chunked, as a stream of byte strings."""
        while True:
            size = int(self._until(b"\r\n").split(b";")[0], 16)
            if size == 0:
                return
            while len(self.buf) < size + 2:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise EOFError
                self.buf += chunk
            yield self.buf[:size]
            self.buf = self.buf[size + 2:]

    def _push(self, ev):
        with self.lock:
            self.events.append(ev)

    def _read(self):
        pending = b""
        ev = {}
        try:
            for data in self._chunks():
                pending += data
                while b"\n" in pending:
                    raw, pending = pending.split(b"\n", 1)
                    line = raw.decode()
                    if not self.sse:
                        if line:
                            o = json.loads(line)
                            self._push({"type": o["type"], "position": o.get("position"),
                                        "data": o[o["type"]]})
                    elif line == "":
                        if ev:
                            ev["data"] = json.loads(ev.get("data", "null"))
                            self._push(ev)
                        ev = {}
                    elif line.startswith("event: "):
                        ev["type"] = line[7:]
                    elif line.startswith("id: "):
                        ev["position"] = line[4:]
                    elif line.startswith("data: "):
                        ev["data"] = ev.get("data", "") + line[6:]
        except (OSError, EOFError, ValueError):
            pass

    def of(self, typ):
        with self.lock:
            return [e for e in self.events if e["type"] == typ]

    def wait(self, cond, timeout=10):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                evs = list(self.events)
            if cond(evs):
                return evs
            time.sleep(0.01)
        raise AssertionError("condition not met; events: %s" % json.dumps(self.events)[:3000])

    def wait_n(self, typ, count, timeout=10):
        self.wait(lambda evs: sum(1 for e in evs if e["type"] == typ) >= count, timeout)
        return self.of(typ)

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


@pytest.mark.parametrize("mode", ["ndjson", "sse", "sse-param"])
def test_rows_arrive_as_records_are_produced(n, mode):
    topic = "fr-" + mode
    create_topic(n, topic, 2)
    produce_json(n, topic, [{"v": 0, "keep": False}])  # before the follow starts, from offset 0
    f = Follow(n, {"source": {"topic": topic, "offset": 0}, "follow": True,
                   "filter": [{"field": "v", "op": "ge", "value": 1}], "select": ["v"]}, mode)
    assert f.status == 200
    assert f.content_type.startswith("text/event-stream" if f.sse else "application/x-ndjson")
    assert f.headers.get("transfer-encoding") == "chunked"
    f.wait_n("heartbeat", 1)  # live
    for i in range(1, 4):
        produce_json(n, topic, [{"v": i}], partition=i % 2)
        rows = f.wait_n("row", i)
        assert rows[-1]["data"] == {"v": i}
        assert rows[-1]["position"].startswith("1;")
    f.close()


def test_tumbling_window_closes_on_a_later_record(n):
    create_topic(n, "fw", 1)
    f = Follow(n, {"source": {"topic": "fw"}, "follow": {"idle_timeout_ms": 0},
                   "aggregate": {"measures": [{"op": "count"}, {"op": "sum", "field": "x"}]},
                   "window": {"size_ms": 10, "time_field": "t"}})
    f.wait_n("heartbeat", 1)
    produce_json(n, "fw", [{"t": 1, "x": 1}, {"t": 7, "x": 2}])
    time.sleep(0.3)
    assert f.of("aggregate") == []  # watermark 7 < end 10
    produce_json(n, "fw", [{"t": 10, "x": 5}])
    aggs = f.wait_n("aggregate", 1)
    a = aggs[0]["data"]
    assert (a["window_start_ms"], a["window_end_ms"], a["count"], a["sum_x"]) == (0, 10, 2, 3)
    # a record for the closed window is late: counted, never a second aggregate
    produce_json(n, "fw", [{"t": 3, "x": 100}, {"t": 25, "x": 1}])
    aggs = f.wait_n("aggregate", 2)
    assert [(e["data"]["window_start_ms"], e["data"]["count"]) for e in aggs] == [(0, 2), (10, 1)]
    f.close()
    # the late record shows in the stats of a heartbeat
    g = Follow(n, {"source": {"topic": "fw", "offset": 0}, "follow": {"idle_timeout_ms": 0,
                                                                      "heartbeat_ms": 200},
                   "aggregate": {}, "window": {"size_ms": 10, "time_field": "t"}})
    g.wait(lambda evs: any(e["type"] == "heartbeat" and e["data"]["stats"]["late"] == 1
                           for e in evs))
    g.close()


def test_idle_timeout_releases_the_window(n):
    create_topic(n, "fi", 2)
    f = Follow(n, {"source": {"topic": "fi"}, "follow": {"idle_timeout_ms": 300},
                   "aggregate": {"group_by": ["k"]},
                   "window": {"size_ms": 1000, "time_field": "t"}})
    f.wait_n("heartbeat", 1)
    t0 = time.monotonic()
    # partition 1 never gets a record; partition 0's records pass the window's end
    produce_json(n, "fi", [{"t": 100, "k": "a"}, {"t": 200, "k": "a"}, {"t": 1500, "k": "b"}],
                 partition=0)
    aggs = f.wait_n("aggregate", 1)
    assert time.monotonic() - t0 >= 0.25  # held back by partition 1 until it idled out
    a = aggs[0]["data"]
    assert (a["key"], a["window_start_ms"], a["count"]) == ("k=a", 0, 2)
    # no record comes at all: every partition idle, the window [1000, 2000) is due by the clock
    aggs = f.wait_n("aggregate", 2)
    assert (aggs[1]["data"]["key"], aggs[1]["data"]["window_start_ms"]) == ("k=b", 1000)
    f.close()


def test_append_time_window_closes_by_the_clock(n):
    create_topic(n, "fc", 1)
    f = Follow(n, {"source": {"topic": "fc"}, "follow": {"idle_timeout_ms": 100},
                   "aggregate": {}, "window": {"size_ms": 500}})
    f.wait_n("heartbeat", 1)
    produce_json(n, "fc", [{}, {}, {}])
    aggs = f.wait_n("aggregate", 1, timeout=5)
    assert aggs[0]["data"]["count"] == 3
    assert aggs[0]["data"]["window_end_ms"] <= time.time() * 1000
    f.close()


def test_changes_without_a_window(n):
    create_topic(n, "fg", 1)
    f = Follow(n, {"source": {"topic": "fg"}, "follow": True,
                   "aggregate": {"group_by": ["team"], "measures": [{"op": "count"}]}})
    f.wait_n("heartbeat", 1)
    produce_json(n, "fg", [{"team": "A"}, {"team": "B"}, {"team": "A"}])
    f.wait(lambda evs: {(e["data"]["key"], e["data"]["count"]) for e in evs
                        if e["type"] == "aggregate"} >= {("team=A", 2), ("team=B", 1)})
    produce_json(n, "fg", [{"team": "A"}])
    f.wait(lambda evs: any(e["type"] == "aggregate" and e["data"]["count"] == 3 for e in evs))
    f.close()


def test_resume_with_last_event_id(n):
    create_topic(n, "fres", 1)
    req = {"source": {"topic": "fres"}, "follow": {"idle_timeout_ms": 0},
           "select": ["t"], "transform": {"emit_rows": 1},
           "aggregate": {"measures": [{"op": "count"}, {"op": "sum", "field": "t"}]},
           "window": {"size_ms": 10, "time_field": "t"}}
    log = [1, 5, 12, 3, 15, 22, 27, 31]
    produce_json(n, "fres", [{"t": t} for t in log])
    whole = Follow(n, req, "sse")
    evs = whole.wait(lambda evs: sum(1 for e in evs if e["type"] == "row") == len(log) and
                     sum(1 for e in evs if e["type"] == "aggregate") == 3)
    whole.close()
    evs = [e for e in evs if e["type"] in ("row", "aggregate")]
    # resume after the 4th event (inside window [10, 20)): the rest is exactly the same
    cut = 3
    r = Follow(n, req, "sse", last_event_id=evs[cut]["position"])
    assert r.status == 200
    rest = r.wait(lambda e2: sum(1 for e in e2 if e["type"] in ("row", "aggregate"))
                  >= len(evs) - cut - 1)
    rest = [e for e in rest if e["type"] in ("row", "aggregate")]
    r.close()
    assert [(e["type"], e["data"]) for e in rest] == [(e["type"], e["data"]) for e in evs[cut + 1:]]
    assert [e["position"] for e in rest] == [e["position"] for e in evs[cut + 1:]]
    # a position that is not one of ours
    bad = Follow(n, req, "sse", last_event_id="garbage")
    assert bad.status == 400 and bad.body["path"] == "Last-Event-ID"


def test_errors_and_limits(n):
    create_topic(n, "fe", 1)
    r = requests.post(n.url + "/broker/query", headers=AUTH,
                      json={"source": {"topic": "fe"}, "follow": True, "order_by": "v"})
    assert r.status_code == 422 and r.json()["path"] == "/order_by"
    r = requests.post(n.url + "/broker/query", headers=AUTH, params={"stream": "xml"},
                      json={"source": {"topic": "fe"}, "follow": True})
    assert r.status_code == 400
    r = requests.post(n.url + "/broker/query", headers=AUTH,
                      json={"source": {"topic": "nope"}, "follow": True})
    assert r.status_code == 404
    # --stream-follow-max 4: the fifth is 503
    fs = [Follow(n, {"source": {"topic": "fe"}, "follow": True}) for _ in range(4)]
    for f in fs:
        f.wait_n("heartbeat", 1)
    r = requests.post(n.url + "/broker/query", headers=AUTH,
                      json={"source": {"topic": "fe"}, "follow": True})
    assert r.status_code == 503
    for f in fs:
        f.close()
    # closed streams free their slot (the server learns it when the connection closes)
    deadline = time.monotonic() + 5
    while True:
        f = Follow(n, {"source": {"topic": "fe"}, "follow": True})
        if f.status == 200:
            f.close()
            break
        assert time.monotonic() < deadline
        time.sleep(0.05)
    # a source limit ends the follow with an end event
    produce_json(n, "fe", [{"v": i} for i in range(5)])
    f = Follow(n, {"source": {"topic": "fe", "offset": 0, "limit": 3}, "follow": True})
    evs = f.wait_n("end", 1)
    assert evs[0]["data"]["reason"] == "limit"
    assert evs[0]["data"]["next_offsets"] == {"0": 3}
    assert len(f.of("row")) == 3
    f.close()


def test_slow_reader_does_not_grow_memory(n):
    """A client that stops reading: the server stops reading the log (bounded buffer)."""
    create_topic(n, "fslow", 1)
    big = "x" * 2000
    for _ in range(20):
        produce_json(n, "fslow", [{"v": big} for _ in range(100)])
    s = socket.create_connection(("127.0.0.1", n.port))
    body = json.dumps({"source": {"topic": "fslow", "offset": 0}, "follow": True}).encode()
    s.sendall(b"POST /broker/query?stream=ndjson HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer dev\r\n"
              b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    time.sleep(1.0)  # the server fills its buffer and the socket, then waits for the reader
    got = 0
    s.settimeout(5)
    while got < 4_000_000:
        chunk = s.recv(65536)
        if not chunk:
            break
        got += len(chunk)
    s.close()
    assert got >= 4_000_000  # everything arrives once the reader reads


def test_max_groups_ends_with_an_end_event(n):
    create_topic(n, "fmg", 1)
    produce_json(n, "fmg", [{"v": i} for i in range(60)])
    f = Follow(n, {"source": {"topic": "fmg", "offset": 0}, "follow": True,
                   "aggregate": {"group_by": ["v"]}}, "sse")
    end = f.wait_n("end", 1)[0]
    assert end["data"]["reason"] == "query_limit" and end["data"]["limit"] == "max_groups"
    assert end["position"].startswith("1;")
    f.close()


def test_stalled_reader_is_cut(n):
    create_topic(n, "fstall", 1)
    big = "y" * 2000
    for _ in range(80):
        produce_json(n, "fstall", [{"v": big} for _ in range(100)])  # 16 MB of rows
    s = socket.create_connection(("127.0.0.1", n.port))
    body = json.dumps({"source": {"topic": "fstall", "offset": 0}, "follow": True}).encode()
    s.sendall(b"POST /broker/query?stream=ndjson HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer dev\r\n"
              b"Content-Length: %d\r\n\r\n" % len(body) + body)
    time.sleep(5)  # never read: after --stream-follow-stall-ms the server closes the connection
    s.settimeout(10)
    got = 0
    try:
        while True:
            chunk = s.recv(1 << 20)
            if not chunk:
                break
            got += len(chunk)
    except ConnectionResetError:
        pass
    s.close()
    assert 0 < got < 16_000_000
    # its slot is free again
    f = Follow(n, {"source": {"topic": "fstall"}, "follow": True})
    assert f.status == 200
    f.close()
