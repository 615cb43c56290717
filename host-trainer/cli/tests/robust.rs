//! Issue 12: the trainer never loses a user's work and never panics. One
//! test per class of hostile input: the exit code, the message, and, where
//! a file could be lost, that the file already there is byte-for-byte
//! unchanged.

mod common;

use common::{listing, normcore, text};
use std::path::Path;
use std::process::{Command, Stdio};

fn ok(args: &[&str], dir: &Path) -> String {
    let out = normcore(args, dir);
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "normcore {args:?} failed:\n{all}");
    all
}

/// Expects exit code 1 (an error, not a panic or a signal); returns stderr.
fn fails(args: &[&str], dir: &Path) -> String {
    let out = normcore(args, dir);
    let err = text(&out.stderr);
    assert!(
        matches!(out.status.code(), Some(1 | 2)),
        "normcore {args:?}: {:?}\n{}{err}",
        out.status,
        text(&out.stdout)
    );
    assert!(
        !err.contains("panicked"),
        "normcore {args:?} panicked:\n{err}"
    );
    err
}

/// A small trained checkpoint `name` in `d`; returns its bytes.
fn good(d: &Path, name: &str) -> Vec<u8> {
    ok(
        &[
            "train",
            "--steps",
            "20",
            "--batch",
            "32",
            "--eval-every",
            "0",
            "-o",
            name,
        ],
        d,
    );
    std::fs::read(d.join(name)).unwrap()
}

fn unchanged(d: &Path, name: &str, before: &[u8]) {
    assert!(
        std::fs::read(d.join(name)).unwrap() == before,
        "{name} was changed"
    );
}

#[test]
fn class1_a_finite_but_exploding_loss_is_divergence_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let before = good(d, "good.ckpt");
    for lr in ["1e6", "1e3", "30"] {
        let err = fails(
            &[
                "train",
                "--lr",
                lr,
                "--steps",
                "200",
                "--eval-every",
                "0",
                "-o",
                "good.ckpt",
            ],
            d,
        );
        assert!(err.contains("training diverged at step"), "lr {lr}: {err}");
        unchanged(d, "good.ckpt", &before);
    }
    assert_eq!(listing(d), ["good.ckpt"]);
    let help = ok(&["train", "--help"], d);
    assert!(help.contains("stops as diverged"), "{help}");
}

#[test]
fn class2_periodic_checkpoints_never_write_non_finite_weights() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let before = good(d, "good.ckpt");
    let err = fails(
        &[
            "train",
            "--checkpoint-every",
            "1",
            "--lr",
            "1e30",
            "--steps",
            "50",
            "-o",
            "good.ckpt",
        ],
        d,
    );
    assert!(err.contains("diverged at step"), "{err}");
    unchanged(d, "good.ckpt", &before);
    assert_eq!(listing(d), ["good.ckpt"]);
    let out = ok(&["eval", "--model", "good.ckpt"], d);
    assert!(!out.contains("NaN"), "{out}");
}

