/* produce.c -- `ayder produce TOPIC [VALUE]`: one value, or every line of stdin or a file.
 *
 * One value goes to POST /broker/topics/T/produce. Lines go in batches to
 * POST /broker/topics/T/produce-ndjson (at most --batch-lines lines and --batch-bytes bytes per
 * request; the server's limit is 100,000 lines and its body limit), over --connections keep-alive
 * connections with up to --pipeline requests in flight on each. The server applies the pipelined
 * writes of one connection in order and group-commits everything in flight together, which is
 * where the throughput comes from (docs/CLI.md "Throughput").
 *
 *   main thread: read input -> cut batches at line boundaries -> queue (bounded by the buffer
 *                pool: at most connections * pipeline + 2 batches exist)
 *   sender threads (one per connection): send while fewer than --pipeline are in flight, read
 *                answers in order; a batch answered 2xx returns its buffer to the pool
 *   progress thread (only when stderr is a terminal): a bar and the rate, 4 times a second
 *
 * Invariants:
 *   1. Every batch carries an idempotency_key unique to this run (cli-<pid>-<start>-<seq>), so
 *      re-sending it after a broken connection, a 503 or a commit_timeout (outcome unknown) can
 *      never write it twice: the server answers a retry with the original offsets.
 *   2. A batch is counted as produced only on a 2xx answer; the exit code is 0 only if every
 *      batch was. On a fatal answer (4xx, or retries exhausted) the senders stop, and the
 *      message says how many records had been acknowledged before.
 *   3. A 307 (the leader moved) re-sends the batch to the Location; the connection switches to
 *      the new leader once its in-flight answers are in, and resends in the original order.
 *   4. Progress goes to stderr only when it is a terminal (or --progress); stdout gets only the
 *      final result.
 *   5. Lines are cut only at '\n'; a final line without '\n' is sent too. A line longer than
 *      --batch-bytes gets a batch of its own (up to LINE_MAX_BYTES, beyond: error).
 */
#include "cli/cmd.h"

#include "base/b64.h"
#include "base/clock.h"
#include "base/err.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define CONN_MAX 64
#define PIPE_MAX 64
#define HEADERS_MAX 32
#define LINE_MAX_BYTES (64u << 20)
#define RETRIES_MAX 100

struct batch {
    struct batch *next;
    uint8_t *data; /* raw input lines */
    size_t len, cap;
    struct sbuf enc; /* --binary: the lines as base64 */
    uint64_t lines, seq;
    int attempts;
};

struct prod {
    struct cli *cli;
    const char *topic;
    char path[2048]; /* request path without the idempotency key */
    const char *hdrs[HEADERS_MAX + 2];
    char hdr_store[HEADERS_MAX][600];
    bool binary;
    uint64_t batch_lines, batch_bytes;
    uint32_t conns, depth;
    uint64_t run_id;

    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct batch *q_head, *q_tail, *pool;
    bool q_closed;

    _Atomic uint64_t acked_lines, acked_bytes, acked_msgs, batches, retries, redirects;
    uint64_t total_bytes; /* of the file, 0 when unknown */
    uint64_t start_ns;
    _Atomic bool stop;
    int fatal; /* exit code of the first fatal failure */
    char fatal_msg[800];
    bool progress;
    _Atomic bool done;
};

