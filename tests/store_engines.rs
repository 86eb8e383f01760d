//! The store's whole surface, run on both engines by the same test bodies: SQLite in a temporary data directory,
//! and PostgreSQL in a database of its own on the server `make test` starts (`.ci/with-backends`). Each test is
//! generated twice by `both!`; the PostgreSQL one says SKIPPED when no server was given, and fails instead under
//! `make test` (SWITCHYARD_TEST_BACKENDS=1).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(dead_code)]
#[path = "common/backends.rs"]
mod backends;

use switchyard::store::{KeyRecord, MediaRow, Plan, SessionRow, Store, Upload, UsageKey, Workspace};
use switchyard_actors::engine::ledger::{LedgerStore, LedgerWrite, UsageRecord};
use switchyard_actors::Credits;

/// A store of each engine, with the directory (SQLite's) it lives in.
async fn sqlite() -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    (Store::connect(None, dir.path()).await.unwrap(), dir)
}

async fn postgres(test: &str) -> Option<(Store, tempfile::TempDir)> {
    let url = backends::postgres_database(test).await?;
    let dir = tempfile::tempdir().unwrap();
    Some((Store::connect(Some(&url), dir.path()).await.unwrap(), dir))
}

/// `both!(name, body)`: `name::sqlite` and `name::postgres`, each running `body(store)`.
macro_rules! both {
    ($name:ident, $body:ident) => {
        mod $name {
            #[actix_web::test]
            async fn sqlite() {
                let (store, _dir) = super::sqlite().await;
                assert_eq!(store.engine(), "sqlite");
                super::$body(store).await;
            }

            #[actix_web::test]
            async fn postgres() {
                let Some((store, _dir)) = super::postgres(stringify!($name)).await else { return };
                assert_eq!(store.engine(), "postgres");
                super::$body(store).await;
            }
        }
    };
}

fn workspace(id: &str, credits: i64, created_at: i64) -> Workspace {
    Workspace {
        id: id.into(),
        name: format!("{id} name"),
        credits: Credits::from_milli(credits),
        plan: Plan { requests_per_minute: 60, concurrent_requests: 4, tokens_per_minute: 100_000 },
        created_at,
    }
}

fn record(id: &str, workspace_id: &str, created_at: i64, credits_milli: i64) -> UsageRecord {
    UsageRecord {
        id: id.into(),
        created_at,
        workspace_id: workspace_id.into(),
        key_id: "key_1".into(),
        model: "gpt-4o-mini".into(),
        provider: "openai".into(),
        endpoint: "/v1/chat/completions".into(),
        prompt_tokens: 10,
        completion_tokens: 5,
        modality: "chat".into(),
        credits_milli,
        latency_ms: 120,
        status: "ok".into(),
        attempts: 1,
        output_bytes: 42,
        ..Default::default()
    }
}

fn usage(records: Vec<UsageRecord>) -> Vec<LedgerWrite> {
    records.into_iter().map(|r| LedgerWrite::Usage(Box::new(r))).collect()
}

async fn balance(store: &Store, id: &str) -> i64 {
    store.workspace(id).await.unwrap().unwrap().credits.milli()
}

