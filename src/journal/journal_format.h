/* journal_format.h -- private to src/journal: the byte codec of segment headers and entries and
 * the streaming segment scanner shared by journal_open, journal_check_dir and
 * journal_dump_segment. Layouts are drawn in docs/DISK_FORMAT.md.
 *
 * Nothing here allocates more than one fixed window per scanner; nothing here trusts the bytes it
 * reads: every length is bounded and every entry is CRC-checked before it is reported.
 */
#ifndef AYDER_JOURNAL_JOURNAL_FORMAT_H
#define AYDER_JOURNAL_JOURNAL_FORMAT_H

#include "io/io.h"
#include "journal/journal.h"

#include <stdbool.h>
#include <stdint.h>

#define JSEG_MAGIC "AYDERJNL"
#define JSEG_VERSION 1u
#define JSEG_NAME_LEN 24 /* 20 digits + ".seg" */
#define JSCAN_WINDOW_BYTES (64u * 1024u)

struct jseg_header {
    uint64_t first_index;
    uint64_t prev_term; /* term of entry first_index - 1 (0 if none) */
};

struct jentry_header {
    uint32_t len;
    uint32_t crc;
    uint64_t term;
    uint64_t index;
    uint8_t type;
};

void jseg_header_encode(uint8_t out[JOURNAL_SEGMENT_HEADER_BYTES], const struct jseg_header *h);
/* 0, or ERR_CORRUPT with a reason in why (bad magic/version/crc). */
int jseg_header_decode(const uint8_t in[JOURNAL_SEGMENT_HEADER_BYTES], struct jseg_header *h,
                       const char **why);
void jentry_header_encode(uint8_t out[JOURNAL_ENTRY_HEADER_BYTES], const struct jentry_header *h,
                          struct slice payload);
void jentry_header_decode(const uint8_t in[JOURNAL_ENTRY_HEADER_BYTES], struct jentry_header *h);
/* CRC over everything the entry CRC covers except the payload. */
uint32_t jentry_crc_head(const uint8_t in[JOURNAL_ENTRY_HEADER_BYTES]);

/* "<dir>/<20 digits>.seg" into out (size >= strlen(dir) + 26). */
void jseg_path(char *out, size_t cap, const char *dir, uint64_t first_index);
/* Parse a segment file name; false if it is not one. */
bool jseg_parse_name(const char *name, uint64_t *first_index);

/* A read window over one file: bounded memory whatever the file size. */
struct jwindow {
    struct io_file *f;
    uint64_t size;
    uint64_t base;
    size_t len;
    uint8_t buf[JSCAN_WINDOW_BYTES];
};
/* Pointer to n (<= JSCAN_WINDOW_BYTES) bytes at off, or NULL on EOF / read error (*rc set). */
const uint8_t *jwindow_get(struct jwindow *w, uint64_t off, size_t n, int *rc);

/* Result of scanning the entries of one segment. */
struct jscan {
    uint64_t last_index; /* index of the last valid entry (first_index - 1 if none) */
    uint64_t last_term;
    uint64_t valid_end;  /* byte offset just past the last valid entry */
    bool bad;            /* bytes after valid_end are not a valid entry */
    int io_rc;           /* a read error (not corruption) stopped the scan */
    char why[96];        /* what is wrong at valid_end */
};

/* Called for every valid entry; return non-zero to stop (the scan returns it in io_rc). */
typedef int (*jscan_fn)(void *ctx, const struct jentry_header *h, uint64_t off);

/* Scan entries from offset JOURNAL_SEGMENT_HEADER_BYTES: each must be CRC-valid, have index
 * first_index, first_index + 1, ... and a term >= prev_term and >= the previous entry's term. */
void jscan_entries(struct jwindow *w, const struct jseg_header *h, jscan_fn fn, void *ctx,
                   struct jscan *out);
/* Are the bytes [from, size) all zero (never-written preallocated space)? 1 yes, 0 no, < 0 error. */
int jscan_zero_tail(struct jwindow *w, uint64_t from);
/* After a bad entry at bad_off: is there any CRC-valid entry later in the file whose index could
 * belong to this journal (expected_index .. a bound from the remaining bytes)? 1 = yes (its
 * offset and index in *off, *index), 0 = no, < 0 read error. */
int jscan_find_valid_after(struct jwindow *w, uint64_t bad_off, uint64_t expected_index,
                           uint64_t *off, uint64_t *index);

#endif
