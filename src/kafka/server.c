/* server.c -- the Kafka listener (see server.h for the thread model).
 *
 *   socket bytes ──▶ conn.in ──pump──▶ frame ──codec──▶ struct kreq ──▶ handler
 *                                                                         │
 *       sync handlers (ApiVersions, Metadata, ListOffsets, OffsetFetch,   │
 *       FindCoordinator, groups) answer at once ◀────────────────────────┤
 *                                                                         │
 *       Produce / OffsetCommit / Create/DeleteTopics: one proposal per    │
 *       partition or topic ──core_propose──▶ core thread ──done()──post──▶ op_done ─▶ answer
 *                                                                         │
 *       Fetch: read batches; too few bytes and max_wait_ms > 0: park one  │
 *       broker waiter per partition + a timer ──wake()──post / timer──▶ fetch again ─▶ answer
 *
 * Invariants:
 *  1. A connection has at most one request in progress (conn.cur); the next frame is parsed only
 *     after it is answered (or, for acks=0 produce, after its proposals are submitted), so
 *     responses go out in request order and each on its own connection.
 *  2. A kreq is freed only when it is answered (or orphaned by its connection closing), none of
 *     its proposals is still in the core (pending == 0), none of its waiters is still parked or
 *     has a wake in flight (parked == 0), and its timer handle is closed.
 *  3. Bytes from the network are never asserted on: a bad or oversized frame closes the
 *     connection; everything else is answered with a Kafka error code.
 *  4. Stored batches go out exactly as stored (plog_read_batches): Fetch never re-encodes.
 *  5. In a cluster only the Raft leader (as this node knows it) serves partition data and
 *     groups: Metadata names it as every partition's leader and FindCoordinator as the group
 *     coordinator; on any other node Produce, Fetch and ListOffsets answer 6 and the group APIs
 *     16, so clients refresh and go to the leader (a stale "I lead" only delays the refusal
 *     to the core: a deposed leader's proposals fail, its reads are of committed data).
 */
#include "kafka/server.h"

#include "base/alloc.h"
#include "base/assert.h"
#include "base/clock.h"
#include "base/err.h"
#include "base/log.h"
#include "broker/broker.h"
#include "broker/entry.h"
#include "core/core.h"
#include "core/ha_config.h"
#include "kafka/codec.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <uv.h>

#define NODE_ID 1                     /* the broker id of a single node */
#define REQ_ARENA_MAX (32u << 20)
#define READ_PAUSE_BYTES (4u << 20)   /* stop reading while a request runs and this is buffered */
#define WRITE_PAUSE_BYTES (8u << 20)  /* stop parsing while this much output is unsent */
#define FETCH_WAIT_MAX_MS 30000
#define FETCH_PARTITIONS_MAX 10000
#define GROUP_MEMBERS_MAX 1000
#define GROUPS_MAX 10000

struct kserver;
struct kreq;

/* An item another thread hands to the kafka thread. */
struct kpost {
    struct kpost *next;
    void (*fn)(struct kpost *p);
};

struct kconn {
    uv_tcp_t tcp;
    struct kserver *s;
    struct sbuf in;
    size_t rpos;            /* parsed up to here */
    struct kreq *cur;       /* invariant 1 */
    bool closing, reading, pumping;
    struct kconn *prev, *next;
};

/* One proposal of a request (a produce partition, a commit, a topic create/delete). */
struct kop {
    struct proposal p;
    struct kpost post;
    struct kreq *r;
    uint32_t slot;          /* index into r->res */
};

struct kwait {
    struct broker_waiter w;
    struct kpost post;
    struct kreq *r;
    bool parked;
};

struct kres {
    int16_t err;
    int64_t offset;
    int64_t timestamp;
};

struct kreq {
    struct kserver *s;
    struct kconn *c;        /* NULL once orphaned */
    uint8_t *frame;
    size_t frame_len;
    struct arena arena;
    struct kafka_request q;
    struct kres *res;       /* one per (topic, partition) slot or per topic */
    uint32_t *toff;         /* first slot of each topic */
    uint32_t nslots;
    struct kop *ops;
    uint32_t pending;       /* ops in the core */
    void (*complete)(struct kreq *r);
    struct kwait *waits;
    uint32_t nwaits, parked;
    uv_timer_t timer;
    bool timer_init, timer_closed, fired, waited, responded;
};

struct kgroup;

/* One entry of --kafka-nodes / RF_KAFKA_NODES: where clients reach a member's Kafka listener. */
struct kaddr {
    char name[HA_NAME_MAX];
    char host[HA_HOST_MAX];
    int port;
};

/* The cluster as one request sees it (see "Cluster view"). */
struct kview {
    uint32_t n;
    int32_t ids[HA_MAX_NODES];
    char hosts[HA_MAX_NODES][HA_HOST_MAX];
    int ports[HA_MAX_NODES];
    int32_t leader;     /* broker id of the Raft leader; -1 = none known */
    bool self_leads;
};

struct kserver {
    struct kafka_server_config cfg;
    char bind[64], host[256];
    int port;
    struct core *core;
    struct broker *broker;
    uv_loop_t loop;
    uv_tcp_t listener;
    uv_async_t async;
    uv_timer_t group_timer;
    uv_thread_t thread;
    pthread_mutex_t mu;
    struct kpost *head, *tail;
    bool stop;
    uint32_t nconns;
    struct kconn *conns;
    struct kgroup *groups;
    uint32_t ngroups;
    uint64_t member_seq;
    struct kaddr addrs[HA_MAX_NODES];
    uint32_t naddrs;
};

static void conn_pump(struct kconn *c);
static void conn_close(struct kconn *c);
static void fetch_run(struct kreq *r);
static void groups_init(struct kserver *s);
static void groups_free(struct kserver *s);
static void handle_group(struct kreq *r);
static bool group_commit_check(struct kreq *r, int16_t *err);
static void groups_forget_req(struct kserver *s, struct kreq *r);

/* ------------------------------------------------------------------------------------------ */
/* Cross-thread posts                                                                          */

static void post(struct kserver *s, struct kpost *p)
{
    pthread_mutex_lock(&s->mu);
    p->next = NULL;
    if (s->tail)
        s->tail->next = p;
    else
        s->head = p;
    s->tail = p;
    pthread_mutex_unlock(&s->mu);
    uv_async_send(&s->async);
}

