/* test_snapx.c -- snapshot transfer: codec, sender -> receiver on sim_fs, install, crash recovery. */
#include "harness.h"

#include "../sim/sim_fs.h"
#include "base/alloc.h"
#include "base/buf.h"
#include "base/crc32c.h"
#include "base/err.h"
#include "core/snapx.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S_INDEX 4242u
#define S_TERM 7u
#define S_NAME "00000000000000004242.snap"

/* ---------------------------------------------------------------------------------------------- */
/* Helpers                                                                                        */

static void mkdir_p(struct io_fs *fs, const char *path)
{
    char buf[512];
    size_t n = strlen(path);
    for (size_t i = 1; i <= n; i++) {
        if (i < n && path[i] != '/')
            continue;
        memcpy(buf, path, i);
        buf[i] = 0;
        int rc = io_mkdir(fs, buf);
        (void)rc;
        char parent[512];
        const char *sl = strrchr(buf, '/');
        size_t pl = sl ? (size_t)(sl - buf) : 0;
        memcpy(parent, buf, pl);
        parent[pl] = 0;
        io_sync_dir(fs, parent);
    }
}

static void put_file(struct sim_fs *s, const char *path, size_t len, uint32_t seed)
{
    char dir[512];
    const char *sl = strrchr(path, '/');
    size_t pl = (size_t)(sl - path);
    memcpy(dir, path, pl);
    dir[pl] = 0;
    mkdir_p(sim_fs_io(s), dir);
    uint8_t *b = xmalloc(len ? len : 1);
    for (size_t i = 0; i < len; i++)
        b[i] = (uint8_t)(i * 31u + seed + (i >> 9));
    sim_fs_write_file(s, path, b, len);
    xfree(b);
}

static int noop_fn(void *ctx, const char *name)
{
    (void)ctx;
    (void)name;
    return 0;
}

struct tnames {
    char v[64][256];
    int n;
};

static int tnames_add(void *ctx, const char *name)
{
    struct tnames *l = ctx;
    if (l->n < 64)
        snprintf(l->v[l->n++], 256, "%s", name);
    return 0;
}

static int cmp_name(const void *a, const void *b) { return strcmp(a, b); }

/* "D rel" / "F rel len crc" lines for everything under dir, sorted. */
static void dump(struct sim_fs *s, const char *dir, const char *rel, struct sbuf *out)
{
    struct io_fs *fs = sim_fs_io(s);
    struct tnames l = {.n = 0};
    if (io_list(fs, dir, tnames_add, &l) != 0) {
        sbuf_printf(out, "(no %s)\n", rel);
        return;
    }
    qsort(l.v, (size_t)l.n, sizeof l.v[0], cmp_name);
    for (int i = 0; i < l.n; i++) {
        char p[1024], r[1024];
        snprintf(p, sizeof p, "%s/%s", dir, l.v[i]);
        snprintf(r, sizeof r, "%s/%s", rel, l.v[i]);
        if (io_list(fs, p, noop_fn, NULL) >= 0) {
            sbuf_printf(out, "D %s\n", r);
            dump(s, p, r, out);
        } else {
            uint8_t *d = NULL;
            size_t n = 0;
            int rc = sim_fs_read_file(s, p, &d, &n);
            sbuf_printf(out, "F %s %d %zu %08x\n", r, rc, n, crc32c(0, d, n));
            xfree(d);
        }
    }
}

static char *dump_str(struct sim_fs *s, const char *dir)
{
    struct sbuf b;
    sbuf_init(&b, 0);
    dump(s, dir, ".", &b);
    sbuf_putc(&b, 0);
    return (char *)b.data;
}

/* The leader's data dir: S's checkpoint, partition files (one spans two chunks, one is empty),
 * and a journal and raft dir that must not be streamed. */
static void make_src(struct sim_fs *s)
{
    put_file(s, "src/snapshot/" S_NAME, 1500, 1);
    put_file(s, "src/topics/a-1/0/00000000000000000000.log", 300 * 1024 + 17, 2);
    put_file(s, "src/topics/a-1/0/00000000000000000000.idx", 96, 3);
    put_file(s, "src/topics/a-1/0/floor", 12, 4);
    put_file(s, "src/topics/b-2/1/y.idx", 40, 5);
    put_file(s, "src/topics/b-2/1/empty.log", 0, 6);
    put_file(s, "src/topics/c-3.deleted/0/00000000000000000000.log", SNAPX_CHUNK_BYTES, 7);
    put_file(s, "src/journal/00000000000000000001.seg", 5000, 8);
    put_file(s, "src/raft/meta", 32, 9);
}

