//! The state a log replays to: for each process its user, quota, resume token and PASIDs,
//! and for each PASID its one owner.

use std::collections::{BTreeMap, BTreeSet};

use vsva_proto::ResumeToken;
use vsva_vfio::ProcessToken;

use super::record::Record;

/// What the store knows about one process.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProcessRecord {
    /// Its user.
    pub uid: u32,
    /// Its quota.
    pub quota: u32,
    /// Its resume token.
    pub resume: ResumeToken,
    /// The PASIDs it owns.
    pub pasids: BTreeSet<u32>,
}

/// The state a log replays to.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StoreState {
    /// Processes with a context.
    pub processes: BTreeMap<ProcessToken, ProcessRecord>,
    /// PASID → owner, the inverse of every `pasids` set.
    pub owners: BTreeMap<u32, ProcessToken>,
}

impl StoreState {
    /// Applies one record.
    pub fn apply(&mut self, rec: &Record) {
        match rec {
            Record::Header { .. } => {}
            Record::Begin {
                token,
                uid,
                quota,
                resume,
            } => {
                let p = self.processes.entry(*token).or_default();
                p.uid = *uid;
                p.quota = *quota;
                p.resume = *resume;
            }
            Record::Alloc { token, pasid } => {
                if let Some(prev) = self.owners.insert(*pasid, *token) {
                    if prev != *token {
                        if let Some(p) = self.processes.get_mut(&prev) {
                            p.pasids.remove(pasid);
                        }
                    }
                }
                self.processes
                    .entry(*token)
                    .or_default()
                    .pasids
                    .insert(*pasid);
            }
            Record::FreeRange { token, min, max } => {
                if let Some(p) = self.processes.get_mut(token) {
                    if min <= max {
                        let gone: Vec<u32> = p.pasids.range(*min..=*max).copied().collect();
                        for pasid in gone {
                            p.pasids.remove(&pasid);
                            self.owners.remove(&pasid);
                        }
                    }
                }
            }
            Record::Quota { token, quota } => {
                if let Some(p) = self.processes.get_mut(token) {
                    p.quota = *quota;
                }
            }
            Record::End { token } => {
                if let Some(p) = self.processes.remove(token) {
                    for pasid in p.pasids {
                        if self.owners.get(&pasid) == Some(token) {
                            self.owners.remove(&pasid);
                        }
                    }
                }
            }
        }
    }

    /// The records that rebuild this state from nothing.
    pub fn snapshot_records(&self, instance: u64) -> Vec<Record> {
        let mut out = vec![Record::Header { instance }];
        for (token, p) in &self.processes {
            out.push(Record::Begin {
                token: *token,
                uid: p.uid,
                quota: p.quota,
                resume: p.resume,
            });
            for &pasid in &p.pasids {
                out.push(Record::Alloc {
                    token: *token,
                    pasid,
                });
            }
        }
        out
    }

    /// Rough count of records a snapshot would hold.
    pub(super) fn snapshot_len(&self) -> usize {
        1 + self.processes.len() + self.owners.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_token as token;

    #[test]
    fn alloc_takes_from_the_earlier_owner() {
        let mut s = StoreState::default();
        s.apply(&Record::Alloc {
            token: token(1),
            pasid: 5,
        });
        s.apply(&Record::Alloc {
            token: token(2),
            pasid: 5,
        });
        // Process 1's free landed after process 2's alloc: it must not take 5 from 2.
        s.apply(&Record::FreeRange {
            token: token(1),
            min: 0,
            max: u32::MAX,
        });
        s.apply(&Record::End { token: token(1) });
        assert_eq!(s.owners.get(&5), Some(&token(2)));
        assert!(s.processes[&token(2)].pasids.contains(&5));
        assert!(!s.processes.contains_key(&token(1)));
    }
}
