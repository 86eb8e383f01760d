//! The media store: uploads and generated outputs, per workspace. Blobs live behind `BlobStore` (a local directory
//! by default; an S3-compatible object store with `media.url`, `s3.rs`), their metadata in the database. An
//! upload is written to a staging key and only published, by rename, once complete and checked: a half-written
//! upload is never visible.

mod s3;

pub use s3::S3BlobStore;

use futures::future::BoxFuture;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::io::AsyncWrite;

/// A staged object being written (what `BlobStore::stage` opens).
pub trait StagedWrite: AsyncWrite + Send + Unpin {
    /// Gives the write up before it is shut down: an S3 multipart upload under way is aborted, so its parts are
    /// not kept (invisible, and billed) by the bucket.
    fn abort(self: Box<Self>) -> BoxFuture<'static, io::Result<()>>;
}

impl StagedWrite for tokio::fs::File {
    fn abort(self: Box<Self>) -> BoxFuture<'static, io::Result<()>> {
        Box::pin(async { Ok(()) })
    }
}

pub trait BlobStore: Send + Sync + 'static {
    /// Opens a staged object for writing; nothing under `key`s is visible until `publish`.
    fn stage(&self, staging: &str) -> BoxFuture<'static, io::Result<Box<dyn StagedWrite>>>;
    /// Makes a staged object visible under `key`, atomically.
    fn publish(&self, staging: &str, key: &str) -> BoxFuture<'static, io::Result<()>>;
    fn discard(&self, staging: &str) -> BoxFuture<'static, io::Result<()>>;
    fn read(&self, key: &str) -> BoxFuture<'static, io::Result<Vec<u8>>>;
}

/// Blobs as files under a directory: `objects/<key>` and `staging/<id>`.
pub struct LocalBlobStore {
    root: PathBuf,
}

/// Keys are built by the gateway from generated ids; anything else is refused before it touches a path.
fn safe(key: &str) -> io::Result<&str> {
    let ok = !key.is_empty()
        && key.split('/').all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
    if ok {
        Ok(key)
    } else {
        Err(io::Error::new(io::ErrorKind::InvalidInput, "unsafe media key"))
    }
}

impl LocalBlobStore {
    pub fn new(root: PathBuf) -> io::Result<Self> {
        std::fs::create_dir_all(root.join("objects"))?;
        std::fs::create_dir_all(root.join("staging"))?;
        Ok(LocalBlobStore { root })
    }

    fn staging_path(&self, staging: &str) -> io::Result<PathBuf> {
        Ok(self.root.join("staging").join(safe(staging)?))
    }

    fn object_path(&self, key: &str) -> io::Result<PathBuf> {
        Ok(self.root.join("objects").join(safe(key)?))
    }
}

impl BlobStore for LocalBlobStore {
    fn stage(&self, staging: &str) -> BoxFuture<'static, io::Result<Box<dyn StagedWrite>>> {
        let path = self.staging_path(staging);
        Box::pin(async move {
            let file = tokio::fs::File::create(path?).await?;
            Ok(Box::new(file) as Box<dyn StagedWrite>)
        })
    }

    fn publish(&self, staging: &str, key: &str) -> BoxFuture<'static, io::Result<()>> {
        let paths = self.staging_path(staging).and_then(|from| Ok((from, self.object_path(key)?)));
        Box::pin(async move {
            let (from, to) = paths?;
            if let Some(parent) = to.parent() {
                tokio::fs::create_dir_all(parent).await?;
            }
            tokio::fs::rename(from, to).await
        })
    }

    fn discard(&self, staging: &str) -> BoxFuture<'static, io::Result<()>> {
        let path = self.staging_path(staging);
        Box::pin(async move {
            match tokio::fs::remove_file(path?).await {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            }
        })
    }

    fn read(&self, key: &str) -> BoxFuture<'static, io::Result<Vec<u8>>> {
        let path = self.object_path(key);
        Box::pin(async move { tokio::fs::read(path?).await })
    }
}

/// Bytes being written as they arrive (an upload's body, audio streamed from upstream). They stay in staging,
/// invisible, until published; dropped or `abort`ed before that, the write is given up (an S3 multipart upload
/// aborted) and the staged object removed, in the background when dropped.
pub struct MediaWriter {
    store: std::sync::Arc<dyn BlobStore>,
    workspace_id: String,
    staging: String,
    file: Option<Box<dyn StagedWrite>>,
    hasher: sha2::Sha256,
    bytes: u64,
}

