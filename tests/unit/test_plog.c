/* test_plog.c -- partition logs on the real file system (a temp dir under /tmp, removed by each
 * test) and, for crash recovery, on the simulated one (tests/sim/sim_fs.h). */
#include "harness.h"

#include "base/assert.h"
#include "base/buf.h"
#include "base/crc32c.h"
#include "base/err.h"
#include "base/log.h"
#include "broker/plog.h"
#include "broker/recbatch.h"
#include "../sim/sim_fs.h"

#include <dirent.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- fixtures ---------------------------------------------------------------------------- */

/* Damage tests make the plog log warnings on purpose; keep the test output readable. */
static enum log_level saved_level;
static bool quieted;
static void quiet(void)
{
    if (!quieted)
        saved_level = log_level_min;
    quieted = true;
    log_level_min = LOG_OFF;
}
static void unquiet(void)
{
    if (quieted)
        log_level_min = saved_level;
    quieted = false;
}


struct tdir {
    char root[64];
    char dir[96];
};

static void tdir_make(struct tdir *t)
{
    strcpy(t->root, "/tmp/plog_test_XXXXXX");
    ASSERT(mkdtemp(t->root) != NULL);
    snprintf(t->dir, sizeof t->dir, "%s/p", t->root);
}

static void rm_tree(const char *path)
{
    DIR *d = opendir(path);
    if (d) {
        struct dirent *de;
        while ((de = readdir(d)) != NULL) {
            if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
                continue;
            char sub[512];
            snprintf(sub, sizeof sub, "%s/%s", path, de->d_name);
            rm_tree(sub);
        }
        closedir(d);
        rmdir(path);
    } else {
        unlink(path);
    }
}

static void tdir_remove(struct tdir *t)
{
    rm_tree(t->root);
    unquiet();
}

static void seg_file(const struct tdir *t, uint64_t base, const char *ext, char *out, size_t cap)
{
    snprintf(out, cap, "%s/%020" PRIu64 ".%s", t->dir, base, ext);
}

static long file_size(const char *path)
{
    struct stat stt;
    return stat(path, &stt) == 0 ? (long)stt.st_size : -1;
}

static uint8_t *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc((size_t)n + 1);
    *len = fread(b, 1, (size_t)n, f);
    fclose(f);
    return b;
}

static void spit(const char *path, const uint8_t *b, size_t n)
{
    FILE *f = fopen(path, "wb");
    ASSERT(f);
    if (n)
        ASSERT(fwrite(b, 1, n, f) == n);
    fclose(f);
}

