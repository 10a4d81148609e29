/* proto_parse.c -- a .proto text tokenizer and recursive-descent parser (proto3, and the proto2
 * syntax that is the same) producing the model of proto_int.h.
 *
 *     text ──lex──▶ tokens ──parse_file──▶ files/messages/enums/fields ──proto_link──▶ schema
 *                          (imports recurse into parse_file through the import callback or
 *                           the built-in well-known types)
 *
 * Invariants:
 *  1. Every read of the text is bounds-checked by the lexer; the parser only sees tokens. The
 *     lexer never reads past len (the text need not be NUL-terminated).
 *  2. Recursion is bounded: message nesting <= PROTO_NEST_MAX, import depth <= PROTO_IMPORT_DEPTH,
 *     skipped option aggregates/blocks are walked iteratively with a counter.
 *  3. Every error is ERR_INVALID with e->path "line:col" (or "file:line:col" inside an import) of
 *     the offending token and a message naming what was expected or what is wrong; ERR_NOMEM
 *     past the schema's memory cap.
 *  4. Parsed-and-ignored: options (incl. custom "(x.y)" names and aggregate values), field
 *     defaults, extension ranges, `extend` blocks, services and rpcs, `stream`. Rejected: groups,
 *     `edition`, proto3 `required`, proto2 fields without a label (protoc rejects them too).
 */
#include "stream/fmt/proto_int.h"

#include "base/err.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define PROTO_TEXT_MAX (1u << 20)
#define PROTO_NEST_MAX 32
#define PROTO_IMPORT_DEPTH 16
#define PROTO_FILES_MAX 64
#define PROTO_FIELDS_MAX 10000
#define PROTO_IDENT_MAX 255
#define PROTO_FULLNAME_MAX 1024

enum tkind { T_EOF, T_IDENT, T_INT, T_FLOAT, T_STR, T_SYM };

struct tok {
    uint8_t kind;
    char sym;
    bool int_big; /* T_INT beyond 64 bits */
    const char *p;
    uint32_t len;
    uint32_t line, col;
    uint64_t ival;
};

struct pctx {
    struct proto_schema *s;
    struct serr *e;
    proto_import_fn imp;
    void *ctx;
    const char *stack[PROTO_IMPORT_DEPTH + 1]; /* files being parsed, for cycle detection */
    int depth;
    const char *loaded[PROTO_FILES_MAX];
    int nloaded;
};

struct parser {
    const char *base, *p, *end;
    uint32_t line;
    const char *line_start;
    struct tok t; /* current token */
    struct pctx *c;
    struct proto_file *f;
    const char *fname; /* NULL for the main file */
    bool proto3;
    int nest;
};

/* ---- errors ---------------------------------------------------------------------------------- */

__attribute__((format(printf, 3, 4))) static int perr(struct parser *p, const struct tok *t,
                                                       const char *fmt, ...)
{
    char where[160], msg[240];
    if (p->fname)
        snprintf(where, sizeof where, "%s:%u:%u", p->fname, t->line, t->col);
    else
        snprintf(where, sizeof where, "%u:%u", t->line, t->col);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    serr_set(p->c->e, where, "%s", msg);
    return ERR_INVALID;
}

static int nomem(struct parser *p)
{
    serr_set(p->c->e, "", "schema too large (memory cap)");
    return ERR_NOMEM;
}

#define TRY(x)                                                                                     \
    do {                                                                                           \
        int rc_ = (x);                                                                             \
        if (rc_)                                                                                   \
            return rc_;                                                                            \
    } while (0)

/* ---- lexer ----------------------------------------------------------------------------------- */

static bool is_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
static bool is_digit(char c) { return c >= '0' && c <= '9'; }
static bool is_alnum(char c) { return is_alpha(c) || is_digit(c); }

