//! Linux ioctl request numbers, computed the way `include/uapi/asm-generic/ioctl.h` does.

/// Number of bits of the command number field (`_IOC_NRBITS`).
const IOC_NRBITS: u32 = 8;
/// Number of bits of the type ("magic") field (`_IOC_TYPEBITS`).
const IOC_TYPEBITS: u32 = 8;
/// Number of bits of the argument size field (`_IOC_SIZEBITS`).
const IOC_SIZEBITS: u32 = 14;

/// Shift of the command number field (`_IOC_NRSHIFT`).
const IOC_NRSHIFT: u32 = 0;
/// Shift of the type field (`_IOC_TYPESHIFT`).
const IOC_TYPESHIFT: u32 = IOC_NRSHIFT + IOC_NRBITS;
/// Shift of the size field (`_IOC_SIZESHIFT`).
const IOC_SIZESHIFT: u32 = IOC_TYPESHIFT + IOC_TYPEBITS;
/// Shift of the direction field (`_IOC_DIRSHIFT`).
const IOC_DIRSHIFT: u32 = IOC_SIZESHIFT + IOC_SIZEBITS;

/// Direction "no data transfer" (`_IOC_NONE`).
const IOC_NONE: u32 = 0;

/// The request number of Linux `_IO(ty, nr)`: an ioctl with no direction and no size encoded.
///
/// `ty` lands in bits 15:8 and `nr` in bits 7:0; the size (bits 29:16) and direction (bits
/// 31:30) are zero. VFIO declares every ioctl this way and carries the size in `argsz` instead.
pub const fn io(ty: u8, nr: u8) -> u32 {
    (IOC_NONE << IOC_DIRSHIFT) | ((ty as u32) << IOC_TYPESHIFT) | ((nr as u32) << IOC_NRSHIFT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_places_type_and_nr() {
        assert_eq!(io(b';', 0), 0x3b00);
        assert_eq!(io(b';', 118), 0x3b76);
        assert_eq!(io(b';', 119), 0x3b77);
        assert_eq!(io(0xff, 0xff), 0xffff);
        assert_eq!(IOC_DIRSHIFT, 30);
        assert_eq!(IOC_SIZESHIFT, 16);
    }
}
