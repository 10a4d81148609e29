/* crc32c.h -- CRC-32C (Castagnoli), the checksum of Kafka record batches and of our journal.
 * Uses the CPU's CRC-32C instruction when it has one (SSE4.2 on x86-64, the CRC extension on
 * ARMv8; checked once at run time), else a slicing table. AYDER_CRC32C=table in the environment
 * forces the table. Any alignment, any byte order. */
#ifndef AYDER_BASE_CRC32C_H
#define AYDER_BASE_CRC32C_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Extend crc (start with 0) over n bytes. crc32c(0, "123456789", 9) == 0xE3069283. */
uint32_t crc32c(uint32_t crc, const void *data, size_t n);

/* Which path crc32c() takes in this process: "sse4.2", "armv8-crc" or "table". */
const char *crc32c_impl(void);

/* For tests, whatever crc32c() chose: the table path; whether the CPU has the instruction; and
 * the instruction path (only when crc32c_hw_available(); aborts otherwise). */
uint32_t crc32c_sw(uint32_t crc, const void *data, size_t n);
bool crc32c_hw_available(void);
uint32_t crc32c_hw(uint32_t crc, const void *data, size_t n);

#endif
