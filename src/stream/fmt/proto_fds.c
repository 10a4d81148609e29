/* proto_fds.c -- a serialized google.protobuf.FileDescriptorSet to the model of proto_int.h.
 *
 * The set is unpacked with protobuf-c and the code protoc-c generated for descriptor.proto
 * (descriptor.pb-c.[ch], checked in; regenerate with
 *   protoc-c --c_out=DIR -I/usr/include google/protobuf/descriptor.proto
 * and change its #include to "stream/fmt/descriptor.pb-c.h"). The unpacked tree is then copied
 * into the schema arena, and proto_link() resolves it exactly like parsed .proto text.
 *
 * Invariants:
 *  1. Before protobuf-c sees the bytes, a walk of our own checks the size (PROTO_FDS_MAX) and the
 *     nesting of DescriptorProto.nested_type (PROTO_FDS_NEST_MAX): protobuf-c's unpacker recurses
 *     without a depth limit, and a deep enough input would exhaust the stack.
 *  2. protobuf-c allocates through xmalloc/xfree (so allocation-failure tests reach it), and the
 *     unpacked tree is always freed before returning.
 *  3. The last file of the set is the main file (protoc --descriptor_set_out --include_imports
 *     writes dependencies first). A dependency missing from the set that is a well-known type
 *     is added from the built-in text; any other missing type fails linking (unknown type).
 */
#include "stream/fmt/proto_int.h"

#include "base/alloc.h"
#include "base/err.h"
#include "stream/fmt/descriptor.pb-c.h"

#include <stdio.h>
#include <string.h>

#define PROTO_FDS_MAX (4u << 20)
#define PROTO_FDS_NEST_MAX 32

/* ---- pre-check: nesting depth of nested_type ------------------------------------------------- */

static bool skip_value(struct reader *r, uint32_t wt)
{
    uint64_t v;
    struct slice s;
    switch (wt) {
    case 0: return rd_uvarint(r, &v);
    case 1: return rd_bytes(r, 8, &s);
    case 2: return rd_lp(r, SIZE_MAX, &s);
    case 5: return rd_bytes(r, 4, &s);
    default: return false; /* groups do not occur in descriptors */
    }
}

/* Walk a message and recurse into the fields named by `nest_field` (0 = none). */
static bool check_desc(struct slice in, int depth)
{
    if (depth > PROTO_FDS_NEST_MAX)
        return false;
    struct reader r = reader_of(in);
    while (rd_left(&r)) {
        uint64_t tag;
        if (!rd_uvarint(&r, &tag))
            return false;
        uint32_t wt = (uint32_t)(tag & 7);
        uint64_t num = tag >> 3;
        if (num == 3 && wt == 2) { /* DescriptorProto.nested_type */
            struct slice sub;
            if (!rd_lp(&r, SIZE_MAX, &sub) || !check_desc(sub, depth + 1))
                return false;
        } else if (!skip_value(&r, wt)) {
            return false;
        }
    }
    return true;
}

static bool check_set(struct slice in)
{
    struct reader r = reader_of(in);
    while (rd_left(&r)) {
        uint64_t tag;
        if (!rd_uvarint(&r, &tag))
            return false;
        uint32_t wt = (uint32_t)(tag & 7);
        if (tag >> 3 == 1 && wt == 2) { /* FileDescriptorSet.file */
            struct slice file;
            if (!rd_lp(&r, SIZE_MAX, &file))
                return false;
            struct reader fr = reader_of(file);
            while (rd_left(&fr)) {
                uint64_t ft;
                if (!rd_uvarint(&fr, &ft))
                    return false;
                if (ft >> 3 == 4 && (ft & 7) == 2) { /* FileDescriptorProto.message_type */
                    struct slice m;
                    if (!rd_lp(&fr, SIZE_MAX, &m) || !check_desc(m, 1))
                        return false;
                } else if (!skip_value(&fr, (uint32_t)(ft & 7))) {
                    return false;
                }
            }
        } else if (!skip_value(&r, wt)) {
            return false;
        }
    }
    return true;
}

/* ---- conversion -------------------------------------------------------------------------------- */

struct conv {
    struct proto_schema *s;
    struct serr *e;
    const char *file;
    bool proto3;
};

static int cerr(struct conv *c, const char *what, const char *name)
{
    serr_set(c->e, c->file ? c->file : "", "%s%s%s", what, name ? ": " : "", name ? name : "");
    return ERR_INVALID;
}

