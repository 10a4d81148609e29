/* test_broker_wait.c -- the long-poll wake-up (broker.c invariant 6): a waiter parked by
 * broker_wait is woken by the round that publishes its offset, even when the round races with
 * the wait. Two threads in lock step: the "core" thread publishes offset i the moment the waiter
 * announces it is about to wait for i, and the waiter delays its broker_wait by an amount that
 * adapts (longer after a park, shorter after finding the offset published) so that the publish
 * keeps landing inside broker_wait: the waiter's check of the high watermark races the
 * publisher's check for waiters. Before the handshake (the waiter read the
 * high watermark first, then counted itself) a round could find no waiter, and the waiter slept
 * until its deadline: that is what this test counts. */
#include "harness.h"

#include "base/buf.h"
#include "base/err.h"
#include "broker/broker.h"
#include "broker/entry.h"
#include "io/io.h"

#include <ftw.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define ROUNDS 20000
#define WAKE_DEADLINE_NS 2000000000ull

struct race {
    struct broker *b;
    _Atomic uint64_t want;  /* the offset the waiter is about to wait for */
    _Atomic bool stop;
    int apply_rc;
};

struct rwaiter {
    struct broker_waiter w; /* first: the callback gets &w */
    _Atomic bool woken;
};

static void on_wake(struct broker_waiter *w) { atomic_store(&((struct rwaiter *)w)->woken, true); }

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

/* The core thread: publish offset i (one record, one round) once the waiter wants it. */
static void *core_thread(void *arg)
{
    struct race *r = arg;
    struct sbuf sb;
    sbuf_init(&sb, 0);
    for (uint64_t i = 0; i < ROUNDS; i++) {
        while (atomic_load(&r->want) < i && !atomic_load(&r->stop))
            sched_yield();
        if (atomic_load(&r->stop))
            break;
        sbuf_reset(&sb);
        entry_produce_begin(&sb, 1, slice_cstr("lp"), slice_of(NULL, 0));
        struct plog_record rec = {.timestamp_ms = 1, .value = slice_cstr("x")};
        entry_produce_add(&sb, &rec);
        entry_produce_finish(&sb, 1);
        entry_produce_patch(sb.data, 0, 0, i, 0);
        struct apply_result res;
        int rc = broker_apply(r->b, i + 2, ENTRY_PRODUCE, slice_of(sb.data, sb.len), &res);
        if (!rc && res.err)
            rc = res.err;
        if (!rc)
            rc = broker_round_end(r->b);
        if (rc) {
            r->apply_rc = rc;
            break;
        }
    }
    sbuf_free(&sb);
    return NULL;
}

TEST(broker_wait_wakeup_never_lost_racing_publish)
{
    char root[] = "/tmp/broker_wait_XXXXXX";
    REQUIRE(mkdtemp(root) != NULL);
    struct broker_opts o = {0};
    struct race r = {0};
    REQUIRE(broker_open(io_posix_fs(), root, &o, &r.b) == 0);
    struct sbuf sb;
    sbuf_init(&sb, 0);
    entry_topic_encode(&sb, &(struct entry_topic){1, slice_cstr("lp"), 1});
    struct apply_result res;
    REQUIRE(broker_apply(r.b, 1, ENTRY_TOPIC_CREATE, slice_of(sb.data, sb.len), &res) == 0);
    REQUIRE(res.err == 0);
    REQUIRE(broker_round_end(r.b) == 0);
    sbuf_free(&sb);

    pthread_t t;
    REQUIRE(pthread_create(&t, NULL, core_thread, &r) == 0);
    uint64_t parked = 0, raced = 0, lost = 0, delay_ns = 0, rng = 0x9E3779B97F4A7C15ull;
    for (uint64_t i = 0; i < ROUNDS && !lost && !r.apply_rc; i++) {
        struct rwaiter w = {.w = {.wake = on_wake}};
        atomic_store(&r.want, i);
        rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
        uint64_t until = now_ns() + delay_ns + rng % 64;
        while (now_ns() < until) {
        }
        int rc = broker_wait(r.b, slice_cstr("lp"), 0, i, &w.w);
        if (rc == ERR_AGAIN) {
            raced++; /* offset i was already published: read again */
            delay_ns = delay_ns > 40 ? delay_ns - 40 : 0;
            continue;
        }
        REQUIRE(rc == 0);
        parked++;
        delay_ns += 40;
        uint64_t deadline = now_ns() + WAKE_DEADLINE_NS;
        while (!atomic_load(&w.woken) && now_ns() < deadline)
            sched_yield();
        if (!atomic_load(&w.woken)) {
            lost++;
            broker_unwait(r.b, &w.w);
        }
    }
    atomic_store(&r.stop, true);
    pthread_join(t, NULL);
    printf("    %llu waits parked, %llu saw the offset already published, %llu wake-ups lost\n",
           (unsigned long long)parked, (unsigned long long)raced, (unsigned long long)lost);
    CHECK_EQ_INT(r.apply_rc, 0);
    CHECK_EQ_INT(lost, 0);
    broker_close(r.b);
    nftw(root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}
