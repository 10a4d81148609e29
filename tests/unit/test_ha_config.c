/* test_ha_config.c -- RF_HA_NODES / write concern parsing. */
#include "core/ha_config.h"
#include "harness.h"

#include "base/err.h"

#include <stdlib.h>
#include <string.h>

TEST(ha_config_nodes_seed_example)
{
    struct ha_config c;
    ha_config_default(&c);
    char err[256] = "";
    REQUIRE(ha_parse_nodes(&c, "node1:10.0.0.1:7000:100,node2:10.0.0.2:8000:50,"
                               "node3:10.0.0.3:9000:25", err, sizeof err) == 0);
    REQUIRE(c.n_nodes == 3);
    CHECK(strcmp(c.nodes[1].name, "node2") == 0);
    CHECK(strcmp(c.nodes[1].host, "10.0.0.2") == 0);
    CHECK(c.nodes[1].raft_port == 8000 && c.nodes[1].http_port == 8001);
    CHECK(c.nodes[0].priority == 100 && c.nodes[2].priority == 25);
    CHECK(c.nodes[0].id != 0 && c.nodes[0].id != c.nodes[1].id);
    char url[128];
    ha_node_url(&c.nodes[2], url, sizeof url);
    CHECK(strcmp(url, "http://10.0.0.3:9001") == 0);
}

TEST(ha_config_nodes_http_port_ipv6_names)
{
    struct ha_config c, d;
    ha_config_default(&c);
    ha_config_default(&d);
    char err[256] = "";
    REQUIRE(ha_parse_nodes(&c, "a:[::1]:7001:10:8001, b:host-b.example:7002:5:9000", err,
                           sizeof err) == 0);
    CHECK(strcmp(c.nodes[0].host, "::1") == 0 && c.nodes[0].http_port == 8001);
    CHECK(strcmp(c.nodes[1].host, "host-b.example") == 0 && c.nodes[1].http_port == 9000);
    char url[128];
    ha_node_url(&c.nodes[0], url, sizeof url);
    CHECK(strcmp(url, "http://[::1]:8001") == 0);
    /* RF_HA_HTTP_SCHEME=https: the same addresses with https */
    c.https = true;
    ha_config_node_url(&c, &c.nodes[0], url, sizeof url);
    CHECK(strcmp(url, "https://[::1]:8001") == 0);
    ha_config_node_url(&c, &c.nodes[1], url, sizeof url);
    CHECK(strcmp(url, "https://host-b.example:9000") == 0);
    c.https = false;
    ha_config_node_url(&c, &c.nodes[1], url, sizeof url);
    CHECK(strcmp(url, "http://host-b.example:9000") == 0);
    /* the cluster id depends on the cluster name only, not on the (changing) member list */
    REQUIRE(ha_parse_nodes(&d, "b:host-b.example:7002:5:9000", err, sizeof err) == 0);
    CHECK(c.cluster_id == d.cluster_id);
    CHECK(ha_cluster_id(NULL) == ha_cluster_id("ayder"));
    CHECK(ha_cluster_id("prod") != ha_cluster_id("ayder"));
    CHECK(ha_find(&c, c.nodes[1].id) == 1 && ha_find(&c, 12345) == -1);
}

TEST(ha_config_nodes_rejects)
{
    static const char *bad[] = {
        "", "a", "a:h", "a:h:1", "a:h:0:1", "a:h:70000:1", "a:h:x:1", "a:h:1:1:0",
        "a:h:1:1:2:3", ":h:1:1", "a::1:1", "a:[::1:1:1", "a:h:1:1,a:h2:2:2", "a b:h:1:1",
        "a:h:65535:1", "a:h:1:-1",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct ha_config c;
        ha_config_default(&c);
        char err[256] = "";
        CHECK(ha_parse_nodes(&c, bad[i], err, sizeof err) == ERR_INVALID);
        CHECK(err[0] != 0);
    }
}

TEST(ha_config_write_concern)
{
    enum write_concern wc;
    CHECK(ha_parse_write_concern("1", 3, &wc) == 0 && wc == WC_ONE);
    CHECK(ha_parse_write_concern("2", 3, &wc) == 0 && wc == WC_MAJORITY);
    CHECK(ha_parse_write_concern("3", 3, &wc) == 0 && wc == WC_ALL);
    CHECK(ha_parse_write_concern("3", 5, &wc) == 0 && wc == WC_MAJORITY);
    CHECK(ha_parse_write_concern("majority", 5, &wc) == 0 && wc == WC_MAJORITY);
    CHECK(ha_parse_write_concern("all", 5, &wc) == 0 && wc == WC_ALL);
    CHECK(ha_parse_write_concern("async", 5, &wc) == 0 && wc == WC_ASYNC);
    CHECK(ha_parse_write_concern("0", 3, &wc) == ERR_INVALID);
    CHECK(ha_parse_write_concern("most", 3, &wc) == ERR_INVALID);
    CHECK(ha_parse_write_concern("", 3, &wc) == ERR_INVALID);
}

TEST(ha_config_env)
{
    struct ha_config c;
    char err[256] = "";
    unsetenv("RF_HA_ENABLED");
    REQUIRE(ha_config_from_env(&c, err, sizeof err) == 0);
    CHECK(!c.enabled);
    setenv("RF_HA_ENABLED", "1", 1);
    setenv("RF_HA_NODES", "n1:127.0.0.1:7001:100:8001,n2:127.0.0.2:7002:90:8002", 1);
    setenv("RF_HA_NODE_ID", "n3", 1);
    CHECK(ha_config_from_env(&c, err, sizeof err) == ERR_INVALID && strstr(err, "n3"));
    setenv("RF_HA_NODE_ID", "n2", 1);
    setenv("RF_HA_WRITE_CONCERN", "2", 1);
    REQUIRE(ha_config_from_env(&c, err, sizeof err) == 0);
    CHECK(c.enabled && c.self == 1 && c.write_concern == WC_ALL);
    setenv("RF_HA_TLS", "1", 1);
    CHECK(ha_config_from_env(&c, err, sizeof err) == ERR_INVALID && strstr(err, "RF_HA_TLS_CA"));
    unsetenv("RF_HA_TLS");
    setenv("RF_HA_HEARTBEAT_MS", "900", 1);
    CHECK(ha_config_from_env(&c, err, sizeof err) == ERR_INVALID);
    unsetenv("RF_HA_HEARTBEAT_MS");
    unsetenv("RF_HA_ENABLED");
    unsetenv("RF_HA_NODES");
    unsetenv("RF_HA_NODE_ID");
    unsetenv("RF_HA_WRITE_CONCERN");
}
