"""Operations (issue 15): the metrics an operator alerts on, the shipped Prometheus / alert /
Grafana / systemd / Docker files, checked by what runs on this machine (no Docker engine here).

- /metrics and /metrics_ha pass `promtool check metrics`, with every family the issue names;
- per-partition marks and per-group lag (records and seconds) have the values the API implies;
- the shipped prometheus.yml / alerts.yml pass promtool, and the alerts' unit tests pass;
- a real Prometheus scrapes a real node and every Grafana panel's PromQL returns data;
- deploy/ayder.service passes `systemd-analyze verify` (and its security score stays low);
- tools/docker-steps runs the Dockerfile's build and run steps;
- deploy/make-certs.sh makes certificates a 3-node mTLS cluster (with docker-compose.cluster.yml's
  RF_HA_* settings) elects a leader and replicates with.
"""
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.parse

import pytest
import requests
import yaml

from conftest import AUTH, BINARY, ROOT, Node, free_port

DEPLOY = os.path.join(ROOT, "deploy")


def tool(name):
    path = shutil.which(name) or ("/usr/bin/" + name if os.path.exists("/usr/bin/" + name)
                                  else None)
    # Never a silent skip: tools/install-deps test installs these (prometheus, systemd).
    assert path, "%s is not installed: run tools/install-deps test" % name
    return path


def parse_metrics(text):
    """-> ({family: type}, [(name, {labels}, value)])"""
    types, samples = {}, []
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, typ = line.split()
            types[name] = typ
        elif line and not line.startswith("#"):
            m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$", line)
            assert m, line
            labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
            samples.append((m.group(1), labels, float(m.group(3))))
    return types, samples


def promtool_check_metrics(body):
    p = subprocess.run([tool("promtool"), "check", "metrics"], input=body, capture_output=True,
                       timeout=60)
    assert p.returncode == 0, (p.stdout + p.stderr).decode()


def wait_leader(n, timeout=30):
    deadline = time.monotonic() + timeout
    while requests.get(n.url + "/ha/status", timeout=5).json().get("role") != "leader":
        assert time.monotonic() < deadline, n.log()[-2000:]
        time.sleep(0.05)


def value(samples, name, **labels):
    got = [v for n, l, v in samples if n == name and all(l.get(k) == str(x)
                                                          for k, x in labels.items())]
    assert len(got) == 1, (name, labels, got)
    return got[0]


# ----------------------------------------------------------------------------------------------
# /metrics and /metrics_ha

def test_metrics_families_and_promtool(node):
    assert node.post("/broker/topics", json={"name": "ops", "partitions": 2}).status_code == 200
    for i in range(5):
        assert node.post("/broker/topics/ops/produce?partition=0", data=b"m%d" % i).status_code == 200
    r = node.post("/broker/commit", json={"topic": "ops", "group": "g1", "partition": 0, "offset": 2})
    assert r.status_code == 200, r.text
    r = requests.get(node.url + "/metrics", timeout=10)
    assert r.status_code == 200
    promtool_check_metrics(r.content)
    types, samples = parse_metrics(r.text)
    expect = {
        "ayder_http_request_duration_seconds": "histogram",
        "ayder_journal_fsync_duration_seconds": "histogram",
        "ayder_write_duration_seconds": "histogram",
        "ayder_journal_fsyncs_total": "counter",
        "ayder_partition_high_watermark": "gauge",
        "ayder_partition_start_offset": "gauge",
        "ayder_group_lag_records": "gauge",
        "ayder_group_lag_seconds": "gauge",
        "ayder_disk_free_bytes": "gauge",
        "ayder_disk_min_free_bytes": "gauge",
        "ayder_storage_failed": "gauge",
        "ayder_storage_no_space": "gauge",
        "ayder_journal_segments": "gauge",
        "ayder_partition_log_segments": "gauge",
        "ayder_http_open_connections": "gauge",
        "ayder_stream_jobs_running": "gauge",
        "ayder_metrics_scrape_duration_seconds": "gauge",
    }
    for fam, typ in expect.items():
        assert types.get(fam) == typ, (fam, types.get(fam))
    # every sample belongs to a family that has HELP and TYPE
    helps = set(re.findall(r"^# HELP (\S+) ", r.text, re.M))
    for name, _, _ in samples:
        base = re.sub(r"_(bucket|sum|count)$", "", name) if name not in types else name
        assert base in types and base in helps, name
    # the write path was timed: 5 produces + 1 commit + the topic, each a successful write
    assert value(samples, "ayder_write_duration_seconds_count") >= 7
    fsyncs = value(samples, "ayder_journal_fsyncs_total")
    assert value(samples, "ayder_journal_fsync_duration_seconds_count") == fsyncs > 0
    # histograms: cumulative buckets, +Inf == count
    buckets = [(float(l["le"]), v) for n, l, v in samples
               if n == "ayder_journal_fsync_duration_seconds_bucket"]
    assert [v for _, v in sorted(buckets)] == sorted(v for _, v in buckets)
    assert dict(buckets)[float("inf")] == fsyncs
    assert value(samples, "ayder_storage_failed") == 0
    assert value(samples, "ayder_disk_free_bytes") > 0
    st = os.statvfs(node.data_dir)
    assert abs(value(samples, "ayder_disk_free_bytes") - st.f_bavail * st.f_frsize) < 1 << 30
    assert value(samples, "ayder_journal_segments") >= 1


