"""POST /broker/query over HTTP, black box (docs/STREAM.md): the original's request and answer
shape, every filter op (nested paths, record metadata), every measure, tumbling and hopping
windows on a payload time field, multi-partition sources, group resume and "commit":true, time
ranges, stats for records that do not parse, errors with their path, limits, auth; and a small
differential against Python's sqlite3 (json_extract) over the same records."""
import json
import random
import sqlite3

import pytest
import requests

from conftest import assert_error
from streamutil import (ModuleNode, create_topic, produce_json, produce_one, query,
                        wait_clock_after)


@pytest.fixture(scope="module")
def n():
    m = ModuleNode()
    yield m.node
    m.close()


# --- the original's request and answer ------------------------------------------------------

def test_original_request_and_answer_shape(n):
    create_topic(n, "q", 1)
    recs = [{"team": "A", "name": "Ann", "score": 95}, {"team": "B", "name": "Bob", "score": 70},
            {"team": "A", "name": "Cid", "score": 85}, {"team": "A", "name": "Ann", "score": 90},
            {"team": "B", "name": "Dee", "score": 99}]
    produce_json(n, "q", recs)
    # the original's request verbatim (seed README / original-ayder.md 3.9)
    req = {"source": {"topic": "q", "group": "qg", "partition": 0, "offset": 0, "limit": 200},
           "filter": [{"field": "team", "op": "eq", "value": "A"},
                      {"field": "score", "op": "ge", "value": 90}],
           "aggregate": {"group_by": ["team", "name"]},
           "transform": {"left_fields": ["name", "score"], "emit_rows": 10}}
    b = query(n, req)
    assert b["ok"] is True
    assert b["rows"] == [{"name": "Ann", "score": 95}, {"name": "Ann", "score": 90}]
    assert [(a["key"], a["count"]) for a in b["aggregates"]] == [("team=A|name=Ann", 2)]
    assert b["aggregates"][0]["group"] == {"team": "A", "name": "Ann"}
    src = b["source"]
    assert (src["topic"], src["group"], src["partition"], src["next_offset"], src["consumed"]) == \
        ("q", "qg", 0, 5, 5)
    assert b["stats"]["scanned"] == 5 and b["stats"]["matched"] == 2
    # a query never commits unless asked
    r = n.get("/broker/groups/qg")
    assert r.status_code in (200, 404), r.text
    if r.status_code == 200:
        assert not any(t.get("topic") == "q" for t in r.json().get("topics", [])), r.text
    # emit_rows defaults to 0 with transform/aggregate (the original); without either every row
    b = query(n, {"source": {"topic": "q", "partition": 0, "offset": 0},
                  "aggregate": {"group_by": ["team"]}})
    assert b["rows"] == [] and [(a["key"], a["count"]) for a in b["aggregates"]] == \
        [("team=A", 3), ("team=B", 2)]
    b = query(n, {"source": {"topic": "q", "partition": 0, "offset": 2, "limit": 2}})
    assert b["rows"] == recs[2:4] and b["source"]["next_offset"] == 4
    assert b["source"]["consumed"] == 2


# --- filters: a Python model of docs/STREAM.md "Values" and "Filters" ----------------------------

def kind(v):
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, (int, float)):
        return "num"
    if isinstance(v, str):
        return "str"
    return "json"


def v_eq(a, b):
    return kind(a) == kind(b) and kind(a) in ("num", "str", "bool") and a == b


def v_cmp(a, b):
    if kind(a) != kind(b) or kind(a) not in ("num", "str", "bool"):
        return None
    return (a > b) - (a < b)


def walk(rec, steps):
    v = rec
    for s in steps:
        if isinstance(s, int):
            v = v[s] if isinstance(v, list) and s < len(v) else None
        else:
            v = v.get(s) if isinstance(v, dict) else None
        if v is None:
            return None
    return v


def present(rec, steps):
    v = rec
    for s in steps:
        if isinstance(s, int):
            if not (isinstance(v, list) and s < len(v)):
                return False
        elif not (isinstance(v, dict) and s in v):
            return False
        v = v[s]
    return True


