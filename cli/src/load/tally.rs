//! What a load run saw, and what it adds up to: every handshake, every
//! message sent and every delivery, kept so that lost, duplicated and
//! out-of-order deliveries can be told per recipient at the end.

use std::collections::{BTreeMap, HashMap, HashSet};

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latencies are kept in microseconds, up to a minute, to 3 significant digits.
const MAX_LATENCY_US: u64 = 60_000_000;

/// Where a message goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Every connection in the room, the sender's included.
    Room(u32),
    /// Every connection of that user and of the sender's user.
    User(u32),
}

/// One connection of the run: whose, in which room, when it opened and
/// whether the server closed it before the run did (microseconds since
/// the run began).
#[derive(Debug, Clone, Copy)]
pub struct Connection {
    pub user: u32,
    pub room: u32,
    pub opened_us: Option<u64>,
    pub lost_us: Option<u64>,
}

#[derive(Debug, Clone, Copy)]
struct Sent {
    sender: u32,
    seq: u32,
    target: Target,
    at_us: u64,
}

/// The sequence numbers one recipient got from one sender.
#[derive(Debug, Default)]
struct Seen {
    bits: Vec<u64>,
    last: Option<u32>,
}

impl Seen {
    /// Marks `seq`; false when it was already marked.
    fn mark(&mut self, seq: u32) -> bool {
        let (word, bit) = (seq as usize / 64, seq % 64);
        if self.bits.len() <= word {
            self.bits.resize(word + 1, 0);
        }
        let fresh = self.bits[word] & (1 << bit) == 0;
        self.bits[word] |= 1 << bit;
        fresh
    }

    fn has(&self, seq: u32) -> bool {
        self.bits
            .get(seq as usize / 64)
            .is_some_and(|word| word & (1 << (seq % 64)) != 0)
    }
}

/// One second of the run, counted from the first message sent.
struct Second {
    sent: u64,
    delivered: u64,
    errors: u64,
    latency: Histogram<u32>,
}

impl Second {
    fn new() -> Second {
        Second {
            sent: 0,
            delivered: 0,
            errors: 0,
            // Two digits are enough for a chart, and keep an hour's run small.
            latency: Histogram::new_with_max(MAX_LATENCY_US, 2).expect("valid histogram bounds"),
        }
    }
}

pub struct Tally {
    pub connections: Vec<Connection>,
    handshakes: Histogram<u64>,
    deliveries: Histogram<u64>,
    handshake_failures: u64,
    sent: Vec<Sent>,
    /// When the first message went, microseconds since the run began.
    sending_since_us: Option<u64>,
    seconds: Vec<Second>,
    /// By (recipient, sender).
    seen: HashMap<(u32, u32), Seen>,
    /// (sender, seq) of every message someone got.
    seen_by_anyone: HashSet<(u32, u32)>,
    delivered: u64,
    /// Deliveries owed so far: each message's recipients open when it was sent.
    owed: u64,
    open_in_room: HashMap<u32, u64>,
    open_of_user: HashMap<u32, u64>,
    duplicated: u64,
    out_of_order: u64,
    last_delivery_us: u64,
    /// `sendmessage` refusals (error events) by the connection that sent.
    refused: HashMap<u32, u64>,
    errors: BTreeMap<String, u64>,
}

impl Tally {
    pub fn new(connections: Vec<Connection>) -> Tally {
        let histogram = || Histogram::new_with_max(MAX_LATENCY_US, 3).expect("valid histogram bounds");
        Tally {
            connections,
            handshakes: histogram(),
            deliveries: histogram(),
            handshake_failures: 0,
            sent: vec![],
            sending_since_us: None,
            seconds: vec![],
            seen: HashMap::new(),
            seen_by_anyone: HashSet::new(),
            delivered: 0,
            owed: 0,
            open_in_room: HashMap::new(),
            open_of_user: HashMap::new(),
            duplicated: 0,
            out_of_order: 0,
            last_delivery_us: 0,
            refused: HashMap::new(),
            errors: BTreeMap::new(),
        }
    }

