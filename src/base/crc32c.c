/* crc32c.c -- see crc32c.h. Table fallback is slicing-by-8; the hardware paths use the 8-byte
 * CRC-32C instruction: SSE4.2 `crc32` on x86-64, the ARMv8 CRC extension's `crc32cx` on aarch64.
 * Which one runs is decided once, at run time, from what the CPU reports (cpuid on x86-64,
 * getauxval(AT_HWCAP) & HWCAP_CRC32 on aarch64); AYDER_CRC32C=table in the environment forces
 * the table (how tests exercise the fallback on a CPU that has the instruction). All paths give
 * identical results (tests/unit/test_base.c, on both architectures).
 *
 * Invariants:
 *  1. No alignment is assumed: words are read with memcpy (load_le64), at any address.
 *  2. No byte order is assumed: words are read as little-endian (load_le64), which is what the
 *     reflected CRC and both instructions consume, so a big-endian host gets the same CRCs.
 *  3. The choice of path is made once (pthread_once) and never changes in a process.
 *
 * The instruction has a latency of 3 cycles and a throughput of 1 per cycle (on both
 * architectures' common cores), so one dependent chain runs at a third of the unit's speed. For
 * long buffers the hardware path runs three independent chains over three adjacent blocks
 * (CRC_LONG, then CRC_SHORT bytes each) and joins them with the "append n zero bytes" operator as
 * four 256-entry tables per block size (Mark Adler's method, as in zlib's crc32_combine):
 * crc(A || B) = shift_B(crc(A)) ^ crc0(B). */
#include "base/crc32c.h"

#include "base/buf.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__)
#define HW_PATH 1
#define HW_NAME "sse4.2"
#define HW_TARGET __attribute__((target("sse4.2")))
/* The chains stay 64-bit: truncating crc32q's result to 32 bits each step puts a `mov r32, r32`
 * into every chain's dependency (4 cycles a step instead of 3). */
typedef uint64_t crc_chain;
#define CRC_U64(c, w) __builtin_ia32_crc32di((c), (w))
#define CRC_U8(c, b) __builtin_ia32_crc32qi((c), (b))
#elif defined(__aarch64__)
#include <sys/auxv.h>
#define HW_PATH 1
#define HW_NAME "armv8-crc"
/* Only these functions are compiled for the CRC extension, so the binary still runs on an
 * ARMv8.0 CPU without it (the extension is optional before ARMv8.1). The compilers' builtins
 * rather than <arm_acle.h>: clang's header hides __crc32cd unless the whole file is built with
 * +crc. */
typedef uint32_t crc_chain;
#if defined(__clang__)
#define HW_TARGET __attribute__((target("crc")))
#define CRC_U64(c, w) __builtin_arm_crc32cd((c), (w))
#define CRC_U8(c, b) __builtin_arm_crc32cb((c), (b))
#else
#define HW_TARGET __attribute__((target("+crc")))
#define CRC_U64(c, w) __builtin_aarch64_crc32cx((c), (w))
#define CRC_U8(c, b) __builtin_aarch64_crc32cb((c), (b))
#endif
#ifndef HWCAP_CRC32
#define HWCAP_CRC32 (1 << 7) /* <asm/hwcap.h> */
#endif
#else
#define HW_PATH 0
#endif

static uint32_t table[8][256];
static bool have_hw; /* the CPU has the instruction */
static bool use_hw;  /* and crc32c() uses it (not forced to the table) */

#define CRC_POLY 0x82F63B78u /* reflected Castagnoli polynomial */
#define CRC_LONG 8192u
#define CRC_SHORT 256u
static uint32_t zeros_long[4][256], zeros_short[4][256];

/* GF(2) 32x32 matrices as 32 column words. */
static uint32_t gf2_times(const uint32_t *mat, uint32_t vec)
{
    uint32_t sum = 0;
    for (; vec; vec >>= 1, mat++)
        if (vec & 1)
            sum ^= *mat;
    return sum;
}

static void gf2_square(uint32_t *square, const uint32_t *mat)
{
    for (int n = 0; n < 32; n++)
        square[n] = gf2_times(mat, mat[n]);
}

/* The operator that appends len (a power of two) zero bytes to a CRC, as tables by byte. */
static void zeros_tables(uint32_t zeros[4][256], size_t len)
{
    uint32_t even[32], odd[32];
    odd[0] = CRC_POLY; /* one zero bit */
    for (int n = 1; n < 32; n++)
        odd[n] = 1u << (n - 1);
    gf2_square(even, odd); /* two zero bits */
    gf2_square(odd, even); /* four */
    const uint32_t *op;
    for (;;) {
        gf2_square(even, odd); /* one zero byte, then 4, 16, ... */
        len >>= 1;
        if (len == 0) {
            op = even;
            break;
        }
        gf2_square(odd, even); /* two zero bytes, then 8, 32, ... */
        len >>= 1;
        if (len == 0) {
            op = odd;
            break;
        }
    }
    for (uint32_t n = 0; n < 256; n++) {
        zeros[0][n] = gf2_times(op, n);
        zeros[1][n] = gf2_times(op, n << 8);
        zeros[2][n] = gf2_times(op, n << 16);
        zeros[3][n] = gf2_times(op, n << 24);
    }
}

