//! The balancing methods layered over every policy: slow start, the service latency limit, and
//! the ranking parameters of `least-loaded` and of a `nearest` bias.
//!
//! Each of them changes a decision only in steps that the live table is rebuilt for:
//! - slow start ramps a datacenter's share of clients in [`SLOW_START_STEPS`] steps (a step is
//!   `slow_start_seconds / 20`), so the state manager's one-second refresh rebuilds the table
//!   when a step is crossed, never per query; the share is a number of hash buckets that stay,
//!   and the buckets past it spill to the next datacenter exactly like `nearest-with-capacity`'s
//!   spill, so one client network moves once and the ECS scope narrows to the hashed network;
//! - the latency limit is a flag with hysteresis, like the high watermark;
//! - `least-loaded` ranks by utilization rounded to whole per cent, so a map is rebuilt only
//!   when a datacenter's load moves by a per cent or more.
//!
//! Nothing here reads a clock: ages come with the state (`DcState::back_for`).

use std::time::Duration;

use crate::config::{SLOW_START_STEPS, ServiceConfig};

use super::live::DcState;
use super::{BUCKETS, ServiceId};

/// Where a datacenter is in its slow start for one service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ramp {
    /// Steps of [`SLOW_START_STEPS`] taken: the datacenter keeps `step / SLOW_START_STEPS` of its
    /// clients.
    pub step: u32,
    /// The whole ramp.
    pub over: Duration,
}

impl Ramp {
    /// The share of its clients the datacenter keeps, 0 to 1.
    pub fn share(&self) -> f64 {
        f64::from(self.step) / f64::from(SLOW_START_STEPS)
    }

    /// How many of the [`BUCKETS`] client-network buckets go on to the next datacenter.
    pub fn spill_buckets(&self) -> usize {
        BUCKETS - BUCKETS * self.step as usize / SLOW_START_STEPS as usize
    }

    /// In words, for explanations: "slow start: 40 % of 120 s".
    pub fn describe(&self) -> String {
        format!(
            "slow start: {:.0} % of {} s",
            self.share() * 100.0,
            self.over.as_secs()
        )
    }
}

/// Where `state` is in the slow start of `service` (`id`), and how long ago it began: `None`
/// when the service has none or the ramp is over (or its start is unknown: a datacenter that has
/// served all along). Eligibility is the caller's to judge.
pub fn slow_start(
    service: &ServiceConfig,
    id: ServiceId,
    state: &DcState,
) -> Option<(Ramp, Duration)> {
    let over = service.slow_start;
    if over.is_zero() {
        return None;
    }
    let back_for = state
        .back_for_services
        .iter()
        .filter(|(s, _)| *s == id)
        .map(|(_, age)| *age)
        .chain(state.back_for)
        .min()?;
    Some((ramp_at(back_for, over)?, back_for))
}

/// The ramp `elapsed` into one of length `over`: a step is taken every `over / STEPS`, starting
/// at step 0 (no clients) and done at `over`.
pub fn ramp_at(elapsed: Duration, over: Duration) -> Option<Ramp> {
    if elapsed >= over || over.is_zero() {
        return None;
    }
    let step = elapsed.as_nanos() * u128::from(SLOW_START_STEPS) / over.as_nanos();
    Some(Ramp {
        step: u32::try_from(step).expect("below SLOW_START_STEPS"),
        over,
    })
}

/// When the ramp `elapsed` into one of length `over` takes its next step (or ends), measured
/// from now: the state manager rebuilds the table then.
pub fn next_step_in(elapsed: Duration, over: Duration) -> Option<Duration> {
    let ramp = ramp_at(elapsed, over)?;
    let at = over.as_nanos() * u128::from(ramp.step + 1) / u128::from(SLOW_START_STEPS);
    let at = Duration::from_nanos(u64::try_from(at).unwrap_or(u64::MAX));
    Some(at.saturating_sub(elapsed))
}

/// Whether a datacenter reporting `latency_ms` is over the service's limit: above it, or, if it
/// was over already, not yet `hysteresis` (a share of the limit) below it.
pub(super) fn still_slow(
    was: bool,
    latency_ms: Option<f64>,
    limit: Option<f64>,
    hysteresis: f64,
) -> bool {
    let (Some(latency), Some(limit)) = (latency_ms, limit) else {
        return false;
    };
    if was {
        latency > limit * (1.0 - hysteresis)
    } else {
        latency > limit
    }
}

/// `least-loaded`: the utilization a datacenter is ranked by, rounded to whole per cent so that
/// small load changes do not rebuild the decision map; no report counts as empty.
pub(super) fn load_rank(state: &DcState) -> f64 {
    state.report.as_ref().map_or(0.0, |report| {
        let utilization = report.utilization();
        if utilization.is_finite() {
            (utilization * 100.0).round() / 100.0
        } else {
            f64::MAX
        }
    })
}
