//! A second domain on streamfold, written only against the library's public API (the guide,
//! `docs/your-own-domain.md`, walks through it): inventory items whose stock is received,
//! reserved and shipped, with a "low stock" classification, a read model of every item, and
//! its own HTTP functions.
//!
//! Streams: domain `Inventory`, entity type `Item`, instance key = the item's SKU. Every
//! command is decided by the library's command executor on the item's fresh state and
//! appended with that state's exact version, so two reservations can never both take the
//! last units.

pub mod http;
pub mod item;

use std::sync::Arc;

use serde_json::json;
use streamfold::prelude::*;

use item::{Item, ItemEvent, ItemProjection, LowStock, Quantity, Refusal};

/// The inventory's streams: one per item.
pub const ITEMS: EntityType = EntityType::from_static("Inventory", "Item");

/// The `source` stored in the metadata of every event the inventory writes.
pub const SOURCE: &str = "streamfold-inventory";

/// The inventory's part of the app's OpenAPI document.
pub const OPENAPI: &str = include_str!("../openapi.json");

/// Registers what the library runs for the inventory: the item projection and the low-stock
/// classification (so `RunProjection` serves them), and the item read model.
pub fn register(app: &mut App) -> Result<(), RegistryError> {
    app.projections_mut()
        .register(&ITEMS, ItemProjection)?
        .register(&ITEMS, StatefulClassifier::new(LowStock))?;
    app.read_models_mut().register(&ITEMS, ItemProjection)?;
    Ok(())
}

/// The inventory's HTTP functions and OpenAPI part, for `functions::app_functions`.
pub fn api(app: Arc<App>) -> Result<DomainApi, DomainApiError> {
    http::api(Inventory { app }).openapi(OPENAPI)
}

/// Why an inventory command or query failed.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error("item {0} has never been received")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Projection(#[from] ProjectionError),
    #[error(transparent)]
    Execute(#[from] ExecuteError),
    #[error("event data could not be serialized: {0}")]
    Serialize(#[from] serde_json::Error),
}

/// Each failure as the HTTP problem it is (the library maps its own errors).
impl From<InventoryError> for Problem {
    fn from(error: InventoryError) -> Self {
        let detail = error.to_string();
        match error {
            InventoryError::Refused(Refusal::ZeroQuantity) => {
                Problem::bad_request("invalid-quantity", detail)
            }
            InventoryError::Refused(Refusal::NotAvailable { available }) => {
                Problem::unprocessable("insufficient-stock", detail).with("available", available)
            }
            InventoryError::Refused(Refusal::NotReserved { reserved }) => {
                Problem::unprocessable("not-reserved", detail).with("reserved", reserved)
            }
            InventoryError::Refused(Refusal::TooMuch) => {
                Problem::unprocessable("stock-out-of-range", detail)
            }
            InventoryError::NotFound(_) => Problem::not_found("item-not-found", detail),
            InventoryError::Store(e) => e.into(),
            InventoryError::Projection(e) => e.into(),
            InventoryError::Execute(e) => e.into(),
            InventoryError::Serialize(e) => StoreError::Corrupt {
                stream: "inventory".into(),
                detail: e.to_string(),
            }
            .into(),
        }
    }
}

/// The item after a command or as asked, with the sequence it is as of.
#[derive(Debug, Clone)]
pub struct ItemView {
    pub item: Item,
    pub sequence: u64,
    /// Whether this is the answer of an earlier attempt with the same `Idempotency-Key`
    /// (nothing was written now).
    pub replayed: bool,
}

/// The inventory's command and query side.
#[derive(Clone)]
pub struct Inventory {
    app: Arc<App>,
}

impl Inventory {
    pub fn new(app: Arc<App>) -> Self {
        Self { app }
    }

    pub fn app(&self) -> &Arc<App> {
        &self.app
    }

    pub fn stream(sku: &str) -> Result<StreamId, InventoryError> {
        Ok(ITEMS.stream(sku).map_err(StoreError::from)?)
    }

    /// Decides `event` on the item's fresh state and appends it with that state's exact
    /// version (decided again when another writer got in first). With an idempotency key in
    /// `context`, a retry of the same command answers as the first attempt did and writes
    /// nothing; the key with another command or quantity is refused.
    pub async fn execute(
        &self,
        sku: &str,
        event: ItemEvent,
        context: &CommandContext,
    ) -> Result<ItemView, InventoryError> {
        let stream = Self::stream(sku)?;
        let runner = self.app.runner(&ITEMS)?;
        let executor = CommandExecutor::new(&runner, &ItemProjection, self.app.command_policy());
        let quantity = event.quantity().to_string();
        let idempotency = context.idempotency(event.event_type(), Some(&quantity))?;
        let executed = executor
            .execute(
                &stream,
                CommandOptions::with_key(idempotency),
                |item: &Item, version| -> Result<Vec<NewEvent>, InventoryError> {
                    if version == 0 && !matches!(event, ItemEvent::Received(_)) {
                        return Err(InventoryError::NotFound(sku.to_owned()));
                    }
                    item.accept(&event)?;
                    let new = NewEvent::new(
                        event.event_type(),
                        &Quantity {
                            quantity: event.quantity(),
                        },
                    )?;
                    Ok(vec![new.with_metadata(context.metadata(SOURCE))])
                },
            )
            .await?;
        Ok(ItemView {
            replayed: executed.replayed(),
            item: executed.state,
            sequence: executed.outcome.version,
        })
    }

    /// The item now (404 when it was never received).
    pub async fn item(&self, sku: &str) -> Result<ItemView, InventoryError> {
        let stream = Self::stream(sku)?;
        let projected = self
            .app
            .runner(&ITEMS)?
            .run(&stream, &ItemProjection, AsOf::Latest)
            .await?;
        if projected.stream_version == 0 {
            return Err(InventoryError::NotFound(sku.to_owned()));
        }
        Ok(ItemView {
            item: projected.state,
            sequence: projected.sequence,
            replayed: false,
        })
    }

    /// Recomputes every item row of the read model from the streams.
    pub async fn rebuild(&self) -> Result<serde_json::Value, Problem> {
        let projector = self
            .app
            .read_model_projector(&ITEMS)
            .map_err(Problem::from)?;
        let report = streamfold::readmodel::rebuild(&projector, &ITEMS)
            .await
            .map_err(Problem::from)?;
        Ok(json!(report))
    }
}
