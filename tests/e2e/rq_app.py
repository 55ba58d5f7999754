"""A stand-in for seed 002's application, on real RQ (python-rq, pinned in scripts/ensure-deps),
for tests/e2e/seed_runbooks.rs. Run with the test-servers venv's python, with this
directory on PYTHONPATH (so that RQ workers can import `rq_app.charge_invoice`).

    python rq_app.py serve REDIS_URL PORT LOG    the application's own HTTP endpoints
    python rq_app.py enqueue REDIS_URL QUEUE N   enqueue N charge_invoice jobs, print their ids
    python rq_app.py enqueue-slow REDIS_URL QUEUE SECONDS
                                                 enqueue one `linger` job, print its id
    python rq_app.py inspect REDIS_URL QUEUE ID…  what RQ's own API says of each job (JSON):
                                                 status, origin, and whether the failed
                                                 registry / the queue holds it

Endpoints (on 127.0.0.1:PORT; every request is appended to LOG as one JSON line):
    GET  /health/ready             200 when Redis answers PING, else 503 (its queue check)
    POST /jobs/{job_id}/replay     requeues the failed job through RQ's own API (202), 404 if unknown
    POST /admin/config             takes {"PLC_INLINE_JOBS": "true"}: the emergency switch (200)
    GET  /admin/config             the switches set so far

The job, `charge_invoice`, really fails (it raises) until the Redis key `test:fixed`
exists, and records every run of itself in the list `test:ran`, so a test can tell that
a replayed job was run again by the worker.
"""

import json
import re
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from redis import Redis
from rq import Queue, get_current_job
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job


def charge_invoice(invoice: int) -> int:
    """The job: fails until the test says the provider is back (`test:fixed`)."""
    job = get_current_job()
    job.connection.rpush("test:ran", job.id)
    if not job.connection.exists("test:fixed"):
        raise RuntimeError(f"payment provider unavailable (invoice {invoice})")
    return invoice


def linger(seconds: float) -> float:
    """A job that takes its time: a test sees it in RQ's StartedJobRegistry."""
    time.sleep(seconds)
    return seconds


def serve(redis_url: str, port: int, log_path: str) -> None:
    redis = Redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2)
    config = {}
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def record(self, body: str) -> None:
            with lock, open(log_path, "a") as log:
                log.write(json.dumps({"method": self.command, "path": self.path, "body": body}) + "\n")

        def reply(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            self.record("")
            if self.path == "/health/ready":
                try:
                    redis.ping()
                    self.reply(200, {"status": "ready", "queue": "ok"})
                except Exception as err:  # the queue check fails: not ready
                    self.reply(503, {"status": "not ready", "queue": str(err)})
            elif self.path == "/admin/config":
                with lock:
                    self.reply(200, dict(config))
            else:
                self.reply(404, {"error": "not found"})

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("content-length") or 0)).decode()
            self.record(body)
            replay = re.fullmatch(r"/jobs/([^/]+)/replay", self.path)
            if replay:
                try:
                    job = Job.fetch(replay.group(1), connection=redis)
                    job.requeue()
                    self.reply(202, {"replayed": job.id})
                except NoSuchJobError:
                    self.reply(404, {"error": "no such job"})
                except InvalidJobOperation:
                    self.reply(409, {"error": "the job is not in the failed registry"})
            elif self.path == "/admin/config":
                try:
                    switches = json.loads(body)
                except ValueError:
                    self.reply(400, {"error": "body is not JSON"})
                    return
                with lock:
                    config.update(switches)
                    self.reply(200, dict(config))
            else:
                self.reply(404, {"error": "not found"})

    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


def enqueue(redis_url: str, queue: str, count: int) -> None:
    q = Queue(queue, connection=Redis.from_url(redis_url))
    for n in range(count):
        print(q.enqueue("rq_app.charge_invoice", 4100 + n).id)


def enqueue_slow(redis_url: str, queue: str, seconds: float) -> None:
    q = Queue(queue, connection=Redis.from_url(redis_url))
    print(q.enqueue("rq_app.linger", seconds, job_timeout=600).id)


def inspect(redis_url: str, queue: str, ids: list) -> None:
    redis = Redis.from_url(redis_url)
    q = Queue(queue, connection=redis)
    failed = set(q.failed_job_registry.get_job_ids())
    queued = set(q.get_job_ids())
    report = {}
    for job_id in ids:
        try:
            job = Job.fetch(job_id, connection=redis)
            status, origin = job.get_status(), job.origin
            status = getattr(status, "value", status)
        except NoSuchJobError:
            status, origin = None, None
        report[job_id] = {"status": status, "origin": origin, "failed": job_id in failed, "queued": job_id in queued}
    print(json.dumps(report))


if __name__ == "__main__":
    command, redis_url = sys.argv[1], sys.argv[2]
    if command == "serve":
        serve(redis_url, int(sys.argv[3]), sys.argv[4])
    elif command == "enqueue":
        enqueue(redis_url, sys.argv[3], int(sys.argv[4]))
    elif command == "enqueue-slow":
        enqueue_slow(redis_url, sys.argv[3], float(sys.argv[4]))
    elif command == "inspect":
        inspect(redis_url, sys.argv[3], sys.argv[4:])
    else:
        sys.exit(f"unknown command {command}")
