/* assert.h -- invariants. ASSERT is always on: its failure means memory or on-disk state is
 * corrupt and continuing would spread the damage. DASSERT is for expensive debug-only checks.
 * Never assert on external input (network or disk bytes): validate and return an error instead. */
#ifndef AYDER_BASE_ASSERT_H
#define AYDER_BASE_ASSERT_H

#include <stdio.h>
#include <stdlib.h>

#define ASSERT(cond)                                                                               \
    do {                                                                                           \
        if (__builtin_expect(!(cond), 0)) {                                                        \
            fprintf(stderr, "assertion failed: %s (%s:%d)\n", #cond, __FILE__, __LINE__);          \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#ifdef NDEBUG
#define DASSERT(cond) ((void)0)
#else
#define DASSERT(cond) ASSERT(cond)
#endif

#endif
