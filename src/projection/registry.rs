//! The projections an application offers, by domain, entity type and name, for code that picks
//! a projection at run time (the generic HTTP API: `.../{domain}/{entity}/{instance}/{name}`).
//!
//! Registration checks every name once (domain and entity type by the stream rules, the
//! projection by `validate_projection_name`) and refuses a second projection under the same
//! name, so a lookup is never ambiguous.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use crate::stream::{EntityType, KeyError};

use super::{validate_projection_name, DynProjection, Projection};

/// Why a projection could not be registered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// The domain or entity type breaks the stream naming rules.
    #[error(transparent)]
    InvalidKey(#[from] KeyError),

    #[error("invalid projection name {projection:?}: {reason}")]
    InvalidName { projection: String, reason: String },

    #[error("a projection named {projection:?} is already registered for {domain}/{entity}")]
    Duplicate {
        domain: String,
        entity: String,
        projection: String,
    },

    /// A stream guard is already registered for this entity type (one owner per entity type).
    #[error("the streams of {domain}/{entity} already have a guard")]
    DuplicateGuard { domain: String, entity: String },
}

/// (entity type, projection name) → projection.
#[derive(Clone, Default)]
pub struct ProjectionRegistry {
    by_entity: BTreeMap<EntityType, BTreeMap<String, Arc<dyn DynProjection>>>,
}

impl ProjectionRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `projection` for the streams of `entity_type` under its own name.
    pub fn register<P: Projection>(
        &mut self,
        entity_type: &EntityType,
        projection: P,
    ) -> Result<&mut Self, RegistryError> {
        self.register_dyn(entity_type, Arc::new(projection))
    }

    /// Registers a projection that is already type-erased (shared with other code).
    pub fn register_dyn(
        &mut self,
        entity_type: &EntityType,
        projection: Arc<dyn DynProjection>,
    ) -> Result<&mut Self, RegistryError> {
        let name = projection.name().to_owned();
        validate_projection_name(&name).map_err(|reason| RegistryError::InvalidName {
            projection: name.clone(),
            reason,
        })?;
        let projections = self.by_entity.entry(entity_type.clone()).or_default();
        if projections.contains_key(&name) {
            return Err(RegistryError::Duplicate {
                domain: entity_type.domain().to_owned(),
                entity: entity_type.entity().to_owned(),
                projection: name,
            });
        }
        projections.insert(name, projection);
        Ok(self)
    }

    /// The projection named `name` for `entity_type`.
    pub fn get(&self, entity_type: &EntityType, name: &str) -> Option<Arc<dyn DynProjection>> {
        self.by_entity.get(entity_type)?.get(name).cloned()
    }

    /// The names of the projections of `entity_type`, in name order.
    pub fn names(&self, entity_type: &EntityType) -> Vec<&str> {
        self.by_entity
            .get(entity_type)
            .map(|p| p.keys().map(String::as_str).collect())
            .unwrap_or_default()
    }

    /// The projections of `entity_type`, in name order (to run them all in one pass).
    pub fn projections(&self, entity_type: &EntityType) -> Vec<Arc<dyn DynProjection>> {
        self.by_entity
            .get(entity_type)
            .map(|p| p.values().cloned().collect())
            .unwrap_or_default()
    }

    /// The entity types that have at least one projection, in order.
    pub fn entity_types(&self) -> impl Iterator<Item = &EntityType> {
        self.by_entity.keys()
    }
}

impl fmt::Debug for ProjectionRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.by_entity.iter().map(|(entity_type, projections)| {
                (
                    entity_type.to_string(),
                    projections.keys().collect::<Vec<_>>(),
                )
            }))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::projection::ApplyError;
    use crate::stream::RecordedEvent;

    struct Named(&'static str);

    impl Projection for Named {
        type State = u64;
        fn name(&self) -> &str {
            self.0
        }
        fn version(&self) -> u32 {
            1
        }
        fn initial(&self) -> u64 {
            0
        }
        fn apply(&self, n: &mut u64, _: &RecordedEvent) -> Result<(), ApplyError> {
            *n += 1;
            Ok(())
        }
    }

    #[test]
    fn registers_and_finds_by_entity_and_name() {
        let mut registry = ProjectionRegistry::new();
        registry
            .register(
                &EntityType::from_static("Bank", "Account"),
                Named("balance"),
            )
            .unwrap()
            .register(&EntityType::from_static("Bank", "Account"), Named("count"))
            .unwrap()
            .register(
                &EntityType::from_static("Bank", "Customer"),
                Named("balance"),
            )
            .unwrap();
        assert_eq!(
            registry.names(&EntityType::from_static("Bank", "Account")),
            ["balance", "count"]
        );
        assert_eq!(
            registry.names(&EntityType::from_static("Bank", "Customer")),
            ["balance"]
        );
        assert!(registry
            .names(&EntityType::from_static("Bank", "Loan"))
            .is_empty());
        assert_eq!(
            registry
                .get(&EntityType::from_static("Bank", "Account"), "count")
                .unwrap()
                .name(),
            "count"
        );
        assert!(registry
            .get(&EntityType::from_static("Bank", "Account"), "missing")
            .is_none());
        assert!(registry
            .get(&EntityType::from_static("Shop", "Account"), "count")
            .is_none());
        assert_eq!(
            registry
                .projections(&EntityType::from_static("Bank", "Account"))
                .len(),
            2
        );
    }

    #[test]
    fn refuses_duplicates_and_bad_names() {
        let mut registry = ProjectionRegistry::new();
        registry
            .register(
                &EntityType::from_static("Bank", "Account"),
                Named("balance"),
            )
            .unwrap();
        assert!(matches!(
            registry.register(
                &EntityType::from_static("Bank", "Account"),
                Named("balance")
            ),
            Err(RegistryError::Duplicate { .. })
        ));
        assert!(matches!(
            registry.register(
                &EntityType::from_static("Bank", "Account"),
                Named("bad name")
            ),
            Err(RegistryError::InvalidName { .. })
        ));
        assert_eq!(
            registry.names(&EntityType::from_static("Bank", "Account")),
            ["balance"]
        );
    }
}
