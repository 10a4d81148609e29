"""Formats through /broker/query and /broker/join, black box: Avro binary made by a real encoder
(Debian python3-avro), Protobuf binary made by `protoc --encode` from a .proto written here (and
checked with `protoc --decode`), both produced with produce-ndjson ?encoding=b64; inline schemas
and registered subjects (POST /subjects/{s}/versions); Avro reader/writer resolution with a
default (evolution); Avro JSON encoding with apply_defaults and field_aliases; the Confluent wire
format; undecodable records counted, never an error; and a join of Avro records with Protobuf
records on an int key (Avro int 7 = Protobuf int32 7)."""
import io
import json
import os
import shutil
import struct
import subprocess

import pytest

from conftest import assert_error
from streamutil import ModuleNode, create_topic, join, produce_bin, produce_json, query

avro_schema = pytest.importorskip("avro.schema")
avro_io = pytest.importorskip("avro.io")
PROTOC = shutil.which("protoc")
pytestmark = pytest.mark.skipif(PROTOC is None, reason="protoc (protobuf-compiler) not installed")


@pytest.fixture(scope="module")
def n():
    m = ModuleNode()
    yield m.node
    m.close()


# --- encoders ------------------------------------------------------------------------------------

TXN_V1 = {"type": "record", "name": "Txn", "namespace": "shop",
          "fields": [{"name": "id", "type": "int"},
                     {"name": "user", "type": "string"},
                     {"name": "amount", "type": "double"},
                     {"name": "qty", "type": "long"},
                     {"name": "note", "type": ["null", "string"], "default": None}]}
# v2 as a reader: adds a field with a default, drops nothing
TXN_V2 = dict(TXN_V1, fields=TXN_V1["fields"] + [{"name": "region", "type": "string",
                                                  "default": "eu"}])

TXNS = [{"id": i, "user": ["ann", "bob", "cid"][i % 3], "amount": 1.5 * i, "qty": 10 ** 10 + i,
         "note": None if i % 2 else "n%d" % i} for i in range(12)]


def avro_bytes(schema_json, datum):
    sch = avro_schema.parse(json.dumps(schema_json))
    buf = io.BytesIO()
    avro_io.DatumWriter(sch).write(datum, avro_io.BinaryEncoder(buf))
    return buf.getvalue()


PROTO = """syntax = "proto3";
package shop;

message Order {
  int32 uid = 1;
  string item = 2;
  int64 cents = 3;
  repeated string tags = 4;
  Addr ship = 5;
  Kind kind = 6;
  message Addr { string city = 1; }
  enum Kind { NORMAL = 0; RUSH = 1; }
}
"""

ORDERS = [{"uid": i % 4 + 5, "item": "item%d" % i, "cents": 100 * i, "tags": ["t%d" % i, "x"],
           "city": ["NY", "SF"][i % 2], "rush": i % 3 == 0} for i in range(10)]


def order_text(o):
    return ('uid: %d item: "%s" cents: %d %s ship { city: "%s" } kind: %s'
            % (o["uid"], o["item"], o["cents"], " ".join('tags: "%s"' % t for t in o["tags"]),
               o["city"], "RUSH" if o["rush"] else "NORMAL"))


@pytest.fixture(scope="module")
def protodir(tmp_path_factory):
    d = tmp_path_factory.mktemp("proto")
    (d / "order.proto").write_text(PROTO)
    return str(d)


def protoc_encode(protodir, text):
    r = subprocess.run([PROTOC, "-I", protodir, "--encode=shop.Order", "order.proto"],
                       input=text.encode(), capture_output=True, check=True, cwd=protodir)
    return r.stdout


def protoc_decode(protodir, data):
    r = subprocess.run([PROTOC, "-I", protodir, "--decode=shop.Order", "order.proto"],
                       input=data, capture_output=True, check=True, cwd=protodir)
    return r.stdout.decode()


def register(n, subject, schema, schema_type=None):
    body = {"schema": schema if isinstance(schema, str) else json.dumps(schema)}
    if schema_type:
        body["schemaType"] = schema_type
    r = n.post("/subjects/%s/versions" % subject, json=body)
    assert r.status_code == 200, r.text
    return r.json()["id"]


def confluent(schema_id, payload, proto=False):
    return b"\x00" + struct.pack(">I", schema_id) + (b"\x00" if proto else b"") + payload


# --- Avro ----------------------------------------------------------------------------------------

def avro_expect_rows():
    return [{"id": t["id"], "user": t["user"], "qty": t["qty"], "note": t["note"]}
            for t in TXNS if t["amount"] >= 6]


