"""A minimal SSE / NDJSON subscription client over a raw socket, for the subscribe tests.

Raw sockets (not requests) so a test controls exactly when bytes are read, can shrink the
receive buffer (a slow reader), and can drop the connection at any point (a killed client)."""
import json
import socket
import struct
import time


class Stream:
    def __init__(self, port, path, headers=None, rcvbuf=None, timeout=10):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(0.2)  # short reads; callers keep their own deadlines
        self.sock.connect(("127.0.0.1", port))
        h = {"Host": "127.0.0.1", "Authorization": "Bearer dev"}
        h.update(headers or {})
        req = "GET %s HTTP/1.1\r\n%s\r\n" % (path, "".join("%s: %s\r\n" % kv for kv in h.items()))
        self.sock.sendall(req.encode())
        self.raw = b""        # undecoded bytes
        self.body = b""       # de-chunked body not yet parsed into events
        self.status = None
        self.headers = {}
        self.chunked = False
        self.eof = False
        self.done = False     # saw the last chunk
        self.comments = 0

    def _recv(self):
        try:
            d = self.sock.recv(65536)
        except socket.timeout:
            return False
        if not d:
            self.eof = True
            return False
        self.raw += d
        return True

    def _head(self):
        while b"\r\n\r\n" not in self.raw:
            if not self._recv():
                raise AssertionError("no response head; got %r" % self.raw[:200])
        head, self.raw = self.raw.split(b"\r\n\r\n", 1)
        lines = head.decode().split("\r\n")
        self.status = int(lines[0].split()[1])
        for l in lines[1:]:
            k, v = l.split(":", 1)
            self.headers[k.strip().lower()] = v.strip()
        self.chunked = self.headers.get("transfer-encoding") == "chunked"

    def head(self):
        if self.status is None:
            self._head()
            self._dechunk()
        return self.status

    def _dechunk(self):
        if not self.chunked:
            self.body += self.raw
            self.raw = b""
            return
        while True:
            i = self.raw.find(b"\r\n")
            if i < 0:
                return
            size = int(self.raw[:i], 16)
            if len(self.raw) < i + 2 + size + 2:
                return
            assert self.raw[i + 2 + size:i + 4 + size] == b"\r\n", "bad chunk framing"
            if size == 0:
                self.done = True
                self.raw = self.raw[i + 4:]
                return
            self.body += self.raw[i + 2:i + 2 + size]
            self.raw = self.raw[i + 4 + size:]

    def read_more(self):
        """Read once from the socket; False at EOF/timeout/end of body."""
        if self.status is None:
            self._head()
            self._dechunk()
            return True
        if self.done:
            return False
        ok = self._recv()
        self._dechunk()
        return ok

    def wait_readable(self, seconds):
        self.sock.settimeout(seconds)

    def close(self, reset=False):
        if reset:  # RST, like a killed process
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()


class SSE(Stream):
    """Events as dicts {"id", "event", "data"} (data parsed as JSON)."""

    def next_event(self, deadline_s=10):
        end = time.monotonic() + deadline_s
        while True:
            ev = self._parse_one()
            if ev is not None:
                return ev
            if time.monotonic() > end or not self.read_more():
                if self.done or self.eof or time.monotonic() > end:
                    ev = self._parse_one()
                    return ev

    def _parse_one(self):
        while True:
            i = self.body.find(b"\n\n")
            if i < 0:
                return None
            block, self.body = self.body[:i].decode(), self.body[i + 2:]
            ev = {}
            data = []
            for line in block.split("\n"):
                if line.startswith(":"):
                    self.comments += 1
                    continue
                k, _, v = line.partition(":")
                v = v[1:] if v.startswith(" ") else v
                if k == "data":
                    data.append(v)
                elif k in ("id", "event", "retry"):
                    ev[k] = v
            if data:
                ev["data"] = json.loads("\n".join(data))
            if "event" in ev:
                return ev


class NDJSON(Stream):
    def next_event(self, deadline_s=10):
        end = time.monotonic() + deadline_s
        while True:
            i = self.body.find(b"\n")
            if i >= 0:
                line, self.body = self.body[:i], self.body[i + 1:]
                return json.loads(line)
            if time.monotonic() > end or not self.read_more():
                if self.done or self.eof or time.monotonic() > end:
                    return None
