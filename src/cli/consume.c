/* consume.c -- `ayder consume` and `ayder tail [-f]`: print records, kcat style.
 *
 * Both read through the subscription route (GET /broker/subscribe/{topic}/{group}?stream=ndjson,
 * docs/HTTP_API.md "Subscribe"): one streaming answer for every partition, pull-based on the
 * server, so a slow terminal never grows anything but the log's read position. Values, keys and
 * headers are asked for in base64 (encoding=b64) and decoded here, so %s prints a record's exact
 * bytes whatever they are; with -J the record events are printed as the server sends them
 * (without b64: JSON values stay JSON).
 *
 *   start: --offset N | --from earliest|latest|committed|time:MS|offset:N  (consume default:
 *          committed for -g, else earliest; tail: the last -n records of each partition, sent as
 *          a constructed Last-Event-ID "p:off,..." since every partition starts elsewhere)
 *   end:   without -f, the log end of each partition as it was at start (GET /broker/topics/T);
 *          -c N stops after N records (the server's limit=N); -f runs until ^C or the topic goes.
 *
 * Invariants:
 *   1. Without -f the command ends: every subscribed partition reaches the end offset taken at
 *      start (records appended later are not waited for), or the count is reached.
 *   2. With -f a stream ended by the server for a transient reason (shutdown, slow_subscriber,
 *      overloaded, a broken connection) is resumed from the last event id: nothing is printed
 *      twice, nothing skipped. topic_deleted ends the command (exit 4).
 *   3. stdout gets only formatted records and is flushed after every read, so a pipe sees records
 *      as they arrive.
 */
#include "cli/cmd.h"

#include "base/b64.h"
#include "base/err.h"

#include <inttypes.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define PARTS_MAX 1024

struct cons {
    struct cli *cli;
    const char *topic, *format;
    bool follow;
    uint32_t nparts;           /* partitions of the topic */
    bool sub[PARTS_MAX];       /* subscribed */
    uint64_t end[PARTS_MAX];   /* log end at start (non-follow) */
    uint64_t pos[PARTS_MAX];   /* next offset to print */
    bool pos_known[PARTS_MAX];
    uint64_t printed, count;   /* count 0 = unlimited */
    char last_id[PARTS_MAX * 12];
    struct sbuf out, dec;
};

/* Parse an event id "p:off,p:off" into the positions. */
static void take_id(struct cons *c, const char *id)
{
    if (!id)
        return;
    snprintf(c->last_id, sizeof c->last_id, "%s", id);
    const char *p = id;
    while (*p) {
        char *e;
        unsigned long part = strtoul(p, &e, 10);
        if (*e != ':')
            return;
        unsigned long long off = strtoull(e + 1, &e, 10);
        if (part < PARTS_MAX) {
            c->pos[part] = off;
            c->pos_known[part] = true;
        }
        if (*e != ',')
            return;
        p = e + 1;
    }
}

static bool all_done(const struct cons *c)
{
    if (c->follow)
        return false;
    for (uint32_t p = 0; p < c->nparts; p++)
        if (c->sub[p] && (!c->pos_known[p] || c->pos[p] < c->end[p]))
            return false;
    return true;
}

static void put_b64_field(struct cons *c, json_t *rec, const char *name, bool *has)
{
    const char *v = json_string_value(json_object_get(rec, name));
    *has = v != NULL;
    if (v && b64_decode(&c->dec, (const uint8_t *)v, strlen(v)) == 0)
        sbuf_append(&c->out, c->dec.data, c->dec.len);
    sbuf_reset(&c->dec);
}

