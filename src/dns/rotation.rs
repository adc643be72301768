//! Address rotation (`rotation: cyclic | random`, BIND's `rrset-order`): which of a ranking's
//! prepared orders of addresses a query gets.
//!
//! Every order is prepared with the ranking's records (`routed.rs`), so a query only picks an
//! index: `cyclic` takes the next order after the one the last query of the same ranking got,
//! `random` one at random. The state is per thread (each UDP worker and each runtime thread has
//! its own), so no cache line is shared between workers: a worker's successive answers of one
//! ranking cycle in order, and workers start at random places.
//!
//! One query may route twice (the UDP fast path, then the general path when the fast path
//! leaves the query to it): both must send the same bytes, so the turn is advanced once per
//! query, not per routing. [`next_query`] marks the start of a query (`Handler::answer` calls
//! it); routing within the same query reads the same turn. What this does not do: count or
//! coordinate across threads or instances, which would cost a shared write per query and buy
//! nothing a resolver could tell apart.

use std::cell::Cell;

use crate::config::Rotation;

/// Turns kept per thread; (service, ranking, family) keys share a slot when they hash alike,
/// which only makes their rotations advance together.
const SLOTS: usize = 256;

/// One slot's state: the query that last advanced it, and the turn it reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Turn {
    /// The thread's query sequence number when the slot last advanced; [`UNUSED`] before.
    query: u64,
    /// Increases by one per query (`cyclic`), or any number (`random`).
    turn: u32,
}

/// A slot no query has advanced.
const UNUSED: u64 = u64::MAX;

thread_local! {
    /// This thread's query sequence number, bumped by [`next_query`].
    static QUERY: Cell<u64> = const { Cell::new(0) };
    /// This thread's turns, by slot.
    static TURNS: [Cell<Turn>; SLOTS] =
        const { [const { Cell::new(Turn { query: UNUSED, turn: 0 }) }; SLOTS] };
}

/// Marks the start of a new query on this thread: the next [`order`] of each ranking advances.
pub(crate) fn next_query() {
    QUERY.with(|query| query.set(query.get().wrapping_add(1)));
}

/// The order (`0..n`) that this query gets of a ranking with `n` prepared orders, `key`
/// identifying the ranking and address family: the same for every call within one query.
pub(crate) fn order(rotation: Rotation, key: u64, n: usize) -> usize {
    if n <= 1 || rotation == Rotation::Fixed {
        return 0;
    }
    let query = QUERY.with(Cell::get);
    let turn = TURNS.with(|turns| {
        let slot = &turns[slot_of(key)];
        let turn = advanced(slot.get(), query, rotation, fastrand::u32(..));
        slot.set(turn);
        turn.turn
    });
    turn as usize % n
}

/// The slot of a ranking's `key` (a multiplicative hash: keys differ in their low bits).
fn slot_of(key: u64) -> usize {
    (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - SLOTS.trailing_zeros())) as usize
}

/// `turn` as `query` finds it: unchanged within the query that last advanced it; else the next
/// turn (`cyclic`) or `random` (`random`, and the first turn of a slot, so that workers do not
/// all start at the first address).
fn advanced(turn: Turn, query: u64, rotation: Rotation, random: u32) -> Turn {
    if turn.query == query {
        return turn;
    }
    let next = match rotation {
        Rotation::Cyclic if turn.query != UNUSED => turn.turn.wrapping_add(1),
        _ => random,
    };
    Turn { query, turn: next }
}

/// Which slot the rotation of `service`'s `ranking` in an address family (`aaaa`) advances.
pub(crate) fn key(service: u16, ranking: u32, aaaa: bool) -> u64 {
    (u64::from(service) << 33) | (u64::from(ranking) << 1) | u64::from(aaaa)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_turn_advances_once_per_query() {
        let start = Turn {
            query: UNUSED,
            turn: 0,
        };
        // Rotation, queries seen in order, random draws, turns expected.
        type Case = (Rotation, &'static [u64], &'static [u32], &'static [u32]);
        #[rustfmt::skip]
        let cases: &[Case] = &[
            // cyclic: starts at random, then one further per query, never twice in a query.
            (Rotation::Cyclic, &[1, 2, 3, 4], &[7, 0, 0, 0], &[7, 8, 9, 10]),
            (Rotation::Cyclic, &[1, 1, 2, 2, 2, 3], &[5, 9, 9, 9, 9, 9], &[5, 5, 6, 6, 6, 7]),
            // Queries of other rankings in between (the sequence jumps): still the next turn.
            (Rotation::Cyclic, &[3, 10, 11, 40], &[0, 1, 2, 3], &[0, 1, 2, 3]),
            (Rotation::Cyclic, &[1, 2], &[u32::MAX, 0], &[u32::MAX, 0]),
            // random: a fresh draw per query, kept within it.
            (Rotation::Random, &[1, 2, 2, 3], &[4, 9, 1, 6], &[4, 9, 9, 6]),
        ];
        for &(rotation, queries, draws, expected) in cases {
            let mut turn = start;
            let mut got = Vec::new();
            for (&query, &draw) in queries.iter().zip(draws) {
                turn = advanced(turn, query, rotation, draw);
                got.push(turn.turn);
            }
            assert_eq!(got, expected, "{rotation:?} over queries {queries:?}");
        }
    }

    #[test]
    fn cyclic_orders_go_round_in_order_and_repeat_within_a_query() {
        let key = key(3, 17, false);
        for n in [2usize, 3, 5] {
            let mut got = Vec::new();
            for _ in 0..2 * n {
                next_query();
                let first = order(Rotation::Cyclic, key, n);
                assert_eq!(order(Rotation::Cyclic, key, n), first, "same query");
                got.push(first);
            }
            for pair in got.windows(2) {
                assert_eq!(pair[1], (pair[0] + 1) % n, "{got:?}");
            }
        }
    }

    #[test]
    fn fixed_and_single_orders_are_always_the_first() {
        for _ in 0..5 {
            next_query();
            assert_eq!(order(Rotation::Fixed, key(0, 0, false), 4), 0);
            assert_eq!(order(Rotation::Cyclic, key(0, 1, false), 1), 0);
            assert_eq!(order(Rotation::Random, key(0, 2, true), 1), 0);
        }
    }

    #[test]
    fn random_orders_cover_every_order() {
        let n = 4;
        let mut seen = [0u32; 4];
        // The chance that 400 draws miss one of 4 orders is below 4 × (3/4)^400, about 1e-49.
        for _ in 0..400 {
            next_query();
            let order = order(Rotation::Random, key(1, 2, true), n);
            seen[order] += 1;
        }
        assert!(seen.iter().all(|&count| count > 0), "{seen:?}");
    }

    #[test]
    fn keys_of_neighbouring_rankings_and_families_take_different_slots() {
        let slots: std::collections::HashSet<usize> = (0..64)
            .flat_map(|ranking| [key(0, ranking, false), key(0, ranking, true)])
            .map(slot_of)
            .collect();
        assert!(slots.len() > 100, "{} slots", slots.len());
    }
}
