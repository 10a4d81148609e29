/* test_raft.c -- unit tests of the Raft core and codec, and the seeded cluster simulation.
 *
 * Simulation seeds: RAFT_SIM_SEED=N runs only seed N (of every raft_sim test) with a trace on
 * stderr; RAFT_SIM_SEEDS=N changes how many seeds each sim test runs. A failing seed is printed
 * with its violation so it can be replayed.
 */
#include "harness.h"

#include "../sim/raft_sim.h"
#include "base/alloc.h"
#include "base/assert.h"
#include "base/buf.h"
#include "base/err.h"
#include "raft/raft.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- codec */

TEST(raft_msg_roundtrip)
{
    struct raft_entry ents[3] = {
        {5, 11, RAFT_ENTRY_NORMAL, SLICE_LIT("hello")},
        {6, 12, RAFT_ENTRY_NOOP, {NULL, 0}},
        {6, 13, RAFT_ENTRY_NORMAL, SLICE_LIT("x")},
    };
    struct raft_msg m = {.type = RAFT_MSG_APPEND, .from = 1, .to = 2, .term = 6, .index = 10,
                         .log_term = 4, .commit = 9, .hint = 3, .ctx = 77, .n_entries = 3,
                         .entries = ents, .reject = true, .force = true};
    struct sbuf b;
    sbuf_init(&b, 0);
    REQUIRE(raft_msg_encode(&m, &b) == 0);
    struct raft_msg d;
    struct raft_entry out[4];
    REQUIRE(raft_msg_decode(slice_of(b.data, b.len), &d, out, 4) == 0);
    CHECK(d.type == m.type && d.from == 1 && d.to == 2 && d.term == 6 && d.index == 10);
    CHECK(d.log_term == 4 && d.commit == 9 && d.hint == 3 && d.ctx == 77 && d.reject && d.force);
    REQUIRE(d.n_entries == 3);
    for (int i = 0; i < 3; i++) {
        CHECK(d.entries[i].term == ents[i].term && d.entries[i].index == ents[i].index);
        CHECK(d.entries[i].type == ents[i].type && slice_eq(d.entries[i].data, ents[i].data));
    }
    /* Too small an entries array, every truncation, and trailing bytes are refused. */
    CHECK(raft_msg_decode(slice_of(b.data, b.len), &d, out, 2) == ERR_TOO_LARGE);
    for (size_t n = 0; n < b.len; n++)
        CHECK(raft_msg_decode(slice_of(b.data, n), &d, out, 4) != 0);
    sbuf_putc(&b, 0);
    CHECK(raft_msg_decode(slice_of(b.data, b.len), &d, out, 4) == ERR_INVALID);
    sbuf_free(&b);
}

TEST(raft_msg_rejects_bad_fields)
{
    struct raft_entry e = {1, 1, RAFT_ENTRY_NORMAL, SLICE_LIT("a")};
    struct raft_msg m = {.type = RAFT_MSG_VOTE, .from = 1, .to = 2, .term = 1, .n_entries = 1,
                         .entries = &e};
    struct sbuf b;
    sbuf_init(&b, 0);
    CHECK(raft_msg_encode(&m, &b) == ERR_INVALID); /* entries only on APPEND */
    m.type = 0;
    m.n_entries = 0;
    CHECK(raft_msg_encode(&m, &b) == ERR_INVALID);
    uint8_t bad_type[] = {1, 99, 0, 1, 2, 1, 0, 0, 0, 0, 0, 0};
    struct raft_msg d;
    struct raft_entry out[1];
    CHECK(raft_msg_decode(slice_of(bad_type, sizeof bad_type), &d, out, 1) == ERR_INVALID);
    uint8_t bad_ver[] = {2, 1, 0, 1, 2, 1, 0, 0, 0, 0, 0, 0};
    CHECK(raft_msg_decode(slice_of(bad_ver, sizeof bad_ver), &d, out, 1) == ERR_INVALID);
    /* An APPEND claiming a huge entry count with no bytes behind it. */
    uint8_t huge[] = {1, RAFT_MSG_APPEND, 0, 1, 2, 1, 0, 0, 0, 0, 0, 0xff, 0xff, 0x03};
    CHECK(raft_msg_decode(slice_of(huge, sizeof huge), &d, out, 1) == ERR_INVALID);
    /* An entry with an unknown type. */
    uint8_t bad_ent[] = {1, RAFT_MSG_APPEND, 0, 1, 2, 1, 0, 0, 0, 0, 0, 1, 1, 9, 0};
    CHECK(raft_msg_decode(slice_of(bad_ent, sizeof bad_ent), &d, out, 1) == ERR_INVALID);
    bad_ent[13] = RAFT_ENTRY_NORMAL;
    CHECK(raft_msg_decode(slice_of(bad_ent, sizeof bad_ent), &d, out, 1) == 0);
    sbuf_free(&b);
}

TEST(raft_conf_codec)
{
    struct raft_conf c = {.n_voters = 3, .voters = {1, 2, 3}, .n_learners = 1, .learners = {9}};
    struct sbuf b;
    sbuf_init(&b, 0);
    REQUIRE(raft_conf_encode(&c, &b) == 0);
    struct raft_conf d;
    REQUIRE(raft_conf_decode(slice_of(b.data, b.len), &d) == 0);
    CHECK(d.n_voters == 3 && d.voters[2] == 3 && d.n_learners == 1 && d.learners[0] == 9);
    CHECK(raft_conf_is_voter(&d, 2) && !raft_conf_is_voter(&d, 9) && raft_conf_has(&d, 9));
    for (size_t n = 0; n < b.len; n++)
        CHECK(raft_conf_decode(slice_of(b.data, n), &d) != 0);
    uint8_t dup[] = {1, 2, 5, 5, 0};
    CHECK(raft_conf_decode(slice_of(dup, sizeof dup), &d) == ERR_INVALID);
    uint64_t zero[] = {1, 0};
    CHECK(raft_bootstrap_entry(zero, 2, &b) == ERR_INVALID);
    sbuf_free(&b);
}

