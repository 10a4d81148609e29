/* proto_decode.c -- the descriptor-driven Protobuf wire-format decoder (sfmt_proto_new): extract()
 * walks a record once and captures the requested paths; to_json() renders the proto3 JSON mapping
 * through proto_render.c. Semantics and strictness are listed in proto.h; the wire primitives both
 * files share are at the end of proto_int.h.
 *
 *   extract:  plan(paths, schema) ──▶ walk(record) ──▶ finish(defaults, JSON of whole fields)
 *               per path: the hops     one pass over     SV_MISSING / default / value; JSON by
 *               (field, [i] or key)    the wire bytes,   proto_render_field/_message
 *                                      recursing into every embedded message (validation)
 *   to_json:  proto_render_message (proto_render.c) ──▶ collect occurrences per field ──▶ emit in
 *             field-number order
 *
 * Invariants:
 *  1. Every byte read is preceded by a bounds check against the end of the enclosing message;
 *     lengths are checked against what is left before any pointer arithmetic.
 *  2. Recursion depth is bounded by PROTO_DECODE_DEPTH_MAX (messages, map values, groups).
 *  3. Memory: extract allocates from the scratch arena only for JSON-valued results, merged
 *     (repeated) occurrences of an embedded message, and when more than TGT_CHUNK paths are asked
 *     (they are processed TGT_CHUNK at a time); to_json allocates O(record size + fields of the
 *     messages present) from the arena. The arena's cap turns any excess into ERR_NOMEM.
 *  4. Every error path leaves no heap allocation behind (the one temporary sbuf is freed).
 */
#include "stream/fmt/proto_int.h"

#include "base/alloc.h"
#include "base/err.h"
#include "base/json.h"

#include <string.h>

#define TRY(x)                                                                                     \
    do {                                                                                           \
        int rc_ = (x);                                                                             \
        if (rc_)                                                                                   \
            return rc_;                                                                            \
    } while (0)

/* ---- wire helpers (shared with proto_render.c through proto_int.h) ------------------------- */

/* Skip one field of wire type wt (groups: up to the matching end tag). */
int proto_skip_field(struct dctx *c, const uint8_t **pp, const uint8_t *end, uint32_t wt,
                     uint64_t num, int depth)
{
    struct raw r = {0};
    if (wt == WT_SGROUP) {
        if (depth > PROTO_DECODE_DEPTH_MAX)
            return corrupt(c, "groups nested too deep");
        for (;;) {
            uint64_t tag = 0;
            if (!get_varint(pp, end, &tag))
                return corrupt(c, "unterminated group");
            uint32_t w2 = (uint32_t)(tag & 7);
            if (tag >> 3 == 0 || tag >> 3 > PROTO_FIELD_NUMBER_MAX)
                return corrupt(c, "bad field number");
            if (w2 == WT_EGROUP) {
                if (tag >> 3 != num)
                    return corrupt(c, "mismatched end-group tag");
                return 0;
            }
            TRY(proto_skip_field(c, pp, end, w2, tag >> 3, depth + 1));
        }
    }
    if (wt == WT_EGROUP)
        return corrupt(c, "end-group tag without a start");
    if (!get_value(pp, end, wt, &r))
        return corrupt(c, wt > WT_I32 ? "bad wire type" : "truncated field");
    return 0;
}

int proto_check_packed(struct dctx *c, uint32_t wt, const struct raw *run)
{
    if (wt == WT_I64 && run->len % 8)
        return corrupt(c, "packed run not a multiple of 8 bytes");
    if (wt == WT_I32 && run->len % 4)
        return corrupt(c, "packed run not a multiple of 4 bytes");
    if (wt == WT_VARINT) {
        const uint8_t *p = run->p, *end = run->p + run->len;
        uint64_t u;
        while (p < end)
            if (!get_varint(&p, end, &u))
                return corrupt(c, "bad varint in packed run");
    }
    return 0;
}

