/* stream.c -- POST /broker/query and POST /broker/join: the HTTP side of the stream engines.
 *
 * The engines (stream/query.h, stream/join.h) are pure: records in, rows out. This file resolves
 * what a request reads (topic, partitions, start offsets: explicit, a group's committed offset, a
 * time, the log start), builds the record decoder its "decode" object names (JSON, Avro, Protobuf,
 * the Confluent wire format through the schema registry), reads the partition logs through the
 * same lock-free read path as consume (page cache, up to the published high watermark), feeds the
 * engine, and answers. With "commit":true it then commits the next offsets through the ordinary
 * commit write path (journaled, replicated, acknowledged per write concern).
 *
 * Life of a request:
 *
 *   worker: parse + compile + resolve sources + build decoders ──▶ workq (stream thread):
 *           read partitions round-robin, feed the engine, write the JSON answer into job->out
 *   worker (http_req_post): commits (one ENTRY_COMMIT per partition, chained), then respond
 *
 * Invariants:
 *  1. A scan never runs on an HTTP worker: a query over a million records must not stall the
 *     other connections of that worker's loop. The pool is bounded (workq); beyond it 503.
 *  2. Records are streamed through the engine in bounded chunks; a partition is never loaded
 *     whole. Every per-call bound (records, groups, join state, response bytes) is the engine's,
 *     and is named in the 413 answer when hit.
 *  3. Partitions are read round-robin in chunks of SCAN_CHUNK records, in ascending partition
 *     order, so one call is deterministic for a given log: the same request over the same
 *     records yields the same rows (what the differential and resume tests rely on).
 *  4. next_offset of a partition is the offset after the last record the engine consumed; a
 *     commit stores exactly that (Kafka's convention: the committed offset is the next to read).
 *  5. The request holds a reference for the job's whole life; the job's memory is freed on the
 *     worker after the answer.
 */
#include "api/api_internal.h"
#include "api/stream_internal.h"

#include "base/alloc.h"
#include "base/clock.h"
#include "base/err.h"
#include "base/workq.h"
#include "broker/broker.h"
#include "broker/entry.h"
#include "core/core.h"
#include "schema/registry.h"
#include "stream/fmt/avro.h"
#include "stream/fmt/confluent.h"
#include "stream/fmt/json.h"
#include "stream/fmt/proto.h"
#include "stream/join.h"
#include "stream/query.h"

#include <stdio.h>
#include <string.h>

#define SCAN_CHUNK 4096u /* records per partition per round (rounded up to a stored batch's end) */

/* ------------------------------------------------------------------------------------------ */
/* Errors with a path                                                                          */

void stream_respond_serr(struct rctx *x, int err, const struct serr *e)
{
    struct sbuf b;
    sbuf_init(&b, 0);
    struct jw w;
    jw_init(&w, &b);
    jw_obj_open(&w);
    jw_kstr(&w, "path", e->path);
    jw_obj_close(&w);
    /* extra members: strip the braces of the object just written */
    char extra[512];
    size_t n = b.len >= 2 ? b.len - 2 : 0;
    if (n >= sizeof extra)
        n = sizeof extra - 1;
    memcpy(extra, b.data + 1, n);
    extra[n] = 0;
    sbuf_free(&b);
    api_respond_error_ex(x, err, e->msg[0] ? e->msg : NULL, e->path[0] ? extra : NULL, NULL);
}

/* ------------------------------------------------------------------------------------------ */
/* Decoders: a source's "decode" object                                                        */



void sdecode_close(struct sdecode *d)
{
    sfmt_free(d->fmt);
    for (int i = 0; i < 2; i++) {
        avro_schema_free(d->avro_own[i]);
        if (d->ref[i])
            schema_ref_release(d->ref[i]);
    }
    proto_schema_free(d->proto_own);
    memset(d, 0, sizeof *d);
}

struct id_capture {
    uint32_t id;
};
static int capture_id(void *ctx, const struct schema_view *v)
{
    ((struct id_capture *)ctx)->id = v->id;
    return 0;
}

/* The schema a decode object names with `<prefix>schema_text`, `<prefix>schema_id` or
 * `<prefix>subject` (+ `<prefix>version`). Sets *found = false when none of them is present. */
