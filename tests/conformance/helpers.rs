//! What the conformance suite and the per-backend tests (`tests/integration/table_backend.rs`,
//! `tests/integration/blob_backend.rs`) share: the streams and events they write, and the checks
//! they all make (a refused expectation, a stream without gaps, an outage, a wrong key). One copy,
//! so a check means the same thing in every file that makes it.

use std::time::Duration;

use serde_json::value::RawValue;
use streamfold::storage::StorageAccount;
use streamfold::stream::{
    EntityType, EventStore, ExpectedVersion, NewEvent, ReadRequest, StoreError, StreamId,
    StreamSlice,
};
use streamfold_testbed::Azurite;
use uuid::Uuid;

/// Domain of every stream the tests write.
pub const DOMAIN: &str = "Shop";
/// Entity type of every stream the tests write (the instance keys vary).
pub const ENTITY: &str = "Cart";

/// The entity type of the streams the suites write.
pub fn entity_type() -> EntityType {
    EntityType::from_static(DOMAIN, ENTITY)
}
/// Generous bound on an operation against a stopped emulator: it must fail, not hang.
pub const OUTAGE_BOUND: Duration = Duration::from_secs(30);
/// A well-formed account key that is not the emulator's.
pub const WRONG_KEY: &str = "d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXktd3Jvbmcta2V5LXdyb25nLWtleQ==";

/// The stream `DOMAIN / ENTITY / instance`.
pub fn stream(instance: &str) -> StreamId {
    StreamId::new(DOMAIN, ENTITY, instance).unwrap()
}

/// An event whose data is the JSON text `data`, exactly.
pub fn event(event_type: &str, data: &str) -> NewEvent {
    NewEvent::from_raw(event_type, RawValue::from_string(data.to_owned()).unwrap())
}

