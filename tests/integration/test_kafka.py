"""The Kafka listener (docs/KAFKA.md) against the real binary, with kcat (Debian) as the client and
raw sockets for the malformed cases: one system, two protocols."""
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import time

import pytest
import requests

from conftest import AUTH, free_port

KCAT = shutil.which("kcat")
pytestmark = pytest.mark.skipif(KCAT is None, reason="kcat not installed (tools/install-deps test)")


@pytest.fixture
def knode(make_node):
    kport = free_port()
    n = make_node(args=["--kafka-port", str(kport), "--kafka-bind", "127.0.0.1"],
                  env={"RF_DEFAULT_PARTITIONS": "4"})
    n.kport = kport
    n.broker = "127.0.0.1:%d" % kport
    n.start()
    yield n
    assert n.stop() == 0, n.log()


def kcat(n, *args, input=None, timeout=30):
    p = subprocess.run([KCAT, "-b", n.broker] + list(args), input=input, capture_output=True,
                       timeout=timeout)
    return p


def consume_json(n, topic, *args):
    p = kcat(n, "-C", "-t", topic, "-e", "-J", *args)
    assert p.returncode == 0, p.stderr
    return [json.loads(line) for line in p.stdout.decode().splitlines() if line.strip()]


def create_topic(n, name, partitions):
    r = requests.post(n.url + "/broker/topics", json={"name": name, "partitions": partitions},
                      headers=AUTH)
    assert r.status_code == 200, r.text


# --- metadata, produce, fetch, list offsets ---------------------------------------------------


def test_metadata_lists_broker_and_topics(knode):
    create_topic(knode, "meta", 3)
    p = kcat(knode, "-L", "-J")
    assert p.returncode == 0, p.stderr
    md = json.loads(p.stdout)
    assert md["brokers"] == [{"id": 1, "name": knode.broker}]
    topics = {t["topic"]: t for t in md["topics"]}
    assert len(topics["meta"]["partitions"]) == 3
    assert all(pt["leader"] == 1 for pt in topics["meta"]["partitions"])


def test_produce_then_consume_offsets(knode):
    create_topic(knode, "pc", 2)
    data = b"".join(b"k%d:v%d\n" % (i, i) for i in range(10))
    p = kcat(knode, "-P", "-t", "pc", "-p", "1", "-K:", input=data)
    assert p.returncode == 0, p.stderr
    msgs = consume_json(knode, "pc", "-p", "1", "-o", "beginning")
    assert [m["offset"] for m in msgs] == list(range(10))
    assert [m["key"] for m in msgs] == ["k%d" % i for i in range(10)]
    assert [m["payload"] for m in msgs] == ["v%d" % i for i in range(10)]
    assert [m["offset"] for m in consume_json(knode, "pc", "-p", "1", "-o", "-3")] == [7, 8, 9]
    assert [m["offset"] for m in consume_json(knode, "pc", "-p", "1", "-o", "4")] == list(range(4, 10))
    assert consume_json(knode, "pc", "-p", "1", "-o", "end") == []
    assert consume_json(knode, "pc", "-p", "0", "-o", "beginning") == []
    # the same records over HTTP, same offsets
    r = requests.get(knode.url + "/broker/consume/pc/g/1?offset=0&limit=100", headers=AUTH).json()
    assert [(m["offset"], m["key"], m["value"]) for m in r["messages"]] == \
        [(i, "k%d" % i, "v%d" % i) for i in range(10)]


def test_offsets_for_times(knode):
    create_topic(knode, "ts", 1)
    for i in range(3):
        requests.post(knode.url + "/broker/topics/ts/produce?partition=0", data=b"x%d" % i,
                      headers=AUTH)
        time.sleep(0.02)
    msgs = requests.get(knode.url + "/broker/consume/ts/g/0?offset=0", headers=AUTH).json()["messages"]
    ts1 = msgs[1]["timestamp_ms"]
    got = consume_json(knode, "ts", "-p", "0", "-o", "s@%d" % ts1)
    assert got[0]["offset"] == 1 if msgs[0]["timestamp_ms"] < ts1 else 0


