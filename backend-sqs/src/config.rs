//! Configuration of the SQS/SNS backend: from a URL, or built in code
//! (`..Default::default()` for whatever is not set).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use transport_core::tls::TlsOptions;
use transport_core::{Error, Result, Secret};

/// Settings of an SQS + SNS transport. The secret key never shows in `Debug`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SqsConfig {
    /// AWS region (`None`: the standard chain, e.g. `AWS_REGION`).
    pub region: Option<String>,
    /// Endpoint override for emulators and compatible services.
    pub endpoint: Option<String>,
    /// The CA to trust for an `https://` endpoint (`tls_ca`), instead of the
    /// system's roots. SQS and SNS take no client certificates: `tls_cert`
    /// and `tls_key` are refused.
    pub tls_options: TlsOptions,
    /// Access key id (`None`: the standard credential chain).
    pub access_key: Option<String>,
    /// Secret access key.
    pub secret_key: Option<Secret>,
    /// FIFO topics and queues: per-key order (`MessageGroupId` = key) and
    /// publish deduplication (`MessageDeduplicationId` = id).
    pub fifo: bool,
    /// Create missing topics, queues and subscriptions and set the queues'
    /// attributes (`true`, the default). With `false` nothing is created or
    /// changed: a missing topic, queue or subscription is `NotFound`, a
    /// queue whose redrive policy does not lead to its dead-letter queue is
    /// `InvalidArgument` (create them with `transport provision`).
    pub provision: bool,
    /// Prefix of every topic and queue name.
    pub prefix: String,
    /// Long-poll wait of one receive (0 to 20 s; 0 is short polling).
    pub wait: Duration,
    /// Point-to-point (`mode=queue`): a topic is one SQS queue, published to
    /// with `SendMessage`, no SNS. It has one group of competing consumers;
    /// another group is refused. Off (`mode=topic`): SNS fan-out to a queue
    /// per group.
    pub point_to_point: bool,
    /// Longest `connect` may take (TCP, TLS and the first call) before it
    /// fails with `Timeout`: an endpoint that accepts and never answers
    /// cannot hang it.
    pub connect_timeout: Duration,
    /// Longest one SQS/SNS request may take, retries included, before it
    /// fails with `Timeout` (a long-poll receive gets `wait` on top).
    pub request_timeout: Duration,
}

impl Default for SqsConfig {
    fn default() -> Self {
        SqsConfig {
            region: None,
            endpoint: None,
            tls_options: TlsOptions::default(),
            access_key: None,
            secret_key: None,
            fifo: false,
            provision: true,
            prefix: String::new(),
            wait: Duration::from_secs(1),
            point_to_point: false,
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
        }
    }
}

