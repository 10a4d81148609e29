/* stream_join.c -- POST /broker/join: the original's request parsed into a struct join_spec,
 * both sides read through stream_src.c, the engine (stream/join.h) fed and finished, and the exact
 * resume protocol of docs/STREAM.md "Joins: the handler protocol" carried out: new records of
 * both sides interleaved in rounds, the lookback re-read before the committed offsets, and the
 * progress rule (re-read with doubled limits when windows are wider than the limits).
 */
#include "api/api_internal.h"
#include "api/stream_internal.h"

#include "base/alloc.h"
#include "base/clock.h"
#include "base/err.h"
#include "broker/broker.h"
#include "broker/entry.h"
#include "core/core.h"

#include <stdio.h>
#include <string.h>

/* --- POST /broker/join ---------------------------------------------------------------------- */

#define JOIN_SIDE_LIMIT_DEFAULT 500
#define JOIN_SIDE_LIMIT_MAX 1000000 /* records per side per call (the state limits still apply) */
#define JOIN_ROWS_MAX 100000

static const char *const side_name[2] = {"left", "right"};

static uint64_t side_limit_max(const struct api *a)
{
    return a->cfg.stream_max_records ? a->cfg.stream_max_records : JOIN_SIDE_LIMIT_MAX;
}

/* Members of obj must all be in allowed (NULL-terminated): a typo is an error, not ignored. */
static bool only_members(json_t *obj, const char *const *allowed, const char *path, struct serr *e)
{
    const char *k;
    json_t *v;
    json_object_foreach(obj, k, v) {
        bool ok = false;
        for (size_t i = 0; allowed[i] && !ok; i++)
            ok = strcmp(k, allowed[i]) == 0;
        if (!ok) {
            char p[160];
            snprintf(p, sizeof p, "%s/%s", path, k);
            serr_set(e, p, "unknown member");
            return false;
        }
    }
    (void)v;
    return true;
}

static int json_u64_at(json_t *o, const char *k, uint64_t min, uint64_t max, const char *path,
                       bool *present, uint64_t *out, struct serr *e)
{
    json_t *v = json_object_get(o, k);
    *present = v != NULL;
    if (!v)
        return 0;
    if (!json_is_integer(v) || json_integer_value(v) < 0 ||
        (uint64_t)json_integer_value(v) < min || (uint64_t)json_integer_value(v) > max) {
        char p[160];
        snprintf(p, sizeof p, "%s/%s", path, k);
        serr_set(e, p, "must be an integer in %llu..%llu", (unsigned long long)min,
                 (unsigned long long)max);
        return ERR_UNPROCESSABLE;
    }
    *out = (uint64_t)json_integer_value(v);
    return 0;
}

static int field_at(json_t *v, const char *path, struct join_field *f, struct serr *e)
{
    if (!json_is_string(v) || json_string_length(v) == 0) {
        serr_set(e, path, "must be a non-empty field name");
        return ERR_UNPROCESSABLE;
    }
    if (join_field_parse(f, json_string_value(v), json_string_length(v))) {
        serr_set(e, path, "\"%s\" is not a field path or a known $ field", json_string_value(v));
        return ERR_UNPROCESSABLE;
    }
    return 0;
}

