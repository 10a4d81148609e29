/* query.h -- the bounded query engine behind POST /broker/query: records in, rows out.
 *
 * What it owns: a compiled query plan (filter program, field table, group-by hash table, window
 * state, the rows kept for output) and all memory of one call. It does no I/O, reads no clock and
 * takes no locks: the host reads records (struct srec, stream/record.h) from the log and feeds
 * them one at a time, in the order it wants them considered. Semantics are in docs/STREAM.md.
 *
 * Protocol (the host follows it in order):
 *   1. squery_compile(req, limits, &q, &e): parse the whole request (source spec included) into a
 *      plan. A malformed request returns ERR_UNPROCESSABLE (422) and a value beyond a configured
 *      limit ERR_QUERY_LIMIT (413); e->path names the offending place ("/filter/2/op").
 *   2. squery_source(q): the parsed source spec. The host resolves topic, partitions and start
 *      offsets (the group's committed offset when `offset` is absent), may declare the partitions
 *      with squery_expect_partitions() (the watermark is the minimum over them), and reads.
 *   3. squery_feed(q, rec) for each record, at most source.limit of them. Returns 0, or a hard
 *      limit error (ERR_QUERY_LIMIT: groups, distinct values, memory, kept rows' bytes) after which
 *      the call must end with that error; e (squery_error) names the limit.
 *   4. squery_finish(q, w): write the result members "rows", "aggregates" and "stats" into the
 *      JSON object the host has opened on w (the host adds "ok", "source" and closes it). Fails
 *      with ERR_QUERY_LIMIT when the result would pass max_response_bytes.
 *   5. squery_free(q).
 *
 * Follow mode (continuous queries, "follow": true in the request; docs/STREAM.md "Continuous
 * queries"). The same compiled plan runs incrementally over an unbounded input; results are queued
 * inside q as events (rows at once, window aggregates when the watermark closes their window,
 * late records when the policy is "include", aggregate changes for queries without a window) and
 * the host pulls them out. Time is an input: the host passes its clock ("now", ms) to the calls
 * that need it; the engine never reads a clock. Protocol, after step 2 above:
 *   F1. squery_follow(q) != NULL says the request asked for follow. When the client resumes
 *       (Last-Event-ID), squery_follow_resume(q, token) first (ERR_INVALID: not a position of
 *       this query).
 *   F2. squery_follow_begin(q, parts, offsets, n, now): the partitions read and the first offset
 *       of each (the host's resolution of source.offset / the group). On return offsets[i] is where
 *       the host starts reading partition parts[i] (earlier than given when a resume must replay
 *       records still held by an open window).
 *   F3. Repeat, on every wake of the host:
 *        - squery_feed(q, rec) for records in offset order per partition (a bounded number per
 *          turn; the host must not feed while squery_pending_bytes(q) is above its buffer);
 *        - squery_caught_up(q, part, now) for each partition the host found at its log end
 *          (starts that partition's idle clock; a later feed of the partition stops it);
 *        - squery_tick(q, now): idle timeouts, the watermark, closing windows, aggregate changes;
 *        - squery_drain(q, fn, ctx): the queued events in order, until fn returns nonzero (the
 *          host's output is full; the rest stays queued for the next drain).
 *       A feed or tick that fails with ERR_QUERY_LIMIT (max_groups, max_memory_bytes) ends the
 *       follow: the host reports squery_error(q) (an "end" event) and frees q.
 *   F4. squery_follow_position(q, out) is the position after every event queued so far (for
 *       heartbeats and the end event); squery_follow_stats(q, w) writes the stats object.
 *   F5. squery_free(q). squery_finish is not used in follow mode.
 * Every event carries its position: a token that resumes the query just after that event
 * (squery_follow_resume). Event data and positions are borrowed by fn for the call only.
 *
 * Ownership: the request json_t is only borrowed during compile (every string is copied). Records
 * are borrowed during one feed call. The sfmt given with squery_set_format is borrowed and must
 * outlive q; by default records are JSON text.
 */
#ifndef AYDER_STREAM_QUERY_H
#define AYDER_STREAM_QUERY_H

#include "base/json.h"
#include "stream/fmt/fmt.h"
#include "stream/record.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

/* Per-call bounds. Zero fields take the defaults below (squery_limits_default). */
struct squery_limits {
    uint64_t max_records_scanned;  /* source.limit at most this; default 1,000,000 */
    uint32_t max_groups;           /* distinct (window, group) pairs; default 100,000 */
    uint64_t max_distinct_values;  /* all count_distinct sets together; default 1,000,000 */
    uint32_t max_rows;             /* rows in the response; default 10,000 */
    uint64_t max_response_bytes;   /* rows + aggregates + stats; default 32 MiB */
    uint64_t max_memory_bytes;     /* plan, group keys, distinct sets, kept rows; default 256 MiB */
    uint32_t max_filter_nodes;     /* conditions and groups in the filter; default 256 */
    uint32_t max_windows_per_record; /* size_ms / advance_ms of a hopping window; default 1,000 */
};
#define SQUERY_DEFAULT_LIMIT 200 /* source.limit when absent (the original's default) */
void squery_limits_default(struct squery_limits *l);

