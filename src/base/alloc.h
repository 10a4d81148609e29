/* alloc.h -- every heap allocation goes through here so tests can make the Nth one fail.
 * The x* variants return NULL on failure like malloc; callers handle it (ERR_NOMEM). */
#ifndef AYDER_BASE_ALLOC_H
#define AYDER_BASE_ALLOC_H

#include <stddef.h>

void *xmalloc(size_t n);
void *xcalloc(size_t count, size_t size);
void *xrealloc(void *p, size_t n);
void xfree(void *p);
char *xstrndup(const char *s, size_t n);

/* Test hook: the countdown-th allocation from now on (1 = the next one) fails; 0 disables. */
void alloc_fail_after(long countdown);

#endif
