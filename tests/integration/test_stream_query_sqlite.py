"""Differential test of the query engine against SQLite (Python's sqlite3 and its JSON1 functions).

Seeded random record sets (nested fields, missing fields, nulls, mixed types, escaped strings,
records that do not parse or are not objects, random timestamps) and random queries (filters with
every op and any-groups, metadata fields, group-by, every measure, tumbling and hopping windows,
projection with renames, order/limit on rows and aggregates, source offset/partition/time/limit
bounds) are run through the engine (build/squery_run, many queries per record set) and translated
to SQL with the same semantics (docs/STREAM.md); the answers must agree on every case.

Windows run with "late":"include" here: lateness itself is covered by the unit tests.
CI: 2,000+ cases. AYDER_SOAK=1: 100,000+ cases. AYDER_DIFF_SEED picks another seed.
"""
import json
import math
import os
import random
import sqlite3
import subprocess
import tempfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RUNNER = os.path.join(ROOT, "build", "squery_run")

SOAK = os.environ.get("AYDER_SOAK") == "1"
DATASETS = 1000 if SOAK else 20
QUERIES_PER_DATASET = 110
BASE_SEED = int(os.environ.get("AYDER_DIFF_SEED", "20261208"))

STRS = ["a", "b", "ab", "ba", "", "A", "zz", "a b"]
PAYLOAD_FIELDS = ["a", "b", "n.x", "n.y", "arr", "arr[0]", "arr[1]", "nope", "t"]
META_FIELDS = ["$offset", "$timestamp_ms", "$partition"]


def rand_scalar(rng):
    k = rng.randrange(8)
    if k == 0:
        return rng.randrange(-5, 6)
    if k == 1:
        return rng.choice([0.5, -2.5, 1.0, 3.25, 2.0])
    if k in (2, 3):
        return rng.choice(STRS)
    if k == 4:
        return None
    if k == 5:
        return rng.choice([True, False])
    return rng.randrange(0, 3)


def gen_record(rng):
    r = rng.random()
    if r < 0.04:
        return rng.choice(['{"a":', "not json", '{"a":1,}', "{'a':1}"])
    if r < 0.07:
        return rng.choice(["[1,2]", '"str"', "42"])
    obj = {}
    for key in ("a", "b"):
        if rng.random() < 0.85:
            obj[key] = rand_scalar(rng)
    if rng.random() < 0.7:
        n = {}
        for key in ("x", "y"):
            if rng.random() < 0.8:
                n[key] = rand_scalar(rng)
        obj["n"] = n
    elif rng.random() < 0.2:
        obj["n"] = rand_scalar(rng)  # a path step into a scalar finds nothing
    if rng.random() < 0.6:
        obj["arr"] = [rand_scalar(rng) for _ in range(rng.randrange(4))]
    if rng.random() < 0.8:
        obj["t"] = rng.randrange(-3000, 20000)
    elif rng.random() < 0.5:
        obj["t"] = "late"
    text = json.dumps(obj, separators=(",", ":"))
    if rng.random() < 0.2:
        # escaped forms of the same strings: the engine must unescape before comparing
        text = text.replace('"ab"', '"\\u0061b"').replace('"zz"', '"z\\u007a"')
    # No duplicate member names here: the engine takes the last one (like jansson), SQLite's
    # json_extract the first; that difference is by design and unit-tested on our side.
    return text


def sql_str(s):
    return "'" + s.replace("'", "''") + "'"


def sql_path(field):
    return "'$." + field + "'"


class Field:
    def __init__(self, name):
        self.name = name
        if name == "$offset":
            self.T, self.X = "'integer'", "off"
        elif name == "$timestamp_ms":
            self.T, self.X = "'integer'", "ts"
        elif name == "$partition":
            self.T, self.X = "'integer'", "part"
        else:
            self.T = "json_type(v, %s)" % sql_path(name)
            self.X = "json_extract(v, %s)" % sql_path(name)


def sql_lit(val):
    if isinstance(val, bool):
        return "1" if val else "0"
    if isinstance(val, str):
        return sql_str(val)
    return repr(val)