/* ---------------------------------------------------------------- one node by hand */

struct mem_log {
    struct raft_entry e[64];
    uint8_t data[64][32];
    uint64_t n;
    uint64_t off;      /* e[k] is index off + 1 + k (a log installed from a snapshot) */
    uint64_t base;     /* the raft's snapshot base: it must never ask at or below it */
    bool asked_below;
};

static uint64_t ml_last(void *ctx)
{
    const struct mem_log *l = ctx;
    return l->off + l->n;
}
static int ml_term(void *ctx, uint64_t i, uint64_t *t)
{
    struct mem_log *l = ctx;
    if (i <= l->base)
        l->asked_below = true;
    if (i <= l->off || i > l->off + l->n)
        return ERR_NOT_FOUND;
    *t = l->e[i - l->off - 1].term;
    return 0;
}
static int ml_entries(void *ctx, uint64_t from, size_t max_bytes, struct raft_entry *out,
                      size_t max_count, size_t *n)
{
    struct mem_log *l = ctx;
    (void)max_bytes;
    if (from <= l->base)
        l->asked_below = true;
    *n = 0;
    while (*n < max_count && from > l->off && from + *n <= l->off + l->n) {
        out[*n] = l->e[from + *n - l->off - 1];
        (*n)++;
    }
    return *n ? 0 : ERR_NOT_FOUND;
}
static int ml_conf(void *ctx, uint64_t before, uint64_t *index, struct slice *data)
{
    struct mem_log *l = ctx;
    uint64_t last = l->off + l->n;
    for (uint64_t i = before - 1 < last ? before - 1 : last; i > l->off; i--)
        if (l->e[i - l->off - 1].type == RAFT_ENTRY_CONFIG) {
            *index = i;
            *data = l->e[i - l->off - 1].data;
            return 0;
        }
    return ERR_NOT_FOUND;
}
static void ml_append(struct mem_log *l, const struct raft_entry *e)
{
    uint64_t i = l->n++;
    l->e[i] = *e;
    memcpy(l->data[i], e->data.ptr, e->data.len < 32 ? e->data.len : 32);
    l->e[i].data = slice_of(l->data[i], e->data.len < 32 ? e->data.len : 32);
}
static uint64_t fixed_rand(void *ctx)
{
    (void)ctx;
    return 3;
}

TEST(raft_single_node_commits_after_fsync)
{
    struct mem_log *l = xcalloc(1, sizeof *l);
    REQUIRE(l);
    struct sbuf b;
    sbuf_init(&b, 0);
    uint64_t ids[] = {7};
    REQUIRE(raft_bootstrap_entry(ids, 1, &b) == 0);
    struct raft_entry boot = {1, 1, RAFT_ENTRY_CONFIG, slice_of(b.data, b.len)};
    ml_append(l, &boot);
    sbuf_free(&b);
    struct raft_storage st = {l, ml_last, ml_term, ml_entries, ml_conf};
    struct raft_options o = {.id = 7, .storage = &st, .hs = {1, 0}, .election_ticks = 10,
                             .heartbeat_ticks = 2, .max_msg_bytes = 1024, .max_inflight = 4,
                             .pre_vote = true, .check_quorum = true, .rand = fixed_rand};
    struct raft *r = NULL;
    REQUIRE(raft_new(&o, &r) == 0);
    uint64_t idx = 0, leader = 99;
    CHECK(raft_propose(r, RAFT_ENTRY_NORMAL, SLICE_LIT("v"), &idx, &leader) ==
          RAFT_ERR_NOT_LEADER);
    CHECK(leader == 0);
    for (int i = 0; i < 20 && raft_role(r) != RAFT_LEADER; i++)
        raft_tick(r);
    REQUIRE(raft_role(r) == RAFT_LEADER);
    CHECK(raft_term(r) == 2);
    REQUIRE(raft_propose(r, RAFT_ENTRY_NORMAL, SLICE_LIT("v"), &idx, NULL) == 0);
    CHECK(idx == 3); /* bootstrap, no-op, v */
    struct raft_ready rd;
    REQUIRE(raft_ready(r, &rd));
    CHECK(rd.hs_changed && rd.hs.term == 2 && rd.hs.vote == 7);
    CHECK(rd.n_entries == 2 && rd.n_msgs == 0);
    CHECK(rd.apply_to == 0); /* nothing committed before the fsync */
    for (size_t i = 0; i < rd.n_entries; i++)
        ml_append(l, &rd.entries[i]);
    raft_advance(r, &rd);
    CHECK(raft_commit(r) == 0);
    raft_persisted(r, 3, 1); /* stale term: ignored */
    CHECK(raft_commit(r) == 0);
    raft_persisted(r, 3, 2);
    CHECK(raft_commit(r) == 3);
    REQUIRE(raft_ready(r, &rd));
    CHECK(rd.apply_from == 1 && rd.apply_to == 3);
    raft_advance(r, &rd);
    CHECK(raft_read_index(r, 42) == 0);
    REQUIRE(raft_ready(r, &rd));
    CHECK(rd.n_reads == 1 && rd.reads[0].ctx == 42 && rd.reads[0].index == 3);
    raft_advance(r, &rd);
    uint32_t acked = 0, voters = 0;
    raft_acked_by(r, 3, &acked, &voters);
    CHECK(acked == 1 && voters == 1);
    raft_free(r);
    xfree(l);
}

