/* auth.h -- bearer tokens with scopes, and an optional per-token rate limit.
 *
 * RF_BEARER_TOKENS: entries separated by ',' or ':', each `token[@scope[+scope...]]`. Scopes:
 * produce, consume, admin, kv, '*'. No scope, or a word that is not a known scope (the seed's
 * "dev@scope"), means '*'. Tokens are compared in constant time against every configured token
 * (the loop never exits early), so timing does not reveal a prefix match or which token matched.
 */
#ifndef AYDER_API_AUTH_H
#define AYDER_API_AUTH_H

#include "base/buf.h"

#include <stdint.h>

enum auth_scope {
    SCOPE_NONE = 0,     /* public route */
    SCOPE_PRODUCE = 1,
    SCOPE_CONSUME = 2,
    SCOPE_ADMIN = 4,
    SCOPE_KV = 8,
    SCOPE_ALL = 15,
    SCOPE_ANY = 16,     /* a route for any valid token, whatever its scopes (GET /auth/whoami) */
};

struct auth;

/* spec NULL or "" -> no tokens configured (every protected route answers 401). */
int auth_new(const char *spec, struct auth **out);
void auth_free(struct auth *a);
/* Rate limit: rps 0 = off. */
void auth_set_rate_limit(struct auth *a, double rps, double burst);
size_t auth_token_count(const struct auth *a);
/* Check an Authorization header value for a route needing `scope`.
 * Returns 0, ERR_UNAUTHORIZED, ERR_FORBIDDEN or ERR_RATE_LIMITED (*retry_after_s set). */
int auth_check(struct auth *a, struct slice authorization, int scope, uint64_t now_ms,
               uint32_t *retry_after_s);
/* The scopes (SCOPE_* bits) of the token in an Authorization header value; 0 if it names none of
 * the configured tokens. No rate limit is charged (auth_check already did, for the route). */
int auth_scopes(struct auth *a, struct slice authorization);

#endif
