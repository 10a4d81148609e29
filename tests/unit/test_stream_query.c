/* test_stream_query.c -- the query engine (stream/query.h): every op, nulls, measures, windows,
 * lateness, ordering and limits, limits and errors with their paths. */
#include "harness.h"

#include "base/err.h"
#include "base/json.h"
#include "stream/query.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

struct trec {
    const char *value;
    int64_t ts;
    uint32_t part;
};

static struct serr last_err;
static uint32_t declare_parts; /* when set: squery_expect_partitions(0 .. declare_parts-1) */
static int last_rc;

/* Run query q over recs; returns the parsed result object (NULL on error: last_rc/last_err). */
static json_t *runq(const char *qtext, const struct trec *recs, size_t n,
                    const struct squery_limits *lim)
{
    json_error_t je;
    json_t *req = json_loads(qtext, 0, &je);
    if (!req) {
        fprintf(stderr, "bad test query: %s: %s\n", qtext, je.text);
        return NULL;
    }
    struct squery *q;
    memset(&last_err, 0, sizeof last_err);
    last_rc = squery_compile(req, lim, &q, &last_err);
    json_decref(req);
    if (last_rc)
        return NULL;
    if (declare_parts) {
        uint32_t ps[8];
        for (uint32_t i = 0; i < declare_parts; i++)
            ps[i] = i;
        squery_expect_partitions(q, ps, declare_parts);
    }
    for (size_t i = 0; i < n; i++) {
        struct srec r = {.partition = recs[i].part, .offset = i, .timestamp_ms = recs[i].ts,
                         .value = slice_cstr(recs[i].value)};
        static const struct shdr h[] = {{SLICE_LIT("trace"), SLICE_LIT("abc")}};
        r.headers = h;
        r.header_count = 1;
        if (i % 2) {
            r.has_key = true;
            r.key = SLICE_LIT("k1");
        }
        last_rc = squery_feed(q, &r);
        if (last_rc) {
            last_err = *squery_error(q);
            squery_free(q);
            return NULL;
        }
    }
    struct sbuf b;
    sbuf_init(&b, 0);
    struct jw w;
    jw_init(&w, &b);
    jw_obj_open(&w);
    last_rc = squery_finish(q, &w);
    jw_obj_close(&w);
    if (last_rc)
        last_err = *squery_error(q);
    squery_free(q);
    json_t *out = last_rc ? NULL : json_loadb((const char *)b.data, b.len, 0, &je);
    if (!last_rc && !out)
        fprintf(stderr, "result is not JSON: %.*s\n", (int)b.len, (char *)b.data);
    sbuf_free(&b);
    return out;
}

static const struct trec people[] = {
    {"{\"name\":\"Ann\",\"team\":\"A\",\"score\":95,\"tags\":[\"x\",\"y\"],\"addr\":{\"city\":\"NY\"}}", 1000, 0},
    {"{\"name\":\"Bob\",\"team\":\"B\",\"score\":80.5,\"tags\":[\"y\"],\"addr\":{\"city\":\"LA\"}}", 2000, 0},
    {"{\"name\":\"Cy\",\"team\":\"A\",\"score\":null,\"addr\":{\"city\":\"NY\"}}", 3000, 0},
    {"{\"name\":\"Di\",\"team\":null,\"score\":\"90\"}", 4000, 0},
    {"{\"name\":\"Ed\",\"score\":70,\"tags\":[1,2]}", 5000, 0},
    {"not json", 6000, 0},
    {"[1,2]", 7000, 0},
    {"{\"name\":\"Fy\",\"team\":\"B\",\"score\":99}", 8000, 0},
};
#define NPEOPLE (sizeof people / sizeof people[0])

static size_t count_rows(json_t *r) { return json_array_size(json_object_get(r, "rows")); }
static int64_t stat(json_t *r, const char *k)
{
    return json_integer_value(json_object_get(json_object_get(r, "stats"), k));
}

/* names of the emitted rows, joined by commas */
static void names(json_t *r, char *out, size_t cap)
{
    out[0] = 0;
    json_t *rows = json_object_get(r, "rows");
    for (size_t i = 0; i < json_array_size(rows); i++) {
        json_t *n = json_object_get(json_array_get(rows, i), "name");
        if (i)
            strncat(out, ",", cap - strlen(out) - 1);
        strncat(out, n ? json_string_value(n) : "?", cap - strlen(out) - 1);
    }
}

