"""An OTLP/HTTP trace receiver for the tests, decoding with the official
opentelemetry-proto package.

Listens on 127.0.0.1 (port 0: the kernel picks one, printed as `PORT <n>` on stdout),
accepts POST /v1/traces with Content-Type application/x-protobuf, decodes each body as
an ExportTraceServiceRequest and appends one JSON line per span to the file given as
the first argument: trace_id, span_id, parent_span_id (hex), name, kind, attributes,
events (name and attributes), status (code and message) and the resource's attributes.
Any other request is answered 404 (path) or 415 (content type) and recorded as a line
{"rejected": ...}, so a test sees a wrong request rather than a missing span.

"""

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

OUT = sys.argv[1]
LOCK = threading.Lock()


def value(v):
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: value(kv.value) for kv in v.kvlist_value.values}
    if kind == "bytes_value":
        return v.bytes_value.hex()
    return getattr(v, kind) if kind else None


def attributes(kvs):
    return {kv.key: value(kv.value) for kv in kvs}


def append(path, record):
    with LOCK, open(path, "a") as out:
        out.write(json.dumps(record) + "\n")


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_POST(self):
        length = int(self.headers.get("Content-Length", 0))
        body = self.rfile.read(length)
        if self.path != "/v1/traces":
            append(OUT, {"rejected": "path", "path": self.path})
            self.send_response(404)
            self.end_headers()
            return
        if self.headers.get("Content-Type") != "application/x-protobuf":
            append(OUT, {"rejected": "content-type", "content_type": self.headers.get("Content-Type")})
            self.send_response(415)
            self.end_headers()
            return
        request = trace_service_pb2.ExportTraceServiceRequest()
        request.ParseFromString(body)
        for resource_spans in request.resource_spans:
            resource = attributes(resource_spans.resource.attributes)
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    append(
                        OUT,
                        {
                            "trace_id": span.trace_id.hex(),
                            "span_id": span.span_id.hex(),
                            "parent_span_id": span.parent_span_id.hex(),
                            "name": span.name,
                            "kind": span.kind,
                            "scope": scope_spans.scope.name,
                            "start_ns": span.start_time_unix_nano,
                            "end_ns": span.end_time_unix_nano,
                            "attributes": attributes(span.attributes),
                            "events": [
                                {"name": e.name, "attributes": attributes(e.attributes)} for e in span.events
                            ],
                            "status": {"code": span.status.code, "message": span.status.message},
                            "resource": resource,
                        },
                    )
        answer = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(f"PORT {server.server_address[1]}", flush=True)
server.serve_forever()
