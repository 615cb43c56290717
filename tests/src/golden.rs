//! Golden files: decoded firmware output compared with `tests/golden/*.out`
//! (rewritten when `NORMCORE_BLESS=1`), with a line diff on mismatch.

use std::fmt::Write as _;
use std::path::Path;

/// Errors are messages for a test failure.
pub type Result<T> = std::result::Result<T, String>;

/// Compare `actual` with `tests/golden/<name>`; with `NORMCORE_BLESS=1`,
/// write it there instead. The error shows a line diff.
pub fn check_golden(name: &str, actual: &str) -> Result<()> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("golden")
        .join(name);
    if std::env::var_os("NORMCORE_BLESS").is_some_and(|v| v == "1") {
        std::fs::write(&path, actual).map_err(|e| format!("{}: {e}", path.display()))?;
        return Ok(());
    }
    let expected = std::fs::read_to_string(&path).map_err(|e| {
        format!(
            "{}: {e} (NORMCORE_BLESS=1 cargo test -p normcore-tests writes it)",
            path.display()
        )
    })?;
    if expected == actual {
        return Ok(());
    }
    Err(format!(
        "output differs from {} (- expected, + actual; \
         NORMCORE_BLESS=1 accepts the new output):\n{}",
        path.display(),
        line_diff(&expected, actual)
    ))
}

/// A minimal line diff (longest common subsequence), enough for log files.
fn line_diff(expected: &str, actual: &str) -> String {
    let a: Vec<&str> = expected.lines().collect();
    let b: Vec<&str> = actual.lines().collect();
    // lcs[i][j]: LCS length of a[i..] and b[j..].
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, String::new());
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            let _ = writeln!(out, "  {}", a[i]);
            i += 1;
            j += 1;
        } else if i < a.len() && (j == b.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
            let _ = writeln!(out, "- {}", a[i]);
            i += 1;
        } else {
            let _ = writeln!(out, "+ {}", b[j]);
            j += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_marks_changed_lines() {
        let d = line_diff("a\nb\nc\n", "a\nx\nc\n");
        assert_eq!(d, "  a\n- b\n+ x\n  c\n");
    }
}
