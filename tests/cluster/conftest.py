"""Fixtures for the cluster tests (run them with tests/cluster/run, which makes the private
network namespace). test_checker.py needs none of this and runs anywhere.

- `net`: the partition rules (session-wide; healed after every test).
- `make_cluster(n, **kw)`: starts a Cluster and waits for a leader; on teardown kills only its own
  processes, and when the test failed prints the fault timeline, statuses and every node's log
  tail (and copies the logs to build/cluster-logs/<test>/).
- `long_run`: True under AYDER_JEPSEN=1 (the `make jepsen` durations).
- `figures(text)`: record a Jepsen-style figures block; all blocks are printed at the end of the
  run and appended to $AYDER_CLUSTER_REPORT (default build/cluster-figures.txt).
"""
import os
import re

import pytest

import cluster as cluster_mod
import net as net_mod

ROOT = cluster_mod.ROOT
LONG = os.environ.get("AYDER_JEPSEN") == "1"
REPORT = os.environ.get("AYDER_CLUSTER_REPORT", os.path.join(ROOT, "build", "cluster-figures.txt"))
_FIGURES = []


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


def pytest_terminal_summary(terminalreporter):
    if not _FIGURES:
        return
    terminalreporter.section("cluster figures")
    for block in _FIGURES:
        terminalreporter.write_line(block)
        terminalreporter.write_line("")


@pytest.fixture
def long_run():
    return LONG


@pytest.fixture
def figures():
    def add(text):
        _FIGURES.append(text)
        print(text)
        try:
            os.makedirs(os.path.dirname(REPORT), exist_ok=True)
            with open(REPORT, "a") as f:
                f.write(text + "\n\n")
        except OSError:
            pass
    return add


@pytest.fixture(scope="session")
def _session_net():
    if not net_mod.in_private_netns():
        pytest.skip("cluster tests need the private network namespace: run tests/cluster/run")
    n = net_mod.Net().setup()
    yield n
    n.close()


@pytest.fixture
def net(_session_net):
    _session_net.heal()
    yield _session_net
    _session_net.heal()


@pytest.fixture
def make_cluster(request, net):
    made = []

    def make(n=3, env=None, start=True, **kw):
        c = cluster_mod.Cluster(n, network=net, env=env, **kw)
        made.append(c)
        if start:
            c.start()
        return c

    yield make
    rep = getattr(request.node, "rep_call", None)
    failed = rep is None or rep.failed
    for c in made:
        keep = None
        if failed:
            name = re.sub(r"[^A-Za-z0-9_.-]", "_", request.node.name)
            keep = os.path.join(ROOT, "build", "cluster-logs", name)
            try:
                print("\n==== cluster report (%s) ====\n%s" % (request.node.name, c.report()))
            except Exception as e:  # noqa: BLE001
                print("cluster report failed: %r" % (e,))
        c.teardown(keep_logs_to=keep)
