/* entry.h -- journal entry types and their payload codec (the replicated state machine's input).
 *
 * Every payload starts with a fixed 8-byte little-endian timestamp (the sequencer's wall clock,
 * ms). Apply decides everything time-dependent (record timestamps, TTL, idempotency window,
 * retention by age) from it, never from the applying node's clock, so the same journal gives the
 * same state on every node and on every replay.
 *
 * PRODUCE is laid out so the sequencer (core thread) can fill in its decisions in place without
 * copying the records: fixed-width fields first, then the topic, the idempotency key and the
 * records blob written by the HTTP worker. Byte layouts: docs/DISK_FORMAT.md "Journal payloads".
 */
#ifndef AYDER_BROKER_ENTRY_H
#define AYDER_BROKER_ENTRY_H

#include "base/buf.h"
#include "broker/plog.h"

#include <stdint.h>

enum entry_type {
    ENTRY_NOOP = 0,
    ENTRY_TOPIC_CREATE = 1,
    ENTRY_TOPIC_DELETE = 2,
    ENTRY_PRODUCE = 3,
    ENTRY_COMMIT = 4,
    ENTRY_DELETE_BEFORE = 5,
    ENTRY_RETENTION = 6,
    ENTRY_KV_PUT = 7,
    ENTRY_KV_DEL = 8,
    ENTRY_KV_EXPIRE = 9, /* TTL sweep: remove the key if its version is still `expected` */
    ENTRY_SCHEMA_REGISTER = 10, /* schema registry: register a schema under a subject */
};

#define ENTRY_NAME_MAX 255
#define ENTRY_IDEM_MAX 512
#define ENTRY_KEY_MAX (16u << 10)
#define ENTRY_VALUE_MAX (64u << 20)
#define ENTRY_HEADERS_MAX 64

/* PRODUCE flags */
#define PRODUCE_AUTO_CREATE 1u /* create the topic (create_partitions) if it does not exist */
#define PRODUCE_HAS_IDEM 2u
#define PRODUCE_DUPLICATE 4u   /* sequencer found the idempotency key: apply appends nothing */
#define PRODUCE_RAW_BATCH 8u   /* records = one client-encoded RecordBatch v2 (Kafka produce),
                                * count = its records; apply stores it as sent (plog_append_batch) */

/* Fixed prefix of a PRODUCE payload. */
#define PRODUCE_OFF_TS 0
#define PRODUCE_OFF_FLAGS 8
#define PRODUCE_OFF_PARTITION 9
#define PRODUCE_OFF_BASE 13
#define PRODUCE_OFF_CREATE_PARTS 21
#define PRODUCE_FIXED_BYTES 25

struct entry_produce {
    int64_t ts_ms;
    uint8_t flags;
    uint32_t partition;
    uint64_t base_offset;     /* as assigned by the sequencer */
    uint32_t create_partitions;
    struct slice topic;
    struct slice idem_key;
    uint32_t count;
    struct slice records;     /* count records: see entry_records_next */
};

/* Writer side (HTTP worker): begin a PRODUCE payload; then add records; then entry_produce_end. */
void entry_produce_begin(struct sbuf *b, int64_t ts_ms, struct slice topic, struct slice idem_key);
/* Count is written at the end as a fixed u32 placed right after the idem key. */
void entry_produce_add(struct sbuf *b, const struct plog_record *rec);
/* Finish: writes the record count into the field begin left for it. */
void entry_produce_finish(struct sbuf *b, uint32_t count);
/* A PRODUCE payload carrying one RecordBatch v2 as sent by a Kafka client (validated by the
 * caller: CRC, no compression, lastOffsetDelta == count - 1). */
void entry_produce_raw(struct sbuf *b, int64_t ts_ms, struct slice topic, struct slice batch,
                       uint32_t count);
/* Patch sequencer decisions into an encoded PRODUCE payload. */
void entry_produce_patch(uint8_t *payload, uint8_t flags, uint32_t partition, uint64_t base_offset,
                         uint32_t create_partitions);
int entry_produce_decode(struct slice payload, struct entry_produce *out);
/* Iterate records of a decoded produce: *pos starts at 0. headers: caller array of
 * ENTRY_HEADERS_MAX. Returns 1 record, 0 end, ERR_CORRUPT. */
int entry_records_next(const struct entry_produce *e, size_t *pos, struct plog_record *rec,
                       struct plog_header *headers);

struct entry_topic {
    int64_t ts_ms;
    struct slice name;
    uint32_t partitions;
};
struct entry_commit {
    int64_t ts_ms;
    struct slice topic, group;
    uint32_t partition;
    uint64_t offset;
};
struct entry_delete_before {
    int64_t ts_ms;
    struct slice topic;
    uint32_t partition;
    uint64_t before;
};
#define RETENTION_UNSET (-1)
#define RETENTION_ALL_PARTITIONS UINT32_MAX
struct entry_retention {
    int64_t ts_ms;
    struct slice topic;       /* "*" = every topic */
    uint32_t partition;       /* RETENTION_ALL_PARTITIONS = whole topic */
    int64_t ttl_ms;           /* RETENTION_UNSET = leave as is; 0 = remove */
    int64_t max_bytes;
};
#define KV_EXPECT_ANY UINT64_MAX
struct entry_kv {
    int64_t ts_ms;
    struct slice ns, key, value;
    uint64_t expected;        /* KV_EXPECT_ANY = unconditional */
    uint64_t ttl_ms;
};

/* SCHEMA_REGISTER (src/schema/registry.h applies it). type and flags are the registry's
 * (1 AVRO, 2 PROTOBUF, 3 JSON; flag 1 = a serialized FileDescriptorSet); the decoder accepts
 * only those, so apply never sees an unknown kind. canon is the identity form the HTTP worker
 * computed (the Avro Parsing Canonical Form; empty = the schema text itself), journaled so apply
 * compares bytes and never runs a parser. */
#define ENTRY_SCHEMA_SUBJECT_MAX 255
#define ENTRY_SCHEMA_TEXT_MAX (16u << 20)
#define ENTRY_SCHEMA_REFS_MAX 64
#define ENTRY_SCHEMA_REF_NAME_MAX 1024
#define ENTRY_SCHEMA_TYPE_MIN 1
#define ENTRY_SCHEMA_TYPE_MAX 3
#define ENTRY_SCHEMA_FLAGS_ALL 1u
struct entry_schema_ref {
    struct slice name, subject;
    uint32_t version;
};
struct entry_schema {
    int64_t ts_ms;
    struct slice subject;
    uint8_t type, flags;
    struct slice text, canon;
    uint32_t nrefs;
    struct entry_schema_ref refs[ENTRY_SCHEMA_REFS_MAX];
};

void entry_topic_encode(struct sbuf *b, const struct entry_topic *e);
int entry_topic_decode(struct slice p, struct entry_topic *e);
void entry_commit_encode(struct sbuf *b, const struct entry_commit *e);
int entry_commit_decode(struct slice p, struct entry_commit *e);
void entry_delete_before_encode(struct sbuf *b, const struct entry_delete_before *e);
int entry_delete_before_decode(struct slice p, struct entry_delete_before *e);
void entry_retention_encode(struct sbuf *b, const struct entry_retention *e);
int entry_retention_decode(struct slice p, struct entry_retention *e);
void entry_kv_encode(struct sbuf *b, const struct entry_kv *e);
int entry_kv_decode(struct slice p, struct entry_kv *e);
void entry_schema_encode(struct sbuf *b, const struct entry_schema *e);
int entry_schema_decode(struct slice p, struct entry_schema *e);
int64_t entry_ts(struct slice payload); /* 0 if too short */

#endif