#[test]
fn class3_an_output_that_is_an_input_or_a_directory_is_refused_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let model = good(d, "s.ckpt");
    let err = fails(&["export", "--model", "s.ckpt", "-o", "s.ckpt"], d);
    assert!(err.contains("is the input file"), "{err}");
    unchanged(d, "s.ckpt", &model);
    let err = fails(&["export", "--model", "s.ckpt", "-o", "./sub/../s.ckpt"], d);
    assert!(err.contains("is the input file"), "{err}");
    unchanged(d, "s.ckpt", &model);

    let csv: String = (0..40)
        .map(|i| format!("{},{},{},{}\n", i % 7, i % 3, i % 5, i % 2))
        .collect();
    std::fs::write(d.join("d.csv"), &csv).unwrap();
    std::fs::write(d.join("t.csv"), &csv).unwrap();
    std::fs::write(
        d.join("n.toml"),
        "name = \"n\"\ninput = [1, 1, 3]\nclasses = 2\n[[layers]]\ntype = \"dense\"\nunits = 2\n",
    )
    .unwrap();
    let net = std::fs::read(d.join("n.toml")).unwrap();
    for (out, extra) in [("d.csv", None), ("t.csv", Some("t.csv")), ("n.toml", None)] {
        let mut args = vec![
            "train",
            "--data",
            "d.csv",
            "--network",
            "n.toml",
            "--steps",
            "2",
        ];
        if let Some(t) = extra {
            args.extend(["--test-csv", t]);
        }
        args.extend(["-o", out]);
        let err = fails(&args, d);
        assert!(err.contains("is the input file"), "{out}: {err}");
        unchanged(d, "d.csv", csv.as_bytes());
        unchanged(d, "t.csv", csv.as_bytes());
        unchanged(d, "n.toml", &net);
    }
    // A directory, and a read-only one: refused at once, not after training.
    std::fs::create_dir(d.join("dir")).unwrap();
    let start = std::time::Instant::now();
    let err = fails(&["train", "--steps", "100000", "-o", "dir"], d);
    assert!(err.contains("is a directory"), "{err}");
    assert!(start.elapsed().as_secs() < 5, "checked after training");
}

#[cfg(unix)]
#[test]
fn class4_a_closed_pipe_ends_the_command_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    good(d, "m.ckpt");
    for args in [
        &["eval", "--model", "m.ckpt"][..],
        &["inspect", "m.ckpt"][..],
        &["export", "--model", "m.ckpt", "-o", "m.ncm"][..],
    ] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_normcore"))
            .args(args)
            .current_dir(d)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Close the reading end before the command prints anything.
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let err = text(&out.stderr);
        assert!(
            out.status.signal() == Some(libc::SIGPIPE) || out.status.success(),
            "{args:?}: {:?}\n{err}",
            out.status
        );
        assert!(
            !err.contains("panicked") && !err.contains("Broken pipe"),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn class5_resume_refuses_network_options_and_applies_rate_and_batch() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let before = good(d, "r.ckpt");
    for extra in [
        &["--preset", "digits-cnn"][..],
        &["--init", "xavier"][..],
        &["--seed", "7"][..],
        &["--nesterov"][..],
    ] {
        let mut args = vec!["train", "--resume", "r.ckpt", "--steps", "30"];
        args.extend(extra);
        let err = fails(&args, d);
        assert!(err.contains("--resume"), "{extra:?}: {err}");
        unchanged(d, "r.ckpt", &before);
    }
    let err = fails(&["train", "--resume", "r.ckpt", "--steps", "20"], d);
    assert!(err.contains("not beyond the checkpoint's step 20"), "{err}");
    let out = ok(
        &[
            "train",
            "--resume",
            "r.ckpt",
            "--lr",
            "0.05",
            "--batch",
            "7",
            "--steps",
            "25",
            "--eval-every",
            "0",
        ],
        d,
    );
    assert!(
        out.contains("applied from step 21 on: --lr 0.1 -> 0.05, --batch 32 -> 7"),
        "{out}"
    );
    let shown = ok(&["inspect", "r.ckpt"], d);
    assert!(
        shown.contains("trained 25 steps (batch 7, lr 0.05"),
        "{shown}"
    );
}

#[test]
fn class6_options_that_would_be_ignored_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (args, says) in [
        (
            &["--test-csv", "t.csv"][..],
            "--test-csv does not apply to --data digits",
        ),
        (
            &["--input-shape", "8x8x1"][..],
            "--input-shape does not apply",
        ),
        (&["--data-dir", "."][..], "--data-dir does not apply"),
        (&["--threads", "0"][..], "not a thread count"),
        (&["--steps", "0"][..], "--steps"),
        (&["--lr", "0"][..], "learning rate must be positive"),
        (&["--init", "gaussian:1e30"][..], "0 < STD <= 10"),
        (&["--schedule", "step:2:10"][..], "0 < GAMMA <= 1"),
    ] {
        let mut all = vec!["train", "--steps", "5", "-o", "m.ckpt"];
        all.extend(args);
        let err = fails(&all, d);
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(listing(d).is_empty(), "{args:?}: wrote {:?}", listing(d));
    }
    let err = fails(&["eval", "--model", "m.ckpt", "--threads", "0"], d);
    assert!(err.contains("not a thread count"), "{err}");
}

