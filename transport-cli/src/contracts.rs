//! `transport contracts`: the compatibility gate over schema files.

use transport::contracts::gate;

use crate::cli::{ContractsArgs, ContractsCommand};
use crate::target::{CliError, CliResult};

pub fn run(args: ContractsArgs) -> CliResult {
    let locked = gate::read(&args.locked).map_err(|e| CliError::new(e.to_string()))?;
    let current = gate::read(&args.current).map_err(|e| CliError::new(e.to_string()))?;
    if current.is_empty() {
        return Err(CliError::new(format!(
            "no schemas in {} (a service writes them with Catalog::write: <type>/<major>.<minor>.schema.json)",
            args.current.display()
        )));
    }
    gate::verdict(&locked, &current, args.compatibility).map_err(|e| CliError::new(e.to_string().trim_end().to_owned()))?;
    let new: Vec<String> = current
        .keys()
        .filter(|k| !locked.contains_key(*k))
        .map(|(t, v)| format!("{t} {v}"))
        .collect();
    match args.command {
        ContractsCommand::Check => {
            println!(
                "compatible under {}: {} schema(s), new: {}",
                args.compatibility,
                current.len(),
                if new.is_empty() { "none".to_owned() } else { new.join(", ") }
            );
        }
        ContractsCommand::Lock => {
            gate::write(&args.locked, &current).map_err(|e| {
                CliError::new(format!("writing the accepted schemas to {}: {e}", args.locked.display()))
            })?;
            println!(
                "accepted under {} into {}: {}",
                args.compatibility,
                args.locked.display(),
                if new.is_empty() { "nothing new".to_owned() } else { new.join(", ") }
            );
        }
    }
    Ok(())
}
