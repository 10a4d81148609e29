/* snapx.c -- snapshot transfer: chunk codec, sender thread, staging receiver, durable install.
 *
 * A leader streams its snapshot S (snapshot/<S>.snap + every file under topics/) to a follower
 * that is behind the journal tail; the follower stages the files under DATA/snap-incoming/ and,
 * when Raft tells it to install, swaps them into DATA with snapx_install. Wire and marker
 * layouts: docs/DISK_FORMAT.md "Snapshot transfer".
 *
 * Receiver states (per struct snapx_rx, one stream key = xfer_id, snap_index, snap_term):
 *
 *      any --seq 0 (wipe staging)--> ACTIVE --END, counts match (fsync, COMPLETE)--> COMPLETE
 *                                      |
 *                                      +--gap / repeat / bad counts / I/O error--> BROKEN
 *   (IDLE at creation; BROKEN and COMPLETE refuse/ignore the rest of their stream)
 *
 * Install phases (snapx_install / snapx_recover), on disk:
 *
 *   COMPLETE staged --write INSTALLING--> steps 1-4 --unlink COMPLETE--> step 5 --unlink
 *   INSTALLING--> done
 *
 * Invariants:
 *  1. Chunk bytes are external input: every field is validated (ERR_INVALID), never asserted.
 *     Paths are relative, [A-Za-z0-9._-] components, no "." / "..", bounded in length and depth,
 *     so staging can never write outside DATA/snap-incoming/.
 *  2. The receiver writes each file exactly once, from offset 0 upwards without holes (a new
 *     file is created with IO_EXCL), and fsyncs it at its eof chunk; COMPLETE is written (tmp,
 *     fsync, rename, dir fsync) only after every staged directory and DATA were fsynced, so a
 *     durable COMPLETE implies durable staged data.
 *  3. INSTALLING is durable before the first change to DATA/topics, snapshot/ or journal/, and
 *     is removed only after every step is durable: after a crash, either no marker survived and
 *     the old state is intact, or snapx_recover finishes the install.
 *  4. While snap-incoming/COMPLETE exists, steps 1-4 may be unfinished; it is deleted (durably)
 *     only after they are all durable, so a recovery never redoes step 1 over the new topics.
 *     "topics.old exists" means step 1 is done, "topics exists" (with topics.old) step 2.
 *  5. A directory that was renamed has every directory inside it fsynced at its new path
 *     before its new parent, and the new parent before the old one: a crash can leave the tree
 *     under both names (the simulator models that), never under neither.
 *  6. done() runs exactly once per started sender, on its thread; if start fails it never runs.
 */
#include "core/snapx.h"

#include "base/alloc.h"
#include "base/assert.h"
#include "base/clock.h"
#include "base/crc32c.h"
#include "base/err.h"
#include "base/hash.h"
#include "base/log.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#define CHUNK_MAGIC 0x58535941u    /* "AYSX" */
#define COMPLETE_MAGIC 0x43535941u /* "AYSC" */
#define INSTALL_MAGIC 0x49535941u  /* "AYSI" */
#define CHUNK_VERSION 1
#define MARKER_VERSION 1
#define CHUNK_HDR_BYTES 34
#define COMPLETE_BYTES 48
#define INSTALL_BYTES 20
#define OFFSET_MAX (1ull << 62)
#define SNAP_NAME_LEN 25 /* 20 digits + ".snap" */

/* ---------------------------------------------------------------------------------------------- */
/* Paths and directory helpers                                                                    */

static void snap_name(char out[32], uint64_t index)
{
    snprintf(out, 32, "%020" PRIu64 ".snap", index);
}

struct names {
    char **v;
    size_t n, cap;
    int rc;
};

static int names_add(void *ctx, const char *name)
{
    struct names *l = ctx;
    if (l->n == SNAPX_FILES_MAX) {
        l->rc = ERR_INVALID;
        return 1;
    }
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 16;
        char **v = xrealloc(l->v, cap * sizeof *v);
        if (!v) {
            l->rc = ERR_NOMEM;
            return 1;
        }
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n] = xstrndup(name, strlen(name));
    if (!l->v[l->n]) {
        l->rc = ERR_NOMEM;
        return 1;
    }
    l->n++;
    return 0;
}

