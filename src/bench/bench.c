/* bench.c -- `ayder bench`: drive an HTTP/1.1 server with keep-alive connections and report
 * throughput and latency honestly.
 *
 * Shape. The main thread parses options, runs the setup requests (create topic, pre-fill, pre-write
 * KV keys) over one blocking connection, starts --threads workers, prints a live line on stderr
 * once a second and, after the hard stop, the final report on stdout (or one JSON object).
 * Each worker owns its connections (connection c belongs to worker c % threads), its own epoll
 * instance, and two "interval" slots (histogram + counters): slot 0 for the warm-up, slot 1 for
 * the measured window. The main thread takes each worker's slots under that worker's mutex once a
 * second, prints the live line from both and folds slot 1 into the run totals.
 *
 * Load models.
 *   closed loop (no --rate): a connection sends its next request as soon as the previous response
 *     arrives; latency = response time - send time.
 *   open loop (--rate R): connection c sends at t0 + phase_c + k * interval, interval =
 *     connections / R. If the connection is still busy when a send is due, the request waits and
 *     goes out as soon as the connection frees up, and latency is measured from the *intended*
 *     send time (coordinated-omission correction as in wrk2), so a server stall shows in the tail
 *     instead of silently lowering the offered load.
 *
 * Connection state machine (per connection; `deadline_ns` says when it next needs attention):
 *
 *     CLOSED --start_connect()--> CONNECTING --writable, SO_ERROR==0--> IDLE
 *       ^                              |                                  |  due (now or schedule)
 *       |  error / close / timeout     v  connect error (retry 100 ms)    v
 *       +---------------------------- any <---------------------------- BUSY (request written
 *                                                                        and/or awaiting reply)
 *     BUSY --complete response--> IDLE (or CLOSED if the server said Connection: close)
 *
 * Invariants:
 *   1. At most one request is outstanding per connection (HTTP/1.1 without pipelining).
 *   2. Every request that was sent either completes (counted by status class and latency),
 *      fails (counted as a connect/read/write/timeout/protocol error), or is still outstanding at
 *      the hard stop (counted as in_flight_at_stop). Nothing is dropped without being counted.
 *   3. Only responses completing inside [measure_start, end) enter the totals; warm-up ones are
 *      shown live but never reported.
 *   4. Every loop is bounded by the hard stop `end_ns` (or an interrupt); workers never wait in
 *      epoll longer than 100 ms, so they notice the stop promptly.
 *   5. Epoll events carry (connection index, generation); an event for a socket that was closed
 *      and replaced within the same epoll batch is ignored.
 */
#include "bench/bench.h"

#include "base/alloc.h"
#include "base/clock.h"
#include "base/err.h"
#include "base/json.h"

#include <errno.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#define NS_PER_S UINT64_C(1000000000)
#define NS_PER_MS UINT64_C(1000000)
#define CONN_MAX 20000
#define THREAD_MAX 64
#define PAYLOAD_MAX (64u * 1024u * 1024u)
#define REQ_BODY_MAX (256u * 1024u * 1024u)
#define CONSUME_LIMIT 1000
#define RECONNECT_BACKOFF_NS (100 * NS_PER_MS)
#define WAIT_MAX_NS (100 * NS_PER_MS)
#define READ_CHUNK 65536

/* ================================================================================================
 * Options
 * ============================================================================================== */

enum mode {
    MODE_PRODUCE,
    MODE_NDJSON,
    MODE_CONSUME,
    MODE_KV_PUT,
    MODE_KV_GET,
    MODE_MIXED,
    MODE_GET,
};
static const char *const mode_names[] = {"produce", "ndjson", "consume", "kv-put",
                                         "kv-get",  "mixed",  "get"};

enum op { OP_PRODUCE, OP_NDJSON, OP_CONSUME, OP_KV_PUT, OP_KV_GET, OP_GET };

struct opts {
    char url[512];
    char host[256];
    char port[16];
    char prefix[256]; /* path prefix from the URL, without trailing '/' ("" for none) */
    const char *token;
    enum mode mode;
    const char *topic;
    uint32_t partitions;
    uint32_t batch;
    size_t payload_bytes;
    uint32_t connections;
    uint32_t threads;
    uint64_t duration_ns;
    uint64_t warmup_ns;
    double rate; /* total requests per second; 0 = closed loop */
    bool json;
    const char *path;
    uint64_t timeout_ns;
    uint32_t keys;    /* kv-get: keys written by setup */
    uint64_t prefill; /* consume/mixed: records per empty partition written by setup */
};

static void usage(FILE *f)
{
    fprintf(f,
            "usage: ayder bench [options]\n"
            "  --url URL            server (default http://127.0.0.1:1109)\n"
            "  --token T            send Authorization: Bearer T\n"
            "  --mode M             produce|ndjson|consume|kv-put|kv-get|mixed|get\n"
            "                       (default produce)\n"
            "  --topic NAME         topic (default bench)\n"
            "  --partitions N       partitions to create/use (default 1)\n"
            "  --batch N            ndjson lines per request (default 100)\n"
            "  --payload-bytes N    message/value size (default 64)\n"
            "  --connections N      keep-alive connections (default 64)\n"
            "  --threads N          worker threads (default 2)\n"
            "  --duration D         measured time, e.g. 10s, 500ms, 1m (default 10s)\n"
            "  --warmup D           unreported time before it (default 2s)\n"
            "  --rate R             total req/s, open loop (default: closed loop, max throughput)\n"
            "  --path P             mode get: the path to GET (default /health)\n"
            "  --timeout-ms N       per-request and connect timeout (default 10000)\n"
            "  --keys N             kv-get: keys pre-written by setup (default 1000)\n"
            "  --prefill N          consume/mixed: records written into each empty partition\n"
            "                       (default 100000)\n"
            "  --json               print one JSON object instead of the table\n");
}

static int parse_u64(const char *s, uint64_t max, uint64_t *v)
{
    if (!s || !*s)
        return ERR_INVALID;
    char *e;
    errno = 0;
    unsigned long long x = strtoull(s, &e, 10);
    if (errno || *e || s[0] == '-' || x > max)
        return ERR_INVALID;
    *v = x;
    return 0;
}

/* "10s", "500ms", "2m", "1.5s", "250us"; a bare number is seconds. */
static int parse_duration(const char *s, uint64_t *ns)
{
    if (!s || !*s)
        return ERR_INVALID;
    char *e;
    errno = 0;
    double x = strtod(s, &e);
    if (errno || e == s || !(x >= 0) || x > 1e7)
        return ERR_INVALID;
    double mul;
    if (*e == 0 || strcmp(e, "s") == 0)
        mul = 1e9;
    else if (strcmp(e, "ms") == 0)
        mul = 1e6;
    else if (strcmp(e, "us") == 0)
        mul = 1e3;
    else if (strcmp(e, "m") == 0)
        mul = 60e9;
    else if (strcmp(e, "h") == 0)
        mul = 3600e9;
    else
        return ERR_INVALID;
    *ns = (uint64_t)(x * mul);
    return 0;
}

static bool name_ok(const char *s)
{
    if (!*s || strlen(s) > 200)
        return false;
    for (const char *p = s; *p; p++) {
        char c = *p;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_' || c == '.'))
            return false;
    }
    return true;
}

static int parse_url(struct opts *o, const char *url)
{
    if (strlen(url) >= sizeof o->url)
        return ERR_INVALID;
    snprintf(o->url, sizeof o->url, "%s", url);
    struct http_url u;
    int rc = http_url_parse(url, &u);
    if (rc)
        return rc;
    snprintf(o->host, sizeof o->host, "%s", u.host);
    snprintf(o->port, sizeof o->port, "%s", u.port);
    snprintf(o->prefix, sizeof o->prefix, "%s", u.prefix);
    return 0;
}

static bool known_value_opt(const char *name)
{
    static const char *const names[] = {
        "--url",      "--token",    "--mode",      "--topic",         "--partitions", "--batch",
        "--payload-bytes", "--connections", "--threads", "--duration", "--warmup",     "--rate",
        "--path",     "--timeout-ms", "--keys",    "--prefill"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(name, names[i]) == 0)
            return true;
    return false;
}

