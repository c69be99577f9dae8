//! Small deterministic pseudo-random generators: the one place the crate, its tools, tests and
//! benchmarks draw seeded random numbers from.
//!
//! Not cryptographic: the output is predictable from a few values. Use these for simulations,
//! fault injection, test inputs and spreading work, never for secrets.
//!
//! Contract:
//! - A generator's sequence is a pure function of its seed, the same on every platform and
//!   in every build. Seeded runs depend on it: the protocol regression seeds, the fault
//!   schedules of `pmd::faults` and `pmd::sim`, the congestion-control simulator's results.
//!   The tests below pin both algorithms against their reference values; changing an
//!   algorithm, or how a method turns 64 bits into its result, changes every one of those
//!   runs.
//! - No allocation, no clock, no global state; every method is a few arithmetic operations.
//! - The one exception, for secrets: [`os_fill`] and [`os_u64`] ask the operating system
//!   (a system call each) and fail rather than fall back to anything predictable.
//!
//! Two algorithms, with the same methods:
//! - [`SplitMix64`] (Steele, Lea and Flood; Vigna's `splitmix64.c`): one word of state. The
//!   congestion-control simulator and `proto`'s connection ids draw from it; it also expands
//!   a seed into [`Xoshiro256`]'s state.
//! - [`Xoshiro256`] (xoshiro256**, Blackman and Vigna): four words of state and a period of
//!   2^256 - 1. The link model (`pmd::sim`) and the fault wrapper (`pmd::faults`) draw from it.
//!
//! [`mix64`] is SplitMix64's output function alone: a counter-based stream (`mix64` of a
//! position) when values are needed by index rather than in order.

/// Fill `buf` with random bytes from the operating system: `getrandom(2)`, or
/// `/dev/urandom` where that system call is missing. For secrets (the handshake cookie key)
/// and seeds that must not be guessed. An error when neither gives bytes: there is no
/// fallback to anything predictable (the time of day), the caller decides what to do
/// without randomness.
pub fn os_fill(buf: &mut [u8]) -> std::io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        match rustix::rand::getrandom(&mut buf[done..], rustix::rand::GetRandomFlags::empty()) {
            Ok(n) => done += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(rustix::io::Errno::NOSYS) | Err(rustix::io::Errno::PERM) => {
                // No getrandom(2) (an old kernel, a seccomp filter): the device.
                use std::io::Read;
                return std::fs::File::open("/dev/urandom")?.read_exact(&mut buf[done..]);
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Eight random bytes from the operating system ([`os_fill`]).
pub fn os_u64() -> std::io::Result<u64> {
    let mut b = [0u8; 8];
    os_fill(&mut b)?;
    Ok(u64::from_le_bytes(b))
}

/// SplitMix64's increment (the golden ratio as a 64-bit fraction).
const GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// SplitMix64's output function: a bijective mix of the 64 bits of `z` (Stafford's
/// variant 13 of the MurmurHash3 finaliser).
#[inline]
pub const fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The methods both generators derive from `next_u64`, written once.
macro_rules! derived {
    () => {
        /// Uniform in `[0, 1)`, with 53 bits of precision (the top 53 bits of one draw).
        #[inline]
        pub fn next_f64(&mut self) -> f64 {
            (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
        }

        /// True with probability `p`: `p <= 0` is never and draws nothing, `p >= 1` always.
        #[inline]
        pub fn chance(&mut self, p: f64) -> bool {
            p > 0.0 && self.next_f64() < p
        }

        /// Uniform in `[0, n)` by Lemire's multiply-shift (one draw, no division); `n = 0`
        /// gives 0 and draws nothing.
        #[inline]
        pub fn below(&mut self, n: u64) -> u64 {
            if n == 0 {
                0
            } else {
                ((self.next_u64() as u128 * n as u128) >> 64) as u64
            }
        }

        /// Uniform in `[lo, hi]`, both ends included, by the remainder of one draw (biased
        /// by at most `(hi - lo + 1) / 2^64`); `hi <= lo` gives `lo` and draws nothing.
        /// The remainder, not [`below`](Self::below)'s multiply-shift, because the
        /// congestion-control simulator's published results were drawn this way.
        #[inline]
        pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
            if hi <= lo {
                lo
            } else {
                lo + self.next_u64() % (hi - lo + 1)
            }
        }
    };
}

/// SplitMix64: a one-word generator, every seed fine (0 included). Not cryptographic.
///
/// ```
/// use bypass::rng::SplitMix64;
/// let mut a = SplitMix64::new(7);
/// let mut b = SplitMix64::new(7);
/// assert_eq!(a.next_u64(), b.next_u64());
/// assert!(a.below(10) < 10);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator from a seed.
    #[inline]
    pub const fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    /// The next 64 random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(GAMMA);
        mix64(self.0)
    }

    derived!();
}