static void expect_names(const char *filter, const char *want)
{
    char q[1024];
    snprintf(q, sizeof q, "{\"source\":{\"topic\":\"t\"},\"filter\":%s,\"select\":[\"name\"]}", filter);
    json_t *r = runq(q, people, NPEOPLE, NULL);
    if (!r) {
        fprintf(stderr, "query failed (%d %s: %s): %s\n", last_rc, last_err.path, last_err.msg, q);
        CHECK(r != NULL);
        return;
    }
    char got[256];
    names(r, got, sizeof got);
    if (strcmp(got, want) != 0)
        fprintf(stderr, "filter %s: got [%s] want [%s]\n", filter, got, want);
    CHECK(strcmp(got, want) == 0);
    json_decref(r);
}

TEST(squery_original_request_shape)
{
    json_t *r = runq("{\"source\":{\"topic\":\"q\",\"group\":\"qg\",\"partition\":0,\"offset\":0,\"limit\":200},"
                     "\"filter\":[{\"field\":\"team\",\"op\":\"eq\",\"value\":\"A\"},{\"field\":\"score\",\"op\":\"ge\",\"value\":90}],"
                     "\"aggregate\":{\"group_by\":[\"team\",\"name\"]},"
                     "\"transform\":{\"left_fields\":[\"name\",\"score\"],\"emit_rows\":10}}",
                     people, NPEOPLE, NULL);
    REQUIRE(r);
    char *s = json_dumps(r, JSON_COMPACT);
    CHECK(strstr(s, "\"rows\":[{\"name\":\"Ann\",\"score\":95}]") != NULL);
    CHECK(strstr(s, "\"aggregates\":[{\"key\":\"team=A|name=Ann\",\"group\":{\"team\":\"A\",\"name\":\"Ann\"},\"count\":1}]") != NULL);
    free(s);
    CHECK(stat(r, "scanned") == 8 && stat(r, "matched") == 1);
    CHECK(stat(r, "skipped_parse") == 1 && stat(r, "skipped_decode") == 1);
    json_t *fs = json_object_get(json_object_get(r, "stats"), "first_skipped");
    CHECK(fs && json_integer_value(json_object_get(fs, "offset")) == 5);
    json_decref(r);
    /* transform without emit_rows: no rows (the original's default); no transform, no aggregate:
     * every matching row as the record itself */
    r = runq("{\"source\":{\"topic\":\"q\"},\"transform\":{\"left_fields\":[\"name\"]}}", people, NPEOPLE, NULL);
    REQUIRE(r);
    CHECK(count_rows(r) == 0 && stat(r, "matched") == 6);
    json_decref(r);
    r = runq("{\"source\":{\"topic\":\"q\"}}", people, NPEOPLE, NULL);
    REQUIRE(r);
    CHECK(count_rows(r) == 6);
    json_t *first = json_array_get(json_object_get(r, "rows"), 0);
    CHECK(json_is_object(json_object_get(first, "addr")));
    json_decref(r);
}

