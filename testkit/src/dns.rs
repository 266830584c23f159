//! A DNS server on a loopback UDP port that answers NS queries from a table,
//! as the public DNS answers which name servers a zone is delegated to
//! (what the registrar set). chatctl's delegation check of `[domain]` asks
//! it through `CHATCTL_DNS_RESOLVER`. Any other name: NXDOMAIN.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::NS;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::net::UdpSocket;

pub struct DnsServer {
    address: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl DnsServer {
    /// Serves `delegations`: zone (no trailing dot) → its name servers.
    pub async fn start(delegations: &[(&str, &[&str])]) -> DnsServer {
        let table: BTreeMap<String, Vec<String>> = delegations
            .iter()
            .map(|(zone, servers)| {
                (
                    zone.to_ascii_lowercase(),
                    servers.iter().map(|s| s.to_string()).collect(),
                )
            })
            .collect();
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("a loopback UDP port");
        let address = socket.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut buffer = vec![0; 4096];
            loop {
                let Ok((size, peer)) = socket.recv_from(&mut buffer).await else {
                    return;
                };
                let Ok(request) = Message::from_vec(&buffer[..size]) else {
                    continue;
                };
                if let Ok(answer) = answer(&request, &table).to_vec() {
                    let _ = socket.send_to(&answer, peer).await;
                }
            }
        });
        DnsServer { address, task }
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

fn answer(request: &Message, table: &BTreeMap<String, Vec<String>>) -> Message {
    let mut response = Message::new();
    response
        .set_id(request.id())
        .set_message_type(MessageType::Response)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(request.recursion_desired())
        .set_recursion_available(true)
        .add_queries(request.queries().to_vec());
    for query in request.queries() {
        let zone = query.name().to_ascii().trim_end_matches('.').to_ascii_lowercase();
        match table.get(&zone) {
            Some(servers) if query.query_type() == RecordType::NS => {
                for server in servers {
                    let Ok(name) = Name::from_ascii(format!("{server}.")) else {
                        continue;
                    };
                    response.add_answer(Record::from_rdata(query.name().clone(), 300, RData::NS(NS(name))));
                }
            }
            Some(_) => {}
            None => {
                response.set_response_code(ResponseCode::NXDomain);
            }
        }
    }
    response
}