    pub fn opened(&mut self, connection: u32, handshake_us: u64, now_us: u64) {
        let state = &mut self.connections[connection as usize];
        state.opened_us = Some(now_us);
        *self.open_in_room.entry(state.room).or_default() += 1;
        *self.open_of_user.entry(state.user).or_default() += 1;
        self.handshakes.saturating_record(handshake_us.max(1));
    }

    pub fn handshake_failed(&mut self, kind: String) {
        self.handshake_failures += 1;
        *self.errors.entry(kind).or_default() += 1;
    }

    /// The server closed the connection, or it failed, before the run ended.
    pub fn lost_connection(&mut self, connection: u32, kind: String, now_us: u64) {
        let state = &mut self.connections[connection as usize];
        if state.lost_us.is_none() {
            state.lost_us = Some(now_us);
            if state.opened_us.is_some() {
                for count in [
                    self.open_in_room.get_mut(&state.room),
                    self.open_of_user.get_mut(&state.user),
                ]
                .into_iter()
                .flatten()
                {
                    *count = count.saturating_sub(1);
                }
            }
        }
        self.error(kind, now_us);
    }

    pub fn error(&mut self, kind: String, now_us: u64) {
        *self.errors.entry(kind).or_default() += 1;
        if let Some(second) = self.second(now_us) {
            second.errors += 1;
        }
    }

    /// An `error` event, or API Gateway's own error frame, on a connection:
    /// a refused `sendmessage`, counted against that connection's unseen
    /// messages at the end.
    pub fn refused(&mut self, connection: u32, kind: String, now_us: u64) {
        *self.refused.entry(connection).or_default() += 1;
        self.error(kind, now_us);
    }

    pub fn sent(&mut self, sender: u32, seq: u32, target: Target, at_us: u64) {
        self.sending_since_us.get_or_insert(at_us);
        let sender_user = self.connections[sender as usize].user;
        let open_of = |user| self.open_of_user.get(&user).copied().unwrap_or(0);
        self.owed += match target {
            Target::Room(room) => self.open_in_room.get(&room).copied().unwrap_or(0),
            Target::User(user) if user == sender_user => open_of(user),
            Target::User(user) => open_of(user) + open_of(sender_user),
        };
        self.sent.push(Sent {
            sender,
            seq,
            target,
            at_us,
        });
        if let Some(second) = self.second(at_us) {
            second.sent += 1;
        }
    }

    /// `recipient` got message `seq` of `sender`, sent at `sent_us`.
    pub fn delivered(&mut self, recipient: u32, sender: u32, seq: u32, sent_us: u64, now_us: u64) {
        let seen = self.seen.entry((recipient, sender)).or_default();
        if !seen.mark(seq) {
            self.duplicated += 1;
            return;
        }
        match seen.last {
            Some(last) if seq < last => self.out_of_order += 1,
            _ => seen.last = Some(seq),
        }
        self.seen_by_anyone.insert((sender, seq));
        self.delivered += 1;
        self.last_delivery_us = self.last_delivery_us.max(now_us);
        let latency = now_us.saturating_sub(sent_us).max(1);
        self.deliveries.saturating_record(latency);
        if let Some(second) = self.second(now_us) {
            second.delivered += 1;
            second.latency.saturating_record(latency);
        }
    }

    fn second(&mut self, now_us: u64) -> Option<&mut Second> {
        let index = (now_us.checked_sub(self.sending_since_us?)? / 1_000_000) as usize;
        while self.seconds.len() <= index {
            self.seconds.push(Second::new());
        }
        Some(&mut self.seconds[index])
    }

    pub fn open(&self) -> usize {
        self.connections
            .iter()
            .filter(|c| c.opened_us.is_some() && c.lost_us.is_none())
            .count()
    }

    pub fn sent_count(&self) -> usize {
        self.sent.len()
    }

    /// Whether every delivery owed so far has arrived.
    pub fn all_delivered(&self) -> bool {
        self.delivered >= self.owed
    }

    /// Deliveries in the last whole second, and the p99 so far (ms), for the live view.
    pub fn live(&self, now_us: u64) -> (u64, f64) {
        let last_second = self
            .sending_since_us
            .and_then(|since| now_us.checked_sub(since))
            .and_then(|elapsed| (elapsed / 1_000_000).checked_sub(1))
            .and_then(|index| self.seconds.get(index as usize))
            .map_or(0, |second| second.delivered);
        (last_second, ms(self.deliveries.value_at_quantile(0.99)))
    }

