//! Bucketing: how a shard group picks the shard of a new key.
//!
//! django-sharding-library's strategies (round-robin, random, mod, saved mod) plus jump
//! consistent hashing. `mod` and `jump` are pure functions of the key's
//! [stable hash](crate::sharding::ShardKey::stable_hash), the same in every process; the others
//! pick once and the pick must be stored (`stores_shard`).

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};

use rand::Rng;

use crate::settings::names;

/// How a group picks the shard of a new key.
///
/// ```
/// use diesel_sharding::sharding::Bucketing;
///
/// let jump: Bucketing = "jump".parse().unwrap();
/// assert!(jump.is_pure());
/// assert_eq!(Bucketing::default(), Bucketing::RoundRobin);
/// assert!("modulo".parse::<Bucketing>().unwrap_err().contains(&Bucketing::names().join(", ")));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Bucketing {
    /// The group's shards in turn, starting at a random one so that restarted processes do not
    /// all load the first shard. The pick is stored. django-sharding-library's default.
    #[default]
    RoundRobin,
    /// A shard picked at random. The pick is stored.
    Random,
    /// `stable_hash(key) % shards` ([`mod_bucket`]). Pure, but changing the shard count moves
    /// almost every key.
    Mod,
    /// As [`Mod`](Self::Mod) for the first pick, which is then stored and wins afterwards, so
    /// rows stay where they are when shards are added.
    SavedMod,
    /// Jump consistent hashing ([`jump_hash`]). Pure; adding an `n+1`-th shard moves only
    /// about `1/(n+1)` of the keys, all to the new shard.
    Jump,
}

impl Bucketing {
    /// The strategy's name in the settings (`round_robin`, ...).
    pub fn as_str(self) -> &'static str {
        names::name::<Self>(self as usize)
    }

    /// Every strategy name the settings accept.
    pub fn names() -> &'static [&'static str] {
        names::variants::<Self>()
    }

    /// Is the shard a pure function of the key (`mod`, `jump`)? For the other strategies the
    /// pick must be stored, and the first pick wins.
    pub fn is_pure(self) -> bool {
        matches!(self, Bucketing::Mod | Bucketing::Jump)
    }
}

impl fmt::Display for Bucketing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Bucketing {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        names::parse(s, "bucketing")
    }
}

/// A group's bucketing with its state, shared by every thread.
// used by the cluster's shard groups (next commit)
#[allow(dead_code)]
#[derive(Debug)]
pub(crate) struct Bucketer {
    strategy: Bucketing,
    /// Round-robin's counter; starts at a random value, so the first pick is a random shard.
    next: AtomicUsize,
}

// used by the cluster's shard groups (next commit)
#[allow(dead_code)]
impl Bucketer {
    pub(crate) fn new(strategy: Bucketing) -> Self {
        // Below 2^31 so that the counter wraps only after ~2^64 picks on 64-bit targets (a
        // wrap breaks the cycle once for shard counts that are not powers of two).
        let start = rand::thread_rng().gen_range(0..1usize << 31);
        Bucketer {
            strategy,
            next: AtomicUsize::new(start),
        }
    }

    pub(crate) fn strategy(&self) -> Bucketing {
        self.strategy
    }

    /// Index in `0..shards` for `key_hash`: `None` when `shards == 0`, or when `mod`,
    /// `saved_mod` or `jump` get no key. Round-robin and random ignore the key. Shard counts
    /// above `u32::MAX` count as `u32::MAX` for `mod` and `jump`.
    pub(crate) fn pick(&self, key_hash: Option<u64>, shards: usize) -> Option<usize> {
        if shards == 0 {
            return None;
        }
        let buckets = u32::try_from(shards).unwrap_or(u32::MAX);
        match self.strategy {
            Bucketing::RoundRobin => Some(self.next.fetch_add(1, Ordering::Relaxed) % shards),
            Bucketing::Random => Some(rand::thread_rng().gen_range(0..shards)),
            Bucketing::Mod | Bucketing::SavedMod => {
                key_hash.map(|h| mod_bucket(h, buckets) as usize)
            }
            Bucketing::Jump => key_hash.map(|h| jump_hash(h, buckets) as usize),
        }
    }
}

