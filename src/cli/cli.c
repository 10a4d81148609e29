/* cli.c -- `ayder <subcommand>`: dispatch, the global options, option parsing, output helpers,
 * exit codes and the bash completion script. The subcommands live in produce.c, consume.c and
 * admin.c; the HTTP client in hc.c.
 *
 * Invariants:
 *   1. Nothing is sent before the whole command line parsed: a usage error (exit 2) has no effect.
 *   2. stdout carries only results (so `ayder consume ... > file` is exactly the records);
 *      errors, warnings and progress go to stderr.
 *   3. Every failure maps to one exit code of enum cli_exit, and its message names what failed
 *      (the request, the HTTP status, the server's error code and message).
 */
#include "cli/cmd.h"

#include "base/err.h"

#include <errno.h>
#include <jansson.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

const char cli_help_text[] =
    "client subcommands (an HTTP client of the API; `ayder SUBCOMMAND --help`, docs/CLI.md):\n"
    "  produce TOPIC [VALUE]    one value, or lines/NDJSON from stdin or -f FILE (batched)\n"
    "  consume TOPIC            print records (kcat-like --format), from an offset/time/group\n"
    "  tail [-f] TOPIC          the last records; -f keeps following new ones\n"
    "  topics list|create|describe|delete\n"
    "  groups list|describe     committed offsets and lag\n"
    "  kv get|put|del|list      the KV store\n"
    "  query FILE|-             POST /broker/query (a \"follow\" query streams)\n"
    "  cluster status|transfer|add|promote|remove\n"
    "  completion bash          print the bash completion script\n"
    "client options (every subcommand):\n"
    "  --url URL                node to talk to [AYDER_URL] (http://127.0.0.1:1109); a 307\n"
    "                           from a follower is followed to the leader, token included\n"
    "  --token T                bearer token [AYDER_TOKEN]\n"
    "  -J, --json               print the server's JSON instead of tables/text\n"
    "  --timeout-ms N           connect/answer timeout (10000)\n"
    "exit codes: 0 ok, 1 error answered by the server, 2 usage, 3 auth (401/403),\n"
    "  4 not found (404), 5 unavailable (cannot connect, timeout, 503), 6 conflict (409)\n";

static const char *const commands[] = {"produce", "consume", "tail",  "topics",     "groups",
                                       "kv",      "query",   "cluster", "completion", NULL};

bool cli_is_command(const char *name)
{
    for (size_t i = 0; commands[i]; i++)
        if (strcmp(commands[i], name) == 0)
            return true;
    return false;
}

int cli_command_index(int argc, char **argv)
{
    /* Client options may come before the subcommand: `ayder -J --url U topics list`. */
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (cli_is_command(a))
            return i;
        if (!strcmp(a, "-J") || !strcmp(a, "--json"))
            continue;
        if ((!strcmp(a, "--url") || !strcmp(a, "--token") || !strcmp(a, "--timeout-ms")) &&
            i + 1 < argc) {
            i++;
            continue;
        }
        if (!strncmp(a, "--url=", 6) || !strncmp(a, "--token=", 8) ||
            !strncmp(a, "--timeout-ms=", 13))
            continue;
        return 0;
    }
    return 0;
}

/* ---- options -------------------------------------------------------------------------------- */

static const struct opt *find_opt(const struct opt *t, const char *name, char short_name)
{
    for (; t && t->name; t++)
        if ((name && strcmp(t->name, name) == 0) || (short_name && t->short_name == short_name))
            return t;
    return NULL;
}

static int set_opt(const struct opt *o, const char *v)
{
    if (o->flag) {
        *o->flag = true;
        return 0;
    }
    if (o->list) {
        if (*o->list_n >= o->list_max) {
            fprintf(stderr, "ayder: %s given more than %zu times\n", o->name, o->list_max);
            return CLI_EXIT_USAGE;
        }
        o->list[(*o->list_n)++] = v;
        return 0;
    }
    *o->value = v;
    return 0;
}