/* Append b to a growing arena buffer (merging repeated occurrences of a message). */
int proto_cat(struct dctx *c, const uint8_t **buf, size_t *len, size_t *cap, const uint8_t *p,
              size_t n)
{
    if (!*buf) {
        *buf = p ? p : (const uint8_t *)"";
        *len = n;
        *cap = 0; /* borrowed */
        return 0;
    }
    if (n == 0)
        return 0;
    if (*cap < *len + n) {
        size_t ncap = (*len + n) * 2;
        uint8_t *nb = arena_alloc(c->a, ncap);
        if (!nb)
            return ERR_NOMEM;
        if (*len)
            memcpy(nb, *buf, *len);
        *buf = nb;
        *cap = ncap;
    }
    memcpy((uint8_t *)*buf + *len, p, n);
    *len += n;
    return 0;
}

int proto_parse_entry(struct dctx *c, const struct proto_msg *em, const uint8_t *p,
                      const uint8_t *end, struct proto_entry *e, int depth)
{
    const struct proto_field *kf = &em->fields[0], *vf = &em->fields[1];
    memset(e, 0, sizeof *e);
    e->key.p = e->val.p = (const uint8_t *)"";
    while (p < end) {
        uint64_t tag = 0;
        if (!get_varint(&p, end, &tag))
            return corrupt(c, "truncated tag");
        uint32_t wt = (uint32_t)(tag & 7);
        uint64_t num = tag >> 3;
        if (num == 0 || num > PROTO_FIELD_NUMBER_MAX)
            return corrupt(c, "bad field number");
        const struct proto_field *f = num == 1 ? kf : num == 2 ? vf : NULL;
        if (!f || wire_of[f->type] != wt) {
            TRY(proto_skip_field(c, &p, end, wt, num, depth + 1));
            continue;
        }
        struct raw r = {0};
        if (!get_value(&p, end, wt, &r))
            return corrupt(c, "truncated field");
        if (!check_str(f, &r))
            return corrupt(c, "string is not UTF-8");
        if (num == 1) {
            e->key = r;
            e->has_key = true;
        } else {
            e->val = r;
            e->has_val = true;
        }
    }
    return 0;
}

/* ---- scalar values --------------------------------------------------------------------------- */

static void scalar_sval(const struct proto_field *f, const struct raw *r, struct sval *o)
{
    o->escaped = false;
    o->len = 0;
    switch (f->type) {
    case PT_INT32: o->type = SV_INT; o->i = (int32_t)(uint32_t)r->u; break;
    case PT_SFIXED32: o->type = SV_INT; o->i = (int32_t)(uint32_t)r->u; break;
    case PT_SINT32: o->type = SV_INT; o->i = zz32(r->u); break;
    case PT_UINT32: case PT_FIXED32: o->type = SV_INT; o->i = (uint32_t)r->u; break;
    case PT_INT64: case PT_SFIXED64: o->type = SV_INT; o->i = (int64_t)r->u; break;
    case PT_SINT64: o->type = SV_INT; o->i = zz64(r->u); break;
    case PT_UINT64: case PT_FIXED64:
        if (r->u <= INT64_MAX) {
            o->type = SV_INT;
            o->i = (int64_t)r->u;
        } else {
            o->type = SV_DOUBLE;
            o->d = (double)r->u;
        }
        break;
    case PT_BOOL: o->type = SV_BOOL; o->b = r->u != 0; break;
    case PT_FLOAT: {
        uint32_t b = (uint32_t)r->u;
        float fl;
        memcpy(&fl, &b, 4);
        o->type = SV_DOUBLE;
        o->d = fl;
        break;
    }
    case PT_DOUBLE: o->type = SV_DOUBLE; memcpy(&o->d, &r->u, 8); break;
    case PT_STRING: o->type = SV_STR; o->p = (const char *)r->p; o->len = r->len; break;
    case PT_BYTES: o->type = SV_BYTES; o->p = (const char *)r->p; o->len = r->len; break;
    case PT_ENUM: {
        const char *n = proto_enum_name(f->en, (int32_t)(uint32_t)r->u);
        if (n) {
            o->type = SV_STR;
            o->p = n;
            o->len = (uint32_t)strlen(n);
        } else {
            o->type = SV_INT;
            o->i = (int32_t)(uint32_t)r->u;
        }
        break;
    }
    default: o->type = SV_MISSING; break;
    }
}

