//! `runbox completions SHELL` and `runbox man`: generated from the clap definitions in
//! `crate::cli`, so they never drift from the real arguments.

use super::print;
use crate::cli::Cli;
use crate::error::{Error, invalid};
use clap::CommandFactory;
use std::path::Path;

pub(crate) fn completions(shell: clap_complete::Shell) -> Result<u8, Error> {
    let mut command = Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut command, "runbox", &mut out);
    print(&String::from_utf8_lossy(&out))?;
    Ok(0)
}

pub(crate) fn man(dir: Option<&Path>) -> Result<u8, Error> {
    let command = Cli::command();
    let Some(dir) = dir else {
        print(&page(&command)?)?;
        return Ok(0);
    };
    std::fs::create_dir_all(dir).map_err(|err| invalid(format!("--dir {}: {err}", dir.display())))?;
    let mut written = Vec::new();
    let mut pages = vec![(String::from("runbox"), command.clone())];
    for sub in command.get_subcommands().filter(|sub| !sub.is_hide_set()) {
        let name = format!("runbox-{}", sub.get_name());
        let invoked = format!("runbox {}", sub.get_name());
        pages.push((name.clone(), sub.clone().display_name(name).bin_name(invoked)));
    }
    for (name, page_command) in pages {
        let path = dir.join(format!("{name}.1"));
        std::fs::write(&path, page(&page_command)?)
            .map_err(|err| invalid(format!("cannot write {}: {err}", path.display())))?;
        written.push(path.display().to_string());
    }
    print(&format!("wrote {}\n", written.join(", ")))?;
    Ok(0)
}

fn page(command: &clap::Command) -> Result<String, Error> {
    let mut out = Vec::new();
    clap_mangen::Man::new(command.clone())
        .render(&mut out)
        .map_err(|err| Error::Internal(format!("cannot render the manual page: {err}")))?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}
