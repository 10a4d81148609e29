"""The seed's Follower Recovery walkthrough, verbatim, and the redirect contract of a follower."""
import json
import time

import requests

from cluster import client_session, wait_for


def produce(s, node, body, topic="test", **params):
    params.setdefault("partition", 0)
    return s.post(node.url + "/broker/topics/%s/produce" % topic, params=params, data=body,
                  allow_redirects=False, timeout=30)


def test_follower_recovery(make_cluster):
    c = make_cluster(3)
    s = client_session()
    li = c.wait_leader()
    leader = c[li]
    r = produce(s, leader, "msg-0")
    assert r.status_code == 200, r.text
    assert r.json()["offset"] == 0
    f = (li + 1) % 3
    c.kill(f)                                       # kill -9 a follower
    for k in (1, 2):
        r = produce(s, leader, "msg-%d" % k)
        assert r.status_code == 200, r.text
        assert r.json()["offset"] == k
    c.restart(f)                                    # it catches up automatically
    commit = c.leader_commit(c.wait_leader())
    c.wait_applied(f, commit, timeout=60)
    r = s.get(c[f].url + "/broker/consume/test/g1/0", params={"offset": 0, "limit": 10},
              timeout=30)
    assert r.status_code == 200, r.text
    msgs = r.json()["messages"]
    assert [m["offset"] for m in msgs] == [0, 1, 2]
    assert [m["value"] for m in msgs] == ["msg-0", "msg-1", "msg-2"]
    s.close()


def test_redirect(make_cluster):
    c = make_cluster(3)
    s = client_session()
    li = c.wait_leader()
    leader_url = c[li].status()["leader_url"]
    assert leader_url == c[li].url
    f = (li + 1) % 3
    assert c[f].status()["leader_url"] == leader_url
    assert c[f].status()["role"] == "follower"
    path = "/broker/topics/redir/produce?partition=0&idempotency_key=r1"
    r = s.post(c[f].url + path, data="x", allow_redirects=False, timeout=30)
    assert r.status_code == 307, r.text
    assert r.headers["Location"] == leader_url + path
    body = r.json()
    assert body["ok"] is False and body["error"] == "not_leader"
    assert body["leader_url"] == leader_url and body.get("message")
    # The same request re-sent to Location succeeds, and a retry via the follower is deduped.
    r2 = s.post(r.headers["Location"], data="x", allow_redirects=False, timeout=30)
    assert r2.status_code == 200, r2.text
    assert r2.json()["write_concern"] == "majority"
    # (requests drops Authorization when a redirect changes host, so follow it by hand)
    r3 = s.post(c[f].url + path, data="x", allow_redirects=False, timeout=30)
    assert r3.status_code == 307
    r3 = s.post(r3.headers["Location"], data="x", allow_redirects=False, timeout=30)
    assert r3.status_code == 200 and r3.json()["offset"] == r2.json()["offset"]
    assert r3.json().get("duplicate") is True
    # KV writes redirect too; reads are served by the follower (committed data).
    r = s.post(c[f].url + "/kv/ns/key1", data="v", allow_redirects=False, timeout=30)
    assert r.status_code == 307 and r.headers["Location"] == leader_url + "/kv/ns/key1"
    r = s.post(leader_url + "/kv/ns/key1", data="v", timeout=30)
    assert r.status_code == 200, r.text
    c.wait_applied(f, c.leader_commit(li))
    r = s.get(c[f].url + "/kv/ns/key1", timeout=30)
    assert r.status_code == 200 and r.json()["cas"] > 0
    # No leader at all (two of three nodes down): 503 no_leader with Retry-After.
    others = [i for i in range(3) if i != f]
    for i in others:
        c.kill(i)
    wait_for(lambda: c[f].status()["leader_id"] is None, 30, "the survivor to lose its leader")
    r = s.post(c[f].url + "/broker/topics/redir/produce?partition=0", data="y",
               allow_redirects=False, timeout=30)
    assert r.status_code == 503, r.text
    assert r.json()["error"] == "no_leader" and r.headers.get("Retry-After")
    s.close()


def test_status_shape(make_cluster):
    c = make_cluster(3)
    li = c.wait_leader()
    st = c[li].status()
    for k in ("ok", "enabled", "node_id", "role", "term", "leader_id", "leader_url",
              "commit_index", "applied_index", "last_index", "voters", "learners", "peers"):
        assert k in st, (k, st)
    assert st["enabled"] is True and st["node_id"] == c[li].id
    assert sorted(st["voters"]) == ["n1", "n2", "n3"] and st["learners"] == []
    assert sorted(p["id"] for p in st["peers"]) == sorted(n.id for n in c.nodes if n.id != c[li].id)
    wait_for(lambda: all(p["connected"] for p in c[li].status()["peers"]), 30,
             "the leader connected to every peer")
    # /ha/status is public: no token needed.
    r = requests.Session()
    try:
        c[li].status(session=r)
    finally:
        r.close()


def test_priority_and_transfer(make_cluster):
    """Priority: the leader ends up being n1 (highest priority) once it is caught up. A requested
    transfer moves leadership to another voter and it stays there (no hand-back)."""
    c = make_cluster(3)
    s = client_session()
    wait_for(lambda: c.find_leader() == 0, 30, "n1 (priority 100) to lead")
    target = c[2]
    r = s.post(c[1].url + "/ha/membership", data=json.dumps({"op": "transfer", "id": target.id}),
               allow_redirects=False, timeout=10)
    assert r.status_code == 307, r.text          # a follower redirects it like any write
    r = s.post(r.headers["Location"], data=json.dumps({"op": "transfer", "id": target.id}),
               allow_redirects=False, timeout=10)
    assert r.status_code == 200 and r.json()["op"] == "transfer", r.text
    wait_for(lambda: c.find_leader() == 2, 30, "n3 to lead after the transfer")
    # it keeps leading: over three seconds (three priority checks) nobody takes it back
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        li = c.find_leader()
        assert li in (2, None), "leadership went back to %s" % li
        time.sleep(0.2)  # sampling interval of the observation, not a wait for a condition
    # bad requests
    r = s.post(target.url + "/ha/membership", data=json.dumps({"op": "transfer", "id": "n3"}),
               timeout=10)
    assert r.status_code == 409, r.text          # itself
    r = s.post(target.url + "/ha/membership", data=json.dumps({"op": "transfer", "id": "n9"}),
               timeout=10)
    assert r.status_code == 404, r.text          # not a voter
    s.close()


