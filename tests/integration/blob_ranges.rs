//! Append Blob reads in bounded ranges, against a real Azurite behind a counting proxy: a
//! stream of several segments, each longer than one range, with records of very different
//! sizes (so records straddle range boundaries), reads back whole and byte for byte; no GET
//! answers more than [`MAX_READ_RANGE_BYTES`]; a reader walking the stream in small chunks
//! (as `ReadStream` pages and replays do) reads each byte about once; a fold of a stream that
//! fits in one range reads it with one ranged GET besides the tail; ranges read by a cold
//! store start from the segments' metadata and read back the same events.

use crate::conformance;
use crate::support::seen::Seen;
use crate::support::CountedStorage;

use conformance::helpers::{event, stream};
use streamfold::projection::{AsOf, ProjectionRunner};
use streamfold::storage::blob::{BlobStore, MAX_READ_RANGE_BYTES};
use streamfold::storage::StorageAccount;
use streamfold::stream::{EventStore, ExpectedVersion, NewEvent, ReadRequest, RecordedEvent};
use streamfold_testbed::Azurite;

/// Appends per segment (the test knob): segments of about 10 MB.
const BLOCKS_PER_SEGMENT: u32 = 24;
/// Appends written: four segments, the last one partly filled.
const APPENDS: u64 = 84;

/// The data of event `sequence`: a JSON object padded to a size between 40 bytes and about
/// 1.1 MB, varying so that record ends fall anywhere in a range.
fn data_of(sequence: u64) -> String {
    let size = match sequence % 7 {
        0 => 1_100_000,
        1 | 4 => 40,
        2 => 333_333,
        3 => 4_096,
        5 => 77_777,
        _ => 600_001,
    } + (sequence * 7_919) % 1_000;
    format!(
        r#"{{"n":{sequence},"pad":"{}"}}"#,
        "z".repeat(size as usize)
    )
}

fn assert_same(read: &[RecordedEvent], written: &[NewEvent], first: u64) {
    assert_eq!(read.len(), written.len());
    for (i, (r, w)) in read.iter().zip(written).enumerate() {
        assert_eq!(r.sequence, first + i as u64);
        assert_eq!(r.event_id, w.event_id, "event {}", r.sequence);
        assert!(r.data.get() == w.data.get(), "data of event {}", r.sequence);
    }
}

#[tokio::test]
async fn long_segments_are_read_in_bounded_ranges_and_back_whole() {
    let azurite = Azurite::start().await.unwrap();
    let counted = CountedStorage::start(&azurite).await;
    let (proxy, connection) = (&counted.blobs, counted.connection.clone());
    let account = StorageAccount::from_connection_string(&connection).unwrap();
    let store = |name: &str| {
        BlobStore::new(account.clone())
            .with_container(name)
            .with_max_blocks_per_segment(BLOCKS_PER_SEGMENT)
    };
    let writer = store("ranges");
    let s = stream("long");
    let mut written: Vec<NewEvent> = Vec::new();
    for append in 0..APPENDS {
        // One or two events per append (one block each, under 4 MiB).
        let count = 1 + append % 2;
        let first = written.len() as u64 + 1;
        let batch: Vec<NewEvent> = (first..first + count)
            .map(|n| event("Sized", &data_of(n)))
            .collect();
        writer
            .append(&s, ExpectedVersion::Exact(first - 1), batch.clone())
            .await
            .unwrap();
        written.extend(batch);
    }
    let version = written.len() as u64;
    let stream_bytes: usize = written.iter().map(|e| e.data.get().len()).sum();
    assert!(stream_bytes > 3 * BLOCKS_PER_SEGMENT as usize * 300_000);

    // A cold reader reads everything back, byte for byte, in bounded GETs.
    proxy.reset();
    let reader = store("ranges");
    let all = reader.read(&s, ReadRequest::all()).await.unwrap();
    assert_eq!(all.version, version);
    assert_same(&all.events, &written, 1);
    let gets: Vec<u64> = proxy
        .entries()
        .iter()
        .filter(|e| e.method == "GET" && !e.query.as_deref().unwrap_or("").contains("comp=list"))
        .map(|e| e.response_bytes)
        .collect();
    assert!(gets.len() > 4, "several ranged GETs: {gets:?}");
    assert!(
        gets.iter().all(|&bytes| bytes <= MAX_READ_RANGE_BYTES),
        "no GET over {MAX_READ_RANGE_BYTES} bytes: {gets:?}"
    );

    // A reader walking the stream chunk by chunk reads each byte about once.
    proxy.reset();
    let walker = store("ranges");
    let mut walked = Vec::new();
    let mut from = 1;
    while from <= version {
        let to = (from + 6).min(version);
        let chunk = walker
            .read_known(&s, ReadRequest::range(from, Some(to)), version)
            .await
            .unwrap();
        assert_eq!(chunk.len() as u64, to - from + 1);
        walked.extend(chunk);
        from = to + 1;
    }
    assert_same(&walked, &written, 1);
    let received = proxy.bytes_received_from_upstream();
    assert!(
        received < 2 * stream_bytes as u64,
        "walking {stream_bytes} bytes of events took {received} bytes of answers"
    );

    // Ranges read by cold stores, from the metadata, anywhere in the stream.
    for (from, to) in [
        (2, 2),
        (30, 31),
        (
            BLOCKS_PER_SEGMENT as u64 * 3 / 2 - 1,
            BLOCKS_PER_SEGMENT as u64 * 3 / 2 + 2,
        ),
        (40, 100),
        (version - 3, version),
        (1, version),
    ] {
        let cold = store("ranges");
        let events = cold
            .read_known(&s, ReadRequest::range(from, Some(to)), version)
            .await
            .unwrap();
        let expected = &written[(from - 1) as usize..to as usize];
        assert_same(&events, expected, from);
        let slice = store("ranges")
            .read(&s, ReadRequest::range(from, Some(to)))
            .await
            .unwrap();
        assert_eq!(slice.version, version);
        assert_same(&slice.events, expected, from);
    }
}