/* One side: {"topic","group","partition","offset","limit","decode","time_field","commit"}. */
static int join_side_parse(struct rctx *x, struct sjob *s, int i, json_t *side, bool commit_all,
                           struct serr *e)
{
    static const char *const allowed[] = {"topic", "group", "partition", "offset", "limit",
                                          "decode", "time_field", "commit", NULL};
    char path[16];
    snprintf(path, sizeof path, "/%s", side_name[i]);
    if (!json_is_object(side)) {
        serr_set(e, path, "must be an object {\"topic\",\"partition\",...}");
        return ERR_UNPROCESSABLE;
    }
    if (!only_members(side, allowed, path, e))
        return ERR_UNPROCESSABLE;
    struct squery_source q;
    memset(&q, 0, sizeof q);
    json_t *t = json_object_get(side, "topic");
    if (!json_is_string(t) || json_string_length(t) == 0 ||
        json_string_length(t) > SQUERY_NAME_MAX) {
        char p[160];
        snprintf(p, sizeof p, "%s/topic", path);
        serr_set(e, p, "a topic name is required");
        return ERR_UNPROCESSABLE;
    }
    snprintf(q.topic, sizeof q.topic, "%s", json_string_value(t));
    json_t *g = json_object_get(side, "group");
    if (g) {
        if (!json_is_string(g) || json_string_length(g) > SQUERY_NAME_MAX) {
            char p[160];
            snprintf(p, sizeof p, "%s/group", path);
            serr_set(e, p, "must be a group name");
            return ERR_UNPROCESSABLE;
        }
        snprintf(q.group, sizeof q.group, "%s", json_string_value(g));
    }
    bool present;
    uint64_t v = 0;
    int rc = json_u64_at(side, "partition", 0, BROKER_PARTITIONS_MAX - 1, path, &present, &v, e);
    if (rc)
        return rc;
    uint32_t part = (uint32_t)v;
    q.partitions = &part;
    q.partition_count = 1;
    if ((rc = json_u64_at(side, "offset", 0, INT64_MAX, path, &q.has_offset, &q.offset, e)))
        return rc;
    q.limit = JOIN_SIDE_LIMIT_DEFAULT;
    uint64_t side_max = side_limit_max(x->api);
    if ((rc = json_u64_at(side, "limit", 1, side_max, path, &present, &q.limit, e)))
        return rc;
    json_t *c = json_object_get(side, "commit");
    if (c && !json_is_boolean(c)) {
        char p[160];
        snprintf(p, sizeof p, "%s/commit", path);
        serr_set(e, p, "must be true or false");
        return ERR_UNPROCESSABLE;
    }
    q.commit = commit_all || json_is_true(c);
    if ((rc = ssource_resolve(x, &q, path, &s->side[i], e)))
        return rc;
    char dpath[32];
    snprintf(dpath, sizeof dpath, "%s/decode", path);
    if ((rc = sdecode_open(x->api, json_object_get(side, "decode"), dpath, &s->jdec[i], e)))
        return rc;
    struct join_side_spec *ss = &s->spec.side[i];
    ss->fmt = s->jdec[i].fmt;
    json_t *tf = json_object_get(side, "time_field");
    if (tf) {
        char p[160];
        snprintf(p, sizeof p, "%s/time_field", path);
        if ((rc = field_at(tf, p, &ss->time_field, e)))
            return rc;
        ss->has_time_field = true;
    }
    return 0;
}

static int join_keys_parse(struct sjob *s, json_t *on, struct serr *e)
{
    static const char *const allowed[] = {"left_key", "right_key", "left_keys", "right_keys", NULL};
    if (!json_is_object(on)) {
        serr_set(e, "/on", "must be an object with left_key/right_key or left_keys/right_keys");
        return ERR_UNPROCESSABLE;
    }
    if (!only_members(on, allowed, "/on", e))
        return ERR_UNPROCESSABLE;
    for (int i = 0; i < 2; i++) {
        char k1[16], kn[16], p[64];
        snprintf(k1, sizeof k1, "%s_key", side_name[i]);
        snprintf(kn, sizeof kn, "%s_keys", side_name[i]);
        json_t *one = json_object_get(on, k1), *many = json_object_get(on, kn);
        struct join_side_spec *ss = &s->spec.side[i];
        if ((one != NULL) == (many != NULL)) {
            snprintf(p, sizeof p, "/on/%s", k1);
            serr_set(e, p, "give exactly one of %s or %s", k1, kn);
            return ERR_UNPROCESSABLE;
        }
        if (one) {
            snprintf(p, sizeof p, "/on/%s", k1);
            int rc = field_at(one, p, &ss->keys[0], e);
            if (rc)
                return rc;
            ss->nkeys = 1;
            continue;
        }
        if (!json_is_array(many) || json_array_size(many) == 0 ||
            json_array_size(many) > JOIN_KEYS_MAX) {
            snprintf(p, sizeof p, "/on/%s", kn);
            serr_set(e, p, "must be an array of 1..%d field names", JOIN_KEYS_MAX);
            return ERR_UNPROCESSABLE;
        }
        for (size_t k = 0; k < json_array_size(many); k++) {
            snprintf(p, sizeof p, "/on/%s/%zu", kn, k);
            int rc = field_at(json_array_get(many, k), p, &ss->keys[k], e);
            if (rc)
                return rc;
        }
        ss->nkeys = (uint32_t)json_array_size(many);
    }
    if (s->spec.side[0].nkeys != s->spec.side[1].nkeys) {
        serr_set(e, "/on", "left and right keys must have the same number of fields (%u vs %u)",
                 s->spec.side[0].nkeys, s->spec.side[1].nkeys);
        return ERR_UNPROCESSABLE;
    }
    return 0;
}

