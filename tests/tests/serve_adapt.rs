//! The `serve` firmware's adaptation commands (docs/SERIAL.md,
//! "Adaptation") under QEMU (`mps2-an386`, feature `adapt`), through the
//! host side `normcore device-adapt` uses
//! (`normcore_device_tools::device_adapt`):
//!
//! - a real adaptation (re-estimation then tail training) on shifted
//!   digits: the committed overlay's CRC, the pass reports, every loss and
//!   every logit after it are the host's (core on the host, same steps),
//!   accuracy on the shifted samples recovers, and `RESET` gives the
//!   original logits back;
//! - misuse: each adaptation command out of phase, wrong lengths, invalid
//!   configurations, a class beyond the classes, a corrupt frame in the
//!   middle of a pass, `RESET` in the middle of a session: each answered
//!   with its status and code, nothing counted twice, nothing hanging.
//!
//! Needs `qemu-system-arm` and the thumbv7em target (`cargo xtask setup`);
//! the firmware is built by `normcore_device_tools::qemu::firmware_elf`.

use std::time::Duration;

use normcore::model::file_crc;
use normcore::serial::{AdaptBegin, Command, BAD_CONFIG, OUT_OF_PHASE};
use normcore_device_tools::boards::default_board;
use normcore_device_tools::device_adapt::{
    accepted, begin_for, device_adapt, evaluate, host_adapt, Plan, Refusal,
};
use normcore_device_tools::device_eval::{encode_request, Session, Status};
use normcore_device_tools::infer_log::assets_dir;
use normcore_device_tools::qemu::firmware_elf;
use normcore_trainer::adapt::{pick_seeded, Method, Shift};
use normcore_trainer::assets;
use normcore_trainer::cli::DataArgs;
use normcore_trainer::export::device::{input_levels, ModelBytes};

const TIMEOUT: Duration = Duration::from_secs(10);

fn start() -> Session {
    let elf = firmware_elf(default_board(), "serve").unwrap_or_else(|e| panic!("{e}"));
    Session::start(default_board(), &elf, TIMEOUT).unwrap_or_else(|e| panic!("{e:#}"))
}

fn int8_file() -> Vec<u8> {
    let (_, q, _) = assets::load(&assets_dir()).unwrap_or_else(|e| panic!("{e:#}"));
    q.expect("the default assets have an int8 model")
}

/// Shifted digits as input levels: `n` picked training samples (with
/// labels) and `m` test samples evenly spaced.
#[allow(clippy::type_complexity)]
fn shifted(file: &[u8], n: usize, m: usize) -> (Vec<(Vec<i8>, u16)>, Vec<(Vec<i8>, u16)>) {
    let buf = ModelBytes::new(file);
    let model = buf.parse().unwrap();
    let data = DataArgs {
        data: "digits".into(),
        data_dir: None,
        test_csv: None,
        input_shape: None,
    }
    .load()
    .unwrap();
    let shift: Shift = "gain0.6+0.3".parse().unwrap();
    let picked = shift
        .apply(
            &data
                .train
                .select(&pick_seeded(data.train.len(), n, 1), "a")
                .unwrap(),
        )
        .unwrap();
    let test = shift.apply(&data.test).unwrap();
    let lv = |d: &normcore_trainer::data::Dataset, i: usize| {
        (input_levels(&model, d.sample(i)), d.label(i))
    };
    (
        (0..n).map(|i| lv(&picked, i)).collect(),
        assets::pick(test.len(), m)
            .into_iter()
            .map(|i| lv(&test, i))
            .collect(),
    )
}

