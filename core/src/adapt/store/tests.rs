//! Compiled only under `#[cfg(test)]` (see `mod tests;` in store.rs).
//!
//! [`Sim`] is a [`RamFlash`] behind a power switch: after a budget of
//! operations (each page erased = 1, each `WRITE_SIZE` word written = 1)
//! the power is cut. The interrupted operation leaves what a [`Cut`] says
//! (nothing, half a page erased, half a word's bits cleared, random bits),
//! and every later operation fails and does nothing until the "reboot"
//! ([`Sim::power_on`]). It also asserts that the store never writes a word
//! twice between erases (the `NorFlash` contract).

use super::*;
use embedded_storage::nor_flash::{check_erase, check_read, check_write, ErrorType, ReadNorFlash};

/// What the operation the power cut interrupts leaves behind.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Cut {
    /// Nothing: the operation never started.
    Clean,
    /// Erase: the page's lower half erased, the upper half old. Write: the
    /// first half of the word's bits (LSB first, byte by byte) written.
    LowHalf,
    /// The other half.
    HighHalf,
    /// Erase: random bits of the page set. Write: random bits among those
    /// to clear cleared.
    Noise(u64),
}

const CUTS: [Cut; 4] = [Cut::Clean, Cut::LowHalf, Cut::HighHalf, Cut::Noise(0)];

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[derive(Clone)]
struct Sim<const N: usize, const W: usize, const E: usize, const R: usize> {
    flash: RamFlash<N, W, E, R>,
    /// Per word: written since its page was last erased.
    written: Vec<bool>,
    /// Operations allowed before the cut (`None`: no cut).
    budget: Option<usize>,
    /// Operations done since power-on.
    ops: usize,
    dead: bool,
    cut: Cut,
    rng: u64,
    /// Writes succeed but change nothing (a broken flash).
    ignore_writes: bool,
}

impl<const N: usize, const W: usize, const E: usize, const R: usize> Sim<N, W, E, R> {
    fn new() -> Self {
        Sim {
            flash: RamFlash::new(),
            written: vec![false; N / W],
            budget: None,
            ops: 0,
            dead: false,
            cut: Cut::Clean,
            rng: 0,
            ignore_writes: false,
        }
    }

    fn cut_after(&mut self, ops: usize, cut: Cut) {
        self.budget = Some(ops);
        self.ops = 0;
        self.dead = false;
        self.cut = cut;
        if let Cut::Noise(seed) = cut {
            self.rng = seed;
        }
    }

    fn power_on(&mut self) {
        self.budget = None;
        self.ops = 0;
        self.dead = false;
    }

    fn bytes(&self) -> &[u8; N] {
        self.flash.as_bytes()
    }

    /// True if this operation is the one the cut interrupts (then the
    /// power is off from now on).
    fn cut_now(&mut self) -> bool {
        if self.budget == Some(self.ops) {
            self.dead = true;
            true
        } else {
            false
        }
    }

    /// Which bits of an interrupted operation on `len` bytes take effect,
    /// as a mask per byte.
    fn partial_mask(&mut self, i: usize, len: usize) -> u8 {
        let bits = len * 8;
        let (lo, hi) = (i * 8, i * 8 + 8);
        match self.cut {
            Cut::Clean => 0,
            Cut::LowHalf | Cut::HighHalf => {
                let mut m = 0u8;
                for b in lo..hi {
                    let low = b < bits / 2;
                    if low == (self.cut == Cut::LowHalf) {
                        m |= 1 << (b - lo);
                    }
                }
                m
            }
            Cut::Noise(_) => splitmix(&mut self.rng) as u8,
        }
    }
}

impl<const N: usize, const W: usize, const E: usize, const R: usize> ErrorType for Sim<N, W, E, R> {
    type Error = NorFlashErrorKind;
}

impl<const N: usize, const W: usize, const E: usize, const R: usize> ReadNorFlash
    for Sim<N, W, E, R>
{
    const READ_SIZE: usize = R;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
        check_read(self, offset, bytes.len())?;
        if self.dead {
            return Err(NorFlashErrorKind::Other);
        }
        self.flash.read(offset, bytes)
    }

    fn capacity(&self) -> usize {
        N
    }
}

