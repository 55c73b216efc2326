//! The MQTT contract, checked on the wire: what the broker routes is what the hub will see.

use std::time::Duration;

use firmware_sim::{Fault, ModuleCredentials, SimConfig, Simulation};
use mc_protocol::{
    Command, CommandAction, Encoding, Heartbeat, Hello, ModuleId, ModuleTopic, STATUS_OFFLINE,
    Telemetry, TopicKind, codec,
};
use tokio_util::sync::CancellationToken;

use crate::broker::{DEADLINE, Seen, TestBroker, eventually};

fn topic(id: &str, kind: TopicKind) -> String {
    ModuleTopic::new(ModuleId::new(id).unwrap(), kind).to_string()
}

fn is(seen: &Seen, id: &str, kind: TopicKind) -> bool {
    seen.topic == topic(id, kind)
}

fn credentials(ids: &[&str]) -> Vec<ModuleCredentials> {
    ids.iter()
        .map(|id| ModuleCredentials::new(ModuleId::new(id).unwrap(), format!("token-{id}")))
        .collect()
}

fn config(broker: &TestBroker) -> SimConfig {
    SimConfig {
        broker: broker.addr.clone(),
        heartbeat: Duration::from_millis(400),
        telemetry: Duration::from_millis(200),
        keep_alive: Duration::from_secs(5),
        seed: 7,
        fw: "9.8.7".into(),
        drop_pause: Duration::from_millis(300),
        ..SimConfig::default()
    }
}

async fn stop(sim: Simulation, shutdown: CancellationToken) {
    shutdown.cancel();
    tokio::time::timeout(DEADLINE, sim.stopped())
        .await
        .expect("modules stop after shutdown");
}

#[tokio::test]
async fn three_modules_handshake_then_report_and_drop_fires_the_last_will() {
    let mut broker = TestBroker::start();
    let ids = ["SIM-A-001", "SIM-A-002", "SIM-A-003"];
    let shutdown = CancellationToken::new();
    let sim = firmware_sim::start(config(&broker), credentials(&ids), shutdown.clone());
    assert_eq!(sim.modules().len(), 3);

    // Every module: hello, then heartbeat, then telemetry, and later a second heartbeat.
    for id in ids {
        broker
            .wait_for(&format!("second heartbeat of {id}"), |m| {
                is(m, id, TopicKind::Heartbeat)
                    && codec::decode::<Heartbeat>(&m.payload).is_ok_and(|h| h.seq >= 1)
            })
            .await;
    }
    for id in ids {
        let mine: Vec<&Seen> = broker.log.iter().filter(|m| m.topic.contains(id)).collect();
        let first = |kind| {
            mine.iter()
                .position(|m| is(m, id, kind))
                .unwrap_or_else(|| panic!("{id}: no {kind:?}"))
        };
        assert_eq!(first(TopicKind::Hello), 0, "{id}: hello comes first");
        assert!(
            first(TopicKind::Heartbeat) < first(TopicKind::Telemetry),
            "{id}"
        );

        let hello: Hello = codec::decode(&mine[0].payload).unwrap();
        assert_eq!(hello.fw.as_str(), "9.8.7");
        assert_eq!(hello.heartbeat_ms, 400);

        let heartbeats: Vec<Heartbeat> = mine
            .iter()
            .filter(|m| is(m, id, TopicKind::Heartbeat))
            .map(|m| codec::decode(&m.payload).unwrap())
            .collect();
        let telemetry: Vec<Telemetry> = mine
            .iter()
            .filter(|m| is(m, id, TopicKind::Telemetry))
            .map(|m| codec::decode(&m.payload).unwrap())
            .collect();
        for (i, h) in heartbeats.iter().enumerate() {
            assert_eq!(h.seq, i as u32, "{id}: heartbeat seqs count up from 0");
        }
        for (i, t) in telemetry.iter().enumerate() {
            assert_eq!(t.seq, i as u32, "{id}: telemetry seqs count up from 0");
            assert!(!t.readings.is_empty(), "{id}: never an empty report");
        }
        // Report-by-exception: all readings first, then those that changed.
        assert_eq!(
            telemetry[0].readings.len(),
            5,
            "{id}: full report on connect"
        );
        assert!(
            heartbeats
                .windows(2)
                .all(|w| w[0].uptime_ms < w[1].uptime_ms)
        );
        let module = sim.module(id).unwrap();
        assert!(module.is_connected());
        let stats = module.stats();
        assert_eq!((stats.connects, stats.hellos), (1, 1), "{id}: {stats:?}");
    }
    // Different modules draw different readings.
    let first_telemetry = |id| {
        let m = broker
            .log
            .iter()
            .find(|m| is(m, id, TopicKind::Telemetry))
            .unwrap();
        codec::decode::<Telemetry>(&m.payload).unwrap().readings
    };
    assert_ne!(first_telemetry(ids[0]), first_telemetry(ids[1]));

    // DropConnection: the broker publishes the last will, then the module comes back by itself.
    let victim = ids[0];
    sim.module(victim).unwrap().inject(Fault::DropConnection);
    let will = broker
        .wait_for("last will", |m| is(m, victim, TopicKind::Status))
        .await;
    assert_eq!(will.payload, STATUS_OFFLINE);
    broker
        .wait_for("hello after reconnecting", |m| {
            is(m, victim, TopicKind::Hello)
        })
        .await;
    let module = sim.module(victim).unwrap();
    eventually("reconnected", || {
        module.is_connected() && module.stats().connects == 2
    })
    .await;

    stop(sim, shutdown).await;
}

