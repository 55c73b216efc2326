//! The realtime stream contract (`docs/REALTIME.md`) against a real hub, real MQTT modules and
//! real Socket.IO clients: offsets, resuming with `missed`, entitlement, the bounds, the client
//! defaults and the reconnection health numbers.

use std::time::Duration;

use mc_e2e::{DEADLINE, Dashboard, Received, TestHub, about, start_hub};
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
    // Two reconnections reporting their downtime and failed attempts (clamped to 100 and
    // 10 min), and a first connection that reports nothing.
    let _a = t
        .dashboard_with(
            &alice_cookie,
            json!({"page": "modules", "reconnectMs": 1000, "connectErrors": 2}),
        )
        .await;
    let _b = t
        .dashboard_with(
            &admin_cookie,
            json!({"page": "admin", "reconnectMs": 1_000_000, "connectErrors": 5000}),
        )
        .await;
    let _c = t
        .dashboard_with(&alice_cookie, json!({"page": "modules"}))
        .await;

    let (status, stats) = t.call(&admin_cookie, "GET", "/api/admin/stats", None).await;
    assert_eq!(status, 200, "{stats}");
    assert_eq!(stats["reconnections"], 2, "{stats}");
    assert_eq!(stats["avgReconnectMs"], (1000 + 600_000) / 2, "{stats}");
    // The hub's refusals and what clients reported, apart: not added up.
    assert_eq!(stats["connectionErrors"], 2, "{stats}");
    assert_eq!(stats["clientConnectErrors"], 2 + 100, "{stats}");

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

/// Connects a dashboard resuming from `offset` of `epoch`; returns its `rt_session`.
async fn resume_once(t: &TestHub, cookie: &str, epoch: &Value, offset: u64) -> Value {
    let d = t
        .dashboard_with(
            cookie,
            json!({"page": "modules", "resume": {"epoch": epoch, "offset": offset}}),
        )
        .await;
    let session = d.session().clone();
    d.close().await;
    session
}

