/* plog.h -- partition logs: the materialized log of one topic partition.
 *
 * A struct plog owns one directory DIR (given by the caller) and everything in it:
 *   DIR/<base offset, 20 digits>.log   segment: Kafka RecordBatch v2 batches (recbatch.h), back to
 *                                      back, offsets consecutive across batches and segments
 *   DIR/<base offset, 20 digits>.idx   sparse index: 8-byte entries {relative offset u32,
 *                                      byte position u32}, big-endian, one per ~index_interval_bytes
 *   DIR/floor                          retention floor (start offset), written atomically
 * Byte layouts: docs/DISK_FORMAT.md "Partition logs".
 *
 * Durability: the journal is the write-ahead log. Appends are written without fsync; plog_sync()
 * (at checkpoints) fsyncs every segment written since the last sync, its index and the directory.
 * After a crash the owner calls plog_open() (which keeps the CRC-valid prefix of the last segment
 * and rebuilds bad indexes), then plog_truncate(end recorded by the last checkpoint), then
 * re-applies the journal. A record that fails its CRC is never served (ERR_CORRUPT instead).
 *
 * Threads:
 *  - ONE writer at a time for the mutating calls (append, publish, truncate, sync,
 *    delete_before, destroy/close): they serialize on an internal mutex, so retention may run on
 *    another thread than the core thread. plog_close/plog_destroy require that no other call runs.
 *  - Any number of readers (plog_read, stats, offset_for_*, start/end/high-watermark getters)
 *    concurrently with the writer. Readers hold an internal rwlock shared for one call; the writer
 *    takes it exclusively only for structure changes (segment roll, index array growth, segment
 *    deletion, truncate), never for an ordinary append into the active segment. Appended data
 *    becomes visible only through plog_publish() (an atomic release store of the high watermark);
 *    readers never look at bytes at or above the high watermark they loaded.
 *
 * Memory: per segment, a small struct plus the sparse index held in memory: 8 bytes per entry, one
 * entry per index_interval_bytes of log, i.e. 2 MiB per GiB of log at the default 4 KiB. Each
 * segment keeps two file handles (.log, .idx) open. A read allocates a window buffer of 32 KiB, or
 * the size of the largest batch it decodes (at most RECBATCH_MAX_BYTES = 64 MiB).
 *
 * Open cost: plog_open reads the whole last segment once (streaming, 64 KiB buffer) to check
 * every CRC and rebuild its index; other segments only read their index and the headers of the
 * batches after its last entry.
 *
 * Ownership: struct plog is heap-allocated by plog_open and freed by plog_close/plog_destroy.
 * Record slices handed to a plog_visit_fn are valid only during that call. plog_append copies
 * the records' bytes before returning.
 */
#ifndef AYDER_BROKER_PLOG_H
#define AYDER_BROKER_PLOG_H

#include "base/buf.h"
#include "io/io.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

struct plog;

struct plog_header {
    struct slice key, value;
};

struct plog_record {
    int64_t timestamp_ms;
    bool has_key; /* false -> null key */
    struct slice key;
    struct slice value; /* a null value (Kafka tombstone) read from a foreign batch is empty */
    const struct plog_header *headers;
    size_t header_count;
    uint64_t offset; /* filled on read; ignored by plog_append */
    bool batch_end;  /* filled on read: the last record of its stored batch (a cheap place to
                      * stop and resume: the next read starts at a batch header) */
};

#define PLOG_SEGMENT_BYTES_DEFAULT (64ull << 20)
#define PLOG_SEGMENT_BYTES_MAX (1ull << 30) /* index positions are 32-bit */
#define PLOG_INDEX_INTERVAL_DEFAULT 4096u

struct plog_opts {
    uint64_t segment_bytes;        /* 0 = default 64 MiB; roll before a batch would exceed it */
    uint32_t index_interval_bytes; /* 0 = default 4096: one index entry per ~4 KiB of log */
};

/* Open or create the partition log in dir (dir itself is created if missing; its parent must
 * exist and is the caller's business). o may be NULL for defaults. After open the high watermark
 * equals the end offset. Errors: ERR_INVALID (bad opts), ERR_CORRUPT (segment names out of
 * order), I/O errors. */
int plog_open(struct io_fs *fs, const char *dir, const struct plog_opts *o, struct plog **out);
/* Close files and free (no sync: call plog_sync first if the data must be durable). */
void plog_close(struct plog *p);
/* Close and delete all its files and the directory. p is freed even on error. */
int plog_destroy(struct plog *p);

/* Writer: append n >= 1 records as ONE batch at offset plog_end_offset(p). Written (not fsynced)
 * and not visible to readers until plog_publish. Errors: ERR_INVALID, ERR_TOO_LARGE (batch above
 * 64 MiB), I/O errors; a failed write puts the plog into a sticky error state (every later
 * append/sync/truncate/delete returns that error; reopen to recover). */
