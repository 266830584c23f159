//! Posts to `@connections` signed by chat-core itself (SigV4 without the
//! SDK), against the test kit's endpoint, which checks signatures as API
//! Gateway does.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime};

use aws_credential_types::Credentials;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider, future};
use chat_core::delivery::{Delivery, DeliveryError};

use crate::support::Stack;

#[tokio::test]
async fn a_delivery_signed_with_a_role_session_gets_through() {
    let stack = Stack::start().await;
    let delivery = Delivery::new(&stack.role_sdk, stack.endpoint.url()).unwrap();
    delivery.send("alice-1=", "hi").await.unwrap();
    let report = delivery
        .send_all(&["bob-1=".to_string(), "carol/1".to_string()], "all", None)
        .await;
    assert_eq!(report.delivered, 2, "{report:?}");
    assert_eq!(stack.endpoint.received("alice-1="), ["hi"]);
    assert_eq!(
        stack.endpoint.received("carol/1"),
        ["all"],
        "an id's `/` is encoded and signed"
    );
}

#[tokio::test]
async fn a_signature_aws_cannot_verify_fails_at_once_and_says_so() {
    let stack = Stack::start().await;
    let wrong = stack
        .role_sdk
        .to_builder()
        .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
            "ASIATESTINGROLE",
            "not-the-secret",
            Some("role-session-token".into()),
            None,
            "test",
        )))
        .build();
    let delivery = Delivery::new(&wrong, stack.endpoint.url()).unwrap();
    let started = Instant::now();
    let result = delivery.send("alice-1=", "hi").await;
    let Err(DeliveryError::Failed(detail)) = &result else {
        panic!("{result:?}");
    };
    assert!(
        detail.starts_with("InvalidSignatureException (HTTP 403): The request signature we calculated does not match"),
        "{detail}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "not retried as a permission propagating"
    );
    assert!(stack.endpoint.received("alice-1=").is_empty());
}

/// Hands out session credentials valid for `lifetime`, counting the calls.
#[derive(Debug)]
struct Expiring {
    lifetime: Duration,
    calls: Arc<AtomicU32>,
}

impl ProvideCredentials for Expiring {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let role = chat_testkit::moto::role_credentials();
        future::ProvideCredentials::ready(Ok(Credentials::new(
            role.access_key_id(),
            role.secret_access_key(),
            role.session_token().map(str::to_string),
            Some(SystemTime::now() + self.lifetime),
            "expiring",
        )))
    }
}

#[tokio::test]
async fn credentials_are_fetched_once_and_again_when_they_near_their_expiry() {
    let stack = Stack::start().await;
    for (lifetime, fetches) in [(Duration::from_secs(3600), 1), (Duration::from_secs(60), 3)] {
        let calls = Arc::new(AtomicU32::new(0));
        let provider = Expiring {
            lifetime,
            calls: calls.clone(),
        };
        let sdk = stack
            .role_sdk
            .to_builder()
            .credentials_provider(SharedCredentialsProvider::new(provider))
            .build();
        let delivery = Delivery::new(&sdk, stack.endpoint.url()).unwrap();
        for _ in 0..3 {
            delivery.send("alice-1=", "hi").await.unwrap();
        }
        assert_eq!(
            calls.load(Ordering::SeqCst),
            fetches,
            "credentials valid for {lifetime:?}"
        );
    }
}