def holds(op, v, operand, is_present):
    c = v_cmp(v, operand) if op in ("lt", "le", "gt", "ge") else None
    if op == "eq":
        return v_eq(v, operand)
    if op == "ne":
        return v is not None and not v_eq(v, operand)
    if op == "lt":
        return c is not None and c < 0
    if op == "le":
        return c is not None and c <= 0
    if op == "gt":
        return c is not None and c > 0
    if op == "ge":
        return c is not None and c >= 0
    if op == "in":
        return v is not None and any(v_eq(v, x) for x in operand)
    if op == "nin":
        return v is not None and not any(v_eq(v, x) for x in operand)
    if op == "contains":
        if isinstance(v, str) and isinstance(operand, str):
            return operand in v
        return isinstance(v, list) and any(v_eq(e, operand) for e in v)
    if op == "exists":
        return is_present if operand is not False else not is_present
    if op == "is_null":
        return (v is None) if operand is not False else v is not None
    raise AssertionError(op)


OPS_RECS = [
    {"id": 0, "v": 5, "s": "apple", "b": True, "a": {"b": {"c": 1}},
     "items": [{"sku": "x1"}, {"sku": "y"}], "tags": ["red", "blue"], "a.b": {"c": "dot"}},
    {"id": 1, "v": 5.0, "s": "banana", "b": False, "a": {"b": {"c": 2}}, "items": [{"sku": "x2"}],
     "tags": ["green"]},
    {"id": 2, "v": "5", "s": "cherry", "a": {"b": 1}, "items": [], "tags": [5, "red"]},
    {"id": 3, "v": None, "s": "", "a": None, "tags": "red,green"},
    {"id": 4, "s": "Apple", "b": True, "a": {"b": {"c": 3.5}}, "items": [{"sku": None}]},
    {"id": 5, "v": -7, "s": "applesauce", "b": False, "a": {"b": {"c": "1"}},
     "n": 9007199254740993},
    {"id": 6, "v": 12.5, "s": "zeta", "a": {"b": {"c": [1]}}, "items": {"0": {"sku": "obj"}},
     "n": 9007199254740992.0},
    {"id": 7, "v": True, "s": "\u00e9t\u00e9", "a": "str", "tags": []},
]

# (field text, steps for the model)
PATHS = [("v", ["v"]), ("s", ["s"]), ("b", ["b"]), ("a.b.c", ["a", "b", "c"]),
         ("a.b", ["a", "b"]), ("items[0].sku", ["items", 0, "sku"]),
         ("items[1].sku", ["items", 1, "sku"]), ("tags", ["tags"]), ("n", ["n"]),
         ("`a.b`.c", ["a.b", "c"]), ("nope.deeper", ["nope", "deeper"])]

OPERANDS = {"eq": [5, 5.0, "5", True, "apple", 1, "x1", 9007199254740992],
            "ne": [5, "apple", False, 1],
            "lt": [5, "b", True, 9007199254740993, 2],
            "le": [5, "apple", False, 1],
            "gt": [0, "a", False, 9007199254740992],
            "ge": [5.0, "banana", True, 3.5],
            "in": [[5, "apple"], ["x1", "x2", 1], [True], ["5", -7]],
            "nin": [[5, "apple"], ["x1"], [False, 2]],
            "contains": ["red", "app", 5, "", "dot"],
            "exists": [True, False],
            "is_null": [True, False]}


def test_every_op_on_nested_paths_matches_the_model(n):
    create_topic(n, "ops", 1)
    produce_json(n, "ops", OPS_RECS)
    cases = 0
    for field, steps in PATHS:
        for op, operands in OPERANDS.items():
            for operand in operands:
                req = {"source": {"topic": "ops", "partition": 0, "offset": 0},
                       "filter": [{"field": field, "op": op, "value": operand}],
                       "transform": {"left_fields": ["id"], "emit_rows": 100}}
                got = [r["id"] for r in query(n, req)["rows"]]
                want = [r["id"] for r in OPS_RECS
                        if holds(op, walk(r, steps), operand, present(r, steps))]
                assert got == want, (field, op, operand, got, want)
                cases += 1
    assert cases > 300
    # exists / is_null without "value"
    b = query(n, {"source": {"topic": "ops", "partition": 0, "offset": 0},
                  "filter": {"field": "v", "op": "exists"},
                  "transform": {"left_fields": ["id"], "emit_rows": 100}})
    assert [r["id"] for r in b["rows"]] == [0, 1, 2, 3, 5, 6, 7]
    b = query(n, {"source": {"topic": "ops", "partition": 0, "offset": 0},
                  "filter": [{"field": "v", "op": "is_null"}],
                  "transform": {"left_fields": ["id"], "emit_rows": 100}})
    assert [r["id"] for r in b["rows"]] == [3, 4]
    # AND list with an {"any":[...]} group holding an {"all":[...]} group
    b = query(n, {"source": {"topic": "ops", "partition": 0, "offset": 0},
                  "filter": [{"field": "s", "op": "contains", "value": "a"},
                             {"any": [{"field": "b", "op": "eq", "value": True},
                                      {"all": [{"field": "v", "op": "lt", "value": 0},
                                               {"field": "n", "op": "exists"}]}]}],
                  "transform": {"left_fields": ["id", "a.b.c"], "emit_rows": 100}})
    assert b["rows"] == [{"id": 0, "a.b.c": 1}, {"id": 5, "a.b.c": "1"}]


