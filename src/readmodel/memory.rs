//! Read-model rows in a map behind one mutex, for unit tests and single-process use. It keeps
//! the whole [`ReadModelStore`] contract: every save checks its condition and writes under the
//! same lock, and every write gets a new ETag. Listing pages like the Table store: rows in
//! instance-key order after the continuation, whose continuation is the last key of the page.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;

use super::store::{
    checked_page_size, Checkpoint, ETag, ReadModelPage, ReadModelRow, ReadModelStore,
    SaveCondition, SaveOutcome, StoredCheckpoint,
};
use super::ReadModelError;
use crate::stream::{validate_entity_type, StreamId};

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
        continuation: Option<&str>,
        page_size: usize,
    ) -> Result<ReadModelPage, ReadModelError> {
        validate_entity_type(domain, entity)?;
        let page_size = checked_page_size(continuation, page_size)?;
        let key = (model.to_owned(), domain.to_owned(), entity.to_owned());
        let all = self.lock();
        let Some(rows) = all.get(&key) else {
            return Ok(ReadModelPage::default());
        };
        let lower = continuation.map_or(Bound::Unbounded, Bound::Excluded);
        let mut rows: Vec<ReadModelRow> = rows
            .range::<str, _>((lower, Bound::Unbounded))
            .take(page_size.saturating_add(1))
            .map(|(instance, row)| ReadModelRow {
                instance: instance.clone(),
                checkpoint: row.checkpoint.clone(),
            })
            .collect();
        let continuation = if rows.len() > page_size {
            rows.truncate(page_size);
            rows.last().map(|row| row.instance.clone())
        } else {
            None
        };
        Ok(ReadModelPage { rows, continuation })
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
            failure: None,
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
        let page = store.list("m", "Bank", "Account", None, 10).await.unwrap();
        assert_eq!(page.rows.len(), 1);
        assert_eq!(page.rows[0].checkpoint.sequence, 2);
        assert_eq!(page.continuation, None);
        let other = store.list("m", "Bank", "Other", None, 10).await.unwrap();
        assert!(other.rows.is_empty() && other.continuation.is_none());
    }

    /// Saves a row of `model` for each instance key, in the order given.
    async fn fill(store: &MemoryReadModelStore, model: &str, entity: &str, keys: &[&str]) {
        for (n, instance) in keys.iter().enumerate() {
            let stream = StreamId::new("Bank", entity, *instance).unwrap();
            let outcome = store
                .save(
                    model,
                    &stream,
                    &checkpoint(n as u64 + 1),
                    &SaveCondition::MustNotExist,
                )
                .await
                .unwrap();
            assert_eq!(outcome, SaveOutcome::Saved);
        }
    }

    /// Follows continuations with pages of `page_size`: the instance keys of each page.
    async fn pages(
        store: &MemoryReadModelStore,
        model: &str,
        page_size: usize,
    ) -> Vec<Vec<String>> {
        let mut pages = Vec::new();
        let mut continuation: Option<String> = None;
        loop {
            let page = store
                .list(model, "Bank", "Account", continuation.as_deref(), page_size)
                .await
                .unwrap();
            assert!(page.rows.len() <= page_size.max(1));
            let keys: Vec<String> = page.rows.iter().map(|r| r.instance.clone()).collect();
            if let Some(next) = &page.continuation {
                assert_eq!(
                    Some(next),
                    keys.last(),
                    "the continuation is the page's last key"
                );
            }
            pages.push(keys);
            match page.continuation {
                Some(next) => continuation = Some(next),
                None => return pages,
            }
        }
    }

    #[tokio::test]
    async fn listing_pages_in_key_order_and_visits_every_row_once() {
        let store = MemoryReadModelStore::new();
        // Saved out of order; keys that sort differently as text than as numbers.
        let keys = ["7", "10", "2", "O'Brien", "a b", "1", "ü"];
        fill(&store, "m", "Account", &keys).await;
        // Rows of another model and another entity type are never listed.
        fill(&store, "other", "Account", &["0", "5"]).await;
        fill(&store, "m", "Card", &["0", "5"]).await;
        let mut sorted: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
        sorted.sort();

        let three = pages(&store, "m", 3).await;
        assert_eq!(
            three.iter().map(Vec::len).collect::<Vec<_>>(),
            [3, 3, 1],
            "{three:?}"
        );
        assert_eq!(three.concat(), sorted);

        // A page size that divides the rows exactly: the last full page says the end.
        let seven = pages(&store, "m", 7).await;
        assert_eq!(seven, [sorted.clone()]);
        // A page size of 0 reads pages of 1.
        let ones = pages(&store, "m", 0).await;
        assert_eq!(ones.len(), sorted.len());
        assert_eq!(ones.concat(), sorted);

        // A continuation need not be a stored key: the rows after it.
        let after = store
            .list("m", "Bank", "Account", Some("3"), 100)
            .await
            .unwrap();
        let expected: Vec<&String> = sorted.iter().filter(|k| k.as_str() > "3").collect();
        let got: Vec<&String> = after.rows.iter().map(|r| &r.instance).collect();
        assert_eq!(got, expected);
        assert_eq!(after.continuation, None);
        // Past the last key: an empty last page.
        let past = store
            .list("m", "Bank", "Account", Some("ü"), 100)
            .await
            .unwrap();
        assert!(past.rows.is_empty() && past.continuation.is_none());
    }

    #[tokio::test]
    async fn rows_written_during_a_walk_after_its_position_are_seen() {
        let store = MemoryReadModelStore::new();
        fill(&store, "m", "Account", &["b", "d", "f"]).await;
        let first = store.list("m", "Bank", "Account", None, 2).await.unwrap();
        assert_eq!(first.continuation.as_deref(), Some("d"));
        // Written behind the walk (not seen) and ahead of it (seen).
        fill(&store, "m", "Account", &["a", "e"]).await;
        let second = store
            .list("m", "Bank", "Account", first.continuation.as_deref(), 2)
            .await
            .unwrap();
        let keys: Vec<&str> = second.rows.iter().map(|r| r.instance.as_str()).collect();
        assert_eq!(keys, ["e", "f"]);
        assert_eq!(second.continuation, None);
    }

    #[tokio::test]
    async fn invalid_continuations_and_entity_types_are_refused() {
        let store = MemoryReadModelStore::new();
        fill(&store, "m", "Account", &["1"]).await;
        for bad in ["a/b", "x#", "\u{1}"] {
            let error = store
                .list("m", "Bank", "Account", Some(bad), 10)
                .await
                .unwrap_err();
            assert!(
                matches!(&error, ReadModelError::InvalidKey(key) if key.what == "instance key"),
                "{bad:?}: {error}"
            );
        }
        let long = "k".repeat(crate::stream::MAX_INSTANCE_KEY_BYTES + 1);
        assert!(store
            .list("m", "Bank", "Account", Some(&long), 10)
            .await
            .is_err());
        assert!(matches!(
            store.list("m", "Bank", "Acc-ount", None, 10).await,
            Err(ReadModelError::InvalidKey(_))
        ));
    }
}
