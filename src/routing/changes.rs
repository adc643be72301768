//! Which services a change of live state can touch, so that a rebuild of the live table judges
//! only those again and carries the others over whole.
//!
//! A service depends only on the datacenters of its pool, and on each of them only through what
//! `ServiceFacts::judge` reads: its standing (eligible or not) and slow-start step for the
//! service, and the fields of its state and report. The passing of time changes only report
//! ages and the time since a datacenter came back, so for a datacenter whose state changed in
//! nothing else, a service is touched only if its standing's eligibility or its ramp step moved.
//!
//! This module does not judge anything itself: it is a conservative filter in front of the
//! judging (a service it reports as touched may come out unchanged), and the property test in
//! `changes_tests.rs` checks that a table built through it is the table a full build makes.

use crate::config::{Config, Policy};

use super::balance;
use super::base::BaseTable;
use super::live::{DcState, ReportState, Standing};
use super::toggles::Toggles;

/// Whether each service (by `ServiceId`) may be built differently from `after` than it was
/// from `before` (both indexed by `DcId`, for the same configuration), under `toggles`.
pub(super) fn affected(
    base: &BaseTable,
    config: &Config,
    before: &[DcState],
    after: &[DcState],
    toggles: Toggles,
) -> Vec<bool> {
    let mut affected = vec![false; config.services.len()];
    let ramping = |state: &DcState| state.back_for.is_some() || !state.back_for_services.is_empty();
    for (d, (b, a)) in before.iter().zip(after).enumerate() {
        let change = Change::between(b, a);
        // Whether the clock can have moved the datacenter's standing for some service: not
        // while its report was fresh both times (fresh is fresh whatever a service's grace),
        // nor when it had none either time.
        let aged = match (&b.report, &a.report) {
            (Some(b), Some(a)) => b.age > b.ttl || a.age > a.ttl,
            (None, None) => false,
            _ => true,
        };
        // Only the clock moved, and it can move neither a standing nor a ramp: no service of
        // its pool is touched. This is every datacenter but the reporting one, so a report
        // costs the services holding that one only.
        if change == Change::None || change == Change::Time && !aged && !ramping(b) && !ramping(a) {
            continue;
        }
        for &id in &base.holders[d] {
            let i = usize::from(id.0);
            if affected[i] {
                continue;
            }
            let service = &config.services[i];
            let policy = toggles.policy(service.policy);
            // What of a report's load the service reads: capacity-aware policies compare
            // utilization with the watermarks, and `least-loaded` ranks by it.
            let reads_load = policy.uses_capacity() || policy == Policy::LeastLoaded;
            affected[i] = match change {
                Change::Other => true,
                Change::Load if reads_load => true,
                Change::Load | Change::Time => {
                    let dc = &config.datacenters[d];
                    let eligible =
                        |state: &DcState| Standing::of(dc, state, id, service).is_eligible();
                    let step = |state: &DcState| {
                        balance::slow_start(service, id, state).map(|(ramp, _)| ramp)
                    };
                    (aged && eligible(b) != eligible(a))
                        || (!service.slow_start.is_zero() && step(b) != step(a))
                }
                Change::None => false,
            };
        }
    }
    affected
}

/// How one datacenter's state moved between two builds.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Change {
    /// Equal.
    None,
    /// Only in what the passing of time moves: its report's age, how long it has been back.
    Time,
    /// Also in its report's load or capacity (and nothing else).
    Load,
    /// In anything else.
    Other,
}

impl Change {
    fn between(before: &DcState, after: &DcState) -> Change {
        if before == after {
            return Change::None;
        }
        // Destructured so that a new field cannot be forgotten here.
        let DcState {
            drained,
            drained_services,
            report,
            unverified,
            back_for,
            back_for_services,
        } = before;
        let same_services = back_for_services
            .iter()
            .map(|(s, _)| s)
            .eq(after.back_for_services.iter().map(|(s, _)| s));
        if *drained != after.drained
            || *drained_services != after.drained_services
            || *unverified != after.unverified
            || back_for.is_some() != after.back_for.is_some()
            || !same_services
        {
            return Change::Other;
        }
        match (report, &after.report) {
            (None, None) => Change::Time,
            (Some(b), Some(a)) => {
                let ReportState {
                    healthy,
                    capacity,
                    load,
                    latency_ms,
                    cost,
                    service_latency_ms,
                    age: _,
                    ttl,
                } = b;
                if *healthy != a.healthy
                    || *latency_ms != a.latency_ms
                    || cost.map(f64::to_bits) != a.cost.map(f64::to_bits)
                    || service_latency_ms.map(f64::to_bits)
                        != a.service_latency_ms.map(f64::to_bits)
                    || *ttl != a.ttl
                {
                    Change::Other
                } else if capacity.to_bits() != a.capacity.to_bits()
                    || load.to_bits() != a.load.to_bits()
                {
                    Change::Load
                } else {
                    Change::Time
                }
            }
            _ => Change::Other,
        }
    }
}