def test_metadata_fields(n):
    create_topic(n, "meta", 2)
    ts = {}
    for i in range(6):
        key = None if i == 3 else "k%d" % i
        hdr = {"tag": "t%d" % (i % 2)} if i != 5 else {}
        ans = produce_one(n, "meta", json.dumps({"id": i}), partition=i % 2, key=key, headers=hdr)
        ts[i] = (ans["timestamp_ms"], ans["partition"], ans["offset"])
    base = {"source": {"topic": "meta", "offset": 0},
            "transform": {"left_fields": ["id", "$offset", "$partition", "$timestamp_ms", "$key",
                                          "$headers.tag"], "emit_rows": 100}}
    rows = {r["id"]: r for r in query(n, base)["rows"]}
    assert sorted(rows) == list(range(6))
    for i, (t, p, o) in ts.items():
        r = rows[i]
        assert (r["$offset"], r["$partition"], r["$timestamp_ms"]) == (o, p, t), r
        assert r["$key"] == (None if i == 3 else "k%d" % i), r
        assert r["$headers.tag"] == (None if i == 5 else "t%d" % (i % 2)), r

    def ids(flt):
        return sorted(r["id"] for r in query(n, dict(base, filter=flt))["rows"])

    assert ids([{"field": "$partition", "op": "eq", "value": 1}]) == [1, 3, 5]
    assert ids([{"field": "$offset", "op": "ge", "value": 2}]) == [4, 5]
    t4 = ts[4][0]
    assert ids([{"field": "$timestamp_ms", "op": "ge", "value": t4}]) == \
        sorted(i for i in ts if ts[i][0] >= t4)
    assert ids([{"field": "$key", "op": "eq", "value": "k2"}]) == [2]
    assert ids([{"field": "$key", "op": "is_null"}]) == [3]
    assert ids([{"field": "$headers.tag", "op": "eq", "value": "t1"}]) == [1, 3]
    assert ids([{"field": "$headers.tag", "op": "exists", "value": False}]) == [5]
    # a group-by on metadata
    b = query(n, {"source": {"topic": "meta", "offset": 0},
                  "aggregate": {"group_by": ["$partition"]}})
    assert sorted((a["key"], a["count"]) for a in b["aggregates"]) == \
        [("$partition=0", 3), ("$partition=1", 3)]


# --- measures ----------------------------------------------------------------------------------

def test_measures_with_and_without_as(n):
    create_topic(n, "meas", 1)
    recs = [{"team": "A", "score": 10, "who": "x"}, {"team": "A", "score": 2.5, "who": "y"},
            {"team": "A", "score": "99", "who": "x"}, {"team": "A", "who": None},
            {"team": "B", "score": -4, "who": "z"}, {"team": "B", "score": None},
            {"score": 7}, {"team": "C", "score": "n/a", "who": "q"}]
    produce_json(n, "meas", recs)
    b = query(n, {"source": {"topic": "meas", "partition": 0, "offset": 0},
                  "aggregate": {"group_by": ["team"], "measures": [
                      {"op": "count"}, {"op": "count", "field": "score", "as": "n_score"},
                      {"op": "sum", "field": "score"}, {"op": "avg", "field": "score", "as": "mean"},
                      {"op": "min", "field": "score"}, {"op": "max", "field": "score", "as": "hi"},
                      {"op": "count_distinct", "field": "who", "as": "whos"}]}})
    got = {a["key"]: {k: v for k, v in a.items() if k not in ("key", "group")}
           for a in b["aggregates"]}
    assert [a["key"] for a in b["aggregates"]] == ["team=A", "team=B", "team=null", "team=C"]
    assert got["team=A"] == {"count": 4, "n_score": 3, "sum_score": 12.5, "mean": 6.25,
                             "min_score": 2.5, "hi": 10, "whos": 2}
    assert got["team=B"] == {"count": 2, "n_score": 1, "sum_score": -4, "mean": -4.0,
                             "min_score": -4, "hi": -4, "whos": 1}
    assert got["team=null"] == {"count": 1, "n_score": 1, "sum_score": 7, "mean": 7.0,
                                "min_score": 7, "hi": 7, "whos": 0}
    # strings are not numbers: a group with only non-numeric values has null sum/avg/min/max
    assert got["team=C"] == {"count": 1, "n_score": 1, "sum_score": None, "mean": None,
                             "min_score": None, "hi": None, "whos": 1}
    assert isinstance(got["team=B"]["sum_score"], int)
    assert b["aggregates"][2]["group"] == {"team": None}
    # order_by + limit on aggregates
    b = query(n, {"source": {"topic": "meas", "partition": 0, "offset": 0},
                  "aggregate": {"group_by": ["team"], "order_by": "-count", "limit": 2}})
    assert [(a["key"], a["count"]) for a in b["aggregates"]] == [("team=A", 4), ("team=B", 2)]


