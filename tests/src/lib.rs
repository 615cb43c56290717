//! Integration tests across normcore's crates live in `tests/tests/`; this
//! library holds what they share.
//!
//! Building and running the firmware, and parsing what it prints, is
//! `normcore-device-tools`' job (the one home of the host's device code);
//! this crate adds:
//! - [`golden`]: golden-file comparison of decoded firmware output;
//! - [`workload`]: the computation the `hello` firmware runs, compiled here
//!   from the firmware library's own source file (an independent build of
//!   the same code), so that the host repeats exactly it;
//! - [`scenario`]: the split and the drift the `finetune` firmware runs,
//!   compiled here from its source file in the same way.

pub mod golden;

#[path = "../../firmware/lib/src/workload.rs"]
pub mod workload;

#[path = "../../firmware/lib/src/scenario.rs"]
pub mod scenario;

#[cfg(test)]
mod tests {
    use crate::workload::{Workload, BATCH, INPUTS, OUTPUTS, OUTPUT_LEN};

    /// The shared workload computes what its documentation says: checked
    /// against a naive f64 evaluation of `sigmoid(s·(x·Wᵀ - E) + β)`.
    #[test]
    fn workload_matches_f64_reference() {
        let wl = Workload::new();
        let mut y = [0.0f32; OUTPUT_LEN];
        wl.run(&mut y).expect("workload runs");
        let eps = 1e-5f64;
        for n in 0..BATCH {
            for o in 0..OUTPUTS {
                let z: f64 = (0..INPUTS)
                    .map(|i| f64::from(wl.x[n * INPUTS + i]) * f64::from(wl.w[o * INPUTS + i]))
                    .sum();
                let s = f64::from(wl.gamma[o]) / (f64::from(wl.var[o]) + eps).sqrt();
                let bn = s * (z - f64::from(wl.mean[o])) + f64::from(wl.beta[o]);
                let expect = 1.0 / (1.0 + (-bn).exp());
                let got = f64::from(y[n * OUTPUTS + o]);
                // f32 sums of 16 terms, BN and a sigmoid good to a few ulp.
                assert!(
                    (got - expect).abs() <= 1e-6 + 1e-5 * expect.abs(),
                    "y[{n}][{o}] = {got}, f64 reference {expect}"
                );
            }
        }
        // Not saturated: the check above would be weak on 0s and 1s.
        assert!(y.iter().all(|&v| v > 1e-4 && v < 1.0 - 1e-4), "{y:?}");
    }
}
