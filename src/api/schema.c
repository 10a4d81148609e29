/* schema.c -- the schema registry area of the API: Confluent Schema Registry compatible routes
 * (docs/HTTP_API.md "Schema registry").
 *
 *   POST /subjects/{s}/versions         register {"schema","schemaType","references"} -> {"id"}
 *   POST /subjects/{s}                  look a schema up in s -> {"subject","id","version","schema"}
 *   GET  /subjects                      ["s", ...]
 *   GET  /subjects/{s}/versions         [1, 2, ...]
 *   GET  /subjects/{s}/versions/{v}     v = 1.. | latest | -1
 *   GET  /subjects/{s}/versions/{v}/schema   the schema text alone
 *   GET  /schemas/ids/{id}              {"schema","schemaType"(not for AVRO),"references"}
 *   GET  /schemas/ids/{id}/schema       the schema text alone
 *   GET  /schemas/types                 ["AVRO","PROTOBUF","JSON"]
 *
 * Registration is a journaled write (ENTRY_SCHEMA_REGISTER) proposed like a KV put: replicated,
 * acknowledged per write concern, redirected (307) by a follower. The worker validates and parses
 * the schema first (schema_registry_prepare); the core assigns ids and versions at apply.
 * Lookups and reads answer from the registry state on the worker (they honour
 * ?consistency=leader like every read).
 *
 * Protobuf schemas register as .proto text (Confluent's way; imports name references) or, with
 * "format":"serialized" in the body, as a base64 google.protobuf.FileDescriptorSet; such a
 * schema is returned as base64 with "format":"serialized".
 *
 * Errors carry both shapes: {"ok":false,"error":"<code>","error_code":<Confluent code>,
 * "message":"...","path":"<where>"}; Confluent codes: 40401 subject, 40402 version, 40403 schema
 * not found, 42201 invalid schema, 42202 invalid version; other errors status*100 (40101 and
 * 40301 for auth). Compatibility checking is not implemented: every subject is at level NONE.
 */
#include "api/api_internal.h"

#include "base/b64.h"
#include "base/clock.h"
#include "base/err.h"
#include "broker/entry.h"
#include "http/url.h"
#include "schema/registry.h"

#include <stdio.h>
#include <string.h>

#define SR_CTYPE "application/vnd.schemaregistry.v1+json"
#define SR_BODY_MAX (8u << 20) /* a 1 MiB schema escaped in JSON, or a base64 descriptor set */

static int confluent_code(int err)
{
    switch (err) {
    case ERR_SUBJECT_NOT_FOUND: return 40401;
    case ERR_VERSION_NOT_FOUND: return 40402;
    case ERR_SCHEMA_NOT_FOUND: return 40403;
    case ERR_SCHEMA_INVALID: return 42201;
    case ERR_VERSION_INVALID: return 42202;
    case ERR_UNAUTHORIZED: return 40101;
    case ERR_FORBIDDEN: return 40301;
    default: return err_http_status(err) * 100;
    }
}

/* The error in both shapes; path (may be NULL/empty) names the offending place. */
static void sr_error(struct rctx *x, int err, const char *msg, const char *path)
{
    struct sbuf extra;
    sbuf_init(&extra, 0);
    struct jw w;
    jw_init(&w, &extra);
    /* jw needs an open container for commas: write members by hand. */
    sbuf_printf(&extra, "\"error_code\":%d", confluent_code(err));
    if (path && path[0]) {
        sbuf_puts(&extra, ",\"path\":");
        jw_str(&w, utf8_valid((const uint8_t *)path, strlen(path)) ? path : "?");
    }
    sbuf_putc(&extra, 0);
    api_respond_error_ex(x, err, msg, sbuf_ok(&extra) ? (const char *)extra.data : NULL, NULL);
    sbuf_free(&extra);
}

static void sr_serr(struct rctx *x, int err, const struct serr *e)
{
    char msg[480];
    if (e->msg[0] && e->path[0])
        snprintf(msg, sizeof msg, "%s at %s: %s", err_message(err), e->path, e->msg);
    else if (e->msg[0])
        snprintf(msg, sizeof msg, "%s: %s", err_message(err), e->msg);
    else
        snprintf(msg, sizeof msg, "%s", err_message(err));
    sr_error(x, err, msg, e->path);
}

