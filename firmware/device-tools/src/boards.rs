//! The boards, defined once for the host: where each board crate is, what
//! it builds for, and how QEMU runs it (if it can). The board crates
//! themselves (`firmware/boards/NAME`) hold the same facts as their
//! `.cargo/config.toml` (target, runner) and `memory.x`; the test
//! `boards_match_their_crates` checks the two agree.

use std::path::PathBuf;

use crate::root;

/// How QEMU runs a board.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Qemu {
    /// `-machine`.
    pub machine: &'static str,
    /// `-cpu`, for machines with a choice.
    pub cpu: Option<&'static str>,
}

/// A board crate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Board {
    /// The crate's directory name, `firmware/boards/NAME`; what
    /// `--board` takes.
    pub name: &'static str,
    /// The core, for tables.
    pub core: &'static str,
    /// The Rust target it builds for.
    pub target: &'static str,
    /// How QEMU runs it; `None` for real hardware only.
    pub qemu: Option<Qemu>,
    /// Its binaries.
    pub bins: &'static [&'static str],
}

/// Every board, the default (`mps2-an386`) first. `bench` needs 1.7 MiB of
/// static buffers: only the MPS2 boards (4 MiB of RAM) have it.
/// `finetune` (adaptation on the device, the board crate's `adapt`
/// feature) is on the Cortex-M4F and on the micro:bit, the smallest board
/// (16 KiB of RAM: re-estimation alone), which the QEMU test runs it on,
/// and on the nRF52840-DK, saving into the chip's flash (real hardware).
pub const BOARDS: &[Board] = &[
    Board {
        name: "mps2-an386",
        core: "Cortex-M4F",
        target: "thumbv7em-none-eabihf",
        qemu: Some(Qemu {
            machine: "mps2-an386",
            cpu: Some("cortex-m4"),
        }),
        bins: &[
            "hello",
            "infer",
            "serve",
            "bench",
            "uart_echo",
            "panic",
            "fault",
            "finetune",
        ],
    },
    Board {
        name: "mps2-an385",
        core: "Cortex-M3",
        target: "thumbv7m-none-eabi",
        qemu: Some(Qemu {
            machine: "mps2-an385",
            cpu: Some("cortex-m3"),
        }),
        bins: &["hello", "infer", "serve", "bench"],
    },
    Board {
        name: "mps2-an500",
        core: "Cortex-M7",
        target: "thumbv7em-none-eabihf",
        qemu: Some(Qemu {
            machine: "mps2-an500",
            cpu: Some("cortex-m7"),
        }),
        bins: &["hello", "infer", "serve", "bench"],
    },
    Board {
        name: "mps2-an505",
        core: "Cortex-M33",
        target: "thumbv8m.main-none-eabihf",
        qemu: Some(Qemu {
            machine: "mps2-an505",
            cpu: Some("cortex-m33"),
        }),
        bins: &["hello", "infer", "serve", "bench"],
    },
    Board {
        name: "microbit",
        core: "Cortex-M0 (nRF51822)",
        target: "thumbv6m-none-eabi",
        qemu: Some(Qemu {
            machine: "microbit",
            cpu: None,
        }),
        bins: &["hello", "infer", "serve", "mathbench", "finetune"],
    },
    Board {
        name: "netduinoplus2",
        core: "Cortex-M4F (STM32F405)",
        target: "thumbv7em-none-eabihf",
        qemu: Some(Qemu {
            machine: "netduinoplus2",
            cpu: None,
        }),
        bins: &["hello", "infer", "serve"],
    },
    Board {
        name: "nrf52840dk",
        core: "Cortex-M4F (nRF52840)",
        target: "thumbv7em-none-eabihf",
        qemu: None,
        bins: &["hello", "infer", "serve", "mathbench", "finetune"],
    },
];

/// The default board: QEMU's `mps2-an386`.
pub fn default_board() -> &'static Board {
    &BOARDS[0]
}

/// The board called `name`, or an error listing the boards.
pub fn board(name: &str) -> anyhow::Result<&'static Board> {
    BOARDS.iter().find(|b| b.name == name).ok_or_else(|| {
        let names: Vec<&str> = BOARDS.iter().map(|b| b.name).collect();
        anyhow::anyhow!("no board `{name}`; the boards are {}", names.join(", "))
    })
}

/// Every Rust target a board builds for (what `cargo xtask setup` adds),
/// each once.
pub fn targets() -> Vec<&'static str> {
    let mut t: Vec<&str> = BOARDS.iter().map(|b| b.target).collect();
    t.sort_unstable();
    t.dedup();
    t
}

impl Board {
    /// `firmware/boards/NAME`, absolute.
    pub fn dir(&self) -> PathBuf {
        root().join("firmware").join("boards").join(self.name)
    }

    /// Where its release ELFs land (each board has its own target
    /// directory: two boards may share a target triple).
    pub fn elf_dir(&self) -> PathBuf {
        self.dir().join("target").join(self.target).join("release")
    }

    /// The release ELF of `bin`.
    pub fn elf(&self, bin: &str) -> PathBuf {
        self.elf_dir().join(bin)
    }

    /// Whether it has the binary `bin`.
    pub fn has(&self, bin: &str) -> bool {
        self.bins.contains(&bin)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The list says what each board crate's own files say: its target and
    /// runner in `.cargo/config.toml`, its bins in `Cargo.toml`.
    #[test]
    fn boards_match_their_crates() {
        for b in BOARDS {
            let config = std::fs::read_to_string(b.dir().join(".cargo/config.toml")).unwrap();
            assert!(
                config.contains(&format!("target = \"{}\"", b.target)),
                "{}: target",
                b.name
            );
            if let Some(q) = b.qemu {
                assert!(
                    config.contains(&format!("\"--machine\", \"{}\"", q.machine)),
                    "{}: machine",
                    b.name
                );
                if let Some(cpu) = q.cpu {
                    assert!(
                        config.contains(&format!("\"--cpu\", \"{cpu}\"")),
                        "{}",
                        b.name
                    );
                }
            }
            let manifest = std::fs::read_to_string(b.dir().join("Cargo.toml")).unwrap();
            for bin in b.bins {
                assert!(
                    manifest.contains(&format!("name = \"{bin}\"")),
                    "{}: bin {bin}",
                    b.name
                );
            }
            let declared = manifest.matches("[[bin]]").count();
            assert_eq!(declared, b.bins.len(), "{}: the bins listed", b.name);
            // `finetune` builds with the board's `adapt` feature, a default.
            if b.has("finetune") {
                assert!(
                    manifest.contains("required-features = [\"adapt\"]")
                        && manifest.contains("default = [\"f32\", \"int8\", \"adapt\"]"),
                    "{}: finetune and the adapt feature",
                    b.name
                );
            }
        }
        // rustup reads the targets to install from rust-toolchain.toml.
        let toolchain = std::fs::read_to_string(crate::root().join("rust-toolchain.toml")).unwrap();
        for t in targets() {
            assert!(
                toolchain.contains(&format!("\"{t}\"")),
                "rust-toolchain.toml does not list {t}"
            );
        }
        assert!(board("nope").is_err());
        assert_eq!(board("mps2-an386").unwrap(), default_board());
    }
}
