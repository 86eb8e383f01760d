//! Hostile input, property-based: Schemathesis generates requests for every operation of `/openapi.json` (a fixed
//! seed, a bounded number per operation), with a valid key and with no credentials at all, against the real binary.
//! It fails on any 500, any 5xx outside the error envelope (`tests/python/st_hooks.py`), any response that breaks
//! its own schema (status, content type, body), and any request left unanswered past its timeout.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::process::start;
use common::python;
use std::process::Command;
use std::time::Instant;

/// Generated requests per operation, per run.
const EXAMPLES: &str = "25";

#[tokio::test]
async fn generated_requests_get_no_500_and_answers_that_keep_their_schema() {
    let Some(python) = python() else {
        assert!(std::env::var_os("CI").is_none(), "CI must run the Schemathesis test: run `make test`");
        eprintln!("SKIPPED: the Schemathesis run needs `make test` (it installs Schemathesis into .cache/venv)");
        return;
    };
    let st = python.with_file_name("st");
    assert!(st.exists(), "{} is missing: run `make setup`", st.display());
    let dir = tempfile::tempdir().unwrap();
    let gateway = start(dir.path());
    let key = gateway.key.clone().unwrap();
    let hooks = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python");
    for credentials in [Some(format!("Authorization: Bearer {key}")), None] {
        let mut run = Command::new(&st);
        run.current_dir(dir.path())
            .env("PYTHONPATH", &hooks)
            .env("SCHEMATHESIS_HOOKS", "st_hooks")
            .env("NO_COLOR", "1")
            .args(["run", &format!("{}/openapi.json", gateway.url), "--seed", "18", "-n", EXAMPLES])
            // One worker: Hypothesis parses lambdas' source from each worker thread, and CPython 3.11's parser is
            // not safe for that ("AST constructor recursion depth mismatch", an error of the tool, not the API).
            .args(["--phases", "fuzzing", "--no-shrink", "-w", "1", "--request-timeout", "10"])
            // Credentials are ours to give: generated ones would only test the 401 path.
            .args(["--generation-with-security-parameters", "false"])
            .args([
                "-c",
                "no_internal_error,response_schema_conformance,status_code_conformance,content_type_conformance",
            ])
            .args(["--report-dir", &dir.path().join("st").display().to_string()]);
        if let Some(header) = &credentials {
            run.args(["-H", header]);
        }
        let started = Instant::now();
        let output = tokio::task::spawn_blocking(move || run.output()).await.unwrap().unwrap();
        let text = String::from_utf8_lossy(&output.stdout);
        let summary: String = text.lines().filter(|l| l.contains(" generated, ")).collect();
        eprintln!(
            "schemathesis, {}: {} in {:.0} s",
            if credentials.is_some() { "with a key" } else { "no credentials" },
            summary.trim(),
            started.elapsed().as_secs_f64()
        );
        assert!(output.status.success(), "{text}\n{}", String::from_utf8_lossy(&output.stderr));
    }
}
