//! Runs the built `vsva` binary on page-table images built here.

use std::io::Write;
use std::process::{Command, Stdio};

const P: u64 = 1;
const RW: u64 = 2;
const US: u64 = 4;
const PS: u64 = 1 << 7;
const XD: u64 = 1 << 63;

/// An image of `pages` 4 KiB pages at guest-physical `base`.
struct Image {
    base: u64,
    bytes: Vec<u8>,
}

impl Image {
    fn new(base: u64, pages: usize) -> Self {
        Self {
            base,
            bytes: vec![0; pages * 4096],
        }
    }
    fn set(&mut self, gpa: u64, v: u64) {
        let off = (gpa - self.base) as usize;
        self.bytes[off..off + 8].copy_from_slice(&v.to_le_bytes());
    }
    fn save(&self, name: &str) -> std::path::PathBuf {
        let path =
            std::env::temp_dir().join(format!("vsva-pgwalk-{}-{name}.img", std::process::id()));
        std::fs::write(&path, &self.bytes).unwrap();
        path
    }
}

fn idx(va: u64, level: u32) -> u64 {
    (va >> (12 + 9 * (level - 1))) & 511
}

/// A 4-level image at base 0x10_0000: PML4 0x10_0000, PDPT 0x10_1000, PD 0x10_2000,
/// PT 0x10_3000. Maps 0x40_1000 → 0x9000 (RW|US), 0x60_0000 2 MiB → 0x20_0000 (US, XD),
/// 0x4000_0000 1 GiB → 0x8000_0000 (RW); a PDE at 0x80_0000 points outside the image.
fn image() -> Image {
    let mut img = Image::new(0x10_0000, 8);
    img.set(0x10_0000, 0x10_1000 | P | RW | US);
    img.set(0x10_1000, 0x10_2000 | P | RW | US);
    img.set(0x10_1000 + 8, 0x8000_0000 | P | RW | PS);
    img.set(0x10_2000 + idx(0x40_1000, 2) * 8, 0x10_3000 | P | RW | US);
    img.set(0x10_3000 + idx(0x40_1000, 1) * 8, 0x9000 | P | RW | US);
    img.set(
        0x10_2000 + idx(0x60_0000, 2) * 8,
        0x20_0000 | P | US | PS | XD,
    );
    img.set(0x10_2000 + idx(0x80_0000, 2) * 8, 0x7000_0000 | P | RW | US);
    img
}