static bool sr_subject(struct rctx *x, const struct route_match *m, struct slice *s)
{
    *s = route_param(m, "subject");
    if (schema_validate_subject(*s) == 0)
        return true;
    sr_error(x, ERR_BAD_NAME, "Subject names are 1..255 printable ASCII characters (no spaces)",
             "/subject");
    return false;
}

/* ------------------------------------------------------------------------------------------ */
/* Request bodies                                                                              */

struct sr_req {
    json_t *json;
    struct schema_desc d;
    struct schema_reference refs[SCHEMA_REFS_MAX];
    struct sbuf fds, canon;
};

static void sr_req_free(struct sr_req *q)
{
    json_decref(q->json);
    sbuf_free(&q->fds);
    sbuf_free(&q->canon);
}

/* Parse and validate a {"schema","schemaType","references","format"} body into q (answers the
 * error and returns false). Version -1 in a reference means the subject's latest version. */
static bool sr_parse_body(struct rctx *x, struct sr_req *q)
{
    memset(q, 0, sizeof *q);
    sbuf_init(&q->fds, 0);
    sbuf_init(&q->canon, 0);
    struct slice body = http_req_body(x->req);
    if (body.len > SR_BODY_MAX) {
        sr_error(x, ERR_TOO_LARGE, "Schema request bodies are limited to 8 MiB", NULL);
        return false;
    }
    json_error_t je;
    q->json = json_loadb((const char *)body.ptr, body.len, JSON_REJECT_DUPLICATES, &je);
    if (!q->json || !json_is_object(q->json)) {
        char path[48];
        snprintf(path, sizeof path, "@%d:%d", je.line, je.column);
        sr_error(x, ERR_INVALID_JSON, "Request body must be a JSON object",
                 q->json ? "/" : path);
        return false;
    }
    json_t *js = json_object_get(q->json, "schema");
    if (!json_is_string(js)) {
        sr_error(x, ERR_SCHEMA_INVALID, "Invalid schema: \"schema\" must be a string", "/schema");
        return false;
    }
    struct slice text = slice_of(json_string_value(js), json_string_length(js));
    json_t *jt = json_object_get(q->json, "schemaType");
    uint8_t type = SCHEMA_AVRO;
    if (jt && !json_is_null(jt)) {
        if (!json_is_string(jt) ||
            schema_type_parse(slice_of(json_string_value(jt), json_string_length(jt)), &type)) {
            sr_error(x, ERR_SCHEMA_INVALID,
                     "Invalid schema: schemaType must be AVRO, PROTOBUF or JSON", "/schemaType");
            return false;
        }
    }
    uint8_t flags = 0;
    json_t *jf = json_object_get(q->json, "format");
    if (jf && !json_is_null(jf)) {
        if (!json_is_string(jf) || (strcmp(json_string_value(jf), "serialized") != 0 &&
                                    strcmp(json_string_value(jf), "text") != 0) ||
            (strcmp(json_string_value(jf), "serialized") == 0 && type != SCHEMA_PROTOBUF)) {
            sr_error(x, ERR_SCHEMA_INVALID,
                     "Invalid schema: format must be \"text\", or \"serialized\" (a base64 "
                     "FileDescriptorSet) with schemaType PROTOBUF", "/format");
            return false;
        }
        if (strcmp(json_string_value(jf), "serialized") == 0) {
            if (b64_decode(&q->fds, text.ptr, text.len) || !sbuf_ok(&q->fds)) {
                sr_error(x, ERR_SCHEMA_INVALID, "Invalid schema: not valid base64", "/schema");
                return false;
            }
            text = slice_of(q->fds.data, q->fds.len);
            flags = SCHEMA_F_FDS;
        }
    }
    json_t *jr = json_object_get(q->json, "references");
    size_t nrefs = 0;
    if (jr && !json_is_null(jr)) {
        if (!json_is_array(jr) || json_array_size(jr) > SCHEMA_REFS_MAX) {
            sr_error(x, ERR_SCHEMA_INVALID, "Invalid schema: references must be an array of at "
                     "most 64 {name, subject, version}", "/references");
            return false;
        }
        nrefs = json_array_size(jr);
        for (size_t i = 0; i < nrefs; i++) {
            json_t *o = json_array_get(jr, i);
            char path[64];
            struct slice name, subj;
            json_t *jv = json_is_object(o) ? json_object_get(o, "version") : NULL;
            snprintf(path, sizeof path, "/references/%zu", i);
            if (!json_is_object(o) || !api_json_str(o, "name", &name) ||
                !api_json_str(o, "subject", &subj) || !json_is_integer(jv) ||
                (json_integer_value(jv) < 1 && json_integer_value(jv) != -1) ||
                json_integer_value(jv) > UINT32_MAX) {
                sr_error(x, ERR_SCHEMA_INVALID, "Invalid schema: a reference is {\"name\": "
                         "string, \"subject\": string, \"version\": integer >= 1 or -1}", path);
                return false;
            }
            /* -1 (latest) is 0 until sr_prepare resolves it */
            uint32_t version = json_integer_value(jv) == -1 ? 0 : (uint32_t)json_integer_value(jv);
            q->refs[i] = (struct schema_reference){name, subj, version};
        }
    }
    q->d = (struct schema_desc){type, flags, text, {NULL, 0}, q->refs, nrefs};
    return true;
}

