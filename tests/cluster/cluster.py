"""A cluster of real ayder processes for the cluster tests, inside the test's private namespace.

Node i (0-based) is "n<i+1>" on address 127.0.0.(i+1): HTTP on port_base+1000+i+1, Raft on
port_base+i+1. Every node starts with the same RF_HA_NODES (all initial voters). Data directories
and logs live under one temporary directory owned by the Cluster.

Invariants:
  1. Every wait polls a condition against a deadline (wait_for); nothing sleeps in place of one.
  2. Only processes this Cluster started are signalled, by PID (each in its own session, so
     killpg reaches exactly that node and anything under a wrapper).
  3. A node's log file is appended to across restarts, so a failure report shows its whole life.
  4. HTTP clients bind their source address to net.CLIENT_ADDR, which no partition rule names.
"""
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time

import requests
import requests.adapters

import net

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BINARY = os.environ.get("AYDER_BIN", os.path.join(ROOT, "ayder"))
TOKEN = "dev"
AUTH = {"Authorization": "Bearer " + TOKEN}


def wait_for(cond, timeout, what, interval=0.05):
    """Poll cond() until it returns a truthy value (returned) or timeout seconds pass (raises)."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while True:
        try:
            v = cond()
            if v:
                return v
        except Exception as e:  # noqa: BLE001 - a failing probe is just "not yet"
            last_exc = e
        if time.monotonic() >= deadline:
            raise TimeoutError("timed out after %.1fs waiting for %s%s" % (
                timeout, what, " (last error: %r)" % (last_exc,) if last_exc else ""))
        time.sleep(interval)


class SourceAdapter(requests.adapters.HTTPAdapter):
    """An HTTP adapter whose connections come from a fixed source address."""

    def __init__(self, source, **kw):
        self._source = source
        super().__init__(**kw)

    def init_poolmanager(self, *a, **kw):
        kw["source_address"] = (self._source, 0)
        return super().init_poolmanager(*a, **kw)


def client_session(source=net.CLIENT_ADDR):
    """A requests Session for the test's clients: source address bound, token set, no retries.
    Sessions are not shared between threads."""
    s = requests.Session()
    ad = SourceAdapter(source, max_retries=0, pool_connections=8, pool_maxsize=8)
    s.mount("http://", ad)
    s.headers.update(AUTH)
    return s


class ClusterNode:
    def __init__(self, cluster, i):
        self.cluster = cluster
        self.i = i
        self.id = "n%d" % (i + 1)
        self.host = net.node_addr(i)
        self.raft_port = cluster.port_base + i + 1
        self.http_port = cluster.port_base + 1000 + i + 1
        self.priority = 100 - 10 * i
        self.data_dir = os.path.join(cluster.dir, self.id, "data")
        self.log_path = os.path.join(cluster.dir, self.id, "ayder.log")
        os.makedirs(os.path.dirname(self.log_path), exist_ok=True)
        self.proc = None
        self.paused = False
        self.starts = 0

    @property
    def url(self):
        return "http://%s:%d" % (self.host_lit, self.http_port)

    @property
    def host_lit(self):
        """The host as it appears in a URL or RF_HA_NODES item: IPv6 in brackets."""
        return "[%s]" % self.host if ":" in self.host else self.host

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def env(self):
        e = dict(os.environ)
        e.update({"RF_BEARER_TOKENS": TOKEN, "RF_HA_ENABLED": "1", "RF_HA_NODE_ID": self.id,
                  "RF_HA_NODES": self.cluster.nodes_spec()})
        e.update(self.cluster.env_extra)
        e.update(getattr(self, "extra_env", {}))
        return e

    def start(self):
        if self.alive():
            raise RuntimeError("%s already running" % self.id)
        with open(self.log_path, "ab") as log:
            log.write(("\n==== start #%d of %s at %.3f\n" % (self.starts + 1, self.id,
                                                            time.monotonic())).encode())
            log.flush()
            cmd = self.cluster.wrapper + [
                BINARY, "--port", str(self.http_port), "--bind", self.host,
                "--data-dir", self.data_dir] + self.cluster.args
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=log, env=self.env(),
                                         start_new_session=True, cwd=self.cluster.dir)
        self.paused = False
        self.starts += 1
        return self

    def _signal(self, sig):
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    def _wait_gone(self, timeout=30):
        def gone():
            try:
                os.killpg(self.proc.pid, 0)
            except (ProcessLookupError, PermissionError):
                return True
            return False
        wait_for(gone, timeout, "process group of %s to exit" % self.id, 0.01)

    def kill(self):
        """SIGKILL (the whole process group), then wait until it is gone."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self._signal(signal.SIGKILL)
            self.proc.wait(timeout=30)
        self._signal(signal.SIGKILL)
        self._wait_gone()
        self.paused = False

    def terminate(self, timeout=30):
        """SIGTERM, then SIGKILL after timeout; returns the exit status."""
        if self.proc is None:
            return None
        if self.paused:
            self.cont()
        if self.proc.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self.proc.wait(timeout=30)
        self._signal(signal.SIGKILL)
        self._wait_gone()
        return self.proc.returncode

    def pause(self):
        self._signal(signal.SIGSTOP)
        self.paused = True

    def cont(self):
        self._signal(signal.SIGCONT)
        self.paused = False

    def log(self, tail=8000):
        try:
            with open(self.log_path, "rb") as f:
                data = f.read()
        except OSError:
            return ""
        return data[-tail:].decode("utf-8", "replace")

    def status(self, session=None, timeout=1.0):
        """GET /ha/status as a dict (raises on a connection error or a non-200)."""
        s = session or self.cluster.session
        r = s.get(self.url + "/ha/status", timeout=timeout)
        if r.status_code != 200:
            raise RuntimeError("%s /ha/status -> %d %s" % (self.id, r.status_code, r.text[:200]))
        return r.json()


