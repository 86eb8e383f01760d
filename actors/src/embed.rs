//! Local text embeddings (all-MiniLM-L6-v2 through fastembed and ONNX Runtime), computed on a dedicated worker
//! thread so that CPU work never stalls the HTTP workers. Requests queue (bounded) and the worker takes everything
//! that arrived together as one batch: under load, one model call serves many requests.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// Where the model and ONNX Runtime are (see `.ci/fetch-models`).
#[derive(Clone, Debug)]
pub struct EmbeddingFiles {
    /// `model.onnx`, `tokenizer.json`, `config.json`, `special_tokens_map.json`, `tokenizer_config.json`.
    pub model_dir: PathBuf,
    /// `libonnxruntime.so.1.31.1`.
    pub ort_library: PathBuf,
}

const MODEL_FILES: [&str; 5] =
    ["model.onnx", "tokenizer.json", "config.json", "special_tokens_map.json", "tokenizer_config.json"];

/// The dimensions of all-MiniLM-L6-v2's vectors.
pub const DIMENSIONS: usize = 384;

/// Texts longer than this many tokens are cut by the model; callers chunk long documents first.
pub const MAX_TOKENS: usize = 256;

impl EmbeddingFiles {
    /// The files under a cache directory laid out as `.ci/fetch-models` leaves it.
    pub fn in_cache(cache: &Path) -> Self {
        EmbeddingFiles {
            model_dir: cache.join("all-minilm-l6-v2"),
            ort_library: cache.join("onnxruntime").join("libonnxruntime.so.1.31.1"),
        }
    }

    /// For tests and benchmarks: the files in `cache` when all are there. Otherwise `None` after a `SKIPPED` line on
    /// stderr, and a panic under CI (`CI` set), where `make test` must have fetched them.
    pub fn for_tests(cache: &Path) -> Option<Self> {
        let files = Self::in_cache(cache);
        if files.missing().is_empty() {
            return Some(files);
        }
        assert!(std::env::var_os("CI").is_none(), "CI must have the embedding model: run `make test`");
        eprintln!("SKIPPED: the embedding model is not in {} (run `make setup`)", cache.display());
        None
    }

    /// What is missing, if anything (ort panics on a library it cannot find, so this is checked first).
    pub fn missing(&self) -> Vec<PathBuf> {
        let mut missing: Vec<PathBuf> =
            MODEL_FILES.iter().map(|f| self.model_dir.join(f)).filter(|p| !p.is_file()).collect();
        if !self.ort_library.is_file() {
            missing.push(self.ort_library.clone());
        }
        missing
    }
}

fn load(files: &EmbeddingFiles, threads: usize) -> Result<fastembed::TextEmbedding, String> {
    use fastembed::{InitOptionsUserDefined, Pooling, TextEmbedding, TokenizerFiles, UserDefinedEmbeddingModel};
    let missing = files.missing();
    if !missing.is_empty() {
        let list: Vec<String> = missing.iter().map(|p| p.display().to_string()).collect();
        return Err(format!("missing {}", list.join(", ")));
    }
    let read = |name: &str| std::fs::read(files.model_dir.join(name)).map_err(|e| format!("{name}: {e}"));
    let environment = ort::init_from(&files.ort_library)
        .map_err(|e| format!("cannot load ONNX Runtime from {}: {e}", files.ort_library.display()))?
        .build()
        .map_err(|e| format!("cannot start ONNX Runtime: {e}"))?;
    let tokenizer = TokenizerFiles {
        tokenizer_file: read("tokenizer.json")?,
        config_file: read("config.json")?,
        special_tokens_map_file: read("special_tokens_map.json")?,
        tokenizer_config_file: read("tokenizer_config.json")?,
    };
    let model = UserDefinedEmbeddingModel::new(read("model.onnx")?, tokenizer).with_pooling(Pooling::Mean);
    let mut options = InitOptionsUserDefined::new().with_environment(environment).with_max_length(MAX_TOKENS);
    options.intra_threads = Some(threads.max(1));
    TextEmbedding::try_new_from_user_defined(model, options).map_err(|e| format!("cannot load the model: {e}"))
}

struct Job {
    texts: Vec<String>,
    reply: oneshot::Sender<Result<Vec<Vec<f32>>, String>>,
}

/// Most texts one model call takes; jobs that arrive together are merged up to this.
const MAX_BATCH: usize = 64;

/// Handle to the embedding worker. Cloning is cheap; every clone feeds the same worker.
#[derive(Clone)]
pub struct Embedder {
    jobs: mpsc::Sender<Job>,
    /// Texts embedded and model calls made, for the metrics and the benchmark.
    stats: Arc<EmbedStats>,
}

#[derive(Default)]
pub struct EmbedStats {
    pub texts: std::sync::atomic::AtomicU64,
    pub calls: std::sync::atomic::AtomicU64,
}

