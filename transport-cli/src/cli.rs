//! Command-line definitions.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

const URLS: &str = "URLS:
  memory://                         in-process broker (only useful for `demo`, `check`, `bench`)
  redis://[user:pass@]host:6379/0   Redis Streams (rediss:// for TLS)
  redis+cluster://h1:7001,h2:7002   Redis Cluster (several seeds)
  nats://[user:pass@]host:4222      NATS JetStream (tls:// for TLS)
  amqp://user:pass@host:5672/%2f    RabbitMQ (amqps:// for TLS; the path is the vhost)
  sqs://?region=us-east-1[&endpoint=http://127.0.0.1:4566][&fifo=true]   SQS + SNS
  kafka://[user:pass@]host:9092[,host2:9092]   Kafka (kafka+ssl:// for TLS; needs the `kafka` feature)

Credentials in URLs are percent-encoded (`%40` for `@`; a `+` is a plus).

The URL may be left out when TRANSPORT_URL is set, which keeps credentials off
the command line (and out of shell history).";

/// One command line for every broker: publish, consume, dead-letter
/// operations, conformance checks and benchmarks.
#[derive(Debug, Parser)]
#[command(name = "transport", version, after_help = URLS)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Publish messages and print their confirmed ids.
    #[command(after_help = "EXAMPLES:
  transport publish redis://127.0.0.1:6379 orders '{\"order\":1}' --key customer-7
  transport publish nats://127.0.0.1:4222 orders --file order.json --header content-type=application/json
  cat events.ndjson | transport publish redis://127.0.0.1:6379 orders --lines
  TRANSPORT_URL=redis://:secret@cache:6379 transport publish orders hello --count 1000")]
    Publish(PublishArgs),

    /// Receive messages and print them (settling each as asked).
    #[command(after_help = "EXAMPLES:
  transport consume redis://127.0.0.1:6379 orders --group billing --max 10
  transport consume nats://127.0.0.1:4222 orders --group audit --json --from-start --timeout 5s
  transport consume redis://127.0.0.1:6379 orders --group billing --nack 30s   # look, then put back")]
    Consume(ConsumeArgs),

    /// Inspect and operate a group's dead-letter queue.
    #[command(after_help = "EXAMPLES:
  transport dlq redis://127.0.0.1:6379 orders --group billing depth
  transport dlq redis://127.0.0.1:6379 orders --group billing peek 5
  transport dlq redis://127.0.0.1:6379 orders --group billing redrive --all
  transport dlq redis://127.0.0.1:6379 orders --group billing redrive --reason timeout --failed-before 1h
  transport dlq redis://127.0.0.1:6379 orders --group billing discard --id 0191f3c2-8a4b-7c1d-9e2f-3a4b5c6d7e8f
  transport dlq nats://127.0.0.1:4222 orders --group billing purge --json")]
    Dlq(DlqArgs),

    /// Show what groups have left on a topic: waiting (lag), in flight, dead letters, oldest age.
    #[command(after_help = "EXAMPLES:
  transport stats redis://127.0.0.1:6379 orders --group billing
  transport stats nats://127.0.0.1:4222 orders --group billing --group audit --watch
  transport stats kafka://127.0.0.1:9092 orders --group billing --json

Figures the broker only estimates are marked ~ (SQS counts; Kafka's waiting
includes what is delivered and not yet committed); those it cannot tell show
as -. --watch redraws every 2 s (or the interval given) until interrupted.")]
    Stats(StatsArgs),

    /// Export groups' backlogs as Prometheus metrics and alert on lag and dead letters.
    #[command(after_help = "EXAMPLES:
  transport monitor redis://127.0.0.1:6379 --topic orders --group billing --listen 127.0.0.1:9464
  transport monitor kafka://k1:9092 --topic orders --topic payments --group billing --alert-lag 1000 --alert-dlq 0
  transport monitor nats://127.0.0.1:4222 --topic orders --group billing --alert-lag 5m --once   # for cron and CI

