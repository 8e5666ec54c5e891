//! Test harness: starts the real `vsvad` binary on a private socket and state directory,
//! and spawns helper client processes (this test binary, re-run with `VSVA_HELPER` set).

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use vsva_client::{Client, Options};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A private directory for one test, removed on drop.
pub struct TestDir(pub PathBuf);

impl TestDir {
    pub fn new(tag: &str) -> TestDir {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("vsvad-it-{}-{tag}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TestDir(dir)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running `vsvad`.
pub struct Daemon {
    pub child: Option<Child>,
    pub socket: PathBuf,
    pub state: PathBuf,
    pub config: PathBuf,
    pub args: Vec<String>,
}

impl Daemon {
    /// Starts a daemon in `dir` with the given TOML config and extra flags, and waits until
    /// its socket accepts connections.
    pub fn start(dir: &Path, config: &str, args: &[&str]) -> Daemon {
        let config_path = dir.join("vsvad.toml");
        std::fs::write(&config_path, config).unwrap();
        let mut d = Daemon {
            child: None,
            socket: dir.join("vsvad.sock"),
            state: dir.join("state"),
            config: config_path,
            args: args.iter().map(|s| s.to_string()).collect(),
        };
        d.restart();
        d
    }

    /// Starts (again) with the same socket, state and config.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "daemon still running");
        let child = Command::new(env!("CARGO_BIN_EXE_vsvad"))
            .arg("--socket")
            .arg(&self.socket)
            .arg("--state-dir")
            .arg(&self.state)
            .arg("--config")
            .arg(&self.config)
            .args(&self.args)
            .env(
                "RUST_LOG",
                std::env::var("VSVAD_TEST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn vsvad");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if std::os::unix::net::UnixStream::connect(&self.socket).is_ok() {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("vsvad exited during startup: {status}");
            }
            assert!(Instant::now() < deadline, "vsvad did not start in time");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn options(&self, name: &str) -> Options {
        let mut o = Options::new(&self.socket, name);
        o.timeout = Some(Duration::from_secs(20));
        o
    }

    pub fn client(&self, name: &str) -> Client {
        Client::connect(self.options(name)).expect("connect to vsvad")
    }

    /// `kill -9` the daemon.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, and the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("daemon running");
        rustix::process::kill_process(
            rustix::process::Pid::from_child(&c),
            rustix::process::Signal::TERM,
        )
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(s) = c.try_wait().unwrap() {
                return s;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                panic!("vsvad did not exit after SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A helper client process: this test binary re-run as `helper_process` with a script.
pub struct Helper {
    pub child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
}

impl Helper {
    /// Asks a `watch` helper for (held, allocated).
    pub fn status(&mut self) -> (u64, u64) {
        self.say("S");
        let l = self.expect("STATUS");
        let mut it = l.split_whitespace().map(|v| v.parse::<u64>().unwrap());
        (it.next().unwrap(), it.next().unwrap())
    }

    /// Spawns `test_binary helper_process` with `VSVA_HELPER=script` and the socket.
    pub fn spawn(socket: &Path, script: &str) -> Helper {
        Self::spawn_with(
            socket,
            script,
            Command::new(std::env::current_exe().unwrap()),
        )
    }

    /// As [`Helper::spawn`], running as `uid`/`gid` (the caller must be root).
    pub fn spawn_as(socket: &Path, script: &str, uid: u32, gid: u32) -> Helper {
        use std::os::unix::process::CommandExt;
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        // std drops the supplementary groups when it changes the uid as root.
        cmd.uid(uid).gid(gid);
        Self::spawn_with(socket, script, cmd)
    }

    fn spawn_with(socket: &Path, script: &str, mut cmd: Command) -> Helper {
        let mut child = cmd
            .args([
                "--exact",
                "helper_process",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("VSVA_HELPER", script)
            .env("VSVA_HELPER_SOCKET", socket)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(if std::env::var_os("VSVAD_TEST_LOG").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .spawn()
            .expect("spawn helper");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Helper {
            stdin: child.stdin.take(),
            child,
            lines: rx,
        }
    }

    /// The next line starting with `prefix` (other lines, e.g. the test harness's, skipped).
    pub fn expect(&self, prefix: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.contains(prefix) => {
                    let at = l.find(prefix).unwrap_or(0) + prefix.len();
                    return l[at..].trim().to_string();
                }
                Ok(_) => {}
                Err(e) => panic!("helper gave no {prefix:?} line: {e}"),
            }
        }
    }

    /// Every line starting with `prefix` until a line starting with `until`.
    pub fn collect(&self, prefix: &str, until: &str) -> (Vec<String>, String) {
        let mut out = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.contains(until) => {
                    let at = l.find(until).unwrap_or(0) + until.len();
                    return (out, l[at..].trim().to_string());
                }
                Ok(l) if l.contains(prefix) => {
                    let at = l.find(prefix).unwrap_or(0) + prefix.len();
                    out.push(l[at..].trim().to_string());
                }
                Ok(_) => {}
                Err(e) => panic!("helper never said {until:?}: {e}"),
            }
        }
    }

    pub fn say(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `kill -9` and reap.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        self.stdin.take();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A daemon started by hand, killed when dropped if it is still running (a failed test leaves
/// no daemon behind).
pub struct Spawned(pub Child);

impl std::ops::Deref for Spawned {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Spawned {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Starts `vsvad` on `dir/vsvad.sock` and `dir/state` with debug logging, its standard
/// output and error pipes for the test to keep, read or close, and `args` added.
pub fn spawn_logging(dir: &Path, args: &[&std::ffi::OsStr]) -> Spawned {
    Spawned(
        Command::new(env!("CARGO_BIN_EXE_vsvad"))
            .arg("--socket")
            .arg(dir.join("vsvad.sock"))
            .arg("--state-dir")
            .arg(dir.join("state"))
            .args(args)
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn vsvad"),
    )
}

/// Sends SIGTERM to a daemon started by hand and waits for its exit status.
pub fn sigterm(child: &mut Child) -> std::process::ExitStatus {
    rustix::process::kill_process(
        rustix::process::Pid::from_child(child),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    let mut status = None;
    wait_until("vsvad to exit after SIGTERM", || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    status.unwrap()
}

/// The metrics page of a daemon started with `--metrics-addr addr`.
pub fn scrape(addr: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut page = String::new();
    std::io::Read::read_to_string(&mut s, &mut page).unwrap();
    assert!(page.starts_with("HTTP/1.1 200 OK"), "{page}");
    page
}

/// The value of an unlabelled (or fully labelled) series on a metrics page.
pub fn metric(page: &str, series: &str) -> u64 {
    page.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {series} in\n{page}"))
        .parse()
        .unwrap()
}

/// A loopback address with a port nothing listens on now.
pub fn free_loopback_addr() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("127.0.0.1:{port}")
}

/// Waits until `f` holds (polling), or panics with `what`.
pub fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The helper process body, run when `VSVA_HELPER` is set. Scripts:
///
/// * `hold:GROUP:N` — allocate N PASIDs on a nesting container of GROUP, print `PASIDS ...`,
///   then wait for stdin to close.
/// * `loop:GROUP` — allocate until an error, printing `A <pasid>` after each acknowledged
///   allocation and `ERR <msg>` at the end; then on `RESUME` reconnect and print
///   `RESUMED <0|1> <pasids...>`; exit at stdin EOF.
/// * `quota:GROUP` — allocate until an error, print `OWNED <n> <errno>`, then wait.
/// * `faults:GROUP:SID` — count the faults visible, fault once on device SID (hex) through an
///   unbound PASID, count again: print `FAULTS <before> <after>`.
/// * `watch` — answer each stdin line with `STATUS <held> <allocated>`.
/// * `unprivileged:PID` — try to change PID's quota and force-release it, list the sets, and
///   print `UNPRIVILEGED admin=<bool> quota=<errno|ok> release=<errno|ok> others=<n>`.
pub fn helper_main(script: &str) {
    let socket = PathBuf::from(std::env::var_os("VSVA_HELPER_SOCKET").expect("socket"));
    let mut opts = Options::new(&socket, "helper");
    opts.timeout = Some(Duration::from_secs(20));
    let mut client = Client::connect(opts).expect("helper connect");
    let parts: Vec<&str> = script.split(':').collect();
    let stdin = std::io::stdin();
    let mut out = std::io::stdout();
    if parts[0] == "watch" {
        // Answers each `S` line with `STATUS <held> <allocated>`.
        let mut line = String::new();
        loop {
            line.clear();
            if stdin.lock().read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let st = client.status().expect("status");
            writeln!(out, "STATUS {} {}", st.held, st.allocated).unwrap();
            out.flush().unwrap();
        }
    }
    if parts[0] == "unprivileged" {
        // Tries every admin request on the pid given, then lists the sets it can see.
        let target: u32 = parts[1].parse().unwrap();
        let name = |r: Result<(), vsva_client::ClientError>| match r {
            Ok(()) => "ok".to_string(),
            Err(e) => e.errno().map_or(e.to_string(), |e| e.name().to_string()),
        };
        let quota = name(client.set_quota(target, 1));
        let release = name(client.force_release(target).map(|_| ()));
        let sets = client.sets().expect("sets");
        let me = std::process::id();
        let others = sets.iter().filter(|e| e.credentials.pid != me).count();
        writeln!(
            out,
            "UNPRIVILEGED admin={} quota={quota} release={release} others={others}",
            client.is_admin()
        )
        .unwrap();
        out.flush().unwrap();
        return;
    }
    let group: u32 = parts[1].parse().unwrap();
    let c = client.nesting_container(group).expect("nesting container");
    if parts[0] == "faults" {
        // Counts the faults visible before and after faulting once on device SID itself.
        let sid = u16::from_str_radix(parts[2], 16).unwrap();
        let before = client.faults(4096).expect("faults").faults.len();
        client.enable_pasid(sid).expect("enable PASID");
        let p = client.pasid_alloc(c, 1, u32::MAX).unwrap();
        assert!(client.dma_read(sid, Some(p), 0x1000, 4).is_err());
        let after = client.faults(4096).expect("faults").faults.len();
        writeln!(out, "FAULTS {before} {after}").unwrap();
        out.flush().unwrap();
        return;
    }
    match parts[0] {
        "hold" => {
            let n: u32 = parts[2].parse().unwrap();
            let pasids: Vec<String> = (0..n)
                .map(|_| client.pasid_alloc(c, 1, u32::MAX).unwrap().to_string())
                .collect();
            writeln!(out, "PASIDS {}", pasids.join(" ")).unwrap();
            out.flush().unwrap();
            let mut line = String::new();
            while stdin.lock().read_line(&mut line).unwrap_or(0) > 0 {
                line.clear();
            }
        }
        "quota" => {
            let mut n = 0;
            let errno = loop {
                match client.pasid_alloc(c, 1, u32::MAX) {
                    Ok(_) => n += 1,
                    Err(e) => {
                        break e
                            .errno()
                            .map_or("none".to_string(), |e| e.name().to_string())
                    }
                }
            };
            writeln!(out, "OWNED {n} {errno}").unwrap();
            out.flush().unwrap();
            let mut line = String::new();
            while stdin.lock().read_line(&mut line).unwrap_or(0) > 0 {
                line.clear();
            }
        }
        "loop" => {
            writeln!(out, "READY").unwrap();
            out.flush().unwrap();
            loop {
                match client.pasid_alloc(c, 1, u32::MAX) {
                    Ok(p) => {
                        writeln!(out, "A {p}").unwrap();
                        out.flush().unwrap();
                    }
                    Err(e) => {
                        writeln!(out, "ERR {e}").unwrap();
                        out.flush().unwrap();
                        break;
                    }
                }
            }
            let mut line = String::new();
            loop {
                line.clear();
                if stdin.lock().read_line(&mut line).unwrap_or(0) == 0 {
                    return;
                }
                if line.trim() == "RESUME" {
                    match client.reconnect() {
                        Ok(resumed) => {
                            let list: Vec<String> = client
                                .hello()
                                .restored
                                .iter()
                                .map(|p| p.to_string())
                                .collect();
                            writeln!(out, "RESUMED {} {}", u8::from(resumed), list.join(" "))
                                .unwrap();
                        }
                        Err(e) => writeln!(out, "RESUMED 0 error {e}").unwrap(),
                    }
                    out.flush().unwrap();
                }
            }
        }
        other => panic!("unknown helper script {other}"),
    }
}
