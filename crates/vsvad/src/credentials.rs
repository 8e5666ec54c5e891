//! Who is on the other end of a connection, in a form that survives pid reuse.
//!
//! The kernel's `SO_PEERCRED` gives the pid, uid and gid of the process that connected. A pid
//! alone is not an identity — it is reused after the process exits — so the daemon pairs it
//! with the process's start time (field 22 of `/proc/<pid>/stat`, clock ticks since boot),
//! which a later process with the same pid cannot share. To close the window in which the
//! peer could exit and its pid be reused between `SO_PEERCRED` and reading `/proc`, the daemon
//! opens a pidfd on the pid first and checks after reading the start time that the pidfd's
//! process is still the one alive under that pid.

use std::fs;
use std::io;
use std::os::fd::{AsFd, OwnedFd};

use rustix::process::{pidfd_open, PidfdFlags};

use vsva_proto::Credentials;

/// Why a peer's credentials could not be established.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// `SO_PEERCRED` failed.
    #[error("SO_PEERCRED failed: {0}")]
    PeerCred(io::Error),
    /// The peer's pid is not usable (0: a peer in another pid namespace).
    #[error("peer pid {pid} cannot be identified (a process in another pid namespace?)")]
    NoPid {
        /// The pid reported.
        pid: i32,
    },
    /// The peer exited before it could be identified.
    #[error("peer pid {pid} exited before it could be identified: {reason}")]
    Gone {
        /// The pid `SO_PEERCRED` reported.
        pid: u32,
        /// What failed.
        reason: String,
    },
}

/// The credentials of the peer of a connected Unix socket, plus a pidfd for its process.
pub fn peer_credentials(
    sock: impl AsFd,
) -> Result<(Credentials, Option<OwnedFd>), CredentialsError> {
    let cred = rustix::net::sockopt::socket_peercred(&sock)
        .map_err(|e| CredentialsError::PeerCred(e.into()))?;
    let raw_pid = cred.pid.as_raw_nonzero().get();
    let pid = u32::try_from(raw_pid).map_err(|_| CredentialsError::NoPid { pid: raw_pid })?;
    // A pidfd pins the process: while it is alive, its pid cannot be reused.
    let pidfd = pidfd_open(cred.pid, PidfdFlags::empty()).ok();
    let start_time = start_time(pid).map_err(|e| CredentialsError::Gone {
        pid,
        reason: e.to_string(),
    })?;
    if let Some(fd) = &pidfd {
        if !pidfd_alive(fd) {
            return Err(CredentialsError::Gone {
                pid,
                reason: "it exited while being identified".into(),
            });
        }
    }
    Ok((
        Credentials {
            pid,
            uid: cred.uid.as_raw(),
            gid: cred.gid.as_raw(),
            start_time,
        },
        pidfd,
    ))
}

/// Whether the process behind a pidfd is still running (not exited, not a zombie): a pidfd
/// polls readable once its process has exited.
pub fn pidfd_alive(fd: &OwnedFd) -> bool {
    let mut fds = [rustix::event::PollFd::new(fd, rustix::event::PollFlags::IN)];
    match rustix::event::poll(&mut fds, Some(&rustix::time::Timespec::default())) {
        Ok(0) => true,
        Ok(_) => false,
        Err(_) => false,
    }
}

/// Field 22 (`starttime`) of `/proc/<pid>/stat`.
pub fn start_time(pid: u32) -> io::Result<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_start_time(&stat).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("/proc/{pid}/stat has no parsable field 22"),
        )
    })
}

/// Parses field 22 out of the text of a `/proc/<pid>/stat` file. The command name (field 2)
/// may contain spaces and parentheses, so fields are counted after its last `)`.
pub fn parse_start_time(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    // Field 3 (state) is the first after the name; field 22 is 19 further.
    after.split_ascii_whitespace().nth(19)?.parse().ok()
}

/// Whether the process `pid` that started at `start_time` is still running (not a zombie).
pub fn is_alive(pid: u32, start_time: u64) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat
        .rfind(')')
        .and_then(|i| stat[i + 1..].split_ascii_whitespace().next());
    parse_start_time(&stat) == Some(start_time) && !matches!(state, Some("Z") | Some("X"))
}

/// The command line of `pid`, arguments joined by spaces, at most 200 bytes; empty if it
/// cannot be read.
pub fn command_line(pid: u32) -> String {
    let raw = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let mut s: String = raw
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    if s.len() > 200 {
        let mut cut = 200;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

/// The supplementary groups of `pid` (the `Groups:` line of `/proc/<pid>/status`).
pub fn supplementary_groups(pid: u32) -> Vec<u32> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .map(|g| {
            g.split_ascii_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Whether `who` may use the admin requests: root, or a member (primary or supplementary) of
/// `admin_gid`.
pub fn is_admin(who: &Credentials, admin_gid: Option<u32>) -> bool {
    if who.uid == 0 {
        return true;
    }
    match admin_gid {
        None => false,
        Some(gid) => who.gid == gid || supplementary_groups(who.pid).contains(&gid),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::process::Pid;

    /// A pidfd for `pid`, if the kernel offers pidfds.
    fn open_pidfd(pid: u32) -> Option<OwnedFd> {
        let pid = Pid::from_raw(i32::try_from(pid).ok()?)?;
        pidfd_open(pid, PidfdFlags::empty()).ok()
    }

    /// This process's own credentials.
    fn own_credentials() -> io::Result<Credentials> {
        let pid = std::process::id();
        Ok(Credentials {
            pid,
            uid: rustix::process::getuid().as_raw(),
            gid: rustix::process::getgid().as_raw(),
            start_time: start_time(pid)?,
        })
    }

    #[test]
    fn parses_names_with_spaces_and_parens() {
        let stat = "1234 (a) b (c)) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10 18446744073709551615";
        assert_eq!(parse_start_time(stat), Some(987_654));
        assert_eq!(parse_start_time("1 (x) S 1 2"), None);
        assert_eq!(parse_start_time("garbage"), None);
    }

    #[test]
    fn own_process_is_alive_and_a_wrong_start_time_is_not() {
        let me = own_credentials().unwrap();
        assert!(is_alive(me.pid, me.start_time));
        assert!(!is_alive(me.pid, me.start_time + 1));
        assert!(!command_line(me.pid).is_empty());
        let fd = open_pidfd(me.pid).expect("pidfd_open on ourselves");
        assert!(pidfd_alive(&fd));
    }

    #[test]
    fn peer_of_a_socketpair_is_ourselves() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let (who, _fd) = peer_credentials(&a).unwrap();
        assert_eq!(who, own_credentials().unwrap());
        let root = Credentials { uid: 0, ..who };
        assert!(is_admin(&root, None));
        assert_eq!(is_admin(&who, None), who.uid == 0);
        assert!(is_admin(&Credentials { uid: 1, ..who }, Some(who.gid)));
    }

    #[test]
    fn dead_child_is_not_alive() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        let st = start_time(pid).ok();
        child.wait().unwrap();
        if let Some(st) = st {
            assert!(!is_alive(pid, st));
        }
    }
}
