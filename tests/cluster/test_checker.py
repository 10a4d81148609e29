"""The history checker on synthetic histories: a clean history passes, and each anomaly the
checker promises to find is found (these run without a server or a network namespace)."""
import pytest

import checker


def prod(value, result, partition=0, offset=None, start=0.0, end=1.0, process=0):
    return {"f": "produce", "process": process, "value": value, "partition": partition,
            "result": result, "offset": offset, "start": start, "end": end, "idem": True}


def drain(pairs, partition=0, src="drain:n1"):
    return [(partition, o, v, src) for o, v in pairs]


def clean():
    ops = [prod("a", "ok", offset=0, start=0, end=1),
           prod("b", "ok", offset=1, start=2, end=3),
           prod("c", "info", start=4, end=5),       # never happened: fine
           prod("d", "info", start=4, end=5),       # happened: fine
           prod("e", "fail", start=6, end=7),
           prod("f", "ok", partition=1, offset=0, start=0, end=1)]
    obs = drain([(0, "a"), (1, "b"), (2, "d")]) + drain([(0, "f")], partition=1)
    obs += [(0, 1, "b", "read:n2")]
    polls = [{"partition": 0, "requested": 1, "offsets": [1, 2], "source": "read:n2"}]
    return ops, obs, polls


def test_clean_history_is_valid():
    ops, obs, polls = clean()
    r = checker.check_queue(ops, obs, polls, dedupe_expected=True)
    assert r["valid"], checker.explain(r)
    assert r["counts"] == {"ok": 3, "fail": 1, "info": 2, "acked": 3, "drained": 4}
    assert r["lost"] == [] and r["duplicate_count"] == 0
    text = checker.figures("clean", queue=r, faults={"kill": 1})
    assert "3 ok, 1 fail, 2 info; acknowledged 3, lost 0" in text and "kill 1" in text


def test_lost_write_detected():
    ops, obs, polls = clean()
    obs = [o for o in obs if not (o[2] == "b" and o[3].startswith("drain"))]
    obs += drain([(1, "d")])  # offset 1 now holds d in the drain: also inconsistent with b's ack
    obs = [o for o in obs if not (o[1] == 2 and o[2] == "d")]
    r = checker.check_queue(ops, obs, polls)
    assert not r["valid"]
    assert r["lost"] == ["b"]
    assert r["anomalies"]["lost"] == 1
    assert ((0, 1), ["b", "d"]) in r["inconsistent_offsets"]


def test_lost_write_only_counts_ok_ops():
    ops, obs, polls = clean()
    obs = [o for o in obs if o[2] != "d"]   # an info write that never landed is not lost
    r = checker.check_queue(ops, obs, [])
    assert r["valid"], checker.explain(r)


def test_inconsistent_offsets_detected():
    ops, obs, polls = clean()
    obs.append((0, 0, "d", "drain:n3"))      # another node's drain disagrees at offset 0
    r = checker.check_queue(ops, obs, polls)
    assert r["inconsistent_offsets"] == [((0, 0), ["a", "d"])]
    assert not r["valid"]


def test_duplicates_detected_when_keys_used():
    ops, obs, polls = clean()
    obs += drain([(3, "a")])                  # a written twice
    r = checker.check_queue(ops, obs, polls, dedupe_expected=True)
    assert r["duplicates"] == [("a", [(0, 0), (0, 3)])]
    assert r["anomalies"]["duplicates"] == 1 and not r["valid"]
    # Without idempotency keys a duplicate is counted, not an anomaly.
    r = checker.check_queue(ops, obs, polls, dedupe_expected=False)
    assert r["duplicate_count"] == 1 and "duplicates" not in r["anomalies"] and r["valid"]


def test_aborted_read_detected():
    ops, obs, polls = clean()
    obs.append((0, 3, "e", "read:n2"))        # e's produce definitely failed
    obs += drain([(3, "e")])
    r = checker.check_queue(ops, obs, polls)
    assert r["aborted_reads"] == ["e"] and not r["valid"]


def test_phantom_and_misplaced_detected():
    ops, obs, polls = clean()
    obs += drain([(3, "zzz")])
    obs += drain([(1, "a")], partition=1)
    r = checker.check_queue(ops, obs, polls)
    assert r["phantoms"] == ["zzz"]
    assert r["misplaced"] == ["a"]
    assert not r["valid"]


def test_poll_skip_and_drain_gap_detected():
    ops, obs, polls = clean()
    polls = polls + [{"partition": 0, "requested": 0, "offsets": [0, 2], "source": "read:n3"}]
    obs = [o for o in obs if o[1] != 1 or o[3] != "drain:n1"]
    r = checker.check_queue(ops, obs, polls)
    assert len(r["poll_skips"]) == 1 and r["poll_skips"][0]["source"] == "read:n3"
    assert r["drain_gaps"] == [("drain:n1", 0, [1])]
    assert "b" in r["lost"]


