//! The typed router: one tower service that reads `ce-type` and the major
//! version of `ce-dataversion`, decodes the data with the declared codec,
//! upcasts older versions, and calls the typed handler.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use futures::future::{BoxFuture, FutureExt};
use tower::Service;
use transport_core::headers::{CE_DATAVERSION, CE_TYPE};
use transport_core::runtime::{Context, IntoOutcome};
use transport_core::{EventError, Outcome};

use crate::codec::Codec;
use crate::contract::{check_declaration, major_of};
use crate::error::ContractError;
use crate::event_type::{EventType, Upcast};
use crate::failures::count_failure;
use crate::version::Version;

/// What the router does with an event it cannot read: a type it has no
/// route for, or a major version it has neither a route nor an upcaster for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Unroutable {
    /// Dead-letter it with a reason naming the type and version (the
    /// default: nothing is dropped unseen).
    DeadLetter,
    /// Acknowledge it without a call: for topics that carry types this
    /// consumer does not care about (not counted as a failure; logged at
    /// debug level).
    Skip,
    /// Hand it back to be delivered again after `delay`, for a consumer that
    /// reads it (during a rolling upgrade, the instances already on the new
    /// version). Attempts count, so it is dead-lettered after the group's
    /// `max_attempts`.
    Retry(Duration),
}

/// A typed handler of one version, after decoding and upcasting.
type Sink<T> = Arc<dyn Fn(Context, T) -> BoxFuture<'static, Outcome> + Send + Sync>;
/// Decode and handle one `(type, major)`.
type Read = Arc<dyn Fn(Context) -> BoxFuture<'static, Outcome> + Send + Sync>;

/// One routed major version of a type.
#[derive(Clone)]
struct Route {
    major: u32,
    /// The one minor version a codec that needs its writer's schema
    /// (Avro) reads; `None` reads every minor.
    exact_minor: Option<u32>,
    read: Read,
}

/// A [`Service`] over [`Context`] that dispatches each event on its type
/// and major version to a typed handler, through the upcasters of older
/// versions. Compose it with every layer of the runtime like any handler.
///
/// A failure to read (data that breaks its schema, a message that is no
/// event, an unroutable type or version) never reaches a handler: data that
/// breaks its schema, or is no event, is dead-lettered at once with a reason
/// naming the field and the rule; unroutable events follow [`Unroutable`].
/// Each is counted in `transport.consumer.validation.failures`.
///
/// An event without `ce-dataversion` reads as version 1; a minor version
/// newer than the route's is read by it (minor versions only add optional
/// fields, and unknown fields are ignored).
///
/// ```no_run
/// # use schemars::JsonSchema;
/// # use serde::{Deserialize, Serialize};
/// use transport_contracts::{EventType, Json, Router, Unroutable, Upcast, Version};
/// use transport_core::runtime::{Context, HandlerError};
/// # #[derive(Serialize, Deserialize, JsonSchema)]
/// # struct OrderPlaced { order_id: String, amount_cents: i64 }
/// # impl EventType for OrderPlaced {
/// #     const TYPE: &'static str = "order.placed";
/// #     const VERSION: Version = Version::new(2, 0);
/// #     type Codec = Json;
/// # }
/// # #[derive(Serialize, Deserialize, JsonSchema)]
/// # struct OrderPlacedV1 { order_id: String, amount: f64 }
/// # impl EventType for OrderPlacedV1 {
/// #     const TYPE: &'static str = "order.placed";
/// #     const VERSION: Version = Version::new(1, 0);
/// #     type Codec = Json;
/// # }
/// # impl Upcast for OrderPlacedV1 {
/// #     type Next = OrderPlaced;
/// #     fn upcast(self) -> OrderPlaced { OrderPlaced { order_id: self.order_id, amount_cents: (self.amount * 100.0) as i64 } }
/// # }
///
/// # fn build() -> Result<Router, transport_contracts::ContractError> {
/// let router = Router::new()
///     .route(|_ctx: Context, order: OrderPlaced| async move {
///         println!("order {} for {} cents", order.order_id, order.amount_cents);
///         Ok::<_, HandlerError>(())
///     })?
///     .upcast::<OrderPlacedV1>()? // v1 events in flight reach the same handler
///     .unknown_types(Unroutable::Skip);
/// # Ok(router) }
/// ```
#[derive(Clone)]
pub struct Router {
    /// By `ce-type`, then by major version.
    routes: HashMap<String, Vec<Route>>,
    /// The typed sink of every declared version, by its Rust type, for the
    /// upcasters declared after it (type-erased; downcast while building).
    sinks: HashMap<TypeId, Arc<dyn Any + Send + Sync>>,
    unknown_type: Unroutable,
    unknown_version: Unroutable,
}

