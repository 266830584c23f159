//! The chat in the first seconds after `up` on a real account (aws-facts.md
//! §11 "permissions right after `up`"), and a `join` racing a transaction on
//! its own connection (§10 "DynamoDB transactions"), through the test kit's
//! AWS behaviour layer: refused calls are tried again within the
//! invocation's time, and given up with a clear error past it.

use std::time::{Duration, Instant, SystemTime};

use chat_core::delivery::{Delivery, DeliveryError};
use chat_core::store::StoreError;
use chat_testkit::aws_behaviour::{Behaviours, Timings};
use chat_testkit::events;

use crate::support::{Stack, ws_event};

fn propagation(window: Duration) -> Behaviours {
    Behaviours {
        permission_propagation: true,
        timings: Timings {
            permission_propagation: window,
            ..Timings::compressed()
        },
        ..Behaviours::none()
    }
}

const HELLO: &str = r#"{"action":"sendmessage","message":"hello"}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_and_connects_right_after_a_policy_change_get_through() {
    let stack = Stack::start_through(propagation(Duration::from_secs(1)), |_| {}).await;
    assert_eq!(stack.connect("alice-1=", "alice", "lobby").await.status_code, 200);
    stack.change_role_policy().await;
    let changed = Instant::now();

    let response = stack.send("alice-1=", "sendmessage", HELLO).await;
    assert_eq!(response.status_code, 200);
    assert_eq!(stack.last_event("alice-1=")["text"], "hello");
    assert_eq!(stack.message_count().await, 1);
    assert!(
        stack.layer_answers("AccessDeniedException") > 0,
        "DynamoDB refused the function's first calls"
    );
    assert!(
        changed.elapsed() >= Duration::from_secs(1),
        "it got through once the window ended"
    );

    stack.change_role_policy().await;
    assert_eq!(
        stack.connect("bob-1=", "bob", "lobby").await.status_code,
        200,
        "a handshake in the window is admitted"
    );
    assert_eq!(stack.open_count().await, 2);
}

#[tokio::test]
async fn a_reply_refused_with_403_for_a_while_is_delivered() {
    let stack = Stack::start().await;
    stack.connect("alice-1=", "alice", "lobby").await;
    stack.connect("bob-1=", "bob", "lobby").await;
    stack.endpoint.forbid_for(Duration::from_secs(1));

    stack.send("alice-1=", "sendmessage", HELLO).await;
    assert_eq!(stack.last_event("alice-1=")["text"], "hello");
    assert_eq!(stack.last_event("bob-1=")["text"], "hello");
    assert!(stack.endpoint.attempts("bob-1=") > 1, "the first POSTs were refused");
}

/// A window longer than the invocation: the function gives up before its
/// deadline, tells the client, and says why in its error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_that_outlasts_the_invocation_is_given_up_before_its_deadline() {
    let stack = Stack::start_through(propagation(Duration::from_secs(60)), |_| {}).await;
    stack.connect("alice-1=", "alice", "lobby").await;
    stack.change_role_policy().await;

    let started = Instant::now();
    let deadline = SystemTime::now() + Duration::from_secs(2);
    let response = chat_core::runtime::with_deadline(deadline, stack.send("alice-1=", "sendmessage", HELLO)).await;
    let took = started.elapsed();
    assert_eq!(response.status_code, 500);
    assert_eq!(stack.last_event("alice-1=")["code"], "internal_error");
    assert!(took < Duration::from_secs(2), "gave up before the deadline: {took:?}");
    assert!(
        stack.layer_answers("AccessDeniedException") >= 3,
        "tried again meanwhile"
    );
    assert_eq!(stack.message_count().await, 0);

    let err = chat_core::runtime::with_deadline(
        SystemTime::now() + Duration::from_secs(1),
        stack.services.connections.get("alice-1="),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, StoreError::Refused { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("GetItem on table test-connections was refused (AccessDeniedException: User:")
            && text.contains("right after a deploy"),
        "{text}"
    );
}

#[tokio::test]
async fn a_403_that_outlasts_the_invocation_is_given_up_before_its_deadline() {
    let stack = Stack::start().await;
    stack.endpoint.forbid_for(Duration::from_secs(60));
    let delivery = Delivery::new(&stack.sdk, stack.endpoint.url()).unwrap();
    let started = Instant::now();
    let deadline = SystemTime::now() + Duration::from_secs(2);
    let result = chat_core::runtime::with_deadline(deadline, delivery.send("alice-1=", "hi")).await;
    let took = started.elapsed();
    let Err(DeliveryError::Refused { detail, .. }) = &result else {
        panic!("{result:?}");
    };
    assert!(detail.contains("ForbiddenException"), "{detail}");
    assert!(took < Duration::from_secs(2), "gave up before the deadline: {took:?}");
    assert!(stack.endpoint.attempts("alice-1=") >= 3, "tried again meanwhile");
}

/// Transactions that hold their items long enough for a test to meet them.
fn slow_transactions() -> Behaviours {
    Behaviours {
        transaction_conflicts: true,
        timings: Timings {
            transaction: Duration::from_millis(500),
            ..Timings::compressed()
        },
        ..Behaviours::none()
    }
}

/// The connect's transaction still holds the connection's item when its
/// first frame, a `join`, updates it: DynamoDB answers
/// TransactionConflictException, which the function waits out.
#[tokio::test]
async fn a_join_meeting_a_transaction_on_its_connection_waits_for_it() {
    let stack = Stack::start_through(slow_transactions(), |_| {}).await;
    assert_eq!(stack.connect("alice-1=", "alice", "lobby").await.status_code, 200);
    let response = stack
        .send("alice-1=", "join", r#"{"action":"join","room":"general"}"#)
        .await;
    assert_eq!(response.status_code, 200);
    assert_eq!(stack.last_event("alice-1=")["type"], "joined");
    assert!(stack.layer_answers("TransactionConflictException") > 0);
    assert_eq!(
        stack.services.connections.get("alice-1=").await.unwrap().unwrap().room,
        "general"
    );
}

/// A `join` that read its caller's record just before the `$disconnect`
/// began meets the latter's transaction on the item: it waits it out and
/// finds the connection gone, which the client hears as "not connected",
/// not as an internal error.
#[tokio::test]
async fn a_join_racing_its_own_disconnect_finds_the_connection_gone() {
    let stack = Stack::start_through(slow_transactions(), |_| {}).await;
    stack.connect("alice-1=", "alice", "lobby").await;
    // The `$disconnect` waits out the connect's transaction, then holds the item itself.
    let disconnect = chat_core::handlers::disconnect::handle(
        &stack.services,
        ws_event(events::disconnect("alice-1=", Some(("alice", "lobby")))),
    )
    .await;
    assert_eq!(disconnect.status_code, 200);
    // The join's update, while the `$disconnect`'s transaction holds the item.
    let moved = stack.services.connections.move_to_room("alice-1=", "general").await;
    assert_eq!(moved, Ok(false), "not registered any more");
    assert!(stack.layer_answers("TransactionConflictException") > 0);
}