impl<const N: usize, const W: usize, const E: usize, const R: usize> NorFlash for Sim<N, W, E, R> {
    const WRITE_SIZE: usize = W;
    const ERASE_SIZE: usize = E;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
        check_erase(self, from, to)?;
        for page in (from as usize..to as usize).step_by(E) {
            if self.dead {
                return Err(NorFlashErrorKind::Other);
            }
            if self.cut_now() {
                for i in 0..E {
                    let m = self.partial_mask(i, E);
                    self.flash.as_bytes_mut()[page + i] |= m;
                }
                return Err(NorFlashErrorKind::Other);
            }
            self.flash.erase(page as u32, (page + E) as u32)?;
            self.written[page / W..(page + E) / W].fill(false);
            self.ops += 1;
        }
        Ok(())
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Self::Error> {
        check_write(self, offset, bytes.len())?;
        for (k, word) in bytes.chunks(W).enumerate() {
            if self.dead {
                return Err(NorFlashErrorKind::Other);
            }
            let at = offset as usize + k * W;
            assert!(!self.written[at / W], "word at {at} written twice");
            self.written[at / W] = true;
            if self.cut_now() {
                for (i, &b) in word.iter().enumerate() {
                    // Bits to clear (b's zeros) take effect where the mask is 1.
                    let m = self.partial_mask(i, W);
                    self.flash.as_bytes_mut()[at + i] &= b | !m;
                }
                return Err(NorFlashErrorKind::Other);
            }
            if !self.ignore_writes {
                self.flash.write(at as u32, word)?;
            }
            self.ops += 1;
        }
        Ok(())
    }
}

/// `len` pseudo-random bytes (with runs of `0xFF` and `0x00`, which a NOR
/// write cannot tell from erased or cleared), ending in nine `0xFF`: a cut
/// before the last words leaves them as they should be, so a store that
/// wrote the header before the payload would be caught loading P2 early.
fn payload(len: usize, seed: u64) -> Vec<u8> {
    let mut s = seed;
    let mut v: Vec<u8> = (0..len).map(|_| splitmix(&mut s) as u8).collect();
    for (i, b) in v.iter_mut().enumerate() {
        match (i / 37) % 5 {
            1 => *b = 0xFF,
            3 => *b = 0x00,
            _ => {}
        }
    }
    let tail = len.saturating_sub(9);
    v[tail..].fill(0xFF);
    v
}

/// A store over the region `[base, base + len)` of `sim`.
fn store<'a, const N: usize, const W: usize, const E: usize, const R: usize>(
    sim: &'a mut Sim<N, W, E, R>,
    g: &Geo,
) -> Store<&'a mut Sim<N, W, E, R>> {
    Store::new(sim, g.base, g.len).expect("geometry")
}

/// `Some((seq, bytes))` loaded, or `None`.
fn load_all<F: NorFlash>(store: &mut Store<F>) -> Result<Option<(u32, Vec<u8>)>, StoreError> {
    let mut buf = vec![0u8; store.capacity()];
    Ok(store
        .load(&mut buf)?
        .map(|l| (l.seq, buf[..l.len].to_vec())))
}

/// A region and payload sizes for the power-cut matrix.
#[derive(Debug, Clone, Copy)]
struct Geo {
    base: u32,
    len: u32,
    /// Length of the payloads already saved (P1).
    p1: usize,
    /// Length of the payload whose save is cut (P2).
    p2: usize,
}

/// What the flash holds before the cut save.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Prior {
    /// Blank.
    Empty,
    /// One save (P1, seq 1): slot A valid, B blank.
    One,
    /// Five saves (P1 the last, seq 5): both slots valid.
    Many,
    /// A = seq `u32::MAX - 1`, B = P1 at `u32::MAX`: the cut save writes
    /// seq 0.
    Wrap,
}

/// The flash with `prior` in place, and what it loads (`(seq, P1)`).
fn prepare<const N: usize, const W: usize, const E: usize, const R: usize>(
    g: &Geo,
    prior: Prior,
) -> (Sim<N, W, E, R>, Option<(u32, Vec<u8>)>) {
    let mut sim = Sim::new();
    // Bytes outside the region: not 0xFF, so that an erase there shows.
    for (i, b) in sim.flash.as_bytes_mut().iter_mut().enumerate() {
        let inside = (g.base as usize..(g.base + g.len) as usize).contains(&i);
        if !inside {
            *b = (i % 251) as u8;
        }
    }
    let p1 = payload(g.p1, 1);
    let expect = {
        let mut s = store(&mut sim, g);
        match prior {
            Prior::Empty => None,
            Prior::One => Some((s.save(&p1).unwrap(), p1.clone())),
            Prior::Many => {
                for k in 0..4 {
                    s.save(&payload(g.p1 / 2 + k, 100 + k as u64)).unwrap();
                }
                Some((s.save(&p1).unwrap(), p1.clone()))
            }
            Prior::Wrap => {
                s.write_slot(Slot::A, u32::MAX - 1, &payload(g.p1, 7))
                    .unwrap();
                s.write_slot(Slot::B, u32::MAX, &p1).unwrap();
                Some((u32::MAX, p1.clone()))
            }
        }
    };
    assert_eq!(load_all(&mut store(&mut sim, g)).unwrap(), expect);
    sim.power_on();
    (sim, expect)
}

