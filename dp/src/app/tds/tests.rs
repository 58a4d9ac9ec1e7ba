use super::*;
use crate::app::testutil::{corpus_flows, feed_all, l7_of};

#[test]
fn smoke() {
    for f in corpus_flows("tds.pcap") {
        let mut t = Tds::default();
        feed_all(&mut t, Dir::ToServer, &f.to_server);
        eprintln!("{} {:?} {:?}", f.client_port, Tds::probe(Dir::ToServer, &f.to_server), l7_of(&t));
    }
    for f in corpus_flows(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/captures/tds-login7.pcap")) {
        let mut t = Tds::default();
        feed_all(&mut t, Dir::ToServer, &f.to_server);
        feed_all(&mut t, Dir::ToClient, &f.to_client);
        eprintln!("{} {:?} {:?} {:?}", f.client_port, Tds::probe(Dir::ToServer, &f.to_server), Tds::probe(Dir::ToClient, &f.to_client), l7_of(&t));
        eprintln!("{:?}", t.threats);
    }
}