TEST(raft_step_rejects_malformed)
{
    struct mem_log *l = xcalloc(1, sizeof *l);
    REQUIRE(l);
    struct raft_storage st = {l, ml_last, ml_term, ml_entries, ml_conf};
    struct raft_options o = {.id = 2, .storage = &st, .election_ticks = 10, .heartbeat_ticks = 2,
                             .max_msg_bytes = 1024, .max_inflight = 4, .rand = fixed_rand};
    struct raft *r = NULL;
    REQUIRE(raft_new(&o, &r) == 0);
    struct raft_msg m = {.type = RAFT_MSG_APPEND, .from = 1, .to = 3, .term = 1};
    CHECK(raft_step(r, &m) == ERR_INVALID); /* not for us */
    m.to = 2;
    struct raft_entry e = {5, 1, RAFT_ENTRY_NORMAL, SLICE_LIT("a")};
    m.entries = &e;
    m.n_entries = 1;
    CHECK(raft_step(r, &m) == ERR_INVALID); /* entry term above the message term */
    e.term = 1;
    e.index = 4;
    CHECK(raft_step(r, &m) == ERR_INVALID); /* entry index not prev + 1 */
    e.index = 1;
    e.type = RAFT_ENTRY_CONFIG;
    CHECK(raft_step(r, &m) == 0); /* undecodable configuration: dropped, not appended */
    CHECK(raft_last_index(r) == 0);
    e.type = RAFT_ENTRY_NORMAL;
    CHECK(raft_step(r, &m) == 0);
    CHECK(raft_last_index(r) == 1 && raft_leader(r) == 1 && raft_term(r) == 1);
    struct raft_ready rd;
    REQUIRE(raft_ready(r, &rd));
    /* Not persisted yet: no acknowledgement may go out. */
    for (size_t i = 0; i < rd.n_msgs; i++)
        CHECK(rd.msgs[i].type != RAFT_MSG_APPEND_RESP || rd.msgs[i].reject ||
              rd.msgs[i].index == 0);
    for (size_t i = 0; i < rd.n_entries; i++)
        ml_append(l, &rd.entries[i]);
    raft_advance(r, &rd);
    raft_persisted(r, 1, 1);
    REQUIRE(raft_ready(r, &rd));
    REQUIRE(rd.n_msgs == 1);
    CHECK(rd.msgs[0].type == RAFT_MSG_APPEND_RESP && !rd.msgs[0].reject && rd.msgs[0].index == 1);
    raft_advance(r, &rd);
    raft_free(r);
    xfree(l);
}

/* ---------------------------------------------------------------- snapshots */

static struct raft_entry conf_entry(const struct raft_conf *c, struct sbuf *b, uint64_t term,
                                    uint64_t index)
{
    sbuf_reset(b);
    ASSERT(raft_conf_encode(c, b) == 0);
    return (struct raft_entry){term, index, RAFT_ENTRY_CONFIG, slice_of(b->data, b->len)};
}

/* Counts the messages of a type to a node in a list. */
static size_t count_msgs(const struct raft_msg *m, size_t n, uint8_t type, uint64_t to)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        k += m[i].type == type && m[i].to == to;
    return k;
}

/* Processes one ready like a host whose fsync is instant; returns it for inspection (valid until
 * the next call). */
static bool host_ready(struct raft *r, struct mem_log *l, struct raft_ready *rd)
{
    if (!raft_ready(r, rd))
        return false;
    if (rd->install) {
        l->n = 0;
        l->off = l->base = rd->snap.index;
    }
    if (rd->truncate_from)
        l->n = rd->truncate_from - 1 - l->off;
    for (size_t i = 0; i < rd->n_entries; i++)
        ml_append(l, &rd->entries[i]);
    return true;
}

static void host_sync(struct raft *r, struct mem_log *l)
{
    if (l->n)
        raft_persisted(r, l->off + l->n, l->e[l->n - 1].term);
}

/* Node 1, the only voter, leads term 2 with learner 2 and has committed and applied 1..7. */
static struct raft *snap_leader(struct mem_log *l, struct raft_storage *st, struct sbuf *b)
{
    struct raft_conf c = {.n_voters = 1, .voters = {1}, .n_learners = 1, .learners = {2}};
    struct raft_entry boot = conf_entry(&c, b, 1, 1);
    ml_append(l, &boot);
    *st = (struct raft_storage){l, ml_last, ml_term, ml_entries, ml_conf};
    struct raft_options o = {.id = 1, .storage = st, .hs = {1, 0}, .election_ticks = 10,
                             .heartbeat_ticks = 2, .max_msg_bytes = 1024, .max_inflight = 4,
                             .rand = fixed_rand};
    struct raft *r = NULL;
    ASSERT(raft_new(&o, &r) == 0);
    for (int i = 0; i < 20 && raft_role(r) != RAFT_LEADER; i++)
        raft_tick(r);
    ASSERT(raft_role(r) == RAFT_LEADER);
    for (int i = 0; i < 5; i++)
        ASSERT(raft_propose(r, RAFT_ENTRY_NORMAL, SLICE_LIT("v"), NULL, NULL) == 0);
    struct raft_ready rd;
    for (int i = 0; i < 4; i++) { /* append, fsync, apply */
        while (host_ready(r, l, &rd))
            raft_advance(r, &rd);
        host_sync(r, l);
    }
    ASSERT(raft_commit(r) == 7); /* bootstrap, no-op, 5 values */
    return r;
}

