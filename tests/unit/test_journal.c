/* test_journal.c -- the segmented journal on the simulated and the real file system: append /
 * flush / sync / reopen, iteration from every index, segment rolls, trim and truncate, torn tails
 * at every byte, corruption detection, sticky sync errors, ENOSPC, tools, and a seeded crash
 * simulation (thousands of runs) checking that nothing durable is ever lost or altered. */
#include "harness.h"

#include "../sim/sim_fs.h"
#include "base/alloc.h"
#include "base/err.h"
#include "journal/journal.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---------------------------------------------------------------------------------------------- */
/* Fixture: a journal directory on the sim fs or in a temp dir on the real fs                     */

struct fx {
    struct sim_fs *sim;
    struct io_fs *fs;
    char root[128];
    char dir[160];
};

static bool fx_init(struct fx *x, bool real, uint64_t seed)
{
    memset(x, 0, sizeof *x);
    if (real) {
        snprintf(x->root, sizeof x->root, "/tmp/ayder-journal-XXXXXX");
        if (!mkdtemp(x->root))
            return false;
        x->fs = io_posix_fs();
    } else {
        x->sim = sim_fs_new(seed);
        x->fs = sim_fs_io(x->sim);
        snprintf(x->root, sizeof x->root, "data");
        if (io_mkdir(x->fs, "data") || io_sync_dir(x->fs, "."))
            return false;
    }
    snprintf(x->dir, sizeof x->dir, "%s/journal", x->root);
    return true;
}

static int unlink_cb(void *ctx, const char *name)
{
    struct fx *x = ctx;
    char p[512];
    snprintf(p, sizeof p, "%s/%s", x->dir, name);
    io_unlink(x->fs, p);
    return 0;
}

static void fx_done(struct fx *x)
{
    if (x->sim) {
        CHECK(sim_fs_open_handles(x->sim) == 0);
        sim_fs_free(x->sim);
        return;
    }
    if (io_exists(x->fs, x->dir) == 1) {
        io_list(x->fs, x->dir, unlink_cb, x);
        io_rmdir(x->fs, x->dir);
    }
    io_rmdir(x->fs, x->root);
}

static void seg_path(const struct fx *x, uint64_t first, char *out, size_t cap)
{
    snprintf(out, cap, "%s/%020llu.seg", x->dir, (unsigned long long)first);
}

/* Deterministic payloads: entry `index` written in `version` has this content. */
static void fill(uint8_t *p, size_t n, uint64_t index, uint64_t version)
{
    uint64_t z = index * 0x9E3779B97F4A7C15ull + version * 0xBF58476D1CE4E5B9ull + n;
    for (size_t i = 0; i < n; i++) {
        z ^= z << 13;
        z ^= z >> 7;
        z ^= z << 17;
        p[i] = (uint8_t)z;
    }
}

static int append_gen(struct journal *j, uint64_t term, uint64_t index, size_t len,
                      uint64_t version)
{
    uint8_t *p = xmalloc(len ? len : 1);
    fill(p, len, index, version);
    int rc = journal_append(j, term, index, (uint8_t)(index & 7), slice_of(p, len));
    xfree(p);
    return rc;
}

static bool payload_ok(struct slice s, uint64_t index, size_t len, uint64_t version)
{
    if (s.len != len)
        return false;
    uint8_t *p = xmalloc(len ? len : 1);
    fill(p, len, index, version);
    bool ok = len == 0 || memcmp(p, s.ptr, len) == 0;
    xfree(p);
    return ok;
}

static size_t size_of(uint64_t index) { return (size_t)((index * 37) % 300); }
static uint64_t term_of(uint64_t index) { return 1 + index / 40; }

/* Append entries from..to with the standard sizes/terms. */
static int append_range(struct journal *j, uint64_t from, uint64_t to)
{
    for (uint64_t i = from; i <= to; i++) {
        int rc = append_gen(j, term_of(i), i, size_of(i), 0);
        if (rc)
            return rc;
    }
    return 0;
}

/* Iterate from `from` and check every entry up to `last` against the standard generator. */
static bool verify_range(struct journal *j, uint64_t from, uint64_t last)
{
    struct journal_iter *it;
    if (journal_iter_open(j, from, &it))
        return false;
    uint64_t want = from, term, index;
    uint8_t type;
    struct slice p;
    int rc;
    bool ok = true;
    while (want <= last && (rc = journal_iter_next(it, &term, &index, &type, &p)) == 1) {
        if (index != want || term != term_of(index) || type != (index & 7) ||
            !payload_ok(p, index, size_of(index), 0))
            ok = false;
        want++;
    }
    if (want > last) /* the journal must not hold more than expected */
        rc = journal_iter_next(it, &term, &index, &type, &p);
    journal_iter_close(it);
    return ok && rc == 0 && want == last + 1;
}

static int count_segs_cb(void *ctx, const char *name)
{
    if (strstr(name, ".seg"))
        ++*(int *)ctx;
    return 0;
}

static int count_segs(struct fx *x)
{
    int n = 0;
    io_list(x->fs, x->dir, count_segs_cb, &n);
    return n;
}

/* ---------------------------------------------------------------------------------------------- */
/* Basic behaviour on both file systems                                                           */