both!(workspaces_and_keys, workspaces_and_keys_body);
async fn workspaces_and_keys_body(store: Store) {
    assert_eq!(store.workspace_count().await.unwrap(), 0);
    store.insert_workspace(&workspace("ws_b", 5_000, 2)).await.unwrap();
    store.insert_workspace(&workspace("ws_a", 7_000, 1)).await.unwrap();
    assert!(store.insert_workspace(&workspace("ws_a", 1, 3)).await.is_err(), "an id is taken once");
    assert_eq!(store.workspace_count().await.unwrap(), 2);
    let listed: Vec<String> = store.workspaces().await.unwrap().into_iter().map(|w| w.id).collect();
    assert_eq!(listed, ["ws_a", "ws_b"]);
    assert_eq!(store.workspace("ws_a").await.unwrap(), Some(workspace("ws_a", 7_000, 1)));
    assert_eq!(store.workspace("nope").await.unwrap(), None);

    let key = KeyRecord {
        id: "key_1".into(),
        workspace_id: "ws_a".into(),
        name: "default".into(),
        key_hash: [7; 32],
        prefix: "sk-sy-abc".into(),
        created_at: 10,
        revoked_at: None,
        models: Some(vec!["gpt-4o-mini".into()]),
    };
    store.insert_key(&key).await.unwrap();
    let other = KeyRecord { id: "key_2".into(), key_hash: [8; 32], models: None, created_at: 11, ..key.clone() };
    store.insert_key(&other).await.unwrap();
    let same_hash = KeyRecord { id: "key_3".into(), ..key.clone() };
    assert!(store.insert_key(&same_hash).await.is_err(), "a key hash is unique");
    let unknown_workspace =
        KeyRecord { id: "key_4".into(), workspace_id: "ws_x".into(), key_hash: [9; 32], ..key.clone() };
    assert!(store.insert_key(&unknown_workspace).await.is_err(), "a key belongs to a workspace that exists");
    assert_eq!(store.keys(Some("ws_a")).await.unwrap(), vec![key.clone(), other.clone()]);
    assert_eq!(store.keys(Some("ws_b")).await.unwrap(), vec![]);
    assert_eq!(store.keys(None).await.unwrap().len(), 2);

    let revoked = store.revoke_key("key_1", 99).await.unwrap().unwrap();
    assert_eq!(revoked.revoked_at, Some(99));
    let again = store.revoke_key("key_1", 150).await.unwrap().unwrap();
    assert_eq!(again.revoked_at, Some(99), "the first revocation's time stays");
    assert_eq!(store.revoke_key("key_none", 1).await.unwrap(), None);
    let models = Some(vec!["a".to_string(), "b".to_string()]);
    assert_eq!(store.set_key_models("key_2", &models).await.unwrap().unwrap().models, models);
    assert_eq!(store.set_key_models("key_2", &None).await.unwrap().unwrap().models, None);
    assert_eq!(store.set_key_models("key_none", &None).await.unwrap(), None);
    store.ping().await.unwrap();
}

both!(usage_debits_once, usage_debits_once_body);
async fn usage_debits_once_body(store: Store) {
    store.insert_workspace(&workspace("ws_a", 10_000, 1)).await.unwrap();
    store.insert_workspace(&workspace("ws_b", 10_000, 1)).await.unwrap();
    let records =
        vec![record("u1", "ws_a", 1_000, 300), record("u2", "ws_a", 2_000, 0), record("u3", "ws_b", 3_000, 50)];
    store.commit(usage(records.clone())).await.unwrap();
    assert_eq!((balance(&store, "ws_a").await, balance(&store, "ws_b").await), (9_700, 9_950));
    // The journal read again (a crash before truncation; two gateways importing): nothing twice.
    store.commit(usage(records.clone())).await.unwrap();
    store.import_usage(records).await.unwrap();
    assert_eq!((balance(&store, "ws_a").await, balance(&store, "ws_b").await), (9_700, 9_950));
    // A top-up and a record in one batch.
    let batch = vec![
        LedgerWrite::TopUp { workspace_id: "ws_a".into(), amount: Credits::from_milli(1_000) },
        LedgerWrite::Usage(Box::new(record("u4", "ws_a", 4_000, 200))),
    ];
    store.commit(batch).await.unwrap();
    assert_eq!(balance(&store, "ws_a").await, 10_500);
    let balances: std::collections::HashMap<String, i64> =
        store.balances().await.unwrap().into_iter().map(|(id, c)| (id, c.milli())).collect();
    assert_eq!(balances, [("ws_a".to_string(), 10_500), ("ws_b".to_string(), 9_950)].into());
    store.maintain().await.unwrap();
}

