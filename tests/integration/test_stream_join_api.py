"""POST /broker/join over HTTP, black box (docs/STREAM.md "Joins"): the original's request and
row shape; a Python nested-loop oracle for inner/left/right/full joins with composite keys, the
window predicate |t_l - t_r| <= size_ms on a payload time field, null/missing keys, late records
and dedupe_once; resume equivalence (random small limits, commits between calls, the rows of all
calls = the rows of one call = the oracle); the progress rule; errors with their paths."""
import json
import random
import time
from collections import Counter

import pytest

from conftest import assert_error
from streamutil import (ModuleNode, create_topic, join, produce_json, timestamps,
                        wait_clock_after)

NEVER_LATE = 4 * 10 ** 12  # allowed lateness beyond any clock: nothing is late, only log ends close


@pytest.fixture(scope="module")
def n():
    m = ModuleNode()
    yield m.node
    m.close()


# --- the oracle ----------------------------------------------------------------------------------

def key_of(rec, fields):
    vals = []
    for f in fields:
        v = rec.get(f)
        if v is None or isinstance(v, (dict, list)):
            return None
        vals.append(v)
    return tuple(vals)


def time_of(rec, field):
    t = rec.get(field)
    if isinstance(t, bool) or not isinstance(t, (int, float)) or t != int(t):
        return None
    return int(t)


def oracle(left, right, jtype, size, lateness, dedupe, lkeys, rkeys, tf="t"):
    """left/right: lists of (clock, record). Rows as (left id, right id, left_ts, right_ts, key)."""
    def prep(side, keys):
        out = []
        for clock, rec in side:
            t = time_of(rec, tf)
            late = t is not None and t < clock - lateness
            out.append({"id": rec["id"], "t": t, "k": key_of(rec, keys), "late": late})
        return out

    L, R = prep(left, lkeys), prep(right, rkeys)
    pairs = []
    for i, l in enumerate(L):
        for j, r in enumerate(R):
            if l["late"] or r["late"] or l["t"] is None or r["t"] is None:
                continue
            if l["k"] is None or l["k"] != r["k"]:
                continue
            if abs(l["t"] - r["t"]) <= size:
                pairs.append((abs(l["t"] - r["t"]), i, j))
    matched_l = {i for _, i, _ in pairs}
    matched_r = {j for _, _, j in pairs}
    if dedupe:
        kept, used_l, used_r = [], set(), set()
        for d, i, j in sorted(pairs):
            if i not in used_l and j not in used_r:
                kept.append((d, i, j))
                used_l.add(i)
                used_r.add(j)
        pairs = kept

    def ks(k):
        return None if k is None else "|".join(str(c) for c in k)

    rows = [(L[i]["id"], R[j]["id"], L[i]["t"], R[j]["t"], ks(L[i]["k"])) for _, i, j in pairs]
    if jtype in ("left", "full"):
        rows += [(l["id"], None, None, None, ks(l["k"])) for i, l in enumerate(L)
                 if not l["late"] and i not in matched_l]
    if jtype in ("right", "full"):
        rows += [(None, r["id"], None, None, ks(r["k"])) for j, r in enumerate(R)
                 if not r["late"] and j not in matched_r]
    late = (sum(x["late"] for x in L), sum(x["late"] for x in R))
    return Counter(rows), late


def rows_of(body):
    out = Counter()
    for r in body["rows"]:
        assert set(r) == {"key", "left_ts_ms", "right_ts_ms", "left", "right"}, r
        lid = r["left"]["id"] if r["left"] else None
        rid = r["right"]["id"] if r["right"] else None
        out[(lid, rid, r["left_ts_ms"], r["right_ts_ms"], r["key"])] += 1
    return out


# --- the original's request ----------------------------------------------------------------------

