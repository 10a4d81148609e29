/* snapx.h -- snapshot transfer: stream a snapshot's files to a follower, stage them, install them.
 *
 * What is streamed (InstallSnapshot, issue 7): a snapshot S of a data directory DATA is the file
 * DATA/snapshot/<S, 20 digits>.snap plus the current contents of every file under DATA/topics/
 * (they are at least as long as S recorded; the receiver's broker cuts them back when it loads S).
 * DATA/journal/ and DATA/raft/ are never streamed. Wire layout: docs/DISK_FORMAT.md "Snapshot
 * transfer".
 *
 * Three parts, each owning its own things:
 *  - the chunk codec (snapx_chunk_encode/decode): pure functions;
 *  - the sender (struct snapx_sender): one thread per outgoing stream, owning the files it reads
 *    and a 256 KiB read buffer; it hands encoded chunks to a caller-supplied send() function;
 *  - the receiver (struct snapx_rx): owns the staging directory DATA/snap-incoming/ and at most
 *    one open file in it;
 *  - snapx_install / snapx_recover: own the swap of the staging into DATA (markers
 *    DATA/INSTALLING and DATA/snap-incoming/COMPLETE, directory DATA/topics.old).
 *
 * Ownership and lifetimes: a decoded chunk's path and data slices borrow from the input bytes
 * and live as long as they do. The chunk_bytes slice passed to send() is valid only during that
 * call (send must copy it). Strings passed to the start/new functions are copied.
 */
#ifndef AYDER_CORE_SNAPX_H
#define AYDER_CORE_SNAPX_H

#include "base/buf.h"
#include "io/io.h"

#include <stdbool.h>
#include <stdint.h>

#define SNAPX_CHUNK_BYTES (256u << 10) /* data bytes per chunk */
#define SNAPX_PATH_MAX 1024            /* a relative path is at most SNAPX_PATH_MAX - 1 bytes */
#define SNAPX_FILES_MAX 1000000u       /* files in one snapshot */
#define SNAPX_DEPTH_MAX 16             /* path components */
#define SNAPX_NAME_MAX 255             /* bytes in one path component */
/* Encoded size of a chunk is at most this (header + path + data + crc). */
#define SNAPX_CHUNK_ENCODED_MAX (SNAPX_CHUNK_BYTES + SNAPX_PATH_MAX + 64)
/* The sender gives up retrying a refused (ERR_AGAIN) send after this long since its start. */
#define SNAPX_SEND_DEADLINE_MS (10u * 60u * 1000u)

enum snapx_kind { SNAPX_FILE = 1, SNAPX_END = 2 };

struct snapx_chunk {
    uint64_t snap_index, snap_term;
    uint64_t xfer_id;      /* random per stream; a new id restarts the receiver's staging */
    uint32_t seq;          /* 0,1,2,... dense within a stream */
    uint8_t kind;          /* enum snapx_kind */
    struct slice path;     /* SNAPX_FILE: relative path, "snapshot/<snap_index, 20 digits>.snap"
                              or "topics/<c>/..." (1..SNAPX_DEPTH_MAX-1 components after
                              "topics", each 1..SNAPX_NAME_MAX bytes of [A-Za-z0-9._-], not "."
                              or ".."; these are the bytes broker_valid_name allows) */
    uint64_t offset;       /* SNAPX_FILE: where data goes in the file */
    bool eof;              /* SNAPX_FILE: last chunk of this file (file size = offset+data.len) */
    struct slice data;     /* SNAPX_FILE: at most SNAPX_CHUNK_BYTES */
    uint32_t n_files;      /* SNAPX_END: files sent */
    uint64_t total_bytes;  /* SNAPX_END: data bytes sent */
};

/* Append the encoding of c to out. ERR_INVALID if c breaks a rule above (same checks as
 * decode), ERR_NOMEM if out failed. */
int snapx_chunk_encode(const struct snapx_chunk *c, struct sbuf *out);
/* Decode exactly one chunk (all of in). Slices borrow from in. ERR_INVALID on anything
 * malformed (bad magic/version/kind/CRC/lengths/path, trailing bytes). For an END chunk path
 * and data are empty, offset 0, eof false; for a FILE chunk n_files and total_bytes are 0. */
int snapx_chunk_decode(struct slice in, struct snapx_chunk *c);
/* Whether path is acceptable in a FILE chunk of snapshot snap_index (the rule above). */
bool snapx_path_valid(struct slice path, uint64_t snap_index);

/* ---- Sender ----------------------------------------------------------------------------------
 * A thread that streams snapshot S to one peer through send(): first snapshot/<S>.snap, then
 * every file under topics/ (depth first, names sorted), each file exactly once in chunks of at
 * most SNAPX_CHUNK_BYTES with dense seq numbers, then one END. An empty file is one chunk with
 * no data and eof set. send returns 0 (queued), ERR_AGAIN (queue full: the sender waits ~2 ms
 * and retries the same chunk; after SNAPX_SEND_DEADLINE_MS since the start it gives up with
 * ERR_TIMEOUT) or another error (abort with that error). done() is called exactly once, on the
 * sender thread, with rc 0 after END was queued, or the error: missing S.snap = ERR_NOT_FOUND,
 * a file vanished or shrank mid-read = ERR_AGAIN (retry with a new stream), cancelled =
 * ERR_UNAVAILABLE, a local file name the receiver would reject or too many files =
 * ERR_INVALID, I/O errors as reported. A file is read with io_pread up to the size it had when
 * the sender opened it. send and done must not call snapx_sender_free on their own sender.
 * If snapx_sender_start returns an error, done is never called. done may run before
 * snapx_sender_start has returned (and stored *out). */
