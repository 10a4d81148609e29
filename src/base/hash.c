/* hash.c -- see hash.h. Results do not depend on the host byte order or on alignment. */
#include "base/hash.h"

#include "base/buf.h"

#include <string.h>

int32_t murmur2(const uint8_t *data, size_t n)
{
    const uint32_t seed = 0x9747b28cu, m = 0x5bd1e995u;
    const int r = 24;
    uint32_t h = seed ^ (uint32_t)n;
    size_t n4 = n / 4;
    for (size_t i = 0; i < n4; i++) {
        size_t i4 = i * 4;
        uint32_t k = (uint32_t)data[i4] | (uint32_t)data[i4 + 1] << 8 | (uint32_t)data[i4 + 2] << 16 |
                     (uint32_t)data[i4 + 3] << 24;
        k *= m;
        k ^= k >> r;
        k *= m;
        h *= m;
        h ^= k;
    }
    size_t rem = n % 4, base = n & ~(size_t)3;
    switch (rem) {
    case 3: h ^= (uint32_t)data[base + 2] << 16; /* fall through */
    case 2: h ^= (uint32_t)data[base + 1] << 8;  /* fall through */
    case 1: h ^= data[base]; h *= m;
    }
    h ^= h >> 13;
    h *= m;
    h ^= h >> 15;
    return (int32_t)h;
}

/* A 64-bit multiply-mix hash (FNV-1a over 8-byte words with a final avalanche). */
uint64_t hash_bytes(const void *data, size_t n, uint64_t seed)
{
    const uint8_t *p = data;
    uint64_t h = 0xcbf29ce484222325ull ^ seed ^ (n * 0x9E3779B97F4A7C15ull);
    while (n >= 8) {
        uint64_t w = load_le64(p);
        h = (h ^ w) * 0x100000001b3ull;
        h ^= h >> 29;
        p += 8;
        n -= 8;
    }
    uint64_t w = 0;
    for (size_t i = 0; i < n; i++) /* the tail as a little-endian word, on any host */
        w |= (uint64_t)p[i] << (8 * i);
    h = (h ^ w) * 0x100000001b3ull;
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 33;
    return h;
}