static int decode_schema(struct api *a, json_t *dec, const char *prefix, const char *path,
                         uint8_t type, struct sdecode *d, int slot, const struct avro_schema **avro,
                         const struct proto_schema **proto, bool *found, struct serr *e)
{
    char k_text[48], k_id[48], k_subject[48], k_version[48], p[160];
    snprintf(k_text, sizeof k_text, "%sschema_text", prefix);
    snprintf(k_id, sizeof k_id, "%sschema_id", prefix);
    snprintf(k_subject, sizeof k_subject, "%ssubject", prefix);
    snprintf(k_version, sizeof k_version, "%sversion", prefix);
    json_t *text = json_object_get(dec, k_text);
    json_t *id = json_object_get(dec, k_id);
    json_t *subject = json_object_get(dec, k_subject);
    *found = text || id || subject;
    if (!*found)
        return 0;
    if ((text != NULL) + (id != NULL) + (subject != NULL) > 1) {
        serr_set(e, path, "give one of %s, %s or %s", k_text, k_id, k_subject);
        return ERR_UNPROCESSABLE;
    }
    if (text) {
        snprintf(p, sizeof p, "%s/%s", path, k_text);
        if (!json_is_string(text)) {
            serr_set(e, p, "must be a string");
            return ERR_UNPROCESSABLE;
        }
        struct serr se = {{0}, {0}};
        int rc;
        if (type == SFMT_SCHEMA_AVRO) {
            rc = avro_schema_parse(json_string_value(text), json_string_length(text),
                                   &d->avro_own[slot], &se);
            *avro = d->avro_own[slot];
        } else {
            rc = proto_schema_parse(json_string_value(text), json_string_length(text), NULL, NULL,
                                    &d->proto_own, &se);
            *proto = d->proto_own;
        }
        if (rc) {
            serr_set(e, p, "schema does not parse at %s: %s", se.path, se.msg);
            return ERR_UNPROCESSABLE;
        }
        return 0;
    }
    struct schema_registry *reg = core_schema(a->core);
    struct id_capture cap = {0};
    if (id) {
        snprintf(p, sizeof p, "%s/%s", path, k_id);
        if (!json_is_integer(id) || json_integer_value(id) < 1 ||
            json_integer_value(id) > UINT32_MAX) {
            serr_set(e, p, "must be a registered schema id (a positive integer)");
            return ERR_UNPROCESSABLE;
        }
        cap.id = (uint32_t)json_integer_value(id);
    } else {
        snprintf(p, sizeof p, "%s/%s", path, k_subject);
        if (!json_is_string(subject)) {
            serr_set(e, p, "must be a string");
            return ERR_UNPROCESSABLE;
        }
        uint32_t version = 0; /* latest */
        json_t *v = json_object_get(dec, k_version);
        if (v && !(json_is_string(v) && strcmp(json_string_value(v), "latest") == 0)) {
            if (!json_is_integer(v) || json_integer_value(v) < 1 ||
                json_integer_value(v) > UINT32_MAX) {
                snprintf(p, sizeof p, "%s/%s", path, k_version);
                serr_set(e, p, "must be a version number or \"latest\"");
                return ERR_UNPROCESSABLE;
            }
            version = (uint32_t)json_integer_value(v);
        }
        int rc = schema_registry_view_version(
            reg, slice_of(json_string_value(subject), json_string_length(subject)), version,
            capture_id, &cap);
        if (rc) {
            serr_set(e, p, "%s", err_message(rc));
            return rc;
        }
    }
    struct serr se = {{0}, {0}};
    int rc = schema_registry_get_by_id(reg, cap.id, &d->ref[slot], &se);
    if (rc) {
        serr_set(e, p, "schema %u: %s%s%s", cap.id, err_message(rc), se.msg[0] ? ": " : "",
                 se.msg);
        return rc;
    }
    if (d->ref[slot]->type != type) {
        serr_set(e, p, "schema %u is a %s schema, not %s", cap.id,
                 schema_type_name(d->ref[slot]->type), schema_type_name(type));
        return ERR_UNPROCESSABLE;
    }
    *avro = d->ref[slot]->avro;
    *proto = d->ref[slot]->proto;
    return 0;
}

