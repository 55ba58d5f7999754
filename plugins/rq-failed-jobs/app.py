"""rq-failed-jobs: how many jobs sit in an RQ failed-job registry.

RQ (python-rq) moves a job that raised into the sorted set `rq:failed:<queue>` (its
FailedJobRegistry) until the failure TTL expires. This check reads its size (ZCARD),
applies Nagios thresholds, and lists the newest failures with their descriptions, so the
on-call engineer sees what is failing before deciding to replay. It hands the ids of the
newest failures (at most `max_ids`, newest first) to later steps as the output `job_ids`,
e.g. for a `for_each` that replays each one. Read-only: it sends SISMEMBER, ZCARD,
ZREVRANGE and HGET, nothing else.
"""

import json
import re
from urllib.parse import unquote, urlsplit

import wit_world
from wit_world.imports import host, types

from redis_wasi import Connection, Deadline, RedisError, ReplyError

SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "rq-failed-jobs config",
    "type": "object",
    "properties": {
        "url": {"type": "string", "description": "redis://[user[:password]@]host[:port][/db]"},
        "password_secret": {"type": "string", "description": "Granted secret holding the password"},
        "queue": {"type": "string", "description": "RQ queue name (default: default)"},
        "warn": {"type": "string", "description": "Nagios range for the number of failed jobs"},
        "crit": {"type": "string"},
        "show": {"type": "integer", "minimum": 0, "maximum": 50, "description": "Newest failures to list (default 5)"},
        "max_ids": {
            "type": "integer",
            "minimum": 0,
            "maximum": 1000,
            "description": "Most job ids in the output `job_ids`, newest first (default 100, for_each's default cap)",
        },
    },
    "required": ["url"],
    "additionalProperties": False,
}

# Time kept back from the host's deadline so that a slow server gets a clear CRITICAL
# from the plugin rather than being stopped by the host.
MARGIN_MS = 200

# RQ's own rule for job ids (rq/job.py, JOB_ID_PATTERN, rq 2.x). A member of the registry
# that breaks it was not put there by RQ; it is not handed on, so an id can never carry
# `/`, `?` or spaces into a URL a later step builds from it.
JOB_ID = re.compile(r"[A-Za-z0-9_-]+")


class ConfigError(Exception):
    """A config field is wrong; the message names it."""


class Range:
    """A Nagios range (`10`, `10:`, `~:10`, `10:20`, `@10:20`): the values that are fine,
    or with `@` the values that alert. Same grammar as the Rust SDK's threshold module."""

    def __init__(self, field: str, text: str):
        original = text.strip()
        body = original[1:] if original.startswith("@") else original
        self.inside = original.startswith("@")
        self.text = original
        try:
            if ":" in body:
                start, end = body.split(":", 1)
                self.start = float("-inf") if start == "~" else float(start) if start else 0.0
                self.end = float(end) if end else float("inf")
            else:
                self.start, self.end = 0.0, float(body)
        except ValueError:
            raise ConfigError(f"config field `{field}`: \"{original}\" is not a Nagios range") from None
        if not original or self.start > self.end:
            raise ConfigError(f"config field `{field}`: \"{original}\" is not a Nagios range (start above end?)")

    def alerts(self, value: float) -> bool:
        within = self.start <= value <= self.end
        return within if self.inside else not within


class Target:
    """Where the registry lives, from `url` and `password_secret`."""

    def __init__(self, config: dict):
        url = config["url"]
        parts = urlsplit(url)
        if parts.scheme != "redis":
            raise ConfigError(f"config field `url`: scheme must be redis:// (got \"{parts.scheme}\")")
        if not parts.hostname:
            raise ConfigError("config field `url`: no host")
        self.host = parts.hostname
        try:
            self.port = parts.port or 6379
        except ValueError:
            raise ConfigError("config field `url`: the port is not a number") from None
        path = parts.path.strip("/")
        if path and not path.isdigit():
            raise ConfigError(f"config field `url`: database \"{path}\" is not a number")
        self.db = path or "0"
        self.user = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password) if parts.password else None
        secret_name = config.get("password_secret")
        if secret_name is not None:
            self.password = host.secret(secret_name)
            if self.password is None:
                raise ConfigError(
                    f"config field `password_secret`: secret \"{secret_name}\" is not granted to this step"
                )
        shown_host = f"[{self.host}]" if ":" in self.host else self.host
        self.display = f"redis://{shown_host}:{self.port}/{self.db}"

    def login(self, conn: Connection) -> None:
        if self.password is not None:
            conn.call(*(["AUTH", self.user] if self.user else ["AUTH"]), self.password)
        if self.db != "0":
            conn.call("SELECT", self.db)