static void default_sval(const struct proto_field *f, struct sval *o)
{
    struct raw r = {.u = 0, .p = (const uint8_t *)"", .len = 0};
    if (f->type == PT_ENUM)
        r.u = (uint32_t)f->en->values[0].number;
    scalar_sval(f, &r, o);
}

/* ---- extract: plan ------------------------------------------------------------------------------ */

enum { SEL_NONE = 0, SEL_INDEX, SEL_KEY };
enum { LEAF_SCALAR = 0, LEAF_LIST, LEAF_MAP, LEAF_MSG };

struct hop {
    const struct proto_field *f;
    uint8_t sel;
    int32_t index;
    int32_t seen; /* elements counted so far (SEL_INDEX) */
    const char *key;
    uint32_t keylen;
};

#define TGT_CHUNK 16

struct tgt {
    struct sval *out;
    struct hop hops[SPATH_SEGS_MAX];
    uint8_t nhops;
    uint8_t leaf;
    bool dead, set;
    uint8_t entered;                 /* hops whose containing message was entered */
    const struct proto_msg *leaf_msg; /* message of a LEAF_MSG value */
    const uint8_t *buf;               /* LEAF_MSG bytes, or the container of a LIST/MAP leaf */
    size_t blen, bcap;
    bool have_buf;
};

static void plan(const struct proto_msg *m, const struct spath *p, struct tgt *t)
{
    uint32_t si = 0;
    t->nhops = 0;
    t->dead = p->nseg == 0;
    while (si < p->nseg && !t->dead) {
        const struct spath_seg *seg = &p->seg[si++];
        const struct proto_field *f = seg->name ? proto_field_by_name(m, seg->name, seg->len) : NULL;
        if (!f) {
            t->dead = true;
            break;
        }
        struct hop *h = &t->hops[t->nhops++];
        memset(h, 0, sizeof *h);
        h->f = f;
        const struct proto_msg *next = NULL;
        t->leaf = LEAF_SCALAR;
        t->leaf_msg = NULL;
        if (f->is_map) {
            t->leaf = LEAF_MAP;
            if (si < p->nseg) {
                const struct spath_seg *ks = &p->seg[si++];
                if (!ks->name) {
                    t->dead = true;
                    break;
                }
                h->sel = SEL_KEY;
                h->key = ks->name;
                h->keylen = ks->len;
                const struct proto_field *vf = &f->msg->fields[1];
                t->leaf = vf->type == PT_MESSAGE ? LEAF_MSG : LEAF_SCALAR;
                next = vf->type == PT_MESSAGE ? vf->msg : NULL;
            }
        } else if (f->label == PL_REPEATED) {
            t->leaf = LEAF_LIST;
            if (si < p->nseg) {
                const struct spath_seg *is = &p->seg[si];
                if (is->name) {
                    t->dead = true;
                    break;
                }
                si++;
                h->sel = SEL_INDEX;
                h->index = is->index;
                t->leaf = f->type == PT_MESSAGE ? LEAF_MSG : LEAF_SCALAR;
                next = f->type == PT_MESSAGE ? f->msg : NULL;
            }
        } else if (f->type == PT_MESSAGE) {
            t->leaf = LEAF_MSG;
            next = f->msg;
        }
        if (t->leaf == LEAF_MSG)
            t->leaf_msg = next;
        if (si < p->nseg) {
            if (!next)
                t->dead = true;
            m = next;
        }
    }
}

