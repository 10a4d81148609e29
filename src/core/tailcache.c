/* tailcache.c -- a bounded ring of the newest journal entries (see tailcache.h).
 *
 * Invariants:
 *  1. ring[(head + k) % cap] holds entry first + k for k < n: indexes are contiguous.
 *  2. bytes = sum of len over the n entries <= max_bytes, except that the newest entry is always
 *     kept (one entry larger than the bound still caches).
 */
#include "core/tailcache.h"

#include "base/alloc.h"
#include "base/err.h"

#include <string.h>

void tailcache_init(struct tailcache *c, size_t max_entries, size_t max_bytes)
{
    memset(c, 0, sizeof *c);
    c->cap = max_entries ? max_entries : 1;
    c->max_bytes = max_bytes;
}

static struct tc_entry *at(const struct tailcache *c, size_t k)
{
    return &c->ring[(c->head + k) % c->cap];
}

static void drop_oldest(struct tailcache *c)
{
    struct tc_entry *e = at(c, 0);
    c->bytes -= e->len;
    xfree(e->data);
    e->data = NULL;
    c->head = (c->head + 1) % c->cap;
    c->n--;
    c->first++;
}

void tailcache_clear(struct tailcache *c)
{
    while (c->n)
        drop_oldest(c);
    c->head = 0;
    c->first = 0;
}

void tailcache_free(struct tailcache *c)
{
    tailcache_clear(c);
    xfree(c->ring);
    c->ring = NULL;
}

int tailcache_append(struct tailcache *c, uint64_t index, uint64_t term, uint8_t type,
                     struct slice data)
{
    if (!c->ring) {
        c->ring = xcalloc(c->cap, sizeof *c->ring);
        if (!c->ring)
            return ERR_NOMEM;
    }
    if (c->n && index != c->first + c->n) {
        if (index > c->first && index < c->first + c->n)
            tailcache_truncate(c, index);
        else
            tailcache_clear(c);
    }
    uint8_t *copy = NULL;
    if (data.len) {
        copy = xmalloc(data.len);
        if (!copy) {
            tailcache_clear(c);
            return ERR_NOMEM;
        }
        memcpy(copy, data.ptr, data.len);
    }
    if (c->n == c->cap)
        drop_oldest(c);
    while (c->n && c->bytes + data.len > c->max_bytes)
        drop_oldest(c);
    if (c->n == 0) {
        c->head = 0;
        c->first = index;
    }
    struct tc_entry *e = at(c, c->n);
    e->term = term;
    e->type = type;
    e->len = (uint32_t)data.len;
    e->data = copy;
    c->n++;
    c->bytes += data.len;
    return 0;
}

void tailcache_truncate(struct tailcache *c, uint64_t index)
{
    while (c->n && c->first + c->n - 1 >= index) {
        struct tc_entry *e = at(c, c->n - 1);
        c->bytes -= e->len;
        xfree(e->data);
        e->data = NULL;
        c->n--;
    }
}

bool tailcache_get(const struct tailcache *c, uint64_t index, uint64_t *term, uint8_t *type,
                   struct slice *data)
{
    if (!c->n || index < c->first || index >= c->first + c->n)
        return false;
    const struct tc_entry *e = at(c, (size_t)(index - c->first));
    *term = e->term;
    *type = e->type;
    *data = slice_of(e->data, e->len);
    return true;
}

uint64_t tailcache_first(const struct tailcache *c) { return c->n ? c->first : 0; }
uint64_t tailcache_last(const struct tailcache *c) { return c->n ? c->first + c->n - 1 : 0; }