def test_http_produce_fetched_over_kafka(knode):
    create_topic(knode, "h2k", 1)
    r = requests.post(knode.url + "/broker/topics/h2k/produce?partition=0&key=user-7",
                      data=b"hello", headers=dict(AUTH, **{"X-Ayder-Header-trace": "abc"}))
    assert r.status_code == 200, r.text
    j = r.json()
    msgs = consume_json(knode, "h2k", "-p", "0", "-o", "beginning")
    assert len(msgs) == 1
    m = msgs[0]
    assert m["offset"] == j["offset"]
    assert m["key"] == "user-7" and m["payload"] == "hello"
    assert m["ts"] == j["timestamp_ms"]
    assert m["headers"] == ["trace", "abc"]


def test_kafka_produce_consumed_over_http(knode):
    create_topic(knode, "k2h", 1)
    p = kcat(knode, "-P", "-t", "k2h", "-p", "0", "-K:", "-H", "h1=v1", input=b"key1:val1\n")
    assert p.returncode == 0, p.stderr
    m = consume_json(knode, "k2h", "-p", "0", "-o", "beginning")[0]
    r = requests.get(knode.url + "/broker/consume/k2h/g/0?offset=0", headers=AUTH).json()
    h = r["messages"][0]
    assert h["offset"] == m["offset"] == 0
    assert h["key"] == "key1" and h["value"] == "val1"
    assert h["headers"] == {"h1": "v1"}
    assert h["timestamp_ms"] == m["ts"]


def test_compressed_batches_refused(knode):
    """A compressed batch is refused with UNSUPPORTED_COMPRESSION_TYPE (76); librdkafka 2.0.2
    itself never compresses towards us (it sees no MsgVer1 versions and sends uncompressed)."""
    create_topic(knode, "gz", 1)
    s = connect(knode)
    assert produce_raw(s, 1, "gz", 0, record_batch([b"a"], attrs=1))[0] == 76
    assert produce_raw(s, 2, "gz", 0, record_batch([b"a"], attrs=4))[0] == 76
    s.close()
    p = kcat(knode, "-P", "-t", "gz", "-p", "0", "-z", "lz4",
             input=b"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n" * 200)
    assert p.returncode == 0, p.stderr
    assert len(consume_json(knode, "gz", "-p", "0", "-o", "beginning")) == 200


# --- consumer groups --------------------------------------------------------------------------


def test_group_commit_over_kafka_resumes_over_http(knode):
    create_topic(knode, "gk", 1)
    kcat(knode, "-P", "-t", "gk", "-p", "0", input=b"".join(b"m%d\n" % i for i in range(6)))
    p = kcat(knode, "-G", "gk1", "-c", "4", "-X", "auto.offset.reset=earliest", "-f", "%o\n", "gk")
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == [b"0", b"1", b"2", b"3"]
    g = requests.get(knode.url + "/broker/groups/gk1/gk", headers=AUTH).json()
    assert g["partitions"][0]["committed_offset"] == 4
    r = requests.get(knode.url + "/broker/consume/gk/gk1/0", headers=AUTH).json()
    assert [m["offset"] for m in r["messages"]] == [4, 5]


def test_group_commit_over_http_resumes_over_kafka(knode):
    create_topic(knode, "gh", 1)
    kcat(knode, "-P", "-t", "gh", "-p", "0", input=b"".join(b"m%d\n" % i for i in range(6)))
    r = requests.post(knode.url + "/broker/commit", headers=AUTH,
                      json={"topic": "gh", "group": "gh1", "partition": 0, "offset": 3})
    assert r.status_code == 200, r.text
    p = kcat(knode, "-G", "gh1", "-c", "3", "-X", "auto.offset.reset=earliest", "-f", "%o\n", "gh")
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == [b"3", b"4", b"5"]


