"""The history checker for the cluster tests (docs: ../shared/TESTING.md relative to the project root, "The history checker").

A history is a list of operations recorded by the workload, plus observations of the log (reads
during the run, and a final drain of every partition after the faults are healed). Every written
value is unique. Each operation ends "ok", "fail" (definitely did not happen) or "info" (unknown).

Queue operations (dicts):
  {"f": "produce", "process": P, "value": V, "partition": p, "result": "ok"|"fail"|"info",
   "offset": o (ok only), "start": t0, "end": t1, "idem": bool}
Observations: (partition, offset, value, source) with source "ack" (from an ok produce), "read"
(a consume during the run) or "drain" (the final drain); polls (dicts) for skip checks:
  {"partition": p, "requested": o, "offsets": [o, o+1, ...], "source": "read:n2"}

KV operations (dicts):
  {"f": "cas", "key": K, "expected": E (0 = create), "value": V, "result": ..., "version": N (ok),
   "start": t0, "end": t1}
  {"f": "read", "key": K, "value": V or None (absent), "version": N or 0, "result": "ok",
   "linearizable": bool (read with consistency=leader), "start": t0, "end": t1}
  finals: {key: (value or None, version)} read after heal from the leader.

Invariants (what each check relies on):
  1. Only "ok" operations count for lost writes; only "fail" operations count for aborted reads;
     "info" operations are never anomalies by themselves.
  2. Lost = an ok value absent from the final drain (the drain must cover every partition).
  3. Inconsistent offsets = one (partition, offset) with two values, across acks, reads and drains.
  4. Duplicates = one value at two positions; an anomaly only when retries carried idempotency
     keys (dedupe_expected), otherwise counted.
  5. Real-time order: if produce A was acked before produce B was sent, both ok, same partition,
     then offset(A) < offset(B) ("nonmonotonic_send").
  6. KV: per key, successful CASes form one chain of versions; no two successes from one version;
     a CAS that skips a version is only allowed when an info op could have made it; the final value
     is the last ok write or an info write; a linearizable read never returns a version older than
     a write acked before the read was sent; reading a failed write's value is an aborted read.
"""
import bisect
import collections

MUST_BE_ZERO = ("lost", "inconsistent_offsets", "aborted_reads", "phantoms", "misplaced",
                "poll_skips", "drain_gaps", "nonmonotonic_send")
KV_MUST_BE_ZERO = ("kv_double_success", "kv_version_reuse", "kv_broken_chain", "kv_final_lost",
                   "kv_final_unknown", "kv_stale_reads", "kv_aborted_reads", "kv_phantom_reads")


def _counts(ops):
    c = collections.Counter(op["result"] for op in ops)
    return {"ok": c.get("ok", 0), "fail": c.get("fail", 0), "info": c.get("info", 0)}


