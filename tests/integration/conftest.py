"""Shared fixtures for the black-box tests: each test gets a real ./ayder process on a free
loopback port with its own data directory. Processes are stopped by PID (TERM, then KILL)."""
import os
import signal
import socket
import subprocess
import tempfile
import time

import pytest
import requests

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BINARY = os.environ.get("AYDER_BIN", os.path.join(ROOT, "ayder"))
TOKEN = "dev"
AUTH = {"Authorization": "Bearer dev"}


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Node:
    """One ayder process. start() waits until /ready answers; kill() is SIGKILL."""

    def __init__(self, data_dir, port=None, args=(), env=None, wrapper=()):
        self.data_dir = data_dir
        self.port = port or free_port()
        self.args = list(args)
        self.env = dict(os.environ)
        self.env.setdefault("RF_BEARER_TOKENS", TOKEN)
        if env:
            self.env.update(env)
        self.wrapper = list(wrapper)
        self.proc = None
        self.log_path = os.path.join(data_dir + ".logs", "ayder-%d.log" % self.port)
        os.makedirs(os.path.dirname(self.log_path), exist_ok=True)

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def start(self, wait=True, timeout=30):
        log = open(self.log_path, "ab")
        cmd = self.wrapper + [BINARY, "--port", str(self.port), "--bind", "127.0.0.1",
                              "--data-dir", self.data_dir, "--log-level", "info"] + self.args
        # Own session: kill()/stop() signal the whole group, so a wrapper (strace) and the ayder
        # under it go together.
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=log, env=self.env,
                                     start_new_session=True)
        log.close()
        if wait:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout=30):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("ayder exited with %s; log:\n%s" % (self.proc.returncode, self.log()))
            try:
                r = requests.get(self.url + "/ready", timeout=1)
                if r.status_code == 200:
                    return
                last = r.status_code
            except requests.RequestException as e:
                last = e
            time.sleep(0.02)
        raise RuntimeError("ayder not ready after %ss (%s); log:\n%s" % (timeout, last, self.log()))

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")[-5000:]
        except OSError:
            return ""

    def _signal_group(self, sig):
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    def _wait_group_gone(self, timeout=30):
        # The wrapper (our child) may exit before the ayder under it: wait until the whole
        # process group is gone, so its data-dir lock is released before a restart.
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.killpg(self.proc.pid, 0)
            except ProcessLookupError:
                return
            except PermissionError:
                return
            time.sleep(0.01)
        raise RuntimeError("process group %d still alive after %ss" % (self.proc.pid, timeout))

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self._signal_group(signal.SIGKILL)
            self.proc.wait(timeout=30)
        if self.proc and self.wrapper:
            self._signal_group(signal.SIGKILL)  # anything left under a wrapper
            self._wait_group_gone()

    def stop(self, timeout=30):
        if self.proc and self.proc.poll() is None:
            if self.wrapper:
                self._signal_group(signal.SIGTERM)
            else:
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                self.proc.wait(timeout=30)
            if self.wrapper:
                self._wait_group_gone()
        return self.proc.returncode if self.proc else None

    # convenience
    def get(self, path, **kw):
        kw.setdefault("headers", AUTH)
        kw.setdefault("timeout", 30)
        return requests.get(self.url + path, **kw)

    def post(self, path, **kw):
        kw.setdefault("headers", AUTH)
        kw.setdefault("timeout", 30)
        return requests.post(self.url + path, **kw)

    def delete(self, path, **kw):
        kw.setdefault("headers", AUTH)
        kw.setdefault("timeout", 30)
        return requests.delete(self.url + path, **kw)


ERROR_KEYS = {"ok", "error", "message"}


def assert_error(r, status, code=None, extra=()):
    """An error response: the given status and exactly ok:false, error, message (+ extra)."""
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert body.get("ok") is False, body
    assert isinstance(body.get("error"), str) and body["error"], body
    assert isinstance(body.get("message"), str) and body["message"], body
    assert set(body) == ERROR_KEYS | set(extra), body
    if code is not None:
        assert body["error"] == code, body
    return body


@pytest.fixture
def data_dir():
    with tempfile.TemporaryDirectory(prefix="ayder-test-") as d:
        yield os.path.join(d, "data")


@pytest.fixture
def node(data_dir):
    n = Node(data_dir).start()
    yield n
    rc = n.stop()
    # A clean shutdown is part of the contract: exit code 0.
    assert rc == 0, "ayder exited with %s on SIGTERM; log:\n%s" % (rc, n.log())


@pytest.fixture
def make_node(data_dir):
    """Factory for tests that need custom flags/env or several restarts."""
    nodes = []

    def make(args=(), env=None, wrapper=(), port=None, data=None):
        n = Node(data or data_dir, port=port, args=args, env=env, wrapper=wrapper)
        nodes.append(n)
        return n

    yield make
    for n in nodes:
        n.kill()
