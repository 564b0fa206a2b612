//! Fault knobs for deterministic simulation, and the seeded generator that drives them.

/// Faults a [`MemLink`](crate::MemLink) injects into each request.
///
/// Every request draws the same four values from the link's seeded generator
/// whatever the knobs are, so a run is a function of the seed and of the
/// order of requests.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Faults {
    /// Probability (0 to 1) that a request is lost before the server sees it.
    pub drop_request: f64,
    /// Probability (0 to 1) that a response is lost after the server applied the request.
    pub drop_response: f64,
    /// Smallest delay added to each direction, milliseconds.
    pub delay_min_ms: u64,
    /// Largest delay added to each direction, milliseconds (uniform in between).
    pub delay_max_ms: u64,
}

impl Faults {
    /// No faults: every request arrives, every answer returns, at once.
    pub const NONE: Faults = Faults {
        drop_request: 0.0,
        drop_response: 0.0,
        delay_min_ms: 0,
        delay_max_ms: 0,
    };
}

/// What happens to one request, drawn before it leaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Plan {
    pub(crate) drop_request: bool,
    pub(crate) drop_response: bool,
    pub(crate) delay_up_ms: u64,
    pub(crate) delay_down_ms: u64,
}

/// SplitMix64: small, fast and good enough to drive fault injection; the
/// seed alone decides the sequence.
#[derive(Clone, Debug)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Rng(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        // 53 random bits fill an f64 mantissa exactly.
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `lo..=hi` (`lo` when the range is empty).
    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        let draw = self.next_u64();
        if hi <= lo {
            return lo;
        }
        match (hi - lo).checked_add(1) {
            Some(width) => lo + draw % width,
            // The whole u64 range: every draw is in it.
            None => draw,
        }
    }

    /// Draws the fate of one request.
    pub(crate) fn plan(&mut self, faults: &Faults) -> Plan {
        Plan {
            drop_request: self.unit() < faults.drop_request,
            drop_response: self.unit() < faults.drop_response,
            delay_up_ms: self.between(faults.delay_min_ms, faults.delay_max_ms),
            delay_down_ms: self.between(faults.delay_min_ms, faults.delay_max_ms),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_are_a_function_of_the_seed() {
        let faults = Faults {
            drop_request: 0.5,
            drop_response: 0.5,
            delay_min_ms: 1,
            delay_max_ms: 9,
        };
        let draw = |seed| {
            let mut rng = Rng::new(seed);
            (0..32).map(|_| rng.plan(&faults)).collect::<Vec<_>>()
        };
        assert_eq!(draw(42), draw(42));
        assert_ne!(draw(42), draw(43));
    }

    #[test]
    fn delays_stay_within_their_range_and_no_faults_draws_none() {
        let faults = Faults {
            delay_min_ms: 3,
            delay_max_ms: 5,
            ..Faults::NONE
        };
        let mut rng = Rng::new(1);
        for _ in 0..1000 {
            let plan = rng.plan(&faults);
            assert!((3..=5).contains(&plan.delay_up_ms));
            assert!((3..=5).contains(&plan.delay_down_ms));
            assert!(!plan.drop_request && !plan.drop_response);
        }
        assert_eq!(Rng::new(9).between(7, 7), 7);
        let mut rng = Rng::new(9);
        assert!((0..4).any(|_| rng.between(0, u64::MAX) > u64::from(u32::MAX)));
    }
}