def check_queue(ops, observations, polls=(), dedupe_expected=False, realtime=True):
    """Check a queue history. Returns a dict: counts, anomaly lists, and "valid"."""
    for op in ops:
        if op["result"] not in ("ok", "fail", "info"):
            raise ValueError("bad result %r" % (op,))
        if op["result"] == "ok" and op.get("offset") is None:
            raise ValueError("ok produce without an offset: %r" % (op,))
    by_value = {}
    for op in ops:
        if op["value"] in by_value:
            raise ValueError("values must be unique: %r" % (op["value"],))
        by_value[op["value"]] = op

    obs = list(observations)
    for op in ops:
        if op["result"] == "ok":
            obs.append((op["partition"], op["offset"], op["value"], "ack"))

    at = collections.defaultdict(set)            # (p, o) -> values
    where = collections.defaultdict(set)         # value -> {(p, o)}
    drained = set()
    drain_pos = collections.defaultdict(lambda: collections.defaultdict(set))  # src -> p -> offs
    seen = set()                                 # values seen by reads or drains (not acks)
    for p, o, v, src in obs:
        at[(p, o)].add(v)
        where[v].add((p, o))
        if src != "ack":
            seen.add(v)
        if str(src).startswith("drain"):
            drained.add(v)
            drain_pos[src][p].add(o)

    r = {"counts": _counts(ops)}
    r["counts"]["acked"] = r["counts"]["ok"]
    r["counts"]["drained"] = len(drained)
    r["lost"] = sorted(op["value"] for op in ops if op["result"] == "ok"
                       and op["value"] not in drained)
    if not drain_pos:
        raise ValueError("no drain observations: the final drain is required")
    r["inconsistent_offsets"] = sorted(((p, o), sorted(vs)) for (p, o), vs in at.items()
                                       if len(vs) > 1)
    dups = sorted((v, sorted(ps)) for v, ps in where.items() if len(ps) > 1)
    r["duplicates"] = dups
    r["aborted_reads"] = sorted(v for v in seen if v in by_value
                                and by_value[v]["result"] == "fail")
    r["phantoms"] = sorted(v for v in seen if v not in by_value)
    r["misplaced"] = sorted(v for v in seen if v in by_value and
                            any(p != by_value[v]["partition"] for p, _ in where[v]))
    skips = []
    for poll in polls:
        offs = poll["offsets"]
        if offs and offs != list(range(poll["requested"], poll["requested"] + len(offs))):
            skips.append(poll)
    r["poll_skips"] = skips
    gaps = []
    for src, parts in drain_pos.items():
        for p, offs in parts.items():
            lo, hi = min(offs), max(offs)
            if len(offs) != hi - lo + 1:
                missing = sorted(set(range(lo, hi + 1)) - offs)
                gaps.append((src, p, missing[:20]))
    r["drain_gaps"] = gaps
    r["nonmonotonic_send"] = _realtime_violations(ops) if realtime else []
    r["duplicate_count"] = len(dups)
    anomalies = {k: len(r[k]) for k in MUST_BE_ZERO}
    if dedupe_expected:
        anomalies["duplicates"] = len(dups)
    r["anomalies"] = anomalies
    r["valid"] = not any(anomalies.values())
    return r


def _realtime_violations(ops):
    """ok produces A, B in one partition with A.end < B.start must have A.offset < B.offset."""
    out = []
    byp = collections.defaultdict(list)
    for op in ops:
        if op["result"] == "ok" and op.get("start") is not None and op.get("end") is not None:
            byp[op["partition"]].append(op)
    for p, lst in byp.items():
        by_end = sorted(lst, key=lambda o: o["end"])
        ends = [o["end"] for o in by_end]
        prefmax, best = [], None   # running op with the highest offset among those ended so far
        for o in by_end:
            if best is None or o["offset"] > best["offset"]:
                best = o
            prefmax.append(best)
        for b in lst:
            i = bisect.bisect_left(ends, b["start"])  # ops with end < b.start: by_end[:i]
            if i > 0 and prefmax[i - 1]["offset"] >= b["offset"]:
                a = prefmax[i - 1]
                out.append((p, a["value"], a["offset"], b["value"], b["offset"]))
    return out