def last_assignment(path):
    with open(path, "rb") as f:
        text = f.read().decode()
    lines = [l for l in text.splitlines() if "rebalanced" in l and "assigned:" in l]
    if not lines:
        return None
    return sorted(int(x) for x in re.findall(r"\[(\d+)\]", lines[-1]))


def wait_for(cond, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.2)
    return cond()


def test_two_members_share_partitions_and_rebalance(knode, tmp_path):
    create_topic(knode, "gs", 4)
    procs = []
    errs = []
    try:
        for name in ("a", "b"):
            err = tmp_path / ("%s.err" % name)
            errs.append(err)
            procs.append(subprocess.Popen(
                [KCAT, "-b", knode.broker, "-G", "gs1", "-X", "session.timeout.ms=6000",
                 "-X", "heartbeat.interval.ms=500", "-f", "%p %o\n", "gs"],
                stdout=subprocess.DEVNULL, stderr=open(err, "wb")))
            if name == "a":
                assert wait_for(lambda: last_assignment(errs[0]) == [0, 1, 2, 3]), \
                    errs[0].read_text()

        def shared():
            a, b = last_assignment(errs[0]), last_assignment(errs[1])
            return a and b and sorted(a + b) == [0, 1, 2, 3] and a != [0, 1, 2, 3]
        assert wait_for(shared), (errs[0].read_text(), errs[1].read_text())
        # one member leaves: the other gets everything again
        procs[1].terminate()
        procs[1].wait(timeout=20)
        assert wait_for(lambda: last_assignment(errs[0]) == [0, 1, 2, 3]), errs[0].read_text()
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                p.wait(timeout=20)


# --- raw protocol: versions, malformed frames -------------------------------------------------


def frame(api_key, version, corr, body=b"", client=b"t"):
    hdr = struct.pack(">hhih", api_key, version, corr, len(client)) + client
    return struct.pack(">i", len(hdr) + len(body)) + hdr + body


def read_frame(s):
    size = struct.unpack(">i", recv_exact(s, 4))[0]
    return recv_exact(s, size)


def recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    return buf


def connect(n):
    s = socket.create_connection(("127.0.0.1", n.kport), timeout=5)
    return s


def closed(s):
    try:
        return s.recv(1) == b""
    except ConnectionResetError:
        return True


def test_api_versions_and_unsupported_versions(knode):
    s = connect(knode)
    s.sendall(frame(18, 0, 7))
    body = read_frame(s)
    corr, err, n = struct.unpack(">ihi", body[:10])
    assert (corr, err) == (7, 0)
    table = {struct.unpack(">hhh", body[10 + 6 * i:16 + 6 * i])[0]:
             struct.unpack(">hhh", body[10 + 6 * i:16 + 6 * i])[1:] for i in range(n)}
    assert table[0] == (3, 7) and table[1] == (4, 11) and table[3] == (0, 4)
    # a flexible ApiVersions (v3) is answered UNSUPPORTED_VERSION with the table, in v0
    s.sendall(frame(18, 3, 8, body=b"\x00"))
    body = read_frame(s)
    assert struct.unpack(">ih", body[:6]) == (8, 35)
    # an unknown API key: UNSUPPORTED_VERSION, the connection stays usable
    s.sendall(frame(999, 0, 9))
    body = read_frame(s)
    assert struct.unpack(">ih", body[:6]) == (9, 35)
    s.sendall(frame(18, 2, 10))
    assert struct.unpack(">ih", read_frame(s)[:6]) == (10, 0)
    s.close()


