//! `hub user ...` and `hub module ...`: registry management against the hub's database, also
//! while hubs run (each running hub applies the changes: see `mc_hub::registry`).
//!
//! The database is chosen as `hub serve` chooses it: `--database` / `HUB_DATABASE`, else
//! `database` in the `--config` file, else SQLite in `--data-dir` (`HUB_DATA_DIR`, the file's
//! `data-dir`, `./hub-data`).

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context;
use clap::{Args, Subcommand};
use mc_hub::{
    Config,
    store::{Database, ModuleRecord, NewModule, NewUser, Store, User, UserPatch},
};
use mc_protocol::ModuleId;
use serde::Serialize;

/// What every management command takes: where the database is, and how to answer.
#[derive(Args)]
pub(crate) struct ManageArgs {
    /// Data directory [default: ./hub-data].
    #[arg(long, env = "HUB_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Database URL: `postgres://user:password@host:port/db` or `sqlite://PATH` [default:
    /// SQLite at <data-dir>/hub.db].
    #[arg(long, env = "HUB_DATABASE", value_name = "URL")]
    database: Option<String>,
    /// The hub's TOML configuration file, for its `database` and `data-dir`.
    #[arg(long, env = "HUB_CONFIG")]
    config: Option<PathBuf>,
    /// Print one JSON document on stdout (for scripts) instead of text.
    #[arg(long)]
    pub(crate) json: bool,
}

/// A new password: on the command line, or (kept out of `ps` and shell history) on stdin.
#[derive(Args)]
#[group(required = true, multiple = false)]
pub(crate) struct PasswordArg {
    /// The password.
    #[arg(long)]
    password: Option<String>,
    /// Read the password from the first line of stdin.
    #[arg(long)]
    password_stdin: bool,
}

#[derive(Subcommand)]
pub(crate) enum UserCommand {
    /// List every user.
    List {
        #[command(flatten)]
        manage: ManageArgs,
    },
    /// Create a user.
    Add {
        #[arg(long)]
        email: String,
        #[arg(long)]
        name: String,
        #[command(flatten)]
        password: PasswordArg,
        /// Make the user an admin.
        #[arg(long)]
        admin: bool,
        #[command(flatten)]
        manage: ManageArgs,
    },
    /// Replace a user's password.
    SetPassword {
        /// The user's email (case-insensitive).
        #[arg(long)]
        email: String,
        #[command(flatten)]
        password: PasswordArg,
        #[command(flatten)]
        manage: ManageArgs,
    },
    /// Stop a user from logging in and end their sessions.
    Disable {
        /// The user's email (case-insensitive).
        #[arg(long)]
        email: String,
        #[command(flatten)]
        manage: ManageArgs,
    },
    /// Delete a user; their modules lose their owner (admins only see them).
    Delete {
        /// The user's email (case-insensitive).
        #[arg(long)]
        email: String,
        #[command(flatten)]
        manage: ManageArgs,
    },
}

#[derive(Subcommand)]
pub(crate) enum ModuleCommand {
    /// List every registered module.
    List {
        #[command(flatten)]
        manage: ManageArgs,
    },
    /// Register a module; prints its MQTT password on the last line.
    Add {
        /// Module id, e.g. MC-1001-STN.
        id: String,
        #[arg(long)]
        name: String,
        #[arg(long = "type", default_value = "station")]
        kind: String,
        /// Email of the owning user.
        #[arg(long)]
        owner: Option<String>,
        /// Liveness timeout for this module (e.g. `30s`), overriding the hub's.
        #[arg(long, value_parser = humantime::parse_duration)]
        heartbeat_timeout: Option<Duration>,
        #[command(flatten)]
        manage: ManageArgs,
    },
    /// Unregister a module; it can no longer connect.
    Remove {
        /// Module id, e.g. MC-1001-STN.
        id: String,
        #[command(flatten)]
        manage: ManageArgs,
    },
    /// Give a module a new MQTT password, printed on the last line; the old one stops working.
    RotateToken {
        /// Module id, e.g. MC-1001-STN.
        id: String,
        #[command(flatten)]
        manage: ManageArgs,
    },
}

#[derive(Subcommand)]
pub(crate) enum DbCommand {
    /// Check the database, read-only (safe next to running hubs or after a crash): SQLite's
    /// integrity_check and foreign_key_check; on PostgreSQL, the connection, the applied
    /// migrations against this hub's, and rows whose references dangle. Exit status 0 when all
    /// pass, 1 otherwise.
    Check {
        #[command(flatten)]
        manage: ManageArgs,
    },
}

