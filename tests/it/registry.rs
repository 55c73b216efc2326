//! The module registry over HTTP: who may do what, the events it emits, and its effect on live
//! MQTT connections.

use mc_e2e::{MqttModule, about, start_hub};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owners_and_admins_manage_modules_with_events_and_live_effects() {
    let t = start_hub(|_| {}).await;
    t.add_user("admin@x.io", true).await;
    let alice_id = t.add_user("alice@x.io", false).await;
    let bob_id = t.add_user("bob@x.io", false).await;
    let (alice, bob, admin) = (
        t.login("alice@x.io").await,
        t.login("bob@x.io").await,
        t.login("admin@x.io").await,
    );
    let mut alice_dash = t.dashboard("alice@x.io").await;
    let mut bob_dash = t.dashboard("bob@x.io").await;
    let mut admin_dash = t.dashboard("admin@x.io").await;

    // Alice registers a module: she owns it, the password comes once.
    let (status, created) = t
        .call(
            &alice,
            "POST",
            "/api/modules",
            Some(json!({"id": "MC-A-1", "name": "Roof", "type": "weather"})),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["module"]["ownerId"], alice_id);
    let password = created["password"].as_str().expect("password").to_owned();
    let added =
        json!({"moduleId": "MC-A-1", "name": "Roof", "type": "weather", "userId": alice_id});
    assert_eq!(
        alice_dash.expect("rt_module_added", about("MC-A-1")).await,
        added
    );
    assert_eq!(
        admin_dash.expect("rt_module_added", about("MC-A-1")).await,
        added
    );

    // Refusals: duplicate id, bad input, foreign owner, someone else's module (404, no leak).
    assert_eq!(
        t.call(
            &alice,
            "POST",
            "/api/modules",
            Some(json!({"id": "MC-A-1", "name": "x"}))
        )
        .await
        .0,
        409
    );
    assert_eq!(
        t.call(
            &alice,
            "POST",
            "/api/modules",
            Some(json!({"id": "bad/id", "name": "x"}))
        )
        .await
        .0,
        400
    );
    assert_eq!(
        t.call(
            &alice,
            "POST",
            "/api/modules",
            Some(json!({"id": "MC-A-2", "name": ""}))
        )
        .await
        .0,
        400
    );
    assert_eq!(
        t.call(
            &alice,
            "POST",
            "/api/modules",
            Some(json!({"id": "MC-A-2", "name": "x", "extra": 1}))
        )
        .await
        .0,
        400
    );
    assert_eq!(
        t.call(
            &alice,
            "POST",
            "/api/modules",
            Some(json!({"id": "MC-A-2", "name": "x", "ownerId": bob_id}))
        )
        .await
        .0,
        403
    );
    assert_eq!(
        t.call(
            &bob,
            "PATCH",
            "/api/modules/MC-A-1",
            Some(json!({"name": "mine"}))
        )
        .await
        .0,
        404
    );
    assert_eq!(
        t.call(&bob, "DELETE", "/api/modules/MC-A-1", None).await.0,
        404
    );
    assert_eq!(
        t.call(&bob, "POST", "/api/modules/MC-A-1/token", None)
            .await
            .0,
        404
    );
    assert_eq!(
        t.call(
            &bob,
            "PATCH",
            "/api/modules/MC-NOPE-1",
            Some(json!({"name": "x"}))
        )
        .await
        .0,
        404
    );
    assert_eq!(
        t.call(
            &alice,
            "PATCH",
            "/api/modules/MC-A-1",
            Some(json!({"ownerId": bob_id}))
        )
        .await
        .0,
        403
    );
    assert_eq!(
        t.call(
            &alice,
            "PATCH",
            "/api/modules/MC-A-1",
            Some(json!({"heartbeatTimeoutMs": 1}))
        )
        .await
        .0,
        400
    );

    // The module connects with its password.
    let m = t.module("MC-A-1", &password).await;
    m.hello(5000).await;
    alice_dash.expect("rt_module_online", about("MC-A-1")).await;

    // Rename: owner and admins hear it.
    let (status, renamed) = t
        .call(
            &alice,
            "PATCH",
            "/api/modules/MC-A-1",
            Some(json!({"name": "Roof east"})),
        )
        .await;
    assert_eq!(status, 200, "{renamed}");
    assert_eq!(renamed["online"], true);
    let updated = json!({"moduleId": "MC-A-1", "name": "Roof east", "type": "weather"});
    assert_eq!(
        alice_dash
            .expect("rt_module_updated", about("MC-A-1"))
            .await,
        updated
    );
    admin_dash
        .expect("rt_module_updated", about("MC-A-1"))
        .await;

    // Reassigned to Bob by an admin: Bob now gets its events, Alice learns it is gone for her.
    let (status, _) = t
        .call(
            &admin,
            "PATCH",
            "/api/modules/MC-A-1",
            Some(json!({"ownerId": bob_id})),
        )
        .await;
    assert_eq!(status, 200);
    bob_dash.expect("rt_module_updated", about("MC-A-1")).await;
    alice_dash
        .expect("rt_module_removed", about("MC-A-1"))
        .await;
    m.telemetry(1, json!({"t": 1.0})).await;
    bob_dash
        .expect("rt_telemetry_updated", about("MC-A-1"))
        .await;
    let (_, alice_list) = t.call(&alice, "GET", "/api/modules", None).await;
    assert_eq!(alice_list["modules"], json!([]));

    // Token rotation by the new owner: the live connection is closed, the old password is dead.
    let (status, rotated) = t
        .call(&bob, "POST", "/api/modules/MC-A-1/token", None)
        .await;
    assert_eq!(status, 200);
    let new_password = rotated["password"].as_str().expect("password").to_owned();
    assert_ne!(new_password, password);
    let offline = bob_dash.expect("rt_module_offline", about("MC-A-1")).await;
    assert_eq!(offline["reason"], "connection_lost");
    mc_e2e::eventually("the old connection is closed", || m.is_closed()).await;
    assert!(
        MqttModule::connect(t.hub.mqtt_addr, "MC-A-1", &password)
            .await
            .is_err()
    );
    let again = t.module("MC-A-1", &new_password).await;
    again.hello(5000).await;
    bob_dash.expect("rt_module_online", about("MC-A-1")).await;

    // Removal: connection closed, events sent, the module can no longer connect.
    assert_eq!(
        t.call(&bob, "DELETE", "/api/modules/MC-A-1", None).await.0,
        204
    );
    let removed = bob_dash.expect("rt_module_removed", about("MC-A-1")).await;
    assert_eq!(removed, json!({"moduleId": "MC-A-1", "userId": bob_id}));
    admin_dash
        .expect("rt_module_removed", about("MC-A-1"))
        .await;
    mc_e2e::eventually("the removed module's connection is closed", || {
        again.is_closed()
    })
    .await;
    assert!(
        MqttModule::connect(t.hub.mqtt_addr, "MC-A-1", &new_password)
            .await
            .is_err()
    );
    assert_eq!(
        t.call(&admin, "DELETE", "/api/modules/MC-A-1", None)
            .await
            .0,
        404
    );
}