static void names_free(struct names *l)
{
    for (size_t i = 0; i < l->n; i++)
        xfree(l->v[i]);
    xfree(l->v);
    memset(l, 0, sizeof *l);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The names in dir, sorted (names are collected first so callers may change dir meanwhile). */
static int list_names(struct io_fs *fs, const char *dir, struct names *out)
{
    memset(out, 0, sizeof *out);
    int rc = io_list(fs, dir, names_add, out);
    if (out->rc)
        rc = out->rc;
    if (rc) {
        names_free(out);
        return rc < 0 ? rc : ERR_IO;
    }
    if (out->n > 1)
        qsort(out->v, out->n, sizeof *out->v, cmp_str);
    return 0;
}

static int stop_fn(void *ctx, const char *name)
{
    (void)ctx;
    (void)name;
    return 1;
}

/* io_fs has no stat: a path is a directory iff it can be listed. */
static bool is_dir(struct io_fs *fs, const char *path)
{
    return io_list(fs, path, stop_fn, NULL) >= 0;
}

static bool exists(struct io_fs *fs, const char *path)
{
    return io_exists(fs, path) == 1;
}

/* Remove path (a file or a directory tree); a missing path is fine. */
static int rm_tree(struct io_fs *fs, const char *path, int depth)
{
    int rc = io_exists(fs, path);
    if (rc <= 0)
        return rc;
    if (!is_dir(fs, path)) {
        rc = io_unlink(fs, path);
        return rc == ERR_NOT_FOUND ? 0 : rc;
    }
    if (depth > SNAPX_DEPTH_MAX + 2)
        return ERR_INVALID;
    struct names l;
    rc = list_names(fs, path, &l);
    for (size_t i = 0; !rc && i < l.n; i++) {
        char *c = io_path_join(path, l.v[i]);
        rc = c ? rm_tree(fs, c, depth + 1) : ERR_NOMEM;
        xfree(c);
    }
    names_free(&l);
    if (!rc)
        rc = io_rmdir(fs, path);
    return rc == ERR_NOT_FOUND ? 0 : rc;
}

/* fsync every directory in the tree at path (children first, path last). */
static int sync_tree(struct io_fs *fs, const char *path, int depth)
{
    if (depth > SNAPX_DEPTH_MAX + 2)
        return ERR_INVALID;
    struct names l;
    int rc = list_names(fs, path, &l);
    if (rc)
        return rc;
    for (size_t i = 0; !rc && i < l.n; i++) {
        char *c = io_path_join(path, l.v[i]);
        if (!c)
            rc = ERR_NOMEM;
        else if (is_dir(fs, c))
            rc = sync_tree(fs, c, depth + 1);
        xfree(c);
    }
    names_free(&l);
    if (!rc)
        rc = io_sync_dir(fs, path);
    return rc;
}

/* Read a whole small marker file of exactly len bytes whose last 4 are a CRC of the rest and
 * whose first 4 are magic. ERR_NOT_FOUND if absent, ERR_CORRUPT if anything is off. */
static int read_marker(struct io_fs *fs, const char *path, uint32_t magic, uint8_t *b, size_t len)
{
    int rc = io_exists(fs, path);
    if (rc <= 0)
        return rc ? rc : ERR_NOT_FOUND;
    struct io_file *f = NULL;
    rc = io_open(fs, path, IO_RDONLY, &f);
    if (rc)
        return rc;
    uint64_t size = 0;
    rc = io_size(f, &size);
    if (!rc && size != len)
        rc = ERR_CORRUPT;
    if (!rc)
        rc = io_pread_full(f, b, len, 0);
    io_close(f);
    if (rc)
        return rc == ERR_EOF ? ERR_CORRUPT : rc;
    if (get_le32(b) != magic || get_le32(b + 4) != MARKER_VERSION ||
        crc32c(0, b, len - 4) != get_le32(b + len - 4))
        return ERR_CORRUPT;
    return 0;
}

/* ---------------------------------------------------------------------------------------------- */
/* Chunk codec                                                                                    */

static bool name_char_ok(uint8_t ch)
{
    return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
           ch == '.' || ch == '_' || ch == '-';
}

bool snapx_path_valid(struct slice p, uint64_t snap_index)
{
    if (p.len == 0 || p.len >= SNAPX_PATH_MAX || !p.ptr)
        return false;
    char want[48];
    char sn[32];
    snap_name(sn, snap_index);
    snprintf(want, sizeof want, "snapshot/%s", sn);
    if (slice_eq_cstr(p, want))
        return true;
    if (p.len < 8 || memcmp(p.ptr, "topics/", 7) != 0)
        return false;
    size_t ncomp = 0, start = 0;
    for (size_t i = 0; i <= p.len; i++) {
        if (i < p.len && p.ptr[i] != '/') {
            if (!name_char_ok(p.ptr[i]))
                return false;
            continue;
        }
        size_t n = i - start;
        if (n == 0 || n > SNAPX_NAME_MAX)
            return false;
        if ((n == 1 && p.ptr[start] == '.') ||
            (n == 2 && p.ptr[start] == '.' && p.ptr[start + 1] == '.'))
            return false;
        ncomp++;
        start = i + 1;
    }
    return ncomp >= 2 && ncomp <= SNAPX_DEPTH_MAX;
}

static bool chunk_ok(const struct snapx_chunk *c)
{
    if (c->snap_index == 0)
        return false;
    if (c->kind == SNAPX_FILE) {
        return snapx_path_valid(c->path, c->snap_index) && c->data.len <= SNAPX_CHUNK_BYTES &&
               (c->data.len == 0 || c->data.ptr) && c->offset <= OFFSET_MAX;
    }
    if (c->kind == SNAPX_END)
        return c->n_files >= 1 && c->n_files <= SNAPX_FILES_MAX;
    return false;
}

int snapx_chunk_encode(const struct snapx_chunk *c, struct sbuf *out)
{
    if (!chunk_ok(c))
        return ERR_INVALID;
    size_t start = out->len;
    uint8_t h[CHUNK_HDR_BYTES];
    put_le32(h, CHUNK_MAGIC);
    h[4] = CHUNK_VERSION;
    h[5] = c->kind;
    put_le64(h + 6, c->snap_index);
    put_le64(h + 14, c->snap_term);
    put_le64(h + 22, c->xfer_id);
    put_le32(h + 30, c->seq);
    sbuf_append(out, h, sizeof h);
    if (c->kind == SNAPX_FILE) {
        uint8_t pl[2] = {(uint8_t)c->path.len, (uint8_t)(c->path.len >> 8)};
        sbuf_append(out, pl, 2);
        sbuf_append(out, c->path.ptr, c->path.len);
        sbuf_put_le64(out, c->offset);
        sbuf_putc(out, c->eof ? 1 : 0);
        sbuf_put_le32(out, (uint32_t)c->data.len);
        if (c->data.len)
            sbuf_append(out, c->data.ptr, c->data.len);
    } else {
        sbuf_put_le32(out, c->n_files);
        sbuf_put_le64(out, c->total_bytes);
    }
    if (!sbuf_ok(out))
        return ERR_NOMEM;
    sbuf_put_le32(out, crc32c(0, out->data + start, out->len - start));
    return sbuf_ok(out) ? 0 : ERR_NOMEM;
}

int snapx_chunk_decode(struct slice in, struct snapx_chunk *c)
{
    memset(c, 0, sizeof *c);
    if (in.len < CHUNK_HDR_BYTES + 4 || in.len > SNAPX_CHUNK_ENCODED_MAX)
        return ERR_INVALID;
    size_t body = in.len - 4;
    if (crc32c(0, in.ptr, body) != get_le32(in.ptr + body))
        return ERR_INVALID;
    struct reader r = reader_of(slice_of(in.ptr, body));
    uint32_t magic = 0;
    uint8_t version = 0, eof = 0;
    rd_le32(&r, &magic);
    rd_u8(&r, &version);
    rd_u8(&r, &c->kind);
    rd_le64(&r, &c->snap_index);
    rd_le64(&r, &c->snap_term);
    rd_le64(&r, &c->xfer_id);
    rd_le32(&r, &c->seq);
    if (r.bad || magic != CHUNK_MAGIC || version != CHUNK_VERSION)
        return ERR_INVALID;
    if (c->kind == SNAPX_FILE) {
        struct slice pl;
        uint32_t dlen = 0;
        if (!rd_bytes(&r, 2, &pl))
            return ERR_INVALID;
        rd_bytes(&r, (size_t)pl.ptr[0] | (size_t)pl.ptr[1] << 8, &c->path);
        rd_le64(&r, &c->offset);
        rd_u8(&r, &eof);
        rd_le32(&r, &dlen);
        if (r.bad || eof > 1 || dlen > SNAPX_CHUNK_BYTES)
            return ERR_INVALID;
        rd_bytes(&r, dlen, &c->data);
        c->eof = eof == 1;
    } else if (c->kind == SNAPX_END) {
        rd_le32(&r, &c->n_files);
        rd_le64(&r, &c->total_bytes);
    } else {
        return ERR_INVALID;
    }
    if (r.bad || rd_left(&r) != 0 || !chunk_ok(c)) {
        memset(c, 0, sizeof *c);
        return ERR_INVALID;
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------------- */
/* Sender                                                                                         */

struct snapx_sender {
    struct io_fs *fs;
    char *data_dir;
    uint64_t index, term, to, xfer_id;
    snapx_send_fn send;
    snapx_done_fn done;
    void *ctx;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    atomic_bool cancel;
    atomic_bool finished;
    uint64_t deadline_ms;
    uint32_t seq, n_files;
    uint64_t total_bytes;
    uint8_t *buf;
    struct sbuf enc;
    char rel[SNAPX_PATH_MAX];
};

static uint64_t random_id(const void *salt)
{
    uint64_t v = 0;
    if (getrandom(&v, sizeof v, GRND_NONBLOCK) == (ssize_t)sizeof v && v)
        return v;
    static atomic_uint_fast64_t counter;
    uint64_t mix[4] = {clock_mono_ns(), (uint64_t)clock_wall_ms(), (uint64_t)(uintptr_t)salt,
                       (uint64_t)atomic_fetch_add(&counter, 1)};
    v = hash_bytes(mix, sizeof mix, 0x736e617078ull);
    return v ? v : 1;
}

/* Wait ~2 ms, or less if cancelled. */
static void backoff(struct snapx_sender *s)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_nsec += 2 * 1000 * 1000;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&s->mu);
    if (!atomic_load(&s->cancel))
        pthread_cond_timedwait(&s->cond, &s->mu, &ts);
    pthread_mutex_unlock(&s->mu);
}

static int send_chunk(struct snapx_sender *s, struct snapx_chunk *c)
{
    c->snap_index = s->index;
    c->snap_term = s->term;
    c->xfer_id = s->xfer_id;
    c->seq = s->seq;
    sbuf_reset(&s->enc);
    int rc = snapx_chunk_encode(c, &s->enc);
    if (rc)
        return rc;
    for (;;) {
        if (atomic_load(&s->cancel))
            return ERR_UNAVAILABLE;
        rc = s->send(s->ctx, s->to, slice_of(s->enc.data, s->enc.len));
        if (rc != ERR_AGAIN)
            break;
        if (clock_mono_ms() >= s->deadline_ms)
            return ERR_TIMEOUT;
        backoff(s);
    }
    if (!rc)
        s->seq++;
    return rc;
}

/* Stream one file; rel (in s->rel) is its relative path. A missing file is ERR_NOT_FOUND. */
static int stream_file(struct snapx_sender *s, const char *path)
{
    if (s->n_files >= SNAPX_FILES_MAX)
        return ERR_INVALID;
    struct io_file *f = NULL;
    int rc = io_open(s->fs, path, IO_RDONLY, &f);
    if (rc)
        return rc;
    uint64_t size = 0, off = 0;
    rc = io_size(f, &size);
    while (!rc) {
        uint64_t left = size - off;
        size_t n = left < SNAPX_CHUNK_BYTES ? (size_t)left : SNAPX_CHUNK_BYTES;
        size_t got = 0;
        if (n) {
            rc = io_pread(f, s->buf, n, off, &got);
            if (!rc && got != n)
                rc = ERR_AGAIN; /* shrank under us: this stream cannot be consistent */
            if (rc)
                break;
        }
        struct snapx_chunk c = {.kind = SNAPX_FILE, .path = slice_cstr(s->rel), .offset = off,
                                .eof = off + n == size, .data = slice_of(s->buf, n)};
        rc = send_chunk(s, &c);
        if (rc)
            break;
        off += n;
        s->total_bytes += n;
        if (off == size) {
            s->n_files++;
            break;
        }
    }
    io_close(f);
    return rc;
}

/* Stream every file under dir (whose relative path is s->rel[0..rel_len)). */
static int walk(struct snapx_sender *s, const char *dir, size_t rel_len, int depth)
{
    if (depth >= SNAPX_DEPTH_MAX)
        return ERR_INVALID;
    struct names l;
    int rc = list_names(s->fs, dir, &l);
    if (rc)
        return rc == ERR_NOT_FOUND ? ERR_AGAIN : rc;
    for (size_t i = 0; !rc && i < l.n; i++) {
        if (atomic_load(&s->cancel)) {
            rc = ERR_UNAVAILABLE;
            break;
        }
        size_t nl = strlen(l.v[i]);
        if (rel_len + 1 + nl >= SNAPX_PATH_MAX) {
            LOG_E("snapx", "path too long under %s: %s", dir, l.v[i]);
            rc = ERR_INVALID;
            break;
        }
        s->rel[rel_len] = '/';
        memcpy(s->rel + rel_len + 1, l.v[i], nl + 1);
        char *full = io_path_join(dir, l.v[i]);
        if (!full) {
            rc = ERR_NOMEM;
            break;
        }
        if (is_dir(s->fs, full)) {
            rc = walk(s, full, rel_len + 1 + nl, depth + 1);
        } else if (!snapx_path_valid(slice_of(s->rel, rel_len + 1 + nl), s->index)) {
            LOG_E("snapx", "cannot stream %s: its name is not allowed in a transfer", full);
            rc = ERR_INVALID;
        } else {
            rc = stream_file(s, full);
            if (rc == ERR_NOT_FOUND)
                rc = ERR_AGAIN; /* deleted (retention, topic delete) since the listing */
        }
        xfree(full);
    }
    names_free(&l);
    return rc;
}

static int sender_run(struct snapx_sender *s)
{
    char sn[32];
    snap_name(sn, s->index);
    snprintf(s->rel, sizeof s->rel, "snapshot/%s", sn);
    char *sdir = io_path_join(s->data_dir, "snapshot");
    char *spath = sdir ? io_path_join(sdir, sn) : NULL;
    int rc = spath ? stream_file(s, spath) : ERR_NOMEM;
    xfree(sdir);
    xfree(spath);
    if (rc)
        return rc; /* ERR_NOT_FOUND: S was replaced by a newer checkpoint */
    char *tdir = io_path_join(s->data_dir, "topics");
    if (!tdir)
        return ERR_NOMEM;
    if (exists(s->fs, tdir)) {
        memcpy(s->rel, "topics", 7);
        rc = walk(s, tdir, 6, 1);
    }
    xfree(tdir);
    if (rc)
        return rc;
    struct snapx_chunk end = {.kind = SNAPX_END, .n_files = s->n_files,
                              .total_bytes = s->total_bytes};
    return send_chunk(s, &end);
}

static void *sender_main(void *arg)
{
    struct snapx_sender *s = arg;
    pthread_setname_np(pthread_self(), "ayder-snapsend");
    int rc = sender_run(s);
    if (rc && rc != ERR_UNAVAILABLE)
        LOG_W("snapx", "snapshot %" PRIu64 " to node %" PRIu64 ": %s", s->index, s->to,
              err_message(rc));
    s->done(s->ctx, s->to, s->index, s->term, rc);
    atomic_store(&s->finished, true);
    return NULL;
}

int snapx_sender_start(struct io_fs *fs, const char *data_dir, uint64_t snap_index,
                       uint64_t snap_term, uint64_t to, snapx_send_fn send, snapx_done_fn done,
                       void *ctx, struct snapx_sender **out)
{
    if (!fs || !data_dir || !send || !done || !out || snap_index == 0)
        return ERR_INVALID;
    struct snapx_sender *s = xcalloc(1, sizeof *s);
    if (!s)
        return ERR_NOMEM;
    s->data_dir = xstrndup(data_dir, strlen(data_dir));
    s->buf = xmalloc(SNAPX_CHUNK_BYTES);
    if (!s->data_dir || !s->buf) {
        xfree(s->data_dir);
        xfree(s->buf);
        xfree(s);
        return ERR_NOMEM;
    }
    s->fs = fs;
    s->index = snap_index;
    s->term = snap_term;
    s->to = to;
    s->send = send;
    s->done = done;
    s->ctx = ctx;
    s->xfer_id = random_id(s);
    s->deadline_ms = clock_mono_ms() + SNAPX_SEND_DEADLINE_MS;
    atomic_init(&s->cancel, false);
    atomic_init(&s->finished, false);
    sbuf_init(&s->enc, 0);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cond, &ca);
    pthread_condattr_destroy(&ca);
    if (pthread_create(&s->thread, NULL, sender_main, s) != 0) {
        pthread_cond_destroy(&s->cond);
        pthread_mutex_destroy(&s->mu);
        xfree(s->data_dir);
        xfree(s->buf);
        xfree(s);
        return ERR_NOMEM;
    }
    *out = s;
    return 0;
}

