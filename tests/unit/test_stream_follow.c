/* test_stream_follow.c -- continuous queries (stream/query.h, follow mode): rows at once, windows
 * closing at the right watermark and never twice, lateness, idle partitions, the all-idle clock,
 * late records after close, bounded memory, window-less emit-changes, positions and resume. */
#include "harness.h"

#include "base/err.h"
#include "base/json.h"
#include "stream/query.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#define MAX_EV 4096

struct ev {
    enum squery_event_type type;
    char *data;
    char *pos;
};

struct fx {
    struct squery *q;
    struct ev ev[MAX_EV];
    size_t nev;
    uint64_t next_off[8];
    int rc;
    size_t stop_after; /* drain: refuse events after this many (0: take all) */
};

static int take(void *ctx, const struct squery_event *e)
{
    struct fx *f = ctx;
    if (f->stop_after && f->nev >= f->stop_after)
        return 1;
    if (f->nev >= MAX_EV)
        return 1;
    struct ev *v = &f->ev[f->nev++];
    v->type = e->type;
    v->data = strndup((const char *)e->data.ptr, e->data.len);
    v->pos = strndup((const char *)e->position.ptr, e->position.len);
    return 0;
}

static void fx_reset_events(struct fx *f)
{
    for (size_t i = 0; i < f->nev; i++) {
        free(f->ev[i].data);
        free(f->ev[i].pos);
    }
    f->nev = 0;
}

static void fx_close(struct fx *f)
{
    fx_reset_events(f);
    squery_free(f->q);
    f->q = NULL;
}

/* Compile and begin with partitions 0..nparts-1 from offset 0 (or a resume position). */
static int fx_open(struct fx *f, const char *qtext, uint32_t nparts, const char *resume,
                   const struct squery_limits *lim)
{
    memset(f, 0, sizeof *f);
    json_error_t je;
    json_t *req = json_loads(qtext, 0, &je);
    if (!req) {
        fprintf(stderr, "bad test query: %s: %s\n", qtext, je.text);
        return -1;
    }
    struct serr e;
    memset(&e, 0, sizeof e);
    int rc = squery_compile(req, lim, &f->q, &e);
    json_decref(req);
    if (rc)
        return rc;
    if (!squery_follow(f->q))
        return -2;
    if (resume && (rc = squery_follow_resume(f->q, resume, strlen(resume))))
        return rc;
    uint32_t ps[8];
    for (uint32_t i = 0; i < nparts; i++)
        ps[i] = i;
    return squery_follow_begin(f->q, ps, f->next_off, nparts, 0);
}

/* Feed one record at the next offset of part (value JSON, timestamp ts) and drain. */
static void fx_feed(struct fx *f, uint32_t part, int64_t ts, const char *value)
{
    struct srec r = {.partition = part, .offset = f->next_off[part]++, .timestamp_ms = ts,
                     .value = slice_cstr(value)};
    f->rc = squery_feed(f->q, &r);
    squery_drain(f->q, take, f);
}

static void fx_tick(struct fx *f, int64_t now)
{
    f->rc = squery_tick(f->q, now);
    squery_drain(f->q, take, f);
}

static size_t count_type(const struct fx *f, enum squery_event_type t)
{
    size_t n = 0;
    for (size_t i = 0; i < f->nev; i++)
        n += f->ev[i].type == t;
    return n;
}

/* The k-th event of type t as JSON (owned by the caller), or NULL. */
static json_t *nth(const struct fx *f, enum squery_event_type t, size_t k)
{
    for (size_t i = 0; i < f->nev; i++)
        if (f->ev[i].type == t && k-- == 0)
            return json_loads(f->ev[i].data, 0, NULL);
    return NULL;
}

static long long jint(json_t *o, const char *k) { return json_integer_value(json_object_get(o, k)); }

static long long stat_of(struct fx *f, const char *k)
{
    struct sbuf b;
    sbuf_init(&b, 0);
    struct jw w;
    jw_init(&w, &b);
    squery_follow_stats(f->q, &w);
    sbuf_putc(&b, 0);
    json_t *s = json_loads((const char *)b.data, 0, NULL);
    sbuf_free(&b);
    long long v = s ? jint(s, k) : -1;
    json_decref(s);
    return v;
}

