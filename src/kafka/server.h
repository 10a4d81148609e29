/* server.h -- the Kafka listener: a second front door to the same broker (docs/KAFKA.md).
 *
 * Owns one thread running its own libuv loop, the listening socket and every Kafka connection.
 * It decodes requests with kafka/codec.h and calls the broker and the core directly, never HTTP:
 * writes (Produce, OffsetCommit, CreateTopics, DeleteTopics) become the same proposals the HTTP
 * handlers build (core_propose), reads (Fetch, ListOffsets, Metadata, OffsetFetch) read the
 * broker like HTTP consume does (page cache, high watermark, no core-thread locks).
 *
 * Thread model: everything here runs on the "kafka" thread except two callbacks that run on the
 * core thread -- a proposal's done() and a parked fetch's broker waiter wake() -- and both only
 * push the item onto a mutex-protected list and uv_async_send the loop. The group coordinator
 * (JoinGroup/SyncGroup/Heartbeat/LeaveGroup) is in-memory state of this thread only.
 *
 * Per connection, requests are handled one at a time in arrival order (the next frame is parsed
 * only after the previous response is queued), so responses keep request order and one
 * connection's bytes never reach another's buffer.
 *
 * Lifecycle: kafka_server_start after core_start; kafka_server_stop after core_stop (so every
 * proposal's final callback has been delivered to this thread) and before core_close.
 */
#ifndef AYDER_KAFKA_SERVER_H
#define AYDER_KAFKA_SERVER_H

#include <stdbool.h>
#include <stdint.h>

struct core;
struct kafka_server;

struct kafka_server_config {
    const char *bind_addr;        /* default 127.0.0.1 */
    int port;                     /* 0 = any free port (tests) */
    const char *advertised_host;  /* Metadata's broker host; default = bind_addr (or 127.0.0.1) */
    int advertised_port;          /* 0 = the bound port */
    const char *nodes;            /* cluster: "name=host:port,..." per member (--kafka-nodes) */
    struct core *core;
    bool auto_create_topics;
    uint32_t default_partitions;
    uint32_t max_connections;     /* 0 = 10000 */
};

int kafka_server_start(const struct kafka_server_config *cfg, struct kafka_server **out);
int kafka_server_port(const struct kafka_server *s);
void kafka_server_stop(struct kafka_server *s);

#endif
