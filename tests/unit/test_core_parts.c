/* test_core_parts.c -- the Raft hard state file, the commit mark and the entry tail cache. */
#include "harness.h"

#include "../sim/sim_fs.h"
#include "base/err.h"
#include "core/hardstate.h"
#include "core/tailcache.h"

#include <string.h>

TEST(hardstate_roundtrip_and_damage)
{
    struct sim_fs *s = sim_fs_new(7);
    struct io_fs *fs = sim_fs_io(s);
    REQUIRE(io_mkdir(fs, "/r") == 0);
    uint64_t t = 9, v = 9;
    REQUIRE(hardstate_load(fs, "/r", &t, &v) == 0);
    CHECK(t == 0 && v == 0);
    REQUIRE(hardstate_save(fs, "/r", 5, 77) == 0);
    REQUIRE(hardstate_save(fs, "/r", 6, 0) == 0);
    REQUIRE(hardstate_load(fs, "/r", &t, &v) == 0);
    CHECK(t == 6 && v == 0);
    /* a flipped byte is corruption, never "term 0" */
    struct io_file *f;
    REQUIRE(io_open(fs, "/r/meta", IO_RDWR, &f) == 0);
    uint8_t b = 0xff;
    REQUIRE(io_pwrite(f, &b, 1, 9) == 0);
    io_close(f);
    CHECK(hardstate_load(fs, "/r", &t, &v) == ERR_CORRUPT);
    /* a short file too */
    REQUIRE(io_open(fs, "/r/meta", IO_RDWR, &f) == 0);
    REQUIRE(io_truncate(f, 20) == 0);
    io_close(f);
    CHECK(hardstate_load(fs, "/r", &t, &v) == ERR_CORRUPT);
    sim_fs_free(s);
}

/* The commit mark: missing, torn or damaged reads as index 0 (a lower restart point), never as an
 * error that stops the node and never as a made-up index. */
TEST(commitmark_roundtrip_and_damage)
{
    struct sim_fs *s = sim_fs_new(8);
    struct io_fs *fs = sim_fs_io(s);
    REQUIRE(io_mkdir(fs, "/r") == 0);
    uint64_t i = 9, t = 9;
    bool damaged = true;
    REQUIRE(commitmark_load(fs, "/r", &i, &t, &damaged) == 0);
    CHECK(i == 0 && t == 0 && !damaged);
    struct io_file *f;
    REQUIRE(io_open(fs, "/r/commit", IO_CREATE, &f) == 0);
    REQUIRE(commitmark_write(f, 41, 3) == 0);
    REQUIRE(commitmark_write(f, 1234567, 4) == 0); /* overwritten in place */
    REQUIRE(commitmark_load(fs, "/r", &i, &t, &damaged) == 0);
    CHECK(i == 1234567 && t == 4 && !damaged);
    uint8_t b = 0x5a; /* a flipped byte */
    REQUIRE(io_pwrite(f, &b, 1, 10) == 0);
    REQUIRE(commitmark_load(fs, "/r", &i, &t, &damaged) == 0);
    CHECK(i == 0 && t == 0 && damaged);
    REQUIRE(commitmark_write(f, 50, 5) == 0);
    REQUIRE(io_truncate(f, 20) == 0); /* torn */
    REQUIRE(commitmark_load(fs, "/r", &i, &t, &damaged) == 0);
    CHECK(i == 0 && t == 0 && damaged);
    io_close(f);
    sim_fs_free(s);
}

TEST(tailcache_ring_bounds_truncate)
{
    struct tailcache c;
    tailcache_init(&c, 4, 1000);
    uint64_t term;
    uint8_t type;
    struct slice d;
    CHECK(!tailcache_get(&c, 1, &term, &type, &d));
    for (uint64_t i = 1; i <= 6; i++) {
        char v[8];
        snprintf(v, sizeof v, "v%llu", (unsigned long long)i);
        REQUIRE(tailcache_append(&c, i, 1 + i / 3, 20, slice_of(v, strlen(v))) == 0);
    }
    /* 4 entries kept: 3..6 */
    CHECK(tailcache_first(&c) == 3 && tailcache_last(&c) == 6);
    CHECK(!tailcache_get(&c, 2, &term, &type, &d));
    REQUIRE(tailcache_get(&c, 5, &term, &type, &d));
    CHECK(term == 2 && type == 20 && d.len == 2 && memcmp(d.ptr, "v5", 2) == 0);
    /* overwrite at 5 (after a Raft truncation): 5.. replaced, 6 gone */
    REQUIRE(tailcache_append(&c, 5, 9, 21, SLICE_LIT("new")) == 0);
    CHECK(tailcache_last(&c) == 5);
    REQUIRE(tailcache_get(&c, 5, &term, &type, &d));
    CHECK(term == 9 && d.len == 3);
    tailcache_truncate(&c, 4);
    CHECK(tailcache_last(&c) == 3);
    /* a gap restarts the cache */
    REQUIRE(tailcache_append(&c, 10, 9, 21, SLICE_LIT("x")) == 0);
    CHECK(tailcache_first(&c) == 10 && tailcache_last(&c) == 10);
    /* the byte bound evicts the oldest, but the newest always stays */
    uint8_t big[900];
    memset(big, 1, sizeof big);
    REQUIRE(tailcache_append(&c, 11, 9, 21, slice_of(big, sizeof big)) == 0);
    REQUIRE(tailcache_append(&c, 12, 9, 21, slice_of(big, sizeof big)) == 0);
    CHECK(tailcache_first(&c) == 12 && tailcache_last(&c) == 12);
    CHECK(c.bytes == 900);
    tailcache_free(&c);
}
