"""TLS test servers for the end-to-end tests, on Python's ssl module (OpenSSL): a TLS
implementation independent of runbox's rustls.

    tls_server.py https --cert C --key K [--client-ca CA] --log FILE
    tls_server.py smtp  --cert C --key K --log FILE        (needs aiosmtpd)

Binds 127.0.0.1 on a free port and prints `listening PORT` on stdout once it accepts.
Writes one line per event to the log: `accept`, then `no-data` (the client closed or
sent nothing within 5 s) or `client-hello` (it sent bytes), then `handshake-ok` or
`handshake-failed: REASON`, then `request METHOD PATH` (https). Runs until killed.

https answers every GET or HEAD with 200 and `{"status": "ok"}`. smtp is aiosmtpd with
STARTTLS required before any mail command.
"""

import argparse
import http.server
import socket
import ssl
import sys
import threading

LOG_LOCK = threading.Lock()


def log_to(path):
    def log(line):
        with LOG_LOCK, open(path, "a", encoding="utf-8") as file:
            file.write(line + "\n")

    return log


def server_context(args):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(args.cert, args.key)
    if args.client_ca:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(args.client_ca)
    return context


def serve_https(args):
    context = server_context(args)
    log = log_to(args.log)

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def answer(self, body):
            log(f"request {self.command} {self.path}")
            payload = b'{"status": "ok"}'
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(payload)))
            self.send_header("connection", "close")
            self.end_headers()
            if body:
                self.wfile.write(payload)
            self.close_connection = True

        def do_GET(self):
            self.answer(True)

        def do_HEAD(self):
            self.answer(False)

        def log_message(self, *_):
            pass

    class Server(http.server.ThreadingHTTPServer):
        daemon_threads = True

        # The handshake happens in the connection's own thread (not in accept), so a
        # client that connects and says nothing blocks no one, and each step is logged.
        def finish_request(self, request, client_address):
            log("accept")
            request.settimeout(5)
            try:
                first = request.recv(1, socket.MSG_PEEK)
            except OSError:
                first = b""
            if not first:
                log("no-data")
                request.close()
                return
            log("client-hello")
            try:
                tls = context.wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError) as err:
                log(f"handshake-failed: {getattr(err, 'reason', None) or err}")
                return
            peer = tls.getpeercert()
            log("handshake-ok" + (f" client={dict(x[0] for x in peer['subject'])['commonName']}" if peer else ""))
            try:
                Handler(tls, client_address, self)
            except OSError:
                pass

        def handle_error(self, request, client_address):
            pass

    server = Server(("127.0.0.1", 0), Handler)
    print(f"listening {server.server_address[1]}", flush=True)
    server.serve_forever()


def serve_smtp(args):
    from aiosmtpd.controller import Controller

    log = log_to(args.log)

    class Handler:
        async def handle_EHLO(self, server, session, envelope, hostname, responses):
            log(f"ehlo {hostname} tls={session.ssl is not None}")
            session.host_name = hostname
            return responses

        async def handle_DATA(self, server, session, envelope):
            return "250 OK"

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(
        Handler(),
        hostname="127.0.0.1",
        port=port,
        tls_context=server_context(args),
        require_starttls=True,
        server_hostname="localhost",
    )
    controller.start()
    print(f"listening {port}", flush=True)
    threading.Event().wait()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["https", "smtp"])
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--client-ca")
    parser.add_argument("--log", required=True)
    args = parser.parse_args()
    if args.mode == "https":
        serve_https(args)
    else:
        serve_smtp(args)


if __name__ == "__main__":
    sys.exit(main())
