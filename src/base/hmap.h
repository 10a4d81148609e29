/* hmap.h -- a byte-string keyed hash map (chained, power-of-two buckets, grows at load 1).
 * Keys are copied into the map; values are opaque pointers owned by the caller.
 * Not thread-safe: the owner protects it. Iteration order is unspecified. */
#ifndef AYDER_BASE_HMAP_H
#define AYDER_BASE_HMAP_H

#include "base/buf.h"

struct hmap_node {
    struct hmap_node *next;
    uint64_t hash;
    void *value;
    size_t key_len;
    uint8_t key[];
};

struct hmap {
    struct hmap_node **buckets;
    size_t nbuckets; /* power of two */
    size_t count;
};

void hmap_init(struct hmap *m);
/* Frees nodes (not values). */
void hmap_free(struct hmap *m);
void *hmap_get(const struct hmap *m, struct slice key);
/* Insert or replace. Returns 0 or ERR_NOMEM. *old gets the replaced value (or NULL). */
int hmap_put(struct hmap *m, struct slice key, void *value, void **old);
/* Remove; returns the value or NULL. */
void *hmap_del(struct hmap *m, struct slice key);
/* Iterate: returns nodes one by one; start with *bucket = 0 and *cursor = NULL; NULL at end.
 * The map must not be modified during an iteration. */
struct hmap_node *hmap_next(const struct hmap *m, size_t *bucket, struct hmap_node **cursor);

#endif
