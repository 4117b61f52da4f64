//! The inventory's HTTP functions, written against the library's `Request` / `Reply` (no HTTP
//! framework): one function.json folder each under `examples/inventory/functions/`.
//!
//! - `POST /api/ReceiveStock/{sku}`, `ReserveStock/{sku}`, `ShipStock/{sku}` with
//!   `{"quantity": n}` and an optional `Idempotency-Key`: the item after the command (200; a
//!   retry with the same key answers the same, with `Idempotent-Replayed: true`);
//! - `GET /api/GetItem/{sku}`: the item now;
//! - `GET /api/Items?lowStock=true|false&continuation=`: the item rows of the read model;
//! - `POST /api/RebuildItems`: recomputes the read model from the streams.

use serde::Serialize;
use serde_json::json;
use streamfold::prelude::*;

use crate::item::{Item, ItemEvent, Quantity, ITEM_PROJECTION};
use crate::{Inventory, ItemView, ITEMS};

/// Rows per page of `Items`.
pub const ITEMS_PAGE_SIZE: usize = 100;

/// The item as clients see it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ItemBody<'a> {
    sku: &'a str,
    on_hand: u64,
    reserved: u64,
    available: u64,
    low_stock: bool,
    sequence: u64,
}

fn item_body<'a>(sku: &'a str, item: &Item, sequence: u64) -> ItemBody<'a> {
    ItemBody {
        sku,
        on_hand: item.on_hand,
        reserved: item.reserved,
        available: item.available(),
        low_stock: item.low_on_stock(),
        sequence,
    }
}

fn sku(request: &Request) -> Result<String, Problem> {
    let sku = request.param("sku").unwrap_or_default().to_owned();
    Inventory::stream(&sku).map_err(Problem::from)?;
    Ok(sku)
}

/// The inventory's routes, each with its handler.
pub fn api(inventory: Inventory) -> DomainApi {
    DomainApi::new()
        .post(
            "ReceiveStock",
            "ReceiveStock/{sku}",
            with_state(&inventory, receive),
        )
        .post(
            "ReserveStock",
            "ReserveStock/{sku}",
            with_state(&inventory, reserve),
        )
        .post("ShipStock", "ShipStock/{sku}", with_state(&inventory, ship))
        .get("GetItem", "GetItem/{sku}", with_state(&inventory, get_item))
        .get("Items", "Items", with_state(&inventory, list_items))
        .post(
            "RebuildItems",
            "RebuildItems",
            with_state(&inventory, rebuild),
        )
}

async fn receive(inventory: Inventory, request: Request) -> Result<Reply, Problem> {
    command(inventory, request, ItemEvent::Received).await
}

async fn reserve(inventory: Inventory, request: Request) -> Result<Reply, Problem> {
    command(inventory, request, ItemEvent::Reserved).await
}

async fn ship(inventory: Inventory, request: Request) -> Result<Reply, Problem> {
    command(inventory, request, ItemEvent::Shipped).await
}

/// A command: `{"quantity": n}`, decided on the item's fresh state, with an optional
/// `Idempotency-Key` (checked first: 400 when malformed).
async fn command(
    inventory: Inventory,
    request: Request,
    make: fn(u64) -> ItemEvent,
) -> Result<Reply, Problem> {
    let context = request.command_context()?;
    let sku = sku(&request)?;
    let Quantity { quantity } = request.json()?;
    let ItemView {
        item,
        sequence,
        replayed,
    } = inventory.execute(&sku, make(quantity), &context).await?;
    Ok(Reply::ok(&item_body(&sku, &item, sequence))?.replayed(replayed))
}

async fn get_item(inventory: Inventory, request: Request) -> Result<Reply, Problem> {
    request.only_known_params(&[])?;
    let sku = sku(&request)?;
    let ItemView { item, sequence, .. } = inventory.item(&sku).await?;
    Reply::ok(&item_body(&sku, &item, sequence))
}

async fn rebuild(inventory: Inventory, _request: Request) -> Result<Reply, Problem> {
    Reply::ok(&inventory.rebuild().await?)
}

async fn list_items(inventory: Inventory, request: Request) -> Result<Reply, Problem> {
    request.only_known_params(&["lowStock", "continuation"])?;
    let low_stock = request.bool_param("lowStock")?;
    let store = inventory.app().read_model_store()?;
    let page = store
        .list(
            ITEM_PROJECTION,
            &ITEMS,
            request
                .query_param("continuation")
                .filter(|c| !c.is_empty()),
            ITEMS_PAGE_SIZE,
        )
        .await
        .map_err(Problem::from)?;
    let mut rows = Vec::new();
    for row in &page.rows {
        if row.checkpoint.failure.is_some() {
            continue;
        }
        let item: Item = serde_json::from_str(row.checkpoint.state.get()).map_err(|e| {
            Problem::from(streamfold::stream::StoreError::Corrupt {
                stream: row.instance.clone(),
                detail: e.to_string(),
            })
        })?;
        if low_stock.is_none_or(|wanted| wanted == item.low_on_stock()) {
            rows.push(json!(item_body(
                &row.instance,
                &item,
                row.checkpoint.sequence
            )));
        }
    }
    Reply::ok(&json!({ "items": rows, "continuation": page.continuation }))
}