struct snapx_sender;
typedef int (*snapx_send_fn)(void *ctx, uint64_t to, struct slice chunk_bytes);
typedef void (*snapx_done_fn)(void *ctx, uint64_t to, uint64_t snap_index, uint64_t snap_term,
                              int rc);
int snapx_sender_start(struct io_fs *fs, const char *data_dir, uint64_t snap_index,
                       uint64_t snap_term, uint64_t to, snapx_send_fn send, snapx_done_fn done,
                       void *ctx, struct snapx_sender **out);
/* Cancel (if running) and join; then free. Safe after done() ran. NULL ok. */
void snapx_sender_free(struct snapx_sender *s);
bool snapx_sender_finished(const struct snapx_sender *s); /* done() has run */
uint64_t snapx_sender_xfer_id(const struct snapx_sender *s);

/* ---- Receiver (owner thread only) -------------------------------------------------------------
 * Stages into DATA/snap-incoming/ (created as needed). A chunk with seq 0 starts a new staging:
 * whatever is in snap-incoming is wiped first. A stream is identified by (xfer_id, snap_index,
 * snap_term); chunks must arrive in seq order. Results of snapx_rx_chunk:
 *   0            accepted (or a duplicate of a stream that is already complete: ignored);
 *   ERR_AGAIN    a gap, a repeated file, counts that do not match, or anything else
 *                inconsistent: the staging is reset and every later chunk of that stream is
 *                refused with ERR_AGAIN until a new stream starts (seq 0). Also returned, with
 *                no state change, for a chunk of another stream that does not start at seq 0
 *                (a late chunk of an abandoned stream must not disturb the current one);
 *   ERR_INVALID  the chunk breaks the codec rules (the current stream is reset if it is its);
 *   other        I/O error while staging (the stream is reset).
 * A SNAPX_END whose counts match what was staged (and the .snap was among the files) makes the
 * staging complete: every staged file was fsynced at its eof, every staged directory and DATA
 * are fsynced, and DATA/snap-incoming/COMPLETE (index, term, xfer id, counts, CRC) is written
 * durably. Staging writes go to disk on the calling thread (including one fsync per file).
 * Before snapx_install/snapx_recover, free the receiver or snapx_rx_reset it (it may hold a
 * file open in the staging, and it would still report the installed staging as complete). */
struct snapx_rx;
int snapx_rx_new(struct io_fs *fs, const char *data_dir, struct snapx_rx **out);
void snapx_rx_free(struct snapx_rx *rx);
int snapx_rx_chunk(struct snapx_rx *rx, const struct snapx_chunk *c);
/* Staging is complete for exactly this snapshot. */
bool snapx_rx_complete(struct snapx_rx *rx, uint64_t snap_index, uint64_t snap_term);
/* While held, every chunk is refused with ERR_AGAIN and changes nothing. The owner holds a
 * complete staging from the moment it hands the snapshot to Raft until it has installed it (or
 * Raft refused it): the first chunk of a newer stream would otherwise wipe the staging that the
 * install is about to read. snapx_rx_reset releases the hold too. */
void snapx_rx_hold(struct snapx_rx *rx, bool hold);
/* Forget the in-memory stream state (closes the file being received, if any; touches nothing
 * on disk). Call it before snapx_install instead of free + new. */
void snapx_rx_reset(struct snapx_rx *rx);

/* ---- Install ----------------------------------------------------------------------------------
 * The durable swap, called with the journal, broker and partition logs CLOSED (the caller
 * reopens them afterwards). Requires a complete staging for snap_index (DATA/snap-incoming/
 * COMPLETE naming it: else ERR_NOT_FOUND, or ERR_INVALID for another index). Crash-safe and
 * idempotent, driven by a marker DATA/INSTALLING (written durably first, holding snap_index):
 *   1. rename DATA/topics -> DATA/topics.old (if topics exists and topics.old does not; with no
 *      DATA/topics an empty topics.old is made, so "topics.old exists" means step 1 is done)
 *   2. rename DATA/snap-incoming/topics -> DATA/topics (or create an empty DATA/topics)
 *   3. rename the staged .snap into DATA/snapshot/; delete every other *.snap there
 *   4. delete every file in DATA/journal/ (segments, spare) -- the log restarts at the base
 *   5. delete DATA/snap-incoming/COMPLETE (from here on steps 1-4 are known to be done), then
 *      remove DATA/snap-incoming and DATA/topics.old recursively
 *   6. fsync the directories touched, then delete DATA/INSTALLING and fsync DATA
 * Each step is made durable (dir fsync) before the next. A stale DATA/topics.old with no marker
 * is removed before the marker is written. If snapx_install fails after writing the marker the
 * data dir is mid-install: do not reopen anything; run snapx_recover (or restart, which runs
 * it) to finish. A failure before the marker (ERR_NOT_FOUND, ERR_INVALID, ERR_CORRUPT for a
 * staging without its .snap, ERR_CONFLICT for another install's marker) changes nothing. */
int snapx_install(struct io_fs *fs, const char *data_dir, uint64_t snap_index);
/* At start-up, before anything else opens the data dir: if DATA/INSTALLING exists, finish that
 * install (same steps, idempotent) and return 1; else remove a stale DATA/snap-incoming and
 * DATA/topics.old and return 0; or an error (ERR_CORRUPT for a damaged marker or a state no
 * install step can produce). */
int snapx_recover(struct io_fs *fs, const char *data_dir);

#endif