/* Returns 0, or 2 after printing a usage error (the exit code). */
static int parse_opts(struct opts *o, int argc, char **argv, bool *help)
{
    memset(o, 0, sizeof *o);
    o->mode = MODE_PRODUCE;
    o->topic = "bench";
    o->partitions = 1;
    o->batch = 100;
    o->payload_bytes = 64;
    o->connections = 64;
    o->threads = 2;
    o->duration_ns = 10 * NS_PER_S;
    o->warmup_ns = 2 * NS_PER_S;
    o->path = "/health";
    o->timeout_ns = 10 * NS_PER_S;
    o->keys = 1000;
    o->prefill = 100000;
    *help = false;
    const char *url = "http://127.0.0.1:1109";

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            *help = true;
            return 0;
        }
        if (strcmp(a, "--json") == 0) {
            o->json = true;
            continue;
        }
        if (strncmp(a, "--", 2) != 0) {
            fprintf(stderr, "bench: unexpected argument '%s'\n", a);
            return 2;
        }
        /* --name=value or --name value */
        char name[64];
        const char *val;
        const char *eq = strchr(a, '=');
        if (eq) {
            size_t nl = (size_t)(eq - a);
            if (nl >= sizeof name)
                goto bad_opt;
            memcpy(name, a, nl);
            name[nl] = 0;
            val = eq + 1;
        } else {
            if (strlen(a) >= sizeof name)
                goto bad_opt;
            snprintf(name, sizeof name, "%s", a);
            if (!known_value_opt(name))
                goto bad_opt;
            if (i + 1 >= argc) {
                fprintf(stderr, "bench: %s needs a value\n", a);
                return 2;
            }
            val = argv[++i];
        }
        uint64_t v = 0;
        int rc = 0;
        if (strcmp(name, "--url") == 0) {
            url = val;
        } else if (strcmp(name, "--token") == 0) {
            o->token = val;
        } else if (strcmp(name, "--mode") == 0) {
            size_t m;
            for (m = 0; m < sizeof mode_names / sizeof mode_names[0]; m++)
                if (strcmp(val, mode_names[m]) == 0)
                    break;
            if (m == sizeof mode_names / sizeof mode_names[0])
                rc = ERR_INVALID;
            o->mode = (enum mode)m;
        } else if (strcmp(name, "--topic") == 0) {
            o->topic = val;
            if (!name_ok(val))
                rc = ERR_INVALID;
        } else if (strcmp(name, "--partitions") == 0) {
            rc = parse_u64(val, 100000, &v);
            o->partitions = (uint32_t)v;
            if (!rc && v == 0)
                rc = ERR_INVALID;
        } else if (strcmp(name, "--batch") == 0) {
            rc = parse_u64(val, 1000000, &v);
            o->batch = (uint32_t)v;
            if (!rc && v == 0)
                rc = ERR_INVALID;
        } else if (strcmp(name, "--payload-bytes") == 0) {
            rc = parse_u64(val, PAYLOAD_MAX, &v);
            o->payload_bytes = (size_t)v;
            if (!rc && v == 0)
                rc = ERR_INVALID;
        } else if (strcmp(name, "--connections") == 0) {
            rc = parse_u64(val, CONN_MAX, &v);
            o->connections = (uint32_t)v;
            if (!rc && v == 0)
                rc = ERR_INVALID;
        } else if (strcmp(name, "--threads") == 0) {
            rc = parse_u64(val, THREAD_MAX, &v);
            o->threads = (uint32_t)v;
            if (!rc && v == 0)
                rc = ERR_INVALID;
        } else if (strcmp(name, "--duration") == 0) {
            rc = parse_duration(val, &o->duration_ns);
            if (!rc && o->duration_ns == 0)
                rc = ERR_INVALID;
        } else if (strcmp(name, "--warmup") == 0) {
            rc = parse_duration(val, &o->warmup_ns);
        } else if (strcmp(name, "--rate") == 0) {
            char *e;
            errno = 0;
            o->rate = strtod(val, &e);
            if (errno || e == val || *e || !(o->rate >= 0) || o->rate > 1e8)
                rc = ERR_INVALID;
        } else if (strcmp(name, "--path") == 0) {
            o->path = val;
            if (val[0] != '/' || strlen(val) > 4096 || strpbrk(val, " \r\n\t"))
                rc = ERR_INVALID;
        } else if (strcmp(name, "--timeout-ms") == 0) {
            rc = parse_u64(val, 3600000, &v);
            o->timeout_ns = v * NS_PER_MS;
            if (!rc && v == 0)
                rc = ERR_INVALID;
        } else if (strcmp(name, "--keys") == 0) {
            rc = parse_u64(val, 10000000, &v);
            o->keys = (uint32_t)v;
            if (!rc && v == 0)
                rc = ERR_INVALID;
        } else if (strcmp(name, "--prefill") == 0) {
            rc = parse_u64(val, 100000000, &v);
            o->prefill = v;
        } else {
            goto bad_opt;
        }
        if (rc) {
            fprintf(stderr, "bench: invalid value for %s: '%s'\n", name, val);
            return 2;
        }
        continue;
    bad_opt:
        fprintf(stderr, "bench: unknown option '%s' (try --help)\n", a);
        return 2;
    }
    if (parse_url(o, url) != 0) {
        fprintf(stderr, "bench: cannot use --url '%s' (only http://host[:port][/prefix])\n", url);
        return 2;
    }
    if (o->token && strpbrk(o->token, "\r\n")) {
        fprintf(stderr, "bench: --token must not contain line breaks\n");
        return 2;
    }
    if (o->threads > o->connections)
        o->threads = o->connections;
    if ((uint64_t)o->batch * (o->payload_bytes + 1) > REQ_BODY_MAX) {
        fprintf(stderr, "bench: --batch x --payload-bytes exceeds %u bytes\n", REQ_BODY_MAX);
        return 2;
    }
    return 0;
}

/* ================================================================================================
 * Shared run state, per-worker state and counters
 * ============================================================================================== */

struct stats {
    uint64_t requests;       /* responses received, any status */
    uint64_t status[10];     /* by status / 100 */
    uint64_t err_connect;
    uint64_t err_read;
    uint64_t err_write;
    uint64_t err_timeout;
    uint64_t err_protocol;   /* malformed or unexpected response bytes */
    uint64_t err_validation; /* 2xx whose body did not say what it should */
    uint64_t msgs_produced;
    uint64_t msgs_consumed;
    uint64_t payload_bytes;  /* message bytes produced + consumed (decoded size estimate) */
    uint64_t bytes_sent;
    uint64_t bytes_recv;
    uint64_t reconnects;     /* connections closed by the server between requests */
};

static void stats_add(struct stats *d, const struct stats *s)
{
    const uint64_t *a = (const uint64_t *)s;
    uint64_t *b = (uint64_t *)d;
    for (size_t i = 0; i < sizeof *s / sizeof(uint64_t); i++)
        b[i] += a[i];
}

static uint64_t stats_errors(const struct stats *s)
{
    uint64_t e = s->err_connect + s->err_read + s->err_write + s->err_timeout + s->err_protocol +
                 s->err_validation;
    for (int i = 0; i < 10; i++)
        if (i != 2)
            e += s->status[i];
    return e;
}

struct slot {
    struct bench_hist hist; /* latency from the intended send time (= send time, closed loop) */
    struct bench_hist svc;  /* service time: from the actual send; differs only in open loop */
    struct stats st;
};

static void slot_reset(struct slot *s)
{
    bench_hist_init(&s->hist);
    bench_hist_init(&s->svc);
    memset(&s->st, 0, sizeof s->st);
}

static void slot_merge(struct slot *d, const struct slot *s)
{
    bench_hist_merge(&d->hist, &s->hist);
    bench_hist_merge(&d->svc, &s->svc);
    stats_add(&d->st, &s->st);
}

