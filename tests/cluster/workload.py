"""Concurrent clients for the cluster tests: producers, readers and KV CAS clients, each a thread,
recording a history for checker.py.

A client sends each request to the leader it last learned (from a 307 Location) or to a random
node, and follows 307 redirects itself (re-sends the same request to Location, counting hops, giving
up after max_hops). Outcomes are classified conservatively (invariant 2).

Invariants:
  1. Every produced value and every KV value is unique in the run ("w<thread>-<seq>",
     "kv<thread>-<seq>"), and with idempotent=True the produce carries idempotency_key=<value>.
  2. "fail" only when the request definitely did not take effect: the connection was never
     made, a redirect (307) or a refusal that happens before anything is proposed (no_leader,
     not_leader, not_ready, overloaded, rate_limited, 4xx, 409 cas_mismatch, 507). Everything
     uncertain (read timeout, connection dropped after sending, 503 timeout, other 5xx, a 200 with
     "timeout":true) is "info". An op whose retries mix outcomes is ok if any attempt was ok, else
     info if any attempt was info, else fail.
  3. Every thread stops by itself: at stop() or at its deadline, whichever comes first, and every
     request has a client timeout.
"""
import base64
import random
import threading
import time

import requests
import urllib3

from cluster import client_session, wait_for

DEFINITE_503 = {"no_leader", "not_leader", "not_ready", "overloaded", "rate_limited",
                "not_committed"}  # the server claims these were never applied: the checker holds it to that


class Outcome:
    __slots__ = ("result", "status", "body", "hops", "error", "url")

    def __init__(self, result, status=None, body=None, hops=0, error=None, url=None):
        self.result, self.status, self.body = result, status, body
        self.hops, self.error, self.url = hops, error, url

    def __repr__(self):
        return "Outcome(%s, %s, %r, hops=%d, %s)" % (self.result, self.status, self.body,
                                                    self.hops, self.error)


def _json(r):
    try:
        return r.json()
    except ValueError:
        return None


def classify_response(r, body):
    if 200 <= r.status_code < 300:
        if isinstance(body, dict) and body.get("ok") is False:
            return "info"
        if isinstance(body, dict) and body.get("timeout") is True:
            return "info"
        return "ok"
    err = body.get("error") if isinstance(body, dict) else None
    if r.status_code in (409, 507) or 400 <= r.status_code < 500:
        return "fail"
    if r.status_code == 503 and err in DEFINITE_503:
        return "fail"
    return "info"


def classify_exception(e):
    if isinstance(e, requests.exceptions.ConnectTimeout):
        return "fail"
    if isinstance(e, requests.exceptions.ConnectionError):
        reason = getattr(e.args[0], "reason", None) if e.args else None
        if isinstance(reason, (urllib3.exceptions.NewConnectionError,
                               urllib3.exceptions.ConnectTimeoutError)):
            return "fail"
    return "info"


class Client:
    """One thread's HTTP client against the cluster."""

    def __init__(self, cluster, rng, max_hops=5, timeout_ms=2000):
        self.cluster = cluster
        self.rng = rng
        self.max_hops = max_hops
        self.timeout_ms = timeout_ms
        self.session = client_session()
        self.leader_url = None
        self.hops = 0          # redirects followed, total
        self.redirect_giveups = 0

    def close(self):
        self.session.close()

    def base(self):
        if self.leader_url:
            return self.leader_url
        return self.rng.choice(self.cluster.nodes).url

    def call(self, method, path, params=None, data=None, base=None, follow=True):
        """Send one logical request, following up to max_hops redirects. Returns an Outcome."""
        url = (base or self.base()) + path
        hops = 0
        read_timeout = self.timeout_ms / 1000.0 + 1.0
        while True:
            try:
                r = self.session.request(method, url, params=params, data=data,
                                         allow_redirects=False, timeout=(1.0, read_timeout))
            except requests.RequestException as e:
                self.leader_url = None
                return Outcome(classify_exception(e), hops=hops, error=repr(e), url=url)
            body = _json(r)
            if r.status_code in (307, 308) and not follow:
                return Outcome("fail", r.status_code, body, hops, "redirect", url)
            if r.status_code in (307, 308):
                loc = r.headers.get("Location")
                if not loc or hops >= self.max_hops:
                    self.redirect_giveups += 1
                    self.leader_url = None
                    return Outcome("fail", r.status_code, body, hops, "redirect limit", url)
                hops += 1
                self.hops += 1
                url, params = loc, None   # Location carries the same path and query
                self.leader_url = "/".join(loc.split("/", 3)[:3])  # scheme://host:port
                continue
            res = classify_response(r, body)
            if res != "ok" and r.status_code >= 500:
                self.leader_url = None
            return Outcome(res, r.status_code, body, hops, None, url)


