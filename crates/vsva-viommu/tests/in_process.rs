//! The guest-driver scenario through the in-process back end (`vsva-vfio` linked into the
//! VMM).

mod common;

use common::local::LocalMachine;
use common::scenario;

#[test]
fn guest_driver_scenario_in_process() {
    let mut m = LocalMachine::new();
    scenario(m.parts());
}
