//! The library's metrics, as a Prometheus exporter renders them: a
//! transport opened by URL counts and times its publishes, and the
//! consumer runtime counts what it received and how each delivery was
//! settled, and times the handler, all labelled with backend, topic and
//! group under the OpenTelemetry messaging names.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use metrics_exporter_prometheus::PrometheusBuilder;
use transport::runtime::{handler_fn, Consumer, Context, HandlerError};
use transport::{Message, SubscribeOptions};

#[tokio::test]
async fn publishes_and_consumer_outcomes_are_counted() {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    // Thread-local, and the test runs on one thread: other tests' metrics
    // stay out.
    let _guard = metrics::set_default_local_recorder(&recorder);

    let t = transport::connect("memory://").await.unwrap();
    let topic = "metered";
    let options = SubscribeOptions::new("billing").max_attempts(2);
    drop(t.subscribe(topic, options.clone()).await.unwrap());
    let started = Instant::now();
    t.publish(topic, Message::new("ok")).await.unwrap();
    let publish_took = started.elapsed();
    t.publish_batch(topic, vec![Message::new("ok"), Message::new("fails")])
        .await
        .unwrap();
    let refused = t.publish("bad name!", Message::new("x")).await;
    assert!(refused.is_err());

    let calls = Arc::new(AtomicU32::new(0));
    let seen = calls.clone();
    let service = handler_fn(move |ctx: Context| {
        let seen = seen.clone();
        async move {
            seen.fetch_add(1, Ordering::SeqCst);
            if ctx.message().payload.as_ref() == b"fails" {
                return Err(HandlerError::retry("downstream down"));
            }
            Ok(())
        }
    });
    // ok, ok, fails twice (then dead-lettered): 4 calls.
    let stop = {
        let calls = calls.clone();
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
            while calls.load(Ordering::SeqCst) < 4 && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    let stats = Consumer::new(t.clone(), topic, options)
        .run(service, stop)
        .await
        .unwrap();
    assert_eq!((stats.acked, stats.dead_lettered), (2, 1), "{stats:?}");

    let text = handle.render();
    let has = |line: &str| assert!(text.lines().any(|l| l == line), "no line {line:?} in:\n{text}");
    let base = r#"messaging_system="memory",messaging_destination_name="metered""#;
    has(&format!(
        r#"messaging_client_sent_messages{{{base},messaging_operation_name="publish"}} 1"#
    ));
    has(&format!(
        r#"messaging_client_sent_messages{{{base},messaging_operation_name="publish_batch"}} 2"#
    ));
    has(
        r#"messaging_client_sent_messages{messaging_system="memory",messaging_destination_name="bad name!",messaging_operation_name="publish",error_type="invalid_argument"} 1"#,
    );
    // A publish the broker did not confirm is not also counted as sent.
    let refused_labels =
        r#"messaging_system="memory",messaging_destination_name="bad name!",messaging_operation_name="publish""#;
    let unlabelled_refusal = format!("messaging_client_sent_messages{{{refused_labels}}} ");
    assert!(
        !text.lines().any(|l| l.starts_with(&unlabelled_refusal)),
        "a refused publish counted as sent:\n{text}"
    );
    // Failed publishes are timed too (OpenTelemetry records the duration
    // of every operation, error.type telling the failed ones apart).
    has(&format!(
        "messaging_client_operation_duration_count{{{refused_labels}}} 1"
    ));
    // In seconds: the one publish took more than nothing and less than
    // the wall time around it.
    let sum_prefix =
        format!(r#"messaging_client_operation_duration_sum{{{base},messaging_operation_name="publish"}} "#);
    let sum: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix(&sum_prefix))
        .unwrap_or_else(|| panic!("no {sum_prefix:?} in:\n{text}"))
        .parse()
        .expect("a number");
    assert!(
        sum > 0.0 && sum <= publish_took.as_secs_f64(),
        "the publish took {sum} by the histogram, {publish_took:?} by the clock: not seconds"
    );

    let group = format!(r#"{base},messaging_consumer_group_name="billing""#);
    has(&format!("messaging_client_consumed_messages{{{group}}} 4"));
    has(&format!(
        r#"transport_consumer_settled_messages{{{group},transport_outcome="ack"}} 2"#
    ));
    has(&format!(
        r#"transport_consumer_settled_messages{{{group},transport_outcome="retry"}} 1"#
    ));
    has(&format!(
        r#"transport_consumer_settled_messages{{{group},transport_outcome="dead_letter"}} 1"#
    ));
    has(&format!("messaging_process_duration_count{{{group}}} 4"));
    assert!(
        text.contains(&format!(
            r#"messaging_client_operation_duration_count{{{base},messaging_operation_name="publish"}} 1"#
        )),
        "{text}"
    );
}
