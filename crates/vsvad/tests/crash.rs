//! Crash test: `kill -9` the daemon while four client processes allocate PASIDs as fast as
//! they can; restart it; every acknowledged allocation is still owned by its process, the
//! survivors resume, the dead process's PASIDs are reclaimed, and nothing is owned twice.

mod common;

use std::collections::BTreeSet;

use common::{Daemon, Helper, TestDir};
use vsva_client::MachineConfig;

/// Entry point of the helper client processes.
#[test]
#[ignore = "helper process entry point, run by the other tests"]
fn helper_process() {
    if let Ok(script) = std::env::var("VSVA_HELPER") {
        common::helper_main(&script);
    }
}

fn parse(list: &str) -> BTreeSet<u32> {
    list.split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect()
}

#[test]
fn kill9_under_load_loses_no_acknowledged_allocation() {
    for round in 0..2 {
        let dir = TestDir::new(&format!("crash{round}"));
        let mut d = Daemon::start(
            dir.path(),
            &MachineConfig::new(6)
                .settings("grace_period_secs = 30")
                .to_toml(),
            &[],
        );
        let mut helpers: Vec<Helper> = (1..=4)
            .map(|g| Helper::spawn(&d.socket, &format!("loop:{g}")))
            .collect();
        for h in &helpers {
            h.expect("READY");
        }
        // Let them allocate concurrently, then kill the daemon in the middle of it: once every
        // helper has had an allocation acknowledged (on a loaded machine that can take any
        // time), at once in the first round and a little later in the second.
        let first: Vec<u32> = helpers
            .iter()
            .map(|h| h.expect("A ").parse().unwrap())
            .collect();
        std::thread::sleep(std::time::Duration::from_millis(150 * round));
        d.kill9();
        let acked: Vec<BTreeSet<u32>> = helpers
            .iter()
            .zip(first)
            .map(|(h, first)| {
                let (lines, _err) = h.collect("A ", "ERR");
                let mut acked: BTreeSet<u32> = lines.iter().map(|p| p.parse().unwrap()).collect();
                acked.insert(first);
                acked
            })
            .collect();
        assert!(
            acked.iter().all(|a| !a.is_empty()),
            "every helper got some allocations: {acked:?}"
        );
        // One client dies while the daemon is down.
        helpers[3].kill9();
        d.restart();
        let mut restored = Vec::new();
        for h in helpers.iter_mut().take(3) {
            h.say("RESUME");
            let line = h.expect("RESUMED");
            let (flag, list) = line.split_once(' ').unwrap_or((line.as_str(), ""));
            assert_eq!(flag, "1", "helper resumed: {line}");
            restored.push(parse(list));
        }
        for (i, (a, r)) in acked.iter().zip(&restored).enumerate() {
            let lost: Vec<&u32> = a.difference(r).collect();
            assert!(
                lost.is_empty(),
                "helper {i} lost acknowledged PASIDs {lost:?}"
            );
            // Unacknowledged allocations may survive (recorded, reply lost), but only a few.
            assert!(
                r.len() <= a.len() + 1,
                "helper {i}: {} restored for {} acknowledged",
                r.len(),
                a.len()
            );
        }
        for i in 0..restored.len() {
            for j in i + 1..restored.len() {
                let both: Vec<&u32> = restored[i].intersection(&restored[j]).collect();
                assert!(
                    both.is_empty(),
                    "PASIDs {both:?} owned by helpers {i} and {j}"
                );
            }
        }
        // The dead helper's PASIDs were reclaimed: only the survivors' are allocated, and the
        // lowest free numbers are the dead one's.
        let mut me = d.client("observer");
        let owned: usize = restored.iter().map(|r| r.len()).sum();
        assert_eq!(me.status().unwrap().allocated as usize, owned);
        let c = me.nesting_container(5).unwrap();
        let dead_lowest = *acked[3].iter().next().unwrap();
        let all_owned: BTreeSet<u32> = restored.iter().flatten().copied().collect();
        let expect_first = (1..).find(|p| !all_owned.contains(p)).unwrap();
        assert!(expect_first <= dead_lowest);
        assert_eq!(me.pasid_alloc(c, 1, u32::MAX).unwrap(), expect_first);
    }
}
