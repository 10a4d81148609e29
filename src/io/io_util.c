/* io_util.c -- helpers written once over the I/O seam (any struct io_fs: posix or simulated).
 *
 * Invariant: io_replace_file never leaves dir/name half-written: the new bytes reach it only by
 * a rename of a fully written and fsynced temporary file, and the rename is made durable by a
 * directory fsync before it returns 0.
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
        rc = io_rename(fs, tmp, dst);
    if (!rc)
        rc = io_sync_dir(fs, dir);
    xfree(tmp);
    xfree(dst);
    return rc;
}
