/* avro_schema.c -- Avro schema parsing, validation, Parsing Canonical Form, and the JSON -> Avro
 * binary encoder used for defaults and for the Avro JSON encoding.
 *
 * Parsing is two passes over the jansson tree of the schema text:
 *
 *   text --json_loadb--> json_t --parse_type (recursive)--> anode graph
 *                                       |  named types registered before their bodies are
 *                                       |  parsed, so a record may refer to itself
 *                                       v
 *                     pending defaults --check_defaults--> afield.def_bin
 *
 * Defaults are checked in a second pass because a default may be a value of a record whose
 * definition is not finished when the field is seen (recursive types).
 *
 * Invariants:
 *  1. Every node, string and encoded default lives in s->mem; s->json holds the text's tree and
 *     is only read after parsing (defaults point into it). Freed together by avro_schema_free.
 *  2. A named type is defined once; references are pointers to the defining node.
 *  3. Every afield.def is valid for afield.type (a union's default for its first branch) and
 *     def_bin is its binary encoding.
 *  4. Names match [A-Za-z_][A-Za-z0-9_]* per dotted component and respect the limits in
 *     avro_int.h; anything else is ERR_INVALID with a path into the schema.
 */
#include "stream/fmt/avro_int.h"

#include "base/alloc.h"
#include "base/err.h"

#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* ------------------------------------------------------------------------------------------ */
/* Parse context                                                                              */

struct pending {
    struct afield *f;
    const char *path;
};

struct pctx {
    struct avro_schema *s;
    struct serr *e;
    struct anode **named;
    uint32_t nnamed, named_cap;
    struct pending *pend;
    uint32_t npend, pend_cap;
    int rc;
};

static const char *const prim_names[] = {
    [AT_NULL] = "null", [AT_BOOLEAN] = "boolean", [AT_INT] = "int",       [AT_LONG] = "long",
    [AT_FLOAT] = "float", [AT_DOUBLE] = "double", [AT_BYTES] = "bytes",   [AT_STRING] = "string",
};

const char *avro_type_name(const struct anode *t)
{
    switch (t->type) {
    case AT_RECORD:
    case AT_ENUM:
    case AT_FIXED: return t->fullname;
    case AT_ARRAY: return "array";
    case AT_MAP: return "map";
    case AT_UNION: return "union";
    default: return prim_names[t->type];
    }
}

static int prim_type(const char *s)
{
    for (int i = AT_NULL; i <= AT_STRING; i++)
        if (strcmp(s, prim_names[i]) == 0)
            return i;
    return -1;
}

static int fail(struct pctx *c, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail(struct pctx *c, const char *path, const char *fmt, ...)
{
    if (c->rc == 0 && c->e) {
        char msg[240];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
        serr_set(c->e, path, "%s", msg);
    }
    if (c->rc == 0)
        c->rc = ERR_INVALID;
    return c->rc;
}

static int nomem(struct pctx *c)
{
    if (c->rc == 0) {
        serr_set(c->e, "", "out of memory");
        c->rc = ERR_NOMEM;
    }
    return c->rc;
}

/* path + suffix, truncated to fit; suffix "[3]" is glued, a name gets a dot when path != "". */
static void subpath(char *dst, size_t cap, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void subpath(char *dst, size_t cap, const char *path, const char *fmt, ...)
{
    char seg[96];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(seg, sizeof seg, fmt, ap);
    va_end(ap);
    snprintf(dst, cap, "%s%s%s", path, (path[0] && seg[0] != '[') ? "." : "", seg);
}

static struct anode *new_node(struct pctx *c, int type)
{
    if (c->s->nnodes >= AVRO_NODES_MAX) {
        fail(c, "", "schema has more than %d types", AVRO_NODES_MAX);
        return NULL;
    }
    struct anode *n = arena_alloc(&c->s->mem, sizeof *n);
    if (!n) {
        nomem(c);
        return NULL;
    }
    memset(n, 0, sizeof *n);
    n->type = (uint8_t)type;
    n->enum_default = -1;
    n->id = c->s->nnodes++;
    return n;
}

static bool valid_name(const char *s, size_t n)
{
    if (n == 0 || n > AVRO_NAME_MAX)
        return false;
    if (!((s[0] >= 'A' && s[0] <= 'Z') || (s[0] >= 'a' && s[0] <= 'z') || s[0] == '_'))
        return false;
    for (size_t i = 1; i < n; i++) {
        char ch = s[i];
        if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
              ch == '_'))
            return false;
    }
    return true;
}

/* A dotted name: each component valid. Empty is valid only when allow_empty (namespace ""). */
static bool valid_dotted(const char *s, bool allow_empty)
{
    size_t n = strlen(s);
    if (n == 0)
        return allow_empty;
    if (n > AVRO_FULLNAME_MAX)
        return false;
    const char *p = s;
    for (;;) {
        const char *dot = strchr(p, '.');
        size_t len = dot ? (size_t)(dot - p) : strlen(p);
        if (!valid_name(p, len))
            return false;
        if (!dot)
            return true;
        p = dot + 1;
    }
}

