//! Read-model rows in a map behind one mutex, for unit tests and single-process use. It keeps
//! the whole [`ReadModelStore`] contract: every save checks its condition and writes under the
//! same lock, and every write gets a new ETag. Listing pages like the Table store: rows in
//! instance-key order after the continuation, whose continuation is the last key of the page,
//! keys compared as Table storage compares them (by UTF-16 code units, which differs from
//! Rust's UTF-8 order for keys with characters beyond U+FFFF).

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;

use crate::stream::{
    checked_page_size, end_page, Checkpoint, ETag, ReadModelPage, ReadModelRow, ReadModelStore,
    SaveCondition, SaveOutcome, StoredCheckpoint,
};
use crate::stream::{EntityType, ReadModelStoreError, StreamId};

/// (read model, entity type) → instance key → row.
type Rows = BTreeMap<(String, EntityType), BTreeMap<InstanceKey, StoredCheckpoint>>;

/// An instance key, ordered by its UTF-16 code units, as Table storage orders row keys.
#[derive(Debug, Clone, PartialEq, Eq)]
struct InstanceKey(String);

impl InstanceKey {
    fn of(instance: &str) -> Self {
        Self(instance.to_owned())
    }
}

impl Ord for InstanceKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.encode_utf16().cmp(other.0.encode_utf16())
    }
}

impl PartialOrd for InstanceKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// Read-model rows in memory.
#[derive(Default)]
pub struct MemoryReadModelStore {
    rows: Mutex<Rows>,
    next_etag: AtomicU64,
    saves: AtomicU64,
    loads: AtomicU64,
}

impl MemoryReadModelStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Row loads since the store was made (each a point read on a real backend).
    pub fn loads(&self) -> u64 {
        self.loads.load(Ordering::Relaxed)
    }

    /// Successful saves since the store was made.
    pub fn saves(&self) -> u64 {
        self.saves.load(Ordering::Relaxed)
    }

    /// Replaces a row without any condition (tests use it to make a row wrong). Feature
    /// `testing` only.
    #[cfg(any(test, feature = "testing"))]
    pub fn overwrite(&self, model: &str, stream: &StreamId, checkpoint: Checkpoint) {
        let etag = self.new_etag();
        self.lock()
            .entry(key(model, stream.entity_type()))
            .or_default()
            .insert(
                InstanceKey::of(stream.instance()),
                StoredCheckpoint {
                    checkpoint: checkpoint.as_row_of(model),
                    etag,
                },
            );
    }

    fn new_etag(&self) -> ETag {
        ETag(format!(
            "m{}",
            self.next_etag.fetch_add(1, Ordering::Relaxed)
        ))
    }

    fn lock(&self) -> MutexGuard<'_, Rows> {
        // Each operation is one lookup or one insert, so a poisoned map is still consistent.
        self.rows.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn key(model: &str, entity_type: &EntityType) -> (String, EntityType) {
    (model.to_owned(), entity_type.clone())
}

#[async_trait]
impl ReadModelStore for MemoryReadModelStore {
    async fn load(
        &self,
        model: &str,
        stream: &StreamId,
    ) -> Result<Option<StoredCheckpoint>, ReadModelStoreError> {
        self.loads.fetch_add(1, Ordering::Relaxed);
        Ok(self
            .lock()
            .get(&key(model, stream.entity_type()))
            .and_then(|rows| rows.get(&InstanceKey::of(stream.instance())))
            .cloned())
    }

    async fn save(
        &self,
        model: &str,
        stream: &StreamId,
        checkpoint: &Checkpoint,
        condition: &SaveCondition,
    ) -> Result<SaveOutcome, ReadModelStoreError> {
        let etag = self.new_etag();
        let mut all = self.lock();
        let rows = all.entry(key(model, stream.entity_type())).or_default();
        let instance = InstanceKey::of(stream.instance());
        let current = rows.get(&instance).map(|row| &row.etag);
        let holds = match (condition, current) {
            (SaveCondition::MustNotExist, None) => true,
            (SaveCondition::IfMatch(expected), Some(actual)) => expected == actual,
            _ => false,
        };
        if !holds {
            return Ok(SaveOutcome::Conflict);
        }
        rows.insert(
            instance,
            StoredCheckpoint {
                checkpoint: checkpoint.as_row_of(model),
                etag: etag.clone(),
            },
        );
        self.saves.fetch_add(1, Ordering::Relaxed);
        Ok(SaveOutcome::Saved { etag: Some(etag) })
    }

    async fn list(
        &self,
        model: &str,
        entity_type: &EntityType,
        continuation: Option<&str>,
        page_size: usize,
    ) -> Result<ReadModelPage, ReadModelStoreError> {
        let page_size = checked_page_size(continuation, page_size)?;
        let all = self.lock();
        let Some(rows) = all.get(&key(model, entity_type)) else {
            return Ok(ReadModelPage::default());
        };
        let lower = continuation.map_or(Bound::Unbounded, |after| {
            Bound::Excluded(InstanceKey::of(after))
        });
        let mut rows: Vec<ReadModelRow> = rows
            .range((lower, Bound::Unbounded))
            .take(page_size.saturating_add(1))
            .map(|(instance, row)| ReadModelRow {
                instance: instance.0.clone(),
                checkpoint: row.checkpoint.clone(),
            })
            .collect();
        let continuation = end_page(&mut rows, page_size, |row| &row.instance);
        Ok(ReadModelPage { rows, continuation })
    }

    async fn delete(&self, model: &str, stream: &StreamId) -> Result<(), ReadModelStoreError> {
        if let Some(rows) = self.lock().get_mut(&key(model, stream.entity_type())) {
            rows.remove(&InstanceKey::of(stream.instance()));
        }
        Ok(())
    }
}