TEST(squery_filter_ops)
{
    expect_names("[{\"field\":\"team\",\"op\":\"eq\",\"value\":\"A\"}]", "Ann,Cy");
    expect_names("[{\"field\":\"team\",\"op\":\"ne\",\"value\":\"A\"}]", "Bob,Fy");
    expect_names("[{\"field\":\"score\",\"op\":\"gt\",\"value\":80.5}]", "Ann,Fy");
    expect_names("[{\"field\":\"score\",\"op\":\"ge\",\"value\":80.5}]", "Ann,Bob,Fy");
    expect_names("[{\"field\":\"score\",\"op\":\"lt\",\"value\":81}]", "Bob,Ed");
    expect_names("[{\"field\":\"score\",\"op\":\"le\",\"value\":70}]", "Ed");
    expect_names("[{\"field\":\"score\",\"op\":\"eq\",\"value\":\"90\"}]", "Di"); /* no coercion */
    expect_names("[{\"field\":\"score\",\"op\":\"eq\",\"value\":95.0}]", "Ann");
    expect_names("[{\"field\":\"name\",\"op\":\"in\",\"value\":[\"Ann\",\"Ed\",7]}]", "Ann,Ed");
    expect_names("[{\"field\":\"team\",\"op\":\"nin\",\"value\":[\"A\"]}]", "Bob,Fy");
    expect_names("[{\"field\":\"name\",\"op\":\"contains\",\"value\":\"y\"}]", "Cy,Fy");
    expect_names("[{\"field\":\"tags\",\"op\":\"contains\",\"value\":\"y\"}]", "Ann,Bob");
    expect_names("[{\"field\":\"tags\",\"op\":\"contains\",\"value\":2.0}]", "Ed");
    expect_names("[{\"field\":\"team\",\"op\":\"exists\"}]", "Ann,Bob,Cy,Di,Fy");
    expect_names("[{\"field\":\"team\",\"op\":\"exists\",\"value\":false}]", "Ed");
    expect_names("[{\"field\":\"team\",\"op\":\"is_null\"}]", "Di,Ed");
    expect_names("[{\"field\":\"score\",\"op\":\"is_null\",\"value\":false}]", "Ann,Bob,Di,Ed,Fy");
    expect_names("[{\"field\":\"addr.city\",\"op\":\"eq\",\"value\":\"NY\"}]", "Ann,Cy");
    expect_names("[{\"field\":\"tags[1]\",\"op\":\"eq\",\"value\":\"y\"}]", "Ann");
    expect_names("[{\"field\":\"team\",\"op\":\"eq\",\"value\":\"A\"},{\"any\":[{\"field\":\"score\",\"op\":\"gt\",\"value\":90},{\"field\":\"score\",\"op\":\"is_null\"}]}]", "Ann,Cy");
    expect_names("{\"any\":[{\"field\":\"name\",\"op\":\"eq\",\"value\":\"Ed\"},{\"all\":[{\"field\":\"team\",\"op\":\"eq\",\"value\":\"B\"},{\"field\":\"score\",\"op\":\"gt\",\"value\":90}]}]}", "Ed,Fy");
    /* metadata fields */
    expect_names("[{\"field\":\"$offset\",\"op\":\"ge\",\"value\":4}]", "Ed,Fy");
    expect_names("[{\"field\":\"$timestamp_ms\",\"op\":\"lt\",\"value\":2500}]", "Ann,Bob");
    expect_names("[{\"field\":\"$key\",\"op\":\"eq\",\"value\":\"k1\"}]", "Bob,Di,Fy");
    expect_names("[{\"field\":\"$key\",\"op\":\"is_null\"}]", "Ann,Cy,Ed");
    expect_names("[{\"field\":\"$headers.trace\",\"op\":\"eq\",\"value\":\"abc\"},{\"field\":\"$partition\",\"op\":\"eq\",\"value\":0}]", "Ann,Bob,Cy,Di,Ed,Fy");
    expect_names("[{\"field\":\"$headers.nope\",\"op\":\"exists\"}]", "");
    expect_names("[]", "Ann,Bob,Cy,Di,Ed,Fy");
}

/* Number comparisons: a double field against an operand held exactly as a double (an int within
 * +-2^53, or a double) takes an IEEE fast path; beyond 2^53 the exact int/double comparison
 * decides. Both must agree with value.h's exact order. */
static const struct trec nums[] = {
    {"{\"name\":\"a\",\"x\":9007199254740992.0}", 1, 0},
    {"{\"name\":\"b\",\"x\":9007199254740993}", 2, 0},
    {"{\"name\":\"c\",\"x\":-0.0}", 3, 0},
    {"{\"name\":\"d\",\"x\":50.5}", 4, 0},
    {"{\"name\":\"e\",\"x\":50}", 5, 0},
};

static void expect_nums(const char *filter, const char *want)
{
    char q[512];
    snprintf(q, sizeof q, "{\"source\":{\"topic\":\"t\"},\"filter\":%s,\"select\":[\"name\"]}", filter);
    json_t *r = runq(q, nums, sizeof nums / sizeof nums[0], NULL);
    REQUIRE(r);
    char got[64];
    names(r, got, sizeof got);
    if (strcmp(got, want) != 0)
        fprintf(stderr, "filter %s: got [%s] want [%s]\n", filter, got, want);
    CHECK(strcmp(got, want) == 0);
    json_decref(r);
}

