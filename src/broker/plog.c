/* plog.c -- partition logs: segment files of Kafka record batches with a sparse offset index.
 *
 * Lifecycle of the active (last) segment and who moves it:
 *
 *      plog_open ──scan by CRC, cut torn tail──► ACTIVE ──plog_append (size > segment_bytes)──┐
 *                                                  ▲                                          │
 *                                                  └────────── roll: new ACTIVE ◄─────────────┘
 *      old segments: SEALED ──plog_delete_before (entirely below floor)──► unlinked
 *      any segment:  plog_truncate(end) ──► the one holding `end` becomes ACTIVE, later ones go
 *
 * Invariants:
 *  1. Offsets are consecutive: segment i+1's base offset == the end offset of segment i, and every
 *     batch's baseOffset == the end offset of the batch before it. Every batch has
 *     lastOffsetDelta == count - 1 and count >= 1.
 *  2. start_offset <= high_watermark <= end_offset, and segs[0].base <= start_offset.
 *  3. Readers never interpret bytes of records at or above the high watermark they loaded, and
 *     every batch they serve passed recbatch_decode (CRC + structure) in their own buffer.
 *  4. The segment array, a segment's index array pointer and a segment's file handles change only
 *     under the exclusive lock; a segment's index entries below index_len never change while it is
 *     reachable, except under the exclusive lock (truncate).
 *  5. Mutating calls hold wmu, so there is one mutator at a time (lock order: wmu, then lock).
 *  6. Index entries are written by one policy both at append and when rebuilt: before a batch at
 *     byte `pos`, if at least index_interval bytes were appended since the last entry (or since the
 *     segment start), add {base_offset - segment base, pos}. A rebuilt index is therefore
 *     identical to the one appends would have written.
 *  7. Nothing is fsynced on the append path: the journal is the WAL. After a crash, everything
 *     after the last plog_sync may be torn; plog_open keeps the CRC-valid prefix of the last
 *     segment and the owner truncates to its checkpoint (which re-verifies CRCs up to that point).
 */
#include "broker/plog.h"

#include "base/alloc.h"
#include "base/assert.h"
#include "base/crc32c.h"
#include "base/err.h"
#include "base/log.h"
#include "broker/recbatch.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define DIR_MAX 4000
#define PATH_CAP (DIR_MAX + 64)
#define IDX_ENTRY_BYTES 8
#define SCAN_WIN_BYTES (64u << 10)
#define READ_WIN_BYTES (32u << 10)
/* plog_read indexes a batch of up to READ_INDEX_MAX records (32 bytes each: 4 MiB at most) in
 * one walk; a bigger batch (foreign, or of tiny records) is validated, then decoded again. */
#define READ_INDEX_INLINE 16u
#define READ_INDEX_MAX (1u << 17)
#define FLOOR_MAGIC 0x4159464cu /* "AYFL" */
#define FLOOR_BYTES 16

struct idx_entry {
    uint32_t rel; /* batch base offset - segment base */
    uint32_t pos; /* byte position of the batch in the .log */
};

struct segment {
    uint64_t base; /* immutable */
    struct io_file *log, *idx;
    _Atomic uint64_t size;  /* bytes of batches in the .log */
    _Atomic uint64_t end;   /* offset after its last batch */
    _Atomic int64_t max_ts; /* largest batch maxTimestamp known, INT64_MIN if none */
    struct idx_entry *index;
    _Atomic size_t index_len;
    size_t index_cap;        /* mutator only */
    uint64_t since_index;    /* mutator only: bytes since the last index entry (invariant 6) */
    size_t idx_file_entries; /* mutator only: entries in the .idx file */
    bool dirty;              /* mutator only: written since the last sync */
    uint64_t valid_end;      /* mutator only: sealed segment found damaged at open: valid data
                                ends at this offset (else UINT64_MAX) */
};

struct plog {
    struct io_fs *fs;
    char dir[DIR_MAX + 1];
    uint64_t segment_bytes;
    uint32_t index_interval;
    pthread_mutex_t wmu;
    pthread_rwlock_t lock;
    struct segment **segs; /* under lock */
    size_t nsegs, seg_cap;
    _Atomic uint64_t end;
    _Atomic uint64_t hw;
    _Atomic uint64_t start;
    struct sbuf enc; /* mutator: encoding scratch */
    bool dir_dirty;  /* mutator */
    int sticky;      /* mutator: first failed write/sync; refuses further mutation */
};

/* ---------------------------------------------------------------------------------------------
 * Small helpers
 * ------------------------------------------------------------------------------------------- */

static void seg_path(const struct plog *p, uint64_t base, const char *ext, char *out)
{
    snprintf(out, PATH_CAP, "%s/%020" PRIu64 ".%s", p->dir, base, ext);
}

static void file_path(const char *dir, const char *name, char *out)
{
    snprintf(out, PATH_CAP, "%s/%s", dir, name);
}

static uint64_t ld(const _Atomic uint64_t *a) { return atomic_load_explicit(a, memory_order_acquire); }
static void st(_Atomic uint64_t *a, uint64_t v) { atomic_store_explicit(a, v, memory_order_release); }

static struct segment *last_seg(const struct plog *p) { return p->segs[p->nsegs - 1]; }

static void seg_note_ts(struct segment *s, int64_t ts)
{
    if (ts > atomic_load_explicit(&s->max_ts, memory_order_relaxed))
        atomic_store_explicit(&s->max_ts, ts, memory_order_relaxed);
}

/* Largest i with segs[i]->base <= off (0 if none). Caller holds the lock or wmu. */
static size_t seg_find(const struct plog *p, uint64_t off)
{
    size_t lo = 0, hi = p->nsegs;
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if (p->segs[mid]->base <= off)
            lo = mid;
        else
            hi = mid;
    }
    return lo;
}

/* Byte position and offset of the last index entry at or before `off`, else the segment start. */
static void index_lookup(struct segment *s, uint64_t off, uint64_t *pos, uint64_t *at)
{
    size_t n = atomic_load_explicit(&s->index_len, memory_order_acquire);
    uint64_t rel = off - s->base;
    size_t lo = 0, hi = n;
    while (lo < hi) { /* first entry with e.rel > rel */
        size_t mid = lo + (hi - lo) / 2;
        if (s->index[mid].rel <= rel)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == 0) {
        *pos = 0;
        *at = s->base;
    } else {
        *pos = s->index[lo - 1].pos;
        *at = s->base + s->index[lo - 1].rel;
    }
}

/* A window over a file for bounded, mostly sequential reads. */
struct win {
    struct io_file *f;
    uint8_t *buf;
    size_t cap, dflt;
    uint64_t off;
    size_t len;
};

static void win_init(struct win *w, struct io_file *f, size_t dflt)
{
    memset(w, 0, sizeof *w);
    w->f = f;
    w->dflt = dflt;
}

static void win_reset(struct win *w, struct io_file *f)
{
    w->f = f;
    w->off = 0;
    w->len = 0;
}

static void win_free(struct win *w) { xfree(w->buf); }

/* Make [pos, pos + n) available at *ptr. ERR_EOF if the file ends first (then w->off == pos and
 * w->len says how many bytes there were). */
