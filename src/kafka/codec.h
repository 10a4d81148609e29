/* codec.h -- the Kafka wire protocol codec: request frames in, response bytes out. Pure: no I/O,
 * no clock, no libuv, no broker. The listener (kafka/server.h) owns the sockets and the broker
 * calls; this module only turns bytes into structs and structs into bytes.
 *
 * Framing (every request and response): int32 size, then size bytes. A request starts with the
 * request header v1: api_key int16, api_version int16, correlation_id int32, client_id nullable
 * string. Responses start with header v0: correlation_id. Only non-flexible versions are spoken
 * (no compact strings, no tagged fields), which is why the version table stops where the
 * protocol's flexible versions begin (docs/KAFKA.md); an ApiVersions request of a newer
 * (flexible) version is still recognised by its header so it can be answered UNSUPPORTED_VERSION
 * with our table, and the client downgrades.
 *
 * Strictness (every one an error, never an assertion):
 *  1. A frame shorter than its header, a negative or out-of-range length, an array count larger
 *     than the bytes left could hold, a string or bytes field running past the frame: ERR_INVALID.
 *  2. Bytes left over after the last field of a request: ERR_INVALID (a version mix-up would
 *     otherwise be read as garbage values).
 *  3. An api_key/api_version outside kafka_api_table: ERR_UNSUPPORTED, with the header decoded
 *     so the caller can answer it.
 *  4. Every array is bounded by KAFKA_ARRAY_MAX and every allocation comes from the caller's
 *     arena (which has a cap): a decode never allocates outside it.
 *
 * Ownership: every slice in a decoded request points into the caller's frame bytes; arrays live
 * in the caller's arena. Both must outlive the struct kafka_request.
 */
#ifndef AYDER_KAFKA_CODEC_H
#define AYDER_KAFKA_CODEC_H

#include "base/arena.h"
#include "base/buf.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A frame larger than this (the size prefix) closes the connection: one RecordBatch may be up to
 * 64 MiB (RECBATCH_MAX_BYTES), plus room for the request around it. */
#define KAFKA_FRAME_MAX ((64u << 20) + (1u << 20))
#define KAFKA_ARRAY_MAX 100000

enum kafka_api {
    KAFKA_PRODUCE = 0,
    KAFKA_FETCH = 1,
    KAFKA_LIST_OFFSETS = 2,
    KAFKA_METADATA = 3,
    KAFKA_OFFSET_COMMIT = 8,
    KAFKA_OFFSET_FETCH = 9,
    KAFKA_FIND_COORDINATOR = 10,
    KAFKA_JOIN_GROUP = 11,
    KAFKA_HEARTBEAT = 12,
    KAFKA_LEAVE_GROUP = 13,
    KAFKA_SYNC_GROUP = 14,
    KAFKA_API_VERSIONS = 18,
    KAFKA_CREATE_TOPICS = 19,
    KAFKA_DELETE_TOPICS = 20,
};

/* Protocol error codes we answer with. */
enum kafka_error {
    KERR_NONE = 0,
    KERR_UNKNOWN_SERVER_ERROR = -1,
    KERR_OFFSET_OUT_OF_RANGE = 1,
    KERR_CORRUPT_MESSAGE = 2,
    KERR_UNKNOWN_TOPIC_OR_PARTITION = 3,
    KERR_INVALID_FETCH_SIZE = 4,
    KERR_LEADER_NOT_AVAILABLE = 5,
    KERR_NOT_LEADER_FOR_PARTITION = 6,
    KERR_REQUEST_TIMED_OUT = 7,
    KERR_MESSAGE_TOO_LARGE = 10,
    KERR_COORDINATOR_NOT_AVAILABLE = 15,
    KERR_NOT_COORDINATOR = 16,
    KERR_INVALID_TOPIC_EXCEPTION = 17,
    KERR_RECORD_LIST_TOO_LARGE = 18,
    KERR_NOT_ENOUGH_REPLICAS = 19,
    KERR_INVALID_REQUIRED_ACKS = 21,
    KERR_ILLEGAL_GENERATION = 22,
    KERR_INCONSISTENT_GROUP_PROTOCOL = 23,
    KERR_INVALID_GROUP_ID = 24,
    KERR_UNKNOWN_MEMBER_ID = 25,
    KERR_INVALID_SESSION_TIMEOUT = 26,
    KERR_REBALANCE_IN_PROGRESS = 27,
    KERR_TOPIC_AUTHORIZATION_FAILED = 29,
    KERR_UNSUPPORTED_VERSION = 35,
    KERR_TOPIC_ALREADY_EXISTS = 36,
    KERR_INVALID_PARTITIONS = 37,
    KERR_INVALID_REPLICATION_FACTOR = 38,
    KERR_INVALID_REQUEST = 42,
    KERR_UNSUPPORTED_FOR_MESSAGE_FORMAT = 43,
    KERR_POLICY_VIOLATION = 44,
    KERR_UNSUPPORTED_COMPRESSION_TYPE = 76,
};

