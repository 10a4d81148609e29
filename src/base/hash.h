/* hash.h -- hashing. murmur2 is Kafka's default partitioner hash (must match it bit for bit);
 * hash_bytes is a fast non-cryptographic hash for in-memory tables. */
#ifndef AYDER_BASE_HASH_H
#define AYDER_BASE_HASH_H

#include <stddef.h>
#include <stdint.h>

/* Kafka's Utils.murmur2 (seed 0x9747b28c), as a signed 32-bit result in an int32_t. */
int32_t murmur2(const uint8_t *data, size_t n);
/* Kafka's default partition for a key: (murmur2(key) & 0x7fffffff) % partitions. */
static inline uint32_t kafka_partition(const uint8_t *key, size_t n, uint32_t partitions)
{
    return (uint32_t)(murmur2(key, n) & 0x7fffffff) % partitions;
}
uint64_t hash_bytes(const void *data, size_t n, uint64_t seed);

#endif
