"""Damaged data directories crafted by the test: what the real binary must do with each.

- last journal entry cut in the middle (torn tail): starts; entries before it are there, the torn
  one is gone and its offset is reused.
- one byte flipped in a journal entry with valid entries after it: refuses to start (exit != 0, log
  says corrupt) and leaves the file as it was: never silently drops acknowledged data.
- a partition's .idx files deleted: starts and serves everything (index rebuilt).
- zero-length journal segment at the end: starts; data there; writes continue.
- partition .log cut short while the journal still holds the data (no checkpoint yet): starts and
  serves every acknowledged record (repaired from the journal).
- `ayder logcheck DIR`: exit 0 and "ok" on a clean dir; exit != 0 naming the damage otherwise.
- `ayder logdump <segment>`: one line per journal entry / partition batch.

Writes are made with SIGKILL afterwards (not SIGTERM) where the journal must still hold them: a clean
shutdown takes a checkpoint, after which the journal may be trimmed.
"""
import glob
import os
import re
import subprocess
import time

import pytest
import requests

from conftest import BINARY

TOPIC = "dmg"
ENTRY_HEADER = 25  # journal entry header bytes (docs/DISK_FORMAT.md, journal.h)


def produce(node, values, partition=0):
    offs = []
    for v in values:
        r = node.post("/broker/topics/%s/produce" % TOPIC, params={"partition": partition},
                      data=v.encode())
        assert r.status_code == 200 and r.json().get("durable") is True, r.text
        offs.append(r.json()["offset"])
    return offs


def read_all(node, partition=0, offset=0):
    out = []
    while True:
        r = node.get("/broker/consume/%s/g/%d" % (TOPIC, partition),
                     params={"offset": offset, "limit": 1000})
        assert r.status_code == 200, r.text
        msgs = r.json()["messages"]
        if not msgs:
            return out
        out.extend((m["offset"], m["value"]) for m in msgs)
        offset = r.json()["next_offset"]


def populate(make_node, args=(), n=5, pad=""):
    node = make_node(args=args)
    node.start()
    r = node.post("/broker/topics", json={"name": TOPIC, "partitions": 2})
    assert r.status_code == 200, r.text
    values = ["v%04d%s" % (i, pad) for i in range(n)]
    produce(node, values)
    return node, values


def journal_segments(data_dir):
    return sorted(glob.glob(os.path.join(data_dir, "journal", "*.seg")))


def run_tool(*args):
    return subprocess.run([BINARY] + list(args), capture_output=True, text=True, timeout=60)


def journal_entries(seg):
    """[(index, offset, len)] of every entry, from `ayder logdump`."""
    r = run_tool("logdump", seg)
    assert r.returncode == 0, r.stdout + r.stderr
    out = []
    for m in re.finditer(r"index=(\d+) .*?len=(\d+) offset=(\d+)", r.stdout):
        out.append((int(m.group(1)), int(m.group(3)), int(m.group(2))))
    assert out, "logdump printed no entries:\n" + r.stdout
    return out


