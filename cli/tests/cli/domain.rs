//! `[domain]`: the chat at `wss://chat.example.com` — an API Gateway domain
//! name with a given certificate or one chatctl requests and validates
//! through DNS, the stage mapped at its root, and Route 53 alias records —
//! made by `up`, shown by `status`, removed by `down`, which leaves the
//! hosted zone and a given certificate alone. Bad settings stop `up` before
//! any change.

use serde_json::Value;

use crate::harness::Env;

const NAME: &str = "chat.example.com";

/// A certificate from tests/fixtures (`stem`.crt and .key), imported into
/// ACM in `region`: ISSUED at once, as an imported certificate is.
async fn import_certificate(env: &Env, stem: &str, region: &str) -> String {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let read = |ext: &str| std::fs::read(fixtures.join(format!("{stem}.{ext}"))).unwrap();
    let config = aws_sdk_acm::config::Builder::from(&env.sdk)
        .region(aws_sdk_acm::config::Region::new(region.to_string()))
        .build();
    let imported = aws_sdk_acm::Client::from_conf(config)
        .import_certificate()
        .certificate(aws_sdk_acm::primitives::Blob::new(read("crt")))
        .private_key(aws_sdk_acm::primitives::Blob::new(read("key")))
        .send()
        .await
        .unwrap();
    imported.certificate_arn().unwrap().to_string()
}

/// A public hosted zone; its id without the `/hostedzone/` prefix.
async fn hosted_zone(env: &Env, name: &str) -> String {
    let zone = env
        .route53()
        .create_hosted_zone()
        .name(name)
        .caller_reference(ulid::Ulid::generate().to_string())
        .send()
        .await
        .unwrap();
    zone.hosted_zone()
        .unwrap()
        .id()
        .trim_start_matches("/hostedzone/")
        .to_string()
}

