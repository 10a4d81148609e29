/* journal.c -- the segmented journal: append, flush, group commit, recovery, reads, trimming.
 *
 * Segments are files DIR/<first-index>.seg: a 40-byte header, then entries back to back. The last
 * segment is the active one; a new one is started when the next entry would push the active one
 * past segment_bytes (an entry larger than that goes alone into its own segment).
 *
 * Life of an entry:
 *
 *   journal_append ──▶ buffered (seg.pend) ──journal_flush──▶ flushed (pwrite, page cache)
 *        ──journal_sync_prepare──▶ in a token ──journal_sync_run (sync thread)──▶
 *        ──journal_sync_done(ok)──▶ durable          ──journal_sync_done(fail)──▶ ERROR (sticky)
 *
 * Invariants:
 *   1. durable_index <= flushed_index <= last_index; indexes are dense; terms never go down.
 *   2. Only the last created segment can have unsynced bytes or an unsynced directory entry:
 *      journal_flush creates segment k+1 only once segment k is fully synced (synced_end ==
 *      flushed_end) and every earlier creation has been covered by a directory sync. Hence a
 *      crash can only tear the tail of the last segment, and any damage elsewhere is corruption.
 *   3. A sync token covers every segment with synced_end < flushed_end (capturing flushed_end)
 *      and the directory if a creation is not yet dir-synced; its index is flushed_index at
 *      prepare time. At most one token is in flight; while it is, no segment is deleted or
 *      truncated and no handle it holds is closed.
 *   4. After a failed sync or write (except ENOSPC), err != 0 forever: no append, flush or
 *      prepare succeeds and durable_index never moves again.
 *   5. Segments are deleted in an order that leaves a contiguous run of segments on disk at every
 *      step (trim: oldest first; truncate: newest first), each deletion dir-synced before the next.
 *
 * Durability argument: an entry with index <= durable_index was written (pwrite) into a segment
 * before a token captured it (flushed_index at prepare); the token fsynced that segment up to a
 * length covering the entry and, if the segment's directory entry was not yet durable, fsynced the
 * directory; done() advances durable_index only after all of these returned 0. Earlier segments
 * were fully synced before the later one was created (invariant 2). So every entry up to
 * durable_index is on stable storage, reachable by name, and recovery, which only ever truncates
 * bytes after the last valid entry of the last segment, cannot remove it: the bytes before it in
 * the same file were made durable by the same or an earlier fsync.
 */
#include "journal/journal.h"

#include "base/alloc.h"
#include "base/assert.h"
#include "base/clock.h"
#include "base/crc32c.h"
#include "base/err.h"
#include "journal/journal_format.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#define SAMPLE_EVERY_BYTES (256u * 1024u)
#define PEND_KEEP_BYTES (1u << 20) /* pending buffers larger than this are freed after a flush */
#define SEGMENT_BYTES_MIN 4096u

/* ---------------------------------------------------------------------------------------------- */
/* State                                                                                          */

struct sample {
    uint64_t index, off;
};

struct seg {
    uint64_t first_index, prev_term;
    uint64_t last_index;   /* last appended entry in this segment (first_index - 1 if none) */
    uint64_t flushed_last; /* last entry written to the file */
    uint64_t end;          /* file size once every buffered entry is written */
    uint64_t flushed_end;  /* bytes written */
    uint64_t synced_end;   /* bytes known durable */
    bool created;          /* the file exists with its header written */
    struct io_file *f;     /* open while active or awaiting its final sync */
    struct sbuf pend;      /* encoded entries not yet written */
    uint64_t pend_entries;
    struct sample *samples;
    size_t nsamples, cap_samples;
};

struct term_run {
    uint64_t start, term;
};

struct journal {
    struct io_fs *fs;
    char *dir;
    uint64_t segment_bytes;
    bool use_spare;
    struct seg *segs;
    size_t nsegs, cap_segs;
    struct term_run *runs;
    size_t nruns, cap_runs;
    bool has_base;
    uint64_t base_index, base_term;
    uint64_t last_index, last_term, flushed_index, durable_index;
    bool dir_dirty;
    uint64_t dir_gen;
    int err;
    bool in_flight;
    uint64_t gen; /* bumped by trim/truncate: invalidates iterators */
    struct journal_stats st;
};

struct sync_file {
    struct io_file *f;
    uint64_t first_index, end;
};

struct journal_sync {
    struct io_fs *fs;
    uint64_t index;
    char *dir; /* non-NULL: sync the directory */
    uint64_t dir_gen;
    uint64_t ns;
    size_t nfiles;
    struct sync_file files[];
};

struct journal_iter {
    struct journal *j;
    uint64_t gen;
    uint64_t next_index;
    size_t seg; /* segs[] position of the open file */
    uint64_t off;
    uint8_t *buf; /* payloads larger than the window */
    size_t cap;
    struct jwindow w; /* w.f is the open file, or NULL */
};

static int grow(void **p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return 0;
    size_t n = *cap ? *cap * 2 : 8;
    while (n < need)
        n *= 2;
    void *q = xrealloc(*p, n * elem);
    if (!q)
        return ERR_NOMEM;
    *p = q;
    *cap = n;
    return 0;
}

static void seg_free(struct seg *s)
{
    if (s->f)
        io_close(s->f);
    s->f = NULL;
    sbuf_free(&s->pend);
    xfree(s->samples);
    s->samples = NULL;
}

static bool seg_clean(const struct seg *s)
{
    return s->created && s->pend.len == 0 && s->synced_end == s->flushed_end;
}

static void seg_name(const struct journal *j, uint64_t first, char *out, size_t cap)
{
    jseg_path(out, cap, j->dir, first);
}

static int sample_add(struct seg *s, uint64_t index, uint64_t off)
{
    if (s->nsamples && off - s->samples[s->nsamples - 1].off < SAMPLE_EVERY_BYTES)
        return 0;
    if (grow((void **)&s->samples, &s->cap_samples, s->nsamples + 1, sizeof *s->samples))
        return ERR_NOMEM;
    s->samples[s->nsamples++] = (struct sample){index, off};
    return 0;
}