#[tokio::test]
async fn a_reader_walking_a_stream_chunk_by_chunk_reads_ahead() {
    const EVENTS: u64 = 20_000;
    const PER_APPEND: u64 = 1_000;
    const CHUNK: u64 = 1_000;
    let azurite = Azurite::start().await.unwrap();
    let counted = CountedStorage::start(&azurite).await;
    let (proxy, connection) = (&counted.blobs, counted.connection.clone());
    let account = StorageAccount::from_connection_string(&connection).unwrap();
    let writer = BlobStore::new(account.clone()).with_container("ahead");
    let s = stream("walked");
    let mut written = Vec::new();
    for first in (1..=EVENTS).step_by(PER_APPEND as usize) {
        let batch: Vec<NewEvent> = (first..first + PER_APPEND)
            .map(|n| event("Added", &format!(r#"{{"n":{n},"note":"about a hundred bytes of data, as a deposit with a note would have"}}"#)))
            .collect();
        writer
            .append(&s, ExpectedVersion::Exact(first - 1), batch.clone())
            .await
            .unwrap();
        written.extend(batch);
    }

    // As a replay reads: chunk after chunk, from a store that has not read the stream yet.
    proxy.reset();
    let reader = BlobStore::new(account.clone()).with_container("ahead");
    let mut walked = Vec::new();
    for from in (1..=EVENTS).step_by(CHUNK as usize) {
        let to = from + CHUNK - 1;
        walked.extend(
            reader
                .read_known(&s, ReadRequest::range(from, Some(to)), EVENTS)
                .await
                .unwrap(),
        );
    }
    assert_same(&walked, &written, 1);
    let gets = proxy.entries().iter().filter(|e| e.method == "GET").count();
    // About 7 MB of records: a few ranges, not one request per chunk.
    assert!(
        gets <= 8,
        "{gets} GETs for {} chunks: {:?}",
        EVENTS / CHUNK,
        proxy
            .entries()
            .iter()
            .map(|e| (e.query.clone(), e.response_bytes))
            .collect::<Vec<_>>()
    );
    assert!(proxy.bytes_received_from_upstream() < 2 * reader_bytes(&written));

    // A read as of a time takes nothing kept ahead, and still reads the right events.
    let now = time::OffsetDateTime::now_utc();
    let as_of = reader
        .read_known(&s, ReadRequest::range(5, Some(9)).as_of(now), EVENTS)
        .await
        .unwrap();
    assert_same(&as_of, &written[4..9], 5);
}

#[tokio::test]
async fn a_fold_reads_a_stream_that_fits_in_one_range_with_one_ranged_get() {
    // About 2 MB of small records: ten of the fold's chunks, one range's worth.
    const EVENTS: u64 = 10_000;
    const PER_APPEND: u64 = 500;
    let azurite = Azurite::start().await.unwrap();
    let counted = CountedStorage::start(&azurite).await;
    let (proxy, connection) = (&counted.blobs, counted.connection.clone());
    let account = StorageAccount::from_connection_string(&connection).unwrap();
    let writer = BlobStore::new(account.clone()).with_container("folded");
    let s = stream("folded");
    for first in (1..=EVENTS).step_by(PER_APPEND as usize) {
        let batch: Vec<NewEvent> = (first..first + PER_APPEND)
            .map(|n| event("Deposited", &format!(r#"{{"n":{n},"amount":"1.00"}}"#)))
            .collect();
        writer
            .append(&s, ExpectedVersion::Exact(first - 1), batch)
            .await
            .unwrap();
    }
    // What a cold store reads for the whole stream at once: the listing, the tail and one
    // range of every record.
    proxy.reset();
    let all = BlobStore::new(account.clone())
        .with_container("folded")
        .read(&s, ReadRequest::all())
        .await
        .unwrap();
    assert_eq!(all.events.len() as u64, EVENTS);
    let whole_read = proxy.bytes_received_from_upstream();
    assert!(whole_read < MAX_READ_RANGE_BYTES * 4 / 5);

    // A cold instance's fold, chunk by chunk.
    proxy.reset();
    let reader = BlobStore::new(account.clone()).with_container("folded");
    let folded = ProjectionRunner::new(std::sync::Arc::new(reader))
        .run(&s, &Seen, AsOf::Latest)
        .await
        .unwrap();
    assert_eq!(folded.state, (1..=EVENTS).collect::<Vec<_>>());
    let gets: Vec<_> = proxy
        .entries()
        .iter()
        .filter(|e| e.method == "GET")
        .map(|e| (e.query.clone(), e.response_bytes))
        .collect();
    // The listing, the tail (from the last hint), and one range holding every event: a
    // chunk's range would fetch past what the chunk needs and drop it, and the chunk after
    // would fetch it again.
    assert_eq!(gets.len(), 3, "{gets:?}");
    assert!(
        proxy.bytes_received_from_upstream() < whole_read + whole_read / 10,
        "{} bytes read, {whole_read} by one read of the whole stream: {gets:?}",
        proxy.bytes_received_from_upstream()
    );
}

/// The bytes of the records of `events`, roughly (data plus the record's other fields).
fn reader_bytes(events: &[NewEvent]) -> u64 {
    events.iter().map(|e| e.data.get().len() as u64 + 250).sum()
}
