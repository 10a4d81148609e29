/* io_posix.c -- the production struct io_fs over POSIX calls.
 *
 * Durability notes:
 *  - io_sync is fdatasync(2): it flushes data and the metadata needed to read it back (size),
 *    which is all an append-only file needs.
 *  - A failed fdatasync is returned as an error and never retried here: after a failure Linux may
 *    already have dropped the dirty pages ("fsyncgate"); retrying would report success for data
 *    that is gone. Callers enter a sticky error state (journal.h).
 *  - Short writes: pwrite is looped for EINTR/partial progress; a write that makes no progress
 *    returns ERR_IO or ERR_NOSPACE.
 */
#include "io/io.h"
#include "base/alloc.h"
#include "base/err.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

struct posix_file {
    struct io_file base;
    int fd;
};

static _Thread_local int last_errno;
int io_last_errno(void) { return last_errno; }
void io_set_last_errno(int e) { last_errno = e; }

static int fail(int e)
{
    last_errno = e;
    return err_from_errno(e);
}

/* A failed call that names a path: remember it for the caller's message (io_last_error_path). */
static _Thread_local char last_path[512];

static int fail_at(int e, const char *path)
{
    snprintf(last_path, sizeof last_path, "%s", path);
    return fail(e);
}

const char *io_last_error_path(void) { return last_path; }

static struct io_fs posix_fs;

static int p_open(struct io_fs *fs, const char *path, int flags, struct io_file **out)
{
    int oflags = O_CLOEXEC;
    if (flags & (IO_RDWR | IO_CREATE))
        oflags |= O_RDWR;
    else
        oflags |= O_RDONLY;
    if (flags & IO_CREATE)
        oflags |= O_CREAT;
    if (flags & IO_EXCL)
        oflags |= O_EXCL;
    int fd = open(path, oflags, 0644);
    if (fd < 0)
        return fail_at(errno, path);
    struct posix_file *f = xmalloc(sizeof *f);
    if (!f) {
        close(fd);
        return ERR_NOMEM;
    }
    f->base.fs = fs;
    f->fd = fd;
    *out = &f->base;
    return 0;
}

static int p_close(struct io_file *file)
{
    struct posix_file *f = (struct posix_file *)file;
    int rc = close(f->fd);
    xfree(f);
    return rc < 0 ? fail(errno) : 0;
}

static int p_pread(struct io_file *file, void *buf, size_t n, uint64_t off, size_t *got)
{
    struct posix_file *f = (struct posix_file *)file;
    size_t done = 0;
    while (done < n) {
        ssize_t r = pread(f->fd, (char *)buf + done, n - done, (off_t)(off + done));
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return fail(errno);
        }
        if (r == 0)
            break;
        done += (size_t)r;
    }
    *got = done;
    return 0;
}

static int p_pwrite(struct io_file *file, const void *buf, size_t n, uint64_t off)
{
    struct posix_file *f = (struct posix_file *)file;
    size_t done = 0;
    while (done < n) {
        ssize_t r = pwrite(f->fd, (const char *)buf + done, n - done, (off_t)(off + done));
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return fail(errno);
        }
        if (r == 0)
            return fail(ENOSPC);
        done += (size_t)r;
    }
    return 0;
}

static int p_sync(struct io_file *file)
{
    struct posix_file *f = (struct posix_file *)file;
    if (fdatasync(f->fd) < 0)
        return fail(errno);
    return 0;
}

static int p_truncate(struct io_file *file, uint64_t size)
{
    struct posix_file *f = (struct posix_file *)file;
    if (ftruncate(f->fd, (off_t)size) < 0)
        return fail(errno);
    return 0;
}

static int p_size(struct io_file *file, uint64_t *out)
{
    struct posix_file *f = (struct posix_file *)file;
    struct stat st;
    if (fstat(f->fd, &st) < 0)
        return fail(errno);
    *out = (uint64_t)st.st_size;
    return 0;
}

static int p_unlink(struct io_fs *fs, const char *path)
{
    (void)fs;
    return unlink(path) < 0 ? fail_at(errno, path) : 0;
}

static int p_rename(struct io_fs *fs, const char *from, const char *to)
{
    (void)fs;
    return rename(from, to) < 0 ? fail_at(errno, from) : 0;
}

static int p_mkdir(struct io_fs *fs, const char *path)
{
    (void)fs;
    if (mkdir(path, 0755) < 0 && errno != EEXIST)
        return fail_at(errno, path);
    return 0;
}

static int p_rmdir(struct io_fs *fs, const char *path)
{
    (void)fs;
    return rmdir(path) < 0 ? fail_at(errno, path) : 0;
}

static int p_sync_dir(struct io_fs *fs, const char *path)
{
    (void)fs;
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return fail_at(errno, path);
    int rc = fsync(fd);
    int e = errno;
    close(fd);
    return rc < 0 ? fail_at(e, path) : 0;
}

static int p_list(struct io_fs *fs, const char *dir, io_list_fn fn, void *ctx)
{
    (void)fs;
    DIR *d = opendir(dir);
    if (!d)
        return fail_at(errno, dir);
    struct dirent *de;
    int rc = 0;
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        if ((rc = fn(ctx, de->d_name)) != 0)
            break;
    }
    closedir(d);
    return rc;
}

static int p_exists(struct io_fs *fs, const char *path)
{
    (void)fs;
    struct stat st;
    if (stat(path, &st) == 0)
        return 1;
    return errno == ENOENT ? 0 : fail_at(errno, path);
}

static int p_free_bytes(struct io_fs *fs, const char *path, uint64_t *out)
{
    (void)fs;
    struct statvfs st;
    if (statvfs(path, &st) < 0)
        return fail(errno);
    *out = (uint64_t)st.f_bavail * (uint64_t)st.f_frsize;
    return 0;
}

static const struct io_fs_ops posix_ops = {
    .open = p_open, .close = p_close, .pread = p_pread, .pwrite = p_pwrite, .sync = p_sync,
    .truncate = p_truncate, .size = p_size, .unlink = p_unlink, .rename = p_rename,
    .mkdir = p_mkdir, .rmdir = p_rmdir, .sync_dir = p_sync_dir, .list = p_list, .exists = p_exists,
    .free_bytes = p_free_bytes,
};

static struct io_fs posix_fs = {&posix_ops};

struct io_fs *io_posix_fs(void) { return &posix_fs; }

