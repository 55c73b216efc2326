//! Global stats for admins: pushed when they change, on demand over HTTP, and switchable off.

use mc_e2e::{about, start_hub};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_get_stats_pushed_when_they_change_users_never() {
    let t = start_hub(|c| c.realtime.stats_interval = std::time::Duration::from_millis(200)).await;
    t.add_user("admin@x.io", true).await;
    t.add_user("alice@x.io", false).await;
    let pw = t.add_module("MC-A-1", Some("alice@x.io")).await;
    let mut admin = t.dashboard("admin@x.io").await;
    let mut alice = t.dashboard("alice@x.io").await;

    let first = admin
        .expect("rt_global_stats_updated", |d| {
            d["stats"]["connectedClients"] == 2
        })
        .await;
    let stats = &first["stats"];
    assert_eq!(
        (stats["totalUsers"].clone(), stats["totalModules"].clone()),
        (json!(2), json!(1))
    );
    assert_eq!(stats["activeUsers"], 2);
    let m = t.module("MC-A-1", &pw).await;
    m.hello(5000).await;
    admin
        .expect("rt_global_stats_updated", |d| {
            d["stats"]["onlineModules"] == 1
        })
        .await;
    // Alice's barrier: her module's event; no stats before it.
    let seen = alice.until("rt_module_online", about("MC-A-1")).await;
    assert!(
        !seen.iter().any(|(e, _)| e == "rt_global_stats_updated"),
        "{seen:?}"
    );

    let admin_cookie = t.login("admin@x.io").await;
    let (status, now) = t.call(&admin_cookie, "GET", "/api/admin/stats", None).await;
    assert_eq!(status, 200);
    assert_eq!(now["onlineModules"], 1);
    assert!(now["messagesPerSecond"].is_number() && now["eventsPerSecond"].is_number());
    let alice_cookie = t.login("alice@x.io").await;
    assert_eq!(
        t.call(&alice_cookie, "GET", "/api/admin/stats", None)
            .await
            .0,
        403
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_can_be_switched_off() {
    let t = start_hub(|c| {
        c.realtime.enable_stats = false;
        c.realtime.stats_interval = std::time::Duration::from_millis(100);
    })
    .await;
    t.add_user("admin@x.io", true).await;
    let pw = t.add_module("MC-1", None).await;
    let mut admin = t.dashboard("admin@x.io").await;
    // Several intervals pass; then a barrier event.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let m = t.module("MC-1", &pw).await;
    m.hello(5000).await;
    let seen = admin.until("rt_module_online", about("MC-1")).await;
    assert!(
        !seen.iter().any(|(e, _)| e == "rt_global_stats_updated"),
        "{seen:?}"
    );
}
