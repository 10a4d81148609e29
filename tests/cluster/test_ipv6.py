"""IPv6 between nodes and clients: three nodes on [::1] (distinct ports), RF_HA_NODES with
bracketed IPv6 literals. A leader is elected, a write to a follower is redirected to the leader's
[::1] URL, and the write is replicated. Skipped only if the namespace has no IPv6 loopback."""
import socket

import pytest
import requests

from cluster import AUTH, wait_for


def have_ipv6_loopback():
    try:
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        s.bind(("::1", 0))
        s.close()
        return True
    except OSError:
        return False


@pytest.mark.skipif(not have_ipv6_loopback(), reason="no IPv6 loopback in this namespace")
def test_ipv6_cluster(make_cluster):
    c = make_cluster(3, start=False)
    for n in c.nodes:
        n.host = "::1"
    for n in c.nodes:
        n.start()
    s = requests.Session()
    s.headers.update(AUTH)

    def leader():
        st = [s.get(n.url + "/ha/status", timeout=1).json() for n in c.nodes]
        urls = {x["leader_url"] for x in st}
        return urls.pop() if len(urls) == 1 and None not in urls else None
    lurl = wait_for(leader, 60, "one leader known by all (IPv6)")
    assert lurl.startswith("http://[::1]:"), lurl
    f = next(n for n in c.nodes if n.url != lurl)
    r = s.post(f.url + "/broker/topics/v6/produce?partition=0", data="over-v6",
               allow_redirects=False, timeout=5)
    assert r.status_code == 307 and r.headers["Location"].startswith(lurl), r.text
    r = s.post(r.headers["Location"], data="over-v6", timeout=10)
    assert r.status_code == 200 and r.json()["write_concern"] == "majority", r.text

    def replicated():
        r2 = s.get(f.url + "/broker/consume/v6/g/0?offset=0", timeout=2)
        return r2.status_code == 200 and r2.json()["count"] == 1 and \
            r2.json()["messages"][0]["value"] == "over-v6"
    wait_for(replicated, 30, "the write on the follower")
    s.close()
