/* fuzz_frame.c -- libFuzzer target: arbitrary bytes as a Raft transport byte stream.
 *
 * The input is parsed the way a connection parses its receive buffer: frames back to back, the
 * first one bounded by TRANSPORT_PREAUTH_MAX_FRAME and required to be a HELLO, later ones bounded
 * by a small max payload. Properties checked on every input:
 *  1. transport_frame_decode and transport_hello_decode never read outside the input (ASan) and
 *     never trip UB (UBSan); ERR_AGAIN is only returned for a prefix of a frame.
 *  2. An accepted frame re-encodes to exactly the bytes it was decoded from (the CRC covers the
 *     length, the type and the payload, so no other bytes can pass).
 *  3. An accepted HELLO re-encodes to the same bytes and has a non-empty version range.
 */
#include "raft/transport.h"

#include "base/assert.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAX_PAYLOAD 4096

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static uint8_t re[TRANSPORT_FRAME_HEADER + MAX_PAYLOAD];
    size_t off = 0;
    bool first = true;
    while (off < size) {
        uint8_t type;
        struct slice pl;
        size_t used;
        size_t max = first ? TRANSPORT_PREAUTH_MAX_FRAME : MAX_PAYLOAD;
        int rc = transport_frame_decode(slice_of(data + off, size - off), max, &type, &pl, &used);
        if (rc == ERR_AGAIN) {
            ASSERT(size - off < 8 + (size_t)MAX_PAYLOAD + 1);
            break;
        }
        if (rc != 0)
            break;
        ASSERT(used >= TRANSPORT_FRAME_HEADER && used <= size - off);
        ASSERT(pl.len <= max && pl.ptr == data + off + TRANSPORT_FRAME_HEADER);
        ASSERT(transport_frame_put(re, type, pl) == used);
        ASSERT(memcmp(re, data + off, used) == 0);
        if (first) {
            struct transport_hello h;
            if (type != TRANSPORT_FRAME_HELLO || transport_hello_decode(pl, &h) != 0)
                break;
            ASSERT(h.version_min >= 1 && h.version_min <= h.version_max);
            uint8_t buf[TRANSPORT_HELLO_BYTES];
            transport_hello_encode(&h, buf);
            ASSERT(pl.len == sizeof buf && memcmp(buf, pl.ptr, sizeof buf) == 0);
            first = false;
        }
        off += used;
    }
    return 0;
}