/* The follower's data dir: its own older state. */
static void make_dst(struct sim_fs *s)
{
    put_file(s, "dst/snapshot/00000000000000000100.snap", 700, 11);
    put_file(s, "dst/snapshot/snapshot.tmp", 10, 12);
    put_file(s, "dst/topics/old-7/0/00000000000000000000.log", 9000, 13);
    put_file(s, "dst/topics/a-1/0/00000000000000000000.log", 100, 14);
    put_file(s, "dst/journal/00000000000000000001.seg", 8000, 15);
    put_file(s, "dst/journal/spare", 4096, 16);
    put_file(s, "dst/raft/meta", 32, 17);
}

struct tctx {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct snapx_rx *rx;
    /* 0 deliver, 1 accept the first chunk then ERR_AGAIN forever, 2 fail with ERR_IO,
     * 3 deliver, and cut a file to 10 bytes while it is being read */
    int mode;
    struct sim_fs *sim;
    int again_every;
    int calls, delivered, rx_errors, done_count, done_rc;
    uint64_t done_index, done_term, done_to;
};

static void tctx_init(struct tctx *t, struct snapx_rx *rx)
{
    memset(t, 0, sizeof *t);
    pthread_mutex_init(&t->mu, NULL);
    pthread_cond_init(&t->cv, NULL);
    t->rx = rx;
}

static void tctx_destroy(struct tctx *t)
{
    pthread_mutex_destroy(&t->mu);
    pthread_cond_destroy(&t->cv);
}

static int t_send(void *ctx, uint64_t to, struct slice bytes)
{
    struct tctx *t = ctx;
    (void)to;
    pthread_mutex_lock(&t->mu);
    int n = ++t->calls;
    pthread_cond_broadcast(&t->cv);
    pthread_mutex_unlock(&t->mu);
    if (t->mode == 2)
        return ERR_IO;
    if (t->mode == 1 && n > 1)
        return ERR_AGAIN;
    if (t->again_every && n % t->again_every == 0)
        return ERR_AGAIN;
    struct snapx_chunk c;
    int rc = snapx_chunk_decode(bytes, &c);
    if (!rc && t->mode == 3 && c.offset == 0 &&
        slice_eq_cstr(c.path, "topics/a-1/0/00000000000000000000.log"))
        sim_fs_set_length(t->sim, "src/topics/a-1/0/00000000000000000000.log", 10);
    if (!rc && t->rx)
        rc = snapx_rx_chunk(t->rx, &c);
    if (rc)
        t->rx_errors++;
    t->delivered++;
    return 0;
}

static void t_done(void *ctx, uint64_t to, uint64_t idx, uint64_t term, int rc)
{
    struct tctx *t = ctx;
    pthread_mutex_lock(&t->mu);
    t->done_count++;
    t->done_rc = rc;
    t->done_index = idx;
    t->done_term = term;
    t->done_to = to;
    pthread_cond_broadcast(&t->cv);
    pthread_mutex_unlock(&t->mu);
}

static void wait_done(struct tctx *t)
{
    pthread_mutex_lock(&t->mu);
    while (t->done_count == 0)
        pthread_cond_wait(&t->cv, &t->mu);
    pthread_mutex_unlock(&t->mu);
}

/* Stream src's snapshot into dst's staging; returns the done rc. */
static int stream(struct io_fs *fs, struct snapx_rx *rx, int again_every)
{
    struct tctx t;
    tctx_init(&t, rx);
    t.again_every = again_every;
    struct snapx_sender *snd = NULL;
    int rc = snapx_sender_start(fs, "src", S_INDEX, S_TERM, 2, t_send, t_done, &t, &snd);
    if (rc) {
        tctx_destroy(&t);
        return rc;
    }
    wait_done(&t);
    snapx_sender_free(snd);
    CHECK_EQ_INT(t.done_count, 1);
    CHECK_EQ_INT(t.rx_errors, 0);
    CHECK(t.done_index == S_INDEX && t.done_term == S_TERM && t.done_to == 2);
    tctx_destroy(&t);
    return t.done_rc;
}

static bool exists(struct sim_fs *s, const char *p) { return io_exists(sim_fs_io(s), p) == 1; }

struct states {
    char *old_topics, *old_snap, *old_journal, *new_topics, *new_snap, *raft;
};

static void states_free(struct states *st)
{
    xfree(st->old_topics);
    xfree(st->old_snap);
    xfree(st->old_journal);
    xfree(st->new_topics);
    xfree(st->new_snap);
    xfree(st->raft);
}