int opt_parse(struct cli *cli, const struct opt *opts, int argc, char **argv, const char **pos,
              int pos_max, int *npos)
{
    const struct opt global[] = {
        {"--url", 0, "URL", NULL, &cli->url},
        {"--token", 0, "T", NULL, &cli->token},
        {"--json", 'J', NULL, NULL, NULL, &cli->json},
        {"--timeout-ms", 0, "N", NULL, &cli->timeout},
        {"--help", 'h', NULL, NULL, NULL, &cli->help},
        OPT_END,
    };
    *npos = 0;
    bool only_pos = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (only_pos || a[0] != '-' || strcmp(a, "-") == 0) {
            if (*npos >= pos_max) {
                fprintf(stderr, "ayder %s: unexpected argument '%s' (see --help)\n", argv[0], a);
                return CLI_EXIT_USAGE;
            }
            pos[(*npos)++] = a;
            continue;
        }
        if (strcmp(a, "--") == 0) {
            only_pos = true;
            continue;
        }
        const struct opt *o = NULL;
        const char *inline_v = NULL;
        char namebuf[64];
        if (a[1] == '-') {
            const char *eq = strchr(a, '=');
            if (eq && (size_t)(eq - a) < sizeof namebuf) {
                memcpy(namebuf, a, (size_t)(eq - a));
                namebuf[eq - a] = 0;
                inline_v = eq + 1;
                a = namebuf;
            }
            o = find_opt(opts, a, 0);
            if (!o)
                o = find_opt(global, a, 0);
        } else {
            o = find_opt(opts, NULL, a[1]);
            if (!o)
                o = find_opt(global, NULL, a[1]);
            if (o && a[2]) {
                if (o->arg) {
                    inline_v = a + 2; /* -p3 */
                } else {
                    /* -fJ: a cluster of flags */
                    for (const char *f = a + 1; *f; f++) {
                        const struct opt *fo = find_opt(opts, NULL, *f);
                        if (!fo)
                            fo = find_opt(global, NULL, *f);
                        if (!fo || fo->arg) {
                            fprintf(stderr, "ayder %s: unknown option -%c in '%s'\n", argv[0],
                                    *f, argv[i]);
                            return CLI_EXIT_USAGE;
                        }
                        set_opt(fo, NULL);
                    }
                    continue;
                }
            }
        }
        if (!o) {
            fprintf(stderr, "ayder %s: unknown option '%s' (see --help)\n", argv[0], argv[i]);
            return CLI_EXIT_USAGE;
        }
        const char *v = NULL;
        if (o->arg) {
            if (inline_v) {
                v = inline_v;
            } else if (i + 1 < argc) {
                v = argv[++i];
            } else {
                fprintf(stderr, "ayder %s: %s needs a value (%s)\n", argv[0], o->name, o->arg);
                return CLI_EXIT_USAGE;
            }
        } else if (inline_v) {
            fprintf(stderr, "ayder %s: %s takes no value\n", argv[0], o->name);
            return CLI_EXIT_USAGE;
        }
        int rc = set_opt(o, v);
        if (rc)
            return rc;
    }
    if (cli->timeout) {
        uint64_t t;
        if (opt_u64("--timeout-ms", cli->timeout, 86400000, &t))
            return CLI_EXIT_USAGE;
        cli->timeout_ms = (int)t;
    }
    return 0;
}

void opt_usage(FILE *f, const char *synopsis, const char *about, const struct opt *opts)
{
    fprintf(f, "usage: %s\n%s", synopsis, about);
    if (opts && opts->name)
        fprintf(f, "options:\n");
    for (const struct opt *o = opts; o && o->name; o++) {
        char left[64];
        if (o->short_name)
            snprintf(left, sizeof left, "-%c, %s%s%s", o->short_name, o->name, o->arg ? " " : "",
                     o->arg ? o->arg : "");
        else
            snprintf(left, sizeof left, "%s%s%s", o->name, o->arg ? " " : "", o->arg ? o->arg : "");
        fprintf(f, "  %-24s %s\n", left, o->help ? o->help : "");
    }
    fprintf(f, "global: --url URL [AYDER_URL], --token T [AYDER_TOKEN], -J/--json, --timeout-ms N\n"
               "exit codes: 0 ok, 1 server error, 2 usage, 3 auth, 4 not found, 5 unavailable, "
               "6 conflict\n");
}

int opt_u64(const char *name, const char *v, uint64_t max, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long x = strtoull(v ? v : "", &end, 10);
    if (!v || !*v || *v == '-' || *end || errno || x > max) {
        fprintf(stderr, "ayder: %s needs an integer in 0..%llu\n", name, (unsigned long long)max);
        return CLI_EXIT_USAGE;
    }
    *out = x;
    return 0;
}

int opt_i64(const char *name, const char *v, int64_t *out)
{
    char *end;
    errno = 0;
    long long x = strtoll(v ? v : "", &end, 10);
    if (!v || !*v || *end || errno) {
        fprintf(stderr, "ayder: %s needs an integer\n", name);
        return CLI_EXIT_USAGE;
    }
    *out = x;
    return 0;
}

/* ---- connection and output -------------------------------------------------------------------- */

int cli_connect(struct cli *cli)
{
    hc_close(&cli->hc);
    if (hc_init(&cli->hc, cli->url, cli->token, cli->timeout_ms)) {
        fprintf(stderr, "ayder: %s\n", cli->hc.err);
        return CLI_EXIT_USAGE;
    }
    return 0;
}

