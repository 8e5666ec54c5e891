//! Where allocation decisions are made: locally, or delegated to someone else.

use crate::ids::Pasid;
use vsva_uapi::Errno;

/// A source of PASID numbers other than the space's own bitmap.
///
/// A guest whose PASIDs must come from its host (VT-d's virtual command interface, a
/// paravirtual request to a host daemon) plugs such a backend into
/// [`IoasidSpace::with_backend`](crate::IoasidSpace::with_backend). The space still does
/// everything else — sets, quotas, ownership, teardown, `find` — and mirrors each number it
/// receives in its own bitmap, so a number is never owned twice locally even if the backend
/// misbehaves.
///
/// Without a backend the space allocates locally: the lowest free PASID in the range.
pub trait PasidBackend: Send + Sync {
    /// Returns a PASID in `[min, max]` (already clamped to `[1, 2^pasid_bits - 1]`) that the
    /// backend now considers in use, or the errno and reason for refusing.
    fn alloc(&self, min: Pasid, max: Pasid) -> Result<Pasid, (Errno, String)>;

    /// Gives back a PASID that `alloc` returned. Called after every teardown subscriber has
    /// finished with it.
    fn free(&self, pasid: Pasid);

    /// A short name for messages.
    fn name(&self) -> &str;
}
