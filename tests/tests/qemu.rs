//! The firmware under QEMU (`mps2-an386`, Cortex-M4F): results equal the
//! host's, failures end as failures (never hangs), the UART round-trips
//! binary data, and `hello`'s log matches its golden file.
//!
//! Needs `qemu-system-arm`, `defmt-print` and the thumbv7em target; without
//! them these tests fail with a message naming `cargo xtask setup`.

use std::time::Duration;

use normcore_device_tools::boards::default_board;
use normcore_device_tools::qemu::{
    firmware_elf, mask_measurements, run_qemu, Console, Output, RunOptions,
};
use normcore_tests::golden::check_golden;
use normcore_tests::workload::{Workload, BATCH, OUTPUTS, OUTPUT_LEN};

/// Fields whose values depend on the compiler, not on the run.
const MEASUREMENTS: &[&str] = &["ticks", "instructions", "cycles", "high_water", "size"];

fn run(bin: &str, opts: &RunOptions) -> Output {
    let board = default_board();
    let elf = firmware_elf(board, bin).unwrap_or_else(|e| panic!("{e}"));
    run_qemu(board, &elf, opts).unwrap_or_else(|e| panic!("{e}"))
}

/// `hello` under `-icount`, which must succeed.
fn run_hello() -> Output {
    let out = run("hello", &RunOptions::default());
    assert!(out.success(), "hello failed:\n{}", out.describe());
    out
}

/// The list after `<label>[<n>] = [` on each matching line, in order.
fn rows<'a>(text: &'a str, label: &str) -> Vec<Vec<&'a str>> {
    text.lines()
        .filter_map(|line| {
            let rest = &line[line.find(&format!(" {label}["))? + label.len() + 2..];
            let list = rest.split_once("] = [")?.1.strip_suffix(']')?;
            Some(list.split(", ").collect())
        })
        .collect()
}

/// The number after `key=` on the first line that has it.
fn field(text: &str, key: &str) -> Option<u64> {
    text.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
}

#[test]
fn hello_matches_host_computation() {
    let out = run_hello();
    let text = out.stdout_text();

    let mut host = [0.0f32; OUTPUT_LEN];
    Workload::new()
        .run(&mut host)
        .expect("the workload runs on the host");

    let bits = rows(&text, "bits");
    let values = rows(&text, "y");
    assert_eq!(bits.len(), BATCH, "bits rows in:\n{text}");
    assert_eq!(values.len(), BATCH, "y rows in:\n{text}");
    for n in 0..BATCH {
        assert_eq!(bits[n].len(), OUTPUTS, "row {n} in:\n{text}");
        for o in 0..OUTPUTS {
            let expect = host[n * OUTPUTS + o];
            let hex = bits[n][o].trim_start_matches("0x");
            let device = u32::from_str_radix(hex, 16)
                .unwrap_or_else(|e| panic!("bits[{n}][{o}] = {:?}: {e}", bits[n][o]));
            // Same inputs, same IEEE-754 operations in the same order: the
            // device's f32 must be the host's, bit for bit.
            assert_eq!(
                device,
                expect.to_bits(),
                "y[{n}][{o}]: device {} ({device:#010x}), host {expect} ({:#010x})",
                f32::from_bits(device),
                expect.to_bits()
            );
            // And the decimal defmt printed reads back as the same f32.
            let printed: f32 = values[n][o].parse().expect("decimal f32");
            assert_eq!(printed.to_bits(), device, "y[{n}][{o}] printed");
        }
    }
}

#[test]
fn hello_output_matches_golden() {
    let out = run_hello();
    let text = mask_measurements(&out.stdout_text(), MEASUREMENTS);
    check_golden("hello.out", &text).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn hello_cost_and_stack_are_repeatable_under_icount() {
    let (a, b) = (run_hello().stdout_text(), run_hello().stdout_text());
    let instructions = field(&a, "instructions").expect("instructions= in hello's output");
    assert_eq!(
        Some(instructions),
        field(&b, "instructions"),
        "-icount makes the count repeatable"
    );
    // A dense 16->8 layer on 4 samples is 512 multiply-adds: the count
    // cannot be below that, nor absurdly above.
    assert!(
        (512..1_000_000).contains(&instructions),
        "instructions = {instructions}"
    );
    let high = field(&a, "high_water").expect("high_water= in hello's output");
    let size = field(&a, "size").expect("size= in hello's output");
    assert_eq!(Some(high), field(&b, "high_water"));
    assert!(high > 0 && high < size, "high_water {high} of {size}");
}

#[test]
fn panic_exits_with_failure_and_message() {
    let out = run("panic", &RunOptions::default());
    let text = out.stdout_text();
    assert!(!out.timed_out, "panic hung:\n{}", out.describe());
    assert!(!out.success(), "panic exited 0:\n{}", out.describe());
    assert!(
        text.contains("deliberate panic, answer = 42"),
        "panic message missing:\n{}",
        out.describe()
    );
    assert!(text.contains("HardFault"), "{}", out.describe());
}

#[test]
fn fault_exits_with_failure_and_message() {
    let out = run("fault", &RunOptions::default());
    let text = out.stdout_text();
    assert!(!out.timed_out, "fault hung:\n{}", out.describe());
    assert!(!out.success(), "fault exited 0:\n{}", out.describe());
    assert!(text.contains("HardFault"), "{}", out.describe());
    assert!(
        text.contains("bus fault at address 0xf0000000"),
        "{}",
        out.describe()
    );
}

#[test]
fn uart_echo_round_trip() {
    // 0x01 is Ctrl-A, which `-nographic`'s multiplexer would swallow; 0xff
    // wraps to 0x00; 0x00 (the terminator) ends the session, and what
    // follows it must not be echoed.
    let sent: &[u8] = b"ab\x01\x02\x7f\x0a\x0d\xfe\xff";
    let mut input = sent.to_vec();
    input.extend_from_slice(b"\x00tail");
    let opts = RunOptions {
        timeout: Duration::from_secs(30),
        icount: false,
        console: Console::Serial(input),
    };
    let out = run("uart_echo", &opts);
    assert!(out.success(), "uart_echo failed:\n{}", out.describe());
    let expected: Vec<u8> = sent.iter().map(|b| b.wrapping_add(1)).collect();
    assert_eq!(out.stdout, expected, "{}", out.describe());
}

#[test]
fn hung_firmware_is_stopped_at_the_timeout() {
    // Without its terminator, uart_echo waits for input forever.
    let opts = RunOptions {
        timeout: Duration::from_secs(2),
        icount: false,
        console: Console::Serial(b"no terminator".to_vec()),
    };
    let started = std::time::Instant::now();
    let out = run("uart_echo", &opts);
    assert!(out.timed_out, "{}", out.describe());
    assert!(!out.success(), "{}", out.describe());
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "took {:?}",
        started.elapsed()
    );
}
