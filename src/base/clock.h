/* clock.h -- time helpers. Monotonic time for durations and timers; wall-clock milliseconds only
 * for record timestamps and TTL deadlines that are written into the journal (so replay on any node
 * decides the same thing). */
#ifndef AYDER_BASE_CLOCK_H
#define AYDER_BASE_CLOCK_H

#include <stdint.h>
#include <time.h>

static inline uint64_t clock_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}
static inline uint64_t clock_mono_us(void) { return clock_mono_ns() / 1000; }
static inline uint64_t clock_mono_ms(void) { return clock_mono_ns() / 1000000; }
static inline int64_t clock_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

#endif