/* Build d->fmt from a source's "decode" object (NULL: JSON text). path: "/source/decode". */
int sdecode_open(struct api *a, json_t *dec, const char *path, struct sdecode *d,
                 struct serr *e)
{
    memset(d, 0, sizeof *d);
    if (!dec || json_is_null(dec))
        return sfmt_json_new(&d->fmt);
    char p[160];
    if (!json_is_object(dec)) {
        serr_set(e, path, "must be an object");
        return ERR_UNPROCESSABLE;
    }
    json_t *jt = json_object_get(dec, "type");
    json_t *jenc = json_object_get(dec, "encoding");
    const char *type = json_is_string(jt) ? json_string_value(jt) : "json";
    const char *enc = json_is_string(jenc) ? json_string_value(jenc) : NULL;
    if ((jt && !json_is_string(jt)) || (jenc && !json_is_string(jenc))) {
        snprintf(p, sizeof p, "%s/%s", path, jt && !json_is_string(jt) ? "type" : "encoding");
        serr_set(e, p, "must be a string");
        return ERR_UNPROCESSABLE;
    }
    json_t *aliases = json_object_get(dec, "field_aliases");
    if (aliases && !json_is_object(aliases)) {
        snprintf(p, sizeof p, "%s/field_aliases", path);
        serr_set(e, p, "must be an object {\"field\":[\"alias\",...]}");
        return ERR_UNPROCESSABLE;
    }
    json_t *jdef = json_object_get(dec, "apply_defaults");
    bool apply_defaults = !jdef || json_is_true(jdef);
    bool confluent = strcmp(type, "confluent") == 0 || (enc && strcmp(enc, "confluent") == 0);
    if (confluent)
        return sfmt_confluent_new(schema_registry_sfmt_lookup, schema_registry_sfmt_release,
                                  core_schema(a->core), &d->fmt);
    if (strcmp(type, "json") == 0) {
        if (enc && strcmp(enc, "json") != 0) {
            snprintf(p, sizeof p, "%s/encoding", path);
            serr_set(e, p, "type json has encoding \"json\" only");
            return ERR_UNPROCESSABLE;
        }
        return sfmt_json_new(&d->fmt);
    }
    bool json_enc = false;
    if (enc) {
        if (strcmp(enc, "json") == 0) {
            json_enc = true;
        } else if (strcmp(enc, "binary") != 0) {
            snprintf(p, sizeof p, "%s/encoding", path);
            serr_set(e, p, "encoding must be \"binary\", \"json\" or \"confluent\"");
            return ERR_UNPROCESSABLE;
        }
    }
    bool found;
    int rc;
    if (strcmp(type, "avro") == 0) {
        const struct avro_schema *writer = NULL, *reader = NULL;
        const struct proto_schema *unused = NULL;
        rc = decode_schema(a, dec, "", path, SFMT_SCHEMA_AVRO, d, 0, &writer, &unused, &found, e);
        if (rc)
            return rc;
        if (!found) {
            serr_set(e, path, "an avro decoder needs schema_text, schema_id or subject");
            return ERR_UNPROCESSABLE;
        }
        rc = decode_schema(a, dec, "reader_", path, SFMT_SCHEMA_AVRO, d, 1, &reader, &unused,
                           &found, e);
        if (rc)
            return rc;
        struct serr se = {{0}, {0}};
        if (json_enc)
            rc = sfmt_avro_json_new(reader ? reader : writer, apply_defaults, aliases, &d->fmt,
                                    &se);
        else
            rc = sfmt_avro_new(writer, reader, &d->fmt, &se);
        if (rc) {
            serr_set(e, path, "%s%s%s", se.path, se.path[0] ? ": " : "", se.msg);
            return rc == ERR_NOMEM ? rc : ERR_UNPROCESSABLE;
        }
        return 0;
    }
    if (strcmp(type, "proto") == 0 || strcmp(type, "protobuf") == 0) {
        const struct avro_schema *unused = NULL;
        const struct proto_schema *ps = NULL;
        rc = decode_schema(a, dec, "", path, SFMT_SCHEMA_PROTOBUF, d, 0, &unused, &ps, &found, e);
        if (rc)
            return rc;
        if (!found) {
            serr_set(e, path, "a protobuf decoder needs schema_text, schema_id or subject");
            return ERR_UNPROCESSABLE;
        }
        const struct proto_msg *m;
        json_t *jm = json_object_get(dec, "message");
        if (jm) {
            snprintf(p, sizeof p, "%s/message", path);
            if (!json_is_string(jm)) {
                serr_set(e, p, "must be a message name");
                return ERR_UNPROCESSABLE;
            }
            m = proto_message_by_name(ps, json_string_value(jm));
            if (!m) {
                serr_set(e, p, "no message named \"%s\" in the schema", json_string_value(jm));
                return ERR_UNPROCESSABLE;
            }
        } else {
            m = proto_message_by_index(ps, NULL, 0);
            if (!m) {
                serr_set(e, path, "the schema defines no message");
                return ERR_UNPROCESSABLE;
            }
        }
        struct serr se = {{0}, {0}};
        rc = json_enc ? sfmt_proto_json_new(ps, m, aliases, &d->fmt, &se)
                      : sfmt_proto_new(ps, m, &d->fmt, &se);
        if (rc) {
            serr_set(e, path, "%s%s%s", se.path, se.path[0] ? ": " : "", se.msg);
            return rc == ERR_NOMEM ? rc : ERR_UNPROCESSABLE;
        }
        return 0;
    }
    snprintf(p, sizeof p, "%s/type", path);
    serr_set(e, p, "type must be \"json\", \"avro\", \"proto\" or \"confluent\"");
    return ERR_UNPROCESSABLE;
}

