/* stream.c -- POST /broker/query (bounded) and the job machinery of the stream area.
 *
 * The engines (stream/query.h, stream/join.h) are pure: records in, rows out. The area's files:
 * stream_src.c resolves what a request reads (topic, partitions, start offsets: explicit, a
 * group's committed offset, a time, the log start), builds the record decoder its "decode" object
 * names, and reads partition logs through the same lock-free path as consume; this file runs
 * bounded calls as jobs on the stream pool, answers them, and with "commit":true commits the next
 * offsets through the ordinary commit write path (journaled, replicated, acknowledged per write
 * concern); stream_join.c is the join handler; stream_follow.c streams continuous queries.
 *
 * Life of a request:
 *
 *   worker: parse + compile + resolve sources + build decoders ──▶ workq (stream thread):
 *           read partitions round-robin, feed the engine, write the JSON answer into job->out
 *   worker (http_req_post): commits (one ENTRY_COMMIT per partition, chained), then respond
 *
 * Invariants:
 *  1. A scan never runs on an HTTP worker: a query over a million records must not stall the
 *     other connections of that worker's loop. The pool is bounded (workq); beyond it 503.
 *  2. Records are streamed through the engine in bounded chunks; a partition is never loaded
 *     whole. Every per-call bound (records, groups, join state, response bytes) is the engine's,
 *     and is named in the 413 answer when hit.
 *  3. Partitions are read round-robin in chunks of SCAN_CHUNK records, in ascending partition
 *     order, so one call is deterministic for a given log: the same request over the same
 *     records yields the same rows (what the differential and resume tests rely on).
 *  4. next_offset of a partition is the offset after the last record the engine consumed; a
 *     commit stores exactly that (Kafka's convention: the committed offset is the next to read).
 *  5. The request holds a reference for the job's whole life; the job's memory is freed on the
 *     worker after the answer.
 */
#include "api/api_internal.h"
#include "api/stream_internal.h"

#include "base/alloc.h"
#include "base/clock.h"
#include "base/err.h"
#include "base/workq.h"
#include "broker/broker.h"
#include "broker/entry.h"
#include "core/core.h"
#include "stream/join.h"
#include "stream/query.h"

#include <stdio.h>
#include <string.h>

/* ------------------------------------------------------------------------------------------ */
/* Commits after a call: one ENTRY_COMMIT per partition, chained on the worker                 */

static void commit_next(struct http_req *req, void *arg);
static void stream_answer(struct rctx *x);

/* ------------------------------------------------------------------------------------------ */
/* Jobs                                                                                         */

void stream_job_free(struct sjob *s)
{
    squery_free(s->q);
    s->q = NULL;
    sdecode_close(&s->dec);
    join_free(s->j);
    s->j = NULL;
    sdecode_close(&s->jdec[0]);
    sdecode_close(&s->jdec[1]);
    json_decref(s->req);
    s->req = NULL;
    sbuf_free(&s->out);
    memset(&s->out, 0, sizeof s->out);
}

/* --- query ---------------------------------------------------------------------------------- */

static int query_feed(void *ctx, const struct srec *r)
{
    struct sjob *s = ctx;
    return squery_feed(s->q, r);
}

