//! For unit tests without any server: SDK clients whose calls are answered
//! from a script, in order, and recorded for the test to look at. A call
//! the script does not expect is answered with an error that names it, so a
//! module that makes a call too many, too few or in another order fails.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use aws_config::retry::RetryConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_smithy_runtime_api::client::http::{HttpConnector, HttpConnectorFuture, SharedHttpConnector, http_client_fn};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_types::body::SdkBody;

use crate::aws::Aws;

/// One call a test expects, and the answer it gets.
pub struct Answer {
    /// What names the call: DynamoDB's `X-Amz-Target` suffix
    /// (`DescribeTable`), IAM's `Action` (`TagRole`), or `METHOD /path…`
    /// for REST services (`PUT /2015-03-31/functions/chat-join/code`).
    pub call: &'static str,
    pub status: u16,
    pub body: String,
}

pub fn answer(call: &'static str, body: impl Into<String>) -> Answer {
    Answer {
        call,
        status: 200,
        body: body.into(),
    }
}

/// A call as it was made: what named it, and its body.
#[derive(Debug, Clone)]
pub struct Made {
    pub call: String,
    pub body: String,
}

#[derive(Debug, Default)]
struct Script {
    answers: Mutex<VecDeque<(String, u16, String)>>,
    made: Mutex<Vec<Made>>,
}

#[derive(Debug, Clone)]
pub struct Scripted(Arc<Script>);

/// What names a request, in the form [`Answer::call`] is written in.
fn call_of(request: &HttpRequest, body: &str) -> String {
    if let Some(target) = request.headers().get("x-amz-target") {
        return target.rsplit('.').next().unwrap_or(target).to_string();
    }
    if let Some(action) = body.split('&').find_map(|pair| pair.strip_prefix("Action=")) {
        return action.to_string();
    }
    let uri: axum::http::Uri = request.uri().parse().expect("a request URI");
    format!("{} {}", request.method(), uri.path())
}

impl HttpConnector for Scripted {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let body = request
            .body()
            .bytes()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default();
        let call = call_of(&request, &body);
        self.0.made.lock().unwrap().push(Made {
            call: call.clone(),
            body,
        });
        let next = self.0.answers.lock().unwrap().pop_front();
        let (status, body) = match next {
            Some((expected, status, body)) if call.starts_with(&expected) => (status, body),
            Some((expected, _, _)) => (400, unexpected(&format!("{call} (the script expects {expected})"))),
            None => (400, unexpected(&format!("{call} (the script has ended)"))),
        };
        let response = HttpResponse::new(status.try_into().expect("a status code"), SdkBody::from(body));
        HttpConnectorFuture::ready(Ok(response))
    }
}

fn unexpected(what: &str) -> String {
    serde_json::json!({"__type": "UnexpectedCall", "message": format!("unexpected call: {what}")}).to_string()
}

impl Scripted {
    /// Clients answered by `answers`, in order.
    pub fn clients(answers: Vec<Answer>) -> (Aws, Scripted) {
        let script = Scripted(Arc::new(Script {
            answers: Mutex::new(
                answers
                    .into_iter()
                    .map(|a| (a.call.to_string(), a.status, a.body))
                    .collect(),
            ),
            made: Mutex::default(),
        }));
        let connector = SharedHttpConnector::new(script.clone());
        let sdk = SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("eu-west-1"))
            .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
                "a", "b", None, None, "test",
            )))
            .retry_config(RetryConfig::disabled())
            .http_client(http_client_fn(move |_, _| connector.clone()))
            .build();
        (Aws::from_sdk(sdk).expect("a region"), script)
    }

    /// The calls made so far, by what names them.
    pub fn calls(&self) -> Vec<String> {
        self.0.made.lock().unwrap().iter().map(|m| m.call.clone()).collect()
    }

    /// The body of the `n`th call (from 0), as JSON.
    pub fn json_body(&self, n: usize) -> serde_json::Value {
        serde_json::from_str(&self.0.made.lock().unwrap()[n].body).expect("a JSON body")
    }

    /// Whether every answer was used.
    pub fn finished(&self) -> bool {
        self.0.answers.lock().unwrap().is_empty()
    }
}

/// The stack the default settings describe, named `chat` in eu-west-1.
pub fn desired(code: &std::collections::BTreeMap<super::Function, super::desired::Code>) -> super::desired::Desired {
    use crate::settings::{ConfigFile, Overrides, Settings};
    let settings = Settings::resolve(&ConfigFile::default(), &Overrides::default()).expect("the default settings");
    let names = super::Names {
        stack: "chat".into(),
        stage: "dev".into(),
        region: "eu-west-1".into(),
        account: "123456789012".into(),
    };
    super::desired::Desired::new(&settings, names, code)
}

/// A step report that drops every step.
pub fn ignore(_: super::base::Step) {}