class WitWorld(wit_world.WitWorld):
    def info(self) -> types.Info:
        return types.Info(
            name="rq-failed-jobs",
            version="0.1.0",
            description="Size of an RQ failed-job registry in Redis (ZCARD rq:failed:<queue>), with thresholds",
            config_schema=json.dumps(SCHEMA),
        )

    def run(self, config: str) -> types.Report:
        try:
            return check(json.loads(config))
        except ConfigError as err:
            return report(types.Status.UNKNOWN, str(err))


def report(status: types.Status, summary: str, details=(), metrics=(), outputs=()) -> types.Report:
    return types.Report(
        status=status, summary=summary, details=list(details), metrics=list(metrics), outputs=list(outputs)
    )


def job_ids(newest: list, max_ids: int) -> tuple:
    """The ids to hand on (RQ-valid ones, newest first, at most `max_ids`) and how many
    members were left out for not being RQ job ids."""
    valid = [job_id for job_id in newest if JOB_ID.fullmatch(job_id)]
    return valid[:max_ids], len(newest) - len(valid)


def check(config: dict) -> types.Report:
    target = Target(config)
    queue = config.get("queue", "default")
    show = config.get("show", 5)
    max_ids = config.get("max_ids", 100)
    warn = Range("warn", config["warn"]) if "warn" in config else None
    crit = Range("crit", config["crit"]) if "crit" in config else None
    registry = f"rq:failed:{queue}"
    deadline = Deadline(max(host.remaining_ms() - MARGIN_MS, 50))
    try:
        with Connection(target.host, target.port, deadline) as conn:
            target.login(conn)
            known = conn.call("SISMEMBER", "rq:queues", f"rq:queue:{queue}")
            failed = conn.call("ZCARD", registry)
            wanted = max(show, max_ids)
            newest = conn.call("ZREVRANGE", registry, "0", str(wanted - 1)) if wanted and failed else []
            details = []
            for job_id in newest[:show]:
                description = conn.call("HGET", f"rq:job:{job_id}", "description")
                details.append(f"job {job_id}: {description or '(job hash expired)'}")
    except ReplyError as err:
        return report(types.Status.CRITICAL, f"{target.display}: {err}")
    except RedisError as err:
        return report(types.Status.CRITICAL, f"cannot read {registry} from {target.display}: {err}")
    host.log(types.Level.INFO, f"ZCARD {registry} = {failed}")
    metric = types.Metric(
        name="failed_jobs",
        value=float(failed),
        unit="",
        warn=warn.text if warn else None,
        crit=crit.text if crit else None,
        min=0.0,
        max=None,
    )
    if not known and failed == 0:
        return report(
            types.Status.UNKNOWN,
            f"queue \"{queue}\" is not registered in rq:queues on {target.display}: check the queue name",
            metrics=[metric],
        )
    status = types.Status.OK
    if crit and crit.alerts(failed):
        status = types.Status.CRITICAL
    elif warn and warn.alerts(failed):
        status = types.Status.WARNING
    noun = "job" if failed == 1 else "jobs"
    summary = f"{failed} failed {noun} in {registry} on {target.display}"
    if failed > len(details) and details:
        details.append(f"… and {failed - len(details)} more")
    ids, invalid = job_ids(newest[:max_ids], max_ids)
    if invalid:
        details.append(f"{invalid} registry members are not RQ job ids ([A-Za-z0-9_-]+) and are not in job_ids")
    if failed > len(ids) + invalid:
        details.append(f"job_ids holds the newest {len(ids)} of {failed} failed jobs (max_ids {max_ids})")
    output = types.Output(name="job_ids", value=json.dumps(ids))
    return report(status, summary, details, [metric], [output])
