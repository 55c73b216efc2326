//! The catalogue of bad HTTP input: every endpoint answers a clear JSON error with the right
//! status, and nothing is half-written.

use mc_e2e::start_hub;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_refuses_bad_input_cleanly() {
    let t = start_hub(|_| {}).await;
    let alice_id = t.add_user("alice@x.io", false).await;
    t.add_user("admin@x.io", true).await;
    t.add_module("MC-A-1", Some("alice@x.io")).await;
    let admin = t.login("admin@x.io").await;
    let long = "x".repeat(200);
    let cases: Vec<(&str, String, Value, u16)> = vec![
        // Registry.
        ("POST", "/api/modules".into(), json!({"id": "MC-B-1"}), 400),
        (
            "POST",
            "/api/modules".into(),
            json!({"id": "MC/B/1", "name": "x"}),
            400,
        ),
        (
            "POST",
            "/api/modules".into(),
            json!({"id": long, "name": "x"}),
            400,
        ),
        (
            "POST",
            "/api/modules".into(),
            json!({"id": "MC-B-1", "name": long}),
            400,
        ),
        (
            "POST",
            "/api/modules".into(),
            json!({"id": "MC-B-1", "name": "x", "type": "a b"}),
            400,
        ),
        (
            "POST",
            "/api/modules".into(),
            json!({"id": "MC-B-1", "name": "x", "bogus": true}),
            400,
        ),
        (
            "POST",
            "/api/modules".into(),
            json!({"id": "MC-B-1", "name": "x", "heartbeatTimeoutMs": 0}),
            400,
        ),
        (
            "POST",
            "/api/modules".into(),
            json!({"id": "MC-B-1", "name": "x", "ownerId": 987654}),
            400,
        ),
        (
            "POST",
            "/api/modules".into(),
            json!(["not", "an", "object"]),
            400,
        ),
        (
            "POST",
            "/api/modules".into(),
            json!({"id": "MC-A-1", "name": "dup"}),
            409,
        ),
        (
            "PATCH",
            "/api/modules/MC-A-1".into(),
            json!({"name": ""}),
            400,
        ),
        (
            "PATCH",
            "/api/modules/MC-A-1".into(),
            json!({"colour": "red"}),
            400,
        ),
        (
            "PATCH",
            "/api/modules/MC-A-1".into(),
            json!({"name": 42}),
            400,
        ),
        ("PATCH", "/api/modules/%00".into(), json!({}), 404),
        // Commands.
        (
            "POST",
            "/api/modules/MC-A-1/commands".into(),
            json!({"action": "explode"}),
            400,
        ),
        (
            "POST",
            "/api/modules/MC-A-1/commands".into(),
            json!({}),
            400,
        ),
        // Users.
        (
            "POST",
            "/api/users".into(),
            json!({"email": "no-at-sign", "name": "x", "password": "password1"}),
            400,
        ),
        (
            "POST",
            "/api/users".into(),
            json!({"email": "a@b.c", "name": "", "password": "password1"}),
            400,
        ),
        (
            "POST",
            "/api/users".into(),
            json!({"email": "a@b.c", "name": "x", "password": "short"}),
            400,
        ),
        (
            "POST",
            "/api/users".into(),
            json!({"email": "a@b.c", "name": "x", "password": "password1", "role": "god"}),
            400,
        ),
        (
            "POST",
            "/api/users".into(),
            json!({"email": "alice@x.io", "name": "x", "password": "password1"}),
            409,
        ),
        (
            "PATCH",
            format!("/api/users/{alice_id}"),
            json!({"email": "still no at"}),
            400,
        ),
        (
            "PATCH",
            format!("/api/users/{alice_id}"),
            json!({"isAdmin": "yes"}),
            400,
        ),
        (
            "PATCH",
            "/api/auth/me".into(),
            json!({"password": "newpassword"}),
            400,
        ),
        ("PATCH", "/api/auth/me".into(), json!({"unknown": 1}), 400),
        // Login.
        (
            "POST",
            "/api/auth/login".into(),
            json!({"email": "alice@x.io"}),
            400,
        ),
        (
            "POST",
            "/api/auth/login".into(),
            json!({"email": 1, "password": 2}),
            400,
        ),
    ];
    for (method, path, body, expected) in &cases {
        let (status, answer) = t.call(&admin, method, path, Some(body.clone())).await;
        assert_eq!(status, *expected, "{method} {path} {body} -> {answer}");
        assert!(
            answer["error"]["code"].is_string() && answer["error"]["message"].is_string(),
            "{method} {path}: error body {answer}"
        );
    }
    // Not JSON at all, and the wrong content type.
    let http = reqwest::Client::new();
    for (content_type, body) in [("application/json", "{oops"), ("text/plain", "{}")] {
        let response = http
            .post(format!("{}/api/modules", t.url))
            .header("cookie", &admin)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("post");
        assert_eq!(response.status(), 400, "{content_type} {body}");
        let answer: Value = response.json().await.expect("JSON error");
        assert!(answer["error"]["message"].is_string());
    }
    // Nothing was half-written.
    let (_, modules) = t.call(&admin, "GET", "/api/modules", None).await;
    assert_eq!(modules["modules"].as_array().map(Vec::len), Some(1));
    let (_, users) = t.call(&admin, "GET", "/api/users", None).await;
    assert_eq!(users["users"].as_array().map(Vec::len), Some(2));
}