def test_partition_marks_and_group_lag(node):
    assert node.post("/broker/topics", json={"name": "lag", "partitions": 2}).status_code == 200
    for i in range(10):
        assert node.post("/broker/topics/lag/produce?partition=0", data=b"r%d" % i).status_code == 200
    t_first = time.time()
    assert node.post("/broker/topics/lag/produce?partition=1", data=b"only").status_code == 200
    # g1: 3 of 10 read on partition 0; caught up on partition 1. g2: all read.
    for grp, part, off in (("g1", 0, 3), ("g1", 1, 1), ("g2", 0, 10)):
        r = node.post("/broker/commit", json={"topic": "lag", "group": grp, "partition": part,
                                              "offset": off})
        assert r.status_code == 200, r.text
    # retention raises partition 0's start offset past g1's commit
    r = node.post("/broker/delete-before", json={"topic": "lag", "partition": 0,
                                                  "before_offset": 5})
    assert r.status_code == 200, r.text
    time.sleep(1.2)  # let the next unread record age (seconds behind must be >= 1)
    text = requests.get(node.url + "/metrics", timeout=10).text
    _, samples = parse_metrics(text)
    desc = node.get("/broker/topics/lag").json()["partitions"]
    for p in desc:
        assert value(samples, "ayder_partition_high_watermark", topic="lag",
                     partition=p["partition"]) == p["latest_offset"]
        assert value(samples, "ayder_partition_start_offset", topic="lag",
                     partition=p["partition"]) == p["earliest_offset"]
    start0 = desc[0]["earliest_offset"]
    assert value(samples, "ayder_group_lag_records", topic="lag", group="g1",
                 partition=0) == 10 - max(3, start0)
    assert value(samples, "ayder_group_lag_records", topic="lag", group="g1", partition=1) == 0
    assert value(samples, "ayder_group_lag_seconds", topic="lag", group="g1", partition=1) == 0
    assert value(samples, "ayder_group_lag_records", topic="lag", group="g2", partition=0) == 0
    assert value(samples, "ayder_group_lag_seconds", topic="lag", group="g2", partition=0) == 0
    behind = value(samples, "ayder_group_lag_seconds", topic="lag", group="g1", partition=0)
    assert 1.0 <= behind <= time.time() - t_first + 5, behind
    # the next unread record's timestamp, from the API, gives the same age
    msg = node.get("/broker/consume/lag/g1/0?limit=1").json()["messages"][0]
    assert msg["offset"] == max(3, start0)
    assert abs(behind - (time.time() * 1000 - msg["timestamp_ms"]) / 1000) < 1.5
    # catching up brings both to 0; a later scrape re-reads nothing for unchanged offsets
    r = node.post("/broker/commit", json={"topic": "lag", "group": "g1", "partition": 0, "offset": 10})
    assert r.status_code == 200
    _, samples = parse_metrics(requests.get(node.url + "/metrics", timeout=10).text)
    assert value(samples, "ayder_group_lag_records", topic="lag", group="g1", partition=0) == 0
    assert value(samples, "ayder_group_lag_seconds", topic="lag", group="g1", partition=0) == 0
    assert value(samples, "ayder_group_lag_reads_deferred") == 0
    # a deleted topic's series disappear
    assert node.delete("/broker/topics/lag").status_code == 200
    text = requests.get(node.url + "/metrics", timeout=10).text
    assert 'topic="lag"' not in text


