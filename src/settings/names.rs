//! The settings' names of fieldless enums (`read_strategy`, `mode`, `granularity`,
//! `bucketing`, `unknown_functions`), read from each enum's serde derive
//! (`rename_all = "snake_case"`): the enum is its own and only name table.

use std::fmt;

use serde::de::{self, DeserializeOwned, IntoDeserializer, Visitor};

/// The names serde gives `T`'s variants, in declaration order.
pub(crate) fn variants<T: DeserializeOwned>() -> &'static [&'static str] {
    match T::deserialize(Capture) {
        Err(Found(Some(variants))) => variants,
        _ => &[],
    }
}

/// The name of `T`'s variant at `index` (a fieldless enum's `self as usize`).
pub(crate) fn name<T: DeserializeOwned>(index: usize) -> &'static str {
    variants::<T>().get(index).copied().unwrap_or("?")
}

/// `T`'s variant called `name`, or an error naming `what` and every accepted name.
pub(crate) fn parse<T: DeserializeOwned>(name: &str, what: &str) -> Result<T, String> {
    let text: de::value::StrDeserializer<'_, de::value::Error> = name.into_deserializer();
    T::deserialize(text).map_err(|_| {
        format!(
            "unknown {what} `{name}` (expected one of: {})",
            variants::<T>().join(", ")
        )
    })
}

/// A deserializer that answers nothing, and reports the variant names an enum asks it for.
struct Capture;

#[derive(Debug)]
struct Found(Option<&'static [&'static str]>);

impl fmt::Display for Found {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not an enum")
    }
}

impl std::error::Error for Found {}

impl de::Error for Found {
    fn custom<T: fmt::Display>(_: T) -> Self {
        Found(None)
    }
}

impl<'de> de::Deserializer<'de> for Capture {
    type Error = Found;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Found> {
        Err(Found(None))
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Found> {
        Err(Found(Some(variants)))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map struct identifier
        ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sharding::Bucketing;
    use crate::{Consistency, Granularity, ReadStrategy, UnknownFunctions};

    /// Every variant's name parses back to it, for every enum read from the settings.
    fn round_trips<T>(all: &[T], as_str: fn(T) -> &'static str, what: &str)
    where
        T: DeserializeOwned + Copy + PartialEq + fmt::Debug,
    {
        assert_eq!(variants::<T>().len(), all.len(), "{what}");
        for &v in all {
            assert_eq!(parse::<T>(as_str(v), what), Ok(v), "{what}");
        }
        let err = parse::<T>("nonsense", what).unwrap_err();
        assert!(
            err.starts_with(&format!("unknown {what} `nonsense`")),
            "{err}"
        );
        assert!(err.contains(&variants::<T>().join(", ")), "{err}");
    }

    #[test]
    fn the_enums_are_their_own_name_tables() {
        use Bucketing as B;
        use Consistency as C;
        use ReadStrategy as R;
        round_trips(
            &[R::PrimaryOnly, R::RoundRobin, R::Random, R::Weighted],
            R::as_str,
            "read strategy",
        );
        round_trips(
            &[C::Pin, C::ReadYourWrites, C::Causal, C::Strong, C::Eventual],
            C::as_str,
            "consistency mode",
        );
        round_trips(
            &[B::RoundRobin, B::Random, B::Mod, B::SavedMod, B::Jump],
            B::as_str,
            "bucketing",
        );
        round_trips(
            &[Granularity::Database, Granularity::Table],
            Granularity::as_str,
            "granularity",
        );
        round_trips(
            &[UnknownFunctions::Replica, UnknownFunctions::Primary],
            UnknownFunctions::as_str,
            "unknown_functions",
        );
        assert_eq!(R::RoundRobin.as_str(), "round_robin");
        assert_eq!(C::ReadYourWrites.as_str(), "read_your_writes");
        assert_eq!(B::SavedMod.as_str(), "saved_mod");
        assert_eq!(variants::<u32>(), &[] as &[&str], "not an enum: no names");
    }
}