/// Bytes of the flash outside the store's slots must never change.
fn assert_outside_untouched<const N: usize>(
    before: &[u8; N],
    after: &[u8; N],
    g: &Geo,
    slot_len: usize,
) {
    let inside = g.base as usize..g.base as usize + 2 * slot_len;
    for i in 0..N {
        if !inside.contains(&i) {
            assert_eq!(before[i], after[i], "byte {i} outside the slots changed");
        }
    }
}

/// Cut the power at every operation of a save of P2 over each prior state
/// and with each kind of cut; reboot and check what loads; then check that
/// a save and a load work. Returns the number of cut points checked.
fn cut_matrix<const N: usize, const W: usize, const E: usize, const R: usize>(g: Geo) -> usize {
    let p2 = payload(g.p2, 2);
    let p3 = payload(g.p2.saturating_sub(3), 3);
    let mut checked = 0;
    for prior in [Prior::Empty, Prior::One, Prior::Many, Prior::Wrap] {
        let (base, p1) = prepare::<N, W, E, R>(&g, prior);
        let seq2 = p1.as_ref().map_or(FIRST_SEQ, |(s, _)| s.wrapping_add(1));

        // An uninterrupted save: its operation count and final image.
        let mut done = base.clone();
        let (slot_len, span) = {
            let s = store(&mut done, &g);
            (s.slot_len(), s.header_span())
        };
        assert_eq!(store(&mut done, &g).save(&p2), Ok(seq2));
        let total = done.ops;
        let pages = slot_len / E;
        let header_words = span / W;
        assert_eq!(total, pages + g.p2.div_ceil(W) + header_words);
        let header_from = total - header_words;
        let target = match store(&mut done, &g).verify(Slot::A) {
            Ok(l) if l.seq == seq2 => Slot::A,
            _ => Slot::B,
        };
        let t_at = store(&mut done, &g).slot_offset(target) as usize;
        let full_header = done.bytes()[t_at..t_at + span].to_vec();

        for k in 0..=total + 1 {
            for cut in CUTS {
                let cut = match cut {
                    Cut::Noise(_) => Cut::Noise(k as u64 * 31 + 7),
                    c => c,
                };
                let mut sim = base.clone();
                sim.cut_after(k, cut);
                let r = store(&mut sim, &g).save(&p2);
                if k < total {
                    assert_eq!(r, Err(StoreError::Flash(NorFlashErrorKind::Other)), "k {k}");
                } else {
                    assert_eq!(r, Ok(seq2), "k {k}");
                }
                sim.power_on();
                assert_outside_untouched(base.bytes(), sim.bytes(), &g, slot_len);

                if cut == Cut::Clean && (pages..header_from).contains(&k) {
                    // Erased, payload (partly) written: no header yet.
                    assert_eq!(
                        store(&mut sim, &g).verify(target),
                        Err(StoreError::Slot {
                            slot: target,
                            fault: SlotFault::Erased
                        }),
                        "{prior:?} k {k}: header before the payload"
                    );
                }
                let got = load_all(&mut store(&mut sim, &g))
                    .unwrap_or_else(|e| panic!("{prior:?} k {k} {cut:?}: load failed: {e}"));
                let is_p2 = got == Some((seq2, p2.clone()));
                if k >= total {
                    assert!(is_p2, "{prior:?} k {k}: completed save does not load");
                } else if is_p2 {
                    // Only when the header is in place: every word of it
                    // written, or the rest already what it should be.
                    assert!(
                        k >= header_from,
                        "{prior:?} k {k} {cut:?}: P2 before its header"
                    );
                    assert_eq!(&sim.bytes()[t_at..t_at + span], &full_header[..]);
                } else {
                    assert_eq!(got, p1, "{prior:?} k {k} {cut:?}: neither P1 nor P2");
                }

                // Life goes on: save, load, reboot, load.
                let seq3 = got.as_ref().map_or(FIRST_SEQ, |(s, _)| s.wrapping_add(1));
                assert_eq!(
                    store(&mut sim, &g).save(&p3),
                    Ok(seq3),
                    "{prior:?} k {k} {cut:?}"
                );
                let again = Some((seq3, p3.clone()));
                assert_eq!(load_all(&mut store(&mut sim, &g)).unwrap(), again);
                sim.power_on();
                assert_eq!(load_all(&mut store(&mut sim, &g)).unwrap(), again);
                checked += 1;
            }
        }
    }
    checked
}