static void basic_roundtrip(bool real)
{
    struct fx x;
    REQUIRE(fx_init(&x, real, 1));
    struct journal *j;
    struct journal_recovery rec;
    REQUIRE(journal_open(x.fs, x.dir, NULL, &j, &rec) == 0);
    CHECK(journal_first_index(j) == 0);
    CHECK(journal_last_index(j) == 0);
    CHECK(journal_append(j, 1, 2, 0, SLICE_LIT("x")) == ERR_INVALID); /* must be 1 */
    REQUIRE(append_range(j, 1, 100) == 0);
    CHECK(journal_append(j, 1, 101, 0, SLICE_LIT("x")) == ERR_INVALID); /* term went down */
    CHECK(journal_last_index(j) == 100);
    CHECK(journal_flushed_index(j) == 0);
    CHECK(journal_durable_index(j) == 0);
    REQUIRE(journal_flush(j) == 0);
    CHECK(journal_flushed_index(j) == 100);
    CHECK(journal_durable_index(j) == 0);
    CHECK(verify_range(j, 1, 100));
    struct journal_sync *tok;
    REQUIRE(journal_sync_prepare(j, &tok) == 0);
    REQUIRE(tok != NULL);
    struct journal_sync *tok2;
    CHECK(journal_sync_prepare(j, &tok2) == ERR_AGAIN);
    /* Appends and flushes continue while the token is in flight. */
    REQUIRE(append_range(j, 101, 120) == 0);
    REQUIRE(journal_flush(j) == 0);
    CHECK(journal_sync_done(j, tok, journal_sync_run(tok)) == 0);
    CHECK(journal_durable_index(j) == 100);
    REQUIRE(journal_sync_now(j) == 0);
    CHECK(journal_durable_index(j) == 120);
    REQUIRE(journal_sync_prepare(j, &tok) == 0);
    CHECK(tok == NULL);
    uint64_t t = 0;
    CHECK(journal_term_at(j, 57, &t) == 0 && t == term_of(57));
    CHECK(journal_term_at(j, 121, &t) == ERR_NOT_FOUND);
    struct journal_stats st;
    journal_stats(j, &st);
    CHECK(st.entries_written == 120);
    CHECK(st.syncs >= 2);
    CHECK(st.segments == 1);
    journal_close(j);

    REQUIRE(journal_open(x.fs, x.dir, NULL, &j, &rec) == 0);
    CHECK(rec.first_index == 1 && rec.last_index == 120 && rec.truncated_bytes == 0);
    CHECK(journal_last_index(j) == 120);
    CHECK(journal_last_term(j) == term_of(120));
    CHECK(journal_durable_index(j) == 120);
    CHECK(verify_range(j, 1, 120));
    CHECK(verify_range(j, 57, 120));
    CHECK(verify_range(j, 121, 120));
    struct journal_iter *it;
    CHECK(journal_iter_open(j, 122, &it) == ERR_INVALID);
    REQUIRE(append_range(j, 121, 130) == 0);
    REQUIRE(journal_sync_now(j) == 0);
    CHECK(verify_range(j, 1, 130));
    journal_close(j);
    fx_done(&x);
}

TEST(journal_roundtrip_sim) { basic_roundtrip(false); }
TEST(journal_roundtrip_real_fs) { basic_roundtrip(true); }

static void iterate_every_index(bool real)
{
    struct fx x;
    REQUIRE(fx_init(&x, real, 2));
    struct journal *j;
    struct journal_opts o = {.segment_bytes = 4096};
    REQUIRE(journal_open(x.fs, x.dir, &o, &j, NULL) == 0);
    REQUIRE(append_range(j, 1, 300) == 0);
    REQUIRE(journal_sync_now(j) == 0);
    CHECK(count_segs(&x) > 5);
    for (uint64_t from = 1; from <= 301; from += (real ? 7 : 1))
        CHECK(verify_range(j, from, 300));
    journal_close(j);
    REQUIRE(journal_open(x.fs, x.dir, &o, &j, NULL) == 0);
    for (uint64_t from = 1; from <= 301; from += (real ? 5 : 1))
        CHECK(verify_range(j, from, 300));
    /* An iterator follows entries flushed after it was opened, across segment rolls. */
    struct journal_iter *it;
    REQUIRE(journal_iter_open(j, 299, &it) == 0);
    uint64_t term, index;
    uint8_t type;
    struct slice p;
    CHECK(journal_iter_next(it, &term, &index, &type, &p) == 1 && index == 299);
    CHECK(journal_iter_next(it, &term, &index, &type, &p) == 1 && index == 300);
    CHECK(journal_iter_next(it, &term, &index, &type, &p) == 0);
    REQUIRE(append_range(j, 301, 340) == 0);
    CHECK(journal_iter_next(it, &term, &index, &type, &p) == 0); /* not flushed yet */
    REQUIRE(journal_sync_now(j) == 0);
    for (uint64_t want = 301; want <= 340; want++) {
        CHECK(journal_iter_next(it, &term, &index, &type, &p) == 1);
        CHECK(index == want && payload_ok(p, index, size_of(index), 0));
    }
    journal_iter_close(it);
    journal_close(j);
    fx_done(&x);
}

TEST(journal_iterate_from_every_index_sim) { iterate_every_index(false); }
TEST(journal_iterate_from_every_index_real_fs) { iterate_every_index(true); }

TEST(journal_segment_roll_and_big_entries)
{
    struct fx x;
    REQUIRE(fx_init(&x, false, 3));
    struct journal *j;
    struct journal_opts o = {.segment_bytes = 4096};
    REQUIRE(journal_open(x.fs, x.dir, &o, &j, NULL) == 0);
    /* 1000-byte payloads: 3 per 4096-byte segment (40-byte header + 3 x 1025). */
    for (uint64_t i = 1; i <= 8; i++)
        REQUIRE(append_gen(j, 1, i, 1000, 0) == 0);
    REQUIRE(append_gen(j, 1, 9, 10000, 0) == 0); /* alone in its segment */
    REQUIRE(append_gen(j, 1, 10, 10, 0) == 0);
    /* A new segment is only written once the previous one is durable. */
    REQUIRE(journal_flush(j) == 0);
    CHECK(journal_flushed_index(j) == 3);
    REQUIRE(journal_sync_now(j) == 0);
    CHECK(journal_flushed_index(j) == 10 && journal_durable_index(j) == 10);
    CHECK_EQ_INT(count_segs(&x), 5);
    char p[256];
    seg_path(&x, 9, p, sizeof p);
    CHECK(io_exists(x.fs, p) == 1);
    seg_path(&x, 10, p, sizeof p);
    CHECK(io_exists(x.fs, p) == 1);
    struct journal_stats st;
    journal_stats(j, &st);
    CHECK(st.segments == 5);
    /* Only the active segment keeps a handle after its predecessors' final sync. */
    CHECK(sim_fs_open_handles(x.sim) == 1);
    /* Oversized payloads are refused. */
    struct slice big = {(const uint8_t *)"", (size_t)JOURNAL_PAYLOAD_MAX + 1};
    CHECK(journal_append(j, 1, 11, 0, big) == ERR_TOO_LARGE);
    journal_close(j);
    REQUIRE(journal_open(x.fs, x.dir, &o, &j, NULL) == 0);
    CHECK(journal_last_index(j) == 10);
    struct journal_iter *it;
    REQUIRE(journal_iter_open(j, 9, &it) == 0);
    uint64_t term, index;
    uint8_t type;
    struct slice s;
    CHECK(journal_iter_next(it, &term, &index, &type, &s) == 1);
    CHECK(index == 9 && payload_ok(s, 9, 10000, 0));
    journal_iter_close(it);
    journal_close(j);
    fx_done(&x);
}

