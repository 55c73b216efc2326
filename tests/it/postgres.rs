//! Several hubs on one PostgreSQL database (what PostgreSQL is for): they start at once
//! without their migrations clashing, share accounts and sessions, and each applies the
//! registry changes the other makes (events, revoked tokens, disabled users). Always on
//! PostgreSQL, whatever `MC_TEST_DATABASE` says.

use mc_e2e::{MqttModule, about, start_hub};
use mc_hub::store::postgres_server::PostgresServer;
use serde_json::json;

use crate::process::hub_binary;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hubs_on_one_postgres_database_share_the_registry() {
    let database = PostgresServer::fresh_database().await;
    // Both start (and migrate) at once.
    let (a, b) = tokio::join!(
        start_hub(|c| c.database = Some(database.clone())),
        start_hub(|c| c.database = Some(database.clone())),
    );
    a.add_user("admin@x.io", true).await;
    let alice_id = a.add_user("alice@x.io", false).await;

    // Accounts and sessions are shared: a session opened on A works on B.
    let admin_on_a = a.login("admin@x.io").await;
    let (status, me) = b.call(&admin_on_a, "GET", "/api/auth/me", None).await;
    assert_eq!(status, 200, "{me}");
    let mut admin_on_b = b.dashboard("admin@x.io").await;
    let mut alice_on_b = b.dashboard("alice@x.io").await;
    let mut alice_on_a = a.dashboard("alice@x.io").await;

    // A module registered through A: B's watcher emits it to B's dashboards.
    let (status, created) = a
        .call(
            &admin_on_a,
            "POST",
            "/api/modules",
            Some(json!({"id": "MC-PG-1", "name": "Shared", "ownerId": alice_id})),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let password = created["password"].as_str().expect("password").to_owned();
    let added = alice_on_b.expect("rt_module_added", about("MC-PG-1")).await;
    assert_eq!(added["userId"], alice_id);
    admin_on_b.expect("rt_module_added", about("MC-PG-1")).await;
    // The same id through B: taken (409, as on one hub).
    let admin_on_b_cookie = b.login("admin@x.io").await;
    let (status, _) = b
        .call(
            &admin_on_b_cookie,
            "POST",
            "/api/modules",
            Some(json!({"id": "MC-PG-1", "name": "Again"})),
        )
        .await;
    assert_eq!(status, 409);

    // The module connects to B; its token rotated through A closes that connection on B.
    let module = b.module("MC-PG-1", &password).await;
    module.hello(5000).await;
    alice_on_b
        .expect("rt_module_online", about("MC-PG-1"))
        .await;
    let (status, rotated) = a
        .call(&admin_on_a, "POST", "/api/modules/MC-PG-1/token", None)
        .await;
    assert_eq!(status, 200, "{rotated}");
    mc_e2e::eventually("B closes the connection of the rotated module", || {
        module.is_closed()
    })
    .await;
    alice_on_b
        .expect("rt_module_offline", about("MC-PG-1"))
        .await;
    let new_password = rotated["password"].as_str().expect("password");
    assert!(
        MqttModule::connect(b.hub.mqtt_addr, "MC-PG-1", &password)
            .await
            .is_err(),
        "the old token is refused"
    );
    b.module("MC-PG-1", new_password).await.disconnect().await;

    // Alice disabled through B: her socket on A is closed, her session ends everywhere.
    let alice_cookie = a.login("alice@x.io").await;
    let (status, _) = b
        .call(
            &admin_on_b_cookie,
            "PATCH",
            &format!("/api/users/{alice_id}"),
            Some(json!({"disabled": true})),
        )
        .await;
    assert_eq!(status, 200);
    alice_on_a.expect("close", |_| true).await;
    let (status, _) = a.call(&alice_cookie, "GET", "/api/auth/me", None).await;
    assert_eq!(status, 401);

    // Removed through B: A's admins hear it.
    let mut admin_on_a_dash = a.dashboard("admin@x.io").await;
    let (status, _) = b
        .call(&admin_on_b_cookie, "DELETE", "/api/modules/MC-PG-1", None)
        .await;
    assert_eq!(status, 204);
    admin_on_a_dash
        .expect("rt_module_removed", about("MC-PG-1"))
        .await;
}

/// The `hub` CLI finds the database as `hub serve` does (`--database`, `HUB_DATABASE`, the
/// config file's `database`), and `hub db check` checks a PostgreSQL database: 0 when sound,
/// 1 with the findings for a database without the hub's schema.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_uses_the_configured_postgres_database_and_checks_it() {
    let database = PostgresServer::fresh_database().await;
    let url = database
        .postgres_url()
        .expect("a PostgreSQL URL")
        .to_owned();
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("hub.toml");
    std::fs::write(&config, format!("database = \"{url}\"\n")).expect("config file");
    let data_dir = dir.path().join("not-used");
    let cli = |args: &[&str], env: Option<(&str, &str)>| {
        let mut command = tokio::process::Command::new(hub_binary());
        command
            .args(args)
            .arg("--data-dir")
            .arg(&data_dir)
            .env_remove("HUB_DATABASE")
            .env_remove("HUB_CONFIG")
            .kill_on_drop(true);
        if let Some((k, v)) = env {
            command.env(k, v);
        }
        async move { command.output().await.expect("hub CLI runs") }
    };
    let config_arg = config.to_str().expect("utf-8 path");

    let add = ["user", "add", "--email", "ada@x.io", "--name", "Ada"];
    let out = cli(
        &[&add[..], &["--password", "pw", "--config", config_arg]].concat(),
        None,
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    let out = cli(&["user", "list", "--json"], Some(("HUB_DATABASE", &url))).await;
    assert!(out.status.success(), "{out:?}");
    let users: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(users[0]["email"], "ada@x.io", "{users}");
    let out = cli(&["db", "check", "--json", "--database", &url], None).await;
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        (out.status.code(), &report),
        (
            Some(0),
            &json!({"ok": true, "integrity": ["ok"], "foreignKeys": []})
        )
    );
    assert!(!data_dir.exists(), "no SQLite database was created");

    // A bad or unreachable URL is an error that never repeats the password.
    for bad in [
        "postgres://hub:s3cret@127.0.0.1:port/db",
        "postgres://hub:s3cret@127.0.0.1:1/db",
    ] {
        let out = cli(&["user", "list"], Some(("HUB_DATABASE", bad))).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.starts_with("error: "), "{stderr}");
        assert!(!stderr.contains("s3cret"), "{stderr}");
    }

    let empty = PostgresServer::fresh_database().await;
    let empty_url = empty.postgres_url().expect("a PostgreSQL URL");
    let out = cli(&["db", "check", "--database", empty_url], None).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("no hub schema"), "{stdout}");
}
