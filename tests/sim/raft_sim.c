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

struct sim_node {
    uint64_t id;
    bool member; /* started and not removed */
    bool alive, paused;
    uint64_t down_until, paused_until;
    uint32_t tick_period, tick_phase;
    uint64_t rng;
    struct raft *r;
    struct raft_storage st;
    struct sim_ent *log;
    size_t len, cap, durable;
    struct raft_hardstate hs;
    uint64_t applied;
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

/* ---------------------------------------------------------------- storage callbacks */

static uint64_t st_last_index(void *ctx) { return ((struct sim_node *)ctx)->len; }

static int st_term_at(void *ctx, uint64_t index, uint64_t *term)
{
    struct sim_node *n = ctx;
    if (index == 0 || index > n->len)
        return ERR_NOT_FOUND;
    *term = n->log[index - 1].term;
    return 0;
}

static int st_entries(void *ctx, uint64_t from, size_t max_bytes, struct raft_entry *out,
                      size_t max_count, size_t *cnt)
{
    struct sim_node *n = ctx;
    size_t k = 0, bytes = 0;
    while (k < max_count && from + k <= n->len && (k == 0 || bytes < max_bytes)) {
        const struct sim_ent *e = &n->log[from + k - 1];
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
    uint64_t i = before - 1 < n->len ? before - 1 : n->len;
    for (; i >= 1; i--)
        if (n->log[i - 1].type == RAFT_ENTRY_CONFIG) {
            *index = i;
            *data = slice_of(n->log[i - 1].data, n->log[i - 1].len);
            return 0;
        }
    return ERR_NOT_FOUND;
}

/* ---------------------------------------------------------------- disk */

static void disk_truncate(struct sim_node *n, uint64_t keep)
{
    while (n->len > keep)
        xfree(n->log[--n->len].data);
    if (n->durable > n->len)
        n->durable = n->len;
}

static size_t lm_slot(uint64_t index, uint64_t term, size_t cap)
{
    return (size_t)((index * 0x9E3779B97F4A7C15ULL) ^ (term * 0xC2B2AE3D27D4EB4FULL)) & (cap - 1);
}

static void disk_append(struct sim *s, struct sim_node *n, uint64_t term, uint8_t type,
                        struct slice data)
{
    n->log = grow(n->log, &n->cap, n->len + 1, sizeof *n->log);
    struct sim_ent *e = &n->log[n->len++];
    e->term = term;
    e->type = type;
    e->len = data.len;
    e->data = xmalloc(data.len ? data.len : 1);
    ASSERT(e->data);
    if (data.len)
        memcpy(e->data, data.ptr, data.len);
    e->h = hash_bytes(data.ptr ? (const void *)data.ptr : (const void *)"", data.len, type);
    /* Log matching: (index, term) must always name the same entry and predecessor term. */
    uint64_t idx = n->len, prev = idx > 1 ? n->log[idx - 2].term : 0;
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
    n->durable = n->len;
    if (n->r && n->len)
        raft_persisted(n->r, n->len, n->log[n->len - 1].term);
}

/* ---------------------------------------------------------------- network */

static void net_send(struct sim *s, int from, const struct raft_msg *m)
{
    int to = (int)m->to;
    if (to < 1 || to > SIM_MAX || s->blocked[from][to] || chance_pm(s, s->drop_pct * 10))
        return;
    int copies = chance_pm(s, s->dup_pct * 10) ? 2 : 1;
    struct sbuf b;
    sbuf_init(&b, 0);
    ASSERT(raft_msg_encode(m, &b) == 0);
    for (int c = 0; c < copies; c++) {
        s->msgs = grow(s->msgs, &s->cap_msgs, s->n_msgs + 1, sizeof *s->msgs);
        struct sim_msg *sm = &s->msgs[s->n_msgs++];
        sm->at = s->now + 1 + rnd(s, s->delay_max);
        sm->to = to;
        sm->len = b.len;
        sm->bytes = xmalloc(b.len);
        ASSERT(sm->bytes);
        memcpy(sm->bytes, b.data, b.len);
    }
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
            if (i > n->len || n->log[i - 1].term != c->term || n->log[i - 1].h != c->h) {
                violation(s, "leader completeness: leader %" PRIu64 " of term %" PRIu64
                             " lacks committed index %" PRIu64, n->id, t, i);
                return;
            }
        }
    }
fold:;
    /* Fold the leader's commit index into the oracle. */
    uint64_t c = raft_commit(n->r);
    if (c > n->len) {
        violation(s, "leader %" PRIu64 " commit %" PRIu64 " beyond its log", n->id, c);
        return;
    }
    const struct raft_conf *conf = raft_conf(n->r);
    for (uint64_t i = n->oracle_done + 1; i <= c; i++) {
        const struct sim_ent *e = &n->log[i - 1];
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
            if (vn->durable >= i && vn->log[i - 1].term == e->term && vn->log[i - 1].h == e->h)
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
                     " but only %zu are durable", n->id, m->index, n->durable);
    if (m->type == RAFT_MSG_VOTE_RESP && !m->reject &&
        !(n->hs.term > m->term || (n->hs.term == m->term && n->hs.vote == m->to)))
        violation(s, "vote not durable: node %" PRIu64 " grants term %" PRIu64 " to %" PRIu64
                     " but its durable hard state is term %" PRIu64 " vote %" PRIu64,
                  n->id, m->term, m->to, n->hs.term, n->hs.vote);
}

