//! What a sweep measures: the dimensions it varies and one measured point,
//! shared by the sweep that runs them and the charts that draw them.

use crate::bench::{Measurement, Point};

/// The workload parameters a sweep varies, in the order they are run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dimension {
    Size,
    Consumers,
    Keys,
    Batch,
}

impl Dimension {
    pub const ALL: [Dimension; 4] = [Dimension::Size, Dimension::Consumers, Dimension::Keys, Dimension::Batch];

    pub fn name(self) -> &'static str {
        match self {
            Dimension::Size => "size",
            Dimension::Consumers => "consumers",
            Dimension::Keys => "keys",
            Dimension::Batch => "batch",
        }
    }

    /// Axis title for charts.
    pub fn title(self) -> &'static str {
        match self {
            Dimension::Size => "payload bytes",
            Dimension::Consumers => "consumers in the group",
            Dimension::Keys => "ordering keys (0: none)",
            Dimension::Batch => "messages per publish_batch",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.name() == s)
    }

    pub fn set(self, mut point: Point, value: usize) -> Point {
        match self {
            Dimension::Size => point.size = value,
            Dimension::Consumers => point.consumers = value,
            Dimension::Keys => point.keys = value,
            Dimension::Batch => point.batch = value,
        }
        point
    }
}

/// One measured point of a sweep.
#[derive(Debug, Clone)]
pub struct Row {
    pub backend: String,
    pub dimension: Dimension,
    pub value: usize,
    pub point: Point,
    pub measured: Measurement,
}
