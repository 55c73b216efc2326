//! Users over HTTP: admin management, own profile, and the effect of disabling and deleting on
//! sessions and live sockets.

use mc_e2e::{Dashboard, login, start_hub};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_manage_users_and_disabling_ends_sessions_and_sockets() {
    let t = start_hub(|_| {}).await;
    let admin_id = t.add_user("admin@x.io", true).await;
    t.add_user("alice@x.io", false).await;
    let admin = t.login("admin@x.io").await;
    let alice = t.login("alice@x.io").await;
    let mut admin_dash = t.dashboard("admin@x.io").await;

    // Only admins manage users.
    assert_eq!(t.call(&alice, "GET", "/api/users", None).await.0, 403);
    assert_eq!(
        t.call(
            &alice,
            "POST",
            "/api/users",
            Some(json!({"email": "x@x.io", "name": "X", "password": "password1"}))
        )
        .await
        .0,
        403
    );
    let (status, carol) = t
        .call(
            &admin,
            "POST",
            "/api/users",
            Some(json!({"email": "carol@x.io", "name": "Carol", "password": "carol-pass"})),
        )
        .await;
    assert_eq!(status, 201, "{carol}");
    let carol_id = carol["id"].as_i64().expect("id");
    assert_eq!(
        carol,
        json!({"id": carol_id, "email": "carol@x.io", "name": "Carol", "isAdmin": false, "disabled": false})
    );
    assert_eq!(
        t.call(
            &admin,
            "POST",
            "/api/users",
            Some(json!({"email": "CAROL@x.io", "name": "C2", "password": "password1"}))
        )
        .await
        .0,
        409
    );
    assert_eq!(
        t.call(
            &admin,
            "POST",
            "/api/users",
            Some(json!({"email": "not-an-email", "name": "C2", "password": "password1"}))
        )
        .await
        .0,
        400
    );
    assert_eq!(
        t.call(
            &admin,
            "POST",
            "/api/users",
            Some(json!({"email": "c3@x.io", "name": "C3", "password": "short"}))
        )
        .await
        .0,
        400
    );
    assert_eq!(
        t.call(
            &admin,
            "PATCH",
            "/api/users/999999",
            Some(json!({"name": "x"}))
        )
        .await
        .0,
        404
    );
    assert_eq!(
        t.call(
            &admin,
            "PATCH",
            "/api/users/abc",
            Some(json!({"name": "x"}))
        )
        .await
        .0,
        404
    );
    assert_eq!(
        t.call(
            &admin,
            "PATCH",
            &format!("/api/users/{admin_id}"),
            Some(json!({"disabled": true}))
        )
        .await
        .0,
        409
    );
    assert_eq!(
        t.call(&admin, "DELETE", &format!("/api/users/{admin_id}"), None)
            .await
            .0,
        409
    );
    let (_, list) = t.call(&admin, "GET", "/api/users", None).await;
    assert_eq!(list["users"].as_array().map(Vec::len), Some(3));

    // Carol renames herself: her other tabs and admins hear it.
    let carol_cookie = login(&t.url, "carol@x.io", "carol-pass")
        .await
        .expect("login");
    let mut carol_tab = Dashboard::connect(&t.url, Some(&carol_cookie), "modules")
        .await
        .expect("connects");
    let (status, me) = t
        .call(
            &carol_cookie,
            "PATCH",
            "/api/auth/me",
            Some(json!({"name": "Carol B."})),
        )
        .await;
    assert_eq!(status, 200, "{me}");
    let expected = json!({"id": carol_id, "name": "Carol B.", "email": "carol@x.io"});
    assert_eq!(
        carol_tab.expect("rt_user_profile_updated", |_| true).await,
        expected
    );
    assert_eq!(
        admin_dash
            .expect("rt_user_profile_updated", |d| d["id"] == carol_id)
            .await,
        expected
    );

    // Her password: only with the current one.
    assert_eq!(
        t.call(
            &carol_cookie,
            "PATCH",
            "/api/auth/me",
            Some(json!({"password": "new-carol-pass"}))
        )
        .await
        .0,
        400
    );
    assert_eq!(
        t.call(
            &carol_cookie,
            "PATCH",
            "/api/auth/me",
            Some(json!({"password": "new-carol-pass", "currentPassword": "wrong"}))
        )
        .await
        .0,
        403
    );
    assert_eq!(
        t.call(
            &carol_cookie,
            "PATCH",
            "/api/auth/me",
            Some(json!({"password": "new-carol-pass", "currentPassword": "carol-pass"}))
        )
        .await
        .0,
        200
    );
    assert_eq!(login(&t.url, "carol@x.io", "carol-pass").await, Err(401));
    assert!(login(&t.url, "carol@x.io", "new-carol-pass").await.is_ok());

    // Disabled: her live socket closes, her session and her login stop working.
    let (status, disabled) = t
        .call(
            &admin,
            "PATCH",
            &format!("/api/users/{carol_id}"),
            Some(json!({"disabled": true})),
        )
        .await;
    assert_eq!((status, &disabled["disabled"]), (200, &json!(true)));
    carol_tab.expect("close", |_| true).await;
    assert_eq!(
        t.call(&carol_cookie, "GET", "/api/auth/me", None).await.0,
        401
    );
    assert_eq!(
        login(&t.url, "carol@x.io", "new-carol-pass").await,
        Err(401)
    );
    assert!(
        Dashboard::connect(&t.url, Some(&carol_cookie), "modules")
            .await
            .is_err()
    );

    // Deleted: gone, and her modules stay visible to admins without an owner.
    let pw = t.add_module("MC-C-1", Some("carol@x.io")).await;
    drop(pw);
    assert_eq!(
        t.call(&admin, "DELETE", &format!("/api/users/{carol_id}"), None)
            .await
            .0,
        204
    );
    assert_eq!(
        t.call(&admin, "DELETE", &format!("/api/users/{carol_id}"), None)
            .await
            .0,
        404
    );
    let (_, modules) = t.call(&admin, "GET", "/api/modules", None).await;
    assert_eq!(modules["modules"][0]["moduleId"], "MC-C-1");
    assert_eq!(modules["modules"][0]["ownerId"], Value::Null);
}