static void pump(struct sim *s, struct sim_node *n)
{
    struct raft_ready rd;
    check_leader(s, n); /* fold a new commit into the oracle before anything is applied */
    while (!s->failed && n->r && raft_ready(n->r, &rd)) {
        if (rd.hs_changed)
            n->hs = rd.hs; /* fsynced before the messages below go out */
        if (rd.truncate_from) {
            ASSERT(rd.truncate_from <= n->len + 1);
            disk_truncate(n, rd.truncate_from - 1);
        }
        for (size_t i = 0; i < rd.n_entries; i++) {
            const struct raft_entry *e = &rd.entries[i];
            if (e->index != n->len + 1)
                violation(s, "node %" PRIu64 " ready appends index %" PRIu64 " after %zu", n->id,
                          e->index, n->len);
            disk_append(s, n, e->term, e->type, e->data);
        }
        for (size_t i = 0; i < rd.n_msgs; i++) {
            check_msg(s, n, &rd.msgs[i]);
            net_send(s, (int)n->id, &rd.msgs[i]);
        }
        for (uint64_t i = rd.apply_from; i && i <= rd.apply_to; i++) {
            if (i != n->applied + 1)
                violation(s, "node %" PRIu64 " applies %" PRIu64 " after %" PRIu64, n->id, i,
                          n->applied);
            if (i > n->durable)
                violation(s, "node %" PRIu64 " applies index %" PRIu64 " beyond its durable log"
                             " (%zu)", n->id, i, n->durable);
            else if (i > s->n_committed || !s->committed[i].set ||
                     s->committed[i].term != n->log[i - 1].term ||
                     s->committed[i].h != n->log[i - 1].h)
                violation(s, "apply before commit: node %" PRIu64 " applies index %" PRIu64
                             " that no leader committed", n->id, i);
            n->applied = i;
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
                     " commit %" PRIu64 " durable %zu", n->id,
                  raft_role(n->r) == RAFT_LEADER ? "leader" : "follower", raft_term(n->r),
                  rd.apply_from, rd.apply_to, raft_commit(n->r), n->durable);
        raft_advance(n->r, &rd);
        check_leader(s, n);
    }
}

/* ---------------------------------------------------------------- node lifecycle */

static void node_start(struct sim *s, struct sim_node *n)
{
    n->st = (struct raft_storage){n, st_last_index, st_term_at, st_entries, st_config_before};
    n->rng = (s->o.seed * 0x9E3779B97F4A7C15ULL) ^ (n->id << 32) ^ s->now ^ 0x5DEECE66DULL;
    if (!n->rng)
        n->rng = 1;
    struct raft_options o = {
        .id = n->id, .storage = &n->st, .hs = n->hs, .election_ticks = SIM_ELECTION_TICKS,
        .heartbeat_ticks = SIM_HEARTBEAT_TICKS, .max_msg_bytes = 256, .max_inflight = 8,
        .pre_vote = (s->o.seed % 4) != 3, .check_quorum = (s->o.seed % 4) != 2,
        .rand = sim_node_rand, .rand_ctx = n,
    };
    ASSERT(raft_new(&o, &n->r) == 0);
    n->alive = true;
    n->paused = false;
    n->applied = 0; /* the applied state machine is volatile: replayed from the log */
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
    size_t keep = n->durable + (size_t)rnd(s, n->len - n->durable + 1);
    disk_truncate(n, keep);
    n->durable = n->len;
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
            trace(s, "restart node %d (log %zu, term %" PRIu64 ")", i, m->len, m->hs.term);
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
    for (size_t i = n->len; i >= 1; i--)
        if (n->log[i - 1].type == RAFT_ENTRY_CONFIG)
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
            if (raft_match(l->r, (uint64_t)k, &match) == 0 && match >= raft_commit(l->r))
                rc = raft_propose_conf(l->r, RAFT_CONF_PROMOTE, (uint64_t)k, &idx);
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
            raft_step(n->r, &rm);
            pump(s, n);
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
        if (n->len > n->durable && chance_pm(s, 300))
            disk_sync(n);
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
            n->hs.term = 1;
            node_start(s, n);
        }
    }
    /* The bootstrap entry is identical everywhere: committed by construction. */
    s->committed[1] = (struct sim_commit){true, 1, s->nodes[1].log[0].h, RAFT_ENTRY_CONFIG, 1};
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
        disk_truncate(n, 0);
        xfree(n->log);
    }
    for (size_t i = 0; i < s->n_msgs; i++)
        xfree(s->msgs[i].bytes);
    xfree(s->msgs);
    xfree(s->leader_of_term);
    xfree(s->committed);
    xfree(s->lm);
    xfree(s);
    raft_test_plant = RAFT_PLANT_NONE;
    return res->ok ? 0 : -1;
}