int cli_status_exit(int status)
{
    if (status >= 200 && status < 300)
        return CLI_EXIT_OK;
    if (status == 401 || status == 403)
        return CLI_EXIT_AUTH;
    if (status == 404)
        return CLI_EXIT_NOT_FOUND;
    if (status == 409)
        return CLI_EXIT_CONFLICT;
    if (status == 503)
        return CLI_EXIT_UNAVAILABLE;
    return CLI_EXIT_ERROR;
}

int cli_fail_io(struct cli *cli, const char *what, int rc)
{
    fprintf(stderr, "ayder: %s: %s\n", what, cli->hc.err[0] ? cli->hc.err : err_message(rc));
    if (rc == ERR_IO || rc == ERR_TIMEOUT || rc == ERR_EOF)
        return CLI_EXIT_UNAVAILABLE;
    return rc == ERR_NOMEM ? CLI_EXIT_ERROR : CLI_EXIT_ERROR;
}

int cli_fail_http(struct cli *cli, const char *what, const struct hc_resp *r)
{
    if (cli->json && r->body.len) {
        cli_print_json(r->body);
    }
    json_error_t je;
    json_t *j = json_loadb((const char *)r->body.ptr, r->body.len, 0, &je);
    const char *code = NULL, *msg = NULL;
    if (j && json_is_object(j)) {
        code = json_string_value(json_object_get(j, "error"));
        msg = json_string_value(json_object_get(j, "message"));
    }
    if (code)
        fprintf(stderr, "ayder: %s: HTTP %d %s: %s\n", what, r->status, code, msg ? msg : "");
    else
        fprintf(stderr, "ayder: %s: HTTP %d: %.*s\n", what, r->status,
                (int)(r->body.len > 300 ? 300 : r->body.len), (const char *)r->body.ptr);
    if (r->status == 401)
        fprintf(stderr, "ayder: hint: pass a token with --token or AYDER_TOKEN\n");
    json_decref(j);
    return cli_status_exit(r->status);
}

int cli_call(struct cli *cli, const char *method, const char *path, const char *ctype,
             const void *body, size_t body_len, struct hc_resp *out)
{
    char what[300];
    snprintf(what, sizeof what, "%s %s", method, path);
    int rc = hc_request(&cli->hc, method, path, NULL, ctype, body, body_len, out);
    if (rc)
        return cli_fail_io(cli, what, rc);
    if (out->status < 200 || out->status >= 300)
        return cli_fail_http(cli, what, out);
    return 0;
}

void cli_print_json(struct slice body)
{
    fwrite(body.ptr, 1, body.len, stdout);
    if (body.len == 0 || body.ptr[body.len - 1] != '\n')
        fputc('\n', stdout);
}

void table_init(struct table *t, size_t cols, const char *const *header)
{
    memset(t, 0, sizeof *t);
    t->cols = cols;
    table_add(t, header);
}

void table_add(struct table *t, const char *const *row)
{
    if (t->rows == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 16;
        char **c = realloc(t->cells, cap * t->cols * sizeof *c);
        if (!c)
            return;
        t->cells = c;
        t->cap = cap;
    }
    for (size_t i = 0; i < t->cols; i++)
        t->cells[t->rows * t->cols + i] = strdup(row[i] ? row[i] : "");
    t->rows++;
}

void table_print(struct table *t, FILE *f)
{
    size_t w[32] = {0};
    for (size_t r = 0; r < t->rows; r++)
        for (size_t c = 0; c < t->cols && c < 32; c++) {
            const char *s = t->cells[r * t->cols + c];
            size_t l = s ? strlen(s) : 0;
            if (l > w[c])
                w[c] = l;
        }
    for (size_t r = 0; r < t->rows; r++) {
        for (size_t c = 0; c < t->cols; c++) {
            const char *s = t->cells[r * t->cols + c];
            if (c + 1 == t->cols)
                fprintf(f, "%s\n", s ? s : "");
            else
                fprintf(f, "%-*s  ", (int)w[c < 32 ? c : 31], s ? s : "");
        }
    }
}

void table_free(struct table *t)
{
    for (size_t i = 0; i < t->rows * t->cols; i++)
        free(t->cells[i]);
    free(t->cells);
    memset(t, 0, sizeof *t);
}

/* ---- completion ---------------------------------------------------------------------------- */

