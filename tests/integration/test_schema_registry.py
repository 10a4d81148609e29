"""The embedded schema registry over HTTP (Confluent-compatible routes): registration of AVRO,
PROTOBUF (text with references, or a serialized FileDescriptorSet) and JSON schemas, lookups,
errors in both shapes (ours and Confluent's error_code), scopes, and survival across restarts by
journal replay and by checkpoint."""
import base64
import os
import shutil
import subprocess

import pytest

from conftest import AUTH

CT = "application/vnd.schemaregistry.v1+json"
SR_HEADERS = dict(AUTH, **{"Content-Type": CT})

USER_AVRO = ('{"type": "record", "name": "User", "namespace": "com.example", "fields": '
             '[{"name": "id", "type": "long"}, {"name": "name", "type": "string"}]}')
USER_AVRO_COMPACT = ('{"type":"record","name":"User","namespace":"com.example","fields":'
                     '[{"name":"id","type":"long"},{"name":"name","type":"string"}]}')
MONEY_PROTO = 'syntax = "proto3";\npackage money;\nmessage Money { int64 units = 1; string currency = 2; }\n'
ORDER_PROTO = ('syntax = "proto3";\npackage shop;\nimport "money.proto";\n'
               'message Order { string id = 1; money.Money total = 2; }\n')
JSON_SCHEMA = '{"type": "object", "properties": {"id": {"type": "integer"}}}'


def register(n, subject, body, **kw):
    return n.post("/subjects/%s/versions" % subject, json=body, headers=SR_HEADERS, **kw)


def sr_error(r, status, code, error_code):
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert body["ok"] is False and body["error"] == code, body
    assert body["error_code"] == error_code, body
    assert isinstance(body["message"], str) and body["message"], body
    return body


def test_register_and_read_avro(node):
    r = register(node, "users-value", {"schema": USER_AVRO})
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith(CT)
    assert r.json() == {"id": 1}
    # idempotent; the same schema written differently (canonical form) is the same one
    assert register(node, "users-value", {"schema": USER_AVRO}).json() == {"id": 1}
    assert register(node, "users-value", {"schema": USER_AVRO_COMPACT,
                                          "schemaType": "AVRO"}).json() == {"id": 1}
    # under another subject: the same id, version 1 there
    assert register(node, "other", {"schema": USER_AVRO}).json() == {"id": 1}
    r = node.get("/schemas/ids/1")
    assert r.status_code == 200
    assert r.json() == {"id": 1, "schema": USER_AVRO}  # schemaType omitted for AVRO
    assert node.get("/schemas/ids/1/schema").text == USER_AVRO
    v = node.get("/subjects/users-value/versions/latest").json()
    assert v == {"subject": "users-value", "version": 1, "id": 1, "schema": USER_AVRO}
    assert node.get("/subjects/users-value/versions/1").json() == v
    assert node.get("/subjects/users-value/versions/-1").json() == v
    assert node.get("/subjects/users-value/versions").json() == [1]
    assert node.get("/subjects").json() == ["other", "users-value"]
    # a second version
    v2 = USER_AVRO.replace('"string"}]', '"string"}, {"name": "email", "type": ["null", "string"], "default": null}]')
    assert register(node, "users-value", {"schema": v2}).json() == {"id": 2}
    assert node.get("/subjects/users-value/versions").json() == [1, 2]
    assert node.get("/subjects/users-value/versions/latest").json()["version"] == 2
    # lookup (POST /subjects/{s}) without registering
    r = node.post("/subjects/users-value", json={"schema": USER_AVRO_COMPACT}, headers=SR_HEADERS)
    assert r.status_code == 200, r.text
    assert r.json() == {"subject": "users-value", "version": 1, "id": 1, "schema": USER_AVRO}
    assert node.get("/schemas/types").json() == ["AVRO", "PROTOBUF", "JSON"]