/* Total bytes of the regular files in dir; the number of segment files in *nseg. */
static long dir_bytes(const char *dir, int *nlog)
{
    DIR *d = opendir(dir);
    long total = 0;
    int n = 0;
    struct dirent *de;
    while (d && (de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        char p[512];
        snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
        total += file_size(p);
        n += strstr(de->d_name, ".log") != NULL;
    }
    if (d)
        closedir(d);
    if (nlog)
        *nlog = n;
    return total;
}

/* Deterministic content per offset: the value encodes the offset, keys and headers vary. */
struct recdata {
    uint8_t key[8], value[64], hval[24];
    struct plog_header hdr;
};

static void make_record(uint64_t off, struct recdata *d, struct plog_record *r)
{
    size_t vlen = 8 + off % 50;
    for (size_t i = 0; i < vlen; i++)
        d->value[i] = (uint8_t)(off * 31 + i);
    put_be64(d->value, off);
    put_be64(d->key, off * 7);
    int hn = snprintf((char *)d->hval, sizeof d->hval, "h%" PRIu64, off);
    d->hdr = (struct plog_header){SLICE_LIT("trace"), slice_of(d->hval, (size_t)hn)};
    *r = (struct plog_record){.timestamp_ms = 1000 + (int64_t)off, .has_key = off % 3 != 0,
                              .key = slice_of(d->key, 8), .value = slice_of(d->value, vlen),
                              .headers = &d->hdr, .header_count = off % 5 == 0};
}

static bool record_ok(const struct plog_record *r)
{
    struct recdata d;
    struct plog_record w;
    make_record(r->offset, &d, &w);
    if (r->timestamp_ms != w.timestamp_ms || r->has_key != w.has_key ||
        (w.has_key && !slice_eq(r->key, w.key)) || !slice_eq(r->value, w.value) ||
        r->header_count != w.header_count)
        return false;
    return w.header_count == 0 || (slice_eq(r->headers[0].key, w.headers[0].key) &&
                                   slice_eq(r->headers[0].value, w.headers[0].value));
}

/* Append records [from, from + n) as one batch. */
static int append_range(struct plog *p, uint64_t from, size_t n)
{
    struct recdata *d = malloc(n * sizeof *d);
    struct plog_record *r = malloc(n * sizeof *r);
    for (size_t i = 0; i < n; i++)
        make_record(from + i, &d[i], &r[i]);
    int rc = plog_append(p, r, n);
    free(d);
    free(r);
    return rc;
}

/* Append records up to offset `to` in batches of 1..max_batch (deterministic sizes). */
static int append_to(struct plog *p, uint64_t to, size_t max_batch)
{
    while (plog_end_offset(p) < to) {
        uint64_t e = plog_end_offset(p);
        size_t n = 1 + (size_t)(e * 7919 % max_batch);
        if (e + n > to)
            n = (size_t)(to - e);
        int rc = append_range(p, e, n);
        if (rc)
            return rc;
    }
    return 0;
}

struct collect {
    uint64_t expect;
    size_t n, bad;
    size_t stop_after; /* 0 = never */
};

static int collect_fn(void *ctx, const struct plog_record *r)
{
    struct collect *c = ctx;
    if (r->offset != c->expect || !record_ok(r))
        c->bad++;
    c->expect = r->offset + 1;
    c->n++;
    return c->stop_after && c->n >= c->stop_after;
}

/* Read [from, hw) completely in chunks; true if every record is right and contiguous. */
static bool read_all_ok(struct plog *p, uint64_t from)
{
    uint64_t hw = plog_high_watermark(p);
    struct collect c = {.expect = from};
    struct plog_read_result res;
    while (c.expect < hw) {
        if (plog_read(p, c.expect, 1000, SIZE_MAX, collect_fn, &c, &res) != 0 || res.count == 0)
            return false;
    }
    return c.bad == 0 && c.expect == hw;
}

static const struct plog_opts small_opts = {.segment_bytes = 4096, .index_interval_bytes = 256};

/* ---- tests ------------------------------------------------------------------------------- */

TEST(plog_append_read_every_offset_across_rolls)
{
    struct tdir t;
    tdir_make(&t);
    struct plog *p;
    REQUIRE(plog_open(io_posix_fs(), t.dir, &small_opts, &p) == 0);
    CHECK(plog_end_offset(p) == 0 && plog_start_offset(p) == 0 && plog_high_watermark(p) == 0);
    const uint64_t n = 1500;
    REQUIRE(append_to(p, n, 17) == 0);
    CHECK(plog_end_offset(p) == n);
    /* Nothing visible before publish. */
    struct plog_read_result res;
    struct collect c = {0};
    CHECK(plog_read(p, 0, 10, SIZE_MAX, collect_fn, &c, &res) == 0 && res.count == 0 && c.n == 0);
    plog_publish(p, n);
    CHECK(plog_high_watermark(p) == n);
    struct plog_stats stt;
    plog_stats(p, &stt);
    CHECK(stt.segments > 10);
    CHECK(stt.records == n && stt.end_offset == n && stt.high_watermark == n);
    for (uint64_t from = 0; from <= n; from++) {
        struct collect cc = {.expect = from};
        int rc = plog_read(p, from, 37, SIZE_MAX, collect_fn, &cc, &res);
        size_t want = n - from < 37 ? (size_t)(n - from) : 37;
        CHECK(rc == 0);
        CHECK(res.count == want && cc.n == want && cc.bad == 0);
        CHECK(res.next_offset == from + want);
        CHECK(res.more == (from + want < n));
        CHECK(!res.from_adjusted);
    }
    CHECK(read_all_ok(p, 0));
    /* A read in one call across every segment. */
    c = (struct collect){0};
    CHECK(plog_read(p, 0, SIZE_MAX, SIZE_MAX, collect_fn, &c, &res) == 0);
    CHECK(res.count == n && c.bad == 0 && !res.more);
    plog_close(p);
    REQUIRE(plog_open(io_posix_fs(), t.dir, &small_opts, &p) == 0);
    CHECK(plog_end_offset(p) == n && plog_high_watermark(p) == n);
    CHECK(read_all_ok(p, 0));
    plog_close(p);
    tdir_remove(&t);
}

TEST(plog_publish_bounds_reads_inside_a_batch)
{
    struct tdir t;
    tdir_make(&t);
    struct plog *p;
    REQUIRE(plog_open(io_posix_fs(), t.dir, NULL, &p) == 0);
    REQUIRE(append_range(p, 0, 10) == 0);
    plog_publish(p, 4);
    struct plog_read_result res;
    struct collect c = {0};
    CHECK(plog_read(p, 0, 100, SIZE_MAX, collect_fn, &c, &res) == 0);
    CHECK(res.count == 4 && res.next_offset == 4 && !res.more && c.bad == 0);
    CHECK(plog_read(p, 4, 100, SIZE_MAX, collect_fn, &c, &res) == 0 && res.count == 0);
    plog_publish(p, 2); /* never lowers */
    CHECK(plog_high_watermark(p) == 4);
    plog_close(p);
    tdir_remove(&t);
}

TEST(plog_read_limits_and_more)
{
    struct tdir t;
    tdir_make(&t);
    struct plog *p;
    REQUIRE(plog_open(io_posix_fs(), t.dir, &small_opts, &p) == 0);
    REQUIRE(append_to(p, 100, 9) == 0);
    /* One record far larger than any max_bytes. */
    static uint8_t big[100000];
    memset(big, 'b', sizeof big);
    struct plog_record br = {.timestamp_ms = 5, .value = slice_of(big, sizeof big)};
    REQUIRE(plog_append(p, &br, 1) == 0);
    plog_publish(p, plog_end_offset(p));
    struct plog_read_result res;
    struct collect c = {.expect = 10};
    /* Record sizes: key 8 (when present) + value 8 + off % 50 + header bytes. */
    size_t want_bytes = 0, k = 0;
    for (uint64_t off = 10; off < 20; off++) {
        struct recdata d;
        struct plog_record r;
        make_record(off, &d, &r);
        size_t b = (r.has_key ? 8 : 0) + r.value.len +
                   (r.header_count ? r.headers[0].key.len + r.headers[0].value.len : 0);
        if (off < 15) {
            want_bytes += b;
            k++;
        }
    }
    CHECK(plog_read(p, 10, 1000, want_bytes, collect_fn, &c, &res) == 0);
    CHECK(res.count == k && res.more && res.next_offset == 10 + k && c.bad == 0);
    c = (struct collect){.expect = 10};
    CHECK(plog_read(p, 10, 1000, want_bytes - 1, collect_fn, &c, &res) == 0);
    CHECK(res.count == k - 1 && res.more);
    /* max_bytes 0 still returns one record. */
    c = (struct collect){.expect = 50};
    CHECK(plog_read(p, 50, 1000, 0, collect_fn, &c, &res) == 0);
    CHECK(res.count == 1 && res.more && c.bad == 0);
    /* max_records. */
    c = (struct collect){.expect = 0};
    CHECK(plog_read(p, 0, 7, SIZE_MAX, collect_fn, &c, &res) == 0);
    CHECK(res.count == 7 && res.more && res.next_offset == 7);
    CHECK(plog_read(p, 0, 0, SIZE_MAX, collect_fn, &c, &res) == 0 && res.count == 0 && res.more);
    /* The visitor stops the read; the record it saw counts. */
    c = (struct collect){.expect = 20, .stop_after = 3};
    CHECK(plog_read(p, 20, 1000, SIZE_MAX, collect_fn, &c, &res) == 0);
    CHECK(res.count == 3 && res.next_offset == 23 && res.more);
    /* The large record alone. */
    c = (struct collect){.expect = 100};
    CHECK(plog_read(p, 99, 1000, 10, NULL, NULL, &res) == 0);
    CHECK(res.count == 1 && res.next_offset == 100 && res.more);
    CHECK(plog_read(p, 100, 1000, 10, NULL, NULL, &res) == 0);
    CHECK(res.count == 1 && res.next_offset == 101 && !res.more);
    /* Past the end: nothing. */
    CHECK(plog_read(p, 500, 10, SIZE_MAX, NULL, NULL, &res) == 0);
    CHECK(res.count == 0 && res.next_offset == 500 && !res.more);
    CHECK(plog_append(p, NULL, 0) == ERR_INVALID);
    plog_close(p);
    tdir_remove(&t);
}

TEST(plog_reopen_after_tail_torn_at_every_byte)
{
    struct tdir t;
    tdir_make(&t);
    quiet();
    struct plog *p;
    REQUIRE(plog_open(io_posix_fs(), t.dir, NULL, &p) == 0);
    REQUIRE(append_to(p, 40, 6) == 0);
    uint64_t last_base = plog_end_offset(p);
    REQUIRE(append_range(p, last_base, 5) == 0);
    uint64_t full_end = plog_end_offset(p);
    plog_close(p);
    char log[256], idx[256];
    seg_file(&t, 0, "log", log, sizeof log);
    seg_file(&t, 0, "idx", idx, sizeof idx);
    size_t len, ilen;
    uint8_t *orig = slurp(log, &len);
    uint8_t *iorig = slurp(idx, &ilen);
    REQUIRE(orig);
    /* Where the last batch starts: scan the headers. */
    size_t pos = 0, last_pos = 0;
    while (pos < len) {
        struct recbatch_info h;
        REQUIRE(recbatch_peek(orig + pos, len - pos, &h) == 0);
        last_pos = pos;
        pos += h.batch_bytes;
    }
    uint8_t *garbled = malloc(len);
    for (size_t cut = last_pos; cut < len; cut++) {
        for (int variant = 0; variant < 2; variant++) {
            memcpy(garbled, orig, len);
            for (size_t i = cut; i < len; i++)
                garbled[i] = (uint8_t)(i * 131 + 17);
            spit(log, garbled, variant == 0 ? cut : len);
            spit(idx, iorig, ilen);
            REQUIRE(plog_open(io_posix_fs(), t.dir, NULL, &p) == 0);
            CHECK(plog_end_offset(p) == last_base);
            CHECK(file_size(log) == (long)last_pos);
            CHECK(read_all_ok(p, 0));
            /* The log keeps working: the lost batch can be re-applied. */
            CHECK(append_range(p, last_base, 5) == 0);
            plog_publish(p, full_end);
            CHECK(read_all_ok(p, 0));
            plog_close(p);
        }
    }
    /* And the untouched file opens whole. */
    spit(log, orig, len);
    REQUIRE(plog_open(io_posix_fs(), t.dir, NULL, &p) == 0);
    CHECK(plog_end_offset(p) == full_end);
    plog_close(p);
    free(garbled);
    free(orig);
    free(iorig);
    tdir_remove(&t);
}

TEST(plog_index_rebuilt_when_garbled_missing_or_short)
{
    struct tdir t;
    tdir_make(&t);
    quiet();
    struct plog *p;
    REQUIRE(plog_open(io_posix_fs(), t.dir, &small_opts, &p) == 0);
    REQUIRE(append_to(p, 800, 11) == 0);
    plog_publish(p, 800);
    REQUIRE(plog_sync(p) == 0);
    /* Collect the sealed segments' bases (via the directory). */
    uint64_t bases[64];
    size_t nb = 0;
    DIR *d = opendir(t.dir);
    struct dirent *de;
    while ((de = readdir(d)) != NULL)
        if (strstr(de->d_name, ".log") && nb < 64)
            bases[nb++] = strtoull(de->d_name, NULL, 10);
    closedir(d);
    REQUIRE(nb >= 5);
    plog_close(p);
    /* Keep every .idx as written by appends. */
    uint8_t *orig[64];
    size_t olen[64];
    char path[256];
    for (size_t i = 0; i < nb; i++) {
        seg_file(&t, bases[i], "idx", path, sizeof path);
        orig[i] = slurp(path, &olen[i]);
    }
    size_t damaged = 0;
    for (size_t i = 0; i < nb; i++) {
        seg_file(&t, bases[i], "idx", path, sizeof path);
        if (olen[i] < 16)
            continue;
        uint8_t *g = malloc(olen[i]);
        switch (damaged++ % 4) {
        case 0: /* garbage */
            for (size_t j = 0; j < olen[i]; j++)
                g[j] = (uint8_t)(j * 97 + 5);
            spit(path, g, olen[i]);
            break;
        case 1: /* missing */
            unlink(path);
            break;
        case 2: /* torn entry */
            spit(path, orig[i], olen[i] - 3);
            break;
        case 3: /* an entry pointing into the middle of a batch */
            memcpy(g, orig[i], olen[i]);
            put_be32(g + olen[i] - 4, get_be32(g + olen[i] - 4) + 1);
            spit(path, g, olen[i]);
            break;
        }
        free(g);
    }
    CHECK(damaged >= 4);
    REQUIRE(plog_open(io_posix_fs(), t.dir, &small_opts, &p) == 0);
    CHECK(plog_end_offset(p) == 800);
    for (size_t i = 0; i < nb; i++) {
        size_t l;
        seg_file(&t, bases[i], "idx", path, sizeof path);
        uint8_t *now = slurp(path, &l);
        CHECK(now && l == olen[i] && (l == 0 || memcmp(now, orig[i], l) == 0));
        free(now);
        free(orig[i]);
    }
    for (uint64_t from = 0; from < 800; from += 13) {
        struct collect c = {.expect = from};
        struct plog_read_result res;
        CHECK(plog_read(p, from, 20, SIZE_MAX, collect_fn, &c, &res) == 0);
        CHECK(res.count == 20 || from + res.count == 800);
        CHECK(c.bad == 0);
    }
    plog_close(p);
    tdir_remove(&t);
}

TEST(plog_truncate_cases)
{
    struct tdir t;
    tdir_make(&t);
    quiet();
    struct plog *p;
    REQUIRE(plog_open(io_posix_fs(), t.dir, &small_opts, &p) == 0);
    /* Batches of 10: boundaries at multiples of 10. */
    for (uint64_t off = 0; off < 600; off += 10)
        REQUIRE(append_range(p, off, 10) == 0);
    plog_publish(p, 600);
    struct plog_stats s0;
    plog_stats(p, &s0);
    CHECK(plog_truncate(p, 601) == ERR_CORRUPT);
    CHECK(plog_truncate(p, 595) == ERR_INVALID);
    CHECK(plog_end_offset(p) == 600);
    CHECK(plog_truncate(p, 600) == 0);
    /* Into the last segment, then into an earlier one. */
    CHECK(plog_truncate(p, 590) == 0);
    CHECK(plog_end_offset(p) == 590 && plog_high_watermark(p) == 590);
    CHECK(read_all_ok(p, 0));
    CHECK(plog_truncate(p, 200) == 0);
    struct plog_stats s1;
    plog_stats(p, &s1);
    CHECK(s1.end_offset == 200 && s1.high_watermark == 200 && s1.segments < s0.segments);
    CHECK(read_all_ok(p, 0));
    /* Re-append different batch sizes over the cut and reopen. */
    REQUIRE(append_to(p, 700, 13) == 0);
    plog_publish(p, 700);
    CHECK(read_all_ok(p, 0));
    plog_close(p);
    REQUIRE(plog_open(io_posix_fs(), t.dir, &small_opts, &p) == 0);
    CHECK(plog_end_offset(p) == 700);
    CHECK(read_all_ok(p, 0));
    int nlog_before;
    dir_bytes(t.dir, &nlog_before);
    CHECK(plog_truncate(p, 0) == 0);
    int nlog_after;
    dir_bytes(t.dir, &nlog_after);
    CHECK(plog_end_offset(p) == 0 && nlog_after == 1 && nlog_before > 1);
    REQUIRE(append_to(p, 50, 5) == 0);
    plog_publish(p, 50);
    CHECK(read_all_ok(p, 0));
    plog_close(p);
    tdir_remove(&t);
}

TEST(plog_truncate_detects_lost_data_in_sealed_segment)
{
    struct tdir t;
    tdir_make(&t);
    quiet();
    struct plog *p;
    REQUIRE(plog_open(io_posix_fs(), t.dir, &small_opts, &p) == 0);
    for (uint64_t off = 0; off < 300; off += 10)
        REQUIRE(append_range(p, off, 10) == 0);
    plog_close(p);
    /* Tear the first (sealed) segment in its middle, as a crash after a roll could. */
    char log[256];
    seg_file(&t, 0, "log", log, sizeof log);
    long sz = file_size(log);
    REQUIRE(sz > 1000);
    REQUIRE(truncate(log, sz / 2) == 0);
    REQUIRE(plog_open(io_posix_fs(), t.dir, &small_opts, &p) == 0);
    /* Reading across the damage is refused, never served. */
    struct collect c = {0};
    struct plog_read_result res;
    int rc = 0;
    while (rc == 0 && c.expect < 300) {
        rc = plog_read(p, c.expect, 1000, SIZE_MAX, collect_fn, &c, &res);
        if (res.count == 0)
            break;
    }
    CHECK(rc == ERR_CORRUPT);
    CHECK(c.bad == 0);
    /* A checkpoint above the damage cannot be honoured; one below it can. */
    CHECK(plog_truncate(p, 290) == ERR_CORRUPT);
    CHECK(plog_truncate(p, 10) == 0);
    CHECK(plog_end_offset(p) == 10 && read_all_ok(p, 0));
    plog_close(p);
    tdir_remove(&t);
}

TEST(plog_corrupt_batch_never_served)
{
    struct tdir t;
    tdir_make(&t);
    quiet();
    struct plog *p;
    REQUIRE(plog_open(io_posix_fs(), t.dir, &small_opts, &p) == 0);
    for (uint64_t off = 0; off < 100; off += 10)
        REQUIRE(append_range(p, off, 10) == 0);
    plog_publish(p, 100);
    /* Flip one value byte of the batch holding offsets 20..29, under the open log. */
    char log[256];
    seg_file(&t, 0, "log", log, sizeof log);
    size_t len;
    uint8_t *b = slurp(log, &len);
    size_t pos = 0;
    struct recbatch_info h;
    while (recbatch_peek(b + pos, len - pos, &h) == 0 && h.base_offset != 20)
        pos += h.batch_bytes;
    REQUIRE(h.base_offset == 20);
    b[pos + h.batch_bytes - 5] ^= 0x40;
    spit(log, b, len);
    free(b);
    struct collect c = {.expect = 0};
    struct plog_read_result res;
    CHECK(plog_read(p, 0, 1000, SIZE_MAX, collect_fn, &c, &res) == ERR_CORRUPT);
    CHECK(c.n == 20 && c.bad == 0 && res.count == 20);
    c = (struct collect){.expect = 25};
    CHECK(plog_read(p, 25, 1000, SIZE_MAX, collect_fn, &c, &res) == ERR_CORRUPT);
    CHECK(c.n == 0);
    c = (struct collect){.expect = 30};
    CHECK(plog_read(p, 30, 10, SIZE_MAX, collect_fn, &c, &res) == 0);
    CHECK(c.n == 10 && c.bad == 0);
    plog_close(p);
    tdir_remove(&t);
}

/* A batch of more records than plog_read keeps on its stack is validated and indexed in one walk
 * (recbatch_decode_index): a record damaged near its end -- structurally, with the CRC resealed
 * so only the walk can see it -- still fails the read before any record of it is served. */
TEST(plog_big_batch_bad_record_never_served)
{
    struct tdir t;
    tdir_make(&t);
    quiet();
    struct plog *p;
    REQUIRE(plog_open(io_posix_fs(), t.dir, NULL, &p) == 0);
    REQUIRE(append_range(p, 0, 300) == 0);
    REQUIRE(append_range(p, 300, 300) == 0);
    plog_publish(p, 600);
    CHECK(read_all_ok(p, 0));
    CHECK(read_all_ok(p, 450));
    char log[256];
    seg_file(&t, 0, "log", log, sizeof log);
    size_t len;
    uint8_t *b = slurp(log, &len);
    struct recbatch_info h;
    REQUIRE(recbatch_peek(b, len, &h) == 0 && h.record_count == 300);
    size_t second = h.batch_bytes;
    /* The last record (offset 299, no headers) ends with its header count 0: make it 1, a
     * header that is not there. */
    REQUIRE(b[h.batch_bytes - 1] == 0);
    b[h.batch_bytes - 1] = 2; /* zigzag 1 */
    put_be32(b + 17, crc32c(0, b + RECBATCH_CRC_START, h.batch_bytes - RECBATCH_CRC_START));
    spit(log, b, len);
    free(b);
    struct collect c = {.expect = 0};
    struct plog_read_result res;
    CHECK(plog_read(p, 0, 1000, SIZE_MAX, collect_fn, &c, &res) == ERR_CORRUPT);
    CHECK(c.n == 0 && res.count == 0);
    c = (struct collect){.expect = 150};
    CHECK(plog_read(p, 150, 1000, SIZE_MAX, collect_fn, &c, &res) == ERR_CORRUPT);
    CHECK(c.n == 0);
    CHECK(second > 0 && read_all_ok(p, 300)); /* the next batch is intact */
    plog_close(p);
    tdir_remove(&t);
}

TEST(plog_retention_delete_before)
{
    struct tdir t;
    tdir_make(&t);
    struct plog *p;
    REQUIRE(plog_open(io_posix_fs(), t.dir, &small_opts, &p) == 0);
    REQUIRE(append_to(p, 1000, 10) == 0);
    plog_publish(p, 1000);
    long before = dir_bytes(t.dir, NULL);
    uint64_t del = 0, freed = 0;
    REQUIRE(plog_delete_before(p, 333, &del, &freed) == 0);
    CHECK(plog_start_offset(p) == 333 && del == 333);
    long after = dir_bytes(t.dir, NULL);
    /* freed_bytes is exactly what left the disk (the floor file is the only addition). */
    char floor_path[256];
    snprintf(floor_path, sizeof floor_path, "%s/floor", t.dir);
    CHECK(freed > 0);
    CHECK((long)freed == before - after + file_size(floor_path));
    struct plog_read_result res;
    struct collect c = {.expect = 333};
    CHECK(plog_read(p, 5, 10, SIZE_MAX, collect_fn, &c, &res) == 0);
    CHECK(res.from_adjusted && res.count == 10 && c.bad == 0 && c.n == 10);
    CHECK(read_all_ok(p, 333));
    /* Never lowers; the same floor again deletes nothing. */
    CHECK(plog_delete_before(p, 100, &del, &freed) == 0 && del == 0 && freed == 0);
    CHECK(plog_start_offset(p) == 333);
    /* Survives reopen. */
    plog_close(p);
    REQUIRE(plog_open(io_posix_fs(), t.dir, &small_opts, &p) == 0);
    CHECK(plog_start_offset(p) == 333 && plog_end_offset(p) == 1000);
    CHECK(read_all_ok(p, 333));
    /* Everything: rolls, deletes all old segments, keeps appending. */
    before = dir_bytes(t.dir, NULL);
    CHECK(plog_delete_before(p, 5000, &del, &freed) == 0);
    CHECK(del == 1000 - 333 && plog_start_offset(p) == 1000);
    int nlog;
    after = dir_bytes(t.dir, &nlog);
    CHECK(nlog == 1 && (long)freed == before - after);
    struct plog_stats stt;
    plog_stats(p, &stt);
    CHECK(stt.records == 0 && stt.segments == 1 && stt.bytes == 0);
    CHECK(plog_read(p, 0, 10, SIZE_MAX, NULL, NULL, &res) == 0 && res.count == 0);
    CHECK(res.from_adjusted && res.next_offset == 1000);
    REQUIRE(append_to(p, 1100, 10) == 0);
    plog_publish(p, 1100);
    CHECK(read_all_ok(p, 1000));
    plog_close(p);
    REQUIRE(plog_open(io_posix_fs(), t.dir, &small_opts, &p) == 0);
    CHECK(plog_start_offset(p) == 1000 && plog_end_offset(p) == 1100);
    CHECK(read_all_ok(p, 1000));
    plog_close(p);
    tdir_remove(&t);
}

TEST(plog_retention_policy_helpers)
{
    struct tdir t;
    tdir_make(&t);
    struct plog *p;
    REQUIRE(plog_open(io_posix_fs(), t.dir, &small_opts, &p) == 0);
    REQUIRE(append_to(p, 1000, 10) == 0); /* timestamps 1000 + offset */
    plog_publish(p, 1000);
    CHECK(plog_offset_for_time(p, 0) == 0);
    uint64_t o = plog_offset_for_time(p, 1000 + 500);
    CHECK(o > 0 && o <= 500);
    /* Every record before o is older than the cutoff, and o is a segment boundary. */
    CHECK(plog_offset_for_time(p, INT64_MAX) == 1000);
    struct plog_stats stt;
    plog_stats(p, &stt);
    uint64_t os = plog_offset_for_size(p, stt.bytes / 2);
    CHECK(os > 0 && os < 1000);
    CHECK(plog_offset_for_size(p, UINT64_MAX) == 0);
    uint64_t del, freed;
    REQUIRE(plog_delete_before(p, os, &del, &freed) == 0);
    plog_stats(p, &stt);
    uint64_t log_bytes = 0;
    DIR *d = opendir(t.dir);
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (strstr(de->d_name, ".log")) {
            char path[512];
            snprintf(path, sizeof path, "%s/%s", t.dir, de->d_name);
            log_bytes += (uint64_t)file_size(path);
        }
    }
    closedir(d);
    CHECK(log_bytes <= stt.bytes && stt.start_offset == os);
    plog_close(p);
    tdir_remove(&t);
}

