//! Feature toggles: capabilities an operator can switch off at runtime, each on its own.
//!
//! [`Toggles`] is a plain value (one bit per toggle that is off) that the state manager keeps
//! in the live state, persists, and hands to [`RoutingTable::build`](super::RoutingTable::build)
//! with every other input: a change rebuilds the decision maps it affects, like any state change.
//! The routing-facing toggles are read here ([`Toggles::policy`], [`Toggles::overrides`]); the
//! others (`fast_path`, `rrl`, `directory_dns`) are read by the query side from the snapshot.
//!
//! It does not decide who may switch a toggle, store it or count it: the control plane, the
//! store and the state manager do.

use crate::config::Policy;

/// One capability that can be switched off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Toggle {
    /// `nearest-with-capacity` and `cascade` shed load by watermarks; off: they rank as
    /// `nearest` and `failover`.
    CapacitySpill,
    /// `metric` ranks by reported latency and cost; off: it ranks as `nearest`.
    MetricRanking,
    /// A recovering datacenter takes a growing share of clients; off: it takes its full share.
    SlowStart,
    /// Per-network, per-country and per-continent overrides apply; off: they are ignored
    /// (geofences still apply).
    Overrides,
    /// The UDP fast path answers what it recognises; off: every query takes the general path.
    FastPath,
    /// Response rate limiting of UDP replies, when configured; off: every reply is sent.
    Rrl,
    /// The user directory answers over DNS; off: its names are REFUSED (HTTP lookups go on).
    DirectoryDns,
}

impl Toggle {
    /// Every toggle, in the order listings show them.
    pub const ALL: [Toggle; 7] = [
        Toggle::CapacitySpill,
        Toggle::MetricRanking,
        Toggle::SlowStart,
        Toggle::Overrides,
        Toggle::FastPath,
        Toggle::Rrl,
        Toggle::DirectoryDns,
    ];

    /// The toggle's name in the API, metrics and the store.
    pub fn name(self) -> &'static str {
        match self {
            Toggle::CapacitySpill => "capacity_spill",
            Toggle::MetricRanking => "metric_ranking",
            Toggle::SlowStart => "slow_start",
            Toggle::Overrides => "overrides",
            Toggle::FastPath => "fast_path",
            Toggle::Rrl => "rrl",
            Toggle::DirectoryDns => "directory_dns",
        }
    }

    /// The toggle named `name`.
    pub fn named(name: &str) -> Option<Toggle> {
        Toggle::ALL.into_iter().find(|t| t.name() == name)
    }

    /// What switching it off does, in words.
    pub fn when_off(self) -> &'static str {
        match self {
            Toggle::CapacitySpill => {
                "nearest-with-capacity services rank as nearest, cascade services as failover"
            }
            Toggle::MetricRanking => "metric services rank as nearest",
            Toggle::SlowStart => "recovering datacenters take their full share at once",
            Toggle::Overrides => "per-network, country and continent overrides are ignored",
            Toggle::FastPath => "every UDP query takes the general path",
            Toggle::Rrl => "UDP replies are not rate limited",
            Toggle::DirectoryDns => "user directory names are REFUSED over DNS",
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// Which toggles are on. The default has every toggle on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Toggles {
    /// One bit per toggle that is off, so the default (0) is all on.
    off: u8,
}

impl Toggles {
    /// Whether `toggle` is on.
    pub fn is_on(self, toggle: Toggle) -> bool {
        self.off & toggle.bit() == 0
    }

    /// These toggles with `toggle` switched `on` or off.
    #[must_use]
    pub fn with(self, toggle: Toggle, on: bool) -> Toggles {
        let off = if on {
            self.off & !toggle.bit()
        } else {
            self.off | toggle.bit()
        };
        Toggles { off }
    }

    /// The toggles that are off.
    pub fn off(self) -> impl Iterator<Item = Toggle> {
        Toggle::ALL.into_iter().filter(move |t| !self.is_on(*t))
    }

    /// The policy a service configured with `policy` ranks by under these toggles.
    pub fn policy(self, policy: Policy) -> Policy {
        match policy {
            Policy::NearestWithCapacity if !self.is_on(Toggle::CapacitySpill) => Policy::Nearest,
            Policy::Cascade if !self.is_on(Toggle::CapacitySpill) => Policy::Failover,
            Policy::Metric if !self.is_on(Toggle::MetricRanking) => Policy::Nearest,
            other => other,
        }
    }

    /// Whether overrides apply.
    pub fn overrides(self) -> bool {
        self.is_on(Toggle::Overrides)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_distinct() {
        for toggle in Toggle::ALL {
            assert_eq!(Toggle::named(toggle.name()), Some(toggle));
        }
        assert_eq!(Toggle::named("spill"), None);
    }

    #[test]
    fn each_toggle_switches_alone() {
        let all = Toggles::default();
        for toggle in Toggle::ALL {
            assert!(all.is_on(toggle));
            let off = all.with(toggle, false);
            for other in Toggle::ALL {
                assert_eq!(off.is_on(other), other != toggle, "{toggle:?} {other:?}");
            }
            assert_eq!(off.off().collect::<Vec<_>>(), vec![toggle]);
            assert_eq!(off.with(toggle, true), all);
        }
    }

    #[test]
    fn policies_fall_back_to_nearest() {
        let cases = [
            (
                Toggle::CapacitySpill,
                Policy::NearestWithCapacity,
                Policy::Nearest,
            ),
            (Toggle::CapacitySpill, Policy::Metric, Policy::Metric),
            (Toggle::MetricRanking, Policy::Metric, Policy::Nearest),
            (
                Toggle::MetricRanking,
                Policy::NearestWithCapacity,
                Policy::NearestWithCapacity,
            ),
            (Toggle::Overrides, Policy::Weighted, Policy::Weighted),
            (Toggle::Overrides, Policy::Failover, Policy::Failover),
        ];
        for (toggle, configured, effective) in cases {
            assert_eq!(Toggles::default().policy(configured), configured);
            assert_eq!(
                Toggles::default().with(toggle, false).policy(configured),
                effective,
                "{toggle:?} {configured:?}"
            );
        }
    }
}
