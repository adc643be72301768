//! The stable user hash and the bucket it selects.
//!
//! This file owns the one function that decides where a user lives by default. Its output is
//! part of meridian's contract with the data it routes: changing it moves users. It knows
//! nothing of datacenters or pins.

/// FNV-1a 64-bit offset basis.
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
/// FNV-1a 64-bit prime.
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// A stable 64-bit hash of a user id: `splitmix64(fnv1a64(the id's UTF-8 bytes))`.
///
/// The same on every platform and release (see the module documentation for the constants),
/// unlike `std`'s `DefaultHasher`, so a user keeps their bucket across restarts and upgrades.
pub fn user_hash(id: &str) -> u64 {
    hash_bytes(id.as_bytes())
}

/// The bucket of `id` among `n_buckets`: `user_hash(id) mod n_buckets`.
///
/// `n_buckets` should be a power of two, so that doubling it splits bucket `b` into `b` and
/// `b + n_buckets` and moves no user between unrelated buckets; the arithmetic itself is plain
/// `mod` for any count.
///
/// # Panics
///
/// If `n_buckets` is 0.
pub fn bucket_of(id: &str, n_buckets: u32) -> u32 {
    u32::try_from(user_hash(id) % u64::from(n_buckets))
        .expect("a remainder mod a u32 fits in a u32")
}

/// [`user_hash`] over raw bytes, for the pin index, which stores ids as bytes.
pub(super) fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut hash = FNV_OFFSET;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(FNV_PRIME);
    }
    splitmix64(hash)
}

/// The splitmix64 finalizer: FNV-1a's low bits are weak (the last byte only reaches them
/// through one multiplication), and buckets are taken from the low bits.
fn splitmix64(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// These values must never change. A user's bucket, and so their home datacenter, comes
    /// from this hash: a different value moves users away from their data on upgrade. If this
    /// test fails, fix the hash, not the table. (Checked against an independent Python
    /// implementation of the documented algorithm.)
    #[test]
    fn user_hash_is_stable() {
        let long = "x".repeat(256);
        let table: [(&str, u64, u32, u32); 14] = [
            // (id, user_hash, bucket of 4096, bucket of 64)
            ("a", 0x02c0_bdbf_4814_20f8, 248, 56),
            ("b", 0x3e35_b21b_fb9b_6405, 1029, 5),
            ("123", 0x1818_1277_b641_fb91, 2961, 17),
            ("alice", 0xc5d1_556d_6677_4a5c, 2652, 28),
            ("Alice", 0x498c_d777_92bf_4527, 1319, 39),
            ("user-42", 0x7a15_96f0_e94b_5793, 1939, 19),
            ("user@example.com", 0x5f4d_f3c9_1193_3120, 288, 32),
            ("ユーザー42", 0x540b_9a70_9d1d_4be1, 3041, 33),
            ("Ünïcödé", 0xafcd_7193_336d_9e75, 3701, 53),
            ("b32-abc", 0xb497_8cd3_4f53_f7fa, 2042, 58),
            (" ", 0xa854_6c8a_78bd_8323, 803, 35),
            (&long, 0x0710_57bd_2073_8e69, 3689, 41),
            ("user-0", 0x5158_a027_6803_147c, 1148, 60),
            ("user-9999999", 0xb9b7_e74c_2188_b452, 1106, 18),
        ];
        for (id, hash, bucket_4096, bucket_64) in table {
            assert_eq!(user_hash(id), hash, "{id:?}");
            assert_eq!(bucket_of(id, 4096), bucket_4096, "{id:?}");
            assert_eq!(bucket_of(id, 64), bucket_64, "{id:?}");
        }
    }

    #[test]
    fn doubling_the_buckets_splits_each_bucket_in_two() {
        for i in 0..10_000 {
            let id = format!("user-{i}");
            for n in [1, 64, 1024, 4096, 1 << 20] {
                let before = bucket_of(&id, n);
                let after = bucket_of(&id, 2 * n);
                assert!(
                    after == before || after == before + n,
                    "{id}: {before} of {n} -> {after} of {}",
                    2 * n
                );
            }
        }
    }

    #[test]
    fn ids_spread_evenly_over_buckets() {
        // 100,000 ids over 4096 buckets: a mean of 24.4 and a standard deviation of 4.9. A fair
        // hash's extremes over 4096 buckets sit about 4 standard deviations out (these ids give
        // 8 and 49). The bounds, a sixth and two and a half times the mean, catch a hash that
        // clusters without flagging luck.
        let mut counts = vec![0u32; 4096];
        for i in 0..100_000 {
            counts[bucket_of(&format!("user-{i}"), 4096) as usize] += 1;
        }
        let min = *counts.iter().min().expect("4096 buckets");
        let max = *counts.iter().max().expect("4096 buckets");
        assert!(min >= 4, "emptiest bucket has {min} ids");
        assert!(max <= 61, "fullest bucket has {max} ids");
    }

    #[test]
    fn hash_bytes_is_user_hash() {
        assert_eq!(hash_bytes("ユーザー42".as_bytes()), user_hash("ユーザー42"));
    }
}
