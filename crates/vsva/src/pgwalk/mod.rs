//! `vsva pgwalk`: walk a first-level (x86-64 4/5-level) table in a raw memory image with the
//! IOMMU's own walker (`vsva_iommu::paging::walk_first_level`), read-only.
//!
//! The image is mapped privately and read-only into one vm-memory region whose guest-physical
//! base is `--image-base`; table pointers leaving the image are reported as access-error
//! faults (0x70) at the level they point to. Output, one JSON object per line and address:
//! `{"va":"0x…","ok":true,"pa":"0x…","page_size":4096,"writable":…,"user":…,"executable":…}`
//! or `{"va":"0x…","ok":false,"fault":"<reason>","code":"0x71","level":N}` (level 0: the
//! address is not canonical). Unparsable stdin lines give
//! `{"input":"…","ok":false,"error":"…"}` and exit status 1 at the end.
//!
//! With `--trace` each address is drawn level by level instead (see `trace.rs`): the path
//! (`PML4[254] → PDPT[0] → PD[0] → PT[1]`), every entry with its address, value and flags,
//! then the page it maps or the fault that stopped the walk.
//!
//! Addresses read from stdin are answered line by line (each answer is flushed before the
//! next line is read), so another program can drive a walk interactively; when stdin is a
//! terminal, a hint on stderr says what is expected. A closed stdout ends the walk quietly.

use std::io::{self, BufRead, BufWriter, IsTerminal, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::process::ExitCode;

use vm_memory::{FileOffset, GuestAddress, GuestMemoryMmap, GuestRegionMmap, MmapRegion};
use vsva_iommu::paging::{walk_first_level, FlParams, Identity};

use crate::number::parse_u64;

mod trace;
pub(crate) use trace::watched_walk;

/// Arguments of `vsva pgwalk`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Raw memory image (byte 0 is guest-physical --image-base).
    #[arg(long)]
    pub image: std::path::PathBuf,
    /// Guest-physical address of the image's first byte.
    #[arg(long, default_value = "0", value_parser = parse_u64, allow_negative_numbers = true)]
    pub image_base: u64,
    /// Guest-physical address of the root table (PML4, or PML5 with --levels 5).
    #[arg(long, value_parser = parse_u64, allow_negative_numbers = true)]
    pub root: u64,
    /// Paging levels.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u8).range(4..=5))]
    pub levels: u8,
    /// Physical address width: address bits at or above it are reserved (0x72).
    #[arg(long, default_value_t = 52, value_parser = clap::value_parser!(u8).range(32..=52))]
    pub haw: u8,
    /// Treat 1 GiB pages as unsupported (PS in a PDPTE is then reserved).
    #[arg(long)]
    pub no_1g: bool,
    /// Addresses to walk (hex with 0x, or decimal); standard input when none.
    #[arg(long = "va", value_parser = parse_u64, allow_negative_numbers = true)]
    pub vas: Vec<u64>,
    /// Draw each walk level by level (text: every entry with its flags, then the page or
    /// the fault) instead of one JSON line per address.
    #[arg(long)]
    pub trace: bool,
}

/// Errors that stop the command.
#[derive(Debug)]
pub enum PgwalkError {
    /// The image could not be opened or mapped.
    Image(String),
    /// The root is not usable.
    Root(String),
    /// Reading the input or writing the output failed (not a closed stdout: see
    /// [`StdoutClosed`](Self::StdoutClosed)).
    Io(io::Error),
    /// Stdout was closed by its reader (`| head`): the walk stops quietly.
    StdoutClosed,
}

impl std::fmt::Display for PgwalkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PgwalkError::Image(m) | PgwalkError::Root(m) => f.write_str(m),
            PgwalkError::Io(e) => write!(f, "reading input or writing output: {e}"),
            PgwalkError::StdoutClosed => f.write_str("stdout was closed"),
        }
    }
}

impl From<io::Error> for PgwalkError {
    fn from(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::BrokenPipe {
            PgwalkError::StdoutClosed
        } else {
            PgwalkError::Io(e)
        }
    }
}