def test_metrics_ha_single_node_cluster(make_node):
    port = free_port()
    rport = free_port()
    n = make_node(port=port, env={"RF_HA_ENABLED": "1", "RF_HA_NODE_ID": "n1",
                                  "RF_HA_NODES": "n1:127.0.0.1:%d:100:%d" % (rport, port)})
    n.start()
    wait_leader(n)
    assert n.post("/broker/topics/ha/produce?partition=0", data=b"x").status_code == 200
    r = requests.get(n.url + "/metrics_ha", timeout=10)
    assert r.status_code == 200
    promtool_check_metrics(r.content)
    types, samples = parse_metrics(r.text)
    for fam in ("ayder_ha_role", "ayder_ha_term", "ayder_ha_commit_index", "ayder_ha_applied_index",
                "ayder_ha_peer_match_index", "ayder_ha_peer_lag_entries", "ayder_ha_leader_known"):
        assert types.get(fam) == "gauge", fam
    st = n.get("/ha/status").json()
    assert value(samples, "ayder_ha_role") == 0 and st["role"] == "leader"
    assert value(samples, "ayder_ha_term") == st["term"]
    assert value(samples, "ayder_ha_commit_index") >= 2
    # the leader's own match index is what it has fsynced
    assert value(samples, "ayder_ha_peer_match_index", peer="n1") == \
        value(samples, "ayder_ha_durable_index")
    assert n.stop() == 0


def test_metrics_scrape_does_not_block_the_worker(make_node):
    """/metrics renders on its own thread: with one HTTP worker, produces keep being answered
    while scrapes run back to back (no timing threshold: the produces must simply complete)."""
    n = make_node(args=["--workers", "1"]).start()
    assert n.post("/broker/topics", json={"name": "big", "partitions": 1000}).status_code == 200
    stop = threading.Event()
    scrapes = [0]

    def scraper():
        s = requests.Session()
        while not stop.is_set():
            assert s.get(n.url + "/metrics", timeout=30).status_code == 200
            scrapes[0] += 1

    th = threading.Thread(target=scraper)
    th.start()
    try:
        s = requests.Session()
        for i in range(50):
            r = s.post(n.url + "/broker/topics/big/produce?partition=%d" % i, data=b"x",
                       headers=AUTH, timeout=30)
            assert r.status_code == 200, r.text
    finally:
        stop.set()
        th.join()
    assert scrapes[0] >= 1
    text = requests.get(n.url + "/metrics", timeout=10).text
    assert text.count("ayder_partition_high_watermark{") == 1000
    assert n.stop() == 0


# ----------------------------------------------------------------------------------------------
# Prometheus configuration and alert rules

