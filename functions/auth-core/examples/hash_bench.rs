//! Our PBKDF2-HMAC-SHA256 per backend, alone and two interleaved on one core, against the `pbkdf2`
//! crate, in CPU time of the measuring thread. Prints one JSON object; `make bench` records it next to the single-chain bound it
//! measures with OpenSSL in the same run (2 × iterations SHA-256 compressions, one after the
//! other: each iteration's input is the previous one's output).
//! Run with `cargo run --release -p auth-core --example hash_bench`.

use std::time::Duration;

use auth_core::hashing::STEPS_BETWEEN_YIELDS;
use auth_core::kdf::{Backend, Derivation, Lanes, WIDTH, derive_interleaved};
use sha2::Sha256;

const ITERATIONS: u32 = 600_000;
const ROUNDS: usize = 7;

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// The calling thread's CPU time: on a machine shared with other work, wall time would count the
/// time the thread waited for a core (OpenSSL's figure is CPU time too).
fn thread_cpu_time() -> Duration {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec, which `now` is.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    Duration::new(
        u64::try_from(now.tv_sec).unwrap_or(0),
        u32::try_from(now.tv_nsec).unwrap_or(0),
    )
}

fn time(mut run: impl FnMut()) -> Duration {
    run(); // warm-up
    median(
        (0..ROUNDS)
            .map(|_| {
                let started = thread_cpu_time();
                run();
                thread_cpu_time().saturating_sub(started)
            })
            .collect(),
    )
}

const PASSWORD: &[u8] = b"correct horse battery staple";
const SALT: [u8; 16] = [7u8; 16];

/// `count` different hashes interleaved on `backend` (one alone when `count` is 1).
fn hashes(backend: Backend, count: usize) -> Duration {
    time(|| {
        let mut outputs = vec![[0u8; 32]; count];
        let mut derivations: Vec<Derivation<'_>> = outputs
            .iter_mut()
            .enumerate()
            .map(|(index, out)| Derivation {
                password: PASSWORD,
                salt: &SALT[..16 - index],
                iterations: ITERATIONS,
                extra_iterations: 0,
                out,
            })
            .collect();
        derive_interleaved(backend, count, &mut derivations);
        std::hint::black_box(outputs);
    })
}

/// One hash the way a hashing thread runs it: in runs of `STEPS_BETWEEN_YIELDS` iterations with
/// a yield between them (nothing else waits for this core here, so each yield comes straight back).
fn yielding_hash(backend: Backend) -> Duration {
    time(|| {
        let mut lanes: Lanes<()> = Lanes::new(backend, WIDTH);
        lanes.add((), PASSWORD, &SALT, ITERATIONS, 0, 32);
        let mut outputs = Vec::new();
        while !lanes.is_empty() {
            outputs.extend(lanes.run(STEPS_BETWEEN_YIELDS));
            std::thread::yield_now();
        }
        std::hint::black_box(outputs);
    })
}

fn main() {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let fastest = Backend::fastest();
    let one = hashes(fastest, 1);
    let yielding = yielding_hash(fastest);
    let two = hashes(fastest, 2);
    // Wider interleaving, to show what WIDTH (2) leaves: on the CPUs measured, no more.
    let three = hashes(fastest, 3);
    let four = hashes(fastest, 4);
    let portable = hashes(Backend::Portable, 1);
    let crate_time = time(|| {
        let mut out = [0u8; 32];
        pbkdf2::pbkdf2_hmac::<Sha256>(PASSWORD, &SALT, ITERATIONS, &mut out);
        std::hint::black_box(out);
    });
    println!(
        "{{\"iterations\": {ITERATIONS}, \"backend\": \"{fastest:?}\", \"steps_between_yields\": {STEPS_BETWEEN_YIELDS}, \"ours_ms\": {:.2}, \"yielding_ms\": {:.2}, \"pair_ms\": {:.2}, \"three_ms\": {:.2}, \"four_ms\": {:.2}, \"portable_ms\": {:.2}, \"pbkdf2_crate_ms\": {:.2}, \"hashes_per_second_per_core\": {:.2}, \"paired_hashes_per_second_per_core\": {:.2}}}",
        ms(one),
        ms(yielding),
        ms(two),
        ms(three),
        ms(four),
        ms(portable),
        ms(crate_time),
        1.0 / one.as_secs_f64(),
        2.0 / two.as_secs_f64(),
    );
}