TEST(plog_disk_footprint_small_records)
{
    struct tdir t;
    tdir_make(&t);
    struct plog *p;
    REQUIRE(plog_open(io_posix_fs(), t.dir, NULL, &p) == 0);
    uint8_t vals[64][64];
    struct plog_record r[64];
    for (uint64_t off = 0; off < 100000; off += 64) {
        size_t n = 100000 - off < 64 ? (size_t)(100000 - off) : 64;
        for (size_t i = 0; i < n; i++) {
            for (size_t j = 0; j < 64; j++)
                vals[i][j] = (uint8_t)(off + i + j);
            r[i] = (struct plog_record){.timestamp_ms = 1700000000000 + (int64_t)(off + i),
                                        .value = slice_of(vals[i], 64)};
        }
        REQUIRE(plog_append(p, r, n) == 0);
    }
    plog_publish(p, 100000);
    REQUIRE(plog_sync(p) == 0);
    long raw = 100000L * 64, disk = dir_bytes(t.dir, NULL);
    CHECK(disk > raw);
    CHECK(disk * 10 <= raw * 13);
    struct plog_stats stt;
    plog_stats(p, &stt);
    CHECK((long)stt.bytes == disk);
    plog_close(p);
    tdir_remove(&t);
}

TEST(plog_dump_and_destroy)
{
    struct tdir t;
    tdir_make(&t);
    quiet();
    struct plog *p;
    REQUIRE(plog_open(io_posix_fs(), t.dir, NULL, &p) == 0);
    REQUIRE(append_to(p, 30, 10) == 0);
    char log[256];
    seg_file(&t, 0, "log", log, sizeof log);
    char *text = NULL;
    size_t tlen = 0;
    FILE *m = open_memstream(&text, &tlen);
    CHECK(plog_dump_segment(io_posix_fs(), log, m) == 0);
    fclose(m);
    CHECK(text && strstr(text, "offsets=0..") && strstr(text, "crc=ok") && !strstr(text, "BAD"));
    free(text);
    /* A damaged copy is reported. */
    size_t len;
    uint8_t *b = slurp(log, &len);
    b[len - 2] ^= 1;
    char copy[256];
    snprintf(copy, sizeof copy, "%s/00000000000000000000.log", t.root);
    spit(copy, b, len);
    free(b);
    m = open_memstream(&text, &tlen);
    CHECK(plog_dump_segment(io_posix_fs(), copy, m) == ERR_CORRUPT);
    fclose(m);
    CHECK(text && strstr(text, "crc=BAD"));
    free(text);
    unlink(copy);
    CHECK(plog_delete_before(p, 10, NULL, NULL) == 0); /* writes a floor file too */
    CHECK(plog_destroy(p) == 0);
    struct stat stt;
    CHECK(stat(t.dir, &stt) != 0);
    tdir_remove(&t);
}

