/* admin.c -- the request/answer subcommands: topics, groups, kv, query, cluster.
 *
 * Each one is a thin mapping from a command line to one or two API calls (docs/HTTP_API.md) and
 * from the JSON answer to a table or a line of text; with -J the server's JSON is printed as it
 * came. Names typed by the user go into paths percent-encoded, never raw.
 *
 * Invariants:
 *   1. One subcommand action = the documented API call(s); no hidden retries of writes (hc
 *      follows a 307, which means the write was not taken, and nothing else).
 *   2. Unknown actions and missing arguments are usage errors (exit 2) before anything is sent.
 */
#include "cli/cmd.h"

#include "base/b64.h"
#include "base/err.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Build a path: fmt with %s replaced by escaped segments (only %s is supported). */
static const char *path_of(struct sbuf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    sbuf_reset(b);
    for (const char *p = fmt; *p; p++) {
        if (p[0] == '%' && p[1] == 's') {
            const char *s = va_arg(ap, const char *);
            hc_escape(b, s, strlen(s));
            p++;
        } else {
            sbuf_putc(b, (uint8_t)*p);
        }
    }
    va_end(ap);
    sbuf_putc(b, 0);
    return (const char *)b->data;
}

static json_t *parse_body(struct slice body)
{
    json_error_t je;
    json_t *j = json_loadb((const char *)body.ptr, body.len, 0, &je);
    if (!j)
        fprintf(stderr, "ayder: the server's answer is not JSON: %s\n", je.text);
    return j;
}

