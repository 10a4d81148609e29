"""Jepsen-style runs: a concurrent workload (producers, readers, KV CAS clients) under kills,
pauses, partitions and wipes; then heal, converge, drain every node and check the history.

Short versions run in `make test`; AYDER_JEPSEN=1 (make jepsen) runs longer with more fault
cycles. Every run prints its figures (see conftest.py `figures`)."""
import random

import pytest

from scenario import ELECTION_TIMEOUT_S, finish, hold, measure_failover
from workload import Client, Workload


def workload(c, long_run, **kw):
    kw.setdefault("producers", 4)
    kw.setdefault("readers", 1)
    kw.setdefault("kv_clients", 2)
    w = Workload(c, **kw)
    w.create_topic()
    return w


def cycles(long_run, short=1, long=6):
    return long if long_run else short


@pytest.mark.parametrize("n", [3, 5])
def test_leader_kill(make_cluster, figures, long_run, n):
    c = make_cluster(n)
    w = workload(c, long_run)
    w.start(duration_s=600)
    failovers = []
    for k in range(cycles(long_run)):
        hold(w, 2.0)
        li = c.wait_leader()
        victims = [li]
        if n == 5 and k % 2 == 0:
            victims.append((li + 1) % n)        # two failures: still a majority of 3
        for v in victims:
            c.kill(v)
        failovers.append(measure_failover(c, w, exclude=li))
        hold(w, 1.5)
        for v in victims:
            c.restart(v)
        c.wait_leader(timeout=60)
    hold(w, 2.0)
    finish(c, w, figures, "leader kill, %d nodes" % n, extra={
        "time to a new leader accepting a write (s)": " ".join("%.2f" % f for f in failovers)})


def test_partitions(make_cluster, figures, long_run):
    c = make_cluster(3)
    w = workload(c, long_run)
    w.start(duration_s=600)
    rng = random.Random(w.seed)
    minority_writes = []
    for k in range(cycles(long_run, 1, 4)):
        # 1. Isolate the leader: the majority elects another; the old leader cannot commit.
        hold(w, 1.5)
        li = c.wait_leader()
        c.isolate(li)
        probe = Client(c, rng, w.max_hops, 1000)
        try:
            for j in range(2):
                op = w.produce_once(probe, "minority-%d-%d" % (k, j), 0, base=c[li].url,
                                    follow=False, retries=0)
                minority_writes.append(op["result"])
                assert op["result"] != "ok", "the isolated old leader acknowledged %r" % (op,)
        finally:
            probe.close()
        others = [i for i in range(3) if i != li]
        c.wait_leader(idx=others, exclude=li, timeout=30)
        hold(w, 1.5)
        c.heal()
        c.wait_leader(timeout=30)
        # 2. Majority/minority split with the leader on the majority side.
        hold(w, 1.0)
        li = c.wait_leader()
        mate = rng.choice([i for i in range(3) if i != li])
        c.split([li, mate], [i for i in range(3) if i not in (li, mate)])
        hold(w, 2.0)
        c.heal()
        c.wait_leader(timeout=30)
        # 3. One-way: the leader's packets to the followers are lost (they elect a new
        #    leader), then the followers' packets to the leader.
        hold(w, 1.0)
        li = c.wait_leader()
        others = [i for i in range(3) if i != li]
        c.one_way([li], others)
        hold(w, 2.0)
        c.heal()
        c.wait_leader(timeout=30)
        li = c.wait_leader()
        c.one_way([i for i in range(3) if i != li], [li])
        hold(w, 2.0)
        c.heal()
        c.wait_leader(timeout=30)
    hold(w, 1.0)
    finish(c, w, figures, "partitions, 3 nodes", extra={
        "writes sent to the isolated leader (result)": " ".join(minority_writes)})


def test_pause(make_cluster, figures, long_run):
    c = make_cluster(3)
    w = workload(c, long_run)
    w.start(duration_s=600)
    failovers = []
    for k in range(cycles(long_run, 1, 5)):
        hold(w, 2.0)
        li = c.wait_leader()
        c.pause(li)
        others = [i for i in range(3) if i != li]
        failovers.append(measure_failover(c, w, exclude=li))
        c.wait_leader(idx=others, exclude=li, timeout=30)
        hold(w, max(1.0, 3 * ELECTION_TIMEOUT_S - failovers[-1]))  # paused > election timeout
        c.resume(li)
        c.wait_leader(timeout=30)
    hold(w, 2.0)
    finish(c, w, figures, "pause (SIGSTOP) the leader, 3 nodes", extra={
        "time to a new leader accepting a write (s)": " ".join("%.2f" % f for f in failovers)})


def test_wipe(make_cluster, figures, long_run):
    c = make_cluster(3)
    w = workload(c, long_run, kv_clients=1)
    w.start(duration_s=600)
    for k in range(cycles(long_run, 1, 3)):
        hold(w, 3.0)
        li = c.wait_leader()
        f = (li + 1 + k) % 3
        if f == li:
            f = (f + 1) % 3
        c.wipe(f)          # data directory deleted; same id and address
        c.wait_leader(timeout=60)
        hold(w, 2.0)
    q, kv, drains = finish(c, w, figures, "wipe a follower, 3 nodes")
    # finish() already compared every node's drain with the leader's; the wiped one included.
    assert sum(len(v) for v in drains[c.wait_leader()].values()) == q["counts"]["drained"]


def test_whole_cluster_crash(make_cluster, figures, long_run):
    """Every node SIGKILLed, then restarted: each re-applies its journal up to its commit mark by
    itself. Even cycles kill all three at once and restart one alone first (it serves what it
    had applied, with no leader to ask). Odd cycles kill the followers first, so the leader
    appends writes it cannot commit, then the leader; the followers come back first and elect a
    new leader whose log lacks that tail, then the old leader returns: it must not have applied
    any of it. The history must show nothing acknowledged lost and every node's drain equal."""
    c = make_cluster(3)
    w = workload(c, long_run)
    w.start(duration_s=600)
    rng = random.Random(w.seed)
    for k in range(cycles(long_run, 2, 6)):
        hold(w, 2.5)
        if k % 2 == 0:
            for i in range(3):
                c.kill(i)
            order = list(range(3))
            rng.shuffle(order)
            c.restart(order[0])             # alone for a moment
            hold(w, 0.5)
            for i in order[1:]:
                c.restart(i)
        else:
            li = c.wait_leader()
            others = [i for i in range(3) if i != li]
            for i in others:
                c.kill(i)
            hold(w, 1.0)                    # the lone leader appends what it cannot commit
            c.kill(li)
            for i in others:
                c.restart(i)
            c.wait_leader(idx=others, timeout=60)
            hold(w, 1.0)                    # the new leader overwrites that tail
            c.restart(li)
        c.wait_leader(timeout=60)
        hold(w, 1.5)
    finish(c, w, figures, "whole-cluster crash, 3 nodes")
