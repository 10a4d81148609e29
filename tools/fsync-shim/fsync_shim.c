/* fsync_shim.c -- an LD_PRELOAD library that records what a process made durable, so a test can
 * simulate a power loss after SIGKILL (see README.md next to this file).
 *
 * It wraps the libc calls Ayder's storage seam uses (open/openat/creat, fsync/fdatasync, rename/
 * renameat, unlink/unlinkat, mkdir/mkdirat, ftruncate) and appends one text record per event to the
 * file named by FSYNC_SHIM_STATE. Records (paths are absolute, the directory part canonical):
 *
 *     C <path>           a regular file was created (O_CREAT open of a name that did not exist)
 *     M <path>           a directory was created
 *     S <size> <path>    a regular file was fsynced/fdatasynced; <size> is its size just BEFORE the
 *                        call started, so every byte below it was written before the sync began
 *     d <id> <path>      a directory fsync is about to start (id unique in this process)
 *     D <id>             ... and it succeeded: every C/M/R under <path> recorded before the
 *                        matching
 *                        "d" is now durably linked
 *     R <old> <new>      a rename succeeded
 *     U <path>           an unlink succeeded
 *     T <size> <path>    an ftruncate succeeded (informational)
 *     K <copy> <path>    (only with FSYNC_SHIM_BACKUP) the file at <path> that the next R (as its
 *                        <new>) or U of <path> replaced or removed is kept, hard-linked, at
 *                        <copy>: a test that undoes that R or U can bring the old file back
 *
 * Invariants:
 *  1. A record is written with ONE write(2) on an O_APPEND descriptor, so records from different
 *     threads never interleave and every record written before SIGKILL is in the file (the kernel
 *     holds it; no user-space buffering).
 *  2. Only successful operations produce S/D/R/U/M/C/T records; a failed fsync records nothing, so
 *     the test never believes data durable whose sync failed.
 *  3. The begin marker "d" is written before the directory fsync starts and creation records are
 *     written after the creation finished, so "C before d" implies the creation preceded the sync
 *     (conservative in both directions).
 *  4. The wrapped call's result and errno are returned unchanged; the shim never changes behaviour.
 *
 * Paths outside FSYNC_SHIM_ROOT (when set) are not recorded. Without FSYNC_SHIM_STATE the shim is
 * a pass-through.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#define REC_MAX (2 * PATH_MAX + 64)

static int (*real_open)(const char *, int, ...);
static int (*real_open64)(const char *, int, ...);
static int (*real_openat)(int, const char *, int, ...);
static int (*real_openat64)(int, const char *, int, ...);
static int (*real_creat)(const char *, mode_t);
static int (*real_fsync)(int);
static int (*real_fdatasync)(int);
static int (*real_rename)(const char *, const char *);
static int (*real_renameat)(int, const char *, int, const char *);
static int (*real_unlink)(const char *);
static int (*real_unlinkat)(int, const char *, int);
static int (*real_mkdir)(const char *, mode_t);
static int (*real_mkdirat)(int, const char *, mode_t);
static int (*real_ftruncate)(int, off_t);

static int state_fd = -1;
static const char *backup; /* FSYNC_SHIM_BACKUP: a directory on the same file system */
static atomic_ulong next_backup;
static const char *root;
static size_t root_len;
static atomic_ulong next_id;

static void *sym(const char *name)
{
    return dlsym(RTLD_NEXT, name);
}

__attribute__((constructor)) static void shim_init(void)
{
    real_open = sym("open");
    real_open64 = sym("open64");
    real_openat = sym("openat");
    real_openat64 = sym("openat64");
    real_creat = sym("creat");
    real_fsync = sym("fsync");
    real_fdatasync = sym("fdatasync");
    real_rename = sym("rename");
    real_renameat = sym("renameat");
    real_unlink = sym("unlink");
    real_unlinkat = sym("unlinkat");
    real_mkdir = sym("mkdir");
    real_mkdirat = sym("mkdirat");
    real_ftruncate = sym("ftruncate");
    const char *path = getenv("FSYNC_SHIM_STATE");
    root = getenv("FSYNC_SHIM_ROOT");
    backup = getenv("FSYNC_SHIM_BACKUP");
    if (backup && !*backup)
        backup = NULL;
    root_len = root ? strlen(root) : 0;
    if (path && *path && real_open) {
        int saved = errno;
        state_fd = real_open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
        errno = saved;
    }
}

static int tracked(const char *p)
{
    if (state_fd < 0 || !p || !*p)
        return 0;
    return root_len == 0 || strncmp(p, root, root_len) == 0;
}

static void emit(const char *fmt, ...)
{
    char rec[REC_MAX];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(rec, sizeof rec, fmt, ap);
    va_end(ap);
    if (n <= 0 || (size_t)n >= sizeof rec)
        return; /* never write a cut record */
    int saved = errno;
    ssize_t w = write(state_fd, rec, (size_t)n);
    (void)w;
    errno = saved;
}

