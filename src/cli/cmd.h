/* cmd.h -- what the CLI's modules share (private to src/cli): the invocation context, option
 * parsing, output helpers and exit codes, and one entry point per subcommand.
 *
 * Every subcommand is `int cmd_x(struct cli *cli, int argc, char **argv)` with argv[0] its own name;
 * it returns a process exit code (CLI_EXIT_*). Output: results on stdout (a human table or text by
 * default, the server's JSON with -J), messages and progress on stderr.
 */
#ifndef AYDER_CLI_CMD_H
#define AYDER_CLI_CMD_H

#include "cli/cli.h"
#include "cli/hc.h"

#include <stdbool.h>
#include <stdio.h>

struct cli {
    const char *url;   /* --url / AYDER_URL / http://127.0.0.1:1109 */
    const char *token; /* --token / AYDER_TOKEN / none */
    const char *timeout;
    int timeout_ms;    /* --timeout-ms (10000) */
    bool json;         /* -J */
    bool help;
    struct hc hc;      /* opened by cli_connect */
};

/* ---- options -------------------------------------------------------------------------------- */

/* One option of a subcommand. `arg` names the value ("N") or is NULL for a flag. A repeatable
 * option gives `list`/`list_n`/`list_max` instead of `value`. */
struct opt {
    const char *name; /* "--partition" */
    char short_name;  /* 'p' or 0 */
    const char *arg;
    const char *help;
    const char **value;
    bool *flag;
    const char **list;
    size_t *list_n;
    size_t list_max;
};
#define OPT_END {NULL, 0, NULL, NULL, NULL, NULL, NULL, NULL, 0}

/* Parse argv[1..] against opts plus the global options; positionals go to pos (at most
 * pos_max). Prints the problem and returns CLI_EXIT_USAGE on error, 0 otherwise (cli->help set
 * when -h/--help was given). */
int opt_parse(struct cli *cli, const struct opt *opts, int argc, char **argv, const char **pos,
              int pos_max, int *npos);
void opt_usage(FILE *f, const char *synopsis, const char *about, const struct opt *opts);
/* Integer option values: CLI_EXIT_USAGE with a message when malformed. */
int opt_u64(const char *name, const char *v, uint64_t max, uint64_t *out);
int opt_i64(const char *name, const char *v, int64_t *out);

/* ---- connection and output -------------------------------------------------------------------- */

/* Open cli->hc on --url with the token; CLI_EXIT_USAGE for a bad URL. */
int cli_connect(struct cli *cli);
/* The exit code for a transport failure (rc from hc_*) after printing hc->err. */
int cli_fail_io(struct cli *cli, const char *what, int rc);
/* The exit code for an HTTP answer that is not 2xx after printing its error (code, message). */
int cli_fail_http(struct cli *cli, const char *what, const struct hc_resp *r);
/* hc_request + both failure paths: 0 on a 2xx answer, else the exit code (printed). */
int cli_call(struct cli *cli, const char *method, const char *path, const char *ctype,
             const void *body, size_t body_len, struct hc_resp *out);
int cli_status_exit(int status);
/* Print a JSON body (the -J output) followed by a newline. */
void cli_print_json(struct slice body);

/* A human table: columns left-aligned, widths from the content. Cells are copied. */
struct table {
    size_t cols, rows, cap;
    char **cells;
};
void table_init(struct table *t, size_t cols, const char *const *header);
void table_add(struct table *t, const char *const *row);
void table_print(struct table *t, FILE *f);
void table_free(struct table *t);

/* ---- subcommands -------------------------------------------------------------------------- */

int cmd_produce(struct cli *cli, int argc, char **argv);
int cmd_consume(struct cli *cli, int argc, char **argv); /* also `tail` */
int cmd_topics(struct cli *cli, int argc, char **argv);
int cmd_groups(struct cli *cli, int argc, char **argv);
int cmd_kv(struct cli *cli, int argc, char **argv);
int cmd_query(struct cli *cli, int argc, char **argv);
int cmd_cluster(struct cli *cli, int argc, char **argv);

#endif
