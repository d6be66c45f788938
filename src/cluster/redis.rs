//! Redis as the store between replicas: events over pub/sub, current cooldowns as keys that expire.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, RedisError};
use tokio::task::JoinHandle;

use super::{ClusterEvent, ClusterLink, ClusterPolicy, LeaseDue};
use crate::request::ModelId;

/// How long a connection attempt or one command may take before the store counts as unreachable.
const STORE_TIMEOUT: Duration = Duration::from_secs(1);
/// The longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How long the driver sleeps when no probe lease is coming up (events wake it sooner).
const IDLE: Duration = Duration::from_secs(60);

/// Runs a [`ClusterLink`] over Redis until dropped.
///
/// Each event is published on the channel `{namespace}:events`; a throttle also sets
/// `{namespace}:cooldown:{model}` to expire with the cooldown, and a clearing success or a reset
/// deletes such keys, so a replica that starts late or reconnects catches up from the keys that
/// still exist. Probe leases are `{namespace}:probe:{model}`, taken with `SET NX PX` and deleted by
/// the probe's answer (a throttle or a clearing success). Replicas that share a namespace share their
/// throttle state; give each chain its own.
///
/// Redis being down, slow or partitioned never fails or slows a request: each replica runs on its
/// local state (one warning per outage), the driver reconnects with a backoff up to 5 s, catches up
/// from the keys when Redis is back, then publishes its own news from the outage (the latest event
/// per model; a throttle with what is left of its cooldown). Every connection and command has a 1 s
/// timeout.
///
/// ```no_run
/// use tower_model_fallback::cluster::{Clustered, redis::RedisCluster};
/// use tower_model_fallback::{FallbackLayer, ModelChain, policy::AdaptiveCooldown};
///
/// # async fn example() -> Result<(), tower::BoxError> {
/// let chain = ModelChain::new(["primary", "fallback"])?;
/// let (policy, link) = Clustered::new(AdaptiveCooldown::new(chain));
/// let _cluster = RedisCluster::spawn(link, "redis://127.0.0.1:6379", "my-service:claude")?;
/// let layer = FallbackLayer::new(policy);
/// # Ok(())
/// # }
/// ```
pub struct RedisCluster {
    task: JoinHandle<()>,
}

impl fmt::Debug for RedisCluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisCluster").finish_non_exhaustive()
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The keys and channel of one namespace.
#[derive(Clone, Debug)]
struct Names {
    channel: String,
    cooldown_prefix: String,
    probe_prefix: String,
    origin: u64,
}

impl Names {
    fn cooldown_key(&self, model: &ModelId) -> String {
        format!("{}{}", self.cooldown_prefix, model.as_str())
    }

    fn probe_key(&self, model: &ModelId) -> String {
        format!("{}{}", self.probe_prefix, model.as_str())
    }
}

impl RedisCluster {
    /// Starts the driver on the current tokio runtime. Fails only for a malformed `url`; an
    /// unreachable server is retried in the background.
    pub fn spawn<P: ClusterPolicy>(
        link: ClusterLink<P>,
        url: &str,
        namespace: &str,
    ) -> Result<Self, RedisError> {
        let client = Client::open(url)?;
        let names = Names {
            channel: format!("{namespace}:events"),
            cooldown_prefix: format!("{namespace}:cooldown:"),
            probe_prefix: format!("{namespace}:probe:"),
            origin: origin_id(),
        };
        Ok(RedisCluster {
            task: tokio::spawn(run(link, client, names)),
        })
    }
}

/// An id for this replica's events, so it skips its own: the clock and the process id, mixed.
fn origin_id() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64;
    let mixed = nanos ^ (u64::from(std::process::id()) << 32);
    // A cheap bit mixer, so two replicas started in the same nanosecond still differ by pid.
    mixed.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(29) | 1
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// `1|origin|sent_ms|kind|cooldown_ms|model`: the model last, as ids may hold any other character.
fn encode(event: &ClusterEvent, origin: u64) -> String {
    let (kind, cooldown, model) = match event {
        ClusterEvent::Throttled { model, cooldown } => ('T', millis(*cooldown), model.as_str()),
        ClusterEvent::Cleared { model } => ('C', 0, model.as_str()),
        ClusterEvent::Reset => ('R', 0, ""),
    };
    format!("1|{origin}|{}|{kind}|{cooldown}|{model}", now_ms())
}

/// The event, its origin and when it was sent; `None` for anything else.
fn decode(payload: &str) -> Option<(ClusterEvent, u64, u64)> {
    let mut fields = payload.splitn(6, '|');
    if fields.next()? != "1" {
        return None;
    }
    let origin = fields.next()?.parse().ok()?;
    let sent_ms = fields.next()?.parse().ok()?;
    let kind = fields.next()?;
    let cooldown = Duration::from_millis(fields.next()?.parse().ok()?);
    let model = fields.next()?;
    let event = match kind {
        "T" if !model.is_empty() => ClusterEvent::Throttled {
            model: ModelId::new(model),
            cooldown,
        },
        "C" if !model.is_empty() => ClusterEvent::Cleared {
            model: ModelId::new(model),
        },
        "R" => ClusterEvent::Reset,
        _ => return None,
    };
    Some((event, origin, sent_ms))
}