/// Unknown modules are not silently lost: admins see them pending (attempts counted), claim
/// them into the registry, and only then do they get in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_modules_are_pending_until_an_admin_claims_them() {
    let t = start_hub(|_| {}).await;
    t.add_user("admin@x.io", true).await;
    let alice_id = t.add_user("alice@x.io", false).await;
    let (admin, alice) = (t.login("admin@x.io").await, t.login("alice@x.io").await);
    for _ in 0..2 {
        let refused = MqttModule::connect(t.hub.mqtt_addr, "MC-NEW-1", "any-guess").await;
        assert!(refused.is_err_and(|e| e.contains("BadUserNamePassword")));
    }
    // A client whose id is not a module id is not recorded.
    assert!(
        MqttModule::connect(t.hub.mqtt_addr, "not/an/id", "x")
            .await
            .is_err()
    );

    let (status, pending) = t.call(&admin, "GET", "/api/admin/pending", None).await;
    assert_eq!(status, 200);
    let modules = pending["modules"].as_array().expect("list");
    assert_eq!(modules.len(), 1, "{pending}");
    assert_eq!(modules[0]["moduleId"], "MC-NEW-1");
    assert_eq!(modules[0]["attempts"], 2);
    assert_eq!(modules[0]["lastAddress"], "127.0.0.1");
    assert_eq!(
        t.call(&alice, "GET", "/api/admin/pending", None).await.0,
        403
    );
    assert_eq!(
        t.call(
            &alice,
            "POST",
            "/api/admin/pending/MC-NEW-1/claim",
            Some(json!({"name": "x"}))
        )
        .await
        .0,
        403
    );
    assert_eq!(
        t.call(
            &admin,
            "POST",
            "/api/admin/pending/MC-NOPE-1/claim",
            Some(json!({"name": "x"}))
        )
        .await
        .0,
        404
    );

    let (status, claimed) = t
        .call(
            &admin,
            "POST",
            "/api/admin/pending/MC-NEW-1/claim",
            Some(json!({"name": "Found", "ownerId": alice_id})),
        )
        .await;
    assert_eq!(status, 201, "{claimed}");
    assert_eq!(claimed["module"]["ownerId"], alice_id);
    let password = claimed["password"].as_str().expect("password");
    let (_, pending) = t.call(&admin, "GET", "/api/admin/pending", None).await;
    assert_eq!(pending["modules"], json!([]));
    let mut alice_dash = t.dashboard("alice@x.io").await;
    let m = t.module("MC-NEW-1", password).await;
    m.hello(5000).await;
    alice_dash
        .expect("rt_module_online", about("MC-NEW-1"))
        .await;

    // Dismissing forgets an entry.
    assert!(
        MqttModule::connect(t.hub.mqtt_addr, "MC-NEW-2", "x")
            .await
            .is_err()
    );
    assert_eq!(
        t.call(&admin, "DELETE", "/api/admin/pending/MC-NEW-2", None)
            .await
            .0,
        204
    );
    assert_eq!(
        t.call(&admin, "DELETE", "/api/admin/pending/MC-NEW-2", None)
            .await
            .0,
        404
    );
}

