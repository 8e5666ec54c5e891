//! Validating a parsed configuration as a whole, with the command-line overrides, into the
//! [`Settings`] the daemon starts from: every value in range, the devices, groups and mdevs
//! consistent, and the machine they describe one that a start can build.

use super::*;

impl Config {
    /// Validates everything and resolves defaults (`euid` and `env` pick the default paths).
    pub fn validate(
        &self,
        euid: u32,
        env: &dyn Fn(&str) -> Option<std::ffi::OsString>,
    ) -> Result<Settings, ConfigError> {
        let (socket, socket_origin) = match &self.socket {
            Some(p) if p.as_os_str().is_empty() => {
                return Err(self.refuse("socket", "\"\"", "must not be empty"))
            }
            Some(p) => (p.clone(), self.origin("socket")),
            None => {
                let p = vsva_proto::paths::default_socket_path(euid, env);
                let vars: &[&str] = if euid == 0 { &[] } else { &["XDG_RUNTIME_DIR"] };
                let origin = default_origin(&p, env, vars);
                (p, origin)
            }
        };
        if socket.as_os_str().len() > 107 {
            return Err(refuse_at(
                "socket",
                socket_origin,
                socket.display(),
                "a Unix socket path must be at most 107 bytes",
            ));
        }
        let state_dir = match &self.state_dir {
            Some(p) if p.as_os_str().is_empty() => {
                return Err(self.refuse("state_dir", "\"\"", "must not be empty"))
            }
            Some(p) => p.clone(),
            None => vsva_proto::paths::default_state_dir(euid, env),
        };
        if self.pasid_quota == 0 {
            return Err(self.refuse(
                "pasid_quota",
                0,
                "must be at least 1 (a quota of 0 refuses every PASID to every process)",
            ));
        }
        if self.grace_period_secs > 86_400 {
            return Err(self.refuse(
                "grace_period_secs",
                self.grace_period_secs,
                "must be at most 86400 (one day)",
            ));
        }
        let admin_gid = match &self.admin_group {
            None => None,
            Some(g) => Some(resolve_group(g).ok_or_else(|| {
                self.refuse(
                    "admin_group",
                    g,
                    "is neither a number nor a group in /etc/group",
                )
            })?),
        };
        let metrics_addr = match &self.metrics_addr {
            None => None,
            Some(a) => {
                let addr: SocketAddr = a.parse().map_err(|_| {
                    self.refuse(
                        "metrics_addr",
                        a,
                        "must be an IP:port address like 127.0.0.1:9477",
                    )
                })?;
                if !addr.ip().is_loopback() {
                    return Err(self.refuse(
                        "metrics_addr",
                        a,
                        "must be a loopback address (127.0.0.0/8 or ::1)",
                    ));
                }
                Some(addr)
            }
        };
        let iommu = self.iommu_config()?;
        let i = &self.iommu;
        if !(1..=4096).contains(&i.table_pool_mib) {
            return Err(invalid(
                "iommu.table_pool_mib",
                i.table_pool_mib,
                "must be between 1 and 4096",
            ));
        }
        if !(1..=i.table_pool_mib).contains(&i.table_pool_share_mib) {
            return Err(invalid(
                "iommu.table_pool_share_mib",
                i.table_pool_share_mib,
                "must be between 1 and iommu.table_pool_mib",
            ));
        }
        self.validate_limits()?;
        let (devices, mdevs) = self.machine()?;
        Ok(Settings {
            socket,
            state_dir,
            pasid_quota: self.pasid_quota,
            grace_period: Duration::from_secs(self.grace_period_secs),
            durability: self.durability,
            admin_gid,
            metrics_addr,
            iommu,
            table_pool_bytes: i.table_pool_mib << 20,
            table_pool_share_bytes: i.table_pool_share_mib << 20,
            limits: self.limits.clone(),
            devices,
            mdevs,
        })
    }