/* ---- extract: walk ----------------------------------------------------------------------------- */

struct act {
    uint8_t t, h;
};

struct xctx {
    struct dctx c;
    struct tgt *tg;
};

static int walk(struct xctx *x, const struct proto_msg *m, const uint8_t *p, const uint8_t *end,
                int depth, const struct act *acts, uint32_t nact);

static void reset_tgt(struct tgt *t, uint8_t h)
{
    t->set = false;
    t->have_buf = false;
    t->buf = NULL;
    if (t->entered > h + 1)
        t->entered = (uint8_t)(h + 1);
}

/* The LEAF_MSG/LIST/MAP bytes: merged across occurrences. */
static int keep_buf(struct xctx *x, struct tgt *t, const uint8_t *p, size_t n)
{
    if (!t->have_buf) {
        t->have_buf = true;
        t->buf = NULL;
        t->blen = t->bcap = 0;
    }
    return proto_cat(&x->c, &t->buf, &t->blen, &t->bcap, p, n);
}

static inline void set_scalar(struct tgt *t, const struct proto_field *f, const struct raw *r)
{
    scalar_sval(f, r, t->out);
    t->set = true;
}

/* A map entry occurrence for the acts whose hop is this map field. */
static int walk_entry(struct xctx *x, const struct proto_field *f, const struct raw *sub, int depth,
                      const struct act *acts, uint32_t nact)
{
    struct proto_entry e;
    const struct proto_msg *em = f->msg;
    TRY(proto_parse_entry(&x->c, em, sub->p, sub->p + sub->len, &e, depth + 1));
    const struct proto_field *kf = &em->fields[0], *vf = &em->fields[1];
    struct act child[TGT_CHUNK];
    uint32_t nchild = 0;
    char kb[24];
    const char *kt = NULL;
    size_t kl = 0;
    for (uint32_t i = 0; i < nact; i++) {
        struct tgt *t = &x->tg[acts[i].t];
        struct hop *h = &t->hops[acts[i].h];
        if (h->f != f || h->sel != SEL_KEY)
            continue;
        if (!kt) {
            struct raw k = e.key;
            if (!e.has_key)
                k.p = (const uint8_t *)"", k.len = 0, k.u = 0;
            proto_map_key_text(kf, &k, kb, &kt, &kl);
        }
        if (kl != h->keylen || memcmp(kt, h->key, kl) != 0)
            continue;
        bool last = acts[i].h + 1 == t->nhops;
        if (vf->type == PT_MESSAGE) {
            if (last) {
                t->have_buf = false; /* last entry with this key wins */
                TRY(keep_buf(x, t, e.has_val ? e.val.p : (const uint8_t *)"", e.has_val ? e.val.len : 0));
                t->set = true;
            } else {
                reset_tgt(t, acts[i].h);
                child[nchild++] = (struct act){acts[i].t, (uint8_t)(acts[i].h + 1)};
            }
        } else if (e.has_val) {
            set_scalar(t, vf, &e.val);
        } else {
            default_sval(vf, t->out);
            t->set = true;
        }
    }
    if (vf->type == PT_MESSAGE && e.has_val)
        return walk(x, vf->msg, e.val.p, e.val.p + e.val.len, depth + 1, child, nchild);
    if (vf->type == PT_MESSAGE && nchild)
        return walk(x, vf->msg, e.val.p, e.val.p, depth + 1, child, nchild);
    return 0;
}