static int lex(struct parser *p)
{
    struct tok *t = &p->t;
    for (;;) {
        while (p->p < p->end && (*p->p == ' ' || *p->p == '\t' || *p->p == '\r' || *p->p == '\n' ||
                                 *p->p == '\f' || *p->p == '\v')) {
            if (*p->p == '\n') {
                p->line++;
                p->line_start = p->p + 1;
            }
            p->p++;
        }
        if (p->end - p->p >= 2 && p->p[0] == '/' && p->p[1] == '/') {
            while (p->p < p->end && *p->p != '\n')
                p->p++;
            continue;
        }
        if (p->end - p->p >= 2 && p->p[0] == '/' && p->p[1] == '*') {
            struct tok at = {.line = p->line, .col = (uint32_t)(p->p - p->line_start) + 1};
            p->p += 2;
            for (;;) {
                if (p->end - p->p < 2)
                    return perr(p, &at, "unterminated comment");
                if (p->p[0] == '*' && p->p[1] == '/') {
                    p->p += 2;
                    break;
                }
                if (*p->p == '\n') {
                    p->line++;
                    p->line_start = p->p + 1;
                }
                p->p++;
            }
            continue;
        }
        break;
    }
    memset(t, 0, sizeof *t);
    t->line = p->line;
    t->col = (uint32_t)(p->p - p->line_start) + 1;
    t->p = p->p;
    if (p->p >= p->end) {
        t->kind = T_EOF;
        return 0;
    }
    char c = *p->p;
    if (is_alpha(c)) {
        while (p->p < p->end && is_alnum(*p->p))
            p->p++;
        t->kind = T_IDENT;
    } else if (is_digit(c) || (c == '.' && p->end - p->p > 1 && is_digit(p->p[1]))) {
        /* Numbers: decimal, 0x hex, 0 octal, floats with . and exponent. */
        const char *q = p->p;
        bool flt = false;
        if (c == '0' && p->end - q > 1 && (q[1] == 'x' || q[1] == 'X')) {
            q += 2;
            const char *digits = q;
            uint64_t v = 0;
            while (q < p->end && (is_digit(*q) || (*q >= 'a' && *q <= 'f') || (*q >= 'A' && *q <= 'F'))) {
                int d = is_digit(*q) ? *q - '0' : (*q | 0x20) - 'a' + 10;
                if (v >> 60)
                    t->int_big = true;
                v = v << 4 | (uint64_t)d;
                q++;
            }
            if (q == digits)
                return perr(p, t, "malformed hex number");
            t->ival = v;
        } else {
            while (q < p->end && is_digit(*q))
                q++;
            if (q < p->end && *q == '.') {
                flt = true;
                q++;
                while (q < p->end && is_digit(*q))
                    q++;
            }
            if (q < p->end && (*q == 'e' || *q == 'E')) {
                flt = true;
                q++;
                if (q < p->end && (*q == '+' || *q == '-'))
                    q++;
                const char *d0 = q;
                while (q < p->end && is_digit(*q))
                    q++;
                if (q == d0)
                    return perr(p, t, "malformed number");
            }
            if (!flt) {
                bool octal = c == '0' && q - p->p > 1;
                uint64_t v = 0;
                for (const char *d = p->p; d < q; d++) {
                    unsigned dv = (unsigned)(*d - '0');
                    if (octal && dv > 7)
                        return perr(p, t, "malformed octal number");
                    unsigned base = octal ? 8 : 10;
                    if (v > (UINT64_MAX - dv) / base)
                        t->int_big = true;
                    v = v * base + dv;
                }
                t->ival = v;
            }
        }
        if (q < p->end && is_alpha(*q) && !(flt && (*q == 'f' || *q == 'F')))
            return perr(p, t, "malformed number");
        if (q < p->end && (*q == 'f' || *q == 'F'))
            q++;
        p->p = q;
        t->kind = flt ? T_FLOAT : T_INT;
    } else if (c == '"' || c == '\'') {
        const char *q = p->p + 1;
        for (;;) {
            if (q >= p->end || *q == '\n')
                return perr(p, t, "unterminated string");
            if (*q == '\\') {
                q += 2;
                continue;
            }
            if (*q == c)
                break;
            q++;
        }
        p->p = q + 1;
        t->kind = T_STR;
    } else if (strchr("=;{}[]()<>,.-+:/", c) && c) {
        p->p++;
        t->kind = T_SYM;
        t->sym = c;
    } else {
        return perr(p, t, "unexpected character '%c'", c >= 32 && c < 127 ? c : '?');
    }
    t->len = (uint32_t)(p->p - t->p);
    return 0;
}

static bool at_sym(const struct parser *p, char c) { return p->t.kind == T_SYM && p->t.sym == c; }
static bool at_kw(const struct parser *p, const char *kw)
{
    return p->t.kind == T_IDENT && p->t.len == strlen(kw) && memcmp(p->t.p, kw, p->t.len) == 0;
}

static int expect_sym(struct parser *p, char c)
{
    if (!at_sym(p, c))
        return perr(p, &p->t, "expected '%c'", c);
    return lex(p);
}

/* Peek the token after the current one without consuming it. */
static int peek(struct parser *p, struct tok *out)
{
    struct parser save = *p;
    int rc = lex(p);
    *out = p->t;
    struct serr keep = *p->c->e;
    *p = save;
    if (rc)
        *p->c->e = keep;
    return rc;
}

/* Decode the string literal t (escapes per the protobuf text grammar) into the schema arena. */
static int str_value(struct parser *p, const struct tok *t, char **out, size_t *outlen)
{
    char *o = arena_alloc(&p->c->s->mem, t->len + 1);
    if (!o)
        return nomem(p);
    size_t k = 0;
    const char *q = t->p + 1, *end = t->p + t->len - 1;
    while (q < end) {
        char c = *q++;
        if (c != '\\') {
            o[k++] = c;
            continue;
        }
        if (q >= end)
            return perr(p, t, "bad escape in string");
        c = *q++;
        switch (c) {
        case 'n': o[k++] = '\n'; break;
        case 't': o[k++] = '\t'; break;
        case 'r': o[k++] = '\r'; break;
        case 'a': o[k++] = '\a'; break;
        case 'b': o[k++] = '\b'; break;
        case 'f': o[k++] = '\f'; break;
        case 'v': o[k++] = '\v'; break;
        case '\\': case '\'': case '"': case '?': o[k++] = c; break;
        case 'x': case 'X': {
            unsigned v = 0, nd = 0;
            while (q < end && nd < 2 &&
                   (is_digit(*q) || ((*q | 0x20) >= 'a' && (*q | 0x20) <= 'f'))) {
                v = v * 16 + (unsigned)(is_digit(*q) ? *q - '0' : (*q | 0x20) - 'a' + 10);
                q++;
                nd++;
            }
            if (!nd)
                return perr(p, t, "bad \\x escape in string");
            o[k++] = (char)v;
            break;
        }
        default:
            if (c >= '0' && c <= '7') {
                unsigned v = (unsigned)(c - '0'), nd = 1;
                while (q < end && nd < 3 && *q >= '0' && *q <= '7') {
                    v = v * 8 + (unsigned)(*q++ - '0');
                    nd++;
                }
                if (v > 255)
                    return perr(p, t, "bad octal escape in string");
                o[k++] = (char)v;
                break;
            }
            return perr(p, t, "bad escape '\\%c' in string", c >= 32 && c < 127 ? c : '?');
        }
    }
    o[k] = 0;
    *out = o;
    if (outlen)
        *outlen = k;
    return 0;
}

/* One or more adjacent string literals, concatenated. */
static int parse_string(struct parser *p, char **out, size_t *outlen)
{
    if (p->t.kind != T_STR)
        return perr(p, &p->t, "expected a string");
    char *acc = NULL;
    size_t acc_len = 0;
    while (p->t.kind == T_STR) {
        char *s;
        size_t n;
        TRY(str_value(p, &p->t, &s, &n));
        if (acc) {
            char *m = arena_alloc(&p->c->s->mem, acc_len + n + 1);
            if (!m)
                return nomem(p);
            memcpy(m, acc, acc_len);
            memcpy(m + acc_len, s, n + 1);
            acc = m;
            acc_len += n;
        } else {
            acc = s;
            acc_len = n;
        }
        TRY(lex(p));
    }
    *out = acc;
    if (outlen)
        *outlen = acc_len;
    return 0;
}