static int join_emit_parse(struct sjob *s, json_t *emit, struct serr *e)
{
    static const char *const allowed[] = {"left_fields", "right_fields", "max_rows", "missing_as",
                                          NULL};
    s->spec.max_rows = JOIN_MAX_ROWS_DEFAULT;
    if (!emit)
        return 0;
    if (!json_is_object(emit)) {
        serr_set(e, "/emit", "must be an object");
        return ERR_UNPROCESSABLE;
    }
    if (!only_members(emit, allowed, "/emit", e))
        return ERR_UNPROCESSABLE;
    for (int i = 0; i < 2; i++) {
        char k[16], p[64];
        snprintf(k, sizeof k, "%s_fields", side_name[i]);
        json_t *a = json_object_get(emit, k);
        if (!a)
            continue;
        if (!json_is_array(a) || json_array_size(a) > JOIN_FIELDS_MAX) {
            snprintf(p, sizeof p, "/emit/%s", k);
            serr_set(e, p, "must be an array of at most %d field names", JOIN_FIELDS_MAX);
            return ERR_UNPROCESSABLE;
        }
        struct join_side_spec *ss = &s->spec.side[i];
        for (size_t f = 0; f < json_array_size(a); f++) {
            snprintf(p, sizeof p, "/emit/%s/%zu", k, f);
            int rc = field_at(json_array_get(a, f), p, &ss->fields[f], e);
            if (rc)
                return rc;
        }
        ss->nfields = (uint32_t)json_array_size(a);
    }
    bool present;
    int rc = json_u64_at(emit, "max_rows", 1, JOIN_ROWS_MAX, "/emit", &present, &s->spec.max_rows,
                         e);
    if (rc)
        return rc;
    json_t *m = json_object_get(emit, "missing_as");
    if (m) {
        if (json_is_string(m) && strcmp(json_string_value(m), "null") == 0) {
            s->spec.missing_as = JOIN_MISSING_NULL;
        } else if (json_is_string(m) && strcmp(json_string_value(m), "empty") == 0) {
            s->spec.missing_as = JOIN_MISSING_EMPTY;
        } else {
            serr_set(e, "/emit/missing_as", "must be \"null\" or \"empty\"");
            return ERR_UNPROCESSABLE;
        }
    }
    return 0;
}

