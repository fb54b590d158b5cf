//! The broker objects a topic and a group need (streams, consumer groups,
//! queues, exchanges, bindings, subscriptions, dead-letter queues), named
//! the way the backend names them: what [`Transport::topology`] plans and
//! [`Transport::provision`] creates, for operators who create them ahead
//! of time and run services with `provision=false`.
//!
//! [`Transport::topology`]: crate::Transport::topology
//! [`Transport::provision`]: crate::Transport::provision

use std::fmt;

/// One object on the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerObject {
    /// What it is, in the broker's words (`"stream"`, `"consumer group"`,
    /// `"quorum queue"`, `"exchange"`, `"binding"`, `"SNS topic"`, ...).
    pub kind: &'static str,
    /// Its name on the broker.
    pub name: String,
    /// The settings it is created with, as the broker spells them (empty
    /// when none matter).
    pub settings: String,
}

/// The broker objects a topic (and a group's subscription) needs, in the
/// order they are created.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Topology {
    objects: Vec<BrokerObject>,
}

impl Topology {
    /// No objects (a backend with nothing to create, such as `memory://`).
    pub fn new() -> Self {
        Topology::default()
    }

    /// This topology and one more object.
    pub fn with(mut self, kind: &'static str, name: impl Into<String>, settings: impl Into<String>) -> Self {
        self.objects.push(BrokerObject {
            kind,
            name: name.into(),
            settings: settings.into(),
        });
        self
    }

    /// The objects, in creation order.
    pub fn objects(&self) -> &[BrokerObject] {
        &self.objects
    }

    /// Whether there is nothing to create.
    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }
}

/// One object per line: kind, name, settings.
impl fmt::Display for Topology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let width = self.objects.iter().map(|o| o.kind.len()).max().unwrap_or(0);
        for o in &self.objects {
            write!(f, "{:width$}  {}", o.kind, o.name)?;
            if !o.settings.is_empty() {
                write!(f, "  ({})", o.settings)?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::Topology;

    #[test]
    fn prints_one_object_per_line() {
        let t = Topology::new()
            .with("stream", "orders", "")
            .with("consumer group", "billing", "start at 0");
        assert_eq!(
            t.to_string(),
            "stream          orders\nconsumer group  billing  (start at 0)\n"
        );
        assert!(Topology::new().to_string().is_empty());
    }
}
