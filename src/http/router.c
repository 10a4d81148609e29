/* router.c -- see router.h. Linear scan over a few dozen routes: cheaper than any structure at
 * this size, and the common routes are registered first. */
#include "http/router.h"

#include "base/err.h"
#include "http/url.h"

#include <string.h>

void router_init(struct router *rt) { memset(rt, 0, sizeof *rt); }

int router_add(struct router *rt, const char *method, const char *pattern, int id)
{
    if (rt->count == ROUTER_MAX_ROUTES || pattern[0] != '/')
        return ERR_INVALID;
    struct route *r = &rt->routes[rt->count];
    r->method = method;
    r->pattern = pattern;
    r->id = id;
    r->nsegs = 0;
    const char *p = pattern + 1;
    while (*p) {
        const char *e = strchr(p, '/');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        if (r->nsegs == ROUTER_MAX_SEGS || n == 0)
            return ERR_INVALID;
        r->segs[r->nsegs] = p;
        r->seg_lens[r->nsegs] = n;
        r->nsegs++;
        p += n;
        if (*p == '/')
            p++;
    }
    rt->count++;
    return 0;
}

/* Split path into segments (raw). A trailing slash yields no empty segment; "//" does. */
static int split(struct slice path, struct slice *segs, int max)
{
    if (path.len == 0 || path.ptr[0] != '/')
        return -1;
    int n = 0;
    size_t i = 1;
    while (i < path.len) {
        size_t j = i;
        while (j < path.len && path.ptr[j] != '/')
            j++;
        if (n == max)
            return -1;
        segs[n++] = slice_of(path.ptr + i, j - i);
        i = j + 1;
    }
    return n;
}

static bool method_ok(const struct route *r, struct slice method)
{
    if (slice_eq_cstr(method, r->method))
        return true;
    return strcmp(r->method, "GET") == 0 && slice_eq_cstr(method, "HEAD");
}

/* Does the route's shape match the segments (ignoring method)? */
static bool shape_match(const struct route *r, const struct slice *segs, int n)
{
    int k;
    for (k = 0; k < r->nsegs; k++) {
        const char *s = r->segs[k];
        if (s[0] == '*')
            return n > k;
        if (k >= n)
            return false;
        if (s[0] == ':') {
            if (segs[k].len == 0)
                return false;
            continue;
        }
        if (segs[k].len != r->seg_lens[k] || memcmp(segs[k].ptr, s, segs[k].len) != 0)
            return false;
    }
    return k == n;
}

static void add_allow(struct route_match *m, const char *method)
{
    if (strstr(m->allow, method))
        return;
    size_t len = strlen(m->allow);
    if (len + strlen(method) + 3 >= sizeof m->allow)
        return;
    if (len)
        strcat(m->allow, ", ");
    strcat(m->allow, method);
    if (strcmp(method, "GET") == 0)
        add_allow(m, "HEAD");
}

static int decode(struct arena *a, struct slice raw, struct slice *out)
{
    uint8_t *d = arena_alloc(a, raw.len + 1);
    if (!d)
        return ERR_NOMEM;
    size_t n = 0;
    int rc = url_decode(raw, false, d, &n);
    if (rc)
        return rc;
    *out = slice_of(d, n);
    return 0;
}

int router_match(const struct router *rt, struct slice method, struct slice path, struct arena *a,
                 struct route_match *m)
{
    struct slice segs[ROUTER_MAX_SEGS * 4];
    memset(m, 0, sizeof *m);
    int n = split(path, segs, (int)(sizeof segs / sizeof segs[0]));
    if (n < 0)
        return ERR_NO_ROUTE;
    bool path_found = false;
    for (int i = 0; i < rt->count; i++) {
        const struct route *r = &rt->routes[i];
        if (!shape_match(r, segs, n))
            continue;
        if (!method_ok(r, method)) {
            path_found = true;
            add_allow(m, r->method);
            continue;
        }
        m->route = r;
        for (int k = 0; k < r->nsegs; k++) {
            const char *s = r->segs[k];
            if (s[0] != ':' && s[0] != '*')
                continue;
            if (m->nparams == ROUTER_MAX_PARAMS)
                return ERR_INVALID;
            struct slice raw = segs[k];
            if (s[0] == '*') /* greedy tail: from this segment to the end of the path */
                raw = slice_of(segs[k].ptr, (size_t)(path.ptr + path.len - segs[k].ptr));
            m->names[m->nparams] = s + 1;
            int rc = decode(a, raw, &m->values[m->nparams]);
            if (rc)
                return rc;
            m->nparams++;
        }
        return 0;
    }
    return path_found ? ERR_METHOD : ERR_NO_ROUTE;
}

int router_lookup(const struct router *rt, struct slice method, struct slice path)
{
    struct slice segs[ROUTER_MAX_SEGS * 4];
    int n = split(path, segs, (int)(sizeof segs / sizeof segs[0]));
    if (n < 0)
        return -1;
    for (int i = 0; i < rt->count; i++) {
        const struct route *r = &rt->routes[i];
        if (shape_match(r, segs, n) && method_ok(r, method))
            return r->id;
    }
    return -1;
}

bool router_path_exists(const struct router *rt, struct slice path, struct route_match *m)
{
    struct slice segs[ROUTER_MAX_SEGS * 4];
    memset(m, 0, sizeof *m);
    int n = split(path, segs, (int)(sizeof segs / sizeof segs[0]));
    if (n < 0)
        return false;
    bool found = false;
    for (int i = 0; i < rt->count; i++) {
        if (shape_match(&rt->routes[i], segs, n)) {
            found = true;
            add_allow(m, rt->routes[i].method);
        }
    }
    return found;
}

struct slice route_param(const struct route_match *m, const char *name)
{
    size_t nl = strlen(name);
    for (int i = 0; i < m->nparams; i++) {
        /* names point into the pattern: compare up to the segment end */
        if (strncmp(m->names[i], name, nl) == 0 && (m->names[i][nl] == 0 || m->names[i][nl] == '/'))
            return m->values[i];
    }
    return (struct slice){NULL, 0};
}
