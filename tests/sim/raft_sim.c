/* raft_sim.c -- the in-memory Raft cluster: virtual clock, lossy network, crashable disks, and a
 * checker run after every step (the properties are listed in raft_sim.h).
 *
 * Model:
 *  - Time is a step counter. Each step: faults (per-seed rates), a client proposal, message
 *    delivery, random fsyncs, ticks (each node ticks every tick_period steps: clock skew), then
 *    every node's ready is processed and the checks run.
 *  - Disk: a node's log has a durable prefix (durable) and an unsynced tail. An "fsync" makes
 *    the whole log durable and reports raft_persisted. A crash keeps the durable prefix and a
 *    random prefix of the unsynced tail (the rest is lost). The hard state is written
 *    synchronously when a ready carries it (the host contract: before that ready's messages).
 *  - Network: every message is encoded with raft_msg_encode and decoded on delivery (so the
 *    codec is exercised); it can be dropped, duplicated, delayed (which reorders), blocked by a
 *    partition (symmetric, one-way, isolated leader), or held while the receiver is paused.
 *  - Oracle: committed[i] is the entry a leader committed at index i; every later commit,
 *    apply and leader election is compared with it.
 *  - Snapshots (opts.snapshots): a node's state machine is a hash chain over the entries it
 *    applied. At random points a node snapshots it at its applied index, calls raft_compact,
 *    and drops its log up to a random tail below that index (the raft must never ask storage
 *    about an index at or below the base). A leader's snap_send becomes a "stream" that takes a
 *    few steps and may fail (random failure, link blocked, receiver down or restarted, leader
 *    restarted): on success the receiver stages the data (volatile: a crash loses it), the
 *    metadata message goes through the lossy network, and raft_snapshot_done(ok) is reported;
 *    on failure raft_snapshot_done(false). A receiver steps a SNAPSHOT message only if it has
 *    the matching data staged. rd.install must match the staged data, which must equal the
 *    oracle's committed prefix; the install is atomic and durable. Learners being added may be
 *    wiped (disk and hard state lost entirely) and rejoin, by snapshot once the leader compacted;
 *    restarts are reported to leaders with raft_peer_reset.
 *
 * Invariants of the simulator itself:
 *  1. The run depends only on the options (one xorshift stream, no wall clock, no addresses).
 *  2. Every allocation is freed at the end of rsim_run.
 *
 * The raft core is compiled into this translation unit with RAFT_TEST_PLANTS so the planted
 * bugs exist only in the test binary. (src/raft is not in the Makefile's library list yet; once
 * it is, the library's raft objects are simply not pulled in: these definitions come first.)
 */
#define RAFT_TEST_PLANTS 1
#include "raft/raft.c"
#include "raft/raft_msg.c"

#include "raft_sim.h"

#include "base/hash.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#define SIM_MAX 7
#define SIM_ELECTION_TICKS 10
#define SIM_HEARTBEAT_TICKS 2
#define SIM_LIVE_STEPS 3000

struct sim_ent {
    uint64_t term;
    uint8_t type;
    uint64_t h; /* hash of type + data */
    uint8_t *data;
    size_t len;
};

struct sim_snap {
    struct raft_snapshot_meta meta; /* meta.index 0 = none */
    uint64_t sm_h;                  /* the state machine: hash chain of entries 1..index */
};

struct sim_node {
    struct sim *sim;
    uint64_t id;
    uint64_t inc; /* incarnation: bumped at every start */
    bool member; /* started and not removed */
    bool alive, paused;
    uint64_t down_until, paused_until;
    uint32_t tick_period, tick_phase;
    uint64_t rng;
    struct raft *r;
    struct raft_storage st;
    struct sim_ent *log; /* log[k] is index off + 1 + k; entries (off, last] */
    size_t cap;
    uint64_t off, off_term, last, durable;
    struct raft_hardstate hs;
    uint64_t applied, sm_h;
    struct sim_snap snap;  /* durable, the log's base for the raft */
    struct sim_snap stage; /* received out of band (volatile); meta.index 0 = none */
    bool no_wipe;          /* a promotion was proposed: a voter from now on */
    uint64_t checked_term;  /* last term whose leadership was checked for completeness */
    uint64_t oracle_done;   /* commit index already folded into the oracle by this leader */
    uint64_t led_term;      /* last term in which this node was seen leading */
};

struct sim_msg {
    uint64_t at;
    int to;
    uint8_t *bytes;
    size_t len;
};

struct sim_commit {
    bool set;
    uint64_t term, h;
    uint8_t type;
    uint64_t commit_term; /* term of the leader that committed it */
};

struct sim_lm { /* log matching record for one (index, term) */
    uint64_t index, term, h, prev_term;
};

struct sim_read {
    uint64_t ctx, min_index;
};

struct sim_stream { /* a snapshot being sent out of band */
    int from, to;
    uint64_t term, from_inc, to_inc, done_at;
    bool fail;
    struct sim_snap data;
    uint8_t *bytes; /* the encoded metadata message */
    size_t len;
};

struct sim {
    struct rsim_opts o;
    struct rsim_result *res;
    uint64_t rng, now;
    struct sim_node nodes[SIM_MAX + 1];
    int n_ids; /* ids in use: 1..n_ids */
    struct sim_msg *msgs;
    size_t n_msgs, cap_msgs;
    bool blocked[SIM_MAX + 1][SIM_MAX + 1];
    uint32_t drop_pct, dup_pct, delay_max;
    uint32_t kill_pm, pause_pm, part_pm; /* per-mille rates per step */
    /* Oracle. */
    uint64_t *leader_of_term;
    size_t cap_terms;
    struct sim_commit *committed;
    size_t cap_committed;
    uint64_t n_committed;
    struct sim_lm *lm;
    size_t n_lm, cap_lm;
    struct sim_read reads[64];
    int n_reads;
    uint64_t *prefix; /* prefix[i] = hash chain of committed[1..i], valid up to n_prefix */
    size_t cap_prefix;
    uint64_t n_prefix;
    struct sim_stream *streams;
    size_t n_streams, cap_streams;
    uint32_t compact_pm, wipe_pm, stream_fail_pct;
    uint64_t next_value;
    /* Membership driver. */
    int target;        /* node being added (grow) or removed (shrink); 0 = done */
    bool shrinking;
    bool failed;
};

