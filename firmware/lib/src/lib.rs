//! # normcore-firmware
//!
//! The board-agnostic side of normcore on Cortex-M: what every firmware
//! binary runs, whatever the board. Nothing here knows a peripheral's
//! address, a logging transport or how a program ends on a given board:
//! a board crate (`firmware/boards/NAME`) implements [`board::Board`] and
//! brings its `memory.x`, defmt transport and panic handler, and its bins
//! are a few lines that call a program from [`programs`] with its parts.
//!
//! - [`board`]: the interface a board crate implements.
//! - [`programs`]: `infer` (device = host parity and cost of the embedded
//!   models), `serve` (inference over the serial protocol, `docs/SERIAL.md`),
//!   `bench` (kernel and engine costs), `hello`, `uart_echo`.
//! - [`assets`]: the embedded models and samples, as the board's build
//!   script generates them (`normcore-firmware-build`).
//! - [`cost`]: cycles (DWT CYCCNT) on hardware, timer ticks and
//!   instruction counts (`-icount`) under QEMU.
//! - [`stack`]: stack painting and the high-water mark.
//! - [`digest`]: CRC-32 of results, for comparing a run with the host's.
//! - [`fault`]: what a HardFault handler logs (registers, fault status).
//! - [`cmsdk`]: drivers for ARM's CMSDK timer and UART (`embedded-hal`
//!   delay, `embedded-io` serial), given their base address by a board.
//! - [`nrf51`]: drivers for the nRF51's TIMER and UART (the micro:bit),
//!   the same way.
//! - [`workload`]: the computation `hello` runs, shared with the host test
//!   that checks its result.
//! - `scenario` (feature `adapt`): the split and the drift `finetune`
//!   runs, shared with the host test that repeats it.
#![no_std]

pub mod assets;
pub mod board;
pub mod cmsdk;
pub mod cost;
pub mod digest;
pub mod fault;
pub mod mmio;
pub mod nrf51;
pub mod programs;
#[cfg(feature = "adapt")]
pub mod scenario;
pub mod stack;
pub mod workload;

/// A 16-aligned static buffer of `$bytes` bytes (an engine arena), handed
/// out once: the first evaluation yields `Some(&'static mut [u8])`, every
/// later one `None`. A macro because a static cannot depend on a generic
/// parameter; each expansion has its own buffer.
#[macro_export]
macro_rules! take_arena {
    ($bytes:expr) => {{
        #[repr(C, align(16))]
        struct Arena([u8; $bytes]);
        static mut ARENA: Arena = Arena([0; $bytes]);
        static TAKEN: ::core::sync::atomic::AtomicBool =
            ::core::sync::atomic::AtomicBool::new(false);
        if $crate::take_once(&TAKEN) {
            // SAFETY: `TAKEN` makes this the only reference to `ARENA` ever
            // made; the pointer is to a static, so never null.
            unsafe { (&raw mut ARENA.0).as_mut() }.map(|a| a.as_mut_slice())
        } else {
            None
        }
    }};
}

/// A static of type `$ty` initialised to `$init` (a constant expression),
/// handed out once as `take_arena!` hands out an arena: the first
/// evaluation yields `Some(&'static mut $ty)`, every later one `None`. For
/// a static whose type is not a byte buffer (the flash region `finetune`
/// saves into).
#[macro_export]
macro_rules! take_static {
    ($ty:ty, $init:expr) => {{
        static mut VALUE: $ty = $init;
        static TAKEN: ::core::sync::atomic::AtomicBool =
            ::core::sync::atomic::AtomicBool::new(false);
        if $crate::take_once(&TAKEN) {
            // SAFETY: `TAKEN` makes this the only reference to `VALUE` ever
            // made; the pointer is to a static, so never null.
            unsafe { (&raw mut VALUE).as_mut() }
        } else {
            None
        }
    }};
}

/// Whether this is the first call for `flag` (which it then sets): how a
/// static is handed out once. A load and a store inside a critical section,
/// not `swap`: Cortex-M0 has no compare-and-swap.
pub fn take_once(flag: &core::sync::atomic::AtomicBool) -> bool {
    use core::sync::atomic::Ordering::Relaxed;
    cortex_m::interrupt::free(|_| {
        let taken = flag.load(Relaxed);
        flag.store(true, Relaxed);
        !taken
    })
}

/// The assets the board's build script generated (`$OUT_DIR/assets.rs`,
/// written by `normcore-firmware-build`): the statics behind
/// `ASSETS: `[`assets::Assets`] and the constants `ARENA_BYTES`,
/// `FEATURES`, `CLASSES`, `SAMPLES`, `OVERLAY_WORDS`, `RESTAT_WORDS`,
/// `TAIL_OVERLAY_WORDS`, `TAIL_WORDS`.
/// Expand it once, at the top of a bin.
#[macro_export]
macro_rules! include_assets {
    () => {
        #[allow(clippy::unreadable_literal, clippy::large_const_arrays, dead_code)]
        mod assets {
            include!(concat!(env!("OUT_DIR"), "/assets.rs"));
        }
    };
}