def sql_eq(f, val):
    if isinstance(val, bool):
        return "(%s = '%s')" % (f.T, "true" if val else "false")
    if isinstance(val, str):
        return "(%s = 'text' AND %s = %s)" % (f.T, f.X, sql_str(val))
    return "(%s IN ('integer','real') AND %s = %s)" % (f.T, f.X, repr(val))


def sql_notnull(f):
    return "(%s IS NOT NULL AND %s != 'null')" % (f.T, f.T)


SQL_OPS = {"lt": "<", "le": "<=", "gt": ">", "ge": ">="}


def sql_cond(c):
    if "any" in c:
        return "(" + (" OR ".join(sql_cond(k) for k in c["any"]) or "0") + ")"
    if "all" in c:
        return "(" + (" AND ".join(sql_cond(k) for k in c["all"]) or "1") + ")"
    f = Field(c["field"])
    op, val = c["op"], c.get("value")
    if op == "eq":
        return sql_eq(f, val)
    if op == "ne":
        return "(%s AND NOT %s)" % (sql_notnull(f), sql_eq(f, val))
    if op in SQL_OPS:
        o = SQL_OPS[op]
        if isinstance(val, bool):
            return "(%s IN ('true','false') AND (%s = 'true') %s %s)" % (f.T, f.T, o, sql_lit(val))
        if isinstance(val, str):
            return "(%s = 'text' AND %s %s %s)" % (f.T, f.X, o, sql_str(val))
        return "(%s IN ('integer','real') AND %s %s %s)" % (f.T, f.X, o, repr(val))
    if op in ("in", "nin"):
        anyeq = "(" + (" OR ".join(sql_eq(f, v) for v in val) or "0") + ")"
        return "(%s AND %s%s)" % (sql_notnull(f), "" if op == "in" else "NOT ", anyeq)
    if op == "contains":
        if f.name.startswith("$"):
            return "0"
        p = sql_path(f.name)
        if isinstance(val, bool):
            el = "je.type = '%s'" % ("true" if val else "false")
        elif isinstance(val, str):
            el = "je.type = 'text' AND je.value = %s" % sql_str(val)
        else:
            el = "je.type IN ('integer','real') AND je.value = %s" % repr(val)
        arr = "(%s = 'array' AND EXISTS (SELECT 1 FROM json_each(v, %s) je WHERE %s))" % (f.T, p, el)
        if isinstance(val, str):
            return "((%s = 'text' AND instr(%s, %s) > 0) OR %s)" % (f.T, f.X, sql_str(val), arr)
        return arr
    if op == "exists":
        e = "(%s IS NOT NULL)" % f.T
        return e if val is not False else "(NOT %s)" % e
    if op == "is_null":
        e = "(%s IS NULL OR %s = 'null')" % (f.T, f.T)
        return e if val is not False else "(NOT %s)" % e
    raise AssertionError(op)


def rank_expr(f):
    return ("(CASE WHEN {T} IS NULL OR {T} = 'null' THEN 0 WHEN {T} IN ('true','false') THEN 1 "
            "WHEN {T} IN ('integer','real') THEN 2 WHEN {T} = 'text' THEN 3 ELSE 5 END)").format(T=f.T)


def kind_expr(f):
    return ("(CASE WHEN {T} IN ('integer','real') THEN 'n' WHEN {T} IN ('true','false') THEN 'b' "
            "WHEN {T} = 'text' THEN 's' WHEN {T} IN ('object','array') THEN 'j' END)").format(T=f.T)


def val_expr(f):
    return "(CASE WHEN {T} IN ('true','false') THEN {T} WHEN {T} IS NULL OR {T} = 'null' THEN NULL ELSE {X} END)".format(T=f.T, X=f.X)


def py_value(kind, x):
    if kind is None:
        return None
    if kind == "b":
        return x == "true"
    if kind == "j":
        return json.loads(x)
    return x


