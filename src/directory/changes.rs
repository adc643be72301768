//! Measuring a bulk change before it is made: how many pins it adds, changes and removes, and
//! how many users it moves. Pure: the control plane turns these counts into its change-limit
//! decision and report; nothing here applies a change.
//!
//! Placements are compared by datacenter name, as changes arrive: a name the directory does not
//! know yet counts as a change.

use std::collections::HashMap;

use super::{Directory, Placement};

/// A wanted pin: a home and a replica datacenter by name, or `None` to remove the pin.
pub type WantedPin<'a> = Option<(&'a str, &'a str)>;

/// What a set of pin changes would do to a directory.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PinChanges {
    /// Distinct users listed.
    pub users: usize,
    /// Users pinned who were not.
    pub added: usize,
    /// Pins that change placement.
    pub changed: usize,
    /// Pins removed.
    pub removed: usize,
    /// Users whose placement in effect (pin, else bucket) changes.
    pub moved: usize,
}

impl Directory {
    /// Counts what setting each listed user's pin would do; the last entry of a user wins, as
    /// when the change is applied. Users not listed keep their pins.
    pub fn count_pin_changes<'a>(
        &self,
        pins: impl IntoIterator<Item = (&'a str, WantedPin<'a>)>,
    ) -> PinChanges {
        let last: HashMap<&str, WantedPin<'a>> = pins.into_iter().collect();
        let mut res = PinChanges {
            users: last.len(),
            ..PinChanges::default()
        };
        for (user, wanted) in last {
            let entry = self.lookup(user);
            let current = self.pin(user);
            let in_effect = self.names(entry.placement);
            match (wanted, current) {
                (Some(wanted), None) => {
                    res.added += 1;
                    res.moved += usize::from(wanted != in_effect);
                }
                (Some(wanted), Some(pin)) if wanted != self.names(pin) => {
                    res.changed += 1;
                    res.moved += 1;
                }
                (None, Some(pin)) => {
                    res.removed += 1;
                    let bucket = self.bucket(entry.bucket);
                    res.moved += usize::from(bucket != pin);
                }
                (Some(_), Some(_)) | (None, None) => {}
            }
        }
        res
    }

    /// Counts what replacing every pin by `pins` would do: as [`Directory::count_pin_changes`],
    /// and every pin not listed is removed. Removals of unlisted pins are counted without
    /// walking the pins, so `moved` leaves them out.
    pub fn count_pin_replacement<'a>(
        &self,
        pins: impl IntoIterator<Item = (&'a str, (&'a str, &'a str))>,
    ) -> PinChanges {
        let pins: Vec<(&str, (&str, &str))> = pins.into_iter().collect();
        let mut res = self.count_pin_changes(pins.iter().map(|(user, p)| (*user, Some(*p))));
        let mut listed: Vec<&str> = pins.iter().map(|(user, _)| *user).collect();
        listed.sort_unstable();
        listed.dedup();
        let kept = listed
            .iter()
            .filter(|user| self.pin(user).is_some())
            .count();
        res.removed += self.n_pins() - kept;
        res
    }

    /// How many of `buckets` (index, home and replica by name) change placement; an index past
    /// the directory's buckets counts as a change.
    pub fn count_bucket_changes<'a>(
        &self,
        buckets: impl IntoIterator<Item = (u32, (&'a str, &'a str))>,
    ) -> usize {
        buckets
            .into_iter()
            .filter(|(bucket, wanted)| {
                *bucket >= self.n_buckets() || self.names(self.bucket(*bucket)) != *wanted
            })
            .count()
    }

    /// The home and replica names of `placement`.
    pub fn names(&self, placement: Placement) -> (&str, &str) {
        (
            &self.dc_names[usize::from(placement.home)],
            &self.dc_names[usize::from(placement.replica)],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        ["a", "b", "c"].map(str::to_owned).to_vec()
    }

    fn p(home: u16, replica: u16) -> Placement {
        Placement { home, replica }
    }

    /// Two buckets, both (a, b); `pinned` is pinned to (c, a).
    fn directory() -> Directory {
        Directory::new(
            names(),
            vec![p(0, 1); 2],
            vec![("pinned".to_owned(), p(2, 0))],
        )
    }

    #[test]
    fn pins_added_changed_removed_and_moved() {
        let d = directory();
        let changes = d.count_pin_changes([
            // New pin equal to the bucket: added, not moved.
            ("same-as-bucket", Some(("a", "b"))),
            // New pin elsewhere: added and moved.
            ("new", Some(("b", "c"))),
            // The existing pin, unchanged, listed twice: the last entry wins.
            ("pinned", Some(("a", "a"))),
            ("pinned", Some(("c", "a"))),
            // Removing a pin nobody has: nothing.
            ("nobody", None),
        ]);
        assert_eq!(
            changes,
            PinChanges {
                users: 4,
                added: 2,
                changed: 0,
                removed: 0,
                moved: 1,
            }
        );
        let changes = d.count_pin_changes([("pinned", Some(("b", "a")))]);
        assert_eq!((changes.changed, changes.moved), (1, 1));
        let changes = d.count_pin_changes([("pinned", None)]);
        assert_eq!((changes.removed, changes.moved), (1, 1));
        // An unknown datacenter name is a change.
        let changes = d.count_pin_changes([("pinned", Some(("mars", "a")))]);
        assert_eq!(changes.changed, 1);
    }

    #[test]
    fn a_replacement_removes_the_pins_it_does_not_list() {
        let d = Directory::new(
            names(),
            vec![p(0, 1); 2],
            vec![
                ("x".to_owned(), p(2, 0)),
                ("y".to_owned(), p(2, 0)),
                ("z".to_owned(), p(2, 0)),
            ],
        );
        let changes =
            d.count_pin_replacement([("x", ("c", "a")), ("x", ("c", "a")), ("new", ("b", "c"))]);
        assert_eq!((changes.added, changes.changed, changes.removed), (1, 0, 2));
        let changes = d.count_pin_replacement([]);
        assert_eq!(changes.removed, 3);
    }

    #[test]
    fn bucket_changes() {
        let d = directory();
        assert_eq!(
            d.count_bucket_changes([(0, ("a", "b")), (1, ("b", "a"))]),
            1
        );
        assert_eq!(d.count_bucket_changes([(2, ("a", "b"))]), 1);
        assert_eq!(d.count_bucket_changes([]), 0);
    }
}