TEST(squery_number_comparisons_exact)
{
    expect_nums("{\"field\":\"x\",\"op\":\"gt\",\"value\":50}", "a,b,d");
    expect_nums("{\"field\":\"x\",\"op\":\"ge\",\"value\":50}", "a,b,d,e");
    expect_nums("{\"field\":\"x\",\"op\":\"eq\",\"value\":0}", "c");
    expect_nums("{\"field\":\"x\",\"op\":\"ne\",\"value\":50.5}", "a,b,c,e");
    expect_nums("{\"field\":\"x\",\"op\":\"lt\",\"value\":9007199254740993}", "a,c,d,e");
    expect_nums("{\"field\":\"x\",\"op\":\"le\",\"value\":9007199254740992}", "a,c,d,e");
    expect_nums("{\"field\":\"x\",\"op\":\"eq\",\"value\":9007199254740993}", "b");
    expect_nums("{\"field\":\"x\",\"op\":\"gt\",\"value\":9007199254740992.0}", "b");
    expect_nums("{\"field\":\"x\",\"op\":\"lt\",\"value\":-0.0}", "");
}

static json_t *agg1(json_t *r, size_t i) { return json_array_get(json_object_get(r, "aggregates"), i); }

TEST(squery_measures_and_groups)
{
    json_t *r = runq("{\"source\":{\"topic\":\"t\"},\"aggregate\":{\"group_by\":[\"team\"],\"measures\":["
                     "{\"op\":\"count\"},{\"op\":\"count\",\"field\":\"score\"},{\"op\":\"sum\",\"field\":\"score\"},"
                     "{\"op\":\"avg\",\"field\":\"score\",\"as\":\"mean\"},{\"op\":\"min\",\"field\":\"score\"},"
                     "{\"op\":\"max\",\"field\":\"score\"},{\"op\":\"count_distinct\",\"field\":\"addr.city\"}]}}",
                     people, NPEOPLE, NULL);
    REQUIRE(r);
    CHECK(json_array_size(json_object_get(r, "aggregates")) == 3);
    char *s = json_dumps(r, JSON_COMPACT);
    /* first appearance order: A, B, null */
    CHECK(strstr(s, "{\"key\":\"team=A\",\"group\":{\"team\":\"A\"},\"count\":2,\"count_score\":1,\"sum_score\":95,"
                    "\"mean\":95.0,\"min_score\":95,\"max_score\":95,\"count_distinct_addr.city\":1}") != NULL);
    CHECK(strstr(s, "{\"key\":\"team=B\",\"group\":{\"team\":\"B\"},\"count\":2,\"count_score\":2,\"sum_score\":179.5,"
                    "\"mean\":89.75,\"min_score\":80.5,\"max_score\":99,\"count_distinct_addr.city\":1}") != NULL);
    /* null team and missing team are one group; a string score is not summed */
    CHECK(strstr(s, "{\"key\":\"team=null\",\"group\":{\"team\":null},\"count\":2,\"count_score\":2,\"sum_score\":70,"
                    "\"mean\":70.0,\"min_score\":70,\"max_score\":70,\"count_distinct_addr.city\":0}") != NULL);
    if (!strstr(s, "team=null"))
        fprintf(stderr, "%s\n", s);
    free(s);
    CHECK(stat(r, "groups") == 3);
    json_decref(r);

    /* sums: exact int64, overflow continues as a double; avg/sum/min of nothing is null */
    static const struct trec big[] = {
        {"{\"v\":9223372036854775807,\"g\":1}", 0, 0}, {"{\"v\":1,\"g\":1}", 0, 0}, {"{\"w\":1,\"g\":2}", 0, 0},
        {"{\"v\":-9223372036854775807,\"g\":3}", 0, 0}, {"{\"v\":-2,\"g\":3}", 0, 0},
    };
    r = runq("{\"source\":{\"topic\":\"t\"},\"aggregate\":{\"group_by\":[\"g\"],\"measures\":[{\"op\":\"sum\",\"field\":\"v\"},"
             "{\"op\":\"avg\",\"field\":\"v\"},{\"op\":\"min\",\"field\":\"v\"}]}}", big, 5, NULL);
    REQUIRE(r);
    CHECK(json_is_real(json_object_get(agg1(r, 0), "sum_v")));
    CHECK(json_real_value(json_object_get(agg1(r, 0), "sum_v")) == 9223372036854775808.0);
    CHECK(json_is_null(json_object_get(agg1(r, 1), "sum_v")));
    CHECK(json_is_null(json_object_get(agg1(r, 1), "avg_v")));
    CHECK(json_is_null(json_object_get(agg1(r, 1), "min_v")));
    CHECK(json_is_real(json_object_get(agg1(r, 2), "sum_v")));
    json_decref(r);

    /* count_distinct: 1 and 1.0 are one value, "1" another; nulls are not counted */
    static const struct trec d[] = {{"{\"v\":1}", 0, 0}, {"{\"v\":1.0}", 0, 0}, {"{\"v\":\"1\"}", 0, 0},
                                    {"{\"v\":null}", 0, 0}, {"{\"v\":\"\\u0031\"}", 0, 0}, {"{\"v\":[1]}", 0, 0}};
    r = runq("{\"source\":{\"topic\":\"t\"},\"aggregate\":{\"measures\":[{\"op\":\"count_distinct\",\"field\":\"v\",\"as\":\"n\"}]}}", d, 6, NULL);
    REQUIRE(r);
    CHECK(json_integer_value(json_object_get(agg1(r, 0), "n")) == 3);
    CHECK(strcmp(json_string_value(json_object_get(agg1(r, 0), "key")), "") == 0);
    json_decref(r);
}