def test_original_request_and_row_shape(n):
    create_topic(n, "jL", 1)
    create_topic(n, "jR", 1)
    produce_json(n, "jL", [{"uid": 1, "city": "NY", "name": "ann"},
                           {"uid": 2, "city": "SF", "name": "bob"}])
    produce_json(n, "jR", [{"uid": 1, "city": "NY", "item": "book"},
                           {"uid": 3, "city": "LA", "item": "pen"}])
    # verbatim from original-ayder.md 3.10 (event time = the record timestamps: same batch)
    req = {"left": {"topic": "jL", "group": "gL", "partition": 0, "offset": 0, "limit": 100},
           "right": {"topic": "jR", "group": "gR", "partition": 0, "offset": 0, "limit": 100},
           "on": {"left_keys": ["uid", "city"], "right_keys": ["uid", "city"]},
           "join": {"type": "full"},
           "window": {"size_ms": 60000, "allowed_lateness_ms": 0},
           "emit": {"left_fields": ["uid", "name"], "right_fields": ["item"], "max_rows": 50,
                    "missing_as": "null"},
           "dedupe_once": True}
    b = join(n, req)
    assert b["ok"] is True
    rows = b["rows"]
    assert rows[0]["key"] == "1|NY" and rows[0]["left"] == {"uid": 1, "name": "ann"}
    assert rows[0]["right"] == {"item": "book"}
    assert isinstance(rows[0]["left_ts_ms"], int) and isinstance(rows[0]["right_ts_ms"], int)
    assert abs(rows[0]["left_ts_ms"] - rows[0]["right_ts_ms"]) <= 60000
    outer = sorted((r["key"], r["left"], r["right"], r["left_ts_ms"], r["right_ts_ms"])
                   for r in rows[1:])
    assert outer == [("2|SF", {"uid": 2, "name": "bob"}, None, None, None),
                     ("3|LA", None, {"item": "pen"}, None, None)]
    assert b["next_offsets"] == {"left": 2, "right": 2}
    st = b["stats"]
    assert (st["left_scanned"], st["right_scanned"], st["rows"], st["outer_left"],
            st["outer_right"], st["dedupe_once"]) == (2, 2, 3, 1, 1, True)
    assert st["watermark_ms"] is None  # both sides reached their log end
    # single-key form, "missing_as":"empty", inner by default, "dedupe":{"mode":"once"}
    b = join(n, {"left": {"topic": "jL", "partition": 0, "offset": 0},
                 "right": {"topic": "jR", "partition": 0, "offset": 0},
                 "on": {"left_key": "uid", "right_key": "uid"},
                 "window": {"size_ms": 60000}, "emit": {"missing_as": "empty"},
                 "dedupe": {"mode": "once"}})
    assert [(r["key"], r["left"]["name"], r["right"]["item"]) for r in b["rows"]] == \
        [("1", "ann", "book")]
    assert b["stats"]["type"] == "inner" and b["stats"]["dedupe_once"] is True
    b = join(n, {"left": {"topic": "jL", "partition": 0, "offset": 0},
                 "right": {"topic": "jR", "partition": 0, "offset": 0},
                 "on": {"left_key": "uid", "right_key": "uid"}, "join": {"type": "right"},
                 "window": {"size_ms": 60000}, "emit": {"missing_as": "empty",
                                                        "left_fields": ["name"]}})
    assert sorted((r["key"], r["left"].get("name"), r["right"]["item"]) for r in b["rows"]) == \
        [("1", "ann", "book"), ("3", None, "pen")]
    assert [r["left"] for r in b["rows"] if r["key"] == "3"] == [{}]


# --- the oracle over all four types --------------------------------------------------------------