int plog_append(struct plog *p, const struct plog_record *recs, size_t n);
/* Writer: append one client-encoded RecordBatch v2 (uncompressed, CRC already checked by the
 * caller, lastOffsetDelta == records - 1) unchanged except for its baseOffset (set to the end
 * offset) and partitionLeaderEpoch (0): both lie outside the CRC. Same visibility, errors and
 * sticky state as plog_append; ERR_INVALID for a header that does not parse or fit batch.len. */
int plog_append_batch(struct plog *p, struct slice batch);
uint64_t plog_end_offset(const struct plog *p);   /* next offset to be assigned */
uint64_t plog_start_offset(const struct plog *p); /* first readable offset (retention floor) */
/* Make offsets < hw visible to readers (atomic release store; hw <= end offset; never lowers). */
void plog_publish(struct plog *p, uint64_t hw);
uint64_t plog_high_watermark(const struct plog *p); /* atomic acquire load */

/* Reader (any thread): visit records with offset in [from, hw), at most max_records (0 visits
 * nothing), stopping before the record that would push the total key+value+header bytes above
 * max_bytes (the first record is always visited). from < start offset reads from the start
 * offset (res->from_adjusted). from >= hw visits nothing (res->next_offset = from). fn returning
 * non-zero stops after that record (it counts); fn may be NULL (count only). Every batch served
 * is CRC-checked: a bad one gives ERR_CORRUPT (records visited before it were valid). res is
 * filled on success and on error. */
typedef int (*plog_visit_fn)(void *ctx, const struct plog_record *rec); /* non-zero = stop */
struct plog_read_result {
    uint64_t next_offset; /* offset after the last visited record, or the (adjusted) from */
    size_t count;
    bool from_adjusted;
    bool more; /* stopped by a limit or by fn with more records available below hw */
};
int plog_read(struct plog *p, uint64_t from, size_t max_records, size_t max_bytes,
              plog_visit_fn fn, void *ctx, struct plog_read_result *res);

/* Reader (any thread): append to out the stored batches, byte for byte, from the one holding
 * `from` (which may start before it) up to the high watermark, stopping before a batch that would
 * take the bytes copied above max_bytes (the first batch is always copied). Each batch is
 * CRC-checked (ERR_CORRUPT). res: count = records in the copied batches, next_offset = the offset
 * after the last one, more = stopped by max_bytes. */
int plog_read_batches(struct plog *p, uint64_t from, size_t max_bytes, struct sbuf *out,
                      struct plog_read_result *res);

/* Recovery: drop everything at offsets >= end_offset. end_offset must be a batch boundary
 * (ERR_INVALID if a batch straddles it; nothing changes). ERR_CORRUPT if the log does not hold
 * CRC-valid data up to end_offset (the log lost data a checkpoint said was synced). Lowers the
 * high watermark (and the start offset) to end_offset if they were above. */
int plog_truncate(struct plog *p, uint64_t end_offset);

/* Checkpoint: fsync all segments written since the last sync, their .idx files and the dir.
 * A failure is sticky. Appends may not run concurrently (writer mutex), reads may. */
int plog_sync(struct plog *p);

/* Retention: raise the floor to `offset` (start = max(start, offset), capped at end offset),
 * persist it (DIR/floor), and delete whole segments entirely below it (.log and .idx). Reports
 * how many records became unreadable and the bytes of the files deleted (either may be NULL).
 * Never deletes the active segment; if the whole log is below the floor it rolls first. */
int plog_delete_before(struct plog *p, uint64_t offset, uint64_t *deleted_records,
                       uint64_t *freed_bytes);
/* Retention policy helpers (segment granularity). An offset such that every segment before it
 * has batch maxTimestamp < cutoff_ms (the max is exact for segments written or fully scanned
 * since open, else the max over the batches after the last index entry). */
uint64_t plog_offset_for_time(struct plog *p, int64_t cutoff_ms);
/* An offset such that the .log bytes from it on are <= max_bytes, or the active segment's base. */
uint64_t plog_offset_for_size(struct plog *p, uint64_t max_bytes);

struct plog_stats {
    uint64_t start_offset, end_offset, high_watermark;
    uint64_t bytes; /* .log plus .idx bytes */
    uint64_t segments;
    uint64_t records; /* end - start */
};
void plog_stats(struct plog *p, struct plog_stats *st);

/* For tools: print the batches of one segment file (offsets, count, timestamps, CRC ok) and where
 * the valid data ends. Returns 0 if the file ends on a clean batch boundary, ERR_CORRUPT if not. */
int plog_dump_segment(struct io_fs *fs, const char *path, FILE *out);

#endif
