/* arena.h -- per-request memory: bump allocation from chunks, freed in one call, with a hard cap
 * so one request can never take more than its share. */
#ifndef AYDER_BASE_ARENA_H
#define AYDER_BASE_ARENA_H

#include <stddef.h>

struct arena_chunk;
struct arena {
    struct arena_chunk *head;
    size_t used_bytes;  /* total handed out, for the cap */
    size_t max_bytes;   /* 0 = unbounded */
};

void arena_init(struct arena *a, size_t max_bytes);
/* 16-byte aligned; NULL when the cap is reached or malloc fails. */
void *arena_alloc(struct arena *a, size_t n);
char *arena_strndup(struct arena *a, const char *s, size_t n);
/* Free all but keep the first chunk for reuse. */
void arena_reset(struct arena *a);
void arena_free(struct arena *a);

#endif