enum conn_state { C_CLOSED, C_CONNECTING, C_IDLE, C_BUSY };

struct conn {
    int fd;
    enum conn_state state;
    uint32_t gen;
    uint32_t id; /* global connection number */
    uint32_t partition;
    uint64_t deadline_ns; /* CLOSED: reconnect at; CONNECTING/BUSY: timeout; IDLE: next send */
    uint64_t next_due_ns; /* open loop: intended time of the next request */
    uint64_t intended_ns; /* current request: latency origin */
    uint64_t sent_ns;
    uint64_t seq;         /* requests started on this connection */
    uint64_t consume_offset;
    enum op cur_op;
    bool writing;         /* EPOLLOUT armed */
    size_t resp_need;     /* total bytes the current response needs, once known */
    struct sbuf wbuf;
    size_t woff;
    struct sbuf rbuf;
    struct sbuf chunk;
};

struct run;

struct worker {
    struct run *run;
    uint32_t index;
    pthread_t tid;
    bool started;
    int epfd;
    struct conn *conns;
    uint32_t nconns;
    pthread_mutex_t mu;
    struct slot slots[2]; /* [0] warm-up, [1] measured; guarded by mu */
    /* Written by the worker before it exits, read after join. */
    uint64_t in_flight_at_stop;
    uint64_t behind_at_stop;
};

struct run {
    struct opts o;
    struct addrinfo *ai;
    char host_hdr[300];
    uint8_t *payload; /* o.payload_bytes of JSON-safe ASCII */
    uint8_t *ndjson;  /* batch lines of payload + '\n' */
    size_t ndjson_len;
    uint64_t t0_ns;
    uint64_t measure_ns; /* t0 + warmup */
    uint64_t end_ns;     /* measure + duration: the hard stop */
    uint64_t interval_ns; /* open loop: per-connection send interval (0 = closed loop) */
    atomic_int stop;
    atomic_uint_fast64_t stop_ns; /* when an interrupt stopped the run early (0 = not) */
    struct worker *workers;
};

static volatile sig_atomic_t g_interrupted;

static void on_sigint(int sig)
{
    (void)sig;
    g_interrupted = 1;
}

/* ================================================================================================
 * Requests
 * ============================================================================================== */

static void fill_payload(uint8_t *p, size_t n)
{
    /* {"k":"xxxx"} padded to exactly n bytes; for tiny sizes a JSON number of 1s. */
    if (n < 10) {
        memset(p, '1', n);
        return;
    }
    memcpy(p, "{\"k\":\"", 6);
    memset(p + 6, 'x', n - 8);
    memcpy(p + n - 2, "\"}", 2);
}

static void put_head(struct run *r, struct sbuf *w, const char *method)
{
    sbuf_puts(w, method);
    sbuf_putc(w, ' ');
    sbuf_puts(w, r->o.prefix);
}

static void put_tail(struct run *r, struct sbuf *w, const char *ctype, const void *body, size_t n,
                     bool has_body)
{
    sbuf_puts(w, " HTTP/1.1\r\nHost: ");
    sbuf_puts(w, r->host_hdr);
    sbuf_puts(w, "\r\n");
    if (r->o.token) {
        sbuf_puts(w, "Authorization: Bearer ");
        sbuf_puts(w, r->o.token);
        sbuf_puts(w, "\r\n");
    }
    if (has_body) {
        sbuf_printf(w, "Content-Type: %s\r\nContent-Length: %zu\r\n", ctype, n);
    }
    sbuf_puts(w, "\r\n");
    if (has_body)
        sbuf_append(w, body, n);
}

/* Build the next request of connection c into c->wbuf and remember its kind. */
static void build_request(struct run *r, struct conn *c)
{
    const struct opts *o = &r->o;
    struct sbuf *w = &c->wbuf;
    sbuf_reset(w);
    enum op op;
    switch (o->mode) {
    case MODE_PRODUCE: op = OP_PRODUCE; break;
    case MODE_NDJSON: op = OP_NDJSON; break;
    case MODE_CONSUME: op = OP_CONSUME; break;
    case MODE_KV_PUT: op = OP_KV_PUT; break;
    case MODE_KV_GET: op = OP_KV_GET; break;
    case MODE_GET: op = OP_GET; break;
    default: op = ((c->seq + c->id) & 1) ? OP_CONSUME : OP_PRODUCE; break;
    }
    c->cur_op = op;
    switch (op) {
    case OP_PRODUCE:
        put_head(r, w, "POST");
        sbuf_printf(w, "/broker/topics/%s/produce?partition=%u", o->topic, c->partition);
        put_tail(r, w, "application/octet-stream", r->payload, o->payload_bytes, true);
        break;
    case OP_NDJSON:
        put_head(r, w, "POST");
        sbuf_printf(w, "/broker/topics/%s/produce-ndjson?partition=%u", o->topic, c->partition);
        put_tail(r, w, "application/x-ndjson", r->ndjson, r->ndjson_len, true);
        break;
    case OP_CONSUME:
        put_head(r, w, "GET");
        sbuf_printf(w, "/broker/consume/%s/bench-%u/%u?offset=%llu&limit=%u&encoding=b64", o->topic,
                    c->id, c->partition, (unsigned long long)c->consume_offset, CONSUME_LIMIT);
        put_tail(r, w, NULL, NULL, 0, false);
        break;
    case OP_KV_PUT:
        put_head(r, w, "POST");
        sbuf_printf(w, "/kv/bench/key-%u-%llu", c->id, (unsigned long long)c->seq);
        put_tail(r, w, "application/octet-stream", r->payload, o->payload_bytes, true);
        break;
    case OP_KV_GET:
        put_head(r, w, "GET");
        sbuf_printf(w, "/kv/bench/key-%llu",
                    (unsigned long long)((c->seq * o->connections + c->id) % o->keys));
        put_tail(r, w, NULL, NULL, 0, false);
        break;
    case OP_GET:
        sbuf_puts(w, "GET ");
        sbuf_puts(w, o->path);
        put_tail(r, w, NULL, NULL, 0, false);
        break;
    }
    c->seq++;
}

/* ================================================================================================
 * Worker: connections on epoll
 * ============================================================================================== */

static uint64_t ev_key(const struct conn *c, uint32_t idx) { return (uint64_t)c->gen << 32 | idx; }

static struct slot *slot_for(struct worker *w, uint64_t now)
{
    return &w->slots[now >= w->run->measure_ns ? 1 : 0];
}

/* Count an event that is not a response (errors, reconnects) in the current slot. */
static void count_event(struct worker *w, uint64_t now, size_t field_offset)
{
    if (now >= w->run->end_ns)
        return;
    pthread_mutex_lock(&w->mu);
    uint64_t *f = (uint64_t *)((uint8_t *)&slot_for(w, now)->st + field_offset);
    (*f)++;
    pthread_mutex_unlock(&w->mu);
}

#define COUNT(w, now, field) count_event((w), (now), offsetof(struct stats, field))

static void conn_close(struct worker *w, struct conn *c, uint64_t retry_at_ns)
{
    if (c->fd >= 0)
        close(c->fd); /* also removes it from the epoll set */
    c->fd = -1;
    c->gen++;
    c->state = C_CLOSED;
    c->writing = false;
    c->resp_need = 0;
    c->woff = 0;
    sbuf_reset(&c->wbuf);
    sbuf_reset(&c->rbuf);
    c->deadline_ns = retry_at_ns;
    (void)w;
}

static void conn_fail(struct worker *w, struct conn *c, uint64_t now, size_t field_offset)
{
    count_event(w, now, field_offset);
    /* Refused connections retry after a pause so a dead server is not hammered; anything else
     * reconnects at once. */
    bool refused = field_offset == offsetof(struct stats, err_connect);
    uint64_t backoff = refused ? RECONNECT_BACKOFF_NS : 0;
    conn_close(w, c, now + backoff);
}

#define FAIL(w, c, now, field) conn_fail((w), (c), (now), offsetof(struct stats, field))