static int join_parse(struct rctx *x, struct sjob *s, json_t *j, struct serr *e)
{
    static const char *const allowed[] = {"left", "right", "on", "join", "window", "emit",
                                          "dedupe_once", "dedupe", "commit", NULL};
    if (!only_members(j, allowed, "", e))
        return ERR_UNPROCESSABLE;
    json_t *commit = json_object_get(j, "commit");
    if (commit && !json_is_boolean(commit)) {
        serr_set(e, "/commit", "must be true or false");
        return ERR_UNPROCESSABLE;
    }
    int rc;
    for (int i = 0; i < 2; i++)
        if ((rc = join_side_parse(x, s, i, json_object_get(j, side_name[i]), json_is_true(commit),
                                  e)))
            return rc;
    if ((rc = join_keys_parse(s, json_object_get(j, "on"), e)))
        return rc;
    json_t *jt = json_object_get(j, "join");
    s->spec.type = JOIN_INNER;
    if (jt) {
        json_t *type = json_is_object(jt) ? json_object_get(jt, "type") : NULL;
        const char *t = json_is_string(type) ? json_string_value(type) : "";
        if (!json_is_object(jt) || (type && !json_is_string(type))) {
            serr_set(e, "/join", "must be {\"type\":\"inner|left|right|full\"}");
            return ERR_UNPROCESSABLE;
        }
        if (!type || strcmp(t, "inner") == 0)
            s->spec.type = JOIN_INNER;
        else if (strcmp(t, "left") == 0)
            s->spec.type = JOIN_LEFT;
        else if (strcmp(t, "right") == 0)
            s->spec.type = JOIN_RIGHT;
        else if (strcmp(t, "full") == 0 || strcmp(t, "outer") == 0)
            s->spec.type = JOIN_FULL;
        else {
            serr_set(e, "/join/type", "must be inner, left, right or full");
            return ERR_UNPROCESSABLE;
        }
    }
    json_t *w = json_object_get(j, "window");
    if (!json_is_object(w)) {
        serr_set(e, "/window", "a window {\"size_ms\":N} is required");
        return ERR_UNPROCESSABLE;
    }
    static const char *const wallowed[] = {"size_ms", "allowed_lateness_ms", "time_field", NULL};
    if (!only_members(w, wallowed, "/window", e))
        return ERR_UNPROCESSABLE;
    bool present;
    uint64_t v;
    if ((rc = json_u64_at(w, "size_ms", 0, INT64_MAX / 4, "/window", &present, &v, e)))
        return rc;
    if (!present) {
        serr_set(e, "/window/size_ms", "required");
        return ERR_UNPROCESSABLE;
    }
    s->spec.size_ms = (int64_t)v;
    v = 0;
    if ((rc = json_u64_at(w, "allowed_lateness_ms", 0, INT64_MAX / 4, "/window", &present, &v, e)))
        return rc;
    s->spec.allowed_lateness_ms = (int64_t)v;
    json_t *tf = json_object_get(w, "time_field");
    if (tf)
        for (int i = 0; i < 2; i++) {
            if (s->spec.side[i].has_time_field)
                continue; /* the side's own time_field wins */
            if ((rc = field_at(tf, "/window/time_field", &s->spec.side[i].time_field, e)))
                return rc;
            s->spec.side[i].has_time_field = true;
        }
    if ((rc = join_emit_parse(s, json_object_get(j, "emit"), e)))
        return rc;
    json_t *d1 = json_object_get(j, "dedupe_once"), *d2 = json_object_get(j, "dedupe");
    if (d1 && !json_is_boolean(d1)) {
        serr_set(e, "/dedupe_once", "must be true or false");
        return ERR_UNPROCESSABLE;
    }
    if (d2) {
        json_t *mode = json_is_object(d2) ? json_object_get(d2, "mode") : NULL;
        if (!json_is_string(mode) || (strcmp(json_string_value(mode), "once") != 0 &&
                                      strcmp(json_string_value(mode), "none") != 0)) {
            serr_set(e, "/dedupe/mode", "must be \"once\" or \"none\"");
            return ERR_UNPROCESSABLE;
        }
        s->spec.dedupe_once = strcmp(json_string_value(mode), "once") == 0;
    }
    if (json_is_true(d1))
        s->spec.dedupe_once = true;
    const struct api_config *cfg = &x->api->cfg;
    s->spec.max_state_records = cfg->stream_max_records;
    s->spec.max_state_bytes = cfg->stream_max_memory_bytes;
    s->spec.max_response_bytes = cfg->stream_max_response_bytes;
    if (join_new(&s->spec, &s->j)) {
        serr_set(e, "", "the join specification is not valid");
        return ERR_UNPROCESSABLE;
    }
    return 0;
}

/* Feeding one side: new records. */
struct join_feed_ctx {
    struct sjob *s;
    int side;
    enum join_feed_kind kind;
    int64_t from_ms; /* lookback: records stamped earlier are skipped */
    uint64_t fed;
};

static int join_feed_one(void *ctx, const struct srec *r)
{
    struct join_feed_ctx *c = ctx;
    if (c->kind == JOIN_LOOKBACK && r->timestamp_ms < c->from_ms)
        return 0;
    int rc = join_feed(c->s->j, c->side, r, c->kind);
    if (rc == 0)
        c->fed++;
    return rc;
}

/* One read of both sides with the current limits; ERR_QUERY_LIMIT from a feed stops both. */
static int join_read(struct sjob *s, bool *state_full)
{
    struct api *a = s->x->api;
    struct join_feed_ctx c[2] = {{s, JOIN_L, JOIN_NEW, 0, 0}, {s, JOIN_R, JOIN_NEW, 0, 0}};
    *state_full = false;
    for (;;) {
        bool any = false;
        for (int i = 0; i < 2; i++) {
            struct ssource *src = &s->side[i];
            struct spart *sp = &src->parts[0];
            if (sp->done || src->consumed >= src->limit)
                continue;
            uint64_t left = src->limit - src->consumed;
            uint64_t before = sp->next;
            int rc = ssource_read_chunk(a, src, sp, left, SCAN_CHUNK, join_feed_one, &c[i]);
            if (rc == ERR_QUERY_LIMIT) {
                /* the record that did not fit was not taken: the side stops before it */
                sp->next = sp->next > before ? sp->next - 1 : before;
                src->consumed--;
                sp->read--;
                *state_full = true;
                return 0;
            }
            if (rc)
                return rc;
            any = true;
        }
        if (!any)
            return 0;
    }
}

