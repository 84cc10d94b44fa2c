//! Who may join the running set: the engine's admission rule, without tensors.
//!
//! A row is admitted only if, with it, the running set still fits `max_seqs` rows, `batch`
//! requests (when set) and `max_batch_tokens` KV positions, counted in whole blocks and at
//! worst case: every running row at its full length (prompt and `max_new_tokens`), every live
//! request's prompt blocks once. The pool therefore never runs out mid-decode and no row is ever
//! preempted: a row that ends frees its reservation and the next waiting row is admitted at once
//! (continuous batching). The static mode admits only into an empty running set, as a sampler
//! that decodes each batch until its longest row ends does; the benchmark compares the two.

/// The blocks one request reserves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Need {
    /// The prompt's blocks, shared by the request's rows.
    pub prompt_blocks: usize,
    /// One row's own blocks at full length (its copy of a shared partial block included).
    pub row_blocks: usize,
}

impl Need {
    /// A prompt of `prompt_len` positions decoded for up to `max_new_tokens` tokens; the last
    /// token's keys are never stored (nothing reads them).
    pub fn new(prompt_len: usize, max_new_tokens: usize, block_size: usize) -> Self {
        let last = prompt_len + max_new_tokens.saturating_sub(1);
        Need {
            prompt_blocks: prompt_len.div_ceil(block_size),
            row_blocks: last.div_ceil(block_size) - prompt_len / block_size,
        }
    }

    /// Blocks of the request alone with one row: what must fit the budget at least.
    pub fn alone(&self) -> usize {
        self.prompt_blocks + self.row_blocks
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub budget_blocks: usize,
    pub max_seqs: usize,
    /// Live requests at once (the sampler's `batch`); `None` = no limit of its own.
    pub max_requests: Option<usize>,
    pub continuous: bool,
}

#[derive(Debug, Clone)]
pub struct Scheduler {
    limits: Limits,
    reserved: usize,
    rows: usize,
    requests: usize,
    /// Static mode: whether this admission round began with an empty running set.
    open: bool,
}

impl Scheduler {
    pub fn new(limits: Limits) -> Self {
        Scheduler { limits, reserved: 0, rows: 0, requests: 0, open: true }
    }

    /// Start an admission round (before each decode step).
    pub fn begin_round(&mut self) {
        self.open = self.limits.continuous || self.rows == 0;
    }

    /// Whether a row of a request with `need` may join now; `new_request` when the request is
    /// not live yet (its prompt is still to prefill).
    pub fn can_admit(&self, need: Need, new_request: bool) -> bool {
        let blocks = need.row_blocks + if new_request { need.prompt_blocks } else { 0 };
        self.open
            && self.rows < self.limits.max_seqs
            && (!new_request || self.limits.max_requests.is_none_or(|m| self.requests < m))
            && self.reserved + blocks <= self.limits.budget_blocks
    }

    pub fn admit(&mut self, need: Need, new_request: bool) {
        if new_request {
            self.requests += 1;
            self.reserved += need.prompt_blocks;
        }
        self.rows += 1;
        self.reserved += need.row_blocks;
    }

    pub fn finish_row(&mut self, need: Need) {
        self.rows -= 1;
        self.reserved -= need.row_blocks;
    }

    pub fn finish_request(&mut self, need: Need) {
        self.requests -= 1;
        self.reserved -= need.prompt_blocks;
    }

    pub fn rows(&self) -> usize {
        self.rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(budget_blocks: usize, max_seqs: usize, continuous: bool) -> Limits {
        Limits { budget_blocks, max_seqs, max_requests: None, continuous }
    }

    #[test]
    fn a_row_reserves_its_full_length_in_blocks() {
        // 20 prompt positions + 9 stored new ones = 29: blocks 0..2, the first shared.
        assert_eq!(Need::new(20, 10, 16), Need { prompt_blocks: 2, row_blocks: 1 });
        assert_eq!(Need::new(16, 1, 16), Need { prompt_blocks: 1, row_blocks: 0 });
        assert_eq!(Need::new(16, 2, 16), Need { prompt_blocks: 1, row_blocks: 1 });
        assert_eq!(Need::new(5, 100, 16).alone(), 1 + 7);
    }

    #[test]
    fn rows_blocks_and_requests_bound_the_running_set() {
        let need = Need { prompt_blocks: 2, row_blocks: 3 };
        let mut s = Scheduler::new(limits(11, 3, true));
        s.begin_round();
        assert!(s.can_admit(need, true));
        s.admit(need, true);
        assert!(s.can_admit(need, false));
        s.admit(need, false);
        // 2 + 3 + 3 = 8 held; another row needs 3 more: 11 fits, a new request's 5 does not.
        assert!(s.can_admit(need, false) && !s.can_admit(need, true));
        s.admit(need, false);
        assert!(!s.can_admit(Need { prompt_blocks: 0, row_blocks: 0 }, false), "max_seqs = 3");
        s.finish_row(need);
        assert!(s.can_admit(need, false));
        let mut one = Scheduler::new(Limits { max_requests: Some(1), ..limits(100, 10, true) });
        one.admit(need, true);
        assert!(one.can_admit(need, false) && !one.can_admit(need, true));
        one.finish_request(need);
        assert!(one.can_admit(need, true));
    }

    #[test]
    fn static_batching_admits_only_into_an_empty_set() {
        let need = Need { prompt_blocks: 1, row_blocks: 1 };
        let mut s = Scheduler::new(limits(100, 2, false));
        s.begin_round();
        s.admit(need, true);
        assert!(s.can_admit(need, false), "the round that began empty keeps filling");
        s.admit(need, false);
        s.finish_row(need);
        s.begin_round();
        assert!(!s.can_admit(need, false), "one row still runs");
        s.finish_row(need);
        s.begin_round();
        assert!(s.can_admit(need, false));
    }
}