/* Render one record through the format string into c->out. */
static void render(struct cons *c, json_t *rec)
{
    bool has;
    for (const char *f = c->format; *f; f++) {
        if (*f == '\\' && f[1]) {
            f++;
            char ch = *f == 'n' ? '\n' : *f == 't' ? '\t' : *f == 'r' ? '\r' : *f == '0' ? 0 : *f;
            sbuf_putc(&c->out, (uint8_t)ch);
            continue;
        }
        if (*f != '%' || !f[1]) {
            sbuf_putc(&c->out, (uint8_t)*f);
            continue;
        }
        f++;
        switch (*f) {
        case 's':
            put_b64_field(c, rec, "value_b64", &has);
            break;
        case 'k':
            put_b64_field(c, rec, "key_b64", &has);
            break;
        case 'S':
        case 'K': {
            const char *v = json_string_value(json_object_get(rec, *f == 'S' ? "value_b64" : "key_b64"));
            if (v && b64_decode(&c->dec, (const uint8_t *)v, strlen(v)) == 0)
                sbuf_printf(&c->out, "%zu", c->dec.len);
            else
                sbuf_puts(&c->out, *f == 'S' ? "0" : "-1");
            sbuf_reset(&c->dec);
            break;
        }
        case 'o':
            sbuf_printf(&c->out, "%" JSON_INTEGER_FORMAT, json_integer_value(json_object_get(rec, "offset")));
            break;
        case 'p':
            sbuf_printf(&c->out, "%" JSON_INTEGER_FORMAT, json_integer_value(json_object_get(rec, "partition")));
            break;
        case 'T':
            sbuf_printf(&c->out, "%" JSON_INTEGER_FORMAT, json_integer_value(json_object_get(rec, "timestamp_ms")));
            break;
        case 't':
            sbuf_puts(&c->out, c->topic);
            break;
        case 'h': {
            json_t *h = json_object_get(rec, "headers_b64");
            if (!h)
                h = json_object_get(rec, "headers");
            const char *k;
            json_t *v;
            bool first = true;
            json_object_foreach(h, k, v)
            {
                if (!first)
                    sbuf_putc(&c->out, ',');
                first = false;
                sbuf_printf(&c->out, "%s=", k);
                const char *s = json_string_value(v);
                if (s && b64_decode(&c->dec, (const uint8_t *)s, strlen(s)) == 0)
                    sbuf_append(&c->out, c->dec.data, c->dec.len);
                sbuf_reset(&c->dec);
            }
            break;
        }
        case '%':
            sbuf_putc(&c->out, '%');
            break;
        default:
            sbuf_putc(&c->out, '%');
            sbuf_putc(&c->out, (uint8_t)*f);
        }
    }
}

/* Handle one NDJSON line. Returns 0 to go on, 1 to stop (done), or an exit code + 100. */
static int on_line(struct cons *c, const uint8_t *line, size_t n, const char **end_reason)
{
    json_error_t je;
    json_t *j = json_loadb((const char *)line, n, 0, &je);
    if (!j) {
        fprintf(stderr, "ayder: a stream line is not JSON: %s\n", je.text);
        return 100 + CLI_EXIT_ERROR;
    }
    const char *type = json_string_value(json_object_get(j, "type"));
    int rc = 0;
    if (!type) {
        rc = 0;
    } else if (strcmp(type, "record") == 0) {
        uint64_t part = (uint64_t)json_integer_value(json_object_get(j, "partition"));
        uint64_t off = (uint64_t)json_integer_value(json_object_get(j, "offset"));
        /* Without -f, records at or past the start-time end are not ours (invariant 1). */
        bool beyond = !c->follow && part < PARTS_MAX && off >= c->end[part];
        if (!beyond) {
            if (c->cli->json) {
                sbuf_append(&c->out, line, n);
                sbuf_putc(&c->out, '\n');
            } else {
                render(c, j);
            }
            c->printed++;
        }
        take_id(c, json_string_value(json_object_get(j, "id")));
        if ((c->count && c->printed >= c->count) || all_done(c))
            rc = 1;
    } else if (strcmp(type, "subscribed") == 0 || strcmp(type, "floor_adjusted") == 0) {
        take_id(c, json_string_value(json_object_get(j, "id")));
        if (strcmp(type, "floor_adjusted") == 0)
            fprintf(stderr, "ayder: partition %" JSON_INTEGER_FORMAT
                            ": records below %" JSON_INTEGER_FORMAT " were removed by retention\n",
                    json_integer_value(json_object_get(j, "partition")),
                    json_integer_value(json_object_get(j, "to")));
        if (all_done(c))
            rc = 1;
    } else if (strcmp(type, "end") == 0) {
        take_id(c, json_string_value(json_object_get(j, "resume_id")));
        const char *reason = json_string_value(json_object_get(j, "reason"));
        static char why[64];
        snprintf(why, sizeof why, "%s", reason ? reason : "?");
        *end_reason = why;
    }
    json_decref(j);
    return rc;
}

static const char cons_syn[] = "ayder consume TOPIC [options]   |   ayder tail [-f] TOPIC [options]";
static const char cons_about[] =
    "Print the records of a topic (every partition unless -p), one per --format, then exit at\n"
    "the end of the log as it was when the command started; -f/--follow keeps printing new\n"
    "records until interrupted. tail starts at the last -n records of each partition.\n"
    "format (kcat): %s value  %k key  %o offset  %p partition  %T timestamp (ms)  %t topic\n"
    "  %h headers (k=v,...)  %S value size  %K key size (-1: none)  \\n \\t \\\\  %%\n"
    "-J prints the server's record events (NDJSON) instead.\n";

static int parse_parts(const char *s, struct cons *c)
{
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", s);
    for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
        uint64_t p;
        if (opt_u64("--partition", tok, PARTS_MAX - 1, &p))
            return CLI_EXIT_USAGE;
        c->sub[p] = true;
    }
    return 0;
}

