//! `vsva iommufd`: an admin sees the iommufd objects another process's connection made, in
//! JSON and text; a process without a context in the daemon is `ESRCH`, in one line.

mod support;

use support::Daemon;
use vsva_client::{Client, Options};
use vsva_uapi::iommufd::IOMMU_IOAS_ALLOC;

#[test]
fn the_view_lists_a_process_objects() {
    let d = Daemon::start("iommufd");
    let mut c = Client::connect(Options::new(&d.socket, "iommufd-cli")).unwrap();
    let mut a = vec![0u8; 12];
    a[0] = 12;
    c.iommufd_ioctl(IOMMU_IOAS_ALLOC, &mut a).unwrap();
    let id = u32::from_le_bytes(a[8..12].try_into().unwrap());
    assert_eq!(id, 1, "the first object of a context");

    let pid = std::process::id().to_string();
    let v = d.json(&["iommufd", "--pid", &pid]);
    let objects = v["objects"].as_array().unwrap();
    assert_eq!(objects.len(), 1, "{v}");
    assert_eq!(objects[0]["kind"], "ioas");
    assert_eq!(objects[0]["id"], 1);
    assert_eq!(objects[0]["users"], 0);
    assert!(objects[0]["parent"].is_null());
    let text = d.vsva(&["iommufd", "--pid", &pid]);
    let out = String::from_utf8_lossy(&text.stdout);
    assert!(out.starts_with("1 iommufd object(s)"), "{out}");
    assert!(out.contains(" ioas "), "{out}");
    let none = d.vsva(&["iommufd", "--pid", "1"]);
    let err = String::from_utf8_lossy(&none.stderr);
    assert_eq!(none.status.code(), Some(1), "{err}");
    assert_eq!(err, "vsva: ESRCH: pid 1 has no context in the daemon\n");
}