/// What `--json` prints, one document per command; field names follow the HTTP API.
mod output {
    use mc_hub::store::ModuleRecord;
    use serde::Serialize;

    /// A user (`user list` prints an array of these): the same shape as `GET /api/users`.
    pub use mc_hub::web::users::UserView;

    /// `db check`: `integrity` is SQLite's answer (`["ok"]` when sound).
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    pub struct DbCheck {
        pub ok: bool,
        pub integrity: Vec<String>,
        pub foreign_keys: Vec<String>,
    }

    /// A registered module (`module list` prints an array of these).
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    pub struct ModuleView {
        pub module_id: String,
        pub name: String,
        #[serde(rename = "type")]
        pub kind: String,
        pub owner_id: Option<i64>,
        /// `None`: the hub's timeout applies.
        pub heartbeat_timeout_ms: Option<u64>,
    }

    impl From<ModuleRecord> for ModuleView {
        fn from(m: ModuleRecord) -> Self {
            Self {
                module_id: m.id.to_string(),
                name: m.name,
                kind: m.kind,
                owner_id: m.owner_id,
                heartbeat_timeout_ms: m.heartbeat_timeout_ms,
            }
        }
    }

    /// `user add`, `set-password`, `disable`, `delete`: the user as it is now (or was, when
    /// deleted).
    #[derive(Serialize)]
    pub struct UserChanged {
        pub ok: bool,
        pub user: UserView,
    }

    /// `module add`: the module and its MQTT password, shown only this once.
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    pub struct ModuleCreated {
        pub module_id: String,
        pub name: String,
        #[serde(rename = "type")]
        pub kind: String,
        pub owner_id: Option<i64>,
        pub password: String,
    }

    /// `module rotate-token`: the new MQTT password, shown only this once.
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    pub struct TokenRotated {
        pub module_id: String,
        pub password: String,
    }

    /// `module remove`.
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    pub struct ModuleRemoved {
        pub ok: bool,
        pub module_id: String,
    }
}

impl ManageArgs {
    /// The database `hub serve` would use with the same flags, environment and file.
    fn database(&self) -> anyhow::Result<Database> {
        let mut config = match &self.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        if let Some(dir) = &self.data_dir {
            config.data_dir = dir.clone();
        }
        if let Some(database) = &self.database {
            config.database = Some(parse_database(database)?);
        }
        Ok(config.database())
    }
}

/// `--database`/`HUB_DATABASE`, parsed here rather than by clap: clap's error would repeat
/// the value, password included, on stderr (and into the service's log).
pub(crate) fn parse_database(url: &str) -> anyhow::Result<Database> {
    url.parse()
        .map_err(|e| anyhow::anyhow!("invalid --database (HUB_DATABASE): {e}"))
}

/// Opens the store for a command that creates things: a fresh SQLite file is fine (set up
/// users and modules before the first `serve`), and so is an empty PostgreSQL database.
async fn open_store(manage: &ManageArgs) -> anyhow::Result<Store> {
    let database = manage.database()?;
    if let Database::Sqlite(path) = &database {
        let dir = sqlite_dir(path);
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create data directory {}", dir.display()))?;
        check_writable(dir)?;
    }
    connect(&database).await
}

async fn connect(database: &Database) -> anyhow::Result<Store> {
    Store::connect(database, Config::default().session_ttl)
        .await
        .with_context(|| format!("cannot open the hub database {database}"))
}

/// The directory of a SQLite file (its WAL and shared-memory files live there too).
fn sqlite_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// SQLite says only "unable to open database file" about a read-only directory (its WAL and
/// shared-memory files live there): name the real problem first.
fn check_writable(data_dir: &Path) -> anyhow::Result<()> {
    let probe = data_dir.join(".write-test");
    std::fs::write(&probe, b"ok")
        .with_context(|| format!("data directory {} is not writable", data_dir.display()))?;
    let _ = std::fs::remove_file(probe);
    Ok(())
}

/// Opens the store for a command that reads or changes what exists: a mistyped `--data-dir`
/// fails instead of quietly creating an empty database. (A PostgreSQL database must exist
/// anyway: a mistyped name fails to connect.)
pub(crate) async fn open_existing_store(manage: &ManageArgs) -> anyhow::Result<Store> {
    let database = manage.database()?;
    if let Database::Sqlite(db) = &database {
        if !db.is_file() {
            anyhow::bail!(
                "no hub database at {} (check --data-dir, HUB_DATA_DIR or --database)",
                db.display()
            );
        }
        check_writable(sqlite_dir(db))?;
    }
    connect(&database).await
}

pub(crate) fn print_json(value: &impl Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string(value)?);
    Ok(())
}

