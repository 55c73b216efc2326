//! firmware-sim against the real hub: the same path a field module takes.

use std::collections::HashSet;

use firmware_sim::{Fault, ModuleCredentials, SimConfig};
use mc_e2e::start_hub;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_modules_come_online_report_and_go_offline_on_faults() {
    let t = start_hub(|_| {}).await;
    t.add_user("admin@x.io", true).await;
    let mut credentials = Vec::new();
    for i in 0..10 {
        let id = format!("MC-{}-SIM", 3001 + i);
        let password = t.add_module(&id, None).await;
        credentials.push(ModuleCredentials {
            id: id.parse().expect("id"),
            password,
        });
    }
    let mut dash = t.dashboard("admin@x.io").await;
    let stop = CancellationToken::new();
    let config = SimConfig {
        broker: t.hub.mqtt_addr.to_string(),
        telemetry: std::time::Duration::from_millis(300),
        ..SimConfig::default()
    };
    let sim = firmware_sim::start(config, credentials, stop.clone());

    let mut online = HashSet::new();
    let mut reporting = HashSet::new();
    while online.len() < 10 || reporting.len() < 10 {
        let (event, data) = dash.next().await;
        let id = data["moduleId"].as_str().unwrap_or_default().to_owned();
        match event.as_str() {
            "rt_module_online" => online.insert(id),
            "rt_telemetry_updated" => {
                assert!(data["telemetry"].as_object().is_some_and(|t| !t.is_empty()));
                reporting.insert(id)
            }
            _ => false,
        };
    }

    // Fault injection: a dropped connection is noticed.
    let victim = &sim.modules()[0];
    victim.inject(Fault::DropConnection);
    let offline = dash
        .expect("rt_module_offline", mc_e2e::about(victim.id()))
        .await;
    assert_eq!(offline["reason"], "connection_lost");
    // It reconnects by itself.
    dash.expect("rt_module_online", mc_e2e::about(victim.id()))
        .await;
    // Garbage is counted, never an event.
    sim.modules()[1].inject(Fault::SendGarbage);
    mc_e2e::eventually("garbage counted", || {
        t.hub.metrics.rejections().values().sum::<u64>() > 0
    })
    .await;

    // A repeated message (same seq) is a duplicate: counted, never applied twice.
    let duplicates = t.hub.metrics.rejected("duplicate_seq");
    sim.modules()[2].inject(Fault::RepeatTelemetry);
    mc_e2e::eventually("repeat counted as a duplicate", || {
        t.hub.metrics.rejected("duplicate_seq") > duplicates
    })
    .await;
    // Without heartbeats, telemetry alone keeps a module online; a burst arrives whole.
    let burster = &sim.modules()[3];
    burster.inject(Fault::StopHeartbeats);
    let ingested = t.hub.metrics.messages_ingested.get();
    burster.inject(Fault::Burst(50));
    mc_e2e::eventually("burst ingested", || {
        t.hub.metrics.messages_ingested.get() >= ingested + 50
    })
    .await;
    assert!(
        t.hub
            .tracker
            .module(burster.id())
            .await
            .is_some_and(|m| m.online)
    );

    stop.cancel();
    sim.stopped().await;
}