/* Canonical absolute path of the file an fd refers to; 0 on success. */
static int fd_path(int fd, char *out, size_t cap)
{
    char link[64];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, out, cap - 1);
    if (n <= 0)
        return -1;
    out[n] = 0;
    if (out[0] != '/' || strstr(out, " (deleted)"))
        return -1;
    return 0;
}

/* Absolute path of (dirfd, path) with the directory part canonicalised (the name itself may not
 * exist, e.g. a rename source afterwards). 0 on success. */
static int abs_path(int dirfd, const char *path, char *out, size_t cap)
{
    char joined[PATH_MAX * 2];
    if (!path)
        return -1;
    if (path[0] == '/') {
        snprintf(joined, sizeof joined, "%s", path);
    } else {
        char base[PATH_MAX];
        if (dirfd == AT_FDCWD) {
            if (!getcwd(base, sizeof base))
                return -1;
        } else if (fd_path(dirfd, base, sizeof base)) {
            return -1;
        }
        snprintf(joined, sizeof joined, "%s/%s", base, path);
    }
    /* strip trailing slashes */
    size_t len = strlen(joined);
    while (len > 1 && joined[len - 1] == '/')
        joined[--len] = 0;
    char *slash = strrchr(joined, '/');
    if (!slash)
        return -1;
    char dir[PATH_MAX];
    const char *name = slash + 1;
    if (slash == joined) {
        snprintf(dir, sizeof dir, "/");
    } else {
        *slash = 0;
        char *r = realpath(joined, dir);
        if (!r)
            return -1;
    }
    int n = snprintf(out, cap, "%s/%s", strcmp(dir, "/") == 0 ? "" : dir, name);
    return (n <= 0 || (size_t)n >= cap) ? -1 : 0;
}

static int exists_at(int dirfd, const char *path)
{
    struct stat st;
    return fstatat(dirfd, path, &st, 0) == 0;
}

static void after_open(int fd, int flags, int existed)
{
    if (fd < 0 || !(flags & O_CREAT) || existed || state_fd < 0)
        return;
    char p[PATH_MAX];
    if (fd_path(fd, p, sizeof p) == 0 && tracked(p))
        emit("C %s\n", p);
}

static mode_t mode_arg(int flags, va_list ap)
{
    if (flags & (O_CREAT | O_TMPFILE))
        return (mode_t)va_arg(ap, int);
    return 0;
}

int open(const char *path, int flags, ...)
{
    va_list ap;
    va_start(ap, flags);
    mode_t mode = mode_arg(flags, ap);
    va_end(ap);
    int existed = (flags & O_CREAT) && state_fd >= 0 ? exists_at(AT_FDCWD, path) : 1;
    int fd = real_open(path, flags, mode);
    int saved = errno;
    after_open(fd, flags, existed);
    errno = saved;
    return fd;
}

int open64(const char *path, int flags, ...)
{
    va_list ap;
    va_start(ap, flags);
    mode_t mode = mode_arg(flags, ap);
    va_end(ap);
    int existed = (flags & O_CREAT) && state_fd >= 0 ? exists_at(AT_FDCWD, path) : 1;
    int fd = (real_open64 ? real_open64 : real_open)(path, flags, mode);
    int saved = errno;
    after_open(fd, flags, existed);
    errno = saved;
    return fd;
}

int openat(int dirfd, const char *path, int flags, ...)
{
    va_list ap;
    va_start(ap, flags);
    mode_t mode = mode_arg(flags, ap);
    va_end(ap);
    int existed = (flags & O_CREAT) && state_fd >= 0 ? exists_at(dirfd, path) : 1;
    int fd = real_openat(dirfd, path, flags, mode);
    int saved = errno;
    after_open(fd, flags, existed);
    errno = saved;
    return fd;
}

int openat64(int dirfd, const char *path, int flags, ...)
{
    va_list ap;
    va_start(ap, flags);
    mode_t mode = mode_arg(flags, ap);
    va_end(ap);
    int existed = (flags & O_CREAT) && state_fd >= 0 ? exists_at(dirfd, path) : 1;
    int fd = (real_openat64 ? real_openat64 : real_openat)(dirfd, path, flags, mode);
    int saved = errno;
    after_open(fd, flags, existed);
    errno = saved;
    return fd;
}

int creat(const char *path, mode_t mode)
{
    int existed = state_fd >= 0 ? exists_at(AT_FDCWD, path) : 1;
    int fd = real_creat(path, mode);
    int saved = errno;
    after_open(fd, O_CREAT, existed);
    errno = saved;
    return fd;
}

