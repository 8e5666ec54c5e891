//! PCI configuration-space layout of the PCIe PASID extended capability, as Linux's uAPI
//! header `pci_regs.h` gives it and a VMM reads it through a VFIO device: the one place these
//! offsets and bits are defined (the VFIO layer virtualizes them, the client enables them).

/// Size of a PCIe function's configuration space (`PCI_CFG_SPACE_EXP_SIZE`).
pub const PCI_CFG_SPACE_EXP_SIZE: usize = 4096;
/// Offset of the first extended capability (`PCI_CFG_SPACE_SIZE`): the conventional space
/// ends there.
pub const PCI_CFG_SPACE_SIZE: u16 = 0x100;
/// Extended capability id of PASID, bits 15:0 of its capability header.
pub const PCI_EXT_CAP_ID_PASID: u16 = 0x001b;
/// Offset of the PASID Capability register (16 bits) within the capability.
pub const PCI_PASID_CAP: u16 = 4;
/// Offset of the PASID Control register (16 bits) within the capability.
pub const PCI_PASID_CTRL: u16 = 6;
/// PASID Capability bit 1: Execute Permission Supported.
pub const PCI_PASID_CAP_EXEC: u16 = 1 << 1;
/// PASID Capability bit 2: Privileged Mode Supported.
pub const PCI_PASID_CAP_PRIV: u16 = 1 << 2;
/// PASID Control bit 0: PASID Enable.
pub const PCI_PASID_CTRL_ENABLE: u16 = 1 << 0;
/// PASID Control bit 1: Execute Permission Enable.
pub const PCI_PASID_CTRL_EXEC: u16 = 1 << 1;
/// PASID Control bit 2: Privileged Mode Enable.
pub const PCI_PASID_CTRL_PRIV: u16 = 1 << 2;