static int run_add(struct journal *j, uint64_t index, uint64_t term)
{
    if (j->nruns && j->runs[j->nruns - 1].term == term)
        return 0;
    if (grow((void **)&j->runs, &j->cap_runs, j->nruns + 1, sizeof *j->runs))
        return ERR_NOMEM;
    j->runs[j->nruns++] = (struct term_run){index, term};
    return 0;
}

static int unlink_seg(struct journal *j, size_t i);

/* ---------------------------------------------------------------------------------------------- */
/* Accessors                                                                                      */

uint64_t journal_first_index(const struct journal *j)
{
    if (j->nsegs)
        return j->segs[0].first_index;
    return j->has_base ? j->base_index + 1 : 0;
}

uint64_t journal_last_index(const struct journal *j) { return j->last_index; }
uint64_t journal_last_term(const struct journal *j) { return j->last_term; }
uint64_t journal_flushed_index(const struct journal *j) { return j->flushed_index; }
uint64_t journal_durable_index(const struct journal *j) { return j->durable_index; }

uint64_t journal_unsynced_bytes(const struct journal *j)
{
    uint64_t n = 0;
    for (size_t i = 0; i < j->nsegs; i++)
        if (j->segs[i].created && j->segs[i].flushed_end > j->segs[i].synced_end)
            n += j->segs[i].flushed_end - j->segs[i].synced_end;
    return n;
}
int journal_error(const struct journal *j) { return j->err; }
bool journal_sync_in_flight(const struct journal *j) { return j->in_flight; }

void journal_stats(const struct journal *j, struct journal_stats *st)
{
    *st = j->st;
    st->segments = j->nsegs;
    st->bytes = 0;
    for (size_t i = 0; i < j->nsegs; i++)
        st->bytes += j->segs[i].flushed_end;
}

int journal_term_at(struct journal *j, uint64_t index, uint64_t *term)
{
    if (j->nsegs == 0) {
        if (j->has_base && index == j->base_index) {
            *term = j->base_term;
            return 0;
        }
        return ERR_NOT_FOUND;
    }
    uint64_t first = j->segs[0].first_index;
    if (index + 1 == first && index > 0) {
        *term = j->segs[0].prev_term;
        return 0;
    }
    if (index < first || index > j->last_index || j->nruns == 0)
        return ERR_NOT_FOUND;
    size_t lo = 0, hi = j->nruns; /* find the last run with start <= index */
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if (j->runs[mid].start <= index)
            lo = mid;
        else
            hi = mid;
    }
    if (j->runs[lo].start > index)
        return ERR_NOT_FOUND;
    *term = j->runs[lo].term;
    return 0;
}

int journal_set_base(struct journal *j, uint64_t last_index, uint64_t last_term)
{
    if (j->in_flight)
        return ERR_AGAIN;
    for (size_t i = 0; i < j->nsegs; i++)
        if (j->segs[i].last_index >= j->segs[i].first_index)
            return ERR_CONFLICT;
    /* Only header-only segments: they describe an older base; remove them. */
    while (j->nsegs) {
        int rc = unlink_seg(j, j->nsegs - 1);
        if (rc)
            return j->err = rc;
        seg_free(&j->segs[--j->nsegs]);
    }
    j->dir_dirty = false;
    j->has_base = last_index > 0;
    j->base_index = last_index;
    j->base_term = last_term;
    j->last_index = j->flushed_index = j->durable_index = last_index;
    j->last_term = last_term;
    j->nruns = 0;
    j->gen++;
    return 0;
}

/* ---------------------------------------------------------------------------------------------- */
/* Append and flush                                                                               */

int journal_append(struct journal *j, uint64_t term, uint64_t index, uint8_t type,
                   struct slice payload)
{
    if (j->err)
        return j->err;
    if (index != j->last_index + 1 || term < j->last_term)
        return ERR_INVALID;
    if (payload.len > JOURNAL_PAYLOAD_MAX)
        return ERR_TOO_LARGE;
    uint64_t esz = JOURNAL_ENTRY_HEADER_BYTES + payload.len;
    struct seg *s = j->nsegs ? &j->segs[j->nsegs - 1] : NULL;
    bool roll = !s || (s->last_index >= s->first_index && s->end + esz > j->segment_bytes);
    if (roll) {
        if (grow((void **)&j->segs, &j->cap_segs, j->nsegs + 1, sizeof *j->segs))
            return ERR_NOMEM;
        s = &j->segs[j->nsegs];
        memset(s, 0, sizeof *s);
        s->first_index = index;
        s->prev_term = j->last_term;
        s->last_index = s->flushed_last = index - 1;
        s->end = JOURNAL_SEGMENT_HEADER_BYTES;
        sbuf_init(&s->pend, 0);
    }
    /* Reserve everything before changing state so ERR_NOMEM leaves the journal unchanged. */
    uint8_t *p = sbuf_reserve(&s->pend, (size_t)esz);
    int rc = p ? 0 : ERR_NOMEM;
    if (!rc)
        rc = sample_add(s, index, s->end);
    if (!rc)
        rc = run_add(j, index, term);
    if (rc) {
        s->pend.oom = false;
        if (roll)
            seg_free(s);
        return rc;
    }
    if (roll)
        j->nsegs++;
    struct jentry_header h = {.len = (uint32_t)payload.len, .term = term, .index = index,
                              .type = type};
    jentry_header_encode(p, &h, payload);
    if (payload.len)
        memcpy(p + JOURNAL_ENTRY_HEADER_BYTES, payload.ptr, payload.len);
    s->pend.len += (size_t)esz;
    s->pend_entries++;
    s->end += esz;
    s->last_index = index;
    j->last_index = index;
    j->last_term = term;
    return 0;
}

/* ENOSPC from a write acknowledged nothing and can be retried; anything else is sticky. */
static int write_failed(struct journal *j, int rc)
{
    if (rc != ERR_NOSPACE && !j->err)
        j->err = rc;
    return rc;
}

#define SPARE_NAME "spare"
#define SPARE_TMP_NAME "spare.tmp"

#define SPARE_SYNC_STEP (1u << 20)

