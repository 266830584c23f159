//! Function output goes where Lambda sends it, CloudWatch Logs (here the
//! emulator's), so `chatctl logs` works on the local stack; and to the
//! terminal, tagged with its function.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_sdk_cloudwatchlogs::types::InputLogEvent;
use tokio::sync::mpsc;

use super::runtime::{LogLine, LogSink};

const FLUSH_INTERVAL: Duration = Duration::from_millis(300);

/// A sink for the functions' output and the task that ships it.
pub fn forwarder(logs: aws_sdk_cloudwatchlogs::Client, echo: bool) -> (LogSink, tokio::task::JoinHandle<()>) {
    let (sender, mut receiver) = mpsc::unbounded_channel::<(i64, LogLine)>();
    let sink: LogSink = Arc::new(move |line: LogLine| {
        if echo {
            eprintln!("[{}] {}", line.function, line.line);
        }
        let _ = sender.send((chat_core::ids::epoch_ms(SystemTime::now()), line));
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
            for (timestamp, line) in batch {
                let group = format!("/aws/lambda/{}", line.function);
                let stream = format!("local/[$LATEST]{}", line.instance);
                if let Ok(event) = InputLogEvent::builder().timestamp(timestamp).message(line.line).build() {
                    by_stream.entry((group, stream)).or_default().push(event);
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
        }
    });
    (sink, task)
}
