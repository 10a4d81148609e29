/* ha_config.c -- RF_HA_* parsing (see ha_config.h).
 *
 * Invariants:
 *  1. A parsed config has 1..HA_MAX_NODES nodes with unique, non-empty names and unique ids,
 *     ports in 1..65535 and this node among them; anything else is ERR_INVALID with a sentence
 *     naming the offending item, so a typo stops the node at start instead of splitting a cluster.
 *  2. The cluster id depends only on RF_HA_CLUSTER (default "ayder"), not on the node list, so it
 *     stays the same when members are added or removed.
 */
#include "core/ha_config.h"

#include "base/err.h"
#include "raft/transport.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void ha_config_default(struct ha_config *c)
{
    memset(c, 0, sizeof *c);
    c->cluster_id = ha_cluster_id(NULL);
    c->write_concern = WC_MAJORITY;
    c->election_timeout_ms = 1000;
    c->heartbeat_ms = 100;
}

static int parse_u32(const char *s, size_t len, uint32_t max, uint32_t *out)
{
    if (len == 0 || len > 10)
        return ERR_INVALID;
    uint64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return ERR_INVALID;
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    if (v > max)
        return ERR_INVALID;
    *out = (uint32_t)v;
    return 0;
}

/* One "id:host:raft_port:priority[:http_port]" item (host may be [v6]). */
int ha_parse_node(const char *s, size_t len, struct ha_node *n, char *err, size_t err_len)
{
    const char *end = s + len;
    const char *p = memchr(s, ':', len);
    if (!p || p == s || (size_t)(p - s) >= HA_NAME_MAX) {
        snprintf(err, err_len, "RF_HA_NODES: item '%.*s': expected id:host:raft_port:priority",
                 (int)len, s);
        return ERR_INVALID;
    }
    memcpy(n->name, s, (size_t)(p - s));
    n->name[p - s] = 0;
    for (const char *q = n->name; *q; q++) {
        if (!(*q == '-' || *q == '_' || *q == '.' || (*q >= '0' && *q <= '9') ||
              (*q >= 'a' && *q <= 'z') || (*q >= 'A' && *q <= 'Z'))) {
            snprintf(err, err_len, "RF_HA_NODES: node id '%s' may use only letters, digits, "
                     "'-', '_' and '.'", n->name);
            return ERR_INVALID;
        }
    }
    const char *h = p + 1, *hend;
    if (h < end && *h == '[') {
        hend = memchr(h, ']', (size_t)(end - h));
        if (!hend || hend + 1 >= end || hend[1] != ':') {
            snprintf(err, err_len, "RF_HA_NODES: node %s: bad [IPv6] host", n->name);
            return ERR_INVALID;
        }
        h++;
        p = hend + 1;
    } else {
        hend = memchr(h, ':', (size_t)(end - h));
        p = hend;
    }
    if (!hend || hend == h || (size_t)(hend - h) >= HA_HOST_MAX) {
        snprintf(err, err_len, "RF_HA_NODES: node %s: missing host", n->name);
        return ERR_INVALID;
    }
    memcpy(n->host, h, (size_t)(hend - h));
    n->host[hend - h] = 0;
    /* p points at the ':' before raft_port: split the rest into at most 3 fields */
    const char *fields[4] = {0};
    size_t flen[4] = {0};
    int nf = 0;
    const char *f = p + 1;
    for (;;) {
        const char *c = memchr(f, ':', (size_t)(end - f));
        const char *fe = c ? c : end;
        fields[nf] = f;
        flen[nf] = (size_t)(fe - f);
        if (++nf == 4 || !c)
            break;
        f = c + 1;
    }
    uint32_t rp = 0, pr = 0, hp = 0;
    if (nf < 2 || nf > 3 || parse_u32(fields[0], flen[0], 65535, &rp) || rp == 0 ||
        parse_u32(fields[1], flen[1], 1000000, &pr) ||
        (nf == 3 && (parse_u32(fields[2], flen[2], 65535, &hp) || hp == 0))) {
        snprintf(err, err_len, "RF_HA_NODES: node %s: expected raft_port:priority[:http_port] "
                 "with ports in 1..65535", n->name);
        return ERR_INVALID;
    }
    if (nf == 2) {
        if (rp == 65535) {
            snprintf(err, err_len, "RF_HA_NODES: node %s: raft port 65535 leaves no HTTP port "
                     "(give one as the fifth field)", n->name);
            return ERR_INVALID;
        }
        hp = rp + 1;
    }
    n->raft_port = (uint16_t)rp;
    n->http_port = (uint16_t)hp;
    n->priority = pr;
    n->id = transport_node_id(n->name);
    return 0;
}