static const struct trec timed[] = {
    {"{\"k\":\"a\",\"t\":1500}", 100, 0},  {"{\"k\":\"a\",\"t\":2500}", 200, 0},
    {"{\"k\":\"b\",\"t\":-1}", 300, 0},    {"{\"k\":\"a\",\"t\":\"x\"}", 400, 0},
    {"{\"k\":\"a\",\"t\":5200}", 500, 0},  {"{\"k\":\"a\",\"t\":1999}", 600, 0},
    {"{\"k\":\"a\",\"t\":4100.7}", 700, 0},
};

TEST(squery_windows_tumbling_hopping_lateness)
{
    json_t *r = runq("{\"source\":{\"topic\":\"t\"},\"aggregate\":{\"group_by\":[\"k\"]},"
                     "\"window\":{\"type\":\"tumbling\",\"size_ms\":1000,\"time_field\":\"t\"}}",
                     timed, 7, NULL);
    REQUIRE(r);
    /* lateness 0: t=-1 arrives at watermark 2500 (its window [-1000,0) closed) -> late;
     * t=1999 arrives after 5200 (window [1000,2000) closed) -> late, dropped;
     * t=4100.7 -> window [4000,5000), closed too (watermark 5200) -> late */
    CHECK(stat(r, "late") == 3 && stat(r, "missing_time") == 1);
    json_t *a = json_object_get(r, "aggregates");
    CHECK(json_array_size(a) == 3);
    CHECK(json_integer_value(json_object_get(agg1(r, 0), "window_start_ms")) == 1000);
    CHECK(json_integer_value(json_object_get(agg1(r, 0), "window_end_ms")) == 2000);
    CHECK(json_integer_value(json_object_get(agg1(r, 2), "window_start_ms")) == 5000);
    CHECK(json_integer_value(json_object_get(agg1(r, 0), "count")) == 1);
    CHECK(json_integer_value(json_object_get(json_object_get(r, "stats"), "watermark_ms")) == 5200);
    json_decref(r);
    /* with allowed lateness 3500 both late records are kept */
    r = runq("{\"source\":{\"topic\":\"t\"},\"aggregate\":{\"group_by\":[\"k\"]},"
             "\"window\":{\"size_ms\":1000,\"time_field\":\"t\",\"allowed_lateness_ms\":3500}}", timed, 7, NULL);
    REQUIRE(r);
    CHECK(stat(r, "late") == 0);
    CHECK(json_integer_value(json_object_get(agg1(r, 1), "count")) == 2);
    json_decref(r);
    /* late: include keeps them but still reports them */
    r = runq("{\"source\":{\"topic\":\"t\"},\"aggregate\":{},"
             "\"window\":{\"size_ms\":1000,\"time_field\":\"t\",\"late\":\"include\"}}", timed, 7, NULL);
    REQUIRE(r);
    CHECK(stat(r, "late") == 3);
    int64_t total = 0;
    for (size_t i = 0; i < json_array_size(json_object_get(r, "aggregates")); i++)
        total += json_integer_value(json_object_get(agg1(r, i), "count"));
    CHECK(total == 6);
    json_decref(r);
    /* hopping: size 2000 advance 1000 -> each record in two windows; record timestamps */
    r = runq("{\"source\":{\"topic\":\"t\"},\"aggregate\":{},"
             "\"window\":{\"type\":\"hopping\",\"size_ms\":200,\"advance_ms\":100}}", timed, 3, NULL);
    REQUIRE(r);
    a = json_object_get(r, "aggregates");
    CHECK(json_array_size(a) == 4); /* [0,200) [100,300) [200,400) [300,500) */
    CHECK(json_integer_value(json_object_get(agg1(r, 0), "window_start_ms")) == 0);
    CHECK(json_integer_value(json_object_get(agg1(r, 1), "count")) == 2);
    CHECK(json_integer_value(json_object_get(agg1(r, 3), "window_end_ms")) == 500);
    json_decref(r);
    /* the watermark is the minimum over declared partitions */
    static const struct trec two[] = {{"{}", 5000, 0}, {"{}", 1000, 1}, {"{}", 1000, 0}};
    r = runq("{\"source\":{\"topic\":\"t\"},\"aggregate\":{},\"window\":{\"size_ms\":1000}}", two, 3, NULL);
    REQUIRE(r);
    /* undeclared: the minimum over the partitions fed so far, which never moves back: both
     * records at 1000 are late */
    CHECK(stat(r, "late") == 2);
    json_decref(r);
    declare_parts = 2; /* partitions 0 and 1 declared: nothing is late */
    r = runq("{\"source\":{\"topic\":\"t\"},\"aggregate\":{},\"window\":{\"size_ms\":1000}}", two, 3, NULL);
    declare_parts = 0;
    REQUIRE(r);
    CHECK(stat(r, "late") == 0);
    CHECK(json_integer_value(json_object_get(json_object_get(r, "stats"), "watermark_ms")) == 1000);
    json_decref(r);
}

