//! PBKDF2-HMAC-SHA256 at the hardware bound, and past it for two hashes at once (Latchkey's
//! password hashing; `auth_core::kdf` re-exports it).
//!
//! Each iteration of PBKDF2 is one HMAC over a 32-byte message: two SHA-256 compressions of a
//! single block whose padding never changes, the second one's input being the first one's output.
//! The keyed inner and outer states are computed once per hash, and each iteration is exactly those
//! two compressions, with the chaining value kept as eight words (in registers on the accelerated
//! paths), never re-encoded as bytes.
//!
//! Three backends compute the same function ([`Backend`]): the SHA-NI instructions on x86_64, the
//! ARMv8 SHA-2 instructions on aarch64 (the Lambda), and the `sha2` crate's compression function
//! everywhere else. The accelerated ones are chosen at run time when the CPU has them.
//!
//! The SHA-256 round instructions are latency-bound: one dependent chain leaves most of the
//! execution units idle. [`derive_many`] therefore advances two independent chains (of two hashes,
//! or the two 32-byte blocks of one longer output) interleaved in one instruction stream, which
//! finishes two hashes in little more than the time of one. Its output equals the `pbkdf2` crate's
//! on every backend, alone or paired, which the tests check on the published vectors and on
//! thousands of random inputs.

use hmac::{KeyInit, Mac};
use sha2::block_api::compress256;
use sha2::{Digest, Sha256};

const BLOCK: usize = 64;
const DIGEST: usize = 32;
const IV: [u32; 8] = [
    0x6a09_e667,
    0xbb67_ae85,
    0x3c6e_f372,
    0xa54f_f53a,
    0x510e_527f,
    0x9b05_688c,
    0x1f83_d9ab,
    0x5be0_cd19,
];
/// The words after the 32-byte message in every iteration's block (one already-hashed 64-byte
/// key pad before it): the 0x80 marker, zeros, and the length of 96 bytes in bits.
const PAD_WORDS: [u32; 8] = [0x8000_0000, 0, 0, 0, 0, 0, 0, ((BLOCK + DIGEST) * 8) as u32];
/// SHA-256's round constants, used by the accelerated backends.
#[cfg_attr(
    not(any(target_arch = "x86_64", target_arch = "aarch64")),
    expect(
        dead_code,
        reason = "only the accelerated backends use the constants directly"
    )
)]
const K: [u32; 64] = [
    0x428a_2f98,
    0x7137_4491,
    0xb5c0_fbcf,
    0xe9b5_dba5,
    0x3956_c25b,
    0x59f1_11f1,
    0x923f_82a4,
    0xab1c_5ed5,
    0xd807_aa98,
    0x1283_5b01,
    0x2431_85be,
    0x550c_7dc3,
    0x72be_5d74,
    0x80de_b1fe,
    0x9bdc_06a7,
    0xc19b_f174,
    0xe49b_69c1,
    0xefbe_4786,
    0x0fc1_9dc6,
    0x240c_a1cc,
    0x2de9_2c6f,
    0x4a74_84aa,
    0x5cb0_a9dc,
    0x76f9_88da,
    0x983e_5152,
    0xa831_c66d,
    0xb003_27c8,
    0xbf59_7fc7,
    0xc6e0_0bf3,
    0xd5a7_9147,
    0x06ca_6351,
    0x1429_2967,
    0x27b7_0a85,
    0x2e1b_2138,
    0x4d2c_6dfc,
    0x5338_0d13,
    0x650a_7354,
    0x766a_0abb,
    0x81c2_c92e,
    0x9272_2c85,
    0xa2bf_e8a1,
    0xa81a_664b,
    0xc24b_8b70,
    0xc76c_51a3,
    0xd192_e819,
    0xd699_0624,
    0xf40e_3585,
    0x106a_a070,
    0x19a4_c116,
    0x1e37_6c08,
    0x2748_774c,
    0x34b0_bcb5,
    0x391c_0cb3,
    0x4ed8_aa4a,
    0x5b9c_ca4f,
    0x682e_6ff3,
    0x748f_82ee,
    0x78a5_636f,
    0x84c8_7814,
    0x8cc7_0208,
    0x90be_fffa,
    0xa450_6ceb,
    0xbef9_a3f7,
    0xc671_78f2,
];

/// How the SHA-256 compressions are computed. Every backend gives the same output; the tests force
/// each available one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// The `sha2` crate's compression function, one block per call: any CPU.
    Portable,
    /// x86_64 SHA-NI (with SSSE3 and SSE4.1 for the shuffles).
    ShaNi,
    /// The ARMv8 cryptographic extension's SHA-256 instructions.
    ArmSha2,
}