/* ---- a reader thread against the writer and retention ------------------------------------ */

struct race {
    struct plog *p;
    atomic_bool done;
    atomic_long bad, reads, records;
    unsigned seed;
};

static int race_fn(void *ctx, const struct plog_record *r)
{
    struct collect *c = ctx;
    /* The first record may lie above `from` if retention raised the floor meanwhile. */
    if ((c->n == 0 ? r->offset < c->expect : r->offset != c->expect) || !record_ok(r))
        c->bad++;
    c->expect = r->offset + 1;
    c->n++;
    return 0;
}

static void *race_reader(void *arg)
{
    struct race *r = arg;
    unsigned seed = r->seed;
    while (!atomic_load(&r->done)) {
        uint64_t hw = plog_high_watermark(r->p);
        uint64_t from = hw ? (uint64_t)rand_r(&seed) % (hw + 1) : 0;
        struct collect c = {.expect = from};
        struct plog_read_result res;
        int rc = plog_read(r->p, from, 1 + (size_t)(rand_r(&seed) % 300), SIZE_MAX, race_fn, &c,
                           &res);
        if (rc != 0 || c.bad != 0 || c.n != res.count)
            atomic_fetch_add(&r->bad, 1);
        atomic_fetch_add(&r->reads, 1);
        atomic_fetch_add(&r->records, (long)c.n);
    }
    return NULL;
}