#[tokio::test]
async fn commands_are_applied_and_invalid_ones_counted() {
    let mut broker = TestBroker::start();
    let id = "SIM-B-001";
    let shutdown = CancellationToken::new();
    let config = SimConfig {
        encoding: Encoding::Json,
        ..config(&broker)
    };
    let sim = firmware_sim::start(config, credentials(&[id]), shutdown.clone());
    let module = sim.module(id).unwrap().clone();
    let hello = broker
        .wait_for("hello", |m| is(m, id, TopicKind::Hello))
        .await;
    assert_eq!(hello.payload.first(), Some(&b'{'), "JSON encoding");
    let cmd = topic(id, TopicKind::Cmd);
    let send = |id, action| codec::native::to_vec(&Command { id, action }).unwrap();

    // SetHeartbeatInterval: a new hello announces it.
    broker.publish(
        &cmd,
        send(1, CommandAction::SetHeartbeatInterval { ms: 250 }),
    );
    broker
        .wait_for("hello announcing 250 ms", |m| {
            is(m, id, TopicKind::Hello)
                && codec::decode::<Hello>(&m.payload).is_ok_and(|h| h.heartbeat_ms == 250)
        })
        .await;

    // Garbage and out-of-range values are counted, never fatal.
    broker.publish(&cmd, b"\xffnot a command".to_vec());
    broker.publish(
        &cmd,
        br#"{"id":2,"action":{"setTelemetryInterval":{"ms":0}}}"#.to_vec(),
    );
    eventually("two rejected commands", || {
        module.stats().rejected_commands == 2
    })
    .await;

    // Reboot: clean reconnect (no last will), then hello and sequences from 0 again.
    broker.publish(&cmd, send(3, CommandAction::Reboot));
    broker
        .wait_for("hello after reboot", |m| {
            is(m, id, TopicKind::Hello)
                && codec::decode::<Hello>(&m.payload).is_ok_and(|h| h.heartbeat_ms == 400)
        })
        .await;
    let heartbeat = broker
        .wait_for("heartbeat after reboot", |m| {
            is(m, id, TopicKind::Heartbeat)
        })
        .await;
    let heartbeat: Heartbeat = codec::decode(&heartbeat.payload).unwrap();
    assert_eq!(heartbeat.seq, 0);
    assert!(heartbeat.uptime_ms < 5_000, "{heartbeat:?}");
    // A clean close: the module says `offline` itself (an external broker passes nothing
    // else on), once; no last will (it would be a second one).
    let statuses: Vec<_> = broker
        .log
        .iter()
        .filter(|m| is(m, id, TopicKind::Status))
        .collect();
    assert_eq!(statuses.len(), 1, "no last will on reboot: {statuses:?}");
    assert_eq!(&statuses[0].payload[..], mc_protocol::STATUS_OFFLINE);
    let stats = module.stats();
    assert_eq!((stats.connects, stats.commands), (2, 4), "{stats:?}");

    // The same reboot again (its acknowledgement was lost, say): answered, not run again. The
    // next command is handled after it, so once its hello is out the repeat was seen.
    broker.publish(&cmd, send(3, CommandAction::Reboot));
    broker.publish(
        &cmd,
        send(4, CommandAction::SetHeartbeatInterval { ms: 300 }),
    );
    broker
        .wait_for("hello announcing 300 ms", |m| {
            is(m, id, TopicKind::Hello)
                && codec::decode::<Hello>(&m.payload).is_ok_and(|h| h.heartbeat_ms == 300)
        })
        .await;
    let stats = module.stats();
    assert_eq!((stats.connects, stats.commands), (2, 6), "{stats:?}");

    stop(sim, shutdown).await;
}