static void trim_and_truncate(bool real)
{
    struct fx x;
    REQUIRE(fx_init(&x, real, 4));
    struct journal *j;
    struct journal_opts o = {.segment_bytes = 4096};
    REQUIRE(journal_open(x.fs, x.dir, &o, &j, NULL) == 0);
    REQUIRE(append_range(j, 1, 200) == 0);
    REQUIRE(journal_sync_now(j) == 0);
    int before = count_segs(&x);
    struct journal_iter *it;
    REQUIRE(journal_iter_open(j, 1, &it) == 0);
    REQUIRE(journal_trim_prefix(j, 100) == 0);
    uint64_t first = journal_first_index(j);
    CHECK(first > 1 && first <= 101);
    CHECK(count_segs(&x) < before);
    uint64_t term, index;
    uint8_t type;
    struct slice p;
    CHECK(journal_iter_next(it, &term, &index, &type, &p) == ERR_AGAIN);
    journal_iter_close(it);
    CHECK(journal_iter_open(j, first - 1, &it) == ERR_NOT_FOUND);
    uint64_t t = 0;
    CHECK(journal_term_at(j, first - 1, &t) == 0 && t == term_of(first - 1));
    CHECK(journal_term_at(j, first - 2, &t) == ERR_NOT_FOUND);
    CHECK(verify_range(j, first, 200));

    /* Truncate in the middle of a segment, then append a different history. */
    REQUIRE(journal_truncate_suffix(j, 150) == 0);
    CHECK(journal_last_index(j) == 150 && journal_durable_index(j) == 150);
    CHECK(journal_last_term(j) == term_of(150));
    CHECK(verify_range(j, first, 150));
    REQUIRE(append_gen(j, 99, 151, 77, 1) == 0);
    REQUIRE(journal_sync_now(j) == 0);
    journal_close(j);
    REQUIRE(journal_open(x.fs, x.dir, &o, &j, NULL) == 0);
    CHECK(journal_first_index(j) == first);
    CHECK(journal_last_index(j) == 151 && journal_last_term(j) == 99);
    CHECK(verify_range(j, first, 150) == false); /* 151 differs from the generator */
    REQUIRE(journal_iter_open(j, 151, &it) == 0);
    CHECK(journal_iter_next(it, &term, &index, &type, &p) == 1);
    CHECK(term == 99 && payload_ok(p, 151, 77, 1));
    journal_iter_close(it);
    /* Truncate at a segment boundary and below: everything after goes. */
    REQUIRE(journal_truncate_suffix(j, first + 3) == 0);
    CHECK(verify_range(j, first, first + 3));
    CHECK(journal_truncate_suffix(j, first - 2) == ERR_INVALID);
    REQUIRE(journal_truncate_suffix(j, first - 1) == 0);
    CHECK(journal_last_index(j) == first - 1);
    CHECK(journal_first_index(j) == first);
    CHECK(journal_last_term(j) == term_of(first - 1));
    REQUIRE(append_range(j, first, first + 50) == 0);
    REQUIRE(journal_sync_now(j) == 0);
    journal_close(j);
    REQUIRE(journal_open(x.fs, x.dir, &o, &j, NULL) == 0);
    CHECK(verify_range(j, first, first + 50));
    journal_close(j);
    fx_done(&x);
}

TEST(journal_trim_truncate_sim) { trim_and_truncate(false); }
TEST(journal_trim_truncate_real_fs) { trim_and_truncate(true); }

TEST(journal_set_base_after_snapshot)
{
    struct fx x;
    REQUIRE(fx_init(&x, false, 5));
    struct journal *j;
    REQUIRE(journal_open(x.fs, x.dir, NULL, &j, NULL) == 0);
    REQUIRE(journal_set_base(j, 1000, 7) == 0);
    CHECK(journal_first_index(j) == 1001 && journal_last_index(j) == 1000);
    uint64_t t = 0;
    CHECK(journal_term_at(j, 1000, &t) == 0 && t == 7);
    CHECK(journal_append(j, 6, 1001, 0, SLICE_LIT("a")) == ERR_INVALID);
    REQUIRE(journal_append(j, 7, 1001, 0, SLICE_LIT("a")) == 0);
    CHECK(journal_set_base(j, 5, 1) == ERR_CONFLICT);
    REQUIRE(journal_sync_now(j) == 0);
    journal_close(j);
    REQUIRE(journal_open(x.fs, x.dir, NULL, &j, NULL) == 0);
    CHECK(journal_first_index(j) == 1001 && journal_last_index(j) == 1001);
    CHECK(journal_term_at(j, 1000, &t) == 0 && t == 7); /* from the segment header */
    journal_close(j);
    fx_done(&x);
}

/* ---------------------------------------------------------------------------------------------- */
/* Damaged files                                                                                  */

/* Build a journal of n entries in one segment; returns the offset where entry n starts. */
static uint64_t build_one_segment(struct fx *x, uint64_t n)
{
    struct journal *j;
    if (journal_open(x->fs, x->dir, NULL, &j, NULL))
        return 0;
    append_range(j, 1, n - 1);
    journal_sync_now(j);
    struct journal_stats st;
    journal_stats(j, &st);
    append_range(j, n, n);
    journal_sync_now(j);
    journal_close(j);
    return st.bytes;
}

TEST(journal_torn_tail_at_every_byte)
{
    struct fx x;
    REQUIRE(fx_init(&x, false, 6));
    const uint64_t n = 20;
    uint64_t good_end = build_one_segment(&x, n);
    REQUIRE(good_end > 0);
    char path[256];
    seg_path(&x, 1, path, sizeof path);
    uint8_t *orig;
    size_t full;
    REQUIRE(sim_fs_read_file(x.sim, path, &orig, &full) == 0);
    REQUIRE(full == good_end + JOURNAL_ENTRY_HEADER_BYTES + size_of(n));
    int failures = 0;
    for (uint64_t len = good_end; len < full; len++) {
        REQUIRE(sim_fs_write_file(x.sim, path, orig, (size_t)len) == 0);
        struct journal *j;
        struct journal_recovery rec;
        int rc = journal_open(x.fs, x.dir, NULL, &j, &rec);
        if (rc || journal_last_index(j) != n - 1 || rec.truncated_bytes != len - good_end ||
            !verify_range(j, 1, n - 1))
            failures++;
        if (!rc)
            journal_close(j);
        uint8_t *d;
        size_t dn;
        REQUIRE(sim_fs_read_durable(x.sim, path, &d, &dn) == 0);
        CHECK(dn == good_end); /* the cut is durable */
        xfree(d);
    }
    CHECK_EQ_INT(failures, 0);
    /* Garble each byte of the last entry instead. */
    for (uint64_t off = good_end; off < full; off++) {
        REQUIRE(sim_fs_write_file(x.sim, path, orig, full) == 0);
        REQUIRE(sim_fs_corrupt(x.sim, path, off, 0x5A) == 0);
        struct journal *j;
        struct journal_recovery rec;
        int rc = journal_open(x.fs, x.dir, NULL, &j, &rec);
        if (rc || journal_last_index(j) != n - 1 || rec.truncated_bytes != full - good_end ||
            !verify_range(j, 1, n - 1))
            failures++;
        if (!rc) {
            CHECK(strstr(rec.detail, "torn") != NULL);
            journal_close(j);
        }
    }
    CHECK_EQ_INT(failures, 0);
    xfree(orig);
    fx_done(&x);
}

