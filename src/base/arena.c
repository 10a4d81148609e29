/* arena.c -- see arena.h. Chunks are 8 KiB or the request size, whichever is larger. */
#include "base/arena.h"
#include "base/alloc.h"

#include <string.h>

struct arena_chunk {
    struct arena_chunk *next;
    size_t cap, used;
    _Alignas(16) unsigned char data[];
};

#define CHUNK_BYTES 8192

void arena_init(struct arena *a, size_t max_bytes)
{
    a->head = NULL;
    a->used_bytes = 0;
    a->max_bytes = max_bytes;
}

void *arena_alloc(struct arena *a, size_t n)
{
    n = (n + 15) & ~(size_t)15;
    if (a->max_bytes && a->used_bytes + n > a->max_bytes)
        return NULL;
    struct arena_chunk *c = a->head;
    if (!c || c->cap - c->used < n) {
        size_t cap = n > CHUNK_BYTES ? n : CHUNK_BYTES;
        c = xmalloc(sizeof *c + cap);
        if (!c)
            return NULL;
        c->cap = cap;
        c->used = 0;
        c->next = a->head;
        a->head = c;
    }
    void *p = c->data + c->used;
    c->used += n;
    a->used_bytes += n;
    return p;
}

char *arena_strndup(struct arena *a, const char *s, size_t n)
{
    char *d = arena_alloc(a, n + 1);
    if (d) {
        memcpy(d, s, n);
        d[n] = 0;
    }
    return d;
}

void arena_reset(struct arena *a)
{
    struct arena_chunk *c = a->head;
    if (!c)
        return;
    struct arena_chunk *keep = c;
    while (keep->next)
        keep = keep->next; /* the oldest chunk is the first allocated, usually the 8 KiB one */
    c = a->head;
    while (c != keep) {
        struct arena_chunk *n = c->next;
        xfree(c);
        c = n;
    }
    keep->used = 0;
    keep->next = NULL;
    a->head = keep;
    a->used_bytes = 0;
}

void arena_free(struct arena *a)
{
    struct arena_chunk *c = a->head;
    while (c) {
        struct arena_chunk *n = c->next;
        xfree(c);
        c = n;
    }
    a->head = NULL;
    a->used_bytes = 0;
}