def rand_side(rnd, prefix, count, nulls=True):
    recs = []
    for i in range(count):
        r = {"id": "%s%d" % (prefix, i), "t": rnd.randint(0, 120)}
        c = rnd.random()
        if nulls and c < 0.06:
            pass  # k1 missing
        elif nulls and c < 0.12:
            r["k1"] = None
        else:
            r["k1"] = rnd.randint(0, 3)
        r["k2"] = rnd.choice(["a", "b"])
        if rnd.random() < 0.05:
            del r["t"]  # untimed: never matches, yields its outer row
        recs.append(r)
    return recs


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_all_four_types_against_the_oracle(n, seed):
    rnd = random.Random(seed)
    lt, rt = "ojL%d" % seed, "ojR%d" % seed
    create_topic(n, lt, 1)
    create_topic(n, rt, 1)
    left = rand_side(rnd, "l", 60)
    right = rand_side(rnd, "r", 60)
    # right keys under other names and with the int written as a double (7.0 = 7 by value)
    rrecs = []
    for r in right:
        x = {"id": r["id"], "kk": r["k2"]}
        if "t" in r:
            x["t"] = r["t"]
        if "k1" in r:
            x["uid"] = float(r["k1"]) if r["k1"] is not None and rnd.random() < 0.3 else r["k1"]
        rrecs.append(x)
    produce_json(n, lt, left)
    produce_json(n, rt, rrecs)
    lc = [(0, r) for r in left]
    rc = [(0, r) for r in right]
    for jtype in ("inner", "left", "right", "full"):
        for dedupe in (False, True):
            for size in (0, 3, 10):
                b = join(n, {"left": {"topic": lt, "partition": 0, "offset": 0, "limit": 1000},
                             "right": {"topic": rt, "partition": 0, "offset": 0, "limit": 1000},
                             "on": {"left_keys": ["k1", "k2"], "right_keys": ["uid", "kk"]},
                             "join": {"type": jtype},
                             "window": {"size_ms": size, "time_field": "t",
                                        "allowed_lateness_ms": NEVER_LATE},
                             "emit": {"max_rows": 100000, "left_fields": ["id"],
                                      "right_fields": ["id"]},
                             "dedupe_once": dedupe})
                want, _ = oracle(lc, rc, jtype, size, NEVER_LATE, dedupe, ["k1", "k2"],
                                 ["k1", "k2"])
                got = rows_of(b)
                # a double key component renders like the JSON value it came from; compare keys
                # of pairs through the left record (ints), of right outer rows by record id only
                got = Counter({k[:4] + (k[4] if k[0] is not None else None,): c
                               for k, c in got.items()})
                want = Counter({k[:4] + (k[4] if k[0] is not None else None,): c
                                for k, c in want.items()})
                assert got == want, (seed, jtype, dedupe, size)
                st = b["stats"]
                assert st["rows"] == sum(want.values())
                assert st["left"]["null_key"] == sum(1 for r in left if r.get("k1") is None)
                assert st["left"]["untimed"] == sum(1 for r in left if "t" not in r)
                assert b["next_offsets"] == {"left": 60, "right": 60}


def test_window_edges_and_late_records(n):
    create_topic(n, "eL", 1)
    create_topic(n, "eR", 1)
    produce_json(n, "eL", [{"id": "l0", "k": 1, "t": 1000}, {"id": "l1", "k": 2, "t": 1000}])
    produce_json(n, "eR", [{"id": "r0", "k": 1, "t": 1010}, {"id": "r1", "k": 2, "t": 1011},
                           {"id": "r2", "k": 1, "t": 990}, {"id": "r3", "k": 1, "t": 989}])
    base = {"left": {"topic": "eL", "partition": 0, "offset": 0},
            "right": {"topic": "eR", "partition": 0, "offset": 0},
            "on": {"left_key": "k", "right_key": "k"}, "join": {"type": "inner"},
            "emit": {"left_fields": ["id"], "right_fields": ["id"]}}
    b = join(n, dict(base, window={"size_ms": 10, "time_field": "t",
                                   "allowed_lateness_ms": NEVER_LATE}))
    # exactly size_ms apart matches, size_ms + 1 does not
    assert sorted((r["left"]["id"], r["right"]["id"]) for r in b["rows"]) == \
        [("l0", "r0"), ("l0", "r2")]
    # with lateness 0 every record (t = 1000 ms after the epoch, clock = now) is late: no row,
    # counted on both sides, never silently dropped
    b = join(n, dict(base, join={"type": "full"},
                     window={"size_ms": 10, "time_field": "t", "allowed_lateness_ms": 0}))
    assert b["rows"] == []
    assert b["stats"]["left"]["late"] == 2 and b["stats"]["right"]["late"] == 4
    # event time = the record timestamp: nothing is ever late (the two batches are moments apart)
    b = join(n, dict(base, window={"size_ms": 60000}))
    assert sorted((r["left"]["id"], r["right"]["id"]) for r in b["rows"]) == \
        [("l0", "r0"), ("l0", "r2"), ("l0", "r3"), ("l1", "r1")]
    assert b["stats"]["left"]["late"] == 0