static void on_async(uv_async_t *a)
{
    struct kserver *s = a->data;
    pthread_mutex_lock(&s->mu);
    struct kpost *p = s->head;
    s->head = s->tail = NULL;
    pthread_mutex_unlock(&s->mu);
    while (p) {
        struct kpost *next = p->next;
        p->fn(p);
        p = next;
    }
    if (s->stop) {
        for (struct kconn *c = s->conns; c; c = c->next)
            conn_close(c);
        if (!uv_is_closing((uv_handle_t *)&s->listener))
            uv_close((uv_handle_t *)&s->listener, NULL);
        if (!uv_is_closing((uv_handle_t *)&s->group_timer))
            uv_close((uv_handle_t *)&s->group_timer, NULL);
        /* the async handle is closed last, once no request can post any more */
        bool busy = s->conns != NULL;
        if (!busy && !uv_is_closing((uv_handle_t *)&s->async))
            uv_close((uv_handle_t *)&s->async, NULL);
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Errors                                                                                      */

static int16_t kerr_of(int rc)
{
    switch (rc) {
    case 0: return KERR_NONE;
    case ERR_NO_TOPIC:
    case ERR_BAD_PARTITION: return KERR_UNKNOWN_TOPIC_OR_PARTITION;
    case ERR_BAD_NAME: return KERR_INVALID_TOPIC_EXCEPTION;
    case ERR_NOT_LEADER:
    case ERR_NO_LEADER: return KERR_NOT_LEADER_FOR_PARTITION;
    case ERR_COMMIT_TIMEOUT:
    case ERR_NOT_COMMITTED:
    case ERR_OVERLOADED:
    case ERR_NOT_READY: return KERR_REQUEST_TIMED_OUT;
    case ERR_TOO_LARGE: return KERR_MESSAGE_TOO_LARGE;
    case ERR_CORRUPT: return KERR_CORRUPT_MESSAGE;
    case ERR_CONFLICT: return KERR_TOPIC_ALREADY_EXISTS;
    case ERR_STORE_FAILED:
    case ERR_NOSPACE: return KERR_NOT_ENOUGH_REPLICAS;
    default: return KERR_UNKNOWN_SERVER_ERROR;
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Requests                                                                                    */

static void timer_closed(uv_handle_t *h);

static void req_maybe_free(struct kreq *r)
{
    if (r->pending || r->parked || !(r->responded || !r->c))
        return;
    if (r->timer_init && !r->timer_closed) {
        if (!uv_is_closing((uv_handle_t *)&r->timer))
            uv_close((uv_handle_t *)&r->timer, timer_closed);
        return;
    }
    if (r->c && r->c->cur == r)
        r->c->cur = NULL;
    for (uint32_t i = 0; r->ops && i < r->nslots; i++)
        sbuf_free(&r->ops[i].p.payload);
    xfree(r->ops);
    xfree(r->waits);
    arena_free(&r->arena);
    xfree(r->frame);
    xfree(r);
}

static void timer_closed(uv_handle_t *h)
{
    struct kreq *r = h->data;
    r->timer_closed = true;
    req_maybe_free(r);
}

struct wreq {
    uv_write_t w;
    struct sbuf b;
    struct kconn *c;
};

static void on_write(uv_write_t *w, int status)
{
    struct wreq *wr = (struct wreq *)w;
    struct kconn *c = wr->c;
    sbuf_free(&wr->b);
    xfree(wr);
    if (status < 0) {
        conn_close(c);
        return;
    }
    if (!c->closing && !c->cur)
        conn_pump(c);
}

/* Queue bytes on the connection (takes b). */
static void conn_send(struct kconn *c, struct sbuf *b)
{
    if (c->closing || !sbuf_ok(b)) {
        sbuf_free(b);
        if (!c->closing)
            conn_close(c); /* an answer we could not build: the client must not wait for it */
        return;
    }
    struct wreq *wr = xcalloc(1, sizeof *wr);
    if (!wr) {
        sbuf_free(b);
        conn_close(c);
        return;
    }
    wr->b = *b;
    wr->c = c;
    uv_buf_t buf = uv_buf_init((char *)wr->b.data, (unsigned)wr->b.len);
    if (uv_write(&wr->w, (uv_stream_t *)&c->tcp, &buf, 1, on_write) < 0) {
        sbuf_free(&wr->b);
        xfree(wr);
        conn_close(c);
    }
}

/* Answer r (b == NULL: no answer, acks=0) and let the connection go on. */
static void req_respond(struct kreq *r, struct sbuf *b)
{
    ASSERT(!r->responded);
    r->responded = true;
    struct kconn *c = r->c;
    r->c = NULL;
    if (c) {
        if (c->cur == r)
            c->cur = NULL;
        if (b)
            conn_send(c, b);
        if (!c->pumping && !c->closing)
            conn_pump(c);
    } else if (b) {
        sbuf_free(b);
    }
    req_maybe_free(r);
}

static size_t resp_start(struct kreq *r, struct sbuf *b)
{
    sbuf_init(b, 0);
    return kafka_resp_begin(b, r->q.h.correlation_id);
}

static void resp_finish(struct kreq *r, struct sbuf *b, size_t start)
{
    kafka_resp_end(b, start);
    req_respond(r, b);
}

static bool slots_init(struct kreq *r, bool per_partition)
{
    const struct kafka_request *q = &r->q;
    r->toff = arena_alloc(&r->arena, (q->ntopics + 1) * sizeof *r->toff);
    if (!r->toff)
        return false;
    uint32_t n = 0;
    for (uint32_t i = 0; i < q->ntopics; i++) {
        r->toff[i] = n;
        n += per_partition ? q->topics[i].nparts : 1;
    }
    r->toff[q->ntopics] = n;
    r->nslots = n;
    r->res = arena_alloc(&r->arena, (n ? n : 1) * sizeof *r->res);
    r->ops = xcalloc(n ? n : 1, sizeof *r->ops);
    if (!r->res || !r->ops)
        return false;
    memset(r->res, 0, (n ? n : 1) * sizeof *r->res);
    return true;
}

/* ------------------------------------------------------------------------------------------ */
/* Proposals                                                                                   */

static void op_done_core(struct proposal *p)
{
    if (p->phase != PROPOSAL_DONE)
        return; /* every concern ends with PROPOSAL_DONE; answer only then */
    struct kop *op = p->ctx;
    post(op->r->s, &op->post);
}

static void op_done(struct kpost *pp)
{
    struct kop *op = (struct kop *)((char *)pp - offsetof(struct kop, post));
    struct kreq *r = op->r;
    struct kres *res = &r->res[op->slot];
    res->err = kerr_of(op->p.err ? op->p.err : op->p.res.err);
    res->offset = (int64_t)op->p.res.offset;
    if (op->p.type == ENTRY_TOPIC_CREATE && !op->p.err && !op->p.res.err && !op->p.res.created)
        res->err = KERR_TOPIC_ALREADY_EXISTS;
    sbuf_free(&op->p.payload);
    ASSERT(r->pending > 0);
    if (--r->pending == 0 && r->complete && !r->responded) {
        r->complete(r); /* answers, which frees r if nothing else holds it */
        return;
    }
    req_maybe_free(r);
}

/* Submit a proposal whose payload is already in op->p.payload. */
static void op_submit(struct kreq *r, uint32_t slot, uint8_t type, uint8_t concern)
{
    struct kop *op = &r->ops[slot];
    op->r = r;
    op->slot = slot;
    op->post.fn = op_done;
    op->p.type = type;
    op->p.concern = concern;
    op->p.done = op_done_core;
    op->p.ctx = op;
    if (!sbuf_ok(&op->p.payload)) {
        sbuf_free(&op->p.payload);
        r->res[slot].err = KERR_UNKNOWN_SERVER_ERROR;
        return;
    }
    int rc = core_propose(r->s->core, &op->p);
    if (rc) {
        sbuf_free(&op->p.payload);
        r->res[slot].err = kerr_of(rc);
        return;
    }
    r->pending++;
}

/* ------------------------------------------------------------------------------------------ */
/* ApiVersions, Metadata, FindCoordinator                                                      */

/* ------------------------------------------------------------------------------------------ */
/* Cluster view                                                                                */

/* A member's Kafka broker id: the low 31 bits of its node id (transport_node_id of its name),
 * so every node computes the same id for a member without any coordination. A single node is
 * broker 1. */
static int32_t broker_id_of(uint64_t node_id) { return (int32_t)(node_id & 0x7fffffffu); }

static int own_port(const struct kserver *s)
{
    return s->cfg.advertised_port ? s->cfg.advertised_port : s->port;
}

/* The address rule (docs/KAFKA.md "Cluster"): a member named in --kafka-nodes is announced at
 * the address given there; otherwise at its RF_HA_NODES host and this node's own Kafka port
 * (every member listening on the same port, as on separate hosts); this node itself, when not
 * named, at --kafka-advertise if given, else its RF_HA_NODES host. */
static void view_build(struct kserver *s, struct kview *v)
{
    memset(v, 0, sizeof *v);
    struct ha_node nodes[HA_MAX_NODES];
    size_t n = core_members(s->core, nodes, HA_MAX_NODES);
    if (n == 0) {
        v->n = 1;
        v->ids[0] = NODE_ID;
        snprintf(v->hosts[0], sizeof v->hosts[0], "%s", s->host);
        v->ports[0] = own_port(s);
        v->leader = NODE_ID;
        v->self_leads = true;
        return;
    }
    uint64_t self = core_self_id(s->core);
    uint64_t leader = core_leader(s->core, NULL, 0);
    v->leader = -1;
    for (size_t i = 0; i < n; i++) {
        const struct kaddr *a = NULL;
        for (uint32_t k = 0; k < s->naddrs && !a; k++)
            if (strcmp(s->addrs[k].name, nodes[i].name) == 0)
                a = &s->addrs[k];
        const char *host = nodes[i].host;
        int port = own_port(s);
        if (a) {
            host = a->host;
            port = a->port;
        } else if (nodes[i].id == self && s->cfg.advertised_host && *s->cfg.advertised_host) {
            host = s->cfg.advertised_host;
        }
        v->ids[v->n] = broker_id_of(nodes[i].id);
        snprintf(v->hosts[v->n], sizeof v->hosts[v->n], "%s", host);
        v->ports[v->n] = port;
        v->n++;
        if (leader && nodes[i].id == leader)
            v->leader = broker_id_of(leader);
    }
    v->self_leads = leader != 0 && leader == self;
}

/* Whether this node may serve partition data and groups: the Raft leader (or a single node). */
static bool kafka_leads(struct kserver *s)
{
    return !core_cluster(s->core) || core_leader(s->core, NULL, 0) == core_self_id(s->core);
}

/* Parse "name=host:port,..." (host may be [IPv6]). 0 or ERR_INVALID with a logged sentence. */
static int parse_addrs(struct kserver *s, const char *spec)
{
    s->naddrs = 0;
    if (!spec || !*spec)
        return 0;
    const char *p = spec;
    for (;;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        const char *eq = memchr(p, '=', len);
        const char *end = p + len;
        const char *colon = NULL;
        for (const char *q = end; q > p; q--)
            if (q[-1] == ':') {
                colon = q - 1;
                break;
            }
        long port = 0;
        if (colon) {
            char *pe;
            port = strtol(colon + 1, &pe, 10);
            if (pe != end || colon + 1 == end)
                port = 0;
        }
        const char *h = eq ? eq + 1 : NULL, *he = colon;
        if (h && he && he - h >= 2 && *h == '[' && he[-1] == ']') {
            h++;
            he--;
        }
        if (s->naddrs == HA_MAX_NODES || !eq || eq == p || (size_t)(eq - p) >= HA_NAME_MAX ||
            !colon || colon < eq || he <= h || (size_t)(he - h) >= HA_HOST_MAX || port < 1 ||
            port > 65535) {
            LOG_E("kafka", "--kafka-nodes: item '%.*s': expected name=host:port (at most %d)",
                  (int)len, p, HA_MAX_NODES);
            return ERR_INVALID;
        }
        struct kaddr *a = &s->addrs[s->naddrs++];
        memcpy(a->name, p, (size_t)(eq - p));
        a->name[eq - p] = 0;
        memcpy(a->host, h, (size_t)(he - h));
        a->host[he - h] = 0;
        a->port = (int)port;
        if (!comma)
            break;
        p = comma + 1;
    }
    return 0;
}

static void handle_api_versions(struct kreq *r, int16_t error)
{
    struct sbuf b;
    size_t st = resp_start(r, &b);
    /* an unsupported (e.g. flexible v3) request is answered in v0 so any client can read it */
    kafka_write_api_versions(&b, error ? 0 : r->q.h.api_version, error);
    resp_finish(r, &b, st);
}

struct name_list {
    struct kreq *r;
    struct slice *names;
    uint32_t *parts;
    uint32_t n, cap;
};

static void list_cb(void *ctx, struct slice name, uint32_t partitions)
{
    struct name_list *l = ctx;
    if (l->n == l->cap) {
        uint32_t cap = l->cap ? l->cap * 2 : 64;
        struct slice *nn = arena_alloc(&l->r->arena, cap * sizeof *nn);
        uint32_t *np = arena_alloc(&l->r->arena, cap * sizeof *np);
        if (!nn || !np)
            return;
        if (l->n) {
            memcpy(nn, l->names, l->n * sizeof *nn);
            memcpy(np, l->parts, l->n * sizeof *np);
        }
        l->names = nn;
        l->parts = np;
        l->cap = cap;
    }
    uint8_t *copy = arena_alloc(&l->r->arena, name.len ? name.len : 1);
    if (!copy)
        return;
    memcpy(copy, name.ptr, name.len);
    l->names[l->n] = slice_of(copy, name.len);
    l->parts[l->n] = partitions;
    l->n++;
}

static void write_broker(const struct kview *v, uint32_t i, struct sbuf *b)
{
    kw_i32(b, v->ids[i]);
    kw_cstr(b, v->hosts[i]);
    kw_i32(b, v->ports[i]);
}

static void topic_create_async_done(struct proposal *p)
{
    if (p->phase != PROPOSAL_DONE)
        return;
    sbuf_free(&p->payload);
    xfree(p);
}

/* Metadata for an unknown topic with auto-creation on: propose the create and answer
 * LEADER_NOT_AVAILABLE, as Kafka does while a topic is being created; the client asks again. */
static void auto_create(struct kserver *s, struct slice name)
{
    struct proposal *p = xcalloc(1, sizeof *p);
    if (!p)
        return;
    struct entry_topic e = {clock_wall_ms(), name, s->cfg.default_partitions};
    sbuf_init(&p->payload, 0);
    entry_topic_encode(&p->payload, &e);
    p->type = ENTRY_TOPIC_CREATE;
    p->done = topic_create_async_done;
    if (!sbuf_ok(&p->payload) || core_propose(s->core, p)) {
        sbuf_free(&p->payload);
        xfree(p);
    }
}

/* Every partition is led by the Raft leader and replicated to every member (one Raft group
 * holds every partition); the ISR is reported as every member too: Raft's commit rule, not a
 * per-partition ISR, decides what acks=all waits for. */
static void write_partitions(struct sbuf *b, uint32_t n, const struct kview *v)
{
    kw_i32(b, (int32_t)n);
    for (uint32_t i = 0; i < n; i++) {
        kw_i16(b, v->leader >= 0 ? KERR_NONE : KERR_LEADER_NOT_AVAILABLE);
        kw_i32(b, (int32_t)i);
        kw_i32(b, v->leader);
        for (int k = 0; k < 2; k++) { /* replicas, isr */
            kw_i32(b, (int32_t)v->n);
            for (uint32_t j = 0; j < v->n; j++)
                kw_i32(b, v->ids[j]);
        }
    }
}

static void handle_metadata(struct kreq *r)
{
    struct kserver *s = r->s;
    const struct kafka_request *q = &r->q;
    int16_t v = q->h.api_version;
    struct kview *view = arena_alloc(&r->arena, sizeof *view);
    if (!view) {
        req_respond(r, NULL);
        return;
    }
    view_build(s, view);
    struct sbuf b;
    size_t st = resp_start(r, &b);
    if (v >= 3)
        kw_i32(&b, 0);
    kw_i32(&b, (int32_t)view->n);
    for (uint32_t i = 0; i < view->n; i++) {
        write_broker(view, i, &b);
        if (v >= 1)
            kw_null_str(&b); /* rack */
    }
    if (v >= 2)
        kw_cstr(&b, "ayder");
    if (v >= 1)
        kw_i32(&b, view->leader); /* controller */
    bool all = q->topics_null || (v == 0 && q->ntopics == 0);
    if (all) {
        struct name_list l = {r, NULL, NULL, 0, 0};
        broker_list(s->broker, list_cb, &l);
        kw_i32(&b, (int32_t)l.n);
        for (uint32_t i = 0; i < l.n; i++) {
            kw_i16(&b, KERR_NONE);
            kw_str(&b, l.names[i]);
            if (v >= 1)
                kw_i8(&b, 0);
            write_partitions(&b, l.parts[i], view);
        }
    } else {
        kw_i32(&b, (int32_t)q->ntopics);
        for (uint32_t i = 0; i < q->ntopics; i++) {
            struct slice name = q->topics[i].name;
            uint32_t n = 0;
            int16_t err = KERR_NONE;
            if (!broker_valid_name(name, BROKER_TOPIC_NAME_MAX)) {
                err = KERR_INVALID_TOPIC_EXCEPTION;
            } else if (broker_partitions(s->broker, name, &n)) {
                err = KERR_UNKNOWN_TOPIC_OR_PARTITION;
                if (s->cfg.auto_create_topics && q->allow_auto_create) {
                    auto_create(s, name);
                    err = KERR_LEADER_NOT_AVAILABLE;
                }
                n = 0;
            }
            kw_i16(&b, err);
            kw_str(&b, name);
            if (v >= 1)
                kw_i8(&b, 0);
            write_partitions(&b, n, view);
        }
    }
    resp_finish(r, &b, st);
}

static void handle_find_coordinator(struct kreq *r)
{
    int16_t v = r->q.h.api_version;
    struct sbuf b;
    size_t st = resp_start(r, &b);
    if (v >= 1)
        kw_i32(&b, 0);
    /* Groups are coordinated by the Raft leader's Kafka thread (their committed offsets are
     * proposals, which only the leader makes); 1 = transaction coordinator: not served. */
    struct kview *view = arena_alloc(&r->arena, sizeof *view);
    uint32_t li = 0;
    if (view) {
        view_build(r->s, view);
        while (li < view->n && view->ids[li] != view->leader)
            li++;
    }
    bool ok = r->q.key_type == 0 && view && li < view->n;
    kw_i16(&b, ok ? KERR_NONE : KERR_COORDINATOR_NOT_AVAILABLE);
    if (v >= 1)
        kw_null_str(&b);
    if (ok) {
        write_broker(view, li, &b);
    } else {
        kw_i32(&b, -1);
        kw_cstr(&b, "");
        kw_i32(&b, -1);
    }
    resp_finish(r, &b, st);
}

/* ------------------------------------------------------------------------------------------ */
/* Produce                                                                                     */

static void produce_complete(struct kreq *r)
{
    const struct kafka_request *q = &r->q;
    int16_t v = q->h.api_version;
    if (q->acks == 0) {
        req_respond(r, NULL);
        return;
    }
    struct sbuf b;
    size_t st = resp_start(r, &b);
    kw_i32(&b, (int32_t)q->ntopics);
    for (uint32_t i = 0; i < q->ntopics; i++) {
        const struct kafka_topic *t = &q->topics[i];
        kw_str(&b, t->name);
        kw_i32(&b, (int32_t)t->nparts);
        for (uint32_t j = 0; j < t->nparts; j++) {
            const struct kres *res = &r->res[r->toff[i] + j];
            kw_i32(&b, t->parts[j].partition);
            kw_i16(&b, res->err);
            kw_i64(&b, res->err ? -1 : res->offset);
            kw_i64(&b, -1); /* log_append_time: CreateTime topics */
            if (v >= 5)
                kw_i64(&b, -1); /* log_start_offset: not reported */
        }
    }
    kw_i32(&b, 0); /* throttle_time_ms */
    resp_finish(r, &b, st);
}

static void handle_produce(struct kreq *r)
{
    struct kafka_request *q = &r->q;
    if (!slots_init(r, true)) {
        req_respond(r, NULL);
        return;
    }
    int16_t all_err = KERR_NONE;
    uint8_t concern = WC_MAJORITY;
    if (q->acks == 0)
        concern = WC_ASYNC;
    else if (q->acks == 1)
        concern = WC_ONE;
    else if (q->acks != -1)
        all_err = KERR_INVALID_REQUIRED_ACKS;
    if (q->transactional)
        all_err = KERR_UNSUPPORTED_FOR_MESSAGE_FORMAT; /* no transactions */
    bool cluster = core_cluster(r->s->core);
    int64_t now = clock_wall_ms();
    for (uint32_t i = 0; i < q->ntopics; i++) {
        const struct kafka_topic *t = &q->topics[i];
        bool name_ok = broker_valid_name(t->name, BROKER_TOPIC_NAME_MAX);
        for (uint32_t j = 0; j < t->nparts; j++) {
            uint32_t slot = r->toff[i] + j;
            const struct kafka_part *pt = &t->parts[j];
            struct kres *res = &r->res[slot];
            uint32_t count = 0;
            if (all_err) {
                res->err = all_err;
                continue;
            }
            if (!name_ok) {
                res->err = KERR_INVALID_TOPIC_EXCEPTION;
                continue;
            }
            if (pt->partition < 0 || pt->partition >= BROKER_PARTITIONS_MAX) {
                res->err = KERR_UNKNOWN_TOPIC_OR_PARTITION;
                continue;
            }
            if (pt->data_null || (res->err = (int16_t)kafka_check_batch(pt->data, &count)))
            {
                if (!res->err)
                    res->err = KERR_CORRUPT_MESSAGE;
                continue;
            }
            struct kop *op = &r->ops[slot];
            sbuf_init(&op->p.payload, 0);
            entry_produce_raw(&op->p.payload, now, t->name, pt->data, count);
            op->p.partition = pt->partition;
            op->p.record_count = count;
            op->p.timeout_ms = cluster && q->timeout_ms > 0 ? (uint64_t)q->timeout_ms : 0;
            op_submit(r, slot, ENTRY_PRODUCE, concern);
        }
    }
    r->complete = produce_complete;
    if (r->pending == 0) {
        produce_complete(r);
        return;
    }
    if (q->acks == 0) {
        /* No answer is sent: the connection moves on while the proposals finish. */
        r->complete = NULL;
        req_respond(r, NULL);
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Fetch                                                                                       */

static void fetch_fire(struct kreq *r)
{
    if (r->fired)
        return;
    r->fired = true;
    if (r->timer_init)
        uv_timer_stop(&r->timer);
    for (uint32_t i = 0; i < r->nwaits; i++) {
        struct kwait *w = &r->waits[i];
        if (w->parked && broker_unwait(r->s->broker, &w->w)) {
            w->parked = false;
            r->parked--;
        }
    }
    fetch_run(r);
}

static void fetch_woken(struct kpost *pp)
{
    struct kwait *w = (struct kwait *)((char *)pp - offsetof(struct kwait, post));
    struct kreq *r = w->r;
    w->parked = false;
    ASSERT(r->parked > 0);
    r->parked--;
    if (!r->fired) {
        fetch_fire(r); /* answers, which frees r if nothing else holds it */
        return;
    }
    req_maybe_free(r);
}

static void fetch_wake_core(struct broker_waiter *bw)
{
    struct kwait *w = (struct kwait *)bw;
    post(w->r->s, &w->post);
}

static void fetch_timeout(uv_timer_t *t)
{
    struct kreq *r = t->data;
    fetch_fire(r);
}

/* Park on every partition that has nothing past its fetch offset. false: nothing parked and no
 * reason to wait. */
static bool fetch_park(struct kreq *r)
{
    const struct kafka_request *q = &r->q;
    uint32_t n = 0;
    for (uint32_t i = 0; i < q->ntopics; i++)
        n += q->topics[i].nparts;
    if (n == 0 || n > FETCH_PARTITIONS_MAX)
        return false;
    r->waits = xcalloc(n, sizeof *r->waits);
    if (!r->waits)
        return false;
    r->nwaits = n;
    uint32_t k = 0;
    for (uint32_t i = 0; i < q->ntopics; i++) {
        for (uint32_t j = 0; j < q->topics[i].nparts; j++, k++) {
            const struct kafka_part *pt = &q->topics[i].parts[j];
            struct kwait *w = &r->waits[k];
            w->r = r;
            w->post.fn = fetch_woken;
            w->w.wake = fetch_wake_core;
            if (pt->offset < 0 || !r->res || r->res[k].err)
                continue;
            if (broker_wait(r->s->broker, q->topics[i].name, (uint32_t)pt->partition,
                            (uint64_t)pt->offset, &w->w) == 0) {
                w->parked = true;
                r->parked++;
            }
        }
    }
    if (!r->timer_init) {
        uv_timer_init(&r->s->loop, &r->timer);
        r->timer.data = r;
        r->timer_init = true;
    }
    int32_t wait = q->max_wait_ms > FETCH_WAIT_MAX_MS ? FETCH_WAIT_MAX_MS : q->max_wait_ms;
    uv_timer_start(&r->timer, fetch_timeout, (uint64_t)wait, 0);
    return true;
}

static void fetch_run(struct kreq *r)
{
    const struct kafka_request *q = &r->q;
    int16_t v = q->h.api_version;
    struct kserver *s = r->s;
    struct sbuf b;
    size_t st = resp_start(r, &b);
    kw_i32(&b, 0); /* throttle_time_ms */
    if (v >= 7) {
        kw_i16(&b, KERR_NONE);
        kw_i32(&b, 0); /* session_id: no fetch sessions (every fetch is a full fetch) */
    }
    size_t total = 0;
    size_t max_total = q->max_bytes > 0 ? (size_t)q->max_bytes : (size_t)INT32_MAX;
    /* Followers do not serve fetches (no KIP-392 follower fetching): the client refreshes its
     * metadata and fetches from the leader, so no consumer reads a copy that lags the leader. */
    bool lead = kafka_leads(s);
    kw_i32(&b, (int32_t)q->ntopics);
    uint32_t k = 0;
    for (uint32_t i = 0; i < q->ntopics; i++) {
        const struct kafka_topic *t = &q->topics[i];
        kw_str(&b, t->name);
        kw_i32(&b, (int32_t)t->nparts);
        for (uint32_t j = 0; j < t->nparts; j++, k++) {
            const struct kafka_part *pt = &t->parts[j];
            kw_i32(&b, pt->partition);
            size_t err_pos = b.len;
            kw_i16(&b, 0);
            size_t hw_pos = b.len;
            kw_i64(&b, -1); /* high watermark */
            kw_i64(&b, -1); /* last stable offset */
            if (v >= 5)
                kw_i64(&b, -1); /* log start offset */
            kw_i32(&b, -1); /* aborted transactions: null */
            if (v >= 11)
                kw_i32(&b, -1); /* preferred read replica */
            size_t len_pos = b.len;
            kw_i32(&b, 0);
            if (!sbuf_ok(&b))
                break;
            int16_t err = KERR_NONE;
            uint64_t hw = 0, start = 0;
            struct plog_read_result rr;
            size_t before = b.len;
            size_t budget = pt->max_bytes > 0 ? (size_t)pt->max_bytes : 0;
            if (total > 0 && budget > max_total - total)
                budget = max_total > total ? max_total - total : 0;
            if (!lead) {
                err = KERR_NOT_LEADER_FOR_PARTITION;
            } else if (pt->partition < 0) {
                err = KERR_UNKNOWN_TOPIC_OR_PARTITION;
            } else if (pt->offset < 0) {
                err = KERR_OFFSET_OUT_OF_RANGE;
            } else {
                /* a zero budget still learns hw/start: read with from = hw-ish (nothing copied) */
                size_t want = (budget == 0 || (total > 0 && total >= max_total)) ? 0 : budget;
                int rc = broker_read_batches(s->broker, t->name, (uint32_t)pt->partition,
                                             want ? (uint64_t)pt->offset : UINT64_MAX, want ? want : 1,
                                             &b, &rr, &hw, &start);
                if (rc == ERR_NO_TOPIC || rc == ERR_BAD_PARTITION) {
                    err = KERR_UNKNOWN_TOPIC_OR_PARTITION;
                } else if (rc) {
                    err = rc == ERR_CORRUPT ? KERR_CORRUPT_MESSAGE : KERR_UNKNOWN_SERVER_ERROR;
                } else if ((uint64_t)pt->offset > hw || (uint64_t)pt->offset < start) {
                    err = KERR_OFFSET_OUT_OF_RANGE;
                }
                if (err || !sbuf_ok(&b))
                    b.len = before;
                if (!sbuf_ok(&b))
                    break;
            }
            if (r->res)
                r->res[k].err = err;
            put_be16(b.data + err_pos, (uint16_t)err);
            if (!err) {
                put_be64(b.data + hw_pos, hw);
                put_be64(b.data + hw_pos + 8, hw);
                if (v >= 5)
                    put_be64(b.data + hw_pos + 16, start);
            }
            put_be32(b.data + len_pos, (uint32_t)(b.len - before));
            total += b.len - before;
        }
    }
    bool wait = lead && !r->waited && q->max_wait_ms > 0 && total < (size_t)(q->min_bytes > 0 ? q->min_bytes : 1) &&
                r->c != NULL && sbuf_ok(&b);
    if (wait) {
        r->waited = true;
        sbuf_free(&b);
        if (fetch_park(r))
            return;
        fetch_run(r);
        return;
    }
    resp_finish(r, &b, st);
}

static void handle_fetch(struct kreq *r)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < r->q.ntopics; i++)
        n += r->q.topics[i].nparts;
    if (n) {
        r->res = arena_alloc(&r->arena, n * sizeof *r->res);
        if (r->res)
            memset(r->res, 0, n * sizeof *r->res);
    }
    fetch_run(r);
}

/* ------------------------------------------------------------------------------------------ */
/* ListOffsets                                                                                 */

struct ts_find {
    int64_t ts;
    bool found;
    uint64_t offset;
    int64_t found_ts;
};

static int ts_visit(void *ctx, const struct plog_record *rec)
{
    struct ts_find *f = ctx;
    if (rec->timestamp_ms >= f->ts) {
        f->found = true;
        f->offset = rec->offset;
        f->found_ts = rec->timestamp_ms;
        return 1;
    }
    return 0;
}

/* First offset whose timestamp is >= ts: start at the time index's lower bound and scan. */
static int16_t offset_for_time(struct kserver *s, struct slice topic, uint32_t part, int64_t ts,
                               int64_t *offset, int64_t *found_ts)
{
    uint64_t from;
    int rc = broker_offset_for_time(s->broker, topic, part, ts, &from);
    if (rc)
        return kerr_of(rc);
    struct ts_find f = {ts, false, 0, -1};
    for (int rounds = 0; rounds < 10000 && !f.found; rounds++) {
        struct plog_read_result rr;
        uint64_t hw;
        rc = broker_read(s->broker, topic, part, from, 1000, (size_t)64 << 20, ts_visit, &f, &rr,
                         &hw, NULL);
        if (rc)
            return kerr_of(rc);
        if (rr.count == 0 || rr.next_offset >= hw)
            break;
        from = rr.next_offset;
    }
    *offset = f.found ? (int64_t)f.offset : -1;
    *found_ts = f.found ? f.found_ts : -1;
    return KERR_NONE;
}

static void handle_list_offsets(struct kreq *r)
{
    const struct kafka_request *q = &r->q;
    struct kserver *s = r->s;
    struct sbuf b;
    size_t st = resp_start(r, &b);
    if (q->h.api_version >= 2)
        kw_i32(&b, 0);
    bool lead = kafka_leads(s);
    kw_i32(&b, (int32_t)q->ntopics);
    for (uint32_t i = 0; i < q->ntopics; i++) {
        const struct kafka_topic *t = &q->topics[i];
        kw_str(&b, t->name);
        kw_i32(&b, (int32_t)t->nparts);
        for (uint32_t j = 0; j < t->nparts; j++) {
            const struct kafka_part *pt = &t->parts[j];
            int16_t err = KERR_NONE;
            int64_t off = -1, ts = -1;
            struct plog_read_result rr;
            uint64_t hw = 0, start = 0;
            if (!lead) {
                err = KERR_NOT_LEADER_FOR_PARTITION;
            } else if (pt->partition < 0) {
                err = KERR_UNKNOWN_TOPIC_OR_PARTITION;
            } else if (pt->timestamp == -1 || pt->timestamp == -2) {
                int rc = broker_read(s->broker, t->name, (uint32_t)pt->partition, UINT64_MAX, 0, 0,
                                     NULL, NULL, &rr, &hw, &start);
                err = kerr_of(rc);
                off = pt->timestamp == -1 ? (int64_t)hw : (int64_t)start;
            } else if (pt->timestamp < 0) {
                err = KERR_INVALID_REQUEST;
            } else {
                err = offset_for_time(s, t->name, (uint32_t)pt->partition, pt->timestamp, &off, &ts);
            }
            kw_i32(&b, pt->partition);
            kw_i16(&b, err);
            kw_i64(&b, err ? -1 : ts);
            kw_i64(&b, err ? -1 : off);
        }
    }
    resp_finish(r, &b, st);
}

/* ------------------------------------------------------------------------------------------ */
/* OffsetCommit / OffsetFetch                                                                  */

static void commit_complete(struct kreq *r)
{
    const struct kafka_request *q = &r->q;
    struct sbuf b;
    size_t st = resp_start(r, &b);
    if (q->h.api_version >= 3)
        kw_i32(&b, 0);
    kw_i32(&b, (int32_t)q->ntopics);
    for (uint32_t i = 0; i < q->ntopics; i++) {
        const struct kafka_topic *t = &q->topics[i];
        kw_str(&b, t->name);
        kw_i32(&b, (int32_t)t->nparts);
        for (uint32_t j = 0; j < t->nparts; j++) {
            kw_i32(&b, t->parts[j].partition);
            kw_i16(&b, r->res[r->toff[i] + j].err);
        }
    }
    resp_finish(r, &b, st);
}

static void handle_offset_commit(struct kreq *r)
{
    struct kafka_request *q = &r->q;
    if (!slots_init(r, true)) {
        req_respond(r, NULL);
        return;
    }
    int16_t all_err = KERR_NONE;
    if (!kafka_leads(r->s))
        all_err = KERR_NOT_COORDINATOR;
    else if (!broker_valid_name(q->group_id, BROKER_GROUP_NAME_MAX))
        all_err = KERR_INVALID_GROUP_ID;
    else
        group_commit_check(r, &all_err);
    int64_t now = clock_wall_ms();
    for (uint32_t i = 0; i < q->ntopics; i++) {
        const struct kafka_topic *t = &q->topics[i];
        for (uint32_t j = 0; j < t->nparts; j++) {
            uint32_t slot = r->toff[i] + j;
            const struct kafka_part *pt = &t->parts[j];
            if (all_err) {
                r->res[slot].err = all_err;
                continue;
            }
            uint32_t nparts;
            if (!broker_valid_name(t->name, BROKER_TOPIC_NAME_MAX) ||
                broker_partitions(r->s->broker, t->name, &nparts) || pt->partition < 0 ||
                (uint32_t)pt->partition >= nparts) {
                r->res[slot].err = KERR_UNKNOWN_TOPIC_OR_PARTITION;
                continue;
            }
            if (pt->offset < 0) {
                r->res[slot].err = KERR_OFFSET_OUT_OF_RANGE;
                continue;
            }
            struct entry_commit e = {now, t->name, q->group_id, (uint32_t)pt->partition,
                                     (uint64_t)pt->offset};
            struct kop *op = &r->ops[slot];
            sbuf_init(&op->p.payload, 0);
            entry_commit_encode(&op->p.payload, &e);
            op_submit(r, slot, ENTRY_COMMIT, WC_DEFAULT);
        }
    }
    r->complete = commit_complete;
    if (r->pending == 0)
        commit_complete(r);
}

struct group_offsets {
    struct kreq *r;
    struct sbuf *b;
    struct slice *topics;
    uint32_t ntopics, cap;
};

static void collect_group_topic(void *ctx, struct slice topic, uint32_t partition,
                                uint64_t committed, uint64_t latest)
{
    (void)partition;
    (void)committed;
    (void)latest;
    struct group_offsets *g = ctx;
    for (uint32_t i = 0; i < g->ntopics; i++)
        if (slice_eq(g->topics[i], topic))
            return;
    if (g->ntopics == g->cap) {
        uint32_t cap = g->cap ? g->cap * 2 : 16;
        struct slice *n = arena_alloc(&g->r->arena, cap * sizeof *n);
        if (!n)
            return;
        if (g->ntopics)
            memcpy(n, g->topics, g->ntopics * sizeof *n);
        g->topics = n;
        g->cap = cap;
    }
    uint8_t *copy = arena_alloc(&g->r->arena, topic.len ? topic.len : 1);
    if (!copy)
        return;
    memcpy(copy, topic.ptr, topic.len);
    g->topics[g->ntopics++] = slice_of(copy, topic.len);
}

static void write_committed(struct kreq *r, struct sbuf *b, struct slice topic, int32_t part,
                            int16_t err)
{
    uint64_t off;
    bool have = !err && part >= 0 &&
                broker_committed(r->s->broker, topic, r->q.group_id, (uint32_t)part, &off) == 0;
    kw_i32(b, part);
    kw_i64(b, have ? (int64_t)off : -1);
    if (r->q.h.api_version >= 5)
        kw_i32(b, -1); /* leader epoch */
    kw_cstr(b, "");
    kw_i16(b, err);
}

static void handle_offset_fetch(struct kreq *r)
{
    const struct kafka_request *q = &r->q;
    int16_t v = q->h.api_version;
    struct sbuf b;
    size_t st = resp_start(r, &b);
    if (v >= 3)
        kw_i32(&b, 0);
    /* offsets are read where groups are coordinated: the leader (FindCoordinator) */
    int16_t err = kafka_leads(r->s) ? KERR_NONE : KERR_NOT_COORDINATOR;
    if (q->topics_null && !err) {
        struct group_offsets g = {r, &b, NULL, 0, 0};
        broker_group(r->s->broker, q->group_id, (struct slice){NULL, 0}, collect_group_topic, &g);
        kw_i32(&b, (int32_t)g.ntopics);
        for (uint32_t i = 0; i < g.ntopics; i++) {
            uint32_t n = 0;
            broker_partitions(r->s->broker, g.topics[i], &n);
            kw_str(&b, g.topics[i]);
            uint32_t have = 0;
            uint64_t off;
            for (uint32_t p = 0; p < n; p++)
                have += broker_committed(r->s->broker, g.topics[i], q->group_id, p, &off) == 0;
            kw_i32(&b, (int32_t)have);
            for (uint32_t p = 0; p < n; p++)
                if (broker_committed(r->s->broker, g.topics[i], q->group_id, p, &off) == 0)
                    write_committed(r, &b, g.topics[i], (int32_t)p, KERR_NONE);
        }
    } else if (q->topics_null) {
        kw_i32(&b, 0);
    } else {
        kw_i32(&b, (int32_t)q->ntopics);
        for (uint32_t i = 0; i < q->ntopics; i++) {
            const struct kafka_topic *t = &q->topics[i];
            kw_str(&b, t->name);
            kw_i32(&b, (int32_t)t->nparts);
            for (uint32_t j = 0; j < t->nparts; j++)
                write_committed(r, &b, t->name, t->parts[j].partition, err);
        }
    }
    if (v >= 2)
        kw_i16(&b, err);
    resp_finish(r, &b, st);
}

/* ------------------------------------------------------------------------------------------ */
/* CreateTopics / DeleteTopics                                                                 */

static void topics_complete(struct kreq *r)
{
    const struct kafka_request *q = &r->q;
    int16_t v = q->h.api_version;
    bool create = q->h.api_key == KAFKA_CREATE_TOPICS;
    struct sbuf b;
    size_t st = resp_start(r, &b);
    if ((create && v >= 2) || (!create && v >= 1))
        kw_i32(&b, 0);
    kw_i32(&b, (int32_t)q->ntopics);
    for (uint32_t i = 0; i < q->ntopics; i++) {
        kw_str(&b, q->topics[i].name);
        kw_i16(&b, r->res[i].err);
        if (create && v >= 1)
            kw_null_str(&b);
    }
    resp_finish(r, &b, st);
}

static void handle_topics(struct kreq *r)
{
    struct kafka_request *q = &r->q;
    bool create = q->h.api_key == KAFKA_CREATE_TOPICS;
    if (!slots_init(r, false)) {
        req_respond(r, NULL);
        return;
    }
    int64_t now = clock_wall_ms();
    for (uint32_t i = 0; i < q->ntopics; i++) {
        struct kafka_topic *t = &q->topics[i];
        struct kres *res = &r->res[i];
        if (!broker_valid_name(t->name, BROKER_TOPIC_NAME_MAX)) {
            res->err = KERR_INVALID_TOPIC_EXCEPTION;
            continue;
        }
        for (uint32_t k = 0; k < i; k++)
            if (slice_eq(q->topics[k].name, t->name))
                res->err = KERR_INVALID_REQUEST; /* named twice */
        if (res->err)
            continue;
        struct entry_topic e = {now, t->name, 0};
        if (create) {
            int32_t np = t->num_partitions == -1 ? (int32_t)r->s->cfg.default_partitions
                                                 : t->num_partitions;
            if (t->nparts) { /* manual replica assignment */
                res->err = KERR_INVALID_REQUEST;
                continue;
            }
            if (np < 1 || np > BROKER_PARTITIONS_MAX) {
                res->err = KERR_INVALID_PARTITIONS;
                continue;
            }
            if (t->replication_factor == 0 || t->replication_factor < -1) {
                res->err = KERR_INVALID_REPLICATION_FACTOR;
                continue;
            }
            uint32_t have;
            if (broker_partitions(r->s->broker, t->name, &have) == 0) {
                res->err = KERR_TOPIC_ALREADY_EXISTS;
                continue;
            }
            if (q->validate_only)
                continue;
            e.partitions = (uint32_t)np;
        } else {
            uint32_t have;
            if (broker_partitions(r->s->broker, t->name, &have)) {
                res->err = KERR_UNKNOWN_TOPIC_OR_PARTITION;
                continue;
            }
        }
        struct kop *op = &r->ops[i];
        sbuf_init(&op->p.payload, 0);
        entry_topic_encode(&op->p.payload, &e);
        op_submit(r, i, create ? ENTRY_TOPIC_CREATE : ENTRY_TOPIC_DELETE, WC_DEFAULT);
    }
    r->complete = topics_complete;
    if (r->pending == 0)
        topics_complete(r);
}

/* ------------------------------------------------------------------------------------------ */
/* Connections                                                                                 */

static void handle_frame(struct kconn *c, uint8_t *frame, size_t len)
{
    struct kreq *r = xcalloc(1, sizeof *r);
    if (!r) {
        xfree(frame);
        conn_close(c);
        return;
    }
    r->s = c->s;
    r->c = c;
    r->frame = frame;
    r->frame_len = len;
    arena_init(&r->arena, REQ_ARENA_MAX);
    c->cur = r;
    int rc = kafka_request_decode(slice_of(frame, len), &r->arena, &r->q);
    if (rc == ERR_UNSUPPORTED) {
        if (r->q.h.api_key == KAFKA_API_VERSIONS) {
            handle_api_versions(r, KERR_UNSUPPORTED_VERSION);
        } else {
            LOG_D("kafka", "unsupported api %d v%d: closing", r->q.h.api_key,
                  r->q.h.api_version);
            struct sbuf b;
            size_t st = resp_start(r, &b);
            kw_i16(&b, KERR_UNSUPPORTED_VERSION);
            resp_finish(r, &b, st);
        }
        return;
    }
    if (rc) {
        LOG_D("kafka", "malformed request (api %d v%d): closing the connection", r->q.h.api_key,
              r->q.h.api_version);
        r->c = NULL;
        c->cur = NULL;
        r->responded = true;
        req_maybe_free(r);
        conn_close(c);
        return;
    }
    switch (r->q.h.api_key) {
    case KAFKA_API_VERSIONS: handle_api_versions(r, KERR_NONE); break;
    case KAFKA_METADATA: handle_metadata(r); break;
    case KAFKA_PRODUCE: handle_produce(r); break;
    case KAFKA_FETCH: handle_fetch(r); break;
    case KAFKA_LIST_OFFSETS: handle_list_offsets(r); break;
    case KAFKA_FIND_COORDINATOR: handle_find_coordinator(r); break;
    case KAFKA_OFFSET_COMMIT: handle_offset_commit(r); break;
    case KAFKA_OFFSET_FETCH: handle_offset_fetch(r); break;
    case KAFKA_CREATE_TOPICS:
    case KAFKA_DELETE_TOPICS: handle_topics(r); break;
    default: handle_group(r); break;
    }
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    struct kconn *c = h->data;
    size_t want = 64u << 10;
    uint8_t *p = sbuf_reserve(&c->in, want);
    if (!p) {
        buf->base = NULL;
        buf->len = 0;
        return;
    }
    buf->base = (char *)p;
    buf->len = want;
}

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    (void)buf;
    struct kconn *c = st->data;
    if (nread < 0) {
        conn_close(c);
        return;
    }
    if (nread == 0)
        return;
    c->in.len += (size_t)nread;
    conn_pump(c);
}

static void conn_read(struct kconn *c, bool on)
{
    if (c->closing || c->reading == on)
        return;
    c->reading = on;
    if (on)
        uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    else
        uv_read_stop((uv_stream_t *)&c->tcp);
}

static void conn_pump(struct kconn *c)
{
    if (c->pumping)
        return;
    c->pumping = true;
    while (!c->closing && !c->cur) {
        if (uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) > WRITE_PAUSE_BYTES)
            break; /* on_write pumps again */
        size_t avail = c->in.len - c->rpos;
        if (avail < 4)
            break;
        uint32_t size = get_be32(c->in.data + c->rpos);
        if (size < 8 || size > KAFKA_FRAME_MAX) {
            LOG_D("kafka", "frame of %u bytes: closing the connection", size);
            conn_close(c);
            break;
        }
        if (avail - 4 < size)
            break;
        uint8_t *frame = xmalloc(size);
        if (!frame) {
            conn_close(c);
            break;
        }
        memcpy(frame, c->in.data + c->rpos + 4, size);
        c->rpos += 4 + (size_t)size;
        handle_frame(c, frame, size);
    }
    c->pumping = false;
    if (c->closing)
        return;
    /* compact what was parsed */
    if (c->rpos) {
        if (c->rpos == c->in.len) {
            c->in.len = 0;
        } else if (c->rpos > (1u << 20) || c->rpos * 2 > c->in.len) {
            memmove(c->in.data, c->in.data + c->rpos, c->in.len - c->rpos);
            c->in.len -= c->rpos;
        } else {
            return conn_read(c, !(c->cur && c->in.len - c->rpos > READ_PAUSE_BYTES));
        }
        c->rpos = 0;
    }
    conn_read(c, !(c->cur && c->in.len > READ_PAUSE_BYTES));
}

static void on_conn_closed(uv_handle_t *h)
{
    struct kconn *c = h->data;
    struct kserver *s = c->s;
    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    s->nconns--;
    sbuf_free(&c->in);
    xfree(c);
    if (s->stop && !s->conns && !uv_is_closing((uv_handle_t *)&s->async))
        uv_async_send(&s->async);
}

static void conn_close(struct kconn *c)
{
    if (c->closing)
        return;
    c->closing = true;
    struct kreq *r = c->cur;
    if (r) {
        c->cur = NULL;
        r->c = NULL; /* orphaned: finishes its proposals / waits, answers nobody */
        groups_forget_req(c->s, r);
        if (!r->responded && r->q.h.api_key == KAFKA_FETCH && r->waited && !r->fired)
            fetch_fire(r); /* stop waiting now: answers nobody and frees r when it can */
        else
            req_maybe_free(r);
    }
    uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
}

static void on_connection(uv_stream_t *l, int status)
{
    struct kserver *s = l->data;
    if (status < 0)
        return;
    struct kconn *c = xcalloc(1, sizeof *c);
    if (!c)
        return;
    c->s = s;
    sbuf_init(&c->in, 0);
    uv_tcp_init(&s->loop, &c->tcp);
    c->tcp.data = c;
    if (uv_accept(l, (uv_stream_t *)&c->tcp) < 0 || s->stop ||
        s->nconns >= (s->cfg.max_connections ? s->cfg.max_connections : 10000)) {
        c->closing = true;
        c->next = s->conns;
        if (s->conns)
            s->conns->prev = c;
        s->conns = c;
        s->nconns++;
        uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    c->next = s->conns;
    if (s->conns)
        s->conns->prev = c;
    s->conns = c;
    s->nconns++;
    conn_read(c, true);
}

/* ------------------------------------------------------------------------------------------ */
/* Group coordinator                                                                           */
/*
 * In-memory, on this thread only (a restart forgets memberships; clients rejoin, and committed
 * offsets are durable in the broker). The broker does not assign partitions: it relays the
 * members' protocol metadata to the elected leader member, whose client runs the assignor
 * (range, roundrobin, ...) and hands the result back in SyncGroup.
 *
 *        JoinGroup (any member)              all known members joined, or rebalance timeout
 *   EMPTY ───────────────────▶ PREPARING ───────────────────────────────────────▶ AWAITING_SYNC
 *     ▲                          ▲   (generation++, leader = first joiner,          │ leader's
 *     │ last member leaves /     │    every JoinGroup answered)                     │ SyncGroup
 *     │ session expires          │ join / leave / session expiry                    ▼
 *     └──────────────────────────┴──────────────────────────────────────────────── STABLE
 */

enum gstate { G_EMPTY, G_PREPARING, G_AWAITING_SYNC, G_STABLE };

struct kmember {
    char *id;
    size_t id_len;
    struct slice meta;           /* owned copy of the protocol metadata we will relay */
    char *protocol;              /* owned: the protocol list (names + metadata) of its join */
    struct slice *pnames, *pmetas;
    uint32_t nprotocols;
    uint8_t *pbuf;
    struct slice assignment;     /* owned */
    uint8_t *abuf;
    int32_t session_ms, rebalance_ms;
    uint64_t last_seen_ms;
    bool joined;                 /* joined the current rebalance */
    struct kreq *join_req, *sync_req;
    struct kmember *next;
};

struct kgroup {
    char *id;
    size_t id_len;
    enum gstate state;
    int32_t generation;
    char *protocol_type;
    char *protocol;              /* chosen protocol name */
    struct kmember *members, *leader;
    uint32_t nmembers;
    uint64_t rebalance_deadline_ms;
    struct kgroup *next;
};

static struct kgroup *group_get(struct kserver *s, struct slice id, bool create)
{
    for (struct kgroup *g = s->groups; g; g = g->next)
        if (g->id_len == id.len && memcmp(g->id, id.ptr, id.len) == 0)
            return g;
    if (!create || s->ngroups >= GROUPS_MAX)
        return NULL;
    struct kgroup *g = xcalloc(1, sizeof *g);
    if (!g)
        return NULL;
    g->id = xstrndup((const char *)id.ptr, id.len);
    if (!g->id) {
        xfree(g);
        return NULL;
    }
    g->id_len = id.len;
    g->next = s->groups;
    s->groups = g;
    s->ngroups++;
    return g;
}

static struct kmember *member_get(struct kgroup *g, struct slice id)
{
    for (struct kmember *m = g->members; m; m = m->next)
        if (m->id_len == id.len && memcmp(m->id, id.ptr, id.len) == 0)
            return m;
    return NULL;
}

static void member_free(struct kmember *m)
{
    xfree(m->id);
    xfree(m->pbuf);
    xfree(m->pnames);
    xfree(m->abuf);
    xfree(m);
}

static void group_answer_join(struct kgroup *g, struct kmember *m, int16_t err);
static void group_answer_sync(struct kmember *m, int16_t err, struct slice assignment);

static void group_remove(struct kgroup *g, struct kmember *m)
{
    for (struct kmember **pp = &g->members; *pp; pp = &(*pp)->next) {
        if (*pp == m) {
            *pp = m->next;
            break;
        }
    }
    g->nmembers--;
    if (m->join_req)
        group_answer_join(g, m, KERR_UNKNOWN_MEMBER_ID);
    if (m->sync_req)
        group_answer_sync(m, KERR_UNKNOWN_MEMBER_ID, (struct slice){NULL, 0});
    if (g->leader == m)
        g->leader = NULL;
    member_free(m);
}

static uint64_t now_ms(void) { return clock_mono_ms(); }

/* Start (or restart) a rebalance: members must rejoin within the rebalance timeout. */
static void group_prepare(struct kgroup *g)
{
    int32_t max_rb = 0;
    for (struct kmember *m = g->members; m; m = m->next) {
        m->joined = m->join_req != NULL;
        if (m->sync_req)
            group_answer_sync(m, KERR_REBALANCE_IN_PROGRESS, (struct slice){NULL, 0});
        if (m->rebalance_ms > max_rb)
            max_rb = m->rebalance_ms;
    }
    g->state = g->members ? G_PREPARING : G_EMPTY;
    g->rebalance_deadline_ms = now_ms() + (uint64_t)(max_rb > 0 ? max_rb : 1000);
}

/* Choose the protocol every joined member supports (the first of the leader's list that all
 * support). */
static bool group_choose_protocol(struct kgroup *g)
{
    struct kmember *first = g->leader;
    if (!first)
        return false;
    for (uint32_t i = 0; i < first->nprotocols; i++) {
        bool all = true;
        for (struct kmember *m = g->members; m && all; m = m->next) {
            bool has = false;
            for (uint32_t k = 0; k < m->nprotocols && !has; k++)
                has = slice_eq(m->pnames[k], first->pnames[i]);
            all = has;
        }
        if (all) {
            xfree(g->protocol);
            g->protocol = xstrndup((const char *)first->pnames[i].ptr, first->pnames[i].len);
            return g->protocol != NULL;
        }
    }
    return false;
}

static struct slice member_meta(const struct kmember *m, const char *protocol)
{
    for (uint32_t k = 0; k < m->nprotocols; k++)
        if (slice_eq_cstr(m->pnames[k], protocol))
            return m->pmetas[k];
    return (struct slice){NULL, 0};
}

/* Everyone who is still a member has rejoined (or the deadline passed): complete the join. */
static void group_complete_join(struct kgroup *g)
{
    /* members that did not rejoin in time are dropped */
    for (struct kmember *m = g->members, *next; m; m = next) {
        next = m->next;
        if (!m->join_req)
            group_remove(g, m);
    }
    if (!g->members) {
        g->state = G_EMPTY;
        return;
    }
    if (!g->leader)
        g->leader = g->members;
    g->generation++;
    if (!group_choose_protocol(g)) {
        for (struct kmember *m = g->members; m; m = m->next)
            if (m->join_req)
                group_answer_join(g, m, KERR_INCONSISTENT_GROUP_PROTOCOL);
        g->state = G_EMPTY;
        return;
    }
    g->state = G_AWAITING_SYNC;
    for (struct kmember *m = g->members; m; m = m->next) {
        m->joined = false;
        m->last_seen_ms = now_ms();
        if (m->join_req)
            group_answer_join(g, m, KERR_NONE);
    }
}

static void group_answer_join(struct kgroup *g, struct kmember *m, int16_t err)
{
    struct kreq *r = m->join_req;
    m->join_req = NULL;
    int16_t v = r->q.h.api_version;
    struct sbuf b;
    size_t st = resp_start(r, &b);
    if (v >= 2)
        kw_i32(&b, 0);
    kw_i16(&b, err);
    kw_i32(&b, err ? -1 : g->generation);
    kw_cstr(&b, err || !g->protocol ? "" : g->protocol);
    if (err || !g->leader)
        kw_cstr(&b, "");
    else
        kw_str(&b, slice_of(g->leader->id, g->leader->id_len));
    kw_str(&b, slice_of(m->id, m->id_len));
    if (!err && g->leader == m) {
        kw_i32(&b, (int32_t)g->nmembers);
        for (struct kmember *x = g->members; x; x = x->next) {
            kw_str(&b, slice_of(x->id, x->id_len));
            if (v >= 5)
                kw_null_str(&b);
            kw_bytes(&b, member_meta(x, g->protocol));
        }
    } else {
        kw_i32(&b, 0);
    }
    resp_finish(r, &b, st);
}

static void group_answer_sync(struct kmember *m, int16_t err, struct slice assignment)
{
    struct kreq *r = m->sync_req;
    m->sync_req = NULL;
    struct sbuf b;
    size_t st = resp_start(r, &b);
    if (r->q.h.api_version >= 1)
        kw_i32(&b, 0);
    kw_i16(&b, err);
    kw_bytes(&b, err ? (struct slice){NULL, 0} : assignment);
    resp_finish(r, &b, st);
}

static void simple_answer(struct kreq *r, int16_t err)
{
    struct sbuf b;
    size_t st = resp_start(r, &b);
    if (r->q.h.api_version >= 1)
        kw_i32(&b, 0);
    kw_i16(&b, err);
    resp_finish(r, &b, st);
}

static bool all_joined(const struct kgroup *g)
{
    for (const struct kmember *m = g->members; m; m = m->next)
        if (!m->join_req)
            return false;
    return true;
}

static void join_group(struct kreq *r)
{
    struct kserver *s = r->s;
    const struct kafka_request *q = &r->q;
    if (!broker_valid_name(q->group_id, BROKER_GROUP_NAME_MAX)) {
        struct sbuf b;
        size_t st = resp_start(r, &b);
        if (q->h.api_version >= 2)
            kw_i32(&b, 0);
        kw_i16(&b, KERR_INVALID_GROUP_ID);
        kw_i32(&b, -1);
        kw_cstr(&b, "");
        kw_cstr(&b, "");
        kw_str(&b, q->member_id);
        kw_i32(&b, 0);
        resp_finish(r, &b, st);
        return;
    }
    int16_t err = KERR_NONE;
    if (q->session_timeout_ms < 1000 || q->session_timeout_ms > 300000)
        err = KERR_INVALID_SESSION_TIMEOUT;
    struct kgroup *g = err ? NULL : group_get(s, q->group_id, true);
    if (!err && !g)
        err = KERR_COORDINATOR_NOT_AVAILABLE;
    if (!err && g->members && g->protocol_type &&
        !slice_eq_cstr(q->protocol_type, g->protocol_type))
        err = KERR_INCONSISTENT_GROUP_PROTOCOL;
    if (!err && q->ntopics == 0)
        err = KERR_INCONSISTENT_GROUP_PROTOCOL;
    struct kmember *m = NULL;
    if (!err && q->member_id.len) {
        m = member_get(g, q->member_id);
        if (!m)
            err = KERR_UNKNOWN_MEMBER_ID;
    }
    if (!err && !m && g->nmembers >= GROUP_MEMBERS_MAX)
        err = KERR_COORDINATOR_NOT_AVAILABLE;
    if (err) {
        struct sbuf b;
        size_t st = resp_start(r, &b);
        if (q->h.api_version >= 2)
            kw_i32(&b, 0);
        kw_i16(&b, err);
        kw_i32(&b, -1);
        kw_cstr(&b, "");
        kw_cstr(&b, "");
        kw_str(&b, q->member_id);
        kw_i32(&b, 0);
        resp_finish(r, &b, st);
        return;
    }
    if (!g->protocol_type)
        g->protocol_type = xstrndup((const char *)q->protocol_type.ptr, q->protocol_type.len);
    if (!m) {
        m = xcalloc(1, sizeof *m);
        char id[128];
        int n = snprintf(id, sizeof id, "%.*s-%llu",
                         (int)(r->q.h.client_id.len > 64 ? 64 : r->q.h.client_id.len),
                         r->q.h.client_id.ptr ? (const char *)r->q.h.client_id.ptr : "",
                         (unsigned long long)++s->member_seq);
        if (m)
            m->id = xstrndup(id, (size_t)n);
        if (!m || !m->id) {
            xfree(m);
            simple_answer(r, KERR_COORDINATOR_NOT_AVAILABLE);
            return;
        }
        m->id_len = (size_t)n;
        m->next = g->members;
        g->members = m;
        g->nmembers++;
    } else if (m->join_req) {
        /* a repeated join replaces the parked one, which is answered as superseded */
        group_answer_join(g, m, KERR_REBALANCE_IN_PROGRESS);
    }
    /* copy its protocols (the request's frame goes away once it is answered) */
    size_t bytes = 0;
    for (uint32_t i = 0; i < q->ntopics; i++)
        bytes += q->topics[i].name.len + q->topics[i].data.len;
    uint8_t *pbuf = xmalloc(bytes ? bytes : 1);
    struct slice *pn = xcalloc(q->ntopics * 2u, sizeof *pn);
    if (!pbuf || !pn) {
        xfree(pbuf);
        xfree(pn);
        group_remove(g, m);
        simple_answer(r, KERR_COORDINATOR_NOT_AVAILABLE);
        return;
    }
    size_t off = 0;
    for (uint32_t i = 0; i < q->ntopics; i++) {
        memcpy(pbuf + off, q->topics[i].name.ptr, q->topics[i].name.len);
        pn[i] = slice_of(pbuf + off, q->topics[i].name.len);
        off += q->topics[i].name.len;
        if (q->topics[i].data.len)
            memcpy(pbuf + off, q->topics[i].data.ptr, q->topics[i].data.len);
        pn[q->ntopics + i] = slice_of(pbuf + off, q->topics[i].data.len);
        off += q->topics[i].data.len;
    }
    xfree(m->pbuf);
    xfree(m->pnames);
    m->pbuf = pbuf;
    m->pnames = pn;
    m->pmetas = pn + q->ntopics;
    m->nprotocols = q->ntopics;
    m->session_ms = q->session_timeout_ms;
    m->rebalance_ms = q->rebalance_timeout_ms;
    m->last_seen_ms = now_ms();
    m->join_req = r;
    if (g->state != G_PREPARING) {
        if (!g->leader)
            g->leader = m;
        group_prepare(g);
    }
    if (all_joined(g))
        group_complete_join(g);
}

static void sync_group(struct kreq *r)
{
    const struct kafka_request *q = &r->q;
    struct kgroup *g = group_get(r->s, q->group_id, false);
    struct kmember *m = g ? member_get(g, q->member_id) : NULL;
    int16_t err = KERR_NONE;
    if (!m)
        err = KERR_UNKNOWN_MEMBER_ID;
    else if (q->generation_id != g->generation)
        err = KERR_ILLEGAL_GENERATION;
    else if (g->state == G_PREPARING)
        err = KERR_REBALANCE_IN_PROGRESS;
    if (err) {
        struct sbuf b;
        size_t st = resp_start(r, &b);
        if (q->h.api_version >= 1)
            kw_i32(&b, 0);
        kw_i16(&b, err);
        kw_bytes(&b, (struct slice){NULL, 0});
        resp_finish(r, &b, st);
        return;
    }
    m->last_seen_ms = now_ms();
    if (m->sync_req)
        group_answer_sync(m, KERR_REBALANCE_IN_PROGRESS, (struct slice){NULL, 0});
    m->sync_req = r;
    if (g->state == G_STABLE) {
        group_answer_sync(m, KERR_NONE, m->assignment);
        return;
    }
    if (m == g->leader) {
        for (uint32_t i = 0; i < q->ntopics; i++) {
            struct kmember *x = member_get(g, q->topics[i].name);
            if (!x)
                continue;
            uint8_t *copy = xmalloc(q->topics[i].data.len ? q->topics[i].data.len : 1);
            if (!copy)
                continue;
            memcpy(copy, q->topics[i].data.ptr, q->topics[i].data.len);
            xfree(x->abuf);
            x->abuf = copy;
            x->assignment = slice_of(copy, q->topics[i].data.len);
        }
        /* members the leader assigned nothing get an empty assignment */
        for (struct kmember *x = g->members; x; x = x->next) {
            bool named = false;
            for (uint32_t i = 0; i < q->ntopics && !named; i++)
                named = slice_eq(q->topics[i].name, slice_of(x->id, x->id_len));
            if (!named) {
                xfree(x->abuf);
                x->abuf = NULL;
                x->assignment = (struct slice){NULL, 0};
            }
        }
        g->state = G_STABLE;
        for (struct kmember *x = g->members; x; x = x->next)
            if (x->sync_req)
                group_answer_sync(x, KERR_NONE, x->assignment);
    }
}

static void heartbeat(struct kreq *r)
{
    const struct kafka_request *q = &r->q;
    struct kgroup *g = group_get(r->s, q->group_id, false);
    struct kmember *m = g ? member_get(g, q->member_id) : NULL;
    int16_t err = KERR_NONE;
    if (!m)
        err = KERR_UNKNOWN_MEMBER_ID;
    else if (g->state == G_PREPARING)
        err = KERR_REBALANCE_IN_PROGRESS;
    else if (q->generation_id != g->generation)
        err = KERR_ILLEGAL_GENERATION;
    if (m)
        m->last_seen_ms = now_ms();
    simple_answer(r, err);
}

static void leave_group(struct kreq *r)
{
    const struct kafka_request *q = &r->q;
    struct kgroup *g = group_get(r->s, q->group_id, false);
    struct kmember *m = g ? member_get(g, q->member_id) : NULL;
    if (!m) {
        simple_answer(r, KERR_UNKNOWN_MEMBER_ID);
        return;
    }
    group_remove(g, m);
    simple_answer(r, KERR_NONE);
    group_prepare(g);
    if (g->members && all_joined(g))
        group_complete_join(g);
}

/* OffsetCommit from a group member: its generation must be current (generation -1 = a
 * consumer outside group management, e.g. an HTTP-style or `assign`-based client: accepted). */
static bool group_commit_check(struct kreq *r, int16_t *err)
{
    const struct kafka_request *q = &r->q;
    if (q->generation_id < 0)
        return true;
    struct kgroup *g = group_get(r->s, q->group_id, false);
    if (!g)
        return true; /* not a group we coordinate now (e.g. after a restart): accept */
    struct kmember *m = member_get(g, q->member_id);
    /* As Kafka's coordinator: a member of the current generation may still commit what it
     * processed while the next rebalance is being prepared (its revoke-time commit); between
     * the join and the sync the new assignment is not known yet. */
    if (!m)
        *err = KERR_UNKNOWN_MEMBER_ID;
    else if (q->generation_id != g->generation)
        *err = KERR_ILLEGAL_GENERATION;
    else if (g->state == G_AWAITING_SYNC)
        *err = KERR_REBALANCE_IN_PROGRESS;
    if (m)
        m->last_seen_ms = now_ms();
    return *err == KERR_NONE;
}

/* Timer: session expiry and rebalance deadlines. */
static void group_tick(uv_timer_t *t)
{
    struct kserver *s = t->data;
    uint64_t now = now_ms();
    for (struct kgroup *g = s->groups; g; g = g->next) {
        bool changed = false;
        for (struct kmember *m = g->members, *next; m; m = next) {
            next = m->next;
            if (!m->join_req && !m->sync_req && now - m->last_seen_ms > (uint64_t)m->session_ms &&
                g->state != G_PREPARING) {
                LOG_I("kafka", "group %s: member %s session expired", g->id, m->id);
                group_remove(g, m);
                changed = true;
            }
        }
        if (changed) {
            group_prepare(g);
            if (g->members && all_joined(g))
                group_complete_join(g);
        } else if (g->state == G_PREPARING && now >= g->rebalance_deadline_ms) {
            group_complete_join(g);
        }
    }
}

static void groups_init(struct kserver *s)
{
    uv_timer_init(&s->loop, &s->group_timer);
    s->group_timer.data = s;
    uv_timer_start(&s->group_timer, group_tick, 250, 250);
}

static void groups_free(struct kserver *s)
{
    struct kgroup *g = s->groups;
    while (g) {
        struct kgroup *next = g->next;
        struct kmember *m = g->members;
        while (m) {
            struct kmember *mn = m->next;
            member_free(m);
            m = mn;
        }
        xfree(g->id);
        xfree(g->protocol_type);
        xfree(g->protocol);
        xfree(g);
        g = next;
    }
    s->groups = NULL;
}

/* A parked join/sync whose connection went away must not be answered later: detach it. */
static void groups_forget_req(struct kserver *s, struct kreq *r)
{
    for (struct kgroup *g = s->groups; g; g = g->next)
        for (struct kmember *m = g->members; m; m = m->next) {
            if (m->join_req == r)
                m->join_req = NULL;
            if (m->sync_req == r)
                m->sync_req = NULL;
        }
}

/* A group request reaching a node that is not the coordinator (the Raft leader). */
static void not_coordinator(struct kreq *r)
{
    const struct kafka_request *q = &r->q;
    struct sbuf b;
    size_t st;
    switch (q->h.api_key) {
    case KAFKA_JOIN_GROUP:
        st = resp_start(r, &b);
        if (q->h.api_version >= 2)
            kw_i32(&b, 0);
        kw_i16(&b, KERR_NOT_COORDINATOR);
        kw_i32(&b, -1);
        kw_cstr(&b, "");
        kw_cstr(&b, "");
        kw_str(&b, q->member_id);
        kw_i32(&b, 0);
        resp_finish(r, &b, st);
        break;
    case KAFKA_SYNC_GROUP:
        st = resp_start(r, &b);
        if (q->h.api_version >= 1)
            kw_i32(&b, 0);
        kw_i16(&b, KERR_NOT_COORDINATOR);
        kw_bytes(&b, (struct slice){NULL, 0});
        resp_finish(r, &b, st);
        break;
    default: simple_answer(r, KERR_NOT_COORDINATOR); break;
    }
}

static void handle_group(struct kreq *r)
{
    bool known = r->q.h.api_key == KAFKA_JOIN_GROUP || r->q.h.api_key == KAFKA_SYNC_GROUP ||
                 r->q.h.api_key == KAFKA_HEARTBEAT || r->q.h.api_key == KAFKA_LEAVE_GROUP;
    if (known && !kafka_leads(r->s)) {
        not_coordinator(r);
        return;
    }
    switch (r->q.h.api_key) {
    case KAFKA_JOIN_GROUP: join_group(r); break;
    case KAFKA_SYNC_GROUP: sync_group(r); break;
    case KAFKA_HEARTBEAT: heartbeat(r); break;
    case KAFKA_LEAVE_GROUP: leave_group(r); break;
    default: simple_answer(r, KERR_UNSUPPORTED_VERSION); break;
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Start / stop                                                                                */

static void run(void *arg)
{
    struct kserver *s = arg;
    uv_run(&s->loop, UV_RUN_DEFAULT);
}

int kafka_server_start(const struct kafka_server_config *cfg, struct kafka_server **out)
{
    struct kserver *s = xcalloc(1, sizeof *s);
    if (!s)
        return ERR_NOMEM;
    s->cfg = *cfg;
    snprintf(s->bind, sizeof s->bind, "%s", cfg->bind_addr ? cfg->bind_addr : "127.0.0.1");
    const char *host = cfg->advertised_host;
    if (!host || !*host)
        host = strcmp(s->bind, "0.0.0.0") == 0 ? "127.0.0.1" : s->bind;
    snprintf(s->host, sizeof s->host, "%s", host);
    s->core = cfg->core;
    s->broker = core_broker(cfg->core);
    if (parse_addrs(s, cfg->nodes)) {
        xfree(s);
        return ERR_INVALID;
    }
    if (!s->cfg.default_partitions)
        s->cfg.default_partitions = 1;
    pthread_mutex_init(&s->mu, NULL);
    uv_loop_init(&s->loop);
    uv_async_init(&s->loop, &s->async, on_async);
    s->async.data = s;
    uv_tcp_init(&s->loop, &s->listener);
    s->listener.data = s;
    groups_init(s);
    struct sockaddr_storage sa;
    int rc = uv_ip4_addr(s->bind, cfg->port, (struct sockaddr_in *)&sa);
    if (rc)
        rc = uv_ip6_addr(s->bind, cfg->port, (struct sockaddr_in6 *)&sa);
    if (!rc)
        rc = uv_tcp_bind(&s->listener, (struct sockaddr *)&sa, 0);
    if (!rc)
        rc = uv_listen((uv_stream_t *)&s->listener, 511, on_connection);
    if (rc) {
        LOG_E("kafka", "cannot listen on %s:%d: %s", s->bind, cfg->port, uv_strerror(rc));
        uv_close((uv_handle_t *)&s->listener, NULL);
        uv_close((uv_handle_t *)&s->async, NULL);
        uv_close((uv_handle_t *)&s->group_timer, NULL);
        uv_run(&s->loop, UV_RUN_DEFAULT);
        uv_loop_close(&s->loop);
        pthread_mutex_destroy(&s->mu);
        xfree(s);
        return ERR_IO;
    }
    struct sockaddr_storage bound;
    int len = sizeof bound;
    uv_tcp_getsockname(&s->listener, (struct sockaddr *)&bound, &len);
    s->port = ntohs(((struct sockaddr_in *)&bound)->sin_port);
    if (uv_thread_create(&s->thread, run, s)) {
        uv_close((uv_handle_t *)&s->listener, NULL);
        uv_close((uv_handle_t *)&s->async, NULL);
        uv_close((uv_handle_t *)&s->group_timer, NULL);
        uv_run(&s->loop, UV_RUN_DEFAULT);
        uv_loop_close(&s->loop);
        xfree(s);
        return ERR_NOMEM;
    }
    *out = (struct kafka_server *)s;
    return 0;
}

int kafka_server_port(const struct kafka_server *ks) { return ((const struct kserver *)ks)->port; }

void kafka_server_stop(struct kafka_server *ks)
{
    struct kserver *s = (struct kserver *)ks;
    pthread_mutex_lock(&s->mu);
    s->stop = true;
    pthread_mutex_unlock(&s->mu);
    uv_async_send(&s->async);
    uv_thread_join(&s->thread);
    groups_free(s);
    uv_loop_close(&s->loop);
    pthread_mutex_destroy(&s->mu);
    xfree(s);
}