static int walk(struct xctx *x, const struct proto_msg *m, const uint8_t *p, const uint8_t *end,
                int depth, const struct act *acts, uint32_t nact)
{
    if (depth > PROTO_DECODE_DEPTH_MAX)
        return corrupt(&x->c, "messages nested too deep");
    for (uint32_t i = 0; i < nact; i++) {
        struct tgt *t = &x->tg[acts[i].t];
        if (t->entered < acts[i].h + 1)
            t->entered = (uint8_t)(acts[i].h + 1);
        if (acts[i].h + 1 == t->nhops && (t->leaf == LEAF_LIST || t->leaf == LEAF_MAP) &&
            t->hops[acts[i].h].sel == SEL_NONE)
            TRY(keep_buf(x, t, p, (size_t)(end - p))); /* the container, rendered at the end */
    }
    while (p < end) {
        uint64_t tag = 0;
        if (!get_varint(&p, end, &tag))
            return corrupt(&x->c, "truncated tag");
        uint32_t wt = (uint32_t)(tag & 7);
        uint64_t num = tag >> 3;
        if (num == 0 || num > PROTO_FIELD_NUMBER_MAX)
            return corrupt(&x->c, "bad field number");
        const struct proto_field *f = proto_field_by_num(m, num);
        if (!f) {
            TRY(proto_skip_field(&x->c, &p, end, wt, num, depth + 1));
            continue;
        }
        uint32_t ewt = wire_of[f->type];
        struct raw r = {0};
        if (wt != ewt) {
            if (wt == WT_LEN && f->label == PL_REPEATED && packable(f->type)) {
                if (!get_value(&p, end, WT_LEN, &r))
                    return corrupt(&x->c, "truncated field");
                TRY(proto_check_packed(&x->c, ewt, &r));
                for (uint32_t i = 0; i < nact; i++) {
                    struct tgt *t = &x->tg[acts[i].t];
                    struct hop *h = &t->hops[acts[i].h];
                    if (h->f != f || h->sel != SEL_INDEX)
                        continue;
                    const uint8_t *pp = r.p, *pe = r.p + r.len;
                    struct raw e;
                    while (pp < pe && packed_next(&pp, pe, ewt, &e))
                        if (h->seen++ == h->index)
                            set_scalar(t, f, &e);
                }
                continue;
            }
            TRY(proto_skip_field(&x->c, &p, end, wt, num, depth + 1));
            continue;
        }
        if (!get_value(&p, end, wt, &r))
            return corrupt(&x->c, "truncated field");
        if (f->oneof >= 0) {
            for (uint32_t i = 0; i < nact; i++) {
                struct tgt *t = &x->tg[acts[i].t];
                const struct proto_field *hf = t->hops[acts[i].h].f;
                if (hf != f && hf->oneof == f->oneof)
                    reset_tgt(t, acts[i].h);
            }
        }
        if (f->type != PT_MESSAGE) {
            if (!check_str(f, &r))
                return corrupt(&x->c, "string is not UTF-8");
            for (uint32_t i = 0; i < nact; i++) {
                struct tgt *t = &x->tg[acts[i].t];
                struct hop *h = &t->hops[acts[i].h];
                if (h->f != f)
                    continue;
                if (h->sel == SEL_NONE && f->label != PL_REPEATED)
                    set_scalar(t, f, &r);
                else if (h->sel == SEL_INDEX && h->seen++ == h->index)
                    set_scalar(t, f, &r);
            }
            continue;
        }
        if (f->is_map) {
            TRY(walk_entry(x, f, &r, depth, acts, nact));
            continue;
        }
        struct act child[TGT_CHUNK];
        uint32_t nchild = 0;
        for (uint32_t i = 0; i < nact; i++) {
            struct tgt *t = &x->tg[acts[i].t];
            struct hop *h = &t->hops[acts[i].h];
            if (h->f != f)
                continue;
            bool last = acts[i].h + 1 == t->nhops;
            if (h->sel == SEL_INDEX) {
                if (h->seen++ != h->index)
                    continue;
                if (last) {
                    t->have_buf = false;
                    TRY(keep_buf(x, t, r.p, r.len));
                    t->set = true;
                    continue;
                }
            } else if (f->label == PL_REPEATED) {
                continue; /* whole list: rendered from its container */
            } else if (last) {
                TRY(keep_buf(x, t, r.p, r.len)); /* merged with earlier occurrences */
                t->set = true;
                continue;
            }
            child[nchild++] = (struct act){acts[i].t, (uint8_t)(acts[i].h + 1)};
        }
        TRY(walk(x, f->msg, r.p, r.p + r.len, depth + 1, child, nchild));
    }
    return 0;
}