/* Resolve version -1 (latest) references to concrete versions (the journal carries numbers). */
static int latest_fn(void *ctx, uint32_t version, uint32_t id)
{
    (void)id;
    *(uint32_t *)ctx = version;
    return 0;
}

static bool sr_prepare(struct rctx *x, struct sr_req *q)
{
    struct schema_registry *r = core_schema(x->api->core);
    for (size_t i = 0; i < q->d.nrefs; i++) {
        if (q->refs[i].version == 0) {
            uint32_t v = 0;
            if (schema_validate_subject(q->refs[i].subject) == 0)
                schema_registry_versions(r, q->refs[i].subject, latest_fn, &v);
            q->refs[i].version = v ? v : UINT32_MAX; /* none: prepare says which is missing */
        }
    }
    struct serr e;
    memset(&e, 0, sizeof e);
    int rc = schema_registry_prepare(r, &q->d, &q->canon, &e);
    if (rc) {
        sr_serr(x, rc, &e);
        return false;
    }
    return true;
}

/* ------------------------------------------------------------------------------------------ */
/* Writes                                                                                      */

static void answer_register(struct rctx *x, int phase)
{
    (void)phase;
    struct proposal *p = &x->prop;
    if (p->err) {
        const char *msg = NULL;
        if (p->err == ERR_NOSPACE)
            msg = "The schema registry is full (subjects, versions, schemas or bytes limit)";
        else if (p->err == ERR_SCHEMA_INVALID)
            msg = "Invalid schema: a reference names a subject version that does not exist";
        sr_error(x, p->err, msg, p->err == ERR_SCHEMA_INVALID ? "/references" : NULL);
        return;
    }
    struct sbuf b;
    sbuf_init(&b, 0);
    struct jw w;
    jw_init(&w, &b);
    jw_obj_open(&w);
    jw_ku64(&w, "id", p->res.schema_id);
    jw_obj_close(&w);
    api_respond_ctype(x, 200, SR_CTYPE, &b);
}

static void h_register(struct rctx *x, const struct route_match *m)
{
    struct slice subject;
    if (!sr_subject(x, m, &subject))
        return;
    struct sr_req *q = arena_alloc(http_req_arena(x->req), sizeof *q);
    if (!q) {
        sr_error(x, ERR_NOMEM, NULL, NULL);
        return;
    }
    if (!sr_parse_body(x, q) || !sr_prepare(x, q)) {
        sr_req_free(q);
        return;
    }
    static _Thread_local struct entry_schema e; /* large (the refs array) */
    memset(&e, 0, sizeof e);
    e.ts_ms = clock_wall_ms();
    e.subject = subject;
    e.type = q->d.type;
    e.flags = q->d.flags;
    e.text = q->d.text;
    e.canon = q->d.canon;
    e.nrefs = (uint32_t)q->d.nrefs;
    for (size_t i = 0; i < q->d.nrefs; i++)
        e.refs[i] = (struct entry_schema_ref){q->refs[i].name, q->refs[i].subject,
                                              q->refs[i].version};
    sbuf_init(&x->prop.payload, 0);
    entry_schema_encode(&x->prop.payload, &e);
    sr_req_free(q);
    if (!sbuf_ok(&x->prop.payload)) {
        sbuf_free(&x->prop.payload);
        sr_error(x, ERR_NOMEM, NULL, NULL);
        return;
    }
    api_start_write(x, ENTRY_SCHEMA_REGISTER, answer_register);
}

/* ------------------------------------------------------------------------------------------ */
/* Reads                                                                                       */

