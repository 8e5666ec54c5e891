//! Unknown commands, SET_IOMMU, CHECK_EXTENSION and GET_INFO.

use super::*;

#[test]
fn other_commands() {
    let fx = fixture();
    assert_eq!(call(&fx.nest, 0x3b7f, &mut []), Err(ENOTTY));
    assert_eq!(call(&fx.nest, 0xdead, &mut [0; 16]), Err(ENOTTY));
    // Before the IOMMU type is set, the VFIO core answers EINVAL for any driver ioctl.
    assert_eq!(call(&fx.bare, 0x3b7f, &mut []), Err(EINVAL));
    // PASID_REQUEST and NESTING_OP are not answered as unknown on any container type.
    assert_ne!(call(&fx.type1, PR, &mut preq(16, ALLOC, 1, 2)), Err(ENOTTY));
    assert_ne!(call(&fx.type1, VFIO_IOMMU_NESTING_OP, &mut []), Err(ENOTTY));
}

#[test]
fn container_and_get_info_rows() {
    use vsva_uapi::vfio::{VFIO_CHECK_EXTENSION, VFIO_IOMMU_GET_INFO, VFIO_SET_IOMMU};
    let info = |argsz: u32, len: usize| {
        let mut v = vec![0u8; len];
        v[..4].copy_from_slice(&argsz.to_le_bytes());
        v
    };
    run(vec![
        // Linux 5.8 vfio_iommu_type1.c `vfio_iommu_type1_check_extension`: types 1, 3, 6.
        row(
            "CHECK_EXTENSION type1 v1",
            On::Bare,
            VFIO_CHECK_EXTENSION,
            1u64.to_le_bytes().to_vec(),
            Ok(1),
        ),
        row(
            "CHECK_EXTENSION nesting",
            On::Bare,
            VFIO_CHECK_EXTENSION,
            6u64.to_le_bytes().to_vec(),
            Ok(1),
        ),
        row(
            "CHECK_EXTENSION type 2",
            On::Bare,
            VFIO_CHECK_EXTENSION,
            2u64.to_le_bytes().to_vec(),
            Ok(0),
        ),
        // Linux 5.8 vfio.c `vfio_ioctl_set_iommu`: type1 v1 is taken; no driver → ENODEV.
        row(
            "SET_IOMMU type1 v1",
            On::Bare,
            VFIO_SET_IOMMU,
            1u64.to_le_bytes().to_vec(),
            Ok(0),
        ),
        row(
            "SET_IOMMU type 2",
            On::Bare,
            VFIO_SET_IOMMU,
            2u64.to_le_bytes().to_vec(),
            Err(ENODEV),
        ),
        // Linux 5.8 `vfio_iommu_type1_get_info`: minsz 16 copied, then argsz checked; the
        // chain is copied out only when argsz holds it, and that copy can fault.
        row(
            "GET_INFO 15 bytes",
            On::Nest,
            VFIO_IOMMU_GET_INFO,
            info(16, 15),
            Err(EFAULT),
        ),
        row(
            "GET_INFO argsz 15",
            On::Nest,
            VFIO_IOMMU_GET_INFO,
            info(15, 32),
            Err(EINVAL),
        ),
        row(
            "GET_INFO argsz 16 beyond a 16-byte buffer",
            On::Nest,
            VFIO_IOMMU_GET_INFO,
            info(16, 16),
            Ok(0),
        ),
        row(
            "GET_INFO argsz 24 in 20 bytes: the info copy faults",
            On::Nest,
            VFIO_IOMMU_GET_INFO,
            info(24, 20),
            Err(EFAULT),
        ),
        row(
            "GET_INFO argsz 4096 in 64 bytes: the chain copy faults",
            On::Nest,
            VFIO_IOMMU_GET_INFO,
            info(4096, 64),
            Err(EFAULT),
        ),
        row(
            "GET_INFO argsz 100 in 24 bytes: too small for the chain, size reported",
            On::Nest,
            VFIO_IOMMU_GET_INFO,
            info(100, 24),
            Ok(0),
        ),
    ]);
    // v5 04/15: a nesting container holds one group; a second → EINVAL (was EBUSY).
    let fx = fixture();
    let err = fx.nest.attach_group(GroupId(6)).unwrap_err();
    assert_eq!(err.errno(), EBUSY, "group 6 is held by the bare container");
    drop(fx.bare);
    let err = fx.nest.attach_group(GroupId(6)).unwrap_err();
    assert_eq!(err.errno(), EINVAL, "{err}");
}