def test_nonmonotonic_send_detected():
    ops = [prod("a", "ok", offset=5, start=0, end=1),
           prod("b", "ok", offset=3, start=2, end=3),   # sent after a was acked, lower offset
           prod("c", "ok", offset=4, start=0.5, end=4)]  # concurrent with a: fine
    obs = drain([(3, "b"), (4, "c"), (5, "a")])
    r = checker.check_queue(ops, obs)
    assert r["nonmonotonic_send"] == [(0, "a", 5, "b", 3)]
    assert not r["valid"]
    assert checker.check_queue(ops, obs, realtime=False)["valid"]


def test_drain_is_required_and_values_unique():
    with pytest.raises(ValueError):
        checker.check_queue([prod("a", "ok", offset=0)], [])
    with pytest.raises(ValueError):
        checker.check_queue([prod("a", "ok", offset=0), prod("a", "fail")], drain([(0, "a")]))
    with pytest.raises(ValueError):
        checker.check_queue([prod("a", "ok")], drain([(0, "a")]))  # ok without an offset


# ---- KV

def cas(key, expected, value, result, version=None, start=0.0, end=1.0):
    return {"f": "cas", "key": key, "expected": expected, "value": value, "result": result,
            "version": version, "start": start, "end": end}


def read(key, value, version, start, end, lin=True):
    return {"f": "read", "key": key, "value": value, "version": version, "result": "ok",
            "linearizable": lin, "start": start, "end": end}


def kv_clean():
    return [cas("k", 0, "v1", "ok", 3, 0, 1),
            cas("k", 3, "v2", "ok", 7, 2, 3),
            cas("k", 3, "v2b", "fail", None, 2, 3),   # lost the race: cas_mismatch
            cas("k", 7, "v3", "info", None, 4, 5),    # unknown: did happen (version 9)
            cas("k", 9, "v4", "ok", 12, 6, 7),        # chains through the info write
            read("k", "v2", 7, 3.5, 3.6),
            read("k", "v3", 9, 5.5, 5.6),
            cas("j", 0, "w1", "ok", 4, 0, 1)]


def test_kv_clean_history_is_valid():
    r = checker.check_kv(kv_clean(), {"k": ("v4", 12), "j": ("w1", 4)})
    assert r["valid"], r
    assert r["counts"] == {"ok": 4, "fail": 1, "info": 1, "reads": 2}
    assert "kv cas ops: 4 ok, 1 fail, 1 info" in checker.figures("kv", kv=r)


def test_kv_double_success_detected():
    ops = kv_clean() + [cas("k", 3, "v2c", "ok", 8, 2, 3)]
    r = checker.check_kv(ops, {"k": ("v4", 12)})
    assert r["kv_double_success"] == [("k", 3, ["v2", "v2c"])]
    assert not r["valid"]


def test_kv_broken_chain_detected():
    # A success that expected a version nobody produced, with no info op to explain it.
    ops = [cas("k", 0, "a", "ok", 2), cas("k", 5, "b", "ok", 6, 2, 3)]
    r = checker.check_kv(ops)
    assert r["kv_broken_chain"] == [("k", "b", 5, 2)]
    # The same with an unknown write in between is fine.
    ops.append(cas("k", 2, "x", "info", None, 1.5, 1.8))
    assert checker.check_kv(ops)["valid"]
    # Versions that go backwards break the chain even with info ops around.
    ops = [cas("k", 0, "a", "ok", 4), cas("k", 4, "b", "ok", 4, 2, 3)]
    r = checker.check_kv(ops)
    assert r["kv_version_reuse"] == [("k", 4)] and not r["valid"]


def test_kv_final_value_checked():
    r = checker.check_kv(kv_clean(), {"k": ("v2", 7)})       # regressed to an older write
    assert r["kv_final_lost"] and not r["valid"]
    r = checker.check_kv(kv_clean(), {"k": ("v2b", 13)})     # a failed write became final
    assert r["kv_final_unknown"] == [("k", "v2b", 13)]
    r = checker.check_kv(kv_clean(), {"k": ("zz", 12)})      # right version, wrong value
    assert r["kv_final_unknown"] == [("k", "zz", 12)]
    ops = kv_clean() + [cas("k", 12, "v5", "info", None, 8, 9)]
    assert checker.check_kv(ops, {"k": ("v5", 15)})["valid"]  # an info write may be final


def test_kv_stale_and_aborted_reads_detected():
    ops = kv_clean() + [read("k", "v1", 3, 4, 4.1)]          # after v2 (7) was acked at 3
    r = checker.check_kv(ops)
    assert r["kv_stale_reads"] == [("k", 3, 7)]
    ops = kv_clean() + [read("k", "v1", 3, 4, 4.1, lin=False)]  # a follower read may lag
    assert checker.check_kv(ops)["valid"]
    ops = kv_clean() + [read("k", "v2b", 8, 4, 4.1)]
    r = checker.check_kv(ops)
    assert r["kv_aborted_reads"] == [("k", "v2b")]
    ops = kv_clean() + [read("k", "nope", 8, 4, 4.1)]
    assert checker.check_kv(ops)["kv_phantom_reads"] == [("k", "nope")]
