"""The web console (/ui/, docs/HTTP_API.md "Web console"): its HTTP serving, its size, and
browser tests in headless Chromium.

The browser side is tests/console/console.test.mjs: Playwright's core library (npm, pinned by
tests/console/package-lock.json, installed by `tools/install-deps test` with `npm ci`) driving
Debian's /usr/bin/chromium. This file starts the nodes and runs its scenarios:

- main: GET / leads a browser to /ui/; sign in; keyboard navigation; create a topic; produce and
  see the message; a binary value as hex; live tail over SSE; a group's lag changes after a
  commit; KV put and read; the query playground; a topic deleted through the confirmation
  dialog by keyboard; screenshots of every page at 1280 px and 360 px (no sideways scrolling).
- readonly: a consume-only token sees no write action on any page, and still reads messages.
- cluster: a follower's console shows 3 members (one leader, two followers); leadership is
  transferred through the confirmation dialog.
- idle: three tabs left open (overview, groups, a live tail): the server's CPU stays under 2 %.

Any console error, uncaught exception, failed request or HTTP error answer in a page fails the
scenario. Screenshots go to build/screenshots/ (CI artifacts); the first-paint figure of a cold
browser to build/screenshots/console-metrics.json.
"""
import glob
import gzip
import json
import os
import shutil
import subprocess
import time

import pytest
import requests

from conftest import ROOT, Node, free_port

CONSOLE_DIR = os.path.join(ROOT, "tests", "console")
ASSETS = os.path.join(ROOT, "src", "ui", "assets")
SHOTS = os.path.join(ROOT, "build", "screenshots")
TOKENS = "dev,ro@consume"


def run_scenario(url, scenario, env=None, timeout=300):
    assert shutil.which("node"), "node is missing: tools/install-deps test installs nodejs"
    assert os.path.exists("/usr/bin/chromium"), "chromium is missing: tools/install-deps test installs it"
    assert os.path.isdir(os.path.join(CONSOLE_DIR, "node_modules", "playwright-core")), \
        "playwright-core is missing: run `npm ci` in tests/console (tools/install-deps test does)"
    e = dict(os.environ, AYDER_URL=url, AYDER_TOKEN="dev", AYDER_RO_TOKEN="ro", SHOTS=SHOTS)
    e.update(env or {})
    p = subprocess.run(["node", "console.test.mjs", scenario], cwd=CONSOLE_DIR, env=e,
                       capture_output=True, text=True, timeout=timeout)
    lines = [l for l in p.stdout.splitlines() if l.startswith("{")]
    assert lines, "no result from the browser test (rc %d):\n%s\n%s" % (p.returncode, p.stdout, p.stderr[-3000:])
    res = json.loads(lines[-1])
    assert res["ok"] and p.returncode == 0, "\n".join(res["failures"]) or p.stderr[-3000:]
    return res


@pytest.fixture
def console_node(make_node):
    return make_node(env={"RF_BEARER_TOKENS": TOKENS}).start()


# ---- serving ---------------------------------------------------------------------------------

def test_root_redirects_browsers_only(console_node):
    n = console_node
    r = requests.get(n.url + "/", headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"},
                     allow_redirects=False)
    assert r.status_code == 302 and r.headers["Location"] == "/ui/"
    # curl, scripts: what / always answered
    for accept in (None, "*/*", "application/json", "text/html;q=0"):
        h = {"Accept": accept} if accept else {}
        r = requests.get(n.url + "/", headers=h, allow_redirects=False)
        assert r.status_code == 404 and r.json()["error"] == "no_route", (accept, r.text)


