//! Shard groups: which primaries form a group, with which shard ids and options.

use std::collections::BTreeMap;
use std::time::SystemTime;

use super::validate::Problems;
use super::{PrimarySpec, Settings};
use crate::error::SettingsError;
use crate::sharding::Bucketing;

/// The largest shard id: global ids keep 13 bits for it.
pub(crate) const MAX_SHARD_ID: i64 = 8191;
/// The default epoch of global ids (django-sharding-library's documented one).
const DEFAULT_EPOCH: &str = "2016-01-01T00:00:00Z";

/// A validated shard group.
#[derive(Debug, Clone)]
pub(crate) struct GroupSpec {
    pub(crate) name: String,
    pub(crate) bucketing: Bucketing,
    pub(crate) epoch: SystemTime,
    /// The database that stores picks of strategies that are not a pure function of the key.
    pub(crate) storage: Option<String>,
    /// `(shard id, primary name)`, in shard-id order.
    pub(crate) shards: Vec<(i32, String)>,
}

impl Settings {
    /// Checks the shard keys of every database and the `[shard_groups]`; sets the group's
    /// read strategy on its primaries that have none; returns the groups.
    /// Every mistake goes to `p`.
    pub(crate) fn validate_groups(
        &self,
        primaries: &mut [PrimarySpec],
        p: &mut Problems,
    ) -> Vec<GroupSpec> {
        let mut members: BTreeMap<&str, Vec<(i32, String)>> = BTreeMap::new();
        for (name, db) in &self.databases {
            if db.primary.is_some() {
                for (key, set) in [
                    ("shard_group", db.shard_group.is_some()),
                    ("shard_id", db.shard_id.is_some()),
                ] {
                    if set {
                        p.push(SettingsError::MisplacedKey {
                            database: name.clone(),
                            key,
                            reason:
                                "only applies to primaries (a replica serves its primary's shard)",
                        });
                    }
                }
                continue;
            }
            match (&db.shard_group, db.shard_id) {
                (None, None) => {}
                (None, Some(_)) => p.push(SettingsError::MisplacedKey {
                    database: name.clone(),
                    key: "shard_id",
                    reason: "needs `shard_group` (a shard id is unique within its group)",
                }),
                (Some(group), None) => p.push(SettingsError::InvalidValue {
                    database: Some(name.clone()),
                    key: "shard_id",
                    value: "(missing)".into(),
                    reason: format!("required for a shard of group `{group}`"),
                }),
                (Some(group), Some(id)) => {
                    if !(0..=MAX_SHARD_ID).contains(&id) {
                        p.push(SettingsError::InvalidValue {
                            database: Some(name.clone()),
                            key: "shard_id",
                            value: id.to_string(),
                            reason: format!(
                                "must be between 0 and {MAX_SHARD_ID} (13 bits of every global id)"
                            ),
                        });
                        continue;
                    }
                    let list = members.entry(group.as_str()).or_default();
                    if let Some((_, other)) = list.iter().find(|(i, _)| i64::from(*i) == id) {
                        p.push(SettingsError::InvalidValue {
                            database: Some(name.clone()),
                            key: "shard_id",
                            value: id.to_string(),
                            reason: format!("already the shard id of `{other}` in group `{group}` (shard ids are unique and never reused)"),
                        });
                        continue;
                    }
                    list.push((id as i32, name.clone()));
                }
            }
        }
        for name in self.shard_groups.keys() {
            if !members.contains_key(name.as_str()) {
                p.push(SettingsError::InvalidValue {
                    database: None,
                    key: "shard_groups",
                    value: format!("{name:?}"),
                    reason: "the group has no shards: give primaries `shard_group` and `shard_id`"
                        .into(),
                });
            }
        }
        let mut groups = Vec::new();
        for (name, mut shards) in members {
            let options = self.shard_groups.get(name).cloned().unwrap_or_default();
            let group_key = |key: &'static str| SettingsKey {
                group: name.to_owned(),
                key,
            };
            let bucketing = match &options.bucketing {
                None => Bucketing::default(),
                Some(b) => p.or(
                    b.get("bucketing")
                        .map_err(|(value, reason)| group_key("bucketing").invalid(value, reason)),
                    Bucketing::default(),
                ),
            };
            let strategy =
                options.read_strategy.as_ref().and_then(|strategy| {
                    p.check(strategy.get("read strategy").map_err(|(value, reason)| {
                        group_key("read_strategy").invalid(value, reason)
                    }))
                });
            if let Some(strategy) = strategy {
                for p in primaries.iter_mut() {
                    let explicit = self
                        .databases
                        .get(&p.name)
                        .is_some_and(|d| d.read_strategy.is_some());
                    if !explicit && shards.iter().any(|(_, n)| *n == p.name) {
                        p.read_strategy = strategy;
                    }
                }
            }
            let epoch_text = options
                .epoch
                .clone()
                .unwrap_or_else(|| DEFAULT_EPOCH.into());
            let Some(epoch) = p.check(humantime::parse_rfc3339_weak(&epoch_text).map_err(|e| {
                group_key("epoch").invalid(
                    format!("{epoch_text:?}"),
                    format!("not an RFC 3339 time like \"2016-01-01T00:00:00Z\" ({e})"),
                )
            })) else {
                continue;
            };
            // ids count milliseconds from the epoch in 40 bits: the epoch must be past, and
            // recent enough to leave at least a year of ids
            let now = std::time::SystemTime::now();
            match now.duration_since(epoch) {
                Err(_) => {
                    p.push(group_key("epoch")
                        .invalid(format!("{epoch_text:?}"), "is in the future: ids count from a past time".into()))
                }
                Ok(age)
                    if age.as_millis()
                        > u128::from(crate::sharding::ids::MAX_MILLIS)
                            .saturating_sub(365 * 24 * 3600 * 1000) =>
                {
                    p.push(group_key("epoch").invalid(
                        format!("{epoch_text:?}"),
                        "is too long ago: ids hold about 34 years from the epoch; pick a recent date"
                            .into(),
                    ))
                }
                Ok(_) => {}
            }
            if let Some(storage) = &options.storage {
                match self.databases.get(storage) {
                    None => p.push(
                        group_key("storage")
                            .invalid(format!("{storage:?}"), "names no database".into()),
                    ),
                    Some(db) if db.primary.is_some() => p.push(group_key("storage").invalid(
                        format!("{storage:?}"),
                        "is a replica: name a primary".into(),
                    )),
                    Some(db) if db.shard_group.is_some() => p.push(group_key("storage").invalid(
                        format!("{storage:?}"),
                        "is a shard: name an unsharded primary".into(),
                    )),
                    Some(_) => {}
                }
            }
            shards.sort();
            groups.push(GroupSpec {
                name: name.to_owned(),
                bucketing,
                epoch,
                storage: options.storage.clone(),
                shards,
            });
        }
        groups
    }
}

/// A key of `[shard_groups.<group>]`, for errors.
struct SettingsKey {
    group: String,
    key: &'static str,
}

impl SettingsKey {
    /// `value` as shown in the error (quoted).
    fn invalid(&self, value: String, reason: String) -> SettingsError {
        SettingsError::GroupValue {
            group: self.group.clone(),
            key: self.key,
            value,
            reason,
        }
    }
}
