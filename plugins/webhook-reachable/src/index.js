// webhook-reachable: a runbox check written in JavaScript (componentize-js). It sends a
// request to a webhook endpoint with fetch() and expects one of the given statuses. The
// host decides whether the request may go out (the step's grants), exactly as for Rust
// plugins; fetch() here runs over wasi:http. A check only reads: the default POST needs a
// grant that lists it (`POST https://hooks.example.com`); GET and HEAD need none.
import { log, remainingMs } from "runbox:plugin/host@0.2.0";

const SCHEMA = {
  $schema: "https://json-schema.org/draft/2020-12/schema",
  title: "webhook-reachable config",
  type: "object",
  properties: {
    url: { type: "string", description: "The webhook URL, e.g. https://hooks.example.com/livekit" },
    method: {
      type: "string",
      enum: ["GET", "HEAD", "POST"],
      default: "POST",
      description: "POST needs a grant listing it (`POST https://hooks.example.com`); GET and HEAD need none",
    },
    body: { type: "string", default: "{}", description: "Body sent with POST (a harmless ping event)" },
    headers: { type: "object", additionalProperties: { type: "string" } },
    expect_status: { type: "array", items: { type: "integer" }, default: [200, 204] },
    warn_ms: { type: "number", description: "Latency in ms above which the check is WARNING" },
  },
  required: ["url"],
  additionalProperties: false,
};

export function info() {
  return {
    name: "webhook-reachable",
    version: "0.1.0",
    description: "Checks that a webhook endpoint answers with the expected status (JavaScript, fetch())",
    configSchema: JSON.stringify(SCHEMA),
  };
}

function report(status, summary, details = [], metrics = []) {
  return { status, summary, details, metrics, outputs: [] };
}

export async function run(configText) {
  const config = JSON.parse(configText);
  const method = config.method ?? "POST";
  const expected = config.expect_status ?? [200, 204];
  const headers = { "content-type": "application/json", ...(config.headers ?? {}) };
  // Give up a little before the host's deadline, so the result says why.
  const controller = new AbortController();
  const budget = Math.max(Number(remainingMs()) - 250, 50);
  const timer = setTimeout(() => controller.abort(), budget);
  const started = Date.now();
  let response;
  try {
    response = await fetch(config.url, {
      method,
      headers,
      body: method === "POST" ? (config.body ?? "{}") : undefined,
      signal: controller.signal,
      redirect: "manual",
    });
  } catch (error) {
    const why = controller.signal.aborted ? `no answer within ${budget} ms` : String(error?.message ?? error);
    return report("critical", `${method} ${config.url}: ${why}`);
  } finally {
    clearTimeout(timer);
  }
  const latency = Date.now() - started;
  await response.arrayBuffer();
  log("debug", `${method} ${config.url} answered ${response.status} in ${latency} ms`);
  const metrics = [
    { name: "latency_ms", value: latency, unit: "ms", warn: config.warn_ms === undefined ? undefined : String(config.warn_ms), crit: undefined, min: 0, max: undefined },
    { name: "status_code", value: response.status, unit: "", warn: undefined, crit: undefined, min: undefined, max: undefined },
  ];
  const line = `${method} ${config.url} → ${response.status} in ${latency} ms`;
  if (!expected.includes(response.status)) {
    return report("critical", `${line}, expected ${expected.join(" or ")}`, [], metrics);
  }
  if (config.warn_ms !== undefined && latency > config.warn_ms) {
    return report("warning", `${line} (slower than ${config.warn_ms} ms)`, [], metrics);
  }
  return report("ok", line, [], metrics);
}
