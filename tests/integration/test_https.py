"""HTTPS for clients (issue 15): curl with the CA, client certificates, SIGHUP reload with a
connection kept open, https redirects to the leader, and TLS garbage / half-open handshakes that
must not stall other clients. Certificates are made here with the openssl command line."""
import base64
import json
import os
import signal
import socket
import ssl
import subprocess
import threading
import time

import pytest
import requests

from conftest import AUTH, BINARY, Node, free_port


# ----------------------------------------------------------------------------------------------
# Certificates

def openssl(*args, cwd):
    subprocess.run(["openssl"] + list(args), cwd=cwd, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)


def make_ca(d, name):
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", name + ".key", "-out", name + ".pem", "-days", "2", "-subj", "/CN=" + name,
            cwd=d)


def make_cert(d, ca, name, cn, server=True):
    ext = os.path.join(d, name + ".ext")
    with open(ext, "w") as f:
        if server:
            f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
        else:
            f.write("extendedKeyUsage=clientAuth\n")
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout",
            name + ".key", "-out", name + ".csr", "-subj", "/CN=" + cn, cwd=d)
    openssl("x509", "-req", "-in", name + ".csr", "-CA", ca + ".pem", "-CAkey", ca + ".key",
            "-CAcreateserial", "-out", name + ".pem", "-days", "2", "-extfile", ext, cwd=d)


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("certs"))
    make_ca(d, "ca")
    make_ca(d, "rogue")
    make_cert(d, "ca", "server", "server-one")
    make_cert(d, "ca", "server2", "server-two")
    make_cert(d, "ca", "client", "client-one", server=False)
    make_cert(d, "rogue", "rclient", "rogue-client", server=False)
    return lambda name: os.path.join(d, name)


class HttpsNode(Node):
    """An ayder process whose client port speaks HTTPS (tls_port; plain HTTP on .port unless
    https_only). Readiness is checked over HTTPS with the test CA."""

    def __init__(self, data_dir, certs, https_only=False, client_ca=False, args=(), env=None,
                 port=None, tls_port=None):
        self.certs = certs
        self.tls_port = tls_port or free_port()
        a = ["--tls-cert", certs("server.pem"), "--tls-key", certs("server.key")]
        if client_ca:
            a += ["--tls-client-ca", certs("ca.pem")]
        if https_only:
            port = self.tls_port
        else:
            a += ["--https-port", str(self.tls_port)]
        super().__init__(data_dir, port=port, args=a + list(args), env=env)
        self.client_ca = client_ca

    @property
    def surl(self):
        return "https://127.0.0.1:%d" % self.tls_port

    def sget(self, path, **kw):
        kw.setdefault("headers", AUTH)
        kw.setdefault("timeout", 10)
        kw.setdefault("verify", self.certs("ca.pem"))
        if self.client_ca:
            kw.setdefault("cert", (self.certs("client.pem"), self.certs("client.key")))
        return requests.get(self.surl + path, **kw)

    def spost(self, path, **kw):
        kw.setdefault("headers", AUTH)
        kw.setdefault("timeout", 10)
        kw.setdefault("verify", self.certs("ca.pem"))
        if self.client_ca:
            kw.setdefault("cert", (self.certs("client.pem"), self.certs("client.key")))
        return requests.post(self.surl + path, **kw)

    def wait_ready(self, timeout=30):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("ayder exited with %s; log:\n%s" % (self.proc.returncode,
                                                                      self.log()))
            try:
                r = self.sget("/ready", timeout=1)
                if r.status_code == 200:
                    return
                last = r.status_code
            except requests.RequestException as e:
                last = e
            time.sleep(0.05)
        raise RuntimeError("ayder not ready over HTTPS after %ss (%s); log:\n%s"
                           % (timeout, last, self.log()))


@pytest.fixture
def https_nodes(data_dir, certs):
    nodes = []

    def make(**kw):
        n = HttpsNode(kw.pop("data", None) or data_dir + str(len(nodes)), certs, **kw)
        nodes.append(n)
        return n

    yield make
    for n in nodes:
        n.kill()


def client_context(certs, client=None, tls_max=None):
    ctx = ssl.create_default_context(cafile=certs("ca.pem"))
    if client:
        ctx.load_cert_chain(certs(client + ".pem"), certs(client + ".key"))
    if tls_max:
        ctx.maximum_version = tls_max
    return ctx


def tls_connect(port, ctx, timeout=10):
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    return ctx.wrap_socket(raw, server_hostname="127.0.0.1")


