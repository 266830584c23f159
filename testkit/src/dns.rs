//! A DNS server on a loopback UDP port that answers from a table, as the
//! public DNS answers: which name servers a zone is delegated to (NS, what
//! the registrar set) and the records made by hand at a DNS provider
//! (CNAME). chatctl's `[domain]` asks it through `CHATCTL_DNS_RESOLVER`. A
//! name not in the table: NXDOMAIN.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{CNAME, NS};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::net::UdpSocket;

/// Name (lowercase, no trailing dot) → its NS and CNAME values.
#[derive(Default)]
struct Table {
    ns: BTreeMap<String, Vec<String>>,
    cname: BTreeMap<String, String>,
    /// How many questions each name got.
    asked: BTreeMap<String, usize>,
}

pub struct DnsServer {
    address: SocketAddr,
    table: Arc<Mutex<Table>>,
    task: tokio::task::JoinHandle<()>,
}

fn key(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

impl DnsServer {
    /// Serves `delegations`: zone (no trailing dot) → its name servers.
    pub async fn start(delegations: &[(&str, &[&str])]) -> DnsServer {
        let mut table = Table::default();
        for (zone, servers) in delegations {
            table.ns.insert(key(zone), servers.iter().map(|s| key(s)).collect());
        }
        let table = Arc::new(Mutex::new(table));
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("a loopback UDP port");
        let address = socket.local_addr().unwrap();
        let served = table.clone();
        let task = tokio::spawn(async move {
            let mut buffer = vec![0; 4096];
            loop {
                let Ok((size, peer)) = socket.recv_from(&mut buffer).await else {
                    return;
                };
                let Ok(request) = Message::from_vec(&buffer[..size]) else {
                    continue;
                };
                let response = answer(&request, &mut served.lock().unwrap());
                if let Ok(response) = response.to_vec() {
                    let _ = socket.send_to(&response, peer).await;
                }
            }
        });
        DnsServer { address, table, task }
    }

    /// A CNAME record made by hand: `name` → `target`.
    pub fn set_cname(&self, name: &str, target: &str) {
        self.table.lock().unwrap().cname.insert(key(name), key(target));
    }

    /// How many questions about `name` it has answered.
    pub fn asked(&self, name: &str) -> usize {
        self.table.lock().unwrap().asked.get(&key(name)).copied().unwrap_or(0)
    }

    /// `IP:PORT`, as `CHATCTL_DNS_RESOLVER` takes it.
    pub fn address(&self) -> String {
        self.address.to_string()
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn answer(request: &Message, table: &mut Table) -> Message {
    let mut response = Message::new();
    response
        .set_id(request.id())
        .set_message_type(MessageType::Response)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(request.recursion_desired())
        .set_recursion_available(true)
        .add_queries(request.queries().to_vec());
    for query in request.queries() {
        let name = key(&query.name().to_ascii());
        *table.asked.entry(name.clone()).or_default() += 1;
        let known = table.ns.contains_key(&name) || table.cname.contains_key(&name);
        if !known {
            response.set_response_code(ResponseCode::NXDomain);
            continue;
        }
        let fqdn = |value: &str| Name::from_ascii(format!("{value}.")).ok();
        let record = |rdata: RData| Record::from_rdata(query.name().clone(), 300, rdata);
        match query.query_type() {
            RecordType::NS => {
                for server in table.ns.get(&name).into_iter().flatten().filter_map(|s| fqdn(s)) {
                    response.add_answer(record(RData::NS(NS(server))));
                }
            }
            RecordType::CNAME => {
                if let Some(target) = table.cname.get(&name).and_then(|t| fqdn(t)) {
                    response.add_answer(record(RData::CNAME(CNAME(target))));
                }
            }
            _ => {}
        }
    }
    response
}
