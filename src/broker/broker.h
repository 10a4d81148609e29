/* broker.h -- the broker state machine: topics, partitions, consumer offsets, idempotency
 * table and retention policies, materialized from journal entries.
 *
 * Owns: every topic's partition logs under DATA/topics/<name>-<id>/<partition>/ (id = journal
 * index of the entry that created the topic, so a re-created name never meets old files), the
 * committed offsets, the idempotency table and the retention policies.
 *
 * Threads:
 *  - broker_apply*, broker_round_end, snapshot and idempotency functions: the core thread only.
 *  - Readers (broker_read, list/describe, committed offsets, waits): any thread. They take the
 *    metadata rwlock shared; the core takes it exclusive only to create or delete a topic.
 *    Offsets have their own mutex. Partition data is read lock-free up to the published high
 *    watermark (plog.h).
 *
 * Determinism: apply uses only the entry (its timestamp, its fields) and the current state, so
 * every node and every replay reaches the same state.
 */
#ifndef AYDER_BROKER_BROKER_H
#define AYDER_BROKER_BROKER_H

#include "base/buf.h"
#include "broker/plog.h"
#include "io/io.h"

#include <stdbool.h>
#include <stdint.h>

#define BROKER_PARTITIONS_MAX 1024
#define BROKER_TOPIC_NAME_MAX 249
#define BROKER_GROUP_NAME_MAX 255
#define BROKER_IDEM_KEYS_MAX 1000000
#define BROKER_IDEM_WINDOW_MS (3600 * 1000)
#define BROKER_WAITERS_MAX 10000

struct broker;

struct broker_opts {
    struct plog_opts plog;
    uint32_t idem_keys_max;   /* 0 = BROKER_IDEM_KEYS_MAX */
    int64_t idem_window_ms;   /* 0 = BROKER_IDEM_WINDOW_MS */
};

/* The outcome of applying one entry, handed back to whoever proposed it. */
struct apply_result {
    int err;                  /* 0 or ERR_* decided by apply */
    uint32_t partition;
    uint64_t offset;          /* produce: first offset */
    uint32_t count;
    int64_t timestamp_ms;
    bool duplicate;
    bool created;             /* topic create: false if it existed with the same count */
    uint32_t partitions;
    uint64_t deleted_count, freed_bytes;
    bool ignored;             /* commit: backward commit ignored */
    uint64_t committed;       /* commit: the committed offset after apply */
    /* KV */
    uint64_t cas, current;
    bool deleted;
    /* schema registry (created: a new version was added) */
    uint32_t schema_id, schema_version;
};

/* Bounded names: [A-Za-z0-9._-]{1,max}, not "." or "..". */
bool broker_valid_name(struct slice s, size_t max);

int broker_open(struct io_fs *fs, const char *data_dir, const struct broker_opts *o,
                struct broker **out);
void broker_close(struct broker *b);

/* --- apply (core thread) -------------------------------------------------------------------- */
/* Apply a broker entry (types of core/entry.h except KV). Records of PRODUCE entries are staged
 * per partition and written by broker_round_end (one batch per partition per round); the payload
 * must stay valid until then. Returns 0, or a fatal error (I/O on a partition log) that must stop
 * the node; entry-level rejections go into res->err. */
int broker_apply(struct broker *b, uint64_t index, uint8_t type, struct slice payload,
                 struct apply_result *res);
/* Write staged records, publish high watermarks, wake long-poll waiters: broker_round_publish
 * then broker_wake_due. */
int broker_round_end(struct broker *b);
/* Write staged records and publish high watermarks; the waiters now due (and those of topics
 * deleted by entries applied since the last wake) are taken off their partitions and their wake
 * functions are called by the next broker_wake_due, which the caller must run (the core runs it
 * after answering the round's proposals, so answers never queue behind wake-ups). */
int broker_round_publish(struct broker *b);
/* Call the wake functions of the waiters taken off their partitions (core thread; no lock held
 * during the calls). */
