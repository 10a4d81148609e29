/* workq.h -- a small, bounded pool of background threads for long-running request work.
 *
 * Stream queries and joins scan up to millions of records; running them on an HTTP worker would
 * stall every other connection of that worker's loop. The API layer hands such work to a workq
 * and answers from the job's completion (http_req_post back to the request's worker).
 *
 * Invariants:
 *  1. At most `queue_max` jobs wait; workq_submit refuses more with ERR_OVERLOADED (the caller
 *     answers 503), so a burst of queries can never grow memory without bound.
 *  2. Every accepted job's fn runs exactly once, on one of the pool's threads, including jobs
 *     still queued when workq_free is called (they run before the threads exit), so whoever
 *     submitted a job may rely on its callback to release what it holds.
 *  3. The job memory is the caller's (usually the request arena); the pool never frees it.
 */
#ifndef AYDER_BASE_WORKQ_H
#define AYDER_BASE_WORKQ_H

#include <stddef.h>
#include <stdint.h>

struct workq;
struct workq_job {
    void (*fn)(struct workq_job *job);
    struct workq_job *next; /* owned by the queue while queued */
};

/* threads >= 1, queue_max >= 1. Errors: ERR_INVALID, ERR_NOMEM, ERR_INTERNAL (thread start). */
int workq_new(unsigned threads, size_t queue_max, const char *name, struct workq **out);
/* Refuse new jobs (ERR_OVERLOADED), run the queued ones, join the threads. Idempotent; submit
 * may still be called concurrently (it fails). Call from one thread. */
void workq_stop(struct workq *q);
/* workq_stop, then free. NULL is a no-op. No submit may run concurrently. */
void workq_free(struct workq *q);
/* 0, or ERR_OVERLOADED when queue_max jobs already wait (fn is then never called). */
int workq_submit(struct workq *q, struct workq_job *job);

struct workq_stats {
    uint64_t submitted, rejected, running, queued;
};
void workq_stats(struct workq *q, struct workq_stats *st);

#endif
