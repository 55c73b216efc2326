//! The last known readings of every module, and the diff that decides what clients hear.
//!
//! Each module has a revision number that grows by one per *effective* change, so clients can
//! detect a missed event (a gap in revisions). An update is compared field by field with the
//! cache; a reading moves only when it differs by more than its deadband (0 by default: any
//! change). Nothing changed → no event. Sequence numbers catch duplicates and reordering.

use std::collections::HashMap;

use mc_protocol::{ModuleId, ReadingName, Telemetry};
use serde::{Deserialize, Serialize};

/// Per-reading deadbands, e.g. `temperature = 0.05`: a change of at most this much is ignored.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Deadbands(pub HashMap<String, f32>);

/// What applying a telemetry message did.
#[derive(Debug, Clone, PartialEq)]
pub enum TelemetryOutcome {
    /// Some readings changed: emit them.
    Changed(TelemetryDiff),
    /// Same values as the cache (within deadbands): emit nothing.
    Unchanged,
    /// Same sequence number as the last applied message: dropped.
    Duplicate,
    /// Older sequence number than the last applied message: dropped.
    OutOfOrder,
}

/// The readings that changed, and the module's new revision.
#[derive(Debug, Clone, PartialEq)]
pub struct TelemetryDiff {
    /// Changed readings with their new values, in message order.
    pub changed: Vec<(ReadingName, f32)>,
    /// The module's revision after this change.
    pub rev: u64,
}

/// Counters of what the cache refused or saw.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct StateCounters {
    /// Messages with an already applied sequence number.
    pub duplicates: u64,
    /// Messages older than the last applied one.
    pub out_of_order: u64,
    /// Sequence numbers skipped (messages lost before the hub).
    pub gaps: u64,
}

/// The cached state of one module.
#[derive(Debug, Clone, Default)]
pub struct ModuleState {
    /// Last accepted value of each reading, in first-seen order (a small vec beats a map for ≤ 32).
    pub readings: Vec<(ReadingName, f32)>,
    /// Grows by one per effective change.
    pub rev: u64,
    /// True while the module is offline: the readings are its last known values.
    pub stale: bool,
    last_seq: Option<u32>,
}

/// All modules' cached state.
#[derive(Debug, Default)]
pub struct StateCache {
    modules: foldhash::HashMap<ModuleId, ModuleState>,
    deadbands: Deadbands,
    counters: StateCounters,
}

impl StateCache {
    /// An empty cache with these deadbands.
    pub fn new(deadbands: Deadbands) -> Self {
        Self {
            deadbands,
            ..Self::default()
        }
    }

    /// What the cache refused or saw so far.
    pub fn counters(&self) -> StateCounters {
        self.counters
    }

    /// The state of `module`, if it ever sent telemetry.
    pub fn get(&self, module: &ModuleId) -> Option<&ModuleState> {
        self.modules.get(module)
    }

    /// A new connection or hello: the module's sequence numbers start over.
    pub fn restart_sequence(&mut self, module: &ModuleId) {
        if let Some(state) = self.modules.get_mut(module) {
            state.last_seq = None;
        }
    }

    /// Marks the readings of `module` as stale (offline) or fresh.
    pub fn set_stale(&mut self, module: &ModuleId, stale: bool) {
        if let Some(state) = self.modules.get_mut(module) {
            state.stale = stale;
        }
    }

    /// Puts back the last known readings of `module` saved before a restart: marked stale
    /// until it reports, and its revision continues from `rev` so clients see no step back.
    /// Readings whose name is no longer valid are dropped.
    pub fn restore(&mut self, module: &ModuleId, readings: &[(String, f32)], rev: u64) {
        let readings = readings
            .iter()
            .filter_map(|(name, value)| Some((ReadingName::new(name).ok()?, *value)))
            .collect();
        self.modules.insert(
            module.clone(),
            ModuleState {
                readings,
                rev,
                stale: true,
                last_seq: None,
            },
        );
    }

    /// Forgets `module`.
    pub fn remove(&mut self, module: &ModuleId) {
        self.modules.remove(module);
    }

