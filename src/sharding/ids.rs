//! Global 64-bit ids, unique across the shards of a group, in django-sharding-library's layout.
//!
//! Rows of a sharded table live on many databases, so a per-database `BIGSERIAL` gives the same
//! id twice. These ids carry the shard that made them and sort by creation time:
//!
//! ```text
//!  63                      23 22          10 9        0
//! +--------------------------+--------------+----------+
//! | ms since the group epoch | shard id     | sequence |
//! |         41 bits          | 13 bits      | 10 bits  |
//! +--------------------------+--------------+----------+
//! id = (ms << 23) | (shard_id << 10) | (sequence % 1024)
//! ```
//!
//! Ids stay positive for 2^40 ms (about 34.8 years) after the epoch ([`MAX_MILLIS`]); a shard
//! makes at most 1024 ids per millisecond; shard ids run from 0 to [`MAX_SHARD_ID`] (8191).
//! The layout is the one of django-sharding-library's `next_sharded_id()`, so ids made by a
//! Django application and by this crate mix.
//!
//! Ids come from one of two places:
//!
//! * [`IdGenerator`], in process: one generator per shard id, and only one process may
//!   generate ids for a shard id (two processes with the same shard id would make duplicates);
//! * the database: [`postgres_install_sql`] installs `next_sharded_id()` on a PostgreSQL
//!   shard, for `id BIGINT DEFAULT next_sharded_id()` columns; any number of processes may
//!   share it.
//!
//! ```
//! use std::time::{Duration, SystemTime};
//! use diesel_sharding::sharding::ids::{self, IdGenerator};
//!
//! # fn main() -> Result<(), ids::IdError> {
//! const EPOCH_MS: u64 = 1_451_606_400_000; // 2016-01-01T00:00:00Z
//! let epoch = SystemTime::UNIX_EPOCH + Duration::from_millis(EPOCH_MS);
//!
//! let generator = IdGenerator::new(3, epoch)?;
//! let (a, b) = (generator.next_id(), generator.next_id());
//! assert!(b > a);
//! assert_eq!(ids::shard_of_id(a), 3);
//!
//! // the same layout and epoch on a PostgreSQL shard whose shard id is 4
//! let sql = ids::postgres_install_sql(4, EPOCH_MS as i64)?;
//! assert!(sql.contains("next_sharded_id"));
//! # Ok(()) }
//! ```
//!
//! For ids that need no coordination at all but carry no shard, there are UUIDs:
//! [`new_uuid`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

/// Bits of the shard id (bits 10 to 22 of an id).
pub const SHARD_ID_BITS: u32 = 13;

/// Bits of the per-millisecond sequence (bits 0 to 9 of an id).
pub const SEQUENCE_BITS: u32 = 10;

/// The largest shard id: `2^13 - 1`.
pub const MAX_SHARD_ID: i32 = (1 << SHARD_ID_BITS) - 1;

/// The last millisecond after the epoch that gives a positive id: `2^40 - 1` (about 34.8
/// years). The time field has 41 bits, but its top bit is the sign of a `BIGINT`.
pub const MAX_MILLIS: u64 = (1 << (63 - TIME_SHIFT)) - 1;

/// The name of the sequence [`postgres_install_sql`] creates.
pub const POSTGRES_SEQUENCE: &str = "global_id_sequence";

/// The name of the function [`postgres_install_sql`] creates.
pub const POSTGRES_FUNCTION: &str = "next_sharded_id";

/// Where the milliseconds start.
const TIME_SHIFT: u32 = SHARD_ID_BITS + SEQUENCE_BITS;
/// Ids per millisecond and shard.
const SEQUENCES: u64 = 1 << SEQUENCE_BITS;

/// Why ids cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdError {
    /// The shard id is negative or above [`MAX_SHARD_ID`].
    #[error("shard id {shard_id} is out of range (0..={MAX_SHARD_ID})")]
    ShardIdOutOfRange {
        /// The rejected shard id.
        shard_id: i32,
    },
    /// [`IdGenerator::new`]: the epoch is later than the system clock (an epoch in seconds
    /// taken for milliseconds, or a clock far behind).
    #[error("the id epoch is {ahead_ms} ms in the future")]
    EpochInFuture {
        /// How far ahead of the clock it is.
        ahead_ms: u64,
    },
    /// [`IdGenerator::new`]: the epoch is more than [`MAX_MILLIS`] ms (about 34.8 years) ago,
    /// so ids would be negative. `UNIX_EPOCH` is such an epoch: pick a recent date.
    #[error(
        "the id epoch is {since_ms} ms ago, more than the {MAX_MILLIS} ms the id layout holds"
    )]
    EpochTooOld {
        /// How long ago it is.
        since_ms: u64,
    },
    /// A number that cannot be an id of the group (`Cluster::shard_of_id`).
    #[error("{id} is not an id of this group: {reason}")]
    NotAnId {
        /// The number.
        id: i64,
        /// Why not.
        reason: &'static str,
    },
}