    fn iommu_config(&self) -> Result<IommuConfig, ConfigError> {
        let i = &self.iommu;
        if !(1..=20).contains(&i.pasid_bits) {
            return Err(invalid(
                "iommu.pasid_bits",
                i.pasid_bits,
                "must be between 1 and 20",
            ));
        }
        if !(39..=57).contains(&i.mgaw) {
            return Err(invalid("iommu.mgaw", i.mgaw, "must be between 39 and 57"));
        }
        if !(64..=1 << 20).contains(&i.iotlb_entries) {
            return Err(invalid(
                "iommu.iotlb_entries",
                i.iotlb_entries,
                "must be between 64 and 1048576",
            ));
        }
        if !(1..=1 << 20).contains(&i.fault_log_capacity) {
            return Err(invalid(
                "iommu.fault_log_capacity",
                i.fault_log_capacity,
                "must be between 1 and 1048576",
            ));
        }
        let cfg = IommuConfig {
            pasid_bits: i.pasid_bits,
            nesting: i.nesting,
            fl5lp: i.five_level,
            mgaw: i.mgaw,
            iotlb_entries: i.iotlb_entries,
            fault_log_capacity: i.fault_log_capacity,
            device_tlb: i.device_tlb,
            ..IommuConfig::default()
        };
        cfg.validate()
            .map_err(|e| invalid("iommu", "(section)", e.to_string()))?;
        Ok(cfg)
    }

    fn validate_limits(&self) -> Result<(), ConfigError> {
        let l = &self.limits;
        let check = |key: &str, v: u64, lo: u64, hi: u64| {
            if (lo..=hi).contains(&v) {
                Ok(())
            } else {
                Err(invalid(
                    format!("limits.{key}"),
                    v,
                    format!("must be between {lo} and {hi}"),
                ))
            }
        };
        check("max_connections", l.max_connections.into(), 1, 65_536)?;
        check(
            "max_connections_per_uid",
            l.max_connections_per_uid.into(),
            1,
            65_536,
        )?;
        check("idle_timeout_secs", l.idle_timeout_secs, 0, 30 * 24 * 3600)?;
        check("max_frame", l.max_frame.into(), 4096, HARD_MAX_BODY.into())?;
        check("max_in_flight", l.max_in_flight.into(), 1, 4096)?;
        check(
            "max_queued_bytes",
            l.max_queued_bytes.into(),
            4096,
            HARD_MAX_BODY.into(),
        )?;
        check("handshake_timeout_ms", l.handshake_timeout_ms, 10, 600_000)?;
        check("frame_timeout_ms", l.frame_timeout_ms, 10, 600_000)?;
        check("write_timeout_ms", l.write_timeout_ms, 10, 600_000)?;
        check(
            "max_regions_per_process",
            l.max_regions_per_process.into(),
            0,
            4096,
        )?;
        check(
            "max_memory_mib_per_process",
            l.max_memory_mib_per_process,
            0,
            1 << 20,
        )?;
        check("max_memory_mib_total", l.max_memory_mib_total, 0, 1 << 24)?;
        check(
            "max_containers_per_connection",
            l.max_containers_per_connection.into(),
            1,
            4096,
        )?;
        check("event_queue_len", l.event_queue_len.into(), 1, 65_536)?;
        check(
            "invalidation_timeout_ms",
            l.invalidation_timeout_ms,
            1,
            600_000,
        )?;
        check("workers", l.workers.into(), 0, 256)?;
        check("blocking_threads", l.blocking_threads.into(), 1, 256)?;
        Ok(())
    }