TEST(raft_snap_leader_sends_snapshot_not_append)
{
    struct mem_log *l = xcalloc(1, sizeof *l);
    REQUIRE(l);
    struct raft_storage st;
    struct sbuf b;
    sbuf_init(&b, 0);
    struct raft *r = snap_leader(l, &st, &b);
    struct raft_snapshot_meta m = {6, 2, {0}};
    REQUIRE(raft_conf_at(r, 6, &m.conf) == 0);
    CHECK(m.conf.n_voters == 1 && m.conf.n_learners == 1 && m.conf.learners[0] == 2);
    CHECK(raft_conf_at(r, 8, &m.conf) == ERR_NOT_FOUND);
    struct raft_snapshot_meta beyond = {8, 2, m.conf};
    raft_compact(r, &beyond); /* beyond applied: ignored */
    CHECK(raft_snapshot(r)->index == 0);
    raft_compact(r, &m);
    CHECK(raft_snapshot(r)->index == 6 && raft_snapshot(r)->term == 2);
    struct raft_snapshot_meta older = {3, 2, m.conf};
    raft_compact(r, &older); /* older than the base: ignored */
    CHECK(raft_snapshot(r)->index == 6);
    l->base = 6;
    /* The learner says it has nothing: its next (1) is below the base. */
    struct raft_msg rej = {.type = RAFT_MSG_APPEND_RESP, .from = 2, .to = 1, .term = 2,
                           .reject = true, .index = 7, .hint = 1};
    REQUIRE(raft_step(r, &rej) == 0);
    struct raft_ready rd;
    REQUIRE(host_ready(r, l, &rd));
    CHECK(count_msgs(rd.msgs, rd.n_msgs, RAFT_MSG_APPEND, 2) == 0);
    REQUIRE(rd.n_snap_send == 1);
    const struct raft_msg *sm = &rd.snap_send[0];
    CHECK(sm->type == RAFT_MSG_SNAPSHOT && sm->to == 2 && sm->from == 1 && sm->term == 2);
    CHECK(sm->index == 6 && sm->log_term == 2 && sm->commit == 7);
    REQUIRE(sm->n_entries == 1);
    struct raft_conf got;
    CHECK(sm->entries[0].type == RAFT_ENTRY_CONFIG &&
          raft_conf_decode(sm->entries[0].data, &got) == 0 && got.learners[0] == 2);
    /* It goes through the codec. */
    struct sbuf enc;
    sbuf_init(&enc, 0);
    CHECK(raft_msg_encode(sm, &enc) == 0);
    sbuf_free(&enc);
    raft_advance(r, &rd);
    CHECK(raft_snapshots_sending(r) == 1);
    /* While it streams: heartbeats only, no appends, no second snapshot. */
    for (int i = 0; i < 6; i++) {
        raft_tick(r);
        REQUIRE(raft_step(r, &rej) == 0);
        while (host_ready(r, l, &rd)) {
            CHECK(count_msgs(rd.msgs, rd.n_msgs, RAFT_MSG_APPEND, 2) == 0);
            CHECK(rd.n_snap_send == 0);
            raft_advance(r, &rd);
        }
    }
    /* It failed: retried after a heartbeat interval, not at once. */
    raft_snapshot_done(r, 2, false);
    CHECK(raft_snapshots_sending(r) == 0);
    if (host_ready(r, l, &rd)) {
        CHECK(rd.n_snap_send == 0);
        raft_advance(r, &rd);
    }
    size_t resent = 0;
    for (int i = 0; i < 2; i++) {
        raft_tick(r);
        while (host_ready(r, l, &rd)) {
            resent += rd.n_snap_send;
            raft_advance(r, &rd);
        }
    }
    CHECK(resent == 1);
    raft_snapshot_done(r, 3, true); /* unknown peer: ignored */
    /* Done: probe right after the snapshot. */
    raft_snapshot_done(r, 2, true);
    raft_snapshot_done(r, 2, true); /* a duplicate report is ignored */
    REQUIRE(host_ready(r, l, &rd));
    CHECK(rd.n_snap_send == 0);
    size_t probes = 0;
    for (size_t i = 0; i < rd.n_msgs; i++)
        if (rd.msgs[i].type == RAFT_MSG_APPEND && rd.msgs[i].to == 2) {
            probes++;
            CHECK(rd.msgs[i].index == 6 && rd.msgs[i].log_term == 2);
            CHECK(rd.msgs[i].n_entries == 1 && rd.msgs[i].entries[0].index == 7);
        }
    CHECK(probes == 1);
    raft_advance(r, &rd);
    /* The follower's ack of the snapshot resumes replication. */
    struct raft_msg ack = {.type = RAFT_MSG_APPEND_RESP, .from = 2, .to = 1, .term = 2, .index = 6};
    REQUIRE(raft_step(r, &ack) == 0);
    uint64_t match = 0;
    CHECK(raft_match(r, 2, &match) == 0 && match == 6);
    CHECK(!l->asked_below);
    /* A restarted peer is re-probed from scratch. */
    raft_peer_reset(r, 2);
    CHECK(raft_match(r, 2, &match) == 0 && match == 0);
    while (host_ready(r, l, &rd))
        raft_advance(r, &rd);
    CHECK(!l->asked_below);
    raft_free(r);
    sbuf_free(&b);
    xfree(l);
}

static struct raft *snap_follower(struct mem_log *l, struct raft_storage *st)
{
    *st = (struct raft_storage){l, ml_last, ml_term, ml_entries, ml_conf};
    struct raft_options o = {.id = 2, .storage = st, .election_ticks = 10, .heartbeat_ticks = 2,
                             .max_msg_bytes = 1024, .max_inflight = 4, .rand = fixed_rand};
    struct raft *r = NULL;
    ASSERT(raft_new(&o, &r) == 0);
    return r;
}

static struct raft_msg snap_msg(uint64_t term, uint64_t index, uint64_t log_term,
                                const struct raft_entry *conf)
{
    return (struct raft_msg){.type = RAFT_MSG_SNAPSHOT, .from = 1, .to = 2, .term = term,
                             .index = index, .log_term = log_term, .commit = index,
                             .n_entries = 1, .entries = conf};
}

