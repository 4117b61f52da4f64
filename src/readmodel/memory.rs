//! Read-model rows in a map behind one mutex, for unit tests and single-process use. It keeps
//! the whole [`ReadModelStore`] contract: every save checks its condition and writes under the
//! same lock, and every write gets a new ETag.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;

use super::store::{
    Checkpoint, ETag, ReadModelRow, ReadModelStore, SaveCondition, SaveOutcome, StoredCheckpoint,
};
use super::ReadModelError;
use crate::stream::StreamId;

/// (read model, domain, entity type) → instance key → row.
type Rows = BTreeMap<(String, String, String), BTreeMap<String, StoredCheckpoint>>;

/// Read-model rows in memory.
#[derive(Default)]
pub struct MemoryReadModelStore {
    rows: Mutex<Rows>,
    next_etag: AtomicU64,
    saves: AtomicU64,
}

impl MemoryReadModelStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Successful saves since the store was made.
    pub fn saves(&self) -> u64 {
        self.saves.load(Ordering::Relaxed)
    }

    /// Replaces a row without any condition (tests use it to make a row wrong).
    pub fn overwrite(&self, model: &str, stream: &StreamId, checkpoint: Checkpoint) {
        let etag = self.new_etag();
        self.lock().entry(key(model, stream)).or_default().insert(
            stream.instance().to_owned(),
            StoredCheckpoint { checkpoint, etag },
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

fn key(model: &str, stream: &StreamId) -> (String, String, String) {
    (
        model.to_owned(),
        stream.domain().to_owned(),
        stream.entity().to_owned(),
    )
}

#[async_trait]
impl ReadModelStore for MemoryReadModelStore {
    async fn load(
        &self,
        model: &str,
        stream: &StreamId,
    ) -> Result<Option<StoredCheckpoint>, ReadModelError> {
        Ok(self
            .lock()
            .get(&key(model, stream))
            .and_then(|rows| rows.get(stream.instance()))
            .cloned())
    }

    async fn save(
        &self,
        model: &str,
        stream: &StreamId,
        checkpoint: &Checkpoint,
        condition: &SaveCondition,
    ) -> Result<SaveOutcome, ReadModelError> {
        let etag = self.new_etag();
        let mut all = self.lock();
        let rows = all.entry(key(model, stream)).or_default();
        let current = rows.get(stream.instance()).map(|row| &row.etag);
        let holds = match (condition, current) {
            (SaveCondition::MustNotExist, None) => true,
            (SaveCondition::IfMatch(expected), Some(actual)) => expected == actual,
            _ => false,
        };
        if !holds {
            return Ok(SaveOutcome::Conflict);
        }
        rows.insert(
            stream.instance().to_owned(),
            StoredCheckpoint {
                checkpoint: checkpoint.clone(),
                etag,
            },
        );
        self.saves.fetch_add(1, Ordering::Relaxed);
        Ok(SaveOutcome::Saved)
    }

    async fn list(
        &self,
        model: &str,
        domain: &str,
        entity: &str,
    ) -> Result<Vec<ReadModelRow>, ReadModelError> {
        let key = (model.to_owned(), domain.to_owned(), entity.to_owned());
        Ok(self
            .lock()
            .get(&key)
            .map(|rows| {
                rows.iter()
                    .map(|(instance, row)| ReadModelRow {
                        instance: instance.clone(),
                        checkpoint: row.checkpoint.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::value::RawValue;

    fn checkpoint(sequence: u64) -> Checkpoint {
        Checkpoint {
            state: RawValue::from_string(format!("{{\"n\":{sequence}}}")).unwrap(),
            sequence,
            projection_version: 1,
        }
    }

    #[tokio::test]
    async fn saves_are_conditional() {
        let store = MemoryReadModelStore::new();
        let stream = StreamId::new("Bank", "Account", "1").unwrap();
        assert!(store.load("m", &stream).await.unwrap().is_none());
        let first = store
            .save("m", &stream, &checkpoint(1), &SaveCondition::MustNotExist)
            .await
            .unwrap();
        assert_eq!(first, SaveOutcome::Saved);
        assert_eq!(
            store
                .save("m", &stream, &checkpoint(1), &SaveCondition::MustNotExist)
                .await
                .unwrap(),
            SaveOutcome::Conflict
        );
        let loaded = store.load("m", &stream).await.unwrap().unwrap();
        assert_eq!(loaded.checkpoint, checkpoint(1));
        let etag = loaded.etag;
        let stale = SaveCondition::IfMatch(ETag("other".into()));
        assert_eq!(
            store
                .save("m", &stream, &checkpoint(2), &stale)
                .await
                .unwrap(),
            SaveOutcome::Conflict
        );
        let fresh = SaveCondition::IfMatch(etag);
        assert_eq!(
            store
                .save("m", &stream, &checkpoint(2), &fresh)
                .await
                .unwrap(),
            SaveOutcome::Saved
        );
        // The old ETag is spent.
        assert_eq!(
            store
                .save("m", &stream, &checkpoint(3), &fresh)
                .await
                .unwrap(),
            SaveOutcome::Conflict
        );
        let rows = store.list("m", "Bank", "Account").await.unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].checkpoint.sequence, 2);
        assert!(store.list("m", "Bank", "Other").await.unwrap().is_empty());
    }
}