static int do_sync(int fd, int (*fn)(int))
{
    if (state_fd < 0)
        return fn(fd);
    char p[PATH_MAX];
    struct stat st;
    int have = fd_path(fd, p, sizeof p) == 0 && tracked(p) && fstat(fd, &st) == 0;
    unsigned long id = 0;
    if (have && S_ISDIR(st.st_mode)) {
        id = atomic_fetch_add(&next_id, 1) + 1;
        emit("d %lu %s\n", id, p);
    }
    int rc = fn(fd);
    int saved = errno;
    if (rc == 0 && have) {
        if (S_ISDIR(st.st_mode))
            emit("D %lu\n", id);
        else if (S_ISREG(st.st_mode))
            emit("S %lld %s\n", (long long)st.st_size, p);
    }
    errno = saved;
    return rc;
}

int fsync(int fd)
{
    return do_sync(fd, real_fsync);
}

int fdatasync(int fd)
{
    return do_sync(fd, real_fdatasync);
}

/* Before a rename over, or an unlink of, a tracked regular file: hard-link it into the backup
 * directory (copy[0] = 0 if not kept). The caller emits "K" only if the operation succeeded and
 * removes the copy otherwise. */
static void keep_copy(int dirfd, const char *path, char *copy, size_t cap)
{
    copy[0] = 0;
    if (!backup || state_fd < 0)
        return;
    char a[PATH_MAX];
    struct stat st;
    if (abs_path(dirfd, path, a, sizeof a) || !tracked(a) || lstat(a, &st) || !S_ISREG(st.st_mode))
        return;
    int n = snprintf(copy, cap, "%s/%lu", backup, atomic_fetch_add(&next_backup, 1) + 1);
    if (n <= 0 || (size_t)n >= cap || link(a, copy) != 0)
        copy[0] = 0;
}

static void drop_copy(const char *copy)
{
    if (copy[0] && real_unlink)
        real_unlink(copy);
}

static int do_rename(int olddirfd, const char *oldp, int newdirfd, const char *newp, int rc,
                     const char *copy)
{
    int saved = errno;
    if (rc == 0 && state_fd >= 0) {
        char a[PATH_MAX], b[PATH_MAX];
        if (abs_path(olddirfd, oldp, a, sizeof a) == 0 && abs_path(newdirfd, newp, b, sizeof b) == 0
            && (tracked(a) || tracked(b))) {
            if (copy[0])
                emit("K %s %s\n", copy, b);
            emit("R %s %s\n", a, b);
        }
    } else {
        drop_copy(copy);
    }
    errno = saved;
    return rc;
}

int rename(const char *oldp, const char *newp)
{
    char copy[PATH_MAX];
    keep_copy(AT_FDCWD, newp, copy, sizeof copy);
    return do_rename(AT_FDCWD, oldp, AT_FDCWD, newp, real_rename(oldp, newp), copy);
}

int renameat(int olddirfd, const char *oldp, int newdirfd, const char *newp)
{
    char copy[PATH_MAX];
    keep_copy(newdirfd, newp, copy, sizeof copy);
    return do_rename(olddirfd, oldp, newdirfd, newp,
                     real_renameat(olddirfd, oldp, newdirfd, newp), copy);
}

/* The path is resolved before the call (the directory part must still exist afterwards). */
static int do_path_event(char tag, int dirfd, const char *path, int rc, const char *copy)
{
    int saved = errno;
    if (rc == 0 && state_fd >= 0) {
        char a[PATH_MAX];
        if (abs_path(dirfd, path, a, sizeof a) == 0 && tracked(a)) {
            if (copy[0])
                emit("K %s %s\n", copy, a);
            emit("%c %s\n", tag, a);
        }
    } else {
        drop_copy(copy);
    }
    errno = saved;
    return rc;
}

int unlink(const char *path)
{
    char copy[PATH_MAX];
    keep_copy(AT_FDCWD, path, copy, sizeof copy);
    return do_path_event('U', AT_FDCWD, path, real_unlink(path), copy);
}

int unlinkat(int dirfd, const char *path, int flags)
{
    char copy[PATH_MAX];
    copy[0] = 0;
    if (!(flags & AT_REMOVEDIR))
        keep_copy(dirfd, path, copy, sizeof copy);
    return do_path_event('U', dirfd, path, real_unlinkat(dirfd, path, flags), copy);
}

int mkdir(const char *path, mode_t mode)
{
    return do_path_event('M', AT_FDCWD, path, real_mkdir(path, mode), "");
}

int mkdirat(int dirfd, const char *path, mode_t mode)
{
    return do_path_event('M', dirfd, path, real_mkdirat(dirfd, path, mode), "");
}

int ftruncate(int fd, off_t size)
{
    int rc = real_ftruncate(fd, size);
    int saved = errno;
    if (rc == 0 && state_fd >= 0) {
        char p[PATH_MAX];
        if (fd_path(fd, p, sizeof p) == 0 && tracked(p))
            emit("T %lld %s\n", (long long)size, p);
    }
    errno = saved;
    return rc;
}

int ftruncate64(int fd, off_t size)
{
    return ftruncate(fd, size);
}