static void start_connect(struct worker *w, struct conn *c, uint32_t idx, uint64_t now)
{
    struct run *r = w->run;
    int fd = socket(r->ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        FAIL(w, c, now, err_connect);
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->fd = fd;
    c->gen++;
    int rc = connect(fd, r->ai->ai_addr, r->ai->ai_addrlen);
    if (rc < 0 && errno != EINPROGRESS) {
        FAIL(w, c, now, err_connect);
        return;
    }
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.u64 = ev_key(c, idx)};
    if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
        FAIL(w, c, now, err_connect);
        return;
    }
    c->writing = true;
    c->state = C_CONNECTING;
    c->deadline_ns = now + r->o.timeout_ns;
}

static void set_writing(struct worker *w, struct conn *c, uint32_t idx, bool on)
{
    if (c->writing == on)
        return;
    struct epoll_event ev = {.events = EPOLLIN | (on ? EPOLLOUT : 0), .data.u64 = ev_key(c, idx)};
    epoll_ctl(w->epfd, EPOLL_CTL_MOD, c->fd, &ev);
    c->writing = on;
}

/* Write as much of wbuf as the socket takes. Returns false if the connection failed. */
static bool flush_write(struct worker *w, struct conn *c, uint32_t idx, uint64_t now)
{
    while (c->woff < c->wbuf.len) {
        ssize_t n = send(c->fd, c->wbuf.data + c->woff, c->wbuf.len - c->woff, MSG_NOSIGNAL);
        if (n > 0) {
            c->woff += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            set_writing(w, c, idx, true);
            return true;
        }
        FAIL(w, c, now, err_write);
        return false;
    }
    set_writing(w, c, idx, false);
    return true;
}

/* The connection is IDLE: send now if a request is due, else set the deadline to when it is. */
static void maybe_send(struct worker *w, struct conn *c, uint32_t idx, uint64_t now)
{
    struct run *r = w->run;
    if (r->interval_ns) {
        if (now < c->next_due_ns) {
            c->deadline_ns = c->next_due_ns;
            return;
        }
        c->intended_ns = c->next_due_ns;
        c->next_due_ns += r->interval_ns;
    } else {
        c->intended_ns = now;
    }
    build_request(r, c);
    if (!sbuf_ok(&c->wbuf)) {
        /* Out of memory building a request: count it and start over on a fresh connection. */
        FAIL(w, c, now, err_write);
        return;
    }
    c->woff = 0;
    c->resp_need = 0;
    c->sent_ns = now;
    c->state = C_BUSY;
    c->deadline_ns = now + r->o.timeout_ns;
    flush_write(w, c, idx, now);
}

/* Check a 2xx body for the mode's success marker and count messages. */
static bool validate(struct run *r, struct conn *c, struct slice body, struct stats *st)
{
    uint64_t v;
    switch (c->cur_op) {
    case OP_PRODUCE:
        if (!bench_json_true(body, "ok"))
            return false;
        st->msgs_produced++;
        st->payload_bytes += r->o.payload_bytes;
        return true;
    case OP_NDJSON:
        if (!bench_json_true(body, "ok"))
            return false;
        if (bench_json_u64(body, "count", &v) && v != r->o.batch)
            return false;
        st->msgs_produced += r->o.batch;
        st->payload_bytes += (uint64_t)r->o.batch * r->o.payload_bytes;
        return true;
    case OP_KV_PUT:
        if (!bench_json_true(body, "ok"))
            return false;
        st->msgs_produced++;
        st->payload_bytes += r->o.payload_bytes;
        return true;
    case OP_CONSUME: {
        uint64_t count, next;
        if (!bench_json_u64(body, "count", &count) || !bench_json_u64(body, "next_offset", &next))
            return false;
        if (count > CONSUME_LIMIT || (count > 0 && next <= c->consume_offset))
            return false;
        st->msgs_consumed += count;
        st->payload_bytes += count * r->o.payload_bytes;
        /* Caught up with the end of the partition: start over from the beginning so the run keeps
         * measuring reads of real data rather than empty polls. */
        c->consume_offset = count == 0 ? 0 : next;
        return true;
    }
    case OP_KV_GET:
        st->msgs_consumed++;
        st->payload_bytes += r->o.payload_bytes;
        return true;
    case OP_GET:
        return true;
    }
    return true;
}

/* A complete response for connection c arrived at `now`. */
static void on_response(struct worker *w, struct conn *c, const struct http_resp *resp,
                        uint64_t now)
{
    struct run *r = w->run;
    if (now >= r->end_ns)
        return;
    struct stats st;
    memset(&st, 0, sizeof st);
    st.requests = 1;
    st.status[resp->status / 100 % 10]++;
    st.bytes_sent = c->wbuf.len;
    st.bytes_recv = resp->total_len;
    if (resp->status / 100 == 2 && !validate(r, c, resp->body, &st))
        st.err_validation = 1;
    uint64_t lat = now > c->intended_ns ? now - c->intended_ns : 0;
    pthread_mutex_lock(&w->mu);
    struct slot *s = slot_for(w, now);
    bench_hist_record(&s->hist, lat);
    bench_hist_record(&s->svc, now > c->sent_ns ? now - c->sent_ns : 0);
    stats_add(&s->st, &st);
    pthread_mutex_unlock(&w->mu);
}

static void on_readable(struct worker *w, struct conn *c, uint32_t idx, uint64_t now)
{
    for (;;) {
        uint8_t *dst = sbuf_reserve(&c->rbuf, READ_CHUNK);
        if (!dst) {
            FAIL(w, c, now, err_protocol);
            return;
        }
        ssize_t n = recv(c->fd, dst, READ_CHUNK, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (n <= 0) {
            if (n == 0 && c->state == C_IDLE && c->rbuf.len == 0) {
                /* The server closed an idle keep-alive connection: not an error. */
                COUNT(w, now, reconnects);
                conn_close(w, c, now);
            } else {
                FAIL(w, c, now, err_read);
            }
            return;
        }
        c->rbuf.len += (size_t)n;
        if (c->state != C_BUSY) {
            FAIL(w, c, now, err_protocol); /* bytes nobody asked for */
            return;
        }
        if (c->resp_need && c->rbuf.len < c->resp_need)
            continue;
        struct http_resp resp;
        int rc = http_resp_parse(c->rbuf.data, c->rbuf.len, &c->chunk, &resp);
        if (rc < 0) {
            FAIL(w, c, now, err_protocol);
            return;
        }
        if (rc == 0) {
            if (resp.header_len && !resp.chunked)
                c->resp_need = resp.total_len;
            continue;
        }
        on_response(w, c, &resp, now);
        bool leftover = resp.total_len != c->rbuf.len;
        bool unfinished_write = c->woff < c->wbuf.len;
        if (leftover || unfinished_write) {
            /* Extra bytes, or an early answer before our body was fully sent: the stream is out of
             * step, so start over on a fresh connection. */
            FAIL(w, c, now, err_protocol);
            return;
        }
        sbuf_reset(&c->rbuf);
        c->resp_need = 0;
        if (resp.close) {
            COUNT(w, now, reconnects);
            conn_close(w, c, now);
            return;
        }
        c->state = C_IDLE;
        maybe_send(w, c, idx, now);
        return;
    }
}

static void on_event(struct worker *w, struct conn *c, uint32_t idx, uint32_t events, uint64_t now)
{
    if (c->state == C_CONNECTING) {
        if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
            return;
        int err = 0;
        socklen_t len = sizeof err;
        if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0 || err != 0) {
            FAIL(w, c, now, err_connect);
            return;
        }
        c->state = C_IDLE;
        set_writing(w, c, idx, false);
        maybe_send(w, c, idx, now);
        return;
    }
    if (events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
        on_readable(w, c, idx, now);
        if (c->state == C_CLOSED || c->fd < 0)
            return;
    }
    if ((events & EPOLLOUT) && c->state == C_BUSY && c->woff < c->wbuf.len)
        flush_write(w, c, idx, now);
}