TEST(plog_concurrent_readers_with_writer_rolls_and_retention)
{
    struct tdir t;
    tdir_make(&t);
    struct plog *p;
    REQUIRE(plog_open(io_posix_fs(), t.dir, &small_opts, &p) == 0);
    struct race r = {.p = p, .seed = 1};
    atomic_init(&r.done, false);
    atomic_init(&r.bad, 0);
    atomic_init(&r.reads, 0);
    atomic_init(&r.records, 0);
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        REQUIRE(pthread_create(&th[i], NULL, race_reader, &r) == 0);
    for (uint64_t to = 200; to <= 20000; to += 200) {
        REQUIRE(append_to(p, to, 23) == 0);
        plog_publish(p, to);
        if (to % 2000 == 0) {
            uint64_t del, freed;
            REQUIRE(plog_delete_before(p, to - 1500, &del, &freed) == 0);
        }
        if (to % 5000 == 0)
            REQUIRE(plog_sync(p) == 0);
    }
    atomic_store(&r.done, true);
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    CHECK(atomic_load(&r.bad) == 0);
    CHECK(atomic_load(&r.reads) > 0);
    CHECK(read_all_ok(p, plog_start_offset(p)));
    plog_close(p);
    tdir_remove(&t);
}

/* ---- crash recovery on the simulated file system ----------------------------------------- */