impl PasswordArg {
    /// The password, from the flag or the first line of stdin; never empty.
    fn read(self) -> anyhow::Result<String> {
        let password = match self.password {
            Some(p) => p,
            None => {
                let mut line = String::new();
                std::io::stdin()
                    .read_line(&mut line)
                    .context("cannot read the password from stdin")?;
                let end = line.trim_end_matches(['\n', '\r']).len();
                line.truncate(end);
                line
            }
        };
        if password.is_empty() {
            anyhow::bail!("the password must not be empty");
        }
        Ok(password)
    }
}

fn parse_module_id(id: &str) -> anyhow::Result<ModuleId> {
    id.parse()
        .map_err(|e| anyhow::anyhow!("module id {id:?}: {e}"))
}

async fn existing_user(store: &Store, email: &str) -> anyhow::Result<User> {
    store
        .user_by_email(email)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no user with email {email}"))
}

async fn existing_module(store: &Store, id: &ModuleId) -> anyhow::Result<ModuleRecord> {
    store
        .module(id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no module {id}"))
}

/// Prints rows as left-aligned columns under `header`.
fn print_table<const N: usize>(header: [&str; N], rows: &[[String; N]]) {
    let mut widths = header.map(str::len);
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; N]| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == N {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        println!("{}", out.trim_end());
    };
    line(header);
    for row in rows {
        line(std::array::from_fn(|i| row[i].as_str()));
    }
}

pub(crate) async fn user_command(command: UserCommand) -> anyhow::Result<()> {
    match command {
        UserCommand::List { manage } => {
            let store = open_existing_store(&manage).await?;
            let users = store.users().await?;
            if manage.json {
                let users: Vec<output::UserView> = users.into_iter().map(Into::into).collect();
                return print_json(&users);
            }
            let rows: Vec<[String; 5]> = users
                .into_iter()
                .map(|u| {
                    [
                        u.id.to_string(),
                        u.email,
                        u.name,
                        if u.is_admin { "admin" } else { "user" }.into(),
                        if u.disabled { "disabled" } else { "active" }.into(),
                    ]
                })
                .collect();
            print_table(["ID", "EMAIL", "NAME", "ROLE", "STATUS"], &rows);
        }
        UserCommand::Add {
            email,
            name,
            password,
            admin,
            manage,
        } => {
            let password = password.read()?;
            let store = open_store(&manage).await?;
            let user = store
                .create_user(NewUser {
                    email,
                    name,
                    password,
                    is_admin: admin,
                })
                .await?;
            if manage.json {
                return print_json(&output::UserChanged {
                    ok: true,
                    user: user.into(),
                });
            }
            println!(
                "created user {} ({}){}",
                user.id,
                user.email,
                if admin { " [admin]" } else { "" }
            );
        }
        UserCommand::SetPassword {
            email,
            password,
            manage,
        } => {
            let password = password.read()?;
            let store = open_existing_store(&manage).await?;
            let user = existing_user(&store, &email).await?;
            store.set_password(user.id, &password).await?;
            if manage.json {
                return print_json(&output::UserChanged {
                    ok: true,
                    user: user.into(),
                });
            }
            println!("set the password of user {} ({})", user.id, user.email);
        }
        UserCommand::Disable { email, manage } => {
            let store = open_existing_store(&manage).await?;
            let user = existing_user(&store, &email).await?;
            let patch = UserPatch {
                disabled: Some(true),
                ..UserPatch::default()
            };
            let user = store
                .update_user(user.id, patch)
                .await?
                .ok_or_else(|| anyhow::anyhow!("no user with email {email}"))?;
            if manage.json {
                return print_json(&output::UserChanged {
                    ok: true,
                    user: user.into(),
                });
            }
            println!(
                "disabled user {} ({}); their sessions are ended",
                user.id, user.email
            );
        }
        UserCommand::Delete { email, manage } => {
            let store = open_existing_store(&manage).await?;
            let user = existing_user(&store, &email).await?;
            let owned = store
                .modules()
                .await?
                .iter()
                .filter(|m| m.owner_id == Some(user.id))
                .count();
            if !store.delete_user(user.id).await? {
                anyhow::bail!("no user with email {email}");
            }
            if manage.json {
                return print_json(&output::UserChanged {
                    ok: true,
                    user: user.into(),
                });
            }
            println!("deleted user {} ({})", user.id, user.email);
            if owned > 0 {
                println!("{owned} module(s) they owned now have no owner (admins only)");
            }
        }
    }
    Ok(())
}