/* Which state dst is in: 1 = old intact, 2 = new complete, 0 = a mix or leftovers. */
static int classify(struct sim_fs *s, const struct states *st)
{
    char *topics = dump_str(s, "dst/topics"), *snap = dump_str(s, "dst/snapshot");
    char *journal = dump_str(s, "dst/journal"), *raft = dump_str(s, "dst/raft");
    bool clean = !exists(s, "dst/snap-incoming") && !exists(s, "dst/topics.old") &&
                 !exists(s, "dst/INSTALLING") && strcmp(raft, st->raft) == 0;
    int r = 0;
    if (clean && strcmp(topics, st->old_topics) == 0 && strcmp(snap, st->old_snap) == 0 &&
        strcmp(journal, st->old_journal) == 0)
        r = 1;
    if (clean && strcmp(topics, st->new_topics) == 0 && strcmp(snap, st->new_snap) == 0 &&
        strcmp(journal, "") == 0)
        r = 2;
    if (r == 0)
        fprintf(stderr, "unexpected state:\ntopics:\n%s\nsnapshot:\n%s\njournal:\n%s\n", topics,
                snap, journal);
    xfree(topics);
    xfree(snap);
    xfree(journal);
    xfree(raft);
    return r;
}

static void capture_states(struct sim_fs *s, struct states *st)
{
    st->old_topics = dump_str(s, "dst/topics");
    st->old_snap = dump_str(s, "dst/snapshot");
    st->old_journal = dump_str(s, "dst/journal");
    st->raft = dump_str(s, "dst/raft");
    st->new_topics = dump_str(s, "src/topics");
    /* the new snapshot dir holds exactly S's file, same bytes */
    struct sbuf b;
    sbuf_init(&b, 0);
    uint8_t *d = NULL;
    size_t n = 0;
    int rc = sim_fs_read_file(s, "src/snapshot/" S_NAME, &d, &n);
    sbuf_printf(&b, "F ./%s %d %zu %08x\n", S_NAME, rc, n, crc32c(0, d, n));
    sbuf_putc(&b, 0);
    xfree(d);
    st->new_snap = (char *)b.data;
}

/* ---------------------------------------------------------------------------------------------- */
/* Codec                                                                                          */

TEST(snapx_codec_roundtrip)
{
    uint8_t data[100];
    for (int i = 0; i < 100; i++)
        data[i] = (uint8_t)i;
    struct snapx_chunk c = {.snap_index = 9, .snap_term = 3, .xfer_id = 0xabcdef, .seq = 5,
                            .kind = SNAPX_FILE, .path = SLICE_LIT("topics/t-1/0/x.log"),
                            .offset = 1 << 20, .eof = true, .data = slice_of(data, 100)};
    struct sbuf b;
    sbuf_init(&b, 0);
    REQUIRE(snapx_chunk_encode(&c, &b) == 0);
    struct snapx_chunk d;
    REQUIRE(snapx_chunk_decode(slice_of(b.data, b.len), &d) == 0);
    CHECK(d.snap_index == 9 && d.snap_term == 3 && d.xfer_id == 0xabcdef && d.seq == 5);
    CHECK(d.kind == SNAPX_FILE && slice_eq(d.path, c.path) && d.offset == (1u << 20) && d.eof);
    CHECK(slice_eq(d.data, c.data) && d.n_files == 0 && d.total_bytes == 0);
    /* every single-byte change, a cut and a trailing byte are rejected */
    for (size_t i = 0; i < b.len; i += 7) {
        b.data[i] ^= 0x40;
        CHECK(snapx_chunk_decode(slice_of(b.data, b.len), &d) == ERR_INVALID);
        b.data[i] ^= 0x40;
    }
    CHECK(snapx_chunk_decode(slice_of(b.data, b.len - 1), &d) == ERR_INVALID);
    sbuf_putc(&b, 0);
    CHECK(snapx_chunk_decode(slice_of(b.data, b.len), &d) == ERR_INVALID);

    struct snapx_chunk e = {.snap_index = 9, .snap_term = 3, .xfer_id = 1, .seq = 6,
                            .kind = SNAPX_END, .n_files = 4, .total_bytes = 123456789};
    sbuf_reset(&b);
    REQUIRE(snapx_chunk_encode(&e, &b) == 0);
    REQUIRE(snapx_chunk_decode(slice_of(b.data, b.len), &d) == 0);
    CHECK(d.kind == SNAPX_END && d.n_files == 4 && d.total_bytes == 123456789 && d.seq == 6);
    CHECK(d.path.len == 0 && d.data.len == 0);
    e.n_files = 0;
    CHECK(snapx_chunk_encode(&e, &b) == ERR_INVALID);
    e.n_files = 1;
    e.kind = 3;
    CHECK(snapx_chunk_encode(&e, &b) == ERR_INVALID);
    /* data longer than a chunk */
    uint8_t *big = xcalloc(1, SNAPX_CHUNK_BYTES + 1);
    c.data = slice_of(big, SNAPX_CHUNK_BYTES + 1);
    CHECK(snapx_chunk_encode(&c, &b) == ERR_INVALID);
    c.data = slice_of(big, SNAPX_CHUNK_BYTES);
    sbuf_reset(&b);
    CHECK(snapx_chunk_encode(&c, &b) == 0);
    CHECK(snapx_chunk_decode(slice_of(b.data, b.len), &d) == 0);
    xfree(big);
    sbuf_free(&b);
}

