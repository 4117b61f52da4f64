//! The notification outbox against a real Azurite, on both backends: pending notifications
//! are recorded with the append (Table) or derived from the content (Append Blob), dispatching
//! publishes them before marking, a mark never hides events appended while it was being
//! published, and with the outbox on a Table append with a known version is still ONE storage
//! request.
//!
//! The second half runs the assembled app under the host simulator with
//! `streamfold_testbed::topic::TopicSim` as the Event Grid topic: an append publishes right
//! away; with the topic down appends still succeed and nothing is lost: the `NotificationSweep`
//! function publishes everything once the topic is back, and a second sweep publishes nothing.

mod support;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde_json::value::RawValue;
use streamfold::notify::dispatch::{DispatchOutcome, Dispatcher};
use streamfold::notify::{
    notification_id, MemorySink, Notification, NotificationKind, NotificationSink, PublishError,
    RaiseSwitches,
};
use streamfold::storage::table::TableStore;
use streamfold::storage::{BlobStore, StorageAccount};
use streamfold::stream::{EventStore, ExpectedVersion, NewEvent, Outbox, StreamId};
use streamfold_testbed::proxy::CountingProxy;
use streamfold_testbed::Azurite;
use uuid::Uuid;

use ExpectedVersion::{Exact, NoStream};

fn stream(instance: &str) -> StreamId {
    StreamId::new("Bank", "Account", instance).unwrap()
}