/* Act on every connection whose deadline has passed; return the earliest remaining deadline. */
static uint64_t run_deadlines(struct worker *w, uint64_t now)
{
    uint64_t next = UINT64_MAX;
    for (uint32_t i = 0; i < w->nconns; i++) {
        struct conn *c = &w->conns[i];
        if (c->deadline_ns <= now) {
            switch (c->state) {
            case C_CLOSED: start_connect(w, c, i, now); break;
            case C_CONNECTING: FAIL(w, c, now, err_connect); break;
            case C_BUSY: FAIL(w, c, now, err_timeout); break;
            case C_IDLE: maybe_send(w, c, i, now); break;
            }
        }
        /* Closed loop: an IDLE connection with nothing in flight sends at once (above), so it is
         * BUSY now; a CLOSED one retries at its deadline. */
        if (c->deadline_ns < next)
            next = c->deadline_ns;
    }
    return next;
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct run *r = w->run;
    /* Ask for precise timer wake-ups: the default 50 us slack would skew open-loop send times. */
    prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
    struct epoll_event evs[256];
    uint64_t now = clock_mono_ns();
    for (uint32_t i = 0; i < w->nconns; i++) {
        struct conn *c = &w->conns[i];
        c->deadline_ns = now;
        if (r->interval_ns) {
            /* Stagger the connections across one interval so sends are evenly spaced. */
            c->next_due_ns = r->t0_ns + r->interval_ns / r->o.connections * c->id;
        }
    }
    uint64_t next = 0;
    bool have_pwait2 = true;
    while (!atomic_load_explicit(&r->stop, memory_order_relaxed)) {
        now = clock_mono_ns();
        if (now >= r->end_ns)
            break;
        if (now >= next)
            next = run_deadlines(w, now);
        uint64_t wake = next < r->end_ns ? next : r->end_ns;
        uint64_t wait_ns = wake > now ? wake - now : 0;
        if (wait_ns > WAIT_MAX_NS)
            wait_ns = WAIT_MAX_NS;
        int n = -1;
        if (have_pwait2) {
            struct timespec ts = {.tv_sec = (time_t)(wait_ns / NS_PER_S),
                                  .tv_nsec = (long)(wait_ns % NS_PER_S)};
            n = epoll_pwait2(w->epfd, evs, 256, &ts, NULL);
            if (n < 0 && errno == ENOSYS)
                have_pwait2 = false;
        }
        if (!have_pwait2)
            n = epoll_wait(w->epfd, evs, 256, (int)((wait_ns + NS_PER_MS - 1) / NS_PER_MS));
        if (n < 0)
            continue; /* EINTR */
        for (int i = 0; i < n; i++) {
            /* Per event, so a response's time is when it is read, not when the batch began. */
            now = clock_mono_ns();
            uint32_t idx = (uint32_t)evs[i].data.u64;
            uint32_t gen = (uint32_t)(evs[i].data.u64 >> 32);
            if (idx >= w->nconns)
                continue;
            struct conn *c = &w->conns[idx];
            if (c->gen != gen || c->fd < 0)
                continue;
            on_event(w, c, idx, evs[i].events, now);
            if (c->deadline_ns < next)
                next = c->deadline_ns;
        }
    }
    /* Hard stop: account for what is outstanding, then drop every connection. */
    uint64_t stop_at = r->end_ns;
    uint64_t early = atomic_load(&r->stop_ns);
    if (early && early < stop_at)
        stop_at = early;
    for (uint32_t i = 0; i < w->nconns; i++) {
        struct conn *c = &w->conns[i];
        if (c->state == C_BUSY)
            w->in_flight_at_stop++;
        /* Scheduled sends whose time had come but which never went out (the one in flight
         * already advanced next_due_ns, so it is not counted twice). */
        if (r->interval_ns && c->next_due_ns < stop_at)
            w->behind_at_stop += (stop_at - 1 - c->next_due_ns) / r->interval_ns + 1;
        conn_close(w, c, 0);
    }
    return NULL;
}

/* ================================================================================================
 * Setup: blocking requests over one connection
 * ============================================================================================== */

struct sync_client {
    struct run *r;
    int fd;
    struct sbuf req;
    struct sbuf resp;
    struct sbuf chunk;
    int last_errno; /* of the last failed socket call, for the message */
};

static int sync_connect(struct sync_client *sc)
{
    struct run *r = sc->r;
    int fd = socket(r->ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        sc->last_errno = errno;
        return ERR_IO;
    }
    struct timeval tv = {.tv_sec = (time_t)(r->o.timeout_ns / NS_PER_S),
                         .tv_usec = (suseconds_t)(r->o.timeout_ns % NS_PER_S / 1000)};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, r->ai->ai_addr, r->ai->ai_addrlen) < 0) {
        sc->last_errno = errno;
        close(fd);
        return ERR_IO;
    }
    sc->fd = fd;
    return 0;
}

/* One request; the response body is copied into *body (reset first). Retries once on a fresh
 * connection if a kept-alive one turns out to be dead. */
static int sync_request(struct sync_client *sc, const char *method, const char *path,
                        const char *ctype, const void *data, size_t n, int *status,
                        struct sbuf *body)
{
    struct run *r = sc->r;
    for (int attempt = 0; attempt < 2; attempt++) {
        if (sc->fd < 0) {
            int rc = sync_connect(sc);
            if (rc)
                return rc;
        }
        sbuf_reset(&sc->req);
        put_head(r, &sc->req, method);
        sbuf_puts(&sc->req, path);
        put_tail(r, &sc->req, ctype, data, n, data != NULL);
        if (!sbuf_ok(&sc->req))
            return ERR_NOMEM;
        size_t off = 0;
        bool dead = false;
        while (off < sc->req.len) {
            ssize_t k = send(sc->fd, sc->req.data + off, sc->req.len - off, MSG_NOSIGNAL);
            if (k < 0 && errno == EINTR)
                continue;
            if (k <= 0) {
                sc->last_errno = k < 0 ? errno : EPIPE;
                dead = true;
                break;
            }
            off += (size_t)k;
        }
        sbuf_reset(&sc->resp);
        struct http_resp resp;
        int rc = 0;
        while (!dead) {
            rc = http_resp_parse(sc->resp.data, sc->resp.len, &sc->chunk, &resp);
            if (rc != 0)
                break;
            uint8_t *dst = sbuf_reserve(&sc->resp, READ_CHUNK);
            if (!dst)
                return ERR_NOMEM;
            ssize_t k = recv(sc->fd, dst, READ_CHUNK, 0);
            if (k < 0 && errno == EINTR)
                continue;
            if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
                sc->last_errno = ETIMEDOUT;
                close(sc->fd);
                sc->fd = -1;
                return ERR_TIMEOUT;
            }
            if (k <= 0) {
                sc->last_errno = k < 0 ? errno : ECONNRESET;
                dead = true;
                break;
            }
            sc->resp.len += (size_t)k;
        }
        if (dead) {
            close(sc->fd);
            sc->fd = -1;
            if (attempt == 0 && sc->resp.len == 0)
                continue;
            return ERR_IO;
        }
        if (rc < 0) {
            close(sc->fd);
            sc->fd = -1;
            return rc;
        }
        *status = resp.status;
        sbuf_reset(body);
        sbuf_append(body, resp.body.ptr, resp.body.len);
        if (resp.close || resp.total_len != sc->resp.len) {
            close(sc->fd);
            sc->fd = -1;
        }
        return sbuf_ok(body) ? 0 : ERR_NOMEM;
    }
    return ERR_EOF;
}

static void setup_fail(const struct sync_client *sc, const char *what, int rc, int status,
                       const struct sbuf *body)
{
    if (rc == ERR_IO)
        fprintf(stderr, "bench: setup: %s: %s: %s\n", what, sc->r->o.url, strerror(sc->last_errno));
    else if (rc)
        fprintf(stderr, "bench: setup: %s: %s\n", what, err_message(rc));
    else
        fprintf(stderr, "bench: setup: %s: HTTP %d: %.*s\n", what, status,
                (int)(body->len > 300 ? 300 : body->len), (const char *)body->data);
}

