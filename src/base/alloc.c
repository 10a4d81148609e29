/* alloc.c -- see alloc.h. The failure countdown is an atomic so worker threads may allocate. */
#include "base/alloc.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

static _Atomic long fail_countdown;

static int should_fail(void)
{
    long c = atomic_load_explicit(&fail_countdown, memory_order_relaxed);
    if (__builtin_expect(c == 0, 1))
        return 0;
    return atomic_fetch_sub(&fail_countdown, 1) == 1;
}

void alloc_fail_after(long countdown) { atomic_store(&fail_countdown, countdown); }

void *xmalloc(size_t n) { return should_fail() ? NULL : malloc(n ? n : 1); }
void *xcalloc(size_t count, size_t size) { return should_fail() ? NULL : calloc(count ? count : 1, size ? size : 1); }
void *xrealloc(void *p, size_t n) { return should_fail() ? NULL : realloc(p, n ? n : 1); }
void xfree(void *p) { free(p); }

char *xstrndup(const char *s, size_t n)
{
    char *d = xmalloc(n + 1);
    if (d) {
        memcpy(d, s, n);
        d[n] = 0;
    }
    return d;
}