TEST(journal_torn_tail_real_fs)
{
    struct fx x;
    REQUIRE(fx_init(&x, true, 0));
    uint64_t good_end = build_one_segment(&x, 10);
    REQUIRE(good_end > 0);
    char path[256];
    seg_path(&x, 1, path, sizeof path);
    for (uint64_t cut = 1; cut < JOURNAL_ENTRY_HEADER_BYTES + size_of(10); cut += 9) {
        REQUIRE(truncate(path, (off_t)(good_end + cut)) == 0);
        struct journal *j;
        struct journal_recovery rec;
        REQUIRE(journal_open(x.fs, x.dir, NULL, &j, &rec) == 0);
        CHECK(journal_last_index(j) == 9 && rec.truncated_bytes == cut);
        CHECK(verify_range(j, 1, 9));
        REQUIRE(append_range(j, 10, 10) == 0);
        REQUIRE(journal_sync_now(j) == 0);
        journal_close(j);
    }
    fx_done(&x);
}

TEST(journal_bad_entry_before_good_is_corruption)
{
    struct fx x;
    REQUIRE(fx_init(&x, false, 7));
    REQUIRE(build_one_segment(&x, 30) > 0);
    char path[256];
    seg_path(&x, 1, path, sizeof path);
    /* Flip a payload byte of some middle entry: offset of entry 10's payload. */
    uint64_t off = JOURNAL_SEGMENT_HEADER_BYTES;
    for (uint64_t i = 1; i < 10; i++)
        off += JOURNAL_ENTRY_HEADER_BYTES + size_of(i);
    REQUIRE(sim_fs_corrupt(x.sim, path, off + JOURNAL_ENTRY_HEADER_BYTES + 1, 0x01) == 0);
    struct journal *j = NULL;
    struct journal_recovery rec;
    CHECK(journal_open(x.fs, x.dir, NULL, &j, &rec) == ERR_CORRUPT);
    CHECK(j == NULL);
    CHECK(strstr(rec.detail, "corrupt") != NULL);
    CHECK(strstr(rec.detail, "index 10") != NULL);
    /* Nothing was cut. */
    uint8_t *d;
    size_t n;
    REQUIRE(sim_fs_read_file(x.sim, path, &d, &n) == 0);
    CHECK(n > off + 100);
    xfree(d);
    /* The tools see it too; repair keeps the valid prefix. */
    FILE *devnull = fopen("/dev/null", "w");
    CHECK(journal_check_dir(x.fs, x.dir, false, devnull) == ERR_CORRUPT);
    CHECK(journal_dump_segment(x.fs, path, devnull) == ERR_CORRUPT);
    CHECK(journal_check_dir(x.fs, x.dir, true, devnull) == 0);
    CHECK(journal_check_dir(x.fs, x.dir, false, devnull) == 0);
    fclose(devnull);
    REQUIRE(journal_open(x.fs, x.dir, NULL, &j, &rec) == 0);
    CHECK(journal_last_index(j) == 9);
    CHECK(verify_range(j, 1, 9));
    journal_close(j);
    fx_done(&x);
}

TEST(journal_damaged_non_last_segment_is_corruption)
{
    struct fx x;
    REQUIRE(fx_init(&x, false, 8));
    struct journal *j;
    struct journal_opts o = {.segment_bytes = 4096};
    REQUIRE(journal_open(x.fs, x.dir, &o, &j, NULL) == 0);
    REQUIRE(append_range(j, 1, 100) == 0);
    REQUIRE(journal_sync_now(j) == 0);
    journal_close(j);
    /* Cut the first segment's last entry short: a torn tail, but not in the last segment. */
    char path[256];
    seg_path(&x, 1, path, sizeof path);
    uint8_t *d;
    size_t n;
    REQUIRE(sim_fs_read_file(x.sim, path, &d, &n) == 0);
    xfree(d);
    REQUIRE(sim_fs_set_length(x.sim, path, n - 3) == 0);
    struct journal_recovery rec;
    CHECK(journal_open(x.fs, x.dir, &o, &j, &rec) == ERR_CORRUPT);
    CHECK(strstr(rec.detail, "00000000000000000001.seg") != NULL);
    fx_done(&x);
}

TEST(journal_zero_length_segments)
{
    struct fx x;
    REQUIRE(fx_init(&x, false, 9));
    REQUIRE(build_one_segment(&x, 10) > 0);
    char path[256];
    /* A zero-length last segment (crash right after creation) is removed. */
    seg_path(&x, 11, path, sizeof path);
    REQUIRE(sim_fs_write_file(x.sim, path, "", 0) == 0);
    struct journal *j;
    struct journal_recovery rec;
    REQUIRE(journal_open(x.fs, x.dir, NULL, &j, &rec) == 0);
    CHECK(journal_last_index(j) == 10);
    CHECK(io_exists(x.fs, path) == 0);
    REQUIRE(append_range(j, 11, 12) == 0);
    REQUIRE(journal_sync_now(j) == 0);
    journal_close(j);
    REQUIRE(journal_open(x.fs, x.dir, NULL, &j, &rec) == 0);
    CHECK(verify_range(j, 1, 12));
    journal_close(j);
    /* A zero-length segment that is not the last one is corruption. */
    seg_path(&x, 13, path, sizeof path);
    REQUIRE(sim_fs_write_file(x.sim, path, "", 0) == 0);
    seg_path(&x, 14, path, sizeof path);
    REQUIRE(sim_fs_write_file(x.sim, path, "", 0) == 0);
    CHECK(journal_open(x.fs, x.dir, NULL, &j, &rec) == ERR_CORRUPT);
    /* An empty journal directory with only a zero-length segment opens empty. */
    struct fx y;
    REQUIRE(fx_init(&y, false, 10));
    REQUIRE(io_mkdir(y.fs, y.dir) == 0);
    seg_path(&y, 1, path, sizeof path);
    REQUIRE(sim_fs_write_file(y.sim, path, "", 0) == 0);
    REQUIRE(journal_open(y.fs, y.dir, NULL, &j, &rec) == 0);
    CHECK(journal_last_index(j) == 0);
    journal_close(j);
    fx_done(&y);
    fx_done(&x);
}