/// Cut the power at every operation of `erase_all` over two valid slots:
/// what loads is the newest payload or nothing, never the older one.
fn erase_all_cuts<const N: usize, const W: usize, const E: usize, const R: usize>(g: Geo) {
    let (base, p1) = prepare::<N, W, E, R>(&g, Prior::Many);
    let mut done = base.clone();
    store(&mut done, &g).erase_all().unwrap();
    let total = done.ops;
    assert_eq!(load_all(&mut store(&mut done, &g)).unwrap(), None);
    for k in 0..=total {
        for cut in CUTS {
            let mut sim = base.clone();
            sim.cut_after(k, cut);
            let r = store(&mut sim, &g).erase_all();
            assert_eq!(r.is_ok(), k >= total);
            sim.power_on();
            let got = load_all(&mut store(&mut sim, &g)).unwrap();
            assert!(got.is_none() || got == p1, "k {k} {cut:?}: {got:?}");
            let p = payload(g.p1, 9);
            let seq = store(&mut sim, &g).save(&p).unwrap();
            assert_eq!(load_all(&mut store(&mut sim, &g)).unwrap(), Some((seq, p)));
        }
    }
}

// Region with a page before it and (1 unused odd page +) a page after it.
const SMALL: Geo = Geo {
    base: 256,
    len: 256 * 7,
    p1: 500,
    p2: 701,
};

#[test]
fn power_cut_w1_e256() {
    assert!(cut_matrix::<2304, 1, 256, 1>(SMALL) > 4 * 4 * 700);
    erase_all_cuts::<2304, 1, 256, 1>(SMALL);
}

#[test]
fn power_cut_w4_e256_r4() {
    cut_matrix::<2304, 4, 256, 4>(SMALL);
    erase_all_cuts::<2304, 4, 256, 4>(SMALL);
}

#[test]
fn power_cut_w8_e256_r32() {
    // READ_SIZE 32: the header spans 32 bytes.
    cut_matrix::<2304, 8, 256, 32>(SMALL);
    erase_all_cuts::<2304, 8, 256, 32>(SMALL);
}

const BIG: Geo = Geo {
    base: 4096,
    len: 4096 * 4,
    p1: 3000,
    p2: 4500,
};

#[test]
fn power_cut_w1_e4096() {
    cut_matrix::<{ 4096 * 6 }, 1, 4096, 1>(BIG);
}

#[test]
fn power_cut_w4_e4096() {
    cut_matrix::<{ 4096 * 6 }, 4, 4096, 1>(BIG);
    erase_all_cuts::<{ 4096 * 6 }, 4, 4096, 1>(BIG);
}

#[test]
fn power_cut_w8_e4096_r8() {
    cut_matrix::<{ 4096 * 6 }, 8, 4096, 8>(BIG);
}

#[test]
fn power_cut_empty_and_ff_payloads() {
    // A zero-length payload (header only) and one of all 0xFF bytes (its
    // writes change nothing: only the header makes it valid).
    for (p1, p2) in [(0, 0), (10, 0), (0, 10)] {
        cut_matrix::<2304, 4, 256, 1>(Geo { p1, p2, ..SMALL });
    }
    let g = SMALL;
    let ff = vec![0xFFu8; 300];
    let (base, p1) = prepare::<2304, 4, 256, 1>(&g, Prior::One);
    let mut done = base.clone();
    store(&mut done, &g).save(&ff).unwrap();
    for k in 0..done.ops {
        let mut sim = base.clone();
        sim.cut_after(k, Cut::Clean);
        assert!(store(&mut sim, &g).save(&ff).is_err());
        sim.power_on();
        let got = load_all(&mut store(&mut sim, &g)).unwrap();
        assert!(got == p1 || got == Some((2, ff.clone())), "k {k}");
    }
}