TEST(plog_sim_crash_recovers_checkpoint)
{
    quiet();
    for (uint64_t seed = 1; seed <= 40; seed++) {
        struct sim_fs *sim = sim_fs_new(seed);
        struct io_fs *fs = sim_fs_io(sim);
        struct plog *p;
        REQUIRE(plog_open(fs, "p", &small_opts, &p) == 0);
        REQUIRE(io_sync_dir(fs, ".") == 0); /* the caller makes DIR itself durable */
        REQUIRE(append_to(p, 300, 9) == 0);
        REQUIRE(plog_sync(p) == 0);
        uint64_t ckpt = plog_end_offset(p);
        /* Unsynced work after the checkpoint, including rolls and a truncate. */
        REQUIRE(append_to(p, 900, 9) == 0);
        REQUIRE(plog_delete_before(p, seed % 2 ? 50 : 0, NULL, NULL) == 0);
        plog_close(p);
        sim_fs_crash(sim, seed % 3 == 0   ? SIM_CRASH_RANDOM_UNORDERED
                          : seed % 3 == 1 ? SIM_CRASH_RANDOM
                                          : SIM_CRASH_DROP_UNSYNCED);
        REQUIRE(plog_open(fs, "p", &small_opts, &p) == 0);
        CHECK(plog_truncate(p, ckpt) == 0);
        CHECK(plog_end_offset(p) == ckpt);
        plog_publish(p, ckpt);
        CHECK(read_all_ok(p, plog_start_offset(p)));
        /* Re-apply and read everything again. */
        CHECK(append_to(p, 900, 9) == 0);
        plog_publish(p, 900);
        CHECK(read_all_ok(p, plog_start_offset(p)));
        plog_close(p);
        sim_fs_free(sim);
    }
    unquiet();
}

