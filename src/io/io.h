/* io.h -- the I/O seam for storage: files and directories behind one interface.
 *
 * The journal, the partition logs and the snapshot code never call open/pwrite/fsync directly;
 * they go through a struct io_fs. Production uses io_posix_fs() (io_posix.c). Tests use the
 * simulated file system in tests/sim/sim_fs.c, which keeps unsynced writes in memory and can,
 * on a simulated crash, keep, drop or tear them, and inject EIO/ENOSPC at the Nth call.
 *
 * Contract (both implementations):
 *  1. All functions return 0 or a negative ERR_* (err.h); the errno is kept in io_last_errno()
 *     for messages. A short write is reported as an error (ERR_IO or ERR_NOSPACE), never as success.
 *  2. Data written with io_pwrite/io_append is durable only after io_sync on that file returns 0.
 *     A newly created or renamed/unlinked file's directory entry is durable only after
 *     io_sync_dir on its directory returns 0.
 *  3. After io_sync fails, the file's durable contents are unknown: callers must treat it as a
 *     permanent failure (no retry), see journal.h "sticky error".
 *  4. io_pread/io_pwrite on one file may be called from several threads at once (positional I/O).
 *     Everything else on a file is called by its single owner thread.
 */
#ifndef AYDER_IO_IO_H
#define AYDER_IO_IO_H

#include "base/err.h"

#include <stddef.h>
#include <stdint.h>

struct io_fs;
struct io_file;

enum io_open_flags {
    IO_RDONLY = 0,
    IO_RDWR = 1,
    IO_CREATE = 2, /* create if missing (implies RDWR) */
    IO_EXCL = 4,   /* with CREATE: fail with ERR_CONFLICT if it exists */
};

/* Called once per directory entry (not "." or ".."); return non-zero to stop. */
typedef int (*io_list_fn)(void *ctx, const char *name);

struct io_fs_ops {
    int (*open)(struct io_fs *fs, const char *path, int flags, struct io_file **out);
    int (*close)(struct io_file *f);
    int (*pread)(struct io_file *f, void *buf, size_t n, uint64_t off, size_t *got);
    int (*pwrite)(struct io_file *f, const void *buf, size_t n, uint64_t off);
    int (*sync)(struct io_file *f);
    int (*truncate)(struct io_file *f, uint64_t size);
    int (*size)(struct io_file *f, uint64_t *out);
    int (*unlink)(struct io_fs *fs, const char *path);
    int (*rename)(struct io_fs *fs, const char *from, const char *to);
    int (*mkdir)(struct io_fs *fs, const char *path);   /* ok if it exists */
    int (*rmdir)(struct io_fs *fs, const char *path);
    int (*sync_dir)(struct io_fs *fs, const char *path);
    int (*list)(struct io_fs *fs, const char *dir, io_list_fn fn, void *ctx);
    int (*exists)(struct io_fs *fs, const char *path); /* 1, 0, or negative error */
    /* Optional (NULL = unknown): bytes available to this process on path's file system. */
    int (*free_bytes)(struct io_fs *fs, const char *path, uint64_t *out);
};

struct io_fs {
    const struct io_fs_ops *ops;
};

struct io_file {
    struct io_fs *fs;
};

static inline int io_open(struct io_fs *fs, const char *path, int flags, struct io_file **out) { return fs->ops->open(fs, path, flags, out); }
static inline int io_close(struct io_file *f) { return f->fs->ops->close(f); }
static inline int io_pread(struct io_file *f, void *buf, size_t n, uint64_t off, size_t *got) { return f->fs->ops->pread(f, buf, n, off, got); }
static inline int io_pwrite(struct io_file *f, const void *buf, size_t n, uint64_t off) { return f->fs->ops->pwrite(f, buf, n, off); }
static inline int io_sync(struct io_file *f) { return f->fs->ops->sync(f); }
static inline int io_truncate(struct io_file *f, uint64_t size) { return f->fs->ops->truncate(f, size); }
static inline int io_size(struct io_file *f, uint64_t *out) { return f->fs->ops->size(f, out); }
static inline int io_unlink(struct io_fs *fs, const char *path) { return fs->ops->unlink(fs, path); }
static inline int io_rename(struct io_fs *fs, const char *from, const char *to) { return fs->ops->rename(fs, from, to); }
static inline int io_mkdir(struct io_fs *fs, const char *path) { return fs->ops->mkdir(fs, path); }
static inline int io_rmdir(struct io_fs *fs, const char *path) { return fs->ops->rmdir(fs, path); }
static inline int io_sync_dir(struct io_fs *fs, const char *path) { return fs->ops->sync_dir(fs, path); }
static inline int io_list(struct io_fs *fs, const char *dir, io_list_fn fn, void *ctx) { return fs->ops->list(fs, dir, fn, ctx); }
static inline int io_exists(struct io_fs *fs, const char *path) { return fs->ops->exists(fs, path); }
/* ERR_NOT_IMPLEMENTED when the file system cannot tell. */
static inline int io_free_bytes(struct io_fs *fs, const char *path, uint64_t *out)
{
    return fs->ops->free_bytes ? fs->ops->free_bytes(fs, path, out) : ERR_NOT_IMPLEMENTED;
}

/* Helpers over any struct io_fs (io_util.c). */
/* Read exactly n bytes at off; ERR_EOF if the file is shorter. */
int io_pread_full(struct io_file *f, void *buf, size_t n, uint64_t off);
/* "dir/name" in a new heap string (xfree it); NULL when out of memory. */
char *io_path_join(const char *dir, const char *name);
/* Name operations made durable (docs/DISK_FORMAT.md "Name operations"): a file's name is
 * durable only after an fsync of the directory that holds it (contract 2), so every create,
 * rename, unlink or mkdir that recovery relies on goes through one of these, or is followed by an
 * io_sync_dir of its directory before anything depends on it.
 *
 * io_sync_parent fsyncs the directory holding path ("." for a bare name, "/" for "/x").
 * io_rename_durable fsyncs the directory of `to`, then that of `from` if it is another one.
 * io_unlink_durable and io_mkdir_durable fsync the parent after the operation (mkdir: even if the
 * directory already existed, so a directory made by an earlier crashed run becomes durable too). */
int io_sync_parent(struct io_fs *fs, const char *path);
int io_rename_durable(struct io_fs *fs, const char *from, const char *to);
int io_unlink_durable(struct io_fs *fs, const char *path);
int io_mkdir_durable(struct io_fs *fs, const char *path);
/* Replace dir/name with these bytes durably: write dir/tmp_name (NULL: "<name>.tmp"), fsync it,
 * rename it over dir/name, fsync dir. A crash leaves the old file or the new one, never a mix. */
int io_replace_file(struct io_fs *fs, const char *dir, const char *name, const char *tmp_name,
                    const void *data, size_t len);

/* The production file system (POSIX; fdatasync for io_sync). A process-wide singleton. */
struct io_fs *io_posix_fs(void);

/* errno of the last failed call on this thread (0 if none), for log messages. */
int io_last_errno(void);
void io_set_last_errno(int e);
/* The path named by this thread's most recent failed path-based call (open, unlink, rename,
 * mkdir, rmdir, sync_dir, list, exists) of the POSIX file system, or "": for error messages. */
const char *io_last_error_path(void);

#endif
