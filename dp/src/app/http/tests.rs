use super::*;
use crate::app::testutil::{corpus_flows, feed_all, l7_of};

#[test]
fn dump() {
    for f in corpus_flows("http.pcap") {
        let mut h = Http::default();
        let a = feed_all(&mut h, Dir::ToServer, &f.to_server);
        let b = feed_all(&mut h, Dir::ToClient, &f.to_client);
        eprintln!("{} {} {} left {} {} {:?}", f.client_port, f.to_server.len(), f.to_client.len(), a.len(), b.len(), l7_of(&h));
    }
}