/* The aggregate events as "start:count,..." */
static void agg_summary(const struct fx *f, char *out, size_t cap)
{
    out[0] = 0;
    for (size_t i = 0; i < f->nev; i++) {
        if (f->ev[i].type != SQUERY_EV_AGGREGATE)
            continue;
        json_t *a = json_loads(f->ev[i].data, 0, NULL);
        size_t n = strlen(out);
        snprintf(out + n, cap - n, "%s%lld:%lld", n ? "," : "", jint(a, "window_start_ms"),
                 jint(a, "count"));
        json_decref(a);
    }
}

#define WQ(win) "{\"source\":{\"topic\":\"t\"},\"follow\":{\"idle_timeout_ms\":500},\"aggregate\":{}," \
                "\"window\":" win "}"

TEST(follow_rows_at_once)
{
    struct fx f;
    REQUIRE(fx_open(&f, "{\"source\":{\"topic\":\"t\"},\"follow\":true,"
                        "\"filter\":[{\"field\":\"v\",\"op\":\"gt\",\"value\":1}],\"select\":[\"v\"]}",
                    1, NULL, NULL) == 0);
    fx_feed(&f, 0, 1, "{\"v\":1}");
    CHECK_EQ_INT(f.nev, 0);
    fx_feed(&f, 0, 2, "{\"v\":2}");
    REQUIRE(f.nev == 1); /* at once: no tick needed */
    CHECK(f.ev[0].type == SQUERY_EV_ROW && strcmp(f.ev[0].data, "{\"v\":2}") == 0);
    CHECK(strcmp(f.ev[0].pos, "1;_;0:2:2:_") == 0);
    fx_feed(&f, 0, 3, "not json");
    fx_feed(&f, 0, 4, "{\"v\":3}");
    CHECK_EQ_INT(f.nev, 2);
    CHECK(strcmp(f.ev[1].pos, "1;_;0:4:4:_") == 0);
    CHECK_EQ_INT(stat_of(&f, "skipped_parse"), 1);
    CHECK_EQ_INT(stat_of(&f, "rows_emitted"), 2);
    /* no emit_rows cap in follow mode: a thousand rows go out */
    for (int i = 0; i < 1000; i++)
        fx_feed(&f, 0, 5, "{\"v\":9}");
    CHECK_EQ_INT(count_type(&f, SQUERY_EV_ROW), 1002);
    /* the raw record when there is no projection; the unbounded source limit */
    fx_close(&f);
    REQUIRE(fx_open(&f, "{\"source\":{\"topic\":\"t\"},\"follow\":true}", 1, NULL, NULL) == 0);
    CHECK(squery_source(f.q)->limit == UINT64_MAX && !squery_follow(f.q)->limit_given);
    fx_feed(&f, 0, 1, "{\"a\": [1, 2]}");
    REQUIRE(f.nev == 1);
    CHECK(strcmp(f.ev[0].data, "{\"a\": [1, 2]}") == 0);
    fx_close(&f);
}

TEST(follow_flow_control)
{
    struct fx f;
    REQUIRE(fx_open(&f, "{\"source\":{\"topic\":\"t\"},\"follow\":true}", 1, NULL, NULL) == 0);
    f.stop_after = 2;
    for (int i = 0; i < 5; i++)
        fx_feed(&f, 0, 1, "{\"v\":1}");
    CHECK_EQ_INT(f.nev, 2);
    CHECK_EQ_INT(squery_pending_events(f.q), 3);
    CHECK(squery_pending_bytes(f.q) > 0);
    f.stop_after = 0;
    squery_drain(f.q, take, &f);
    CHECK_EQ_INT(f.nev, 5);
    CHECK_EQ_INT(squery_pending_bytes(f.q), 0);
    CHECK(strcmp(f.ev[4].pos, "1;_;0:5:5:_") == 0); /* queue order kept */
    fx_close(&f);
}

