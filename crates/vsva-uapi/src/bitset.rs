//! A tiny generator for typed flag sets over a uAPI integer field.
//!
//! Each generated type is a transparent newtype over the field's integer. Its constructors keep
//! the invariant that no bit outside the declared flags is ever set: `from_bits` refuses such
//! values, so a decoded set is always one the uAPI defines.

/// Declares a flag-set newtype with named constants, set operations and a `Debug` that lists the
/// names of the bits present.
macro_rules! bitset {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident: $int:ty {
            $($(#[$fmeta:meta])* const $flag:ident = $value:expr;)+
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
        #[repr(transparent)]
        $vis struct $name($int);

        impl $name {
            $($(#[$fmeta])* pub const $flag: $name = $name($value);)+

            /// Every defined bit, or-ed together.
            pub const ALL: $name = $name(0 $(| $value)+);

            /// The empty set.
            pub const fn empty() -> Self {
                Self(0)
            }

            /// The set of the given raw bits, or `None` if any bit outside [`Self::ALL`] is set.
            pub const fn from_bits(bits: $int) -> Option<Self> {
                if bits & !Self::ALL.0 == 0 {
                    Some(Self(bits))
                } else {
                    None
                }
            }

            /// The set of the given raw bits with every undefined bit dropped.
            pub const fn from_bits_truncate(bits: $int) -> Self {
                Self(bits & Self::ALL.0)
            }

            /// The raw bits, as they appear in the uAPI field.
            pub const fn bits(self) -> $int {
                self.0
            }

            /// Whether no bit is set.
            pub const fn is_empty(self) -> bool {
                self.0 == 0
            }

            /// Whether every bit of `other` is also set in `self`.
            pub const fn contains(self, other: Self) -> bool {
                self.0 & other.0 == other.0
            }

            /// Whether `self` and `other` have at least one bit in common.
            pub const fn intersects(self, other: Self) -> bool {
                self.0 & other.0 != 0
            }

            /// The union of both sets.
            pub const fn union(self, other: Self) -> Self {
                Self(self.0 | other.0)
            }

            /// The bits of `self` that are not in `other`.
            pub const fn difference(self, other: Self) -> Self {
                Self(self.0 & !other.0)
            }

            /// The defined flags with their Linux names, in ascending bit order.
            const NAMED: &'static [(&'static str, $name)] = &[$((stringify!($flag), $name::$flag),)+];
        }

        impl core::ops::BitOr for $name {
            type Output = Self;

            fn bitor(self, rhs: Self) -> Self {
                self.union(rhs)
            }
        }

        impl core::ops::BitOrAssign for $name {
            fn bitor_assign(&mut self, rhs: Self) {
                *self = self.union(rhs);
            }
        }

        impl core::fmt::Debug for $name {
            /// Formats as `Name(A | B)`, or `Name(empty)`.
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                write!(f, "{}(", stringify!($name))?;
                let mut first = true;
                for (flag_name, flag) in Self::NAMED {
                    if self.contains(*flag) {
                        if !first {
                            f.write_str(" | ")?;
                        }
                        f.write_str(flag_name)?;
                        first = false;
                    }
                }
                if first {
                    f.write_str("empty")?;
                }
                f.write_str(")")
            }
        }
    };
}

pub(crate) use bitset;
