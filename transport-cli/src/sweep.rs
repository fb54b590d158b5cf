//! `transport bench --sweep`: the cost curve. Payload size, consumer count,
//! key count and batch size are varied one at a time around the workload
//! the other flags give. Each point runs twice for `--seconds` of
//! publishing: flat out (publishers held at most a bounded lead ahead of the
//! consumers) for the throughput, then paced at half that rate for the
//! latency. Latency at full speed only measures the queue the bench itself
//! builds (lead / rate), which is why broker benchmarks measure latency at
//! a set rate. The rows go to a CSV, which `plot` draws.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use transport::Transport;

use crate::bench::{measure, point_of, Limit, Measurement, Point};
use crate::cli::BenchArgs;
use crate::measured::{Dimension, Row};
use crate::target::{connect, url_or_env, CliError, CliResult};

const HEADER: &str = "backend,dimension,value,size,publishers,batch,consumers,keys,messages,seconds,\
                      messages_per_second,mib_per_second,latency_at_messages_per_second,p50_ms,p99_ms,max_ms";

/// Most messages one point may publish: bounds the bytes a fast backend
/// moves per point (4 GiB) and its run time.
fn most(size: usize) -> u64 {
    ((4u64 << 30) / size.max(1) as u64).clamp(1_000, 10_000_000)
}

/// `transport bench --sweep` (or `--plot`, redrawing charts from CSVs).
pub async fn command(args: BenchArgs) -> CliResult {
    if !args.plot.is_empty() {
        return redraw(&args.plot, &args.out);
    }
    let url = url_or_env(args.url.clone())?;
    let broker = connect(&url).await?;
    let result = run(&broker, point_of(&args), &args).await;
    let _ = broker.close().await;
    result
}

async fn run(broker: &Arc<dyn Transport>, base: Point, args: &BenchArgs) -> CliResult {
    if !args.seconds.is_finite() || args.seconds <= 0.0 {
        return Err(CliError::new("--seconds must be positive"));
    }
    let backend = broker.backend().to_owned();
    let lists = [
        (Dimension::Size, &args.sizes),
        (Dimension::Consumers, &args.consumer_counts),
        (Dimension::Keys, &args.key_counts),
        (Dimension::Batch, &args.batches),
    ];
    if let Some(zero) = lists
        .iter()
        .find(|(d, values)| *d != Dimension::Keys && values.contains(&0))
    {
        return Err(CliError::new(format!(
            "the {} values must be at least 1",
            zero.0.name()
        )));
    }
    let points: usize = lists.iter().map(|(_, v)| v.len()).sum();
    eprintln!(
        "sweep on {backend}: {points} points of {}s publishing each, around size {} B, {} publisher(s), batch {}, {} consumer(s), {} key(s)",
        args.seconds, base.size, base.publishers, base.batch, base.consumers, base.keys
    );
    let mut rows = Vec::new();
    for (dimension, values) in lists {
        for &value in values {
            let point = dimension.set(base, value);
            if let Some(limit) = broker.capabilities().max_message_size {
                // The bench's own header and the id need room beside the payload.
                if point.size + 256 > limit {
                    eprintln!(
                        "  {:>9} {:>8}: left out, over {backend}'s message limit ({limit} bytes)",
                        dimension.name(),
                        value
                    );
                    continue;
                }
            }
            let flat_out = Limit::Seconds {
                seconds: args.seconds,
                max: most(point.size),
                rate: None,
            };
            let mut measured = measure(broker, point, flat_out, None).await?;
            let paced = Limit::Seconds {
                seconds: args.seconds,
                max: most(point.size),
                rate: Some(measured.rate() / 2.0),
            };
            let latency = measure(broker, point, paced, None).await?;
            measured.latency_rate = latency.rate();
            (measured.p50_ms, measured.p99_ms, measured.max_ms) = (latency.p50_ms, latency.p99_ms, latency.max_ms);
            eprintln!(
                "  {:>9} {:>8}: {:>10.0} msg/s {:>9.1} MiB/s; at {:>9.0} msg/s p50 {:>9.3} ms  p99 {:>9.3} ms",
                dimension.name(),
                value,
                measured.rate(),
                measured.rate() * point.size as f64 / (1 << 20) as f64,
                measured.latency_rate,
                measured.p50_ms,
                measured.p99_ms
            );
            rows.push(Row {
                backend: backend.clone(),
                dimension,
                value,
                point,
                measured,
            });
        }
    }
    std::fs::create_dir_all(&args.out)
        .map_err(|e| CliError::new(format!("cannot create {}: {e}", args.out.display())))?;
    let csv = args.out.join(format!("sweep-{backend}.csv"));
    write_csv(&csv, &rows)?;
    let svg = csv.with_extension("svg");
    crate::plot::draw(&svg, &rows)?;
    println!("{}\n{}", csv.display(), svg.display());
    Ok(())
}