static void query_run(struct sjob *s)
{
    struct api *a = s->x->api;
    uint32_t parts[SQUERY_PARTITIONS_MAX];
    uint32_t n = s->src.nparts < SQUERY_PARTITIONS_MAX ? s->src.nparts : SQUERY_PARTITIONS_MAX;
    for (uint32_t i = 0; i < n; i++)
        parts[i] = s->src.parts[i].partition;
    int rc = squery_expect_partitions(s->q, parts, n);
    if (!rc)
        rc = ssource_run(a, &s->src, query_feed, s);
    if (rc) {
        s->err = rc;
        const struct serr *qe = squery_error(s->q);
        if (qe && (qe->msg[0] || qe->path[0]))
            s->e = *qe;
        else if (rc == ERR_CORRUPT)
            serr_set(&s->e, "/source", "a stored record failed its checksum");
        return;
    }
    sbuf_init(&s->out, 0);
    struct jw w;
    jw_init(&w, &s->out);
    jw_obj_open(&w);
    jw_kbool(&w, "ok", true);
    rc = squery_finish(s->q, &w);
    if (rc) {
        s->err = rc;
        const struct serr *qe = squery_error(s->q);
        if (qe)
            s->e = *qe;
        return;
    }
    ssource_write(&w, "source", &s->src);
    jw_ku64(&w, "took_us", (clock_mono_ns() - s->t0_ns) / 1000);
    jw_obj_close(&w);
    if (!sbuf_ok(&s->out)) {
        s->err = ERR_NOMEM;
        return;
    }
    if (s->src.commit) { /* s->commits was allocated on the worker (the arena is not shared) */
        s->ncommits = s->src.nparts;
        for (uint32_t i = 0; i < s->src.nparts; i++)
            s->commits[i] = (struct commit_item){s->src.topic, s->src.group,
                                                 s->src.parts[i].partition, s->src.parts[i].next};
    }
}

/* --- running a job and answering ----------------------------------------------------------- */

static void job_done(struct http_req *req, void *arg);

static void job_fn(struct workq_job *j)
{
    struct sjob *s = (struct sjob *)j;
    if (atomic_load(&s->x->api->stream_stopping)) {
        s->err = ERR_UNAVAILABLE;
        serr_set(&s->e, "", "The server is shutting down");
    } else if (!http_req_orphaned(s->x->req)) { /* the client is gone: skip the scan */
        if (s->kind == SJOB_QUERY)
            query_run(s);
        else
            stream_join_run(s);
    } else {
        s->err = ERR_UNAVAILABLE;
    }
    http_req_post(s->x->req, job_done, s);
}

/* Worker: respond with the job's answer (or its error), then free it. */
static void stream_answer(struct rctx *x)
{
    struct sjob *s = x->area;
    if (!http_req_responded(x->req)) {
        if (s->err) {
            stream_respond_serr(x, s->err, &s->e);
        } else if (s->commit_err) {
            char msg[200];
            snprintf(msg, sizeof msg,
                     "The query ran but committing its offsets failed after %zu of %zu "
                     "partitions: %s", s->committed, s->ncommits, err_message(s->commit_err));
            api_respond_error(x, s->commit_err, msg);
        } else {
            if (s->ncommits) { /* splice "committed":true before the closing brace */
                s->out.len--;
                sbuf_puts(&s->out, ",\"committed\":true}");
            }
            struct sbuf b = s->out;
            memset(&s->out, 0, sizeof s->out);
            api_respond_json(x, 200, &b);
        }
    }
    stream_job_free(s);
}

static void commit_answer(struct rctx *x, int phase)
{
    (void)phase;
    struct sjob *s = x->area;
    if (x->prop.err) {
        s->commit_err = x->prop.err;
    } else {
        s->committed++;
    }
    /* The payload is released after this returns: go on from a fresh post. */
    http_req_ref(x->req);
    http_req_post(x->req, commit_next, s);
}

static void commit_next(struct http_req *req, void *arg)
{
    struct sjob *s = arg;
    struct rctx *x = s->x;
    if (http_req_responded(req)) { /* a write timeout answered already */
        stream_job_free(s);
        http_req_unref(req);
        return;
    }
    if (s->commit_err || s->committed == s->ncommits) {
        stream_answer(x);
        http_req_unref(req);
        return;
    }
    const struct commit_item *c = &s->commits[s->committed];
    struct entry_commit e = {
        .ts_ms = clock_wall_ms(),
        .topic = slice_cstr(c->topic),
        .group = slice_cstr(c->group),
        .partition = c->partition,
        .offset = c->offset,
    };
    sbuf_init(&x->prop.payload, 0);
    entry_commit_encode(&x->prop.payload, &e);
    api_start_write(x, ENTRY_COMMIT, commit_answer);
    if (http_req_responded(req)) /* the write could not start: answered with its error */
        stream_job_free(s);
    http_req_unref(req);
}

