//! The built-in data set: UCI optical digits, compiled into the binary.
//!
//! 1,797 grey-level 8×8 images of handwritten digits (pixel counts `0..=16`)
//! with their labels, the test part of the UCI "Optical Recognition of
//! Handwritten Digits" set (Alpaydin & Kaynak, 1998; CC BY 4.0) as distributed
//! in scikit-learn; see `host-trainer/data/README.md`. 57 kB gzipped, it lets
//! the first run train without downloading anything.

use super::csv::{parse_csv, CsvOptions, Scale};
use super::{Dataset, Result};

/// `digits.csv.gz`: 1,797 rows of 64 pixels (`0..=16`, row-major) and a label.
pub const DIGITS_CSV_GZ: &[u8] = include_bytes!("../../data/digits.csv.gz");
/// Seed of [`builtin_digits_split`] (the year of the Batch Normalization paper).
pub const DIGITS_SPLIT_SEED: u64 = 2015;
/// Training fraction of [`builtin_digits_split`], taken from each class.
pub const DIGITS_TRAIN_FRACTION: f64 = 0.8;

/// The built-in digits: 1,797 samples of 8×8×1, 10 classes, pixels divided by
/// 16 into `[0, 1]` (`pixel_scale = 1/16`), named `"digits"`.
pub fn builtin_digits() -> Result<Dataset> {
    let opts = CsvOptions {
        shape: Some([8, 8, 1]),
        n_classes: Some(10),
        scale: Scale::DivideBy(16.0),
        name: Some("digits".to_owned()),
    };
    parse_csv(DIGITS_CSV_GZ, "built-in digits.csv.gz", &opts)
}

/// The built-in digits split 80/20 per class with [`DIGITS_SPLIT_SEED`]:
/// `(train, test)`, named `"digits-train"` and `"digits-test"`, the same on
/// every platform and every run.
pub fn builtin_digits_split() -> Result<(Dataset, Dataset)> {
    builtin_digits()?.stratified_split(DIGITS_TRAIN_FRACTION, DIGITS_SPLIT_SEED)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_digits_loads() {
        let d = builtin_digits().unwrap();
        assert_eq!(d.name, "digits");
        assert_eq!((d.len(), d.h, d.w, d.c, d.n_classes), (1797, 8, 8, 1, 10));
        assert_eq!(d.pixel_scale, 1.0 / 16.0);
        assert!(d.images().iter().all(|&x| (0.0..=1.0).contains(&x)));
        // Raw values are the integers 0..=16 and both ends occur.
        assert!(d.images().iter().all(|&x| (x * 16.0).fract() == 0.0));
        assert!(d.images().contains(&0.0) && d.images().contains(&1.0));
        // The test-set class counts the UCI repository page lists.
        assert_eq!(
            d.class_counts(),
            vec![178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
        );
        // First row of the file: 0,0,5,13,9,1,0,0,... label 0.
        assert_eq!(&d.sample(0)[..4], &[0.0, 0.0, 5.0 / 16.0, 13.0 / 16.0]);
        assert_eq!(d.labels[..3], [0, 1, 2]);
    }

    #[test]
    fn builtin_split_is_stratified_and_fixed() {
        let (train, test) = builtin_digits_split().unwrap();
        assert_eq!(train.len() + test.len(), 1797);
        assert_eq!(
            (train.name.as_str(), test.name.as_str()),
            ("digits-train", "digits-test")
        );
        let all = builtin_digits().unwrap().class_counts();
        for ((&a, &tr), &te) in all
            .iter()
            .zip(&train.class_counts())
            .zip(&test.class_counts())
        {
            assert_eq!(tr + te, a);
            assert_eq!(tr, (0.8 * a as f64).round() as usize);
        }
        assert_eq!(builtin_digits_split().unwrap(), (train, test));
    }
}
