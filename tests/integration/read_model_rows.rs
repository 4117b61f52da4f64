//! What the Table read-model store adds to its contract (`tests/contracts/readmodels.rs`), against
//! a real Azurite, each row write one single-entity request: how each answer to a save or a
//! delete maps (a condition that did not hold is a conflict, a refused row is corrupt, refused
//! access a misconfiguration, busy storage unavailable), injected by a proxy in front of
//! Azurite; a write whose answer was lost is reported as maybe applied; and a table deleted
//! under the store is a misconfiguration to a save but no row to a delete. A second store on
//! the same table, not behind the proxy, sees what really happened.

use crate::support::CountedStorage;

use serde_json::value::RawValue;
use streamfold::readmodel::{
    Checkpoint, ReadModelStore, ReadModelStoreError, SaveCondition, SaveOutcome, StoredCheckpoint,
    TableReadModelStore,
};
use streamfold::storage::StorageAccount;
use streamfold::stream::{StoreError, StreamId};
use streamfold::testing::RawClients;
use streamfold_testbed::proxy::Fault;
use streamfold_testbed::Azurite;

/// The table of these tests: it occurs in the path of every request about one of its rows.
const TABLE: &str = "rowwrites";
const MODEL: &str = "m";

struct Stores {
    azurite: Azurite,
    counted: CountedStorage,
    /// Straight to Azurite.
    direct: TableReadModelStore,
    /// Through the proxy.
    proxied: TableReadModelStore,
}

async fn setup() -> Stores {
    let azurite = Azurite::start().await.unwrap();
    let counted = CountedStorage::start(&azurite).await;
    let direct = TableReadModelStore::with_table_name(
        &StorageAccount::from_connection_string(&azurite.connection_string()).unwrap(),
        TABLE,
    );
    let proxied = TableReadModelStore::with_table_name(
        &StorageAccount::from_connection_string(&counted.connection).unwrap(),
        TABLE,
    );
    Stores {
        azurite,
        counted,
        direct,
        proxied,
    }
}

fn stream(instance: &str) -> StreamId {
    StreamId::new("Bank", "Account", instance).unwrap()
}

fn checkpoint(sequence: u64) -> Checkpoint {
    Checkpoint {
        projection: MODEL.into(),
        projection_version: 1,
        sequence,
        max_timestamp: None,
        state: RawValue::from_string(format!("{{\"n\":{sequence}}}")).unwrap(),
        failure: None,
    }
}

async fn load(store: &TableReadModelStore, s: &StreamId) -> Option<StoredCheckpoint> {
    store.load(MODEL, s).await.unwrap()
}

/// `fault` for the requests of `method` only.
fn on(method: &str, fault: Fault) -> Fault {
    Fault {
        method: Some(method.to_owned()),
        ..fault
    }
}

#[track_caller]
fn assert_store_error(
    result: Result<impl std::fmt::Debug, ReadModelStoreError>,
    expected: fn(&StoreError) -> bool,
) {
    match result {
        Err(ReadModelStoreError::Store(error)) if expected(&error) => {}
        other => panic!("{other:?}"),
    }
}

/// What a write answered with an injected fault comes to.
#[derive(Debug, Clone, Copy)]
enum Expected {
    /// `SaveOutcome::Conflict`.
    Conflict,
    /// The delete succeeds.
    Deleted,
    /// `StoreError::Corrupt`, naming the status.
    Corrupt,
    /// `StoreError::Misconfigured`.
    Misconfigured,
    /// `StoreError::Unavailable`, certainly not applied.
    NotApplied,
}

#[tokio::test]
async fn each_answer_to_a_row_write_maps_to_its_outcome() {
    let stores = setup().await;
    let (direct, proxied, proxy) = (&stores.direct, &stores.proxied, &stores.counted.tables);
    let (existing, absent) = (stream("1"), stream("2"));
    direct
        .save(
            MODEL,
            &existing,
            &checkpoint(1),
            &SaveCondition::MustNotExist,
        )
        .await
        .unwrap();
    let loaded = load(direct, &existing).await.unwrap();
    let if_match = SaveCondition::after_load(Some(&loaded));
    let (first, second) = (checkpoint(1), checkpoint(2));
    let insert = || proxied.save(MODEL, &absent, &first, &SaveCondition::MustNotExist);
    let merge = || proxied.save(MODEL, &existing, &second, &if_match);
    let delete = || proxied.delete(MODEL, &existing);

    // Each fault is answered by the proxy: storage never sees the write.
    use Expected::*;
    let cases = [
        ("POST", 409, "EntityAlreadyExists", Conflict),
        ("POST", 400, "InvalidInput", Corrupt),
        ("POST", 403, "AuthenticationFailed", Misconfigured),
        ("POST", 503, "ServerBusy", NotApplied),
        ("MERGE", 412, "UpdateConditionNotSatisfied", Conflict),
        ("MERGE", 404, "ResourceNotFound", Conflict),
        ("MERGE", 400, "InvalidInput", Corrupt),
        ("DELETE", 404, "ResourceNotFound", Deleted),
        ("DELETE", 400, "InvalidInput", Corrupt),
    ];
    for (method, status, code, expected) in cases {
        proxy.clear_faults();
        proxy.inject(on(method, Fault::new(TABLE, status, code)));
        let got = match method {
            "POST" => insert().await.map(Some),
            "MERGE" => merge().await.map(Some),
            _ => delete().await.map(|()| None),
        };
        let store_error = match &got {
            Err(ReadModelStoreError::Store(error)) => Some(error),
            _ => None,
        };
        let as_expected = match expected {
            Conflict => matches!(got, Ok(Some(SaveOutcome::Conflict))),
            Deleted => matches!(got, Ok(None)),
            Corrupt => matches!(
                store_error,
                Some(StoreError::Corrupt { detail, .. }) if detail.contains(&status.to_string())
            ),
            Misconfigured => matches!(store_error, Some(StoreError::Misconfigured(_))),
            NotApplied => matches!(
                store_error,
                Some(StoreError::Unavailable {
                    maybe_applied: false,
                    ..
                })
            ),
        };
        assert!(as_expected, "{method} answered {status} {code}: {got:?}");
    }
    proxy.clear_faults();
    let untouched = load(direct, &existing).await.unwrap();
    assert_eq!(
        (untouched.checkpoint, untouched.etag),
        (loaded.checkpoint, loaded.etag)
    );
    assert!(load(direct, &absent).await.is_none());
    // Without faults, the same writes go through.
    assert!(insert().await.unwrap().is_saved());
    assert!(merge().await.unwrap().is_saved());
    assert_eq!(
        load(direct, &existing).await.unwrap().checkpoint,
        checkpoint(2)
    );
    delete().await.unwrap();
    assert!(load(direct, &existing).await.is_none());
}

