//! The ledger's two store tasks: the importer, which group-commits the usage journal into the store, and the
//! writer, which group-commits the writes the ledger queues (top-ups).

use super::{Ack, Journal, LedgerStore, LedgerWrite, UsageRecord};
use crate::engine::journal::{Batch, FileChunks, UsageJournal};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{mpsc, watch};

/// The importer, on `arbiter` (a thread of its own): group-commits the journal into the store (each batch one
/// write), truncates what is stored, and publishes how many records are stored so readers can wait for them
/// (`Engine::flush_usage`).
pub fn spawn_importer(
    arbiter: &actix::ArbiterHandle,
    journal: Journal,
    store: Arc<dyn LedgerStore>,
    every: std::time::Duration,
    maintain_every: std::time::Duration,
) -> watch::Receiver<u64> {
    let (stored_tx, stored_rx) = watch::channel(0u64);
    arbiter.spawn(async move {
        crate::background::lower_priority("usage importer");
        let mut stored = 0u64;
        let dir = journal.file.lock().ok().map(|j| j.dir().to_owned());
        let mut maintained = Instant::now();
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if maintained.elapsed() >= maintain_every {
                maintained = Instant::now();
                if let Err(e) = store.maintain().await {
                    tracing::warn!(error = %e, "store upkeep failed");
                }
            }
            let batch = journal.file.lock().ok().and_then(|mut j| j.take());
            let Some((batch, file)) = batch else {
                tick.tick().await;
                continue;
            };
            let count = match batch {
                Batch::Held(records) => import(&*store, records).await,
                Batch::InFile => loop {
                    match import_file(&*store, dir.as_deref(), file).await {
                        Ok(count) => break count,
                        Err(e) => {
                            tracing::error!(error = %e, "cannot read the usage journal back; retrying");
                            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                        }
                    }
                },
            };
            if let Some(Err(e)) = dir.as_deref().map(|dir| UsageJournal::truncate_file(dir, file)) {
                tracing::warn!(error = %e, "could not truncate the usage journal");
            }
            stored += count;
            let _ = stored_tx.send(stored);
        }
    });
    stored_rx
}

/// Records per commit: a starved importer catching up commits in pieces rather than one write of everything.
const IMPORT_CHUNK: usize = 2_000;

/// Commits records into the store, a chunk at a time, retrying each until it is stored (the journal keeps them
/// meanwhile). Answers how many.
async fn import(store: &dyn LedgerStore, mut records: Vec<UsageRecord>) -> u64 {
    let count = records.len() as u64;
    while !records.is_empty() {
        let rest = records.split_off(records.len().min(IMPORT_CHUNK));
        let writes: Vec<LedgerWrite> = records.into_iter().map(|r| LedgerWrite::Usage(Box::new(r))).collect();
        loop {
            match store.commit(writes.clone()).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::error!(error = %e, "usage import failed; retrying (the journal keeps the records)");
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
            }
        }
        records = rest;
    }
    count
}

/// Commits the records of a journal file too long to have been held, read back a chunk at a time. Records already
/// stored (a retry after a read error) are skipped by the store.
async fn import_file(store: &dyn LedgerStore, dir: Option<&std::path::Path>, file: usize) -> std::io::Result<u64> {
    let dir = dir.ok_or_else(|| std::io::Error::other("the journal's directory is unknown"))?;
    let Some(mut reader) = FileChunks::open(dir, file)? else { return Ok(0) };
    let mut count = 0;
    loop {
        let chunk = reader.next_chunk(IMPORT_CHUNK)?;
        if chunk.is_empty() {
            return Ok(count);
        }
        count += import(store, chunk).await;
    }
}

/// The group-commit writer: takes whatever writes queued up while the previous commit ran and commits them as one
/// batch, then answers each waiter. With nothing queued it commits at once, so a lone write waits for no timer.
pub fn spawn_writer(store: Arc<dyn LedgerStore>, capacity: usize) -> mpsc::Sender<(LedgerWrite, Option<Ack>)> {
    let (tx, mut rx) = mpsc::channel::<(LedgerWrite, Option<Ack>)>(capacity);
    actix::spawn(async move {
        while let Some(first) = rx.recv().await {
            let mut writes = vec![first.0];
            let mut acks = vec![first.1];
            while writes.len() < 512 {
                match rx.try_recv() {
                    Ok((write, ack)) => {
                        writes.push(write);
                        acks.push(ack);
                    }
                    Err(_) => break,
                }
            }
            let started = Instant::now();
            let result = store.commit(writes).await;
            if let Err(e) = &result {
                tracing::error!(error = %e, "usage batch could not be committed");
            }
            tracing::trace!(
                elapsed_us = started.elapsed().as_micros() as u64,
                batch = acks.len(),
                "usage batch committed"
            );
            for ack in acks.into_iter().flatten() {
                let _ = ack.send(result.clone());
            }
        }
    });
    tx
}
