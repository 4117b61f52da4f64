//! The body of an entity group transaction (`POST {table service}/$batch`), written by us
//! instead of `azure_data_tables`' `TransactionBuilder`: one `multipart/mixed` batch holding one
//! changeset, one `application/http` part per operation.
//!
//! Guarantees:
//! - every operation is framed as the crate frames it (same methods, request lines, headers,
//!   `\n` line ends) plus `Prefer: return-no-content` on inserts, so storage does the same work
//!   and stores the same rows: entity bodies are `serde_json`'s writing of the same
//!   [`Properties`] the crate would serialize (the `@odata.type` annotations are properties), or
//!   an append's row written from its values ([`AppendRow::write_json`], the same JSON up to
//!   the order of the properties, an insert's keys first), and `If-Match` is sent exactly where
//!   the [`Operation`] carries one (merge, replace, delete; an upsert has none);
//! - entity URLs are the table URL (computed once per table, as the crate's URL builder
//!   normalizes the endpoint) followed by the key predicate, percent-encoded exactly as the `url`
//!   crate encodes a pushed path segment (tabs and line breaks dropped; controls, space,
//!   `"#<>?\`{}`, `/`, `%`, `\` and non-ASCII percent-encoded), without parsing a URL per
//!   operation;
//! - the boundaries are fresh random UUIDs per transaction, so no entity text can contain them.

use std::fmt::Write as _;

use percent_encoding::{AsciiSet, CONTROLS};
use uuid::Uuid;

use super::append_rows::AppendRow;
use super::entity::Properties;
use super::operation::Operation;
use azure_data_tables::prelude::IfMatchCondition;

/// What the `url` crate percent-encodes in a path segment of an `http(s)` URL (its
/// `SPECIAL_PATH_SEGMENT` set: the path set plus `/`, `%` and `\`).
const PATH_SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'<')
    .add(b'>')
    .add(b'`')
    .add(b'#')
    .add(b'?')
    .add(b'{')
    .add(b'}')
    .add(b'/')
    .add(b'%')
    .add(b'\\');

/// Headers of each operation's part of the changeset.
const PART_HEADERS: &str = "Content-Type: application/http\nContent-Transfer-Encoding: binary\n\n";
/// The `Accept` header the crate sends with inserts, merges and replaces.
const ACCEPT_FULL_METADATA: &str = "Accept: application/json;odata=fullmetadata\n";
/// The `Accept` header the crate sends with deletes.
const ACCEPT_MINIMAL_METADATA: &str = "Accept: application/json;odata=minimalmetadata\n";
/// The entity body's type.
const CONTENT_TYPE_JSON: &str = "Content-Type: application/json\n";
/// Asks storage not to echo an inserted entity in the answer (the answer is `204`).
pub const PREFER_NO_CONTENT: &str = "Prefer: return-no-content";
/// A safe bound on the framing of one operation besides its URL and entity (boundary line,
/// part headers, request line, `Accept`, `Content-Type`, `Prefer`, `If-Match` with an ETag):
/// what an append's size check counts per operation, and what sizes the body buffer.
pub const OPERATION_FRAMING_BYTES: usize = 512;

/// The URLs of one table's transactions, computed once per table.
#[derive(Debug, Clone)]
pub struct TableUrls {
    /// `{endpoint}/{table}`, as the crate's URL builder writes it.
    table: String,
    /// `{endpoint}/$batch`, where a transaction is posted.
    batch: azure_core::Url,
}

impl TableUrls {
    /// The URLs of `table_name` (ASCII letters and digits) at the table service `endpoint`.
    pub fn new(endpoint: &str, table_name: &str) -> Result<Self, String> {
        let parsed = azure_core::Url::parse(endpoint.trim_end_matches('/'))
            .map_err(|e| format!("the table endpoint is not a URL: {e}"))?;
        let with_last = |segment: &str| -> Result<azure_core::Url, String> {
            let mut url = parsed.clone();
            url.path_segments_mut()
                .map_err(|()| "the table endpoint cannot have a path".to_owned())?
                .pop_if_empty()
                .push(segment);
            Ok(url)
        };
        Ok(Self {
            table: with_last(table_name)?.as_str().to_owned(),
            batch: with_last("$batch")?,
        })
    }

    /// Where a transaction is posted.
    pub fn batch(&self) -> &azure_core::Url {
        &self.batch
    }

    /// The table's URL (the request line of an insert).
    pub fn table(&self) -> &str {
        &self.table
    }

    /// The URL of the entity (`partition_key`, `row_key`) (their `'` not yet doubled), as the
    /// crate's entity client builds it.
    pub fn entity(&self, partition_key: &str, row_key: &str) -> String {
        let mut url = self.entity_prefix(partition_key);
        push_row_key_end(&mut url, row_key);
        url
    }

