"""`ayder <subcommand>`: the command-line client, run as a real process against live nodes
(docs/CLI.md). Every subcommand, its exit codes, redirects through a 3-node cluster, bad tokens,
1 M lines on stdin in a pipe (no progress) and on a terminal (progress), and `tail -f` seeing
records produced after it started. Processes we start are stopped by PID."""
import json
import os
import pty
import select
import signal
import subprocess
import time

import requests

from conftest import BINARY, ROOT, Node, free_port

ENV = dict(os.environ, AYDER_TOKEN="dev")
ENV.pop("AYDER_URL", None)


def cli(node_or_url, *args, stdin=None, env=None, timeout=120, token="dev"):
    url = node_or_url if isinstance(node_or_url, str) else node_or_url.url
    e = dict(ENV, AYDER_URL=url)
    if token is None:
        e.pop("AYDER_TOKEN", None)
    else:
        e["AYDER_TOKEN"] = token
    if env:
        e.update(env)
    return subprocess.run([BINARY] + list(args), input=stdin, env=e, capture_output=True,
                          timeout=timeout)


def ok(r):
    assert r.returncode == 0, (r.returncode, r.stdout[-2000:], r.stderr[-2000:])
    return r.stdout.decode()


def test_help_usage_and_completion(node):
    r = subprocess.run([BINARY, "--help"], capture_output=True)
    assert r.returncode == 0
    out = r.stdout.decode()
    assert "exit codes: 0 ok, 1 error answered by the server, 2 usage, 3 auth" in out
    for sub in ("produce", "consume", "tail", "topics", "groups", "kv", "query", "cluster",
                "completion"):
        h = subprocess.run([BINARY, sub, "--help"], capture_output=True)
        assert h.returncode == 0, sub
        assert h.stdout.startswith(b"usage: ayder"), (sub, h.stdout)
    # usage errors: exit 2, nothing sent
    assert cli(node, "topics", "frobnicate").returncode == 2
    assert cli(node, "produce").returncode == 2
    assert cli(node, "consume", "t", "--bogus").returncode == 2
    assert cli(node, "kv", "put").returncode == 2
    assert cli("ftp://x", "topics", "list").returncode == 2
    comp = ok(cli(node, "completion", "bash"))
    with open(os.path.join(ROOT, "tools", "ayder-completion.bash")) as f:
        assert f.read() == comp
    subprocess.run(["bash", "-n"], input=comp.encode(), check=True)
    # the script completes subcommands in a real bash
    script = comp + '\nCOMP_WORDS=(ayder to); COMP_CWORD=1; _ayder; echo "${COMPREPLY[@]}"\n'
    got = subprocess.run(["bash", "-c", script], capture_output=True).stdout.decode().split()
    assert got == ["topics"]


