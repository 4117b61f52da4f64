//! The read-model store contract (`src/stream/read_model.rs`), written once and run against every
//! store (memory, Table storage — see the fixtures in `memory.rs` and `table.rs`): rows come
//! back as saved, every save is conditional and atomic (two writers that loaded the same row
//! never both save) and answers the row's new ETag, a deleted row is gone (its ETag with it), and listings page through one read model of one entity type in
//! instance-key order, each row once.
//!
//! What the Table store adds on its own (how a row is laid out in properties, its size limit,
//! rows it cannot read back) is tested in `src/storage/table/read_models.rs`.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::value::RawValue;
use streamfold::readmodel::{
    Checkpoint, FoldFailure, ReadModelStore, ReadModelStoreError, SaveCondition, SaveOutcome,
    StoredCheckpoint,
};
use streamfold::stream::{EntityType, StreamId, MAX_INSTANCE_KEY_BYTES};

/// A fresh, empty read-model store of one backend.
pub struct Fixture {
    /// The store the cases write through.
    pub store: Arc<dyn ReadModelStore>,
    /// Opens another view of the same storage, as another process would.
    pub reopen: Box<dyn Fn() -> Arc<dyn ReadModelStore> + Send + Sync>,
    /// Whatever must live as long as the store (an Azurite process): held, never read.
    #[allow(dead_code)]
    pub guard: Box<dyn std::any::Any + Send>,
}

/// Expands to one `#[tokio::test]` per case for the fixture made by `$make` (an async fn).
macro_rules! suite {
    ($make:path) => {
        $crate::cases!(readmodels, $make;
            saves_are_conditional,
            a_save_answers_the_etag_a_load_returns,
            concurrent_savers_of_one_row_exactly_one_wins,
            a_row_loads_back_as_saved,
            a_failed_row_keeps_its_failure_until_saved_over,
            rows_are_kept_per_model_and_stream,
            another_process_sees_rows_and_their_etags,
            a_deleted_row_is_gone_and_its_etag_spent,
            listing_pages_in_key_order_and_visits_every_row_once,
            rows_written_during_a_walk_after_its_position_are_seen,
            invalid_continuations_and_entity_types_are_refused,
        );
    };
}
pub(crate) use suite;

/// The streams the cases write rows for: `Bank / entity / instance`.
fn stream(entity: &str, instance: &str) -> StreamId {
    StreamId::new("Bank", entity, instance).unwrap()
}

/// A row at `sequence` whose state is the JSON text `state`.
fn row(sequence: u64, state: &str) -> Checkpoint {
    Checkpoint {
        projection: "m".into(),
        max_timestamp: None,
        state: RawValue::from_string(state.to_owned()).unwrap(),
        sequence,
        projection_version: 1,
        failure: None,
    }
}

/// A row at `sequence`.
fn checkpoint(sequence: u64) -> Checkpoint {
    row(sequence, &format!("{{\"n\":{sequence}}}"))
}

async fn save(
    store: &dyn ReadModelStore,
    model: &str,
    s: &StreamId,
    checkpoint: &Checkpoint,
    condition: &SaveCondition,
) -> SaveOutcome {
    store.save(model, s, checkpoint, condition).await.unwrap()
}

/// Loads the row, which must be there.
async fn load(store: &dyn ReadModelStore, model: &str, s: &StreamId) -> StoredCheckpoint {
    store
        .load(model, s)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("a row of {model} for {s}"))
}

/// Saves a row of `model` for each instance key of `Bank / entity`, in the order given.
async fn fill(store: &dyn ReadModelStore, model: &str, entity: &str, keys: &[&str]) {
    for (n, instance) in keys.iter().enumerate() {
        let outcome = save(
            store,
            model,
            &stream(entity, instance),
            &checkpoint(n as u64 + 1),
            &SaveCondition::MustNotExist,
        )
        .await;
        assert!(outcome.is_saved(), "{instance}");
    }
}

