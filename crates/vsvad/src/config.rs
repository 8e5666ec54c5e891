//! The daemon's configuration: a TOML file (every key optional) and command-line overrides,
//! validated as a whole before anything starts.
//!
//! Every refusal names the key: unknown keys and wrong types come from the TOML parser with
//! the key and line; out-of-range values are [`ConfigError::Invalid`] with the dotted key path,
//! where the value came from ([`Origin`]: the file, a flag, the environment or a default),
//! the value and what is allowed.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use vsva_iommu::{IommuConfig, SourceId};
use vsva_proto::{DEFAULT_MAX_BODY, HARD_MAX_BODY};

mod sources;
mod validate;

pub(crate) use sources::refuse_at;
use sources::{default_origin, Origins};
pub use sources::{Origin, Overrides};

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The configuration file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema (unknown key, wrong type).
    #[error("config file {path}:\n{message}")]
    Parse {
        /// The configuration file.
        path: PathBuf,
        /// The parser's message, which names the key and line and shows the line with a
        /// marker under the error (on lines of its own).
        message: String,
    },
    /// A setting has a value outside what is allowed. The message names where the value
    /// came from: `config key limits.max_frame = 10: …`, `--socket /…: …`,
    /// `environment variable VSVA_SOCKET = /…: …`.
    #[error("{} {value}: {why}", .origin.label(.key))]
    Invalid {
        /// Dotted key path, e.g. `limits.max_frame` or `devices[2].bdf`.
        key: String,
        /// Where the value came from.
        origin: Origin,
        /// The value, as written.
        value: String,
        /// What is allowed.
        why: String,
    },
}

pub(crate) fn invalid(
    key: impl Into<String>,
    value: impl ToString,
    why: impl Into<String>,
) -> ConfigError {
    refuse_at(&key.into(), Origin::File, value, why)
}

/// When an acknowledged change reaches the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// Written and `fdatasync`ed before the reply (group commit): survives power loss.
    #[default]
    Sync,
    /// Written with `write(2)` before the reply, synced in the background: survives the
    /// daemon being killed, not the machine losing power.
    Async,
    /// Nothing is stored: a restart forgets every allocation.
    Off,
}

impl Durability {
    /// The name used in the file and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Durability::Sync => "sync",
            Durability::Async => "async",
            Durability::Off => "off",
        }
    }

    /// Parses the value of `--durability` (errors name the flag).
    pub fn parse(s: &str) -> Result<Durability, ConfigError> {
        match s {
            "sync" => Ok(Durability::Sync),
            "async" => Ok(Durability::Async),
            "off" => Ok(Durability::Off),
            other => Err(refuse_at(
                "durability",
                Origin::Flag("--durability"),
                other,
                "must be sync, async or off",
            )),
        }
    }
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Listening socket path (default: see `vsva_proto::paths`).
    pub socket: Option<PathBuf>,
    /// State directory (default: see `vsva_proto::paths`).
    pub state_dir: Option<PathBuf>,
    /// PASIDs a new process may own at once.
    pub pasid_quota: u32,
    /// How long PASIDs of live processes are held for them after a restart.
    pub grace_period_secs: u64,
    /// When acknowledged changes reach the disk.
    pub durability: Durability,
    /// A group (name or number) whose members may use the admin requests; root always may.
    pub admin_group: Option<String>,
    /// Loopback address for Prometheus metrics over HTTP (`127.0.0.1:9477`); none by default.
    pub metrics_addr: Option<String>,
    /// `[iommu]`: the simulated IOMMU's capabilities and cache sizes.
    pub iommu: IommuSection,
    /// Resource limits.
    pub limits: Limits,
    /// PCI functions; when absent, four PASID-capable functions in groups 1 to 4.
    pub devices: Option<Vec<DeviceSection>>,
    /// Mediated devices.
    pub mdevs: Vec<MdevSection>,
    /// Where the values that flags or the environment may set came from.
    #[serde(skip)]
    origins: Origins,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            socket: None,
            state_dir: None,
            pasid_quota: 1000,
            grace_period_secs: 30,
            durability: Durability::Sync,
            admin_group: None,
            metrics_addr: None,
            iommu: IommuSection::default(),
            limits: Limits::default(),
            devices: None,
            mdevs: Vec::new(),
            origins: Origins::default(),
        }
    }
}

/// `[iommu]`: the capabilities of the modelled IOMMU.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IommuSection {
    /// PASID width (1..=20).
    pub pasid_bits: u8,
    /// Whether the IOMMU offers nested (first level over second level) translation.
    pub nesting: bool,
    /// 5-level first-level paging (4-level is always there).
    pub five_level: bool,
    /// Address width (39..=57).
    pub mgaw: u8,
    /// How many translations the IOTLB caches.
    pub iotlb_entries: usize,
    /// How many fault records are kept before the oldest are dropped.
    pub fault_log_capacity: usize,
    /// Device TLB (ATS) support.
    pub device_tlb: bool,
    /// MiB of host memory for the IOMMU's own tables (PASID tables, stage-2 tables).
    pub table_pool_mib: u64,
    /// MiB of the table pool the stage-2 tables of one client process may hold together
    /// (1..=`table_pool_mib`): past it the process's container setup and DMA maps fail with
    /// `ENOMEM`, so one process cannot take the whole pool.
    pub table_pool_share_mib: u64,
}