def test_protobuf_text_references_and_json(node):
    assert register(node, "money", {"schema": MONEY_PROTO, "schemaType": "PROTOBUF"}).json() == {"id": 1}
    # an import with no reference is an invalid schema
    r = register(node, "orders-value", {"schema": ORDER_PROTO, "schemaType": "PROTOBUF"})
    body = sr_error(r, 422, "invalid_schema", 42201)
    assert body["path"].startswith("/schema")
    refs = [{"name": "money.proto", "subject": "money", "version": 1}]
    r = register(node, "orders-value", {"schema": ORDER_PROTO, "schemaType": "PROTOBUF",
                                        "references": refs})
    assert r.json() == {"id": 2}, r.text
    got = node.get("/schemas/ids/2").json()
    assert got == {"id": 2, "schema": ORDER_PROTO, "schemaType": "PROTOBUF", "references": refs}
    v = node.get("/subjects/orders-value/versions/1").json()
    assert v["references"] == refs and v["schemaType"] == "PROTOBUF"
    # "latest" (-1) references resolve to a concrete version
    r = register(node, "orders2", {"schema": ORDER_PROTO, "schemaType": "PROTOBUF",
                                   "references": [{"name": "money.proto", "subject": "money",
                                                   "version": -1}]})
    assert r.json() == {"id": 2}, r.text
    # a reference to a version that does not exist
    r = register(node, "orders3", {"schema": ORDER_PROTO, "schemaType": "PROTOBUF",
                                   "references": [{"name": "money.proto", "subject": "money",
                                                   "version": 7}]})
    assert sr_error(r, 422, "invalid_schema", 42201)["path"] == "/references/0"
    # JSON schemas
    assert register(node, "j", {"schema": JSON_SCHEMA, "schemaType": "JSON"}).json() == {"id": 3}
    assert node.get("/schemas/ids/3").json()["schemaType"] == "JSON"
    r = register(node, "j", {"schema": "[1, 2]", "schemaType": "JSON"})
    sr_error(r, 422, "invalid_schema", 42201)
    r = register(node, "j", {"schema": "{\"a\":", "schemaType": "JSON"})
    assert sr_error(r, 422, "invalid_schema", 42201)["path"].startswith("/schema")


@pytest.mark.skipif(shutil.which("protoc") is None, reason="protoc not installed")
def test_protobuf_file_descriptor_set(node, tmp_path):
    (tmp_path / "money.proto").write_text(MONEY_PROTO)
    out = tmp_path / "fds.bin"
    subprocess.run(["protoc", "-I", str(tmp_path), "--descriptor_set_out=%s" % out,
                    str(tmp_path / "money.proto")], check=True)
    fds = base64.b64encode(out.read_bytes()).decode()
    r = register(node, "money-fds", {"schema": fds, "schemaType": "PROTOBUF", "format": "serialized"})
    assert r.json() == {"id": 1}, r.text
    got = node.get("/schemas/ids/1").json()
    assert got["schema"] == fds and got["format"] == "serialized" and got["schemaType"] == "PROTOBUF"
    r = register(node, "x", {"schema": base64.b64encode(b"\xff\xff\xff").decode(),
                             "schemaType": "PROTOBUF", "format": "serialized"})
    sr_error(r, 422, "invalid_schema", 42201)
    r = register(node, "x", {"schema": "!!!", "schemaType": "PROTOBUF", "format": "serialized"})
    sr_error(r, 422, "invalid_schema", 42201)
    r = register(node, "x", {"schema": fds, "schemaType": "AVRO", "format": "serialized"})
    assert sr_error(r, 422, "invalid_schema", 42201)["path"] == "/format"


def test_errors(node):
    assert register(node, "s", {"schema": USER_AVRO}).status_code == 200
    sr_error(node.get("/schemas/ids/99"), 404, "schema_not_found", 40403)
    sr_error(node.get("/schemas/ids/abc"), 404, "schema_not_found", 40403)
    sr_error(node.get("/subjects/nope/versions"), 404, "subject_not_found", 40401)
    sr_error(node.get("/subjects/nope/versions/1"), 404, "subject_not_found", 40401)
    sr_error(node.get("/subjects/s/versions/2"), 404, "version_not_found", 40402)
    for bad in ("0", "abc", "-2", "99999999999"):
        sr_error(node.get("/subjects/s/versions/%s" % bad), 422, "invalid_version", 42202)
    r = node.post("/subjects/s", json={"schema": USER_AVRO.replace("User", "Other")}, headers=SR_HEADERS)
    sr_error(r, 404, "schema_not_found", 40403)
    r = node.post("/subjects/nope", json={"schema": USER_AVRO}, headers=SR_HEADERS)
    sr_error(r, 404, "subject_not_found", 40401)
    # invalid Avro: 422 with the offending place
    r = register(node, "s", {"schema": '{"type": "record", "name": "X", "fields": [{"name": "a", "type": "nope"}]}'})
    body = sr_error(r, 422, "invalid_schema", 42201)
    assert body["path"].startswith("/schema") and "nope" in body["message"], body
    sr_error(register(node, "s", {"schema": "not json"}), 422, "invalid_schema", 42201)
    sr_error(register(node, "s", {"schema": 5}), 422, "invalid_schema", 42201)
    sr_error(register(node, "s", {}), 422, "invalid_schema", 42201)
    r = register(node, "s", {"schema": USER_AVRO, "schemaType": "XML"})
    assert sr_error(r, 422, "invalid_schema", 42201)["path"] == "/schemaType"
    r = register(node, "s", {"schema": USER_AVRO, "references": [{"name": "a"}]})
    assert sr_error(r, 422, "invalid_schema", 42201)["path"] == "/references/0"
    r = register(node, "s", {"schema": USER_AVRO, "references": "x"})
    sr_error(r, 422, "invalid_schema", 42201)
    r = node.post("/subjects/s/versions", data=b"{", headers=SR_HEADERS)
    sr_error(r, 400, "invalid_json", 40000)
    r = node.post("/subjects/s/versions", data=b"[]", headers=SR_HEADERS)
    sr_error(r, 400, "invalid_json", 40000)
    r = register(node, "a%20b", {"schema": USER_AVRO})
    sr_error(r, 400, "invalid_name", 40000)
    big = '{"type": "record", "name": "Big", "doc": "%s", "fields": []}' % ("x" * (1 << 20))
    sr_error(register(node, "s", {"schema": big}), 413, "payload_too_large", 41300)
    # nothing above changed the registry
    assert node.get("/subjects").json() == ["s"]
    assert node.get("/subjects/s/versions").json() == [1]