TEST(snapx_paths_validated)
{
    CHECK(snapx_path_valid(SLICE_LIT("snapshot/00000000000000000009.snap"), 9));
    CHECK(snapx_path_valid(SLICE_LIT("topics/a-1/0/00000000000000000000.log"), 9));
    CHECK(snapx_path_valid(SLICE_LIT("topics/a_b.c-1.deleted/12/floor"), 9));
    const char *bad[] = {"../x", "/abs", "a//b", "topics//b", "topics/a/", "topics/../x",
                         "topics/./x", "topics/a b/0", "topics", "topics/", "journal/x",
                         "raft/meta", "snapshot/00000000000000000008.snap", "snapshot/x.snap",
                         "topics/a/\x01", "topics/a\\b", "", "snap-incoming/COMPLETE",
                         "topics/a/1/2/3/4/5/6/7/8/9/10/11/12/13/14/15/16"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (snapx_path_valid(slice_cstr(bad[i]), 9)) {
            fprintf(stderr, "accepted: %s\n", bad[i]);
            CHECK(0);
        }
    }
    /* too long: the whole path, and one component */
    char longp[SNAPX_PATH_MAX + 80];
    strcpy(longp, "topics");
    while (strlen(longp) < SNAPX_PATH_MAX)
        strcat(longp, "/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
    CHECK(!snapx_path_valid(slice_cstr(longp), 9));
    char comp[300] = "topics/";
    memset(comp + 7, 'x', 256);
    comp[263] = 0;
    CHECK(!snapx_path_valid(slice_cstr(comp), 9));
    comp[262] = 0; /* 255 bytes: fine */
    CHECK(snapx_path_valid(slice_cstr(comp), 9));

    /* the decoder checks the path itself, not only the encoder */
    struct snapx_chunk c = {.snap_index = 9, .kind = SNAPX_FILE,
                            .path = SLICE_LIT("topics/ab/xx")};
    struct sbuf b;
    sbuf_init(&b, 0);
    REQUIRE(snapx_chunk_encode(&c, &b) == 0);
    struct snapx_chunk d;
    CHECK(snapx_chunk_decode(slice_of(b.data, b.len), &d) == 0);
    memcpy(b.data + 36 + 7, "..", 2); /* "topics/../xx" */
    put_le32(b.data + b.len - 4, crc32c(0, b.data, b.len - 4));
    CHECK(snapx_chunk_decode(slice_of(b.data, b.len), &d) == ERR_INVALID);
    c.path = SLICE_LIT("../x");
    CHECK(snapx_chunk_encode(&c, &b) == ERR_INVALID);
    c.path = SLICE_LIT("/abs");
    CHECK(snapx_chunk_encode(&c, &b) == ERR_INVALID);
    sbuf_free(&b);
}

/* ---------------------------------------------------------------------------------------------- */
/* Receiver                                                                                       */

static int feed(struct snapx_rx *rx, uint64_t xfer, uint32_t seq, const char *path, uint64_t off,
                const char *data, bool eof)
{
    struct snapx_chunk c = {.snap_index = S_INDEX, .snap_term = S_TERM, .xfer_id = xfer,
                            .seq = seq, .kind = SNAPX_FILE, .path = slice_cstr(path),
                            .offset = off, .eof = eof, .data = slice_cstr(data)};
    return snapx_rx_chunk(rx, &c);
}

static int feed_end(struct snapx_rx *rx, uint64_t xfer, uint32_t seq, uint32_t n, uint64_t bytes)
{
    struct snapx_chunk c = {.snap_index = S_INDEX, .snap_term = S_TERM, .xfer_id = xfer,
                            .seq = seq, .kind = SNAPX_END, .n_files = n, .total_bytes = bytes};
    return snapx_rx_chunk(rx, &c);
}

#define SNAP_REL "snapshot/" S_NAME

TEST(snapx_rx_gap_restart_and_counts)
{
    struct sim_fs *s = sim_fs_new(3);
    struct io_fs *fs = sim_fs_io(s);
    mkdir_p(fs, "dst");
    struct snapx_rx *rx = NULL;
    REQUIRE(snapx_rx_new(fs, "dst", &rx) == 0);
    /* stream 1: a gap resets it; the rest of it is refused */
    CHECK(feed(rx, 1, 0, SNAP_REL, 0, "snap", true) == 0);
    CHECK(feed(rx, 1, 1, "topics/x-1/0/only-in-1", 0, "abc", false) == 0);
    CHECK(feed(rx, 1, 3, "topics/x-1/0/only-in-1", 3, "def", true) == ERR_AGAIN);
    CHECK(feed(rx, 1, 2, "topics/x-1/0/only-in-1", 3, "def", true) == ERR_AGAIN);
    CHECK(feed_end(rx, 1, 3, 2, 10) == ERR_AGAIN);
    CHECK(!snapx_rx_complete(rx, S_INDEX, S_TERM));
    /* stream 2 (new xfer id) restarts the staging from scratch */
    CHECK(feed(rx, 2, 0, "topics/y-2/0/a.log", 0, "hello ", false) == 0);
    CHECK(!exists(s, "dst/snap-incoming/topics/x-1/0/only-in-1"));
    CHECK(feed(rx, 2, 1, "topics/y-2/0/a.log", 6, "world", true) == 0);
    /* a late chunk of stream 1 does not disturb stream 2 */
    CHECK(feed(rx, 1, 4, "topics/x-1/0/zzz", 0, "x", true) == ERR_AGAIN);
    CHECK(feed(rx, 2, 2, "topics/y-2/1/empty", 0, "", true) == 0);
    CHECK(feed(rx, 2, 3, SNAP_REL, 0, "snapdata", true) == 0);
    CHECK(feed_end(rx, 2, 4, 3, 19) == 0);
    CHECK(snapx_rx_complete(rx, S_INDEX, S_TERM));
    CHECK(!snapx_rx_complete(rx, S_INDEX, S_TERM + 1));
    CHECK(!snapx_rx_complete(rx, S_INDEX + 1, S_TERM));
    CHECK(feed_end(rx, 2, 4, 3, 19) == 0); /* duplicate: ignored */
    CHECK(snapx_rx_complete(rx, S_INDEX, S_TERM));
    uint8_t *d = NULL;
    size_t n = 0;
    REQUIRE(sim_fs_read_durable(s, "dst/snap-incoming/topics/y-2/0/a.log", &d, &n) == 0);
    CHECK(n == 11 && memcmp(d, "hello world", 11) == 0);
    xfree(d);
    /* completion is durable: it survives a crash that drops everything unsynced */
    snapx_rx_free(rx);
    sim_fs_crash(s, SIM_CRASH_DROP_UNSYNCED);
    CHECK(exists(s, "dst/snap-incoming/COMPLETE"));
    CHECK(exists(s, "dst/snap-incoming/topics/y-2/1/empty"));
    REQUIRE(snapx_rx_new(fs, "dst", &rx) == 0);

    /* END with wrong counts (files, then bytes) is not complete */
    CHECK(feed(rx, 3, 0, SNAP_REL, 0, "s", true) == 0);
    CHECK(feed_end(rx, 3, 1, 2, 1) == ERR_AGAIN);
    CHECK(!snapx_rx_complete(rx, S_INDEX, S_TERM));
    CHECK(!exists(s, "dst/snap-incoming/COMPLETE"));
    CHECK(feed(rx, 4, 0, SNAP_REL, 0, "s", true) == 0);
    CHECK(feed_end(rx, 4, 1, 1, 2) == ERR_AGAIN);
    CHECK(!snapx_rx_complete(rx, S_INDEX, S_TERM));
    /* END without the checkpoint file is not complete */
    CHECK(feed(rx, 5, 0, "topics/a/b", 0, "s", true) == 0);
    CHECK(feed_end(rx, 5, 1, 1, 1) == ERR_AGAIN);
    /* END while a file is still open */
    CHECK(feed(rx, 6, 0, SNAP_REL, 0, "s", false) == 0);
    CHECK(feed_end(rx, 6, 1, 1, 1) == ERR_AGAIN);
    /* a file sent twice, a jump in offset, a new file not at offset 0, a file where a
     * directory is: each resets */
    CHECK(feed(rx, 7, 0, SNAP_REL, 0, "s", true) == 0);
    CHECK(feed(rx, 7, 1, SNAP_REL, 0, "s", true) == ERR_AGAIN);
    CHECK(feed(rx, 8, 0, "topics/a/b", 0, "s", false) == 0);
    CHECK(feed(rx, 8, 1, "topics/a/b", 5, "s", true) == ERR_AGAIN);
    CHECK(feed(rx, 9, 0, "topics/a/b", 7, "s", true) == ERR_AGAIN);
    CHECK(feed(rx, 10, 0, "topics/a", 0, "s", true) == 0);
    CHECK(feed(rx, 10, 1, "topics/a/b", 0, "s", true) == ERR_AGAIN);
    /* an invalid chunk is ERR_INVALID */
    CHECK(feed(rx, 11, 0, "../x", 0, "s", true) == ERR_INVALID);
    CHECK(!snapx_rx_complete(rx, S_INDEX, S_TERM));
    snapx_rx_free(rx);
    CHECK(sim_fs_open_handles(s) == 0);
    sim_fs_free(s);
}

/* ---------------------------------------------------------------------------------------------- */
/* Sender + receiver + install                                                                    */

TEST(snapx_stream_and_install)
{
    struct sim_fs *s = sim_fs_new(5);
    struct io_fs *fs = sim_fs_io(s);
    make_src(s);
    make_dst(s);
    struct states st;
    capture_states(s, &st);
    struct snapx_rx *rx = NULL;
    REQUIRE(snapx_rx_new(fs, "dst", &rx) == 0);
    CHECK(snapx_install(fs, "dst", S_INDEX) == ERR_NOT_FOUND); /* nothing staged yet */
    CHECK_EQ_INT(stream(fs, rx, 3), 0);
    CHECK(snapx_rx_complete(rx, S_INDEX, S_TERM));
    snapx_rx_free(rx);
    CHECK(!exists(s, "dst/snap-incoming/journal") && !exists(s, "dst/snap-incoming/raft"));
    CHECK(snapx_install(fs, "dst", S_INDEX + 1) == ERR_INVALID);
    char *t = dump_str(s, "dst/topics");
    CHECK(strcmp(t, st.old_topics) == 0);
    xfree(t);
    REQUIRE(snapx_install(fs, "dst", S_INDEX) == 0);
    CHECK_EQ_INT(classify(s, &st), 2);
    /* all of it durable */
    sim_fs_crash(s, SIM_CRASH_DROP_UNSYNCED);
    CHECK_EQ_INT(classify(s, &st), 2);
    CHECK_EQ_INT(snapx_recover(fs, "dst"), 0);
    CHECK_EQ_INT(classify(s, &st), 2);
    CHECK(sim_fs_open_handles(s) == 0);
    states_free(&st);
    sim_fs_free(s);
}

TEST(snapx_stream_then_restream_same_rx)
{
    /* a second stream of the same snapshot into a receiver that completed one */
    struct sim_fs *s = sim_fs_new(6);
    struct io_fs *fs = sim_fs_io(s);
    make_src(s);
    make_dst(s);
    struct snapx_rx *rx = NULL;
    REQUIRE(snapx_rx_new(fs, "dst", &rx) == 0);
    CHECK_EQ_INT(stream(fs, rx, 0), 0);
    CHECK_EQ_INT(stream(fs, rx, 2), 0);
    CHECK(snapx_rx_complete(rx, S_INDEX, S_TERM));
    /* reset mid-stream: the open staged file is closed, nothing is complete */
    CHECK(feed(rx, 77, 0, SNAP_REL, 0, "s", false) == 0);
    CHECK(sim_fs_open_handles(s) == 1);
    snapx_rx_reset(rx);
    CHECK(sim_fs_open_handles(s) == 0);
    CHECK(!snapx_rx_complete(rx, S_INDEX, S_TERM));
    CHECK(feed(rx, 77, 1, SNAP_REL, 1, "s", true) == ERR_AGAIN);
    snapx_rx_free(rx);
    CHECK(sim_fs_open_handles(s) == 0);
    sim_fs_free(s);
}

TEST(snapx_held_staging_survives_a_new_stream)
{
    /* The hazard: a newer stream's first chunk wipes a complete staging, and an install that
     * was already decided then finds no COMPLETE marker. */
    struct sim_fs *s = sim_fs_new(7);
    struct io_fs *fs = sim_fs_io(s);
    make_src(s);
    make_dst(s);
    struct snapx_rx *rx = NULL;
    REQUIRE(snapx_rx_new(fs, "dst", &rx) == 0);
    CHECK_EQ_INT(stream(fs, rx, 0), 0);
    CHECK(snapx_rx_complete(rx, S_INDEX, S_TERM));
    CHECK(feed(rx, 991, 0, SNAP_REL, 0, "newer", false) == 0);
    CHECK(!snapx_rx_complete(rx, S_INDEX, S_TERM));
    snapx_rx_reset(rx);
    CHECK_EQ_INT(snapx_install(fs, "dst", S_INDEX), ERR_NOT_FOUND);
    /* Held: the newer stream is refused and the staging installs. */
    CHECK_EQ_INT(stream(fs, rx, 0), 0);
    snapx_rx_hold(rx, true);
    CHECK(feed(rx, 992, 0, SNAP_REL, 0, "newer", false) == ERR_AGAIN);
    CHECK(feed(rx, 992, 1, SNAP_REL, 5, "!", true) == ERR_AGAIN);
    CHECK(snapx_rx_complete(rx, S_INDEX, S_TERM));
    snapx_rx_reset(rx); /* releases the hold */
    CHECK(feed(rx, 993, 1, SNAP_REL, 0, "x", true) == ERR_AGAIN); /* no stream: not seq 0 */
    CHECK_EQ_INT(snapx_install(fs, "dst", S_INDEX), 0);
    CHECK(feed(rx, 994, 0, SNAP_REL, 0, "next", false) == 0); /* released: accepted again */
    snapx_rx_free(rx);
    CHECK(sim_fs_open_handles(s) == 0);
    sim_fs_free(s);
}

/* ---- crash at every step of the install ---- */

struct cfs {
    struct io_fs base;
    struct io_fs *in;
    long left; /* counted operations still allowed; the one that would make it < 0 fails */
    bool dead;
};

static bool cfs_step(struct io_fs *fs)
{
    struct cfs *c = (struct cfs *)fs;
    if (c->dead)
        return false;
    if (c->left-- <= 0) {
        c->dead = true;
        return false;
    }
    return true;
}

static struct io_fs *inner(struct io_fs *fs) { return ((struct cfs *)fs)->in; }

static int c_open(struct io_fs *fs, const char *p, int fl, struct io_file **o)
{
    return cfs_step(fs) ? io_open(inner(fs), p, fl, o) : ERR_IO;
}
static int c_unlink(struct io_fs *fs, const char *p)
{
    return cfs_step(fs) ? io_unlink(inner(fs), p) : ERR_IO;
}
static int c_rename(struct io_fs *fs, const char *a, const char *b)
{
    return cfs_step(fs) ? io_rename(inner(fs), a, b) : ERR_IO;
}
static int c_mkdir(struct io_fs *fs, const char *p)
{
    return cfs_step(fs) ? io_mkdir(inner(fs), p) : ERR_IO;
}
static int c_rmdir(struct io_fs *fs, const char *p)
{
    return cfs_step(fs) ? io_rmdir(inner(fs), p) : ERR_IO;
}
static int c_sync_dir(struct io_fs *fs, const char *p)
{
    return cfs_step(fs) ? io_sync_dir(inner(fs), p) : ERR_IO;
}
static int c_list(struct io_fs *fs, const char *d, io_list_fn fn, void *ctx)
{
    return ((struct cfs *)fs)->dead ? ERR_IO : io_list(inner(fs), d, fn, ctx);
}
static int c_exists(struct io_fs *fs, const char *p)
{
    return ((struct cfs *)fs)->dead ? ERR_IO : io_exists(inner(fs), p);
}

/* File handles come from the inner fs, so file operations go straight to it. */
static const struct io_fs_ops cfs_ops = {
    .open = c_open, .unlink = c_unlink, .rename = c_rename, .mkdir = c_mkdir, .rmdir = c_rmdir,
    .sync_dir = c_sync_dir, .list = c_list, .exists = c_exists,
};

static void crash_each_step(enum sim_crash_mode mode)
{
    int saw_old = 0, saw_new = 0, recovered_install = 0;
    for (long n = 0; n < 1000; n++) {
        struct sim_fs *s = sim_fs_new(100 + (uint64_t)n);
        struct io_fs *fs = sim_fs_io(s);
        make_src(s);
        make_dst(s);
        struct states st;
        capture_states(s, &st);
        struct snapx_rx *rx = NULL;
        REQUIRE(snapx_rx_new(fs, "dst", &rx) == 0);
        CHECK_EQ_INT(stream(fs, rx, 0), 0);
        snapx_rx_free(rx);
        struct cfs c = {{&cfs_ops}, fs, n, false};
        int rc = snapx_install(&c.base, "dst", S_INDEX);
        bool finished = rc == 0 && !c.dead;
        CHECK(finished || rc != 0);
        sim_fs_crash(s, mode);
        int rr = snapx_recover(fs, "dst");
        CHECK(rr == 0 || rr == 1);
        int k = classify(s, &st);
        if (k == 0)
            fprintf(stderr, "crash after %ld counted ops (mode %d): mixed state\n", n, (int)mode);
        CHECK(k != 0);
        if (rr == 1) {
            recovered_install++;
            CHECK_EQ_INT(k, 2);
        }
        saw_old += k == 1;
        saw_new += k == 2;
        CHECK(sim_fs_open_handles(s) == 0);
        states_free(&st);
        sim_fs_free(s);
        if (finished)
            break;
        if (harness_current_failed())
            break;
    }
    CHECK(saw_old > 0 && saw_new > 0);
    if (mode == SIM_CRASH_DROP_UNSYNCED)
        CHECK(recovered_install > 0);
}

TEST(snapx_install_crash_every_step_drop_unsynced)
{
    crash_each_step(SIM_CRASH_DROP_UNSYNCED);
}

TEST(snapx_install_crash_every_step_keep_all)
{
    crash_each_step(SIM_CRASH_KEEP_ALL);
}

TEST(snapx_recover_cleans_leftovers)
{
    struct sim_fs *s = sim_fs_new(8);
    struct io_fs *fs = sim_fs_io(s);
    make_dst(s);
    char *before = dump_str(s, "dst");
    put_file(s, "dst/snap-incoming/topics/x-1/0/f.log", 100, 1);
    put_file(s, "dst/snap-incoming/COMPLETE", 48, 1);
    put_file(s, "dst/topics.old/a-1/0/f.log", 100, 1);
    put_file(s, "dst/INSTALLING.tmp", 20, 1);
    CHECK_EQ_INT(snapx_recover(fs, "dst"), 0);
    char *after = dump_str(s, "dst");
    CHECK(strcmp(before, after) == 0);
    sim_fs_crash(s, SIM_CRASH_DROP_UNSYNCED);
    xfree(after);
    after = dump_str(s, "dst");
    CHECK(strcmp(before, after) == 0);
    /* nothing to do: still 0, nothing changes */
    CHECK_EQ_INT(snapx_recover(fs, "dst"), 0);
    xfree(after);
    after = dump_str(s, "dst");
    CHECK(strcmp(before, after) == 0);
    /* a damaged marker is reported, not guessed at */
    put_file(s, "dst/INSTALLING", 20, 1);
    CHECK_EQ_INT(snapx_recover(fs, "dst"), ERR_CORRUPT);
    xfree(before);
    xfree(after);
    sim_fs_free(s);
}

/* ---------------------------------------------------------------------------------------------- */
/* Sender failures                                                                                */

TEST(snapx_sender_cancel_calls_done_once)
{
    struct sim_fs *s = sim_fs_new(9);
    struct io_fs *fs = sim_fs_io(s);
    make_src(s);
    struct tctx t;
    tctx_init(&t, NULL);
    t.mode = 1;
    struct snapx_sender *snd = NULL;
    REQUIRE(snapx_sender_start(fs, "src", S_INDEX, S_TERM, 3, t_send, t_done, &t, &snd) == 0);
    pthread_mutex_lock(&t.mu);
    while (t.calls < 3) /* the first chunk went out, the second is being retried */
        pthread_cond_wait(&t.cv, &t.mu);
    pthread_mutex_unlock(&t.mu);
    snapx_sender_free(snd);
    CHECK_EQ_INT(t.done_count, 1);
    CHECK_EQ_INT(t.done_rc, ERR_UNAVAILABLE);
    CHECK_EQ_INT(t.delivered, 1);
    CHECK(sim_fs_open_handles(s) == 0);
    tctx_destroy(&t);
    sim_fs_free(s);
}

TEST(snapx_sender_errors)
{
    struct sim_fs *s = sim_fs_new(10);
    struct io_fs *fs = sim_fs_io(s);
    make_src(s);
    struct tctx t;
    struct snapx_sender *snd = NULL;
    /* S replaced by a newer checkpoint: ERR_NOT_FOUND, nothing sent */
    tctx_init(&t, NULL);
    REQUIRE(snapx_sender_start(fs, "src", S_INDEX + 1, S_TERM, 3, t_send, t_done, &t, &snd) == 0);
    wait_done(&t);
    snapx_sender_free(snd);
    CHECK_EQ_INT(t.done_rc, ERR_NOT_FOUND);
    CHECK_EQ_INT(t.done_count, 1);
    CHECK_EQ_INT(t.calls, 0);
    tctx_destroy(&t);
    /* send fails: that error, once */
    tctx_init(&t, NULL);
    t.mode = 2;
    REQUIRE(snapx_sender_start(fs, "src", S_INDEX, S_TERM, 3, t_send, t_done, &t, &snd) == 0);
    wait_done(&t);
    snapx_sender_free(snd);
    CHECK_EQ_INT(t.done_rc, ERR_IO);
    CHECK_EQ_INT(t.done_count, 1);
    CHECK_EQ_INT(t.calls, 1);
    tctx_destroy(&t);
    /* a file that shrinks while it is read: ERR_AGAIN (a new stream will see it consistent) */
    tctx_init(&t, NULL);
    t.mode = 3;
    t.sim = s;
    REQUIRE(snapx_sender_start(fs, "src", S_INDEX, S_TERM, 3, t_send, t_done, &t, &snd) == 0);
    wait_done(&t);
    snapx_sender_free(snd);
    CHECK_EQ_INT(t.done_rc, ERR_AGAIN);
    CHECK_EQ_INT(t.done_count, 1);
    tctx_destroy(&t);
    /* a local file the receiver would refuse: ERR_INVALID, not a silent skip */
    put_file(s, "src/topics/a-1/0/bad name", 3, 1);
    tctx_init(&t, NULL);
    REQUIRE(snapx_sender_start(fs, "src", S_INDEX, S_TERM, 3, t_send, t_done, &t, &snd) == 0);
    wait_done(&t);
    snapx_sender_free(snd);
    CHECK_EQ_INT(t.done_rc, ERR_INVALID);
    tctx_destroy(&t);
    /* bad arguments: start fails and done never runs */
    CHECK(snapx_sender_start(fs, "src", 0, S_TERM, 3, t_send, t_done, &t, &snd) == ERR_INVALID);
    snapx_sender_free(NULL);
    CHECK(sim_fs_open_handles(s) == 0);
    sim_fs_free(s);
}