impl Router {
    /// A router with no routes; unroutable events are dead-lettered.
    pub fn new() -> Self {
        Router {
            routes: HashMap::new(),
            sinks: HashMap::new(),
            unknown_type: Unroutable::DeadLetter,
            unknown_version: Unroutable::DeadLetter,
        }
    }

    /// Route events of `E`'s type and major version to `handler`, an
    /// `async fn(Context, E)` returning `Result<(), HandlerError>` (or an
    /// [`Outcome`]). A second route for the same type and major version, or
    /// for the same Rust type, is a [`ContractError::Declaration`].
    pub fn route<E, F, Fut, R>(self, handler: F) -> Result<Self, ContractError>
    where
        E: EventType,
        F: Fn(Context, E) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = R> + Send + 'static,
        R: IntoOutcome + 'static,
    {
        let sink: Sink<E> = Arc::new(move |ctx, event| handler(ctx, event).map(IntoOutcome::into_outcome).boxed());
        self.declare::<E>(sink)
    }

    /// Read `O`, an older version, by upcasting it into its
    /// [`Next`](Upcast::Next) and on to the routed version. The next
    /// version must be routed or upcast already (declare the newest first);
    /// otherwise, or for a version already declared, this is a
    /// [`ContractError::Declaration`].
    pub fn upcast<O: Upcast>(self) -> Result<Self, ContractError> {
        let next = self
            .sinks
            .get(&TypeId::of::<O::Next>())
            .and_then(|sink| sink.downcast_ref::<Sink<O::Next>>())
            .cloned()
            .ok_or_else(|| {
                ContractError::Declaration(format!(
                    "{} v{} upcasts into {} v{}, which has no route or upcaster yet: declare the newer version first",
                    O::TYPE,
                    O::VERSION,
                    <O::Next as EventType>::TYPE,
                    <O::Next as EventType>::VERSION
                ))
            })?;
        let sink: Sink<O> = Arc::new(move |ctx, old: O| next(ctx, old.upcast()));
        self.declare::<O>(sink)
    }

    /// What to do with events of a type no route reads (default:
    /// [`Unroutable::DeadLetter`]).
    pub fn unknown_types(mut self, policy: Unroutable) -> Self {
        self.unknown_type = policy;
        self
    }

    /// What to do with events of a routed type in a major version with
    /// neither a route nor an upcaster: newer ones this consumer was not
    /// built for, or older ones without an upcaster (default:
    /// [`Unroutable::DeadLetter`]).
    pub fn unknown_versions(mut self, policy: Unroutable) -> Self {
        self.unknown_version = policy;
        self
    }

    /// The `(type, major version)` pairs this router reads, sorted.
    pub fn routes(&self) -> Vec<(String, u32)> {
        let mut routes: Vec<(String, u32)> = self
            .routes
            .iter()
            .flat_map(|(t, versions)| versions.iter().map(move |r| (t.clone(), r.major)))
            .collect();
        routes.sort();
        routes
    }

    fn declare<E: EventType>(mut self, sink: Sink<E>) -> Result<Self, ContractError> {
        check_declaration::<E>()?;
        let major = E::VERSION.major;
        let versions = self.routes.entry(E::TYPE.to_owned()).or_default();
        if versions.iter().any(|r| r.major == major) {
            return Err(ContractError::Declaration(format!(
                "{} v{major} is declared twice ({})",
                E::TYPE,
                std::any::type_name::<E>()
            )));
        }
        if self.sinks.contains_key(&TypeId::of::<E>()) {
            return Err(ContractError::Declaration(format!(
                "{} is declared twice",
                std::any::type_name::<E>()
            )));
        }
        let codec = Arc::new(E::Codec::build()?);
        let read: Read = {
            let sink = sink.clone();
            Arc::new(move |ctx: Context| {
                let codec = codec.clone();
                let sink = sink.clone();
                async move {
                    // CloudEvents data is optional: none reads as JSON `null`.
                    let data: &[u8] = if ctx.payload().is_empty() {
                        b"null"
                    } else {
                        ctx.payload()
                    };
                    match codec.decode(data) {
                        Ok(data) => sink(ctx, data).await,
                        Err(error) => refuse(
                            &ctx,
                            Some(E::TYPE),
                            Unroutable::DeadLetter,
                            ContractError::Data {
                                event_type: E::TYPE.to_owned(),
                                version: E::VERSION,
                                error,
                            },
                        ),
                    }
                }
                .boxed()
            })
        };
        let exact_minor = (!<E::Codec as Codec<E>>::SELF_DESCRIBING).then_some(E::VERSION.minor);
        versions.push(Route {
            major,
            exact_minor,
            read,
        });
        versions.sort_by_key(|r| r.major);
        self.sinks.insert(TypeId::of::<E>(), Arc::new(sink));
        Ok(self)
    }