/// Jump consistent hash: the bucket in `0..buckets` of `key`, exactly as published by Lamping
/// and Veach, "A Fast, Minimal Memory, Consistent Hash Algorithm" (2014), with its 64-bit
/// linear congruential generator (multiplier 2862933555777941757). Same results as the
/// paper's C++ code and its ports (Guava, ClickHouse's `jumpConsistentHash`).
///
/// Going from `n` to `n + 1` buckets moves about `1/(n + 1)` of the keys, all to bucket `n`.
/// Takes `O(ln buckets)` steps.
///
/// # Panics
///
/// When `buckets` is 0.
pub fn jump_hash(mut key: u64, buckets: u32) -> u32 {
    assert!(buckets > 0, "jump_hash needs at least one bucket");
    let buckets = i64::from(buckets);
    let (mut b, mut j): (i64, i64) = (-1, 0);
    while j < buckets {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        j = ((b + 1) as f64 * ((1i64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
    }
    b as u32
}

/// Mod bucketing: `key_hash % buckets`.
///
/// # Panics
///
/// When `buckets` is 0.
pub fn mod_bucket(key_hash: u64, buckets: u32) -> u32 {
    (key_hash % u64::from(buckets)) as u32
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::sharding::ShardKey;

    const ALL: [Bucketing; 5] = [
        Bucketing::RoundRobin,
        Bucketing::Random,
        Bucketing::Mod,
        Bucketing::SavedMod,
        Bucketing::Jump,
    ];

    #[test]
    fn names_parse_display_and_list_the_valid_ones() {
        for b in ALL {
            assert_eq!(b.as_str().parse::<Bucketing>(), Ok(b));
            assert_eq!(b.to_string(), b.as_str());
            assert!(Bucketing::names().contains(&b.as_str()));
        }
        let err = "consistent".parse::<Bucketing>().unwrap_err();
        assert!(err.contains("`consistent`"), "{err}");
        assert!(err.contains(&Bucketing::names().join(", ")), "{err}");
        assert_eq!(Bucketing::default(), Bucketing::RoundRobin);
    }

    #[test]
    fn only_mod_and_jump_are_pure() {
        let pure: Vec<_> = ALL.into_iter().filter(|b| b.is_pure()).collect();
        assert_eq!(pure, [Bucketing::Mod, Bucketing::Jump]);
    }

    #[test]
    fn jump_hash_gives_the_published_algorithms_values() {
        // values of the paper's C++ code, as checked by ClickHouse's jumpConsistentHash tests
        // and the jump_consistent_hash crate's docs
        assert_eq!(jump_hash(1, 1), 0);
        assert_eq!(jump_hash(42, 57), 43);
        assert_eq!(jump_hash(256, 1024), 520);
        assert_eq!(jump_hash(0xDEAD_10CC, 1), 0);
        assert_eq!(jump_hash(0xDEAD_10CC, 666), 361);
        assert_eq!(jump_hash(16_045_690_984_833_335_023, 255), 237);
        assert_eq!(jump_hash(0, 60), 0);
        assert_eq!(jump_hash(1, 60), 55);
        assert_eq!(jump_hash(2, 60), 46);
        assert_eq!(jump_hash(u64::MAX, 8192), 5934);
    }

    #[test]
    fn jump_hash_with_one_bucket_is_always_zero_and_stays_in_range() {
        for key in (0..1000u64).map(|k| k.wrapping_mul(0x9E37_79B9_7F4A_7C15)) {
            assert_eq!(jump_hash(key, 1), 0);
            for buckets in [2, 3, 7, 64, 1000, 8191, u32::MAX] {
                assert!(jump_hash(key, buckets) < buckets);
            }
        }
    }

    #[test]
    #[should_panic(expected = "at least one bucket")]
    fn jump_hash_with_no_buckets_panics() {
        jump_hash(1, 0);
    }

    #[test]
    fn adding_a_bucket_moves_about_one_in_n_plus_one_keys_all_to_the_new_bucket() {
        // 10_000 keys: 5_000 integers and 5_000 texts
        let keys: Vec<u64> = (0..5_000u64)
            .chain((0..5_000u64).map(|k| format!("user-{k}").stable_hash()))
            .collect();
        for n in 1..=40u32 {
            let mut moved = 0usize;
            for &key in &keys {
                let (before, after) = (jump_hash(key, n), jump_hash(key, n + 1));
                if before != after {
                    assert_eq!(
                        after,
                        n,
                        "key {key} moved to an old bucket ({n} -> {})",
                        n + 1
                    );
                    moved += 1;
                }
            }
            let expected = keys.len() as f64 / f64::from(n + 1);
            let sigma =
                (keys.len() as f64 * (1.0 / f64::from(n + 1)) * (1.0 - 1.0 / f64::from(n + 1)))
                    .sqrt();
            assert!(
                (moved as f64 - expected).abs() <= 4.0 * sigma,
                "{n} -> {}: {moved} keys moved, expected about {expected:.0}",
                n + 1
            );
        }
    }

    #[test]
    fn mod_is_stable_fixed_values() {
        // fixed forever: changing any of them moves every `mod`-bucketed key
        assert_eq!(mod_bucket(42, 8), 2);
        assert_eq!(mod_bucket(42i64.stable_hash(), 5), 2);
        assert_eq!(mod_bucket((-1i64).stable_hash(), 8), 7);
        assert_eq!(mod_bucket(u64::MAX, 10), 5);
        assert_eq!(mod_bucket("user-42".stable_hash(), 8), 3);
        assert_eq!(mod_bucket("alice".stable_hash(), 8), 7);
        assert_eq!(mod_bucket(7, 1), 0);
    }

    #[test]
    fn round_robin_cycles_through_all_shards_starting_at_a_random_one() {
        let shards = 8;
        let mut starts = HashSet::new();
        for _ in 0..64 {
            let b = Bucketer::new(Bucketing::RoundRobin);
            let picks: Vec<usize> = (0..3 * shards)
                .map(|_| b.pick(None, shards).unwrap())
                .collect();
            starts.insert(picks[0]);
            for (i, &p) in picks.iter().enumerate() {
                assert_eq!(p, (picks[0] + i) % shards);
            }
        }
        // all 64 equal has probability 8^-63
        assert!(
            starts.len() > 1,
            "every fresh bucketer started at {starts:?}"
        );
    }

    #[test]
    fn round_robin_alternates_over_two_shards_and_ignores_the_key() {
        // django-sharding-library: four users on two shards, shards[0] == shards[2] and
        // shards[1] == shards[3], period 2
        let b = Bucketer::new(Bucketing::RoundRobin);
        let picks: Vec<usize> = (0..4u64).map(|k| b.pick(Some(k), 2).unwrap()).collect();
        assert_eq!(picks[0], picks[2]);
        assert_eq!(picks[1], picks[3]);
        assert_ne!(picks[0], picks[1]);
    }

    #[test]
    fn random_picks_stay_in_the_group_and_cover_all_shards() {
        let b = Bucketer::new(Bucketing::Random);
        let mut seen = [0usize; 8];
        for _ in 0..8_000 {
            seen[b.pick(None, 8).unwrap()] += 1;
        }
        // each count is about 1000; below 700 has probability < 1e-20
        assert!(seen.iter().all(|&c| c > 700), "{seen:?}");
    }

    #[test]
    fn mod_pick_is_the_key_modulo_the_shard_count_every_time() {
        // django-sharding-library: pick == get == shards[hash(pk) % 2] for pk 0..99; here the
        // hash is stable, so the expected shard is plain pk % 2
        for strategy in [Bucketing::Mod, Bucketing::SavedMod] {
            let b = Bucketer::new(strategy);
            for pk in 0..100i64 {
                let pick = b.pick(Some(pk.stable_hash()), 2);
                assert_eq!(pick, Some((pk % 2) as usize));
                assert_eq!(b.pick(Some(pk.stable_hash()), 2), pick);
            }
        }
    }

    #[test]
    fn jump_pick_is_jump_hash_of_the_key() {
        let b = Bucketer::new(Bucketing::Jump);
        for key in 0..100u64 {
            assert_eq!(b.pick(Some(key), 60), Some(jump_hash(key, 60) as usize));
        }
    }

    #[test]
    fn strategies_that_need_a_key_return_none_without_one() {
        for strategy in [Bucketing::Mod, Bucketing::SavedMod, Bucketing::Jump] {
            assert_eq!(Bucketer::new(strategy).pick(None, 4), None, "{strategy}");
        }
        for strategy in [Bucketing::RoundRobin, Bucketing::Random] {
            assert!(
                Bucketer::new(strategy).pick(None, 4).is_some(),
                "{strategy}"
            );
        }
    }

    #[test]
    fn no_shards_means_no_pick() {
        for strategy in ALL {
            assert_eq!(Bucketer::new(strategy).pick(Some(1), 0), None, "{strategy}");
        }
    }

    #[test]
    fn jump_and_mod_spread_sequential_keys_evenly_over_eight_shards() {
        for (name, f) in [
            ("jump", jump_hash as fn(u64, u32) -> u32),
            ("mod", mod_bucket),
        ] {
            let mut counts = [0u32; 8];
            for key in 0..80_000u64 {
                counts[f(key, 8) as usize] += 1;
            }
            assert!(
                counts.iter().all(|&c| c.abs_diff(10_000) <= 500),
                "{name}: {counts:?}"
            );
        }
    }

    #[test]
    fn jump_and_mod_spread_text_keys_evenly_over_eight_shards() {
        for (name, f) in [
            ("jump", jump_hash as fn(u64, u32) -> u32),
            ("mod", mod_bucket),
        ] {
            let mut counts = [0u32; 8];
            for key in 0..80_000u64 {
                counts[f(format!("user-{key}").stable_hash(), 8) as usize] += 1;
            }
            assert!(
                counts.iter().all(|&c| c.abs_diff(10_000) <= 500),
                "{name}: {counts:?}"
            );
        }
    }
}