async fn timed<T>(
    future: impl Future<Output = Result<T, RedisError>>,
) -> Result<T, Box<dyn std::error::Error + Send + Sync>> {
    Ok(tokio::time::timeout(STORE_TIMEOUT, future).await??)
}

/// Publishes `event` and keeps the cooldown keys in step with it.
async fn publish(
    connection: &mut MultiplexedConnection,
    names: &Names,
    chain: &[ModelId],
    event: &ClusterEvent,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    // MULTI/EXEC: the event and the keys change together, so a replica catching up from the keys
    // never sees a cooldown whose event was lost, or the reverse.
    let mut pipe = redis::pipe();
    pipe.atomic();
    pipe.cmd("PUBLISH")
        .arg(&names.channel)
        .arg(encode(event, names.origin))
        .ignore();
    match event {
        // A throttle or a clearing success is also the answer of any probe running on the model:
        // its lease ends, so the next reopening is contested afresh.
        ClusterEvent::Throttled { model, cooldown } => {
            if !cooldown.is_zero() {
                pipe.cmd("SET")
                    .arg(names.cooldown_key(model))
                    .arg(millis(*cooldown))
                    .arg("PX")
                    .arg(millis(*cooldown).max(1))
                    .ignore();
            }
            pipe.cmd("DEL").arg(names.probe_key(model)).ignore();
        }
        ClusterEvent::Cleared { model } => {
            pipe.cmd("DEL")
                .arg(names.cooldown_key(model))
                .arg(names.probe_key(model))
                .ignore();
        }
        ClusterEvent::Reset => {
            for model in chain {
                pipe.cmd("DEL")
                    .arg(names.cooldown_key(model))
                    .arg(names.probe_key(model))
                    .ignore();
            }
        }
    }
    timed(pipe.query_async::<()>(connection)).await
}

/// Applies the cooldowns that still run in the store: what a late or reconnected replica missed.
async fn catch_up<P: ClusterPolicy>(
    connection: &mut MultiplexedConnection,
    names: &Names,
    link: &ClusterLink<P>,
    chain: &[ModelId],
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    for model in chain {
        let left: i64 = timed(
            redis::cmd("PTTL")
                .arg(names.cooldown_key(model))
                .query_async(connection),
        )
        .await?;
        if left > 0 && link.cooldown_here(model).is_none() {
            let cooldown = Duration::from_millis(left.unsigned_abs());
            let event = ClusterEvent::Throttled {
                model: model.clone(),
                cooldown,
            };
            link.apply(&event, Duration::ZERO);
        }
    }
    Ok(())
}

/// Events of this replica that could not be published during an outage, kept (the latest per model,
/// a bounded number) to publish when the store is back: a cooldown set during the outage then
/// reaches the others, for what is left of it.
#[derive(Debug, Default)]
struct Pending {
    events: Vec<ClusterEvent>,
}

/// Events kept through an outage at most; a reset replaces them all, so this bounds distinct models.
const MAX_PENDING: usize = 256;

impl Pending {
    /// Keeps `event`; returns whether one had to be dropped to make room.
    fn keep(&mut self, event: ClusterEvent) -> bool {
        match event.model() {
            None => self.events.clear(),
            Some(model) => self.events.retain(|kept| kept.model() != Some(model)),
        }
        self.events.push(event);
        if self.events.len() > MAX_PENDING {
            self.events.remove(0);
            return true;
        }
        false
    }

    /// Publishes what was kept, each throttle with what is left of its cooldown here.
    async fn flush<P: ClusterPolicy>(
        &mut self,
        connection: &mut MultiplexedConnection,
        names: &Names,
        link: &ClusterLink<P>,
        chain: &[ModelId],
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        for event in std::mem::take(&mut self.events) {
            let event = match event {
                ClusterEvent::Throttled { model, .. } => {
                    let Some(cooldown) = link.cooldown_here(&model) else {
                        continue;
                    };
                    ClusterEvent::Throttled { model, cooldown }
                }
                other => other,
            };
            publish(connection, names, chain, &event).await?;
            link.status().sent();
        }
        Ok(())
    }
}

/// Why a connection ended: the store failed (the reason), or the policy is gone.
enum Ended {
    Failed(String),
    PolicyGone,
}

impl<E: fmt::Display> From<E> for Ended {
    fn from(error: E) -> Self {
        Ended::Failed(error.to_string())
    }
}

/// Contests the probe lease on `model`: whether this replica took it.
async fn contest(
    connection: &mut MultiplexedConnection,
    names: &Names,
    model: &ModelId,
    lease: Duration,
) -> Result<bool, Box<dyn std::error::Error + Send + Sync>> {
    let taken: Option<String> = timed(
        redis::cmd("SET")
            .arg(names.probe_key(model))
            .arg(names.origin)
            .arg("NX")
            .arg("PX")
            .arg(millis(lease).max(1))
            .query_async(connection),
    )
    .await?;
    Ok(taken.is_some())
}

