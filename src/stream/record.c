/* record.c -- metadata fields of a stream record (record.h). */
#include "stream/record.h"

#include "base/err.h"
#include "base/json.h"

#include <string.h>

int smeta_parse(const char *text, size_t len, enum smeta *kind, struct slice *header)
{
    *kind = SMETA_NONE;
    *header = (struct slice){NULL, 0};
    if (len == 0 || text[0] != '$')
        return 0;
    struct slice s = slice_of(text, len);
    if (slice_eq_cstr(s, "$offset"))
        *kind = SMETA_OFFSET;
    else if (slice_eq_cstr(s, "$partition"))
        *kind = SMETA_PARTITION;
    else if (slice_eq_cstr(s, "$timestamp_ms"))
        *kind = SMETA_TIMESTAMP;
    else if (slice_eq_cstr(s, "$key"))
        *kind = SMETA_KEY;
    else if (len > 9 && memcmp(text, "$headers.", 9) == 0) {
        *kind = SMETA_HEADER;
        *header = slice_of(text + 9, len - 9);
    } else
        return ERR_INVALID;
    return 0;
}

static void bytes_val(struct slice b, struct sval *out)
{
    out->type = utf8_valid(b.ptr, b.len) ? SV_STR : SV_BYTES;
    out->escaped = false;
    out->p = (const char *)b.ptr;
    out->len = (uint32_t)b.len;
}

void srec_meta(const struct srec *r, enum smeta kind, struct slice header, struct sval *out)
{
    memset(out, 0, sizeof *out);
    switch (kind) {
    case SMETA_OFFSET:
        out->type = SV_INT;
        out->i = (int64_t)r->offset;
        return;
    case SMETA_PARTITION:
        out->type = SV_INT;
        out->i = r->partition;
        return;
    case SMETA_TIMESTAMP:
        out->type = SV_INT;
        out->i = r->timestamp_ms;
        return;
    case SMETA_KEY:
        if (!r->has_key)
            out->type = SV_NULL;
        else
            bytes_val(r->key, out);
        return;
    case SMETA_HEADER:
        for (size_t i = 0; i < r->header_count; i++) {
            if (slice_eq(r->headers[i].name, header)) {
                bytes_val(r->headers[i].value, out);
                return;
            }
        }
        out->type = SV_MISSING;
        return;
    default:
        out->type = SV_MISSING;
    }
}
