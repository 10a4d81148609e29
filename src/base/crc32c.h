/* crc32c.h -- CRC-32C (Castagnoli), the checksum of Kafka record batches and of our journal.
 * Uses the SSE4.2 crc32 instruction when the CPU has it (checked once), else a slicing table. */
#ifndef AYDER_BASE_CRC32C_H
#define AYDER_BASE_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* Extend crc (start with 0) over n bytes. crc32c(0, "123456789", 9) == 0xE3069283. */
uint32_t crc32c(uint32_t crc, const void *data, size_t n);

#endif