def check_kv(ops, finals=None):
    """Check a KV CAS history (see the module comment). Returns a dict like check_queue."""
    finals = finals or {}
    r = {k: [] for k in KV_MUST_BE_ZERO}
    cas_ops = [o for o in ops if o["f"] == "cas"]
    reads = [o for o in ops if o["f"] == "read" and o["result"] == "ok"]
    r["counts"] = _counts(cas_ops)
    r["counts"]["reads"] = len(reads)
    by_value = {}
    for o in cas_ops:
        if o["value"] in by_value:
            raise ValueError("values must be unique: %r" % (o["value"],))
        by_value[o["value"]] = o
    keys = sorted({o["key"] for o in cas_ops} | {o["key"] for o in reads} | set(finals))
    for k in keys:
        oks = sorted((o for o in cas_ops if o["key"] == k and o["result"] == "ok"),
                     key=lambda o: o["version"])
        infos = [o for o in cas_ops if o["key"] == k and o["result"] == "info"]
        by_exp = collections.defaultdict(list)
        for o in oks:
            by_exp[o["expected"]].append(o["value"])
        for e, vs in sorted(by_exp.items()):
            if len(vs) > 1:
                r["kv_double_success"].append((k, e, sorted(vs)))
        versions = collections.Counter(o["version"] for o in oks)
        for v, n in sorted(versions.items()):
            if n > 1:
                r["kv_version_reuse"].append((k, v))
        ok_versions = set(versions)
        prev = 0
        for o in oks:
            if o["version"] <= o["expected"] and o["expected"] != 0:
                r["kv_broken_chain"].append((k, o["value"], o["expected"], o["version"]))
            elif o["expected"] != prev:
                # Only an unknown (info) write could have made the version this CAS expected.
                if not (infos and prev < o["expected"] < o["version"]
                        and o["expected"] not in ok_versions):
                    r["kv_broken_chain"].append((k, o["value"], o["expected"], prev))
            prev = o["version"]
        if k in finals:
            fv, fver = finals[k]
            last = oks[-1] if oks else None
            if last and fver < last["version"]:
                r["kv_final_lost"].append((k, last["value"], last["version"], fv, fver))
            elif last and fver == last["version"]:
                if fv != last["value"]:
                    r["kv_final_unknown"].append((k, fv, fver))
            elif fv is not None:
                o = by_value.get(fv)
                if o is None or o["key"] != k or o["result"] != "info":
                    r["kv_final_unknown"].append((k, fv, fver))
    # Reads: values must come from ok/info writes; linearizable reads are never stale.
    acked = sorted((o for o in cas_ops if o["result"] == "ok"), key=lambda o: o["end"])
    for rd in reads:
        v = rd.get("value")
        if v is not None:
            o = by_value.get(v)
            if o is None or o["key"] != rd["key"]:
                r["kv_phantom_reads"].append((rd["key"], v))
            elif o["result"] == "fail":
                r["kv_aborted_reads"].append((rd["key"], v))
        if rd.get("linearizable"):
            floor = max((o["version"] for o in acked
                         if o["key"] == rd["key"] and o["end"] < rd["start"]), default=0)
            if rd.get("version", 0) < floor:
                r["kv_stale_reads"].append((rd["key"], rd.get("version", 0), floor))
    anomalies = {k: len(r[k]) for k in KV_MUST_BE_ZERO}
    r["anomalies"] = anomalies
    r["valid"] = not any(anomalies.values())
    return r


def figures(name, queue=None, kv=None, faults=None, extra=None):
    """Jepsen-style figures as one text block (for docs/RELIABILITY.md)."""
    lines = ["== %s" % name]
    if queue is not None:
        c = queue["counts"]
        lines.append("produce ops: %d ok, %d fail, %d info; acknowledged %d, lost %d, "
                     "duplicates %d" % (c["ok"], c["fail"], c["info"], c["acked"],
                                        len(queue["lost"]), queue["duplicate_count"]))
        lines.append("queue anomalies: " + ", ".join("%s %d" % (k, v) for k, v in
                                                    sorted(queue["anomalies"].items())))
    if kv is not None:
        c = kv["counts"]
        lines.append("kv cas ops: %d ok, %d fail, %d info; reads %d" %
                     (c["ok"], c["fail"], c["info"], c["reads"]))
        lines.append("kv anomalies: " + ", ".join("%s %d" % (k, v) for k, v in
                                                 sorted(kv["anomalies"].items())))
    if faults is not None:
        lines.append("faults: " + (", ".join("%s %d" % (k, v) for k, v in sorted(faults.items()))
                                   or "none"))
    for k, v in sorted((extra or {}).items()):
        lines.append("%s: %s" % (k, v))
    return "\n".join(lines)


def explain(report, limit=10):
    """The non-empty anomaly lists, truncated, for an assertion message."""
    out = []
    for k, n in sorted(report["anomalies"].items()):
        if n:
            text = repr(report[k][:limit])
            if len(text) > 600:
                text = text[:600] + "...]"
            out.append("%s (%d): %s" % (k, n, text))
    return "; ".join(out) or "no anomalies"