static void join_write_side_stats(struct jw *w, const char *key, const struct join_side_stats *st)
{
    jw_key(w, key);
    jw_obj_open(w);
    jw_ku64(w, "read", st->read);
    jw_ku64(w, "consumed", st->consumed);
    jw_ku64(w, "reread", st->reread);
    jw_ku64(w, "lookback", st->lookback);
    jw_ku64(w, "outer", st->outer);
    jw_ku64(w, "late", st->late);
    jw_ku64(w, "late_after_close", st->late_after_close);
    jw_ku64(w, "null_key", st->null_key);
    jw_ku64(w, "untimed", st->untimed);
    jw_ku64(w, "undecodable", st->undecodable);
    jw_ku64(w, "clock_regressions", st->clock_regressions);
    jw_obj_close(w);
}

void stream_join_run(struct sjob *s)
{
    struct api *a = s->x->api;
    const struct join_result *res = &s->jres;
    struct sbuf rows;
    sbuf_init(&rows, 0);
    for (int attempt = 0;; attempt++) {
        bool full;
        int rc = join_read(s, &full);
        /* Lookback: records before the committed offsets whose windows an earlier call closed. */
        for (int i = 0; !rc && i < 2; i++) {
            int64_t from;
            if (!join_lookback_from_ms(s->j, i, &from))
                continue;
            struct ssource *src = &s->side[i];
            struct spart *sp = &src->parts[0];
            uint64_t lb = 0;
            if (broker_offset_for_time(a->broker, slice_cstr(src->topic), sp->partition, from,
                                       &lb) || lb >= sp->start)
                continue;
            /* a private view of the side that reads [lb, C) without touching its progress */
            struct ssource view = *src;
            struct spart vp = *sp;
            view.parts = &vp;
            view.nparts = 1;
            view.consumed = 0;
            view.limit = UINT64_MAX;
            view.end_offset = sp->start;
            view.has_from = view.has_to = false;
            vp.next = vp.start = lb;
            vp.done = vp.eol = false;
            struct join_feed_ctx c = {s, i, JOIN_LOOKBACK, from, 0};
            while (!rc && !vp.done)
                rc = ssource_read_chunk(a, &view, &vp, UINT64_MAX, SCAN_CHUNK, join_feed_one, &c);
            if (rc == ERR_QUERY_LIMIT)
                rc = 0; /* lookback_max: the engine counts what it saw */
        }
        if (rc) {
            s->err = rc;
            if (rc == ERR_CORRUPT)
                serr_set(&s->e, "", "a stored record failed its checksum");
            sbuf_free(&rows);
            return;
        }
        struct join_end ends[2];
        bool read_any = false;
        for (int i = 0; i < 2; i++) {
            const struct spart *sp = &s->side[i].parts[0];
            ends[i] = (struct join_end){sp->start, sp->next, sp->eol};
            read_any = read_any || sp->read > 0;
        }
        sbuf_reset(&rows);
        rc = join_finish(s->j, ends, &rows, &s->jres);
        if (rc) {
            s->err = rc;
            serr_set(&s->e, res->limit ? res->limit : "", "%s%s",
                     rc == ERR_QUERY_LIMIT ? "join limit reached: " : err_message(rc),
                     rc == ERR_QUERY_LIMIT && res->limit ? res->limit : "");
            sbuf_free(&rows);
            return;
        }
        /* Progress rule: nothing consumed, no side at its end, records were read -> the windows
         * are wider than the limits: read again with doubled limits (the state limits end it). */
        bool stuck = res->next_offset[0] == ends[0].from_offset &&
                     res->next_offset[1] == ends[1].from_offset && !ends[0].at_log_end &&
                     !ends[1].at_log_end && read_any && !full;
        uint64_t cap = side_limit_max(a);
        if (!stuck || attempt >= 20 || (s->side[0].limit >= cap && s->side[1].limit >= cap))
            break;
        join_free(s->j);
        s->j = NULL;
        if (join_new(&s->spec, &s->j)) {
            s->err = ERR_NOMEM;
            sbuf_free(&rows);
            return;
        }
        for (int i = 0; i < 2; i++) {
            struct ssource *src = &s->side[i];
            src->limit = src->limit * 2 > cap ? cap : src->limit * 2;
            src->consumed = 0;
            src->parts[0].next = src->parts[0].start;
            src->parts[0].read = 0;
            src->parts[0].done = src->parts[0].eol = false;
        }
    }
    for (int i = 0; i < 2; i++) /* what the caller commits: the engine's consumed prefix */
        s->side[i].parts[0].next = res->next_offset[i];
    sbuf_init(&s->out, 0);
    struct jw w;
    jw_init(&w, &s->out);
    jw_obj_open(&w);
    jw_kbool(&w, "ok", true);
    jw_key(&w, "rows");
    jw_raw(&w, "[");
    sbuf_append(&s->out, rows.data, rows.len);
    sbuf_putc(&s->out, ']');
    sbuf_free(&rows);
    jw_key(&w, "next_offsets");
    jw_obj_open(&w);
    jw_ku64(&w, "left", res->next_offset[0]);
    jw_ku64(&w, "right", res->next_offset[1]);
    jw_obj_close(&w);
    jw_key(&w, "stats");
    jw_obj_open(&w);
    jw_ku64(&w, "left_scanned", res->side[0].read);
    jw_ku64(&w, "right_scanned", res->side[1].read);
    jw_ku64(&w, "rows", res->rows);
    jw_ku64(&w, "pairs", res->pairs);
    if (res->has_watermark)
        jw_ki64(&w, "watermark_ms", res->watermark_ms);
    else
        jw_knull(&w, "watermark_ms");
    jw_ku64(&w, "outer_left", res->side[0].outer);
    jw_ku64(&w, "outer_right", res->side[1].outer);
    jw_kbool(&w, "dedupe_once", s->spec.dedupe_once);
    jw_kstr(&w, "type", join_type_name(s->spec.type));
    jw_kbool(&w, "cut_by_rows", res->cut_by_rows);
    jw_ku64(&w, "state_records_peak", res->state_records_peak);
    jw_ku64(&w, "state_bytes_peak", res->state_bytes_peak);
    join_write_side_stats(&w, "left", &res->side[0]);
    join_write_side_stats(&w, "right", &res->side[1]);
    jw_obj_close(&w);
    ssource_write(&w, "left_source", &s->side[0]);
    ssource_write(&w, "right_source", &s->side[1]);
    jw_ku64(&w, "took_us", (clock_mono_ns() - s->t0_ns) / 1000);
    jw_obj_close(&w);
    if (!sbuf_ok(&s->out)) {
        s->err = ERR_NOMEM;
        return;
    }
    size_t n = 0;
    for (int i = 0; i < 2; i++)
        if (s->side[i].commit)
            s->commits[n++] = (struct commit_item){s->side[i].topic, s->side[i].group,
                                                   s->side[i].parts[0].partition,
                                                   res->next_offset[i]};
    s->ncommits = n;
}

void stream_h_join(struct rctx *x, const struct route_match *m)
{
    (void)m;
    json_t *j = api_json_body_at(x);
    if (!j)
        return;
    struct sjob *s = arena_alloc(http_req_arena(x->req), sizeof *s);
    struct commit_item *commits = arena_alloc(http_req_arena(x->req), 2 * sizeof *commits);
    if (!s || !commits) {
        json_decref(j);
        api_respond_error(x, ERR_NOMEM, NULL);
        return;
    }
    memset(s, 0, sizeof *s);
    s->kind = SJOB_JOIN;
    s->t0_ns = clock_mono_ns();
    s->req = j; /* field names in the spec point into it */
    s->commits = commits;
    int rc = join_parse(x, s, j, &s->e);
    if (rc) {
        /* s lives in the request arena, which answering may free: free it first */
        struct serr e = s->e;
        stream_job_free(s);
        stream_respond_serr(x, rc, &e);
        return;
    }
    stream_job_submit(x, s);
}