def test_assets_gzip_etag_and_headers(console_node):
    n = console_node
    names = sorted(os.listdir(ASSETS))
    assert "index.html" in names
    for path in ["/ui/", "/ui"] + ["/ui/" + x for x in names]:
        name = "index.html" if path in ("/ui/", "/ui") else path[4:]
        with open(os.path.join(ASSETS, name), "rb") as f:
            raw = f.read()
        r = requests.get(n.url + path, headers={"Accept-Encoding": "gzip"}, stream=True)
        assert r.status_code == 200, path
        assert r.headers["Content-Encoding"] == "gzip"
        assert r.headers["Vary"] == "Accept-Encoding"
        assert r.headers["Cache-Control"] == "no-cache"
        assert gzip.decompress(r.raw.read()) == raw, path
        etag = r.headers["ETag"]
        r2 = requests.get(n.url + path, headers={"Accept-Encoding": "gzip", "If-None-Match": etag})
        assert r2.status_code == 304 and r2.content == b"", path
        r3 = requests.get(n.url + path, headers={"Accept-Encoding": "identity"})
        assert r3.status_code == 200 and "Content-Encoding" not in r3.headers and r3.content == raw
        assert r3.headers["ETag"] != etag
        r4 = requests.get(n.url + path, headers={"Accept-Encoding": "gzip;q=0"})
        assert "Content-Encoding" not in r4.headers
    r = requests.get(n.url + "/ui/")
    assert r.headers["Content-Type"] == "text/html; charset=utf-8"
    assert "script-src 'self'" in r.headers["Content-Security-Policy"]
    assert requests.get(n.url + "/ui/app.js").headers["Content-Type"].startswith("text/javascript")
    assert requests.get(n.url + "/ui/style.css").headers["Content-Type"].startswith("text/css")
    # HEAD, unknown names, no path tricks
    h = requests.head(n.url + "/ui/app.js")
    assert h.status_code == 200 and h.content == b""
    for bad in ("/ui/nope.js", "/ui/../Makefile", "/ui/%2e%2e/Makefile", "/ui/a/b", "/ui/.hidden"):
        r = requests.get(n.url + bad)
        assert r.status_code == 404, bad
    # no token needed for the console itself (it holds no data)
    assert requests.get(n.url + "/ui/lib.js").status_code == 200


def test_console_size_budget():
    """The whole embedded console, compressed as it is served: at most 300 KB."""
    gz = glob.glob(os.path.join(ROOT, "build", "gen", "ui", "*.gz"))
    names = os.listdir(ASSETS)
    assert len(gz) >= len(names), "build first (make ayder)"
    total = sum(len(gzip.compress(open(os.path.join(ASSETS, x), "rb").read(), 9, mtime=0)) for x in names)
    served = sum(os.path.getsize(os.path.join(ROOT, "build", "gen", "ui", x + ".gz")) for x in names)
    print("console: %d files, %d bytes gzip -9 (%d raw)" % (
        len(names), served, sum(os.path.getsize(os.path.join(ASSETS, x)) for x in names)))
    assert served <= 300 * 1000 and total <= 300 * 1000


def test_whoami(console_node):
    n = console_node
    assert n.get("/auth/whoami").json() == {"ok": True, "scopes": ["produce", "consume", "admin", "kv"]}
    r = requests.get(n.url + "/auth/whoami", headers={"Authorization": "Bearer ro"})
    assert r.json() == {"ok": True, "scopes": ["consume"]}
    assert requests.get(n.url + "/auth/whoami").status_code == 401
    assert requests.get(n.url + "/auth/whoami", headers={"Authorization": "Bearer nope"}).status_code == 401


def test_groups_list_and_topic_retention(console_node):
    n = console_node
    assert n.get("/broker/groups").json() == {"ok": True, "groups": [], "truncated": False}
    n.post("/broker/topics", json={"name": "gl", "partitions": 2}).raise_for_status()
    for i in range(5):
        n.post("/broker/topics/gl/produce?partition=1", data=b"x%d" % i).raise_for_status()
    n.post("/broker/commit", json={"topic": "gl", "group": "a", "partition": 1, "offset": 2}).raise_for_status()
    n.post("/broker/commit", json={"topic": "gl", "group": "b", "partition": 0, "offset": 0}).raise_for_status()
    got = n.get("/broker/groups").json()["groups"]
    assert got == [
        {"group": "a", "topics": 1, "partitions": 1, "lag": 3, "offsets": [
            {"topic": "gl", "partition": 1, "committed_offset": 2, "start_offset": 0,
             "latest_offset": 5, "lag": 3}]},
        {"group": "b", "topics": 1, "partitions": 1, "lag": 0, "offsets": [
            {"topic": "gl", "partition": 0, "committed_offset": 0, "start_offset": 0,
             "latest_offset": 0, "lag": 0}]}]
    r = requests.get(n.url + "/broker/groups", headers={"Authorization": "Bearer ro"})
    assert r.status_code == 200
    # the retention policy in effect, per partition: its own, else the topic's, else "*"
    p = n.get("/broker/topics/gl").json()["partitions"]
    assert [(x["retention_ttl_ms"], x["retention_max_bytes"]) for x in p] == [(0, 0), (0, 0)]
    n.post("/broker/retention", json={"topic": "*", "max_bytes": 1 << 30}).raise_for_status()
    n.post("/broker/retention", json={"topic": "gl", "ttl_ms": 3600000}).raise_for_status()
    n.post("/broker/retention", json={"topic": "gl", "partition": 1, "ttl_ms": 60000}).raise_for_status()
    p = n.get("/broker/topics/gl").json()["partitions"]
    assert [(x["retention_ttl_ms"], x["retention_max_bytes"]) for x in p] == [
        (3600000, 1 << 30), (60000, 1 << 30)]


