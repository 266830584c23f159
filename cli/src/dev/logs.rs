//! Function output goes where Lambda sends it, CloudWatch Logs (here the
//! emulator's), so `chatctl logs` works on the local stack; and to the
//! terminal, tagged with its function. The local gateway's access log
//! lines go to the stage's access log group the same way. Lines in
//! CloudWatch's embedded metric format become metrics, as on AWS.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_sdk_cloudwatchlogs::types::InputLogEvent;
use tokio::sync::{mpsc, oneshot};

use super::metrics::Recorder;
use super::runtime::{LogLine, LogSink};

const FLUSH_INTERVAL: Duration = Duration::from_millis(300);

/// A line for a log group's stream, stamped when it was made.
struct Shipped {
    timestamp: i64,
    group: String,
    stream: String,
    message: String,
}

enum Shipment {
    Line(Shipped),
    /// Answered once every line sent before it is in CloudWatch Logs.
    Flush(oneshot::Sender<()>),
}

/// Sends lines to CloudWatch Logs (the functions' output, the stage's access log).
#[derive(Clone)]
pub struct LogShipper(mpsc::UnboundedSender<Shipment>);

impl LogShipper {
    pub fn ship(&self, group: &str, stream: &str, message: String) {
        let _ = self.0.send(Shipment::Line(Shipped {
            timestamp: chat_core::ids::epoch_ms(SystemTime::now()),
            group: group.to_string(),
            stream: stream.to_string(),
            message,
        }));
    }

    /// Waits until the lines shipped so far have been sent.
    pub async fn flush(&self) {
        let (sender, receiver) = oneshot::channel();
        if self.0.send(Shipment::Flush(sender)).is_ok() {
            let _ = receiver.await;
        }
    }
}

/// A sink for the functions' output, a shipper for other lines, and the
/// task that sends them, every [`FLUSH_INTERVAL`].
pub fn forwarder(
    logs: aws_sdk_cloudwatchlogs::Client,
    echo: bool,
    metrics: Arc<Recorder>,
) -> (LogSink, LogShipper, tokio::task::JoinHandle<()>) {
    let (sender, mut receiver) = mpsc::unbounded_channel::<Shipment>();
    let shipper = LogShipper(sender);
    let functions = shipper.clone();
    let sink: LogSink = Arc::new(move |line: LogLine| {
        if echo {
            eprintln!("[{}] {}", line.function, line.line);
        }
        metrics.record_embedded(&line.line);
        let group = format!("/aws/lambda/{}", line.function);
        functions.ship(&group, &format!("local/[$LATEST]{}", line.instance), line.line);
    });
    let task = tokio::spawn(async move {
        let mut streams: HashSet<(String, String)> = HashSet::new();
        loop {
            let Some(first) = receiver.recv().await else { return };
            tokio::time::sleep(FLUSH_INTERVAL).await;
            let mut batch = vec![first];
            while let Ok(more) = receiver.try_recv() {
                batch.push(more);
            }
            let mut by_stream: HashMap<(String, String), Vec<InputLogEvent>> = HashMap::new();
            let mut flushed = vec![];
            for shipment in batch {
                let line = match shipment {
                    Shipment::Line(line) => line,
                    Shipment::Flush(done) => {
                        flushed.push(done);
                        continue;
                    }
                };
                let event = InputLogEvent::builder()
                    .timestamp(line.timestamp)
                    .message(line.message)
                    .build();
                if let Ok(event) = event {
                    by_stream.entry((line.group, line.stream)).or_default().push(event);
                }
            }
            for ((group, stream), events) in by_stream {
                if streams.insert((group.clone(), stream.clone())) {
                    // Exists already after a restart: fine.
                    let _ = logs
                        .create_log_stream()
                        .log_group_name(&group)
                        .log_stream_name(&stream)
                        .send()
                        .await;
                }
                let _ = logs
                    .put_log_events()
                    .log_group_name(&group)
                    .log_stream_name(&stream)
                    .set_log_events(Some(events))
                    .send()
                    .await;
            }
            for done in flushed {
                let _ = done.send(());
            }
        }
    });
    (sink, shipper, task)
}
