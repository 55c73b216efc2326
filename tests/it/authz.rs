//! Authorization, proven on random worlds: users (some admins), modules (owned by someone or
//! nobody). Every socket must receive exactly the module events it is entitled to (its owner's
//! and, for admins, all), and every REST endpoint must refuse what it must, answering an
//! invisible module exactly like a missing one (no existence leak).

use std::collections::BTreeSet;

use mc_e2e::{Dashboard, MqttModule, TestHub, start_hub};
use proptest::prelude::*;
use serde_json::json;

#[derive(Debug, Clone)]
struct World {
    /// Admin flag per user.
    admins: Vec<bool>,
    /// Owner (index into users) per module, or none.
    owners: Vec<Option<usize>>,
}

fn worlds() -> impl Strategy<Value = World> {
    (1usize..=4)
        .prop_flat_map(|users| {
            (
                proptest::collection::vec(any::<bool>(), users),
                proptest::collection::vec(proptest::option::of(0..users), 1..=5),
            )
        })
        .prop_map(|(admins, owners)| World { admins, owners })
}

fn email(u: usize) -> String {
    format!("user{u}@x.io")
}

fn module_id(m: usize) -> String {
    format!("MC-{}-P", 1000 + m)
}

/// Module ids user `u` may see.
fn entitled(world: &World, u: usize) -> BTreeSet<String> {
    (0..world.owners.len())
        .filter(|&m| world.admins[u] || world.owners[m] == Some(u))
        .map(module_id)
        .collect()
}

async fn check(world: World) {
    let t = start_hub(|c| c.realtime.enable_stats = false).await;
    // The observer admin tells when every module event has been emitted.
    t.add_user("observer@x.io", true).await;
    for (u, admin) in world.admins.iter().enumerate() {
        t.add_user(&email(u), *admin).await;
    }
    let mut passwords = Vec::new();
    for (m, owner) in world.owners.iter().enumerate() {
        passwords.push(
            t.add_module(&module_id(m), owner.map(email).as_deref())
                .await,
        );
    }
    let mut observer = t.dashboard("observer@x.io").await;
    let mut sockets = Vec::new();
    let mut cookies = Vec::new();
    for u in 0..world.admins.len() {
        let cookie = t.login(&email(u)).await;
        sockets.push(
            Dashboard::connect(&t.url, Some(&cookie), "modules")
                .await
                .expect("connects"),
        );
        cookies.push(cookie);
    }

    // Every module speaks; wait until the observer has all of it.
    let mut modules = Vec::new();
    for (m, password) in passwords.iter().enumerate() {
        let module = t.module(&module_id(m), password).await;
        module.hello(5000).await;
        module.telemetry(1, json!({"t": m as f32})).await;
        modules.push(module);
    }
    let mut pending: BTreeSet<String> = (0..world.owners.len()).map(module_id).collect();
    while !pending.is_empty() {
        let (event, data) = observer.next().await;
        if event == "rt_telemetry_updated" {
            pending.remove(data["moduleId"].as_str().unwrap_or_default());
        }
    }

    // A barrier module per user, owned by them, speaks last: each socket's view up to it is
    // complete.
    let mut barriers = Vec::new();
    for u in 0..world.admins.len() {
        let id = format!("BARRIER-{u}");
        let password = t.add_module(&id, Some(&email(u))).await;
        let barrier = MqttModule::connect(t.hub.mqtt_addr, &id, &password)
            .await
            .expect("barrier");
        barrier.hello(5000).await;
        barrier.telemetry(1, json!({"b": 1.0})).await;
        barriers.push(barrier);
    }
    for (u, socket) in sockets.iter_mut().enumerate() {
        let barrier = format!("BARRIER-{u}");
        let seen = socket
            .until("rt_telemetry_updated", |d| {
                d["moduleId"] == barrier.as_str()
            })
            .await;
        let got: BTreeSet<String> = seen
            .iter()
            .filter(|(e, _)| e.starts_with("rt_module_") || e == "rt_telemetry_updated")
            .filter_map(|(_, d)| d["moduleId"].as_str().map(str::to_owned))
            .filter(|id| !id.starts_with("BARRIER-"))
            .collect();
        assert_eq!(got, entitled(&world, u), "user {u} in {world:?}");
    }

    check_rest(&t, &world, &cookies).await;
    drop((modules, barriers));
}

async fn check_rest(t: &TestHub, world: &World, cookies: &[String]) {
    for (u, cookie) in cookies.iter().enumerate() {
        let visible = entitled(world, u);
        let (status, list) = t.call(cookie, "GET", "/api/modules", None).await;
        assert_eq!(status, 200);
        let listed: BTreeSet<String> = list["modules"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m["moduleId"].as_str().map(str::to_owned))
            .filter(|id| !id.starts_with("BARRIER-"))
            .collect();
        assert_eq!(listed, visible, "GET /api/modules for user {u}");
        let (_, missing) = t
            .call(cookie, "PATCH", "/api/modules/MC-9999-P", Some(json!({})))
            .await;
        for m in 0..world.owners.len() {
            let id = module_id(m);
            let (status, body) = t
                .call(
                    cookie,
                    "PATCH",
                    &format!("/api/modules/{id}"),
                    Some(json!({})),
                )
                .await;
            if visible.contains(&id) {
                assert_eq!(status, 200, "user {u} manages {id}");
            } else {
                assert_eq!(
                    (status, &body),
                    (404, &missing),
                    "user {u} must not learn of {id}"
                );
            }
            let (status, _) = t
                .call(
                    cookie,
                    "POST",
                    &format!("/api/modules/{id}/commands"),
                    Some(json!({"action": "resendState"})),
                )
                .await;
            assert_eq!(
                status,
                if visible.contains(&id) { 202 } else { 404 },
                "command by {u} to {id}"
            );
        }
        let (status, _) = t.call(cookie, "GET", "/api/users", None).await;
        assert_eq!(status, if world.admins[u] { 200 } else { 403 });
    }
    assert_eq!(t.call("", "GET", "/api/modules", None).await.0, 401);
    assert_eq!(
        t.call(
            "mc_session=forged",
            "PATCH",
            "/api/modules/MC-1000-P",
            Some(json!({}))
        )
        .await
        .0,
        401
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6, failure_persistence: None, ..ProptestConfig::default() })]
    #[test]
    fn every_socket_and_endpoint_sees_exactly_what_it_may(world in worlds()) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(check(world));
    }
}
