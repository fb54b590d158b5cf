//! Connections: one self-healing connection to a single server, or a
//! cluster connection that follows slots across a Redis Cluster, behind one
//! type so every command, pipeline and script is written once.

use std::sync::OnceLock;
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};
use transport_core::Error;

use crate::config::RedisConfig;
use crate::core::map_err;

/// A connection to one server or to a cluster.
#[derive(Clone)]
pub(crate) enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// Open a connection that reconnects by itself; `response_timeout` bounds
/// each command (on a cluster, including its redirects and retries).
pub(crate) async fn connect(config: &RedisConfig, response_timeout: Duration) -> Result<Conn, Error> {
    if config.tls {
        install_crypto_provider();
    }
    let mut conn = if config.cluster_nodes.is_empty() {
        let client = redis::Client::open(config.client_url()).map_err(|e| map_err("connect", e))?;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.connect_timeout))
            .set_response_timeout(Some(response_timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(2));
        Conn::Single(
            client
                .get_connection_manager_with_config(manager_config)
                .await
                .map_err(|e| map_err("connect", e))?,
        )
    } else {
        // A failover makes commands for the lost primary's slots fail until
        // a replica is promoted (the cluster's node timeout plus an
        // election): retry soon and often, within the command's deadline,
        // rather than the client's default waits of over a second.
        let client = ClusterClient::builder(config.cluster_urls())
            .connection_timeout(config.connect_timeout)
            .response_timeout(response_timeout)
            .overall_response_timeout(Some(response_timeout))
            .min_retry_wait(50)
            .max_retry_wait(500)
            .build()
            .map_err(|e| map_err("connect", e))?;
        Conn::Cluster(client.get_async_connection().await.map_err(|e| map_err("connect", e))?)
    };
    // Credentials are checked on the first command; do it now so a wrong
    // password fails here, quickly, as Unauthorized.
    redis::cmd("PING")
        .query_async::<()>(&mut conn)
        .await
        .map_err(|e| map_err("connect", e))?;
    Ok(conn)
}

fn install_crypto_provider() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        // Fails only when the application installed one already: keep theirs.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}