/// Two valid slots: A = seq 1 (`pa`), B = seq 2 (`pb`).
fn two_slots() -> (Sim<2304, 4, 256, 1>, Vec<u8>, Vec<u8>) {
    let mut sim = Sim::new();
    let (pa, pb) = (payload(400, 11), payload(333, 12));
    let mut s = store(&mut sim, &SMALL);
    assert_eq!(s.save(&pa), Ok(1));
    assert_eq!(s.save(&pb), Ok(2));
    (sim, pa, pb)
}

#[test]
fn corrupt_byte_skips_the_slot() {
    let (base, pa, pb) = two_slots();
    for (bad, good, good_seq, good_p, bad_len) in [
        (Slot::B, Slot::A, 1, &pa, pb.len()),
        (Slot::A, Slot::B, 2, &pb, pa.len()),
    ] {
        let at = store(&mut base.clone(), &SMALL).slot_offset(bad) as usize;
        for i in 0..HEADER_LEN + bad_len {
            let mut sim = base.clone();
            sim.flash.as_bytes_mut()[at + i] ^= 0x5A;
            let mut s = store(&mut sim, &SMALL);
            assert_eq!(
                load_all(&mut s).unwrap(),
                Some((good_seq, good_p.clone())),
                "byte {i}"
            );
            assert_eq!(s.verify(good).map(|l| l.seq), Ok(good_seq));
            let fault = match s.verify(bad) {
                Err(StoreError::Slot { slot, fault }) if slot == bad => fault,
                r => panic!("byte {i}: {r:?}"),
            };
            match i {
                0..4 => assert_eq!(fault, SlotFault::BadMagic),
                4..HEADER_LEN => assert!(matches!(fault, SlotFault::HeaderCrc { .. }), "{fault:?}"),
                _ => assert!(matches!(fault, SlotFault::PayloadCrc { .. }), "{fault:?}"),
            }
            // The next save overwrites the bad slot, keeping the good one.
            let p = payload(50, i as u64);
            assert_eq!(s.save(&p), Ok(good_seq + 1));
            assert_eq!(s.verify(good).map(|l| l.seq), Ok(good_seq));
            assert_eq!(load_all(&mut s).unwrap(), Some((good_seq + 1, p)));
        }
    }
}

#[test]
fn both_slots_corrupt_load_none() {
    // Documented choice: nothing valid left is `Ok(None)`, as after a cut
    // on a blank store; `verify` names each slot's fault.
    let (mut sim, _, _) = two_slots();
    let b_at = store(&mut sim, &SMALL).slot_offset(Slot::B) as usize;
    let a_at = SMALL.base as usize;
    sim.flash.as_bytes_mut()[a_at + HEADER_LEN + 10] ^= 1;
    sim.flash.as_bytes_mut()[b_at + 9] ^= 0x80;
    let mut s = store(&mut sim, &SMALL);
    let mut buf = [0xAAu8; 800];
    assert_eq!(s.load(&mut buf), Ok(None));
    assert!(buf.iter().all(|&b| b == 0xAA), "buf touched");
    assert!(matches!(
        s.verify(Slot::A),
        Err(StoreError::Slot {
            slot: Slot::A,
            fault: SlotFault::PayloadCrc { .. }
        })
    ));
    assert!(matches!(
        s.verify(Slot::B),
        Err(StoreError::Slot {
            slot: Slot::B,
            fault: SlotFault::HeaderCrc { .. }
        })
    ));
    let p = payload(20, 5);
    assert_eq!(s.save(&p), Ok(FIRST_SEQ));
    assert_eq!(load_all(&mut s).unwrap(), Some((FIRST_SEQ, p)));
}

#[test]
fn headers_with_good_crc_but_bad_fields() {
    let g = SMALL;
    type Edit = fn(&mut RawHeader);
    let cases: [(Edit, SlotFault); 3] = [
        (|h| h.version = 2, SlotFault::UnsupportedVersion(2)),
        (|h| h.reserved = 1, SlotFault::Reserved),
        (
            |h| h.len = 10_000,
            SlotFault::Length {
                len: 10_000,
                max: 768 - 24,
            },
        ),
    ];
    for (edit, want) in cases {
        let (mut sim, pa, _) = two_slots();
        let b_at = store(&mut sim, &g).slot_offset(Slot::B) as usize;
        let bytes: [u8; HEADER_LEN] = sim.bytes()[b_at..b_at + HEADER_LEN].try_into().unwrap();
        let mut h = RawHeader::from_bytes(&bytes);
        edit(&mut h);
        h.header_crc = crc32(&h.to_bytes()[..HEADER_CRC_AT]);
        sim.flash.as_bytes_mut()[b_at..b_at + HEADER_LEN].copy_from_slice(&h.to_bytes());
        let mut s = store(&mut sim, &g);
        assert_eq!(
            s.verify(Slot::B),
            Err(StoreError::Slot {
                slot: Slot::B,
                fault: want
            })
        );
        assert_eq!(load_all(&mut s).unwrap(), Some((1, pa)));
    }
}