/* ------------------------------------------------------------------------------------------ */
/* Sources: what one side of a query or join reads                                              */





/* Resolve partitions and start offsets on the worker. path: "/source" or "/left". */
int ssource_resolve(struct rctx *x, const struct squery_source *q, const char *path,
                    struct ssource *s, struct serr *e)
{
    struct api *a = x->api;
    struct arena *ar = http_req_arena(x->req);
    char p[160];
    memset(s, 0, sizeof *s);
    snprintf(s->topic, sizeof s->topic, "%s", q->topic);
    snprintf(s->group, sizeof s->group, "%s", q->group);
    struct slice topic = slice_cstr(s->topic), group = slice_cstr(s->group);
    if (!broker_valid_name(topic, BROKER_TOPIC_NAME_MAX)) {
        snprintf(p, sizeof p, "%s/topic", path);
        serr_set(e, p, "invalid topic name");
        return ERR_BAD_NAME;
    }
    if (group.len && !broker_valid_name(group, BROKER_GROUP_NAME_MAX)) {
        snprintf(p, sizeof p, "%s/group", path);
        serr_set(e, p, "invalid group name");
        return ERR_BAD_NAME;
    }
    uint32_t nparts;
    if (broker_partitions(a->broker, topic, &nparts)) {
        snprintf(p, sizeof p, "%s/topic", path);
        serr_set(e, p, "topic \"%s\" does not exist", s->topic);
        return ERR_NO_TOPIC;
    }
    s->nparts = q->all_partitions ? nparts : q->partition_count;
    s->parts = arena_alloc(ar, (s->nparts ? s->nparts : 1) * sizeof *s->parts);
    if (!s->parts)
        return ERR_NOMEM;
    for (uint32_t i = 0; i < s->nparts; i++) {
        uint32_t pn = q->all_partitions ? i : q->partitions[i];
        if (pn >= nparts) {
            snprintf(p, sizeof p, "%s/partition%s", path, q->partition_count > 1 ? "s" : "");
            serr_set(e, p, "topic \"%s\" has %u partitions (0..%u); %u is out of range", s->topic,
                     nparts, nparts - 1, pn);
            return ERR_BAD_PARTITION;
        }
        for (uint32_t j = 0; j < i; j++)
            if (s->parts[j].partition == pn) {
                snprintf(p, sizeof p, "%s/partitions", path);
                serr_set(e, p, "partition %u is listed twice", pn);
                return ERR_UNPROCESSABLE;
            }
        struct spart *sp = &s->parts[i];
        memset(sp, 0, sizeof *sp);
        sp->partition = pn;
        uint64_t start = 0, committed;
        if (q->has_offset)
            start = q->offset;
        else if (group.len && broker_committed(a->broker, topic, group, pn, &committed) == 0)
            start = committed; /* the committed offset is the next one to read */
        if (q->has_from_ms) {
            uint64_t t_off;
            if (broker_offset_for_time(a->broker, topic, pn, q->from_ms, &t_off) == 0 &&
                t_off > start)
                start = t_off;
        }
        sp->start = sp->next = start;
    }
    s->limit = q->limit;
    s->end_offset = q->has_end_offset ? q->end_offset : UINT64_MAX;
    s->has_from = q->has_from_ms;
    s->has_to = q->has_to_ms;
    s->from_ms = q->from_ms;
    s->to_ms = q->to_ms;
    s->commit = q->commit;
    if (s->commit && !group.len) {
        snprintf(p, sizeof p, "%s/commit", path);
        serr_set(e, p, "commit needs a group");
        return ERR_UNPROCESSABLE;
    }
    return 0;
}