static struct anode *find_named(struct pctx *c, const char *fullname)
{
    for (uint32_t i = 0; i < c->nnamed; i++)
        if (strcmp(c->named[i]->fullname, fullname) == 0)
            return c->named[i];
    return NULL;
}

/* Join ns and name into a fullname in the schema arena. */
static char *make_fullname(struct pctx *c, const char *ns, const char *name)
{
    if (strchr(name, '.') || !ns || !ns[0])
        return arena_strndup(&c->s->mem, name, strlen(name));
    size_t a = strlen(ns), b = strlen(name);
    char *p = arena_alloc(&c->s->mem, a + b + 2);
    if (!p)
        return NULL;
    memcpy(p, ns, a);
    p[a] = '.';
    memcpy(p + a + 1, name, b + 1);
    return p;
}

/* Name, namespace, aliases of a named type; registers it. Sets *ns_out to its namespace (in the
 * arena) for the nested definitions. */
static int parse_name(struct pctx *c, json_t *j, struct anode *n, const char *ns, const char *path,
                      const char **ns_out)
{
    char p2[160];
    json_t *jn = json_object_get(j, "name");
    if (!json_is_string(jn)) {
        subpath(p2, sizeof p2, path, "name");
        return fail(c, p2, "a %s needs a string \"name\"", json_string_value(json_object_get(j, "type")));
    }
    const char *name = json_string_value(jn);
    json_t *jns = json_object_get(j, "namespace");
    if (jns && !json_is_null(jns)) {
        if (!json_is_string(jns) || !valid_dotted(json_string_value(jns), true)) {
            subpath(p2, sizeof p2, path, "namespace");
            return fail(c, p2, "invalid namespace");
        }
        ns = json_string_value(jns);
    }
    if (!valid_dotted(name, false)) {
        subpath(p2, sizeof p2, path, "name");
        return fail(c, p2, "invalid name '%.64s'", name);
    }
    char *full = make_fullname(c, ns, name);
    if (!full)
        return nomem(c);
    if (strlen(full) > AVRO_FULLNAME_MAX) {
        subpath(p2, sizeof p2, path, "name");
        return fail(c, p2, "full name longer than %d bytes", AVRO_FULLNAME_MAX);
    }
    const char *dot = strrchr(full, '.');
    n->fullname = full;
    n->name = dot ? dot + 1 : full;
    if (prim_type(n->name) >= 0 && !dot) {
        subpath(p2, sizeof p2, path, "name");
        return fail(c, p2, "'%s' is a primitive type name", n->name);
    }
    char *own_ns = dot ? arena_strndup(&c->s->mem, full, (size_t)(dot - full))
                       : arena_strndup(&c->s->mem, "", 0);
    if (!own_ns)
        return nomem(c);
    *ns_out = own_ns;
    if (find_named(c, full)) {
        subpath(p2, sizeof p2, path, "name");
        return fail(c, p2, "type '%.64s' is defined twice", full);
    }
    if (c->nnamed >= AVRO_NAMED_MAX)
        return fail(c, path, "more than %d named types", AVRO_NAMED_MAX);
    if (c->nnamed == c->named_cap) {
        uint32_t cap = c->named_cap ? c->named_cap * 2 : 16;
        struct anode **nn = xrealloc(c->named, cap * sizeof *nn);
        if (!nn)
            return nomem(c);
        c->named = nn;
        c->named_cap = cap;
    }
    c->named[c->nnamed++] = n;
    /* Aliases are names in the type's namespace unless dotted. */
    json_t *ja = json_object_get(j, "aliases");
    if (ja) {
        subpath(p2, sizeof p2, path, "aliases");
        if (!json_is_array(ja) || json_array_size(ja) > AVRO_FIELDS_MAX)
            return fail(c, p2, "aliases must be an array of names");
        n->naliases = (uint32_t)json_array_size(ja);
        n->aliases = arena_alloc(&c->s->mem, (n->naliases + 1) * sizeof *n->aliases);
        if (!n->aliases)
            return nomem(c);
        for (uint32_t i = 0; i < n->naliases; i++) {
            json_t *a = json_array_get(ja, i);
            if (!json_is_string(a) || !valid_dotted(json_string_value(a), false))
                return fail(c, p2, "alias %u is not a valid name", i);
            n->aliases[i] = make_fullname(c, own_ns, json_string_value(a));
            if (!n->aliases[i])
                return nomem(c);
        }
    }
    return 0;
}