#[test]
fn class7_a_data_set_of_one_class_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let csv: String = (0..30)
        .map(|i| format!("{},{},{},0\n", i, i % 3, i % 5))
        .collect();
    std::fs::write(d.join("one.csv"), csv).unwrap();
    std::fs::write(
        d.join("n.toml"),
        "name = \"n\"\ninput = [1, 1, 3]\nclasses = 3\n[[layers]]\ntype = \"dense\"\nunits = 3\n",
    )
    .unwrap();
    let err = fails(
        &[
            "train",
            "--data",
            "one.csv",
            "--network",
            "n.toml",
            "--steps",
            "5",
            "--batch",
            "4",
            "-o",
            "m.ckpt",
        ],
        d,
    );
    assert!(err.contains("only label(s) [0]"), "{err}");
    assert!(err.contains("network of 3 classes"), "{err}");
    assert!(!d.join("m.ckpt").exists());
}

#[test]
fn class8_huge_networks_are_refused_with_the_layer_and_the_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let net = |name: &str, input: &str, units: &str| {
        std::fs::write(
            d.join(format!("{name}.toml")),
            format!(
                "name = \"{name}\"\ninput = {input}\nclasses = 10\n[[layers]]\ntype = \"dense\"\n\
                 units = {units}\n[[layers]]\ntype = \"dense\"\nunits = 10\n"
            ),
        )
        .unwrap();
        format!("{name}.toml")
    };
    for units in ["1000000000", "18446744073709551615"] {
        let file = net("big", "[8, 8, 1]", units);
        let err = fails(
            &["train", "--network", &file, "--steps", "1", "-o", "m.ckpt"],
            d,
        );
        assert!(
            err.contains("layer 1 (dense)") && err.contains("bytes"),
            "units {units}: {err}"
        );
    }
    // What fits in the address space but not in memory names the machine's
    // available memory.
    #[cfg(target_os = "linux")]
    {
        let file = net("big", "[8, 8, 1]", "1000000000");
        let err = fails(
            &["train", "--network", &file, "--steps", "1", "-o", "m.ckpt"],
            d,
        );
        assert!(
            err.contains("MemAvailable") && err.contains("the network needs about"),
            "{err}"
        );
    }
    let file = net("wide", "[4294967296, 4294967296, 1]", "10");
    let err = fails(
        &["train", "--network", &file, "--steps", "1", "-o", "m.ckpt"],
        d,
    );
    assert!(
        err.contains("more values per sample than this machine can address"),
        "{err}"
    );
    assert!(!d.join("m.ckpt").exists());
}

#[test]
fn class9_temporary_files_of_dead_runs_are_removed_on_the_next_write() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // No process has this id (Linux pids stay below 2^22).
    std::fs::write(d.join(".m.ckpt.tmp-999999999"), b"half").unwrap();
    good(d, "m.ckpt");
    #[cfg(target_os = "linux")]
    assert_eq!(listing(d), ["m.ckpt"]);
}

#[cfg(unix)]
#[test]
fn class9_ctrl_c_stops_between_steps_and_leaves_no_temporary_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let child = Command::new(env!("CARGO_BIN_EXE_normcore"))
        .args([
            "train",
            "--steps",
            "100000000",
            "--checkpoint-every",
            "1",
            "--eval-every",
            "0",
            "-o",
            "m.ckpt",
        ])
        .current_dir(d)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the first checkpoint, then interrupt while checkpoints are
    // being written at every step.
    let start = std::time::Instant::now();
    while !d.join("m.ckpt").exists() {
        assert!(start.elapsed().as_secs() < 60, "no checkpoint written");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    let pid = libc::pid_t::try_from(child.id()).unwrap();
    // SAFETY: sending a signal to our own child process.
    #[allow(unsafe_code)]
    let sent = unsafe { libc::kill(pid, libc::SIGINT) };
    assert_eq!(sent, 0);
    let out = child.wait_with_output().unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("interrupted at step") && err.contains("holds the checkpoint of step"),
        "{err}"
    );
    assert_eq!(listing(d), ["m.ckpt"]);
    ok(&["eval", "--model", "m.ckpt"], d);
}