    /// `{table}(PartitionKey='{partition_key}',RowKey='`, encoded: the part of an entity URL
    /// that every entity of a partition shares.
    fn entity_prefix(&self, partition_key: &str) -> String {
        let mut prefix = String::with_capacity(self.table.len() + partition_key.len() + 32);
        prefix.push_str(&self.table);
        push_segment(&mut prefix, "(PartitionKey='");
        push_key(&mut prefix, partition_key);
        push_segment(&mut prefix, "',RowKey='");
        prefix
    }
}

/// One transaction's body and the `Content-Type` that names its boundary.
pub struct BatchBody {
    pub content_type: String,
    pub body: Vec<u8>,
}

/// Writes the transaction of `operations` in partition `partition_key` (its `'` not yet
/// doubled). `size_hint` is the expected body length.
pub fn encode(
    urls: &TableUrls,
    partition_key: &str,
    operations: &[Operation],
    size_hint: usize,
) -> Result<BatchBody, serde_json::Error> {
    encode_with(
        urls,
        partition_key,
        operations,
        size_hint,
        Uuid::new_v4(),
        Uuid::new_v4(),
    )
}

/// [`encode`] with the given boundaries.
pub(super) fn encode_with(
    urls: &TableUrls,
    partition_key: &str,
    operations: &[Operation],
    size_hint: usize,
    batch: Uuid,
    changeset: Uuid,
) -> Result<BatchBody, serde_json::Error> {
    let batch = batch.hyphenated();
    let changeset = changeset.hyphenated();
    let entity_prefix = urls.entity_prefix(partition_key);

    let mut out = String::with_capacity(size_hint);
    // Writing to a `String` cannot fail.
    let _ = write!(
        out,
        "--batch_{batch}\nContent-Type: multipart/mixed; boundary=changeset_{changeset}\n\n"
    );
    let mut body = out.into_bytes();
    // Each operation's head is written here, then copied to the body: one buffer for them all.
    let mut head = String::with_capacity(OPERATION_FRAMING_BYTES + entity_prefix.len());
    for operation in operations {
        head.clear();
        let _ = write!(head, "--changeset_{changeset}\n{PART_HEADERS}");
        let entity = match operation {
            Operation::Insert(entity) => {
                request_line(&mut head, "POST", &urls.table, None);
                head.push_str(PREFER_NO_CONTENT);
                head.push('\n');
                Some((Entity::Map(entity), None))
            }
            Operation::InsertRow { row_key, row } => {
                request_line(&mut head, "POST", &urls.table, None);
                head.push_str(PREFER_NO_CONTENT);
                head.push('\n');
                let keys = Some((partition_key, row_key.as_str()));
                Some((Entity::Row { row, keys }, None))
            }
            Operation::Merge {
                row_key,
                properties,
                if_match,
            } => {
                request_line(&mut head, "MERGE", &entity_prefix, Some(row_key));
                Some((Entity::Map(properties), Some(if_match)))
            }
            Operation::MergeRow {
                row_key,
                row,
                if_match,
            } => {
                request_line(&mut head, "MERGE", &entity_prefix, Some(row_key));
                Some((Entity::Row { row, keys: None }, Some(if_match)))
            }
            Operation::Upsert {
                row_key,
                properties,
            } => {
                request_line(&mut head, "MERGE", &entity_prefix, Some(row_key));
                Some((Entity::Map(properties), None))
            }
            Operation::Replace {
                row_key,
                properties,
                if_match,
            } => {
                request_line(&mut head, "PUT", &entity_prefix, Some(row_key));
                Some((Entity::Map(properties), Some(if_match)))
            }
            Operation::Delete { row_key, if_match } => {
                request_line(&mut head, "DELETE", &entity_prefix, Some(row_key));
                head.push_str(ACCEPT_MINIMAL_METADATA);
                push_if_match(&mut head, if_match);
                None
            }
        };
        match entity {
            Some((entity, if_match)) => {
                head.push_str(ACCEPT_FULL_METADATA);
                head.push_str(CONTENT_TYPE_JSON);
                if let Some(if_match) = if_match {
                    push_if_match(&mut head, if_match);
                }
                head.push('\n');
                body.extend_from_slice(head.as_bytes());
                match entity {
                    Entity::Map(properties) => write_entity(&mut body, properties)?,
                    Entity::Row { row, keys } => row.write_json(&mut body, keys)?,
                }
                body.push(b'\n');
            }
            None => {
                head.push('\n');
                body.extend_from_slice(head.as_bytes());
            }
        }
    }
    head.clear();
    let _ = write!(head, "--changeset_{changeset}--\n--batch_{batch}--\n");
    body.extend_from_slice(head.as_bytes());
    Ok(BatchBody {
        content_type: format!("multipart/mixed; boundary=batch_{batch}"),
        body,
    })
}