# ---- browser ---------------------------------------------------------------------------------

def test_console_in_browser(console_node):
    res = run_scenario(console_node.url, "main")
    ro = run_scenario(console_node.url, "readonly")
    info = res["info"]
    # reported, not asserted (no timing assertions in tests); a browser may not record a paint
    # entry before the load event on a busy box
    print("console first paint (cold browser): %s ms, load %s ms" % (info.get("first_paint_ms"),
                                                                    info.get("load_ms")))
    with open(os.path.join(SHOTS, "console-metrics.json"), "w") as f:
        json.dump({"main": info, "readonly": ro["info"]}, f, indent=1)
    for page in ("overview", "topics", "topic", "messages", "groups", "cluster", "kv", "query"):
        for size in ("desktop", "360"):
            assert os.path.getsize(os.path.join(SHOTS, "%s-%s.png" % (page, size))) > 1000


def start_cluster(tmp, n=3):
    raft = [free_port() for _ in range(n)]
    http = [free_port() for _ in range(n)]
    spec = ",".join("n%d:127.0.0.1:%d:%d:%d" % (i + 1, raft[i], 100 - i, http[i]) for i in range(n))
    nodes = []
    for i in range(n):
        env = {"RF_HA_ENABLED": "1", "RF_HA_NODE_ID": "n%d" % (i + 1), "RF_HA_NODES": spec,
               "RF_HA_ELECTION_TIMEOUT_MS": "600", "RF_HA_HEARTBEAT_MS": "100",
               "RF_BEARER_TOKENS": TOKENS}
        if i == 0:
            env["RF_HA_BOOTSTRAP_LEADER"] = "1"
        nodes.append(Node(os.path.join(tmp, "n%d" % (i + 1)), port=http[i], env=env))
    for nd in nodes:
        nd.start(wait=False)
    return nodes


def test_console_cluster_view(tmp_path):
    nodes = start_cluster(str(tmp_path))
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if all(nd.get("/ha/status", timeout=2).json()["leader_id"] == "n1" for nd in nodes):
                    break
            except (requests.RequestException, ValueError, KeyError):
                pass
            assert time.monotonic() < deadline, "no leader n1"
            time.sleep(0.1)
        # a follower's console: it reads every member's /ha/status and sends the transfer to the leader
        run_scenario(nodes[1].url, "cluster", env={"TRANSFER_TO": "n3"})
        assert nodes[0].get("/ha/status").json()["leader_id"] == "n3"
    finally:
        for nd in nodes:
            nd.kill()


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_console_idle_cpu(console_node):
    """Pages left open poll or stream: under 2 % of one CPU on the server at rest."""
    n = console_node
    n.post("/broker/topics", json={"name": "orders", "partitions": 2}).raise_for_status()
    n.post("/broker/commit", json={"topic": "orders", "group": "g", "partition": 0, "offset": 0}).raise_for_status()
    idle_s = 20
    e = dict(os.environ, AYDER_URL=n.url, AYDER_TOKEN="dev", SHOTS=SHOTS, IDLE_SECONDS=str(idle_s))
    p = subprocess.Popen(["node", "console.test.mjs", "idle"], cwd=CONSOLE_DIR, env=e,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "READY"
        c0, t0 = cpu_seconds(n.proc.pid), time.monotonic()
        assert p.stdout.readline().strip() == "DONE"
        c1, t1 = cpu_seconds(n.proc.pid), time.monotonic()
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    res = json.loads(out.strip().splitlines()[-1])
    assert res["ok"], "\n".join(res["failures"]) + err[-2000:]
    share = (c1 - c0) / (t1 - t0)
    print("server CPU with 3 console tabs open: %.2f %% over %.1f s" % (share * 100, t1 - t0))
    with open(os.path.join(SHOTS, "console-idle-cpu.json"), "w") as f:
        json.dump({"cpu_percent": share * 100, "seconds": t1 - t0}, f)
    assert share < 0.02
