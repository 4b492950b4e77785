//! The name-server address list (spec §2.5): shuffled on update, one chosen address kept while
//! it works, round-robin rotation from a random start when it fails.

use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::RwLock;

/// A `;`-separated list of name servers, with the choice of the one currently in use.
#[derive(Debug)]
pub struct NameServerList {
    addrs: RwLock<Vec<String>>,
    chosen: RwLock<Option<String>>,
    index: AtomicUsize,
}

impl Default for NameServerList {
    fn default() -> Self {
        Self {
            addrs: RwLock::new(Vec::new()),
            chosen: RwLock::new(None),
            // Java starts its rotation at a random index below 999.
            index: AtomicUsize::new(fastrand::usize(..999)),
        }
    }
}

impl NameServerList {
    /// Parses `host:port;host:port` (blank entries ignored).
    pub fn parse(list: &str) -> Vec<String> {
        list.split(';')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// Replaces the list if `addrs` is non-empty and differs from the current one (as a set);
    /// the new list is shuffled. Returns whether it changed.
    pub fn update(&self, mut addrs: Vec<String>) -> bool {
        if addrs.is_empty() {
            return false;
        }
        let mut current = self.addrs.write();
        let same = current.len() == addrs.len() && addrs.iter().all(|a| current.contains(a));
        if same {
            return false;
        }
        fastrand::shuffle(&mut addrs);
        let chosen_gone = self
            .chosen
            .read()
            .as_ref()
            .is_some_and(|c| !addrs.contains(c));
        *current = addrs;
        if chosen_gone {
            *self.chosen.write() = None;
        }
        true
    }

    /// The configured addresses.
    pub fn addrs(&self) -> Vec<String> {
        self.addrs.read().clone()
    }

    /// The address in use, if one has been chosen.
    pub fn chosen(&self) -> Option<String> {
        self.chosen.read().clone()
    }

    /// Records `addr` as the address in use.
    pub fn choose(&self, addr: &str) {
        *self.chosen.write() = Some(addr.to_owned());
    }

    /// Forgets `addr` as the address in use (after it failed), so the next call rotates.
    pub fn forget(&self, addr: &str) {
        let mut chosen = self.chosen.write();
        if chosen.as_deref() == Some(addr) {
            *chosen = None;
        }
    }

    /// The order in which to try addresses for a new choice: every address once, starting at
    /// the next rotation index.
    pub fn rotation(&self) -> Vec<String> {
        let addrs = self.addrs.read();
        if addrs.is_empty() {
            return Vec::new();
        }
        let start = self.index.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
        (0..addrs.len())
            .map(|i| addrs[(start + i) % addrs.len()].clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_ignores_blanks() {
        assert_eq!(
            NameServerList::parse(" a:1; ;b:2;"),
            vec!["a:1".to_owned(), "b:2".to_owned()]
        );
    }

    #[test]
    fn update_ignores_empty_and_identical_lists() {
        let list = NameServerList::default();
        assert!(!list.update(vec![]));
        assert!(list.update(vec!["a:1".into(), "b:2".into()]));
        assert!(!list.update(vec!["b:2".into(), "a:1".into()]));
        assert!(list.update(vec!["c:3".into()]));
        assert_eq!(list.addrs(), vec!["c:3".to_owned()]);
    }

    #[test]
    fn rotation_visits_every_address_and_moves_on() {
        let list = NameServerList::default();
        list.update(vec!["a:1".into(), "b:2".into(), "c:3".into()]);
        let first = list.rotation();
        let mut sorted = first.clone();
        sorted.sort();
        assert_eq!(sorted, vec!["a:1", "b:2", "c:3"]);
        let second = list.rotation();
        assert_ne!(first[0], second[0], "each new choice starts one further on");
    }

    #[test]
    fn forgetting_the_chosen_address_clears_it() {
        let list = NameServerList::default();
        list.update(vec!["a:1".into()]);
        list.choose("a:1");
        list.forget("b:2");
        assert_eq!(list.chosen().as_deref(), Some("a:1"));
        list.forget("a:1");
        assert_eq!(list.chosen(), None);
    }
}
