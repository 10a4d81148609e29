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
/* The error detail of the last failed feed/finish (path = the limit's name). */
const struct serr *squery_error(const struct squery *q);
void squery_free(struct squery *q);

#endif