    /// What the run adds up to. A message no one got is taken as refused
    /// while its sender has `error` events left to account for it (the
    /// stack says nothing more precise); every other message is expected by
    /// each connection it goes to that was open when it was sent and stayed
    /// open, and is lost for each of those that did not get it.
    pub fn summary(&self, ended_us: u64) -> Figures {
        let mut by_room: HashMap<u32, Vec<u32>> = HashMap::new();
        let mut by_user: HashMap<u32, Vec<u32>> = HashMap::new();
        for (index, connection) in self.connections.iter().enumerate() {
            by_room.entry(connection.room).or_default().push(index as u32);
            by_user.entry(connection.user).or_default().push(index as u32);
        }
        let mut refusals_left = self.refused.clone();
        let (mut expected, mut lost, mut refused) = (0u64, 0u64, 0u64);
        for message in &self.sent {
            if !self.seen_by_anyone.contains(&(message.sender, message.seq))
                && let Some(left) = refusals_left.get_mut(&message.sender).filter(|left| **left > 0)
            {
                *left -= 1;
                refused += 1;
                continue;
            }
            let sender_user = self.connections[message.sender as usize].user;
            let recipients: Vec<u32> = match message.target {
                Target::Room(room) => by_room.get(&room).cloned().unwrap_or_default(),
                Target::User(user) => {
                    let mut both = by_user.get(&user).cloned().unwrap_or_default();
                    if user != sender_user {
                        both.extend(by_user.get(&sender_user).into_iter().flatten());
                    }
                    both
                }
            };
            for recipient in recipients {
                let connection = &self.connections[recipient as usize];
                let open_throughout =
                    connection.opened_us.is_some_and(|opened| opened <= message.at_us) && connection.lost_us.is_none();
                if !open_throughout {
                    continue;
                }
                expected += 1;
                let got = self
                    .seen
                    .get(&(recipient, message.sender))
                    .is_some_and(|seen| seen.has(message.seq));
                if !got {
                    lost += 1;
                }
            }
        }
        let sending_us = self
            .sending_since_us
            .map_or(0, |since| ended_us.max(self.last_delivery_us).saturating_sub(since));
        let per_second = |count: u64| match sending_us {
            0 => 0.0,
            us => count as f64 / (us as f64 / 1e6),
        };
        Figures {
            connections: ConnectionFigures {
                wanted: self.connections.len() as u64,
                opened: self.handshakes.len(),
                failed: self.handshake_failures,
                lost: self.connections.iter().filter(|c| c.lost_us.is_some()).count() as u64,
                handshake: Latency::of(&self.handshakes),
            },
            messages: MessageFigures {
                sent: self.sent.len() as u64,
                refused,
                expected,
                delivered: self.delivered,
                lost,
                duplicated: self.duplicated,
                out_of_order: self.out_of_order,
                sent_per_second: per_second(self.sent.len() as u64),
                delivered_per_second: per_second(self.delivered),
            },
            latency: Latency::of(&self.deliveries),
            errors: self.errors.clone(),
            timeline: self
                .seconds
                .iter()
                .enumerate()
                .map(|(second, s)| SecondFigures {
                    second: second as u64,
                    sent: s.sent,
                    delivered: s.delivered,
                    errors: s.errors,
                    p50_ms: (s.delivered > 0).then(|| ms(s.latency.value_at_quantile(0.5))),
                    p99_ms: (s.delivered > 0).then(|| ms(s.latency.value_at_quantile(0.99))),
                    max_ms: (s.delivered > 0).then(|| ms(s.latency.max())),
                })
                .collect(),
            histograms: Histograms {
                delivery: buckets(&self.deliveries),
                handshake: buckets(&self.handshakes),
            },
        }
    }
}

/// Milliseconds, to the hundredth (the histograms' resolution is coarser).
fn ms(us: u64) -> f64 {
    (us as f64 / 10.0).round() / 100.0
}