void broker_wake_due(struct broker *b);

/* --- sequencer support (core thread) --------------------------------------------------------- */
struct idem_rec {
    uint32_t partition;
    uint64_t offset;
    uint32_t count;
    uint64_t index;           /* journal index of the original entry */
    int64_t ts_ms;
};
bool broker_idem_get(struct broker *b, struct slice topic, struct slice key, struct idem_rec *out);
int broker_idem_put(struct broker *b, struct slice topic, struct slice key, const struct idem_rec *r);
/* Snapshot of current topics for the sequencer: fn(name, partitions, end offsets array). */
typedef void (*broker_topic_fn)(void *ctx, struct slice name, uint32_t partitions,
                                const uint64_t *end_offsets);
void broker_each_topic(struct broker *b, broker_topic_fn fn, void *ctx);

/* Retention: for each partition with an effective policy, the floor it should have at now_ms
 * (0 = nothing to do). fn(topic, partition, floor). */
typedef void (*broker_floor_fn)(void *ctx, struct slice topic, uint32_t partition, uint64_t floor);
void broker_retention_scan(struct broker *b, int64_t now_ms, broker_floor_fn fn, void *ctx);

/* --- checkpoints (core thread) ---------------------------------------------------------------- */
/* Deleted topics' directories are renamed aside at apply and removed here once a checkpoint at
 * an index >= their delete entry is durable (a crash before that replays the delete over them).
 * broker_scan_trash (at start-up, after recovery) picks up leftovers for the next checkpoint. */
void broker_collect_trash(struct broker *b, uint64_t upto_index);
int broker_scan_trash(struct broker *b);
/* fsync every partition log (before a snapshot that records their lengths). Any thread: takes
 * the metadata lock shared, so topic creation/deletion waits for it. */
int broker_sync(struct broker *b);
/* Serialize the state as of applied_index (idempotency records with index <= it). */
int broker_snapshot_write(struct broker *b, uint64_t applied_index, struct sbuf *out);
/* Forget every topic, offset, idempotency key, policy and pending trash (the files stay; the
 * caller replaces them), so broker_snapshot_read can restore a snapshot received from the
 * leader into this live broker. Core thread; readers may run concurrently. */
void broker_reset(struct broker *b);
/* Restore into a freshly opened, empty broker: opens every partition log and truncates it to
 * the length the snapshot recorded. ERR_CORRUPT: the snapshot bytes are malformed; ERR_IO: a
 * partition log is shorter than the (valid) snapshot recorded, i.e. data the checkpoint had
 * fsynced is gone: the node must not start. */
int broker_snapshot_read(struct broker *b, struct slice in);

/* --- readers (any thread) --------------------------------------------------------------------- */
int broker_read(struct broker *b, struct slice topic, uint32_t partition, uint64_t from,
                size_t max_records, size_t max_bytes, plog_visit_fn fn, void *ctx,
                struct plog_read_result *res, uint64_t *high_watermark, uint64_t *start_offset);
/* Stored batches byte for byte (plog_read_batches), for Kafka fetch. */
int broker_read_batches(struct broker *b, struct slice topic, uint32_t partition, uint64_t from,
                        size_t max_bytes, struct sbuf *out, struct plog_read_result *res,
                        uint64_t *high_watermark, uint64_t *start_offset);
int broker_partitions(struct broker *b, struct slice topic, uint32_t *partitions);
/* A topic's identity: its id (the journal index of the entry that created it, the same on every
 * node and across restarts and snapshots; a re-created name gets a new one) and partition count.
 * ERR_NO_TOPIC. */
int broker_topic_info(struct broker *b, struct slice topic, uint64_t *id, uint32_t *partitions);
/* A lower bound for the first offset stamped at or after ts_ms: every segment before it holds only
 * records stamped earlier (segment granularity, plog_offset_for_time). Readers start there and skip
 * the earlier records of that segment themselves. ERR_NO_TOPIC / ERR_BAD_PARTITION. */
