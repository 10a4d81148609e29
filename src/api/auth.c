/* auth.c -- see auth.h.
 * Invariants: 1. a token's comparison time depends only on the lengths involved, not on content;
 * 2. the rate-limit bucket of a token is only touched under its mutex. */
#include "api/auth.h"

#include "base/alloc.h"
#include "base/err.h"

#include <pthread.h>
#include <string.h>

#define TOKEN_MAX 256

struct token {
    uint8_t value[TOKEN_MAX];
    size_t len;
    int scopes;
    pthread_mutex_t mu;
    double tokens;
    uint64_t last_ms;
};

struct auth {
    struct token *tokens;
    size_t count;
    double rps, burst;
};

static int parse_scopes(const char *s, size_t n)
{
    int scopes = 0;
    size_t i = 0;
    while (i < n) {
        size_t j = i;
        while (j < n && s[j] != '+')
            j++;
        struct slice w = slice_of(s + i, j - i);
        if (slice_eq_cstr(w, "produce")) scopes |= SCOPE_PRODUCE;
        else if (slice_eq_cstr(w, "consume")) scopes |= SCOPE_CONSUME;
        else if (slice_eq_cstr(w, "admin")) scopes |= SCOPE_ADMIN;
        else if (slice_eq_cstr(w, "kv")) scopes |= SCOPE_KV;
        else scopes |= SCOPE_ALL; /* '*' or an unknown word such as the seed's "scope" */
        i = j + 1;
    }
    return scopes ? scopes : SCOPE_ALL;
}

int auth_new(const char *spec, struct auth **out)
{
    struct auth *a = xcalloc(1, sizeof *a);
    if (!a)
        return ERR_NOMEM;
    size_t n = spec ? strlen(spec) : 0, cap = 0;
    size_t i = 0;
    while (i < n) {
        size_t j = i;
        while (j < n && spec[j] != ',' && spec[j] != ':')
            j++;
        size_t at = i;
        while (at < j && spec[at] != '@')
            at++;
        size_t ts = i, te = at; /* the token is spec[ts..te), spaces trimmed */
        while (ts < te && spec[ts] == ' ')
            ts++;
        while (te > ts && spec[te - 1] == ' ')
            te--;
        size_t tlen = te - ts;
        if (tlen > 0) {
            if (tlen > TOKEN_MAX) {
                auth_free(a);
                return ERR_INVALID;
            }
            if (a->count == cap) {
                cap = cap ? cap * 2 : 4;
                struct token *t = xrealloc(a->tokens, cap * sizeof *t);
                if (!t) {
                    auth_free(a);
                    return ERR_NOMEM;
                }
                a->tokens = t;
            }
            struct token *t = &a->tokens[a->count++];
            memset(t, 0, sizeof *t);
            memcpy(t->value, spec + ts, tlen);
            t->len = tlen;
            t->scopes = at < j ? parse_scopes(spec + at + 1, j - at - 1) : SCOPE_ALL;
            pthread_mutex_init(&t->mu, NULL);
        }
        i = j + 1;
    }
    *out = a;
    return 0;
}

void auth_free(struct auth *a)
{
    if (!a)
        return;
    for (size_t i = 0; i < a->count; i++)
        pthread_mutex_destroy(&a->tokens[i].mu);
    xfree(a->tokens);
    xfree(a);
}

void auth_set_rate_limit(struct auth *a, double rps, double burst)
{
    a->rps = rps;
    a->burst = burst > 0 ? burst : rps;
    for (size_t i = 0; i < a->count; i++)
        a->tokens[i].tokens = a->burst;
}

size_t auth_token_count(const struct auth *a) { return a->count; }

/* Constant-time equality of the presented token with a configured one. */
static int ct_equal(const struct token *t, const uint8_t *p, size_t n)
{
    unsigned diff = (unsigned)(t->len ^ n);
    for (size_t i = 0; i < TOKEN_MAX; i++) {
        uint8_t x = i < n ? p[i] : 0;
        uint8_t y = t->value[i]; /* zero-padded */
        diff |= (unsigned)(x ^ y);
    }
    return diff == 0;
}

/* The configured token named by "Bearer <token>" (scheme case-insensitive, one or more spaces),
 * or NULL. */
static struct token *find_token(struct auth *a, struct slice h)
{
    if (h.len < 7)
        return NULL;
    if (!slice_eq_nocase(slice_of(h.ptr, 6), "bearer") || h.ptr[6] != ' ')
        return NULL;
    size_t i = 7;
    while (i < h.len && h.ptr[i] == ' ')
        i++;
    size_t n = h.len - i;
    while (n && h.ptr[i + n - 1] == ' ')
        n--;
    if (n == 0 || n > TOKEN_MAX)
        return NULL;
    struct token *match = NULL;
    for (size_t k = 0; k < a->count; k++) {
        /* no early exit: every configured token is compared */
        struct token *t = &a->tokens[k];
        if (ct_equal(t, h.ptr + i, n) && !match)
            match = t;
    }
    return match;
}

int auth_scopes(struct auth *a, struct slice h)
{
    struct token *t = find_token(a, h);
    return t ? t->scopes : 0;
}

int auth_check(struct auth *a, struct slice h, int scope, uint64_t now_ms, uint32_t *retry_after_s)
{
    if (scope == SCOPE_NONE)
        return 0;
    struct token *match = find_token(a, h);
    if (!match)
        return ERR_UNAUTHORIZED;
    if (scope != SCOPE_ANY && !(match->scopes & scope))
        return ERR_FORBIDDEN;
    if (a->rps > 0) {
        pthread_mutex_lock(&match->mu);
        if (match->last_ms == 0)
            match->last_ms = now_ms;
        double el = (double)(now_ms - match->last_ms) / 1000.0;
        match->last_ms = now_ms;
        match->tokens += el * a->rps;
        if (match->tokens > a->burst)
            match->tokens = a->burst;
        int limited = match->tokens < 1.0;
        if (!limited)
            match->tokens -= 1.0;
        double need = 1.0 - match->tokens;
        pthread_mutex_unlock(&match->mu);
        if (limited) {
            uint32_t s = (uint32_t)(need / a->rps + 0.999);
            *retry_after_s = s ? s : 1;
            return ERR_RATE_LIMITED;
        }
    }
    return 0;
}
