//! `transport publish`.

use std::io::Read;

use transport::{Bytes, Message};

use crate::cli::PublishArgs;
use crate::target::{connect, failed, split_url, CliError, CliResult};

pub async fn run(args: PublishArgs) -> CliResult {
    let (url, rest) = split_url(&args.args)?;
    let (topic, inline) = match rest.as_slice() {
        [topic] => (topic.clone(), None),
        [topic, payload] => (topic.clone(), Some(payload.clone())),
        _ => return Err(CliError::new("expected [URL] TOPIC [PAYLOAD]")),
    };
    if inline.is_some() && (args.file.is_some() || args.lines) {
        return Err(CliError::new(
            "give the payload as an argument, or with --file / --lines, not both",
        ));
    }
    let headers = args
        .headers
        .iter()
        .map(|h| {
            h.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .ok_or_else(|| CliError::new(format!("header {h:?} must look like name=value")))
        })
        .collect::<CliResult<Vec<_>>>()?;

    let input: Vec<u8> = match (&inline, &args.file) {
        (Some(p), _) => p.clone().into_bytes(),
        (None, Some(path)) => {
            std::fs::read(path).map_err(|e| CliError::new(format!("cannot read {}: {e}", path.display())))?
        }
        (None, None) => {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .map_err(|e| CliError::new(format!("cannot read stdin: {e}")))?;
            buf
        }
    };
    let payloads: Vec<Bytes> = if args.lines {
        input
            .split(|b| *b == b'\n')
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
            .filter(|l| !l.is_empty())
            .map(Bytes::copy_from_slice)
            .collect()
    } else {
        vec![Bytes::from(input)]
    };

    let broker = connect(&url).await?;
    let total = payloads.len() as u64 * args.count;
    let mut n = 0u64;
    for _ in 0..args.count {
        for payload in &payloads {
            let mut m = Message::new(payload.clone());
            if let Some(id) = &args.id {
                m.id = if total > 1 { format!("{id}-{n}") } else { id.clone() };
            }
            m.key = args.key.clone();
            m.headers.extend(headers.iter().cloned());
            let id = m.id.clone();
            broker
                .publish(&topic, m)
                .await
                .map_err(|e| failed(&format!("publishing to {topic}"), &url, &e))?;
            if args.json {
                println!("{}", serde_json::json!({"id": id, "topic": topic, "n": n}));
            } else {
                println!("{id}");
            }
            n += 1;
        }
    }
    let _ = broker.close().await;
    Ok(())
}
