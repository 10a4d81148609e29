/* sim_fs.c -- in-memory struct io_fs with durable/unsynced state, crashes and fault injection.
 *
 * Model (after SQLite's test6.c crash simulator):
 *   - A node is a file or a directory. A file node holds `dur` (content as of its last successful
 *     sync), `cur` (what reads see: dur plus every unsynced op) and `ops`, the unsynced writes and
 *     truncations in issue order. A node is reference-counted by directory entries and handles.
 *   - Two name tables map paths to nodes: `cur` (what lookups see) and `dur` (as of the last
 *     sync_dir of each entry's parent). sync_dir(d) copies d's direct children from cur to dur.
 *   - sim_fs_crash builds a new table from cur/dur per mode, drops entries whose parent directory
 *     did not survive, rebuilds each surviving file's content from dur + the surviving ops, makes
 *     that the new durable state and invalidates every handle (generation bump).
 *
 * Invariants:
 *   1. For every file node, replaying its ops on dur yields cur.
 *   2. A failed sync drops the file's unsynced ops at once (cur reverts to dur): they never become
 *      durable, even if a later sync of the same file succeeds (fsyncgate).
 *   3. `used` equals the sum of cur lengths of all live file nodes.
 *   4. A stale handle (gen != fs gen) never reads or changes any node.
 */
#include "sim_fs.h"

#include "base/alloc.h"
#include "base/assert.h"
#include "base/err.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------------------------------------- */
/* Data structures                                                                                */

enum op_kind { OP_WRITE, OP_TRUNC };

struct op {
    enum op_kind kind;
    uint64_t off; /* write offset, or new size for OP_TRUNC */
    uint64_t len;
    uint8_t *data;
};

struct bytes {
    uint8_t *p;
    uint64_t len, cap;
};

struct node {
    int refs;
    bool is_dir;
    uint64_t mark; /* crash epoch already resolved */
    struct bytes cur, dur;
    struct op *ops;
    size_t nops, cap_ops;
};

struct entry {
    char *path;
    struct node *node;
};

struct table {
    struct entry *e;
    size_t n, cap;
};

struct sim_fs {
    struct io_fs base;
    pthread_mutex_t mu;
    uint64_t rng;
    uint64_t gen;
    uint64_t epoch;
    struct table cur, dur;
    long fail_nth[SIM_OP__COUNT];
    int fail_err[SIM_OP__COUNT];
    uint64_t calls[SIM_OP__COUNT];
    uint64_t capacity, used;
    long handles;
};

struct sim_file {
    struct io_file base;
    struct sim_fs *s;
    struct node *n;
    uint64_t gen;
    bool writable;
};

