/* test_sim_fs.c -- the simulated file system: durable vs unsynced data, directory entry
 * durability, crash modes, stale handles, fault injection, fsyncgate and ENOSPC. */
#include "harness.h"

#include "../sim/sim_fs.h"
#include "base/alloc.h"
#include "base/err.h"

#include <stdbool.h>
#include <string.h>

static bool content_is(struct sim_fs *s, const char *path, const char *want)
{
    uint8_t *d;
    size_t n;
    if (sim_fs_read_file(s, path, &d, &n))
        return false;
    bool ok = n == strlen(want) && (n == 0 || memcmp(d, want, n) == 0);
    xfree(d);
    return ok;
}

static int put(struct io_fs *fs, const char *path, const char *data, uint64_t off, bool sync)
{
    struct io_file *f;
    int rc = io_open(fs, path, IO_CREATE, &f);
    if (rc)
        return rc;
    rc = io_pwrite(f, data, strlen(data), off);
    if (!rc && sync)
        rc = io_sync(f);
    io_close(f);
    return rc;
}

TEST(sim_fs_durable_vs_unsynced)
{
    struct sim_fs *s = sim_fs_new(1);
    struct io_fs *fs = sim_fs_io(s);
    REQUIRE(io_mkdir(fs, "d") == 0);
    REQUIRE(io_sync_dir(fs, ".") == 0);
    REQUIRE(put(fs, "d/f", "hello", 0, true) == 0);
    REQUIRE(io_sync_dir(fs, "d") == 0);
    REQUIRE(put(fs, "d/f", " world", 5, false) == 0);
    CHECK(content_is(s, "d/f", "hello world"));
    uint8_t *d;
    size_t n;
    REQUIRE(sim_fs_read_durable(s, "d/f", &d, &n) == 0);
    CHECK(n == 5 && memcmp(d, "hello", 5) == 0);
    xfree(d);
    sim_fs_crash(s, SIM_CRASH_DROP_UNSYNCED);
    CHECK(content_is(s, "d/f", "hello"));
    /* KEEP_ALL keeps unsynced writes. */
    REQUIRE(put(fs, "d/f", "!", 5, false) == 0);
    sim_fs_crash(s, SIM_CRASH_KEEP_ALL);
    CHECK(content_is(s, "d/f", "hello!"));
    CHECK(sim_fs_open_handles(s) == 0);
    sim_fs_free(s);
}

TEST(sim_fs_dir_entries_need_sync_dir)
{
    struct sim_fs *s = sim_fs_new(2);
    struct io_fs *fs = sim_fs_io(s);
    REQUIRE(io_mkdir(fs, "d") == 0);
    /* mkdir not yet durable: a crash removes the directory and everything in it. */
    REQUIRE(put(fs, "d/a", "x", 0, true) == 0);
    sim_fs_crash(s, SIM_CRASH_DROP_UNSYNCED);
    CHECK(io_exists(fs, "d") == 0);
    CHECK(io_exists(fs, "d/a") == 0);

    REQUIRE(io_mkdir(fs, "d") == 0);
    REQUIRE(io_sync_dir(fs, "") == 0);
    REQUIRE(put(fs, "d/a", "x", 0, true) == 0);
    sim_fs_crash(s, SIM_CRASH_DROP_UNSYNCED);
    CHECK(io_exists(fs, "d") == 1);
    CHECK(io_exists(fs, "d/a") == 0); /* file synced, its name was not */

    REQUIRE(put(fs, "d/a", "x", 0, true) == 0);
    REQUIRE(io_sync_dir(fs, "d") == 0);
    REQUIRE(io_rename(fs, "d/a", "d/b") == 0);
    CHECK(io_exists(fs, "d/b") == 1);
    sim_fs_crash(s, SIM_CRASH_DROP_UNSYNCED);
    CHECK(io_exists(fs, "d/a") == 1);
    CHECK(io_exists(fs, "d/b") == 0);

    REQUIRE(io_unlink(fs, "d/a") == 0);
    CHECK(io_exists(fs, "d/a") == 0);
    sim_fs_crash(s, SIM_CRASH_DROP_UNSYNCED);
    CHECK(io_exists(fs, "d/a") == 1);
    CHECK(content_is(s, "d/a", "x"));
    REQUIRE(io_unlink(fs, "d/a") == 0);
    REQUIRE(io_sync_dir(fs, "d") == 0);
    sim_fs_crash(s, SIM_CRASH_KEEP_ALL);
    CHECK(io_exists(fs, "d/a") == 0);
    sim_fs_free(s);
}