/* One record from a partition log to the engine. Returns 0 to go on, 1 to stop before/after. */
typedef int (*ssource_feed_fn)(void *ctx, const struct srec *r);

struct read_ctx {
    struct ssource *s;
    struct spart *sp;
    ssource_feed_fn feed;
    void *feed_ctx;
    int err;        /* engine error: stops everything */
    uint64_t left;  /* records the source may still consume (hard) */
    uint64_t quota; /* records this round should consume (soft: ends at a batch boundary) */
};

static int read_visit(void *ctx, const struct plog_record *pr)
{
    struct read_ctx *c = ctx;
    struct spart *sp = c->sp;
    if (pr->offset >= c->s->end_offset || (c->s->has_to && pr->timestamp_ms >= c->s->to_ms)) {
        /* a bound of the request: this record is not consumed */
        sp->done = true;
        return 1;
    }
    sp->next = pr->offset + 1;
    /* records stamped before from_ms are still fed: the query engine counts them
     * (stats.out_of_time_range); a join side has no time range */
    struct shdr hdrs[ENTRY_HEADERS_MAX];
    size_t nh = pr->header_count < ENTRY_HEADERS_MAX ? pr->header_count : ENTRY_HEADERS_MAX;
    for (size_t i = 0; i < nh; i++) {
        hdrs[i].name = pr->headers[i].key;
        hdrs[i].value = pr->headers[i].value;
    }
    struct srec r = {
        .partition = sp->partition,
        .offset = pr->offset,
        .timestamp_ms = pr->timestamp_ms,
        .key = pr->key,
        .has_key = pr->has_key,
        .headers = hdrs,
        .header_count = nh,
        .value = pr->value,
    };
    sp->read++;
    c->s->consumed++;
    c->left--;
    if (c->quota)
        c->quota--;
    int rc = c->feed(c->feed_ctx, &r);
    if (rc < 0) {
        c->err = rc;
        return 1;
    }
    /* A round ends at a stored batch's end: stopping inside a batch would make the next read
     * decode (and CRC-check) that batch again from its start. */
    return c->left == 0 || rc > 0 || (c->quota == 0 && pr->batch_end);
}

/* Read one round of partition sp: about `quota` records (to the end of the batch holding the
 * quota-th), at most `max`. Returns 0 or an error (engine or log). */
static int ssource_read_chunk(struct api *a, struct ssource *s, struct spart *sp, uint64_t max,
                              uint64_t quota, ssource_feed_fn feed, void *feed_ctx)
{
    if (sp->done || max == 0)
        return 0;
    struct read_ctx c = {s, sp, feed, feed_ctx, 0, max, quota ? quota : 1};
    struct plog_read_result res;
    memset(&res, 0, sizeof res);
    uint64_t hw = 0, start = 0;
    uint64_t from = sp->next;
    int rc = broker_read(a->broker, slice_cstr(s->topic), sp->partition, from,
                         max > SIZE_MAX ? SIZE_MAX : (size_t)max, SIZE_MAX, read_visit, &c, &res,
                         &hw, &start);
    if (rc)
        return rc;
    if (c.err)
        return c.err;
    sp->hw = hw;
    if (res.from_adjusted) {
        sp->adjusted = true;
        if (sp->next < res.next_offset && sp->read == 0 && sp->start < start)
            sp->start = start;
        if (sp->next < start)
            sp->next = start;
    }
    if (!sp->done && sp->next >= hw && !res.more) {
        sp->done = true;
        sp->eol = true;
    }
    return 0;
}

