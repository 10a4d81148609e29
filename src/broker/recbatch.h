/* recbatch.h -- the record-batch codec: Kafka RecordBatch v2 (magic 2), byte for byte.
 *
 * A batch is the on-disk unit of a partition log (plog.h) and what a Kafka fetch would send
 * unchanged. This module is pure: it encodes records into a caller-owned struct sbuf, and
 * validates/decodes batches from borrowed bytes. It never trusts a length from the input: every
 * field is bounds-checked and the CRC-32C (over attributes..end) is verified before any record is
 * handed out.
 *
 * Layout (all big-endian; "varint" = zigzag varint as in Kafka):
 *
 *   off size field                      off size field
 *     0   8  baseOffset                  23  4  lastOffsetDelta
 *     8   4  batchLength (bytes after    27  8  baseTimestamp
 *            this field)                 35  8  maxTimestamp
 *    12   4  partitionLeaderEpoch        43  8  producerId     (-1)
 *    16   1  magic = 2                   51  2  producerEpoch  (-1)
 *    17   4  crc (CRC-32C of 21..end)    53  4  baseSequence   (-1)
 *    21   2  attributes (0: no           57  4  records count
 *            compression, CreateTime)    61     records...
 *
 *   record: length varint, attributes int8, timestampDelta varlong, offsetDelta varint,
 *           keyLength varint (-1 = null), key, valueLen varint (-1 = null), value,
 *           headers count varint, headers: keyLen varint, key, valueLen varint (-1 = null), value
 *
 * Ownership: decoded slices (keys, values, headers) point into the caller's batch bytes and live
 * as long as those bytes. The iterator's header array lives until the next recbatch_iter_next()
 * or recbatch_iter_finish() call.
 */
#ifndef AYDER_BROKER_RECBATCH_H
#define AYDER_BROKER_RECBATCH_H

#include "base/buf.h"
#include "broker/plog.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define RECBATCH_HEADER_BYTES 61    /* baseOffset .. records count */
#define RECBATCH_LOG_OVERHEAD 12    /* baseOffset + batchLength: not counted in batchLength */
#define RECBATCH_CRC_START 21       /* first byte covered by the CRC (attributes) */
#define RECBATCH_MAGIC 2
#define RECBATCH_MIN_RECORD_BYTES 7 /* smallest possible encoded record, length prefix included */
/* Largest whole batch we write or accept (bounds a reader's buffer). */
#define RECBATCH_MAX_BYTES (64u << 20)
#define RECBATCH_ATTR_COMPRESSION_MASK 0x07

/* The parsed fixed header of one batch. */
struct recbatch_info {
    int64_t base_offset;
    uint32_t batch_bytes; /* whole batch: RECBATCH_LOG_OVERHEAD + batchLength */
    int32_t partition_leader_epoch;
    uint32_t crc;
    int16_t attributes;
    int32_t last_offset_delta;
    int64_t base_timestamp;
    int64_t max_timestamp;
    int64_t producer_id;
    int16_t producer_epoch;
    int32_t base_sequence;
    int32_t record_count;
};

/* Append one batch holding recs[0..n) with offsets base_offset.. to out. The batch's
 * partitionLeaderEpoch is 0, producer fields -1, baseTimestamp = recs[0].timestamp_ms,
 * maxTimestamp = the largest timestamp. info (may be NULL) receives the header written.
 * Errors: ERR_INVALID (n == 0, n or a length above INT32_MAX), ERR_TOO_LARGE (batch above
 * RECBATCH_MAX_BYTES), ERR_NOMEM (out failed). On error out->len is restored. */
int recbatch_encode(struct sbuf *out, int64_t base_offset, const struct plog_record *recs,
                    size_t n, struct recbatch_info *info);

/* Exact encoded size of the batch recbatch_encode would write (0 if n == 0). */
size_t recbatch_encoded_size(const struct plog_record *recs, size_t n);

/* Parse and sanity-check the fixed header from the first RECBATCH_HEADER_BYTES of p (n >= that;
 * the CRC is NOT checked). Checks magic, batchLength range, no compression, a record count that
 * fits the length, lastOffsetDelta >= count - 1. ERR_EOF if n is too short, else ERR_CORRUPT. */
int recbatch_peek(const uint8_t *p, size_t n, struct recbatch_info *h);

/* Validate one whole batch at the start of in: header, exact length available, CRC, and every
 * record's structure (lengths, strictly increasing offset deltas within lastOffsetDelta, nothing
 * left over). Bytes after the batch are ignored. ERR_EOF if in is shorter than the batch claims,
 * ERR_CORRUPT for anything else. On success the records can be iterated without further errors
 * (but ERR_NOMEM for a record with more than 8 headers). */
int recbatch_decode(struct slice in, struct recbatch_info *h);

/* One record of a validated batch as positions in it (byte offsets from the batch start), so
 * the batch can be iterated without decoding it again. */
#define RECBATCH_ENT_NULL UINT32_MAX /* key_off / value_off of a null key or value */
struct recbatch_ent {
    int64_t ts_delta;
    uint32_t key_off, key_len;
    uint32_t value_off, value_len;
    int32_t offset_delta;
    uint32_t hdr_off; /* the header count varint */
};

/* recbatch_decode, also filling ents[0..record_count) in the same walk. ERR_TOO_LARGE (before
 * the CRC is computed) if the batch has more than ents_cap records: a caller peeks the header
 * first and sizes ents from its record_count. */
int recbatch_decode_index(struct slice in, struct recbatch_info *h, struct recbatch_ent *ents,
                          size_t ents_cap);

/* CRC-32C of the batch as stored (bytes RECBATCH_CRC_START..batch_bytes). */
uint32_t recbatch_crc(const uint8_t *batch, size_t batch_bytes);

/* Iterate the records of a batch that recbatch_decode accepted. Do not copy the struct. */
struct recbatch_iter {
    struct reader r;
    struct recbatch_info h;
    int32_t left;
    int64_t prev_delta;
    struct plog_header *hdrs;
    size_t hdr_cap;
    struct plog_header inline_hdrs[8];
    const struct recbatch_ent *ents; /* the next entry when iterating by index, else NULL */
    const uint8_t *base;             /* the batch's first byte */
};
void recbatch_iter_init(struct recbatch_iter *it, struct slice batch, const struct recbatch_info *h);
/* Iterate a batch that recbatch_decode_index accepted, from its entries (borrowed: they must
 * live until the iteration ends). */
void recbatch_iter_init_index(struct recbatch_iter *it, struct slice batch,
                              const struct recbatch_info *h, const struct recbatch_ent *ents);
/* 1 = *rec filled (offset = base_offset + offsetDelta), 0 = no more records, negative = ERR_*
 * (ERR_CORRUPT for malformed bytes; cannot happen after a successful recbatch_decode, except
 * ERR_NOMEM for records with more than 8 headers). */
int recbatch_iter_next(struct recbatch_iter *it, struct plog_record *rec);
void recbatch_iter_finish(struct recbatch_iter *it);

#endif
