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

/* Issue #20: the first mark is created durably (name and content), so a power loss right after
 * leaves a readable mark; a later in-place overwrite lost with power leaves the older mark. */
TEST(commitmark_create_survives_power_loss)
{
    struct sim_fs *s = sim_fs_new(20);
    struct io_fs *fs = sim_fs_io(s);
    REQUIRE(io_mkdir(fs, "r") == 0);
    REQUIRE(io_sync_dir(fs, "") == 0);
    struct io_file *f;
    REQUIRE(commitmark_create(fs, "r", 41, 3, &f) == 0);
    REQUIRE(commitmark_write(f, 99, 4) == 0); /* never fsynced */
    io_close(f);
    sim_fs_crash(s, SIM_CRASH_DROP_UNSYNCED);
    uint64_t i = 0, t = 0;
    bool damaged = true;
    REQUIRE(commitmark_load(fs, "r", &i, &t, &damaged) == 0);
    CHECK(i == 41 && t == 3 && !damaged);
    CHECK(io_exists(fs, "r/commit.tmp") == 0);
    /* a process restart creates it again over the old one */
    REQUIRE(commitmark_create(fs, "r", 120, 5, &f) == 0);
    io_close(f);
    sim_fs_crash(s, SIM_CRASH_DROP_UNSYNCED);
    REQUIRE(commitmark_load(fs, "r", &i, &t, &damaged) == 0);
    CHECK(i == 120 && t == 5 && !damaged);
    sim_fs_free(s);
}

/* The durable name operations: each one's effect survives a power loss right after it. */
TEST(io_durable_name_ops_survive_power_loss)
{
    struct sim_fs *s = sim_fs_new(22);
    struct io_fs *fs = sim_fs_io(s);
    REQUIRE(io_mkdir_durable(fs, "a") == 0);
    REQUIRE(io_mkdir_durable(fs, "b") == 0);
    REQUIRE(sim_fs_write_file(s, "a/x", "x", 1) == 0);
    REQUIRE(sim_fs_write_file(s, "a/y", "y", 1) == 0);
    REQUIRE(io_rename_durable(fs, "a/x", "b/x2") == 0); /* across directories */
    REQUIRE(io_unlink_durable(fs, "a/y") == 0);
    REQUIRE(io_mkdir_durable(fs, "b/c") == 0);
    /* a bare rename is not durable: the simulator undoes it */
    REQUIRE(sim_fs_write_file(s, "b/z", "z", 1) == 0);
    REQUIRE(io_rename(fs, "b/z", "b/z2") == 0);
    sim_fs_crash(s, SIM_CRASH_DROP_UNSYNCED);
    CHECK(io_exists(fs, "a") == 1 && io_exists(fs, "b") == 1);
    CHECK(io_exists(fs, "a/x") == 0 && io_exists(fs, "b/x2") == 1);
    CHECK(io_exists(fs, "a/y") == 0);
    CHECK(io_exists(fs, "b/c") == 1);
    CHECK(io_exists(fs, "b/z") == 1 && io_exists(fs, "b/z2") == 0);
    CHECK(io_sync_parent(fs, "top") == 0); /* a bare name: the current directory */
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