void snapx_sender_free(struct snapx_sender *s)
{
    if (!s)
        return;
    pthread_mutex_lock(&s->mu);
    atomic_store(&s->cancel, true);
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->thread, NULL);
    pthread_cond_destroy(&s->cond);
    pthread_mutex_destroy(&s->mu);
    sbuf_free(&s->enc);
    xfree(s->buf);
    xfree(s->data_dir);
    xfree(s);
}

bool snapx_sender_finished(const struct snapx_sender *s)
{
    return atomic_load(&((struct snapx_sender *)s)->finished);
}

uint64_t snapx_sender_xfer_id(const struct snapx_sender *s) { return s->xfer_id; }

/* ---------------------------------------------------------------------------------------------- */
/* Receiver                                                                                       */

enum rx_state { RX_IDLE, RX_ACTIVE, RX_BROKEN, RX_COMPLETE };

struct snapx_rx {
    struct io_fs *fs;
    char *data_dir;
    char *stage; /* DATA/snap-incoming */
    char *path;  /* scratch: stage + "/" + relative path */
    size_t stage_len;
    enum rx_state st;
    uint64_t xfer_id, index, term;
    uint32_t next_seq;
    struct io_file *cur; /* the file being received, if any */
    char cur_rel[SNAPX_PATH_MAX];
    uint64_t cur_off;
    char last_dir[SNAPX_PATH_MAX]; /* parent directory last created */
    uint32_t n_files;
    uint64_t total_bytes;
    bool have_snap;
    bool held; /* snapx_rx_hold */
};