static int setup(struct run *r)
{
    const struct opts *o = &r->o;
    struct sync_client sc = {.r = r, .fd = -1};
    sbuf_init(&sc.req, 0);
    sbuf_init(&sc.resp, 0);
    sbuf_init(&sc.chunk, 0);
    struct sbuf body, path;
    sbuf_init(&body, 0);
    sbuf_init(&path, 0);
    int status = 0, rc = 0, ret = 0;
    bool topic_modes = o->mode == MODE_PRODUCE || o->mode == MODE_NDJSON ||
                       o->mode == MODE_CONSUME || o->mode == MODE_MIXED;

    if (topic_modes) {
        char req[512];
        int len = snprintf(req, sizeof req, "{\"name\":\"%s\",\"partitions\":%u}", o->topic,
                           o->partitions);
        rc = sync_request(&sc, "POST", "/broker/topics", "application/json", req, (size_t)len,
                          &status, &body);
        if (rc || (status != 200 && status != 201 && status != 409)) {
            setup_fail(&sc, "create topic", rc, status, &body);
            ret = 1;
            goto out;
        }
    }
    if ((o->mode == MODE_CONSUME || o->mode == MODE_MIXED) && o->prefill > 0) {
        for (uint32_t p = 0; p < o->partitions; p++) {
            sbuf_reset(&path);
            sbuf_printf(&path, "/broker/consume/%s/bench-probe/%u?offset=0&limit=1", o->topic, p);
            sbuf_putc(&path, 0);
            rc = sync_request(&sc, "GET", (const char *)path.data, NULL, NULL, 0, &status, &body);
            uint64_t count = 0;
            if (rc || status / 100 != 2 ||
                !bench_json_u64(slice_of(body.data, body.len), "count", &count)) {
                setup_fail(&sc, "probe partition", rc, status, &body);
                ret = 1;
                goto out;
            }
            if (count > 0)
                continue;
            if (!o->json)
                fprintf(stderr, "bench: pre-filling %s/%u with %llu records\n", o->topic, p,
                        (unsigned long long)o->prefill);
            sbuf_reset(&path);
            sbuf_printf(&path, "/broker/topics/%s/produce-ndjson?partition=%u", o->topic, p);
            sbuf_putc(&path, 0);
            uint64_t left = o->prefill;
            uint64_t per = 1000;
            while (left > 0) {
                uint64_t k = left < per ? left : per;
                rc = sync_request(&sc, "POST", (const char *)path.data, "application/x-ndjson",
                                  r->ndjson ? r->ndjson : (const uint8_t *)"",
                                  (size_t)k * (o->payload_bytes + 1), &status, &body);
                if (rc || status / 100 != 2) {
                    setup_fail(&sc, "pre-fill", rc, status, &body);
                    ret = 1;
                    goto out;
                }
                left -= k;
            }
        }
    }
    if (o->mode == MODE_KV_GET) {
        if (!o->json)
            fprintf(stderr, "bench: writing %u keys\n", o->keys);
        for (uint32_t k = 0; k < o->keys; k++) {
            sbuf_reset(&path);
            sbuf_printf(&path, "/kv/bench/key-%u", k);
            sbuf_putc(&path, 0);
            rc = sync_request(&sc, "POST", (const char *)path.data, "application/octet-stream",
                              r->payload, o->payload_bytes, &status, &body);
            if (rc || status / 100 != 2) {
                setup_fail(&sc, "write key", rc, status, &body);
                ret = 1;
                goto out;
            }
        }
    }
out:
    if (sc.fd >= 0)
        close(sc.fd);
    sbuf_free(&sc.req);
    sbuf_free(&sc.resp);
    sbuf_free(&sc.chunk);
    sbuf_free(&body);
    sbuf_free(&path);
    return ret;
}

/* ================================================================================================
 * Reporting
 * ============================================================================================== */

static const char *fmt_ns(char *b, size_t n, uint64_t ns)
{
    if (ns < 1000)
        snprintf(b, n, "%lluns", (unsigned long long)ns);
    else if (ns < NS_PER_MS)
        snprintf(b, n, "%.1fus", (double)ns / 1e3);
    else if (ns < NS_PER_S)
        snprintf(b, n, "%.2fms", (double)ns / 1e6);
    else
        snprintf(b, n, "%.2fs", (double)ns / 1e9);
    return b;
}

/* Take (and reset) every worker's slots: all of them into *live, the measured one into *total. */
static void collect(struct run *r, struct slot *live, struct slot *total)
{
    for (uint32_t t = 0; t < r->o.threads; t++) {
        struct worker *w = &r->workers[t];
        pthread_mutex_lock(&w->mu);
        if (live) {
            slot_merge(live, &w->slots[0]);
            slot_merge(live, &w->slots[1]);
        }
        slot_merge(total, &w->slots[1]);
        slot_reset(&w->slots[0]);
        slot_reset(&w->slots[1]);
        pthread_mutex_unlock(&w->mu);
    }
}

static void live_line(struct run *r, const struct slot *live, uint64_t now, uint64_t span_ns)
{
    char a[32] = "-", b[32] = "-";
    double secs = (double)span_ns / 1e9;
    double el = (double)(now - r->t0_ns) / 1e9;
    fprintf(stderr, "[%6.1fs]%s %9.0f req/s %10.0f msg/s  p50 %9s  p99 %9s  errors %llu\n", el,
            now - span_ns < r->measure_ns ? " warmup" : "", (double)live->st.requests / secs,
            (double)(live->st.msgs_produced + live->st.msgs_consumed) / secs,
            live->hist.count ? fmt_ns(a, sizeof a, bench_hist_percentile(&live->hist, 50)) : a,
            live->hist.count ? fmt_ns(b, sizeof b, bench_hist_percentile(&live->hist, 99)) : b,
            (unsigned long long)stats_errors(&live->st));
}

static const double pcts[] = {50, 90, 99, 99.9, 99.99, 99.999};
static const char *const pct_names[] = {"p50", "p90", "p99", "p99.9", "p99.99", "p99.999"};

static void jw_double(struct jw *jw, const char *key, double v, int decimals)
{
    char tmp[64];
    snprintf(tmp, sizeof tmp, "%.*f", decimals, isfinite(v) ? v : 0.0);
    jw_key(jw, key);
    jw_raw(jw, tmp);
}

