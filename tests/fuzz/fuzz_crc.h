/* fuzz_crc.h -- shared by fuzz targets whose input ends in a CRC-32C of the rest. */
#ifndef AYDER_FUZZ_CRC_H
#define AYDER_FUZZ_CRC_H

#include "base/assert.h"
#include "base/buf.h"
#include "base/crc32c.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Run check on the input as given, then (size >= 4) on a copy whose last 4 bytes are replaced
 * by the CRC-32C of the rest, so that mutations reach the parser behind the checksum. */
static inline void fuzz_as_is_and_with_crc(const uint8_t *data, size_t size,
                                           void (*check)(const uint8_t *, size_t))
{
    check(data, size);
    if (size < 4)
        return;
    uint8_t *copy = malloc(size);
    ASSERT(copy);
    memcpy(copy, data, size);
    put_le32(copy + size - 4, crc32c(0, copy, size - 4));
    check(copy, size);
    free(copy);
}

#endif