static int expect_ident(struct parser *p, struct tok *out, const char *what)
{
    if (p->t.kind != T_IDENT)
        return perr(p, &p->t, "expected %s", what);
    if (p->t.len > PROTO_IDENT_MAX)
        return perr(p, &p->t, "identifier longer than %d bytes", PROTO_IDENT_MAX);
    *out = p->t;
    return lex(p);
}

/* ['.'] ident { '.' ident } into the arena (leading dot kept). */
static int parse_type_name(struct parser *p, char **out, struct tok *at)
{
    *at = p->t;
    char buf[PROTO_FULLNAME_MAX + 1];
    size_t k = 0;
    if (at_sym(p, '.')) {
        buf[k++] = '.';
        TRY(lex(p));
    }
    for (;;) {
        struct tok id;
        TRY(expect_ident(p, &id, "a type name"));
        if (k + id.len + 1 > PROTO_FULLNAME_MAX)
            return perr(p, at, "type name too long");
        memcpy(buf + k, id.p, id.len);
        k += id.len;
        if (!at_sym(p, '.'))
            break;
        buf[k++] = '.';
        TRY(lex(p));
    }
    *out = proto_strdup(p->c->s, buf, k);
    return *out ? 0 : nomem(p);
}

/* ---- options (parsed, mostly ignored) -------------------------------------------------------- */

/* Skip a balanced { ... } aggregate (text-format option value). The current token is '{'. */
static int skip_braces(struct parser *p)
{
    struct tok open = p->t;
    uint32_t depth = 0;
    do {
        if (p->t.kind == T_EOF)
            return perr(p, &open, "unterminated '{'");
        if (at_sym(p, '{'))
            depth++;
        else if (at_sym(p, '}'))
            depth--;
        TRY(lex(p));
    } while (depth > 0);
    return 0;
}

/* optionName: (ident | "(" ["."] fullIdent ")") { "." (ident | "(" fullIdent ")") }.
 * Sets *simple to the name when it is one plain identifier (for json_name/packed/allow_alias). */
static int parse_option_name(struct parser *p, struct tok *simple, bool *is_simple)
{
    *is_simple = false;
    bool first = true;
    for (;;) {
        if (at_sym(p, '(')) {
            TRY(lex(p));
            char *name;
            struct tok at;
            TRY(parse_type_name(p, &name, &at));
            TRY(expect_sym(p, ')'));
            first = false;
        } else {
            struct tok id;
            TRY(expect_ident(p, &id, "an option name"));
            if (first && !at_sym(p, '.')) {
                *simple = id;
                *is_simple = true;
            }
            first = false;
        }
        if (!at_sym(p, '.'))
            return 0;
        *is_simple = false;
        TRY(lex(p));
    }
}

/* A constant: ident (full), [-+] number/inf/nan, string(s), or an aggregate. If sval is not NULL
 * and the constant is a string, its value is stored there; bval gets true/false idents. */
static int parse_constant(struct parser *p, char **sval, int *bval)
{
    if (sval)
        *sval = NULL;
    if (bval)
        *bval = -1;
    if (at_sym(p, '{'))
        return skip_braces(p);
    if (p->t.kind == T_STR) {
        char *s;
        TRY(parse_string(p, &s, NULL));
        if (sval)
            *sval = s;
        return 0;
    }
    if (at_sym(p, '-') || at_sym(p, '+'))
        TRY(lex(p));
    if (p->t.kind == T_INT || p->t.kind == T_FLOAT)
        return lex(p);
    if (p->t.kind == T_IDENT) {
        if (bval && at_kw(p, "true"))
            *bval = 1;
        else if (bval && at_kw(p, "false"))
            *bval = 0;
        TRY(lex(p));
        while (at_sym(p, '.')) {
            TRY(lex(p));
            struct tok id;
            TRY(expect_ident(p, &id, "an identifier"));
        }
        return 0;
    }
    return perr(p, &p->t, "expected a constant");
}

/* "option" name "=" constant ";" (the keyword already consumed). */
static int parse_option_stmt(struct parser *p, bool *allow_alias)
{
    struct tok name;
    bool simple;
    TRY(parse_option_name(p, &name, &simple));
    TRY(expect_sym(p, '='));
    int b;
    TRY(parse_constant(p, NULL, &b));
    if (allow_alias && simple && name.len == 11 && memcmp(name.p, "allow_alias", 11) == 0)
        *allow_alias = b == 1;
    return expect_sym(p, ';');
}

/* "[" opt { "," opt } "]" after a field; picks json_name and packed. */
static int parse_field_options(struct parser *p, struct proto_field *f)
{
    TRY(lex(p)); /* '[' */
    for (;;) {
        struct tok name;
        bool simple;
        TRY(parse_option_name(p, &name, &simple));
        TRY(expect_sym(p, '='));
        char *sv;
        int b;
        struct tok vt = p->t;
        TRY(parse_constant(p, &sv, &b));
        if (simple && f && name.len == 9 && memcmp(name.p, "json_name", 9) == 0) {
            if (!sv)
                return perr(p, &vt, "json_name must be a string");
            f->json_name = sv;
        }
        if (at_sym(p, ','))
            TRY(lex(p));
        else
            break;
    }
    return expect_sym(p, ']');
}

/* ---- model helpers --------------------------------------------------------------------------- */

