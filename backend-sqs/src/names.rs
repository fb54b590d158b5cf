//! The name of every SQS and SNS object this backend creates, in one place:
//! a topic's SNS topic (or its queue, point to point), a group's queue, a
//! dead-letter topic's queue. Names are escaped so distinct topics never
//! share one, and fitted into AWS's length limits with a hash.

use transport_core::backend::escape_dots;

use crate::config::SqsConfig;

/// Fit a name into `max` characters, keeping it unique with a hash suffix.
fn fit(name: String, max: usize) -> String {
    if name.len() <= max {
        return name;
    }
    // FNV-1a: stable across builds and platforms.
    let mut h: u64 = 0xcbf29ce484222325;
    for b in name.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x100000001b3);
    }
    format!("{}-{h:016x}", &name[..max - 17])
}

fn suffix(fifo: bool) -> &'static str {
    if fifo {
        ".fifo"
    } else {
        ""
    }
}

/// SNS topic name of a topic.
pub(crate) fn topic_name(c: &SqsConfig, topic: &str) -> String {
    let s = suffix(c.fifo);
    format!(
        "{}{s}",
        fit(format!("{}{}", c.prefix, escape_dots(topic)), 256 - s.len())
    )
}

/// SQS queue of a topic in point-to-point mode.
pub(crate) fn topic_queue_name(c: &SqsConfig, topic: &str) -> String {
    let s = suffix(c.fifo);
    format!(
        "{}{s}",
        fit(format!("{}{}", c.prefix, escape_dots(topic)), 80 - s.len())
    )
}

/// SQS queue name of a group on a topic.
pub(crate) fn group_queue_name(c: &SqsConfig, topic: &str, group: &str) -> String {
    let s = suffix(c.fifo);
    format!(
        "{}{s}",
        fit(
            format!("{}{}_s{}", c.prefix, escape_dots(topic), escape_dots(group)),
            80 - s.len()
        )
    )
}

/// SQS queue name of a dead-letter topic.
pub(crate) fn dlq_queue_name(c: &SqsConfig, dlq_topic: &str) -> String {
    let s = suffix(c.fifo);
    format!(
        "{}{s}",
        fit(format!("{}{}_sdlq", c.prefix, escape_dots(dlq_topic)), 80 - s.len())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_and_stay_distinct() {
        let c = SqsConfig::default();
        let long = "t".repeat(200);
        let a = group_queue_name(&c, &long, "a");
        let b = group_queue_name(&c, &long, "b");
        assert!(a.len() <= 80 && b.len() <= 80 && a != b);
        assert_ne!(group_queue_name(&c, "a.b", "c"), group_queue_name(&c, "a_b", "c"));
        let f = SqsConfig {
            fifo: true,
            ..SqsConfig::default()
        };
        assert!(group_queue_name(&f, &long, "a").ends_with(".fifo"));
        assert!(topic_name(&f, "orders").ends_with(".fifo"));
    }
}
