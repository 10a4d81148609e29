/* io_util.c -- helpers written once over the I/O seam (any struct io_fs: posix or simulated).
 *
 * Invariants:
 *  1. io_replace_file never leaves dir/name half-written: the new bytes reach it only by a rename
 *     of a fully written and fsynced temporary file, and the rename is made durable by a directory
 *     fsync before it returns 0.
 *  2. The *_durable name operations return 0 only after the directory (both directories, for a
 *     rename across two) holding each changed name was fsynced: POSIX makes a name durable only
 *     then, and a power-loss simulator that undoes every other name change finds nothing to undo.
 */
#include "io/io.h"

#include "base/alloc.h"
#include "base/err.h"

#include <stdio.h>
#include <string.h>

int io_pread_full(struct io_file *f, void *buf, size_t n, uint64_t off)
{
    size_t got = 0;
    int rc = io_pread(f, buf, n, off, &got);
    if (rc)
        return rc;
    return got == n ? 0 : ERR_EOF;
}

char *io_path_join(const char *dir, const char *name)
{
    size_t ld = strlen(dir), ln = strlen(name);
    char *p = xmalloc(ld + ln + 2);
    if (p) {
        memcpy(p, dir, ld);
        p[ld] = '/';
        memcpy(p + ld + 1, name, ln + 1);
    }
    return p;
}

/* The directory part of path in out: "a/b/c" -> "a/b", "/c" -> "/", "c" -> ".". */
static int parent_of(const char *path, char *out, size_t cap)
{
    const char *slash = strrchr(path, '/');
    size_t n = !slash ? 0 : slash == path ? 1 : (size_t)(slash - path);
    if (n + 2 > cap)
        return ERR_INVALID;
    if (n == 0)
        memcpy(out, ".", 2);
    else {
        memcpy(out, path, n);
        out[n] = 0;
    }
    return 0;
}

int io_sync_parent(struct io_fs *fs, const char *path)
{
    char dir[4096];
    int rc = parent_of(path, dir, sizeof dir);
    return rc ? rc : io_sync_dir(fs, dir);
}

int io_rename_durable(struct io_fs *fs, const char *from, const char *to)
{
    char dto[4096], dfrom[4096];
    int rc = parent_of(to, dto, sizeof dto);
    if (!rc)
        rc = parent_of(from, dfrom, sizeof dfrom);
    if (!rc)
        rc = io_rename(fs, from, to);
    /* The new name first: it is the one anything after us relies on. */
    if (!rc)
        rc = io_sync_dir(fs, dto);
    if (!rc && strcmp(dto, dfrom) != 0)
        rc = io_sync_dir(fs, dfrom);
    return rc;
}

int io_unlink_durable(struct io_fs *fs, const char *path)
{
    int rc = io_unlink(fs, path);
    return rc ? rc : io_sync_parent(fs, path);
}

int io_mkdir_durable(struct io_fs *fs, const char *path)
{
    int rc = io_mkdir(fs, path);
    return rc ? rc : io_sync_parent(fs, path);
}

int io_replace_file(struct io_fs *fs, const char *dir, const char *name, const char *tmp_name,
                    const void *data, size_t len)
{
    char tmp_default[256];
    if (!tmp_name) {
        int n = snprintf(tmp_default, sizeof tmp_default, "%s.tmp", name);
        if (n < 0 || (size_t)n >= sizeof tmp_default)
            return ERR_INVALID;
        tmp_name = tmp_default;
    }
    char *tmp = io_path_join(dir, tmp_name);
    char *dst = io_path_join(dir, name);
    int rc = (!tmp || !dst) ? ERR_NOMEM : 0;
    struct io_file *f = NULL;
    if (!rc) {
        io_unlink(fs, tmp);
        rc = io_open(fs, tmp, IO_CREATE | IO_RDWR, &f);
    }
    if (!rc) {
        rc = io_truncate(f, 0);
        if (!rc)
            rc = io_pwrite(f, data, len, 0);
        if (!rc)
            rc = io_sync(f);
        int rc2 = io_close(f);
        if (!rc)
            rc = rc2;
    }
    if (!rc)
        rc = io_rename_durable(fs, tmp, dst);
    xfree(tmp);
    xfree(dst);
    return rc;
}