static char *join_name(struct parser *p, const char *scope, const struct tok *id)
{
    size_t sl = strlen(scope);
    if (sl + 1 + id->len > PROTO_FULLNAME_MAX)
        return NULL;
    char *o = arena_alloc(&p->c->s->mem, sl + id->len + 2);
    if (!o)
        return NULL;
    size_t k = 0;
    if (sl) {
        memcpy(o, scope, sl);
        o[sl] = '.';
        k = sl + 1;
    }
    memcpy(o + k, id->p, id->len);
    o[k + id->len] = 0;
    return o;
}

static int add_symbol(struct parser *p, const struct tok *at, const char *full, uint8_t kind,
                      void *ptr)
{
    int rc = proto_sym_add(p->c->s, full, kind, ptr);
    if (rc == ERR_CONFLICT)
        return perr(p, at, "\"%s\" is already defined", full);
    return rc ? nomem(p) : 0;
}

static struct proto_msg *new_msg(struct parser *p, const char *full, const struct tok *id)
{
    struct proto_schema *s = p->c->s;
    struct proto_msg *m = arena_alloc(&s->mem, sizeof *m);
    if (!m)
        return NULL;
    memset(m, 0, sizeof *m);
    m->full_name = full;
    m->name = proto_strdup(s, id->p, id->len);
    m->proto3 = p->proto3;
    if (!m->name || proto_grow(s, (void **)&s->all, &s->acap, s->nall, sizeof *s->all))
        return NULL;
    s->all[s->nall++] = m;
    return m;
}

static struct proto_field *new_field(struct parser *p, struct proto_msg *m)
{
    if (m->nfields >= PROTO_FIELDS_MAX)
        return NULL;
    if (proto_grow(p->c->s, (void **)&m->fields, &m->fcap, m->nfields, sizeof *m->fields))
        return NULL;
    struct proto_field *f = &m->fields[m->nfields++];
    memset(f, 0, sizeof *f);
    f->oneof = -1;
    f->file = p->fname;
    return f;
}

static const struct { const char *kw; uint8_t type; } scalars[] = {
    {"double", PT_DOUBLE},   {"float", PT_FLOAT},       {"int64", PT_INT64},
    {"uint64", PT_UINT64},   {"int32", PT_INT32},       {"fixed64", PT_FIXED64},
    {"fixed32", PT_FIXED32}, {"bool", PT_BOOL},         {"string", PT_STRING},
    {"bytes", PT_BYTES},     {"uint32", PT_UINT32},     {"sfixed32", PT_SFIXED32},
    {"sfixed64", PT_SFIXED64}, {"sint32", PT_SINT32},   {"sint64", PT_SINT64},
};

static uint8_t scalar_type(const struct tok *t)
{
    if (t->kind != T_IDENT)
        return 0;
    for (size_t i = 0; i < sizeof scalars / sizeof scalars[0]; i++)
        if (strlen(scalars[i].kw) == t->len && memcmp(scalars[i].kw, t->p, t->len) == 0)
            return scalars[i].type;
    return 0;
}

/* Field type: a scalar keyword or a message/enum name. */
static int parse_field_type(struct parser *p, struct proto_field *f)
{
    f->line = p->t.line;
    f->col = p->t.col;
    uint8_t st = scalar_type(&p->t);
    if (st) {
        f->type = st;
        return lex(p);
    }
    if (at_kw(p, "group"))
        return perr(p, &p->t, "groups are not supported");
    char *name;
    struct tok at;
    if (p->t.kind != T_IDENT && !at_sym(p, '.'))
        return perr(p, &p->t, "expected a field type");
    TRY(parse_type_name(p, &name, &at));
    f->type_name = name;
    return 0;
}

/* name "=" number [options] ";" -- shared by fields, map fields, oneof members. */
static int parse_field_tail(struct parser *p, struct proto_field *f)
{
    struct tok id;
    TRY(expect_ident(p, &id, "a field name"));
    f->name = proto_strdup(p->c->s, id.p, id.len);
    if (!f->name)
        return nomem(p);
    f->name_len = id.len;
    TRY(expect_sym(p, '='));
    struct tok nt = p->t;
    if (p->t.kind != T_INT)
        return perr(p, &nt, "expected a field number");
    if (p->t.int_big || p->t.ival < 1 || p->t.ival > PROTO_FIELD_NUMBER_MAX)
        return perr(p, &nt, "field number out of range (1..536870911)");
    if (p->t.ival >= 19000 && p->t.ival <= 19999)
        return perr(p, &nt, "field numbers 19000..19999 are reserved for the protobuf implementation");
    f->number = (int32_t)p->t.ival;
    f->line = f->line ? f->line : nt.line;
    TRY(lex(p));
    if (at_sym(p, '['))
        TRY(parse_field_options(p, f));
    if (at_kw(p, "group") || at_sym(p, '{'))
        return perr(p, &p->t, "groups are not supported");
    return expect_sym(p, ';');
}

/* ---- ranges: reserved / extensions ----------------------------------------------------------- */

struct ranges {
    struct { int64_t lo, hi; struct tok at; } r[256];
    int n;
    struct { const char *s; struct tok at; } names[256];
    int nn;
};

