/* fuzz_snapx.c -- libFuzzer target: decode arbitrary bytes as a snapshot transfer chunk.
 *
 * Properties checked on every input:
 *  1. snapx_chunk_decode never reads outside the input (ASan) and never trips UB (UBSan).
 *  2. A chunk it accepts is well formed: a known kind, a nonzero snapshot index, for FILE a path
 *     that snapx_path_valid accepts (relative, no "..", bounded) and at most SNAPX_CHUNK_BYTES
 *     of data, both slices inside the input; for END at least one file.
 *  3. The encoding is canonical: re-encoding an accepted chunk gives back the input byte for
 *     byte, and that decodes to the same fields.
 * Every input is tried twice: as given, and with its last 4 bytes replaced by the CRC-32C of
 * the rest, so that mutations reach the parser behind the checksum.
 */
#include "fuzz_crc.h"
#include "base/assert.h"
#include "base/buf.h"
#include "base/crc32c.h"
#include "core/snapx.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static bool inside(struct slice s, const uint8_t *data, size_t size)
{
    return s.len == 0 || (s.ptr >= data && s.ptr + s.len <= data + size);
}

static void check(const uint8_t *data, size_t size)
{
    struct snapx_chunk c, c2;
    if (snapx_chunk_decode(slice_of(data, size), &c) != 0)
        return;
    ASSERT(c.snap_index != 0);
    ASSERT(c.kind == SNAPX_FILE || c.kind == SNAPX_END);
    if (c.kind == SNAPX_FILE) {
        ASSERT(snapx_path_valid(c.path, c.snap_index));
        ASSERT(c.path.len < SNAPX_PATH_MAX && c.data.len <= SNAPX_CHUNK_BYTES);
        ASSERT(inside(c.path, data, size) && inside(c.data, data, size));
        ASSERT(c.path.ptr[0] != '/');
        for (size_t i = 0; i + 1 < c.path.len; i++)
            ASSERT(!(c.path.ptr[i] == '.' && c.path.ptr[i + 1] == '.' &&
                     (i == 0 || c.path.ptr[i - 1] == '/') &&
                     (i + 2 == c.path.len || c.path.ptr[i + 2] == '/')));
    } else {
        ASSERT(c.n_files >= 1 && c.n_files <= SNAPX_FILES_MAX);
        ASSERT(c.path.len == 0 && c.data.len == 0);
    }
    struct sbuf b;
    sbuf_init(&b, 0);
    ASSERT(snapx_chunk_encode(&c, &b) == 0);
    ASSERT(b.len == size && memcmp(b.data, data, size) == 0);
    ASSERT(snapx_chunk_decode(slice_of(b.data, b.len), &c2) == 0);
    ASSERT(c2.snap_index == c.snap_index && c2.snap_term == c.snap_term);
    ASSERT(c2.xfer_id == c.xfer_id && c2.seq == c.seq && c2.kind == c.kind);
    ASSERT(slice_eq(c2.path, c.path) && slice_eq(c2.data, c.data));
    ASSERT(c2.offset == c.offset && c2.eof == c.eof);
    ASSERT(c2.n_files == c.n_files && c2.total_bytes == c.total_bytes);
    sbuf_free(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > SNAPX_CHUNK_ENCODED_MAX)
        check(data, size); /* too long to be a chunk: no point in fixing its CRC */
    else
        fuzz_as_is_and_with_crc(data, size, check);
    return 0;
}