def test_topics_produce_consume_groups(node):
    assert "created" in ok(cli(node, "topics", "create", "ev", "--partitions", "2"))
    assert "already existed" in ok(cli(node, "topics", "create", "ev", "-p", "2"))
    r = cli(node, "topics", "create", "ev", "-p", "3")
    assert r.returncode == 6 and b"409 conflict" in r.stderr
    lst = ok(cli(node, "topics", "list"))
    assert lst.splitlines()[0].split() == ["TOPIC", "PARTITIONS"] and "ev" in lst
    assert json.loads(ok(cli(node, "-J", "topics", "list")))["topics"] == [
        {"name": "ev", "partitions": 2}]
    # one value, with key and header
    out = ok(cli(node, "produce", "ev", "hello", "-k", "k1", "-H", "trace=abc", "-p", "1"))
    assert out.strip() == "ev: partition 1 offset 0"
    # lines from stdin, to partition 0
    ok(cli(node, "produce", "ev", "-p", "0", stdin=b"a\nb\n\nc"))
    desc = ok(cli(node, "topics", "describe", "ev")).splitlines()
    assert desc[0].split()[:4] == ["PARTITION", "EARLIEST", "LATEST", "RECORDS"]
    assert desc[1].split()[:4] == ["0", "0", "3", "3"] and desc[2].split()[:4] == ["1", "0", "1", "1"]
    out = ok(cli(node, "consume", "ev", "--format", "%p/%o %k=%s [%h] %S\\n"))
    assert sorted(out.splitlines()) == ["0/0 =a [] 1", "0/1 =b [] 1", "0/2 =c [] 1",
                                        "1/0 k1=hello [trace=abc] 5"]
    assert ok(cli(node, "consume", "ev", "-p", "0", "-o", "1")) == "b\nc\n"
    assert ok(cli(node, "consume", "ev", "-p", "0", "-c", "2")) == "a\nb\n"
    assert ok(cli(node, "tail", "ev", "-p", "0", "-n", "1")) == "c\n"
    ev = [json.loads(l) for l in ok(cli(node, "consume", "ev", "-p", "1", "-J")).splitlines()]
    assert ev[0]["type"] == "record" and ev[0]["key"] == "k1" and ev[0]["headers"] == {"trace": "abc"}
    ts = ev[0]["timestamp_ms"]
    assert ok(cli(node, "consume", "ev", "-p", "1", "--from", "time:%d" % (ts + 60000))) == ""
    assert ok(cli(node, "consume", "ev", "-p", "1", "--from", "time:%d" % ts)) == "hello\n"
    # a group: commit what was printed, then lag
    assert ok(cli(node, "consume", "ev", "-g", "g1", "-p", "0", "-c", "2", "--commit")) == "a\nb\n"
    deadline = time.monotonic() + 10
    while True:
        g = cli(node, "groups", "describe", "g1")
        if g.returncode == 0:
            break
        assert time.monotonic() < deadline, g.stderr
        time.sleep(0.1)
    rows = [l.split() for l in g.stdout.decode().splitlines()]
    assert rows[0] == ["TOPIC", "PARTITION", "COMMITTED", "LATEST", "LAG"]
    assert rows[1] == ["ev", "0", "2", "3", "1"]
    # the group's committed offset is where it resumes
    assert ok(cli(node, "consume", "ev", "-g", "g1", "-p", "0")) == "c\n"
    lst = [l.split() for l in ok(cli(node, "groups", "list")).splitlines()]
    assert lst == [["GROUP", "TOPICS", "PARTITIONS", "LAG"], ["g1", "1", "1", "1"]]
    assert json.loads(ok(cli(node, "-J", "groups", "describe", "g1", "ev")))["partitions"][0]["lag"] == 1
    r = cli(node, "groups", "describe", "nobody")
    assert r.returncode == 4
    # unknown topic: 404 -> exit 4 with the server's message
    r = cli(node, "consume", "nope")
    assert r.returncode == 4 and b"404 unknown_topic" in r.stderr
    r = cli(node, "consume", "ev", "-p", "7")
    assert r.returncode == 4
    assert "deleted" in ok(cli(node, "topics", "delete", "ev"))
    assert cli(node, "topics", "describe", "ev").returncode == 4


def test_binary_and_b64_lines(node):
    lines = [b'"quoted"', b"tab\there", b"\xff\xfe raw", b"trailing cr\r"]
    ok(cli(node, "produce", "bin", "-p", "0", "--binary", stdin=b"\n".join(lines) + b"\n"))
    out = cli(node, "consume", "bin", "--format", "%s\\0").stdout
    assert out.split(b"\0")[:-1] == lines  # exact bytes, no JSON-string unwrapping
    import base64
    ok(cli(node, "produce", "b64", "-p", "0", "--b64",
           stdin=base64.b64encode(b"\x00\x01bin") + b"\n"))
    assert cli(node, "consume", "b64").stdout == b"\x00\x01bin\n"


