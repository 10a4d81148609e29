/* join.h -- the windowed stream-stream join engine behind POST /broker/join.
 *
 * What it owns: the join state of ONE bounded call -- copies of the records the host fed (key,
 * times, value bytes) and the rows it decides. It does no I/O, reads no clock and takes no lock:
 * the host (the HTTP handler, a test, a bench) reads the two sides' partitions and feeds records;
 * join_finish() says which rows the call emits and where each side must resume. Semantics in full:
 * docs/STREAM.md "Joins". In short:
 *
 *   clock(x)  = x's record timestamp (the log's append time; non-decreasing per partition)
 *   t(x)      = x's event time: the record timestamp, or an integer payload field (ms)
 *   late      : t(x) < clock(x) - allowed_lateness_ms (excluded from every row, counted)
 *   pair      : l, r not late, keys equal and not null, |t(l) - t(r)| <= size_ms
 *   closed(x) : every record of the other side that could pair with x has been read: the other
 *               side's read reached its log end, or its last read clock > t(x) + size + lateness
 *   consumed  : the longest prefix of each side's new records that are closed and whose partners
 *               are all consumed too (a fixpoint); only consumed records yield rows, and the
 *               side's next offset is the first record not consumed (re-read by the next call)
 *
 * Because every consumed record's whole partner set is consumed in the same call, a pair never
 * straddles two calls, so rows do not depend on where calls were cut: committing next_offsets and
 * calling again yields exactly the rows of one call over the whole range.
 *
 * Protocol (the host, in order; docs/STREAM.md "Joins: the handler protocol"):
 *   1. join_new(spec) -> j.
 *   2. For each side, from the committed offset C: join_feed(j, side, rec, JOIN_NEW) for records in
 *      offset order (the two sides may be interleaved in any way), stopping at the side's limit, at
 *      the log end, or when join_feed returns ERR_QUERY_LIMIT (state full: that record was not
 *      taken; stop reading BOTH sides).
 *   3. Lookback (late detection after an earlier call closed windows at the log end): for each side
 *      s with join_lookback_from_ms(j, s, &from) true, feed with JOIN_LOOKBACK the records of s
 *      before C whose clock >= from (scan backward from C; at most spec.lookback_max records).
 *   4. join_finish(j, ends, out, &res): rows appended to out as JSON objects separated by commas
 *      (the host wraps them in "rows":[ ... ]); res.next_offset[s] is what the client commits.
 *   5. join_free(j).
 * A side with no new records still calls nothing in step 2; its `ends` entry says where it stood.
 *
 * Ownership: join_feed copies what it keeps; the srec is borrowed for the call only. The spec's
 * paths and formats are borrowed and must outlive j. Rows are written to the caller's sbuf.
 * Thread safety: one struct join per call, used by one thread.
 */
#ifndef AYDER_STREAM_JOIN_H
#define AYDER_STREAM_JOIN_H

#include "base/buf.h"
#include "stream/fmt/fmt.h"
#include "stream/record.h"
#include "stream/value.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define JOIN_KEYS_MAX 8
#define JOIN_FIELDS_MAX 64

/* Defaults and hard caps (docs/STREAM.md "Joins: limits"). */
#define JOIN_STATE_RECORDS_DEFAULT 1000000u
#define JOIN_STATE_BYTES_DEFAULT (256u << 20)
#define JOIN_PAIRS_DEFAULT 4000000u
#define JOIN_MAX_ROWS_DEFAULT 200u
#define JOIN_RESPONSE_BYTES_DEFAULT (8u << 20)
#define JOIN_LOOKBACK_DEFAULT 100000u

enum join_type { JOIN_INNER = 0, JOIN_LEFT, JOIN_RIGHT, JOIN_FULL };
enum join_missing { JOIN_MISSING_NULL = 0, JOIN_MISSING_EMPTY };
enum { JOIN_L = 0, JOIN_R = 1 };
enum join_feed_kind { JOIN_NEW = 0, JOIN_LOOKBACK = 1 };

/* One field reference: a payload path, or record metadata ($key, $timestamp_ms, $offset, ...). */
struct join_field {
    const char *name; /* as the client wrote it (used as the member name in emitted objects) */
    uint32_t name_len;
    enum smeta meta;      /* SMETA_NONE: a payload path */
    struct slice header;  /* for SMETA_HEADER */
    struct spath path;    /* for SMETA_NONE */
};