# --- resume equivalence --------------------------------------------------------------------------

def produce_timed(n, lt, rt, rnd, batches):
    """Interleaved small batches whose event times sit near the wall clock (jitter -25..+10 ms):
    with allowed_lateness 20 some are late, and the clocks move on between batches so windows
    close before the log end."""
    ids = {"l": 0, "r": 0}
    last = 0
    for b in range(batches):
        side = rnd.choice("lr")
        recs = []
        now = int(time.time() * 1000)
        for _ in range(rnd.randint(1, 3)):
            i = ids[side]
            ids[side] += 1
            r = {"id": "%s%d" % (side, i), "k": rnd.randint(0, 2), "t": now + rnd.randint(-25, 10)}
            if rnd.random() < 0.05:
                r["k"] = None
            recs.append(r)
        ans = produce_json(n, lt if side == "l" else rt, recs)
        last = ans["timestamp_ms"]
        wait_clock_after(last + 4)  # let the clock move a few ms
    return ids


def side_records(n, topic):
    ts = timestamps(n, topic)
    r = n.get("/broker/consume/%s/nogroup/0" % topic, params={"offset": 0, "limit": 1000})
    msgs = r.json()["messages"]
    return [(ts[m["offset"]], json.loads(m["value"])) for m in msgs]


@pytest.mark.parametrize("seed,jtype,dedupe", [(11, "inner", False), (12, "left", True),
                                               (13, "right", False), (14, "full", True),
                                               (15, "full", False), (16, "inner", True)])
def test_resume_equivalence(n, seed, jtype, dedupe):
    rnd = random.Random(seed)
    lt, rt = "rjL%d" % seed, "rjR%d" % seed
    create_topic(n, lt, 1)
    create_topic(n, rt, 1)
    produce_timed(n, lt, rt, rnd, 45)
    L, R = side_records(n, lt), side_records(n, rt)
    size = rnd.choice([0, 5, 15, 30])
    lateness = 20
    common = {"on": {"left_key": "k", "right_key": "k"}, "join": {"type": jtype},
              "window": {"size_ms": size, "time_field": "t", "allowed_lateness_ms": lateness},
              "emit": {"left_fields": ["id"], "right_fields": ["id"], "max_rows": 100000},
              "dedupe_once": dedupe}
    want, late = oracle(L, R, jtype, size, lateness, dedupe, ["k"], ["k"])
    big = join(n, dict(common, left={"topic": lt, "partition": 0, "offset": 0, "limit": 5000},
                       right={"topic": rt, "partition": 0, "offset": 0, "limit": 5000}))
    assert rows_of(big) == want, (seed, jtype, size, dedupe)
    assert (big["stats"]["left"]["late"], big["stats"]["right"]["late"]) == late
    assert big["next_offsets"] == {"left": len(L), "right": len(R)}
    # the same range in small calls, committing next_offsets between them
    got = Counter()
    lates = [0, 0]
    gl, gr = "gl%d" % seed, "gr%d" % seed
    calls = 0
    while True:
        calls += 1
        assert calls < 500
        use_flag = rnd.random() < 0.5
        req = dict(common,
                   left={"topic": lt, "group": gl, "partition": 0, "limit": rnd.randint(1, 6)},
                   right={"topic": rt, "group": gr, "partition": 0, "limit": rnd.randint(1, 6)})
        if use_flag:
            req["commit"] = True
        b = join(n, req)
        got += rows_of(b)
        lates[0] += b["stats"]["left"]["late"]
        lates[1] += b["stats"]["right"]["late"]
        nxt = b["next_offsets"]
        if use_flag:
            assert b.get("committed") is True
        else:
            for topic, g, off in ((lt, gl, nxt["left"]), (rt, gr, nxt["right"])):
                r = n.post("/broker/commit", json={"topic": topic, "group": g, "partition": 0,
                                                   "offset": off})
                assert r.status_code == 200, r.text
        if nxt == {"left": len(L), "right": len(R)}:
            break
    assert got == want, (seed, jtype, size, dedupe, calls)
    assert tuple(lates) == late
    # the range really was split (how often a call ends before both log ends depends on timing)
    assert calls > 1
    # nothing is left: one more call reads nothing and yields nothing
    b = join(n, dict(common, left={"topic": lt, "group": gl, "partition": 0},
                     right={"topic": rt, "group": gr, "partition": 0}))
    assert b["rows"] == [] and b["next_offsets"] == {"left": len(L), "right": len(R)}


