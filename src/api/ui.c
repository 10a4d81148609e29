/* ui.c -- the web console area: the files of src/ui/assets/, embedded in the binary at build time
 * (src/ui/ui_assets.h), served under /ui/; and GET / sending browsers there.
 *
 *   GET /            Accept names text/html (a browser): 302 to /ui/. Anything else (curl, scripts)
 *                    gets what it always got: 404 no_route.
 *   GET /ui, /ui/    index.html
 *   GET /ui/NAME     the embedded file NAME; 404 not_found for any other name
 *
 * The console is a client of the public HTTP API like any other: it is served without a token (it
 * holds no data), and every call it makes carries the token the user typed, with that token's
 * scopes (GET /auth/whoami tells it which, so it shows only the actions the token may take).
 *
 * Invariants:
 *  1. Only names in the embedded table are served; the path is compared, never opened, so no
 *     path can reach the file system.
 *  2. The gzip form is sent only to a client whose Accept-Encoding accepts gzip (q > 0); every
 *     answer says Vary: Accept-Encoding, and each form has its own ETag.
 *  3. Answers are revalidated (Cache-Control: no-cache + ETag -> 304), so a new binary's console
 *     is picked up at the next load, never mixed with cached files of the old one.
 */
#include "api/api_internal.h"

#include "base/err.h"
#include "ui/ui_assets.h"

#include <stdio.h>
#include <string.h>

/* The console loads nothing from elsewhere: scripts and styles from this node only. connect-src
 * also allows other nodes' HTTP URLs (the cluster page reads each member's public /ha/status). */
#define UI_CSP                                                                                     \
    "Content-Security-Policy: default-src 'self'; script-src 'self'; style-src 'self'; "           \
    "img-src 'self' data:; connect-src 'self' http: https:; base-uri 'none'; form-action 'none'; " \
    "frame-ancestors 'none'\r\n"

static bool lower_eq(struct slice s, const char *lower)
{
    size_t n = strlen(lower);
    if (s.len != n)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = (char)s.ptr[i];
        if (c >= 'A' && c <= 'Z')
            c = (char)(c - 'A' + 'a');
        if (c != lower[i])
            return false;
    }
    return true;
}

/* Is `name` (lower case) one of the comma-separated entries of the header, with no q=0? Entries
 * look like "gzip", " text/html;q=0.9". A `*` entry (or `star`, e.g. "*\/\*") also counts. */
static bool header_lists(const struct http_request *h, const char *hname, const char *name,
                         const char *star)
{
    const struct http_header *hd = http_find_header(h, hname);
    if (!hd)
        return false;
    struct slice v = hd->value;
    size_t i = 0;
    while (i < v.len) {
        size_t j = i;
        while (j < v.len && v.ptr[j] != ',')
            j++;
        size_t a = i, e = j;
        while (a < e && (v.ptr[a] == ' ' || v.ptr[a] == '\t'))
            a++;
        size_t semi = a;
        while (semi < e && v.ptr[semi] != ';')
            semi++;
        size_t te = semi;
        while (te > a && (v.ptr[te - 1] == ' ' || v.ptr[te - 1] == '\t'))
            te--;
        struct slice tok = slice_of(v.ptr + a, te - a);
        if (lower_eq(tok, name) || (star && lower_eq(tok, star))) {
            /* q=0 (or 0.0, 0.00...) refuses it */
            bool refused = false;
            for (size_t k = semi; k + 2 < e; k++) {
                if ((v.ptr[k] == 'q' || v.ptr[k] == 'Q') && v.ptr[k + 1] == '=') {
                    size_t d = k + 2;
                    refused = d < e && v.ptr[d] == '0';
                    for (d++; refused && d < e && v.ptr[d] != ' ' && v.ptr[d] != ';'; d++)
                        if (v.ptr[d] != '.' && v.ptr[d] != '0')
                            refused = false;
                    break;
                }
            }
            if (!refused)
                return true;
        }
        i = j + 1;
    }
    return false;
}

/* Does If-None-Match name this ETag (or "*")? */
static bool not_modified(const struct http_request *h, const char *etag)
{
    const struct http_header *hd = http_find_header(h, "if-none-match");
    if (!hd)
        return false;
    size_t n = strlen(etag);
    struct slice v = hd->value;
    for (size_t i = 0; i < v.len; i++) {
        if (v.ptr[i] == '*')
            return true;
        if (i + n <= v.len && memcmp(v.ptr + i, etag, n) == 0)
            return true;
    }
    return false;
}

static const struct ui_asset *find_asset(struct slice name)
{
    for (size_t i = 0; i < ui_asset_count; i++)
        if (slice_eq_cstr(name, ui_assets[i].name))
            return &ui_assets[i];
    return NULL;
}

static void serve(struct rctx *x, const struct ui_asset *a)
{
    const struct http_request *h = http_req_head(x->req);
    bool gz = header_lists(h, "accept-encoding", "gzip", "*");
    const char *etag = gz ? a->etag_gz : a->etag;
    bool html = strncmp(a->content_type, "text/html", 9) == 0;
    char extra[1024];
    snprintf(extra, sizeof extra,
             "ETag: %s\r\nCache-Control: no-cache\r\nVary: Accept-Encoding\r\n"
             "X-Content-Type-Options: nosniff\r\n%s%s",
             etag, gz ? "Content-Encoding: gzip\r\n" : "",
             html ? UI_CSP "Referrer-Policy: no-referrer\r\nX-Frame-Options: DENY\r\n" : "");
    if (not_modified(h, etag)) {
        api_respond_bytes(x, 304, NULL, extra, "", 0);
        return;
    }
    if (gz)
        api_respond_bytes(x, 200, a->content_type, extra, a->gz, a->gz_len);
    else
        api_respond_bytes(x, 200, a->content_type, extra, a->data, a->len);
}

static void h_ui_index(struct rctx *x, const struct route_match *m)
{
    (void)m;
    const struct ui_asset *a = find_asset(slice_of("index.html", 10));
    if (!a) {
        api_respond_error(x, ERR_NOT_FOUND, "This build has no console");
        return;
    }
    serve(x, a);
}

static void h_ui_file(struct rctx *x, const struct route_match *m)
{
    const struct ui_asset *a = find_asset(route_param(m, "path"));
    if (!a) {
        api_respond_error(x, ERR_NOT_FOUND, "No such console file");
        return;
    }
    serve(x, a);
}

/* GET /: a browser (Accept names text/html) is sent to the console; everything else gets the
 * 404 it always got, so scripts probing / see no change. */
static void h_root(struct rctx *x, const struct route_match *m)
{
    (void)m;
    if (header_lists(http_req_head(x->req), "accept", "text/html", NULL)) {
        api_respond_bytes(x, 302, "text/plain; charset=utf-8",
                          "Location: /ui/\r\nVary: Accept\r\nCache-Control: no-cache\r\n",
                          "See /ui/\n", 9);
        return;
    }
    api_respond_error(x, ERR_NO_ROUTE, "No such route; see docs/HTTP_API.md");
}

const struct api_route api_ui_routes[] = {
    {"GET", "/", "root", SCOPE_NONE, 0, h_root},
    {"GET", "/ui", "ui", SCOPE_NONE, 0, h_ui_index},
    {"GET", "/ui/*path", "ui", SCOPE_NONE, 0, h_ui_file},
    API_ROUTES_END,
};