#[tokio::test]
async fn a_row_write_whose_answer_is_lost_is_maybe_applied() {
    let stores = setup().await;
    let (direct, proxied, proxy) = (&stores.direct, &stores.proxied, &stores.counted.tables);
    let s = stream("lost");
    // Every write of a row reaches storage, which applies it, and then the connection drops
    // before its answer (as a single-entity request, or as an entity group transaction).
    let lose_answers = |times: Option<usize>| {
        proxy.clear_faults();
        for path in [TABLE, "$batch"] {
            proxy.inject(Fault {
                remaining: times,
                ..Fault::connection_lost(path)
            });
        }
    };
    let maybe_applied = |e: &StoreError| {
        matches!(
            e,
            StoreError::Unavailable {
                maybe_applied: true,
                ..
            }
        )
    };
    lose_answers(None);

    let first = proxied
        .save(MODEL, &s, &checkpoint(1), &SaveCondition::MustNotExist)
        .await;
    assert_store_error(first, maybe_applied);
    let saved = load(direct, &s).await.expect("the insert was applied");
    assert_eq!(saved.checkpoint, checkpoint(1));

    let second = proxied
        .save(
            MODEL,
            &s,
            &checkpoint(2),
            &SaveCondition::after_load(Some(&saved)),
        )
        .await;
    assert_store_error(second, maybe_applied);
    let saved = load(direct, &s).await.unwrap();
    assert_eq!(saved.checkpoint, checkpoint(2), "the merge was applied");

    // Only the first answer is lost: the transport's retry finds the row its first attempt
    // wrote, with another ETag, and reports a conflict, as for any other writer's save (the
    // caller reloads the row and finds its own state).
    lose_answers(Some(1));
    let retried = proxied
        .save(
            MODEL,
            &s,
            &checkpoint(3),
            &SaveCondition::after_load(Some(&saved)),
        )
        .await;
    assert_eq!(retried.unwrap(), SaveOutcome::Conflict);
    assert_eq!(load(direct, &s).await.unwrap().checkpoint, checkpoint(3));

    lose_answers(None);
    assert_store_error(proxied.delete(MODEL, &s).await, maybe_applied);
    assert!(load(direct, &s).await.is_none(), "the delete was applied");
}

/// The table deleted under a store that created it: a save finds no table, which is a
/// misconfiguration (as a load says), not a conflict to retry; a delete finds no row, which is
/// as good as deleted.
#[tokio::test]
async fn a_table_deleted_under_the_store_fails_saves_but_not_deletes() {
    let stores = setup().await;
    let direct = &stores.direct;
    let s = stream("gone");
    direct
        .save(MODEL, &s, &checkpoint(1), &SaveCondition::MustNotExist)
        .await
        .unwrap();
    let loaded = load(direct, &s).await.unwrap();
    let account =
        StorageAccount::from_connection_string(&stores.azurite.connection_string()).unwrap();
    let tables = account.table_service_client().unwrap();
    tables.table_client(TABLE).delete().await.unwrap();

    let misconfigured = |e: &StoreError| matches!(e, StoreError::Misconfigured(_));
    assert_store_error(direct.load(MODEL, &s).await, misconfigured);
    let insert = direct
        .save(
            MODEL,
            &stream("new"),
            &checkpoint(1),
            &SaveCondition::MustNotExist,
        )
        .await;
    assert_store_error(insert, misconfigured);
    let merge = direct
        .save(
            MODEL,
            &s,
            &checkpoint(2),
            &SaveCondition::after_load(Some(&loaded)),
        )
        .await;
    assert_store_error(merge, misconfigured);
    direct.delete(MODEL, &s).await.unwrap();
}