struct view_out {
    struct sbuf *b;
    bool with_subject; /* subject/version views */
    bool raw;          /* the schema text alone */
};

static void write_schema_members(struct jw *w, const struct schema_view *v)
{
    jw_key(w, "schema");
    if (v->flags & SCHEMA_F_FDS)
        jw_b64(w, v->text.ptr, v->text.len);
    else
        jw_strn(w, v->text.ptr, v->text.len);
    if (v->type != SCHEMA_AVRO)
        jw_kstr(w, "schemaType", schema_type_name(v->type));
    if (v->flags & SCHEMA_F_FDS)
        jw_kstr(w, "format", "serialized");
    if (v->nrefs) {
        jw_key(w, "references");
        jw_arr_open(w);
        for (size_t i = 0; i < v->nrefs; i++) {
            jw_obj_open(w);
            jw_key(w, "name");
            jw_strn(w, v->refs[i].name.ptr, v->refs[i].name.len);
            jw_key(w, "subject");
            jw_strn(w, v->refs[i].subject.ptr, v->refs[i].subject.len);
            jw_ku64(w, "version", v->refs[i].version);
            jw_obj_close(w);
        }
        jw_arr_close(w);
    }
}

static int view_fn(void *ctx, const struct schema_view *v)
{
    struct view_out *o = ctx;
    if (o->raw) {
        if (v->flags & SCHEMA_F_FDS)
            b64_encode(o->b, v->text.ptr, v->text.len);
        else
            sbuf_append(o->b, v->text.ptr, v->text.len);
        return 0;
    }
    struct jw w;
    jw_init(&w, o->b);
    jw_obj_open(&w);
    if (o->with_subject) {
        jw_key(&w, "subject");
        jw_strn(&w, v->subject.ptr, v->subject.len);
        jw_ku64(&w, "version", v->version);
    }
    jw_ku64(&w, "id", v->id);
    write_schema_members(&w, v);
    jw_obj_close(&w);
    return 0;
}

static void h_by_id(struct rctx *x, const struct route_match *m, bool raw)
{
    struct slice ids = route_param(m, "id");
    uint64_t id;
    if (url_parse_u64(ids, &id) || id == 0 || id > UINT32_MAX) {
        sr_error(x, ERR_SCHEMA_NOT_FOUND, "Schema not found: ids are integers >= 1", "/id");
        return;
    }
    struct sbuf b;
    sbuf_init(&b, 0);
    struct view_out o = {&b, false, raw};
    int rc = schema_registry_view_id(core_schema(x->api->core), (uint32_t)id, view_fn, &o);
    if (rc) {
        sbuf_free(&b);
        sr_error(x, rc, NULL, NULL);
        return;
    }
    api_respond_ctype(x, 200, SR_CTYPE, &b);
}

static void h_id(struct rctx *x, const struct route_match *m) { h_by_id(x, m, false); }
static void h_id_schema(struct rctx *x, const struct route_match *m) { h_by_id(x, m, true); }

/* "latest" or -1 -> 0; 1..2^31-1 as is; else ERR_VERSION_INVALID (answered). */
static bool sr_version(struct rctx *x, const struct route_match *m, uint32_t *out)
{
    struct slice s = route_param(m, "version");
    int64_t v;
    if (slice_eq_cstr(s, "latest") || slice_eq_cstr(s, "-1")) {
        *out = 0;
        return true;
    }
    if (url_parse_i64(s, &v) || v < 1 || v > INT32_MAX) {
        sr_error(x, ERR_VERSION_INVALID,
                 "The specified version is not a valid version id: an integer 1..2147483647, "
                 "\"latest\" or -1", "/version");
        return false;
    }
    *out = (uint32_t)v;
    return true;
}

static void h_version_any(struct rctx *x, const struct route_match *m, bool raw)
{
    struct slice subject;
    uint32_t version;
    if (!sr_subject(x, m, &subject) || !sr_version(x, m, &version))
        return;
    struct sbuf b;
    sbuf_init(&b, 0);
    struct view_out o = {&b, true, raw};
    int rc = schema_registry_view_version(core_schema(x->api->core), subject, version, view_fn, &o);
    if (rc) {
        sbuf_free(&b);
        sr_error(x, rc, NULL, NULL);
        return;
    }
    api_respond_ctype(x, 200, SR_CTYPE, &b);
}