static int parse_range_list(struct parser *p, struct ranges *rs, bool names_ok, bool enum_values)
{
    if (names_ok && (p->t.kind == T_STR || p->t.kind == T_IDENT) && !at_kw(p, "max")) {
        for (;;) {
            struct tok at = p->t;
            char *s;
            if (p->t.kind == T_STR) {
                TRY(str_value(p, &p->t, &s, NULL));
                TRY(lex(p));
            } else {
                struct tok id;
                TRY(expect_ident(p, &id, "a reserved name"));
                s = proto_strdup(p->c->s, id.p, id.len);
                if (!s)
                    return nomem(p);
            }
            if (rs && rs->nn < 256) {
                rs->names[rs->nn].s = s;
                rs->names[rs->nn++].at = at;
            }
            if (!at_sym(p, ','))
                break;
            TRY(lex(p));
        }
        return expect_sym(p, ';');
    }
    for (;;) {
        struct tok at = p->t;
        int64_t lo, hi;
        bool neg = false;
        if (enum_values && at_sym(p, '-')) {
            neg = true;
            TRY(lex(p));
        }
        if (p->t.kind != T_INT || p->t.int_big || p->t.ival > INT32_MAX + (uint64_t)neg)
            return perr(p, &p->t, "expected a number in a range");
        lo = neg ? -(int64_t)p->t.ival : (int64_t)p->t.ival;
        hi = lo;
        TRY(lex(p));
        if (at_kw(p, "to")) {
            TRY(lex(p));
            if (at_kw(p, "max")) {
                hi = enum_values ? INT32_MAX : PROTO_FIELD_NUMBER_MAX;
                TRY(lex(p));
            } else {
                neg = false;
                if (enum_values && at_sym(p, '-')) {
                    neg = true;
                    TRY(lex(p));
                }
                if (p->t.kind != T_INT || p->t.int_big || p->t.ival > INT32_MAX + (uint64_t)neg)
                    return perr(p, &p->t, "expected a number or max after 'to'");
                hi = neg ? -(int64_t)p->t.ival : (int64_t)p->t.ival;
                TRY(lex(p));
            }
        }
        if (hi < lo)
            return perr(p, &at, "range end before its start");
        if (rs && rs->n < 256) {
            rs->r[rs->n].lo = lo;
            rs->r[rs->n].hi = hi;
            rs->r[rs->n++].at = at;
        }
        if (at_sym(p, '[')) { /* extension range options */
            TRY(parse_field_options(p, NULL));
        }
        if (!at_sym(p, ','))
            break;
        TRY(lex(p));
    }
    return expect_sym(p, ';');
}

/* ---- enums ---------------------------------------------------------------------------------- */

static int parse_enum(struct parser *p, const char *scope)
{
    struct proto_schema *s = p->c->s;
    TRY(lex(p)); /* "enum" */
    struct tok id;
    TRY(expect_ident(p, &id, "an enum name"));
    char *full = join_name(p, scope, &id);
    if (!full)
        return perr(p, &id, "name too long");
    struct proto_enum *en = arena_alloc(&s->mem, sizeof *en);
    if (!en)
        return nomem(p);
    memset(en, 0, sizeof *en);
    en->full_name = full;
    en->name = proto_strdup(s, id.p, id.len);
    if (!en->name || proto_grow(s, (void **)&s->enums, &s->ecap, s->nenums, sizeof *s->enums))
        return nomem(p);
    s->enums[s->nenums++] = en;
    TRY(add_symbol(p, &id, full, PSYM_ENUM, en));
    TRY(expect_sym(p, '{'));
    bool allow_alias = false;
    struct ranges *rs = arena_alloc(&s->mem, sizeof *rs);
    if (!rs)
        return nomem(p);
    rs->n = rs->nn = 0;
    struct tok *vat = NULL;
    uint32_t vat_cap = 0;
    while (!at_sym(p, '}')) {
        if (p->t.kind == T_EOF)
            return perr(p, &p->t, "unexpected end of file in enum \"%s\"", full);
        if (at_sym(p, ';')) {
            TRY(lex(p));
        } else if (at_kw(p, "option")) {
            TRY(lex(p));
            TRY(parse_option_stmt(p, &allow_alias));
        } else if (at_kw(p, "reserved")) {
            TRY(lex(p));
            TRY(parse_range_list(p, rs, true, true));
        } else {
            struct tok vid;
            TRY(expect_ident(p, &vid, "an enum value name"));
            TRY(expect_sym(p, '='));
            bool neg = false;
            if (at_sym(p, '-')) {
                neg = true;
                TRY(lex(p));
            }
            if (p->t.kind != T_INT || p->t.int_big || p->t.ival > (uint64_t)INT32_MAX + neg)
                return perr(p, &p->t, "expected an enum value number (32-bit)");
            int32_t num = (int32_t)(neg ? -(int64_t)p->t.ival : (int64_t)p->t.ival);
            TRY(lex(p));
            if (at_sym(p, '['))
                TRY(parse_field_options(p, NULL));
            TRY(expect_sym(p, ';'));
            if (p->proto3 && en->nvalues == 0 && num != 0)
                return perr(p, &vid, "the first value of a proto3 enum must be zero");
            if (en->nvalues >= PROTO_FIELDS_MAX)
                return perr(p, &vid, "too many enum values");
            for (uint32_t i = 0; i < en->nvalues; i++)
                if (strlen(en->values[i].name) == vid.len &&
                    memcmp(en->values[i].name, vid.p, vid.len) == 0)
                    return perr(p, &vid, "duplicate enum value name \"%.*s\"", (int)vid.len, vid.p);
            if (proto_grow(s, (void **)&en->values, &en->cap, en->nvalues, sizeof *en->values) ||
                proto_grow(s, (void **)&vat, &vat_cap, en->nvalues, sizeof *vat))
                return nomem(p);
            vat[en->nvalues] = vid;
            en->values[en->nvalues].name = proto_strdup(s, vid.p, vid.len);
            en->values[en->nvalues++].number = num;
            if (!en->values[en->nvalues - 1].name)
                return nomem(p);
        }
    }
    TRY(lex(p)); /* '}' */
    if (en->nvalues == 0)
        return perr(p, &id, "enum \"%s\" has no values", full);
    for (uint32_t i = 0; i < en->nvalues; i++) {
        for (uint32_t j = 0; j < i && !allow_alias; j++)
            if (en->values[j].number == en->values[i].number)
                return perr(p, &vat[i],
                            "enum value number %d is used twice (set option allow_alias = true)",
                            (int)en->values[i].number);
        for (int r = 0; r < rs->n; r++)
            if (en->values[i].number >= rs->r[r].lo && en->values[i].number <= rs->r[r].hi)
                return perr(p, &vat[i], "enum value number %d is reserved", (int)en->values[i].number);
        for (int r = 0; r < rs->nn; r++)
            if (strcmp(en->values[i].name, rs->names[r].s) == 0)
                return perr(p, &vat[i], "enum value name \"%s\" is reserved", en->values[i].name);
    }
    return 0;
}

