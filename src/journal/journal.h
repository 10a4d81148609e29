/* journal.h -- the segmented journal: the Raft log and the write-ahead log of the node.
 *
 * The journal owns the segment files `DIR/<first-index, 20 digits>.seg` (byte layout in
 * docs/DISK_FORMAT.md), the write buffer of appended-but-unflushed entries, and one file handle
 * per segment that is being written or still awaits its final sync. It keeps in memory only
 * per-segment bookkeeping, a sparse offset index (one sample per 256 KiB) and one record per term
 * change, never the entries themselves.
 *
 * Threads: every function is called by one owner thread (the "core" thread), except
 * journal_sync_run, which runs on the sync thread and touches only its token. At most one sync
 * token is in flight at a time.
 *
 * Indexes: entries are numbered densely. last_index counts appended entries (buffered ones too);
 * flushed_index <= last_index is what reached the files (readable by iterators); durable_index <=
 * flushed_index is what a successful sync made durable.
 *
 * Sticky error: a failed fsync or a failed write (other than ENOSPC) puts the journal into a
 * permanent error state: every later append/flush/sync_prepare/truncate returns that error and
 * the durable index never advances again. A failed fsync is never retried as if it worked
 * ("fsyncgate"). ENOSPC from a write is not sticky: nothing was acknowledged, the buffered
 * entries stay buffered and journal_flush may be retried after space is freed.
 *
 * Ownership: struct journal, struct journal_sync and struct journal_iter are heap objects owned
 * by the caller until journal_close / journal_sync_done / journal_iter_close. A payload slice
 * returned by journal_iter_next borrows the iterator's buffer until the next call on it.
 */
#ifndef AYDER_JOURNAL_JOURNAL_H
#define AYDER_JOURNAL_JOURNAL_H

#include "base/buf.h"
#include "io/io.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#define JOURNAL_SEGMENT_BYTES_DEFAULT (64ull << 20)
#define JOURNAL_PAYLOAD_MAX ((64u << 20) + 1024u)
#define JOURNAL_ENTRY_HEADER_BYTES 25u
#define JOURNAL_SEGMENT_HEADER_BYTES 40u

struct journal;
struct journal_sync;
struct journal_iter;

struct journal_opts {
    uint64_t segment_bytes; /* roll threshold; 0 = JOURNAL_SEGMENT_BYTES_DEFAULT; min 4096 */
    bool use_spare;         /* start new segments from DIR/spare when present (journal_make_spare) */
};

struct journal_recovery {
    uint64_t first_index, last_index; /* 0, 0 if empty */
    uint64_t truncated_bytes;         /* torn tail cut off the last segment */
    uint64_t segments;
    char detail[256]; /* what was truncated, or where corruption is */
};

/* Open (create if missing) the journal in dir; the parent of dir must exist. Scans every segment
 * with streaming reads and a bounded buffer, verifying every CRC. A torn tail (bad or incomplete
 * bytes at the end of the last segment with no valid entry after them) is truncated, synced and
 * reported in rec; an empty last segment (zero-length, torn header or header only) is removed.
 * A bad entry followed by a valid one, a gap or non-consecutive index, a term that goes down, or
 * a damaged non-last segment returns ERR_CORRUPT with rec->detail saying where. Everything found
 * is made durable (last segment and dir synced) before returning, so durable_index = last_index. */
int journal_open(struct io_fs *fs, const char *dir, const struct journal_opts *o,
                 struct journal **out, struct journal_recovery *rec);
/* Frees everything; does not sync. No sync token may be in flight. */
void journal_close(struct journal *j);

uint64_t journal_first_index(const struct journal *j); /* 0 if empty and no base set */
uint64_t journal_last_index(const struct journal *j);  /* 0 if empty (base if a base is set) */
uint64_t journal_last_term(const struct journal *j);
uint64_t journal_flushed_index(const struct journal *j);
uint64_t journal_durable_index(const struct journal *j);
/* Bytes written to segment files but not yet covered by a finished sync (the next group). */
uint64_t journal_unsynced_bytes(const struct journal *j);
int journal_error(const struct journal *j); /* 0 or the sticky error */

/* For a journal without entries (e.g. after a snapshot at last_index): the next appended index
 * will be last_index + 1 and term_at(last_index) answers last_term. ERR_CONFLICT if entries exist.
 * Not persisted by itself: the first segment written afterwards records it in its header. */
int journal_set_base(struct journal *j, uint64_t last_index, uint64_t last_term);

/* Encode one entry into the write buffer. index must be last_index + 1 and term >= last_term
 * (else ERR_INVALID); payload.len <= JOURNAL_PAYLOAD_MAX (else ERR_TOO_LARGE). No I/O. */
