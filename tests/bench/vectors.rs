//! Vector index and search benchmark: indexing throughput and search latency through the gateway's Runs API, at
//! 10k and 100k chunks, beside the raw speed of the embedding model on the same machine in the same run.
//!
//! `cargo bench --bench vectors` (part of `make bench`; about 20 minutes on 2 cores) or `BENCH_QUICK=1` (about
//! 4 minutes, 1k and 10k chunks). Prints a markdown table on stdout, progress on stderr. Needs the model files
//! (`make models`).
//!
//! 1. Raw: the embedding model in process (the same `Embedder` the gateway runs, 2 threads, batches of 64) embeds
//!    the benchmark's documents: texts per second, the limit for indexing. Also one text at a time (a query).
//! 2. Index through the API: `switchyard serve` (release, fresh data directory), `POST /api/runs` mode `index`,
//!    64 documents per request, two requests in flight: documents per second, compared with the raw speed measured
//!    right before and after on 1,024 of the documents (the machine's speed drifts over minutes). The gateway's
//!    model first embeds those 1,024 once (`mode: execute`), warm like the one in process.
//! 3. The gateway is stopped and the shard optimised in process (`EdgeStore::optimize_now`, the HNSW build the
//!    gateway otherwise does in the background), timed; the store alone is timed at the search beam the gateway
//!    uses (`SEARCH_EF`) and at the engine's default, and the recall of both against exact search is measured for
//!    the benchmark's queries; the gateway is started again on the same data.
//! 4. Search latency: sequential `POST /api/runs` mode `search` (top_k 5) with queries not in the index,
//!    alternating in blocks with `mode: execute` on one text (embedding the query alone, through the same HTTP,
//!    admission and billing path), so the difference is the vector search.
//! 5. To reach 100k chunks without embedding 90k more texts (8 minutes that measure nothing new), the store is
//!    filled in process with points whose vectors are the real vectors of step 1 plus small noise (renormalised),
//!    under the same tenant; optimised, timed; then search latency as in 4, and indexing 1,024 more real documents
//!    through the API into the full store.
//!
//! Knobs: `BENCH_QUICK=1`, `BENCH_DOCS` (10000), `BENCH_TOTAL` (100000), `BENCH_SEARCHES` (300).
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchyard_actors::embed::{Embedder, EmbeddingFiles};
use switchyard_actors::vectors::edge::{Beam, EdgeStore};
use switchyard_actors::vectors::{Chunk, Hit, Tenant, VectorStore};

const GATEWAY_BIN: &str = env!("CARGO_BIN_EXE_switchyard");
const MODEL: &str = "all-minilm-l6-v2";
const BATCH: usize = 64;
/// The search beam the gateway is started with (`vectors.search_ef`, its default) and the store alone is timed at.
const SEARCH_EF: usize = 64;
/// The engine's own beam (its `ef_construct`), for comparison.
const DEFAULT_EF: usize = 100;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    }
}

/// Documents of `min` to `max` sentences drawn from the fixture corpus (English; 1-3 sentences are 80-500
/// characters, one chunk each).
fn documents(n: usize, seed: u64, min: usize, max: usize) -> Vec<String> {
    let corpus = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/corpus.jsonl")).unwrap();
    let mut sentences = Vec::new();
    for line in corpus.lines() {
        let doc: Value = serde_json::from_str(line).unwrap();
        for sentence in doc["text"].as_str().unwrap().split(". ") {
            let sentence = sentence.trim();
            if sentence.len() > 30 {
                sentences.push(sentence.trim_end_matches('.').to_owned());
            }
        }
    }
    let mut rng = Rng(seed);
    (0..n)
        .map(|_| {
            let count = min + rng.below(max - min + 1);
            let picked: Vec<&str> = (0..count).map(|_| sentences[rng.below(sentences.len())].as_str()).collect();
            let mut text = picked.join(". ") + ".";
            text.truncate(text.floor_char_boundary(950));
            text
        })
        .collect()
}