/// The entity body of one operation.
enum Entity<'o> {
    /// A property map (an insert's holds its keys).
    Map(&'o Properties),
    /// An append's row, after its keys `(PartitionKey, RowKey)` for an insert.
    Row {
        row: &'o AppendRow<'o>,
        keys: Option<(&'o str, &'o str)>,
    },
}

/// `METHOD url HTTP/1.1\n`, where the URL is `prefix` followed by the row key predicate's end
/// for an entity operation.
fn request_line(out: &mut String, method: &str, prefix: &str, row_key: Option<&String>) {
    out.push_str(method);
    out.push(' ');
    out.push_str(prefix);
    if let Some(row_key) = row_key {
        push_row_key_end(out, row_key);
    }
    out.push_str(" HTTP/1.1\n");
}

/// The end of an entity URL after its prefix: the row key, then `')`.
fn push_row_key_end(out: &mut String, row_key: &str) {
    push_key(out, row_key);
    push_segment(out, "')");
}

fn push_if_match(out: &mut String, if_match: &IfMatchCondition) {
    out.push_str("If-Match: ");
    match if_match {
        IfMatchCondition::Any => out.push('*'),
        IfMatchCondition::Etag(etag) => {
            let _ = write!(out, "{etag}");
        }
    }
    out.push('\n');
}

/// A key value inside a key predicate: `'` doubled, then encoded as a path segment.
fn push_key(out: &mut String, key: &str) {
    let mut rest = key;
    while let Some(at) = rest.find('\'') {
        push_segment(out, &rest[..at]);
        out.push_str("''");
        rest = &rest[at + 1..];
    }
    push_segment(out, rest);
}

/// `text` as the `url` crate writes it into a pushed path segment.
fn push_segment(out: &mut String, text: &str) {
    let mut rest = text;
    while let Some(at) = rest.find(['\t', '\n', '\r']) {
        out.extend(percent_encoding::utf8_percent_encode(
            &rest[..at],
            PATH_SEGMENT,
        ));
        rest = &rest[at + 1..];
    }
    out.extend(percent_encoding::utf8_percent_encode(rest, PATH_SEGMENT));
}

