"""Recovery edge cases around checkpoints: state changed after the last checkpoint must replay
cleanly over files that the change already modified before the crash."""


def test_topic_deleted_after_checkpoint_then_crash(make_node):
    # --checkpoint-interval-ms 0: checkpoints only at clean shutdown (and by journal size), so the
    # order of events below is deterministic. Small segments: the checkpoint trims the journal, so
    # recovery cannot fall back to replaying everything from index 1.
    args = ["--checkpoint-interval-ms", "0", "--segment-bytes", "65536"]
    n = make_node(args=args).start()
    assert n.post("/broker/topics", json={"name": "gone", "partitions": 2}).status_code == 200
    for i in range(400):
        assert n.post("/broker/topics/gone/produce?partition=%d" % (i % 2),
                      data=b"v%d-" % i + b"x" * 500).status_code == 200
    assert n.post("/broker/topics", json={"name": "kept", "partitions": 1}).status_code == 200
    assert n.post("/broker/topics/kept/produce?partition=0", data=b"k").status_code == 200
    assert n.stop() == 0            # clean stop: the checkpoint lists both topics
    n = make_node(args=args, port=n.port).start()
    r = n.delete("/broker/topics/gone")
    assert r.status_code == 200 and r.json()["deleted"] is True
    n.kill()                        # crash: the snapshot still lists "gone"
    n = make_node(args=args, port=n.port).start()
    assert n.get("/broker/consume/gone/g/0").status_code == 404
    got = n.get("/broker/consume/kept/g/0?offset=0").json()
    assert [m["value"] for m in got["messages"]] == ["k"]
    # the name can be used again, empty
    assert n.post("/broker/topics/gone/produce?partition=0", data=b"new").status_code == 200
    got = n.get("/broker/consume/gone/g/0?offset=0").json()
    assert [m["value"] for m in got["messages"]] == ["new"]
    assert n.stop() == 0
    n = make_node(args=args, port=n.port).start()
    got = n.get("/broker/consume/gone/g/0?offset=0").json()
    assert [m["value"] for m in got["messages"]] == ["new"]
    assert n.stop() == 0


def test_delete_before_after_checkpoint_then_crash(make_node):
    args = ["--checkpoint-interval-ms", "0", "--segment-bytes", "65536"]
    n = make_node(args=args).start()
    body = b"x" * 1000
    for i in range(300):
        assert n.post("/broker/topics/ret/produce?partition=0", data=body).status_code == 200
    assert n.stop() == 0
    n = make_node(args=args, port=n.port).start()
    r = n.post("/broker/delete-before", json={"topic": "ret", "partition": 0, "before_offset": 250})
    assert r.status_code == 200 and r.json()["freed_bytes"] > 0
    n.kill()
    n = make_node(args=args, port=n.port).start()
    got = n.get("/broker/consume/ret/g/0?offset=0&limit=1000").json()
    assert got["messages"][0]["offset"] >= 200 and got["messages"][-1]["offset"] == 299
    assert got.get("floor_adjusted") is True
    assert n.stop() == 0