/// Follows continuations with pages of `page_size`: the instance keys of each page.
async fn pages(store: &dyn ReadModelStore, model: &str, page_size: usize) -> Vec<Vec<String>> {
    let mut pages = Vec::new();
    let mut continuation: Option<String> = None;
    loop {
        let page = store
            .list(
                model,
                &EntityType::from_static("Bank", "Account"),
                continuation.as_deref(),
                page_size,
            )
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

/// A save answers the row's new ETag: the one a load returns next, on which the next save can
/// be conditioned without a load (what the projector does with the rows it keeps).
pub async fn a_save_answers_the_etag_a_load_returns(f: &Fixture) {
    let store = &*f.store;
    let s = stream("Account", "tagged");
    let mut condition = SaveCondition::MustNotExist;
    for sequence in 1..=3 {
        let SaveOutcome::Saved { etag: Some(etag) } =
            save(store, "m", &s, &checkpoint(sequence), &condition).await
        else {
            panic!("save {sequence} answered no ETag");
        };
        let loaded = load(store, "m", &s).await;
        assert_eq!(loaded.etag, etag, "save {sequence}");
        assert_eq!(loaded.checkpoint, checkpoint(sequence));
        condition = SaveCondition::IfMatch(etag);
    }
    // Another process saves over it: the ETag kept from the last save is spent.
    let other = (f.reopen)();
    let now = load(&*other, "m", &s).await;
    assert!(save(
        &*other,
        "m",
        &s,
        &checkpoint(4),
        &SaveCondition::after_load(Some(&now))
    )
    .await
    .is_saved());
    assert_eq!(
        save(store, "m", &s, &checkpoint(5), &condition).await,
        SaveOutcome::Conflict
    );
    assert_eq!(load(store, "m", &s).await.checkpoint, checkpoint(4));
}

pub async fn saves_are_conditional(f: &Fixture) {
    let store = &*f.store;
    let s = stream("Account", "1");
    // An ETag is of one row: another row's is never this one's.
    let elsewhere = stream("Account", "elsewhere");
    save(
        store,
        "m",
        &elsewhere,
        &checkpoint(1),
        &SaveCondition::MustNotExist,
    )
    .await;
    let foreign = SaveCondition::after_load(Some(&load(store, "m", &elsewhere).await));
    assert!(store.load("m", &s).await.unwrap().is_none());
    // No row: only "must not exist" creates one.
    assert_eq!(
        save(store, "m", &s, &checkpoint(1), &foreign).await,
        SaveOutcome::Conflict
    );
    assert!(store.load("m", &s).await.unwrap().is_none());
    let first = save(store, "m", &s, &checkpoint(1), &SaveCondition::MustNotExist).await;
    assert!(first.is_saved());
    assert_eq!(
        save(store, "m", &s, &checkpoint(9), &SaveCondition::MustNotExist).await,
        SaveOutcome::Conflict
    );
    let loaded = load(store, "m", &s).await;
    assert_eq!(loaded.checkpoint, checkpoint(1));
    assert_eq!(
        save(store, "m", &s, &checkpoint(2), &foreign).await,
        SaveOutcome::Conflict
    );
    assert_eq!(load(store, "m", &s).await.checkpoint, checkpoint(1));
    let fresh = SaveCondition::after_load(Some(&loaded));
    assert!(save(store, "m", &s, &checkpoint(2), &fresh)
        .await
        .is_saved());
    // The old ETag is spent; the new one differs from it.
    assert_eq!(
        save(store, "m", &s, &checkpoint(3), &fresh).await,
        SaveOutcome::Conflict
    );
    let now = load(store, "m", &s).await;
    assert_eq!(now.checkpoint, checkpoint(2));
    assert_ne!(now.etag, loaded.etag);
    // Saving the same row again still changes the ETag.
    let same = SaveCondition::after_load(Some(&now));
    assert!(save(store, "m", &s, &checkpoint(2), &same).await.is_saved());
    assert_ne!(load(store, "m", &s).await.etag, now.etag);

    let page = store
        .list("m", &EntityType::from_static("Bank", "Account"), None, 10)
        .await
        .unwrap();
    let rows: Vec<(&str, u64)> = page
        .rows
        .iter()
        .map(|r| (r.instance.as_str(), r.checkpoint.sequence))
        .collect();
    assert_eq!(rows, [("1", 2), ("elsewhere", 1)]);
    assert_eq!(page.continuation, None);
    let other = store
        .list("m", &EntityType::from_static("Bank", "Other"), None, 10)
        .await
        .unwrap();
    assert!(other.rows.is_empty() && other.continuation.is_none());
}

pub async fn concurrent_savers_of_one_row_exactly_one_wins(f: &Fixture) {
    const WRITERS: u64 = 6;
    let s = stream("Account", "contended");
    // Each writer through its own view, as projectors in several processes.
    let race = |condition: SaveCondition| {
        futures::future::join_all((1..=WRITERS).map(|n| {
            let store = (f.reopen)();
            let (s, condition) = (s.clone(), condition.clone());
            async move {
                let outcome = save(&*store, "m", &s, &checkpoint(n), &condition).await;
                (n, outcome)
            }
        }))
    };
    // Creating the row.
    let created = race(SaveCondition::MustNotExist).await;
    let winners: Vec<u64> = created
        .iter()
        .filter(|(_, o)| o.is_saved())
        .map(|(n, _)| *n)
        .collect();
    assert_eq!(winners.len(), 1, "{created:?}");
    let loaded = load(&*f.store, "m", &s).await;
    assert_eq!(loaded.checkpoint, checkpoint(winners[0]));

    // Replacing the row all had loaded.
    let replaced = race(SaveCondition::after_load(Some(&loaded))).await;
    let winners: Vec<u64> = replaced
        .iter()
        .filter(|(_, o)| o.is_saved())
        .map(|(n, _)| *n)
        .collect();
    assert_eq!(winners.len(), 1, "{replaced:?}");
    assert_eq!(
        load(&*f.store, "m", &s).await.checkpoint,
        checkpoint(winners[0])
    );
}

pub async fn a_row_loads_back_as_saved(f: &Fixture) {
    let store = &*f.store;
    let s = stream("Account", "exact");
    let states = [
        // Whitespace, key order, escapes and numbers a parser would rewrite.
        r#" { "b" : 1.50, "a":[ 1e2 ,"\u00fc\n"], "z": null } "#.to_owned(),
        r#""ü ☃ 𝄞 \"quoted\"""#.to_owned(),
        // Larger than one Table property (64 KiB): stored in parts, joined back exactly, and
        // then a smaller state over it.
        format!(r#"{{"s":"{}"}}"#, "ü".repeat(100_000)),
        "[]".to_owned(),
        "null".to_owned(),
    ];
    let mut condition = SaveCondition::MustNotExist;
    for (n, state) in states.iter().enumerate() {
        let saved = Checkpoint {
            projection_version: 7 + n as u32,
            ..row(1u64 << (30 + n), state)
        };
        assert!(save(store, "m", &s, &saved, &condition).await.is_saved());
        let loaded = load(store, "m", &s).await;
        assert!(
            loaded.checkpoint.state.get() == saved.state.get(),
            "state {n} comes back byte for byte"
        );
        assert_eq!(loaded.checkpoint, saved);
        condition = SaveCondition::after_load(Some(&loaded));
    }
}

pub async fn a_failed_row_keeps_its_failure_until_saved_over(f: &Fixture) {
    let store = &*f.store;
    let s = stream("Account", "failed");
    let failed = Checkpoint {
        failure: Some(FoldFailure {
            sequence: 7,
            reason: "event 7 (MoneyDeposited): ü \"no\"".into(),
        }),
        ..row(7, "{}")
    };
    save(store, "m", &s, &failed, &SaveCondition::MustNotExist).await;
    let loaded = load(store, "m", &s).await;
    assert_eq!(loaded.checkpoint, failed);
    let listed = store
        .list("m", &EntityType::from_static("Bank", "Account"), None, 10)
        .await
        .unwrap();
    assert_eq!(listed.rows.len(), 1);
    assert_eq!(listed.rows[0].checkpoint, failed);

    // Another projection version saves over it: the failure is gone.
    let fixed = Checkpoint {
        projection_version: 2,
        ..checkpoint(9)
    };
    let condition = SaveCondition::after_load(Some(&loaded));
    assert!(save(store, "m", &s, &fixed, &condition).await.is_saved());
    assert_eq!(load(store, "m", &s).await.checkpoint, fixed);
}

pub async fn rows_are_kept_per_model_and_stream(f: &Fixture) {
    let store = &*f.store;
    let long = "k".repeat(MAX_INSTANCE_KEY_BYTES);
    let streams = [
        stream("Account", "O'Brien"),
        stream("Account", "a b"),
        stream("Account", "A B"),
        stream("Account", "ü"),
        stream("Account", "%41"),
        stream("Account", "A"),
        stream("Account", &long),
        stream("Card", "a b"),
        StreamId::new("Shop", "Account", "a b").unwrap(),
    ];
    let models = ["m", "M", "other"];
    let mut saved = Vec::new();
    for (i, s) in streams.iter().enumerate() {
        for (j, model) in models.iter().enumerate() {
            let one = row((i * 10 + j) as u64 + 1, &format!("[{i},{j}]"));
            assert!(
                save(store, model, s, &one, &SaveCondition::MustNotExist)
                    .await
                    .is_saved(),
                "{model} {s}"
            );
            saved.push((*model, s.clone(), one));
        }
    }
    for (model, s, one) in &saved {
        // A store answers with the row of the read model it was asked for.
        assert_eq!(
            load(store, model, s).await.checkpoint,
            one.as_row_of(model),
            "{model} {s}"
        );
    }
    // A listing holds its own model's rows of its own entity type only.
    let page = store
        .list("m", &EntityType::from_static("Bank", "Account"), None, 100)
        .await
        .unwrap();
    let listed: BTreeSet<String> = page.rows.iter().map(|r| r.instance.clone()).collect();
    let expected: BTreeSet<String> = streams[..7]
        .iter()
        .map(|s| s.instance().to_owned())
        .collect();
    assert_eq!(listed, expected);
}

pub async fn another_process_sees_rows_and_their_etags(f: &Fixture) {
    let s = stream("Account", "shared");
    save(
        &*f.store,
        "m",
        &s,
        &checkpoint(1),
        &SaveCondition::MustNotExist,
    )
    .await;
    let other = (f.reopen)();
    let there = load(&*other, "m", &s).await;
    assert_eq!(there.checkpoint, checkpoint(1));
    let here = load(&*f.store, "m", &s).await;
    assert_eq!(here.etag, there.etag, "one row, one ETag, whoever reads it");
    // The other process saves first; this one's save on the same load is refused.
    let condition = SaveCondition::after_load(Some(&there));
    assert!(save(&*other, "m", &s, &checkpoint(2), &condition)
        .await
        .is_saved());
    assert_eq!(
        save(&*f.store, "m", &s, &checkpoint(3), &condition).await,
        SaveOutcome::Conflict
    );
    let page = f
        .store
        .list("m", &EntityType::from_static("Bank", "Account"), None, 10)
        .await
        .unwrap();
    assert_eq!(page.rows.len(), 1);
    assert_eq!(page.rows[0].checkpoint, checkpoint(2));
}

pub async fn a_deleted_row_is_gone_and_its_etag_spent(f: &Fixture) {
    let store = &*f.store;
    let kept = stream("Account", "kept");
    save(
        store,
        "m",
        &kept,
        &checkpoint(1),
        &SaveCondition::MustNotExist,
    )
    .await;
    // Keys a row's address must escape.
    for instance in ["erased", "O'Brien", "a b", "%41", "ü"] {
        let s = stream("Account", instance);
        save(store, "m", &s, &checkpoint(1), &SaveCondition::MustNotExist).await;
        let loaded = load(store, "m", &s).await;
        store.delete("m", &s).await.unwrap();
        assert!(store.load("m", &s).await.unwrap().is_none(), "{instance}");
        // Deleting a row that is not there is as good as deleting it.
        store.delete("m", &s).await.unwrap();
        // A save conditioned on the deleted row's ETag finds no row: nothing is written.
        let stale = SaveCondition::after_load(Some(&loaded));
        assert_eq!(
            save(store, "m", &s, &checkpoint(2), &stale).await,
            SaveOutcome::Conflict,
            "{instance}"
        );
        assert!(store.load("m", &s).await.unwrap().is_none(), "{instance}");
        // The row can be created again, and saved over with its new ETag.
        assert!(
            save(store, "m", &s, &checkpoint(3), &SaveCondition::MustNotExist)
                .await
                .is_saved(),
            "{instance}"
        );
        let again = SaveCondition::after_load(Some(&load(store, "m", &s).await));
        assert!(
            save(store, "m", &s, &checkpoint(4), &again)
                .await
                .is_saved(),
            "{instance}"
        );
        assert_eq!(load(store, "m", &s).await.checkpoint, checkpoint(4));
    }
    store
        .delete("m", &stream("Account", "never"))
        .await
        .unwrap();
    // Only the deleted rows were ever gone.
    assert_eq!(load(store, "m", &kept).await.checkpoint, checkpoint(1));
}

pub async fn listing_pages_in_key_order_and_visits_every_row_once(f: &Fixture) {
    let store = &*f.store;
    // Saved out of order; keys that sort differently as text than as numbers, and two that
    // sort differently by UTF-16 code units (the contract's order) than by UTF-8 bytes.
    let keys = ["7", "10", "2", "O'Brien", "a b", "1", "ü", "\u{FF5E}", "𝄞"];
    fill(store, "m", "Account", &keys).await;
    // Rows of another model and another entity type are never listed.
    fill(store, "other", "Account", &["0", "5"]).await;
    fill(store, "m", "Card", &["0", "5"]).await;
    let mut sorted: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
    sorted.sort_by(|a, b| a.encode_utf16().cmp(b.encode_utf16()));
    assert_eq!(sorted[7..], ["𝄞", "\u{FF5E}"]);

    let four = pages(store, "m", 4).await;
    assert_eq!(
        four.iter().map(Vec::len).collect::<Vec<_>>(),
        [4, 4, 1],
        "{four:?}"
    );
    assert_eq!(four.concat(), sorted);

    // A page size that divides the rows exactly: the last full page says the end.
    let nine = pages(store, "m", 9).await;
    assert_eq!(nine, [sorted.clone()]);
    // A page size of 0 reads pages of 1.
    let ones = pages(store, "m", 0).await;
    assert_eq!(ones.len(), sorted.len());
    assert_eq!(ones.concat(), sorted);

    // A continuation need not be a stored key: the rows after it.
    let after = store
        .list(
            "m",
            &EntityType::from_static("Bank", "Account"),
            Some("3"),
            100,
        )
        .await
        .unwrap();
    let expected: Vec<&String> = sorted.iter().filter(|k| k.as_str() > "3").collect();
    assert_eq!(expected.len(), 6, "\"3\" sorts the same in either order");
    let got: Vec<&String> = after.rows.iter().map(|r| &r.instance).collect();
    assert_eq!(got, expected);
    assert_eq!(after.continuation, None);
    // Between the two keys whose order depends on how keys are compared.
    let between = store
        .list(
            "m",
            &EntityType::from_static("Bank", "Account"),
            Some("𝄞"),
            100,
        )
        .await
        .unwrap();
    let got: Vec<&str> = between.rows.iter().map(|r| r.instance.as_str()).collect();
    assert_eq!(got, ["\u{FF5E}"]);
    // Past the last key: an empty last page.
    let past = store
        .list(
            "m",
            &EntityType::from_static("Bank", "Account"),
            Some("\u{FF5E}"),
            100,
        )
        .await
        .unwrap();
    assert!(past.rows.is_empty() && past.continuation.is_none());
}

pub async fn rows_written_during_a_walk_after_its_position_are_seen(f: &Fixture) {
    let store = &*f.store;
    fill(store, "m", "Account", &["b", "d", "f"]).await;
    let first = store
        .list("m", &EntityType::from_static("Bank", "Account"), None, 2)
        .await
        .unwrap();
    assert_eq!(first.continuation.as_deref(), Some("d"));
    // Written behind the walk (not seen) and ahead of it (seen).
    fill(store, "m", "Account", &["a", "e"]).await;
    let second = store
        .list(
            "m",
            &EntityType::from_static("Bank", "Account"),
            first.continuation.as_deref(),
            2,
        )
        .await
        .unwrap();
    let keys: Vec<&str> = second.rows.iter().map(|r| r.instance.as_str()).collect();
    assert_eq!(keys, ["e", "f"]);
    assert_eq!(second.continuation, None);
}

pub async fn invalid_continuations_and_entity_types_are_refused(f: &Fixture) {
    let store = &*f.store;
    fill(store, "m", "Account", &["1"]).await;
    for bad in ["a/b", "x#", "\u{1}"] {
        let error = store
            .list(
                "m",
                &EntityType::from_static("Bank", "Account"),
                Some(bad),
                10,
            )
            .await
            .unwrap_err();
        assert!(
            matches!(&error, ReadModelStoreError::InvalidKey(key) if key.what == "instance key"),
            "{bad:?}: {error}"
        );
    }
    let long = "k".repeat(MAX_INSTANCE_KEY_BYTES + 1);
    assert!(matches!(
        store
            .list(
                "m",
                &EntityType::from_static("Bank", "Account"),
                Some(&long),
                10
            )
            .await,
        Err(ReadModelStoreError::InvalidKey(_))
    ));
    // A bad entity-type name is refused before any store is asked.
    assert!(EntityType::new("Bank", "Acc-ount").is_err());
}
