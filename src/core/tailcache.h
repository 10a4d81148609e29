/* tailcache.h -- the newest journal entries kept in memory for replication and apply.
 *
 * What this module owns: copies of the most recent entries (term, type, payload), contiguous by
 * index, bounded by bytes and count: the leader serves AppendEntries and every node applies
 * committed entries from here without reading the journal back; older entries come from the
 * journal. Core thread only.
 *
 * Ownership: tailcache_get returns a slice borrowed from the cache, valid until the next
 * tailcache_append / tailcache_truncate / tailcache_free.
 */
#ifndef AYDER_CORE_TAILCACHE_H
#define AYDER_CORE_TAILCACHE_H

#include "base/buf.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct tc_entry {
    uint64_t term;
    uint8_t type;
    uint32_t len;
    uint8_t *data;
};

struct tailcache {
    struct tc_entry *ring;
    size_t cap, head, n;  /* ring of n entries starting at head */
    uint64_t first;       /* index of ring[head] (valid when n > 0) */
    size_t bytes, max_bytes;
};

void tailcache_init(struct tailcache *c, size_t max_entries, size_t max_bytes);
void tailcache_free(struct tailcache *c);
/* Append entry `index`: it must be last+1, otherwise the cache restarts at index (a gap or an
 * overwrite after truncation). Evicts the oldest entries beyond the bounds. ERR_NOMEM leaves the
 * cache empty (lookups then fall back to the journal). */
int tailcache_append(struct tailcache *c, uint64_t index, uint64_t term, uint8_t type,
                     struct slice data);
/* Drop entries >= index. */
void tailcache_truncate(struct tailcache *c, uint64_t index);
/* Entry `index` if cached. */
bool tailcache_get(const struct tailcache *c, uint64_t index, uint64_t *term, uint8_t *type,
                   struct slice *data);
uint64_t tailcache_first(const struct tailcache *c); /* 0 if empty */
uint64_t tailcache_last(const struct tailcache *c);  /* 0 if empty */
void tailcache_clear(struct tailcache *c);

#endif