impl Backend {
    /// The fastest backend this CPU runs; detection is cached by the standard library.
    pub fn fastest() -> Backend {
        [Backend::ShaNi, Backend::ArmSha2]
            .into_iter()
            .find(|backend| backend.is_available())
            .unwrap_or(Backend::Portable)
    }

    /// Whether this CPU (and this build's target) can run the backend.
    pub fn is_available(self) -> bool {
        match self {
            Backend::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Backend::ShaNi => x86::available(),
            #[cfg(target_arch = "aarch64")]
            Backend::ArmSha2 => arm::available(),
            _ => false,
        }
    }

    /// Every backend this CPU runs, the portable one first.
    pub fn available() -> Vec<Backend> {
        [Backend::Portable, Backend::ShaNi, Backend::ArmSha2]
            .into_iter()
            .filter(|backend| backend.is_available())
            .collect()
    }
}

/// One PBKDF2 derivation: `out` receives the key derived from `password` and `salt` with
/// `iterations` rounds.
///
/// `extra_iterations` continue the same chain after the output is taken, without changing it: a
/// verification against a stored hash with fewer iterations than configured spends the configured
/// count's time in one dependent chain, exactly as a hash at that count would.
pub struct Derivation<'a> {
    pub password: &'a [u8],
    pub salt: &'a [u8],
    pub iterations: u32,
    pub extra_iterations: u32,
    pub out: &'a mut [u8],
}

/// One 32-byte block of output being computed: `u` is the last HMAC output, `t` the XOR of all of
/// them, both as big-endian words.
#[derive(Clone, Copy)]
struct Chain {
    inner: [u32; 8],
    outer: [u32; 8],
    u: [u32; 8],
    t: [u32; 8],
    /// Iterations left before the output is taken, then the extra ones after it.
    left: u32,
    extra: u32,
    taken: bool,
    /// The derivation (its slot in [`Lanes`]) and the byte offset in its output this chain fills.
    request: usize,
    offset: usize,
}

/// Derives `out.len()` bytes from `password` and `salt` with `iterations` rounds, on the fastest
/// backend.
pub fn pbkdf2_hmac_sha256(password: &[u8], salt: &[u8], iterations: u32, out: &mut [u8]) {
    derive_many(
        Backend::fastest(),
        &mut [Derivation {
            password,
            salt,
            iterations,
            extra_iterations: 0,
            out,
        }],
    );
}

