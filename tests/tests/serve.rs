//! The `serve` firmware's serial round trip, under QEMU (`mps2-an386`,
//! UART0 on `-serial stdio`, no `-icount`), through the host side that
//! `normcore device-eval` uses (`normcore_trainer::device_eval`):
//!
//! - a few samples through both models: the device's class and logits are
//!   the host engine's (int8 bit for bit, f32 within 1e-5, same class);
//! - corrupted, truncated, oversized and unknown frames get error
//!   responses (docs/SERIAL.md), and a good frame still works after each;
//! - `device_eval::evaluate` (the command's loop) agrees on digits samples;
//! - a firmware that dies or stays silent is reported, not waited for.
//!
//! Needs `qemu-system-arm`, `defmt-print` and the thumbv7em target (`cargo
//! xtask setup`); the firmware is built (with the assets, generated if
//! missing) by `normcore_tests::qemu`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use normcore::engine::f32_parity;
use normcore::model::file_crc;
use normcore::model::Kind;
use normcore_device_tools::boards::default_board;
use normcore_device_tools::device_eval::{
    self, encode_request, Command, DeviceLogits, Served, Session, Status,
};
use normcore_device_tools::infer_log::assets_dir;
use normcore_device_tools::qemu::firmware_elf;
use normcore_trainer::assets::{self, Samples};
use normcore_trainer::cli::DataArgs;
use normcore_trainer::export::device::{Device, Logits, ModelBytes};

/// Per-response deadline: generous, responses take milliseconds.
const TIMEOUT: Duration = Duration::from_secs(10);

fn elf(bin: &str) -> PathBuf {
    firmware_elf(default_board(), bin).unwrap_or_else(|e| panic!("{e}"))
}

fn start() -> Session {
    Session::start(default_board(), &elf("serve"), TIMEOUT).unwrap_or_else(|e| panic!("{e:#}"))
}

/// The model files and samples the firmware embeds (the build above used
/// these very files).
fn assets() -> (Vec<u8>, Vec<u8>, Samples) {
    let _ = elf("serve");
    let (f, q, s) = assets::load(&assets_dir()).unwrap_or_else(|e| panic!("{e:#}"));
    (
        f.expect("the default assets have an f32 model"),
        q.expect("the default assets have an int8 model"),
        s,
    )
}

/// Sample `k`'s int8 input levels, f32 values and the host engine's
/// outputs for both, computed here with core's engine from the files.
struct Case {
    levels: Vec<i8>,
    values: Vec<f32>,
    host_i8: Logits,
    host_f32: Logits,
}

fn cases(f32_file: &[u8], int8_file: &[u8], s: &Samples, n: usize) -> Vec<Case> {
    let (fb, qb) = (ModelBytes::new(f32_file), ModelBytes::new(int8_file));
    let (fm, qm) = (fb.parse().unwrap(), qb.parse().unwrap());
    let (mut fd, mut qd) = (Device::new(&fm), Device::new(&qm));
    let f = s.features;
    (0..n.min(s.len()))
        .map(|k| {
            let levels = s.int8.as_ref().unwrap().inputs[k * f..(k + 1) * f].to_vec();
            let values = s.f32.as_ref().unwrap().inputs[k * f..(k + 1) * f].to_vec();
            Case {
                host_i8: qd.run_levels(&levels).unwrap(),
                host_f32: fd.run(&values).unwrap(),
                levels,
                values,
            }
        })
        .collect()
}

/// The device's int8 answer is the host's, bit for bit.
fn check_i8(session: &mut Session, c: &Case) {
    let p = session
        .infer_i8(&c.levels)
        .unwrap_or_else(|e| panic!("{e:#}"));
    let Logits::I8 { values, .. } = &c.host_i8 else {
        panic!("int8 model gave f32 logits")
    };
    assert_eq!(p.logits, DeviceLogits::I8(values.clone()));
    assert_eq!(p.class, c.host_i8.argmax());
}

#[test]
fn serve_round_trip_matches_host_engine() {
    let (f32_file, int8_file, samples) = assets();
    let mut s = start();
    let info = s.info().unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(
        (
            usize::from(info.features),
            usize::from(info.classes),
            usize::from(info.max_payload)
        ),
        (samples.features, samples.classes, 4 * samples.features)
    );
    assert_eq!(info.f32_model_crc, file_crc(&f32_file));
    assert_eq!(info.int8_model_crc, file_crc(&int8_file));
    assert!(info.has_f32 && info.has_int8);

    let cases = cases(&f32_file, &int8_file, &samples, 4);
    for (k, c) in cases.iter().enumerate() {
        check_i8(&mut s, c);
        // What the assets recorded as the host engine's output, too.
        let expected_i8 = &samples.int8.as_ref().unwrap().expected;
        let expected = &expected_i8[k * samples.classes..(k + 1) * samples.classes];
        assert_eq!(c.host_i8.levels(), Some(expected));

        let p = s.infer_f32(&c.values).unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(p.class, c.host_f32.argmax(), "sample {k}: f32 class");
        let (DeviceLogits::F32(device), Logits::F32(host)) = (&p.logits, &c.host_f32) else {
            panic!("sample {k}: f32 logits expected, got {:?}", p.logits)
        };
        for (d, h) in device.iter().zip(host) {
            assert!(
                f32_parity(*d, *h),
                "sample {k}: device {device:?}, host {host:?}"
            );
        }
    }
    let served = s.shutdown().unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(
        served,
        Served {
            answered: 1 + 2 * cases.len() as u32 + 1,
            errors: 0
        }
    );
}

