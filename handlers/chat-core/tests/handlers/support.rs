//! A chat stack for one test: a moto server with the two tables, a recording
//! `@connections` endpoint, and the handlers' [`Services`] wired to both.

#![allow(dead_code)]

use aws_config::SdkConfig;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection, ProjectionType,
    ScalarAttributeType,
};
use chat_core::event::{Response, WebSocketEvent};
use chat_core::store::schema;
use chat_core::{ChatConfig, Services};
use chat_testkit::aws_behaviour::Behaviours;
use chat_testkit::{AwsProxy, ConnectionsEndpoint, Moto, events};
use serde_json::Value;

pub struct Stack {
    pub services: Services,
    pub endpoint: ConnectionsEndpoint,
    /// The deployer's: it made the tables.
    pub sdk: SdkConfig,
    /// The functions': through the layer, a role's session, as on Lambda.
    pub role_sdk: SdkConfig,
    /// The AWS behaviour layer between the handlers and moto, when asked for.
    pub proxy: Option<AwsProxy>,
    _moto: Moto,
}

pub fn config(endpoint: &ConnectionsEndpoint) -> ChatConfig {
    ChatConfig {
        connections_table: "test-connections".into(),
        messages_table: "test-messages".into(),
        max_connections: 10_000,
        max_message_bytes: 4096,
        message_retention_days: 30,
        history_page_size: 50,
        messages_per_minute_per_user: chat_core::config::DEFAULT_MESSAGES_PER_MINUTE_PER_USER,
        connections_per_user: chat_core::config::DEFAULT_CONNECTIONS_PER_USER,
        callback_url: Some(endpoint.url().to_string()),
    }
}

impl Stack {
    pub async fn start() -> Stack {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(adjust: impl FnOnce(&mut ChatConfig)) -> Stack {
        Self::start_inner(None, adjust).await
    }

    /// A stack whose DynamoDB calls go through the AWS behaviour layer.
    pub async fn start_through(behaviours: Behaviours, adjust: impl FnOnce(&mut ChatConfig)) -> Stack {
        Self::start_inner(Some(behaviours), adjust).await
    }

    async fn start_inner(behaviours: Option<Behaviours>, adjust: impl FnOnce(&mut ChatConfig)) -> Stack {
        let moto = Moto::start();
        let proxy = match behaviours {
            Some(behaviours) => Some(AwsProxy::start_with_behaviours(moto.endpoint(), behaviours).await),
            None => None,
        };
        let (sdk, role_sdk) = match &proxy {
            Some(proxy) => (
                chat_testkit::moto::sdk_config_for(&proxy.endpoint()).await,
                chat_testkit::moto::role_sdk_config_for(&proxy.endpoint()).await,
            ),
            None => (moto.sdk_config().await, moto.sdk_config().await),
        };
        let endpoint = ConnectionsEndpoint::start().await;
        let mut config = config(&endpoint);
        adjust(&mut config);
        create_tables(&sdk, &config).await;
        Stack {
            services: Services::new(config, &role_sdk),
            endpoint,
            sdk,
            role_sdk,
            proxy,
            _moto: moto,
        }
    }

    /// Another function instance of the same stack: its own clients and memory.
    pub fn instance(&self) -> Services {
        Services::new(self.services.config.clone(), &self.role_sdk)
    }

    /// The deployer changes the functions' role policy, as `up` does: with
    /// `permission_propagation`, the functions' DynamoDB calls are refused
    /// for a while from now.
    pub async fn change_role_policy(&self) {
        let iam = aws_sdk_iam::Client::new(&self.sdk);
        let _ = iam
            .create_role()
            .role_name("chat-handlers")
            .assume_role_policy_document(
                r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"lambda.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#,
            )
            .send()
            .await;
        iam.put_role_policy()
            .role_name("chat-handlers")
            .policy_name("data")
            .policy_document(
                r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"dynamodb:*","Resource":"*"}]}"#,
            )
            .send()
            .await
            .unwrap();
    }

    /// Every DynamoDB call the handlers made through the layer is one the
    /// IAM actions chatctl grants them allow (moto does not check).
    pub fn assert_calls_allowed(&self) {
        let proxy = self.proxy.as_ref().expect("a stack through the behaviour layer");
        for call in proxy.calls().into_iter().filter(|call| call.service == "dynamodb") {
            let needs: Vec<String> = match call.operation.as_str() {
                "CreateTable" => continue,
                // Authorised by the actions of its items: Update, Put, Delete.
                "TransactWriteItems" => ["UpdateItem", "PutItem", "DeleteItem"]
                    .map(|action| format!("dynamodb:{action}"))
                    .into(),
                operation => vec![format!("dynamodb:{operation}")],
            };
            for action in needs {
                assert!(
                    chat_core::store::IAM_ACTIONS.contains(&action.as_str()),
                    "{} needs {action}, which the functions are not granted",
                    call.operation
                );
            }
        }
    }

    /// How many calls the behaviour layer answered with `code` itself.
    pub fn layer_answers(&self, code: &str) -> usize {
        self.proxy.as_ref().map_or(0, |proxy| proxy.layer_answers(code))
    }

    pub fn dynamodb(&self) -> aws_sdk_dynamodb::Client {
        aws_sdk_dynamodb::Client::new(&self.sdk)
    }

    /// Connects `id` as `user` in `room` through the connect handler.
    pub async fn connect(&self, id: &str, user: &str, room: &str) -> Response {
        let event = ws_event(events::connect(id, Some((user, room)), &[("token", "T")], None));
        chat_core::handlers::connect::handle(&self.services, event).await
    }

    /// Sends a frame on connection `id` to `route`'s handler.
    pub async fn send(&self, id: &str, route: &str, body: &str) -> Response {
        let event = ws_event(events::message(id, route, body, Some(("ignored", "ignored"))));
        match route {
            "sendmessage" => chat_core::handlers::sendmessage::handle(&self.services, event).await,
            "getmessages" => chat_core::handlers::getmessages::handle(&self.services, event).await,
            "join" => chat_core::handlers::join::handle(&self.services, event).await,
            "$default" => chat_core::handlers::default::handle(&self.services, event).await,
            other => panic!("no route {other}"),
        }
    }

    /// The last event delivered to connection `id`.
    pub fn last_event(&self, id: &str) -> Value {
        self.endpoint
            .received_json(id)
            .pop()
            .unwrap_or_else(|| panic!("{id} received nothing"))
    }

    /// Every item of a table, read with a Scan: fine for a test's own check.
    pub async fn items(
        &self,
        table: &str,
    ) -> Vec<std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>> {
        self.dynamodb()
            .scan()
            .table_name(table)
            .send()
            .await
            .unwrap()
            .items
            .unwrap_or_default()
    }

    pub async fn message_count(&self) -> usize {
        self.items(&self.services.config.messages_table).await.len()
    }

    pub async fn open_count(&self) -> i64 {
        self.services.connections.open_count().await.unwrap()
    }
}

