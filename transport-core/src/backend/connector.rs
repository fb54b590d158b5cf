//! Every backend's constructors, once: a backend says how its configuration
//! is read from a URL and how it connects ([`BackendConfig`]);
//! [`Connector`] turns that into `connect(url)` and `with_config(config)`,
//! each returning the wrapped [`Transport`] with the backend and
//! [`Operation::Connect`] on every error.

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;

use super::{transport, RawTransport};
use crate::error::{Error, Result};
use crate::operation::Operation;
use crate::transport::Transport;

/// A backend's configuration: its name, how it is read from a URL, and how
/// it connects. Its fields are public and it has a `Default`, so code builds
/// one as `Config { field: value, ..Default::default() }`: one way, the same
/// value a URL or a configuration file gives.
pub trait BackendConfig: Default + Send + 'static {
    /// The backend's name in errors and telemetry (`"redis"`).
    const BACKEND: &'static str;
    /// Read from the backend's URL; a malformed one is `Invalid`.
    fn from_url(url: &str) -> Result<Self>;
    /// Check the configuration and connect (within the configured
    /// timeouts). What it returns is the raw backend, which stays private
    /// to its crate (`impl RawTransport`): [`Connector`] wraps it, so the
    /// wrapper is the only [`Transport`] it can become.
    fn open(self) -> impl Future<Output = Result<impl RawTransport>> + Send;
}

/// The constructors of a backend whose configuration is `C`; each backend
/// names it (`pub type RedisTransport = Connector<RedisConfig>`). There is
/// no value of this type: what the constructors return is the [`Transport`]
/// every backend is, wrapped by the core (validation, error context,
/// telemetry), so no transport can be had without the wrapper.
pub struct Connector<C> {
    never: std::convert::Infallible,
    config: PhantomData<fn() -> C>,
}

impl<C> fmt::Debug for Connector<C> {
    fn fmt(&self, _: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.never {}
    }
}

impl<C: BackendConfig> Connector<C> {
    /// Connect to a URL of the backend's scheme (the configuration's
    /// `from_url` lists its forms and options).
    pub async fn connect(url: &str) -> Result<Arc<dyn Transport>> {
        let config = C::from_url(url).map_err(connect_error::<C>)?;
        Self::with_config(config).await
    }

    /// Check `config` and connect: fails within the configured timeouts when
    /// the broker cannot be reached or refuses the credentials.
    pub async fn with_config(config: C) -> Result<Arc<dyn Transport>> {
        let raw = config.open().await.map_err(connect_error::<C>)?;
        Ok(transport(raw))
    }
}

/// An error from connecting names the backend, and connecting as the step
/// (whatever step inside `open` failed: the caller was connecting).
fn connect_error<C: BackendConfig>(e: Error) -> Error {
    e.with_backend(C::BACKEND).with_operation(Operation::Connect)
}