/* Kept in tools/ayder-completion.bash as well (the same text; test_cli.py checks they agree). */
static const char completion_bash[] =
    "# bash completion for ayder (eval \"$(ayder completion bash)\")\n"
    "_ayder() {\n"
    "    local cur prev words cword\n"
    "    cur=\"${COMP_WORDS[COMP_CWORD]}\"\n"
    "    prev=\"${COMP_WORDS[COMP_CWORD-1]}\"\n"
    "    local cmds=\"produce consume tail topics groups kv query cluster completion bench logdump logcheck\"\n"
    "    local global=\"--url --token --json -J --timeout-ms --help\"\n"
    "    if [ \"$COMP_CWORD\" -eq 1 ]; then\n"
    "        COMPREPLY=( $(compgen -W \"$cmds --help\" -- \"$cur\") ); return\n"
    "    fi\n"
    "    case \"$prev\" in\n"
    "        -f|--file) [ \"${COMP_WORDS[1]}\" = produce ] && { COMPREPLY=( $(compgen -f -- \"$cur\") ); return; } ;;\n"
    "        --url|--token|--timeout-ms|--key|--partition|-p|--group|-g|--offset|-o|--count|-c|--format|--from) return ;;\n"
    "    esac\n"
    "    local sub=\"${COMP_WORDS[1]}\" opts=\"\"\n"
    "    case \"$sub\" in\n"
    "        produce) opts=\"--file -f --key -k --partition -p --header -H --b64 --binary --batch-lines --batch-bytes --connections --pipeline --mode --write-concern --progress --no-progress\" ;;\n"
    "        consume|tail) opts=\"--partition -p --group -g --offset -o --from --count -c --follow -f --format --commit --exit -e\" ;;\n"
    "        topics) [ \"$COMP_CWORD\" -eq 2 ] && opts=\"list create describe delete\" || opts=\"--partitions\" ;;\n"
    "        groups) [ \"$COMP_CWORD\" -eq 2 ] && opts=\"list describe\" ;;\n"
    "        kv) [ \"$COMP_CWORD\" -eq 2 ] && opts=\"get put del list\" || opts=\"--cas --ttl-ms --prefix --limit --raw\" ;;\n"
    "        query) COMPREPLY=( $(compgen -f -- \"$cur\") $(compgen -W \"$global\" -- \"$cur\") ); return ;;\n"
    "        cluster) [ \"$COMP_CWORD\" -eq 2 ] && opts=\"status transfer add promote remove\" || opts=\"--host --raft-port --http-port --priority\" ;;\n"
    "        completion) opts=\"bash\" ;;\n"
    "    esac\n"
    "    COMPREPLY=( $(compgen -W \"$opts $global\" -- \"$cur\") )\n"
    "}\n"
    "complete -F _ayder ayder\n";

static int cmd_completion(struct cli *cli, int argc, char **argv)
{
    const char *pos[1];
    int n;
    int rc = opt_parse(cli, NULL, argc, argv, pos, 1, &n);
    if (rc)
        return rc;
    if (cli->help || n != 1 || strcmp(pos[0], "bash") != 0) {
        opt_usage(cli->help ? stdout : stderr, "ayder completion bash",
                  "Print the bash completion script: eval \"$(ayder completion bash)\", or save it\n"
                  "as /etc/bash_completion.d/ayder (tools/ayder-completion.bash is the same).\n",
                  NULL);
        return cli->help ? 0 : CLI_EXIT_USAGE;
    }
    fputs(completion_bash, stdout);
    return 0;
}

/* ---- dispatch ------------------------------------------------------------------------------ */

int cli_main(int argc, char **argv)
{
    struct cli cli = {0};
    cli.url = getenv("AYDER_URL");
    if (!cli.url || !*cli.url)
        cli.url = "http://127.0.0.1:1109";
    cli.token = getenv("AYDER_TOKEN");
    cli.timeout_ms = 10000;
    signal(SIGPIPE, SIG_IGN);
    hc_init(&cli.hc, "http://127.0.0.1:1", NULL, 0); /* a closable placeholder until connect */
    const char *name = argv[0];
    int rc;
    if (strcmp(name, "produce") == 0)
        rc = cmd_produce(&cli, argc, argv);
    else if (strcmp(name, "consume") == 0 || strcmp(name, "tail") == 0)
        rc = cmd_consume(&cli, argc, argv);
    else if (strcmp(name, "topics") == 0)
        rc = cmd_topics(&cli, argc, argv);
    else if (strcmp(name, "groups") == 0)
        rc = cmd_groups(&cli, argc, argv);
    else if (strcmp(name, "kv") == 0)
        rc = cmd_kv(&cli, argc, argv);
    else if (strcmp(name, "query") == 0)
        rc = cmd_query(&cli, argc, argv);
    else if (strcmp(name, "cluster") == 0)
        rc = cmd_cluster(&cli, argc, argv);
    else if (strcmp(name, "completion") == 0)
        rc = cmd_completion(&cli, argc, argv);
    else
        rc = CLI_EXIT_USAGE;
    hc_close(&cli.hc);
    if (fflush(stdout) != 0 && rc == 0) {
        fprintf(stderr, "ayder: writing the output: %s\n", strerror(errno));
        rc = CLI_EXIT_ERROR;
    }
    return rc;
}