TEST(raft_snap_follower_installs_and_acks_in_same_ready)
{
    struct mem_log *l = xcalloc(1, sizeof *l);
    REQUIRE(l);
    struct raft_storage st;
    struct raft *r = snap_follower(l, &st); /* a wiped / new node: empty log */
    struct sbuf b;
    sbuf_init(&b, 0);
    struct raft_conf c = {.n_voters = 1, .voters = {1}, .n_learners = 1, .learners = {2}};
    struct raft_entry ce = conf_entry(&c, &b, 2, 10);
    struct raft_msg m = snap_msg(3, 10, 2, &ce);
    REQUIRE(raft_step(r, &m) == 0);
    struct raft_ready rd;
    REQUIRE(host_ready(r, l, &rd));
    CHECK(rd.install && rd.snap.index == 10 && rd.snap.term == 2);
    CHECK(rd.snap.conf.n_learners == 1 && rd.snap.conf.learners[0] == 2);
    CHECK(rd.hs_changed && rd.hs.term == 3);
    CHECK(rd.truncate_from == 0 && rd.n_entries == 0 && rd.apply_to == 0);
    REQUIRE(rd.n_msgs == 1);
    CHECK(rd.msgs[0].type == RAFT_MSG_APPEND_RESP && !rd.msgs[0].reject &&
          rd.msgs[0].index == 10 && rd.msgs[0].to == 1);
    raft_advance(r, &rd);
    CHECK(raft_commit(r) == 10 && raft_last_index(r) == 10 && raft_persisted_index(r) == 10);
    CHECK(raft_snapshot(r)->index == 10 && raft_conf(r)->learners[0] == 2);
    CHECK(raft_leader(r) == 1);
    /* The log continues after the base; a prev below the base is inside the snapshot. */
    struct raft_entry ents[3] = {{2, 10, RAFT_ENTRY_NORMAL, SLICE_LIT("a")},
                                 {3, 11, RAFT_ENTRY_NORMAL, SLICE_LIT("b")},
                                 {3, 12, RAFT_ENTRY_NORMAL, SLICE_LIT("c")}};
    struct raft_msg ap = {.type = RAFT_MSG_APPEND, .from = 1, .to = 2, .term = 3, .index = 9,
                          .log_term = 2, .commit = 12, .n_entries = 3, .entries = ents};
    REQUIRE(raft_step(r, &ap) == 0);
    REQUIRE(host_ready(r, l, &rd));
    CHECK(!rd.install);
    REQUIRE(rd.n_entries == 2);
    CHECK(rd.entries[0].index == 11 && rd.entries[1].index == 12);
    raft_advance(r, &rd);
    CHECK(raft_last_index(r) == 12 && raft_commit(r) == 12);
    host_sync(r, l);
    REQUIRE(host_ready(r, l, &rd));
    CHECK(rd.apply_from == 11 && rd.apply_to == 12);
    CHECK(count_msgs(rd.msgs, rd.n_msgs, RAFT_MSG_APPEND_RESP, 1) == 1);
    raft_advance(r, &rd);
    /* A stale snapshot (index <= commit) is acknowledged without an install. */
    ce.index = 8;
    m = snap_msg(3, 8, 2, &ce);
    REQUIRE(raft_step(r, &m) == 0);
    REQUIRE(host_ready(r, l, &rd));
    CHECK(!rd.install);
    REQUIRE(rd.n_msgs == 1);
    CHECK(rd.msgs[0].type == RAFT_MSG_APPEND_RESP && !rd.msgs[0].reject &&
          rd.msgs[0].index == 12);
    raft_advance(r, &rd);
    CHECK(raft_last_index(r) == 12 && raft_snapshot(r)->index == 10);
    CHECK(!l->asked_below);
    raft_free(r);
    sbuf_free(&b);
    xfree(l);
}

/* The host fsynced the log up to `index` (term 1): the ready that follows carries exactly one
 * ack to the leader (node 1), for `index`. */
static void expect_ack_after_sync(struct raft *r, struct mem_log *l, uint64_t index)
{
    struct raft_ready rd;
    raft_persisted(r, index, 1);
    REQUIRE(host_ready(r, l, &rd));
    REQUIRE(count_msgs(rd.msgs, rd.n_msgs, RAFT_MSG_APPEND_RESP, 1) == 1);
    for (size_t i = 0; i < rd.n_msgs; i++)
        if (rd.msgs[i].type == RAFT_MSG_APPEND_RESP)
            CHECK(rd.msgs[i].index == index && !rd.msgs[i].reject);
    raft_advance(r, &rd);
}

/* A follower acknowledges every entry once it is fsynced, also when an ack for an earlier part
 * went out in between: an ack that covers only part of what was appended must leave the rest
 * owed. (Without that, the last entry of a burst was acknowledged only by the next append, or
 * by the leader's re-probe an election timeout later: commits stalled and a leadership transfer,
 * which waits for the target's ack of the last entry, was abandoned.) */