#[derive(Debug, Clone, Serialize)]
pub struct Figures {
    pub connections: ConnectionFigures,
    pub messages: MessageFigures,
    /// Send → receive, every delivery.
    pub latency: Latency,
    /// Counts by kind: handshake statuses, error events by code, closes.
    pub errors: BTreeMap<String, u64>,
    /// Per second since the first message was sent.
    pub timeline: Vec<SecondFigures>,
    pub histograms: Histograms,
}

#[derive(Debug, Clone, Serialize)]
pub struct ConnectionFigures {
    pub wanted: u64,
    pub opened: u64,
    pub failed: u64,
    /// Closed by the server (or failed) before the run ended.
    pub lost: u64,
    pub handshake: Latency,
}

#[derive(Debug, Clone, Serialize)]
pub struct MessageFigures {
    pub sent: u64,
    /// Answered with an `error` event (e.g. `rate_limited`) instead of delivered.
    pub refused: u64,
    /// Deliveries owed to connections open throughout.
    pub expected: u64,
    pub delivered: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
    pub sent_per_second: f64,
    pub delivered_per_second: f64,
}

/// Milliseconds; all zero when nothing was measured.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub count: u64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    fn of(histogram: &Histogram<u64>) -> Latency {
        Latency {
            count: histogram.len(),
            p50_ms: ms(histogram.value_at_quantile(0.5)),
            p95_ms: ms(histogram.value_at_quantile(0.95)),
            p99_ms: ms(histogram.value_at_quantile(0.99)),
            max_ms: ms(histogram.max()),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct SecondFigures {
    pub second: u64,
    pub sent: u64,
    pub delivered: u64,
    pub errors: u64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Histograms {
    pub delivery: Vec<Bucket>,
    pub handshake: Vec<Bucket>,
}

/// How many latencies fell at or under `le_ms` (and above the bucket before).
#[derive(Debug, Clone, Serialize)]
pub struct Bucket {
    pub le_ms: f64,
    pub count: u64,
}

/// Buckets doubling from 0.25 ms up to the largest value seen, from the
/// first one holding any.
fn buckets<T: hdrhistogram::Counter>(histogram: &Histogram<T>) -> Vec<Bucket> {
    if histogram.is_empty() {
        return vec![];
    }
    let mut bounds = vec![250u64];
    while bounds[bounds.len() - 1] < histogram.max() {
        bounds.push(bounds[bounds.len() - 1] * 2);
    }
    let mut buckets: Vec<Bucket> = bounds
        .iter()
        .map(|&high| Bucket {
            le_ms: ms(high),
            count: 0,
        })
        .collect();
    for value in histogram.iter_recorded() {
        let at = histogram.highest_equivalent(value.value_iterated_to());
        let index = bounds.iter().position(|&high| at <= high).unwrap_or(bounds.len() - 1);
        buckets[index].count += value.count_at_value().as_u64();
    }
    let first = buckets.iter().position(|b| b.count > 0).unwrap_or(0);
    buckets.split_off(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two users in room 0 with a connection each, a third user alone in room 1.
    fn tally() -> Tally {
        let connection = |user, room| Connection {
            user,
            room,
            opened_us: None,
            lost_us: None,
        };
        let mut tally = Tally::new(vec![connection(0, 0), connection(1, 0), connection(2, 1)]);
        for index in 0..3 {
            tally.opened(index, 1_000, 10);
        }
        tally
    }

    #[test]
    fn every_room_member_is_owed_a_message_and_missing_ones_are_lost() {
        let mut tally = tally();
        tally.sent(0, 0, Target::Room(0), 100);
        tally.delivered(0, 0, 0, 100, 1_100);
        tally.delivered(1, 0, 0, 100, 2_100);
        tally.sent(0, 1, Target::Room(0), 200);
        tally.delivered(0, 0, 1, 200, 1_200);
        assert!(!tally.all_delivered(), "connection 1 is still owed message 1");
        let figures = tally.summary(3_000_000);
        assert_eq!(figures.messages.sent, 2);
        assert_eq!(figures.messages.expected, 4);
        assert_eq!(figures.messages.delivered, 3);
        assert_eq!(figures.messages.lost, 1, "connection 1 never got message 1");
        assert_eq!(figures.latency.count, 3);
        assert_eq!(figures.latency.max_ms, 2.0);
        assert_eq!(figures.connections.opened, 3);
    }

    #[test]
    fn the_run_knows_when_every_delivery_owed_has_arrived() {
        let mut tally = tally();
        tally.lost_connection(2, "closed by the server: 1001".into(), 50);
        tally.sent(0, 0, Target::Room(0), 100);
        tally.sent(0, 1, Target::User(2), 100);
        tally.delivered(0, 0, 0, 100, 200);
        tally.delivered(1, 0, 0, 100, 200);
        assert!(
            !tally.all_delivered(),
            "the direct message is owed to the sender's connection"
        );
        tally.delivered(0, 0, 1, 100, 300);
        assert!(tally.all_delivered(), "user 2's only connection is gone");
    }

    #[test]
    fn a_direct_message_is_owed_to_both_users_connections_only() {
        let mut tally = tally();
        tally.sent(0, 0, Target::User(2), 100);
        tally.delivered(0, 0, 0, 100, 900);
        tally.delivered(2, 0, 0, 100, 900);
        let figures = tally.summary(1_000_000);
        assert_eq!((figures.messages.expected, figures.messages.lost), (2, 0));
    }

    #[test]
    fn duplicates_and_reordering_are_counted_per_recipient() {
        let mut tally = tally();
        for seq in 0..3 {
            tally.sent(0, seq, Target::Room(0), 100 + seq as u64);
        }
        tally.delivered(1, 0, 1, 100, 500);
        tally.delivered(1, 0, 0, 100, 600);
        tally.delivered(1, 0, 0, 100, 700);
        tally.delivered(1, 0, 2, 100, 800);
        let figures = tally.summary(1_000_000);
        assert_eq!(figures.messages.duplicated, 1);
        assert_eq!(figures.messages.out_of_order, 1);
        // Connection 0 (the sender's own echo) got nothing: 3 lost.
        assert_eq!(figures.messages.lost, 3);
    }

    #[test]
    fn unseen_messages_are_refused_while_error_events_account_for_them() {
        let mut tally = tally();
        for seq in 0..3 {
            tally.sent(0, seq, Target::Room(0), 100);
        }
        tally.refused(0, "error event rate_limited".into(), 150);
        tally.refused(0, "error event rate_limited".into(), 160);
        let figures = tally.summary(1_000_000);
        assert_eq!(figures.messages.refused, 2);
        assert_eq!(
            figures.messages.expected, 2,
            "the third message is owed to both members"
        );
        assert_eq!(figures.messages.lost, 2);
        assert_eq!(figures.errors["error event rate_limited"], 2);
    }

    #[test]
    fn connections_lost_midway_and_late_ones_are_not_owed_messages() {
        let mut tally = tally();
        tally.lost_connection(1, "closed by the server: 1001".into(), 50);
        tally.connections[2].opened_us = None;
        tally.sent(0, 0, Target::Room(0), 100);
        tally.delivered(0, 0, 0, 100, 200);
        let figures = tally.summary(1_000_000);
        assert_eq!((figures.messages.expected, figures.messages.lost), (1, 0));
        assert_eq!(figures.connections.lost, 1);
    }

    #[test]
    fn the_timeline_and_histograms_follow_the_deliveries() {
        let mut tally = tally();
        tally.sent(0, 0, Target::Room(0), 1_000_000);
        tally.delivered(0, 0, 0, 1_000_000, 1_000_400);
        tally.sent(0, 1, Target::Room(0), 2_500_000);
        tally.delivered(1, 0, 1, 2_500_000, 2_503_000);
        let figures = tally.summary(3_000_000);
        let timeline: Vec<(u64, u64)> = figures.timeline.iter().map(|s| (s.sent, s.delivered)).collect();
        assert_eq!(timeline, [(1, 1), (1, 1)]);
        let p99 = figures.timeline[1].p99_ms.unwrap();
        assert!((2.95..=3.05).contains(&p99), "{p99}");
        let delivery: Vec<(f64, u64)> = figures.histograms.delivery.iter().map(|b| (b.le_ms, b.count)).collect();
        assert_eq!(delivery, [(0.5, 1), (1.0, 0), (2.0, 0), (4.0, 1)]);
        assert_eq!(figures.messages.sent_per_second, 1.0);
    }
}
