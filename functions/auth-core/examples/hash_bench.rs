//! How close our PBKDF2-HMAC-SHA256 runs to the machine's bound, against the `pbkdf2` crate.
//!
//! The bound is 2 × iterations SHA-256 compressions run one after the other (each iteration's
//! input is the previous one's output, so they cannot overlap), timed here on a dependent chain
//! of blocks with the same compression function. Prints one JSON object; `make bench` records it.
//! Run with `cargo run --release -p auth-core --example hash_bench`.

use std::time::{Duration, Instant};

use sha2::Sha256;
use sha2::block_api::compress256;

const ITERATIONS: u32 = 600_000;
const ROUNDS: usize = 7;

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn time(mut run: impl FnMut()) -> Duration {
    run(); // warm-up
    median(
        (0..ROUNDS)
            .map(|_| {
                let started = Instant::now();
                run();
                started.elapsed()
            })
            .collect(),
    )
}

fn bound() -> Duration {
    time(|| {
        let mut state = [
            0x6a09_e667u32,
            0xbb67_ae85,
            0x3c6e_f372,
            0xa54f_f53a,
            0x510e_527f,
            0x9b05_688c,
            0x1f83_d9ab,
            0x5be0_cd19,
        ];
        let mut block = [0u8; 64];
        for _ in 0..2 * ITERATIONS {
            for (word, bytes) in state.iter().zip(block.chunks_exact_mut(4)) {
                bytes.copy_from_slice(&word.to_be_bytes());
            }
            compress256(&mut state, &[block]);
        }
        std::hint::black_box(state);
    })
}

fn main() {
    let password = b"correct horse battery staple";
    let salt = [7u8; 16];
    let bound = bound();
    let ours = time(|| {
        let mut out = [0u8; 32];
        auth_core::kdf::pbkdf2_hmac_sha256(password, &salt, ITERATIONS, &mut out);
        std::hint::black_box(out);
    });
    let crate_time = time(|| {
        let mut out = [0u8; 32];
        pbkdf2::pbkdf2_hmac::<Sha256>(password, &salt, ITERATIONS, &mut out);
        std::hint::black_box(out);
    });
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{{\"iterations\": {ITERATIONS}, \"bound_ms\": {:.2}, \"ours_ms\": {:.2}, \"pbkdf2_crate_ms\": {:.2}, \"ours_over_bound\": {:.3}, \"crate_over_bound\": {:.3}, \"hashes_per_second_per_core\": {:.2}}}",
        ms(bound),
        ms(ours),
        ms(crate_time),
        ours.as_secs_f64() / bound.as_secs_f64(),
        crate_time.as_secs_f64() / bound.as_secs_f64(),
        1.0 / ours.as_secs_f64()
    );
}
