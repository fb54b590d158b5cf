//! The header names the library writes and reads on every broker, in one
//! place: what a producer or consumer that is not this library sets or sees.

pub use crate::dead_letter::{
    DLQ_ATTEMPTS, DLQ_FIRST_FAILURE, DLQ_GROUP, DLQ_LAST_FAILURE, DLQ_PREFIX, DLQ_REASON, DLQ_TOPIC, REDRIVE_COUNT,
    REDRIVE_GROUP,
};
pub use crate::event::{
    CE_CAUSATIONID, CE_CORRELATIONID, CE_DATASCHEMA, CE_DATAVERSION, CE_ID, CE_PARTITIONKEY, CE_PREFIX, CE_SOURCE,
    CE_SPECVERSION, CE_SUBJECT, CE_TENANTID, CE_TIME, CE_TYPE,
};
pub use crate::message::CONTENT_TYPE;