impl Default for IommuSection {
    fn default() -> Self {
        let d = IommuConfig::default();
        IommuSection {
            pasid_bits: 20,
            nesting: true,
            five_level: true,
            mgaw: d.mgaw,
            iotlb_entries: d.iotlb_entries,
            fault_log_capacity: d.fault_log_capacity,
            device_tlb: d.device_tlb,
            table_pool_mib: 64,
            table_pool_share_mib: 16,
        }
    }
}

/// `[limits]`: what one client may use.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Open connections at once, all clients together.
    pub max_connections: u32,
    /// Open connections at once of one uid, so one user cannot take them all.
    pub max_connections_per_uid: u32,
    /// Largest frame body accepted, in bytes.
    pub max_frame: u32,
    /// Requests read ahead on one connection before its replies are written.
    pub max_in_flight: u32,
    /// Reply bytes queued on one connection before it stops reading to write them (one
    /// reply larger than this is still sent alone).
    pub max_queued_bytes: u32,
    /// Time a new connection has to complete its handshake.
    pub handshake_timeout_ms: u64,
    /// Time a started frame has to arrive completely, from its first byte to its last.
    pub frame_timeout_ms: u64,
    /// Time a connection past its hello may stay silent between frames; 0 for no limit (a
    /// VMM that holds PASIDs may rightly be quiet for days, and closing its last connection
    /// releases them).
    pub idle_timeout_secs: u64,
    /// Time a reply may wait for the client to read.
    pub write_timeout_ms: u64,
    /// Guest memory regions one process may register.
    pub max_regions_per_process: u32,
    /// Guest memory one process may register, in MiB.
    pub max_memory_mib_per_process: u64,
    /// Guest memory all processes together may have registered, in MiB (each region keeps
    /// its fd and mapping open in the daemon until unregistered or its process is released).
    pub max_memory_mib_total: u64,
    /// Containers one connection may have open.
    pub max_containers_per_connection: u32,
    /// Events one process's channel queues before the client reads them; past it, events
    /// are dropped and counted, and the client sees an overflow marker.
    pub event_queue_len: u32,
    /// How long an invalidation waits for each device process's acknowledgement before the
    /// device is fenced.
    pub invalidation_timeout_ms: u64,
    /// Connection workers (event-loop threads); 0 for one per core.
    pub workers: u32,
    /// Threads that serve requests which may wait for a device process's acknowledgement
    /// (invalidations, unbinds, PASID frees, unmaps, revokes, detaches while a device process
    /// may cache translations), so no connection worker waits; started as needed, at most
    /// this many. Requests beyond them queue, none is dropped.
    pub blocking_threads: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 1024,
            max_connections_per_uid: 256,
            max_frame: DEFAULT_MAX_BODY,
            max_in_flight: 64,
            max_queued_bytes: 256 * 1024,
            handshake_timeout_ms: 5_000,
            frame_timeout_ms: 10_000,
            idle_timeout_secs: 0,
            write_timeout_ms: 10_000,
            max_regions_per_process: 64,
            max_memory_mib_per_process: 4096,
            max_memory_mib_total: 65536,
            max_containers_per_connection: 64,
            event_queue_len: 1024,
            invalidation_timeout_ms: 1000,
            workers: 0,
            blocking_threads: 4,
        }
    }
}

impl Limits {
    /// How long an invalidation waits for device processes' acknowledgements.
    pub fn invalidation_timeout(&self) -> Duration {
        Duration::from_millis(self.invalidation_timeout_ms)
    }

    /// How long a new connection has to send its hello.
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.handshake_timeout_ms)
    }
    /// How long a started frame may take to arrive completely.
    pub fn frame_timeout(&self) -> Duration {
        Duration::from_millis(self.frame_timeout_ms)
    }
    /// How long a connection past its hello may be silent between frames (`None`: forever).
    pub fn idle_timeout(&self) -> Option<Duration> {
        (self.idle_timeout_secs > 0).then(|| Duration::from_secs(self.idle_timeout_secs))
    }
    /// How long a reply write may block before the connection is cut.
    pub fn write_timeout(&self) -> Duration {
        Duration::from_millis(self.write_timeout_ms)
    }
}

/// `[[devices]]`: one PCI function.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceSection {
    /// Bus:device.function, e.g. `"00:03.0"`.
    pub bdf: String,
    /// IOMMU group; absent for a function kept by the host (a parent of mdevs).
    pub group: Option<u32>,
    /// PASID capability width (0 = no PASID capability).
    #[serde(default = "default_pasid_width")]
    pub pasid_width: u8,
    /// The function has a device TLB (ATS).
    #[serde(default)]
    pub ats: bool,
    /// The function may send page requests (PRI); needs `ats`.
    #[serde(default)]
    pub pri: bool,
}

