//! Every backend's constructors, once: a backend says how its configuration
//! is read from a URL and how it connects ([`BackendConfig`]);
//! [`Connector`] turns that into `builder()`, `connect(url)` and
//! `with_config(config)`, each returning the wrapped [`Transport`] with the
//! backend and [`Operation::Connect`] on every error.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use async_trait::async_trait;

use crate::error::{Error, Result};
use crate::operation::Operation;
use crate::transport::Transport;

/// A backend's configuration: its name, the builder that fills it in, how
/// it is read from a URL, and how it connects.
#[async_trait]
pub trait BackendConfig: Sized + Send + 'static {
    /// The backend's name in errors and telemetry (`"redis"`).
    const BACKEND: &'static str;
    /// The builder of this configuration (`Connector::builder` returns it).
    type Builder: Default;
    /// Read from the backend's URL; a malformed one is `Invalid`.
    fn from_url(url: &str) -> Result<Self>;
    /// Check the configuration, connect (within the configured timeouts)
    /// and return [`transport`](super::transport)`(raw)`: the raw backend stays private to its
    /// crate, and the wrapper is the only [`Transport`] it can become.
    async fn open(self) -> Result<Arc<dyn Transport>>;
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
    /// A builder of the backend's settings; its `connect` is
    /// [`Self::with_config`].
    pub fn builder() -> C::Builder {
        C::Builder::default()
    }

    /// Connect to a URL of the backend's scheme (the configuration's
    /// `from_url` lists its forms and options).
    pub async fn connect(url: &str) -> Result<Arc<dyn Transport>> {
        let config = C::from_url(url).map_err(connect_error::<C>)?;
        Self::with_config(config).await
    }

    /// Check `config` and connect: fails within the configured timeouts when
    /// the broker cannot be reached or refuses the credentials.
    pub async fn with_config(config: C) -> Result<Arc<dyn Transport>> {
        config.open().await.map_err(connect_error::<C>)
    }
}

/// An error from connecting names the backend, and connecting as the step
/// (whatever step inside `open` failed: the caller was connecting).
fn connect_error<C: BackendConfig>(e: Error) -> Error {
    e.with_backend(C::BACKEND).with_operation(Operation::Connect)
}