/* ---- messages -------------------------------------------------------------------------------- */

static int parse_message(struct parser *p, const char *scope, struct proto_msg *parent);

static int add_nested(struct parser *p, struct proto_msg *parent, struct proto_msg *m)
{
    struct proto_schema *s = p->c->s;
    if (parent) {
        if (proto_grow(s, (void **)&parent->nested, &parent->ncap, parent->nnested,
                       sizeof *parent->nested))
            return nomem(p);
        parent->nested[parent->nnested++] = m;
    } else {
        struct proto_file *f = p->f;
        if (proto_grow(s, (void **)&f->msgs, &f->mcap, f->nmsgs, sizeof *f->msgs))
            return nomem(p);
        f->msgs[f->nmsgs++] = m;
    }
    return 0;
}

/* map<K, V> name = N [opts]; -- builds the synthetic NameEntry message at this position. */
static int parse_map_field(struct parser *p, struct proto_msg *m)
{
    struct tok at = p->t;
    TRY(lex(p)); /* map */
    TRY(expect_sym(p, '<'));
    struct proto_field kf = {.oneof = -1}, vf = {.oneof = -1};
    struct tok kt = p->t;
    uint8_t k = scalar_type(&p->t);
    if (!k || k == PT_DOUBLE || k == PT_FLOAT || k == PT_BYTES)
        return perr(p, &kt, "map keys must be an integer, bool or string type");
    TRY(parse_field_type(p, &kf));
    TRY(expect_sym(p, ','));
    if (at_kw(p, "map"))
        return perr(p, &p->t, "map values cannot be maps");
    TRY(parse_field_type(p, &vf));
    TRY(expect_sym(p, '>'));
    struct proto_field *f = new_field(p, m);
    if (!f)
        return m->nfields >= PROTO_FIELDS_MAX ? perr(p, &at, "more than %d fields", PROTO_FIELDS_MAX) : nomem(p);
    f->line = at.line;
    f->col = at.col;
    f->label = PL_REPEATED;
    f->type = PT_MESSAGE;
    f->is_map = true;
    TRY(parse_field_tail(p, f));
    /* Entry message: protoc's MapEntryName: CamelCase of the field name + "Entry". */
    char ename[PROTO_IDENT_MAX + 8];
    size_t n = 0;
    bool up = true;
    for (uint32_t i = 0; i < f->name_len; i++) {
        char c = f->name[i];
        if (c == '_') {
            up = true;
            continue;
        }
        if (up && c >= 'a' && c <= 'z')
            c = (char)(c - 'a' + 'A');
        up = false;
        ename[n++] = c;
    }
    memcpy(ename + n, "Entry", 5);
    n += 5;
    struct tok etok = {.kind = T_IDENT, .p = ename, .len = (uint32_t)n};
    char *full = join_name(p, m->full_name, &etok);
    if (!full)
        return perr(p, &at, "name too long");
    struct proto_msg *em = new_msg(p, full, &etok);
    if (!em)
        return nomem(p);
    em->map_entry = true;
    TRY(add_symbol(p, &at, full, PSYM_MESSAGE, em));
    TRY(add_nested(p, m, em));
    struct proto_field *ek = new_field(p, em), *ev = new_field(p, em);
    if (!ek || !ev)
        return nomem(p);
    *ek = kf;
    ek->name = "key";
    ek->name_len = 3;
    ek->number = 1;
    ek->file = p->fname;
    *ev = vf;
    ev->name = "value";
    ev->name_len = 5;
    ev->number = 2;
    ev->file = p->fname;
    /* Fully qualified so the entry resolves regardless of scope. */
    char *fq = arena_alloc(&p->c->s->mem, strlen(full) + 2);
    if (!fq)
        return nomem(p);
    fq[0] = '.';
    memcpy(fq + 1, full, strlen(full) + 1);
    f->type_name = fq;
    return 0;
}

static int parse_oneof(struct parser *p, struct proto_msg *m)
{
    struct proto_schema *s = p->c->s;
    TRY(lex(p)); /* oneof */
    struct tok id;
    TRY(expect_ident(p, &id, "a oneof name"));
    if (proto_grow(s, (void **)&m->oneofs, &m->ocap, m->noneofs, sizeof *m->oneofs))
        return nomem(p);
    int32_t idx = (int32_t)m->noneofs;
    m->oneofs[m->noneofs++] = proto_strdup(s, id.p, id.len);
    TRY(expect_sym(p, '{'));
    bool any = false;
    while (!at_sym(p, '}')) {
        if (p->t.kind == T_EOF)
            return perr(p, &p->t, "unexpected end of file in oneof");
        if (at_sym(p, ';')) {
            TRY(lex(p));
            continue;
        }
        if (at_kw(p, "option")) {
            TRY(lex(p));
            TRY(parse_option_stmt(p, NULL));
            continue;
        }
        if (at_kw(p, "repeated") || at_kw(p, "optional") || at_kw(p, "required"))
            return perr(p, &p->t, "fields in a oneof cannot have a label");
        if (at_kw(p, "map")) {
            struct tok nx;
            TRY(peek(p, &nx));
            if (nx.kind == T_SYM && nx.sym == '<')
                return perr(p, &p->t, "map fields are not allowed in a oneof");
        }
        struct proto_field *f = new_field(p, m);
        if (!f)
            return m->nfields >= PROTO_FIELDS_MAX ? perr(p, &p->t, "more than %d fields", PROTO_FIELDS_MAX) : nomem(p);
        TRY(parse_field_type(p, f));
        TRY(parse_field_tail(p, f));
        f->oneof = idx;
        f->presence = true;
        any = true;
    }
    if (!any)
        return perr(p, &id, "oneof \"%.*s\" has no fields", (int)id.len, id.p);
    return lex(p);
}

