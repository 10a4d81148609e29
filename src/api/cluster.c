/* cluster.c -- the cluster area of the API: GET /ha/status (JSON), GET /metrics_ha (Prometheus)
 * and POST /ha/membership (add / promote / remove / transfer; docs/HTTP_API.md "Membership").
 *
 * Status and metrics are read from core_ha_status() on the worker; a membership change is a
 * journaled configuration entry proposed through api_start_write like any other write, answered
 * once committed (a transfer once started).
 */
#include "api/api_internal.h"

#include "base/err.h"
#include "metrics/metrics.h"

#include <stdio.h>
#include <string.h>

static void h_ha_status(struct rctx *x, const struct route_match *m)
{
    (void)m;
    struct core_ha_status st;
    core_ha_status(x->api->core, &st);
    bool lead = strcmp(st.role, "leader") == 0;
    struct sbuf b;
    sbuf_init(&b, 0);
    struct jw w;
    jw_init(&w, &b);
    jw_obj_open(&w);
    jw_kbool(&w, "ok", true);
    jw_kbool(&w, "enabled", st.enabled);
    jw_kstr(&w, "node_id", st.node_id);
    jw_kstr(&w, "role", st.role);
    jw_ku64(&w, "term", st.term);
    if (st.enabled && st.leader_id) {
        jw_kstr(&w, "leader_id", st.leader_name);
        jw_kstr(&w, "leader_url", st.leader_url);
    } else if (!st.enabled) {
        jw_kstr(&w, "leader_id", st.node_id);
        jw_knull(&w, "leader_url");
    } else {
        jw_knull(&w, "leader_id");
        jw_knull(&w, "leader_url");
    }
    jw_ku64(&w, "commit_index", st.commit_index);
    jw_ku64(&w, "applied_index", st.applied_index);
    jw_ku64(&w, "last_index", st.last_index);
    jw_ku64(&w, "durable_index", st.durable_index);
    if (st.enabled)
        jw_ku64(&w, "restart_index", st.restart_index);
    jw_kstr(&w, "write_concern", st.write_concern);
    jw_key(&w, "voters");
    jw_arr_open(&w);
    if (!st.enabled)
        jw_str(&w, st.node_id);
    for (size_t i = 0; i < st.n_peers; i++)
        if (st.peers[i].voter)
            jw_str(&w, st.peers[i].name);
    jw_arr_close(&w);
    jw_key(&w, "learners");
    jw_arr_open(&w);
    for (size_t i = 0; i < st.n_peers; i++)
        if (!st.peers[i].voter)
            jw_str(&w, st.peers[i].name);
    jw_arr_close(&w);
    jw_key(&w, "peers");
    jw_arr_open(&w);
    for (size_t i = 0; i < st.n_peers; i++) {
        const struct core_peer_status *p = &st.peers[i];
        if (p->self)
            continue;
        jw_obj_open(&w);
        jw_kstr(&w, "id", p->name);
        jw_kstr(&w, "url", p->url);
        jw_kbool(&w, "connected", p->connected);
        if (lead) {
            jw_ku64(&w, "match_index", p->match_index);
            jw_ku64(&w, "lag", st.last_index > p->match_index ? st.last_index - p->match_index : 0);
        } else {
            jw_knull(&w, "match_index");
            jw_knull(&w, "lag");
        }
        jw_obj_close(&w);
    }
    jw_arr_close(&w);
    jw_ku64(&w, "elections_won", st.elections_won);
    jw_ku64(&w, "leader_changes", st.leader_changes);
    jw_ku64(&w, "snapshots_sent", st.snapshots_sent);
    jw_ku64(&w, "snapshots_installed", st.snapshots_installed);
    jw_ku64(&w, "snapshot_index", st.snapshot_index);
    jw_obj_close(&w);
    api_respond_json(x, 200, &b);
}