TEST(follow_tumbling_closes_once)
{
    struct fx f;
    REQUIRE(fx_open(&f, WQ("{\"size_ms\":10,\"time_field\":\"t\"}"), 1, NULL, NULL) == 0);
    fx_feed(&f, 0, 0, "{\"t\":1}");
    fx_feed(&f, 0, 0, "{\"t\":5}");
    fx_feed(&f, 0, 0, "{\"t\":9}");
    CHECK_EQ_INT(f.nev, 0); /* watermark 9 < end 10 */
    fx_feed(&f, 0, 0, "{\"t\":10}");
    char s[256];
    agg_summary(&f, s, sizeof s);
    CHECK(strcmp(s, "0:3") == 0); /* closed exactly when the watermark reaches its end */
    json_t *a = nth(&f, SQUERY_EV_AGGREGATE, 0);
    CHECK(a && jint(a, "window_end_ms") == 10 && json_object_get(a, "key"));
    json_decref(a);
    fx_feed(&f, 0, 0, "{\"t\":12}");
    fx_feed(&f, 0, 0, "{\"t\":11}"); /* out of order, not late */
    fx_feed(&f, 0, 0, "{\"t\":35}"); /* closes [10,20); [20,30) never had a record */
    agg_summary(&f, s, sizeof s);
    CHECK(strcmp(s, "0:3,10:3") == 0);
    for (int i = 0; i < 5; i++)
        fx_tick(&f, 100 + i); /* ticks never emit a window twice */
    fx_feed(&f, 0, 0, "{\"t\":36}");
    agg_summary(&f, s, sizeof s);
    CHECK(strcmp(s, "0:3,10:3") == 0);
    CHECK_EQ_INT(stat_of(&f, "watermark_ms"), 36);
    CHECK_EQ_INT(stat_of(&f, "groups"), 1);
    fx_close(&f);
}

TEST(follow_hopping)
{
    struct fx f;
    REQUIRE(fx_open(&f, WQ("{\"type\":\"hopping\",\"size_ms\":10,\"advance_ms\":5,\"time_field\":\"t\"}"),
                    1, NULL, NULL) == 0);
    fx_feed(&f, 0, 0, "{\"t\":1}");  /* [-5,5) [0,10) */
    fx_feed(&f, 0, 0, "{\"t\":7}");  /* [0,10) [5,15) */
    fx_feed(&f, 0, 0, "{\"t\":12}"); /* [5,15) [10,20); wm 12 closes [-5,5) and [0,10) */
    char s[256];
    agg_summary(&f, s, sizeof s);
    CHECK(strcmp(s, "-5:1,0:2") == 0);
    fx_feed(&f, 0, 0, "{\"t\":30}"); /* closes [5,15) [10,20) [15,25)? no record there */
    agg_summary(&f, s, sizeof s);
    CHECK(strcmp(s, "-5:1,0:2,5:2,10:1") == 0);
    fx_feed(&f, 0, 0, "{\"t\":30}");
    agg_summary(&f, s, sizeof s);
    CHECK(strcmp(s, "-5:1,0:2,5:2,10:1") == 0);
    fx_close(&f);
}