def test_kv_and_query(node, tmp_path):
    assert ok(cli(node, "kv", "put", "app", "a/1", "v1")).strip() == "app/a/1: cas 1"
    ok(cli(node, "kv", "put", "app", "b", "-", stdin=b"from stdin"))
    assert cli(node, "kv", "get", "app", "a/1").stdout == b"v1"
    assert cli(node, "kv", "get", "app", "b").stdout == b"from stdin"
    assert json.loads(ok(cli(node, "-J", "kv", "get", "app", "a/1")))["cas"] == 1
    r = cli(node, "kv", "put", "app", "a/1", "x", "--cas", "0")
    assert r.returncode == 6 and b"cas_mismatch" in r.stderr
    ok(cli(node, "kv", "put", "app", "a/1", "v2", "--cas", "1", "--ttl-ms", "600000"))
    rows = [l.split() for l in ok(cli(node, "kv", "list", "app")).splitlines()]
    assert rows[0] == ["KEY", "CAS", "TTL_MS", "SIZE"] and [r[0] for r in rows[1:]] == ["a/1", "b"]
    assert [k["key"] for k in json.loads(ok(cli(node, "-J", "kv", "list", "app", "--prefix", "b")))["keys"]] == ["b"]
    assert "deleted" in ok(cli(node, "kv", "del", "app", "b"))
    assert "not present" in ok(cli(node, "kv", "del", "app", "b"))
    assert cli(node, "kv", "get", "app", "b").returncode == 4
    # query: from a file and from stdin
    ok(cli(node, "produce", "orders", "-p", "0",
           stdin=b'{"c":"DE","n":1}\n{"c":"FR","n":2}\n{"c":"DE","n":3}\n'))
    q = {"source": {"topic": "orders", "partition": 0, "offset": 0},
         "aggregate": {"group_by": ["c"], "measures": [{"op": "count"}, {"op": "sum", "field": "n"}]}}
    qf = tmp_path / "q.json"
    qf.write_text(json.dumps(q))
    out = [json.loads(l) for l in ok(cli(node, "query", str(qf))).splitlines()]
    by = {a["group"]["c"]: a for a in out}
    assert by["DE"]["count"] == 2 and by["FR"]["count"] == 1
    full = json.loads(ok(cli(node, "-J", "query", "-", stdin=json.dumps(q).encode())))
    assert full["ok"] is True and len(full["aggregates"]) == 2
    r = cli(node, "query", "-", stdin=b'{"source":{"topic":"orders"},"filter":[{"op":"zz"}]}')
    assert r.returncode == 1 and b"422" in r.stderr
    assert cli(node, "query", "-", stdin=b"not json").returncode == 2
    st = ok(cli(node, "cluster", "status"))
    assert "role leader" in st
    assert json.loads(ok(cli(node, "-J", "cluster", "status")))["role"] == "leader"


def test_bad_token_and_unreachable(make_node):
    n = make_node(env={"RF_BEARER_TOKENS": "good@consume,admin1@admin"}).start()
    r = cli(n, "topics", "list", token="wrong")
    assert r.returncode == 3
    assert b"HTTP 401 unauthorized" in r.stderr and b"--token" in r.stderr
    r = cli(n, "topics", "list", token=None)
    assert r.returncode == 3
    r = cli(n, "produce", "t", "v", token="good")   # consume-only token: 403
    assert r.returncode == 3 and b"HTTP 403 forbidden" in r.stderr
    r = cli(n, "--token", "admin1", "topics", "create", "t", token="wrong")  # flag beats env
    assert r.returncode == 0, r.stderr
    r = cli("http://127.0.0.1:%d" % free_port(), "topics", "list")
    assert r.returncode == 5 and b"cannot connect" in r.stderr


def count_records(node, topic):
    d = requests.get(node.url + "/broker/topics/" + topic, headers={"Authorization": "Bearer dev"},
                     timeout=10).json()
    return sum(p["records"] for p in d["partitions"])


MILLION = b"".join(b"line %07d %s\n" % (i, b"x" * 48) for i in range(1_000_000))


