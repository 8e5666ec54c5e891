//! Directories only the daemon's user controls: the socket's directory and the state
//! directory are created private, and an existing one that another user owns or may write to
//! is refused. Another user who controls the socket's directory can put their own socket in
//! the daemon's place and receive clients' descriptors; one who controls the state directory
//! can read every resume token and rewrite ownership.

use std::fs::DirBuilder;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Set-user-ID, set-group-ID and sticky bits aside, the permission bits of a mode.
const PERMISSIONS: u32 = 0o777;
/// Write permission for the group and for others.
const OTHERS_WRITE: u32 = 0o022;
/// The sticky bit: in a directory, only a file's owner may remove or rename it.
const STICKY: u32 = 0o1000;

/// Why a directory is not fit for the daemon.
#[derive(Debug, thiserror::Error)]
pub enum DirError {
    /// Creating or inspecting the directory failed.
    #[error("{path}: cannot {what}: {source}")]
    Io {
        /// The directory.
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// What the system call reported.
        source: io::Error,
    },
    /// The path is a symbolic link or not a directory.
    #[error("{path} is not a directory (a symbolic link or another file is there); refusing it")]
    NotDirectory {
        /// The path.
        path: PathBuf,
    },
    /// Another user owns the directory.
    #[error(
        "{path} is owned by uid {owner}, not by uid {euid} (or root): another user could \
         replace what the daemon keeps there; remove it or choose another path"
    )]
    Owner {
        /// The directory.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// The daemon's effective uid.
        euid: u32,
    },
    /// Users other than its owner may write to the directory.
    #[error(
        "{path} has mode {mode:04o}: other users may write to it; make it 0700 (or 0755) or \
         choose another path"
    )]
    Writable {
        /// The directory.
        path: PathBuf,
        /// Its mode bits.
        mode: u32,
    },
}

/// How a directory is checked.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// The mode a missing directory is created with.
    pub create_mode: u32,
    /// An existing directory of the daemon's user with more permission bits than
    /// `create_mode` is narrowed to it (the state directory: 0700).
    pub narrow: bool,
    /// A world-writable directory with the sticky bit (like `/tmp`) is accepted: nobody but a
    /// file's owner may remove or replace the file there.
    pub sticky_ok: bool,
}

/// Creates `path` (and its missing parents) with `policy.create_mode`, or checks the existing
/// one: a directory, not a symbolic link, owned by `euid` or root, and writable by nobody
/// else.
///
/// # Errors
///
/// [`DirError`] naming the path and what is wrong with it. Parents created before a failure
/// stay.
pub fn ensure(path: &Path, euid: u32, policy: Policy) -> Result<(), DirError> {
    let io_err = |what| {
        let path = path.to_owned();
        move |source| DirError::Io { path, what, source }
    };
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            DirBuilder::new()
                .recursive(true)
                .mode(policy.create_mode)
                .create(path)
                .map_err(io_err("create it"))?;
            // The umask may have narrowed the mode further; widen to what was asked.
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(policy.create_mode))
                .map_err(io_err("set its mode"))?;
        }
        Err(e) => return Err(io_err("inspect it")(e)),
        Ok(_) => {}
    }
    let meta = std::fs::symlink_metadata(path).map_err(io_err("inspect it"))?;
    if !meta.file_type().is_dir() {
        return Err(DirError::NotDirectory {
            path: path.to_owned(),
        });
    }
    let (owner, mode) = (meta.uid(), meta.mode());
    if owner != euid && owner != 0 {
        return Err(DirError::Owner {
            path: path.to_owned(),
            owner,
            euid,
        });
    }
    let sticky = policy.sticky_ok && mode & STICKY != 0;
    if mode & OTHERS_WRITE != 0 && !sticky {
        return Err(DirError::Writable {
            path: path.to_owned(),
            mode: mode & (PERMISSIONS | STICKY),
        });
    }
    if policy.narrow && owner == euid && mode & PERMISSIONS & !policy.create_mode != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(policy.create_mode))
            .map_err(io_err("narrow its mode"))?;
        tracing::info!(dir = %path.display(), from = format!("{:04o}", mode & PERMISSIONS), to = format!("{:04o}", policy.create_mode), "directory mode narrowed");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PRIVATE: Policy = Policy {
        create_mode: 0o700,
        narrow: true,
        sticky_ok: false,
    };

    fn scratch(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("vsvad-dir-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().mode() & 0o7777
    }

    #[test]
    fn a_missing_directory_is_created_private_and_a_loose_one_narrowed() {
        let d = scratch("create");
        let euid = rustix::process::geteuid().as_raw();
        ensure(&d.join("a/b"), euid, PRIVATE).unwrap();
        assert_eq!(mode(&d.join("a/b")), 0o700);
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
        ensure(&d, euid, PRIVATE).unwrap();
        assert_eq!(mode(&d), 0o700);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn directories_others_control_are_refused() {
        let d = scratch("refuse");
        let euid = rustix::process::geteuid().as_raw();
        std::fs::create_dir_all(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = ensure(&d, euid, PRIVATE).unwrap_err();
        assert!(matches!(e, DirError::Writable { mode: 0o777, .. }), "{e}");
        assert!(e.to_string().contains(&d.display().to_string()), "{e}");
        // World-writable with the sticky bit, like /tmp: accepted where allowed.
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let sticky = Policy {
            sticky_ok: true,
            ..PRIVATE
        };
        assert!(ensure(&d, euid, PRIVATE).is_err());
        ensure(&d, euid, sticky).unwrap();
        // Owned by another user: as root, give it to `nobody`; otherwise look at it as a
        // uid that is neither its owner nor root.
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).unwrap();
        let viewer = if euid == 0 {
            std::os::unix::fs::chown(&d, Some(65534), None).unwrap();
            0
        } else {
            euid + 1
        };
        let e = ensure(&d, viewer, PRIVATE).unwrap_err();
        assert!(
            matches!(e, DirError::Owner { owner, .. } if owner != viewer),
            "{e}"
        );
        // A symbolic link or a file is not a directory.
        let link = scratch("link");
        std::os::unix::fs::symlink(&d, &link).unwrap();
        let e = ensure(&link, euid, PRIVATE).unwrap_err();
        assert!(matches!(e, DirError::NotDirectory { .. }), "{e}");
        std::fs::remove_file(&link).unwrap();
        std::fs::remove_dir_all(&d).unwrap();
    }
}
