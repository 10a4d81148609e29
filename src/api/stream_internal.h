/* stream_internal.h -- what stream.c (bounded queries and joins) shares with stream_follow.c
 * (continuous queries): request decoders, source resolution, errors with a path. Not a public
 * header: only src/api/stream*.c include it. */
#ifndef AYDER_API_STREAM_INTERNAL_H
#define AYDER_API_STREAM_INTERNAL_H

#include "api/api_internal.h"
#include "stream/fmt/fmt.h"
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

/* stream_follow.c: POST /broker/query with "follow": true. Takes over q and *dec (frees them);
 * src->parts is read before anything is answered. After it returns x may be gone (answered). */
void stream_follow_start(struct rctx *x, struct squery *q, struct sdecode *dec, struct ssource *src);

#endif