/// The A and AAAA records of `name` in `zone`: (type, alias target).
async fn records(env: &Env, zone: &str, name: &str) -> Vec<(String, String)> {
    let sets = env
        .route53()
        .list_resource_record_sets()
        .hosted_zone_id(zone)
        .send()
        .await
        .unwrap();
    sets.resource_record_sets()
        .iter()
        .filter(|r| r.name().trim_end_matches('.') == name)
        .filter(|r| matches!(r.r#type().as_str(), "A" | "AAAA"))
        .map(|r| {
            let alias = r.alias_target().map(|a| a.dns_name().trim_end_matches('.').to_string());
            (r.r#type().as_str().to_string(), alias.unwrap_or_default())
        })
        .collect()
}

fn domain_config(certificate_arn: &str, extra: &str) -> String {
    format!("[domain]\nname = \"{NAME}\"\ncertificate_arn = \"{certificate_arn}\"\n{extra}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_puts_the_chat_on_its_domain_and_down_removes_only_what_it_made() {
    let env = Env::start().await;
    let zone = hosted_zone(&env, "example.com").await;
    let certificate = import_certificate(&env, "example.com", chat_testkit::moto::REGION).await;
    env.write_config(&domain_config(&certificate, ""));

    let dry = env.up(&["--dry-run"]).await;
    dry.assert_ok();
    for step in [
        "+ domain chat.example.com",
        "+ mapping chat.example.com",
        "+ record chat.example.com",
    ] {
        assert!(dry.stdout.contains(step), "{step}: {dry:?}");
    }

    let run = env.up(&[]).await;
    run.assert_ok();
    assert!(
        run.stdout.contains("WebSocket URL:     wss://chat.example.com"),
        "{run:?}"
    );
    let api_id = env.api_id("chat").await.unwrap();
    // The @connections URL that works: the API's own (the domain's gives 403).
    assert!(
        run.stdout.contains(&format!("https://{api_id}.execute-api.")),
        "{run:?}"
    );

    let apigateway = env.apigateway();
    let domain = apigateway.get_domain_name().domain_name(NAME).send().await.unwrap();
    let configuration = &domain.domain_name_configurations()[0];
    assert_eq!(configuration.certificate_arn(), Some(certificate.as_str()));
    assert_eq!(configuration.endpoint_type().map(|e| e.as_str()), Some("REGIONAL"));
    assert_eq!(configuration.security_policy().map(|p| p.as_str()), Some("TLS_1_2"));
    let target = configuration.api_gateway_domain_name().unwrap().to_string();
    assert_eq!(
        domain.tags().unwrap().get("chatctl:stack").map(String::as_str),
        Some("chat")
    );
    let mappings = apigateway.get_api_mappings().domain_name(NAME).send().await.unwrap();
    let mapped: Vec<(Option<&str>, Option<&str>)> = mappings.items().iter().map(|m| (m.api_id(), m.stage())).collect();
    assert_eq!(mapped, [(Some(api_id.as_str()), Some("dev"))]);
    assert_eq!(
        records(&env, &zone, NAME).await,
        [("A".to_string(), target.clone()), ("AAAA".to_string(), target.clone())]
    );

    let (code, domain) = env.status_of(NAME).await;
    assert_eq!(code, 0, "{domain}");
    let status = env.chatctl(&["status", "--output", "json"]).await;
    let report: Value = serde_json::from_str(&status.stdout).unwrap();
    let of = |kind: &str| {
        report["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["kind"] == kind && r["name"] == NAME)
            .unwrap_or_else(|| panic!("no {kind}: {report}"))
            .clone()
    };
    assert_eq!(of("domain")["state"], "present", "{report}");
    let details = of("domain")["details"].to_string();
    assert!(details.contains("certificate ISSUED, expires 2125-"), "{details}");
    assert!(details.contains(&target), "{details}");
    assert!(
        of("mapping")["details"]
            .to_string()
            .contains(&format!("/ → API {api_id} stage dev")),
        "{report}"
    );
    assert_eq!(of("record")["state"], "present", "{report}");
    assert_eq!(report["outputs"]["websocket_url"], "wss://chat.example.com");

    // Up again changes nothing.
    env.proxy.clear();
    let again = env.up(&[]).await;
    again.assert_ok();
    assert!(env.mutating_operations().is_empty(), "{:?}", env.mutating_operations());

    // Someone points the record elsewhere: drift, and `up` puts it back.
    let drifted = aws_sdk_route53::types::ResourceRecordSet::builder()
        .name(NAME)
        .r#type(aws_sdk_route53::types::RrType::A)
        .alias_target(
            aws_sdk_route53::types::AliasTarget::builder()
                .hosted_zone_id("Z2OJLYMUO9EFXC")
                .dns_name("elsewhere.example.net")
                .evaluate_target_health(false)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    change(&env, &zone, aws_sdk_route53::types::ChangeAction::Upsert, drifted).await;
    let (code, record) = env.status_of(NAME).await;
    assert_eq!(code, 3, "{record}");

    // `down` deletes the records, the mapping and the domain name; the zone
    // and the certificate given to it stay.
    let down = env.chatctl(&["down"]).await;
    down.assert_ok();
    let left = apigateway.get_domain_names().send().await.unwrap();
    assert!(left.items().is_empty(), "{left:?}");
    assert!(records(&env, &zone, NAME).await.iter().all(|(_, to)| to != &target));
    env.route53().get_hosted_zone().id(&zone).send().await.unwrap();
    let certificate = env
        .acm()
        .describe_certificate()
        .certificate_arn(&certificate)
        .send()
        .await
        .unwrap();
    assert_eq!(certificate.certificate().unwrap().status().unwrap().as_str(), "ISSUED");
}

async fn change(
    env: &Env,
    zone: &str,
    action: aws_sdk_route53::types::ChangeAction,
    set: aws_sdk_route53::types::ResourceRecordSet,
) {
    let change = aws_sdk_route53::types::Change::builder()
        .action(action)
        .resource_record_set(set)
        .build()
        .unwrap();
    let batch = aws_sdk_route53::types::ChangeBatch::builder()
        .changes(change)
        .build()
        .unwrap();
    env.route53()
        .change_resource_record_sets()
        .hosted_zone_id(zone)
        .change_batch(batch)
        .send()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_execute_api_endpoint_off_the_handlers_reply_through_the_domain() {
    let env = Env::start_plain().await;
    hosted_zone(&env, "example.com").await;
    let certificate = import_certificate(&env, "example.com", chat_testkit::moto::REGION).await;
    env.write_config(&domain_config(&certificate, "disable_execute_api = true\n"));
    let run = env.up(&[]).await;
    run.assert_ok();
    assert!(run.stdout.contains("https://chat.example.com/@connections"), "{run:?}");
    let api_id = env.api_id("chat").await.unwrap();
    let api = env.apigateway().get_api().api_id(&api_id).send().await.unwrap();
    assert_eq!(api.disable_execute_api_endpoint(), Some(true));
    let config = env
        .lambda()
        .get_function_configuration()
        .function_name("chat-sendmessage")
        .send()
        .await
        .unwrap();
    let variables = config.environment().unwrap().variables().unwrap();
    assert_eq!(
        variables.get("CHAT_CALLBACK_URL").map(String::as_str),
        Some("https://chat.example.com")
    );

    // Back on: the endpoint, and replies through it.
    env.write_config(&domain_config(&certificate, ""));
    env.up(&["--yes"]).await.assert_ok();
    let api = env.apigateway().get_api().api_id(&api_id).send().await.unwrap();
    assert_eq!(api.disable_execute_api_endpoint(), Some(false));
}

/// `up` fails with `expected` in its error, and changes nothing.
async fn refused(env: &Env, config: &str, expected: &str) {
    env.write_config(config);
    env.proxy.clear();
    let run = env.up(&[]).await;
    assert_ne!(run.code, 0, "{run:?}");
    assert!(run.stderr.contains(expected), "{expected}: {run:?}");
    let changed: Vec<String> = env
        .mutating_operations()
        .into_iter()
        .filter(|op| op != "CreateBucket" && !op.starts_with("PutBucket") && op != "PutPublicAccessBlock")
        .collect();
    assert!(changed.is_empty(), "{expected}: {changed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_domain_that_cannot_be_served_stops_up_before_any_change() {
    let env = Env::start_plain().await;
    let other_zone = hosted_zone(&env, "example.org").await;
    let wrong_name = import_certificate(&env, "other.example.org", chat_testkit::moto::REGION).await;
    let elsewhere = import_certificate(&env, "example.com", "eu-west-1").await;

    let right = import_certificate(&env, "example.com", chat_testkit::moto::REGION).await;
    // A zone given that does not contain it.
    let config = domain_config(&right, &format!("zone_id = \"{other_zone}\"\n"));
    refused(&env, &config, "which does not contain chat.example.com").await;

    hosted_zone(&env, "example.com").await;
    refused(
        &env,
        &domain_config(&wrong_name, ""),
        "is for other.example.org, not chat.example.com",
    )
    .await;
    refused(&env, &domain_config(&elsewhere, ""), "is in region eu-west-1").await;
    refused(
        &env,
        "[domain]\nname = \"chat..example.com\"\n",
        "is not a DNS host name",
    )
    .await;

    // A domain name of that name mapped to another API.
    let apigateway = env.apigateway();
    let other = apigateway
        .create_api()
        .name("someone-elses")
        .protocol_type(aws_sdk_apigatewayv2::types::ProtocolType::Websocket)
        .route_selection_expression("$request.body.action")
        .send()
        .await
        .unwrap();
    let other_id = other.api_id().unwrap();
    apigateway
        .create_stage()
        .api_id(other_id)
        .stage_name("prod")
        .send()
        .await
        .unwrap();
    apigateway
        .create_domain_name()
        .domain_name(NAME)
        .domain_name_configurations(
            aws_sdk_apigatewayv2::types::DomainNameConfiguration::builder()
                .certificate_arn(&right)
                .build(),
        )
        .send()
        .await
        .unwrap();
    apigateway
        .create_api_mapping()
        .domain_name(NAME)
        .api_id(other_id)
        .stage("prod")
        .send()
        .await
        .unwrap();
    refused(&env, &domain_config(&right, ""), &format!("mapped to API {other_id}")).await;
    // `down` leaves it alone.
    env.chatctl(&["down"]).await.assert_ok();
    apigateway.get_domain_name().domain_name(NAME).send().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_certificate_up_requests_one_validates_it_through_dns_and_down_deletes_it() {
    let env = Env::start().await;
    let zone = hosted_zone(&env, "example.com").await;
    env.write_config(&format!("[domain]\nname = \"{NAME}\"\n"));
    let dry = env.up(&["--dry-run"]).await;
    dry.assert_ok();
    assert!(dry.stdout.contains("+ certificate chat.example.com"), "{dry:?}");

    let run = env.up(&[]).await;
    run.assert_ok();
    assert!(run.stdout.contains("wss://chat.example.com"), "{run:?}");
    let acm = env.acm();
    let listed = acm.list_certificates().send().await.unwrap();
    let [summary] = listed.certificate_summary_list() else {
        panic!("one certificate: {listed:?}")
    };
    let arn = summary.certificate_arn().unwrap().to_string();
    let certificate = acm.describe_certificate().certificate_arn(&arn).send().await.unwrap();
    let certificate = certificate.certificate().unwrap();
    assert_eq!(certificate.status().unwrap().as_str(), "ISSUED");
    assert_eq!(certificate.r#type().unwrap().as_str(), "AMAZON_ISSUED");
    let validation = certificate.domain_validation_options()[0].resource_record().unwrap();
    let validation_name = validation.name().trim_end_matches('.').to_string();
    let domain = env
        .apigateway()
        .get_domain_name()
        .domain_name(NAME)
        .send()
        .await
        .unwrap();
    assert_eq!(
        domain.domain_name_configurations()[0].certificate_arn(),
        Some(arn.as_str())
    );
    let cname = |sets: &aws_sdk_route53::operation::list_resource_record_sets::ListResourceRecordSetsOutput| {
        sets.resource_record_sets()
            .iter()
            .any(|r| r.name().trim_end_matches('.') == validation_name && r.r#type().as_str() == "CNAME")
    };
    let sets = env
        .route53()
        .list_resource_record_sets()
        .hosted_zone_id(&zone)
        .send()
        .await
        .unwrap();
    assert!(cname(&sets), "the validation record: {sets:?}");

    let (code, row) = env.status_of(NAME).await;
    assert_eq!(code, 0, "{row}");
    let status = env.chatctl(&["status"]).await;
    assert!(status.stdout.contains("certificate ISSUED, expires"), "{status:?}");

    env.proxy.clear();
    env.up(&[]).await.assert_ok();
    assert!(env.mutating_operations().is_empty(), "{:?}", env.mutating_operations());

    env.chatctl(&["down"]).await.assert_ok();
    assert!(
        acm.list_certificates()
            .send()
            .await
            .unwrap()
            .certificate_summary_list()
            .is_empty()
    );
    let sets = env
        .route53()
        .list_resource_record_sets()
        .hosted_zone_id(&zone)
        .send()
        .await
        .unwrap();
    assert!(!cname(&sets), "the validation record goes: {sets:?}");
    assert!(
        env.apigateway()
            .get_domain_names()
            .send()
            .await
            .unwrap()
            .items()
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zone_the_public_dns_does_not_send_the_name_to_stops_up_with_the_fix() {
    let env = Env::start_plain().await;
    let zone = hosted_zone(&env, "example.com").await;
    let served = env.route53().get_hosted_zone().id(&zone).send().await.unwrap();
    let zone_servers: Vec<String> = served
        .delegation_set()
        .unwrap()
        .name_servers()
        .iter()
        .map(|n| n.trim_end_matches('.').to_string())
        .collect();
    env.write_config(&format!("[domain]\nname = \"{NAME}\"\n"));
    let up = env.up_args();
    let up: Vec<&str> = up.iter().map(String::as_str).collect();

    // The registrar still names its own name servers.
    let registrar = chat_testkit::dns::DnsServer::start(&[("example.com", &["ns1.registrar.example"])]).await;
    env.proxy.clear();
    let run = env
        .chatctl_env(&up, &[("CHATCTL_DNS_RESOLVER", &registrar.address())])
        .await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr
            .contains("the public DNS sends example.com to ns1.registrar.example"),
        "{run:?}"
    );
    assert!(
        run.stderr.contains(&zone_servers.join(", ")),
        "the fix names the zone's servers: {run:?}"
    );
    assert!(
        !env.mutating_operations()
            .iter()
            .any(|op| op.contains("Certificate") || op.contains("Domain")),
        "{:?}",
        env.mutating_operations()
    );

    // Delegated: up requests, validates and serves.
    let servers: Vec<&str> = zone_servers.iter().map(String::as_str).collect();
    let delegated = chat_testkit::dns::DnsServer::start(&[("example.com", &servers)]).await;
    let run = env
        .chatctl_env(&up, &[("CHATCTL_DNS_RESOLVER", &delegated.address())])
        .await;
    run.assert_ok();
    assert!(run.stdout.contains("wss://chat.example.com"), "{run:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_zone_up_says_which_record_to_make_by_hand_and_waits_for_it() {
    use tokio::io::AsyncBufReadExt;
    let env = Env::start_plain().await;
    let certificate = import_certificate(&env, "example.com", chat_testkit::moto::REGION).await;
    env.write_config(&domain_config(&certificate, ""));
    let dns = chat_testkit::dns::DnsServer::start(&[]).await;
    let up = env.up_args();
    let up: Vec<&str> = up.iter().map(String::as_str).collect();
    let mut child = env.spawn_piped(&up, &[("CHATCTL_DNS_RESOLVER", &dns.address())]);
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    // It says which record to make, then waits for the DNS to answer it.
    let told = tokio::time::timeout(std::time::Duration::from_secs(120), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some((_, target)) = line.split_once(&format!("{NAME} CNAME ")) {
                return target.trim().to_string();
            }
        }
        panic!("chatctl ended without naming the record to make");
    })
    .await
    .expect("the record to make, in time");
    let domain = env
        .apigateway()
        .get_domain_name()
        .domain_name(NAME)
        .send()
        .await
        .unwrap();
    let target = domain.domain_name_configurations()[0]
        .api_gateway_domain_name()
        .unwrap();
    assert_eq!(told, target);
    // It asks the DNS, again and again, and goes on waiting.
    let asking = std::time::Instant::now();
    while dns.asked(NAME) < 3 {
        assert!(
            asking.elapsed() < std::time::Duration::from_secs(30),
            "up never asks the DNS"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(child.try_wait().unwrap().is_none(), "up waits for the record");
    dns.set_cname(NAME, target);
    let status = tokio::time::timeout(std::time::Duration::from_secs(60), child.wait())
        .await
        .expect("up ends once the DNS answers")
        .unwrap();
    assert!(status.success());

    let status = env
        .chatctl_env(&["status"], &[("CHATCTL_DNS_RESOLVER", &dns.address())])
        .await;
    assert_eq!(status.code, 0, "{status:?}");
    assert!(status.stdout.contains("by hand"), "{status:?}");
}
