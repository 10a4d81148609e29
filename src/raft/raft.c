/* raft.c -- the Raft consensus state machine (Ongaro's thesis), pure and deterministic.
 *
 * Roles and transitions (function making each transition in brackets):
 *
 *            timeout, pre-vote on          pre-vote quorum
 *   FOLLOWER ------------------> PRE_CANDIDATE --------------> CANDIDATE --(vote quorum)--> LEADER
 *      ^  ^  [campaign(pre)]          |        [campaign]        |   [become_leader]         |
 *      |  +---------------------------+--------------------------+                           |
 *      |      higher term / AppendEntries of this term [become_follower]                     |
 *      +------------------------------------------------------------------------------------+
 *        higher term, check-quorum failure, removed from the configuration [become_follower]
 *   (with pre-vote off, or on TimeoutNow, a follower goes straight to CANDIDATE.)
 *
 * Invariants:
 *  1. term never decreases; vote is reset only when term increases. Every message is stamped
 *     with the term at creation, and the ready that carries it also carries the hard state that
 *     covers it, which the host makes durable before sending.
 *  2. commit_index never decreases and a truncation point is always > commit_index.
 *  3. A follower acknowledges (APPEND_RESP ok, match = m) only when m <= persisted (host fsync)
 *     and m <= verified (the prefix the current leader of this term proved equal to its own).
 *  4. The leader counts itself with its persisted index, only voters of its latest configuration
 *     count, and it commits an index only if that entry has the leader's term.
 *  5. Entries handed to the host for apply are <= commit and <= persisted.
 *  6. The latest configuration in the log (committed or not) is the active one; a leader
 *     proposes a new one only after the previous one and an entry of its own term committed.
 *  7. The log is [snap.index + 1, last_index] on top of the snapshot base (snap.index, snap.term):
 *     unstable entries occupy [u_first, last_index], everything in (snap.index, u_first) is in
 *     the host log (its entries >= truncate_from are logically gone until the next advance), and
 *     the storage is never asked about an index <= snap.index, and
 *     snap.index <= applied <= min(commit, persisted).
 *  8. A follower in the leader's "snapshot" progress state gets no appends until the host calls
 *     raft_snapshot_done or the follower acknowledges an index >= the snapshot's index. At most
 *     one snapshot per follower is outstanding at the host in one term: a new one is sent only
 *     after raft_snapshot_done for the previous (a new term resets progress, and the host then
 *     drops, without reporting, the streams of the older term).
 *  9. An installed snapshot is always a committed prefix: the leader sends only its own base
 *     (<= its applied <= its commit), and a follower installs only beyond its commit, resetting
 *     base = commit = applied = persisted = the snapshot index. The acknowledgement of an
 *     install rides in the same ready as rd.install, which the host makes durable before it
 *     sends that ready's messages (so invariant 3 holds for it too).
 *
 * Snapshot progress of one follower, on the leader:
 *
 *   probe/replicate --(next <= snap.index) [replicate_to -> send_snapshot]--> SNAPSHOT
 *   SNAPSHOT --(raft_snapshot_done ok)------------> probe from snapshot index + 1
 *   SNAPSHOT --(raft_snapshot_done !ok)-----------> probe, retried at the next heartbeat
 *   SNAPSHOT --(APPEND_RESP ok, index >= snapshot index) [handle_append_resp]--> replicate
 *
 * Memory: unstable entries own copies of their data (xmalloc); outgoing message entries are
 * copied into an arena reset at raft_advance. On allocation failure a message is dropped (Raft
 * tolerates loss) and a proposal fails with ERR_NOMEM; state is never left half-updated.
 */
#include "raft/raft.h"

#include "base/alloc.h"
#include "base/arena.h"
#include "base/assert.h"

#include <string.h>

#ifdef RAFT_TEST_PLANTS
enum raft_plant raft_test_plant = RAFT_PLANT_NONE;
#define PLANTED(p) (raft_test_plant == (p))
#else
#define PLANTED(p) 0
#endif

struct progress {
    uint64_t id;
    uint64_t match, next;
    bool replicate;       /* false: probe (one append at a time, resent each heartbeat) */
    bool probe_sent;
    bool active;          /* heard from since the last check-quorum round */
    uint64_t sent_commit; /* commit already told via heartbeat */
    uint64_t read_ack;    /* highest read sequence echoed */
    bool snapshot;        /* waiting for a snapshot: no appends (invariant 8) */
    bool streaming;       /* the host has a stream to it outstanding (until done) */
    uint64_t snap_index;  /* the index the last snapshot sent covers */
    uint64_t ack_tick;    /* tick of the last progress */
    uint32_t n_inflight, inflight_head;
    uint64_t inflight[RAFT_MAX_INFLIGHT]; /* last index of each in-flight append, FIFO */
};

struct vote_rec {
    uint64_t id;
    bool granted;
};

struct pending_read {
    uint64_t ctx, index, seq;
};

struct raft {
    struct raft_options o;
    uint64_t id;
    uint64_t term, vote, leader;
    enum raft_role role;
    struct raft_hardstate hs_last; /* last hard state handed to the host */
    uint64_t commit, applied, persisted;
    uint64_t last_index, last_term;
    struct raft_snapshot_meta snap; /* the log's base (invariant 7) */
    bool install;                   /* the next ready installs install_meta */
    struct raft_snapshot_meta install_meta;
    /* Unstable entries. */
    uint64_t u_first, truncate_from;
    struct raft_entry *u;
    size_t u_n, u_cap;
    /* Configuration. */
    struct raft_conf conf;
    uint64_t conf_index;
    /* Timers (ticks). */
    uint64_t now;
    uint32_t election_elapsed, heartbeat_elapsed, timeout;
    /* Elections. */
    struct vote_rec votes[RAFT_MAX_NODES];
    uint32_t n_votes;
    /* Follower acknowledgement state (for the leader of `term`). */
    uint64_t verified, acked;
    bool ack_owed;
    /* Leader. */
    struct progress prs[RAFT_MAX_NODES];
    uint32_t n_prs;
    uint64_t transfer_to;
    bool forced_campaign; /* the current/last candidacy came from a leadership transfer */
    bool bcast;
    struct pending_read reads[RAFT_MAX_PENDING_READS];
    uint32_t reads_head, n_reads;
    uint64_t read_seq;
    /* Outbox (valid until raft_advance). */
    struct raft_msg *msgs;
    size_t n_msgs, msgs_cap;
    struct raft_msg *snaps; /* rd.snap_send */
    size_t n_snaps, snaps_cap;
    struct raft_read *out_reads;
    size_t n_out_reads, out_reads_cap;
    struct arena arena;
    bool in_ready;
};

/* ---------------------------------------------------------------- configuration */

bool raft_conf_is_voter(const struct raft_conf *c, uint64_t id)
{
    for (uint32_t i = 0; i < c->n_voters; i++)
        if (c->voters[i] == id)
            return true;
    return false;
}

static bool conf_is_learner(const struct raft_conf *c, uint64_t id)
{
    for (uint32_t i = 0; i < c->n_learners; i++)
        if (c->learners[i] == id)
            return true;
    return false;
}

bool raft_conf_has(const struct raft_conf *c, uint64_t id)
{
    return raft_conf_is_voter(c, id) || conf_is_learner(c, id);
}

