/* harness.h -- the unit-test harness. Each test file defines tests with TEST(name) { ... };
 * they register themselves at start-up, so adding a file needs no central list.
 * CHECK(cond) records a failure and continues; REQUIRE(cond) records and returns from the test.
 * The runner (harness.c) runs every test (or those whose name contains argv[1]) and ends with
 * "N passed, N failed". */
#ifndef AYDER_TEST_HARNESS_H
#define AYDER_TEST_HARNESS_H

#include <stdio.h>

typedef void (*test_fn)(void);
void harness_register(const char *name, test_fn fn);
void harness_fail(const char *file, int line, const char *expr);
int harness_current_failed(void);

#define TEST(name)                                                                                 \
    static void test_##name(void);                                                                 \
    __attribute__((constructor)) static void reg_##name(void) { harness_register(#name, test_##name); } \
    static void test_##name(void)

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            harness_fail(__FILE__, __LINE__, #cond);                                               \
    } while (0)

#define REQUIRE(cond)                                                                              \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            harness_fail(__FILE__, __LINE__, #cond);                                               \
            return;                                                                                \
        }                                                                                          \
    } while (0)

#define CHECK_EQ_INT(a, b)                                                                         \
    do {                                                                                           \
        long long va_ = (long long)(a), vb_ = (long long)(b);                                      \
        if (va_ != vb_) {                                                                          \
            char m_[256];                                                                          \
            snprintf(m_, sizeof m_, "%s == %s (%lld vs %lld)", #a, #b, va_, vb_);                  \
            harness_fail(__FILE__, __LINE__, m_);                                                  \
        }                                                                                          \
    } while (0)

#endif
