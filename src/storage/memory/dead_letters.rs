//! Dead letters in memory ([`MemoryDeadLetters`]): the [`DeadLetterStore`] contract over a
//! map behind a mutex, for tests and apps without storage.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;
use uuid::Uuid;

use crate::stream::{DeadLetter, DeadLetterPage, DeadLetterStore, StoreError};

/// Dead letters in memory (tests, and apps without storage).
#[derive(Debug, Default)]
pub struct MemoryDeadLetters {
    letters: Mutex<BTreeMap<Uuid, DeadLetter>>,
}

impl MemoryDeadLetters {
    pub fn new() -> Self {
        Self::default()
    }

    /// Every letter, in id order.
    pub fn all(&self) -> Vec<DeadLetter> {
        self.letters().values().cloned().collect()
    }

    fn letters(&self) -> std::sync::MutexGuard<'_, BTreeMap<Uuid, DeadLetter>> {
        self.letters
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait]
impl DeadLetterStore for MemoryDeadLetters {
    async fn put(&self, letter: &DeadLetter) -> Result<(), StoreError> {
        self.letters().insert(letter.id, letter.clone());
        Ok(())
    }

    async fn get(&self, id: Uuid) -> Result<Option<DeadLetter>, StoreError> {
        Ok(self.letters().get(&id).cloned())
    }

    async fn list(&self, after: Option<Uuid>, limit: usize) -> Result<DeadLetterPage, StoreError> {
        let letters = self.letters();
        let mut found: Vec<DeadLetter> = letters
            .values()
            .filter(|letter| after.is_none_or(|after| letter.id > after))
            .take(limit.saturating_add(1))
            .cloned()
            .collect();
        let more = found.len() > limit;
        found.truncate(limit);
        Ok(DeadLetterPage {
            next: if more {
                found.last().map(|l| l.id)
            } else {
                None
            },
            letters: found,
            unreadable: Vec::new(),
        })
    }

    async fn remove(&self, id: Uuid) -> Result<(), StoreError> {
        self.letters().remove(&id);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::deadletter::sample_letter as letter;

    #[tokio::test]
    async fn memory_pages_in_id_order() {
        let store = MemoryDeadLetters::new();
        let letters: Vec<DeadLetter> = (1..=5).map(|s| letter("x", s)).collect();
        for l in &letters {
            store.put(l).await.unwrap();
        }
        let mut ids: Vec<Uuid> = letters.iter().map(|l| l.id).collect();
        ids.sort();
        let first = store.list(None, 3).await.unwrap();
        assert_eq!(
            first.letters.iter().map(|l| l.id).collect::<Vec<_>>(),
            ids[..3]
        );
        let second = store.list(first.next, 3).await.unwrap();
        assert_eq!(
            second.letters.iter().map(|l| l.id).collect::<Vec<_>>(),
            ids[3..]
        );
        assert_eq!(second.next, None);
        store.remove(ids[0]).await.unwrap();
        assert!(store.get(ids[0]).await.unwrap().is_none());
    }
}