static bool conf_sane(const struct raft_conf *c)
{
    return c->n_voters <= RAFT_MAX_NODES && c->n_learners <= RAFT_MAX_NODES - c->n_voters;
}

int raft_conf_encode(const struct raft_conf *c, struct sbuf *out)
{
    if (c->n_voters + c->n_learners > RAFT_MAX_NODES)
        return ERR_INVALID;
    sbuf_putc(out, 1);
    sbuf_put_uvarint(out, c->n_voters);
    for (uint32_t i = 0; i < c->n_voters; i++)
        sbuf_put_uvarint(out, c->voters[i]);
    sbuf_put_uvarint(out, c->n_learners);
    for (uint32_t i = 0; i < c->n_learners; i++)
        sbuf_put_uvarint(out, c->learners[i]);
    return sbuf_ok(out) ? 0 : ERR_NOMEM;
}

int raft_conf_decode(struct slice in, struct raft_conf *c)
{
    struct reader rd = reader_of(in);
    uint8_t ver = 0;
    uint64_t nv = 0, nl = 0;
    memset(c, 0, sizeof *c);
    if (!rd_u8(&rd, &ver) || ver != 1 || !rd_uvarint(&rd, &nv) || nv > RAFT_MAX_NODES)
        return ERR_INVALID;
    for (uint64_t i = 0; i < nv; i++) {
        uint64_t id = 0;
        if (!rd_uvarint(&rd, &id) || id == 0 || raft_conf_has(c, id))
            return ERR_INVALID;
        c->voters[c->n_voters++] = id;
    }
    if (!rd_uvarint(&rd, &nl) || nl > RAFT_MAX_NODES - nv)
        return ERR_INVALID;
    for (uint64_t i = 0; i < nl; i++) {
        uint64_t id = 0;
        if (!rd_uvarint(&rd, &id) || id == 0 || raft_conf_has(c, id))
            return ERR_INVALID;
        c->learners[c->n_learners++] = id;
    }
    if (rd.bad || rd_left(&rd) != 0)
        return ERR_INVALID;
    return 0;
}

int raft_bootstrap_entry(const uint64_t *voters, uint32_t n, struct sbuf *out)
{
    struct raft_conf c = {0};
    if (n == 0 || n > RAFT_MAX_NODES)
        return ERR_INVALID;
    for (uint32_t i = 0; i < n; i++) {
        if (voters[i] == 0 || raft_conf_has(&c, voters[i]))
            return ERR_INVALID;
        c.voters[c.n_voters++] = voters[i];
    }
    return raft_conf_encode(&c, out);
}

static uint32_t quorum(const struct raft *r) { return r->conf.n_voters / 2 + 1; }

/* ---------------------------------------------------------------- log access */

static int term_at(const struct raft *r, uint64_t index, uint64_t *term)
{
    if (index == 0) {
        *term = 0;
        return 0;
    }
    if (index > r->last_index || index < r->snap.index)
        return ERR_NOT_FOUND; /* below the base: compacted away, term unknown */
    if (index == r->snap.index) {
        *term = r->snap.term;
        return 0;
    }
    if (index >= r->u_first) {
        *term = r->u[index - r->u_first].term;
        return 0;
    }
    return r->o.storage->term_at(r->o.storage->ctx, index, term);
}

static uint64_t term_or_zero(const struct raft *r, uint64_t index)
{
    uint64_t t = 0;
    return term_at(r, index, &t) == 0 ? t : 0;
}

static void free_unstable_from(struct raft *r, size_t k)
{
    for (size_t i = k; i < r->u_n; i++)
        xfree((void *)r->u[i].data.ptr);
    r->u_n = k;
}

/* The latest configuration with index < before (before > snap.index): unstable entries first
 * (newest wins), then the host log above the base, then the snapshot's. */
static void conf_before(const struct raft *r, uint64_t before, struct raft_conf *c,
                        uint64_t *index)
{
    for (size_t i = r->u_n; i-- > 0;) {
        const struct raft_entry *e = &r->u[i];
        if (e->index < before && e->type == RAFT_ENTRY_CONFIG &&
            raft_conf_decode(e->data, c) == 0) {
            *index = e->index;
            return;
        }
    }
    uint64_t idx = 0;
    struct slice data = {0};
    uint64_t lim = before < r->u_first ? before : r->u_first;
    if (r->o.storage->config_before(r->o.storage->ctx, lim, &idx, &data) == 0 &&
        idx > r->snap.index && idx < lim && raft_conf_decode(data, c) == 0) {
        *index = idx;
        return;
    }
    if (r->snap.index) {
        *c = r->snap.conf;
        *index = r->snap.index;
        return;
    }
    memset(c, 0, sizeof *c);
    *index = 0;
}

static void load_conf_before(struct raft *r, uint64_t before)
{
    conf_before(r, before, &r->conf, &r->conf_index);
}

/* Drop every entry >= x (x > commit). */
static void truncate_log(struct raft *r, uint64_t x)
{
    ASSERT(x > r->commit && x <= r->last_index);
    if (x >= r->u_first) {
        free_unstable_from(r, (size_t)(x - r->u_first));
    } else {
        free_unstable_from(r, 0);
        r->u_first = x;
        r->truncate_from = x;
    }
    r->last_index = x - 1;
    r->last_term = term_or_zero(r, x - 1);
    if (r->persisted > x - 1)
        r->persisted = x - 1;
    if (r->verified > x - 1)
        r->verified = x - 1;
    if (r->acked > x - 1)
        r->acked = x - 1;
    if (r->conf_index >= x)
        load_conf_before(r, x);
}

static void sync_progress(struct raft *r);

/* Appends one entry (data copied). Activates a CONFIG entry (invariant 6). */
static int append_one(struct raft *r, uint64_t term, uint8_t type, struct slice data)
{
    struct raft_conf nc;
    if (type == RAFT_ENTRY_CONFIG && raft_conf_decode(data, &nc) != 0)
        return ERR_INVALID;
    if (r->u_n == r->u_cap) {
        size_t cap = r->u_cap ? r->u_cap * 2 : 64;
        struct raft_entry *nu = xrealloc(r->u, cap * sizeof *nu);
        if (!nu)
            return ERR_NOMEM;
        r->u = nu;
        r->u_cap = cap;
    }
    uint8_t *copy = xmalloc(data.len ? data.len : 1);
    if (!copy)
        return ERR_NOMEM;
    if (data.len)
        memcpy(copy, data.ptr, data.len);
    ASSERT(term >= r->last_term);
    struct raft_entry *e = &r->u[r->u_n++];
    e->term = term;
    e->index = r->last_index + 1;
    e->type = type;
    e->data = slice_of(copy, data.len);
    r->last_index = e->index;
    r->last_term = term;
    if (type == RAFT_ENTRY_CONFIG) {
        r->conf = nc;
        r->conf_index = e->index;
        if (r->role == RAFT_LEADER)
            sync_progress(r);
    }
    return 0;
}

/* ---------------------------------------------------------------- outbox */

static struct raft_msg *push_into(struct raft *r, struct raft_msg **arr, size_t *n, size_t *cap,
                                  uint8_t type, uint64_t to)
{
    if (*n == *cap) {
        size_t ncap = *cap ? *cap * 2 : 32;
        struct raft_msg *nm = xrealloc(*arr, ncap * sizeof *nm);
        if (!nm)
            return NULL;
        *arr = nm;
        *cap = ncap;
    }
    struct raft_msg *m = &(*arr)[(*n)++];
    memset(m, 0, sizeof *m);
    m->type = type;
    m->from = r->id;
    m->to = to;
    m->term = r->term;
    return m;
}

