//! A round-robin queue over clients, so one client flooding the daemon cannot starve another.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use crate::jobs::{ClientKey, ImageTask};

/// One image to save.
#[derive(Debug, Clone)]
pub struct WorkItem {
    /// The job it belongs to.
    pub job_id: Arc<str>,
    /// Its index in the job.
    pub index: usize,
    /// Who submitted it (the fairness key).
    pub client: ClientKey,
    /// What to do.
    pub task: Arc<ImageTask>,
    /// How many times saving it has failed with a retryable error.
    pub attempt: u32,
}

/// Per-client FIFO queues served in turn.
#[derive(Debug)]
pub(crate) struct FairQueue<K, T> {
    per_client: HashMap<K, VecDeque<T>>,
    turn: VecDeque<K>,
    len: usize,
}

impl<K, T> Default for FairQueue<K, T> {
    fn default() -> Self {
        Self { per_client: HashMap::new(), turn: VecDeque::new(), len: 0 }
    }
}

impl<K: Clone + Eq + std::hash::Hash, T> FairQueue<K, T> {
    pub(crate) fn push(&mut self, client: &K, item: T) {
        let queue = self.per_client.entry(client.clone()).or_default();
        if queue.is_empty() {
            self.turn.push_back(client.clone());
        }
        queue.push_back(item);
        self.len += 1;
    }

    pub(crate) fn pop(&mut self) -> Option<T> {
        let client = self.turn.pop_front()?;
        let queue = self.per_client.get_mut(&client).expect("a client in turn has a queue");
        let item = queue.pop_front().expect("a client in turn has work");
        if queue.is_empty() {
            self.per_client.remove(&client);
        } else {
            self.turn.push_back(client);
        }
        self.len -= 1;
        Some(item)
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flooding_client_does_not_starve_a_late_one() {
        let mut q = FairQueue::default();
        for i in 0..100 {
            q.push(&"flood", i);
        }
        q.push(&"late", 1000);
        q.push(&"late", 1001);
        let first: Vec<i32> = (0..4).map(|_| q.pop().unwrap()).collect();
        assert_eq!(first, [0, 1000, 1, 1001]);
        assert_eq!(q.len(), 98);
        while q.pop().is_some() {}
        assert!(q.is_empty());
    }
}
