"""A LiveKit webhook endpoint for the tests, verifying with LiveKit's own code.

    python3 livekit_webhook_server.py API_KEY API_SECRET [--accept-all]

Serves POST on 127.0.0.1 (a free port, printed as the first line of stdout), and
answers 200 when `livekit.api.WebhookReceiver(TokenVerifier(key, secret)).receive(body,
authorization)` accepts the request and 401 when it raises (PyPI `livekit-api`, pinned
in scripts/ensure-deps). `--accept-all` is an endpoint that (wrongly) answers 200 to
everything. Each request is logged to stdout as one line: `accepted EVENT ROOM CONTENT-TYPE` or
`rejected REASON`.
"""

import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from livekit.api import TokenVerifier, WebhookReceiver


def main():
    api_key, api_secret = sys.argv[1], sys.argv[2]
    accept_all = "--accept-all" in sys.argv[3:]
    receiver = WebhookReceiver(TokenVerifier(api_key, api_secret))

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            length = int(self.headers.get("content-length", "0"))
            body = self.rfile.read(length).decode()
            auth = self.headers.get("authorization", "")
            try:
                event = receiver.receive(body, auth)
                kind = self.headers.get("content-type", "")
                line, status = f"accepted {event.event} {event.room.name} {kind}", 200
            except Exception as err:  # WebhookReceiver raises on any failure
                line, status = f"rejected {type(err).__name__}: {err}", 401
            if accept_all:
                status = 200
            print(line, flush=True)
            reply = b"ok" if status == 200 else b"invalid webhook signature"
            self.send_response(status)
            self.send_header("content-type", "text/plain")
            self.send_header("content-length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