static struct raft_msg *push_msg(struct raft *r, uint8_t type, uint64_t to)
{
    return push_into(r, &r->msgs, &r->n_msgs, &r->msgs_cap, type, to);
}

static void push_read(struct raft *r, uint64_t ctx, uint64_t index)
{
    if (r->n_out_reads == r->out_reads_cap) {
        size_t cap = r->out_reads_cap ? r->out_reads_cap * 2 : 16;
        struct raft_read *nr = xrealloc(r->out_reads, cap * sizeof *nr);
        if (!nr)
            return; /* the host's read times out */
        r->out_reads = nr;
        r->out_reads_cap = cap;
    }
    r->out_reads[r->n_out_reads++] = (struct raft_read){ctx, index};
}

/* ---------------------------------------------------------------- progress */

static struct progress *find_pr(struct raft *r, uint64_t id)
{
    for (uint32_t i = 0; i < r->n_prs; i++)
        if (r->prs[i].id == id)
            return &r->prs[i];
    return NULL;
}

static void pr_reset(struct raft *r, struct progress *p, uint64_t id)
{
    memset(p, 0, sizeof *p);
    p->id = id;
    p->next = r->last_index + 1;
    p->active = true;
    p->ack_tick = r->now;
}

static void pr_probe(struct progress *p)
{
    p->replicate = false;
    p->probe_sent = false;
    p->n_inflight = 0;
    p->inflight_head = 0;
}

/* Rebuild the progress table for the members of conf (except self), keeping known ones. */
static void sync_progress(struct raft *r)
{
    struct progress old[RAFT_MAX_NODES];
    uint32_t n_old = r->n_prs;
    memcpy(old, r->prs, sizeof(struct progress) * n_old);
    r->n_prs = 0;
    uint64_t ids[2 * RAFT_MAX_NODES];
    uint32_t n = 0;
    for (uint32_t i = 0; i < r->conf.n_voters; i++)
        ids[n++] = r->conf.voters[i];
    for (uint32_t i = 0; i < r->conf.n_learners; i++)
        ids[n++] = r->conf.learners[i];
    for (uint32_t i = 0; i < n; i++) {
        if (ids[i] == r->id)
            continue;
        struct progress *p = &r->prs[r->n_prs++];
        bool found = false;
        for (uint32_t j = 0; j < n_old; j++)
            if (old[j].id == ids[i]) {
                *p = old[j];
                found = true;
            }
        if (!found)
            pr_reset(r, p, ids[i]);
    }
}

/* ---------------------------------------------------------------- role changes */

static void reset_timeout(struct raft *r)
{
    r->election_elapsed = 0;
    r->timeout = r->o.election_ticks + (uint32_t)(r->o.rand(r->o.rand_ctx) % r->o.election_ticks);
}

static void become_follower(struct raft *r, uint64_t term, uint64_t leader)
{
    ASSERT(term >= r->term);
    if (term > r->term) {
        r->term = term;
        r->vote = 0;
        r->verified = 0;
        r->acked = 0;
        r->ack_owed = false;
    }
    r->role = RAFT_FOLLOWER;
    r->leader = leader;
    r->transfer_to = 0;
    r->n_reads = 0; /* pending reads are never answered; the host times them out */
    r->reads_head = 0;
    reset_timeout(r);
}

static void send_vote_requests(struct raft *r, bool pre, bool force)
{
    for (uint32_t i = 0; i < r->conf.n_voters; i++) {
        uint64_t to = r->conf.voters[i];
        if (to == r->id)
            continue;
        struct raft_msg *m = push_msg(r, pre ? RAFT_MSG_PREVOTE : RAFT_MSG_VOTE, to);
        if (!m)
            continue;
        m->term = pre ? r->term + 1 : r->term;
        m->index = r->last_index;
        m->log_term = r->last_term;
        m->force = force;
    }
}

static void become_leader(struct raft *r);
static void campaign(struct raft *r, bool pre, bool force);

/* Records a vote; returns +1 won, -1 lost, 0 undecided. */
static int tally(struct raft *r, uint64_t from, bool granted)
{
    if (!raft_conf_is_voter(&r->conf, from))
        return 0;
    bool seen = false;
    for (uint32_t i = 0; i < r->n_votes; i++)
        if (r->votes[i].id == from)
            seen = true;
    if (!seen && r->n_votes < RAFT_MAX_NODES)
        r->votes[r->n_votes++] = (struct vote_rec){from, granted};
    uint32_t yes = 0, no = 0;
    for (uint32_t i = 0; i < r->n_votes; i++) {
        if (r->votes[i].granted)
            yes++;
        else
            no++;
    }
    if (yes >= quorum(r))
        return 1;
    if (no >= quorum(r))
        return -1;
    return 0;
}

static void campaign(struct raft *r, bool pre, bool force)
{
    if (!raft_conf_is_voter(&r->conf, r->id))
        return;
    r->n_votes = 0;
    r->leader = 0;
    r->forced_campaign = force;
    reset_timeout(r);
    if (pre) {
        r->role = RAFT_PRE_CANDIDATE;
    } else {
        r->term++;
        r->vote = r->id;
        r->verified = r->acked = 0;
        r->ack_owed = false;
        r->role = RAFT_CANDIDATE;
    }
    if (tally(r, r->id, true) > 0) {
        if (pre)
            campaign(r, false, force);
        else
            become_leader(r);
        return;
    }
    send_vote_requests(r, pre, force);
}

static void become_leader(struct raft *r)
{
    r->role = RAFT_LEADER;
    r->leader = r->id;
    r->transfer_to = 0;
    r->heartbeat_elapsed = 0;
    r->election_elapsed = 0;
    r->n_reads = r->reads_head = 0;
    r->n_prs = 0;
    sync_progress(r);
    for (uint32_t i = 0; i < r->n_prs; i++)
        pr_reset(r, &r->prs[i], r->prs[i].id);
    /* The no-op lets the leader commit (and so learn the commit point of) its predecessors'
     * entries: only entries of the leader's own term are committed by counting. */
    if (append_one(r, r->term, RAFT_ENTRY_NOOP, slice_of(NULL, 0)) != 0) {
        become_follower(r, r->term, 0); /* out of memory: let someone else lead */
        return;
    }
    r->bcast = true;
}

/* ---------------------------------------------------------------- leader: replication */

static void send_heartbeat(struct raft *r, struct progress *p)
{
    struct raft_msg *m = push_msg(r, RAFT_MSG_HEARTBEAT, p->id);
    if (!m)
        return;
    /* Only what the follower provably holds: its log up to match equals ours. */
    m->commit = p->match < r->commit ? p->match : r->commit;
    m->ctx = r->read_seq;
    if (m->commit > p->sent_commit)
        p->sent_commit = m->commit;
}

