//! Message kinds: the `kind` field of a frame header.

macro_rules! kinds {
    ($($(#[$doc:meta])* $name:ident = $value:literal, $label:literal;)+) => {
        /// A message kind: the `kind` field of a frame header. A reply has the kind of its
        /// request and the `REPLY` flag.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u16)]
        pub enum Kind {
            $($(#[$doc])* $name = $value,)+
        }

        impl Kind {
            /// Every kind, in numeric order.
            pub const ALL: &'static [Kind] = &[$(Kind::$name,)+];

            /// The kind with this number, if this version defines it.
            pub const fn from_u16(raw: u16) -> Option<Kind> {
                match raw {
                    $($value => Some(Kind::$name),)+
                    _ => None,
                }
            }

            /// How many file descriptors travel with a request of this kind.
            pub const fn nfds(self) -> u8 {
                match self {
                    Kind::MemRegister => 1,
                    _ => 0,
                }
            }

            /// How many file descriptors travel with a successful reply of this kind, at
            /// most (`DEVICE_OPEN`: one per memory region handed over).
            pub const fn reply_nfds(self) -> u8 {
                match self {
                    Kind::EventsOpen => 1,
                    Kind::DeviceOpen => 4,
                    _ => 0,
                }
            }

            /// A short lower-case label for logs and metrics (`"ioctl"`).
            pub const fn label(self) -> &'static str {
                match self {
                    $(Kind::$name => $label,)+
                }
            }
        }
    };
}

kinds! {
    /// Handshake: first frame of every connection.
    Hello = 0x0001, "hello";
    /// Echo: the reply carries the request's bytes back.
    Ping = 0x0002, "ping";
    /// Open a VFIO container; the result is its handle.
    OpenContainer = 0x0101, "open_container";
    /// Close a container handle.
    CloseContainer = 0x0102, "close_container";
    /// Attach an IOMMU group to a container (`VFIO_GROUP_SET_CONTAINER`).
    AttachGroup = 0x0103, "attach_group";
    /// Detach an IOMMU group from its container (`VFIO_GROUP_UNSET_CONTAINER`).
    DetachGroup = 0x0104, "detach_group";
    /// A container ioctl: command number and the uAPI argument bytes, unchanged.
    Ioctl = 0x0105, "ioctl";
    /// Register guest memory, shared by a file descriptor.
    MemRegister = 0x0201, "mem_register";
    /// Unregister guest memory.
    MemUnregister = 0x0202, "mem_unregister";
    /// A device DMA through the IOMMU.
    DeviceDma = 0x0301, "device_dma";
    /// A read or write of a device's PCI configuration space (as vfio-pci virtualizes it).
    DeviceConfig = 0x0302, "device_config";
    /// Daemon status: capacity, usage, uptime, devices.
    Status = 0x0401, "status";
    /// Per-process PASID sets (all of them for an admin, one's own otherwise).
    Sets = 0x0402, "sets";
    /// Change a process's quota (admin).
    SetQuota = 0x0403, "set_quota";
    /// Release everything a process holds (admin).
    ForceRelease = 0x0404, "force_release";
    /// Recent DMA faults (all for an admin, those on one's own PASIDs otherwise).
    Faults = 0x0405, "faults";
    /// The DMA faults the caller may see that were logged after a position in the fault log,
    /// oldest first, each with its number: a cursor that neither repeats nor skips a record.
    FaultsSince = 0x0406, "faults_since";
    /// An iommufd ioctl on the connection's iommufd context.
    IommufdIoctl = 0x0501, "iommufd_ioctl";
    /// A VFIO device ioctl joining a device to the connection's iommufd context.
    IommufdDevice = 0x0502, "iommufd_device";
    /// Read fault groups from an iommufd fault queue.
    IommufdReadFaults = 0x0503, "iommufd_read_faults";
    /// Write page responses to an iommufd fault queue.
    IommufdRespond = 0x0504, "iommufd_respond";
    /// A process's iommufd objects (another process's: admin).
    IommufdObjects = 0x0505, "iommufd_objects";
    /// Open the process's events channel; the reply carries its socket.
    EventsOpen = 0x0601, "events_open";
    /// Grant a device of the caller to another process: the result payload is a token.
    DeviceGrant = 0x0602, "device_grant";
    /// Act as the device a token names; the reply carries the owner's memory descriptors.
    DeviceOpen = 0x0603, "device_open";
    /// End every grant of a device.
    DeviceRevoke = 0x0604, "device_revoke";
    /// An ATS translation request.
    AtsTranslate = 0x0605, "ats_translate";
    /// A device raises a page request (PRI).
    PageRequest = 0x0606, "page_request";
    /// The PASID's owner answers a page-request group.
    PageResponse = 0x0607, "page_response";
}