def _merge(results):
    if "ok" in results:
        return "ok"
    if "info" in results:
        return "info"
    return "fail"


class Workload:
    """Producers + readers + KV clients over one topic. Thread-safe history recording."""

    def __init__(self, cluster, topic="jepsen", partitions=3, producers=4, readers=1,
                 kv_clients=0, kv_keys=3, idempotent=True, retries=2, timeout_ms=2000,
                 max_hops=5, seed=None, write_concern=None, pace_s=0.0):
        self.cluster = cluster
        self.topic = topic
        self.partitions = partitions
        self.n_producers = producers
        self.n_readers = readers
        self.n_kv = kv_clients
        self.kv_keys = ["k%d" % i for i in range(kv_keys)]
        self.idempotent = idempotent
        self.retries = retries if idempotent else 0
        self.timeout_ms = timeout_ms
        self.max_hops = max_hops
        self.seed = seed if seed is not None else random.randrange(1 << 30)
        self.write_concern = write_concern
        self.pace_s = pace_s
        self.lock = threading.Lock()
        self.ops = []
        self.kv_ops = []
        self.observations = []
        self.polls = []
        self.errors = []         # unexpected responses (for the report)
        self.stats = {"redirect_hops": 0, "redirect_giveups": 0, "write_concern": {}}
        self.stop_ev = threading.Event()
        self.threads = []
        self.t0 = None

    # ---- setup

    def create_topic(self, timeout=30):
        c = Client(self.cluster, random.Random(self.seed), self.max_hops, self.timeout_ms)
        try:
            def attempt():
                o = c.call("POST", "/broker/topics",
                           data='{"name":"%s","partitions":%d}' % (self.topic, self.partitions))
                return o.result == "ok"
            wait_for(attempt, timeout, "topic %s created" % self.topic, 0.1)
        finally:
            c.close()

    # ---- threads

    def start(self, duration_s):
        self.t0 = time.monotonic()
        deadline = self.t0 + duration_s
        kinds = ([("produce", i) for i in range(self.n_producers)] +
                 [("read", i) for i in range(self.n_readers)] +
                 [("kv", i) for i in range(self.n_kv)])
        for kind, i in kinds:
            fn = {"produce": self._producer, "read": self._reader, "kv": self._kv}[kind]
            rng = random.Random("%d-%s-%d" % (self.seed, kind, i))
            t = threading.Thread(target=self._guard, args=(fn, i, rng, deadline),
                                 name="%s-%d" % (kind, i), daemon=True)
            self.threads.append(t)
            t.start()

    def _guard(self, fn, i, rng, deadline):
        try:
            fn(i, rng, deadline)
        except Exception as e:  # noqa: BLE001 - reported, then fails the test via errors
            with self.lock:
                self.errors.append("thread %s crashed: %r" % (threading.current_thread().name, e))

    def stop(self, timeout=60):
        self.stop_ev.set()
        for t in self.threads:
            t.join(timeout)
        alive = [t.name for t in self.threads if t.is_alive()]
        if alive:
            raise RuntimeError("workload threads did not stop: %s" % alive)

    def wait(self, timeout=600):
        """Wait for the threads to reach their deadline."""
        for t in self.threads:
            t.join(timeout)

    def running(self, deadline):
        return not self.stop_ev.is_set() and time.monotonic() < deadline

    def _record_client(self, c):
        with self.lock:
            self.stats["redirect_hops"] += c.hops
            self.stats["redirect_giveups"] += c.redirect_giveups

    def produce_once(self, c, value, partition, base=None, follow=True, retries=None):
        """One logical produce (with idempotent retries). Returns the op dict (recorded).
        base: send to this node URL (default: the client's choice); follow=False: a 307 is the
        answer (recorded as fail)."""
        params = {"partition": partition, "timeout_ms": self.timeout_ms}
        if self.idempotent:
            params["idempotency_key"] = value
        if self.write_concern:
            params["write_concern"] = self.write_concern
        start = time.monotonic()
        results, offset, outs = [], None, []
        for attempt in range(1 + (self.retries if retries is None else retries)):
            o = c.call("POST", "/broker/topics/%s/produce" % self.topic, params=params,
                       data=value.encode(), base=base, follow=follow)
            outs.append(o)
            results.append(o.result)
            if o.result == "ok":
                b = o.body or {}
                offset = b.get("offset")
                if offset is None or b.get("partition", partition) != partition:
                    with self.lock:
                        self.errors.append("bad produce answer for %s: %r" % (value, o))
                    results[-1] = "info"
                    offset = None
                    continue
                with self.lock:
                    wc = b.get("write_concern")
                    self.stats["write_concern"][wc] = self.stats["write_concern"].get(wc, 0) + 1
                break
            if o.result == "fail" and not any(r == "info" for r in results):
                break   # definitely not written, nothing to resolve
            if o.status is not None and 400 <= o.status < 500 and o.status != 409:
                with self.lock:
                    self.errors.append("unexpected %s for %s: %r" % (o.status, value, o))
                break
        op = {"f": "produce", "process": threading.current_thread().name, "value": value,
              "partition": partition, "result": _merge(results), "offset": offset,
              "start": start, "end": time.monotonic(), "idem": self.idempotent,
              "attempts": len(outs), "last": outs[-1].status}
        with self.lock:
            self.ops.append(op)
        return op

    def _producer(self, i, rng, deadline):
        c = Client(self.cluster, rng, self.max_hops, self.timeout_ms)
        seq = 0
        try:
            while self.running(deadline):
                value = "w%d-%d" % (i, seq)
                seq += 1
                self.produce_once(c, value, (i + seq) % self.partitions)
                if self.pace_s:
                    self.stop_ev.wait(self.pace_s)
        finally:
            self._record_client(c)
            c.close()

    def _reader(self, i, rng, deadline):
        c = Client(self.cluster, rng, self.max_hops, self.timeout_ms)
        nxt = {}
        try:
            while self.running(deadline):
                node = rng.choice(self.cluster.nodes)
                p = rng.randrange(self.partitions)
                start = nxt.get((node.id, p), 0)
                if rng.random() < 0.2:
                    start = rng.randrange(start + 1)
                try:
                    r = c.session.get(node.url + "/broker/consume/%s/jepsen-%d/%d" % (
                        self.topic, i, p), params={"offset": start, "limit": 100,
                                                  "encoding": "b64"}, timeout=(1.0, 3.0))
                except requests.RequestException:
                    self.stop_ev.wait(0.05)
                    continue
                if r.status_code != 200:
                    self.stop_ev.wait(0.05)
                    continue
                body = r.json()
                msgs = body.get("messages", [])
                offs = []
                with self.lock:
                    for m in msgs:
                        v = base64.b64decode(m.get("value_b64", "")).decode("utf-8", "replace")
                        self.observations.append((p, m["offset"], v, "read:" + node.id))
                        offs.append(m["offset"])
                    if not body.get("floor_adjusted"):
                        self.polls.append({"partition": p, "requested": start, "offsets": offs,
                                           "source": "read:" + node.id})
                nxt[(node.id, p)] = body.get("next_offset", start)
                if not msgs:
                    self.stop_ev.wait(0.02)
        finally:
            c.close()

    def _kv(self, i, rng, deadline):
        c = Client(self.cluster, rng, self.max_hops, self.timeout_ms)
        seq = 0
        try:
            while self.running(deadline):
                key = rng.choice(self.kv_keys)
                rd = self.kv_read(c, key, linearizable=True)
                if rd is None or not self.running(deadline):
                    continue
                value = "kv%d-%d" % (i, seq)
                seq += 1
                self.kv_cas(c, key, rd["version"], value)
        finally:
            self._record_client(c)
            c.close()

    def kv_read(self, c, key, linearizable=True, base=None):
        params = {"consistency": "leader"} if linearizable else None
        start = time.monotonic()
        o = c.call("GET", "/kv/jepsen/%s" % key, params=params, base=base)
        end = time.monotonic()
        if o.status == 404:
            op = {"f": "read", "key": key, "value": None, "version": 0, "result": "ok",
                  "linearizable": linearizable, "start": start, "end": end}
        elif o.status == 200 and isinstance(o.body, dict) and "cas" in o.body:
            v = base64.b64decode(o.body.get("value", "")).decode("utf-8", "replace")
            op = {"f": "read", "key": key, "value": v, "version": o.body["cas"], "result": "ok",
                  "linearizable": linearizable, "start": start, "end": end}
        else:
            return None
        with self.lock:
            self.kv_ops.append(op)
        return op

    def kv_cas(self, c, key, expected, value):
        start = time.monotonic()
        params = {"cas": expected, "timeout_ms": self.timeout_ms}
        if self.write_concern:
            params["write_concern"] = self.write_concern
        o = c.call("POST", "/kv/jepsen/%s" % key, params=params, data=value.encode())
        version = None
        res = o.result
        if res == "ok":
            version = (o.body or {}).get("cas")
            if version is None:
                res = "info"
                with self.lock:
                    self.errors.append("kv answer without cas: %r" % (o,))
        op = {"f": "cas", "key": key, "expected": expected, "value": value, "result": res,
              "version": version, "start": start, "end": time.monotonic(), "status": o.status}
        with self.lock:
            self.kv_ops.append(op)
        return op

    # ---- after the run

    def drain_node(self, i, timeout=60):
        """Read every partition from node i from offset 0 to the end; record observations as
        "drain:<id>". Returns {partition: [(offset, value), ...]}."""
        node = self.cluster.nodes[i]
        s = client_session()
        out = {}
        deadline = time.monotonic() + timeout
        try:
            for p in range(self.partitions):
                recs, off = [], 0
                while True:
                    if time.monotonic() > deadline:
                        raise TimeoutError("drain of %s partition %d did not finish" % (node.id, p))
                    r = s.get(node.url + "/broker/consume/%s/drain/%d" % (self.topic, p),
                              params={"offset": off, "limit": 1000, "encoding": "b64"},
                              timeout=(1.0, 10.0))
                    if r.status_code != 200:
                        raise RuntimeError("drain %s p%d offset %d: %d %s" % (
                            node.id, p, off, r.status_code, r.text[:300]))
                    body = r.json()
                    msgs = body.get("messages", [])
                    for m in msgs:
                        v = base64.b64decode(m.get("value_b64", "")).decode("utf-8", "replace")
                        recs.append((m["offset"], v))
                    if not msgs:
                        break
                    off = body["next_offset"]
                out[p] = recs
        finally:
            s.close()
        with self.lock:
            for p, recs in out.items():
                for o, v in recs:
                    self.observations.append((p, o, v, "drain:" + node.id))
        return out

    def kv_finals(self, leader_index):
        c = Client(self.cluster, random.Random(0), self.max_hops, self.timeout_ms)
        finals = {}
        try:
            for k in self.kv_keys:
                def get(k=k):
                    rd = self.kv_read(c, k, True, base=self.cluster.nodes[leader_index].url)
                    return rd
                rd = wait_for(get, 30, "final read of kv key %s" % k, 0.1)
                finals[k] = (rd["value"], rd["version"])
        finally:
            c.close()
        return finals

    def figures_extra(self):
        ok_lat = sorted(op["end"] - op["start"] for op in self.ops if op["result"] == "ok")
        ext = {"redirect hops followed": self.stats["redirect_hops"],
               "redirect give-ups": self.stats["redirect_giveups"],
               "write_concern on ok produces": self.stats["write_concern"],
               "seed": self.seed}
        if ok_lat:
            ext["ok produce latency p50/p99/max ms"] = "%.1f / %.1f / %.1f" % (
                1000 * ok_lat[len(ok_lat) // 2], 1000 * ok_lat[int(len(ok_lat) * 0.99)],
                1000 * ok_lat[-1])
        return ext
