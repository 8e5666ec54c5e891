//! The effective configuration written back as TOML, with the configuration file's key names:
//! what `vsvad --check-config` prints, so its output can be saved and used as a config file.

use std::fmt::Write;

use crate::config::{refuse_at, Config, ConfigError, Origin, Settings};

/// A TOML basic string.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                // Writing to a `String` never fails.
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A path as a TOML string; a path that is not UTF-8 has none, and the error names where
/// it came from (`set` is whether a flag, the environment or the file set it at all).
fn path_value(
    config: &Config,
    key: &str,
    set: bool,
    p: &std::path::Path,
) -> Result<String, ConfigError> {
    p.to_str().map(quote).ok_or_else(|| {
        let origin = if set {
            config.origin(key)
        } else {
            Origin::Default(None)
        };
        refuse_at(
            key,
            origin,
            p.display(),
            "is not UTF-8, so no TOML file can name it (the daemon can use it; --check-config \
             cannot print it)",
        )
    })
}

/// `config` (after flags) with every default resolved as `settings` has it, as TOML that
/// `vsvad --config` accepts and resolves to the same settings; an error for a path that no
/// TOML string can hold.
pub fn effective_toml(config: &Config, settings: &Settings) -> Result<String, ConfigError> {
    let socket = path_value(config, "socket", config.socket.is_some(), &settings.socket)?;
    let state_dir = path_value(
        config,
        "state_dir",
        config.state_dir.is_some(),
        &settings.state_dir,
    )?;
    let mut o = String::new();
    let mut line = |s: String| {
        o.push_str(&s);
        o.push('\n');
    };
    line(format!("socket = {socket}"));
    line(format!("state_dir = {state_dir}"));
    line(format!("pasid_quota = {}", settings.pasid_quota));
    line(format!(
        "grace_period_secs = {}",
        settings.grace_period.as_secs()
    ));
    line(format!(
        "durability = {}",
        quote(settings.durability.name())
    ));
    if let Some(g) = &config.admin_group {
        line(format!("admin_group = {}", quote(g)));
    }
    if let Some(a) = settings.metrics_addr {
        line(format!("metrics_addr = {}", quote(&a.to_string())));
    }
    let i = &config.iommu;
    line(String::new());
    line("[iommu]".into());
    line(format!("pasid_bits = {}", i.pasid_bits));
    line(format!("nesting = {}", i.nesting));
    line(format!("five_level = {}", i.five_level));
    line(format!("mgaw = {}", i.mgaw));
    line(format!("iotlb_entries = {}", i.iotlb_entries));
    line(format!("fault_log_capacity = {}", i.fault_log_capacity));
    line(format!("device_tlb = {}", i.device_tlb));
    line(format!("table_pool_mib = {}", i.table_pool_mib));
    line(format!("table_pool_share_mib = {}", i.table_pool_share_mib));
    let l = &settings.limits;
    line(String::new());
    line("[limits]".into());
    for (key, value) in [
        ("max_connections", u64::from(l.max_connections)),
        (
            "max_connections_per_uid",
            u64::from(l.max_connections_per_uid),
        ),
        ("max_frame", u64::from(l.max_frame)),
        ("max_in_flight", u64::from(l.max_in_flight)),
        ("max_queued_bytes", u64::from(l.max_queued_bytes)),
        ("handshake_timeout_ms", l.handshake_timeout_ms),
        ("frame_timeout_ms", l.frame_timeout_ms),
        ("idle_timeout_secs", l.idle_timeout_secs),
        ("write_timeout_ms", l.write_timeout_ms),
        (
            "max_regions_per_process",
            u64::from(l.max_regions_per_process),
        ),
        ("max_memory_mib_per_process", l.max_memory_mib_per_process),
        ("max_memory_mib_total", l.max_memory_mib_total),
        (
            "max_containers_per_connection",
            u64::from(l.max_containers_per_connection),
        ),
        ("event_queue_len", u64::from(l.event_queue_len)),
        ("invalidation_timeout_ms", l.invalidation_timeout_ms),
        ("workers", u64::from(l.workers)),
        ("blocking_threads", u64::from(l.blocking_threads)),
    ] {
        line(format!("{key} = {value}"));
    }
    for d in &settings.devices {
        line(String::new());
        line("[[devices]]".into());
        line(format!("bdf = {}", quote(&d.source_id.to_string())));
        if let Some(g) = d.group {
            line(format!("group = {g}"));
        }
        line(format!("pasid_width = {}", d.pasid_width));
        line(format!("ats = {}", d.ats));
        line(format!("pri = {}", d.pri));
    }
    for m in &settings.mdevs {
        line(String::new());
        line("[[mdevs]]".into());
        line(format!("parent = {}", quote(&m.parent.to_string())));
        line(format!("group = {}", m.group));
    }
    Ok(o)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn the_printed_configuration_reads_back_to_the_same_settings() {
        let text = "admin_group = \"0\"\nmetrics_addr = \"127.0.0.1:9477\"\n\
                    [limits]\nmax_frame = 8192\n\
                    [[devices]]\nbdf = \"00:03.0\"\ngroup = 1\n\
                    [[devices]]\nbdf = \"00:10.0\"\n\
                    [[mdevs]]\nparent = \"00:10.0\"\ngroup = 10\n";
        let env = |_: &str| None;
        let config = Config::from_toml(text, Path::new("t")).unwrap();
        let settings = config.validate(1000, &env).unwrap();
        let printed = effective_toml(&config, &settings).unwrap();
        let again = Config::from_toml(&printed, Path::new("printed")).unwrap();
        let resettled = again.validate(1000, &env).unwrap();
        assert_eq!(
            format!("{resettled:?}"),
            format!("{settings:?}"),
            "{printed}"
        );
        assert_eq!(effective_toml(&again, &resettled).unwrap(), printed);
    }

    /// TOML strings are UTF-8: a path that is not cannot be printed, and printing it lossily
    /// would name another file.
    #[test]
    fn a_path_that_is_not_utf8_is_refused_not_printed_lossily() {
        use std::os::unix::ffi::OsStrExt;
        let env = |_: &str| None;
        for key in ["socket", "state_dir"] {
            let mut config = Config::from_toml("", Path::new("t")).unwrap();
            let odd = std::path::PathBuf::from(std::ffi::OsStr::from_bytes(b"/tmp/\xff"));
            let mut o = crate::config::Overrides::default();
            if key == "socket" {
                o.socket = Some(odd);
            } else {
                o.state_dir = Some(odd);
            }
            config.apply(&o);
            let settings = config.validate(1000, &env).unwrap();
            let err = effective_toml(&config, &settings).unwrap_err().to_string();
            let flag = format!("--{} ", key.replace('_', "-"));
            assert!(err.starts_with(&flag), "{err}");
            assert!(err.contains("not UTF-8"), "{err}");
        }
    }
}