/* Read every partition round-robin until the limit or the end. */
static int ssource_run(struct api *a, struct ssource *s, ssource_feed_fn feed, void *feed_ctx)
{
    for (;;) {
        bool any = false;
        for (uint32_t i = 0; i < s->nparts; i++) {
            struct spart *sp = &s->parts[i];
            if (sp->done)
                continue;
            uint64_t left = s->limit - s->consumed;
            if (left == 0)
                return 0;
            int rc = ssource_read_chunk(a, s, sp, left, SCAN_CHUNK, feed, feed_ctx);
            if (rc)
                return rc;
            any = true;
        }
        if (!any || s->consumed >= s->limit)
            return 0;
    }
}

/* The "source" member of an answer. */
static void ssource_write(struct jw *w, const char *key, const struct ssource *s)
{
    jw_key(w, key);
    jw_obj_open(w);
    jw_kstr(w, "topic", s->topic);
    if (s->group[0])
        jw_kstr(w, "group", s->group);
    else
        jw_knull(w, "group");
    if (s->nparts == 1) {
        jw_ku64(w, "partition", s->parts[0].partition);
        jw_ku64(w, "next_offset", s->parts[0].next);
    }
    jw_ku64(w, "consumed", s->consumed);
    bool eol = true;
    for (uint32_t i = 0; i < s->nparts; i++)
        eol = eol && s->parts[i].eol;
    jw_kbool(w, "end_of_log", eol);
    jw_key(w, "partitions");
    jw_arr_open(w);
    for (uint32_t i = 0; i < s->nparts; i++) {
        const struct spart *sp = &s->parts[i];
        jw_obj_open(w);
        jw_ku64(w, "partition", sp->partition);
        jw_ku64(w, "start_offset", sp->start);
        jw_ku64(w, "next_offset", sp->next);
        jw_ku64(w, "consumed", sp->read);
        jw_ku64(w, "high_watermark", sp->hw);
        jw_kbool(w, "end_of_log", sp->eol);
        if (sp->adjusted)
            jw_kbool(w, "floor_adjusted", true);
        jw_obj_close(w);
    }
    jw_arr_close(w);
    jw_obj_close(w);
}

/* ------------------------------------------------------------------------------------------ */
/* Commits after a call: one ENTRY_COMMIT per partition, chained on the worker                 */

struct commit_item {
    const char *topic, *group;
    uint32_t partition;
    uint64_t offset;
};

struct sjob; /* below */
static void commit_next(struct http_req *req, void *arg);
static void stream_answer(struct rctx *x);

/* ------------------------------------------------------------------------------------------ */
/* Jobs                                                                                         */

enum sjob_kind { SJOB_QUERY, SJOB_JOIN };

struct sjob {
    struct workq_job job;
    struct rctx *x;
    enum sjob_kind kind;
    int err;
    struct serr e;
    struct sbuf out; /* the whole answer on success */
    uint64_t t0_ns;
    /* query */
    struct squery *q;
    struct ssource src;
    struct sdecode dec;
    /* join */
    json_t *req;            /* the request: join_spec's field names point into it */
    struct join_spec spec;
    struct join *j;
    struct ssource side[2];
    struct sdecode jdec[2];
    struct join_result jres;
    /* commits */
    struct commit_item *commits;
    size_t ncommits, committed;
    int commit_err;
};

static void sjob_free(struct sjob *s)
{
    squery_free(s->q);
    s->q = NULL;
    sdecode_close(&s->dec);
    join_free(s->j);
    s->j = NULL;
    sdecode_close(&s->jdec[0]);
    sdecode_close(&s->jdec[1]);
    json_decref(s->req);
    s->req = NULL;
    sbuf_free(&s->out);
    memset(&s->out, 0, sizeof s->out);
}

/* --- query ---------------------------------------------------------------------------------- */

static int query_feed(void *ctx, const struct srec *r)
{
    struct sjob *s = ctx;
    return squery_feed(s->q, r);
}