# --- windows -------------------------------------------------------------------------------------

WIN_RECS = ([{"t": t, "g": g, "v": v} for t, g, v in
             [(-5, "a", 1), (0, "a", 2), (3, "b", 3), (9, "a", 4), (10, "a", 5), (15, "b", 6),
              (19, "b", 7), (20, "a", 8), (31, "a", 9), (39.7, "b", 10), (40, "b", 11)]] +
            [{"g": "a", "v": 100}, {"t": "12", "g": "a", "v": 100}])


def window_oracle(size, advance):
    out = {}
    order = []
    for r in WIN_RECS:
        t = r.get("t")
        if not isinstance(t, (int, float)) or isinstance(t, bool):
            continue
        t = int(t // 1)
        first = (t // advance) * advance
        starts = []
        s = first
        while s + size > t:
            starts.append(s)
            s -= advance
        for s in starts:
            k = (s, r["g"])
            if k not in out:
                out[k] = [0, 0]
                order.append(k)
            out[k][0] += 1
            out[k][1] += r["v"]
    order.sort(key=lambda k: k[0])  # stable: first appearance within a window start
    return [(s, s + size, g, out[(s, g)][0], out[(s, g)][1]) for s, g in order]


@pytest.mark.parametrize("wtype,size,advance", [("tumbling", 10, 10), ("hopping", 20, 10),
                                                 ("hopping", 10, 4)])
def test_windows_on_a_time_field(n, wtype, size, advance):
    topic = "win-%s-%d-%d" % (wtype, size, advance)
    create_topic(n, topic, 1)
    produce_json(n, topic, WIN_RECS)
    w = {"type": wtype, "size_ms": size, "time_field": "t"}
    if wtype == "hopping":
        w["advance_ms"] = advance
    b = query(n, {"source": {"topic": topic, "partition": 0, "offset": 0},
                  "aggregate": {"group_by": ["g"], "measures": [
                      {"op": "count"}, {"op": "sum", "field": "v", "as": "total"}]},
                  "window": w})
    got = [(a["window_start_ms"], a["window_end_ms"], a["group"]["g"], a["count"], a["total"])
           for a in b["aggregates"]]
    assert got == window_oracle(size, advance)
    st = b["stats"]
    assert st["missing_time"] == 2 and st["late"] == 0, st
    assert st["scanned"] == len(WIN_RECS)


# --- sources: partitions, resume, commit, time range -------------------------------------------

def offsets_of(b):
    return {p["partition"]: p["next_offset"] for p in b["source"]["partitions"]}


def committed(n, group, topic):
    r = n.get("/broker/groups/%s/%s" % (group, topic))
    assert r.status_code == 200, r.text
    return {p["partition"]: p["committed_offset"] for p in r.json()["partitions"]}


def test_partitions_list_and_all(n):
    create_topic(n, "mp", 3)
    for p, cnt in ((0, 3), (1, 4), (2, 5)):
        produce_json(n, "mp", [{"p": p, "i": i} for i in range(cnt)], partition=p)
    sel = {"left_fields": ["p", "i", "$partition", "$offset"], "emit_rows": 100}
    b = query(n, {"source": {"topic": "mp", "partitions": [0, 2], "offset": 0}, "transform": sel})
    assert sorted((r["p"], r["i"]) for r in b["rows"]) == \
        [(0, i) for i in range(3)] + [(2, i) for i in range(5)]
    assert all(r["p"] == r["$partition"] and r["i"] == r["$offset"] for r in b["rows"])
    assert offsets_of(b) == {0: 3, 2: 5} and b["source"]["consumed"] == 8
    assert "partition" not in b["source"]
    b = query(n, {"source": {"topic": "mp", "offset": 0},
                  "aggregate": {"group_by": ["p"], "order_by": "p"}})
    assert [(a["key"], a["count"]) for a in b["aggregates"]] == [("p=0", 3), ("p=1", 4), ("p=2", 5)]
    assert offsets_of(b) == {0: 3, 1: 4, 2: 5}
    b = query(n, {"source": {"topic": "mp", "partitions": "all", "offset": 0, "limit": 100},
                  "filter": [{"field": "$partition", "op": "ne", "value": 1}]})
    assert b["stats"]["matched"] == 8


def test_group_resume_and_commit(n):
    create_topic(n, "rs", 3)
    for p, cnt in ((0, 3), (1, 4), (2, 5)):
        produce_json(n, "rs", [{"p": p, "i": i} for i in range(cnt)], partition=p)
    sel = {"left_fields": ["$partition", "$offset"], "emit_rows": 1000}
    seen = []
    # a limited call that commits: the committed offsets are exactly its next offsets
    b = query(n, {"source": {"topic": "rs", "group": "g1", "limit": 5, "commit": True},
                  "transform": sel})
    assert b.get("committed") is True and b["source"]["consumed"] == 5
    first = offsets_of(b)
    assert sum(first.values()) == 5
    assert committed(n, "g1", "rs") == first
    seen += [(r["$partition"], r["$offset"]) for r in b["rows"]]
    # a call without commit reads on from the committed offsets but does not move them
    b = query(n, {"source": {"topic": "rs", "group": "g1", "limit": 2}, "transform": sel})
    assert all(o >= first[p] for p, o in ((r["$partition"], r["$offset"]) for r in b["rows"]))
    assert committed(n, "g1", "rs") == first
    # the second committing call (top-level "commit") sees exactly the rest
    b = query(n, {"source": {"topic": "rs", "group": "g1"}, "commit": True, "transform": sel})
    seen += [(r["$partition"], r["$offset"]) for r in b["rows"]]
    assert sorted(seen) == [(p, i) for p, c in ((0, 3), (1, 4), (2, 5)) for i in range(c)]
    assert committed(n, "g1", "rs") == {0: 3, 1: 4, 2: 5}
    # a consume without offset starts at the committed offset
    r = n.get("/broker/consume/rs/g1/1")
    assert r.status_code == 200 and r.json()["messages"] == [], r.text
    # new records: the next call sees only them
    produce_json(n, "rs", [{"p": 1, "i": 4}, {"p": 1, "i": 5}], partition=1)
    produce_json(n, "rs", [{"p": 2, "i": 5}], partition=2)
    b = query(n, {"source": {"topic": "rs", "group": "g1", "commit": True}, "transform": sel})
    assert sorted((r["$partition"], r["$offset"]) for r in b["rows"]) == [(1, 4), (1, 5), (2, 5)]
    assert committed(n, "g1", "rs") == {0: 3, 1: 6, 2: 6}
    b = query(n, {"source": {"topic": "rs", "group": "g1"}, "transform": sel})
    assert b["rows"] == [] and b["stats"]["scanned"] == 0
    # an explicit offset overrides the committed one
    b = query(n, {"source": {"topic": "rs", "group": "g1", "partition": 0, "offset": 1},
                  "transform": sel})
    assert [(r["$partition"], r["$offset"]) for r in b["rows"]] == [(0, 1), (0, 2)]
    r = n.get("/broker/consume/rs/g1/2", params={"limit": 10})
    assert r.json()["messages"] == [] and r.json()["committed_offset"] == 6


def test_time_range(n):
    create_topic(n, "tr", 1)
    a = produce_json(n, "tr", [{"b": "A", "i": i} for i in range(3)])
    wait_clock_after(a["timestamp_ms"])
    b_ = produce_json(n, "tr", [{"b": "B", "i": i} for i in range(4)])
    wait_clock_after(b_["timestamp_ms"])
    c = produce_json(n, "tr", [{"b": "C", "i": i} for i in range(2)])
    assert a["timestamp_ms"] < b_["timestamp_ms"] < c["timestamp_ms"]
    b = query(n, {"source": {"topic": "tr", "partition": 0, "offset": 0,
                             "from_ms": b_["timestamp_ms"], "to_ms": c["timestamp_ms"]},
                  "transform": {"left_fields": ["b", "i"], "emit_rows": 100}})
    assert b["rows"] == [{"b": "B", "i": i} for i in range(4)]
    st = b["stats"]
    assert st["matched"] == 4
    # records before from_ms that were read are counted, never silently dropped
    assert st["scanned"] == 4 + st["out_of_time_range"] and st["out_of_time_range"] in (0, 3), st
    # the first record at or after to_ms is not consumed
    assert b["source"]["next_offset"] == 7
    b = query(n, {"source": {"topic": "tr", "partition": 0, "offset": 0,
                             "from_ms": c["timestamp_ms"]}, "aggregate": {"group_by": ["b"]}})
    assert [(x["key"], x["count"]) for x in b["aggregates"]] == [("b=C", 2)]
    b = query(n, {"source": {"topic": "tr", "partition": 0, "offset": 0,
                             "to_ms": b_["timestamp_ms"]}, "aggregate": {"group_by": ["b"]}})
    assert [(x["key"], x["count"]) for x in b["aggregates"]] == [("b=A", 3)]
    assert b["source"]["next_offset"] == 3


def test_unparseable_records_are_counted(n):
    create_topic(n, "bad", 1)
    produce_json(n, "bad", ['{"g":"a"}', "not json", '{"g":"a"', "[1,2]", "123",
                            '{"g":"b"}', '{"g":"a","x":1e400}', "\xff"])
    b = query(n, {"source": {"topic": "bad", "partition": 0, "offset": 0},
                  "aggregate": {"group_by": ["g"]}})
    st = b["stats"]
    assert [(a["key"], a["count"]) for a in b["aggregates"]] == [("g=a", 2), ("g=b", 1)]
    assert st["scanned"] == 8
    assert st["skipped_parse"] == 3 and st["skipped_decode"] == 2, st
    assert st["decoded"] == 3, st
    assert st["first_skipped"]["offset"] == 1 and st["first_skipped"]["partition"] == 0
    assert st["first_skipped"]["reason"]
    # reading the 1e400 field fails that record as "does not parse"
    b = query(n, {"source": {"topic": "bad", "partition": 0, "offset": 0},
                  "filter": [{"field": "x", "op": "exists"}]})
    assert b["stats"]["matched"] == 0 and b["stats"]["skipped_parse"] == 4, b["stats"]


# --- errors and limits ---------------------------------------------------------------------------

def test_errors_name_the_offending_path(n):
    create_topic(n, "err", 2)
    produce_json(n, "err", [{"a": i} for i in range(3)])
    # a body that is not JSON: 400 with the line:column of the syntax error as its path
    r = n.post("/broker/query", data=b'{"source":{"topic":"err"')
    body = assert_error(r, 400, "invalid_json", extra=("path",))
    assert body["path"] == "1:24", body  # the end of the 24-byte body
    r = n.post("/broker/query", data=b'{"source":\n {"topic":"err",}}')
    assert assert_error(r, 400, "invalid_json", extra=("path",))["path"].startswith("2:"), r.text
    body = assert_error(n.post("/broker/query", json=[1]), 400, "invalid_json", extra=("path",))
    assert body["path"] == ""
    src = {"topic": "err", "partition": 0}
    cases = [
        ({"source": src, "filter": [{"field": "a", "op": "bogus", "value": 1}]}, "/filter/0/op"),
        ({"source": src, "filter": [{"field": "a", "op": "eq", "value": 1},
                                    {"field": "a[", "op": "eq", "value": 1}]}, "/filter/1/field"),
        ({"source": src, "filter": [{"any": [{"field": "$nope", "op": "eq", "value": 1}]}]},
         "/filter/0/any/0/field"),
        ({"source": src, "filter": [{"field": "a", "op": "eq", "value": None}]}, "/filter/0/value"),
        ({"source": src, "filter": [{"field": "a", "op": "in", "value": [1, {"x": 1}]}]},
         "/filter/0/value/1"),
        ({"source": src, "aggregate": {"group_by": ["a"], "measures": [{"op": "median",
                                                                        "field": "a"}]}},
         "/aggregate/measures/0/op"),
        ({"source": src, "aggregate": {"group_by": ["a"], "measures": [{"op": "sum"}]}},
         "/aggregate/measures/0/field"),
        ({"source": src, "window": {"type": "session", "size_ms": 10},
          "aggregate": {"group_by": ["a"]}}, "/window/type"),
        ({"source": src, "bogus": 1}, "/bogus"),
        ({"source": dict(src, offest=3)}, "/source/offest"),
    ]
    for req, path in cases:
        r = n.post("/broker/query", json=req)
        body = assert_error(r, 422, "invalid_query", extra=("path",))
        assert body["path"] == path, (req, body)
    body = assert_error(n.post("/broker/query", json={"source": {"topic": "nope"}}), 404,
                        extra=("path",))
    assert body["path"] == "/source/topic"
    body = assert_error(n.post("/broker/query", json={"source": {"topic": "err", "partition": 2}}),
                        400, "invalid_partition", extra=("path",))
    assert body["path"] == "/source/partition"
    body = assert_error(n.post("/broker/query", json={"source": {"topic": "err",
                                                                 "partitions": [0, 7]}}),
                        400, "invalid_partition", extra=("path",))
    assert body["path"] == "/source/partitions"
    body = assert_error(n.post("/broker/query", json={"source": {"topic": "err",
                                                                 "limit": 10 ** 9}}),
                        413, "query_limit", extra=("path",))
    assert body["path"] == "/source/limit" and "max_records_scanned" in body["message"]
    body = assert_error(n.post("/broker/query", json={"source": src,
                                                      "transform": {"emit_rows": 10 ** 6}}),
                        413, "query_limit", extra=("path",))
    assert "max_rows" in body["message"]
    # no token / a wrong token
    r = requests.post(n.url + "/broker/query", json={"source": src}, timeout=10)
    assert_error(r, 401, "unauthorized")
    r = requests.post(n.url + "/broker/query", json={"source": src}, timeout=10,
                      headers={"Authorization": "Bearer wrong"})
    assert_error(r, 401, "unauthorized")


def test_limit_hit_while_scanning_is_413_naming_it(make_node):
    node = make_node(args=["--stream-max-groups", "3"]).start()
    create_topic(node, "lim", 1)
    produce_json(node, "lim", [{"g": i} for i in range(5)])
    ok = query(node, {"source": {"topic": "lim", "partition": 0, "offset": 0, "limit": 3},
                      "aggregate": {"group_by": ["g"]}})
    assert len(ok["aggregates"]) == 3
    r = node.post("/broker/query", json={"source": {"topic": "lim", "partition": 0, "offset": 0},
                                         "aggregate": {"group_by": ["g"]}})
    body = assert_error(r, 413, "query_limit", extra=("path",))
    assert body["path"] == "max_groups", body
    assert node.stop() == 0


# --- differential against SQLite ---------------------------------------------------------------
#
# A small HTTP-level differential: the value domain is kept where SQL semantics and ours coincide
# (integers, short strings, nulls, missing members; strings only compared with strings and
# integers with integers), so json_extract + SQL three-valued logic is the oracle. The full-domain
# differential (mixed types, doubles, nested paths, windows, projection, order/limit; 2,000+ cases,
# 100,000+ with AYDER_SOAK=1) is the engine-level tests/integration/test_stream_query_sqlite.py.

DIFF_FIELDS_INT = ["x", "y"]
DIFF_FIELDS_STR = ["g", "h"]


def diff_record(rnd, i):
    r = {"i": i}
    for f in DIFF_FIELDS_INT:
        c = rnd.random()
        if c < 0.1:
            r[f] = None
        elif c < 0.2:
            pass  # missing
        else:
            r[f] = rnd.randint(-20, 20)
    for f in DIFF_FIELDS_STR:
        c = rnd.random()
        if c < 0.1:
            r[f] = None
        elif c < 0.2:
            pass
        else:
            r[f] = rnd.choice(["a", "b", "c", "ab", "ba", "B"])
    return r


def rand_cond(rnd):
    if rnd.random() < 0.5:
        f = rnd.choice(DIFF_FIELDS_INT)
        val = lambda: rnd.randint(-22, 22)  # noqa: E731
    else:
        f = rnd.choice(DIFF_FIELDS_STR)
        val = lambda: rnd.choice(["a", "b", "c", "ab", "ba", "B", "zz", ""])  # noqa: E731
    col = "json_extract(v, '$.%s')" % f
    op = rnd.choice(["eq", "ne", "lt", "le", "gt", "ge", "in", "nin", "exists", "is_null"])
    if op in ("in", "nin"):
        vals = [val() for _ in range(rnd.randint(1, 4))]
        sql = "%s %s (%s)" % (col, "IN" if op == "in" else "NOT IN",
                              ",".join("?" for _ in vals))
        return {"field": f, "op": op, "value": vals}, sql, vals
    if op in ("exists", "is_null"):
        neg = rnd.random() < 0.5
        if op == "exists":
            sql = "json_type(v, '$.%s') IS %sNULL" % (f, "" if neg else "NOT ")
        else:
            sql = "%s IS %sNULL" % (col, "NOT " if neg else "")
        return {"field": f, "op": op, "value": not neg}, sql, []
    x = val()
    sqlop = {"eq": "=", "ne": "!=", "lt": "<", "le": "<=", "gt": ">", "ge": ">="}[op]
    return {"field": f, "op": op, "value": x}, "%s %s ?" % (col, sqlop), [x]


def test_differential_against_sqlite(n):
    rnd = random.Random(20261208)
    create_topic(n, "diff", 2)
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE r (p INTEGER, o INTEGER, v TEXT)")
    for p in (0, 1):
        recs = [diff_record(rnd, i) for i in range(300)]
        produce_json(n, "diff", recs, partition=p)
        db.executemany("INSERT INTO r VALUES (?,?,?)",
                       [(p, o, json.dumps(rec)) for o, rec in enumerate(recs)])
    cases = 0
    for qn in range(200):
        conds = [rand_cond(rnd) for _ in range(rnd.randint(0, 3))]
        anyg = rnd.random() < 0.25 and len(conds) >= 2
        gb = rnd.sample(DIFF_FIELDS_STR + ["x"], rnd.randint(0, 2))
        mf = rnd.choice(DIFF_FIELDS_INT)
        measures = [{"op": "count"}, {"op": "count", "field": mf, "as": "cnt_f"},
                    {"op": "sum", "field": mf}, {"op": "min", "field": mf},
                    {"op": "max", "field": mf}, {"op": "avg", "field": mf}]
        if gb == [] or rnd.random() < 0.5:
            measures.append({"op": "count_distinct", "field": "g", "as": "dg"})
        if anyg:
            flt = [{"any": [c[0] for c in conds]}]
            where = "(" + " OR ".join("(%s)" % c[1] for c in conds) + ")"
        else:
            flt = [c[0] for c in conds]
            where = " AND ".join("(%s)" % c[1] for c in conds) or "1"
        params = [x for c in conds for x in c[2]]
        req = {"source": {"topic": "diff", "offset": 0, "limit": 1000}, "filter": flt,
               "aggregate": {"group_by": gb, "measures": measures}}
        b = query(n, req)
        assert b["stats"]["scanned"] == 600
        got = {}
        for a in b["aggregates"]:
            k = tuple(a["group"][f] for f in gb)
            got[k] = [a["count"], a["cnt_f"], a["sum_" + mf], a["min_" + mf], a["max_" + mf],
                      a["avg_" + mf]] + ([a["dg"]] if "dg" in a else [])
            assert a["key"] == "|".join("%s=%s" % (f, "null" if a["group"][f] is None
                                                   else a["group"][f]) for f in gb)
        cols = ["json_extract(v, '$.%s')" % f for f in gb]
        mcol = "json_extract(v, '$.%s')" % mf
        sel = cols + ["COUNT(*)", "COUNT(%s)" % mcol, "SUM(%s)" % mcol, "MIN(%s)" % mcol,
                      "MAX(%s)" % mcol, "AVG(%s)" % mcol]
        if measures[-1]["op"] == "count_distinct":
            sel.append("COUNT(DISTINCT json_extract(v, '$.g'))")
        sql = "SELECT %s FROM r WHERE %s" % (", ".join(sel), where)
        if gb:
            sql += " GROUP BY " + ", ".join(cols)
        want = {}
        for row in db.execute(sql, params):
            if not gb and row[0] == 0:
                continue  # no group at all when nothing matched
            want[tuple(row[:len(gb)])] = list(row[len(gb):])
        assert got == want, (qn, req, sql, params)
        assert b["stats"]["matched"] == sum(v[0] for v in want.values())
        cases += 1
    assert cases == 200
