"""Shared steps of the cluster scenarios: hold a phase, measure fail-over, finish a run (heal,
converge, drain every node, check the history, print figures, assert zero anomalies).

hold() is the only place a scenario waits for time rather than a condition: it is the length of a
fault phase (how long the workload runs under the fault), never a stand-in for a state change.
"""
import random
import time

import checker
from workload import Client

ELECTION_TIMEOUT_S = 1.0   # the server default (RF_HA_ELECTION_TIMEOUT_MS)


def hold(w, seconds):
    """Let the workload run for a fault phase of this many seconds (returns early on stop)."""
    w.stop_ev.wait(seconds)


def measure_failover(c, w, exclude=None, timeout=60):
    """Seconds from now until a produce (via any node, following redirects) is acknowledged by a
    leader other than `exclude` (a node index). The probes are part of the checked history."""
    # A short deadline: a probe stuck on a paused (SIGSTOPped) node must not hide the failover.
    client = Client(c, random.Random(7), w.max_hops, 500)
    t0 = time.monotonic()
    n = 0
    try:
        while time.monotonic() - t0 < timeout:
            n += 1
            op = w.produce_once(client, "probe-%d-%d" % (int(t0 * 1000) % 100000, n), 0,
                                retries=0)
            if op["result"] == "ok":
                leader = client.leader_url
                if exclude is None or leader != c.nodes[exclude].url:
                    return time.monotonic() - t0
            w.stop_ev.wait(0.02)   # pace the probes; the loop itself is the condition wait
    finally:
        client.close()
    raise TimeoutError("no leader accepted a write within %ss" % timeout)


def finish(c, w, figures, name, extra=None, drain_all=True, expect_wc=("majority",)):
    """Stop the workload, heal everything, wait for convergence, drain, check and report.
    Returns (queue_report, kv_report, drains)."""
    w.stop()
    if c.net is not None:
        c.heal()
    for i, n in enumerate(c.nodes):
        if n.paused:
            c.resume(i)
        if not n.alive():
            c.restart(i)
    li = c.wait_converged(timeout=120)
    drains = {}
    for i in (range(len(c.nodes)) if drain_all else [li]):
        drains[i] = w.drain_node(i)
    finals = w.kv_finals(li) if w.n_kv else None
    q = checker.check_queue(w.ops, w.observations, w.polls, dedupe_expected=w.idempotent)
    kv = checker.check_kv(w.kv_ops, finals) if w.n_kv else None
    ext = w.figures_extra()
    ext.update(extra or {})
    ext["nodes"] = len(c.nodes)
    figures(checker.figures(name, queue=q, kv=kv, faults=dict(c.faults), extra=ext))
    assert not w.errors, w.errors[:10]
    assert q["valid"], checker.explain(q)
    if kv is not None:
        assert kv["valid"], checker.explain(kv)
        assert kv["counts"]["ok"] > 0, "no CAS succeeded: %r" % (kv["counts"],)
    assert q["counts"]["ok"] > 0, "no produce succeeded: %r" % (q["counts"],)
    if expect_wc is not None:
        got = set(w.stats["write_concern"])
        assert got <= set(expect_wc), "write_concern on ok produces: %r" % (
            w.stats["write_concern"],)
    for i, d in drains.items():
        assert d == drains[li], "%s's log differs from the leader %s's" % (
            c.nodes[i].id, c.nodes[li].id)
    return q, kv, drains
