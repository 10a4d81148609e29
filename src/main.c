/* main.c -- flags and environment, wiring, run loop. No logic lives here.
 *
 *   ayder [--port 1109] [--bind 0.0.0.0] [--workers N] [--data-dir ./ayder-data] [...]
 *         [--tls-cert F --tls-key F [--tls-client-ca F] [--https-port N]]
 *   Signals: SIGINT/SIGTERM stop cleanly; SIGHUP reloads the HTTPS certificate, key and CA.
 *   ayder bench ...            the load generator (src/bench)
 *   ayder logdump PATH         print a journal (.seg) or partition log (.log) segment
 *   ayder logcheck DIR [--repair]   verify a data directory
 *   ayder produce|consume|tail|topics|groups|kv|query|cluster|completion ...
 *                              the command-line client (src/cli, an HTTP client of the API)
 */
#include "api/api.h"
#include "api/auth.h"
#include "base/err.h"
#include "base/log.h"
#include "bench/bench.h"
#include "cli/cli.h"
#include "core/core.h"
#include "http/server.h"
#include "http/tls.h"
#include "kafka/server.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void usage(FILE *f)
{
    fprintf(f,
            "usage: ayder [options]            run a node\n"
            "       ayder bench [options]      load generator (ayder bench --help)\n"
            "       ayder logdump PATH         print a journal or partition log segment\n"
            "       ayder logcheck DIR [--repair]  verify every CRC of a data directory\n"
            "       ayder SUBCOMMAND ...       the client (below; docs/CLI.md)\n"
            "\n"
            "options (environment variable in brackets):\n"
            "  --port N                 HTTP port (1109); HTTPS when TLS is on and no\n"
            "                           --https-port is given (HTTPS only)\n"
            "  --bind ADDR              listen address (0.0.0.0)\n"
            "  --workers N              HTTP worker threads (number of CPUs)\n"
            "  --data-dir DIR           data directory [RF_DATA_DIR] (./ayder-data)\n"
            "  --log-level L            debug|info|warn|error|off (info)\n"
            "  --max-body-bytes N       request body limit (67108864)\n"
            "  --max-header-bytes N     request head limit (65536)\n"
            "  --max-request-line N     request line limit (8192)\n"
            "  --max-connections N      open connections (10000)\n"
            "  --header-timeout-ms N    time to receive a request head (10000)\n"
            "  --body-timeout-ms N      time to receive a request body (60000)\n"
            "  --idle-timeout-ms N      idle keep-alive connection lifetime (60000)\n"
            "  --checkpoint-interval-ms N  checkpoint period (30000)\n"
            "  --segment-bytes N        journal and partition segment size (67108864)\n"
            "  --min-free-bytes N       refuse writes (507) below this much free disk (67108864)\n"
            "  --journal-preallocate 0|1  zero-filled spare journal segments (1)\n"
            "stream queries and joins (docs/STREAM.md \"Limits\"; beyond a limit: 413 naming it):\n"
            "  --stream-threads N       threads running /broker/query and /broker/join (1)\n"
            "  --stream-queue N         calls waiting for them before 503 overloaded (64)\n"
            "  --stream-max-records N   records a call may read (query: in all; join: per side)\n"
            "                           and join state records (1000000)\n"
            "  --stream-max-groups N    query: (window, group) pairs per call (100000)\n"
            "  --stream-max-memory-bytes N  query memory / join state bytes per call (268435456)\n"
            "  --stream-max-response-bytes N  query answer / join rows bytes (33554432 / 8388608)\n"
            "  --stream-follow-max N    continuous queries open at once before 503 (64)\n"
            "  --stream-follow-buffer-bytes N  output queued per follow query (1048576)\n"
            "  --stream-follow-stall-ms N  cut a follow reader that takes nothing this long (30000)\n"
            "SSE/NDJSON subscriptions (docs/HTTP_API.md \"Subscribe\"):\n"
            "  --subscribe-buffer-bytes N  output queued per subscriber before reading pauses (262144)\n"
            "  --subscribe-max-streams N   open subscription streams before 503 (10000)\n"
            "  --subscribe-stall-ms N      a subscriber stuck above its buffer this long is ended (30000)\n"
            "HTTPS for clients (TLS 1.2+; docs/HTTP_API.md \"HTTPS\"; SIGHUP reloads the files):\n"
            "  --tls-cert FILE          certificate chain, PEM [RF_TLS_CERT]\n"
            "  --tls-key FILE           private key, PEM [RF_TLS_KEY]\n"
            "  --tls-client-ca FILE     require client certificates signed by this CA (PEM)\n"
            "                           [RF_TLS_CLIENT_CA]; bearer tokens still apply\n"
            "  --https-port N           HTTPS on this port, plain HTTP stays on --port\n"
            "                           [RF_HTTPS_PORT]; without it --port speaks HTTPS only\n"
            "Kafka wire protocol (docs/KAFKA.md; off unless --kafka-port is given; no authentication):\n"
            "  --kafka-port N           Kafka listener port (off)\n"
            "  --kafka-bind ADDR        Kafka listen address (127.0.0.1)\n"
            "  --kafka-advertise HOST   host named in Metadata answers (the bind address)\n"
            "  --kafka-nodes SPEC       cluster: name=host:port,... each member's Kafka address\n"
            "                           (RF_KAFKA_NODES; default: its RF_HA_NODES host, our port)\n"
            "environment:\n"
            "  RF_BEARER_TOKENS         tokens, 'tok[@scope+scope],...' (dev)\n"
            "  RF_AUTO_CREATE_TOPICS    1|0: produce creates unknown topics (1)\n"
            "  RF_DEFAULT_PARTITIONS    partitions of auto-created topics (8)\n"
            "  RF_RATE_LIMIT_RPS        per-token requests/s, 0 = off (0)\n"
            "  RF_RATE_LIMIT_BURST      per-token burst (= rps)\n"
            "  RF_INLINE_SYNC           1|0: single node, fsync on the core thread while no\n"
            "                           async writes arrive (1; docs/ARCHITECTURE.md)\n"
            "cluster (Raft; docs/HTTP_API.md \"Cluster\"):\n"
            "  RF_HA_ENABLED            1: cluster mode (0)\n"
            "  RF_HA_NODE_ID            this node's id, e.g. n1\n"
            "  RF_HA_NODES              every voter: id:host:raft_port:priority[:http_port],...\n"
            "                           (without http_port the HTTP port is raft_port+1)\n"
            "  RF_HA_WRITE_CONCERN      default concern: 1|majority|all|async|N (majority)\n"
            "  RF_HA_BOOTSTRAP_LEADER   1: on a fresh cluster this node campaigns at once (0)\n"
            "  RF_HA_JOIN               1: join an existing cluster (POST /ha/membership) (0)\n"
            "  RF_HA_CLUSTER            cluster name; peers with another name are refused (ayder)\n"
            "  RF_HA_ELECTION_TIMEOUT_MS  Raft election timeout (1000)\n"
            "  RF_HA_HEARTBEAT_MS       Raft heartbeat interval (100)\n"
            "  RF_HA_DEDICATED_WORKER   accepted (the core thread is always dedicated)\n"
            "  RF_HA_HTTP_SCHEME        http|https: scheme of leader_url and 307 Location; the\n"
            "                           http_port above is then each node's HTTPS port (https\n"
            "                           when this node's http_port serves HTTPS, else http)\n"
            "TLS between nodes (mutual TLS 1.3; a peer's certificate must name its node id):\n"
            "  RF_HA_TLS                1: encrypt and authenticate Raft traffic (0)\n"
            "  RF_HA_TLS_CA             CA certificate file (PEM) that signs every node\n"
            "  RF_HA_TLS_CERT           this node's certificate (PEM, CN or DNS SAN = node id)\n"
            "  RF_HA_TLS_KEY            this node's private key (PEM)\n"
            "\n%s", cli_help_text);
}