int snapx_rx_new(struct io_fs *fs, const char *data_dir, struct snapx_rx **out)
{
    struct snapx_rx *rx = xcalloc(1, sizeof *rx);
    if (!rx)
        return ERR_NOMEM;
    rx->fs = fs;
    rx->data_dir = xstrndup(data_dir, strlen(data_dir));
    rx->stage = io_path_join(data_dir, "snap-incoming");
    rx->stage_len = rx->stage ? strlen(rx->stage) : 0;
    rx->path = xmalloc(rx->stage_len + SNAPX_PATH_MAX + 2);
    if (!rx->data_dir || !rx->stage || !rx->path) {
        snapx_rx_free(rx);
        return ERR_NOMEM;
    }
    rx->st = RX_IDLE;
    *out = rx;
    return 0;
}

static void rx_close_cur(struct snapx_rx *rx)
{
    if (rx->cur)
        io_close(rx->cur);
    rx->cur = NULL;
}

void snapx_rx_free(struct snapx_rx *rx)
{
    if (!rx)
        return;
    rx_close_cur(rx);
    xfree(rx->data_dir);
    xfree(rx->stage);
    xfree(rx->path);
    xfree(rx);
}

/* Set rx->path to stage/rel. */
static const char *rx_path(struct snapx_rx *rx, const char *rel, size_t len)
{
    memcpy(rx->path, rx->stage, rx->stage_len);
    rx->path[rx->stage_len] = '/';
    memcpy(rx->path + rx->stage_len + 1, rel, len);
    rx->path[rx->stage_len + 1 + len] = 0;
    return rx->path;
}