static int check_message(struct parser *p, struct proto_msg *m, const struct ranges *rs)
{
    for (uint32_t i = 0; i < m->nfields; i++) {
        const struct proto_field *f = &m->fields[i];
        struct tok at = {.line = f->line, .col = f->col};
        /* Quadratic, so bounded; duplicate numbers are also caught by proto_link for any size. */
        for (uint32_t j = 0; j < i && m->nfields <= 1024; j++) {
            if (m->fields[j].number == f->number)
                return perr(p, &at, "duplicate field number %d in message \"%s\" (also \"%s\")",
                            (int)f->number, m->full_name, m->fields[j].name);
            if (strcmp(m->fields[j].name, f->name) == 0)
                return perr(p, &at, "duplicate field name \"%s\" in message \"%s\"", f->name,
                            m->full_name);
        }
        for (int r = 0; r < rs->n; r++)
            if (f->number >= rs->r[r].lo && f->number <= rs->r[r].hi)
                return perr(p, &at, "field \"%s\" uses reserved number %d", f->name, (int)f->number);
        for (int r = 0; r < rs->nn; r++)
            if (strcmp(f->name, rs->names[r].s) == 0)
                return perr(p, &at, "field name \"%s\" is reserved", f->name);
    }
    return 0;
}

static int parse_message(struct parser *p, const char *scope, struct proto_msg *parent)
{
    struct proto_schema *s = p->c->s;
    struct tok kw = p->t;
    if (++p->nest > PROTO_NEST_MAX)
        return perr(p, &kw, "messages nested deeper than %d", PROTO_NEST_MAX);
    TRY(lex(p)); /* message */
    struct tok id;
    TRY(expect_ident(p, &id, "a message name"));
    char *full = join_name(p, scope, &id);
    if (!full)
        return perr(p, &id, "name too long");
    struct proto_msg *m = new_msg(p, full, &id);
    if (!m)
        return nomem(p);
    TRY(add_symbol(p, &id, full, PSYM_MESSAGE, m));
    TRY(add_nested(p, parent, m));
    TRY(expect_sym(p, '{'));
    struct ranges *rs = arena_alloc(&s->mem, sizeof *rs);
    if (!rs)
        return nomem(p);
    rs->n = rs->nn = 0;
    while (!at_sym(p, '}')) {
        if (p->t.kind == T_EOF)
            return perr(p, &p->t, "unexpected end of file in message \"%s\"", full);
        if (at_sym(p, ';')) {
            TRY(lex(p));
        } else if (at_kw(p, "message")) {
            TRY(parse_message(p, full, m));
        } else if (at_kw(p, "enum")) {
            TRY(parse_enum(p, full));
        } else if (at_kw(p, "option")) {
            TRY(lex(p));
            TRY(parse_option_stmt(p, NULL));
        } else if (at_kw(p, "oneof")) {
            TRY(parse_oneof(p, m));
        } else if (at_kw(p, "reserved")) {
            TRY(lex(p));
            TRY(parse_range_list(p, rs, true, false));
        } else if (at_kw(p, "extensions")) {
            TRY(lex(p));
            TRY(parse_range_list(p, NULL, false, false));
        } else if (at_kw(p, "extend")) {
            TRY(lex(p));
            char *n;
            struct tok at;
            TRY(parse_type_name(p, &n, &at));
            if (!at_sym(p, '{'))
                return perr(p, &p->t, "expected '{'");
            TRY(skip_braces(p));
        } else {
            struct tok nx;
            TRY(peek(p, &nx));
            if (at_kw(p, "map") && nx.kind == T_SYM && nx.sym == '<') {
                TRY(parse_map_field(p, m));
                continue;
            }
            uint8_t label = PL_SINGULAR;
            struct tok lt = p->t;
            if (at_kw(p, "optional"))
                label = PL_OPTIONAL;
            else if (at_kw(p, "required"))
                label = PL_REQUIRED;
            else if (at_kw(p, "repeated"))
                label = PL_REPEATED;
            if (label != PL_SINGULAR) {
                TRY(lex(p));
                if (at_kw(p, "map")) {
                    TRY(peek(p, &nx));
                    if (nx.kind == T_SYM && nx.sym == '<')
                        return perr(p, &lt, "map fields cannot have a label");
                }
            }
            if (label == PL_REQUIRED && p->proto3)
                return perr(p, &lt, "required fields are not allowed in proto3");
            if (label == PL_SINGULAR && !p->proto3)
                return perr(p, &lt, "expected \"required\", \"optional\" or \"repeated\" (proto2)");
            struct proto_field *f = new_field(p, m);
            if (!f)
                return m->nfields >= PROTO_FIELDS_MAX ? perr(p, &lt, "more than %d fields", PROTO_FIELDS_MAX) : nomem(p);
            f->label = label;
            TRY(parse_field_type(p, f));
            TRY(parse_field_tail(p, f));
            f->presence = label == PL_OPTIONAL || label == PL_REQUIRED;
        }
    }
    TRY(lex(p)); /* '}' */
    p->nest--;
    return check_message(p, m, rs);
}

/* ---- files ------------------------------------------------------------------------------------ */

static int parse_file(struct pctx *c, const char *fname, const char *text, size_t len);

int proto_parse_into(struct proto_schema *s, const char *fname, const char *text, size_t len,
                     struct serr *e)
{
    struct pctx c = {.s = s, .e = e};
    return parse_file(&c, fname, text, len);
}

static int do_import(struct parser *p, const struct tok *at, const char *name)
{
    struct pctx *c = p->c;
    for (int i = 0; i < c->nloaded; i++)
        if (strcmp(c->loaded[i], name) == 0)
            return 0;
    for (int i = 0; i <= c->depth; i++)
        if (c->stack[i] && strcmp(c->stack[i], name) == 0)
            return perr(p, at, "import cycle through \"%s\"", name);
    if (c->depth >= PROTO_IMPORT_DEPTH)
        return perr(p, at, "imports nested deeper than %d", PROTO_IMPORT_DEPTH);
    if (c->nloaded >= PROTO_FILES_MAX - 1)
        return perr(p, at, "more than %d imported files", PROTO_FILES_MAX - 1);
    const char *text = proto_wkt_text(name);
    size_t len = text ? strlen(text) : 0;
    if (!text) {
        if (!c->imp || c->imp(c->ctx, name, &text, &len) != 0 || !text)
            return perr(p, at, "import \"%s\" not found", name);
    }
    c->loaded[c->nloaded++] = name;
    return parse_file(c, name, text, len);
}

