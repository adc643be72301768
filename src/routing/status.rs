//! The one vocabulary for a datacenter's state, and its words.
//!
//! [`Standing`] is where a datacenter stands for one service (routing decides by it);
//! [`DcStatus`] is its state on its own (the `meridian_datacenter_state` gauge and
//! `GET /v1/datacenters`). Each has one `label`, so metrics, the HTTP API and explanations say
//! the same words. Nothing here decides eligibility beyond what `Standing` already does.

use super::live::{DcState, Standing};

/// A datacenter's state on its own: drained, never reported, reporting itself down, or
/// reporting healthy with a fresh or an old report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DcStatus {
    /// Reporting, and its latest report is recent.
    Fresh,
    /// Its latest report is older than its TTL.
    Stale,
    /// Its latest report says it cannot serve.
    Down,
    /// Has never reported (or its reports were not restored).
    Unreported,
    /// Drained by an operator for every service: never ranked first.
    Drained,
}

impl DcStatus {
    /// Every status, in the order their series are written.
    pub const ALL: [DcStatus; 5] = [
        DcStatus::Fresh,
        DcStatus::Stale,
        DcStatus::Down,
        DcStatus::Unreported,
        DcStatus::Drained,
    ];

    /// The status of a datacenter in `state`: drained first, then no report, then a report
    /// that says down, then the report's freshness.
    pub fn of(state: &DcState) -> DcStatus {
        match &state.report {
            _ if state.drained => DcStatus::Drained,
            Some(report) if !report.healthy => DcStatus::Down,
            _ => DcStatus::freshness(state),
        }
    }

    /// How recent the latest report of `state` is, whatever it says: `Fresh`, `Stale` or
    /// `Unreported`.
    pub fn freshness(state: &DcState) -> DcStatus {
        match &state.report {
            None => DcStatus::Unreported,
            Some(report) if report.age <= report.ttl => DcStatus::Fresh,
            Some(_) => DcStatus::Stale,
        }
    }

    /// The word for it, in lower case.
    pub fn label(self) -> &'static str {
        match self {
            DcStatus::Fresh => "fresh",
            DcStatus::Stale => "stale",
            DcStatus::Down => "down",
            DcStatus::Unreported => "unreported",
            DcStatus::Drained => "drained",
        }
    }
}

impl Standing {
    /// The word for it, in lower case with hyphens.
    pub fn label(&self) -> &'static str {
        match self {
            Standing::Healthy => "healthy",
            Standing::Unreported => "unreported",
            Standing::Stale { .. } => "stale",
            Standing::Drained => "drained",
            Standing::ReportedDown => "down",
            Standing::StalePastGrace { .. } => "stale-past-grace",
            Standing::NoReport => "no-report",
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::routing::ReportState;

    fn state(drained: bool, report: Option<(bool, u64)>) -> DcState {
        DcState {
            drained,
            drained_services: Vec::new(),
            report: report.map(|(healthy, age)| ReportState {
                healthy,
                capacity: 10.0,
                load: 1.0,
                latency_ms: Default::default(),
                cost: None,
                service_latency_ms: None,
                age: Duration::from_secs(age),
                ttl: Duration::from_secs(30),
            }),
            unverified: false,
            back_for: None,
            back_for_services: Vec::new(),
        }
    }

    #[test]
    fn status_order_and_words() {
        let cases = [
            (state(true, Some((true, 1))), DcStatus::Drained, "drained"),
            (state(false, None), DcStatus::Unreported, "unreported"),
            (state(false, Some((false, 1))), DcStatus::Down, "down"),
            (state(false, Some((false, 99))), DcStatus::Down, "down"),
            (state(false, Some((true, 30))), DcStatus::Fresh, "fresh"),
            (state(false, Some((true, 31))), DcStatus::Stale, "stale"),
        ];
        for (state, status, label) in cases {
            assert_eq!(DcStatus::of(&state), status, "{state:?}");
            assert_eq!(status.label(), label);
        }
        // Freshness ignores drains and health.
        assert_eq!(
            DcStatus::freshness(&state(true, Some((false, 1)))),
            DcStatus::Fresh
        );
        let labels: Vec<&str> = DcStatus::ALL.iter().map(|s| s.label()).collect();
        assert_eq!(labels, ["fresh", "stale", "down", "unreported", "drained"]);
    }
}