/* One AppendEntries from p->next; returns false if nothing could be sent. */
static bool send_append(struct raft *r, struct progress *p)
{
    uint64_t prev = p->next - 1, prev_term = 0;
    if (term_at(r, prev, &prev_term) != 0)
        return false;
    size_t max_n = RAFT_MSG_MAX_ENTRIES, n = 0, bytes = 0;
    uint64_t avail = r->last_index >= p->next ? r->last_index - p->next + 1 : 0;
    if (avail < max_n)
        max_n = (size_t)avail;
    struct raft_entry *ents = NULL;
    if (max_n) {
        ents = arena_alloc(&r->arena, max_n * sizeof *ents);
        if (!ents)
            return false;
    }
    /* Host-log part, then unstable part; every byte is copied into the arena. */
    while (n < max_n && bytes < r->o.max_msg_bytes) {
        uint64_t idx = p->next + n;
        size_t got = 0;
        if (idx >= r->u_first) {
            ents[n] = r->u[idx - r->u_first];
            got = 1;
        } else {
            size_t lim = max_n - n;
            uint64_t below = r->u_first - idx;
            if (below < lim)
                lim = (size_t)below;
            if (r->o.storage->entries(r->o.storage->ctx, idx, r->o.max_msg_bytes - bytes,
                                      &ents[n], lim, &got) != 0 || got == 0)
                break;
        }
        for (size_t k = n; k < n + got; k++) {
            uint8_t *c = arena_alloc(&r->arena, ents[k].data.len ? ents[k].data.len : 1);
            if (!c)
                return false;
            if (ents[k].data.len)
                memcpy(c, ents[k].data.ptr, ents[k].data.len);
            ents[k].data = slice_of(c, ents[k].data.len);
            ents[k].index = idx + (k - n);
            bytes += ents[k].data.len + 16;
        }
        n += got;
    }
    struct raft_msg *m = push_msg(r, RAFT_MSG_APPEND, p->id);
    if (!m)
        return false;
    m->index = prev;
    m->log_term = prev_term;
    m->commit = r->commit;
    m->entries = ents;
    m->n_entries = n;
    if (p->replicate) {
        if (n) {
            p->next += n;
            p->inflight[(p->inflight_head + p->n_inflight) % RAFT_MAX_INFLIGHT] = p->next - 1;
            p->n_inflight++;
        }
    } else {
        p->probe_sent = true;
    }
    return true;
}

/* The entries p needs are compacted away: hand the host a snapshot for it (invariant 8). */
static void send_snapshot(struct raft *r, struct progress *p)
{
    struct sbuf sb;
    sbuf_init(&sb, 0);
    int rc = raft_conf_encode(&r->snap.conf, &sb);
    struct raft_entry *e = arena_alloc(&r->arena, sizeof *e);
    uint8_t *data = arena_alloc(&r->arena, sb.len ? sb.len : 1);
    struct raft_msg *m = NULL;
    if (rc == 0 && e && data)
        m = push_into(r, &r->snaps, &r->n_snaps, &r->snaps_cap, RAFT_MSG_SNAPSHOT, p->id);
    if (m) {
        memcpy(data, sb.data, sb.len);
        *e = (struct raft_entry){r->snap.term, r->snap.index, RAFT_ENTRY_CONFIG,
                                 slice_of(data, sb.len)};
        m->index = r->snap.index;
        m->log_term = r->snap.term;
        m->commit = r->commit;
        m->entries = e;
        m->n_entries = 1;
        pr_probe(p);
        p->snapshot = p->streaming = true;
        p->snap_index = r->snap.index;
    }
    sbuf_free(&sb); /* on failure nothing changed: retried on the next broadcast */
}

static void replicate_to(struct raft *r, struct progress *p)
{
    if (!p->snapshot && !p->streaming && p->next <= r->snap.index &&
        (p->replicate || !p->probe_sent))
        send_snapshot(r, p);
    if (p->snapshot) {
        /* Nothing but heartbeats until the snapshot is done or acknowledged. */
    } else if (p->replicate) {
        while (p->next <= r->last_index && p->n_inflight < r->o.max_inflight)
            if (!send_append(r, p))
                break;
    } else if (!p->probe_sent) {
        send_append(r, p);
    }
    uint64_t c = p->match < r->commit ? p->match : r->commit;
    if (c > p->sent_commit)
        send_heartbeat(r, p);
}

static void bcast_append(struct raft *r)
{
    for (uint32_t i = 0; i < r->n_prs; i++)
        replicate_to(r, &r->prs[i]);
}

static void maybe_step_down_removed(struct raft *r)
{
    if (r->role == RAFT_LEADER && r->commit >= r->conf_index &&
        !raft_conf_is_voter(&r->conf, r->id))
        become_follower(r, r->term, 0);
}

static void maybe_commit(struct raft *r)
{
    uint64_t m[RAFT_MAX_NODES];
    uint32_t n = 0;
    for (uint32_t i = 0; i < r->conf.n_voters; i++) {
        uint64_t id = r->conf.voters[i];
        if (id == r->id) {
            m[n++] = r->persisted;
        } else {
            struct progress *p = find_pr(r, id);
            m[n++] = p ? p->match : 0;
        }
    }
    if (n == 0)
        return;
    for (uint32_t i = 1; i < n; i++) /* insertion sort, descending */
        for (uint32_t j = i; j > 0 && m[j] > m[j - 1]; j--) {
            uint64_t t = m[j];
            m[j] = m[j - 1];
            m[j - 1] = t;
        }
    uint64_t q = m[quorum(r) - 1];
    if (q > r->commit && term_or_zero(r, q) == r->term) {
        r->commit = q;
        r->bcast = true;
        maybe_step_down_removed(r);
    }
}

static void pr_free_inflight(struct progress *p, uint64_t upto)
{
    while (p->n_inflight && p->inflight[p->inflight_head] <= upto) {
        p->inflight_head = (p->inflight_head + 1) % RAFT_MAX_INFLIGHT;
        p->n_inflight--;
    }
}

static void maybe_send_timeout_now(struct raft *r, struct progress *p)
{
    if (r->transfer_to == p->id && p->match == r->last_index) {
        struct raft_msg *m = push_msg(r, RAFT_MSG_TIMEOUT_NOW, p->id);
        (void)m;
    }
}

static void handle_append_resp(struct raft *r, const struct raft_msg *m)
{
    struct progress *p = find_pr(r, m->from);
    if (!p)
        return;
    p->active = true;
    if (m->reject) {
        if (m->index < p->match || p->snapshot)
            return; /* stale, or answers an append sent before the snapshot */
        uint64_t next = m->hint && m->hint < m->index ? m->hint : m->index;
        if (next < p->match + 1)
            next = p->match + 1;
        if (next > r->last_index + 1)
            next = r->last_index + 1;
        p->next = next;
        pr_probe(p);
        r->bcast = true;
        return;
    }
    if (m->index > r->last_index)
        return; /* nonsense: acknowledges what we never had */
    p->ack_tick = r->now;
    if (m->index > p->match) {
        p->match = m->index;
        if (p->next <= p->match)
            p->next = p->match + 1;
        maybe_commit(r);
    }
    pr_free_inflight(p, m->index);
    if (p->snapshot) {
        if (m->index < p->snap_index)
            return; /* still waiting for the snapshot */
        p->snapshot = false; /* installed (or already held): resume replicating */
    }
    if (!p->replicate) {
        p->replicate = true;
        p->n_inflight = p->inflight_head = 0;
        p->next = p->match + 1;
    }
    maybe_send_timeout_now(r, p);
    r->bcast = true;
}