/// The shard id encoded in a global id (bits 10 to 22).
pub fn shard_of_id(id: i64) -> i32 {
    ((id >> SEQUENCE_BITS) & i64::from(MAX_SHARD_ID)) as i32
}

/// The milliseconds since the epoch encoded in an id (bits 23 to 63).
pub fn millis_of_id(id: i64) -> u64 {
    (id as u64) >> TIME_SHIFT
}

/// The per-millisecond sequence encoded in an id (bits 0 to 9).
pub fn sequence_of_id(id: i64) -> u32 {
    (id as u64 & (SEQUENCES - 1)) as u32
}

fn check_shard_id(shard_id: i32) -> Result<(), IdError> {
    if (0..=MAX_SHARD_ID).contains(&shard_id) {
        Ok(())
    } else {
        Err(IdError::ShardIdOutOfRange { shard_id })
    }
}

/// An in-process id generator for one shard: ids are unique and strictly increasing (also
/// across threads), 1024 per millisecond, and never go back when the clock does.
///
/// * **More than 1024 ids in one millisecond**: [`next_id`](Self::next_id) waits (yielding the
///   thread) until the clock reaches the next millisecond, so an id's time is never later than
///   the clock and a restarted process cannot repeat ids made before it stopped. A generator
///   therefore makes at most 1024 ids per millisecond (1.024 million per second).
/// * **The clock steps backwards**: the generator keeps using the last millisecond it used,
///   so ids never decrease. When that millisecond's 1024 ids are used up while the clock is
///   still behind, it takes the next millisecond without waiting (waiting could last as long
///   as the step): ids run ahead of the clock until it catches up. A process restarted while
///   the clock is behind its last ids can repeat ids; so can one restarted within the same
///   millisecond.
///
/// Only one generator, in one process, may make ids for a shard id. Processes that share a
/// shard use the database's `next_sharded_id()` ([`postgres_install_sql`]) instead.
#[derive(Debug)]
pub struct IdGenerator {
    shard_id: i32,
    epoch: SystemTime,
    /// The last id's time and sequence, `ms << 10 | sequence`; `NONE` before the first id.
    last: AtomicU64,
}

/// `last` before the first id.
const NONE: u64 = u64::MAX;

impl IdGenerator {
    /// A generator for `shard_id` (0 to [`MAX_SHARD_ID`]) counting milliseconds from `epoch`,
    /// which must be in the past, and less than [`MAX_MILLIS`] ms (about 34.8 years) ago.
    /// Every generator and database function of a group must use the same epoch.
    pub fn new(shard_id: i32, epoch: SystemTime) -> Result<Self, IdError> {
        check_shard_id(shard_id)?;
        let since =
            SystemTime::now()
                .duration_since(epoch)
                .map_err(|e| IdError::EpochInFuture {
                    ahead_ms: millis(e.duration()),
                })?;
        let since_ms = millis(since);
        if since_ms > MAX_MILLIS {
            return Err(IdError::EpochTooOld { since_ms });
        }
        Ok(IdGenerator {
            shard_id,
            epoch,
            last: AtomicU64::new(NONE),
        })
    }

    /// The next id; see the [type docs](Self) for bursts and clock steps.
    ///
    /// # Panics
    ///
    /// When the id's time would pass [`MAX_MILLIS`], about 34.8 years after the epoch.
    pub fn next_id(&self) -> i64 {
        loop {
            if let Some(id) = self.next_id_at(self.now_ms()) {
                return id;
            }
            // this millisecond's 1024 ids are used up: wait (at most ~1 ms) for the next
            std::thread::yield_now();
        }
    }

    /// The shard id in this generator's ids.
    pub fn shard_id(&self) -> i32 {
        self.shard_id
    }