static void parse_logical(json_t *j, struct anode *n)
{
    json_t *lt = json_object_get(j, "logicalType");
    if (!json_is_string(lt))
        return;
    const char *s = json_string_value(lt);
    int t = n->type;
    /* Per the spec an invalid logical type is ignored: the value is its underlying type. */
    if (strcmp(s, "decimal") == 0 && (t == AT_BYTES || t == AT_FIXED)) {
        json_t *p = json_object_get(j, "precision"), *sc = json_object_get(j, "scale");
        if (!json_is_integer(p) || json_integer_value(p) < 1 || json_integer_value(p) > 1000)
            return;
        long long scale = sc ? (json_is_integer(sc) ? json_integer_value(sc) : -1) : 0;
        if (scale < 0 || scale > json_integer_value(p))
            return;
        if (t == AT_FIXED && n->size < 64) {
            /* digits that fit in size bytes of two's complement: floor(log10(2^(8*size-1)-1)) */
            double max = n->size ? floor(log10(ldexp(1.0, 8 * (int)n->size - 1) - 1)) : 0;
            if ((double)json_integer_value(p) > max)
                return;
        }
        n->logical = AL_DECIMAL;
        n->precision = (int32_t)json_integer_value(p);
        n->scale = (int32_t)scale;
    } else if (strcmp(s, "uuid") == 0 && (t == AT_STRING || (t == AT_FIXED && n->size == 16))) {
        n->logical = AL_UUID;
    } else if (strcmp(s, "date") == 0 && t == AT_INT) {
        n->logical = AL_DATE;
    } else if (strcmp(s, "time-millis") == 0 && t == AT_INT) {
        n->logical = AL_TIME_MILLIS;
    } else if (strcmp(s, "time-micros") == 0 && t == AT_LONG) {
        n->logical = AL_TIME_MICROS;
    } else if (strcmp(s, "timestamp-millis") == 0 && t == AT_LONG) {
        n->logical = AL_TS_MILLIS;
    } else if (strcmp(s, "timestamp-micros") == 0 && t == AT_LONG) {
        n->logical = AL_TS_MICROS;
    } else if (strcmp(s, "local-timestamp-millis") == 0 && t == AT_LONG) {
        n->logical = AL_LOCAL_TS_MILLIS;
    } else if (strcmp(s, "local-timestamp-micros") == 0 && t == AT_LONG) {
        n->logical = AL_LOCAL_TS_MICROS;
    } else if (strcmp(s, "duration") == 0 && t == AT_FIXED && n->size == 12) {
        n->logical = AL_DURATION;
    }
}

static struct anode *parse_type(struct pctx *c, json_t *j, const char *ns, const char *path,
                                int depth);

static int add_pending(struct pctx *c, struct afield *f, const char *path)
{
    if (c->npend == c->pend_cap) {
        uint32_t cap = c->pend_cap ? c->pend_cap * 2 : 16;
        struct pending *np = xrealloc(c->pend, cap * sizeof *np);
        if (!np)
            return nomem(c);
        c->pend = np;
        c->pend_cap = cap;
    }
    const char *p = arena_strndup(&c->s->mem, path, strlen(path));
    if (!p)
        return nomem(c);
    c->pend[c->npend++] = (struct pending){f, p};
    return 0;
}