static bool good_ident(const char *n)
{
    if (!n || !*n || strlen(n) > 255)
        return false;
    for (const char *q = n; *q; q++)
        if (!((*q >= 'a' && *q <= 'z') || (*q >= 'A' && *q <= 'Z') || *q == '_' ||
              (q > n && *q >= '0' && *q <= '9')))
            return false;
    return true;
}

static char *join(struct proto_schema *s, const char *scope, const char *name)
{
    size_t sl = strlen(scope), nl = strlen(name);
    if (sl + nl + 1 > 1024)
        return NULL;
    char *o = arena_alloc(&s->mem, sl + nl + 2);
    if (!o)
        return NULL;
    size_t k = 0;
    if (sl) {
        memcpy(o, scope, sl);
        o[sl] = '.';
        k = sl + 1;
    }
    memcpy(o + k, name, nl + 1);
    return o;
}

static int conv_enum(struct conv *c, const char *scope, const Google__Protobuf__EnumDescriptorProto *d)
{
    struct proto_schema *s = c->s;
    if (!good_ident(d->name))
        return cerr(c, "bad enum name", d->name);
    struct proto_enum *en = arena_alloc(&s->mem, sizeof *en);
    if (!en)
        return ERR_NOMEM;
    memset(en, 0, sizeof *en);
    en->full_name = join(s, scope, d->name);
    en->name = proto_strdup(s, d->name, strlen(d->name));
    if (!en->full_name || !en->name)
        return cerr(c, "name too long", d->name);
    if (d->n_value > 10000)
        return cerr(c, "too many enum values", en->full_name);
    en->values = arena_alloc(&s->mem, (d->n_value ? d->n_value : 1) * sizeof *en->values);
    if (!en->values)
        return ERR_NOMEM;
    for (size_t i = 0; i < d->n_value; i++) {
        if (!good_ident(d->value[i]->name))
            return cerr(c, "bad enum value name in", en->full_name);
        en->values[i].name = proto_strdup(s, d->value[i]->name, strlen(d->value[i]->name));
        en->values[i].number = d->value[i]->number;
        if (!en->values[i].name)
            return ERR_NOMEM;
    }
    en->nvalues = en->cap = (uint32_t)d->n_value;
    if (proto_grow(s, (void **)&s->enums, &s->ecap, s->nenums, sizeof *s->enums))
        return ERR_NOMEM;
    s->enums[s->nenums++] = en;
    int rc = proto_sym_add(s, en->full_name, PSYM_ENUM, en);
    if (rc == ERR_CONFLICT)
        return cerr(c, "duplicate symbol", en->full_name);
    return rc;
}