TEST(raft_follower_acks_each_fsync_after_a_partial_ack)
{
    struct mem_log *l = xcalloc(1, sizeof *l);
    REQUIRE(l);
    struct raft_storage st;
    struct raft *r = snap_follower(l, &st);
    struct raft_ready rd;
    struct raft_entry e[4] = {{1, 1, RAFT_ENTRY_NORMAL, SLICE_LIT("a")},
                              {1, 2, RAFT_ENTRY_NORMAL, SLICE_LIT("b")},
                              {1, 3, RAFT_ENTRY_NORMAL, SLICE_LIT("c")},
                              {1, 4, RAFT_ENTRY_NORMAL, SLICE_LIT("d")}};
    /* Two pipelined appends (entries 1 and 2) before any fsync: no ack yet. */
    for (int k = 0; k < 2; k++) {
        struct raft_msg ap = {.type = RAFT_MSG_APPEND, .from = 1, .to = 2, .term = 1,
                              .index = (uint64_t)k, .log_term = k ? 1 : 0, .commit = 0,
                              .n_entries = 1, .entries = &e[k]};
        REQUIRE(raft_step(r, &ap) == 0);
        REQUIRE(host_ready(r, l, &rd));
        CHECK(count_msgs(rd.msgs, rd.n_msgs, RAFT_MSG_APPEND_RESP, 1) == 0);
        raft_advance(r, &rd);
    }
    /* The first fsync covered entry 1 only: ack 1. */
    expect_ack_after_sync(r, l, 1);
    /* The next fsync covers entry 2: it must be acknowledged now, not on the next append. */
    expect_ack_after_sync(r, l, 2);
    /* An append that finds an unacknowledged fsynced prefix acks that prefix at once... */
    struct raft_msg ap = {.type = RAFT_MSG_APPEND, .from = 1, .to = 2, .term = 1, .index = 2,
                          .log_term = 1, .commit = 2, .n_entries = 1, .entries = &e[2]};
    REQUIRE(raft_step(r, &ap) == 0);
    REQUIRE(host_ready(r, l, &rd));
    raft_advance(r, &rd);
    raft_persisted(r, 3, 1);
    ap.index = 3;
    ap.entries = &e[3];
    REQUIRE(raft_step(r, &ap) == 0); /* entry 3 durable, not yet acked; entry 4 new */
    REQUIRE(host_ready(r, l, &rd));
    REQUIRE(count_msgs(rd.msgs, rd.n_msgs, RAFT_MSG_APPEND_RESP, 1) == 1);
    CHECK(rd.msgs[0].index == 3);
    raft_advance(r, &rd);
    /* ...and still owes the rest: entry 4's fsync is acknowledged by itself. */
    expect_ack_after_sync(r, l, 4);
    raft_free(r);
    xfree(l);
}

TEST(raft_snap_matching_entry_fast_forwards)
{
    struct mem_log *l = xcalloc(1, sizeof *l);
    REQUIRE(l);
    struct sbuf b;
    sbuf_init(&b, 0);
    struct raft_conf c = {.n_voters = 2, .voters = {1, 2}};
    struct raft_entry boot = conf_entry(&c, &b, 1, 1);
    ml_append(l, &boot);
    for (uint64_t i = 2; i <= 5; i++) {
        struct raft_entry e = {1, i, RAFT_ENTRY_NORMAL, SLICE_LIT("x")};
        ml_append(l, &e);
    }
    struct raft_storage st;
    struct raft *r = snap_follower(l, &st);
    CHECK(raft_last_index(r) == 5 && raft_commit(r) == 0);
    struct raft_entry ce = conf_entry(&c, &b, 1, 4);
    struct raft_msg m = snap_msg(2, 4, 1, &ce);
    REQUIRE(raft_step(r, &m) == 0);
    struct raft_ready rd;
    REQUIRE(host_ready(r, l, &rd));
    CHECK(!rd.install);
    CHECK(rd.apply_from == 1 && rd.apply_to == 4);
    REQUIRE(count_msgs(rd.msgs, rd.n_msgs, RAFT_MSG_APPEND_RESP, 1) == 1);
    CHECK(rd.msgs[rd.n_msgs - 1].index == 4 && !rd.msgs[rd.n_msgs - 1].reject);
    raft_advance(r, &rd);
    CHECK(raft_commit(r) == 4 && raft_last_index(r) == 5 && raft_snapshot(r)->index == 0);
    /* Entry 5 has term 1, the snapshot says 2: the log is replaced. */
    ce.index = 5;
    m = snap_msg(2, 5, 2, &ce);
    REQUIRE(raft_step(r, &m) == 0);
    REQUIRE(host_ready(r, l, &rd));
    CHECK(rd.install && rd.snap.index == 5 && rd.snap.term == 2 && rd.snap.conf.n_voters == 2);
    CHECK(rd.apply_to == 0);
    raft_advance(r, &rd);
    CHECK(raft_commit(r) == 5 && raft_last_index(r) == 5 && raft_snapshot(r)->term == 2);
    raft_free(r);
    sbuf_free(&b);
    xfree(l);
}

TEST(raft_snap_restart_from_base)
{
    struct mem_log *l = xcalloc(1, sizeof *l);
    REQUIRE(l);
    l->off = l->base = 20;
    struct raft_storage st = {l, ml_last, ml_term, ml_entries, ml_conf};
    struct raft_options o = {.id = 2, .storage = &st, .hs = {4, 0}, .election_ticks = 10,
                             .heartbeat_ticks = 2, .max_msg_bytes = 1024, .max_inflight = 4,
                             .rand = fixed_rand, .applied = 20,
                             .snap = {20, 3, {.n_voters = 2, .voters = {1, 2}}}};
    struct raft *r = NULL;
    REQUIRE(raft_new(&o, &r) == 0);
    CHECK(raft_last_index(r) == 20 && raft_commit(r) == 20 && raft_persisted_index(r) == 20);
    CHECK(raft_conf(r)->n_voters == 2);
    struct raft_conf at;
    CHECK(raft_conf_at(r, 20, &at) == 0 && at.n_voters == 2);
    CHECK(raft_conf_at(r, 19, &at) == ERR_NOT_FOUND);
    /* A vote request compares with the base's term. */
    struct raft_msg v = {.type = RAFT_MSG_VOTE, .from = 1, .to = 2, .term = 5, .index = 20,
                         .log_term = 2};
    REQUIRE(raft_step(r, &v) == 0);
    struct raft_ready rd;
    REQUIRE(raft_ready(r, &rd));
    REQUIRE(rd.n_msgs == 1);
    CHECK(rd.msgs[0].type == RAFT_MSG_VOTE_RESP && rd.msgs[0].reject);
    CHECK(rd.apply_to == 0);
    raft_advance(r, &rd);
    CHECK(!l->asked_below);
    raft_free(r);
    o.applied = 19; /* below the base: nonsense */
    CHECK(raft_new(&o, &r) == ERR_INVALID);
    o.applied = 21; /* beyond the log */
    CHECK(raft_new(&o, &r) == ERR_INVALID);
    o.applied = 20;
    o.snap.term = 0;
    CHECK(raft_new(&o, &r) == ERR_INVALID);
    xfree(l);
}