    /// Milliseconds from the epoch to now; 0 when the clock is before the epoch (a backwards
    /// step, handled as any other).
    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(self.epoch)
            .map_or(0, millis)
    }

    /// The next id with the clock at `now_ms`, or `None` when the current millisecond's ids
    /// are used up and the clock has not passed it yet (the caller waits for the clock).
    fn next_id_at(&self, now_ms: u64) -> Option<i64> {
        // One compare-and-swap on one word: every id comes from a distinct state change, in
        // one total order, so no memory ordering beyond `Relaxed` is needed.
        let mut last = self.last.load(Ordering::Relaxed);
        loop {
            let (ms, seq) = if last == NONE {
                (now_ms, 0)
            } else {
                let (last_ms, last_seq) = (last >> SEQUENCE_BITS, last & (SEQUENCES - 1));
                if now_ms > last_ms {
                    (now_ms, 0)
                } else if last_seq + 1 < SEQUENCES {
                    // same millisecond, or the clock went back: never go back
                    (last_ms, last_seq + 1)
                } else if now_ms < last_ms {
                    // used up while the clock is behind: borrow the next millisecond
                    (last_ms + 1, 0)
                } else {
                    return None;
                }
            };
            assert!(
                ms <= MAX_MILLIS,
                "id space exhausted: {ms} ms after the epoch is more than the layout holds"
            );
            let next = (ms << SEQUENCE_BITS) | seq;
            match self
                .last
                .compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => {
                    return Some(
                        ((ms << TIME_SHIFT) | ((self.shard_id as u64) << SEQUENCE_BITS) | seq)
                            as i64,
                    )
                }
                Err(current) => last = current,
            }
        }
    }
}

/// Whole milliseconds, saturating (without `as_millis`' slower 128-bit division).
fn millis(d: Duration) -> u64 {
    d.as_secs()
        .saturating_mul(1000)
        .saturating_add(u64::from(d.subsec_millis()))
}

/// SQL that installs the sequence `global_id_sequence` and the function `next_sharded_id()`
/// on one PostgreSQL shard, making ids in the same layout with `shard_id` and `epoch_ms`
/// (milliseconds since 1970-01-01 UTC) baked in. Run it on each shard with its own shard id.
///
/// Installing again is harmless (`CREATE SEQUENCE IF NOT EXISTS`, `CREATE OR REPLACE
/// FUNCTION`) and, unlike django-sharding-library's pre-migrate hook, never resets the
/// sequence. The shard id is checked here and masked to 13 bits in the SQL too
/// (django-sharding-library's function did not mask it, so a larger id spilled into the time
/// bits).
///
/// The sequence wraps modulo 1024, as django-sharding-library's does: more than 1024 ids in
/// one millisecond on one shard can repeat an id (the primary key rejects the row).
pub fn postgres_install_sql(shard_id: i32, epoch_ms: i64) -> Result<String, IdError> {
    check_shard_id(shard_id)?;
    Ok(format!(
        "CREATE SEQUENCE IF NOT EXISTS {POSTGRES_SEQUENCE};
CREATE OR REPLACE FUNCTION {POSTGRES_FUNCTION}() RETURNS bigint
LANGUAGE sql VOLATILE AS $function$
    SELECT ((floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint - ({epoch_ms})) << {TIME_SHIFT})
         | (({shard_id} & {MAX_SHARD_ID})::bigint << {SEQUENCE_BITS})
         | (nextval('{POSTGRES_SEQUENCE}') % {SEQUENCES})
$function$;
"
    ))
}

/// SQL that removes what [`postgres_install_sql`] installed (if present).
pub fn postgres_uninstall_sql() -> &'static str {
    "DROP FUNCTION IF EXISTS next_sharded_id();\nDROP SEQUENCE IF EXISTS global_id_sequence;\n"
}

