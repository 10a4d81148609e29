/* router.h -- method + path-pattern routing with parameters.
 *
 * Patterns are '/'-separated segments: a literal ("broker"), a parameter (":topic", one non-empty
 * segment), or a greedy tail ("*key", one or more segments joined by '/', only last). Parameter
 * values are percent-decoded into the caller's arena (an invalid escape is ERR_BAD_ESCAPE).
 * HEAD requests match GET routes. The router owns copies of nothing: patterns must be static.
 */
#ifndef AYDER_HTTP_ROUTER_H
#define AYDER_HTTP_ROUTER_H

#include "base/arena.h"
#include "base/buf.h"

#define ROUTER_MAX_ROUTES 64
#define ROUTER_MAX_PARAMS 6
#define ROUTER_MAX_SEGS 16

struct route {
    const char *method;
    const char *pattern;
    int id;           /* caller's route id (handler index, metrics label) */
    int nsegs;
    const char *segs[ROUTER_MAX_SEGS];
    size_t seg_lens[ROUTER_MAX_SEGS];
};

struct router {
    struct route routes[ROUTER_MAX_ROUTES];
    int count;
};

struct route_match {
    const struct route *route;
    int nparams;
    const char *names[ROUTER_MAX_PARAMS];
    struct slice values[ROUTER_MAX_PARAMS];
    char allow[96]; /* on ERR_METHOD: the Allow header value */
};

void router_init(struct router *rt);
/* Returns 0 or ERR_INVALID (bad pattern, too many routes). */
int router_add(struct router *rt, const char *method, const char *pattern, int id);
/* 0 = matched; ERR_NO_ROUTE; ERR_METHOD (m->allow filled); ERR_BAD_ESCAPE. */
int router_match(const struct router *rt, struct slice method, struct slice path, struct arena *a,
                 struct route_match *m);
/* The id of the route that router_match would pick, without decoding parameters; -1 if none
 * (no route, or only for other methods). */
int router_lookup(const struct router *rt, struct slice method, struct slice path);
/* Value of a named parameter (empty slice if missing). */
struct slice route_param(const struct route_match *m, const char *name);
/* Any route at all for this path (any method)? For CORS preflight. Fills m->allow. */
bool router_path_exists(const struct router *rt, struct slice path, struct route_match *m);

#endif