static void h_metrics_ha(struct rctx *x, const struct route_match *m)
{
    (void)m;
    struct api *a = x->api;
    struct sbuf b;
    sbuf_init(&b, 0);
    struct core_ha_status st;
    core_ha_status(a->core, &st);
    bool lead = strcmp(st.role, "leader") == 0;
    metrics_write_gauge(&b, "ayder_ha_enabled", "1 when clustering is enabled.", st.enabled);
    metrics_write_gauge(&b, "ayder_ha_role", "0 leader, 1 follower, 2 candidate, 3 pre-candidate (a single node is its own leader).",
                        lead ? 0 : strcmp(st.role, "follower") == 0 ? 1 : strcmp(st.role, "candidate") == 0 ? 2 : 3);
    metrics_write_gauge(&b, "ayder_ha_term", "Current Raft term.", (double)st.term);
    metrics_write_gauge(&b, "ayder_ha_leader_known", "1 when this node knows a leader.", st.leader_id != 0);
    if (st.enabled && st.leader_id) {
        /* The leader's identity as labels (how a client finds where to write). */
        char labels[512];
        snprintf(labels, sizeof labels, "leader_id=\"%s\",leader_url=\"%s\"", st.leader_name,
                 st.leader_url);
        metrics_write_family(&b, "ayder_ha_leader", "gauge", "Always 1; the labels name the leader.");
        metrics_write_sample(&b, "ayder_ha_leader", labels, 1);
    }
    metrics_write_gauge(&b, "ayder_ha_voters", "Voting members.", st.enabled ? (double)st.n_peers : 1);
    metrics_write_gauge(&b, "ayder_ha_commit_index", "Highest committed journal index.", (double)st.commit_index);
    metrics_write_gauge(&b, "ayder_ha_applied_index", "Highest applied journal index.", (double)st.applied_index);
    metrics_write_gauge(&b, "ayder_ha_last_index", "Highest journal index written.", (double)st.last_index);
    metrics_write_gauge(&b, "ayder_ha_durable_index", "Highest fsynced journal index on this node.", (double)st.durable_index);
    metrics_write_counter(&b, "ayder_ha_elections_won_total", "Elections this node won.", st.elections_won);
    metrics_write_counter(&b, "ayder_ha_leader_changes_total", "Changes of the known leader.", st.leader_changes);
    metrics_write_counter(&b, "ayder_ha_snapshots_sent_total", "Snapshots streamed to followers behind the log's base.", st.snapshots_sent);
    metrics_write_counter(&b, "ayder_ha_snapshots_installed_total", "Snapshots received from a leader and installed.", st.snapshots_installed);
    metrics_write_gauge(&b, "ayder_ha_snapshot_index", "Index of the newest local checkpoint.", (double)st.snapshot_index);
    if (st.enabled) {
        metrics_write_family(&b, "ayder_ha_peer_connected", "gauge", "1 when the Raft connection to the peer is up.");
        for (size_t i = 0; i < st.n_peers; i++) {
            char l[128];
            snprintf(l, sizeof l, "peer=\"%s\"", st.peers[i].name);
            metrics_write_sample(&b, "ayder_ha_peer_connected", l, st.peers[i].connected);
        }
        if (lead) {
            metrics_write_family(&b, "ayder_ha_peer_match_index", "gauge", "Highest index the peer has fsynced (leader's view).");
            for (size_t i = 0; i < st.n_peers; i++) {
                char l[128];
                snprintf(l, sizeof l, "peer=\"%s\"", st.peers[i].name);
                /* the leader's own entry: what it has fsynced itself */
                uint64_t mi = st.peers[i].self ? st.durable_index : st.peers[i].match_index;
                metrics_write_sample(&b, "ayder_ha_peer_match_index", l, (double)mi);
            }
            metrics_write_family(&b, "ayder_ha_peer_lag_entries", "gauge", "Entries the peer is behind the leader's log.");
            for (size_t i = 0; i < st.n_peers; i++) {
                char l[128];
                snprintf(l, sizeof l, "peer=\"%s\"", st.peers[i].name);
                uint64_t mi = st.peers[i].self ? st.durable_index : st.peers[i].match_index;
                metrics_write_sample(&b, "ayder_ha_peer_lag_entries", l,
                                     st.last_index > mi ? (double)(st.last_index - mi) : 0);
            }
        }
    }
    api_respond_text(x, &b);
}