TEST(follow_lateness_and_late_records)
{
    struct fx f;
    /* allowed lateness 5: the watermark trails the max event time by 5 */
    REQUIRE(fx_open(&f, WQ("{\"size_ms\":10,\"time_field\":\"t\",\"allowed_lateness_ms\":5}"), 1,
                    NULL, NULL) == 0);
    fx_feed(&f, 0, 0, "{\"t\":1}");
    fx_feed(&f, 0, 0, "{\"t\":12}"); /* wm 7 */
    fx_feed(&f, 0, 0, "{\"t\":3}");  /* within lateness: counted in [0,10) */
    CHECK_EQ_INT(f.nev, 0);
    fx_feed(&f, 0, 0, "{\"t\":15}"); /* wm 10: closes [0,10) */
    char s[256];
    agg_summary(&f, s, sizeof s);
    CHECK(strcmp(s, "0:2") == 0);
    fx_feed(&f, 0, 0, "{\"t\":4}"); /* late: counted, dropped (the default policy) */
    CHECK_EQ_INT(f.nev, 1);
    CHECK_EQ_INT(stat_of(&f, "late"), 1);
    CHECK_EQ_INT(stat_of(&f, "late_windows"), 1);
    fx_feed(&f, 0, 0, "{\"t\":40}");
    agg_summary(&f, s, sizeof s);
    CHECK(strcmp(s, "0:2,10:2") == 0); /* [0,10) was never reopened */
    fx_close(&f);

    /* "late":"include": the late record goes out as a late event naming its windows */
    REQUIRE(fx_open(&f, "{\"source\":{\"topic\":\"t\"},\"follow\":true,\"aggregate\":{},"
                        "\"select\":[\"t\"],"
                        "\"window\":{\"size_ms\":10,\"time_field\":\"t\",\"late\":\"include\"}}",
                    1, NULL, NULL) == 0);
    fx_feed(&f, 0, 0, "{\"t\":1}");
    fx_feed(&f, 0, 0, "{\"t\":20}");
    fx_feed(&f, 0, 0, "{\"t\":2}");
    CHECK_EQ_INT(count_type(&f, SQUERY_EV_AGGREGATE), 1);
    REQUIRE(count_type(&f, SQUERY_EV_LATE) == 1);
    json_t *l = nth(&f, SQUERY_EV_LATE, 0);
    json_t *w0 = json_array_get(json_object_get(l, "windows"), 0);
    CHECK(jint(w0, "window_start_ms") == 0 && jint(w0, "window_end_ms") == 10);
    CHECK(jint(json_object_get(l, "row"), "t") == 2);
    json_decref(l);
    CHECK_EQ_INT(stat_of(&f, "late"), 1);
    fx_close(&f);
}

TEST(follow_idle_partition_releases_window)
{
    struct fx f;
    REQUIRE(fx_open(&f, WQ("{\"size_ms\":10,\"time_field\":\"t\"}"), 2, NULL, NULL) == 0);
    fx_feed(&f, 0, 0, "{\"t\":1}");
    fx_feed(&f, 0, 0, "{\"t\":25}");
    fx_tick(&f, 1000);
    CHECK_EQ_INT(f.nev, 0); /* partition 1 has no data: it holds the watermark back */
    squery_caught_up(f.q, 1, 1000);
    squery_caught_up(f.q, 0, 1000);
    fx_tick(&f, 1499);
    CHECK_EQ_INT(f.nev, 0);
    /* partition 0 gets data again: it is active, partition 1 idles out */
    fx_feed(&f, 0, 0, "{\"t\":26}");
    fx_tick(&f, 1500);
    char s[256];
    agg_summary(&f, s, sizeof s);
    CHECK(strcmp(s, "0:1") == 0); /* released by the idle timeout of partition 1 */
    CHECK_EQ_INT(stat_of(&f, "idle_partitions"), 1);
    CHECK_EQ_INT(stat_of(&f, "watermark_ms"), 26);
    /* partition 1 wakes up with an old record: late for the closed window, counted */
    fx_feed(&f, 1, 0, "{\"t\":3}");
    CHECK_EQ_INT(stat_of(&f, "late"), 1);
    CHECK_EQ_INT(stat_of(&f, "idle_partitions"), 0);
    /* and holds the watermark again: its max is 3, the watermark never moves back */
    fx_feed(&f, 0, 0, "{\"t\":45}");
    agg_summary(&f, s, sizeof s);
    CHECK(strcmp(s, "0:1") == 0);
    fx_feed(&f, 1, 0, "{\"t\":41}");
    agg_summary(&f, s, sizeof s);
    CHECK(strcmp(s, "0:1,20:2") == 0);
    fx_close(&f);
}

