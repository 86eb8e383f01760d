//! Keys' limits shared by several gateways, in Redis (`SharedLimits`). Each admission is one Lua script, so it is
//! atomic across every gateway: the key's minute window (requests and tokens, a fixed window that begins with the
//! key's first request, as in the embedded `Session`) and its concurrency leases (a sorted set of lease → expiry;
//! expired leases are dropped before counting). Time is Redis's own (`TIME`), so the gateways' clocks do not matter.
//! A key's two entries share a hash tag (`{key}`), so each script touches one slot of a Redis cluster.

use futures::future::BoxFuture;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::Script;
use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};
use std::time::Duration;
use switchyard_actors::engine::session::{Grant, Limits, Rejection, Return, SharedGrant, SharedLimits};

/// KEYS: the window (hash: start, requests, tokens), the leases (sorted set). ARGV: rpm, concurrency, tpm,
/// tokens, lease ('' for none), lease ms. Answers {code, requests, reset, start, ms left in the window}: code 0
/// admitted, 1 requests, 2 concurrency, 3 tokens.
const ADMIT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1])
local now_ms = now * 1000 + math.floor(tonumber(t[2]) / 1000)
local rpm, conc, tpm, tokens = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local w = redis.call('HMGET', KEYS[1], 'start', 'requests', 'tokens')
local start, requests, used = tonumber(w[1]) or 0, tonumber(w[2]) or 0, tonumber(w[3]) or 0
if now >= start + 60 or now < start then
  start, requests, used = now, 0, 0
end
local reset = start + 60
local left = reset * 1000 - now_ms
if requests >= rpm then return {1, requests, reset, start, left} end
if ARGV[5] ~= '' then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now_ms)
  if redis.call('ZCARD', KEYS[2]) >= conc then return {2, requests, reset, start, left} end
end
if used + tokens > tpm then return {3, requests, reset, start, left} end
requests = requests + 1
redis.call('HSET', KEYS[1], 'start', start, 'requests', requests, 'tokens', used + tokens)
redis.call('EXPIRE', KEYS[1], 120)
if ARGV[5] ~= '' then
  local lease_ms = tonumber(ARGV[6])
  redis.call('ZADD', KEYS[2], now_ms + lease_ms, ARGV[5])
  redis.call('PEXPIRE', KEYS[2], lease_ms * 2)
end
return {0, requests, reset, start, left}
";

/// KEYS: as ADMIT. ARGV: lease ('' for none), the window's start, the token correction ('' for none).
const RELEASE: &str = r"
if ARGV[1] ~= '' then redis.call('ZREM', KEYS[2], ARGV[1]) end
if ARGV[3] ~= '' and tonumber(redis.call('HGET', KEYS[1], 'start') or -1) == tonumber(ARGV[2]) then
  local tokens = (tonumber(redis.call('HGET', KEYS[1], 'tokens')) or 0) + tonumber(ARGV[3])
  if tokens < 0 then tokens = 0 end
  redis.call('HSET', KEYS[1], 'tokens', tokens)
end
return 0
";

/// KEYS: the leases of one key. ARGV: lease ms, then the leases to extend (those still there).
const RENEW: &str = r"
local t = redis.call('TIME')
local until_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[1])
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], 'XX', until_ms, ARGV[i]) end
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[1]) * 2)
return 0
";

/// KEYS: a browser session's spending count. ARGV: its cap, what it had spent when the count began, the amount to
/// hold, the count's life in ms. Answers 1 when held.
const BUDGET_HOLD: &str = r"
redis.call('SET', KEYS[1], ARGV[2], 'NX')
local used = tonumber(redis.call('GET', KEYS[1]))
redis.call('PEXPIRE', KEYS[1], ARGV[4])
if used + tonumber(ARGV[3]) > tonumber(ARGV[1]) then return 0 end
redis.call('INCRBY', KEYS[1], ARGV[3])
return 1
";

/// KEYS: a session's spending count. ARGV: what to add (a count that expired is not begun again here).
const BUDGET_ADJUST: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('INCRBY', KEYS[1], ARGV[1]) end
return 0
";

struct Scripts {
    admit: Script,
    release: Script,
    renew: Script,
    budget_hold: Script,
    budget_adjust: Script,
}

static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts {
    admit: Script::new(ADMIT),
    release: Script::new(RELEASE),
    renew: Script::new(RENEW),
    budget_hold: Script::new(BUDGET_HOLD),
    budget_adjust: Script::new(BUDGET_ADJUST),
});

/// Keys' limits in one Redis, shared by every gateway that names it.
pub struct RedisLimits {
    client: redis::Client,
    redis: ConnectionManager,
    prefix: String,
}

/// Hides a URL's password (for errors and logs).
fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        Ok(parsed) => parsed.to_string(),
        Err(_) => "(not a URL)".into(),
    }
}