def test_malformed_frames_close_only_that_connection(knode):
    bad = [
        struct.pack(">i", 0x7fffffff) + b"x" * 16,            # oversized
        struct.pack(">i", 2) + b"\x00\x03",                     # shorter than any header
        struct.pack(">i", -5),                                  # negative size
        frame(3, 1, 1, body=struct.pack(">i", 1 << 30)),        # Metadata: absurd array count
        frame(3, 1, 1, body=struct.pack(">i", 1) + b"\x00\x10ab"),  # string past the frame
        frame(0, 3, 1, body=b"\xff\xff\x00\x01\x00\x00"),       # Produce: truncated
        frame(3, 0, 1, body=struct.pack(">i", 0) + b"trailing"),  # bytes left over
    ]
    other = connect(knode)
    for b in bad:
        s = connect(knode)
        s.sendall(b)
        assert closed(s), b
        s.close()
    # a truncated frame: nothing answered until it completes
    s = connect(knode)
    s.sendall(frame(18, 0, 5)[:7])
    s.settimeout(0.5)
    with pytest.raises(socket.timeout):
        s.recv(1)
    s.close()
    # everyone else is still served, bytes not mixed
    other.sendall(frame(18, 1, 42))
    assert struct.unpack(">ih", read_frame(other)[:6]) == (42, 0)
    other.close()
    assert kcat(knode, "-L").returncode == 0


def crc32c(data):
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def varint(v):
    v = (v << 1) ^ (v >> 63)
    out = b""
    while True:
        if v < 0x80:
            return out + bytes([v])
        out += bytes([(v & 0x7F) | 0x80])
        v >>= 7


def record_batch(values, ts=1700000000000, corrupt=False, attrs=0):
    recs = b""
    for i, v in enumerate(values):
        body = b"\x00" + varint(0) + varint(i) + varint(-1) + varint(len(v)) + v + varint(0)
        recs += varint(len(body)) + body
    after_crc = struct.pack(">hiqqqhii", attrs, len(values) - 1, ts, ts, -1, -1, -1, len(values)) + recs
    crc = crc32c(after_crc) ^ (1 if corrupt else 0)
    tail = struct.pack(">ibI", 0, 2, crc) + after_crc
    return struct.pack(">qi", 0, len(tail)) + tail


def produce_raw(s, corr, topic, partition, batch, acks=-1):
    t = topic.encode()
    body = (struct.pack(">hhi", -1, acks, 5000) + struct.pack(">i", 1) + struct.pack(">h", len(t))
            + t + struct.pack(">i", 1) + struct.pack(">ii", partition, len(batch)) + batch)
    s.sendall(frame(0, 3, corr, body))
    resp = read_frame(s)
    # corr, [topic: name, [partition, err, base, log_append_time]], throttle
    off = 4 + 4
    tl = struct.unpack(">h", resp[off:off + 2])[0]
    off += 2 + tl + 4
    part, err, base = struct.unpack(">ihq", resp[off:off + 14])
    return err, base


def test_raw_produce_crc_checked_offsets_assigned(knode):
    create_topic(knode, "raw", 1)
    s = connect(knode)
    assert produce_raw(s, 1, "raw", 0, record_batch([b"a", b"b"])) == (0, 0)
    assert produce_raw(s, 2, "raw", 0, record_batch([b"c"])) == (0, 2)
    err, _ = produce_raw(s, 3, "raw", 0, record_batch([b"d"], corrupt=True))
    assert err == 2  # CORRUPT_MESSAGE
    err, _ = produce_raw(s, 4, "raw", 9, record_batch([b"e"]))
    assert err == 3  # UNKNOWN_TOPIC_OR_PARTITION
    s.close()
    r = requests.get(knode.url + "/broker/consume/raw/g/0?offset=0", headers=AUTH).json()
    assert [(m["offset"], m["value"], m["timestamp_ms"]) for m in r["messages"]] == \
        [(0, "a", 1700000000000), (1, "b", 1700000000000), (2, "c", 1700000000000)]


def test_create_and_delete_topics(knode):
    s = connect(knode)
    name = b"adm"
    body = (struct.pack(">i", 1) + struct.pack(">h", len(name)) + name + struct.pack(">ih", 5, 1)
            + struct.pack(">ii", 0, 0) + struct.pack(">i", 5000))
    s.sendall(frame(19, 0, 1, body))
    resp = read_frame(s)
    assert resp[-2:] == b"\x00\x00", resp
    r = requests.get(knode.url + "/broker/topics/adm", headers=AUTH).json()
    assert len(r["partitions"]) == 5
    s.sendall(frame(19, 0, 2, body))
    assert struct.unpack(">h", read_frame(s)[-2:])[0] == 36  # TOPIC_ALREADY_EXISTS
    s.sendall(frame(20, 0, 3, struct.pack(">i", 1) + struct.pack(">h", 3) + name
                    + struct.pack(">i", 5000)))
    assert read_frame(s)[-2:] == b"\x00\x00"
    assert requests.get(knode.url + "/broker/topics/adm", headers=AUTH).status_code == 404
    s.close()


