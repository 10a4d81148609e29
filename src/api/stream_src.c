/* stream_src.c -- the reading side of the stream area: a source's "decode" object into a record
 * decoder (JSON, Avro, Protobuf, the Confluent wire format through the schema registry), a
 * source's topic/partitions/start offsets, and reading partition logs through the same lock-free
 * path as consume (stream_internal.h). See stream.c for the life of a request.
 *
 * Invariants:
 *  1. Records are streamed through the engine in rounds; a partition is never loaded whole. A
 *     round ends at a stored batch's end (a batch is decoded once, not once per round).
 *  2. Partitions are read round-robin, in the order given, so one call is deterministic for a
 *     given log.
 *  3. next_offset of a partition is the offset after the last record the engine consumed.
 */
#include "api/api_internal.h"
#include "api/stream_internal.h"

#include "base/alloc.h"
#include "base/clock.h"
#include "base/err.h"
#include "broker/broker.h"
#include "broker/entry.h"
#include "schema/registry.h"
#include "stream/fmt/avro.h"
#include "stream/fmt/confluent.h"
#include "stream/fmt/json.h"
#include "stream/fmt/proto.h"
#include "core/core.h"

#include <stdio.h>
#include <string.h>

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
int ssource_read_chunk(struct api *a, struct ssource *s, struct spart *sp, uint64_t max,
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
int ssource_run(struct api *a, struct ssource *s, ssource_feed_fn feed, void *feed_ctx)
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
void ssource_write(struct jw *w, const char *key, const struct ssource *s)
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