def measure_sql(m):
    if m["op"] == "count" and "field" not in m:
        return "COUNT(*)"
    f = Field(m["field"])
    num = "CASE WHEN %s IN ('integer','real') THEN %s END" % (f.T, f.X)
    if m["op"] == "count":
        return "SUM(CASE WHEN %s THEN 1 ELSE 0 END)" % sql_notnull(f)
    if m["op"] in ("sum", "avg", "min", "max"):
        return "%s(%s)" % (m["op"].upper(), num)
    return ("(COUNT(DISTINCT {num}) + COUNT(DISTINCT CASE WHEN {T} = 'text' THEN {X} END) + "
            "COUNT(DISTINCT CASE WHEN {T} IN ('true','false') THEN {T} END) + "
            "COUNT(DISTINCT CASE WHEN {T} IN ('object','array') THEN {X} END))").format(num=num, T=f.T, X=f.X)


def measure_name(m):
    if "as" in m:
        return m["as"]
    if "field" not in m:
        return "count"
    return "%s_%s" % (m["op"], m["field"])


def rand_operand(rng, op):
    if op in ("in", "nin"):
        return [v for v in (rand_scalar(rng) for _ in range(rng.randrange(0, 4))) if v is not None]
    v = rand_scalar(rng)
    while v is None:
        v = rand_scalar(rng)
    if op == "contains" and rng.random() < 0.6:
        return rng.choice(["a", "b", "", "z"])
    return v


def rand_cond(rng, depth=0):
    if depth < 2 and rng.random() < 0.12:
        return {"any": [rand_cond(rng, depth + 1) for _ in range(rng.randrange(1, 4))]}
    field = rng.choice(PAYLOAD_FIELDS + META_FIELDS[:1] + ["a", "b"])
    op = rng.choice(["eq", "ne", "lt", "le", "gt", "ge", "in", "nin", "contains", "exists", "is_null"])
    c = {"field": field, "op": op}
    if op in ("exists", "is_null"):
        if rng.random() < 0.3:
            c["value"] = rng.choice([True, False])
    else:
        if field == "$offset" and op not in ("in", "nin", "contains"):
            c["value"] = rng.randrange(0, 300)
        else:
            c["value"] = rand_operand(rng, op)
    return c