static int rx_break(struct snapx_rx *rx, int rc)
{
    rx_close_cur(rx);
    rx->st = RX_BROKEN;
    return rc;
}

static int rx_begin(struct snapx_rx *rx, const struct snapx_chunk *c)
{
    rx_close_cur(rx);
    rx->xfer_id = c->xfer_id;
    rx->index = c->snap_index;
    rx->term = c->snap_term;
    rx->next_seq = 0;
    rx->n_files = 0;
    rx->total_bytes = 0;
    rx->have_snap = false;
    rx->last_dir[0] = 0;
    rx->st = RX_BROKEN;
    int rc = rm_tree(rx->fs, rx->stage, 0);
    if (!rc)
        rc = io_mkdir(rx->fs, rx->stage);
    if (!rc)
        rc = io_mkdir(rx->fs, rx_path(rx, "topics", 6));
    if (!rc)
        rc = io_mkdir(rx->fs, rx_path(rx, "snapshot", 8));
    if (rc) {
        LOG_E("snapx", "cannot prepare %s: %s", rx->stage, err_message(rc));
        return rc;
    }
    rx->st = RX_ACTIVE;
    return 0;
}

/* Create the parent directories of rel inside the staging. */
static int rx_make_parents(struct snapx_rx *rx, struct slice rel)
{
    size_t plen = rel.len;
    while (plen > 0 && rel.ptr[plen - 1] != '/')
        plen--;
    if (plen == 0)
        return ERR_INVALID;
    plen--; /* without the '/' */
    if (strlen(rx->last_dir) == plen && memcmp(rx->last_dir, rel.ptr, plen) == 0)
        return 0;
    for (size_t i = 0; i <= plen; i++) {
        if (i < plen && rel.ptr[i] != '/')
            continue;
        int rc = io_mkdir(rx->fs, rx_path(rx, (const char *)rel.ptr, i));
        if (rc)
            return rc;
    }
    memcpy(rx->last_dir, rel.ptr, plen);
    rx->last_dir[plen] = 0;
    return 0;
}

