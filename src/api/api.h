/* api.h -- the HTTP API: routes, auth, request validation, and the glue between HTTP workers
 * and the core (proposals) and state machines (reads). Every endpoint is documented in
 * docs/HTTP_API.md; every failure answers the seed's error shape via the table in base/err.h.
 */
#ifndef AYDER_API_API_H
#define AYDER_API_API_H

#include "api/auth.h"
#include "core/core.h"
#include "http/server.h"

struct api;

struct api_config {
    struct core *core;
    struct auth *auth;
    uint32_t default_partitions;
    uint64_t consume_response_max_bytes; /* default 16 MiB */
    uint64_t long_poll_max_ms;           /* default 30000 */
    uint32_t ndjson_lines_max;           /* default 100000 */
    uint64_t value_max_bytes;            /* single produce body, default 16 MiB */
    uint32_t stream_threads;             /* threads running queries and joins, default 1 */
    uint32_t stream_queue_max;           /* queued queries beyond them, default 64 (then 503) */
    /* Per-call stream limits (0 = the engine's default; docs/STREAM.md "Limits"). */
    uint64_t stream_max_records;         /* query: read in all; join: per side and state records */
    uint64_t stream_max_groups;          /* query: (window, group) pairs */
    uint64_t stream_max_memory_bytes;    /* query memory; join state bytes */
    uint64_t stream_max_response_bytes;  /* query answer; join rows */
    /* Continuous queries ("follow": true; docs/HTTP_API.md). 0 = the default. */
    uint32_t stream_follow_max;          /* open at once, default 64 (then 503) */
    uint64_t stream_follow_buffer_bytes; /* output queued per subscriber before reading pauses, 1 MiB */
    uint64_t stream_follow_stall_ms;     /* a reader that takes nothing this long is cut, 30000 */
    /* SSE/NDJSON subscriptions (subscribe.c; 0 = default) */
    uint64_t sub_buffer_bytes;           /* queued output per subscriber, default 256 KiB */
    uint64_t sub_streams_max;            /* open streams, default 10000 (then 503) */
    uint64_t sub_stall_ms;               /* output stuck above the buffer this long: ended, 30 s */
};

int api_new(const struct api_config *cfg, struct api **out);
void api_free(struct api *a);
/* Before stopping the HTTP server: queued stream jobs end at once (503) and running ones finish;
 * their answers are posted to the still-running workers; open subscription streams end with a
 * final "shutdown" event (up to 2 s for it to be written). */
void api_quiesce(struct api *a);
/* At shutdown, before core_stop: end every open SSE/NDJSON subscription with a final "shutdown"
 * event and refuse new ones (503); waits up to 2 s for the final events to be written (then
 * the server's stop closes what is left). api_quiesce does it too if it was not done. */
void api_end_subscriptions(struct api *a);
/* The http_server handler (ctx = struct api *). */
void api_handle(void *ctx, struct http_req *req);
/* The http_server's request_is_write (ctx = struct api *): true for routes flagged API_WRITE
 * (journaled writes the core applies in order); see "Order of effect" in http/server.h. */
bool api_request_is_write(void *ctx, const struct http_request *head);
/* Give the API the server for connection metrics (after http_server_start). */
void api_set_server(struct api *a, struct http_server *s);

#endif