impl SqsConfig {
    /// The AWS SDK configuration these settings give (region, endpoint,
    /// credentials), for raw SQS/SNS clients that should reach the same
    /// account as the transport.
    ///
    /// Fails only on a `tls_ca` file that cannot be read or is not PEM.
    pub async fn sdk_config(&self) -> Result<aws_config::SdkConfig> {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        if let Some(client) = self.https_client()? {
            loader = loader.http_client(client);
        }
        if let Some(r) = &self.region {
            loader = loader.region(aws_config::Region::new(r.clone()));
        }
        if let Some(e) = &self.endpoint {
            loader = loader.endpoint_url(e.clone());
        }
        loader = loader.timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .connect_timeout(self.connect_timeout)
                .operation_attempt_timeout(self.request_timeout)
                .operation_timeout(self.request_timeout)
                .build(),
        );
        if let (Some(ak), Some(sk)) = (&self.access_key, &self.secret_key) {
            loader = loader.credentials_provider(aws_sdk_sqs::config::Credentials::new(
                ak.clone(),
                sk.expose().to_owned(),
                None,
                None,
                "transport-url",
            ));
        }
        Ok(loader.load().await)
    }

    /// An HTTPS client that trusts `tls_ca` only; `None` without one (the
    /// SDK's default client and the system's roots).
    fn https_client(&self) -> Result<Option<aws_sdk_sqs::config::SharedHttpClient>> {
        use aws_smithy_http_client::tls;
        if !self.tls_options.is_set() {
            return Ok(None);
        }
        let material = self.tls_options.load()?;
        let Some(ca) = material.ca_pem() else {
            return Err(Error::invalid(
                "SQS and SNS endpoints take no client certificate: tls_cert and tls_key are not used",
            ));
        };
        let context = tls::TlsContext::builder()
            .with_trust_store(tls::TrustStore::empty().with_pem_certificate(ca.to_vec()))
            .build()
            .map_err(|e| Error::invalid(format!("tls_ca: {e}")))?;
        Ok(Some(
            aws_smithy_http_client::Builder::new()
                .tls_provider(tls::Provider::Rustls(tls::rustls_provider::CryptoMode::AwsLc))
                .tls_context(context)
                .build_https(),
        ))
    }

    /// Parse `sqs://?region=us-east-1&endpoint=http://127.0.0.1:4566` with
    /// optional `access_key`, `secret_key`, `fifo=true`, `provision=false`,
    /// `prefix`, `wait_s`, `mode` (`topic`, the default, or `queue` for
    /// point-to-point), `connect_timeout_ms`, `request_timeout_ms`, and
    /// `tls_ca` (a CA file for an `https://` endpoint).
    pub fn from_url(url: &str) -> Result<Self> {
        let rest = url
            .strip_prefix("sqs://")
            .ok_or_else(|| Error::invalid("an SQS URL looks like sqs://?region=us-east-1"))?;
        let query = rest.split_once('?').map_or("", |(_, q)| q);
        let mut c = SqsConfig::default();
        for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
            if c.tls_options.url_option(&k, &v)? {
                continue;
            }
            match k.as_ref() {
                "region" => c.region = Some(v.into_owned()),
                "endpoint" => c.endpoint = Some(v.into_owned()),
                "access_key" => c.access_key = Some(v.into_owned()),
                "secret_key" => c.secret_key = Some(Secret::new(v.into_owned())),
                "fifo" => c.fifo = v == "true",
                "provision" => c.provision = transport_core::backend::provision_option(&v)?,
                "create" => {
                    return Err(Error::invalid(
                        "URL option create was renamed provision (provision=false)",
                    ))
                }
                "prefix" => c.prefix = v.into_owned(),
                "mode" => {
                    c.point_to_point = match v.as_ref() {
                        "topic" => false,
                        "queue" => true,
                        other => return Err(Error::invalid(format!("mode must be topic or queue, got {other:?}"))),
                    }
                }
                "wait_s" => {
                    let s: u64 = v
                        .parse()
                        .map_err(|_| Error::invalid(format!("wait_s must be a number, got {v:?}")))?;
                    c.wait = Duration::from_secs(s.min(20));
                }
                "connect_timeout_ms" | "request_timeout_ms" => {
                    let ms: u64 = v
                        .parse()
                        .ok()
                        .filter(|ms| *ms > 0)
                        .ok_or_else(|| Error::invalid(format!("{k} must be a positive number, got {v:?}")))?;
                    let d = Duration::from_millis(ms);
                    if k == "connect_timeout_ms" {
                        c.connect_timeout = d;
                    } else {
                        c.request_timeout = d;
                    }
                }
                other => return Err(Error::invalid(format!("unknown SQS URL option {other:?}"))),
            }
        }
        if c.access_key.is_some() != c.secret_key.is_some() {
            return Err(Error::invalid("give both access_key and secret_key, or neither"));
        }
        Ok(c)
    }

    /// Without an `endpoint`, the region must be one AWS could have (the
    /// forms of its partitions: `us-east-1`, `cn-north-1`, `us-gov-west-1`,
    /// ...): a misspelt region is a configuration error, not a connection
    /// that keeps failing. With an endpoint (an emulator, a compatible
    /// service) any region is passed on.
    pub(crate) fn check(&self) -> Result<()> {
        if self.tls_options.cert.is_some() || self.tls_options.key.is_some() {
            return Err(Error::invalid(
                "SQS and SNS endpoints take no client certificate: tls_cert and tls_key are not used",
            ));
        }
        if self.tls_options.ca.is_some() && !self.endpoint.as_deref().is_some_and(|e| e.starts_with("https://")) {
            // Without an endpoint, AWS's own (and the credential chain's
            // STS/SSO calls) would be made to trust the private CA only.
            return Err(Error::invalid("URL option tls_ca needs an https:// endpoint"));
        }
        if self.wait > Duration::from_secs(20) {
            return Err(Error::invalid(format!(
                "wait is at most 20 s (SQS's longest long poll), got {:?}",
                self.wait
            )));
        }
        self.check_region()
    }

    fn check_region(&self) -> Result<()> {
        let (Some(region), None) = (&self.region, &self.endpoint) else {
            return Ok(());
        };
        const AREAS: [&str; 9] = ["us", "eu", "ap", "sa", "ca", "me", "af", "il", "mx"];
        let parts: Vec<&str> = region.split('-').collect();
        let plausible = parts.len() >= 3
            && (AREAS.contains(&parts[0]) || parts[0] == "cn")
            && parts[1..parts.len() - 1]
                .iter()
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()))
            && parts[parts.len() - 1].bytes().all(|b| b.is_ascii_digit())
            && !parts[parts.len() - 1].is_empty();
        if plausible {
            Ok(())
        } else {
            Err(Error::invalid(format!(
                "unknown AWS region {region:?} (regions look like us-east-1; give endpoint= for an emulator)"
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wait_longer_than_sqs_allows_is_invalid() {
        let ok = SqsConfig {
            wait: Duration::from_secs(20),
            ..SqsConfig::default()
        };
        assert!(ok.check().is_ok());
        let e = SqsConfig {
            wait: Duration::from_secs(21),
            ..SqsConfig::default()
        }
        .check()
        .unwrap_err();
        assert_eq!(e.kind(), transport_core::ErrorKind::InvalidArgument, "{e}");
        assert!(e.to_string().contains("at most 20 s"), "{e}");
    }

    #[test]
    fn misspelt_region_is_a_configuration_error() {
        for good in [
            "us-east-1",
            "eu-central-2",
            "cn-north-1",
            "us-gov-west-1",
            "ap-southeast-5",
            "us-isob-east-1",
        ] {
            let c = SqsConfig::from_url(&format!("sqs://?region={good}")).unwrap();
            assert!(c.check_region().is_ok(), "{good}");
        }
        for bad in [
            "us-east",
            "useast-1",
            "US-EAST-1",
            "mars-north-1",
            "us-east-1a",
            "eu--1",
        ] {
            let c = SqsConfig::from_url(&format!("sqs://?region={bad}")).unwrap();
            let e = c.check_region().unwrap_err();
            assert_eq!(e.kind(), transport_core::ErrorKind::InvalidArgument, "{bad}");
            assert!(!e.is_retryable());
        }
        let emulator = SqsConfig::from_url("sqs://?region=anything&endpoint=http://127.0.0.1:4566").unwrap();
        assert!(emulator.check_region().is_ok());
    }

    #[test]
    fn parses_and_hides_the_secret() {
        let c = SqsConfig::from_url(
            "sqs://?region=eu-west-1&endpoint=http://127.0.0.1:4566&access_key=AK&secret_key=s3cr3t&fifo=true",
        )
        .unwrap();
        assert_eq!(c.region.as_deref(), Some("eu-west-1"));
        assert!(c.fifo && c.provision);
        assert!(!format!("{c:?}").contains("s3cr3t"));
        assert!(SqsConfig::from_url("sqs://?access_key=only").is_err());
        assert!(SqsConfig::from_url("sqs://?nope=1").is_err());
        assert!(SqsConfig::from_url("sqs://?mode=queue").unwrap().point_to_point);
        assert!(!SqsConfig::from_url("sqs://?mode=topic").unwrap().point_to_point);
        assert!(SqsConfig::from_url("sqs://?mode=fanout").is_err());
    }

    #[test]
    fn tls_ca_for_an_https_endpoint_and_no_client_certificate() {
        let base = "sqs://?region=us-east-1&endpoint=https://127.0.0.1:4567";
        let c = SqsConfig::from_url(&format!("{base}&tls_ca=/ca.pem")).unwrap();
        assert!(c.check().is_ok());
        assert_eq!(c.tls_options.ca, Some(transport_core::tls::Pem::File("/ca.pem".into())));
        let aws = SqsConfig::from_url("sqs://?region=us-east-1&tls_ca=/ca.pem").unwrap();
        assert!(aws.check().is_err(), "AWS itself is never behind a private CA");
        let plain = SqsConfig::from_url("sqs://?region=us-east-1&endpoint=http://h:4566&tls_ca=/ca.pem").unwrap();
        let e = plain.check().unwrap_err();
        assert!(e.to_string().contains("https://"), "{e}");
        let mutual = SqsConfig::from_url(&format!("{base}&tls_cert=/c.pem&tls_key=/c.key")).unwrap();
        let e = mutual.check().unwrap_err();
        assert_eq!(e.kind(), transport_core::ErrorKind::InvalidArgument);
        assert!(e.to_string().contains("no client certificate"), "{e}");
    }
}
