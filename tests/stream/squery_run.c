/* squery_run.c -- run many queries over one record set through the query engine, for the
 * differential test against SQLite (tests/integration/test_stream_query_sqlite.py).
 *
 *   squery_run RECORDS < QUERIES
 * RECORDS: one record per line, "partition<TAB>offset<TAB>timestamp_ms<TAB>value".
 * QUERIES: one JSON query per line. Output: one line per query, the result object
 * {"rows":..,"aggregates":..,"stats":..} or {"error":"<code>","path":"..","message":".."}.
 */
#include "base/err.h"
#include "stream/query.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct rec {
    uint32_t part;
    uint64_t off;
    int64_t ts;
    char *value;
    size_t len;
};

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: squery_run RECORDS < QUERIES\n");
        return 2;
    }
    FILE *f = fopen(argv[1], "r");
    if (!f) {
        perror(argv[1]);
        return 2;
    }
    struct rec *recs = NULL;
    size_t n = 0, cap = 0;
    char *line = NULL;
    size_t lcap = 0;
    ssize_t l;
    while ((l = getline(&line, &lcap, f)) > 0) {
        if (line[l - 1] == '\n')
            line[--l] = 0;
        if (n == cap) {
            cap = cap ? cap * 2 : 256;
            recs = realloc(recs, cap * sizeof *recs);
        }
        char *p = line, *t1 = strchr(p, '\t'), *t2 = t1 ? strchr(t1 + 1, '\t') : NULL,
             *t3 = t2 ? strchr(t2 + 1, '\t') : NULL;
        if (!t3) {
            fprintf(stderr, "bad record line\n");
            return 2;
        }
        recs[n].part = (uint32_t)strtoul(p, NULL, 10);
        recs[n].off = strtoull(t1 + 1, NULL, 10);
        recs[n].ts = strtoll(t2 + 1, NULL, 10);
        recs[n].len = (size_t)(line + l - (t3 + 1));
        recs[n].value = malloc(recs[n].len + 1);
        memcpy(recs[n].value, t3 + 1, recs[n].len + 1);
        n++;
    }
    fclose(f);
    uint32_t parts[64];
    size_t np = 0;
    for (size_t i = 0; i < n; i++) {
        bool seen = false;
        for (size_t k = 0; k < np; k++)
            seen |= parts[k] == recs[i].part;
        if (!seen && np < 64)
            parts[np++] = recs[i].part;
    }
    struct sbuf b;
    sbuf_init(&b, 0);
    while ((l = getline(&line, &lcap, stdin)) > 0) {
        json_error_t je;
        json_t *req = json_loadb(line, (size_t)l, 0, &je);
        struct squery *q = NULL;
        struct serr e = {{0}, {0}};
        int rc = req ? squery_compile(req, NULL, &q, &e) : ERR_INVALID_JSON;
        json_decref(req);
        b.len = 0;
        struct jw w;
        jw_init(&w, &b);
        jw_obj_open(&w);
        if (rc == 0) {
            squery_expect_partitions(q, parts, np);
            const struct squery_source *src = squery_source(q);
            uint64_t fed = 0;
            for (size_t i = 0; i < n && rc == 0 && fed < src->limit; i++) {
                if (src->has_offset && recs[i].off < src->offset)
                    continue;
                if (src->has_end_offset && recs[i].off >= src->end_offset)
                    continue;
                if (!src->all_partitions) {
                    bool in = false;
                    for (uint32_t k = 0; k < src->partition_count; k++)
                        in |= src->partitions[k] == recs[i].part;
                    if (!in)
                        continue;
                }
                struct srec r = {.partition = recs[i].part, .offset = recs[i].off,
                                 .timestamp_ms = recs[i].ts,
                                 .value = slice_of(recs[i].value, recs[i].len)};
                rc = squery_feed(q, &r);
                fed++;
            }
            if (rc == 0)
                rc = squery_finish(q, &w);
            if (rc)
                e = *squery_error(q);
        }
        if (rc) {
            b.len = 0;
            jw_init(&w, &b);
            jw_obj_open(&w);
            jw_kstr(&w, "error", err_code_str(rc));
            jw_kstr(&w, "path", e.path);
            jw_kstr(&w, "message", e.msg);
        }
        jw_obj_close(&w);
        fwrite(b.data, 1, b.len, stdout);
        fputc('\n', stdout);
        fflush(stdout);
        squery_free(q);
    }
    free(line);
    sbuf_free(&b);
    for (size_t i = 0; i < n; i++)
        free(recs[i].value);
    free(recs);
    return 0;
}
