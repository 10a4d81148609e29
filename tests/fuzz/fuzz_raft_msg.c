/* fuzz_raft_msg.c -- libFuzzer target: decode arbitrary bytes as a Raft message.
 *
 * Properties checked on every input:
 *  1. raft_msg_decode never reads outside the input (ASan) and never trips UB (UBSan).
 *  2. A message it accepts re-encodes (never longer than the input) and decodes back to the
 *     same fields: the encoder writes minimal varints, while the decoder may accept
 *     non-minimal ones, so fields are compared rather than bytes.
 *  3. Accepted entries have consecutive indexes after msg.index and known types; only APPEND
 *     and SNAPSHOT carry entries, a SNAPSHOT exactly one valid CONFIG entry at msg.index.
 * The codec is compiled in here (the library's raft_msg.o is then not pulled in);
 * raft_conf_decode comes from the library's raft.o.
 */
#include "raft/raft_msg.c"

#include "base/assert.h"

#include <stdint.h>
#include <stdlib.h>

#define CAP 256

static struct raft_entry ents[CAP], ents2[CAP];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct raft_msg m, m2;
    if (raft_msg_decode(slice_of(data, size), &m, ents, CAP) != 0)
        return 0;
    if (m.type == RAFT_MSG_SNAPSHOT) {
        struct raft_conf c;
        ASSERT(m.n_entries == 1 && m.entries[0].index == m.index && m.index != 0);
        ASSERT(m.entries[0].type == RAFT_ENTRY_CONFIG &&
               raft_conf_decode(m.entries[0].data, &c) == 0);
    } else if (m.n_entries) {
        ASSERT(m.type == RAFT_MSG_APPEND);
    }
    for (size_t i = 0; i < m.n_entries; i++) {
        ASSERT(m.entries[i].index == m.index + (m.type == RAFT_MSG_SNAPSHOT ? 0 : 1 + i));
        ASSERT(raft_entry_type_valid(m.entries[i].type));
        ASSERT(m.entries[i].data.ptr >= data && m.entries[i].data.ptr + m.entries[i].data.len <=
                                                    data + size);
    }
    struct sbuf b;
    sbuf_init(&b, 0);
    ASSERT(raft_msg_encode(&m, &b) == 0);
    ASSERT(b.len <= size);
    ASSERT(raft_msg_decode(slice_of(b.data, b.len), &m2, ents2, CAP) == 0);
    ASSERT(m2.type == m.type && m2.reject == m.reject && m2.force == m.force);
    ASSERT(m2.from == m.from && m2.to == m.to && m2.term == m.term && m2.index == m.index);
    ASSERT(m2.log_term == m.log_term && m2.commit == m.commit && m2.hint == m.hint);
    ASSERT(m2.ctx == m.ctx && m2.n_entries == m.n_entries);
    for (size_t i = 0; i < m.n_entries; i++) {
        ASSERT(m2.entries[i].term == m.entries[i].term);
        ASSERT(m2.entries[i].type == m.entries[i].type);
        ASSERT(slice_eq(m2.entries[i].data, m.entries[i].data));
    }
    sbuf_free(&b);
    return 0;
}
