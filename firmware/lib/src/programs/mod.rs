//! The firmware's programs, each generic over the [`Board`](crate::board::Board)
//! it runs on: a board crate's bin is its `#[entry]` calling one of these
//! `main`s with the board's type (and, where the program embeds assets, the
//! generated `ASSETS` and a static buffer).
//!
//! | program | what | needs |
//! |---|---|---|
//! | [`hello`] | one BN layer, checked bit for bit by the host | `Board` |
//! | [`infer`] | every embedded model on every embedded sample: device = host parity, accuracy, cost per layer, stack | `Board`, assets |
//! | [`serve`] | inference over the serial protocol (`docs/SERIAL.md`) | `Serial`, assets |
//! | `serve_adapt` (feature `adapt`) | `serve` and the protocol's adaptation commands: re-estimation and tail training of the int8 model, the overlay saved | `Serial`, assets |
//! | [`bench`] | cost of each kernel on fixed shapes (about 1.3 MiB of RAM: the MPS2 boards) | `Board` |
//! | [`mathbench`] | `bench`'s elementary-function rows alone (8 KiB: every board) | `Board` |
//! | [`uart_echo`] | a serial round trip | `Serial` |
//! | `finetune` (feature `adapt`) | statistics re-estimation of the int8 model on a drift of the samples, the overlay saved and reloaded | `Board`, assets |

pub mod bench;
#[cfg(feature = "adapt")]
pub mod finetune;
pub mod hello;
pub mod infer;
pub mod mathbench;
pub mod serve;
#[cfg(feature = "adapt")]
pub mod serve_adapt;
pub mod uart_echo;
