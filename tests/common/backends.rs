//! The shared backends `make test` starts (`.ci/with-backends`): a PostgreSQL server and a Redis server. A test
//! takes a database (or a key prefix) of its own. Without them (a bare `cargo test`), a test that needs one prints
//! SKIPPED and returns; under `make test` (SWITCHYARD_TEST_BACKENDS=1) a missing server fails the test instead.

/// True when the servers must be there.
pub fn required() -> bool {
    std::env::var("SWITCHYARD_TEST_BACKENDS").is_ok_and(|v| v == "1")
}

fn url_of(variable: &str, what: &str, test: &str) -> Option<String> {
    match std::env::var(variable) {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(!required(), "{variable} is not set but SWITCHYARD_TEST_BACKENDS=1: {what} was not started");
            eprintln!("SKIPPED {test}: no {what} ({variable} unset; `make test` starts one)");
            None
        }
    }
}

/// The server's URL as `make test` gave it (a superuser on its `postgres` database), if any.
pub fn postgres_admin_url() -> Option<String> {
    std::env::var("SWITCHYARD_TEST_POSTGRES_URL").ok().filter(|u| !u.is_empty())
}

/// A new, empty database for one test: its URL.
pub async fn postgres_database(test: &str) -> Option<String> {
    let admin = url_of("SWITCHYARD_TEST_POSTGRES_URL", "PostgreSQL", test)?;
    let slug: String =
        test.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '_').take(30).collect::<String>().to_lowercase();
    let name = format!("t_{slug}_{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff);
    let pool = sqlx::PgPool::connect(&admin).await.unwrap_or_else(|e| panic!("PostgreSQL at {admin}: {e}"));
    sqlx::raw_sql(&format!("CREATE DATABASE {name}")).execute(&pool).await.unwrap_or_else(|e| panic!("{e}"));
    pool.close().await;
    let (base, _) = admin.rsplit_once('/').unwrap_or((admin.as_str(), ""));
    Some(format!("{base}/{name}"))
}

/// The Redis server's URL and a key prefix of the test's own.
pub fn redis_url(test: &str) -> Option<(String, String)> {
    let url = url_of("SWITCHYARD_TEST_REDIS_URL", "Redis", test)?;
    Some((url, format!("t:{test}:{:016x}:", rand::random::<u64>())))
}

/// The S3-compatible server `make test` starts: its endpoint, key pair and bucket, and a prefix of the test's own.
pub struct S3 {
    pub endpoint: String,
    pub access_key: String,
    pub secret_key: String,
    pub bucket: String,
    pub prefix: String,
}

impl S3 {
    /// `media.url` for the test's prefix in the bucket.
    pub fn url(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix)
    }

    /// The AWS variables a gateway reads to reach it.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL", self.endpoint.as_str()),
            ("AWS_ACCESS_KEY_ID", self.access_key.as_str()),
            ("AWS_SECRET_ACCESS_KEY", self.secret_key.as_str()),
            ("AWS_REGION", "us-east-1"),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect()
    }
}

pub fn s3(test: &str) -> Option<S3> {
    let endpoint = url_of("SWITCHYARD_TEST_S3_ENDPOINT", "S3 server", test)?;
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set beside the S3 endpoint"));
    Some(S3 {
        endpoint,
        access_key: var("SWITCHYARD_TEST_S3_ACCESS_KEY"),
        secret_key: var("SWITCHYARD_TEST_S3_SECRET_KEY"),
        bucket: var("SWITCHYARD_TEST_S3_BUCKET"),
        prefix: format!("t-{test}-{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff),
    })
}