static void check_reads(struct raft *r)
{
    while (r->n_reads) {
        struct pending_read *pr = &r->reads[r->reads_head];
        uint32_t acks = 0;
        for (uint32_t i = 0; i < r->conf.n_voters; i++) {
            uint64_t id = r->conf.voters[i];
            struct progress *p = id == r->id ? NULL : find_pr(r, id);
            if (id == r->id || (p && p->read_ack >= pr->seq))
                acks++;
        }
        if (acks < quorum(r))
            return;
        push_read(r, pr->ctx, pr->index);
        r->reads_head = (r->reads_head + 1) % RAFT_MAX_PENDING_READS;
        r->n_reads--;
    }
}

/* ---------------------------------------------------------------- follower */

static void send_ack(struct raft *r)
{
    uint64_t a = r->verified < r->persisted ? r->verified : r->persisted;
    if (PLANTED(RAFT_PLANT_ACK_BEFORE_FSYNC))
        a = r->verified;
    struct raft_msg *m = push_msg(r, RAFT_MSG_APPEND_RESP, r->leader);
    if (!m)
        return;
    m->index = a;
    if (a > r->acked)
        r->acked = a;
    /* Entries verified but not yet fsynced are still owed their ack (raft_persisted sends it):
     * clearing it here left the tail of every burst unacknowledged until the next append. */
    r->ack_owed = a < r->verified;
}

static void maybe_ack(struct raft *r)
{
    if (r->role != RAFT_FOLLOWER || r->leader == 0 || !r->ack_owed)
        return;
    uint64_t a = r->verified < r->persisted ? r->verified : r->persisted;
    if (PLANTED(RAFT_PLANT_ACK_BEFORE_FSYNC))
        a = r->verified;
    if (a > r->acked)
        send_ack(r);
}

static void handle_append(struct raft *r, const struct raft_msg *m)
{
    uint64_t prev_term = 0;
    /* A prev below our base is inside our snapshot: committed, so equal to the leader's. */
    bool ok = m->index == 0 || m->index < r->snap.index ||
              (term_at(r, m->index, &prev_term) == 0 && prev_term == m->log_term);
    if (!ok) {
        struct raft_msg *resp = push_msg(r, RAFT_MSG_APPEND_RESP, m->from);
        if (!resp)
            return;
        resp->reject = true;
        resp->index = m->index;
        if (m->index > r->last_index) {
            resp->hint = r->last_index + 1;
        } else {
            /* Skip back over our entries of the conflicting term (bounded scan). */
            uint64_t i = m->index;
            for (int k = 0; k < 4096 && i - 1 > r->commit && term_or_zero(r, i - 1) == prev_term;
                 k++)
                i--;
            resp->hint = i;
        }
        return;
    }
    /* Find the first entry we do not already hold; a conflict below commit is a forged or
     * corrupt message (invariant 2), not something to obey. */
    size_t k = 0;
    for (; k < m->n_entries; k++) {
        const struct raft_entry *e = &m->entries[k];
        if (e->index > r->last_index)
            break;
        if (e->index <= r->snap.index)
            continue; /* covered by our snapshot */
        if (term_or_zero(r, e->index) != e->term) {
            if (e->index <= r->commit)
                return;
            break;
        }
    }
    for (size_t j = k; j < m->n_entries; j++) {
        struct raft_conf c;
        if (m->entries[j].type == RAFT_ENTRY_CONFIG && raft_conf_decode(m->entries[j].data, &c))
            return; /* reject the whole message before changing anything */
    }
    if (k < m->n_entries && m->entries[k].index <= r->last_index)
        truncate_log(r, m->entries[k].index);
    for (; k < m->n_entries; k++) {
        const struct raft_entry *e = &m->entries[k];
        if (append_one(r, e->term, e->type, e->data) != 0)
            break; /* out of memory: keep what fit; the leader resends the rest */
    }
    uint64_t last_new = m->index + m->n_entries;
    if (last_new > r->last_index)
        last_new = r->last_index;
    if (last_new > r->verified)
        r->verified = last_new;
    uint64_t c = m->commit < last_new ? m->commit : last_new;
    if (c > r->commit)
        r->commit = c;
    r->ack_owed = true;
    uint64_t a = r->verified < r->persisted ? r->verified : r->persisted;
    if (PLANTED(RAFT_PLANT_ACK_BEFORE_FSYNC))
        a = r->verified;
    /* Answer now if everything this message asked for is durable (a duplicate, a probe, an
     * empty append); otherwise raft_persisted answers once the fsync covers it. */
    if (a >= m->index + m->n_entries || a > r->acked)
        send_ack(r);
}

static void handle_heartbeat(struct raft *r, const struct raft_msg *m)
{
    uint64_t c = m->commit < r->last_index ? m->commit : r->last_index;
    if (c > r->commit)
        r->commit = c;
    struct raft_msg *resp = push_msg(r, RAFT_MSG_HEARTBEAT_RESP, m->from);
    if (resp)
        resp->ctx = m->ctx;
}

/* RAFT_MSG_SNAPSHOT from the leader of this term (the host staged its data before stepping it).
 * The snapshot is a committed prefix (invariant 9), so whatever it covers may become our
 * commit index. */
static void handle_snapshot(struct raft *r, const struct raft_msg *m)
{
    struct raft_conf conf;
    if (raft_conf_decode(m->entries[0].data, &conf) != 0)
        return; /* validate_msg already refused it; never trust a second reading less */
    if (m->index <= r->commit) {
        /* Nothing to install: report the durable part of our committed prefix so the leader
         * leaves its snapshot state. Committed entries are the leader's too (log matching). */
        uint64_t a = r->commit < r->persisted ? r->commit : r->persisted;
        struct raft_msg *resp = push_msg(r, RAFT_MSG_APPEND_RESP, m->from);
        if (resp)
            resp->index = a;
        if (resp && a > r->acked)
            r->acked = a;
        return;
    }
    uint64_t t = 0;
    if (term_at(r, m->index, &t) == 0 &&
        (t == m->log_term || PLANTED(RAFT_PLANT_SNAPSHOT_SKIP_TERM_CHECK))) {
        /* We hold that entry: our prefix up to it is the committed one. */
        if (m->index > r->verified)
            r->verified = m->index;
        r->commit = m->index;
        r->ack_owed = true;
        send_ack(r); /* covers only what is persisted; raft_persisted acks the rest */
        return;
    }
    /* Install: the whole log goes, the snapshot becomes its base. */
    free_unstable_from(r, 0);
    r->u_first = m->index + 1;
    r->truncate_from = 0;
    r->last_index = m->index;
    r->last_term = m->log_term;
    r->commit = r->applied = r->persisted = r->verified = m->index;
    r->snap = (struct raft_snapshot_meta){m->index, m->log_term, conf};
    r->conf = conf;
    r->conf_index = m->index;
    r->install = true;
    r->install_meta = r->snap;
    struct raft_msg *resp = push_msg(r, RAFT_MSG_APPEND_RESP, m->from);
    if (resp)
        resp->index = m->index;
    r->acked = m->index;
    r->ack_owed = false;
}

static void handle_vote(struct raft *r, const struct raft_msg *m)
{
    bool pre = m->type == RAFT_MSG_PREVOTE;
    bool can_vote = r->vote == m->from || (r->vote == 0 && r->leader == 0) ||
                    (pre && m->term > r->term);
    bool up_to_date = m->log_term > r->last_term ||
                      (m->log_term == r->last_term && m->index >= r->last_index);
    struct raft_msg *resp = push_msg(r, pre ? RAFT_MSG_PREVOTE_RESP : RAFT_MSG_VOTE_RESP, m->from);
    if (!resp)
        return;
    if (can_vote && up_to_date) {
        resp->term = m->term;
        if (!pre) {
            r->vote = m->from;
            reset_timeout(r);
        }
    } else {
        resp->reject = true;
    }
}

