//! The usage journal: where a settlement is committed before its response completes. Appending a line to a file
//! on the ledger's own thread costs microseconds, where a SQLite commit costs a round trip to SQLite's thread; the
//! durability is the same as SQLite's WAL with `synchronous = NORMAL` (safe when the process dies; an fsync
//! policy is the operator's choice of file system). A background importer group-commits the journal into the
//! store and truncates it; on start, whatever is left is imported again (the store ignores records it has).
//!
//! Two files take turns: while one batch is imported from one, new records go to the other, so the file being
//! truncated is never the one being written.

use super::ledger::UsageRecord;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

const FILES: [&str; 2] = ["usage.journal.0", "usage.journal.1"];

/// A record the journal could not commit, handed back.
#[derive(Debug)]
pub struct Refused {
    pub error: io::Error,
    pub record: UsageRecord,
}

pub struct UsageJournal {
    dir: PathBuf,
    active: usize,
    files: [File; 2],
    pending: Vec<UsageRecord>,
    /// Records appended since the journal opened; the importer reports how many it has stored.
    appended: u64,
    line: Vec<u8>,
}

fn open(dir: &Path, name: &str) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(dir.join(name))
}

impl UsageJournal {
    /// Opens the journal in `dir`. Call `replay` first: opening does not read what is there.
    pub fn open(dir: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let files = [open(dir, FILES[0])?, open(dir, FILES[1])?];
        Ok(UsageJournal { dir: dir.to_owned(), active: 0, files, pending: Vec::new(), appended: 0, line: Vec::new() })
    }

    /// Commits a record: one `write` of one line, done when this returns. The record then waits for the importer;
    /// a refused record comes back with the error.
    pub fn append(&mut self, record: UsageRecord) -> Result<(), Box<Refused>> {
        self.line.clear();
        let written = serde_json::to_writer(&mut self.line, &record).map_err(io::Error::other).and_then(|()| {
            self.line.push(b'\n');
            self.files[self.active].write_all(&self.line)
        });
        if let Err(error) = written {
            return Err(Box::new(Refused { error, record }));
        }
        self.pending.push(record);
        self.appended += 1;
        Ok(())
    }

    pub fn appended(&self) -> u64 {
        self.appended
    }

    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Hands the pending records to the importer and turns new appends to the other file. Answers the records and
    /// the file they live in, to truncate once they are stored.
    pub fn take(&mut self) -> Option<(Vec<UsageRecord>, usize)> {
        if self.pending.is_empty() {
            return None;
        }
        let file = self.active;
        self.active = 1 - self.active;
        Some((std::mem::take(&mut self.pending), file))
    }

    /// Empties a file whose records are all stored.
    pub fn truncate(&mut self, file: usize) -> io::Result<()> {
        Self::truncate_file(&self.dir, file)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Empties a file whose records are all stored, without the journal itself: the importer calls it outside the
    /// journal's lock, so the engine's appends never wait on a file system's truncation (milliseconds at times).
    /// Appends go to the other file meanwhile, and every handle appends at the end of its file (`O_APPEND`),
    /// wherever that end is after a truncation.
    pub fn truncate_file(dir: &Path, file: usize) -> io::Result<()> {
        OpenOptions::new().write(true).open(dir.join(FILES[file]))?.set_len(0)
    }

    /// The records left in a journal directory by an earlier process. A torn last line (the process died in the
    /// middle of a write, before the record was reported) is skipped.
    pub fn replay(dir: &Path) -> io::Result<Vec<UsageRecord>> {
        let mut records = Vec::new();
        for name in FILES {
            let path = dir.join(name);
            let file = match File::open(&path) {
                Ok(file) => file,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            for line in BufReader::new(file).lines() {
                let line = line?;
                match serde_json::from_str::<UsageRecord>(&line) {
                    Ok(record) => records.push(record),
                    Err(e) => tracing::warn!(file = %path.display(), error = %e, "skipping a torn journal line"),
                }
            }
        }
        Ok(records)
    }

    /// Empties both files after `replay`'s records are stored.
    pub fn clear(dir: &Path) -> io::Result<()> {
        for name in FILES {
            let path = dir.join(name);
            if path.exists() {
                OpenOptions::new().write(true).open(&path)?.set_len(0)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str) -> UsageRecord {
        UsageRecord { id: id.into(), status: "ok".into(), credits_milli: 5, ..Default::default() }
    }

    #[test]
    fn appended_records_survive_a_reopen_until_truncated() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = UsageJournal::open(dir.path()).unwrap();
        journal.append(record("a")).unwrap();
        journal.append(record("b")).unwrap();
        let (batch, file) = journal.take().unwrap();
        assert_eq!(batch.len(), 2);
        journal.append(record("c")).unwrap();
        drop(journal);
        let replayed: Vec<String> = UsageJournal::replay(dir.path()).unwrap().into_iter().map(|r| r.id).collect();
        assert_eq!(replayed, ["a", "b", "c"]);
        let mut journal = UsageJournal::open(dir.path()).unwrap();
        journal.truncate(file).unwrap();
        let replayed: Vec<String> = UsageJournal::replay(dir.path()).unwrap().into_iter().map(|r| r.id).collect();
        assert_eq!(replayed, ["c"]);
    }

    #[test]
    fn a_torn_last_line_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = UsageJournal::open(dir.path()).unwrap();
        journal.append(record("a")).unwrap();
        journal.files[0].write_all(b"{\"id\":\"tor").unwrap();
        let replayed = UsageJournal::replay(dir.path()).unwrap();
        assert_eq!(replayed.len(), 1);
        UsageJournal::clear(dir.path()).unwrap();
        assert!(UsageJournal::replay(dir.path()).unwrap().is_empty());
    }
}
