"""Subscriptions served by a follower (docs/HTTP_API.md "Subscribe", Cluster): committed records
only, the serving node named in the first event, and a leadership change does not end the
stream (the follower can still serve)."""
import json

from cluster import client_session, wait_for


def test_follower_serves_a_stream_across_a_leader_change(make_cluster):
    c = make_cluster(3)
    s = client_session()
    li = c.wait_leader()
    leader = c[li]
    r = s.post(leader.url + "/broker/topics", json={"name": "fs", "partitions": 2}, timeout=30)
    assert r.status_code == 200, r.text
    f = (li + 1) % 3
    c.wait_applied(f, c.leader_commit(li))
    st = s.get(c[f].url + "/broker/subscribe/fs/g", params={"stream": "ndjson", "from": "earliest"},
               stream=True, timeout=30)
    assert st.status_code == 200, st.text
    lines = st.iter_lines(chunk_size=1)
    first = json.loads(next(lines))
    assert first["type"] == "subscribed" and first["role"] == "follower"
    assert first["node"] == c[f].status()["node_id"]
    assert first["leader_url"] == leader.url
    for i in range(6):
        r = s.post(leader.url + "/broker/topics/fs/produce", params={"partition": i % 2},
                   data=json.dumps({"i": i}), timeout=30)
        assert r.status_code == 200, r.text
    got = [json.loads(next(lines)) for _ in range(6)]
    assert sorted(g["value"]["i"] for g in got) == list(range(6))
    # the leader goes away: the follower's stream goes on, and serves what the new leader commits
    c.kill(li)
    (nl,) = wait_for(lambda: next(((i,) for i in range(3)
                                   if i != li and c[i].status()["role"] == "leader"), None),
                     60, "a new leader")
    r = s.post(c[nl].url + "/broker/topics/fs/produce", params={"partition": 0},
               data=json.dumps({"i": 6}), timeout=30)
    assert r.status_code == 200, r.text
    while True:
        ev = json.loads(next(lines))
        if ev["type"] == "record":
            break
        assert ev["type"] == "heartbeat", ev
    assert ev["value"] == {"i": 6} and ev["partition"] == 0 and ev["offset"] == 3
    st.close()
    s.close()
