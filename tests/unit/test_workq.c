/* test_workq.c -- the bounded background pool: every accepted job runs once, the bound holds. */
#include "base/err.h"
#include "base/workq.h"
#include "harness.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

struct gate {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool open;
};
static struct gate g = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false};
static atomic_int ran;

struct tjob {
    struct workq_job job;
    bool block;
    atomic_int count;
};

static void job_fn(struct workq_job *j)
{
    struct tjob *t = (struct tjob *)j;
    if (t->block) {
        pthread_mutex_lock(&g.mu);
        while (!g.open)
            pthread_cond_wait(&g.cv, &g.mu);
        pthread_mutex_unlock(&g.mu);
    }
    atomic_fetch_add(&t->count, 1);
    atomic_fetch_add(&ran, 1);
}

TEST(workq_bound_and_every_job_runs_once)
{
    struct workq *q;
    REQUIRE(workq_new(1, 2, "t-workq", &q) == 0);
    struct tjob jobs[4] = {0};
    for (int i = 0; i < 4; i++) {
        jobs[i].job.fn = job_fn;
        jobs[i].block = i == 0;
    }
    g.open = false;
    atomic_store(&ran, 0);
    REQUIRE(workq_submit(q, &jobs[0].job) == 0);
    /* wait until the blocking job is running so the queue is empty */
    for (;;) {
        struct workq_stats st;
        workq_stats(q, &st);
        if (st.running == 1 && st.queued == 0)
            break;
        sched_yield();
    }
    CHECK(workq_submit(q, &jobs[1].job) == 0);
    CHECK(workq_submit(q, &jobs[2].job) == 0);
    CHECK(workq_submit(q, &jobs[3].job) == ERR_OVERLOADED); /* queue_max = 2 */
    struct workq_stats st;
    workq_stats(q, &st);
    CHECK_EQ_INT(st.rejected, 1);
    pthread_mutex_lock(&g.mu);
    g.open = true;
    pthread_cond_broadcast(&g.cv);
    pthread_mutex_unlock(&g.mu);
    workq_free(q); /* drains: jobs 1 and 2 run before the thread exits */
    CHECK_EQ_INT(atomic_load(&ran), 3);
    for (int i = 0; i < 3; i++)
        CHECK_EQ_INT(atomic_load(&jobs[i].count), 1);
    CHECK_EQ_INT(atomic_load(&jobs[3].count), 0);
}

TEST(workq_rejects_bad_config)
{
    struct workq *q;
    CHECK(workq_new(0, 1, "x", &q) == ERR_INVALID);
    CHECK(workq_new(1, 0, "x", &q) == ERR_INVALID);
}