#[tokio::test]
async fn payload_faults_and_heartbeat_stop() {
    let mut broker = TestBroker::start();
    let id = "SIM-C-001";
    let shutdown = CancellationToken::new();
    let sim = firmware_sim::start(config(&broker), credentials(&[id]), shutdown.clone());
    let module = sim.module(id).unwrap().clone();
    let last = broker
        .wait_for("telemetry", |m| is(m, id, TopicKind::Telemetry))
        .await;

    // RepeatTelemetry: the exact same bytes again. Other telemetry may come in between.
    module.inject(Fault::RepeatTelemetry);
    let mut payloads = vec![last.payload];
    broker
        .wait_for("a repeated telemetry payload", |m| {
            if !is(m, id, TopicKind::Telemetry) {
                return false;
            }
            let duplicate = payloads.contains(&m.payload);
            payloads.push(m.payload.clone());
            duplicate
        })
        .await;

    // SendGarbage: undecodable bytes on the telemetry topic.
    module.inject(Fault::SendGarbage);
    broker
        .wait_for("garbage", |m| {
            is(m, id, TopicKind::Telemetry) && codec::decode::<Telemetry>(&m.payload).is_err()
        })
        .await;
    eventually("garbage counted", || module.stats().garbage == 1).await;

    // Burst: n consecutive seqs back to back.
    let before = module.stats().telemetry;
    module.inject(Fault::Burst(20));
    eventually("burst sent", || module.stats().telemetry >= before + 20).await;

    // StopHeartbeats: telemetry continues, heartbeats do not.
    module.inject(Fault::StopHeartbeats);
    let heartbeats = module.stats().heartbeats;
    let telemetry = module.stats().telemetry;
    eventually("telemetry continues", || {
        module.stats().telemetry >= telemetry + 10
    })
    .await;
    assert!(
        module.stats().heartbeats <= heartbeats + 1,
        "{:?}",
        module.stats()
    );
    module.inject(Fault::ResumeHeartbeats);
    let resumed = module.stats().heartbeats;
    eventually("heartbeats resume", || module.stats().heartbeats > resumed).await;

    // Disconnect: clean, no last will, offline until Reconnect.
    module.inject(Fault::Disconnect);
    eventually("offline", || !module.is_connected()).await;
    module.inject(Fault::Reconnect);
    eventually("back online", || module.is_connected()).await;
    broker
        .wait_for("hello after reconnect", |m| is(m, id, TopicKind::Hello))
        .await;
    let statuses: Vec<_> = broker
        .log
        .iter()
        .filter(|m| is(m, id, TopicKind::Status))
        .collect();
    assert_eq!(
        statuses.len(),
        1,
        "its own offline, no last will: {statuses:?}"
    );
    assert_eq!(&statuses[0].payload[..], mc_protocol::STATUS_OFFLINE);

    stop(sim, shutdown).await;
}