/// The entity's JSON, as `azure_core::Request::set_json` writes it.
fn write_entity(out: &mut Vec<u8>, properties: &Properties) -> Result<(), serde_json::Error> {
    serde_json::to_writer(out, properties)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::table::entity;
    use azure_core::Etag;
    use proptest::prelude::*;

    fn urls() -> TableUrls {
        TableUrls::new("http://127.0.0.1:10002/devstoreaccount1", "streamfold").unwrap()
    }

    /// The entity URL as `azure_data_tables` builds it (`EntityClient::url`).
    fn crate_entity_url(endpoint: &str, table: &str, pk: &str, rk: &str) -> String {
        // `StorageAccount::location` hands the crate the endpoint without a trailing `/`.
        let mut url = azure_core::Url::parse(endpoint.trim_end_matches('/')).unwrap();
        url.path_segments_mut().unwrap().push("Tables");
        url.path_segments_mut().unwrap().pop().push(&format!(
            "{table}(PartitionKey='{}',RowKey='{}')",
            pk.replace('\'', "''"),
            rk.replace('\'', "''")
        ));
        url.to_string()
    }

    /// The entity URL of a transaction's request line, which must be [`TableUrls::entity`]'s.
    fn our_entity_url(urls: &TableUrls, pk: &str, rk: &str) -> String {
        let mut line = String::new();
        request_line(
            &mut line,
            "X",
            &urls.entity_prefix(pk),
            Some(&rk.to_owned()),
        );
        let url = line
            .trim_start_matches("X ")
            .trim_end_matches(" HTTP/1.1\n")
            .to_owned();
        assert_eq!(url, urls.entity(pk, rk));
        url
    }

    #[test]
    fn urls_are_the_crates() {
        for endpoint in [
            "http://127.0.0.1:10002/devstoreaccount1",
            "http://127.0.0.1:10002/devstoreaccount1/",
            "https://acct.table.core.windows.net/",
            "https://acct.table.core.windows.net",
            "https://ACCT.Table.core.windows.net:443",
        ] {
            let urls = TableUrls::new(endpoint, "streamfold").unwrap();
            for (pk, rk) in [
                ("Bank|Account|O'Brien", "E-0000000001"),
                ("a b%c/d\\e?f#g{h}`\"<>", "ü€𝄞'"),
                ("tab\there\nnl\rcr\u{1}\u{7f}", "ID-x"),
            ] {
                assert_eq!(
                    our_entity_url(&urls, pk, rk),
                    crate_entity_url(endpoint, "streamfold", pk, rk),
                    "{endpoint} {pk:?} {rk:?}"
                );
            }
            let mut batch = azure_core::Url::parse(endpoint.trim_end_matches('/')).unwrap();
            batch.path_segments_mut().unwrap().push("Tables");
            batch.path_segments_mut().unwrap().pop().push("$batch");
            assert_eq!(urls.batch().as_str(), batch.as_str());
        }
    }

    proptest! {
        #[test]
        fn any_key_is_encoded_as_the_crate_encodes_it(pk in "\\PC{0,12}|[ -~\t\n]{0,12}", rk in "\\PC{0,12}|[ -~]{0,12}") {
            let urls = urls();
            prop_assert_eq!(
                our_entity_url(&urls, &pk, &rk),
                crate_entity_url("http://127.0.0.1:10002/devstoreaccount1", "streamfold", &pk, &rk)
            );
        }
    }

    fn properties() -> Properties {
        let mut p = Properties::new();
        p.insert("PartitionKey".into(), "P".into());
        p.insert("RowKey".into(), "E-0000000002".into());
        entity::set_int64(&mut p, "Version", 7);
        p.insert("Data".into(), "{\"a\":\"x\\ny\"}".into());
        p
    }

    #[test]
    fn every_operation_is_framed_as_the_crate_frames_it() {
        let etag = Etag::from("W/\"datetime'2026-12-02T06%3A00%3A00.1Z'\"");
        let mut merged = Properties::new();
        entity::set_int64(&mut merged, "Version", 2);
        let operations = vec![
            Operation::Merge {
                row_key: "HEAD".into(),
                properties: merged.clone(),
                if_match: IfMatchCondition::Any,
            },
            Operation::Insert(properties()),
            Operation::Upsert {
                row_key: "OUTBOX".into(),
                properties: merged.clone(),
            },
            Operation::Replace {
                row_key: "R".into(),
                properties: merged.clone(),
                if_match: IfMatchCondition::Etag(etag.clone()),
            },
            Operation::Delete {
                row_key: "D'x".into(),
                if_match: IfMatchCondition::Etag(etag),
            },
        ];
        let b = Uuid::from_u128(1);
        let c = Uuid::from_u128(2);
        let written = encode_with(&urls(), "Bank|Account|a b", &operations, 0, b, c).unwrap();
        assert_eq!(
            written.content_type,
            "multipart/mixed; boundary=batch_00000000-0000-0000-0000-000000000001"
        );
        let t = "http://127.0.0.1:10002/devstoreaccount1/streamfold";
        let e = |rk: &str| format!("{t}(PartitionKey='Bank|Account|a%20b',RowKey='{rk}')");
        let part = "--changeset_00000000-0000-0000-0000-000000000002\n\
                    Content-Type: application/http\nContent-Transfer-Encoding: binary\n\n";
        let full = "Accept: application/json;odata=fullmetadata\nContent-Type: application/json\n";
        let merged = serde_json::to_string(&merged).unwrap();
        let expected = format!(
            "--batch_00000000-0000-0000-0000-000000000001\n\
             Content-Type: multipart/mixed; boundary=changeset_00000000-0000-0000-0000-000000000002\n\n\
             {part}MERGE {} HTTP/1.1\n{full}If-Match: *\n\n{merged}\n\
             {part}POST {t} HTTP/1.1\nPrefer: return-no-content\n{full}\n{}\n\
             {part}MERGE {} HTTP/1.1\n{full}\n{merged}\n\
             {part}PUT {} HTTP/1.1\n{full}If-Match: W/\"datetime'2026-12-02T06%3A00%3A00.1Z'\"\n\n{merged}\n\
             {part}DELETE {} HTTP/1.1\nAccept: application/json;odata=minimalmetadata\n\
             If-Match: W/\"datetime'2026-12-02T06%3A00%3A00.1Z'\"\n\n\
             --changeset_00000000-0000-0000-0000-000000000002--\n\
             --batch_00000000-0000-0000-0000-000000000001--\n",
            e("HEAD"),
            serde_json::to_string(&properties()).unwrap(),
            e("OUTBOX"),
            e("R"),
            e("D''x"),
        );
        assert_eq!(String::from_utf8(written.body).unwrap(), expected);
    }

    #[test]
    fn entity_bodies_are_the_json_the_crate_writes() {
        let mut request =
            azure_core::Request::new(urls().batch().clone(), azure_core::Method::Post);
        request.set_json(&properties()).unwrap();
        let azure_core::Body::Bytes(crates) = request.body() else {
            panic!("a JSON body is bytes")
        };
        let mut ours = Vec::new();
        write_entity(&mut ours, &properties()).unwrap();
        assert_eq!(&ours[..], &crates[..]);
    }
}
