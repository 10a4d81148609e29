/* ha_config.h -- the cluster configuration from the environment (RF_HA_*).
 *
 * What this module owns: parsing and validating the seed's HA variables into a plain struct with
 * fixed-size arrays (no heap): the node list, this node's position in it, the default write
 * concern, timing and mTLS settings. Pure apart from ha_config_from_env, which reads getenv.
 *
 *   RF_HA_ENABLED=1            cluster mode (anything else: single node)
 *   RF_HA_NODE_ID=n1           this node's id (must appear in RF_HA_NODES)
 *   RF_HA_NODES=id:host:raft_port:priority[:http_port],...
 *                              host = name, IPv4 or [IPv6]; without http_port the HTTP port is
 *                              raft_port + 1 (the seed pairs 7000 with 7001)
 *   RF_HA_WRITE_CONCERN=1|majority|all|async|N   default majority (N: 1 = leader only,
 *                              N >= cluster size = all, otherwise majority)
 *   RF_HA_BOOTSTRAP_LEADER=1   this node campaigns at once on a fresh cluster
 *   RF_HA_JOIN=1               this node joins an existing cluster (added with POST
 *                              /ha/membership): it starts with an empty log and waits for the
 *                              leader instead of bootstrapping a configuration of its own
 *   RF_HA_CLUSTER=name         cluster name (default "ayder"): nodes of another cluster are
 *                              refused at the handshake
 *   RF_HA_DEDICATED_WORKER=0|1 accepted (the core thread is always dedicated)
 *   RF_HA_ELECTION_TIMEOUT_MS (default 1000), RF_HA_HEARTBEAT_MS (default 100)
 *   RF_HA_TLS=1 RF_HA_TLS_CA RF_HA_TLS_CERT RF_HA_TLS_KEY   mTLS between nodes
 *   RF_HA_HTTP_SCHEME=http|https  the scheme of every node's client URL (leader_url, the 307
 *                              Location): the http_port of RF_HA_NODES is the port clients are
 *                              sent to, so with https it is each node's HTTPS port. Unset: main
 *                              picks https when this node serves HTTPS on its own http_port.
 */
#ifndef AYDER_CORE_HA_CONFIG_H
#define AYDER_CORE_HA_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HA_MAX_NODES 16
#define HA_NAME_MAX 64
#define HA_HOST_MAX 256
#define HA_PATH_MAX 1024

/* Write concerns: how many copies must hold a write before it is answered. */
enum write_concern {
    WC_DEFAULT = 0, /* the node's default */
    WC_ASYNC,       /* after the leader's in-memory append ("durable":false) */
    WC_ONE,         /* after the leader's fsync */
    WC_MAJORITY,    /* after a majority fsynced it (committed) and the leader applied it */
    WC_ALL,         /* after every voter fsynced it (and the leader applied it) */
};

struct ha_node {
    char name[HA_NAME_MAX];
    uint64_t id;          /* transport_node_id(name) */
    char host[HA_HOST_MAX];
    uint16_t raft_port, http_port;
    uint32_t priority;
};

struct ha_config {
    bool enabled;
    size_t n_nodes;
    struct ha_node nodes[HA_MAX_NODES];
    size_t self;                 /* index of this node in nodes[] */
    uint64_t cluster_id;         /* hash of RF_HA_CLUSTER: every member must agree */
    bool join;                   /* RF_HA_JOIN: no bootstrap configuration */
    enum write_concern write_concern;
    bool bootstrap_leader;
    uint32_t election_timeout_ms, heartbeat_ms;
    bool tls;
    char tls_ca[HA_PATH_MAX], tls_cert[HA_PATH_MAX], tls_key[HA_PATH_MAX];
    bool https;                  /* client URLs are https:// (RF_HA_HTTP_SCHEME) */
    bool https_set;              /* RF_HA_HTTP_SCHEME was given */
};

/* Defaults (single node, concern majority, 1000/100 ms). */
void ha_config_default(struct ha_config *c);
/* Parse RF_HA_NODES into c->nodes. 0 or ERR_INVALID with err set. */
int ha_parse_nodes(struct ha_config *c, const char *s, char *err, size_t err_len);
/* "1", "majority", "all", "async" or a number (resolved against n_nodes). 0 or ERR_INVALID. */
int ha_parse_write_concern(const char *s, size_t n_nodes, enum write_concern *out);
const char *ha_write_concern_name(enum write_concern wc);
/* Read every RF_HA_* variable. With RF_HA_ENABLED unset or 0: c->enabled = false, 0. */
int ha_config_from_env(struct ha_config *c, char *err, size_t err_len);
/* "http://host:port" (IPv6 in brackets) of node i. */
void ha_node_url(const struct ha_node *n, char *out, size_t out_len);
/* The same with the cluster's client scheme (c->https): "https://host:port" or "http://...". */
void ha_config_node_url(const struct ha_config *c, const struct ha_node *n, char *out,
                        size_t out_len);
/* The cluster id for a cluster name. */
uint64_t ha_cluster_id(const char *name);
/* Parse one "id:host:raft_port:priority[:http_port]" item. */
int ha_parse_node(const char *s, size_t len, struct ha_node *n, char *err, size_t err_len);
/* Index of the node with this id, or -1. */
int ha_find(const struct ha_config *c, uint64_t id);

#endif
