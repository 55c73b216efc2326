//! `hub --demo`: demo users and simulated modules, so the dashboard is alive out of the box.
//!
//! Every start gives the demo users (`*@demo.local`) fresh passwords (printed) and the demo
//! modules (`DEMO-…`, type `demo`) fresh tokens, so a data directory can be reused without
//! anyone having to remember secrets. Other users and modules are never touched.

use std::net::SocketAddr;

use firmware_sim::{ModuleCredentials, SimConfig};
use mc_protocol::ModuleId;
use rand::RngCore;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    Config,
    store::{NewModule, NewUser, Store, StoreError},
};

/// Module type of the demo's simulated modules (and only those).
pub const DEMO_KIND: &str = "demo";
/// Demo login for the admin.
pub const ADMIN_EMAIL: &str = "admin@demo.local";
/// Demo login for a regular user who owns half of the modules.
pub const USER_EMAIL: &str = "ada@demo.local";

/// The demo's credentials, printed at start.
#[derive(Debug, Clone)]
pub struct DemoInfo {
    /// Admin password.
    pub admin_password: String,
    /// Regular user password.
    pub user_password: String,
    /// Simulated module ids.
    pub modules: Vec<ModuleId>,
}

fn random_password() -> String {
    let mut bytes = [0u8; 6];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

async fn ensure_user(
    store: &Store,
    email: &str,
    name: &str,
    admin: bool,
) -> Result<String, StoreError> {
    let password = random_password();
    match store.user_by_email(email).await? {
        Some(user) => store.set_password(user.id, &password).await?,
        None => {
            store
                .create_user(NewUser {
                    email: email.into(),
                    name: name.into(),
                    password: password.clone(),
                    is_admin: admin,
                })
                .await?;
        }
    }
    Ok(password)
}

const SITES: &[&str] = &[
    "Roof",
    "Greenhouse",
    "North field",
    "Barn",
    "River gauge",
    "Orchard",
];

/// Creates the demo users and modules and starts the simulated modules.
pub async fn start(
    config: &Config,
    store: &Store,
    mqtt_addr: SocketAddr,
    tasks: &TaskTracker,
    shutdown: &CancellationToken,
) -> anyhow::Result<DemoInfo> {
    use anyhow::Context;
    let admin_password = ensure_user(store, ADMIN_EMAIL, "Demo Admin", true)
        .await
        .context("demo admin")?;
    let user_password = ensure_user(store, USER_EMAIL, "Ada Lovelace", false)
        .await
        .context("demo user")?;
    let mut credentials = Vec::new();
    for i in 0..config.demo.modules {
        let id = ModuleId::new(&format!("DEMO-{}-STN", 1001 + i)).context("demo module id")?;
        let token = match store.module(&id).await? {
            // Only the demo's own modules get new tokens: never lock out a real device.
            Some(existing) if existing.kind == DEMO_KIND => store.rotate_module_token(&id).await?,
            Some(_) => anyhow::bail!(
                "module {id} exists and is not a demo module: use another --data-dir for the demo"
            ),
            None => {
                let owner = (i % 2 == 0).then(|| USER_EMAIL.to_owned());
                let name = format!("{} {}", SITES[i % SITES.len()], i / SITES.len() + 1);
                store
                    .create_module(NewModule {
                        id: id.clone(),
                        name,
                        kind: DEMO_KIND.into(),
                        owner_email: owner,
                        heartbeat_timeout: None,
                    })
                    .await?
                    .1
            }
        };
        credentials.push(ModuleCredentials {
            id,
            password: token,
        });
    }
    let modules = credentials.iter().map(|c| c.id.clone()).collect();
    let broker = if mqtt_addr.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], mqtt_addr.port()))
    } else {
        mqtt_addr
    };
    let sim_config = SimConfig {
        broker: broker.to_string(),
        ..SimConfig::default()
    };
    let simulation = firmware_sim::start(sim_config, credentials, shutdown.child_token());
    tasks.spawn(simulation.stopped());
    Ok(DemoInfo {
        admin_password,
        user_password,
        modules,
    })
}