static void h_version(struct rctx *x, const struct route_match *m) { h_version_any(x, m, false); }
static void h_version_schema(struct rctx *x, const struct route_match *m)
{
    h_version_any(x, m, true);
}

static int subject_fn(void *ctx, struct slice s)
{
    jw_strn(ctx, s.ptr, s.len);
    return 0;
}

static void h_subjects(struct rctx *x, const struct route_match *m)
{
    (void)m;
    struct sbuf b;
    sbuf_init(&b, 0);
    struct jw w;
    jw_init(&w, &b);
    jw_arr_open(&w);
    int rc = schema_registry_subjects(core_schema(x->api->core), subject_fn, &w);
    if (rc) {
        sbuf_free(&b);
        sr_error(x, rc, NULL, NULL);
        return;
    }
    jw_arr_close(&w);
    api_respond_ctype(x, 200, SR_CTYPE, &b);
}

static int version_fn(void *ctx, uint32_t version, uint32_t id)
{
    (void)id;
    jw_u64(ctx, version);
    return 0;
}

static void h_versions(struct rctx *x, const struct route_match *m)
{
    struct slice subject;
    if (!sr_subject(x, m, &subject))
        return;
    struct sbuf b;
    sbuf_init(&b, 0);
    struct jw w;
    jw_init(&w, &b);
    jw_arr_open(&w);
    int rc = schema_registry_versions(core_schema(x->api->core), subject, version_fn, &w);
    if (rc) {
        sbuf_free(&b);
        sr_error(x, rc, NULL, NULL);
        return;
    }
    jw_arr_close(&w);
    api_respond_ctype(x, 200, SR_CTYPE, &b);
}

static void h_types(struct rctx *x, const struct route_match *m)
{
    (void)m;
    struct sbuf b;
    sbuf_init(&b, 0);
    sbuf_puts(&b, "[\"AVRO\",\"PROTOBUF\",\"JSON\"]");
    api_respond_ctype(x, 200, SR_CTYPE, &b);
}

/* POST /subjects/{s}: is this schema registered under s? */
static void h_lookup(struct rctx *x, const struct route_match *m)
{
    struct slice subject;
    if (!sr_subject(x, m, &subject))
        return;
    struct sr_req *q = arena_alloc(http_req_arena(x->req), sizeof *q);
    if (!q) {
        sr_error(x, ERR_NOMEM, NULL, NULL);
        return;
    }
    if (!sr_parse_body(x, q) || !sr_prepare(x, q)) {
        sr_req_free(q);
        return;
    }
    struct schema_registry *r = core_schema(x->api->core);
    struct schema_result res;
    int rc = schema_registry_lookup(r, subject, &q->d, &res);
    sr_req_free(q);
    if (rc) {
        sr_error(x, rc, NULL, NULL);
        return;
    }
    struct sbuf b;
    sbuf_init(&b, 0);
    struct view_out o = {&b, true, false};
    rc = schema_registry_view_version(r, subject, res.version, view_fn, &o);
    if (rc) {
        sbuf_free(&b);
        sr_error(x, rc, NULL, NULL);
        return;
    }
    api_respond_ctype(x, 200, SR_CTYPE, &b);
}

const struct api_route api_schema_routes[] = {
    {"GET", "/subjects", "sr_subjects", SCOPE_CONSUME, API_READ, h_subjects},
    /* Not API_WRITE: prepare reads the registry (references, "latest"), so a registration waits
     * for the earlier requests of its connection. */
    {"POST", "/subjects/:subject/versions", "sr_register", SCOPE_ADMIN, 0, h_register},
    {"GET", "/subjects/:subject/versions", "sr_versions", SCOPE_CONSUME, API_READ, h_versions},
    {"GET", "/subjects/:subject/versions/:version", "sr_version", SCOPE_CONSUME, API_READ,
     h_version},
    {"GET", "/subjects/:subject/versions/:version/schema", "sr_version", SCOPE_CONSUME, API_READ,
     h_version_schema},
    {"POST", "/subjects/:subject", "sr_lookup", SCOPE_CONSUME, API_READ, h_lookup},
    {"GET", "/schemas/types", "sr_types", SCOPE_CONSUME, API_READ, h_types},
    {"GET", "/schemas/ids/:id", "sr_schema", SCOPE_CONSUME, API_READ, h_id},
    {"GET", "/schemas/ids/:id/schema", "sr_schema", SCOPE_CONSUME, API_READ, h_id_schema},
    API_ROUTES_END,
};
