# Echo app on Python's http.server (upstreamtest). Like many hand-written
# handlers (a do_DELETE, a CORS do_OPTIONS), it reads a body only on the
# methods that carry one by definition, POST, PUT and PATCH, and leaves any
# other body unread on the connection. Records every request as one JSON
# line in $UPSTREAMTEST_LOG. Usage: echo_httpserver.py PORT
import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOG = os.environ["UPSTREAMTEST_LOG"]


class Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def __getattr__(self, name):
        if name.startswith("do_"):
            return self.echo
        raise AttributeError(name)

    def echo(self):
        n = 0
        if self.command in ("POST", "PUT", "PATCH"):
            cl = self.headers.get("Content-Length")
            if cl and cl.isdigit():
                n = len(self.rfile.read(int(cl)))
        headers = {}
        for k, v in self.headers.items():
            k = k.lower()
            headers[k] = headers[k] + ", " + v if k in headers else v
        rec = {"server": "http.server", "method": self.command, "target": self.path,
               "proto": self.request_version, "headers": headers, "body_len": n}
        with open(LOG, "a") as f:
            f.write(json.dumps(rec) + "\n")
        body = ("echo %s %s user=%s\n" % (self.command, self.path, headers.get("x-stepgate-user", ""))).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, *args):
        pass


ThreadingHTTPServer.daemon_threads = True
# socketserver's default backlog of 5 resets connections when a test opens
# dozens at once; parsing is unchanged by a longer queue.
ThreadingHTTPServer.request_queue_size = 128
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Echo).serve_forever()