def test_million_lines_pipe_has_no_progress(node):
    r = cli(node, "produce", "m1", stdin=MILLION)
    out = ok(r)
    assert "produced 1000000 records" in out
    assert r.stderr == b""          # no progress bar when stderr is a pipe
    assert count_records(node, "m1") == 1_000_000
    # -J: one JSON object
    assert len(MILLION) == 62 * 1_000_000
    r = cli(node, "-J", "produce", "m2", "--batch-lines", "1000", stdin=MILLION[:62 * 5000])
    j = json.loads(ok(r))
    assert j["count"] == 5000 and j["batches"] >= 5   # a pipe may hand out shorter batches


def test_million_lines_tty_shows_progress(node):
    """stdin is a pipe of 1 M lines; stderr is a terminal (a pty): the bar and rate appear."""
    master, slave = pty.openpty()
    p = subprocess.Popen([BINARY, "produce", "m3", "--url", node.url], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=slave, env=ENV)
    os.close(slave)
    # feed stdin from this thread in pieces while collecting the terminal output
    term = b""
    view = memoryview(MILLION)
    sent = 0
    deadline = time.monotonic() + 120
    while sent < len(view):
        k = p.stdin.write(view[sent:sent + 1 << 20])
        sent += k if k else 0
        while select.select([master], [], [], 0)[0]:
            try:
                term += os.read(master, 65536)
            except OSError:
                break
        assert time.monotonic() < deadline
    p.stdin.close()
    while True:
        ready = select.select([master], [], [], 0.5)[0]
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                chunk = b""
            if not chunk:
                break
            term += chunk
        elif p.poll() is not None:
            break
        assert time.monotonic() < deadline
    out = p.stdout.read()
    assert p.wait(timeout=30) == 0
    os.close(master)
    assert b"produced 1000000 records" in out
    assert b"\r" in term and b"msg/s" in term and b"1.00 M" in term, term[-500:]
    assert count_records(node, "m3") == 1_000_000


def read_lines(proc, want, timeout):
    """Read stdout lines of a running process until `want` lines arrived (bounded wait)."""
    buf = b""
    deadline = time.monotonic() + timeout
    fd = proc.stdout.fileno()
    while buf.count(b"\n") < want:
        left = deadline - time.monotonic()
        assert left > 0, buf
        if select.select([fd], [], [], left)[0]:
            chunk = os.read(fd, 65536)
            assert chunk, buf
            buf += chunk
    return buf.decode().splitlines()