#define SQUERY_NAME_MAX 255
#define SQUERY_PARTITIONS_MAX 4096

/* The source part of the request, executed by the host. */
struct squery_source {
    char topic[SQUERY_NAME_MAX + 1];
    char group[SQUERY_NAME_MAX + 1]; /* "" when absent */
    /* partitions: "partition": n, "partitions": [n, ...], or neither (every partition) */
    bool all_partitions;
    uint32_t partition_count;
    uint32_t *partitions;
    bool has_offset;     /* "offset": first offset read (inclusive) in every partition */
    uint64_t offset;     /* when absent: the group's committed offset + 1, else the log start */
    bool has_end_offset; /* "end_offset": stop before this offset (exclusive) */
    uint64_t end_offset;
    bool has_from_ms, has_to_ms; /* "from_ms"/"to_ms": record timestamps in [from, to) */
    int64_t from_ms, to_ms;
    uint64_t limit; /* records to read in total over all partitions (default 200) */
    bool commit;    /* "commit": true (in source or at top level): commit next offsets */
};

struct squery;

int squery_compile(json_t *req, const struct squery_limits *lim, struct squery **out,
                   struct serr *e);
const struct squery_source *squery_source(const struct squery *q);
/* Decode record values with f instead of JSON text (f is borrowed). */
void squery_set_format(struct squery *q, const struct sfmt *f);
/* The partitions this call reads: the watermark is the minimum over all of them of (max event
 * time seen - allowed lateness), so a partition not yet read holds it back. Without this call the
 * minimum is over the partitions fed so far. ERR_NOMEM / ERR_QUERY_LIMIT. */
int squery_expect_partitions(struct squery *q, const uint32_t *parts, size_t n);
int squery_feed(struct squery *q, const struct srec *r);
int squery_finish(struct squery *q, struct jw *w);
/* ---- Follow mode (see F1-F5 above) ---- */

#define SQUERY_IDLE_TIMEOUT_MS_DEFAULT 10000 /* "follow": {"idle_timeout_ms"} */
#define SQUERY_HEARTBEAT_MS_DEFAULT 15000    /* "follow": {"heartbeat_ms"}, used by the host */

struct squery_follow_opts {
    int64_t idle_timeout_ms; /* 0: partitions never become idle */
    int64_t heartbeat_ms;
    bool limit_given; /* source.limit was given: the follow ends after that many records */
};

enum squery_event_type {
    SQUERY_EV_ROW,       /* a matching record's row (projected, or the record itself) */
    SQUERY_EV_AGGREGATE, /* an aggregate row: a closed window, or a group's new value (no window) */
    SQUERY_EV_LATE,      /* {"windows":[{"window_start_ms","window_end_ms"}...],"row":...} */
};
struct squery_event {
    enum squery_event_type type;
    struct slice data;     /* one JSON object */
    struct slice position; /* resume token: printable ASCII, no spaces */
};
typedef int (*squery_emit_fn)(void *ctx, const struct squery_event *ev);

/* NULL for a bounded query; else the follow options of the request. */
const struct squery_follow_opts *squery_follow(const struct squery *q);
/* Resume after the event whose position is tok (before squery_follow_begin). ERR_INVALID when the
 * token is malformed or names a partition the query does not read. */
int squery_follow_resume(struct squery *q, const char *tok, size_t len);
int squery_follow_begin(struct squery *q, const uint32_t *parts, uint64_t *offsets, size_t n,
                        int64_t now_ms);
void squery_caught_up(struct squery *q, uint32_t part, int64_t now_ms);
int squery_tick(struct squery *q, int64_t now_ms);
/* Calls fn for queued events in order. fn returns 0 when it took the event, nonzero when it
 * cannot take it now (the host's output is full): the event stays queued and draining stops.
 * Returns the number of events taken. */
size_t squery_drain(struct squery *q, squery_emit_fn fn, void *ctx);
size_t squery_pending_bytes(const struct squery *q);
size_t squery_pending_events(const struct squery *q);
/* The next offset of partition part (after the last record fed, or the start); false if unknown. */
bool squery_follow_next(const struct squery *q, uint32_t part, uint64_t *next);
int squery_follow_position(struct squery *q, struct sbuf *out);
void squery_follow_stats(const struct squery *q, struct jw *w);

/* The error detail of the last failed feed/finish (path = the limit's name). */
const struct serr *squery_error(const struct squery *q);
void squery_free(struct squery *q);

#endif
