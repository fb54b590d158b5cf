//! Nothing to create: a memory topic and its groups exist once used, in
//! this process only.

use transport_core::backend::RawProvision;
use transport_core::{async_trait, Result, SubscribeOptions, Topology};

use crate::backend::Memory;

#[async_trait]
impl RawProvision for Memory {
    fn topology(&self, _topic: &str, _group: Option<&SubscribeOptions>) -> Topology {
        Topology::new()
    }

    async fn provision(&self, _topic: &str, _group: Option<&SubscribeOptions>) -> Result<Topology> {
        Ok(Topology::new())
    }
}