Every --interval (default 5s) it reads the backlog of each topic and group
and sets the gauges transport_backlog_waiting, transport_backlog_in_flight,
transport_backlog_dead_letters and transport_backlog_oldest_waiting_age
(seconds), labelled messaging_system, messaging_destination_name and
messaging_consumer_group_name, served at http://LISTEN/metrics.
--alert-lag COUNT fires when more than COUNT messages wait; --alert-lag
DURATION (such as 5m) when the oldest has waited longer; --alert-dlq N when
more than N are dead-lettered. Alerts go to stderr when they fire and when
they resolve. --once reads once, prints the metrics and exits 1 if an alert
fires.")]
    Monitor(MonitorArgs),

    /// Create the broker objects a topic and its groups need (or print them),
    /// for services that run with provision=false.
    #[command(after_help = "EXAMPLES:
  transport provision amqp://admin:secret@mq:5672/%2f orders --group billing --group audit
  transport provision nats://127.0.0.1:4222 orders --group billing --ack-timeout 1m --print
  transport provision sqs://?region=eu-west-1 orders --group billing --max-attempts 10 --json

Creates what publishing to TOPIC and consuming it as each --group needs
(streams, consumer groups, queues, exchanges, bindings, subscriptions and
dead-letter queues), with the settings a subscription with the same options
would create them with; what exists is left as it is. --print shows them and
creates nothing (it still connects: names depend on the URL's options). Run it as a user that may create; services then connect
with provision=false in their URL and only check that these exist.")]
    Provision(ProvisionArgs),

    /// Run the conformance suite against a broker.
    #[command(after_help = "EXAMPLES:
  transport check memory://
  transport check redis://127.0.0.1:6379 --filter dead_letter
  TRANSPORT_URL_REDIS=redis://127.0.0.1:6379 TRANSPORT_URL_NATS=nats://127.0.0.1:4222 transport check --all

With --all, every backend whose TRANSPORT_URL_<NAME> is set (MEMORY defaults to
memory://) is checked and one matrix of backends x checks is printed.
`transport check --from-reports target/conformance` prints the matrix of
existing reports (those scripts/test wrote) without running anything.
Checks a broker is known to get wrong (CONFORMANCE_SKIP) show as \"not proven\".")]
    Check(CheckArgs),

    /// Measure publish -> consume -> ack throughput and latency, or sweep the cost curve.
    #[command(after_help = "EXAMPLES:
  transport bench memory:// --count 200000
  transport bench redis://127.0.0.1:6379 --size 1024 --count 20000 --concurrency 4 --json
  transport bench nats://127.0.0.1:4222 --sweep --batch 100 --out target/bench
  transport bench --plot target/bench/sweep-memory.csv --plot target/bench/sweep-redis.csv")]
    Bench(BenchArgs),

    /// Operate a transactional outbox table: run its relay, show its state,
    /// retry or discard parked rows, create its table, measure it.
    #[command(after_help = "EXAMPLES:
  transport outbox --db postgres://app@db/orders migrate
  transport outbox --db postgres://app@db/orders relay --to kafka://k1:9092
  transport outbox --db sqlite://orders.db status
  transport outbox --db sqlite://orders.db retry --reason 'too large'
  transport outbox --db sqlite://orders.db discard --id 0191f3c2-8a4b-7c1d-9e2f-3a4b5c6d7e8f
  transport outbox --db sqlite://bench.db bench --to memory:// --rows 20000

The database URL may also come from TRANSPORT_OUTBOX_DB, the broker URL of
relay and bench from TRANSPORT_URL. The relay runs until interrupted
(Ctrl-C or SIGTERM finish the round in progress first); --once publishes
what is pending and exits. Parked rows are those the relay gave up on
(too large for the broker, refused, or out of attempts): status lists them
with their errors.")]
    Outbox(OutboxArgs),

    /// The compatibility gate of a service's event schemas: compare the
    /// current schemas with the accepted ones, and accept them.
    #[command(after_help = "EXAMPLES:
  transport contracts check --current target/contracts
  transport contracts check --locked contracts --current target/contracts --compatibility FULL_TRANSITIVE
  transport contracts lock --current target/contracts
  transport contracts asyncapi --server production=kafka://k1:9092 --out asyncapi.json
  transport contracts catalog --out EVENTS.md