static int conv_msg(struct conv *c, const char *scope, const Google__Protobuf__DescriptorProto *d,
                    struct proto_msg *parent, struct proto_file *file)
{
    struct proto_schema *s = c->s;
    if (!good_ident(d->name))
        return cerr(c, "bad message name", d->name);
    struct proto_msg *m = arena_alloc(&s->mem, sizeof *m);
    if (!m)
        return ERR_NOMEM;
    memset(m, 0, sizeof *m);
    m->full_name = join(s, scope, d->name);
    m->name = proto_strdup(s, d->name, strlen(d->name));
    if (!m->full_name || !m->name)
        return cerr(c, "name too long", d->name);
    m->proto3 = c->proto3;
    m->map_entry = d->options && d->options->has_map_entry && d->options->map_entry;
    int rc = proto_sym_add(s, m->full_name, PSYM_MESSAGE, m);
    if (rc == ERR_CONFLICT)
        return cerr(c, "duplicate symbol", m->full_name);
    if (rc)
        return rc;
    if (proto_grow(s, (void **)&s->all, &s->acap, s->nall, sizeof *s->all))
        return ERR_NOMEM;
    s->all[s->nall++] = m;
    if (parent) {
        if (proto_grow(s, (void **)&parent->nested, &parent->ncap, parent->nnested,
                       sizeof *parent->nested))
            return ERR_NOMEM;
        parent->nested[parent->nnested++] = m;
    } else {
        if (proto_grow(s, (void **)&file->msgs, &file->mcap, file->nmsgs, sizeof *file->msgs))
            return ERR_NOMEM;
        file->msgs[file->nmsgs++] = m;
    }
    /* Oneofs (synthetic proto3-optional ones included, but their fields are not linked to them). */
    if (d->n_oneof_decl > 10000 || d->n_field > 10000)
        return cerr(c, "too many fields in", m->full_name);
    m->oneofs = arena_alloc(&s->mem, (d->n_oneof_decl ? d->n_oneof_decl : 1) * sizeof *m->oneofs);
    m->fields = arena_alloc(&s->mem, (d->n_field ? d->n_field : 1) * sizeof *m->fields);
    if (!m->oneofs || !m->fields)
        return ERR_NOMEM;
    for (size_t i = 0; i < d->n_oneof_decl; i++) {
        const char *n = d->oneof_decl[i]->name ? d->oneof_decl[i]->name : "";
        m->oneofs[i] = proto_strdup(s, n, strlen(n));
        if (!m->oneofs[i])
            return ERR_NOMEM;
    }
    m->noneofs = m->ocap = (uint32_t)d->n_oneof_decl;
    for (size_t i = 0; i < d->n_field; i++) {
        const Google__Protobuf__FieldDescriptorProto *fd = d->field[i];
        struct proto_field *f = &m->fields[i];
        memset(f, 0, sizeof *f);
        if (!good_ident(fd->name))
            return cerr(c, "bad field name in", m->full_name);
        f->name = proto_strdup(s, fd->name, strlen(fd->name));
        if (!f->name)
            return ERR_NOMEM;
        f->name_len = (uint32_t)strlen(f->name);
        f->number = fd->number;
        f->file = c->file;
        f->oneof = -1;
        f->type = fd->has_type ? (uint8_t)fd->type : 0;
        if (fd->has_type && (fd->type < 1 || fd->type > 18))
            return cerr(c, "bad field type in", m->full_name);
        if (fd->type_name) {
            f->type_name = proto_strdup(s, fd->type_name, strlen(fd->type_name));
            if (!f->type_name)
                return ERR_NOMEM;
        } else if (!fd->has_type || (int)fd->type == PT_MESSAGE || (int)fd->type == PT_ENUM) {
            return cerr(c, "field without a type in", m->full_name);
        }
        if (fd->json_name && fd->json_name[0])
            f->json_name = proto_strdup(s, fd->json_name, strlen(fd->json_name));
        switch (fd->has_label ? fd->label : GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__LABEL__LABEL_OPTIONAL) {
        case GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__LABEL__LABEL_REPEATED:
            f->label = PL_REPEATED;
            break;
        case GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__LABEL__LABEL_REQUIRED:
            f->label = PL_REQUIRED;
            f->presence = true;
            break;
        default:
            if (c->proto3) {
                f->label = fd->proto3_optional ? PL_OPTIONAL : PL_SINGULAR;
                f->presence = fd->proto3_optional;
            } else {
                f->label = PL_OPTIONAL;
                f->presence = true;
            }
        }
        if (fd->has_oneof_index && !fd->proto3_optional) {
            if (fd->oneof_index < 0 || (size_t)fd->oneof_index >= d->n_oneof_decl)
                return cerr(c, "bad oneof index in", m->full_name);
            f->oneof = fd->oneof_index;
            f->presence = true;
        }
    }
    m->nfields = m->fcap = (uint32_t)d->n_field;
    for (size_t i = 0; i < d->n_enum_type; i++)
        if ((rc = conv_enum(c, m->full_name, d->enum_type[i])))
            return rc;
    for (size_t i = 0; i < d->n_nested_type; i++)
        if ((rc = conv_msg(c, m->full_name, d->nested_type[i], m, file)))
            return rc;
    return 0;
}