static int report(struct run *r, const struct slot *tot, uint64_t measured_ns, uint64_t in_flight,
                  uint64_t behind, double cpu_user_s, double cpu_sys_s, double wall_s)
{
    const struct opts *o = &r->o;
    const struct stats *s = &tot->st;
    double secs = (double)measured_ns / 1e9;
    if (secs <= 0)
        secs = 1e-9;
    uint64_t msgs = s->msgs_produced + s->msgs_consumed;
    double cpu_pct = wall_s > 0 ? 100.0 * (cpu_user_s + cpu_sys_s) / wall_s : 0;
    const char *lat_from = r->interval_ns ? "intended send time" : "send time";

    if (o->json) {
        struct sbuf out;
        sbuf_init(&out, 0);
        struct jw jw;
        jw_init(&jw, &out);
        jw_obj_open(&jw);
        jw_kstr(&jw, "mode", mode_names[o->mode]);
        jw_kstr(&jw, "url", o->url);
        jw_ku64(&jw, "connections", o->connections);
        jw_ku64(&jw, "threads", o->threads);
        jw_double(&jw, "rate", o->rate, 1);
        jw_kstr(&jw, "latency_from", r->interval_ns ? "intended" : "sent");
        jw_ku64(&jw, "payload_bytes", o->payload_bytes);
        if (o->mode == MODE_NDJSON)
            jw_ku64(&jw, "batch", o->batch);
        jw_double(&jw, "duration_s", secs, 3);
        jw_ku64(&jw, "requests", s->requests);
        jw_double(&jw, "req_per_s", (double)s->requests / secs, 1);
        jw_ku64(&jw, "msgs_produced", s->msgs_produced);
        jw_ku64(&jw, "msgs_consumed", s->msgs_consumed);
        jw_double(&jw, "msg_per_s", (double)msgs / secs, 1);
        jw_double(&jw, "mb_per_s", (double)s->payload_bytes / secs / 1e6, 3);
        jw_double(&jw, "mb_sent_per_s", (double)s->bytes_sent / secs / 1e6, 3);
        jw_double(&jw, "mb_recv_per_s", (double)s->bytes_recv / secs / 1e6, 3);
        jw_key(&jw, "latency_us");
        jw_obj_open(&jw);
        for (size_t i = 0; i < sizeof pcts / sizeof pcts[0]; i++)
            jw_double(&jw, pct_names[i], (double)bench_hist_percentile(&tot->hist, pcts[i]) / 1e3,
                      1);
        jw_double(&jw, "max", (double)tot->hist.max_ns / 1e3 * (tot->hist.count > 0), 1);
        jw_double(&jw, "mean", bench_hist_mean(&tot->hist) / 1e3, 1);
        jw_obj_close(&jw);
        jw_key(&jw, "service_time_us");
        jw_obj_open(&jw);
        for (size_t i = 0; i < sizeof pcts / sizeof pcts[0]; i++)
            jw_double(&jw, pct_names[i], (double)bench_hist_percentile(&tot->svc, pcts[i]) / 1e3,
                      1);
        jw_double(&jw, "max", (double)tot->svc.max_ns / 1e3 * (tot->svc.count > 0), 1);
        jw_double(&jw, "mean", bench_hist_mean(&tot->svc) / 1e3, 1);
        jw_obj_close(&jw);
        jw_key(&jw, "status");
        jw_obj_open(&jw);
        for (int i = 1; i < 10; i++) {
            if (i > 5 && s->status[i] == 0)
                continue;
            char k[8];
            snprintf(k, sizeof k, "%dxx", i);
            jw_ku64(&jw, k, s->status[i]);
        }
        jw_obj_close(&jw);
        jw_key(&jw, "socket_errors");
        jw_obj_open(&jw);
        jw_ku64(&jw, "connect", s->err_connect);
        jw_ku64(&jw, "read", s->err_read);
        jw_ku64(&jw, "write", s->err_write);
        jw_ku64(&jw, "timeout", s->err_timeout);
        jw_ku64(&jw, "protocol", s->err_protocol);
        jw_obj_close(&jw);
        jw_ku64(&jw, "validation_errors", s->err_validation);
        jw_ku64(&jw, "errors", stats_errors(s));
        jw_ku64(&jw, "reconnects", s->reconnects);
        jw_ku64(&jw, "in_flight_at_stop", in_flight);
        jw_ku64(&jw, "behind_schedule_at_stop", behind);
        jw_key(&jw, "cpu");
        jw_obj_open(&jw);
        jw_double(&jw, "user_s", cpu_user_s, 2);
        jw_double(&jw, "sys_s", cpu_sys_s, 2);
        jw_double(&jw, "percent", cpu_pct, 1);
        jw_obj_close(&jw);
        jw_obj_close(&jw);
        sbuf_putc(&out, '\n');
        int ret = 0;
        if (sbuf_ok(&out))
            fwrite(out.data, 1, out.len, stdout);
        else
            ret = 1;
        sbuf_free(&out);
        fflush(stdout);
        return ret;
    }

    char b[32];
    printf("ayder bench: mode=%s url=%s connections=%u threads=%u %s", mode_names[o->mode], o->url,
           o->connections, o->threads, r->interval_ns ? "open-loop" : "closed-loop");
    if (r->interval_ns)
        printf(" rate=%.0f/s", o->rate);
    printf(" payload=%zuB", o->payload_bytes);
    if (o->mode == MODE_NDJSON)
        printf(" batch=%u", o->batch);
    printf("\n");
    printf("  requests            %llu\n", (unsigned long long)s->requests);
    printf("  duration            %.2f s\n", secs);
    printf("  req/s               %.1f\n", (double)s->requests / secs);
    printf("  msg/s               %.1f  (produced %llu, consumed %llu)\n", (double)msgs / secs,
           (unsigned long long)s->msgs_produced, (unsigned long long)s->msgs_consumed);
    printf("  MB/s                %.2f payload, %.2f sent, %.2f received\n",
           (double)s->payload_bytes / secs / 1e6, (double)s->bytes_sent / secs / 1e6,
           (double)s->bytes_recv / secs / 1e6);
    printf("  latency (from %s)\n", lat_from);
    for (size_t i = 0; i < sizeof pcts / sizeof pcts[0]; i++)
        printf("    %-8s          %s\n", pct_names[i],
               fmt_ns(b, sizeof b, bench_hist_percentile(&tot->hist, pcts[i])));
    printf("    %-8s          %s\n", "max",
           fmt_ns(b, sizeof b, tot->hist.count ? tot->hist.max_ns : 0));
    printf("    %-8s          %s\n", "mean",
           fmt_ns(b, sizeof b, (uint64_t)bench_hist_mean(&tot->hist)));
    if (r->interval_ns) {
        /* The uncorrected view (what a closed-loop tool would print): the gap between the two
         * tells how much of the latency is waiting behind earlier requests or a late generator. */
        printf("  service time (from actual send): p50 %s", fmt_ns(b, sizeof b,
               bench_hist_percentile(&tot->svc, 50)));
        printf("  p99 %s", fmt_ns(b, sizeof b, bench_hist_percentile(&tot->svc, 99)));
        printf("  p99.9 %s", fmt_ns(b, sizeof b, bench_hist_percentile(&tot->svc, 99.9)));
        printf("  max %s\n", fmt_ns(b, sizeof b, tot->svc.count ? tot->svc.max_ns : 0));
    }
    printf("  non-2xx             1xx %llu  3xx %llu  4xx %llu  5xx %llu",
           (unsigned long long)s->status[1], (unsigned long long)s->status[3],
           (unsigned long long)s->status[4], (unsigned long long)s->status[5]);
    for (int i = 6; i < 10; i++)
        if (s->status[i])
            printf("  %dxx %llu", i, (unsigned long long)s->status[i]);
    printf("\n");
    printf("  socket errors       connect %llu  read %llu  write %llu  timeout %llu"
           "  protocol %llu\n",
           (unsigned long long)s->err_connect, (unsigned long long)s->err_read,
           (unsigned long long)s->err_write, (unsigned long long)s->err_timeout,
           (unsigned long long)s->err_protocol);
    printf("  validation errors   %llu\n", (unsigned long long)s->err_validation);
    printf("  errors (total)      %llu\n", (unsigned long long)stats_errors(s));
    printf("  reconnects          %llu\n", (unsigned long long)s->reconnects);
    printf("  in flight at stop   %llu", (unsigned long long)in_flight);
    if (r->interval_ns)
        printf("  (behind schedule at stop %llu)", (unsigned long long)behind);
    printf("\n");
    if (tot->hist.saturated)
        printf("  latencies > %.1f s   %llu (clamped)\n", (double)BENCH_HIST_MAX_NS / 1e9,
               (unsigned long long)tot->hist.saturated);
    printf("  generator CPU       %.1f%%  (user %.2f s, sys %.2f s over %.2f s)\n", cpu_pct,
           cpu_user_s, cpu_sys_s, wall_s);
    fflush(stdout);
    return 0;
}

/* ================================================================================================
 * bench_main
 * ============================================================================================== */

static double tv_s(struct timeval tv) { return (double)tv.tv_sec + (double)tv.tv_usec / 1e6; }

