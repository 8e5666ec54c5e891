//! `Options::reply_spin`: a client that busy-waits for its replies gets the same replies as one
//! that sleeps, whether a reply comes within the spin or after it (the call then sleeps as
//! usual). That a daemon that does not answer still times a spinning call out is in
//! `crates/vsva/tests/hard_cases.rs`, beside the other stopped-daemon cases.

use std::time::Duration;

use vsva_client::{find_vsvad, Client, Options, PrivateDaemon};

fn daemon() -> PrivateDaemon {
    let vsvad = find_vsvad(None).expect("vsvad binary (cargo build -p vsvad)");
    PrivateDaemon::start(&vsvad).unwrap()
}

/// Allocates and frees `rounds` PASIDs one by one, checking each reply against the state.
fn pairs(client: &mut Client, rounds: usize) {
    let c = client.nesting_container(1).unwrap();
    let mut held = Vec::new();
    for round in 0..rounds {
        let pasid = client.pasid_alloc(c, 1, u32::MAX).unwrap();
        assert!(
            !held.contains(&pasid),
            "round {round}: {pasid} handed out twice"
        );
        held.push(pasid);
        if round % 2 == 1 {
            let p = held.remove(0);
            client.pasid_free(c, p, p).unwrap();
        }
    }
    assert_eq!(client.status().unwrap().allocated, held.len() as u64);
}

#[test]
fn replies_within_and_after_the_spin_are_the_same_replies() {
    let d = daemon();
    for spin in [Duration::from_secs(1), Duration::from_nanos(1)] {
        let mut options = Options::new(d.socket(), "spin");
        options.reply_spin = Some(spin);
        let mut client = Client::connect(options).unwrap();
        pairs(&mut client, 200);
    }
}
