//! Tests of the configuration: parsing, defaults, overrides and every refusal, each naming
//! its key.

use super::*;

fn no_env(_: &str) -> Option<std::ffi::OsString> {
    None
}

fn settings(text: &str) -> Result<Settings, ConfigError> {
    Config::from_toml(text, Path::new("t.toml"))?.validate(1000, &no_env)
}

#[test]
fn empty_file_gives_the_default_machine() {
    let s = settings("").unwrap();
    assert_eq!(s.pasid_quota, 1000);
    assert_eq!(s.iommu.pasid_bits, 20);
    assert!(s.iommu.nesting && s.iommu.fl5lp);
    assert_eq!(s.devices.len(), 4);
    assert_eq!(s.devices[0].source_id, SourceId::new(0, 3, 0));
    assert_eq!(s.devices[0].group, Some(1));
    assert_eq!(s.socket, PathBuf::from("/tmp/vsva-1000/vsvad.sock"));
    assert_eq!(s.durability, Durability::Sync);
    assert_eq!(s.grace_period, Duration::from_secs(30));
}

#[test]
fn errors_name_the_key() {
    let err = settings("[limits]\nmax_frame = 10\n").unwrap_err();
    assert_eq!(
        err.to_string(),
        "config key limits.max_frame = 10: must be between 4096 and 16777216"
    );
    let err = settings("pasid_bitz = 3\n").unwrap_err().to_string();
    assert!(err.contains("pasid_bitz"), "{err}");
    let err = settings("[iommu]\npasid_bits = 21\n").unwrap_err();
    assert_eq!(
        err.to_string(),
        "config key iommu.pasid_bits = 21: must be between 1 and 20"
    );
    let err = settings("[[devices]]\nbdf = \"zz\"\ngroup = 1\n").unwrap_err();
    assert!(err
        .to_string()
        .starts_with("config key devices[0].bdf = zz:"));
    let err = settings("metrics_addr = \"10.0.0.1:80\"\n").unwrap_err();
    assert!(err.to_string().contains("loopback"));
    let err = settings("durability = \"maybe\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("durability"), "{err}");
    let err =
        settings("[[devices]]\nbdf = \"00:03.0\"\n[[mdevs]]\nparent = \"00:04.0\"\ngroup = 9\n")
            .unwrap_err();
    assert_eq!(
        err.to_string(),
        "config key mdevs[0].parent = 00:04.0: is not one of the configured devices"
    );
}

/// What the machine would refuse at start is refused by the configuration, so
/// `--check-config` never passes a file the daemon does not start with.
#[test]
fn the_restore_function_and_duplicate_mdev_groups_are_refused_by_the_config() {
    for (text, want) in [
        (
            "[[devices]]\nbdf = \"00:03.0\"\ngroup = 4294967295\n",
            "config key devices[0].group = 4294967295: is reserved for the daemon",
        ),
        (
            "[[devices]]\nbdf = \"ff:1f.7\"\ngroup = 5\n",
            "config key devices[0].bdf = ff:1f.7: is reserved for the daemon",
        ),
        (
            "[[devices]]\nbdf = \"00:10.0\"\n[[mdevs]]\nparent = \"00:10.0\"\ngroup = 4294967295\n",
            "config key mdevs[0].group = 4294967295: is reserved for the daemon",
        ),
        (
            "[[devices]]\nbdf = \"00:10.0\"\n[[mdevs]]\nparent = \"00:10.0\"\ngroup = 3\n\
             [[mdevs]]\nparent = \"00:10.0\"\ngroup = 3\n",
            "config key mdevs[1].group = 3: is already the group of mdevs[0]",
        ),
    ] {
        let err = settings(text).unwrap_err().to_string();
        assert!(err.starts_with(want), "{text}: {err}");
    }
}

/// The machine refuses ATS without the IOMMU's device TLB, an mdev parent without a
/// PASID capability and an mdev left without a default PASID; `--check-config` must
/// refuse them too, naming the key, and accept the largest machine that starts.
#[test]
fn what_the_machine_cannot_build_is_refused_by_the_config() {
    for (text, want) in [
        (
            "[iommu]\ndevice_tlb = false\n[[devices]]\nbdf = \"00:03.0\"\ngroup = 1\nats = true\n",
            "config key devices[0].ats = true: needs iommu.device_tlb = true",
        ),
        (
            "[[devices]]\nbdf = \"00:10.0\"\npasid_width = 0\n[[mdevs]]\nparent = \"00:10.0\"\ngroup = 10\n",
            "config key mdevs[0].parent = 00:10.0: has no PASID capability",
        ),
        (
            "[[devices]]\nbdf = \"00:10.0\"\npasid_width = 1\n[[mdevs]]\nparent = \"00:10.0\"\ngroup = 10\n\
             [[mdevs]]\nparent = \"00:10.0\"\ngroup = 11\n",
            "config key mdevs[1].parent = 00:10.0: has no PASID left",
        ),
        (
            "[iommu]\npasid_bits = 2\n[[devices]]\nbdf = \"00:10.0\"\n[[mdevs]]\nparent = \"00:10.0\"\ngroup = 10\n\
             [[mdevs]]\nparent = \"00:10.0\"\ngroup = 11\n[[mdevs]]\nparent = \"00:10.0\"\ngroup = 12\n\
             [[mdevs]]\nparent = \"00:10.0\"\ngroup = 13\n",
            "config key mdevs[3].parent = 00:10.0: has no PASID left",
        ),
    ] {
        let err = settings(text).unwrap_err().to_string();
        assert!(err.starts_with(want), "{text}: {err}");
    }
    // Three mdevs fit PASIDs 1..=3 of a 2-bit space, and the daemon builds them.
    let s = settings(
        "[iommu]\npasid_bits = 2\n[[devices]]\nbdf = \"00:10.0\"\n[[mdevs]]\nparent = \"00:10.0\"\ngroup = 10\n\
         [[mdevs]]\nparent = \"00:10.0\"\ngroup = 11\n[[mdevs]]\nparent = \"00:10.0\"\ngroup = 12\n",
    )
    .unwrap();
    assert_eq!(s.mdevs.len(), 3);
    crate::machine::build(&s).unwrap();
}

#[test]
fn overrides_win() {
    let mut c = Config::from_toml("pasid_quota = 5\n", Path::new("t")).unwrap();
    c.apply(&Overrides {
        pasid_quota: Some(7),
        socket: Some("/tmp/x.sock".into()),
        durability: Some(Durability::Off),
        ..Overrides::default()
    });
    let s = c.validate(0, &no_env).unwrap();
    assert_eq!(s.pasid_quota, 7);
    assert_eq!(s.socket, PathBuf::from("/tmp/x.sock"));
    assert_eq!(s.durability, Durability::Off);
    assert_eq!(s.state_dir, PathBuf::from("/var/lib/vsva"));
}

#[test]
fn bdf_parsing() {
    assert_eq!(parse_bdf("00:03.0"), Some(SourceId::new(0, 3, 0)));
    assert_eq!(
        parse_bdf("0000:1f:1f.7"),
        Some(SourceId::new(0x1f, 0x1f, 7))
    );
    assert_eq!(parse_bdf("00:20.0"), None);
    assert_eq!(parse_bdf("00:03.8"), None);
    assert_eq!(parse_bdf("003.0"), None);
    assert_eq!(parse_bdf("100:03.0"), None);
}

#[test]
fn zero_quota_and_no_devices_are_refused_and_toml_errors_keep_their_lines() {
    for (text, key) in [
        ("pasid_quota = 0\n", "config key pasid_quota = 0:"),
        ("devices = []\n", "config key devices = []:"),
    ] {
        let e = settings(text).unwrap_err().to_string();
        assert!(e.starts_with(key), "{text}: {e}");
    }
    let e = settings("[iommu]\ntable_pool_mib = 8\ntable_pool_share_mib = 9\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("config key iommu.table_pool_share_mib = 9:"),
        "{e}"
    );
    let s = settings("[iommu]\ntable_pool_share_mib = 2\n").unwrap();
    assert_eq!(s.table_pool_share_bytes, 2 << 20);
    let e = settings("[limits]\nmax_frame = \"big\"\n")
        .unwrap_err()
        .to_string();
    assert!(e.lines().count() > 2, "{e}");
    assert!(e.lines().any(|l| l.contains("max_frame = \"big\"")), "{e}");
}

/// A default socket path that is too long is blamed on the variable it was built from, not
/// on a `socket` key the file does not have.
#[test]
fn a_too_long_default_socket_names_the_variable_it_was_built_from() {
    let long = format!("/run/{}", "r".repeat(110));
    let env = |k: &str| (k == "XDG_RUNTIME_DIR").then(|| std::ffi::OsString::from(&long));
    let e = Config::default()
        .validate(1000, &env)
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("default socket (built from $XDG_RUNTIME_DIR) /run/rrr"),
        "{e}"
    );
}