def test_avro_binary_inline_and_registered(n):
    create_topic(n, "avro", 1)
    produce_bin(n, "avro", [avro_bytes(TXN_V1, t) for t in TXNS])
    req = {"source": {"topic": "avro", "partition": 0, "offset": 0,
                      "decode": {"type": "avro", "schema_text": json.dumps(TXN_V1)}},
           "filter": [{"field": "amount", "op": "ge", "value": 6}],
           "aggregate": {"group_by": ["user"], "measures": [
               {"op": "count"}, {"op": "sum", "field": "qty"}, {"op": "max", "field": "amount"}]},
           "transform": {"left_fields": ["id", "user", "qty", "note"], "emit_rows": 100}}
    b = query(n, req)
    assert b["rows"] == avro_expect_rows()
    want = {}
    for t in TXNS:
        if t["amount"] >= 6:
            w = want.setdefault(t["user"], [0, 0, None])
            w[0] += 1
            w[1] += t["qty"]
            w[2] = t["amount"] if w[2] is None else max(w[2], t["amount"])
    assert {a["group"]["user"]: [a["count"], a["sum_qty"], a["max_amount"]]
            for a in b["aggregates"]} == want
    assert b["stats"]["decoded"] == 12 and b["stats"]["skipped_parse"] == 0
    # binary by explicit encoding, and the whole record as its JSON mapping without projection
    b = query(n, {"source": {"topic": "avro", "partition": 0, "offset": 3, "limit": 1,
                             "decode": {"type": "avro", "encoding": "binary",
                                        "schema_text": json.dumps(TXN_V1)}}})
    assert b["rows"] == [TXNS[3]]
    # the same through the registry: subject (latest), subject + version, schema id
    sid = register(n, "txn-value", TXN_V1)
    for dec in ({"type": "avro", "subject": "txn-value"},
                {"type": "avro", "subject": "txn-value", "version": 1},
                {"type": "avro", "schema_id": sid}):
        req["source"]["decode"] = dec
        assert query(n, req)["rows"] == avro_expect_rows(), dec


def test_avro_reader_schema_with_a_default(n):
    create_topic(n, "avro-ev", 1)
    produce_bin(n, "avro-ev", [avro_bytes(TXN_V1, t) for t in TXNS[:4]])
    base = {"source": {"topic": "avro-ev", "partition": 0, "offset": 0},
            "transform": {"left_fields": ["id", "region"], "emit_rows": 10}}
    b = query(n, dict(base, source=dict(base["source"], decode={
        "type": "avro", "schema_text": json.dumps(TXN_V1),
        "reader_schema_text": json.dumps(TXN_V2)})))
    assert b["rows"] == [{"id": i, "region": "eu"} for i in range(4)]
    # the writer's schema without the field: region is missing (null)
    b = query(n, dict(base, source=dict(base["source"], decode={
        "type": "avro", "schema_text": json.dumps(TXN_V1)})))
    assert b["rows"] == [{"id": i, "region": None} for i in range(4)]
    # both versions registered under one subject: writer = version 1, reader = the latest
    register(n, "txn-ev", TXN_V1)
    register(n, "txn-ev", TXN_V2)
    b = query(n, dict(base, source=dict(base["source"], decode={
        "type": "avro", "subject": "txn-ev", "version": 1, "reader_subject": "txn-ev"}),
        filter=[{"field": "region", "op": "eq", "value": "eu"}]))
    assert b["rows"] == [{"id": i, "region": "eu"} for i in range(4)]


def test_avro_json_encoding_with_defaults_and_aliases(n):
    schema = {"type": "record", "name": "Pay", "fields": [
        {"name": "txn_id", "type": "string"},
        {"name": "amount", "type": "long"},
        {"name": "currency", "type": "string", "default": "EUR"}]}
    create_topic(n, "avro-json", 1)
    produce_json(n, "avro-json", [{"txnId": "a1", "amount": 5},
                                  {"transactionId": "a2", "amount": 7, "currency": "USD"},
                                  {"txn_id": "a3", "amount": 9}])
    dec = {"type": "avro", "encoding": "json", "schema_text": json.dumps(schema),
           "apply_defaults": True, "field_aliases": {"txn_id": ["txnId", "transactionId"]}}
    b = query(n, {"source": {"topic": "avro-json", "partition": 0, "offset": 0, "decode": dec},
                  "transform": {"left_fields": ["txn_id", "amount", "currency"],
                                "emit_rows": 10}})
    assert b["rows"] == [{"txn_id": "a1", "amount": 5, "currency": "EUR"},
                         {"txn_id": "a2", "amount": 7, "currency": "USD"},
                         {"txn_id": "a3", "amount": 9, "currency": "EUR"}]
    b = query(n, {"source": {"topic": "avro-json", "partition": 0, "offset": 0, "decode": dec},
                  "aggregate": {"group_by": ["currency"], "measures": [
                      {"op": "sum", "field": "amount", "as": "total"}]}})
    assert [(a["key"], a["total"]) for a in b["aggregates"]] == [("currency=EUR", 14),
                                                                 ("currency=USD", 7)]


