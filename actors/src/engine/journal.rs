//! The usage journal: where a settlement is committed before its response completes. Appending a line to a file
//! on the ledger's own thread costs microseconds, where a SQLite commit costs a round trip to SQLite's thread; the
//! durability is the same as SQLite's WAL with `synchronous = NORMAL` (safe when the process dies; an fsync
//! policy is the operator's choice of file system). A background importer group-commits the journal into the
//! store and truncates it; on start, whatever is left is imported again (the store ignores records it has).
//!
//! Two files take turns: while one batch is imported from one, new records go to the other, so the file being
//! truncated is never the one being written.
//!
//! The importer runs at the lowest priority, so a machine busy with other work can starve it for minutes. The
//! records it has not taken wait in memory up to `HELD_MAX`; past that the journal lets go of them and the importer
//! reads that file back a chunk at a time, so memory stays bounded however far behind it falls.

use super::ledger::UsageRecord;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

const FILES: [&str; 2] = ["usage.journal.0", "usage.journal.1"];

/// The most records held in memory for the importer (about 500 bytes each).
pub const HELD_MAX: usize = 20_000;

/// What the importer takes: the records, or the file to read them back from when there were too many to hold.
#[derive(Debug)]
pub enum Batch {
    Held(Vec<UsageRecord>),
    InFile,
}

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
    /// Past `HELD_MAX`: `pending` is let go and the active file holds the batch.
    spilled: bool,
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
        Ok(UsageJournal {
            dir: dir.to_owned(),
            active: 0,
            files,
            pending: Vec::new(),
            spilled: false,
            appended: 0,
            line: Vec::new(),
        })
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
        if self.pending.len() >= HELD_MAX {
            self.pending = Vec::new();
            self.spilled = true;
        }
        if !self.spilled {
            self.pending.push(record);
        }
        self.appended += 1;
        Ok(())
    }

    pub fn appended(&self) -> u64 {
        self.appended
    }

    pub fn has_pending(&self) -> bool {
        self.spilled || !self.pending.is_empty()
    }

    /// Hands the pending records to the importer and turns new appends to the other file. Answers the records (or
    /// that they are to be read back) and the file they live in, to truncate once they are stored.
    pub fn take(&mut self) -> Option<(Batch, usize)> {
        if !self.has_pending() {
            return None;
        }
        let file = self.active;
        self.active = 1 - self.active;
        let batch = if std::mem::take(&mut self.spilled) {
            Batch::InFile
        } else {
            Batch::Held(std::mem::take(&mut self.pending))
        };
        Some((batch, file))
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
        for file in 0..FILES.len() {
            if let Some(mut reader) = FileChunks::open(dir, file)? {
                records.extend(reader.next_chunk(usize::MAX)?);
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

/// A journal file's records, read back a chunk at a time.
pub struct FileChunks {
    path: PathBuf,
    lines: io::Lines<BufReader<File>>,
}

impl FileChunks {
    /// The reader of journal file `file` in `dir`; `None` when there is no such file.
    pub fn open(dir: &Path, file: usize) -> io::Result<Option<Self>> {
        let path = dir.join(FILES[file]);
        match File::open(&path) {
            Ok(opened) => Ok(Some(FileChunks { path, lines: BufReader::new(opened).lines() })),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Up to `most` records; none at the end. A torn line is skipped.
    pub fn next_chunk(&mut self, most: usize) -> io::Result<Vec<UsageRecord>> {
        let mut records = Vec::new();
        while records.len() < most {
            let Some(line) = self.lines.next() else { break };
            match serde_json::from_str::<UsageRecord>(&line?) {
                Ok(record) => records.push(record),
                Err(e) => tracing::warn!(file = %self.path.display(), error = %e, "skipping a torn journal line"),
            }
        }
        Ok(records)
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
        assert!(matches!(batch, Batch::Held(records) if records.len() == 2));
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

    #[test]
    fn past_held_max_the_batch_is_read_back_from_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = UsageJournal::open(dir.path()).unwrap();
        for i in 0..HELD_MAX + 3 {
            journal.append(record(&i.to_string())).unwrap();
        }
        assert!(journal.pending.is_empty(), "what is held is let go");
        let (batch, file) = journal.take().unwrap();
        assert!(matches!(batch, Batch::InFile));
        journal.append(record("next")).unwrap();
        let mut reader = FileChunks::open(dir.path(), file).unwrap().unwrap();
        let mut ids = Vec::new();
        loop {
            let chunk = reader.next_chunk(7_000).unwrap();
            if chunk.is_empty() {
                break;
            }
            assert!(chunk.len() <= 7_000);
            ids.extend(chunk.into_iter().map(|r| r.id));
        }
        assert_eq!(ids.len(), HELD_MAX + 3);
        assert_eq!(ids.last().map(String::as_str), Some((HELD_MAX + 2).to_string().as_str()));
        let (batch, _) = journal.take().unwrap();
        assert!(matches!(batch, Batch::Held(records) if records.len() == 1), "the next batch is held again");
    }
}