The current schemas are what a service writes with Catalog::write
(catalog.json and <type>/<major>.<minor>.schema.json); the accepted ones live
in the service's repository (default contracts/). check exits 1 and names every breaking
change (the field, the rule, which reader it breaks); lock runs the same gate,
then adds the current files to the accepted ones. Compatibility: BACKWARD
(default), FORWARD, FULL, each also _TRANSITIVE (against every locked version
of the major, not only the newest).")]
    Contracts(ContractsArgs),

    /// An order-processing flow on memory:// (no broker needed): retries,
    /// dead letters with reasons, a redrive and a summary.
    #[command(after_help = "EXAMPLES:
  transport demo
  transport demo --url redis://127.0.0.1:6379")]
    Demo(DemoArgs),
}

#[derive(Debug, Args)]
pub struct PublishArgs {
    /// [URL] TOPIC [PAYLOAD]: the URL may come from TRANSPORT_URL; without
    /// PAYLOAD or --file the payload is read from stdin.
    #[arg(required = true, num_args = 1..=3, value_name = "ARGS")]
    pub args: Vec<String>,
    /// Read the payload from this file (with --lines: one message per line of it).
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// One message per line of the input (--file, or stdin).
    #[arg(long)]
    pub lines: bool,
    /// Ordering key.
    #[arg(long, short)]
    pub key: Option<String>,
    /// Header as name=value (repeatable).
    #[arg(long = "header", short = 'H', value_name = "NAME=VALUE")]
    pub headers: Vec<String>,
    /// Message id (a UUIDv7 otherwise); with --count, a suffix -N is added.
    #[arg(long)]
    pub id: Option<String>,
    /// Publish the message this many times (for load).
    #[arg(long, default_value_t = 1)]
    pub count: u64,
    /// Print one JSON object per message instead of the bare id.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ConsumeArgs {
    /// [URL] TOPIC: the URL may come from TRANSPORT_URL.
    #[arg(required = true, num_args = 1..=2, value_name = "ARGS")]
    pub args: Vec<String>,
    /// Consumer group.
    #[arg(long, short)]
    pub group: String,
    /// One JSON object per line: id, key, headers, payload (UTF-8 or base64), attempt, topic.
    #[arg(long)]
    pub json: bool,
    /// Stop after this many messages.
    #[arg(long)]
    pub max: Option<u64>,
    /// Stop when no message arrives for this long (e.g. 5s, 1m).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub timeout: Option<std::time::Duration>,
    /// Acknowledge each message (the default).
    #[arg(long, conflicts_with_all = ["nack", "no_ack"])]
    pub ack: bool,
    /// Put each message back, after DELAY when given (e.g. 30s).
    #[arg(long, value_name = "DELAY", num_args = 0..=1, default_missing_value = "0s", value_parser = humantime::parse_duration)]
    pub nack: Option<std::time::Duration>,
    /// Leave messages unsettled (they come back after the ack timeout).
    #[arg(long)]
    pub no_ack: bool,
    /// Send each message to the dead-letter queue with this reason.
    #[arg(long, value_name = "REASON", conflicts_with_all = ["ack", "nack", "no_ack"])]
    pub dead_letter: Option<String>,
    /// A new group starts at the oldest retained message, not the newest.
    #[arg(long)]
    pub from_start: bool,
    /// Ack timeout of the subscription.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub ack_timeout: std::time::Duration,
}

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// [URL] TOPIC: the URL may come from TRANSPORT_URL.
    #[arg(required = true, num_args = 1..=2, value_name = "ARGS")]
    pub args: Vec<String>,
    /// A consumer group to show (repeat for several).
    #[arg(long, short, required = true)]
    pub group: Vec<String>,
    /// Dead-letter topic, when not the default `<topic>.<group>.dlq`.
    #[arg(long)]
    pub dlq_topic: Option<String>,
    /// Redraw every INTERVAL (default 2s) until interrupted.
    #[arg(long, value_name = "INTERVAL", num_args = 0..=1, default_missing_value = "2s", value_parser = humantime::parse_duration)]
    pub watch: Option<std::time::Duration>,
    /// Machine-readable output (one JSON object per group and reading).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct MonitorArgs {
    /// The broker URL (or TRANSPORT_URL).
    pub url: Option<String>,
    /// A topic to watch (repeat for several).
    #[arg(long, required = true)]
    pub topic: Vec<String>,
    /// A consumer group to watch on every topic (repeat for several).
    #[arg(long, short, required = true)]
    pub group: Vec<String>,
    /// Serve the metrics at http://ADDR/metrics.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<std::net::SocketAddr>,
    /// How often to read the backlogs.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub interval: std::time::Duration,
    /// Alert when more than COUNT messages wait, or (a duration such as 5m)
    /// when the oldest has waited longer.
    #[arg(long, value_name = "COUNT|DURATION", value_parser = parse_lag)]
    pub alert_lag: Option<LagThreshold>,
    /// Alert when more than N messages are dead-lettered.
    #[arg(long, value_name = "N")]
    pub alert_dlq: Option<u64>,
    /// Read once, print the metrics, exit 1 if an alert fires.
    #[arg(long)]
    pub once: bool,
}

