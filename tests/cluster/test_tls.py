"""mTLS between nodes (RF_HA_TLS=1), as the seed's "HA Cluster" section sets it up: a CA, one
certificate per node naming its node id (CN and DNS SAN). The cluster elects a leader and
replicates over TLS 1.3; a node whose certificate names another id is refused by its peers."""
import os
import subprocess

from cluster import wait_for


def openssl(*args, cwd):
    subprocess.run(["openssl"] + list(args), cwd=cwd, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=60)


def make_certs(d, names):
    os.makedirs(d, exist_ok=True)
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
            "ca.crt", "-days", "2", "-subj", "/CN=ayder-test-ca", cwd=d)
    for cert_name, cn in names:
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", cert_name + ".key", "-out",
                cert_name + ".csr", "-subj", "/CN=" + cn, "-addext",
                "subjectAltName=DNS:" + cn, cwd=d)
        openssl("x509", "-req", "-in", cert_name + ".csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                "-CAcreateserial", "-out", cert_name + ".crt", "-days", "2", "-copy_extensions",
                "copy", cwd=d)


def tls_env(d, cert_name):
    return {"RF_HA_TLS": "1", "RF_HA_TLS_CA": os.path.join(d, "ca.crt"),
            "RF_HA_TLS_CERT": os.path.join(d, cert_name + ".crt"),
            "RF_HA_TLS_KEY": os.path.join(d, cert_name + ".key")}


def test_mtls_cluster(make_cluster, tmp_path):
    d = str(tmp_path / "certs")
    # n3's certificate wrongly names "n9": its peers must refuse it
    make_certs(d, [("n1", "n1"), ("n2", "n2"), ("n3", "n9")])
    c = make_cluster(3, start=False)
    for node in c.nodes:
        node.extra_env = tls_env(d, node.id)
    for node in c.nodes[:2]:
        node.start()
    c.nodes[2].start()
    # n2 may win the first election and then hand leadership to n1 (priority): wait for n1, so
    # the write below is not sent into the hand-over (a 307 that requests follows without the
    # token, since it changes host)
    li = wait_for(lambda: ("ok", 0) if c.find_leader([0, 1]) == 0 else None, 60,
                  "n1 to lead (known by n1 and n2)")[1]
    s = c.session
    r = s.post(c[li].url + "/broker/topics/tls/produce?partition=0", data="over-tls", timeout=10)
    assert r.status_code == 200 and r.json()["write_concern"] == "majority", r.text
    # replicated to the other good node over TLS
    f = 1 - li
    c.wait_applied(f, c.leader_commit(li))
    r = s.get(c[f].url + "/broker/consume/tls/g/0?offset=0", timeout=10)
    assert r.status_code == 200 and r.json()["messages"][0]["value"] == "over-tls", r.text
    # the node with the wrong certificate never gets connected
    st = c[li].status()
    bad = [p for p in st["peers"] if p["id"] == "n3"]
    assert bad and bad[0]["connected"] is False, st
    assert c[2].status()["applied_index"] < c.leader_commit(li)
    # with a proper certificate it joins and catches up
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "n3ok.key", "-out", "n3ok.csr",
            "-subj", "/CN=n3", "-addext", "subjectAltName=DNS:n3", cwd=d)
    openssl("x509", "-req", "-in", "n3ok.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "n3ok.crt", "-days", "2", "-copy_extensions", "copy", cwd=d)
    c.nodes[2].kill()
    c.nodes[2].extra_env = tls_env(d, "n3ok")
    c.restart(2)
    wait_for(lambda: c[2].status()["applied_index"] >= c.leader_commit(c.wait_leader()), 60,
             "n3 to catch up over TLS")