/// Computes every derivation, running their chains two at a time, interleaved, while at least two
/// have iterations left. A backend this CPU lacks falls back to the portable one (callers choose
/// through [`Backend::fastest`] or [`Backend::available`], so this is a guard, not a path).
pub fn derive_many(backend: Backend, requests: &mut [Derivation<'_>]) {
    derive_interleaved(backend, WIDTH, requests);
}

/// How many chains [`derive_many`] and a default [`Lanes`] advance at once. Two: on the CPUs
/// measured (`make bench`'s hash_bench), three or four were no faster per hash than two.
pub const WIDTH: usize = 2;

/// [`derive_many`] with up to `width` chains (1 to 4) interleaved at once.
pub fn derive_interleaved(backend: Backend, width: usize, requests: &mut [Derivation<'_>]) {
    let mut lanes = Lanes::new(backend, width);
    for (request, derivation) in requests.iter().enumerate() {
        lanes.add(
            request,
            derivation.password,
            derivation.salt,
            derivation.iterations,
            derivation.extra_iterations,
            derivation.out.len(),
        );
    }
    while !lanes.is_empty() {
        for (request, output) in lanes.run(u32::MAX) {
            requests[request].out.copy_from_slice(&output);
        }
    }
}

/// Derivations in progress on one thread, which can be joined between runs: up to `width` chains
/// advance interleaved, and a derivation added while another is halfway through runs beside it
/// from then on, instead of after it or alone on another core. Each one carries a tag of the
/// caller's, given back with its output.
pub struct Lanes<T> {
    backend: Backend,
    width: usize,
    chains: Vec<Chain>,
    slots: Vec<Option<Slot<T>>>,
    /// Finished without a chain to run (an empty output), waiting for the next run.
    ready: Vec<(T, Vec<u8>)>,
}

struct Slot<T> {
    tag: T,
    out: Vec<u8>,
    /// Chains of this derivation not finished yet (one per 32 bytes of output).
    chains_left: usize,
}

impl<T> Lanes<T> {
    /// `width` is clamped to 1..=4; a backend this CPU lacks falls back to the portable one.
    pub fn new(backend: Backend, width: usize) -> Self {
        let backend = if backend.is_available() {
            backend
        } else {
            Backend::Portable
        };
        Lanes {
            backend,
            width: width.clamp(1, 4),
            chains: Vec::new(),
            slots: Vec::new(),
            ready: Vec::new(),
        }
    }

    /// Whether a derivation added now would advance at once, beside the ones in progress.
    pub fn has_room(&self) -> bool {
        self.chains.len() < self.width
    }

    pub fn is_empty(&self) -> bool {
        self.chains.is_empty() && self.ready.is_empty()
    }

    /// Derivations in progress.
    pub fn len(&self) -> usize {
        self.slots.iter().filter(|slot| slot.is_some()).count()
    }

    /// Starts deriving `len` bytes from `password` and `salt` (see [`Derivation`] for
    /// `extra_iterations`); its output comes back from [`Lanes::run`] with `tag`.
    pub fn add(
        &mut self,
        tag: T,
        password: &[u8],
        salt: &[u8],
        iterations: u32,
        extra_iterations: u32,
        len: usize,
    ) {
        let slot = match self.slots.iter().position(Option::is_none) {
            Some(free) => free,
            None => {
                self.slots.push(None);
                self.slots.len() - 1
            }
        };
        let (inner, outer) = keyed_states(password);
        let mut chains_left = 0;
        for (index, offset) in (0..len).step_by(DIGEST).enumerate() {
            let u = first_iteration(password, salt, index);
            self.chains.push(Chain {
                inner,
                outer,
                u,
                t: u,
                left: iterations.saturating_sub(1),
                extra: extra_iterations,
                taken: false,
                request: slot,
                offset,
            });
            chains_left += 1;
        }
        self.slots[slot] = Some(Slot {
            tag,
            out: vec![0; len],
            chains_left,
        });
        if chains_left == 0 {
            // Nothing to compute (an empty output): it is returned by the next run.
            if let Some(empty) = self.slots[slot].take() {
                self.ready.push((empty.tag, empty.out));
            }
        }
    }

    /// Advances the chains in progress (up to `width` of them interleaved) by at most `steps`
    /// iterations, and returns the derivations that finished, with their tags. It stops early
    /// when one of them finishes, so that a waiting derivation can take its room.
    pub fn run(&mut self, steps: u32) -> Vec<(T, Vec<u8>)> {
        // Derivations with nothing to run (one iteration, an empty output) are returned at once,
        // before anything advances, so that the caller can fill their room first.
        let mut finished = std::mem::take(&mut self.ready);
        finished.extend(self.collect_phases());
        if !finished.is_empty() {
            return finished;
        }
        let steps = steps.max(1);
        match self.chains.len().min(self.width) {
            0 => {}
            1 => advance_first::<1>(self.backend, &mut self.chains, steps),
            2 => advance_first::<2>(self.backend, &mut self.chains, steps),
            3 => advance_first::<3>(self.backend, &mut self.chains, steps),
            _ => advance_first::<4>(self.backend, &mut self.chains, steps),
        }
        self.collect_phases()
    }

    /// Takes each finished phase's output; a chain past its extra iterations leaves, and a
    /// derivation whose chains have all left is returned.
    fn collect_phases(&mut self) -> Vec<(T, Vec<u8>)> {
        let mut finished = Vec::new();
        let mut index = 0;
        while index < self.chains.len() {
            if self.chains[index].left > 0 {
                index += 1;
                continue;
            }
            let chain = &mut self.chains[index];
            let slot = chain.request;
            if !chain.taken {
                chain.taken = true;
                if let Some(Slot { out, .. }) = self.slots[slot].as_mut() {
                    let out = &mut out[chain.offset..];
                    let len = out.len().min(DIGEST);
                    let mut bytes = [0u8; DIGEST];
                    write_words(&chain.t, &mut bytes);
                    out[..len].copy_from_slice(&bytes[..len]);
                }
            }
            if chain.extra > 0 {
                chain.left = std::mem::take(&mut chain.extra);
                index += 1;
                continue;
            }
            // `remove`, not `swap_remove`: the chains keep their order, so the oldest ones run.
            self.chains.remove(index);
            let done = match self.slots[slot].as_mut() {
                Some(entry) => {
                    entry.chains_left -= 1;
                    entry.chains_left == 0
                }
                None => false,
            };
            if done && let Some(entry) = self.slots[slot].take() {
                finished.push((entry.tag, entry.out));
            }
        }
        finished
    }
}

/// Advances the first `N` chains together by `steps`, or until the first of them ends its phase.
fn advance_first<const N: usize>(backend: Backend, chains: &mut [Chain], steps: u32) {
    let Ok(group) = <&mut [Chain; N]>::try_from(&mut chains[..N]) else {
        return;
    };
    let steps = group
        .iter()
        .map(|chain| chain.left)
        .min()
        .unwrap_or(0)
        .min(steps);
    advance(backend, group.each_mut(), steps);
}

/// Advances `N` independent chains by `steps` iterations each.
fn advance<const N: usize>(backend: Backend, chains: [&mut Chain; N], steps: u32) {
    match backend {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `derive_many` checked that the CPU has the features `x86::advance` enables.
        Backend::ShaNi => unsafe { x86::advance(chains, steps) },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: `derive_many` checked that the CPU has the features `arm::advance` enables.
        Backend::ArmSha2 => unsafe { arm::advance(chains, steps) },
        _ => {
            for chain in chains {
                portable_advance(chain, steps);
            }
        }
    }
}

fn portable_advance(chain: &mut Chain, steps: u32) {
    let mut block = [0u8; BLOCK];
    write_words(&PAD_WORDS, &mut block[DIGEST..]);
    for _ in 0..steps {
        write_words(&chain.u, &mut block[..DIGEST]);
        let mut state = chain.inner;
        compress256(&mut state, &[block]);
        write_words(&state, &mut block[..DIGEST]);
        let mut state = chain.outer;
        compress256(&mut state, &[block]);
        chain.u = state;
        for (acc, word) in chain.t.iter_mut().zip(chain.u) {
            *acc ^= word;
        }
    }
    chain.left -= steps;
}

fn write_words(words: &[u32], out: &mut [u8]) {
    for (word, bytes) in words.iter().zip(out.chunks_exact_mut(4)) {
        bytes.copy_from_slice(&word.to_be_bytes());
    }
}

fn read_words(bytes: &[u8]) -> [u32; 8] {
    let mut words = [0u32; 8];
    for (word, chunk) in words.iter_mut().zip(bytes.chunks_exact(4)) {
        *word = u32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
    }
    words
}

/// The SHA-256 states after absorbing the key XOR the inner and the outer pad.
fn keyed_states(password: &[u8]) -> ([u32; 8], [u32; 8]) {
    let mut key = [0u8; BLOCK];
    if password.len() > BLOCK {
        key[..DIGEST].copy_from_slice(&Sha256::digest(password));
    } else {
        key[..password.len()].copy_from_slice(password);
    }
    let mut inner_pad = [0x36u8; BLOCK];
    let mut outer_pad = [0x5cu8; BLOCK];
    for ((i, o), k) in inner_pad
        .iter_mut()
        .zip(outer_pad.iter_mut())
        .zip(key.iter())
    {
        *i ^= k;
        *o ^= k;
    }
    let (mut inner, mut outer) = (IV, IV);
    compress256(&mut inner, &[inner_pad]);
    compress256(&mut outer, &[outer_pad]);
    (inner, outer)
}

/// U1 = HMAC(password, salt || INT(block index + 1)): any salt length, so through the general
/// HMAC once.
fn first_iteration(password: &[u8], salt: &[u8], index: usize) -> [u32; 8] {
    let Ok(mut first) = hmac::Hmac::<Sha256>::new_from_slice(password) else {
        return [0; 8]; // HMAC takes keys of any length; this branch cannot be reached.
    };
    first.update(salt);
    first.update(&u32::try_from(index + 1).unwrap_or(u32::MAX).to_be_bytes());
    read_words(&first.finalize().into_bytes())
}

/// SHA-NI. The state lives in the instructions' own layout (ABEF, CDGH) across iterations; only
/// the 32-byte chaining value is reordered into message words, in registers.
#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::{
        __m128i, _mm_add_epi32, _mm_alignr_epi8, _mm_blend_epi16, _mm_extract_epi32, _mm_set_epi32,
        _mm_sha256msg1_epu32, _mm_sha256msg2_epu32, _mm_sha256rnds2_epu32, _mm_shuffle_epi32,
        _mm_unpackhi_epi64, _mm_xor_si128,
    };

    use super::{Chain, K, PAD_WORDS};

    pub fn available() -> bool {
        std::arch::is_x86_feature_detected!("sha")
            && std::arch::is_x86_feature_detected!("sse4.1")
            && std::arch::is_x86_feature_detected!("ssse3")
    }

    /// Four words as one vector, the first in the lowest lane.
    #[target_feature(enable = "sse2")]
    fn lanes(words: [u32; 4]) -> __m128i {
        // The casts keep the bits: the intrinsic takes signed lanes.
        _mm_set_epi32(
            words[3] as i32,
            words[2] as i32,
            words[1] as i32,
            words[0] as i32,
        )
    }

    #[target_feature(enable = "sse4.1")]
    fn words(v: __m128i) -> [u32; 4] {
        [
            _mm_extract_epi32(v, 0) as u32,
            _mm_extract_epi32(v, 1) as u32,
            _mm_extract_epi32(v, 2) as u32,
            _mm_extract_epi32(v, 3) as u32,
        ]
    }

    /// Eight words as two vectors, (0..4) and (4..8).
    #[target_feature(enable = "sse2")]
    fn halves(w: &[u32; 8]) -> (__m128i, __m128i) {
        (
            lanes([w[0], w[1], w[2], w[3]]),
            lanes([w[4], w[5], w[6], w[7]]),
        )
    }

    #[target_feature(enable = "sse4.1")]
    fn unpack(pair: (__m128i, __m128i)) -> [u32; 8] {
        let (low, high) = (words(pair.0), words(pair.1));
        [
            low[0], low[1], low[2], low[3], high[0], high[1], high[2], high[3],
        ]
    }

    /// A state in canonical order (A..H) as the SHA-NI pair (ABEF, CDGH).
    #[target_feature(enable = "sse2")]
    fn to_sha_layout(s: &[u32; 8]) -> (__m128i, __m128i) {
        (
            lanes([s[5], s[4], s[1], s[0]]),
            lanes([s[7], s[6], s[3], s[2]]),
        )
    }

    /// A SHA-NI state pair back in canonical order: (A, B, C, D) and (E, F, G, H), lowest lane
    /// first, which is also how the next compression takes them as message words 0..8.
    #[inline]
    #[target_feature(enable = "sse2,ssse3,sse4.1")]
    fn to_words(abef: __m128i, cdgh: __m128i) -> (__m128i, __m128i) {
        let feba = _mm_shuffle_epi32(abef, 0x1B);
        let dchg = _mm_shuffle_epi32(cdgh, 0xB1);
        (
            _mm_blend_epi16(feba, dchg, 0xF0),
            _mm_alignr_epi8(dchg, feba, 8),
        )
    }

    // Four rounds with message words 4i..4i+4 of every chain, computing the words first from
    // earlier ones when i >= 4. Spelled out per i (not a loop) so that the compiler keeps every
    // word in a register: a loop it does not unroll keeps `w` in memory, on the critical path.
    macro_rules! x86_rounds {
        ($w:ident, $state:ident, $n:ident; $($i:literal)*) => {$({
            const I: usize = $i;
            let k = lanes([K[4 * I], K[4 * I + 1], K[4 * I + 2], K[4 * I + 3]]);
            for j in 0..$n {
                let w = &mut $w[j];
                if I >= 4 {
                    let t = _mm_add_epi32(
                        _mm_sha256msg1_epu32(w[I % 4], w[(I + 1) % 4]),
                        _mm_alignr_epi8(w[(I + 3) % 4], w[(I + 2) % 4], 4),
                    );
                    w[I % 4] = _mm_sha256msg2_epu32(t, w[(I + 3) % 4]);
                }
                let (abef, cdgh) = &mut $state[j];
                let wk = _mm_add_epi32(w[I % 4], k);
                *cdgh = _mm_sha256rnds2_epu32(*cdgh, *abef, wk);
                *abef = _mm_sha256rnds2_epu32(*abef, *cdgh, _mm_unpackhi_epi64(wk, wk));
            }
        })*};
    }

    /// `N` compressions of the block (message, padding) from the states `start`, interleaved
    /// round by round so that the independent chains fill each other's latency. A macro, not a
    /// function: a `#[target_feature]` function cannot be `#[inline(always)]`, and a call (with
    /// its arguments in memory) would sit on the critical path.
    macro_rules! compress {
        ($start:expr, $message:expr, $pad:expr) => {{
            let start: &[(__m128i, __m128i); N] = $start;
            let message: &[(__m128i, __m128i); N] = $message;
            let pad: (__m128i, __m128i) = $pad;
            let mut state = *start;
            let mut w = [[pad.0; 4]; N];
            for j in 0..N {
                w[j] = [message[j].0, message[j].1, pad.0, pad.1];
            }
            x86_rounds!(w, state, N; 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15);
            for j in 0..N {
                state[j].0 = _mm_add_epi32(state[j].0, start[j].0);
                state[j].1 = _mm_add_epi32(state[j].1, start[j].1);
            }
            state
        }};
    }

    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    pub fn advance<const N: usize>(chains: [&mut Chain; N], steps: u32) {
        let pad = halves(&PAD_WORDS);
        let mut inner = [pad; N];
        let mut outer = [pad; N];
        let mut u = [pad; N];
        let mut t = [pad; N];
        for (j, chain) in chains.iter().enumerate() {
            inner[j] = to_sha_layout(&chain.inner);
            outer[j] = to_sha_layout(&chain.outer);
            u[j] = halves(&chain.u);
            t[j] = halves(&chain.t);
        }
        for _ in 0..steps {
            let mut inner_out = compress!(&inner, &u, pad);
            for state in &mut inner_out {
                *state = to_words(state.0, state.1);
            }
            u = compress!(&outer, &inner_out, pad);
            for j in 0..N {
                u[j] = to_words(u[j].0, u[j].1);
                t[j] = (_mm_xor_si128(t[j].0, u[j].0), _mm_xor_si128(t[j].1, u[j].1));
            }
        }
        for (j, chain) in chains.into_iter().enumerate() {
            chain.u = unpack(u[j]);
            chain.t = unpack(t[j]);
            chain.left -= steps;
        }
    }
}