/* ---------------------------------------------------------------- inputs */

static bool in_lease(const struct raft *r)
{
    /* A leader's election_elapsed restarts every election timeout, so a leader is always in
     * its own lease; check-quorum is what ends a leader that lost its majority. */
    return r->o.check_quorum && r->leader != 0 && r->election_elapsed < r->o.election_ticks;
}

static int validate_msg(const struct raft *r, const struct raft_msg *m)
{
    if (m->type == 0 || m->type >= RAFT_MSG__MAX || m->to != r->id || m->from == 0 ||
        m->from == r->id || m->term == 0)
        return ERR_INVALID;
    if (m->type == RAFT_MSG_SNAPSHOT) {
        struct raft_conf c;
        if (m->n_entries != 1 || !m->entries || m->index == 0 || m->log_term == 0 ||
            m->log_term > m->term || m->entries[0].type != RAFT_ENTRY_CONFIG ||
            m->entries[0].index != m->index || m->entries[0].data.len > RAFT_ENTRY_MAX_BYTES ||
            raft_conf_decode(m->entries[0].data, &c) != 0)
            return ERR_INVALID;
        return 0;
    }
    if (m->n_entries > RAFT_MSG_MAX_ENTRIES || (m->n_entries && m->type != RAFT_MSG_APPEND))
        return ERR_INVALID;
    if (m->n_entries && (!m->entries || m->index > UINT64_MAX - m->n_entries))
        return ERR_INVALID;
    uint64_t t = m->log_term;
    for (size_t i = 0; i < m->n_entries; i++) {
        const struct raft_entry *e = &m->entries[i];
        if (e->index != m->index + 1 + i || e->term < t || e->term > m->term ||
            !raft_entry_type_valid(e->type) ||
            e->data.len > RAFT_ENTRY_MAX_BYTES)
            return ERR_INVALID;
        t = e->term;
    }
    if (m->type == RAFT_MSG_APPEND && m->log_term > m->term)
        return ERR_INVALID;
    return 0;
}

int raft_step(struct raft *r, const struct raft_msg *m)
{
    ASSERT(!r->in_ready);
    int rc = validate_msg(r, m);
    if (rc)
        return rc;
    bool vote_req = m->type == RAFT_MSG_VOTE || m->type == RAFT_MSG_PREVOTE;
    if (m->term > r->term) {
        if (vote_req && !m->force && in_lease(r))
            return 0; /* a leader is alive: do not let a partitioned node disrupt it */
        if (m->type == RAFT_MSG_PREVOTE || (m->type == RAFT_MSG_PREVOTE_RESP && !m->reject)) {
            /* Pre-vote never changes the receiver's term. */
        } else {
            bool from_leader = m->type == RAFT_MSG_APPEND || m->type == RAFT_MSG_HEARTBEAT ||
                               m->type == RAFT_MSG_SNAPSHOT;
            uint32_t elapsed = r->election_elapsed;
            bool was_follower = r->role == RAFT_FOLLOWER;
            become_follower(r, m->term, from_leader ? m->from : 0);
            /* A vote request only raises the term; it must not restart our election timer
             * (only a granted vote or a live leader does), or a candidate that cannot win
             * would keep the one node that can from ever timing out. */
            if (vote_req && was_follower)
                r->election_elapsed = elapsed;
        }
    } else if (m->term < r->term) {
        /* Tell a stale leader or candidate about the newer term so it steps down. */
        uint8_t t = 0;
        if (m->type == RAFT_MSG_APPEND || m->type == RAFT_MSG_HEARTBEAT ||
            m->type == RAFT_MSG_SNAPSHOT)
            t = RAFT_MSG_APPEND_RESP;
        else if (vote_req)
            t = (uint8_t)(m->type + 1);
        if (t) {
            struct raft_msg *resp = push_msg(r, t, m->from);
            if (resp)
                resp->reject = true;
        }
        return 0;
    }
    switch (m->type) {
    case RAFT_MSG_PREVOTE:
    case RAFT_MSG_VOTE:
        if (m->type == RAFT_MSG_PREVOTE && m->term <= r->term) {
            struct raft_msg *resp = push_msg(r, RAFT_MSG_PREVOTE_RESP, m->from);
            if (resp)
                resp->reject = true;
            break;
        }
        handle_vote(r, m);
        break;
    case RAFT_MSG_PREVOTE_RESP:
        if (r->role == RAFT_PRE_CANDIDATE) {
            int res = tally(r, m->from, !m->reject);
            if (res > 0)
                campaign(r, false, false);
            else if (res < 0)
                become_follower(r, r->term, 0);
        }
        break;
    case RAFT_MSG_VOTE_RESP:
        if (r->role == RAFT_CANDIDATE) {
            int res = tally(r, m->from, !m->reject);
            if (res > 0)
                become_leader(r);
            else if (res < 0)
                become_follower(r, r->term, 0);
        }
        break;
    case RAFT_MSG_APPEND:
    case RAFT_MSG_HEARTBEAT:
    case RAFT_MSG_SNAPSHOT:
        if (r->role == RAFT_LEADER)
            return ERR_INVALID; /* two leaders in one term: a forged message */
        if (r->role != RAFT_FOLLOWER || r->leader != m->from)
            become_follower(r, r->term, m->from);
        r->election_elapsed = 0;
        if (m->type == RAFT_MSG_APPEND)
            handle_append(r, m);
        else if (m->type == RAFT_MSG_SNAPSHOT)
            handle_snapshot(r, m);
        else
            handle_heartbeat(r, m);
        break;
    case RAFT_MSG_APPEND_RESP:
        if (r->role == RAFT_LEADER)
            handle_append_resp(r, m);
        break;
    case RAFT_MSG_HEARTBEAT_RESP:
        if (r->role == RAFT_LEADER) {
            struct progress *p = find_pr(r, m->from);
            if (!p)
                break;
            p->active = true;
            if (m->ctx > p->read_ack && m->ctx <= r->read_seq)
                p->read_ack = m->ctx;
            if (!p->replicate && !p->snapshot && p->match < r->last_index) {
                p->probe_sent = false;
                r->bcast = true;
            }
            check_reads(r);
        }
        break;
    case RAFT_MSG_TIMEOUT_NOW:
        if (r->role != RAFT_LEADER)
            campaign(r, false, true);
        break;
    default:
        return ERR_INVALID;
    }
    return 0;
}

