/* stream_internal.h -- what the stream area's files share: stream_src.c (request decoders,
 * source resolution and reading, errors with a path), stream.c (bounded calls as jobs on the
 * stream pool, the query handler, commits), stream_join.c (the join handler) and
 * stream_follow.c (continuous queries). Not a public header: only src/api/stream*.c include it. */
#ifndef AYDER_API_STREAM_INTERNAL_H
#define AYDER_API_STREAM_INTERNAL_H

#include "api/api_internal.h"
#include "stream/fmt/fmt.h"
#include "base/workq.h"
#include "stream/join.h"
#include "stream/query.h"

#include <jansson.h>

struct avro_schema;
struct proto_schema;
struct schema_ref;

/* A source's "decode" object, built (sdecode_open) and released (sdecode_close) on the worker. */
struct sdecode {
    struct sfmt *fmt;
    struct avro_schema *avro_own[2];
    struct proto_schema *proto_own;
    struct schema_ref *ref[2];
};

/* Build d->fmt from a source's "decode" object (NULL: JSON text). path: "/source/decode". */
int sdecode_open(struct api *a, json_t *dec, const char *path, struct sdecode *d, struct serr *e);
void sdecode_close(struct sdecode *d);

/* What one side of a query or join reads (parts live in the request arena). */
struct spart {
    uint32_t partition;
    uint64_t start;  /* first offset this call reads */
    uint64_t next;   /* after the last record consumed */
    uint64_t hw;     /* high watermark at the last read */
    bool done;       /* reached the log end, end_offset, or to_ms */
    bool eol;        /* done because the log ended (not a bound of the request) */
    bool adjusted;   /* start was below the retention floor */
    uint64_t read;   /* records consumed */
};

struct ssource {
    char topic[SQUERY_NAME_MAX + 1];
    char group[SQUERY_NAME_MAX + 1];
    uint32_t nparts;
    struct spart *parts;
    uint64_t limit;      /* records in total */
    uint64_t end_offset; /* UINT64_MAX = none */
    bool has_from, has_to;
    int64_t from_ms, to_ms;
    uint64_t consumed;
    bool commit;
};

/* Resolve partitions and start offsets on the worker. path: "/source" or "/left". */
int ssource_resolve(struct rctx *x, const struct squery_source *q, const char *path,
                    struct ssource *s, struct serr *e);

/* Answer err with the seed's error shape plus "path" (e->path) and e->msg. */
void stream_respond_serr(struct rctx *x, int err, const struct serr *e);

#define SCAN_CHUNK 4096u /* records per partition per round (rounded up to a stored batch's end) */

/* One record from a partition log to an engine: 0 to go on, > 0 to stop after it, < 0 an error
 * that ends the read. */
typedef int (*ssource_feed_fn)(void *ctx, const struct srec *r);
/* Read one round of partition sp: about `quota` records (to the end of the stored batch holding
 * the quota-th), at most `max`. 0 or an error (the engine's or the log's). */
int ssource_read_chunk(struct api *a, struct ssource *s, struct spart *sp, uint64_t max,
                       uint64_t quota, ssource_feed_fn feed, void *feed_ctx);
/* Read every partition round-robin until the source's limit or the end of every partition. */
int ssource_run(struct api *a, struct ssource *s, ssource_feed_fn feed, void *feed_ctx);
/* The "source" member of an answer (key: "source", "left_source", ...). */
void ssource_write(struct jw *w, const char *key, const struct ssource *s);

/* --- bounded calls (stream.c): a job on the stream pool, answered on the worker ------------ */

struct commit_item {
    const char *topic, *group;
    uint32_t partition;
    uint64_t offset;
};

enum sjob_kind { SJOB_QUERY, SJOB_JOIN };

struct sjob {
    struct workq_job job;
    struct rctx *x;
    enum sjob_kind kind;
    int err;
    struct serr e;
    struct sbuf out; /* the whole answer on success */
    uint64_t t0_ns;
    /* query */
    struct squery *q;
    struct ssource src;
    struct sdecode dec;
    /* join (stream_join.c) */
    json_t *req;            /* the request: join_spec's field names point into it */
    struct join_spec spec;
    struct join *j;
    struct ssource side[2];
    struct sdecode jdec[2];
    struct join_result jres;
    /* commits after the call: one ENTRY_COMMIT per item, chained on the worker */
    struct commit_item *commits; /* allocated on the worker (the request arena is not shared) */
    size_t ncommits, committed;
    int commit_err;
};

/* Release what a job holds (idempotent). */
void stream_job_free(struct sjob *s);
/* Hand s to the stream pool; answers 503 itself when the pool is full. */
void stream_job_submit(struct rctx *x, struct sjob *s);
/* stream_join.c: run a join job (stream thread) / the POST /broker/join handler (worker). */
void stream_join_run(struct sjob *s);
void stream_h_join(struct rctx *x, const struct route_match *m);

/* stream_follow.c: POST /broker/query with "follow": true. Takes over q and *dec (frees them);
 * src->parts is read before anything is answered. After it returns x may be gone (answered). */
void stream_follow_start(struct rctx *x, struct squery *q, struct sdecode *dec, struct ssource *src);

#endif