/// Texts per second of the model in process, batches of `BATCH`.
async fn raw(embedder: &Embedder, texts: &[String]) -> f64 {
    let started = Instant::now();
    for batch in texts.chunks(BATCH) {
        embedder.embed(batch.to_vec()).await.unwrap();
    }
    texts.len() as f64 / started.elapsed().as_secs_f64()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

struct Gateway {
    child: Child,
    url: String,
    key: String,
    workspace: String,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(data: &Path, models: &Path, key: Option<(&str, &str)>) -> Gateway {
    let mut child = Command::new(GATEWAY_BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .env("SWITCHYARD__EMBEDDINGS__CACHE_DIR", models)
        .env("SWITCHYARD__LOG__LEVEL", "warn")
        .env("SWITCHYARD__VECTORS__SEARCH_EF", SEARCH_EF.to_string())
        .env("SWITCHYARD__BOOTSTRAP__CREDITS", "1000000")
        .env("SWITCHYARD__BOOTSTRAP__REQUESTS_PER_MINUTE", "10000000")
        .env("SWITCHYARD__BOOTSTRAP__CONCURRENT_REQUESTS", "64")
        .env("SWITCHYARD__BOOTSTRAP__TOKENS_PER_MINUTE", "100000000")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut gateway = Gateway {
        child,
        url: String::new(),
        key: key.map(|k| k.0.to_owned()).unwrap_or_default(),
        workspace: key.map(|k| k.1.to_owned()).unwrap_or_default(),
    };
    let mut lines = BufReader::new(stdout).lines();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let Some(Ok(line)) = lines.next() else { break };
        if let Some(rest) = line.strip_prefix("First start: created workspace `default` (") {
            gateway.workspace = rest.trim_end_matches(").").to_owned();
        }
        if let Some(k) = line.strip_prefix("API key (shown once, keep it): ") {
            gateway.key = k.trim().to_owned();
        }
        if let Some(url) = line.strip_prefix("Switchyard listening on ") {
            gateway.url = url.trim().to_owned();
            // Keep draining stdout so the gateway never blocks on a full pipe.
            std::thread::spawn(move || for _ in lines {});
            return gateway;
        }
    }
    panic!("the gateway did not start");
}

async fn post(client: &reqwest::Client, gw: &Gateway, body: &Value) -> Value {
    let response = client.post(format!("{}/api/runs", gw.url)).bearer_auth(&gw.key).json(body).send().await.unwrap();
    let status = response.status();
    let answer: Value = response.json().await.unwrap();
    assert!(status.is_success(), "{answer}");
    answer
}

/// Embeds `texts` through the gateway (`mode: execute`, `BATCH` per request) so its model has met these shapes
/// before it is timed, as the in-process one has: ONNX Runtime grows its memory arena for each new batch shape,
/// and the first pass over a thousand documents runs up to a quarter slower than the next.
async fn warm(gw: &Gateway, texts: &[String]) {
    let client = reqwest::Client::new();
    for batch in texts.chunks(BATCH) {
        post(&client, gw, &json!({"model": MODEL, "input": {"texts": batch}})).await;
    }
}

/// Indexes `docs` through the API, `BATCH` per request, two requests in flight; answers documents per second.
async fn index_api(gw: &Gateway, docs: &[String], prefix: &str) -> f64 {
    let client = reqwest::Client::new();
    let batches: Vec<Value> = docs
        .chunks(BATCH)
        .enumerate()
        .map(|(b, batch)| {
            let documents: Vec<Value> = batch
                .iter()
                .enumerate()
                .map(|(i, text)| json!({"id": format!("{prefix}{}", b * BATCH + i), "text": text}))
                .collect();
            json!({"model": MODEL, "mode": "index", "scope": "bench", "input": {"documents": documents}})
        })
        .collect();
    let queue = Arc::new(std::sync::Mutex::new(batches.into_iter()));
    let started = Instant::now();
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let (queue, client, done) = (queue.clone(), client.clone(), done.clone());
            let (url, key) = (gw.url.clone(), gw.key.clone());
            tokio::spawn(async move {
                loop {
                    let Some(body) = queue.lock().unwrap().next() else { break };
                    let response = client.post(format!("{url}/api/runs")).bearer_auth(&key).json(&body).send().await;
                    let answer: Value = response.unwrap().json().await.unwrap();
                    let n = answer["output"]["documents"].as_u64().unwrap_or_else(|| panic!("{answer}"));
                    let total = done.fetch_add(n as usize, std::sync::atomic::Ordering::Relaxed) + n as usize;
                    if total % 1024 < BATCH {
                        eprintln!("  indexed {total}");
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.unwrap();
    }
    docs.len() as f64 / started.elapsed().as_secs_f64()
}

/// Sum and count of a histogram in the gateway's `/metrics` (the first series whose name and labels start so).
async fn histogram(gw: &Gateway, series: &str) -> (f64, f64) {
    let text = reqwest::get(format!("{}/metrics", gw.url)).await.unwrap().text().await.unwrap();
    let value = |suffix: &str| {
        let (name, labels) = series.split_once('{').map_or((series, ""), |(n, l)| (n, l));
        let wanted = format!("{name}{suffix}");
        text.lines()
            .find(|line| line.starts_with(&wanted) && line[wanted.len()..].trim_start_matches('{').starts_with(labels))
            .and_then(|line| line.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or_default()
    };
    (value("_sum"), value("_count"))
}

/// The gateway's own mean time of the embedding calls and the store searches made since `before`, in ms.
struct Inside {
    embed: (f64, f64),
    search: (f64, f64),
}

impl Inside {
    async fn read(gw: &Gateway) -> Inside {
        Inside {
            embed: histogram(gw, "switchyard_embedding_duration_seconds").await,
            search: histogram(gw, "switchyard_vector_operation_duration_seconds{operation=\"search\"").await,
        }
    }

    fn means_since(&self, before: &Inside) -> (f64, f64) {
        let mean = |now: (f64, f64), then: (f64, f64)| 1000.0 * (now.0 - then.0) / (now.1 - then.1).max(1.0);
        (mean(self.embed, before.embed), mean(self.search, before.search))
    }
}

struct Latencies {
    /// Inside the gateway, means (ms): one embedding call, one store search.
    inside: (f64, f64),
    search: Vec<Duration>,
    embed: Vec<Duration>,
    /// Per query, search minus embedding the same query alone, run back to back (order alternating), in µs.
    extra_us: Vec<i64>,
}

/// Search and embed-alone latencies for each query, back to back in alternating order, so drifts of the machine
/// hit both alike and their difference is the vector search (and its response).
async fn latencies(gw: &Gateway, queries: &[String]) -> Latencies {
    let client = reqwest::Client::new();
    let search =
        |q: &String| json!({"model": MODEL, "mode": "search", "scope": "bench", "input": {"query": q, "top_k": 5}});
    let embed = |q: &String| json!({"model": MODEL, "input": {"texts": [q]}});
    // Warm the connection and the caches.
    for q in queries.iter().take(10) {
        post(&client, gw, &embed(q)).await;
        post(&client, gw, &search(q)).await;
    }
    let before = Inside::read(gw).await;
    let mut out = Latencies { inside: (0.0, 0.0), search: Vec::new(), embed: Vec::new(), extra_us: Vec::new() };
    for (i, q) in queries.iter().enumerate() {
        let mut pair = [Duration::ZERO; 2];
        for step in 0..2 {
            let searching = (i + step) % 2 == 0;
            let started = Instant::now();
            let answer = post(&client, gw, &if searching { search(q) } else { embed(q) }).await;
            let elapsed = started.elapsed();
            if searching {
                assert_eq!(answer["output"]["matches"].as_array().map(Vec::len), Some(5), "{answer}");
                pair[0] = elapsed;
            } else {
                pair[1] = elapsed;
            }
        }
        out.search.push(pair[0]);
        out.embed.push(pair[1]);
        out.extra_us.push(pair[0].as_micros() as i64 - pair[1].as_micros() as i64);
    }
    out.inside = Inside::read(gw).await.means_since(&before);
    out.search.sort();
    out.embed.sort();
    out.extra_us.sort();
    out
}

/// The store alone, in process, after optimisation.
struct StoreAlone {
    optimize: Duration,
    /// Search time for probes (vectors near indexed ones) at `SEARCH_EF`, p50 and p99; p50 at the engine's default.
    p50: Duration,
    p99: Duration,
    p50_default: Duration,
    /// Recall of the top 5 documents against exact search for real queries, at `SEARCH_EF` and at the default.
    recall: f64,
    recall_default: f64,
}

/// How many of `approximate` belong in the exact top: the same documents, or others tied with the exact answer's
/// last score (the benchmark's documents repeat sentences, so a one-sentence query often equals several documents
/// word for word, and any of them is as right as the one exact search happened to list).
fn found(approximate: &[Hit], exact: &[Hit]) -> usize {
    let Some(last) = exact.last() else { return 0 };
    approximate
        .iter()
        .take(exact.len())
        .filter(|hit| exact.iter().any(|e| e.doc_id == hit.doc_id) || hit.score >= last.score - 1e-4)
        .count()
}

/// Optimises the store in process and measures it alone: the time the optimisation took, the search time for
/// `probes`, and the recall against exact search for `queries`, at the gateway's beam and the engine's default
/// (alternating per probe, so the machine's drifts hit both alike), so the API figures can be split into
/// embedding, store and the rest, and the beam's cost in accuracy is seen beside its speed.
async fn optimize(data: &Path, tenant: &Tenant, probes: &[Vec<f32>], queries: &[Vec<f32>]) -> StoreAlone {
    let started = Instant::now();
    let store = EdgeStore::open(&data.join("vectors"), 384).unwrap();
    store.optimize_now().unwrap();
    let took = started.elapsed();
    if let Some((segments, points, indexed)) = store.stats(MODEL).unwrap() {
        eprintln!("  store: {segments} segments, {points} points, {indexed} vectors in HNSW");
    }
    let beams = [Beam::Ef(SEARCH_EF), Beam::Ef(DEFAULT_EF)];
    let mut times = [Vec::new(), Vec::new()];
    for (n, probe) in probes.iter().enumerate() {
        for step in 0..2 {
            let i = (n + step) % 2;
            let started = Instant::now();
            let hits = store.search_beam(MODEL, tenant, probe.clone(), 5, beams[i]).await.unwrap();
            times[i].push(started.elapsed());
            assert_eq!(hits.len(), 5);
        }
    }
    times.iter_mut().for_each(|t| t.sort());
    let mut hits = [0usize; 2];
    for query in queries {
        let exact = store.search_beam(MODEL, tenant, query.clone(), 5, Beam::Exact).await.unwrap();
        for (i, beam) in beams.into_iter().enumerate() {
            let approximate = store.search_beam(MODEL, tenant, query.clone(), 5, beam).await.unwrap();
            hits[i] += found(&approximate, &exact);
        }
    }
    let recall = |n: usize| n as f64 / (5 * queries.len().max(1)) as f64;
    StoreAlone {
        optimize: took,
        p50: percentile(&times[0], 0.5),
        p99: percentile(&times[0], 0.99),
        p50_default: percentile(&times[1], 0.5),
        recall: recall(hits[0]),
        recall_default: recall(hits[1]),
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let quick = std::env::var_os("BENCH_QUICK").is_some();
    let n_docs = env_usize("BENCH_DOCS", if quick { 1000 } else { 10_000 });
    let total = env_usize("BENCH_TOTAL", if quick { 10_000 } else { 100_000 });
    let n_searches = env_usize("BENCH_SEARCHES", if quick { 100 } else { 300 });
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join(".cache/models");
    let files = EmbeddingFiles::in_cache(&models);
    if !files.missing().is_empty() {
        eprintln!("the embedding model is missing: run `make models` first");
        return ExitCode::FAILURE;
    }
    let docs = documents(n_docs, 7, 1, 3);
    let queries = documents(n_searches, 99, 1, 1);
    let extra = documents(1024, 1234, 1, 3);
    let mean_chars = docs.iter().map(|d| d.chars().count()).sum::<usize>() / docs.len().max(1);

    // 1. Raw embedding speed, in process.
    eprintln!("raw embedding of {n_docs} texts...");
    let embedder = Embedder::start(&files, 2, 1024).unwrap();
    embedder.embed(docs[..BATCH].to_vec()).await.unwrap();
    let started = Instant::now();
    let mut vectors = Vec::with_capacity(docs.len());
    for batch in docs.chunks(BATCH) {
        vectors.extend(embedder.embed(batch.to_vec()).await.unwrap());
    }
    let raw_rate = docs.len() as f64 / started.elapsed().as_secs_f64();
    let mut single = Vec::new();
    let mut query_vectors = Vec::new();
    for q in &queries {
        let started = Instant::now();
        query_vectors.extend(embedder.embed(vec![q.clone()]).await.unwrap());
        single.push(started.elapsed());
    }
    single.sort();
    // The machine's speed drifts over minutes: indexing is compared with the raw speed measured right before and
    // right after it, on 1,024 of the same documents (the model stays loaded, idle while the gateway works).
    let sample = &docs[..docs.len().min(1024)];

    // 2. Index through the API.
    let dir = tempfile::tempdir().unwrap();
    let data: PathBuf = dir.path().join("data");
    let gw = start(&data, &models, None);
    warm(&gw, sample).await;
    let raw_before = raw(&embedder, sample).await;
    eprintln!("indexing {n_docs} documents through the API...");
    let index_rate = index_api(&gw, &docs, "d").await;
    let raw_after = raw(&embedder, sample).await;
    let (key, workspace) = (gw.key.clone(), gw.workspace.clone());
    drop(gw);

    // 3. Optimise, restart, 4. search at n_docs.
    let tenant = Tenant { workspace_id: workspace.clone(), scope: "bench".into() };
    let mut rng = Rng(5);
    let probes: Vec<Vec<f32>> = (0..200)
        .map(|i| {
            let mut v: Vec<f32> = vectors[(i * 37) % vectors.len()].iter().map(|x| x + rng.unit() * 0.2).collect();
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            v.iter_mut().for_each(|x| *x /= norm);
            v
        })
        .collect();
    let store_small = optimize(&data, &tenant, &probes, &query_vectors).await;
    let gw = start(&data, &models, Some((&key, &workspace)));
    eprintln!("search latency at {n_docs} chunks...");
    let small = latencies(&gw, &queries).await;
    drop(gw);

    // 5. Fill to `total` with perturbed real vectors, optimise, search, index more.
    eprintln!("filling the store to {total} points...");
    let fill_started = Instant::now();
    {
        let store = EdgeStore::open(&data.join("vectors"), 384).unwrap();
        let mut rng = Rng(42);
        let mut pending = Vec::new();
        for i in 0..total.saturating_sub(n_docs) {
            let base = &vectors[i % vectors.len()];
            let mut v: Vec<f32> = base.iter().map(|x| x + rng.unit() * 0.08).collect();
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            v.iter_mut().for_each(|x| *x /= norm);
            pending.push(Chunk {
                doc_id: format!("s{i}"),
                chunk: 0,
                text: format!("synthetic point {i} near document d{}", i % vectors.len()),
                metadata: serde_json::Map::new(),
                vector: v,
            });
            if pending.len() == 2048 {
                store.index(MODEL, &tenant, std::mem::take(&mut pending)).await.unwrap();
            }
        }
        store.index(MODEL, &tenant, pending).await.unwrap();
    }
    let fill = fill_started.elapsed();
    let store_large = optimize(&data, &tenant, &probes, &query_vectors).await;
    let gw = start(&data, &models, Some((&key, &workspace)));
    eprintln!("search latency at {total} chunks...");
    let large = latencies(&gw, &queries).await;
    let raw_before_large = raw(&embedder, &extra).await;
    eprintln!("indexing 1024 more documents into the full store...");
    let index_rate_large = index_api(&gw, &extra, "x").await;
    let raw_after_large = raw(&embedder, &extra).await;
    drop(gw);

    let p50 = |l: &[Duration]| percentile(l, 0.5);
    let p99 = |l: &[Duration]| percentile(l, 0.99);
    println!("| measurement | {n_docs} chunks | {total} chunks |");
    eprintln!("documents of 1-3 sentences, {mean_chars} characters on average; queries of one sentence");
    println!("|---|---|---|");
    println!("| raw embedding in process, batches of {BATCH}, all {n_docs} documents (texts/s) | {raw_rate:.0} | – |");
    println!(
        "| raw embedding right before / after indexing through the API (texts/s) | {raw_before:.0} / {raw_after:.0} | {raw_before_large:.0} / {raw_after_large:.0} |"
    );
    println!(
        "| indexing through the API, {BATCH} per request, 2 in flight (documents/s) | {index_rate:.0} ({:.0}% of raw) | {index_rate_large:.0} ({:.0}% of raw) |",
        200.0 * index_rate / (raw_before + raw_after),
        200.0 * index_rate_large / (raw_before_large + raw_after_large)
    );
    println!(
        "| optimisation, HNSW build off the request path (s) | {:.1} | {:.1} (fill {:.1}) |",
        store_small.optimize.as_secs_f64(),
        store_large.optimize.as_secs_f64(),
        fill.as_secs_f64()
    );
    println!(
        "| search through the API p50 / p99 (ms) | {} / {} | {} / {} |",
        ms(p50(&small.search)),
        ms(p99(&small.search)),
        ms(p50(&large.search)),
        ms(p99(&large.search))
    );
    println!(
        "| embedding the query alone through the API p50 / p99 (ms) | {} / {} | {} / {} |",
        ms(p50(&small.embed)),
        ms(p99(&small.embed)),
        ms(p50(&large.embed)),
        ms(p99(&large.embed))
    );
    let median_ms = |v: &[i64]| format!("{:.2}", v.get(v.len() / 2).copied().unwrap_or_default() as f64 / 1000.0);
    println!(
        "| search minus embedding the same query alone, median of pairs (ms) | {} | {} |",
        median_ms(&small.extra_us),
        median_ms(&large.extra_us)
    );
    println!(
        "| inside the gateway, mean: embedding one query / the store's search (ms) | {:.2} / {:.2} | {:.2} / {:.2} |",
        small.inside.0, small.inside.1, large.inside.0, large.inside.1
    );
    println!(
        "| the store's search alone, in process, top 5 documents p50 / p99 (ms) | {} / {} | {} / {} |",
        ms(store_small.p50),
        ms(store_small.p99),
        ms(store_large.p50),
        ms(store_large.p99)
    );
    println!(
        "| the same, p50 with the engine's default beam ({DEFAULT_EF}) instead of {SEARCH_EF} (ms) | {} | {} |",
        ms(store_small.p50_default),
        ms(store_large.p50_default)
    );
    println!(
        "| recall of the top 5 documents against exact search (ties count), beam {SEARCH_EF} / {DEFAULT_EF} (%) | {:.1} / {:.1} | {:.1} / {:.1} |",
        100.0 * store_small.recall,
        100.0 * store_small.recall_default,
        100.0 * store_large.recall,
        100.0 * store_large.recall_default
    );
    println!(
        "| raw embedding of one text in process p50 / p99 (ms) | {} / {} | – |",
        ms(p50(&single)),
        ms(p99(&single))
    );
    ExitCode::SUCCESS
}
