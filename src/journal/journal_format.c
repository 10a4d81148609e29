/* journal_format.c -- segment header / entry codec and the streaming segment scanner.
 *
 * Entry: {len u32, crc u32, term u64, index u64, type u8, payload[len]}, little-endian. The CRC is
 * CRC-32C over bytes [0,4) (len), then [8,25) (term, index, type), then the payload, so a damaged
 * length can never pass as valid.
 *
 * Invariants:
 *   1. The scanner holds one JSCAN_WINDOW_BYTES window per file; payloads are checksummed in
 *      window-sized chunks, so memory use does not depend on file or entry size.
 *   2. An entry is reported valid only if its length is <= JOURNAL_PAYLOAD_MAX, it lies entirely
 *      within the file, its CRC matches, its index is the next expected one and its term does not
 *      go down. Anything else ends the valid prefix (jscan.bad) with a reason.
 *   3. jscan_find_valid_after only considers candidates whose index lies in the window that a run
 *      of real entries after the bad spot could occupy, which keeps its cost linear in practice
 *      and makes random garbage (zeros, torn writes) essentially never match.
 */
#include "journal/journal_format.h"

#include "base/crc32c.h"
#include "base/err.h"

#include <stdio.h>
#include <string.h>

_Static_assert(JOURNAL_SEGMENT_HEADER_BYTES == 40, "segment header layout is 40 bytes");
_Static_assert(JOURNAL_ENTRY_HEADER_BYTES == 25, "entry header layout is 25 bytes");
_Static_assert(sizeof(JSEG_MAGIC) - 1 == 8, "magic is 8 bytes");

/* Segment header: magic[8] version u32 flags u32 first_index u64 prev_term u64 crc u32 rsvd u32 */
enum { SH_MAGIC = 0, SH_VERSION = 8, SH_FLAGS = 12, SH_FIRST = 16, SH_PREV_TERM = 24, SH_CRC = 32 };

void jseg_header_encode(uint8_t out[JOURNAL_SEGMENT_HEADER_BYTES], const struct jseg_header *h)
{
    memset(out, 0, JOURNAL_SEGMENT_HEADER_BYTES);
    memcpy(out + SH_MAGIC, JSEG_MAGIC, 8);
    put_le32(out + SH_VERSION, JSEG_VERSION);
    put_le32(out + SH_FLAGS, 0);
    put_le64(out + SH_FIRST, h->first_index);
    put_le64(out + SH_PREV_TERM, h->prev_term);
    put_le32(out + SH_CRC, crc32c(0, out, SH_CRC));
}

int jseg_header_decode(const uint8_t in[JOURNAL_SEGMENT_HEADER_BYTES], struct jseg_header *h,
                       const char **why)
{
    if (memcmp(in + SH_MAGIC, JSEG_MAGIC, 8) != 0) {
        *why = "bad segment magic";
        return ERR_CORRUPT;
    }
    if (get_le32(in + SH_CRC) != crc32c(0, in, SH_CRC)) {
        *why = "bad segment header crc";
        return ERR_CORRUPT;
    }
    if (get_le32(in + SH_VERSION) != JSEG_VERSION) {
        *why = "unknown segment version";
        return ERR_CORRUPT;
    }
    h->first_index = get_le64(in + SH_FIRST);
    h->prev_term = get_le64(in + SH_PREV_TERM);
    if (h->first_index == 0) {
        *why = "segment first index is 0";
        return ERR_CORRUPT;
    }
    return 0;
}

uint32_t jentry_crc_head(const uint8_t in[JOURNAL_ENTRY_HEADER_BYTES])
{
    return crc32c(crc32c(0, in, 4), in + 8, JOURNAL_ENTRY_HEADER_BYTES - 8);
}

void jentry_header_encode(uint8_t out[JOURNAL_ENTRY_HEADER_BYTES], const struct jentry_header *h,
                          struct slice payload)
{
    put_le32(out, h->len);
    put_le32(out + 4, 0);
    put_le64(out + 8, h->term);
    put_le64(out + 16, h->index);
    out[24] = h->type;
    put_le32(out + 4, crc32c(jentry_crc_head(out), payload.ptr, payload.len));
}

