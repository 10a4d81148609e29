"""Catch-up by snapshot (InstallSnapshot): a follower that is down while the leader checkpoints
twice finds the entries it misses compacted away; it must receive the checkpoint and partition
files, install them, and end with exactly the leader's data. A wiped follower rejoins the same
way. Checkpoints are made frequent (--checkpoint-interval-ms) so the journal base moves fast."""
import json

from cluster import wait_for
from scenario import finish, hold
from test_faults import cycles, workload

CKPT_ARGS = ("--checkpoint-interval-ms", "300")


def ha(c, i):
    return c[i].status()


def test_snapshot_catchup(make_cluster, figures, long_run):
    c = make_cluster(3, args=CKPT_ARGS)
    w = workload(c, long_run, kv_clients=1)
    w.start(duration_s=600)
    installed = 0
    for k in range(cycles(long_run, 1, 4)):
        hold(w, 1.0)
        li = c.wait_leader()
        f = (li + 1 + k) % 3
        if f == li:
            f = (f + 1) % 3
        c.kill(f)
        # The follower holds nothing beyond the leader's last index at this moment (it may hold
        # more than the commit index). Two checkpoints past that: the cluster keeps one older
        # checkpoint and compacts to it, so the follower's position is then below the leader's
        # log base. (Using the snapshot index seen at the kill instead raced with a checkpoint
        # taken right then: the follower could catch up from the log, with no snapshot.)
        lead_last = ha(c, li)["last_index"]
        wait_for(lambda: ha(c, c.wait_leader())["snapshot_index"] > lead_last, 60,
                 "the leader to checkpoint past the killed follower")
        li = c.wait_leader()
        base1 = ha(c, li)["snapshot_index"]
        wait_for(lambda: ha(c, c.wait_leader())["snapshot_index"] > base1, 60,
                 "a second checkpoint")
        before = ha(c, c.wait_leader())["snapshots_sent"]
        c.restart(f)
        wait_for(lambda: ha(c, f)["snapshots_installed"] >= 1, 60,
                 "the restarted follower to install a snapshot")
        installed += 1
        assert ha(c, c.wait_leader())["snapshots_sent"] > before or \
            c.wait_leader() != li  # (a leader change may have sent it)
    q, kv, drains = finish(c, w, figures, "snapshot catch-up, 3 nodes",
                           extra={"snapshot installs": installed})
    # finish() compared every node's drain with the leader's, the restarted one included.
    assert q["counts"]["drained"] > 0


def test_wipe_after_compaction(make_cluster, figures, long_run):
    c = make_cluster(3, args=CKPT_ARGS)
    w = workload(c, long_run, kv_clients=1)
    w.start(duration_s=600)
    hold(w, 1.0)
    li = c.wait_leader()
    base0 = ha(c, li)["snapshot_index"]
    wait_for(lambda: ha(c, c.wait_leader())["snapshot_index"] > base0 + 20, 60,
             "checkpoints that compact the log")
    li = c.wait_leader()
    f = (li + 1) % 3
    c.wipe(f)
    wait_for(lambda: ha(c, f)["snapshots_installed"] >= 1, 60,
             "the wiped follower to install a snapshot")
    hold(w, 1.0)
    q, kv, drains = finish(c, w, figures, "wipe after compaction, 3 nodes")
    assert q["counts"]["drained"] > 0
    print(json.dumps(ha(c, f)))
