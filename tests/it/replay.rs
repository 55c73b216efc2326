//! The realtime stream contract (`docs/REALTIME.md`) against a real hub, real MQTT modules and
//! real Socket.IO clients: offsets, resuming with `missed`, entitlement, the bounds, the client
//! defaults and the reconnection health numbers.

use std::time::Duration;

use mc_e2e::{Dashboard, Received, about, start_hub};
use serde_json::{Value, json};

/// The `[event, payload, offset]` triples of a `rt_session`'s `missed`.
fn missed(session: &Value) -> Vec<(String, Value, u64)> {
    session["missed"]
        .as_array()
        .unwrap_or_else(|| panic!("missed is not an array: {session}"))
        .iter()
        .map(|m| {
            (
                m[0].as_str().unwrap_or_default().to_owned(),
                m[1].clone(),
                m[2].as_u64()
                    .unwrap_or_else(|| panic!("missed entry without offset: {m}")),
            )
        })
        .collect()
}

fn triples(events: &[Received]) -> Vec<(String, Value, u64)> {
    events
        .iter()
        .map(|r| {
            let offset = r
                .offset
                .unwrap_or_else(|| panic!("{} without offset", r.event));
            (r.event.clone(), r.data.clone(), offset)
        })
        .collect()
}

fn resume(session: &Value, offset: u64) -> Value {
    json!({"epoch": session["epoch"], "offset": offset})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_carries_a_strictly_increasing_offset() {
    let t = start_hub(|c| c.realtime.stats_interval = Duration::from_millis(100)).await;
    t.add_user("admin@x.io", true).await;
    t.add_user("alice@x.io", false).await;
    let pw = t.add_module("MC-1", Some("alice@x.io")).await;
    let admin_cookie = t.login("admin@x.io").await;
    let mut admin = t
        .dashboard_with(&admin_cookie, json!({"page": "admin"}))
        .await;
    let head = admin.session()["offset"]
        .as_u64()
        .expect("rt_session offset");
    assert!(
        admin.session()["epoch"]
            .as_str()
            .is_some_and(|e| !e.is_empty())
    );
    assert_eq!(admin.session()["resumed"], false);
    assert_eq!(admin.session()["missed"], json!([]));

    // Events of several kinds and audiences: stats, a login, a module's life.
    t.login("alice@x.io").await;
    let m = t.module("MC-1", &pw).await;
    m.hello(5000).await;
    m.telemetry(1, json!({"temperature": 20.0})).await;
    m.telemetry(2, json!({"temperature": 21.0})).await;
    // Published for sure (seen) before the connection is cut.
    let mut seen = admin
        .until_received("rt_telemetry_updated", |d| d["rev"] == 2)
        .await;
    m.drop_connection();
    seen.extend(
        admin
            .until_received("rt_module_offline", about("MC-1"))
            .await,
    );
    let kinds: std::collections::BTreeSet<_> = seen.iter().map(|r| r.event.as_str()).collect();
    for kind in [
        "rt_user_logged_in",
        "rt_module_online",
        "rt_telemetry_updated",
        "rt_module_offline",
    ] {
        assert!(kinds.contains(kind), "no {kind} in {seen:?}");
    }
    let offsets: Vec<u64> = triples(&seen).into_iter().map(|(_, _, o)| o).collect();
    assert!(offsets[0] > head, "{offsets:?} vs head {head}");
    assert!(
        offsets.windows(2).all(|w| w[0] < w[1]),
        "offsets not strictly increasing: {offsets:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resuming_dashboard_gets_exactly_what_it_missed_then_live_events_once() {
    let t = start_hub(|c| c.realtime.enable_stats = false).await;
    t.add_user("alice@x.io", false).await;
    let cookie = t.login("alice@x.io").await;
    let page = json!({"page": "modules"});
    let mut dash = t.dashboard_with(&cookie, page.clone()).await;
    // A second tab stays connected: it sees live what the first one misses.
    let mut witness = t.dashboard_with(&cookie, page.clone()).await;
    // Registered now, so that its `rt_module_added` is behind us before the test proper.
    let pw = t.add_module("MC-A", Some("alice@x.io")).await;
    dash.expect("rt_module_added", about("MC-A")).await;
    witness.expect("rt_module_added", about("MC-A")).await;

    let m = t.module("MC-A", &pw).await;
    m.hello(5000).await;
    let online = dash
        .expect_received("rt_module_online", about("MC-A"))
        .await;
    witness.expect("rt_module_online", about("MC-A")).await;
    let last_applied = online.offset.expect("online has an offset");
    let epoch_session = dash.session().clone();
    dash.close().await;

    m.telemetry(1, json!({"temperature": 20.0, "battery": 3.7}))
        .await;
    m.telemetry(2, json!({"temperature": 21.0})).await;
    let mut live = witness
        .until_received("rt_telemetry_updated", |d| d["rev"] == 2)
        .await;
    m.drop_connection();
    live.extend(
        witness
            .until_received("rt_module_offline", about("MC-A"))
            .await,
    );
    let expected = triples(&live);
    assert_eq!(
        expected
            .iter()
            .map(|(e, _, _)| e.as_str())
            .collect::<Vec<_>>(),
        [
            "rt_telemetry_updated",
            "rt_telemetry_updated",
            "rt_module_offline"
        ],
        "{live:?}"
    );

    let mut auth = page.clone();
    auth["resume"] = resume(&epoch_session, last_applied);
    auth["reconnectMs"] = json!(1500);
    let mut back = t.dashboard_with(&cookie, auth).await;
    let session = back.session().clone();
    assert_eq!(session["resumed"], true, "{session}");
    assert_eq!(session["epoch"], epoch_session["epoch"]);
    assert_eq!(missed(&session), expected, "{session}");
    let head = session["offset"].as_u64().expect("offset");
    assert!(head >= expected[2].2, "{session}");

    // Live again: the module comes back; nothing replayed arrives twice.
    let m = t.module("MC-A", &pw).await;
    m.hello(5000).await;
    let after = back.until_received("rt_module_online", about("MC-A")).await;
    for (event, _, offset) in triples(&after) {
        assert!(
            offset > head,
            "{event} at {offset} is not after {head}: {after:?}"
        );
    }
    assert_eq!(after.len(), 1, "{after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resuming_user_never_gets_another_users_module_events() {
    let t = start_hub(|c| c.realtime.enable_stats = false).await;
    t.add_user("admin@x.io", true).await;
    t.add_user("alice@x.io", false).await;
    t.add_user("bob@x.io", false).await;
    let pw_a = t.add_module("MC-A", Some("alice@x.io")).await;
    let pw_b = t.add_module("MC-B", Some("bob@x.io")).await;
    let alice_cookie = t.login("alice@x.io").await;
    let bob_cookie = t.login("bob@x.io").await;
    let page = json!({"page": "modules"});
    let alice = t.dashboard_with(&alice_cookie, page.clone()).await;
    let bob = t.dashboard_with(&bob_cookie, page.clone()).await;
    let epoch = alice.session()["epoch"].clone();
    let from = alice.session()["offset"]
        .as_u64()
        .expect("offset")
        .max(bob.session()["offset"].as_u64().expect("offset"));
    alice.close().await;
    bob.close().await;
    let mut admin = t.dashboard("admin@x.io").await;

    let a = t.module("MC-A", &pw_a).await;
    let b = t.module("MC-B", &pw_b).await;
    a.hello(5000).await;
    b.hello(5000).await;
    a.telemetry(1, json!({"temperature": 1.0})).await;
    b.telemetry(1, json!({"temperature": 2.0})).await;
    // Both emitted, in whatever order.
    let mut telemetry_of = std::collections::BTreeSet::new();
    while telemetry_of.len() < 2 {
        let update = admin.expect("rt_telemetry_updated", |_| true).await;
        telemetry_of.insert(update["moduleId"].to_string());
    }

    let resume_from = |offset: u64| {
        let mut auth = page.clone();
        auth["resume"] = json!({"epoch": epoch, "offset": offset});
        auth
    };
    for (cookie, mine, theirs) in [
        (&alice_cookie, "MC-A", "MC-B"),
        (&bob_cookie, "MC-B", "MC-A"),
    ] {
        // From where the user left, and from the very start of the stream.
        for offset in [from, 0] {
            let back = t.dashboard_with(cookie, resume_from(offset)).await;
            let session = back.session();
            assert_eq!(session["resumed"], true, "{session}");
            let missed = missed(session);
            let events: Vec<_> = missed.iter().map(|(e, _, _)| e.as_str()).collect();
            assert!(
                events.contains(&"rt_module_online") && events.contains(&"rt_telemetry_updated"),
                "{session}"
            );
            assert!(
                missed.iter().all(|(_, p, _)| p["moduleId"] == mine),
                "{mine}'s owner got {theirs}'s events: {session}"
            );
            back.close().await;
        }
    }
    // An admin resuming from the same point gets both modules.
    let admin_cookie = t.login("admin@x.io").await;
    let back = t.dashboard_with(&admin_cookie, resume_from(from)).await;
    let modules: std::collections::BTreeSet<_> = missed(back.session())
        .into_iter()
        .filter_map(|(_, p, _)| p["moduleId"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(
        modules.into_iter().collect::<Vec<_>>(),
        ["MC-A", "MC-B"],
        "{}",
        back.session()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_epoch_an_evicted_offset_or_too_many_missed_means_snapshot() {
    let t = start_hub(|c| {
        c.realtime.enable_stats = false;
        c.realtime.replay_capacity = 3;
        c.realtime.replay_max_missed = 2;
    })
    .await;
    t.add_user("alice@x.io", false).await;
    let cookie = t.login("alice@x.io").await;
    let mut dash = t.dashboard_with(&cookie, json!({"page": "modules"})).await;
    let epoch = dash.session()["epoch"].clone();
    let pw = t.add_module("MC-A", Some("alice@x.io")).await;
    // Every event from now on is Alice's: her dashboard sees the whole stream.
    let mut stream = dash.until_received("rt_module_added", about("MC-A")).await;
    let m = t.module("MC-A", &pw).await;
    m.hello(5000).await;
    stream.extend(dash.until_received("rt_module_online", about("MC-A")).await);
    for seq in 1..=4 {
        m.telemetry(seq, json!({"temperature": f64::from(seq)}))
            .await;
        stream.extend(
            dash.until_received("rt_telemetry_updated", about("MC-A"))
                .await,
        );
    }
    let all: Vec<u64> = triples(&stream).into_iter().map(|(_, _, o)| o).collect();
    assert!(all.len() >= 6, "{stream:?}");
    let offsets = &all[all.len() - 5..];
    // Kept: the last 3 events (offsets[2..]).
    let attempt = async |resume: Value| {
        let d = t
            .dashboard_with(&cookie, json!({"page": "modules", "resume": resume}))
            .await;
        let session = d.session().clone();
        d.close().await;
        session
    };
    let cases = [
        (
            "another epoch",
            json!({"epoch": "not-this-one", "offset": offsets[4]}),
        ),
        ("evicted", json!({"epoch": epoch, "offset": offsets[0]})),
        (
            "too many missed",
            json!({"epoch": epoch, "offset": offsets[1]}),
        ),
        (
            "from the future",
            json!({"epoch": epoch, "offset": offsets[4] + 1000}),
        ),
        // Malformed: ignored, the connection is accepted.
        ("malformed", json!("yesterday")),
    ];
    for (what, resume) in cases {
        let session = attempt(resume).await;
        assert_eq!(session["resumed"], false, "{what}: {session}");
        assert_eq!(session["missed"], json!([]), "{what}: {session}");
    }
    // Within the bounds: resumed.
    let session = attempt(json!({"epoch": epoch, "offset": offsets[2]})).await;
    assert_eq!(session["resumed"], true, "{session}");
    assert_eq!(
        missed(&session)
            .into_iter()
            .map(|(_, _, o)| o)
            .collect::<Vec<_>>(),
        offsets[3..]
    );
    // Malformed optional fields never cost an admin their page.
    t.add_user("admin@x.io", true).await;
    let admin_cookie = t.login("admin@x.io").await;
    let d = t
        .dashboard_with(
            &admin_cookie,
            json!({"page": "admin", "resume": {"epoch": 5}, "reconnectMs": "soon", "connectErrors": []}),
        )
        .await;
    assert_eq!(d.session()["page"], "admin");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn realtime_config_is_served_without_login() {
    let get = async |url: &str| -> Value {
        let response = reqwest::get(format!("{url}/api/realtime/config"))
            .await
            .expect("request");
        assert_eq!(response.status().as_u16(), 200);
        response.json().await.expect("JSON body")
    };
    let t = start_hub(|_| {}).await;
    assert_eq!(
        get(&t.url).await,
        json!({"maxReconnectAttempts": null, "reconnectDelay": 1000, "maxReconnectDelay": 30000})
    );
    let t = start_hub(|c| {
        c.realtime.max_reconnect_attempts = 7;
        c.realtime.reconnect_delay = Duration::from_millis(250);
        c.realtime.max_reconnect_delay = Duration::from_secs(5);
    })
    .await;
    assert_eq!(
        get(&t.url).await,
        json!({"maxReconnectAttempts": 7, "reconnectDelay": 250, "maxReconnectDelay": 5000})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnections_and_connection_errors_show_in_admin_stats_and_users_online() {
    let t = start_hub(|c| c.realtime.enable_stats = false).await;
    let admin_id = t.add_user("admin@x.io", true).await;
    let alice_id = t.add_user("alice@x.io", false).await;
    let bob_id = t.add_user("bob@x.io", false).await;
    let admin_cookie = t.login("admin@x.io").await;
    let alice_cookie = t.login("alice@x.io").await;

    // Refused handshakes: no session, and a user asking for the admin page.
    assert!(Dashboard::connect(&t.url, None, "modules").await.is_err());
    assert!(
        Dashboard::connect(&t.url, Some(&alice_cookie), "admin")
            .await
            .is_err()
    );
    // Two reconnections reporting their downtime and failed attempts (one clamped), and a
    // first connection that reports nothing.
    let _a = t
        .dashboard_with(
            &alice_cookie,
            json!({"page": "modules", "reconnectMs": 1000, "connectErrors": 2}),
        )
        .await;
    let _b = t
        .dashboard_with(
            &admin_cookie,
            json!({"page": "admin", "reconnectMs": 3000, "connectErrors": 5000}),
        )
        .await;
    let _c = t
        .dashboard_with(&alice_cookie, json!({"page": "modules"}))
        .await;

    let (status, stats) = t.call(&admin_cookie, "GET", "/api/admin/stats", None).await;
    assert_eq!(status, 200, "{stats}");
    assert_eq!(stats["reconnections"], 2, "{stats}");
    assert_eq!(stats["avgReconnectMs"], 2000, "{stats}");
    assert_eq!(stats["connectionErrors"], 2 + 2 + 1000, "{stats}");

    let (status, users) = t.call(&admin_cookie, "GET", "/api/users", None).await;
    assert_eq!(status, 200, "{users}");
    let online = |id: i64| {
        users["users"]
            .as_array()
            .and_then(|u| u.iter().find(|u| u["id"] == id))
            .map(|u| u["online"].clone())
    };
    assert_eq!(online(admin_id), Some(json!(true)), "{users}");
    assert_eq!(online(alice_id), Some(json!(true)), "{users}");
    assert_eq!(online(bob_id), Some(json!(false)), "{users}");
}