static struct raft_entry sim_dec_ents[RAFT_MSG_MAX_ENTRIES];

void rsim_set_plant(int plant) { raft_test_plant = (enum raft_plant)plant; }

static uint64_t sim_rand(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *s = x;
    return x * 0x2545F4914F6CDD1DULL;
}

static uint64_t sim_node_rand(void *ctx) { return sim_rand(&((struct sim_node *)ctx)->rng); }

static uint64_t rnd(struct sim *s, uint64_t n) { return n ? sim_rand(&s->rng) % n : 0; }
static bool chance_pm(struct sim *s, uint32_t pm) { return rnd(s, 1000) < pm; }

static void trace(struct sim *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void trace(struct sim *s, const char *fmt, ...)
{
    if (!s->o.trace)
        return;
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "[%6" PRIu64 "] ", s->now);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static void violation(struct sim *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void violation(struct sim *s, const char *fmt, ...)
{
    if (s->failed)
        return;
    s->failed = true;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->res->what, sizeof s->res->what, fmt, ap);
    va_end(ap);
    s->res->step = s->now;
    trace(s, "VIOLATION: %s", s->res->what);
}

static void *grow(void *p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return p;
    size_t c = *cap ? *cap : 64;
    while (c < need)
        c *= 2;
    uint8_t *np = xrealloc(p, c * elem);
    ASSERT(np);
    memset(np + *cap * elem, 0, (c - *cap) * elem);
    *cap = c;
    return np;
}

/* ---------------------------------------------------------------- log helpers */

static struct sim_ent *ent(const struct sim_node *n, uint64_t i)
{
    ASSERT(i > n->off && i <= n->last);
    return &n->log[i - n->off - 1];
}

static uint64_t term_of(const struct sim_node *n, uint64_t i)
{
    if (i == n->off)
        return n->off_term;
    return ent(n, i)->term;
}

static uint64_t chain(uint64_t sm_h, uint64_t entry_h)
{
    return hash_bytes(&entry_h, sizeof entry_h, sm_h ^ 0x51A7E5EEDULL);
}

/* The oracle's state machine after the committed prefix 1..i (i <= n_committed). */
static uint64_t oracle_prefix(struct sim *s, uint64_t i)
{
    ASSERT(i <= s->n_committed);
    s->prefix = grow(s->prefix, &s->cap_prefix, i + 1, sizeof *s->prefix);
    for (; s->n_prefix < i; s->n_prefix++)
        s->prefix[s->n_prefix + 1] = chain(s->prefix[s->n_prefix],
                                           s->committed[s->n_prefix + 1].h);
    return s->prefix[i];
}

/* Does the node durably hold committed entry i (in its snapshot or its durable log)? */
static bool node_holds(const struct sim_node *n, uint64_t i, uint64_t term, uint64_t h, bool dur)
{
    if (i <= n->snap.meta.index)
        return true; /* a snapshot is a checked committed prefix */
    if (i > (dur ? n->durable : n->last) || i <= n->off)
        return false;
    return ent(n, i)->term == term && ent(n, i)->h == h;
}

static bool conf_eq(const struct raft_conf *a, const struct raft_conf *b)
{
    if (a->n_voters != b->n_voters || a->n_learners != b->n_learners)
        return false;
    for (uint32_t i = 0; i < a->n_voters; i++)
        if (a->voters[i] != b->voters[i])
            return false;
    for (uint32_t i = 0; i < a->n_learners; i++)
        if (a->learners[i] != b->learners[i])
            return false;
    return true;
}

/* ---------------------------------------------------------------- storage callbacks */

static void storage_below_base(struct sim_node *n, const char *what, uint64_t index);

static uint64_t st_last_index(void *ctx) { return ((struct sim_node *)ctx)->last; }

static int st_term_at(void *ctx, uint64_t index, uint64_t *term)
{
    struct sim_node *n = ctx;
    if (index <= n->snap.meta.index)
        storage_below_base(n, "term_at", index);
    if (index <= n->off || index > n->last)
        return ERR_NOT_FOUND;
    *term = ent(n, index)->term;
    return 0;
}

static int st_entries(void *ctx, uint64_t from, size_t max_bytes, struct raft_entry *out,
                      size_t max_count, size_t *cnt)
{
    struct sim_node *n = ctx;
    size_t k = 0, bytes = 0;
    if (from <= n->snap.meta.index)
        storage_below_base(n, "entries", from);
    if (from <= n->off)
        return ERR_NOT_FOUND;
    while (k < max_count && from + k <= n->last && (k == 0 || bytes < max_bytes)) {
        const struct sim_ent *e = ent(n, from + k);
        out[k] = (struct raft_entry){e->term, from + k, e->type, slice_of(e->data, e->len)};
        bytes += e->len;
        k++;
    }
    *cnt = k;
    return k ? 0 : ERR_NOT_FOUND;
}

static int st_config_before(void *ctx, uint64_t before, uint64_t *index, struct slice *data)
{
    struct sim_node *n = ctx;
    uint64_t i = before - 1 < n->last ? before - 1 : n->last;
    for (; i > n->off; i--)
        if (ent(n, i)->type == RAFT_ENTRY_CONFIG) {
            *index = i;
            *data = slice_of(ent(n, i)->data, ent(n, i)->len);
            return 0;
        }
    return ERR_NOT_FOUND;
}

/* ---------------------------------------------------------------- disk */

static void disk_truncate(struct sim_node *n, uint64_t keep)
{
    ASSERT(keep >= n->off);
    while (n->last > keep) {
        xfree(ent(n, n->last)->data);
        n->last--;
    }
    if (n->durable > n->last)
        n->durable = n->last;
}

/* The log becomes empty with base (index, term): an install, or a wipe with (0, 0). */
static void disk_reset(struct sim_node *n, uint64_t index, uint64_t term)
{
    disk_truncate(n, n->off);
    n->off = n->last = n->durable = index;
    n->off_term = term;
}

/* Drops entries <= upto (compaction; the raft's base is >= upto). */
static void disk_drop_prefix(struct sim_node *n, uint64_t upto)
{
    if (upto <= n->off)
        return;
    ASSERT(upto <= n->durable);
    uint64_t k = upto - n->off;
    n->off_term = ent(n, upto)->term;
    for (uint64_t i = 0; i < k; i++)
        xfree(n->log[i].data);
    memmove(n->log, n->log + k, (size_t)(n->last - upto) * sizeof *n->log);
    n->off = upto;
}

static size_t lm_slot(uint64_t index, uint64_t term, size_t cap)
{
    return (size_t)((index * 0x9E3779B97F4A7C15ULL) ^ (term * 0xC2B2AE3D27D4EB4FULL)) & (cap - 1);
}

static void disk_append(struct sim *s, struct sim_node *n, uint64_t term, uint8_t type,
                        struct slice data)
{
    n->log = grow(n->log, &n->cap, (size_t)(n->last - n->off) + 1, sizeof *n->log);
    struct sim_ent *e = &n->log[n->last - n->off];
    n->last++;
    e->term = term;
    e->type = type;
    e->len = data.len;
    e->data = xmalloc(data.len ? data.len : 1);
    ASSERT(e->data);
    if (data.len)
        memcpy(e->data, data.ptr, data.len);
    e->h = hash_bytes(data.ptr ? (const void *)data.ptr : (const void *)"", data.len, type);
    /* Log matching: (index, term) must always name the same entry and predecessor term. */
    uint64_t idx = n->last, prev = term_of(n, idx - 1);
    if (s->n_lm * 2 >= s->cap_lm) { /* open-addressing table keyed by (index, term) */
        size_t cap = s->cap_lm ? s->cap_lm * 2 : 1024;
        struct sim_lm *t = xcalloc(cap, sizeof *t);
        ASSERT(t);
        for (size_t i = 0; i < s->cap_lm; i++)
            if (s->lm[i].index) {
                size_t j = lm_slot(s->lm[i].index, s->lm[i].term, cap);
                while (t[j].index)
                    j = (j + 1) & (cap - 1);
                t[j] = s->lm[i];
            }
        xfree(s->lm);
        s->lm = t;
        s->cap_lm = cap;
    }
    size_t j = lm_slot(idx, term, s->cap_lm);
    for (; s->lm[j].index; j = (j + 1) & (s->cap_lm - 1)) {
        struct sim_lm *l = &s->lm[j];
        if (l->index == idx && l->term == term) {
            if (l->h != e->h || l->prev_term != prev)
                violation(s, "log matching: node %" PRIu64 " index %" PRIu64 " term %" PRIu64
                             " differs from an earlier entry with the same index and term",
                          n->id, idx, term);
            return;
        }
    }
    s->lm[j] = (struct sim_lm){idx, term, e->h, prev};
    s->n_lm++;
}

static void disk_sync(struct sim_node *n)
{
    n->durable = n->last;
    if (n->r && n->last > n->off)
        raft_persisted(n->r, n->last, ent(n, n->last)->term);
}

/* ---------------------------------------------------------------- network */

static void net_send_bytes(struct sim *s, int from, int to, const uint8_t *bytes, size_t len)
{
    if (to < 1 || to > SIM_MAX || s->blocked[from][to] || chance_pm(s, s->drop_pct * 10))
        return;
    int copies = chance_pm(s, s->dup_pct * 10) ? 2 : 1;
    for (int c = 0; c < copies; c++) {
        s->msgs = grow(s->msgs, &s->cap_msgs, s->n_msgs + 1, sizeof *s->msgs);
        struct sim_msg *sm = &s->msgs[s->n_msgs++];
        sm->at = s->now + 1 + rnd(s, s->delay_max);
        sm->to = to;
        sm->len = len;
        sm->bytes = xmalloc(len);
        ASSERT(sm->bytes);
        memcpy(sm->bytes, bytes, len);
    }
}

static void net_send(struct sim *s, int from, const struct raft_msg *m)
{
    struct sbuf b;
    sbuf_init(&b, 0);
    ASSERT(raft_msg_encode(m, &b) == 0);
    net_send_bytes(s, from, (int)m->to, b.data, b.len);
    sbuf_free(&b);
}

/* ---------------------------------------------------------------- oracle checks */

static void check_leader(struct sim *s, struct sim_node *n)
{
    uint64_t t = raft_term(n->r);
    if (raft_role(n->r) != RAFT_LEADER) {
        /* A leader that stepped down within this term (removed from the configuration) keeps
         * the commit index it computed as leader: fold it in too. */
        if (n->led_term == t && n->checked_term == t)
            goto fold;
        return;
    }
    n->led_term = t;
    s->leader_of_term = grow(s->leader_of_term, &s->cap_terms, t + 1, sizeof(uint64_t));
    if (s->leader_of_term[t] == 0) {
        s->leader_of_term[t] = n->id;
        s->res->leaders++;
        trace(s, "node %" PRIu64 " leader of term %" PRIu64, n->id, t);
    } else if (s->leader_of_term[t] != n->id) {
        violation(s, "election safety: nodes %" PRIu64 " and %" PRIu64 " both lead term %" PRIu64,
                  s->leader_of_term[t], n->id, t);
    }
    if (n->checked_term != t) { /* leader completeness, once per term */
        n->checked_term = t;
        /* What it already knows as committed was checked when its leader committed it. */
        n->oracle_done = raft_commit(n->r) < s->n_committed ? raft_commit(n->r) : s->n_committed;
        for (uint64_t i = 1; i <= s->n_committed; i++) {
            const struct sim_commit *c = &s->committed[i];
            if (c->commit_term >= t)
                continue; /* a stale-term leader need not hold what later terms committed */
            if (!node_holds(n, i, c->term, c->h, false)) {
                violation(s, "leader completeness: leader %" PRIu64 " of term %" PRIu64
                             " lacks committed index %" PRIu64, n->id, t, i);
                return;
            }
        }
    }
fold:;
    /* Fold the leader's commit index into the oracle. */
    uint64_t c = raft_commit(n->r);
    if (c > n->last) {
        violation(s, "leader %" PRIu64 " commit %" PRIu64 " beyond its log", n->id, c);
        return;
    }
    const struct raft_conf *conf = raft_conf(n->r);
    for (uint64_t i = n->oracle_done + 1; i <= c; i++) {
        if (i <= n->snap.meta.index)
            continue; /* in its snapshot: checked against the oracle when it was installed */
        const struct sim_ent *e = ent(n, i);
        s->committed = grow(s->committed, &s->cap_committed, i + 1, sizeof *s->committed);
        struct sim_commit *sc = &s->committed[i];
        if (sc->set && (sc->term != e->term || sc->h != e->h)) {
            violation(s, "state machine safety: index %" PRIu64 " committed twice differently", i);
            return;
        }
        uint32_t durable = 0;
        for (uint32_t v = 0; v < conf->n_voters; v++) {
            uint64_t id = conf->voters[v];
            if (id < 1 || id > SIM_MAX)
                continue;
            const struct sim_node *vn = &s->nodes[id];
            if (node_holds(vn, i, e->term, e->h, true))
                durable++;
        }
        if (durable < conf->n_voters / 2 + 1) {
            violation(s, "durability: index %" PRIu64 " committed by %" PRIu64
                         " is durable on only %u of %u voters", i, n->id, durable, conf->n_voters);
            return;
        }
        if (!sc->set) {
            *sc = (struct sim_commit){true, e->term, e->h, e->type, t};
            if (e->type == RAFT_ENTRY_NORMAL)
                s->res->acked++;
        }
        if (i > s->n_committed)
            s->n_committed = i;
    }
    if (c > n->oracle_done)
        n->oracle_done = c;
}

static void check_msg(struct sim *s, struct sim_node *n, const struct raft_msg *m)
{
    if (m->type == RAFT_MSG_APPEND_RESP && !m->reject && m->index > n->durable)
        violation(s, "ack before fsync: node %" PRIu64 " acks index %" PRIu64
                     " but only %" PRIu64 " are durable", n->id, m->index, n->durable);
    if (m->type == RAFT_MSG_VOTE_RESP && !m->reject &&
        !(n->hs.term > m->term || (n->hs.term == m->term && n->hs.vote == m->to)))
        violation(s, "vote not durable: node %" PRIu64 " grants term %" PRIu64 " to %" PRIu64
                     " but its durable hard state is term %" PRIu64 " vote %" PRIu64,
                  n->id, m->term, m->to, n->hs.term, n->hs.vote);
}

/* ---------------------------------------------------------------- snapshots */

static void storage_below_base(struct sim_node *n, const char *what, uint64_t index)
{
    violation(n->sim, "node %" PRIu64 ": raft asked storage %s(%" PRIu64 ") at or below its "
                      "snapshot base %" PRIu64, n->id, what, index, n->snap.meta.index);
}

/* rd.install: the staged data must be what the leader described, and a committed prefix. */
static void node_install(struct sim *s, struct sim_node *n, const struct raft_snapshot_meta *m)
{
    const struct sim_snap *st = &n->stage;
    if (st->meta.index != m->index || st->meta.term != m->term ||
        !conf_eq(&st->meta.conf, &m->conf)) {
        violation(s, "node %" PRIu64 " installs snapshot %" PRIu64 "/%" PRIu64 " but staged %"
                     PRIu64 "/%" PRIu64, n->id, m->index, m->term, st->meta.index, st->meta.term);
        return;
    }
    if (m->index > s->n_committed || s->committed[m->index].term != m->term ||
        oracle_prefix(s, m->index) != st->sm_h) {
        violation(s, "state machine safety: node %" PRIu64 " installs a snapshot at %" PRIu64
                     " that is not the committed prefix", n->id, m->index);
        return;
    }
    if (m->index <= n->applied)
        violation(s, "node %" PRIu64 " installs snapshot %" PRIu64 " but applied %" PRIu64,
                  n->id, m->index, n->applied);
    trace(s, "node %" PRIu64 " installs snapshot %" PRIu64 "/%" PRIu64 " (log was %" PRIu64
             "..%" PRIu64 ")", n->id, m->index, m->term, n->off, n->last);
    disk_reset(n, m->index, m->term);
    n->snap = *st;
    n->applied = m->index;
    n->sm_h = st->sm_h;
    s->res->installs++;
}

/* The host snapshots its state machine at its applied index and compacts, keeping a tail. */
static void node_compact(struct sim *s, struct sim_node *n)
{
    uint64_t a = n->applied;
    if (a <= n->snap.meta.index)
        return;
    struct raft_snapshot_meta m = {a, ent(n, a)->term, {0}};
    if (raft_conf_at(n->r, a, &m.conf) != 0) {
        violation(s, "node %" PRIu64 ": raft_conf_at(%" PRIu64 ") failed", n->id, a);
        return;
    }
    /* Cross-check with the log: the latest CONFIG entry <= a, else the old snapshot's. */
    struct raft_conf want = n->snap.meta.conf;
    for (uint64_t i = a; i > n->off; i--)
        if (ent(n, i)->type == RAFT_ENTRY_CONFIG) {
            ASSERT(raft_conf_decode(slice_of(ent(n, i)->data, ent(n, i)->len), &want) == 0);
            break;
        }
    if (!conf_eq(&want, &m.conf))
        violation(s, "node %" PRIu64 ": raft_conf_at(%" PRIu64 ") is not the log's", n->id, a);
    if (a > s->n_committed || oracle_prefix(s, a) != n->sm_h)
        violation(s, "state machine safety: node %" PRIu64 " applied state at %" PRIu64
                     " is not the committed prefix", n->id, a);
    raft_compact(n->r, &m);
    if (raft_snapshot(n->r)->index != a)
        violation(s, "node %" PRIu64 ": raft_compact(%" PRIu64 ") not taken", n->id, a);
    n->snap = (struct sim_snap){m, n->sm_h};
    uint64_t tail = rnd(s, 40), upto = a > tail ? a - tail : 0;
    trace(s, "node %" PRIu64 " snapshot at %" PRIu64 ", drops log <= %" PRIu64, n->id, a, upto);
    disk_drop_prefix(n, upto);
    s->res->compactions++;
}

static void stream_start(struct sim *s, struct sim_node *n, const struct raft_msg *m)
{
    int to = (int)m->to;
    if (m->type != RAFT_MSG_SNAPSHOT || m->index != n->snap.meta.index ||
        m->log_term != n->snap.meta.term || m->n_entries != 1 || to < 1 || to > SIM_MAX) {
        violation(s, "node %" PRIu64 " snap_send does not describe its snapshot %" PRIu64,
                  n->id, n->snap.meta.index);
        return;
    }
    struct raft_conf c;
    if (raft_conf_decode(m->entries[0].data, &c) != 0 || !conf_eq(&c, &n->snap.meta.conf))
        violation(s, "node %" PRIu64 " snap_send carries a different configuration", n->id);
    for (size_t i = 0; i < s->n_streams; i++)
        if (s->streams[i].from == (int)n->id && s->streams[i].to == to &&
            s->streams[i].from_inc == n->inc && s->streams[i].term == m->term)
            violation(s, "node %" PRIu64 " starts a second snapshot to %d", n->id, to);
    struct sbuf b;
    sbuf_init(&b, 0);
    ASSERT(raft_msg_encode(m, &b) == 0);
    s->streams = grow(s->streams, &s->cap_streams, s->n_streams + 1, sizeof *s->streams);
    struct sim_stream *st = &s->streams[s->n_streams++];
    *st = (struct sim_stream){(int)n->id, to, m->term, n->inc, s->nodes[to].inc,
                              s->now + 1 + rnd(s, 30), chance_pm(s, s->stream_fail_pct * 10),
                              n->snap, xmalloc(b.len), b.len};
    ASSERT(st->bytes);
    memcpy(st->bytes, b.data, b.len);
    sbuf_free(&b);
    trace(s, "node %" PRIu64 " streams snapshot %" PRIu64 " to %d", n->id, m->index, to);
    s->res->snapshots_sent++;
}

static void pump(struct sim *s, struct sim_node *n);

/* Finish the streams that are due: stage the data at the receiver and deliver the metadata
 * message, or report the failure. A restarted leader's streams die with its process. */
static void stream_step(struct sim *s)
{
    for (size_t i = 0; i < s->n_streams && !s->failed;) {
        struct sim_stream *st = &s->streams[i];
        struct sim_node *f = &s->nodes[st->from], *t = &s->nodes[st->to];
        if (f->alive && f->inc == st->from_inc && (f->paused || st->done_at > s->now)) {
            i++;
            continue;
        }
        struct sim_stream done = *st;
        s->streams[i] = s->streams[--s->n_streams];
        if (f->alive && f->inc == done.from_inc) {
            bool ok = !done.fail && !s->blocked[done.from][done.to] && t->alive && !t->paused &&
                      t->member && t->inc == done.to_inc;
            if (ok) {
                t->stage = done.data;
                net_send_bytes(s, done.from, done.to, done.bytes, done.len);
            }
            trace(s, "snapshot stream %d -> %d %s", done.from, done.to, ok ? "done" : "failed");
            if (raft_term(f->r) == done.term) { /* older terms' streams go unreported */
                raft_snapshot_done(f->r, (uint64_t)done.to, ok);
                pump(s, f);
            }
        }
        xfree(done.bytes);
    }
}

static void pump(struct sim *s, struct sim_node *n)
{
    struct raft_ready rd;
    check_leader(s, n); /* fold a new commit into the oracle before anything is applied */
    while (!s->failed && n->r && raft_ready(n->r, &rd)) {
        if (rd.hs_changed)
            n->hs = rd.hs; /* fsynced before the messages below go out */
        if (rd.install)
            node_install(s, n, &rd.snap);
        if (rd.truncate_from) {
            ASSERT(rd.truncate_from <= n->last + 1 && rd.truncate_from > n->off);
            disk_truncate(n, rd.truncate_from - 1);
        }
        for (size_t i = 0; i < rd.n_entries; i++) {
            const struct raft_entry *e = &rd.entries[i];
            if (e->index != n->last + 1) {
                violation(s, "node %" PRIu64 " ready appends index %" PRIu64 " after %" PRIu64,
                          n->id, e->index, n->last);
                return;
            }
            disk_append(s, n, e->term, e->type, e->data);
        }
        for (size_t i = 0; i < rd.n_msgs; i++) {
            check_msg(s, n, &rd.msgs[i]);
            net_send(s, (int)n->id, &rd.msgs[i]);
        }
        for (size_t i = 0; i < rd.n_snap_send; i++)
            stream_start(s, n, &rd.snap_send[i]);
        for (uint64_t i = rd.apply_from; i && i <= rd.apply_to; i++) {
            if (i != n->applied + 1)
                violation(s, "node %" PRIu64 " applies %" PRIu64 " after %" PRIu64, n->id, i,
                          n->applied);
            if (i > n->durable) {
                violation(s, "node %" PRIu64 " applies index %" PRIu64 " beyond its durable log"
                             " (%" PRIu64 ")", n->id, i, n->durable);
                return;
            }
            if (i <= n->off) {
                violation(s, "node %" PRIu64 " applies compacted index %" PRIu64, n->id, i);
                return;
            }
            if (i > s->n_committed || !s->committed[i].set ||
                s->committed[i].term != ent(n, i)->term || s->committed[i].h != ent(n, i)->h)
                violation(s, "apply before commit: node %" PRIu64 " applies index %" PRIu64
                             " that no leader committed", n->id, i);
            n->applied = i;
            n->sm_h = chain(n->sm_h, ent(n, i)->h);
        }
        for (size_t i = 0; i < rd.n_reads; i++) {
            for (int k = 0; k < s->n_reads; k++)
                if (s->reads[k].ctx == rd.reads[i].ctx) {
                    if (rd.reads[i].index < s->reads[k].min_index)
                        violation(s, "stale read: index %" PRIu64 " < %" PRIu64 " committed "
                                     "before the read", rd.reads[i].index, s->reads[k].min_index);
                    s->reads[k] = s->reads[--s->n_reads];
                    s->res->reads++;
                    break;
                }
        }
        if (rd.apply_to)
            trace(s, "node %" PRIu64 " (%s t%" PRIu64 ") applied %" PRIu64 "..%" PRIu64
                     " commit %" PRIu64 " durable %" PRIu64, n->id,
                  raft_role(n->r) == RAFT_LEADER ? "leader" : "follower", raft_term(n->r),
                  rd.apply_from, rd.apply_to, raft_commit(n->r), n->durable);
        raft_advance(n->r, &rd);
        check_leader(s, n);
    }
}

/* ---------------------------------------------------------------- node lifecycle */

static void node_start(struct sim *s, struct sim_node *n)
{
    n->sim = s;
    n->inc++;
    n->st = (struct raft_storage){n, st_last_index, st_term_at, st_entries, st_config_before};
    n->rng = (s->o.seed * 0x9E3779B97F4A7C15ULL) ^ (n->id << 32) ^ s->now ^ 0x5DEECE66DULL;
    if (!n->rng)
        n->rng = 1;
    struct raft_options o = {
        .id = n->id, .storage = &n->st, .hs = n->hs, .election_ticks = SIM_ELECTION_TICKS,
        .heartbeat_ticks = SIM_HEARTBEAT_TICKS, .max_msg_bytes = 256, .max_inflight = 8,
        .pre_vote = (s->o.seed % 4) != 3, .check_quorum = (s->o.seed % 4) != 2,
        .rand = sim_node_rand, .rand_ctx = n,
        .applied = n->snap.meta.index, .snap = n->snap.meta,
    };
    ASSERT(raft_new(&o, &n->r) == 0);
    n->alive = true;
    n->paused = false;
    /* The applied state machine is volatile: it restarts from the snapshot, the rest is
     * replayed from the log. */
    n->applied = n->snap.meta.index;
    n->sm_h = n->snap.sm_h;
    n->stage = (struct sim_snap){{0}, 0};
    if (s->o.snapshots) /* the transport sees the new incarnation */
        for (int i = 1; i <= s->n_ids; i++)
            if (s->nodes[i].alive && i != (int)n->id)
                raft_peer_reset(s->nodes[i].r, n->id);
    n->checked_term = 0;
    n->oracle_done = 0;
    n->led_term = 0;
}

static void node_crash(struct sim *s, struct sim_node *n)
{
    raft_free(n->r);
    n->r = NULL;
    n->alive = false;
    /* Lose a random part of the unsynced tail. */
    uint64_t keep = n->durable + rnd(s, n->last - n->durable + 1);
    disk_truncate(n, keep);
    n->durable = n->last;
    n->stage = (struct sim_snap){{0}, 0}; /* staged snapshot data is volatile */
}

/* The node's disk is lost entirely (only ever a learner: see raft.h). */
static void node_wipe(struct sim *s, struct sim_node *n)
{
    node_crash(s, n);
    disk_reset(n, 0, 0);
    n->hs = (struct raft_hardstate){0, 0};
    n->snap = (struct sim_snap){{0}, 0};
    n->applied = n->sm_h = 0;
}

/* ---------------------------------------------------------------- faults and clients */

static struct sim_node *find_leader(struct sim *s)
{
    struct sim_node *best = NULL;
    for (int i = 1; i <= s->n_ids; i++) {
        struct sim_node *n = &s->nodes[i];
        if (n->alive && !n->paused && raft_role(n->r) == RAFT_LEADER &&
            (!best || raft_term(n->r) > raft_term(best->r)))
            best = n;
    }
    return best;
}

static void heal_network(struct sim *s)
{
    memset(s->blocked, 0, sizeof s->blocked);
}

static void fault_step(struct sim *s)
{
    int id = 1 + (int)rnd(s, (uint64_t)s->n_ids);
    struct sim_node *n = &s->nodes[id];
    if (n->member && n->alive && chance_pm(s, s->kill_pm)) {
        trace(s, "kill node %d", id);
        node_crash(s, n);
        n->down_until = s->now + 10 + rnd(s, 200);
        s->res->kills++;
    }
    if (s->o.snapshots && n->member && n->alive && !n->no_wipe && id > s->o.n_nodes &&
        chance_pm(s, s->wipe_pm)) {
        trace(s, "wipe node %d", id);
        node_wipe(s, n);
        n->down_until = s->now + 10 + rnd(s, 100);
        s->res->wipes++;
    }
    if (n->member && n->alive && !n->paused && chance_pm(s, s->pause_pm)) {
        trace(s, "pause node %d", id);
        n->paused = true;
        n->paused_until = s->now + 10 + rnd(s, 300);
        s->res->pauses++;
    }
    if (chance_pm(s, s->part_pm)) {
        heal_network(s);
        int kind = (int)rnd(s, 4);
        struct sim_node *l = find_leader(s);
        s->res->partitions++;
        if (kind == 0) { /* symmetric split into two random sides */
            uint32_t side = (uint32_t)rnd(s, 1u << s->n_ids);
            for (int a = 1; a <= s->n_ids; a++)
                for (int b = 1; b <= s->n_ids; b++)
                    s->blocked[a][b] = ((side >> (a - 1)) & 1) != ((side >> (b - 1)) & 1);
            trace(s, "partition: split %#x", side);
        } else if (kind == 1) { /* one-way links */
            for (int k = 0; k < 3; k++) {
                int a = 1 + (int)rnd(s, (uint64_t)s->n_ids), b = 1 + (int)rnd(s, (uint64_t)s->n_ids);
                s->blocked[a][b] = true;
                trace(s, "partition: one-way %d -> %d", a, b);
            }
        } else if (kind == 2 && l) { /* isolate the leader */
            for (int b = 1; b <= s->n_ids; b++)
                s->blocked[l->id][b] = s->blocked[b][l->id] = true;
            trace(s, "partition: isolate leader %" PRIu64, l->id);
        } else {
            trace(s, "partition: healed");
        }
    }
    for (int i = 1; i <= s->n_ids; i++) {
        struct sim_node *m = &s->nodes[i];
        if (m->member && !m->alive && s->now >= m->down_until) {
            trace(s, "restart node %d (log %" PRIu64 "..%" PRIu64 ", term %" PRIu64 ")", i,
                  m->off, m->last, m->hs.term);
            node_start(s, m);
        }
        if (m->paused && s->now >= m->paused_until) {
            trace(s, "resume node %d", i);
            m->paused = false;
        }
    }
}

static void client_step(struct sim *s, bool force)
{
    int id = 1 + (int)rnd(s, (uint64_t)s->n_ids);
    struct sim_node *n = &s->nodes[id];
    if (!force && !chance_pm(s, 300))
        return;
    if (force) {
        n = find_leader(s);
        if (!n)
            return;
    }
    if (!n->alive || n->paused)
        return;
    uint8_t v[16];
    put_le64(v, s->o.seed);
    put_le64(v + 8, ++s->next_value);
    uint64_t idx = 0, leader = 0;
    if (raft_propose(n->r, RAFT_ENTRY_NORMAL, slice_of(v, sizeof v), &idx, &leader) == 0)
        trace(s, "propose value %" PRIu64 " at node %d index %" PRIu64, s->next_value, id, idx);
    if (raft_role(n->r) == RAFT_LEADER && s->n_reads < 64 && chance_pm(s, 100)) {
        uint64_t ctx = s->now * 8 + (uint64_t)id;
        if (raft_read_index(n->r, ctx) == 0)
            s->reads[s->n_reads++] = (struct sim_read){ctx, s->n_committed};
    }
    if (raft_role(n->r) == RAFT_LEADER && chance_pm(s, 3)) {
        const struct raft_conf *c = raft_conf(n->r);
        uint64_t to = c->voters[rnd(s, c->n_voters)];
        if (to != n->id && raft_transfer_leadership(n->r, to) == 0) {
            trace(s, "transfer leadership %d -> %" PRIu64, id, to);
            s->res->transfers++;
        }
    }
}

/* Latest CONFIG entry in a node's log and whether the node's commit covers it. */
static bool conf_settled(struct sim_node *n)
{
    for (uint64_t i = n->last; i > n->off; i--)
        if (ent(n, i)->type == RAFT_ENTRY_CONFIG)
            return raft_commit(n->r) >= i;
    return true;
}

static void membership_step(struct sim *s)
{
    if (!s->o.membership || s->target == 0 || !chance_pm(s, 50))
        return;
    struct sim_node *l = find_leader(s);
    if (!l || !conf_settled(l))
        return;
    const struct raft_conf *c = raft_conf(l->r);
    int k = s->target;
    struct sim_node *t = &s->nodes[k];
    uint64_t idx = 0;
    int rc = 1;
    if (!s->shrinking) {
        if (!t->member) {
            t->member = true; /* empty log, no configuration: it waits to be contacted */
            node_start(s, t);
            trace(s, "start node %d", k);
        }
        if (!raft_conf_has(c, (uint64_t)k)) {
            rc = raft_propose_conf(l->r, RAFT_CONF_ADD_LEARNER, (uint64_t)k, &idx);
        } else if (!raft_conf_is_voter(c, (uint64_t)k)) {
            uint64_t match = 0;
            /* With wipes the leader's view may be stale: the node itself must hold the
             * committed prefix durably before it becomes a voter. */
            bool caught_up = !s->o.snapshots ||
                             (t->alive && raft_commit(t->r) >= raft_commit(l->r) &&
                              t->durable >= raft_commit(l->r));
            if (raft_match(l->r, (uint64_t)k, &match) == 0 && match >= raft_commit(l->r) &&
                caught_up) {
                t->no_wipe = true;
                rc = raft_propose_conf(l->r, RAFT_CONF_PROMOTE, (uint64_t)k, &idx);
            }
        } else {
            s->target = k < SIM_MAX ? k + 1 : 0;
            if (s->target == 0) {
                s->shrinking = true;
                s->target = SIM_MAX;
            }
        }
    } else {
        if (raft_conf_has(c, (uint64_t)k)) {
            rc = raft_propose_conf(l->r, RAFT_CONF_REMOVE, (uint64_t)k, &idx);
        } else {
            if (t->member) { /* the removal is committed: retire the node for good */
                trace(s, "retire node %d", k);
                if (t->alive)
                    node_crash(s, t);
                t->member = false;
            }
            s->target = k - 1 > s->o.n_nodes ? k - 1 : 0;
        }
    }
    if (rc == 0) {
        trace(s, "conf change for node %d at index %" PRIu64, k, idx);
        s->res->conf_changes++;
    }
}

static void deliver(struct sim *s)
{
    for (size_t i = 0; i < s->n_msgs && !s->failed;) {
        struct sim_msg *sm = &s->msgs[i];
        struct sim_node *n = &s->nodes[sm->to];
        if (sm->at > s->now || (n->alive && n->paused)) {
            i++;
            continue;
        }
        struct sim_msg m = *sm;
        s->msgs[i] = s->msgs[--s->n_msgs];
        if (n->alive && n->member) {
            struct raft_msg rm;
            int rc = raft_msg_decode(slice_of(m.bytes, m.len), &rm, sim_dec_ents,
                                     RAFT_MSG_MAX_ENTRIES);
            ASSERT(rc == 0);
            /* The host steps a snapshot's metadata only with its data staged. */
            if (rm.type != RAFT_MSG_SNAPSHOT ||
                (n->stage.meta.index == rm.index && n->stage.meta.term == rm.log_term)) {
                raft_step(n->r, &rm);
                pump(s, n);
            }
        }
        xfree(m.bytes);
    }
}

static void time_step(struct sim *s)
{
    for (int i = 1; i <= s->n_ids && !s->failed; i++) {
        struct sim_node *n = &s->nodes[i];
        if (!n->alive || n->paused)
            continue;
        if (n->last > n->durable && chance_pm(s, 300))
            disk_sync(n);
        if (s->o.snapshots && chance_pm(s, s->compact_pm))
            node_compact(s, n);
        if ((s->now + n->tick_phase) % n->tick_period == 0)
            raft_tick(n->r);
        pump(s, n);
    }
}

static bool all_applied(struct sim *s, uint64_t index)
{
    for (int i = 1; i <= s->n_ids; i++) {
        struct sim_node *n = &s->nodes[i];
        if (n->member && n->alive && n->applied < index)
            return false;
    }
    return true;
}

int rsim_run(const struct rsim_opts *opts, struct rsim_result *res)
{
    struct sim *s = xcalloc(1, sizeof *s);
    ASSERT(s);
    memset(res, 0, sizeof *res);
    s->o = *opts;
    s->res = res;
    if (s->o.fault_steps == 0)
        s->o.fault_steps = 1500;
    ASSERT(s->o.n_nodes >= 1 && s->o.n_nodes <= SIM_MAX);
    raft_test_plant = (enum raft_plant)s->o.plant;
    s->rng = s->o.seed * 0x9E3779B97F4A7C15ULL + 0x1234567;
    if (!s->rng)
        s->rng = 1;
    s->n_ids = s->o.membership ? SIM_MAX : s->o.n_nodes;
    s->drop_pct = (uint32_t)rnd(s, 15);
    s->dup_pct = (uint32_t)rnd(s, 8);
    s->delay_max = 1 + (uint32_t)rnd(s, 8);
    s->kill_pm = (uint32_t)rnd(s, 12);
    s->pause_pm = (uint32_t)rnd(s, 8);
    s->part_pm = (uint32_t)rnd(s, 10);
    bool skew = rnd(s, 2);
    if (s->o.snapshots) {
        s->compact_pm = 5 + (uint32_t)rnd(s, 40);
        s->wipe_pm = (uint32_t)rnd(s, 25);
        s->stream_fail_pct = (uint32_t)rnd(s, 30);
    }
    if (s->o.membership) {
        s->target = s->o.n_nodes + 1;
        if (s->target > SIM_MAX)
            s->target = 0;
    }
    trace(s, "seed %" PRIu64 ": %d nodes%s, drop %u%% dup %u%% delay<=%u kill %u pause %u "
             "partition %u per mille, skew %d", s->o.seed, s->o.n_nodes,
          s->o.membership ? " + membership" : "", s->drop_pct, s->dup_pct, s->delay_max,
          s->kill_pm, s->pause_pm, s->part_pm, skew);
    struct sbuf boot;
    sbuf_init(&boot, 0);
    uint64_t ids[SIM_MAX];
    for (int i = 0; i < s->o.n_nodes; i++)
        ids[i] = (uint64_t)i + 1;
    ASSERT(raft_bootstrap_entry(ids, (uint32_t)s->o.n_nodes, &boot) == 0);
    s->committed = grow(s->committed, &s->cap_committed, 2, sizeof *s->committed);
    for (int i = 1; i <= s->n_ids; i++) {
        struct sim_node *n = &s->nodes[i];
        n->id = (uint64_t)i;
        n->tick_period = skew ? 1 + (uint32_t)rnd(s, 3) : 1;
        n->tick_phase = (uint32_t)rnd(s, 3);
        if (i <= s->o.n_nodes) {
            n->member = true;
            disk_append(s, n, 1, RAFT_ENTRY_CONFIG, slice_of(boot.data, boot.len));
            n->durable = 1;
            n->sim = s;
            n->hs.term = 1;
            node_start(s, n);
        }
    }
    /* The bootstrap entry is identical everywhere: committed by construction. */
    s->committed[1] = (struct sim_commit){true, 1, ent(&s->nodes[1], 1)->h, RAFT_ENTRY_CONFIG, 1};
    s->n_committed = 1;
    sbuf_free(&boot);

    for (s->now = 1; s->now <= (uint64_t)s->o.fault_steps && !s->failed; s->now++) {
        fault_step(s);
        membership_step(s);
        client_step(s, false);
        for (int i = 1; i <= s->n_ids; i++)
            if (s->nodes[i].alive)
                pump(s, &s->nodes[i]);
        deliver(s);
        stream_step(s);
        time_step(s);
    }
    /* Heal: everything up, links whole, no loss; then demand progress within a bound. Pending
     * membership work continues (it is part of what must make progress). */
    heal_network(s);
    s->drop_pct = s->dup_pct = 0;
    for (int i = 1; i <= s->n_ids; i++) {
        struct sim_node *n = &s->nodes[i];
        n->paused = false;
        if (n->member && !n->alive)
            node_start(s, n);
    }
    trace(s, "healed");
    uint64_t want = 0, want_node = 0, want_term = 0, deadline = s->now + SIM_LIVE_STEPS;
    bool done = false;
    for (; s->now < deadline && !s->failed && !done; s->now++) {
        membership_step(s);
        struct sim_node *l = find_leader(s);
        if (want && (!l || l->id != want_node || raft_term(l->r) != want_term))
            want = 0; /* proposed to a deposed leader: the client retries with the new one */
        if (want == 0 && l && s->target == 0 &&
            term_or_zero(l->r, raft_commit(l->r)) == raft_term(l->r)) {
            uint64_t before = s->next_value;
            client_step(s, true);
            if (s->next_value != before) {
                want = raft_last_index(l->r);
                want_node = l->id;
                want_term = raft_term(l->r);
            }
        }
        if (s->o.trace && s->now % 500 == 0)
            for (int i = 1; i <= s->n_ids; i++) {
                struct sim_node *n = &s->nodes[i];
                if (n->alive)
                    trace(s, "node %d role %d term %" PRIu64 " vote %" PRIu64 " leader %" PRIu64
                             " last %" PRIu64 "/%" PRIu64 " commit %" PRIu64, i, raft_role(n->r),
                          raft_term(n->r), n->hs.vote, raft_leader(n->r), raft_last_index(n->r),
                          term_or_zero(n->r, raft_last_index(n->r)), raft_commit(n->r));
            }
        deliver(s);
        stream_step(s);
        time_step(s);
        if (want && s->n_committed >= want && all_applied(s, s->n_committed))
            done = true;
    }
    if (!s->failed && !done)
        violation(s, "liveness: no commit applied everywhere within %d steps of healing "
                     "(target %d, committed %" PRIu64 ")", SIM_LIVE_STEPS, s->target,
                  s->n_committed);
    res->committed = s->n_committed;
    res->ok = !s->failed;

    for (int i = 1; i <= SIM_MAX; i++) {
        struct sim_node *n = &s->nodes[i];
        raft_free(n->r);
        disk_reset(n, 0, 0);
        xfree(n->log);
    }
    for (size_t i = 0; i < s->n_msgs; i++)
        xfree(s->msgs[i].bytes);
    for (size_t i = 0; i < s->n_streams; i++)
        xfree(s->streams[i].bytes);
    xfree(s->streams);
    xfree(s->prefix);
    xfree(s->msgs);
    xfree(s->leader_of_term);
    xfree(s->committed);
    xfree(s->lm);
    xfree(s);
    raft_test_plant = RAFT_PLANT_NONE;
    return res->ok ? 0 : -1;
}
