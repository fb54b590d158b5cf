//! The names of the library's metrics and span attributes: OpenTelemetry's
//! messaging semantic conventions where they define one, `transport.*`
//! for what they do not. Prometheus exporters write `.` as `_`
//! (`messaging_client_sent_messages`).

/// Counter: messages a producer sent (publish and publish_batch), with
/// [`ERROR_TYPE`] set when the broker did not confirm them.
pub const SENT_MESSAGES: &str = "messaging.client.sent.messages";
/// Counter: messages a consumer received.
pub const CONSUMED_MESSAGES: &str = "messaging.client.consumed.messages";
/// Histogram (seconds): how long a publish took, confirm included.
pub const OPERATION_DURATION: &str = "messaging.client.operation.duration";
/// Histogram (seconds): how long a handler took with a message.
pub const PROCESS_DURATION: &str = "messaging.process.duration";
/// Counter: how deliveries were settled, by [`OUTCOME`] (`ack`, `retry`,
/// `dead_letter`, `error` when settling failed).
pub const SETTLED_MESSAGES: &str = "transport.consumer.settled.messages";
/// Counter: handler calls that panicked or ran out of time, by [`FAILURE`].
pub const HANDLER_FAILURES: &str = "transport.consumer.handler.failures";
/// Counter: duplicates the idempotency layer acknowledged without a call.
pub const DUPLICATES: &str = "transport.consumer.duplicates";
/// Counter: times a circuit breaker opened.
pub const BREAKER_OPENED: &str = "transport.consumer.breaker.opened";
/// Gauge: a circuit breaker's state (0 closed, 1 open, 2 half-open).
pub const BREAKER_STATE: &str = "transport.consumer.breaker.state";
/// Counter: errors of the subscription stream (the runtime resubscribes).
pub const RECEIVE_ERRORS: &str = "transport.consumer.receive.errors";
/// Gauge: messages waiting for a group (consumer lag), from
/// [`Transport::backlog`](crate::Transport::backlog).
pub const BACKLOG_WAITING: &str = "transport.backlog.waiting";
/// Gauge: messages delivered to a group and not settled.
pub const BACKLOG_IN_FLIGHT: &str = "transport.backlog.in_flight";
/// Gauge: messages in a group's dead-letter queue.
pub const BACKLOG_DEAD_LETTERS: &str = "transport.backlog.dead_letters";
/// Gauge (seconds): how long the oldest waiting message has waited.
pub const BACKLOG_OLDEST_AGE: &str = "transport.backlog.oldest_waiting_age";

/// Attribute: the backend (`redis`, `kafka`, ...).
pub const SYSTEM: &str = "messaging.system";
/// Attribute: the topic.
pub const DESTINATION: &str = "messaging.destination.name";
/// Attribute: the consumer group.
pub const GROUP: &str = "messaging.consumer.group.name";
/// Attribute: `publish`, `publish_batch`, `process`, `ack`, ...
pub const OPERATION_NAME: &str = "messaging.operation.name";
/// Attribute: `send`, `receive`, `process` or `settle`.
pub const OPERATION_TYPE: &str = "messaging.operation.type";
/// Attribute: the message id.
pub const MESSAGE_ID: &str = "messaging.message.id";
/// Attribute: how many messages a batch operation carried.
pub const BATCH_COUNT: &str = "messaging.batch.message_count";
/// Attribute: the error kind of a failed operation (`timeout`, ...).
pub const ERROR_TYPE: &str = "error.type";
/// Attribute of [`SETTLED_MESSAGES`].
pub const OUTCOME: &str = "transport.outcome";
/// Attribute of [`HANDLER_FAILURES`]: `panic` or `timeout`.
pub const FAILURE: &str = "transport.failure";