static int run_prepare(struct run *r)
{
    const struct opts *o = &r->o;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    int rc = getaddrinfo(o->host, o->port, &hints, &r->ai);
    if (rc != 0) {
        fprintf(stderr, "bench: cannot resolve %s:%s: %s\n", o->host, o->port, gai_strerror(rc));
        r->ai = NULL;
        return 1;
    }
    if (strchr(o->host, ':'))
        snprintf(r->host_hdr, sizeof r->host_hdr, "[%s]:%s", o->host, o->port);
    else
        snprintf(r->host_hdr, sizeof r->host_hdr, "%s:%s", o->host, o->port);
    /* One descriptor per connection plus a few: raise the soft limit towards the hard one if the
     * default (often 1024) is too small. Failing that, sockets beyond it count as connect
     * errors. */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)o->connections + 64 &&
        rl.rlim_cur < rl.rlim_max) {
        rlim_t want = (rlim_t)o->connections + 64;
        rl.rlim_cur = want < rl.rlim_max ? want : rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    r->payload = xmalloc(o->payload_bytes);
    if (!r->payload)
        goto oom;
    fill_payload(r->payload, o->payload_bytes);
    uint64_t lines = o->mode == MODE_NDJSON ? o->batch : 0;
    if (o->mode == MODE_CONSUME || o->mode == MODE_MIXED)
        lines = lines > 1000 ? lines : 1000; /* pre-fill batches */
    if (lines) {
        uint64_t req_lines = o->mode == MODE_NDJSON ? o->batch : lines;
        r->ndjson_len = (size_t)req_lines * (o->payload_bytes + 1);
        size_t alloc = (size_t)lines * (o->payload_bytes + 1);
        r->ndjson = xmalloc(alloc);
        if (!r->ndjson)
            goto oom;
        for (uint64_t i = 0; i < lines; i++) {
            uint8_t *p = r->ndjson + i * (o->payload_bytes + 1);
            memcpy(p, r->payload, o->payload_bytes);
            p[o->payload_bytes] = '\n';
        }
    }
    return 0;
oom:
    fprintf(stderr, "bench: out of memory for payloads\n");
    return 1;
}

static int workers_create(struct run *r)
{
    const struct opts *o = &r->o;
    r->workers = xcalloc(o->threads, sizeof *r->workers);
    if (!r->workers)
        return ERR_NOMEM;
    for (uint32_t t = 0; t < o->threads; t++) {
        struct worker *w = &r->workers[t];
        w->run = r;
        w->index = t;
        w->epfd = -1;
        pthread_mutex_init(&w->mu, NULL);
        slot_reset(&w->slots[0]);
        slot_reset(&w->slots[1]);
        w->nconns = o->connections / o->threads + (t < o->connections % o->threads ? 1 : 0);
        w->conns = xcalloc(w->nconns, sizeof *w->conns);
        if (!w->conns)
            return ERR_NOMEM;
        for (uint32_t i = 0; i < w->nconns; i++) {
            struct conn *c = &w->conns[i];
            c->fd = -1;
            c->id = t + i * o->threads;
            c->partition = c->id % o->partitions;
            sbuf_init(&c->wbuf, 0);
            sbuf_init(&c->rbuf, HTTP_RESP_BODY_MAX + HTTP_RESP_HEADER_MAX + READ_CHUNK);
            sbuf_init(&c->chunk, HTTP_RESP_BODY_MAX);
        }
        w->epfd = epoll_create1(EPOLL_CLOEXEC);
        if (w->epfd < 0)
            return err_from_errno(errno);
    }
    return 0;
}

static void workers_free(struct run *r)
{
    if (!r->workers)
        return;
    for (uint32_t t = 0; t < r->o.threads; t++) {
        struct worker *w = &r->workers[t];
        if (w->conns) {
            for (uint32_t i = 0; i < w->nconns; i++) {
                struct conn *c = &w->conns[i];
                if (c->fd >= 0)
                    close(c->fd);
                sbuf_free(&c->wbuf);
                sbuf_free(&c->rbuf);
                sbuf_free(&c->chunk);
            }
            xfree(w->conns);
        }
        if (w->epfd >= 0)
            close(w->epfd);
        pthread_mutex_destroy(&w->mu);
    }
    xfree(r->workers);
    r->workers = NULL;
}

int bench_main(int argc, char **argv)
{
    struct run *r = xcalloc(1, sizeof *r);
    struct slot *total = xmalloc(sizeof *total);
    struct slot *live = xmalloc(sizeof *live);
    int ret = 1;
    if (!r || !total || !live) {
        fprintf(stderr, "bench: out of memory\n");
        goto out_free;
    }
    bool help = false;
    ret = parse_opts(&r->o, argc, argv, &help);
    if (ret || help) {
        usage(ret ? stderr : stdout);
        goto out_free;
    }
    ret = 1;
    const struct opts *o = &r->o;
    if (run_prepare(r))
        goto out_free;
    if (setup(r))
        goto out_free;
    int rc = workers_create(r);
    if (rc) {
        fprintf(stderr, "bench: cannot create workers: %s\n", err_message(rc));
        goto out_workers;
    }

    /* From here the clock runs. Interrupts end the run early but still print the report. */
    struct sigaction sa, old_sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_sa);
    g_interrupted = 0;

    slot_reset(total);
    struct rusage ru0, ru1;
    getrusage(RUSAGE_SELF, &ru0);
    r->t0_ns = clock_mono_ns();
    r->measure_ns = r->t0_ns + o->warmup_ns;
    r->end_ns = r->measure_ns + o->duration_ns;
    if (o->rate > 0) {
        double iv = (double)o->connections * 1e9 / o->rate;
        r->interval_ns = iv < 1 ? 1 : (uint64_t)iv;
    }
    atomic_init(&r->stop, 0);
    atomic_init(&r->stop_ns, 0);
    uint32_t started = 0;
    for (uint32_t t = 0; t < o->threads; t++) {
        if (pthread_create(&r->workers[t].tid, NULL, worker_main, &r->workers[t]) != 0) {
            fprintf(stderr, "bench: cannot start thread %u\n", t);
            atomic_store(&r->stop, 1);
            break;
        }
        r->workers[t].started = true;
        started++;
    }

    /* Live line once a second until the hard stop. */
    uint64_t last = r->t0_ns;
    for (uint64_t tick = 1; started == o->threads; tick++) {
        uint64_t at = r->t0_ns + tick * NS_PER_S;
        if (at > r->end_ns)
            at = r->end_ns;
        struct timespec ts = {.tv_sec = (time_t)(at / NS_PER_S), .tv_nsec = (long)(at % NS_PER_S)};
        while (!g_interrupted &&
               clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
            ;
        if (g_interrupted) {
            atomic_store(&r->stop_ns, clock_mono_ns());
            atomic_store(&r->stop, 1);
            break;
        }
        if (at >= r->end_ns)
            break;
        slot_reset(live);
        collect(r, live, total);
        uint64_t now = clock_mono_ns();
        live_line(r, live, now, now - last);
        last = now;
    }
    for (uint32_t t = 0; t < o->threads; t++)
        if (r->workers[t].started)
            pthread_join(r->workers[t].tid, NULL);
    sigaction(SIGINT, &old_sa, NULL);
    getrusage(RUSAGE_SELF, &ru1);
    uint64_t finished = clock_mono_ns();
    collect(r, NULL, total);

    uint64_t in_flight = 0, behind = 0;
    for (uint32_t t = 0; t < o->threads; t++) {
        in_flight += r->workers[t].in_flight_at_stop;
        behind += r->workers[t].behind_at_stop;
    }
    uint64_t stop_at = r->end_ns;
    uint64_t early = atomic_load(&r->stop_ns);
    if (early && early < stop_at)
        stop_at = early;
    uint64_t measured = stop_at > r->measure_ns ? stop_at - r->measure_ns : 0;
    double user = tv_s(ru1.ru_utime) - tv_s(ru0.ru_utime);
    double sys = tv_s(ru1.ru_stime) - tv_s(ru0.ru_stime);
    if (started != o->threads) {
        ret = 1;
    } else {
        ret = report(r, total, measured, in_flight, behind, user, sys,
                     (double)(finished - r->t0_ns) / 1e9);
    }

out_workers:
    workers_free(r);
out_free:
    if (r) {
        if (r->ai)
            freeaddrinfo(r->ai);
        xfree(r->payload);
        xfree(r->ndjson);
    }
    xfree(r);
    xfree(total);
    xfree(live);
    return ret;
}
