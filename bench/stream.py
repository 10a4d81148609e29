#!/usr/bin/python3
"""bench/stream.py -- stream processing throughput, beside the sqlite3 CLI in the same run.

Starts a fresh ./ayder on 127.0.0.1 (free port, data dir under OUT), loads records through
produce-ndjson (not timed), then times, REPS times each:

  query-json    filter + group-by count/sum over N 64-byte JSON records (one partition)
  sqlite3       the same query with json_extract over the same N records (the sqlite3 CLI,
                records in a table of one TEXT column; load not timed)
  query-avro    the same filter + group-by over N Avro binary records (decode with a schema)
  query-proto   the same over N Protobuf binary records
  join          windowed inner join of two topics of N records each (time_field, size 50 ms;
                1 record in 1000 has a partner)

Every figure is records read / server time for the call ("took_us" in the answer: the scan on
one stream thread = one core), plus the client's wall time. The stream pool has one thread, so a
call uses one core; the HTTP worker, the core thread and this script share the box.

Env: N=1000000 REPS=3 OUT=bench/results/stream-<stamp> AYDER=./ayder
Prints a markdown table and writes OUT/stream.json.
"""
import base64
import json
import os
import shutil
import socket
import sqlite3
import statistics
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N = int(os.environ.get("N", "1000000"))
REPS = int(os.environ.get("REPS", "3"))
OUT = os.environ.get("OUT") or os.path.join(ROOT, "bench", "results",
                                            "stream-" + time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()))
AYDER = os.environ.get("AYDER", os.path.join(ROOT, "ayder"))
AUTH = {"Authorization": "Bearer dev"}
COUNTRIES = ["DE", "FR", "US", "JP", "BR", "IN", "KZ", "NG"]
BATCH = 100000  # lines per produce-ndjson request (the server's limit)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def http(url, body=None, method=None, timeout=600):
    data = body if body is None or isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method or ("POST" if data else "GET"),
                                 headers=dict(AUTH, **{"Content-Type": "application/json"}))
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        raise SystemExit("%s %s -> %d %s" % (req.get_method(), url, e.code, e.read()[:500]))


def record(i):
    """A ~64-byte JSON record and its fields."""
    amount = (i * 7919) % 10000 / 100.0
    country = COUNTRIES[i % len(COUNTRIES)]
    user = "u%06d" % (i % 1000000)
    return {"id": i, "user": user, "amount": amount, "country": country}


def json_line(r):
    return json.dumps(r, separators=(",", ":"))


def zz(n):
    return (n << 1) ^ (n >> 63)


def uvarint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


AVRO_SCHEMA = json.dumps({"type": "record", "name": "Order", "fields": [
    {"name": "id", "type": "long"}, {"name": "user", "type": "string"},
    {"name": "amount", "type": "double"}, {"name": "country", "type": "string"}]})


def avro_bin(r):
    u, c = r["user"].encode(), r["country"].encode()
    return (uvarint(zz(r["id"])) + uvarint(zz(len(u))) + u + struct.pack("<d", r["amount"])
            + uvarint(zz(len(c))) + c)


PROTO_SCHEMA = """syntax = "proto3";
package bench;
message Order { int64 id = 1; string user = 2; double amount = 3; string country = 4; }
"""


def proto_bin(r):
    u, c = r["user"].encode(), r["country"].encode()
    return (b"\x08" + uvarint(r["id"]) + b"\x12" + uvarint(len(u)) + u
            + b"\x19" + struct.pack("<d", r["amount"]) + b"\x22" + uvarint(len(c)) + c)


def load(url, topic, lines, b64=False):
    http(url + "/broker/topics", {"name": topic, "partitions": 1})
    for i in range(0, len(lines), BATCH):
        body = ("\n".join(lines[i:i + BATCH]) + "\n").encode()
        q = "?partition=0" + ("&encoding=b64" if b64 else "")
        r = http(url + "/broker/topics/%s/produce-ndjson%s" % (topic, q), body)
        assert r.get("ok"), r


QUERY = {"filter": [{"field": "amount", "op": "gt", "value": 50}],
         "aggregate": {"group_by": ["country"],
                       "measures": [{"op": "count"}, {"op": "sum", "field": "amount"}]}}
SQL = ("SELECT json_extract(v,'$.country'), count(*), sum(json_extract(v,'$.amount')) FROM t "
       "WHERE json_extract(v,'$.amount') > 50 GROUP BY 1 ORDER BY 1;")


def run_query(url, topic, decode=None):
    q = dict(QUERY)
    q["source"] = {"topic": topic, "partition": 0, "offset": 0, "limit": N}
    if decode:
        q["source"]["decode"] = decode
    t0 = time.perf_counter()
    r = http(url + "/broker/query", q)
    wall = time.perf_counter() - t0
    assert r.get("ok"), r
    assert r["stats"]["scanned"] == N, r["stats"]
    return r["took_us"] / 1e6, wall, {a["key"]: (a["count"], a.get("sum_amount")) for a in r["aggregates"]}