#[test]
fn blank_store() {
    let mut sim = Sim::<2304, 4, 256, 1>::new();
    let mut s = store(&mut sim, &SMALL);
    assert_eq!(s.capacity(), 3 * 256 - 24);
    assert_eq!(s.slot_len(), 3 * 256);
    assert_eq!(s.header_span(), 24);
    assert_eq!(s.load(&mut []), Ok(None));
    for slot in [Slot::A, Slot::B] {
        assert_eq!(
            s.verify(slot),
            Err(StoreError::Slot {
                slot,
                fault: SlotFault::Erased
            })
        );
    }
}

#[test]
fn sequence_numbers_wrap() {
    assert!(is_newer(1, 0));
    assert!(is_newer(0, u32::MAX));
    assert!(is_newer(5, u32::MAX - 5));
    assert!(!is_newer(u32::MAX, 0));
    assert!(!is_newer(7, 7));
    assert!(!is_newer(0, 1 << 31) && !is_newer(1 << 31, 0));

    let g = SMALL;
    let mut sim = Sim::<2304, 4, 256, 1>::new();
    let mut s = store(&mut sim, &g);
    // One slot at u32::MAX: the next save is 0, in the other slot.
    s.write_slot(Slot::A, u32::MAX, &payload(10, 1)).unwrap();
    let p0 = payload(20, 2);
    assert_eq!(s.save(&p0), Ok(0));
    assert_eq!(s.verify(Slot::B).map(|l| l.seq), Ok(0));
    assert_eq!(load_all(&mut s).unwrap(), Some((0, p0)));
    let p1 = payload(30, 3);
    assert_eq!(s.save(&p1), Ok(1));
    assert_eq!(s.verify(Slot::A).map(|l| l.seq), Ok(1));
    assert_eq!(load_all(&mut s).unwrap(), Some((1, p1)));

    // B at 0 is newer than A at u32::MAX, whichever slot holds which.
    let mut s = store(&mut sim, &g);
    s.write_slot(Slot::A, 0, &payload(5, 4)).unwrap();
    s.write_slot(Slot::B, u32::MAX, &payload(5, 5)).unwrap();
    assert_eq!(load_all(&mut s).unwrap(), Some((0, payload(5, 4))));
    assert_eq!(s.save(&[1, 2, 3]), Ok(1));
    assert_eq!(s.verify(Slot::B).map(|l| l.seq), Ok(1));

    // Equal numbers (only hand-made): A counts as the newer.
    s.write_slot(Slot::A, 9, &[0xA]).unwrap();
    s.write_slot(Slot::B, 9, &[0xB]).unwrap();
    assert_eq!(load_all(&mut s).unwrap(), Some((9, vec![0xA])));
    assert_eq!(s.save(&[0xC]), Ok(10));
    assert_eq!(s.verify(Slot::B).map(|l| l.seq), Ok(10));
}

#[test]
fn many_saves_alternate_slots() {
    let mut sim = Sim::<{ 4096 * 2 }, 8, 4096, 1>::new();
    let g = Geo {
        base: 0,
        len: 8192,
        p1: 0,
        p2: 0,
    };
    let mut s = store(&mut sim, &g);
    for i in 0..20u32 {
        let p = payload(i as usize * 97 % 4000, i as u64);
        assert_eq!(s.save(&p), Ok(i + 1));
        let want = if i % 2 == 0 { Slot::A } else { Slot::B };
        assert_eq!(s.verify(want).map(|l| l.seq), Ok(i + 1));
        assert_eq!(load_all(&mut s).unwrap(), Some((i + 1, p)));
    }
}