void raft_tick(struct raft *r)
{
    ASSERT(!r->in_ready);
    r->now++;
    r->election_elapsed++;
    if (r->role != RAFT_LEADER) {
        if (r->election_elapsed >= r->timeout) {
            if (raft_conf_is_voter(&r->conf, r->id))
                campaign(r, r->o.pre_vote, false);
            else
                reset_timeout(r);
        }
        return;
    }
    if (r->election_elapsed >= r->o.election_ticks) {
        r->election_elapsed = 0;
        r->transfer_to = 0; /* a transfer that did not finish within a timeout is abandoned */
        if (r->o.check_quorum) {
            uint32_t active = raft_conf_is_voter(&r->conf, r->id) ? 1 : 0;
            for (uint32_t i = 0; i < r->n_prs; i++)
                if (raft_conf_is_voter(&r->conf, r->prs[i].id) && r->prs[i].active)
                    active++;
            if (active < quorum(r)) {
                become_follower(r, r->term, 0);
                return;
            }
            for (uint32_t i = 0; i < r->n_prs; i++)
                r->prs[i].active = false;
        }
    }
    if (++r->heartbeat_elapsed >= r->o.heartbeat_ticks) {
        r->heartbeat_elapsed = 0;
        for (uint32_t i = 0; i < r->n_prs; i++) {
            struct progress *p = &r->prs[i];
            /* Appends lost in flight: fall back to probing from the acknowledged point. */
            if (p->replicate && p->n_inflight && r->now - p->ack_tick > r->o.election_ticks) {
                p->next = p->match + 1;
                pr_probe(p);
            }
            if (!p->replicate)
                p->probe_sent = false;
            send_heartbeat(r, p);
        }
        r->bcast = true;
    }
}

int raft_propose(struct raft *r, uint8_t type, struct slice payload, uint64_t *index,
                 uint64_t *leader)
{
    ASSERT(!r->in_ready);
    if (leader)
        *leader = r->leader;
    if (r->role != RAFT_LEADER)
        return RAFT_ERR_NOT_LEADER;
    if (r->transfer_to)
        return ERR_UNAVAILABLE;
    if (type != RAFT_ENTRY_NORMAL && type != RAFT_ENTRY_NOOP && type < RAFT_ENTRY_USER)
        return ERR_INVALID;
    if (payload.len > RAFT_ENTRY_MAX_BYTES)
        return ERR_TOO_LARGE;
    int rc = append_one(r, r->term, type, payload);
    if (rc)
        return rc;
    if (index)
        *index = r->last_index;
    r->bcast = true;
    return 0;
}

int raft_propose_conf(struct raft *r, enum raft_conf_op op, uint64_t node, uint64_t *index)
{
    ASSERT(!r->in_ready);
    if (r->role != RAFT_LEADER)
        return RAFT_ERR_NOT_LEADER;
    if (r->transfer_to)
        return ERR_UNAVAILABLE;
    if (r->conf_index > r->commit || term_or_zero(r, r->commit) != r->term)
        return ERR_AGAIN;
    struct raft_conf c = r->conf;
    if (node == 0)
        return ERR_INVALID;
    switch (op) {
    case RAFT_CONF_ADD_LEARNER:
        if (raft_conf_has(&c, node) || c.n_voters + c.n_learners >= RAFT_MAX_NODES)
            return ERR_INVALID;
        c.learners[c.n_learners++] = node;
        break;
    case RAFT_CONF_PROMOTE:
        if (!conf_is_learner(&c, node))
            return ERR_INVALID;
        for (uint32_t i = 0; i < c.n_learners; i++)
            if (c.learners[i] == node)
                c.learners[i] = c.learners[--c.n_learners];
        c.voters[c.n_voters++] = node;
        break;
    case RAFT_CONF_REMOVE:
        if (!raft_conf_has(&c, node))
            return ERR_INVALID;
        if (raft_conf_is_voter(&c, node) && c.n_voters == 1)
            return ERR_INVALID;
        for (uint32_t i = 0; i < c.n_voters; i++)
            if (c.voters[i] == node)
                c.voters[i] = c.voters[--c.n_voters];
        for (uint32_t i = 0; i < c.n_learners; i++)
            if (c.learners[i] == node)
                c.learners[i] = c.learners[--c.n_learners];
        break;
    default:
        return ERR_INVALID;
    }
    struct sbuf sb;
    sbuf_init(&sb, 0);
    int rc = raft_conf_encode(&c, &sb);
    if (rc == 0)
        rc = append_one(r, r->term, RAFT_ENTRY_CONFIG, slice_of(sb.data, sb.len));
    sbuf_free(&sb);
    if (rc)
        return rc;
    if (index)
        *index = r->last_index;
    r->bcast = true;
    maybe_commit(r); /* a change can shrink the quorum to what is already persisted */
    return 0;
}

void raft_persisted(struct raft *r, uint64_t last_index, uint64_t last_term)
{
    ASSERT(!r->in_ready);
    if (last_index <= r->persisted || last_index >= r->u_first)
        return; /* old news, or not yet handed to the host */
    if (term_or_zero(r, last_index) != last_term)
        return; /* the fsync covered entries since truncated */
    r->persisted = last_index;
    if (r->role == RAFT_LEADER)
        maybe_commit(r);
    else
        maybe_ack(r);
}

int raft_transfer_leadership(struct raft *r, uint64_t to)
{
    ASSERT(!r->in_ready);
    if (r->role != RAFT_LEADER)
        return RAFT_ERR_NOT_LEADER;
    struct progress *p = find_pr(r, to);
    if (!p || !raft_conf_is_voter(&r->conf, to))
        return ERR_INVALID;
    r->transfer_to = to;
    r->election_elapsed = 0;
    maybe_send_timeout_now(r, p);
    r->bcast = true;
    return 0;
}

int raft_read_index(struct raft *r, uint64_t ctx)
{
    ASSERT(!r->in_ready);
    if (r->role != RAFT_LEADER)
        return RAFT_ERR_NOT_LEADER;
    if (term_or_zero(r, r->commit) != r->term)
        return ERR_AGAIN;
    if (quorum(r) <= 1 && raft_conf_is_voter(&r->conf, r->id)) {
        push_read(r, ctx, r->commit);
        return 0;
    }
    if (r->n_reads >= RAFT_MAX_PENDING_READS)
        return ERR_OVERLOADED;
    uint32_t slot = (r->reads_head + r->n_reads) % RAFT_MAX_PENDING_READS;
    r->reads[slot] = (struct pending_read){ctx, r->commit, ++r->read_seq};
    r->n_reads++;
    for (uint32_t i = 0; i < r->n_prs; i++)
        send_heartbeat(r, &r->prs[i]);
    return 0;
}

void raft_compact(struct raft *r, const struct raft_snapshot_meta *m)
{
    ASSERT(!r->in_ready);
    if (m->index <= r->snap.index || m->index > r->applied || m->term == 0 ||
        !conf_sane(&m->conf))
        return; /* older than the base we have, or not applied yet */
    /* applied <= persisted < u_first: nothing unstable is below the new base (invariant 7). */
    r->snap = *m;
}

void raft_snapshot_done(struct raft *r, uint64_t to, bool ok)
{
    ASSERT(!r->in_ready);
    struct progress *p = r->role == RAFT_LEADER ? find_pr(r, to) : NULL;
    if (!p || !p->streaming)
        return;
    p->streaming = false;
    if (!p->snapshot) {
        r->bcast = true; /* already acknowledged; a newer snapshot may be due now */
        return;
    }
    p->snapshot = false;
    pr_probe(p);
    if (ok) {
        /* The follower holds (or is about to hold) the snapshot: probe right after it. Its
         * APPEND_RESP, to the snapshot message or to this probe, resumes replication. */
        if (p->next < p->snap_index + 1)
            p->next = p->snap_index + 1;
        r->bcast = true;
    } else {
        /* Try again (a new snapshot if still needed) at the next heartbeat, not at once. */
        p->next = p->match + 1;
        p->probe_sent = true;
    }
}