#[test]
fn serve_answers_bad_frames_with_errors_and_keeps_working() {
    let (f32_file, int8_file, samples) = assets();
    let case = &cases(&f32_file, &int8_file, &samples, 1)[0];
    let payload: Vec<u8> = case.levels.iter().map(|&q| q as u8).collect();
    let mut s = start();
    let info = s.info().unwrap_or_else(|e| panic!("{e:#}"));

    let good = encode_request(Command::InferI8 as u8, 0x40, &payload);
    let mut flipped = good.clone();
    flipped[5 + payload.len() / 2] ^= 0x55;
    let mut bad_crc = good.clone();
    let last = bad_crc.len() - 1;
    bad_crc[last] ^= 0x01;
    let mut oversized = encode_request(Command::InferF32 as u8, 0x43, &[]);
    oversized[3..5].copy_from_slice(&(info.max_payload + 1).to_le_bytes());
    let cases: [(&str, Vec<u8>, Status, u8); 7] = [
        ("payload byte flipped", flipped, Status::BadCrc, 0x40),
        ("CRC byte flipped", bad_crc, Status::BadCrc, 0x40),
        ("no magic", b"hello, device".to_vec(), Status::BadMagic, 0),
        (
            "length above the maximum",
            oversized,
            Status::BadLength,
            0x43,
        ),
        (
            "truncated",
            good[..good.len() - 3].to_vec(),
            Status::Timeout,
            0x40,
        ),
        (
            "unknown command",
            encode_request(0x7E, 0x44, &[]),
            Status::UnknownCommand,
            0x44,
        ),
        (
            "INFER_I8 with the f32 length",
            encode_request(
                Command::InferI8 as u8,
                0x45,
                &vec![0; 4 * usize::from(info.features)],
            ),
            Status::BadLength,
            0x45,
        ),
    ];
    let n = cases.len() as u32;
    for (what, frame, status, seq) in cases {
        s.send_raw(&frame)
            .unwrap_or_else(|e| panic!("{what}: {e:#}"));
        let started = Instant::now();
        let r = s
            .read_response()
            .unwrap_or_else(|e| panic!("{what}: {e:#}"));
        assert_eq!((r.status, r.seq), (status, seq), "{what}");
        assert!(r.payload.is_empty(), "{what}: {r:?}");
        // Framing errors wait for the line to go idle (250 ms), a frame
        // that stopped arriving for 500 ms more: never for long.
        assert!(started.elapsed() < Duration::from_secs(5), "{what}");
        // And the next good frame is served.
        check_i8(&mut s, case);
    }
    let served = s.shutdown().unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(
        served,
        Served {
            answered: 1 + 2 * n + 1,
            errors: n
        }
    );
}

#[test]
fn device_eval_agrees_with_host_engine_on_digits_samples() {
    let (f32_file, int8_file, _) = assets();
    let data = DataArgs {
        data: "digits".into(),
        data_dir: None,
        test_csv: None,
        input_shape: None,
    }
    .load()
    .unwrap();
    let indices = assets::pick(data.test.len(), 24);
    let mut s = start();
    for (kind, file) in [(Kind::Int8, &int8_file), (Kind::F32, &f32_file)] {
        let r = device_eval::evaluate(&mut s, kind, file, &data.test, &indices)
            .unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(r.samples, indices.len());
        assert!(r.agrees(), "{r:?}");
        assert_eq!(r.device_correct, r.host_correct, "{r:?}");
        // The model is trained: most of these are right.
        assert!(r.device_correct * 10 >= r.samples * 8, "{r:?}");
    }
    s.shutdown().unwrap_or_else(|e| panic!("{e:#}"));
}

#[test]
fn a_dying_firmware_is_reported_not_waited_for() {
    // `panic` logs (semihosting, on the same stdout) and exits with failure
    // at once: the first request finds a dead firmware and its log.
    let mut s =
        Session::start(default_board(), &elf("panic"), TIMEOUT).unwrap_or_else(|e| panic!("{e:#}"));
    let started = Instant::now();
    let e = format!("{:#}", s.info().unwrap_err());
    assert!(e.contains("the firmware died"), "{e}");
    assert!(started.elapsed() < TIMEOUT, "{e}");
}

#[test]
fn a_silent_firmware_times_out() {
    // `serve` waits for a request's first byte forever; the host does not.
    let mut s = Session::start(default_board(), &elf("serve"), Duration::from_millis(1500))
        .unwrap_or_else(|e| panic!("{e:#}"));
    let started = Instant::now();
    let e = format!("{:#}", s.read_response().unwrap_err());
    assert!(e.contains("no response from the firmware within"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(5), "{e}");
}