/// A random (version 4) UUID: an id that needs no shard id, epoch or coordination, but does
/// not sort by time, takes 128 bits and does not say where its row lives.
pub fn new_uuid() -> uuid::Uuid {
    uuid::Uuid::new_v4()
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::Arc;
    use std::time::UNIX_EPOCH;

    use super::*;

    /// django-sharding-library's test `SHARD_EPOCH`: 2016-01-01 (UTC here).
    const SHARD_EPOCH_MS: u64 = 1_451_606_400_000;

    fn epoch() -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(SHARD_EPOCH_MS)
    }

    fn generator(shard_id: i32) -> IdGenerator {
        IdGenerator::new(shard_id, epoch()).unwrap()
    }

    #[test]
    fn an_id_has_the_hand_computed_layout() {
        let g = generator(5);
        // (1000 << 23) | (5 << 10) | 0 and | 1
        assert_eq!(g.next_id_at(1000), Some(8_388_613_120));
        assert_eq!(g.next_id_at(1000), Some(8_388_613_121));
        assert_eq!(shard_of_id(8_388_613_121), 5);
        assert_eq!(millis_of_id(8_388_613_121), 1000);
        assert_eq!(sequence_of_id(8_388_613_121), 1);
        assert_eq!(MAX_MILLIS, (1 << 40) - 1);
    }

    #[test]
    fn generated_ids_decode_to_their_shard_time_and_sequence() {
        for shard_id in [0, 1, 2, 4095, MAX_SHARD_ID] {
            let g = generator(shard_id);
            let before = g.now_ms();
            let ids: Vec<i64> = (0..10).map(|_| g.next_id()).collect();
            let after = g.now_ms();
            for id in ids {
                assert!(id > 0);
                assert_eq!(shard_of_id(id), shard_id);
                assert!((before..=after).contains(&millis_of_id(id)), "{id}");
                assert!(sequence_of_id(id) < 1024);
            }
        }
    }

    #[test]
    fn the_shard_id_is_bits_10_to_22_as_django_sharding_library_decodes_it() {
        // django-sharding-library: int(bin(id)[-23:-10], 2) == the shard's SHARD_ID
        for shard_id in [0, 1, 2, 1000, MAX_SHARD_ID] {
            let id = generator(shard_id).next_id();
            let bits = format!("{id:b}");
            let slice = &bits[bits.len() - 23..bits.len() - 10];
            assert_eq!(i32::from_str_radix(slice, 2).unwrap(), shard_id);
        }
    }

    #[test]
    fn an_id_is_greater_than_one_built_ten_seconds_ago() {
        // django-sharding-library: next_sharded_id() > a value built 10 s ago, shard 0, seq 1
        let g = generator(0);
        let ten_seconds_ago = ((g.now_ms() - 10_000) << 23) | 1;
        assert!(g.next_id() > ten_seconds_ago as i64);
    }

    #[test]
    fn ids_are_monotonic_over_100_000_ids_on_one_thread() {
        let g = generator(7);
        let mut last = g.next_id();
        for _ in 0..100_000 {
            let id = g.next_id();
            assert!(id > last, "{id} after {last}");
            last = id;
        }
    }

    #[test]
    fn ids_are_unique_and_increasing_per_thread_across_4_threads() {
        let g = Arc::new(generator(9));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let g = Arc::clone(&g);
                std::thread::spawn(move || {
                    let ids: Vec<i64> = (0..50_000).map(|_| g.next_id()).collect();
                    assert!(ids.windows(2).all(|w| w[0] < w[1]));
                    ids
                })
            })
            .collect();
        let mut all = HashSet::new();
        for t in threads {
            for id in t.join().unwrap() {
                assert!(all.insert(id), "duplicate id {id}");
            }
        }
        assert_eq!(all.len(), 200_000);
    }

    #[test]
    fn a_burst_beyond_1024_ids_in_one_millisecond_waits_for_the_next_one() {
        let g = generator(3);
        let mut ids = Vec::new();
        let mut now = 500;
        let mut waits = 0;
        while ids.len() < 3000 {
            match g.next_id_at(now) {
                Some(id) => ids.push(id),
                None => {
                    // the caller waits for the clock: simulate it moving on
                    waits += 1;
                    now += 1;
                }
            }
        }
        assert_eq!(waits, 2);
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 3000);
        assert_eq!(millis_of_id(ids[1023]), 500);
        assert_eq!(millis_of_id(ids[1024]), 501);
        assert_eq!(sequence_of_id(ids[1024]), 0);
        assert!(ids.iter().all(|&id| millis_of_id(id) <= now));
    }

    #[test]
    fn a_clock_stepping_back_gives_no_smaller_or_repeated_ids() {
        let g = generator(11);
        let mut ids = vec![g.next_id_at(10_000).unwrap(), g.next_id_at(10_000).unwrap()];
        // the clock steps back one second, and stays behind for 3000 ids
        for _ in 0..3000 {
            ids.push(g.next_id_at(9_000).unwrap());
        }
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(millis_of_id(ids[2]), 10_000);
        // used up while behind: borrowed the next milliseconds instead of waiting a second
        assert_eq!(millis_of_id(*ids.last().unwrap()), 10_002);
        // the clock catches up
        let caught_up = g.next_id_at(10_005).unwrap();
        assert!(caught_up > *ids.last().unwrap());
        assert_eq!(millis_of_id(caught_up), 10_005);
        assert_eq!(sequence_of_id(caught_up), 0);
    }

    #[test]
    fn the_last_millisecond_of_the_layout_gives_positive_ids() {
        let g = generator(MAX_SHARD_ID);
        let id = g.next_id_at(MAX_MILLIS).unwrap();
        assert!(id > 0);
        assert_eq!(millis_of_id(id), MAX_MILLIS);
        assert_eq!(shard_of_id(id), MAX_SHARD_ID);
    }

    #[test]
    #[should_panic(expected = "id space exhausted")]
    fn passing_the_last_millisecond_panics() {
        generator(0).next_id_at(MAX_MILLIS + 1);
    }

    #[test]
    fn shard_id_8191_is_accepted_8192_and_minus_1_are_rejected() {
        assert_eq!(generator(MAX_SHARD_ID).shard_id(), 8191);
        for shard_id in [8192, -1, i32::MAX, i32::MIN] {
            assert_eq!(
                IdGenerator::new(shard_id, epoch()).unwrap_err(),
                IdError::ShardIdOutOfRange { shard_id }
            );
            assert_eq!(
                postgres_install_sql(shard_id, 0).unwrap_err(),
                IdError::ShardIdOutOfRange { shard_id }
            );
        }
        assert_eq!(
            IdError::ShardIdOutOfRange { shard_id: 8192 }.to_string(),
            "shard id 8192 is out of range (0..=8191)"
        );
    }

    #[test]
    fn an_epoch_in_the_future_or_too_long_ago_is_rejected() {
        let future = SystemTime::now() + Duration::from_secs(3600);
        assert!(matches!(
            IdGenerator::new(0, future),
            Err(IdError::EpochInFuture { ahead_ms }) if ahead_ms > 3_500_000
        ));
        // 1970 is more than 34.8 years ago
        assert!(matches!(
            IdGenerator::new(0, UNIX_EPOCH),
            Err(IdError::EpochTooOld { since_ms }) if since_ms > MAX_MILLIS
        ));
    }

    #[test]
    fn postgres_install_sql_masks_the_shard_id_and_can_run_twice() {
        let sql = postgres_install_sql(8191, 1_451_606_400_000).unwrap();
        assert!(
            sql.contains("CREATE SEQUENCE IF NOT EXISTS global_id_sequence"),
            "{sql}"
        );
        assert!(
            sql.contains("CREATE OR REPLACE FUNCTION next_sharded_id() RETURNS bigint"),
            "{sql}"
        );
        assert!(sql.contains("((8191 & 8191)::bigint << 10)"), "{sql}");
        assert!(sql.contains("- (1451606400000)) << 23)"), "{sql}");
        assert!(
            sql.contains("(nextval('global_id_sequence') % 1024)"),
            "{sql}"
        );
        assert!(sql.contains("clock_timestamp()"), "{sql}");
        // never resets the sequence (django-sharding-library's pre-migrate hook did)
        assert!(!sql.contains("setval"), "{sql}");
        assert!(postgres_install_sql(0, 0)
            .unwrap()
            .contains("((0 & 8191)::bigint << 10)"));

        let uninstall = postgres_uninstall_sql();
        assert!(uninstall.contains("DROP FUNCTION IF EXISTS next_sharded_id()"));
        assert!(uninstall.contains("DROP SEQUENCE IF EXISTS global_id_sequence"));
    }

    #[test]
    fn new_uuids_are_version_4_and_distinct() {
        // django-sharding-library's UUID strategy test: the id parses as a UUID v4
        let ids: HashSet<uuid::Uuid> = (0..100).map(|_| new_uuid()).collect();
        assert_eq!(ids.len(), 100);
        for id in ids {
            assert_eq!(id.get_version(), Some(uuid::Version::Random));
            assert_eq!(id.to_string().parse::<uuid::Uuid>(), Ok(id));
        }
    }
}
