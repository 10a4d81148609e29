/* registry.h -- the schema registry state machine: subjects, versions and global schema ids
 * (Confluent Schema Registry semantics), applied from the journal like KV.
 *
 * What it owns: every registered schema (by global id: type, text, identity form, references),
 * every subject (name -> versions 1..n -> schema id), the next id to hand out, and the parsed
 * schemas it caches for the stream engine (struct schema_ref, refcounted).
 *
 * No I/O and no clock. The HTTP worker checks a registration first (schema_registry_prepare:
 * sizes, names, references, and a parse with the Avro / Protobuf parsers of stream/fmt or jansson
 * for JSON, which also yields the Avro canonical form); the integrator journals an
 * ENTRY_SCHEMA_REGISTER carrying the text AND that identity form; the core thread applies it in
 * log order with schema_registry_apply_register(). Apply decides ids, versions, idempotence,
 * reference existence and limits from the state and the entry's bytes alone -- it never runs a
 * parser -- so every replica and every replay hands out the same ids, whatever parser version it
 * links (validity is decided once, before the entry exists).
 *
 * Semantics (as Confluent's registry, compatibility level NONE):
 *  1. Identity: two registrations are "the same schema" iff type, flags, identity form (the Avro
 *     Parsing Canonical Form, else the text byte for byte) and references (name, subject,
 *     version, in order) are equal. The same schema under another subject reuses its global id.
 *  2. Ids come from next_id++ at apply time (first id 1), versions are 1..n per subject.
 *  3. Re-registering a schema a subject already has (at any version) is idempotent: it returns
 *     that version and id and changes nothing (result.created = false).
 *  4. A reference must name an existing (subject, version) when it is applied.
 *  5. Nothing is ever removed except by schema_registry_reset() (no DELETE yet): ids are dense,
 *     1..next_id-1.
 *
 * Threads: applies, snapshot reads and reset take the write lock; every read (lookups, views,
 * listings, snapshot writes, get_by_id) takes it shared, so HTTP workers and the stream engine
 * read while the core thread applies. Callbacks run under the read lock and must not call back
 * into the registry. A struct schema_ref is immutable and refcounted: it stays valid after the
 * registry is reset or freed, until its last schema_ref_release().
 *
 * Limits (struct schema_limits, defaults below): schema text bytes (ERR_TOO_LARGE), subjects,
 * versions per subject, schemas, total text bytes (ERR_NOSPACE, like KV's capacity), references
 * per schema (ERR_SCHEMA_INVALID). Subject names: 1..SCHEMA_SUBJECT_MAX printable ASCII bytes
 * (0x21..0x7e), else ERR_BAD_NAME.
 *
 * Ownership: slices passed in are borrowed for the call (the registry copies what it keeps);
 * slices in a struct schema_view point into the registry and live only during the callback.
 */
#ifndef AYDER_SCHEMA_REGISTRY_H
#define AYDER_SCHEMA_REGISTRY_H

#include "base/buf.h"
#include "stream/fmt/confluent.h"
#include "stream/fmt/fmt.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum schema_type {
    SCHEMA_AVRO = 1,
    SCHEMA_PROTOBUF = 2,
    SCHEMA_JSON = 3,
};
#define SCHEMA_F_FDS 1u /* PROTOBUF given as a serialized google.protobuf.FileDescriptorSet */

#define SCHEMA_SUBJECT_MAX 255
#define SCHEMA_REFS_MAX 64
#define SCHEMA_REF_NAME_MAX 1024
#define SCHEMA_REF_DEPTH_MAX 16 /* transitive reference chain, for import resolution */
/* Hard ceiling of any configured text size (the journal entry's bound). */
#define SCHEMA_TEXT_HARD_MAX (16u << 20)

struct schema_limits {
    size_t schema_bytes_max;  /* one schema's text (default 1 MiB) -> ERR_TOO_LARGE */
    uint32_t subjects_max;    /* default 10,000 -> ERR_NOSPACE */
    uint32_t versions_max;    /* per subject, default 1,000 -> ERR_NOSPACE */
    uint32_t schemas_max;     /* distinct schemas (ids), default 100,000 -> ERR_NOSPACE */
    uint64_t total_bytes_max; /* sum of stored texts and identity forms, default 256 MiB */
};
void schema_limits_default(struct schema_limits *l);

/* l may be NULL (defaults). NULL on OOM. */
struct schema_registry *schema_registry_new(const struct schema_limits *l);
void schema_registry_free(struct schema_registry *r);

/* "AVRO", "PROTOBUF", "JSON" (exact, upper case); an empty name means AVRO (Confluent's
 * default). ERR_SCHEMA_INVALID otherwise. */
int schema_type_parse(struct slice name, uint8_t *type);
const char *schema_type_name(uint8_t type);
/* 0 or ERR_BAD_NAME. */
int schema_validate_subject(struct slice subject);

struct schema_reference {
    struct slice name;    /* Protobuf: the import path ("other.proto"); else a name */
    struct slice subject;
    uint32_t version;     /* >= 1 */
};

/* A schema as a request or an entry gives it (every slice borrowed). */
struct schema_desc {
    uint8_t type;  /* enum schema_type */
    uint8_t flags; /* SCHEMA_F_* */
    struct slice text;  /* the schema string; with SCHEMA_F_FDS the raw descriptor bytes */
    struct slice canon; /* identity form; empty = text */
    const struct schema_reference *refs;
    size_t nrefs;
};