def test_tail_follow_sees_new_records(node):
    ok(cli(node, "produce", "live", "-p", "0", stdin=b"".join(b"old%d\n" % i for i in range(20))))
    env = dict(ENV, AYDER_URL=node.url)
    p = subprocess.Popen([BINARY, "tail", "-f", "live", "-n", "2", "--format", "%o:%s\\n"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        assert read_lines(p, 2, 20) == ["18:old18", "19:old19"]   # subscribed: the last two
        ok(cli(node, "produce", "live", "-p", "0", stdin=b"new1\nnew2\n"))
        ok(cli(node, "produce", "live", "new3", "-p", "0"))
        assert read_lines(p, 3, 20) == ["20:new1", "21:new2", "22:new3"]
        assert p.poll() is None   # still following
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=10)


# ---- a 3-node cluster on loopback: redirects, cluster status/transfer/add/promote/remove -------

def start_cluster(tmp_path, n=3):
    ids = ["n%d" % (i + 1) for i in range(n + 1)]
    ports = [(free_port(), free_port()) for _ in ids]   # (http, raft)
    spec = ",".join("%s:127.0.0.1:%d:%d:%d" % (ids[i], ports[i][1], 100 - i, ports[i][0])
                    for i in range(n))
    nodes = []
    for i in range(n):
        env = {"RF_HA_ENABLED": "1", "RF_HA_NODE_ID": ids[i], "RF_HA_NODES": spec,
               "RF_HA_ELECTION_TIMEOUT_MS": "500"}
        if i == 0:
            env["RF_HA_BOOTSTRAP_LEADER"] = "1"
        nodes.append(Node(str(tmp_path / ids[i]), port=ports[i][0], env=env).start(wait=False))
    return nodes, ids, ports, spec


def leader_of(nodes, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for nd in nodes:
            try:
                st = requests.get(nd.url + "/ha/status", timeout=2).json()
            except requests.RequestException:
                continue
            if st.get("role") == "leader":
                return nd, st
        time.sleep(0.05)
    raise AssertionError("no leader")


def test_cluster_redirects_and_membership(tmp_path):
    nodes, ids, ports, spec = start_cluster(tmp_path)
    extra = None
    try:
        for nd in nodes:
            nd.wait_ready(60)
        leader, st = leader_of(nodes)
        follower = next(nd for nd in nodes if nd is not leader)
        # writes sent to a follower follow the 307 to the leader, token included
        ok(cli(follower, "topics", "create", "ct", "-p", "2"))
        assert "partition 0 offset 0" in ok(cli(follower, "produce", "ct", "v", "-p", "0"))
        j = json.loads(ok(cli(follower, "-J", "produce", "ct", "-p", "1",
                              stdin=b"".join(b"r%d\n" % i for i in range(100000)))))
        assert j["count"] == 100000 and j["redirects"] >= 1
        ok(cli(follower, "kv", "put", "ns", "k", "v"))
        assert cli(leader, "kv", "get", "ns", "k").stdout == b"v"
        # reads are served where they are sent (committed data)
        deadline = time.monotonic() + 10
        while count_records(follower, "ct") < 100001:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert ok(cli(follower, "consume", "ct", "-p", "0")) == "v\n"
        status = ok(cli(follower, "cluster", "status"))
        assert "role follower" in status and "leader %s" % st["node_id"] in status
        # membership: add a fourth node as a learner, promote it, remove it
        i = 3
        env = {"RF_HA_ENABLED": "1", "RF_HA_NODE_ID": ids[i], "RF_HA_JOIN": "1",
               "RF_HA_NODES": spec + ",%s:127.0.0.1:%d:10:%d" % (ids[i], ports[i][1], ports[i][0])}
        extra = Node(str(tmp_path / ids[i]), port=ports[i][0], env=env).start(wait=False)
        ok(cli(follower, "cluster", "add", ids[i], "--host", "127.0.0.1", "--raft-port",
               str(ports[i][1]), "--http-port", str(ports[i][0]), "--priority", "10"))
        st = requests.get(leader.url + "/ha/status", timeout=5).json()
        assert ids[i] in st["learners"]
        r = cli(follower, "cluster", "add", ids[i], "--host", "127.0.0.1", "--raft-port",
                str(ports[i][1]))
        assert r.returncode == 6, r.stderr   # already a member: 409
        deadline = time.monotonic() + 30
        while True:
            r = cli(follower, "cluster", "promote", ids[i])
            if r.returncode == 0:
                break
            assert r.returncode in (1, 5) and time.monotonic() < deadline, r.stderr
            time.sleep(0.2)
        assert ids[i] in requests.get(leader.url + "/ha/status", timeout=5).json()["voters"]
        ok(cli(follower, "cluster", "remove", ids[i]))
        assert ids[i] not in requests.get(leader.url + "/ha/status", timeout=5).json()["voters"]
        assert cli(follower, "cluster", "remove", "nosuch").returncode == 4
        # transfer leadership to the follower we have been talking to
        target = json.loads(ok(cli(follower, "-J", "cluster", "status")))["node_id"]
        ok(cli(follower, "cluster", "transfer", target))
        new_leader, _ = leader_of([follower], timeout=20)
        assert new_leader is follower
        # the old leader now redirects: produce through it still works
        assert "offset 1" in ok(cli(leader, "produce", "ct", "w", "-p", "0"))
    finally:
        for nd in nodes + ([extra] if extra else []):
            nd.kill()
