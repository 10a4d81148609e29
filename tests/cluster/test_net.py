"""The partition helpers themselves (no ayder needed): tiny TCP servers on node addresses inside
the private namespace; a partition must block exactly the links it names and heal must restore
them. A blocked link shows as a connect timeout (packets silently dropped), not a refusal."""
import socket
import threading

import pytest

import net as net_mod

A, B, C = net_mod.node_addr(0), net_mod.node_addr(1), net_mod.node_addr(2)
PORT = 6500


class Echo:
    """A TCP server on addr:PORT that answers each connection with one line and closes."""

    def __init__(self, addr):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((addr, PORT))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.stop = threading.Event()
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        while not self.stop.is_set():
            try:
                c, peer = self.sock.accept()
            except OSError:
                continue
            with c:
                c.sendall(("from %s\n" % peer[0]).encode())

    def close(self):
        self.stop.set()
        self.t.join(5)
        self.sock.close()


@pytest.fixture
def servers(net):
    ss = [Echo(a) for a in (A, B, C)]
    yield ss
    for s in ss:
        s.close()


def reach(src, dst, timeout=0.3):
    """True if a TCP connection from src to dst:PORT completes and answers."""
    s = socket.socket()
    s.settimeout(timeout)
    try:
        s.bind((src, 0))
        s.connect((dst, PORT))
        line = s.makefile().readline()
        assert line.strip() == "from %s" % src, line   # the server saw our source address
        return True
    except (socket.timeout, ConnectionError, OSError):
        return False
    finally:
        s.close()


def matrix():
    addrs = (A, B, C)
    return {(a, b) for a in addrs for b in addrs if a != b and reach(a, b)}


ALL = {(a, b) for a in (A, B, C) for b in (A, B, C) if a != b}


def test_net_private_namespace(net):
    assert net_mod.in_private_netns()
    assert net.kind in ("iptables", "nft")
    with pytest.raises(ValueError):
        net.drop("10.0.0.1", A)    # never a rule naming a non-loopback address


def test_net_symmetric_partition_and_heal(net, servers):
    assert matrix() == ALL
    net.partition([[A], [B, C]])
    assert matrix() == {(B, C), (C, B)}
    assert reach(net_mod.CLIENT_ADDR, A) and reach(net_mod.CLIENT_ADDR, B)  # clients unaffected
    net.heal()
    assert matrix() == ALL


def test_net_one_way(net, servers):
    net.one_way([A], [B])
    # TCP needs both directions, so neither side can connect to the other; C is untouched.
    got = matrix()
    assert (A, B) not in got and (B, A) not in got
    assert {(A, C), (C, A), (B, C), (C, B)} <= got
    assert "-s 127.0.0.1/32 -d 127.0.0.2/32" in net.rules() or "127.0.0.2" in net.rules()
    # Datagrams show the one-way nature: B -> A still arrives, A -> B does not.
    ua, ub = socket.socket(socket.AF_INET, socket.SOCK_DGRAM), socket.socket(
        socket.AF_INET, socket.SOCK_DGRAM)
    try:
        ua.bind((A, PORT + 1))
        ub.bind((B, PORT + 1))
        ua.settimeout(1.0)
        ub.settimeout(0.3)
        ub.sendto(b"b2a", (A, PORT + 1))
        assert ua.recvfrom(16)[0] == b"b2a"
        ua.sendto(b"a2b", (B, PORT + 1))
        with pytest.raises(socket.timeout):
            ub.recvfrom(16)
    finally:
        ua.close()
        ub.close()
    net.heal()
    assert matrix() == ALL


def test_net_isolate_and_established_connection(net, servers):
    # An established connection stops carrying data once its link is cut.
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((B, PORT + 2))
    srv.listen(1)
    cli = socket.create_connection((B, PORT + 2), timeout=2, source_address=(A, 0))
    conn, _ = srv.accept()
    try:
        cli.sendall(b"x")
        assert conn.recv(1) == b"x"
        net.isolate(A, [A, B, C])
        assert matrix() == {(B, C), (C, B)}
        cli.sendall(b"y")
        conn.settimeout(0.5)
        with pytest.raises(socket.timeout):
            conn.recv(1)
        net.heal()
        conn.settimeout(10)
        assert conn.recv(1) == b"y"   # TCP retransmits once the link is back
    finally:
        cli.close()
        conn.close()
        srv.close()
    assert matrix() == ALL