def test_scopes(make_node):
    n = make_node(env={"RF_BEARER_TOKENS": "adm@admin,rd@consume,pr@produce"}).start()
    adm = {"Authorization": "Bearer adm"}
    rd = {"Authorization": "Bearer rd"}
    pr = {"Authorization": "Bearer pr"}
    r = n.post("/subjects/s/versions", json={"schema": USER_AVRO}, headers=rd)
    assert r.status_code == 403
    assert n.post("/subjects/s/versions", json={"schema": USER_AVRO}, headers=pr).status_code == 403
    assert n.post("/subjects/s/versions", json={"schema": USER_AVRO}, headers=adm).json() == {"id": 1}
    assert n.get("/schemas/ids/1", headers=rd).status_code == 200
    assert n.get("/schemas/ids/1", headers={}).status_code == 401
    assert n.stop() == 0


def _fill(n):
    assert register(n, "users-value", {"schema": USER_AVRO}).json() == {"id": 1}
    assert register(n, "money", {"schema": MONEY_PROTO, "schemaType": "PROTOBUF"}).json() == {"id": 2}
    refs = [{"name": "money.proto", "subject": "money", "version": 1}]
    assert register(n, "orders-value", {"schema": ORDER_PROTO, "schemaType": "PROTOBUF",
                                        "references": refs}).json() == {"id": 3}
    assert register(n, "j", {"schema": JSON_SCHEMA, "schemaType": "JSON"}).json() == {"id": 4}
    assert register(n, "users2", {"schema": USER_AVRO}).json() == {"id": 1}


def _check(n):
    assert n.get("/subjects").json() == ["j", "money", "orders-value", "users-value", "users2"]
    assert n.get("/schemas/ids/1").json() == {"id": 1, "schema": USER_AVRO}
    got = n.get("/schemas/ids/3").json()
    assert got["schemaType"] == "PROTOBUF" and got["references"][0]["subject"] == "money"
    assert n.get("/subjects/users2/versions/latest").json()["id"] == 1
    # ids continue where they were: the next new schema is 5, and re-registering is idempotent
    assert register(n, "users-value", {"schema": USER_AVRO}).json() == {"id": 1}
    assert register(n, "k", {"schema": '{"k": 1}', "schemaType": "JSON"}).json() == {"id": 5}


def test_survives_restart_by_journal_replay(make_node):
    # No checkpoint between the writes and the crash: recovery replays the journal.
    args = ["--checkpoint-interval-ms", "0"]
    n = make_node(args=args).start()
    _fill(n)
    n.kill()
    n = make_node(args=args, port=n.port).start()
    _check(n)
    assert n.stop() == 0


def test_survives_restart_by_checkpoint(make_node, data_dir):
    # A clean stop writes a checkpoint; small segments let it trim the journal, and many KV puts
    # after the registrations push them out of the retained journal, so the registry can only
    # come back from the snapshot.
    args = ["--checkpoint-interval-ms", "0", "--segment-bytes", "65536"]
    n = make_node(args=args).start()
    _fill(n)
    for i in range(300):
        assert n.post("/kv/pad/k%d" % i, data=b"x" * 500).status_code == 200
    assert n.stop() == 0
    snaps = os.listdir(os.path.join(data_dir, "snapshot"))
    assert any(s.endswith(".snap") for s in snaps), snaps
    segs = sorted(os.listdir(os.path.join(data_dir, "journal")))
    firsts = [int(s.split(".")[0]) for s in segs if s.endswith(".seg")]
    # the registrations (the first ~6 entries) are no longer in the journal
    assert not firsts or min(firsts) > 10, segs
    n = make_node(args=args, port=n.port).start()
    _check(n)
    # and a second restart, after new registrations on top of the checkpoint, replays them
    n.kill()
    n = make_node(args=args, port=n.port).start()
    assert n.get("/schemas/ids/5").json()["schema"] == '{"k": 1}'
    assert n.stop() == 0