TEST(follow_all_idle_uses_the_clock)
{
    struct fx f;
    /* event time = append time; every partition idle: now stands in for the next record */
    REQUIRE(fx_open(&f, "{\"source\":{\"topic\":\"t\"},\"follow\":{\"idle_timeout_ms\":500},"
                        "\"aggregate\":{},\"window\":{\"size_ms\":1000,\"allowed_lateness_ms\":100}}",
                    1, NULL, NULL) == 0);
    fx_feed(&f, 0, 10100, "{}");
    fx_feed(&f, 0, 10200, "{}");
    squery_caught_up(f.q, 0, 10250);
    fx_tick(&f, 10749);
    CHECK_EQ_INT(stat_of(&f, "watermark_ms"), 10100); /* not idle yet: max 10200 - 100 */
    fx_tick(&f, 10750);
    CHECK_EQ_INT(f.nev, 0); /* idle, but now - lateness = 10650 < end 11000 */
    CHECK_EQ_INT(stat_of(&f, "watermark_ms"), 10650);
    fx_tick(&f, 11099);
    CHECK_EQ_INT(f.nev, 0);
    fx_tick(&f, 11100);
    char s[256];
    agg_summary(&f, s, sizeof s);
    CHECK(strcmp(s, "10000:2") == 0);
    fx_tick(&f, 20000);
    CHECK_EQ_INT(f.nev, 1);
    CHECK_EQ_INT(stat_of(&f, "state_bytes"), 0);
    CHECK_EQ_INT(stat_of(&f, "watermark_ms"), 11000); /* the clock stops at the last window */
    /* a record stamped before the clock-driven watermark: late, counted */
    fx_feed(&f, 0, 10900, "{}");
    CHECK_EQ_INT(stat_of(&f, "late"), 1);
    fx_feed(&f, 0, 11000, "{}");
    CHECK_EQ_INT(stat_of(&f, "late"), 1);
    fx_close(&f);

    /* idle with nothing open: synthetic event times arriving later are not late */
    REQUIRE(fx_open(&f, WQ("{\"size_ms\":10,\"time_field\":\"t\"}"), 1, NULL, NULL) == 0);
    squery_caught_up(f.q, 0, 100);
    fx_tick(&f, 100000);
    fx_feed(&f, 0, 0, "{\"t\":1}");
    CHECK_EQ_INT(stat_of(&f, "late"), 0);
    squery_caught_up(f.q, 0, 100001);
    fx_tick(&f, 200000); /* idle again: [0,10) is due by the clock */
    char s2[64];
    agg_summary(&f, s2, sizeof s2);
    CHECK(strcmp(s2, "0:1") == 0);
    CHECK_EQ_INT(stat_of(&f, "watermark_ms"), 10);
    fx_feed(&f, 0, 0, "{\"t\":15}");
    CHECK_EQ_INT(stat_of(&f, "late"), 0);
    fx_close(&f);

    /* idle_timeout_ms 0: never idle, the window waits for data */
    REQUIRE(fx_open(&f, "{\"source\":{\"topic\":\"t\"},\"follow\":{\"idle_timeout_ms\":0},"
                        "\"aggregate\":{},\"window\":{\"size_ms\":1000}}", 1, NULL, NULL) == 0);
    fx_feed(&f, 0, 100, "{}");
    squery_caught_up(f.q, 0, 200);
    fx_tick(&f, 1000000);
    CHECK_EQ_INT(f.nev, 0);
    fx_close(&f);
}