TEST(squery_order_and_limit)
{
    json_t *r = runq("{\"source\":{\"topic\":\"t\"},\"select\":[\"name\",{\"field\":\"addr.city\",\"as\":\"city\"}],"
                     "\"order_by\":[{\"field\":\"score\",\"order\":\"desc\"}],\"limit\":3}", people, NPEOPLE, NULL);
    REQUIRE(r);
    char got[128];
    names(r, got, sizeof got);
    /* strings sort above numbers, nulls last in desc */
    CHECK(strcmp(got, "Di,Fy,Ann") == 0);
    CHECK(json_is_true(json_object_get(json_object_get(r, "stats"), "rows_truncated")));
    CHECK(json_is_null(json_object_get(json_array_get(json_object_get(r, "rows"), 1), "city")));
    json_decref(r);
    r = runq("{\"source\":{\"topic\":\"t\"},\"select\":[\"name\"],\"transform\":{\"order_by\":\"team\",\"emit_rows\":10}}",
             people, NPEOPLE, NULL);
    REQUIRE(r);
    names(r, got, sizeof got);
    CHECK(strcmp(got, "Di,Ed,Ann,Cy,Bob,Fy") == 0); /* nulls first, stable */
    json_decref(r);
    r = runq("{\"source\":{\"topic\":\"t\"},\"aggregate\":{\"group_by\":[\"team\"],\"measures\":[{\"op\":\"sum\",\"field\":\"score\",\"as\":\"s\"}],"
             "\"order_by\":\"-s\",\"limit\":2}}", people, NPEOPLE, NULL);
    REQUIRE(r);
    CHECK(json_array_size(json_object_get(r, "aggregates")) == 2);
    CHECK(strcmp(json_string_value(json_object_get(agg1(r, 0), "key")), "team=B") == 0);
    CHECK(json_is_true(json_object_get(json_object_get(r, "stats"), "aggregates_truncated")));
    json_decref(r);
    /* a long stream with a small top-N keeps memory bounded and the answer exact */
    struct trec many[500];
    char bufs[500][32];
    for (int i = 0; i < 500; i++) {
        snprintf(bufs[i], sizeof bufs[i], "{\"name\":\"n%03d\",\"v\":%d}", i, (i * 37) % 500);
        many[i] = (struct trec){bufs[i], i, 0};
    }
    r = runq("{\"source\":{\"topic\":\"t\",\"limit\":500},\"select\":[\"name\",\"v\"],\"order_by\":\"-v\",\"limit\":3}", many, 500, NULL);
    REQUIRE(r);
    json_t *rows = json_object_get(r, "rows");
    CHECK(json_array_size(rows) == 3);
    CHECK(json_integer_value(json_object_get(json_array_get(rows, 0), "v")) == 499);
    CHECK(json_integer_value(json_object_get(json_array_get(rows, 2), "v")) == 497);
    json_decref(r);
}