/// A published output: its `media_ref`, size and SHA-256.
#[derive(Clone, Debug)]
pub struct Stored {
    pub media_ref: String,
    pub bytes: u64,
    pub sha256: String,
}

impl MediaWriter {
    pub async fn create(blobs: &Arc<dyn BlobStore>, workspace_id: &str) -> io::Result<MediaWriter> {
        use sha2::Digest;
        let staging = crate::auth::new_id("stg");
        let file = blobs.stage(&staging).await?;
        Ok(MediaWriter {
            store: blobs.clone(),
            workspace_id: workspace_id.to_owned(),
            staging,
            file: Some(file),
            hasher: sha2::Sha256::new(),
            bytes: 0,
        })
    }

    pub async fn write(&mut self, chunk: &[u8]) -> io::Result<()> {
        use sha2::Digest;
        use tokio::io::AsyncWriteExt;
        let file = self.file.as_mut().ok_or_else(|| io::Error::other("media writer already closed"))?;
        file.write_all(chunk).await?;
        self.hasher.update(chunk);
        self.bytes += chunk.len() as u64;
        Ok(())
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The staged object's name (unique: an upload keeps it as its object's).
    pub fn staging(&self) -> &str {
        &self.staging
    }

    /// Writes the last bytes and makes the staged object visible under `object`; its SHA-256 (hex). On failure
    /// the staged object is removed.
    pub async fn publish(&mut self, object: &str) -> io::Result<String> {
        use sha2::Digest;
        use tokio::io::AsyncWriteExt;
        let mut file = self.file.take().ok_or_else(|| io::Error::other("media writer already closed"))?;
        let closed = async {
            file.flush().await?;
            file.shutdown().await
        }
        .await;
        drop(file);
        if let Err(e) = closed {
            self.discard_now().await;
            return Err(e);
        }
        if let Err(e) = self.store.publish(&self.staging, object).await {
            self.discard_now().await;
            return Err(e);
        }
        // Published: nothing is left in staging for `Drop` to remove.
        self.staging.clear();
        Ok(hex::encode(std::mem::take(&mut self.hasher).finalize()))
    }

    /// Publishes the object and records it as media of the workspace.
    pub async fn finish(
        mut self,
        rows: &crate::store::Store,
        filename: &str,
        content_type: &str,
    ) -> io::Result<Stored> {
        let media_ref = crate::auth::new_id("med");
        let object = format!("{}/{media_ref}", self.workspace_id);
        let sha256 = self.publish(&object).await?;
        let row = crate::store::MediaRow {
            id: media_ref.clone(),
            workspace_id: self.workspace_id.clone(),
            filename: filename.to_owned(),
            content_type: content_type.to_owned(),
            bytes: self.bytes,
            sha256: sha256.clone(),
            object,
            created_at: crate::clock::now_unix(),
        };
        rows.insert_media(&row).await.map_err(io::Error::other)?;
        Ok(Stored { media_ref, bytes: self.bytes, sha256 })
    }

    /// Throws the staged bytes away.
    pub async fn abort(mut self) {
        self.discard_now().await;
    }

    async fn discard_now(&mut self) {
        if let Some(file) = self.file.take() {
            let _ = file.abort().await;
        }
        if !self.staging.is_empty() {
            let _ = self.store.discard(&self.staging).await;
            self.staging.clear();
        }
    }
}

impl Drop for MediaWriter {
    fn drop(&mut self) {
        // Dropped part way (the client left): the write is given up and the staged object removed in the background.
        if !self.staging.is_empty() {
            let file = self.file.take();
            let discard = self.store.discard(&self.staging);
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    if let Some(file) = file {
                        let _ = file.abort().await;
                    }
                    let _ = discard.await;
                });
            }
        }
    }
}

/// Stores a generated output as media of `workspace_id`.
pub async fn store_generated(
    blobs: &Arc<dyn BlobStore>,
    rows: &crate::store::Store,
    workspace_id: &str,
    filename: &str,
    content_type: &str,
    bytes: &[u8],
) -> io::Result<Stored> {
    let mut writer = MediaWriter::create(blobs, workspace_id).await?;
    writer.write(bytes).await?;
    writer.finish(rows, filename, content_type).await
}

/// The content types the gateway accepts, each recognised from its first bytes.
pub const ACCEPTED: &[&str] = &[
    "image/png",
    "image/jpeg",
    "image/gif",
    "image/webp",
    "audio/wav",
    "audio/mpeg",
    "audio/ogg",
    "audio/flac",
    "audio/mp4",
    "application/pdf",
    "text/plain",
    "text/markdown",
    "text/csv",
    "application/json",
];