/// One connection's life: catch up, then publish the outbox, apply the channel and contest probe
/// leases until something fails.
async fn serve<P: ClusterPolicy>(
    link: &mut ClusterLink<P>,
    client: &Client,
    config: &AsyncConnectionConfig,
    names: &Names,
    chain: &[ModelId],
    pending: &mut Pending,
    outage_reported: &mut bool,
) -> Ended {
    let connected = async {
        let connection = timed(client.get_multiplexed_async_connection_with_config(config)).await?;
        let mut pubsub = timed(client.get_async_pubsub()).await?;
        timed(pubsub.subscribe(&names.channel)).await?;
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>((connection, pubsub))
    };
    let (mut connection, pubsub) = match connected.await {
        Ok(parts) => parts,
        Err(error) => return error.into(),
    };
    let mut messages = pubsub.into_on_message();
    if let Err(error) = catch_up(&mut connection, names, link, chain).await {
        return error.into();
    }
    if let Err(error) = pending.flush(&mut connection, names, link, chain).await {
        return error.into();
    }
    link.status().set_connected(true);
    if *outage_reported {
        tracing::info!(channel = %names.channel, "shared throttle state reconnected");
    }
    *outage_reported = false;
    loop {
        // Every lease that is due, before waiting again.
        let wait = loop {
            match link.applier.next_probe_lease() {
                LeaseDue::Contest { model, lease } => {
                    match contest(&mut connection, names, &model, lease).await {
                        Ok(true) => link.applier.won_probe_lease(&model),
                        Ok(false) => link.applier.lost_probe_lease(&model),
                        Err(error) => return error.into(),
                    }
                }
                LeaseDue::Wait(wait) => break wait,
                LeaseDue::Idle => break IDLE,
            }
        };
        tokio::select! {
            event = link.next_outgoing() => {
                let Some(event) = event else { return Ended::PolicyGone };
                match publish(&mut connection, names, chain, &event).await {
                    Ok(()) => link.status().sent(),
                    Err(error) => {
                        if pending.keep(event) {
                            link.status().dropped();
                        }
                        return error.into();
                    }
                }
            }
            message = messages.next() => {
                let Some(message) = message else {
                    return Ended::Failed("subscription closed".to_string());
                };
                let Ok(payload) = message.get_payload::<String>() else {
                    continue;
                };
                if let Some((event, origin, sent_ms)) = decode(&payload)
                    && origin != names.origin
                {
                    let lag = Duration::from_millis(now_ms().saturating_sub(sent_ms));
                    link.apply(&event, lag);
                }
            }
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// The driver: serve a connection until it fails; while disconnected, keep what the outbox holds
/// for later and retry with a backoff.
async fn run<P: ClusterPolicy>(mut link: ClusterLink<P>, client: Client, names: Names) {
    let chain: Vec<ModelId> = link.chain().iter().cloned().collect();
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(STORE_TIMEOUT)
        .set_response_timeout(STORE_TIMEOUT);
    let mut backoff = Duration::from_millis(100);
    let mut outage_reported = false;
    let mut pending = Pending::default();
    loop {
        let failure = match serve(
            &mut link,
            &client,
            &config,
            &names,
            &chain,
            &mut pending,
            &mut outage_reported,
        )
        .await
        {
            Ended::Failed(failure) => failure,
            Ended::PolicyGone => return,
        };
        if link.status().set_connected(false) {
            // The connection worked for a while: start the backoff over.
            backoff = Duration::from_millis(100);
        }
        if !outage_reported {
            // One warning per outage, not one per event or per retry.
            tracing::warn!(channel = %names.channel, error = %failure, "shared throttle state unreachable; running on local state");
            outage_reported = true;
        }
        let wait = tokio::time::sleep(backoff);
        tokio::pin!(wait);
        loop {
            tokio::select! {
                () = &mut wait => break,
                event = link.next_outgoing() => match event {
                    Some(event) => {
                        if pending.keep(event) {
                            link.status().dropped();
                        }
                    }
                    None => return,
                },
            }
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_survive_the_wire_and_junk_is_ignored() {
        let model = ModelId::new("us.anthropic.claude-sonnet-4-20250514-v1:0");
        for event in [
            ClusterEvent::Throttled {
                model: model.clone(),
                cooldown: Duration::from_millis(30_000),
            },
            ClusterEvent::Cleared { model },
            ClusterEvent::Reset,
        ] {
            let (decoded, origin, _) = decode(&encode(&event, 42)).unwrap();
            assert_eq!((decoded, origin), (event, 42));
        }
        for junk in [
            "",
            "2|1|1|T|1|m",
            "1|x|1|T|1|m",
            "1|1|1|T|1|",
            "1|1|1|Q|0|m",
        ] {
            assert_eq!(decode(junk), None, "{junk}");
        }
    }
}
