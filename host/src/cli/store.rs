//! `itsm store check`: read every record of a server's store and verify
//! every ticket's trail, offline, with the server stopped.

use std::path::PathBuf;

use clap::Subcommand;

use super::Exit;
use crate::store::Damage;

#[derive(Debug, Subcommand)]
pub(crate) enum StoreCommand {
    /// Read every record (checksums, decoding, keys against contents) and
    /// verify every ticket's hash chain. Exit 0 when all is whole, 1 when
    /// anything is damaged (each problem is listed).
    Check {
        /// The server's home (default: as `itsm serve`).
        #[arg(long)]
        home: Option<PathBuf>,
        /// The server's store, when not the home's embedded one: its
        /// PostgreSQL URL (as `itsm serve --store`).
        #[arg(long = "store", env = "ITSM_STORE", value_name = "URL")]
        location: Option<String>,
    },
}

pub(crate) fn run(cmd: StoreCommand) -> Result<(), Exit> {
    let StoreCommand::Check { home, location } = cmd;
    let home = home.unwrap_or_else(super::data_dir);
    let dir = home.join("data");
    if location.is_none() && !dir.join("db").is_file() {
        return Err(Exit::Usage(format!("no store at {}", dir.display())));
    }
    let store = crate::store::open(
        location.as_deref(),
        &dir,
        0,
        crate::store::LeaseConfig::default(),
    )
    .map_err(|e| {
        let text = e.to_string();
        if text.contains("lock") {
            Exit::Refused(format!(
                "{text} (is `itsm serve` running on this home? stop it first)"
            ))
        } else {
            Exit::Refused(text)
        }
    })?;
    let place = match &location {
        Some(_) => "the database given by --store".to_string(),
        None => dir.display().to_string(),
    };
    let checked = store.check().map_err(|e| Exit::Refused(e.to_string()))?;
    let mut damage = checked.damage;
    let mut trails = 0;
    for t in &checked.tickets {
        // A trail that does not read back is listed with its damaged record.
        if let Ok(events) = store.events(&t.id) {
            trails += 1;
            if let Err(b) = crate::audit::verify(&t.id, &events, &t.head) {
                damage.push(Damage {
                    key: format!("a/{}/", t.id),
                    problem: format!(
                        "the trail of {} is broken at event {}: {}",
                        t.id, b.seq, b.reason
                    ),
                });
            }
        }
    }
    // Completeness: everything the checkpoint saw acknowledged is here.
    let cp_path = home.join(super::serve::CHECKPOINT_FILE);
    let mut compared = String::new();
    if cp_path.is_file() {
        let cp = crate::store::checkpoint::Checkpoint::open(&cp_path)
            .map_err(|e| Exit::Refused(e.to_string()))?;
        let heads = cp.heads();
        for problem in crate::store::checkpoint::shortfall(&heads, store.as_ref())
            .map_err(|e| Exit::Refused(e.to_string()))?
        {
            damage.push(Damage {
                key: cp_path.display().to_string(),
                problem,
            });
        }
        compared = format!("; compared {} tickets with the checkpoint", heads.len());
    }
    // And with the witness a shared store keeps of itself.
    if let Some(w) = store.witness() {
        for problem in w.shortfall().map_err(|e| Exit::Refused(e.to_string()))? {
            damage.push(Damage {
                key: "itsm.witness".into(),
                problem,
            });
        }
        compared += "; compared the tickets with the database's witness";
    }
    println!(
        "read {} records of {}; verified {trails} of {} trails{compared}",
        checked.records,
        place,
        checked.tickets.len(),
    );
    if damage.is_empty() {
        println!("ok: nothing damaged");
        return Ok(());
    }
    for d in &damage {
        println!("damaged: {}", d.problem);
    }
    Err(Exit::Refused(format!(
        "{} damaged records or trails in {}; restore {} from a backup",
        damage.len(),
        place,
        if location.is_some() { "it" } else { "data/" }
    )))
}