static int rx_file(struct snapx_rx *rx, const struct snapx_chunk *c)
{
    int rc;
    if (rx->cur) {
        if (!slice_eq_cstr(c->path, rx->cur_rel) || c->offset != rx->cur_off)
            return rx_break(rx, ERR_AGAIN);
    } else {
        if (c->offset != 0 || rx->n_files >= SNAPX_FILES_MAX)
            return rx_break(rx, ERR_AGAIN);
        rc = rx_make_parents(rx, c->path);
        if (!rc)
            rc = io_open(rx->fs, rx_path(rx, (const char *)c->path.ptr, c->path.len),
                         IO_CREATE | IO_EXCL | IO_RDWR, &rx->cur);
        if (rc) {
            rx->cur = NULL;
            /* a repeated file, or a file where a directory is: the stream is inconsistent */
            return rx_break(rx, rc == ERR_CONFLICT ? ERR_AGAIN : rc);
        }
        memcpy(rx->cur_rel, c->path.ptr, c->path.len);
        rx->cur_rel[c->path.len] = 0;
        rx->cur_off = 0;
    }
    if (c->data.len) {
        rc = io_pwrite(rx->cur, c->data.ptr, c->data.len, c->offset);
        if (rc)
            return rx_break(rx, rc);
    }
    rx->cur_off += c->data.len;
    rx->total_bytes += c->data.len;
    if (c->eof) {
        /* Durable now, so that completing the staging needs only directory fsyncs. */
        rc = io_sync(rx->cur);
        if (rc)
            return rx_break(rx, rc);
        rx_close_cur(rx);
        rx->n_files++;
        if (memcmp(rx->cur_rel, "snapshot/", 9) == 0)
            rx->have_snap = true;
    }
    return 0;
}

static int rx_end(struct snapx_rx *rx, const struct snapx_chunk *c)
{
    if (rx->cur || !rx->have_snap || c->n_files != rx->n_files ||
        c->total_bytes != rx->total_bytes)
        return rx_break(rx, ERR_AGAIN);
    int rc = sync_tree(rx->fs, rx->stage, 0);
    if (!rc)
        rc = io_sync_dir(rx->fs, rx->data_dir);
    uint8_t b[COMPLETE_BYTES];
    memset(b, 0, sizeof b);
    put_le32(b, COMPLETE_MAGIC);
    put_le32(b + 4, MARKER_VERSION);
    put_le64(b + 8, rx->index);
    put_le64(b + 16, rx->term);
    put_le64(b + 24, rx->xfer_id);
    put_le32(b + 32, rx->n_files);
    put_le64(b + 36, rx->total_bytes);
    put_le32(b + 44, crc32c(0, b, 44));
    if (!rc)
        rc = io_replace_file(rx->fs, rx->stage, "COMPLETE", NULL, b, sizeof b);
    if (rc)
        return rx_break(rx, rc);
    rx->st = RX_COMPLETE;
    LOG_I("snapx", "snapshot %" PRIu64 " staged: %" PRIu32 " files, %" PRIu64 " bytes",
          rx->index, rx->n_files, rx->total_bytes);
    return 0;
}

int snapx_rx_chunk(struct snapx_rx *rx, const struct snapx_chunk *c)
{
    if (rx->held)
        return ERR_AGAIN;
    bool same = rx->st != RX_IDLE && c->xfer_id == rx->xfer_id && c->snap_index == rx->index &&
                c->snap_term == rx->term;
    if (!chunk_ok(c))
        return same && rx->st == RX_ACTIVE ? rx_break(rx, ERR_INVALID) : ERR_INVALID;
    if (same && rx->st == RX_COMPLETE)
        return 0; /* a duplicate of a finished stream */
    if (c->seq == 0) {
        int rc = rx_begin(rx, c);
        if (rc)
            return rc;
    } else if (!same) {
        return ERR_AGAIN; /* a late chunk of another stream: leave the current one alone */
    }
    if (rx->st != RX_ACTIVE)
        return ERR_AGAIN;
    if (c->seq != rx->next_seq)
        return rx_break(rx, ERR_AGAIN);
    rx->next_seq++;
    return c->kind == SNAPX_FILE ? rx_file(rx, c) : rx_end(rx, c);
}

bool snapx_rx_complete(struct snapx_rx *rx, uint64_t snap_index, uint64_t snap_term)
{
    return rx->st == RX_COMPLETE && rx->index == snap_index && rx->term == snap_term;
}

void snapx_rx_hold(struct snapx_rx *rx, bool hold) { rx->held = hold; }

void snapx_rx_reset(struct snapx_rx *rx)
{
    rx_close_cur(rx);
    rx->held = false;
    rx->st = RX_IDLE;
    rx->xfer_id = rx->index = rx->term = 0;
    rx->next_seq = 0;
}

/* ---------------------------------------------------------------------------------------------- */
/* Install                                                                                        */

struct dirs {
    const char *data;
    char *si, *complete, *si_topics, *si_snapdir, *installing, *topics, *old, *snapdir, *journal;
};

