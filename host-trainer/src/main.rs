//! `normcore`: the host-side command-line tool.

fn main() {
    println!("normcore trainer: not yet implemented");
}