/// Fault injection: a run writing a checkpoint at every step is killed
/// (SIGKILL: no handler runs) at seeded random moments, many times; after
/// each kill the checkpoint loads (`normcore eval`) — the good file that
/// was there before is only ever replaced by another valid one — and a
/// file that never existed is either still absent or valid, never corrupt.
/// Temporary files of the killed runs are removed by the next run.
#[cfg(unix)]
#[test]
fn fault_injection_sigkill_at_random_moments_never_leaves_a_corrupt_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let original = good(d, "m.ckpt");
    // A small linear congruential generator: the same delays every run.
    let mut state: u64 = 0x5EED_F00D;
    let mut next = move || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        state >> 33
    };
    let kills = 24;
    let mut replaced = 0;
    let mut fresh_written = 0;
    for i in 0..kills {
        // Every fourth run writes a file that did not exist before.
        let name = if i % 4 == 3 {
            format!("fresh{i}.ckpt")
        } else {
            "m.ckpt".to_owned()
        };
        let seed = (i + 2).to_string();
        let mut child = Command::new(env!("CARGO_BIN_EXE_normcore"))
            .args([
                "train",
                "--steps",
                "100000000",
                "--checkpoint-every",
                "1",
                "--eval-every",
                "0",
                "--seed",
                &seed,
                "-o",
                &name,
            ])
            .current_dir(d)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // 0 to 600 ms: before the data is loaded, between writes, mid-write.
        let delay = next() % 600;
        std::thread::sleep(std::time::Duration::from_millis(delay));
        child.kill().unwrap();
        child.wait().unwrap();
        let path = d.join(&name);
        if name == "m.ckpt" || path.exists() {
            let out = normcore(&["eval", "--model", &name], d);
            assert!(
                out.status.success(),
                "kill {i} after {delay} ms left {name} unloadable:\n{}",
                text(&out.stderr)
            );
            if name == "m.ckpt" && std::fs::read(&path).unwrap() != original {
                replaced += 1;
            }
            if name != "m.ckpt" {
                fresh_written += 1;
            }
        }
    }
    // The kills did land while checkpoints were being written.
    assert!(replaced > 0, "no kill happened after a checkpoint write");
    eprintln!("{kills} kills: m.ckpt replaced (validly) {replaced} times, {fresh_written} fresh files written");
    // The next completed run removes the temporary files the dead ones
    // left for its file.
    ok(
        &["train", "--steps", "5", "--eval-every", "0", "-o", "m.ckpt"],
        d,
    );
    assert!(
        listing(d).iter().all(|n| !n.starts_with(".m.ckpt.tmp-")),
        "{:?}",
        listing(d)
    );
}