# --- Protobuf ------------------------------------------------------------------------------------

def proto_expect(o):
    return {"uid": o["uid"], "item": o["item"], "city": o["city"]}


def test_protobuf_binary_inline_and_registered(n, protodir):
    create_topic(n, "pb", 1)
    values = [protoc_encode(protodir, order_text(o)) for o in ORDERS]
    # the fixtures are what protoc says they are
    assert 'item: "item3"' in protoc_decode(protodir, values[3])
    produce_bin(n, "pb", values)
    req = {"source": {"topic": "pb", "partition": 0, "offset": 0,
                      "decode": {"type": "proto", "schema_text": PROTO, "message": "shop.Order"}},
           "filter": [{"field": "cents", "op": "ge", "value": 300},
                      {"field": "tags", "op": "contains", "value": "x"}],
           "aggregate": {"group_by": ["ship.city"], "measures": [
               {"op": "count"}, {"op": "sum", "field": "cents", "as": "cents"}]},
           "transform": {"left_fields": ["uid", "item", "ship.city"], "emit_rows": 100}}
    b = query(n, req)
    sel = [o for o in ORDERS if o["cents"] >= 300]
    assert [{"uid": r["uid"], "item": r["item"], "city": r["ship.city"]} for r in b["rows"]] == \
        [proto_expect(o) for o in sel]
    want = {}
    for o in sel:
        w = want.setdefault(o["city"], [0, 0])
        w[0] += 1
        w[1] += o["cents"]
    assert {a["group"]["ship.city"]: [a["count"], a["cents"]] for a in b["aggregates"]} == want
    # enums by name, repeated fields as arrays (proto3 JSON mapping), the message by short name
    b = query(n, {"source": {"topic": "pb", "partition": 0, "offset": 0, "limit": 1,
                             "decode": {"type": "protobuf", "schema_text": PROTO,
                                        "message": "Order"}},
                  "transform": {"left_fields": ["kind", "tags", "tags[1]"], "emit_rows": 1}})
    assert b["rows"] == [{"kind": "RUSH", "tags": ["t0", "x"], "tags[1]": "x"}]
    sid = register(n, "orders-value", PROTO, "PROTOBUF")
    for dec in ({"type": "proto", "subject": "orders-value", "message": "shop.Order"},
                {"type": "proto", "schema_id": sid}):
        req["source"]["decode"] = dec
        b = query(n, req)
        assert [r["item"] for r in b["rows"]] == [o["item"] for o in sel], dec


# --- Confluent wire format and undecodable records ----------------------------------------------

def test_confluent_wire_format_and_undecodable_records(n, protodir):
    aid = register(n, "cf-avro-value", TXN_V1)
    pid = register(n, "cf-proto-value", PROTO, "PROTOBUF")
    create_topic(n, "cf", 1)
    vals = [confluent(aid, avro_bytes(TXN_V1, TXNS[i])) for i in range(3)]
    vals += [confluent(pid, protoc_encode(protodir, order_text(ORDERS[i])), proto=True)
             for i in range(3)]
    bad = [b"\x00\x00\x00\xff\xf0abc",           # an id that is not registered
           b"\x07garbage",                        # not the wire format
           confluent(aid, b"\xff\xff\xff"),       # truncated Avro
           b"\x01" + struct.pack(">I", aid) + b"x"]  # magic 1 (GUID framing): rejected
    produce_bin(n, "cf", vals + bad)
    b = query(n, {"source": {"topic": "cf", "partition": 0, "offset": 0,
                             "decode": {"type": "confluent"}},
                  "transform": {"left_fields": ["id", "user", "item", "uid"], "emit_rows": 100}})
    assert b["rows"] == [{"id": i, "user": TXNS[i]["user"], "item": None, "uid": None}
                         for i in range(3)] + \
        [{"id": None, "user": None, "item": ORDERS[i]["item"], "uid": ORDERS[i]["uid"]}
         for i in range(3)]
    st = b["stats"]
    assert st["scanned"] == 10 and st["decoded"] == 6, st
    # records that do not decode are counted, never an error and never silently dropped; bytes
    # that are not this format count as skipped_parse (docs/STREAM.md "Stats"; skipped_decode is
    # for a valid value that is not an object/message)
    assert st["skipped_parse"] == 4 and st["skipped_decode"] == 0, st
    assert st["first_skipped"]["offset"] == 6, st
    assert "schema id" in st["first_skipped"]["reason"], st
    # "encoding":"confluent" on an avro decoder is the same thing
    b = query(n, {"source": {"topic": "cf", "partition": 0, "offset": 0, "limit": 3,
                             "decode": {"type": "avro", "encoding": "confluent"}},
                  "aggregate": {"group_by": [], "measures": [{"op": "sum", "field": "id"}]}})
    assert b["aggregates"][0]["sum_id"] == 3
    # an inline Avro decoder over non-Avro bytes: counted, 200
    b = query(n, {"source": {"topic": "cf", "partition": 0, "offset": 7,
                             "decode": {"type": "avro", "schema_text": json.dumps(TXN_V1)}}})
    assert b["rows"] == [] and b["stats"]["scanned"] == 3
    assert b["stats"]["skipped_parse"] == 3 and b["stats"]["decoded"] == 0, b["stats"]
    # a join side that does not decode counts it as undecodable
    create_topic(n, "cf-r", 1)
    produce_bin(n, "cf-r", [avro_bytes(TXN_V1, TXNS[1]), b"\xff"])
    j = join(n, {"left": {"topic": "cf-r", "partition": 0, "offset": 0,
                          "decode": {"type": "avro", "schema_text": json.dumps(TXN_V1)}},
                 "right": {"topic": "cf-r", "partition": 0, "offset": 0,
                           "decode": {"type": "avro", "schema_text": json.dumps(TXN_V1)}},
                 "on": {"left_key": "id", "right_key": "id"}, "window": {"size_ms": 0}})
    assert len(j["rows"]) == 1 and j["stats"]["left"]["undecodable"] == 1


