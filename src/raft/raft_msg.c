/* raft_msg.c -- the compact binary codec for struct raft_msg.
 *
 * Layout (all integers uvarint unless noted; the transport adds framing and a CRC):
 *   u8 version (1) | u8 type | u8 flags (bit0 reject, bit1 force)
 *   from | to | term | index | log_term | commit | hint | ctx | n_entries
 *   n_entries x { term | u8 entry type | uvarint len | len bytes }
 * Entry indexes are implicit: entry i of an APPEND has index = msg.index + 1 + i; the single
 * entry of a SNAPSHOT (the configuration at the snapshot index) has index = msg.index.
 *
 * Invariants:
 *  1. decode never reads outside `in` and accepts only a fully consumed input.
 *  2. Only APPEND and SNAPSHOT carry entries; an entry's type is a known raft_entry_type and its
 *     data is at most RAFT_ENTRY_MAX_BYTES; the implicit indexes cannot overflow.
 *  3. A SNAPSHOT carries exactly one entry, of type CONFIG, whose data is a valid configuration
 *     (raft_conf_decode), and a non-zero index; encode refuses anything else too.
 *  4. Other semantic checks that need raft state (terms, ids) are raft_step's job.
 */
#include "raft/raft.h"

#define RAFT_MSG_VERSION 1

/* Entry-count rule of invariants 2 and 3 (the entries themselves are checked separately). */
static bool count_ok(uint8_t type, uint64_t n)
{
    if (type == RAFT_MSG_SNAPSHOT)
        return n == 1;
    return n == 0 || type == RAFT_MSG_APPEND;
}

static bool snapshot_entry_ok(const struct raft_msg *m, const struct raft_entry *e)
{
    struct raft_conf c;
    return m->index != 0 && e->type == RAFT_ENTRY_CONFIG && raft_conf_decode(e->data, &c) == 0;
}

int raft_msg_encode(const struct raft_msg *m, struct sbuf *out)
{
    if (m->type == 0 || m->type >= RAFT_MSG__MAX)
        return ERR_INVALID;
    if (m->n_entries > RAFT_MSG_MAX_ENTRIES || !count_ok(m->type, m->n_entries))
        return ERR_INVALID;
    if (m->type == RAFT_MSG_SNAPSHOT && (!m->entries || !snapshot_entry_ok(m, &m->entries[0])))
        return ERR_INVALID;
    sbuf_putc(out, RAFT_MSG_VERSION);
    sbuf_putc(out, m->type);
    sbuf_putc(out, (uint8_t)((m->reject ? 1 : 0) | (m->force ? 2 : 0)));
    const uint64_t f[] = {m->from, m->to,   m->term, m->index,    m->log_term,
                          m->commit, m->hint, m->ctx,  m->n_entries};
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++)
        sbuf_put_uvarint(out, f[i]);
    for (size_t i = 0; i < m->n_entries; i++) {
        const struct raft_entry *e = &m->entries[i];
        sbuf_put_uvarint(out, e->term);
        sbuf_putc(out, e->type);
        sbuf_put_lp(out, e->data.ptr, e->data.len);
    }
    if (out->oom)
        return ERR_NOMEM;
    return out->too_big ? ERR_TOO_LARGE : 0;
}

int raft_msg_decode(struct slice in, struct raft_msg *m, struct raft_entry *ents, size_t cap)
{
    struct reader rd = reader_of(in);
    uint8_t ver = 0, type = 0, flags = 0;
    memset(m, 0, sizeof *m);
    if (!rd_u8(&rd, &ver) || !rd_u8(&rd, &type) || !rd_u8(&rd, &flags))
        return ERR_INVALID;
    if (ver != RAFT_MSG_VERSION || type == 0 || type >= RAFT_MSG__MAX || (flags & ~3u))
        return ERR_INVALID;
    uint64_t f[9];
    for (size_t i = 0; i < 9; i++)
        if (!rd_uvarint(&rd, &f[i]))
            return ERR_INVALID;
    m->type = type;
    m->reject = flags & 1;
    m->force = (flags & 2) != 0;
    m->from = f[0];
    m->to = f[1];
    m->term = f[2];
    m->index = f[3];
    m->log_term = f[4];
    m->commit = f[5];
    m->hint = f[6];
    m->ctx = f[7];
    uint64_t n = f[8];
    if (!count_ok(type, n))
        return ERR_INVALID;
    if (n > RAFT_MSG_MAX_ENTRIES || n > rd_left(&rd) / 3) /* each entry takes >= 3 bytes */
        return ERR_INVALID;
    if (n > cap)
        return ERR_TOO_LARGE;
    if (m->index > UINT64_MAX - n)
        return ERR_INVALID;
    for (uint64_t i = 0; i < n; i++) {
        struct raft_entry *e = &ents[i];
        uint8_t et = 0;
        if (!rd_uvarint(&rd, &e->term) || !rd_u8(&rd, &et) ||
            !rd_lp(&rd, RAFT_ENTRY_MAX_BYTES, &e->data))
            return ERR_INVALID;
        if (!raft_entry_type_valid(et))
            return ERR_INVALID;
        e->type = et;
        e->index = type == RAFT_MSG_SNAPSHOT ? m->index : m->index + 1 + i;
    }
    if (rd.bad || rd_left(&rd) != 0)
        return ERR_INVALID;
    if (type == RAFT_MSG_SNAPSHOT && !snapshot_entry_ok(m, &ents[0]))
        return ERR_INVALID;
    m->n_entries = (size_t)n;
    m->entries = n ? ents : NULL;
    return 0;
}