#[test]
fn device_adaptation_equals_the_hosts_and_recovers_accuracy() {
    let file = int8_file();
    let buf = ModelBytes::new(&file);
    let model = buf.parse().unwrap();
    let (train, test) = shifted(&file, 48, 120);
    let unlabeled: Vec<Vec<i8>> = train[..32].iter().map(|(l, _)| l.clone()).collect();
    let plan = Plan {
        begin: begin_for(&model, Method::Both, 0, false),
        unlabeled: &unlabeled,
        labeled: &train,
        epochs: 2,
    };
    assert!(
        plan.begin.train_bn,
        "digits-mlp has a BN layer before its dense one"
    );

    let mut s = start();
    let info = s.info().unwrap();
    assert!(info.has_adapt, "serve on mps2-an386 has the adapt feature");
    assert_eq!(info.int8_model_crc, file_crc(&file));

    let before = evaluate(&mut s, &model, None, &test).unwrap();
    assert_eq!(
        before.identical, before.samples,
        "{:?}",
        before.first_mismatch
    );
    let dev = device_adapt(&mut s, &plan).unwrap_or_else(|e| panic!("{e:#}"));
    let host = host_adapt(&model, &plan).unwrap();
    assert_eq!(dev.passes, host.passes);
    assert_eq!(dev.passes.len(), 2, "two BN layers, two passes");
    assert_eq!(dev.losses.len(), 2 * train.len());
    let bits = |l: &[f32]| l.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&dev.losses), bits(&host.losses), "tail losses");
    let host_bytes: &[u8] = bytemuck::cast_slice(&host.words);
    assert_eq!(dev.committed.bytes as usize, host_bytes.len());
    assert_eq!(dev.committed.crc, normcore::model::crc32(host_bytes));
    assert_eq!(dev.committed.seq, 1, "the first save into an erased store");
    assert_eq!(dev.plan.overlay as usize, host_bytes.len());

    let mut words = host.words.clone();
    let overlay = normcore::adapt::overlay::Overlay::load(&model, host_bytes, &mut words).unwrap();
    let after = evaluate(&mut s, &model, Some(&overlay), &test).unwrap();
    assert_eq!(after.identical, after.samples, "{:?}", after.first_mismatch);
    assert!(
        after.device_correct >= before.device_correct + test.len() / 10,
        "accuracy on the shifted samples: {} before, {} after, of {}",
        before.device_correct,
        after.device_correct,
        test.len()
    );

    accepted("RESET", s.reset()).unwrap();
    let reset = evaluate(&mut s, &model, None, &test).unwrap();
    assert_eq!(
        reset.logits, before.logits,
        "RESET: the original model again"
    );
    // A second session after RESET starts from the file's model: the same
    // overlay again, saved with the next sequence number.
    let again = device_adapt(&mut s, &plan).unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(again.committed.crc, dev.committed.crc);
    assert_eq!(again.committed.seq, 1, "RESET erased the store");
    let served = s.shutdown().unwrap();
    assert_eq!(served.errors, 0);
}

fn refused(status: Status, code: u8) -> Refusal {
    Refusal { status, code }
}