TEST(journal_missing_middle_segment_is_corruption)
{
    struct fx x;
    REQUIRE(fx_init(&x, false, 11));
    struct journal *j;
    struct journal_opts o = {.segment_bytes = 4096};
    REQUIRE(journal_open(x.fs, x.dir, &o, &j, NULL) == 0);
    REQUIRE(append_range(j, 1, 100) == 0);
    REQUIRE(journal_sync_now(j) == 0);
    struct journal_stats st;
    journal_stats(j, &st);
    REQUIRE(st.segments >= 3);
    journal_close(j);
    /* Find the second segment's name and delete it. */
    uint64_t second = 0;
    for (uint64_t i = 2; i <= 100 && !second; i++) {
        char p[256];
        seg_path(&x, i, p, sizeof p);
        if (io_exists(x.fs, p) == 1)
            second = i;
    }
    REQUIRE(second > 0);
    char p[256];
    seg_path(&x, second, p, sizeof p);
    REQUIRE(io_unlink(x.fs, p) == 0);
    struct journal_recovery rec;
    CHECK(journal_open(x.fs, x.dir, &o, &j, &rec) == ERR_CORRUPT);
    CHECK(strstr(rec.detail, "gap") != NULL);
    fx_done(&x);
}

TEST(journal_tools_dump_and_check)
{
    struct fx x;
    REQUIRE(fx_init(&x, false, 12));
    REQUIRE(build_one_segment(&x, 5) > 0);
    char path[256];
    seg_path(&x, 1, path, sizeof path);
    char *buf = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&buf, &len);
    REQUIRE(m);
    CHECK(journal_dump_segment(x.fs, path, m) == 0);
    CHECK(journal_check_dir(x.fs, x.dir, false, m) == 0);
    fclose(m);
    int lines = 0;
    for (char *q = buf; (q = strstr(q, "\nindex=")) != NULL; q++)
        lines++;
    CHECK_EQ_INT(lines, 5);
    CHECK(strstr(buf, "entries 1..5") != NULL);
    free(buf);
    fx_done(&x);
}

/* ---------------------------------------------------------------------------------------------- */
/* Errors: sticky sync failure, ENOSPC                                                            */

TEST(journal_sync_failure_is_sticky)
{
    struct fx x;
    REQUIRE(fx_init(&x, false, 13));
    struct journal *j;
    REQUIRE(journal_open(x.fs, x.dir, NULL, &j, NULL) == 0);
    REQUIRE(append_range(j, 1, 10) == 0);
    REQUIRE(journal_sync_now(j) == 0);
    REQUIRE(append_range(j, 11, 20) == 0);
    REQUIRE(journal_flush(j) == 0);
    sim_fs_fail_nth(x.sim, SIM_OP_SYNC, 1, ERR_IO);
    struct journal_sync *tok;
    REQUIRE(journal_sync_prepare(j, &tok) == 0 && tok);
    CHECK(journal_sync_done(j, tok, journal_sync_run(tok)) == ERR_IO);
    CHECK(journal_error(j) == ERR_IO);
    CHECK(journal_durable_index(j) == 10);
    CHECK(journal_append(j, 9, 21, 0, SLICE_LIT("x")) == ERR_IO);
    CHECK(journal_flush(j) == ERR_IO);
    CHECK(journal_sync_prepare(j, &tok) == ERR_IO);
    CHECK(journal_truncate_suffix(j, 5) == ERR_IO);
    CHECK(journal_durable_index(j) == 10);
    /* Durable entries still read back; the sim dropped the unsynced ones (fsyncgate), and
     * reading them is caught by the CRC rather than returning garbage. */
    struct journal_iter *it;
    REQUIRE(journal_iter_open(j, 1, &it) == 0);
    uint64_t term, index;
    uint8_t type;
    struct slice p;
    for (uint64_t i = 1; i <= 10; i++)
        CHECK(journal_iter_next(it, &term, &index, &type, &p) == 1 && index == i);
    CHECK(journal_iter_next(it, &term, &index, &type, &p) == ERR_CORRUPT);
    journal_iter_close(it);
    journal_close(j);
    /* After power loss the durable prefix is intact. */
    sim_fs_crash(x.sim, SIM_CRASH_RANDOM);
    REQUIRE(journal_open(x.fs, x.dir, NULL, &j, NULL) == 0);
    CHECK(journal_last_index(j) >= 10);
    CHECK(verify_range(j, 1, journal_last_index(j)));
    journal_close(j);
    fx_done(&x);
}

TEST(journal_dir_sync_failure_is_sticky)
{
    struct fx x;
    REQUIRE(fx_init(&x, false, 14));
    struct journal *j;
    REQUIRE(journal_open(x.fs, x.dir, NULL, &j, NULL) == 0);
    REQUIRE(append_range(j, 1, 3) == 0);
    sim_fs_fail_nth(x.sim, SIM_OP_SYNC_DIR, 1, ERR_IO);
    CHECK(journal_sync_now(j) == ERR_IO);
    CHECK(journal_durable_index(j) == 0);
    CHECK(journal_error(j) == ERR_IO);
    journal_close(j);
    fx_done(&x);
}

TEST(journal_enospc_is_reported_and_retryable)
{
    struct fx x;
    REQUIRE(fx_init(&x, false, 15));
    struct journal *j;
    REQUIRE(journal_open(x.fs, x.dir, NULL, &j, NULL) == 0);
    REQUIRE(append_range(j, 1, 10) == 0);
    REQUIRE(journal_sync_now(j) == 0);
    sim_fs_set_capacity(x.sim, sim_fs_used(x.sim) + 100);
    REQUIRE(append_range(j, 11, 30) == 0);
    CHECK(journal_flush(j) == ERR_NOSPACE);
    CHECK(journal_sync_now(j) == ERR_NOSPACE);
    CHECK(journal_flushed_index(j) == 10);
    CHECK(journal_durable_index(j) == 10);
    CHECK(journal_error(j) == 0);
    sim_fs_set_capacity(x.sim, 0);
    REQUIRE(journal_sync_now(j) == 0);
    CHECK(journal_durable_index(j) == 30);
    journal_close(j);
    sim_fs_crash(x.sim, SIM_CRASH_DROP_UNSYNCED);
    REQUIRE(journal_open(x.fs, x.dir, NULL, &j, NULL) == 0);
    CHECK(verify_range(j, 1, 30));
    journal_close(j);
    fx_done(&x);
}

/* fsync on a second thread while the core thread keeps appending and flushing. */
struct sync_arg {
    struct journal_sync *tok;
    int rc;
};

static void *sync_thread(void *p)
{
    struct sync_arg *a = p;
    a->rc = journal_sync_run(a->tok);
    return NULL;
}