    /// Applies `telemetry` from `module`; see [`TelemetryOutcome`].
    pub fn apply(&mut self, module: &ModuleId, telemetry: &Telemetry) -> TelemetryOutcome {
        let state = match self.modules.get_mut(module) {
            Some(s) => s,
            None => self.modules.entry(module.clone()).or_default(),
        };
        if let Some(last) = state.last_seq {
            let ahead = telemetry.seq.wrapping_sub(last);
            if ahead == 0 {
                self.counters.duplicates += 1;
                return TelemetryOutcome::Duplicate;
            }
            if ahead > u32::MAX / 2 {
                self.counters.out_of_order += 1;
                return TelemetryOutcome::OutOfOrder;
            }
            self.counters.gaps += u64::from(ahead - 1);
        }
        state.last_seq = Some(telemetry.seq);
        state.stale = false;

        let mut changed = Vec::new();
        for (i, reading) in telemetry.readings.iter().enumerate() {
            let deadband = self
                .deadbands
                .0
                .get(reading.name.as_str())
                .copied()
                .unwrap_or(0.0);
            // A module sends its readings in the same order each time: look at the same place
            // first, then search.
            let cached = match state.readings.get(i) {
                Some((n, _)) if *n == reading.name => state.readings.get_mut(i),
                _ => state.readings.iter_mut().find(|(n, _)| *n == reading.name),
            };
            let moved = match cached {
                Some((_, cached)) => {
                    let moved = (reading.value - *cached).abs() > deadband;
                    if moved {
                        *cached = reading.value;
                    }
                    moved
                }
                None => {
                    state.readings.push((reading.name.clone(), reading.value));
                    true
                }
            };
            if moved {
                // One allocation for the diff, and none when nothing moved.
                if changed.capacity() == 0 {
                    changed.reserve_exact(telemetry.readings.len());
                }
                changed.push((reading.name.clone(), reading.value));
            }
        }
        if changed.is_empty() {
            return TelemetryOutcome::Unchanged;
        }
        state.rev += 1;
        TelemetryOutcome::Changed(TelemetryDiff {
            changed,
            rev: state.rev,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mc_protocol::Readings;

    fn telemetry(seq: u32, readings: &[(&str, f32)]) -> Telemetry {
        let mut r = Readings::new();
        for (n, v) in readings {
            r.push(n, *v).unwrap();
        }
        Telemetry { seq, readings: r }
    }

    fn changed(outcome: TelemetryOutcome) -> Vec<(String, f32)> {
        match outcome {
            TelemetryOutcome::Changed(d) => d
                .changed
                .into_iter()
                .map(|(n, v)| (n.to_string(), v))
                .collect(),
            other => panic!("expected a change, got {other:?}"),
        }
    }

    #[test]
    fn only_changed_readings_are_reported() {
        let mut cache = StateCache::default();
        let m = ModuleId::new("MC-1").unwrap();
        let first = changed(cache.apply(&m, &telemetry(1, &[("t", 21.5), ("h", 40.0)])));
        assert_eq!(first.len(), 2);
        assert_eq!(
            cache.apply(&m, &telemetry(2, &[("t", 21.5), ("h", 40.0)])),
            TelemetryOutcome::Unchanged
        );
        assert_eq!(
            changed(cache.apply(&m, &telemetry(3, &[("t", 21.6), ("h", 40.0)]))),
            vec![("t".to_string(), 21.6)]
        );
        assert_eq!(cache.get(&m).unwrap().rev, 2);
    }

    #[test]
    fn readings_are_matched_by_name_whatever_their_order() {
        let mut cache = StateCache::default();
        let m = ModuleId::new("MC-1").unwrap();
        cache.apply(&m, &telemetry(1, &[("a", 1.0), ("b", 2.0), ("c", 3.0)]));
        assert_eq!(
            changed(cache.apply(&m, &telemetry(2, &[("c", 3.0), ("a", 1.5), ("d", 4.0)]))),
            vec![("a".to_string(), 1.5), ("d".to_string(), 4.0)]
        );
        assert_eq!(
            cache.apply(
                &m,
                &telemetry(3, &[("b", 2.0), ("d", 4.0), ("a", 1.5), ("c", 3.0)])
            ),
            TelemetryOutcome::Unchanged
        );
        let names: Vec<_> = cache
            .get(&m)
            .unwrap()
            .readings
            .iter()
            .map(|(n, v)| (n.to_string(), *v))
            .collect();
        assert_eq!(
            names,
            [("a", 1.5), ("b", 2.0), ("c", 3.0), ("d", 4.0)].map(|(n, v)| (n.to_string(), v))
        );
    }

    #[test]
    fn duplicates_and_reordering_are_dropped_and_counted() {
        let mut cache = StateCache::default();
        let m = ModuleId::new("MC-1").unwrap();
        cache.apply(&m, &telemetry(10, &[("t", 1.0)]));
        assert_eq!(
            cache.apply(&m, &telemetry(10, &[("t", 2.0)])),
            TelemetryOutcome::Duplicate
        );
        assert_eq!(
            cache.apply(&m, &telemetry(9, &[("t", 3.0)])),
            TelemetryOutcome::OutOfOrder
        );
        assert_eq!(cache.get(&m).unwrap().readings[0].1, 1.0, "not applied");
        cache.apply(&m, &telemetry(13, &[("t", 4.0)]));
        let c = cache.counters();
        assert_eq!((c.duplicates, c.out_of_order, c.gaps), (1, 1, 2));
        // Wrap-around is "ahead", and a restart accepts any number.
        cache.restart_sequence(&m);
        cache.apply(&m, &telemetry(u32::MAX, &[("t", 5.0)]));
        assert!(matches!(
            cache.apply(&m, &telemetry(0, &[("t", 6.0)])),
            TelemetryOutcome::Changed(_)
        ));
    }

    #[test]
    fn deadband_suppresses_small_moves_but_not_drift() {
        let mut cache = StateCache::new(Deadbands([("t".to_string(), 0.5)].into()));
        let m = ModuleId::new("MC-1").unwrap();
        cache.apply(&m, &telemetry(1, &[("t", 20.0)]));
        assert_eq!(
            cache.apply(&m, &telemetry(2, &[("t", 20.4)])),
            TelemetryOutcome::Unchanged
        );
        assert_eq!(
            cache.apply(&m, &telemetry(3, &[("t", 20.3)])),
            TelemetryOutcome::Unchanged
        );
        assert_eq!(
            changed(cache.apply(&m, &telemetry(4, &[("t", 20.6)]))),
            vec![("t".into(), 20.6)]
        );
    }

    #[test]
    fn stale_until_fresh_telemetry() {
        let mut cache = StateCache::default();
        let m = ModuleId::new("MC-1").unwrap();
        cache.apply(&m, &telemetry(1, &[("t", 20.0)]));
        cache.set_stale(&m, true);
        assert!(cache.get(&m).unwrap().stale);
        assert_eq!(cache.get(&m).unwrap().readings.len(), 1, "readings kept");
        cache.apply(&m, &telemetry(2, &[("t", 20.0)]));
        assert!(!cache.get(&m).unwrap().stale);
    }
}
