//! Who gets in and who sees what.

use mc_e2e::{Dashboard, MqttModule, about, login, start_hub};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_receive_only_their_own_modules_events_admins_receive_all() {
    let t = start_hub(|_| {}).await;
    t.add_user("admin@x.io", true).await;
    t.add_user("alice@x.io", false).await;
    t.add_user("bob@x.io", false).await;
    let pw_a = t.add_module("MC-A-1", Some("alice@x.io")).await;
    let pw_b = t.add_module("MC-B-1", Some("bob@x.io")).await;
    let mut admin = t.dashboard("admin@x.io").await;
    let mut alice = t.dashboard("alice@x.io").await;
    let mut bob = t.dashboard("bob@x.io").await;

    let a = t.module("MC-A-1", &pw_a).await;
    a.hello(5000).await;
    a.telemetry(1, json!({"t": 1.0})).await;
    admin.expect("rt_telemetry_updated", about("MC-A-1")).await;
    alice.expect("rt_telemetry_updated", about("MC-A-1")).await;

    // Bob's own module is his barrier: everything before it must be his alone.
    let b = t.module("MC-B-1", &pw_b).await;
    b.hello(5000).await;
    b.telemetry(1, json!({"t": 2.0})).await;
    let seen = bob.until("rt_telemetry_updated", about("MC-B-1")).await;
    assert!(
        seen.iter().all(|(_, d)| d["moduleId"] == "MC-B-1"),
        "bob saw {seen:?}"
    );
    admin.expect("rt_telemetry_updated", about("MC-B-1")).await;

    // And Alice never hears of Bob's module, nor sees it in her snapshot.
    a.telemetry(2, json!({"t": 3.0})).await;
    let seen = alice
        .until("rt_telemetry_updated", |d| {
            d["moduleId"] == "MC-A-1" && d["rev"] == 2
        })
        .await;
    assert!(
        seen.iter().all(|(_, d)| d["moduleId"] == "MC-A-1"),
        "alice saw {seen:?}"
    );
    let cookie = t.login("alice@x.io").await;
    let (status, snapshot) = t.call(&cookie, "GET", "/api/modules", None).await;
    assert_eq!(status, 200);
    let ids: Vec<_> = snapshot["modules"]
        .as_array()
        .expect("list")
        .iter()
        .map(|m| m["moduleId"].clone())
        .collect();
    assert_eq!(ids, vec![json!("MC-A-1")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_without_a_valid_session_are_refused() {
    let t = start_hub(|_| {}).await;
    t.add_user("alice@x.io", false).await;
    let refused = Dashboard::connect(&t.url, None, "modules").await;
    assert!(refused.is_err(), "no cookie must be refused");
    let forged = Dashboard::connect(&t.url, Some("mc_session=0123456789abcdef"), "modules").await;
    assert!(forged.is_err(), "unknown session must be refused");
    // A regular user may not join the admin page.
    let cookie = t.login("alice@x.io").await;
    assert!(
        Dashboard::connect(&t.url, Some(&cookie), "admin")
            .await
            .is_err()
    );
    assert!(
        Dashboard::connect(&t.url, Some(&cookie), "modules")
            .await
            .is_ok()
    );
    // Logout ends the session: its live sockets are disconnected, another session's are not,
    // and the cookie no longer opens new ones.
    let mut live = Dashboard::connect(&t.url, Some(&cookie), "modules")
        .await
        .expect("connects");
    let other_cookie = t.login("alice@x.io").await;
    let mut other = Dashboard::connect(&t.url, Some(&other_cookie), "modules")
        .await
        .expect("connects");
    let response = reqwest::Client::new()
        .post(format!("{}/api/auth/logout", t.url))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("logout");
    assert_eq!(response.status(), 204);
    live.expect("close", |_| true).await;
    assert!(
        Dashboard::connect(&t.url, Some(&cookie), "modules")
            .await
            .is_err()
    );
    // The other session still receives events (barrier: a module of Alice's comes online).
    let pw = t.add_module("MC-A-1", Some("alice@x.io")).await;
    let m = t.module("MC-A-1", &pw).await;
    m.hello(5000).await;
    let seen = other.until("rt_module_online", about("MC-A-1")).await;
    assert!(!seen.iter().any(|(e, _)| e == "close"), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_api_requires_a_session_and_right_credentials() {
    let t = start_hub(|_| {}).await;
    t.add_user("alice@x.io", false).await;
    assert_eq!(login(&t.url, "alice@x.io", "wrong").await, Err(401));
    assert_eq!(login(&t.url, "nobody@x.io", "password").await, Err(401));
    let http = reqwest::Client::new();
    let status = http
        .get(format!("{}/api/modules", t.url))
        .send()
        .await
        .expect("get")
        .status();
    assert_eq!(status, 401);
    let status = http
        .get(format!("{}/api/auth/me", t.url))
        .send()
        .await
        .expect("get")
        .status();
    assert_eq!(status, 401);
    let garbage = http
        .post(format!("{}/api/auth/login", t.url))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("post");
    assert_eq!(garbage.status(), 400);
    let body: serde_json::Value = garbage.json().await.expect("JSON error body");
    assert_eq!(body["error"]["code"], "bad_request", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
    );
    let unauthorized: serde_json::Value = http
        .get(format!("{}/api/modules", t.url))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("JSON error body");
    assert_eq!(
        unauthorized,
        json!({"error": {"code": "unauthorized", "message": "unauthorized"}})
    );
    let cookie = t.login("alice@x.io").await;
    let me: serde_json::Value = http
        .get(format!("{}/api/auth/me", t.url))
        .header("cookie", cookie)
        .send()
        .await
        .expect("me")
        .json()
        .await
        .expect("json");
    assert_eq!(me["email"], "alice@x.io");
    assert_eq!(me["isAdmin"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modules_with_wrong_credentials_are_refused_with_a_connack_code() {
    let t = start_hub(|_| {}).await;
    let pw = t.add_module("MC-1001-STN", None).await;
    let addr = t.hub.mqtt_addr;
    let wrong = MqttModule::connect(addr, "MC-1001-STN", "not-the-token").await;
    assert!(
        wrong
            .err()
            .is_some_and(|e| e.contains("BadUserNamePassword"))
    );
    let unknown = MqttModule::connect(addr, "MC-9999-XXX", &pw).await;
    assert!(
        unknown
            .err()
            .is_some_and(|e| e.contains("BadUserNamePassword"))
    );
    let bad_id = MqttModule::connect(addr, "bad/id", &pw).await;
    assert!(bad_id.err().is_some_and(|e| e.contains("BadClientId")));
    assert!(t.hub.metrics.mqtt_auth_failures.get() >= 3);
    assert!(MqttModule::connect(addr, "MC-1001-STN", &pw).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_cannot_publish_on_another_modules_topics() {
    let t = start_hub(|_| {}).await;
    t.add_user("admin@x.io", true).await;
    let pw1 = t.add_module("MC-1001-STN", None).await;
    t.add_module("MC-1002-STN", None).await;
    let mut dash = t.dashboard("admin@x.io").await;
    let m = t.module("MC-1001-STN", &pw1).await;
    m.hello(5000).await;
    dash.expect("rt_module_online", about("MC-1001-STN")).await;
    m.publish("hello", "{x").await; // own topic, bad payload: counted, connection kept
    m.client
        .publish(
            "mc/MC-1002-STN/telemetry",
            rumqttc::QoS::AtLeastOnce,
            false,
            r#"{"seq":1,"readings":{"t":1}}"#,
        )
        .await
        .expect("queued");
    let offline = dash.expect("rt_module_offline", about("MC-1001-STN")).await;
    assert_eq!(
        offline["reason"], "connection_lost",
        "the gateway closed the connection"
    );
    assert_eq!(t.hub.metrics.rejected("acl_denied"), 1);
    // Module B's state, events and rows are untouched by A's attempt.
    let b = "MC-1002-STN".parse().expect("id");
    assert!(
        t.hub.tracker.module(&b).await.is_none(),
        "no live state for B"
    );
    let admin = t.login("admin@x.io").await;
    let (_, modules) = t.call(&admin, "GET", "/api/modules", None).await;
    let b_view = modules["modules"]
        .as_array()
        .and_then(|l| l.iter().find(|m| m["moduleId"] == "MC-1002-STN").cloned())
        .expect("B listed");
    assert_eq!(
        (b_view["rev"].clone(), b_view["readings"].clone()),
        (json!(0), json!({}))
    );
    // The bad hello before the violation still went through ingest (and was refused there).
    mc_e2e::eventually("malformed hello counted", || {
        t.hub.metrics.rejected("malformed") == 1
    })
    .await;
}

/// Long-polling and the polling → WebSocket upgrade (what browsers do by default) work too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_and_upgraded_transports_receive_events() {
    use rust_socketio::TransportType;
    let t = start_hub(|_| {}).await;
    t.add_user("admin@x.io", true).await;
    let pw = t.add_module("MC-1001-STN", None).await;
    let cookie = t.login("admin@x.io").await;
    let mut polling =
        Dashboard::connect_with(&t.url, Some(&cookie), "modules", TransportType::Polling)
            .await
            .expect("polling connects");
    let mut upgraded =
        Dashboard::connect_with(&t.url, Some(&cookie), "modules", TransportType::Any)
            .await
            .expect("polling + upgrade connects");
    assert!(
        Dashboard::connect_with(&t.url, None, "modules", TransportType::Polling)
            .await
            .is_err()
    );
    let m = t.module("MC-1001-STN", &pw).await;
    m.hello(5000).await;
    m.telemetry(1, json!({"t": 1.5})).await;
    for dash in [&mut polling, &mut upgraded] {
        let update = dash
            .expect("rt_telemetry_updated", about("MC-1001-STN"))
            .await;
        assert_eq!(update["telemetry"], json!({"t": 1.5}));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_cannot_subscribe_to_other_modules_data() {
    let t = start_hub(|_| {}).await;
    t.add_user("admin@x.io", true).await;
    let pw = t.add_module("MC-1001-STN", None).await;
    let mut dash = t.dashboard("admin@x.io").await;
    let m = t.module("MC-1001-STN", &pw).await;
    m.client
        .subscribe("mc/MC-1001-STN/cmd", rumqttc::QoS::AtLeastOnce)
        .await
        .expect("queued");
    m.hello(5000).await;
    dash.expect("rt_module_online", about("MC-1001-STN")).await;
    m.client
        .subscribe("mc/+/telemetry", rumqttc::QoS::AtLeastOnce)
        .await
        .expect("queued");
    let offline = dash.expect("rt_module_offline", about("MC-1001-STN")).await;
    assert_eq!(offline["reason"], "connection_lost");
    assert_eq!(
        t.hub.metrics.rejected("acl_denied"),
        1,
        "{:?}",
        t.hub.metrics.rejections()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_hear_logins_and_logouts_users_do_not() {
    let t = start_hub(|_| {}).await;
    let alice_id = t.add_user("alice@x.io", false).await;
    t.add_user("admin@x.io", true).await;
    let mut admin = t.dashboard("admin@x.io").await;
    let mut alice = t.dashboard("alice@x.io").await;

    let cookie = t.login("alice@x.io").await;
    let login = admin
        .expect("rt_user_logged_in", |d| d["email"] == "alice@x.io")
        .await;
    assert_eq!(
        login,
        json!({"id": alice_id, "name": "alice", "email": "alice@x.io", "isAdmin": false})
    );
    let response = reqwest::Client::new()
        .post(format!("{}/api/auth/logout", t.url))
        .header("cookie", cookie)
        .send()
        .await
        .expect("logout");
    assert_eq!(response.status(), 204);
    let logout = admin
        .expect("rt_user_logged_out", |d| d["id"] == alice_id)
        .await;
    assert_eq!(logout["name"], "alice");
    assert!(
        logout["logoutTime"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );

    // Barrier for Alice: an event she is entitled to. Nothing about logins before it.
    let pw = t.add_module("MC-A-1", Some("alice@x.io")).await;
    let m = t.module("MC-A-1", &pw).await;
    m.hello(5000).await;
    let seen = alice.until("rt_module_online", about("MC-A-1")).await;
    assert!(
        seen.iter().all(|(e, _)| !e.starts_with("rt_user_")),
        "{seen:?}"
    );
}

/// The broker publishes a last will on the module's behalf: it must not be a way around the ACL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_last_will_on_another_modules_topic_is_refused() {
    let t = start_hub(|_| {}).await;
    let pw = t.add_module("MC-1001-STN", None).await;
    t.add_module("MC-1002-STN", None).await;
    let addr = t.hub.mqtt_addr;
    for (topic, retain) in [
        ("mc/MC-1002-STN/cmd", false),
        ("mc/MC-1002-STN/telemetry", false),
        ("mc/MC-1001-STN/status", true),
    ] {
        let mut options =
            rumqttc::MqttOptions::new("MC-1001-STN", addr.ip().to_string(), addr.port());
        options.set_credentials("MC-1001-STN", pw.as_str());
        options.set_last_will(rumqttc::LastWill::new(
            topic,
            r#"{"id":1,"action":"reboot"}"#,
            rumqttc::QoS::AtLeastOnce,
            retain,
        ));
        let (_client, mut eventloop) = rumqttc::AsyncClient::new(options, 8);
        let refused = mc_e2e::wait_connack(&mut eventloop).await;
        assert!(
            refused.is_err_and(|e| e.contains("NotAuthorized")),
            "will on {topic} (retain {retain})"
        );
    }
    assert_eq!(t.hub.metrics.rejected("acl_denied"), 3);
    // Its own status topic, not retained, is what the contract asks for.
    assert!(MqttModule::connect(addr, "MC-1001-STN", &pw).await.is_ok());
}

/// Cross-site WebSocket hijacking and CSRF: a foreign page's requests carry the user's cookie
/// and its own Origin; they are refused before any upgrade. Same-origin and non-browser
/// (no Origin) clients pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_origins_are_refused_before_any_upgrade() {
    let t = start_hub(|c| c.allowed_origins = vec!["https://dash.example.com".into()]).await;
    t.add_user("alice@x.io", false).await;
    let cookie = t.login("alice@x.io").await;
    let http = reqwest::Client::new();
    let own = t.url.clone();
    let handshake = |origin: &'static str| {
        http.get(format!("{}/socket.io/?EIO=4&transport=polling", t.url))
            .header("cookie", &cookie)
            .header("origin", origin)
            .send()
    };
    assert_eq!(
        handshake("http://evil.example")
            .await
            .expect("get")
            .status(),
        403
    );
    assert_eq!(handshake("null").await.expect("get").status(), 403);
    assert_eq!(
        handshake("https://dash.example.com")
            .await
            .expect("get")
            .status(),
        200
    );
    let upgrade = http
        .get(format!("{}/socket.io/?EIO=4&transport=websocket", t.url))
        .header("cookie", &cookie)
        .header("origin", "http://evil.example")
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .send()
        .await
        .expect("get");
    assert_eq!(upgrade.status(), 403, "no 101 for a foreign origin");
    let login = |origin: String| {
        http.post(format!("{}/api/auth/login", t.url))
            .header("origin", origin)
            .json(&json!({"email": "alice@x.io", "password": "password"}))
            .send()
    };
    assert_eq!(
        login("http://evil.example".into())
            .await
            .expect("post")
            .status(),
        403
    );
    assert_eq!(login(own).await.expect("post").status(), 200);
    assert!(t.hub.metrics.rejected("foreign_origin") >= 4);
    // Reads are not guarded (the cookie is SameSite and the API answers JSON only).
    let read = http
        .get(format!("{}/api/auth/me", t.url))
        .header("cookie", &cookie)
        .header("origin", "http://evil.example")
        .send()
        .await
        .expect("get");
    assert_eq!(read.status(), 200);
}

/// Password guessing is throttled per account: after 5 failures even the right password waits
/// (429 + Retry-After, no password check), while other accounts are unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_login_failures_are_throttled_per_account() {
    let t = start_hub(|_| {}).await;
    t.add_user("alice@x.io", false).await;
    t.add_user("bob@x.io", false).await;
    for _ in 0..5 {
        assert_eq!(login(&t.url, "alice@x.io", "guess").await, Err(401));
    }
    let throttled = reqwest::Client::new()
        .post(format!("{}/api/auth/login", t.url))
        .json(&json!({"email": "ALICE@x.io", "password": "password"}))
        .send()
        .await
        .expect("post");
    assert_eq!(throttled.status(), 429);
    let retry_after: u64 = throttled
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After seconds");
    assert!((1..=300).contains(&retry_after), "{retry_after}");
    let body: serde_json::Value = throttled.json().await.expect("json");
    assert_eq!(body["error"]["code"], "too_many_attempts");
    assert!(
        login(&t.url, "bob@x.io", "password").await.is_ok(),
        "other accounts unaffected"
    );
    // After the delay, the right password works again (and clears the count).
    tokio::time::sleep(std::time::Duration::from_secs(retry_after)).await;
    assert!(login(&t.url, "alice@x.io", "password").await.is_ok());
}

/// socketioxide's `max_payload` covers only polling bodies; the hub also caps WebSocket messages:
/// an oversized client message closes that socket, and nobody else notices.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_client_message_closes_only_that_socket() {
    let t = start_hub(|c| c.realtime.max_message = 16 * 1024).await;
    t.add_user("admin@x.io", true).await;
    let offender = t.dashboard("admin@x.io").await;
    let mut bystander = t.dashboard("admin@x.io").await;
    assert_eq!(t.hub.realtime.connected_clients(), 2);
    let _ = offender
        .emit("anything", json!("x".repeat(100 * 1024)))
        .await;
    mc_e2e::eventually("the offender's socket is closed", || {
        t.hub.realtime.connected_clients() == 1
    })
    .await;
    drop(offender);
    let pw = t.add_module("MC-1001-STN", None).await;
    let m = t.module("MC-1001-STN", &pw).await;
    m.hello(5000).await;
    let seen = bystander
        .until("rt_module_online", about("MC-1001-STN"))
        .await;
    assert!(!seen.iter().any(|(e, _)| e == "close"), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_cookie_flags_follow_the_transport() {
    let t = start_hub(|_| {}).await;
    t.add_user("alice@x.io", false).await;
    let cookie_of = |https: bool| {
        let mut request = reqwest::Client::new()
            .post(format!("{}/api/auth/login", t.url))
            .json(&json!({"email": "alice@x.io", "password": "password"}));
        if https {
            request = request.header("x-forwarded-proto", "https");
        }
        async move {
            let response = request.send().await.expect("login");
            assert_eq!(response.status(), 200);
            response
                .headers()
                .get("set-cookie")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
                .expect("Set-Cookie")
        }
    };
    let plain = cookie_of(false).await;
    assert!(
        plain.contains("HttpOnly") && plain.contains("SameSite=Strict"),
        "{plain}"
    );
    assert!(!plain.contains("Secure"), "{plain}");
    let behind_tls = cookie_of(true).await;
    assert!(behind_tls.contains("; Secure"), "{behind_tls}");
}

/// The modules page carries its first data (user, config, snapshot) for the caller only, as
/// JSON that no module name can break out of; without a session it carries none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_modules_page_embeds_the_callers_own_data_only() {
    let t = start_hub(|_| {}).await;
    t.add_user("alice@x.io", false).await;
    t.add_user("bob@x.io", false).await;
    t.add_module("MC-A-1", Some("alice@x.io")).await;
    t.add_module("MC-B-1", Some("bob@x.io")).await;
    let cookie = t.login("alice@x.io").await;
    let hostile = "</script><script>alert(1)</script> & <!--";
    let (status, _) = t
        .call(
            &cookie,
            "PATCH",
            "/api/modules/MC-A-1",
            Some(json!({ "name": hostile })),
        )
        .await;
    assert_eq!(status, 200);

    let http = reqwest::Client::new();
    let page = |path: &'static str, cookie: Option<String>| {
        let mut req = http.get(format!("{}{path}", t.url));
        if let Some(c) = cookie {
            req = req.header("cookie", c);
        }
        async move {
            let res = req.send().await.expect("GET page");
            assert_eq!(res.status(), 200);
            let cache = res
                .headers()
                .get("cache-control")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            (cache, res.text().await.expect("body"))
        }
    };
    const OPEN: &str = r#"<script id="mc-boot" type="application/json">"#;
    for path in ["/", "/modules"] {
        let (cache, html) = page(path, Some(cookie.clone())).await;
        assert_eq!(
            cache, "no-store",
            "{path}: a page with user data is not cached"
        );
        assert!(
            !html.contains("<script>alert(1)"),
            "{path}: the name broke out"
        );
        let json = html
            .split_once(OPEN)
            .and_then(|(_, rest)| rest.split_once("</script>"))
            .map(|(json, _)| json)
            .unwrap_or_else(|| panic!("{path}: no boot data in {html}"));
        let boot: serde_json::Value = serde_json::from_str(json).expect("boot data is JSON");
        assert_eq!(boot["me"]["email"], "alice@x.io");
        assert!(boot["config"]["reconnectDelay"].is_u64(), "{boot}");
        let modules = boot["modules"]["modules"].as_array().expect("modules");
        assert_eq!(modules.len(), 1, "only Alice's module: {boot}");
        assert_eq!(modules[0]["moduleId"], "MC-A-1");
        assert_eq!(modules[0]["name"], hostile);
    }
    for cookie in [None, Some("mc_session=not-a-session".to_owned())] {
        let (cache, html) = page("/", cookie).await;
        assert_eq!(cache, "no-cache");
        assert!(!html.contains(OPEN), "no session, no boot data");
        assert!(html.contains("mc_prefetch"), "the page fetches instead");
    }
}