static int parse_package(struct parser *p)
{
    TRY(lex(p));
    if (p->f->package)
        return perr(p, &p->t, "more than one package statement");
    char *name;
    struct tok at;
    TRY(parse_type_name(p, &name, &at));
    if (name[0] == '.')
        return perr(p, &at, "a package name cannot start with '.'");
    TRY(expect_sym(p, ';'));
    p->f->package = name;
    /* Every prefix is a package symbol ("a", "a.b", "a.b.c"). */
    for (char *q = name;; q++) {
        if (*q == '.' || *q == 0) {
            char save = *q;
            *q = 0;
            int rc = proto_sym_add(p->c->s, name, PSYM_PACKAGE, NULL);
            *q = save;
            if (rc == ERR_CONFLICT)
                return perr(p, &at, "package \"%s\" clashes with a type", name);
            if (rc)
                return nomem(p);
            if (save == 0)
                break;
        }
    }
    return 0;
}

static int parse_body(struct parser *p)
{
    TRY(lex(p));
    if (at_kw(p, "edition"))
        return perr(p, &p->t, "protobuf editions are not supported (use syntax = \"proto3\")");
    if (at_kw(p, "syntax")) {
        TRY(lex(p));
        TRY(expect_sym(p, '='));
        struct tok st = p->t;
        char *v;
        TRY(parse_string(p, &v, NULL));
        if (strcmp(v, "proto3") == 0)
            p->proto3 = true;
        else if (strcmp(v, "proto2") != 0)
            return perr(p, &st, "unknown syntax \"%s\" (proto2 or proto3)", v);
        TRY(expect_sym(p, ';'));
    }
    p->f->proto3 = p->proto3;
    while (p->t.kind != T_EOF) {
        if (at_sym(p, ';')) {
            TRY(lex(p));
        } else if (at_kw(p, "import")) {
            struct tok at = p->t;
            TRY(lex(p));
            if (at_kw(p, "public") || at_kw(p, "weak"))
                TRY(lex(p));
            char *name;
            TRY(parse_string(p, &name, NULL));
            TRY(expect_sym(p, ';'));
            TRY(do_import(p, &at, name));
        } else if (at_kw(p, "package")) {
            TRY(parse_package(p));
        } else if (at_kw(p, "option")) {
            TRY(lex(p));
            TRY(parse_option_stmt(p, NULL));
        } else if (at_kw(p, "message")) {
            TRY(parse_message(p, p->f->package ? p->f->package : "", NULL));
        } else if (at_kw(p, "enum")) {
            TRY(parse_enum(p, p->f->package ? p->f->package : ""));
        } else if (at_kw(p, "service") || at_kw(p, "extend")) {
            TRY(lex(p));
            char *n;
            struct tok at;
            TRY(parse_type_name(p, &n, &at));
            if (!at_sym(p, '{'))
                return perr(p, &p->t, "expected '{'");
            TRY(skip_braces(p));
        } else if (at_kw(p, "syntax")) {
            return perr(p, &p->t, "the syntax statement must come first");
        } else {
            return perr(p, &p->t, "expected a top-level statement (message, enum, import, package, "
                                  "option, service)");
        }
    }
    return 0;
}

static int parse_file(struct pctx *c, const char *fname, const char *text, size_t len)
{
    struct proto_schema *s = c->s;
    struct parser p = {.base = text, .p = text, .end = text + len, .line = 1, .line_start = text,
                       .c = c, .fname = fname};
    if (len > PROTO_TEXT_MAX) {
        struct tok at = {.line = 1, .col = 1};
        return perr(&p, &at, ".proto text larger than %u bytes", PROTO_TEXT_MAX);
    }
    if (s->nfiles >= PROTO_FILES_MAX) {
        struct tok at = {.line = 1, .col = 1};
        return perr(&p, &at, "too many files");
    }
    struct proto_file *f = arena_alloc(&s->mem, sizeof *f);
    if (!f)
        return nomem(&p);
    memset(f, 0, sizeof *f);
    f->name = fname ? fname : "";
    p.f = f;
    c->stack[c->depth] = fname ? fname : "";
    c->depth++;
    int rc = parse_body(&p);
    c->depth--;
    if (rc)
        return rc;
    /* Dependencies were appended while parsing; this file goes after them (main file last). */
    if (proto_grow(s, (void **)&s->files, &s->fcap, s->nfiles, sizeof *s->files))
        return nomem(&p);
    s->files[s->nfiles++] = f;
    return 0;
}

int proto_schema_parse(const char *text, size_t len, proto_import_fn imp, void *ctx,
                       struct proto_schema **out, struct serr *e)
{
    struct serr scratch;
    if (!e)
        e = &scratch;
    *out = NULL;
    struct proto_schema *s;
    if (proto_schema_alloc(&s)) {
        serr_set(e, "", "out of memory");
        return ERR_NOMEM;
    }
    struct pctx c = {.s = s, .e = e, .imp = imp, .ctx = ctx};
    int rc = parse_file(&c, NULL, text ? text : "", text ? len : 0);
    if (!rc)
        rc = proto_link(s, e);
    if (!rc && s->files[s->nfiles - 1]->nmsgs == 0) {
        serr_set(e, "1:1", "the schema defines no message");
        rc = ERR_INVALID;
    }
    if (rc) {
        proto_schema_free(s);
        return rc;
    }
    *out = s;
    return 0;
}
