//! End-to-end tests: the real `runbox` binary and runtime against real services on
//! loopback. One test binary (see STYLE.md); modules by subject.

mod harness;

mod language;
mod languages;
mod livekit;

mod aws;
mod check_redis;
mod cli;
mod compat;
mod deploy;
mod event_log;
mod header_secrets;
mod hostile_output;
mod http_grants;
mod livekit_webhook;
mod loading;
mod memory;
mod notify;
mod openai;
mod otlp;
mod pg;
mod pg_query;
mod prometheus;
mod rq;
mod runbooks;
mod s3;
mod s3_maintenance;
mod s3_probe;
mod sandbox;
mod scaffold;
mod seed_playbooks;
mod seed_runbooks;
mod serve;
mod storage_outage;
mod tls;
mod tls_hostile;
mod tls_plugins;
mod tls_servers;
mod trust;