/// xoshiro256**: a four-word generator whose state is expanded from a 64-bit seed with
/// [`SplitMix64`], every seed fine (0 included). Not cryptographic.
///
/// ```
/// use bypass::rng::Xoshiro256;
/// let mut r = Xoshiro256::new(1);
/// let x = r.next_f64();
/// assert!((0.0..1.0).contains(&x));
/// assert!(!r.chance(0.0) && r.chance(1.0));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Xoshiro256 {
    s: [u64; 4],
}

impl Xoshiro256 {
    /// A generator whose state is the first four outputs of `SplitMix64::new(seed)`.
    pub fn new(seed: u64) -> Xoshiro256 {
        let mut sm = SplitMix64::new(seed);
        Xoshiro256 {
            s: [sm.next_u64(), sm.next_u64(), sm.next_u64(), sm.next_u64()],
        }
    }

    /// The next 64 random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    derived!();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_matches_reference() {
        // Reference: SplitMix64 seeded with 1234567 gives 6457827717110365317 first.
        let mut s = SplitMix64::new(1234567);
        assert_eq!(s.next_u64(), 6457827717110365317);
    }

    #[test]
    fn xoshiro_matches_reference() {
        // Reference: xoshiro256** with state {1, 2, 3, 4} (Vigna's C code) starts
        // 11520, 0, 1509978240, 1215971899390074240.
        let mut r = Xoshiro256 { s: [1, 2, 3, 4] };
        let got: Vec<u64> = (0..4).map(|_| r.next_u64()).collect();
        assert_eq!(got, [11520, 0, 1509978240, 1215971899390074240]);
    }

    #[test]
    fn same_seed_same_stream() {
        let mut a = Xoshiro256::new(7);
        let mut b = Xoshiro256::new(7);
        let mut c = Xoshiro256::new(8);
        let va: Vec<u64> = (0..16).map(|_| a.next_u64()).collect();
        let vb: Vec<u64> = (0..16).map(|_| b.next_u64()).collect();
        let vc: Vec<u64> = (0..16).map(|_| c.next_u64()).collect();
        assert_eq!(va, vb);
        assert_ne!(va, vc);
    }

    #[test]
    fn below_and_f64_stay_in_range() {
        let mut r = Xoshiro256::new(1);
        for _ in 0..10_000 {
            assert!(r.below(10) < 10);
            let f = r.next_f64();
            assert!((0.0..1.0).contains(&f));
        }
        assert_eq!(r.below(0), 0);
        assert!(!r.chance(0.0));
        assert!(r.chance(1.0));
    }

    /// The values the generators this module replaced gave for seed 42 (`ccsim::engine::Rng`
    /// and `proto::SplitMix64`: splitmix64; `pmd::sim::Rng` and `pmd::faults::Xoshiro256`:
    /// xoshiro256**), recorded from those implementations before they were removed. Seeded
    /// runs stay what they were as long as these hold, including which calls draw nothing.
    #[test]
    fn same_values_as_the_generators_it_replaced() {
        let mut s = SplitMix64::new(42);
        let u: Vec<u64> = (0..3).map(|_| s.next_u64()).collect();
        assert_eq!(
            u,
            [
                13679457532755275413,
                2949826092126892291,
                5139283748462763858
            ]
        );
        let f: Vec<f64> = (0..3).map(|_| s.next_f64()).collect();
        assert_eq!(
            f,
            [0.34419071652363753, 0.03803016854024621, 0.8682280765465323]
        );
        let b: Vec<u64> = (0..3).map(|_| s.between(500, 1500)).collect();
        assert_eq!(b, [705, 590, 1115]);
        assert_eq!(s.between(7, 7), 7);
        assert_eq!(s.next_u64(), 11408980392250668974);

        let mut x = Xoshiro256::new(42);
        let u: Vec<u64> = (0..3).map(|_| x.next_u64()).collect();
        assert_eq!(
            u,
            [
                1546998764402558742,
                6990951692964543102,
                12544586762248559009
            ]
        );
        let f: Vec<f64> = (0..3).map(|_| x.next_f64()).collect();
        assert_eq!(
            f,
            [0.9246929453253876, 0.9918039142821028, 0.7697394604342425]
        );
        let b: Vec<u64> = (0..3).map(|_| x.below(1000)).collect();
        assert_eq!(b, [719, 850, 761]);
        assert_eq!(x.below(0), 0);
        let c: Vec<bool> = (0..4).map(|_| x.chance(0.5)).collect();
        assert_eq!(c, [false, false, true, false]);
        assert_eq!(x.next_u64(), 5928998142081247042);
    }
}