int journal_append(struct journal *j, uint64_t term, uint64_t index, uint8_t type,
                   struct slice payload);

/* Write buffered entries to the segment files (pwrite; creates new segments as needed). No fsync.
 * A new segment is only created once every earlier segment and the directory are durable, so
 * flush may stop at a segment boundary: then journal_flushed_index() < journal_last_index() and
 * the caller flushes again after the next journal_sync_done. */
int journal_flush(struct journal *j);

/* Group commit, so that fsync runs on the sync thread while appends continue:
 *   prepare (core): captures what must be synced to make every flushed entry durable (segments
 *     with unsynced bytes, and the directory if a segment was created) -> *tok; *tok = NULL and 0
 *     if nothing is pending; ERR_AGAIN if a token is already in flight.
 *   run (sync thread): performs the fsyncs; touches nothing but the token. Returns 0 or error.
 *   done (core): records run's result and frees tok. On success durable_index advances to the
 *     token's index; on failure the journal enters the sticky error state. Returns run_rc. */
int journal_sync_prepare(struct journal *j, struct journal_sync **tok);
int journal_sync_run(struct journal_sync *tok);
int journal_sync_done(struct journal *j, struct journal_sync *tok, int run_rc);
bool journal_sync_in_flight(const struct journal *j);
/* Convenience for tests and tools: flush, then prepare/run/done inline until durable. */
int journal_sync_now(struct journal *j);

/* Iterate flushed entries from from_index (core thread only). ERR_NOT_FOUND if from_index is
 * below the first index, ERR_INVALID if above flushed_index + 1. next returns 1 with an entry,
 * 0 at the end of flushed entries, ERR_CORRUPT on a bad entry, ERR_AGAIN if the journal was
 * truncated or trimmed since the iterator was opened. Entries are CRC-verified. */
int journal_iter_open(struct journal *j, uint64_t from_index, struct journal_iter **it);
int journal_iter_next(struct journal_iter *it, uint64_t *term, uint64_t *index, uint8_t *type,
                      struct slice *payload);
void journal_iter_close(struct journal_iter *it);

/* Term of entry index (or of the base / of the entry before the first segment). No I/O.
 * ERR_NOT_FOUND if unknown. */
int journal_term_at(struct journal *j, uint64_t index, uint64_t *term);

/* Delete whole segments whose entries are all <= index, oldest first, each deletion made
 * durable before the next. The last segment is never deleted. ERR_AGAIN if a sync is in flight. */
int journal_trim_prefix(struct journal *j, uint64_t index);

/* Remove entries > index (Raft conflict truncation): flushes, deletes later segments newest
 * first, truncates the segment holding index, and syncs everything before returning, so after it
 * durable_index = last_index = index. index >= first_index - 1 (else ERR_INVALID); index >=
 * last_index is a no-op. ERR_AGAIN if a sync is in flight. */
int journal_truncate_suffix(struct journal *j, uint64_t index);

struct journal_stats {
    uint64_t segments, bytes, syncs, sync_ns_total, entries_written;
};
void journal_stats(const struct journal *j, struct journal_stats *st);

/* Preallocation. fdatasync after overwriting already-written blocks needs no metadata journal
 * commit, so it is about twice as fast as after an append (docs/BENCHMARKS.md). journal_make_spare
 * writes DIR/spare.tmp full of zeros (segment_bytes long), fsyncs it and renames it to DIR/spare;
 * it touches nothing else of the journal and may run on any thread, concurrently with the owner.
 * With opts.use_spare, a new segment is made by renaming DIR/spare to its name (then the header is
 * written over the zeros); without a spare it is created empty as usual. Recovery treats an
 * all-zero tail of a segment as unused space, not as damage. Returns 0, or 1 if a spare already
 * exists, or an error. */
int journal_make_spare(struct io_fs *fs, const char *dir, uint64_t segment_bytes);

/* Tools. dump_segment prints the header and one line per entry of one segment file; it returns
 * ERR_CORRUPT at the first bad entry (after printing where). check_dir verifies a whole journal
 * directory read-only and prints a summary: 0 if open would succeed (a torn tail is reported, not
 * an error), ERR_CORRUPT otherwise. With repair, it keeps the longest valid prefix: truncates at
 * the first bad entry, deletes later segments, syncs, and returns 0. */
int journal_dump_segment(struct io_fs *fs, const char *path, FILE *out);
int journal_check_dir(struct io_fs *fs, const char *dir, bool repair, FILE *out);

#endif
