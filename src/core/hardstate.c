/* hardstate.c -- DATA_DIR/raft/meta (see hardstate.h).
 *
 * Layout (32 bytes, little-endian): magic "AYHS" u32 | version u32 (1) | term u64 | vote u64 |
 * pad u32 (0) | crc32c u32 over the first 28 bytes.
 * Invariant: a file that fails any check is reported as ERR_CORRUPT, never read as term 0 (a
 * node that forgot its vote could vote twice in one term).
 */
#include "core/hardstate.h"

#include "base/alloc.h"
#include "base/buf.h"
#include "base/crc32c.h"
#include "base/err.h"

#include <stdio.h>
#include <string.h>

#define HS_MAGIC 0x53485941u /* "AYHS" */
#define CM_MAGIC 0x4d435941u /* "AYCM" */

static int path_of(char *out, size_t cap, const char *dir, const char *name)
{
    int n = snprintf(out, cap, "%s/%s", dir, name);
    return (n < 0 || (size_t)n >= cap) ? ERR_INVALID : 0;
}

int hardstate_load(struct io_fs *fs, const char *dir, uint64_t *term, uint64_t *vote)
{
    char path[4096];
    int rc = path_of(path, sizeof path, dir, "meta");
    if (rc)
        return rc;
    *term = 0;
    *vote = 0;
    rc = io_exists(fs, path);
    if (rc <= 0)
        return rc; /* 0: no file yet (term 0, no vote) */
    struct io_file *f = NULL;
    rc = io_open(fs, path, IO_RDONLY, &f);
    if (rc)
        return rc;
    uint64_t size = 0;
    uint8_t b[HARDSTATE_BYTES];
    rc = io_size(f, &size);
    if (!rc && size != HARDSTATE_BYTES)
        rc = ERR_CORRUPT;
    if (!rc)
        rc = io_pread_full(f, b, sizeof b, 0);
    io_close(f);
    if (rc)
        return rc == ERR_EOF ? ERR_CORRUPT : rc;
    if (get_le32(b) != HS_MAGIC || get_le32(b + 4) != 1 || crc32c(0, b, 28) != get_le32(b + 28))
        return ERR_CORRUPT;
    *term = get_le64(b + 8);
    *vote = get_le64(b + 16);
    return 0;
}

int hardstate_save(struct io_fs *fs, const char *dir, uint64_t term, uint64_t vote)
{
    uint8_t b[HARDSTATE_BYTES];
    memset(b, 0, sizeof b);
    put_le32(b, HS_MAGIC);
    put_le32(b + 4, 1);
    put_le64(b + 8, term);
    put_le64(b + 16, vote);
    put_le32(b + 28, crc32c(0, b, 28));
    return io_replace_file(fs, dir, "meta", "meta.tmp", b, sizeof b);
}

/* DATA_DIR/raft/commit, 32 bytes little-endian: magic "AYCM" u32 | version u32 (1) | index u64 |
 * term u64 | pad u32 (0) | crc32c u32 over the first 28 bytes. */
int commitmark_load(struct io_fs *fs, const char *dir, uint64_t *index, uint64_t *term,
                    bool *damaged)
{
    char path[4096];
    int rc = path_of(path, sizeof path, dir, "commit");
    if (rc)
        return rc;
    *index = *term = 0;
    *damaged = false;
    rc = io_exists(fs, path);
    if (rc <= 0)
        return rc;
    struct io_file *f = NULL;
    rc = io_open(fs, path, IO_RDONLY, &f);
    if (rc)
        return rc;
    uint8_t b[COMMITMARK_BYTES];
    rc = io_pread_full(f, b, sizeof b, 0);
    io_close(f);
    if (rc == ERR_EOF || (!rc && (get_le32(b) != CM_MAGIC || get_le32(b + 4) != 1 ||
                                  crc32c(0, b, 28) != get_le32(b + 28)))) {
        *damaged = true; /* only a lower restart point: start from the checkpoint */
        return 0;
    }
    if (rc)
        return rc;
    *index = get_le64(b + 8);
    *term = get_le64(b + 16);
    return 0;
}

int commitmark_write(struct io_file *f, uint64_t index, uint64_t term)
{
    uint8_t b[COMMITMARK_BYTES];
    memset(b, 0, sizeof b);
    put_le32(b, CM_MAGIC);
    put_le32(b + 4, 1);
    put_le64(b + 8, index);
    put_le64(b + 16, term);
    put_le32(b + 28, crc32c(0, b, 28));
    return io_pwrite(f, b, sizeof b, 0);
}