int journal_make_spare(struct io_fs *fs, const char *dir, uint64_t segment_bytes)
{
    char spare[4096], tmp[4096];
    snprintf(spare, sizeof spare, "%s/" SPARE_NAME, dir);
    snprintf(tmp, sizeof tmp, "%s/" SPARE_TMP_NAME, dir);
    int ex = io_exists(fs, spare);
    if (ex != 0)
        return ex < 0 ? ex : 1;
    io_unlink(fs, tmp); /* a leftover from a crash mid-way */
    struct io_file *f;
    int rc = io_open(fs, tmp, IO_CREATE | IO_EXCL, &f);
    if (rc)
        return rc;
    static const uint8_t zeros[1 << 16];
    /* The blocks must be written, not just allocated. They are synced 1 MiB at a time: one
     * fsync of the whole segment is a long write-back burst that every journal fdatasync on the
     * same disk queues behind (measured: a 60-90 ms p99 spike in the 3-node benchmark when the
     * nodes' spares were made at once); small steps let them interleave. */
    for (uint64_t off = 0; !rc && off < segment_bytes; off += sizeof zeros) {
        uint64_t n = segment_bytes - off < sizeof zeros ? segment_bytes - off : sizeof zeros;
        rc = io_pwrite(f, zeros, (size_t)n, off);
        if (!rc && ((off + n) % SPARE_SYNC_STEP == 0 || off + n >= segment_bytes))
            rc = io_sync(f);
    }
    int rc2 = io_close(f);
    if (!rc)
        rc = rc2;
    /* Durable name before it counts as made: an undone rename would otherwise leave the next run
     * a full-size spare.tmp to delete and write again (spare.tmp's own creation needs no fsync of
     * its own: this one covers it, and a lost spare.tmp is only unlinked at the next attempt). */
    if (!rc)
        rc = io_rename_durable(fs, tmp, spare);
    if (rc)
        io_unlink(fs, tmp);
    return rc;
}

static int create_segment(struct journal *j, struct seg *s)
{
    char path[4096];
    seg_name(j, s->first_index, path, sizeof path);
    struct io_file *f;
    int rc = ERR_NOT_FOUND;
    if (j->use_spare) {
        /* A zero-filled spare becomes the segment: rename, make the rename durable, then the
         * header and the entries overwrite the zeros.
         *
         * The directory fsync must come BEFORE the first byte is written into the file, not with
         * the next group commit: a power loss that undoes a rename does not undo the data
         * writeback of the renamed inode. Renamed-but-not-yet-durable, the file would come back
         * as `spare` holding this segment's header and entries; the next roll would reuse it and
         * write new entries over a prefix of those stale ones, and after the next crash
         * recovery would find CRC-valid stale entries after the new tail ("valid entry N
         * follows": a journal that refuses to start; or, at an unlucky alignment, a stale entry
         * taken as the next one). A spare is therefore all zeros whenever its name is `spare`.
         * Costs one directory fsync per segment roll. */
        char spare[4096];
        snprintf(spare, sizeof spare, "%s/" SPARE_NAME, j->dir);
        if (io_exists(j->fs, spare) == 1 && io_exists(j->fs, path) == 0 &&
            io_rename(j->fs, spare, path) == 0) {
            rc = io_sync_dir(j->fs, j->dir);
            if (rc)
                return rc; /* sticky (write_failed): the name's state is unknown */
            rc = io_open(j->fs, path, IO_RDWR, &f);
            if (rc)
                io_unlink(j->fs, path);
        }
    }
    if (rc)
        rc = io_open(j->fs, path, IO_CREATE | IO_EXCL, &f);
    if (rc)
        return rc;
    uint8_t hdr[JOURNAL_SEGMENT_HEADER_BYTES];
    jseg_header_encode(hdr, &(struct jseg_header){s->first_index, s->prev_term});
    rc = io_pwrite(f, hdr, sizeof hdr, 0);
    if (rc) {
        /* Undo the creation so a retry can create it again; neither step was synced. */
        io_close(f);
        io_unlink(j->fs, path);
        return rc;
    }
    s->f = f;
    s->created = true;
    s->flushed_end = JOURNAL_SEGMENT_HEADER_BYTES;
    s->synced_end = 0;
    j->dir_dirty = true;
    j->dir_gen++;
    return 0;
}