fn offset_of(session: &Value) -> u64 {
    session["offset"]
        .as_u64()
        .unwrap_or_else(|| panic!("no offset: {session}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_across_an_entitlement_change_means_snapshot() {
    let t = start_hub(|c| c.realtime.enable_stats = false).await;
    t.add_user("admin@x.io", true).await;
    let alice_id = t.add_user("alice@x.io", false).await;
    let bob_id = t.add_user("bob@x.io", false).await;
    let admin = t.login("admin@x.io").await;
    let alice = t.login("alice@x.io").await;
    let bob = t.login("bob@x.io").await;
    let page = json!({"page": "modules"});

    // Promoted, then demoted: each time her tab is closed, and resuming from where it stood
    // (which would replay with her new rights over a state built with the old) is refused.
    for is_admin in [true, false] {
        let mut tab = t.dashboard_with(&alice, page.clone()).await;
        let stood = tab.session().clone();
        let (status, body) = t
            .call(
                &admin,
                "PATCH",
                &format!("/api/users/{alice_id}"),
                Some(json!({"isAdmin": is_admin})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        tab.expect("close", |_| true).await;
        let session = resume_once(&t, &alice, &stood["epoch"], offset_of(&stood)).await;
        assert_eq!(session["isAdmin"], is_admin, "{session}");
        assert_eq!(session["resumed"], false, "admin: {is_admin}: {session}");
        // From after the change, she resumes.
        let again = resume_once(&t, &alice, &stood["epoch"], offset_of(&session)).await;
        assert_eq!(again["resumed"], true, "admin: {is_admin}: {again}");
    }

    // A module reassigned from Alice to Bob: both stay connected and hear it live, but neither
    // resumes from before it.
    t.add_module("MC-A", Some("alice@x.io")).await;
    let mut alice_tab = t.dashboard_with(&alice, page.clone()).await;
    let mut bob_tab = t.dashboard_with(&bob, page.clone()).await;
    let (alice_stood, bob_stood) = (alice_tab.session().clone(), bob_tab.session().clone());
    let (status, body) = t
        .call(
            &admin,
            "PATCH",
            "/api/modules/MC-A",
            Some(json!({"ownerId": bob_id})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let removed = alice_tab
        .expect_received("rt_module_removed", about("MC-A"))
        .await;
    let updated = bob_tab
        .expect_received("rt_module_updated", about("MC-A"))
        .await;
    alice_tab.close().await;
    bob_tab.close().await;
    let epoch = &alice_stood["epoch"];
    for (who, cookie, stood, heard) in [
        ("alice", &alice, &alice_stood, &removed),
        ("bob", &bob, &bob_stood, &updated),
    ] {
        let session = resume_once(&t, cookie, epoch, offset_of(stood)).await;
        assert_eq!(session["resumed"], false, "{who}: {session}");
        let heard = heard.offset.expect("offset");
        let session = resume_once(&t, cookie, epoch, heard).await;
        assert_eq!(session["resumed"], true, "{who}: {session}");
    }

    // A client that says it stopped as someone else, or with other rights, does not resume.
    let stood = t.dashboard_with(&alice, page.clone()).await;
    let head = offset_of(stood.session());
    for (user_id, is_admin, resumed) in [
        (alice_id, false, true),
        (bob_id, false, false),
        (alice_id, true, false),
    ] {
        let resume =
            json!({"epoch": epoch, "offset": head, "userId": user_id, "isAdmin": is_admin});
        let d = t
            .dashboard_with(&alice, json!({"page": "modules", "resume": resume}))
            .await;
        assert_eq!(d.session()["resumed"], resumed, "{resume}: {}", d.session());
        d.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_gone_before_they_registered_leave_no_room_behind() {
    let t = start_hub(|c| c.realtime.enable_stats = false).await;
    let alice_id = t.add_user("alice@x.io", false).await;
    let cookie = t.login("alice@x.io").await;
    let page = json!({"page": "modules"});
    let rooms = vec![format!("user:{alice_id}"), "page:modules".to_owned()];

    // The stream is busy (as under a long emit) while clients connect and leave at once: their
    // registration waits for it, and runs when they are gone already.
    let held = t.hub.realtime.hold_stream().await;
    for _ in 0..5 {
        Dashboard::connect_and_leave(&t.url, Some(&cookie), page.clone())
            .await
            .expect("accepted");
    }
    mc_e2e::eventually("the hub saw them go", || {
        t.hub.realtime.connected_clients() == 0
    })
    .await;
    drop(held);
    // The lock is fair: once this one is greeted, the queued registrations have run.
    let d = t.dashboard_with(&cookie, page).await;
    assert!(!t.hub.realtime.rooms_held(rooms.clone()).await.is_empty());
    d.close().await;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let held = t.hub.realtime.rooms_held(rooms.clone()).await;
        if held.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "rooms still held by sockets that are gone: {held:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The core guarantee: a dashboard that keeps losing its connection and resuming applies
/// exactly the events a continuously connected one receives (same offsets, no gap, no
/// duplicate), while a module sends telemetry as fast as it can.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dashboard_that_keeps_resuming_sees_what_a_connected_one_sees() {
    let t = start_hub(|c| c.realtime.enable_stats = false).await;
    t.add_user("alice@x.io", false).await;
    let cookie = t.login("alice@x.io").await;
    let page = json!({"page": "modules"});
    let pw = t.add_module("MC-A", Some("alice@x.io")).await;
    let mut witness = t.dashboard_with(&cookie, page.clone()).await;
    let m = t.module("MC-A", &pw).await;
    m.hello(5000).await;
    witness.expect("rt_module_online", about("MC-A")).await;

    let mut dash = t.dashboard_with(&cookie, page.clone()).await;
    let epoch = dash.session()["epoch"].clone();
    let start = offset_of(dash.session());
    let stop = tokio_util::sync::CancellationToken::new();
    let publisher = tokio::spawn({
        let stop = stop.clone();
        async move {
            let mut seq = 1u32;
            while !stop.is_cancelled() {
                m.telemetry(seq, json!({"temperature": f64::from(seq)}))
                    .await;
                seq += 1;
                // Just enough slack for the witness's socket buffer on a loaded machine.
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            m
        }
    });

    let mut applied: Vec<(String, Value, u64)> = Vec::new();
    let mut last = start;
    let apply = |applied: &mut Vec<(String, Value, u64)>, last: &mut u64, r: Received| {
        let offset = r
            .offset
            .unwrap_or_else(|| panic!("{} without offset", r.event));
        assert!(offset > *last, "{} at {offset} after {last}", r.event);
        *last = offset;
        if r.data["moduleId"] == "MC-A" {
            applied.push((r.event, r.data, offset));
        }
    };
    for round in 0..12 {
        // Live for a few readings, then the connection is lost.
        let mut readings = 0;
        while readings < 4 {
            let r = dash.next_received().await;
            if r.event == "rt_telemetry_updated" {
                readings += 1;
            }
            apply(&mut applied, &mut last, r);
        }
        dash.close().await;
        dash = t
            .dashboard_with(
                &cookie,
                json!({"page": "modules", "resume": {"epoch": epoch, "offset": last}}),
            )
            .await;
        let session = dash.session().clone();
        assert_eq!(session["resumed"], true, "round {round}: {session}");
        for (event, data, offset) in missed(&session) {
            apply(
                &mut applied,
                &mut last,
                Received {
                    event,
                    data,
                    offset: Some(offset),
                },
            );
        }
        // Everything up to the session's offset is applied; later events arrive live.
        let head = offset_of(&session);
        assert!(head >= last, "round {round}: {session}");
        last = head;
    }
    stop.cancel();
    let m = publisher.await.expect("publisher");
    m.drop_connection();
    loop {
        let r = dash.next_received().await;
        let done = r.event == "rt_module_offline" && about("MC-A")(&r.data);
        apply(&mut applied, &mut last, r);
        if done {
            break;
        }
    }
    let expected: Vec<_> = triples(
        &witness
            .until_received("rt_module_offline", about("MC-A"))
            .await,
    )
    .into_iter()
    .filter(|(_, data, offset)| *offset > start && data["moduleId"] == "MC-A")
    .collect();
    assert!(expected.len() > 12 * 4, "{}", expected.len());
    assert_eq!(applied.len(), expected.len());
    for (got, want) in applied.iter().zip(&expected) {
        assert_eq!(got, want);
    }
}

/// Rights are read when a socket authenticates and used when it registers (after the stream
/// lock): a change of rights in between (a barrier for its user) sends it back to reconnect
/// with the rights it has now, never greeted with the old ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_whose_rights_changed_while_it_connected_must_reconnect() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    let t = start_hub(|c| c.realtime.enable_stats = false).await;
    let admin_id = t.add_user("admin@x.io", true).await;
    let cookie = t.login("admin@x.io").await;

    let mut held = t.hub.realtime.hold_stream().await;
    let mut ws = crate::hostile::raw_socket(&t, Some(&cookie)).await;
    ws.send(Message::text("40{\"page\":\"admin\"}"))
        .await
        .expect("namespace connect");
    mc_e2e::eventually("authenticated as an admin", || {
        t.hub.realtime.connected_clients() == 1
    })
    .await;
    // Demoted now, while its registration waits for the stream.
    held.push_barrier(admin_id, tokio::time::Instant::now());
    drop(held);

    let outcome = tokio::time::timeout(DEADLINE, async {
        while let Some(Ok(m)) = ws.next().await {
            match m {
                Message::Text(t) if t.starts_with("42[\"rt_session\"") => return "greeted",
                Message::Text(t) if t.starts_with("41") => return "disconnected",
                Message::Close(_) => return "disconnected",
                _ => {}
            }
        }
        "disconnected"
    })
    .await;
    assert_eq!(outcome, Ok("disconnected"));
    assert_eq!(t.hub.realtime.delivery_clients().await, 0);
}
