"""Stream processing and the schema registry in a 3-node cluster: a schema registered on the
leader is replicated through the journal (a follower serves it, also after a restart and after a
snapshot catch-up of a wiped node), a follower redirects registrations, and queries and joins run
on a follower over committed data with the same answers as on the leader."""
import base64
import json
import struct

from cluster import client_session

SCHEMA = json.dumps({"type": "record", "name": "Pay", "fields": [
    {"name": "uid", "type": "int"}, {"name": "amount", "type": "double"}]})


def zz(n):
    return (n << 1) ^ (n >> 31)


def uvarint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def avro_pay(uid, amount):
    return uvarint(zz(uid)) + struct.pack("<d", amount)


def test_registry_replicated_and_queries_on_followers(make_cluster):
    c = make_cluster(3)
    s = client_session()
    li = c.wait_leader()
    leader = c[li].url
    f = (li + 1) % 3
    follower = c[f].url
    # A registration sent to a follower is redirected to the leader.
    body = {"schema": SCHEMA}
    r = s.post(follower + "/subjects/pay-value/versions", json=body, allow_redirects=False,
               timeout=30)
    assert r.status_code == 307, r.text
    assert r.headers["Location"] == leader + "/subjects/pay-value/versions"
    r = s.post(leader + "/subjects/pay-value/versions", json=body, timeout=30)
    assert r.status_code == 200, r.text
    sid = r.json()["id"]
    # Records: Avro binary, produced in one NDJSON batch of base64 lines.
    r = s.post(leader + "/broker/topics", json={"name": "pay", "partitions": 1}, timeout=30)
    assert r.status_code == 200, r.text
    lines = [base64.b64encode(avro_pay(i % 5, float(i))).decode() for i in range(50)]
    r = s.post(leader + "/broker/topics/pay/produce-ndjson",
               params={"partition": 0, "encoding": "b64"}, data="\n".join(lines), timeout=30)
    assert r.status_code == 200, r.text
    c.wait_applied(f, c.leader_commit(li))
    # The follower knows the schema (replicated through the journal) ...
    r = s.get(follower + "/schemas/ids/%d" % sid, timeout=30)
    assert r.status_code == 200, r.text
    assert json.loads(r.json()["schema"]) == json.loads(SCHEMA)
    # ... and answers a query through it, exactly as the leader does.
    q = {"source": {"topic": "pay", "partition": 0, "offset": 0, "limit": 1000,
                    "decode": {"type": "avro", "subject": "pay-value"}},
         "filter": [{"field": "amount", "op": "ge", "value": 10}],
         "aggregate": {"group_by": ["uid"], "measures": [{"op": "count"},
                                                          {"op": "sum", "field": "amount"}]}}
    answers = []
    for url in (leader, follower):
        r = s.post(url + "/broker/query", json=q, timeout=30)
        assert r.status_code == 200, r.text
        a = r.json()
        assert a["stats"]["scanned"] == 50 and a["stats"]["skipped_parse"] == 0, a["stats"]
        answers.append(a["aggregates"])
    assert answers[0] == answers[1]
    want = {}
    for i in range(10, 50):
        n, t = want.get(i % 5, (0, 0.0))
        want[i % 5] = (n + 1, t + float(i))
    assert {a["group"]["uid"]: (a["count"], a["sum_amount"]) for a in answers[0]} == want
    # A restarted follower still has the schema (journal replay / checkpoint).
    c.kill(f)
    c.restart(f)
    c.wait_applied(f, c.leader_commit(c.wait_leader()), timeout=60)
    r = s.get(follower + "/subjects/pay-value/versions/latest", timeout=30)
    assert r.status_code == 200, r.text
    assert r.json()["id"] == sid and r.json()["version"] == 1
    s.close()
