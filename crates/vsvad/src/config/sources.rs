//! Where each setting's value came from — the file, a flag, the environment or a default —
//! so that an error about a value names the place to fix it: a `--socket` that is too long
//! is reported as `--socket …`, not as the file's `socket` key.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use super::{Config, ConfigError, Durability};

/// Where a setting's value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Origin {
    /// The configuration file's key (or, for a key the file leaves out, its fixed default).
    #[default]
    File,
    /// A command-line flag, e.g. `--socket`.
    Flag(&'static str),
    /// An environment variable that names the value itself, e.g. `VSVA_SOCKET`.
    Env(&'static str),
    /// The default path, built from this environment variable when one was used (e.g.
    /// `XDG_RUNTIME_DIR`).
    Default(Option<&'static str>),
}

impl Origin {
    /// What an error prints before the value: `config key socket =`, `--socket`,
    /// `environment variable VSVA_SOCKET =`, `default socket (built from $XDG_RUNTIME_DIR)`.
    pub fn label(self, key: &str) -> String {
        match self {
            Origin::File => format!("config key {key} ="),
            Origin::Flag(flag) => flag.to_owned(),
            Origin::Env(var) => format!("environment variable {var} ="),
            Origin::Default(Some(var)) => format!("default {key} (built from ${var})"),
            Origin::Default(None) => format!("default {key}"),
        }
    }
}

/// The origins of the settings that flags or the environment set; every other setting comes
/// from the file.
#[derive(Debug, Clone, Default)]
pub(crate) struct Origins(Vec<(&'static str, Origin)>);

impl Origins {
    /// Where `key`'s value came from.
    pub(crate) fn get(&self, key: &str) -> Origin {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| *k == key)
            .map_or(Origin::File, |(_, o)| *o)
    }

    fn set(&mut self, key: &'static str, origin: Origin) {
        self.0.retain(|(k, _)| *k != key);
        self.0.push((key, origin));
    }
}

/// Values from the command line and the environment that override the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--socket`.
    pub socket: Option<PathBuf>,
    /// `VSVA_SOCKET`: below `--socket`, above the file's `socket`.
    pub env_socket: Option<PathBuf>,
    /// `--state-dir`.
    pub state_dir: Option<PathBuf>,
    /// `--metrics-addr`.
    pub metrics_addr: Option<String>,
    /// `--durability`.
    pub durability: Option<Durability>,
    /// `--grace-period-secs`.
    pub grace_period_secs: Option<u64>,
    /// `--pasid-quota`.
    pub pasid_quota: Option<u32>,
    /// `--admin-group`.
    pub admin_group: Option<String>,
}

impl Config {
    /// Applies command-line and environment overrides, remembering where each value came
    /// from for the errors about it.
    pub fn apply(&mut self, o: &Overrides) {
        let origins = &mut self.origins;
        // `VSVA_SOCKET` first, so that `--socket` wins over it.
        if let Some(v) = &o.env_socket {
            self.socket = Some(v.clone());
            origins.set("socket", Origin::Env("VSVA_SOCKET"));
        }
        if let Some(v) = &o.socket {
            self.socket = Some(v.clone());
            origins.set("socket", Origin::Flag("--socket"));
        }
        if let Some(v) = &o.state_dir {
            self.state_dir = Some(v.clone());
            origins.set("state_dir", Origin::Flag("--state-dir"));
        }
        if let Some(v) = &o.metrics_addr {
            self.metrics_addr = Some(v.clone());
            origins.set("metrics_addr", Origin::Flag("--metrics-addr"));
        }
        if let Some(v) = o.durability {
            self.durability = v;
            origins.set("durability", Origin::Flag("--durability"));
        }
        if let Some(v) = o.grace_period_secs {
            self.grace_period_secs = v;
            origins.set("grace_period_secs", Origin::Flag("--grace-period-secs"));
        }
        if let Some(v) = o.pasid_quota {
            self.pasid_quota = v;
            origins.set("pasid_quota", Origin::Flag("--pasid-quota"));
        }
        if let Some(v) = &o.admin_group {
            self.admin_group = Some(v.clone());
            origins.set("admin_group", Origin::Flag("--admin-group"));
        }
    }

    /// Where `key`'s value came from (the file, unless a flag or the environment set it).
    pub fn origin(&self, key: &str) -> Origin {
        self.origins.get(key)
    }

    /// An error about `key`'s `value`, naming where the value came from.
    pub(crate) fn refuse(
        &self,
        key: &str,
        value: impl ToString,
        why: impl Into<String>,
    ) -> ConfigError {
        refuse_at(key, self.origin(key), value, why)
    }
}

/// An error about `key`'s `value` that came from `origin`.
pub(crate) fn refuse_at(
    key: &str,
    origin: Origin,
    value: impl ToString,
    why: impl Into<String>,
) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        origin,
        value: value.to_string(),
        why: why.into(),
    }
}

/// Where a default path came from: the first of `vars` (in `env`) it was built under.
pub(crate) fn default_origin(
    path: &Path,
    env: &dyn Fn(&str) -> Option<OsString>,
    vars: &[&'static str],
) -> Origin {
    let from = vars.iter().copied().find(|var| {
        env(var)
            .map(PathBuf::from)
            .is_some_and(|dir| dir.is_absolute() && path.starts_with(dir))
    });
    Origin::Default(from)
}
