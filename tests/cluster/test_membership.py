"""Membership changes one server at a time while a workload runs: grow 3 -> 5 -> 7 (each new node
joins as a learner, catches up, is promoted) and shrink back 7 -> 3 (removed nodes are stopped
after their removal committed). The history checker then runs over the whole history, and every
remaining node's data must equal the leader's."""
from cluster import wait_for
from scenario import finish, hold
from test_faults import workload
from workload import Client
import json
import random


def membership(c, op, node, timeout=60):
    """POST /ha/membership via any node, following 307s; retried while another change is still
    uncommitted (503). Returns the answer's JSON."""
    body = {"op": op, "id": node.id}
    if op == "add":
        body.update({"host": node.host, "raft_port": node.raft_port,
                     "http_port": node.http_port, "priority": node.priority})
    client = Client(c, random.Random(1), max_hops=5, timeout_ms=5000)
    try:
        def attempt():
            o = client.call("POST", "/ha/membership", data=json.dumps(body))
            if o.status == 200:
                return o.body
            if o.status is None or o.status >= 500:
                return None          # another change in flight, or no leader yet: retry
            raise AssertionError("%s %s -> %s %r" % (op, node.id, o.status, o.body))
        return wait_for(attempt, timeout, "membership %s %s" % (op, node.id))
    finally:
        client.close()


def conf_of(c, li):
    st = c[li].status()
    return set(st["voters"]), set(st.get("learners", []))


def test_grow_and_shrink(make_cluster, figures, long_run):
    c = make_cluster(3)
    w = workload(c, long_run, kv_clients=1)
    w.start(duration_s=600)
    hold(w, 1.0)
    for target in (5, 7):
        while len(c.nodes) < target:
            n = c.add_node()
            n.start()
            r = membership(c, "add", n)
            assert r["op"] == "add" and r["id"] == n.id, r
            # the learner catches up before it is promoted: it reaches the leader's commit index
            # as of now (under continuous load it then trails the moving tip by a few entries)
            li = c.wait_leader(idx=[i for i in range(len(c.nodes) - 1)])
            tip = c[li].status()["commit_index"]
            wait_for(lambda: n.status()["applied_index"] >= tip, 60,
                     "%s to catch up to %d" % (n.id, tip))
            r = membership(c, "promote", n)
            assert r["op"] == "promote", r
            wait_for(lambda: n.id in conf_of(c, c.wait_leader())[0], 30, "%s to vote" % n.id)
        hold(w, 1.0)
        li = c.wait_leader()
        voters, learners = conf_of(c, li)
        assert len(voters) == target and not learners, (voters, learners)
    while len(c.nodes) > 3:
        n = c.nodes[-1]
        r = membership(c, "remove", n)
        assert r["op"] == "remove", r
        wait_for(lambda: n.id not in conf_of(c, c.wait_leader(idx=list(range(len(c.nodes) - 1))))[0],
                 30, "%s to leave" % n.id)
        n.kill()
        c.nodes.pop()
        c.note("membership", "removed %s" % n.id)
        hold(w, 0.5)
    li = c.wait_leader()
    voters, _ = conf_of(c, li)
    assert voters == {"n1", "n2", "n3"}, voters
    finish(c, w, figures, "membership 3 -> 5 -> 7 -> 3")