fn vsva(args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_vsva"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let input = stdin.unwrap_or("").to_string();
    let mut pipe = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        let _ = pipe.write_all(input.as_bytes());
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn lines(s: &str) -> Vec<serde_json::Value> {
    s.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn walks_addresses_given_on_the_command_line() {
    let path = image().save("args");
    let p = path.to_str().unwrap();
    let (code, out, err) = vsva(
        &[
            "pgwalk",
            "--image",
            p,
            "--image-base",
            "0x100000",
            "--root",
            "0x100000",
            "--va",
            "0x401abc",
            "--va",
            "0x612345",
            "--va",
            "1073741829",
            "--va",
            "0x402000",
            "--va",
            "0x800000",
            "--va",
            "0x800000000000",
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    let v = lines(&out);
    assert_eq!(v.len(), 6);
    assert_eq!(
        v[0],
        serde_json::json!({"va":"0x401abc","ok":true,"pa":"0x9abc","page_size":4096,"writable":true,"user":true,"executable":true})
    );
    assert_eq!(
        v[1],
        serde_json::json!({"va":"0x612345","ok":true,"pa":"0x212345","page_size":2097152,"writable":false,"user":true,"executable":false})
    );
    assert_eq!(v[2]["pa"], "0x80000005");
    assert_eq!(v[2]["page_size"], 1u64 << 30);
    assert_eq!(v[2]["user"], false);
    assert_eq!(v[3]["ok"], false);
    assert_eq!(v[3]["fault"], "first-level entry not present");
    assert_eq!(v[3]["level"], 1);
    // A table pointer outside the image is a fault, not a crash.
    assert_eq!(v[4]["fault"], "first-level entry access error");
    assert_eq!(v[4]["code"], "0x70");
    assert_eq!(v[4]["level"], 1);
    assert_eq!(v[5]["fault"], "input address not canonical");
    let _ = std::fs::remove_file(path);
}

#[test]
fn reads_many_addresses_from_stdin() {
    let path = image().save("stdin");
    let p = path.to_str().unwrap();
    let n = 20_000u64;
    let mut input = String::new();
    for i in 0..n {
        if i % 2 == 0 {
            input.push_str(&format!("{:#x}\n", 0x40_1000 + (i % 4096)));
        } else {
            input.push_str(&format!("{}\n", 0x60_0000 + i));
        }
    }
    input.push_str("not-an-address\n");
    let (code, out, err) = vsva(
        &[
            "pgwalk",
            "--image",
            p,
            "--image-base",
            "1048576",
            "--root",
            "0x100000",
        ],
        Some(&input),
    );
    assert_eq!(code, 1, "an unparsable line sets exit status 1: {err}");
    let v = lines(&out);
    assert_eq!(v.len() as u64, n + 1);
    assert!(v[..n as usize].iter().all(|l| l["ok"] == true));
    assert_eq!(v[1]["pa"], "0x200001");
    assert_eq!(v[n as usize]["input"], "not-an-address");
    let _ = std::fs::remove_file(path);
}

#[test]
fn five_levels_and_reserved_bits() {
    let mut img = Image::new(0, 8);
    let va = 0x00ab_cdef_1234_5000u64 & ((1 << 56) - 1);
    let tables = [0x1000u64, 0x2000, 0x3000, 0x4000, 0x5000];
    for (l, w) in tables.windows(2).enumerate() {
        img.set(w[0] + idx(va, 5 - l as u32) * 8, w[1] | P | RW | US);
    }
    img.set(0x5000 + idx(va, 1) * 8, 0x7000 | P | RW | US);
    img.set(0x1000 + 8, 0x2000 | P | PS); // PS in a PML5E is reserved
    let path = img.save("five");
    let p = path.to_str().unwrap();
    let (code, out, err) = vsva(
        &[
            "pgwalk",
            "--image",
            p,
            "--root",
            "0x1000",
            "--levels",
            "5",
            "--va",
            &format!("{va:#x}"),
            "--va",
            &format!("{:#x}", 1u64 << 48),
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    let v = lines(&out);
    assert_eq!(v[0]["pa"], "0x7000");
    assert_eq!(v[1]["fault"], "first-level entry reserved bits set");
    assert_eq!(v[1]["level"], 5);
    let _ = std::fs::remove_file(path);
}

#[test]
fn bad_roots_and_images_are_clear_errors() {
    let path = image().save("bad");
    let p = path.to_str().unwrap();
    let (code, out, err) = vsva(
        &["pgwalk", "--image", p, "--root", "0x100000", "--va", "0"],
        None,
    );
    assert_eq!(code, 2);
    assert!(out.is_empty());
    assert!(
        err.contains("--root 0x100000 is outside the image [0x0, 0x8000)"),
        "{err}"
    );
    let (code, _, err) = vsva(
        &[
            "pgwalk",
            "--image",
            p,
            "--image-base",
            "0x100000",
            "--root",
            "0x100800",
        ],
        None,
    );
    assert_eq!(code, 2);
    assert!(err.contains("not 4 KiB aligned"), "{err}");
    let (code, _, err) = vsva(
        &["pgwalk", "--image", "/nonexistent/image", "--root", "0"],
        None,
    );
    assert_eq!(code, 2);
    assert!(err.contains("cannot open image"), "{err}");
    let (code, _, err) = vsva(
        &["pgwalk", "--image", p, "--root", "0", "--levels", "3"],
        None,
    );
    assert_ne!(code, 0);
    assert!(err.contains("levels"), "{err}");
    // A negative address reaches the number parser, not clap's "unexpected argument".
    let (code, _, err) = vsva(&["pgwalk", "--image", p, "--root", "0", "--va", "-1"], None);
    assert_ne!(code, 0);
    assert!(err.contains("negative numbers are not accepted"), "{err}");
    let _ = std::fs::remove_file(path);
}

#[test]
fn answers_each_stdin_line_before_the_next_arrives() {
    let path = image().save("interactive");
    let mut child = Command::new(env!("CARGO_BIN_EXE_vsva"))
        .args(["pgwalk", "--image", path.to_str().unwrap()])
        .args(["--image-base", "0x100000", "--root", "0x100000"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    // stdin stays open: each answer must come while the walker waits for the next line.
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        for _ in 0..2 {
            let mut line = String::new();
            std::io::BufRead::read_line(&mut out, &mut line).unwrap();
            tx.send(line).unwrap();
        }
    });
    for (va, pa) in [("0x401000", "0x9000"), ("0x401008", "0x9008")] {
        writeln!(stdin, "{va}").unwrap();
        // A hang guard, not a timing assertion: without the flush no answer ever comes.
        let line = rx
            .recv_timeout(std::time::Duration::from_secs(20))
            .expect("an answer while stdin is still open");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["pa"], pa, "{line}");
    }
    drop(stdin);
    reader.join().unwrap();
    assert!(child.wait().unwrap().success());
    let _ = std::fs::remove_file(path);
}

#[test]
fn a_closed_stdout_ends_the_walk_quietly() {
    let path = image().save("closed");
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = Command::new(env!("CARGO_BIN_EXE_vsva"))
        .args(["pgwalk", "--image", path.to_str().unwrap()])
        .args(["--image-base", "0x100000", "--root", "0x100000"])
        .args(["--va", "0x401000", "--va", "0x600000"])
        .stdout(writer)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.is_empty(), "{err}");
    let _ = std::fs::remove_file(path);
}

#[test]
fn a_terminal_on_stdin_is_told_what_to_type() {
    let path = image().save("tty");
    let walk = format!(
        "{} pgwalk --image {} --image-base 0x100000 --root 0x100000",
        env!("CARGO_BIN_EXE_vsva"),
        path.display()
    );
    // util-linux `script` runs the walk on a pseudo-terminal; ^D ends its input.
    let Ok(mut child) = Command::new("script")
        .args(["-qec", &walk, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
    else {
        eprintln!("skipped: no `script` to provide a terminal");
        return;
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"0x401000\n\x04")
        .unwrap();
    // A terminal that never delivers the ^D must fail the test, not hang it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!("pgwalk on a terminal did not finish within 60 s after ^D");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("type one virtual address per line"), "{text}");
    assert!(text.contains(r#""pa":"0x9000""#), "{text}");
    let _ = std::fs::remove_file(path);
}

#[test]
fn trace_draws_each_level_with_its_entry_and_flags() {
    let path = image().save("trace");
    let p = path.to_str().unwrap();
    let base = [
        "pgwalk",
        "--image",
        p,
        "--image-base",
        "0x100000",
        "--root",
        "0x100000",
        "--trace",
    ];
    // A 4 KiB page: four levels, each entry named by table and index, its flags, its target.
    let (code, out, err) = vsva(&[&base[..], &["--va", "0x401abc"]].concat(), None);
    assert_eq!(code, 0, "{err}");
    let want = "\
va 0x401abc (4-level, root 0x100000)
  PML4[0] → PDPT[0] → PD[2] → PT[1]
  PML4[0]    @ 0x100000+0x000 = 0x0000000000101007  P RW US              → table 0x101000
  PDPT[0]    @ 0x101000+0x000 = 0x0000000000102007  P RW US              → table 0x102000
  PD[2]      @ 0x102000+0x010 = 0x0000000000103007  P RW US              → table 0x103000
  PT[1]      @ 0x103000+0x008 = 0x0000000000009007  P RW US              → 4 KiB page 0x9000
  = pa 0x9abc, 4 KiB page, writable, user, executable
";
    assert_eq!(out, want);
    // A 2 MiB page ends at the PD with PS; a missing PTE ends the walk with the fault.
    let (_, out, _) = vsva(
        &[&base[..], &["--va", "0x612345", "--va", "0x402000"]].concat(),
        None,
    );
    assert!(
        out.contains("PD[3]      @ 0x102000+0x018 = 0x8000000000200085  P US PS XD"),
        "{out}"
    );
    assert!(
        out.contains(
            "→ 2 MiB page 0x200000\n  = pa 0x212345, 2 MiB page, read-only, user, no-execute"
        ),
        "{out}"
    );
    assert!(out.contains("PT[2]      @ 0x103000+0x010 = 0x0000000000000000  -                    → not present\n  fault 0x71 at level 1: first-level entry not present"), "{out}");
    let _ = std::fs::remove_file(path);
}

/// Runs `vsva ARGS` with `stdin` as raw bytes, killing it if it has not ended in 10 s.
fn vsva_bytes(args: &[&str], stdin: &[u8]) -> (Option<i32>, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_vsva"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let input = stdin.to_vec();
    let mut pipe = child.stdin.take().unwrap();
    std::thread::spawn(move || {
        let _ = pipe.write_all(&input);
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// An image that is not a regular file is refused at once, naming what it is (a FIFO would
/// block the open for ever); a line of stdin that is not UTF-8 is answered as a bad address
/// and the walk goes on with the next line.
#[test]
fn odd_images_and_lines_that_are_not_utf8() {
    let dir = std::env::temp_dir().join(format!("vsva-pgwalk-{}-odd", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let fifo = dir.join("fifo.img");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    for (image, what) in [
        (fifo.to_str().unwrap(), "is a FIFO"),
        (dir.to_str().unwrap(), "is a directory"),
        ("/dev/zero", "is a character device"),
    ] {
        let (code, out, err) = vsva_bytes(
            &["pgwalk", "--image", image, "--root", "0", "--va", "0"],
            b"",
        );
        assert_eq!(code, Some(2), "{image}: {err}");
        assert!(out.is_empty());
        assert!(err.contains(what) && err.contains(image), "{err}");
    }
    let path = image().save("notutf8");
    let (code, out, err) = vsva_bytes(
        &[
            "pgwalk",
            "--image",
            path.to_str().unwrap(),
            "--root",
            "0x1000",
        ],
        b"0x0\n\xff\xfe\n0x1\n",
    );
    assert_eq!(code, Some(1), "{err}");
    let answers = lines(&out);
    assert_eq!(answers.len(), 3, "{out}");
    assert_eq!(answers[1]["ok"], false);
    assert!(
        answers[1]["error"].as_str().unwrap().contains("not UTF-8"),
        "{out}"
    );
    assert_eq!(answers[2]["va"], "0x1", "{out}");
    let _ = std::fs::remove_file(path);
    let _ = std::fs::remove_dir_all(&dir);
}
