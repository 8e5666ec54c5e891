//! Linux error numbers and the crate's rich validation error.
//!
//! [`Errno`] carries the numbers of Linux `include/uapi/asm-generic/errno-base.h` and
//! `errno.h` (the values x86, arm64 and riscv use). [`UapiError`] pairs an [`Errno`] with a
//! message that names the offending field and its value, so a client is told both *what* the
//! kernel would have returned and *why*.

use core::fmt;

/// Declares [`Errno`] together with its number, name and message tables, so the three can never
/// drift apart.
macro_rules! errnos {
    ($($(#[$doc:meta])* $name:ident = $value:literal, $message:literal;)+) => {
        /// A Linux error number, as an ioctl returns it negated.
        ///
        /// Only the numbers this project produces are listed; [`Errno::from_raw`] returns `None`
        /// for any other. The discriminant of each variant is its Linux value, so `raw()` is
        /// exact and stable.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(i32)]
        pub enum Errno {
            $($(#[$doc])* $name = $value,)+
        }

        impl Errno {
            /// Every error number this type knows, in ascending numeric order.
            pub const ALL: &'static [Errno] = &[$(Errno::$name,)+];

            /// Maps a positive Linux error number to its [`Errno`].
            ///
            /// Returns `None` for numbers this type does not list, including zero and negative
            /// values (negate an ioctl's `-errno` return first).
            pub const fn from_raw(raw: i32) -> Option<Errno> {
                match raw {
                    $($value => Some(Errno::$name),)+
                    _ => None,
                }
            }

            /// The symbolic name, exactly as Linux spells it (`"EINVAL"`).
            pub const fn name(self) -> &'static str {
                match self {
                    $(Errno::$name => stringify!($name),)+
                }
            }

            /// The human-readable description, as glibc's `strerror` words it
            /// (`"Invalid argument"`).
            pub const fn message(self) -> &'static str {
                match self {
                    $(Errno::$name => $message,)+
                }
            }
        }
    };
}

errnos! {
    /// Operation not permitted (1).
    EPERM = 1, "Operation not permitted";
    /// No such file or directory (2): the named object (e.g. a PASID) has no owner.
    ENOENT = 2, "No such file or directory";
    /// No such process (3).
    ESRCH = 3, "No such process";
    /// Input/output error (5).
    EIO = 5, "Input/output error";
    /// Argument list too long (7).
    E2BIG = 7, "Argument list too long";
    /// Bad file descriptor (9).
    EBADF = 9, "Bad file descriptor";
    /// Resource temporarily unavailable (11), also known as `EWOULDBLOCK`.
    EAGAIN = 11, "Resource temporarily unavailable";
    /// Cannot allocate memory (12).
    ENOMEM = 12, "Cannot allocate memory";
    /// Permission denied (13): the object belongs to someone else.
    EACCES = 13, "Permission denied";
    /// Bad address (14): the argument could not be read or written.
    EFAULT = 14, "Bad address";
    /// Device or resource busy (16).
    EBUSY = 16, "Device or resource busy";
    /// File exists (17).
    EEXIST = 17, "File exists";
    /// No such device (19).
    ENODEV = 19, "No such device";
    /// Invalid argument (22): a malformed field.
    EINVAL = 22, "Invalid argument";
    /// Inappropriate ioctl for device (25): unknown ioctl, or the feature is compiled out.
    ENOTTY = 25, "Inappropriate ioctl for device";
    /// No space left on device (28): no free ID in range, or the quota is used up.
    ENOSPC = 28, "No space left on device";
    /// Numerical result out of range (34).
    ERANGE = 34, "Numerical result out of range";
    /// Function not implemented (38).
    ENOSYS = 38, "Function not implemented";
    /// Value too large for defined data type (75): iommufd's "mathematics overflowed".
    EOVERFLOW = 75, "Value too large for defined data type";
    /// Message too long (90): an output array is too small for the answer.
    EMSGSIZE = 90, "Message too long";
    /// Operation not supported (95 on x86, arm64 and riscv; `ENOTSUP` is the same number).
    EOPNOTSUPP = 95, "Operation not supported";
    /// Address already in use (98): an IOVA range the caller wants kept is reserved.
    EADDRINUSE = 98, "Address already in use";
    /// Connection timed out (110): a device-TLB invalidation a device never completed (the
    /// VT-d driver's `qi_submit_sync` on an invalidation time-out).
    ETIMEDOUT = 110, "Connection timed out";
}

impl Errno {
    /// The positive Linux error number (`Errno::EINVAL.raw() == 22`).
    pub const fn raw(self) -> i32 {
        self as i32
    }

    /// The value an ioctl returns for this error: the number negated (`-22` for `EINVAL`).
    pub const fn to_ioctl_return(self) -> i32 {
        -(self as i32)
    }
}

impl fmt::Display for Errno {
    /// Formats as `"EINVAL (Invalid argument)"`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), self.message())
    }
}

impl std::error::Error for Errno {}

impl From<Errno> for i32 {
    fn from(errno: Errno) -> i32 {
        errno.raw()
    }
}

/// A rejected uAPI argument: the errno the kernel would return, and a message naming the field
/// and the value that caused it.
///
/// Displays as `"<ERRNO>: <message>"`, e.g.
/// `"EINVAL: argsz 12 is smaller than the 16 bytes of vfio_iommu_type1_pasid_request"`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", errno.name())]
pub struct UapiError {
    errno: Errno,
    message: String,
}

impl UapiError {
    /// Builds an error from an errno and a message that names the field and its value.
    pub fn new(errno: Errno, message: impl Into<String>) -> Self {
        Self {
            errno,
            message: message.into(),
        }
    }

    /// An `EINVAL` error: a field holds a value the uAPI does not allow.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(Errno::EINVAL, message)
    }

    /// An `EFAULT` error: bytes the argument needs are not there to be read.
    pub fn fault(message: impl Into<String>) -> Self {
        Self::new(Errno::EFAULT, message)
    }

    /// The errno the kernel would return for this argument.
    pub fn errno(&self) -> Errno {
        self.errno
    }

    /// The explanation, without the errno name.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl From<UapiError> for Errno {
    fn from(err: UapiError) -> Errno {
        err.errno
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_match_linux() {
        let expected = [
            (Errno::EPERM, 1),
            (Errno::ENOENT, 2),
            (Errno::ESRCH, 3),
            (Errno::EIO, 5),
            (Errno::E2BIG, 7),
            (Errno::EBADF, 9),
            (Errno::EAGAIN, 11),
            (Errno::ENOMEM, 12),
            (Errno::EACCES, 13),
            (Errno::EFAULT, 14),
            (Errno::EBUSY, 16),
            (Errno::EEXIST, 17),
            (Errno::ENODEV, 19),
            (Errno::EINVAL, 22),
            (Errno::ENOTTY, 25),
            (Errno::ENOSPC, 28),
            (Errno::ERANGE, 34),
            (Errno::ENOSYS, 38),
            (Errno::EOVERFLOW, 75),
            (Errno::EMSGSIZE, 90),
            (Errno::EOPNOTSUPP, 95),
            (Errno::EADDRINUSE, 98),
            (Errno::ETIMEDOUT, 110),
        ];
        assert_eq!(expected.len(), Errno::ALL.len());
        for (errno, raw) in expected {
            assert_eq!(errno.raw(), raw, "{}", errno.name());
            assert_eq!(Errno::from_raw(raw), Some(errno));
            assert_eq!(errno.to_ioctl_return(), -raw);
        }
    }

    #[test]
    fn all_is_sorted_and_round_trips() {
        assert!(Errno::ALL.windows(2).all(|w| w[0].raw() < w[1].raw()));
        for &errno in Errno::ALL {
            assert_eq!(Errno::from_raw(errno.raw()), Some(errno));
        }
    }

    #[test]
    fn unknown_numbers_are_none() {
        for raw in [0, -22, 4, 6, 96, i32::MAX, i32::MIN] {
            assert_eq!(Errno::from_raw(raw), None, "{raw}");
        }
    }

    #[test]
    fn display_names_and_messages() {
        assert_eq!(Errno::EINVAL.to_string(), "EINVAL (Invalid argument)");
        assert_eq!(Errno::EOPNOTSUPP.name(), "EOPNOTSUPP");
        assert_eq!(Errno::EFAULT.message(), "Bad address");
        assert_eq!(
            Errno::ENOTTY.to_string(),
            "ENOTTY (Inappropriate ioctl for device)"
        );
    }

    #[test]
    fn uapi_error_display_and_accessors() {
        let err = UapiError::invalid("flags 0x3: too many");
        assert_eq!(err.errno(), Errno::EINVAL);
        assert_eq!(err.message(), "flags 0x3: too many");
        assert_eq!(err.to_string(), "EINVAL: flags 0x3: too many");
        assert_eq!(Errno::from(err), Errno::EINVAL);
        assert_eq!(UapiError::fault("x").errno(), Errno::EFAULT);
    }
}