def wait_exit(node, timeout=30):
    """The node must exit by itself (refusing to start); fail if it becomes ready instead."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rc = node.proc.poll()
        if rc is not None:
            return rc
        try:
            ok = requests.get(node.url + "/ready", timeout=1).status_code == 200
        except requests.RequestException:
            ok = False
        if ok:
            pytest.fail("node started on damaged data instead of refusing; log:\n" + node.log())
        time.sleep(0.05)
    pytest.fail("node neither started nor exited within %ss" % timeout)


def test_torn_journal_tail(make_node, data_dir):
    node, values = populate(make_node)
    node.kill()
    seg = journal_segments(data_dir)[-1]
    idx, off, ln = journal_entries(seg)[-1]
    assert os.path.getsize(seg) == off + ENTRY_HEADER + ln, "last entry is not at the file end"
    os.truncate(seg, off + (ENTRY_HEADER + ln) // 2)
    node2 = make_node(port=node.port)
    node2.start()
    assert read_all(node2) == list(enumerate(values[:-1])), node2.log()
    # the torn entry's offset is free again and gets the next write
    assert produce(node2, ["after-torn"]) == [len(values) - 1]
    assert read_all(node2)[-1] == (len(values) - 1, "after-torn")
    assert node2.stop() == 0


def test_flipped_byte_mid_journal_refuses_to_start(make_node, data_dir):
    node, values = populate(make_node, n=8)
    node.kill()
    seg = journal_segments(data_dir)[-1]
    entries = journal_entries(seg)
    assert len(entries) >= 6
    _idx, off, ln = entries[len(entries) // 2]  # valid entries follow it
    pos = off + ENTRY_HEADER + ln // 2
    with open(seg, "r+b") as f:
        f.seek(pos)
        b = f.read(1)
        f.seek(pos)
        f.write(bytes([b[0] ^ 0x5A]))
    size_before = os.path.getsize(seg)
    node2 = make_node(port=node.port)
    node2.start(wait=False)
    rc = wait_exit(node2)
    assert rc != 0, "exit code 0 on a corrupt journal; log:\n" + node2.log()
    assert "corrupt" in node2.log().lower(), "log does not say corrupt:\n" + node2.log()
    # the offline checker names the damage too
    r = run_tool("logcheck", data_dir)
    assert r.returncode != 0, r.stdout
    assert "corrupt" in (r.stdout + r.stderr).lower(), r.stdout + r.stderr
    # nothing was "repaired" away by the refused start: the file is as we left it
    assert os.path.getsize(seg) == size_before, "the refused start changed the journal"
    # logdump prints the entries before the damage and names it
    r = run_tool("logdump", seg)
    assert r.returncode != 0 and "offset=%d" % entries[0][1] in r.stdout, r.stdout
    assert "corrupt" in r.stdout.lower() or "crc" in r.stdout.lower(), r.stdout


def test_deleted_index_is_rebuilt(make_node, data_dir):
    args = ["--segment-bytes", "65536"]
    node, values = populate(make_node, args=args, n=500, pad="-" + "i" * 200)
    assert node.stop() == 0
    pdir = glob.glob(os.path.join(data_dir, "topics", TOPIC + "-*", "0"))[0]
    idx = glob.glob(os.path.join(pdir, "*.idx"))
    assert len(glob.glob(os.path.join(pdir, "*.log"))) >= 2, "expected several segments"
    assert any(os.path.getsize(p) > 0 for p in idx), "expected a non-empty index"
    for p in idx:
        os.unlink(p)
    node2 = make_node(args=args, port=node.port)
    node2.start()
    assert read_all(node2) == list(enumerate(values))
    for start in (1, 137, 250, 499):  # seeks through the rebuilt index
        r = node2.get("/broker/consume/%s/g/0" % TOPIC, params={"offset": start, "limit": 1})
        m = r.json()["messages"][0]
        assert (m["offset"], m["value"]) == (start, values[start])
    assert node2.stop() == 0
    r = run_tool("logcheck", data_dir)
    assert r.returncode == 0, r.stdout + r.stderr


def test_zero_length_journal_segment_at_end(make_node, data_dir):
    node, values = populate(make_node)
    node.kill()
    segs = journal_segments(data_dir)
    last_index = journal_entries(segs[-1])[-1][0]
    empty = os.path.join(data_dir, "journal", "%020d.seg" % (last_index + 1))
    open(empty, "wb").close()
    node2 = make_node(port=node.port)
    node2.start()
    assert read_all(node2) == list(enumerate(values)), node2.log()
    assert produce(node2, ["after-empty"]) == [len(values)]
    node2.kill()
    node3 = make_node(port=node.port)
    node3.start()
    assert read_all(node3) == list(enumerate(values + ["after-empty"])), node3.log()
    assert node3.stop() == 0


def test_truncated_partition_log_repaired_from_journal(make_node, data_dir):
    node, values = populate(make_node, n=20)
    node.kill()  # no checkpoint: the journal holds every write
    logs = glob.glob(os.path.join(data_dir, "topics", TOPIC + "-*", "0", "*.log"))
    assert len(logs) == 1
    size = os.path.getsize(logs[0])
    assert size > 0
    os.truncate(logs[0], size // 2 + 3)  # mid-batch
    r = run_tool("logcheck", data_dir)
    assert r.returncode != 0, "logcheck says ok on a cut partition log:\n" + r.stdout
    assert "CORRUPT" in r.stdout or "damaged" in r.stdout, r.stdout
    node2 = make_node(port=node.port)
    node2.start()
    assert read_all(node2) == list(enumerate(values)), node2.log()
    assert node2.stop() == 0
    r = run_tool("logcheck", data_dir)
    assert r.returncode == 0, "not repaired after restart:\n" + r.stdout


def test_logcheck_clean_dir_ok(make_node, data_dir):
    node, _values = populate(make_node, n=10)
    assert node.stop() == 0
    r = run_tool("logcheck", data_dir)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "ok" in r.stdout and "0 damaged" in r.stdout, r.stdout


def test_damaged_raft_meta_refuses_to_start_and_logcheck_names_it(make_node, data_dir):
    node, _values = populate(make_node, n=3)
    assert node.stop() == 0
    meta = os.path.join(data_dir, "raft", "meta")
    r = run_tool("logcheck", data_dir)
    assert r.returncode == 0 and "raft/meta: term" in r.stdout, r.stdout + r.stderr
    with open(meta, "r+b") as f:                    # flip a byte of the term
        f.seek(9)
        b = f.read(1)
        f.seek(9)
        f.write(bytes([b[0] ^ 0x5A]))
    r = run_tool("logcheck", data_dir)
    assert r.returncode != 0 and "raft/meta" in r.stdout, r.stdout + r.stderr
    node2 = make_node(port=node.port)
    node2.start(wait=False)
    assert wait_exit(node2) != 0, "started with a damaged raft/meta; log:\n" + node2.log()
    assert "raft" in node2.log() and "meta" in node2.log(), node2.log()


def test_logdump_prints_entries(make_node, data_dir):
    node, values = populate(make_node, n=6)
    node.kill()
    seg = journal_segments(data_dir)[-1]
    entries = journal_entries(seg)
    indexes = [e[0] for e in entries]
    assert indexes == list(range(indexes[0], indexes[0] + len(indexes)))
    assert len(entries) >= len(values)  # topic creation + one entry per produce
    log = glob.glob(os.path.join(data_dir, "topics", TOPIC + "-*", "0", "*.log"))[0]
    r = run_tool("logdump", log)
    assert r.returncode == 0, r.stdout + r.stderr
    # one line per batch, each naming its offsets; together they cover 0..n-1
    covered = []
    for m in re.finditer(r"offsets=(\d+)\.\.(\d+)", r.stdout):
        covered.extend(range(int(m.group(1)), int(m.group(2)) + 1))
    assert covered == list(range(len(values))), r.stdout
    r = run_tool("logdump", os.path.join(data_dir, "no-such.seg"))
    assert r.returncode != 0
