/* subscribe.c -- the subscription area of the API: Server-Sent Events and streaming NDJSON over
 * one partition, a list of partitions or a whole topic (docs/HTTP_API.md "Subscribe").
 *
 *   GET /broker/subscribe/{topic}/{group}?partitions=…&from=…&stream=sse|ndjson
 *   GET /broker/consume/{topic}/{group}/{partition} with Accept: text/event-stream or
 *       ?stream=sse|ndjson (broker.c hands it here: api_subscribe)
 *
 * A subscription is a streaming response (http/server.h) owned by this file, living in the
 * request's arena. It is PULL-BASED: records are never copied into a queue of ours. On a wake
 * (a partition's high watermark moved), a drain (the client read what we queued) or at start,
 * pump() reads the partition logs with broker_read and formats events straight into the
 * connection's output, but only while what the connection has queued is below the
 * per-subscriber buffer (--subscribe-buffer-bytes). The log is the buffer; the connection holds
 * at most buffer + one read's worth of events.
 *
 *              start / wake / drain / tick
 *                         |
 *                         v
 *   +--------+  pending < buffer, a partition ready   +------+   read 0 records   +--------+
 *   |  pump  | ------------------------------------> | read | -----------------> | parked |
 *   +--------+ <------------------------------------ +------+  (broker_wait)     +--------+
 *     |    |        events written (one chunk)                       | wake (core thread,
 *     |    | pending >= buffer: arm drain; stalled since now         |  posted to the worker)
 *     |    +-- stalled longer than --subscribe-stall-ms --> end "slow_subscriber"
 *     +-- shutdown / topic gone / limit / error -------------------> end (final event: why, id)
 *
 * Invariants:
 *  1. Exactly once, in order: each partition has one cursor `next`; an event is formatted only
 *     for the record at `next`, which then advances. The event id carries every partition's
 *     `next` after that event, so resuming from it (Last-Event-ID) neither repeats nor skips.
 *  2. Bounded: http_stream_pending() <= buffer + one read (a read's byte budget is half the free
 *     room, at most SUB_READ_RECORDS records; a single record larger than that is sent whole).
 *  3. No CPU while idle: every partition with nothing to read is parked on its broker waiter
 *     (one per partition per subscription); the only timer is the heartbeat/stall/commit tick.
 *  4. A parked waiter and every posted wake hold a request reference, so the subscription (in the
 *     request arena) outlives every callback that can reach it; after the stream's close
 *     function ran (sub->closed) callbacks only release what they hold.
 *  5. Every open subscription is on the API's registry (struct api sub_mu/subs) until its close
 *     function ran: api_quiesce ends them all with a final "shutdown" event.
 */
#include "api/api_internal.h"

#include "base/clock.h"
#include "base/err.h"
#include "broker/entry.h"
#include "http/url.h"
#include "metrics/metrics.h"
#include "stream/fmt/json.h"

#include <pthread.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SUB_READ_RECORDS 256          /* records per broker_read */
#define SUB_PUMP_BYTES (4u << 20)     /* output per pump turn before yielding the worker */
#define SUB_HEARTBEAT_MS_DEFAULT 15000
#define SUB_RETRY_MS_DEFAULT 2000
#define SUB_COMMIT_MS_DEFAULT 1000
#define SUB_END_GRACE_MS 5000         /* a final event not read by then: connection closed */

struct sub;

struct sub_part {
    struct sub *sub;
    uint32_t partition;
    uint64_t next;            /* the next offset to deliver (invariant 1) */
    uint64_t committed;       /* auto-commit: what we last committed (or found committed) */
    bool ready;               /* may have data: read before parking */
    bool parked;              /* waiter registered, or its wake posted and not yet run */
    bool skip_ts;             /* from=time:MS: skip records stamped earlier until the first not */
    struct broker_waiter waiter;
};

struct sub {
    struct api *a;
    struct rctx *x;
    struct http_req *req;
    struct slice topic, group;
    struct sub_part *parts;
    uint32_t nparts;
    uint32_t rr;              /* round-robin cursor over parts */
    bool sse, b64, auto_commit;
    bool closed;              /* the stream's close function ran */
    bool ending;              /* the final event was written */
    bool pump_posted;
    int64_t from_ts;
    uint64_t heartbeat_ms, retry_ms, commit_ms, limit;
    uint64_t delivered;       /* events (records) written */
    uint64_t last_write_ms, stalled_since_ms, last_commit_ms;
    struct sbuf out;          /* one chunk being built */
    struct sbuf tmp;
    /* auto-commit: one proposal in flight at a time */
    struct proposal cprop;
    bool commit_inflight;
    uint32_t commit_cursor;
    struct sub *reg_prev, *reg_next;
};

static void pump(struct sub *s);
static void sub_end(struct sub *s, const char *reason, const char *msg);
static void rearm(struct sub *s);
static void commit_flush(struct sub *s);

/* ------------------------------------------------------------------------------------------ */
/* Event ids: "p:next,p:next,..." over the subscription's partitions, ascending                */