int broker_offset_for_time(struct broker *b, struct slice topic, uint32_t partition, int64_t ts_ms,
                           uint64_t *offset);
typedef void (*broker_list_fn)(void *ctx, struct slice name, uint32_t partitions);
void broker_list(struct broker *b, broker_list_fn fn, void *ctx);
typedef void (*broker_part_fn)(void *ctx, uint32_t partition, const struct plog_stats *st);
int broker_describe(struct broker *b, struct slice topic, broker_part_fn fn, void *ctx);
/* The retention policy in effect for a partition (its own, else its topic's, else the "*" one):
 * ttl_ms / max_bytes, 0 where none. ERR_NO_TOPIC / ERR_BAD_PARTITION. Any thread. */
int broker_retention_get(struct broker *b, struct slice topic, uint32_t partition, int64_t *ttl_ms,
                         int64_t *max_bytes);
/* Committed offset of (topic, group, partition): 0 and *off, or ERR_NOT_FOUND. */
int broker_committed(struct broker *b, struct slice topic, struct slice group, uint32_t partition,
                     uint64_t *off);
/* Every committed offset of a group (topic filter optional: empty slice = all). */
typedef void (*broker_group_fn)(void *ctx, struct slice topic, uint32_t partition,
                                uint64_t committed, uint64_t latest);
void broker_group(struct broker *b, struct slice group, struct slice topic, broker_group_fn fn,
                  void *ctx);

/* --- scrape-time views (any thread; for /metrics) ---------------------------------------------- */
/* Every partition of every topic: fn(ctx, topic, partition, stats). fn runs under the metadata
 * lock (shared), which topic creation and deletion wait for: it must only copy what it needs. */
typedef void (*broker_partition_fn)(void *ctx, struct slice topic, uint32_t partition,
                                    const struct plog_stats *st);
void broker_each_partition(struct broker *b, broker_partition_fn fn, void *ctx);
/* Every committed offset with its partition's start offset and high watermark. The entries are
 * copied under the locks (held only for the copy, so a commit being applied waits at most that
 * long), then fn is called with no lock held; the topic/group slices live during the call only.
 * Returns 0 or ERR_NOMEM (nothing visited). */
typedef void (*broker_offset_fn)(void *ctx, struct slice topic, struct slice group,
                                 uint32_t partition, uint64_t committed, uint64_t start,
                                 uint64_t high_watermark);
int broker_each_committed(struct broker *b, broker_offset_fn fn, void *ctx);
/* The timestamp of the first readable record at or after `offset` (below the high watermark):
 * 0, ERR_NOT_FOUND (no such record yet), ERR_NO_TOPIC / ERR_BAD_PARTITION, or a read error.
 * One bounded read (one batch window). */
int broker_record_time(struct broker *b, struct slice topic, uint32_t partition, uint64_t offset,
                       int64_t *ts_ms);

/* Long-poll: park w on the partition until its high watermark passes `offset`. Returns 0 when
 * parked (w->wake(w) will be called once, from the core thread, unless broker_unwait removes it
 * first), ERR_AGAIN if data is already there, ERR_OVERLOADED if BROKER_WAITERS_MAX consumers are
 * already parked, or ERR_NO_TOPIC/ERR_BAD_PARTITION. */
struct broker_waiter {
    void (*wake)(struct broker_waiter *w);
    struct broker_waiter *prev, *next;
    void *owner;              /* the partition while parked, NULL otherwise */
    uint64_t offset;
};
int broker_wait(struct broker *b, struct slice topic, uint32_t partition, uint64_t offset,
                struct broker_waiter *w);
/* Remove a parked waiter; returns true if it was still parked (so wake will not be called). */
bool broker_unwait(struct broker *b, struct broker_waiter *w);

struct broker_stats {
    uint64_t topics, partitions, bytes, records, offsets, idem_keys, waiters;
};
void broker_stats(struct broker *b, struct broker_stats *st);

#endif
