//! The house rules, checked on the source: the edge imports only downward (`lib → api → state → auth, media,
//! tasks, store… → clock`, and inside `api` from the faces down to the shared pieces), no two modules import each
//! other in a circle, and no product file passes 500 lines. A module may use its own ancestors' items (a
//! folder's `mod.rs` is the room its files share); everything else counts.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level modules of the edge, by layer: a module may import its own layer or a lower one, never a higher.
const LAYERS: &[(&str, u8)] = &[
    ("lib", 6),
    ("index_cli", 6),
    ("api", 5),
    ("state", 4),
    ("auth", 3),
    ("sessions", 3),
    ("media", 3),
    ("tasks", 3),
    ("metrics", 3),
    ("config", 3),
    ("render", 3),
    ("audio", 3),
    ("store", 2),
    ("clock", 1),
];

/// The API's own modules, by layer: faces (routes) over the model surfaces over the shared pieces.
const API_LAYERS: &[(&str, u8)] = &[
    ("openapi", 6),
    ("task", 5),
    ("openai", 5),
    ("runs", 5),
    ("tasks", 5),
    ("marketplace", 5),
    ("billing", 5),
    ("sessions", 5),
    ("realtime", 5),
    ("media", 5),
    ("download", 5),
    ("admin", 5),
    ("ops", 5),
    ("chat", 4),
    ("image", 4),
    ("speech", 4),
    ("embeddings", 4),
    ("contract", 4),
    ("call", 3),
    ("idempotency", 3),
    ("form", 3),
    ("principal", 3),
    ("limits", 2),
    ("body", 2),
    ("query", 2),
    ("docs", 1),
    ("errors", 1),
    ("pace", 1),
    ("cors", 1),
];

const MAX_LINES: usize = 500;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `src/api/chat/mod.rs` → `api::chat`; `src/lib.rs` → `lib`.
fn module_of(src: &Path, file: &Path) -> String {
    let relative = file.strip_prefix(src).unwrap_or(file).with_extension("");
    let mut parts: Vec<String> = relative.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts.join("::")
}

/// The source without comments and without the unit tests at its end.
fn code_of(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => &text[..at],
        None => text,
    };
    text.lines().map(|line| line.split("//").next().unwrap_or("")).collect::<Vec<_>>().join("\n")
}

/// Every `crate::…`, `super::…` and `self::…` path in `code`, braces expanded one level (`super::{a, b}`).
fn paths_in(code: &str) -> Vec<String> {
    let mut paths = Vec::new();
    let bytes = code.as_bytes();
    for start in ["crate::", "super::", "self::"] {
        let mut from = 0;
        while let Some(found) = code[from..].find(start) {
            let at = from + found;
            from = at + start.len();
            if at > 0 && (bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_' || bytes[at - 1] == b':') {
                continue;
            }
            let rest = &code[at..];
            let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':')).unwrap_or(rest.len());
            let path = rest[..end].trim_end_matches(':').to_owned();
            if rest[end..].starts_with('{') {
                let inner = &rest[end + 1..rest[end..].find('}').map_or(rest.len(), |c| end + c)];
                for name in inner.split(',') {
                    let name = name.trim().split("::").next().unwrap_or("").trim();
                    if !name.is_empty() && name != "self" {
                        paths.push(format!("{path}::{name}"));
                    }
                }
            }
            paths.push(path);
        }
    }
    paths
}

/// The module a path names: the longest module prefix, else the module the path starts from.
fn resolve(modules: &BTreeSet<String>, from: &str, is_folder: bool, path: &str) -> Option<String> {
    let mut segments: Vec<&str> = path.split("::").collect();
    let mut base: Vec<&str> = if from == "lib" { vec![] } else { from.split("::").collect() };
    match segments.first() {
        Some(&"crate") => base.clear(),
        Some(&"super") => {
            base.pop();
            while segments.get(1) == Some(&"super") {
                base.pop();
                segments.remove(0);
            }
        }
        Some(&"self") => {
            if !is_folder {
                base.pop();
                base.push(from.rsplit("::").next().unwrap_or(from));
            }
        }
        _ => return None,
    }
    let segments = &segments[1..];
    for take in (1..=segments.len()).rev() {
        let candidate = base.iter().chain(&segments[..take]).copied().collect::<Vec<_>>().join("::");
        if modules.contains(&candidate) {
            return Some(candidate);
        }
    }
    Some(if base.is_empty() { "lib".to_owned() } else { base.join("::") })
}

fn is_ancestor(ancestor: &str, of: &str) -> bool {
    ancestor == "lib" || of.starts_with(&format!("{ancestor}::"))
}

struct Graph {
    edges: BTreeMap<String, BTreeSet<String>>,
    lines: BTreeMap<PathBuf, usize>,
}