    fn machine(&self) -> Result<(Vec<DeviceSpec>, Vec<MdevSpec>), ConfigError> {
        let devices = match &self.devices {
            Some(list) if list.is_empty() => {
                return Err(invalid(
                    "devices",
                    "[]",
                    "must list at least one device (leave the key out for the default machine)",
                ))
            }
            None => (3u8..=6)
                .map(|dev| DeviceSpec {
                    source_id: SourceId::new(0, dev, 0),
                    group: Some(u32::from(dev) - 2),
                    pasid_width: 20,
                    ats: false,
                    pri: false,
                })
                .collect(),
            Some(list) => {
                let mut out: Vec<DeviceSpec> = Vec::with_capacity(list.len());
                for (i, d) in list.iter().enumerate() {
                    let source_id = parse_bdf(&d.bdf)
                        .ok_or_else(|| invalid(format!("devices[{i}].bdf"), &d.bdf, "must look like 00:03.0 (bus:device.function, hex, device < 0x20, function < 8)"))?;
                    if source_id == RESTORE_SOURCE_ID {
                        return Err(invalid(
                            format!("devices[{i}].bdf"),
                            &d.bdf,
                            "is reserved for the daemon (its restore function)",
                        ));
                    }
                    if d.group == Some(RESTORE_GROUP) {
                        return Err(invalid(
                            format!("devices[{i}].group"),
                            RESTORE_GROUP,
                            "is reserved for the daemon (the group of its restore function)",
                        ));
                    }
                    if out.iter().any(|o| o.source_id == source_id) {
                        return Err(invalid(
                            format!("devices[{i}].bdf"),
                            &d.bdf,
                            "is listed twice",
                        ));
                    }
                    if d.pasid_width > 20 {
                        return Err(invalid(
                            format!("devices[{i}].pasid_width"),
                            d.pasid_width,
                            "must be between 0 and 20",
                        ));
                    }
                    if d.ats && !self.iommu.device_tlb {
                        return Err(invalid(
                            format!("devices[{i}].ats"),
                            d.ats,
                            "needs iommu.device_tlb = true (a device TLB the IOMMU can invalidate)",
                        ));
                    }
                    if d.pri && !d.ats {
                        return Err(invalid(
                            format!("devices[{i}].pri"),
                            d.pri,
                            "page requests need ats = true",
                        ));
                    }
                    out.push(DeviceSpec {
                        source_id,
                        group: d.group,
                        pasid_width: d.pasid_width,
                        ats: d.ats,
                        pri: d.pri,
                    });
                }
                out
            }
        };
        let mut mdevs = Vec::with_capacity(self.mdevs.len());
        for (i, m) in self.mdevs.iter().enumerate() {
            let parent = parse_bdf(&m.parent).ok_or_else(|| {
                invalid(
                    format!("mdevs[{i}].parent"),
                    &m.parent,
                    "must look like 00:10.0",
                )
            })?;
            let parent_spec = match devices.iter().find(|d| d.source_id == parent) {
                None => {
                    return Err(invalid(
                        format!("mdevs[{i}].parent"),
                        &m.parent,
                        "is not one of the configured devices",
                    ))
                }
                Some(d) if d.group.is_some() => {
                    return Err(invalid(
                        format!("mdevs[{i}].parent"),
                        &m.parent,
                        "is assigned to a group; an mdev parent must have no group",
                    ))
                }
                Some(d) => d,
            };
            // Each mdev takes a default PASID of its parent's width (capped by the IOMMU's)
            // from the host's set at start, lowest first: the mdevs before this one hold
            // PASIDs 1..=i.
            let width = parent_spec.pasid_width.min(self.iommu.pasid_bits);
            if width == 0 {
                return Err(invalid(
                    format!("mdevs[{i}].parent"),
                    &m.parent,
                    "has no PASID capability (pasid_width = 0); an mdev's parent needs one",
                ));
            }
            let last = (1u64 << width) - 1;
            if i as u64 + 1 > last {
                return Err(invalid(
                    format!("mdevs[{i}].parent"),
                    &m.parent,
                    format!(
                        "has no PASID left for this mdev's default PASID: with a {width}-bit \
                         PASID width only PASIDs 1 to {last} exist, and the mdevs before it hold them"
                    ),
                ));
            }
            if m.group == RESTORE_GROUP {
                return Err(invalid(
                    format!("mdevs[{i}].group"),
                    m.group,
                    "is reserved for the daemon (the group of its restore function)",
                ));
            }
            if devices.iter().any(|d| d.group == Some(m.group)) {
                return Err(invalid(
                    format!("mdevs[{i}].group"),
                    m.group,
                    "is already the group of a PCI function",
                ));
            }
            if let Some(j) = mdevs.iter().position(|o: &MdevSpec| o.group == m.group) {
                return Err(invalid(
                    format!("mdevs[{i}].group"),
                    m.group,
                    format!("is already the group of mdevs[{j}]"),
                ));
            }
            mdevs.push(MdevSpec {
                parent,
                group: m.group,
            });
        }
        Ok((devices, mdevs))
    }
}