/* The versions we speak, per API key (ApiVersions answers with this table). */
struct kafka_api_range {
    int16_t key, min, max;
};
extern const struct kafka_api_range kafka_api_table[];
extern const size_t kafka_api_table_len;
/* NULL if the key is not served at all. */
const struct kafka_api_range *kafka_api_find(int16_t key);

struct kafka_header {
    int16_t api_key, api_version;
    int32_t correlation_id;
    struct slice client_id; /* empty if null */
};

/* A partition entry of any request: which fields are set depends on the API. */
struct kafka_part {
    int32_t partition;
    int64_t offset;      /* Fetch fetch_offset, OffsetCommit committed_offset */
    int64_t timestamp;   /* ListOffsets timestamp (-1 latest, -2 earliest) */
    int32_t max_bytes;   /* Fetch partition_max_bytes */
    struct slice data;   /* Produce records, OffsetCommit metadata */
    bool data_null;
};

/* A topic entry (or, for groups, a protocol / a member assignment: name + data). */
struct kafka_topic {
    struct slice name;
    int32_t num_partitions;     /* CreateTopics */
    int16_t replication_factor; /* CreateTopics */
    struct slice data;          /* JoinGroup protocol metadata, SyncGroup assignment */
    uint32_t nparts;
    struct kafka_part *parts;
};

struct kafka_request {
    struct kafka_header h;
    /* Produce */
    int16_t acks;
    struct slice transactional_id;
    bool transactional;
    int32_t timeout_ms;         /* Produce, CreateTopics, DeleteTopics */
    /* Fetch */
    int32_t max_wait_ms, min_bytes, max_bytes;
    int8_t isolation_level;
    int32_t session_id, session_epoch;
    /* Metadata */
    bool allow_auto_create;
    /* groups: FindCoordinator key, Join/Sync/Heartbeat/Leave/OffsetCommit/OffsetFetch group */
    struct slice group_id, member_id, protocol_type, group_instance_id;
    int8_t key_type;
    int32_t generation_id;
    int32_t session_timeout_ms, rebalance_timeout_ms;
    bool validate_only;
    /* topics (Produce, Fetch, ListOffsets, Metadata, OffsetCommit/Fetch, Create/DeleteTopics) or
     * protocols (JoinGroup) or assignments (SyncGroup). topics_null: a null array (Metadata v1+ /
     * OffsetFetch v2+: "all"). */
    bool topics_null;
    uint32_t ntopics;
    struct kafka_topic *topics;
};

/* Decode the request header only (for answering a request whose body we do not speak). frame is
 * the bytes after the size prefix. 0 or ERR_INVALID; *body = the bytes after the header (v1). */
int kafka_header_decode(struct slice frame, struct kafka_header *h, struct slice *body);

/* Decode a whole request. 0, ERR_INVALID (malformed: close the connection), ERR_NOMEM (arena cap)
 * or ERR_UNSUPPORTED (api key/version not in the table; r->h is filled). */
int kafka_request_decode(struct slice frame, struct arena *a, struct kafka_request *r);

/* --- response writing (big-endian primitives onto an sbuf) ------------------------------------ */
/* Start a response frame: size placeholder + correlation id. Returns the frame's start. */
size_t kafka_resp_begin(struct sbuf *b, int32_t correlation_id);
/* Patch the size of the frame started at `start`. */
void kafka_resp_end(struct sbuf *b, size_t start);
void kw_i8(struct sbuf *b, int8_t v);
void kw_i16(struct sbuf *b, int16_t v);
void kw_i32(struct sbuf *b, int32_t v);
void kw_i64(struct sbuf *b, int64_t v);
void kw_str(struct sbuf *b, struct slice s);       /* int16 length + bytes */
void kw_cstr(struct sbuf *b, const char *s);
void kw_null_str(struct sbuf *b);                  /* length -1 */
void kw_bytes(struct sbuf *b, struct slice s);     /* int32 length + bytes */
void kw_null_bytes(struct sbuf *b);

/* The ApiVersions response body (v0..v2) with our table and the given error. */
void kafka_write_api_versions(struct sbuf *b, int16_t version, int16_t error);

/* Validate a Produce partition's record set: exactly one RecordBatch v2 (magic 2), CRC-32C
 * correct, records well formed. 0 and *count = records; else the Kafka error to answer:
 * KERR_UNSUPPORTED_COMPRESSION_TYPE (compressed), KERR_UNSUPPORTED_FOR_MESSAGE_FORMAT (magic < 2,
 * transactional/control batches, more than one batch, offset gaps), KERR_CORRUPT_MESSAGE. */
int kafka_check_batch(struct slice records, uint32_t *count);

#endif