static int conv_file(struct conv *c, const Google__Protobuf__FileDescriptorProto *fd)
{
    struct proto_schema *s = c->s;
    struct proto_file *f = arena_alloc(&s->mem, sizeof *f);
    if (!f)
        return ERR_NOMEM;
    memset(f, 0, sizeof *f);
    f->name = proto_strdup(s, fd->name ? fd->name : "", fd->name ? strlen(fd->name) : 0);
    c->file = f->name;
    if (fd->syntax && strcmp(fd->syntax, "proto3") == 0)
        f->proto3 = true;
    else if (fd->syntax && fd->syntax[0] && strcmp(fd->syntax, "proto2") != 0)
        return cerr(c, "unsupported syntax", fd->syntax);
    c->proto3 = f->proto3;
    const char *pkg = fd->package ? fd->package : "";
    f->package = proto_strdup(s, pkg, strlen(pkg));
    if (!f->name || !f->package)
        return ERR_NOMEM;
    if (*pkg) {
        char buf[1025];
        size_t n = strlen(pkg);
        if (n > 1024 || pkg[0] == '.')
            return cerr(c, "bad package name", pkg);
        memcpy(buf, pkg, n + 1);
        for (size_t i = 0; i <= n; i++) {
            if (buf[i] == '.' || buf[i] == 0) {
                char save = buf[i];
                buf[i] = 0;
                int rc = proto_sym_add(s, buf, PSYM_PACKAGE, NULL);
                buf[i] = save;
                if (rc == ERR_CONFLICT)
                    return cerr(c, "package clashes with a type", pkg);
                if (rc)
                    return rc;
            }
        }
    }
    int rc;
    for (size_t i = 0; i < fd->n_enum_type; i++)
        if ((rc = conv_enum(c, pkg, fd->enum_type[i])))
            return rc;
    for (size_t i = 0; i < fd->n_message_type; i++)
        if ((rc = conv_msg(c, pkg, fd->message_type[i], NULL, f)))
            return rc;
    if (proto_grow(s, (void **)&s->files, &s->fcap, s->nfiles, sizeof *s->files))
        return ERR_NOMEM;
    s->files[s->nfiles++] = f;
    return 0;
}

static void *pa_alloc(void *data, size_t n)
{
    (void)data;
    return xmalloc(n ? n : 1);
}
static void pa_free(void *data, void *p)
{
    (void)data;
    xfree(p);
}

int proto_schema_from_fds(struct slice fds, struct proto_schema **out, struct serr *e)
{
    struct serr scratch;
    if (!e)
        e = &scratch;
    *out = NULL;
    if (fds.len > PROTO_FDS_MAX) {
        serr_set(e, "", "FileDescriptorSet larger than %u bytes", PROTO_FDS_MAX);
        return ERR_INVALID;
    }
    if (!check_set(fds)) {
        serr_set(e, "", "not a FileDescriptorSet (malformed, or messages nested deeper than %d)",
                 PROTO_FDS_NEST_MAX);
        return ERR_INVALID;
    }
    ProtobufCAllocator pa = {.alloc = pa_alloc, .free = pa_free};
    Google__Protobuf__FileDescriptorSet *set =
        google__protobuf__file_descriptor_set__unpack(&pa, fds.len, fds.ptr);
    if (!set) {
        serr_set(e, "", "not a FileDescriptorSet (protobuf-c could not unpack it)");
        return ERR_INVALID;
    }
    int rc = 0;
    struct proto_schema *s = NULL;
    if (set->n_file == 0 || set->n_file > 64) {
        serr_set(e, "", "a FileDescriptorSet needs 1..64 files");
        rc = ERR_INVALID;
        goto err_unpacked;
    }
    if ((rc = proto_schema_alloc(&s)))
        goto err_unpacked;
    /* Built-in well-known types the set depends on but does not carry. */
    for (size_t i = 0; i < set->n_file && !rc; i++) {
        for (size_t d = 0; d < set->file[i]->n_dependency && !rc; d++) {
            const char *dep = set->file[i]->dependency[d];
            const char *text = proto_wkt_text(dep);
            if (!text)
                continue;
            bool have = false;
            for (size_t k = 0; k < set->n_file; k++)
                have |= set->file[k]->name && strcmp(set->file[k]->name, dep) == 0;
            for (uint32_t k = 0; k < s->nfiles; k++)
                have |= strcmp(s->files[k]->name, dep) == 0;
            if (!have)
                rc = proto_parse_into(s, proto_strdup(s, dep, strlen(dep)), text, strlen(text), e);
        }
    }
    struct conv c = {.s = s, .e = e};
    for (size_t i = 0; i < set->n_file && !rc; i++)
        rc = conv_file(&c, set->file[i]);
    if (!rc)
        rc = proto_link(s, e);
    if (!rc && s->files[s->nfiles - 1]->nmsgs == 0) {
        serr_set(e, "", "the main (last) file defines no message");
        rc = ERR_INVALID;
    }
    if (rc == ERR_NOMEM)
        serr_set(e, "", "out of memory");
err_unpacked:
    google__protobuf__file_descriptor_set__free_unpacked(set, &pa);
    if (rc) {
        proto_schema_free(s);
        return rc;
    }
    *out = s;
    return 0;
}