/// Items 3 and 9 for every command that writes a directory (`assets`,
/// `samples`, `reproduce ...`): the directory is checked before any work
/// (not a file, no file it would get is an input), and the input is left
/// byte-for-byte as it was.
#[test]
fn class3_every_out_dir_is_checked_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    good(d, "s.ckpt");
    ok(&["export", "--model", "s.ckpt", "-o", "f32.ncm"], d);
    let f32_model = std::fs::read(d.join("f32.ncm")).unwrap();
    let csv: String = (0..40)
        .map(|i| format!("{},{},{},{}\n", i % 7, i % 3, i % 5, i % 2))
        .collect();
    std::fs::write(d.join("figure1.csv"), &csv).unwrap();
    std::fs::write(d.join("file.txt"), b"keep").unwrap();
    let start = std::time::Instant::now();
    for (args, says) in [
        // A file where a directory is expected (an input, or not).
        (
            &["assets", "--steps", "100000", "--out-dir", "file.txt"][..],
            "file.txt is a file, not a directory",
        ),
        (
            &["samples", "--model", "f32.ncm", "--out-dir", "f32.ncm"][..],
            "f32.ncm is an input file, not a directory",
        ),
        (
            &[
                "reproduce",
                "lr-sweep",
                "--max-steps",
                "100000",
                "--out-dir",
                "file.txt",
            ][..],
            "file.txt is a file, not a directory",
        ),
        (
            &[
                "reproduce",
                "figure1",
                "--data",
                "figure1.csv",
                "--out-dir",
                "figure1.csv",
            ][..],
            "figure1.csv is an input file, not a directory",
        ),
        (
            &[
                "reproduce",
                "drift",
                "--model",
                "f32.ncm",
                "--out-dir",
                "f32.ncm",
            ][..],
            "f32.ncm is an input file, not a directory",
        ),
        // A file the command would write is one of its inputs.
        (
            &[
                "reproduce",
                "figure1",
                "--data",
                "figure1.csv",
                "--steps",
                "100000",
                "--out-dir",
                ".",
            ][..],
            "is the input file figure1.csv",
        ),
    ] {
        let err = fails(args, d);
        assert!(err.contains(says), "{args:?}: {err}");
        unchanged(d, "f32.ncm", &f32_model);
        unchanged(d, "figure1.csv", csv.as_bytes());
        unchanged(d, "file.txt", b"keep");
    }
    // An f32 model stored under the int8 file's name in the assets
    // directory: writing the assets would replace (or delete) it.
    std::fs::create_dir(d.join("assets")).unwrap();
    std::fs::write(d.join("assets/model-int8.ncm"), &f32_model).unwrap();
    let err = fails(
        &[
            "samples",
            "--model",
            "assets/model-int8.ncm",
            "--out-dir",
            "assets",
        ],
        d,
    );
    assert!(
        err.contains("is the input file assets/model-int8.ncm"),
        "{err}"
    );
    unchanged(d, "assets/model-int8.ncm", &f32_model);
    assert!(start.elapsed().as_secs() < 10, "checked after the work");
    // A model already in its place is not an input at risk (the same
    // bytes): accepted.
    ok(&["samples", "--model", "f32.ncm", "--out-dir", "out"], d);
    ok(
        &[
            "samples",
            "--model",
            "out/model-f32.ncm",
            "--out-dir",
            "out",
            "--samples",
            "8",
        ],
        d,
    );
    unchanged(d, "out/model-f32.ncm", &f32_model);
}

/// Item 11: the int8-only accumulator limit does not refuse an f32
/// export; an int8 export is refused with the reason and the way out.
#[test]
fn class11_an_f32_export_is_not_refused_by_the_int8_accumulator_limit() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // 8 x 8 x 1040 = 66,560 products per dense output: more than the i32
    // accumulator's int8 limit (about 66,051).
    std::fs::write(
        d.join("wide.toml"),
        "name = \"wide\"\ninput = [8, 8, 1]\nclasses = 10\n[[layers]]\ntype = \"conv2d\"\n\
         filters = 1040\nkernel = 3\npadding = \"same\"\n[[layers]]\ntype = \"relu\"\n\
         [[layers]]\ntype = \"dense\"\nunits = 10\n",
    )
    .unwrap();
    ok(
        &[
            "train",
            "--network",
            "wide.toml",
            "--steps",
            "2",
            "--batch",
            "8",
            "--eval-every",
            "0",
            "-o",
            "w.ckpt",
        ],
        d,
    );
    let out = ok(
        &[
            "export",
            "--model",
            "w.ckpt",
            "-o",
            "w.ncm",
            "--calibration",
            "50",
        ],
        d,
    );
    assert!(
        out.contains("| int8") && out.contains("not possible"),
        "{out}"
    );
    assert!(out.contains("can overflow the i32 accumulator"), "{out}");
    assert!(out.contains("wrote w.ncm: f32"), "{out}");
    let err = fails(
        &[
            "export",
            "--model",
            "w.ckpt",
            "-o",
            "q.ncm",
            "--quantize",
            "int8",
            "--calibration",
            "50",
        ],
        d,
    );
    assert!(
        err.contains("can overflow the i32 accumulator")
            && err.contains("leave out --quantize int8"),
        "{err}"
    );
    assert!(!d.join("q.ncm").exists());
}