/// The ARMv8 SHA-2 instructions, whose state layout is the canonical (ABCD, EFGH).
#[cfg(target_arch = "aarch64")]
mod arm {
    use std::arch::aarch64::{
        uint32x4_t, vaddq_u32, veorq_u32, vld1q_u32, vsha256h2q_u32, vsha256hq_u32,
        vsha256su0q_u32, vsha256su1q_u32, vst1q_u32,
    };

    use super::{Chain, K, PAD_WORDS};

    pub fn available() -> bool {
        std::arch::is_aarch64_feature_detected!("sha2")
    }

    #[target_feature(enable = "neon")]
    fn load(words: &[u32]) -> uint32x4_t {
        let words: [u32; 4] = [words[0], words[1], words[2], words[3]];
        // SAFETY: reads four u32 from a four-element array.
        unsafe { vld1q_u32(words.as_ptr()) }
    }

    #[target_feature(enable = "neon")]
    fn store(v: uint32x4_t, out: &mut [u32]) {
        let mut words = [0u32; 4];
        // SAFETY: writes four u32 into a four-element array.
        unsafe { vst1q_u32(words.as_mut_ptr(), v) };
        out[..4].copy_from_slice(&words);
    }

    // Four rounds with message words 4i..4i+4 of every chain, then words 4i+16..4i+20 from them
    // while i < 12; spelled out per i so that every word stays in a register (see the x86 twin).
    macro_rules! arm_rounds {
        ($w:ident, $state:ident, $k:ident, $n:ident; $($i:literal)*) => {$({
            const I: usize = $i;
            for j in 0..$n {
                let w = &mut $w[j];
                let wk = vaddq_u32(w[I % 4], $k[I]);
                if I < 12 {
                    w[I % 4] = vsha256su1q_u32(
                        vsha256su0q_u32(w[I % 4], w[(I + 1) % 4]),
                        w[(I + 2) % 4],
                        w[(I + 3) % 4],
                    );
                }
                let (abcd, efgh) = &mut $state[j];
                let previous = *abcd;
                *abcd = vsha256hq_u32(*abcd, *efgh, wk);
                *efgh = vsha256h2q_u32(*efgh, previous, wk);
            }
        })*};
    }

