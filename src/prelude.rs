//! What a domain author needs, in one import: `use streamfold::prelude::*;`.
//!
//! It names the stream model (stream ids, entity types, events), the pieces of a domain
//! (projections, classifications, stream guards, the command executor), the app a domain
//! registers with, and the HTTP side of a domain's functions (routes, requests, replies,
//! problems). Everything else, backends and their settings included, is under the module that
//! owns it. Nothing here is defined here, so the prelude never differs from those modules.

pub use crate::app::App;
pub use crate::config::Settings;
pub use crate::functions::{
    with_state, CommandContext, DomainApi, DomainApiError, Problem, Reply, Request,
};
pub use crate::projection::{
    decode_data, ApplyError, AsOf, Classification, Classified, Classifier, CommandExecutor,
    CommandOptions, ExecuteError, Executed, Projected, Projection, ProjectionError, RegistryError,
    StatefulClassification, StatefulClassifier, StreamGuard,
};
pub use crate::stream::{
    EntityType, ExpectedVersion, NewEvent, RecordedEvent, StoreError, StreamId,
};