def test_handover_holds_writes_and_redirects(make_cluster):
    """Writes that reach the leader while it hands leadership over are held, not refused: each
    is appended there (the transfer failed) or answered 307 to the new leader once it is known.
    None gets a 503, and following the redirects loses and duplicates nothing. Linearizable
    reads sent to the old leader get 200 or 307 as well."""
    c = make_cluster(3)
    s = client_session()
    li = c.wait_leader()
    old, target = c[li], c[(li + 2) % 3]
    r = s.post(old.url + "/broker/topics", data='{"name":"ho","partitions":1}', timeout=30)
    assert r.status_code in (200, 201), r.text
    answers = {}                                    # key -> first answer's status
    redirected = []
    reads = {}
    transfer_sent = False
    deadline = time.monotonic() + 20
    k = 0
    # Write to the old leader until it has answered some writes with a redirect (or 20 s pass).
    while time.monotonic() < deadline and len(redirected) < 20:
        key = "ho-%d" % k
        t0 = time.monotonic()
        r = s.post(old.url + "/broker/topics/ho/produce", data="v-%d" % k,
                   params={"partition": 0, "idempotency_key": key}, allow_redirects=False,
                   timeout=30)
        assert r.status_code in (200, 307), (key, r.status_code, r.text,
                                             "%.3f s" % (time.monotonic() - t0))
        answers[key] = r.status_code
        if r.status_code == 307:
            assert r.json()["error"] == "not_leader"
            loc = r.headers["Location"]
            assert any(loc.startswith(n.url + "/") for n in c.nodes if n is not old), loc
            redirected.append((key, loc, "v-%d" % k))
        # a linearizable read (ReadIndex) meets the same hand-over: 200 or 307, never 503
        r = s.get(old.url + "/broker/consume/ho/g1/0", allow_redirects=False, timeout=30,
                  params={"offset": 0, "limit": 1, "consistency": "leader"})
        assert r.status_code in (200, 307), ("read", k, r.status_code, r.text)
        reads[r.status_code] = reads.get(r.status_code, 0) + 1
        k += 1
        if k == 50 and not transfer_sent:
            r = s.post(old.url + "/ha/membership",
                       data=json.dumps({"op": "transfer", "id": target.id}), timeout=10)
            assert r.status_code == 200, r.text
            transfer_sent = True
    assert transfer_sent and redirected, "no write was redirected within 20 s (%d sent)" % k
    assert reads.get(307), reads
    for key, loc, body in redirected:               # what a client following 307 does
        for _hop in range(5):                       # (a later election may move it once more)
            r = s.post(loc, data=body, allow_redirects=False, timeout=30)
            if r.status_code != 307:
                break
            loc = r.headers["Location"]
        assert r.status_code == 200, (key, r.text)
    c.wait_converged()
    r = s.get(target.url + "/broker/consume/ho/g1/0", params={"offset": 0, "limit": 1000},
              timeout=30)
    assert r.status_code == 200, r.text
    msgs = r.json()["messages"]
    assert [m["offset"] for m in msgs] == list(range(len(msgs)))
    assert sorted(m["value"] for m in msgs) == sorted("v-%d" % i for i in range(k))
    s.close()


def test_restart_alone_serves_what_it_had_applied(make_cluster):
    """A node restarted after SIGKILL re-applies its journal up to its commit mark by itself:
    with every other node down (no leader to tell it the commit index) it still serves every
    write it had applied before the crash, not just its last checkpoint's state."""
    c = make_cluster(3)
    s = client_session()
    li = c.wait_leader()
    r = s.post(c[li].url + "/broker/topics", data='{"name":"alone","partitions":1}', timeout=30)
    assert r.status_code in (200, 201), r.text
    for k in range(30):
        r = produce(s, c[li], "m-%d" % k, topic="alone")
        assert r.status_code == 200, r.text
    c.wait_converged()
    commit = c.leader_commit(c.wait_leader())
    assert commit >= 32, commit                           # bootstrap, no-ops, topic, 30 writes
    f = (li + 1) % 3
    wait_for(lambda: c[f].status()["restart_index"] >= commit, 30,
             "%s to record its commit mark at %d" % (c[f].id, commit))
    for i in range(3):
        c.kill(i)
    c.restart(f)
    wait_for(lambda: c[f].status() is not None, 30, "%s to answer after its restart" % c[f].id)
    st = c[f].status()
    assert st["applied_index"] >= commit, st
    assert st["role"] != "leader", st                     # alone: no quorum, no leader
    r = s.get(c[f].url + "/broker/consume/alone/g1/0", params={"offset": 0, "limit": 100},
              timeout=30)
    assert r.status_code == 200, r.text
    assert [m["value"] for m in r.json()["messages"]] == ["m-%d" % k for k in range(30)]
    # The others come back and the cluster carries on from there.
    for i in range(3):
        if i != f:
            c.restart(i)
    li = c.wait_leader(timeout=60)
    r = produce(s, c[li], "after", topic="alone")
    assert r.status_code in (200, 307), r.text
    c.wait_converged()
    s.close()