    /// A macro for the reason given at the x86 twin.
    macro_rules! compress {
        ($start:expr, $message:expr, $pad:expr, $k:expr) => {{
            let start: &[(uint32x4_t, uint32x4_t); N] = $start;
            let message: &[(uint32x4_t, uint32x4_t); N] = $message;
            let pad: (uint32x4_t, uint32x4_t) = $pad;
            let k: &[uint32x4_t; 16] = $k;
            let mut state = *start;
            let mut w = [[pad.0; 4]; N];
            for j in 0..N {
                w[j] = [message[j].0, message[j].1, pad.0, pad.1];
            }
            arm_rounds!(w, state, k, N; 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15);
            for j in 0..N {
                state[j].0 = vaddq_u32(state[j].0, start[j].0);
                state[j].1 = vaddq_u32(state[j].1, start[j].1);
            }
            state
        }};
    }

    #[target_feature(enable = "neon,sha2")]
    pub fn advance<const N: usize>(chains: [&mut Chain; N], steps: u32) {
        let pad = (load(&PAD_WORDS[..4]), load(&PAD_WORDS[4..]));
        let mut k = [pad.0; 16];
        for (i, k) in k.iter_mut().enumerate() {
            *k = load(&K[4 * i..]);
        }
        let mut inner = [pad; N];
        let mut outer = [pad; N];
        let mut u = [pad; N];
        let mut t = [pad; N];
        for (j, chain) in chains.iter().enumerate() {
            inner[j] = (load(&chain.inner[..4]), load(&chain.inner[4..]));
            outer[j] = (load(&chain.outer[..4]), load(&chain.outer[4..]));
            u[j] = (load(&chain.u[..4]), load(&chain.u[4..]));
            t[j] = (load(&chain.t[..4]), load(&chain.t[4..]));
        }
        for _ in 0..steps {
            let inner_out = compress!(&inner, &u, pad, &k);
            u = compress!(&outer, &inner_out, pad, &k);
            for j in 0..N {
                t[j] = (veorq_u32(t[j].0, u[j].0), veorq_u32(t[j].1, u[j].1));
            }
        }
        for (j, chain) in chains.into_iter().enumerate() {
            store(u[j].0, &mut chain.u[..4]);
            store(u[j].1, &mut chain.u[4..]);
            store(t[j].0, &mut chain.t[..4]);
            store(t[j].1, &mut chain.t[4..]);
            chain.left -= steps;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn derive(
        backend: Backend,
        password: &[u8],
        salt: &[u8],
        iterations: u32,
        len: usize,
    ) -> String {
        let mut out = vec![0u8; len];
        derive_many(
            backend,
            &mut [Derivation {
                password,
                salt,
                iterations,
                extra_iterations: 0,
                out: &mut out,
            }],
        );
        hex(&out)
    }

    /// (password, salt, iterations, expected key): RFC 7914 section 11, and the RFC 6070 inputs
    /// with SHA-256.
    const VECTORS: &[(&[u8], &[u8], u32, &str)] = &[
        (
            b"passwd",
            b"salt",
            1,
            "55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc49ca9cccf179b645991664b39d77ef317c71b845b1e30bd509112041d3a19783",
        ),
        (
            b"Password",
            b"NaCl",
            80000,
            "4ddcd8f60b98be21830cee5ef22701f9641a4418d04c0414aeff08876b34ab56a1d425a1225833549adb841b51c9b3176a272bdebba1d078478f62b397f33c8d",
        ),
        (
            b"password",
            b"salt",
            1,
            "120fb6cffcf8b32c43e7225256c4f837a86548c92ccc35480805987cb70be17b",
        ),
        (
            b"password",
            b"salt",
            2,
            "ae4d0c95af6b46d32d0adff928f06dd02a303f8ef3c251dfd6e2d85a95474c43",
        ),
        (
            b"password",
            b"salt",
            4096,
            "c5e478d59288c841aa530db6845c4c8d962893a001ce4e11a4963873aa98134a",
        ),
        (
            b"passwordPASSWORDpassword",
            b"saltSALTsaltSALTsaltSALTsaltSALTsalt",
            4096,
            "348c89dbcbd32b2f32d814b8116e84cf2b17347ebc1800181c4e2a1fb8dd53e1c635518c7dac47e9",
        ),
        (
            b"pass\0word",
            b"sa\0lt",
            4096,
            "89b69d0516f829893c696226650a8687",
        ),
    ];

    #[test]
    fn the_accelerated_backend_is_found_where_the_cpu_has_it() {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("sha") {
            assert_eq!(Backend::fastest(), Backend::ShaNi);
        }
        #[cfg(target_arch = "aarch64")]
        if std::arch::is_aarch64_feature_detected!("sha2") {
            assert_eq!(Backend::fastest(), Backend::ArmSha2);
        }
        assert!(Backend::available().contains(&Backend::fastest()));
    }

    /// `KDF_BACKENDS_REQUIRED` (comma-separated, as `Debug` names them) lists backends this run
    /// must find: scripts/test-kdf-arm.sh sets it, so that an emulator or CPU without the
    /// instructions fails the run instead of letting every test below pass on `Portable` alone.
    #[test]
    fn the_backends_this_run_requires_are_found() {
        let Ok(required) = std::env::var("KDF_BACKENDS_REQUIRED") else {
            return;
        };
        let found: Vec<String> = Backend::available()
            .iter()
            .map(|backend| format!("{backend:?}"))
            .collect();
        for name in required.split(',').filter(|name| !name.is_empty()) {
            assert!(
                found.iter().any(|backend| backend == name),
                "{name} is required but this CPU offers only {found:?}"
            );
        }
    }

    #[test]
    fn published_vectors_on_every_backend() {
        for backend in Backend::available() {
            for (password, salt, iterations, expected) in VECTORS {
                let len = expected.len() / 2;
                assert_eq!(
                    derive(backend, password, salt, *iterations, len),
                    *expected,
                    "{backend:?}, {iterations} iterations"
                );
            }
        }
    }

    #[test]
    fn published_vectors_paired_with_each_other_on_every_backend() {
        for backend in Backend::available() {
            for (first, second) in VECTORS.iter().zip(VECTORS.iter().rev()) {
                let mut outputs = [vec![0u8; first.3.len() / 2], vec![0u8; second.3.len() / 2]];
                let [a, b] = &mut outputs;
                derive_many(
                    backend,
                    &mut [
                        Derivation {
                            password: first.0,
                            salt: first.1,
                            iterations: first.2,
                            extra_iterations: 0,
                            out: a,
                        },
                        Derivation {
                            password: second.0,
                            salt: second.1,
                            iterations: second.2,
                            extra_iterations: 0,
                            out: b,
                        },
                    ],
                );
                assert_eq!(hex(&outputs[0]), first.3, "{backend:?}");
                assert_eq!(hex(&outputs[1]), second.3, "{backend:?}");
            }
        }
    }

    #[test]
    fn an_empty_output_comes_back_from_the_next_run_without_a_chain() {
        let mut lanes = Lanes::new(Backend::fastest(), WIDTH);
        lanes.add("empty", b"pw", b"salt", 1000, 0, 0);
        assert!(!lanes.is_empty());
        assert_eq!(lanes.run(1), vec![("empty", Vec::new())]);
        assert!(lanes.is_empty());
    }

    #[test]
    fn extra_iterations_leave_the_output_unchanged() {
        for backend in Backend::available() {
            let mut out = [0u8; 32];
            derive_many(
                backend,
                &mut [Derivation {
                    password: b"password",
                    salt: b"salt",
                    iterations: 4096,
                    extra_iterations: 1000,
                    out: &mut out,
                }],
            );
            assert_eq!(hex(&out), VECTORS[4].3, "{backend:?}");
        }
    }

    #[test]
    fn long_passwords_and_salts_match_the_reference() {
        for backend in Backend::available() {
            for (password_len, salt_len) in [(63, 16), (64, 16), (65, 16), (200, 300), (1000, 1)] {
                let password = vec![b'p'; password_len];
                let salt = vec![b's'; salt_len];
                let mut expected = [0u8; 32];
                pbkdf2::pbkdf2_hmac::<Sha256>(&password, &salt, 1000, &mut expected);
                assert_eq!(
                    derive(backend, &password, &salt, 1000, 32),
                    hex(&expected),
                    "{backend:?}, password {password_len} bytes, salt {salt_len} bytes"
                );
            }
        }
    }

    fn reference(password: &[u8], salt: &[u8], iterations: u32, len: usize) -> Vec<u8> {
        let mut expected = vec![0u8; len];
        pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut expected);
        expected
    }

    type Input = (Vec<u8>, Vec<u8>, u32, usize);

    fn input() -> impl Strategy<Value = Input> {
        (
            proptest::collection::vec(any::<u8>(), 0..300),
            proptest::collection::vec(any::<u8>(), 0..100),
            1u32..40,
            1usize..100,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn matches_the_pbkdf2_crate_on_every_backend_alone_and_paired(
            first in input(),
            second in input(),
            extra in 0u32..5,
        ) {
            let expected = [
                reference(&first.0, &first.1, first.2, first.3),
                reference(&second.0, &second.1, second.2, second.3),
            ];
            for backend in Backend::available() {
                let mut alone = vec![0u8; first.3];
                derive_many(backend, &mut [Derivation {
                    password: &first.0, salt: &first.1, iterations: first.2,
                    extra_iterations: extra, out: &mut alone,
                }]);
                prop_assert_eq!(&alone, &expected[0], "{:?} alone", backend);
                let mut paired = [vec![0u8; first.3], vec![0u8; second.3]];
                let [a, b] = &mut paired;
                derive_many(backend, &mut [
                    Derivation {
                        password: &first.0, salt: &first.1, iterations: first.2,
                        extra_iterations: extra, out: a,
                    },
                    Derivation {
                        password: &second.0, salt: &second.1, iterations: second.2,
                        extra_iterations: 0, out: b,
                    },
                ]);
                prop_assert_eq!(&paired, &expected, "{:?} paired", backend);
            }
        }

        /// A derivation joins one that has run `head_start` iterations already, a third joins
        /// when there is room, at every width: each output is still the reference's.
        #[test]
        fn derivations_joining_halfway_match_the_pbkdf2_crate_at_every_width(
            inputs in proptest::collection::vec(input(), 3),
            extra in 0u32..5,
            head_start in 1u32..40,
            step in 1u32..10,
            width in 1usize..=4,
        ) {
            let expected: Vec<Vec<u8>> =
                inputs.iter().map(|i| reference(&i.0, &i.1, i.2, i.3)).collect();
            for backend in Backend::available() {
                let mut lanes = Lanes::new(backend, width);
                let mut outputs: Vec<Option<Vec<u8>>> = vec![None; 3];
                let [first, rest @ ..] = inputs.as_slice() else { unreachable!() };
                lanes.add(0usize, &first.0, &first.1, first.2, extra, first.3);
                for (tag, output) in lanes.run(head_start) {
                    outputs[tag] = Some(output);
                }
                let mut waiting: Vec<(usize, &Input)> = rest.iter().enumerate().map(|(i, input)| (i + 1, input)).collect();
                while !(lanes.is_empty() && waiting.is_empty()) {
                    if lanes.has_room() && !waiting.is_empty() {
                        let (tag, input) = waiting.remove(0);
                        lanes.add(tag, &input.0, &input.1, input.2, 0, input.3);
                    }
                    for (tag, output) in lanes.run(step) {
                        prop_assert!(outputs[tag].is_none(), "{:?}: {} finished twice", backend, tag);
                        outputs[tag] = Some(output);
                    }
                }
                prop_assert_eq!(lanes.len(), 0);
                let outputs: Vec<Vec<u8>> = outputs.into_iter().map(Option::unwrap_or_default).collect();
                prop_assert_eq!(&outputs, &expected, "{:?} width {}", backend, width);
            }
        }
    }
}
