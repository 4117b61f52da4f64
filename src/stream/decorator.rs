//! One way to write an event store that wraps another (a decorator): implement
//! [`StoreDecorator`], name the wrapped store in [`StoreDecorator::inner`], and write only the
//! calls the decorator changes. Every other call goes to the wrapped store unchanged, and the
//! decorator is an [`EventStore`] (a blanket implementation).
//!
//! A trait with forwarding default methods rather than a macro: `async_trait` allows default
//! methods, so the forwarding is written once, here, and a decorator reads as an ordinary trait
//! implementation. Because the blanket implementation forwards every [`EventStore`] method,
//! a decorator also forwards the calls that have a default in [`EventStore`] (`read_known`,
//! `read_stored`, `erase`, `verify`, `is_erased`) to the wrapped store's own version of them, so it never
//! changes what the wrapped store does unless it says so.

use async_trait::async_trait;

use super::{
    AppendOutcome, EntityType, Erasure, EventStore, ExpectedVersion, NewEvent, ReadRequest,
    RecordedEvent, StoreError, StreamId, StreamPage, StreamSlice,
};

/// An event store that wraps another and changes some of its calls (see the module
/// documentation). Each method has [`EventStore`]'s meaning; its default calls the same
/// method of [`StoreDecorator::inner`].
#[async_trait]
pub trait StoreDecorator: Send + Sync + 'static {
    /// The wrapped store.
    fn inner(&self) -> &dyn EventStore;

    /// [`EventStore::append`].
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendOutcome, StoreError> {
        self.inner().append(stream, expected, events).await
    }

    /// [`EventStore::read`].
    async fn read(
        &self,
        stream: &StreamId,
        request: ReadRequest,
    ) -> Result<StreamSlice, StoreError> {
        self.inner().read(stream, request).await
    }

    /// [`EventStore::version`].
    async fn version(&self, stream: &StreamId) -> Result<u64, StoreError> {
        self.inner().version(stream).await
    }

    /// [`EventStore::read_known`].
    async fn read_known(
        &self,
        stream: &StreamId,
        request: ReadRequest,
        version: u64,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.inner().read_known(stream, request, version).await
    }

    /// [`EventStore::read_stored`].
    async fn read_stored(
        &self,
        stream: &StreamId,
        request: ReadRequest,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.inner().read_stored(stream, request).await
    }

    /// [`EventStore::list_streams`].
    async fn list_streams(
        &self,
        entity_type: &EntityType,
        continuation: Option<&str>,
        page_size: usize,
    ) -> Result<StreamPage, StoreError> {
        self.inner()
            .list_streams(entity_type, continuation, page_size)
            .await
    }

    /// [`EventStore::erase`].
    async fn erase(&self, stream: &StreamId) -> Result<Erasure, StoreError> {
        self.inner().erase(stream).await
    }

    /// [`EventStore::verify`].
    async fn verify(&self, stream: &StreamId) -> Result<Vec<String>, StoreError> {
        self.inner().verify(stream).await
    }

    /// [`EventStore::is_erased`].
    async fn is_erased(&self, stream: &StreamId) -> Result<bool, StoreError> {
        self.inner().is_erased(stream).await
    }
}

#[async_trait]
impl<D: StoreDecorator> EventStore for D {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendOutcome, StoreError> {
        StoreDecorator::append(self, stream, expected, events).await
    }

    async fn read(
        &self,
        stream: &StreamId,
        request: ReadRequest,
    ) -> Result<StreamSlice, StoreError> {
        StoreDecorator::read(self, stream, request).await
    }

    async fn version(&self, stream: &StreamId) -> Result<u64, StoreError> {
        StoreDecorator::version(self, stream).await
    }

    async fn read_known(
        &self,
        stream: &StreamId,
        request: ReadRequest,
        version: u64,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        StoreDecorator::read_known(self, stream, request, version).await
    }

    async fn read_stored(
        &self,
        stream: &StreamId,
        request: ReadRequest,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        StoreDecorator::read_stored(self, stream, request).await
    }

    async fn list_streams(
        &self,
        entity_type: &EntityType,
        continuation: Option<&str>,
        page_size: usize,
    ) -> Result<StreamPage, StoreError> {
        StoreDecorator::list_streams(self, entity_type, continuation, page_size).await
    }

    async fn erase(&self, stream: &StreamId) -> Result<Erasure, StoreError> {
        StoreDecorator::erase(self, stream).await
    }

    async fn verify(&self, stream: &StreamId) -> Result<Vec<String>, StoreError> {
        StoreDecorator::verify(self, stream).await
    }

    async fn is_erased(&self, stream: &StreamId) -> Result<bool, StoreError> {
        StoreDecorator::is_erased(self, stream).await
    }
}

#[cfg(test)]
mod tests {
    use serde_json::value::RawValue;

    use super::*;
    use crate::storage::MemoryStore;

    /// Changes one call (`version`, answered one higher) and writes nothing else.
    struct OneAhead(MemoryStore);

    #[async_trait]
    impl StoreDecorator for OneAhead {
        fn inner(&self) -> &dyn EventStore {
            &self.0
        }

        async fn version(&self, stream: &StreamId) -> Result<u64, StoreError> {
            Ok(self.0.version(stream).await? + 1)
        }
    }

    #[tokio::test]
    async fn a_decorator_changes_what_it_writes_and_forwards_the_rest() {
        let store = OneAhead(MemoryStore::new());
        let store: &dyn EventStore = &store;
        let stream = StreamId::new("Bank", "Account", "D1").unwrap();
        let event = NewEvent::from_raw("Opened", RawValue::from_string("{}".into()).unwrap());
        let outcome = store
            .append(&stream, ExpectedVersion::NoStream, vec![event])
            .await
            .unwrap();
        assert_eq!(outcome.version, 1);
        // Changed: one ahead.
        assert_eq!(store.version(&stream).await.unwrap(), 2);
        // Forwarded: the wrapped store's answers, its defaults included.
        assert_eq!(
            store
                .read(&stream, ReadRequest::all())
                .await
                .unwrap()
                .version,
            1
        );
        assert_eq!(
            store
                .read_known(&stream, ReadRequest::all(), 1)
                .await
                .unwrap()
                .len(),
            1
        );
        assert_eq!(
            store
                .read_stored(&stream, ReadRequest::all())
                .await
                .unwrap()
                .len(),
            1
        );
        let page = store
            .list_streams(&EntityType::from_static("Bank", "Account"), None, 10)
            .await
            .unwrap();
        assert_eq!(page.instances, ["D1"]);
        assert!(store.verify(&stream).await.unwrap().is_empty());
        assert!(matches!(
            store.erase(&stream).await.unwrap(),
            Erasure::Erased { version: 1, .. }
        ));
        assert!(store.is_erased(&stream).await.unwrap());
    }
}