/* Worker side, before journaling: check d (type/flags, sizes, UTF-8 text, reference names and
 * that every reference exists now) and parse it (Avro: avro_schema_parse; Protobuf:
 * proto_schema_parse with imports resolved through the references, or proto_schema_from_fds;
 * JSON: jansson, must be an object). For Avro the Parsing Canonical Form is appended to canon
 * and d->canon points at it (canon must stay alive while d is used); otherwise d->canon is left
 * empty. Errors: ERR_SCHEMA_INVALID with e->path/e->msg naming the offending place,
 * ERR_TOO_LARGE, ERR_NOMEM. */
int schema_registry_prepare(struct schema_registry *r, struct schema_desc *d, struct sbuf *canon,
                            struct serr *e);

struct schema_result {
    uint32_t id;
    uint32_t version;
    bool created; /* a new version was added (false: the subject already had this schema) */
};

/* Apply (core thread, log order). Returns 0 (res filled), or -- leaving the state unchanged --
 * ERR_BAD_NAME, ERR_TOO_LARGE, ERR_SCHEMA_INVALID (bad type/flags/UTF-8/reference, e.g. a
 * reference to a version that does not exist), ERR_NOSPACE (a count or byte limit), ERR_NOMEM
 * (this replica cannot follow the journal: fatal for the caller). */
int schema_registry_apply_register(struct schema_registry *r, struct slice subject,
                                   const struct schema_desc *d, struct schema_result *res);

/* POST /subjects/{s} without registering: the version of subject whose schema is d (identity as
 * above; d->canon as prepare computed it). ERR_SUBJECT_NOT_FOUND, ERR_SCHEMA_NOT_FOUND. */
int schema_registry_lookup(struct schema_registry *r, struct slice subject,
                           const struct schema_desc *d, struct schema_result *res);

/* Read views: fn runs once under the read lock; its return value is returned. */
struct schema_view {
    uint32_t id;
    uint8_t type, flags;
    struct slice text;
    const struct schema_reference *refs;
    size_t nrefs;
    struct slice subject; /* view_version only, else empty */
    uint32_t version;     /* view_version only, else 0 */
};
typedef int (*schema_view_fn)(void *ctx, const struct schema_view *v);
/* ERR_SCHEMA_NOT_FOUND. */
int schema_registry_view_id(struct schema_registry *r, uint32_t id, schema_view_fn fn, void *ctx);
/* version 0 = the latest. ERR_BAD_NAME, ERR_SUBJECT_NOT_FOUND, ERR_VERSION_NOT_FOUND. */
int schema_registry_view_version(struct schema_registry *r, struct slice subject, uint32_t version,
                                 schema_view_fn fn, void *ctx);
/* Every subject in ascending byte order; fn per subject (nonzero stops and is returned). */
typedef int (*schema_subject_fn)(void *ctx, struct slice subject);
int schema_registry_subjects(struct schema_registry *r, schema_subject_fn fn, void *ctx);
/* The versions of subject, ascending. ERR_BAD_NAME, ERR_SUBJECT_NOT_FOUND. */
typedef int (*schema_version_fn)(void *ctx, uint32_t version, uint32_t id);
int schema_registry_versions(struct schema_registry *r, struct slice subject, schema_version_fn fn,
                             void *ctx);

/* The stream engine's lookup: a refcounted, immutable, already parsed schema for id. Parsed on
 * first use (Protobuf imports resolved through the stored references) and cached in the registry,
 * so records never re-parse. The caller releases it with schema_ref_release(); it outlives a
 * reset or free of the registry. ERR_SCHEMA_NOT_FOUND, ERR_SCHEMA_INVALID (+ e: the stored
 * schema does not parse with this build's parser), ERR_NOMEM. */
struct schema_ref {
    uint32_t id;
    uint8_t type; /* enum schema_type; == SFMT_SCHEMA_* of confluent.h */
    uint8_t flags;
    const struct avro_schema *avro;   /* SCHEMA_AVRO */
    const struct proto_schema *proto; /* SCHEMA_PROTOBUF */
    /* private */
    _Atomic uint32_t refcount;
};
int schema_registry_get_by_id(struct schema_registry *r, uint32_t id, struct schema_ref **out,
                              struct serr *e);
void schema_ref_release(struct schema_ref *s);

/* Adapters for sfmt_confluent_new (stream/fmt/confluent.h): ctx is the struct schema_registry. */
int schema_registry_sfmt_lookup(void *ctx, uint32_t id, struct sfmt_schema *out, struct serr *e);
void schema_registry_sfmt_release(void *ctx, void *handle);

/* Snapshot: appends the whole state (sorted, so equal states give equal bytes; format in
 * registry.c and docs/DISK_FORMAT.md). 0 or ERR_NOMEM / ERR_TOO_LARGE (out failed to grow). */
int schema_registry_snapshot_write(struct schema_registry *r, struct sbuf *out);
/* Drop everything (before installing a leader's snapshot); readers may run. */
void schema_registry_reset(struct schema_registry *r);
/* Restore into an EMPTY registry (else ERR_INVALID). Damaged bytes -> ERR_CORRUPT and the
 * registry stays empty. Limits are not enforced: the snapshot is the agreed state. */
int schema_registry_snapshot_read(struct schema_registry *r, struct slice in);

struct schema_stats {
    uint64_t schemas, subjects, versions, bytes;
    uint32_t next_id;
    uint64_t registered, idempotent, rejected; /* applies */
};
void schema_registry_stats(struct schema_registry *r, struct schema_stats *st);

/* For tests: check the invariants of registry.c. 0 or ERR_CORRUPT. */
int schema_registry_check_invariants(struct schema_registry *r);

#endif