def test_progress_rule_when_windows_are_wider_than_limits(n):
    create_topic(n, "pL", 1)
    create_topic(n, "pR", 1)
    produce_json(n, "pL", [{"id": "l%d" % i, "k": i % 2, "t": 100 + i} for i in range(20)])
    produce_json(n, "pR", [{"id": "r%d" % i, "k": i % 2, "t": 100 + i} for i in range(20)])
    L = [(0, {"id": "l%d" % i, "k": i % 2, "t": 100 + i}) for i in range(20)]
    R = [(0, {"id": "r%d" % i, "k": i % 2, "t": 100 + i}) for i in range(20)]
    want, _ = oracle(L, R, "full", 1000, NEVER_LATE, False, ["k"], ["k"])
    got = Counter()
    calls = 0
    while True:
        calls += 1
        assert calls <= 40, "no progress"
        b = join(n, {"left": {"topic": "pL", "group": "pg", "partition": 0, "limit": 1},
                     "right": {"topic": "pR", "group": "pg", "partition": 0, "limit": 1},
                     "on": {"left_key": "k", "right_key": "k"}, "join": {"type": "full"},
                     "window": {"size_ms": 1000, "time_field": "t",
                                "allowed_lateness_ms": NEVER_LATE},
                     "emit": {"left_fields": ["id"], "right_fields": ["id"], "max_rows": 100000},
                     "commit": True})
        assert b["next_offsets"] != {"left": 0, "right": 0} or calls > 1
        got += rows_of(b)
        if b["next_offsets"] == {"left": 20, "right": 20}:
            break
    assert got == want
    # a limit of one record per side still consumed everything in one call: every window is
    # open until the log ends, so the call doubled its limits until both sides reached it
    assert calls == 1