struct join_side_spec {
    const struct sfmt *fmt;                  /* decoder of this side's values (borrowed) */
    struct join_field keys[JOIN_KEYS_MAX];   /* composite key, compared component-wise by value */
    uint32_t nkeys;                          /* >= 1 */
    bool has_time_field;                     /* false: t(x) = record timestamp */
    struct join_field time_field;            /* integer milliseconds (an integral double is ok) */
    struct join_field fields[JOIN_FIELDS_MAX]; /* emit.<side>_fields; none = the whole record */
    uint32_t nfields;
};

struct join_spec {
    enum join_type type;
    int64_t size_ms;             /* >= 0 */
    int64_t allowed_lateness_ms; /* >= 0 */
    bool dedupe_once;
    enum join_missing missing_as;
    struct join_side_spec side[2];
    /* Limits; 0 = the default. */
    uint64_t max_state_records;  /* records held (both sides, new + lookback) */
    uint64_t max_state_bytes;    /* bytes copied into the state */
    uint64_t max_pairs;          /* candidate pairs among the records read */
    uint64_t max_rows;           /* rows in one response */
    uint64_t max_response_bytes; /* bytes of rows in one response */
    uint64_t lookback_max;       /* lookback records per side */
};

/* Where a side stood when the host stopped feeding it. */
struct join_end {
    uint64_t from_offset; /* the committed offset C the side was read from */
    uint64_t next_offset; /* the offset after the last record fed as JOIN_NEW (C if none) */
    bool at_log_end;      /* next_offset is the side's high watermark at read time */
};

struct join_side_stats {
    uint64_t read;        /* new records fed */
    uint64_t consumed;    /* new records consumed (next_offset - from_offset) */
    uint64_t reread;      /* read but not consumed: the next call reads them again */
    uint64_t lookback;    /* lookback records fed */
    uint64_t outer;       /* outer rows emitted for this side */
    uint64_t late;        /* consumed records excluded as late (both kinds below) */
    uint64_t late_after_close; /* of which: matched a record whose window an earlier call closed */
    uint64_t null_key;    /* consumed records with a null/missing key component */
    uint64_t untimed;     /* consumed records whose time field is missing or not an integer */
    uint64_t undecodable; /* consumed records the format rejected (no rows, counted) */
    uint64_t clock_regressions; /* record timestamps below an earlier one of the same side */
};

struct join_result {
    uint64_t next_offset[2];
    uint64_t rows, pairs;
    struct join_side_stats side[2];
    bool has_watermark;
    int64_t watermark_ms;        /* min over sides not at log end of (last clock - lateness) */
    uint64_t state_records_peak, state_bytes_peak;
    bool cut_by_rows;            /* max_rows / max_response_bytes moved next_offsets back */
    const char *limit;           /* on ERR_QUERY_LIMIT: the name of the limit ("max_rows", ...) */
};

struct join;

/* Fill f from a field name as the client wrote it: "$key", "$timestamp_ms", ... or a payload path
 * (value.h syntax). name must outlive f. ERR_INVALID for a bad path or unknown '$' name. */
int join_field_parse(struct join_field *f, const char *name, size_t len);

/* Validate the spec and allocate. ERR_INVALID (bad spec), ERR_NOMEM. */
int join_new(const struct join_spec *spec, struct join **out);
void join_free(struct join *j);

/* Feed one record of side s. JOIN_NEW records of a side must come in increasing offset order.
 * Returns 0; ERR_QUERY_LIMIT when the state is full (max_state_records / max_state_bytes /
 * lookback_max: the record was NOT taken and the host stops reading); ERR_INVALID for an offset
 * out of order; ERR_NOMEM. A record whose value does not decode is kept and counted (undecodable),
 * never an error. */
int join_feed(struct join *j, int s, const struct srec *rec, enum join_feed_kind kind);

/* After the new records of both sides are fed: true when side s needs a lookback, with *from_ms
 * the lowest clock (record timestamp) of the records to re-read from before its committed offset. */
bool join_lookback_from_ms(const struct join *j, int s, int64_t *from_ms);

/* Decide the call. Appends the rows to out (comma-separated JSON objects) and fills res. Returns
 * 0; ERR_QUERY_LIMIT (res->limit names it: max_pairs, or max_rows / max_response_bytes when not
 * even one record could be consumed within them, or max_state_records / max_state_bytes when the
 * state filled before any record could be consumed); ERR_NOMEM. On error out->len is restored.
 * Call at most once. */
int join_finish(struct join *j, const struct join_end ends[2], struct sbuf *out,
                struct join_result *res);

const char *join_type_name(enum join_type t);

#endif