#[test]
fn sizes_and_buffers() {
    let g = SMALL;
    let mut sim = Sim::<2304, 4, 256, 1>::new();
    let s = store(&mut sim, &g);
    let max = s.capacity();
    let before = *s.into_inner().bytes();
    let mut s = store(&mut sim, &g);
    assert_eq!(
        s.save(&vec![0; max + 1]),
        Err(StoreError::PayloadTooLarge { len: max + 1, max })
    );
    assert_eq!(&before, sim.bytes(), "a refused save wrote");
    let mut s = store(&mut sim, &g);
    let full = payload(max, 1);
    assert_eq!(s.save(&full), Ok(1));
    assert_eq!(load_all(&mut s).unwrap(), Some((1, full.clone())));

    let mut small = vec![0x33u8; max - 1];
    assert_eq!(
        s.load(&mut small),
        Err(StoreError::BufferTooSmall {
            needed: max,
            actual: max - 1
        })
    );
    assert!(small.iter().all(|&b| b == 0x33), "buf touched");

    // The rest of a larger buffer is untouched.
    s.save(&[1, 2, 3, 4, 5]).unwrap();
    let mut big = [0x77u8; 16];
    assert_eq!(s.load(&mut big), Ok(Some(Loaded { seq: 2, len: 5 })));
    assert_eq!(big[..6], [1, 2, 3, 4, 5, 0x77]);
}

#[test]
fn erase_all_clears() {
    let (mut sim, _, _) = two_slots();
    let mut s = store(&mut sim, &SMALL);
    s.erase_all().unwrap();
    assert_eq!(load_all(&mut s).unwrap(), None);
    assert!(matches!(
        s.verify(Slot::B),
        Err(StoreError::Slot {
            fault: SlotFault::Erased,
            ..
        })
    ));
    assert_eq!(s.save(&[7]), Ok(FIRST_SEQ));
}

#[test]
fn read_back_failure_is_reported() {
    let (mut sim, _, pb) = two_slots();
    sim.ignore_writes = true;
    assert_eq!(
        store(&mut sim, &SMALL).save(&[1, 2, 3]),
        Err(StoreError::VerifyFailed {
            slot: Slot::A,
            fault: SlotFault::Erased
        })
    );
    sim.ignore_writes = false;
    assert_eq!(
        load_all(&mut store(&mut sim, &SMALL)).unwrap(),
        Some((2, pb))
    );
}

#[test]
fn geometry_is_checked() {
    let geo = |r: Result<Store<&mut RamFlash<4096, 4, 256, 1>>, StoreError>| match r {
        Err(StoreError::Geometry(g)) => Some(g),
        Err(e) => panic!("{e:?}"),
        Ok(_) => None,
    };
    let mut f = RamFlash::<4096, 4, 256, 1>::new();
    assert_eq!(
        geo(Store::new(&mut f, 128, 512)),
        Some(GeometryFault::NotAligned)
    );
    assert_eq!(
        geo(Store::new(&mut f, 256, 500)),
        Some(GeometryFault::NotAligned)
    );
    assert_eq!(
        geo(Store::new(&mut f, 256, 256)),
        Some(GeometryFault::TooSmall)
    );
    assert_eq!(geo(Store::new(&mut f, 0, 0)), Some(GeometryFault::TooSmall));
    assert_eq!(
        geo(Store::new(&mut f, 3840, 512)),
        Some(GeometryFault::OutOfBounds)
    );
    assert_eq!(
        geo(Store::new(&mut f, 0xFFFF_FF00, 512)),
        Some(GeometryFault::OutOfBounds)
    );
    assert_eq!(geo(Store::new(&mut f, 3584, 512)), None);
    assert_eq!(geo(Store::new(&mut f, 0, 4096)), None);

    // A page smaller than the header's span: slots too small.
    let mut tiny = RamFlash::<64, 16, 16, 1>::new();
    assert!(matches!(
        Store::new(&mut tiny, 0, 32),
        Err(StoreError::Geometry(GeometryFault::TooSmall))
    ));
    // Unsupported units.
    let mut odd = RamFlash::<1536, 3, 768, 1>::new();
    assert!(matches!(
        Store::new(&mut odd, 0, 1536),
        Err(StoreError::Geometry(GeometryFault::Unit))
    ));
    let mut wide = RamFlash::<2048, 512, 1024, 1>::new();
    assert!(matches!(
        Store::new(&mut wide, 0, 2048),
        Err(StoreError::Geometry(GeometryFault::Unit))
    ));
    // 256-byte words (the largest): the header spans 256 bytes.
    let mut page = RamFlash::<8192, 256, 4096, 1>::new();
    let mut s = Store::new(&mut page, 0, 8192).unwrap();
    assert_eq!(s.header_span(), 256);
    assert_eq!(s.save(&[9; 300]), Ok(1));
    assert_eq!(load_all(&mut s).unwrap(), Some((1, vec![9; 300])));
}

