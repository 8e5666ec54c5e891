//! The device ioctls' rows.

use super::*;

/// A device-ioctl row: what, the Linux check, function, cmd, bytes, errno.
type DevRow = (&'static str, &'static str, u8, u32, Vec<u8>, Errno);

/// The device ioctls.
#[test]
fn device_ioctl_rows() {
    let f = fixture();
    let pasid = f.ctx.alloc_pasid(1, 100).unwrap();
    let attach = |flags: u32, argsz: u32, pt_id: u32, pasid: u32| {
        VfioDeviceAttachIommufdPt {
            argsz,
            flags,
            pt_id,
            pasid,
        }
        .as_bytes()
        .to_vec()
    };
    let bind = |flags: u32, fd: i32| {
        VfioDeviceBindIommufd {
            argsz: 16,
            flags,
            iommufd: fd,
            out_devid: 0,
        }
        .as_bytes()
        .to_vec()
    };
    let detach = |flags: u32, argsz: u32| {
        VfioDeviceDetachIommufdPt {
            argsz,
            flags,
            pasid,
        }
        .as_bytes()
        .to_vec()
    };
    let fd = f.ctx.fd();
    let cases: Vec<DevRow> = vec![
        (
            "bind: argsz short",
            "vfio_df_ioctl_bind_iommufd (vfio/device_cdev.c)",
            5,
            VFIO_DEVICE_BIND_IOMMUFD,
            {
                let mut b = bind(0, fd);
                b[0] = 8;
                b
            },
            Errno::EINVAL,
        ),
        (
            "bind: flags",
            "vfio_df_ioctl_bind_iommufd (vfio/device_cdev.c)",
            5,
            VFIO_DEVICE_BIND_IOMMUFD,
            bind(4, fd),
            Errno::EINVAL,
        ),
        (
            "bind: another fd",
            "iommufd_ctx_from_fd (main.c)",
            5,
            VFIO_DEVICE_BIND_IOMMUFD,
            bind(0, fd + 1000),
            Errno::EBADF,
        ),
        (
            "bind: twice",
            "vfio_df_ioctl_bind_iommufd (vfio/device_cdev.c)",
            3,
            VFIO_DEVICE_BIND_IOMMUFD,
            bind(0, fd),
            Errno::EINVAL,
        ),
        (
            "bind: unknown device",
            "vfio_device_fops_cdev_open (vfio/device_cdev.c)",
            9,
            VFIO_DEVICE_BIND_IOMMUFD,
            bind(0, fd),
            Errno::ENODEV,
        ),
        (
            "attach: not bound",
            "vfio_df_ioctl_attach_pt (vfio/device_cdev.c)",
            5,
            VFIO_DEVICE_ATTACH_IOMMUFD_PT,
            attach(0, 16, f.nested, 0),
            Errno::EINVAL,
        ),
        (
            "attach: flags",
            "vfio_df_ioctl_attach_pt (vfio/device_cdev.c)",
            3,
            VFIO_DEVICE_ATTACH_IOMMUFD_PT,
            attach(2, 16, f.nested, 0),
            Errno::EINVAL,
        ),
        (
            "attach: PASID flag, argsz without pasid",
            "vfio_df_ioctl_attach_pt (vfio/device_cdev.c)",
            3,
            VFIO_DEVICE_ATTACH_IOMMUFD_PT,
            attach(VFIO_DEVICE_ATTACH_PASID, 12, f.nested, pasid),
            Errno::EINVAL,
        ),
        (
            "attach: unknown pt_id",
            "iommufd_device_change_pt (device.c)",
            3,
            VFIO_DEVICE_ATTACH_IOMMUFD_PT,
            attach(0, 16, 99, 0),
            Errno::ENOENT,
        ),
        (
            "attach: pt_id a fault queue",
            "iommufd_device_change_pt (device.c)",
            3,
            VFIO_DEVICE_ATTACH_IOMMUFD_PT,
            attach(0, 16, f.fault, 0),
            Errno::EINVAL,
        ),
        (
            "attach: PASID on an HWPT without ALLOC_PASID",
            "iommufd_hwpt_pasid_compat (device.c)",
            3,
            VFIO_DEVICE_ATTACH_IOMMUFD_PT,
            attach(VFIO_DEVICE_ATTACH_PASID, 16, f.parent, pasid),
            Errno::EINVAL,
        ),
        (
            "attach: PASID 0",
            "vsva: PASID 0 is never handed out",
            3,
            VFIO_DEVICE_ATTACH_IOMMUFD_PT,
            attach(VFIO_DEVICE_ATTACH_PASID, 16, f.nested, 0),
            Errno::EINVAL,
        ),
        (
            "attach: PASID nobody owns",
            "vsva: ownership in the host-wide space",
            3,
            VFIO_DEVICE_ATTACH_IOMMUFD_PT,
            attach(VFIO_DEVICE_ATTACH_PASID, 16, f.nested, pasid + 1),
            Errno::ENOENT,
        ),
        (
            "detach: flags",
            "vfio_df_ioctl_detach_pt (vfio/device_cdev.c)",
            3,
            VFIO_DEVICE_DETACH_IOMMUFD_PT,
            detach(2, 12),
            Errno::EINVAL,
        ),
        (
            "detach: PASID flag, argsz without pasid",
            "vfio_df_ioctl_detach_pt (vfio/device_cdev.c)",
            3,
            VFIO_DEVICE_DETACH_IOMMUFD_PT,
            detach(VFIO_DEVICE_DETACH_PASID, 8),
            Errno::EINVAL,
        ),
        (
            "unknown device ioctl",
            "vfio_device_fops_unl_ioctl (vfio/vfio_main.c)",
            3,
            0x3b79,
            detach(0, 12),
            Errno::ENOTTY,
        ),
        // A device file not bound yet answers every ioctl but BIND with EINVAL before it reads
        // the argument (the access_granted check).
        (
            "attach on an unbound device, argument too short to read",
            "vfio_device_fops_unl_ioctl (vfio/vfio_main.c)",
            5,
            VFIO_DEVICE_ATTACH_IOMMUFD_PT,
            vec![0; 4],
            Errno::EINVAL,
        ),
        (
            "detach on an unbound device, argument too short to read",
            "vfio_device_fops_unl_ioctl (vfio/vfio_main.c)",
            5,
            VFIO_DEVICE_DETACH_IOMMUFD_PT,
            vec![0; 4],
            Errno::EINVAL,
        ),
        (
            "unknown ioctl on an unbound device",
            "vfio_device_fops_unl_ioctl (vfio/vfio_main.c)",
            5,
            0x3b79,
            detach(0, 12),
            Errno::EINVAL,
        ),
    ];
    let before = f.ctx.objects();
    for (what, linux, dev, cmd, mut buf, errno) in cases {
        let got = f
            .ctx
            .device_ioctl(sid(dev), cmd, &mut buf)
            .map_err(|e| e.errno());
        assert_eq!(got, Err(errno), "{what} (follows {linux})");
        assert_eq!(f.ctx.objects(), before, "{what} changed the context");
    }
}