static void query_run(struct sjob *s)
{
    struct api *a = s->x->api;
    uint32_t parts[SQUERY_PARTITIONS_MAX];
    uint32_t n = s->src.nparts < SQUERY_PARTITIONS_MAX ? s->src.nparts : SQUERY_PARTITIONS_MAX;
    for (uint32_t i = 0; i < n; i++)
        parts[i] = s->src.parts[i].partition;
    int rc = squery_expect_partitions(s->q, parts, n);
    if (!rc)
        rc = ssource_run(a, &s->src, query_feed, s);
    if (rc) {
        s->err = rc;
        const struct serr *qe = squery_error(s->q);
        if (qe && (qe->msg[0] || qe->path[0]))
            s->e = *qe;
        else if (rc == ERR_CORRUPT)
            serr_set(&s->e, "/source", "a stored record failed its checksum");
        return;
    }
    sbuf_init(&s->out, 0);
    struct jw w;
    jw_init(&w, &s->out);
    jw_obj_open(&w);
    jw_kbool(&w, "ok", true);
    rc = squery_finish(s->q, &w);
    if (rc) {
        s->err = rc;
        const struct serr *qe = squery_error(s->q);
        if (qe)
            s->e = *qe;
        return;
    }
    ssource_write(&w, "source", &s->src);
    jw_ku64(&w, "took_us", (clock_mono_ns() - s->t0_ns) / 1000);
    jw_obj_close(&w);
    if (!sbuf_ok(&s->out)) {
        s->err = ERR_NOMEM;
        return;
    }
    if (s->src.commit) { /* s->commits was allocated on the worker (the arena is not shared) */
        s->ncommits = s->src.nparts;
        for (uint32_t i = 0; i < s->src.nparts; i++)
            s->commits[i] = (struct commit_item){s->src.topic, s->src.group,
                                                 s->src.parts[i].partition, s->src.parts[i].next};
    }
}

/* --- join: see after the handlers */
static void join_run(struct sjob *s);

/* --- running a job and answering ----------------------------------------------------------- */

static void job_done(struct http_req *req, void *arg);

static void job_fn(struct workq_job *j)
{
    struct sjob *s = (struct sjob *)j;
    if (atomic_load(&s->x->api->stream_stopping)) {
        s->err = ERR_UNAVAILABLE;
        serr_set(&s->e, "", "The server is shutting down");
    } else if (!http_req_orphaned(s->x->req)) { /* the client is gone: skip the scan */
        if (s->kind == SJOB_QUERY)
            query_run(s);
        else
            join_run(s);
    } else {
        s->err = ERR_UNAVAILABLE;
    }
    http_req_post(s->x->req, job_done, s);
}

/* Worker: respond with the job's answer (or its error), then free it. */
static void stream_answer(struct rctx *x)
{
    struct sjob *s = x->area;
    if (!http_req_responded(x->req)) {
        if (s->err) {
            stream_respond_serr(x, s->err, &s->e);
        } else if (s->commit_err) {
            char msg[200];
            snprintf(msg, sizeof msg,
                     "The query ran but committing its offsets failed after %zu of %zu "
                     "partitions: %s", s->committed, s->ncommits, err_message(s->commit_err));
            api_respond_error(x, s->commit_err, msg);
        } else {
            if (s->ncommits) { /* splice "committed":true before the closing brace */
                s->out.len--;
                sbuf_puts(&s->out, ",\"committed\":true}");
            }
            struct sbuf b = s->out;
            memset(&s->out, 0, sizeof s->out);
            api_respond_json(x, 200, &b);
        }
    }
    sjob_free(s);
}

static void commit_answer(struct rctx *x, int phase)
{
    (void)phase;
    struct sjob *s = x->area;
    if (x->prop.err) {
        s->commit_err = x->prop.err;
    } else {
        s->committed++;
    }
    /* The payload is released after this returns: go on from a fresh post. */
    http_req_ref(x->req);
    http_req_post(x->req, commit_next, s);
}

static void commit_next(struct http_req *req, void *arg)
{
    struct sjob *s = arg;
    struct rctx *x = s->x;
    if (http_req_responded(req)) { /* a write timeout answered already */
        sjob_free(s);
        http_req_unref(req);
        return;
    }
    if (s->commit_err || s->committed == s->ncommits) {
        stream_answer(x);
        http_req_unref(req);
        return;
    }
    const struct commit_item *c = &s->commits[s->committed];
    struct entry_commit e = {
        .ts_ms = clock_wall_ms(),
        .topic = slice_cstr(c->topic),
        .group = slice_cstr(c->group),
        .partition = c->partition,
        .offset = c->offset,
    };
    sbuf_init(&x->prop.payload, 0);
    entry_commit_encode(&x->prop.payload, &e);
    api_start_write(x, ENTRY_COMMIT, commit_answer);
    if (http_req_responded(req)) /* the write could not start: answered with its error */
        sjob_free(s);
    http_req_unref(req);
}

