//! One module per command; `crate::cli` defines the arguments and dispatches here.

pub(crate) mod check;
pub(crate) mod generate;
pub(crate) mod plugins;
pub(crate) mod run;
pub(crate) mod serve;
pub(crate) mod validate;

use crate::error::{Error, invalid};
use crate::output;
use crate::plugins::{PluginPath, PluginRef};
use crate::runtime::{Plugin, Runtime};
use std::collections::BTreeMap;
use std::sync::Arc;

pub(crate) fn parse_sets(sets: &[String]) -> Result<BTreeMap<String, String>, Error> {
    sets.iter()
        .map(|pair| {
            pair.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| invalid(format!("--set `{pair}`: expected NAME=VALUE")))
        })
        .collect()
}

pub(crate) fn print(text: &str) -> Result<(), Error> {
    output::print(text).map_err(|err| Error::Internal(format!("cannot write output: {err}")))
}

pub(crate) async fn load(
    runtime: &Runtime,
    plugin_path: &PluginPath,
    spec: &str,
    memory: usize,
) -> Result<Arc<Plugin>, Error> {
    let reference = PluginRef::parse(spec, None).map_err(|err| invalid(format!("`{spec}`: {err}")))?;
    plugin_path
        .load(runtime, &reference, memory, &mut Default::default())
        .await
        .map_err(invalid)
}
