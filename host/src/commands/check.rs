//! `runbox check`: one check plugin with grants from the command line.

use super::{load, print};
use crate::capabilities::network::Grant;
use crate::capabilities::secrets::SecretGrant;
use crate::capabilities::tls::{PemSource, TlsSettings, Trust};
use crate::capabilities::{DirGrant, Grants, parse_env_grant};
use crate::cli::CheckArgs;
use crate::config;
use crate::error::{Error, invalid};
use crate::plugins::PluginPath;
use crate::report::{self};
use crate::result::{Kind, RunResult, StepResult, timestamp};
use crate::runtime::{Limits, Runtime};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

pub(crate) async fn check(
    runtime: &Runtime,
    plugin_path: &PluginPath,
    args: CheckArgs,
    verbose: bool,
) -> Result<u8, Error> {
    let mut grants = Grants {
        network: args
            .allow
            .iter()
            .map(|text| text.parse::<Grant>().map_err(|err| invalid(err.to_string())))
            .collect::<Result<_, _>>()?,
        secrets: args
            .secret
            .iter()
            .map(|text| SecretGrant::parse(text).map_err(invalid))
            .collect::<Result<_, _>>()?,
        env: args
            .env
            .iter()
            .map(|text| parse_env_grant(text).map_err(invalid))
            .collect::<Result<_, _>>()?,
        dirs: args
            .dir
            .iter()
            .map(|text| DirGrant::parse(text).map_err(invalid))
            .collect::<Result<_, _>>()?,
        allow_metadata: args.allow_metadata,
        tls: Trust::system(),
        header_secrets: Vec::new(),
        traceparent: None,
    };
    for grant in &grants.secrets {
        grant.resolve().map_err(invalid)?;
    }
    let tls = TlsSettings {
        ca: args.ca.clone(),
        client_cert: args.client_cert.as_deref().map(PemSource::parse),
        client_key: args.client_key.as_deref().map(PemSource::parse),
        verify: !args.tls_no_verify,
    };
    if !tls.is_default() {
        grants.tls = Arc::new(Trust::build(&tls, &grants.secrets).map_err(invalid)?);
    }
    let plugin = load(runtime, plugin_path, &args.plugin, args.memory).await?;
    let name = plugin.info.name.clone();
    if plugin.kind != Kind::Check {
        return Err(invalid(format!(
            "plugin `{name}` is a mitigation; mitigations run as runbook steps (plan, then apply), not with `runbox check`"
        )));
    }
    let config = config::build(&plugin.info.config_schema, args.config.as_deref(), &args.with).map_err(invalid)?;
    let problems = runtime.remembered_config_violations(&plugin, &config);
    if !problems.is_empty() {
        return Err(invalid(format!(
            "invalid config for plugin `{name}`:\n  {}\n(see `runbox plugins inspect {}` for the config schema)",
            problems.join("\n  "),
            args.plugin
        )));
    }
    // `${{ secrets.NAME }}` in a config string: NAME is a header secret, as in a runbook's
    // `with:` (the host fills it into the plugin's HTTP request headers).
    let mut header_secrets = BTreeSet::new();
    crate::capabilities::header_secrets::names_in(&config, &mut header_secrets);
    if let Some(unknown) = header_secrets
        .iter()
        .find(|used| !grants.secrets.iter().any(|grant| grant.name == **used))
    {
        return Err(invalid(format!(
            "the config uses `${{{{ secrets.{unknown} }}}}`, but no --secret grants `{unknown}`: add `--secret {unknown}=env:VAR` (or file:PATH), whose value the host then puts in the plugin's HTTP request headers"
        )));
    }
    grants.header_secrets = header_secrets.into_iter().collect();
    tracing::debug!(plugin = %name, compiled = plugin.compiled, load_ms = plugin.load_time.as_secs_f64() * 1e3, "plugin loaded");

    let limits = Limits {
        deadline: args.timeout,
        memory_bytes: args.memory,
        ..Limits::default()
    };
    let started_at = SystemTime::now();
    let started = Instant::now();
    let outcome = runtime.run_check(&plugin, &config, &grants, &limits).await;
    let step = StepResult {
        id: name.clone(),
        plugin: name,
        kind: plugin.kind,
        status: outcome.status,
        summary: outcome.summary,
        details: outcome.details,
        metrics: outcome.metrics,
        outputs: outcome.outputs,
        item: None,
        attempts: 1,
        duration_ms: outcome.duration.as_secs_f64() * 1e3,
        skipped: None,
        started_at: timestamp(started_at),
        ended_at: timestamp(SystemTime::now()),
        denied: outcome.denied,
        logs: outcome.logs,
        plan: None,
        applied: None,
    };
    let run = RunResult {
        runbook: None,
        severity: None,
        escalation: None,
        run_id: None,
        started_at: Some(timestamp(started_at)),
        ended_at: Some(timestamp(SystemTime::now())),
        status: step.status,
        duration_ms: started.elapsed().as_secs_f64() * 1e3,
        stopped: None,
        steps: vec![step],
    };
    print(&report::render(&run, args.format, verbose))?;
    Ok(run.status.exit_code())
}