static void answer_membership(struct rctx *x, int phase)
{
    (void)phase;
    struct sbuf b;
    struct jw w;
    if (!api_answer_open(x, &b, &w))
        return;
    jw_kstr(&w, "op", x->member_op == CORE_PROP_MEMBER_ADD       ? "add"
                      : x->member_op == CORE_PROP_MEMBER_PROMOTE ? "promote"
                      : x->member_op == CORE_PROP_TRANSFER       ? "transfer"
                                                                 : "remove");
    jw_kstr(&w, "id", x->member);
    if (x->member_op == CORE_PROP_TRANSFER)
        jw_kbool(&w, "started", true);
    else
        jw_ku64(&w, "config_index", x->prop.index);
    jw_obj_close(&w);
    api_respond_json(x, 200, &b);
}

/* POST /ha/membership {"op":"add","id":"n4","host":"127.0.0.4","raft_port":7004,
 * "http_port":8004,"priority":10} | {"op":"promote"|"remove"|"transfer","id":"n4"} */
static int enc_membership(struct rctx *x, json_t *j, struct sbuf *out)
{
    struct slice op, id, host = SLICE_LIT("-"); /* promote/remove: only the id matters */
    uint64_t rp = 1, hp = 2, pr = 0;
    int type = 0;
    bool ok = api_json_str(j, "op", &op) && api_json_str(j, "id", &id);
    if (ok && slice_eq_cstr(op, "add")) {
        type = CORE_PROP_MEMBER_ADD;
        ok = api_json_str(j, "host", &host) && api_json_u64(j, "raft_port", 65535, &rp) && rp > 0;
        if (ok && json_object_get(j, "http_port"))
            ok = api_json_u64(j, "http_port", 65535, &hp) && hp > 0;
        else if (ok)
            hp = rp + 1; /* as in RF_HA_NODES */
        if (ok && json_object_get(j, "priority"))
            ok = api_json_u64(j, "priority", 1000000, &pr);
    } else if (ok && slice_eq_cstr(op, "promote")) {
        type = CORE_PROP_MEMBER_PROMOTE;
    } else if (ok && slice_eq_cstr(op, "remove")) {
        type = CORE_PROP_MEMBER_REMOVE;
    } else if (ok && slice_eq_cstr(op, "transfer")) {
        type = CORE_PROP_TRANSFER;
    } else {
        ok = false;
    }
    struct ha_node n;
    memset(&n, 0, sizeof n);
    if (ok && (id.len == 0 || id.len >= HA_NAME_MAX || host.len == 0 || host.len >= HA_HOST_MAX ||
               hp > 65535 || hp == 0))
        ok = false;
    if (ok) {
        char item[HA_NAME_MAX + HA_HOST_MAX + 64], err[256];
        int len = snprintf(item, sizeof item, "%.*s:%.*s:%u:%u:%u", (int)id.len, (const char *)id.ptr,
                           (int)host.len, (const char *)host.ptr, (unsigned)rp, (unsigned)pr,
                           (unsigned)hp);
        /* the same validation as RF_HA_NODES */
        ok = len > 0 && (size_t)len < sizeof item &&
             ha_parse_node(item, (size_t)len, &n, err, sizeof err) == 0;
        if (!ok && len > 0 && (size_t)len < sizeof item) {
            api_respond_error(x, ERR_BAD_PARAM, err);
            return 0;
        }
    }
    if (!ok) {
        api_respond_error(x, ERR_MISSING_FIELDS,
                          "Required: op (\"add\", \"promote\", \"remove\" or \"transfer\") and id "
                          "(string); add also needs host (string) and raft_port (integer), "
                          "optionally http_port and priority");
        return 0;
    }
    core_member_payload(out, &n);
    snprintf(x->member, sizeof x->member, "%s", n.name);
    x->member_op = type;
    return type;
}

static void h_membership(struct rctx *x, const struct route_match *m)
{
    (void)m;
    api_json_write(x, enc_membership, answer_membership);
}

const struct api_route api_cluster_routes[] = {
    {"GET", "/metrics_ha", "metrics_ha", SCOPE_NONE, 0, h_metrics_ha},
    {"GET", "/ha/status", "ha_status", SCOPE_NONE, 0, h_ha_status},
    {"POST", "/ha/membership", "ha_membership", SCOPE_ADMIN, API_WRITE, h_membership},
    API_ROUTES_END,
};