static inline uint32_t shift(uint32_t zeros[4][256], uint32_t crc)
{
    return zeros[0][crc & 0xff] ^ zeros[1][(crc >> 8) & 0xff] ^ zeros[2][(crc >> 16) & 0xff] ^
           zeros[3][crc >> 24];
}
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        table[0][i] = c;
    }
    for (int t = 1; t < 8; t++)
        for (int i = 0; i < 256; i++)
            table[t][i] = (table[t - 1][i] >> 8) ^ table[0][table[t - 1][i] & 0xff];
#if defined(__x86_64__)
    __builtin_cpu_init();
    have_hw = __builtin_cpu_supports("sse4.2");
#elif defined(__aarch64__)
    have_hw = (getauxval(AT_HWCAP) & HWCAP_CRC32) != 0;
#endif
    const char *force = getenv("AYDER_CRC32C");
    use_hw = have_hw && !(force && strcmp(force, "table") == 0);
    zeros_tables(zeros_long, CRC_LONG);
    zeros_tables(zeros_short, CRC_SHORT);
}

static uint32_t crc_sw(uint32_t crc, const uint8_t *p, size_t n)
{
    while (n >= 8) {
        uint64_t w = load_le64(p) ^ crc;
        crc = table[7][w & 0xff] ^ table[6][(w >> 8) & 0xff] ^ table[5][(w >> 16) & 0xff] ^
              table[4][(w >> 24) & 0xff] ^ table[3][(w >> 32) & 0xff] ^
              table[2][(w >> 40) & 0xff] ^ table[1][(w >> 48) & 0xff] ^ table[0][w >> 56];
        p += 8;
        n -= 8;
    }
    while (n--)
        crc = (crc >> 8) ^ table[0][(crc ^ *p++) & 0xff];
    return crc;
}

#if HW_PATH
/* Three chains over adjacent blocks of `block` bytes each, joined (see the top comment). */
#define CRC_3WAY(block, zeros)                                                                 \
    while (n >= 3 * (block)) {                                                                 \
        crc_chain c1 = 0, c2 = 0;                                                              \
        const uint8_t *e = p + (block);                                                        \
        do {                                                                                   \
            c = CRC_U64(c, load_le64(p));                                                      \
            c1 = CRC_U64(c1, load_le64(p + (block)));                                          \
            c2 = CRC_U64(c2, load_le64(p + 2 * (block)));                                      \
            p += 8;                                                                            \
        } while (p < e);                                                                       \
        c = shift(zeros, (uint32_t)c) ^ (uint32_t)c1;                                          \
        c = shift(zeros, (uint32_t)c) ^ (uint32_t)c2;                                          \
        p += 2 * (block);                                                                      \
        n -= 3 * (block);                                                                      \
    }

HW_TARGET static uint32_t crc_hw(uint32_t crc, const uint8_t *p, size_t n)
{
    crc_chain c = crc;
    CRC_3WAY(CRC_LONG, zeros_long)
    CRC_3WAY(CRC_SHORT, zeros_short)
    while (n >= 8) {
        c = CRC_U64(c, load_le64(p));
        p += 8;
        n -= 8;
    }
    uint32_t c32 = (uint32_t)c;
    while (n--)
        c32 = CRC_U8(c32, *p++);
    return c32;
}
#endif

uint32_t crc32c_sw(uint32_t crc, const void *data, size_t n)
{
    pthread_once(&once, init);
    return ~crc_sw(~crc, data, n);
}

bool crc32c_hw_available(void)
{
    pthread_once(&once, init);
    return have_hw;
}

uint32_t crc32c_hw(uint32_t crc, const void *data, size_t n)
{
    pthread_once(&once, init);
#if HW_PATH
    if (have_hw)
        return ~crc_hw(~crc, data, n);
#else
    (void)crc, (void)data, (void)n;
#endif
    abort(); /* a caller's bug: check crc32c_hw_available() first */
}

const char *crc32c_impl(void)
{
    pthread_once(&once, init);
#if HW_PATH
    if (use_hw)
        return HW_NAME;
#endif
    return "table";
}

uint32_t crc32c(uint32_t crc, const void *data, size_t n)
{
    pthread_once(&once, init);
#if HW_PATH
    if (use_hw)
        return ~crc_hw(~crc, data, n);
#endif
    return ~crc_sw(~crc, data, n);
}