/// `--alert-lag`: a count of waiting messages or the oldest one's age.
#[derive(Debug, Clone, Copy)]
pub enum LagThreshold {
    /// More than this many waiting.
    Count(u64),
    /// The oldest waiting longer than this.
    Age(std::time::Duration),
}

fn parse_lag(s: &str) -> Result<LagThreshold, String> {
    if let Ok(n) = s.parse::<u64>() {
        return Ok(LagThreshold::Count(n));
    }
    humantime::parse_duration(s)
        .map(LagThreshold::Age)
        .map_err(|_| format!("{s:?} is neither a count (1000) nor a duration (5m)"))
}

#[derive(Debug, Args)]
pub struct ProvisionArgs {
    /// [URL] TOPIC: the URL may come from TRANSPORT_URL.
    #[arg(required = true, num_args = 1..=2, value_name = "ARGS")]
    pub args: Vec<String>,
    /// A consumer group (repeat for several); without one, only what publishing needs.
    #[arg(long = "group", short, value_name = "GROUP")]
    pub groups: Vec<String>,
    /// Dead-letter topic, when not the default `<topic>.<group>.dlq` (one --group only).
    #[arg(long)]
    pub dlq_topic: Option<String>,
    /// The groups' ack timeout (a queue's visibility timeout, a consumer's ack wait).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub ack_timeout: std::time::Duration,
    /// Attempts before a message is dead-lettered (a redrive policy's count).
    #[arg(long, default_value_t = 5)]
    pub max_attempts: u32,
    /// New groups start at the oldest retained message, not the newest.
    #[arg(long)]
    pub from_start: bool,
    /// Show what would be created; create nothing.
    #[arg(long)]
    pub print: bool,
    /// One JSON object per broker object: kind, name, settings.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct DlqArgs {
    /// [URL] TOPIC: the URL may come from TRANSPORT_URL.
    #[arg(required = true, num_args = 1..=2, value_name = "ARGS")]
    pub args: Vec<String>,
    /// The consumer group whose dead-letter queue to operate.
    #[arg(long, short)]
    pub group: String,
    /// Dead-letter topic, when not the default `<topic>.<group>.dlq`.
    #[arg(long)]
    pub dlq_topic: Option<String>,
    /// Machine-readable output.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub op: DlqOp,
}

/// Which dead letters `redrive` and `discard` pick: every condition given.
#[derive(Debug, Args, Default)]
pub struct SelectArgs {
    /// A message id (repeat for several).
    #[arg(long = "id", value_name = "ID")]
    pub ids: Vec<String>,
    /// Only those whose reason contains TEXT.
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
    /// Only those that last failed before TIME: RFC 3339, or a duration ago (2h).
    #[arg(long, value_name = "TIME")]
    pub failed_before: Option<String>,
}

/// What `discard` (and the outbox's `retry`) act on: a selection, or
/// everything with --all; never everything by default.
#[derive(Debug, Args, Default)]
pub struct PickArgs {
    /// All of them (alone: not with a selector).
    #[arg(long, conflicts_with_all = ["ids", "reason", "failed_before"])]
    pub all: bool,
    #[command(flatten)]
    pub select: SelectArgs,
}

