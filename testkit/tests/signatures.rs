//! The `@connections` stand-in checks SigV4 as API Gateway does: the SDK's
//! signed posts (what AWS accepts) get through; a wrong secret, a stale
//! date, another region, a changed body or no signature at all get AWS's
//! 403 and deliver nothing.

use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sdk_apigatewaymanagement::error::ProvideErrorMetadata;
use aws_sdk_apigatewaymanagement::primitives::Blob;
use aws_smithy_async::time::StaticTimeSource;
use chat_testkit::ConnectionsEndpoint;
use chat_testkit::moto::{role_sdk_config_for, sdk_config_for};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn client(sdk: &aws_config::SdkConfig) -> aws_sdk_apigatewaymanagement::config::Builder {
    aws_sdk_apigatewaymanagement::config::Builder::from(sdk).retry_config(aws_config::retry::RetryConfig::disabled())
}

async fn post(config: aws_sdk_apigatewaymanagement::config::Builder, id: &str) -> Result<(), (String, String)> {
    aws_sdk_apigatewaymanagement::Client::from_conf(config.build())
        .post_to_connection()
        .connection_id(id)
        .data(Blob::new("hi"))
        .send()
        .await
        .map(|_| ())
        .map_err(|e| {
            let e = e.into_service_error();
            (
                e.code().unwrap_or_default().to_string(),
                e.message().unwrap_or_default().to_string(),
            )
        })
}

#[tokio::test]
async fn posts_signed_by_the_sdk_get_through_and_bad_signatures_get_awss_403() {
    let endpoint = ConnectionsEndpoint::start().await;
    let deployer = sdk_config_for(endpoint.url()).await;
    let role = role_sdk_config_for(endpoint.url()).await;

    post(client(&deployer), "a=").await.expect("the deployer's keys");
    post(client(&role), "b=").await.expect("a role's session, token signed");
    assert_eq!(endpoint.received("a="), ["hi"]);
    assert_eq!(endpoint.received("b="), ["hi"]);

    let wrong_secret = client(&deployer).credentials_provider(Credentials::new("testing", "nope", None, None, "t"));
    let (code, message) = post(wrong_secret, "c=").await.unwrap_err();
    assert_eq!(code, "InvalidSignatureException");
    assert!(
        message.starts_with("The request signature we calculated does not match"),
        "{message}"
    );

    let unknown_key = client(&deployer).credentials_provider(Credentials::new("AKIAUNKNOWN", "x", None, None, "t"));
    assert_eq!(
        post(unknown_key, "c=").await.unwrap_err().0,
        "UnrecognizedClientException"
    );

    let no_token = client(&role).credentials_provider(Credentials::new("ASIATESTINGROLE", "testing", None, None, "t"));
    assert_eq!(post(no_token, "c=").await.unwrap_err().0, "UnrecognizedClientException");

    let stale = client(&deployer).time_source(StaticTimeSource::new(SystemTime::now() - Duration::from_secs(600)));
    let (code, message) = post(stale, "c=").await.unwrap_err();
    assert_eq!(code, "InvalidSignatureException");
    assert!(message.starts_with("Signature expired"), "{message}");

    let elsewhere = client(&deployer).region(aws_config::Region::new("eu-west-1"));
    let (code, message) = post(elsewhere, "c=").await.unwrap_err();
    assert_eq!(code, "InvalidSignatureException");
    assert!(message.contains("valid region"), "{message}");

    assert!(endpoint.received("c=").is_empty(), "nothing refused was delivered");
    assert_eq!(endpoint.attempts("c="), 0, "refused before it counts as an attempt");
}

/// The endpoint's `host:port`.
fn authority(endpoint: &ConnectionsEndpoint) -> String {
    let url = endpoint.url().trim_start_matches("http://");
    url.split('/').next().unwrap().to_string()
}

/// A raw HTTP/1.1 exchange: the answer, status line first.
async fn raw_post(endpoint: &ConnectionsEndpoint, head: &str, body: &str) -> String {
    let authority = authority(endpoint);
    let mut stream = tokio::net::TcpStream::connect(&authority).await.unwrap();
    let request = format!(
        "POST /dev/@connections/d%3D HTTP/1.1\r\nhost: {authority}\r\n{head}content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    answer
}

#[tokio::test]
async fn an_unsigned_post_or_a_signature_replayed_on_another_body_is_refused() {
    let endpoint = ConnectionsEndpoint::start().await;
    let answer = raw_post(&endpoint, "", "hi").await;
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    assert!(answer.contains("Missing Authentication Token"), "{answer}");

    // A signature made for "hi", sent with "ho": the body is signed.
    let credentials = chat_testkit::moto::test_credentials();
    let identity = credentials.into();
    let authority = authority(&endpoint);
    let now = SystemTime::now();
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(chat_testkit::moto::REGION)
        .name("execute-api")
        .time(now)
        .settings(aws_sigv4::http_request::SigningSettings::default())
        .build()
        .unwrap()
        .into();
    let url = format!("http://{authority}/dev/@connections/d%3D");
    let signable = aws_sigv4::http_request::SignableRequest::new(
        "POST",
        url.as_str(),
        std::iter::empty(),
        aws_sigv4::http_request::SignableBody::Bytes(b"hi"),
    )
    .unwrap();
    let (instructions, _) = aws_sigv4::http_request::sign(signable, &params).unwrap().into_parts();
    let head: String = instructions
        .headers()
        .map(|(name, value)| format!("{name}: {value}\r\n"))
        .collect();
    assert!(raw_post(&endpoint, &head, "hi").await.starts_with("HTTP/1.1 200"));
    let answer = raw_post(&endpoint, &head, "ho").await;
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    assert!(answer.contains("InvalidSignatureException"), "{answer}");
    assert_eq!(endpoint.received("d="), ["hi"]);
}
