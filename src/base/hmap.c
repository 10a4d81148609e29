/* hmap.c -- see hmap.h. */
#include "base/hmap.h"
#include "base/alloc.h"
#include "base/err.h"
#include "base/hash.h"

void hmap_init(struct hmap *m)
{
    m->buckets = NULL;
    m->nbuckets = 0;
    m->count = 0;
}

void hmap_free(struct hmap *m)
{
    for (size_t i = 0; i < m->nbuckets; i++) {
        struct hmap_node *n = m->buckets[i];
        while (n) {
            struct hmap_node *next = n->next;
            xfree(n);
            n = next;
        }
    }
    xfree(m->buckets);
    hmap_init(m);
}

static struct hmap_node **find(const struct hmap *m, struct slice key, uint64_t h)
{
    if (!m->nbuckets)
        return NULL;
    struct hmap_node **pp = &m->buckets[h & (m->nbuckets - 1)];
    while (*pp) {
        struct hmap_node *n = *pp;
        if (n->hash == h && n->key_len == key.len && memcmp(n->key, key.ptr, key.len) == 0)
            return pp;
        pp = &n->next;
    }
    return pp;
}

void *hmap_get(const struct hmap *m, struct slice key)
{
    uint64_t h = hash_bytes(key.ptr, key.len, 0);
    struct hmap_node **pp = find(m, key, h);
    return pp && *pp ? (*pp)->value : NULL;
}

static int grow(struct hmap *m)
{
    size_t nb = m->nbuckets ? m->nbuckets * 2 : 16;
    struct hmap_node **b = xcalloc(nb, sizeof *b);
    if (!b)
        return ERR_NOMEM;
    for (size_t i = 0; i < m->nbuckets; i++) {
        struct hmap_node *n = m->buckets[i];
        while (n) {
            struct hmap_node *next = n->next;
            size_t j = n->hash & (nb - 1);
            n->next = b[j];
            b[j] = n;
            n = next;
        }
    }
    xfree(m->buckets);
    m->buckets = b;
    m->nbuckets = nb;
    return 0;
}

int hmap_put(struct hmap *m, struct slice key, void *value, void **old)
{
    uint64_t h = hash_bytes(key.ptr, key.len, 0);
    if (old)
        *old = NULL;
    struct hmap_node **pp = find(m, key, h);
    if (pp && *pp) {
        if (old)
            *old = (*pp)->value;
        (*pp)->value = value;
        return 0;
    }
    if (m->count >= m->nbuckets) {
        if (grow(m))
            return ERR_NOMEM;
    }
    struct hmap_node *n = xmalloc(sizeof *n + key.len);
    if (!n)
        return ERR_NOMEM;
    n->hash = h;
    n->value = value;
    n->key_len = key.len;
    if (key.len)
        memcpy(n->key, key.ptr, key.len);
    size_t j = h & (m->nbuckets - 1);
    n->next = m->buckets[j];
    m->buckets[j] = n;
    m->count++;
    return 0;
}

void *hmap_del(struct hmap *m, struct slice key)
{
    uint64_t h = hash_bytes(key.ptr, key.len, 0);
    struct hmap_node **pp = find(m, key, h);
    if (!pp || !*pp)
        return NULL;
    struct hmap_node *n = *pp;
    void *v = n->value;
    *pp = n->next;
    xfree(n);
    m->count--;
    return v;
}

struct hmap_node *hmap_next(const struct hmap *m, size_t *bucket, struct hmap_node **cursor)
{
    if (*cursor && (*cursor)->next) {
        *cursor = (*cursor)->next;
        return *cursor;
    }
    size_t i = *cursor ? *bucket + 1 : *bucket;
    for (; i < m->nbuckets; i++) {
        if (m->buckets[i]) {
            *bucket = i;
            *cursor = m->buckets[i];
            return *cursor;
        }
    }
    *bucket = m->nbuckets;
    *cursor = NULL;
    return NULL;
}