fn map_image(args: &Args) -> Result<(GuestMemoryMmap, u64), PgwalkError> {
    let path = args.image.display();
    // Non-blocking, so that opening a FIFO does not wait for a writer; only a regular file
    // has a size to map.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(&args.image)
        .map_err(|e| PgwalkError::Image(format!("cannot open image {path}: {e}")))?;
    let meta = file
        .metadata()
        .map_err(|e| PgwalkError::Image(format!("cannot stat image {path}: {e}")))?;
    let what = vsva_proto::paths::not_a_regular_file(meta.file_type());
    if let Some(what) = what {
        return Err(PgwalkError::Image(format!(
            "image {path} is {what}; an image must be a regular file (a raw memory dump)"
        )));
    }
    let len = meta.len();
    if len == 0 {
        return Err(PgwalkError::Image(format!("image {path} is empty")));
    }
    if args.image_base.checked_add(len).is_none() {
        return Err(PgwalkError::Image(format!(
            "image {path} of {len:#x} bytes at --image-base {:#x} overflows the address space",
            args.image_base
        )));
    }
    let size =
        usize::try_from(len).map_err(|_| PgwalkError::Image(format!("image {path} too large")))?;
    // A private, read-only mapping: the walk never changes the image.
    let region = MmapRegion::<()>::build(
        Some(FileOffset::new(file, 0)),
        size,
        libc::PROT_READ,
        libc::MAP_PRIVATE | libc::MAP_NORESERVE,
    )
    .map_err(|e| PgwalkError::Image(format!("cannot map image {path}: {e}")))?;
    let region = GuestRegionMmap::new(region, GuestAddress(args.image_base)).ok_or_else(|| {
        PgwalkError::Image(format!(
            "image {path} does not fit at --image-base {:#x}",
            args.image_base
        ))
    })?;
    let mem = GuestMemoryMmap::from_regions(vec![region])
        .map_err(|e| PgwalkError::Image(format!("cannot use image {path}: {e}")))?;
    Ok((mem, len))
}

fn emit(
    out: &mut impl Write,
    mem: &GuestMemoryMmap,
    p: &FlParams,
    args: &Args,
    va: u64,
) -> io::Result<()> {
    let root = args.root;
    if args.trace {
        return trace::draw(out, mem, p, root, va);
    }
    match walk_first_level(mem, &mut Identity, p, root, va, None) {
        Ok(w) => writeln!(
            out,
            r#"{{"va":"{va:#x}","ok":true,"pa":"{:#x}","page_size":{},"writable":{},"user":{},"executable":{}}}"#,
            w.translate(va),
            w.page_size,
            w.rights.write,
            w.rights.user_or_read,
            w.rights.exec
        ),
        Err(f) => writeln!(
            out,
            r#"{{"va":"{va:#x}","ok":false,"fault":"{}","code":"{:#04x}","level":{}}}"#,
            f.reason.describe(),
            f.reason.code(),
            f.level
        ),
    }
}

/// Runs the command; `Ok(exit code)` once every address was printed.
pub fn run(args: &Args) -> Result<ExitCode, PgwalkError> {
    let (mem, len) = map_image(args)?;
    let end = args.image_base + len;
    if !args.root.is_multiple_of(4096) {
        return Err(PgwalkError::Root(format!(
            "--root {:#x} is not 4 KiB aligned",
            args.root
        )));
    }
    if args.root < args.image_base || args.root.saturating_add(4096) > end {
        return Err(PgwalkError::Root(format!(
            "--root {:#x} is outside the image [{:#x}, {end:#x})",
            args.root, args.image_base
        )));
    }
    let p = FlParams {
        levels: args.levels,
        haw: args.haw,
        fl1gp: !args.no_1g,
    };
    let stdout = io::stdout();
    let mut out = BufWriter::with_capacity(1 << 16, stdout.lock());
    let mut status = ExitCode::SUCCESS;
    if !args.vas.is_empty() {
        for &va in &args.vas {
            emit(&mut out, &mem, &p, args, va)?;
        }
    } else {
        let stdin = io::stdin();
        if stdin.is_terminal() {
            let hint = "vsva pgwalk: type one virtual address per line (hex with 0x, or decimal); \
                        end with Ctrl-D";
            if writeln!(io::stderr(), "{hint}").is_err() {
                // A hint that cannot be shown changes nothing about the walk.
            }
        }
        let mut bytes = Vec::new();
        let mut input = stdin.lock();
        loop {
            bytes.clear();
            if input.read_until(b'\n', &mut bytes)? == 0 {
                break;
            }
            // A line that is not UTF-8 is a bad address like any other, not the end of input.
            let line = String::from_utf8_lossy(&bytes);
            let t = line.trim();
            if t.is_empty() || t.starts_with('#') {
                continue;
            }
            let parsed = if std::str::from_utf8(&bytes).is_ok() {
                parse_u64(t)
            } else {
                Err(format!("{t}: not UTF-8"))
            };
            match parsed {
                Ok(va) => emit(&mut out, &mem, &p, args, va)?,
                Err(e) => {
                    let input = serde_json::Value::from(t);
                    let error = serde_json::Value::from(format!("invalid address: {e}"));
                    writeln!(out, r#"{{"input":{input},"ok":false,"error":{error}}}"#)?;
                    status = ExitCode::from(1);
                }
            }
            // The answer goes out before the next line is waited for.
            out.flush()?;
        }
    }
    out.flush()?;
    Ok(status)
}
