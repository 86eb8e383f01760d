//! The remote store's tests: filter and payload translation, connection errors, and the conformance suite
//! against a Qdrant server when `QDRANT_URL` is set.

use super::super::conformance;
use super::*;
use qdrant_client::qdrant::r#match::MatchValue;
use qdrant_client::qdrant::{RepeatedIntegers, RepeatedStrings};
use serde_json::json;
use std::collections::HashMap;

#[test]
fn metadata_filters_become_keyword_integer_bool_range_and_any_matches() -> Result<(), String> {
    use qdrant_client::qdrant::condition::ConditionOneOf;
    let filter: MetadataFilter = serde_json::from_value(json!({
        "city": "New York", "n": 3, "ok": true, "x": 1.5, "tags": ["a b", "c"], "ids": [1, 2]
    }))
    .map_err(|e| e.to_string())?;
    let conditions = metadata_conditions(&filter)?;
    let mut seen = HashMap::new();
    for condition in conditions {
        let Some(ConditionOneOf::Field(field)) = condition.condition_one_of else {
            return Err("not a field".into());
        };
        seen.insert(field.key.clone(), field);
    }
    let value = |key: &str| seen.get(key).and_then(|f| f.r#match.clone()).and_then(|m| m.match_value);
    // Whitespace must not turn a keyword into a full-text match.
    assert_eq!(value("metadata.city"), Some(MatchValue::Keyword("New York".into())));
    assert_eq!(value("metadata.n"), Some(MatchValue::Integer(3)));
    assert_eq!(value("metadata.ok"), Some(MatchValue::Boolean(true)));
    assert_eq!(
        value("metadata.tags"),
        Some(MatchValue::Keywords(RepeatedStrings { strings: vec!["a b".into(), "c".into()] }))
    );
    assert_eq!(value("metadata.ids"), Some(MatchValue::Integers(RepeatedIntegers { integers: vec![1, 2] })));
    let range = seen.get("metadata.x").and_then(|f| f.range);
    assert_eq!(range, Some(Range { gte: Some(1.5), lte: Some(1.5), ..Range::default() }));
    assert!(metadata_conditions(&serde_json::from_value(json!({"a b": 1})).map_err(|e| e.to_string())?).is_err());
    Ok(())
}

#[test]
fn payload_round_trips_through_qdrant_values() -> Result<(), String> {
    let original = json!({
        "tenant": "ws/docs", "chunk": 3u32, "updated_at": 1_700_000_000_000i64,
        "metadata": {"lang": "en", "score": 0.5, "tags": ["a"], "nested": {"ok": true}, "none": null}
    });
    let payload = Payload::try_from(original.clone()).map_err(|e| e.to_string())?;
    let point = PointStruct::new("00000000-0000-8000-8000-000000000000", vec![0.0f32; 2], payload);
    assert_eq!(Value::Object(to_json(point.payload)), original);
    Ok(())
}

#[tokio::test]
async fn connecting_to_nothing_is_an_error_not_a_panic() {
    // Port 9 on loopback: nothing listens there, so the connection is refused at once.
    for url in ["http://127.0.0.1:9", "https://127.0.0.1:9"] {
        let outcome = connect(url, Some("key".into()), 8, "switchyard_").await;
        let message = outcome.err().unwrap_or_default();
        assert!(message.contains("does not answer"), "{url}: {message}");
    }
    assert!(connect("not a url", None, 8, "switchyard_").await.is_err());
    assert!(connect("ftp://127.0.0.1:9", None, 8, "switchyard_").await.is_err());
    assert!(connect("http://127.0.0.1:9", None, 8, "bad/prefix").await.is_err());
    assert!(connect("http://127.0.0.1:9", None, 8, "").await.is_err());
    assert!(connect("http://127.0.0.1:9", None, 0, "switchyard_").await.is_err());
}

/// The Qdrant server the tests use (`QDRANT_URL`, its gRPC port), or `None` after saying the test was skipped.
async fn server(test: &str) -> Result<Option<QdrantStore>, String> {
    let Some(url) = std::env::var("QDRANT_URL").ok().filter(|url| !url.is_empty()) else {
        eprintln!("SKIPPED {test}: QDRANT_URL is not set; the remote Qdrant backend was not tested");
        return Ok(None);
    };
    let api_key = std::env::var("QDRANT_API_KEY").ok().filter(|key| !key.is_empty());
    Ok(Some(connect(&url, api_key, conformance::DIMENSIONS, "switchyard_test_").await?))
}

#[tokio::test]
async fn conformance_against_a_qdrant_server() -> Result<(), String> {
    let Some(store) = server("conformance").await? else { return Ok(()) };
    let collection = format!("conformance_{:016x}", rand::random::<u64>());
    let outcome = conformance::run(&store, &collection).await;
    let dropped = store.delete_collection(&collection).await;
    outcome?;
    assert!(dropped?, "the test collection existed and is deleted");
    Ok(())
}

/// The same documents in the embedded store and on the server answer the same searches: the same documents in the
/// same order (both search exactly at this size), with and without a metadata filter, and the same counts and
/// tenants. The collection is made at "start" (`prepare`) with its payload indexes, then dropped.
#[tokio::test]
async fn search_on_a_qdrant_server_matches_the_embedded_store() -> Result<(), String> {
    use super::super::conformance::{chunk, tenant, unit};
    use super::super::edge::EdgeStore;
    let Some(remote) = server("parity").await? else { return Ok(()) };
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let edge = EdgeStore::open(dir.path(), conformance::DIMENSIONS)?;
    let collection = format!("parity_{:016x}", rand::random::<u64>());
    remote.prepare(std::slice::from_ref(&collection)).await?;
    let run = format!("{:016x}", rand::random::<u64>());
    let (a, b) = (tenant(&format!("ws_a_{run}"), "docs"), tenant(&format!("ws_b_{run}"), "docs"));
    let outcome = async {
        for (t, offset) in [(&a, 0u32), (&b, 10_000)] {
            let chunks: Vec<Chunk> = (0..150u32)
                .flat_map(|d| {
                    let lang = if d % 3 == 0 { "de" } else { "en" };
                    [0, 1].map(|n| chunk(&format!("d{d}"), n, unit(offset + d * 2 + n), lang))
                })
                .collect();
            remote.index(&collection, t, chunks.clone()).await?;
            edge.index(&collection, t, chunks).await?;
        }
        let german: MetadataFilter = serde_json::from_value(json!({"lang": "de"})).map_err(|e| e.to_string())?;
        for seed in [1u32, 77, 150, 299, 10_005] {
            for (t, filter) in [(&a, None), (&b, None), (&a, Some(german.clone()))] {
                let ids = |hits: Vec<Hit>| hits.into_iter().map(|h| (h.doc_id, h.chunk)).collect::<Vec<_>>();
                let on_server = ids(remote.search(&collection, t, unit(seed), 10, filter.clone()).await?);
                let embedded = ids(edge.search(&collection, t, unit(seed), 10, filter.clone()).await?);
                if on_server != embedded || on_server.len() != 10 {
                    return Err(format!("seed {seed}: server {on_server:?} vs embedded {embedded:?}"));
                }
            }
        }
        for t in [&a, &b] {
            let (on_server, embedded) = (remote.count(&collection, t).await?, edge.count(&collection, t).await?);
            if (on_server, embedded) != (300, 300) {
                return Err(format!("counts: server {on_server}, embedded {embedded}"));
            }
        }
        let tenants = remote.tenants(&a.workspace_id).await?;
        if tenants.len() != 1 || tenants[0].1.documents != 150 {
            return Err(format!("tenants of a: {:?}", tenants.iter().map(|t| t.1.documents).collect::<Vec<_>>()));
        }
        Ok(())
    }
    .await;
    let dropped = remote.delete_collection(&collection).await;
    outcome?;
    assert!(dropped?, "the test collection existed and is deleted");
    Ok(())
}
