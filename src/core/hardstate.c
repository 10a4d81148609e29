/* hardstate.c -- DATA_DIR/raft/meta and DATA_DIR/raft/commit (see hardstate.h).
 *
 * meta (32 bytes, little-endian): magic "AYHS" u32 | version u32 (1) | term u64 | vote u64 |
 * pad u32 (0) | crc32c u32 over the first 28 bytes. commit: the same with "AYCM", index, term.
 * Invariant: a meta file that fails any check is reported as ERR_CORRUPT, never read as term 0
 * (a node that forgot its vote could vote twice in one term); a damaged commit mark reads as 0.
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
_Static_assert(COMMITMARK_BYTES == HARDSTATE_BYTES, "one layout for both files");

static int path_of(char *out, size_t cap, const char *dir, const char *name)
{
    int n = snprintf(out, cap, "%s/%s", dir, name);
    return (n < 0 || (size_t)n >= cap) ? ERR_INVALID : 0;
}

/* Both files are 32 bytes, little-endian: magic u32 | version u32 (1) | x u64 | y u64 |
 * pad u32 (0) | crc32c u32 over the first 28 bytes. */
static void encode(uint8_t b[HARDSTATE_BYTES], uint32_t magic, uint64_t x, uint64_t y)
{
    memset(b, 0, HARDSTATE_BYTES);
    put_le32(b, magic);
    put_le32(b + 4, 1);
    put_le64(b + 8, x);
    put_le64(b + 16, y);
    put_le32(b + 28, crc32c(0, b, 28));
}

/* 1: dir/name read and valid (*x, *y set); 0: no such file; ERR_CORRUPT: wrong size, magic,
 * version or CRC; another error: I/O. */
static int load(struct io_fs *fs, const char *dir, const char *name, uint32_t magic, uint64_t *x,
                uint64_t *y)
{
    char path[4096];
    int rc = path_of(path, sizeof path, dir, name);
    if (rc)
        return rc;
    rc = io_exists(fs, path);
    if (rc <= 0)
        return rc;
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
    if (get_le32(b) != magic || get_le32(b + 4) != 1 || crc32c(0, b, 28) != get_le32(b + 28))
        return ERR_CORRUPT;
    *x = get_le64(b + 8);
    *y = get_le64(b + 16);
    return 1;
}

int hardstate_load(struct io_fs *fs, const char *dir, uint64_t *term, uint64_t *vote)
{
    *term = 0;
    *vote = 0;
    int rc = load(fs, dir, "meta", HS_MAGIC, term, vote);
    return rc < 0 ? rc : 0; /* 0: no file yet (term 0, no vote) */
}

int hardstate_save(struct io_fs *fs, const char *dir, uint64_t term, uint64_t vote)
{
    uint8_t b[HARDSTATE_BYTES];
    encode(b, HS_MAGIC, term, vote);
    return io_replace_file(fs, dir, "meta", "meta.tmp", b, sizeof b);
}

/* DATA_DIR/raft/commit: the same layout, magic "AYCM", x = index, y = term. */
int commitmark_load(struct io_fs *fs, const char *dir, uint64_t *index, uint64_t *term,
                    bool *damaged)
{
    *index = *term = 0;
    *damaged = false;
    int rc = load(fs, dir, "commit", CM_MAGIC, index, term);
    if (rc == ERR_CORRUPT) {
        *index = *term = 0;
        *damaged = true; /* only a lower restart point: start from the checkpoint */
        return 0;
    }
    return rc < 0 ? rc : 0;
}

int commitmark_create(struct io_fs *fs, const char *dir, uint64_t index, uint64_t term,
                      struct io_file **out)
{
    *out = NULL;
    uint8_t b[COMMITMARK_BYTES];
    encode(b, CM_MAGIC, index, term);
    int rc = io_replace_file(fs, dir, "commit", "commit.tmp", b, sizeof b);
    if (rc)
        return rc;
    char path[4096];
    rc = path_of(path, sizeof path, dir, "commit");
    return rc ? rc : io_open(fs, path, IO_RDWR, out);
}

int commitmark_write(struct io_file *f, uint64_t index, uint64_t term)
{
    uint8_t b[COMMITMARK_BYTES];
    encode(b, CM_MAGIC, index, term);
    return io_pwrite(f, b, sizeof b, 0);
}