static void dirs_free(struct dirs *d)
{
    xfree(d->si);
    xfree(d->complete);
    xfree(d->si_topics);
    xfree(d->si_snapdir);
    xfree(d->installing);
    xfree(d->topics);
    xfree(d->old);
    xfree(d->snapdir);
    xfree(d->journal);
}

static int dirs_init(struct dirs *d, const char *data)
{
    memset(d, 0, sizeof *d);
    d->data = data;
    d->si = io_path_join(data, "snap-incoming");
    d->complete = d->si ? io_path_join(d->si, "COMPLETE") : NULL;
    d->si_topics = d->si ? io_path_join(d->si, "topics") : NULL;
    d->si_snapdir = d->si ? io_path_join(d->si, "snapshot") : NULL;
    d->installing = io_path_join(data, "INSTALLING");
    d->topics = io_path_join(data, "topics");
    d->old = io_path_join(data, "topics.old");
    d->snapdir = io_path_join(data, "snapshot");
    d->journal = io_path_join(data, "journal");
    if (!d->si || !d->complete || !d->si_topics || !d->si_snapdir || !d->installing ||
        !d->topics || !d->old || !d->snapdir || !d->journal) {
        dirs_free(d);
        return ERR_NOMEM;
    }
    return 0;
}

/* Step 3's second half: only S's .snap stays in snapshot/. */
static int drop_other_snaps(struct io_fs *fs, const char *snapdir, const char *keep)
{
    struct names l;
    int rc = list_names(fs, snapdir, &l);
    if (rc)
        return rc;
    for (size_t i = 0; !rc && i < l.n; i++) {
        size_t n = strlen(l.v[i]);
        bool snap = n > 5 && strcmp(l.v[i] + n - 5, ".snap") == 0;
        if ((!snap && strcmp(l.v[i], "snapshot.tmp") != 0) || strcmp(l.v[i], keep) == 0)
            continue;
        char *p = io_path_join(snapdir, l.v[i]);
        rc = p ? io_unlink(fs, p) : ERR_NOMEM;
        if (rc == ERR_NOT_FOUND)
            rc = 0;
        xfree(p);
    }
    names_free(&l);
    return rc ? rc : io_sync_dir(fs, snapdir);
}

/* Whether path exists, with I/O errors reported rather than read as "no". */
static int probe(struct io_fs *fs, const char *path, bool *out)
{
    int rc = io_exists(fs, path);
    *out = rc == 1;
    return rc < 0 ? rc : 0;
}

/* Steps 1-4, run only while snap-incoming/COMPLETE exists (invariant 4). */
static int swap_steps(struct io_fs *fs, const struct dirs *d, uint64_t index)
{
    bool have_old, have_topics, have_src;
    int rc = probe(fs, d->old, &have_old);
    if (!rc)
        rc = probe(fs, d->topics, &have_topics);
    if (rc)
        return rc;
    /* 1. Set the old partition logs aside. */
    if (!have_old) {
        if (have_topics) {
            rc = io_rename(fs, d->topics, d->old);
            if (!rc)
                rc = sync_tree(fs, d->old, 0);
        } else {
            rc = io_mkdir(fs, d->old);
        }
        if (!rc)
            rc = io_sync_dir(fs, d->data);
        if (!rc)
            rc = probe(fs, d->topics, &have_topics);
        if (rc)
            return rc;
    }
    /* 2. The staged partition logs become DATA/topics. */
    if (!have_topics) {
        if ((rc = probe(fs, d->si_topics, &have_src)))
            return rc;
        if (!have_src)
            return ERR_CORRUPT; /* no step loses both: see invariant 5 */
        rc = io_rename(fs, d->si_topics, d->topics);
        if (!rc)
            rc = sync_tree(fs, d->topics, 0);
        if (!rc)
            rc = io_sync_dir(fs, d->data);
        if (!rc)
            rc = io_sync_dir(fs, d->si);
        if (rc)
            return rc;
    }
    /* 3. The staged checkpoint replaces every older one. */
    char sn[32];
    snap_name(sn, index);
    char *staged = io_path_join(d->si_snapdir, sn), *dst = io_path_join(d->snapdir, sn);
    bool have_staged = false, have_dst = false;
    rc = (!staged || !dst) ? ERR_NOMEM : io_mkdir(fs, d->snapdir);
    if (!rc)
        rc = io_sync_dir(fs, d->data);
    if (!rc)
        rc = probe(fs, staged, &have_staged);
    if (!rc && have_staged) {
        rc = io_rename(fs, staged, dst);
        if (!rc)
            rc = io_sync_dir(fs, d->snapdir);
        if (!rc)
            rc = io_sync_dir(fs, d->si_snapdir);
    } else if (!rc) {
        rc = probe(fs, dst, &have_dst);
        if (!rc && !have_dst)
            rc = ERR_CORRUPT;
    }
    xfree(staged);
    xfree(dst);
    if (!rc)
        rc = drop_other_snaps(fs, d->snapdir, sn);
    if (rc)
        return rc;
    /* 4. The journal restarts at the snapshot: every entry it held is covered or superseded. */
    bool have_journal;
    if ((rc = probe(fs, d->journal, &have_journal)) || !have_journal)
        return rc;
    struct names l;
    rc = list_names(fs, d->journal, &l);
    for (size_t i = 0; !rc && i < l.n; i++) {
        char *p = io_path_join(d->journal, l.v[i]);
        rc = p ? rm_tree(fs, p, 0) : ERR_NOMEM;
        xfree(p);
    }
    names_free(&l);
    if (!rc)
        rc = io_sync_dir(fs, d->journal);
    return rc;
}

