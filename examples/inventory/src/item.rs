//! An inventory item: its events, its state and rules, its projection and its "low stock"
//! classification. Quantities are whole units (`u64`) and every sum is checked, so a stored
//! event outside the rules is an error naming it, never a panic or a wrapped number.

use serde::{Deserialize, Serialize};
use streamfold::prelude::*;

/// Below this many available units, an item is "low on stock".
pub const LOW_STOCK_THRESHOLD: u64 = 10;

pub const RECEIVED: &str = "StockReceived";
pub const RESERVED: &str = "StockReserved";
pub const SHIPPED: &str = "StockShipped";

/// The data of every inventory event: how many units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quantity {
    pub quantity: u64,
}

/// What can happen to an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemEvent {
    /// Units arrived in the warehouse.
    Received(u64),
    /// Units set aside for an order (no longer available).
    Reserved(u64),
    /// Reserved units left the warehouse.
    Shipped(u64),
}

impl ItemEvent {
    pub fn event_type(&self) -> &'static str {
        match self {
            Self::Received(_) => RECEIVED,
            Self::Reserved(_) => RESERVED,
            Self::Shipped(_) => SHIPPED,
        }
    }

    pub fn quantity(&self) -> u64 {
        match self {
            Self::Received(q) | Self::Reserved(q) | Self::Shipped(q) => *q,
        }
    }

    /// The stored event, or `None` for a type the item does not know (ignored by folds).
    pub fn decode(event: &RecordedEvent) -> Result<Option<Self>, ApplyError> {
        let make = match event.event_type.as_str() {
            RECEIVED => Self::Received,
            RESERVED => Self::Reserved,
            SHIPPED => Self::Shipped,
            _ => return Ok(None),
        };
        let Quantity { quantity } = decode_data(event)?;
        Ok(Some(make(quantity)))
    }
}

/// Why a command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the quantity must be at least 1")]
    ZeroQuantity,
    #[error("only {available} units are available")]
    NotAvailable { available: u64 },
    #[error("only {reserved} units are reserved")]
    NotReserved { reserved: u64 },
    #[error("the stock would exceed what can be counted")]
    TooMuch,
}

/// An item's stock.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Item {
    /// Units in the warehouse (reserved ones included).
    pub on_hand: u64,
    /// Units set aside for orders.
    pub reserved: u64,
}

impl Item {
    /// Units that can still be reserved.
    pub fn available(&self) -> u64 {
        self.on_hand.saturating_sub(self.reserved)
    }

    pub fn low_on_stock(&self) -> bool {
        self.available() < LOW_STOCK_THRESHOLD
    }

    /// The item after `event`, or why the rules refuse it.
    pub fn accept(&self, event: &ItemEvent) -> Result<Item, Refusal> {
        if event.quantity() == 0 {
            return Err(Refusal::ZeroQuantity);
        }
        let mut next = *self;
        match *event {
            ItemEvent::Received(q) => {
                next.on_hand = self.on_hand.checked_add(q).ok_or(Refusal::TooMuch)?;
            }
            ItemEvent::Reserved(q) => {
                if q > self.available() {
                    return Err(Refusal::NotAvailable {
                        available: self.available(),
                    });
                }
                next.reserved = self.reserved.checked_add(q).ok_or(Refusal::TooMuch)?;
            }
            ItemEvent::Shipped(q) => {
                if q > self.reserved {
                    return Err(Refusal::NotReserved {
                        reserved: self.reserved,
                    });
                }
                next.reserved = self.reserved.saturating_sub(q);
                next.on_hand = self.on_hand.saturating_sub(q);
            }
        }
        Ok(next)
    }
}

/// The item's state, by the projection named `item` (also kept as a read model).
pub struct ItemProjection;

pub const ITEM_PROJECTION: &str = "item";

impl Projection for ItemProjection {
    type State = Item;

    fn name(&self) -> &str {
        ITEM_PROJECTION
    }

    fn version(&self) -> u32 {
        1
    }

    fn initial(&self) -> Item {
        Item::default()
    }

    fn apply(&self, item: &mut Item, event: &RecordedEvent) -> Result<(), ApplyError> {
        if let Some(decoded) = ItemEvent::decode(event)? {
            *item = item
                .accept(&decoded)
                .map_err(|refusal| ApplyError::new(event, refusal.to_string()))?;
        }
        Ok(())
    }
}

/// The classification `low-stock`: an item is in it while fewer than
/// [`LOW_STOCK_THRESHOLD`] units are available.
pub struct LowStock;

pub const LOW_STOCK: &str = "low-stock";

impl StatefulClassification for LowStock {
    /// The running stock.
    type Memo = Item;

    fn name(&self) -> &str {
        LOW_STOCK
    }

    fn version(&self) -> u32 {
        1
    }

    fn classify_with(
        &self,
        item: &mut Item,
        event: &RecordedEvent,
    ) -> Result<Classified, ApplyError> {
        ItemProjection.apply(item, event)?;
        Ok(if item.low_on_stock() {
            Classified::Include
        } else {
            Classified::Exclude
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stock_is_received_reserved_and_shipped_within_the_rules() {
        let item = Item::default();
        let item = item.accept(&ItemEvent::Received(12)).unwrap();
        assert_eq!((item.available(), item.low_on_stock()), (12, false));
        let item = item.accept(&ItemEvent::Reserved(5)).unwrap();
        assert_eq!((item.available(), item.low_on_stock()), (7, true));
        assert_eq!(
            item.accept(&ItemEvent::Reserved(8)),
            Err(Refusal::NotAvailable { available: 7 })
        );
        assert_eq!(
            item.accept(&ItemEvent::Shipped(6)),
            Err(Refusal::NotReserved { reserved: 5 })
        );
        let item = item.accept(&ItemEvent::Shipped(5)).unwrap();
        assert_eq!(
            item,
            Item {
                on_hand: 7,
                reserved: 0
            }
        );
        assert_eq!(
            item.accept(&ItemEvent::Received(0)),
            Err(Refusal::ZeroQuantity)
        );
        assert_eq!(
            item.accept(&ItemEvent::Received(u64::MAX)),
            Err(Refusal::TooMuch)
        );
    }
}