both!(a_large_import_goes_in_whole, a_large_import_body);
async fn a_large_import_body(store: Store) {
    store.insert_workspace(&workspace("ws_a", 10_000_000, 1)).await.unwrap();
    // Past one statement's 500 rows, with a last short chunk.
    let records: Vec<UsageRecord> = (0..1_234).map(|i| record(&format!("u{i:05}"), "ws_a", 1_000 + i, 3)).collect();
    store.commit(usage(records)).await.unwrap();
    assert_eq!(balance(&store, "ws_a").await, 10_000_000 - 3 * 1_234);
    let totals = store.usage_summary("ws_a", UsageKey::Model, 0, i64::MAX).await.unwrap();
    assert_eq!(totals.len(), 1);
    assert_eq!((totals[0].requests, totals[0].credits.milli()), (1_234, 3 * 1_234));
}

both!(usage_summaries_by_every_key, usage_summaries_body);
async fn usage_summaries_body(store: Store) {
    store.insert_workspace(&workspace("ws_a", 1_000_000, 1)).await.unwrap();
    let day_one = 1_764_547_200_000; // 2025-12-01T00:00:00Z
    let mut a = record("u1", "ws_a", day_one + 1_000, 100);
    a.reporting_group = Some("search".into());
    a.task = Some("summarise".into());
    a.revision = Some("r1".into());
    a.user = Some("alice".into());
    a.session_id = Some("sess_1".into());
    let mut b = record("u2", "ws_a", day_one + 86_400_000 + 5, 50);
    b.model = "claude-3-haiku".into();
    b.status = "error".into();
    b.fallback_used = true;
    b.task = Some("summarise".into());
    b.revision = Some("r2".into());
    let mut speech = record("u3", "ws_a", day_one + 2_000, 30);
    speech.modality = "speech".into();
    speech.units = 120;
    let mut audio = record("u4", "ws_a", day_one + 3_000, 20);
    audio.modality = "transcription".into();
    audio.units = 2_500;
    let mut image = record("u5", "ws_a", day_one + 4_000, 400);
    image.modality = "image".into();
    image.units = 2;
    image.pixels = 2 * 1024 * 1024;
    let mut embed = record("u6", "ws_a", day_one + 5_000, 1);
    embed.modality = "embedding".into();
    embed.units = 7;
    let other = record("u7", "ws_b", day_one, 9);
    store.commit(usage(vec![a, b, speech, audio, image, embed, other])).await.unwrap();

    let by_model = store.usage_summary("ws_a", UsageKey::Model, 0, i64::MAX).await.unwrap();
    let keys: Vec<Option<String>> = by_model.iter().map(|t| t.key.clone()).collect();
    assert_eq!(keys, [Some("claude-3-haiku".to_string()), Some("gpt-4o-mini".to_string())]);
    let gpt = &by_model[1];
    assert_eq!((gpt.requests, gpt.errors, gpt.fallbacks), (5, 0, 0));
    assert_eq!((gpt.prompt_tokens, gpt.completion_tokens, gpt.total_tokens), (50, 25, 75));
    assert_eq!((gpt.characters, gpt.audio_seconds, gpt.images, gpt.pixels), (120, 2.5, 2, 2 * 1024 * 1024));
    assert_eq!((gpt.embedding_inputs, gpt.output_bytes, gpt.processing_ms), (7, 5 * 42, 5 * 120));
    assert_eq!(gpt.credits.milli(), 100 + 30 + 20 + 400 + 1);
    let claude = &by_model[0];
    assert_eq!((claude.requests, claude.errors, claude.fallbacks, claude.credits.milli()), (1, 1, 1, 50));

    let by_day = store.usage_summary("ws_a", UsageKey::Day, 0, i64::MAX).await.unwrap();
    let days: Vec<(Option<String>, i64)> = by_day.iter().map(|t| (t.key.clone(), t.requests)).collect();
    assert_eq!(days, [(Some("2025-12-01".to_string()), 5), (Some("2025-12-02".to_string()), 1)]);

    let by_group = store.usage_summary("ws_a", UsageKey::ReportingGroup, 0, i64::MAX).await.unwrap();
    let groups: Vec<(Option<String>, i64)> = by_group.iter().map(|t| (t.key.clone(), t.requests)).collect();
    assert_eq!(groups, [(None, 5), (Some("search".to_string()), 1)], "no group first");
    for (key, expected) in [
        (UsageKey::User, Some("alice")),
        (UsageKey::Session, Some("sess_1")),
        (UsageKey::Revision, Some("r1")),
        (UsageKey::ApiKey, Some("key_1")),
        (UsageKey::Modality, Some("chat")),
        (UsageKey::Task, Some("summarise")),
    ] {
        let totals = store.usage_summary("ws_a", key, 0, i64::MAX).await.unwrap();
        assert!(totals.iter().any(|t| t.key.as_deref() == expected), "{key:?}: {:?}", totals.len());
    }
    // The range: from inclusive, to exclusive.
    let first_day = store.usage_summary("ws_a", UsageKey::Model, day_one + 1_000, day_one + 86_400_000).await.unwrap();
    assert_eq!(first_day.iter().map(|t| t.requests).sum::<i64>(), 5);
    assert!(store.usage_summary("ws_none", UsageKey::Model, 0, i64::MAX).await.unwrap().is_empty());

    let runs = store.task_runs("ws_a", "summarise", 0, i64::MAX).await.unwrap();
    let mut seen: Vec<(Option<String>, String, bool, i64)> =
        runs.iter().map(|r| (r.revision.clone(), r.status.clone(), r.fallback_used, r.credits_milli)).collect();
    seen.sort();
    assert_eq!(seen, [(Some("r1".into()), "ok".into(), false, 100), (Some("r2".into()), "error".into(), true, 50)]);
    assert_eq!(store.session_spent("sess_1").await.unwrap(), 100);
    assert_eq!(store.session_spent("sess_none").await.unwrap(), 0);
}