TEST(follow_bounded_memory)
{
    struct fx f;
    REQUIRE(fx_open(&f, "{\"source\":{\"topic\":\"t\"},\"follow\":true,"
                        "\"aggregate\":{\"group_by\":[\"k\"],\"measures\":[{\"op\":\"count_distinct\",\"field\":\"u\"}]},"
                        "\"window\":{\"size_ms\":10,\"time_field\":\"t\"}}", 1, NULL, NULL) == 0);
    long long peak = 0;
    char v[128];
    for (int i = 0; i < 20000; i++) {
        snprintf(v, sizeof v, "{\"t\":%d,\"k\":\"key-%d\",\"u\":\"user-\\u00e9-%d\"}", i / 4, i % 3, i);
        fx_feed(&f, 0, 0, v);
        long long b = stat_of(&f, "state_bytes");
        if (b > peak)
            peak = b;
        if (f.nev > 1000)
            fx_reset_events(&f);
        if (i % 1000 == 0)
            CHECK(stat_of(&f, "groups") <= 6);
    }
    CHECK(peak > 0 && peak < 4096); /* closed windows are freed: state stays a few windows */
    fx_close(&f);

    /* open groups beyond max_groups: the follow ends with a limit error naming it */
    struct squery_limits lim = {0};
    lim.max_groups = 3;
    REQUIRE(fx_open(&f, "{\"source\":{\"topic\":\"t\"},\"follow\":true,"
                        "\"aggregate\":{\"group_by\":[\"k\"]},\"window\":{\"size_ms\":10,\"time_field\":\"t\"}}",
                    1, NULL, &lim) == 0);
    fx_feed(&f, 0, 0, "{\"t\":1,\"k\":1}");
    fx_feed(&f, 0, 0, "{\"t\":1,\"k\":2}");
    fx_feed(&f, 0, 0, "{\"t\":1,\"k\":3}");
    CHECK(f.rc == 0);
    fx_feed(&f, 0, 0, "{\"t\":1,\"k\":4}");
    CHECK(f.rc == ERR_QUERY_LIMIT && strcmp(squery_error(f.q)->path, "max_groups") == 0);
    fx_close(&f);
    /* ... but closed windows make room */
    REQUIRE(fx_open(&f, "{\"source\":{\"topic\":\"t\"},\"follow\":true,"
                        "\"aggregate\":{\"group_by\":[\"k\"]},\"window\":{\"size_ms\":10,\"time_field\":\"t\"}}",
                    1, NULL, &lim) == 0);
    for (int i = 0; i < 300 && f.rc == 0; i++) {
        snprintf(v, sizeof v, "{\"t\":%d,\"k\":%d}", i * 10, i % 2);
        fx_feed(&f, 0, 0, v);
    }
    CHECK(f.rc == 0);
    CHECK_EQ_INT(count_type(&f, SQUERY_EV_AGGREGATE), 299);
    fx_close(&f);
    /* memory cap */
    lim = (struct squery_limits){0};
    lim.max_memory_bytes = 1 << 20;
    REQUIRE(fx_open(&f, "{\"source\":{\"topic\":\"t\"},\"follow\":true,"
                        "\"aggregate\":{\"measures\":[{\"op\":\"count_distinct\",\"field\":\"u\"}]}}",
                    1, NULL, &lim) == 0);
    for (int i = 0; i < 100000 && f.rc == 0; i++) {
        snprintf(v, sizeof v, "{\"u\":\"%0100d\"}", i);
        fx_feed(&f, 0, 0, v);
    }
    CHECK(f.rc == ERR_QUERY_LIMIT && strcmp(squery_error(f.q)->path, "max_memory_bytes") == 0);
    fx_close(&f);
}

TEST(follow_changes_without_window)
{
    struct fx f;
    REQUIRE(fx_open(&f, "{\"source\":{\"topic\":\"t\"},\"follow\":true,"
                        "\"aggregate\":{\"group_by\":[\"team\"],\"measures\":[{\"op\":\"count\"},{\"op\":\"sum\",\"field\":\"s\"}]}}",
                    1, NULL, NULL) == 0);
    fx_feed(&f, 0, 0, "{\"team\":\"A\",\"s\":1}");
    fx_feed(&f, 0, 0, "{\"team\":\"B\",\"s\":2}");
    fx_feed(&f, 0, 0, "{\"team\":\"A\",\"s\":3}");
    CHECK_EQ_INT(f.nev, 0); /* changes go out at the tick, one per changed group */
    fx_tick(&f, 1);
    REQUIRE(f.nev == 2);
    json_t *a = nth(&f, SQUERY_EV_AGGREGATE, 0), *b = nth(&f, SQUERY_EV_AGGREGATE, 1);
    CHECK(strcmp(json_string_value(json_object_get(a, "key")), "team=A") == 0);
    CHECK(jint(a, "count") == 2 && jint(a, "sum_s") == 4 && jint(b, "count") == 1);
    CHECK(!json_object_get(a, "window_start_ms"));
    json_decref(a);
    json_decref(b);
    CHECK(strstr(f.ev[0].pos, "0:3:0:") != NULL); /* a resume re-reads from the start */
    fx_tick(&f, 2);
    CHECK_EQ_INT(f.nev, 2);
    fx_feed(&f, 0, 0, "{\"team\":\"A\",\"s\":5}");
    fx_tick(&f, 3);
    REQUIRE(f.nev == 3);
    a = nth(&f, SQUERY_EV_AGGREGATE, 2);
    CHECK(jint(a, "count") == 3 && jint(a, "sum_s") == 9);
    json_decref(a);
    fx_close(&f);
}