def test_fetch_long_poll_wakes_on_produce(knode):
    create_topic(knode, "lp", 1)
    p = subprocess.Popen([KCAT, "-b", knode.broker, "-C", "-t", "lp", "-p", "0", "-o", "beginning",
                          "-c", "1", "-f", "%s\n"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(1.5)
    t0 = time.monotonic()
    requests.post(knode.url + "/broker/topics/lp/produce?partition=0", data=b"late", headers=AUTH)
    out, err = p.communicate(timeout=20)
    assert out == b"late\n", err
    assert time.monotonic() - t0 < 5


# --- cluster: every member a broker, the Raft leader leads every partition -------------------

try:
    import confluent_kafka
except ImportError:  # Debian's python3-confluent-kafka (tools/install-deps test)
    confluent_kafka = None

needs_ck = pytest.mark.skipif(confluent_kafka is None, reason="python3-confluent-kafka missing")


def ha_status(nd):
    try:
        return requests.get(nd.url + "/ha/status", timeout=2).json()
    except (requests.RequestException, ValueError):
        return {}


@pytest.fixture
def kcluster(tmp_path):
    """Three members on loopback, each with a Kafka listener; RF_KAFKA_NODES tells every member
    where the others' listeners are. n1 has the highest priority and bootstraps as leader."""
    from conftest import Node
    raft = [free_port() for _ in range(3)]
    http = [free_port() for _ in range(3)]
    kports = [free_port() for _ in range(3)]
    spec = ",".join("n%d:127.0.0.1:%d:%d:%d" % (i + 1, raft[i], 100 - i, http[i]) for i in range(3))
    kspec = ",".join("n%d=127.0.0.1:%d" % (i + 1, kports[i]) for i in range(3))
    nodes = []
    for i in range(3):
        env = {"RF_HA_ENABLED": "1", "RF_HA_NODE_ID": "n%d" % (i + 1), "RF_HA_NODES": spec,
               "RF_HA_ELECTION_TIMEOUT_MS": "600", "RF_HA_HEARTBEAT_MS": "100",
               "RF_KAFKA_NODES": kspec, "RF_DEFAULT_PARTITIONS": "2"}
        if i == 0:
            env["RF_HA_BOOTSTRAP_LEADER"] = "1"
        nd = Node(str(tmp_path / ("n%d" % (i + 1))), port=http[i], env=env,
                  args=["--kafka-port", str(kports[i])])
        nd.name = "n%d" % (i + 1)
        nd.kport = kports[i]
        nd.broker = "127.0.0.1:%d" % kports[i]
        nodes.append(nd)
    for nd in nodes:
        nd.start(wait=False)
    try:
        for nd in nodes:
            nd.wait_ready()
        assert wait_for(lambda: all(ha_status(nd).get("leader_id") == "n1" for nd in nodes), 30)
        yield nodes
        # the survivors stop cleanly (and, under ASan, without a report)
        for nd in nodes:
            if nd.proc.poll() is None:
                assert nd.stop() == 0, nd.log()
    finally:
        for nd in nodes:
            nd.kill()


def test_cluster_metadata_names_every_member_and_the_leader(kcluster):
    lead, f1, f2 = kcluster
    create_topic(lead, "cm", 2)
    for nd in kcluster:  # any member answers Metadata the same way
        p = kcat(nd, "-L", "-J", "-t", "cm")
        assert p.returncode == 0, p.stderr
        md = json.loads(p.stdout)
        names = {b["name"]: b["id"] for b in md["brokers"]}
        assert set(names) == {x.broker for x in kcluster}
        assert len(set(names.values())) == 3
        parts = md["topics"][0]["partitions"]
        assert len(parts) == 2
        assert all(pt["leader"] == names[lead.broker] for pt in parts)
        assert all(sorted(r["id"] for r in pt["replicas"]) == sorted(names.values())
                   for pt in parts)
    # a follower refuses Produce with NOT_LEADER_OR_FOLLOWER (6) ...
    s = connect(f1)
    assert produce_raw(s, 1, "cm", 0, record_batch([b"x"]))[0] == 6
    s.close()
    # ... and a client bootstrapped on a follower follows Metadata to the leader
    p = kcat(f2, "-P", "-t", "cm", "-p", "1", input=b"a\nb\n")
    assert p.returncode == 0, p.stderr
    assert [m["payload"] for m in consume_json(f1, "cm", "-p", "1", "-o", "beginning")] == ["a", "b"]


def http_values(nd, topic, partitions):
    out = {}
    for p in range(partitions):
        vals, off = [], 0
        while True:
            r = requests.get(nd.url + "/broker/consume/%s/chk/%d?offset=%d&limit=1000"
                             % (topic, p, off), headers=AUTH, timeout=10)
            assert r.status_code == 200, r.text
            msgs = r.json()["messages"]
            if not msgs:
                break
            vals += [m["value"] for m in msgs]
            off = msgs[-1]["offset"] + 1
        out[p] = vals
    return out


@needs_ck
def test_cluster_acks_all_producer_survives_leader_kill(kcluster):
    """confluent_kafka without idempotence, acks=all, producing through a SIGKILL of the leader:
    every acknowledged record is on the new leader (duplicates from retries are allowed)."""
    lead, f1, f2 = kcluster
    create_topic(lead, "fo", 2)
    acked, failed = [], []

    def on_delivery(err, msg):
        (failed if err else acked).append((msg.partition(), msg.value().decode()))

    prod = confluent_kafka.Producer({
        "bootstrap.servers": ",".join(nd.broker for nd in kcluster),
        "acks": "all", "enable.idempotence": False, "linger.ms": 2,
        "message.timeout.ms": 60000, "retry.backoff.ms": 100,
        "topic.metadata.refresh.interval.ms": 1000, "socket.connection.setup.timeout.ms": 2000,
    })
    total, killed = 1500, False
    for i in range(total):
        if i == total // 3:
            prod.flush(30)
            assert len(acked) == i, failed[:3]
            lead.kill()
            killed = True
        while True:
            try:
                prod.produce("fo", value=b"m%d" % i, partition=i % 2, on_delivery=on_delivery)
                break
            except BufferError:
                prod.poll(0.1)
        prod.poll(0)
        time.sleep(0.002)
    assert prod.flush(90) == 0
    assert killed and len(acked) + len(failed) == total
    assert len(acked) > total // 3, failed[:3]
    new = wait_for(lambda: next((nd for nd in (f1, f2) if ha_status(nd).get("role") == "leader"),
                                None), 30)
    assert new
    stored = http_values(new, "fo", 2)
    for p, v in acked:
        assert v in stored[p], (p, v)
    # nothing landed in the wrong partition
    for p in range(2):
        seen = [int(v[1:]) for v in stored[p]]
        assert all(x % 2 == p for x in seen)


def test_bad_kafka_nodes_spec_stops_the_node(tmp_path):
    from conftest import BINARY
    for spec in ["n1", "n1=127.0.0.1", "n1=127.0.0.1:0", "=h:1", "n1=:9092", "n1=h:9092x"]:
        p = subprocess.run([BINARY, "--port", str(free_port()), "--data-dir", str(tmp_path / "d"),
                            "--kafka-port", "0", "--kafka-nodes", spec],
                           capture_output=True, timeout=30)
        assert p.returncode != 0, spec
        assert b"--kafka-nodes" in p.stderr + p.stdout, spec