def read_response(s):
    """One HTTP/1.1 response with Content-Length from socket s: (status, headers, body)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError("closed before a response head: %r" % buf)
        buf += chunk
    head, rest = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for ln in lines[1:]:
        k, v = ln.split(":", 1)
        headers[k.strip().lower()] = v.strip()
    n = int(headers.get("content-length", "0"))
    while len(rest) < n:
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError("closed inside a body")
        rest += chunk
    return status, headers, rest[:n], rest[n:]


def get_on(s, path):
    s.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer dev\r\n\r\n" % path.encode())
    status, headers, body, extra = read_response(s)
    assert extra == b""
    return status, headers, body


def curl(*args):
    return subprocess.run(["curl", "-sS", "--max-time", "10"] + list(args),
                          capture_output=True, text=True)


# ----------------------------------------------------------------------------------------------
# Basics: curl with the CA, both ports, HTTPS only, limits

def test_curl_with_ca_http_and_https_ports(https_nodes, certs):
    n = https_nodes().start()
    r = curl("--cacert", certs("ca.pem"), n.surl + "/health")
    assert r.returncode == 0 and '"ok":true' in r.stdout, r.stderr
    # produce and consume over HTTPS with curl
    r = curl("--cacert", certs("ca.pem"), "-H", "Authorization: Bearer dev", "--data-binary",
             "hello-tls", n.surl + "/broker/topics/tls/produce?partition=0")
    assert r.returncode == 0 and '"offset":0' in r.stdout, (r.stdout, r.stderr)
    r = curl("--cacert", certs("ca.pem"), "-H", "Authorization: Bearer dev",
             n.surl + "/broker/consume/tls/g/0?offset=0")
    assert r.returncode == 0 and "hello-tls" in r.stdout, (r.stdout, r.stderr)
    # plain HTTP still on --port, same data
    assert "hello-tls" in n.get("/broker/consume/tls/g/0?offset=0").text
    # without the CA the certificate is not trusted
    r = curl(n.surl + "/health")
    assert r.returncode != 0
    # TLS 1.2 and 1.3 both work; ALPN picks http/1.1
    for ver in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        s = tls_connect(n.tls_port, client_context(certs, tls_max=ver))
        assert s.version() == {ssl.TLSVersion.TLSv1_2: "TLSv1.2",
                               ssl.TLSVersion.TLSv1_3: "TLSv1.3"}[ver]
        assert get_on(s, "/health")[0] == 200
        s.close()
    ctx = client_context(certs)
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    s = tls_connect(n.tls_port, ctx)
    assert s.selected_alpn_protocol() == "http/1.1"
    s.close()
    assert n.stop() == 0


def test_tls_versions_below_1_2_refused(https_nodes, certs):
    n = https_nodes().start()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(certs("ca.pem"))
    try:
        ctx.minimum_version = ssl.TLSVersion.TLSv1
        ctx.maximum_version = ssl.TLSVersion.TLSv1_1
        ctx.set_ciphers("ALL:@SECLEVEL=0")
    except (ValueError, ssl.SSLError):
        pytest.skip("this Python/OpenSSL cannot even offer TLS 1.1")
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        tls_connect(n.tls_port, ctx)
    # the server is fine afterwards
    assert n.sget("/health").status_code == 200
    assert n.stop() == 0


def test_https_only_and_pipelining_and_limits(https_nodes, certs):
    n = https_nodes(https_only=True, args=["--max-body-bytes", "4096",
                                           "--header-timeout-ms", "500"]).start()
    assert n.port == n.tls_port
    # plain HTTP on the same port gets no HTTP answer
    with socket.create_connection(("127.0.0.1", n.tls_port), timeout=10) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        try:
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        except (ConnectionResetError, socket.timeout):
            pass
        assert not data.startswith(b"HTTP/"), data
    # pipelining over TLS: three requests in one write, three answers in order
    s = tls_connect(n.tls_port, client_context(certs))
    req = b"POST /broker/topics/p/produce?partition=0 HTTP/1.1\r\nHost: x\r\n" \
          b"Authorization: Bearer dev\r\nContent-Length: 2\r\n\r\nv%d"
    s.sendall(b"".join(req % i for i in range(3)))
    buf = b""
    for i in range(3):
        s2 = _Buffered(s, buf)
        status, headers, body, buf = read_response(s2)
        assert status == 200 and b'"offset":%d' % i in body, body
    # the same limits as HTTP: a body over --max-body-bytes is 413 (sent encrypted), then close
    s.sendall(b"POST /broker/topics/p/produce HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer dev\r\n"
              b"Content-Length: 5000\r\n\r\n")
    status, headers, body, _ = read_response(s)
    assert status == 413 and b"payload_too_large" in body
    s.close()
    # and the same header timeout: a request head that stops half-way gets 408 over TLS
    s = tls_connect(n.tls_port, client_context(certs))
    s.sendall(b"GET /health HTTP/1.1\r\nHost:")
    status, headers, body, _ = read_response(s)
    assert status == 408
    s.close()
    assert n.stop() == 0


class _Buffered:
    """recv() that first returns bytes already read past the previous response."""

    def __init__(self, s, buf):
        self.s, self.buf = s, buf

    def recv(self, n):
        if self.buf:
            b, self.buf = self.buf, b""
            return b
        return self.s.recv(n)


# ----------------------------------------------------------------------------------------------
# Client certificates

def test_client_certificate_required(https_nodes, certs):
    n = https_nodes(client_ca=True).start()
    ca = certs("ca.pem")
    # with a certificate from the CA: served; bearer tokens still apply on top
    r = curl("--cacert", ca, "--cert", certs("client.pem"), "--key", certs("client.key"),
             "-H", "Authorization: Bearer dev", n.surl + "/broker/topics")
    assert r.returncode == 0 and '"ok":false' not in r.stdout, (r.stdout, r.stderr)
    r = curl("--cacert", ca, "--cert", certs("client.pem"), "--key", certs("client.key"),
             "-o", "/dev/null", "-w", "%{http_code}", n.surl + "/broker/topics")
    assert r.stdout == "401", (r.stdout, r.stderr)
    # no certificate: refused at the handshake (TLS 1.3 reports it on the first read)
    r = curl("--cacert", ca, n.surl + "/health")
    assert r.returncode != 0 and "200" not in r.stdout, (r.stdout, r.stderr)
    # a certificate from another CA: refused
    r = curl("--cacert", ca, "--cert", certs("rclient.pem"), "--key", certs("rclient.key"),
             n.surl + "/health")
    assert r.returncode != 0, (r.stdout, r.stderr)
    # the same with Python: the request never gets an HTTP answer
    for client in (None, "rclient"):
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            s = tls_connect(n.tls_port, client_context(certs, client))
            get_on(s, "/health")
    s = tls_connect(n.tls_port, client_context(certs, "client"))
    assert get_on(s, "/health")[0] == 200
    s.close()
    # plain HTTP on --port is not affected by the client CA (it is the operator's choice to
    # offer it; HTTPS-only deployments do not)
    assert n.get("/health").status_code == 200
    assert n.stop() == 0


# ----------------------------------------------------------------------------------------------
# SIGHUP reload

def wait_log(n, text, count, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(n.log_path, "rb") as f:
            if f.read().decode("utf-8", "replace").count(text) >= count:
                return
        time.sleep(0.05)
    raise AssertionError("no %r (x%d) in the log:\n%s" % (text, count, n.log()))


def test_sighup_reload_keeps_open_connections(https_nodes, certs, tmp_path):
    # the node reads its certificate from files we replace
    cert, key = str(tmp_path / "live.pem"), str(tmp_path / "live.key")
    for src, dst in (("server.pem", cert), ("server.key", key)):
        with open(certs(src), "rb") as f, open(dst, "wb") as g:
            g.write(f.read())
    n = https_nodes(args=["--tls-cert", cert, "--tls-key", key]).start()
    ctx = client_context(certs)
    old = tls_connect(n.tls_port, ctx)
    assert get_on(old, "/health")[0] == 200
    first = old.getpeercert()["subject"]
    assert dict(x[0] for x in first)["commonName"] == "server-one"

    for src, dst in (("server2.pem", cert), ("server2.key", key)):
        with open(certs(src), "rb") as f, open(dst + ".tmp", "wb") as g:
            g.write(f.read())
        os.rename(dst + ".tmp", dst)
    n.proc.send_signal(signal.SIGHUP)
    wait_log(n, "HTTPS certificate reloaded", 1)
    # the open connection keeps working, on its old session
    for _ in range(3):
        assert get_on(old, "/health")[0] == 200
    assert old.getpeercert()["subject"] == first
    # a new connection gets the new certificate
    new = tls_connect(n.tls_port, ctx)
    assert dict(x[0] for x in new.getpeercert()["subject"])["commonName"] == "server-two"
    assert get_on(new, "/health")[0] == 200

    # a reload that fails (a broken key) keeps the current certificate and says why
    with open(key, "w") as f:
        f.write("not a key\n")
    n.proc.send_signal(signal.SIGHUP)
    wait_log(n, "reload failed", 1)
    third = tls_connect(n.tls_port, ctx)
    assert dict(x[0] for x in third.getpeercert()["subject"])["commonName"] == "server-two"
    assert get_on(third, "/health")[0] == 200
    assert get_on(old, "/health")[0] == 200
    for s in (old, new, third):
        s.close()
    assert n.proc.poll() is None
    assert n.stop() == 0


def test_sighup_without_tls_is_harmless(make_node):
    n = make_node().start()
    n.proc.send_signal(signal.SIGHUP)
    wait_log(n, "nothing to reload", 1)
    assert n.get("/health").status_code == 200
    assert n.stop() == 0


# ----------------------------------------------------------------------------------------------
# Garbage and half-open handshakes

def test_garbage_and_half_open_handshakes_do_not_block(https_nodes, certs):
    # one worker: every connection shares the loop the good client needs
    n = https_nodes(https_only=True, args=["--workers", "1",
                                           "--header-timeout-ms", "60000"]).start()
    bad = []
    try:
        for i in range(100):
            s = socket.create_connection(("127.0.0.1", n.tls_port), timeout=10)
            if i % 4 == 1:
                s.sendall(os.urandom(300))                      # garbage
            elif i % 4 == 2:
                s.sendall(b"\x16\x03\x01\x40\x00" + b"\x01" * 50)  # a record that never ends
            elif i % 4 == 3:
                s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # plain HTTP on the TLS port
            bad.append(s)                                       # i % 4 == 0: says nothing
        # a normal HTTPS client keeps getting answers, on new and on kept-alive connections
        ctx = client_context(certs)
        keep = tls_connect(n.tls_port, ctx, timeout=5)
        for i in range(20):
            assert get_on(keep, "/health")[0] == 200
            s = tls_connect(n.tls_port, ctx, timeout=5)
            assert get_on(s, "/ready")[0] == 200
            s.close()
        keep.close()
        # garbage and plain HTTP were refused and closed by the server
        for i, s in enumerate(bad):
            if i % 4 in (1, 3):
                s.settimeout(5)
                try:
                    data = s.recv(4096)
                    while data and not data.startswith(b"HTTP/"):
                        more = s.recv(4096)
                        if not more:
                            data = b""
                            break
                        data = more
                except ConnectionResetError:
                    data = b""
                assert data == b"", data
    finally:
        for s in bad:
            s.close()
    assert n.sget("/health").status_code == 200
    # the failures are counted (garbage and plain HTTP: 50 connections)
    m = n.sget("/metrics").text
    vals = {ln.split()[0]: float(ln.split()[1]) for ln in m.splitlines()
            if ln.startswith("ayder_https_")}
    assert vals["ayder_https_handshake_failures_total"] >= 50, vals
    assert vals["ayder_https_handshakes_total"] >= 21, vals
    assert vals["ayder_https_certificate_reloads_total"] == 0, vals
    assert n.stop() == 0


def test_half_open_handshake_dropped_at_header_timeout(https_nodes, certs):
    n = https_nodes(https_only=True, args=["--header-timeout-ms", "300"]).start()
    silent = socket.create_connection(("127.0.0.1", n.tls_port), timeout=10)
    partial = socket.create_connection(("127.0.0.1", n.tls_port), timeout=10)
    partial.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # a ClientHello's start
    # both are closed by the server (bounded by the header timeout, swept every 250 ms)
    for s in (silent, partial):
        try:
            assert s.recv(4096) == b""
        except ConnectionResetError:
            pass
        s.close()
    # a completed handshake with no request is held to the same header deadline as a plain
    # HTTP connection that sends nothing: 408, then close
    s = tls_connect(n.tls_port, client_context(certs))
    s.settimeout(10)
    status, headers, body, _ = read_response(s)
    assert status == 408 and headers.get("connection") == "close"
    s.close()
    assert n.sget("/health").status_code == 200
    assert n.stop() == 0


def test_handshake_flood_other_clients_served(https_nodes, certs):
    """Many clients doing full handshakes at once on one worker; a kept-alive client is served
    throughout (no timing threshold: every request must complete within its socket timeout)."""
    n = https_nodes(https_only=True, args=["--workers", "1"]).start()
    stop = threading.Event()
    done = [0]

    def flood():
        ctx = client_context(certs)
        while not stop.is_set():
            try:
                s = tls_connect(n.tls_port, ctx, timeout=10)
                s.close()
                done[0] += 1
            except OSError:
                pass

    threads = [threading.Thread(target=flood) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        keep = tls_connect(n.tls_port, client_context(certs), timeout=10)
        for _ in range(50):
            assert get_on(keep, "/health")[0] == 200
        keep.close()
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert done[0] > 0
    assert n.stop() == 0


# ----------------------------------------------------------------------------------------------
# A cluster: a follower's redirect names the leader's https URL

def test_follower_redirect_names_https(tmp_path, certs):
    ports = [free_port() for _ in range(2)]
    raft = [free_port() for _ in range(2)]
    spec = ",".join("n%d:127.0.0.1:%d:%d:%d" % (i + 1, raft[i], 100 - i, ports[i])
                    for i in range(2))
    nodes = []
    try:
        for i in range(2):
            env = {"RF_HA_ENABLED": "1", "RF_HA_NODE_ID": "n%d" % (i + 1), "RF_HA_NODES": spec,
                   "RF_HA_ELECTION_TIMEOUT_MS": "600", "RF_HA_HEARTBEAT_MS": "100"}
            if i == 0:
                env["RF_HA_BOOTSTRAP_LEADER"] = "1"
            # HTTPS only: RF_HA_NODES names each node's HTTPS port, so redirects say https
            nd = HttpsNode(str(tmp_path / ("n%d" % (i + 1))), certs, https_only=True, env=env,
                           tls_port=ports[i])
            nodes.append(nd)
            nd.start(wait=False)
        for nd in nodes:
            nd.wait_ready()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                sts = [nd.sget("/ha/status", timeout=2).json() for nd in nodes]
                if all(st.get("leader_id") == "n1" for st in sts):
                    break
            except (requests.RequestException, ValueError):
                pass
            time.sleep(0.05)
        else:
            raise AssertionError("n1 never led: %s" % [nd.log() for nd in nodes])
        leader, follower = nodes
        assert sts[1]["leader_url"] == "https://127.0.0.1:%d" % ports[0]
        r = follower.spost("/broker/topics/red/produce?partition=0", data=b"x",
                           allow_redirects=False)
        assert r.status_code == 307, r.text
        loc = r.headers["Location"]
        assert loc == "https://127.0.0.1:%d/broker/topics/red/produce?partition=0" % ports[0]
        assert r.json()["leader_url"] == "https://127.0.0.1:%d" % ports[0]
        # following it with curl (trusting the CA) lands the write on the leader
        res = curl("--cacert", certs("ca.pem"), "--location-trusted", "-H",
                   "Authorization: Bearer dev", "--data-binary", "y", follower.surl +
                   "/broker/topics/red/produce?partition=0")
        assert res.returncode == 0 and '"ok":true' in res.stdout, (res.stdout, res.stderr)
        for nd in nodes:
            assert nd.stop() == 0
    finally:
        for nd in nodes:
            nd.kill()


def test_https_flags_validated(tmp_path, certs):
    # a key without a certificate, a missing file: refused at start with a reason
    for args, text in ((["--tls-key", certs("server.key")], "both --tls-cert and --tls-key"),
                       (["--tls-cert", certs("nope.pem"), "--tls-key", certs("server.key")],
                        "nope.pem"),
                       (["--tls-cert", certs("server.pem"), "--tls-key", certs("client.key")],
                        "mismatch")):
        p = subprocess.run([BINARY, "--port", str(free_port()), "--bind", "127.0.0.1",
                            "--data-dir", str(tmp_path / "d")] + args,
                           capture_output=True, text=True, timeout=30)
        assert p.returncode == 2, p.stderr
        assert text in p.stderr, p.stderr


# ----------------------------------------------------------------------------------------------
# Streaming responses go through the same TLS write path

def test_ndjson_subscription_over_https(https_nodes, certs):
    n = https_nodes(https_only=True).start()
    for i in range(3):
        assert n.spost("/broker/topics/sub/produce?partition=0", data=b"m%d" % i).status_code == 200
    r = n.sget("/broker/subscribe/sub/g?stream=ndjson&from=earliest&limit=3", stream=True)
    assert r.status_code == 200
    assert r.headers.get("Transfer-Encoding") == "chunked"
    events = [json.loads(ln) for ln in r.iter_lines() if ln]
    r.close()
    recs = [e for e in events if e["type"] == "record"]
    assert [base64.b64decode(e["value_b64"]) for e in recs] == [b"m0", b"m1", b"m2"], events
    assert events[-1]["type"] == "end"
    assert n.stop() == 0