    fn dispatch(&self, ctx: Context) -> BoxFuture<'static, Outcome> {
        let headers = ctx.headers();
        let Some(event_type) = headers.get(CE_TYPE).filter(|t| !t.is_empty()) else {
            let e = ContractError::NotAnEvent(EventError::MissingAttribute(CE_TYPE));
            return ready(refuse(&ctx, None, Unroutable::DeadLetter, e));
        };
        let Some(versions) = self.routes.get(event_type) else {
            let e = ContractError::UnknownType {
                event_type: event_type.to_owned(),
            };
            return ready(refuse(&ctx, None, self.unknown_type, e));
        };
        let version = headers.get(CE_DATAVERSION);
        let Some(major) = major_of(version) else {
            let e = ContractError::NotAnEvent(EventError::InvalidAttribute {
                name: CE_DATAVERSION.into(),
                value: version.unwrap_or_default().to_owned(),
            });
            return ready(refuse(&ctx, Some(event_type), Unroutable::DeadLetter, e));
        };
        let route = versions.iter().find(|r| r.major == major);
        let minor = version.and_then(Version::parse).map_or(0, |v| v.minor);
        match route {
            Some(r) if r.exact_minor.is_none_or(|m| m == minor) => (r.read)(ctx),
            _ => {
                let e = ContractError::UnknownVersion {
                    event_type: event_type.to_owned(),
                    version: version.unwrap_or_default().to_owned(),
                    readable: versions
                        .iter()
                        .map(|r| match r.exact_minor {
                            Some(m) => format!("{}.{m} only", r.major),
                            None => r.major.to_string(),
                        })
                        .collect(),
                };
                let event_type = event_type.to_owned();
                ready(refuse(&ctx, Some(&event_type), self.unknown_version, e))
            }
        }
    }
}

impl Default for Router {
    fn default() -> Self {
        Router::new()
    }
}

impl fmt::Debug for Router {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Router")
            .field("routes", &self.routes())
            .field("unknown_type", &self.unknown_type)
            .field("unknown_version", &self.unknown_version)
            .finish()
    }
}

impl Service<Context> for Router {
    type Response = Outcome;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Outcome, Infallible>>;

    fn poll_ready(&mut self, _: &mut TaskContext<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, ctx: Context) -> Self::Future {
        self.dispatch(ctx).map(Ok).boxed()
    }
}

fn ready(outcome: Outcome) -> BoxFuture<'static, Outcome> {
    futures::future::ready(outcome).boxed()
}

/// The outcome of an event the router does not hand to a handler: counted
/// and logged as a failure, unless the policy is to skip it (a type this
/// consumer was told to ignore is no failure).
fn refuse(ctx: &Context, event_type: Option<&str>, policy: Unroutable, error: ContractError) -> Outcome {
    if policy == Unroutable::Skip {
        tracing::debug!(
            message_id = ctx.id(),
            topic = ctx.topic(),
            group = ctx.group(),
            "skipped: {error}"
        );
        return Outcome::Ack;
    }
    count_failure(ctx, event_type, &error);
    let reason = error.to_string();
    tracing::warn!(
        message_id = ctx.id(),
        topic = ctx.topic(),
        group = ctx.group(),
        failure = error.label(),
        ?policy,
        "{reason}"
    );
    match policy {
        Unroutable::DeadLetter => Outcome::dead_letter(reason),
        Unroutable::Retry(delay) => Outcome::retry_after(delay, reason),
        Unroutable::Skip => Outcome::Ack,
    }
}