/* One process per data directory: an exclusive flock on DATA/LOCK, held until exit. Two nodes
 * writing one journal would corrupt it. */
static int lock_data_dir(const char *dir)
{
    if (mkdir(dir, 0755) < 0 && errno != EEXIST) {
        LOG_E("main", "cannot create data directory %s: %s", dir, strerror(errno));
        return -1;
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/LOCK", dir);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        LOG_E("main", "cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
        LOG_E("main", "data directory %s is in use by another ayder process (%s is locked)", dir,
              path);
        close(fd);
        return -1;
    }
    return fd; /* kept open for the life of the process */
}

static int parse_u64(const char *flag, const char *v, uint64_t min, uint64_t max, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long x = strtoull(v ? v : "", &end, 10);
    if (!v || !*v || *end || errno || x < min || x > max) {
        fprintf(stderr, "ayder: %s needs an integer in %llu..%llu\n", flag,
                (unsigned long long)min, (unsigned long long)max);
        return -1;
    }
    *out = x;
    return 0;
}

int main(int argc, char **argv)
{
    int ci = cli_command_index(argc, argv);
    if (ci > 0) {
        /* The subcommand first, then the client options that preceded it, then the rest. */
        char *sub = argv[ci];
        memmove(&argv[2], &argv[1], (size_t)(ci - 1) * sizeof *argv);
        argv[1] = sub;
        return cli_main(argc - 1, argv + 1);
    }
    if (argc > 1 && strcmp(argv[1], "bench") == 0)
        return bench_main(argc - 1, argv + 1);
    if (argc > 1 && strcmp(argv[1], "logdump") == 0) {
        if (argc != 3) {
            usage(stderr);
            return 2;
        }
        return core_logdump(argv[2]) == 0 ? 0 : 1;
    }
    if (argc > 1 && strcmp(argv[1], "logcheck") == 0) {
        if (argc < 3 || argc > 4 || (argc == 4 && strcmp(argv[3], "--repair") != 0)) {
            usage(stderr);
            return 2;
        }
        return core_logcheck(argv[2], argc == 4) == 0 ? 0 : 1;
    }

    struct http_server_config hc;
    http_server_config_default(&hc);
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    hc.workers = ncpu > 0 ? (int)ncpu : 1;
    struct core_config cc;
    core_config_default(&cc);
    struct api_config stream = {0}; /* the --stream-* flags */
    struct kafka_server_config kc = {0};
    kc.port = -1;
    kc.bind_addr = "127.0.0.1";
    const char *env = getenv("RF_DATA_DIR");
    if (env && *env)
        cc.data_dir = env;
    /* HTTPS: environment first, flags override. */
    struct http_tls_config tc = {0};
    int https_port = -1;
    if ((env = getenv("RF_TLS_CERT")) && *env)
        tc.cert_file = env;
    if ((env = getenv("RF_TLS_KEY")) && *env)
        tc.key_file = env;
    if ((env = getenv("RF_TLS_CLIENT_CA")) && *env)
        tc.client_ca_file = env;
    if ((env = getenv("RF_HTTPS_PORT")) && *env) {
        uint64_t n;
        if (parse_u64("RF_HTTPS_PORT", env, 0, 65535, &n))
            return 2;
        https_port = (int)n;
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        uint64_t n;
#define NUM(flag, min, max, dst)                                                                   \
    if (strcmp(a, flag) == 0) {                                                                    \
        if (parse_u64(flag, v, min, max, &n))                                                      \
            return 2;                                                                              \
        dst = n;                                                                                   \
        i++;                                                                                       \
        continue;                                                                                  \
    }
        NUM("--port", 0, 65535, hc.port)
        NUM("--https-port", 0, 65535, https_port)
        NUM("--workers", 1, 256, hc.workers)
        NUM("--max-body-bytes", 1024, 1ull << 32, hc.body_max_bytes)
        NUM("--max-header-bytes", 1024, 1u << 24, hc.limits.head_max)
        NUM("--max-request-line", 64, 1u << 20, hc.limits.request_line_max)
        NUM("--max-connections", 1, 1000000, hc.max_connections)
        NUM("--header-timeout-ms", 100, 3600000, hc.header_timeout_ms)
        NUM("--body-timeout-ms", 100, 3600000, hc.body_timeout_ms)
        NUM("--idle-timeout-ms", 100, 86400000, hc.idle_timeout_ms)
        NUM("--checkpoint-interval-ms", 0, 86400000, cc.checkpoint_interval_ms)
        NUM("--min-free-bytes", 0, 1ull << 50, cc.min_free_bytes)
        NUM("--journal-preallocate", 0, 1, cc.journal.use_spare)
        NUM("--stream-threads", 1, 64, stream.stream_threads)
        NUM("--kafka-port", 0, 65535, kc.port)
        NUM("--subscribe-buffer-bytes", 4096, 1ull << 30, stream.sub_buffer_bytes)
        NUM("--subscribe-max-streams", 1, 1000000, stream.sub_streams_max)
        NUM("--subscribe-stall-ms", 100, 86400000, stream.sub_stall_ms)
        NUM("--stream-queue", 1, 100000, stream.stream_queue_max)
        NUM("--stream-max-records", 1, 1ull << 32, stream.stream_max_records)
        NUM("--stream-max-groups", 1, 1ull << 24, stream.stream_max_groups)
        NUM("--stream-max-memory-bytes", 1u << 20, 1ull << 40, stream.stream_max_memory_bytes)
        NUM("--stream-max-response-bytes", 1u << 16, 1ull << 32, stream.stream_max_response_bytes)
        NUM("--stream-follow-max", 1, 100000, stream.stream_follow_max)
        NUM("--stream-follow-buffer-bytes", 1u << 12, 1ull << 32, stream.stream_follow_buffer_bytes)
        NUM("--stream-follow-stall-ms", 100, 86400000, stream.stream_follow_stall_ms)
        if (strcmp(a, "--segment-bytes") == 0) {
            if (parse_u64(a, v, 1 << 16, 1ull << 30, &n))
                return 2;
            cc.journal.segment_bytes = n;
            cc.broker.plog.segment_bytes = n;
            i++;
            continue;
        }
#undef NUM
        if (strcmp(a, "--bind") == 0 && v) {
            hc.bind_addr = v;
            i++;
        } else if (strcmp(a, "--tls-cert") == 0 && v) {
            tc.cert_file = v;
            i++;
        } else if (strcmp(a, "--tls-key") == 0 && v) {
            tc.key_file = v;
            i++;
        } else if (strcmp(a, "--tls-client-ca") == 0 && v) {
            tc.client_ca_file = v;
            i++;
        } else if (strcmp(a, "--kafka-bind") == 0 && v) {
            kc.bind_addr = v;
            i++;
        } else if (strcmp(a, "--kafka-advertise") == 0 && v) {
            kc.advertised_host = v;
            i++;
        } else if (strcmp(a, "--kafka-nodes") == 0 && v) {
            kc.nodes = v;
            i++;
        } else if (strcmp(a, "--data-dir") == 0 && v) {
            cc.data_dir = v;
            i++;
        } else if (strcmp(a, "--log-level") == 0 && v) {
            if (log_level_parse(v, &log_level_min)) {
                fprintf(stderr, "ayder: --log-level must be debug|info|warn|error|off\n");
                return 2;
            }
            i++;
        } else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "ayder: unknown or incomplete option '%s'\n", a);
            usage(stderr);
            return 2;
        }
    }
    /* HTTPS: with a certificate, --https-port adds an HTTPS listener beside plain HTTP on
     * --port; without it (or with the same number) --port itself speaks HTTPS only. */
    struct http_tls *tls = NULL;
    if (tc.cert_file || tc.key_file || tc.client_ca_file || https_port >= 0) {
        char tls_err[1024];
        if (!tc.cert_file || !tc.key_file) {
            LOG_E("main", "HTTPS needs both --tls-cert and --tls-key (RF_TLS_CERT, RF_TLS_KEY)");
            return 2;
        }
        if (http_tls_new(&tc, &tls, tls_err, sizeof tls_err)) {
            LOG_E("main", "%s", tls_err);
            return 2;
        }
        hc.tls = tls;
        if (https_port < 0 || https_port == hc.port) {
            hc.tls_port = hc.port;
            hc.port = -1;
        } else {
            hc.tls_port = https_port;
        }
    }
    static struct ha_config ha;
    char ha_err[512] = "";
    if (ha_config_from_env(&ha, ha_err, sizeof ha_err)) {
        LOG_E("main", "%s", ha_err);
        return 2;
    }
    if (ha.enabled) {
        cc.ha = &ha;
        const struct ha_node *me = &ha.nodes[ha.self];
        LOG_I("main", "cluster of %zu nodes: this is %s (raft %s:%u, http %u), write concern %s",
              ha.n_nodes, me->name, me->host, me->raft_port, me->http_port,
              ha_write_concern_name(ha.write_concern));
        /* Clients are sent to other nodes' http_port with one scheme: https when this
         * node's own http_port is its HTTPS port (unless RF_HA_HTTP_SCHEME says otherwise). */
        if (!ha.https_set)
            ha.https = tls && me->http_port == hc.tls_port;
        int client_port = ha.https ? hc.tls_port : hc.port;
        if (me->http_port != client_port)
            LOG_W("main", "this node's %s port is %d but RF_HA_NODES names %u: redirects from "
                  "other nodes will name %s://%s:%u", ha.https ? "HTTPS" : "HTTP", client_port,
                  me->http_port, ha.https ? "https" : "http", me->host, me->http_port);
    }
    env = getenv("RF_INLINE_SYNC");
    if (env && *env)
        cc.inline_sync = strcmp(env, "0") != 0;
    env = getenv("RF_AUTO_CREATE_TOPICS");
    if (env && *env)
        cc.auto_create_topics = strcmp(env, "0") != 0;
    env = getenv("RF_DEFAULT_PARTITIONS");
    if (env && *env) {
        uint64_t n;
        if (parse_u64("RF_DEFAULT_PARTITIONS", env, 1, BROKER_PARTITIONS_MAX, &n))
            return 2;
        cc.default_partitions = (uint32_t)n;
    }
    const char *tokens = getenv("RF_BEARER_TOKENS");
    if (!tokens) {
        tokens = "dev";
        LOG_W("main", "RF_BEARER_TOKENS is not set: accepting the development token 'dev'");
    }
    struct auth *auth;
    if (auth_new(tokens, &auth)) {
        LOG_E("main", "RF_BEARER_TOKENS is malformed (tokens are at most 256 bytes)");
        return 2;
    }
    env = getenv("RF_RATE_LIMIT_RPS");
    if (env && *env) {
        double rps = atof(env), burst = rps;
        const char *b = getenv("RF_RATE_LIMIT_BURST");
        if (b && *b)
            burst = atof(b);
        auth_set_rate_limit(auth, rps, burst);
    }

    /* Signals are handled by sigwait in this thread; every other thread blocks them. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    /* Every partition segment keeps two files open and every connection one: take the whole
     * hard limit for open files (the soft default is often 1024), as Redis and nginx do. */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
            LOG_W("main", "cannot raise the open-file limit: %s", strerror(errno));
    }
    if (lock_data_dir(cc.data_dir) < 0) {
        auth_free(auth);
        return 1;
    }
    struct core *core;
    int rc = core_open(&cc, &core);
    if (rc) {
        LOG_E("main", "cannot open data directory %s: %s", cc.data_dir, err_message(rc));
        auth_free(auth);
        return 1;
    }
    struct api_config ac = stream;
    ac.core = core;
    ac.auth = auth;
    ac.default_partitions = cc.default_partitions;
    struct api *api;
    if ((rc = api_new(&ac, &api)) || (rc = core_start(core))) {
        LOG_E("main", "start-up failed: %s", err_message(rc));
        return 1;
    }
    hc.handler = api_handle;
    hc.request_is_write = api_request_is_write;
    hc.handler_ctx = api;
    struct http_server *srv;
    rc = http_server_start(&hc, &srv);
    if (rc) {
        LOG_E("main", "cannot listen on %s port %d%s%d: %s", hc.bind_addr, hc.port,
              tls ? " / HTTPS port " : "", tls ? hc.tls_port : 0, err_message(rc));
        core_stop(core);
        core_close(core);
        return 1;
    }
    api_set_server(api, srv);
    if (http_server_port(srv) >= 0)
        LOG_I("main", "ayder listening on %s:%d (%d workers, data in %s)", hc.bind_addr,
              http_server_port(srv), hc.workers, cc.data_dir);
    if (tls)
        LOG_I("main", "ayder listening for HTTPS on %s:%d%s (%d workers, data in %s)",
              hc.bind_addr, http_server_tls_port(srv),
              http_tls_client_auth(tls) ? ", client certificates required" : "", hc.workers,
              cc.data_dir);
    struct kafka_server *ks = NULL;
    if (kc.port >= 0) {
        kc.core = core;
        if (!kc.nodes)
            kc.nodes = getenv("RF_KAFKA_NODES");
        kc.auto_create_topics = cc.auto_create_topics;
        kc.default_partitions = cc.default_partitions;
        if ((rc = kafka_server_start(&kc, &ks))) {
            LOG_E("main", "cannot start the Kafka listener on %s:%d", kc.bind_addr, kc.port);
            core_stop(core);
            http_server_stop(srv);
            core_close(core);
            return 1;
        }
        LOG_I("main", "Kafka listener on %s:%d", kc.bind_addr, kafka_server_port(ks));
    }
    LOG_I("main", "ayder listening on %s:%d (%d workers, data in %s)", hc.bind_addr,
          http_server_port(srv), hc.workers, cc.data_dir);
    int sig = 0;
    for (;;) {
        sigwait(&set, &sig);
        if (sig != SIGHUP)
            break;
        /* SIGHUP: new connections get the re-read certificate, key and CA; open ones keep
         * theirs. A reload that fails keeps the current files in use. */
        if (!tls) {
            LOG_I("main", "SIGHUP: nothing to reload (HTTPS is off)");
            continue;
        }
        char tls_err[1024];
        if (http_tls_reload(tls, tls_err, sizeof tls_err) == 0)
            LOG_I("main", "SIGHUP: HTTPS certificate reloaded from %s", tc.cert_file);
        else
            LOG_E("main", "SIGHUP: reload failed, keeping the current certificate: %s", tls_err);
    }
    LOG_I("main", "signal %d: shutting down", sig);
    /* Subscription streams first, while the core still takes their final auto-commits: each
     * gets an `end` event (reason shutdown, its resume id). Then the core: it finishes
     * in-flight writes and answers them through the still-running workers; then the workers
     * stop. */
    api_end_subscriptions(api);
    core_stop(core);
    if (ks)
        kafka_server_stop(ks); /* after core_stop: every proposal's answer has been posted */
    api_quiesce(api); /* stream jobs post to the workers: finish them while the workers run */
    http_server_stop(srv);
    api_free(api);
    core_close(core);
    auth_free(auth);
    http_tls_free(tls);
    LOG_I("main", "stopped cleanly");
    return 0;
}