def test_decode_errors_name_the_path(n):
    create_topic(n, "derr", 1)
    src = {"topic": "derr", "partition": 0}
    cases = [({"type": "xml"}, "/source/decode/type"),
             ({"type": "avro"}, "/source/decode"),
             ({"type": "avro", "schema_text": "{\"type\":\"record\""},
              "/source/decode/schema_text"),
             ({"type": "avro", "schema_text": json.dumps(TXN_V1), "encoding": "xml"},
              "/source/decode/encoding"),
             ({"type": "proto", "schema_text": PROTO, "message": "Nope"},
              "/source/decode/message"),
             ({"type": "avro", "schema_id": 0}, "/source/decode/schema_id"),
             ({"type": "avro", "field_aliases": ["x"], "schema_text": json.dumps(TXN_V1)},
              "/source/decode/field_aliases")]
    for dec, path in cases:
        r = n.post("/broker/query", json={"source": dict(src, decode=dec)})
        body = assert_error(r, 422, extra=("path",))
        assert body["path"] == path, (dec, body)
    r = n.post("/broker/query", json={"source": dict(src, decode={"type": "avro",
                                                                  "subject": "no-such"})})
    assert 400 <= r.status_code < 500, r.text
    assert r.json()["path"] == "/source/decode/subject", r.text


# --- the cross-format join ----------------------------------------------------------------------

def test_cross_format_join_avro_int_equals_protobuf_int32(n, protodir):
    user = {"type": "record", "name": "User", "fields": [{"name": "uid", "type": "int"},
                                                          {"name": "name", "type": "string"}]}
    create_topic(n, "x-users", 1)
    create_topic(n, "x-orders", 1)
    users = [{"uid": u, "name": "u%d" % u} for u in (5, 6, 7, 42)]
    produce_bin(n, "x-users", [avro_bytes(user, u) for u in users])
    produce_bin(n, "x-orders", [protoc_encode(protodir, order_text(o)) for o in ORDERS])
    register(n, "x-orders-value", PROTO, "PROTOBUF")
    b = join(n, {"left": {"topic": "x-users", "partition": 0, "offset": 0,
                          "decode": {"type": "avro", "schema_text": json.dumps(user)}},
                 "right": {"topic": "x-orders", "partition": 0, "offset": 0,
                           "decode": {"type": "proto", "subject": "x-orders-value",
                                      "message": "shop.Order"}},
                 "on": {"left_key": "uid", "right_key": "uid"}, "join": {"type": "full"},
                 "window": {"size_ms": 60000},
                 "emit": {"left_fields": ["name"], "right_fields": ["item"], "max_rows": 1000}})
    got = sorted((r["key"], (r["left"] or {}).get("name"), (r["right"] or {}).get("item"))
                 for r in b["rows"])
    uids = {u["uid"] for u in users}
    want = sorted([(str(o["uid"]), "u%d" % o["uid"] if o["uid"] in uids else None, o["item"])
                   for o in ORDERS] + [("42", "u42", None)])
    assert ("8", None, "item3") in want  # an order without a user: a right outer row
    assert got == want
    assert [r for r in got if r[0] == "7"] == [("7", "u7", "item2"), ("7", "u7", "item6")]
    assert b["stats"]["left"]["undecodable"] == 0 and b["stats"]["right"]["undecodable"] == 0