/// A board crate's bin for one of the [`programs`]: its `#[entry]`, handing
/// the board's type (and, for `infer` and `serve`, the generated assets and
/// a static buffer of the right size) to the program's `main`. A bin is
/// then
///
/// ```ignore
/// #![no_std]
/// #![no_main]
/// normcore_firmware::bin!(infer, normcore_mps2_an385::Mps2An385);
/// ```
///
/// (the crate using it depends on `cortex-m-rt`, whose `entry` it expands
/// to). Programs: `infer`, `serve` (a [`board::Serial`] board), `serve_adapt`
/// (`serve` with the adaptation commands; feature `adapt`), `bench`,
/// `hello`, `uart_echo` (a [`board::Serial`] board), `finetune` (feature
/// `adapt`; re-estimation then tail training, over a RAM-backed flash
/// region: `bin!(finetune, Board)`, or re-estimation alone:
/// `bin!(finetune, Board, Restat)`; over a chip's flash:
/// `bin!(finetune, Board, RestatTail, EXPR)`, `EXPR` an
/// `Option<impl NorFlash>`).
#[macro_export]
macro_rules! bin {
    (infer, $board:ty) => {
        $crate::include_assets!();

        #[cortex_m_rt::entry]
        fn main() -> ! {
            let arena = $crate::take_arena!(assets::ARENA_BYTES);
            $crate::programs::infer::main::<$board>(&assets::ASSETS, arena)
        }
    };
    (serve, $board:ty) => {
        $crate::include_assets!();

        #[cortex_m_rt::entry]
        fn main() -> ! {
            use assets::{ARENA_BYTES, CLASSES, FEATURES};
            let buffer = $crate::take_arena!($crate::programs::serve::buffer_bytes(
                ARENA_BYTES,
                FEATURES,
                CLASSES
            ));
            $crate::programs::serve::main::<$board>(&assets::ASSETS, buffer)
        }
    };
    (serve_adapt, $board:ty) => {
        $crate::include_assets!();

        #[cortex_m_rt::entry]
        fn main() -> ! {
            use assets::{ARENA_BYTES, CLASSES, FEATURES, SERVE_OVERLAY_WORDS, SERVE_WORK_WORDS};
            use $crate::programs::serve_adapt::{self, store_bytes, Buffers, Flash};
            let buffers = Buffers {
                serve: $crate::take_arena!($crate::programs::serve::buffer_bytes(
                    ARENA_BYTES,
                    FEATURES,
                    CLASSES
                )),
                overlay: $crate::take_arena!(4 * SERVE_OVERLAY_WORDS),
                work: $crate::take_arena!(4 * SERVE_WORK_WORDS),
            };
            let flash =
                $crate::take_static!(Flash<{ store_bytes(SERVE_OVERLAY_WORDS) }>, Flash::new());
            serve_adapt::main::<$board, _>(&assets::ASSETS, buffers, flash)
        }
    };
    (finetune, $board:ty) => {
        $crate::bin!(finetune, $board, RestatTail);
    };
    (finetune, $board:ty, $method:ident) => {
        $crate::bin!(finetune, $board, $method, {
            use $crate::programs::finetune::{store_bytes, Flash, PAGE, WRITE};
            $crate::take_static!(Flash<{ store_bytes(WORDS.0, WRITE, PAGE) }>, Flash::new())
        });
    };
    (finetune, $board:ty, $method:ident, $flash:expr) => {
        $crate::include_assets!();

        #[cortex_m_rt::entry]
        fn main() -> ! {
            use assets::{
                ARENA_BYTES, OVERLAY_WORDS, RESTAT_WORDS, TAIL_OVERLAY_WORDS, TAIL_WORDS,
            };
            use $crate::programs::finetune::{self, scratch_bytes, Buffers, Method};
            const METHOD: Method = Method::$method;
            // (overlay, workspace) words.
            const WORDS: (usize, usize) =
                METHOD.words(OVERLAY_WORDS, RESTAT_WORDS, TAIL_OVERLAY_WORDS, TAIL_WORDS);
            let buffers = Buffers {
                arena: $crate::take_arena!(ARENA_BYTES),
                overlay: $crate::take_arena!(4 * WORDS.0),
                scratch: $crate::take_arena!(scratch_bytes(WORDS.0, WORDS.1)),
            };
            let flash = $flash;
            finetune::main::<$board, _>(&assets::ASSETS, buffers, METHOD, flash)
        }
    };
    ($program:ident, $board:ty) => {
        #[cortex_m_rt::entry]
        fn main() -> ! {
            $crate::programs::$program::main::<$board>()
        }
    };
}
