//! `hub export mosquitto-acl`: the password and ACL files an external Mosquitto needs to
//! enforce the hub's module rules (`mc_hub::broker::mosquitto`).

use std::{
    io::Write as _,
    path::{Path, PathBuf},
};

use anyhow::Context;
use clap::Subcommand;
use mc_hub::broker::mosquitto::{self, HubAccount};
use serde::Serialize;

use crate::manage::{ManageArgs, open_existing_store, print_json};

#[derive(Subcommand)]
pub(crate) enum ExportCommand {
    /// Write Mosquitto's password file (`passwd`), ACL file (`acl`) and an example
    /// `mosquitto.conf` into DIR, from the registry. Each enabled module may publish only on
    /// its own topics and read only its own commands; the hub's user reads modules' topics
    /// and writes commands. Files are replaced atomically: send Mosquitto SIGHUP afterwards.
    MosquittoAcl {
        /// Directory to write into (created if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// The hub's MQTT username.
        #[arg(long, default_value = mc_hub::broker::external::DEFAULT_USERNAME)]
        hub_user: String,
        /// File whose first line is the hub's broker password, written hashed into `passwd`
        /// (HUB_BROKER_PASSWORD works too). Without either, add the hub's line yourself with
        /// `mosquitto_passwd`.
        #[arg(long, value_name = "FILE")]
        hub_password_file: Option<PathBuf>,
        /// Listener port of the example `mosquitto.conf`.
        #[arg(long, default_value_t = 1883)]
        port: u16,
        #[command(flatten)]
        manage: ManageArgs,
    },
}

/// What `--json` prints.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Exported {
    passwd: String,
    acl: String,
    config: String,
    modules: usize,
    missing_hash: Vec<String>,
    disabled: Vec<String>,
}

pub(crate) async fn export_command(command: ExportCommand) -> anyhow::Result<()> {
    let ExportCommand::MosquittoAcl {
        out,
        hub_user,
        hub_password_file,
        port,
        manage,
    } = command;
    let password = match (&hub_password_file, std::env::var("HUB_BROKER_PASSWORD")) {
        (Some(path), _) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?
                .lines()
                .next()
                .unwrap_or_default()
                .to_owned(),
        ),
        (None, Ok(p)) => Some(p),
        (None, Err(_)) => None,
    };
    if password.as_deref() == Some("") {
        anyhow::bail!("the hub's broker password is empty");
    }
    let store = open_existing_store(&manage).await?;
    let modules = store.modules().await.context("cannot read the registry")?;
    let export = mosquitto::export(
        &modules,
        &HubAccount {
            username: hub_user,
            password,
        },
    );
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let passwd = out.join("passwd");
    let acl = out.join("acl");
    let config = out.join("mosquitto.conf.example");
    write_atomically(&passwd, &export.passwd, 0o640)?;
    write_atomically(&acl, &export.acl, 0o644)?;
    let example = mosquitto::example_config(
        port,
        &absolute(&passwd).display().to_string(),
        &absolute(&acl).display().to_string(),
    );
    write_atomically(&config, &example, 0o644)?;
    if manage.json {
        return print_json(&Exported {
            passwd: passwd.display().to_string(),
            acl: acl.display().to_string(),
            config: config.display().to_string(),
            modules: export.exported,
            missing_hash: export.missing_hash,
            disabled: export.disabled,
        });
    }
    println!(
        "wrote {} and {} ({} modules) and {}",
        passwd.display(),
        acl.display(),
        export.exported,
        config.display()
    );
    if !export.disabled.is_empty() {
        println!("left out (disabled): {}", export.disabled.join(", "));
    }
    if !export.missing_hash.is_empty() {
        eprintln!(
            "left out: {} (their tokens predate Mosquitto export; rotate each with `hub module rotate-token ID`, then export again)",
            export.missing_hash.join(", ")
        );
    }
    println!("reload Mosquitto to apply: kill -HUP <mosquitto pid>");
    Ok(())
}

/// Writes `text` to a temporary file beside `path`, then renames it over `path`: Mosquitto
/// reloading at the same moment reads the old file or the new one, never half of one.
fn write_atomically(path: &Path, text: &str, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot replace {}", path.display()))?;
    Ok(())
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_owned())
}