def test_promtool_check_config_and_rules():
    promtool = tool("promtool")
    for cfg in ("prometheus.yml", "prometheus-cluster.yml"):
        p = subprocess.run([promtool, "check", "config", os.path.join(DEPLOY, cfg)],
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stdout + p.stderr
        assert "SUCCESS" in p.stdout + p.stderr
    p = subprocess.run([promtool, "check", "rules", os.path.join(DEPLOY, "alerts.yml")],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    names = set(re.findall(r"^\s*- alert: (\S+)", open(os.path.join(DEPLOY, "alerts.yml")).read(),
                           re.M))
    for must in ("AyderStorageFailed", "AyderDiskNearlyFull", "AyderNoLeader",
                 "AyderFollowerFarBehind", "AyderConsumerGroupLagGrowing"):
        assert must in names, must


def test_alert_rules_unit_tests():
    p = subprocess.run([tool("promtool"), "test", "rules", "alerts_test.yml"], cwd=DEPLOY,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    tested = set(re.findall(r"alertname: (\S+)", open(os.path.join(DEPLOY, "alerts_test.yml")).read()))
    assert {"AyderStorageFailed", "AyderDiskNearlyFull", "AyderNoLeader",
            "AyderFollowerFarBehind", "AyderConsumerGroupLagGrowing"} <= tested


def test_alert_rules_use_exported_metrics(node):
    """Every ayder_* name in alerts.yml and the dashboard exists in /metrics or /metrics_ha."""
    text = requests.get(node.url + "/metrics", timeout=10).text + \
        requests.get(node.url + "/metrics_ha", timeout=10).text
    known = set(re.findall(r"^# TYPE (\S+) ", text, re.M))
    known |= {k + s for k in known for s in ("_bucket", "_sum", "_count")}
    known |= {"ayder_ha_peer_lag_entries", "ayder_ha_peer_connected"}  # cluster-only families
    used = set(re.findall(r"\bayder_[a-z_]+", open(os.path.join(DEPLOY, "alerts.yml")).read()))
    used |= set(re.findall(r"\bayder_[a-z_]+", open(os.path.join(
        DEPLOY, "grafana", "dashboards", "ayder.json")).read()))
    used -= {"ayder_ha"}  # a job name, not a metric
    assert used - known == set(), used - known


# ----------------------------------------------------------------------------------------------
# a real Prometheus scraping a real node; every dashboard panel returns data

def dashboard_exprs():
    d = json.load(open(os.path.join(DEPLOY, "grafana", "dashboards", "ayder.json")))
    out = []
    for p in d["panels"]:
        for t in p.get("targets", []):
            out.append((p["title"], t["expr"]))
    assert len(out) >= 10
    return out


def test_grafana_provisioning_files():
    ds = yaml.safe_load(open(os.path.join(DEPLOY, "grafana", "provisioning", "datasources",
                                          "prometheus.yml")))
    uid = ds["datasources"][0]["uid"]
    assert ds["datasources"][0]["url"] == "http://prometheus:9090"
    prov = yaml.safe_load(open(os.path.join(DEPLOY, "grafana", "provisioning", "dashboards",
                                            "ayder.yml")))
    assert prov["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    d = json.load(open(os.path.join(DEPLOY, "grafana", "dashboards", "ayder.json")))
    titles = " ".join(p["title"].lower() for p in d["panels"])
    for word in ("throughput", "produce latency", "commit latency", "fsync", "raft role",
                 "commit lag", "group lag", "disk", "segments", "connections and streams"):
        assert word in titles, word
    for p in d["panels"]:
        assert p["datasource"]["uid"] == uid, p["title"]
    compose = yaml.safe_load(open(os.path.join(ROOT, "docker-compose.yml")))
    svc = compose["services"]
    assert svc["ayder"]["ports"] == ["1109:1109"]
    assert svc["prometheus"]["ports"] == ["9090:9090"]
    assert svc["grafana"]["ports"] == ["3000:3000"]
    assert "RF_BEARER_TOKENS=dev" in svc["ayder"]["environment"]
    assert "GF_SECURITY_ADMIN_PASSWORD=admin" in svc["grafana"]["environment"]
    mounts = " ".join(svc["grafana"]["volumes"])
    assert "./deploy/grafana/provisioning:/etc/grafana/provisioning" in mounts
    assert "./deploy/grafana/dashboards:/var/lib/grafana/dashboards" in mounts


def test_prometheus_scrapes_node_and_every_panel_has_data(make_node, tmp_path):
    prometheus = tool("prometheus")
    port = free_port()
    rport = free_port()
    # a one-voter cluster, so the Raft peer families exist too
    n = make_node(port=port, env={"RF_HA_ENABLED": "1", "RF_HA_NODE_ID": "n1",
                                  "RF_HA_NODES": "n1:127.0.0.1:%d:100:%d" % (rport, port)}).start()
    wait_leader(n)
    assert n.post("/broker/topics", json={"name": "dash", "partitions": 2}).status_code == 200
    # the shipped config, pointed at this node, scraping every second
    cfg = yaml.safe_load(open(os.path.join(DEPLOY, "prometheus.yml")))
    cfg["global"]["scrape_interval"] = "1s"
    cfg["global"]["evaluation_interval"] = "1s"
    for sc in cfg["scrape_configs"]:
        sc["static_configs"] = [{"targets": ["127.0.0.1:%d" % port]}]
    cfg["rule_files"] = [os.path.join(DEPLOY, "alerts.yml")]
    cfg_path = tmp_path / "prometheus.yml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    pport = free_port()
    plog = open(tmp_path / "prometheus.log", "wb")
    prom = subprocess.Popen([prometheus, "--config.file=%s" % cfg_path,
                             "--storage.tsdb.path=%s" % (tmp_path / "tsdb"),
                             "--web.listen-address=127.0.0.1:%d" % pport],
                            stdout=plog, stderr=plog, start_new_session=True)
    stop = threading.Event()
    errors = []

    def load():  # keep produce, commit and consume traffic flowing while Prometheus scrapes
        s = requests.Session()
        i = 0
        while not stop.is_set():
            try:
                r = s.post(n.url + "/broker/topics/dash/produce?partition=%d" % (i % 2),
                           data=b"v%d" % i, headers=AUTH, timeout=10)
                if r.status_code != 200:
                    errors.append(r.text)
                if i % 5 == 0:  # the group stays behind: lag > 0
                    s.post(n.url + "/broker/commit", headers=AUTH, timeout=10,
                           json={"topic": "dash", "group": "dashg", "partition": 0,
                                 "offset": i // 4})
                    s.get(n.url + "/broker/consume/dash/dashg/1?limit=1", headers=AUTH, timeout=10)
            except requests.RequestException as e:
                errors.append(str(e))
            i += 1
            stop.wait(0.02)

    th = threading.Thread(target=load)
    th.start()
    api = "http://127.0.0.1:%d/api/v1" % pport
    try:
        deadline = time.monotonic() + 90
        pending = dashboard_exprs()
        last = {}
        while pending and time.monotonic() < deadline:
            assert prom.poll() is None, open(tmp_path / "prometheus.log").read()[-3000:]
            still = []
            for title, expr in pending:
                try:
                    r = requests.get(api + "/query", params={"query": expr}, timeout=10)
                except requests.RequestException as e:
                    last[expr] = str(e)
                    still.append((title, expr))
                    continue
                body = r.json()
                assert body.get("status") != "error" or body.get("errorType") == "unavailable", \
                    (title, expr, body)  # a PromQL syntax error fails at once
                res = body.get("data", {}).get("result", [])
                if not res:
                    last[expr] = body
                    still.append((title, expr))
            pending = still
            if pending:
                time.sleep(0.5)  # polling interval while waiting for scrapes (not the check)
        assert not pending, "panels without data after 90 s: %s" % [
            (t, e, last.get(e)) for t, e in pending]
        # both jobs are up, and the alert rules loaded and evaluate
        up = requests.get(api + "/query", params={"query": "up"}, timeout=10).json()
        jobs = {r["metric"]["job"]: r["value"][1] for r in up["data"]["result"]}
        assert jobs == {"ayder": "1", "ayder_ha": "1"}, jobs
        rules = requests.get(api + "/rules", timeout=10).json()["data"]["groups"]
        assert rules and all(r.get("health") == "ok" for g in rules for r in g["rules"]), rules
        assert not errors, errors[:3]
    finally:
        stop.set()
        th.join()
        prom.terminate()
        try:
            prom.wait(timeout=30)
        except subprocess.TimeoutExpired:
            prom.kill()
            prom.wait()
    assert n.stop() == 0


# ----------------------------------------------------------------------------------------------
# systemd

def test_systemd_unit_verifies(tmp_path):
    analyze = tool("systemd-analyze")
    unit = open(os.path.join(DEPLOY, "ayder.service")).read()
    for key in ("ProtectSystem=strict", "NoNewPrivileges=yes", "StateDirectory=ayder",
                "PrivateTmp=yes", "ProtectHome=yes", "RestrictAddressFamilies=",
                "KillSignal=SIGTERM", "--data-dir ${STATE_DIRECTORY}"):
        assert key in unit, key
    # verify needs the ExecStart binary to exist: point it at the one built here
    test_unit = tmp_path / "ayder.service"
    test_unit.write_text(unit.replace("/usr/local/bin/ayder", BINARY))
    p = subprocess.run([analyze, "verify", str(test_unit)], capture_output=True, text=True,
                       timeout=60)
    # verify exits 0 even for unknown keys; any diagnostic at all is a failure
    assert p.returncode == 0 and not (p.stdout + p.stderr).strip(), p.stdout + p.stderr
    # the checker is live: a misspelt key is reported
    bad = tmp_path / "bad" / "ayder.service"
    bad.parent.mkdir()
    bad.write_text(unit.replace("/usr/local/bin/ayder", BINARY)
                   .replace("NoNewPrivileges=", "NoNewPrivilegs="))
    p = subprocess.run([analyze, "verify", str(bad)], capture_output=True, text=True, timeout=60)
    assert "NoNewPrivilegs" in p.stdout + p.stderr
    # hardening score ("OK" is <= 4.9; this unit scores about 1.5)
    p = subprocess.run([analyze, "security", "--offline=true", str(test_unit)],
                       capture_output=True, text=True, timeout=60)
    m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", p.stdout + p.stderr)
    assert m and float(m.group(1)) <= 2.0, p.stdout[-2000:] + p.stderr


# ----------------------------------------------------------------------------------------------
# Docker (no engine here): the Dockerfile's steps, run by tools/docker-steps

def test_dockerfile_steps():
    if os.geteuid() != 0:
        pytest.fail("tools/docker-steps needs root (setpriv, unshare); the tests run as root")
    p = subprocess.run([os.path.join(ROOT, "tools", "docker-steps")], capture_output=True,
                       text=True, timeout=600)
    out = p.stdout + p.stderr
    assert p.returncode == 0, out[-5000:]
    for n in range(1, 9):
        assert re.search(r"^docker-steps: %d " % n, out, re.M), (n, out[-3000:])
    assert out.rstrip().endswith("docker-steps: OK"), out[-3000:]
    df = open(os.path.join(ROOT, "Dockerfile")).read()
    for must in ("FROM debian:bookworm AS build", "FROM debian:bookworm-slim", "USER ayder",
                 "VOLUME", "HEALTHCHECK", "/ready", "STOPSIGNAL SIGTERM"):
        assert must in df, must


# ----------------------------------------------------------------------------------------------
# make-certs.sh + the cluster compose file's settings: a real 3-node mTLS cluster on loopback

def test_make_certs_cluster(tmp_path):
    certs = tmp_path / "certs"
    p = subprocess.run([os.path.join(DEPLOY, "make-certs.sh"), str(certs)], capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    for n in ("n1", "n2", "n3"):
        out = subprocess.run(["openssl", "x509", "-in", str(certs / (n + ".crt")), "-noout",
                              "-subject", "-ext", "subjectAltName"], capture_output=True,
                             text=True).stdout
        assert "CN = %s" % n in out and "DNS:%s" % n in out, out
        assert oct(os.stat(certs / (n + ".key")).st_mode & 0o777) in ("0o600", "0o644")
    compose = yaml.safe_load(open(os.path.join(ROOT, "docker-compose.cluster.yml")))
    services = {k: v for k, v in compose["services"].items() if k.startswith("ayder")}
    assert len(services) == 3
    http_ports = {k: free_port() for k in services}
    raft_ports = {k: free_port() for k in services}
    nodes = []
    try:
        for name, svc in sorted(services.items()):
            env = {k: str(v) for k, v in svc["environment"].items()}
            assert env["RF_HA_TLS"] == "1" and env["RF_HA_ENABLED"] == "1"
            # the compose file's node list, with loopback addresses and free ports
            items = []
            for item in env["RF_HA_NODES"].split(","):
                nid, host, _, prio, _ = item.split(":")
                items.append("%s:127.0.0.1:%d:%s:%d" % (nid, raft_ports[host], prio,
                                                        http_ports[host]))
            env["RF_HA_NODES"] = ",".join(items)
            for k in ("RF_HA_TLS_CA", "RF_HA_TLS_CERT", "RF_HA_TLS_KEY"):
                env[k] = str(certs / os.path.basename(env[k]))
            node = Node(str(tmp_path / ("data-" + name)), port=http_ports[name], env=env)
            nodes.append(node)
            node.start(wait=False)
        # Wait for the settled leader: the first node elected hands leadership to the highest
        # priority one (n1), and a write sent into that hand-over would be redirected. So: every
        # node names the same leader, it is n1 (the first service), and it sees every peer.
        deadline = time.monotonic() + 60
        leader = None
        while time.monotonic() < deadline and not leader:
            try:
                sts = [requests.get(n.url + "/ha/status", timeout=2).json() for n in nodes]
                first = sts[0]
                if (first["role"] == "leader" and all(p["connected"] for p in first["peers"])
                        and all(st.get("leader_id") == first["node_id"] for st in sts)):
                    leader = nodes[0]
            except (requests.RequestException, ValueError, KeyError):
                pass
            if not leader:
                time.sleep(0.1)
        assert leader, [n.log()[-1500:] for n in nodes]
        r = leader.post("/broker/topics/tls/produce?partition=0", data=b"over-mtls")
        assert r.status_code == 200 and r.json()["write_concern"] == "majority", r.text
        commit = requests.get(leader.url + "/ha/status", timeout=5).json()["commit_index"]
        for node in nodes:
            deadline = time.monotonic() + 30
            while requests.get(node.url + "/ha/status", timeout=5).json()["applied_index"] < commit:
                assert time.monotonic() < deadline, node.log()[-1500:]
                time.sleep(0.05)
            r = node.get("/broker/consume/tls/g/0?offset=0")
            assert r.json()["messages"][0]["value"] == "over-mtls", r.text
    finally:
        for node in nodes:
            node.stop()