/* Scalars as text for tables: strings as they are, numbers, true/false, null as "-". */
static const char *cell(json_t *v, char *buf, size_t cap)
{
    if (!v || json_is_null(v))
        return "-";
    if (json_is_string(v))
        return json_string_value(v);
    if (json_is_integer(v)) {
        snprintf(buf, cap, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        return buf;
    }
    if (json_is_real(v)) {
        snprintf(buf, cap, "%g", json_real_value(v));
        return buf;
    }
    if (json_is_boolean(v))
        return json_is_true(v) ? "true" : "false";
    char *s = json_dumps(v, JSON_COMPACT);
    snprintf(buf, cap, "%s", s ? s : "?");
    free(s);
    return buf;
}

/* Print an array of objects as a table of the given members. */
static void print_rows(json_t *arr, size_t cols, const char *const *keys, const char *const *head)
{
    struct table t;
    table_init(&t, cols, head);
    size_t i;
    json_t *o;
    json_array_foreach(arr, i, o)
    {
        char bufs[16][128];
        const char *row[16];
        for (size_t c = 0; c < cols && c < 16; c++)
            row[c] = cell(json_object_get(o, keys[c]), bufs[c], sizeof bufs[c]);
        table_add(&t, row);
    }
    table_print(&t, stdout);
    table_free(&t);
}

static int usage_err(struct cli *cli, const char *syn, const char *about, const struct opt *o)
{
    opt_usage(cli->help ? stdout : stderr, syn, about, o);
    return cli->help ? CLI_EXIT_OK : CLI_EXIT_USAGE;
}

/* ---- topics -------------------------------------------------------------------------------- */

static const char topics_syn[] = "ayder topics list | create NAME [--partitions N] | describe NAME "
                                 "| delete NAME";
static const char topics_about[] =
    "List, create, describe (partitions with earliest/latest offsets, records, bytes) or delete\n"
    "topics. create of an existing topic with the same partition count succeeds (created: no).\n";

int cmd_topics(struct cli *cli, int argc, char **argv)
{
    const char *parts = NULL;
    const struct opt opts[] = {
        {"--partitions", 'p', "N", "create: partition count (server default: 8)", &parts},
        OPT_END,
    };
    const char *pos[2];
    int n, rc = opt_parse(cli, opts, argc, argv, pos, 2, &n);
    if (rc)
        return rc;
    if (cli->help || n == 0)
        return usage_err(cli, topics_syn, topics_about, opts);
    const char *act = pos[0];
    bool needs_name = strcmp(act, "list") != 0;
    if (strcmp(act, "list") && strcmp(act, "create") && strcmp(act, "describe") &&
        strcmp(act, "delete")) {
        fprintf(stderr, "ayder topics: unknown action '%s'\n", act);
        return usage_err(cli, topics_syn, topics_about, opts);
    }
    if (needs_name != (n == 2))
        return usage_err(cli, topics_syn, topics_about, opts);
    uint64_t np = 0;
    if (parts && opt_u64("--partitions", parts, 1024, &np))
        return CLI_EXIT_USAGE;
    if ((rc = cli_connect(cli)))
        return rc;
    struct sbuf p;
    sbuf_init(&p, 0);
    struct hc_resp r;
    json_t *j = NULL;
    if (strcmp(act, "list") == 0) {
        if ((rc = cli_call(cli, "GET", "/broker/topics", NULL, NULL, 0, &r)))
            goto out;
        if (cli->json) {
            cli_print_json(r.body);
            goto out;
        }
        if (!(j = parse_body(r.body))) {
            rc = CLI_EXIT_ERROR;
            goto out;
        }
        static const char *const k[] = {"name", "partitions"};
        static const char *const h[] = {"TOPIC", "PARTITIONS"};
        print_rows(json_object_get(j, "topics"), 2, k, h);
    } else if (strcmp(act, "create") == 0) {
        json_t *req = json_pack("{s:s}", "name", pos[1]);
        if (parts)
            json_object_set_new(req, "partitions", json_integer((json_int_t)np));
        char *body = json_dumps(req, JSON_COMPACT);
        json_decref(req);
        rc = cli_call(cli, "POST", "/broker/topics", "application/json", body, strlen(body), &r);
        free(body);
        if (rc)
            goto out;
        if (cli->json) {
            cli_print_json(r.body);
            goto out;
        }
        if (!(j = parse_body(r.body))) {
            rc = CLI_EXIT_ERROR;
            goto out;
        }
        json_t *cr = json_object_get(j, "created");
        printf("topic %s: %" JSON_INTEGER_FORMAT " partitions%s\n", pos[1],
               json_integer_value(json_object_get(j, "partitions")),
               json_is_false(cr) ? " (already existed)" : " (created)");
    } else if (strcmp(act, "describe") == 0) {
        if ((rc = cli_call(cli, "GET", path_of(&p, "/broker/topics/%s", pos[1]), NULL, NULL, 0,
                           &r)))
            goto out;
        if (cli->json) {
            cli_print_json(r.body);
            goto out;
        }
        if (!(j = parse_body(r.body))) {
            rc = CLI_EXIT_ERROR;
            goto out;
        }
        static const char *const k[] = {"partition", "earliest_offset", "latest_offset", "records",
                                        "bytes", "segments"};
        static const char *const h[] = {"PARTITION", "EARLIEST", "LATEST", "RECORDS", "BYTES",
                                        "SEGMENTS"};
        print_rows(json_object_get(j, "partitions"), 6, k, h);
    } else {
        if ((rc = cli_call(cli, "DELETE", path_of(&p, "/broker/topics/%s", pos[1]), NULL, NULL,
                           0, &r)))
            goto out;
        if (cli->json)
            cli_print_json(r.body);
        else
            printf("topic %s deleted\n", pos[1]);
    }
out:
    json_decref(j);
    sbuf_free(&p);
    return rc;
}

/* ---- groups -------------------------------------------------------------------------------- */

static const char groups_syn[] = "ayder groups list | describe GROUP [TOPIC]";
static const char groups_about[] =
    "Consumer groups: list (every group that committed, with its total lag) or describe one\n"
    "(committed offset, log end and lag per topic and partition).\n";

int cmd_groups(struct cli *cli, int argc, char **argv)
{
    const struct opt opts[] = {OPT_END};
    const char *pos[3];
    int n, rc = opt_parse(cli, opts, argc, argv, pos, 3, &n);
    if (rc)
        return rc;
    if (cli->help || n == 0)
        return usage_err(cli, groups_syn, groups_about, opts);
    bool list = strcmp(pos[0], "list") == 0, desc = strcmp(pos[0], "describe") == 0;
    if ((!list && !desc) || (list && n != 1) || (desc && n < 2)) {
        if (!list && !desc)
            fprintf(stderr, "ayder groups: unknown action '%s'\n", pos[0]);
        return usage_err(cli, groups_syn, groups_about, opts);
    }
    if ((rc = cli_connect(cli)))
        return rc;
    struct sbuf p;
    sbuf_init(&p, 0);
    struct hc_resp r;
    json_t *j = NULL;
    const char *path = list ? "/broker/groups"
                       : n == 3 ? path_of(&p, "/broker/groups/%s/%s", pos[1], pos[2])
                                : path_of(&p, "/broker/groups/%s", pos[1]);
    if ((rc = cli_call(cli, "GET", path, NULL, NULL, 0, &r)))
        goto out;
    if (cli->json) {
        cli_print_json(r.body);
        goto out;
    }
    if (!(j = parse_body(r.body))) {
        rc = CLI_EXIT_ERROR;
        goto out;
    }
    if (list) {
        static const char *const k[] = {"group", "topics", "partitions", "lag"};
        static const char *const h[] = {"GROUP", "TOPICS", "PARTITIONS", "LAG"};
        print_rows(json_object_get(j, "groups"), 4, k, h);
    } else {
        json_t *arr = json_object_get(j, n == 3 ? "partitions" : "offsets");
        if (n == 3) {
            size_t i;
            json_t *o;
            json_array_foreach(arr, i, o) json_object_set(o, "topic", json_object_get(j, "topic"));
        }
        if (json_array_size(arr) == 0) {
            fprintf(stderr, "ayder groups: group %s has no committed offsets%s%s\n", pos[1],
                    n == 3 ? " on " : "", n == 3 ? pos[2] : "");
            rc = CLI_EXIT_NOT_FOUND;
            goto out;
        }
        static const char *const k[] = {"topic", "partition", "committed_offset", "latest_offset",
                                        "lag"};
        static const char *const h[] = {"TOPIC", "PARTITION", "COMMITTED", "LATEST", "LAG"};
        print_rows(arr, 5, k, h);
    }
out:
    json_decref(j);
    sbuf_free(&p);
    return rc;
}

/* ---- kv ------------------------------------------------------------------------------------ */

static const char kv_syn[] = "ayder kv get NS KEY | put NS KEY [VALUE|-] [--cas N] [--ttl-ms N] | "
                             "del NS KEY [--cas N] | list NS [--prefix P] [--limit N]";
static const char kv_about[] =
    "The KV store. get prints the value's bytes (with -J the JSON answer: base64 value, cas);\n"
    "put takes the value as an argument or, with '-' or none, from stdin; --cas 0 = create only;\n"
    "list pages through every key (--limit caps the total).\n";

static int read_all(FILE *f, struct sbuf *b)
{
    for (;;) {
        uint8_t *d = sbuf_reserve(b, 65536);
        if (!d)
            return ERR_NOMEM;
        size_t k = fread(d, 1, 65536, f);
        b->len += k;
        if (k == 0)
            return ferror(f) ? ERR_IO : 0;
    }
}

int cmd_kv(struct cli *cli, int argc, char **argv)
{
    const char *cas = NULL, *ttl = NULL, *prefix = NULL, *limit = NULL;
    const struct opt opts[] = {
        {"--cas", 0, "N", "put/del: only if the version is N (put: 0 = only if absent)", &cas},
        {"--ttl-ms", 0, "N", "put: expire after N ms", &ttl},
        {"--prefix", 0, "P", "list: keys starting with P", &prefix},
        {"--limit", 0, "N", "list: at most N keys in all", &limit},
        OPT_END,
    };
    const char *pos[4];
    int n, rc = opt_parse(cli, opts, argc, argv, pos, 4, &n);
    if (rc)
        return rc;
    if (cli->help || n == 0)
        return usage_err(cli, kv_syn, kv_about, opts);
    const char *act = pos[0];
    bool get = !strcmp(act, "get"), put = !strcmp(act, "put"), del = !strcmp(act, "del"),
         list = !strcmp(act, "list");
    if (!get && !put && !del && !list) {
        fprintf(stderr, "ayder kv: unknown action '%s'\n", act);
        return usage_err(cli, kv_syn, kv_about, opts);
    }
    if ((list && n != 2) || ((get || del) && n != 3) || (put && n < 3))
        return usage_err(cli, kv_syn, kv_about, opts);
    uint64_t v64;
    if ((cas && opt_u64("--cas", cas, UINT64_MAX, &v64)) ||
        (ttl && opt_u64("--ttl-ms", ttl, UINT64_MAX, &v64)))
        return CLI_EXIT_USAGE;
    uint64_t lim = UINT64_MAX;
    if (limit && opt_u64("--limit", limit, UINT64_MAX, &lim))
        return CLI_EXIT_USAGE;
    struct sbuf val;
    sbuf_init(&val, 0);
    if (put) {
        if (n == 4 && strcmp(pos[3], "-") != 0) {
            sbuf_append(&val, pos[3], strlen(pos[3]));
        } else if (read_all(stdin, &val)) {
            fprintf(stderr, "ayder kv put: reading stdin: %s\n", strerror(errno));
            sbuf_free(&val);
            return CLI_EXIT_ERROR;
        }
    }
    if ((rc = cli_connect(cli))) {
        sbuf_free(&val);
        return rc;
    }
    struct sbuf p;
    sbuf_init(&p, 0);
    struct hc_resp r;
    json_t *j = NULL;
    if (get || put || del) {
        path_of(&p, "/kv/%s/", pos[1]);
        p.len--; /* the NUL */
        hc_escape(&p, pos[2], strlen(pos[2]));
        char sep = '?';
        if (cas) {
            sbuf_printf(&p, "%ccas=%s", sep, cas);
            sep = '&';
        }
        if (ttl && put)
            sbuf_printf(&p, "%cttl_ms=%s", sep, ttl);
        sbuf_putc(&p, 0);
        const char *path = (const char *)p.data;
        if (get) {
            rc = cli_call(cli, "GET", path, NULL, NULL, 0, &r);
        } else if (put) {
            rc = cli_call(cli, "PUT", path, "application/octet-stream", val.data, val.len, &r);
        } else {
            rc = cli_call(cli, "DELETE", path, NULL, NULL, 0, &r);
        }
        if (rc)
            goto out;
        if (cli->json) {
            cli_print_json(r.body);
            goto out;
        }
        if (!(j = parse_body(r.body))) {
            rc = CLI_EXIT_ERROR;
            goto out;
        }
        if (get) {
            const char *b64 = json_string_value(json_object_get(j, "value"));
            struct sbuf out;
            sbuf_init(&out, 0);
            if (!b64 || b64_decode(&out, (const uint8_t *)b64, strlen(b64))) {
                fprintf(stderr, "ayder kv get: the answer has no base64 value\n");
                rc = CLI_EXIT_ERROR;
            } else {
                fwrite(out.data, 1, out.len, stdout);
                if (isatty(1) && (out.len == 0 || out.data[out.len - 1] != '\n'))
                    fputc('\n', stdout);
            }
            sbuf_free(&out);
        } else if (put) {
            printf("%s/%s: cas %" JSON_INTEGER_FORMAT "\n", pos[1], pos[2],
                   json_integer_value(json_object_get(j, "cas")));
        } else {
            bool d = json_is_true(json_object_get(j, "deleted"));
            printf("%s/%s: %s\n", pos[1], pos[2], d ? "deleted" : "not present");
        }
        goto out;
    }
    /* list: follow next_after until null or the limit. */
    {
        struct table t;
        static const char *const h[] = {"KEY", "CAS", "TTL_MS", "SIZE"};
        table_init(&t, 4, h);
        char *after = NULL;
        uint64_t shown = 0;
        json_t *all = json_array();
        for (;;) {
            uint64_t page = lim - shown < 1000 ? lim - shown : 1000;
            if (page == 0)
                break;
            path_of(&p, "/kv/%s", pos[1]);
            p.len--;
            sbuf_printf(&p, "?limit=%" PRIu64, page);
            if (prefix) {
                sbuf_puts(&p, "&prefix=");
                hc_escape(&p, prefix, strlen(prefix));
            }
            if (after) {
                sbuf_puts(&p, "&after=");
                hc_escape(&p, after, strlen(after));
            }
            sbuf_putc(&p, 0);
            if ((rc = cli_call(cli, "GET", (const char *)p.data, NULL, NULL, 0, &r)))
                break;
            json_decref(j);
            if (!(j = parse_body(r.body))) {
                rc = CLI_EXIT_ERROR;
                break;
            }
            size_t i;
            json_t *o;
            json_array_foreach(json_object_get(j, "keys"), i, o)
            {
                json_array_append(all, o);
                char b[3][64];
                const char *key = json_string_value(json_object_get(o, "key"));
                const char *row[4] = {key ? key : json_string_value(json_object_get(o, "key_b64")),
                                      cell(json_object_get(o, "cas"), b[0], 64),
                                      cell(json_object_get(o, "ttl_ms"), b[1], 64),
                                      cell(json_object_get(o, "size"), b[2], 64)};
                table_add(&t, row);
                shown++;
            }
            const char *na = json_string_value(json_object_get(j, "next_after"));
            free(after);
            after = na ? strdup(na) : NULL;
            if (!after)
                break;
        }
        free(after);
        if (rc == 0) {
            if (cli->json) {
                json_t *o = json_pack("{s:b,s:O}", "ok", 1, "keys", all);
                char *s = json_dumps(o, JSON_COMPACT);
                puts(s);
                free(s);
                json_decref(o);
            } else {
                table_print(&t, stdout);
            }
        }
        json_decref(all);
        table_free(&t);
    }
out:
    json_decref(j);
    sbuf_free(&p);
    sbuf_free(&val);
    return rc;
}

/* ---- query --------------------------------------------------------------------------------- */

static const char query_syn[] = "ayder query FILE|-";
static const char query_about[] =
    "POST a query (docs/STREAM.md) from FILE or stdin to /broker/query. The answer's rows and\n"
    "aggregates are printed one JSON object per line (-J: the whole answer). A query with\n"
    "\"follow\": true streams: each event is printed as it arrives, until the query ends or ^C.\n";

int cmd_query(struct cli *cli, int argc, char **argv)
{
    const struct opt opts[] = {OPT_END};
    const char *pos[1];
    int n, rc = opt_parse(cli, opts, argc, argv, pos, 1, &n);
    if (rc)
        return rc;
    if (cli->help || n != 1)
        return usage_err(cli, query_syn, query_about, opts);
    struct sbuf q;
    sbuf_init(&q, 64u << 20);
    FILE *f = strcmp(pos[0], "-") == 0 ? stdin : fopen(pos[0], "rb");
    if (!f || read_all(f, &q) || !sbuf_ok(&q)) {
        fprintf(stderr, "ayder query: cannot read %s: %s\n", pos[0],
                !sbuf_ok(&q) ? "over 64 MiB" : strerror(errno));
        if (f && f != stdin)
            fclose(f);
        sbuf_free(&q);
        return CLI_EXIT_USAGE;
    }
    if (f != stdin)
        fclose(f);
    json_error_t je;
    json_t *qj = json_loadb((const char *)q.data, q.len, 0, &je);
    if (!qj) {
        fprintf(stderr, "ayder query: %s: not JSON (line %d: %s)\n", pos[0], je.line, je.text);
        sbuf_free(&q);
        return CLI_EXIT_USAGE;
    }
    bool follow = json_is_true(json_object_get(qj, "follow"));
    json_decref(qj);
    if ((rc = cli_connect(cli))) {
        sbuf_free(&q);
        return rc;
    }
    struct hc_resp r;
    json_t *j = NULL;
    if (follow) {
        const char *hdr[] = {"Accept: application/x-ndjson", NULL};
        int e = hc_stream_open(&cli->hc, "POST", "/broker/query?stream=ndjson", hdr,
                               "application/json", q.data, q.len, &r);
        if (e) {
            rc = cli_fail_io(cli, "POST /broker/query", e);
            goto out;
        }
        if (r.status < 200 || r.status >= 300) {
            rc = cli_fail_http(cli, "POST /broker/query", &r);
            goto out;
        }
        struct sbuf s;
        sbuf_init(&s, 0);
        for (;;) {
            e = hc_stream_read(&cli->hc, &s);
            if (e < 0) {
                rc = cli_fail_io(cli, "query stream", e);
                break;
            }
            uint8_t *nl;
            while ((nl = memchr(s.data, '\n', s.len))) {
                size_t l = (size_t)(nl - s.data) + 1;
                fwrite(s.data, 1, l, stdout);
                sbuf_consume(&s, l);
            }
            fflush(stdout);
            if (e == 1)
                break;
        }
        if (s.len)
            fwrite(s.data, 1, s.len, stdout);
        sbuf_free(&s);
        goto out;
    }
    if ((rc = cli_call(cli, "POST", "/broker/query", "application/json", q.data, q.len, &r)))
        goto out;
    if (cli->json) {
        cli_print_json(r.body);
        goto out;
    }
    if (!(j = parse_body(r.body))) {
        rc = CLI_EXIT_ERROR;
        goto out;
    }
    static const char *const members[] = {"rows", "aggregates"};
    for (size_t m = 0; m < 2; m++) {
        size_t i;
        json_t *o;
        json_array_foreach(json_object_get(j, members[m]), i, o)
        {
            char *s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
            if (s)
                puts(s);
            free(s);
        }
    }
    json_t *st = json_object_get(j, "stats");
    json_t *src = json_object_get(j, "source");
    char *ss = st ? json_dumps(st, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    fprintf(stderr, "stats: %s next_offset: %" JSON_INTEGER_FORMAT "%s\n", ss ? ss : "{}",
            json_integer_value(json_object_get(src, "next_offset")),
            json_is_true(json_object_get(j, "committed")) ? " (committed)" : "");
    free(ss);
out:
    json_decref(j);
    sbuf_free(&q);
    return rc;
}

/* ---- cluster ------------------------------------------------------------------------------- */

static const char cluster_syn[] =
    "ayder cluster status | transfer ID | add ID --host H --raft-port P --http-port P "
    "[--priority N] | promote ID | remove ID";
static const char cluster_about[] =
    "Raft cluster: status (GET /ha/status: this node, the leader, voters, learners, peers and\n"
    "their lag) and membership changes (POST /ha/membership, admin scope; sent to the leader\n"
    "through its redirect). transfer hands leadership to voter ID.\n";

int cmd_cluster(struct cli *cli, int argc, char **argv)
{
    const char *host = NULL, *raft_port = NULL, *http_port = NULL, *prio = NULL;
    const struct opt opts[] = {
        {"--host", 0, "H", "add: the new node's host", &host},
        {"--raft-port", 0, "P", "add: its Raft port", &raft_port},
        {"--http-port", 0, "P", "add: its HTTP port", &http_port},
        {"--priority", 0, "N", "add: its leadership priority", &prio},
        OPT_END,
    };
    const char *pos[2];
    int n, rc = opt_parse(cli, opts, argc, argv, pos, 2, &n);
    if (rc)
        return rc;
    if (cli->help || n == 0)
        return usage_err(cli, cluster_syn, cluster_about, opts);
    const char *act = pos[0];
    bool status = !strcmp(act, "status");
    bool member = !strcmp(act, "transfer") || !strcmp(act, "add") || !strcmp(act, "promote") ||
                  !strcmp(act, "remove");
    if (!status && !member) {
        fprintf(stderr, "ayder cluster: unknown action '%s'\n", act);
        return usage_err(cli, cluster_syn, cluster_about, opts);
    }
    if ((status && n != 1) || (member && n != 2))
        return usage_err(cli, cluster_syn, cluster_about, opts);
    uint64_t rp = 0, hp = 0, pr = 0;
    if (!strcmp(act, "add")) {
        if (!host || !raft_port) {
            fprintf(stderr, "ayder cluster add: --host and --raft-port are required\n");
            return CLI_EXIT_USAGE;
        }
        if (opt_u64("--raft-port", raft_port, 65535, &rp) ||
            (http_port && opt_u64("--http-port", http_port, 65535, &hp)) ||
            (prio && opt_u64("--priority", prio, 1000000, &pr)))
            return CLI_EXIT_USAGE;
    }
    if ((rc = cli_connect(cli)))
        return rc;
    struct hc_resp r;
    json_t *j = NULL;
    if (status) {
        if ((rc = cli_call(cli, "GET", "/ha/status", NULL, NULL, 0, &r)))
            goto out;
        if (cli->json) {
            cli_print_json(r.body);
            goto out;
        }
        if (!(j = parse_body(r.body))) {
            rc = CLI_EXIT_ERROR;
            goto out;
        }
        char b[8][64];
        printf("node %s  role %s  term %s  leader %s (%s)\n",
               cell(json_object_get(j, "node_id"), b[0], 64),
               cell(json_object_get(j, "role"), b[1], 64), cell(json_object_get(j, "term"), b[2], 64),
               cell(json_object_get(j, "leader_id"), b[3], 64),
               cell(json_object_get(j, "leader_url"), b[4], 64));
        printf("commit %s  applied %s  last %s  write concern %s\n",
               cell(json_object_get(j, "commit_index"), b[0], 64),
               cell(json_object_get(j, "applied_index"), b[1], 64),
               cell(json_object_get(j, "last_index"), b[2], 64),
               cell(json_object_get(j, "write_concern"), b[3], 64));
        char *v = json_dumps(json_object_get(j, "voters"), JSON_COMPACT);
        char *l = json_dumps(json_object_get(j, "learners"), JSON_COMPACT);
        printf("voters %s  learners %s\n", v ? v : "[]", l ? l : "[]");
        free(v);
        free(l);
        json_t *peers = json_object_get(j, "peers");
        if (json_array_size(peers)) {
            static const char *const k[] = {"id", "url", "connected", "match_index", "lag"};
            static const char *const h[] = {"PEER", "URL", "CONNECTED", "MATCH", "LAG"};
            print_rows(peers, 5, k, h);
        }
        goto out;
    }
    json_t *req = json_pack("{s:s,s:s}", "op", act, "id", pos[1]);
    if (!strcmp(act, "add")) {
        json_object_set_new(req, "host", json_string(host));
        json_object_set_new(req, "raft_port", json_integer((json_int_t)rp));
        if (http_port)
            json_object_set_new(req, "http_port", json_integer((json_int_t)hp));
        if (prio)
            json_object_set_new(req, "priority", json_integer((json_int_t)pr));
    }
    char *body = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    rc = cli_call(cli, "POST", "/ha/membership", "application/json", body, strlen(body), &r);
    free(body);
    if (rc)
        goto out;
    if (cli->json)
        cli_print_json(r.body);
    else
        printf("%s %s: ok\n", act, pos[1]);
out:
    json_decref(j);
    return rc;
}