/// Item 12: a model file where a checkpoint is expected (and the other way
/// round) is named for what it is, with the command to use; a bad kernel
/// in a network file names the file, the line, the field and the forms.
#[test]
fn class12_messages_name_the_file_the_field_and_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    good(d, "s.ckpt");
    ok(&["export", "--model", "s.ckpt", "-o", "m.ncm"], d);
    for args in [
        &["eval", "--model", "m.ncm"][..],
        &["export", "--model", "m.ncm", "-o", "x.ncm"][..],
        &[
            "train", "--resume", "m.ncm", "--steps", "30", "-o", "x.ckpt",
        ][..],
    ] {
        let err = fails(args, d);
        assert!(
            err.contains("m.ncm: this is an exported model file (.ncm), not a checkpoint"),
            "{args:?}: {err}"
        );
        assert!(!err.contains("not a valid normcore checkpoint"), "{err}");
    }
    let err = fails(
        &[
            "adapt", "--model", "s.ckpt", "--method", "restat", "-o", "a.ncm",
        ],
        d,
    );
    assert!(
        err.contains("s.ckpt: this is a training checkpoint, not a model file (.ncm): export it first with `normcore export --model s.ckpt -o FILE.ncm`"),
        "{err}"
    );
    std::fs::write(
        d.join("k.toml"),
        "name = \"k\"\ninput = [8, 8, 1]\nclasses = 10\n\n[[layers]]\ntype = \"conv2d\"\n\
         filters = 4\nkernel = -3\n\n[[layers]]\ntype = \"dense\"\nunits = 10\n",
    )
    .unwrap();
    let err = fails(
        &[
            "train",
            "--network",
            "k.toml",
            "--steps",
            "1",
            "-o",
            "k.ckpt",
        ],
        d,
    );
    assert!(
        err.contains("k.toml: line 8: layer 1 (conv2d), kernel = -3: -3 is negative: give a whole number >= 1"),
        "{err}"
    );
    assert!(!err.contains("untagged"), "{err}");
    // A layer that does not fit names the file too.
    std::fs::write(
        d.join("k9.toml"),
        "name = \"k\"\ninput = [8, 8, 1]\nclasses = 10\n[[layers]]\ntype = \"conv2d\"\n\
         filters = 4\nkernel = 9\n[[layers]]\ntype = \"dense\"\nunits = 10\n",
    )
    .unwrap();
    let err = fails(
        &[
            "train",
            "--network",
            "k9.toml",
            "--steps",
            "1",
            "-o",
            "k.ckpt",
        ],
        d,
    );
    assert!(
        err.contains("k9.toml: layer 1 (conv2d): does not fit its 8x8x1 input"),
        "{err}"
    );
    // I/O errors say their cause once.
    let err = fails(&["eval", "--model", "missing.ckpt"], d);
    assert_eq!(err.matches("No such file").count(), 1, "{err}");
}

/// "Also": `--data idx` is the IDX files' name (`mnist` a synonym).
#[test]
fn data_idx_is_accepted_and_mnist_is_its_synonym() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for name in ["idx", "mnist"] {
        let err = fails(
            &[
                "train",
                "--data",
                name,
                "--data-dir",
                "nowhere",
                "--steps",
                "1",
                "-o",
                "m.ckpt",
            ],
            d,
        );
        assert!(err.contains("nowhere"), "{name}: {err}");
        assert!(!err.contains("unknown data set"), "{name}: {err}");
    }
    let err = fails(&["train", "--data-dir", "x", "--steps", "1"], d);
    assert!(err.contains("it is for --data idx"), "{err}");
    let help = ok(&["train", "--help"], d);
    assert!(help.contains("Fashion-MNIST"), "{help}");
}
