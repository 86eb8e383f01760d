//! Media bytes in an S3-compatible object store (`media.url = "s3://bucket/prefix"`: AWS S3, MinIO, Cloudflare R2,
//! anything that speaks S3), so every gateway reads what any of them wrote. Objects are `<prefix>/objects/<key>`,
//! uploads in progress `<prefix>/staging/<id>`: an upload is written to staging (in parts of 8 MiB once it is
//! larger, S3's multipart upload) and published by a server-side copy, so a half-written upload is never visible
//! under its key. Credentials and the endpoint come from the standard AWS variables.

use super::{BlobStore, StagedWrite};
use futures::future::BoxFuture;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::path::Path;
use object_store::{ClientOptions, ObjectStore, PutPayload, RetryConfig};
use std::io;
use std::sync::Arc;
use std::time::Duration;

/// The AWS variables read (through the gateway's environment): credentials, region, endpoint.
const VARIABLES: [&str; 8] = [
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT",
    "AWS_VIRTUAL_HOSTED_STYLE_REQUEST",
];

/// Parts of a multipart upload (S3 wants at least 5 MiB but the last).
const PART: usize = 8 * 1024 * 1024;

pub struct S3BlobStore {
    store: Arc<dyn ObjectStore>,
    /// `prefix/` or empty.
    prefix: String,
}

fn to_io(e: object_store::Error) -> io::Error {
    match e {
        object_store::Error::NotFound { .. } => io::Error::new(io::ErrorKind::NotFound, e.to_string()),
        other => io::Error::other(other.to_string()),
    }
}

/// What an S3 refusal at start means, in a user's words.
fn explain(url: &str, error: &str) -> String {
    let reason = if error.contains("NoSuchBucket") {
        "the bucket does not exist (create it first)"
    } else if ["InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403", "401"]
        .iter()
        .any(|code| error.contains(code))
    {
        "the credentials were refused (check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, and the key's rights on the bucket)"
    } else {
        "it cannot be written"
    };
    format!("media.url `{url}`: {reason}: {error}")
}

impl S3BlobStore {
    /// The store at `url` (`s3://bucket` or `s3://bucket/prefix`), checked by a listing and by writing and deleting
    /// one small object: a missing bucket or refused credentials stop the gateway at start, with the reason.
    pub async fn open(url: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<S3BlobStore, String> {
        let parsed = url::Url::parse(url).map_err(|e| format!("media.url `{url}` is not a URL: {e}"))?;
        if parsed.scheme() != "s3" {
            return Err(format!("media.url `{url}` must be empty (files in the data directory) or s3://bucket/prefix"));
        }
        let bucket = parsed.host_str().filter(|b| !b.is_empty()).ok_or(format!("media.url `{url}` names no bucket"))?;
        let prefix = parsed.path().trim_matches('/');
        let mut builder = AmazonS3Builder::new().with_bucket_name(bucket).with_region("us-east-1");
        let mut client =
            ClientOptions::new().with_connect_timeout(Duration::from_secs(5)).with_timeout(Duration::from_secs(120));
        for name in VARIABLES {
            let Some(value) = env(name).filter(|v| !v.trim().is_empty()) else { continue };
            if name.starts_with("AWS_ENDPOINT") && value.starts_with("http://") {
                client = client.with_allow_http(true);
            }
            let key: AmazonS3ConfigKey = name.to_ascii_lowercase().parse().map_err(|e| format!("{name}: {e}"))?;
            builder = builder.with_config(key, value);
        }
        let retry = RetryConfig { max_retries: 3, retry_timeout: Duration::from_secs(20), ..RetryConfig::default() };
        let store = builder
            .with_retry(retry)
            .with_client_options(client)
            .build()
            .map_err(|e| format!("media.url `{url}` is not usable: {e}"))?;
        let blobs = S3BlobStore {
            store: Arc::new(store),
            prefix: if prefix.is_empty() { String::new() } else { format!("{prefix}/") },
        };
        // A listing first: a missing bucket answers NoSuchBucket to it on every server; then a write and a delete.
        let listing = Path::from(format!("{}objects", blobs.prefix));
        blobs.store.list_with_delimiter(Some(&listing)).await.map_err(|e| explain(url, &e.to_string()))?;
        let probe = Path::from(format!("{}probe/{}", blobs.prefix, crate::auth::new_id("probe")));
        blobs
            .store
            .put(&probe, PutPayload::from_static(b"switchyard"))
            .await
            .map_err(|e| explain(url, &e.to_string()))?;
        blobs.store.delete(&probe).await.map_err(|e| explain(url, &e.to_string()))?;
        tracing::info!(media = %url, "media are kept in S3");
        Ok(blobs)
    }

    /// The keys under `area` (`objects` or `staging`), for checks.
    pub async fn keys(&self, area: &str) -> io::Result<Vec<String>> {
        use futures::TryStreamExt;
        let under = Path::from(format!("{}{area}", self.prefix));
        let listed: Vec<_> = self.store.list(Some(&under)).try_collect().await.map_err(to_io)?;
        Ok(listed.into_iter().map(|meta| meta.location.to_string()).collect())
    }

    fn path(&self, area: &str, key: &str) -> io::Result<Path> {
        Ok(Path::from(format!("{}{area}/{}", self.prefix, super::safe(key)?)))
    }
}

/// Only ever aborted before its shutdown began (`MediaWriter` takes it out to shut it down), when object_store's
/// abort is defined: a multipart upload begun is aborted, a buffer not yet sent is dropped.
impl StagedWrite for object_store::buffered::BufWriter {
    fn abort(self: Box<Self>) -> BoxFuture<'static, io::Result<()>> {
        let mut writer = *self;
        Box::pin(async move { writer.abort().await.map_err(to_io) })
    }
}

impl BlobStore for S3BlobStore {
    fn stage(&self, staging: &str) -> BoxFuture<'static, io::Result<Box<dyn StagedWrite>>> {
        let (store, path) = (self.store.clone(), self.path("staging", staging));
        Box::pin(async move {
            let writer = object_store::buffered::BufWriter::with_capacity(store, path?, PART);
            Ok(Box::new(writer) as Box<dyn StagedWrite>)
        })
    }

    fn publish(&self, staging: &str, key: &str) -> BoxFuture<'static, io::Result<()>> {
        let store = self.store.clone();
        let paths = self.path("staging", staging).and_then(|from| Ok((from, self.path("objects", key)?)));
        Box::pin(async move {
            let (from, to) = paths?;
            store.rename(&from, &to).await.map_err(to_io)
        })
    }

    fn discard(&self, staging: &str) -> BoxFuture<'static, io::Result<()>> {
        let (store, path) = (self.store.clone(), self.path("staging", staging));
        Box::pin(async move {
            match store.delete(&path?).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(to_io(e)),
            }
        })
    }

    fn read(&self, key: &str) -> BoxFuture<'static, io::Result<Vec<u8>>> {
        let (store, path) = (self.store.clone(), self.path("objects", key));
        Box::pin(async move {
            let object = store.get(&path?).await.map_err(to_io)?;
            Ok(object.bytes().await.map_err(to_io)?.to_vec())
        })
    }
}