def run_join(url):
    q = {"left": {"topic": "jl", "partition": 0, "offset": 0, "limit": N},
         "right": {"topic": "jr", "partition": 0, "offset": 0, "limit": N},
         "on": {"left_key": "k", "right_key": "k"}, "join": {"type": "inner"},
         "window": {"size_ms": 50, "time_field": "t"}, "emit": {"max_rows": 100000}}
    t0 = time.perf_counter()
    r = http(url + "/broker/join", q)
    wall = time.perf_counter() - t0
    assert r.get("ok"), r
    st = r["stats"]
    assert st["left_scanned"] == N and st["right_scanned"] == N, st
    return r["took_us"] / 1e6, wall, st["rows"]


def main():
    os.makedirs(OUT, exist_ok=True)
    data = os.path.join(OUT, "data-stream")
    shutil.rmtree(data, ignore_errors=True)
    port = free_port()
    url = "http://127.0.0.1:%d" % port
    log = open(os.path.join(OUT, "ayder-stream.log"), "wb")
    env = dict(os.environ, RF_BEARER_TOKENS="dev")
    proc = subprocess.Popen([AYDER, "--port", str(port), "--bind", "127.0.0.1", "--data-dir", data,
                             "--log-level", "warn", "--stream-max-records", str(2 * N)],
                            stdout=log, stderr=log, env=env)
    results = []
    try:
        deadline = time.time() + 30
        while True:
            try:
                http(url + "/ready")
                break
            except Exception:
                if time.time() > deadline or proc.poll() is not None:
                    raise SystemExit("ayder did not start; see %s" % log.name)
                time.sleep(0.05)
        recs = [record(i) for i in range(N)]
        lines = [json_line(r) for r in recs]
        avg_len = sum(map(len, lines)) / N
        print("loading %d records (JSON avg %.1f B) ..." % (N, avg_len), file=sys.stderr)
        load(url, "qjson", lines)
        load(url, "qavro", [base64.b64encode(avro_bin(r)).decode() for r in recs], b64=True)
        load(url, "qproto", [base64.b64encode(proto_bin(r)).decode() for r in recs], b64=True)
        left = [json_line({"k": i % 100000, "t": i, "v": "l%07d" % i}) for i in range(N)]
        right = [json_line({"k": (i % 100000) if i % 1000 == 0 else 200000 + i % 100000,
                            "t": i, "v": "r%07d" % i}) for i in range(N)]
        load(url, "jl", left)
        load(url, "jr", right)
        db = os.path.join(OUT, "stream.sqlite")
        if os.path.exists(db):
            os.remove(db)
        con = sqlite3.connect(db)
        con.execute("CREATE TABLE t(v TEXT)")
        con.executemany("INSERT INTO t VALUES (?)", ((l,) for l in lines))
        con.commit()
        con.close()
        avro_dec = {"type": "avro", "schema_text": AVRO_SCHEMA}
        proto_dec = {"type": "proto", "schema_text": PROTO_SCHEMA, "message": "bench.Order"}
        want = None
        for rep in range(REPS):
            for name, dec in (("query-json", None), ("query-avro", avro_dec), ("query-proto", proto_dec)):
                took, wall, aggs = run_query(url, "q" + name.split("-")[1], dec)
                if want is None:
                    want = aggs
                assert {k: v[0] for k, v in aggs.items()} == {k: v[0] for k, v in want.items()}, name
                results.append({"case": name, "rep": rep, "server_s": took, "wall_s": wall})
            t0 = time.perf_counter()
            out = subprocess.run(["sqlite3", db, SQL], capture_output=True, text=True, check=True)
            wall = time.perf_counter() - t0
            rows = [l.split("|") for l in out.stdout.strip().splitlines()]
            assert {"country=" + r[0]: int(r[1]) for r in rows} == {k: v[0] for k, v in want.items()}
            results.append({"case": "sqlite3", "rep": rep, "server_s": wall, "wall_s": wall})
            took, wall, rows_out = run_join(url)
            results.append({"case": "join", "rep": rep, "server_s": took, "wall_s": wall,
                            "rows": rows_out})
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
    with open(os.path.join(OUT, "stream.json"), "w") as f:
        json.dump({"n": N, "reps": REPS, "results": results}, f, indent=1)
    med = {}
    for c in ("query-json", "sqlite3", "query-avro", "query-proto", "join"):
        xs = [r["server_s"] for r in results if r["case"] == c]
        ws = [r["wall_s"] for r in results if r["case"] == c]
        med[c] = (statistics.median(xs), statistics.median(ws))
    records = {"join": 2 * N}
    print("\n| case | records | median time (s) | M records/s | client wall (s) |")
    print("|---|---:|---:|---:|---:|")
    for c, (t, w) in med.items():
        n = records.get(c, N)
        print("| %s | %d | %.3f | %.2f | %.3f |" % (c, n, t, n / t / 1e6, w))
    print("\nquery-json ÷ sqlite3 (records/s, same records, same run): %.1f×"
          % (med["sqlite3"][0] / med["query-json"][0]))
    print("results: %s" % OUT)


if __name__ == "__main__":
    main()