static uint64_t rnd(struct sim_fs *s)
{
    /* splitmix64: tiny, seedable, good enough for fault choices. */
    uint64_t z = (s->rng += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static uint64_t rnd_below(struct sim_fs *s, uint64_t n) { return n ? rnd(s) % n : 0; }

/* ---------------------------------------------------------------------------------------------- */
/* Byte buffers and nodes                                                                         */

static void bytes_resize(struct bytes *b, uint64_t len)
{
    if (len > b->cap) {
        uint64_t cap = b->cap ? b->cap : 256;
        while (cap < len)
            cap *= 2;
        uint8_t *p = xrealloc(b->p, (size_t)cap);
        ASSERT(p); /* test-only code: out of memory is fatal */
        b->p = p;
        b->cap = cap;
    }
    if (len > b->len)
        memset(b->p + b->len, 0, (size_t)(len - b->len));
    b->len = len;
}

static void bytes_write(struct bytes *b, uint64_t off, const uint8_t *p, uint64_t n)
{
    if (off + n > b->len)
        bytes_resize(b, off + n);
    if (n)
        memcpy(b->p + off, p, (size_t)n);
}

static void bytes_copy(struct bytes *dst, const struct bytes *src)
{
    bytes_resize(dst, src->len);
    dst->len = src->len;
    if (src->len)
        memcpy(dst->p, src->p, (size_t)src->len);
}

static struct node *node_new(bool is_dir)
{
    struct node *n = xcalloc(1, sizeof *n);
    ASSERT(n);
    n->is_dir = is_dir;
    return n;
}

static void ops_clear(struct node *n)
{
    for (size_t i = 0; i < n->nops; i++)
        xfree(n->ops[i].data);
    n->nops = 0;
}

static void node_unref(struct sim_fs *s, struct node *n)
{
    ASSERT(n->refs > 0);
    if (--n->refs > 0)
        return;
    s->used -= n->cur.len;
    ops_clear(n);
    xfree(n->ops);
    xfree(n->cur.p);
    xfree(n->dur.p);
    xfree(n);
}

static void set_cur_len(struct sim_fs *s, struct node *n, uint64_t len)
{
    s->used = s->used - n->cur.len + len;
    if (len < n->cur.len)
        n->cur.len = len;
    else
        bytes_resize(&n->cur, len);
}

static void op_push(struct node *n, enum op_kind kind, uint64_t off, const void *data, uint64_t len)
{
    if (n->nops == n->cap_ops) {
        n->cap_ops = n->cap_ops ? n->cap_ops * 2 : 8;
        n->ops = xrealloc(n->ops, n->cap_ops * sizeof *n->ops);
        ASSERT(n->ops);
    }
    struct op *o = &n->ops[n->nops++];
    o->kind = kind;
    o->off = off;
    o->len = len;
    o->data = NULL;
    if (kind == OP_WRITE && len) {
        o->data = xmalloc((size_t)len);
        ASSERT(o->data);
        memcpy(o->data, data, (size_t)len);
    }
}

static void op_apply(struct bytes *b, const struct op *o)
{
    if (o->kind == OP_WRITE) {
        bytes_write(b, o->off, o->data, o->len);
    } else if (o->off < b->len) {
        b->len = o->off;
    } else {
        bytes_resize(b, o->off);
    }
}

/* ---------------------------------------------------------------------------------------------- */
/* Name tables                                                                                    */

static bool is_root(const char *path)
{
    return path[0] == 0 || strcmp(path, ".") == 0 || strcmp(path, "/") == 0;
}

/* Length of the parent prefix of path ("a/b/c" -> 3, "c" -> 0). */
static size_t parent_len(const char *path)
{
    const char *slash = strrchr(path, '/');
    return slash ? (size_t)(slash - path) : 0;
}

static bool parent_is(const char *path, const char *dir)
{
    size_t pl = parent_len(path);
    if (is_root(dir))
        return pl == 0;
    return strlen(dir) == pl && memcmp(path, dir, pl) == 0;
}

static long table_find(const struct table *t, const char *path)
{
    for (size_t i = 0; i < t->n; i++)
        if (strcmp(t->e[i].path, path) == 0)
            return (long)i;
    return -1;
}

static void table_put(struct table *t, const char *path, struct node *n)
{
    ASSERT(table_find(t, path) < 0); /* callers delete an existing entry first */
    n->refs++;
    if (t->n == t->cap) {
        t->cap = t->cap ? t->cap * 2 : 16;
        t->e = xrealloc(t->e, t->cap * sizeof *t->e);
        ASSERT(t->e);
    }
    t->e[t->n].path = xstrndup(path, strlen(path));
    ASSERT(t->e[t->n].path);
    t->e[t->n].node = n;
    t->n++;
}

/* Remove entry i, dropping its node reference. */
static void table_del(struct sim_fs *s, struct table *t, size_t i)
{
    xfree(t->e[i].path);
    node_unref(s, t->e[i].node);
    t->e[i] = t->e[t->n - 1];
    t->n--;
}

static void table_clear(struct sim_fs *s, struct table *t)
{
    while (t->n)
        table_del(s, t, t->n - 1);
    xfree(t->e);
    t->e = NULL;
    t->cap = 0;
}

/* Whether path names a directory in cur (the root always exists and has no node). */
static bool dir_exists(struct sim_fs *s, const char *path)
{
    if (is_root(path))
        return true;
    long i = table_find(&s->cur, path);
    return i >= 0 && s->cur.e[i].node->is_dir;
}

static bool parent_exists(struct sim_fs *s, const char *path)
{
    size_t pl = parent_len(path);
    if (pl == 0)
        return true;
    char *p = xstrndup(path, pl);
    ASSERT(p);
    bool ok = dir_exists(s, p);
    xfree(p);
    return ok;
}

/* ---------------------------------------------------------------------------------------------- */
/* Fault injection                                                                                */

static int inject(struct sim_fs *s, enum sim_op op)
{
    s->calls[op]++;
    if (s->fail_nth[op] > 0 && --s->fail_nth[op] == 0)
        return s->fail_err[op];
    return 0;
}

static struct sim_file *as_file(struct io_file *f) { return (struct sim_file *)f; }

static bool stale(const struct sim_file *f) { return f->gen != f->s->gen; }

/* ---------------------------------------------------------------------------------------------- */
/* io_fs operations                                                                               */

static int s_open(struct io_fs *fs, const char *path, int flags, struct io_file **out)
{
    struct sim_fs *s = (struct sim_fs *)fs;
    pthread_mutex_lock(&s->mu);
    int rc = inject(s, SIM_OP_OPEN);
    if (rc)
        goto out;
    long i = table_find(&s->cur, path);
    struct node *n;
    if (i >= 0) {
        n = s->cur.e[i].node;
        if (n->is_dir) {
            rc = ERR_INVALID;
            goto out;
        }
        if ((flags & IO_CREATE) && (flags & IO_EXCL)) {
            rc = ERR_CONFLICT;
            goto out;
        }
    } else {
        if (!(flags & IO_CREATE) || !parent_exists(s, path) || is_root(path)) {
            rc = ERR_NOT_FOUND;
            goto out;
        }
        n = node_new(false);
        table_put(&s->cur, path, n);
    }
    struct sim_file *f = xcalloc(1, sizeof *f);
    ASSERT(f);
    f->base.fs = fs;
    f->s = s;
    f->n = n;
    n->refs++;
    f->gen = s->gen;
    f->writable = (flags & (IO_RDWR | IO_CREATE)) != 0;
    s->handles++;
    *out = &f->base;
out:
    pthread_mutex_unlock(&s->mu);
    return rc;
}

static int s_close(struct io_file *file)
{
    struct sim_file *f = as_file(file);
    struct sim_fs *s = f->s;
    pthread_mutex_lock(&s->mu);
    node_unref(s, f->n);
    s->handles--;
    pthread_mutex_unlock(&s->mu);
    xfree(f);
    return 0;
}

static int s_pread(struct io_file *file, void *buf, size_t n, uint64_t off, size_t *got)
{
    struct sim_file *f = as_file(file);
    struct sim_fs *s = f->s;
    pthread_mutex_lock(&s->mu);
    int rc = 0;
    *got = 0;
    if (stale(f)) {
        rc = ERR_IO;
    } else if (off < f->n->cur.len) {
        uint64_t avail = f->n->cur.len - off;
        size_t k = avail < n ? (size_t)avail : n;
        memcpy(buf, f->n->cur.p + off, k);
        *got = k;
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

static int s_pwrite(struct io_file *file, const void *buf, size_t n, uint64_t off)
{
    struct sim_file *f = as_file(file);
    struct sim_fs *s = f->s;
    pthread_mutex_lock(&s->mu);
    int rc = 0;
    if (stale(f)) {
        rc = ERR_IO;
        goto out;
    }
    if (!f->writable) {
        rc = ERR_INVALID;
        goto out;
    }
    if ((rc = inject(s, SIM_OP_PWRITE)) != 0)
        goto out;
    struct node *nd = f->n;
    uint64_t len = n;
    if (s->capacity) {
        uint64_t new_len = off + n > nd->cur.len ? off + n : nd->cur.len;
        if (s->used - nd->cur.len + new_len > s->capacity) {
            /* Write the part that fits, then report ENOSPC (a short write is an error). */
            uint64_t room = s->capacity - (s->used - nd->cur.len);
            len = room > off ? room - off : 0;
            if (len > n)
                len = n;
            rc = ERR_NOSPACE;
        }
    }
    if (len) {
        op_push(nd, OP_WRITE, off, buf, len);
        if (off + len > nd->cur.len)
            set_cur_len(s, nd, off + len);
        memcpy(nd->cur.p + off, buf, (size_t)len);
    }
out:
    pthread_mutex_unlock(&s->mu);
    return rc;
}

/* Everything written so far becomes durable (invariant 1: dur + ops == cur). */
static void make_durable(struct node *n)
{
    bytes_copy(&n->dur, &n->cur);
    ops_clear(n);
}

static int s_sync(struct io_file *file)
{
    struct sim_file *f = as_file(file);
    struct sim_fs *s = f->s;
    pthread_mutex_lock(&s->mu);
    int rc = 0;
    if (stale(f)) {
        rc = ERR_IO;
    } else if ((rc = inject(s, SIM_OP_SYNC)) != 0) {
        /* fsyncgate: the dirty pages are dropped (marked clean without reaching the disk), so
         * reads fall back to the durable content and a later sync reports success without
         * them. The error is reported once. */
        struct node *nd = f->n;
        ops_clear(nd);
        set_cur_len(s, nd, nd->dur.len);
        if (nd->dur.len)
            memcpy(nd->cur.p, nd->dur.p, (size_t)nd->dur.len);
    } else {
        make_durable(f->n);
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

static int s_truncate(struct io_file *file, uint64_t size)
{
    struct sim_file *f = as_file(file);
    struct sim_fs *s = f->s;
    pthread_mutex_lock(&s->mu);
    int rc = 0;
    if (stale(f)) {
        rc = ERR_IO;
    } else if (!f->writable) {
        rc = ERR_INVALID;
    } else if ((rc = inject(s, SIM_OP_TRUNCATE)) != 0) {
        /* injected */
    } else if (s->capacity && size > f->n->cur.len &&
               s->used - f->n->cur.len + size > s->capacity) {
        rc = ERR_NOSPACE;
    } else {
        op_push(f->n, OP_TRUNC, size, NULL, 0);
        set_cur_len(s, f->n, size);
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

static int s_size(struct io_file *file, uint64_t *out)
{
    struct sim_file *f = as_file(file);
    struct sim_fs *s = f->s;
    pthread_mutex_lock(&s->mu);
    int rc = stale(f) ? ERR_IO : 0;
    if (!rc)
        *out = f->n->cur.len;
    pthread_mutex_unlock(&s->mu);
    return rc;
}

static int s_unlink(struct io_fs *fs, const char *path)
{
    struct sim_fs *s = (struct sim_fs *)fs;
    pthread_mutex_lock(&s->mu);
    int rc = 0;
    long i = table_find(&s->cur, path);
    if (i < 0)
        rc = ERR_NOT_FOUND;
    else if (s->cur.e[i].node->is_dir)
        rc = ERR_INVALID;
    else
        table_del(s, &s->cur, (size_t)i);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

static bool has_prefix_dir(const char *path, const char *dir, size_t dl)
{
    return strncmp(path, dir, dl) == 0 && path[dl] == '/';
}

static int s_rename(struct io_fs *fs, const char *from, const char *to)
{
    struct sim_fs *s = (struct sim_fs *)fs;
    pthread_mutex_lock(&s->mu);
    int rc = inject(s, SIM_OP_RENAME);
    if (rc)
        goto out;
    long i = table_find(&s->cur, from);
    if (i < 0 || !parent_exists(s, to)) {
        rc = ERR_NOT_FOUND;
        goto out;
    }
    if (strcmp(from, to) == 0)
        goto out;
    struct node *n = s->cur.e[i].node;
    long t = table_find(&s->cur, to);
    if (t >= 0) {
        if (s->cur.e[t].node->is_dir != n->is_dir) {
            rc = ERR_CONFLICT;
            goto out;
        }
        table_del(s, &s->cur, (size_t)t);
        i = table_find(&s->cur, from);
    }
    /* Move the entry and, for a directory, every entry under it. */
    size_t fl = strlen(from), tl = strlen(to);
    for (size_t k = 0; k < s->cur.n; k++) {
        char *p = s->cur.e[k].path;
        if ((long)k != i && !has_prefix_dir(p, from, fl))
            continue;
        size_t rest = strlen(p) - fl;
        char *np = xmalloc(tl + rest + 1);
        ASSERT(np);
        memcpy(np, to, tl);
        memcpy(np + tl, p + fl, rest + 1);
        xfree(p);
        s->cur.e[k].path = np;
    }
out:
    pthread_mutex_unlock(&s->mu);
    return rc;
}

static int s_mkdir(struct io_fs *fs, const char *path)
{
    struct sim_fs *s = (struct sim_fs *)fs;
    pthread_mutex_lock(&s->mu);
    int rc = 0;
    long i = table_find(&s->cur, path);
    if (is_root(path)) {
        /* exists */
    } else if (i >= 0) {
        rc = s->cur.e[i].node->is_dir ? 0 : ERR_CONFLICT;
    } else if (!parent_exists(s, path)) {
        rc = ERR_NOT_FOUND;
    } else {
        struct node *n = node_new(true);
        table_put(&s->cur, path, n);
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

static int s_rmdir(struct io_fs *fs, const char *path)
{
    struct sim_fs *s = (struct sim_fs *)fs;
    pthread_mutex_lock(&s->mu);
    int rc = 0;
    long i = table_find(&s->cur, path);
    if (i < 0 || !s->cur.e[i].node->is_dir) {
        rc = ERR_NOT_FOUND;
    } else {
        for (size_t k = 0; k < s->cur.n; k++)
            if (parent_is(s->cur.e[k].path, path))
                rc = ERR_CONFLICT; /* not empty */
        if (!rc)
            table_del(s, &s->cur, (size_t)i);
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

static int s_sync_dir(struct io_fs *fs, const char *path)
{
    struct sim_fs *s = (struct sim_fs *)fs;
    pthread_mutex_lock(&s->mu);
    int rc = inject(s, SIM_OP_SYNC_DIR);
    if (rc)
        goto out;
    if (!dir_exists(s, path)) {
        rc = ERR_NOT_FOUND;
        goto out;
    }
    for (size_t k = s->dur.n; k-- > 0;)
        if (parent_is(s->dur.e[k].path, path))
            table_del(s, &s->dur, k);
    for (size_t k = 0; k < s->cur.n; k++)
        if (parent_is(s->cur.e[k].path, path))
            table_put(&s->dur, s->cur.e[k].path, s->cur.e[k].node);
out:
    pthread_mutex_unlock(&s->mu);
    return rc;
}

static int s_list(struct io_fs *fs, const char *dir, io_list_fn fn, void *ctx)
{
    struct sim_fs *s = (struct sim_fs *)fs;
    pthread_mutex_lock(&s->mu);
    if (!dir_exists(s, dir)) {
        pthread_mutex_unlock(&s->mu);
        return ERR_NOT_FOUND;
    }
    /* Copy the names so fn may call back into the file system. */
    size_t cnt = 0;
    char **names = xcalloc(s->cur.n + 1, sizeof *names);
    ASSERT(names);
    for (size_t k = 0; k < s->cur.n; k++) {
        const char *p = s->cur.e[k].path;
        if (!parent_is(p, dir))
            continue;
        size_t pl = parent_len(p);
        const char *base = pl ? p + pl + 1 : p;
        names[cnt++] = xstrndup(base, strlen(base));
    }
    pthread_mutex_unlock(&s->mu);
    int rc = 0;
    for (size_t k = 0; k < cnt; k++) {
        if (!rc)
            rc = fn(ctx, names[k]);
        xfree(names[k]);
    }
    xfree(names);
    return rc;
}

static int s_exists(struct io_fs *fs, const char *path)
{
    struct sim_fs *s = (struct sim_fs *)fs;
    pthread_mutex_lock(&s->mu);
    int r = is_root(path) || table_find(&s->cur, path) >= 0;
    pthread_mutex_unlock(&s->mu);
    return r;
}

static const struct io_fs_ops sim_ops = {
    .open = s_open, .close = s_close, .pread = s_pread, .pwrite = s_pwrite, .sync = s_sync,
    .truncate = s_truncate, .size = s_size, .unlink = s_unlink, .rename = s_rename,
    .mkdir = s_mkdir, .rmdir = s_rmdir, .sync_dir = s_sync_dir, .list = s_list,
    .exists = s_exists,
};

/* ---------------------------------------------------------------------------------------------- */
/* Crash                                                                                          */

/* Tear one write: keep a random prefix, maybe followed by garbage up to the op's end. */
static void apply_torn(struct sim_fs *s, struct bytes *b, const struct op *o)
{
    if (o->kind == OP_TRUNC || rnd_below(s, 3) == 0) {
        if (o->kind == OP_TRUNC && rnd_below(s, 2))
            op_apply(b, o);
        return; /* dropped */
    }
    uint64_t keep = rnd_below(s, o->len);
    bytes_write(b, o->off, o->data, keep);
    /* Garbage only lands in newly allocated space: a torn overwrite of existing bytes leaves
     * each sector old or new, never random. */
    uint64_t gstart = o->off + keep > b->len ? o->off + keep : b->len;
    if (rnd_below(s, 2) && o->off + o->len > gstart) {
        uint64_t g = 1 + rnd_below(s, o->off + o->len - gstart);
        uint8_t *junk = xmalloc((size_t)g);
        ASSERT(junk);
        for (uint64_t i = 0; i < g; i++)
            junk[i] = (uint8_t)rnd(s);
        bytes_write(b, gstart, junk, g);
        xfree(junk);
    }
}

static void resolve_node(struct sim_fs *s, struct node *n, enum sim_crash_mode mode)
{
    if (n->is_dir || n->mark == s->epoch)
        return;
    n->mark = s->epoch;
    struct bytes b = {0};
    bytes_copy(&b, &n->dur);
    size_t cut = n->nops;
    if (mode == SIM_CRASH_DROP_UNSYNCED)
        cut = 0; /* SIM_CRASH_DATA_NOT_NAMES keeps every op, like KEEP_ALL */
    else if (mode == SIM_CRASH_RANDOM)
        cut = (size_t)rnd_below(s, n->nops + 1);
    for (size_t i = 0; i < n->nops; i++) {
        const struct op *o = &n->ops[i];
        if (mode == SIM_CRASH_RANDOM_UNORDERED) {
            uint64_t r = rnd_below(s, 3);
            if (r == 0)
                op_apply(&b, o);
            else if (r == 2)
                apply_torn(s, &b, o);
        } else if (i < cut) {
            op_apply(&b, o);
        } else if (i == cut && mode == SIM_CRASH_RANDOM) {
            apply_torn(s, &b, o);
        }
    }
    ops_clear(n);
    set_cur_len(s, n, b.len);
    if (b.len)
        memcpy(n->cur.p, b.p, (size_t)b.len);
    bytes_copy(&n->dur, &b);
    xfree(b.p);
}

static bool in_list(char **list, size_t n, const char *s)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(list[i], s) == 0)
            return true;
    return false;
}

void sim_fs_crash(struct sim_fs *s, enum sim_crash_mode mode)
{
    pthread_mutex_lock(&s->mu);
    s->gen++;
    s->epoch++;
    struct table next = {0};
    if (mode == SIM_CRASH_KEEP_ALL || mode == SIM_CRASH_DROP_UNSYNCED ||
        mode == SIM_CRASH_DATA_NOT_NAMES) {
        const struct table *src = mode == SIM_CRASH_KEEP_ALL ? &s->cur : &s->dur;
        for (size_t k = 0; k < src->n; k++)
            table_put(&next, src->e[k].path, src->e[k].node);
    } else {
        /* Per parent directory, take either all of cur or all of dur. */
        size_t np = 0;
        char **parents = xcalloc(s->cur.n + s->dur.n + 1, sizeof *parents);
        ASSERT(parents);
        const struct table *both[2] = {&s->cur, &s->dur};
        for (int t = 0; t < 2; t++) {
            for (size_t k = 0; k < both[t]->n; k++) {
                const char *p = both[t]->e[k].path;
                char *par = xstrndup(p, parent_len(p));
                if (in_list(parents, np, par))
                    xfree(par);
                else
                    parents[np++] = par;
            }
        }
        for (size_t i = 0; i < np; i++) {
            const struct table *src = rnd_below(s, 2) ? &s->cur : &s->dur;
            for (size_t k = 0; k < src->n; k++)
                if (parent_is(src->e[k].path, parents[i]))
                    table_put(&next, src->e[k].path, src->e[k].node);
            xfree(parents[i]);
        }
        xfree(parents);
    }
    /* Drop orphans (entries whose parent directory did not survive) until none are left. */
    for (bool changed = true; changed;) {
        changed = false;
        for (size_t k = next.n; k-- > 0;) {
            size_t pl = parent_len(next.e[k].path);
            if (pl == 0)
                continue;
            char *par = xstrndup(next.e[k].path, pl);
            long pi = table_find(&next, par);
            xfree(par);
            if (pi < 0 || !next.e[pi].node->is_dir) {
                table_del(s, &next, k);
                changed = true;
            }
        }
    }
    for (size_t k = 0; k < next.n; k++)
        resolve_node(s, next.e[k].node, mode);
    table_clear(s, &s->cur);
    table_clear(s, &s->dur);
    s->cur = next;
    for (size_t k = 0; k < next.n; k++)
        table_put(&s->dur, next.e[k].path, next.e[k].node);
    pthread_mutex_unlock(&s->mu);
}

/* ---------------------------------------------------------------------------------------------- */
/* Construction and test helpers                                                                  */

struct sim_fs *sim_fs_new(uint64_t seed)
{
    struct sim_fs *s = xcalloc(1, sizeof *s);
    ASSERT(s);
    s->base.ops = &sim_ops;
    s->rng = seed;
    pthread_mutex_init(&s->mu, NULL);
    return s;
}

struct io_fs *sim_fs_io(struct sim_fs *s) { return &s->base; }

void sim_fs_free(struct sim_fs *s)
{
    if (!s)
        return;
    ASSERT(s->handles == 0);
    table_clear(s, &s->cur);
    table_clear(s, &s->dur);
    pthread_mutex_destroy(&s->mu);
    xfree(s);
}

void sim_fs_fail_nth(struct sim_fs *s, enum sim_op op, long nth, int err)
{
    pthread_mutex_lock(&s->mu);
    s->fail_nth[op] = nth;
    s->fail_err[op] = err;
    pthread_mutex_unlock(&s->mu);
}

void sim_fs_set_capacity(struct sim_fs *s, uint64_t bytes)
{
    pthread_mutex_lock(&s->mu);
    s->capacity = bytes;
    pthread_mutex_unlock(&s->mu);
}

uint64_t sim_fs_used(struct sim_fs *s)
{
    pthread_mutex_lock(&s->mu);
    uint64_t u = s->used;
    pthread_mutex_unlock(&s->mu);
    return u;
}

uint64_t sim_fs_calls(struct sim_fs *s, enum sim_op op)
{
    pthread_mutex_lock(&s->mu);
    uint64_t c = s->calls[op];
    pthread_mutex_unlock(&s->mu);
    return c;
}

long sim_fs_open_handles(struct sim_fs *s)
{
    pthread_mutex_lock(&s->mu);
    long h = s->handles;
    pthread_mutex_unlock(&s->mu);
    return h;
}

static struct node *find_file(struct sim_fs *s, const char *path)
{
    long i = table_find(&s->cur, path);
    if (i < 0 || s->cur.e[i].node->is_dir)
        return NULL;
    return s->cur.e[i].node;
}

static int read_bytes(struct sim_fs *s, const char *path, bool durable, uint8_t **data,
                      size_t *len)
{
    pthread_mutex_lock(&s->mu);
    struct node *n = find_file(s, path);
    int rc = 0;
    *data = NULL;
    *len = 0;
    if (!n) {
        rc = ERR_NOT_FOUND;
    } else {
        struct bytes b = {0};
        bytes_copy(&b, durable ? &n->dur : &n->cur);
        *data = b.p;
        *len = (size_t)b.len;
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

int sim_fs_read_file(struct sim_fs *s, const char *path, uint8_t **data, size_t *len)
{
    return read_bytes(s, path, false, data, len);
}

int sim_fs_read_durable(struct sim_fs *s, const char *path, uint8_t **data, size_t *len)
{
    return read_bytes(s, path, true, data, len);
}

int sim_fs_write_file(struct sim_fs *s, const char *path, const void *data, size_t len)
{
    pthread_mutex_lock(&s->mu);
    int rc = 0;
    if (!parent_exists(s, path) || is_root(path)) {
        rc = ERR_NOT_FOUND;
        goto out;
    }
    long i = table_find(&s->cur, path);
    if (i >= 0)
        table_del(s, &s->cur, (size_t)i);
    i = table_find(&s->dur, path);
    if (i >= 0)
        table_del(s, &s->dur, (size_t)i);
    struct node *n = node_new(false);
    set_cur_len(s, n, len);
    if (len)
        memcpy(n->cur.p, data, len);
    bytes_copy(&n->dur, &n->cur);
    table_put(&s->cur, path, n);
    table_put(&s->dur, path, n);
out:
    pthread_mutex_unlock(&s->mu);
    return rc;
}

int sim_fs_corrupt(struct sim_fs *s, const char *path, uint64_t off, uint8_t mask)
{
    pthread_mutex_lock(&s->mu);
    struct node *n = find_file(s, path);
    int rc = 0;
    if (!n)
        rc = ERR_NOT_FOUND;
    else if (off >= n->cur.len)
        rc = ERR_INVALID;
    else {
        n->cur.p[off] ^= mask;
        if (off < n->dur.len)
            n->dur.p[off] ^= mask;
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

int sim_fs_set_length(struct sim_fs *s, const char *path, uint64_t len)
{
    pthread_mutex_lock(&s->mu);
    struct node *n = find_file(s, path);
    int rc = 0;
    if (!n) {
        rc = ERR_NOT_FOUND;
    } else {
        ops_clear(n);
        set_cur_len(s, n, len);
        bytes_copy(&n->dur, &n->cur);
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}