TEST(sim_fs_posix_rules)
{
    struct sim_fs *s = sim_fs_new(3);
    struct io_fs *fs = sim_fs_io(s);
    struct io_file *f;
    CHECK(io_open(fs, "nodir/x", IO_CREATE, &f) == ERR_NOT_FOUND);
    CHECK(io_open(fs, "x", IO_RDONLY, &f) == ERR_NOT_FOUND);
    CHECK(io_mkdir(fs, "a/b") == ERR_NOT_FOUND);
    REQUIRE(io_mkdir(fs, "a") == 0);
    CHECK(io_mkdir(fs, "a") == 0);
    REQUIRE(put(fs, "a/x", "1", 0, false) == 0);
    CHECK(io_open(fs, "a/x", IO_CREATE | IO_EXCL, &f) == ERR_CONFLICT);
    CHECK(io_rmdir(fs, "a") == ERR_CONFLICT);
    REQUIRE(io_open(fs, "a/x", IO_RDONLY, &f) == 0);
    CHECK(io_pwrite(f, "z", 1, 0) == ERR_INVALID);
    uint64_t sz = 0;
    CHECK(io_size(f, &sz) == 0 && sz == 1);
    io_close(f);
    REQUIRE(io_open(fs, "a/x", IO_RDWR, &f) == 0);
    CHECK(io_truncate(f, 0) == 0);
    CHECK(io_size(f, &sz) == 0 && sz == 0);
    io_close(f);
    CHECK(io_unlink(fs, "a/x") == 0);
    CHECK(io_unlink(fs, "a/x") == ERR_NOT_FOUND);
    CHECK(io_rmdir(fs, "a") == 0);
    CHECK(io_exists(fs, "a") == 0);
    sim_fs_free(s);
}

static int count_cb(void *ctx, const char *name)
{
    (void)name;
    ++*(int *)ctx;
    return 0;
}

TEST(sim_fs_list)
{
    struct sim_fs *s = sim_fs_new(4);
    struct io_fs *fs = sim_fs_io(s);
    REQUIRE(io_mkdir(fs, "d") == 0);
    REQUIRE(io_mkdir(fs, "d/sub") == 0);
    REQUIRE(put(fs, "d/a", "1", 0, false) == 0);
    REQUIRE(put(fs, "d/b", "1", 0, false) == 0);
    REQUIRE(put(fs, "d/sub/c", "1", 0, false) == 0);
    int n = 0;
    CHECK(io_list(fs, "d", count_cb, &n) == 0);
    CHECK_EQ_INT(n, 3);
    n = 0;
    CHECK(io_list(fs, ".", count_cb, &n) == 0);
    CHECK_EQ_INT(n, 1);
    CHECK(io_list(fs, "nope", count_cb, &n) == ERR_NOT_FOUND);
    sim_fs_free(s);
}

TEST(sim_fs_stale_handles_after_crash)
{
    struct sim_fs *s = sim_fs_new(5);
    struct io_fs *fs = sim_fs_io(s);
    struct io_file *f;
    REQUIRE(io_open(fs, "f", IO_CREATE, &f) == 0);
    REQUIRE(io_pwrite(f, "abc", 3, 0) == 0);
    REQUIRE(io_sync(f) == 0);
    REQUIRE(io_sync_dir(fs, ".") == 0);
    sim_fs_crash(s, SIM_CRASH_KEEP_ALL);
    char b[4];
    size_t got;
    CHECK(io_pread(f, b, 3, 0, &got) == ERR_IO);
    CHECK(io_pwrite(f, "x", 1, 0) == ERR_IO);
    CHECK(io_sync(f) == ERR_IO);
    CHECK(io_close(f) == 0);
    CHECK(sim_fs_open_handles(s) == 0);
    CHECK(content_is(s, "f", "abc"));
    sim_fs_free(s);
}

TEST(sim_fs_fault_injection_nth_call)
{
    struct sim_fs *s = sim_fs_new(6);
    struct io_fs *fs = sim_fs_io(s);
    struct io_file *f;
    REQUIRE(io_open(fs, "f", IO_CREATE, &f) == 0);
    sim_fs_fail_nth(s, SIM_OP_PWRITE, 2, ERR_IO);
    CHECK(io_pwrite(f, "a", 1, 0) == 0);
    CHECK(io_pwrite(f, "b", 1, 1) == ERR_IO);
    CHECK(io_pwrite(f, "c", 1, 1) == 0);
    CHECK(sim_fs_calls(s, SIM_OP_PWRITE) == 3);
    sim_fs_fail_nth(s, SIM_OP_TRUNCATE, 1, ERR_IO);
    CHECK(io_truncate(f, 0) == ERR_IO);
    sim_fs_fail_nth(s, SIM_OP_SYNC_DIR, 1, ERR_IO);
    CHECK(io_sync_dir(fs, ".") == ERR_IO);
    CHECK(io_sync_dir(fs, ".") == 0);
    sim_fs_fail_nth(s, SIM_OP_RENAME, 1, ERR_IO);
    CHECK(io_rename(fs, "f", "g") == ERR_IO);
    sim_fs_fail_nth(s, SIM_OP_OPEN, 1, ERR_NOSPACE);
    struct io_file *g;
    CHECK(io_open(fs, "h", IO_CREATE, &g) == ERR_NOSPACE);
    CHECK(io_exists(fs, "h") == 0);
    io_close(f);
    sim_fs_free(s);
}

