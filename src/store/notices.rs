//! Changes one gateway makes that the others must apply at once, told through Redis (`PUBLISH` on
//! `<prefix>notices`): a browser session token revoked, and the keys changed (made, revoked, given other models, a
//! workspace's plan). Each gateway follows the channel and applies what it hears; the database stays the record, and
//! every gateway still reads it on its own every `database.poll_secs`, which covers a notice lost while a gateway
//! was cut off from Redis.

use futures::StreamExt;
use redis::aio::ConnectionManager;
use std::time::Duration;

/// A change another gateway must apply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notice {
    /// A session token revoked before it expires (at `expires_at`, Unix seconds).
    SessionRevoked { id: String, expires_at: i64 },
    /// Keys made, revoked or changed, or a workspace's plan: read them again.
    KeysChanged,
}

impl Notice {
    fn encode(&self) -> String {
        match self {
            Notice::SessionRevoked { id, expires_at } => format!("session-revoked {id} {expires_at}"),
            Notice::KeysChanged => "keys-changed".into(),
        }
    }

    /// A notice as sent; `None` for anything else (a newer gateway's notice, noise on the channel).
    pub fn decode(text: &str) -> Option<Notice> {
        let mut words = text.split(' ');
        match (words.next()?, words.next(), words.next(), words.next()) {
            ("session-revoked", Some(id), Some(expires_at), None) if !id.is_empty() => {
                Some(Notice::SessionRevoked { id: id.to_owned(), expires_at: expires_at.parse().ok()? })
            }
            ("keys-changed", None, None, None) => Some(Notice::KeysChanged),
            _ => None,
        }
    }
}

/// The channel the gateways on one Redis (and prefix) tell each other their changes on.
#[derive(Clone)]
pub struct Notices {
    client: redis::Client,
    redis: ConnectionManager,
    channel: String,
}

impl Notices {
    pub(super) fn new(client: redis::Client, redis: ConnectionManager, prefix: &str) -> Notices {
        Notices { client, redis, channel: format!("{prefix}notices") }
    }

    /// Tells the other gateways, in the background (a notice that cannot be sent is logged: they read the change
    /// from the database within `database.poll_secs`).
    pub fn publish(&self, notice: &Notice) {
        let (mut redis, channel, text) = (self.redis.clone(), self.channel.clone(), notice.encode());
        let sent = async move {
            redis::cmd("PUBLISH")
                .arg(&channel)
                .arg(&text)
                .query_async::<i64>(&mut redis)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        switchyard_actors::engine::supervise::spawn_logged(
            "telling the other gateways of a change",
            "they read it from the database",
            sent,
        );
    }

    /// Follows the channel for as long as the gateway runs, calling `apply` with each notice heard (its own too:
    /// applying a change twice does nothing). A lost connection is made again after a second. Each time the
    /// subscription is made, `apply` also hears `KeysChanged`, so that the gateway reads what it may have missed
    /// while it was not listening (at start, or cut off).
    pub fn follow(&self, apply: impl Fn(Notice) + Send + Sync + 'static) {
        let (client, channel) = (self.client.clone(), self.channel.clone());
        tokio::spawn(async move {
            loop {
                match listen(&client, &channel, &apply).await {
                    Ok(()) => tracing::warn!("notices: the subscription ended; subscribing again"),
                    Err(error) => tracing::warn!(%error, "notices: cannot follow the other gateways' changes"),
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }
}

/// Subscribes and applies notices until the connection ends.
async fn listen(client: &redis::Client, channel: &str, apply: &impl Fn(Notice)) -> redis::RedisResult<()> {
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(channel).await?;
    apply(Notice::KeysChanged);
    let mut messages = pubsub.on_message();
    while let Some(message) = messages.next().await {
        let text: String = message.get_payload().unwrap_or_default();
        match Notice::decode(&text) {
            Some(notice) => apply(notice),
            None => tracing::debug!(%text, "notices: not a notice this gateway knows"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::Notice;

    #[test]
    fn notices_round_trip_and_anything_else_is_ignored() {
        for notice in [Notice::SessionRevoked { id: "ses_01ab".into(), expires_at: 1_900_000_000 }, Notice::KeysChanged]
        {
            assert_eq!(Notice::decode(&notice.encode()), Some(notice));
        }
        for noise in ["", "keys-changed now", "session-revoked", "session-revoked ses_1", "session-revoked ses_1 soon"]
        {
            assert_eq!(Notice::decode(noise), None, "{noise}");
        }
    }
}