static int win_get(struct win *w, uint64_t pos, size_t n, const uint8_t **ptr)
{
    if (pos >= w->off && pos - w->off <= w->len && w->len - (pos - w->off) >= n) {
        *ptr = w->buf + (pos - w->off);
        return 0;
    }
    size_t want = n > w->dflt ? n : w->dflt;
    if (want > w->cap) {
        uint8_t *nb = xmalloc(want);
        if (!nb)
            return ERR_NOMEM;
        xfree(w->buf);
        w->buf = nb;
        w->cap = want;
    }
    size_t got = 0;
    w->off = pos;
    w->len = 0;
    int rc = io_pread(w->f, w->buf, want, pos, &got);
    if (rc)
        return rc;
    w->len = got;
    if (got < n)
        return ERR_EOF;
    *ptr = w->buf;
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Scanning segments (open, truncate, index rebuild, dump)
 * ------------------------------------------------------------------------------------------- */

struct scan {
    /* in */
    uint64_t stop_offset;  /* stop before the batch starting here (UINT64_MAX: never) */
    uint32_t interval;     /* index policy (invariant 6) */
    bool build_index;
    FILE *dump;            /* print every batch (tools) */
    /* in/out: where the valid data ends so far */
    uint64_t pos, next;
    uint64_t since;
    int64_t max_ts;
    struct idx_entry *index;
    size_t index_len, index_cap;
    /* out: why it stopped */
    bool clean;    /* at the end of the file, on a batch boundary */
    bool hit_stop; /* at a batch starting at stop_offset */
    bool straddle; /* a batch contains stop_offset */
};

static int scan_index_add(struct scan *sc, uint64_t seg_base)
{
    if (sc->index_len == sc->index_cap) {
        size_t cap = sc->index_cap ? sc->index_cap * 2 : 64;
        struct idx_entry *n = xrealloc(sc->index, cap * sizeof *n);
        if (!n)
            return ERR_NOMEM;
        sc->index = n;
        sc->index_cap = cap;
    }
    sc->index[sc->index_len++] = (struct idx_entry){(uint32_t)(sc->next - seg_base),
                                                    (uint32_t)sc->pos};
    return 0;
}

/* Walk batches of f from sc->pos (whose first batch must start at offset sc->next), checking
 * every CRC (whole-batch structure too when it fits the window), until EOF, a bad or torn batch,
 * or stop_offset. Torn data is not an error: it ends the valid prefix. Errors are I/O/NOMEM. */
static int scan_batches(struct io_file *f, uint64_t seg_base, struct scan *sc)
{
    struct win w;
    win_init(&w, f, SCAN_WIN_BYTES);
    int rc = 0;
    for (;;) {
        if (sc->next == sc->stop_offset) {
            sc->hit_stop = true;
            break;
        }
        const uint8_t *hp;
        rc = win_get(&w, sc->pos, RECBATCH_HEADER_BYTES, &hp);
        if (rc == ERR_EOF) {
            sc->clean = w.len == 0;
            if (sc->dump && !sc->clean)
                fprintf(sc->dump, "pos=%" PRIu64 " torn: %zu bytes, less than a header\n",
                        sc->pos, w.len);
            rc = 0;
            break;
        }
        if (rc)
            break;
        struct recbatch_info h;
        const char *why = NULL;
        if (recbatch_peek(hp, RECBATCH_HEADER_BYTES, &h) != 0)
            why = "bad header";
        else if ((uint64_t)h.base_offset != sc->next)
            why = "unexpected base offset";
        else if (h.record_count < 1 || h.last_offset_delta != h.record_count - 1)
            why = "offsets not consecutive";
        else if (sc->pos + h.batch_bytes > UINT32_MAX ||
                 sc->next + (uint64_t)h.record_count - seg_base > UINT32_MAX)
            why = "segment too large";
        if (why) {
            if (sc->dump)
                fprintf(sc->dump, "pos=%" PRIu64 " invalid: %s\n", sc->pos, why);
            break;
        }
        uint64_t last = sc->next + (uint64_t)h.record_count;
        if (sc->stop_offset > sc->next && sc->stop_offset < last) {
            sc->straddle = true;
            break;
        }
        bool ok;
        if (h.batch_bytes <= SCAN_WIN_BYTES) {
            const uint8_t *bp;
            rc = win_get(&w, sc->pos, h.batch_bytes, &bp);
            if (rc && rc != ERR_EOF)
                break;
            ok = rc == 0 && recbatch_decode(slice_of(bp, h.batch_bytes), &h) == 0;
            rc = 0;
        } else { /* stream the CRC through the window: bounded memory */
            uint32_t crc = 0;
            uint64_t at = sc->pos + RECBATCH_CRC_START, stop = sc->pos + h.batch_bytes;
            ok = true;
            while (at < stop) {
                size_t n = stop - at > SCAN_WIN_BYTES ? SCAN_WIN_BYTES : (size_t)(stop - at);
                const uint8_t *cp;
                rc = win_get(&w, at, n, &cp);
                if (rc) {
                    ok = false;
                    break;
                }
                crc = crc32c(crc, cp, n);
                at += n;
            }
            if (rc && rc != ERR_EOF)
                break;
            rc = 0;
            ok = ok && crc == h.crc;
        }
        if (sc->dump)
            fprintf(sc->dump,
                    "pos=%" PRIu64 " offsets=%" PRIu64 "..%" PRIu64 " count=%" PRId32
                    " bytes=%" PRIu32 " base_ts=%" PRId64 " max_ts=%" PRId64 " crc=%s\n",
                    sc->pos, sc->next, last - 1, h.record_count, h.batch_bytes,
                    h.base_timestamp, h.max_timestamp, ok ? "ok" : "BAD");
        if (!ok)
            break;
        if (sc->build_index && sc->since >= sc->interval) {
            if ((rc = scan_index_add(sc, seg_base)) != 0)
                break;
            sc->since = 0;
        }
        sc->since += h.batch_bytes;
        if (h.max_timestamp > sc->max_ts)
            sc->max_ts = h.max_timestamp;
        sc->pos += h.batch_bytes;
        sc->next = last;
    }
    win_free(&w);
    return rc;
}

/* ---------------------------------------------------------------------------------------------
 * Segments
 * ------------------------------------------------------------------------------------------- */

static void seg_free(struct segment *s)
{
    if (s->log)
        io_close(s->log);
    if (s->idx)
        io_close(s->idx);
    xfree(s->index);
    xfree(s);
}

static struct segment *seg_alloc(uint64_t base)
{
    struct segment *s = xcalloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->base = base;
    atomic_init(&s->size, 0);
    atomic_init(&s->end, base);
    atomic_init(&s->max_ts, INT64_MIN);
    atomic_init(&s->index_len, 0);
    s->valid_end = UINT64_MAX;
    return s;
}

static int write_index_entries(struct segment *s, size_t from)
{
    size_t n = atomic_load_explicit(&s->index_len, memory_order_relaxed);
    if (from >= n)
        return 0;
    size_t bytes = (n - from) * IDX_ENTRY_BYTES;
    uint8_t *buf = xmalloc(bytes);
    if (!buf)
        return ERR_NOMEM;
    for (size_t i = from; i < n; i++) {
        put_be32(buf + (i - from) * IDX_ENTRY_BYTES, s->index[i].rel);
        put_be32(buf + (i - from) * IDX_ENTRY_BYTES + 4, s->index[i].pos);
    }
    int rc = io_pwrite(s->idx, buf, bytes, (uint64_t)from * IDX_ENTRY_BYTES);
    xfree(buf);
    if (rc == 0)
        s->idx_file_entries = n;
    return rc;
}

/* Replace the in-memory index of s (not yet reachable by readers) with sc's and rewrite .idx. */
static int seg_adopt_scan(struct segment *s, struct scan *sc)
{
    xfree(s->index);
    s->index = sc->index;
    s->index_cap = sc->index_cap;
    atomic_store_explicit(&s->index_len, sc->index_len, memory_order_relaxed);
    sc->index = NULL;
    s->since_index = sc->since;
    int rc = io_truncate(s->idx, 0);
    if (rc == 0)
        rc = write_index_entries(s, 0);
    s->dirty = true;
    return rc;
}

static int seg_open_files(struct plog *p, struct segment *s, bool create)
{
    char path[PATH_CAP];
    seg_path(p, s->base, "log", path);
    int rc = io_open(p->fs, path, create ? IO_CREATE : IO_RDWR, &s->log);
    if (rc)
        return rc;
    seg_path(p, s->base, "idx", path);
    return io_open(p->fs, path, IO_CREATE, &s->idx);
}

/* A brand-new empty segment at `base` (files created or emptied). */
static int seg_create(struct plog *p, uint64_t base, struct segment **out)
{
    struct segment *s = seg_alloc(base);
    if (!s)
        return ERR_NOMEM;
    int rc = seg_open_files(p, s, true);
    if (rc == 0)
        rc = io_truncate(s->log, 0);
    if (rc == 0)
        rc = io_truncate(s->idx, 0);
    if (rc) {
        seg_free(s);
        return rc;
    }
    s->dirty = true;
    p->dir_dirty = true;
    *out = s;
    return 0;
}

/* Load and check the .idx of a sealed segment whose data should end at offset next_base. */
static int seg_load_index(struct segment *s, uint64_t next_base, bool *ok)
{
    *ok = false;
    uint64_t isz = 0, lsz = atomic_load_explicit(&s->size, memory_order_relaxed);
    int rc = io_size(s->idx, &isz);
    if (rc)
        return rc;
    if (isz % IDX_ENTRY_BYTES != 0 || isz / IDX_ENTRY_BYTES > lsz / RECBATCH_HEADER_BYTES + 1)
        return 0;
    size_t n = (size_t)(isz / IDX_ENTRY_BYTES);
    if (n == 0) {
        *ok = true;
        return 0;
    }
    uint8_t *buf = xmalloc(n * IDX_ENTRY_BYTES);
    struct idx_entry *e = xmalloc(n * sizeof *e);
    if (!buf || !e) {
        xfree(buf);
        xfree(e);
        return ERR_NOMEM;
    }
    rc = io_pread_full(s->idx, buf, n * IDX_ENTRY_BYTES, 0);
    if (rc == ERR_EOF)
        rc = 0, n = 0;
    bool good = rc == 0 && n > 0;
    for (size_t i = 0; good && i < n; i++) {
        e[i].rel = get_be32(buf + i * IDX_ENTRY_BYTES);
        e[i].pos = get_be32(buf + i * IDX_ENTRY_BYTES + 4);
        if (e[i].pos >= lsz || s->base + e[i].rel >= next_base)
            good = false;
        else if (i > 0 && (e[i].rel <= e[i - 1].rel || e[i].pos <= e[i - 1].pos))
            good = false;
    }
    xfree(buf);
    if (!good) {
        xfree(e);
        return rc;
    }
    s->index = e;
    s->index_cap = n;
    atomic_store_explicit(&s->index_len, n, memory_order_relaxed);
    s->idx_file_entries = n;
    *ok = true;
    return 0;
}

/* Walk the batch headers after the last index entry of a sealed segment: they must chain to
 * exactly the end of the file and to offset next_base, and none of them may be one that the
 * index policy (invariant 6) would have indexed (else the index is short). Also learns the
 * tail's max timestamp. */
static int seg_check_tail(struct segment *s, uint64_t next_base, uint32_t interval, bool *ok)
{
    *ok = false;
    uint64_t pos, next, lsz = atomic_load_explicit(&s->size, memory_order_relaxed);
    size_t n = atomic_load_explicit(&s->index_len, memory_order_relaxed);
    index_lookup(s, n ? s->base + s->index[n - 1].rel : s->base, &pos, &next);
    struct win w;
    win_init(&w, s->log, SCAN_WIN_BYTES);
    int rc = 0;
    uint64_t since = 0;
    int64_t max_ts = INT64_MIN;
    while (pos < lsz) {
        const uint8_t *hp;
        struct recbatch_info h;
        rc = win_get(&w, pos, RECBATCH_HEADER_BYTES, &hp);
        if (rc) {
            rc = rc == ERR_EOF ? 0 : rc;
            goto out;
        }
        if (recbatch_peek(hp, RECBATCH_HEADER_BYTES, &h) != 0 || (uint64_t)h.base_offset != next ||
            h.record_count < 1 || h.last_offset_delta != h.record_count - 1)
            goto out;
        if (since >= interval)
            goto out; /* this batch should have an entry: the index is short */
        if (h.max_timestamp > max_ts)
            max_ts = h.max_timestamp;
        since += h.batch_bytes;
        pos += h.batch_bytes;
        next += (uint64_t)h.record_count;
    }
    if (pos == lsz && next == next_base) {
        *ok = true;
        atomic_store_explicit(&s->max_ts, max_ts, memory_order_relaxed);
        s->since_index = since;
    }
out:
    win_free(&w);
    return rc;
}

/* Open a segment that is not the last one. */
static int seg_open_sealed(struct plog *p, struct segment *s, uint64_t next_base)
{
    int rc = seg_open_files(p, s, false);
    uint64_t lsz = 0;
    if (rc == 0)
        rc = io_size(s->log, &lsz);
    if (rc)
        return rc;
    atomic_store_explicit(&s->size, lsz, memory_order_relaxed);
    atomic_store_explicit(&s->end, next_base, memory_order_relaxed);
    bool ok = false;
    if ((rc = seg_load_index(s, next_base, &ok)) != 0)
        return rc;
    if (ok && (rc = seg_check_tail(s, next_base, p->index_interval, &ok)) != 0)
        return rc;
    if (ok)
        return 0;
    /* Missing, short or garbled index, or a damaged segment: rebuild from the .log by CRC. */
    struct scan sc = {.stop_offset = UINT64_MAX, .interval = p->index_interval,
                      .build_index = true, .next = s->base, .max_ts = INT64_MIN};
    rc = scan_batches(s->log, s->base, &sc);
    if (rc == 0) {
        atomic_store_explicit(&s->max_ts, sc.max_ts, memory_order_relaxed);
        rc = seg_adopt_scan(s, &sc);
    }
    xfree(sc.index);
    if (rc)
        return rc;
    if (!sc.clean || sc.next != next_base) {
        s->valid_end = sc.next;
        LOG_W("plog", "%s: segment %020" PRIu64 " valid only up to offset %" PRIu64
              " (byte %" PRIu64 " of %" PRIu64 "), expected %" PRIu64 "; truncate below it",
              p->dir, s->base, sc.next, sc.pos, lsz, next_base);
    } else {
        LOG_I("plog", "%s: rebuilt index of segment %020" PRIu64, p->dir, s->base);
    }
    return 0;
}

/* Open the last segment: keep its CRC-valid prefix, cut the rest, rebuild its index. */
static int seg_open_last(struct plog *p, struct segment *s)
{
    int rc = seg_open_files(p, s, false);
    uint64_t lsz = 0;
    if (rc == 0)
        rc = io_size(s->log, &lsz);
    if (rc)
        return rc;
    struct scan sc = {.stop_offset = UINT64_MAX, .interval = p->index_interval,
                      .build_index = true, .next = s->base, .max_ts = INT64_MIN};
    rc = scan_batches(s->log, s->base, &sc);
    if (rc == 0 && sc.pos != lsz) {
        LOG_W("plog", "%s: segment %020" PRIu64 ": cutting %" PRIu64 " invalid tail bytes at %"
              PRIu64, p->dir, s->base, lsz - sc.pos, sc.pos);
        rc = io_truncate(s->log, sc.pos);
    }
    if (rc == 0) {
        atomic_store_explicit(&s->size, sc.pos, memory_order_relaxed);
        atomic_store_explicit(&s->end, sc.next, memory_order_relaxed);
        atomic_store_explicit(&s->max_ts, sc.max_ts, memory_order_relaxed);
        rc = seg_adopt_scan(s, &sc);
    }
    xfree(sc.index);
    return rc;
}

/* Append an index entry for a batch at (off, pos) of the active segment. */
static int seg_index_add(struct plog *p, struct segment *s, uint64_t off, uint64_t pos)
{
    ASSERT(off - s->base <= UINT32_MAX && pos <= UINT32_MAX);
    size_t n = atomic_load_explicit(&s->index_len, memory_order_relaxed);
    if (n == s->index_cap) {
        /* Readers may be reading the old array: copy (entries below n are immutable), swap the
         * pointer under the exclusive lock, free the old one once no reader can hold it. */
        size_t cap = s->index_cap ? s->index_cap * 2 : 64;
        struct idx_entry *ne = xmalloc(cap * sizeof *ne);
        if (!ne)
            return ERR_NOMEM;
        if (n)
            memcpy(ne, s->index, n * sizeof *ne);
        pthread_rwlock_wrlock(&p->lock);
        struct idx_entry *old = s->index;
        s->index = ne;
        pthread_rwlock_unlock(&p->lock);
        xfree(old);
        s->index_cap = cap;
    }
    s->index[n] = (struct idx_entry){(uint32_t)(off - s->base), (uint32_t)pos};
    atomic_store_explicit(&s->index_len, n + 1, memory_order_release);
    return write_index_entries(s, s->idx_file_entries);
}

/* Make a new empty active segment at the end offset. */
static int roll(struct plog *p)
{
    uint64_t end = atomic_load_explicit(&p->end, memory_order_relaxed);
    struct segment *s;
    int rc = seg_create(p, end, &s);
    if (rc)
        return rc;
    pthread_rwlock_wrlock(&p->lock);
    if (p->nsegs == p->seg_cap) {
        size_t cap = p->seg_cap * 2;
        struct segment **ns = xrealloc(p->segs, cap * sizeof *ns);
        if (!ns) {
            pthread_rwlock_unlock(&p->lock);
            seg_free(s);
            return ERR_NOMEM;
        }
        p->segs = ns;
        p->seg_cap = cap;
    }
    p->segs[p->nsegs++] = s;
    pthread_rwlock_unlock(&p->lock);
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * The floor file: {magic u32, start offset u64, crc32c of the first 12 bytes u32}, big-endian,
 * replaced atomically (tmp, fsync, rename, fsync dir).
 * ------------------------------------------------------------------------------------------- */

static int floor_write(struct plog *p, uint64_t off)
{
    char tmp[PATH_CAP], path[PATH_CAP];
    file_path(p->dir, "floor.tmp", tmp);
    file_path(p->dir, "floor", path);
    uint8_t b[FLOOR_BYTES];
    put_be32(b, FLOOR_MAGIC);
    put_be64(b + 4, off);
    put_be32(b + 12, crc32c(0, b, 12));
    struct io_file *f;
    int rc = io_open(p->fs, tmp, IO_CREATE, &f);
    if (rc)
        return rc;
    rc = io_truncate(f, 0);
    if (rc == 0)
        rc = io_pwrite(f, b, sizeof b, 0);
    if (rc == 0)
        rc = io_sync(f);
    int crc = io_close(f);
    if (rc == 0)
        rc = crc;
    if (rc == 0)
        rc = io_rename_durable(p->fs, tmp, path);
    return rc;
}

/* 1 and *off if a valid floor file exists, 0 if none (or unreadable: logged), or an error. */
static int floor_read(struct plog *p, uint64_t *off)
{
    char path[PATH_CAP];
    file_path(p->dir, "floor", path);
    int rc = io_exists(p->fs, path);
    if (rc <= 0)
        return rc;
    struct io_file *f;
    if ((rc = io_open(p->fs, path, IO_RDONLY, &f)) != 0)
        return rc;
    uint8_t b[FLOOR_BYTES];
    rc = io_pread_full(f, b, sizeof b, 0);
    io_close(f);
    if (rc && rc != ERR_EOF)
        return rc;
    if (rc == ERR_EOF || get_be32(b) != FLOOR_MAGIC || get_be32(b + 12) != crc32c(0, b, 12)) {
        LOG_W("plog", "%s: ignoring a damaged floor file", p->dir);
        return 0;
    }
    *off = get_be64(b + 4);
    return 1;
}

/* ---------------------------------------------------------------------------------------------
 * Open / close
 * ------------------------------------------------------------------------------------------- */

enum { NAME_LOG, NAME_IDX };
struct listing {
    uint64_t *logs;
    size_t nlogs, cap;
    uint64_t *idxs;
    size_t nidxs, icap;
    bool floor_tmp;
    int err;
};

/* "<20 digits>.<ext>" -> base; false if name is not of that form. */
static bool parse_seg_name(const char *name, const char *ext, uint64_t *base)
{
    size_t el = strlen(ext);
    if (strlen(name) != 21 + el || name[20] != '.' || memcmp(name + 21, ext, el) != 0)
        return false;
    uint64_t v = 0;
    for (int i = 0; i < 20; i++) {
        if (name[i] < '0' || name[i] > '9')
            return false;
        uint64_t d = (uint64_t)(name[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *base = v;
    return true;
}

static bool push_u64(uint64_t **a, size_t *n, size_t *cap, uint64_t v)
{
    if (*n == *cap) {
        size_t c = *cap ? *cap * 2 : 16;
        uint64_t *na = xrealloc(*a, c * sizeof *na);
        if (!na)
            return false;
        *a = na;
        *cap = c;
    }
    (*a)[(*n)++] = v;
    return true;
}

static int list_cb(void *ctx, const char *name)
{
    struct listing *l = ctx;
    uint64_t base;
    if (parse_seg_name(name, "log", &base)) {
        if (!push_u64(&l->logs, &l->nlogs, &l->cap, base))
            return l->err = ERR_NOMEM;
    } else if (parse_seg_name(name, "idx", &base)) {
        if (!push_u64(&l->idxs, &l->nidxs, &l->icap, base))
            return l->err = ERR_NOMEM;
    } else if (strcmp(name, "floor.tmp") == 0) {
        l->floor_tmp = true;
    }
    return 0;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void plog_free(struct plog *p)
{
    for (size_t i = 0; i < p->nsegs; i++)
        seg_free(p->segs[i]);
    xfree(p->segs);
    sbuf_free(&p->enc);
    pthread_rwlock_destroy(&p->lock);
    pthread_mutex_destroy(&p->wmu);
    xfree(p);
}

static int open_segments(struct plog *p, struct listing *l)
{
    char path[PATH_CAP];
    /* Stale files: an index without its log, a floor.tmp from an interrupted retention. */
    for (size_t i = 0; i < l->nidxs; i++) {
        if (!l->nlogs || !bsearch(&l->idxs[i], l->logs, l->nlogs, sizeof l->logs[0], cmp_u64)) {
            seg_path(p, l->idxs[i], "idx", path);
            io_unlink(p->fs, path);
        }
    }
    if (l->floor_tmp) {
        file_path(p->dir, "floor.tmp", path);
        io_unlink(p->fs, path);
    }
    uint64_t floor = 0;
    int has_floor = floor_read(p, &floor);
    if (has_floor < 0)
        return has_floor;

    size_t n = l->nlogs ? l->nlogs : 1;
    p->segs = xcalloc(n < 8 ? 8 : n, sizeof *p->segs);
    if (!p->segs)
        return ERR_NOMEM;
    p->seg_cap = n < 8 ? 8 : n;
    int rc;
    if (l->nlogs == 0) {
        atomic_store_explicit(&p->end, has_floor ? floor : 0, memory_order_relaxed);
        struct segment *s;
        if ((rc = seg_create(p, has_floor ? floor : 0, &s)) != 0)
            return rc;
        p->segs[p->nsegs++] = s;
    } else {
        for (size_t i = 0; i < l->nlogs; i++) {
            struct segment *s = seg_alloc(l->logs[i]);
            if (!s)
                return ERR_NOMEM;
            p->segs[p->nsegs++] = s;
            rc = i + 1 < l->nlogs ? seg_open_sealed(p, s, l->logs[i + 1]) : seg_open_last(p, s);
            if (rc)
                return rc;
        }
    }
    uint64_t end = atomic_load_explicit(&last_seg(p)->end, memory_order_relaxed);
    uint64_t start = p->segs[0]->base;
    if (has_floor && floor > start)
        start = floor;
    if (start > end)
        start = end;
    atomic_store_explicit(&p->end, end, memory_order_relaxed);
    atomic_store_explicit(&p->start, start, memory_order_relaxed);
    atomic_store_explicit(&p->hw, end, memory_order_relaxed);
    return 0;
}

int plog_open(struct io_fs *fs, const char *dir, const struct plog_opts *o, struct plog **out)
{
    struct plog_opts opts = o ? *o : (struct plog_opts){0};
    if (!opts.segment_bytes)
        opts.segment_bytes = PLOG_SEGMENT_BYTES_DEFAULT;
    if (!opts.index_interval_bytes)
        opts.index_interval_bytes = PLOG_INDEX_INTERVAL_DEFAULT;
    if (opts.segment_bytes > PLOG_SEGMENT_BYTES_MAX || strlen(dir) > DIR_MAX || !dir[0])
        return ERR_INVALID;
    struct plog *p = xcalloc(1, sizeof *p);
    if (!p)
        return ERR_NOMEM;
    p->fs = fs;
    strcpy(p->dir, dir);
    p->segment_bytes = opts.segment_bytes;
    p->index_interval = opts.index_interval_bytes;
    sbuf_init(&p->enc, 0);
    pthread_mutex_init(&p->wmu, NULL);
    pthread_rwlockattr_t attr;
    pthread_rwlockattr_init(&attr);
    /* The writer needs the exclusive lock only briefly; don't let a stream of readers starve it. */
    pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&p->lock, &attr);
    pthread_rwlockattr_destroy(&attr);
    atomic_init(&p->end, 0);
    atomic_init(&p->hw, 0);
    atomic_init(&p->start, 0);

    struct listing l = {0};
    int rc = io_mkdir(fs, dir);
    if (rc == 0)
        rc = io_list(fs, dir, list_cb, &l);
    if (rc == 0)
        rc = l.err;
    if (rc == 0) {
        if (l.nlogs)
            qsort(l.logs, l.nlogs, sizeof l.logs[0], cmp_u64);
        rc = open_segments(p, &l);
    }
    xfree(l.logs);
    xfree(l.idxs);
    if (rc) {
        LOG_E("plog", "%s: open failed: %s (errno %d)", dir, err_message(rc), io_last_errno());
        plog_free(p);
        return rc;
    }
    *out = p;
    return 0;
}

void plog_close(struct plog *p)
{
    if (p)
        plog_free(p);
}

int plog_destroy(struct plog *p)
{
    char path[PATH_CAP];
    int rc = 0, r;
    for (size_t i = 0; i < p->nsegs; i++) {
        struct segment *s = p->segs[i];
        uint64_t base = s->base;
        seg_free(s);
        p->segs[i] = NULL;
        seg_path(p, base, "log", path);
        if ((r = io_unlink(p->fs, path)) != 0 && !rc)
            rc = r;
        seg_path(p, base, "idx", path);
        if ((r = io_unlink(p->fs, path)) != 0 && !rc)
            rc = r;
    }
    p->nsegs = 0;
    const char *extra[] = {"floor", "floor.tmp"};
    for (size_t i = 0; i < 2; i++) {
        file_path(p->dir, extra[i], path);
        if (io_exists(p->fs, path) == 1 && (r = io_unlink(p->fs, path)) != 0 && !rc)
            rc = r;
    }
    if ((r = io_rmdir(p->fs, p->dir)) != 0 && !rc)
        rc = r;
    plog_free(p);
    return rc;
}

/* ---------------------------------------------------------------------------------------------
 * Writer
 * ------------------------------------------------------------------------------------------- */

static int fail_sticky(struct plog *p, int rc, const char *what)
{
    if (!p->sticky) {
        p->sticky = rc;
        LOG_E("plog", "%s: %s failed: %s (errno %d); refusing writes", p->dir, what,
              err_message(rc), io_last_errno());
    }
    return rc;
}

int plog_append(struct plog *p, const struct plog_record *recs, size_t n)
{
    if (!recs || n == 0)
        return ERR_INVALID;
    pthread_mutex_lock(&p->wmu);
    int rc = p->sticky;
    if (rc)
        goto out;
    uint64_t end = atomic_load_explicit(&p->end, memory_order_relaxed);
    struct recbatch_info h;
    sbuf_reset(&p->enc);
    if ((rc = recbatch_encode(&p->enc, (int64_t)end, recs, n, &h)) != 0)
        goto out;
    struct segment *s = last_seg(p);
    uint64_t size = atomic_load_explicit(&s->size, memory_order_relaxed);
    if (size > 0 && size + h.batch_bytes > p->segment_bytes) {
        if ((rc = roll(p)) != 0) {
            fail_sticky(p, rc, "roll");
            goto out;
        }
        s = last_seg(p);
        size = 0;
    }
    if ((rc = io_pwrite(s->log, p->enc.data, h.batch_bytes, size)) != 0) {
        fail_sticky(p, rc, "append");
        goto out;
    }
    if (s->since_index >= p->index_interval) {
        if ((rc = seg_index_add(p, s, end, size)) != 0) {
            fail_sticky(p, rc, "index append");
            goto out;
        }
        s->since_index = 0;
    }
    s->since_index += h.batch_bytes;
    s->dirty = true;
    seg_note_ts(s, h.max_timestamp);
    atomic_store_explicit(&s->size, size + h.batch_bytes, memory_order_release);
    atomic_store_explicit(&s->end, end + n, memory_order_release);
    atomic_store_explicit(&p->end, end + n, memory_order_release);
    /* Don't keep a huge scratch buffer around after one large batch. */
    if (p->enc.cap > (1u << 20)) {
        sbuf_free(&p->enc);
        sbuf_init(&p->enc, 0);
    }
out:
    pthread_mutex_unlock(&p->wmu);
    return rc;
}

/* Append a batch a client encoded (Kafka produce) as it is: only baseOffset (and the
 * partitionLeaderEpoch, set to 0) are rewritten, and neither is covered by the CRC, so the stored
 * bytes keep the client's CRC, timestamps, producer fields and records. */
int plog_append_batch(struct plog *p, struct slice batch)
{
    struct recbatch_info h;
    if (batch.len < RECBATCH_HEADER_BYTES || recbatch_peek(batch.ptr, batch.len, &h) ||
        h.batch_bytes != batch.len || h.record_count < 1 ||
        h.last_offset_delta != h.record_count - 1)
        return ERR_INVALID;
    pthread_mutex_lock(&p->wmu);
    int rc = p->sticky;
    if (rc)
        goto out;
    uint64_t end = atomic_load_explicit(&p->end, memory_order_relaxed);
    sbuf_reset(&p->enc);
    sbuf_append(&p->enc, batch.ptr, batch.len);
    if (!sbuf_ok(&p->enc)) {
        rc = ERR_NOMEM;
        goto out;
    }
    put_be64(p->enc.data, end);
    put_be32(p->enc.data + 12, 0);
    struct segment *s = last_seg(p);
    uint64_t size = atomic_load_explicit(&s->size, memory_order_relaxed);
    if (size > 0 && size + h.batch_bytes > p->segment_bytes) {
        if ((rc = roll(p)) != 0) {
            fail_sticky(p, rc, "roll");
            goto out;
        }
        s = last_seg(p);
        size = 0;
    }
    if ((rc = io_pwrite(s->log, p->enc.data, h.batch_bytes, size)) != 0) {
        fail_sticky(p, rc, "append");
        goto out;
    }
    if (s->since_index >= p->index_interval) {
        if ((rc = seg_index_add(p, s, end, size)) != 0) {
            fail_sticky(p, rc, "index append");
            goto out;
        }
        s->since_index = 0;
    }
    uint64_t n = (uint64_t)h.record_count;
    s->since_index += h.batch_bytes;
    s->dirty = true;
    seg_note_ts(s, h.max_timestamp);
    atomic_store_explicit(&s->size, size + h.batch_bytes, memory_order_release);
    atomic_store_explicit(&s->end, end + n, memory_order_release);
    atomic_store_explicit(&p->end, end + n, memory_order_release);
    if (p->enc.cap > (1u << 20)) {
        sbuf_free(&p->enc);
        sbuf_init(&p->enc, 0);
    }
out:
    pthread_mutex_unlock(&p->wmu);
    return rc;
}

uint64_t plog_end_offset(const struct plog *p) { return ld(&((struct plog *)p)->end); }
uint64_t plog_start_offset(const struct plog *p) { return ld(&((struct plog *)p)->start); }
uint64_t plog_high_watermark(const struct plog *p) { return ld(&((struct plog *)p)->hw); }

void plog_publish(struct plog *p, uint64_t hw)
{
    ASSERT(hw <= ld(&p->end));
    uint64_t cur = atomic_load_explicit(&p->hw, memory_order_relaxed);
    while (cur < hw &&
           !atomic_compare_exchange_weak_explicit(&p->hw, &cur, hw, memory_order_release,
                                                  memory_order_relaxed)) {
    }
}

/* ---------------------------------------------------------------------------------------------
 * Reader
 * ------------------------------------------------------------------------------------------- */

static size_t record_bytes(const struct plog_record *r)
{
    size_t n = r->key.len + r->value.len;
    for (size_t i = 0; i < r->header_count; i++)
        n += r->headers[i].key.len + r->headers[i].value.len;
    return n;
}

static int read_corrupt(struct plog *p, struct segment *s, uint64_t pos, const char *why)
{
    LOG_E("plog", "%s: segment %020" PRIu64 " byte %" PRIu64 ": %s; not served", p->dir, s->base,
          pos, why);
    return ERR_CORRUPT;
}

/* Readers: the header of the batch at pos, which must hold offset `at` onward (batches are dense).
 * ERR_CORRUPT (logged) for a short or inconsistent header; window errors pass through. */
static int read_batch_header(struct plog *p, struct segment *s, struct win *w, uint64_t pos,
                             uint64_t at, struct recbatch_info *h)
{
    const uint8_t *bp;
    int rc = win_get(w, pos, RECBATCH_HEADER_BYTES, &bp);
    if (rc != 0)
        return rc == ERR_EOF ? read_corrupt(p, s, pos, "short header") : rc;
    if (recbatch_peek(bp, RECBATCH_HEADER_BYTES, h) != 0 || (uint64_t)h->base_offset != at ||
        h->record_count < 1 || h->last_offset_delta != h->record_count - 1)
        return read_corrupt(p, s, pos, "bad batch header");
    return 0;
}

int plog_read(struct plog *p, uint64_t from, size_t max_records, size_t max_bytes,
              plog_visit_fn fn, void *ctx, struct plog_read_result *res)
{
    memset(res, 0, sizeof *res);
    pthread_rwlock_rdlock(&p->lock);
    uint64_t hw = ld(&p->hw), start = ld(&p->start);
    if (from < start) {
        from = start;
        res->from_adjusted = true;
    }
    res->next_offset = from;
    if (from >= hw || max_records == 0) {
        res->more = from < hw;
        pthread_rwlock_unlock(&p->lock);
        return 0;
    }
    struct win w;
    win_init(&w, NULL, READ_WIN_BYTES);
    /* Each batch is validated and indexed in one walk (recbatch_decode_index), then served from
     * its entries: one decode per record instead of two. */
    struct recbatch_ent ents_inline[READ_INDEX_INLINE];
    struct recbatch_ent *ents = ents_inline;
    size_t ents_cap = READ_INDEX_INLINE;
    size_t i = seg_find(p, from), bytes = 0;
    bool stop = false;
    int rc = 0;
    uint64_t next = from;
    while (!stop) {
        struct segment *s = p->segs[i];
        uint64_t seg_size = atomic_load_explicit(&s->size, memory_order_acquire), pos, at;
        win_reset(&w, s->log);
        index_lookup(s, next > s->base ? next : s->base, &pos, &at);
        while (at < hw && !stop) {
            if (pos >= seg_size)
                break;
            const uint8_t *bp;
            struct recbatch_info h;
            if ((rc = read_batch_header(p, s, &w, pos, at, &h)) != 0)
                goto out;
            uint64_t batch_end = at + (uint64_t)h.record_count;
            if (batch_end <= next) { /* entirely before `from`: skip without reading it */
                pos += h.batch_bytes;
                at = batch_end;
                continue;
            }
            if ((rc = win_get(&w, pos, h.batch_bytes, &bp)) != 0) {
                rc = rc == ERR_EOF ? read_corrupt(p, s, pos, "short batch") : rc;
                goto out;
            }
            if ((size_t)h.record_count > ents_cap && (size_t)h.record_count <= READ_INDEX_MAX) {
                struct recbatch_ent *ne = xmalloc((size_t)h.record_count * sizeof *ne);
                if (ne) { /* else this batch is decoded twice, as a bigger one is */
                    if (ents != ents_inline)
                        xfree(ents);
                    ents = ne;
                    ents_cap = (size_t)h.record_count;
                }
            }
            bool indexed = (size_t)h.record_count <= ents_cap;
            struct slice batch = slice_of(bp, h.batch_bytes);
            rc = indexed ? recbatch_decode_index(batch, &h, ents, ents_cap)
                         : recbatch_decode(batch, &h);
            if (rc) {
                rc = rc == ERR_NOMEM ? rc : read_corrupt(p, s, pos, "CRC or record mismatch");
                goto out;
            }
            struct recbatch_iter it;
            struct plog_record rec;
            if (indexed)
                recbatch_iter_init_index(&it, batch, &h, ents);
            else
                recbatch_iter_init(&it, batch, &h);
            while (!stop && (rc = recbatch_iter_next(&it, &rec)) == 1) {
                rc = 0;
                if (rec.offset < next)
                    continue;
                if (rec.offset >= hw) {
                    stop = true;
                    break;
                }
                rec.batch_end = rec.offset + 1 == batch_end;
                size_t rb = record_bytes(&rec);
                if (res->count >= max_records ||
                    (res->count > 0 && (bytes > max_bytes || rb > max_bytes - bytes))) {
                    res->more = true;
                    stop = true;
                    break;
                }
                res->count++;
                bytes += rb;
                next = rec.offset + 1;
                res->next_offset = next;
                if (fn && fn(ctx, &rec) != 0) {
                    res->more = next < hw;
                    stop = true;
                }
                if (next >= hw)
                    stop = true;
            }
            recbatch_iter_finish(&it);
            if (rc < 0) {
                rc = rc == ERR_NOMEM ? rc : read_corrupt(p, s, pos, "bad record");
                goto out;
            }
            pos += h.batch_bytes;
            at = batch_end;
        }
        if (stop || at >= hw)
            break;
        /* The segment ended below hw: continue in the next one, which must start here. */
        if (i + 1 >= p->nsegs || p->segs[i + 1]->base != at) {
            rc = read_corrupt(p, s, pos, "segment ends early");
            goto out;
        }
        i++;
    }
out:
    if (ents != ents_inline)
        xfree(ents);
    win_free(&w);
    pthread_rwlock_unlock(&p->lock);
    return rc;
}

/* Copy whole stored batches, as they are on disk, from the batch holding `from` on (Kafka fetch:
 * the client skips the records before its offset). Every batch copied is CRC-checked first. */
int plog_read_batches(struct plog *p, uint64_t from, size_t max_bytes, struct sbuf *out,
                      struct plog_read_result *res)
{
    memset(res, 0, sizeof *res);
    pthread_rwlock_rdlock(&p->lock);
    uint64_t hw = ld(&p->hw), start = ld(&p->start);
    if (from < start) {
        from = start;
        res->from_adjusted = true;
    }
    res->next_offset = from;
    if (from >= hw) {
        pthread_rwlock_unlock(&p->lock);
        return 0;
    }
    struct win w;
    win_init(&w, NULL, READ_WIN_BYTES);
    size_t i = seg_find(p, from), copied = 0;
    bool stop = false;
    int rc = 0;
    while (!stop) {
        struct segment *s = p->segs[i];
        uint64_t seg_size = atomic_load_explicit(&s->size, memory_order_acquire), pos, at;
        win_reset(&w, s->log);
        index_lookup(s, from > s->base ? from : s->base, &pos, &at);
        while (at < hw && !stop) {
            if (pos >= seg_size)
                break;
            const uint8_t *bp;
            struct recbatch_info h;
            if ((rc = read_batch_header(p, s, &w, pos, at, &h)) != 0)
                goto out;
            uint64_t batch_end = at + (uint64_t)h.record_count;
            if (batch_end <= from) {
                pos += h.batch_bytes;
                at = batch_end;
                continue;
            }
            if (batch_end > hw || (copied > 0 && copied + h.batch_bytes > max_bytes)) {
                res->more = true;
                stop = true;
                break;
            }
            if ((rc = win_get(&w, pos, h.batch_bytes, &bp)) != 0) {
                rc = rc == ERR_EOF ? read_corrupt(p, s, pos, "short batch") : rc;
                goto out;
            }
            if (recbatch_crc(bp, h.batch_bytes) != h.crc) {
                rc = read_corrupt(p, s, pos, "CRC mismatch");
                goto out;
            }
            sbuf_append(out, bp, h.batch_bytes);
            if (!sbuf_ok(out)) {
                rc = ERR_NOMEM;
                goto out;
            }
            copied += h.batch_bytes;
            res->count += (size_t)h.record_count;
            res->next_offset = batch_end;
            pos += h.batch_bytes;
            at = batch_end;
            if (copied >= max_bytes) {
                res->more = at < hw;
                stop = true;
            }
        }
        if (stop || at >= hw)
            break;
        if (i + 1 >= p->nsegs || p->segs[i + 1]->base != at) {
            rc = read_corrupt(p, s, pos, "segment ends early");
            goto out;
        }
        i++;
    }
out:
    win_free(&w);
    pthread_rwlock_unlock(&p->lock);
    return rc;
}

/* ---------------------------------------------------------------------------------------------
 * Recovery, checkpoint, retention
 * ------------------------------------------------------------------------------------------- */

int plog_truncate(struct plog *p, uint64_t end_offset)
{
    pthread_mutex_lock(&p->wmu);
    int rc = p->sticky;
    struct segment **gone = NULL;
    size_t ngone = 0;
    if (rc)
        goto out;
    uint64_t end = atomic_load_explicit(&p->end, memory_order_relaxed);
    if (end_offset == end)
        goto out;
    if (end_offset > end || end_offset < p->segs[0]->base) {
        LOG_E("plog", "%s: truncate to %" PRIu64 ": log holds %" PRIu64 "..%" PRIu64, p->dir,
              end_offset, p->segs[0]->base, end);
        rc = ERR_CORRUPT;
        goto out;
    }
    size_t i = seg_find(p, end_offset);
    if (i > 0 && p->segs[i]->base == end_offset)
        i--; /* cut at the end of the previous segment, verifying it */
    for (size_t j = 0; j < i; j++) {
        if (p->segs[j]->valid_end < p->segs[j + 1]->base) {
            LOG_E("plog", "%s: truncate to %" PRIu64 ": segment %020" PRIu64 " lost data after %"
                  PRIu64, p->dir, end_offset, p->segs[j]->base, p->segs[j]->valid_end);
            rc = ERR_CORRUPT;
            goto out;
        }
    }
    struct segment *s = p->segs[i];
    bool is_last = i + 1 == p->nsegs;
    /* The last segment was CRC-checked by open or written by us: start at the nearest index
     * entry. A sealed one may have a torn tail from after the last checkpoint: verify it all. */
    struct scan sc = {.stop_offset = end_offset, .interval = p->index_interval,
                      .next = s->base, .max_ts = INT64_MIN};
    if (is_last)
        index_lookup(s, end_offset, &sc.pos, &sc.next);
    if ((rc = scan_batches(s->log, s->base, &sc)) != 0)
        goto out;
    if (!sc.hit_stop) {
        rc = sc.straddle ? ERR_INVALID : ERR_CORRUPT;
        LOG_E("plog", "%s: truncate to %" PRIu64 ": %s", p->dir, end_offset,
              sc.straddle ? "not a batch boundary" : "valid data ends before it");
        goto out;
    }
    ngone = p->nsegs - i - 1;
    if (ngone) {
        gone = xmalloc(ngone * sizeof *gone);
        if (!gone) {
            rc = ERR_NOMEM;
            goto out;
        }
        memcpy(gone, p->segs + i + 1, ngone * sizeof *gone);
    }
    /* Entries at or after the cut go. */
    size_t keep = atomic_load_explicit(&s->index_len, memory_order_relaxed);
    while (keep > 0 && s->base + s->index[keep - 1].rel >= end_offset)
        keep--;

    pthread_rwlock_wrlock(&p->lock);
    p->nsegs = i + 1;
    atomic_store_explicit(&s->size, sc.pos, memory_order_relaxed);
    atomic_store_explicit(&s->end, end_offset, memory_order_relaxed);
    atomic_store_explicit(&s->index_len, keep, memory_order_relaxed);
    if (!is_last)
        atomic_store_explicit(&s->max_ts, sc.max_ts, memory_order_relaxed);
    atomic_store_explicit(&p->end, end_offset, memory_order_relaxed);
    if (ld(&p->hw) > end_offset)
        st(&p->hw, end_offset);
    if (ld(&p->start) > end_offset)
        st(&p->start, end_offset);
    pthread_rwlock_unlock(&p->lock);

    s->since_index = keep ? sc.pos - s->index[keep - 1].pos : sc.pos;
    s->valid_end = UINT64_MAX; /* verified up to the cut by the scan above */
    s->dirty = true;
    p->dir_dirty = true;
    rc = io_truncate(s->log, sc.pos);
    if (rc == 0)
        rc = io_truncate(s->idx, (uint64_t)keep * IDX_ENTRY_BYTES);
    s->idx_file_entries = keep;
    for (size_t k = 0; k < ngone; k++) {
        char path[PATH_CAP];
        uint64_t base = gone[k]->base;
        seg_free(gone[k]);
        seg_path(p, base, "log", path);
        int r = io_unlink(p->fs, path);
        seg_path(p, base, "idx", path);
        int r2 = io_unlink(p->fs, path);
        if (rc == 0)
            rc = r ? r : r2;
    }
    if (rc)
        fail_sticky(p, rc, "truncate");
out:
    xfree(gone);
    pthread_mutex_unlock(&p->wmu);
    return rc;
}

int plog_sync(struct plog *p)
{
    pthread_mutex_lock(&p->wmu);
    int rc = p->sticky;
    if (rc) {
        pthread_mutex_unlock(&p->wmu);
        return rc;
    }
    struct segment **todo = xmalloc(p->nsegs * sizeof *todo);
    if (!todo) {
        pthread_mutex_unlock(&p->wmu);
        return ERR_NOMEM;
    }
    size_t n = 0;
    for (size_t i = 0; i < p->nsegs; i++) {
        if (p->segs[i]->dirty) {
            p->segs[i]->dirty = false;
            todo[n++] = p->segs[i];
        }
    }
    bool dir = p->dir_dirty;
    p->dir_dirty = false;
    /* fsync without blocking appends: the shared lock keeps the segments alive (deleting or
     * truncating needs the exclusive lock), and wmu is released for the duration. */
    pthread_rwlock_rdlock(&p->lock);
    pthread_mutex_unlock(&p->wmu);
    for (size_t i = 0; i < n && rc == 0; i++) {
        rc = io_sync(todo[i]->log);
        if (rc == 0)
            rc = io_sync(todo[i]->idx);
    }
    if (rc == 0 && dir)
        rc = io_sync_dir(p->fs, p->dir);
    pthread_rwlock_unlock(&p->lock);
    xfree(todo);
    if (rc) {
        pthread_mutex_lock(&p->wmu);
        fail_sticky(p, rc, "sync");
        pthread_mutex_unlock(&p->wmu);
    }
    return rc;
}

int plog_delete_before(struct plog *p, uint64_t offset, uint64_t *deleted_records,
                       uint64_t *freed_bytes)
{
    uint64_t freed = 0, deleted = 0;
    struct segment **gone = NULL;
    size_t ngone = 0;
    pthread_mutex_lock(&p->wmu);
    int rc = p->sticky;
    if (rc)
        goto out;
    uint64_t end = atomic_load_explicit(&p->end, memory_order_relaxed);
    uint64_t old_start = ld(&p->start), new_start = offset > old_start ? offset : old_start;
    if (new_start > end)
        new_start = end;
    if (new_start > old_start) {
        /* Durable before anything is deleted, so records below it never reappear. */
        if ((rc = floor_write(p, new_start)) != 0)
            goto out;
        st(&p->start, new_start);
        deleted = new_start - old_start;
    }
    if (new_start == end && atomic_load_explicit(&last_seg(p)->size, memory_order_relaxed) > 0 &&
        (rc = roll(p)) != 0) {
        fail_sticky(p, rc, "roll");
        goto out;
    }
    size_t k = 0; /* segments [0, k) lie entirely below the floor; never the last */
    while (k + 1 < p->nsegs && p->segs[k + 1]->base <= new_start)
        k++;
    if (k == 0)
        goto out;
    gone = xmalloc(k * sizeof *gone);
    if (!gone) {
        rc = ERR_NOMEM;
        goto out;
    }
    ngone = k;
    memcpy(gone, p->segs, k * sizeof *gone);
    pthread_rwlock_wrlock(&p->lock);
    memmove(p->segs, p->segs + k, (p->nsegs - k) * sizeof *p->segs);
    p->nsegs -= k;
    pthread_rwlock_unlock(&p->lock);
    /* No reader can reach them now: measure, close and unlink outside the lock. */
    for (size_t j = 0; j < ngone; j++) {
        struct segment *s = gone[j];
        char path[PATH_CAP];
        uint64_t lsz = 0, isz = 0;
        io_size(s->log, &lsz);
        io_size(s->idx, &isz);
        uint64_t base = s->base;
        seg_free(s);
        seg_path(p, base, "log", path);
        int r = io_unlink(p->fs, path);
        if (r == 0)
            freed += lsz;
        seg_path(p, base, "idx", path);
        int r2 = io_unlink(p->fs, path);
        if (r2 == 0)
            freed += isz;
        if (!rc)
            rc = r ? r : r2;
    }
    p->dir_dirty = true;
out:
    xfree(gone);
    pthread_mutex_unlock(&p->wmu);
    if (deleted_records)
        *deleted_records = deleted;
    if (freed_bytes)
        *freed_bytes = freed;
    return rc;
}

uint64_t plog_offset_for_time(struct plog *p, int64_t cutoff_ms)
{
    pthread_rwlock_rdlock(&p->lock);
    uint64_t off = ld(&p->start);
    for (size_t i = 0; i < p->nsegs; i++) {
        struct segment *s = p->segs[i];
        uint64_t size = atomic_load_explicit(&s->size, memory_order_acquire);
        if (size == 0 || atomic_load_explicit(&s->max_ts, memory_order_relaxed) >= cutoff_ms)
            break;
        uint64_t e = i + 1 < p->nsegs ? p->segs[i + 1]->base : ld(&p->end);
        if (e > off)
            off = e;
    }
    pthread_rwlock_unlock(&p->lock);
    return off;
}

uint64_t plog_offset_for_size(struct plog *p, uint64_t max_bytes)
{
    pthread_rwlock_rdlock(&p->lock);
    uint64_t total = 0;
    for (size_t i = 0; i < p->nsegs; i++)
        total += atomic_load_explicit(&p->segs[i]->size, memory_order_relaxed);
    uint64_t off = ld(&p->start);
    for (size_t i = 0; i + 1 < p->nsegs && total > max_bytes; i++) {
        total -= atomic_load_explicit(&p->segs[i]->size, memory_order_relaxed);
        if (p->segs[i + 1]->base > off)
            off = p->segs[i + 1]->base;
    }
    pthread_rwlock_unlock(&p->lock);
    return off;
}

void plog_stats(struct plog *p, struct plog_stats *out)
{
    pthread_rwlock_rdlock(&p->lock);
    memset(out, 0, sizeof *out);
    out->start_offset = ld(&p->start);
    out->end_offset = ld(&p->end);
    out->high_watermark = ld(&p->hw);
    out->segments = p->nsegs;
    for (size_t i = 0; i < p->nsegs; i++) {
        struct segment *s = p->segs[i];
        out->bytes += atomic_load_explicit(&s->size, memory_order_relaxed);
        /* .idx bytes: the in-memory index mirrors the file. */
        out->bytes += atomic_load_explicit(&s->index_len, memory_order_relaxed) * IDX_ENTRY_BYTES;
    }
    out->records = out->end_offset - out->start_offset;
    pthread_rwlock_unlock(&p->lock);
}

int plog_dump_segment(struct io_fs *fs, const char *path, FILE *out)
{
    const char *slash = strrchr(path, '/');
    const char *name = slash ? slash + 1 : path;
    uint64_t base = 0;
    if (!parse_seg_name(name, "log", &base)) {
        fprintf(out, "%s: not a segment name (<20 digits>.log); assuming base offset 0\n", path);
        base = 0;
    }
    struct io_file *f;
    int rc = io_open(fs, path, IO_RDONLY, &f);
    if (rc)
        return rc;
    uint64_t size = 0;
    io_size(f, &size);
    struct scan sc = {.stop_offset = UINT64_MAX, .dump = out, .next = base,
                      .max_ts = INT64_MIN, .interval = UINT32_MAX};
    rc = scan_batches(f, base, &sc);
    io_close(f);
    if (rc)
        return rc;
    fprintf(out, "%s: valid batches end at byte %" PRIu64 " of %" PRIu64 ", next offset %" PRIu64
            "%s\n", path, sc.pos, size, sc.next, sc.clean ? "" : " (invalid tail)");
    return sc.clean ? 0 : ERR_CORRUPT;
}
