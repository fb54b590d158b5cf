//! Creating the consumer group (`XGROUP CREATE ... MKSTREAM`).

use transport_core::{Result, StartFrom};

use crate::core::{map_err, Conn};
use crate::names::Keys;

pub(crate) async fn create_group(conn: &mut Conn, keys: &Keys, group: &str, start: StartFrom) -> Result<()> {
    let id = match start {
        StartFrom::Earliest => "0",
        StartFrom::Latest => "$",
    };
    let r = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&keys.stream)
        .arg(group)
        .arg(id)
        .arg("MKSTREAM")
        .query_async::<()>(conn)
        .await;
    match r {
        Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
        other => other.map_err(map_err),
    }
}