fn events(n: usize) -> Vec<NewEvent> {
    (0..n)
        .map(|i| {
            NewEvent::from_raw(
                "Deposited",
                RawValue::from_string(format!(r#"{{"n":{i}}}"#)).unwrap(),
            )
        })
        .collect()
}

fn account(azurite: &Azurite) -> StorageAccount {
    StorageAccount::from_connection_string(&azurite.connection_string()).unwrap()
}

fn table_store(account: StorageAccount) -> TableStore {
    TableStore::new(account).with_table_name(format!("t{}", Uuid::new_v4().simple()))
}

#[cfg(any())]
fn blob_store(account: StorageAccount) -> BlobStore {
    BlobStore::new(account).with_container(format!("c{}", Uuid::new_v4().simple()))
}

/// The backend under test, as both an event store and an outbox.
#[derive(Clone)]
struct Backend {
    store: Arc<dyn EventStore>,
    outbox: Arc<dyn Outbox>,
}

impl Backend {
    fn table(store: TableStore) -> Self {
        let store = Arc::new(store.with_outbox(true));
        Self {
            store: store.clone(),
            outbox: store,
        }
    }

    #[cfg(any())]
    fn blob(store: BlobStore) -> Self {
        let store = Arc::new(store);
        Self {
            store: store.clone(),
            outbox: store,
        }
    }

    fn dispatcher(&self, sink: Arc<dyn NotificationSink>) -> Dispatcher {
        Dispatcher::new(
            "test",
            self.store.clone(),
            self.outbox.clone(),
            sink,
            RaiseSwitches::ALL,
        )
    }
}

/// (sequence, kind) of what a sink received, in order.
fn published(sink: &MemorySink) -> Vec<(u64, NotificationKind)> {
    sink.published()
        .iter()
        .map(|n| (n.data.sequence_number, n.kind()))
        .collect()
}

/// Append, see it pending, dispatch it, see nothing pending; the ids are the deterministic ones.
async fn publishes_then_marks(backend: Backend) {
    let sink = Arc::new(MemorySink::new());
    let dispatcher = backend.dispatcher(sink.clone());
    let s = stream("ACC-1");
    assert!(backend.outbox.pending_for(&s).await.unwrap().is_none());
    backend.store.append(&s, NoStream, events(2)).await.unwrap();
    let pending = backend.outbox.pending_for(&s).await.unwrap().unwrap();
    assert_eq!((pending.notified, pending.version), (0, 2));
    let swept = backend.outbox.pending(100).await.unwrap();
    assert_eq!(swept.len(), 1);
    assert_eq!(
        (&swept[0].stream, swept[0].notified, swept[0].version),
        (&s, 0, 2)
    );

    let outcome = dispatcher.dispatch(&s).await.unwrap();
    assert_eq!(
        outcome,
        DispatchOutcome {
            published: 3,
            marked: true
        }
    );
    let ids: Vec<Uuid> = sink.published().iter().map(|n| n.id).collect();
    assert_eq!(
        ids,
        vec![
            notification_id(&s, 1, NotificationKind::NewEntity),
            notification_id(&s, 1, NotificationKind::NewEvent),
            notification_id(&s, 2, NotificationKind::NewEvent),
        ]
    );
    assert!(backend.outbox.pending_for(&s).await.unwrap().is_none());
    assert!(backend.outbox.pending(100).await.unwrap().is_empty());
    assert_eq!(dispatcher.dispatch(&s).await.unwrap().published, 0);

    // More events: only they are pending.
    backend.store.append(&s, Exact(2), events(3)).await.unwrap();
    let pending = backend.outbox.pending_for(&s).await.unwrap().unwrap();
    assert_eq!((pending.notified, pending.version), (2, 5));
    let report = dispatcher.sweep(100).await.unwrap();
    assert_eq!(
        (report.pending, report.dispatched, report.published),
        (1, 1, 3)
    );
    assert_eq!(published(&sink).len(), 6);
    assert!(backend.outbox.pending(100).await.unwrap().is_empty());
}

/// A sink that appends one event to a stream while it publishes its first batch: an append
/// racing a dispatch, between the dispatch's read and its mark.
struct RacingSink {
    inner: Arc<MemorySink>,
    store: Arc<dyn EventStore>,
    stream: StreamId,
    raced: Mutex<bool>,
}

#[async_trait]
impl NotificationSink for RacingSink {
    async fn publish(&self, batch: &[Notification]) -> Result<(), PublishError> {
        let race = !std::mem::replace(&mut *self.raced.lock().unwrap(), true);
        if race {
            self.store
                .append(&self.stream, ExpectedVersion::Any, events(1))
                .await
                .unwrap();
        }
        self.inner.publish(batch).await
    }
}

/// The event appended during the publish is never marked as notified without being published.
/// Returns whether it was still pending after the first dispatch.
async fn a_racing_append_is_never_skipped(backend: Backend) -> bool {
    let memory = Arc::new(MemorySink::new());
    let s = stream("race");
    let sink = Arc::new(RacingSink {
        inner: memory.clone(),
        store: backend.store.clone(),
        stream: s.clone(),
        raced: Mutex::new(false),
    });
    let dispatcher = backend.dispatcher(sink);
    backend.store.append(&s, NoStream, events(1)).await.unwrap();
    dispatcher.dispatch(&s).await.unwrap();
    // Whatever the backend's mark did, event 2 is published or still pending.
    let still_pending = match backend.outbox.pending_for(&s).await.unwrap() {
        Some(pending) => {
            assert_eq!((pending.notified, pending.version), (1, 2));
            let sequences: BTreeSet<u64> = published(&memory).iter().map(|(s, _)| *s).collect();
            assert_eq!(sequences, BTreeSet::from([1]));
            dispatcher.dispatch(&s).await.unwrap();
            true
        }
        None => false,
    };
    assert!(backend.outbox.pending_for(&s).await.unwrap().is_none());
    let sequences: BTreeSet<u64> = published(&memory).iter().map(|(s, _)| *s).collect();
    assert_eq!(sequences, BTreeSet::from([1, 2]));
    still_pending
}

#[tokio::test]
async fn table_outbox_publishes_then_marks() {
    let azurite = Azurite::start().await.unwrap();
    publishes_then_marks(Backend::table(table_store(account(&azurite)))).await;
}

#[tokio::test]
async fn table_outbox_never_skips_a_racing_append() {
    let azurite = Azurite::start().await.unwrap();
    let backend = Backend::table(table_store(account(&azurite)));
    // On Table storage the racing append changed the row's ETag: the first mark failed and the
    // dispatch read the row again, so one dispatch published both events.
    assert!(!a_racing_append_is_never_skipped(backend).await);
}

#[tokio::test]
async fn table_outbox_off_writes_no_row() {
    let azurite = Azurite::start().await.unwrap();
    let plain = table_store(account(&azurite));
    let s = stream("old");
    plain.append(&s, NoStream, events(2)).await.unwrap();
    assert!(plain.pending_for(&s).await.unwrap().is_none());
    assert!(plain.pending(100).await.unwrap().is_empty());

    // Turned on later: the next append makes the whole stream pending (its history was never
    // published).
    let with_outbox = plain.clone().with_outbox(true);
    with_outbox.append(&s, Exact(2), events(1)).await.unwrap();
    let pending = with_outbox.pending_for(&s).await.unwrap().unwrap();
    assert_eq!((pending.notified, pending.version), (0, 3));
}

#[tokio::test]
async fn table_append_with_outbox_is_one_request() {
    let azurite = Azurite::start().await.unwrap();
    let proxy = CountingProxy::start(&format!("http://127.0.0.1:{}", azurite.table_port))
        .await
        .unwrap();
    let connection = Azurite::connection_string_for(
        &azurite.blob_endpoint(),
        &format!("{}/devstoreaccount1", proxy.url()),
    );
    let store =
        table_store(StorageAccount::from_connection_string(&connection).unwrap()).with_outbox(true);
    let s = stream("count");
    // The first request of the store creates the table: not counted.
    store.append(&s, NoStream, events(1)).await.unwrap();
    proxy.reset();
    store.append(&s, Exact(1), events(3)).await.unwrap();
    assert_eq!(proxy.requests(), 1, "{:?}", proxy.log());
    proxy.reset();
    store
        .append(&stream("count-2"), NoStream, events(2))
        .await
        .unwrap();
    assert_eq!(proxy.requests(), 1, "{:?}", proxy.log());
    // And that one request recorded the pending notifications.
    let pending = store.pending_for(&s).await.unwrap().unwrap();
    assert_eq!((pending.notified, pending.version), (0, 4));
}