/* Feed the same log (one partition, t = value) from a position; returns the events. */
static const int LOG_T[] = {1, 5, 12, 3, 15, 14, 22, 27, 31, 18, 45, 52, 60};
#define NLOG (sizeof LOG_T / sizeof LOG_T[0])
#define RQ "{\"source\":{\"topic\":\"t\"},\"follow\":{\"idle_timeout_ms\":0},\"select\":[\"t\"]," \
           "\"transform\":{\"emit_rows\":1},\"aggregate\":{\"measures\":[{\"op\":\"count\"},{\"op\":\"sum\",\"field\":\"t\"}]}," \
           "\"window\":{\"size_ms\":10,\"time_field\":\"t\",\"allowed_lateness_ms\":2}}"

static void run_log(struct fx *f, size_t from, size_t upto)
{
    char v[64];
    for (size_t i = from; i < upto; i++) {
        snprintf(v, sizeof v, "{\"t\":%d}", LOG_T[i]);
        struct srec r = {.partition = 0, .offset = i, .timestamp_ms = 0, .value = slice_cstr(v)};
        f->rc = squery_feed(f->q, &r);
        squery_drain(f->q, take, f);
    }
}

TEST(follow_resume_exact)
{
    struct fx whole;
    REQUIRE(fx_open(&whole, RQ, 1, NULL, NULL) == 0);
    run_log(&whole, 0, NLOG);
    REQUIRE(whole.nev > 10);
    /* resume after every event: the events after it are exactly those of the whole run */
    for (size_t cut = 0; cut < whole.nev; cut++) {
        struct fx r;
        REQUIRE(fx_open(&r, RQ, 1, whole.ev[cut].pos, NULL) == 0);
        uint64_t from = r.next_off[0];
        CHECK(from <= NLOG);
        run_log(&r, from, NLOG);
        size_t want = whole.nev - cut - 1;
        /* a cut inside a window's rows may repeat that window; here every window has one row */
        CHECK_EQ_INT(r.nev, want);
        for (size_t i = 0; i < r.nev && i < want; i++) {
            CHECK(r.ev[i].type == whole.ev[cut + 1 + i].type);
            if (strcmp(r.ev[i].data, whole.ev[cut + 1 + i].data) != 0) {
                fprintf(stderr, "cut %zu event %zu: %s vs %s\n", cut, i, r.ev[i].data,
                        whole.ev[cut + 1 + i].data);
                CHECK(0);
            }
            CHECK(strcmp(r.ev[i].pos, whole.ev[cut + 1 + i].pos) == 0);
        }
        fx_close(&r);
    }
    fx_close(&whole);

    /* malformed or foreign positions */
    struct fx f;
    CHECK(fx_open(&f, RQ, 1, "2;_;0:1:1:_", NULL) == ERR_INVALID);
    fx_close(&f);
    CHECK(fx_open(&f, RQ, 1, "1;_;0:1:2:_", NULL) == ERR_INVALID); /* from after next */
    fx_close(&f);
    CHECK(fx_open(&f, RQ, 1, "1;_;7:1:1:_", NULL) == ERR_INVALID); /* not a partition read */
    fx_close(&f);
    CHECK(fx_open(&f, RQ, 1, "1;x;0:1:1:_", NULL) == ERR_INVALID);
    fx_close(&f);
    CHECK(fx_open(&f, RQ, 1, "1;_;0:1:1:_,", NULL) == ERR_INVALID);
    fx_close(&f);
    /* a partition missing from the position starts where the host says */
    REQUIRE(fx_open(&f, RQ, 2, "1;4;0:3:2:5", NULL) == 0);
    CHECK(f.next_off[0] == 2 && f.next_off[1] == 0);
    fx_close(&f);
}

