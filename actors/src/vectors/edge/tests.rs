//! The embedded store's tests: search beams, the shared conformance suite, upgrading old shards, reopening.

use super::super::conformance::{self, chunk, tenant, unit};
use super::*;

/// Opens the store under `dir`, indexes `n` one-chunk documents `d0..` (8 dimensions) into collection `m`, and
/// closes it again.
async fn fill(dir: &Path, t: &Tenant, n: u32) -> Result<(), String> {
    let store = EdgeStore::open(dir, 8)?;
    let chunks: Vec<Chunk> = (0..n).map(|i| chunk(&format!("d{i}"), 0, unit(i), "en")).collect();
    store.index("m", t, chunks).await
}

/// A narrow search beam still answers (the engine keeps at least as many candidates as asked for), and on
/// segments small enough to be searched plainly every beam agrees with exact search.
#[tokio::test]
async fn a_narrow_beam_agrees_with_exact_search() -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let t = tenant("ws_1", "docs");
    fill(dir.path(), &t, 200).await?;
    let store = EdgeStore::open(dir.path(), 8)?.with_search_ef(1);
    let ids = |hits: Vec<Hit>| hits.into_iter().map(|h| h.doc_id).collect::<Vec<_>>();
    for seed in [3, 70, 199] {
        let exact = ids(store.search_beam("m", &t, unit(seed), 10, Beam::Exact).await?);
        assert_eq!(exact.len(), 10);
        assert_eq!(exact[0], format!("d{seed}"));
        assert_eq!(ids(store.search("m", &t, unit(seed), 10, None).await?), exact);
        assert_eq!(ids(store.search_beam("m", &t, unit(seed), 10, Beam::Ef(4)).await?), exact);
    }
    assert!(store.search_beam("m", &tenant("ws_2", "docs"), unit(3), 10, Beam::Exact).await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn tenants_are_isolated_and_reindexing_replaces() -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let store = EdgeStore::open(dir.path(), conformance::DIMENSIONS)?;
    conformance::run(&store, "m").await
}

/// A shard written before quantization was configured opens, answers, and gains the quantization config (the
/// optimiser then rebuilds its segments with it).
#[tokio::test]
async fn shards_without_quantization_are_upgraded() -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let t = tenant("ws_1", "docs");
    // The layout an earlier version wrote: the same shard without quantization.
    fill(dir.path(), &t, 50).await?;
    let config_file = dir.path().join("m").join("edge_config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config_file).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    config.as_object_mut().map(|c| c.remove("quantization_config"));
    std::fs::write(&config_file, config.to_string()).map_err(|e| e.to_string())?;

    let store = EdgeStore::open(dir.path(), 8)?;
    store.optimize_now()?;
    let hits = store.search("m", &t, unit(7), 1, None).await?;
    assert_eq!(hits[0].doc_id, "d7");
    assert_eq!(store.count("m", &t).await?, 50);
    let saved = std::fs::read_to_string(&config_file).map_err(|e| e.to_string())?;
    assert!(saved.contains(r#""scalar":{"type":"int8""#), "{saved}");
    Ok(())
}

#[tokio::test]
async fn data_survives_reopening() -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let t = tenant("ws_1", "docs");
    fill(dir.path(), &t, 300).await?;
    let store = EdgeStore::open(dir.path(), 8)?;
    assert_eq!(store.count("m", &t).await?, 300);
    let hits = store.search("m", &t, unit(7), 1, None).await?;
    assert_eq!(hits[0].doc_id, "d7");
    Ok(())
}