fn graph(src: &Path) -> Graph {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    // Property tests in their own files (`props.rs`, `*_props.rs`, `props_json.rs`) are test code, like the unit
    // tests at a file's end: they drive a module through the faces above it.
    let is_props =
        |n: &std::ffi::OsStr| n.to_string_lossy().starts_with("props") || n.to_string_lossy().ends_with("_props.rs");
    files.retain(|f| f.file_name().is_some_and(|n| n != "main.rs" && !is_props(n)));
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(src, f)).collect();
    let mut edges = BTreeMap::new();
    let mut lines = BTreeMap::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        lines.insert(file.clone(), text.lines().count());
        let module = module_of(src, file);
        let is_folder = file.file_name().is_some_and(|n| n == "mod.rs" || n == "lib.rs");
        let targets: BTreeSet<String> = paths_in(&code_of(&text))
            .iter()
            .filter_map(|p| resolve(&modules, &module, is_folder, p))
            .filter(|t| *t != module && !is_ancestor(t, &module) && !is_ancestor(&module, t))
            .collect();
        edges.insert(module, targets);
    }
    Graph { edges, lines }
}

fn rank(table: &[(&str, u8)], name: &str) -> Option<u8> {
    table.iter().find(|(n, _)| *n == name).map(|(_, r)| *r)
}

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

#[test]
fn the_edge_imports_only_downward() {
    let graph = graph(&src_dir());
    let mut upward = Vec::new();
    for (from, targets) in &graph.edges {
        let top = |m: &str| m.split("::").next().unwrap_or(m).to_owned();
        for to in targets {
            let (from_top, to_top) = (top(from), top(to));
            let layers = if from_top == "api" && to_top == "api" {
                let second = |m: &str| m.split("::").nth(1).unwrap_or("").to_owned();
                (rank(API_LAYERS, &second(from)), rank(API_LAYERS, &second(to)))
            } else {
                (rank(LAYERS, &from_top), rank(LAYERS, &to_top))
            };
            match layers {
                (Some(a), Some(b)) if b > a => upward.push(format!("{from} -> {to}")),
                (None, _) | (_, None) => upward.push(format!("{from} -> {to} (module missing from the layer tables)")),
                _ => {}
            }
        }
    }
    assert!(upward.is_empty(), "imports that go up a layer:\n{}", upward.join("\n"));
}

#[test]
fn no_modules_import_each_other_in_a_circle() {
    let graph = graph(&src_dir());
    // Tarjan's strongly connected components; any with two or more modules is a circle.
    struct Walk<'a> {
        edges: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        circles: Vec<Vec<&'a str>>,
    }
    impl<'a> Walk<'a> {
        fn visit(&mut self, v: &'a str) {
            let n = self.index.len();
            self.index.insert(v, n);
            self.low.insert(v, n);
            self.stack.push(v);
            for w in self.edges.get(v).into_iter().flatten() {
                if !self.index.contains_key(w.as_str()) {
                    self.visit(w);
                    let low = self.low[v].min(self.low[w.as_str()]);
                    self.low.insert(v, low);
                } else if self.stack.contains(&w.as_str()) {
                    let low = self.low[v].min(self.index[w.as_str()]);
                    self.low.insert(v, low);
                }
            }
            if self.low[v] == self.index[v] {
                let mut circle = Vec::new();
                while let Some(w) = self.stack.pop() {
                    circle.push(w);
                    if w == v {
                        break;
                    }
                }
                if circle.len() > 1 {
                    self.circles.push(circle);
                }
            }
        }
    }
    let mut walk = Walk {
        edges: &graph.edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        circles: Vec::new(),
    };
    for v in graph.edges.keys() {
        if !walk.index.contains_key(v.as_str()) {
            walk.visit(v);
        }
    }
    assert!(walk.circles.is_empty(), "modules that import each other: {:?}", walk.circles);
}

#[test]
fn no_product_file_passes_500_lines() {
    let mut files = graph(&src_dir()).lines;
    let actors = Path::new(env!("CARGO_MANIFEST_DIR")).join("actors/src");
    let mut engine = Vec::new();
    rust_files(&actors, &mut engine);
    for file in engine {
        let count = std::fs::read_to_string(&file).map(|t| t.lines().count()).unwrap_or(0);
        files.insert(file, count);
    }
    assert!(files.len() > 50, "the source tree was not found");
    let long: Vec<String> =
        files.iter().filter(|(_, n)| **n > MAX_LINES).map(|(f, n)| format!("{} ({n} lines)", f.display())).collect();
    assert!(long.is_empty(), "files over {MAX_LINES} lines:\n{}", long.join("\n"));
}

#[test]
fn the_checker_sees_an_upward_import_and_a_circle() {
    // The rules above must be able to fail: a fake tree with one of each.
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let src = dir.path();
    std::fs::create_dir_all(src.join("api")).unwrap_or_else(|e| panic!("{e}"));
    let write = |name: &str, text: &str| std::fs::write(src.join(name), text).unwrap_or_else(|e| panic!("{e}"));
    write("lib.rs", "pub mod api;\npub mod store;\npub mod auth;\n");
    write("api/mod.rs", "pub mod errors;\n");
    write("api/errors.rs", "use crate::store::Store;\n");
    write("store.rs", "use crate::api::errors::ApiError;\nuse crate::auth::Key;\n");
    write("auth.rs", "use crate::store::Store;\n");
    let graph = graph(src);
    assert!(graph.edges["store"].contains("api::errors"), "{:?}", graph.edges);
    assert!(graph.edges["store"].contains("auth") && graph.edges["auth"].contains("store"));
    assert_eq!(rank(LAYERS, "store").zip(rank(LAYERS, "api")).map(|(s, a)| a > s), Some(true));
}