int proto_validate_msg(struct dctx *c, const struct proto_msg *m, const uint8_t *p, size_t len,
                       int depth)
{
    struct xctx x = {.c = *c, .tg = NULL};
    int rc = walk(&x, m, p, p + len, depth, NULL, 0);
    c->why = x.c.why;
    return rc;
}

/* ---- extract: finish ---------------------------------------------------------------------------- */

static int json_sval(struct xctx *x, struct sbuf *tmp, struct sval *o)
{
    if (!sbuf_ok(tmp))
        return ERR_NOMEM;
    char *d = arena_alloc(x->c.a, tmp->len ? tmp->len : 1);
    if (!d)
        return ERR_NOMEM;
    memcpy(d, tmp->data, tmp->len);
    o->type = SV_JSON;
    o->escaped = false;
    o->p = d;
    o->len = (uint32_t)tmp->len;
    return 0;
}

static int finish(struct xctx *x, struct tgt *t, struct sbuf *tmp)
{
    struct sval *o = t->out;
    if (t->dead) {
        o->type = SV_MISSING;
        return 0;
    }
    const struct hop *h = &t->hops[t->nhops - 1];
    const struct proto_field *f = h->f;
    switch (t->leaf) {
    case LEAF_SCALAR:
        if (t->set)
            return 0;
        if (h->sel == SEL_NONE && !f->presence && t->entered == t->nhops)
            default_sval(f, o);
        else
            o->type = SV_MISSING;
        return 0;
    case LEAF_LIST:
    case LEAF_MAP: {
        if (t->entered != t->nhops || !t->have_buf) {
            o->type = SV_MISSING;
            return 0;
        }
        /* Render field f from the container message (all its occurrences). */
        sbuf_reset(tmp);
        struct jw w;
        jw_init(&w, tmp);
        x->c.jdepth = 0;
        TRY(proto_render_field(&x->c, &w, f, t->buf, t->blen, t->leaf == LEAF_MAP));
        return json_sval(x, tmp, o);
    }
    case LEAF_MSG: {
        if (!t->set || !t->have_buf) {
            o->type = SV_MISSING;
            return 0;
        }
        const struct proto_msg *lm = t->leaf_msg;
        if (lm->wkt == WKT_WRAPPER) {
            struct proto_small sm;
            TRY(proto_scan_small(&x->c, lm, t->buf, t->blen, &sm, 1));
            if (sm.has[1])
                scalar_sval(&lm->fields[0], &sm.v[1], o);
            else
                default_sval(&lm->fields[0], o);
            return 0;
        }
        if (lm->wkt == WKT_TIMESTAMP || lm->wkt == WKT_DURATION) {
            struct proto_small sm;
            char buf[64];
            TRY(proto_scan_small(&x->c, lm, t->buf, t->blen, &sm, 1));
            int rc = proto_time_text(&x->c, lm->wkt, &sm, buf);
            if (rc) {
                o->type = SV_MISSING;
                return 0;
            }
            size_t n = strlen(buf);
            char *d = arena_strndup(x->c.a, buf, n);
            if (!d)
                return ERR_NOMEM;
            o->type = SV_STR;
            o->escaped = false;
            o->p = d;
            o->len = (uint32_t)n;
            return 0;
        }
        sbuf_reset(tmp);
        struct jw w;
        jw_init(&w, tmp);
        x->c.jdepth = 0;
        TRY(proto_render_message(&x->c, &w, lm, t->buf, t->blen, 1));
        return json_sval(x, tmp, o);
    }
    }
    o->type = SV_MISSING;
    return 0;
}