void raft_peer_reset(struct raft *r, uint64_t id)
{
    ASSERT(!r->in_ready);
    struct progress *p = r->role == RAFT_LEADER ? find_pr(r, id) : NULL;
    if (!p)
        return;
    p->match = 0;
    p->sent_commit = 0;
    if (!p->snapshot) { /* an outstanding snapshot ends through raft_snapshot_done */
        p->next = r->last_index + 1;
        pr_probe(p);
    }
    r->bcast = true;
}

/* ---------------------------------------------------------------- output */

bool raft_ready(struct raft *r, struct raft_ready *rd)
{
    ASSERT(!r->in_ready);
    if (r->bcast && r->role == RAFT_LEADER)
        bcast_append(r);
    r->bcast = false;
    memset(rd, 0, sizeof *rd);
    if (r->term != r->hs_last.term || r->vote != r->hs_last.vote) {
        rd->hs_changed = true;
        rd->hs = (struct raft_hardstate){r->term, r->vote};
        if (PLANTED(RAFT_PLANT_VOTE_NOT_PERSISTED) && r->vote != r->id)
            rd->hs.vote = 0;
    }
    rd->truncate_from = r->truncate_from;
    rd->entries = r->u;
    rd->n_entries = r->u_n;
    rd->msgs = r->msgs;
    rd->n_msgs = r->n_msgs;
    uint64_t to = r->commit < r->persisted ? r->commit : r->persisted;
    if (PLANTED(RAFT_PLANT_APPLY_BEFORE_COMMIT) && r->u_first - 1 > to && r->truncate_from == 0)
        to = r->u_first - 1;
    if (to > r->applied) {
        rd->apply_from = r->applied + 1;
        rd->apply_to = to;
    }
    rd->reads = r->out_reads;
    rd->n_reads = r->n_out_reads;
    rd->snap_send = r->snaps;
    rd->n_snap_send = r->n_snaps;
    rd->install = r->install;
    if (r->install)
        rd->snap = r->install_meta;
    bool any = rd->hs_changed || rd->truncate_from || rd->n_entries || rd->n_msgs ||
               rd->apply_to || rd->n_reads || rd->n_snap_send || rd->install;
    r->in_ready = any;
    return any;
}

void raft_advance(struct raft *r, const struct raft_ready *rd)
{
    ASSERT(r->in_ready);
    r->in_ready = false;
    if (rd->hs_changed)
        r->hs_last = (struct raft_hardstate){r->term, r->vote};
    ASSERT(rd->n_entries == r->u_n);
    free_unstable_from(r, 0);
    r->u_first = r->last_index + 1;
    r->truncate_from = 0;
    if (rd->apply_to > r->applied)
        r->applied = rd->apply_to;
    r->n_msgs = 0;
    r->n_out_reads = 0;
    r->n_snaps = 0;
    r->install = false;
    arena_reset(&r->arena);
}

/* ---------------------------------------------------------------- lifecycle and queries */

int raft_new(const struct raft_options *opts, struct raft **out)
{
    const struct raft_storage *s = opts->storage;
    if (opts->id == 0 || !s || !s->last_index || !s->term_at || !s->entries ||
        !s->config_before || !opts->rand || opts->heartbeat_ticks == 0 ||
        opts->election_ticks <= opts->heartbeat_ticks || opts->max_inflight == 0 ||
        opts->max_inflight > RAFT_MAX_INFLIGHT || opts->max_msg_bytes == 0 ||
        (opts->snap.index == 0) != (opts->snap.term == 0) || !conf_sane(&opts->snap.conf) ||
        opts->applied < opts->snap.index)
        return ERR_INVALID;
    struct raft *r = xcalloc(1, sizeof *r);
    if (!r)
        return ERR_NOMEM;
    r->o = *opts;
    r->id = opts->id;
    r->term = opts->hs.term;
    r->vote = opts->hs.vote;
    r->hs_last = opts->hs;
    r->snap = opts->snap;
    r->last_index = s->last_index(s->ctx);
    if (r->last_index < r->snap.index)
        r->last_index = r->snap.index; /* nothing after the base */
    r->u_first = r->last_index + 1;
    if (opts->applied > r->last_index) {
        xfree(r);
        return ERR_INVALID;
    }
    if (term_at(r, r->last_index, &r->last_term) != 0) {
        xfree(r);
        return ERR_CORRUPT;
    }
    r->commit = r->applied = opts->applied; /* the host applies only committed entries */
    if (r->last_term > r->term) { /* hard state lost but the log survived: never go back */
        r->term = r->last_term;
        r->vote = 0;
    }
    r->persisted = r->last_index;
    arena_init(&r->arena, 0);
    load_conf_before(r, r->last_index + 1);
    r->role = RAFT_FOLLOWER;
    reset_timeout(r);
    *out = r;
    return 0;
}

void raft_free(struct raft *r)
{
    if (!r)
        return;
    free_unstable_from(r, 0);
    xfree(r->u);
    xfree(r->msgs);
    xfree(r->snaps);
    xfree(r->out_reads);
    arena_free(&r->arena);
    xfree(r);
}

enum raft_role raft_role(const struct raft *r) { return r->role; }
bool raft_leader_by_transfer(const struct raft *r)
{
    return r->role == RAFT_LEADER && r->forced_campaign;
}
bool raft_transferring(const struct raft *r)
{
    return r->role == RAFT_LEADER && r->transfer_to != 0;
}
uint64_t raft_term(const struct raft *r) { return r->term; }
uint64_t raft_leader(const struct raft *r) { return r->leader; }
uint64_t raft_id(const struct raft *r) { return r->id; }
uint64_t raft_commit(const struct raft *r) { return r->commit; }
uint64_t raft_last_index(const struct raft *r) { return r->last_index; }
uint64_t raft_persisted_index(const struct raft *r) { return r->persisted; }
const struct raft_conf *raft_conf(const struct raft *r) { return &r->conf; }
const struct raft_snapshot_meta *raft_snapshot(const struct raft *r) { return &r->snap; }

int raft_conf_at(const struct raft *r, uint64_t index, struct raft_conf *out)
{
    if (index < r->snap.index || index > r->last_index)
        return ERR_NOT_FOUND;
    uint64_t at = 0;
    if (r->conf_index <= index)
        *out = r->conf; /* the latest configuration is already in effect there */
    else
        conf_before(r, index + 1, out, &at);
    return 0;
}

uint32_t raft_snapshots_sending(const struct raft *r)
{
    uint32_t n = 0;
    if (r->role == RAFT_LEADER)
        for (uint32_t i = 0; i < r->n_prs; i++)
            n += r->prs[i].streaming ? 1 : 0;
    return n;
}

int raft_match(const struct raft *r, uint64_t node, uint64_t *match)
{
    if (r->role != RAFT_LEADER)
        return RAFT_ERR_NOT_LEADER;
    if (node == r->id) {
        *match = r->persisted;
        return 0;
    }
    for (uint32_t i = 0; i < r->n_prs; i++)
        if (r->prs[i].id == node) {
            *match = r->prs[i].match;
            return 0;
        }
    return ERR_NOT_FOUND;
}

void raft_acked_by(const struct raft *r, uint64_t index, uint32_t *acked, uint32_t *voters)
{
    *acked = 0;
    *voters = r->conf.n_voters;
    for (uint32_t i = 0; i < r->conf.n_voters; i++) {
        uint64_t m = 0;
        if (raft_match(r, r->conf.voters[i], &m) == 0 && m >= index)
            (*acked)++;
    }
}