/// `--plot`: draw one chart from sweep CSVs (each backend its own lines).
pub fn redraw(csvs: &[PathBuf], out: &Path) -> CliResult {
    let mut rows = Vec::new();
    for csv in csvs {
        rows.extend(read_csv(csv)?);
    }
    std::fs::create_dir_all(out).map_err(|e| CliError::new(format!("cannot create {}: {e}", out.display())))?;
    let mut backends: Vec<&str> = rows.iter().map(|r| r.backend.as_str()).collect();
    backends.dedup();
    let svg = out.join(format!("sweep-{}.svg", backends.join("-")));
    crate::plot::draw(&svg, &rows)?;
    println!("{}", svg.display());
    Ok(())
}

fn write_csv(path: &Path, rows: &[Row]) -> CliResult {
    let mut text = String::from(HEADER);
    text.push('\n');
    for r in rows {
        let (p, m) = (&r.point, &r.measured);
        let _ = writeln!(
            text,
            "{},{},{},{},{},{},{},{},{},{:.6},{:.1},{:.3},{:.1},{:.4},{:.4},{:.4}",
            r.backend,
            r.dimension.name(),
            r.value,
            p.size,
            p.publishers,
            p.batch,
            p.consumers,
            p.keys,
            m.messages,
            m.seconds,
            m.rate(),
            m.rate() * p.size as f64 / (1 << 20) as f64,
            m.latency_rate,
            m.p50_ms,
            m.p99_ms,
            m.max_ms
        );
    }
    std::fs::write(path, text).map_err(|e| CliError::new(format!("cannot write {}: {e}", path.display())))
}

fn read_csv(path: &Path) -> CliResult<Vec<Row>> {
    let text =
        std::fs::read_to_string(path).map_err(|e| CliError::new(format!("cannot read {}: {e}", path.display())))?;
    let bad = |line: usize, what: &str| CliError::new(format!("{}:{line}: {what}", path.display()));
    let mut lines = text.lines().enumerate();
    match lines.next() {
        Some((_, h)) if h == HEADER => {}
        _ => return Err(bad(1, "not a sweep CSV (the header differs)")),
    }
    let mut rows = Vec::new();
    for (i, line) in lines.filter(|(_, l)| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split(',').collect();
        if f.len() != HEADER.split(',').count() {
            return Err(bad(i + 1, "wrong number of fields"));
        }
        let int = |k: usize| f[k].parse::<usize>().map_err(|_| bad(i + 1, "a count is not a number"));
        let real = |k: usize| f[k].parse::<f64>().map_err(|_| bad(i + 1, "a figure is not a number"));
        rows.push(Row {
            backend: f[0].to_owned(),
            dimension: Dimension::parse(f[1]).ok_or_else(|| bad(i + 1, "unknown dimension"))?,
            value: int(2)?,
            point: Point {
                size: int(3)?,
                publishers: int(4)?,
                batch: int(5)?,
                consumers: int(6)?,
                keys: int(7)?,
            },
            measured: Measurement {
                messages: int(8)? as u64,
                seconds: real(9)?,
                latency_rate: real(12)?,
                p50_ms: real(13)?,
                p99_ms: real(14)?,
                max_ms: real(15)?,
            },
        });
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_round_trips() {
        let rows = vec![Row {
            backend: "memory".into(),
            dimension: Dimension::Keys,
            value: 16,
            point: Point {
                size: 1024,
                publishers: 1,
                batch: 100,
                consumers: 2,
                keys: 16,
            },
            measured: Measurement {
                messages: 5000,
                seconds: 0.5,
                latency_rate: 5000.0,
                p50_ms: 0.25,
                p99_ms: 1.5,
                max_ms: 3.0,
            },
        }];
        let dir = std::env::temp_dir().join(format!("sweep-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.csv");
        write_csv(&path, &rows).unwrap();
        let back = read_csv(&path).unwrap();
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].point, rows[0].point);
        assert_eq!(back[0].dimension, Dimension::Keys);
        assert_eq!(back[0].measured.messages, 5000);
        assert!((back[0].measured.rate() - 10_000.0).abs() < 1e-6);
        std::fs::write(&path, "a,b\n1,2\n").unwrap();
        assert!(read_csv(&path).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