int ha_parse_nodes(struct ha_config *c, const char *s, char *err, size_t err_len)
{
    c->n_nodes = 0;
    if (!s || !*s) {
        snprintf(err, err_len, "RF_HA_NODES is empty");
        return ERR_INVALID;
    }
    const char *p = s;
    for (;;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        while (len && (*p == ' ' || *p == '\t')) {
            p++;
            len--;
        }
        while (len && (p[len - 1] == ' ' || p[len - 1] == '\t'))
            len--;
        if (c->n_nodes == HA_MAX_NODES) {
            snprintf(err, err_len, "RF_HA_NODES: at most %d nodes", HA_MAX_NODES);
            return ERR_INVALID;
        }
        struct ha_node *n = &c->nodes[c->n_nodes];
        memset(n, 0, sizeof *n);
        int rc = ha_parse_node(p, len, n, err, err_len);
        if (rc)
            return rc;
        for (size_t i = 0; i < c->n_nodes; i++) {
            if (strcmp(c->nodes[i].name, n->name) == 0 || c->nodes[i].id == n->id) {
                snprintf(err, err_len, "RF_HA_NODES: node id '%s' appears twice", n->name);
                return ERR_INVALID;
            }
        }
        c->n_nodes++;
        if (!comma)
            break;
        p = comma + 1;
    }
    return 0;
}

uint64_t ha_cluster_id(const char *name)
{
    uint64_t h = transport_node_id(name && *name ? name : "ayder");
    return h ? h : 1;
}

int ha_parse_write_concern(const char *s, size_t n_nodes, enum write_concern *out)
{
    if (!s)
        return ERR_INVALID;
    if (strcmp(s, "majority") == 0 || strcmp(s, "sync-majority") == 0)
        *out = WC_MAJORITY;
    else if (strcmp(s, "all") == 0 || strcmp(s, "sync-all") == 0)
        *out = WC_ALL;
    else if (strcmp(s, "async") == 0)
        *out = WC_ASYNC;
    else {
        uint32_t k;
        if (parse_u32(s, strlen(s), 1000, &k) || k == 0)
            return ERR_INVALID;
        if (k == 1)
            *out = WC_ONE;
        else if (n_nodes && k >= n_nodes)
            *out = WC_ALL;
        else
            *out = WC_MAJORITY;
    }
    return 0;
}

const char *ha_write_concern_name(enum write_concern wc)
{
    switch (wc) {
    case WC_ASYNC: return "async";
    case WC_ONE: return "1";
    case WC_ALL: return "all";
    default: return "majority";
    }
}

static int env_u32(const char *name, uint32_t min, uint32_t max, uint32_t *out, char *err,
                   size_t err_len)
{
    const char *v = getenv(name);
    if (!v || !*v)
        return 0;
    uint32_t x;
    if (parse_u32(v, strlen(v), max, &x) || x < min) {
        snprintf(err, err_len, "%s must be a number in %u..%u", name, min, max);
        return ERR_INVALID;
    }
    *out = x;
    return 0;
}

static int env_path(const char *name, char *out, char *err, size_t err_len)
{
    const char *v = getenv(name);
    if (!v || !*v) {
        snprintf(err, err_len, "RF_HA_TLS=1 needs %s", name);
        return ERR_INVALID;
    }
    if (strlen(v) >= HA_PATH_MAX) {
        snprintf(err, err_len, "%s is too long", name);
        return ERR_INVALID;
    }
    strcpy(out, v);
    return 0;
}

static bool env_flag(const char *name)
{
    const char *v = getenv(name);
    return v && (strcmp(v, "1") == 0 || strcmp(v, "true") == 0 || strcmp(v, "yes") == 0);
}