void jentry_header_decode(const uint8_t in[JOURNAL_ENTRY_HEADER_BYTES], struct jentry_header *h)
{
    h->len = get_le32(in);
    h->crc = get_le32(in + 4);
    h->term = get_le64(in + 8);
    h->index = get_le64(in + 16);
    h->type = in[24];
}

void jseg_path(char *out, size_t cap, const char *dir, uint64_t first_index)
{
    snprintf(out, cap, "%s/%020llu.seg", dir, (unsigned long long)first_index);
}

bool jseg_parse_name(const char *name, uint64_t *first_index)
{
    if (strlen(name) != JSEG_NAME_LEN || strcmp(name + 20, ".seg") != 0)
        return false;
    uint64_t v = 0;
    for (int i = 0; i < 20; i++) {
        if (name[i] < '0' || name[i] > '9')
            return false;
        uint64_t d = (uint64_t)(name[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *first_index = v;
    return true;
}

const uint8_t *jwindow_get(struct jwindow *w, uint64_t off, size_t n, int *rc)
{
    *rc = 0;
    if (n > JSCAN_WINDOW_BYTES || off > w->size || w->size - off < n)
        return NULL;
    if (off >= w->base && off + n <= w->base + w->len)
        return w->buf + (off - w->base);
    uint64_t want = w->size - off;
    size_t take = want < JSCAN_WINDOW_BYTES ? (size_t)want : JSCAN_WINDOW_BYTES;
    size_t got = 0;
    int r = io_pread(w->f, w->buf, take, off, &got);
    w->base = off;
    w->len = r ? 0 : got;
    if (r) {
        *rc = r;
        return NULL;
    }
    if (got < n)
        return NULL; /* the file shrank under us: treat as end */
    return w->buf;
}

/* CRC-check the payload of the entry whose header is hb at off (already bounds-checked). */
static int payload_crc_ok(struct jwindow *w, const uint8_t *hb, uint64_t off, uint32_t len,
                          uint32_t want, int *rc)
{
    uint32_t crc = jentry_crc_head(hb);
    uint64_t pos = off + JOURNAL_ENTRY_HEADER_BYTES;
    uint32_t left = len;
    while (left) {
        size_t n = left < JSCAN_WINDOW_BYTES ? left : JSCAN_WINDOW_BYTES;
        const uint8_t *p = jwindow_get(w, pos, n, rc);
        if (!p)
            return 0;
        crc = crc32c(crc, p, n);
        pos += n;
        left -= (uint32_t)n;
    }
    return crc == want;
}

/* Is there a structurally plausible entry header at off? (bounds only; no CRC yet) */
static bool header_fits(const struct jwindow *w, uint64_t off, const struct jentry_header *h)
{
    if (h->len > JOURNAL_PAYLOAD_MAX)
        return false;
    uint64_t end = off + JOURNAL_ENTRY_HEADER_BYTES + h->len;
    return end <= w->size;
}

void jscan_entries(struct jwindow *w, const struct jseg_header *sh, jscan_fn fn, void *ctx,
                   struct jscan *out)
{
    memset(out, 0, sizeof *out);
    out->last_index = sh->first_index - 1;
    out->last_term = sh->prev_term;
    uint64_t off = JOURNAL_SEGMENT_HEADER_BYTES;
    out->valid_end = off;
    for (;;) {
        if (off == w->size)
            return;
        int rc = 0;
        uint8_t hb[JOURNAL_ENTRY_HEADER_BYTES];
        const uint8_t *p = jwindow_get(w, off, JOURNAL_ENTRY_HEADER_BYTES, &rc);
        if (!p) {
            if (rc) {
                out->io_rc = rc;
                return;
            }
            out->bad = true;
            snprintf(out->why, sizeof out->why, "incomplete entry header (%llu bytes)",
                     (unsigned long long)(w->size - off));
            return;
        }
        memcpy(hb, p, sizeof hb); /* the window moves while the payload is checksummed */
        struct jentry_header h;
        jentry_header_decode(hb, &h);
        if (h.len > JOURNAL_PAYLOAD_MAX) {
            out->bad = true;
            snprintf(out->why, sizeof out->why, "entry length %u exceeds the maximum", h.len);
            return;
        }
        if (!header_fits(w, off, &h)) {
            out->bad = true;
            snprintf(out->why, sizeof out->why, "incomplete entry (length %u, %llu bytes left)",
                     h.len, (unsigned long long)(w->size - off));
            return;
        }
        if (!payload_crc_ok(w, hb, off, h.len, h.crc, &rc)) {
            if (rc) {
                out->io_rc = rc;
                return;
            }
            out->bad = true;
            snprintf(out->why, sizeof out->why, "entry crc mismatch");
            return;
        }
        if (h.index != out->last_index + 1) {
            out->bad = true;
            snprintf(out->why, sizeof out->why, "entry index %llu, expected %llu",
                     (unsigned long long)h.index, (unsigned long long)(out->last_index + 1));
            return;
        }
        if (h.term < out->last_term) {
            out->bad = true;
            snprintf(out->why, sizeof out->why, "entry term %llu below previous term %llu",
                     (unsigned long long)h.term, (unsigned long long)out->last_term);
            return;
        }
        if (fn && (rc = fn(ctx, &h, off)) != 0) {
            out->io_rc = rc;
            return;
        }
        out->last_index = h.index;
        out->last_term = h.term;
        off += JOURNAL_ENTRY_HEADER_BYTES + h.len;
        out->valid_end = off;
    }
}

/* Offset of the first non-zero byte at or after off (w->size if none); *rc on a read error. */
static uint64_t next_nonzero(struct jwindow *w, uint64_t off, int *rc)
{
    while (off < w->size) {
        uint64_t left = w->size - off;
        size_t n = left < JSCAN_WINDOW_BYTES ? (size_t)left : JSCAN_WINDOW_BYTES;
        const uint8_t *p = jwindow_get(w, off, n, rc);
        if (!p)
            return w->size;
        size_t i = 0;
        while (i + 8 <= n) {
            uint64_t v;
            memcpy(&v, p + i, 8);
            if (v)
                break;
            i += 8;
        }
        while (i < n && p[i] == 0)
            i++;
        if (i < n)
            return off + i;
        off += n;
    }
    return w->size;
}

int jscan_zero_tail(struct jwindow *w, uint64_t from)
{
    int rc = 0;
    uint64_t nz = next_nonzero(w, from, &rc);
    if (rc)
        return rc;
    return nz == w->size;
}

int jscan_find_valid_after(struct jwindow *w, uint64_t bad_off, uint64_t expected_index,
                           uint64_t *found_off, uint64_t *found_index)
{
    if (w->size < JOURNAL_ENTRY_HEADER_BYTES)
        return 0;
    /* Real entries after bad_off occupy >= 25 bytes each, so their indexes are bounded. */
    uint64_t span = (w->size - bad_off) / JOURNAL_ENTRY_HEADER_BYTES + 1;
    uint64_t hi = expected_index + span < expected_index ? UINT64_MAX : expected_index + span;
    for (uint64_t off = bad_off + 1; off + JOURNAL_ENTRY_HEADER_BYTES <= w->size; off++) {
        int rc = 0;
        const uint8_t *p = jwindow_get(w, off, JOURNAL_ENTRY_HEADER_BYTES, &rc);
        if (!p)
            return rc ? rc : 0;
        static const uint8_t zero_hdr[JOURNAL_ENTRY_HEADER_BYTES];
        if (memcmp(p, zero_hdr, sizeof zero_hdr) == 0) {
            /* Skip runs of zeros (preallocated space) in one step: a candidate header must
             * contain the next non-zero byte. */
            uint64_t nz = next_nonzero(w, off + JOURNAL_ENTRY_HEADER_BYTES, &rc);
            if (rc)
                return rc;
            if (nz >= w->size)
                return 0;
            uint64_t next = nz - (JOURNAL_ENTRY_HEADER_BYTES - 1);
            off = next > off ? next - 1 : off; /* the loop's off++ lands on next */
            continue;
        }
        struct jentry_header h;
        jentry_header_decode(p, &h);
        if (h.index < expected_index || h.index > hi || !header_fits(w, off, &h))
            continue;
        uint8_t hb[JOURNAL_ENTRY_HEADER_BYTES];
        memcpy(hb, p, sizeof hb);
        if (payload_crc_ok(w, hb, off, h.len, h.crc, &rc)) {
            *found_off = off;
            *found_index = h.index;
            return 1;
        }
        if (rc)
            return rc;
    }
    return 0;
}
