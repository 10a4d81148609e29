"""A real browser subscribes with EventSource (docs/HTTP_API.md "Subscribe").

Headless Chromium (Debian `chromium`, tools/install-deps test) loads a page this test serves on
its own port; the page opens an EventSource against the server (cross-origin: the server's
`Access-Control-Allow-Origin: *`; the token as ?access_token=, since EventSource sends no
headers) and reports every event back to the test with fetch(). No DevTools driver is needed:
the page talks to the test. The test produces records after the page subscribed, then kills
the server (SIGKILL: the TCP connection dies without a goodbye) and restarts it on the same
port; the browser reconnects by itself, sending Last-Event-ID, and must receive exactly the
records it had not seen: no gap, no repeat."""
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from conftest import AUTH

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

PAGE = """<!doctype html><html><body><pre id=log></pre><script>
const seq = {n: 0};
function report(o) {
  o.seq = seq.n++;
  fetch("/report", {method: "POST", body: JSON.stringify(o)});
}
const es = new EventSource(%(url)s);
es.onopen = () => report({kind: "connected"});
es.onerror = () => report({kind: "error", state: es.readyState});
es.addEventListener("subscribed", e => report({kind: "subscribed", id: e.lastEventId}));
es.addEventListener("record", e => {
  const d = JSON.parse(e.data);
  report({kind: "record", id: e.lastEventId, partition: d.partition, offset: d.offset,
          value: d.value});
});
es.addEventListener("end", e => report({kind: "end", id: e.lastEventId, data: JSON.parse(e.data)}));
</script></body></html>"""


class Reports:
    def __init__(self):
        self.items = []
        self.cv = threading.Condition()

    def add(self, o):
        with self.cv:
            self.items.append(o)
            self.cv.notify_all()

    def wait(self, pred, timeout=30):
        end = time.monotonic() + timeout
        with self.cv:
            while not pred(self.items):
                left = end - time.monotonic()
                assert left > 0, "timed out; reports so far: %r" % self.items[-20:]
                self.cv.wait(left)

    def kinds(self, kind):
        with self.cv:
            return [o for o in self.items if o["kind"] == kind]


def serve_page(page, reports):
    class H(BaseHTTPRequestHandler):
        def do_GET(self):
            body = page.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self):
            n = int(self.headers.get("Content-Length", 0))
            reports.add(json.loads(self.rfile.read(n)))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *a):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (tools/install-deps test)")
def test_eventsource_receives_and_resumes_after_forced_disconnect(make_node, data_dir):
    n = make_node().start()
    r = n.post("/broker/topics", json={"name": "web", "partitions": 2})
    assert r.status_code == 200, r.text
    # from=earliest: a reconnect that ignored Last-Event-ID would repeat every record
    url = "%s/broker/subscribe/web/g?from=earliest&retry_ms=200&access_token=dev" % n.url
    reports = Reports()
    srv = serve_page(PAGE % {"url": json.dumps(url)}, reports)
    profile = tempfile.mkdtemp(prefix="ayder-chromium-")
    browser = subprocess.Popen(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--disable-dev-shm-usage", "--user-data-dir=" + profile,
         "http://127.0.0.1:%d/" % srv.server_address[1]],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        reports.wait(lambda it: any(o["kind"] == "subscribed" for o in it), timeout=60)
        first_id = reports.kinds("subscribed")[0]["id"]
        assert first_id == "0:0,1:0"
        # records produced after the browser subscribed
        with requests.Session() as s:
            for i in range(10):
                r = s.post(n.url + "/broker/topics/web/produce?partition=%d" % (i % 2),
                           data=json.dumps({"i": i}), headers=AUTH, timeout=30)
                assert r.status_code == 200
        reports.wait(lambda it: sum(o["kind"] == "record" for o in it) >= 10)
        last_before = sorted(reports.kinds("record"), key=lambda o: o["seq"])[-1]["id"]
        assert last_before == "0:5,1:5"
        # forced disconnect: the server dies mid-stream and comes back on the same port
        n.kill()
        n.start()
        with requests.Session() as s:
            for i in range(10, 20):
                r = s.post(n.url + "/broker/topics/web/produce?partition=%d" % (i % 2),
                           data=json.dumps({"i": i}), headers=AUTH, timeout=30)
                assert r.status_code == 200
        reports.wait(lambda it: sum(o["kind"] == "record" for o in it) >= 20, timeout=60)
        time.sleep(0.5)  # anything extra (a repeat) would arrive now
        recs = reports.kinds("record")
        assert sorted(o["value"]["i"] for o in recs) == list(range(20))  # no gap, no repeat
        for p in range(2):
            offs = [o["offset"] for o in sorted(recs, key=lambda o: o["seq"]) if o["partition"] == p]
            assert offs == list(range(10)), (p, offs)  # in order per partition
        # the browser came back by itself, resuming from the last id it had seen
        subs = reports.kinds("subscribed")
        assert len(subs) >= 2 and subs[1]["id"] == last_before, subs
    finally:
        os.killpg(browser.pid, 9)
        browser.wait(timeout=30)
        srv.shutdown()
        shutil.rmtree(profile, ignore_errors=True)