TEST(journal_sync_on_another_thread_real_fs)
{
    struct fx x;
    REQUIRE(fx_init(&x, true, 0));
    struct journal *j;
    struct journal_opts o = {.segment_bytes = 8192};
    REQUIRE(journal_open(x.fs, x.dir, &o, &j, NULL) == 0);
    uint64_t next = 1;
    for (int round = 0; round < 30; round++) {
        REQUIRE(append_range(j, next, next + 9) == 0);
        next += 10;
        REQUIRE(journal_flush(j) == 0);
        struct sync_arg a = {0};
        REQUIRE(journal_sync_prepare(j, &a.tok) == 0);
        pthread_t th;
        if (a.tok)
            REQUIRE(pthread_create(&th, NULL, sync_thread, &a) == 0);
        REQUIRE(append_range(j, next, next + 4) == 0);
        next += 5;
        REQUIRE(journal_flush(j) == 0);
        if (a.tok) {
            pthread_join(th, NULL);
            REQUIRE(journal_sync_done(j, a.tok, a.rc) == 0);
        }
    }
    REQUIRE(journal_sync_now(j) == 0);
    CHECK(journal_durable_index(j) == next - 1);
    journal_close(j);
    REQUIRE(journal_open(x.fs, x.dir, &o, &j, NULL) == 0);
    CHECK(verify_range(j, 1, next - 1));
    journal_close(j);
    fx_done(&x);
}

/* ---------------------------------------------------------------------------------------------- */
/* Seeded crash simulation                                                                        */

#define SIM_MAX_INDEX 4096

struct model {
    uint64_t term[SIM_MAX_INDEX + 1];
    uint32_t len[SIM_MAX_INDEX + 1];
    uint32_t version[SIM_MAX_INDEX + 1];
    uint64_t rng;
};

static uint64_t mrand(struct model *m)
{
    m->rng ^= m->rng << 13;
    m->rng ^= m->rng >> 7;
    m->rng ^= m->rng << 17;
    return m->rng;
}

static uint64_t mbelow(struct model *m, uint64_t n) { return n ? mrand(m) % n : 0; }

/* Check the reopened journal against the model; returns false on any lost or altered entry. */
static bool sim_verify(struct journal *j, struct model *m, uint64_t durable, uint64_t seed)
{
    uint64_t last = journal_last_index(j), first = journal_first_index(j);
    if (last < durable) {
        fprintf(stderr, "seed %llu: last %llu < durable %llu\n", (unsigned long long)seed,
                (unsigned long long)last, (unsigned long long)durable);
        return false;
    }
    if (!first)
        return durable == 0;
    struct journal_iter *it;
    if (journal_iter_open(j, first, &it))
        return false;
    uint64_t want = first, term, index;
    uint8_t type;
    struct slice p;
    int rc = 0;
    bool ok = true;
    while ((rc = journal_iter_next(it, &term, &index, &type, &p)) == 1) {
        if (index != want || index > SIM_MAX_INDEX || term != m->term[index] ||
            !payload_ok(p, index, m->len[index], m->version[index])) {
            fprintf(stderr, "seed %llu: entry %llu differs\n", (unsigned long long)seed,
                    (unsigned long long)index);
            ok = false;
            break;
        }
        want++;
    }
    journal_iter_close(it);
    return ok && rc == 0 && want == last + 1;
}

/* One run: random appends (sizes 0..1500, sometimes larger than a segment), flush/sync cycles
 * with the crash landing between any two steps, sync EIO, ENOSPC, trims and truncations; two
 * crash/reopen rounds. Returns false on a durability or integrity violation. */
#define SIM_FAIL(n)                                                                                \
    do {                                                                                           \
        if (getenv("JSIM_DEBUG"))                                                                  \
            fprintf(stderr, "seed %llu: check %d failed\n", (unsigned long long)seed, n);         \
        ok = false;                                                                                \
    } while (0)

static bool sim_run(uint64_t seed, enum sim_crash_mode mode, bool *corrupt_ok)
{
    struct model *m = xcalloc(1, sizeof *m);
    m->rng = seed * 2654435761u + 1;
    struct fx x;
    bool ok = fx_init(&x, false, seed);
    /* Odd seeds also exercise preallocated segments: spares made at random moments. */
    struct journal_opts o = {.segment_bytes = 4096, .use_spare = seed % 2 == 1};
    uint64_t durable = 0;
    uint64_t version = 0;
    for (int round = 0; round < 2 && ok; round++) {
        struct journal *j;
        struct journal_recovery rec;
        int rc = journal_open(x.fs, x.dir, &o, &j, &rec);
        if (rc == ERR_CORRUPT && corrupt_ok) {
            *corrupt_ok = true;
            break;
        }
        if (rc) {
            fprintf(stderr, "seed %llu round %d: open: %s (%s)\n", (unsigned long long)seed,
                    round, err_message(rc), rec.detail);
            SIM_FAIL(1);
            break;
        }
        if (!sim_verify(j, m, durable, seed)) {
            SIM_FAIL(2);
            journal_close(j);
            break;
        }
        durable = journal_last_index(j);
        struct journal_sync *tok = NULL;
        int steps = 5 + (int)mbelow(m, 40);
        bool failed_sync = false;
        for (int s = 0; s < steps; s++) {
            if (o.use_spare && mbelow(m, 3) == 0)
                journal_make_spare(x.fs, x.dir, o.segment_bytes); /* may fail under ENOSPC */
            uint64_t r = mbelow(m, 100);
            uint64_t last = journal_last_index(j);
            if (getenv("JSIM_DEBUG"))
                fprintf(stderr, "r%d s%d op%llu last=%llu flushed=%llu durable=%llu/%llu err=%d\n",
                        round, s, (unsigned long long)r, (unsigned long long)last,
                        (unsigned long long)journal_flushed_index(j),
                        (unsigned long long)journal_durable_index(j),
                        (unsigned long long)durable, journal_error(j));
            if (r < 45) {
                int k = 1 + (int)mbelow(m, 6);
                for (int e = 0; e < k && last < SIM_MAX_INDEX; e++) {
                    uint64_t idx = ++last;
                    uint32_t len = (uint32_t)(mbelow(m, 20) == 0 ? 4000 + mbelow(m, 5000)
                                                                 : mbelow(m, 1500));
                    uint64_t term = journal_last_term(j) + (mbelow(m, 10) == 0);
                    if (term == 0)
                        term = 1;
                    if (append_gen(j, term, idx, len, version) != 0) {
                        last--;
                        break;
                    }
                    m->term[idx] = term;
                    m->len[idx] = len;
                    m->version[idx] = (uint32_t)version;
                }
            } else if (r < 60) {
                rc = journal_flush(j);
                if (rc && rc != ERR_NOSPACE && rc != journal_error(j))
                    SIM_FAIL(3);
            } else if (r < 75 && !tok) {
                rc = journal_sync_prepare(j, &tok);
                if (rc)
                    tok = NULL;
            } else if (r < 90 && tok) {
                uint64_t before = journal_durable_index(j);
                rc = journal_sync_done(j, tok, journal_sync_run(tok));
                tok = NULL;
                if (rc) {
                    failed_sync = true;
                    if (journal_durable_index(j) != before || !journal_error(j))
                        SIM_FAIL(4);
                }
                if (!failed_sync)
                    durable = journal_durable_index(j);
            } else if (r < 93) {
                sim_fs_fail_nth(x.sim, (enum sim_op)(mbelow(m, 2) ? SIM_OP_SYNC : SIM_OP_PWRITE),
                                1 + (long)mbelow(m, 3), ERR_IO);
            } else if (r < 96) {
                sim_fs_set_capacity(x.sim, mbelow(m, 2) ? sim_fs_used(x.sim) + mbelow(m, 3000)
                                                        : 0);
            } else if (r < 98 && !tok) {
                uint64_t first = journal_first_index(j);
                if (first && last > first)
                    journal_trim_prefix(j, first + mbelow(m, last - first));
            } else if (!tok) {
                uint64_t first = journal_first_index(j);
                if (first && last >= first) {
                    uint64_t to = first - 1 + mbelow(m, last - first + 2);
                    version++;
                    /* Entries above `to` may go even if the truncation fails half-way. */
                    if (durable > to)
                        durable = to;
                    rc = journal_truncate_suffix(j, to);
                    if (rc == 0 && to < last) {
                        durable = to;
                        if (journal_durable_index(j) != to || journal_last_index(j) != to)
                            SIM_FAIL(5);
                    } else if (rc && rc != ERR_NOSPACE && !journal_error(j)) {
                        SIM_FAIL(6);
                    }
                }
            }
            if (journal_error(j))
                failed_sync = true;
            if (durable > journal_durable_index(j) && !failed_sync)
                SIM_FAIL(7);
        }
        /* Power loss, possibly with a sync token between prepare and done. */
        sim_fs_fail_nth(x.sim, SIM_OP_SYNC, 0, 0);
        sim_fs_fail_nth(x.sim, SIM_OP_PWRITE, 0, 0);
        sim_fs_set_capacity(x.sim, 0);
        sim_fs_crash(x.sim, mode);
        if (tok)
            journal_sync_done(j, tok, journal_sync_run(tok)); /* stale handles: fails */
        journal_close(j);
        if (sim_fs_open_handles(x.sim) != 0)
            SIM_FAIL(8);
    }
    fx_done(&x);
    xfree(m);
    return ok;
}