impl RedisLimits {
    /// Connects to the Redis at `url` (`redis://` or `rediss://`) and checks it answers; keys' entries are named
    /// `<prefix>limits:{key}:…`.
    pub async fn connect(url: &str, prefix: &str) -> Result<Arc<RedisLimits>, String> {
        let shown = redact(url);
        if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
            return Err(format!("redis.url `{shown}` must begin with redis:// or rediss://"));
        }
        let client = redis::Client::open(url).map_err(|e| format!("redis.url `{shown}` is not usable: {e}"))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(3)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(2);
        let connect = client.get_connection_manager_with_config(config);
        let mut redis = tokio::time::timeout(Duration::from_secs(10), connect)
            .await
            .map_err(|_| format!("cannot reach Redis at {shown}: no answer in 10 s"))?
            .map_err(|e| format!("cannot reach Redis at {shown}: {e}"))?;
        let pong: String = redis::cmd("PING")
            .query_async(&mut redis)
            .await
            .map_err(|e| format!("cannot use Redis at {shown}: {e}"))?;
        tracing::info!(redis = %shown, answer = %pong, "keys' limits are shared in Redis");
        Ok(Arc::new(RedisLimits { client, redis, prefix: prefix.to_owned() }))
    }

    /// The channel the gateways on this Redis tell each other their changes on.
    pub fn notices(&self) -> super::notices::Notices {
        super::notices::Notices::new(self.client.clone(), self.redis.clone(), &self.prefix)
    }

    fn budget(&self, session: &str) -> String {
        format!("{}budget:{{{session}}}", self.prefix)
    }

    fn keys(&self, key: &str) -> (String, String) {
        (format!("{}limits:{{{key}}}:window", self.prefix), format!("{}limits:{{{key}}}:leases", self.prefix))
    }
}

fn grant(limits: Limits, requests: u64, reset: u64) -> Grant {
    let requests = u32::try_from(requests).unwrap_or(u32::MAX);
    Grant { limit: limits.requests_per_minute, remaining: limits.requests_per_minute.saturating_sub(requests), reset }
}

impl SharedLimits for RedisLimits {
    fn admit(
        &self,
        key: &str,
        limits: Limits,
        tokens: u64,
        lease: Option<&str>,
        lease_for: Duration,
    ) -> BoxFuture<'static, Result<SharedGrant, (Rejection, Duration)>> {
        let (window, leases) = self.keys(key);
        let mut redis = self.redis.clone();
        let lease = lease.unwrap_or_default().to_owned();
        Box::pin(async move {
            let answer: redis::RedisResult<(u8, u64, u64, u64, i64)> = SCRIPTS
                .admit
                .key(window)
                .key(leases)
                .arg(limits.requests_per_minute)
                .arg(limits.concurrent_requests)
                .arg(limits.tokens_per_minute)
                .arg(tokens)
                .arg(lease)
                .arg(lease_for.as_millis() as u64)
                .invoke_async(&mut redis)
                .await;
            let (code, requests, reset, start, left) = answer.map_err(|error| {
                tracing::warn!(%error, "shared limits: Redis did not answer an admission");
                (Rejection::Unreachable, Duration::ZERO)
            })?;
            let grant = grant(limits, requests, reset);
            let left = Duration::from_millis(left.clamp(0, 60_000) as u64);
            match code {
                0 => Ok(SharedGrant { grant, window: start }),
                1 => Err((Rejection::Requests { grant }, left)),
                2 => Err((Rejection::Concurrency { grant }, left)),
                _ => Err((Rejection::Tokens { grant }, left)),
            }
        })
    }

    fn release(&self, ended: Return) -> BoxFuture<'static, Result<(), String>> {
        let (window, leases) = self.keys(&ended.key);
        let mut redis = self.redis.clone();
        Box::pin(async move {
            let correction = ended.correction.map(|c| c.to_string()).unwrap_or_default();
            let _: i64 = SCRIPTS
                .release
                .key(window)
                .key(leases)
                .arg(ended.lease.unwrap_or_default())
                .arg(ended.window)
                .arg(correction)
                .invoke_async(&mut redis)
                .await
                .map_err(|e| e.to_string())?;
            Ok(())
        })
    }

    fn renew(&self, leases: Vec<(String, String)>, lease_for: Duration) -> BoxFuture<'static, Result<(), String>> {
        let mut by_key: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (key, lease) in leases {
            by_key.entry(self.keys(&key).1).or_default().push(lease);
        }
        let mut redis = self.redis.clone();
        Box::pin(async move {
            let mut pipe = redis::pipe();
            pipe.load_script(&SCRIPTS.renew).ignore();
            for (set, leases) in &by_key {
                let mut call = SCRIPTS.renew.key(set);
                call.arg(lease_for.as_millis() as u64);
                for lease in leases {
                    call.arg(lease);
                }
                pipe.invoke_script(&call).ignore();
            }
            pipe.query_async::<()>(&mut redis).await.map_err(|e| e.to_string())
        })
    }

    fn budget_hold(
        &self,
        session: &str,
        limit: i64,
        spent: i64,
        amount: i64,
        ttl: Duration,
    ) -> BoxFuture<'static, Result<bool, String>> {
        let (key, mut redis) = (self.budget(session), self.redis.clone());
        Box::pin(async move {
            let held: i64 = SCRIPTS
                .budget_hold
                .key(key)
                .arg(limit)
                .arg(spent)
                .arg(amount)
                .arg(ttl.as_millis().max(1) as u64)
                .invoke_async(&mut redis)
                .await
                .map_err(|e| e.to_string())?;
            Ok(held == 1)
        })
    }

    fn budget_adjust(&self, session: &str, delta: i64) -> BoxFuture<'static, Result<(), String>> {
        let (key, mut redis) = (self.budget(session), self.redis.clone());
        Box::pin(async move {
            let _: i64 =
                SCRIPTS.budget_adjust.key(key).arg(delta).invoke_async(&mut redis).await.map_err(|e| e.to_string())?;
            Ok(())
        })
    }
}
