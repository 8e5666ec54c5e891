//! What a process has cost: CPU time and context switches of all its threads, read from
//! `/proc`, for the daemon and for the loadgen's workers.

/// What a process's threads together have cost so far: time on a CPU, time runnable but
/// waiting for one (both from `/proc/<pid>/task/*/schedstat`, in ns), and context switches
/// (`/proc/<pid>/task/*/status`), voluntary (it waited) and not (it was preempted).
#[derive(Debug, Default, Clone, Copy)]
pub struct Usage {
    pub cpu_ns: u64,
    pub wait_ns: u64,
    pub voluntary: u64,
    pub involuntary: u64,
}

impl Usage {
    pub const LEN: usize = 32;

    pub fn to_bytes(self) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
        for (i, v) in [self.cpu_ns, self.wait_ns, self.voluntary, self.involuntary]
            .into_iter()
            .enumerate()
        {
            b[i * 8..i * 8 + 8].copy_from_slice(&v.to_le_bytes());
        }
        b
    }

    pub fn from_bytes(b: &[u8]) -> Usage {
        let v = |i: usize| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().unwrap());
        Usage {
            cpu_ns: v(0),
            wait_ns: v(1),
            voluntary: v(2),
            involuntary: v(3),
        }
    }

    pub fn add(&mut self, o: Usage) {
        self.cpu_ns += o.cpu_ns;
        self.wait_ns += o.wait_ns;
        self.voluntary += o.voluntary;
        self.involuntary += o.involuntary;
    }

    pub fn since(self, before: Usage) -> Usage {
        Usage {
            cpu_ns: self.cpu_ns.saturating_sub(before.cpu_ns),
            wait_ns: self.wait_ns.saturating_sub(before.wait_ns),
            voluntary: self.voluntary.saturating_sub(before.voluntary),
            involuntary: self.involuntary.saturating_sub(before.involuntary),
        }
    }

    /// `cpu µs / switches` per request, for the table.
    pub fn per_request(self, requests: f64) -> String {
        let r = requests.max(1.0);
        format!(
            "{:.2} / {:.2} / {:.2}",
            self.cpu_ns as f64 / 1000.0 / r,
            self.voluntary as f64 / r,
            self.involuntary as f64 / r
        )
    }
}

/// [`Usage`] of process `pid` (all zero where `/proc` cannot be read).
pub fn usage(pid: u32) -> Usage {
    let mut u = Usage::default();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return u;
    };
    for t in tasks.flatten() {
        let dir = t.path();
        if let Ok(s) = std::fs::read_to_string(dir.join("schedstat")) {
            let mut f = s.split_whitespace().map(|x| x.parse::<u64>().unwrap_or(0));
            u.cpu_ns += f.next().unwrap_or(0);
            u.wait_ns += f.next().unwrap_or(0);
        }
        if let Ok(s) = std::fs::read_to_string(dir.join("status")) {
            for line in s.lines() {
                let num = |l: &str| l.split_whitespace().nth(1).and_then(|v| v.parse().ok());
                if line.starts_with("voluntary_ctxt_switches") {
                    u.voluntary += num(line).unwrap_or(0);
                } else if line.starts_with("nonvoluntary_ctxt_switches") {
                    u.involuntary += num(line).unwrap_or(0);
                }
            }
        }
    }
    u
}

/// The pid of the daemon listening on `socket` (its peer credentials).
pub fn daemon_pid(socket: &std::path::Path) -> u32 {
    let s =
        std::os::unix::net::UnixStream::connect(socket).expect("connect to read the daemon's pid");
    let cred = rustix::net::sockopt::socket_peercred(&s).expect("SO_PEERCRED");
    cred.pid.as_raw_nonzero().get() as u32
}
