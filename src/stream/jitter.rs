//! Randomness for spreading retries ("jitter"): every layer that waits between attempts (the
//! backends' contention retries, the command executor, the notification publisher) takes its
//! random fraction from here. Reproducibility is not needed, so it comes from the operating
//! system's generator through a v4 UUID, the one source of randomness the crate already has.

/// A uniformly random number in `[0, 1)`.
pub fn random_unit() -> f64 {
    let bits = (uuid::Uuid::new_v4().as_u128() as u64) >> 11;
    bits as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_unit_is_in_range() {
        for _ in 0..1000 {
            let u = random_unit();
            assert!((0.0..1.0).contains(&u));
        }
    }
}