static int install_steps(struct io_fs *fs, const struct dirs *d, uint64_t index)
{
    bool staged;
    int rc = probe(fs, d->complete, &staged);
    if (!rc && staged) {
        rc = swap_steps(fs, d, index);
        /* 5a. From here on steps 1-4 are done. */
        if (!rc)
            rc = io_unlink(fs, d->complete);
        if (!rc)
            rc = io_sync_dir(fs, d->si);
    }
    /* 5b. Remove the leftovers. */
    if (!rc)
        rc = rm_tree(fs, d->si, 0);
    if (!rc)
        rc = rm_tree(fs, d->old, 0);
    /* 6. */
    if (!rc)
        rc = io_sync_dir(fs, d->data);
    if (!rc)
        rc = io_unlink(fs, d->installing);
    if (!rc)
        rc = io_sync_dir(fs, d->data);
    return rc;
}

static int read_installing(struct io_fs *fs, const struct dirs *d, uint64_t *index)
{
    uint8_t b[INSTALL_BYTES];
    int rc = read_marker(fs, d->installing, INSTALL_MAGIC, b, sizeof b);
    if (!rc) {
        *index = get_le64(b + 8);
        if (*index == 0)
            rc = ERR_CORRUPT;
    }
    return rc;
}

int snapx_install(struct io_fs *fs, const char *data_dir, uint64_t snap_index)
{
    struct dirs d;
    int rc = dirs_init(&d, data_dir);
    if (rc)
        return rc;
    uint8_t b[COMPLETE_BYTES];
    rc = read_marker(fs, d.complete, COMPLETE_MAGIC, b, sizeof b);
    if (!rc && get_le64(b + 8) != snap_index)
        rc = ERR_INVALID;
    if (rc)
        goto out;
    int have = io_exists(fs, d.installing);
    if (have < 0) {
        rc = have;
        goto out;
    }
    if (have) {
        /* An install already started (and was not recovered): only the same one may go on. */
        uint64_t idx = 0;
        rc = read_installing(fs, &d, &idx);
        if (!rc && idx != snap_index)
            rc = ERR_CONFLICT;
    } else {
        /* No install in progress: a topics.old is stale; make sure steps 2 and 3 have their
         * sources before the marker commits us to them. */
        char sn[32];
        snap_name(sn, snap_index);
        char *staged = io_path_join(d.si_snapdir, sn);
        rc = !staged ? ERR_NOMEM : exists(fs, staged) ? 0 : ERR_CORRUPT;
        xfree(staged);
        if (!rc)
            rc = rm_tree(fs, d.old, 0);
        if (!rc)
            rc = io_sync_dir(fs, data_dir);
        if (!rc && !exists(fs, d.si_topics)) {
            rc = io_mkdir(fs, d.si_topics);
            if (!rc)
                rc = io_sync_dir(fs, d.si);
        }
        uint8_t m[INSTALL_BYTES];
        put_le32(m, INSTALL_MAGIC);
        put_le32(m + 4, MARKER_VERSION);
        put_le64(m + 8, snap_index);
        put_le32(m + 16, crc32c(0, m, 16));
        if (!rc)
            rc = io_replace_file(fs, data_dir, "INSTALLING", NULL, m, sizeof m);
    }
    if (!rc)
        rc = install_steps(fs, &d, snap_index);
    if (!rc)
        LOG_I("snapx", "installed snapshot %" PRIu64 " into %s", snap_index, data_dir);
out:
    if (rc)
        LOG_E("snapx", "install of snapshot %" PRIu64 " into %s: %s (last failed path: %s, "
              "errno %d)", snap_index, data_dir, err_message(rc), io_last_error_path(),
              io_last_errno());
    dirs_free(&d);
    return rc;
}

int snapx_recover(struct io_fs *fs, const char *data_dir)
{
    struct dirs d;
    int rc = dirs_init(&d, data_dir);
    if (rc)
        return rc;
    int have = io_exists(fs, d.installing);
    if (have < 0) {
        rc = have;
    } else if (have) {
        uint64_t idx = 0;
        rc = read_installing(fs, &d, &idx);
        if (!rc)
            rc = install_steps(fs, &d, idx);
        if (!rc) {
            LOG_I("snapx", "finished the interrupted install of snapshot %" PRIu64, idx);
            rc = 1;
        }
    } else {
        bool any = exists(fs, d.si) || exists(fs, d.old);
        char *tmp = io_path_join(data_dir, "INSTALLING.tmp");
        if (!tmp)
            rc = ERR_NOMEM;
        else if (exists(fs, tmp))
            any = true;
        if (!rc)
            rc = rm_tree(fs, tmp, 0);
        xfree(tmp);
        if (!rc)
            rc = rm_tree(fs, d.si, 0);
        if (!rc)
            rc = rm_tree(fs, d.old, 0);
        if (!rc && any)
            rc = io_sync_dir(fs, data_dir);
    }
    if (rc < 0)
        LOG_E("snapx", "recovery of %s: %s", data_dir, err_message(rc));
    dirs_free(&d);
    return rc;
}