impl SelectArgs {
    pub fn any(&self) -> bool {
        !self.ids.is_empty() || self.reason.is_some() || self.failed_before.is_some()
    }
}

#[derive(Debug, Subcommand)]
pub enum DlqOp {
    /// How many messages are in the queue.
    Depth,
    /// Show the oldest messages with their failure reason, without removing them.
    Peek {
        /// How many.
        #[arg(default_value_t = 10)]
        n: usize,
    },
    /// Move messages back to their topic for the group (attempts start again).
    Redrive {
        /// How many of the oldest.
        #[arg(required_unless_present_any = ["all", "ids", "reason", "failed_before"], conflicts_with_all = ["ids", "reason", "failed_before"])]
        n: Option<u64>,
        /// Every message.
        #[arg(long, conflicts_with = "n")]
        all: bool,
        #[command(flatten)]
        select: SelectArgs,
    },
    /// Delete selected messages (by id, reason or failure time; --all for every one).
    Discard {
        #[command(flatten)]
        pick: PickArgs,
    },
    /// Delete every message.
    Purge,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Broker URL (or TRANSPORT_URL); not with --all.
    #[arg(conflicts_with = "all")]
    pub url: Option<String>,
    /// Every backend with a TRANSPORT_URL_<NAME> variable (MEMORY defaults to memory://).
    #[arg(long)]
    pub all: bool,
    /// Only checks whose name contains this.
    #[arg(long)]
    pub filter: Option<String>,
    /// Checks run at once.
    #[arg(long, default_value_t = 8)]
    pub parallel: usize,
    /// Where the JSON reports go (default target/conformance).
    #[arg(long)]
    pub report_dir: Option<PathBuf>,
    /// Run nothing: print the matrix of the reports in this directory
    /// (e.g. target/conformance after scripts/test).
    #[arg(long, value_name = "DIR", conflicts_with_all = ["url", "all"])]
    pub from_reports: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Broker URL (or TRANSPORT_URL).
    pub url: Option<String>,
    /// Payload size in bytes.
    #[arg(long, default_value_t = 1024)]
    pub size: usize,
    /// Messages to send.
    #[arg(long, default_value_t = 10_000)]
    pub count: u64,
    /// Concurrent publishers.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Messages per publish_batch call (1 = single publishes).
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Subscriptions of the one group, each receiving and acking.
    #[arg(long, default_value_t = 1)]
    pub consumers: usize,
    /// Distinct ordering keys, given round robin (0 = messages without a key).
    #[arg(long, default_value_t = 0)]
    pub keys: usize,
    /// Print the result as JSON.
    #[arg(long, conflicts_with = "sweep")]
    pub json: bool,
    /// Measure the cost curve instead: vary payload size, consumers, keys and
    /// batch one at a time around the workload the other flags give, write
    /// `<out>/sweep-<backend>.csv` and draw it as `<out>/sweep-<backend>.svg`.
    #[arg(long)]
    pub sweep: bool,
    /// Seconds of publishing per sweep point (the consumers then drain).
    #[arg(long, default_value_t = 2.0, requires = "sweep")]
    pub seconds: f64,
    /// Where the sweep's CSV and SVG go.
    #[arg(long, default_value = "target/bench")]
    pub out: PathBuf,
    /// Payload sizes the sweep tries (sizes over the backend's message limit
    /// are left out; 1 MB fits the 1 MiB limits with headers).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "100,1000,10000,100000,1000000",
        requires = "sweep"
    )]
    pub sizes: Vec<usize>,
    /// Consumer counts the sweep tries.
    #[arg(
        long = "consumer-counts",
        value_delimiter = ',',
        default_value = "1,2,4,8,16",
        requires = "sweep"
    )]
    pub consumer_counts: Vec<usize>,
    /// Key counts the sweep tries (0 = no key).
    #[arg(
        long = "key-counts",
        value_delimiter = ',',
        default_value = "0,1,16,256",
        requires = "sweep"
    )]
    pub key_counts: Vec<usize>,
    /// Batch sizes the sweep tries.
    #[arg(long, value_delimiter = ',', default_value = "1,10,100,1000", requires = "sweep")]
    pub batches: Vec<usize>,
    /// Redraw the SVG from this sweep CSV (several: one line each), run nothing.
    #[arg(long, value_name = "CSV", conflicts_with_all = ["url", "sweep", "json"])]
    pub plot: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ContractsArgs {
    #[command(subcommand)]
    pub command: ContractsCommand,
    /// The accepted schemas (kept in the service's repository).
    #[arg(long, global = true, default_value = "contracts")]
    pub locked: PathBuf,
    /// The current schemas, as the service wrote them.
    #[arg(long, global = true, default_value = "target/contracts")]
    pub current: PathBuf,
    /// Which readers must keep working: BACKWARD, FORWARD, FULL, or one of
    /// them _TRANSITIVE.
    #[arg(long, global = true, default_value = "BACKWARD")]
    pub compatibility: transport::contracts::Compatibility,
}

