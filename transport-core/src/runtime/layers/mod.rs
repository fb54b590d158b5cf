//! The layers shipped with the runtime. Each is a [`tower::Layer`] whose
//! service takes a [`Context`](super::Context) and returns an
//! [`Outcome`](crate::Outcome); errors of inner services pass through (the
//! runtime reads them as failures worth a retry).

pub(crate) mod breaker;
pub(crate) mod catch_panic;
pub(crate) mod idempotency;
pub(crate) mod lease;
pub(crate) mod retry;
pub(crate) mod timeout;
pub(crate) mod wrap_call;
