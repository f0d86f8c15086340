//! Placeholder routing table used while the loader lands; replaced by the real one.
#![allow(clippy::type_complexity)]

use super::model::{Policy, PolicySlot, ProviderIdx};

#[derive(Debug, Default)]
pub struct RoutingTable {
    policies: Vec<Policy>,
    refs: Vec<(Box<str>, Box<str>, Box<[(PolicySlot, ProviderIdx)]>)>,
}

impl RoutingTable {
    pub fn from_policies(policies: Vec<Policy>) -> Result<Self, Vec<String>> {
        let mut refs: Vec<(Box<str>, Box<str>, Vec<(PolicySlot, ProviderIdx)>)> = Vec::new();
        for (s, p) in policies.iter().enumerate() {
            for (i, pr) in p.providers.iter().enumerate() {
                let r = (PolicySlot(s as u32), ProviderIdx(i as u8));
                match refs
                    .iter_mut()
                    .find(|(t, n, _)| *t == p.tenant && *n == pr.name)
                {
                    Some(e) => e.2.push(r),
                    None => refs.push((p.tenant.clone(), pr.name.clone(), vec![r])),
                }
            }
        }
        let refs = refs
            .into_iter()
            .map(|(t, n, v)| (t, n, v.into_boxed_slice()))
            .collect();
        Ok(RoutingTable { policies, refs })
    }

    pub fn lookup(&self, tenant: &str, policy_id: &str) -> Option<PolicySlot> {
        self.policies
            .iter()
            .position(|p| &*p.tenant == tenant && &*p.id == policy_id)
            .map(|i| PolicySlot(i as u32))
    }

    pub fn policy(&self, slot: PolicySlot) -> &Policy {
        &self.policies[slot.get()]
    }

    pub fn policies(&self) -> &[Policy] {
        &self.policies
    }

    pub fn len(&self) -> usize {
        self.policies.len()
    }

    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }

    pub fn provider_refs(&self, tenant: &str, provider: &str) -> &[(PolicySlot, ProviderIdx)] {
        self.refs
            .iter()
            .find(|(t, n, _)| &**t == tenant && &**n == provider)
            .map(|(_, _, r)| &**r)
            .unwrap_or(&[])
    }
}
