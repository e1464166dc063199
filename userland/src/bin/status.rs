//! `status N`: prints its arguments and exits with status N (default 0). The tests exec it.
#![no_std]
#![no_main]

use cowlab_userland::{args, println};

cowlab_userland::entry!(main);

fn main() -> i32 {
    let code = args()
        .nth(1)
        .and_then(|a| a.to_str().ok())
        .and_then(|s| s.parse::<i32>().ok())
        .unwrap_or(0);
    println!("status: exiting with {code}");
    code
}