TEST(follow_compile_errors)
{
    static const struct {
        const char *q, *path;
    } bad[] = {
        {"{\"source\":{\"topic\":\"t\"},\"follow\":1}", "/follow"},
        {"{\"source\":{\"topic\":\"t\"},\"follow\":{\"idle\":1}}", "/follow/idle"},
        {"{\"source\":{\"topic\":\"t\"},\"follow\":{\"idle_timeout_ms\":-1}}", "/follow/idle_timeout_ms"},
        {"{\"source\":{\"topic\":\"t\"},\"follow\":{\"heartbeat_ms\":1}}", "/follow/heartbeat_ms"},
        {"{\"source\":{\"topic\":\"t\"},\"follow\":true,\"order_by\":\"a\"}", "/order_by"},
        {"{\"source\":{\"topic\":\"t\"},\"follow\":true,\"transform\":{\"emit_rows\":5,\"order_by\":\"a\"}}", "/transform/order_by"},
        {"{\"source\":{\"topic\":\"t\"},\"follow\":true,\"aggregate\":{\"order_by\":\"count\"}}", "/aggregate/order_by"},
        {"{\"source\":{\"topic\":\"t\"},\"follow\":true,\"aggregate\":{\"limit\":3}}", "/aggregate/limit"},
        {"{\"source\":{\"topic\":\"t\",\"group\":\"g\",\"commit\":true},\"follow\":true}", "/source/commit"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        json_t *req = json_loads(bad[i].q, 0, NULL);
        REQUIRE(req);
        struct squery *q = NULL;
        struct serr e;
        memset(&e, 0, sizeof e);
        int rc = squery_compile(req, NULL, &q, &e);
        json_decref(req);
        CHECK(rc == ERR_UNPROCESSABLE);
        if (strcmp(e.path, bad[i].path) != 0) {
            fprintf(stderr, "%s: path %s, want %s\n", bad[i].q, e.path, bad[i].path);
            CHECK(0);
        }
        squery_free(q);
    }
    /* a windowed follow may sort and cut the rows of each window; "follow": false is bounded */
    json_t *req = json_loads("{\"source\":{\"topic\":\"t\"},\"follow\":false}", 0, NULL);
    struct squery *q = NULL;
    CHECK(squery_compile(req, NULL, &q, NULL) == 0 && squery_follow(q) == NULL);
    CHECK(squery_source(q)->limit == SQUERY_DEFAULT_LIMIT);
    json_decref(req);
    squery_free(q);
    struct fx f;
    REQUIRE(fx_open(&f, "{\"source\":{\"topic\":\"t\",\"limit\":5},\"follow\":true,"
                        "\"aggregate\":{\"group_by\":[\"k\"],\"order_by\":\"-count\",\"limit\":1},"
                        "\"window\":{\"size_ms\":10,\"time_field\":\"t\"}}", 1, NULL, NULL) == 0);
    CHECK(squery_follow(f.q)->limit_given && squery_source(f.q)->limit == 5);
    fx_feed(&f, 0, 0, "{\"t\":1,\"k\":\"a\"}");
    fx_feed(&f, 0, 0, "{\"t\":2,\"k\":\"b\"}");
    fx_feed(&f, 0, 0, "{\"t\":3,\"k\":\"b\"}");
    fx_feed(&f, 0, 0, "{\"t\":11,\"k\":\"a\"}");
    REQUIRE(f.nev == 1);
    json_t *a = nth(&f, SQUERY_EV_AGGREGATE, 0);
    CHECK(strcmp(json_string_value(json_object_get(a, "key")), "k=b") == 0 && jint(a, "count") == 2);
    json_decref(a);
    fx_close(&f);
}