pub fn ws_event(value: Value) -> WebSocketEvent {
    serde_json::from_value(value).expect("event does not deserialise as ApiGatewayWebsocketProxyRequest")
}

fn key(name: &str, key_type: KeyType) -> KeySchemaElement {
    KeySchemaElement::builder()
        .attribute_name(name)
        .key_type(key_type)
        .build()
        .unwrap()
}

fn attribute(name: &str) -> AttributeDefinition {
    AttributeDefinition::builder()
        .attribute_name(name)
        .attribute_type(ScalarAttributeType::S)
        .build()
        .unwrap()
}

fn keys_only_index(name: &str, partition_key: &str) -> GlobalSecondaryIndex {
    GlobalSecondaryIndex::builder()
        .index_name(name)
        .key_schema(key(partition_key, KeyType::Hash))
        .projection(Projection::builder().projection_type(ProjectionType::KeysOnly).build())
        .build()
        .unwrap()
}

/// The tables as `chatctl up` lays them out (store::schema).
pub async fn create_tables(sdk: &SdkConfig, config: &ChatConfig) {
    let client = aws_sdk_dynamodb::Client::new(sdk);
    client
        .create_table()
        .table_name(&config.connections_table)
        .billing_mode(BillingMode::PayPerRequest)
        .key_schema(key(schema::CONNECTION_ID, KeyType::Hash))
        .attribute_definitions(attribute(schema::CONNECTION_ID))
        .attribute_definitions(attribute(schema::ROOM))
        .attribute_definitions(attribute(schema::USER))
        .global_secondary_indexes(keys_only_index(schema::ROOM_INDEX, schema::ROOM))
        .global_secondary_indexes(keys_only_index(schema::USER_INDEX, schema::USER))
        .send()
        .await
        .unwrap();
    client
        .create_table()
        .table_name(&config.messages_table)
        .billing_mode(BillingMode::PayPerRequest)
        .key_schema(key(schema::CONVERSATION, KeyType::Hash))
        .key_schema(key(schema::MESSAGE_ID, KeyType::Range))
        .attribute_definitions(attribute(schema::CONVERSATION))
        .attribute_definitions(attribute(schema::MESSAGE_ID))
        .send()
        .await
        .unwrap();
}