/// Changes made by another process on the same database (the `hub` CLI) take effect in the
/// running hub and emit the same events, within the watcher's poll interval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_made_outside_the_hub_take_effect() {
    use mc_hub::store::{NewModule, Store, UserPatch};
    let t = start_hub(|_| {}).await;
    t.add_user("admin@x.io", true).await;
    let alice_id = t.add_user("alice@x.io", false).await;
    let mut admin = t.dashboard("admin@x.io").await;
    let mut alice = t.dashboard("alice@x.io").await;
    // A second, independent handle on the same database, as the CLI has.
    let cli = Store::connect(&t.database, std::time::Duration::from_secs(3600))
        .await
        .expect("open");

    let (_, password) = cli
        .create_module(NewModule {
            id: "MC-CLI-1".parse().expect("id"),
            name: "From the CLI".into(),
            kind: "weather".into(),
            owner_email: Some("alice@x.io".into()),
            heartbeat_timeout: None,
        })
        .await
        .expect("create");
    let added = alice.expect("rt_module_added", about("MC-CLI-1")).await;
    assert_eq!(added["userId"], alice_id);
    admin.expect("rt_module_added", about("MC-CLI-1")).await;

    let m = t.module("MC-CLI-1", &password).await;
    m.hello(5000).await;
    alice.expect("rt_module_online", about("MC-CLI-1")).await;
    let id = "MC-CLI-1".parse().expect("id");
    cli.rotate_module_token(&id).await.expect("rotate");
    mc_e2e::eventually("the rotated module's connection is closed", || {
        m.is_closed()
    })
    .await;
    alice.expect("rt_module_offline", about("MC-CLI-1")).await;

    assert!(cli.delete_module(&id).await.expect("delete"));
    admin.expect("rt_module_removed", about("MC-CLI-1")).await;

    cli.update_user(
        alice_id,
        UserPatch {
            disabled: Some(true),
            ..UserPatch::default()
        },
    )
    .await
    .expect("disable");
    alice.expect("close", |_| true).await;
}

