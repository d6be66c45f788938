//! Throttle state shared with the gateway's other replicas through Redis (`redis_url`).

use std::sync::Arc;

use tower_model_fallback::cluster::redis::RedisCluster;
use tower_model_fallback::cluster::{
    ClusterPolicy, ClusterStatus, ClusterStatusSnapshot, Clustered,
};
use tower_model_fallback::policy::CooldownPolicy;

use super::config::GatewayConfigError;

/// One chain's link to the other replicas: its status, and the driver that runs while it lives.
#[derive(Debug)]
pub(crate) struct SharedState {
    status: Arc<ClusterStatus>,
    _driver: RedisCluster,
}

impl SharedState {
    /// Wraps `policy` so that its state is shared under `namespace` at `url`; starts the driver.
    pub(crate) fn share<P: ClusterPolicy>(
        policy: P,
        url: &str,
        namespace: &str,
    ) -> Result<(Arc<dyn CooldownPolicy>, SharedState), GatewayConfigError> {
        let (policy, link) = Clustered::new(policy);
        let status = link.status().clone();
        let driver = RedisCluster::spawn(link, url, namespace)
            .map_err(|e| GatewayConfigError::Invalid(format!("redis_url: {e}")))?;
        Ok((
            Arc::new(policy),
            SharedState {
                status,
                _driver: driver,
            },
        ))
    }

    pub(crate) fn status(&self) -> ClusterStatusSnapshot {
        self.status.snapshot()
    }

    /// The status, for the metrics collector.
    pub(crate) fn handle(&self) -> Arc<ClusterStatus> {
        self.status.clone()
    }
}