#[test]
fn ram_flash_semantics() {
    let mut f = RamFlash::<512, 4, 256, 2>::new();
    assert!(f.as_bytes().iter().all(|&b| b == 0xFF));
    assert_eq!(f.capacity(), 512);
    f.write(4, &[0xF0, 0x0F, 0xFF, 0x00]).unwrap();
    f.write(4, &[0x3C, 0xFF, 0x0F, 0xFF]).unwrap(); // ANDs: only clears
    assert_eq!(f.as_bytes()[4..8], [0x30, 0x0F, 0x0F, 0x00]);
    let mut r = [0u8; 4];
    f.read(4, &mut r).unwrap();
    assert_eq!(r, [0x30, 0x0F, 0x0F, 0x00]);

    let snapshot = f.clone();
    use NorFlashErrorKind::*;
    assert_eq!(f.write(2, &[0; 4]), Err(NotAligned));
    assert_eq!(f.write(4, &[0; 3]), Err(NotAligned));
    assert_eq!(f.write(512, &[0; 4]), Err(OutOfBounds));
    assert_eq!(f.write(508, &[0; 8]), Err(OutOfBounds));
    assert_eq!(f.read(1, &mut [0; 2]), Err(NotAligned));
    assert_eq!(f.read(2, &mut [0; 3]), Err(NotAligned));
    assert_eq!(f.read(510, &mut [0; 4]), Err(OutOfBounds));
    assert_eq!(f.erase(0, 128), Err(NotAligned));
    assert_eq!(f.erase(256, 0), Err(OutOfBounds));
    assert_eq!(f.erase(0, 768), Err(OutOfBounds));
    assert!(f == snapshot, "a refused operation changed the flash");

    f.write(300, &[0; 4]).unwrap();
    f.erase(0, 256).unwrap();
    assert!(f.as_bytes()[..256].iter().all(|&b| b == 0xFF));
    assert_eq!(f.as_bytes()[300..304], [0; 4]);
    f.erase(0, 512).unwrap();
    assert!(f.as_bytes().iter().all(|&b| b == 0xFF));
    assert!(format!("{f:?}").contains("erase_size: 256"));
}

#[test]
fn store_on_ram_flash_directly() {
    // As a firmware under QEMU would use it: the default 4-byte words and
    // 4 KiB pages, the store owning the flash.
    let mut s = Store::new(RamFlash::<{ 4096 * 2 }>::new(), 0, 8192).unwrap();
    assert_eq!(s.save(b"overlay"), Ok(1));
    let flash = s.into_inner();
    let mut s = Store::new(flash, 0, 8192).unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(s.load(&mut buf), Ok(Some(Loaded { seq: 1, len: 7 })));
    assert_eq!(&buf[..7], b"overlay");
}

#[test]
fn header_layout() {
    let h = RawHeader::new(0x0403_0201, 0x0807_0605, 0x0C0B_0A09);
    let b = h.to_bytes();
    assert_eq!(b[..4], *b"NCAS");
    assert_eq!(b[4..8], [1, 0, 0, 0]);
    assert_eq!(b[8..20], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
    assert_eq!(b[20..24], crc32(&b[..20]).to_le_bytes());
    assert_eq!(RawHeader::from_bytes(&b), h);
}

#[test]
fn errors_display() {
    let errs = [
        StoreError::Flash(NorFlashErrorKind::Other),
        StoreError::Geometry(GeometryFault::Unit),
        StoreError::PayloadTooLarge { len: 2, max: 1 },
        StoreError::BufferTooSmall {
            needed: 2,
            actual: 1,
        },
        StoreError::Slot {
            slot: Slot::A,
            fault: SlotFault::PayloadCrc {
                stored: 1,
                computed: 2,
            },
        },
        StoreError::VerifyFailed {
            slot: Slot::B,
            fault: SlotFault::Differs,
        },
    ];
    for e in errs {
        assert!(!e.to_string().is_empty());
    }
    assert!(StoreError::Slot {
        slot: Slot::B,
        fault: SlotFault::Erased
    }
    .to_string()
    .contains("slot B"));
}