#[test]
fn misuse_gets_specific_refusals_and_never_breaks_the_session() {
    let file = int8_file();
    let buf = ModelBytes::new(&file);
    let model = buf.parse().unwrap();
    let (train, test) = shifted(&file, 4, 3);
    let phase = refused(Status::AdaptError, OUT_OF_PHASE);
    let mut s = start();
    let info = s.info().unwrap();
    let f = usize::from(info.features);
    let x = &train[0].0;

    // No session: every session command is out of phase.
    assert_eq!(s.unlabeled(x).unwrap(), Err(phase));
    assert_eq!(s.finish_pass().unwrap(), Err(phase));
    assert_eq!(s.labeled(0, x).unwrap(), Err(phase));
    assert_eq!(s.commit().unwrap(), Err(phase));
    // Wrong lengths are BAD_LENGTH, whatever the phase.
    let r = s
        .adapt_request(Command::Unlabeled, &vec![0u8; f - 1])
        .unwrap();
    assert_eq!(r, Err(refused(Status::BadLength, 0)));
    let r = s.adapt_request(Command::Commit, &[0]).unwrap();
    assert_eq!(r, Err(refused(Status::BadLength, 0)));
    let r = s.adapt_request(Command::AdaptBegin, &[0; 11]).unwrap();
    assert_eq!(r, Err(refused(Status::BadLength, 0)));

    // Invalid configurations.
    let restat = begin_for(&model, Method::Restat, 0, false);
    let mut reserved = restat.encode();
    reserved[0] |= 0x80;
    let r = s.adapt_request(Command::AdaptBegin, &reserved).unwrap();
    assert_eq!(r, Err(refused(Status::AdaptError, BAD_CONFIG)));
    let nothing = AdaptBegin {
        restat: false,
        tail: false,
        ..restat
    };
    assert_eq!(
        s.adapt_begin(&nothing).unwrap(),
        Err(refused(Status::AdaptError, BAD_CONFIG))
    );
    let bad_lr = AdaptBegin {
        lr: -1.0,
        ..begin_for(&model, Method::Tail, 0, false)
    };
    assert_eq!(
        s.adapt_begin(&bad_lr).unwrap(),
        Err(refused(Status::AdaptError, BAD_CONFIG))
    );

    // Re-estimation: a pass needs samples; the tail's command is out of
    // phase; a corrupt frame mid-pass is refused and not counted.
    let plan = accepted("ADAPT_BEGIN", s.adapt_begin(&restat)).unwrap();
    assert_eq!(plan.passes, 2);
    assert_eq!(plan.classes, info.classes);
    // Fewer than 2 values per channel: a precondition (code 2).
    assert_eq!(
        s.finish_pass().unwrap(),
        Err(refused(Status::AdaptError, 2))
    );
    assert_eq!(s.labeled(0, x).unwrap(), Err(phase));
    assert_eq!(accepted("UNLABELED", s.unlabeled(x)).unwrap().samples, 1);
    let payload: Vec<u8> = train[1].0.iter().map(|&q| q as u8).collect();
    let mut corrupt = encode_request(Command::Unlabeled as u8, 0x61, &payload);
    corrupt[7] ^= 0x04;
    s.send_raw(&corrupt).unwrap();
    let r = s.read_response().unwrap();
    assert_eq!((r.status, r.seq), (Status::BadCrc, 0x61));
    let st = accepted("UNLABELED", s.unlabeled(&train[1].0)).unwrap();
    assert_eq!(
        (st.pass, st.passes, st.samples),
        (0, 2, 2),
        "the corrupt frame was not counted"
    );
    // Inference goes on during a session (nothing refolded yet: the file's
    // model).
    let original: Vec<_> = test
        .iter()
        .map(|(l, _)| s.infer_i8(l).unwrap().logits)
        .collect();
    let done = accepted("FINISH_PASS", s.finish_pass()).unwrap();
    assert_eq!((done.remaining, done.samples), (1, 2));
    // RESET in the middle of a session ends it and drops the refold.
    accepted("RESET", s.reset()).unwrap();
    assert_eq!(s.unlabeled(x).unwrap(), Err(phase));
    for ((l, _), o) in test.iter().zip(&original) {
        assert_eq!(
            &s.infer_i8(l).unwrap().logits,
            o,
            "RESET: the original logits"
        );
    }

    // Tail: a class beyond the classes; COMMIT before any step saves the
    // overlay as it is (nothing adapted: the original logits).
    let tail = begin_for(&model, Method::Tail, 0, false);
    accepted("ADAPT_BEGIN", s.adapt_begin(&tail)).unwrap();
    assert_eq!(s.unlabeled(x).unwrap(), Err(phase));
    assert_eq!(
        s.labeled(info.classes, x).unwrap(),
        Err(refused(Status::AdaptError, 15))
    );
    let c = accepted("COMMIT", s.commit()).unwrap();
    assert_eq!(c.seq, 1);
    assert_eq!(
        s.labeled(0, x).unwrap(),
        Err(phase),
        "COMMIT ended the session"
    );
    for ((l, _), o) in test.iter().zip(&original) {
        assert_eq!(&s.infer_i8(l).unwrap().logits, o);
    }
    // A new ADAPT_BEGIN replaces an unfinished session.
    accepted("ADAPT_BEGIN", s.adapt_begin(&tail)).unwrap();
    accepted("ADAPT_BEGIN", s.adapt_begin(&restat)).unwrap();
    assert_eq!(s.labeled(0, x).unwrap(), Err(phase));
    assert_eq!(accepted("UNLABELED", s.unlabeled(x)).unwrap().samples, 1);
    let served = s.shutdown().unwrap();
    assert!(served.errors >= 15, "{served:?}");
}