static void job_done(struct http_req *req, void *arg)
{
    struct sjob *s = arg;
    if (!s->err && s->ncommits && !http_req_responded(req) && !http_req_orphaned(req)) {
        commit_next(req, s); /* takes over the reference */
        return;
    }
    stream_answer(s->x);
    http_req_unref(req);
}

static void submit_job(struct rctx *x, struct sjob *s)
{
    s->job.fn = job_fn;
    s->x = x;
    x->area = s;
    http_req_ref(x->req);
    int rc = workq_submit(x->api->stream_pool, &s->job);
    if (rc) {
        http_req_unref(x->req);
        sjob_free(s);
        api_respond_error(x, rc, "Too many stream queries are running or queued; retry later");
    }
}

/* --- POST /broker/query --------------------------------------------------------------------- */

static void h_query(struct rctx *x, const struct route_match *m)
{
    (void)m;
    json_t *j = api_json_body_at(x);
    if (!j)
        return;
    struct sjob *s = arena_alloc(http_req_arena(x->req), sizeof *s);
    if (!s) {
        json_decref(j);
        api_respond_error(x, ERR_NOMEM, NULL);
        return;
    }
    memset(s, 0, sizeof *s);
    s->kind = SJOB_QUERY;
    s->t0_ns = clock_mono_ns();
    struct squery_limits lim;
    memset(&lim, 0, sizeof lim);
    const struct api_config *cfg = &x->api->cfg;
    lim.max_records_scanned = cfg->stream_max_records;
    lim.max_groups = (uint32_t)cfg->stream_max_groups;
    lim.max_memory_bytes = cfg->stream_max_memory_bytes;
    lim.max_response_bytes = cfg->stream_max_response_bytes;
    /* fields left 0 take the engine's defaults (squery_compile) */
    int rc = squery_compile(j, &lim, &s->q, &s->e);
    if (!rc)
        rc = ssource_resolve(x, squery_source(s->q), "/source", &s->src, &s->e);
    if (!rc) {
        /* the decoder: in source (ours) or at the top level (the original's clients) */
        json_t *dec = json_object_get(json_object_get(j, "source"), "decode");
        const char *dpath = "/source/decode";
        if (!dec) {
            dec = json_object_get(j, "decode");
            dpath = "/decode";
        }
        rc = sdecode_open(x->api, dec, dpath, &s->dec, &s->e);
    }
    json_decref(j);
    if (!rc) {
        squery_set_format(s->q, s->dec.fmt);
        if (s->src.commit) {
            s->commits = arena_alloc(http_req_arena(x->req),
                                     (s->src.nparts ? s->src.nparts : 1) * sizeof *s->commits);
            if (!s->commits)
                rc = ERR_NOMEM;
        }
    }
    if (rc) {
        /* s lives in the request arena, which answering may free: free it first */
        struct serr e = s->e;
        sjob_free(s);
        stream_respond_serr(x, rc, &e);
        return;
    }
    if (squery_follow(s->q)) { /* a continuous query streams on this worker (stream_follow.c) */
        struct squery *q = s->q;
        struct sdecode dec = s->dec;
        struct ssource src = s->src; /* parts stay in the request arena until it is answered */
        s->q = NULL;
        memset(&s->dec, 0, sizeof s->dec);
        sjob_free(s);
        stream_follow_start(x, q, &dec, &src);
        return;
    }
    submit_job(x, s);
}

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

static void join_run(struct sjob *s)
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

static void h_join(struct rctx *x, const struct route_match *m)
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
        sjob_free(s);
        stream_respond_serr(x, rc, &e);
        return;
    }
    submit_job(x, s);
}

const struct api_route api_stream_routes[] = {
    {"POST", "/broker/query", "query", SCOPE_CONSUME, API_READ, h_query},
    {"POST", "/broker/join", "join", SCOPE_CONSUME, API_READ, h_join},
    API_ROUTES_END,
};
