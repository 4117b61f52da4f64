//! The names operators type: a stream `<domain>/<entity>/<instance>` or a category
//! `<domain>/<entity>`, checked by the same rules as the HTTP API's paths (`crate::stream`'s
//! [`EntityType::new`] and [`StreamId::new`]), so a name the CLI takes is one the app can hold
//! and a bad one is refused before anything is read (exit code 2).

use crate::stream::{EntityType, StreamId};

/// What a command works on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Stream(StreamId),
    Category(EntityType),
}

impl Target {
    /// The category the target belongs to (a stream's, or itself).
    pub fn category(&self) -> &EntityType {
        match self {
            Self::Stream(stream) => stream.entity_type(),
            Self::Category(category) => category,
        }
    }
}

/// A name that is not a stream or category name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name:?} is not a valid {expected}: {reason}")]
pub struct NameError {
    pub name: String,
    /// What the command takes (`stream`, `category`, `stream or category`).
    pub expected: &'static str,
    pub reason: String,
}

const STREAM_OR_CATEGORY: &str =
    "stream (<domain>/<entity>/<instance>) or category (<domain>/<entity>)";
const STREAM: &str = "stream name (<domain>/<entity>/<instance>)";
const CATEGORY: &str = "category (<domain>/<entity>)";

/// A stream or a category.
pub fn parse_target(name: &str) -> Result<Target, NameError> {
    let parts: Vec<&str> = name.split('/').collect();
    let error = |reason: String| NameError {
        name: name.to_owned(),
        expected: STREAM_OR_CATEGORY,
        reason,
    };
    match parts.as_slice() {
        [domain, entity] => EntityType::new(*domain, *entity)
            .map(Target::Category)
            .map_err(|e| error(e.to_string())),
        [domain, entity, instance] => StreamId::new(*domain, *entity, *instance)
            .map(Target::Stream)
            .map_err(|e| error(e.to_string())),
        _ => Err(error(format!(
            "{} parts separated by '/', expected 2 or 3",
            parts.len()
        ))),
    }
}

/// A stream.
pub fn parse_stream(name: &str) -> Result<StreamId, NameError> {
    match parse_target(name) {
        Ok(Target::Stream(stream)) => Ok(stream),
        Ok(Target::Category(_)) => Err(NameError {
            name: name.to_owned(),
            expected: STREAM,
            reason: "a category, not a stream: add the instance key".to_owned(),
        }),
        Err(error) => Err(NameError {
            expected: STREAM,
            ..error
        }),
    }
}

/// A category.
pub fn parse_category(name: &str) -> Result<EntityType, NameError> {
    match parse_target(name) {
        Ok(Target::Category(category)) => Ok(category),
        Ok(Target::Stream(_)) => Err(NameError {
            name: name.to_owned(),
            expected: CATEGORY,
            reason: "a stream, not a category: leave out the instance key".to_owned(),
        }),
        Err(error) => Err(NameError {
            expected: CATEGORY,
            ..error
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_and_categories_are_told_apart_and_bad_names_refused() {
        assert!(matches!(
            parse_target("Bank/Account"),
            Ok(Target::Category(_))
        ));
        let Ok(Target::Stream(stream)) = parse_target("Bank/Account/ACC-1") else {
            panic!("a stream")
        };
        assert_eq!(stream.instance(), "ACC-1");
        for bad in [
            "",
            "Bank",
            "Bank/",
            "/Account",
            "Bank/Acc-ount",
            "Bank/Account/",
            "a/b/c/d",
        ] {
            assert!(parse_target(bad).is_err(), "{bad:?}");
        }
        assert!(parse_stream("Bank/Account").is_err());
        assert!(parse_category("Bank/Account/ACC-1").is_err());
        let error = parse_stream("Bank/Account/").unwrap_err();
        assert!(error.to_string().contains("Bank/Account/"), "{error}");
    }
}