/// `n` small events, each with its own id and data.
pub fn events(n: usize) -> Vec<NewEvent> {
    (0..n)
        .map(|i| event("Added", &format!(r#"{{"i":{i}}}"#)))
        .collect()
}

/// An event whose data is `len` bytes (at least 2): a JSON string of ASCII letters.
pub fn sized_event(len: usize) -> NewEvent {
    event(
        "Sized",
        &format!("\"{}\"", "x".repeat(len.saturating_sub(2))),
    )
}

/// The largest data length in `2..too_big` whose [`sized_event`] `fits` (by bisection; `fits`
/// must hold for 2 and fail for `too_big`).
pub fn largest_fitting(fits: impl Fn(&NewEvent) -> bool, too_big: usize) -> usize {
    let (mut lo, mut hi) = (2, too_big);
    assert!(fits(&sized_event(lo)), "the smallest event fits");
    assert!(!fits(&sized_event(hi)), "the limit is below {hi} bytes");
    while lo + 1 < hi {
        let mid = lo + (hi - lo) / 2;
        if fits(&sized_event(mid)) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    lo
}

pub fn ids(events: &[NewEvent]) -> Vec<Uuid> {
    events.iter().map(|e| e.event_id).collect()
}

pub fn sequences(slice: &StreamSlice) -> Vec<u64> {
    slice.events.iter().map(|e| e.sequence).collect()
}

/// Checks that `result` is a refused expectation reporting `expected` and `actual`.
#[track_caller]
pub fn assert_wrong_version(
    result: Result<impl std::fmt::Debug, StoreError>,
    expected: ExpectedVersion,
    actual: u64,
) {
    match result {
        Err(StoreError::WrongExpectedVersion {
            expected: e,
            actual: a,
            ..
        }) => {
            assert_eq!(e, expected);
            assert_eq!(a, actual, "actual version reported for {expected}");
        }
        other => panic!("expected WrongExpectedVersion({expected}, {actual}), got {other:?}"),
    }
}

/// Reads the whole stream, checks that it is events 1..=version without a gap, and returns
/// the event ids in sequence order.
pub async fn contiguous(store: &dyn EventStore, s: &StreamId) -> Vec<Uuid> {
    let slice = store.read(s, ReadRequest::all()).await.unwrap();
    assert_eq!(sequences(&slice), (1..=slice.version).collect::<Vec<_>>());
    slice.events.iter().map(|e| e.event_id).collect()
}

/// Every page of the instances of `domain / entity`, following continuations.
pub async fn all_pages(
    store: &dyn EventStore,
    domain: &str,
    entity: &str,
    page_size: usize,
) -> Vec<Vec<String>> {
    let entity_type = &EntityType::new(domain, entity).unwrap();
    let mut pages = Vec::new();
    let mut continuation = None;
    loop {
        let page = store
            .list_streams(entity_type, continuation.as_deref(), page_size)
            .await
            .unwrap();
        assert!(
            page.instances.len() <= page_size,
            "a page is at most its size"
        );
        pages.push(page.instances);
        match page.continuation {
            Some(c) => continuation = Some(c),
            None => return pages,
        }
    }
}

/// With storage stopped, every operation on `s` (a stream at `version`) fails as `Unavailable`
/// within [`OUTAGE_BOUND`], and a refused connection is never reported as maybe applied.
pub async fn assert_unavailable_in_bounded_time(
    store: &dyn EventStore,
    s: &StreamId,
    version: u64,
) {
    let expected = ExpectedVersion::Exact(version);
    let append = tokio::time::timeout(OUTAGE_BOUND, store.append(s, expected, events(1)))
        .await
        .expect("an append during an outage must not hang");
    match append {
        Err(StoreError::Unavailable { maybe_applied, .. }) => assert!(
            !maybe_applied,
            "a refused connection cannot have applied the write"
        ),
        other => panic!("{other:?}"),
    }
    let read = tokio::time::timeout(OUTAGE_BOUND, store.read(s, ReadRequest::all()))
        .await
        .expect("a read during an outage must not hang");
    assert!(
        matches!(read, Err(StoreError::Unavailable { .. })),
        "{read:?}"
    );
    let version = tokio::time::timeout(OUTAGE_BOUND, store.version(s))
        .await
        .expect("a version read during an outage must not hang");
    assert!(
        matches!(version, Err(StoreError::Unavailable { .. })),
        "{version:?}"
    );
    let list = tokio::time::timeout(OUTAGE_BOUND, store.list_streams(&entity_type(), None, 5))
        .await
        .expect("a listing during an outage must not hang");
    assert!(
        matches!(list, Err(StoreError::Unavailable { .. })),
        "{list:?}"
    );
}

/// The emulator's account, signed with [`WRONG_KEY`].
pub fn wrong_key_account(azurite: &Azurite) -> StorageAccount {
    let connection = azurite
        .connection_string()
        .replace(streamfold_testbed::azurite::KEY, WRONG_KEY);
    StorageAccount::from_connection_string(&connection).unwrap()
}

/// Every operation of `store` (on an account signed with [`WRONG_KEY`]) fails as
/// `Misconfigured`, and no message leaks the key.
pub async fn assert_misconfigured_everywhere(store: &dyn EventStore) {
    let s = stream("x");
    assert_misconfigured(store.version(&s).await);
    assert_misconfigured(store.append(&s, ExpectedVersion::Any, events(1)).await);
    assert_misconfigured(store.read(&s, ReadRequest::all()).await);
    assert_misconfigured(store.list_streams(&entity_type(), None, 5).await);
}

/// Checks that `result` is `Misconfigured` and that its message does not leak the key.
#[track_caller]
pub fn assert_misconfigured(result: Result<impl std::fmt::Debug, StoreError>) {
    match result {
        Err(StoreError::Misconfigured(message)) => assert!(!message.contains(WRONG_KEY)),
        other => panic!("expected Misconfigured, got {other:?}"),
    }
}