/* Re-types an encoded APPEND as a SNAPSHOT: decode must refuse the entries it carries. */
static int decode_as_snapshot(const struct raft_entry *ents, size_t n)
{
    struct raft_msg m = snap_msg(5, 30, 4, ents);
    m.type = RAFT_MSG_APPEND;
    m.n_entries = n;
    m.entries = n ? ents : NULL;
    struct sbuf b;
    sbuf_init(&b, 0);
    ASSERT(raft_msg_encode(&m, &b) == 0);
    b.data[1] = RAFT_MSG_SNAPSHOT;
    struct raft_msg d;
    struct raft_entry out[2];
    int rc = raft_msg_decode(slice_of(b.data, b.len), &d, out, 2);
    sbuf_free(&b);
    return rc;
}

TEST(raft_snap_codec)
{
    struct sbuf cb, b;
    sbuf_init(&cb, 0);
    sbuf_init(&b, 0);
    struct raft_conf c = {.n_voters = 3, .voters = {1, 2, 3}};
    struct raft_entry ce = conf_entry(&c, &cb, 4, 30);
    struct raft_msg m = snap_msg(5, 30, 4, &ce);
    m.to = 3;
    REQUIRE(raft_msg_encode(&m, &b) == 0);
    struct raft_msg d;
    struct raft_entry out[2];
    REQUIRE(raft_msg_decode(slice_of(b.data, b.len), &d, out, 2) == 0);
    CHECK(d.type == RAFT_MSG_SNAPSHOT && d.index == 30 && d.log_term == 4 && d.term == 5);
    REQUIRE(d.n_entries == 1);
    CHECK(d.entries[0].index == 30 && d.entries[0].type == RAFT_ENTRY_CONFIG);
    CHECK(slice_eq(d.entries[0].data, ce.data));
    for (size_t n = 0; n < b.len; n++)
        CHECK(raft_msg_decode(slice_of(b.data, n), &d, out, 2) != 0);
    /* Encode refuses what decode refuses. */
    struct raft_entry two[2] = {ce, ce};
    struct raft_entry normal = {4, 30, RAFT_ENTRY_NORMAL, ce.data};
    struct raft_entry junk = {4, 30, RAFT_ENTRY_CONFIG, SLICE_LIT("junk")};
    struct raft_msg bad = m;
    bad.n_entries = 0;
    bad.entries = NULL;
    CHECK(raft_msg_encode(&bad, &b) == ERR_INVALID);
    bad = m;
    bad.n_entries = 2;
    bad.entries = two;
    CHECK(raft_msg_encode(&bad, &b) == ERR_INVALID);
    bad = m;
    bad.entries = &normal;
    CHECK(raft_msg_encode(&bad, &b) == ERR_INVALID);
    bad = m;
    bad.entries = &junk;
    CHECK(raft_msg_encode(&bad, &b) == ERR_INVALID);
    bad = m;
    bad.index = 0;
    CHECK(raft_msg_encode(&bad, &b) == ERR_INVALID);
    /* Wire forms: missing, extra, non-CONFIG and undecodable entries are refused. */
    CHECK(decode_as_snapshot(&ce, 0) == ERR_INVALID);
    CHECK(decode_as_snapshot(two, 2) == ERR_INVALID);
    CHECK(decode_as_snapshot(&normal, 1) == ERR_INVALID);
    CHECK(decode_as_snapshot(&junk, 1) == ERR_INVALID);
    /* raft_step applies the same rules to an in-memory message. */
    struct mem_log *l = xcalloc(1, sizeof *l);
    REQUIRE(l);
    struct raft_storage st;
    struct raft *r = snap_follower(l, &st);
    bad = snap_msg(5, 30, 4, &normal);
    CHECK(raft_step(r, &bad) == ERR_INVALID);
    bad = snap_msg(5, 30, 6, &ce); /* log_term above the term */
    CHECK(raft_step(r, &bad) == ERR_INVALID);
    bad = snap_msg(5, 30, 4, &ce);
    bad.n_entries = 2;
    bad.entries = two;
    CHECK(raft_step(r, &bad) == ERR_INVALID);
    bad = snap_msg(5, 30, 4, &junk);
    CHECK(raft_step(r, &bad) == ERR_INVALID);
    CHECK(raft_last_index(r) == 0 && raft_term(r) == 0);
    raft_free(r);
    xfree(l);
    sbuf_free(&cb);
    sbuf_free(&b);
}

/* ---------------------------------------------------------------- simulation */

static int env_int(const char *name, int dflt)
{
    const char *v = getenv(name);
    return v && *v ? atoi(v) : dflt;
}

static int full_cycles;
static uint64_t last_installs, last_wipes;

static int run_seeds_opt(int n_nodes, bool membership, bool snapshots, uint64_t base, int count);