/// The canonical name of a declared content type (`audio/x-wav` is `audio/wav`), if it is accepted.
pub fn canonical(declared: &str) -> Option<&'static str> {
    let essence = declared.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    let name = match essence.as_str() {
        "audio/x-wav" | "audio/wave" | "audio/vnd.wave" => "audio/wav",
        "audio/mp3" | "audio/mpeg3" => "audio/mpeg",
        "image/jpg" => "image/jpeg",
        "audio/x-m4a" | "audio/m4a" => "audio/mp4",
        "audio/x-flac" => "audio/flac",
        other => other,
    };
    ACCEPTED.iter().copied().find(|t| *t == name)
}

/// What the bytes are, from their signature. Text is UTF-8 without NUL bytes.
pub fn sniff(head: &[u8]) -> Option<&'static str> {
    let starts = |magic: &[u8]| head.starts_with(magic);
    if starts(b"\x89PNG\r\n\x1a\n") {
        return Some("image/png");
    }
    if starts(&[0xFF, 0xD8, 0xFF]) {
        return Some("image/jpeg");
    }
    if starts(b"GIF87a") || starts(b"GIF89a") {
        return Some("image/gif");
    }
    if starts(b"RIFF") && head.len() >= 12 {
        return match &head[8..12] {
            b"WEBP" => Some("image/webp"),
            b"WAVE" => Some("audio/wav"),
            _ => None,
        };
    }
    if starts(b"OggS") {
        return Some("audio/ogg");
    }
    if starts(b"fLaC") {
        return Some("audio/flac");
    }
    if starts(b"%PDF-") {
        return Some("application/pdf");
    }
    if head.len() >= 12 && &head[4..8] == b"ftyp" {
        return matches!(&head[8..12], b"M4A " | b"M4B " | b"mp42" | b"isom").then_some("audio/mp4");
    }
    if starts(b"ID3") || (head.len() >= 2 && head[0] == 0xFF && head[1] & 0xE0 == 0xE0) {
        return Some("audio/mpeg");
    }
    // A cut in the middle of a multi-byte character at the end of the sample is still text.
    let text = match std::str::from_utf8(head) {
        Ok(_) => true,
        Err(e) => e.error_len().is_none(),
    };
    (text && !head.is_empty() && !head.contains(&0)).then_some("text/plain")
}

/// Whether bytes recognised as `sniffed` may be stored as `declared` (canonical names).
pub fn agrees(declared: &str, sniffed: &str) -> bool {
    declared == sniffed
        || (sniffed == "text/plain" && matches!(declared, "text/markdown" | "text/csv" | "application/json"))
}

/// A filename is a label only (blobs are stored by id), but one that looks like a path is refused.
pub fn check_filename(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.chars().count() > 255 {
        return Err("must be 1 to 255 characters");
    }
    if name.contains(['/', '\\']) || name == "." || name == ".." || name.chars().any(char::is_control) {
        return Err("must be a plain file name, without path separators or control characters");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_formats_by_their_bytes() {
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\n...."), Some("image/png"));
        assert_eq!(sniff(b"RIFF\x00\x00\x00\x00WAVEfmt "), Some("audio/wav"));
        assert_eq!(sniff(b"ID3\x04\x00"), Some("audio/mpeg"));
        assert_eq!(sniff(&[0xFF, 0xFB, 0x90, 0x00]), Some("audio/mpeg"));
        assert_eq!(sniff(b"%PDF-1.7"), Some("application/pdf"));
        assert_eq!(sniff(b"hello, world"), Some("text/plain"));
        assert_eq!(sniff(&[0, 1, 2, 3]), None);
        assert_eq!(sniff("caf\u{e9}".as_bytes()), Some("text/plain"));
    }

    #[test]
    fn declared_types_are_canonical_and_must_agree() {
        assert_eq!(canonical("audio/x-wav"), Some("audio/wav"));
        assert_eq!(canonical("Image/JPG; charset=binary"), Some("image/jpeg"));
        assert_eq!(canonical("application/x-msdownload"), None);
        assert!(agrees("text/csv", "text/plain"));
        assert!(!agrees("image/png", "text/plain"));
    }

    #[test]
    fn filenames_that_look_like_paths_are_refused() {
        assert!(check_filename("voice note.mp3").is_ok());
        for bad in ["", "../etc/passwd", "a/b", "a\\\\b", "..", "x\\ny"] {
            assert!(check_filename(bad).is_err(), "{bad}");
        }
        assert!(safe("ws_1/med_2").is_ok());
        assert!(safe("../x").is_err());
        assert!(safe("ws/").is_err());
    }
}
