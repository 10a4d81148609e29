/* cli.h -- `ayder <subcommand>`: the command-line client of the public HTTP API (produce, consume
 * and tail, topics, groups, kv, query, cluster, completion).
 *
 * The CLI is an HTTP client like any other: it never calls the core, the broker or the API
 * handlers (only src/base and the pure src/http/http_client), so whatever it can do, curl can do.
 * Environment: AYDER_URL (default http://127.0.0.1:1109), AYDER_TOKEN. Docs: docs/CLI.md.
 *
 * Exit codes (also in `ayder --help`):
 */
#ifndef AYDER_CLI_CLI_H
#define AYDER_CLI_CLI_H

#include <stdbool.h>

enum cli_exit {
    CLI_EXIT_OK = 0,          /* done */
    CLI_EXIT_ERROR = 1,       /* the server answered an error (4xx/5xx not below), or a bad answer */
    CLI_EXIT_USAGE = 2,       /* bad command line; nothing was sent */
    CLI_EXIT_AUTH = 3,        /* 401 (missing or unknown token) or 403 (token lacks the scope) */
    CLI_EXIT_NOT_FOUND = 4,   /* 404: unknown topic, key, group, member */
    CLI_EXIT_UNAVAILABLE = 5, /* cannot connect, timed out, or 503 (no leader, overloaded, ...) */
    CLI_EXIT_CONFLICT = 6,    /* 409: CAS mismatch, topic exists with other partitions, ... */
};

/* Is argv[1] one of the CLI's subcommands? */
bool cli_is_command(const char *name);
/* The index of the subcommand in argv when every argument before it (from 1) is a client
 * option (-J, --url U, --token T, --timeout-ms N), else 0. */
int cli_command_index(int argc, char **argv);
/* Run `ayder <subcommand> ...` (argv[0] is the subcommand); returns the exit code. */
int cli_main(int argc, char **argv);
/* The exit-code table and environment, for `ayder --help`. */
extern const char cli_help_text[];

#endif