/* Runs seeds [base, base + count) unless RAFT_SIM_SEED picks one; returns failures. */
static int run_seeds(int n_nodes, bool membership, uint64_t base, int count)
{
    return run_seeds_opt(n_nodes, membership, false, base, count);
}

static int run_seeds_opt(int n_nodes, bool membership, bool snapshots, uint64_t base, int count)
{
    const char *one = getenv("RAFT_SIM_SEED");
    int failures = 0;
    uint64_t acked = 0, kills = 0, parts = 0, leaders = 0, confs = 0, reads = 0, xfers = 0;
    uint64_t compactions = 0, sent = 0, installs = 0, wipes = 0;
    if (one && *one) {
        base = strtoull(one, NULL, 10);
        count = 1;
    }
    count = one && *one ? 1 : env_int("RAFT_SIM_SEEDS", count);
    for (int i = 0; i < count; i++) {
        struct rsim_opts o = {.seed = base + (uint64_t)i, .n_nodes = n_nodes,
                              .membership = membership, .snapshots = snapshots,
                              .trace = one && *one};
        struct rsim_result res;
        if (rsim_run(&o, &res) != 0) {
            fprintf(stderr, "raft sim seed %" PRIu64 " (%d nodes%s%s) failed at step %" PRIu64
                            ": %s\n  replay: RAFT_SIM_SEED=%" PRIu64 " ./unit_tests raft_sim\n",
                    o.seed, n_nodes, membership ? ", membership" : "",
                    snapshots ? ", snapshots" : "", res.step, res.what, o.seed);
            failures++;
        }
        if (res.conf_changes >= 12)
            full_cycles++;
        acked += res.acked;
        kills += res.kills;
        parts += res.partitions;
        leaders += res.leaders;
        confs += res.conf_changes;
        reads += res.reads;
        xfers += res.transfers;
        compactions += res.compactions;
        sent += res.snapshots_sent;
        installs += res.installs;
        wipes += res.wipes;
    }
    fprintf(stderr, "  raft sim %d nodes%s: %d seeds, %" PRIu64 " acked, %" PRIu64 " leaders, %"
                    PRIu64 " kills, %" PRIu64 " partitions, %" PRIu64 " transfers, %" PRIu64
                    " reads, %" PRIu64 " conf changes, %d failed\n",
            n_nodes, membership ? " + membership" : "", count, acked, leaders, kills, parts,
            xfers, reads, confs, failures);
    if (snapshots)
        fprintf(stderr, "    snapshots: %" PRIu64 " compactions, %" PRIu64 " streamed, %" PRIu64
                        " installed, %" PRIu64 " wipes\n", compactions, sent, installs, wipes);
    last_installs = installs;
    last_wipes = wipes;
    return failures;
}

TEST(raft_sim_3_nodes) { CHECK_EQ_INT(run_seeds(3, false, 1000, 400), 0); }
TEST(raft_sim_5_nodes) { CHECK_EQ_INT(run_seeds(5, false, 20000, 250), 0); }
TEST(raft_sim_7_nodes) { CHECK_EQ_INT(run_seeds(7, false, 30000, 150), 0); }
TEST(raft_sim_1_node) { CHECK_EQ_INT(run_seeds(1, false, 40000, 30), 0); }
TEST(raft_sim_membership_3_to_7_and_back)
{
    full_cycles = 0;
    CHECK_EQ_INT(run_seeds(3, true, 50000, 200), 0);
    /* Most seeds must get through the whole 3 -> 7 -> 3 cycle (12 changes) despite faults. */
    fprintf(stderr, "  raft sim membership: %d seeds completed 3 -> 7 -> 3\n", full_cycles);
    if (!getenv("RAFT_SIM_SEED"))
        CHECK(full_cycles >= 100);
}

/* Compaction at random points, snapshot streams that fail, installs, crashes mid-stream, and
 * wiped learners rejoining: every safety check must still hold, and installs must happen. */
TEST(raft_sim_snapshots)
{
    uint64_t installs = 0, wipes = 0;
    CHECK_EQ_INT(run_seeds_opt(3, false, true, 60000, 400), 0);
    installs += last_installs;
    CHECK_EQ_INT(run_seeds_opt(5, false, true, 61000, 200), 0);
    installs += last_installs;
    CHECK_EQ_INT(run_seeds_opt(3, true, true, 62000, 300), 0);
    installs += last_installs;
    wipes += last_wipes;
    if (!getenv("RAFT_SIM_SEED") && !getenv("RAFT_SIM_SEEDS")) {
        CHECK(installs >= 500);
        CHECK(wipes >= 50);
    }
}

/* Each planted bug must be caught within a batch of seeds. */
static void plant_caught_opt(int plant, int n_nodes, bool snapshots)
{
    int caught = 0;
    uint64_t first = 0;
    for (int i = 0; i < 100 && !caught; i++) {
        struct rsim_opts o = {.seed = 9000 + (uint64_t)i, .n_nodes = n_nodes, .plant = plant,
                              .snapshots = snapshots};
        struct rsim_result res;
        if (rsim_run(&o, &res) != 0) {
            caught++;
            first = o.seed;
            fprintf(stderr, "  plant %d caught by seed %" PRIu64 ": %s\n", plant, first, res.what);
        }
    }
    CHECK(caught > 0);
}

static void plant_caught(int plant, int n_nodes) { plant_caught_opt(plant, n_nodes, false); }

TEST(raft_plant_ack_before_fsync_is_caught) { plant_caught(1, 3); }
TEST(raft_plant_vote_not_persisted_is_caught) { plant_caught(2, 3); }
TEST(raft_plant_apply_before_commit_is_caught) { plant_caught(3, 3); }
TEST(raft_plant_snapshot_skip_term_check_is_caught) { plant_caught_opt(4, 3, true); }