fn default_pasid_width() -> u8 {
    20
}

/// `[[mdevs]]`: one mediated device.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MdevSection {
    /// The parent function's bus:device.function (a device without a group).
    pub parent: String,
    /// The mdev's IOMMU group.
    pub group: u32,
}

/// A validated PCI function of the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceSpec {
    /// Requester id.
    pub source_id: SourceId,
    /// Group, if assignable.
    pub group: Option<u32>,
    /// PASID capability width, 0 for none.
    pub pasid_width: u8,
    /// Whether the function has an ATS capability (a device TLB).
    pub ats: bool,
    /// Whether the function may send page requests (PRI).
    pub pri: bool,
}

/// A validated mdev of the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MdevSpec {
    /// Parent requester id.
    pub parent: SourceId,
    /// The IOMMU group the mdev is created in.
    pub group: u32,
}

/// The configuration after validation, with defaults resolved.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Socket path.
    pub socket: PathBuf,
    /// State directory.
    pub state_dir: PathBuf,
    /// Default per-process quota.
    pub pasid_quota: u32,
    /// Grace period after a restart.
    pub grace_period: Duration,
    /// When acknowledged changes reach the disk.
    pub durability: Durability,
    /// Admin group id, if configured.
    pub admin_gid: Option<u32>,
    /// Metrics address, if configured.
    pub metrics_addr: Option<SocketAddr>,
    /// IOMMU model configuration.
    pub iommu: IommuConfig,
    /// Table pool size in bytes.
    pub table_pool_bytes: u64,
    /// Bytes of the table pool one process's stage-2 tables may hold.
    pub table_pool_share_bytes: u64,
    /// Per-connection and per-process limits.
    pub limits: Limits,
    /// PCI functions.
    pub devices: Vec<DeviceSpec>,
    /// The mediated devices to create at start.
    pub mdevs: Vec<MdevSpec>,
}

/// The largest configuration file read: far more than any machine's devices need.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// The group of the daemon's private restore function (see the `machine` module), which no
/// configured device may use.
pub const RESTORE_GROUP: u32 = u32::MAX;
/// The source id of the daemon's private restore function, which no configured device may
/// use.
pub const RESTORE_SOURCE_ID: SourceId = SourceId::new(0xff, 0x1f, 7);

fn read_config_file(path: &Path) -> std::io::Result<String> {
    use rustix::fs::{Mode, OFlags};
    use std::io::Read;
    // Non-blocking, so that opening a FIFO does not wait for a writer; a regular file reads
    // the same either way.
    let fd = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY,
        Mode::empty(),
    )?;
    let file = std::fs::File::from(fd);
    let what = vsva_proto::paths::not_a_regular_file(file.metadata()?.file_type());
    if let Some(what) = what {
        return Err(std::io::Error::other(format!(
            "it is {what}; the configuration must be a regular file"
        )));
    }
    let mut text = String::new();
    file.take(MAX_CONFIG_BYTES + 1).read_to_string(&mut text)?;
    if text.len() as u64 > MAX_CONFIG_BYTES {
        return Err(std::io::Error::other(format!(
            "it is larger than {MAX_CONFIG_BYTES} bytes, the most a configuration may be"
        )));
    }
    Ok(text)
}

impl Config {
    /// Parses TOML text; `path` names the file in errors.
    pub fn from_toml(text: &str, path: &Path) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string().trim_end().to_string(),
        })
    }

    /// Reads and parses a file: a regular file of at most [`MAX_CONFIG_BYTES`]. Anything
    /// else is refused, naming what it is, without waiting for it: a FIFO nobody writes to
    /// would block the start forever, and a device like `/dev/zero` never ends.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = read_config_file(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::from_toml(&text, path)
    }
}

/// Parses `bb:dd.f` (hex), optionally with a `0000:` domain prefix.
pub fn parse_bdf(s: &str) -> Option<SourceId> {
    let s = s.strip_prefix("0000:").unwrap_or(s);
    let (bus, rest) = s.split_once(':')?;
    let (dev, func) = rest.split_once('.')?;
    if bus.is_empty() || bus.len() > 2 || dev.is_empty() || dev.len() > 2 || func.len() != 1 {
        return None;
    }
    let bus = u8::from_str_radix(bus, 16).ok()?;
    let dev = u8::from_str_radix(dev, 16).ok()?;
    let func = u8::from_str_radix(func, 16).ok()?;
    (dev < 32 && func < 8).then(|| SourceId::new(bus, dev, func))
}

/// Resolves a group name (from `/etc/group`) or number.
fn resolve_group(g: &str) -> Option<u32> {
    if let Ok(gid) = g.parse::<u32>() {
        return Some(gid);
    }
    let text = std::fs::read_to_string("/etc/group").unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let mut parts = line.split(':');
            let name = parts.next()?;
            let _password = parts.next()?;
            let gid = parts.next()?.parse::<u32>().ok()?;
            (name == g).then_some(gid)
        })
        .next()
}

#[cfg(test)]
mod tests;