static void job_done(struct http_req *req, void *arg)
{
    struct sjob *s = arg;
    if (!s->err && s->ncommits && !http_req_responded(req) && !http_req_orphaned(req)) {
        commit_next(req, s); /* takes over the reference */
        return;
    }
    stream_answer(s->x);
    http_req_unref(req);
}

void stream_job_submit(struct rctx *x, struct sjob *s)
{
    s->job.fn = job_fn;
    s->x = x;
    x->area = s;
    http_req_ref(x->req);
    int rc = workq_submit(x->api->stream_pool, &s->job);
    if (rc) {
        http_req_unref(x->req);
        stream_job_free(s);
        api_respond_error(x, rc, "Too many stream queries are running or queued; retry later");
    }
}

/* --- POST /broker/query --------------------------------------------------------------------- */

static void h_query(struct rctx *x, const struct route_match *m)
{
    (void)m;
    json_t *j = api_json_body_at(x);
    if (!j)
        return;
    struct sjob *s = arena_alloc(http_req_arena(x->req), sizeof *s);
    if (!s) {
        json_decref(j);
        api_respond_error(x, ERR_NOMEM, NULL);
        return;
    }
    memset(s, 0, sizeof *s);
    s->kind = SJOB_QUERY;
    s->t0_ns = clock_mono_ns();
    struct squery_limits lim;
    memset(&lim, 0, sizeof lim);
    const struct api_config *cfg = &x->api->cfg;
    lim.max_records_scanned = cfg->stream_max_records;
    lim.max_groups = (uint32_t)cfg->stream_max_groups;
    lim.max_memory_bytes = cfg->stream_max_memory_bytes;
    lim.max_response_bytes = cfg->stream_max_response_bytes;
    /* fields left 0 take the engine's defaults (squery_compile) */
    int rc = squery_compile(j, &lim, &s->q, &s->e);
    if (!rc)
        rc = ssource_resolve(x, squery_source(s->q), "/source", &s->src, &s->e);
    if (!rc) {
        /* the decoder: in source (ours) or at the top level (the original's clients) */
        json_t *dec = json_object_get(json_object_get(j, "source"), "decode");
        const char *dpath = "/source/decode";
        if (!dec) {
            dec = json_object_get(j, "decode");
            dpath = "/decode";
        }
        rc = sdecode_open(x->api, dec, dpath, &s->dec, &s->e);
    }
    json_decref(j);
    if (!rc) {
        squery_set_format(s->q, s->dec.fmt);
        if (s->src.commit) {
            s->commits = arena_alloc(http_req_arena(x->req),
                                     (s->src.nparts ? s->src.nparts : 1) * sizeof *s->commits);
            if (!s->commits)
                rc = ERR_NOMEM;
        }
    }
    if (rc) {
        /* s lives in the request arena, which answering may free: free it first */
        struct serr e = s->e;
        stream_job_free(s);
        stream_respond_serr(x, rc, &e);
        return;
    }
    if (squery_follow(s->q)) { /* a continuous query streams on this worker (stream_follow.c) */
        struct squery *q = s->q;
        struct sdecode dec = s->dec;
        struct ssource src = s->src; /* parts stay in the request arena until it is answered */
        s->q = NULL;
        memset(&s->dec, 0, sizeof s->dec);
        stream_job_free(s);
        stream_follow_start(x, q, &dec, &src);
        return;
    }
    stream_job_submit(x, s);
}

const struct api_route api_stream_routes[] = {
    {"POST", "/broker/query", "query", SCOPE_CONSUME, API_READ, h_query},
    {"POST", "/broker/join", "join", SCOPE_CONSUME, API_READ, stream_h_join},
    API_ROUTES_END,
};
