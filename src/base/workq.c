/* workq.c -- bounded background thread pool (see workq.h).
 *
 * One mutex and one condition variable guard a FIFO of jobs. Threads sleep on the condition
 * while the queue is empty and exit once `stopping` is set and the queue has drained, which is
 * what makes invariant 2 (every accepted job runs) hold across workq_free.
 */
#include "base/workq.h"

#include "base/alloc.h"
#include "base/err.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

struct workq {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct workq_job *head, *tail;
    size_t queued, queue_max;
    unsigned threads, started;
    bool stopping;
    uint64_t submitted, rejected, running;
    char name[16];
    pthread_t tid[];
};

static void *worker_main(void *arg)
{
    struct workq *q = arg;
    pthread_setname_np(pthread_self(), q->name);
    pthread_mutex_lock(&q->mu);
    for (;;) {
        while (!q->head && !q->stopping)
            pthread_cond_wait(&q->cv, &q->mu);
        struct workq_job *j = q->head;
        if (!j)
            break; /* stopping and drained */
        q->head = j->next;
        if (!q->head)
            q->tail = NULL;
        q->queued--;
        q->running++;
        pthread_mutex_unlock(&q->mu);
        j->next = NULL;
        j->fn(j);
        pthread_mutex_lock(&q->mu);
        q->running--;
    }
    pthread_mutex_unlock(&q->mu);
    return NULL;
}

int workq_new(unsigned threads, size_t queue_max, const char *name, struct workq **out)
{
    if (threads < 1 || threads > 64 || queue_max < 1)
        return ERR_INVALID;
    struct workq *q = xcalloc(1, sizeof *q + threads * sizeof(pthread_t));
    if (!q)
        return ERR_NOMEM;
    pthread_mutex_init(&q->mu, NULL);
    pthread_cond_init(&q->cv, NULL);
    q->queue_max = queue_max;
    q->threads = threads;
    snprintf(q->name, sizeof q->name, "%s", name ? name : "workq");
    for (unsigned i = 0; i < threads; i++) {
        if (pthread_create(&q->tid[i], NULL, worker_main, q) != 0) {
            workq_free(q);
            return ERR_INTERNAL;
        }
        q->started++;
    }
    *out = q;
    return 0;
}

void workq_stop(struct workq *q)
{
    pthread_mutex_lock(&q->mu);
    q->stopping = true;
    pthread_cond_broadcast(&q->cv);
    unsigned n = q->started;
    q->started = 0;
    pthread_mutex_unlock(&q->mu);
    for (unsigned i = 0; i < n; i++)
        pthread_join(q->tid[i], NULL);
}

void workq_free(struct workq *q)
{
    if (!q)
        return;
    workq_stop(q);
    pthread_cond_destroy(&q->cv);
    pthread_mutex_destroy(&q->mu);
    xfree(q);
}

int workq_submit(struct workq *q, struct workq_job *job)
{
    pthread_mutex_lock(&q->mu);
    if (q->stopping || q->queued >= q->queue_max) {
        q->rejected++;
        pthread_mutex_unlock(&q->mu);
        return ERR_OVERLOADED;
    }
    job->next = NULL;
    if (q->tail)
        q->tail->next = job;
    else
        q->head = job;
    q->tail = job;
    q->queued++;
    q->submitted++;
    pthread_cond_signal(&q->cv);
    pthread_mutex_unlock(&q->mu);
    return 0;
}

void workq_stats(struct workq *q, struct workq_stats *st)
{
    pthread_mutex_lock(&q->mu);
    st->submitted = q->submitted;
    st->rejected = q->rejected;
    st->running = q->running;
    st->queued = q->queued;
    pthread_mutex_unlock(&q->mu);
}