TEST(sim_fs_failed_sync_loses_data_fsyncgate)
{
    struct sim_fs *s = sim_fs_new(7);
    struct io_fs *fs = sim_fs_io(s);
    struct io_file *f;
    REQUIRE(io_open(fs, "f", IO_CREATE, &f) == 0);
    REQUIRE(io_sync_dir(fs, ".") == 0);
    REQUIRE(io_pwrite(f, "old", 3, 0) == 0);
    REQUIRE(io_sync(f) == 0);
    REQUIRE(io_pwrite(f, "new", 3, 3) == 0);
    sim_fs_fail_nth(s, SIM_OP_SYNC, 1, ERR_IO);
    CHECK(io_sync(f) == ERR_IO);
    CHECK(io_sync(f) == 0); /* reported once, as Linux does */
    CHECK(content_is(s, "f", "old"));
    REQUIRE(io_pwrite(f, "!", 1, 6) == 0);
    REQUIRE(io_sync(f) == 0);
    io_close(f);
    sim_fs_crash(s, SIM_CRASH_KEEP_ALL);
    /* The lost write never comes back; the later one is durable at its offset. */
    uint8_t *d;
    size_t n;
    REQUIRE(sim_fs_read_file(s, "f", &d, &n) == 0);
    CHECK(n == 7 && memcmp(d, "old\0\0\0!", 7) == 0);
    xfree(d);
    sim_fs_free(s);
}

TEST(sim_fs_enospc_partial_write)
{
    struct sim_fs *s = sim_fs_new(8);
    struct io_fs *fs = sim_fs_io(s);
    sim_fs_set_capacity(s, 10);
    struct io_file *f;
    REQUIRE(io_open(fs, "f", IO_CREATE, &f) == 0);
    CHECK(io_pwrite(f, "12345678", 8, 0) == 0);
    CHECK(io_pwrite(f, "abcd", 4, 8) == ERR_NOSPACE);
    uint64_t sz = 0;
    CHECK(io_size(f, &sz) == 0 && sz == 10);
    CHECK(sim_fs_used(s) == 10);
    CHECK(io_truncate(f, 20) == ERR_NOSPACE);
    CHECK(io_pwrite(f, "XY", 2, 0) == 0); /* overwrite needs no space */
    sim_fs_set_capacity(s, 0);
    CHECK(io_pwrite(f, "abcd", 4, 8) == 0);
    io_close(f);
    CHECK(content_is(s, "f", "XY345678abcd"));
    CHECK(io_unlink(fs, "f") == 0);
    CHECK(sim_fs_used(s) == 0);
    sim_fs_free(s);
}

/* RANDOM keeps an ordered prefix of unsynced writes with at most one torn write. */
TEST(sim_fs_crash_random_is_a_torn_prefix)
{
    int full = 0, none = 0, torn = 0;
    for (uint64_t seed = 0; seed < 300; seed++) {
        struct sim_fs *s = sim_fs_new(seed);
        struct io_fs *fs = sim_fs_io(s);
        struct io_file *f;
        REQUIRE(io_open(fs, "f", IO_CREATE, &f) == 0);
        REQUIRE(io_sync_dir(fs, ".") == 0);
        REQUIRE(io_pwrite(f, "DURABLE", 7, 0) == 0);
        REQUIRE(io_sync(f) == 0);
        char want[7 + 10 * 10];
        memcpy(want, "DURABLE", 7);
        for (int k = 0; k < 10; k++) {
            memset(want + 7 + 10 * k, 'a' + k, 10);
            REQUIRE(io_pwrite(f, want + 7 + 10 * k, 10, 7 + 10 * (uint64_t)k) == 0);
        }
        io_close(f);
        sim_fs_crash(s, SIM_CRASH_RANDOM);
        uint8_t *d;
        size_t n;
        REQUIRE(sim_fs_read_file(s, "f", &d, &n) == 0);
        REQUIRE(n >= 7 && n <= sizeof want);
        size_t m = 0;
        while (m < n && d[m] == (uint8_t)want[m])
            m++;
        CHECK(m >= 7);
        /* Everything after the first mismatch lies within one write. */
        if (m < n)
            CHECK(n <= 7 + ((m - 7) / 10 + 1) * 10);
        full += m == sizeof want;
        none += n == 7;
        torn += m < n || (n - 7) % 10 != 0;
        xfree(d);
        sim_fs_free(s);
    }
    CHECK(full > 0);
    CHECK(none > 0);
    CHECK(torn > 0);
}

TEST(sim_fs_crash_random_dir_all_or_nothing)
{
    int kept = 0, dropped = 0;
    for (uint64_t seed = 0; seed < 100; seed++) {
        struct sim_fs *s = sim_fs_new(seed);
        struct io_fs *fs = sim_fs_io(s);
        REQUIRE(put(fs, "a", "1", 0, true) == 0);
        REQUIRE(put(fs, "b", "1", 0, true) == 0);
        sim_fs_crash(s, SIM_CRASH_RANDOM);
        int ea = io_exists(fs, "a"), eb = io_exists(fs, "b");
        CHECK(ea == eb);
        kept += ea;
        dropped += !ea;
        sim_fs_free(s);
    }
    CHECK(kept > 0 && dropped > 0);
}