int journal_flush(struct journal *j)
{
    if (j->err)
        return j->err;
    for (size_t i = 0; i < j->nsegs; i++) {
        struct seg *s = &j->segs[i];
        if (s->pend.len == 0)
            continue;
        if (!s->created) {
            /* Invariant 2: only the last created segment may hold unsynced state. */
            if ((i > 0 && !seg_clean(&j->segs[i - 1])) || j->dir_dirty)
                return 0;
            int rc = create_segment(j, s);
            if (rc)
                return write_failed(j, rc);
        }
        ASSERT(s->flushed_end + s->pend.len == s->end);
        int rc = io_pwrite(s->f, s->pend.data, s->pend.len, s->flushed_end);
        if (rc)
            return write_failed(j, rc);
        s->flushed_end = s->end;
        s->flushed_last = s->last_index;
        j->flushed_index = s->last_index;
        j->st.entries_written += s->pend_entries;
        s->pend_entries = 0;
        if (s->pend.cap > PEND_KEEP_BYTES || i + 1 < j->nsegs)
            sbuf_free(&s->pend);
        else
            sbuf_reset(&s->pend);
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------------- */
/* Group commit                                                                                   */

int journal_sync_prepare(struct journal *j, struct journal_sync **tok)
{
    *tok = NULL;
    if (j->err)
        return j->err;
    if (j->in_flight)
        return ERR_AGAIN;
    size_t n = 0;
    for (size_t i = 0; i < j->nsegs; i++)
        n += j->segs[i].created && j->segs[i].synced_end < j->segs[i].flushed_end;
    if (n == 0 && !j->dir_dirty) {
        j->durable_index = j->flushed_index; /* everything flushed is already synced */
        return 0;
    }
    struct journal_sync *t = xcalloc(1, sizeof *t + n * sizeof t->files[0]);
    if (!t)
        return ERR_NOMEM;
    for (size_t i = 0; i < j->nsegs; i++) {
        struct seg *s = &j->segs[i];
        if (s->created && s->synced_end < s->flushed_end)
            t->files[t->nfiles++] = (struct sync_file){s->f, s->first_index, s->flushed_end};
    }
    if (j->dir_dirty) {
        t->dir = xstrndup(j->dir, strlen(j->dir));
        if (!t->dir) {
            xfree(t);
            return ERR_NOMEM;
        }
        t->dir_gen = j->dir_gen;
    }
    t->fs = j->fs;
    t->index = j->flushed_index;
    j->in_flight = true;
    *tok = t;
    return 0;
}

int journal_sync_run(struct journal_sync *tok)
{
    uint64_t t0 = clock_mono_ns();
    int rc = 0;
    for (size_t i = 0; i < tok->nfiles && !rc; i++)
        rc = io_sync(tok->files[i].f);
    /* The directory after the files: a segment's name is only worth making durable once its
     * content is; either order is correct because done() waits for both. */
    if (!rc && tok->dir)
        rc = io_sync_dir(tok->fs, tok->dir);
    tok->ns = clock_mono_ns() - t0;
    return rc;
}

static struct seg *seg_by_first(struct journal *j, uint64_t first)
{
    for (size_t i = j->nsegs; i-- > 0;)
        if (j->segs[i].first_index == first)
            return &j->segs[i];
    return NULL;
}

int journal_sync_done(struct journal *j, struct journal_sync *tok, int run_rc)
{
    ASSERT(j->in_flight);
    j->in_flight = false;
    j->st.syncs++;
    j->st.sync_ns_total += tok->ns;
    if (run_rc && !j->err) {
        j->err = run_rc; /* fsyncgate: never retried, never reported durable */
        /* The failed sync may have dropped the group's pages while later groups (written while
         * it ran) reach the disk: a hole followed by valid entries, which recovery must call
         * corruption. None of those entries was acknowledged, so cut every segment back to what
         * is known durable (best effort: the disk may be failing). A never-synced segment goes
         * to zero length, which recovery drops as an empty last segment. */
        for (size_t i = 0; i < j->nsegs; i++) {
            struct seg *s = &j->segs[i];
            if (!s->f || s->synced_end >= s->flushed_end)
                continue;
            uint64_t keep = s->synced_end >= JOURNAL_SEGMENT_HEADER_BYTES ? s->synced_end : 0;
            if (io_truncate(s->f, keep) == 0)
                io_sync(s->f);
        }
    }
    if (!j->err) {
        for (size_t i = 0; i < tok->nfiles; i++) {
            struct seg *s = seg_by_first(j, tok->files[i].first_index);
            ASSERT(s && s->f == tok->files[i].f);
            if (tok->files[i].end > s->synced_end)
                s->synced_end = tok->files[i].end;
        }
        if (tok->dir && tok->dir_gen == j->dir_gen)
            j->dir_dirty = false;
        ASSERT(tok->index >= j->durable_index && tok->index <= j->flushed_index);
        j->durable_index = tok->index;
        /* Rolled segments that got their final sync need no handle any more. */
        for (size_t i = 0; i + 1 < j->nsegs; i++) {
            struct seg *s = &j->segs[i];
            if (s->f && seg_clean(s)) {
                io_close(s->f);
                s->f = NULL;
            }
        }
    }
    int rc = run_rc ? run_rc : j->err;
    xfree(tok->dir);
    xfree(tok);
    return rc;
}

int journal_sync_now(struct journal *j)
{
    for (int round = 0; round < 1000000; round++) {
        int rc = journal_flush(j);
        if (rc)
            return rc;
        struct journal_sync *tok;
        if ((rc = journal_sync_prepare(j, &tok)) != 0)
            return rc;
        if (!tok) {
            if (j->flushed_index == j->last_index)
                return 0;
            continue;
        }
        if ((rc = journal_sync_done(j, tok, journal_sync_run(tok))) != 0)
            return rc;
    }
    return ERR_INTERNAL;
}

/* ---------------------------------------------------------------------------------------------- */
/* Recovery scan (journal_open, journal_check_dir)                                                */

enum scan_mode { SCAN_OPEN, SCAN_CHECK, SCAN_REPAIR };

struct firsts {
    uint64_t *v;
    size_t n, cap;
    int rc;
};

static int list_cb(void *ctx, const char *name)
{
    struct firsts *fs = ctx;
    uint64_t first;
    if (!jseg_parse_name(name, &first))
        return 0; /* not a segment: other files in the directory are not ours */
    if (grow((void **)&fs->v, &fs->cap, fs->n + 1, sizeof *fs->v)) {
        fs->rc = ERR_NOMEM;
        return 1;
    }
    fs->v[fs->n++] = first;
    return 0;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

struct recover {
    struct io_fs *fs;
    const char *dir;
    enum scan_mode mode;
    FILE *out;
    struct journal *j; /* SCAN_OPEN only */
    struct journal_recovery *rec;
    struct firsts segs;
    struct jwindow *w;
    struct seg cur; /* SCAN_OPEN: the segment being scanned */
};

static void say(struct recover *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void say(struct recover *r, const char *fmt, ...)
{
    if (!r->out)
        return;
    va_list ap;
    va_start(ap, fmt);
    vfprintf(r->out, fmt, ap);
    va_end(ap);
}

static int scan_cb(void *ctx, const struct jentry_header *h, uint64_t off)
{
    struct recover *r = ctx;
    if (r->mode != SCAN_OPEN)
        return 0;
    int rc = sample_add(&r->cur, h->index, off);
    if (!rc)
        rc = run_add(r->j, h->index, h->term);
    return rc;
}

/* Delete segment files segs[from..] newest first, each deletion dir-synced (invariant 5). */
static int delete_from(struct recover *r, size_t from)
{
    char path[4096];
    for (size_t k = r->segs.n; k-- > from;) {
        jseg_path(path, sizeof path, r->dir, r->segs.v[k]);
        int rc = io_unlink_durable(r->fs, path);
        if (rc)
            return rc;
    }
    return 0;
}

/* Corruption in segment i at byte off. Open/check: report. Repair: keep everything before it. */
static int corrupt_at(struct recover *r, size_t i, struct io_file *f, uint64_t off,
                      uint64_t index, const char *why)
{
    snprintf(r->rec->detail, sizeof r->rec->detail,
             "corrupt: segment %020" PRIu64 ".seg offset %" PRIu64 " (index %" PRIu64 "): %s",
             r->segs.v[i], off, index, why);
    say(r, "%s\n", r->rec->detail);
    if (r->mode != SCAN_REPAIR)
        return ERR_CORRUPT;
    int rc = delete_from(r, i + 1);
    if (rc)
        return rc;
    if (off <= JOURNAL_SEGMENT_HEADER_BYTES || !f) {
        rc = delete_from(r, i);
    } else {
        rc = io_truncate(f, off);
        if (!rc)
            rc = io_sync(f);
    }
    if (!rc)
        say(r, "repaired: kept entries before index %" PRIu64 "\n", index);
    return rc ? rc : 1; /* 1: stop scanning, journal repaired */
}

/* Remove an empty last segment (no valid entry): zero-length, torn header, or header only. */
static int drop_empty_last(struct recover *r, size_t i, struct io_file **f, const char *why)
{
    char path[4096];
    jseg_path(path, sizeof path, r->dir, r->segs.v[i]);
    say(r, "segment %020" PRIu64 ".seg: empty last segment (%s)%s\n", r->segs.v[i], why,
        r->mode == SCAN_CHECK ? "" : ", removed");
    snprintf(r->rec->detail, sizeof r->rec->detail, "removed empty last segment %020" PRIu64
             ".seg (%s)", r->segs.v[i], why);
    if (r->mode == SCAN_CHECK)
        return 0;
    io_close(*f);
    *f = NULL;
    return io_unlink_durable(r->fs, path);
}

/* Scan segment i. Returns 0 to continue, 1 to stop (repaired or empty last segment), < 0 error. */
static int scan_one(struct recover *r, size_t i, uint64_t *prev_last, uint64_t *prev_term,
                    bool *have_prev)
{
    bool last = i + 1 == r->segs.n;
    char path[4096];
    jseg_path(path, sizeof path, r->dir, r->segs.v[i]);
    int flags = (r->mode == SCAN_REPAIR || (r->mode == SCAN_OPEN && last)) ? IO_RDWR : IO_RDONLY;
    struct io_file *f = NULL;
    int rc = io_open(r->fs, path, flags, &f);
    if (rc)
        return rc;
    uint64_t size = 0;
    if ((rc = io_size(f, &size)) != 0)
        goto out;
    memset(r->w, 0, offsetof(struct jwindow, buf));
    r->w->f = f;
    r->w->size = size;

    struct jseg_header h = {0};
    const char *why = "short segment header";
    int hrc = ERR_CORRUPT;
    if (size >= JOURNAL_SEGMENT_HEADER_BYTES) {
        const uint8_t *p = jwindow_get(r->w, 0, JOURNAL_SEGMENT_HEADER_BYTES, &rc);
        if (!p) {
            rc = rc ? rc : ERR_IO;
            goto out;
        }
        hrc = jseg_header_decode(p, &h, &why);
        if (!hrc && h.first_index != r->segs.v[i]) {
            why = "header first index does not match the file name";
            hrc = ERR_CORRUPT;
        }
    }
    if (hrc && last && size > JOURNAL_SEGMENT_HEADER_BYTES) {
        /* A spare renamed into place whose header write never (fully) reached the disk: every
         * byte after the header is zero, so no entry in it was ever written, let alone durable.
         * Treat it like an empty last segment. */
        int z = jscan_zero_tail(r->w, JOURNAL_SEGMENT_HEADER_BYTES);
        if (z < 0) {
            rc = z;
            goto out;
        }
        if (z) {
            rc = drop_empty_last(r, i, &f, "never-written preallocated segment");
            rc = rc ? rc : 1;
            goto out;
        }
    }
    if (hrc) {
        if (last && size <= JOURNAL_SEGMENT_HEADER_BYTES) {
            rc = drop_empty_last(r, i, &f, why);
            rc = rc ? rc : 1;
        } else {
            rc = corrupt_at(r, i, f, 0, r->segs.v[i], why);
        }
        goto out;
    }
    if (*have_prev && h.first_index != *prev_last + 1) {
        char msg[96];
        snprintf(msg, sizeof msg, "gap: segment starts at %" PRIu64 ", expected %" PRIu64,
                 h.first_index, *prev_last + 1);
        rc = corrupt_at(r, i, NULL, 0, *prev_last + 1, msg);
        goto out;
    }
    if (*have_prev && h.prev_term != *prev_term) {
        rc = corrupt_at(r, i, f, 0, h.first_index, "header prev_term does not match");
        goto out;
    }
    if (r->mode == SCAN_OPEN) {
        memset(&r->cur, 0, sizeof r->cur);
        r->cur.first_index = h.first_index;
        r->cur.prev_term = h.prev_term;
    }
    struct jscan sc;
    jscan_entries(r->w, &h, scan_cb, r, &sc);
    if (sc.io_rc) {
        rc = sc.io_rc;
        goto out;
    }
    if (sc.bad) {
        /* Zeros to the end: preallocated space that was never written (journal_make_spare). Not
         * damage, in any segment (a lost tail of a non-last segment would show as a gap before
         * the next one). Kept, so later writes still overwrite zero-filled blocks. */
        int z = jscan_zero_tail(r->w, sc.valid_end);
        if (z < 0) {
            rc = z;
            goto out;
        }
        if (z)
            sc.bad = false;
    }
    if (sc.bad) {
        uint64_t foff = 0, fidx = 0;
        int found = last ? jscan_find_valid_after(r->w, sc.valid_end, sc.last_index + 1, &foff,
                                                  &fidx)
                         : 1;
        if (found < 0) {
            rc = found;
            goto out;
        }
        if (found) {
            char msg[200];
            if (last)
                snprintf(msg, sizeof msg, "%s; valid entry %" PRIu64 " follows at offset %"
                         PRIu64, sc.why, fidx, foff);
            else
                snprintf(msg, sizeof msg, "%s (not the last segment)", sc.why);
            rc = corrupt_at(r, i, f, sc.valid_end, sc.last_index + 1, msg);
            goto out;
        }
        /* Torn tail: never synced, so never acknowledged; safe to cut. */
        r->rec->truncated_bytes = size - sc.valid_end;
        snprintf(r->rec->detail, sizeof r->rec->detail,
                 "torn tail: %" PRIu64 " bytes at segment %020" PRIu64 ".seg offset %" PRIu64
                 " (%s)%s", size - sc.valid_end, h.first_index, sc.valid_end, sc.why,
                 r->mode == SCAN_CHECK ? ", would be truncated" : ", truncated");
        say(r, "%s\n", r->rec->detail);
        if (r->mode != SCAN_CHECK) {
            rc = io_truncate(f, sc.valid_end);
            if (!rc)
                rc = io_sync(f);
            if (rc)
                goto out;
        }
    }
    /* A header-only last segment stays: its header records where the journal continues
     * (first_index - 1 and its term), e.g. after a truncation to a segment boundary. */
    say(r, "segment %020" PRIu64 ".seg: entries %" PRIu64 "..%" PRIu64 ", %" PRIu64 " bytes\n",
        h.first_index, h.first_index, sc.last_index, sc.valid_end);
    if (r->mode == SCAN_OPEN) {
        struct journal *j = r->j;
        if (grow((void **)&j->segs, &j->cap_segs, j->nsegs + 1, sizeof *j->segs)) {
            rc = ERR_NOMEM;
            goto out;
        }
        struct seg *s = &j->segs[j->nsegs++];
        *s = r->cur;
        r->cur.samples = NULL;
        s->last_index = s->flushed_last = sc.last_index;
        s->end = s->flushed_end = s->synced_end = sc.valid_end;
        s->created = true;
        sbuf_init(&s->pend, 0);
        if (last) {
            s->f = f; /* the active segment keeps its handle */
            f = NULL;
        }
    }
    *prev_last = sc.last_index;
    *prev_term = sc.last_term;
    *have_prev = true;
    rc = 0;
out:
    if (r->mode == SCAN_OPEN && rc) {
        xfree(r->cur.samples);
        r->cur.samples = NULL;
    }
    if (f)
        io_close(f);
    return rc;
}

static int recover_run(struct recover *r)
{
    int rc = io_list(r->fs, r->dir, list_cb, &r->segs);
    if (rc == 0)
        rc = r->segs.rc;
    if (rc)
        return rc;
    if (r->segs.n)
        qsort(r->segs.v, r->segs.n, sizeof *r->segs.v, cmp_u64);
    r->w = xmalloc(sizeof *r->w);
    if (!r->w)
        return ERR_NOMEM;
    uint64_t prev_last = 0, prev_term = 0;
    bool have_prev = false;
    for (size_t i = 0; i < r->segs.n; i++) {
        rc = scan_one(r, i, &prev_last, &prev_term, &have_prev);
        if (rc)
            break;
    }
    r->rec->segments = r->segs.n;
    return rc < 0 ? rc : 0;
}

static void recover_free(struct recover *r)
{
    xfree(r->segs.v);
    xfree(r->w);
}

/* ---------------------------------------------------------------------------------------------- */
/* Open and close                                                                                 */

void journal_close(struct journal *j)
{
    if (!j)
        return;
    ASSERT(!j->in_flight);
    for (size_t i = 0; i < j->nsegs; i++)
        seg_free(&j->segs[i]);
    xfree(j->segs);
    xfree(j->runs);
    xfree(j->dir);
    xfree(j);
}

int journal_open(struct io_fs *fs, const char *dir, const struct journal_opts *o,
                 struct journal **out, struct journal_recovery *rec)
{
    struct journal_recovery local;
    if (!rec)
        rec = &local;
    memset(rec, 0, sizeof *rec);
    *out = NULL;
    uint64_t seg_bytes = o && o->segment_bytes ? o->segment_bytes : JOURNAL_SEGMENT_BYTES_DEFAULT;
    if (seg_bytes < SEGMENT_BYTES_MIN || strlen(dir) == 0 || strlen(dir) > 4000)
        return ERR_INVALID;
    struct journal *j = xcalloc(1, sizeof *j);
    if (!j)
        return ERR_NOMEM;
    j->fs = fs;
    j->segment_bytes = seg_bytes;
    j->use_spare = o ? o->use_spare : false;
    j->dir = xstrndup(dir, strlen(dir));
    if (!j->dir) {
        xfree(j);
        return ERR_NOMEM;
    }
    /* The journal directory must itself be durable before any segment in it is; made durable
     * even if it exists, since a run that crashed right after creating it may not have. */
    int rc = io_mkdir_durable(fs, dir);
    struct recover r = {.fs = fs, .dir = dir, .mode = SCAN_OPEN, .j = j, .rec = rec};
    if (!rc)
        rc = recover_run(&r);
    recover_free(&r);
    if (!rc && j->nsegs) {
        /* Whatever survived may still sit only in the page cache (process crash): make it
         * durable before reporting it as such. */
        struct seg *s = &j->segs[j->nsegs - 1];
        if (!s->f) {
            /* The scanned last segment was empty and removed: its predecessor is active. */
            char path[4096];
            seg_name(j, s->first_index, path, sizeof path);
            rc = io_open(fs, path, IO_RDWR, &s->f);
            if (rc)
                s->f = NULL;
        }
        if (!rc)
            rc = io_sync(s->f);
        if (!rc)
            rc = io_sync_dir(fs, dir);
    }
    if (rc) {
        journal_close(j);
        return rc;
    }
    if (j->nsegs) {
        struct seg *s = &j->segs[j->nsegs - 1];
        j->last_index = s->last_index;
        uint64_t t = 0;
        j->last_term = journal_term_at(j, s->last_index, &t) == 0 ? t : 0;
    } else if (j->has_base) {
        j->last_index = j->base_index;
        j->last_term = j->base_term;
    }
    j->flushed_index = j->durable_index = j->last_index;
    rec->first_index = j->nsegs ? j->segs[0].first_index : 0;
    rec->last_index = j->nsegs ? j->last_index : 0;
    *out = j;
    return 0;
}

/* ---------------------------------------------------------------------------------------------- */
/* Reading                                                                                        */

/* Position the window of file f (segment s) at the entry `index`; *off gets its offset. */
static int seek_entry(struct jwindow *w, const struct seg *s, uint64_t index, uint64_t *off)
{
    size_t lo = 0, hi = s->nsamples;
    uint64_t idx = s->first_index, pos = JOURNAL_SEGMENT_HEADER_BYTES;
    while (lo < hi) { /* last sample with sample.index <= index */
        size_t mid = lo + (hi - lo) / 2;
        if (s->samples[mid].index <= index) {
            idx = s->samples[mid].index;
            pos = s->samples[mid].off;
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    while (idx < index) {
        int rc = 0;
        const uint8_t *p = jwindow_get(w, pos, JOURNAL_ENTRY_HEADER_BYTES, &rc);
        if (!p)
            return rc ? rc : ERR_CORRUPT;
        struct jentry_header h;
        jentry_header_decode(p, &h);
        if (h.index != idx || h.len > JOURNAL_PAYLOAD_MAX)
            return ERR_CORRUPT;
        pos += JOURNAL_ENTRY_HEADER_BYTES + h.len;
        idx++;
    }
    *off = pos;
    return 0;
}

static size_t seg_find(const struct journal *j, uint64_t index)
{
    size_t lo = 0, hi = j->nsegs;
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if (j->segs[mid].first_index <= index)
            lo = mid;
        else
            hi = mid;
    }
    return lo;
}

int journal_iter_open(struct journal *j, uint64_t from_index, struct journal_iter **out)
{
    *out = NULL;
    uint64_t first = journal_first_index(j);
    if (first && from_index < first)
        return ERR_NOT_FOUND;
    if (from_index == 0)
        from_index = 1;
    if (from_index > j->flushed_index + 1)
        return ERR_INVALID;
    struct journal_iter *it = xcalloc(1, sizeof *it);
    if (!it)
        return ERR_NOMEM;
    it->j = j;
    it->gen = j->gen;
    it->next_index = from_index;
    *out = it;
    return 0;
}

void journal_iter_close(struct journal_iter *it)
{
    if (!it)
        return;
    if (it->w.f)
        io_close(it->w.f);
    xfree(it->buf);
    xfree(it);
}

int journal_iter_next(struct journal_iter *it, uint64_t *term, uint64_t *index, uint8_t *type,
                      struct slice *payload)
{
    struct journal *j = it->j;
    if (it->gen != j->gen)
        return ERR_AGAIN;
    if (it->next_index > j->flushed_index || j->nsegs == 0)
        return 0;
    struct seg *s = it->w.f ? &j->segs[it->seg] : NULL;
    if (!s || it->next_index > s->flushed_last) {
        if (it->w.f)
            io_close(it->w.f);
        it->w.f = NULL;
        it->seg = seg_find(j, it->next_index);
        s = &j->segs[it->seg];
        char path[4096];
        seg_name(j, s->first_index, path, sizeof path);
        int rc = io_open(j->fs, path, IO_RDONLY, &it->w.f);
        if (rc) {
            it->w.f = NULL;
            return rc;
        }
        it->w.base = it->w.len = 0;
        it->w.size = s->flushed_end;
        if ((rc = seek_entry(&it->w, s, it->next_index, &it->off)) != 0)
            return rc;
    }
    it->w.size = s->flushed_end;
    int rc = 0;
    const uint8_t *p = jwindow_get(&it->w, it->off, JOURNAL_ENTRY_HEADER_BYTES, &rc);
    if (!p)
        return rc ? rc : ERR_CORRUPT;
    uint8_t hb[JOURNAL_ENTRY_HEADER_BYTES];
    memcpy(hb, p, sizeof hb);
    struct jentry_header h;
    jentry_header_decode(hb, &h);
    if (h.index != it->next_index || h.len > JOURNAL_PAYLOAD_MAX ||
        it->off + JOURNAL_ENTRY_HEADER_BYTES + h.len > s->flushed_end)
        return ERR_CORRUPT;
    uint64_t poff = it->off + JOURNAL_ENTRY_HEADER_BYTES;
    const uint8_t *body;
    if (h.len <= JSCAN_WINDOW_BYTES) {
        body = h.len ? jwindow_get(&it->w, poff, h.len, &rc) : hb;
        if (!body)
            return rc ? rc : ERR_CORRUPT;
    } else {
        if (h.len > it->cap) {
            uint8_t *nb = xrealloc(it->buf, h.len);
            if (!nb)
                return ERR_NOMEM;
            it->buf = nb;
            it->cap = h.len;
        }
        if ((rc = io_pread_full(it->w.f, it->buf, h.len, poff)) != 0)
            return rc == ERR_EOF ? ERR_CORRUPT : rc;
        body = it->buf;
    }
    if (crc32c(jentry_crc_head(hb), body, h.len) != h.crc)
        return ERR_CORRUPT;
    *term = h.term;
    *index = h.index;
    *type = h.type;
    *payload = slice_of(body, h.len);
    it->off = poff + h.len;
    it->next_index++;
    return 1;
}

/* ---------------------------------------------------------------------------------------------- */
/* Trim and truncate                                                                              */

static int unlink_seg(struct journal *j, size_t i)
{
    char path[4096];
    struct seg *s = &j->segs[i];
    seg_name(j, s->first_index, path, sizeof path);
    if (s->f) {
        io_close(s->f);
        s->f = NULL;
    }
    return s->created ? io_unlink_durable(j->fs, path) : 0;
}

/* Segment k exists on disk, by a durable name, with at least one durable entry: deleting its
 * predecessors cannot leave the journal without a record of where it continues. */
static bool holds_durable_entry(const struct journal *j, size_t k)
{
    const struct seg *s = &j->segs[k];
    if (!s->created || s->synced_end <= JOURNAL_SEGMENT_HEADER_BYTES)
        return false;
    bool newest = k + 1 == j->nsegs || !j->segs[k + 1].created;
    return !(newest && j->dir_dirty); /* invariant 2: only the newest name can be unsynced */
}

int journal_trim_prefix(struct journal *j, uint64_t index)
{
    if (j->err)
        return j->err;
    if (j->in_flight)
        return ERR_AGAIN;
    size_t del = 0;
    while (del + 1 < j->nsegs && j->segs[del].last_index <= index && seg_clean(&j->segs[del]) &&
           holds_durable_entry(j, del + 1)) {
        int rc = unlink_seg(j, del);
        if (rc) {
            j->err = rc;
            break;
        }
        seg_free(&j->segs[del]);
        del++;
    }
    if (!del)
        return j->err;
    memmove(j->segs, j->segs + del, (j->nsegs - del) * sizeof *j->segs);
    j->nsegs -= del;
    uint64_t first = j->segs[0].first_index;
    size_t drop = 0;
    while (drop + 1 < j->nruns && j->runs[drop + 1].start <= first)
        drop++;
    memmove(j->runs, j->runs + drop, (j->nruns - drop) * sizeof *j->runs);
    j->nruns -= drop;
    j->gen++;
    return j->err;
}

int journal_truncate_suffix(struct journal *j, uint64_t index)
{
    if (j->err)
        return j->err;
    if (j->in_flight)
        return ERR_AGAIN;
    if (index >= j->last_index)
        return 0;
    uint64_t first = journal_first_index(j);
    if (j->nsegs == 0 || index + 1 < first)
        return ERR_INVALID;
    uint64_t term = 0;
    int rc = journal_term_at(j, index, &term);
    if (rc && index > 0)
        return ERR_INVALID;
    /* Make everything flushed and durable first: simpler than cutting buffers, and truncation is
     * rare (a leader change with conflicting entries). */
    if ((rc = journal_sync_now(j)) != 0)
        return rc;
    j->gen++;
    /* Newest first (invariant 5). A first segment starting at index + 1 is kept, cut to its
     * header, so the journal still records that it continues after index. */
    while (j->nsegs && (j->segs[j->nsegs - 1].first_index > index + 1 ||
                        (j->segs[j->nsegs - 1].first_index == index + 1 && j->nsegs > 1))) {
        if ((rc = unlink_seg(j, j->nsegs - 1)) != 0)
            return j->err = rc;
        seg_free(&j->segs[--j->nsegs]);
    }
    if (j->nsegs) {
        /* The remaining last segment becomes the active one: it needs a write handle. */
        struct seg *s = &j->segs[j->nsegs - 1];
        char path[4096];
        seg_name(j, s->first_index, path, sizeof path);
        if (!s->f && (rc = io_open(j->fs, path, IO_RDWR, &s->f)) != 0) {
            s->f = NULL;
            return j->err = rc;
        }
        if (s->last_index > index) {
            struct jwindow *w = xmalloc(sizeof *w);
            if (!w)
                return j->err = ERR_NOMEM;
            memset(w, 0, offsetof(struct jwindow, buf));
            w->f = s->f;
            w->size = s->flushed_end;
            uint64_t off = 0;
            rc = seek_entry(w, s, index + 1, &off);
            xfree(w);
            if (!rc)
                rc = io_truncate(s->f, off);
            if (!rc)
                rc = io_sync(s->f);
            if (rc)
                return j->err = rc;
            s->last_index = s->flushed_last = index;
            s->end = s->flushed_end = s->synced_end = off;
            while (s->nsamples && s->samples[s->nsamples - 1].index > index)
                s->nsamples--;
        }
    } else {
        j->has_base = index > 0;
        j->base_index = index;
        j->base_term = term;
    }
    while (j->nruns && j->runs[j->nruns - 1].start > index)
        j->nruns--;
    j->last_index = j->flushed_index = j->durable_index = index;
    j->last_term = term;
    return 0;
}

/* ---------------------------------------------------------------------------------------------- */
/* Tools                                                                                          */

struct dump_ctx {
    FILE *out;
};

static int dump_cb(void *ctx, const struct jentry_header *h, uint64_t off)
{
    struct dump_ctx *d = ctx;
    fprintf(d->out, "index=%" PRIu64 " term=%" PRIu64 " type=%u len=%u offset=%" PRIu64 "\n",
            h->index, h->term, h->type, h->len, off);
    return 0;
}

int journal_dump_segment(struct io_fs *fs, const char *path, FILE *out)
{
    struct io_file *f;
    int rc = io_open(fs, path, IO_RDONLY, &f);
    if (rc)
        return rc;
    struct jwindow *w = xmalloc(sizeof *w);
    if (!w) {
        io_close(f);
        return ERR_NOMEM;
    }
    memset(w, 0, offsetof(struct jwindow, buf));
    w->f = f;
    if ((rc = io_size(f, &w->size)) != 0)
        goto out;
    const uint8_t *p = jwindow_get(w, 0, JOURNAL_SEGMENT_HEADER_BYTES, &rc);
    struct jseg_header h;
    const char *why = "short segment header";
    if (!p || jseg_header_decode(p, &h, &why) != 0) {
        fprintf(out, "%s: %s (%" PRIu64 " bytes)\n", path, why, w->size);
        rc = rc ? rc : ERR_CORRUPT;
        goto out;
    }
    fprintf(out, "%s: first_index=%" PRIu64 " prev_term=%" PRIu64 " size=%" PRIu64 "\n", path,
            h.first_index, h.prev_term, w->size);
    struct dump_ctx d = {out};
    struct jscan sc;
    jscan_entries(w, &h, dump_cb, &d, &sc);
    if (sc.io_rc) {
        rc = sc.io_rc;
    } else if (sc.bad) {
        uint64_t foff = 0, fidx = 0;
        int found = jscan_find_valid_after(w, sc.valid_end, sc.last_index + 1, &foff, &fidx);
        fprintf(out, "bad entry at offset %" PRIu64 ": %s (%" PRIu64 " bytes left)%s\n",
                sc.valid_end, sc.why, w->size - sc.valid_end,
                found > 0 ? "; a valid entry follows: corruption" : "; looks like a torn tail");
        rc = found < 0 ? found : ERR_CORRUPT;
    }
out:
    xfree(w);
    io_close(f);
    return rc;
}

int journal_check_dir(struct io_fs *fs, const char *dir, bool repair, FILE *out)
{
    struct journal_recovery rec;
    memset(&rec, 0, sizeof rec);
    struct recover r = {.fs = fs, .dir = dir, .mode = repair ? SCAN_REPAIR : SCAN_CHECK,
                        .out = out, .rec = &rec};
    int rc = recover_run(&r);
    recover_free(&r);
    if (out)
        fprintf(out, "%s: %zu segment(s): %s\n", dir, r.segs.n,
                rc ? err_message(rc) : (repair ? "ok (repaired if needed)" : "ok"));
    return rc;
}