static void expect_err(const char *q, int rc, const char *path)
{
    json_t *r = runq(q, people, NPEOPLE, NULL);
    bool ok = !r && last_rc == rc && strcmp(last_err.path, path) == 0;
    if (!ok)
        fprintf(stderr, "query %s: rc %d path '%s' (%s), want %d '%s'\n", q, last_rc, last_err.path,
                last_err.msg, rc, path);
    CHECK(ok);
    json_decref(r);
}

TEST(squery_errors_with_paths)
{
    expect_err("[]", ERR_UNPROCESSABLE, "");
    expect_err("{}", ERR_UNPROCESSABLE, "/source");
    expect_err("{\"source\":{}}", ERR_UNPROCESSABLE, "/source/topic");
    expect_err("{\"source\":{\"topic\":\"t\",\"partition\":-1}}", ERR_UNPROCESSABLE, "/source/partition");
    expect_err("{\"source\":{\"topic\":\"t\",\"partitions\":[0,\"x\"]}}", ERR_UNPROCESSABLE, "/source/partitions/1");
    expect_err("{\"source\":{\"topic\":\"t\",\"limit\":0}}", ERR_UNPROCESSABLE, "/source/limit");
    expect_err("{\"source\":{\"topic\":\"t\",\"limit\":100000000}}", ERR_QUERY_LIMIT, "/source/limit");
    expect_err("{\"source\":{\"topic\":\"t\",\"commit\":true}}", ERR_UNPROCESSABLE, "/source/group");
    expect_err("{\"source\":{\"topic\":\"t\"},\"filter\":[{\"field\":\"a\",\"op\":\"eq\",\"value\":1},{\"field\":\"a\",\"op\":\"like\",\"value\":1}]}",
               ERR_UNPROCESSABLE, "/filter/1/op");
    expect_err("{\"source\":{\"topic\":\"t\"},\"filter\":[{\"field\":\"a..b\",\"op\":\"eq\",\"value\":1}]}", ERR_UNPROCESSABLE, "/filter/0/field");
    expect_err("{\"source\":{\"topic\":\"t\"},\"filter\":[{\"field\":\"$nope\",\"op\":\"eq\",\"value\":1}]}", ERR_UNPROCESSABLE, "/filter/0/field");
    expect_err("{\"source\":{\"topic\":\"t\"},\"filter\":[{\"field\":\"a\",\"op\":\"eq\",\"value\":null}]}", ERR_UNPROCESSABLE, "/filter/0/value");
    expect_err("{\"source\":{\"topic\":\"t\"},\"filter\":[{\"field\":\"a\",\"op\":\"eq\",\"value\":{}}]}", ERR_UNPROCESSABLE, "/filter/0/value");
    expect_err("{\"source\":{\"topic\":\"t\"},\"filter\":[{\"field\":\"a\",\"op\":\"in\",\"value\":[1,[2]]}]}", ERR_UNPROCESSABLE, "/filter/0/value/1");
    expect_err("{\"source\":{\"topic\":\"t\"},\"filter\":[{\"any\":[{\"field\":\"a\",\"op\":\"eq\"}]}]}", ERR_UNPROCESSABLE, "/filter/0/any/0/value");
    expect_err("{\"source\":{\"topic\":\"t\"},\"filter\":[{\"field\":\"a\",\"op\":\"eq\",\"value\":1,\"x\":2}]}", ERR_UNPROCESSABLE, "/filter/0/x");
    expect_err("{\"source\":{\"topic\":\"t\"},\"aggregate\":{\"measures\":[{\"op\":\"median\",\"field\":\"a\"}]}}", ERR_UNPROCESSABLE, "/aggregate/measures/0/op");
    expect_err("{\"source\":{\"topic\":\"t\"},\"aggregate\":{\"measures\":[{\"op\":\"sum\"}]}}", ERR_UNPROCESSABLE, "/aggregate/measures/0/field");
    expect_err("{\"source\":{\"topic\":\"t\"},\"aggregate\":{\"measures\":[{\"op\":\"count\"},{\"op\":\"count\"}]}}", ERR_UNPROCESSABLE, "/aggregate/measures/1/as");
    expect_err("{\"source\":{\"topic\":\"t\"},\"aggregate\":{\"measures\":[{\"op\":\"count\",\"as\":\"key\"}]}}", ERR_UNPROCESSABLE, "/aggregate/measures/0/as");
    expect_err("{\"source\":{\"topic\":\"t\"},\"aggregate\":{},\"window\":{\"type\":\"session\",\"size_ms\":5}}", ERR_UNPROCESSABLE, "/window/type");
    expect_err("{\"source\":{\"topic\":\"t\"},\"aggregate\":{},\"window\":{\"size_ms\":0}}", ERR_UNPROCESSABLE, "/window/size_ms");
    expect_err("{\"source\":{\"topic\":\"t\"},\"aggregate\":{},\"window\":{\"type\":\"hopping\",\"size_ms\":10,\"advance_ms\":20}}", ERR_UNPROCESSABLE, "/window/advance_ms");
    expect_err("{\"source\":{\"topic\":\"t\"},\"aggregate\":{},\"window\":{\"type\":\"hopping\",\"size_ms\":100000,\"advance_ms\":1}}", ERR_QUERY_LIMIT, "/window/advance_ms");
    expect_err("{\"source\":{\"topic\":\"t\"},\"window\":{\"size_ms\":10}}", ERR_UNPROCESSABLE, "/window");
    expect_err("{\"source\":{\"topic\":\"t\"},\"aggregate\":{\"order_by\":\"nope\"}}", ERR_UNPROCESSABLE, "/aggregate/order_by");
    expect_err("{\"source\":{\"topic\":\"t\"},\"aggregate\":{\"order_by\":\"window_start_ms\"}}", ERR_UNPROCESSABLE, "/aggregate/order_by");
    expect_err("{\"source\":{\"topic\":\"t\"},\"transform\":{\"emit_rows\":1000000}}", ERR_QUERY_LIMIT, "/transform/emit_rows");
    expect_err("{\"source\":{\"topic\":\"t\"},\"select\":[\"a\",{\"field\":\"b\",\"as\":\"a\"}]}", ERR_UNPROCESSABLE, "/select/1/as");
    expect_err("{\"source\":{\"topic\":\"t\"},\"frobnicate\":1}", ERR_UNPROCESSABLE, "/frobnicate");
    /* a windowed order_by on window_start_ms is fine */
    json_t *r = runq("{\"source\":{\"topic\":\"t\"},\"aggregate\":{\"order_by\":\"-window_start_ms\"},\"window\":{\"size_ms\":2000}}", people, NPEOPLE, NULL);
    CHECK(r && json_integer_value(json_object_get(agg1(r, 0), "window_start_ms")) == 8000);
    json_decref(r);
}

