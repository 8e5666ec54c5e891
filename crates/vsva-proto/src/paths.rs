//! Default locations of the daemon's socket and state, shared by the daemon and its clients.
//!
//! The functions are pure: they take the effective uid and an environment lookup, so both
//! sides compute the same path and tests can pin every case.

use std::ffi::OsString;
use std::fs::FileType;
use std::os::unix::fs::FileTypeExt;
use std::path::PathBuf;

/// Socket file name inside the runtime directory.
pub const SOCKET_NAME: &str = "vsvad.sock";
/// The configuration a tool writes into the directory of a private daemon it starts
/// (`vsvad --ephemeral DIR`).
pub const PRIVATE_CONFIG_NAME: &str = "vsvad.toml";
/// The log file a tool gives a private daemon it starts, in the same directory.
pub const PRIVATE_LOG_NAME: &str = "vsvad.log";

fn env_dir(env: &dyn Fn(&str) -> Option<OsString>, key: &str) -> Option<PathBuf> {
    env(key)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
}

/// What a file that should be a regular one is instead, named for an error message ("a
/// FIFO (named pipe)"), or `None` if it is a regular file. The daemon's configuration and the
/// CLI's memory images are read whole, so both refuse anything else before reading.
pub fn not_a_regular_file(kind: FileType) -> Option<&'static str> {
    if kind.is_file() {
        None
    } else if kind.is_dir() {
        Some("a directory")
    } else if kind.is_fifo() {
        Some("a FIFO (named pipe)")
    } else if kind.is_char_device() {
        Some("a character device")
    } else if kind.is_block_device() {
        Some("a block device")
    } else if kind.is_socket() {
        Some("a socket")
    } else {
        Some("a special file")
    }
}

/// The daemon's default socket: `/run/vsva/vsvad.sock` for root; otherwise
/// `$XDG_RUNTIME_DIR/vsva/vsvad.sock`, or `/tmp/vsva-<uid>/vsvad.sock` when that variable is
/// unset, empty or not absolute. `VSVA_SOCKET`, when set and not empty, overrides all of
/// them as it stands, a relative path included (relative to the working directory, as a
/// relative `--socket` is): the daemon takes it the same way, so both ends of one shell agree.
pub fn default_socket_path(euid: u32, env: &dyn Fn(&str) -> Option<OsString>) -> PathBuf {
    if let Some(explicit) = env("VSVA_SOCKET").filter(|v| !v.is_empty()) {
        return PathBuf::from(explicit);
    }
    if euid == 0 {
        return PathBuf::from("/run/vsva").join(SOCKET_NAME);
    }
    match env_dir(env, "XDG_RUNTIME_DIR") {
        Some(dir) => dir.join("vsva").join(SOCKET_NAME),
        None => PathBuf::from(format!("/tmp/vsva-{euid}")).join(SOCKET_NAME),
    }
}

/// The daemon's default state directory: `/var/lib/vsva` for root; otherwise
/// `$XDG_STATE_HOME/vsva`, else `$HOME/.local/state/vsva`, else `/tmp/vsva-<uid>/state`.
pub fn default_state_dir(euid: u32, env: &dyn Fn(&str) -> Option<OsString>) -> PathBuf {
    if euid == 0 {
        return PathBuf::from("/var/lib/vsva");
    }
    if let Some(dir) = env_dir(env, "XDG_STATE_HOME") {
        return dir.join("vsva");
    }
    if let Some(home) = env_dir(env, "HOME") {
        return home.join(".local/state/vsva");
    }
    PathBuf::from(format!("/tmp/vsva-{euid}/state"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<OsString> {
        move |k| {
            pairs
                .iter()
                .find(|(key, _)| *key == k)
                .map(|(_, v)| OsString::from(v))
        }
    }

    #[test]
    fn socket_paths() {
        let none = env(&[]);
        assert_eq!(
            default_socket_path(0, &none),
            PathBuf::from("/run/vsva/vsvad.sock")
        );
        assert_eq!(
            default_socket_path(1000, &none),
            PathBuf::from("/tmp/vsva-1000/vsvad.sock")
        );
        let xdg = env(&[("XDG_RUNTIME_DIR", "/run/user/1000")]);
        assert_eq!(
            default_socket_path(1000, &xdg),
            PathBuf::from("/run/user/1000/vsva/vsvad.sock")
        );
        let relative = env(&[("XDG_RUNTIME_DIR", "run")]);
        assert_eq!(
            default_socket_path(7, &relative),
            PathBuf::from("/tmp/vsva-7/vsvad.sock")
        );
        // A relative VSVA_SOCKET is taken as it stands, as the daemon takes it.
        let relative_explicit = env(&[("VSVA_SOCKET", "x.sock"), ("XDG_RUNTIME_DIR", "/r")]);
        assert_eq!(
            default_socket_path(1000, &relative_explicit),
            PathBuf::from("x.sock")
        );
        let empty = env(&[("VSVA_SOCKET", ""), ("XDG_RUNTIME_DIR", "/r")]);
        assert_eq!(
            default_socket_path(1000, &empty),
            PathBuf::from("/r/vsva/vsvad.sock")
        );
        let explicit = env(&[("VSVA_SOCKET", "/x/y.sock"), ("XDG_RUNTIME_DIR", "/r")]);
        assert_eq!(
            default_socket_path(0, &explicit),
            PathBuf::from("/x/y.sock")
        );
    }

    #[test]
    fn state_dirs() {
        assert_eq!(
            default_state_dir(0, &env(&[])),
            PathBuf::from("/var/lib/vsva")
        );
        assert_eq!(
            default_state_dir(5, &env(&[("XDG_STATE_HOME", "/s"), ("HOME", "/h")])),
            PathBuf::from("/s/vsva")
        );
        assert_eq!(
            default_state_dir(5, &env(&[("HOME", "/h")])),
            PathBuf::from("/h/.local/state/vsva")
        );
        assert_eq!(
            default_state_dir(5, &env(&[])),
            PathBuf::from("/tmp/vsva-5/state")
        );
    }

    #[test]
    fn every_kind_of_file_but_a_regular_one_is_named() {
        let dir = std::env::temp_dir().join(format!("vsva-proto-kinds-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let regular = dir.join("regular");
        std::fs::write(&regular, b"x").unwrap();
        let socket = dir.join("socket");
        let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        let kind =
            |p: &std::path::Path| not_a_regular_file(std::fs::metadata(p).unwrap().file_type());
        assert_eq!(kind(&regular), None);
        assert_eq!(kind(&dir), Some("a directory"));
        assert_eq!(
            kind(std::path::Path::new("/dev/null")),
            Some("a character device")
        );
        assert_eq!(kind(&socket), Some("a socket"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