both!(tasks_are_kept_and_deleted, tasks_body);
async fn tasks_body(store: Store) {
    store.put_task("", "shared", Some(r#"{"a":1}"#)).await.unwrap();
    store.put_task("ws_a", "mine", Some(r#"{"b":2}"#)).await.unwrap();
    store.put_task("ws_a", "mine", Some(r#"{"b":3}"#)).await.unwrap();
    store.put_task("", "gone", None).await.unwrap();
    let mut tasks = store.tasks().await.unwrap();
    tasks.sort();
    assert_eq!(
        tasks,
        [
            ("".to_string(), "gone".to_string(), None),
            ("".to_string(), "shared".to_string(), Some(r#"{"a":1}"#.to_string())),
            ("ws_a".to_string(), "mine".to_string(), Some(r#"{"b":3}"#.to_string())),
        ]
    );
}

both!(media_and_uploads, media_body);
async fn media_body(store: Store) {
    let media = |id: &str, object: &str| MediaRow {
        id: id.into(),
        workspace_id: "ws_a".into(),
        filename: "a.png".into(),
        content_type: "image/png".into(),
        bytes: 1_000,
        sha256: "ab".repeat(32),
        object: object.into(),
        created_at: 5,
    };
    assert_eq!(store.media_totals().await.unwrap(), (0, 0));
    store.insert_media(&media("med_1", "obj_1")).await.unwrap();
    assert_eq!(store.media("ws_a", "med_1").await.unwrap(), Some(("a.png".into(), "image/png".into(), "obj_1".into())));
    assert_eq!(store.media("ws_b", "med_1").await.unwrap(), None, "another workspace's media is not found");
    assert_eq!(store.media_owner("med_1").await.unwrap(), Some("ws_a".into()));

    let upload = Upload {
        workspace_id: "ws_a".into(),
        filename: "talk.wav".into(),
        content_type: "audio/wav".into(),
        bytes: 3_000,
        expires_at: 1_000,
        status: "pending".into(),
        sha256: None,
        object: None,
        media_ref: None,
    };
    store.insert_upload("up_1", &upload).await.unwrap();
    let pending = store.upload("up_1").await.unwrap().unwrap();
    assert_eq!((pending.status.as_str(), pending.bytes, pending.object), ("pending", 3_000, None));
    assert!(store.mark_uploaded("up_1", "cd", "obj_2").await.unwrap());
    assert!(!store.complete_upload("up_1", &media("med_2", "obj_other")).await.unwrap(), "a stale object is refused");
    assert!(store.complete_upload("up_1", &media("med_2", "obj_2")).await.unwrap());
    assert!(!store.complete_upload("up_1", &media("med_3", "obj_2")).await.unwrap(), "completed once");
    assert!(!store.mark_uploaded("up_1", "ef", "obj_3").await.unwrap(), "a completed upload stays");
    let done = store.upload("up_1").await.unwrap().unwrap();
    assert_eq!((done.status.as_str(), done.media_ref.as_deref()), ("completed", Some("med_2")));
    assert_eq!(store.media_totals().await.unwrap(), (2, 2_000));
    assert!(store.upload("up_none").await.unwrap().is_none());
}

both!(idempotency_claims, idempotency_body);
async fn idempotency_body(store: Store) {
    assert!(store.claim_idempotency("ws_a", "k1", b"hash-1", "gw", 100, 0).await.unwrap());
    assert!(!store.claim_idempotency("ws_a", "k1", b"hash-1", "gw", 101, 0).await.unwrap(), "claimed once");
    assert!(store.claim_idempotency("ws_b", "k1", b"hash-1", "gw", 101, 0).await.unwrap(), "keys are per workspace");
    let running = store.idempotent_response("ws_a", "k1").await.unwrap().unwrap();
    assert_eq!((running.status, running.body_hash.as_slice(), running.body.len()), (0, &b"hash-1"[..], 0));
    store
        .keep_idempotent("ws_a", "k1", 200, "application/json".into(), "[]".into(), b"{\"ok\":1}".to_vec())
        .await
        .unwrap();
    let kept = store.idempotent_response("ws_a", "k1").await.unwrap().unwrap();
    assert_eq!(
        (kept.status, kept.content_type.as_str(), kept.body.as_slice()),
        (200, "application/json", &b"{\"ok\":1}"[..])
    );
    // A finished response is not released; a running claim is.
    store.release_idempotency("ws_a", "k1").await.unwrap();
    assert!(store.idempotent_response("ws_a", "k1").await.unwrap().is_some());
    store.release_idempotency("ws_b", "k1").await.unwrap();
    assert!(store.idempotent_response("ws_b", "k1").await.unwrap().is_none());
    // An expired claim is forgotten by the next claim.
    assert!(store.claim_idempotency("ws_a", "k1", b"hash-2", "gw", 500, 200).await.unwrap());
    assert_eq!(store.idempotent_response("ws_a", "k1").await.unwrap().unwrap().body_hash, b"hash-2");
    // On SQLite a gateway that starts frees what the process before it left running, and nothing finished or its
    // own (PostgreSQL's gateways free a silent one's claims in their heartbeat: tests/shared_wallets.rs).
    if store.engine() != "sqlite" {
        assert_eq!(store.release_abandoned_claims("gw-next").await.unwrap(), 0);
        return;
    }
    store.keep_idempotent("ws_a", "k1", 201, "text/plain".into(), String::new(), b"done".to_vec()).await.unwrap();
    assert!(store.claim_idempotency("ws_a", "left", b"hash-3", "gw", 600, 0).await.unwrap());
    assert!(store.claim_idempotency("ws_a", "own", b"hash-4", "gw-next", 601, 0).await.unwrap());
    assert_eq!(store.release_abandoned_claims("gw-next").await.unwrap(), 1);
    assert!(store.idempotent_response("ws_a", "left").await.unwrap().is_none(), "the stopped gateway's claim");
    assert!(store.claim_idempotency("ws_a", "left", b"hash-3", "gw-next", 602, 0).await.unwrap(), "a retry runs");
    assert_eq!(store.idempotent_response("ws_a", "own").await.unwrap().unwrap().status, 0);
    assert_eq!(store.idempotent_response("ws_a", "k1").await.unwrap().unwrap().status, 201);
    assert_eq!(store.release_abandoned_claims("gw-next").await.unwrap(), 0);
}

both!(sessions_and_revocations, sessions_body);
async fn sessions_body(store: Store) {
    let session = SessionRow {
        id: "sess_1".into(),
        workspace_id: "ws_a".into(),
        key_id: "key_1".into(),
        user: Some("alice".into()),
        models: Some(vec!["gpt-4o-mini".into()]),
        max_credits_milli: Some(5_000),
        created_at: 10,
        expires_at: 1_000,
        revoked_at: None,
    };
    store.insert_session(&session).await.unwrap();
    store
        .insert_session(&SessionRow { id: "sess_2".into(), user: None, models: None, ..session.clone() })
        .await
        .unwrap();
    assert_eq!(store.revoke_session("ws_b", "sess_1", 50).await.unwrap(), None, "only its own workspace revokes it");
    assert_eq!(store.revoke_session("ws_a", "sess_1", 50).await.unwrap(), Some(1_000));
    assert_eq!(store.revoked_sessions(100).await.unwrap(), [("sess_1".to_string(), 1_000)]);
    assert!(store.revoked_sessions(1_000).await.unwrap().is_empty(), "an expired session is no longer listed");
}

/// Several gateways starting at once on one new database: the schema is made once, and all of them open.
#[actix_web::test]
async fn postgres_gateways_starting_together_migrate_once() {
    let Some(url) = backends::postgres_database("migrate_together").await else { return };
    let dir = tempfile::tempdir().unwrap();
    let opened = futures::future::join_all((0..4).map(|_| Store::connect(Some(&url), dir.path()))).await;
    for store in &opened {
        assert!(store.is_ok(), "{:?}", store.as_ref().err());
    }
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let versions: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM schema_version ORDER BY version").fetch_all(&pool).await.unwrap();
    assert_eq!(versions, (1..=versions.len() as i64).collect::<Vec<_>>(), "each migration once");
    assert!(!versions.is_empty());
}

#[actix_web::test]
async fn a_database_url_that_cannot_be_used_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let error = |r: Result<Store, String>| r.err().expect("refused");
    let e = error(Store::connect(Some("mysql://u:secret@localhost/db"), dir.path()).await);
    assert!(e.contains("only postgres://") && !e.contains("secret"), "{e}");
    let e = error(Store::connect(Some("sqlite://x.db"), dir.path()).await);
    assert!(e.contains("leave database.url empty"), "{e}");
    // Nothing listens on port 1.
    let e = error(Store::connect(Some("postgres://u:secret@127.0.0.1:1/db"), dir.path()).await);
    assert!(
        e.contains("cannot connect to PostgreSQL") && e.contains("u:***@127.0.0.1:1") && !e.contains("secret"),
        "{e}"
    );
    if let Some(url) = backends::postgres_admin_url() {
        let missing = url.rsplit_once('/').map(|(base, _)| format!("{base}/no_such_database")).unwrap();
        let e = error(Store::connect(Some(&missing), dir.path()).await);
        assert!(e.contains("cannot connect to PostgreSQL") && e.contains("no_such_database"), "{e}");
    }
}