int cmd_consume(struct cli *cli, int argc, char **argv)
{
    bool tail = strcmp(argv[0], "tail") == 0;
    const char *parts = NULL, *group = NULL, *offset = NULL, *from = NULL, *count = NULL,
               *format = NULL, *last = NULL;
    bool follow = false, commit = false, exit_at_end = false;
    const struct opt opts[] = {
        {"--partition", 'p', "P[,P...]", "only these partitions", &parts},
        {"--group", 'g', "G", "consumer group (ayder-cli); its committed offsets are the default "
                              "start with -g", &group},
        {"--offset", 'o', "N", "start at offset N of every partition", &offset},
        {"--from", 0, "WHERE", "earliest | latest | committed | time:MS | offset:N", &from},
        {"--lines", 'n', "N", "tail: start N records before each partition's end (10)", &last},
        {"--count", 'c', "N", "stop after N records", &count},
        {"--follow", 'f', NULL, "keep printing new records (until ^C)", NULL, &follow},
        {"--format", 0, "FMT", "output format (default '%s\\n')", &format},
        {"--commit", 0, NULL, "commit the group's offsets for what was printed (auto_commit)",
         NULL, &commit},
        {"--exit", 'e', NULL, "exit at the end of the log (the default without -f)", NULL,
         &exit_at_end},
        OPT_END,
    };
    const char *pos[1];
    int n, rc = opt_parse(cli, opts, argc, argv, pos, 1, &n);
    if (rc)
        return rc;
    if (cli->help || n != 1) {
        opt_usage(cli->help ? stdout : stderr, cons_syn, cons_about, opts);
        return cli->help ? 0 : CLI_EXIT_USAGE;
    }
    struct cons *c = calloc(1, sizeof *c);
    if (!c)
        return CLI_EXIT_ERROR;
    c->cli = cli;
    c->topic = pos[0];
    c->format = format ? format : "%s\\n";
    c->follow = follow && !exit_at_end;
    uint64_t v, tail_n = 10;
    if (count && (opt_u64("--count", count, UINT64_MAX, &c->count) || c->count == 0)) {
        rc = CLI_EXIT_USAGE;
        goto out_free;
    }
    if ((offset && opt_u64("--offset", offset, INT64_MAX, &v)) ||
        (last && opt_u64("--lines", last, INT64_MAX, &tail_n)) || (parts && parse_parts(parts, c))) {
        rc = CLI_EXIT_USAGE;
        goto out_free;
    }
    if (from && strcmp(from, "earliest") && strcmp(from, "latest") && strcmp(from, "committed") &&
        strncmp(from, "time:", 5) && strncmp(from, "offset:", 7)) {
        fprintf(stderr, "ayder %s: --from must be earliest|latest|committed|time:MS|offset:N\n",
                argv[0]);
        rc = CLI_EXIT_USAGE;
        goto out_free;
    }
    sbuf_init(&c->out, 0);
    sbuf_init(&c->dec, 0);
    if ((rc = cli_connect(cli)))
        goto out;

    /* The topic's partitions and their ends (also: unknown topic -> 404 before streaming). */
    struct sbuf p;
    sbuf_init(&p, 0);
    sbuf_puts(&p, "/broker/topics/");
    hc_escape(&p, c->topic, strlen(c->topic));
    sbuf_putc(&p, 0);
    struct hc_resp r;
    if ((rc = cli_call(cli, "GET", (const char *)p.data, NULL, NULL, 0, &r))) {
        sbuf_free(&p);
        goto out;
    }
    json_error_t je;
    json_t *d = json_loadb((const char *)r.body.ptr, r.body.len, 0, &je);
    json_t *arr = json_object_get(d, "partitions");
    size_t i;
    json_t *o;
    uint64_t earliest[PARTS_MAX] = {0};
    json_array_foreach(arr, i, o)
    {
        uint64_t part = (uint64_t)json_integer_value(json_object_get(o, "partition"));
        if (part >= PARTS_MAX)
            continue;
        c->end[part] = (uint64_t)json_integer_value(json_object_get(o, "latest_offset"));
        earliest[part] = (uint64_t)json_integer_value(json_object_get(o, "earliest_offset"));
        if (part + 1 > c->nparts)
            c->nparts = (uint32_t)part + 1;
    }
    json_decref(d);
    bool any = false;
    for (uint32_t q = 0; q < PARTS_MAX; q++) {
        if (q >= c->nparts && c->sub[q]) {
            fprintf(stderr, "ayder %s: topic %s has no partition %u\n", argv[0], c->topic, q);
            rc = CLI_EXIT_NOT_FOUND;
            sbuf_free(&p);
            goto out;
        }
        any |= c->sub[q];
    }
    if (!any)
        for (uint32_t q = 0; q < c->nparts; q++)
            c->sub[q] = true;

    /* Where to start. tail: a constructed event id (every partition starts elsewhere). */
    bool use_id = false;
    if (tail && !offset && !from) {
        char *w = c->last_id;
        size_t left = sizeof c->last_id;
        for (uint32_t q = 0; q < c->nparts; q++) {
            if (!c->sub[q])
                continue;
            uint64_t s = c->end[q] > tail_n ? c->end[q] - tail_n : 0;
            if (s < earliest[q])
                s = earliest[q];
            int k = snprintf(w, left, "%s%u:%" PRIu64, w == c->last_id ? "" : ",", q, s);
            w += k;
            left -= (size_t)k;
        }
        use_id = true;
    }
    const char *grp = group ? group : "ayder-cli";
    for (;;) {
        sbuf_reset(&p);
        sbuf_puts(&p, "/broker/subscribe/");
        hc_escape(&p, c->topic, strlen(c->topic));
        sbuf_putc(&p, '/');
        hc_escape(&p, grp, strlen(grp));
        sbuf_puts(&p, "?stream=ndjson&heartbeat_ms=15000");
        if (!cli->json)
            sbuf_puts(&p, "&encoding=b64");
        if (any) {
            sbuf_puts(&p, "&partitions=");
            bool first = true;
            for (uint32_t q = 0; q < c->nparts; q++)
                if (c->sub[q]) {
                    sbuf_printf(&p, first ? "%u" : "%%2C%u", q);
                    first = false;
                }
        }
        if (use_id) {
            sbuf_puts(&p, "&last_event_id=");
            hc_escape(&p, c->last_id, strlen(c->last_id));
        } else if (offset) {
            sbuf_printf(&p, "&from=offset:%s", offset);
        } else if (from) {
            sbuf_puts(&p, "&from=");
            hc_escape(&p, from, strlen(from));
        } else {
            sbuf_puts(&p, group ? "&from=committed" : "&from=earliest");
        }
        if (c->count)
            sbuf_printf(&p, "&limit=%" PRIu64, c->count - c->printed);
        if (commit)
            sbuf_puts(&p, "&auto_commit=1");
        sbuf_putc(&p, 0);
        int e = hc_stream_open(&cli->hc, "GET", (const char *)p.data, NULL, NULL, NULL, 0, &r);
        if (e) {
            rc = cli_fail_io(cli, "subscribe", e);
            break;
        }
        if (r.status != 200) {
            rc = cli_fail_http(cli, "subscribe", &r);
            break;
        }
        struct sbuf s;
        sbuf_init(&s, 0);
        const char *end_reason = NULL;
        int stop = 0;
        for (;;) {
            e = hc_stream_read(&cli->hc, &s);
            if (e < 0)
                break;
            uint8_t *nl;
            size_t off = 0;
            while (!stop && (nl = memchr(s.data + off, '\n', s.len - off))) {
                size_t l = (size_t)(nl - (s.data + off));
                stop = on_line(c, s.data + off, l, &end_reason);
                off += l + 1;
            }
            sbuf_consume(&s, off);
            if (c->out.len) {
                fwrite(c->out.data, 1, c->out.len, stdout);
                sbuf_reset(&c->out);
            }
            if (fflush(stdout) != 0) {
                stop = 100 + CLI_EXIT_ERROR;
                break;
            }
            if (stop || e == 1)
                break;
        }
        sbuf_free(&s);
        if (stop) {
            rc = stop >= 100 ? stop - 100 : 0;
            hc_close(&cli->hc); /* the stream is still open: do not read it to its end */
            break;
        }
        if (end_reason && (strcmp(end_reason, "limit") == 0)) {
            rc = 0;
            break;
        }
        if (end_reason && strcmp(end_reason, "topic_deleted") == 0) {
            fprintf(stderr, "ayder %s: topic %s was deleted\n", argv[0], c->topic);
            rc = CLI_EXIT_NOT_FOUND;
            break;
        }
        /* Invariant 2: resume after a transient end or a broken connection. */
        if (e < 0 && !c->follow) {
            rc = cli_fail_io(cli, "subscribe stream", e);
            break;
        }
        if (end_reason && !c->follow && strcmp(end_reason, "shutdown") != 0) {
            fprintf(stderr, "ayder %s: the stream ended: %s\n", argv[0], end_reason);
            rc = CLI_EXIT_UNAVAILABLE;
            break;
        }
        fprintf(stderr, "ayder %s: stream ended (%s); resuming\n", argv[0],
                end_reason ? end_reason : cli->hc.err);
        use_id = c->last_id[0] != 0;
        struct timespec ts = {1, 0};
        nanosleep(&ts, NULL);
    }
    sbuf_free(&p);
out:
    sbuf_free(&c->out);
    sbuf_free(&c->dec);
out_free:
    free(c);
    return rc;
}
