//! Conversation cores run against each other in memory: links are queues of
//! records between cores, the store a temporary SQLite file, no sockets.

use dhke::Identity;
use wire::group::Summary;

use super::*;

#[test]
fn a_big_catchup_is_split_into_records_that_fit() {
    let id = Identity::generate(&mut rand::rngs::OsRng);
    let mut log = GroupLog::new([1; 32], id.public().0);
    for i in 0..40 {
        log.write(&id, "x".repeat(16 * 1024 - (i % 3)), i as u64)
            .unwrap();
    }
    let all = log.missing_for(&Summary::default(), usize::MAX);
    let parts = split_catchup(all.clone());
    assert!(parts.len() > 10, "{} parts", parts.len());
    for part in &parts {
        let bytes = wire::encode(&PeerMsg::GroupCatchup(part.clone())).unwrap();
        assert!(bytes.len() <= wire::peer::MAX_PLAINTEXT, "{}", bytes.len());
    }
    let rejoined: Vec<_> = parts.into_iter().flat_map(|p| p.msgs).collect();
    assert_eq!(rejoined, all.msgs);
    assert!(split_catchup(Catchup::default()).is_empty());
}