TEST(squery_runtime_limits)
{
    struct squery_limits lim = {0};
    lim.max_groups = 2;
    json_t *r = runq("{\"source\":{\"topic\":\"t\"},\"aggregate\":{\"group_by\":[\"name\"]}}", people, NPEOPLE, &lim);
    CHECK(!r && last_rc == ERR_QUERY_LIMIT && strcmp(last_err.path, "max_groups") == 0);
    lim = (struct squery_limits){0};
    lim.max_distinct_values = 3;
    r = runq("{\"source\":{\"topic\":\"t\"},\"aggregate\":{\"measures\":[{\"op\":\"count_distinct\",\"field\":\"name\"}]}}", people, NPEOPLE, &lim);
    CHECK(!r && last_rc == ERR_QUERY_LIMIT && strcmp(last_err.path, "max_distinct_values") == 0);
    lim = (struct squery_limits){0};
    lim.max_response_bytes = 200;
    r = runq("{\"source\":{\"topic\":\"t\"}}", people, NPEOPLE, &lim);
    CHECK(!r && last_rc == ERR_QUERY_LIMIT && strcmp(last_err.path, "max_response_bytes") == 0);
    lim = (struct squery_limits){0};
    lim.max_filter_nodes = 2;
    r = runq("{\"source\":{\"topic\":\"t\"},\"filter\":[{\"field\":\"a\",\"op\":\"exists\"},{\"field\":\"a\",\"op\":\"exists\"}]}", people, NPEOPLE, &lim);
    CHECK(!r && last_rc == ERR_QUERY_LIMIT);
    /* time range on record timestamps */
    r = runq("{\"source\":{\"topic\":\"t\",\"from_ms\":2000,\"to_ms\":5000},\"select\":[\"name\"]}", people, NPEOPLE, NULL);
    REQUIRE(r);
    char got[64];
    names(r, got, sizeof got);
    CHECK(strcmp(got, "Bob,Cy,Di") == 0);
    CHECK(stat(r, "out_of_time_range") == 5);
    json_decref(r);
}