static int parse_record(struct pctx *c, json_t *j, struct anode *n, const char *ns,
                        const char *path, int depth)
{
    char p2[160], p3[160];
    json_t *jf = json_object_get(j, "fields");
    subpath(p2, sizeof p2, path, "fields");
    if (!json_is_array(jf))
        return fail(c, p2, "a record needs a \"fields\" array");
    size_t nf = json_array_size(jf);
    if (nf > AVRO_FIELDS_MAX)
        return fail(c, p2, "more than %d fields", AVRO_FIELDS_MAX);
    n->n = (uint32_t)nf;
    n->fields = arena_alloc(&c->s->mem, (nf + 1) * sizeof *n->fields);
    if (!n->fields)
        return nomem(c);
    memset(n->fields, 0, (nf + 1) * sizeof *n->fields);
    for (size_t i = 0; i < nf; i++) {
        json_t *f = json_array_get(jf, i);
        struct afield *af = &n->fields[i];
        subpath(p2, sizeof p2, path, "fields[%zu]", i);
        if (!json_is_object(f))
            return fail(c, p2, "a field must be an object");
        json_t *fname = json_object_get(f, "name");
        subpath(p3, sizeof p3, p2, "name");
        if (!json_is_string(fname) ||
            !valid_name(json_string_value(fname), json_string_length(fname)))
            return fail(c, p3, "a field needs a valid \"name\"");
        af->name = json_string_value(fname);
        af->name_len = (uint32_t)json_string_length(fname);
        for (size_t k = 0; k < i; k++)
            if (strcmp(n->fields[k].name, af->name) == 0)
                return fail(c, p3, "duplicate field name '%s'", af->name);
        json_t *ft = json_object_get(f, "type");
        subpath(p3, sizeof p3, p2, "type");
        if (!ft)
            return fail(c, p3, "field '%s' has no type", af->name);
        af->type = parse_type(c, ft, ns, p3, depth + 1);
        if (!af->type)
            return c->rc;
        json_t *order = json_object_get(f, "order");
        if (order) {
            const char *o = json_string_value(order);
            if (!o || (strcmp(o, "ascending") && strcmp(o, "descending") && strcmp(o, "ignore"))) {
                subpath(p3, sizeof p3, p2, "order");
                return fail(c, p3, "order must be ascending, descending or ignore");
            }
        }
        json_t *fa = json_object_get(f, "aliases");
        if (fa) {
            subpath(p3, sizeof p3, p2, "aliases");
            if (!json_is_array(fa) || json_array_size(fa) > AVRO_FIELDS_MAX)
                return fail(c, p3, "aliases must be an array of names");
            af->naliases = (uint32_t)json_array_size(fa);
            af->aliases = arena_alloc(&c->s->mem, (af->naliases + 1) * sizeof *af->aliases);
            if (!af->aliases)
                return nomem(c);
            for (uint32_t k = 0; k < af->naliases; k++) {
                json_t *a = json_array_get(fa, k);
                if (!json_is_string(a) || !valid_name(json_string_value(a), json_string_length(a)))
                    return fail(c, p3, "alias %u is not a valid name", k);
                af->aliases[k] = json_string_value(a);
            }
        }
        json_t *def = json_object_get(f, "default");
        if (def) {
            af->def = def;
            subpath(p3, sizeof p3, p2, "default");
            if (add_pending(c, af, p3))
                return c->rc;
        }
    }
    return 0;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int parse_enum(struct pctx *c, json_t *j, struct anode *n, const char *path)
{
    char p2[160];
    json_t *js = json_object_get(j, "symbols");
    subpath(p2, sizeof p2, path, "symbols");
    if (!json_is_array(js))
        return fail(c, p2, "an enum needs a \"symbols\" array");
    size_t ns = json_array_size(js);
    if (ns > AVRO_SYMBOLS_MAX)
        return fail(c, p2, "more than %d symbols", AVRO_SYMBOLS_MAX);
    n->n = (uint32_t)ns;
    n->symbols = arena_alloc(&c->s->mem, (ns + 1) * sizeof *n->symbols);
    if (!n->symbols)
        return nomem(c);
    for (size_t i = 0; i < ns; i++) {
        json_t *s = json_array_get(js, i);
        subpath(p2, sizeof p2, path, "symbols[%zu]", i);
        if (!json_is_string(s) || !valid_name(json_string_value(s), json_string_length(s)))
            return fail(c, p2, "invalid enum symbol");
        n->symbols[i] = json_string_value(s);
    }
    /* Duplicates: sort a copy (n log n: 65536 symbols must not cost 2^31 compares). */
    if (ns > 1) {
        const char **sorted = xmalloc(ns * sizeof *sorted);
        if (!sorted)
            return nomem(c);
        memcpy(sorted, n->symbols, ns * sizeof *sorted);
        qsort(sorted, ns, sizeof *sorted, cmp_str);
        const char *dup = NULL;
        for (size_t i = 1; i < ns && !dup; i++)
            if (strcmp(sorted[i - 1], sorted[i]) == 0)
                dup = sorted[i];
        xfree(sorted);
        if (dup) {
            size_t at = 0;
            for (size_t i = 0, seen = 0; i < ns; i++)
                if (strcmp(n->symbols[i], dup) == 0 && seen++ == 1)
                    at = i;
            subpath(p2, sizeof p2, path, "symbols[%zu]", at);
            return fail(c, p2, "duplicate symbol '%s'", dup);
        }
    }
    json_t *d = json_object_get(j, "default");
    if (d) {
        subpath(p2, sizeof p2, path, "default");
        if (!json_is_string(d))
            return fail(c, p2, "an enum default must be one of its symbols");
        for (uint32_t i = 0; i < n->n; i++)
            if (strcmp(n->symbols[i], json_string_value(d)) == 0)
                n->enum_default = (int32_t)i;
        if (n->enum_default < 0)
            return fail(c, p2, "default '%.64s' is not a symbol", json_string_value(d));
    }
    return 0;
}

static bool same_branch(const struct anode *a, const struct anode *b)
{
    if (a->type != b->type)
        return false;
    if (a->type == AT_RECORD || a->type == AT_ENUM || a->type == AT_FIXED)
        return strcmp(a->fullname, b->fullname) == 0;
    return true;
}

static struct anode *parse_type(struct pctx *c, json_t *j, const char *ns, const char *path,
                                int depth)
{
    char p2[160];
    if (depth > AVRO_DEPTH_MAX) {
        fail(c, path, "schema nested deeper than %d", AVRO_DEPTH_MAX);
        return NULL;
    }
    if (json_is_string(j)) {
        const char *s = json_string_value(j);
        int pt = prim_type(s);
        if (pt >= 0)
            return new_node(c, pt);
        char full[AVRO_FULLNAME_MAX + 2];
        struct anode *n = NULL;
        if (!strchr(s, '.') && ns && ns[0]) {
            if ((size_t)snprintf(full, sizeof full, "%s.%s", ns, s) < sizeof full)
                n = find_named(c, full);
        }
        if (!n)
            n = find_named(c, s);
        if (!n)
            fail(c, path, "unknown type '%.64s'", s);
        return n;
    }
    if (json_is_array(j)) {
        size_t nb = json_array_size(j);
        if (nb == 0 || nb > AVRO_BRANCHES_MAX) {
            fail(c, path, "a union needs 1 to %d branches", AVRO_BRANCHES_MAX);
            return NULL;
        }
        struct anode *u = new_node(c, AT_UNION);
        if (!u)
            return NULL;
        u->n = (uint32_t)nb;
        u->branches = arena_alloc(&c->s->mem, nb * sizeof *u->branches);
        if (!u->branches) {
            nomem(c);
            return NULL;
        }
        for (size_t i = 0; i < nb; i++) {
            subpath(p2, sizeof p2, path, "[%zu]", i);
            struct anode *b = parse_type(c, json_array_get(j, i), ns, p2, depth + 1);
            if (!b)
                return NULL;
            if (b->type == AT_UNION) {
                fail(c, p2, "a union may not directly contain a union");
                return NULL;
            }
            for (size_t k = 0; k < i; k++)
                if (same_branch(u->branches[k], b)) {
                    fail(c, p2, "union has two branches of type %s", avro_type_name(b));
                    return NULL;
                }
            u->branches[i] = b;
        }
        return u;
    }
    if (!json_is_object(j)) {
        fail(c, path, "a type must be a name, an object or an array (a union)");
        return NULL;
    }
    json_t *jt = json_object_get(j, "type");
    subpath(p2, sizeof p2, path, "type");
    if (!jt) {
        fail(c, p2, "missing \"type\"");
        return NULL;
    }
    if (!json_is_string(jt)) /* {"type": {...}} or {"type": [...]}: the inner type */
        return parse_type(c, jt, ns, p2, depth + 1);
    const char *t = json_string_value(jt);
    struct anode *n;
    int pt = prim_type(t);
    if (pt >= 0) {
        n = new_node(c, pt);
        if (n)
            parse_logical(j, n);
        return n;
    }
    const char *own_ns = ns;
    if (strcmp(t, "record") == 0 || strcmp(t, "error") == 0) {
        if (!(n = new_node(c, AT_RECORD)))
            return NULL;
        n->is_error = t[0] == 'e';
        if (parse_name(c, j, n, ns, path, &own_ns) || parse_record(c, j, n, own_ns, path, depth))
            return NULL;
        return n;
    }
    if (strcmp(t, "enum") == 0) {
        if (!(n = new_node(c, AT_ENUM)) || parse_name(c, j, n, ns, path, &own_ns) ||
            parse_enum(c, j, n, path))
            return NULL;
        return n;
    }
    if (strcmp(t, "fixed") == 0) {
        if (!(n = new_node(c, AT_FIXED)) || parse_name(c, j, n, ns, path, &own_ns))
            return NULL;
        json_t *sz = json_object_get(j, "size");
        if (!json_is_integer(sz) || json_integer_value(sz) < 0 ||
            json_integer_value(sz) > AVRO_FIXED_MAX) {
            subpath(p2, sizeof p2, path, "size");
            fail(c, p2, "a fixed needs a \"size\" from 0 to %u", AVRO_FIXED_MAX);
            return NULL;
        }
        n->size = (uint32_t)json_integer_value(sz);
        parse_logical(j, n);
        return n;
    }
    if (strcmp(t, "array") == 0 || strcmp(t, "map") == 0) {
        bool arr = t[0] == 'a';
        const char *key = arr ? "items" : "values";
        json_t *ji = json_object_get(j, key);
        subpath(p2, sizeof p2, path, "%s", key);
        if (!ji) {
            fail(c, p2, "an %s needs \"%s\"", t, key);
            return NULL;
        }
        if (!(n = new_node(c, arr ? AT_ARRAY : AT_MAP)))
            return NULL;
        n->items = parse_type(c, ji, ns, p2, depth + 1);
        return n->items ? n : NULL;
    }
    /* {"type": "com.x.Name"}: a reference. */
    return parse_type(c, jt, ns, p2, depth + 1);
}

/* ------------------------------------------------------------------------------------------ */
/* JSON -> Avro binary                                                                        */

static void put_long(struct sbuf *o, int64_t v) { sbuf_put_uvarint(o, ((uint64_t)v << 1) ^ (uint64_t)(v >> 63)); }

static int why(struct aenc *c, const char *msg)
{
    if (!c->why)
        c->why = msg;
    return -1;
}

/* Decode a JSON string of code points <= 255 (ISO-8859-1 per the spec) into bytes. */
static int latin1(struct aenc *c, json_t *v, struct sbuf *tmp)
{
    const uint8_t *s = (const uint8_t *)json_string_value(v);
    size_t n = json_string_length(v);
    for (size_t i = 0; i < n;) {
        uint8_t ch = s[i];
        if (ch < 0x80) {
            sbuf_putc(tmp, ch);
            i++;
        } else if ((ch & 0xE0) == 0xC0 && i + 1 < n) {
            uint32_t cp = (uint32_t)(ch & 0x1F) << 6 | (s[i + 1] & 0x3F);
            if (cp > 255)
                return why(c, "bytes value has a code point above U+00FF");
            sbuf_putc(tmp, (uint8_t)cp);
            i += 2;
        } else {
            return why(c, "bytes value has a code point above U+00FF");
        }
    }
    return 0;
}

static bool json_int_in(json_t *v, int64_t lo, int64_t hi, int64_t *out)
{
    if (json_is_integer(v)) {
        json_int_t x = json_integer_value(v);
        if (x < lo || x > hi)
            return false;
        *out = x;
        return true;
    }
    if (json_is_real(v)) {
        double d = json_real_value(v);
        if (d != floor(d) || d < (double)lo || d >= -(double)INT64_MIN || d > (double)hi)
            return false;
        *out = (int64_t)d;
        return true;
    }
    return false;
}

static json_t *field_value(struct aenc *c, json_t *obj, const struct afield *f)
{
    json_t *v = json_object_get(obj, f->name);
    for (uint32_t i = 0; !v && i < f->naliases; i++)
        v = json_object_get(obj, f->aliases[i]);
    if (!v && c->field_aliases) {
        json_t *al = json_object_get(c->field_aliases, f->name);
        if (json_is_string(al))
            v = json_object_get(obj, json_string_value(al));
        for (size_t i = 0; !v && json_is_array(al) && i < json_array_size(al); i++)
            v = json_object_get(obj, json_string_value(json_array_get(al, i)));
    }
    return v;
}

static bool branch_named(const struct anode *b, const char *key)
{
    const char *n = avro_type_name(b);
    if (strcmp(n, key) == 0)
        return true;
    return (b->type == AT_RECORD || b->type == AT_ENUM || b->type == AT_FIXED) &&
           strcmp(b->name, key) == 0;
}

int avro_encode_json(struct aenc *c, const struct anode *t, json_t *v, struct sbuf *out, int depth)
{
    int64_t x;
    if (depth > AVRO_DEPTH_MAX)
        return why(c, "value nested too deep");
    switch (t->type) {
    case AT_NULL: return json_is_null(v) ? 0 : why(c, "expected null");
    case AT_BOOLEAN:
        if (!json_is_boolean(v))
            return why(c, "expected a boolean");
        sbuf_putc(out, json_is_true(v) ? 1 : 0);
        return 0;
    case AT_INT:
        if (!json_int_in(v, INT32_MIN, INT32_MAX, &x))
            return why(c, "expected an int (32-bit integer)");
        put_long(out, x);
        return 0;
    case AT_LONG:
        if (!json_int_in(v, INT64_MIN, INT64_MAX, &x))
            return why(c, "expected a long (64-bit integer)");
        put_long(out, x);
        return 0;
    case AT_FLOAT: {
        if (!json_is_number(v))
            return why(c, "expected a number");
        double d = json_number_value(v);
        if (isfinite(d) && fabs(d) > FLT_MAX)
            return why(c, "number out of float range");
        float f = (float)d;
        uint32_t u;
        memcpy(&u, &f, 4);
        sbuf_put_le32(out, u);
        return 0;
    }
    case AT_DOUBLE: {
        if (!json_is_number(v))
            return why(c, "expected a number");
        double d = json_number_value(v);
        uint64_t u;
        memcpy(&u, &d, 8);
        sbuf_put_le64(out, u);
        return 0;
    }
    case AT_STRING:
        if (!json_is_string(v))
            return why(c, "expected a string");
        sbuf_put_varint(out, (int64_t)json_string_length(v));
        sbuf_append(out, json_string_value(v), json_string_length(v));
        return 0;
    case AT_BYTES:
    case AT_FIXED: {
        if (!json_is_string(v))
            return why(c, "expected a string of bytes (code points U+0000..U+00FF)");
        struct sbuf tmp;
        sbuf_init(&tmp, 0);
        int rc = latin1(c, v, &tmp);
        if (rc == 0 && !sbuf_ok(&tmp)) {
            c->nomem = true;
            rc = why(c, "out of memory");
        }
        if (rc == 0 && t->type == AT_FIXED && tmp.len != t->size)
            rc = why(c, "fixed value has the wrong length");
        if (rc == 0) {
            if (t->type == AT_BYTES)
                sbuf_put_varint(out, (int64_t)tmp.len);
            sbuf_append(out, tmp.data, tmp.len);
        }
        sbuf_free(&tmp);
        return rc;
    }
    case AT_ENUM: {
        if (!json_is_string(v))
            return why(c, "expected an enum symbol");
        for (uint32_t i = 0; i < t->n; i++)
            if (strcmp(t->symbols[i], json_string_value(v)) == 0) {
                put_long(out, i);
                return 0;
            }
        if (c->mode == AENC_JSON && t->enum_default >= 0) {
            put_long(out, t->enum_default);
            return 0;
        }
        return why(c, "not a symbol of the enum");
    }
    case AT_ARRAY: {
        if (!json_is_array(v))
            return why(c, "expected an array");
        size_t n = json_array_size(v);
        if (n) {
            put_long(out, (int64_t)n);
            for (size_t i = 0; i < n; i++)
                if (avro_encode_json(c, t->items, json_array_get(v, i), out, depth + 1))
                    return -1;
        }
        put_long(out, 0);
        return 0;
    }
    case AT_MAP: {
        if (!json_is_object(v))
            return why(c, "expected an object (a map)");
        size_t n = json_object_size(v);
        if (n) {
            put_long(out, (int64_t)n);
            const char *k;
            json_t *mv;
            json_object_foreach(v, k, mv)
            {
                sbuf_put_varint(out, (int64_t)strlen(k));
                sbuf_append(out, k, strlen(k));
                if (avro_encode_json(c, t->items, mv, out, depth + 1))
                    return -1;
            }
        }
        put_long(out, 0);
        return 0;
    }
    case AT_RECORD: {
        if (!json_is_object(v))
            return why(c, "expected an object (a record)");
        for (uint32_t i = 0; i < t->n; i++) {
            const struct afield *f = &t->fields[i];
            json_t *fv = c->mode == AENC_JSON ? field_value(c, v, f) : json_object_get(v, f->name);
            struct aenc dc = {AENC_DEFAULT, false, NULL, NULL, false, {0}};
            int rc;
            if (fv) {
                rc = avro_encode_json(c, f->type, fv, out, depth + 1);
            } else if (f->def && (c->mode == AENC_DEFAULT || c->apply_defaults)) {
                rc = avro_encode_json(&dc, f->type, f->def, out, depth + 1);
                if (rc) {
                    c->why = dc.why;
                    c->nomem = dc.nomem;
                }
            } else {
                rc = why(c, c->mode == AENC_JSON && f->def ? "missing field (apply_defaults is off)"
                                                            : "missing field without a default");
            }
            if (rc) {
                if (!c->where[0])
                    snprintf(c->where, sizeof c->where, "%s", f->name);
                return -1;
            }
        }
        return 0;
    }
    case AT_UNION: {
        size_t mark = out->len;
        if (c->mode == AENC_DEFAULT) {
            put_long(out, 0);
            return avro_encode_json(c, t->branches[0], v, out, depth + 1);
        }
        if (json_is_null(v)) {
            for (uint32_t i = 0; i < t->n; i++)
                if (t->branches[i]->type == AT_NULL) {
                    put_long(out, i);
                    return 0;
                }
            return why(c, "null for a union without a null branch");
        }
        if (json_is_object(v) && json_object_size(v) == 1) {
            const char *key = json_object_iter_key(json_object_iter(v));
            for (uint32_t i = 0; i < t->n; i++)
                if (branch_named(t->branches[i], key)) {
                    put_long(out, i);
                    return avro_encode_json(c, t->branches[i], json_object_iter_value(json_object_iter(v)),
                                            out, depth + 1);
                }
        }
        /* Lenient: a bare value that encodes as one of the branches, first match wins. */
        for (uint32_t i = 0; i < t->n; i++) {
            struct aenc tc = *c;
            tc.why = NULL;
            out->len = mark;
            put_long(out, i);
            if (avro_encode_json(&tc, t->branches[i], v, out, depth + 1) == 0)
                return 0;
            if (tc.nomem) {
                c->nomem = true;
                return why(c, "out of memory");
            }
        }
        out->len = mark;
        return why(c, "value matches no branch of the union");
    }
    }
    return why(c, "bad type");
}

/* ------------------------------------------------------------------------------------------ */
/* Public                                                                                     */

static int check_defaults(struct pctx *c)
{
    struct sbuf b;
    sbuf_init(&b, 0);
    for (uint32_t i = 0; i < c->npend && c->rc == 0; i++) {
        struct afield *f = c->pend[i].f;
        struct aenc ec = {AENC_DEFAULT, false, NULL, NULL, false, {0}};
        sbuf_reset(&b);
        if (avro_encode_json(&ec, f->type, f->def, &b, 0)) {
            if (ec.nomem) {
                nomem(c);
                break;
            }
            if (ec.where[0])
                fail(c, c->pend[i].path, "invalid default (field '%s': %s)", ec.where, ec.why);
            else
                fail(c, c->pend[i].path, "invalid default for %s: %s", avro_type_name(f->type),
                     ec.why);
            break;
        }
        if (!sbuf_ok(&b)) {
            nomem(c);
            break;
        }
        uint8_t *p = arena_alloc(&c->s->mem, b.len ? b.len : 1);
        if (!p) {
            nomem(c);
            break;
        }
        if (b.len)
            memcpy(p, b.data, b.len);
        f->def_bin = slice_of(p, b.len);
    }
    sbuf_free(&b);
    return c->rc;
}

int avro_schema_parse(const char *text, size_t len, struct avro_schema **out, struct serr *e)
{
    *out = NULL;
    if (len > AVRO_SCHEMA_TEXT_MAX) {
        serr_set(e, "", "schema text larger than %u bytes", AVRO_SCHEMA_TEXT_MAX);
        return ERR_INVALID;
    }
    json_error_t je;
    json_t *j = json_loadb(text, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
    if (!j) {
        serr_set(e, "", "schema is not JSON: %s (line %d, column %d)", je.text, je.line, je.column);
        return ERR_INVALID;
    }
    struct avro_schema *s = xcalloc(1, sizeof *s);
    if (!s) {
        json_decref(j);
        serr_set(e, "", "out of memory");
        return ERR_NOMEM;
    }
    arena_init(&s->mem, 0);
    s->json = j;
    struct pctx c = {.s = s, .e = e};
    s->root = parse_type(&c, j, "", "", 0);
    if (s->root && c.rc == 0)
        check_defaults(&c);
    int rc = c.rc ? c.rc : (s->root ? 0 : ERR_INVALID);
    xfree(c.named);
    xfree(c.pend);
    if (rc) {
        avro_schema_free(s);
        return rc;
    }
    *out = s;
    return 0;
}

void avro_schema_free(struct avro_schema *s)
{
    if (!s)
        return;
    arena_free(&s->mem);
    json_decref(s->json);
    xfree(s);
}

/* Parsing Canonical Form: [PRIMITIVES] [FULLNAMES] [STRIP] [ORDER] [STRINGS] [INTEGERS]
 * [WHITESPACE]; a named type after its first appearance is its fullname. Names and symbols are
 * restricted to [A-Za-z0-9_.], so no string needs escaping. */
static void canon(const struct anode *t, struct sbuf *o, uint8_t *seen)
{
    switch (t->type) {
    case AT_RECORD:
    case AT_ENUM:
    case AT_FIXED:
        if (seen[t->id]) {
            sbuf_printf(o, "\"%s\"", t->fullname);
            return;
        }
        seen[t->id] = 1;
        sbuf_printf(o, "{\"name\":\"%s\",\"type\":\"%s\"", t->fullname,
                    t->type == AT_RECORD ? (t->is_error ? "error" : "record")
                    : t->type == AT_ENUM ? "enum"
                                         : "fixed");
        if (t->type == AT_RECORD) {
            sbuf_puts(o, ",\"fields\":[");
            for (uint32_t i = 0; i < t->n; i++) {
                sbuf_printf(o, "%s{\"name\":\"%s\",\"type\":", i ? "," : "", t->fields[i].name);
                canon(t->fields[i].type, o, seen);
                sbuf_putc(o, '}');
            }
            sbuf_puts(o, "]}");
        } else if (t->type == AT_ENUM) {
            sbuf_puts(o, ",\"symbols\":[");
            for (uint32_t i = 0; i < t->n; i++)
                sbuf_printf(o, "%s\"%s\"", i ? "," : "", t->symbols[i]);
            sbuf_puts(o, "]}");
        } else {
            sbuf_printf(o, ",\"size\":%u}", t->size);
        }
        return;
    case AT_ARRAY:
    case AT_MAP:
        sbuf_printf(o, "{\"type\":\"%s\",\"%s\":", t->type == AT_ARRAY ? "array" : "map",
                    t->type == AT_ARRAY ? "items" : "values");
        canon(t->items, o, seen);
        sbuf_putc(o, '}');
        return;
    case AT_UNION:
        sbuf_putc(o, '[');
        for (uint32_t i = 0; i < t->n; i++) {
            if (i)
                sbuf_putc(o, ',');
            canon(t->branches[i], o, seen);
        }
        sbuf_putc(o, ']');
        return;
    default: sbuf_printf(o, "\"%s\"", prim_names[t->type]); return;
    }
}

void avro_schema_canonical(const struct avro_schema *s, struct sbuf *out)
{
    uint8_t *seen = xcalloc(s->nnodes ? s->nnodes : 1, 1);
    if (!seen) {
        out->oom = true;
        return;
    }
    canon(s->root, out, seen);
    xfree(seen);
}