def test_max_rows_cuts_and_the_rest_comes_next_call(n):
    create_topic(n, "mL", 1)
    create_topic(n, "mR", 1)
    # rows are cut at a clock: one batch per clock
    for i in range(10):
        produce_json(n, "mL", [{"id": "l%d" % i, "k": i, "t": 10 * i}])
        a = produce_json(n, "mR", [{"id": "r%d" % i, "k": i, "t": 10 * i + 1}])
        wait_clock_after(a["timestamp_ms"])
    got = Counter()
    for call in range(20):
        b = join(n, {"left": {"topic": "mL", "group": "mg", "partition": 0},
                     "right": {"topic": "mR", "group": "mg", "partition": 0},
                     "on": {"left_key": "k", "right_key": "k"},
                     "window": {"size_ms": 5, "time_field": "t",
                                "allowed_lateness_ms": NEVER_LATE},
                     "emit": {"left_fields": ["id"], "right_fields": ["id"], "max_rows": 3},
                     "commit": True})
        assert len(b["rows"]) <= 3
        got += rows_of(b)
        if b["next_offsets"] == {"left": 10, "right": 10}:
            break
    assert sorted(k[:2] for k in got.elements()) == sorted(("l%d" % i, "r%d" % i)
                                                           for i in range(10))
    assert call >= 3
    # one record whose pairs do not fit: 413 naming the limit
    create_topic(n, "m2L", 1)
    create_topic(n, "m2R", 1)
    produce_json(n, "m2L", [{"k": 1, "t": 5}])
    produce_json(n, "m2R", [{"k": 1, "t": 5}, {"k": 1, "t": 6}])
    r = n.post("/broker/join", json={"left": {"topic": "m2L", "partition": 0, "offset": 0},
                                     "right": {"topic": "m2R", "partition": 0, "offset": 0},
                                     "on": {"left_key": "k", "right_key": "k"},
                                     "window": {"size_ms": 5, "time_field": "t",
                                                "allowed_lateness_ms": NEVER_LATE},
                                     "emit": {"max_rows": 1}})
    body = assert_error(r, 413, "query_limit", extra=("path",))
    assert body["path"] == "max_rows"


def test_errors_name_the_offending_path(n):
    create_topic(n, "xL", 2)
    create_topic(n, "xR", 1)
    ok = {"left": {"topic": "xL", "partition": 0}, "right": {"topic": "xR", "partition": 0},
          "on": {"left_key": "k", "right_key": "k"}, "window": {"size_ms": 10}}
    assert join(n, ok)["ok"] is True

    def with_(path, value):
        import copy
        req = copy.deepcopy(ok)
        cur = req
        for p in path[:-1]:
            cur = cur[p]
        if value is KeyError:
            del cur[path[-1]]
        else:
            cur[path[-1]] = value
        return req

    cases = [
        (with_(["bogus"], 1), 422, "/bogus"),
        (with_(["left", "offest"], 1), 422, "/left/offest"),
        (with_(["left", "limit"], 0), 422, "/left/limit"),
        (with_(["right", "topic"], KeyError), 422, "/right/topic"),
        (with_(["on", "left_key"], KeyError), 422, "/on/left_key"),
        (with_(["on"], {"left_keys": ["k", "j"], "right_keys": ["k"]}), 422, "/on"),
        (with_(["on"], {"left_keys": ["k", "a["], "right_keys": ["k", "j"]}), 422,
         "/on/left_keys/1"),
        (with_(["on", "right_key"], "$nope"), 422, "/on/right_key"),
        (with_(["join"], {"type": "cross"}), 422, "/join/type"),
        (with_(["window"], KeyError), 422, "/window"),
        (with_(["window"], {"allowed_lateness_ms": 5}), 422, "/window/size_ms"),
        (with_(["window", "size_ms"], -1), 422, "/window/size_ms"),
        (with_(["emit"], {"max_rows": 0}), 422, "/emit/max_rows"),
        (with_(["emit"], {"missing_as": "zero"}), 422, "/emit/missing_as"),
        (with_(["emit"], {"left_fields": ["ok", ""]}), 422, "/emit/left_fields/1"),
        (with_(["dedupe_once"], "yes"), 422, "/dedupe_once"),
        (with_(["left", "commit"], True), 422, "/left/commit"),
        (with_(["left", "topic"], "nope"), 404, "/left/topic"),
        (with_(["right", "partition"], 1), 400, "/right/partition"),
        (with_(["left", "decode"], {"type": "xml"}), 422, "/left/decode/type"),
    ]
    for req, status, path in cases:
        r = n.post("/broker/join", json=req)
        body = assert_error(r, status, extra=("path",))
        assert body["path"] == path, (req, body)
    body = assert_error(n.post("/broker/join", data=b"{"), 400, "invalid_json", extra=("path",))
    assert body["path"] == "1:1", body
    import requests
    assert_error(requests.post(n.url + "/broker/join", json=ok, timeout=10), 401, "unauthorized")