class Cluster:
    """n real ayder processes. Use: c = Cluster(3, net); c.start(); ...; c.teardown()."""

    instances = 0

    def __init__(self, n, network=None, env=None, args=(), wrapper=(), base_dir=None):
        if not 1 <= n <= net.MAX_NODES:
            raise ValueError("1..%d nodes" % net.MAX_NODES)
        Cluster.instances += 1
        # A fresh port range per cluster in this run: no TIME_WAIT surprises between tests.
        self.port_base = 7000 + 20 * (Cluster.instances % 40)
        self.dir = tempfile.mkdtemp(prefix="ayder-cluster-", dir=base_dir)
        self.net = network
        self.env_extra = dict(env or {})
        self.args = list(args)
        self.wrapper = list(wrapper)
        self.nodes = [ClusterNode(self, i) for i in range(n)]
        self.session = client_session()
        self.faults = {}
        self.events = []   # (time, text): the fault timeline, for reports

    # ---- topology

    def add_node(self, env=None):
        """A new (not yet started) node with the next address; it joins an existing cluster
        (RF_HA_JOIN=1). Its RF_HA_NODES lists every node of this cluster, itself included."""
        if len(self.nodes) >= net.MAX_NODES:
            raise ValueError("at most %d nodes" % net.MAX_NODES)
        n = ClusterNode(self, len(self.nodes))
        n.extra_env = {"RF_HA_JOIN": "1"}
        n.extra_env.update(env or {})
        self.nodes.append(n)
        return n

    def nodes_spec(self):
        return ",".join("%s:%s:%d:%d:%d" % (n.id, n.host_lit, n.raft_port, n.priority, n.http_port)
                        for n in self.nodes)

    def __len__(self):
        return len(self.nodes)

    def __getitem__(self, i):
        return self.nodes[i]

    def addrs(self, idx=None):
        return [self.nodes[i].host for i in (range(len(self.nodes)) if idx is None else idx)]

    def majority(self):
        return len(self.nodes) // 2 + 1

    def note(self, kind, text):
        if kind:
            self.faults[kind] = self.faults.get(kind, 0) + 1
        self.events.append((time.monotonic(), text))

    # ---- lifecycle

    def start(self, timeout=60):
        if not os.path.exists(BINARY):
            raise RuntimeError("no ayder binary at %s (build it first: make ayder)" % BINARY)
        for n in self.nodes:
            n.start()
        self.wait_http(timeout=timeout)
        return self.wait_settled_leader(timeout=timeout)

    def wait_settled_leader(self, timeout=60):
        """A fresh cluster elects whoever times out first; that leader then hands leadership to
        the highest-priority voter (n1) once it is caught up. Wait for that hand-over, so a test
        does not start writing into it."""
        best = max(range(len(self.nodes)), key=lambda i: self.nodes[i].priority)
        return wait_for(lambda: ("ok", best) if self.find_leader() == best else None, timeout,
                        "the highest-priority node %s to lead" % self.nodes[best].id)[1]

    def wait_http(self, timeout=60):
        """Wait until every running node answers /ha/status (any status). Fails fast, with the
        log, when a node exits or has no /ha/status route (a build without HA)."""
        def answered():
            for n in self.nodes:
                if n.proc is not None and n.proc.poll() is not None:
                    raise RuntimeError("%s exited with %s; log:\n%s" % (
                        n.id, n.proc.returncode, n.log()))
            codes = {}
            for n in self.nodes:
                if not n.alive():
                    continue
                try:
                    codes[n.id] = self.session.get(n.url + "/ha/status", timeout=1).status_code
                except requests.RequestException:
                    return None
            if 404 in codes.values():
                raise RuntimeError("GET /ha/status answered 404 (%r): is this ayder built with "
                                   "Raft wired in?" % codes)
            return True
        deadline = time.monotonic() + timeout
        while True:
            try:
                if answered():
                    return
            except RuntimeError:
                raise
            if time.monotonic() >= deadline:
                raise TimeoutError("nodes did not answer /ha/status within %ss\n%s" % (
                    timeout, self.logs()))
            time.sleep(0.05)

    def teardown(self, keep_logs_to=None):
        """Heal the network, kill every node we started (by PID), keep logs if asked."""
        if self.net is not None:
            try:
                self.net.heal()
            except Exception:  # noqa: BLE001 - best effort during teardown
                pass
        for n in self.nodes:
            try:
                if n.paused:
                    n.cont()
                n.kill()
            except Exception:  # noqa: BLE001
                pass
        if keep_logs_to:
            os.makedirs(keep_logs_to, exist_ok=True)
            for n in self.nodes:
                if os.path.exists(n.log_path):
                    shutil.copy(n.log_path, os.path.join(keep_logs_to, n.id + ".log"))
        self.session.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def kill(self, i):
        self.note("kill", "kill -9 %s" % self.nodes[i].id)
        self.nodes[i].kill()

    def restart(self, i):
        n = self.nodes[i]
        if n.alive():
            n.kill()
        self.note(None, "start %s" % n.id)
        n.start()

    def pause(self, i):
        self.note("pause", "SIGSTOP %s" % self.nodes[i].id)
        self.nodes[i].pause()

    def resume(self, i):
        self.note(None, "SIGCONT %s" % self.nodes[i].id)
        self.nodes[i].cont()

    def wipe(self, i):
        """Kill node i, delete its data directory, start it again (same id, same address)."""
        n = self.nodes[i]
        self.note("wipe", "wipe %s" % n.id)
        n.kill()
        shutil.rmtree(n.data_dir, ignore_errors=True)
        n.start()

    # ---- network faults (need self.net)

    def isolate(self, i):
        self.note("partition", "isolate %s" % self.nodes[i].id)
        self.net.isolate(self.nodes[i].host, self.addrs())

    def split(self, *groups):
        """Partition into groups of node indices (every node not named joins the last group)."""
        named = {i for g in groups for i in g}
        rest = [i for i in range(len(self.nodes)) if i not in named]
        gs = [list(g) for g in groups]
        if rest:
            gs[-1] = gs[-1] + rest
        self.note("partition", "split %s" % " | ".join(
            ",".join(self.nodes[i].id for i in g) for g in gs))
        self.net.partition([self.addrs(g) for g in gs])

    def one_way(self, srcs, dsts):
        """Packets from nodes srcs to nodes dsts are dropped (the other direction flows)."""
        self.note("one-way", "one-way %s -/-> %s" % (",".join(self.nodes[i].id for i in srcs),
                                                   ",".join(self.nodes[i].id for i in dsts)))
        self.net.one_way(self.addrs(srcs), self.addrs(dsts))

    def heal(self):
        self.note(None, "heal")
        self.net.heal()

    # ---- observation

    def statuses(self, idx=None, timeout=1.0):
        """{i: status dict or None} for the given (default: running, unpaused) nodes."""
        out = {}
        for i in (idx if idx is not None else self.up()):
            try:
                out[i] = self.nodes[i].status(timeout=timeout)
            except Exception:  # noqa: BLE001
                out[i] = None
        return out

    def up(self):
        return [i for i, n in enumerate(self.nodes) if n.alive() and not n.paused]

    def index_of(self, node_id):
        for i, n in enumerate(self.nodes):
            if n.id == node_id:
                return i
        return None

    def find_leader(self, idx=None):
        """The index of the node that says it is leader and that every node asked names as
        leader, or None."""
        st = self.statuses(idx)
        if not st or any(s is None for s in st.values()):
            return None
        ids = {s.get("leader_id") for s in st.values()}
        if len(ids) != 1 or None in ids:
            return None
        li = self.index_of(ids.pop())
        if li is None or li not in st or st[li].get("role") != "leader":
            return None
        terms = {s.get("term") for s in st.values()}
        if len(terms) != 1:
            return None
        return li

    def wait_leader(self, timeout=30, idx=None, exclude=None):
        """Wait until every node in idx (default: running, unpaused) agrees on one leader."""
        def cond():
            li = self.find_leader(idx)
            if li is None or (exclude is not None and li == exclude):
                return None
            return ("ok", li)
        return wait_for(cond, timeout, "one leader known by all of %s" % (
            idx if idx is not None else self.up()))[1]

    def leader_commit(self, li):
        return self.nodes[li].status()["commit_index"]

    def wait_converged(self, timeout=60, idx=None):
        """Wait until one leader is known by all and every node's applied_index reached the
        leader's commit_index (and the leader's commit covers its whole log)."""
        def cond():
            li = self.find_leader(idx)
            if li is None:
                return None
            st = self.statuses(idx)
            lead = st[li]
            if lead is None or lead["commit_index"] < lead["last_index"]:
                return None
            if all(s is not None and s["applied_index"] >= lead["commit_index"]
                   for s in st.values()):
                return ("ok", li)
            return None
        return wait_for(cond, timeout, "all nodes applied the leader's commit index")[1]

    def wait_applied(self, i, index, timeout=60):
        wait_for(lambda: self.nodes[i].status()["applied_index"] >= index, timeout,
                 "%s applied_index >= %d" % (self.nodes[i].id, index))

    def logs(self, tail=6000):
        out = []
        for n in self.nodes:
            out.append("---- %s (%s, http %d, raft %d, %s) ----\n%s" % (
                n.id, n.host, n.http_port, n.raft_port,
                "running" if n.alive() else "down", n.log(tail)))
        return "\n".join(out)

    def report(self):
        lines = ["cluster dir: %s" % self.dir, "faults: %s" % json.dumps(self.faults)]
        t0 = self.events[0][0] if self.events else 0
        lines += ["  +%.2fs %s" % (t - t0, e) for t, e in self.events]
        try:
            if self.net is not None:
                lines.append("rules:\n" + self.net.rules())
        except Exception:  # noqa: BLE001
            pass
        st = self.statuses(list(range(len(self.nodes))))
        for i, s in st.items():
            lines.append("status %s: %s" % (self.nodes[i].id, json.dumps(s)))
        lines.append(self.logs())
        return "\n".join(lines)
