#!/usr/bin/env python3
"""The demo's stand-in for the jobs service of seed 002: /health is fine, /health/ready
reports the injected fault (no workers), POST /jobs/{job_id}/replay accepts the replay of
one failed job, POST /admin/config takes the PLC_INLINE_JOBS switch. Standard library
only; listens on 127.0.0.1:PORT (argv[1]) and logs requests to stderr."""
import json
import re
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    def reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/health":
            self.reply(200, {"status": "ok"})
        elif self.path == "/health/ready":
            # The injected fault: the worker pool is empty, so the service is not ready.
            self.reply(503, {"status": "degraded", "reason": "0 of 4 workers connected"})
        else:
            self.reply(404, {"error": "not found"})

    def do_POST(self):
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length)
        replay = re.fullmatch(r"/jobs/([A-Za-z0-9_-]+)/replay", self.path)
        if replay:
            self.reply(202, {"replayed": replay.group(1)})
        elif self.path == "/admin/config":
            self.reply(200, json.loads(body or b"{}"))
        else:
            self.reply(404, {"error": "not found"})


if __name__ == "__main__":
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
