//! `init`: the first user program cowlab runs. For now it greets and exits 0; later it starts the
//! program named on the kernel command line after `--`.
#![no_std]
#![no_main]

use cowlab_userland::{args, println};

cowlab_userland::entry!(main);

fn main() -> i32 {
    cowlab_userland::print!("init: hello from ring 3, argv =");
    for arg in args() {
        cowlab_userland::print!(" {:?}", arg.to_str().unwrap_or("<not UTF-8>"));
    }
    println!();
    0
}