static void put_id(struct sbuf *b, const struct sub *s)
{
    for (uint32_t i = 0; i < s->nparts; i++) {
        if (i)
            sbuf_putc(b, ',');
        sbuf_put_u64(b, s->parts[i].partition);
        sbuf_putc(b, ':');
        sbuf_put_u64(b, s->parts[i].next);
    }
}

/* "key":"<id>" through the writer (so it places the commas). */
static void put_id_member(struct sub *s, struct jw *w, const char *key)
{
    sbuf_reset(&s->tmp);
    put_id(&s->tmp, s);
    jw_key(w, key);
    jw_strn(w, s->tmp.data, s->tmp.len); /* ASCII */
}

/* Strict: exactly the subscription's partitions, ascending, each once, decimal without signs or
 * leading zeros, offsets <= INT64_MAX. 0 (positions set) or ERR_BAD_PARAM. */
static int parse_id(struct sub *s, struct slice id)
{
    size_t i = 0;
    uint64_t *pos = calloc(s->nparts, sizeof *pos);
    if (!pos)
        return ERR_NOMEM;
    int rc = ERR_BAD_PARAM;
    for (uint32_t k = 0; k < s->nparts; k++) {
        uint64_t v[2];
        for (int f = 0; f < 2; f++) {
            size_t st = i;
            while (i < id.len && id.ptr[i] >= '0' && id.ptr[i] <= '9' && i - st < 20)
                i++;
            if (i == st || (i - st > 1 && id.ptr[st] == '0') ||
                url_parse_u64(slice_of(id.ptr + st, i - st), &v[f]) || v[f] > INT64_MAX)
                goto out;
            if (f == 0) {
                if (i >= id.len || id.ptr[i] != ':')
                    goto out;
                i++;
            }
        }
        if (v[0] != s->parts[k].partition)
            goto out;
        pos[k] = v[1];
        if (k + 1 < s->nparts) {
            if (i >= id.len || id.ptr[i] != ',')
                goto out;
            i++;
        }
    }
    if (i != id.len)
        goto out;
    for (uint32_t k = 0; k < s->nparts; k++)
        s->parts[k].next = pos[k];
    rc = 0;
out:
    free(pos);
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* Events                                                                                      */

/* The record's JSON object (the SSE data / the NDJSON line without its first members). */
static void record_fields(struct sub *s, struct jw *w, uint32_t partition,
                          const struct plog_record *r)
{
    jw_key(w, "topic");
    jw_strn(w, s->topic.ptr, s->topic.len);
    jw_ku64(w, "partition", partition);
    jw_ku64(w, "offset", r->offset);
    jw_ki64(w, "timestamp_ms", r->timestamp_ms);
    if (r->has_key)
        api_write_bytes(w, "key", "key_b64", r->key, s->b64);
    if (r->header_count) {
        bool text = !s->b64;
        for (size_t i = 0; text && i < r->header_count; i++)
            text = utf8_valid(r->headers[i].value.ptr, r->headers[i].value.len) &&
                   utf8_valid(r->headers[i].key.ptr, r->headers[i].key.len);
        jw_key(w, text ? "headers" : "headers_b64");
        jw_obj_open(w);
        for (size_t i = 0; i < r->header_count; i++) {
            struct slice k = r->headers[i].key;
            if (utf8_valid(k.ptr, k.len)) {
                jw_keyn(w, k.ptr, k.len);
            } else {
                char name[32];
                snprintf(name, sizeof name, "header-%zu", i);
                jw_key(w, name);
            }
            if (text)
                jw_strn(w, r->headers[i].value.ptr, r->headers[i].value.len);
            else
                jw_b64(w, r->headers[i].value.ptr, r->headers[i].value.len);
        }
        jw_obj_close(w);
    }
    /* A JSON value goes in as it is; anything else as base64 under "value_b64" (the marker).
     * CR/LF inside valid JSON can only be whitespace: they become spaces, so an event stays
     * one `data:` line and an NDJSON record one line. */
    if (!s->b64 && r->value.len && json_scan_validate(r->value.ptr, r->value.len)) {
        jw_key(w, "value");
        if (memchr(r->value.ptr, '\n', r->value.len) || memchr(r->value.ptr, '\r', r->value.len)) {
            sbuf_reset(&s->tmp);
            sbuf_append(&s->tmp, r->value.ptr, r->value.len);
            for (size_t i = 0; i < s->tmp.len; i++)
                if (s->tmp.data[i] == '\n' || s->tmp.data[i] == '\r')
                    s->tmp.data[i] = ' ';
            jw_rawn(w, s->tmp.data, s->tmp.len);
        } else {
            jw_rawn(w, r->value.ptr, r->value.len);
        }
    } else {
        jw_key(w, "value_b64");
        jw_b64(w, r->value.ptr, r->value.len);
    }
}

/* Open an event of `kind` carrying the current id: SSE "id:…\nevent:…\ndata: " / NDJSON
 * {"type":kind,"id":…  -- the caller adds members to w and calls event_close. */
static void event_open(struct sub *s, struct jw *w, const char *kind)
{
    struct sbuf *b = &s->out;
    if (s->sse) {
        sbuf_puts(b, "id: ");
        put_id(b, s);
        sbuf_puts(b, "\nevent: ");
        sbuf_puts(b, kind);
        sbuf_puts(b, "\ndata: ");
        jw_init(w, b);
        jw_obj_open(w);
    } else {
        jw_init(w, b);
        jw_obj_open(w);
        jw_kstr(w, "type", kind);
        put_id_member(s, w, "id");
    }
}

static void event_close(struct sub *s, struct jw *w)
{
    jw_obj_close(w);
    sbuf_puts(&s->out, s->sse ? "\n\n" : "\n");
}

/* Hand what was built to the connection as one chunk. */
static void flush_out(struct sub *s)
{
    if (!s->out.len)
        return;
    if (!sbuf_ok(&s->out)) {
        sbuf_reset(&s->out);
        sub_end(s, "error", "Out of memory formatting events");
        return;
    }
    struct api *a = s->a;
    atomic_fetch_add_explicit(&a->sub_bytes, s->out.len, memory_order_relaxed);
    http_stream_write(s->req, s->out.data, s->out.len);
    s->last_write_ms = clock_mono_ms();
    sbuf_reset(&s->out);
    if (s->out.cap > (1u << 20))
        sbuf_free(&s->out); /* a large record passed: do not keep its buffer while idle */
}

struct visit {
    struct sub *s;
    struct sub_part *p;
};

/* Retention removed records we had not delivered (the read started at the floor): say so, never
 * silently. The event's id already points past the gap. */
static void floor_event(struct sub *s, struct sub_part *p, uint64_t from, uint64_t to)
{
    p->next = to;
    struct jw w;
    event_open(s, &w, "floor_adjusted");
    jw_ku64(&w, "partition", p->partition);
    jw_ku64(&w, "from", from);
    jw_ku64(&w, "to", to);
    event_close(s, &w);
}

static int visit_record(void *ctx, const struct plog_record *r)
{
    struct visit *v = ctx;
    struct sub *s = v->s;
    struct sub_part *p = v->p;
    if (r->offset != p->next)
        floor_event(s, p, p->next, r->offset);
    p->next = r->offset + 1;
    if (p->skip_ts) {
        if (r->timestamp_ms < s->from_ts)
            return 0;
        p->skip_ts = false;
    }
    struct jw w;
    event_open(s, &w, "record");
    record_fields(s, &w, p->partition, r);
    event_close(s, &w);
    s->delivered++;
    atomic_fetch_add_explicit(&s->a->sub_events, 1, memory_order_relaxed);
    return s->limit && s->delivered >= s->limit;
}

/* ------------------------------------------------------------------------------------------ */
/* Waiting                                                                                     */

static void part_woken(struct http_req *req, void *arg)
{
    struct sub_part *p = arg;
    struct sub *s = p->sub;
    p->parked = false;
    if (!s->closed && !s->ending) {
        p->ready = true;
        pump(s);
    }
    http_req_unref(req); /* the parked waiter's reference (invariant 4) */
}

/* Core thread: the partition's high watermark moved past p->next (or the topic went away). */
static void part_wake(struct broker_waiter *w)
{
    struct sub_part *p = (struct sub_part *)((char *)w - offsetof(struct sub_part, waiter));
    http_req_post_low(p->sub->req, part_woken, p); /* after answers (http/server.h) */
}

/* Park p; false when it must be read again now (data arrived) or after ending the stream. */
static bool park(struct sub *s, struct sub_part *p)
{
    p->waiter.wake = part_wake;
    http_req_ref(s->req);
    int rc = broker_wait(s->a->broker, s->topic, p->partition, p->next, &p->waiter);
    if (rc == 0) {
        p->parked = true;
        p->ready = false;
        return true;
    }
    http_req_unref(s->req);
    if (rc == ERR_AGAIN)
        return false;
    if (rc == ERR_OVERLOADED)
        sub_end(s, "overloaded", "Too many parked consumers on this node (10000 waiters); "
                                 "reconnect with the id to resume");
    else
        sub_end(s, "topic_deleted", "The topic no longer exists on this node");
    return true;
}

static void unpark_all(struct sub *s)
{
    for (uint32_t i = 0; i < s->nparts; i++) {
        struct sub_part *p = &s->parts[i];
        if (p->parked && broker_unwait(s->a->broker, &p->waiter)) {
            p->parked = false;
            http_req_unref(s->req);
        }
        /* else its wake is posted: part_woken releases it */
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Pump                                                                                        */

static void pump_posted(struct http_req *req, void *arg)
{
    struct sub *s = arg;
    s->pump_posted = false;
    if (!s->closed && !s->ending)
        pump(s);
    http_req_unref(req);
}

static void on_drain(struct http_req *req, void *arg)
{
    (void)req;
    struct sub *s = arg;
    s->stalled_since_ms = 0; /* the client read: it is slow, not stuck */
    if (!s->closed && !s->ending)
        pump(s);
}

static void pump(struct sub *s)
{
    struct api *a = s->a;
    size_t buffer = a->cfg.sub_buffer_bytes;
    size_t turn = 0;
    while (!s->closed && !s->ending) {
        size_t pending = http_stream_pending(s->req);
        if (pending >= buffer)
            break;
        /* next ready partition, round robin (fairness across partitions) */
        struct sub_part *p = NULL;
        for (uint32_t k = 0; k < s->nparts; k++) {
            struct sub_part *c = &s->parts[(s->rr + k) % s->nparts];
            if (c->ready && !c->parked) {
                p = c;
                s->rr = (s->rr + k + 1) % s->nparts;
                break;
            }
        }
        if (!p)
            break;
        if (turn >= SUB_PUMP_BYTES) {
            /* a long catch-up: let the worker serve its other connections, then go on */
            if (!s->pump_posted) {
                s->pump_posted = true;
                http_req_ref(s->req);
                http_req_post_low(s->req, pump_posted, s);
            }
            return;
        }
        size_t budget = (buffer - pending) / 2;
        struct visit v = {s, p};
        struct plog_read_result res;
        memset(&res, 0, sizeof res);
        uint64_t hw = 0, start = 0, from = p->next;
        int rc = broker_read(a->broker, s->topic, p->partition, from, SUB_READ_RECORDS,
                             budget ? budget : 1, visit_record, &v, &res, &hw, &start);
        if (rc == 0 && res.count == 0 && res.next_offset > from)
            floor_event(s, p, from, res.next_offset); /* everything up to the floor is gone */
        turn += s->out.len;
        flush_out(s);
        if (rc == ERR_NO_TOPIC || rc == ERR_BAD_PARTITION) {
            sub_end(s, "topic_deleted", "The topic no longer exists on this node");
            return;
        }
        if (rc) {
            sub_end(s, "error", rc == ERR_CORRUPT ? "A stored record failed its checksum"
                                                  : err_message(rc));
            return;
        }
        if (s->limit && s->delivered >= s->limit) {
            sub_end(s, "limit", "The requested number of events was delivered");
            return;
        }
        /* Park when the read came back empty, or when it reached the high watermark it saw: a
         * live subscriber is woken for each append and reads the new record(s) in one go, so
         * another read would only find nothing (one broker_read per event saved; broker_wait
         * re-checks the watermark under its lock and answers ERR_AGAIN if more arrived). */
        if ((res.count == 0 || (rc == 0 && p->next >= hw)) && !park(s, p))
            continue;
    }
    if (s->closed || s->ending)
        return;
    if (http_stream_pending(s->req) >= buffer) {
        if (!s->stalled_since_ms) {
            s->stalled_since_ms = clock_mono_ms();
            rearm(s);
        }
        http_stream_on_drain(s->req, buffer / 2, on_drain, s);
    } else {
        s->stalled_since_ms = 0;
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Ticks: heartbeat, stall, auto-commit (one request timer)                                    */

static void tick(struct http_req *req, void *arg);

static void rearm(struct sub *s)
{
    if (s->closed || s->ending)
        return;
    uint64_t now = clock_mono_ms();
    uint64_t due = s->last_write_ms + s->heartbeat_ms;
    if (s->stalled_since_ms) {
        uint64_t cut = s->stalled_since_ms + s->a->cfg.sub_stall_ms;
        if (cut < due)
            due = cut;
    }
    if (s->auto_commit) {
        uint64_t c = s->last_commit_ms + s->commit_ms;
        if (c < due)
            due = c;
    }
    uint64_t ms = due > now ? due - now : 1;
    http_req_timer_start(s->req, ms, tick, s);
}

static void tick(struct http_req *req, void *arg)
{
    struct sub *s = arg;
    if (s->closed)
        return;
    if (s->ending) {
        /* the final event was not read in time (a client that stopped reading) */
        http_stream_abort(req);
        return;
    }
    uint64_t now = clock_mono_ms();
    size_t pending = http_stream_pending(req);
    if (s->stalled_since_ms && pending >= s->a->cfg.sub_buffer_bytes &&
        now - s->stalled_since_ms >= s->a->cfg.sub_stall_ms) {
        atomic_fetch_add_explicit(&s->a->sub_slow, 1, memory_order_relaxed);
        char msg[160];
        snprintf(msg, sizeof msg, "The client did not read for %llu ms with %zu bytes queued "
                 "(the per-subscriber buffer); reconnect with the id to resume",
                 (unsigned long long)s->a->cfg.sub_stall_ms, pending);
        sub_end(s, "slow_subscriber", msg);
        return;
    }
    if (pending == 0 && now - s->last_write_ms >= s->heartbeat_ms) {
        if (s->sse) {
            sbuf_puts(&s->out, ": heartbeat\n\n");
        } else {
            struct jw w;
            event_open(s, &w, "heartbeat");
            event_close(s, &w);
        }
        flush_out(s);
    }
    if (s->auto_commit && now - s->last_commit_ms >= s->commit_ms) {
        s->last_commit_ms = now;
        commit_flush(s);
    }
    rearm(s);
}

/* ------------------------------------------------------------------------------------------ */
/* Auto-commit through the ordinary commit write path                                          */

static void commit_posted(struct http_req *req, void *arg)
{
    struct sub *s = arg;
    struct sub_part *p = &s->parts[s->commit_cursor];
    if (s->cprop.err == 0)
        p->committed = s->cprop.res.ignored ? s->cprop.res.committed : p->committed;
    else
        atomic_fetch_add_explicit(&s->a->sub_commit_errors, 1, memory_order_relaxed);
    sbuf_free(&s->cprop.payload);
    s->commit_inflight = false;
    s->commit_cursor++;
    commit_flush(s); /* the next partition that needs it, if any */
    http_req_unref(req);
}

/* Core thread. */
static void commit_done(struct proposal *prop)
{
    struct sub *s = prop->ctx;
    if (prop->phase == PROPOSAL_DONE)
        http_req_post(s->req, commit_posted, s);
}

/* Commit each partition's delivered position (one proposal at a time, in partition order). */
static void commit_flush(struct sub *s)
{
    if (!s->auto_commit || s->commit_inflight)
        return;
    if (s->commit_cursor >= s->nparts)
        s->commit_cursor = 0;
    for (; s->commit_cursor < s->nparts; s->commit_cursor++) {
        struct sub_part *p = &s->parts[s->commit_cursor];
        if (p->next <= p->committed)
            continue;
        struct entry_commit e = {clock_wall_ms(), s->topic, s->group, p->partition, p->next};
        memset(&s->cprop, 0, sizeof s->cprop);
        s->cprop.partition = -1;
        sbuf_init(&s->cprop.payload, 0);
        entry_commit_encode(&s->cprop.payload, &e);
        s->cprop.type = ENTRY_COMMIT;
        s->cprop.concern = WC_DEFAULT;
        s->cprop.done = commit_done;
        s->cprop.ctx = s;
        uint64_t want = p->next;
        http_req_ref(s->req);
        s->commit_inflight = true;
        int rc = core_propose(s->a->core, &s->cprop);
        if (rc) {
            s->commit_inflight = false;
            sbuf_free(&s->cprop.payload);
            http_req_unref(s->req);
            atomic_fetch_add_explicit(&s->a->sub_commit_errors, 1, memory_order_relaxed);
            return; /* retried at the next tick (e.g. a follower: commits need the leader) */
        }
        p->committed = want; /* optimistic; a failure is counted and retried next tick */
        return;
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Ending and closing                                                                          */

/* Write the final event (why, and where to resume) and end the stream. */
static void sub_end(struct sub *s, const char *reason, const char *msg)
{
    if (s->ending || s->closed)
        return;
    struct jw w;
    event_open(s, &w, "end");
    jw_kstr(&w, "reason", reason);
    jw_kstr(&w, "message", msg);
    put_id_member(s, &w, "resume_id");
    jw_ku64(&w, "delivered", s->delivered);
    event_close(s, &w);
    flush_out(s);
    s->ending = true;
    unpark_all(s);
    commit_flush(s);
    http_stream_end(s->req);
    if (!s->closed) /* a client that never reads the final event is cut after a grace period */
        http_req_timer_start(s->req, SUB_END_GRACE_MS, tick, s);
}

/* The stream is over (server.h rule 4): release everything; later callbacks only unref. */
static void on_closed(struct http_req *req, void *arg)
{
    (void)req;
    struct sub *s = arg;
    struct api *a = s->a;
    s->closed = true;
    http_req_timer_stop(s->req);
    unpark_all(s);
    if (!s->ending)
        atomic_fetch_add_explicit(&a->sub_client_gone, 1, memory_order_relaxed);
    pthread_mutex_lock(&a->sub_mu);
    if (s->reg_prev)
        s->reg_prev->reg_next = s->reg_next;
    else
        a->subs = s->reg_next;
    if (s->reg_next)
        s->reg_next->reg_prev = s->reg_prev;
    pthread_mutex_unlock(&a->sub_mu);
    atomic_fetch_sub(&a->sub_open, 1);
    sbuf_free(&s->out);
    sbuf_free(&s->tmp);
    commit_flush(s); /* auto-commit: what was handed to the connection */
}

static void shutdown_posted(struct http_req *req, void *arg)
{
    struct sub *s = arg;
    if (!s->closed)
        sub_end(s, "shutdown", "The server is shutting down; reconnect with the id to resume");
    http_req_unref(req);
}

void api_subscribe_quiesce(struct api *a)
{
    pthread_mutex_lock(&a->sub_mu);
    if (a->sub_stopping) { /* done before (main calls it ahead of core_stop) */
        pthread_mutex_unlock(&a->sub_mu);
        return;
    }
    a->sub_stopping = true;
    for (struct sub *s = a->subs; s; s = s->reg_next) {
        http_req_ref(s->req); /* alive while registered (invariant 5); the post needs its own */
        http_req_post(s->req, shutdown_posted, s);
    }
    pthread_mutex_unlock(&a->sub_mu);
    /* Let the final events reach the clients (bounded: a client that does not read is cut when
     * the server stops). */
    for (int i = 0; i < 200 && atomic_load(&a->sub_open) > 0; i++) {
        struct timespec ts = {0, 10 * 1000000};
        nanosleep(&ts, NULL);
    }
}

void api_subscribe_metrics(struct api *a, struct sbuf *b)
{
    metrics_write_gauge(b, "ayder_subscribe_streams_open", "Open SSE/NDJSON subscription streams.",
                        (double)atomic_load(&a->sub_open));
    metrics_write_counter(b, "ayder_subscribe_streams_total", "Subscription streams opened.",
                          atomic_load(&a->sub_total));
    metrics_write_counter(b, "ayder_subscribe_rejected_total",
                          "Subscriptions refused at --subscribe-max-streams (503).",
                          atomic_load(&a->sub_rejected));
    metrics_write_counter(b, "ayder_subscribe_events_total", "Record events delivered to subscribers.",
                          atomic_load(&a->sub_events));
    metrics_write_counter(b, "ayder_subscribe_bytes_total", "Bytes of events written to subscribers.",
                          atomic_load(&a->sub_bytes));
    metrics_write_counter(b, "ayder_subscribe_slow_disconnects_total",
                          "Streams ended because the client stopped reading (slow_subscriber).",
                          atomic_load(&a->sub_slow));
    metrics_write_counter(b, "ayder_subscribe_client_closed_total",
                          "Streams whose client went away before an end event.",
                          atomic_load(&a->sub_client_gone));
    metrics_write_counter(b, "ayder_subscribe_commit_errors_total",
                          "Auto-commits that could not be written (e.g. on a follower).",
                          atomic_load(&a->sub_commit_errors));
}

/* ------------------------------------------------------------------------------------------ */
/* Starting                                                                                    */

struct describe_ctx {
    uint64_t *start, *hw;
    uint32_t n;
};

static void describe_fn(void *ctx, uint32_t partition, const struct plog_stats *st)
{
    struct describe_ctx *d = ctx;
    if (partition < d->n) {
        d->start[partition] = st->start_offset;
        d->hw[partition] = st->high_watermark;
    }
}

static bool want_sse(struct rctx *x)
{
    const struct http_request *h = http_req_head(x->req);
    for (size_t i = 0; i < h->header_count; i++) {
        if (!slice_eq_nocase(h->headers[i].name, "accept"))
            continue;
        struct slice v = h->headers[i].value;
        static const char es[] = "text/event-stream";
        for (size_t k = 0; k + sizeof es - 1 <= v.len; k++)
            if (slice_eq_nocase(slice_of(v.ptr + k, sizeof es - 1), es))
                return true;
    }
    return false;
}

bool api_subscribe_requested(struct rctx *x)
{
    struct slice s;
    return api_qparam(x, "stream", &s) == 1 || want_sse(x);
}

static struct slice header_value(struct rctx *x, const char *name)
{
    const struct http_request *h = http_req_head(x->req);
    for (size_t i = 0; i < h->header_count; i++)
        if (slice_eq_nocase(h->headers[i].name, name))
            return h->headers[i].value;
    return (struct slice){NULL, 0};
}

/* partitions=all | p,p,... (any order, no duplicates) into a sorted array. */
static int parse_partitions(struct slice v, uint32_t nparts, uint32_t *out, uint32_t *n)
{
    if (v.len == 0 || slice_eq_cstr(v, "all")) {
        for (uint32_t i = 0; i < nparts; i++)
            out[i] = i;
        *n = nparts;
        return 0;
    }
    static uint8_t seen_init[BROKER_PARTITIONS_MAX];
    uint8_t seen[BROKER_PARTITIONS_MAX];
    memcpy(seen, seen_init, sizeof seen);
    size_t i = 0;
    while (i <= v.len) {
        size_t st = i;
        while (i < v.len && v.ptr[i] != ',')
            i++;
        uint64_t p;
        if (url_parse_u64(slice_of(v.ptr + st, i - st), &p) || p >= nparts || seen[p])
            return ERR_BAD_PARAM;
        seen[p] = 1;
        i++;
    }
    *n = 0;
    for (uint32_t p = 0; p < nparts; p++)
        if (seen[p])
            out[(*n)++] = p;
    return 0;
}

/* The subscription: validate, resolve start positions, begin the stream, pump. `single` is the
 * consume route's partition (or -1 for the subscribe route). */
static void subscribe(struct rctx *x, struct slice topic, struct slice group, int32_t single)
{
    struct api *a = x->api;
    if (!api_check_name(x, topic, BROKER_TOPIC_NAME_MAX, "Topic name") ||
        !api_check_name(x, group, BROKER_GROUP_NAME_MAX, "Group name"))
        return;
    uint32_t tparts;
    if (broker_partitions(a->broker, topic, &tparts)) {
        api_respond_error(x, ERR_NO_TOPIC, NULL);
        return;
    }
    struct arena *ar = http_req_arena(x->req);
    struct sub *s = arena_alloc(ar, sizeof *s);
    uint32_t *list = arena_alloc(ar, sizeof(uint32_t) * tparts);
    uint64_t *start = arena_alloc(ar, sizeof(uint64_t) * tparts);
    uint64_t *hw = arena_alloc(ar, sizeof(uint64_t) * tparts);
    if (!s || !list || !start || !hw) {
        api_respond_error(x, ERR_NOMEM, NULL);
        return;
    }
    memset(s, 0, sizeof *s);
    s->a = a;
    s->x = x;
    s->req = x->req;
    s->topic = topic;
    s->group = group;
    /* format */
    struct slice v;
    int rc = api_qparam(x, "stream", &v);
    if (rc < 0) {
        api_respond_error(x, rc, NULL);
        return;
    }
    if (rc == 1 && slice_eq_cstr(v, "sse"))
        s->sse = true;
    else if (rc == 1 && slice_eq_cstr(v, "ndjson"))
        s->sse = false;
    else if (rc == 1) {
        api_respond_error(x, ERR_BAD_PARAM, "stream must be 'sse' or 'ndjson'");
        return;
    } else {
        s->sse = want_sse(x); /* the subscribe route without either: NDJSON */
    }
    /* partitions */
    uint32_t n = 0;
    if (single >= 0) {
        if ((uint32_t)single >= tparts) {
            char msg[96];
            snprintf(msg, sizeof msg, "Topic has %u partitions (0..%u)", tparts, tparts - 1);
            api_respond_error(x, ERR_BAD_PARTITION, msg);
            return;
        }
        list[0] = (uint32_t)single;
        n = 1;
    } else {
        rc = api_qparam(x, "partitions", &v);
        if (rc < 0 || parse_partitions(rc == 1 ? v : (struct slice){NULL, 0}, tparts, list, &n) ||
            n == 0) {
            api_respond_error(x, ERR_BAD_PARAM, "partitions must be 'all' or a comma-separated "
                              "list of distinct partitions of the topic");
            return;
        }
    }
    s->nparts = n;
    s->parts = arena_alloc(ar, sizeof *s->parts * n);
    if (!s->parts) {
        api_respond_error(x, ERR_NOMEM, NULL);
        return;
    }
    memset(s->parts, 0, sizeof *s->parts * n);
    struct describe_ctx dc = {start, hw, tparts};
    memset(start, 0, sizeof(uint64_t) * tparts);
    memset(hw, 0, sizeof(uint64_t) * tparts);
    if (broker_describe(a->broker, topic, describe_fn, &dc)) {
        api_respond_error(x, ERR_NO_TOPIC, NULL);
        return;
    }
    for (uint32_t i = 0; i < n; i++) {
        s->parts[i].sub = s;
        s->parts[i].partition = list[i];
        s->parts[i].ready = true;
    }
    /* options */
    s->heartbeat_ms = SUB_HEARTBEAT_MS_DEFAULT;
    s->retry_ms = SUB_RETRY_MS_DEFAULT;
    s->commit_ms = SUB_COMMIT_MS_DEFAULT;
    if (api_qparam_u64(x, "heartbeat_ms", 100, 3600000, &s->heartbeat_ms) < 0 ||
        api_qparam_u64(x, "retry_ms", 0, 3600000, &s->retry_ms) < 0 ||
        api_qparam_u64(x, "commit_interval_ms", 10, 3600000, &s->commit_ms) < 0 ||
        api_qparam_u64(x, "limit", 1, UINT32_MAX, &s->limit) < 0)
        return;
    rc = api_qparam(x, "encoding", &v);
    if (rc == 1) {
        if (slice_eq_cstr(v, "b64") || slice_eq_cstr(v, "base64"))
            s->b64 = true;
        else if (!slice_eq_cstr(v, "text") && !slice_eq_cstr(v, "json")) {
            api_respond_error(x, ERR_BAD_PARAM, "encoding must be 'b64' (or omitted)");
            return;
        }
    }
    rc = api_qparam(x, "auto_commit", &v);
    if (rc == 1)
        s->auto_commit = slice_eq_cstr(v, "1") || slice_eq_cstr(v, "true");
    /* start positions: Last-Event-ID (header, else ?last_event_id=) wins over from/offset */
    struct slice id = header_value(x, "last-event-id");
    if (!id.len && api_qparam(x, "last_event_id", &v) == 1)
        id = v;
    if (id.len) {
        rc = parse_id(s, id);
        if (rc) {
            api_respond_error(x, rc, "Last-Event-ID must be this subscription's id: "
                              "partition:offset for each of its partitions, ascending, "
                              "comma-separated (as sent in the events' id)");
            return;
        }
    } else {
        enum { F_COMMITTED, F_EARLIEST, F_LATEST, F_OFFSET, F_TIME } from = F_COMMITTED;
        uint64_t off = 0;
        rc = api_qparam(x, "from", &v);
        if (rc == 1) {
            if (slice_eq_cstr(v, "earliest"))
                from = F_EARLIEST;
            else if (slice_eq_cstr(v, "latest"))
                from = F_LATEST;
            else if (slice_eq_cstr(v, "committed"))
                from = F_COMMITTED;
            else if (v.len > 7 && memcmp(v.ptr, "offset:", 7) == 0 &&
                     !url_parse_u64(slice_of(v.ptr + 7, v.len - 7), &off) && off <= INT64_MAX)
                from = F_OFFSET;
            else if (v.len > 5 && memcmp(v.ptr, "time:", 5) == 0 &&
                     !url_parse_i64(slice_of(v.ptr + 5, v.len - 5), &s->from_ts))
                from = F_TIME;
            else {
                api_respond_error(x, ERR_BAD_PARAM, "from must be earliest, latest, committed, "
                                  "offset:N or time:MS");
                return;
            }
        } else if (single >= 0) {
            int r2 = api_qparam_u64(x, "offset", 0, INT64_MAX, &off);
            if (r2 < 0)
                return;
            if (r2 == 1)
                from = F_OFFSET;
        }
        for (uint32_t i = 0; i < n; i++) {
            struct sub_part *p = &s->parts[i];
            uint32_t pn = p->partition;
            uint64_t c;
            switch (from) {
            case F_EARLIEST: p->next = start[pn]; break;
            case F_LATEST: p->next = hw[pn]; break;
            case F_OFFSET: p->next = off; break;
            case F_COMMITTED:
                p->next = broker_committed(a->broker, topic, group, pn, &c) == 0 ? c : start[pn];
                break;
            case F_TIME:
                if (broker_offset_for_time(a->broker, topic, pn, s->from_ts, &p->next))
                    p->next = start[pn];
                p->skip_ts = true;
                break;
            }
        }
    }
    for (uint32_t i = 0; i < n; i++) {
        uint64_t c;
        struct sub_part *p = &s->parts[i];
        p->committed = broker_committed(a->broker, topic, group, p->partition, &c) == 0 ? c : 0;
    }
    const char *ctype = s->sse ? "text/event-stream; charset=utf-8" : "application/x-ndjson";
    if (http_req_is_head_method(x->req)) {
        struct sbuf b;
        sbuf_init(&b, 0);
        api_respond_ctype(x, 200, ctype, &b);
        return;
    }
    /* the limit on open streams */
    pthread_mutex_lock(&a->sub_mu);
    bool stopping = a->sub_stopping;
    bool full = atomic_load(&a->sub_open) >= a->cfg.sub_streams_max;
    if (!stopping && !full) {
        atomic_fetch_add(&a->sub_open, 1);
        s->reg_next = a->subs;
        if (a->subs)
            a->subs->reg_prev = s;
        a->subs = s;
    }
    pthread_mutex_unlock(&a->sub_mu);
    if (stopping || full) {
        if (full)
            atomic_fetch_add_explicit(&a->sub_rejected, 1, memory_order_relaxed);
        api_respond_error_ex(x, stopping ? ERR_NOT_READY : ERR_OVERLOADED,
                             stopping ? "The server is shutting down"
                                      : "Too many open subscription streams "
                                        "(--subscribe-max-streams); retry later",
                             NULL, "Retry-After: 1\r\n");
        return;
    }
    atomic_fetch_add_explicit(&a->sub_total, 1, memory_order_relaxed);
    sbuf_init(&s->out, 0);
    sbuf_init(&s->tmp, 0);
    metrics_observe(a->metrics, x->metric, 200, clock_mono_ns() - http_req_recv_ns(x->req));
    /* Cache-Control: no proxy may store or transform it; X-Accel-Buffering: nginx must pass
     * events through at once. */
    http_stream_begin(x->req, 200, ctype,
                      "Cache-Control: no-store, no-transform\r\nX-Accel-Buffering: no\r\n");
    http_stream_on_close(x->req, on_closed, s);
    /* first: retry, who serves it, and an open event carrying the start position as its id */
    struct core_ha_status st;
    core_ha_status(a->core, &st);
    if (s->sse) {
        sbuf_printf(&s->out, "retry: %llu\n: ayder subscription node=%s role=%s\n\n",
                    (unsigned long long)s->retry_ms, st.node_id[0] ? st.node_id : "local",
                    st.role ? st.role : "leader");
    }
    struct jw w;
    event_open(s, &w, "subscribed");
    jw_kstr(&w, "node", st.node_id[0] ? st.node_id : "local");
    jw_kstr(&w, "role", st.role ? st.role : "leader");
    if (st.leader_url[0])
        jw_kstr(&w, "leader_url", st.leader_url);
    else
        jw_knull(&w, "leader_url");
    jw_key(&w, "topic");
    jw_strn(&w, topic.ptr, topic.len);
    jw_key(&w, "group");
    jw_strn(&w, group.ptr, group.len);
    jw_key(&w, "partitions");
    jw_arr_open(&w);
    for (uint32_t i = 0; i < n; i++)
        jw_u64(&w, s->parts[i].partition);
    jw_arr_close(&w);
    jw_ku64(&w, "buffer_bytes", a->cfg.sub_buffer_bytes);
    jw_kbool(&w, "auto_commit", s->auto_commit);
    event_close(s, &w);
    s->last_commit_ms = clock_mono_ms();
    flush_out(s);
    pump(s);
    rearm(s);
}

void api_subscribe(struct rctx *x, const struct route_match *m, int32_t partition)
{
    subscribe(x, route_param(m, "topic"), route_param(m, "group"), partition);
}

static void h_subscribe(struct rctx *x, const struct route_match *m)
{
    api_subscribe(x, m, -1);
}

const struct api_route api_subscribe_routes[] = {
    {"GET", "/broker/subscribe/:topic/:group", "subscribe", SCOPE_CONSUME, API_READ | API_TOKEN_IN_QUERY,
     h_subscribe},
    API_ROUTES_END,
};