/* ---- the sfmt ------------------------------------------------------------------------------------ */

struct sfmt_proto {
    struct sfmt base;
    const struct proto_schema *s;
    const struct proto_msg *m;
};

static int extract_chunk(const struct sfmt_proto *fp, struct slice rec, const struct spath *paths,
                         size_t n, struct sval *out, struct arena *scratch, const char **err)
{
    struct tgt tg[TGT_CHUNK];
    struct act acts[TGT_CHUNK] = {{0, 0}};
    struct xctx x = {.c = {.s = fp->s, .a = scratch}, .tg = tg};
    uint32_t nact = 0;
    for (size_t i = 0; i < n; i++) {
        struct tgt *t = &tg[i];
        t->out = &out[i];
        t->set = t->have_buf = false;
        t->entered = 0;
        t->buf = NULL;
        t->blen = t->bcap = 0;
        t->out->type = SV_MISSING;
        plan(fp->m, &paths[i], t);
        if (!t->dead)
            acts[nact++] = (struct act){(uint8_t)i, 0};
    }
    int rc = walk(&x, fp->m, rec.ptr, rec.ptr + rec.len, 0, acts, nact);
    struct sbuf tmp;
    sbuf_init(&tmp, 0);
    for (size_t i = 0; i < n && !rc; i++)
        rc = finish(&x, &tg[i], &tmp);
    sbuf_free(&tmp);
    if (rc && err)
        *err = rc == ERR_NOMEM ? "scratch arena full" : x.c.why;
    return rc;
}

static int proto_extract(const struct sfmt *f, struct slice rec, const struct spath *paths,
                         size_t n, struct sval *out, struct arena *scratch, const char **err)
{
    const struct sfmt_proto *fp = (const struct sfmt_proto *)f;
    if (err)
        *err = NULL;
    if (n == 0) {
        /* Still validate the whole record. */
        return extract_chunk(fp, rec, paths, 0, out, scratch, err);
    }
    for (size_t i = 0; i < n; i += TGT_CHUNK) {
        size_t k = n - i < TGT_CHUNK ? n - i : TGT_CHUNK;
        int rc = extract_chunk(fp, rec, paths + i, k, out + i, scratch, err);
        if (rc)
            return rc;
    }
    return 0;
}

static int proto_to_json(const struct sfmt *f, struct slice rec, struct sbuf *out,
                         struct arena *scratch, const char **err)
{
    const struct sfmt_proto *fp = (const struct sfmt_proto *)f;
    struct dctx c = {.s = fp->s, .a = scratch};
    size_t start = out->len;
    struct jw w;
    jw_init(&w, out);
    int rc = proto_render_message(&c, &w, fp->m, rec.ptr, rec.len, 0);
    if (!rc && !sbuf_ok(out)) {
        rc = ERR_NOMEM;
        c.why = "output buffer full";
    }
    if (rc) {
        out->len = start;
        if (err)
            *err = rc == ERR_NOMEM && !c.why ? "scratch arena full" : c.why;
        return rc;
    }
    if (err)
        *err = NULL;
    return 0;
}

static void proto_free(struct sfmt *f) { xfree(f); }

static const struct sfmt_ops proto_ops = {
    .extract = proto_extract, .to_json = proto_to_json, .free = proto_free, .name = "protobuf"};

int sfmt_proto_new(const struct proto_schema *s, const struct proto_msg *m, struct sfmt **out,
                   struct serr *e)
{
    if (!s || !m) {
        serr_set(e, "", "no message type");
        return ERR_INVALID;
    }
    struct sfmt_proto *fp = xcalloc(1, sizeof *fp);
    if (!fp)
        return ERR_NOMEM;
    fp->base.ops = &proto_ops;
    fp->s = s;
    fp->m = m;
    *out = &fp->base;
    return 0;
}