def rand_query(rng, nrec):
    src = {"topic": "t", "limit": rng.choice([nrec, nrec, 50, 150])}
    r = rng.random()
    if r < 0.2:
        src["partition"] = rng.randrange(2)
    elif r < 0.3:
        src["partitions"] = [1, 0]
    if rng.random() < 0.2:
        src["offset"] = rng.randrange(0, nrec)
    if rng.random() < 0.15:
        src["from_ms"] = rng.randrange(0, 5000)
        src["to_ms"] = src["from_ms"] + rng.randrange(1000, 20000)
    q = {"source": src}
    if rng.random() < 0.85:
        q["filter"] = [rand_cond(rng) for _ in range(rng.randrange(0, 4))]
    if rng.random() < 0.5:
        sel = []
        for f in rng.sample(PAYLOAD_FIELDS + ["$offset"], rng.randrange(1, 4)):
            sel.append(f if rng.random() < 0.5 else {"field": f, "as": "o_" + f})
        q["select"] = sel
        if rng.random() < 0.6:
            q["order_by"] = rng.choice(PAYLOAD_FIELDS) if rng.random() < 0.5 else {
                "field": rng.choice(PAYLOAD_FIELDS + ["$offset"]), "order": rng.choice(["asc", "desc"])}
        q["limit"] = rng.randrange(1, 40)
        return q
    agg = {}
    gb = rng.sample(["a", "b", "n.x", "arr", "nope"], rng.randrange(0, 3))
    if gb:
        agg["group_by"] = gb
    ms = []
    for _ in range(rng.randrange(0, 4)):
        op = rng.choice(["count", "sum", "avg", "min", "max", "count_distinct"])
        m = {"op": op}
        if op != "count" or rng.random() < 0.5:
            m["field"] = rng.choice(["a", "b", "n.x", "n.y", "arr[0]", "$offset"])
        if rng.random() < 0.3:
            m["as"] = "m%d" % len(ms)
        if measure_name(m) in [measure_name(x) for x in ms]:
            continue
        ms.append(m)
    if ms:
        agg["measures"] = ms
    names = [measure_name(m) for m in ms] if ms else ["count"]
    if rng.random() < 0.4:
        agg["order_by"] = {"field": rng.choice(names), "order": rng.choice(["asc", "desc"])}
        agg["limit"] = rng.randrange(1, 10)
    q["aggregate"] = agg
    if rng.random() < 0.4:
        size = rng.choice([1000, 2500, 5000])
        w = {"size_ms": size, "late": "include"}
        if rng.random() < 0.4:
            w["type"] = "hopping"
            w["advance_ms"] = rng.choice([size, size // 2, size // 5])
        if rng.random() < 0.5:
            w["time_field"] = "t"
        q["window"] = w
    if rng.random() < 0.3:
        q["transform"] = {"emit_rows": 0}
    return q


def close(a, b):
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
    return a == b


def source_where(q):
    s = q["source"]
    cond = ["1"]
    if "partition" in s:
        cond.append("part = %d" % s["partition"])
    if "partitions" in s:
        cond.append("part IN (%s)" % ",".join(str(p) for p in s["partitions"]))
    if "offset" in s:
        cond.append("off >= %d" % s["offset"])
    fed = "off IN (SELECT off FROM r WHERE %s ORDER BY off LIMIT %d)" % (" AND ".join(cond), s["limit"])
    w = [fed]
    if "from_ms" in s:
        w.append("ts >= %d AND ts < %d" % (s["from_ms"], s["to_ms"]))
    return w


def expected(db, q):
    where = source_where(q)
    scanned_where = " AND ".join(where)
    valid = "json_valid(v) AND json_type(v) = 'object'"
    filt = " AND ".join(sql_cond(c) for c in q.get("filter", [])) or "1"
    base = " AND ".join(where + [valid, filt])
    out = {"matched": db.execute("SELECT COUNT(*) FROM r WHERE " + base).fetchone()[0],
           "skipped": db.execute("SELECT COUNT(*) FROM r WHERE %s AND NOT json_valid(v)" % scanned_where).fetchone()[0]}
    if "aggregate" not in q:
        sel = q.get("select")
        if not sel:
            return out
        fields = [Field(s if isinstance(s, str) else s["field"]) for s in sel]
        cols = ", ".join("%s, %s" % (kind_expr(f), val_expr(f)) for f in fields)
        order = "off"
        ob = q.get("order_by")
        if ob:
            name = ob if isinstance(ob, str) else ob["field"]
            desc = not isinstance(ob, str) and ob["order"] == "desc"
            f = Field(name)
            d = " DESC" if desc else ""
            order = "%s%s, %s%s, off" % (rank_expr(f), d, f.X, d)
        rows = db.execute("SELECT %s FROM r WHERE %s ORDER BY %s LIMIT %d" % (cols, base, order, q["limit"])).fetchall()
        names = [s if isinstance(s, str) else s["as"] for s in sel]
        out["rows"] = [{names[i]: py_value(row[2 * i], row[2 * i + 1]) for i in range(len(names))} for row in rows]
        return out
    agg = q["aggregate"]
    gb = [Field(g) for g in agg.get("group_by", [])]
    ms = agg.get("measures", [{"op": "count"}])
    w = q.get("window")
    frm = "r"
    wcol = "0"
    if w:
        size = w["size_ms"]
        adv = w.get("advance_ms", size)
        tm = "ts"
        if w.get("time_field"):
            tf = Field(w["time_field"])
            tm = tf.X
            base += " AND %s = 'integer'" % tf.T
        nk = (size + adv - 1) // adv
        frm = "r, (WITH RECURSIVE k(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM k WHERE i + 1 < %d) SELECT i FROM k) kk" % nk
        wcol = "((%s) - (((%s) %% %d) + %d) %% %d - kk.i * %d)" % (tm, tm, adv, adv, adv, adv)
        base += " AND %s + %d > (%s)" % (wcol, size, tm)
    gcols = "".join(", %s, %s" % (kind_expr(f), val_expr(f)) for f in gb)
    mcols = ", ".join(measure_sql(m) for m in ms)
    groupby = "wstart" + "".join(", %s, %s" % (kind_expr(f), val_expr(f)) for f in gb)
    order = "wstart, MIN(off)"
    if "order_by" in agg:
        names = [measure_name(m) for m in ms]
        i = names.index(agg["order_by"]["field"])
        d = " DESC" if agg["order_by"]["order"] == "desc" else ""
        order = "%s%s, MIN(off), wstart" % (measure_sql(ms[i]), d)
    if not w:
        order = order.replace(", wstart", "").replace("wstart, ", "")
    lim = " LIMIT %d" % agg["limit"] if "limit" in agg else ""
    sql = "SELECT %s AS wstart%s, %s FROM %s WHERE %s GROUP BY %s ORDER BY %s%s" % (
        wcol, gcols, mcols, frm, base, groupby, order, lim)
    res = []
    for row in db.execute(sql).fetchall():
        a = {"group": {}}
        if w:
            a["window_start_ms"] = row[0]
        for i, f in enumerate(gb):
            a["group"][f.name] = py_value(row[1 + 2 * i], row[2 + 2 * i])
        for j, m in enumerate(ms):
            a[measure_name(m)] = row[1 + 2 * len(gb) + j]
        res.append(a)
    out["aggregates"] = res
    return out


def compare(q, got, exp):
    assert "error" not in got, got
    st = got["stats"]
    assert st["matched"] == exp["matched"], ("matched", st["matched"], exp["matched"])
    assert st["skipped_parse"] == exp["skipped"], ("skipped_parse", st, exp["skipped"])
    if "rows" in exp:
        assert len(got["rows"]) == len(exp["rows"]), ("rows", got["rows"], exp["rows"])
        for g, e in zip(got["rows"], exp["rows"]):
            for k in e:
                assert close(g[k], e[k]), ("row", k, g, e)
    if "aggregates" in exp:
        ga = got["aggregates"]
        assert len(ga) == len(exp["aggregates"]), ("aggregates", ga, exp["aggregates"])
        for g, e in zip(ga, exp["aggregates"]):
            if "window_start_ms" in e:
                assert g["window_start_ms"] == e["window_start_ms"], ("window", g, e)
            for k, v in e["group"].items():
                assert close(g["group"][k], v), ("group", k, g, e)
            for k, v in e.items():
                if k not in ("group", "window_start_ms"):
                    assert close(g[k], v), ("measure", k, g, e)


def run_dataset(seed):
    rng = random.Random(seed)
    nrec = rng.randrange(50, 300)
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE r(off INTEGER PRIMARY KEY, part INTEGER, ts INTEGER, v TEXT)")
    lines = []
    for off in range(nrec):
        part = off % 2
        ts = rng.randrange(-2000, 20000)
        v = gen_record(rng)
        db.execute("INSERT INTO r VALUES (?,?,?,?)", (off, part, ts, v))
        lines.append("%d\t%d\t%d\t%s\n" % (part, off, ts, v))
    queries = [rand_query(rng, nrec) for _ in range(QUERIES_PER_DATASET)]
    with tempfile.NamedTemporaryFile("w", suffix=".tsv", delete=False) as f:
        f.writelines(lines)
        path = f.name
    try:
        proc = subprocess.run([RUNNER, path], input="".join(json.dumps(q) + "\n" for q in queries),
                              capture_output=True, text=True, timeout=120, check=True)
    finally:
        os.unlink(path)
    outs = proc.stdout.splitlines()
    assert len(outs) == len(queries)
    for q, o in zip(queries, outs):
        got = json.loads(o)
        try:
            compare(q, got, expected(db, q))
        except AssertionError as e:
            raise AssertionError("seed %d query %s: %s" % (seed, json.dumps(q), e)) from None
    return len(queries)


@pytest.fixture(scope="module", autouse=True)
def runner():
    subprocess.run(["make", "-s", "build/squery_run"], cwd=ROOT, check=True)


def test_query_engine_agrees_with_sqlite():
    cases = 0
    for i in range(DATASETS):
        cases += run_dataset(BASE_SEED + i)
    assert cases >= (100000 if SOAK else 2000)
