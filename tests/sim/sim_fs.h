/* sim_fs.h -- a simulated struct io_fs for crash, fault and ENOSPC tests.
 *
 * The simulator owns every file and directory it holds. Each file keeps its durable content (as of
 * its last successful io_sync) plus the list of unsynced writes and truncations made since; each
 * directory entry (create, rename, unlink, mkdir) is durable only after io_sync_dir of its parent.
 * sim_fs_crash() simulates power loss and resolves the unsynced state per enum sim_crash_mode.
 *
 * Paths are plain strings relative to one root: "data/journal/x.seg". A path without '/' lives in
 * the root, which always exists ("", "." and "/" name the root for sync_dir and list). No "..",
 * no trailing '/'. As in POSIX, a file can only be created in an existing directory (else
 * ERR_NOT_FOUND), and mkdir needs its parent.
 *
 * Handles: io_file handles opened before a crash become stale. Every operation on a stale handle
 * returns ERR_IO except io_close, which must still be called to free the handle.
 *
 * fsyncgate: a failed io_sync reports its error once and drops the writes that were unsynced at
 * that time (reads then see the durable content); a later successful sync does not bring them
 * back. This is one of the behaviours Linux shows after a writeback error.
 *
 * Thread safety: one mutex around everything; any thread may call any function.
 * Pointers returned by the helpers below are owned by the caller (free with xfree).
 */
#ifndef AYDER_TESTS_SIM_FS_H
#define AYDER_TESTS_SIM_FS_H

#include "io/io.h"

#include <stddef.h>
#include <stdint.h>

struct sim_fs;

struct sim_fs *sim_fs_new(uint64_t seed);
struct io_fs *sim_fs_io(struct sim_fs *s);
/* Frees everything. All handles must have been closed. */
void sim_fs_free(struct sim_fs *s);

enum sim_crash_mode {
    SIM_CRASH_KEEP_ALL,      /* every unsynced write and dir entry survives (process crash) */
    SIM_CRASH_DROP_UNSYNCED, /* only durable state survives */
    /* Per file, the unsynced operations survive as an ordered prefix: a random number of them
     * is kept, the next one is torn (dropped, or a random prefix of it kept, possibly followed
     * by garbage where the write extended the file), the rest are dropped. Per directory, either
     * all unsynced entry changes survive or none. This is what ext4/xfs give an appending writer
     * in practice. */
    SIM_CRASH_RANDOM,
    /* Harsher: each unsynced operation of a file is independently kept, dropped or torn, so a
     * later write may survive while an earlier one is lost (page writeback in any order). */
    SIM_CRASH_RANDOM_UNORDERED,
    /* Every file keeps all its unsynced writes (the page cache was written back), but only the
     * durable directory entries survive: a rename, create or unlink not followed by a sync_dir of
     * its parent is undone while the renamed file's new content stays. What a power loss gives
     * when data writeback won the race against the directory's journal commit. */
    SIM_CRASH_DATA_NOT_NAMES,
};
void sim_fs_crash(struct sim_fs *s, enum sim_crash_mode mode);

enum sim_op {
    SIM_OP_PWRITE,
    SIM_OP_SYNC,
    SIM_OP_SYNC_DIR,
    SIM_OP_OPEN,
    SIM_OP_TRUNCATE,
    SIM_OP_RENAME,
    SIM_OP__COUNT
};
/* The nth future call of op (1 = the next one) fails with err (e.g. ERR_IO, ERR_NOSPACE).
 * nth = 0 cancels. One pending injection per op. */
void sim_fs_fail_nth(struct sim_fs *s, enum sim_op op, long nth, int err);
/* Capacity of the whole file system in bytes (sum of current file sizes); 0 = unlimited.
 * A pwrite that does not fit writes the part that fits and returns ERR_NOSPACE. */
void sim_fs_set_capacity(struct sim_fs *s, uint64_t bytes);
uint64_t sim_fs_used(struct sim_fs *s);
/* Number of calls of op so far (failed ones included). */
uint64_t sim_fs_calls(struct sim_fs *s, enum sim_op op);

/* Current (page-cache) content of a file; *data is xmalloc'ed (NULL if empty). */
int sim_fs_read_file(struct sim_fs *s, const char *path, uint8_t **data, size_t *len);
/* Content that would survive SIM_CRASH_DROP_UNSYNCED (ignores directory durability). */
int sim_fs_read_durable(struct sim_fs *s, const char *path, uint8_t **data, size_t *len);
/* Create or replace a file with this content, durably (file and directory entry); the parent
 * directory must exist. For tests and fuzzers that build files directly. */
int sim_fs_write_file(struct sim_fs *s, const char *path, const void *data, size_t len);
/* Bit rot: XOR the byte at off with mask, in both current and durable content. */
int sim_fs_corrupt(struct sim_fs *s, const char *path, uint64_t off, uint8_t mask);
/* Durably set a file's length (cuts or zero-extends both current and durable content). */
int sim_fs_set_length(struct sim_fs *s, const char *path, uint64_t len);
/* Number of open handles (leak checks in tests). */
long sim_fs_open_handles(struct sim_fs *s);

#endif