/* Kafka produce/fetch: a client's batch is stored as sent (only baseOffset and the leader epoch
 * change, both outside the CRC) and plog_read_batches hands stored batches back byte for byte. */
TEST(plog_append_batch_stores_client_bytes_and_reads_them_back)
{
    struct tdir t;
    tdir_make(&t);
    struct plog *p;
    REQUIRE(plog_open(io_posix_fs(), t.dir, &small_opts, &p) == 0);
    struct sbuf client, all;
    sbuf_init(&client, 0);
    sbuf_init(&all, 0);
    const int batches = 60;
    size_t pos[61];
    for (int i = 0; i < batches; i++) {
        pos[i] = all.len;
        struct plog_record recs[3];
        char v[3][16];
        for (int k = 0; k < 3; k++) {
            memset(&recs[k], 0, sizeof recs[k]);
            snprintf(v[k], sizeof v[k], "b%d-r%d", i, k);
            recs[k].value = slice_cstr(v[k]);
            recs[k].timestamp_ms = 1000 + i;
        }
        sbuf_reset(&client);
        /* a client encodes with base offset 0 and some leader epoch */
        REQUIRE(recbatch_encode(&client, 0, recs, 3, NULL) == 0);
        put_be32(client.data + 12, 77);
        REQUIRE(plog_append_batch(p, slice_of(client.data, client.len)) == 0);
        /* what we expect on disk: the same bytes with baseOffset = 3i, epoch 0 */
        put_be64(client.data, (uint64_t)i * 3);
        put_be32(client.data + 12, 0);
        sbuf_append(&all, client.data, client.len);
    }
    CHECK(plog_end_offset(p) == (uint64_t)batches * 3);
    plog_publish(p, plog_end_offset(p));
    /* a bad header or a length that does not fit is refused */
    CHECK(plog_append_batch(p, slice_of(client.data, client.len - 1)) == ERR_INVALID);
    struct plog_read_result res;
    struct sbuf out;
    sbuf_init(&out, 0);
    CHECK(plog_read_batches(p, 0, SIZE_MAX, &out, &res) == 0);
    CHECK(out.len == all.len && memcmp(out.data, all.data, all.len) == 0);
    CHECK(res.count == (size_t)batches * 3 && res.next_offset == (uint64_t)batches * 3);
    /* from inside a batch: that whole batch first */
    sbuf_reset(&out);
    CHECK(plog_read_batches(p, 7, 1, &out, &res) == 0);
    pos[batches] = all.len;
    size_t one = pos[3] - pos[2];
    CHECK(out.len == one && memcmp(out.data, all.data + pos[2], one) == 0 && res.more);
    CHECK(res.next_offset == 9);
    /* the records read back through the ordinary path too, with offsets assigned */
    struct collect c = {0};
    CHECK(plog_read(p, 0, SIZE_MAX, SIZE_MAX, NULL, &c, &res) == 0 && res.count == (size_t)batches * 3);
    plog_close(p);
    REQUIRE(plog_open(io_posix_fs(), t.dir, &small_opts, &p) == 0);
    sbuf_reset(&out);
    CHECK(plog_read_batches(p, 0, SIZE_MAX, &out, &res) == 0);
    CHECK(out.len == all.len && memcmp(out.data, all.data, all.len) == 0);
    plog_close(p);
    sbuf_free(&out);
    sbuf_free(&client);
    sbuf_free(&all);
    tdir_remove(&t);
}