int ha_config_from_env(struct ha_config *c, char *err, size_t err_len)
{
    ha_config_default(c);
    const char *en = getenv("RF_HA_ENABLED");
    if (!en || !*en || strcmp(en, "0") == 0 || strcmp(en, "false") == 0)
        return 0;
    if (!env_flag("RF_HA_ENABLED")) {
        snprintf(err, err_len, "RF_HA_ENABLED must be 0 or 1");
        return ERR_INVALID;
    }
    c->enabled = true;
    int rc = ha_parse_nodes(c, getenv("RF_HA_NODES"), err, err_len);
    if (rc)
        return rc;
    const char *self = getenv("RF_HA_NODE_ID");
    if (!self || !*self) {
        snprintf(err, err_len, "RF_HA_ENABLED=1 needs RF_HA_NODE_ID");
        return ERR_INVALID;
    }
    size_t i = 0;
    while (i < c->n_nodes && strcmp(c->nodes[i].name, self) != 0)
        i++;
    if (i == c->n_nodes) {
        snprintf(err, err_len, "RF_HA_NODE_ID '%s' is not in RF_HA_NODES", self);
        return ERR_INVALID;
    }
    c->self = i;
    const char *wc = getenv("RF_HA_WRITE_CONCERN");
    if (wc && *wc && ha_parse_write_concern(wc, c->n_nodes, &c->write_concern)) {
        snprintf(err, err_len, "RF_HA_WRITE_CONCERN must be 1, majority, all, async or a "
                 "node count");
        return ERR_INVALID;
    }
    c->bootstrap_leader = env_flag("RF_HA_BOOTSTRAP_LEADER");
    c->join = env_flag("RF_HA_JOIN");
    const char *cn = getenv("RF_HA_CLUSTER");
    if (cn && strlen(cn) > 255) {
        snprintf(err, err_len, "RF_HA_CLUSTER is longer than 255 bytes");
        return ERR_INVALID;
    }
    c->cluster_id = ha_cluster_id(cn);
    const char *dw = getenv("RF_HA_DEDICATED_WORKER");
    if (dw && *dw && strcmp(dw, "0") != 0 && strcmp(dw, "1") != 0) {
        snprintf(err, err_len, "RF_HA_DEDICATED_WORKER must be 0 or 1");
        return ERR_INVALID;
    }
    if ((rc = env_u32("RF_HA_ELECTION_TIMEOUT_MS", 50, 600000, &c->election_timeout_ms, err,
                      err_len)) ||
        (rc = env_u32("RF_HA_HEARTBEAT_MS", 10, 60000, &c->heartbeat_ms, err, err_len)))
        return rc;
    if (c->heartbeat_ms * 2 > c->election_timeout_ms) {
        snprintf(err, err_len, "RF_HA_HEARTBEAT_MS must be at most half of "
                 "RF_HA_ELECTION_TIMEOUT_MS");
        return ERR_INVALID;
    }
    const char *sch = getenv("RF_HA_HTTP_SCHEME");
    if (sch && *sch) {
        if (strcmp(sch, "http") != 0 && strcmp(sch, "https") != 0) {
            snprintf(err, err_len, "RF_HA_HTTP_SCHEME must be http or https");
            return ERR_INVALID;
        }
        c->https = strcmp(sch, "https") == 0;
        c->https_set = true;
    }
    c->tls = env_flag("RF_HA_TLS");
    if (c->tls && ((rc = env_path("RF_HA_TLS_CA", c->tls_ca, err, err_len)) ||
                   (rc = env_path("RF_HA_TLS_CERT", c->tls_cert, err, err_len)) ||
                   (rc = env_path("RF_HA_TLS_KEY", c->tls_key, err, err_len))))
        return rc;
    return 0;
}

static void node_url(const struct ha_node *n, const char *scheme, char *out, size_t out_len)
{
    if (strchr(n->host, ':'))
        snprintf(out, out_len, "%s://[%s]:%u", scheme, n->host, n->http_port);
    else
        snprintf(out, out_len, "%s://%s:%u", scheme, n->host, n->http_port);
}

void ha_node_url(const struct ha_node *n, char *out, size_t out_len)
{
    node_url(n, "http", out, out_len);
}

void ha_config_node_url(const struct ha_config *c, const struct ha_node *n, char *out,
                        size_t out_len)
{
    node_url(n, c->https ? "https" : "http", out, out_len);
}

int ha_find(const struct ha_config *c, uint64_t id)
{
    for (size_t i = 0; i < c->n_nodes; i++)
        if (c->nodes[i].id == id)
            return (int)i;
    return -1;
}
