use super::*;
use crate::app::testutil::{corpus_flows, feed_all, l7_of};

#[test]
fn dump() {
    for f in corpus_flows("spark.pcap") {
        let mut s = Spark::default();
        assert!(feed_all(&mut s, Dir::ToServer, &f.to_server).is_empty());
        assert!(feed_all(&mut s, Dir::ToClient, &f.to_client).is_empty());
        eprintln!("{} {} {}", f.client_port, f.server_port, serde_json::to_string(&l7_of(&s)).unwrap());
        eprintln!("probe {:?} {:?}", Spark::probe(Dir::ToServer, &f.to_server), Spark::probe(Dir::ToClient, &f.to_client));
    }
}