/// A disabled module keeps its registration but is disconnected and refused until enabled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabled_modules_are_disconnected_and_refused() {
    let t = start_hub(|_| {}).await;
    t.add_user("alice@x.io", false).await;
    let alice = t.login("alice@x.io").await;
    let password = t.add_module("MC-A-1", Some("alice@x.io")).await;
    let mut dash = t.dashboard("alice@x.io").await;
    let m = t.module("MC-A-1", &password).await;
    m.hello(5000).await;
    dash.expect("rt_module_online", about("MC-A-1")).await;

    let (status, module) = t
        .call(
            &alice,
            "PATCH",
            "/api/modules/MC-A-1",
            Some(json!({"disabled": true})),
        )
        .await;
    assert_eq!((status, &module["disabled"]), (200, &json!(true)));
    mc_e2e::eventually("the disabled module's connection is closed", || {
        m.is_closed()
    })
    .await;
    dash.expect("rt_module_offline", about("MC-A-1")).await;
    let refused = MqttModule::connect(t.hub.mqtt_addr, "MC-A-1", &password).await;
    assert!(refused.is_err_and(|e| e.contains("NotAuthorized")));
    assert!(t.hub.metrics.rejected("module_disabled") >= 1);

    t.call(
        &alice,
        "PATCH",
        "/api/modules/MC-A-1",
        Some(json!({"disabled": false})),
    )
    .await;
    let again = t.module("MC-A-1", &password).await;
    again.hello(5000).await;
    dash.expect("rt_module_online", about("MC-A-1")).await;
}

/// An admin who gives away a module they owned still sees it (admins see every module): their
/// pages get the update, not an `rt_module_removed` that would drop it from them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reassignment_away_from_an_admin_does_not_remove_it_from_the_admin() {
    let t = start_hub(|_| {}).await;
    let admin_id = t.add_user("admin@x.io", true).await;
    let bob_id = t.add_user("bob@x.io", false).await;
    let admin = t.login("admin@x.io").await;
    let mut admin_modules = t.dashboard("admin@x.io").await;
    let mut admin_page = t.dashboard_with(&admin, json!({"page": "admin"})).await;
    let mut bob_dash = t.dashboard("bob@x.io").await;

    let (status, created) = t
        .call(
            &admin,
            "POST",
            "/api/modules",
            Some(json!({"id": "MC-ADM-1", "name": "Attic", "ownerId": admin_id})),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["module"]["ownerId"], admin_id);

    let (status, _) = t
        .call(
            &admin,
            "PATCH",
            "/api/modules/MC-ADM-1",
            Some(json!({"ownerId": bob_id})),
        )
        .await;
    assert_eq!(status, 200);
    bob_dash
        .expect("rt_module_updated", about("MC-ADM-1"))
        .await;
    // A later change is the barrier: nothing in between may remove the module.
    let (status, _) = t
        .call(
            &admin,
            "PATCH",
            "/api/modules/MC-ADM-1",
            Some(json!({"name": "Attic 2"})),
        )
        .await;
    assert_eq!(status, 200);
    for dash in [&mut admin_modules, &mut admin_page] {
        let seen = dash
            .until("rt_module_updated", |m| {
                m["moduleId"] == "MC-ADM-1" && m["name"] == "Attic 2"
            })
            .await;
        assert!(
            !seen.iter().any(|(event, _)| event == "rt_module_removed"),
            "the admin was told the module is gone: {seen:?}"
        );
    }
    let (_, list) = t.call(&admin, "GET", "/api/modules", None).await;
    assert!(
        list["modules"]
            .as_array()
            .expect("modules")
            .iter()
            .any(|m| m["moduleId"] == "MC-ADM-1" && m["ownerId"] == bob_id),
        "{list}"
    );
}