static void set_fatal(struct prod *p, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_fatal(struct prod *p, int code, const char *fmt, ...)
{
    pthread_mutex_lock(&p->mu);
    if (!p->fatal) {
        p->fatal = code;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(p->fatal_msg, sizeof p->fatal_msg, fmt, ap);
        va_end(ap);
    }
    atomic_store(&p->stop, true);
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
}

/* ---- the batch pool and queue ---------------------------------------------------------------- */

static struct batch *pool_get(struct prod *p)
{
    pthread_mutex_lock(&p->mu);
    while (!p->pool && !atomic_load(&p->stop))
        pthread_cond_wait(&p->cv, &p->mu);
    struct batch *b = p->pool;
    if (b)
        p->pool = b->next;
    pthread_mutex_unlock(&p->mu);
    if (b) {
        b->next = NULL;
        b->len = 0;
        b->lines = 0;
        b->attempts = 0;
        sbuf_reset(&b->enc);
    }
    return b;
}

static void pool_put(struct prod *p, struct batch *b)
{
    pthread_mutex_lock(&p->mu);
    b->next = p->pool;
    p->pool = b;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
}

static void q_push(struct prod *p, struct batch *b)
{
    pthread_mutex_lock(&p->mu);
    b->next = NULL;
    if (p->q_tail)
        p->q_tail->next = b;
    else
        p->q_head = b;
    p->q_tail = b;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
}

/* Take the next batch; wait for one only if `wait`. NULL: none now, or closed and empty. */
static struct batch *q_pop(struct prod *p, bool wait, bool *closed)
{
    pthread_mutex_lock(&p->mu);
    while (wait && !p->q_head && !p->q_closed && !atomic_load(&p->stop))
        pthread_cond_wait(&p->cv, &p->mu);
    struct batch *b = p->q_head;
    if (b) {
        p->q_head = b->next;
        if (!p->q_head)
            p->q_tail = NULL;
        b->next = NULL;
    }
    *closed = p->q_closed && !p->q_head;
    pthread_mutex_unlock(&p->mu);
    return b;
}

/* ---- sending --------------------------------------------------------------------------------- */

struct sender {
    struct prod *p;
    struct hc hc;
    struct batch *infl[PIPE_MAX];
    uint32_t head, n; /* FIFO of in-flight batches */
    struct batch *retry_head, *retry_tail;
    char next_base[600]; /* a redirect's origin, switched to once nothing is in flight */
    pthread_t tid;
};

static void retry_add(struct sender *s, struct batch *b)
{
    b->next = NULL;
    if (s->retry_tail)
        s->retry_tail->next = b;
    else
        s->retry_head = b;
    s->retry_tail = b;
}

static struct batch *retry_pop(struct sender *s)
{
    struct batch *b = s->retry_head;
    if (b) {
        s->retry_head = b->next;
        if (!s->retry_head)
            s->retry_tail = NULL;
        b->next = NULL;
    }
    return b;
}

/* Every unanswered batch goes back to the front of the retry list, in order (invariant 3). */
static void requeue_inflight(struct sender *s)
{
    struct batch *first = NULL, *last = NULL;
    for (uint32_t i = 0; i < s->n; i++) {
        struct batch *b = s->infl[(s->head + i) % PIPE_MAX];
        b->next = NULL;
        if (last)
            last->next = b;
        else
            first = b;
        last = b;
    }
    if (first) {
        last->next = s->retry_head;
        s->retry_head = first;
        if (!s->retry_tail)
            s->retry_tail = last;
    }
    s->head = 0;
    s->n = 0;
}

static int send_batch(struct sender *s, struct batch *b)
{
    struct prod *p = s->p;
    char path[2200];
    snprintf(path, sizeof path, "%s%cidempotency_key=cli-%" PRIx64 "-%" PRIu64, p->path,
             strchr(p->path, '?') ? '&' : '?', p->run_id, b->seq);
    const void *body = p->binary ? (const void *)b->enc.data : b->data;
    size_t len = p->binary ? b->enc.len : b->len;
    return hc_send(&s->hc, "POST", path, p->hdrs, "application/x-ndjson", body, len);
}

static void backoff(int attempts)
{
    long ms = 50L * attempts;
    struct timespec ts = {ms >= 1000 ? 1 : 0, (ms >= 1000 ? 0 : ms) * 1000000L};
    nanosleep(&ts, NULL);
}

static void account(struct prod *p, struct batch *b, struct slice body)
{
    uint64_t count = b->lines;
    json_error_t je;
    json_t *j = json_loadb((const char *)body.ptr, body.len, 0, &je);
    json_t *c = json_object_get(j, "count");
    if (json_is_integer(c))
        count = (uint64_t)json_integer_value(c);
    json_decref(j);
    atomic_fetch_add(&p->acked_msgs, count);
    atomic_fetch_add(&p->acked_lines, b->lines);
    atomic_fetch_add(&p->acked_bytes, b->len);
    atomic_fetch_add(&p->batches, 1);
}

/* The server's error code of an answer, into buf ("" if none). */
static const char *err_code(struct slice body, char *buf, size_t cap, char *msg, size_t mcap)
{
    json_error_t je;
    json_t *j = json_loadb((const char *)body.ptr, body.len, 0, &je);
    const char *c = json_string_value(json_object_get(j, "error"));
    const char *m = json_string_value(json_object_get(j, "message"));
    snprintf(buf, cap, "%s", c ? c : "");
    snprintf(msg, mcap, "%s", m ? m : "");
    json_decref(j);
    return buf;
}

static void *sender_main(void *arg)
{
    struct sender *s = arg;
    struct prod *p = s->p;
    bool closed = false;
    while (!atomic_load(&p->stop)) {
        if (s->next_base[0] && s->n == 0) {
            if (hc_set_base(&s->hc, s->next_base)) {
                set_fatal(p, CLI_EXIT_ERROR, "%s", s->hc.err);
                break;
            }
            s->next_base[0] = 0;
        }
        /* Fill the pipeline: retries first (their order is the original one), then the queue. */
        while (s->n < p->depth && !s->next_base[0]) {
            struct batch *b = retry_pop(s);
            if (!b)
                b = q_pop(p, s->n == 0, &closed);
            if (!b)
                break;
            int rc = send_batch(s, b);
            s->infl[(s->head + s->n++) % PIPE_MAX] = b;
            if (rc) {
                /* The connection broke: everything unanswered is re-sent (invariant 1). */
                requeue_inflight(s);
                if (++s->retry_head->attempts > RETRIES_MAX) {
                    set_fatal(p, CLI_EXIT_UNAVAILABLE, "%s", s->hc.err);
                    return NULL;
                }
                backoff(s->retry_head->attempts);
                hc_set_base(&s->hc, s->hc.base);
                break;
            }
        }
        if (s->n == 0) {
            if (closed && !s->retry_head)
                break;
            continue;
        }
        struct hc_resp r;
        int rc = hc_recv(&s->hc, &r);
        if (rc) {
            requeue_inflight(s);
            if (++s->retry_head->attempts > RETRIES_MAX) {
                set_fatal(p, rc == ERR_IO || rc == ERR_TIMEOUT || rc == ERR_EOF
                                 ? CLI_EXIT_UNAVAILABLE : CLI_EXIT_ERROR,
                          "%s", s->hc.err);
                break;
            }
            backoff(s->retry_head->attempts);
            hc_set_base(&s->hc, s->hc.base); /* reconnect */
            continue;
        }
        struct batch *b = s->infl[s->head];
        s->head = (s->head + 1) % PIPE_MAX;
        s->n--;
        if (r.status >= 200 && r.status < 300) {
            account(p, b, r.body);
            pool_put(p, b);
            continue;
        }
        char code[64], msg[400];
        err_code(r.body, code, sizeof code, msg, sizeof msg);
        if ((r.status == 307 || r.status == 308) && r.location.len) {
            /* Invariant 3: the origin of the Location becomes this connection's base. */
            atomic_fetch_add(&p->redirects, 1);
            char loc[600];
            size_t n = r.location.len < sizeof loc - 1 ? r.location.len : sizeof loc - 1;
            memcpy(loc, r.location.ptr, n);
            loc[n] = 0;
            char *slash = strncmp(loc, "http://", 7) == 0 ? strchr(loc + 7, '/') : NULL;
            if (slash)
                *slash = 0;
            if (++b->attempts > HC_REDIRECTS_MAX * 4 || strncmp(loc, "http://", 7) != 0) {
                set_fatal(p, CLI_EXIT_UNAVAILABLE, "redirected too often (last to %s)", loc);
                break;
            }
            snprintf(s->next_base, sizeof s->next_base, "%s", loc);
            retry_add(s, b);
            continue;
        }
        bool transient = r.status == 503 || r.status == 429;
        if (transient && ++b->attempts <= RETRIES_MAX) {
            atomic_fetch_add(&p->retries, 1);
            retry_add(s, b);
            if (s->n == 0)
                backoff(b->attempts);
            continue;
        }
        set_fatal(p, cli_status_exit(r.status), "POST %s: HTTP %d %s: %s", p->path, r.status, code,
                  msg);
        break;
    }
    return NULL;
}

/* ---- input ----------------------------------------------------------------------------------- */

/* Cut b at the last line boundary within the limits; the rest goes to carry. Returns false when
 * no complete line fits (the caller grows the buffer). */
static bool cut(struct prod *p, struct batch *b, bool eof, struct sbuf *carry)
{
    const uint8_t *d = b->data, *end = b->data + b->len, *q = d;
    uint64_t lines = 0;
    const uint8_t *last = NULL;
    while (lines < p->batch_lines) {
        const uint8_t *nl = memchr(q, '\n', (size_t)(end - q));
        if (!nl)
            break;
        lines++;
        last = nl + 1;
        q = last;
    }
    if (eof && lines < p->batch_lines && last != end) {
        /* The final line without '\n'. */
        if (end > (last ? last : d))
            lines++;
        last = end;
    }
    if (!last)
        return false;
    sbuf_reset(carry);
    sbuf_append(carry, last, (size_t)(end - last));
    b->len = (size_t)(last - d);
    b->lines = lines;
    return true;
}

/* Base64 every line of b into b->enc (--binary), keeping a trailing '\r' as data. */
static int encode_lines(struct batch *b)
{
    sbuf_reset(&b->enc);
    const uint8_t *q = b->data, *end = b->data + b->len;
    while (q < end) {
        const uint8_t *nl = memchr(q, '\n', (size_t)(end - q));
        const uint8_t *le = nl ? nl : end;
        b64_encode(&b->enc, q, (size_t)(le - q));
        sbuf_putc(&b->enc, '\n');
        q = nl ? nl + 1 : end;
    }
    return sbuf_ok(&b->enc) ? 0 : ERR_NOMEM;
}

/* Does the batch hold a line the server will store (not only empty lines)? */
static bool has_content(const struct batch *b)
{
    for (size_t i = 0; i < b->len; i++)
        if (b->data[i] != '\n' && b->data[i] != '\r')
            return true;
    return false;
}

/* Read the next batch (NULL at the end of input or on error: *err set). */
static struct batch *read_batch(struct prod *p, int fd, struct sbuf *carry, bool *eof, int *err)
{
    struct batch *b = pool_get(p);
    if (!b)
        return NULL;
    for (;;) {
        size_t want = p->batch_bytes > carry->len ? p->batch_bytes : carry->len + 65536;
        if (b->cap < want) {
            uint8_t *d = realloc(b->data, want);
            if (!d) {
                *err = ERR_NOMEM;
                pool_put(p, b);
                return NULL;
            }
            b->data = d;
            b->cap = want;
        }
        if (carry->len)
            memcpy(b->data, carry->data, carry->len);
        b->len = carry->len;
        sbuf_reset(carry);
        while (!*eof && b->len < b->cap) {
            ssize_t k = read(fd, b->data + b->len, b->cap - b->len);
            if (k < 0 && errno == EINTR)
                continue;
            if (k < 0) {
                *err = ERR_IO;
                pool_put(p, b);
                return NULL;
            }
            if (k == 0)
                *eof = true;
            b->len += (size_t)k;
            /* A pipe or terminal hands out what it has: once a read comes back short (the writer
             * is slower than us) send the complete lines we hold rather than wait for a full
             * batch, so `tail -f app.log | ayder produce logs` streams line by line. */
            if (k > 0 && (size_t)k < 65536 && memchr(b->data + b->len - (size_t)k, '\n', (size_t)k)) {
                struct stat st;
                if (fstat(fd, &st) == 0 && !S_ISREG(st.st_mode))
                    break;
            }
        }
        if (b->len == 0) {
            pool_put(p, b);
            return NULL;
        }
        if (cut(p, b, *eof, carry)) {
            if (!has_content(b) && !*eof) {
                b->len = 0; /* only empty lines: nothing to send; read on */
                continue;
            }
            if (!has_content(b)) {
                pool_put(p, b);
                return NULL;
            }
            return b;
        }
        /* One line longer than the buffer: grow it (invariant 5). */
        if (b->len >= LINE_MAX_BYTES) {
            *err = ERR_TOO_LARGE;
            pool_put(p, b);
            return NULL;
        }
        sbuf_append(carry, b->data, b->len);
        if (!sbuf_ok(carry)) {
            *err = ERR_NOMEM;
            pool_put(p, b);
            return NULL;
        }
        size_t grow = b->cap * 2;
        uint8_t *d = realloc(b->data, grow);
        if (!d) {
            *err = ERR_NOMEM;
            pool_put(p, b);
            return NULL;
        }
        b->data = d;
        b->cap = grow;
    }
}

/* ---- progress -------------------------------------------------------------------------------- */

static void fmt_count(char *buf, size_t cap, double v)
{
    if (v >= 1e9)
        snprintf(buf, cap, "%.2f G ", v / 1e9);
    else if (v >= 1e6)
        snprintf(buf, cap, "%.2f M ", v / 1e6);
    else if (v >= 1e3)
        snprintf(buf, cap, "%.1f k ", v / 1e3);
    else
        snprintf(buf, cap, "%.0f ", v);
}

static void progress_line(struct prod *p, bool final)
{
    double s = (double)(clock_mono_ns() - p->start_ns) / 1e9;
    uint64_t lines = atomic_load(&p->acked_lines), bytes = atomic_load(&p->acked_bytes);
    char a[32], r[32];
    fmt_count(a, sizeof a, (double)lines);
    fmt_count(r, sizeof r, s > 0 ? (double)lines / s : 0);
    if (p->total_bytes) {
        double f = (double)bytes / (double)p->total_bytes;
        if (f > 1)
            f = 1;
        char bar[31];
        int filled = (int)(f * 30);
        for (int i = 0; i < 30; i++)
            bar[i] = i < filled ? '#' : '.';
        bar[30] = 0;
        double eta = f > 0 ? s / f - s : 0;
        fprintf(stderr, "\r\033[K%3.0f%% [%s] %slines  %smsg/s  ETA %.0fs", f * 100, bar, a, r,
                final ? 0 : eta);
    } else {
        fprintf(stderr, "\r\033[K%slines  %smsg/s  %.1fs", a, r, s);
    }
    if (final)
        fputc('\n', stderr);
    fflush(stderr);
}

static void *progress_main(void *arg)
{
    struct prod *p = arg;
    while (!atomic_load(&p->done)) {
        struct timespec ts = {0, 250000000L};
        nanosleep(&ts, NULL);
        if (!atomic_load(&p->done))
            progress_line(p, false);
    }
    return NULL;
}

/* ---- the command ----------------------------------------------------------------------------- */

static const char prod_syn[] = "ayder produce TOPIC [VALUE] [-f FILE] [options]";
static const char prod_about[] =
    "With VALUE: produce that one value. Without: every line of -f FILE or stdin is one record,\n"
    "sent in batches (produce-ndjson). Lines are stored as they are, except that a line which is\n"
    "a JSON string (\"abc\") is stored unquoted and empty lines are skipped (the NDJSON rules,\n"
    "docs/HTTP_API.md); --binary stores every line's exact bytes, --b64 takes lines that are\n"
    "already base64. A progress bar and the rate go to stderr when it is a terminal.\n";

static int produce_one(struct cli *cli, struct prod *p, const char *value)
{
    char path[2048];
    snprintf(path, sizeof path, "%s", p->path);
    char *q = strstr(path, "/produce-ndjson");
    memmove(q + 8, q + 15, strlen(q + 15) + 1); /* "/produce" */
    int rc = cli_connect(cli);
    if (rc)
        return rc;
    struct hc_resp r;
    char what[2100];
    snprintf(what, sizeof what, "POST %s", path);
    int e = hc_request(&cli->hc, "POST", path, p->hdrs, "application/octet-stream", value,
                       strlen(value), &r);
    if (e)
        return cli_fail_io(cli, what, e);
    if (r.status < 200 || r.status >= 300)
        return cli_fail_http(cli, what, &r);
    if (cli->json) {
        cli_print_json(r.body);
        return 0;
    }
    json_error_t je;
    json_t *j = json_loadb((const char *)r.body.ptr, r.body.len, 0, &je);
    printf("%s: partition %" JSON_INTEGER_FORMAT " offset %" JSON_INTEGER_FORMAT "%s\n", p->topic,
           json_integer_value(json_object_get(j, "partition")),
           json_integer_value(json_object_get(j, "offset")),
           json_is_true(json_object_get(j, "durable")) ? "" : " (not yet durable)");
    json_decref(j);
    return 0;
}

int cmd_produce(struct cli *cli, int argc, char **argv)
{
    const char *file = NULL, *key = NULL, *partition = NULL, *bl = NULL, *bb = NULL, *nc = NULL,
               *pl = NULL, *mode = NULL, *wc = NULL;
    const char *headers[HEADERS_MAX];
    size_t nh = 0;
    bool b64 = false, binary = false, progress = false, no_progress = false;
    const struct opt opts[] = {
        {"--file", 'f', "FILE", "read lines from FILE ('-' = stdin, the default)", &file},
        {"--key", 'k', "K", "record key (every record)", &key},
        {"--partition", 'p', "N", "partition (default: by key, else round-robin per batch)",
         &partition},
        {"--header", 'H', "NAME=VALUE", "record header (repeatable)", NULL, NULL, headers, &nh,
         HEADERS_MAX},
        {"--binary", 0, NULL, "store each line's exact bytes (sent base64-encoded)", NULL, &binary},
        {"--b64", 0, NULL, "input lines are base64 of the values (?encoding=b64)", NULL, &b64},
        {"--batch-lines", 0, "N", "lines per request (32768; at most 100000)", &bl},
        {"--batch-bytes", 0, "N", "input bytes per request (4194304)", &bb},
        {"--connections", 0, "N", "connections (4)", &nc},
        {"--pipeline", 0, "N", "requests in flight per connection (4)", &pl},
        {"--mode", 0, "M", "sealed (default: answered once durable) or rocket", &mode},
        {"--write-concern", 0, "W", "1|majority|all|async (cluster)", &wc},
        {"--progress", 0, NULL, "show progress even when stderr is not a terminal", NULL,
         &progress},
        {"--no-progress", 0, NULL, "never show progress", NULL, &no_progress},
        OPT_END,
    };
    const char *pos[2];
    int n, rc = opt_parse(cli, opts, argc, argv, pos, 2, &n);
    if (rc)
        return rc;
    if (cli->help || n == 0) {
        opt_usage(cli->help ? stdout : stderr, prod_syn, prod_about, opts);
        return cli->help ? 0 : CLI_EXIT_USAGE;
    }
    if (n == 2 && file) {
        fprintf(stderr, "ayder produce: give either VALUE or --file, not both\n");
        return CLI_EXIT_USAGE;
    }
    if (b64 && binary) {
        fprintf(stderr, "ayder produce: --b64 and --binary exclude each other\n");
        return CLI_EXIT_USAGE;
    }
    struct prod *p = calloc(1, sizeof *p);
    if (!p)
        return CLI_EXIT_ERROR;
    p->cli = cli;
    p->topic = pos[0];
    p->binary = binary;
    uint64_t v;
    /* Defaults measured on a 2-vCPU box (docs/CLI.md "Throughput"): 64-byte lines, 32768 per
     * request (2 MiB), 4 connections x 4 in flight = 16 requests group-committed together. */
    p->batch_lines = 32768;
    p->batch_bytes = 4u << 20;
    p->conns = 4;
    p->depth = 4;
    rc = CLI_EXIT_USAGE;
    if (bl && (opt_u64("--batch-lines", bl, 100000, &p->batch_lines) || p->batch_lines == 0))
        goto out_free;
    if (bb && (opt_u64("--batch-bytes", bb, 1u << 30, &p->batch_bytes) || p->batch_bytes < 1024))
        goto out_free;
    if (nc && (opt_u64("--connections", nc, CONN_MAX, &v) || v == 0))
        goto out_free;
    if (nc)
        p->conns = (uint32_t)v;
    if (pl && (opt_u64("--pipeline", pl, PIPE_MAX, &v) || v == 0))
        goto out_free;
    if (pl)
        p->depth = (uint32_t)v;
    if (partition && opt_u64("--partition", partition, 1023, &v))
        goto out_free;
    if (mode && strcmp(mode, "sealed") && strcmp(mode, "rocket")) {
        fprintf(stderr, "ayder produce: --mode must be sealed or rocket\n");
        goto out_free;
    }
    /* The request path and headers. */
    struct sbuf path;
    sbuf_init(&path, sizeof p->path - 1);
    sbuf_puts(&path, "/broker/topics/");
    hc_escape(&path, p->topic, strlen(p->topic));
    sbuf_puts(&path, "/produce-ndjson?");
    if (b64 || binary)
        sbuf_puts(&path, "encoding=b64&");
    if (key) {
        sbuf_puts(&path, "key=");
        hc_escape(&path, key, strlen(key));
        sbuf_putc(&path, '&');
    }
    if (partition)
        sbuf_printf(&path, "partition=%s&", partition);
    if (mode)
        sbuf_printf(&path, "mode=%s&", mode);
    if (wc) {
        sbuf_puts(&path, "write_concern=");
        hc_escape(&path, wc, strlen(wc));
        sbuf_putc(&path, '&');
    }
    path.len--; /* the last '&' or '?' */
    if (!sbuf_ok(&path)) {
        fprintf(stderr, "ayder produce: the topic name or key is too long\n");
        sbuf_free(&path);
        goto out_free;
    }
    memcpy(p->path, path.data, path.len);
    p->path[path.len] = 0;
    sbuf_free(&path);
    for (size_t i = 0; i < nh; i++) {
        const char *eq = strchr(headers[i], '=');
        if (!eq || eq == headers[i] || strlen(headers[i]) > 500) {
            fprintf(stderr, "ayder produce: --header needs NAME=VALUE\n");
            goto out_free;
        }
        snprintf(p->hdr_store[i], sizeof p->hdr_store[i], "X-Ayder-Header-%.*s: %s",
                 (int)(eq - headers[i]), headers[i], eq + 1);
        p->hdrs[i] = p->hdr_store[i];
    }
    p->hdrs[nh] = NULL;
    if (n == 2) {
        if (binary || b64)
            fprintf(stderr, "ayder produce: --binary/--b64 apply to lines; VALUE is sent as is\n");
        rc = produce_one(cli, p, pos[1]);
        goto out_free;
    }

    /* Lines. */
    int fd = 0;
    if (file && strcmp(file, "-") != 0) {
        fd = open(file, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            fprintf(stderr, "ayder produce: cannot open %s: %s\n", file, strerror(errno));
            rc = CLI_EXIT_USAGE;
            goto out_free;
        }
        posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    }
    struct stat st;
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode))
        p->total_bytes = (uint64_t)st.st_size;
    p->progress = !no_progress && (progress || isatty(2));
    if ((rc = cli_connect(cli)))
        goto out_fd;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    size_t nbatches = (size_t)p->conns * p->depth + 2;
    struct batch *all = calloc(nbatches, sizeof *all);
    struct sender *snd = calloc(p->conns, sizeof *snd);
    if (!all || !snd) {
        rc = CLI_EXIT_ERROR;
        goto out_mem;
    }
    for (size_t i = 0; i < nbatches; i++) {
        sbuf_init(&all[i].enc, 0);
        all[i].next = p->pool;
        p->pool = &all[i];
    }
    p->start_ns = clock_mono_ns();
    p->run_id = (uint64_t)getpid() << 32 ^ (uint64_t)clock_wall_ms();
    struct sbuf carry;
    sbuf_init(&carry, 0);
    bool eof = false;
    int err = 0;
    uint64_t seq = 0;

    /* The first batch alone, through the redirect-following client: it finds the leader and
     * checks the token before any thread starts. */
    struct batch *b = read_batch(p, fd, &carry, &eof, &err);
    if (!b) {
        if (err) {
            fprintf(stderr, "ayder produce: reading input: %s\n", err_message(err));
            rc = CLI_EXIT_ERROR;
        } else {
            rc = 0;
            if (cli->json)
                printf("{\"ok\":true,\"count\":0,\"batches\":0}\n");
            else
                printf("%s: no lines to produce\n", p->topic);
        }
        goto out_carry;
    }
    b->seq = seq++;
    if (binary && encode_lines(b)) {
        rc = CLI_EXIT_ERROR;
        goto out_carry;
    }
    {
        char path1[2200];
        snprintf(path1, sizeof path1, "%s%cidempotency_key=cli-%" PRIx64 "-%" PRIu64, p->path,
                 strchr(p->path, '?') ? '&' : '?', p->run_id, b->seq);
        struct hc_resp r;
        int e;
        for (int attempt = 1;; attempt++) {
            e = hc_request(&cli->hc, "POST", path1, p->hdrs, "application/x-ndjson",
                           binary ? (const void *)b->enc.data : b->data,
                           binary ? b->enc.len : b->len, &r);
            if (e || r.status != 503 || attempt > 50)
                break;
            backoff(attempt);
        }
        if (e) {
            rc = cli_fail_io(cli, "produce", e);
            goto out_carry;
        }
        if (r.status < 200 || r.status >= 300) {
            char what[2300];
            snprintf(what, sizeof what, "POST %s", p->path);
            rc = cli_fail_http(cli, what, &r);
            goto out_carry;
        }
        account(p, b, r.body);
        pool_put(p, b);
    }
    pthread_t prog;
    bool prog_started = p->progress && pthread_create(&prog, NULL, progress_main, p) == 0;
    uint32_t started = 0;
    for (; started < p->conns; started++) {
        struct sender *s = &snd[started];
        s->p = p;
        int tmo = cli->timeout_ms > 60000 ? cli->timeout_ms : 60000;
        hc_init(&s->hc, cli->hc.base, cli->token, tmo);
        if (pthread_create(&s->tid, NULL, sender_main, s) != 0) {
            hc_close(&s->hc);
            set_fatal(p, CLI_EXIT_ERROR, "cannot start a thread");
            break;
        }
    }
    /* The read that meets the end of input may leave lines in carry: they are a batch too. */
    while ((!eof || carry.len) && !atomic_load(&p->stop)) {
        b = read_batch(p, fd, &carry, &eof, &err);
        if (!b)
            break;
        b->seq = seq++;
        if (binary && encode_lines(b)) {
            err = ERR_NOMEM;
            pool_put(p, b);
            break;
        }
        q_push(p, b);
    }
    if (err)
        set_fatal(p, CLI_EXIT_ERROR, "reading input: %s", err_message(err));
    pthread_mutex_lock(&p->mu);
    p->q_closed = true;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for (uint32_t i = 0; i < started; i++) {
        pthread_join(snd[i].tid, NULL);
        hc_close(&snd[i].hc);
    }
    atomic_store(&p->done, true);
    if (prog_started) {
        pthread_join(prog, NULL);
        progress_line(p, true);
    }
    double secs = (double)(clock_mono_ns() - p->start_ns) / 1e9;
    uint64_t msgs = atomic_load(&p->acked_msgs);
    if (p->fatal) {
        fprintf(stderr, "ayder produce: %s (%" PRIu64 " records were acknowledged before)\n",
                p->fatal_msg, msgs);
        rc = p->fatal;
    } else {
        rc = 0;
        if (cli->json)
            printf("{\"ok\":true,\"topic\":\"%s\",\"count\":%" PRIu64 ",\"batches\":%" PRIu64
                   ",\"seconds\":%.3f,\"msg_per_s\":%.0f,\"retries\":%" PRIu64
                   ",\"redirects\":%" PRIu64 "}\n",
                   p->topic, msgs, atomic_load(&p->batches), secs, secs > 0 ? msgs / secs : 0,
                   atomic_load(&p->retries), atomic_load(&p->redirects) + (uint64_t)cli->hc.redirects);
        else
            printf("%s: produced %" PRIu64 " records in %" PRIu64 " batches, %.2f s (%.0f msg/s)\n",
                   p->topic, msgs, atomic_load(&p->batches), secs, secs > 0 ? msgs / secs : 0);
    }
out_carry:
    sbuf_free(&carry);
out_mem:
    for (size_t i = 0; all && i < nbatches; i++) {
        free(all[i].data);
        sbuf_free(&all[i].enc);
    }
    free(all);
    free(snd);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
out_fd:
    if (fd > 0)
        close(fd);
out_free:
    free(p);
    return rc;
}
