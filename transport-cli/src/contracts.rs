//! `transport contracts`: the compatibility gate over schema files, and the
//! AsyncAPI document and Markdown catalog of what a service wrote.

use std::path::Path;

use transport::contracts::{gate, Catalog};

use crate::cli::{ContractsArgs, ContractsCommand};
use crate::target::{CliError, CliResult};

pub fn run(args: ContractsArgs) -> CliResult {
    match args.command {
        ContractsCommand::Check | ContractsCommand::Lock => gate(&args),
        ContractsCommand::Asyncapi { ref servers, ref out } => {
            let doc = read(&args.current)?
                .asyncapi(servers)
                .map_err(|e| CliError::new(e.to_string()))?;
            let mut text = serde_json::to_string_pretty(&doc).expect("a JSON value serializes");
            text.push('\n');
            emit(out.as_deref(), &text)
        }
        ContractsCommand::Catalog { ref out } => emit(out.as_deref(), &read(&args.current)?.markdown()),
    }
}

fn read(dir: &Path) -> CliResult<Catalog> {
    Catalog::read(dir).map_err(|e| {
        CliError::new(format!(
            "{e} (a service writes its catalog with Catalog::write, e.g. in a test)"
        ))
    })
}

fn emit(out: Option<&Path>, text: &str) -> CliResult {
    match out {
        None => {
            print!("{text}");
            Ok(())
        }
        Some(path) => std::fs::write(path, text).map_err(|e| CliError::new(format!("writing {}: {e}", path.display()))),
    }
}

fn gate(args: &ContractsArgs) -> CliResult {
    let locked = gate::read(&args.locked).map_err(|e| CliError::new(e.to_string()))?;
    let current = gate::read(&args.current).map_err(|e| CliError::new(e.to_string()))?;
    if current.is_empty() {
        return Err(CliError::new(format!(
            "no schemas in {} (a service writes them with Catalog::write: <type>/<major>.<minor>.schema.json)",
            args.current.display()
        )));
    }
    gate::verdict(&locked, &current, args.compatibility)
        .map_err(|e| CliError::new(e.to_string().trim_end().to_owned()))?;
    let new: Vec<String> = current
        .keys()
        .filter(|k| !locked.contains_key(*k))
        .map(|(t, v)| format!("{t} {v}"))
        .collect();
    let new = if new.is_empty() {
        "none".to_owned()
    } else {
        new.join(", ")
    };
    if matches!(args.command, ContractsCommand::Lock) {
        gate::write(&args.locked, &current).map_err(|e| {
            CliError::new(format!(
                "writing the accepted schemas to {}: {e}",
                args.locked.display()
            ))
        })?;
        println!(
            "accepted under {} into {}; new: {new}",
            args.compatibility,
            args.locked.display()
        );
    } else {
        println!(
            "compatible under {}: {} schema(s), new: {new}",
            args.compatibility,
            current.len()
        );
    }
    Ok(())
}