pub(crate) async fn module_command(command: ModuleCommand) -> anyhow::Result<()> {
    match command {
        ModuleCommand::List { manage } => {
            let store = open_existing_store(&manage).await?;
            let modules = store.modules().await?;
            if manage.json {
                let modules: Vec<output::ModuleView> =
                    modules.into_iter().map(Into::into).collect();
                return print_json(&modules);
            }
            let emails: HashMap<i64, String> = store
                .users()
                .await?
                .into_iter()
                .map(|u| (u.id, u.email))
                .collect();
            let rows: Vec<[String; 5]> = modules
                .into_iter()
                .map(|m| {
                    let owner = m
                        .owner_id
                        .map(|id| emails.get(&id).cloned().unwrap_or_else(|| id.to_string()));
                    let timeout = m.heartbeat_timeout_ms.map(|ms| {
                        humantime::format_duration(Duration::from_millis(ms)).to_string()
                    });
                    [
                        m.id.to_string(),
                        m.name,
                        m.kind,
                        owner.unwrap_or_else(|| "-".into()),
                        timeout.unwrap_or_else(|| "hub default".into()),
                    ]
                })
                .collect();
            print_table(
                ["MODULE", "NAME", "TYPE", "OWNER", "HEARTBEAT TIMEOUT"],
                &rows,
            );
        }
        ModuleCommand::Add {
            id,
            name,
            kind,
            owner,
            heartbeat_timeout,
            manage,
        } => {
            let id = parse_module_id(&id)?;
            use mc_hub::liveness::{MAX_TIMEOUT, MIN_TIMEOUT};
            if let Some(t) = heartbeat_timeout
                && !(MIN_TIMEOUT..=MAX_TIMEOUT).contains(&t)
            {
                anyhow::bail!(
                    "--heartbeat-timeout {}: must be between {} and {}",
                    humantime::format_duration(t),
                    humantime::format_duration(MIN_TIMEOUT),
                    humantime::format_duration(MAX_TIMEOUT)
                );
            }
            let store = open_store(&manage).await?;
            if let Some(email) = &owner {
                existing_user(&store, email).await.context("--owner")?;
            }
            let (module, token) = store
                .create_module(NewModule {
                    id,
                    name,
                    kind,
                    owner_email: owner,
                    heartbeat_timeout,
                })
                .await?;
            if manage.json {
                return print_json(&output::ModuleCreated {
                    module_id: module.id.to_string(),
                    name: module.name,
                    kind: module.kind,
                    owner_id: module.owner_id,
                    password: token,
                });
            }
            println!("registered module {} ({})", module.id, module.name);
            // Last line: scripts take the password with `tail -1`.
            println!("{token}");
        }
        ModuleCommand::Remove { id, manage } => {
            let id = parse_module_id(&id)?;
            let store = open_existing_store(&manage).await?;
            if !store.delete_module(&id).await? {
                anyhow::bail!("no module {id}");
            }
            if manage.json {
                return print_json(&output::ModuleRemoved {
                    ok: true,
                    module_id: id.to_string(),
                });
            }
            println!("removed module {id}");
        }
        ModuleCommand::RotateToken { id, manage } => {
            let id = parse_module_id(&id)?;
            let store = open_existing_store(&manage).await?;
            // The store's rotation does not tell whether the module exists.
            existing_module(&store, &id).await?;
            let token = store.rotate_module_token(&id).await?;
            if manage.json {
                return print_json(&output::TokenRotated {
                    module_id: id.to_string(),
                    password: token,
                });
            }
            println!("new MQTT password for module {id}; the old one no longer works");
            // Last line: scripts take the password with `tail -1`.
            println!("{token}");
        }
    }
    Ok(())
}

pub(crate) async fn db_command(command: DbCommand) -> anyhow::Result<()> {
    match command {
        DbCommand::Check { manage } => {
            let database = manage.database()?;
            if let Database::Sqlite(db) = &database
                && !db.is_file()
            {
                anyhow::bail!(
                    "no hub database at {} (check --data-dir, HUB_DATA_DIR or --database)",
                    db.display()
                );
            }
            let report = mc_hub::store::check_store(&database)
                .await
                .with_context(|| format!("cannot check {database}"))?;
            let ok = report.is_ok();
            if manage.json {
                print_json(&output::DbCheck {
                    ok,
                    integrity: report.integrity,
                    foreign_keys: report.foreign_keys,
                })?;
            } else {
                for line in report.integrity.iter().chain(&report.foreign_keys) {
                    println!("{line}");
                }
            }
            if !ok {
                anyhow::bail!("database check failed: {database}");
            }
            Ok(())
        }
    }
}