TEST(journal_sim_random_crashes)
{
    int bad = 0;
    for (uint64_t seed = 1; seed <= 4000 && bad < 5; seed++) {
        enum sim_crash_mode mode = seed % 10 == 0   ? SIM_CRASH_DROP_UNSYNCED
                                   : seed % 10 == 1 ? SIM_CRASH_KEEP_ALL
                                                    : SIM_CRASH_RANDOM;
        if (!sim_run(seed, mode, NULL)) {
            fprintf(stderr, "    journal sim: seed %llu failed\n", (unsigned long long)seed);
            bad++;
        }
    }
    CHECK_EQ_INT(bad, 0);
}

/* With writes reordered by the crash, a later unsynced write can survive an earlier lost one.
 * The journal cannot tell that from bit rot, so it may refuse to open (ERR_CORRUPT), but it must
 * never return wrong data or lose a durable entry when it does open. */
TEST(journal_sim_unordered_crashes_never_wrong)
{
    int bad = 0, refused = 0;
    for (uint64_t seed = 1; seed <= 1000; seed++) {
        bool corrupt = false;
        if (!sim_run(seed, SIM_CRASH_RANDOM_UNORDERED, &corrupt))
            bad++;
        refused += corrupt;
    }
    CHECK_EQ_INT(bad, 0);
    CHECK(refused < 1000);
}

/* Preallocated segments: a roll uses the spare (same name, zero tail), reopening treats the zero
 * tail as unused space (no truncation, no report), entries keep working, and a never-written
 * spare renamed into place is dropped as an empty last segment. */
TEST(journal_spare_segments)
{
    struct fx x;
    REQUIRE(fx_init(&x, false, 7));
    struct journal_opts o = {.segment_bytes = 4096, .use_spare = true};
    struct journal *j;
    struct journal_recovery rec;
    REQUIRE(journal_open(x.fs, x.dir, &o, &j, &rec) == 0);
    CHECK(journal_make_spare(x.fs, x.dir, 4096) == 0);
    CHECK(journal_make_spare(x.fs, x.dir, 4096) == 1); /* already there */
    REQUIRE(append_range(j, 1, 10) == 0);
    REQUIRE(journal_sync_now(j) == 0);
    char spare[256];
    snprintf(spare, sizeof spare, "%s/spare", x.dir);
    CHECK(io_exists(x.fs, spare) == 0); /* consumed by the first segment */
    char p1[256];
    seg_path(&x, 1, p1, sizeof p1);
    struct io_file *f;
    uint64_t size = 0;
    REQUIRE(io_open(x.fs, p1, IO_RDONLY, &f) == 0);
    CHECK(io_size(f, &size) == 0 && size == 4096); /* preallocated length */
    io_close(f);
    /* more entries roll into new segments, each from a new spare */
    for (uint64_t i = 11; i <= 60; i++) {
        journal_make_spare(x.fs, x.dir, 4096);
        REQUIRE(append_range(j, i, i) == 0);
        REQUIRE(journal_sync_now(j) == 0);
    }
    CHECK(count_segs(&x) >= 3);
    journal_close(j);
    REQUIRE(journal_open(x.fs, x.dir, &o, &j, &rec) == 0);
    CHECK(rec.truncated_bytes == 0);
    CHECK(verify_range(j, 1, 60));
    REQUIRE(append_range(j, 61, 70) == 0);
    REQUIRE(journal_sync_now(j) == 0);
    CHECK(verify_range(j, 1, 70));
    journal_close(j);
    CHECK(journal_check_dir(x.fs, x.dir, false, NULL) == 0);
    /* a crash right after the rename: the next segment is all zeros, header included */
    uint64_t next = 71;
    char pz[256];
    seg_path(&x, next, pz, sizeof pz);
    REQUIRE(journal_make_spare(x.fs, x.dir, 4096) == 0);
    REQUIRE(io_rename(x.fs, spare, pz) == 0);
    REQUIRE(io_sync_dir(x.fs, x.dir) == 0);
    REQUIRE(journal_open(x.fs, x.dir, &o, &j, &rec) == 0);
    CHECK(io_exists(x.fs, pz) == 0); /* dropped as an empty last segment */
    CHECK(verify_range(j, 1, 70));
    journal_close(j);
    fx_done(&x);
}

/* Issue #20: a spare that journal_make_spare reported made survives a power loss right after
 * (its rename is dir-synced), and no spare.tmp is left to redo. */