#[derive(Debug, Subcommand)]
pub enum ContractsCommand {
    /// Compare the current schemas with the accepted ones; exit 1 on a breaking change.
    Check,
    /// Check, then add the current schemas to the accepted ones.
    Lock,
    /// Write the AsyncAPI 3.0 document of the current catalog.
    Asyncapi {
        /// A broker the service runs against, NAME=URL (repeatable); only
        /// the scheme, host and port are written.
        #[arg(long = "server", value_name = "NAME=URL")]
        servers: Vec<transport::contracts::Server>,
        /// Write it here instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Write the Markdown event catalog of the current catalog.
    Catalog {
        /// Write it here instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Run on this broker instead of memory://.
    #[arg(long, default_value = "memory://")]
    pub url: String,
}

#[derive(Debug, Args)]
pub struct OutboxArgs {
    /// The database: postgres://… or sqlite://path.
    #[arg(long, global = true, env = "TRANSPORT_OUTBOX_DB", value_name = "URL")]
    pub db: Option<String>,
    /// The outbox table.
    #[arg(long, global = true, default_value = "transport_outbox")]
    pub table: String,
    /// Machine-readable output.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub op: OutboxOp,
}

#[derive(Debug, Subcommand)]
pub enum OutboxOp {
    /// Create the outbox table and its indexes if missing.
    Migrate {
        /// Print the SQL instead of running it (for your own migration tool).
        #[arg(long)]
        print: bool,
    },
    /// Publish committed rows to a broker until interrupted.
    Relay {
        /// Broker URL (or TRANSPORT_URL).
        #[arg(long, value_name = "URL")]
        to: Option<String>,
        /// Rows per round.
        #[arg(long, default_value_t = 100)]
        batch: usize,
        /// Wait between rounds when idle.
        #[arg(long, default_value = "100ms", value_parser = humantime::parse_duration)]
        poll: std::time::Duration,
        /// How long claimed rows stay with this relay.
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        lease: std::time::Duration,
        /// Park a row after this many failed publishes (0: never for retryable errors).
        #[arg(long, default_value_t = 20)]
        max_attempts: u32,
        /// Publish what is pending now, then exit.
        #[arg(long)]
        once: bool,
    },
    /// Pending, retrying and parked rows, the oldest pending row's age, and the parked rows.
    Status {
        /// How many parked rows to list.
        #[arg(long, default_value_t = 10)]
        parked: usize,
    },
    /// Put parked rows back for the relay (by id, error text, parking time; --all for every one).
    Retry {
        #[command(flatten)]
        pick: PickArgs,
    },
    /// Delete parked rows (by id, error text, parking time; --all for every one).
    Discard {
        #[command(flatten)]
        pick: PickArgs,
    },
    /// Rows per second through the relay into a broker, against the broker's own publish rate.
    Bench {
        /// Broker URL (or TRANSPORT_URL).
        #[arg(long, value_name = "URL")]
        to: Option<String>,
        /// Rows to enqueue and relay.
        #[arg(long, default_value_t = 20_000)]
        rows: usize,
        /// Rows per relay round and per publish_batch of the baseline.
        #[arg(long, default_value_t = 100)]
        batch: usize,
        /// Payload size in bytes.
        #[arg(long, default_value_t = 256)]
        size: usize,
    },
}