impl Embedder {
    /// Loads the model on a worker thread of its own (`threads` intra-op threads) with a queue of `queue` jobs.
    /// Fails, without panicking, when the files are missing or ONNX Runtime cannot load.
    pub fn start(files: &EmbeddingFiles, threads: usize, queue: usize) -> Result<Embedder, String> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (jobs, mut rx) = mpsc::channel::<Job>(queue.max(1));
        let files = files.clone();
        let stats = Arc::new(EmbedStats::default());
        let worker_stats = stats.clone();
        std::thread::Builder::new()
            .name("embedder".into())
            .spawn(move || {
                let mut model = match load(&files, threads) {
                    Ok(model) => {
                        let _ = ready_tx.send(Ok(()));
                        model
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                while let Some(first) = rx.blocking_recv() {
                    // Everything already waiting joins this call, up to the batch limit.
                    let mut batch = vec![first];
                    let mut count = batch[0].texts.len();
                    while count < MAX_BATCH {
                        match rx.try_recv() {
                            Ok(job) => {
                                count += job.texts.len();
                                batch.push(job);
                            }
                            Err(_) => break,
                        }
                    }
                    let texts: Vec<&str> = batch.iter().flat_map(|j| j.texts.iter().map(String::as_str)).collect();
                    let result = model.embed(&texts, Some(MAX_BATCH)).map_err(|e| format!("embedding failed: {e}"));
                    worker_stats.calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    worker_stats.texts.fetch_add(texts.len() as u64, std::sync::atomic::Ordering::Relaxed);
                    match result {
                        Ok(mut vectors) => {
                            for job in batch {
                                let rest = vectors.split_off(job.texts.len().min(vectors.len()));
                                let mine = std::mem::replace(&mut vectors, rest);
                                let _ = job.reply.send(Ok(mine.into_iter().map(normalise).collect()));
                            }
                        }
                        Err(e) => {
                            for job in batch {
                                let _ = job.reply.send(Err(e.clone()));
                            }
                        }
                    }
                }
            })
            .map_err(|e| format!("cannot start the embedding thread: {e}"))?;
        match ready_rx.recv_timeout(Duration::from_secs(120)) {
            Ok(Ok(())) => Ok(Embedder { jobs, stats }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err("the embedding model did not load within 120 s".into()),
        }
    }

    /// Embeds `texts` (unit-length vectors of `DIMENSIONS`), in order.
    pub async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, String> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let (reply, answer) = oneshot::channel();
        self.jobs.send(Job { texts, reply }).await.map_err(|_| "the embedding worker stopped".to_owned())?;
        answer.await.map_err(|_| "the embedding worker stopped".to_owned())?
    }

    pub fn stats(&self) -> &EmbedStats {
        &self.stats
    }

    /// Times embedding `texts` once, for reports.
    pub async fn timed(&self, texts: Vec<String>) -> Result<(Vec<Vec<f32>>, Duration), String> {
        let started = Instant::now();
        let vectors = self.embed(texts).await?;
        Ok((vectors, started.elapsed()))
    }
}

fn normalise(mut v: Vec<f32>) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    v
}

/// Cosine similarity of two unit vectors.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The model files from `make setup` (`.cache/models` at the workspace root).
    fn files() -> Option<EmbeddingFiles> {
        EmbeddingFiles::for_tests(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../.cache/models"))
    }

    #[test]
    fn missing_files_are_an_error_not_a_panic() {
        let files = EmbeddingFiles::in_cache(Path::new("/nonexistent"));
        assert_eq!(files.missing().len(), 6);
        let error = Embedder::start(&files, 1, 4).err().unwrap();
        assert!(error.contains("missing") && error.contains("libonnxruntime"), "{error}");
    }

    #[tokio::test]
    async fn similar_sentences_are_close_and_batches_change_nothing() {
        let Some(files) = files() else { return };
        let embedder = Embedder::start(&files, 2, 64).unwrap();
        let texts =
            ["The cat sat on the mat.", "A cat was sitting on a rug.", "Quarterly revenue grew by eight percent."];
        let vectors = embedder.embed(texts.iter().map(|t| t.to_string()).collect()).await.unwrap();
        assert_eq!(vectors.len(), 3);
        assert!(vectors.iter().all(|v| v.len() == DIMENSIONS));
        let similar = cosine(&vectors[0], &vectors[1]);
        let unrelated = cosine(&vectors[0], &vectors[2]);
        assert!(similar > 0.5 && unrelated < 0.2, "similar {similar}, unrelated {unrelated}");
        // Alone, or batched with others by concurrent callers: the same vector.
        let (alone, together) = tokio::join!(
            embedder.embed(vec![texts[2].to_owned()]),
            embedder.embed(vec![texts[0].to_owned(), texts[1].to_owned()])
        );
        assert!(cosine(&alone.unwrap()[0], &vectors[2]) > 0.9999);
        assert!(cosine(&together.unwrap()[1], &vectors[1]) > 0.9999);
    }
}