TEST(journal_spare_survives_power_loss)
{
    struct fx x;
    REQUIRE(fx_init(&x, false, 21));
    struct journal_opts o = {.segment_bytes = 4096, .use_spare = true};
    struct journal *j;
    struct journal_recovery rec;
    REQUIRE(journal_open(x.fs, x.dir, &o, &j, &rec) == 0);
    REQUIRE(append_range(j, 1, 3) == 0);
    REQUIRE(journal_sync_now(j) == 0);
    REQUIRE(journal_make_spare(x.fs, x.dir, 4096) == 0);
    journal_close(j);
    sim_fs_crash(x.sim, SIM_CRASH_DROP_UNSYNCED);
    char spare[256], tmp[256];
    snprintf(spare, sizeof spare, "%s/spare", x.dir);
    snprintf(tmp, sizeof tmp, "%s/spare.tmp", x.dir);
    CHECK(io_exists(x.fs, spare) == 1);
    CHECK(io_exists(x.fs, tmp) == 0);
    CHECK(journal_make_spare(x.fs, x.dir, 4096) == 1); /* nothing to redo */
    REQUIRE(journal_open(x.fs, x.dir, &o, &j, &rec) == 0);
    CHECK(verify_range(j, 1, 3));
    journal_close(j);
    fx_done(&x);
}

/* test_power_loss_cycles flake "entry crc mismatch; valid entry N follows": a roll renamed the
 * spare into place and wrote entries into it; a power loss undid the rename (its directory was
 * not yet fsynced) but kept the written pages, so `spare` came back holding a header and entries.
 * The next roll reused it, new entries overwrote only a prefix of the stale ones, and the restart
 * after that found CRC-valid stale entries behind the new tail and refused to open. Fixed by
 * making the rename durable before anything is written into the file (create_segment). */
TEST(journal_spare_rename_undone_keeps_no_stale_entries)
{
    struct fx x;
    REQUIRE(fx_init(&x, false, 23));
    struct journal_opts o = {.segment_bytes = 4096, .use_spare = true};
    struct journal *j;
    struct journal_recovery rec;
    char spare[256];
    snprintf(spare, sizeof spare, "%s/spare", x.dir);
    REQUIRE(journal_open(x.fs, x.dir, &o, &j, &rec) == 0);
    REQUIRE(append_range(j, 1, 10) == 0);
    REQUIRE(journal_sync_now(j) == 0); /* segment 1, created empty (no spare yet) */
    REQUIRE(journal_make_spare(x.fs, x.dir, 4096) == 0);
    REQUIRE(append_range(j, 11, 80) == 0); /* more than segment 1 holds */
    REQUIRE(journal_flush(j) == 0);        /* fills segment 1, stops at the boundary */
    struct journal_sync *tok = NULL;
    REQUIRE(journal_sync_prepare(j, &tok) == 0 && tok);
    REQUIRE(journal_sync_done(j, tok, journal_sync_run(tok)) == 0);
    uint64_t k = journal_durable_index(j) + 1; /* first index of the next segment */
    REQUIRE(journal_flush(j) == 0);            /* the roll: spare -> k.seg, entries written */
    CHECK(io_exists(x.fs, spare) == 0);
    CHECK(journal_flushed_index(j) > k + 10);
    journal_close(j);
    /* Power loss: the written pages reached the disk, the unsynced names did not. */
    sim_fs_crash(x.sim, SIM_CRASH_DATA_NOT_NAMES);
    if (io_exists(x.fs, spare) == 1) { /* before the fix: the spare is back, not all zeros */
        uint8_t *d = NULL;
        size_t n = 0;
        REQUIRE(sim_fs_read_file(x.sim, spare, &d, &n) == 0);
        size_t nz = 0;
        for (size_t i = 0; i < n; i++)
            nz += d[i] != 0;
        CHECK(nz == 0);
        xfree(d);
    }
    REQUIRE(journal_open(x.fs, x.dir, &o, &j, &rec) == 0);
    uint64_t last = journal_last_index(j);
    CHECK(last >= k - 1);
    CHECK(verify_range(j, 1, last));
    /* The next roll (reusing the spare if it is back) with entries of other sizes, synced. */
    if (io_exists(x.fs, spare) == 0)
        REQUIRE(journal_make_spare(x.fs, x.dir, 4096) == 0);
    uint64_t from = last + 1;
    while (journal_last_index(j) < from + 3) {
        uint64_t i = journal_last_index(j) + 1;
        REQUIRE(append_gen(j, term_of(i), i, 600, 1) == 0);
    }
    REQUIRE(journal_sync_now(j) == 0);
    uint64_t want = journal_last_index(j);
    journal_close(j);
    /* A plain restart must open and hold exactly what was written. */
    int rc = journal_open(x.fs, x.dir, &o, &j, &rec);
    CHECK_EQ_INT(rc, 0);
    if (rc == 0) {
        CHECK(journal_last_index(j) == want);
        struct journal_iter *it;
        REQUIRE(journal_iter_open(j, 1, &it) == 0);
        uint64_t term, index, seen = 0;
        uint8_t type;
        struct slice pl;
        while (journal_iter_next(it, &term, &index, &type, &pl) == 1) {
            seen++;
            CHECK(index == seen && term == term_of(index));
            CHECK(payload_ok(pl, index, index <= last ? size_of(index) : 600, index > last));
        }
        journal_iter_close(it);
        CHECK(seen == want);
        journal_close(j);
    } else {
        fprintf(stderr, "    reopen: %s\n", rec.detail);
    }
    fx_done(&x);
}

/* Zeros followed by a valid entry are still corruption (the zero fast path must not skip it). */
TEST(journal_zero_gap_then_entry_is_corruption)
{
    struct fx x;
    REQUIRE(fx_init(&x, false, 9));
    struct journal_opts o = {.segment_bytes = 1 << 20};
    struct journal *j;
    struct journal_recovery rec;
    REQUIRE(journal_open(x.fs, x.dir, &o, &j, &rec) == 0);
    REQUIRE(append_range(j, 1, 30) == 0);
    REQUIRE(journal_sync_now(j) == 0);
    journal_close(j);
    char p1[256];
    seg_path(&x, 1, p1, sizeof p1);
    struct io_file *f;
    REQUIRE(io_open(x.fs, p1, IO_RDWR, &f) == 0);
    uint64_t size = 0;
    REQUIRE(io_size(f, &size) == 0);
    /* zero out the bytes of entries 10..12 (approximately: a 600-byte hole in the middle) */
    static const uint8_t zeros[600];
    REQUIRE(io_pwrite(f, zeros, sizeof zeros, size / 3) == 0);
    REQUIRE(io_sync(f) == 0);
    io_close(f);
    CHECK(journal_open(x.fs, x.dir, &o, &j, &rec) == ERR_CORRUPT);
    fx_done(&x);
}
